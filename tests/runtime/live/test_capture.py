"""Sound-card capture against a fake sounddevice: listing, rates, downmix, overflows, unplug/replug, no PortAudio."""

from __future__ import annotations

import json
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from edge_lung.cli import app
from edge_lung.config import FeatureConfig
from edge_lung.runtime import StreamConfig, StreamingClassifier, run_live
from edge_lung.runtime.artifact.model_dir import OnnxClassifier
from edge_lung.runtime.live.capture import (
    CaptureError,
    SoundDeviceSource,
    choose_rate,
    import_sounddevice,
    list_input_devices,
    resolve_device,
)
from edge_lung.runtime.live.sources import Backoff
from edge_lung.testing import build_tiny_model, make_signal

RATE = 48000


class FakeStream:
    """Calls the callback from its own thread with stereo blocks (L = x + d, R = x - d), 10x real time."""

    def __init__(self, sd, device, samplerate, channels, dtype, blocksize, callback):
        assert dtype == "float32"
        self.sd, self.rate, self.channels, self.block, self.callback = sd, samplerate, channels, blocksize, callback
        self.active = False
        self._stop = threading.Event()

    def start(self):
        self.active = True
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while not self._stop.is_set() and self.sd.plugged.is_set():
            pos = self.sd.position
            x = self.sd.signal[pos : pos + self.block]
            d = np.float32(0.1)
            data = np.stack([x + d, x - d], axis=1)[:, : self.channels].astype(np.float32)
            flags = SimpleNamespace(input_overflow=self.sd.blocks == 5)
            self.sd.blocks += 1
            self.sd.position = pos + self.block
            self.callback(data, data.shape[0], None, flags)
            time.sleep(self.block / self.rate / 10)
        # unplugged: PortAudio stops calling back but the stream still looks active

    def abort(self):
        self._stop.set()

    def close(self):
        self.active = False


class FakeSoundDevice:
    PortAudioError = type("PortAudioError", (Exception,), {})

    def __init__(self, seconds=60.0):
        self.signal = make_signal(seconds, RATE)
        self.position = 0
        self.blocks = 0
        self.plugged = threading.Event()
        self.plugged.set()
        self.default = SimpleNamespace(device=(0, 1))
        self.opened = 0
        self._devices = [
            {"name": "Built-in Microphone", "hostapi": 0, "max_input_channels": 2, "default_samplerate": 48000.0,
             "rates": (44100, 48000)},
            {"name": "HDMI Output", "hostapi": 0, "max_input_channels": 0, "default_samplerate": 48000.0,
             "rates": ()},
            {"name": "USB Audio Device: Eko CORE (hw:2,0)", "hostapi": 0, "max_input_channels": 1,
             "default_samplerate": 48000.0, "rates": (8000, 16000, 48000)},
        ]

    def query_hostapis(self):
        return [{"name": "ALSA"}]

    def query_devices(self):
        return [d for d in self._devices if self.plugged.is_set() or "Built-in" in d["name"]]

    def check_input_settings(self, device, channels, samplerate, dtype):
        if samplerate not in self.query_devices()[device]["rates"]:
            raise self.PortAudioError("Invalid sample rate [PaErrorCode -9997]")

    def InputStream(self, device, **kwargs):  # noqa: N802 - sounddevice's name
        if not self.plugged.is_set():
            raise self.PortAudioError(f"Error opening InputStream: device {device} unavailable")
        self.opened += 1
        return FakeStream(self, device, **kwargs)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    model = OnnxClassifier(build_tiny_model(tmp_path_factory.mktemp("tiny"), FeatureConfig(window_s=4.0)), 1)
    return StreamingClassifier(model, StreamConfig())


def test_lists_inputs_with_rates_and_marks_usb_stethoscopes():
    devices = list_input_devices(FakeSoundDevice())
    assert [d.name for d in devices] == ["Built-in Microphone", "USB Audio Device: Eko CORE (hw:2,0)"]
    builtin, usb = devices
    assert builtin.supported_rates == (44100, 48000) and builtin.capture_rate == 48000 and builtin.is_default
    assert usb.supported_rates == (8000, 16000, 48000) and usb.capture_rate == 16000
    assert usb.likely_stethoscope and not builtin.likely_stethoscope


def test_rate_choice_prefers_the_models_16k_then_44k1_or_48k():
    assert choose_rate((16000, 48000), 48000, 16000) == 16000
    assert choose_rate((44100, 48000), 44100, 16000) == 44100
    assert choose_rate((44100, 48000), 96000, 16000) == 44100
    assert choose_rate((22050,), 22050, 16000) == 22050
    assert choose_rate((8000, 16000, 48000), 48000, 8000) == 8000  # a model at another rate: its own rate
    assert SoundDeviceSource("usb", sd=FakeSoundDevice(), model_rate=8000).rate == 8000
    assert SoundDeviceSource("usb", sd=FakeSoundDevice(), model_rate=16000).rate == 16000


