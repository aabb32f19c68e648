"""Pictures: log-mel features (a PNG, matplotlib optional, and a terminal shade map with no dependencies),
the bench report, the Pareto plot of Score against latency and a training run's curve and confusion
matrix (PNGs, matplotlib)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_lung.fileio import atomic_path

_SHADES = " .:-=+*#%@"


def ascii_spectrogram(feats: np.ndarray, rows: int = 12, cols: int = 72) -> str:
    """float32[T, M] -> text, low frequencies at the bottom, time left to right."""
    t_edges = np.linspace(0, feats.shape[0], cols + 1).astype(int)
    m_edges = np.linspace(0, feats.shape[1], rows + 1).astype(int)
    grid = np.array([[feats[t_edges[c]:t_edges[c + 1], m_edges[r]:m_edges[r + 1]].mean()
                      for c in range(cols)] for r in range(rows)])
    lo, hi = np.percentile(grid, 2), np.percentile(grid, 98)
    idx = np.clip((grid - lo) / max(hi - lo, 1e-6) * (len(_SHADES) - 1), 0, len(_SHADES) - 1).astype(int)
    return "\n".join("".join(_SHADES[i] for i in row) for row in idx[::-1])


def save_feature_png(panels: list[tuple[str, np.ndarray]], path: str | Path, frame_shift_ms: float = 10.0) -> Path:
    """One log-mel panel per (title, float32[T, M]) in a PNG at `path`."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("the feature picture needs matplotlib: pip install 'edge-lung[plot]'") from exc
    path = Path(path)
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.2 * len(panels)), squeeze=False)
    for ax, (title, feats) in zip(axes[:, 0], panels, strict=True):
        extent = (0, feats.shape[0] * frame_shift_ms / 1000, 0, feats.shape[1])
        ax.imshow(feats.T, origin="lower", aspect="auto", extent=extent, cmap="magma")
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("mel bin")
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- bench (`edge-lung bench --plot`)
# matplotlib is imported inside the function, so the bench and the device side never load it.

PLOT_INSTALL = "pip install 'edge-lung[plot]'"


def plot_bench_report(report: dict, labels: list[str], path: str | Path) -> Path:
    """PNG of an `edge-lung bench` report: end-to-end latency distribution per row (box + points), hop and
    budget lines, and the p50 split between features and model. `labels`: one per row, top to bottom
    (`edge_lung.bench.report.row_labels`)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(f"--plot needs matplotlib: {PLOT_INSTALL}") from exc
    path = Path(path)
    if path.parent and not path.parent.is_dir():
        raise FileNotFoundError(f"--plot {path}: folder {path.parent} does not exist")
    rows = report["results"]
    fig = Figure(figsize=(12, 1.2 + 0.7 * len(rows)), layout="constrained")
    FigureCanvasAgg(fig)
    ax, bx = fig.subplots(1, 2, width_ratios=[3, 1], sharey=True)
    _latency_boxes(ax, [r["samples"]["e2e_ms"] for r in rows])
    v = rows[0]["verdict"] if rows else None
    if v:
        ax.axvline(v["hop_ms"], color="tab:red", ls="--", label=f"hop {v['hop_ms']:g} ms")
        if v["budget_ms"] is not None:
            ax.axvline(v["budget_ms"], color="tab:orange", ls=":", label=f"budget {v['budget_ms']:g} ms")
        ax.legend(loc="lower right")
    ax.set_yticks(range(1, len(rows) + 1), list(labels))
    ax.set_xlabel("end-to-end latency per window, ms (box: p25-p75, whiskers p1-p99)")
    ax.set_title(f"edge-lung bench: {report['environment'].get('board') or report['environment'].get('cpu')}")
    y = np.arange(1, len(rows) + 1)
    feat = [r["features_ms"]["p50"] for r in rows]
    model = [r["model_ms"]["p50"] for r in rows]
    bx.barh(y, feat, color="tab:green", label="features")
    bx.barh(y, model, left=feat, color="tab:purple", label="model")
    bx.set_xlabel("p50 split, ms")
    ax.invert_yaxis()  # first row on top, as in the table (the axes share y)
    bx.legend(loc="lower right")
    fig.savefig(path, dpi=110)
    return path


def _latency_boxes(ax, data: list[list[float]]) -> None:
    """Horizontal boxes (whiskers p1-p99) on the matplotlib Axes `ax`, every sample as a jittered point."""
    try:
        ax.boxplot(data, orientation="horizontal", whis=(1, 99), showfliers=False)
    except TypeError:  # matplotlib < 3.10 has no `orientation`; `vert` is deprecated after it
        ax.boxplot(data, vert=False, whis=(1, 99), showfliers=False)
    rng = np.random.default_rng(0)
    for i, d in enumerate(data, start=1):
        ax.plot(d, i + rng.uniform(-0.15, 0.15, len(d)), ".", ms=3, alpha=0.5, color="tab:blue")


# ---------------------------------------------------------------------------------------------
# Training run figures (training_curve.png, confusion_matrix.png of a run directory)


def _pyplot_for(what: str) -> Any:
    """matplotlib.pyplot on the file-only Agg backend, or ImportError with the install command."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(f"{what} needs matplotlib: {PLOT_INSTALL}") from exc
    return plt


