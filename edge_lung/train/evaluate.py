"""Evaluate a training run (torch): load it, score it with the torch-free `edge_lung.scoring`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_lung.config import FeatureConfig
from edge_lung.data.devices import cycle_groups, load_run_split
from edge_lung.feature_stats import Calibration
from edge_lung.runtime.explain.embedding import cycle_embeddings, draw_embedding_map
from edge_lung.scoring import evaluate_cycles, predict
from edge_lung.train.model import load_run


def _load(run_dir: str | Path, db_dir: str | Path | None, split: str, device: str = "cpu",
          cache_dir: str | Path | None = None, degrade: str | None = None) -> tuple:
    """(LogitsModel, run config, FeatureConfig, database dir, cycles of `split`) of a training run; the database
    defaults to the one it was trained on, its split as the run made it (device split honoured)."""

    model, cfg = load_run(run_dir, device=device)
    features = FeatureConfig.from_dict(cfg["features"])
    db_dir = db_dir if db_dir is not None else cfg["data"]
    cycles = load_run_split(db_dir, split, features, cfg.get("train", {}), run_dir, cache_dir, degrade)
    return model, cfg, features, db_dir, cycles


def _logits_fn(model: Any, device: str, calibration: Calibration | None = None):
    """features float32[B, T, M] -> logits, through `calibration` first when given."""
    import torch

    @torch.no_grad()
    def logits_fn(x: np.ndarray) -> np.ndarray:
        x = x if calibration is None else calibration.apply(x)
        return model(torch.from_numpy(x).to(device)).float().cpu().numpy()

    return logits_fn


def evaluate_run(
    run_dir: str | Path,
    db_dir: str | Path | None,
    split: str = "test",
    device: str = "cpu",
    batch_size: int = 16,
    cache_dir: str | Path | None = None,
    by: str | None = None,
    degrade: str | None = None,
    calibration: Calibration | None = None,
) -> dict[str, Any]:
    """Score a training run on `split` of `db_dir` (default: the database it was trained on); `by` adds
    scores per device/rate/location/patient, `degrade` passes the split through a band-limited channel,
    `calibration` maps every input before the model exactly as a calibrated model directory does
    (`edge-lung calibrate`; benchmarks/device_shift.py measures it)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # keep stdout/stderr to the report

    model, cfg, features, db_dir, cycles = _load(run_dir, db_dir, split, device, cache_dir, degrade)
    groups = cycle_groups(db_dir, cycles, by) if by else None
    report = evaluate_cycles(cycles, features, _logits_fn(model, device, calibration), batch_size,
                             labels=cfg["labels"], groups=groups)
    report.update(model=str(run_dir), data=str(db_dir), split=split, by=by, degrade=degrade,
                  calibrated=calibration is not None)
    return report


def run_predictions(run_dir: str | Path, db_dir: str | Path | None, split: str, batch_size: int = 16,
                    cache_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(labels int64[N], logits float32[N, C]) of a training run on `split` (CPU), for decisions made on them."""
    model, _, features, _, cycles = _load(run_dir, db_dir, split, cache_dir=cache_dir)
    return predict(cycles, features, _logits_fn(model, "cpu"), batch_size)


def run_embedding_map(
    run_dir: str | Path,
    db_dir: str | Path | None,
    split: str,
    path: str | Path,
    device: str = "cpu",
    batch_size: int = 16,
):
    """`evaluate RUN --embeddings PATH`: t-SNE of the run's pooled embeddings over a split's cycles
    (`edge_lung.runtime.explain.embedding.draw_embedding_map`); returns its `EmbeddingMap`."""
    import torch


    model, cfg, features, db_dir, cycles = _load(run_dir, db_dir, split, device)

    @torch.no_grad()
    def embed(x: np.ndarray) -> np.ndarray:
        return model.logits_and_embedding(torch.from_numpy(x).to(device))[1].float().cpu().numpy()

    emb = cycle_embeddings(cycles, features, embed, batch_size)
    title = f"{Path(run_dir).name} (PyTorch), {split} split of {Path(db_dir).name}"
    return draw_embedding_map(emb, [c.label for c in cycles], [c.device for c in cycles], cfg["labels"], path, title)
