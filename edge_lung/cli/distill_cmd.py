"""`edge-lung distill`: a student trained on a teacher's soft targets (torch is imported inside the command).

The training options are `edge-lung train`'s own (`_train_option` takes each one's declaration, default
and help from `train_cmd.train_command`), so the two commands cannot drift apart.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import typer

from edge_lung.cli.train_cmd import train_command
from edge_lung.config import FeatureConfig
from edge_lung.fileio import RUN_DIR, check_output
from edge_lung.train.config import (
    DEFAULT_STUDENT,
    DEFAULT_STUDENT_OPTIMIZER,
    STUDENT_MEL_BINS,
    DistillConfig,
    TrainConfig,
    check_num_threads,
    student_features,
)

_MEASURED_BINS = ", ".join(f"{name} {bins}" for name, bins in STUDENT_MEL_BINS.items())


def _train_option(name: str):
    """The typer option `edge-lung train` declares for TrainConfig field `name` (default and help included)."""
    return inspect.signature(train_command).parameters[name].default


def distill_command(
    ctx: typer.Context,
    teacher: Path = typer.Option(..., "--teacher", help="The teacher: a run directory (`edge-lung train`, run with "
                                 "torch) or an exported MODEL_DIR (`edge-lung export`, FP32 or INT8, run with "
                                 "onnxruntime). It hears the audio through its own features."),
    data: Path = _train_option("data"),
    student: str = typer.Option(DEFAULT_STUDENT, "--student", help="The student, named as `edge-lung train "
                                "--backbone` names a model (mobilenet, tiny, ast-student, a save_pretrained "
                                "directory, a hub id). Default: the one that measured best (benchmarks/results/"
                                "distill)."),
    out: Path = typer.Option(..., "--out", help="Run directory to create (an ordinary run directory)."),
    unlabeled: list[Path] = typer.Option([], "--unlabeled", help="A folder of recordings without annotations (any "
                                         "rate, any device; repeatable): cut into windows as the runtime cuts them "
                                         "and labelled by the teacher only (no cross-entropy term)."),
    unlabeled_hop: float = typer.Option(DistillConfig.unlabeled_hop_s, "--unlabeled-hop", help="Seconds between "
                                        "unlabeled windows (the runtime's default hop)."),
    temperature: float = typer.Option(DistillConfig.temperature, "--temperature", help="Softmax temperature T "
                                      "of the KD term."),
    alpha: float = typer.Option(DistillConfig.alpha, "--alpha", help="Weight of the KD term: alpha * T^2 * KL + "
                                "(1 - alpha) * cross-entropy on the labelled cycles."),
    num_mel_bins: int = typer.Option(None, "--num-mel-bins", help="The student's mel bins (default: a recipe's, "
                                     f"else the student's measured front end ({_MEASURED_BINS}), else the "
                                     f"standard features' {FeatureConfig.num_mel_bins}); recorded in its model, the "
                                     "teacher keeps its own."),
    seed: int = typer.Option(TrainConfig.seed, "--seed", help="Seed of the student's weights and epoch draws."),
    recipe: str = _train_option("recipe"),
    allow_download: bool = _train_option("allow_download"),
    adapter: str = _train_option("adapter"),
    adapter_width: int = _train_option("adapter_width"),
    adapter_scale: float = _train_option("adapter_scale"),
    adapter_placement: str = _train_option("adapter_placement"),
    lora_rank: int = _train_option("lora_rank"),
    optimizer: str = typer.Option(DEFAULT_STUDENT_OPTIMIZER, help="sam | asam | adamw. Default adamw: the "
                                  "students were measured with it; SAM doubles each step's cost."),
    rho: float = _train_option("rho"),
    lr: float = _train_option("lr"),
    min_lr_ratio: float = _train_option("min_lr_ratio"),
    weight_decay: float = _train_option("weight_decay"),
    epochs: int = _train_option("epochs"),
    warmup_epochs: float = _train_option("warmup_epochs"),
    batch_size: int = _train_option("batch_size"),
    grad_clip: float = _train_option("grad_clip"),
    label_smoothing: float = _train_option("label_smoothing"),
    sampler: str = _train_option("sampler"),
    class_weighted_loss: bool = _train_option("class_weighted_loss"),
    spec_augment: bool = _train_option("spec_augment"),
    freq_mask: int = _train_option("freq_mask"),
    time_mask: int = _train_option("time_mask"),
    num_masks: int = _train_option("num_masks"),
    channel_aug: bool = _train_option("channel_aug"),
    mel_norm: str = _train_option("mel_norm"),
    waveform_aug: bool = _train_option("waveform_aug"),
    gain_db: float = _train_option("gain_db"),
    noise_snr_min_db: float = _train_option("noise_snr_min_db"),
    noise_snr_max_db: float = _train_option("noise_snr_max_db"),
    val_fraction: float = _train_option("val_fraction"),
    val_seed: int = _train_option("val_seed"),
    val_devices: str = _train_option("val_devices"),
    max_cycles: int = _train_option("max_cycles"),
    device: str = _train_option("device"),
    precision: str = _train_option("precision"),
    num_threads: int = _train_option("num_threads"),
    eval_batch_size: int = _train_option("eval_batch_size"),
    cache_dir: Path = _train_option("cache_dir"),
    progress: bool = _train_option("progress"),
) -> None:
    """Distil a teacher (run or exported model) into a student; the result is an ordinary run directory."""
    # every option but these is the TrainConfig field of the same name (Paths go in as text)
    options = {k: str(v) if isinstance(v, Path) else v for k, v in locals().items()
               if k not in ("ctx", "teacher", "student", "unlabeled", "unlabeled_hop", "temperature", "alpha",
                            "num_mel_bins")}
    try:  # fileio's writing policy, before the teacher loads: a new or empty --out, never an input
        check_output(out, "--out", RUN_DIR, inputs=(teacher, data, *unlabeled),
                     replace_hint="distill does not resume a run: choose another --out")
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    from edge_lung.train.distill import distill
    from edge_lung.train.recipes import apply_recipe

    explicit = {k for k in options if getattr(ctx.get_parameter_source(k), "name", None) == "COMMANDLINE"}
    try:
        options = apply_recipe(options | {"backbone": student, "features": student_features(student)}, explicit)
        if num_mel_bins is not None:  # explicit: over a recipe's front end too
            options["features"] = {**options["features"], "num_mel_bins": num_mel_bins}
        cfg = TrainConfig(**options)
        check_num_threads(cfg.num_threads)
        dcfg = DistillConfig(str(teacher), temperature, alpha, tuple(str(d) for d in unlabeled), unlabeled_hop)
        run = distill(cfg, dcfg)
    except ValueError as exc:  # TeacherError, TrainError, BackboneError, DataError and config validation
        typer.echo(f"error: {_as_student(str(exc), student)}", err=True)
        raise typer.Exit(2) from exc
    config = json.loads((run / "config.json").read_text())
    best, teacher = config["best"], config["distill"]["teacher_val"]
    typer.echo(f"{run}: selected epoch {best['epoch']}, validation Score {best['val']['score']:.2f} (teacher "
               f"{teacher['score']:.2f}), agreement with the teacher {best['val']['teacher_agreement']:.1f}%")


def _as_student(message: str, student: str) -> str:
    """The model builder names the option `edge-lung train` has (--backbone); here the user typed --student."""
    return message.replace(f"--backbone {student}", f"--student {student}")


def register(app: typer.Typer) -> None:
    """Add `distill` to `app`."""
    app.command("distill")(distill_command)
