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


# ---------------------------------------------------------------------------------------------
# Scores per group (device, rate, location, patient) with patient-bootstrap intervals (issue #12)

_CI_KEYS = ("specificity", "sensitivity", "score")


def group_scores(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    groups: list[str],
    patients: list[str],
    n_boot: int = 1000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Official Sp / Se / Score per group, with cycle and patient counts and 95% bootstrap intervals.

    Cycles of one patient are not independent (same chest, same day, same stethoscope), so the
    interval resamples *patients* with replacement inside each group and scores all their cycles:
    resampling cycles would make the interval too narrow. Intervals are percentiles 2.5 / 97.5 of
    the draws where the figure is defined; a group with one patient gets a zero-width interval.
    """
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if not (len(y_true) == len(y_pred) == len(groups) == len(patients)):
        raise ValueError(f"group_scores: expected equal lengths, got {len(y_true)} labels, {len(y_pred)} "
                         f"predictions, {len(groups)} groups, {len(patients)} patients")
    rng = np.random.default_rng(seed)
    out = []
    for group in sorted(set(groups)):
        idx = np.array([i for i, g in enumerate(groups) if g == group])
        row = {"group": group, **icbhi_scores(confusion_matrix(y_true[idx], y_pred[idx]))}
        row["num_patients"] = len({patients[i] for i in idx})
        row["ci95"] = patient_bootstrap(y_true[idx], y_pred[idx], [patients[i] for i in idx], n_boot, rng)
        out.append(row)
    return out


def patient_bootstrap(y_true: np.ndarray, y_pred: np.ndarray, patients: list[str], n_boot: int,
                      rng: np.random.Generator) -> dict[str, list[float | None]]:
    """[low, high] 95% percentile interval of Sp, Se and Score over `n_boot` resamplings of whole patients."""
    cms = {}  # one confusion matrix per patient: a draw is a sum of them
    for p in sorted(set(patients)):
        mask = np.array([q == p for q in patients])
        cms[p] = confusion_matrix(y_true[mask], y_pred[mask])
    stack = np.stack(list(cms.values()))  # [P, C, C]
    draws = rng.integers(0, len(stack), size=(n_boot, len(stack)))
    figures: dict[str, list[float]] = {k: [] for k in _CI_KEYS}
    for d in draws:
        s = icbhi_scores(stack[d].sum(axis=0))
        for k in _CI_KEYS:
            figures[k].append(s[k])
    ci: dict[str, list[float | None]] = {}
    for k, values in figures.items():
        v = np.asarray(values)
        v = v[~np.isnan(v)]
        ci[k] = [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if v.size else [None, None]
    return ci


def format_group_scores(rows: list[dict[str, Any]], by: str) -> str:
    """Table of `group_scores` rows: group, cycles, patients, Sp / Se / Score with their 95% intervals."""

    def cell(row: dict[str, Any], key: str) -> str:
        low, high = row["ci95"][key]
        value = row[key]
        if np.isnan(value):
            return f"{'-':>6} {'':13}"
        span = f"[{low:5.1f},{high:5.1f}]" if low is not None else "[  -  ,  -  ]"
        return f"{value:6.1f} {span}"

    lines = [f"By {by} (official ICBHI, 95% CI by bootstrap over patients):",
             f"  {by:>12} {'cycles':>6} {'pts':>4}  {'Sp':>6} {'':13}  {'Se':>6} {'':13}  {'Score':>6}"]
    for row in rows:
        lines.append(f"  {row['group']:>12} {row['num_cycles']:>6} {row['num_patients']:>4}  "
                     + "  ".join(cell(row, k) for k in _CI_KEYS))
    return "\n".join(lines)
