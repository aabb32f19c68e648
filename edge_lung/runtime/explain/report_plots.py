"""The pictures of the clinician report, as PNG bytes (matplotlib, imported when a picture is drawn).

Each function draws on its own `Figure` (no pyplot state), so pages can be written from any
thread and nothing is shown on screen.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from edge_lung.config import FeatureConfig
from edge_lung.runtime.explain.saliency import WindowSaliency

PLOT_INSTALL = "pip install 'edge-lung[plot]'"
_LABEL_COLOURS = ("tab:green", "tab:orange", "tab:blue", "tab:purple", "tab:brown", "tab:pink")


def new_figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(f"the report's pictures need matplotlib: {PLOT_INSTALL}") from exc
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig, dpi: int = 80) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def colour_of(label: int) -> str:
    return _LABEL_COLOURS[label % len(_LABEL_COLOURS)]


def spectrogram_png(mel: np.ndarray, features: FeatureConfig, cycles: Sequence, labels: Sequence[str],
                    seconds: float | None = None) -> bytes:
    """Log-mel of the whole recording (float32[T, M]: frames, or columns of averaged frames spanning `seconds`)
    with the annotated cycles (`CycleSpec`) as coloured bands."""
    fig = new_figure(11, 3.2)
    ax = fig.add_subplot()
    seconds = mel.shape[0] * features.frame_shift_ms / 1000 if seconds is None else seconds
    ax.imshow(mel.T, origin="lower", aspect="auto", extent=(0, seconds, 0, mel.shape[1]), cmap="magma")
    for c in cycles:
        ax.axvspan(c.start_s, c.end_s, ymin=0.93, ymax=1.0, color=colour_of(c.label), alpha=0.9)
        ax.axvline(c.start_s, color="white", lw=0.6, alpha=0.6)
        ax.text((c.start_s + c.end_s) / 2, mel.shape[1] * 0.965, labels[c.label], ha="center", va="center",
                fontsize=7, color="white")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mel bin")
    ax.set_title("log-mel spectrogram" + (" with the annotated cycles (top band: true label)" if cycles else ""),
                 fontsize=9)
    return _png(fig)


def timeline_png(decisions: Sequence, labels: Sequence[str], threshold: float, duration_s: float) -> bytes:
    """P(abnormal) and every class probability per window (at the window's end), threshold and flags marked;
    windows the quality gate held back are crosses on the axis."""
    fig = new_figure(11, 2.8)
    ax = fig.add_subplot()
    t = np.array([d.window.end_s for d in decisions])
    probs = np.stack([d.probabilities for d in decisions]) if decisions else np.zeros((0, len(labels)))
    for k, name in enumerate(labels):
        ax.plot(t, probs[:, k], "-", lw=1, color=colour_of(k), label=f"P({name})")
    p_abn = np.array([d.p_abnormal for d in decisions])
    ax.plot(t, p_abn, "k-", lw=2.2, label="P(abnormal)")
    flagged = np.array([d.flag for d in decisions], dtype=bool)
    ax.plot(t[flagged], p_abn[flagged], "rv", ms=7, label="flagged")
    stopped = np.array([getattr(d, "verdict", "ok") != "ok" for d in decisions], dtype=bool)
    if stopped.any():  # windows the signal-quality gate held back have no probabilities
        ax.plot(t[stopped], np.zeros(int(stopped.sum())), "x", color="gray", ms=7, label="not classified (quality)")
    ax.axhline(threshold, color="tab:red", ls="--", lw=1, label=f"threshold {threshold:.2f}")
    ax.set_xlim(0, max(duration_s, float(t.max()) if t.size else 1.0))
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("end of window (s)")
    ax.set_ylabel("probability")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    return _png(fig)


def saliency_png(
    window_mel: np.ndarray, saliency: WindowSaliency, features: FeatureConfig, title: str, events: Sequence = ()
) -> bytes:
    """The window's normalised log-mel with the occlusion drop laid over it; the peak patch boxed, drawn events
    (synthetic recordings) outlined in cyan, mapped onto window time."""
    fig = new_figure(11, 3.0)
    ax_mel, ax_sal = fig.subplots(1, 2, sharey=True)
    shift = features.frame_shift_ms / 1000
    width = window_mel.shape[0] * shift
    extent = (0, width, 0, window_mel.shape[1])
    ax_mel.imshow(window_mel.T, origin="lower", aspect="auto", extent=extent, cmap="magma")
    ax_mel.set_title("window log-mel", fontsize=9)
    ax_sal.imshow(window_mel.T, origin="lower", aspect="auto", extent=extent, cmap="gray")
    drop = np.clip(saliency.drop, 0, None)
    x_edges = saliency.frame_edges * shift
    mesh = ax_sal.pcolormesh(x_edges, saliency.bin_edges, drop.T, cmap="inferno", alpha=0.65, vmin=0,
                             vmax=max(float(drop.max()), 1e-6))
    fig.colorbar(mesh, ax=ax_sal, label="probability drop")
    i, j = saliency.peak
    ax_sal.add_patch(_rect(x_edges[i], saliency.bin_edges[j], x_edges[i + 1] - x_edges[i],
                           saliency.bin_edges[j + 1] - saliency.bin_edges[j], "lime", 2.0))
    for e in events:
        for a, b, lo, hi in _event_boxes(e, saliency, features, width):
            ax_sal.add_patch(_rect(a, lo, b - a, hi - lo, "cyan", 0.8))
    ax_sal.set_title(title, fontsize=9)
    for ax in (ax_mel, ax_sal):
        ax.set_xlabel("time in window (s)")
    ax_mel.set_ylabel("mel bin")
    return _png(fig)


def _rect(x: float, y: float, w: float, h: float, colour: str, lw: float):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), w, h, fill=False, edgecolor=colour, lw=lw)


def _event_boxes(event, saliency: WindowSaliency, features: FeatureConfig, width: float) -> list[tuple]:
    """Window-time boxes (t0, t1, bin0, bin1) of one drawn event; a padded window repeats its audio."""
    span = saliency.end_s - saliency.start_s
    a, b = event.start_s - saliency.start_s, event.end_s - saliency.start_s
    lo, hi = _hz_to_bin(event.low_hz, features), _hz_to_bin(event.high_hz, features)
    repeats = int(np.ceil(width / span)) if saliency.padded and span > 0 else 1
    return [(a + k * span, b + k * span, lo, hi) for k in range(repeats) if a + k * span < width]


def _hz_to_bin(hz: float, features: FeatureConfig) -> float:
    def mel(f: float) -> float:
        return 1127.0 * float(np.log(1.0 + f / 700.0))

    lo, hi = mel(features.low_freq_hz), mel(features.high_hz)
    delta = (hi - lo) / (features.num_mel_bins + 1)
    return float(np.clip((mel(hz) - lo) / delta - 1.0, 0, features.num_mel_bins))
