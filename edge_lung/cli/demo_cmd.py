"""`edge-lung demo`: the whole pipeline end to end (the README's first command)."""

from __future__ import annotations

import os
from pathlib import Path

import typer


def demo(
    data: Path | None = typer.Option(
        None, "--data", help="A real ICBHI database (official layout). Default: $EDGE_LUNG_ICBHI_DIR, else synthetic."
    ),
    out: Path = typer.Option(Path("demo-out"), "--out", help="Folder for every artifact of the run."),
    recordings: int = typer.Option(100, help="Recordings in the synthetic database (ignored with --data)."),
    seed: int = typer.Option(0, help="Seed for the synthetic database and training."),
    epochs: int | None = typer.Option(None, help="Training epochs (default: the tiny model's default)."),
    quick: bool = typer.Option(False, "--quick", help="Smallest sizes everywhere: a smoke run in about a minute."),
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
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    run_demo(cfg)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
