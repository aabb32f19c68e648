"""`--record PATH.flac`: the raw captured audio on disk, readable after a crash or power loss.

libsndfile's FLAC writer fills in the stream's total length only when the file is closed;
a killed process leaves "length unknown" in the header, which python-soundfile cannot read
back (it reports 2**63 frames and fails to seek). So once a second the recorder fsyncs the
encoded frames and then patches the STREAMINFO total-samples field to the samples already in
complete frames (libFLAC keeps at most one block, plus one sample of look-ahead, unwritten).
After `kill -9` the file opens with any FLAC reader and holds the audio up to the last flush;
on a clean close libFLAC rewrites STREAMINFO with the exact values.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

# STREAMINFO is the first metadata block: "fLaC" (4) + block header (4) + fields.
_STREAMINFO = 8
_MIN_BLOCKSIZE_AT = _STREAMINFO  # uint16 big-endian
_TOTAL_SAMPLES_AT = _STREAMINFO + 13  # low 4 bits of this byte + next 4 bytes: 36-bit total


class FlacRecorder:
    """Append mono float32 blocks to a FLAC file (PCM16), crash-safe to within `flush_s` seconds."""

    def __init__(self, path: str | Path, sample_rate: int, flush_s: float = 1.0) -> None:
        import soundfile as sf

        self.path = Path(path)
        if self.path.suffix.lower() != ".flac":
            raise ValueError(f"--record {self.path}: expected a path ending in .flac")
        if not self.path.parent.is_dir():
            raise ValueError(f"--record {self.path}: directory {self.path.parent} does not exist")
        if not 0 < flush_s <= 1.0:
            raise ValueError(f"FlacRecorder: expected 0 < flush_s <= 1 s, got {flush_s}")
        if sample_rate > 655350:
            raise ValueError(f"--record {self.path}: FLAC cannot store {sample_rate} Hz")
        self.sample_rate = int(sample_rate)
        self.flush_s = flush_s
        try:
            self._file = sf.SoundFile(
                str(self.path), "w", samplerate=self.sample_rate, channels=1, format="FLAC", subtype="PCM_16"
            )
        except (RuntimeError, OSError) as exc:
            raise OSError(f"--record {self.path}: cannot create ({exc})") from exc
        self._fd = os.open(self.path, os.O_RDWR)
        self._blocksize = int.from_bytes(os.pread(self._fd, 2, _MIN_BLOCKSIZE_AT), "big") or 4096
        self.samples = 0
        self.durable_samples = 0  # samples a reader is guaranteed to get back after a crash
        self._last_flush = time.monotonic()

    def write(self, block: np.ndarray, rate: int | None = None) -> None:
        """Append samples; flushes to disk when `flush_s` has passed since the last flush."""
        if rate is not None and rate != self.sample_rate:
            raise ValueError(f"--record {self.path}: input rate changed {self.sample_rate} -> {rate} Hz mid-recording")
        block = np.asarray(block, dtype=np.float32)
        if block.shape[0]:
            self._file.write(np.clip(block, -1.0, 1.0))
            self.samples += block.shape[0]
        if time.monotonic() - self._last_flush >= self.flush_s:
            self.flush()

    def __call__(self, block: np.ndarray, rate: int) -> None:
        """Sink signature of `run_live(on_audio=...)`."""
        self.write(block, rate)

    def flush(self) -> None:
        """fsync the encoded frames, then publish their length in the header (and fsync that)."""
        self._file.flush()  # sf_write_sync: frames libFLAC has emitted reach the disk
        complete = max(0, (self.samples - 1) // self._blocksize * self._blocksize)
        if complete > self.durable_samples:
            byte = os.pread(self._fd, 1, _TOTAL_SAMPLES_AT)[0]
            patch = bytes([(byte & 0xF0) | ((complete >> 32) & 0x0F)]) + (complete & 0xFFFFFFFF).to_bytes(4, "big")
            os.pwrite(self._fd, patch, _TOTAL_SAMPLES_AT)
            os.fsync(self._fd)
            self.durable_samples = complete
        self._last_flush = time.monotonic()

    def close(self) -> None:
        """Finish the file (libFLAC writes the exact length and MD5)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> FlacRecorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
