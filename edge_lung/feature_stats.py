"""Per-mel-bin statistics of the model input, and the mapping that moves one stethoscope's onto another's.

A stethoscope's frequency response is a fixed gain per band: in the log-mel domain an offset per mel bin,
and a different spread where its noise floor or bandwidth differs (issue #12). `FeatureStats` holds the
mean and standard deviation of each mel bin over every frame of a set of windows, in the model's input
space (`features.window_features`: the log-mel after the model's normalisation, an affine map of the
log-mel, so the mapping below means the same in either). `Calibration.apply` moves features measured on a
device onto the reference (training) statistics, per bin:

    f' = (f - mu_dev) / max(sd_dev, STD_FLOOR) * sd_ref + mu_ref

`edge-lung export` writes the training split's statistics into the model directory, `edge-lung calibrate`
measures a device's from unannotated recordings (edge_lung/runtime/offline/calibrate.py), and the runtime applies
the mapping in `OnnxClassifier`, before the model. With `mel_norm="window"` every window is already
standardised per bin, so both sides' statistics are about mean 0 / std 0.5 and the mapping is nearly the
identity: calibration only matters for models with the default `mel_norm="global"`.

numpy only (the device side).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_lung.config import FeatureConfig, reject_unknown_keys
from edge_lung.features import BIN_STD_FLOOR, cycle_features

STD_FLOOR = BIN_STD_FLOOR
"""Smallest device std the mapping divides by (0.025 model-input units, about 2 dB): a bin that barely
moves on the device (an empty band above its bandwidth) is centred on the reference mean, not blown up."""


@dataclass(frozen=True)
class FeatureStats:
    """Mean and (population) std of each mel bin over `frames` feature frames from `windows` windows."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    frames: int
    windows: int

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError(f"FeatureStats: expected equal, non-zero numbers of means and stds, got "
                             f"{len(self.mean)} and {len(self.std)}")
        if not all(math.isfinite(v) for v in (*self.mean, *self.std)) or min(self.std) < 0:
            raise ValueError("FeatureStats: expected finite means and finite stds >= 0")
        if self.frames < 2 or self.windows < 1:
            raise ValueError(f"FeatureStats: expected at least 2 frames from 1 window, got {self.frames} frames "
                             f"from {self.windows} windows")

    @property
    def num_bins(self) -> int:
        return len(self.mean)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std), "frames": self.frames, "windows": self.windows}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureStats:
        reject_unknown_keys(data, {"mean", "std", "frames", "windows"}, "feature statistics")
        return cls(tuple(map(float, data["mean"])), tuple(map(float, data["std"])), int(data["frames"]),
                   int(data["windows"]))


class StatsAccumulator:
    """Running per-bin mean and variance over frames, merged window by window in float64.

    Hand-written, not scikit-learn's `StandardScaler.partial_fit` (the same pairwise update of Chan, Golub
    and LeVeque, 1979, which a test checks it against): the device side is numpy + onnxruntime only.
    """

    def __init__(self, num_bins: int) -> None:
        self.num_bins = int(num_bins)
        self.frames = 0
        self.windows = 0
        self._mean = np.zeros(self.num_bins)
        self._m2 = np.zeros(self.num_bins)  # sum of squared deviations from the mean

    def add(self, features: np.ndarray) -> None:
        """One window float[T, M] (or a batch [B, T, M]) of model input."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim not in (2, 3) or x.shape[-1] != self.num_bins:
            raise ValueError(f"StatsAccumulator: expected features [T, {self.num_bins}] or [B, T, "
                             f"{self.num_bins}], got shape {x.shape}")
        windows = 1 if x.ndim == 2 else x.shape[0]
        x = x.reshape(-1, self.num_bins)
        n_b = x.shape[0]
        if n_b == 0:
            return
        mean_b = x.mean(axis=0)
        m2_b = np.square(x - mean_b).sum(axis=0)
        n = self.frames + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / n)
        self._m2 = self._m2 + m2_b + np.square(delta) * (self.frames * n_b / n)
        self.frames, self.windows = n, self.windows + windows

    def stats(self) -> FeatureStats:
        """The statistics so far; `ValueError` before two frames have been added."""
        if self.frames < 2:
            raise ValueError(f"feature statistics: expected at least 2 frames, got {self.frames}")
        std = np.sqrt(self._m2 / self.frames)
        return FeatureStats(tuple(self._mean.tolist()), tuple(std.tolist()), self.frames, self.windows)


def feature_stats(windows: Iterable[np.ndarray], num_bins: int) -> FeatureStats:
    """`FeatureStats` of model-input windows float[T, M] (or batches [B, T, M])."""
    acc = StatsAccumulator(num_bins)
    for x in windows:
        acc.add(x)
    return acc.stats()


def cycles_feature_stats(cycles: Sequence[Any], cfg: FeatureConfig) -> FeatureStats:
    """`FeatureStats` of cycles (anything with `.audio`) as training sees them: `cycle_features`, no augmentation."""
    if not cycles:
        raise ValueError("feature statistics: expected at least one cycle, got none")
    return feature_stats((cycle_features(c.audio, cfg) for c in cycles), cfg.num_mel_bins)


@dataclass(frozen=True)
class Calibration:
    """The mapping from one device's feature statistics onto the reference (training) statistics."""

    reference: FeatureStats
    device: FeatureStats

    def __post_init__(self) -> None:
        if self.reference.num_bins != self.device.num_bins:
            raise ValueError(f"calibration: reference statistics have {self.reference.num_bins} mel bins, the "
                             f"device's {self.device.num_bins}; expected the same model's features on both sides")

    @property
    def num_bins(self) -> int:
        return self.reference.num_bins

    @property
    def flat_bins(self) -> int:
        """Bins that barely move on the device (std under `STD_FLOOR`): calibration cannot restore them."""
        return int(sum(s < STD_FLOOR for s in self.device.std))

    def apply(self, features: np.ndarray) -> np.ndarray:
        """float[..., M] -> float32[..., M]: (f - mu_dev) / max(sd_dev, STD_FLOOR) * sd_ref + mu_ref per bin."""
        x = np.asarray(features, dtype=np.float64)
        if x.shape[-1:] != (self.num_bins,):
            raise ValueError(f"calibration: expected features with {self.num_bins} mel bins (last axis), got shape "
                             f"{x.shape}")
        mu_dev, sd_dev = np.asarray(self.device.mean), np.maximum(np.asarray(self.device.std), STD_FLOOR)
        mu_ref, sd_ref = np.asarray(self.reference.mean), np.asarray(self.reference.std)
        return ((x - mu_dev) / sd_dev * sd_ref + mu_ref).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference.to_dict(), "device": self.device.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        """From `to_dict()` output (other keys, such as the measurement's provenance, are left to the caller)."""
        return cls(FeatureStats.from_dict(data["reference"]), FeatureStats.from_dict(data["device"]))
