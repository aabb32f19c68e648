"""Adventitious-sound descriptors: what a clinician listens for, measured so that a stethoscope's gain
and frequency response barely move it (issue #12, the `respiratory` front end).

One 8 s window -> float32[len(NAMES)], two families:

- **wheeze** (continuous, musical): in a 64 ms STFT between 100 and 1500 Hz, each frame's strongest
  spectral peak above its frequency neighbourhood (`prom_*`, dB, a difference of two bands of the same
  frame, so a fixed gain or a smooth tilt cancels), how often a peak stands out (`frac*`), how long a
  peak holds its pitch (`run*`, frames of 16 ms) and how many such tracks there are per second
  (`nrun*`); the spectral flatness of the window's spectrum after each frequency is divided by its
  median over the window (`flat_*`), which removes the device's colouring.
- **crackle** (short, explosive): in three bands (100-2000, 100-500 and 500-2000 Hz) the
  kurtosis of the band-passed waveform and of its first difference (`kurt*`, `dkurt*`; a ratio of
  moments, gain-free), the share of samples more than 6 robust standard deviations out (`exc*`) and
  the transients per second whose 2.5 ms energy exceeds 10x and 30x the window's median (`tr*`).

Every descriptor is a ratio within the window (gain-free) and the whole set lives below 2 kHz, the
band a 4 kHz stethoscope records. What is left of the device's mark (its noise floor, its tilt across
a band) is removed by per-device standardisation: `--device-norm` in training and `edge-lung
calibrate` at the device map each stethoscope's descriptors onto the training statistics.

Hand-written in numpy, not scipy.signal (`butter`/`sosfiltfilt`, `stft`, `median_filter`,
`stats.kurtosis`), which the first measurement used: scipy is not in the device's base install (a
Raspberry Pi gets numpy + onnxruntime only). Band-passing multiplies the spectrum by the Butterworth
filter's squared magnitude (what `sosfiltfilt` applies, edges aside): a brick-wall mask instead rings
around each crackle and moved the leave-one-device-out Score by several points.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

WHEEZE_BAND_HZ = (100.0, 1500.0)
CRACKLE_BANDS_HZ = ((100.0, 2000.0), (100.0, 500.0), (500.0, 2000.0))
STFT_SIZE = 1024  # 64 ms at 16 kHz: a wheeze's harmonics resolved to 16 Hz
STFT_HOP = 256
PEAK_NEIGHBOURHOOD = 17  # bins (265 Hz): a peak is measured against the median of this span
PEAK_THRESHOLDS_DB = (8, 12)
MIN_TRACK_FRAMES = 6  # 96 ms: ICBHI annotates wheezes longer than about 100 ms
TRANSIENT_SAMPLES = 40  # 2.5 ms frames: a fine crackle lasts under 5 ms
OUTLIER_SIGMAS = 6.0
BUTTERWORTH_ORDER = 4

NAMES: tuple[str, ...] = (
    "prom_mean", "prom_p90", "prom_max",
    *(f"{k}{t}" for t in PEAK_THRESHOLDS_DB for k in ("frac", "run", "nrun")),
    "flat_p10", "flat_mean",
    *(f"{k}{int(lo)}_{int(hi)}" for lo, hi in CRACKLE_BANDS_HZ for k in ("kurt", "exc", "dkurt", "tr", "tr30_")),
)
"""Descriptor names, in the order of the vector."""


def _hann(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)  # periodic, as scipy.signal.stft's


def _power_db(x: np.ndarray) -> np.ndarray:
    """float64[frames, STFT_SIZE // 2 + 1] power spectrogram in dB; frames centred on every hop from the
    first sample (half a frame of zeros at either end, as scipy.signal.stft pads)."""
    half = STFT_SIZE // 2
    tail = -(x.size % STFT_HOP) % STFT_HOP
    padded = np.pad(x, (half, half + tail))
    frames = np.lib.stride_tricks.sliding_window_view(padded, STFT_SIZE)[::STFT_HOP] * _hann(STFT_SIZE)
    spec = np.fft.rfft(frames, axis=1)
    power = spec.real**2 + spec.imag**2
    # floor 100 dB under the window's mean power: relative, so an empty band stays gain-free
    return 10.0 * np.log10(power + 1e-10 * power.mean() + 1e-30)


def _longest_and_tracks(mask: np.ndarray) -> tuple[int, int]:
    """Longest run of True and the number of runs of at least MIN_TRACK_FRAMES."""
    edges = np.diff(np.r_[0, mask.astype(np.int8), 0])
    lengths = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    if lengths.size == 0:
        return 0, 0
    return int(lengths.max()), int((lengths >= MIN_TRACK_FRAMES).sum())


def _wheeze(x: np.ndarray, sample_rate: int, duration_s: float) -> list[float]:
    freqs = np.fft.rfftfreq(STFT_SIZE, 1.0 / sample_rate)
    band = (freqs >= WHEEZE_BAND_HZ[0]) & (freqs <= WHEEZE_BAND_HZ[1])
    p = _power_db(x)[:, band]  # frames x bins
    half = PEAK_NEIGHBOURHOOD // 2
    padded = np.pad(p, ((0, 0), (half, half)), mode="edge")
    local = np.median(np.lib.stride_tricks.sliding_window_view(padded, PEAK_NEIGHBOURHOOD, axis=1), axis=2)
    prominence = p - local
    peak, where = prominence.max(axis=1), prominence.argmax(axis=1)
    out = [peak.mean(), np.percentile(peak, 90), peak.max()]
    for threshold in PEAK_THRESHOLDS_DB:
        above = peak > threshold
        held = above & np.r_[False, np.abs(np.diff(where)) <= 2]  # the same pitch, within 2 bins
        longest, tracks = _longest_and_tracks(held)
        out += [above.mean(), longest, tracks / duration_s]
    whitened = 10.0 ** ((p - np.median(p, axis=0, keepdims=True)) / 10.0)
    flatness = np.exp(np.log(whitened + 1e-12).mean(axis=1)) / (whitened.mean(axis=1) + 1e-12)
    return out + [np.percentile(flatness, 10), flatness.mean()]


def _excess_kurtosis(x: np.ndarray) -> float:
    centred = x - x.mean()
    squared = centred * centred  # products, not `** 4`: numpy's float power is 10x slower here
    m2 = squared.mean()
    return float(np.mean(squared * squared) / (m2 * m2) - 3.0) if m2 > 0 else 0.0


def _robust_scale(x: np.ndarray) -> float:
    return float(np.median(np.abs(x)) / 0.6745) + 1e-12


def butterworth_band(freqs: np.ndarray, band_hz: tuple[float, float], sample_rate: int) -> np.ndarray:
    """|H(f)|^2 of a digital Butterworth band-pass of order BUTTERWORTH_ORDER (bilinear transform, as
    `scipy.signal.butter(N, band, "band", fs=...)` designs it): run forward and backward, as
    `sosfiltfilt` runs it, the filter multiplies the spectrum by exactly this zero-phase mask."""
    lo, hi = (2.0 * sample_rate * np.tan(np.pi * f / sample_rate) for f in band_hz)
    with np.errstate(divide="ignore"):
        warped = 2.0 * sample_rate * np.tan(np.pi * np.minimum(freqs, sample_rate / 2 * (1 - 1e-9)) / sample_rate)
        omega = (warped**2 - lo * hi) / (warped * (hi - lo))
    return np.where(freqs > 0, 1.0 / (1.0 + omega ** (2 * BUTTERWORTH_ORDER)), 0.0)


@lru_cache(maxsize=8)
def _crackle_masks(n: int, sample_rate: int) -> tuple[np.ndarray, ...]:
    """The CRACKLE_BANDS_HZ masks for an n-sample rfft: the device's windows all have one length, so they are
    built once, not per window."""
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    return tuple(butterworth_band(freqs, band, sample_rate) for band in CRACKLE_BANDS_HZ)


def _crackle(x: np.ndarray, sample_rate: int, duration_s: float) -> list[float]:
    spectrum = np.fft.rfft(x)
    out: list[float] = []
    for mask in _crackle_masks(x.size, sample_rate):
        y = np.fft.irfft(spectrum * mask, n=x.size)
        z = y / _robust_scale(y)  # for the 6-sigma share; kurtosis needs no scale (a ratio of moments)
        d = np.diff(y)
        energy = np.square(y[: y.size // TRANSIENT_SAMPLES * TRANSIENT_SAMPLES]).reshape(-1, TRANSIENT_SAMPLES).mean(1)
        median_energy = np.median(energy) + 1e-20
        out += [
            np.log1p(max(_excess_kurtosis(z), -0.99) + 1.0),
            np.log1p(np.mean(np.abs(z) > OUTLIER_SIGMAS) * 1e3),
            np.log1p(max(_excess_kurtosis(d), -0.99) + 1.0),
            np.log1p(np.sum(energy > 10.0 * median_energy) / duration_s),
            np.log1p(np.sum(energy > 30.0 * median_energy) / duration_s),
        ]
    return out


def respiratory_features(window: np.ndarray, sample_rate: int) -> np.ndarray:
    """float32[len(NAMES)] descriptors of one mono window (at least one STFT frame long)."""
    if window.ndim != 1 or window.size < STFT_SIZE:
        raise ValueError(f"respiratory_features: expected a mono window of at least {STFT_SIZE} samples, "
                         f"got shape {window.shape}")
    x = window.astype(np.float64)
    x = x - x.mean()
    duration_s = x.size / sample_rate
    return np.asarray(_wheeze(x, sample_rate, duration_s) + _crackle(x, sample_rate, duration_s), dtype=np.float32)
