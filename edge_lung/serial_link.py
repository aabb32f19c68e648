"""Framed PCM over a USB serial (CDC) link, for stethoscopes whose firmware is not a USB audio device.

Frame layout (all integers little-endian; byte-by-byte description in firmware_host/PROTOCOL.md)::

    offset  size  field
    0       4     sync word A5 5A C3 3C
    4       1     version (1)
    5       1     flags (0; reserved)
    6       4     sequence number, uint32, +1 per frame, wraps at 2**32
    10      4     sample rate in Hz, uint32
    14      2     sample count n, uint16, 1..4096
    16      2n    PCM16 samples, int16, mono
    16+2n   4     CRC-32 (IEEE 802.3, as zlib.crc32) of bytes 4 .. 16+2n-1

`FrameReader` parses a byte stream incrementally, resynchronises on the next sync word after
a corrupt or truncated frame, and turns missing sequence numbers into counted gaps.
`VirtualStethoscope` plays audio as this protocol over a pseudo-terminal, with optional
injected corruption, truncation, garbage and drops, for tests and demos without hardware.
numpy + the standard library only (no torch, no pyserial needed to parse).
"""

from __future__ import annotations

import os
import select
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SYNC = b"\xa5\x5a\xc3\x3c"
VERSION = 1
HEADER = struct.Struct("<4sBBIIH")
CRC = struct.Struct("<I")
MAX_SAMPLES = 4096
MAX_RATE = 384000
SEQ_MOD = 1 << 32


