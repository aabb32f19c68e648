"""Calibration to a new stethoscope (issue #12): the per-bin statistics, the mapping, `edge-lung calibrate`'s
model directory, the runtime applying it, and bad input.

The model is the tiny ONNX classifier of `edge_lung.testing` on 4 s / 32-bin features; recordings are
`make_signal` files; a "new stethoscope" is the same audio through a fixed gain and spectral tilt, saved at
another sample rate.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_lung.audio import resample
from edge_lung.config import FeatureConfig
from edge_lung.feature_stats import Calibration, FeatureStats, StatsAccumulator
from edge_lung.features import window_features
from edge_lung.fileio import sha256_file
from edge_lung.runtime.artifact.model_dir import (
    CALIBRATION_NAME,
    MANIFEST_NAME,
    ArtifactError,
    OnnxClassifier,
    resolve_model_path,
    write_manifest,
)
from edge_lung.runtime.live.stream import StreamingClassifier
from edge_lung.runtime.offline.calibrate import (
    CalibrationError,
    calibrate_lines,
    calibrate_model_dir,
    measure_recordings,
    write_feature_stats,
)
from edge_lung.runtime.offline.classify import classify_file
from edge_lung.scoring import softmax
from edge_lung.testing import build_tiny_model, make_signal

FEATURES = FeatureConfig(window_s=4.0, num_mel_bins=32)
QUIET = dict(log=lambda *_: None)


def stethoscope(x: np.ndarray, rate: int, out_rate: int = 22050) -> np.ndarray:
    """A different device: gain 0.5 and a fixed tilt (FIR 1 + 0.8 z^-1: +5 dB at low, -14 dB near Nyquist),
    then the file's rate changed."""
    y = 0.5 * (x + 0.8 * np.concatenate(([0.0], x[:-1])))
    return resample(y.astype(np.float32), rate, out_rate)


