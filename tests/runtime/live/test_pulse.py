"""Live capture through a real audio stack (issue #15): PulseAudio null sink -> ALSA `pulse` -> PortAudio.

A private PulseAudio daemon (tests/runtime/live/pulse_daemon.py) plays real ICBHI recordings with `paplay`
into a null sink; `edge-lung stream --device pulse` captures the sink's monitor in real time.
Nothing is faked: the clock, the driver, PortAudio's callback thread and the reconnect logic
are the ones a field worker's laptop uses. Needs the Debian packages in `pulse_daemon.APT_PACKAGES`
(`make test` installs them when run as root) and EDGE_LUNG_ICBHI_DIR; skips with the command otherwise.

How the capture is checked against the file: the capture starts before the playback, so the
recording is `silence + file + silence`. The offset is found by cross-correlation, then the
recording must equal the played file sample for sample (to 1 LSB: libsndfile writes floats to
PCM16 with a 32767 scale and reads them back with 32768), which no lost, duplicated or shifted
block survives. PulseAudio zeroes the first block of a new playback stream on a running sink's
monitor (14-20 ms measured here), so every played file starts with `LEAD_S` of silence. Then
`classify` runs on the played file placed at the measured offset (the same windows as the
capture's) and must give the same probabilities (to `EXACT_TOL`) and decisions for every window.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_lung.audio import load_audio
from edge_lung.testing import build_tiny_model

sys.path.insert(0, str(Path(__file__).parent))
from pulse_daemon import INSTALL_COMMAND, PulseDaemon, missing_packages  # noqa: E402

pytestmark = pytest.mark.real_data

RATE = 16000
HOP_S, MIN_AUDIO_S = 1.0, 2.0
LEAD_S = 0.25  # silence before each played file: PulseAudio zeroes the start of a playback on the monitor
EXACT_TOL = 1e-5  # onnxruntime on identical input, in another process
LONG_FILE = "166_1p1_Al_sc_Meditron.wav"  # 62 s at 4 kHz: 60 s of it are played
SHORT_FILE = "201_1b1_Ar_sc_Meditron.wav"  # 20 s at 44.1 kHz
THRESHOLD = 0.375  # the soft tiny model's P(abnormal) on these recordings hovers around it


@pytest.fixture(scope="module")
def pulse_daemon(tmp_path_factory: pytest.TempPathFactory):
    """A private PulseAudio daemon, stopped at the end of the module whatever happens."""
    missing = missing_packages()
    if missing:
        pytest.skip(f"real-audio tests need {', '.join(missing)}: run `{INSTALL_COMMAND}` (or `make test` as root)")
    daemon = PulseDaemon(tmp_path_factory.mktemp("pulse"))
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def pulse(pulse_daemon: PulseDaemon):
    """The daemon with no sink; every sink a test loads is removed after it."""
    yield pulse_daemon
    pulse_daemon.unload_sinks()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("model"), scale=0.03)


def _recording(icbhi_dir: Path, name: str) -> Path:
    found = sorted(icbhi_dir.rglob(name))
    if not found:
        pytest.skip(f"{name} is not in EDGE_LUNG_ICBHI_DIR={icbhi_dir}")
    return found[0]


def _play_file(src: Path, rate: int, seconds: float, out: Path) -> np.ndarray:
    """LEAD_S of silence, then the recording resampled as `classify` resamples it, as 16-bit PCM;
    returns what a reader gets back."""
    wave, _ = load_audio(src, rate)
    pcm = np.clip(np.round(wave[: int(seconds * rate)] * 32768), -32768, 32767).astype(np.int16)
    pcm = np.concatenate([np.zeros(int(LEAD_S * rate), dtype=np.int16), pcm])
    sf.write(out, pcm, rate, subtype="PCM_16")
    return pcm.astype(np.float32) / 32768


def _stream_cli(pulse: PulseDaemon, sink: str, model: Path, out: Path, seconds: float) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-c",
        "from edge_lung.cli import main; main()",
        "stream",
        str(model),
        "--device",
        "pulse",
        "--quiet",
        "--jsonl",
        str(out / "events.jsonl"),
        "--record",
        str(out / "rec.flac"),
        "--duration",
        str(seconds),
        "--threshold",
        str(THRESHOLD),
        "--hop",
        str(HOP_S),
        "--min-audio",
        str(MIN_AUDIO_S),
    ]
    return subprocess.Popen(
        cmd, env=pulse.client_env(sink), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """Until the stream has opened its recording (it is capturing) or died."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"stream did not start capturing: {proc.communicate()[0] if proc.poll() else ''}")
        time.sleep(0.05)


