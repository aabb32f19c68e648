"""`edge-lung adapt RUN_DIR --data MY_DB --out RUN2`: a trained model adapted to a new stethoscope (issue 27).

Parameter-efficient: only what a few labelled patients can pin down is trained, the rest stays frozen.

- a CNN student or the descriptors' linear model (`--backbone linear`): BatchNorm statistics re-estimated
  on the new recordings (for the linear model that is its input standardisation), then the linear head,
  trained on the frozen embedding (mode "head");
- an AST with the LungAdapter: its adapters and its head (mode "adapter"), the backbone frozen;
- an AST trained whole or with LoRA (merged): its head on the frozen pooled embedding (mode "head").

The head is fitted with cross-entropy weighted as the Score weighs (`class_weights`) and an L2 pull towards
its starting point (the source head; zero for `from_scratch`, the within-device baseline the benchmark
prints), so a handful of patients moves it only as far as they say. The run's normal margin
(`train.margin`) stays in the logits.

Figures: the Score of the source model and of the adapted one by cross-validation over the new data's
patients (leave one patient out, or `folds` patient folds): each fold adapts on the other patients and
predicts this one; the out-of-fold predictions are scored once, with a 95% interval by bootstrap over
patients (`metrics.patient_bootstrap`). The saved model is then adapted on every patient. Like `train`,
only the train and val recordings of `--data` are read, never its test split.

Adaptation refuses fewer than `MIN_PATIENTS` patients or fewer than `MIN_CYCLES` normal or abnormal
cycles: below that the cross-validated figure says nothing, and the head follows single patients.
A MODEL_DIR (ONNX only) is refused: it holds no trainable weights, and a head refitted outside the
graph would not be the one the device runs; adapt the run directory it was exported from.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_lung.config import FeatureConfig
from edge_lung.data.icbhi import Cycle, Database, layout_record, load_cycles
from edge_lung.fileio import RUN_CONFIG, atomic_write_json
from edge_lung.metrics import confusion_matrix, icbhi_scores, patient_bootstrap, score_predictions
from edge_lung.scoring import stack_features
from edge_lung.train.adapt_config import AdaptConfig
from edge_lung.train.cnn import LogMelCNN
from edge_lung.train.loop import precise_batchnorm
from edge_lung.train.model import (
    ADAPTER_DIR,
    BACKBONE_DIR,
    MODEL_DIR,
    LogitsModel,
    RunError,
    count_parameters,
    load_run,
    logit_offset,
    read_run_config,
    save_trained,
)

ADAPT_FIGURES = ("score", "specificity", "sensitivity")


class AdaptError(ValueError):
    """Adaptation that cannot run as asked, with the reason and what to do."""


# ---------------------------------------------------------------------------------------------
# The data: train and val recordings of --data only


def adaptation_cycles(cfg: AdaptConfig, features: FeatureConfig) -> tuple[list[Cycle], Database]:
    """The train and val cycles of `cfg.data` (optionally of one device); `AdaptError` below the minimums."""
    if not Path(cfg.data).exists():
        raise AdaptError(f"--data {cfg.data}: no such file or directory; expected a database (ICBHI layout, a "
                         "manifest such as a filled corrections.csv, or the SPRSound layout)")
    db = Database.scan(cfg.data, strict=False, val_fraction=cfg.val_fraction, val_seed=cfg.val_seed)
    if cfg.device is not None:
        known = sorted({r.device for r in db.recordings})
        if cfg.device not in known:
            raise AdaptError(f"--device {cfg.device}: expected one of this database's devices {known}")
        db.recordings = [r for r in db.recordings if r.device == cfg.device]
    cycles = load_cycles(db, ("train", "val"), features.sample_rate, cfg.cache_dir)  # never the test split
    check_minimums(cycles, cfg)
    return cycles, db


def check_minimums(cycles: list[Cycle], cfg: AdaptConfig) -> None:
    """`AdaptError` naming what is short: patients, normal cycles or abnormal cycles."""
    patients = sorted({c.patient for c in cycles})
    normal = sum(c.label == 0 for c in cycles)
    abnormal = len(cycles) - normal
    short = []
    if len(patients) < cfg.min_patients:
        short.append(f"{len(patients)} patients (expected >= {cfg.min_patients})")
    if normal < cfg.min_cycles:
        short.append(f"{normal} normal cycles (expected >= {cfg.min_cycles})")
    if abnormal < cfg.min_cycles:
        short.append(f"{abnormal} abnormal cycles (expected >= {cfg.min_cycles})")
    if short:
        raise AdaptError(f"--data {cfg.data}{f' --device {cfg.device}' if cfg.device else ''}: too little labelled "
                         f"data to adapt or to measure adaptation ({', '.join(short)}; train and val recordings "
                         "only): label more patients or windows (corrections.csv)")


def patient_folds(patients: list[str], folds: int, seed: int) -> list[list[str]]:
    """Patient groups held out in turn: one per patient (`folds` 0), else `folds` groups in hash order."""
    order = sorted(set(patients), key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())
    if folds == 0 or folds >= len(order):
        return [[p] for p in order]
    return [order[i::folds] for i in range(folds)]


# ---------------------------------------------------------------------------------------------
# The model: what is trained, per kind


@dataclass
class Source:
    """The model to adapt: `net` (a LogitsModel, frozen but for what `mode` trains), its run config and mode."""

    net: LogitsModel
    config: dict[str, Any]
    mode: str  # "head" or "adapter"
    features: FeatureConfig


def load_source(path: str | Path) -> Source:
    """The run to adapt; `AdaptError` for a MODEL_DIR (ONNX only) or anything else that is not a run."""
    path = Path(path)
    if (path / "manifest.json").is_file() and not (path / RUN_CONFIG).is_file():
        raise AdaptError(f"{path}: a MODEL_DIR (ONNX only) holds no trainable weights, and a head refitted outside "
                         "its graph would not be the model the device runs; pass the RUN_DIR it was exported from "
                         "(its manifest.json names it under run.run_dir), then export the adapted run")
    try:
        config = read_run_config(path)
        if config["adapter"] == "lung":
            net = _load_lung_trainable(path, config)
            return Source(net, config, "adapter", FeatureConfig.from_dict(config["features"]))
        net, config = load_run(path)
    except RunError as exc:
        raise AdaptError(str(exc)) from exc
    return Source(net, config, "head", FeatureConfig.from_dict(config["features"]))


def _load_lung_trainable(run_dir: Path, config: dict[str, Any]) -> LogitsModel:
    """The AST with its LungAdapter as a trainable PEFT model (adapters and head trainable, backbone frozen)."""
    from peft import PeftModel  # heavy: only an AST run needs it
    from transformers import ASTForAudioClassification

    from edge_lung.train import adapters  # noqa: F401  registers the LUNG_ADAPTER PEFT type

    base = ASTForAudioClassification.from_pretrained(run_dir / MODEL_DIR / BACKBONE_DIR, local_files_only=True)
    model = PeftModel.from_pretrained(base, run_dir / MODEL_DIR / ADAPTER_DIR, is_trainable=True)
    return LogitsModel(model, logit_offset(config)).eval()


def embed(net: LogitsModel, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Frozen embedding float32[N, D] the head reads (eval mode)."""
    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out.append(net.logits_and_embedding(torch.from_numpy(x[i : i + batch_size]))[1].float().numpy())
    return np.concatenate(out)