def _save_atomic(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    return path


def save_training_curve(history: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Train loss and validation ICBHI Score per epoch of a run's metrics.json history, as a PNG."""
    plt = _pyplot_for("the training curve")
    epochs = [h["epoch"] for h in history]
    fig, ax1 = plt.subplots(figsize=(6, 3.5))
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", color="tab:blue", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("train loss", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.plot(epochs, [h["val"]["score"] for h in history], "s-", color="tab:red", label="val ICBHI Score")
    ax2.set_ylabel("val ICBHI Score (%)", color="tab:red")
    ax1.set_title("Training curve")
    fig.tight_layout()
    try:
        return _save_atomic(fig, Path(path))
    finally:
        plt.close(fig)


def save_confusion_matrix(matrix: Sequence[Sequence[int]], labels: Sequence[str], title: str,
                          path: str | Path) -> Path:
    """A confusion matrix (rows true, columns predicted) with its counts written in, as a PNG."""
    plt = _pyplot_for("the confusion matrix picture")
    cm = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=30)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="black")
    ax.set_title(title)
    fig.tight_layout()
    try:
        return _save_atomic(fig, Path(path))
    finally:
        plt.close(fig)


def pareto_front(points: Sequence[dict[str, Any]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower "ms", higher "score"), fastest first."""
    order = sorted(range(len(points)), key=lambda i: (points[i]["ms"], -points[i]["score"]))
    front, best = [], -np.inf
    for i in order:
        if points[i]["score"] > best:
            front.append(i)
            best = points[i]["score"]
    return front


def save_pareto(points: Sequence[dict[str, Any]], path: str | Path, title: str, baseline: float = 50.0) -> Path:
    """Score against end-to-end ms per window, one marker per model and precision ({"label", "precision",
    "ms", "score"} each), the Pareto front joined, and the always-"normal" baseline drawn: a model under
    that line on the same split is worse than no model."""
    plt = _pyplot_for("the Pareto plot")
    markers = {"fp32": "o", "int8-dynamic": "s", "int8-static": "D"}
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for p in points:
        ax.plot(p["ms"], p["score"], markers.get(p["precision"], "^"), ms=8, label=f"{p['label']} ({p['precision']})")
        ax.annotate(f"{p['score']:.1f}", (p["ms"], p["score"]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    front = [points[i] for i in pareto_front(points)]
    ax.plot([p["ms"] for p in front], [p["score"] for p in front], "--", color="grey", lw=1, label="Pareto front")
    ax.axhline(baseline, color="tab:red", ls=":", lw=1, label=f'always "normal" ({baseline:g})')
    ms = [p["ms"] for p in points]
    if ms and max(ms) > 20 * min(ms):  # AST-base beside a student: orders of magnitude apart
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("end-to-end ms per 8 s window (features + model, p50, 1 thread)")
    ax.set_ylabel("ICBHI Score (official)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    try:
        return _save_atomic(fig, Path(path))
    finally:
        plt.close(fig)


def plot_sustained(result: dict[str, Any], path: str | Path) -> Path:
    """`bench --sustained`: p50/p95 per minute (and the temperature, where read) to a PNG."""
    plt = _pyplot_for("bench --sustained --plot")
    minutes = [p["minute"] for p in result["periods"]]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(minutes, [p["p50_ms"] for p in result["periods"]], "o-", label="p50")
    ax.plot(minutes, [p["p95_ms"] for p in result["periods"]], "s--", label="p95")
    ax.set_xlabel("minute")
    ax.set_ylabel("ms per window")
    ax.set_title(f"{Path(result['model']).name}: sustained load, {result['threads']} thread(s)")
    temps = [p["temp_c"] for p in result["periods"]]
    if any(t is not None for t in temps):
        twin = ax.twinx()
        twin.plot(minutes, [np.nan if t is None else t for t in temps], "r:", label="temp C")
        twin.set_ylabel("SoC temperature (C)")
    else:
        ax.text(0.02, 0.02, "temperature: not exposed on this machine", transform=ax.transAxes, fontsize=8)
    ax.legend(loc="upper left")
    return _save_atomic(fig, Path(path))
