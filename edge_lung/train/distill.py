"""Knowledge distillation: `edge-lung distill` trains a student on a teacher's soft targets.

`distill(cfg, dcfg)` is `train` with a distillation `Objective` (see `train.loop`): the student is built
from `cfg.backbone` exactly as `edge-lung train` builds a model, trained by the same loop and selected
on the same patient-grouped validation split by the official ICBHI Score, so the result is an ordinary
run directory (`evaluate`, `export`, `classify`, `stream` and `bench` take it unchanged).

- **Targets**: every training item is an annotated cycle (its label) or a window of an `--unlabeled`
  recording (label `UNLABELED`), plus the teacher's logits on the same audio, through the teacher's own
  features (`train.teacher`). Logits are computed once per window, or per augmentation draw when the
  waveform is augmented, and cached on disk per teacher.
- **Loss** (Hinton et al. 2015): `alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
  + (1 - alpha) * cross-entropy` on the items that have a label (the cross-entropy of `train`, label
  smoothing and class weights included); an unlabeled window adds no cross-entropy term.
- **Sampling**: the weighted sampler (`--sampler wrs`) weighs an unlabeled window by the teacher's class.
- **config.json** gains a `distill` section: the teacher (path, kind, SHA-256, features), T, alpha, the
  unlabeled directories with window counts and skipped files, the soft-target cache and the teacher's
  own validation figures; each epoch's validation entry gains `teacher_agreement` (percent of
  validation cycles where the student's class is the teacher's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from edge_lung.config import LABELS, FeatureConfig
from edge_lung.data.icbhi import default_cache_dir
from edge_lung.features import cycle_features
from edge_lung.metrics import score_predictions
from edge_lung.train.augment import CycleSet
from edge_lung.train.config import DistillConfig, TrainConfig, TrainError, resolve_device
from edge_lung.train.loop import Objective, TrainData, train
from edge_lung.train.teacher import SoftTargetCache, Teacher, load_teacher
from edge_lung.train.unlabeled import UNLABELED, UnlabeledDir, UnlabeledWindow, load_unlabeled


def pack_targets(labels: np.ndarray, teacher_logits: np.ndarray) -> torch.Tensor:
    """float32[B, 1 + C]: the label (`UNLABELED` = none) then the teacher's logits; one tensor, so the loop
    slices and moves it like `train`'s labels."""
    return torch.from_numpy(np.concatenate([labels[:, None].astype(np.float32), teacher_logits], axis=1))


def unpack_targets(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels int64[B], teacher logits float32[B, C]) from `pack_targets`."""
    return y[:, 0].round().long(), y[:, 1:]


class DistillSet(CycleSet):
    """Labelled cycles and unlabeled windows, each batch with its soft targets (`pack_targets`).

    `labels` are the sampling classes (an unlabeled window counts as the teacher's class, for the weighted
    sampler); `known` holds the real labels, `UNLABELED` where there is none.
    """

    def __init__(self, cycles: list, windows: list[UnlabeledWindow], features: FeatureConfig, cfg: TrainConfig,
                 targets: SoftTargetCache) -> None:
        super().__init__([*cycles, *windows], features, cfg)
        self.targets = targets
        self.known = np.array([c.label for c in self.cycles], dtype=np.int64)
        self.teacher_logits = targets.logits([c.audio for c in self.cycles], features.sample_rate)
        self.labels = np.where(self.known >= 0, self.known, self.teacher_logits.argmax(axis=1))
        self.num_unlabeled = len(windows)

    def class_counts(self, num_classes: int) -> np.ndarray:
        """Counts of the real labels (unlabeled windows are not counted)."""
        return np.bincount(self.known[self.known >= 0], minlength=num_classes)

    def batch(self, indices: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Student features and packed targets; with waveform augmentation the teacher hears the same draw."""
        if self.cache is not None:
            x, teacher = self.cache[indices], self.teacher_logits[indices]
        else:
            audios = [self.augment_audio(self.cycles[i].audio, rng) for i in indices]
            x = np.stack([cycle_features(a, self.feature_cfg) for a in audios])
            teacher = self.targets.logits(audios, self.feature_cfg.sample_rate)
        return torch.from_numpy(x), pack_targets(self.known[indices], teacher)


