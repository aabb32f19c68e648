"""Runtime commands: `devices`, `stream`, `classify`, `report`, `verify`, `calibrate` (torch-free)."""

from __future__ import annotations

from pathlib import Path

import typer

from edge_lung.fileio import EVENTS_JSONL, check_output, json_report
from edge_lung.runtime.explain.saliency import OcclusionConfig
from edge_lung.runtime.live.stream import StreamConfig
from edge_lung.runtime.offline.calibrate import MIN_AUDIO_S

# Defaults are read from the dataclasses the options fill (tests/test_cli_defaults.py checks them field by field).
_HOP = typer.Option(StreamConfig.hop_s, "--hop",
                    help="Seconds between decisions (each decision looks at the model's last window).")
_MIN_AUDIO = typer.Option(
    StreamConfig.min_audio_s, "--min-audio", help="Seconds of audio before the first decision; until a full "
    "window exists the audio so far is cyclic-padded, as training padded short cycles."
)
_SMOOTH = typer.Option(StreamConfig.smooth, "--smooth",
                       help="Smoothed label = mean probabilities of the last N windows.")
_THRESHOLD = typer.Option(
    StreamConfig.threshold, "--threshold", help="Flag a window when P(abnormal) >= this. Lower it for sensitivity, "
    "raise it for specificity; `edge-lung evaluate` and `classify` on annotated recordings print the curve."
)
_DECIDE = typer.Option(
    StreamConfig.decide, "--decide", help="window: a decision every hop on the last window; breath: one per "
    "detected respiratory cycle, padded as training pads a cycle, with the respiratory rate (JSON lines: "
    "'type': 'breath'). The default measured better on the shared subset (benchmarks/results/breaths/)."
)
_THREADS = typer.Option(0, "--threads", help="onnxruntime intra-op threads (0: onnxruntime decides).")
_QUALITY = typer.Option("on", "--quality", help="Signal-quality gate: 'on' gives windows that cannot be heard "
                        "(no_signal, clipping, too_loud, too_quiet, noise) that verdict instead of a class; 'off' "
                        "classifies them (windows with NaN/inf samples are never classified).")
_QUALITY_SET = typer.Option(None, "--quality-set", help="Override one gate threshold of the model directory, "
                            "NAME=VALUE (repeatable), e.g. clipped_share=0.1; names: see manifest.json 'quality'.")
_OVERWRITE_HELP = "(never a file edge-lung did not write, nor an input; see README 'Files edge-lung writes')"
VERIFY_JSON = json_report("an `edge-lung verify` JSON report", ("passed", "checks", "model_dir"))
"""The writing policy's kind for `verify --json` (`edge_lung.fileio.check_output`)."""

_GRAPH = typer.Option("model", "--graph", help="model: numpy front end + the model file (default); e2e: "
                      "model.e2e.onnx, raw audio in, the front end as ONNX ops (benchmarks/README.md compares them).")


def _fail(exc: BaseException) -> typer.Exit:
    typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
    return typer.Exit(2)


_USER_ERRORS = (ValueError, OSError, ImportError, TimeoutError, RuntimeError)


def devices() -> None:
    """List audio input devices with their default and supported sample rates; mark likely stethoscopes (USB)."""
    from rich.console import Console

    from edge_lung.runtime.commands.tables import devices_table
    from edge_lung.runtime.live.capture import list_input_devices

    try:
        found = list_input_devices()
    except _USER_ERRORS as exc:
        raise _fail(exc) from exc
    if not found:
        raise _fail(OSError("no audio input device found: plug in the stethoscope (USB) or a microphone"))
    Console().print(devices_table(found))


