"""Training: AST + adapter on ICBHI cycles, SAM/ASAM, weighted sampling, honest model selection.

`train(TrainConfig(...))` writes a run directory:

    config.json            resolved settings, labels, features, data dir, parameter counts, "best"
    model/backbone/        save_pretrained of the backbone (the whole trained model when --adapter none)
    model/adapter/         PEFT save_pretrained of the trained adapter + head (lung / lora)
    metrics.json           one entry per epoch: train loss, lr, samples/s, validation ICBHI figures
    confusion_matrix.png   validation confusion matrix of the selected epoch
    training_curve.png     train loss and validation Score per epoch
    checkpoint.pt          last finished epoch (trainable weights, optimizer state, history) for --resume

Every file is written to a temp name and `os.replace`d. The checkpoint is selected on the
patient-grouped validation split only; the test split is never read here.

Each epoch draws its sampling order, augmentation and dropout from generators seeded by
(seed, epoch), so resuming from the checkpoint of epoch k reproduces an uninterrupted run.

Multi-GPU: launch the same command under `accelerate launch` (or `torchrun`), e.g.
`accelerate launch --multi_gpu --num_processes 4 "$(which edge-lung)" train --data DB ...`.
Each process takes a slice of every global batch; SAM's first backward runs under
`no_sync()` (no gradient all-reduce for the perturbation; each process perturbs with its own
gradient, as in the SAM paper's m-sharpness) and the second backward synchronises.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_lung.config import LABELS, FeatureConfig, dataclass_from_dict
from edge_lung.data.icbhi import load_split
from edge_lung.features import cycle_features
from edge_lung.fileio import atomic_path, atomic_write_json
from edge_lung.scoring import evaluate_cycles, stack_features
from edge_lung.train.model import (
    ADAPTERS,
    RUN_CONFIG,
    SIZES,
    attach_adapter,
    backbone_kind,
    count_parameters,
    load_backbone,
    save_backbone,
    save_trained,
)
from edge_lung.train.sam import SAM

log = logging.getLogger(__name__)

RUN_FORMAT = 1
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
OPTIMIZERS = ("sam", "asam", "adamw")
SAMPLERS = ("wrs", "uniform")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
DEFAULT_RHO = {"sam": 0.05, "asam": 2.0}
# Settings that may differ between an interrupted run and its --resume.
RESUME_FREE = ("resume", "progress", "device", "num_threads", "cache_dir")


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
    resolve to per-setting defaults, recorded in config.json.
    """

    data: str
    out: str | None = None
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
    batch_size: int = 32
    grad_clip: float = 1.0
    label_smoothing: float = 0.1
    sampler: str = "uniform"
    class_weighted_loss: bool = False
    spec_augment: bool = False
    freq_mask: int = 24
    time_mask: int = 96
    num_masks: int = 1
    waveform_aug: bool = False
    gain_db: float = 6.0
    noise_snr_min_db: float = 20.0
    noise_snr_max_db: float = 40.0
    val_fraction: float = 0.2
    val_seed: int = 0
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
        choices = {
            "adapter": ("auto", *ADAPTERS),
            "optimizer": OPTIMIZERS,
            "sampler": SAMPLERS,
            "device": DEVICES,
            "precision": PRECISIONS,
            "adapter_placement": ("both", "attention", "mlp"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: expected one of {allowed}, got {getattr(self, name)!r}")
        positive = ("adapter_width", "lora_rank", "epochs", "batch_size", "eval_batch_size")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        for name in ("lr", "rho"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name}: expected > 0 (or unset for the default), got {value}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing: expected 0 <= x < 1, got {self.label_smoothing}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio: expected 0 <= x <= 1, got {self.min_lr_ratio}")
        for name in ("warmup_epochs", "weight_decay", "grad_clip", "gain_db"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)}")
        for name in ("freq_mask", "time_mask", "num_masks"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)}")
        if self.noise_snr_min_db > self.noise_snr_max_db:
            raise ValueError(
                f"noise_snr_min_db/noise_snr_max_db: expected min <= max, got "
                f"{self.noise_snr_min_db} / {self.noise_snr_max_db}"
            )
        if self.max_cycles is not None and self.max_cycles <= 0:
            raise ValueError(f"max_cycles: expected a positive count or unset, got {self.max_cycles}")
        if self.num_threads is not None and self.num_threads <= 0:
            raise ValueError(f"num_threads: expected a positive count or unset, got {self.num_threads}")
        FeatureConfig.from_dict(self.features)  # validates

    @property
    def feature_config(self) -> FeatureConfig:
        return FeatureConfig.from_dict(self.features)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return dataclass_from_dict(cls, data)


