"""The `icbhi-descriptors` recipe (issue #12): the respiratory front end, the linear model on it, the
cross-device normal margin, and `--exclude-devices`."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_lung import respiratory
from edge_lung.config import RESPIRATORY_DESCRIPTORS, FeatureConfig
from edge_lung.data.devices import assign_device_validation, scan_for_run
from edge_lung.data.icbhi import Database
from edge_lung.features import cycle_features, window_features
from edge_lung.respiratory import (
    CRACKLE_BANDS_HZ,
    MIN_TRACK_FRAMES,
    NAMES,
    OUTLIER_SIGMAS,
    PEAK_NEIGHBOURHOOD,
    PEAK_THRESHOLDS_DB,
    STFT_HOP,
    STFT_SIZE,
    TRANSIENT_SAMPLES,
    WHEEZE_BAND_HZ,
    butterworth_band,
    respiratory_features,
)

RATE = 16000
RESP = FeatureConfig(front_end="respiratory", num_mel_bins=RESPIRATORY_DESCRIPTORS)


def _breath(seconds: float = 4.0, seed: int = 0) -> np.ndarray:
    """Band-limited noise with a slow breathing envelope."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    noise = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * (np.fft.rfftfreq(n, 1 / RATE) < 1200), n=n)
    return (noise * (0.6 + 0.4 * np.sin(2 * np.pi * np.arange(n) / (2.0 * RATE)))).astype(np.float32) * 0.05


def _feature(x: np.ndarray, name: str) -> float:
    return float(respiratory_features(x, RATE)[NAMES.index(name)])


# --- the straightforward reference: the module as it was before issue #30 (np.median per sliding window, a
# full power spectrogram, one array per step), which the fast path must reproduce; benchmarks/bench_descriptors.py
# times it as "before"


def _reference_power_db(x: np.ndarray) -> np.ndarray:
    half = STFT_SIZE // 2
    tail = -(x.size % STFT_HOP) % STFT_HOP
    hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(STFT_SIZE) / STFT_SIZE)
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(x, (half, half + tail)), STFT_SIZE)[::STFT_HOP] * hann
    spec = np.fft.rfft(frames, axis=1)
    power = spec.real**2 + spec.imag**2
    return 10.0 * np.log10(power + 1e-10 * power.mean() + 1e-30)


def _reference_runs(mask: np.ndarray) -> tuple[int, int]:
    edges = np.diff(np.r_[0, mask.astype(np.int8), 0])
    lengths = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    if lengths.size == 0:
        return 0, 0
    return int(lengths.max()), int((lengths >= MIN_TRACK_FRAMES).sum())


def _reference_wheeze(x: np.ndarray, duration_s: float) -> list[float]:
    freqs = np.fft.rfftfreq(STFT_SIZE, 1.0 / RATE)
    p = _reference_power_db(x)[:, (freqs >= WHEEZE_BAND_HZ[0]) & (freqs <= WHEEZE_BAND_HZ[1])]
    half = PEAK_NEIGHBOURHOOD // 2
    padded = np.pad(p, ((0, 0), (half, half)), mode="edge")
    local = np.median(np.lib.stride_tricks.sliding_window_view(padded, PEAK_NEIGHBOURHOOD, axis=1), axis=2)
    prominence = p - local
    peak, where = prominence.max(axis=1), prominence.argmax(axis=1)
    out = [peak.mean(), np.percentile(peak, 90), peak.max()]
    for threshold in PEAK_THRESHOLDS_DB:
        above = peak > threshold
        longest, tracks = _reference_runs(above & np.r_[False, np.abs(np.diff(where)) <= 2])
        out += [above.mean(), longest, tracks / duration_s]
    whitened = 10.0 ** ((p - np.median(p, axis=0, keepdims=True)) / 10.0)
    flatness = np.exp(np.log(whitened + 1e-12).mean(axis=1)) / (whitened.mean(axis=1) + 1e-12)
    return out + [np.percentile(flatness, 10), flatness.mean()]


def _reference_kurtosis(x: np.ndarray) -> float:
    centred = x - x.mean()
    squared = centred * centred
    m2 = squared.mean()
    return float(np.mean(squared * squared) / (m2 * m2) - 3.0) if m2 > 0 else 0.0