def logits_of(net: LogitsModel, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    net.eval()
    with torch.no_grad():
        return np.concatenate([net(torch.from_numpy(x[i : i + batch_size])).float().numpy()
                               for i in range(0, len(x), batch_size)])


def head_of(net: LogitsModel) -> nn.Linear:
    """The classifier layer the logits come from."""
    inner = net.model
    if isinstance(inner, LogMelCNN):
        return inner.classifier
    head = inner.classifier
    return head.dense if hasattr(head, "dense") else head  # ASTMLPHead: layernorm then dense


def class_weights(y: np.ndarray, num_classes: int) -> torch.Tensor:
    """Weights that make the loss mirror the ICBHI Score: half on the normal cycles, half on the abnormal ones
    pooled (Sp averages over normal cycles, Se over every abnormal cycle, whatever its class), so a rare class
    ("both") is not weighted up past what the Score gives it."""
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    normal, abnormal = counts[0], counts[1:].sum()
    w = np.full(num_classes, len(y) / (2 * abnormal) if abnormal else 0.0)
    w[0] = len(y) / (2 * normal) if normal else 0.0
    return torch.tensor(w, dtype=torch.float32)


def fit_head(head: nn.Linear, emb: np.ndarray, y: np.ndarray, offset: torch.Tensor | None, cfg: AdaptConfig,
             from_scratch: bool) -> None:
    """Full-batch Adam on Score-weighted cross-entropy + l2 * |W - W0|^2 (W0: the source head, or 0)."""
    if from_scratch:
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
    anchor = [p.detach().clone() for p in (head.weight, head.bias)]
    x, t = torch.from_numpy(emb), torch.from_numpy(y)
    loss_fn = nn.CrossEntropyLoss(weight=class_weights(y, head.out_features))
    params = [head.weight, head.bias]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=cfg.lr)
    for _ in range(cfg.steps):
        opt.zero_grad()
        logits = head(x) if offset is None else head(x) + offset
        loss = loss_fn(logits, t) + cfg.l2 * sum(((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True))
        loss.backward()
        opt.step()


def _head_input(net: LogitsModel) -> Callable[[np.ndarray], np.ndarray]:
    """What the head reads, from the frozen pooled embedding: the AST's MLP head has a LayerNorm first."""
    inner = net.model
    if isinstance(inner, LogMelCNN) or not hasattr(inner.classifier, "layernorm"):
        return lambda e: e
    norm = inner.classifier.layernorm

    def apply(e: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return norm(torch.from_numpy(e)).numpy()

    return apply


def adapt_model(source: Source, x: np.ndarray, y: np.ndarray, cfg: AdaptConfig,
                from_scratch: bool = False) -> LogitsModel:
    """A copy of `source.net` adapted on features `x` [N, T, M] with labels `y`."""
    torch.manual_seed(cfg.seed)
    net = copy.deepcopy(source.net)
    batches = [torch.from_numpy(x[i : i + 64]) for i in range(0, len(x), 64)]
    precise_batchnorm(net.model, batches)  # a no-op for the AST; the new device's statistics for a CNN
    if source.mode == "adapter":
        _fit_adapters(net, x, y, cfg, from_scratch)
        return net.eval()
    head = head_of(net)
    emb = _head_input(net)(embed(net, x))
    fit_head(head, emb, y, net.logit_offset, cfg, from_scratch)
    head.requires_grad_(False)
    return net.eval()


def _fit_adapters(net: LogitsModel, x: np.ndarray, y: np.ndarray, cfg: AdaptConfig, from_scratch: bool) -> None:
    """AdamW on the PEFT model's trainable parameters (LungAdapter and head), `cfg.epochs` over the data."""
    if from_scratch:
        raise AdaptError("--from-scratch: a head from zero is measured for head-mode models (CNN, linear) only; "
                         "an AST from scratch is `edge-lung train` on the new data")
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr * 0.1, weight_decay=cfg.l2)
    loss_fn = nn.CrossEntropyLoss(weight=class_weights(y, int(net(torch.from_numpy(x[:1])).shape[1])))
    rng = np.random.default_rng(cfg.seed)
    net.train()
    for _ in range(cfg.epochs):
        order = rng.permutation(len(x))
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            opt.zero_grad()
            loss = loss_fn(net(torch.from_numpy(x[idx])), torch.from_numpy(y[idx]))
            loss.backward()
            opt.step()
    net.eval()


# ---------------------------------------------------------------------------------------------
# Cross-validation and the whole command


def scored(y: np.ndarray, pred: np.ndarray, patients: list[str], n_boot: int, seed: int) -> dict[str, Any]:
    """Official Sp / Se / Score with 95% intervals by bootstrap over patients."""
    report = score_predictions(y, pred)
    ci = patient_bootstrap(y, pred, patients, n_boot, np.random.default_rng(seed))
    return {**{k: report[k] for k in ADAPT_FIGURES}, "ci95": ci, "num_cycles": report["num_cycles"],
            "confusion_matrix": report["confusion_matrix"]}


def paired_gain(y: np.ndarray, before: np.ndarray, after: np.ndarray, patients: list[str], n_boot: int,
                seed: int) -> dict[str, Any]:
    """Score(after) - Score(before) with its 95% interval, both scored on the same bootstrap draws of patients
    (a paired interval: the patients that make one model look good or bad do so for both)."""
    names = sorted(set(patients))
    per = [np.array([p == n for p in patients]) for n in names]
    cms = [np.stack([confusion_matrix(y[m], pred[m]) for m in per]) for pred in (before, after)]
    draws = np.random.default_rng(seed).integers(0, len(names), size=(n_boot, len(names)))
    diffs = np.array([icbhi_scores(cms[1][d].sum(0))["score"] - icbhi_scores(cms[0][d].sum(0))["score"]
                      for d in draws])
    diffs = diffs[~np.isnan(diffs)]
    gain = score_predictions(y, after)["score"] - score_predictions(y, before)["score"]
    ci = [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))] if diffs.size else [None, None]
    return {"score": float(gain), "ci95": ci}


