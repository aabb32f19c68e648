"""One library function per runtime command (`devices`, `stream`, `classify`), so the CLI stays thin."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_lung.runtime.classify import FileResult, classify_files, overall_agreement
from edge_lung.runtime.events import JsonlWriter, LiveDisplay
from edge_lung.runtime.live import LiveSummary, run_live
from edge_lung.runtime.sources import ReplaySource, SerialSource, Source
from edge_lung.runtime.stream import StreamConfig, StreamingClassifier

AUDIO_SUFFIXES = (".wav", ".flac")
log = logging.getLogger(__name__)


def load_classifier(
    model_dir: str | Path,
    cfg: StreamConfig,
    threads: int | None,
    quality: str = "on",
    quality_set: list[str] | tuple[str, ...] = (),
) -> StreamingClassifier:
    """OnnxClassifier (onnxruntime only) wrapped with the stream settings and the quality gate.

    The gate's thresholds are the model directory's, with `quality_set` (`NAME=VALUE`) applied;
    `quality="off"` classifies every window except those holding NaN/inf samples.
    """
    from edge_lung.runtime.model_dir import OnnxClassifier, check_threads

    check_threads(threads)
    if quality not in ("on", "off"):
        raise ValueError(f"--quality: expected 'on' or 'off', got {quality!r}")
    model = OnnxClassifier(model_dir, threads=threads or None)
    gate = model.info.quality.with_overrides(list(quality_set))
    return StreamingClassifier(model, cfg, quality=gate, gate=quality == "on")


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

    def __post_init__(self) -> None:
        chosen = [name for name, v in (("--device", self.device), ("--replay", self.replay), ("--serial", self.serial))
                  if v is not None]
        if len(chosen) > 1:
            raise ValueError(f"expected one audio source, got {' and '.join(chosen)}")
        if self.realtime and self.replay is None:
            raise ValueError("--realtime: expected together with --replay FILE")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError(f"--duration: expected seconds > 0, got {self.duration_s}")
        if self.record is not None and Path(self.record).suffix.lower() != ".flac":
            raise ValueError(f"--record {self.record}: expected a path ending in .flac")


def make_source(opts: StreamOptions, model_rate: int | None = None) -> Source:
    """The audio source the options name; a sound card captures at the model's rate when it can."""
    if opts.replay is not None:
        return ReplaySource(opts.replay, realtime=opts.realtime)
    if opts.serial is not None:
        return SerialSource(opts.serial)
    from edge_lung.runtime.capture import SoundDeviceSource

    return SoundDeviceSource(opts.device, model_rate=model_rate)


def stream_session(
    classifier: StreamingClassifier,
    opts: StreamOptions,
    stop: threading.Event | None = None,
    source: Source | None = None,
) -> LiveSummary:
    """`edge-lung stream`: run the live path with the display, JSON lines and recorder the options ask for."""
    from contextlib import ExitStack

    source = source or make_source(opts, classifier.model.info.features.sample_rate)
    source.start()  # fail on a wrong port or device before drawing the live table
    on_decision: list[Callable] = []
    on_audio: list[Callable] = []
    on_gap: list[Callable] = []
    with ExitStack() as stack:
        stack.callback(source.stop)
        jsonl = stack.enter_context(JsonlWriter(opts.jsonl)) if opts.jsonl is not None else None
        if jsonl is not None:
            on_decision.append(jsonl)
            on_gap.append(jsonl.write)
        if opts.record is not None:
            on_audio.append(_LazyRecorder(opts.record, stack))
        if opts.display:
            title = f"edge-lung stream  {source.name}  (threshold {classifier.cfg.threshold:.2f}, Ctrl-C stops)"
            on_decision.append(stack.enter_context(LiveDisplay(title)))
        backpressure = opts.replay is not None and not opts.realtime
        summary = run_live(
            classifier, source, on_decision, on_audio, on_gap, backpressure, stop=stop, duration_s=opts.duration_s
        )
        if jsonl is not None:
            jsonl.write(summary.as_dict())
    return summary


class _LazyRecorder:
    """Opens the FLAC file at the first block, when the capture rate is known (serial links learn it late).

    A source whose rate changes mid-stream (firmware reconfigured) rolls over to `NAME-2.flac`,
    `NAME-3.flac`, ... at the new rate rather than ending the session; each file is logged.
    """

    def __init__(self, path: Path, stack) -> None:
        self.path, self.recorder, self.files = Path(path), None, 0
        stack.callback(self._close)

    def __call__(self, block, rate: int) -> None:
        if self.recorder is not None and self.recorder.sample_rate != rate:
            self._close()
        if self.recorder is None:
            from edge_lung.runtime.recorder import FlacRecorder

            self.files += 1
            path = self.path if self.files == 1 else self.path.with_name(f"{self.path.stem}-{self.files}.flac")
            if self.files > 1:
                log.warning("--record: input rate is now %d Hz; recording continues in %s", rate, path)
            self.recorder = FlacRecorder(path, rate).__enter__()
        self.recorder.write(block, rate)

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
    classifier: StreamingClassifier, paths: list[Path], jsonl: Path | None = None
) -> tuple[list[FileResult], dict[str, Any] | None]:
    """`edge-lung classify`: every file through the streaming windowing; optional JSON lines."""
    files = expand_audio_paths(paths)
    writer = JsonlWriter(jsonl) if jsonl is not None else None
    try:
        results = classify_files(classifier, files, on_decision=writer)
        pooled = overall_agreement(results, classifier.labels)
        if writer is not None:
            for r in results:
                writer.write({"type": "file", **r.summary(classifier.labels)})
            if pooled is not None:
                writer.write({"type": "annotated_total", **pooled})
    finally:
        if writer is not None:
            writer.close()
    return results, pooled
