"""`edge-lung bench MODEL_DIR...`: latency, real-time factor and memory of exported models on this machine."""

from __future__ import annotations

from pathlib import Path

import typer

from edge_lung.fileio import PLOT_PNG, check_output, json_report

BENCH_JSON = json_report("an `edge-lung bench` JSON report", ("results", "environment"))
"""The writing policy's kind for `bench --json` (`edge_lung.fileio.check_output`)."""


def bench(
    models: list[Path] = typer.Argument(
        ...,
        metavar="MODEL_DIR",
        help="One or more MODEL_DIRs written by `edge-lung export` (or .onnx files with edge-lung metadata).",
    ),
    threads: str | None = typer.Option(
        None,
        "--threads",
        help="Comma-separated thread counts, e.g. 1,2,4 (onnxruntime, and numpy's BLAS unless OPENBLAS_NUM_THREADS/"
        "OMP_NUM_THREADS are set) \\[default: 1 and all usable cores].",
    ),
    windows: int = typer.Option(
        50, "--windows", help="8 s windows timed per model and thread count (>= 100 for a meaningful p99)."
    ),
    warmup: int = typer.Option(5, "--warmup", help="Untimed windows after the first (cold) one."),
    compare_torch: Path | None = typer.Option(
        None, "--compare-torch", help="Also measure this training run in PyTorch eager FP32 (needs edge-lung\\[train])."
    ),
    json_path: Path | None = typer.Option(
        None, "--json", help="Write the full report (every figure, every sample, the environment) to this JSON file."
    ),
    plot: Path | None = typer.Option(
        None,
        "--plot",
        help="Draw the latency distributions to this PNG (needs matplotlib: pip install 'edge-lung\\[plot]').",
    ),
    budget_ms: float | None = typer.Option(
        None, "--budget-ms", help="Longest acceptable time from the end of a window's audio to its decision, in ms."
    ),
    hop: float | None = typer.Option(
        None,
        "--hop",
        help="Seconds between decisions, as in `edge-lung stream --hop` \\[default: the stream's default].",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic audio that is timed."),
    graph: str = typer.Option(
        "model", "--graph", help="Comma-separated: model (numpy front end + the model file, the runtime's default), "
        "e2e (model.e2e.onnx, the front end inside the graph); model,e2e compares them."
    ),
    sustained: float | None = typer.Option(
        None, "--sustained", help="Instead of the short run: windows back to back for this many SECONDS at the first "
        "--threads count (default 1), reported per minute (p50/p95, SoC temperature and throttling flags where the "
        "board exposes them): does the board keep its speed in its case?"
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Let --json and --plot replace a report or plot an "
                                   "earlier bench wrote (never another file, nor an input)."),
) -> None:
    """Measure exported models on this machine, each model and thread count in a fresh process.

    Per 8 s window: features, model and end-to-end latency (p50/p95/p99/max) and real-time factor; per model: load
    time, first-inference time, peak memory and file size; plus the machine (CPU, flags, cores, memory, versions).

    With --hop and --budget-ms it answers whether this board keeps up with one decision every hop, with what headroom.
    """
    from rich.console import Console

    from edge_lung.bench.measure import BenchConfig, BenchError, check_outputs, parse_threads, run_bench
    from edge_lung.bench.report import render, row_labels, write_json
    from edge_lung.plots import plot_bench_report

    console = Console()
    if not console.is_terminal:  # piped or logged: do not squeeze the tables to 80 columns
        console = Console(width=max(console.width, 132))
    try:
        kwargs = {} if threads is None else {"threads": parse_threads(threads)}
        cfg = BenchConfig(windows=windows, warmup=warmup, hop_s=hop, budget_ms=budget_ms, seed=seed,
                          graphs=tuple(g.strip() for g in graph.split(",") if g.strip()), **kwargs)
        check_outputs(json_path, plot)
        inputs = (*models, compare_torch)
        for option, path, kind in (("--json", json_path, BENCH_JSON), ("--plot", plot, PLOT_PNG)):
            if path is not None:
                check_output(path, option, kind, overwrite, inputs)
        if sustained is not None:
            _sustained(models, sustained, cfg, json_path, plot, console)
            return
        report = run_bench(models, cfg, compare_torch=compare_torch, log=lambda msg: console.print(msg, markup=False))
        render(report, console)
        if json_path is not None:
            typer.echo(f"wrote {write_json(report, json_path)}")
        if plot is not None:
            typer.echo(f"wrote {plot_bench_report(report, row_labels(report['results']), plot)}")
    except (BenchError, ImportError, OSError) as exc:  # OSError: an output folder gone or not writable
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except ValueError as exc:  # option values rejected by BenchConfig
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except KeyboardInterrupt as exc:  # the running worker is killed by subprocess.run
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from exc


def _sustained(models: list[Path], seconds: float, cfg, json_path: Path | None, plot: Path | None, console) -> None:
    """`--sustained`: each model (its first graph) at the first thread count (1 unless --threads says)."""
    from edge_lung.bench.environment import environment
    from edge_lung.bench.report import write_json
    from edge_lung.bench.sustained import run_sustained, sustained_lines
    from edge_lung.plots import plot_sustained

    threads = cfg.threads[0] if cfg.threads else 1
    results = []
    for model in models:
        console.print(f"{model}: {seconds:g} s of windows back to back, {threads} thread(s) ...", markup=False)
        results.append(run_sustained(model, seconds, threads=threads, graph=cfg.graphs[0], seed=cfg.seed))
        for line in sustained_lines(results[-1]):
            console.print(line, markup=False, highlight=False)
    if json_path is not None:
        report = {"schema": "edge-lung-bench-sustained/1", "environment": environment(), "results": [],
                  "sustained": results}
        typer.echo(f"wrote {write_json(report, json_path)}")
    if plot is not None:
        typer.echo(f"wrote {plot_sustained(results[0], plot)}")


def register(app: typer.Typer) -> None:
    """Add `edge-lung bench` to `app`."""
    app.command("bench")(bench)
