"""ICBHI 2017 challenge metrics, numpy only (used by training, export parity and the runtime).

Official (Rocha et al. 2019): Sp = correctly classified normal / all normal; Se = abnormal
cycles predicted as their *exact* abnormal class / all abnormal; Score = (Se + Sp) / 2.
Relaxed 2-class Se (as reported by the LungAdapter paper, 68.10): an abnormal cycle counts as
detected if any abnormal class is predicted. Both are reported, with these names.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_lung.config import LABELS


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = len(LABELS)) -> np.ndarray:
    """int64[true, pred] counts."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"confusion_matrix: expected equal shapes, got {y_true.shape} and {y_pred.shape}")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def icbhi_scores(cm: np.ndarray) -> dict[str, Any]:
    """Official and relaxed ICBHI figures (in percent) from a 4x4 confusion matrix."""
    cm = np.asarray(cm, dtype=np.int64)
    normal_total = int(cm[0].sum())
    abnormal_total = int(cm[1:].sum())
    sp = 100.0 * cm[0, 0] / normal_total if normal_total else float("nan")
    se_exact = 100.0 * np.trace(cm[1:, 1:]) / abnormal_total if abnormal_total else float("nan")
    se_relaxed = 100.0 * cm[1:, 1:].sum() / abnormal_total if abnormal_total else float("nan")
    total = int(cm.sum())
    return {
        "specificity": float(sp),
        "sensitivity": float(se_exact),
        "score": float((sp + se_exact) / 2),
        "sensitivity_relaxed_2class": float(se_relaxed),
        "score_relaxed_2class": float((sp + se_relaxed) / 2),
        "accuracy": float(100.0 * np.trace(cm) / total) if total else float("nan"),
        "num_cycles": total,
        "confusion_matrix": cm.tolist(),
    }


def score_predictions(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """`icbhi_scores` straight from label arrays."""
    return icbhi_scores(confusion_matrix(y_true, y_pred))


def format_scores(s: dict[str, Any], labels: tuple[str, ...] = LABELS) -> str:
    """Human-readable block with clearly labelled official and relaxed figures."""
    lines = [
        f"ICBHI official  Sp {s['specificity']:6.2f}  Se (exact class) {s['sensitivity']:6.2f}  "
        f"Score {s['score']:6.2f}",
        f"Relaxed 2-class Sp {s['specificity']:6.2f}  Se (any abnormal) {s['sensitivity_relaxed_2class']:6.2f}  "
        f"Score {s['score_relaxed_2class']:6.2f}",
        f"Accuracy {s['accuracy']:.2f} on {s['num_cycles']} cycles",
        "Confusion matrix (rows true, columns predicted):",
        "           " + " ".join(f"{n:>8}" for n in labels),
    ]
    for name, row in zip(labels, s["confusion_matrix"], strict=True):
        lines.append(f"  {name:>8} " + " ".join(f"{v:>8}" for v in row))
    return "\n".join(lines)


def screening_curve(y_true: np.ndarray, p_abnormal: np.ndarray, thresholds: np.ndarray | None = None) -> list[dict]:
    """Sensitivity/specificity (percent, None where undefined) of `P(abnormal) >= t` for each threshold t."""
    y_abn = np.asarray(y_true) > 0
    p = np.asarray(p_abnormal, dtype=np.float64)
    if thresholds is None:
        thresholds = np.round(np.linspace(0.05, 0.95, 19), 2)
    n_abn, n_norm = int(y_abn.sum()), int((~y_abn).sum())
    out = []
    for t in thresholds:
        flag = p >= t
        se = 100.0 * (flag & y_abn).sum() / n_abn if n_abn else None  # undefined, not 0%, without abnormal cycles
        sp = 100.0 * (~flag & ~y_abn).sum() / n_norm if n_norm else None
        out.append({"threshold": float(t), "sensitivity": _maybe_float(se), "specificity": _maybe_float(sp)})
    return out


def _maybe_float(value: float | None) -> float | None:
    return None if value is None else float(value)