# ---------------------------------------------------------------------------------------------
# Pure pieces: schedule, resolved settings


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float = 0.0) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warm-up, then cosine to `min_lr`."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def resolve_adapter(cfg: TrainConfig) -> str:
    if cfg.adapter != "auto":
        return cfg.adapter
    return "none" if backbone_kind(cfg.backbone) == "size" else "lung"


def resolve_lr(cfg: TrainConfig, adapter: str) -> float:
    """Default learning rate: adapters 1e-3; full fine-tune 1e-3 from scratch (tiny) / 3e-4, 5e-5 pretrained."""
    if cfg.lr is not None:
        return cfg.lr
    if adapter != "none":
        return 1e-3
    if backbone_kind(cfg.backbone) == "size":
        return 1e-3 if cfg.backbone == "tiny" else 3e-4
    return 5e-5


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainError("--device cuda: no CUDA device is available to torch here; use --device cpu or auto")
    return torch.device(device)


def default_run_dir(cfg: TrainConfig, adapter: str) -> Path:
    name = cfg.backbone if cfg.backbone in SIZES else Path(cfg.backbone.rstrip("/")).name
    return Path("runs") / f"{name}-{adapter}-{cfg.optimizer}-seed{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


# ---------------------------------------------------------------------------------------------
# Data