class DistillLoss(nn.Module):
    """`alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * ce` on the labelled items of the batch."""

    def __init__(self, ce: nn.Module, temperature: float, alpha: float) -> None:
        super().__init__()
        self.ce, self.temperature, self.alpha = ce, float(temperature), float(alpha)

    def terms(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(KD term scaled by T^2, cross-entropy over the labelled items; 0 when the batch has none)."""
        labels, teacher = unpack_targets(y)
        t = self.temperature
        kd = F.kl_div(F.log_softmax(logits / t, dim=-1), F.log_softmax(teacher / t, dim=-1),
                      reduction="batchmean", log_target=True) * (t * t)
        labelled = labels != UNLABELED
        ce = self.ce(logits[labelled], labels[labelled]) if bool(labelled.any()) else logits.sum() * 0.0
        return kd, ce

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        kd, ce = self.terms(logits, y)
        return self.alpha * kd + (1.0 - self.alpha) * ce


class DistillObjective(Objective):
    """The distillation objective for `train.loop.train`."""

    def __init__(self, dcfg: DistillConfig, teacher: Teacher, targets: SoftTargetCache,
                 windows: list[UnlabeledWindow], sources: list[UnlabeledDir]) -> None:
        self.dcfg, self.teacher, self.targets = dcfg, teacher, targets
        self.windows, self.sources = windows, sources
        self.val_teacher: np.ndarray | None = None

    def training_set(self, cycles: list, features: FeatureConfig, cfg: TrainConfig) -> CycleSet:
        return DistillSet(cycles, self.windows, features, cfg, self.targets)

    def criterion(self, cfg: TrainConfig, data: TrainData, device: torch.device) -> nn.Module:
        return DistillLoss(super().criterion(cfg, data, device), self.dcfg.temperature, self.dcfg.alpha)

    def prepare(self, data: TrainData) -> dict[str, Any]:
        """The teacher's logits on the validation cycles (for agreement) and config.json's `distill` section."""
        self.val_teacher = self.targets.logits([c.audio for c in data.val_cycles], data.features.sample_rate)
        y_val = np.array([c.label for c in data.val_cycles])
        teacher_val = score_predictions(y_val, self.val_teacher.argmax(axis=1))
        return {"distill": {
            "teacher": self.teacher.describe(),
            "temperature": self.dcfg.temperature,
            "alpha": self.dcfg.alpha,
            "unlabeled": [s.to_dict() for s in self.sources],
            "unlabeled_hop_s": self.dcfg.unlabeled_hop_s,
            "unlabeled_windows": len(self.windows),
            "labelled_cycles": len(data.train) - len(self.windows),
            # before the first epoch; with waveform augmentation each draw is looked up as it is made
            "soft_targets": {"cache": str(self.targets.path), "computed": self.targets.computed,
                             "reused": self.targets.reused},
            "teacher_val": {k: teacher_val[k] for k in ("score", "sensitivity", "specificity", "accuracy")},
        }}

    def validate(self, data: TrainData, logits: np.ndarray) -> dict[str, Any]:
        assert self.val_teacher is not None, "prepare() runs before the first validation"
        return {"teacher_agreement": agreement(logits, self.val_teacher)}


def agreement(student_logits: np.ndarray, teacher_logits: np.ndarray) -> float:
    """Percent of items where the student's class is the teacher's."""
    return 100.0 * float(np.mean(student_logits.argmax(axis=1) == teacher_logits.argmax(axis=1)))


def distill(cfg: TrainConfig, dcfg: DistillConfig, console: Any = None) -> Path:
    """Train `cfg.backbone` as a student of `dcfg.teacher`; returns the run directory (see the module docstring).

    The teacher and the unlabeled folders are checked before anything is written.
    """
    if cfg.resume:
        raise TrainError("distill: --resume is not supported; start the student again in a new --out")
    device = str(resolve_device(cfg.device))
    teacher = load_teacher(dcfg.teacher, device=device, threads=cfg.num_threads)
    if tuple(teacher.labels) != LABELS:
        raise TrainError(f"--teacher {dcfg.teacher}: labels {list(teacher.labels)}, the student learns {list(LABELS)}")
    windows, sources = load_unlabeled(dcfg.unlabeled, cfg.feature_config, dcfg.unlabeled_hop_s)
    root = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    targets = SoftTargetCache(root, teacher, batch_size=cfg.eval_batch_size)
    try:
        return train(cfg, console=console, objective=DistillObjective(dcfg, teacher, targets, windows, sources))
    finally:
        targets.close()
