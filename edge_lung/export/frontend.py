"""The Kaldi fbank front end as standard ONNX ops, and the end-to-end graph (raw audio in, decision out).

`frontend_model(cfg)` builds, from the same `FeatureConfig` that `edge_lung.features.window_features`
reads, an ONNX graph `audio float32[batch, window_samples] -> features float32[batch, T, M]`:

    framing (Gather with start + offset indices, snip-edges) -> DC removal (ReduceMean, Sub)
    -> pre-emphasis (Slice, Concat, Sub) -> window (Mul) -> zero-pad to fft_size (Pad) -> DFT (onesided)
    -> power (Cast to float32, Mul, ReduceSum) -> mel matrix (MatMul) -> log floor (Max, Log)
    -> normalisation (Sub, Div)

Framing through the power spectrum runs in float64, as `features.log_mel` does; the power, mel and
log run in float32, as there. Measured on real ICBHI and resampled 4 kHz windows: float64 matches
`window_features` to 1.2e-7; the same graph in float32 to 1.1e-5 - 3.7e-5, a third of the 1e-4
limit, too close for quiet or band-limited audio. onnxruntime's CPU DFT kernel takes float and
double (opset 17 and 20). The window and mel matrix come from `features.fbank_constants` and the
frame indices from the same `FeatureConfig`, so a changed setting changes both front ends. Cyclic
padding of short audio is not in the graph: the input is one whole window (export/README.md).

`end_to_end_model(classifier, cfg)` joins the front end to an exported classifier graph
(`features -> logits`, FP32 or INT8) and adds a Softmax: outputs `probabilities`, `logits` and
the `features` the classifier saw, so a port can check every stage against `test_vectors.npz`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_lung.config import FeatureConfig
from edge_lung.features import fbank_constants

AUDIO_NAME = "audio"
FEATURES_NAME = "features"
PROBS_NAME = "probabilities"
MIN_OPSET = 17  # DFT
E2E_NAME = "model.e2e.onnx"
_P = "frontend/"  # prefix of every front-end node and tensor name


class _Graph:
    """Collects nodes and initializers with prefixed names; `op` returns the output tensor name."""

    def __init__(self, opset: int) -> None:
        self.opset = opset
        self.nodes: list[Any] = []
        self.inits: list[Any] = []

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.asarray(value), _P + name))
        return _P + name

    def op(self, op_type: str, inputs: list[str], name: str, out: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        out = out or _P + name
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=_P + name, **attrs))
        return out

    def reduce(self, op_type: str, x: str, axis: int, name: str) -> str:
        """ReduceMean/ReduceSum over one axis, keepdims=1 (axes became an input in opset 13 / 18)."""
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.op(op_type, [x, self.const(name + "_axes", np.array([axis], np.int64))], name, keepdims=1)
        return self.op(op_type, [x], name, axes=[axis], keepdims=1)

    def dft(self, x: str, axis: int, name: str) -> str:
        """Onesided DFT of a real signal `x[..., 1]` along `axis` (axis became an input in opset 20)."""
        if self.opset >= 20:
            return self.op("DFT", [x, "", self.const(name + "_axis", np.array(axis, np.int64))], name, onesided=1)
        return self.op("DFT", [x], name, axis=axis, onesided=1)


def _frames(g: _Graph, audio: str, cfg: FeatureConfig, window: np.ndarray) -> str:
    """audio float32[B, S] -> windowed, pre-emphasised, DC-free frames float64[B, T, L]."""
    length, shift, n = cfg.frame_length, cfg.frame_shift, cfg.num_frames
    x = g.op("Cast", [audio], "audio_f64", to=11)  # DOUBLE
    idx = g.op("Add", [g.const("frame_starts", (np.arange(n, dtype=np.int64) * shift)[:, None]),
                       g.const("frame_offsets", np.arange(length, dtype=np.int64)[None, :])], "frame_index")
    frames = g.op("Gather", [x, idx], "frames", axis=1)  # [B, T, L], Kaldi snip_edges
    if cfg.remove_dc_offset:
        frames = g.op("Sub", [frames, g.reduce("ReduceMean", frames, 2, "frame_mean")], "dc_removed")
    if cfg.preemphasis:
        # Kaldi: y[i] = x[i] - p x[i-1], with x[-1] := x[0] inside each frame.
        first = g.op("Slice", [frames, g.const("s0", np.array([0], np.int64)), g.const("s1", np.array([1], np.int64)),
                               g.const("s_axis", np.array([2], np.int64))], "first_sample")
        head = g.op("Slice", [frames, g.const("h0", np.array([0], np.int64)),
                              g.const("h1", np.array([length - 1], np.int64)), _P + "s_axis"], "previous_samples")
        prev = g.op("Concat", [first, head], "shifted", axis=2)
        scaled = g.op("Mul", [prev, g.const("preemphasis", np.array(cfg.preemphasis, np.float64))], "scaled_previous")
        frames = g.op("Sub", [frames, scaled], "preemphasised")
    return g.op("Mul", [frames, g.const("window", window.astype(np.float64))], "windowed")


def _spectrum_to_features(g: _Graph, frames: str, cfg: FeatureConfig, mel: np.ndarray, out: str) -> str:
    """Windowed frames float64[B, T, L] -> normalised log-mel float32[B, T, M] named `out`."""
    pad = cfg.fft_size - cfg.frame_length
    padded = g.op("Pad", [frames, g.const("pads", np.array([0, 0, 0, 0, 0, pad], np.int64))], "zero_padded")
    spec = g.dft(g.op("Unsqueeze", [padded, g.const("real_axis", np.array([3], np.int64))], "real_signal"), 2, "dft")
    # float32 squares of the float64 spectrum, as features.log_mel computes them.
    spec32 = g.op("Cast", [spec], "spectrum_f32", to=1)  # FLOAT
    power = g.op("ReduceSum", [g.op("Mul", [spec32, spec32], "re_im_squared"),
                               g.const("ri_axis", np.array([3], np.int64))], "power", keepdims=0)
    mel_power = g.op("MatMul", [power, g.const("mel_matrix", mel.astype(np.float32))], "mel_power")
    floored = g.op("Max", [mel_power, g.const("log_floor", np.array(cfg.log_floor, np.float32))], "floored")
    logmel = g.op("Log", [floored], "log_mel")
    centred = g.op("Sub", [logmel, g.const("norm_mean", np.array(cfg.norm_mean, np.float32))], "centred")
    return g.op("Div", [centred, g.const("norm_scale", np.array(2.0 * cfg.norm_std, np.float32))], "normalised",
                out=out)


def frontend_graph(cfg: FeatureConfig, opset: int, out: str = FEATURES_NAME) -> tuple[list, list]:
    """(nodes, initializers) of the front end: tensor `audio` [B, window_samples] -> `out` [B, T, M].

    Every name but the input and `out` starts with `frontend/`.
    """
    if opset < MIN_OPSET:
        raise ValueError(f"opset: the front end needs the DFT op, expected >= {MIN_OPSET}, got {opset}")
    window, mel = fbank_constants(cfg)
    g = _Graph(opset)
    _spectrum_to_features(g, _frames(g, AUDIO_NAME, cfg, window), cfg, mel, out)
    return g.nodes, g.inits


def _io(cfg: FeatureConfig) -> tuple[Any, Any]:
    from onnx import TensorProto, helper

    audio = helper.make_tensor_value_info(AUDIO_NAME, TensorProto.FLOAT, ["batch", cfg.window_samples])
    feats = helper.make_tensor_value_info(FEATURES_NAME, TensorProto.FLOAT, ["batch", cfg.num_frames, cfg.num_mel_bins])
    return audio, feats


def frontend_model(cfg: FeatureConfig, opset: int = MIN_OPSET) -> Any:
    """The front end alone as an ONNX ModelProto (audio -> features), checked."""
    import onnx
    from onnx import helper

    nodes, inits = frontend_graph(cfg, opset)
    audio, feats = _io(cfg)
    graph = helper.make_graph(nodes, "edge_lung_frontend", [audio], [feats], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


def end_to_end_model(classifier: Any, cfg: FeatureConfig) -> Any:
    """ModelProto audio[B, S] -> probabilities[B, C], logits[B, C], features[B, T, M] from a classifier
    ModelProto (one input `features`, first output the logits); its metadata and opsets are kept."""
    import onnx
    from onnx import helper

    g = classifier.graph
    if [i.name for i in g.input] != [FEATURES_NAME]:
        raise ValueError(f"classifier graph: expected one input {FEATURES_NAME!r}, got {[i.name for i in g.input]}")
    opset = next((o.version for o in classifier.opset_import if o.domain in ("", "ai.onnx")), 0)
    nodes, inits = frontend_graph(cfg, opset)
    taken = {n for node in g.node for n in node.output} | {i.name for i in g.initializer}
    clash = sorted(taken & ({o for node in nodes for o in node.output} | {i.name for i in inits}))
    if clash:
        raise ValueError(f"classifier graph: tensor names clash with the front end's: {clash[:5]}")
    logits = g.output[0]
    audio, feats = _io(cfg)
    probs = onnx.ValueInfoProto(name=PROBS_NAME)
    probs.type.CopyFrom(logits.type)
    softmax = helper.make_node("Softmax", [logits.name], [PROBS_NAME], name="head/softmax", axis=-1)
    graph = helper.make_graph(nodes + list(g.node) + [softmax], "edge_lung_e2e", [audio], [probs, logits, feats],
                              initializer=inits + list(g.initializer), value_info=list(g.value_info))
    model = helper.make_model(graph, opset_imports=list(classifier.opset_import), ir_version=classifier.ir_version,
                              producer_name="edge-lung")
    model.functions.extend(classifier.functions)
    model.metadata_props.extend(classifier.metadata_props)
    onnx.checker.check_model(model, full_check=True)
    return model
