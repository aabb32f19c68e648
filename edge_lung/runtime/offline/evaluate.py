"""Evaluate an exported MODEL_DIR on a database split through onnxruntime (no torch).

`edge-lung evaluate MODEL_DIR --data DB --split test` lands here when the path holds
manifest.json. The cycles, their model input and the scoring are the ones the training run's own
evaluation uses (`edge_lung.scoring.load_split` / `evaluate_cycles`, both torch-free), with the
feature settings read from the model's metadata, so FP32 figures match `evaluate_run` exactly.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from edge_lung.data.devices import cycle_groups, load_run_split
from edge_lung.runtime.artifact.model_dir import OnnxClassifier, is_model_dir
from edge_lung.scoring import evaluate_cycles

__all__ = ["evaluate_model_dir", "is_model_dir"]  # is_model_dir lives in model_dir (export and calibrate use it)


def evaluate_model_dir(
    model_dir: str | Path,
    db_dir: str | Path,
    split: str = "test",
    threads: int | None = None,
    batch_size: int = 16,
    cache_dir: str | Path | None = None,
    by: str | None = None,
    degrade: str | None = None,
) -> dict[str, Any]:
    """ICBHI report of the exported model on `split` of the database in `db_dir`.

    Same keys as `edge_lung.scoring.evaluate_run` (so `format_report` prints it), plus
    "quantization" and "seconds". The validation slice uses the fraction and seed the run was
    trained with, as recorded in the model's metadata. `by` and `degrade` as in `evaluate_run`.
    """

    clf = OnnxClassifier(model_dir, threads=threads)
    info = clf.info
    cycles = load_run_split(db_dir, split, info.features, info.run, info.path, cache_dir, degrade)
    groups = cycle_groups(db_dir, cycles, by) if by else None
    t0 = time.perf_counter()
    if "dynamic" in info.quantization:
        # Dynamic INT8 takes activation ranges from each call's whole batch, so a window's result depends
        # on its batch-mates. The device classifies one window per call: so does this evaluation.
        batch_size = 1
    report = evaluate_cycles(cycles, info.features, clf.logits, batch_size, labels=info.labels, groups=groups)
    report.update(
        model=str(model_dir),
        data=str(db_dir),
        split=split,
        by=by,
        degrade=degrade,
        quantization=info.quantization,
        calibrated=info.calibration is not None,
        seconds=round(time.perf_counter() - t0, 2),
    )
    return report
