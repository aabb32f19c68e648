"""Sound-card capture with sounddevice (PortAudio): device listing, rate choice, callback, reconnects.

The callback only downmixes into a preallocated scratch array, copies into the ring buffer
and counts the driver's input-overflow flags: no model or feature work, no allocation-heavy
work, no lock. A supervisor thread watches the stream; when the device disappears it closes
the stream, retries with back-off (re-scanning devices, matched by name because indices
change on replug), resumes, and records the gap in the capture buffer.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from edge_lung.config import FeatureConfig
from edge_lung.runtime.live.sources import Backoff, Source

log = logging.getLogger(__name__)

STANDARD_RATES = (44100, 48000)
"""Capture rates that resample cleanly when the device does not offer the model's own rate."""
PROBE_RATES = (8000, 11025, 16000, 22050, 32000, 44100, 48000, 88200, 96000)
STETHOSCOPE_WORDS = ("stethoscope", "steth", "littmann", "eko", "thinklabs", "ekuore", "riester", "welch")
USB_WORDS = ("usb",)


class CaptureError(OSError):
    """An audio device problem, with the device named in the message."""


def import_sounddevice() -> ModuleType:
    """sounddevice, or ImportError saying how to install PortAudio / sounddevice."""
    try:
        import sounddevice
    except OSError as exc:  # sounddevice raises OSError when the PortAudio shared library is missing
        raise ImportError(
            "PortAudio library not found, so no audio device can be opened. Install it: "
            "`sudo apt install libportaudio2` (Debian, Ubuntu, Raspberry Pi OS) or `brew install portaudio` "
            "(macOS); then retry. (`edge-lung classify` and `stream --replay/--serial` work without it.)"
        ) from exc
    except ImportError as exc:
        raise ImportError("sounddevice is not installed: pip install sounddevice") from exc
    return sounddevice


@dataclass(frozen=True)
class InputDevice:
    index: int
    name: str
    hostapi: str
    channels: int
    default_rate: int
    supported_rates: tuple[int, ...]
    likely_stethoscope: bool
    is_default: bool = False

    def rate_for(self, model_rate: int) -> int:
        """The rate to capture at for a model that wants `model_rate` (from its metadata)."""
        return choose_rate(self.supported_rates, self.default_rate, model_rate)

    @property
    def capture_rate(self) -> int:
        """The rate for a model at the default feature rate (what `edge-lung devices` lists)."""
        return self.rate_for(FeatureConfig().sample_rate)


def likely_stethoscope(name: str) -> bool:
    """USB audio class devices and known stethoscope brands (what a field worker plugs in)."""
    lowered = name.lower()
    return any(w in lowered for w in STETHOSCOPE_WORDS + USB_WORDS)


def choose_rate(supported: tuple[int, ...], default_rate: int, model_rate: int) -> int:
    """The model's rate if offered (no resampling), else 44.1 or 48 kHz (the device default first),
    else the device's default rate. `model_rate` comes from the model's metadata."""
    if model_rate in supported:
        return model_rate
    for rate in sorted((r for r in STANDARD_RATES if r in supported), key=lambda r: r != default_rate):
        return rate
    return default_rate


def list_input_devices(sd: ModuleType | None = None) -> list[InputDevice]:
    """Every device with input channels, with the rates it accepts (probed) and a stethoscope hint."""
    sd = sd or import_sounddevice()
    hostapis = sd.query_hostapis()
    try:
        default_in = sd.default.device[0]
    except (TypeError, IndexError):
        default_in = -1
    out = []
    for index, dev in enumerate(sd.query_devices()):
        channels = int(dev["max_input_channels"])
        if channels < 1:
            continue
        rates = []
        for rate in PROBE_RATES:
            try:
                sd.check_input_settings(device=index, channels=1, samplerate=rate, dtype="float32")
                rates.append(rate)
            except Exception:  # PortAudio reports unsupported settings as various error types
                continue
        hostapi = hostapis[dev["hostapi"]]["name"] if 0 <= dev["hostapi"] < len(hostapis) else "?"
        out.append(
            InputDevice(
                index=index,
                name=str(dev["name"]),
                hostapi=str(hostapi),
                channels=channels,
                default_rate=int(round(dev["default_samplerate"])),
                supported_rates=tuple(rates),
                likely_stethoscope=likely_stethoscope(str(dev["name"])),
                is_default=index == default_in,
            )
        )
    return out


