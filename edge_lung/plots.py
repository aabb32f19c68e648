"""Pictures of features: a PNG (matplotlib, optional) and a terminal shade map (no dependencies)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
