"""Honest ICBHI evaluation of any classifier given as a logits function.

The generic part is torch-free: `evaluate_cycles(cycles, cfg, logits_fn)` turns each cycle into
the model input exactly as the device does (`features.cycle_features`), calls
`logits_fn(features[B, T, M]) -> logits[B, C]`, and scores the argmax with
`edge_lung.metrics` (official Sp / exact-class Se / Score and the relaxed 2-class figures).
Training uses it for validation, so `edge-lung evaluate RUN --split val` reproduces the
figures that selected the checkpoint. `evaluate_run` loads a training run (torch, lazily).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np

from edge_lung.config import LABELS, FeatureConfig
from edge_lung.features import cycle_features
from edge_lung.metrics import format_group_scores, format_scores, group_scores, score_predictions, screening_curve

LogitsFn = Callable[[np.ndarray], np.ndarray]


class CycleLike(Protocol):
    label: int
    audio: np.ndarray


def stack_features(cycles: Sequence[CycleLike], cfg: FeatureConfig) -> np.ndarray:
    """float32[N, T, M] for all cycles (N * 0.4 MB at 8 s / 128 bins)."""
    out = np.empty((len(cycles), cfg.num_frames, cfg.num_mel_bins), dtype=np.float32)
    for i, c in enumerate(cycles):
        out[i] = cycle_features(c.audio, cfg)
    return out


def _batches(cycles: Sequence[CycleLike], cfg: FeatureConfig, batch_size: int,
             features: np.ndarray | None) -> Iterator[np.ndarray]:
    for start in range(0, len(cycles), batch_size):
        if features is not None:
            yield features[start : start + batch_size]
        else:
            yield np.stack([cycle_features(c.audio, cfg) for c in cycles[start : start + batch_size]])


def predict(
    cycles: Sequence[CycleLike],
    cfg: FeatureConfig,
    logits_fn: LogitsFn,
    batch_size: int = 16,
    features: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(y_true int64[N], logits float32[N, C]); `features` may hold precomputed inputs."""
    if not cycles:
        raise ValueError("evaluate: expected at least one cycle, got none")
    if batch_size <= 0:
        raise ValueError(f"batch_size: expected > 0, got {batch_size}")
    if features is not None and features.shape[0] != len(cycles):
        raise ValueError(f"evaluate: expected features for {len(cycles)} cycles, got {features.shape[0]}")
    chunks = [np.asarray(logits_fn(x), dtype=np.float32) for x in _batches(cycles, cfg, batch_size, features)]
    logits = np.concatenate(chunks, axis=0)
    y_true = np.array([c.label for c in cycles], dtype=np.int64)
    return y_true, logits


def evaluate_cycles(
    cycles: Sequence[CycleLike],
    cfg: FeatureConfig,
    logits_fn: LogitsFn,
    batch_size: int = 16,
    features: np.ndarray | None = None,
    labels: Sequence[str] = LABELS,
    groups: Sequence[str] | None = None,
) -> dict[str, Any]:
    """ICBHI report (see `edge_lung.metrics.icbhi_scores`) plus the mean cross-entropy ("loss");
    with `groups` (one name per cycle) also "by_group", `edge_lung.metrics.group_scores` per group."""
    y_true, logits = predict(cycles, cfg, logits_fn, batch_size, features)
    if logits.ndim != 2 or logits.shape[1] != len(labels):
        raise ValueError(f"evaluate: expected logits [N, {len(labels)}], got {logits.shape}")
    report = score_predictions(y_true, logits.argmax(axis=1))
    log_p = log_softmax(logits.astype(np.float64))
    report["loss"] = float(-log_p[np.arange(len(y_true)), y_true].mean())
    report["labels"] = list(labels)
    # 2-class screening on P(abnormal): the curve a clinic reads to pick `stream --threshold`.
    p_abnormal = np.exp(log_p)[:, [i for i, name in enumerate(labels) if name != "normal"]].sum(axis=1)
    report["screening_curve"] = screening_curve(y_true, p_abnormal)
    if groups is not None:
        report["by_group"] = group_scores(y_true, logits.argmax(axis=1), list(groups),
                                          [str(getattr(c, "patient", i)) for i, c in enumerate(cycles)])
    return report


def format_report(report: dict[str, Any]) -> str:
    """Header line plus `format_scores`' block."""
    head = f"{report.get('model', '?')} on {report.get('data', '?')} [{report.get('split', '?')}]"
    text = head + "\n" + format_scores(report, tuple(report.get("labels", LABELS)))
    curve = report.get("screening_curve")
    if curve:
        text += "\nScreening on P(abnormal) >= threshold (pick `edge-lung stream --threshold`):\n"
        text += "  threshold " + " ".join(f"{p['threshold']:>5.2f}" for p in curve[::2]) + "\n"
        text += "  Se        " + " ".join(format_pct(p["sensitivity"]) for p in curve[::2]) + "\n"
        text += "  Sp        " + " ".join(format_pct(p["specificity"]) for p in curve[::2])
    if report.get("by_group"):
        text += "\n" + format_group_scores(report["by_group"], report.get("by", "group"))
    return text


def format_pct(value: float | None, width: int = 5) -> str:
    """A percentage with one decimal, right-aligned to `width`; "-" for a missing (None or NaN) figure."""
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    return ("-" if missing else f"{value:.1f}").rjust(width)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable log of `softmax` over the last axis, in the input's dtype."""
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities float32[..., C] from logits (the one softmax: evaluation, runtime, bench)."""
    return np.exp(log_softmax(logits)).astype(np.float32)