@lru_cache(maxsize=8)
def _reference_masks(n: int) -> tuple[np.ndarray, ...]:
    freqs = np.fft.rfftfreq(n, 1.0 / RATE)
    return tuple(butterworth_band(freqs, band, RATE) for band in CRACKLE_BANDS_HZ)


def _reference_crackle(x: np.ndarray, duration_s: float) -> list[float]:
    spectrum = np.fft.rfft(x)
    out: list[float] = []
    for mask in _reference_masks(x.size):
        y = np.fft.irfft(spectrum * mask, n=x.size)
        z = y / (float(np.median(np.abs(y)) / 0.6745) + 1e-12)
        energy = np.square(y[: y.size // TRANSIENT_SAMPLES * TRANSIENT_SAMPLES]).reshape(-1, TRANSIENT_SAMPLES).mean(1)
        median_energy = np.median(energy) + 1e-20
        out += [
            np.log1p(max(_reference_kurtosis(z), -0.99) + 1.0),
            np.log1p(np.mean(np.abs(z) > OUTLIER_SIGMAS) * 1e3),
            np.log1p(max(_reference_kurtosis(np.diff(y)), -0.99) + 1.0),
            np.log1p(np.sum(energy > 10.0 * median_energy) / duration_s),
            np.log1p(np.sum(energy > 30.0 * median_energy) / duration_s),
        ]
    return out


def reference_features(window: np.ndarray) -> np.ndarray:
    """The descriptors of a 16 kHz window, computed the straightforward way."""
    x = window.astype(np.float64)
    x = x - x.mean()
    duration_s = x.size / RATE
    return np.asarray(_reference_wheeze(x, duration_s) + _reference_crackle(x, duration_s), dtype=np.float32)


@st.composite
def _signals(draw: st.DrawFn) -> np.ndarray:
    """Noise, a random walk, a held tone over noise or clicks, at any gain; some quantised to a few levels,
    so that medians see ties, and some with a stretch of digital silence."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(STFT_SIZE, 3 * RATE))
    kind = draw(st.sampled_from(["noise", "walk", "tone", "clicks"]))
    x = rng.standard_normal(n)
    if kind == "walk":
        x = np.cumsum(x)
    elif kind == "tone":
        x += 5.0 * np.sin(2 * np.pi * rng.uniform(150, 1400) * np.arange(n) / RATE)
    elif kind == "clicks":
        x[rng.integers(0, n, size=max(1, n // 800))] += 40.0
    if draw(st.booleans()):
        x = np.round(x * draw(st.sampled_from([0.5, 2.0, 20.0])))
    if draw(st.booleans()):
        start = draw(st.integers(0, n - 1))
        x[start : start + draw(st.integers(1, n))] = 0.0
    return (x * 10.0 ** draw(st.floats(-4.0, 1.0))).astype(np.float32)


@settings(max_examples=40, deadline=None)
@given(_signals())
def test_fast_descriptors_match_the_straightforward_reference(x: np.ndarray):
    """The fast path is the reference up to float64 rounding, seen through float32: sums taken in another
    order (BLAS dot products, Parseval for the spectrogram's floor, the Hann window applied as three taps in
    frequency) move a descriptor by a few float32 ulps at most."""
    np.testing.assert_allclose(respiratory_features(x, RATE), reference_features(x), rtol=1e-5, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(0, 140), st.sampled_from([1, 3, 17]), st.integers(0, 2**32 - 1),
       st.booleans())
def test_sliding_median_is_np_median_bit_for_bit(rows: int, n: int, width: int, seed: int, ties: bool):
    rng = np.random.default_rng(seed)
    p = rng.standard_normal((rows, n + width))
    if ties:  # a few levels: many equal values in every window
        p = np.round(p * 2.0)
    expected = np.median(np.lib.stride_tricks.sliding_window_view(p, width, axis=1), axis=2)
    np.testing.assert_array_equal(respiratory._sliding_median(p, width), expected)


@given(st.integers(1, 200), st.integers(1, 5), st.integers(0, 2**32 - 1))
def test_median_is_np_median_bit_for_bit(n: int, rows: int, seed: int):
    x = np.round(np.random.default_rng(seed).standard_normal((rows, n)) * 3.0) / 7.0
    np.testing.assert_array_equal(respiratory._median(x, axis=1), np.median(x, axis=1))
    np.testing.assert_array_equal(respiratory._median(x.T, axis=0), np.median(x.T, axis=0))
    flat = x.ravel().copy()
    np.testing.assert_array_equal(respiratory._median(flat, overwrite=True), np.median(x))


def test_names_match_the_front_end_width_and_values_are_finite():
    assert len(NAMES) == len(set(NAMES)) == RESPIRATORY_DESCRIPTORS
    f = respiratory_features(_breath(), RATE)
    assert f.shape == (RESPIRATORY_DESCRIPTORS,) and f.dtype == np.float32 and np.isfinite(f).all()


def test_descriptors_are_gain_free():
    x = _breath(seed=1)
    np.testing.assert_allclose(respiratory_features(x * 7.5, RATE), respiratory_features(x, RATE), rtol=1e-4,
                               atol=1e-4)


def test_a_held_tone_reads_as_a_wheeze_and_clicks_as_crackles():
    x = _breath(seed=2)
    t = np.arange(x.size) / RATE
    wheeze = x + (0.05 * np.sin(2 * np.pi * 400 * t) * ((t > 1.0) & (t < 2.5))).astype(np.float32)
    for name, by in (("prom_p90", 5.0), ("frac12", 0.2), ("run12", 20)):  # dB, share of frames, frames
        assert _feature(wheeze, name) > _feature(x, name) + by, name
    crackle = x.copy()
    for start in np.arange(0.3, 3.7, 0.25):  # damped 300 Hz clicks of ~5 ms, as fine crackles look
        i = int(start * RATE)
        k = np.arange(80)
        crackle[i : i + 80] += (0.4 * np.exp(-k / 20) * np.sin(2 * np.pi * 300 * k / RATE)).astype(np.float32)
    for name in ("kurt100_500", "tr100_2000", "exc100_2000"):
        assert _feature(crackle, name) > _feature(x, name) + 0.3, name


def test_band_filter_is_the_squared_butterworth_response():
    from scipy import signal

    freqs = np.linspace(1, RATE / 2 - 1, 500)
    _, h = signal.sosfreqz(signal.butter(4, [100, 2000], btype="band", fs=RATE, output="sos"), worN=freqs, fs=RATE)
    np.testing.assert_allclose(butterworth_band(freqs, (100.0, 2000.0), RATE), np.abs(h) ** 2, atol=1e-9)


def test_training_and_the_device_compute_the_same_descriptors():
    """A cycle of exactly one window gives the training input that the runtime's window gives."""
    x = _breath(seconds=RESP.window_s, seed=3)
    np.testing.assert_array_equal(cycle_features(x, RESP), window_features(x, RESP))
    assert cycle_features(x, RESP).shape == (RESP.num_frames, RESP.num_mel_bins) == (1, RESPIRATORY_DESCRIPTORS)
    # a short cycle is measured as recorded (padded to one STFT frame only), not tiled to 8 s with seams
    short = x[:3000]
    np.testing.assert_array_equal(cycle_features(short, RESP)[0], respiratory_features(short, RATE))
    tiny = x[:500]
    np.testing.assert_array_equal(cycle_features(tiny, RESP)[0],
                                  respiratory_features(np.tile(tiny, 3)[:STFT_SIZE], RATE))


def test_front_end_settings_name_what_they_expect():
    with pytest.raises(ValueError, match="front_end"):
        FeatureConfig(front_end="mfcc")
    with pytest.raises(ValueError, match="26 descriptors"):
        FeatureConfig(front_end="respiratory", num_mel_bins=64)
    with pytest.raises(ValueError, match="mel_norm 'global'"):
        FeatureConfig(front_end="respiratory", num_mel_bins=26, mel_norm="window")
    with pytest.raises(ValueError, match="at least 1024 samples"):
        respiratory_features(np.zeros(100, np.float32), RATE)


# --- the normal margin, on hand-made logits


def test_margin_scores_and_choice_on_a_hand_made_set():
    from edge_lung.train.margin import choose_margin, scores_by_margin

    y = np.array([0, 0, 0, 0, 1, 2])
    # two normals lean abnormal by 0.6 and 1.2; the crackle is sure (2.0); the wheeze leans wheeze by 0.4
    logits = np.array([[0, 0.6, 0, 0], [0, 1.2, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 0.4, 0]])
    scores = scores_by_margin(y, logits, normal=0, grid=(0.0, 0.5, 1.0, 1.5, 3.0))
    # m=0: Sp 2/4, Se 2/2 -> 75; m=0.5: Sp 2/4, Se 1/2 (the wheeze flips) -> 50; m=1: Sp 3/4, Se 1/2 -> 62.5;
    # m=1.5: Sp 4/4, Se 1/2 -> 75; m=3: Sp 4/4, Se 0 -> 50
    assert scores == {0.0: 75.0, 0.5: 50.0, 1.0: 62.5, 1.5: 75.0, 3.0: 50.0}
    assert choose_margin([scores], grid=(0.0, 0.5, 1.0, 1.5, 3.0)) == 0.0  # a tie goes to the smallest margin
    other = {0.0: 40.0, 0.5: 60.0, 1.0: 60.0, 1.5: 70.0, 3.0: 50.0}
    assert choose_margin([scores, other], grid=(0.0, 0.5, 1.0, 1.5, 3.0)) == 1.5  # best mean over devices
    with pytest.raises(ValueError, match="at least one held-out device"):
        choose_margin([])


# --- --exclude-devices


def test_excluded_devices_leave_both_sides_with_their_patients(synth_db):
    a, b, c, d = Database.scan(synth_db).recordings[:4]
    recordings = [replace(a, patient="101", device="Meditron", split="train"),
                  replace(b, patient="101", device="AKGC417L", split="train"),
                  replace(c, patient="102", device="LittC2SE", split="train"),
                  replace(d, patient="103", device="AKGC417L", split="val")]
    out, split = assign_device_validation(recordings, ("LittC2SE",), exclude=("Meditron",))
    # Meditron is gone, and so is patient 101's AKGC417L recording (the same chest); 103 trains
    assert [r.split for r in out] == [None, None, "val", "train"]
    assert (split.excluded_devices, split.excluded_recordings) == (("Meditron",), 1)
    with pytest.raises(ValueError, match="both held out"):
        assign_device_validation(recordings, ("LittC2SE",), exclude=("LittC2SE",))
    with pytest.raises(ValueError, match="--exclude-devices Nokia"):
        assign_device_validation(recordings, ("LittC2SE",), exclude=("Nokia",))
    with pytest.raises(ValueError, match="expected --val-devices beside it"):
        scan_for_run(synth_db, {"val_fraction": 0.2, "val_seed": 0, "exclude_devices": "Meditron"})


# --- the recipe end to end on the synthetic database


@pytest.mark.slow
def test_descriptor_recipe_trains_chooses_a_margin_and_ships(synth_db: Path, tmp_path: Path):
    import torch
    from typer.testing import CliRunner

    from edge_lung.cli import app
    from edge_lung.runtime.artifact.model_dir import OnnxClassifier
    from edge_lung.train.margin import MARGIN_GRID
    from edge_lung.train.model import LogitsModel, load_run

    run = tmp_path / "run"
    args = ["train", "--data", str(synth_db), "--recipe", "icbhi-descriptors", "--epochs", "3", "--out", str(run),
            "--val-devices", "Meditron", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["recipe"] == "icbhi-descriptors-v1" and config["backbone"] == "linear"
    assert config["best"]["epoch"] == 3  # --select last
    margin = config["normal_margin"]
    assert margin["margin"] in MARGIN_GRID
    trained_on = sorted({r.device for r in scan_for_run(synth_db, config["train"])[0].recordings
                         if r.split == "train"})
    assert sorted(h["device"] for h in margin["held_out"]) + sorted(s["device"] for s in margin["skipped"]) \
        == trained_on
    for h in margin["held_out"]:  # each inner run held that device out and never saw Meditron
        inner = json.loads((run / "margin" / h["device"] / "config.json").read_text())
        assert inner["device_split"]["val_devices"] == [h["device"]]
        assert inner["device_split"]["excluded_devices"] == ["Meditron"]
    # the margin rides in the model: logits = the plain model's + m on "normal" (a margin of 2 written in, as the
    # synthetic database may well choose 0)
    margin["margin"] = 2.0
    (run / "config.json").write_text(json.dumps(config))
    model, _ = load_run(run)
    plain = LogitsModel(model.model).eval()
    x = torch.randn(4, 1, RESPIRATORY_DESCRIPTORS)
    with torch.no_grad():
        diff = (model(x) - plain(x)).numpy()
    np.testing.assert_allclose(diff, np.tile([margin["margin"], 0, 0, 0], (4, 1)), atol=1e-6)
    # exported (no e2e graph for this front end, said so), and the device decides with the margin too
    result = CliRunner().invoke(app, ["export", str(run), "--out", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert "no ONNX form" in manifest["e2e"]["skipped"] and manifest["run"]["normal_margin"] == 2.0
    card = (tmp_path / "m" / "model_card.md").read_text()
    assert "26 adventitious-sound descriptors" in card and "normal margin of 2" in card and "log-mel" not in card
    window = _breath(seconds=8.0, seed=4)
    features = window_features(window, config_features := FeatureConfig.from_dict(config["features"]))
    assert config_features.front_end == "respiratory"
    with torch.no_grad():
        expected = model(torch.from_numpy(features[None])).numpy()
    np.testing.assert_allclose(OnnxClassifier(tmp_path / "m").logits(features[None]), expected, atol=1e-4)


def test_descriptor_front_end_refuses_a_spectrogram_backbone(synth_db: Path, tmp_path: Path):
    from typer.testing import CliRunner

    from edge_lung.cli import app

    result = CliRunner().invoke(app, ["train", "--data", str(synth_db), "--recipe", "icbhi-descriptors", "--backbone",
                                      "tiny", "--epochs", "1", "--out", str(tmp_path / "r"), "--no-progress"])
    assert result.exit_code == 2
    assert "--backbone tiny" in result.output and "expected --backbone linear" in result.output


def test_device_shift_table_shows_each_run_with_and_without_its_margin():
    import importlib.util
    from types import SimpleNamespace

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("device_shift", root / "benchmarks" / "device_shift.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def row(seed: int, margin: float, with_: float, without: float) -> dict:
        return {"recipe": "icbhi-descriptors", "device": "X", "seed": seed,
                "last": {"score": with_, "specificity": 100.0, "sensitivity": 2 * with_ - 100.0},
                "selected": {"score": with_},
                "normal_margin": {"margin": margin, "without": {"score": without, "specificity": 80.0,
                                                                "sensitivity": 2 * without - 80.0}}}

    summary = bench.summarize([row(0, 2.0, 52.0, 44.0), row(1, 3.0, 54.0, 46.0)])
    x = next(e for e in summary if e["device"] == "X")
    assert x["margin"] == [2.5, pytest.approx(0.7071, abs=1e-4)] and x["nomargin_score"][0] == 45.0
    table = bench.markdown(summary, SimpleNamespace(db="db", backbone=None, epochs=None, seeds="0,1",
                                                    max_cycles=None, degrade=None, lr=None))
    assert "| X | icbhi-descriptors | 2 | 2.50 +- 0.71 | 45.0 +- 1.4 | 53.0 +- 1.4 |" in table


def test_a_run_written_before_these_settings_still_resumes(synth_db: Path, tmp_path: Path):
    """Settings added later (`select`, `normal_margin`, `exclude_devices`, `front_end`) are read at their
    defaults from an older config.json, so `--resume` does not see a difference that is not there."""
    from edge_lung.train.config import TrainConfig
    from edge_lung.train.rundir import prepare_run_dir

    run = tmp_path / "old"
    run.mkdir()
    cfg = TrainConfig(data=str(synth_db), out=str(run), resume=True)
    old = cfg.to_dict()
    for key in ("select", "normal_margin", "exclude_devices"):
        del old[key]
    del old["features"]["front_end"]
    (run / "config.json").write_text(json.dumps({"train": old}))
    assert prepare_run_dir(cfg, run) is None  # no checkpoint yet: starts over, no settings error
    (run / "config.json").write_text(json.dumps({"train": {**old, "epochs": 99}}))
    with pytest.raises(ValueError, match="epochs: run has 99"):
        prepare_run_dir(cfg, run)
