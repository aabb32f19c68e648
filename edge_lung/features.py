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

from functools import lru_cache

import numpy as np

from edge_lung.config import FeatureConfig, num_frames_for


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
    """Window float32[L] and mel matrix float32[fft_size // 2 + 1, M] for `cfg`."""
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
    return _window(cfg).astype(np.float32), mel_matrix


def frames(wave: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """float32[N] -> float32[T, frame_length] view-copy of snip-edges frames."""
    n = num_frames_for(wave.shape[0], cfg.frame_length, cfg.frame_shift)
    if n == 0:
        raise ValueError(
            f"log_mel: expected at least {cfg.frame_length} samples ({cfg.frame_length_ms} ms at "
            f"{cfg.sample_rate} Hz), got {wave.shape[0]}"
        )
    view = np.lib.stride_tricks.sliding_window_view(wave, cfg.frame_length)[:: cfg.frame_shift]
    return np.array(view[:n], dtype=np.float32)


def log_mel(wave: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Kaldi fbank: float32[N] at cfg.sample_rate -> float32[T, num_mel_bins] (natural log)."""
    if wave.ndim != 1:
        raise ValueError(f"log_mel: expected a mono 1-D waveform, got shape {wave.shape}")
    window, mel_matrix = _analysis(cfg)
    x = frames(np.asarray(wave, dtype=np.float32), cfg)
    if cfg.remove_dc_offset:
        x -= x.mean(axis=1, keepdims=True)
    if cfg.preemphasis:
        x[:, 1:] -= cfg.preemphasis * x[:, :-1].copy()
        x[:, 0] *= 1.0 - cfg.preemphasis
    x *= window
    spec = np.fft.rfft(x, n=cfg.fft_size, axis=1)
    power = (spec.real * spec.real + spec.imag * spec.imag).astype(np.float32)
    mel = power @ mel_matrix
    np.maximum(mel, cfg.log_floor, out=mel)
    return np.log(mel, out=mel)


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
    return normalize(log_mel(window, cfg), cfg)
