import subprocess
import sys

import numpy as np
import pytest

from edge_lung.audio import cyclic_pad, load_audio
from edge_lung.config import FeatureConfig
from edge_lung.data.icbhi import Database, load_cycles
from edge_lung.features import log_mel, window_features


def _reference_extractor(cfg: FeatureConfig):
    transformers = pytest.importorskip("transformers", reason="parity needs transformers (pip install '.[train]')")
    return transformers.ASTFeatureExtractor(max_length=cfg.num_frames, num_mel_bins=cfg.num_mel_bins)


def _assert_parity(wave: np.ndarray, cfg: FeatureConfig) -> None:
    ref = _reference_extractor(cfg)(wave, sampling_rate=cfg.sample_rate, return_tensors="np")["input_values"][0]
    ours = window_features(wave, cfg)
    assert ours.shape == ref.shape == (798, 128)
    assert ours.dtype == np.float32
    assert np.abs(ours - ref).max() < 1e-3


@pytest.mark.filterwarnings("ignore:At least one mel filter")
def test_fbank_parity_synthetic(synth_db):
    cfg = FeatureConfig()
    db = Database.scan(synth_db)
    cycles = load_cycles(db, splits=("train",))
    for label in range(4):
        cycle = next(c for c in cycles if c.label == label)
        _assert_parity(cyclic_pad(cycle.audio, cfg.window_samples), cfg)
    noise = (0.3 * np.random.default_rng(0).standard_normal(cfg.window_samples)).astype(np.float32)
    _assert_parity(noise, cfg)


@pytest.mark.filterwarnings("ignore:At least one mel filter")
def test_fbank_parity_real(icbhi_dir):
    cfg = FeatureConfig()
    wavs = sorted((icbhi_dir / "ICBHI_final_database").glob("*.wav"))
    by_rate = {}
    for wav in wavs:  # one recording of each sample rate present
        import soundfile as sf

        by_rate.setdefault(sf.info(str(wav)).samplerate, wav)
    for wav in by_rate.values():
        wave, _ = load_audio(wav, cfg.sample_rate)
        _assert_parity(cyclic_pad(wave[: 5 * cfg.sample_rate], cfg.window_samples), cfg)


def test_window_shapes_follow_config():
    for seconds, frames in ((4.0, 398), (6.0, 598), (8.0, 798), (10.0, 998)):
        cfg = FeatureConfig(window_s=seconds)
        assert cfg.num_frames == frames
        assert window_features(np.zeros(cfg.window_samples, np.float32), cfg).shape == (frames, 128)


def test_features_reject_wrong_input():
    cfg = FeatureConfig()
    with pytest.raises(ValueError, match="expected 128000 samples"):
        window_features(np.zeros(1000, np.float32), cfg)
    with pytest.raises(ValueError, match="at least 400 samples"):
        log_mel(np.zeros(100, np.float32), cfg)
    with pytest.raises(ValueError, match="mono"):
        log_mel(np.zeros((2, 1000), np.float32), cfg)


def test_config_validation_and_round_trip():
    cfg = FeatureConfig(window_s=6.0, num_mel_bins=64)
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="window_s: expected one of"):
        FeatureConfig(window_s=7.0)
    with pytest.raises(ValueError, match="padding"):
        FeatureConfig(padding="zeros")
    with pytest.raises(ValueError, match="unknown settings"):
        FeatureConfig.from_dict({**cfg.to_dict(), "dither": 1.0})


def test_features_import_no_torch():
    code = "import edge_lung.features, edge_lung.data, edge_lung.audio, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
