"""What one training epoch draws: its random streams (`EpochRandom`, from `np.random.SeedSequence`),
the sampling order, waveform augmentation, SpecAugment, and `CycleSet`, which batches the training
cycles (features cached once unless the waveform is augmented).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from edge_lung.config import FeatureConfig
from edge_lung.features import cycle_features
from edge_lung.scoring import stack_features
from edge_lung.train.channel import ChannelAugment
from edge_lung.train.config import TrainConfig


@dataclass(frozen=True)
class EpochRandom:
    """The independent random streams of one epoch, spawned from `SeedSequence([seed, epoch])`.

    A function of (seed, epoch) only, so resuming from the checkpoint of epoch k draws what an
    uninterrupted run would have drawn.
    """

    order: torch.Generator  # sampling order
    spec: torch.Generator  # SpecAugment masks
    wave: np.random.Generator  # waveform gain and noise
    dropout_seed: int  # torch's global generator (dropout)

    @classmethod
    def for_epoch(cls, seed: int, epoch: int) -> EpochRandom:
        order, spec, wave, dropout = np.random.SeedSequence([seed, epoch]).spawn(4)

        def torch_seed(seq: np.random.SeedSequence) -> int:
            return int(seq.generate_state(1, np.uint64)[0] >> np.uint64(1))  # fits torch's signed 64 bits

        return cls(
            order=torch.Generator().manual_seed(torch_seed(order)),
            spec=torch.Generator().manual_seed(torch_seed(spec)),
            wave=np.random.default_rng(wave),
            dropout_seed=torch_seed(dropout),
        )


def sample_order(labels: np.ndarray, sampler: str, generator: torch.Generator, num_classes: int) -> np.ndarray:
    """One epoch of indices: 'wrs' draws with replacement, weight 1/count of the class; 'uniform' permutes."""
    n = labels.shape[0]
    if sampler == "uniform":
        return torch.randperm(n, generator=generator).numpy()
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = torch.from_numpy(1.0 / counts[labels])
    return torch.multinomial(weights, n, replacement=True, generator=generator).numpy()


def augment_waveform(audio: np.ndarray, rng: np.random.Generator, cfg: TrainConfig) -> np.ndarray:
    """Random gain (+-gain_db) and white noise at an SNR drawn in [noise_snr_min_db, noise_snr_max_db]."""
    x = np.asarray(audio, dtype=np.float32) * np.float32(10 ** (rng.uniform(-cfg.gain_db, cfg.gain_db) / 20))
    power = float(np.mean(x.astype(np.float64) ** 2))
    if power > 0:
        snr_db = rng.uniform(cfg.noise_snr_min_db, cfg.noise_snr_max_db)
        x = x + rng.standard_normal(x.shape[0]).astype(np.float32) * np.float32(math.sqrt(power / 10 ** (snr_db / 10)))
    return x


def spec_augment(x: torch.Tensor, freq_mask: int, time_mask: int, num_masks: int,
                 generator: torch.Generator) -> torch.Tensor:
    """Zero `num_masks` random frequency bands (< freq_mask bins) and time spans (< time_mask frames) per sample.

    Zero is the mean of the normalised features, as in AST's recipe.
    """
    b, t, m = x.shape
    keep = torch.ones(b, t, m, dtype=torch.bool)
    for _ in range(num_masks):
        for axis, width, size in ((2, freq_mask, m), (1, time_mask, t)):
            if width <= 0:
                continue
            w = torch.randint(0, min(width, size) + 1, (b,), generator=generator)
            start = (torch.rand(b, generator=generator) * (size - w + 1).float()).long()
            pos = torch.arange(size)
            band = (pos[None, :] >= start[:, None]) & (pos[None, :] < (start + w)[:, None])  # [b, size]
            keep &= ~(band[:, None, :] if axis == 2 else band[:, :, None])
    return x * keep.to(x.dtype)


class CycleSet:
    """Training cycles with labels; features cached once unless waveform augmentation is on."""

    def __init__(self, cycles: Sequence, feature_cfg: FeatureConfig, cfg: TrainConfig) -> None:
        self.cycles = list(cycles)
        self.labels = np.array([c.label for c in self.cycles], dtype=np.int64)
        self.feature_cfg = feature_cfg
        self.cfg = cfg
        self.channel = ChannelAugment(feature_cfg.sample_rate) if cfg.channel_aug else None
        # fbank per epoch is wasted work when the waveform never changes
        self.cache = None if cfg.waveform_aug or cfg.channel_aug else stack_features(self.cycles, feature_cfg)

    def __len__(self) -> int:
        return len(self.cycles)

    def class_counts(self, num_classes: int) -> np.ndarray:
        return np.bincount(self.labels, minlength=num_classes)

    def batch(self, indices: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and labels of `indices`; waveforms augmented with `rng` when waveform_aug is on."""
        if self.cache is not None:
            x = self.cache[indices]
        else:
            x = np.stack([cycle_features(self.augment_audio(self.cycles[i].audio, rng), self.feature_cfg)
                          for i in indices])
        return torch.from_numpy(x), torch.from_numpy(self.labels[indices])

    def augment_audio(self, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One draw of the waveform augmentation that is on (channel, then gain and noise) for one cycle."""
        if self.channel is not None:
            audio = self.channel(audio, rng)
        if self.cfg.waveform_aug:
            audio = augment_waveform(audio, rng, self.cfg)
        return audio
