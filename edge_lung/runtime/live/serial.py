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

import struct
import zlib
from dataclasses import dataclass

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
