"""Command glue (`edge_lung.runtime.commands.session`): SIGTERM stops `stream` as Ctrl-C does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf

from edge_lung.testing import build_tiny_model, write_signal

CLI = "from edge_lung.cli import main; main()"


def wait_for_windows(jsonl: Path, proc: subprocess.Popen, count: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if jsonl.is_file() and jsonl.read_text().count('"type":"window"') >= count:
            return
        time.sleep(0.1)
    pytest.fail(f"stream wrote no {count} windows in {timeout_s} s (exit {proc.poll()})")


def test_sigterm_during_stream_record_finalises_like_ctrl_c(tmp_path):
    """systemd stops a service with SIGTERM: the FLAC holds every block the session counted, the JSON lines end
    with the summary and the closing line is printed (issue 26: exit 143, no summary, the FLAC 0.5 s short)."""
    model = build_tiny_model(tmp_path / "model")
    write_signal(tmp_path / "long.wav", 60.0, 16000)
    jsonl, flac = tmp_path / "events.jsonl", tmp_path / "rec.flac"
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, "stream", str(model), "--replay", str(tmp_path / "long.wav"), "--realtime",
         "--quiet", "--record", str(flac), "--jsonl", str(jsonl), "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        wait_for_windows(jsonl, proc, 2)
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped: interrupted" in err
    summary = json.loads(jsonl.read_text().splitlines()[-1])
    assert summary["type"] == "summary" and summary["stopped_by"] == "interrupted"
    info = sf.info(str(flac))
    assert abs(info.frames / info.samplerate - summary["audio_s"]) < 1e-3, (info.frames, summary["audio_s"])
