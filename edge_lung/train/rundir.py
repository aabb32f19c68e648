"""The run directory's resume side: checking a directory before a run writes to it, and the
checkpoint of the last finished epoch (trainable weights, optimizer state, history) that
`--resume` continues from.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge_lung.config import FeatureConfig
from edge_lung.fileio import RUN_DIR, OutputRefused, atomic_path, check_output
from edge_lung.train.config import RESUME_FREE, TrainConfig, TrainError
from edge_lung.train.model import RUN_CONFIG

CHECKPOINT = "checkpoint.pt"


def prepare_run_dir(cfg: TrainConfig, run_dir: Path) -> dict[str, Any] | None:
    """Check the run directory before anything is written; returns the checkpoint to resume from, if any."""
    config_path = run_dir / RUN_CONFIG
    if not cfg.resume:
        try:  # fileio's writing policy: a new or empty folder, never an input, never a user's folder
            check_output(run_dir, "--out", RUN_DIR, inputs=(cfg.data,),
                         replace_hint="pass --resume to continue that run, or choose another --out")
        except OutputRefused as exc:
            raise TrainError(str(exc)) from exc
        return None
    if not config_path.is_file():
        raise TrainError(f"--resume {run_dir}: no {RUN_CONFIG}; expected a run directory written by `edge-lung train`")
    try:
        saved = json.loads(config_path.read_text())["train"]
    except (json.JSONDecodeError, KeyError) as exc:
        raise TrainError(f"{config_path}: not a readable run config ({exc})") from exc
    saved = with_defaults(saved)
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


def with_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """A run's saved settings with every setting added since it was written at its default (the value the run
    trained with), features included, so an older run still resumes."""
    out = dict(saved)
    for f in dataclasses.fields(TrainConfig):
        if f.name not in out and f.default is not dataclasses.MISSING:
            out[f.name] = f.default
    if isinstance(out.get("features"), dict):
        out["features"] = FeatureConfig.from_dict(out["features"]).to_dict()
    return out


def _comparable(train_cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in train_cfg.items() if k not in RESUME_FREE}


def save_checkpoint(run_dir: Path, epoch: int, history: list[dict[str, Any]], best: dict[str, Any] | None,
                    net: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Write the resume checkpoint of finished epoch `epoch` (temp file, then `os.replace`)."""
    state = {
        "epoch": epoch, "history": history, "best": best, "optimizer": optimizer.state_dict(),
        "trainable": {n: p.detach().cpu() for n, p in net.named_parameters() if p.requires_grad},
        # BatchNorm running statistics (the CNN student): not parameters, but the model is wrong without them
        "buffers": {n: b.detach().cpu() for n, b in net.named_buffers()},
    }
    with atomic_path(run_dir / CHECKPOINT) as tmp:
        torch.save(state, tmp)


def restore_checkpoint(net: nn.Module, optimizer: torch.optim.Optimizer, checkpoint: dict[str, Any],
                       run_dir: Path) -> None:
    """Load the checkpoint's trainable weights and optimizer state, or TrainError naming what differs."""
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
        buffers = dict(net.named_buffers())
        for name, value in checkpoint.get("buffers", {}).items():  # absent in checkpoints written before them
            if name in buffers and buffers[name].shape == value.shape:
                buffers[name].copy_(value)
    try:
        optimizer.load_state_dict(checkpoint["optimizer"])
    except (KeyError, ValueError) as exc:
        raise TrainError(f"{run_dir / CHECKPOINT}: optimizer state does not match ({exc}); cannot resume") from exc
