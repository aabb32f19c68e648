"""Signal-quality gate: one verdict per window, so the runtime knows when it cannot hear the chest.

Most bad decisions in the field come from bad sound (chest piece off the skin, input
clipping, cable friction, talk), not from the model (issue 11). Every window gets a verdict
from the audio the model would see, before the model runs:

- `invalid`: NaN or inf samples arrived (counted on the input; they are replaced by zeros
  before resampling, so they never reach the resampler state or the model);
- `no_signal`: level below a floor (digital silence); nothing in the respiratory band (a constant
  DC level, a slow drift: issue 26); or a flat spectrum with no breathing envelope (stationary hiss);
- `clipping`: share of input samples at or near full scale;
- `too_loud` / `too_quiet`: RMS level outside the usable range;
- `noise`: a broadband (flat) spectrum dominating the respiratory band;
- `ok`: the window goes to the model.

Sample-level marks (non-finite, full scale) are counted on the samples as captured, at the
input rate, because resampling spreads one NaN over the whole filter history and smooths
full-scale plateaus; level, spectrum and envelope are measured on the model-rate window.
The features are plain numpy (RMS, a Welch-averaged power spectrum, 100 ms frame energies);
`benchmarks/quality_false_alarms.py` measures them on the real subset and `edge-lung bench`
times them next to the fbank and the model.

Thresholds live in `QualityConfig`, which export writes into the model directory and the
command line can override (`--quality-set NAME=VALUE`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from edge_lung.config import dataclass_from_dict

OK = "ok"
VERDICTS = ("ok", "invalid", "no_signal", "clipping", "too_loud", "too_quiet", "noise")
"""Every verdict, `ok` first; any other verdict means the window gets no class decision."""

GUIDANCE = {
    "invalid": "invalid samples (NaN/inf) from the input: check the device, driver or file",
    "no_signal": "no signal: place the chest piece on the skin",
    "clipping": "clipping: lower the gain",
    "too_loud": "too loud: lower the gain",
    "too_quiet": "too quiet: raise the gain or press the chest piece firmly",
    "noise": "noise: hold the chest piece and cable still, ask for quiet",
}
"""What a person can do about each failing verdict (the live view shows it, rate-limited)."""

_EPS = 1e-12


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the gate. Levels are dBFS of the window's RMS (full scale = 1.0).

    Defaults were calibrated on every window of the real ICBHI subset (4 kHz and 44.1 kHz
    stethoscopes; `benchmarks/results/quality_false_alarms.txt`).
    """

    floor_db: float = -70.0  # RMS below: no_signal (digital silence, disconnected input)
    quiet_db: float = -55.0  # RMS below: too_quiet
    loud_db: float = -3.0  # RMS above: too_loud
    clip_level: float = 0.99  # |sample| at or above this counts as at full scale (input samples)
    # share of input samples at full scale, at or above: clipping. The real subset is itself clipped at the
    # source (24% of its windows have >= 2% of samples at full scale); 0.3 keeps its alarms under 1%.
    clipped_share: float = 0.3
    band_low_hz: float = 100.0  # respiratory band for spectral flatness (4 kHz devices end at 2 kHz)
    band_high_hz: float = 1800.0
    noise_flatness: float = 0.6  # flatness in the band at or above: noise, or no_signal (hiss) without envelope
    envelope_db: float = 3.0  # p90 - p10 of 100 ms frame energies; breathing moves it by more
    # level in the respiratory band relative to the whole window, below: no_signal (a constant level or a slow
    # drift, loud yet silent where breath sounds live; issue 26). Real windows: -46 dB at p0.5, -23 dB median.
    band_share_db: float = -60.0

    def __post_init__(self) -> None:
        for name in ("floor_db", "quiet_db", "loud_db", "band_share_db"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value <= 0):
                raise ValueError(f"{name}: expected dBFS <= 0, got {value}")
        if not self.floor_db <= self.quiet_db < self.loud_db:
            raise ValueError(
                f"floor_db <= quiet_db < loud_db: expected rising levels, got "
                f"{self.floor_db}, {self.quiet_db}, {self.loud_db}"
            )
        for name in ("clip_level", "clipped_share", "noise_flatness"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name}: expected a value in (0, 1], got {value}")
        if not 0.0 < self.band_low_hz < self.band_high_hz:
            raise ValueError(f"band_low_hz < band_high_hz: expected 0 < low < high, got {self.band_low_hz}, "
                             f"{self.band_high_hz}")
        if not (math.isfinite(self.envelope_db) and self.envelope_db >= 0):
            raise ValueError(f"envelope_db: expected dB >= 0, got {self.envelope_db}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QualityConfig:
        """Rebuild from `to_dict()` output; an unknown key is an error."""
        return dataclass_from_dict(cls, data)

    def with_overrides(self, settings: list[str] | tuple[str, ...]) -> QualityConfig:
        """Apply `NAME=VALUE` strings (`--quality-set`); errors name the setting and the choices."""
        names = {f.name for f in dataclasses.fields(self)}
        changes: dict[str, float] = {}
        for item in settings:
            name, sep, value = item.partition("=")
            name = name.strip()
            if not sep or name not in names:
                raise ValueError(f"--quality-set {item!r}: expected NAME=VALUE with NAME one of {sorted(names)}")
            try:
                changes[name] = float(value)
            except ValueError as exc:
                raise ValueError(f"--quality-set {item!r}: expected a number after '=', got {value!r}") from exc
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class QualityStats:
    """What the gate measured on one window (JSON-ready through `as_dict`)."""

    rms_db: float
    clipped_share: float
    invalid: int
    flatness: float
    envelope_db: float
    band_db: float = math.nan  # level in the respiratory band, dBFS; NaN when not measured (no check fires)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rms_db": _round_db(self.rms_db),
            "clipped_share": round(self.clipped_share, 5),
            "invalid": self.invalid,
            "flatness": round(self.flatness, 4),
            "envelope_db": round(self.envelope_db, 2),
            "band_db": _round_db(self.band_db),
        }


