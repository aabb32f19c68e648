"""Where captured samples come from: the hand-off buffer and the file and serial sources.

Every source writes mono float32 at its own rate into a `CaptureBuffer` (a `RingBuffer`
plus gap markers) from its own thread or callback, and never does model or feature work.
The pipeline in `edge_lung.runtime.live.runner` reads the buffer. The sound-card source lives in
`edge_lung.runtime.live.capture`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from edge_lung.audio import AudioError, audio_info, to_mono
from edge_lung.runtime.live.ring import RingBuffer
from edge_lung.runtime.live.serial import FrameReader, open_serial

log = logging.getLogger(__name__)
_EMPTY = np.zeros(0, dtype=np.float32)
T = TypeVar("T")


@dataclass(frozen=True)
class Gap:
    """A discontinuity in the captured audio, at absolute capture index `position`."""

    position: int
    samples: int  # missing samples at the input rate (0 if unknown)
    seconds: float
    reason: str
    new_rate: int | None = None  # the input rate after the gap, if it changed


class CaptureBuffer:
    """Ring buffer plus gap markers: one writer (source), one reader (pipeline), no lock."""

    def __init__(self, capacity: int) -> None:
        self.ring = RingBuffer(capacity)
        self._gaps: deque[Gap] = deque()  # deque append/popleft are atomic under the GIL
        self.gap_log: deque[Gap] = deque(maxlen=100)

    def write(self, block: np.ndarray) -> None:
        self.ring.write(block)

    def mark_gap(self, samples: int, seconds: float, reason: str, new_rate: int | None = None) -> None:
        """Record a discontinuity before the next sample written."""
        gap = Gap(self.ring.end, int(samples), float(seconds), reason, new_rate)
        self._gaps.append(gap)
        self.gap_log.append(gap)

    def read(self, max_samples: int) -> tuple[np.ndarray, Gap | None]:
        """Unread samples up to the next gap marker, or the marker itself once reached.

        If the reader was lapped, the samples it lost are skipped (see `ring.lost`) and a
        marker inside them is delivered late, right after the surviving samples.
        """
        end = self.ring.end  # first: the writer queues a marker before the samples after it
        pos = self.ring.read_position
        if self._gaps and self._gaps[0].position <= pos:
            return _EMPTY, self._gaps.popleft()
        limit = min(max_samples, end - pos)
        if self._gaps:
            limit = min(limit, self._gaps[0].position - pos)
        return self.ring.read(limit), None

    @property
    def pending(self) -> bool:
        return self.ring.available > 0 or bool(self._gaps)


def join_thread(thread: threading.Thread | None, timeout: float = 2.0) -> None:
    """Wait up to `timeout` s for a worker thread that was told to stop (none, or the caller itself: no wait)."""
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout=timeout)


class Backoff:
    """Retry delays: initial, doubling up to maximum (seconds)."""

    def __init__(self, initial: float = 0.5, maximum: float = 8.0) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(f"Backoff: expected 0 < initial <= maximum, got {initial} / {maximum}")
        self.initial, self.maximum = initial, maximum
        self.reset()

    def reset(self) -> None:
        self._next = self.initial

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay

    def retry(self, attempt: Callable[[], T], stop: threading.Event, errors: tuple[type[BaseException], ...],
              what: str) -> T | None:
        """Call `attempt` after each delay until it returns without one of `errors`; None once `stop` is set.

        The one reconnect loop of the capture sources (serial port, sound card).
        """
        self.reset()
        while not stop.wait(self.next()):
            try:
                return attempt()
            except errors as exc:
                log.info("%s: still unavailable (%s)", what, exc)
        return None


class Source:
    """Base of capture sources: `start()`, `stop()`, `buffer`, `rate` (None until known)."""

    name: str = "source"

    def __init__(self, capacity_s: float = 10.0) -> None:
        if capacity_s <= 0:
            raise ValueError(f"capacity_s: expected seconds > 0, got {capacity_s}")
        self.capacity_s = capacity_s
        self.rate: int | None = None
        self.buffer: CaptureBuffer | None = None
        self.overflows = 0  # driver-reported input overflows
        self.reconnects = 0
        self.finished = threading.Event()  # no more samples will come
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._started = False
        self._thread: threading.Thread | None = None  # the source's worker, joined by `stop()`

    def _make_buffer(self, rate: int) -> None:
        self.buffer = CaptureBuffer(max(1, int(self.capacity_s * rate)))

    def start(self) -> None:
        """Begin capturing (idempotent: a source started early is not started twice)."""
        if not self._started:
            self._start()
            self._started = True

    def _start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Signal the worker to end and wait for it (briefly)."""
        self._stop.set()
        join_thread(self._thread)

    def __enter__(self) -> Source:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class ReplaySource(Source):
    """Plays a file into the capture buffer in small blocks, as a device would.

    `realtime=True` paces blocks by the wall clock (and, like a device, loses samples if the
    pipeline falls behind); otherwise it waits for room in the buffer, so nothing is lost.
    """

    def __init__(self, path: str | Path, realtime: bool = False, block_s: float = 0.02, capacity_s: float = 10.0):
        super().__init__(capacity_s)
        self.path = Path(path)
        info = audio_info(self.path)
        if info.frames == 0:
            raise AudioError(f"{self.path}: empty audio (0 samples)")
        if (cut := info.truncation()) is not None:
            log.warning("%s: %s; replaying what is there", self.path, cut)
        self.name = f"replay:{self.path.name}"
        self.realtime = realtime
        self.rate = info.sample_rate
        self.channels = info.channels
        self.block = max(1, int(round(block_s * self.rate)))
        if self.block > capacity_s * self.rate:
            raise ValueError(f"block_s: expected a block shorter than the buffer ({capacity_s} s), got {block_s}")
        self._make_buffer(self.rate)
        self.samples_played = 0

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="replay-source", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import soundfile as sf

        try:
            with sf.SoundFile(str(self.path)) as f:
                out = np.empty((self.block, self.channels), dtype=np.float32)
                t0 = time.monotonic()
                while not self._stop.is_set():
                    data = f.read(self.block, dtype="float32", always_2d=True, out=out)
                    n = data.shape[0]
                    if n == 0:
                        break
                    mono = to_mono(data)
                    if self.realtime:
                        delay = t0 + (self.samples_played + n) / self.rate - time.monotonic()
                        if delay > 0:
                            self._stop.wait(delay)
                    else:
                        while self.buffer.ring.free() < n and not self._stop.is_set():
                            time.sleep(0.001)
                    self.buffer.write(mono)
                    self.samples_played += n
        except (RuntimeError, OSError) as exc:  # libsndfile errors are RuntimeError subclasses
            self.error = AudioError(f"{self.path}: replay failed ({exc})")
        finally:
            self.finished.set()


