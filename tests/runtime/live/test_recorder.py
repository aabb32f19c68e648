"""--record: the FLAC file holds the audio up to the last flush after kill -9, and all of it after a clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf

from edge_lung.config import FeatureConfig
from edge_lung.runtime import StreamConfig, StreamingClassifier
from edge_lung.runtime.artifact.model_dir import OnnxClassifier
from edge_lung.runtime.commands.session import StreamOptions, stream_session
from edge_lung.runtime.live.recorder import FlacRecorder
from edge_lung.testing import build_tiny_model, write_signal

CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from edge_lung.runtime.live.recorder import FlacRecorder

    rate = 16000
    signal = (0.4 * np.sin(np.arange(rate * 120) * 0.013)).astype(np.float32)
    rec = FlacRecorder(sys.argv[1], rate, flush_s=0.25)
    pos = 0
    while pos < 3 * rate:  # a capture loop: 20 ms blocks, 4x faster than real time
        rec.write(signal[pos : pos + 320])
        pos += 320
        time.sleep(0.005)
    print(pos, rec.durable_samples, flush=True)
    time.sleep(600)  # still "recording" when the power goes
    """
)


def test_recording_survives_kill_9(tmp_path):
    path = tmp_path / "crash.flac"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        written, durable = map(int, line.split())
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert written >= 3 * 16000, "the recording child did not get going"
    data, rate = sf.read(str(path), dtype="float32")  # opens like any finished file
    assert rate == 16000
    assert durable <= data.shape[0] <= written
    assert written - data.shape[0] <= 16000 + 4096 + 320 * 2  # at most ~1 s (flush period + one FLAC block) lost
    expected = (0.4 * np.sin(np.arange(data.shape[0]) * 0.013)).astype(np.float32)
    np.testing.assert_allclose(data, expected, atol=1.0 / 32768)


def test_clean_close_keeps_every_sample(tmp_path):
    path = tmp_path / "clean.flac"
    x = (0.3 * np.cos(np.arange(50_000) * 0.01)).astype(np.float32)
    with FlacRecorder(path, 44100) as rec:
        for pos in range(0, x.shape[0], 441):
            rec.write(x[pos : pos + 441])
        rec.flush()
        assert rec.durable_samples > 40_000
    data, rate = sf.read(str(path), dtype="float32")
    assert rate == 44100 and data.shape == x.shape
    np.testing.assert_allclose(data, x, atol=1.0 / 32768)


def test_recorder_errors_name_the_path(tmp_path):
    with pytest.raises(ValueError, match=r"--record .*a\.wav: expected a path ending in \.flac"):
        FlacRecorder(tmp_path / "a.wav", 16000)
    with pytest.raises(ValueError, match="does not exist"):
        FlacRecorder(tmp_path / "no" / "a.flac", 16000)
    with FlacRecorder(tmp_path / "r.flac", 16000) as rec, pytest.raises(ValueError, match="rate changed"):
        rec.write(np.zeros(10, np.float32), 48000)


def test_stream_record_writes_the_raw_captured_audio(tmp_path):
    model = OnnxClassifier(build_tiny_model(tmp_path / "model", FeatureConfig(window_s=4.0)), 1)
    src = tmp_path / "in.wav"
    x = write_signal(src, 5.0, 48000, subtype="PCM_16")
    out = tmp_path / "rec.flac"
    opts = StreamOptions(replay=src, record=out, display=False, jsonl=tmp_path / "e.jsonl")
    summary = stream_session(StreamingClassifier(model, StreamConfig()), opts)
    assert summary.windows == 4
    data, rate = sf.read(str(out), dtype="float32")
    assert rate == 48000 and np.array_equal(data, x)  # raw capture rate, every sample, bit-exact for PCM16 input


def test_record_rolls_over_to_a_new_file_when_the_input_rate_changes(tmp_path):
    from contextlib import ExitStack

    from edge_lung.runtime.commands.session import _LazyRecorder

    path = tmp_path / "session.flac"
    a = np.random.default_rng(0).uniform(-0.5, 0.5, 16000).astype(np.float32)
    b = np.random.default_rng(1).uniform(-0.5, 0.5, 8000).astype(np.float32)
    with ExitStack() as stack:
        record = _LazyRecorder(path, stack)
        record(a, 16000)
        record(b, 8000)  # the firmware switched rates: no exception, a second file
    first, rate_a = sf.read(path, dtype="float32")
    second, rate_b = sf.read(tmp_path / "session-2.flac", dtype="float32")
    assert (rate_a, rate_b) == (16000, 8000)
    np.testing.assert_allclose(first, a, atol=1e-4)
    np.testing.assert_allclose(second, b, atol=1e-4)
