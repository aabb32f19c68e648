"""`edge-lung exam`: a guided auscultation, site by site, with a patient summary (torch-free)."""

from __future__ import annotations

from pathlib import Path

import typer

from edge_lung.cli.runtime_cmd import _QUALITY_SET, _THREADS, _THRESHOLD, _USER_ERRORS, _fail
from edge_lung.runtime.commands.exam import SITES, ExamOptions


def exam(
    model_dir: Path = typer.Argument(..., help="Exported model directory from `edge-lung export`."),
    patient: str = typer.Option(..., "--patient", help="Patient ID (letters, digits, '-'): the first field of the "
                                "ICBHI-style file names."),
    out: Path = typer.Option(..., "--out", help="Exam folder: one FLAC per site, the patient page and JSON summary, "
                             "pages/ with each recording's report."),
    sites: str = typer.Option(",".join(ExamOptions.sites), "--sites", help="Chest sites in order, comma-separated: "
                              + ", ".join(f"{k} {v}" for k, v in SITES.items()) + "."),
    seconds: float = typer.Option(ExamOptions.seconds, "--seconds", help="Seconds of audio the quality gate judges "
                                  "ok that each site needs; a take stops once they were heard."),
    max_seconds: float = typer.Option(ExamOptions.max_seconds, "--max-seconds", help="Longest take (default: twice "
                                      "--seconds); a take that heard too little asks to keep, redo or skip."),
    session: str = typer.Option(ExamOptions.session, "--session", help="Session field of the file names."),
    device_tag: str = typer.Option(ExamOptions.device_tag, "--device-tag", help="Device field of the file names."),
    device: str = typer.Option(ExamOptions.device, "--device", help="Input device index or part of its name "
                               "(see `edge-lung devices`)."),
    replay_dir: Path = typer.Option(ExamOptions.replay_dir, "--replay-dir", help="Take one file per site from DIR "
                                    "instead of the microphone: Al.wav, Pl.flac, ... (Al-2.wav for a second take)."),
    realtime: bool = typer.Option(ExamOptions.realtime, "--realtime", help="With --replay-dir: pace files in real "
                                  "time (a demo with --web)."),
    redo: str = typer.Option(ExamOptions.redo, "--redo", help="A take with too little clear audio: 'ask' reads "
                             "k(eep)/r(edo)/s(kip) from stdin (an empty line or end of input keeps), 'auto' redoes up "
                             "to --attempts takes, 'never' keeps it. With a microphone, 'ask' also waits for Enter "
                             "before each site (s skips it)."),
    attempts: int = typer.Option(ExamOptions.attempts, "--attempts", help="Takes per site at most."),
    web: str = typer.Option(None, "--web", help="Serve the live phone page on HOST:PORT (127.0.0.1 by default; "
                            "any other address prints a token and its QR code, required on every request)."),
    threshold: float = _THRESHOLD,
    threads: int = _THREADS,
    quality_set: list[str] = _QUALITY_SET,
    quiet: bool = typer.Option(False, "--quiet", help="No live table during each take."),
) -> None:
    """Examine a patient site by site: prompts, records each site to FLAC, checks that enough clear audio was
    heard (redo otherwise), and writes a patient page (chest diagram by site) and a JSON summary."""
    from edge_lung.runtime.commands.exam import ExamInterrupted, run_exam, summary_lines
    from edge_lung.runtime.commands.session import load_classifier
    from edge_lung.runtime.live.stream import StreamConfig

    try:
        opts = ExamOptions(patient, out, tuple(s.strip() for s in sites.split(",") if s.strip()), seconds,
                           max_seconds, session, device_tag, device, replay_dir, realtime, redo, attempts,
                           display=not quiet)
        classifier = load_classifier(model_dir, StreamConfig(threshold=threshold), threads, "on", quality_set or ())
        result = run_exam(classifier, opts, web=web)
    except ExamInterrupted as stop:
        typer.echo("\n".join(summary_lines(stop.result)), err=True)
        raise typer.Exit(130) from None
    except _USER_ERRORS as exc:
        raise _fail(exc) from exc
    typer.echo("\n".join(summary_lines(result)), err=True)


def register(app: typer.Typer) -> None:
    """Add `exam` to `app`."""
    app.command("exam")(exam)
