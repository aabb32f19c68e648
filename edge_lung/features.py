"""Kaldi-compatible log-mel filterbank in pure numpy (no torch, no torchaudio).

Reproduces `torchaudio.compliance.kaldi.fbank` as the AudioSet AST front end calls it
(and as transformers' `ASTFeatureExtractor` does): snip-edges framing, per-frame DC
removal, pre-emphasis 0.97, Hanning window, |rfft|^2 on a 512-point FFT, HTK-style mel
filters built in mel space (1127 ln(1 + f/700)) from `low_freq_hz` to Nyquist, natural log
floored at float32 epsilon, no dither and no energy term. `normalize` applies the AST
statistics as `(x - mean) / (2 * std)`.

Everything is vectorised over frames; the mel matrix and window are cached per config.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import lru_cache

import numpy as np

from edge_lung.audio import cyclic_pad
from edge_lung.config import FeatureConfig, num_frames_for
from edge_lung.respiratory import STFT_SIZE, respiratory_features

_CHUNK_FRAMES = 128
BIN_STD_FLOOR = 0.025
"""`standardize_bins`: smallest per-bin std stretched to 0.5 (0.025 AST units = 0.23 nats, about 2 dB)."""


def _window(cfg: FeatureConfig) -> np.ndarray:
    n = cfg.frame_length
    i = np.arange(n, dtype=np.float64)
    if cfg.window_type == "hanning":
        w = 0.5 - 0.5 * np.cos(2 * np.pi * i / (n - 1))
    elif cfg.window_type == "hamming":
        w = 0.54 - 0.46 * np.cos(2 * np.pi * i / (n - 1))
    else:  # povey
        w = (0.5 - 0.5 * np.cos(2 * np.pi * i / (n - 1))) ** 0.85
    return w


def _mel(freq: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log(1.0 + freq / 700.0)


@lru_cache(maxsize=8)
def _analysis(cfg: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """Window float64[L] and mel matrix float32[fft_size // 2 + 1, M] for `cfg`."""
    num_fft_bins = cfg.fft_size // 2
    fft_bin_width = cfg.sample_rate / cfg.fft_size
    mel_low, mel_high = _mel(np.float64(cfg.low_freq_hz)), _mel(np.float64(cfg.high_hz))
    mel_delta = (mel_high - mel_low) / (cfg.num_mel_bins + 1)
    b = np.arange(cfg.num_mel_bins, dtype=np.float64)[:, None]
    left, center, right = mel_low + b * mel_delta, mel_low + (b + 1) * mel_delta, mel_low + (b + 2) * mel_delta
    mel = _mel(fft_bin_width * np.arange(num_fft_bins, dtype=np.float64))[None, :]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = np.maximum(0.0, np.minimum(up, down))  # [M, num_fft_bins]
    # Kaldi ignores the Nyquist bin: a zero column keeps the matrix aligned with rfft output.
    mel_matrix = np.zeros((num_fft_bins + 1, cfg.num_mel_bins), dtype=np.float32)
    mel_matrix[:num_fft_bins] = banks.T
    return _window(cfg), mel_matrix


def fbank_constants(cfg: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """(window float64[frame_length], mel matrix float32[fft_size // 2 + 1, M]) for `cfg`: the
    constants `log_mel` uses, also embedded by the ONNX front end (edge_lung/export/frontend.py)."""
    return _analysis(cfg)


def _check_length(n_samples: int, cfg: FeatureConfig) -> int:
    n = num_frames_for(n_samples, cfg.frame_length, cfg.frame_shift)
    if n == 0:
        raise ValueError(
            f"log_mel: expected at least {cfg.frame_length} samples ({cfg.frame_length_ms} ms at "
            f"{cfg.sample_rate} Hz), got {n_samples}"
        )
    return n


def windowed_frames(wave: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """float[N] -> float64[T, fft_size]: Kaldi's per-frame DC removal, pre-emphasis and window,
    zero-padded to the FFT size (all frames at once; `log_mel` takes them in chunks)."""
    chunks = [frames.copy() for _, frames in frame_chunks(wave, cfg, _CHUNK_FRAMES)]
    return np.concatenate(chunks) if chunks else np.zeros((0, cfg.fft_size))


def frame_chunks(wave: np.ndarray, cfg: FeatureConfig, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first frame, float64[<= chunk, fft_size]) for consecutive chunks of `wave`'s windowed frames.

    Per frame Kaldi computes y[i] = (x[i] - m) - p (x[i-1] - m) for i >= 1 and
    y[0] = (1 - p)(x[0] - m), with m the frame mean. That equals the pre-emphasised *signal*
    e[n] = x[n] - p x[n-1] framed, minus (1 - p) m, so pre-emphasis runs once over the signal
    instead of once per overlapping frame, and frame means come from a cumulative sum.
    One chunk-sized buffer is reused (each yielded array is overwritten by the next): an 8 s window's
    frames would be 3.3 MB of float64 at once, a transient that stayed resident in the device's heap.
    """
    x = np.asarray(wave, dtype=np.float64)
    n = _check_length(x.shape[0], cfg)
    length, shift, p = cfg.frame_length, cfg.frame_shift, cfg.preemphasis
    starts = np.arange(n) * shift
    if cfg.remove_dc_offset:
        # Frame sums from block sums: frames start and end on multiples of gcd(length, shift),
        # so a cumulative sum over blocks (not over samples) gives every frame's sum.
        g = math.gcd(length, shift)
        blocks = x[: (int(starts[-1]) + length) // g * g].reshape(-1, g).sum(axis=1)
        csum = np.concatenate(([0.0], np.cumsum(blocks)))
        mean = (csum[(starts + length) // g] - csum[starts // g]) / length
    else:
        mean = np.zeros(n)
    emph = np.empty_like(x)
    emph[1:] = x[1:] - p * x[:-1]
    emph[0] = x[0]  # never read through the view below: column 0 is rebuilt from x
    view = np.lib.stride_tricks.sliding_window_view(emph, length)[::shift][:n]
    window, _ = _analysis(cfg)
    buf = np.zeros((min(chunk, n), cfg.fft_size), dtype=np.float64)  # columns from `length` on stay zero
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        out = buf[: b - a]
        np.subtract(view[a:b], (1.0 - p) * mean[a:b, None], out=out[:, :length])
        out[:, 0] = (1.0 - p) * (x[starts[a:b]] - mean[a:b])
        out[:, :length] *= window
        yield a, out


def log_mel(wave: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Kaldi fbank: float32[N] at cfg.sample_rate -> float32[T, num_mel_bins] (natural log).

    Frame arithmetic and the FFT run in float64: numpy's float64 rfft is several times faster
    than its float32 one, and it keeps parity with Kaldi far inside 1e-4.
    """
    if wave.ndim != 1:
        raise ValueError(f"log_mel: expected a mono 1-D waveform, got shape {wave.shape}")
    _, mel_matrix = _analysis(cfg)
    mel = np.empty((_check_length(wave.shape[0], cfg), cfg.num_mel_bins), dtype=np.float32)
    # Chunks of frames keep the FFT's input and output (float64/complex128) in cache, and the frames
    # of the whole window are never held at once.
    for a, frames in frame_chunks(wave, cfg, _CHUNK_FRAMES):
        spec = np.fft.rfft(frames, axis=1)
        power = np.square(spec.real, dtype=np.float32)
        power += np.square(spec.imag, dtype=np.float32)
        np.matmul(power, mel_matrix, out=mel[a : a + frames.shape[0]])
    np.maximum(mel, cfg.log_floor, out=mel)
    return np.log(mel, out=mel)


def cycle_features(audio: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Model input float32[num_frames, bins] of one unpadded cycle: cyclic-padded (or cut) to the
    window, exactly as training, evaluation, export and the device see it.

    The "respiratory" descriptors are rates and ratios, so they are measured on the cycle as recorded
    (a cycle longer than the window is cut to it, one shorter than an STFT frame is cyclic-padded to
    one): cyclic padding would put a click at every seam, which reads as a crackle, and the device's
    windows of continuous audio have no seams.
    """
    if cfg.front_end == "respiratory":
        audio = np.asarray(audio, dtype=np.float32)[: cfg.window_samples]
        if audio.shape[0] < STFT_SIZE:
            audio = cyclic_pad(audio, STFT_SIZE)
        return respiratory_features(audio, cfg.sample_rate)[None, :]
    return window_features(cyclic_pad(audio, cfg.window_samples), cfg)


def normalize(fbank: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """AST normalisation `(x - mean) / (2 * std)`, float32."""
    return ((fbank - np.float32(cfg.norm_mean)) / np.float32(2.0 * cfg.norm_std)).astype(np.float32, copy=False)


def window_features(window: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """One model window (exactly `cfg.window_samples` samples) -> normalised float32[num_frames, bins].

    This is the single function that training, export calibration, evaluation and the device
    runtime call to turn audio into model input.
    """
    if window.shape != (cfg.window_samples,):
        raise ValueError(
            f"window_features: expected {cfg.window_samples} samples ({cfg.window_s} s at "
            f"{cfg.sample_rate} Hz), got shape {window.shape}; cyclic-pad the audio first"
        )
    if cfg.front_end == "respiratory":
        return respiratory_features(window, cfg.sample_rate)[None, :]
    x = normalize(log_mel(window, cfg), cfg)
    return standardize_bins(x) if cfg.mel_norm == "window" else x


def standardize_bins(x: np.ndarray) -> np.ndarray:
    """Each mel bin of float32[T, M] to mean 0 and std 0.5 over the window's frames (`mel_norm="window"`).

    A stethoscope's frequency response is a fixed gain per band, an additive offset per bin in the
    log domain, so this removes it; std 0.5 keeps the spread of AST's `(x - mean) / (2 * std)` input.
    A bin that barely moves (std under `BIN_STD_FLOOR`, about 2 dB: an empty band above a 4 kHz
    device's Nyquist, or at the log floor) is centred but not stretched, so its noise is not blown up.
    """
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=0, keepdims=True)
    std = np.maximum(x64.std(axis=0, keepdims=True), BIN_STD_FLOOR)
    return ((x64 - mean) / (2.0 * std)).astype(np.float32)
