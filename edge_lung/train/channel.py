"""Channel augmentation (issue #12): each training cycle as another stethoscope might deliver it.

Device shift in ICBHI is mostly the channel: band limits (the Littmann 3200 records at 4 kHz),
a per-band response (membrane, bell, microphone), level and noise floor. `ChannelAugment` draws
one of each on the waveform with audiomentations' filters plus `edge_lung.audio.degrade` for the
resample-through-a-low-rate band limit (audiomentations has no such transform). Length, rate and
dtype are kept, so the cycle then goes through the one feature function like any other.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from edge_lung.audio import degrade

_BAND_LIMITS = ("4k", "8k", "lowpass")


@contextmanager
def _seeded_globals(seed: int) -> Iterator[None]:
    """audiomentations draws from Python's and numpy's global generators: seed both from the
    caller's stream for the call, then put their states back, so a run's other draws are unchanged."""
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


class ChannelAugment:
    """Random band limit (p_band: through 4 or 8 kHz, or a 1.5-8 kHz low-pass), EQ / spectral tilt, gain
    and noise at a random SNR; `__call__(audio, rng)` is a function of the audio and `rng`'s state only."""

    def __init__(self, sample_rate: int, p_band: float = 0.5, p_eq: float = 0.5, p_noise: float = 0.5,
                 gain_db: float = 6.0, snr_db: tuple[float, float] = (15.0, 40.0)) -> None:
        try:
            import audiomentations as am
        except ImportError as exc:
            raise ImportError("channel augmentation needs audiomentations: pip install 'edge-lung[train]'") from exc
        self.sample_rate = sample_rate
        self.p_band = p_band
        nyquist = sample_rate / 2
        self.lowpass = am.LowPassFilter(min_cutoff_freq=1500.0, max_cutoff_freq=min(8000.0, 0.95 * nyquist), p=1.0)
        self.rest = am.Compose([
            am.SevenBandParametricEQ(min_gain_db=-6.0, max_gain_db=6.0, p=p_eq),
            am.OneOf([am.HighShelfFilter(min_gain_db=-12.0, max_gain_db=6.0, max_center_freq=0.9 * nyquist, p=1.0),
                      am.LowShelfFilter(min_gain_db=-6.0, max_gain_db=12.0, p=1.0)], p=p_eq),
            am.Gain(min_gain_db=-gain_db, max_gain_db=gain_db, p=1.0),
            am.AddGaussianSNR(min_snr_db=snr_db[0], max_snr_db=snr_db[1], p=p_noise),
        ])

    def __call__(self, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = np.ascontiguousarray(audio, dtype=np.float32)
        if x.shape[0] < 64:  # shorter than the filters' state: nothing a channel could shape
            return x
        band = _BAND_LIMITS[rng.integers(len(_BAND_LIMITS))] if rng.random() < self.p_band else None
        seed = int(rng.integers(2**31))
        with _seeded_globals(seed):
            if band == "lowpass":
                x = self.lowpass(x, sample_rate=self.sample_rate)
            elif band is not None:
                x = degrade(x, self.sample_rate, band)
            x = self.rest(x, sample_rate=self.sample_rate)
        return np.asarray(x, dtype=np.float32)