def resolve_device(spec: str | int | None, devices: list[InputDevice]) -> InputDevice:
    """--device: an index, or part of a name; None picks a likely stethoscope, else the default input."""
    if not devices:
        raise CaptureError(
            "no audio input device found: plug in the stethoscope (USB) or a microphone; "
            "`edge-lung devices` lists what PortAudio sees"
        )
    names = ", ".join(f"[{d.index}] {d.name}" for d in devices)
    if spec is None or spec == "":
        for pick in ([d for d in devices if d.likely_stethoscope], [d for d in devices if d.is_default], devices):
            if pick:
                return pick[0]
    text = str(spec).strip()
    if text.lstrip("-").isdigit():
        for d in devices:
            if d.index == int(text):
                return d
        raise CaptureError(f"--device {text}: no input device with that index; input devices: {names}")
    matches = [d for d in devices if text.lower() in d.name.lower()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CaptureError(f"--device {text!r}: no input device name contains it; input devices: {names}")
    raise CaptureError(f"--device {text!r}: matches several devices ({', '.join(d.name for d in matches)}); be precise")


class SoundDeviceSource(Source):
    """Captures from a sound card into the capture buffer; survives the device being unplugged."""

    def __init__(
        self,
        device: str | int | None = None,
        rate: int | None = None,
        model_rate: int | None = None,
        block_s: float = 0.02,
        capacity_s: float = 10.0,
        watchdog_s: float = 2.0,
        backoff: Backoff | None = None,
        sd: ModuleType | None = None,
    ) -> None:
        super().__init__(capacity_s)
        self._sd = sd or import_sounddevice()
        self._spec = device
        self.device = resolve_device(device, list_input_devices(self._sd))
        self.rate = int(rate or (self.device.rate_for(model_rate) if model_rate else self.device.capture_rate))
        self.name = f"device:{self.device.name}"
        self.channels = min(self.device.channels, 2)
        self.block = max(1, int(round(block_s * self.rate)))
        self._mono = np.zeros(self.block, dtype=np.float32)
        self._make_buffer(self.rate)
        self.watchdog_s = watchdog_s
        self.backoff = backoff or Backoff()
        self._stream = None
        self._last_callback = 0.0

    def _callback(self, indata: np.ndarray, frames: int, time_info, status) -> None:
        # Runs on PortAudio's thread: copy and count, nothing else.
        if status and status.input_overflow:
            self.overflows += 1
        self._last_callback = time.monotonic()
        if indata.shape[1] == 1:
            self.buffer.write(indata[:, 0])
        elif frames <= self._mono.shape[0]:
            mono = self._mono[:frames]
            np.mean(indata, axis=1, out=mono)
            self.buffer.write(mono)
        else:  # PortAudio delivered more than the block asked for; rare, allocate once
            self.buffer.write(indata.mean(axis=1, dtype=np.float32))

    def _open(self, index: int) -> None:
        sd = self._sd
        try:
            stream = sd.InputStream(
                device=index,
                samplerate=self.rate,
                channels=self.channels,
                dtype="float32",
                blocksize=self.block,
                callback=self._callback,
            )
            stream.start()
        except Exception as exc:  # sd.PortAudioError, ValueError for bad settings
            raise CaptureError(
                f"audio device [{index}] {self.device.name}: cannot open at {self.rate} Hz ({exc})"
            ) from exc
        self._stream = stream
        self._last_callback = time.monotonic()

    def _start(self) -> None:
        self._open(self.device.index)
        self._thread = threading.Thread(target=self._supervise, name="capture-supervisor", daemon=True)
        self._thread.start()

    def _alive(self) -> bool:
        stream = self._stream
        if stream is None or not stream.active:
            return False
        return time.monotonic() - self._last_callback < self.watchdog_s

    def _supervise(self) -> None:
        while not self._stop.wait(0.1):
            if self._alive():
                continue
            log.warning("audio device %s stopped delivering audio; reconnecting", self.device.name)
            lost_at = self._last_callback  # audio stopped then, not when the watchdog noticed
            self._close_stream()
            if not self._reconnect():
                return
            secs = time.monotonic() - lost_at
            self.buffer.mark_gap(round(secs * self.rate), secs, f"audio device {self.device.name} lost")
            self.reconnects += 1
            log.warning("audio device %s back after %.1f s", self.device.name, secs)

    def _reconnect(self) -> bool:
        what = f"audio device {self.device.name}"
        return self.backoff.retry(self._reopen, self._stop, (CaptureError,), what) is not None

    def _reopen(self) -> bool:
        self._rescan()
        match = [d for d in list_input_devices(self._sd) if d.name == self.device.name]
        if not match:
            raise CaptureError(f"audio device {self.device.name}: not present")
        self._open(match[0].index)
        return True

    def _rescan(self) -> None:
        # PortAudio caches its device list at initialisation; re-initialise to see a replugged device.
        terminate, initialize = getattr(self._sd, "_terminate", None), getattr(self._sd, "_initialize", None)
        if terminate is not None and initialize is not None:
            try:
                terminate()
                initialize()
            except Exception as exc:  # PortAudioError; the next retry tries again
                raise CaptureError(f"PortAudio re-initialisation failed ({exc})") from exc

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        try:
            stream.abort()
            stream.close()
        except Exception as exc:  # a vanished device makes PortAudio fail on close; nothing left to free
            log.debug("closing lost stream: %s", exc)

    def stop(self) -> None:
        super().stop()
        self._close_stream()
        self.finished.set()
