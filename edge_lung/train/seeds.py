"""Several seeds of one recipe: one run per seed under a parent directory, and the mean/std summary
of their selected validation figures (seeds_summary.json).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_lung.fileio import atomic_write_json
from edge_lung.train.config import TrainConfig, TrainError, default_run_dir, resolve_adapter
from edge_lung.train.model import RUN_CONFIG
from edge_lung.train.pipeline import train_recipe

SUMMARY = "seeds_summary.json"
SUMMARY_KEYS = ("score", "sensitivity", "specificity", "score_relaxed_2class", "sensitivity_relaxed_2class")


def train_seeds(cfg: TrainConfig, seeds: Sequence[int], console: Any = None) -> tuple[list[Path], dict[str, Any]]:
    """One run per seed under `cfg.out/seed<N>`; returns the run dirs and the mean/std summary (also saved)."""
    if not seeds:
        raise TrainError("--seeds: expected at least one seed")
    if len(set(seeds)) != len(seeds):
        raise TrainError(f"--seeds: expected distinct seeds, got {list(seeds)}")
    adapter = resolve_adapter(cfg)
    parent = Path(cfg.out) if cfg.out else default_run_dir(cfg, adapter).with_name(
        default_run_dir(cfg, adapter).name.replace(f"-seed{cfg.seed}", "-seeds"))
    runs = [train_recipe(dataclasses.replace(cfg, seed=s, out=str(parent / f"seed{s}")), console=console)
            for s in seeds]
    summary = summarize_seeds(runs)
    atomic_write_json(parent / SUMMARY, summary)
    return runs, summary


def summarize_seeds(runs: Sequence[Path]) -> dict[str, Any]:
    """Mean and standard deviation (ddof=1 when n > 1) of the selected validation figures."""
    bests = [json.loads((Path(r) / RUN_CONFIG).read_text())["best"] for r in runs]
    values = {k: np.array([b["val"][k] for b in bests], dtype=np.float64) for k in SUMMARY_KEYS}
    ddof = 1 if len(runs) > 1 else 0
    return {
        "runs": [str(r) for r in runs],
        "best_epochs": [b["epoch"] for b in bests],
        "mean": {k: float(v.mean()) for k, v in values.items()},
        "std": {k: float(v.std(ddof=ddof)) for k, v in values.items()},
        "per_run": {k: v.tolist() for k, v in values.items()},
    }
