"""A run as its recipe asks for it: `train_recipe` = `loop.train` (one run, nothing more), then the steps a
recipe adds after training: today the normal margin (`margin.fit_normal_margin`), which trains inner runs with
`loop.train` itself.

Kept apart from `loop` so that the loop and the margin do not import each other (issue 25): the margin
depends on the loop, this module on both, nothing below on this one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_lung.train.config import TrainConfig
from edge_lung.train.loop import is_main_process, train
from edge_lung.train.margin import fit_normal_margin


def train_recipe(
    cfg: TrainConfig,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    console: Any = None,
) -> Path:
    """Train the run `cfg` describes, then fit its normal margin when `cfg.normal_margin` asks for one (main
    process only). Returns the run directory."""
    run_dir = train(cfg, on_epoch_end=on_epoch_end, console=console)
    if cfg.normal_margin != "none" and is_main_process():
        fit_normal_margin(cfg, run_dir, console)
    return run_dir
