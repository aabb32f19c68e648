"""`--record PATH.flac`: the raw captured audio on disk, readable after a crash or power loss.

libsndfile's FLAC writer fills in the stream's total length only when the file is closed;
a killed process leaves "length unknown" in the header, which python-soundfile cannot read
back (it reports 2**63 frames and fails to seek). So once a second the recorder fsyncs the
encoded frames and then patches the STREAMINFO total-samples field to the samples already in
complete frames (libFLAC keeps at most one block, plus one sample of look-ahead, unwritten).
After `kill -9` the file opens with any FLAC reader and holds the audio up to the last flush;
on a clean close libFLAC rewrites STREAMINFO with the exact values.

When a write fails (the disk is full: libsndfile says only "System error."), the recorder
finalises what reached the disk itself: it cuts the file back to the end of the frames of the last
flush, writes their length into STREAMINFO and raises `RecordingError` naming the path, the cause
and the seconds kept. Flushes happen every `flush_s` of wall time or of audio, whichever comes
first, so a fast replay also loses at most about `flush_s` of audio.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from edge_lung.fileio import FLAC_RECORDING, check_not_input, check_output

# STREAMINFO is the first metadata block: "fLaC" (4) + block header (4) + fields.
_STREAMINFO = 8
_MIN_BLOCKSIZE_AT = _STREAMINFO  # uint16 big-endian
_TOTAL_SAMPLES_AT = _STREAMINFO + 13  # low 4 bits of this byte + next 4 bytes: 36-bit total
_MD5_AT = _STREAMINFO + 18  # 16 bytes; all zero means "not computed" (readers skip the check)
_LOW_SPACE = 1 << 20  # bytes free below which a failed write is put down to a full disk


def check_record_path(path: str | Path, overwrite: bool = False, inputs: Iterable[str | Path | None] = ()) -> None:
    """`--record PATH` before the session starts (fileio's writing policy): a .flac path, not an input, in a
    folder that exists; with `overwrite` an existing PATH must be a FLAC recording (without it the session
    records to NAME-2.flac and keeps PATH)."""
    path = Path(path)
    if path.suffix.lower() != ".flac":
        raise ValueError(f"--record {path}: expected a path ending in .flac")
    if overwrite:
        check_output(path, "--record", FLAC_RECORDING, overwrite=True, inputs=inputs)
        return
    check_not_input(path, "--record", inputs)
    if path.is_dir():
        raise ValueError(f"--record {path}: is a directory; expected a file path ending in .flac")
    if not path.absolute().parent.is_dir():
        raise ValueError(f"--record {path}: folder {path.absolute().parent} does not exist; create it first")


class RecordingError(OSError):
    """A recording that could not be written; the file holds `kept_samples` readable samples."""

    def __init__(self, message: str, kept_samples: int) -> None:
        super().__init__(message)
        self.kept_samples = kept_samples


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
        self._durable_bytes = os.fstat(self._fd).st_size  # file size at the last flush: a frame boundary
        self._flushed_samples = 0
        self._last_flush = time.monotonic()
        self.failed = False  # a write failed; the file was finalised by `_fail`

    def write(self, block: np.ndarray, rate: int | None = None) -> None:
        """Append samples; flushes to disk every `flush_s` of wall time or audio. `RecordingError` if the
        disk refuses them (the file is then finalised with what it holds)."""
        if rate is not None and rate != self.sample_rate:
            raise ValueError(f"--record {self.path}: input rate changed {self.sample_rate} -> {rate} Hz mid-recording")
        block = np.asarray(block, dtype=np.float32)
        try:
            if block.shape[0]:
                self._file.write(np.clip(block, -1.0, 1.0))
                self.samples += block.shape[0]
            due = self.samples - self._flushed_samples >= self.flush_s * self.sample_rate
            if due or time.monotonic() - self._last_flush >= self.flush_s:
                self._flush()
        except (RuntimeError, OSError) as exc:  # libsndfile's errors are RuntimeError subclasses
            raise self._fail(exc) from exc

    def __call__(self, block: np.ndarray, rate: int) -> None:
        """Sink signature of `run_live(on_audio=...)`."""
        self.write(block, rate)

    def flush(self) -> None:
        """fsync the encoded frames, then publish their length in the header (and fsync that)."""
        try:
            self._flush()
        except (RuntimeError, OSError) as exc:
            raise self._fail(exc) from exc

    def _flush(self) -> None:
        self._file.flush()  # sf_write_sync: frames libFLAC has emitted reach the disk
        complete = max(0, (self.samples - 1) // self._blocksize * self._blocksize)
        if complete > self.durable_samples:
            size = os.fstat(self._fd).st_size  # libFLAC writes whole frames, so this ends one
            self._publish(complete)
            self.durable_samples, self._durable_bytes = complete, size
        self._flushed_samples = self.samples
        self._last_flush = time.monotonic()

    def _publish(self, total: int) -> None:
        """Write `total` into STREAMINFO's 36-bit total-samples field and fsync."""
        byte = os.pread(self._fd, 1, _TOTAL_SAMPLES_AT)[0]
        patch = bytes([(byte & 0xF0) | ((total >> 32) & 0x0F)]) + (total & 0xFFFFFFFF).to_bytes(4, "big")
        os.pwrite(self._fd, patch, _TOTAL_SAMPLES_AT)
        os.fsync(self._fd)

    def _fail(self, exc: BaseException) -> RecordingError:
        """Name the cause, then leave a valid file: the frames of the last flush, their length, no MD5."""
        try:
            free = shutil.disk_usage(self.path.parent).free
        except OSError:
            free = None
        if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or (free is not None and free < _LOW_SPACE):
            cause = f"the disk is full ({free} bytes free)"
        else:
            cause = f"write failed ({type(exc).__name__}: {exc})"
        try:
            self._file.close()  # libFLAC may try to finish the stream; whatever it wrote is cut back below
        except (RuntimeError, OSError):
            pass
        self.failed = True
        if self.durable_samples == 0:  # not one frame made it: an empty file would only look like a recording
            self.close()
            self.path.unlink(missing_ok=True)
            return RecordingError(f"--record {self.path}: {cause}; no audio could be kept (file removed)", 0)
        try:
            os.ftruncate(self._fd, self._durable_bytes)
            os.pwrite(self._fd, bytes(16), _MD5_AT)
            self._publish(self.durable_samples)
        except OSError:
            pass
        kept = self.durable_samples / self.sample_rate
        message = f"--record {self.path}: {cause}; the file keeps the first {kept:.1f} s"
        return RecordingError(message, self.durable_samples)

    def close(self) -> None:
        """Finish the file (libFLAC writes the exact length and MD5)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if not self._file.closed and not self.failed:
            self._file.close()

    def __enter__(self) -> FlacRecorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