def _capture(pulse, sink, model, play: Path, out: Path, seconds: float, during=None) -> tuple[list, dict, str]:
    """Run `edge-lung stream` on the sink's monitor while `play` is played into the sink."""
    proc = _stream_cli(pulse, sink, model, out, seconds)
    try:
        _wait_for(out / "rec.flac", proc)
        time.sleep(0.5)  # the capture is running before the first sample is played
        player = pulse.play(play, sink)
        if during is not None:
            during()
        output, _ = proc.communicate(timeout=seconds + 120)
        player.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, output
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    summary = [e for e in events if e["type"] == "summary"]
    assert len(summary) == 1, output
    return events, summary[0], output


def _offset(rec: np.ndarray, played: np.ndarray, rate: int) -> int:
    """Where `played` starts in `rec`: normalised cross-correlation of 2 s of it (from 1 s in) with the
    recording's first 15 s (unnormalised, a louder stretch elsewhere can win)."""
    from scipy.signal import correlate

    part = played[rate : 3 * rate].astype(np.float64)
    search = rec[: 15 * rate].astype(np.float64)
    energy = np.concatenate([[0.0], np.cumsum(search**2)])
    norm = np.sqrt(energy[part.shape[0] :] - energy[: -part.shape[0]]) + 1e-12
    lag = int(np.argmax(correlate(search, part, mode="valid", method="fft") / norm)) - rate
    assert lag >= 0, f"the playback starts before the capture (lag {lag}): the capture missed samples"
    return lag


def _assert_same_audio(rec: np.ndarray, played: np.ndarray, rate: int) -> int:
    offset = _offset(rec, played, rate)
    got = rec[offset : offset + played.shape[0]]
    assert got.shape[0] == played.shape[0], "the recording ends before the playback: samples lost"
    diff = np.abs(got - played)
    bad = np.flatnonzero(diff > 1.5 / 32768)
    assert bad.size == 0, (
        f"capture differs from the played file from {bad[0] / rate:.3f} s into it "
        f"({bad.size} samples, max {diff.max():.4f}): samples were lost or repeated"
    )
    return offset


