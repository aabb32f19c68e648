"""The normal margin (issue #12): how much surer than "normal" a model must be before it calls a cycle
abnormal, measured on stethoscopes it was not trained on.

A model trained on two or three stethoscopes is over-confident on a new one: its normal cycles drift
across the decision boundary and Sp collapses (held-out Meditron: Sp 39% for the tiny AST). Always-"normal"
scores 50, so such a model is worse than none. The margin m is added to the "normal" logit: the Bayes
decision with the normal class's prior raised by a factor e^m, i.e. "abnormal only when the model is
clearly sure". It is chosen where the shift is, on devices held out of training, never on the run's
own validation split (which shares the training devices and would pick m = 0).

`fit_normal_margin(cfg, run_dir)` (`edge-lung train --normal-margin cross-device`): for each device D the
run trained on, trains the run's own settings again with D as validation (`--val-devices D`) and every
device the run itself keeps out of training excluded (`--exclude-devices`), under `run_dir/margin/D`;
scores that model's logits on D at every m of `MARGIN_GRID`; keeps the m with the best mean ICBHI
Score over the held-out devices (the smallest on a tie); writes it into config.json ("normal_margin"),
from where `train.model.load_run` adds it to the logits, so export, evaluation and the device all
decide with it. The run's validation figures ("best") are re-scored with the margin; the figures
without it stay under "normal_margin.val_before". A run without a device split lends its validation
recordings to these inner runs (the margin is a single number; its selection never sees the test split).

Cost: one more training per training device: seconds for the linear descriptor model
(`--recipe icbhi-descriptors`), an AST's training time per device for an AST.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_lung.data.devices import parse_devices, scan_for_run
from edge_lung.fileio import atomic_write_json
from edge_lung.metrics import score_predictions
from edge_lung.train.config import TrainConfig, TrainError
from edge_lung.train.evaluate import evaluate_run, run_predictions
from edge_lung.train.loop import selection_warnings, train
from edge_lung.train.model import RUN_CONFIG, read_run_config

MARGIN_GRID: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)
"""Margins tried, in logits (e^4 = 55x the normal prior at the top)."""
MARGIN_DIR = "margin"


def scores_by_margin(y_true: np.ndarray, logits: np.ndarray, normal: int,
                     grid: tuple[float, ...] = MARGIN_GRID) -> dict[float, float]:
    """ICBHI Score of argmax(logits + m at the `normal` column) for every m of `grid`."""
    out = {}
    for m in grid:
        shifted = logits.astype(np.float64).copy()
        shifted[:, normal] += m
        out[m] = float(score_predictions(y_true, shifted.argmax(axis=1))["score"])
    return out


def choose_margin(per_device: list[dict[float, float]], grid: tuple[float, ...] = MARGIN_GRID) -> float:
    """The m of `grid` with the best mean Score over the held-out devices; the smallest m on a tie."""
    if not per_device:
        raise ValueError("normal margin: expected the Scores of at least one held-out device, got none")
    means = {m: float(np.mean([scores[m] for scores in per_device])) for m in grid}
    best = max(means.values())
    return min(m for m in grid if means[m] >= best - 1e-9)


def _inner_config(cfg: TrainConfig, run_dir: Path, device: str, keep_out: tuple[str, ...]) -> TrainConfig:
    return dataclasses.replace(cfg, out=str(run_dir / MARGIN_DIR / device), val_devices=device,
                               exclude_devices=",".join(keep_out) or None, normal_margin="none", progress=False,
                               resume=False)


def _held_out_scores(inner: TrainConfig, normal: int) -> tuple[str, int, dict[float, float]]:
    """Train `inner` (its validation is one held-out device); (that device, its cycles, the last model's Score
    at every margin)."""
    shutil.rmtree(inner.out, ignore_errors=True)  # derived data: a stale inner run is retrained, not resumed
    y_true, logits = run_predictions(train(inner), inner.data, "val", inner.eval_batch_size, inner.cache_dir)
    return inner.val_devices, len(y_true), scores_by_margin(y_true, logits, normal)


def fit_normal_margin(cfg: TrainConfig, run_dir: Path, console: Any = None) -> dict[str, Any]:
    """Choose the run's normal margin on its training devices held out one at a time; see the module docstring."""
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    normal = config["labels"].index("normal")
    db, _ = scan_for_run(cfg.data, cfg.to_dict(), run_dir)
    devices = sorted({r.device for r in db.recordings if r.split == "train"})
    if len(devices) < 2:
        raise TrainError(f"--normal-margin cross-device: {run_dir} trained on {devices or 'no device'}; expected at "
                         "least two devices, one to hold out and one to train on")
    keep_out = parse_devices(cfg.val_devices) + parse_devices(cfg.exclude_devices)
    scores, held_out, skipped = [], [], []
    for device in devices:
        _say(console, f"normal margin: training without {device} to see how the model fares on it")
        try:
            name, cycles, by_margin = _held_out_scores(_inner_config(cfg, run_dir, device, keep_out), normal)
        except TrainError as exc:  # e.g. the device has no normal or no abnormal cycle: no Score on it
            skipped.append({"device": device, "reason": str(exc)})
            _say(console, f"normal margin: {device} skipped: {exc}")
            continue
        scores.append(by_margin)
        held_out.append({"device": name, "cycles": cycles, "scores": {str(m): v for m, v in by_margin.items()}})
    if not held_out:
        raise TrainError(f"--normal-margin cross-device: no training device of {run_dir} could be held out "
                         f"({'; '.join(s['device'] + ': ' + s['reason'] for s in skipped)})")
    margin = choose_margin(scores)
    record = {"mode": cfg.normal_margin, "margin": margin, "grid": list(MARGIN_GRID), "held_out": held_out,
              "skipped": skipped, "val_before": config["best"]["val"]}
    config["normal_margin"] = record
    atomic_write_json(run_dir / RUN_CONFIG, config)  # load_run reads the margin from here
    report = evaluate_run(run_dir, cfg.data, "val", cache_dir=cfg.cache_dir)
    config["best"]["val"] = {k: v for k, v in report.items() if k not in ("model", "data", "split", "by", "degrade",
                                                                          "calibrated")}
    config["warnings"] = selection_warnings(config["best"]["val"])
    record["seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(run_dir / RUN_CONFIG, config)
    for h in held_out:
        _say(console, f"normal margin: held-out {h['device']} ({h['cycles']} cycles): Score "
                      f"{h['scores']['0.0']:.2f} without, {h['scores'][str(margin)]:.2f} at margin {margin:g}")
    _say(console, f"normal margin {margin:g} (logits): validation Score {record['val_before']['score']:.2f} -> "
                  f"{config['best']['val']['score']:.2f} (always-normal: 50)")
    return record


def _say(console: Any, text: str) -> None:
    if console is not None:
        console.print(text)
    else:
        print(text, flush=True)
