"""`edge-lung export RUN_DIR --out MODEL_DIR [--int8]`: the model directory a device ships."""

from __future__ import annotations

from pathlib import Path

import typer


def export(
    run_dir: Path = typer.Argument(..., help="Run directory written by `edge-lung train` (config.json + model/)."),
    out: Path = typer.Option(..., "--out", "-o", help="MODEL_DIR to write (built in a temp dir, then renamed)."),
    int8: bool = typer.Option(False, "--int8", help="Ship an INT8 model (model.int8.onnx) instead of FP32."),
    quant: str = typer.Option(
        "auto", "--quant", help="INT8 mode: 'auto' (dynamic for an AST, static for a CNN), 'dynamic' (needs no data) "
        "or 'static' (QDQ, calibrated on train cycles)."
    ),
    calibration_size: int = typer.Option(
        64, "--calibration-size", help="Train cycles (class-balanced) used to calibrate static INT8."
    ),
    preset: str = typer.Option(
        "x86-avx2",
        "--preset",
        help="Target CPU for INT8: x86-avx2, x86-avx512-vnni, arm64 (Raspberry Pi), or a preset .json path "
        "(see edge_lung/presets/).",
    ),
    keep_float: list[str] = typer.Option(
        [], "--keep-float", help="Regex of graph node names to leave in float (repeatable), on top of the preset's "
        "(the classifier head); use it for nodes that parity.json shows are sensitive."
    ),
    quality_set: list[str] = typer.Option(
        [], "--quality-set", help="Set one signal-quality gate threshold written into the model, NAME=VALUE "
        "(repeatable), e.g. clipped_share=0.1 for a stethoscope that never clips; the rest keep their defaults "
        "(edge_lung/runtime/artifact/quality.py QualityConfig). Devices can still override with --quality-set."
    ),
    data: Path | None = typer.Option(
        None, "--data", help="Database for calibration and parity (default: the one the run was trained on)."
    ),
    parity_size: int = typer.Option(
        0, "--parity-size", help="Validation cycles (class-balanced) for the parity check; 0 = all of them. "
        "A base-size model takes ~1-3 s per cycle on a small CPU."
    ),
    threads: int | None = typer.Option(None, "--threads", help="onnxruntime threads for the parity runs."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing, non-empty MODEL_DIR."),
) -> None:
    """Export a trained run to ONNX (FP32 or INT8) with metadata, manifest, model card and measured parity.

    Fails with a non-zero status, writing nothing, if FP32 ONNX differs from PyTorch by 1e-4 or more.
    """
    # torch and onnx load here, not when `edge-lung --help` starts
    from edge_lung.export.onnx import ExportConfig, ExportError, export_model
    from edge_lung.export.parity import speed_advice
    from edge_lung.runtime.artifact.model_dir import PARITY_NAME

    try:
        cfg = ExportConfig(
            int8=int8,
            quant=quant,
            calibration_size=calibration_size,
            preset=preset,
            parity_size=parity_size,
            data_dir=str(data) if data else None,
            overwrite=overwrite,
            threads=threads,
            keep_float=tuple(keep_float),
            quality_set=tuple(quality_set),
        )
        record = export_model(run_dir, out, cfg, log=typer.echo)
    except ExportError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except ValueError as exc:  # option values rejected by ExportConfig / load_preset
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    shipped = "int8" if int8 else "fp32"
    typer.echo(f"wrote {out} ({shipped}, {record['export_seconds']} s); parity in {out / PARITY_NAME}")
    q = record.get("int8_vs_fp32", {})
    if "speed" in q:  # the last line: whether the INT8 file asked for is the faster one here
        typer.echo(speed_advice(q["speed"], q["size_ratio"]))


def register(app: typer.Typer) -> None:
    """Add this stage's commands to `app`."""
    app.command("export")(export)