def cross_validate(source: Source, x: np.ndarray, y: np.ndarray, patients: list[str],
                   cfg: AdaptConfig) -> dict[str, Any]:
    """Before (the source model), after (adapted on the other folds) and, with `from_scratch`, the head from
    zero: out-of-fold predictions of every cycle, scored with patient-bootstrap intervals."""
    folds = patient_folds(patients, cfg.folds, cfg.seed)
    before = logits_of(source.net, x).argmax(axis=1)
    variants = {"after": False, **({"from_scratch": True} if cfg.from_scratch else {})}
    out_of_fold = {name: np.full(len(y), -1, dtype=np.int64) for name in variants}
    patient_arr = np.asarray(patients)
    for group in folds:
        test = np.isin(patient_arr, group)
        for name, scratch in variants.items():
            model = adapt_model(source, x[~test], y[~test], cfg, from_scratch=scratch)
            out_of_fold[name][test] = logits_of(model, x[test]).argmax(axis=1)
    result = {"folds": len(folds), "scheme": "leave-one-patient-out" if len(folds) == len(set(patients))
              else f"{len(folds)} patient folds", "patients": len(set(patients)), "cycles": len(y),
              "before": scored(y, before, patients, cfg.n_boot, cfg.seed)}
    for name, pred in out_of_fold.items():
        assert (pred >= 0).all(), "every cycle is predicted once out of fold"
        result[name] = scored(y, pred, patients, cfg.n_boot, cfg.seed)
    result["gain"] = paired_gain(y, before, out_of_fold["after"], patients, cfg.n_boot, cfg.seed)
    return result