def write_recordings(folder: Path, seconds: tuple[float, ...], seed: int, device: bool = False,
                     silence_s: tuple[float, float] | None = None) -> Path:
    """`make_signal` files; `silence_s` (start, end) zeroes that stretch of the first one (the quality gate
    holds back the windows that are mostly silence)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(seconds):
        x = make_signal(s, FEATURES.sample_rate, seed=seed + i)
        if silence_s is not None and i == 0:
            x[int(silence_s[0] * FEATURES.sample_rate) : int(silence_s[1] * FEATURES.sample_rate)] = 0.0
        if device:
            sf.write(str(folder / f"rec{i}.wav"), stethoscope(x, FEATURES.sample_rate), 22050, subtype="FLOAT")
        else:
            sf.write(str(folder / f"rec{i}.wav"), x, FEATURES.sample_rate, subtype="FLOAT")
    return folder


def add_reference(model_dir: Path, stats: FeatureStats) -> Path:
    """What export does for a real model: feature_stats.json listed (hashed) in the manifest."""
    entry = write_feature_stats(model_dir, stats, {"split": "train", "data": "test recordings", "cycles": 0})
    write_manifest(model_dir, model_dir / "tiny.onnx", {"feature_stats": entry})
    return model_dir


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("calibrate")
    train = write_recordings(root / "train", (20.0, 23.0, 26.0), seed=1)
    ref = measure_recordings(sorted(train.iterdir()), FEATURES).stats
    model = add_reference(build_tiny_model(root / "model", FEATURES, scale=0.05), ref)
    return {"root": root, "train": train, "model": model,
            "device": write_recordings(root / "device", (20.0, 23.0, 26.0), seed=1, device=True),
            "device_gap": write_recordings(root / "device_gap", (30.0, 23.0, 26.0), seed=1, device=True,
                                           silence_s=(10, 20)),
            "device_other": write_recordings(root / "device_other", (29.0,), seed=11, device=True),
            "plain_other": write_recordings(root / "plain_other", (29.0,), seed=11)}


@pytest.fixture(scope="module")
def calibrated(setup: dict[str, Path]) -> tuple[Path, dict]:
    before = {p.name: sha256_file(p) for p in setup["model"].iterdir()}
    out = setup["root"] / "calibrated"
    record = calibrate_model_dir(setup["model"], setup["device"], out, min_audio_s=30.0, **QUIET)
    assert {p.name: sha256_file(p) for p in setup["model"].iterdir()} == before, "the original was modified"
    return out, record


def test_accumulator_matches_scikit_learns_standard_scaler() -> None:
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    windows = [rng.normal(3.0, 2.0, size=(n, 5)) * np.arange(1, 6) for n in (7, 1, 40, 13)]
    batch = rng.normal(-1.0, 0.5, size=(3, 20, 5))  # [B, T, M]: three windows at once
    acc = StatsAccumulator(5)
    for w in [*windows, batch]:
        acc.add(w)
    scaler = StandardScaler().fit(np.concatenate([*windows, batch.reshape(-1, 5)]))
    np.testing.assert_allclose(acc.stats().mean, scaler.mean_, rtol=1e-12)
    np.testing.assert_allclose(acc.stats().std, np.sqrt(scaler.var_), rtol=1e-12)
    assert (acc.stats().frames, acc.stats().windows) == (121, 7)


def test_mapping_is_the_formula_on_hand_made_numbers() -> None:
    ref = FeatureStats(mean=(1.0, 2.0, 3.0), std=(1.0, 2.0, 0.5), frames=10, windows=1)
    dev = FeatureStats(mean=(0.0, -1.0, 0.0), std=(2.0, 0.5, 0.001), frames=10, windows=1)
    # bin 0: (2 - 0) / 2 * 1 + 1 = 2; bin 1: (1 + 1) / 0.5 * 2 + 2 = 10;
    # bin 2: the device std 0.001 is under the 0.025 floor: 0.05 / 0.025 * 0.5 + 3 = 4
    got = Calibration(ref, dev).apply(np.array([[2.0, 1.0, 0.05]], np.float32))
    np.testing.assert_allclose(got, [[2.0, 10.0, 4.0]], rtol=1e-6)
    assert Calibration(ref, dev).flat_bins == 1
    with pytest.raises(ValueError, match="3 mel bins"):
        Calibration(ref, dev).apply(np.zeros((4, 2)))


def test_calibrate_writes_a_verified_copy_with_the_runtime_windows_statistics(setup, tmp_path) -> None:
    before = {p.name: sha256_file(p) for p in setup["model"].iterdir()}
    out = tmp_path / "calibrated"
    record = calibrate_model_dir(setup["model"], setup["device_gap"], out, min_audio_s=30.0, **QUIET)
    assert {p.name: sha256_file(p) for p in setup["model"].iterdir()} == before, "the original was modified"
    onnx_path, manifest = resolve_model_path(out)  # the ONNX file's hash
    entry = manifest["calibration"]
    assert entry["file"] == CALIBRATION_NAME and entry["sha256"] == sha256_file(out / CALIBRATION_NAME)
    assert (entry["files_used"], entry["files_skipped"]) == (3, 0)
    assert entry["windows"] == record["calibration"]["windows"] > 0
    assert entry["recordings"] == str(setup["device_gap"].absolute()) and entry["calibrated_at"].endswith("Z")
    assert entry["source_manifest_sha256"] == sha256_file(setup["model"] / MANIFEST_NAME)
    # The device statistics are those of the windows `classify` decides on (its windowing and quality gate),
    # computed here directly over their frames.
    plain = StreamingClassifier(OnnxClassifier(setup["model"]))
    decisions = [d for f in sorted(setup["device_gap"].iterdir())
                 for d in classify_file(plain, f, keep_decisions=True).decisions]
    assert any(d.verdict != "ok" for d in decisions)  # the silent stretch: windows the runtime does not decide on
    frames = [window_features(d.window.audio, FEATURES) for d in decisions if d.verdict == "ok"]
    x = np.concatenate(frames).astype(np.float64)
    cal = OnnxClassifier(out).info.calibration
    assert cal.device.windows == len(frames) == entry["windows"]
    np.testing.assert_allclose(cal.device.mean, x.mean(axis=0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(cal.device.std, x.std(axis=0), rtol=1e-9, atol=1e-9)
    # The calibrated directory's model input is the hand-computed mapping of the features.
    f = frames[0]
    mu_d, sd_d = np.array(cal.device.mean), np.maximum(np.array(cal.device.std), 0.025)
    ref = json.loads((setup["model"] / "feature_stats.json").read_text())["train"]
    want = (f - mu_d) / sd_d * np.array(ref["std"]) + np.array(ref["mean"])
    np.testing.assert_allclose(OnnxClassifier(out).model_input(f[None])[0], want, rtol=1e-5, atol=1e-5)


def test_every_runtime_path_of_a_calibrated_dir_feeds_the_mapped_features(setup, calibrated) -> None:
    out, _ = calibrated
    plain, cal = OnnxClassifier(setup["model"]), OnnxClassifier(out)
    mapping = cal.info.calibration
    path = sorted(setup["device"].iterdir())[0]
    decisions = classify_file(StreamingClassifier(cal), path, keep_decisions=True).decisions
    ok = [d for d in decisions if d.verdict == "ok"]
    feats = np.stack([window_features(d.window.audio, FEATURES) for d in ok])
    want = softmax(plain.logits(mapping.apply(feats)))
    np.testing.assert_allclose(np.stack([d.probabilities for d in ok]), want, rtol=1e-5, atol=1e-6)  # classify/stream
    np.testing.assert_allclose(cal.logits(feats), plain.logits(mapping.apply(feats)), rtol=1e-5, atol=1e-5)  # evaluate,
    # bench and report call these
    assert not np.allclose(cal.logits(feats), plain.logits(feats), atol=1e-3), "the calibration changed nothing"


def test_a_gain_and_tilt_device_is_mapped_back_to_the_reference(setup, calibrated) -> None:
    """Recordings the calibration never saw, made with the 'new stethoscope': mapped, their statistics come
    back to those of the same recordings made with the training stethoscope."""
    out, _ = calibrated
    mapping = OnnxClassifier(out).info.calibration
    truth = measure_recordings(sorted(setup["plain_other"].iterdir()), FEATURES).stats
    device_acc, mapped_acc = StatsAccumulator(32), StatsAccumulator(32)
    plain = StreamingClassifier(OnnxClassifier(setup["model"]))
    for d in classify_file(plain, sorted(setup["device_other"].iterdir())[0], keep_decisions=True).decisions:
        if d.verdict == "ok":
            f = window_features(d.window.audio, FEATURES)
            device_acc.add(f)
            mapped_acc.add(mapping.apply(f))
    raw, mapped = device_acc.stats(), mapped_acc.stats()
    err_raw = np.abs(np.subtract(raw.mean, truth.mean)).max()
    err_mapped = np.abs(np.subtract(mapped.mean, truth.mean)).max()
    # measured: the device moves some bin's mean by 0.43 (about 4 nats) and its spread by up to 15%;
    # mapped, 0.0009 and 1.2%
    assert err_raw > 0.3 and np.abs(np.divide(raw.std, truth.std) - 1).max() > 0.1
    assert err_mapped < 0.01
    assert np.abs(np.divide(mapped.std, truth.std) - 1).max() < 0.03


def test_bad_recordings_give_clear_errors_and_skipped_files_are_counted(setup, tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no audio here")
    with pytest.raises(CalibrationError, match=r"--recordings .*empty: holds no \.wav/\.flac files"):
        calibrate_model_dir(setup["model"], empty, tmp_path / "out", **QUIET)
    short = write_recordings(tmp_path / "short", (6.0,), seed=3, device=True)
    (short / "broken.wav").write_bytes(b"RIFF not really a wave file")
    with pytest.raises(CalibrationError, match=r"short: .* s of usable audio .*1 of 2 files skipped: broken.wav: "
                       r"unreadable.*needs at least 60 s \(--min-audio\)"):
        calibrate_model_dir(setup["model"], short, tmp_path / "out", **QUIET)
    with pytest.raises(CalibrationError, match="no such directory"):
        calibrate_model_dir(setup["model"], tmp_path / "missing", tmp_path / "out", **QUIET)
    assert not (tmp_path / "out").exists()
    record = calibrate_model_dir(setup["model"], short, tmp_path / "out", min_audio_s=2.0, **QUIET)
    assert [(Path(f["file"]).name, f["status"]) for f in record["files"]] == [("broken.wav", "skipped"),
                                                                             ("rec0.wav", "used")]
    assert record["calibration"]["files_skipped"] == 1


def test_bad_model_dirs_and_outputs_are_refused(setup, calibrated, tmp_path) -> None:
    not_model = tmp_path / "not_model"
    not_model.mkdir()
    with pytest.raises(ArtifactError, match="no manifest.json"):
        calibrate_model_dir(not_model, setup["device"], tmp_path / "out", **QUIET)
    old = build_tiny_model(tmp_path / "old", FEATURES)  # exported before feature_stats.json existed
    with pytest.raises(ArtifactError, match=r"lists no 'feature_stats' file.*export it again.*--reference DB_DIR"):
        calibrate_model_dir(old, setup["device"], tmp_path / "out", min_audio_s=30.0, **QUIET)
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "mine.txt").write_text("keep")
    with pytest.raises(ArtifactError, match="exists and was not written by edge-lung"):
        calibrate_model_dir(setup["model"], setup["device"], occupied, **QUIET)
    with pytest.raises(ArtifactError, match="not an edge-lung model directory.*move it or choose another path"):
        calibrate_model_dir(setup["model"], setup["device"], occupied, overwrite=True, min_audio_s=30.0, **QUIET)
    assert (occupied / "mine.txt").read_text() == "keep"
    with pytest.raises(ArtifactError, match="is MODEL_DIR .*leaves the original untouched"):
        calibrate_model_dir(setup["model"], setup["device"], setup["model"], overwrite=True, **QUIET)
    with pytest.raises(ArtifactError, match="is inside MODEL_DIR"):
        calibrate_model_dir(setup["model"], setup["device"], setup["model"] / "cal", **QUIET)
    with pytest.raises(ArtifactError, match="holds MODEL_DIR"):
        calibrate_model_dir(setup["model"], setup["device"], setup["root"], overwrite=True, **QUIET)
    out, _ = calibrated  # --overwrite replaces a model directory
    again = calibrate_model_dir(setup["model"], setup["train"], out, overwrite=True, min_audio_s=30.0, **QUIET)
    assert OnnxClassifier(out).info.calibration.device.mean == tuple(again["device"]["mean"])
    calibrate_model_dir(setup["model"], setup["device"], out, overwrite=True, min_audio_s=30.0, **QUIET)  # restore


def test_a_tampered_calibration_is_refused(calibrated, tmp_path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(calibrated[0], copy)
    data = json.loads((copy / CALIBRATION_NAME).read_text())
    data["device"]["mean"][0] += 1.0
    (copy / CALIBRATION_NAME).write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="calibration.json: SHA-256 .* does not match the manifest"):
        OnnxClassifier(copy)


def test_the_e2e_graph_and_verify_refuse_a_calibrated_dir(setup, tmp_path) -> None:
    from edge_lung.runtime.artifact.e2e import E2EClassifier, load_model, verify_model_dir
    from edge_lung.testing import build_tiny_e2e_model

    model = build_tiny_e2e_model(tmp_path / "e2e", FEATURES)
    manifest = json.loads((model / MANIFEST_NAME).read_text())
    ref = measure_recordings(sorted(setup["train"].iterdir()), FEATURES).stats
    entry = write_feature_stats(model, ref, {"split": "train"})
    write_manifest(model, model / "tiny.onnx", {k: manifest[k] for k in ("e2e", "test_vectors")} |
                   {"feature_stats": entry})
    assert verify_model_dir(model)["passed"]
    out = tmp_path / "e2e-cal"
    calibrate_model_dir(model, setup["device"], out, min_audio_s=30.0, **QUIET)
    for attempt in (lambda: E2EClassifier(out), lambda: load_model(out, "e2e"), lambda: verify_model_dir(out)):
        with pytest.raises(ArtifactError, match=r"calibrated for a stethoscope .* use --graph model"):
            attempt()
    assert load_model(out, "model").info.calibration is not None


def test_reference_from_a_database_for_an_old_model(synth_db, setup, tmp_path) -> None:
    from edge_lung.data.icbhi import load_split
    from edge_lung.features import cycle_features

    old = build_tiny_model(tmp_path / "old", FEATURES, run={"val_fraction": 0.2, "val_seed": 0})
    record = calibrate_model_dir(old, setup["device"], tmp_path / "out", reference_db=synth_db, min_audio_s=30.0,
                                 **QUIET)
    x = np.concatenate([cycle_features(c.audio, FEATURES) for c in load_split(synth_db, "train", FEATURES)])
    np.testing.assert_allclose(record["reference"]["mean"], x.mean(axis=0, dtype=np.float64), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(record["reference"]["std"], x.std(axis=0, dtype=np.float64), rtol=1e-9, atol=1e-9)
    assert record["calibration"]["reference"].startswith("train split of")


def test_window_normalised_models_are_nearly_unchanged(setup, tmp_path) -> None:
    """With mel_norm 'window' every window is standardised per bin already: the mapping is nearly the identity."""
    features = FeatureConfig(window_s=4.0, num_mel_bins=32, mel_norm="window")
    ref = measure_recordings(sorted(setup["train"].iterdir()), features).stats
    model = add_reference(build_tiny_model(tmp_path / "model", features), ref)
    record = calibrate_model_dir(model, setup["device"], tmp_path / "out", min_audio_s=30.0, **QUIET)
    mapping = record["calibration"]["mapping"]
    assert mapping["max_mean_shift"] < 1e-6 and 0.9 < mapping["scale_min"] <= mapping["scale_max"] < 1.1
    assert any("nearly the identity" in line for line in calibrate_lines(record, tmp_path / "out"))


def test_cli_calibrate(setup, tmp_path) -> None:
    from typer.testing import CliRunner

    from edge_lung.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["calibrate", str(setup["model"]), "--recordings", str(setup["device"]), "--out",
                             str(tmp_path / "out"), "--min-audio", "30"])
    assert ok.exit_code == 0, ok.output
    assert "measured" in ok.output and f"wrote {tmp_path / 'out'}" in ok.output
    bad = runner.invoke(app, ["calibrate", str(setup["model"]), "--recordings", str(tmp_path / "none"), "--out",
                              str(tmp_path / "out2")])
    assert bad.exit_code == 2 and "no such directory" in bad.output



def test_a_constant_level_is_refused(setup, tmp_path) -> None:
    """80 s of a constant DC level was accepted ("128 flat bins") and the calibrated model then flagged every
    real window (issue 26): the gate now holds every such window back, so calibrate has nothing to measure."""
    folder = tmp_path / "dc"
    folder.mkdir()
    for i, level in enumerate((0.5, 0.01)):
        sf.write(str(folder / f"dc{i}.wav"), np.full(40 * FEATURES.sample_rate, level, np.float32),
                 FEATURES.sample_rate, subtype="FLOAT")
    with pytest.raises(CalibrationError, match=r"0\.0 s of usable audio \(0 windows passed the quality gate, 2 of 2 "
                       r"files skipped: dc0.wav: no window passed the quality gate \(\{'no_signal': \d+\}\)"):
        calibrate_model_dir(setup["model"], folder, tmp_path / "out", min_audio_s=30.0, **QUIET)
    assert not (tmp_path / "out").exists()
