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

`train` reads as its steps: `_prepare` (run directory, device, data, model, optimizer, resume),
`_train_epoch`, `_validate_and_checkpoint` (main process), `_finish`. What the run learns from is an
`Objective`: by default cross-entropy on the labelled cycles; distillation (`train.distill`) plugs in
its own training set (cycles and unlabeled windows with the teacher's soft targets), loss, config.json
section and validation figures, and reuses every step here. Settings live in
`train.config`, what an epoch draws in `train.augment`, the resume checkpoint in `train.rundir`,
several seeds in `train.seeds`, the terminal display in `train.progress`.

Each epoch draws its sampling order, augmentation and dropout from `augment.EpochRandom`, a
function of (seed, epoch), so resuming from the checkpoint of epoch k reproduces an uninterrupted run.

Multi-GPU: launch the same command under `accelerate launch` (or `torchrun`), e.g.
`accelerate launch --multi_gpu --num_processes 4 "$(which edge-lung)" train --data DB ...`.
Each process takes a slice of every global batch; SAM's first backward runs under
`no_sync()` (no gradient all-reduce for the perturbation; each process perturbs with its own
gradient, as in the SAM paper's m-sharpness) and the second backward synchronises.
"""


from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_lung.config import LABELS, FeatureConfig
from edge_lung.data.devices import DeviceSplit, load_run_split, scan_for_run
from edge_lung.data.icbhi import layout_record
from edge_lung.fileio import atomic_write_json
from edge_lung.plots import save_confusion_matrix, save_training_curve
from edge_lung.scoring import evaluate_cycles, stack_features
from edge_lung.train.augment import CycleSet, EpochRandom, sample_order, spec_augment
from edge_lung.train.config import (
    TrainConfig,
    TrainError,
    default_run_dir,
    resolve_adapter,
    resolve_batch_size,
    resolve_device,
    resolve_lr,
    resolve_rho,
)
from edge_lung.train.model import (
    RUN_CONFIG,
    LogitsModel,
    attach_adapter,
    backbone_kind,
    count_parameters,
    load_backbone,
    save_backbone,
    save_trained,
)
from edge_lung.train.progress import Reporter
from edge_lung.train.rundir import prepare_run_dir, restore_checkpoint, save_checkpoint
from edge_lung.train.sam import SAM

RUN_FORMAT = 1
METRICS = "metrics.json"


# ---------------------------------------------------------------------------------------------
# Pure pieces: schedule, optimizer, one step


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float = 0.0) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warm-up, then cosine to `min_lr`."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(params: list[nn.Parameter], cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    """AdamW, wrapped in SAM / ASAM unless `cfg.optimizer` is adamw."""
    base = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    rho = resolve_rho(cfg)
    if rho is None:
        return base
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
# What the steps share


class Objective:
    """What a run learns from: cross-entropy on the labelled training cycles (`edge-lung train`).

    A subclass changes the training set (its `batch` yields the targets the criterion reads), the
    criterion, what config.json records and what each validation adds; the loop stays the same.
    """

    def training_set(self, cycles: list, features: FeatureConfig, cfg: TrainConfig) -> CycleSet:
        return CycleSet(cycles, features, cfg)

    def criterion(self, cfg: TrainConfig, data: TrainData, device: torch.device) -> nn.Module:
        return _criterion(cfg, data, device)

    def prepare(self, data: TrainData) -> dict[str, Any]:
        """Called once the data is loaded; returns the keys it adds to config.json."""
        return {}

    def validate(self, data: TrainData, logits: np.ndarray) -> dict[str, Any]:
        """Figures added to an epoch's validation entry, from the model's logits [N, C] on `data.val_cycles`."""
        return {}



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


def is_main_process() -> bool:
    """True unless this is a non-zero rank of an accelerate/torchrun launch."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


def _setup_dist() -> _Dist:
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return _Dist()
    try:
        from accelerate import Accelerator
    except ImportError as exc:
        raise ImportError("multi-process training needs accelerate: pip install 'edge-lung[train]'") from exc
    acc = Accelerator(mixed_precision="no")  # bf16 autocast is ours; never accelerate's fp16 without a scaler
    return _Dist(acc, acc.process_index, acc.num_processes)


@dataclass
class TrainData:
    """The training cycles (batched by `CycleSet`) and the validation split with its features."""

    labels: list[str]
    features: FeatureConfig
    train: CycleSet
    val_cycles: list
    val_features: np.ndarray
    device_split: DeviceSplit | None = None


@dataclass
class _Run:
    """Everything the steps of one run share."""

    cfg: TrainConfig
    dist: _Dist
    run_dir: Path
    device: torch.device
    use_bf16: bool
    data: TrainData
    model: nn.Module  # what save_trained writes (the PEFT model when an adapter is attached)
    net: nn.Module  # what trains: logits out, wrapped for DDP under accelerate
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    lr: float
    batch_size: int  # global: `resolve_batch_size` of the training set
    steps_per_epoch: int
    run_config: dict[str, Any]
    reporter: Reporter
    objective: Objective = field(default_factory=Objective)
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    start_epoch: int = 1

    @property
    def inner(self) -> nn.Module:
        """`net` without its DDP wrapper (evaluation, checkpoint)."""
        return self.dist.accelerator.unwrap_model(self.net) if self.dist.accelerator is not None else self.net

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.use_bf16 else contextlib.nullcontext()

    def no_sync(self) -> contextlib.AbstractContextManager:
        if self.dist.accelerator is None:
            return contextlib.nullcontext()
        return self.dist.accelerator.no_sync(self.net)

    def logits(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad(), self.autocast():
            return self.inner(torch.from_numpy(x).to(self.device)).float().cpu().numpy()


# ---------------------------------------------------------------------------------------------
# The steps


def train(
    cfg: TrainConfig,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    console: Any = None,
    objective: Objective | None = None,
) -> Path:
    """Train one run as `cfg` says (against `objective`, default cross-entropy on the labels); returns
    the run directory (see the module docstring). One run only: the steps a recipe adds after training
    (the normal margin) are `train.pipeline.train_recipe`'s."""
    run = _prepare(cfg, console, objective or Objective())
    t_run = time.perf_counter()
    for epoch in range(run.start_epoch, cfg.epochs + 1):
        entry = _train_epoch(run, epoch)
        if run.dist.main:
            _validate_and_checkpoint(run, entry)
        run.dist.barrier()
        if on_epoch_end is not None:
            on_epoch_end(epoch, entry)
    _finish(run, time.perf_counter() - t_run)
    return run.run_dir


def _prepare(cfg: TrainConfig, console: Any, objective: Objective) -> _Run:
    """Check the run directory, pick the device, load the data and the model, restore a checkpoint."""
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
    data = _load_data(cfg, objective)
    torch.manual_seed(cfg.seed)  # the initial weights of a named size depend on the seed only
    base = load_backbone(cfg.backbone, data.features, len(data.labels), allow_download=cfg.allow_download)
    run_dir.mkdir(parents=True, exist_ok=True)
    if adapter != "none" and dist.main and checkpoint is None:
        save_backbone(base, run_dir)  # frozen: saved once, the adapter goes to model/adapter
    model = attach_adapter(base, adapter, cfg.adapter_width, cfg.adapter_scale, cfg.adapter_placement, cfg.lora_rank)
    model.to(device)
    net: nn.Module = LogitsModel(model)
    lr = resolve_lr(cfg, adapter)
    optimizer = make_optimizer([p for p in net.parameters() if p.requires_grad], cfg, lr)
    batch_size = resolve_batch_size(cfg, len(data.train))
    run = _Run(cfg=cfg, dist=dist, run_dir=run_dir, device=device, use_bf16=use_bf16, data=data, model=model,
               net=net, optimizer=optimizer, criterion=objective.criterion(cfg, data, device), lr=lr,
               batch_size=batch_size, steps_per_epoch=math.ceil(len(data.train) / batch_size), run_config={},
               reporter=Reporter(cfg.progress and dist.main, console), objective=objective)
    if checkpoint is not None:
        restore_checkpoint(net, optimizer, checkpoint, run_dir)
        run.history, run.best, run.start_epoch = checkpoint["history"], checkpoint["best"], checkpoint["epoch"] + 1
    if dist.accelerator is not None:
        run.net = dist.accelerator.prepare_model(net)
    run.run_config = _run_config(run, adapter) | objective.prepare(data)
    if dist.main:
        atomic_write_json(run_dir / RUN_CONFIG, run.run_config)
    run.reporter.start(run_dir, run.run_config, run.steps_per_epoch, run.start_epoch, cfg.epochs)
    return run


def _load_data(cfg: TrainConfig, objective: Objective) -> TrainData:
    """The training cycles (a `max_cycles` subset if asked) and the whole validation split."""
    features = cfg.feature_config
    if not Path(cfg.data).exists():
        raise TrainError(f"--data {cfg.data}: no such directory or file; expected an ICBHI-layout database, a "
                         "manifest or the SPRSound layout")
    settings = cfg.to_dict()
    device_split = scan_for_run(cfg.data, settings, "--val-devices")[1]
    train_cycles = load_run_split(cfg.data, "train", features, settings, cfg.data, cfg.cache_dir)
    train_cycles = _subset(train_cycles, cfg.max_cycles, cfg.seed)
    try:
        val_cycles = load_run_split(cfg.data, "val", features, settings, cfg.data, cfg.cache_dir)
    except ValueError as exc:
        raise TrainError(f"{exc}; model selection needs a validation split (raise --val-fraction)") from exc
    kinds = {c.label > 0 for c in val_cycles}
    if kinds != {False, True}:  # the ICBHI Score would be NaN and selection would freeze on epoch 1
        raise TrainError(
            f"{cfg.data}: the validation split has {'no abnormal' if True not in kinds else 'no normal'} cycles, "
            "so its ICBHI Score is undefined; change --val-fraction or --val-seed"
        )
    return TrainData(list(LABELS), features, objective.training_set(train_cycles, features, cfg), val_cycles,
                 stack_features(val_cycles, features), device_split)


def _subset(cycles: list, limit: int | None, seed: int) -> list:
    if limit is None or len(cycles) <= limit:
        return cycles
    keep = np.sort(np.random.default_rng(seed).choice(len(cycles), size=limit, replace=False))
    return [cycles[i] for i in keep]


def _criterion(cfg: TrainConfig, data: TrainData, device: torch.device) -> nn.Module:
    """Cross-entropy with label smoothing, weighted by inverse class frequency if asked."""
    weights = None
    if cfg.class_weighted_loss:
        counts = data.train.class_counts(len(data.labels))
        w = counts.sum() / (len(data.labels) * np.maximum(counts, 1))
        weights = torch.tensor(w, dtype=torch.float32, device=device)
    return nn.CrossEntropyLoss(weight=weights, label_smoothing=cfg.label_smoothing)


def _run_config(run: _Run, adapter: str) -> dict[str, Any]:
    """config.json: the resolved settings, labels, features, data, parameter counts and selection."""
    cfg = run.cfg
    trainable, total = count_parameters(run.model)
    return {
        "format": RUN_FORMAT,
        "train": cfg.to_dict() | {"out": str(run.run_dir)},
        "labels": run.data.labels,
        "features": run.data.features.to_dict(),
        "data": str(Path(cfg.data).resolve()),
        "data_layout": layout_record(cfg.data),
        "backbone": cfg.backbone,
        "backbone_kind": backbone_kind(cfg.backbone),
        "adapter": adapter,
        "lr": run.lr,
        "rho": resolve_rho(cfg),
        "batch_size": run.batch_size,
        "optimizer_steps": run.steps_per_epoch * cfg.epochs,
        "precision": "bf16" if run.use_bf16 else "fp32",
        "world_size": run.dist.world,
        "parameters": {"trainable": trainable, "total": total, "trainable_percent": 100.0 * trainable / total},
        "train_cycles": len(run.data.train),
        "train_class_counts": run.data.train.class_counts(len(run.data.labels)).tolist(),
        "val_cycles": len(run.data.val_cycles),
        "device_split": run.data.device_split.to_dict() if run.data.device_split else None,
        "best": run.best,
        "status": "running",
    }


def _train_epoch(run: _Run, epoch: int) -> dict[str, Any]:
    """One pass over the epoch's sampling order; returns the epoch's metrics entry (no validation yet)."""
    cfg, steps, batch = run.cfg, run.steps_per_epoch, run.batch_size
    rand = EpochRandom.for_epoch(cfg.seed, epoch)
    torch.manual_seed(rand.dropout_seed)
    order = sample_order(run.data.train.labels, cfg.sampler, rand.order, len(run.data.labels))
    run.net.train()
    t0, seen, losses = time.perf_counter(), 0, []
    for i in range(steps):
        step = (epoch - 1) * steps + i
        set_lr(run.optimizer, lr_at(step, steps * cfg.epochs, int(round(cfg.warmup_epochs * steps)), run.lr,
                                    run.lr * cfg.min_lr_ratio))
        idx = order[i * batch : (i + 1) * batch]
        if run.dist.world > 1 and len(idx) < batch:  # every process needs samples of the last batch
            idx = np.resize(idx, batch)
        x, y = run.data.train.batch(idx, rand.wave)
        if cfg.spec_augment:
            x = spec_augment(x, cfg.freq_mask, cfg.time_mask, cfg.num_masks, rand.spec)
        rank, world = run.dist.rank, run.dist.world
        x, y = x[rank::world].to(run.device), y[rank::world].to(run.device)
        loss = train_step(run.net, run.optimizer, x, y, run.criterion, cfg.grad_clip, run.autocast, run.no_sync)
        if not math.isfinite(loss):
            _stop_on_non_finite(run, loss, [run.data.train.cycles[j] for j in idx], epoch, i)
        losses.append(loss)
        seen += len(idx)
        run.reporter.step(loss, run.optimizer.param_groups[0]["lr"], seen / (time.perf_counter() - t0))
    seconds = time.perf_counter() - t0
    return {"epoch": epoch, "train_loss": float(np.mean(losses)), "lr": run.optimizer.param_groups[0]["lr"],
            "samples_per_s": seen / seconds, "seconds": seconds}


def _stop_on_non_finite(run: _Run, loss: float, batch: list, epoch: int, step: int) -> None:
    """Raise TrainError naming the batch's cycles; the run is marked failed and this model never saved.

    The weights have already taken the step, so nothing from here on may be selected or checkpointed:
    the saved model (if any) and the checkpoint stay those of the last finished epoch.
    """
    names = ", ".join(f"{c.recording} cycle {c.index}" for c in batch)
    reason = (f"non-finite training loss ({loss}) at epoch {epoch}, step {step + 1}; the batch held {names}. "
              "Check these recordings for NaN/inf samples or extreme values (`edge-lung data summary`), "
              "or lower --lr")
    if run.dist.main:
        atomic_write_json(run.run_dir / RUN_CONFIG, run.run_config | {"status": f"failed: {reason}"})
    raise TrainError(f"{run.run_dir}: {reason}")


PRECISE_BN_CYCLES = 512
"""Training cycles whose features re-estimate BatchNorm statistics before each validation (`precise_batchnorm`)."""


def precise_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Replace every BatchNorm layer's running statistics by their plain average over `batches`
    (at the current weights), leaving `model` in eval mode; returns the number of BatchNorm layers.

    The exponential running average that BatchNorm keeps in training mode lags the weights: on a
    small CNN trained for a few dozen steps at a high learning rate (the distillation student) the
    lagging statistics made every validation epoch predict "normal" only (Score 50.0) while the same
    weights with re-estimated statistics scored 77.3 (`benchmarks/results/students/int8.md`). This is
    "precise BN" (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021): a forward pass over
    training batches with `momentum=None`, i.e. a cumulative average. A model without BatchNorm (the
    ASTs) is left untouched and costs nothing.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers:
        model.eval()
        return 0
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for x in batches:
            model(x)
    for m, momentum in zip(layers, momenta, strict=True):
        m.momentum = momentum
    model.eval()
    return len(layers)


def _bn_batches(run: _Run, epoch: int) -> Iterator[torch.Tensor]:
    """Training batches for `precise_batchnorm`: up to PRECISE_BN_CYCLES cycles drawn without replacement,
    waveform-augmented as training draws them, from a generator of (seed, epoch) so a resumed run matches."""
    rng = np.random.default_rng([run.cfg.seed, epoch, 0xB4])
    order = rng.permutation(len(run.data.train))[:PRECISE_BN_CYCLES]
    for i in range(0, len(order), run.batch_size):
        yield run.data.train.batch(order[i : i + run.batch_size], rng)[0].to(run.device)


def _validate_and_checkpoint(run: _Run, entry: dict[str, Any]) -> None:
    """Score the epoch on validation, keep the model if it is the best so far, write metrics and checkpoint."""
    precise_batchnorm(run.inner, _bn_batches(run, entry["epoch"]))  # eval mode; a no-op without BatchNorm
    data = run.data
    chunks: list[np.ndarray] = []

    def logits(x: np.ndarray) -> np.ndarray:
        chunks.append(run.logits(x))
        return chunks[-1]

    entry["val"] = evaluate_cycles(data.val_cycles, data.features, logits, run.cfg.eval_batch_size,
                                   features=data.val_features, labels=data.labels)
    entry["val"].update(run.objective.validate(data, np.concatenate(chunks)))
    # --select last keeps every epoch's model: the honest choice when validation is a held-out stethoscope
    improved = run.cfg.select == "last" or run.best is None or entry["val"]["score"] > run.best["val"]["score"]
    entry["selected"] = improved
    run.history.append(entry)
    if improved:
        run.best = {"epoch": entry["epoch"], "val": entry["val"]}
        save_trained(run.model, run.run_dir, entry["epoch"])
        run.run_config["best"] = run.best
        atomic_write_json(run.run_dir / RUN_CONFIG, run.run_config)
    atomic_write_json(run.run_dir / METRICS, run.history)
    save_training_curve(run.history, run.run_dir / "training_curve.png")
    save_confusion_matrix(run.best["val"]["confusion_matrix"], data.labels,
                          f"val, epoch {run.best['epoch']}: Score {run.best['val']['score']:.1f}",
                          run.run_dir / "confusion_matrix.png")
    save_checkpoint(run.run_dir, entry["epoch"], run.history, run.best, run.inner, run.optimizer)
    run.reporter.epoch(entry)


def _finish(run: _Run, seconds: float) -> None:
    """Mark the run done in config.json and print the selected epoch's figures."""
    run.run_config["status"] = "done"
    run.run_config["train_seconds"] = seconds
    run.run_config["warnings"] = selection_warnings(run.best["val"]) if run.best else []
    if run.dist.main:
        atomic_write_json(run.run_dir / RUN_CONFIG, run.run_config)
    run.reporter.finish(run.run_dir, run.run_config)
    for text in run.run_config["warnings"]:
        print(f"WARNING: {text}", file=sys.stderr, flush=True)


def selection_warnings(val: dict[str, Any]) -> list[str]:
    """Loud words for a selected model that is no better than predicting "normal" for every cycle
    (Score 50 on any split with both kinds), or that predicts a single class (a collapsed model)."""
    out = []
    if not val["score"] > 50.0:
        out.append(f"the selected epoch scores {val['score']:.2f} on its own validation split, not above the "
                   "always-normal baseline of 50: this model is no better than saying 'normal' every time")
    used = [i for i, column in enumerate(np.asarray(val["confusion_matrix"]).T) if column.sum() > 0]
    if len(used) == 1:
        out.append(f"the selected epoch predicts one class only (class {used[0]}) for all "
                   f"{val['num_cycles']} validation cycles: the model collapsed")
    return out


def _quiet_transformers() -> None:
    """transformers' own tqdm bars ("Writing model shards") would tear through our progress display."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    # peft 0.21 calls a transformers 5 method that warns about its own rename on every wrap
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