def adapt(cfg: AdaptConfig, say: Callable[[str], None] = print) -> Path:
    """Adapt `cfg.source` to `cfg.data` (see the module docstring); returns the new run directory."""
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    out = Path(cfg.out)
    _check_out(out, cfg)
    source = load_source(cfg.source)
    cycles, db = adaptation_cycles(cfg, source.features)
    x = stack_features(cycles, source.features)
    y = np.array([c.label for c in cycles], dtype=np.int64)
    patients = [c.patient for c in cycles]
    say(f"adapting {cfg.source} ({source.mode} mode) on {len(cycles)} cycles of {len(set(patients))} patients "
        f"from {cfg.data}; cross-validating by patient")
    cv = cross_validate(source, x, y, patients, cfg)
    say(format_cv(cv))
    final = adapt_model(source, x, y, cfg)
    _write_run(final, source, cfg, out, cv, cycles, db)
    say(f"wrote {out}")
    return out


def format_cv(cv: dict[str, Any]) -> str:
    """Before / after (/ from scratch) lines with their intervals."""
    lines = [f"Cross-validated on {cv['patients']} patients, {cv['cycles']} cycles ({cv['scheme']}); "
             "always-normal scores 50:"]
    for name in ("before", "after", "from_scratch"):
        if name in cv:
            s = cv[name]
            low, high = s["ci95"]["score"]
            span = f"[{low:.1f}, {high:.1f}]" if low is not None else "[-]"
            lines.append(f"  {name:<12} Score {s['score']:5.1f} {span}  Sp {s['specificity']:5.1f}  "
                         f"Se {s['sensitivity']:5.1f}")
    if "gain" in cv and cv["gain"]["ci95"][0] is not None:
        low, high = cv["gain"]["ci95"]
        lines.append(f"  after - before: {cv['gain']['score']:+.1f} points, paired 95% interval "
                     f"[{low:+.1f}, {high:+.1f}]")
    return "\n".join(lines)