def _round_db(value: float) -> float | None:
    """A level for JSON: rounded, None for -inf or NaN (JSON has neither)."""
    return round(value, 2) if math.isfinite(value) else None


@dataclass(frozen=True)
class Quality:
    """A window's verdict (`ok` or the reason it gets no class decision) and the measurements behind it."""

    verdict: str
    stats: QualityStats
    ms: float = 0.0  # time the gate took

    @property
    def ok(self) -> bool:
        return self.verdict == OK


def rms_db(audio: np.ndarray) -> float:
    """RMS level in dBFS; -inf for digital silence."""
    power = float(np.mean(np.square(audio, dtype=np.float64))) if audio.size else 0.0
    return 10.0 * math.log10(power) if power > 0 else -math.inf


def band_power(audio: np.ndarray, sample_rate: int, low_hz: float, high_hz: float, nfft: int = 512) -> np.ndarray:
    """Welch power spectrum float64[K] of the bins within [low_hz, high_hz], scaled so that its sum
    is the mean power per sample in the band (one-sided, Hann); empty when the audio is under `nfft`.

    Every other non-overlapping Hann frame of `nfft` (125 frames per 8 s window are plenty for
    the average; all 250 cost 2.6 ms instead of 0.2 ms on the 2-core EPYC VM, more than the
    rest of the gate together).
    """
    frames = audio.shape[0] // nfft
    if frames == 0:
        return np.zeros(0)
    x = audio[: frames * nfft].reshape(frames, nfft)[::2] if frames > 1 else audio[:nfft].reshape(1, nfft)
    x = x.astype(np.float32)
    x = x - x.mean(axis=1, keepdims=True)  # the Hann leakage of a DC offset is not sound in the band
    window = _hann(nfft)
    z = np.fft.rfft(x * window, axis=1)
    power = np.mean(np.square(z.real) + np.square(z.imag), axis=0).astype(np.float64)
    freqs = np.fft.rfftfreq(nfft, 1.0 / sample_rate)
    scale = 2.0 / (nfft * float(np.sum(np.square(window, dtype=np.float64))))
    return scale * power[(freqs >= low_hz) & (freqs <= high_hz)]


def spectral_flatness(audio: np.ndarray, sample_rate: int, low_hz: float, high_hz: float, nfft: int = 512) -> float:
    """Wiener entropy (geometric / arithmetic mean) of the Welch power spectrum within [low_hz, high_hz].

    1.0 for white noise, near 0 for a spectrum dominated by a few bands (breath and heart
    sounds fall steeply above a few hundred Hz).
    """
    return _flatness(band_power(audio, sample_rate, low_hz, high_hz, nfft))


def _flatness(band: np.ndarray) -> float:
    if band.size == 0:
        return 0.0
    band = band + _EPS
    return float(np.exp(np.mean(np.log(band))) / np.mean(band))


def _band_db(band: np.ndarray) -> float:
    """dBFS of the band power; -inf for none, NaN when nothing was measured."""
    if band.size == 0:
        return math.nan
    power = float(np.sum(band))
    return 10.0 * math.log10(power) if power > 0 else -math.inf


@lru_cache(maxsize=4)
def _hann(n: int) -> np.ndarray:
    return np.hanning(n).astype(np.float32)


def envelope_spread_db(audio: np.ndarray, sample_rate: int, frame_s: float = 0.1) -> float:
    """p90 - p10 of the 100 ms frame energies in dB: breathing moves it, stationary hiss does not."""
    n = max(1, int(frame_s * sample_rate))
    frames = audio.shape[0] // n
    if frames < 2:
        return 0.0
    energy = np.mean(np.square(audio[: frames * n].reshape(frames, n), dtype=np.float64), axis=1)
    db = 10.0 * np.log10(energy + _EPS)
    p10, p90 = np.percentile(db, [10, 90])
    return float(p90 - p10)