def _classify(model: Path, audio: np.ndarray, rate: int, out: Path) -> list[dict]:
    path = out / "reference.wav"
    sf.write(path, audio, rate, subtype="FLOAT")
    cmd = [
        sys.executable,
        "-c",
        "from edge_lung.cli import main; main()",
        "classify",
        str(model),
        str(path),
        "--jsonl",
        str(out / "classify.jsonl"),
        "--threshold",
        str(THRESHOLD),
        "--hop",
        str(HOP_S),
        "--min-audio",
        str(MIN_AUDIO_S),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    return [json.loads(line) for line in (out / "classify.jsonl").read_text().splitlines()]


def _assert_agrees_with_classify(windows: list[dict], reference: list[dict]) -> dict:
    """Same windows (by their end sample), same probabilities (to EXACT_TOL) and decisions."""
    ref = {(w["end"], w["final"]): w for w in reference if w["type"] == "window"}
    got = {(w["end"], w["final"]): w for w in windows}
    assert sorted(got) == sorted(ref), "stream and classify made different windows"
    worst, flags_compared = 0.0, 0
    for key, w in got.items():
        r = ref[key]
        if w["p_abnormal"] is None or r["p_abnormal"] is None:  # the quality gate's verdict, no class
            assert w["label"] == r["label"], f"window ending at {w['end_s']} s: {w['label']} vs {r['label']}"
            flags_compared += 1
            continue
        diff = max(abs(w["probabilities"][k] - r["probabilities"][k]) for k in r["probabilities"])
        assert diff <= EXACT_TOL, f"window ending at {w['end_s']} s: probabilities differ by {diff:.2e}"
        worst = max(worst, diff)
        if abs(r["p_abnormal"] - THRESHOLD) > EXACT_TOL:
            assert w["flag"] == r["flag"] and w["label"] == r["label"], f"window ending at {w['end_s']} s"
            flags_compared += 1
    return {"windows": len(got), "decisions_compared": flags_compared, "max_diff": worst}


def _assert_every_hop(windows: list[dict], samples: int, rate: int) -> None:
    ends = [w["end"] for w in windows if not w["final"]]
    hop, first = int(HOP_S * rate), int(MIN_AUDIO_S * rate)
    assert ends == list(range(first, samples + 1, hop)), f"windows at {ends[:5]}...: expected one every {HOP_S} s"


def test_live_capture_of_a_real_recording_loses_nothing_and_agrees_with_classify(pulse, model, icbhi_dir, tmp_path):
    played = _play_file(_recording(icbhi_dir, LONG_FILE), RATE, 60.0, tmp_path / "play.wav")
    pulse.load_null_sink("steth", RATE)
    events, summary, output = _capture(pulse, "steth", model, tmp_path / "play.wav", tmp_path, 63.0)
    for counter in ("lost_samples", "overflows", "gaps", "skipped", "reconnects"):
        assert summary[counter] == 0, f"{counter}: {summary}\n{output}"
    assert summary["input_rate"] == RATE and summary["audio_s"] == 63.0
    rec, rec_rate = sf.read(tmp_path / "rec.flac", dtype="float32")
    assert rec_rate == RATE and rec.shape[0] == 63 * RATE
    offset = _assert_same_audio(rec, played, RATE)
    windows = [e for e in events if e["type"] == "window"]
    _assert_every_hop(windows, rec.shape[0], RATE)
    reference = np.zeros_like(rec)
    reference[offset : offset + played.shape[0]] = played
    stats = _assert_agrees_with_classify(windows, _classify(model, reference, RATE, tmp_path))
    print(f"offset {offset / RATE:.3f} s; {stats}")
    assert stats["decisions_compared"] >= len(windows) // 2


def _unplug_sink(pulse: PulseDaemon, sink: str, module: list[int], rate: int):
    def during() -> None:
        time.sleep(4.0)
        pulse.unload(module[0])
        time.sleep(3.0)
        module[0] = pulse.load_null_sink(sink, rate)

    return during


def _kill_daemon(pulse: PulseDaemon, sink: str, rate: int):
    def during() -> None:
        time.sleep(4.0)
        pulse.kill()
        time.sleep(3.0)
        pulse.start()
        pulse.load_null_sink(sink, rate)

    return during


@pytest.mark.parametrize("unplug", ["unload the sink", "kill the daemon"])
def test_unplug_mid_stream_is_a_counted_gap_and_a_reconnect_and_the_flac_stays_valid(
    pulse, model, icbhi_dir, tmp_path, unplug
):
    _play_file(_recording(icbhi_dir, SHORT_FILE), RATE, 20.0, tmp_path / "play.wav")
    sink = "steth_unplug" if unplug == "unload the sink" else "steth_kill"
    module = [pulse.load_null_sink(sink, RATE)]
    during = _unplug_sink(pulse, sink, module, RATE) if unplug == "unload the sink" else _kill_daemon(pulse, sink, RATE)
    events, summary, output = _capture(pulse, sink, model, tmp_path / "play.wav", tmp_path, 15.0, during)
    assert summary["stopped_by"] == "duration" and summary["audio_s"] == 15.0, output
    assert summary["reconnects"] >= 1 and summary["gaps"] >= 1, summary
    gaps = [e for e in events if e["type"] == "gap"]
    assert len(gaps) == summary["gaps"] and all("lost" in g["reason"] for g in gaps), gaps
    assert summary["gap_s"] >= 2.0, f"a 3 s outage was counted as {summary['gap_s']} s"
    info = sf.info(tmp_path / "rec.flac")
    rec, _ = sf.read(tmp_path / "rec.flac", dtype="float32")  # decodes to the end: a valid FLAC
    assert info.samplerate == RATE and rec.shape[0] == info.frames == 15 * RATE
    assert np.abs(rec).max() > 0.01, "the recording holds no audio"


class _Only48k:
    """The real sounddevice module, except that the device accepts 48 kHz only (PortAudio's rate probe).

    The ALSA `pulse` device accepts every rate (PulseAudio resamples), so a 48-kHz-only USB
    stethoscope is imitated at the probe; the stream itself is real and runs at 48 kHz."""

    def __init__(self, sd) -> None:
        self._sd = sd

    def __getattr__(self, name):
        return getattr(self._sd, name)

    def check_input_settings(self, **kwargs):
        if kwargs.get("samplerate") != 48000:
            raise ValueError("Invalid sample rate")
        return self._sd.check_input_settings(**kwargs)


def test_a_48k_only_device_is_captured_at_48k_and_resampled(pulse, model, icbhi_dir, tmp_path, monkeypatch):
    from edge_lung.runtime.commands.session import StreamOptions, load_classifier, stream_session
    from edge_lung.runtime.live.capture import SoundDeviceSource, import_sounddevice
    from edge_lung.runtime.live.stream import StreamConfig

    played = _play_file(_recording(icbhi_dir, SHORT_FILE), 48000, 20.0, tmp_path / "play.wav")
    pulse.load_null_sink("steth48", 48000)
    for key, value in pulse.client_env("steth48").items():
        monkeypatch.setenv(key, value)
    source = SoundDeviceSource("pulse", model_rate=RATE, sd=_Only48k(import_sounddevice()))
    assert source.rate == 48000
    classifier = load_classifier(model, StreamConfig(HOP_S, MIN_AUDIO_S, 5, THRESHOLD), None)
    opts = StreamOptions(
        device="pulse", jsonl=tmp_path / "events.jsonl", record=tmp_path / "rec.flac", duration_s=22.0, display=False
    )
    player: list[subprocess.Popen] = []

    def play_once_capturing() -> None:  # the capture is running before the first sample is played
        deadline = time.monotonic() + 60
        while source.buffer.ring.end < 24000 and time.monotonic() < deadline:
            time.sleep(0.01)
        player.append(pulse.play(tmp_path / "play.wav", "steth48"))

    starter = threading.Thread(target=play_once_capturing, daemon=True)
    starter.start()
    try:
        summary = stream_session(classifier, opts, source=source)
    finally:
        starter.join(timeout=60)
        for p in player:
            p.wait(timeout=30)
    assert summary.input_rate == 48000 and summary.counters.lost_samples == 0 and summary.counters.gaps == 0
    rec, rec_rate = sf.read(tmp_path / "rec.flac", dtype="float32")
    assert rec_rate == 48000
    offset = _assert_same_audio(rec, played, 48000)
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    windows = [e for e in events if e["type"] == "window"]
    assert {w["sample_rate"] for w in windows} == {RATE}, "windows are not at the model's rate"
    _assert_every_hop(windows, round(rec.shape[0] * RATE / 48000), RATE)
    reference = np.zeros_like(rec)
    reference[offset : offset + played.shape[0]] = played
    _assert_agrees_with_classify(windows, _classify(model, reference, 48000, tmp_path))
