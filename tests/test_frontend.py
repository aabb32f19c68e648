"""The ONNX front end (edge_lung/export/frontend.py) against `features.window_features`, and the
end-to-end graph (audio -> probabilities) against the numpy front end + the classifier graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_lung.audio import cyclic_pad, load_audio, resample
from edge_lung.config import FeatureConfig
from edge_lung.features import window_features

onnx = pytest.importorskip("onnx", reason="the ONNX front end needs onnx (pip install '.[export]')")
ort = pytest.importorskip("onnxruntime")

from edge_lung.export.frontend import AUDIO_NAME, end_to_end_model, frontend_model  # noqa: E402

LIMIT = 1e-4  # issue 16: graph features within 1e-4 of window_features after normalisation
SHORT = FeatureConfig(window_s=4.0, num_mel_bins=64)


def _session(model) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _graph_features(cfg: FeatureConfig, windows: np.ndarray, opset: int = 17) -> np.ndarray:
    return _session(frontend_model(cfg, opset)).run(None, {AUDIO_NAME: windows})[0]


def _max_diff(cfg: FeatureConfig, windows: np.ndarray, opset: int = 17) -> float:
    ref = np.stack([window_features(w, cfg) for w in windows])
    return float(np.abs(_graph_features(cfg, windows, opset) - ref).max())


def _resampled_sources(cfg: FeatureConfig, seed: int = 0) -> np.ndarray:
    """Windows from a 4 kHz and a 44.1 kHz source (breath-like noise, a wheeze-like tone, clicks),
    resampled to the model rate and cyclic-padded, loud and quiet."""
    rng = np.random.default_rng(seed)
    out = []
    for rate, seconds in ((4000, 2.7), (44100, cfg.window_s + 1)):
        t = np.arange(int(seconds * rate)) / rate
        x = 0.02 * rng.standard_normal(t.size) + 0.1 * np.sin(2 * np.pi * 400 * t) * (np.sin(2 * np.pi * 0.3 * t) > 0)
        x[rng.integers(0, t.size, 20)] += 0.5  # crackle-like clicks
        wave = cyclic_pad(resample(x.astype(np.float32), rate, cfg.sample_rate), cfg.window_samples)
        out += [wave, (wave * 1e-3).astype(np.float32)]
    return np.stack(out)


@pytest.mark.parametrize("cfg", [FeatureConfig(), SHORT], ids=["8s-128", "4s-64"])
def test_graph_front_end_matches_numpy_on_resampled_sources(cfg: FeatureConfig) -> None:
    windows = _resampled_sources(cfg)
    assert _max_diff(cfg, windows) < LIMIT


@pytest.mark.parametrize("cfg", [FeatureConfig(), SHORT], ids=["8s-128", "4s-64"])
def test_graph_front_end_matches_numpy_on_real_windows(cfg: FeatureConfig, icbhi_dir: Path) -> None:
    files = sorted(icbhi_dir.rglob("*.wav"))[:4]
    assert files, f"{icbhi_dir}: no .wav recordings"
    windows = []
    for f in files:  # each recording's first window and one from its middle
        wave, _ = load_audio(f, cfg.sample_rate)
        mid = max(0, wave.shape[0] // 2 - cfg.window_samples // 2)
        windows += [cyclic_pad(wave, cfg.window_samples), cyclic_pad(wave[mid:], cfg.window_samples)]
    assert _max_diff(cfg, np.stack(windows)) < LIMIT


def test_changed_settings_change_both_front_ends() -> None:
    """Every fbank option reaches the graph: parity holds for a config far from the defaults, and the
    default graph is far from that config's features (so the comparison can tell them apart)."""
    changed = FeatureConfig(window_s=4.0, num_mel_bins=40, frame_length_ms=32.0, frame_shift_ms=16.0, fft_size=1024,
                            preemphasis=0.5, remove_dc_offset=False, window_type="povey", low_freq_hz=100.0,
                            high_freq_hz=-500.0, norm_mean=-3.0, norm_std=2.0)
    windows = _resampled_sources(changed, seed=1)
    assert _max_diff(changed, windows) < LIMIT
    for window_type in ("hamming", "hanning"):
        other = FeatureConfig(window_s=4.0, num_mel_bins=40, window_type=window_type, preemphasis=0.0)
        assert _max_diff(other, windows) < LIMIT
    no_emphasis = FeatureConfig(window_s=4.0, num_mel_bins=40, preemphasis=0.0)
    ref = np.stack([window_features(w, FeatureConfig(window_s=4.0, num_mel_bins=40)) for w in windows])
    assert np.abs(_graph_features(no_emphasis, windows) - ref).max() > 100 * LIMIT


def test_opset_20_graph_and_too_old_opsets() -> None:
    windows = _resampled_sources(SHORT)[:2]
    assert _max_diff(SHORT, windows, opset=20) < LIMIT
    with pytest.raises(ValueError, match="DFT op, expected >= 17, got 16"):
        frontend_model(SHORT, opset=16)


def test_batch_and_wrong_length_input() -> None:
    windows = _resampled_sources(SHORT)
    sess = _session(frontend_model(SHORT))
    batched = sess.run(None, {AUDIO_NAME: windows})[0]
    one = sess.run(None, {AUDIO_NAME: windows[1:2]})[0]
    assert np.array_equal(batched[1:2], one)
    with pytest.raises(Exception, match="audio"):  # onnxruntime names the input and the expected size
        sess.run(None, {AUDIO_NAME: windows[:, :-1]})


def test_end_to_end_graph_matches_numpy_front_end_and_classifier(tmp_path: Path) -> None:
    from edge_lung.runtime.artifact.model_dir import OnnxClassifier
    from edge_lung.testing import build_tiny_model, make_signal

    model_dir = build_tiny_model(tmp_path / "m", SHORT)
    clf = OnnxClassifier(model_dir)
    e2e = end_to_end_model(onnx.load(str(clf.info.path)), SHORT)
    assert {p.key for p in e2e.metadata_props} >= {"edge_lung.features", "edge_lung.labels"}
    signal = make_signal(16.0, SHORT.sample_rate, seed=3)  # low, mid, high, mid+high bands: varied decisions
    windows = np.stack([signal[i : i + SHORT.window_samples] for i in range(0, 12 * 16000, 3 * 16000)])
    probs, logits, feats = _session(e2e).run(["probabilities", "logits", "features"], {AUDIO_NAME: windows})
    ref_feats = np.stack([window_features(w, SHORT) for w in windows])
    ref_logits = clf.logits(ref_feats)
    assert np.abs(feats - ref_feats).max() < LIMIT
    assert np.abs(logits - ref_logits).max() < 1e-4
    assert np.abs(probs - clf.probabilities(ref_feats)).max() < 1e-5
    assert len(set(probs.argmax(1))) >= 2  # the windows really differ


def test_end_to_end_refuses_a_foreign_classifier() -> None:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input_values", TensorProto.FLOAT, [1, 798, 128])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 798, 128])
    graph = helper.make_graph([helper.make_node("Identity", ["input_values"], ["y"])], "g", [x], [y])
    with pytest.raises(ValueError, match="expected one input 'features'"):
        end_to_end_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), FeatureConfig())
