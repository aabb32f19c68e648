"""Signal-quality gate (issue 11): real recordings degraded in known ways, the decisions around it, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from edge_lung.audio import load_audio
from edge_lung.cli import app
from edge_lung.config import FeatureConfig
from edge_lung.runtime import Decider, StreamConfig, StreamingClassifier, WindowStream
from edge_lung.runtime.artifact.model_dir import ArtifactError, OnnxClassifier, build_metadata, quality_from_meta
from edge_lung.runtime.artifact.quality import (
    CHECKS,
    GUIDANCE,
    Guidance,
    Quality,
    QualityConfig,
    QualityStats,
    checks,
    verdict,
)
from edge_lung.runtime.commands.session import load_classifier
from edge_lung.runtime.live.events import LiveDisplay
from edge_lung.runtime.live.stream import assess_window
from edge_lung.testing import add_friction, add_white_noise, build_tiny_model, overdrive, with_nan_run

# Recordings of the real subset with no clipping at the source, one per device and rate
# (4 kHz Meditron, 44.1 kHz AKG C417L, Littmann Classic II SE and Meditron), cut to 20 s.
CLEAN = ("222_1b1_Lr_sc_Meditron", "130_2b4_Pl_mc_AKGC417L", "106_2b1_Pr_mc_LittC2SE", "201_1b1_Al_sc_Meditron")
CFG = QualityConfig()


@pytest.fixture(scope="module")
def recordings(icbhi_dir: Path) -> list[tuple[str, np.ndarray, int]]:
    out = []
    for stem in CLEAN:
        audio, rate = load_audio(next(icbhi_dir.rglob(f"{stem}.wav")))
        out.append((stem, audio[: 20 * rate], rate))
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-quality"))


def windows(audio: np.ndarray, rate: int, block_s: float = 1.0, cfg: QualityConfig = CFG) -> list:
    stream = WindowStream(FeatureConfig(), StreamConfig(), rate, clip_level=cfg.clip_level)
    block = max(1, int(block_s * rate))
    out = []
    for pos in range(0, audio.shape[0], block):
        out += stream.accept_waveform(audio[pos : pos + block])
    return out + stream.finish()


def assessed(audio: np.ndarray, rate: int) -> list[Quality]:
    return [assess_window(w, CFG) for w in windows(audio, rate)]


def share(qualities: list[Quality], *names: str) -> float:
    return sum(q.verdict in names for q in qualities) / len(qualities)


def test_clean_recordings_pass(recordings):
    for stem, audio, rate in recordings:
        found = {q.verdict for q in assessed(audio, rate)}
        assert found == {"ok"}, f"{stem}: a clean recording got {found}"


def test_zeroed_recordings_are_no_signal(recordings):
    for stem, audio, rate in recordings:
        assert share(assessed(np.zeros_like(audio), rate), "no_signal") == 1.0, stem


def test_overdrive_is_clipping_and_grows_with_the_gain(recordings):
    """The clipped share measured on the input rises with the gain; the heaviest overdrive is flagged."""
    for stem, audio, rate in recordings:
        by_gain = {db: assessed(overdrive(audio, db), rate) for db in (6, 12, 24)}
        mean_share = [np.mean([q.stats.clipped_share for q in qs]) for qs in by_gain.values()]
        assert mean_share == sorted(mean_share) and mean_share[0] > 0, f"{stem}: {mean_share}"
        detected = [share(qs, "clipping") for qs in by_gain.values()]
        assert detected == sorted(detected), f"{stem}: detection falls as the gain rises: {detected}"
        assert detected[-1] >= 0.9, f"{stem}: +24 dB over full scale flagged in only {detected[-1]:.0%} of windows"


def test_white_noise_is_noise_and_grows_as_snr_falls(recordings):
    """Flatness in the respiratory band rises as the SNR falls; at -10 dB SNR the chest cannot be heard."""
    for stem, audio, rate in recordings:
        by_snr = {snr: assessed(add_white_noise(audio, snr, seed=1), rate) for snr in (20, 0, -10)}
        # clean, +20 dB, -10 dB: 30 dB steps (between 0 and -10 dB a 4 kHz recording is already white)
        steps = (assessed(audio, rate), by_snr[20], by_snr[-10])
        flatness = [np.median([q.stats.flatness for q in qs]) for qs in steps]
        assert flatness == sorted(flatness), f"{stem}: flatness {flatness}"
        detected = [share(qs, "noise", "no_signal") for qs in by_snr.values()]
        assert detected == sorted(detected), f"{stem}: detection falls as the SNR falls: {detected}"
        assert detected[-1] >= 0.9, f"{stem}: -10 dB SNR flagged in only {detected[-1]:.0%} of windows"


def test_friction_bursts_are_noise_and_grow_as_snr_falls(recordings):
    for stem, audio, rate in recordings:
        detected = [share(assessed(add_friction(audio, rate, snr, seed=2), rate), "noise", "no_signal")
                    for snr in (10, -10)]
        assert share(assessed(audio, rate), "noise", "no_signal") <= detected[0] <= detected[1], (stem, detected)
        assert detected[-1] >= 0.9, f"{stem}: friction at -10 dB SNR flagged in only {detected[-1]:.0%} of windows"


def test_nan_run_marks_exactly_the_windows_that_hold_it(recordings):
    for stem, audio, rate in recordings:
        start, n = 10 * rate, rate // 10
        for w in windows(with_nan_run(audio, start, n), rate):
            holds = w.start_s < (start + n) / rate and start / rate < w.end_s
            assert (assess_window(w, CFG).verdict == "invalid") == holds, (stem, w.start_s, w.end_s)
            assert np.isfinite(w.audio).all(), f"{stem}: NaN reached the window audio"
            assert w.invalid == (n if holds else 0)


def test_quiet_recording_is_too_quiet_and_stationary_hiss_no_signal(recordings):
    stem, audio, rate = recordings[1]
    rms = float(np.sqrt(np.mean(np.square(audio))))
    quiet = audio * (10 ** ((CFG.quiet_db - 10) / 20) / rms)  # 10 dB under the quiet level, above the floor
    assert share(assessed(quiet, rate), "too_quiet") == 1.0
    hiss = (0.05 * np.random.default_rng(0).standard_normal(20 * rate)).astype(np.float32)
    assert share(assessed(hiss, rate), "no_signal") == 1.0


def test_bursty_broadband_noise_is_noise_not_no_signal():
    """Friction: broadband bursts have an envelope, so they are noise, not the hiss of an unplaced chest piece."""
    rate = 16000
    rng = np.random.default_rng(2)
    gate = np.repeat(rng.random(40) < 0.5, rate // 2)[: 20 * rate]  # 0.5 s bursts on and off
    x = (0.1 * rng.standard_normal(20 * rate) * (0.05 + gate)).astype(np.float32)
    assert share(assessed(x, rate), "noise") == 1.0


def test_each_check_fires_on_its_own_measurement():
    base = QualityStats(rms_db=-20.0, clipped_share=0.0, invalid=0, flatness=0.05, envelope_db=10.0, band_db=-40.0)
    assert verdict(base, CFG) == "ok" and not any(checks(base, CFG).values())
    cases = {
        "invalid": {"invalid": 1},
        "below_floor": {"rms_db": -math.inf},
        "clipping": {"clipped_share": 0.9},
        "empty_band": {"band_db": -90.0},
        "too_loud": {"rms_db": -1.0},
        "hiss": {"flatness": 0.9, "envelope_db": 0.5},
        "too_quiet": {"rms_db": -60.0},
        "noise": {"flatness": 0.9},
    }
    for name, change in cases.items():
        stats = QualityStats(**{**base.__dict__, **change})
        assert checks(stats, CFG)[name] and verdict(stats, CFG) == CHECKS[name], (name, checks(stats, CFG))


def test_marks_do_not_depend_on_the_block_size():
    rate = 44100
    rng = np.random.default_rng(3)
    x = np.clip(0.5 * rng.standard_normal(12 * rate), -1, 1).astype(np.float32)
    x[5 * rate : 5 * rate + 300] = np.inf
    runs = [[(w.end, w.span, w.clipped, w.invalid) for w in windows(x, rate, block_s)] for block_s in (0.01, 0.1, 1.0)]
    assert runs[0] == runs[1] == runs[2]
    assert any(c > 0 for _, _, c, _ in runs[0]) and any(i == 300 for *_, i in runs[0])


def test_failing_window_has_no_decision_and_skips_smoothing():
    cfg = StreamConfig(smooth=5)
    decider = Decider(("normal", "crackle", "wheeze", "both"), [1, 2, 3], cfg)
    ws = windows(np.zeros(10 * 16000, np.float32), 16000)
    p1, p2 = np.array([0.7, 0.1, 0.1, 0.1]), np.array([0.1, 0.7, 0.1, 0.1])
    stats = QualityStats(-math.inf, 0.0, 0, 0.0, 0.0)
    a = decider.decide(ws[0], p1, 1.0, 1.0, quality=Quality("ok", stats))
    b = decider.decide(ws[1], None, 0.0, 0.0, quality=Quality("no_signal", stats))
    c = decider.decide(ws[2], p2, 1.0, 1.0, quality=Quality("ok", stats))
    assert (a.verdict, b.verdict, c.verdict) == ("ok", "no_signal", "ok")
    assert b.label == b.smoothed_label == "no_signal" and not b.flag and not b.smoothed_flag
    assert c.smoothed_over == 2
    np.testing.assert_allclose(c.smoothed_probabilities, (p1 + p2) / 2, rtol=1e-6)
    event = b.to_dict()
    json.dumps(event, allow_nan=False)  # nulls, never NaN
    assert event["quality"] == "no_signal" and event["p_abnormal"] is None and event["label"] == "no_signal"


def test_guidance_is_rate_limited():
    g = Guidance(every_s=5.0)
    assert g.message("clipping", now=0.0) == GUIDANCE["clipping"] == "clipping: lower the gain"
    assert g.message("clipping", now=2.0) is None
    assert g.message("no_signal", now=3.0) == GUIDANCE["no_signal"]
    assert g.message("no_signal", now=7.9) is None
    assert g.message("no_signal", now=8.1) == GUIDANCE["no_signal"]
    assert g.message("ok", now=8.2) is None and g.message("no_signal", now=8.3) == GUIDANCE["no_signal"]


def test_live_view_shows_the_verdict_and_advice_once(model_dir):
    from rich.console import Console

    classifier = StreamingClassifier(OnnxClassifier(model_dir, threads=1))
    console = Console(record=True, width=120)
    display = LiveDisplay("test", console=console)
    decider = classifier.create_decider()
    for w in windows(np.zeros(6 * 16000, np.float32), 16000):
        r = classifier.process(w)
        display(decider.decide(w, r.probabilities, r.feature_ms, r.model_ms, quality=r.quality))
    advice = console.export_text(clear=True).strip().splitlines()
    assert len(advice) == 1 and "no signal: place the chest piece" in advice[0]  # 5 windows within 1 s: one line
    console.print(display._render())
    assert "no_signal" in console.export_text()


def test_nan_never_reaches_the_model(model_dir):
    classifier = StreamingClassifier(OnnxClassifier(model_dir, threads=1), gate=False)
    seen = []
    real_infer = classifier.infer
    classifier.infer = lambda w: (seen.append(w), real_infer(w))[1]
    x = (0.1 * np.random.default_rng(4).standard_normal(12 * 16000)).astype(np.float32)
    x[9 * 16000 : 9 * 16000 + 50] = np.nan
    results = [classifier.process(w) for w in windows(x, 16000)]
    assert seen and all(w.invalid == 0 and np.isfinite(w.audio).all() for w in seen)
    assert sum(r.probabilities is None for r in results) == sum(r.quality is not None for r in results) > 0


def test_classify_cli_three_cases_and_quality_off(model_dir, tmp_path):
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "silence.wav", np.zeros(32000, np.float32), 16000, subtype="PCM_16")
    sf.write(tmp_path / "clipped.wav", np.clip(4 * rng.standard_normal(32000), -1, 1), 16000, subtype="PCM_16")
    nan = (0.1 * rng.standard_normal(32000)).astype(np.float32)
    nan[8000:9000] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    files = [str(tmp_path / f) for f in ("silence.wav", "clipped.wav", "nan.wav")]
    out = tmp_path / "out.jsonl"
    res = CliRunner().invoke(app, ["classify", str(model_dir), *files, "--jsonl", str(out)])
    assert res.exit_code == 1, res.output  # the NaN file is an error
    events = [json.loads(line) for line in out.read_text().splitlines()]
    labels = [(Path(e["source"]).name, e["label"], e["flag"]) for e in events if e["type"] == "window"]
    assert labels == [("silence.wav", "no_signal", False), ("clipped.wav", "clipping", False),
                      ("nan.wav", "invalid", False)]
    notes = {Path(e["file"]).name: e for e in events if e["type"] == "file"}
    assert "8000-8999" in notes["nan.wav"]["note"] and notes["clipped.wav"]["verdicts"] == {"clipping": 1}
    res = CliRunner().invoke(app, ["classify", str(model_dir), *files, "--jsonl", str(out), "--quality", "off",
                                   "--overwrite"])  # out.jsonl is the run's above (issue 26: never replaced silently)
    events = [json.loads(line) for line in out.read_text().splitlines() if '"window"' in line]
    assert [e["label"] in ("normal", "crackle", "wheeze", "both") for e in events] == [True, True, False]


def test_thresholds_travel_in_the_model_and_the_command_line_overrides_them(model_dir, tmp_path):
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert QualityConfig.from_dict(manifest["quality"]) == QualityConfig()
    assert quality_from_meta(None, model_dir) == QualityConfig()  # a model exported before the gate
    with pytest.raises(ArtifactError, match="quality"):
        quality_from_meta({"clipped_share": 2.0}, model_dir)
    meta = build_metadata(["normal", "x"], FeatureConfig(), "fp32", {}, {}, QualityConfig(floor_db=-80.0))
    assert json.loads(meta["edge_lung.quality"])["floor_db"] == -80.0
    classifier = load_classifier(model_dir, StreamConfig(), 1, "on", ["clipped_share=0.05"])
    assert classifier.quality.clipped_share == 0.05 and classifier.gate
    with pytest.raises(ValueError, match="clip_share"):
        QualityConfig().with_overrides(["clip_share=0.1"])
    with pytest.raises(ValueError, match="quiet_db"):
        QualityConfig(quiet_db=-80.0)
    res = CliRunner().invoke(app, ["classify", str(model_dir), str(tmp_path), "--quality", "maybe"])
    assert res.exit_code == 2 and "--quality" in res.output


def test_stream_summary_counts_windows_per_verdict(model_dir, tmp_path):
    x = np.zeros(6 * 16000, np.float32)
    x[3 * 16000 :] = 0.1 * np.random.default_rng(5).standard_normal(3 * 16000)
    sf.write(tmp_path / "rec.wav", x, 16000, subtype="FLOAT")
    out = tmp_path / "live.jsonl"
    res = CliRunner().invoke(app, ["stream", str(model_dir), "--replay", str(tmp_path / "rec.wav"), "--quiet",
                                   "--jsonl", str(out)])
    assert res.exit_code == 0, res.output
    events = [json.loads(line) for line in out.read_text().splitlines()]
    windows_seen = [e["quality"] for e in events if e["type"] == "window"]
    summary = events[-1]
    assert summary["type"] == "summary" and sum(summary["verdicts"].values()) == len(windows_seen) == 5
    assert summary["verdicts"] == {v: windows_seen.count(v) for v in set(windows_seen)}
    assert windows_seen[0] == "no_signal"  # the first 2 s are digital silence


@pytest.mark.parametrize("level", [0.5, 0.01, -0.3])
def test_constant_level_is_no_signal(level):
    """A DC level alone (issue 26): nothing is left once its mean is gone, so nothing reaches the chest band."""
    assert share(assessed(np.full(20 * 16000, level, np.float32), 16000), "no_signal") == 1.0


def test_slow_drift_is_no_signal():
    """A level drifting at 0.3 or 2 Hz (a cable, a loose electrode) has nothing in the respiratory band."""
    rate = 16000
    t = np.arange(20 * rate) / rate
    for hz in (0.3, 2.0):
        drift = (0.2 + 0.1 * np.sin(2 * np.pi * hz * t)).astype(np.float32)
        assert share(assessed(drift, rate), "no_signal") == 1.0, (hz, {q.verdict for q in assessed(drift, rate)})


def test_dc_offset_on_a_real_recording_still_passes(recordings):
    """A DC offset under real breath sounds leaves them audible: the new checks do not fire on it."""
    for stem, audio, rate in recordings:
        found = {q.verdict for q in assessed(audio + np.float32(0.05), rate)}
        assert found == {"ok"}, f"{stem}: a clean recording with a DC offset got {found}"