def float_to_pcm16(audio: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1] -> int16 (clipped, rounded)."""
    x = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 32767.0 / 32768.0)
    return np.round(x * 32768.0).astype("<i2")


def pcm16_to_float(samples: np.ndarray) -> np.ndarray:
    """int16 -> float32 in [-1, 1)."""
    return np.asarray(samples, dtype=np.float32) / np.float32(32768.0)


def encode_frame(sequence: int, sample_rate: int, samples: np.ndarray) -> bytes:
    """One frame of int16 samples (float input is converted with `float_to_pcm16`)."""
    samples = np.asarray(samples)
    if samples.dtype != np.int16:
        samples = float_to_pcm16(samples)
    n = samples.shape[0]
    if samples.ndim != 1 or not 1 <= n <= MAX_SAMPLES:
        raise ValueError(f"encode_frame: expected 1..{MAX_SAMPLES} mono samples, got shape {samples.shape}")
    if not 0 < sample_rate <= MAX_RATE:
        raise ValueError(f"encode_frame: expected a sample rate in 1..{MAX_RATE} Hz, got {sample_rate}")
    body = HEADER.pack(SYNC, VERSION, 0, sequence % SEQ_MOD, sample_rate, n) + samples.astype("<i2").tobytes()
    return body + CRC.pack(zlib.crc32(body[4:]) & 0xFFFFFFFF)


@dataclass(frozen=True)
class Frame:
    """A good frame, with what was lost just before it."""

    sequence: int
    sample_rate: int
    samples: np.ndarray  # int16[n]
    lost_before: int = 0  # frames missing between the previous good frame and this one
    lost_samples_before: int = 0  # their samples, assuming they had this frame's size
    restart: bool = False  # sequence went backwards: the sender restarted

    @property
    def audio(self) -> np.ndarray:
        return pcm16_to_float(self.samples)


@dataclass
class ReaderStats:
    frames: int = 0
    samples: int = 0
    bytes_in: int = 0
    bytes_skipped: int = 0
    crc_errors: int = 0
    bad_headers: int = 0
    lost_frames: int = 0
    lost_samples: int = 0
    gaps: int = 0
    restarts: int = 0


class FrameReader:
    """Incremental frame parser: `feed(bytes)` returns the good frames completed by those bytes."""

    def __init__(self, max_samples: int = MAX_SAMPLES) -> None:
        if not 1 <= max_samples <= MAX_SAMPLES:
            raise ValueError(f"FrameReader: expected max_samples in 1..{MAX_SAMPLES}, got {max_samples}")
        self.max_samples = max_samples
        self.reset()

    def reset(self) -> None:
        self._buf = bytearray()
        self._last_seq: int | None = None
        self.stats = ReaderStats()

    def feed(self, data: bytes) -> list[Frame]:
        self.stats.bytes_in += len(data)
        self._buf += data
        return self._parse(final=False)

    def flush(self) -> list[Frame]:
        """End of the byte stream: frames still incomplete are truncated; count their bytes as skipped."""
        return self._parse(final=True)

    def _skip(self, n: int) -> None:
        self.stats.bytes_skipped += n
        del self._buf[:n]

    def _parse(self, final: bool) -> list[Frame]:
        out: list[Frame] = []
        buf = self._buf
        while True:
            i = buf.find(SYNC)
            if i < 0:
                keep = 0 if final else min(len(buf), len(SYNC) - 1)  # a sync word may straddle two reads
                self._skip(len(buf) - keep)
                return out
            if i:
                self._skip(i)
            if len(buf) < HEADER.size:
                if final:
                    self._skip(len(buf))
                return out
            _, version, flags, seq, rate, count = HEADER.unpack_from(buf)
            if version != VERSION or flags != 0 or not 1 <= count <= self.max_samples or not 0 < rate <= MAX_RATE:
                self.stats.bad_headers += 1
                self._skip(1)
                continue
            size = HEADER.size + 2 * count + CRC.size
            if len(buf) < size:
                if final:  # truncated: look for a later frame inside what we have
                    self._skip(1)
                    continue
                return out
            (crc,) = CRC.unpack_from(buf, size - CRC.size)
            if crc != zlib.crc32(memoryview(buf)[4 : size - CRC.size]) & 0xFFFFFFFF:
                self.stats.crc_errors += 1
                self._skip(1)
                continue
            samples = np.frombuffer(bytes(buf[HEADER.size : size - CRC.size]), dtype="<i2").astype(np.int16)
            del buf[:size]
            out.append(self._accept(seq, rate, samples))

    def _accept(self, seq: int, rate: int, samples: np.ndarray) -> Frame:
        lost, restart = 0, False
        if self._last_seq is not None:
            diff = (seq - self._last_seq - 1) % SEQ_MOD
            if diff < SEQ_MOD // 2:
                lost = diff
            else:  # backwards or repeated: the sender restarted; the gap is unknown
                restart = True
        self._last_seq = seq
        s = self.stats
        s.frames += 1
        s.samples += samples.shape[0]
        if lost:
            s.lost_frames += lost
            s.lost_samples += lost * samples.shape[0]
            s.gaps += 1
        if restart:
            s.restarts += 1
        return Frame(seq, rate, samples, lost, lost * samples.shape[0], restart)


@dataclass(frozen=True)
class Impairments:
    """Per-frame probabilities of damage the virtual stethoscope injects (each frame gets at most one)."""

    drop: float = 0.0  # frame never sent (sequence number skipped)
    corrupt: float = 0.0  # one byte after the sync word flipped
    truncate: float = 0.0  # only a prefix of the frame sent
    garbage: float = 0.0  # random bytes sent before the frame (frame itself intact)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("drop", "corrupt", "truncate", "garbage"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"Impairments.{name}: expected a probability in [0, 1], got {p}")
        if self.drop + self.corrupt + self.truncate > 1.0:
            raise ValueError(
                f"Impairments: expected drop + corrupt + truncate <= 1, got {self.drop + self.corrupt + self.truncate}"
            )


@dataclass
class PlayLog:
    """What the virtual stethoscope did to each sequence number (ground truth for tests)."""

    intact: list[int] = field(default_factory=list)
    damaged: dict[int, str] = field(default_factory=dict)


def frame_stream(
    audio: np.ndarray,
    sample_rate: int,
    frame_samples: int = 256,
    impair: Impairments | None = None,
    start_sequence: int = 0,
    log: PlayLog | None = None,
):
    """Yield (sequence, bytes to send, samples in frame) for `audio`, with impairments applied.

    The first and last frames are always sent intact, so a reader can see every loss between them.
    """
    if not 1 <= frame_samples <= MAX_SAMPLES:
        raise ValueError(f"frame_samples: expected 1..{MAX_SAMPLES}, got {frame_samples}")
    impair = impair or Impairments()
    rng = np.random.default_rng(impair.seed)
    pcm = float_to_pcm16(audio)
    starts = range(0, pcm.shape[0], frame_samples)
    last = len(starts) - 1
    for k, pos in enumerate(starts):
        seq = (start_sequence + k) % SEQ_MOD
        frame = encode_frame(seq, sample_rate, pcm[pos : pos + frame_samples])
        fate = "intact"
        if 0 < k < last:
            r = rng.random()
            if r < impair.drop:
                fate = "dropped"
            elif r < impair.drop + impair.corrupt:
                fate = "corrupted"
                i = int(rng.integers(4, len(frame)))
                frame = frame[:i] + bytes([frame[i] ^ int(rng.integers(1, 256))]) + frame[i + 1 :]
            elif r < impair.drop + impair.corrupt + impair.truncate:
                fate = "truncated"
                frame = frame[: int(rng.integers(1, len(frame)))]
        prefix = b""
        if impair.garbage and rng.random() < impair.garbage:
            prefix = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
        if log is not None:
            if fate == "intact":
                log.intact.append(seq)
            else:
                log.damaged[seq] = fate
        yield seq, (prefix + frame if fate != "dropped" else prefix), pcm[pos : pos + frame_samples]


class VirtualStethoscope:
    """Plays audio as framed PCM on a pseudo-terminal; open `port` like a USB CDC device.

    Use as a context manager. `realtime=True` paces frames at the sample rate; otherwise it
    writes as fast as the reader drains the pty. `log` records each frame's fate.
    """

    def __init__(
        self,
        audio: np.ndarray,
        sample_rate: int,
        frame_samples: int = 256,
        impair: Impairments | None = None,
        realtime: bool = False,
        loop: bool = False,
        start_delay_s: float = 0.0,
    ) -> None:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1 or audio.shape[0] == 0:
            raise ValueError(f"VirtualStethoscope: expected non-empty mono audio, got shape {audio.shape}")
        self.audio, self.sample_rate, self.frame_samples = audio, int(sample_rate), int(frame_samples)
        self.impair, self.realtime, self.loop, self.start_delay_s = impair, realtime, loop, start_delay_s
        self.log = PlayLog()
        self.done = threading.Event()
        self._stop = threading.Event()
        self._master: int | None = None
        self._slave: int | None = None
        self._thread: threading.Thread | None = None
        self.port: str | None = None
        self.error: BaseException | None = None

    @classmethod
    def from_file(cls, path: str | Path, **kwargs) -> VirtualStethoscope:
        from edge_lung.audio import load_audio

        audio, rate = load_audio(path)
        return cls(audio, rate, **kwargs)

    def open(self, start: bool = True) -> str:
        """Create the pty and (unless `start=False`) start playing; returns the port path (e.g. /dev/pts/5).

        A reader that opens the port after playing started misses the first frames, as with
        real hardware (pyserial flushes input on open); open with `start=False`, connect, then
        `start()` to get every frame.
        """
        import tty

        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no newline translation or echo: bytes pass unchanged
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        if start:
            self.start()
        return self.port

    def start(self) -> None:
        """Start playing on the opened pty."""
        if self._master is None:
            raise RuntimeError("VirtualStethoscope.start: call open() first")
        if self._thread is None:
            self._thread = threading.Thread(target=self._play, name="virtual-stethoscope", daemon=True)
            self._thread.start()

    def _play(self) -> None:
        try:
            if self.start_delay_s:
                self._stop.wait(self.start_delay_s)
            seq = 0
            t0 = time.monotonic()
            sent = 0
            while not self._stop.is_set():
                for seq_k, data, samples in frame_stream(
                    self.audio, self.sample_rate, self.frame_samples, self.impair, seq, self.log
                ):
                    if self._stop.is_set():
                        return
                    if self.realtime:
                        delay = t0 + sent / self.sample_rate - time.monotonic()
                        if delay > 0:
                            self._stop.wait(delay)
                    self._write_all(data)
                    sent += samples.shape[0]
                    seq = seq_k + 1
                if not self.loop:
                    break
        except OSError as exc:
            self.error = exc
        finally:
            self.done.set()

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self._stop.is_set():
            _, writable, _ = select.select([], [self._master], [], 0.1)
            if writable:
                view = view[os.write(self._master, view) :]

    def close(self) -> None:
        """Stop playing and remove the pty (a reader then sees the device disappear)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        for fd in (self._master, self._slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = None

    def __enter__(self) -> VirtualStethoscope:
        if self.port is None:
            self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_serial(port: str, timeout: float = 0.05):
    """Open `port` with pyserial; ImportError with the install command, OSError naming the port."""
    try:
        import serial
    except ImportError as exc:
        raise ImportError("--serial needs pyserial: pip install pyserial") from exc
    try:
        return serial.Serial(port, baudrate=921600, timeout=timeout)
    except (serial.SerialException, OSError) as exc:
        raise OSError(f"serial port {port}: cannot open ({exc})") from exc
