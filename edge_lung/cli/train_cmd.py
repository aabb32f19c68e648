"""`edge-lung train` and `edge-lung evaluate` (torch is imported inside the commands only)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from edge_lung.fileio import PLOT_PNG, check_output

# torch-free: the options' defaults come from it
from edge_lung.train.config import (
    DEFAULT_BATCH_SIZE,
    MIN_BATCH_SIZE,
    MIN_STEPS_PER_EPOCH,
    TrainConfig,
    check_num_threads,
)

_MULTI_GPU = (
    "Multi-GPU: run the same command under accelerate or torchrun, e.g. "
    '`accelerate launch --multi_gpu --num_processes 4 "$(which edge-lung)" train --data DB ...`; '
    "--batch-size is the global batch, split across processes."
)


def _parse_seeds(text: str) -> list[int]:
    from edge_lung.config import parse_int_list

    try:
        seeds = list(parse_int_list(text, "--seeds"))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if not seeds:
        raise typer.BadParameter(f"expected at least one seed, got {text!r}")
    return seeds


def train_command(
    ctx: typer.Context,
    data: Path = typer.Option(..., "--data", help="ICBHI-layout database folder (e.g. from `edge-lung data synth`)."),
    recipe: str = typer.Option(TrainConfig.recipe, "--recipe", help="A named, versioned preset (icbhi-robust: "
                               "channel augmentation + per-window mel normalisation; icbhi-descriptors: adventitious-"
                               "sound descriptors + a logistic regression + the cross-device normal margin); explicit "
                               "options override it."),
    out: Path = typer.Option(TrainConfig.out, "--out", help="Run directory to create (default "
                             "runs/<backbone>-...). With several --seeds, the parent of one run per seed."),
    backbone: str = typer.Option(TrainConfig.backbone, help="tiny | ast-student | small | base (ASTs from scratch), "
                                 "mobilenet (log-mel CNN, no adapters), linear (logistic regression, for the "
                                 "respiratory front end), a saved model directory, or a hub id such as "
                                 "MIT/ast-finetuned-audioset-10-10-0.4593 (local cache only unless --allow-download)."),
    allow_download: bool = typer.Option(TrainConfig.allow_download, help="Let a hub id download from the Hugging "
                                        "Face hub."),
    adapter: str = typer.Option(TrainConfig.adapter, help="lung (bottleneck adapters, frozen backbone) | lora | none "
                                "(full fine-tune) | auto (lung for checkpoints, none for named sizes)."),
    adapter_width: int = typer.Option(TrainConfig.adapter_width, help="Adapter bottleneck width."),
    adapter_scale: float = typer.Option(TrainConfig.adapter_scale, help="Multiplier of the adapter branch."),
    adapter_placement: str = typer.Option(TrainConfig.adapter_placement, help="Adapters parallel to: both | "
                                          "attention | mlp."),
    lora_rank: int = typer.Option(TrainConfig.lora_rank, help="LoRA rank (--adapter lora)."),
    optimizer: str = typer.Option(TrainConfig.optimizer, help="sam | asam | adamw (SAM wraps AdamW)."),
    rho: float = typer.Option(TrainConfig.rho, help="SAM neighbourhood size (default 0.05 for sam, 2.0 for asam)."),
    lr: float = typer.Option(TrainConfig.lr, help="Peak learning rate (default: 1e-3 adapters/tiny, 3e-4 small/base "
                             "from scratch, 3e-3 a CNN, 5e-5 full fine-tune of a checkpoint)."),
    min_lr_ratio: float = typer.Option(TrainConfig.min_lr_ratio, help="Final learning rate of the cosine schedule, "
                                       "as a share of --lr."),
    weight_decay: float = typer.Option(TrainConfig.weight_decay, help="AdamW weight decay."),
    epochs: int = typer.Option(TrainConfig.epochs, help="Training epochs."),
    warmup_epochs: float = typer.Option(TrainConfig.warmup_epochs, help="Linear warm-up length in epochs."),
    batch_size: int = typer.Option(TrainConfig.batch_size, help=f"Global batch size (default: {DEFAULT_BATCH_SIZE}, "
                                   f"halved down to {MIN_BATCH_SIZE} until an epoch takes at least "
                                   f"{MIN_STEPS_PER_EPOCH} optimizer steps, so a small database still trains; the "
                                   "value used is in config.json)."),
    grad_clip: float = typer.Option(TrainConfig.grad_clip, help="Clip the gradient norm to this (0 = off)."),
    label_smoothing: float = typer.Option(TrainConfig.label_smoothing, help="Label smoothing of the cross-entropy."),
    sampler: str = typer.Option(TrainConfig.sampler, help="uniform | wrs (weighted random sampler, weight 1/class "
                                "count; the LungAdapter recipe on real data)."),
    class_weighted_loss: bool = typer.Option(TrainConfig.class_weighted_loss, help="Weight the loss by inverse "
                                             "class frequency."),
    spec_augment: bool = typer.Option(TrainConfig.spec_augment, help="SpecAugment frequency and time masks "
                                      "(real-data recipe)."),
    freq_mask: int = typer.Option(TrainConfig.freq_mask, help="SpecAugment: widest frequency mask (mel bins)."),
    time_mask: int = typer.Option(TrainConfig.time_mask, help="SpecAugment: widest time mask (frames)."),
    num_masks: int = typer.Option(TrainConfig.num_masks, help="SpecAugment: masks of each kind per sample."),
    channel_aug: bool = typer.Option(TrainConfig.channel_aug, help="Random stethoscope channel on the waveform: "
                                     "band limit (through 4/8 kHz or a 1.5-8 kHz low-pass), EQ / spectral tilt, "
                                     "gain, noise at a random SNR (audiomentations)."),
    mel_norm: str = typer.Option(TrainConfig.mel_norm, help="global (AST statistics) | window (then each mel bin "
                                 "standardised over the window; recorded in the model, the device does the same)."),
    waveform_aug: bool = typer.Option(TrainConfig.waveform_aug, help="Random gain and noise on the waveform "
                                      "(features recomputed every epoch; off = features computed once and cached)."),
    gain_db: float = typer.Option(TrainConfig.gain_db, help="Waveform aug: gain drawn in +-gain_db."),
    noise_snr_min_db: float = typer.Option(TrainConfig.noise_snr_min_db, help="Waveform aug: lowest SNR of the "
                                           "added noise."),
    noise_snr_max_db: float = typer.Option(TrainConfig.noise_snr_max_db, help="Waveform aug: highest SNR of the "
                                           "added noise."),
    val_fraction: float = typer.Option(TrainConfig.val_fraction, help="Share of train cycles (whole patients) held "
                                       "out for validation."),
    val_seed: int = typer.Option(TrainConfig.val_seed, help="Seed of the patient-grouped validation split."),
    val_devices: str = typer.Option(TrainConfig.val_devices, "--val-devices", help="Validate on every non-test "
                                    "recording of these devices (comma-separated, e.g. LittC2SE); patients also "
                                    "recorded on another device are removed from training and reported."),
    exclude_devices: str = typer.Option(TrainConfig.exclude_devices, "--exclude-devices", help="With --val-devices: "
                                        "leave these devices (and every recording of their patients) out of both "
                                        "sides, e.g. a device held out one level up."),
    select: str = typer.Option(TrainConfig.select, help="val (keep the epoch with the best validation Score) | last "
                               "(keep the last epoch: honest when validation is a held-out stethoscope)."),
    normal_margin: str = typer.Option(TrainConfig.normal_margin, "--normal-margin", help="none | cross-device: after "
                                      "training, retrain once per training device with that device held out and "
                                      "choose how much surer than 'normal' the model must be to call a cycle "
                                      "abnormal on a stethoscope it never heard; recorded in the model."),
    max_cycles: int = typer.Option(TrainConfig.max_cycles, help="Train on at most this many cycles (quick checks); "
                                   "validation always uses the whole split."),
    seeds: str = typer.Option(str(TrainConfig.seed), help="Comma-separated seeds; several train one run each and "
                              "report mean/std."),
    device: str = typer.Option(TrainConfig.device, help="auto | cpu | cuda."),
    precision: str = typer.Option(TrainConfig.precision, help="auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | "
                                  "bf16."),
    num_threads: int = typer.Option(TrainConfig.num_threads, help="CPU threads for torch (default: torch's choice)."),
    eval_batch_size: int = typer.Option(TrainConfig.eval_batch_size, help="Validation cycles per forward pass."),
    cache_dir: Path = typer.Option(TrainConfig.cache_dir, help="Decoded-audio cache (default ~/.cache/edge-lung)."),
    resume: bool = typer.Option(TrainConfig.resume, help="Continue the interrupted run in --out from its last "
                                "checkpoint; the settings must match."),
    progress: bool = typer.Option(TrainConfig.progress, help="Show the live progress bar."),
) -> None:
    """Train an AST classifier on the cycles of an ICBHI-layout database and select it on validation."""
    # every option but --seeds is the TrainConfig field of the same name (Paths go in as text)
    options = {k: str(v) if isinstance(v, Path) else v for k, v in locals().items() if k not in ("seeds", "ctx")}
    # torch and transformers load here, not when `edge-lung --help` or a device command starts
    from edge_lung.train.pipeline import train_recipe
    from edge_lung.train.recipes import apply_recipe
    from edge_lung.train.seeds import train_seeds

    # by name: typer may carry its own copy of click, whose ParameterSource is another enum
    explicit = {k for k in options if getattr(ctx.get_parameter_source(k), "name", None) == "COMMANDLINE"}

    seed_list = _parse_seeds(seeds)
    try:
        cfg = TrainConfig(**apply_recipe(options, explicit), seed=seed_list[0])
        check_num_threads(cfg.num_threads)
        if len(seed_list) == 1:
            train_recipe(cfg)
            return
        runs, summary = train_seeds(cfg, seed_list)
    except ValueError as exc:  # TrainError, BackboneError, DataError and config validation
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"{len(runs)} seeds {seed_list}, validation (selected epoch per run), mean +- std:")
    for key, name in (("score", "ICBHI Score"), ("sensitivity", "Se (exact)"), ("specificity", "Sp"),
                      ("score_relaxed_2class", "Score (relaxed 2-class)")):
        typer.echo(f"  {name:24s} {summary['mean'][key]:6.2f} +- {summary['std'][key]:5.2f}")


def evaluate_command(
    path: Path = typer.Argument(..., help="A run directory from `edge-lung train`, or an exported MODEL_DIR "
                                "(has manifest.json) from `edge-lung export`."),
    data: Path = typer.Option(None, "--data", help="Database folder (default: the one the run was trained on)."),
    split: str = typer.Option("test", help="test | val (val = the patient-grouped split used for selection)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    device: str = typer.Option("cpu", help="Run directories only: cpu | cuda."),
    threads: int = typer.Option(None, help="Exported models only: onnxruntime threads."),
    batch_size: int = typer.Option(16, help="Cycles per forward pass."),
    embeddings: Path = typer.Option(None, "--embeddings", help="Also draw a t-SNE of the pooled embeddings "
                                    "(colour: class, marker: device) to PATH.png and print the silhouette scores "
                                    "by class and by device. Exported models need the 'embedding' output."),
    by: str = typer.Option(None, "--by", help="Also score each device | rate | location | patient, with cycle "
                           "counts and 95% intervals by bootstrap over patients."),
    degrade: str = typer.Option(None, "--degrade", help="Pass the split through a band-limited stethoscope-like "
                                "channel first: 4k | 8k (recorded at 4 or 8 kHz, resampled back)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Let --embeddings replace a PNG edge-lung drew "
                                   "(never another file, nor an input)."),
) -> None:
    """Official ICBHI Sp / Se (exact class) / Score, the relaxed 2-class figures, and the 4x4 confusion matrix."""
    from edge_lung.scoring import format_report

    if split not in ("test", "val"):
        typer.echo(f"error: --split: expected 'test' or 'val', got {split!r}", err=True)
        raise typer.Exit(2)
    try:
        if embeddings is not None:
            check_output(embeddings, "--embeddings", PLOT_PNG, overwrite, (path, data))
        if not path.is_dir():
            raise ValueError(f"{path}: no such directory; expected a run directory from `edge-lung train` or a "
                             "MODEL_DIR from `edge-lung export`")
        from edge_lung.runtime.offline.evaluate import evaluate_model_dir, is_model_dir

        if is_model_dir(path):
            from edge_lung.runtime.artifact.model_dir import OnnxClassifier

            if embeddings:  # say it before the evaluation runs, not after
                OnnxClassifier(path).require_embedding()

            if data is None:
                raise ValueError(f"{path}: an exported model needs --data DB_DIR")
            report = evaluate_model_dir(path, data, split, threads=threads, batch_size=batch_size, by=by,
                                        degrade=degrade)
        else:
            from edge_lung.train.evaluate import evaluate_run

            report = evaluate_run(path, data, split, device=device, batch_size=batch_size, by=by, degrade=degrade)
        emb_map = _embedding_map(path, data, split, embeddings, device, threads) if embeddings else None
    except (ValueError, ImportError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(json.dumps(report, indent=2) if as_json else format_report(report))
    for line in emb_map.lines() if emb_map else []:
        typer.echo(line, err=as_json)


def _embedding_map(path: Path, data: Path | None, split: str, png: Path, device: str, threads: int | None):
    """`--embeddings`: the exported model's second output, or the run's PyTorch model."""
    from edge_lung.runtime.offline.evaluate import is_model_dir

    if is_model_dir(path):
        from edge_lung.runtime.explain.embedding import model_dir_embedding_map

        return model_dir_embedding_map(path, data, split, png, threads)
    from edge_lung.train.evaluate import run_embedding_map

    return run_embedding_map(path, data, split, png, device)


def explain_command(
    run: Path = typer.Argument(..., help="A run directory from `edge-lung train` (AST)."),
    file: Path = typer.Argument(..., help="A WAV/FLAC recording (any sample rate)."),
    out: Path = typer.Option(..., "--out", help="PNG to write: one row per window."),
    hop: float = typer.Option(1.0, "--hop", help="Seconds between windows (as `classify`)."),
    min_audio: float = typer.Option(2.0, "--min-audio", help="Seconds of audio before the first window."),
    max_windows: int = typer.Option(12, "--max-windows", help="Draw at most this many windows."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Let --out replace a PNG edge-lung drew (never "
                                   "another file, nor an input)."),
) -> None:
    """Attention rollout over the AST patch grid for the windows of a recording, as PNG."""
    try:
        check_output(out, "--out", PLOT_PNG, overwrite, (run, file))
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    from edge_lung.train.explain import explain_recording  # torch: after the cheap checks

    try:
        path = explain_recording(run, file, out, hop, min_audio, max_windows)
    except (ValueError, OSError, ImportError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(str(path))


def register(app: typer.Typer) -> None:
    """Add this stage's commands to `app`."""
    app.command("train", help=train_command.__doc__ + "\n\n" + _MULTI_GPU)(train_command)
    app.command("evaluate")(evaluate_command)
    app.command("explain")(explain_command)