def test_device_choice_and_errors():
    devices = list_input_devices(FakeSoundDevice())
    assert resolve_device(None, devices).name.startswith("USB")  # a stethoscope beats the default mic
    assert resolve_device("built-in", devices).index == 0
    assert resolve_device("2", devices).index == 2
    with pytest.raises(CaptureError, match=r"--device 7: no input device with that index; input devices: \[0\]"):
        resolve_device("7", devices)
    with pytest.raises(CaptureError, match="--device 'littmann': no input device name contains it"):
        resolve_device("littmann", devices)
    with pytest.raises(CaptureError, match="no audio input device found"):
        resolve_device(None, [])


def test_capture_downmixes_counts_overflows_and_feeds_the_live_path(classifier):
    sd = FakeSoundDevice()
    source = SoundDeviceSource("built-in", sd=sd)
    captured, decisions = [], []
    summary = run_live(
        classifier, source, on_decision=[decisions.append], on_audio=[lambda b, r: captured.append(b)], duration_s=4.0
    )
    audio = np.concatenate(captured)
    assert summary.input_rate == RATE and audio.shape[0] == 4 * RATE
    np.testing.assert_allclose(audio, sd.signal[: audio.shape[0]], atol=1e-6)  # (L + R) / 2
    assert summary.counters.overflows == 1 and summary.counters.lost_samples == 0
    assert [d.window.end_s for d in decisions] == [2.0, 3.0, 4.0]
    assert decisions[-1].counters["overflows"] == 1


def test_unplugged_device_is_retried_with_backoff_and_the_gap_recorded(classifier):
    sd = FakeSoundDevice()
    source = SoundDeviceSource(None, sd=sd, watchdog_s=0.2, backoff=Backoff(0.05, 0.2))
    assert source.rate == 16000  # the USB stethoscope offers the model's rate

    def unplug_then_replug():
        while sd.position < 2 * 16000:
            time.sleep(0.005)
        sd.plugged.clear()
        time.sleep(0.8)
        sd.plugged.set()

    threading.Thread(target=unplug_then_replug, daemon=True).start()
    decisions, gaps = [], []
    summary = run_live(classifier, source, on_decision=[decisions.append], on_gap=[gaps.append], duration_s=5.0)
    assert summary.reconnects == 1 and sd.opened >= 2
    assert summary.counters.gaps == 1 and summary.counters.gap_s > 0.7
    gap = source.buffer.gap_log[0]
    # The device was away for the 0.8 s this test held it unplugged, plus the watchdog (0.2 s) and backoff
    # (<= 0.2 s) reaction: between 0.8 s and 2 s, counted at the stethoscope's 16 kHz (0.8 s at the 48 kHz
    # of the built-in microphone would already be 38400 samples).
    assert "lost" in gap.reason and 0.8 <= gap.seconds < 2.0
    assert 0.8 * 16000 <= gap.samples < 2.0 * 16000
    assert any(d.window.segment == 1 for d in decisions)  # decisions resumed after the gap
    assert len(gaps) == 1 and not gaps[0]["filled_with_silence"] and gaps[0]["seconds"] > 0.7


def test_missing_portaudio_is_a_clear_message(monkeypatch):
    class NoPortAudio:
        def find_spec(self, name, path=None, target=None):
            if name == "sounddevice":
                raise OSError("PortAudio library not found")
            return None

    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [NoPortAudio(), *sys.meta_path])
    with pytest.raises(ImportError, match="apt install libportaudio2"):
        import_sounddevice()
    res = CliRunner().invoke(app, ["devices"])
    assert res.exit_code == 2 and "PortAudio library not found" in res.output


def test_cli_devices_and_stream_from_a_device(monkeypatch, tmp_path):
    import edge_lung.runtime.live.capture as capture

    sd = FakeSoundDevice()
    monkeypatch.setattr(capture, "import_sounddevice", lambda: sd)
    runner = CliRunner()
    res = runner.invoke(app, ["devices"])
    assert res.exit_code == 0, res.output
    assert "Eko CORE" in res.output and "likely" in res.output and "HDMI" not in res.output
    model_dir = build_tiny_model(tmp_path / "model", FeatureConfig(window_s=4.0))
    args = ["stream", str(model_dir), "--device", "eko", "--duration", "3", "--quiet"]
    res = runner.invoke(app, [*args, "--jsonl", str(tmp_path / "e.jsonl"), "--record", str(tmp_path / "r.flac")])
    assert res.exit_code == 0, res.output
    events = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert [e["end_s"] for e in events if e["type"] == "window"] == [2.0, 3.0]
    assert events[-1]["type"] == "summary" and events[-1]["input_rate"] == 16000
    import soundfile as sf

    assert sf.info(str(tmp_path / "r.flac")).frames == 3 * 16000
