"""A second runtime proves the end-to-end graph: model.e2e.onnx run by onnxruntime-node (Node.js) on
the test vectors gives the probabilities Python's onnxruntime stored (export/examples/e2e.js)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx", reason="building model.e2e.onnx needs onnx (pip install '.[export]')")

REPO = Path(__file__).resolve().parents[3]
NODE_PREFIX = REPO / ".node"
# The same package and version as the Makefile's ORT_NODE (`make node`, run by `make test`).
INSTALL = f"ONNXRUNTIME_NODE_INSTALL=skip npm install --no-save --prefix {NODE_PREFIX} onnxruntime-node@1.30.0"
SCRIPT = REPO / "export" / "examples" / "e2e.js"


def _node() -> str:
    node = shutil.which("node")
    if node is None or shutil.which("npm") is None:
        pytest.skip(f"node/npm not found: install Node.js >= 18 and npm, then `{INSTALL}`")
    if not (NODE_PREFIX / "node_modules" / "onnxruntime-node" / "package.json").is_file():
        pytest.skip(f"onnxruntime-node is not installed: run `{INSTALL}` (or `make node`)")
    return node


def test_node_onnxruntime_matches_the_test_vectors(tmp_path: Path) -> None:
    from edge_lung.config import FeatureConfig
    from edge_lung.runtime.artifact.e2e import VECTORS_NAME, read_vectors
    from edge_lung.testing import build_tiny_e2e_model

    node = _node()
    model_dir = build_tiny_e2e_model(tmp_path / "m", FeatureConfig(window_s=4.0, num_mel_bins=64))
    v = read_vectors(model_dir / VECTORS_NAME)
    audio_path = tmp_path / "audio.f32"
    v["audio"].astype("<f4").tofile(audio_path)
    env = {**os.environ, "NODE_PATH": str(NODE_PREFIX / "node_modules")}
    proc = subprocess.run([node, str(SCRIPT), str(model_dir), str(audio_path)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    probs = np.array([r["probabilities"] for r in rows], dtype=np.float32)
    assert probs.shape == v["e2e_probabilities"].shape
    assert np.abs(probs - v["e2e_probabilities"]).max() < 1e-5
    assert np.abs(probs - v["probabilities"]).max() < 1e-4  # numpy front end + classifier graph
    labels = json.loads((model_dir / "manifest.json").read_text())["labels"]
    assert [r["label"] for r in rows] == [labels[i] for i in v["probabilities"].argmax(1)]
