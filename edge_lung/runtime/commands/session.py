"""One library function per runtime command (`devices`, `stream`, `classify`, `report`), so the CLI stays thin."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from edge_lung.fileio import EVENTS_JSONL, check_output
from edge_lung.runtime.artifact.e2e import load_model
from edge_lung.runtime.explain.report import REPORT_FOLDER, RecordingReport, SessionCollector, write_report
from edge_lung.runtime.explain.saliency import OcclusionConfig
from edge_lung.runtime.live.events import JsonlWriter, LiveDisplay
from edge_lung.runtime.live.recorder import check_record_path
from edge_lung.runtime.live.runner import LiveSummary, run_live
from edge_lung.runtime.live.sources import ReplaySource, SerialSource, Source
from edge_lung.runtime.live.stream import StreamConfig, StreamingClassifier, check_seconds, no_window_reason
from edge_lung.runtime.live.web import LiveWeb, WebConfig
from edge_lung.runtime.offline.classify import FileResult, classify_files, overall_agreement

AUDIO_SUFFIXES = (".wav", ".flac")
log = logging.getLogger(__name__)


def load_classifier(
    model_dir: str | Path,
    cfg: StreamConfig,
    threads: int | None,
    quality: str = "on",
    quality_set: list[str] | tuple[str, ...] = (),
    graph: str = "model",
) -> StreamingClassifier:
    """The model (onnxruntime only; it bounds `threads` by the usable cores) wrapped with the stream settings
    (checked against the model's frame shift) and the quality gate: graph 'model' is the numpy front end +
    `OnnxClassifier`, 'e2e' the end-to-end graph `E2EClassifier` (raw audio in).

    The gate's thresholds are the model directory's, with `quality_set` (`NAME=VALUE`) applied;
    `quality="off"` classifies every window except those holding NaN/inf samples.
    """
    if quality not in ("on", "off"):
        raise ValueError(f"--quality: expected 'on' or 'off', got {quality!r}")
    model = load_model(model_dir, graph, threads=threads or None)
    gate = model.info.quality.with_overrides(list(quality_set))
    return StreamingClassifier(model, cfg, quality=gate, gate=quality == "on")


@contextmanager
def sigterm_as_sigint() -> Iterator[None]:
    """SIGTERM (what systemd and `kill` send) handled as Ctrl-C while the block runs: the command finalises its
    recording, JSON lines and closing line instead of dying mid-write (issue 26). A second SIGTERM during that
    finalisation kills as before. Signals reach only the main thread, so elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise KeyboardInterrupt(f"signal {signum} (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass(frozen=True)
class StreamOptions:
    """Where `edge-lung stream` gets audio and where its events go."""

    device: str | None = None
    replay: Path | None = None
    realtime: bool = False
    serial: str | None = None
    jsonl: Path | None = None
    record: Path | None = None
    duration_s: float | None = None
    display: bool = True
    overwrite: bool = False  # --record may replace an existing file (otherwise NAME-2.flac, ...)
    report: Path | None = None  # write the clinician report of the session here when it ends
    web: str | None = None  # HOST:PORT of the live phone page (`edge_lung.runtime.live.web`)

    def __post_init__(self) -> None:
        chosen = [name for name, v in (("--device", self.device), ("--replay", self.replay), ("--serial", self.serial))
                  if v is not None]
        if len(chosen) > 1:
            raise ValueError(f"expected one audio source, got {' and '.join(chosen)}")
        if self.realtime and self.replay is None:
            raise ValueError("--realtime: expected together with --replay FILE")
        if self.duration_s is not None:
            check_seconds(self.duration_s, "--duration")
        if self.record is not None and Path(self.record).suffix.lower() != ".flac":
            raise ValueError(f"--record {self.record}: expected a path ending in .flac")


def check_stream_outputs(opts: StreamOptions, inputs: tuple[Path | None, ...] = ()) -> None:
    """--jsonl, --record and --report under fileio's writing policy (`inputs`: the model and the like)."""
    inputs = (*inputs, opts.replay)
    if opts.jsonl is not None and str(opts.jsonl) != "-":
        check_output(opts.jsonl, "--jsonl", EVENTS_JSONL, opts.overwrite, inputs)
    if opts.record is not None:
        check_record_path(opts.record, opts.overwrite, inputs)
    if opts.report is not None:
        check_output(opts.report, "--report", REPORT_FOLDER, opts.overwrite, inputs)


def make_source(opts: StreamOptions, model_rate: int | None = None) -> Source:
    """The audio source the options name; a sound card captures at the model's rate when it can."""
    if opts.replay is not None:
        if not Path(opts.replay).is_file():
            raise ValueError(f"--replay {opts.replay}: no such file")
        return ReplaySource(opts.replay, realtime=opts.realtime)
    if opts.serial is not None:
        return SerialSource(opts.serial)
    from edge_lung.runtime.live.capture import SoundDeviceSource

    return SoundDeviceSource(opts.device, model_rate=model_rate)


def stream_session(
    classifier: StreamingClassifier,
    opts: StreamOptions,
    stop: threading.Event | None = None,
    source: Source | None = None,
    on_decision: Sequence[Callable] = (),
    on_event: Sequence[Callable] = (),
) -> LiveSummary:
    """`edge-lung stream`: run the live path with the display, JSON lines, recorder and phone page the options ask
    for; `on_decision` / `on_event` are extra sinks for decisions and for gap and summary events (the exam's).
    SIGTERM stops it as Ctrl-C does (`sigterm_as_sigint`)."""
    with sigterm_as_sigint():
        return _stream_session(classifier, opts, stop, source, on_decision, on_event)


def _stream_session(
    classifier: StreamingClassifier,
    opts: StreamOptions,
    stop: threading.Event | None,
    source: Source | None,
    on_decision: Sequence[Callable],
    on_event: Sequence[Callable],
) -> LiveSummary:
    from contextlib import ExitStack

    check_stream_outputs(opts)  # before the session starts: a refused output is said now, not at the end
    if opts.report is not None and classifier.cfg.decide == "breath":
        raise ValueError("--report: the session page draws window decisions; use it with --decide window")
    source = source or make_source(opts, classifier.model.info.features.sample_rate)
    source.start()  # fail on a wrong port or device before drawing the live table
    on_decision, on_audio, on_gap = list(on_decision), [], list(on_event)
    to_summary = list(on_event)  # event sinks that also get the closing summary (JSON lines writes its own)
    with ExitStack() as stack:
        stack.callback(source.stop)
        jsonl = (stack.enter_context(JsonlWriter(opts.jsonl, opts.overwrite, (opts.replay,)))
                 if opts.jsonl is not None else None)
        if jsonl is not None:
            on_decision.append(jsonl)
            on_gap.append(jsonl.write)
        recorder = None
        if opts.record is not None:
            recorder = _LazyRecorder(opts.record, stack, opts.overwrite, jsonl.write if jsonl is not None else None)
            on_audio.append(recorder)
        collector = _report_collector(opts, classifier.features, on_decision, on_audio)
        web = _web_page(opts, stack, source.name)
        if web is not None:
            on_decision.append(web)
            on_gap.append(web.event)
            to_summary.append(web.event)
        if opts.display:
            title = f"edge-lung stream  {source.name}  (threshold {classifier.cfg.threshold:.2f}, Ctrl-C stops)"
            on_decision.append(stack.enter_context(LiveDisplay(title)))
        backpressure = opts.replay is not None and not opts.realtime
        summary = run_live(
            classifier, source, on_decision, on_audio, on_gap, backpressure, stop=stop, duration_s=opts.duration_s
        )
        if recorder is not None:
            summary.recordings, summary.warnings = [str(p) for p in recorder.paths], recorder.warnings
        if summary.windows == 0 and summary.input_samples:
            summary.warnings.append(no_window_reason(classifier.cfg, summary.seconds))
        if jsonl is not None:
            jsonl.write(summary.as_dict())
        for sink in to_summary:
            sink(summary.as_dict())
    if collector is not None:
        page = collector.write(classifier, opts.report, source.name)
        log.info("--report: wrote %s", page)
    return summary


def _web_page(opts: StreamOptions, stack, title: str) -> LiveWeb | None:
    """With `--web HOST:PORT`: the phone page, started (its address printed) and closed with the session."""
    if opts.web is None:
        return None
    web = stack.enter_context(LiveWeb(WebConfig.parse(opts.web), title=title))
    web.announce()
    return web


def _report_collector(opts: StreamOptions, features, on_decision: list[Callable], on_audio: list[Callable]):
    """With `--report DIR`: a `SessionCollector` fed every decision and captured block, else None."""
    if opts.report is None:
        return None
    collector = SessionCollector(features)
    on_decision.append(collector.decision)
    on_audio.append(collector.audio)
    return collector


class _LazyRecorder:
    """Opens the FLAC file at the first block, when the capture rate is known (serial links learn it late).

    Never replaces an existing file unless `overwrite`: NAME.flac taken means NAME-2.flac (then -3,
    ...), said in a warning. A source whose rate changes mid-stream (firmware reconfigured) rolls over
    to the next such name at the new rate. A recording that cannot be written (full disk) is
    finalised, warned about loudly (log and `notify`, the JSON lines) and dropped: the live decisions
    matter more than the copy of the audio, so they carry on.
    """

    def __init__(self, path: Path, stack, overwrite: bool = False, notify: Callable | None = None) -> None:
        self.path, self.overwrite, self.notify = Path(path), overwrite, notify
        self.recorder, self.index, self.failed = None, 0, False
        self._claimed: Path | None = None  # a name taken for a file not yet opened
        self.paths: list[Path] = []
        self.warnings: list[str] = []
        stack.callback(self._close)

    def __call__(self, block, rate: int) -> None:
        if self.failed:
            return
        from edge_lung.runtime.live.recorder import FlacRecorder

        try:
            if self.recorder is not None and self.recorder.sample_rate != rate:
                self._close()
                self._warn(f"--record: input rate is now {rate} Hz; recording continues in {self._next_path()}")
            if self.recorder is None:
                self.recorder = FlacRecorder(self._claim(self._next_path()), rate).__enter__()
                self.paths.append(self.recorder.path)
                self._claimed = None
            self.recorder.write(block, rate)
        except OSError as exc:  # RecordingError: the file is already finalised with what it holds
            self.failed = True
            self._close()
            if self._claimed is not None and self._claimed.is_file() and self._claimed.stat().st_size == 0:
                self._claimed.unlink()  # taken but never written: the disk refused even the header
            self.paths = [p for p in self.paths if p.is_file()]  # a file that kept no audio was removed
            self._warn(f"{exc}; recording stopped, decisions continue")

    def _next_path(self) -> Path:
        """NAME.flac, then NAME-2.flac, ...: the first name not taken (the next one in order with --overwrite)."""
        index = self.index + 1
        while True:
            path = self.path if index == 1 else self.path.with_name(f"{self.path.stem}-{index}.flac")
            if self.overwrite or not path.exists():
                return path
            index += 1

    def _claim(self, path: Path) -> Path:
        """Take `path` (O_EXCL, so a second session cannot take it too) and say if it is not the name asked for."""
        self.index = 1 if path == self.path else int(path.stem.rsplit("-", 1)[1])
        if not self.overwrite:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
            self._claimed = path
        if not self.paths and path != self.path:
            self._warn(f"--record {self.path} exists (an earlier recording, kept); recording to {path} instead "
                       "(--overwrite replaces it)")
        return path

    def _warn(self, message: str) -> None:
        log.warning(message)
        self.warnings.append(message)
        if self.notify is not None:
            self.notify({"type": "warning", "option": "--record", "message": message, "time": round(time.time(), 3)})

    def _close(self) -> None:
        if self.recorder is not None:
            self.recorder.__exit__(None, None, None)
            self.recorder = None


def expand_audio_paths(paths: list[Path]) -> list[Path]:
    """Files as given; directories become their .wav/.flac files (sorted). ValueError for missing paths."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                raise ValueError(f"{p}: directory holds no {'/'.join(AUDIO_SUFFIXES)} files")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise ValueError(f"{p}: no such file or directory")
    return out


def classify_session(
    classifier: StreamingClassifier, paths: list[Path], jsonl: Path | None = None, overwrite: bool = False
) -> tuple[list[FileResult], dict[str, Any] | None]:
    """`edge-lung classify`: every file through the streaming windowing; optional JSON lines.

    Each file's record is written as soon as it finishes, so Ctrl-C (`Interrupted`, carrying the
    results so far) or a crash loses at most the file being decided.
    """
    files = expand_audio_paths(paths)
    writer = JsonlWriter(jsonl, overwrite, files) if jsonl is not None else None

    def on_file(result: FileResult) -> None:
        if writer is not None:
            writer.write({"type": "file", **result.summary(classifier.labels)})

    try:
        with sigterm_as_sigint():  # SIGTERM: the finished files are reported, as on Ctrl-C
            results = classify_files(classifier, files, on_decision=writer, on_file=on_file)
        pooled = overall_agreement(results, classifier.labels)
        if writer is not None and pooled is not None:
            writer.write({"type": "annotated_total", **pooled})
    finally:
        if writer is not None:
            writer.close()
    return results, pooled


def report_session(
    classifier: StreamingClassifier,
    paths: Sequence[Path],
    out_dir: str | Path,
    occlusion: OcclusionConfig = OcclusionConfig(),
    progress: bool = True,
) -> list[RecordingReport]:
    """`edge-lung report`: files and folders expanded as `classify` does, a progress bar on stderr per file."""
    files = expand_audio_paths(list(paths))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not progress, transient=True) as bar:
        task = bar.add_task("report", total=len(files))

        def advance(path: Path, report: RecordingReport) -> None:
            state = f"error: {report.error}" if report.error else f"{len(report.saliencies)} windows explained"
            bar.console.print(f"{path.name}: {state}", highlight=False)
            bar.advance(task)

        return write_report(classifier, files, out_dir, occlusion, on_file=advance)
