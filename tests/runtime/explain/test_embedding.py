"""Embedding maps: the silhouettes say whether an embedding separates classes or devices, and the map is drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_lung.config import LABELS

pytest.importorskip("sklearn")


def clustered(by: np.ndarray, other: np.ndarray, seed: int = 0) -> np.ndarray:
    """16-d points in one tight cluster per value of `by`, whatever `other` is."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, (int(by.max()) + 1, 16))
    return (centres[by] + rng.normal(0, 0.5, (by.size, 16))).astype(np.float32)


def test_silhouettes_tell_sound_clusters_from_stethoscope_clusters(tmp_path: Path):
    from edge_lung.runtime.explain.embedding import draw_embedding_map

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 120)
    device_idx = rng.integers(0, 3, 120)
    devices = np.array(["AKGC417L", "Meditron", "LittC2SE"])[device_idx]
    by_sound = draw_embedding_map(clustered(labels, device_idx), labels, devices, LABELS, tmp_path / "sound.png")
    by_device = draw_embedding_map(clustered(device_idx, labels), labels, devices, LABELS, tmp_path / "device.png")
    assert by_sound.silhouette_class > 0.8 and abs(by_sound.silhouette_device) < 0.1
    assert by_device.silhouette_device > 0.8 and abs(by_device.silhouette_class) < 0.1
    import matplotlib.image as mpimg

    for png in ("sound.png", "device.png"):
        image = mpimg.imread(str(tmp_path / png))
        assert image.shape[0] > 300 and image[..., :3].std() > 0.05


def test_embedding_map_refuses_bad_paths_and_too_few_cycles(tmp_path: Path):
    from edge_lung.runtime.explain.embedding import draw_embedding_map

    x, y = np.zeros((10, 4), np.float32), np.zeros(10, int)
    with pytest.raises(ValueError, match="expected a path ending in .png"):
        draw_embedding_map(x, y, ["a"] * 10, LABELS, tmp_path / "map.jpg")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        draw_embedding_map(x, y, ["a"] * 10, LABELS, tmp_path / "missing" / "map.png")
    with pytest.raises(ValueError, match="at least 5 cycles"):
        draw_embedding_map(x[:3], y[:3], ["a"] * 3, LABELS, tmp_path / "map.png")


def test_model_without_embedding_output_says_to_re_export(tmp_path: Path):
    pytest.importorskip("onnx")
    from edge_lung.runtime.artifact.model_dir import ArtifactError, OnnxClassifier
    from edge_lung.testing import build_tiny_model

    clf = OnnxClassifier(build_tiny_model(tmp_path / "old"))
    assert not clf.has_embedding
    assert clf.logits(np.zeros((798, 128), np.float32)).shape == (1, 4)
    with pytest.raises(ArtifactError, match="no 'embedding' output.*re-export it"):
        clf.embeddings(np.zeros((798, 128), np.float32))
