"""`edge-lung adapt`: a trained run adapted to a new stethoscope with a few labelled patients (issue 27).

Options take their defaults from `train.adapt.AdaptConfig` (torch is imported inside the command).
"""

from __future__ import annotations

from pathlib import Path

import typer

from edge_lung.train.adapt_config import MIN_CYCLES, MIN_PATIENTS, AdaptConfig

_D = AdaptConfig("", "", "")  # the defaults every option below reads


def adapt_command(
    source: Path = typer.Argument(..., help="RUN_DIR to adapt (`edge-lung train` or `distill`). A MODEL_DIR "
                                  "(ONNX only) is refused: adapt the run it was exported from."),
    data: Path = typer.Option(..., "--data", help="Labelled recordings of the new stethoscope: an ICBHI-layout "
                              "folder, a manifest (.csv/.jsonl, e.g. a filled corrections.csv from `edge-lung "
                              "report`) or the SPRSound layout. Only its train and val recordings are read."),
    out: Path = typer.Option(..., "--out", help="Run directory to create (an ordinary run: export, classify, "
                             "stream take it)."),
    device: str = typer.Option(_D.device, "--device", help="Only the recordings of this device of --data."),
    folds: int = typer.Option(_D.folds, "--folds", help="Cross-validation: 0 = leave one patient out, else this "
                              "many patient folds."),
    steps: int = typer.Option(_D.steps, "--steps", help="Full-batch steps of the head fit (head mode)."),
    lr: float = typer.Option(_D.lr, "--lr", help="Learning rate of the head (adapters: a tenth of it)."),
    l2: float = typer.Option(_D.l2, "--l2", help="Pull of the adapted weights towards the source's (weight decay "
                             "for the adapters)."),
    epochs: int = typer.Option(_D.epochs, "--epochs", help="Epochs of adapter training (AST with LungAdapter)."),
    from_scratch: bool = typer.Option(_D.from_scratch, "--from-scratch", help="Also cross-validate the head fitted "
                                      "from zero on the new data (the within-device baseline; head mode only)."),
    min_patients: int = typer.Option(_D.min_patients, "--min-patients", help="Refuse below this many patients "
                                     f"(default {MIN_PATIENTS})."),
    min_cycles: int = typer.Option(_D.min_cycles, "--min-cycles", help="Refuse below this many normal or abnormal "
                                   f"cycles (default {MIN_CYCLES})."),
    val_fraction: float = typer.Option(_D.val_fraction, "--val-fraction", help="Patient-grouped val split of "
                                       "--data (val is used for adaptation too; test never)."),
    val_seed: int = typer.Option(_D.val_seed, "--val-seed", help="Seed of that split."),
    seed: int = typer.Option(_D.seed, "--seed", help="Seed of the folds and the fit."),
    cache_dir: Path = typer.Option(None, "--cache-dir", help="Decoded-audio cache (default ~/.cache/edge-lung)."),
    num_threads: int = typer.Option(_D.num_threads, "--num-threads", help="torch threads."),
    overwrite: bool = typer.Option(_D.overwrite, "--overwrite", help="Replace --out if `adapt` wrote it."),
) -> None:
    """Adapt a run to a new stethoscope; prints the Score before and after, cross-validated by patient."""
    from edge_lung.train.adapt import adapt

    try:
        cfg = AdaptConfig(str(source), str(data), str(out), device, folds, steps, lr, l2, epochs,
                          seed=seed, from_scratch=from_scratch, val_fraction=val_fraction, val_seed=val_seed,
                          min_patients=min_patients, min_cycles=min_cycles,
                          cache_dir=str(cache_dir) if cache_dir else None, num_threads=num_threads,
                          overwrite=overwrite)
        adapt(cfg, say=typer.echo)
    except ValueError as exc:  # AdaptError, DataError, RunError and config validation
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def register(app: typer.Typer) -> None:
    """Add `adapt` to `app`."""
    app.command("adapt")(adapt_command)
