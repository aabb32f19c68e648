"""Audio I/O and sample-level DSP: decode, downmix, resample, cyclic padding.

Pure numpy + soundfile + soxr, so the device runtime can use it without torch.
Resampling is soxr's band-limited (anti-aliased) conversion; the offline and streaming
paths use the same soxr engine so that a stream resampled block by block equals the whole
signal resampled at once.
"""

from __future__ import annotations

import logging
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import soxr

log = logging.getLogger(__name__)

RESAMPLER_ID = f"soxr-{soxr.__version__}-HQ"
"""Names the resampler in cache keys: a different resampler must not reuse cached audio."""
_QUALITY = "HQ"


def _sf() -> ModuleType:
    """soundfile, imported on first use: a process that only classifies windows already in memory (the
    stream from a microphone, `edge-lung bench`) does not load libsndfile and cffi (2.3 MB resident)."""
    import soundfile

    return soundfile


class AudioError(ValueError):
    """A file that cannot be used as audio, with the file named in the message."""


@dataclass(frozen=True)
class AudioInfo:
    path: str
    sample_rate: int
    channels: int
    frames: int  # frames the file holds
    subtype: str
    header_frames: int | None = None  # frames a WAV header declares; None when it does not say

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0

    @property
    def missing_frames(self) -> int:
        """Frames the header declares that the file does not hold (a cut-off copy or download)."""
        return max(0, (self.header_frames or 0) - self.frames)

    def truncation(self) -> str | None:
        """`"truncated: ..."` naming how much is missing, or None for a whole file."""
        if not self.missing_frames:
            return None
        rate = self.sample_rate or 1
        return (
            f"truncated: the header declares {self.header_frames / rate:.2f} s, the file holds "
            f"{self.frames / rate:.2f} s ({self.missing_frames / rate:.2f} s, {self.missing_frames} of "
            f"{self.header_frames} frames missing)"
        )


def audio_info(path: str | Path) -> AudioInfo:
    """Header of an audio file; raises `AudioError` naming the file if it is unreadable."""
    try:
        info = _sf().info(str(path))
    except (RuntimeError, _sf().LibsndfileError) as exc:  # libsndfile reports bad files as RuntimeError
        raise AudioError(f"{path}: not a readable audio file ({exc})") from exc
    header = wav_header_frames(path) if info.format == "WAV" else None
    return AudioInfo(str(path), int(info.samplerate), int(info.channels), int(info.frames), str(info.subtype),
                     header)


_OPEN_LENGTH = 0xFFFFFFFF  # streaming writers' placeholder data size: "length not known", not a claim


def wav_header_frames(path: str | Path) -> int | None:
    """Frames the `data` chunk of a RIFF/WAVE header declares; None if it declares no length.

    Hand-written (a chunk walk) because libsndfile silently shrinks a truncated file's length to what
    is there, and the standard library's `wave` refuses float WAVs: neither can tell a cut-off file.
    """
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None  # RF64 and others declare their length elsewhere
        block_align = 0
        while len(chunk := f.read(8)) == 8:
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                return size // block_align if block_align and size not in (0, _OPEN_LENGTH) else None
            if cid != b"fmt ":
                f.seek(size + size % 2, 1)  # chunks are padded to even sizes
                continue
            body = f.read(size + size % 2)
            block_align = struct.unpack("<H", body[12:14])[0] if len(body) >= 14 else 0
    return None


def load_audio(path: str | Path, target_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Decode `path` to mono float32 in [-1, 1], resampled to `target_rate` if given.

    Stereo (or wider) files are averaged to mono with a warning; a truncated WAV is decoded as far as
    it goes, with a logged warning naming how much is missing. Raises `AudioError` naming the
    file for a missing, unreadable or empty file.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: file not found")
    try:
        data, rate = _sf().read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, _sf().LibsndfileError) as exc:
        raise AudioError(f"{path}: not a readable audio file ({exc})") from exc
    if data.shape[0] == 0:
        raise AudioError(f"{path}: empty audio (0 samples)")
    if (cut := audio_info(path).truncation()) is not None:
        log.warning("%s: %s; using what is there", path, cut)
    if data.shape[1] > 1:
        warnings.warn(f"{path}: {data.shape[1]} channels, downmixing to mono", stacklevel=2)
    wave = to_mono(data)
    if target_rate is not None and target_rate != rate:
        wave = resample(wave, rate, target_rate)
        rate = target_rate
    return wave, int(rate)


FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")
"""The only sample formats that can hold NaN or inf: integer PCM (all of ICBHI) cannot."""


def non_finite_samples(path: str | Path, info: AudioInfo | None = None, block: int = 1 << 16) -> int:
    """How many samples of the file are NaN or inf (0 without reading for integer formats)."""
    info = info or audio_info(path)
    if info.subtype not in FLOAT_SUBTYPES:
        return 0
    try:
        return sum(int(np.count_nonzero(~np.isfinite(b))) for b in _sf().blocks(str(path), blocksize=block))
    except (RuntimeError, _sf().LibsndfileError) as exc:
        raise AudioError(f"{path}: not a readable audio file ({exc})") from exc


