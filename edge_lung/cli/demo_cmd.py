"""`edge-lung demo`: the whole pipeline end to end (the README's first command)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from edge_lung.fileio import check_output, marked_folder, write_marker

DEMO_FOLDER = marked_folder("a folder `edge-lung demo` wrote", "demo")
"""The writing policy's kind for `demo --out` (`edge_lung.fileio.check_output`)."""


def demo(
    data: Path | None = typer.Option(
        None, "--data", help="A real ICBHI database (official layout). Default: $EDGE_LUNG_ICBHI_DIR, else synthetic."
    ),
    out: Path = typer.Option(Path("demo-out"), "--out", help="Folder for every artifact of the run."),
    recordings: int = typer.Option(100, help="Recordings in the synthetic database (ignored with --data)."),
    seed: int = typer.Option(0, help="Seed for the synthetic database and training."),
    epochs: int | None = typer.Option(None, help="Training epochs (default: the tiny model's default)."),
    quick: bool = typer.Option(False, "--quick", help="Smallest sizes everywhere: a smoke run in about a minute."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Run again in a folder an earlier demo wrote (its "
                                   "runs, models and reports are replaced; never another folder)."),
) -> None:
    """Build (or read) a database, train the tiny AST with adapters + SAM + WRS (the teacher), evaluate, export
    INT8 and FP32, replay a held-out recording through the streaming runtime, distil a MobileNet student and
    export it, benchmark all four models, plot Score against latency (pareto.png); print a summary."""
    from edge_lung.demo import DemoConfig, run_demo

    env_data = os.environ.get("EDGE_LUNG_ICBHI_DIR")
    if data is None and env_data:
        data = Path(env_data)
    try:
        cfg = DemoConfig(out_dir=out, data=data, recordings=recordings, seed=seed, epochs=epochs, quick=quick)
        check_output(out, "--out", DEMO_FOLDER, overwrite, (data,))
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, "demo")  # ours: a later `demo --overwrite` may run here again
    run_demo(cfg)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