def _check_out(out: Path, cfg: AdaptConfig) -> None:
    if out.resolve() == Path(cfg.source).resolve():
        raise AdaptError(f"--out {out}: expected a new folder, not the source run")
    if out.exists() and any(out.iterdir()):
        if not cfg.overwrite:
            raise AdaptError(f"--out {out}: exists and is not empty; expected a new folder (or --overwrite)")
        if not (out / RUN_CONFIG).is_file() or "adapted" not in json.loads((out / RUN_CONFIG).read_text()):
            raise AdaptError(f"--out {out}: --overwrite replaces only a run written by `edge-lung adapt`")
        shutil.rmtree(out)


def _write_run(net: LogitsModel, source: Source, cfg: AdaptConfig, out: Path, cv: dict[str, Any],
               cycles: list[Cycle], db: Database) -> None:
    """An ordinary run directory: the source's model folder with the adapted part replaced, and config.json
    saying what it was adapted on and the cross-validated figures."""
    shutil.copytree(Path(cfg.source) / MODEL_DIR, out / MODEL_DIR)
    trained = net.model
    if source.mode == "head" and source.config["adapter"] != "none":  # a merged LoRA: now a whole model
        shutil.rmtree(out / MODEL_DIR / ADAPTER_DIR, ignore_errors=True)
    save_trained(trained, out, epoch=1)
    trainable = _trainable_count(net, source.mode)
    counts = np.bincount([c.label for c in cycles], minlength=len(source.config["labels"])).tolist()
    adapted = {
        "source": str(Path(cfg.source).resolve()), "source_data": source.config.get("data"),
        "data": str(Path(cfg.data).resolve()), "data_layout": layout_record(cfg.data), "device": cfg.device,
        "mode": source.mode, "trainable_parameters": trainable, "recordings": len({c.recording for c in cycles}),
        "patients": sorted({c.patient for c in cycles}), "cycles": len(cycles), "class_counts": counts,
        "splits_used": ["train", "val"], "cross_validation": cv, "settings": cfg.to_dict(),
        "summary": (f"adapted ({source.mode}) on {len(cycles)} cycles of {len(set(c.patient for c in cycles))} "
                    f"patients of {cfg.data}; {cv['scheme']} Score {cv['before']['score']:.1f} before -> "
                    f"{cv['after']['score']:.1f} after (always-normal 50)"),
    }
    config = copy.deepcopy(source.config)
    train_settings = dict(config.get("train", {}))
    train_settings.update(val_fraction=cfg.val_fraction, val_seed=cfg.val_seed, val_devices=None,
                          exclude_devices=None, out=str(out))
    config.update(train=train_settings, data=str(Path(cfg.data).resolve()), data_layout=layout_record(cfg.data),
                  adapter="none" if source.mode == "head" else config["adapter"], status="done", warnings=[],
                  best={"epoch": 1, "val": {**cv["after"], "note": "cross-validated by patient on the adaptation "
                                            "data (edge-lung adapt), not a validation split"}},
                  adapted=adapted)
    atomic_write_json(out / RUN_CONFIG, config)


def _trainable_count(net: LogitsModel, mode: str) -> int:
    if mode == "adapter":
        return count_parameters(net.model)[0]
    head = head_of(net)
    bn = sum(m.running_mean.numel() * 2 for m in net.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None)
    return head.weight.numel() + head.bias.numel() + bn
