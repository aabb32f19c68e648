"""A tiny ONNX classifier for runtime tests, built with onnx.helper (no torch, no weights to download).

Graph: features [batch, T, M] -> ReduceMean over time -> MatMul W [M, C] -> Add b -> logits [batch, C].
The weights make each class respond to energy in one band of mel bins (low band -> normal,
mid -> crackle, high -> wheeze, mid + high -> both), so tones in different bands flip the
decision and the runtime's windows give varied, checkable results. The directory it writes
is a real MODEL_DIR: metadata from `build_metadata` and a manifest from `write_manifest`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_lung.artifact import INPUT_NAME, OUTPUT_NAME, build_metadata, write_manifest
from edge_lung.config import LABELS, FeatureConfig

# Mean normalised log-mel of each third of the mel bins for the quiet noise floor of `make_signal`,
# and the rise a tone in that band gives (measured once); the logits are the rises, rescaled.
_BAND_BASE = (-0.556, -0.075, 0.224)
_BAND_GAIN = (14.0, 28.0, 60.0)


def tiny_weights(num_mel_bins: int, num_classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """W float32[M, C], b float32[C]: class c follows the energy of one band of mel bins above its noise floor."""
    w = np.zeros((num_mel_bins, num_classes), dtype=np.float32)
    b = np.zeros(num_classes, dtype=np.float32)
    edges = np.linspace(0, num_mel_bins, 4).astype(int)
    mix = {0: [(0, 1.0)], 1: [(1, 1.0)], 2: [(2, 1.0)], 3: [(1, 0.75), (2, 0.75)]}
    for c in range(min(num_classes, 4)):
        for band, share in mix[c]:
            lo, hi = edges[band], edges[band + 1]
            w[lo:hi, c] += share * _BAND_GAIN[band] / (hi - lo)
            b[c] -= share * _BAND_GAIN[band] * _BAND_BASE[band]
    b[0] += 1.0  # the noise floor alone reads as normal
    return w, b


def build_tiny_model(model_dir: str | Path, features: FeatureConfig | None = None) -> Path:
    """Write a MODEL_DIR with `tiny.onnx` + manifest; returns the directory."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    features = features or FeatureConfig()
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    w, b = tiny_weights(features.num_mel_bins, len(LABELS))
    nodes = [
        helper.make_node("ReduceMean", [INPUT_NAME], ["pooled"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["pooled", "W"], ["scores"]),
        helper.make_node("Add", ["scores", "b"], [OUTPUT_NAME]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", features.num_frames, None])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", len(LABELS)])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edge-lung-tests")
    model.ir_version = 8
    meta = build_metadata(LABELS, features, "fp32", {}, {"name": "tiny-test-model"})
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx_path = model_dir / "tiny.onnx"
    onnx.save(model, str(onnx_path))
    write_manifest(model_dir, onnx_path)
    return model_dir


def make_signal(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """Mono float32 test audio whose dominant band changes every 3 s (low, mid, high, mid+high, quiet)."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    seg = (t // 3.0).astype(int) % 5
    freqs = np.array([150.0, 1200.0, 5000.0, 1200.0, 0.0])
    x = 0.3 * np.sin(2 * np.pi * freqs[seg] * t)
    x += np.where(seg == 3, 0.3 * np.sin(2 * np.pi * 5000.0 * t), 0.0)
    x += 0.01 * rng.standard_normal(n)
    return x.astype(np.float32)


def write_signal(path: str | Path, seconds: float, rate: int, seed: int = 0, subtype: str = "FLOAT") -> np.ndarray:
    """Write `make_signal` to a WAV/FLAC file; returns the samples as written (FLOAT keeps them exact)."""
    import soundfile as sf

    x = make_signal(seconds, rate, seed)
    sf.write(str(path), x, rate, subtype=subtype)
    return sf.read(str(path), dtype="float32")[0]
