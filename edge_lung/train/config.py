"""Training settings: `TrainConfig` (every option of `edge-lung train`), its validation, `DistillConfig`
(what `edge-lung distill` adds), the option constants and the `resolve_*` helpers that turn
"auto"/unset options into the values a run uses.

Torch-free at import (the model module is imported inside the helpers that need it), so the CLI
reads its defaults from `TrainConfig` without loading torch.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_lung.config import FeatureConfig, dataclass_from_dict
from edge_lung.runtime.artifact.model_dir import usable_cores
from edge_lung.runtime.live.stream import StreamConfig

if TYPE_CHECKING:
    import torch

OPTIMIZERS = ("sam", "asam", "adamw")
SAMPLERS = ("wrs", "uniform")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
PLACEMENTS = ("both", "attention", "mlp")
SELECTIONS = ("val", "last")
NORMAL_MARGINS = ("none", "cross-device")
DEFAULT_RHO = {"sam": 0.05, "asam": 2.0}
# Settings that may differ between an interrupted run and its --resume.
RESUME_FREE = ("resume", "progress", "device", "num_threads", "cache_dir")
_POSITIVE_INTS = ("adapter_width", "lora_rank", "epochs", "eval_batch_size")
# `batch_size=None` (the default): DEFAULT_BATCH_SIZE, halved down to MIN_BATCH_SIZE until an epoch takes at least
# MIN_STEPS_PER_EPOCH optimizer steps (`resolve_batch_size`). On a 60-recording synthetic database (222 training
# cycles) a batch of 32 is 7 steps an epoch and the tiny AST's 30 epochs ended at val Score 70.4; a batch of 16 is
# 14 steps and reached 80+ (benchmarks/results/small-db). The README's 100-recording database (322-375 cycles)
# and the shared real subset (400) keep 32: 11-13 steps an epoch.
DEFAULT_BATCH_SIZE = 32
MIN_BATCH_SIZE = 8
MIN_STEPS_PER_EPOCH = 10
_NON_NEGATIVE = ("warmup_epochs", "weight_decay", "grad_clip", "gain_db", "freq_mask", "time_mask", "num_masks")


class TrainError(ValueError):
    """Bad training input (data, run directory, settings), with what was expected."""


@dataclass(frozen=True)
class TrainConfig:
    """Every option of `edge-lung train`; recorded in the run's config.json.

    `max_cycles` trains on a random subset (quick checks); validation always uses the whole
    split, so `edge-lung evaluate RUN --split val` reproduces the selection figures.
    The sampler and SpecAugment default to off: with them on, the from-scratch tiny model stays at
    chance for 12+ epochs on the synthetic database (it learns with uniform sampling). Turn them
    on (`sampler="wrs"`, `spec_augment=True`) for the LungAdapter recipe on real ICBHI data.
    `adapter="auto"` means LungAdapter for a checkpoint backbone and a full fine-tune for a
    named size (adapters on a frozen random backbone learn little). `lr=None` and `rho=None`
    resolve to per-setting defaults, recorded in config.json; so does `batch_size=None`, by the size of the
    training set (`resolve_batch_size`: smaller batches on a small database, so that it still gets enough
    optimizer steps).
    """

    data: str
    out: str | None = None
    recipe: str | None = None
    backbone: str = "tiny"
    allow_download: bool = False
    adapter: str = "auto"
    adapter_width: int = 64
    adapter_scale: float = 0.1
    adapter_placement: str = "both"
    lora_rank: int = 8
    optimizer: str = "sam"
    rho: float | None = None
    lr: float | None = None
    min_lr_ratio: float = 0.01
    weight_decay: float = 0.01
    epochs: int = 30
    warmup_epochs: float = 1.0
    batch_size: int | None = None
    grad_clip: float = 1.0
    label_smoothing: float = 0.1
    sampler: str = "uniform"
    class_weighted_loss: bool = False
    spec_augment: bool = False
    freq_mask: int = 24
    time_mask: int = 96
    num_masks: int = 1
    waveform_aug: bool = False
    channel_aug: bool = False
    mel_norm: str = "global"
    gain_db: float = 6.0
    noise_snr_min_db: float = 20.0
    noise_snr_max_db: float = 40.0
    val_fraction: float = 0.2
    val_seed: int = 0
    val_devices: str | None = None
    exclude_devices: str | None = None
    select: str = "val"
    normal_margin: str = "none"
    max_cycles: int | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    num_threads: int | None = None
    eval_batch_size: int = 32
    cache_dir: str | None = None
    features: dict[str, Any] = field(default_factory=lambda: FeatureConfig().to_dict())
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        self._check_choices()
        self._check_recipe()
        self._check_ranges()
        self.feature_config  # noqa: B018  (validates features and mel_norm)

    def _check_choices(self) -> None:
        from edge_lung.train.model import ADAPTERS, check_adapter

        choices = {
            "adapter": ("auto", *ADAPTERS),
            "optimizer": OPTIMIZERS,
            "sampler": SAMPLERS,
            "device": DEVICES,
            "precision": PRECISIONS,
            "adapter_placement": PLACEMENTS,
            "select": SELECTIONS,
            "normal_margin": NORMAL_MARGINS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: expected one of {allowed}, got {getattr(self, name)!r}")
        check_adapter(self.backbone, self.adapter)  # before anything is written: a CNN takes no adapter

    def _check_recipe(self) -> None:
        from edge_lung.train.recipes import RECIPES, recipe_id

        if self.recipe is not None and self.recipe not in {recipe_id(n) for n in RECIPES} | set(RECIPES):
            raise ValueError(f"recipe: expected one of {sorted(RECIPES)}, got {self.recipe!r}")

    def _check_ranges(self) -> None:
        for name in _POSITIVE_INTS:
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        for name in ("lr", "rho"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name}: expected > 0 (or unset for the default), got {value}")
        for name in ("max_cycles", "num_threads", "batch_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"{name}: expected a positive integer or unset, got {value!r}")
        for name in _NON_NEGATIVE:
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing: expected 0 <= x < 1, got {self.label_smoothing}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio: expected 0 <= x <= 1, got {self.min_lr_ratio}")
        if self.noise_snr_min_db > self.noise_snr_max_db:
            raise ValueError(
                f"noise_snr_min_db/noise_snr_max_db: expected min <= max, got "
                f"{self.noise_snr_min_db} / {self.noise_snr_max_db}"
            )

    @property
    def feature_config(self) -> FeatureConfig:
        """The run's features: `features` with `mel_norm` (the option that can change them) applied."""
        return FeatureConfig.from_dict({**self.features, "mel_norm": self.mel_norm})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return dataclass_from_dict(cls, data)


