"""Windows and decisions: cyclic padding, block-size invariance vs offline inference, classify == replay."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from edge_lung.audio import cyclic_pad, resample
from edge_lung.cli import app
from edge_lung.config import FeatureConfig
from edge_lung.data.icbhi import parse_annotation
from edge_lung.features import window_features
from edge_lung.runtime import (
    Decider,
    ReplaySource,
    StreamConfig,
    StreamingClassifier,
    WindowStream,
    classify_file,
    run_live,
)
from edge_lung.runtime.artifact.model_dir import OnnxClassifier
from edge_lung.runtime.live.worker import InferenceWorker
from edge_lung.testing import build_tiny_model, make_signal, write_signal

FEATURES_4S = FeatureConfig(window_s=4.0)


@pytest.fixture(scope="module")
def model_4s(tmp_path_factory):
    return OnnxClassifier(build_tiny_model(tmp_path_factory.mktemp("tiny4"), FEATURES_4S), threads=1)


@pytest.fixture(scope="module")
def model_dir_8s(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny8"))


def feed(stream: WindowStream, audio: np.ndarray, block: int) -> list:
    windows = []
    for pos in range(0, audio.shape[0], block):
        windows += stream.accept_waveform(audio[pos : pos + block])
    return windows + stream.finish()


def offline_windows(audio16k: np.ndarray, ends: list[int], cfg: FeatureConfig) -> list[np.ndarray]:
    """What training does with a cycle: the audio up to `end`, last window or cyclic-padded."""
    W = cfg.window_samples
    return [cyclic_pad(audio16k[max(0, e - W) : e], W) for e in ends]


def test_first_windows_are_cyclic_padded_like_training():
    cfg = FeatureConfig(window_s=4.0)
    stream = WindowStream(cfg, StreamConfig(hop_s=1.0, min_audio_s=2.0), 16000)
    x = make_signal(7.0, 16000)
    windows = feed(stream, x, 1600)
    ends = [w.end for w in windows]
    assert ends == [32000, 48000, 64000, 80000, 96000, 112000]  # first decision after min audio, then every hop
    for w in windows:
        have = min(w.end, cfg.window_samples)
        assert w.padded == (w.end < cfg.window_samples)
        assert w.start == w.end - have
        assert np.array_equal(w.audio, cyclic_pad(x[w.end - have : w.end], cfg.window_samples))
    assert windows[0].audio.shape == (cfg.window_samples,)
    assert np.array_equal(windows[0].audio[32000:], x[:32000])  # the 2 s repeat, never zeros


@pytest.mark.parametrize(("min_audio", "hop", "first_end_s"), [(2.0, 1.0, 2.0), (2.5, 1.0, 3.0), (1.0, 0.5, 1.0)])
def test_min_audio_and_hop_are_configurable(min_audio, hop, first_end_s):
    stream = WindowStream(FEATURES_4S, StreamConfig(hop_s=hop, min_audio_s=min_audio), 16000)
    windows = feed(stream, make_signal(5.0, 16000), 800)
    assert windows[0].end_s == first_end_s
    assert np.allclose(np.diff([w.end_s for w in windows if not w.final]), hop)


def test_tail_gets_a_final_window_and_short_input_none():
    stream = WindowStream(FEATURES_4S, StreamConfig(), 16000)
    windows = feed(stream, make_signal(6.6, 16000), 16000)
    assert windows[-1].final and windows[-1].end == int(6.6 * 16000)
    stream = WindowStream(FEATURES_4S, StreamConfig(), 16000)
    assert feed(stream, make_signal(1.5, 16000), 16000) == []


@pytest.mark.parametrize("rate", [16000, 44100])
def test_block_size_invariance_matches_offline_inference(model_4s, rate):
    """10 ms, 100 ms and 1 s blocks give the same windows and probabilities as offline inference."""
    classifier = StreamingClassifier(model_4s, StreamConfig())
    x = make_signal(9.3, rate, seed=1)
    x16 = resample(x, rate, 16000)  # the whole signal resampled at once
    runs = []
    for block_s in (0.01, 0.1, 1.0):
        windows = feed(classifier.create_stream(rate), x, int(round(block_s * rate)))
        runs.append(windows)
    ends = [w.end for w in runs[0]]
    for windows in runs[1:]:
        assert [w.end for w in windows] == ends
        for a, b in zip(runs[0], windows, strict=True):
            assert np.array_equal(a.audio, b.audio)
    # resampler continuity: the streamed windows equal windows cut from the whole-signal resampling
    for w, ref in zip(runs[0], offline_windows(x16, ends, FEATURES_4S), strict=True):
        np.testing.assert_allclose(w.audio, ref, atol=1e-6)
    offline = model_4s.probabilities(np.stack([window_features(r, FEATURES_4S) for r in offline_windows(x16, ends,
                                                                                                         FEATURES_4S)]))
    for windows in runs:
        probs = np.stack([classifier.infer(w)[0] for w in windows])
        np.testing.assert_allclose(probs, offline, atol=1e-5)
    labels = {int(np.argmax(p)) for p in offline}
    assert len(labels) > 1, "the tiny model should not answer the same class for every window"


def test_reset_reproduces_results(model_4s):
    classifier = StreamingClassifier(model_4s)
    stream = classifier.create_stream(44100)
    x = make_signal(6.0, 44100)
    first = feed(stream, x, 4410)
    stream.reset()
    second = feed(stream, x, 4410)
    assert [w.end for w in first] == [w.end for w in second]
    assert all(np.array_equal(a.audio, b.audio) for a, b in zip(first, second, strict=True))


def test_long_gap_restarts_windowing_and_keeps_absolute_time():
    stream = WindowStream(FEATURES_4S, StreamConfig(fill_gap_s=0.5), 16000)
    x = make_signal(3.0, 16000)
    before = []
    for pos in range(0, x.shape[0], 1600):
        before += stream.accept_waveform(x[pos : pos + 1600])
    closing = stream.gap(16000 * 5)  # 5 s outage: new segment
    after = feed(stream, x, 1600)
    assert [w.end for w in before] == [32000, 48000]
    assert closing == []  # the 3 s segment ended exactly on a hop
    assert after[0].end == 48000 + 80000 + 32000 and after[0].padded and after[0].segment == 1
    assert np.array_equal(after[0].audio, cyclic_pad(x[:32000], FEATURES_4S.window_samples))


def test_short_gap_is_filled_with_silence():
    stream = WindowStream(FEATURES_4S, StreamConfig(fill_gap_s=0.5), 16000)
    x = make_signal(2.0, 16000)
    stream.accept_waveform(x[:16000])
    stream.gap(800)
    windows = stream.accept_waveform(x[16000:])
    assert windows[0].segment == 0 and windows[0].end == 32000
    audio = windows[0].audio  # 1 s of audio, 0.05 s of silence, 0.95 s of audio, tiled to 4 s
    assert np.array_equal(audio[:16000], x[:16000]) and np.array_equal(audio[32000:48000], x[:16000])
    assert not audio[16000:16800].any()
    assert np.array_equal(audio[16800:32000], x[16000:31200])


def test_decider_smooths_last_n_and_applies_threshold():
    decider = Decider(("normal", "crackle", "wheeze", "both"), [1, 2, 3], StreamConfig(smooth=2, threshold=0.3))
    stream = WindowStream(FEATURES_4S, StreamConfig(), 16000)
    windows = feed(stream, make_signal(5.0, 16000), 16000)
    p = [np.array(v, np.float32) for v in ([0.9, 0.1, 0, 0], [0.5, 0, 0.5, 0], [0.6, 0, 0, 0.4])]
    d = [decider.decide(w, q, 1.0, 1.0) for w, q in zip(windows, p, strict=False)]
    assert [x.label for x in d] == ["normal", "normal", "normal"]
    assert [x.flag for x in d] == [False, True, True]
    np.testing.assert_allclose(d[2].smoothed_probabilities, (p[1] + p[2]) / 2)
    assert d[2].smoothed_over == 2
    event = d[2].to_dict()
    assert event["p_abnormal"] == pytest.approx(0.4) and json.loads(json.dumps(event)) == event


def test_config_errors_say_what_was_expected():
    with pytest.raises(ValueError, match=r"hop_s \(--hop\): expected seconds in \(0, 604800\] \(a week\), got 0"):
        StreamConfig(hop_s=0)
    with pytest.raises(ValueError, match=r"threshold.*expected a probability in \[0, 1\], got 1.5"):
        StreamConfig(threshold=1.5)
    with pytest.raises(ValueError, match="smooth"):
        StreamConfig(smooth=0)
    with pytest.raises(ValueError, match="expected mono"):
        WindowStream(FEATURES_4S, StreamConfig(), 16000).accept_waveform(np.zeros((10, 2), np.float32))


def test_worker_skips_instead_of_queueing_when_behind():
    def slow(window):
        time.sleep(0.02)
        return window

    worker = InferenceWorker(slow, max_pending=1, backpressure=False)
    for i in range(40):
        worker.submit(i)
    done = worker.close(timeout=5)
    assert worker.skipped > 0
    assert len(done) + worker.skipped == 40
    assert [w for w, _ in done] == sorted(w for w, _ in done)  # order kept, newest kept
    assert done[-1][0] == 39
    worker = InferenceWorker(slow, max_pending=1, backpressure=True)
    for i in range(10):
        worker.submit(i)
    assert [w for w, _ in worker.close(timeout=5)] == list(range(10)) and worker.skipped == 0


def test_classify_and_replay_give_identical_windows(model_4s, tmp_path):
    path = tmp_path / "rec.flac"
    write_signal(path, 12.4, 44100, seed=3, subtype="PCM_16")
    classifier = StreamingClassifier(model_4s, StreamConfig(hop_s=0.5))
    offline = classify_file(classifier, path, keep_decisions=True).decisions
    live = []
    summary = run_live(classifier, ReplaySource(path, block_s=0.013), on_decision=[live.append], backpressure=True)
    assert summary.counters.lost_samples == 0 and summary.counters.skipped == 0
    assert [d.window.end for d in live] == [d.window.end for d in offline]
    assert np.array_equal(np.stack([d.probabilities for d in live]), np.stack([d.probabilities for d in offline]))
    assert [d.smoothed_label for d in live] == [d.smoothed_label for d in offline]


def test_classify_aligns_windows_with_annotated_cycles(model_4s, tmp_path):
    path = tmp_path / "101_1b1_Al_sc_Meditron.wav"
    write_signal(path, 10.0, 16000)
    (tmp_path / "101_1b1_Al_sc_Meditron.txt").write_text("0.5\t2.9\t0\t0\n3.0\t5.9\t1\t0\n6.2\t9.8\t0\t1\n")
    result = classify_file(StreamingClassifier(model_4s), path)
    assert [m.cycle.label for m in result.cycles] == [0, 1, 2]
    assert all(m.windows > 0 for m in result.cycles)
    summary = result.summary(model_4s.info.labels)
    assert summary["cycles"] == 3 and summary["cycles_covered"] == 3
    # the tiny model flags energy in the crackle/wheeze bands: the normal cycle passes, the others are flagged
    assert [m.flag for m in result.cycles] == [False, True, True]
    assert summary["screening_sensitivity"] == summary["screening_specificity"] == 100
    bad = tmp_path / "bad.txt"
    bad.write_text("0.5 oops 0 0\n1.0 2.0 0 1\n3.0 2.0 0 0\n")
    cycles, problems = parse_annotation(bad)
    assert [c.label for c in cycles] == [2]
    assert [p.file for p in problems] == [str(bad), str(bad)]
    assert [p.code for p in problems] == ["bad_line", "bad_values"]
    assert problems[0].reason.startswith("line 1:") and problems[1].reason.startswith("line 3:")  # names the line


def test_cli_classify_and_stream_replay_agree(model_dir_8s, tmp_path):
    path = tmp_path / "rec.wav"
    write_signal(path, 11.0, 16000, seed=2, subtype="PCM_16")
    runner = CliRunner()
    res = runner.invoke(app, ["classify", str(model_dir_8s), str(path), "--jsonl", str(tmp_path / "c.jsonl")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app, ["stream", str(model_dir_8s), "--replay", str(path), "--quiet", "--jsonl", str(tmp_path / "s.jsonl")]
    )
    assert res.exit_code == 0, res.output
    c = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    s = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    cw = [e for e in c if e["type"] == "window"]
    sw = [e for e in s if e["type"] == "window"]
    assert len(cw) == len(sw) == 10
    for a, b in zip(cw, sw, strict=True):
        assert (a["start"], a["end"], a["probabilities"], a["smoothed_label"]) == (
            b["start"], b["end"], b["probabilities"], b["smoothed_label"]
        )
    assert s[-1]["type"] == "summary" and s[-1]["lost_samples"] == 0


def test_cli_rejects_bad_options_with_clear_messages(model_dir_8s, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["stream", str(model_dir_8s), "--realtime"])
    assert res.exit_code == 2 and "--realtime: expected together with --replay" in res.output
    res = runner.invoke(app, ["stream", str(tmp_path / "nope"), "--replay", "x.wav"])
    assert res.exit_code == 2 and "no such model directory" in res.output
    res = runner.invoke(app, ["classify", str(model_dir_8s), str(tmp_path / "missing.wav")])
    assert res.exit_code == 2 and "missing.wav: no such file" in res.output
    res = runner.invoke(app, ["stream", str(model_dir_8s), "--replay", "x.wav", "--record", str(tmp_path / "a.wav")])
    assert res.exit_code == 2 and "expected a path ending in .flac" in res.output


@pytest.mark.real_data
def test_classify_real_icbhi_recordings_lines_up_cycles(model_4s, icbhi_dir):
    """Real files (4 kHz and 44.1 kHz, 16- and 24-bit) with their annotations: every cycle is matched."""
    import soundfile as sf

    wavs = sorted((icbhi_dir / "ICBHI_final_database").glob("*.wav"))
    picked = {}
    for wav in wavs:
        info = sf.info(str(wav))
        picked.setdefault((info.samplerate, info.subtype), wav)
    classifier = StreamingClassifier(model_4s)
    for wav in picked.values():
        result = classify_file(classifier, wav)
        assert result.cycles, f"{wav.name}: annotations beside it were not read"
        inside = [m for m in result.cycles if m.cycle.start_s < result.duration_s - 0.1]
        assert all(m.windows > 0 for m in inside), f"{wav.name}: a cycle inside the recording has no window"
        assert result.windows >= int(result.duration_s) - 2
    path = next(iter(picked.values()))
    live = []
    run_live(classifier, ReplaySource(path), on_decision=[live.append], backpressure=True)
    offline = classify_file(classifier, path, keep_decisions=True).decisions
    assert np.array_equal(np.stack([d.probabilities for d in live]), np.stack([d.probabilities for d in offline]))


def test_realtime_replay_is_paced(model_4s, tmp_path):
    path = tmp_path / "short.wav"
    write_signal(path, 1.6, 16000)
    classifier = StreamingClassifier(model_4s, StreamConfig(min_audio_s=1.0, hop_s=0.5))
    summary = run_live(classifier, ReplaySource(path, realtime=True))
    assert summary.wall_s >= 1.5 and summary.windows == 2  # at 1.0 s and 1.5 s
    assert summary.counters.lost_samples == 0


BAD_NUMBERS = ("1e308", "inf", "nan", "-1", "0")


@pytest.mark.parametrize("value", BAD_NUMBERS)
@pytest.mark.parametrize(("command", "option"), [
    ("stream", "--duration"), ("stream", "--hop"), ("stream", "--min-audio"), ("classify", "--hop"),
    ("classify", "--min-audio"), ("report", "--hop"), ("report", "--min-audio"), ("calibrate", "--min-audio"),
])
def test_number_options_out_of_range_name_the_option_and_the_range(command, option, value, tmp_path, model_dir_8s):
    """1e308 s overflowed to an OverflowError traceback (issue 26); every time option names its range instead."""
    (tmp_path / "recs").mkdir()
    wav = tmp_path / "recs" / "a.wav"
    write_signal(wav, 3.0, 16000)
    model = str(model_dir_8s)
    args = {"stream": ["stream", model, "--replay", str(wav), "--quiet"],
            "classify": ["classify", model, str(wav)],
            "report": ["report", model, str(wav), "--out", str(tmp_path / "r")],
            "calibrate": ["calibrate", model, "--recordings", str(wav.parent), "--out", str(tmp_path / "cal")]}[command]
    res = CliRunner().invoke(app, [*args, option, value])
    assert res.exit_code == 2 and res.exception is None or isinstance(res.exception, SystemExit), res.output
    assert "Traceback" not in res.output and "OverflowError" not in res.output
    assert option in res.output and "(0, 604800] (a week)" in res.output, res.output


@pytest.mark.parametrize("smooth", [0, 10**30])
def test_smooth_is_bounded(smooth):
    with pytest.raises(ValueError, match=r"smooth \(--smooth\): expected a whole number of windows in \[1, 3600\]"):
        StreamConfig(smooth=smooth)


def test_a_hop_longer_than_the_recording_is_the_reason_given(model_dir_8s, tmp_path):
    """`--hop 100` on 20 s: no window, and `classify` and `stream` both say it is the hop (issue 26: classify
    blamed --min-audio, stream said nothing)."""
    wav = tmp_path / "a.wav"
    write_signal(wav, 20.0, 16000)
    out = tmp_path / "c.jsonl"
    res = CliRunner().invoke(app, ["classify", str(model_dir_8s), str(wav), "--hop", "100", "--jsonl", str(out)])
    (record,) = [json.loads(line) for line in out.read_text().splitlines() if '"file"' in line]
    assert record["windows"] == 0 and "--hop 100 s is too long for 20.00 s of audio" in record["note"], res.output
    assert "--min-audio" not in record["note"]
    out = tmp_path / "s.jsonl"
    res = CliRunner().invoke(app, ["stream", str(model_dir_8s), "--replay", str(wav), "--quiet", "--hop", "100",
                                   "--jsonl", str(out)])
    summary = json.loads(out.read_text().splitlines()[-1])
    assert summary["windows"] == 0 and any("--hop 100 s is too long" in w for w in summary["warnings"]), res.output
    assert "--hop 100 s is too long" in res.output
    out = tmp_path / "c2.jsonl"
    res = CliRunner().invoke(app, ["classify", str(model_dir_8s), str(wav), "--min-audio", "30", "--jsonl", str(out)])
    (record,) = [json.loads(line) for line in out.read_text().splitlines() if '"file"' in line]
    assert "too short for a decision (20.00 s < --min-audio 30 s)" in record["note"]
