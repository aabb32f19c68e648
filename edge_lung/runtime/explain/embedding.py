"""Embedding maps: does the model's pooled embedding separate the sounds, or the stethoscopes?

`evaluate RUN|MODEL_DIR --embeddings PATH.png` pools one embedding per annotated cycle (the
vector the classifier head reads), draws a t-SNE of them coloured by class and marked by
recording device, and prints the silhouette score of the embeddings grouped by class and
grouped by device: a model whose embedding clusters by stethoscope rather than by sound shows
a device silhouette above the class one. t-SNE and the silhouette come from scikit-learn; the
silhouette is measured on the embeddings themselves (Euclidean), not on the 2-D map, which
t-SNE distorts. Exported models carry the embedding as their second ONNX output
(`model_dir.EMBEDDING_NAME`); torch-free, so it runs on the device side too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_lung.config import FeatureConfig
from edge_lung.data.icbhi import load_split, run_val_split
from edge_lung.features import cycle_features
from edge_lung.runtime.artifact.model_dir import OnnxClassifier
from edge_lung.runtime.explain.report_plots import colour_of, new_figure

SKLEARN_INSTALL = "pip install 'edge-lung[plot]'"
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


@dataclass(frozen=True)
class EmbeddingMap:
    """What `evaluate --embeddings` prints: how many cycles, where the picture is, and both silhouettes."""

    path: Path
    cycles: int
    dims: int
    silhouette_class: float | None  # None: fewer than two groups (a silhouette needs two)
    silhouette_device: float | None

    def lines(self) -> list[str]:
        def fmt(v: float | None) -> str:
            return "n/a (one group)" if v is None else f"{v:+.3f}"

        return [
            f"embedding map ({self.cycles} cycles, {self.dims}-d pooled embedding, t-SNE): {self.path}",
            f"  silhouette by class:  {fmt(self.silhouette_class)}  (higher: the embedding separates the sounds)",
            f"  silhouette by device: {fmt(self.silhouette_device)}  (higher: it separates the stethoscopes)",
        ]


def cycle_embeddings(
    cycles: Sequence,
    features: FeatureConfig,
    embed: Callable[[np.ndarray], np.ndarray],
    batch_size: int = 16,
    progress: bool = True,
) -> np.ndarray:
    """float32[N, D]: `embed` (float32[B, T, M] -> [B, D]) of every cycle's model input, with a progress bar."""
    from rich.console import Console
    from rich.progress import Progress

    out = []
    with Progress(console=Console(stderr=True), disable=not progress, transient=True) as bar:
        task = bar.add_task("embeddings", total=len(cycles))
        for start in range(0, len(cycles), batch_size):
            chunk = cycles[start : start + batch_size]
            out.append(np.asarray(embed(np.stack([cycle_features(c.audio, features) for c in chunk])), np.float32))
            bar.advance(task, len(chunk))
    if not out:
        raise ValueError("embeddings: expected at least one cycle, got none")
    return np.concatenate(out)


def silhouette(embeddings: np.ndarray, groups: Sequence) -> float | None:
    """scikit-learn's silhouette score of `embeddings` grouped by `groups`, or None with fewer than two groups."""
    from sklearn.metrics import silhouette_score

    groups = np.asarray(groups)
    n_groups = len(set(groups.tolist()))
    if n_groups < 2 or n_groups >= len(groups):
        return None
    return float(silhouette_score(embeddings, groups))


def draw_embedding_map(
    embeddings: np.ndarray,
    labels: Sequence[int],
    devices: Sequence[str],
    label_names: Sequence[str],
    path: str | Path,
    title: str = "",
    seed: int = 0,
) -> EmbeddingMap:
    """t-SNE of float32[N, D] to 2-D, coloured by class, marker by device, saved as PNG at `path`."""
    try:
        from sklearn.manifold import TSNE
    except ImportError as exc:
        raise ImportError(f"--embeddings needs scikit-learn: {SKLEARN_INSTALL}") from exc

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"--embeddings {path}: expected a path ending in .png")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"--embeddings {path}: folder {path.parent} does not exist")
    x = np.asarray(embeddings, dtype=np.float32)
    if x.shape[0] < 5:
        raise ValueError(f"--embeddings: expected at least 5 cycles for a t-SNE map, got {x.shape[0]}")
    labels, devices = np.asarray(labels), np.asarray(devices)
    xy = TSNE(2, perplexity=min(30.0, (x.shape[0] - 1) / 3), init="pca", random_state=seed).fit_transform(x)
    result = EmbeddingMap(path, x.shape[0], x.shape[1], silhouette(x, labels), silhouette(x, devices))
    fig = new_figure(8, 6.5)
    ax = fig.add_subplot()
    for d_i, device in enumerate(sorted(set(devices.tolist()))):
        for k, name in enumerate(label_names):
            pick = (devices == device) & (labels == k)
            if pick.any():
                ax.scatter(xy[pick, 0], xy[pick, 1], s=22, c=colour_of(k), marker=_MARKERS[d_i % len(_MARKERS)],
                           alpha=0.8, edgecolors="none", label=f"{name} / {device}")
    ax.set_xticks([])
    ax.set_yticks([])
    lines = result.lines()
    ax.set_title(f"{title}\n{lines[1].strip()}\n{lines[2].strip()}".strip(), fontsize=8)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0), title="class / device", title_fontsize=7)
    fig.savefig(path, dpi=90)
    return result


def model_dir_embedding_map(
    model_dir: str | Path, db_dir: str | Path, split: str, path: str | Path, threads: int | None = None
) -> EmbeddingMap:
    """`evaluate MODEL_DIR --embeddings PATH`: the exported model's second output over a split's cycles."""

    clf = OnnxClassifier(model_dir, threads=threads)
    clf.require_embedding()
    info = clf.info
    cycles = load_split(db_dir, split, info.features, *run_val_split(info.run, info.path))
    # one window per call: a dynamic-INT8 model's activations depend on its batch-mates (as in evaluate)
    emb = cycle_embeddings(cycles, info.features, clf.embeddings, batch_size=1)
    title = f"{Path(model_dir).name} ({info.quantization}), {split} split of {Path(db_dir).name}"
    return draw_embedding_map(emb, [c.label for c in cycles], [c.device for c in cycles], info.labels, path, title)