# `edge-lung distill`'s student when none is named, by measurement (benchmarks/results/distill, synthetic test
# split): taught by a tiny AST at Score 88.6, the MobileNet student distilled at T 2 scored 93.0 with 92.1%
# agreement, the tiny AST student 84.8 with 90.7%; taught by a tiny AST at 96.6, the 64-bin MobileNet agreed
# 95.8% on each of seeds 0-2 (Score 98.0-99.0), the 128-bin one 93.5-96.3% (96.5-99.5). AdamW: how each was
# measured.
DEFAULT_STUDENT = "mobilenet"
DEFAULT_STUDENT_OPTIMIZER = "adamw"
# A student's own front end where one measured better than the standard features' 128 bins: the 64-bin
# MobileNet agrees more with its teacher (above) at half the MACs (0.094 GMAC) and its INT8 holds with the
# x86-avx2 and arm64 presets on 3 seeds (benchmarks/results/students/int8.md). Recorded in the student's model
# like any front end.
STUDENT_MEL_BINS: dict[str, int] = {"mobilenet": 64}


def student_features(student: str) -> dict[str, Any]:
    """The standard features with `student`'s measured front end (`STUDENT_MEL_BINS`) applied."""
    features = FeatureConfig().to_dict()
    if student in STUDENT_MEL_BINS:
        features["num_mel_bins"] = STUDENT_MEL_BINS[student]
    return features