class SerialSource(Source):
    """Framed PCM from a serial port (`edge_lung.runtime.live.serial`); lost frames and lost ports become gaps."""

    def __init__(self, port: str, capacity_s: float = 10.0, backoff: Backoff | None = None) -> None:
        super().__init__(capacity_s)
        self.port = port
        self.name = f"serial:{port}"
        self.backoff = backoff or Backoff()
        self.lost_frames = 0
        self.crc_errors = 0
        self._serial = None

    def _start(self) -> None:

        self._serial = open_serial(self.port)  # fails loudly at start: wrong port, permissions
        self._thread = threading.Thread(target=self._run, name="serial-source", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import serial


        reader = FrameReader()
        crc_before = 0
        last_rx = time.monotonic()
        try:
            while not self._stop.is_set():
                try:
                    data = self._serial.read(max(1, self._serial.in_waiting))
                except (serial.SerialException, OSError) as exc:
                    log.warning("%s: lost (%s); retrying", self.port, exc)
                    self._close()
                    lost_at = last_rx  # the audio stopped with the last bytes received
                    self._serial = self.backoff.retry(lambda: open_serial(self.port), self._stop, (OSError,), self.port)
                    if self._serial is None:
                        return
                    secs = time.monotonic() - lost_at
                    if self.rate:
                        self.buffer.mark_gap(round(secs * self.rate), secs, f"serial port {self.port} lost")
                    crc_before += reader.stats.crc_errors
                    reader.reset()
                    self.reconnects += 1
                    continue
                if data:
                    last_rx = time.monotonic()
                for frame in reader.feed(data):
                    self._deliver(frame)
                self.crc_errors = crc_before + reader.stats.crc_errors
        finally:
            self._close()
            self.finished.set()

    def _deliver(self, frame) -> None:
        if self.rate is None:
            self.rate = frame.sample_rate
            self._make_buffer(self.rate)
        elif frame.sample_rate != self.rate:
            self.buffer.mark_gap(0, 0.0, f"sample rate changed {self.rate} -> {frame.sample_rate}", frame.sample_rate)
            self.rate = frame.sample_rate
        if frame.lost_before:
            self.lost_frames += frame.lost_before
            secs = frame.lost_samples_before / frame.sample_rate
            self.buffer.mark_gap(frame.lost_samples_before, secs, f"{frame.lost_before} serial frame(s) lost")
        elif frame.restart:
            self.buffer.mark_gap(0, 0.0, "sender restarted its sequence numbers")
        self.buffer.write(frame.audio)

    def _close(self) -> None:
        if self._serial is not None:
            try:
                self._serial.close()
            except OSError:
                pass
            self._serial = None
