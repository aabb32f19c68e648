"""Training that survives device shift (issue #12): channel augmentation, per-window mel
normalisation carried in the model's features, and recipes as data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_lung.audio import cyclic_pad
from edge_lung.config import FeatureConfig
from edge_lung.features import BIN_STD_FLOOR, log_mel, window_features
from edge_lung.scoring import stack_features


def _breath(seconds: float = 2.0, rate: int = 16000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    noise = rng.standard_normal(t.shape[0]) * (0.2 + 0.8 * np.sin(np.pi * t / seconds) ** 2)
    return (0.1 * noise + 0.05 * np.sin(2 * np.pi * 400 * t)).astype(np.float32)


def test_channel_augment_is_deterministic_and_keeps_length_and_rate():
    import random

    from edge_lung.train.channel import ChannelAugment

    aug, audio = ChannelAugment(16000), _breath()
    a = aug(audio, np.random.default_rng(3))
    random.random(), np.random.random()  # another global state: the result must depend on `rng` only
    b = aug(audio, np.random.default_rng(3))
    c = aug(audio, np.random.default_rng(4))
    assert a.shape == audio.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_channel_augment_band_limits_some_draws_and_leaves_global_state():
    import random

    from edge_lung.train.channel import ChannelAugment

    aug, audio = ChannelAugment(16000, p_band=1.0), _breath()
    before = (random.getstate(), np.random.get_state()[1].copy())
    rng = np.random.default_rng(0)

    def high_share(x: np.ndarray) -> float:
        power = np.abs(np.fft.rfft(x)) ** 2
        return float(power[int(len(power) * 2500 / 8000):].sum() / power.sum())

    shares = [high_share(aug(audio, rng)) for _ in range(12)]
    assert min(shares) < 0.1 * high_share(audio)  # a band limit took the top off
    assert random.getstate() == before[0] and np.array_equal(np.random.get_state()[1], before[1])


def test_window_norm_travels_in_the_metadata_and_gives_the_training_features():
    cfg = FeatureConfig(mel_norm="window")
    shipped = FeatureConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))  # as the ONNX metadata carries it
    cycle = type("C", (), {"audio": _breath(), "label": 0})()
    training = stack_features([cycle], cfg)[0]
    runtime = window_features(cyclic_pad(cycle.audio, shipped.window_samples), shipped)
    np.testing.assert_array_equal(training, runtime)
    spread = window_features(cyclic_pad(cycle.audio, cfg.window_samples), FeatureConfig()).std(axis=0)
    np.testing.assert_allclose(runtime.mean(axis=0), 0.0, atol=1e-5)
    moving = spread > BIN_STD_FLOOR
    assert moving.sum() > 100  # most bins carry the breath
    np.testing.assert_allclose(runtime.std(axis=0)[moving], 0.5, atol=1e-5)
    assert np.all(runtime.std(axis=0)[~moving] < 0.5)  # near-flat bins centred, not stretched


def test_window_norm_removes_a_fixed_channel_gain_that_global_norm_keeps():
    audio = cyclic_pad(_breath(), FeatureConfig().window_samples)
    quieter = audio * np.float32(0.25)  # -12 dB: an additive offset in every log-mel bin
    win, glob = FeatureConfig(mel_norm="window"), FeatureConfig()
    # bins that touch the log floor in some frame are clamped there, not shifted: leave them out
    clear = log_mel(quieter, glob).min(axis=0) > np.log(glob.log_floor) + 1.0
    assert clear.sum() > 100
    np.testing.assert_allclose(window_features(quieter, win)[:, clear], window_features(audio, win)[:, clear],
                               atol=2e-4)
    assert np.abs(window_features(quieter, glob) - window_features(audio, glob)).mean() > 0.1


def test_mel_norm_names_what_it_expects():
    with pytest.raises(ValueError, match="mel_norm"):
        FeatureConfig(mel_norm="batch")


def test_recipe_fills_unset_options_and_explicit_ones_win():
    from edge_lung.train.recipes import RECIPES, apply_recipe

    opts = {"data": "db", "recipe": "icbhi-robust", "channel_aug": False, "mel_norm": "global", "epochs": 3}
    out = apply_recipe(opts, explicit=("data", "epochs"))
    assert out["recipe"] == f"icbhi-robust-v{RECIPES['icbhi-robust']['version']}"
    assert (out["channel_aug"], out["mel_norm"], out["epochs"]) == (True, "window", 3)
    assert apply_recipe(opts, explicit=("data", "mel_norm"))["mel_norm"] == "global"
    with pytest.raises(ValueError, match="icbhi-robust"):
        apply_recipe({**opts, "recipe": "fast"}, explicit=())


def test_train_cli_records_the_recipe_and_its_settings(synth_db, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import edge_lung.train.pipeline as pipeline
    from edge_lung.cli import app

    seen = {}
    monkeypatch.setattr(pipeline, "train_recipe", lambda cfg: seen.setdefault("cfg", cfg))
    args = ["train", "--data", str(synth_db), "--recipe", "icbhi-robust", "--mel-norm", "global", "--out",
            str(tmp_path / "r")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    cfg = seen["cfg"]
    assert (cfg.recipe, cfg.channel_aug, cfg.mel_norm, cfg.lr) == ("icbhi-robust-v2", True, "global", 3e-4)
    assert cfg.to_dict()["recipe"] == "icbhi-robust-v2"  # config.json's "train" section is cfg.to_dict()
    # the recipe's band-limited front end, over every other feature default
    features = cfg.feature_config
    assert (features.high_freq_hz, features.num_mel_bins, features.window_s) == (2000.0, 64, 8.0)