def to_mono(data: np.ndarray) -> np.ndarray:
    """[frames, channels] or [frames] -> float32[frames], averaging channels."""
    if data.ndim == 1:
        return np.ascontiguousarray(data, dtype=np.float32)
    if data.shape[1] == 1:
        return np.ascontiguousarray(data[:, 0], dtype=np.float32)
    return data.mean(axis=1, dtype=np.float32)


def resample(wave: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limited resampling of a whole mono signal (float32 in, float32 out)."""
    wave = np.ascontiguousarray(wave, dtype=np.float32)
    if rate_in == rate_out:
        return wave
    if rate_in <= 0 or rate_out <= 0:
        raise ValueError(f"resample: expected positive rates, got {rate_in} -> {rate_out}")
    stream = StreamResampler(rate_in, rate_out)
    return stream.process(wave, last=True)


class StreamResampler:
    """Resamples a mono stream block by block with state across blocks (no edge clicks).

    Feeding a signal in blocks of any size and then calling `process(..., last=True)` (or
    `flush()`) gives the same samples as `resample()` on the whole signal.
    """

    def __init__(self, rate_in: int, rate_out: int) -> None:
        if rate_in <= 0 or rate_out <= 0:
            raise ValueError(f"StreamResampler: expected positive rates, got {rate_in} -> {rate_out}")
        self.rate_in = int(rate_in)
        self.rate_out = int(rate_out)
        self._stream: soxr.ResampleStream | None = None
        self.reset()

    def reset(self) -> None:
        """Forget all history, as if just created."""
        if self.rate_in != self.rate_out:
            self._stream = soxr.ResampleStream(self.rate_in, self.rate_out, 1, dtype="float32", quality=_QUALITY)

    def process(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        """Resample the next block; `last=True` drains the filter's tail."""
        block = np.ascontiguousarray(block, dtype=np.float32)
        if self._stream is None:
            return block.copy()
        return self._stream.resample_chunk(block, last=last)

    def flush(self) -> np.ndarray:
        """Drain the remaining output at the end of a stream."""
        return self.process(np.zeros(0, dtype=np.float32), last=True)


def cyclic_pad(wave: np.ndarray, length: int) -> np.ndarray:
    """Tile `wave` end to end until it is `length` samples long, or cut it to `length`.

    This is the padding the model was trained with: a short respiratory cycle is repeated,
    never zero-padded.
    """
    if length <= 0:
        raise ValueError(f"cyclic_pad: expected a positive length, got {length}")
    n = wave.shape[0]
    if n == 0:
        raise ValueError("cyclic_pad: cannot tile an empty waveform")
    if n >= length:
        return np.ascontiguousarray(wave[:length], dtype=np.float32)
    reps = -(-length // n)
    return np.tile(np.asarray(wave, dtype=np.float32), reps)[:length]


UNKNOWN_LENGTH = 1 << 62
"""Header frame counts at or above this mean "length unknown" (libsndfile reports 2**63 - 1 for a FLAC
whose writer never finished: killed, or cut off by a full disk)."""


def read_blocks(path: str | Path, block_frames: int) -> Iterator[np.ndarray]:
    """Decode `path` block by block to mono float32 (a fresh array each): memory independent of its length.

    A file damaged part-way (cut off by a full disk or a power loss) yields every block that decodes,
    then raises `AudioError` naming the file and how far decoding got. A file shorter than its header
    says simply ends early; compare the samples read with `audio_info(path).frames`.
    """
    if block_frames <= 0:
        raise ValueError(f"read_blocks: expected block_frames > 0, got {block_frames}")
    try:
        f = _sf().SoundFile(str(path))
    except (RuntimeError, _sf().LibsndfileError) as exc:
        raise AudioError(f"{path}: not a readable audio file ({exc})") from exc
    with f:
        if f.channels > 1:
            warnings.warn(f"{path}: {f.channels} channels, downmixing to mono", stacklevel=2)
        done = 0
        while True:
            try:
                data = f.read(block_frames, dtype="float32", always_2d=True)
            except (RuntimeError, _sf().LibsndfileError) as exc:
                raise AudioError(f"{path}: unreadable after {done / f.samplerate:.2f} s ({exc})") from exc
            if data.shape[0] == 0:
                return
            done += data.shape[0]
            yield to_mono(data)


CHANNELS: dict[str, int] = {"4k": 4000, "8k": 8000}
"""Stethoscope-like channels of `degrade`: the rate the device records at (Littmann 3200: 4 kHz)."""


def degrade(wave: np.ndarray, sample_rate: int, channel: str) -> np.ndarray:
    """`wave` as a band-limited stethoscope would deliver it: through `CHANNELS[channel]` Hz and back.

    soxr's anti-aliasing filter removes everything above the channel's Nyquist (2 kHz for "4k"),
    which is what a 4 kHz recording resampled to the model's rate contains. Length and rate are kept.
    """
    if channel not in CHANNELS:
        raise ValueError(f"degrade: expected a channel in {sorted(CHANNELS)}, got {channel!r}")
    low = CHANNELS[channel]
    if low >= sample_rate:
        return np.asarray(wave, dtype=np.float32)
    back = resample(resample(np.asarray(wave, dtype=np.float32), sample_rate, low), low, sample_rate)
    out = np.zeros(wave.shape[0], dtype=np.float32)  # the round trip may be a sample short or long
    n = min(out.shape[0], back.shape[0])
    out[:n] = back[:n]
    return out