def measure(
    audio: np.ndarray, sample_rate: int, cfg: QualityConfig, clipped: int = 0, invalid: int = 0, span: int = 0
) -> QualityStats:
    """Measure one window: `audio` float32[N] at the model rate (finite), with the input-rate counts
    of samples at full scale (`clipped`) and non-finite (`invalid`) over the `span` input samples it covers."""
    audio = np.asarray(audio, dtype=np.float32)
    band = band_power(audio, sample_rate, cfg.band_low_hz, cfg.band_high_hz)
    return QualityStats(
        rms_db=rms_db(audio),
        clipped_share=clipped / span if span > 0 else 0.0,
        invalid=int(invalid),
        flatness=_flatness(band),
        envelope_db=envelope_spread_db(audio, sample_rate),
        band_db=_band_db(band),
    )


CHECKS = {
    "invalid": "invalid",
    "below_floor": "no_signal",
    "clipping": "clipping",
    "empty_band": "no_signal",
    "too_loud": "too_loud",
    "hiss": "no_signal",
    "too_quiet": "too_quiet",
    "noise": "noise",
}
"""Each check and the verdict it gives, in order of what a person must fix first."""


def checks(stats: QualityStats, cfg: QualityConfig) -> dict[str, bool]:
    """Which checks fire on a window, each on its own (benchmarks count false alarms per check)."""
    flat = stats.flatness
    return {
        "invalid": stats.invalid > 0,
        "below_floor": stats.rms_db < cfg.floor_db,
        "clipping": stats.clipped_share >= cfg.clipped_share,
        # a constant level or a slow drift: loud, yet nothing where breath sounds live (issue 26)
        "empty_band": stats.band_db - stats.rms_db < cfg.band_share_db,
        "too_loud": stats.rms_db > cfg.loud_db,
        "hiss": flat >= cfg.noise_flatness and stats.envelope_db < cfg.envelope_db,
        "too_quiet": stats.rms_db < cfg.quiet_db,
        "noise": flat >= cfg.noise_flatness,
    }


def verdict(stats: QualityStats, cfg: QualityConfig) -> str:
    """The verdict of the first check that fires (`CHECKS` order); `ok` when none does."""
    return next((CHECKS[name] for name, fired in checks(stats, cfg).items() if fired), OK)


def assess(
    audio: np.ndarray, sample_rate: int, cfg: QualityConfig, clipped: int = 0, invalid: int = 0, span: int = 0
) -> Quality:
    """`measure` then `verdict`, timed."""
    t0 = time.perf_counter()
    stats = measure(audio, sample_rate, cfg, clipped, invalid, span)
    return Quality(verdict(stats, cfg), stats, 1000.0 * (time.perf_counter() - t0))


def input_marks(samples: np.ndarray, clip_level: float) -> tuple[np.ndarray, np.ndarray]:
    """(finite copy of `samples` with NaN/inf replaced by 0, per-sample mark float32[n]).

    Mark 2 = non-finite, 1 = at or above `clip_level` in magnitude (full scale), 0 = fine.
    """
    x = np.asarray(samples, dtype=np.float32)
    finite = np.isfinite(x)
    marks = (np.abs(x) >= clip_level).astype(np.float32)
    if not finite.all():
        x = np.where(finite, x, np.float32(0.0))
        marks[~finite] = 2.0
    return x, marks


def nonfinite_runs(audio: np.ndarray, limit: int = 5) -> tuple[int, list[tuple[int, int]]]:
    """(count of NaN/inf samples, the first `limit` runs as [start, end) sample ranges)."""
    bad = ~np.isfinite(np.asarray(audio))
    count = int(bad.sum())
    if count == 0:
        return 0, []
    edges = np.diff(np.concatenate([[0], bad.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return count, [(int(s), int(e)) for s, e in zip(starts[:limit], ends[:limit], strict=True)]


class Guidance:
    """Turns verdicts into messages a person can act on, at most once per `every_s` for a repeat."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.every_s = float(every_s)
        self.reset()

    def reset(self) -> None:
        """Forget what was shown."""
        self._last: str | None = None
        self._shown_at = -math.inf

    def message(self, verdict_name: str, now: float | None = None) -> str | None:
        """The advice for `verdict_name` if it should be shown now; None for `ok` or a recent repeat."""
        now = time.monotonic() if now is None else now
        if verdict_name == OK:
            self._last = None
            return None
        if verdict_name == self._last and now - self._shown_at < self.every_s:
            return None
        self._last, self._shown_at = verdict_name, now
        return GUIDANCE[verdict_name]