@dataclass(frozen=True)
class DistillConfig:
    """What `edge-lung distill` adds to the training options; recorded in config.json's `distill` section."""

    teacher: str
    temperature: float = 2.0
    alpha: float = 0.5
    unlabeled: tuple[str, ...] = ()
    unlabeled_hop_s: float = StreamConfig.hop_s

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature (--temperature): expected > 0, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha (--alpha): expected 0 <= alpha <= 1, got {self.alpha}")
        if not (math.isfinite(self.unlabeled_hop_s) and self.unlabeled_hop_s > 0):
            raise ValueError(f"unlabeled_hop_s (--unlabeled-hop): expected seconds > 0, got {self.unlabeled_hop_s}")
        object.__setattr__(self, "unlabeled", tuple(str(d) for d in self.unlabeled))


def resolve_adapter(cfg: TrainConfig) -> str:
    """The adapter a run trains: `cfg.adapter`, or for "auto" LungAdapter on an AST checkpoint, none on a named
    size or a CNN."""
    from edge_lung.train.model import backbone_kind, is_cnn_backbone

    if cfg.adapter != "auto":
        return cfg.adapter
    return "none" if backbone_kind(cfg.backbone) == "size" or is_cnn_backbone(cfg.backbone) else "lung"


def resolve_lr(cfg: TrainConfig, adapter: str) -> float:
    """Default learning rate: adapters 1e-3; full fine-tune 1e-3 from scratch (tiny) / 3e-4, 5e-5 pretrained;
    a CNN 3e-3 (the students' measured rate: benchmarks/results/distill, where 3e-4 validated as all-"normal")."""
    from edge_lung.train.model import backbone_kind, is_cnn_backbone

    if cfg.lr is not None:
        return cfg.lr
    if adapter != "none":
        return 1e-3
    if is_cnn_backbone(cfg.backbone):
        return 3e-3
    if backbone_kind(cfg.backbone) == "size":
        return 1e-3 if cfg.backbone == "tiny" else 3e-4
    return 5e-5


def resolve_batch_size(cfg: TrainConfig, train_size: int) -> int:
    """The global batch of a run on `train_size` training samples: `cfg.batch_size`, or DEFAULT_BATCH_SIZE halved
    (not below MIN_BATCH_SIZE) until an epoch takes at least MIN_STEPS_PER_EPOCH optimizer steps."""
    if cfg.batch_size is not None:
        return cfg.batch_size
    batch = DEFAULT_BATCH_SIZE
    while batch > MIN_BATCH_SIZE and math.ceil(train_size / batch) < MIN_STEPS_PER_EPOCH:
        batch //= 2
    return batch


def resolve_rho(cfg: TrainConfig) -> float | None:
    """SAM's neighbourhood size: `cfg.rho`, or the optimizer's default; None for plain AdamW."""
    if cfg.optimizer == "adamw":
        return None
    return cfg.rho if cfg.rho is not None else DEFAULT_RHO[cfg.optimizer]


def resolve_device(device: str) -> torch.device:
    """The torch device of `--device` (auto: CUDA when torch sees one)."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainError("--device cuda: no CUDA device is available to torch here; use --device cpu or auto")
    return torch.device(device)


def default_run_dir(cfg: TrainConfig, adapter: str) -> Path:
    """runs/<backbone>-<adapter>-<optimizer>-seed<N>-<time> when no --out is given."""
    from edge_lung.train.model import SIZES

    name = cfg.backbone if cfg.backbone in SIZES else Path(cfg.backbone.rstrip("/")).name
    return Path("runs") / f"{name}-{adapter}-{cfg.optimizer}-seed{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_num_threads(num_threads: int | None) -> None:
    """--num-threads: unset (torch decides) or 1 to the cores this process may use, as the runtime bounds --threads
    (500 threads on 2 cores made an epoch 3.5x slower, issue 26). Checked when a command starts a run, not in
    `TrainConfig`: a run's config.json is read again on machines with other core counts."""
    if num_threads is None:
        return
    cores = usable_cores()
    if not 1 <= num_threads <= cores:
        raise ValueError(f"--num-threads: expected 1 to {cores} (the cores this process may use), or unset to let "
                         f"torch decide, got {num_threads}; more threads than cores only adds contention")
