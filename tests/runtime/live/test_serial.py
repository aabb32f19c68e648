"""Serial PCM link: encoder (Python and C), resynchronising reader, virtual stethoscope on a pty, --serial."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge_lung.config import FeatureConfig
from edge_lung.runtime import StreamConfig, StreamingClassifier, run_live
from edge_lung.runtime.artifact.model_dir import OnnxClassifier
from edge_lung.runtime.live.serial import HEADER, FrameReader, encode_frame, float_to_pcm16, open_serial
from edge_lung.runtime.live.sources import Backoff, SerialSource
from edge_lung.testing import Impairments, PlayLog, VirtualStethoscope, build_tiny_model, frame_stream, make_signal

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = "a5 5a c3 3c 01 00 07 00 00 00 80 3e 00 00 02 00 e8 03 18 fc ae 32 bd 4d"


def test_encoder_matches_the_documented_example():
    frame = encode_frame(7, 16000, np.array([1000, -1000], dtype=np.int16))
    assert frame.hex(" ") == EXAMPLE
    assert EXAMPLE.upper().replace(" ", "") in (ROOT / "firmware_host" / "PROTOCOL.md").read_text().replace(" ", "")
    assert HEADER.size == 16


def test_c_reference_encoder_matches_python(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler on PATH to build firmware_host/encode_example.c")
    exe = tmp_path / "encode_example"
    subprocess.run(
        [cc, "-std=c99", "-Wall", "-Werror", "-o", str(exe), str(ROOT / "firmware_host" / "encode_example.c")],
        check=True,
    )
    assert subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.strip() == EXAMPLE


def test_encoder_rejects_bad_frames():
    with pytest.raises(ValueError, match="expected 1..4096 mono samples"):
        encode_frame(0, 16000, np.zeros(5000, np.int16))
    with pytest.raises(ValueError, match="expected a sample rate"):
        encode_frame(0, 0, np.zeros(5, np.int16))


@pytest.mark.parametrize("seed", range(6))
def test_reader_resynchronises_and_counts_every_lost_frame(seed):
    rng = np.random.default_rng(seed)
    audio = (0.5 * rng.standard_normal(16000 * 3)).clip(-1, 1).astype(np.float32)
    log = PlayLog()
    impair = Impairments(drop=0.08, corrupt=0.08, truncate=0.08, garbage=0.15, seed=seed)
    frame_samples = 64 + 37 * seed
    data = b"".join(d for _, d, _ in frame_stream(audio, 16000, frame_samples, impair, 2**32 - 40, log))
    reader = FrameReader()
    frames = []
    step = 1 + 211 * seed  # byte chunks of every size, down to one byte at a time
    for pos in range(0, len(data), step):
        frames += reader.feed(data[pos : pos + step])
    frames += reader.flush()
    assert len(log.damaged) > 0
    assert [f.sequence for f in frames] == log.intact  # every good frame, in order, across the wrap
    assert reader.stats.lost_frames == len(log.damaged)  # every lost frame counted
    pcm = float_to_pcm16(audio)
    for f in frames:
        k = (f.sequence - (2**32 - 40)) % 2**32
        assert np.array_equal(f.samples, pcm[k * frame_samples : (k + 1) * frame_samples])


def test_reader_reports_sender_restart():
    reader = FrameReader()
    a = encode_frame(100, 16000, np.ones(4, np.int16))
    b = encode_frame(0, 16000, np.ones(4, np.int16))
    frames = reader.feed(a + b)
    assert frames[1].restart and reader.stats.restarts == 1 and reader.stats.lost_frames == 0


def test_impairments_are_validated():
    with pytest.raises(ValueError, match=r"Impairments.drop: expected a probability in \[0, 1\], got 2"):
        Impairments(drop=2)


def _read_port(steth: VirtualStethoscope, idle_s: float = 0.5) -> tuple[FrameReader, list]:
    reader, frames = FrameReader(), []
    ser = open_serial(steth.open(start=False), timeout=0.05)  # connect before the first frame is sent
    steth.start()
    last = time.monotonic()
    try:
        while time.monotonic() - last < idle_s or not steth.done.is_set():
            data = ser.read(max(1, ser.in_waiting))
            if data:
                last = time.monotonic()
                frames += reader.feed(data)
    finally:
        ser.close()
    return reader, frames + reader.flush()


def test_virtual_stethoscope_over_a_pty_with_corruption():
    audio = make_signal(4.0, 16000)
    impair = Impairments(drop=0.05, corrupt=0.05, truncate=0.05, garbage=0.1, seed=11)
    steth = VirtualStethoscope(audio, 16000, frame_samples=160, impair=impair)
    try:
        reader, frames = _read_port(steth)
    finally:
        steth.close()
    assert steth.error is None
    assert [f.sequence for f in frames] == steth.log.intact
    assert reader.stats.lost_frames == len(steth.log.damaged) > 0
    assert reader.stats.crc_errors > 0


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    model = OnnxClassifier(build_tiny_model(tmp_path_factory.mktemp("tiny"), FeatureConfig(window_s=4.0)), 1)
    return StreamingClassifier(model, StreamConfig())


def test_stream_serial_through_the_live_path(classifier):
    audio = make_signal(8.0, 16000)
    impair = Impairments(drop=0.02, corrupt=0.02, seed=5)
    decisions = []
    steth = VirtualStethoscope(audio, 16000, frame_samples=256, impair=impair)
    source = SerialSource(steth.open(start=False))
    source.start()
    steth.start()
    stop = threading.Event()
    safety = threading.Timer(30, stop.set)  # never hang the suite if frames stop coming
    safety.start()
    try:
        gaps = []
        summary = run_live(
            classifier, source, [decisions.append], on_gap=[gaps.append], backpressure=True, duration_s=8.0, stop=stop
        )
    finally:
        safety.cancel()
        steth.close()
    lost = len(steth.log.damaged)
    assert source.lost_frames == lost > 0
    assert summary.counters.gaps == len({s for s in steth.log.damaged if s - 1 not in steth.log.damaged})
    assert summary.counters.gap_s == pytest.approx(lost * 256 / 16000)
    assert len(gaps) == summary.counters.gaps and all(g["filled_with_silence"] for g in gaps)  # short gaps
    assert sum(g["input_samples"] for g in gaps) == lost * 256 and "serial frame" in gaps[0]["reason"]
    assert summary.stopped_by == "duration"
    assert [d.window.end_s for d in decisions if not d.window.final] == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]


@pytest.mark.slow
def test_serial_port_lost_and_back_is_retried_and_recorded_as_gap(classifier, tmp_path):
    link = tmp_path / "ttyVS"  # a stable port name, as udev gives a replugged stethoscope
    first = VirtualStethoscope(make_signal(3.0, 16000), 16000, realtime=True)
    os.symlink(first.open(start=False), link)
    source = SerialSource(str(link), backoff=Backoff(0.1, 0.4))
    source.start()
    first.start()
    decisions = []
    second = VirtualStethoscope(make_signal(4.0, 16000), 16000, realtime=True, loop=True)

    def replug():
        first.done.wait(10)
        time.sleep(0.2)
        first.close()  # cable pulled
        time.sleep(0.6)
        port = second.open()
        os.remove(link)
        os.symlink(port, link)

    threading.Thread(target=replug, daemon=True).start()
    stop = threading.Event()
    safety = threading.Timer(30, stop.set)
    safety.start()
    try:
        summary = run_live(classifier, source, on_decision=[decisions.append], duration_s=5.5, stop=stop)
    finally:
        safety.cancel()
        second.close()
    assert summary.stopped_by == "duration"
    assert summary.reconnects == 1
    assert summary.counters.gaps >= 1 and summary.counters.gap_s > 0.5
    assert any(d.window.segment == 1 for d in decisions)  # windowing resumed after the outage


def test_virtual_stethoscope_launcher_script(tmp_path):
    import serial
    import soundfile as sf

    wav = tmp_path / "v.wav"
    sf.write(str(wav), make_signal(3.0, 16000), 16000, subtype="PCM_16")
    script = ROOT / "firmware_host" / "virtual_stethoscope.py"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(wav), "--fast", "--frame-samples", "128"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = proc.stdout.readline().strip()
        assert port.startswith("/dev/"), proc.stderr.read()
        ser = open_serial(port)
        reader, frames = FrameReader(), []
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                frames += reader.feed(ser.read(max(1, ser.in_waiting)))
            except serial.SerialException:  # the script closed its pty: the "device" went away
                break
        ser.close()
    finally:
        proc.kill()
        proc.wait()
    assert frames and reader.stats.crc_errors == 0 and reader.stats.lost_frames == 0
    assert frames[-1].sequence == 3 * 16000 // 128 - 1 + (1 if 3 * 16000 % 128 else 0)