def stream(
    model_dir: Path = typer.Argument(..., help="Exported model directory (or .onnx file) from `edge-lung export`."),
    device: str = typer.Option(None, "--device", help="Input device index or part of its name (see `edge-lung "
                               "devices`); default: a likely USB stethoscope, else the system default input."),
    hop: float = _HOP,
    min_audio: float = _MIN_AUDIO,
    smooth: int = _SMOOTH,
    threshold: float = _THRESHOLD,
    threads: int = _THREADS,
    graph: str = _GRAPH,
    jsonl: Path = typer.Option(None, "--jsonl", help="Write every decision as one JSON line (flushed) to PATH; "
                               "'-' for stdout."),
    record: Path = typer.Option(None, "--record", help="Also save the raw captured audio to PATH.flac (flushed "
                                "every second, readable after a crash)."),
    replay: Path = typer.Option(None, "--replay", help="Feed this WAV/FLAC file through the live path instead "
                                "of a device."),
    realtime: bool = typer.Option(False, "--realtime", help="With --replay: pace the file in real time "
                                  "(default: as fast as inference allows, nothing skipped)."),
    serial: str = typer.Option(None, "--serial", help="Read framed PCM from this serial port (firmware_host/"
                               "PROTOCOL.md), e.g. /dev/ttyACM0."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Let --jsonl, --record and --report replace what an "
                                   "earlier session wrote there " + _OVERWRITE_HELP + "; without it an existing "
                                   "NAME.flac is kept and the recording goes to NAME-2.flac."),
    duration: float = typer.Option(None, "--duration", help="Stop after this many seconds of audio."),
    quiet: bool = typer.Option(False, "--quiet", help="No live table (use with --jsonl)."),
    quality: str = _QUALITY,
    quality_set: list[str] = _QUALITY_SET,
    report: Path = typer.Option(None, "--report", help="When the session ends, write its clinician report "
                                "(HTML: spectrogram, window timeline, saliency of flagged windows) to DIR."),
    web: str = typer.Option(None, "--web", help="Serve the live phone page (label, P(abnormal) timeline, "
                            "quality advice; never audio) on HOST:PORT: 127.0.0.1 by default, any other address "
                            "prints a token and its QR code, required on every request."),
    decide: str = _DECIDE,
) -> None:
    """Stream from a USB stethoscope (or --replay FILE, or --serial PORT) and print a decision every hop."""
    from rich.console import Console

    from edge_lung.runtime.commands.session import (
        StreamOptions,
        check_stream_outputs,
        load_classifier,
        stream_session,
    )
    from edge_lung.runtime.commands.tables import summary_line
    from edge_lung.runtime.live.stream import StreamConfig

    try:
        opts = StreamOptions(
            device, replay, realtime, serial, jsonl, record, duration, display=not quiet, overwrite=overwrite,
            report=report, web=web
        )
        check_stream_outputs(opts, (model_dir,))
        classifier = load_classifier(
            model_dir, StreamConfig(hop, min_audio, smooth, threshold, decide=decide), threads, quality,
            quality_set or (), graph
        )
        summary = stream_session(classifier, opts)
    except _USER_ERRORS as exc:
        raise _fail(exc) from exc
    Console(stderr=True).print(summary_line(summary), highlight=False)


def classify(
    model_dir: Path = typer.Argument(..., help="Exported model directory (or .onnx file) from `edge-lung export`."),
    files: list[Path] = typer.Argument(..., help="WAV/FLAC files (any sample rate) or directories of them. ICBHI "
                                       "annotations (<stem>.txt) beside a file add cycle agreement."),
    hop: float = _HOP,
    min_audio: float = _MIN_AUDIO,
    smooth: int = _SMOOTH,
    threshold: float = _THRESHOLD,
    threads: int = _THREADS,
    graph: str = _GRAPH,
    jsonl: Path = typer.Option(None, "--jsonl", help="Write every window decision and a per-file summary as "
                               "JSON lines to PATH; '-' for stdout."),
    quality: str = _QUALITY,
    quality_set: list[str] = _QUALITY_SET,
    overwrite: bool = typer.Option(False, "--overwrite", help="Let --jsonl replace JSON lines an earlier run "
                                   "wrote " + _OVERWRITE_HELP + "."),
    decide: str = _DECIDE,
) -> None:
    """Classify files with the same windowing as `stream` (as fast as the CPU allows) and report per file."""
    from rich.console import Console

    from edge_lung.runtime.commands.session import classify_session, load_classifier
    from edge_lung.runtime.commands.tables import classify_table, pooled_lines
    from edge_lung.runtime.live.stream import StreamConfig
    from edge_lung.runtime.offline.classify import Interrupted

    console = Console(stderr=jsonl is not None and str(jsonl) == "-")
    try:
        if jsonl is not None and str(jsonl) != "-":
            check_output(jsonl, "--jsonl", EVENTS_JSONL, overwrite, (model_dir, *files))
        classifier = load_classifier(
            model_dir, StreamConfig(hop, min_audio, smooth, threshold, decide=decide), threads, quality,
            quality_set or (), graph
        )
        results, pooled = classify_session(classifier, files, jsonl, overwrite)
    except Interrupted as stop:  # Ctrl-C: report what finished, the cut file marked
        console.print(classify_table(stop.results, classifier.labels, threshold))
        finished = sum(r.status != "interrupted" for r in stop.results)
        typer.secho(f"interrupted: {finished} file(s) finished", err=True, fg=typer.colors.YELLOW)
        raise typer.Exit(130) from None
    except _USER_ERRORS as exc:
        raise _fail(exc) from exc
    console.print(classify_table(results, classifier.labels, threshold))
    for line in pooled_lines(pooled) if pooled else []:
        console.print(line, highlight=False)
    if any(r.status != "ok" or r.note.startswith("error") for r in results):
        raise typer.Exit(1)