class CycleSet:
    """Training cycles with labels; features cached once unless waveform augmentation is on."""

    def __init__(self, cycles: Sequence, feature_cfg: FeatureConfig, cfg: TrainConfig) -> None:
        self.cycles = list(cycles)
        self.labels = np.array([c.label for c in self.cycles], dtype=np.int64)
        self.feature_cfg = feature_cfg
        self.cfg = cfg
        # fbank per epoch is wasted work when the waveform never changes
        self.cache = None if cfg.waveform_aug else stack_features(self.cycles, feature_cfg)

    def __len__(self) -> int:
        return len(self.cycles)

    def class_counts(self, num_classes: int) -> np.ndarray:
        return np.bincount(self.labels, minlength=num_classes)

    def batch(self, indices: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cache is not None:
            x = self.cache[indices]
        else:
            x = np.stack([self._augmented(self.cycles[i].audio, rng) for i in indices])
        return torch.from_numpy(x), torch.from_numpy(self.labels[indices])

    def _augmented(self, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return cycle_features(augment_waveform(audio, rng, self.cfg), self.feature_cfg)


def augment_waveform(audio: np.ndarray, rng: np.random.Generator, cfg: TrainConfig) -> np.ndarray:
    """Random gain (+-gain_db) and white noise at an SNR drawn in [noise_snr_min_db, noise_snr_max_db]."""
    x = np.asarray(audio, dtype=np.float32) * np.float32(10 ** (rng.uniform(-cfg.gain_db, cfg.gain_db) / 20))
    power = float(np.mean(x.astype(np.float64) ** 2))
    if power > 0:
        snr_db = rng.uniform(cfg.noise_snr_min_db, cfg.noise_snr_max_db)
        x = x + rng.standard_normal(x.shape[0]).astype(np.float32) * np.float32(math.sqrt(power / 10 ** (snr_db / 10)))
    return x


def sample_order(labels: np.ndarray, sampler: str, generator: torch.Generator, num_classes: int) -> np.ndarray:
    """One epoch of indices: 'wrs' draws with replacement, weight 1/count of the class; 'uniform' permutes."""
    n = labels.shape[0]
    if sampler == "uniform":
        return torch.randperm(n, generator=generator).numpy()
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = torch.from_numpy(1.0 / counts[labels])
    return torch.multinomial(weights, n, replacement=True, generator=generator).numpy()


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


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + 17) % (2**63 - 1)


# ---------------------------------------------------------------------------------------------
# Model / optimizer


def make_optimizer(params: list[nn.Parameter], cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    base = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return base
    rho = cfg.rho if cfg.rho is not None else DEFAULT_RHO[cfg.optimizer]
    return SAM(base, rho=rho, adaptive=cfg.optimizer == "asam")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The schedule drives the base optimizer (SAM shares its param_groups)."""
    target = optimizer.base_optimizer if isinstance(optimizer, SAM) else optimizer
    for group in target.param_groups:
        group["lr"] = lr


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    grad_clip: float = 0.0,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    no_sync: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> float:
    """One optimizer step on (x, y); returns the loss at the current weights."""
    params = [p for g in optimizer.param_groups for p in g["params"]]

    def loss_at_current_weights() -> torch.Tensor:
        with autocast():
            logits = model(x)
        return loss_fn(logits.float(), y)

    if isinstance(optimizer, SAM):
        with no_sync():  # the perturbation uses this process's gradient: no all-reduce
            loss = loss_at_current_weights()
            loss.backward()
        optimizer.first_step(zero_grad=True)
        loss_at_current_weights().backward()  # gradient at w + e(w), synchronised under DDP
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.second_step(zero_grad=True)
    else:
        loss = loss_at_current_weights()
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


# ---------------------------------------------------------------------------------------------
# Run directory


def _atomic_torch_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _comparable(train_cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in train_cfg.items() if k not in RESUME_FREE}


def prepare_run_dir(cfg: TrainConfig, run_dir: Path) -> dict[str, Any] | None:
    """Check the run directory before anything is written; returns the checkpoint to resume from, if any."""
    config_path = run_dir / RUN_CONFIG
    if not cfg.resume:
        if run_dir.exists() and any(run_dir.iterdir()):
            raise TrainError(
                f"{run_dir}: already exists and is not empty; pass --resume to continue that run, or another --out"
            )
        return None
    if not config_path.is_file():
        raise TrainError(f"--resume {run_dir}: no {RUN_CONFIG}; expected a run directory written by `edge-lung train`")
    try:
        saved = json.loads(config_path.read_text())["train"]
    except (json.JSONDecodeError, KeyError) as exc:
        raise TrainError(f"{config_path}: not a readable run config ({exc})") from exc
    now = cfg.to_dict()
    now["out"] = saved.get("out")
    diff = {k: (saved.get(k), v) for k, v in _comparable(now).items() if saved.get(k) != v}
    if diff:
        lines = ", ".join(f"{k}: run has {a!r}, now {b!r}" for k, (a, b) in sorted(diff.items()))
        raise TrainError(f"--resume {run_dir}: settings differ from the interrupted run ({lines}); nothing changed")
    ckpt_path = run_dir / CHECKPOINT
    if not ckpt_path.is_file():
        return None  # interrupted before the first epoch finished: start over in the same directory
    try:
        return torch.load(ckpt_path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise TrainError(f"{ckpt_path}: corrupt checkpoint ({type(exc).__name__}: {exc}); cannot resume") from exc


def _plot_run(run_dir: Path, history: list[dict[str, Any]], best: dict[str, Any], labels: Sequence[str]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib not installed (pip install matplotlib): no PNGs in %s", run_dir)
        return
    epochs = [h["epoch"] for h in history]
    fig, ax1 = plt.subplots(figsize=(6, 3.5))
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", color="tab:blue", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("train loss", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.plot(epochs, [h["val"]["score"] for h in history], "s-", color="tab:red", label="val ICBHI Score")
    ax2.set_ylabel("val ICBHI Score (%)", color="tab:red")
    ax1.set_title("Training curve")
    fig.tight_layout()
    _save_fig(fig, run_dir / "training_curve.png")
    plt.close(fig)

    cm = np.array(best["val"]["confusion_matrix"])
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=30)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="black")
    ax.set_title(f"val, epoch {best['epoch']}: Score {best['val']['score']:.1f}")
    fig.tight_layout()
    _save_fig(fig, run_dir / "confusion_matrix.png")
    plt.close(fig)


def _save_fig(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)


# ---------------------------------------------------------------------------------------------
# The loop


@dataclass
class _Dist:
    """Single process, or one process of an accelerate/torchrun launch."""

    accelerator: Any = None
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()


def _setup_dist() -> _Dist:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return _Dist()
    try:
        from accelerate import Accelerator
    except ImportError as exc:
        raise ImportError("multi-process training needs accelerate: pip install 'edge-lung[train]'") from exc
    acc = Accelerator(mixed_precision="no")  # bf16 autocast is ours; never accelerate's fp16 without a scaler
    return _Dist(acc, acc.process_index, acc.num_processes)


def _subset(cycles: list, limit: int | None, seed: int) -> list:
    if limit is None or len(cycles) <= limit:
        return cycles
    keep = np.sort(np.random.default_rng(seed).choice(len(cycles), size=limit, replace=False))
    return [cycles[i] for i in keep]


def train(
    cfg: TrainConfig,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    console: Any = None,
) -> Path:
    """Train one run as `cfg` says; returns the run directory (see the module docstring)."""
    dist = _setup_dist()
    _quiet_transformers()
    adapter = resolve_adapter(cfg)
    run_dir = Path(cfg.out) if cfg.out else default_run_dir(cfg, adapter)
    checkpoint = prepare_run_dir(cfg, run_dir)
    dist.barrier()  # every process has checked the run directory before any of them writes to it
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = dist.accelerator.device if dist.accelerator is not None else resolve_device(cfg.device)
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    if use_bf16 and device.type != "cuda":
        raise TrainError(f"--precision bf16: autocast is used on CUDA only, got device {device}; use fp32 on CPU")
    feature_cfg = cfg.feature_config
    if not Path(cfg.data).is_dir():
        raise TrainError(f"--data {cfg.data}: no such directory; expected an ICBHI-layout database")

    labels = list(LABELS)
    torch.manual_seed(cfg.seed)  # the initial weights of a named size depend on the seed only
    base = load_backbone(cfg.backbone, feature_cfg, len(labels), allow_download=cfg.allow_download)

    train_cycles = _subset(load_split(cfg.data, "train", feature_cfg, cfg.val_fraction, cfg.val_seed, cfg.cache_dir),
                           cfg.max_cycles, cfg.seed)
    try:
        val_cycles = load_split(cfg.data, "val", feature_cfg, cfg.val_fraction, cfg.val_seed, cfg.cache_dir)
    except ValueError as exc:
        raise TrainError(f"{exc}; model selection needs a validation split (raise --val-fraction)") from exc
    kinds = {c.label > 0 for c in val_cycles}
    if kinds != {False, True}:  # the ICBHI Score would be NaN and selection would freeze on epoch 1
        raise TrainError(
            f"{cfg.data}: the validation split has {'no abnormal' if True not in kinds else 'no normal'} cycles, "
            "so its ICBHI Score is undefined; change --val-fraction or --val-seed"
        )
    data = CycleSet(train_cycles, feature_cfg, cfg)
    counts = data.class_counts(len(labels))
    val_features = stack_features(val_cycles, feature_cfg)

    lr = resolve_lr(cfg, adapter)
    rho = None if cfg.optimizer == "adamw" else (cfg.rho if cfg.rho is not None else DEFAULT_RHO[cfg.optimizer])
    run_dir.mkdir(parents=True, exist_ok=True)
    if adapter != "none" and dist.main and checkpoint is None:
        save_backbone(base, run_dir)  # frozen: saved once, the adapter goes to model/adapter
    model = attach_adapter(base, adapter, cfg.adapter_width, cfg.adapter_scale, cfg.adapter_placement, cfg.lora_rank)
    trainable, total = count_parameters(model)
    model.to(device)

    from edge_lung.train.model import LogitsModel

    net: nn.Module = LogitsModel(model)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, cfg, lr)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    start_epoch = 1
    if checkpoint is not None:
        _restore(net, optimizer, checkpoint, run_dir)
        history, best, start_epoch = checkpoint["history"], checkpoint["best"], checkpoint["epoch"] + 1
    if dist.accelerator is not None:
        net = dist.accelerator.prepare_model(net)

    run_config = {
        "format": RUN_FORMAT,
        "train": cfg.to_dict() | {"out": str(run_dir)},
        "labels": labels,
        "features": feature_cfg.to_dict(),
        "data": str(Path(cfg.data).resolve()),
        "backbone": cfg.backbone,
        "backbone_kind": backbone_kind(cfg.backbone),
        "adapter": adapter,
        "lr": lr,
        "rho": rho,
        "precision": "bf16" if use_bf16 else "fp32",
        "world_size": dist.world,
        "parameters": {"trainable": trainable, "total": total, "trainable_percent": 100.0 * trainable / total},
        "train_cycles": len(data),
        "train_class_counts": counts.tolist(),
        "val_cycles": len(val_cycles),
        "best": best,
        "status": "running",
    }
    if dist.main:
        atomic_write_json(run_dir / RUN_CONFIG, run_config)

    steps_per_epoch = math.ceil(len(data) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))
    class_weights = None
    if cfg.class_weighted_loss:
        w = counts.sum() / (len(labels) * np.maximum(counts, 1))
        class_weights = torch.tensor(w, dtype=torch.float32, device=device)
    criterion = nn.CrossEntropyLoss(weight=class_weights, label_smoothing=cfg.label_smoothing)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext
    no_sync = (lambda: dist.accelerator.no_sync(net)) if dist.accelerator is not None else contextlib.nullcontext
    inner = dist.accelerator.unwrap_model(net) if dist.accelerator is not None else net

    def logits_fn(x: np.ndarray) -> np.ndarray:
        with torch.no_grad(), autocast():
            return inner(torch.from_numpy(x).to(device)).float().cpu().numpy()

    reporter = _Reporter(cfg.progress and dist.main, console)
    reporter.start(run_dir, run_config, steps_per_epoch, start_epoch, cfg.epochs)
    t_run = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs + 1):
        gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
        rng = np.random.default_rng(epoch_seed(cfg.seed, epoch))
        torch.manual_seed(epoch_seed(cfg.seed, epoch))  # dropout
        order = sample_order(data.labels, cfg.sampler, gen, len(labels))
        net.train()
        t0, seen, losses = time.perf_counter(), 0, []
        for i in range(steps_per_epoch):
            step = (epoch - 1) * steps_per_epoch + i
            set_lr(optimizer, lr_at(step, total_steps, warmup_steps, lr, lr * cfg.min_lr_ratio))
            idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            if dist.world > 1 and len(idx) < cfg.batch_size:  # every process needs samples of the last batch
                idx = np.resize(idx, cfg.batch_size)
            x, y = data.batch(idx, rng)
            if cfg.spec_augment:
                x = spec_augment(x, cfg.freq_mask, cfg.time_mask, cfg.num_masks, gen)
            x, y = x[dist.rank :: dist.world].to(device), y[dist.rank :: dist.world].to(device)
            loss = train_step(net, optimizer, x, y, criterion, cfg.grad_clip, autocast, no_sync)
            losses.append(loss)
            seen += len(idx)
            reporter.step(loss, optimizer.param_groups[0]["lr"], seen / (time.perf_counter() - t0))
        train_seconds = time.perf_counter() - t0
        entry: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            "lr": optimizer.param_groups[0]["lr"],
            "samples_per_s": seen / train_seconds,
            "seconds": train_seconds,
        }
        if dist.main:
            inner.eval()
            entry["val"] = evaluate_cycles(val_cycles, feature_cfg, logits_fn, cfg.eval_batch_size,
                                           features=val_features, labels=labels)
            improved = best is None or entry["val"]["score"] > best["val"]["score"]
            entry["selected"] = improved
            history.append(entry)
            if improved:
                best = {"epoch": epoch, "val": entry["val"]}
                save_trained(model, run_dir, epoch)
                run_config["best"] = best
                atomic_write_json(run_dir / RUN_CONFIG, run_config)
            atomic_write_json(run_dir / METRICS, history)
            _plot_run(run_dir, history, best, labels)
            _atomic_torch_save(
                {"epoch": epoch, "history": history, "best": best, "optimizer": optimizer.state_dict(),
                 "trainable": {n: p.detach().cpu() for n, p in inner.named_parameters() if p.requires_grad}},
                run_dir / CHECKPOINT,
            )
            reporter.epoch(entry, best)
        dist.barrier()
        if on_epoch_end is not None:
            on_epoch_end(epoch, entry)
    run_config["status"] = "done"
    run_config["train_seconds"] = time.perf_counter() - t_run
    if dist.main:
        atomic_write_json(run_dir / RUN_CONFIG, run_config)
    reporter.finish(run_dir, run_config)
    return run_dir


def _quiet_transformers() -> None:
    """transformers' own tqdm bars ("Writing model shards") would tear through our progress display."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    # peft 0.21 calls a transformers 5 method that warns about its own rename on every wrap
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def _restore(net: nn.Module, optimizer: torch.optim.Optimizer, checkpoint: dict[str, Any], run_dir: Path) -> None:
    params = dict(net.named_parameters())
    saved = checkpoint.get("trainable", {})
    wanted = {n for n, p in params.items() if p.requires_grad}
    if set(saved) != wanted:
        raise TrainError(f"{run_dir / CHECKPOINT}: its weights do not match this model "
                         f"({len(set(saved) ^ wanted)} names differ); cannot resume")
    with torch.no_grad():
        for name, value in saved.items():
            if params[name].shape != value.shape:
                raise TrainError(f"{run_dir / CHECKPOINT}: {name} has shape {tuple(value.shape)}, model expects "
                                 f"{tuple(params[name].shape)}; cannot resume")
            params[name].copy_(value)
    try:
        optimizer.load_state_dict(checkpoint["optimizer"])
    except (KeyError, ValueError) as exc:
        raise TrainError(f"{run_dir / CHECKPOINT}: optimizer state does not match ({exc}); cannot resume") from exc


# ---------------------------------------------------------------------------------------------
# Several seeds


def train_seeds(cfg: TrainConfig, seeds: Sequence[int], console: Any = None) -> tuple[list[Path], dict[str, Any]]:
    """One run per seed under `cfg.out/seed<N>`; returns the run dirs and the mean/std summary (also saved)."""
    if not seeds:
        raise TrainError("--seeds: expected at least one seed")
    if len(set(seeds)) != len(seeds):
        raise TrainError(f"--seeds: expected distinct seeds, got {list(seeds)}")
    adapter = resolve_adapter(cfg)
    parent = Path(cfg.out) if cfg.out else default_run_dir(cfg, adapter).with_name(
        default_run_dir(cfg, adapter).name.replace(f"-seed{cfg.seed}", "-seeds"))
    runs = [train(dataclasses.replace(cfg, seed=s, out=str(parent / f"seed{s}")), console=console) for s in seeds]
    summary = summarize_seeds(runs)
    atomic_write_json(parent / "seeds_summary.json", summary)
    return runs, summary


def summarize_seeds(runs: Sequence[Path]) -> dict[str, Any]:
    """Mean and standard deviation (ddof=1 when n > 1) of the selected validation figures."""
    keys = ("score", "sensitivity", "specificity", "score_relaxed_2class", "sensitivity_relaxed_2class")
    bests = [json.loads((Path(r) / RUN_CONFIG).read_text())["best"] for r in runs]
    values = {k: np.array([b["val"][k] for b in bests], dtype=np.float64) for k in keys}
    ddof = 1 if len(runs) > 1 else 0
    return {
        "runs": [str(r) for r in runs],
        "best_epochs": [b["epoch"] for b in bests],
        "mean": {k: float(v.mean()) for k, v in values.items()},
        "std": {k: float(v.std(ddof=ddof)) for k, v in values.items()},
        "per_run": {k: v.tolist() for k, v in values.items()},
    }


# ---------------------------------------------------------------------------------------------
# Progress


class _Reporter:
    """A rich progress bar (loss, lr, samples/s) and per-epoch lines; silent when disabled."""

    def __init__(self, enabled: bool, console: Any = None) -> None:
        self.enabled = enabled
        self.console = console
        self.progress = None
        self.task = None

    def start(self, run_dir: Path, run_config: dict[str, Any], steps: int, first: int, last: int) -> None:
        if not self.enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = self.console or Console()
        p = run_config["parameters"]
        self.console.print(
            f"[bold]Training[/] {run_config['backbone']} + {run_config['adapter']} adapter, "
            f"{run_config['train']['optimizer']} lr {run_config['lr']:.2g}, {run_config['train_cycles']} train / "
            f"{run_config['val_cycles']} val cycles, trainable {p['trainable']:,} of {p['total']:,} "
            f"({p['trainable_percent']:.2f}%) -> {run_dir}"
        )
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}/" + str(last)), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}  {task.fields[sps]:.1f} samples/s"),
            TimeElapsedColumn(), console=self.console, transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=steps * (last - first + 1), epoch=first, loss=0.0, lr=0.0,
                                           sps=0.0)
        self._epoch = first

    def step(self, loss: float, lr: float, sps: float) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=1, loss=loss, lr=lr, sps=sps, epoch=self._epoch)

    def epoch(self, entry: dict[str, Any], best: dict[str, Any]) -> None:
        if self.progress is None:
            return
        v = entry["val"]
        mark = "  [green]* selected[/]" if entry.get("selected") else ""
        self.progress.console.print(
            f"epoch {entry['epoch']:3d}  loss {entry['train_loss']:.4f}  val Sp {v['specificity']:5.1f} "
            f"Se {v['sensitivity']:5.1f} Score {v['score']:5.1f}  ({entry['samples_per_s']:.1f} samples/s){mark}"
        )
        self._epoch = entry["epoch"] + 1

    def finish(self, run_dir: Path, run_config: dict[str, Any]) -> None:
        if self.progress is None:
            return
        self.progress.stop()
        from edge_lung.metrics import format_scores

        best = run_config["best"]
        self.console.print(f"[bold]Done[/] in {run_config.get('train_seconds', 0):.0f} s. Selected epoch "
                           f"{best['epoch']} on the validation split:")
        self.console.print(format_scores(best["val"], tuple(run_config["labels"])), highlight=False)
        self.console.print(f"Run directory: {run_dir}  (next: edge-lung evaluate {run_dir} --split test)")
