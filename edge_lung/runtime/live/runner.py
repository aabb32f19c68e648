"""The live path: capture buffer -> resampling and windows -> worker-thread inference -> decision events.

One loop on the calling thread reads what the source wrote (sound card callback, file replay
or serial frames), feeds the per-stream `WindowStream`, hands windows to the
`InferenceWorker`, and turns finished results into `Decision`s for the sinks (live display,
JSON lines, recorder). Memory is fixed: the capture ring, one window ring, a bounded worker
queue and the smoothing history; nothing accumulates per window.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_lung.runtime.live.breaths import BreathDecision, BreathStream
from edge_lung.runtime.live.classifier import Classifier
from edge_lung.runtime.live.sources import Source
from edge_lung.runtime.live.stream import Counters, Decision, StreamingClassifier, Window, WindowStream
from edge_lung.runtime.live.worker import InferenceWorker


@dataclass
class LiveSummary:
    """What a live run did, for the closing line and for tests and benchmarks."""

    source: str
    input_rate: int = 0
    input_samples: int = 0
    windows: int = 0
    flagged: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)  # windows per quality verdict (`ok` = classified)
    counters: Counters = field(default_factory=Counters)
    reconnects: int = 0
    wall_s: float = 0.0
    stopped_by: str = ""
    recordings: list[str] = field(default_factory=list)  # --record files written (NAME-2.flac if NAME was taken)
    warnings: list[str] = field(default_factory=list)  # e.g. a recording stopped by a full disk
    breaths: int = 0  # --decide breath: breaths detected, their labels (or quality verdicts), the last rate
    breath_labels: dict[str, int] = field(default_factory=dict)
    rate_bpm: float | None = None

    @property
    def seconds(self) -> float:
        return self.input_samples / self.input_rate if self.input_rate else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": "summary",
            "source": self.source,
            "input_rate": self.input_rate,
            "audio_s": round(self.seconds, 3),
            "windows": self.windows,
            "flagged": self.flagged,
            "verdicts": dict(self.verdicts),
            "reconnects": self.reconnects,
            "wall_s": round(self.wall_s, 3),
            "stopped_by": self.stopped_by,
            "recordings": self.recordings,
            "warnings": self.warnings,
            **self.counters.as_dict(),
            **({"breaths": self.breaths, "breath_labels": dict(self.breath_labels),
                "rate_bpm": None if self.rate_bpm is None else round(self.rate_bpm, 2)} if self.breaths else {}),
        }


def run_live(
    classifier: StreamingClassifier,
    source: Source,
    on_decision: Sequence[Callable[[Decision], None]] = (),
    on_audio: Sequence[Callable[[np.ndarray, int], None]] = (),
    on_gap: Sequence[Callable[[dict[str, Any]], None]] = (),
    backpressure: bool = False,
    stop: threading.Event | None = None,
    duration_s: float | None = None,
    poll_s: float = 0.005,
    max_block_s: float = 0.25,
    rate_timeout_s: float = 10.0,
) -> LiveSummary:
    """Run `source` through the live path until it ends, `stop` is set, `duration_s` of audio or Ctrl-C.

    `backpressure=True` makes the pipeline wait for inference instead of skipping windows
    (replay without real-time pacing); live sources use the default and count skips.
    `on_audio(samples, rate)` receives the raw captured audio (for `--record`); `on_gap(event)`
    a JSON-ready record of every discontinuity (device lost, serial frames lost, buffer overrun).
    """
    stop = stop or threading.Event()
    summary = LiveSummary(source=source.name)
    t0 = time.monotonic()
    source.start()
    try:
        rate = _wait_for_rate(source, stop, rate_timeout_s)
        if rate is None:
            summary.stopped_by = "no audio"
            return summary
        summary.input_rate = rate
        _Loop(classifier, source, on_decision, on_audio, on_gap, backpressure, summary).run(
            stop, duration_s, poll_s, max_block_s
        )
    except KeyboardInterrupt:  # Ctrl-C before the first audio arrived
        summary.stopped_by = "interrupted"
    finally:
        source.stop()
        summary.wall_s = time.monotonic() - t0
    if source.error is not None and summary.stopped_by == "source ended":
        raise source.error
    return summary


def _wait_for_rate(source: Source, stop: threading.Event, timeout_s: float) -> int | None:
    deadline = time.monotonic() + timeout_s
    while source.rate is None or source.buffer is None:
        if stop.is_set() or source.finished.is_set():
            if source.error is not None:
                raise source.error
            return None
        if time.monotonic() > deadline:
            raise TimeoutError(f"{source.name}: no audio within {timeout_s:.0f} s (is the device streaming?)")
        time.sleep(0.01)
    return source.rate


class _Loop:
    """State of one `run_live` call (kept out of the function so each step stays short)."""

    def __init__(self, classifier, source, on_decision, on_audio, on_gap, backpressure, summary: LiveSummary) -> None:
        self.classifier, self.source = classifier, source
        self.on_decision, self.on_audio, self.on_gap = list(on_decision), list(on_audio), list(on_gap)
        self.summary = summary
        self.counters = summary.counters
        self.rate = source.rate
        self.clf = Classifier.around(classifier, source.name)
        self.stream: WindowStream | BreathStream = self.clf.start(self.rate)
        self.worker = InferenceWorker(self.clf.process, max_pending=1, backpressure=backpressure)
        self._lost_seen = 0

    def run(self, stop: threading.Event, duration_s: float | None, poll_s: float, max_block_s: float) -> None:
        buffer = self.source.buffer
        limit = None if duration_s is None else int(round(duration_s * self.rate))
        try:
            while True:
                if stop.is_set():
                    self.summary.stopped_by = "stop"
                    break
                if limit is not None and self.stream.input_samples >= limit:
                    self.summary.stopped_by = "duration"
                    break
                max_n = max(1, int(max_block_s * self.rate))
                if limit is not None:
                    max_n = min(max_n, limit - self.stream.input_samples)
                block, gap = buffer.read(max_n)
                self._account_lost(buffer)
                if gap is not None:
                    self._gap(gap.samples, gap.seconds, gap.new_rate, gap.reason)
                elif block.shape[0]:
                    self._audio(block)
                elif self.source.finished.is_set() and not buffer.pending:
                    self.summary.stopped_by = "source ended"
                    break
                else:
                    time.sleep(poll_s)
                self._decide(self.worker.results())
        except KeyboardInterrupt:
            self.summary.stopped_by = "interrupted"
        self._submit(self.stream.finish())
        self._decide(self.worker.close())
        self.summary.input_samples = self.stream.input_samples
        self.summary.reconnects = self.source.reconnects
        self.counters.skipped = self.worker.skipped

    def _account_lost(self, buffer) -> None:
        lost = buffer.ring.lost
        if lost > self._lost_seen:  # the ring was lapped: those samples are gone, so it is a gap too
            delta = lost - self._lost_seen
            self._lost_seen = lost
            self.counters.lost_samples = lost
            self._gap(delta, delta / self.rate, None, "capture buffer overrun: the pipeline fell behind")

    def _gap(self, samples: int, seconds: float, new_rate: int | None, reason: str) -> None:
        self.counters.gaps += 1
        self.counters.gap_s += seconds
        at = self.stream.total_samples  # model-rate index where the missing audio starts
        filled = self.stream.fills(samples, new_rate)
        self._submit(self.stream.gap(samples, new_rate))
        event = {
            "type": "gap",
            "at": at,
            "at_s": round(at / self.stream.rate, 4),
            "input_samples": samples,
            "seconds": round(seconds, 4),
            "reason": reason,
            "time": round(time.time(), 3),
            "filled_with_silence": filled,
        }
        for sink in self.on_gap:
            sink(event)
        if new_rate is not None:
            self.rate = new_rate

    def _audio(self, block: np.ndarray) -> None:
        for sink in self.on_audio:
            sink(block, self.rate)
        self._submit(self.stream.accept_waveform(block))

    def _submit(self, windows: list[Window]) -> None:
        for window in windows:
            self.worker.submit(window)

    def _decide(self, results) -> None:
        self.counters.overflows = self.source.overflows
        self.counters.skipped = self.worker.skipped
        for window, r in results:
            decision = self.clf.decide(window, r, self.counters)
            if isinstance(decision, BreathDecision):
                self._breath(decision)
            else:
                self._window(decision)
            for sink in self.on_decision:
                sink(decision)

    def _breath(self, decision: BreathDecision) -> None:
        self.summary.breaths += 1
        self.summary.breath_labels[decision.label] = self.summary.breath_labels.get(decision.label, 0) + 1
        self.summary.rate_bpm = decision.rate_bpm
        self.summary.flagged += int(decision.flag)

    def _window(self, decision: Decision) -> None:
        self.summary.windows += 1
        self.summary.flagged += int(decision.flag)
        self.summary.verdicts[decision.verdict] = self.summary.verdicts.get(decision.verdict, 0) + 1