def report(
    model_dir: Path = typer.Argument(..., help="Exported model directory (or .onnx file) from `edge-lung export`."),
    files: list[Path] = typer.Argument(..., help="WAV/FLAC files (any sample rate) or directories of them. ICBHI "
                                       "annotations (<stem>.txt) beside a file add the cycles."),
    out: Path = typer.Option(..., "--out", help="Folder for index.html and one page per recording."),
    hop: float = _HOP,
    min_audio: float = _MIN_AUDIO,
    smooth: int = _SMOOTH,
    threshold: float = _THRESHOLD,
    threads: int = _THREADS,
    patch_frames: int = typer.Option(OcclusionConfig.patch_frames, "--patch-frames",
                                     help="Occlusion patch length in feature frames."),
    patch_bins: int = typer.Option(OcclusionConfig.patch_bins, "--patch-bins",
                                   help="Occlusion patch height in mel bins."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into a report folder an earlier report wrote "
                                   "(its index.html and same-named pages are replaced) " + _OVERWRITE_HELP + "."),
) -> None:
    """Write a self-contained HTML page per recording (spectrogram, window timeline, cycles, saliency of the
    flagged windows) plus an index; works offline."""
    from edge_lung.runtime.commands.session import load_classifier, report_session
    from edge_lung.runtime.explain.report import REPORT_FOLDER
    from edge_lung.runtime.explain.saliency import OcclusionConfig
    from edge_lung.runtime.live.stream import StreamConfig

    try:
        check_output(out, "--out", REPORT_FOLDER, overwrite, (model_dir, *files))
        classifier = load_classifier(model_dir, StreamConfig(hop, min_audio, smooth, threshold), threads)
        reports = report_session(classifier, files, out, OcclusionConfig(patch_frames, patch_bins))
    except _USER_ERRORS as exc:
        raise _fail(exc) from exc
    bad = sum(r.error is not None for r in reports)
    typer.echo(f"{out / 'index.html'}: {len(reports) - bad} recordings reported, {bad} not")
    if bad:
        raise typer.Exit(1)


def verify(
    model_dir: Path = typer.Argument(..., help="Exported model directory from `edge-lung export`."),
    threads: int = _THREADS,
    json_path: Path = typer.Option(None, "--json", help="Also write the report as JSON to PATH."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Let --json replace a report an earlier verify wrote "
                                   + _OVERWRITE_HELP + "."),
) -> None:
    """Re-run the model directory's test vectors on this machine: file hashes, metadata, both graphs' outputs."""
    from edge_lung.fileio import atomic_write_json
    from edge_lung.runtime.artifact.e2e import verify_lines, verify_model_dir

    try:
        if json_path is not None:
            check_output(json_path, "--json", VERIFY_JSON, overwrite, (model_dir,))
        report = verify_model_dir(model_dir, threads or None)
        if json_path is not None:
            atomic_write_json(json_path, report)
    except _USER_ERRORS as exc:
        raise _fail(exc) from exc
    typer.echo("\n".join(verify_lines(report)))
    if not report["passed"]:
        raise typer.Exit(1)


def calibrate(
    model_dir: Path = typer.Argument(..., help="Exported model directory from `edge-lung export` (left untouched)."),
    recordings: Path = typer.Option(..., "--recordings", help="Folder of WAV/FLAC recordings (any rate, no labels) "
                                    "made with the new stethoscope on chests; a few minutes in all."),
    out: Path = typer.Option(..., "--out", "-o", help="Calibrated MODEL_DIR to write (a copy; built in a temp dir, "
                             "then renamed)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing edge-lung model directory at --out "
                                   "(never any other folder)."),
    reference: Path = typer.Option(None, "--reference", help="Training database (DB_DIR): compute the training "
                                   "statistics from its train split, for a model exported before export wrote "
                                   "feature_stats.json (else re-export it)."),
    min_audio: float = typer.Option(MIN_AUDIO_S, "--min-audio", help="Least usable audio, in seconds, the "
                                    "recordings must give (time covered by windows that pass the quality gate)."),
) -> None:
    """Calibrate a model to a new stethoscope from unannotated recordings: measures its per-mel-bin (or
    per-descriptor) feature statistics over windows cut as the runtime cuts them and writes a copy of MODEL_DIR
    whose runtime maps them onto the training statistics. A model trained with --mel-norm window standardises
    every window already: calibration is then nearly the identity. The copy refuses --graph e2e and `edge-lung
    verify` (the e2e graph and test vectors are the uncalibrated model's)."""
    from edge_lung.runtime.offline.calibrate import calibrate_lines, calibrate_model_dir

    try:
        record = calibrate_model_dir(model_dir, recordings, out, overwrite, reference, min_audio, log=typer.echo)
    except _USER_ERRORS as exc:
        raise _fail(exc) from exc
    typer.echo("\n".join(calibrate_lines(record, out)))


def register(app: typer.Typer) -> None:
    """Add this stage's commands to `app`."""
    app.command("devices")(devices)
    app.command("stream")(stream)
    app.command("classify")(classify)
    app.command("report")(report)
    app.command("verify")(verify)
    app.command("calibrate")(calibrate)
