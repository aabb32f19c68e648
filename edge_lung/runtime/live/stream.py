"""Windows and decisions: the per-stream state between captured samples and decision events.

`WindowStream` (one per device or file, with `reset()`) accepts samples at the input rate,
resamples them to the model's rate with state across blocks, keeps the last window in a ring
buffer and returns a `Window` every hop. Before a full window exists the audio so far is
cyclic-padded exactly as training padded short cycles. `Decider` turns class probabilities
into `Decision` events with smoothing over the last N windows and a screening threshold.
`StreamingClassifier` binds both to a shared, stateless `OnnxClassifier`, with the signal-quality
gate (`runtime.quality`) in front of the model: `WindowStream` counts NaN/inf and full-scale
samples as they arrive (and zeroes the NaN/inf ones), `StreamingClassifier.process` gives a window
its verdict and runs the model only when it is `ok`, and `Decider` turns any other verdict into
an undecided `Decision` that stays out of the smoothing.

Every number about audio and features (sample rate, window length, fbank settings) comes
from the model's metadata (`model.info.features`); nothing here redefines it.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_lung.audio import StreamResampler, cyclic_pad
from edge_lung.config import FeatureConfig, seconds_to_samples
from edge_lung.features import window_features
from edge_lung.runtime.artifact.quality import OK, Quality, QualityConfig, assess, input_marks
from edge_lung.runtime.live.ring import RingBuffer

MAX_SECONDS = 7 * 24 * 3600.0
"""Longest span any time option takes (a week): past every session, and small enough that seconds times any
input rate stays a sample count (1e308 s overflowed to infinity, issue 26)."""

MAX_SMOOTH = 3600
"""Most windows a smoothed label may average (an hour at the default hop)."""


def check_seconds(value: float, option: str, allow_zero: bool = False) -> None:
    """ValueError naming `option` and the allowed range unless `value` is finite seconds in (0, MAX_SECONDS]
    (or [0, MAX_SECONDS] with `allow_zero`)."""
    low_ok = value >= 0 if allow_zero else value > 0
    if not (math.isfinite(value) and low_ok and value <= MAX_SECONDS):
        low = "[0" if allow_zero else "(0"
        raise ValueError(f"{option}: expected seconds in {low}, {MAX_SECONDS:g}] (a week), got {value}")
DECIDE_MODES = ("window", "breath")
"""What the runtime decides on: the last window every hop, or each detected respiratory cycle."""


@dataclass(frozen=True)
class StreamConfig:
    """How often to decide and how to turn probabilities into a screening flag."""

    hop_s: float = 1.0
    min_audio_s: float = 2.0
    smooth: int = 5
    threshold: float = 0.5
    fill_gap_s: float = 0.5  # gaps up to this long are filled with silence; longer ones restart the windowing
    # "window": a decision every hop on the last window; "breath": one per detected respiratory cycle, padded as
    # training pads a cycle (runtime.live.breaths; issue 28). Window stays the default: on the same validation
    # cycles breath mode scored 65.1 vs 64.1 (tiny AST) and 52.1 vs 52.1 (descriptors), within noise, and its
    # segmenter matches 55% of the annotated cycles (benchmarks/results/breaths/2026-12-08-breaths.md).
    decide: str = "window"

    def __post_init__(self) -> None:
        check_seconds(self.hop_s, "hop_s (--hop)")
        check_seconds(self.min_audio_s, "min_audio_s (--min-audio)")
        if not (1 <= self.smooth <= MAX_SMOOTH and int(self.smooth) == self.smooth):  # NaN fails the range
            raise ValueError(f"smooth (--smooth): expected a whole number of windows in [1, {MAX_SMOOTH}], "
                             f"got {self.smooth}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold (--threshold): expected a probability in [0, 1], got {self.threshold}")
        check_seconds(self.fill_gap_s, "fill_gap_s", allow_zero=True)
        if self.decide not in DECIDE_MODES:
            raise ValueError(f"decide (--decide): expected one of {'|'.join(DECIDE_MODES)}, got {self.decide!r}")


def no_window_reason(cfg: StreamConfig, audio_s: float) -> str:
    """Why `audio_s` seconds of audio gave no window under `cfg` (the true reason, issue 26): less audio than
    --min-audio, or a hop so long that no hop boundary (nor half a hop for the closing window) falls in it."""
    if audio_s < cfg.min_audio_s:
        return f"too short for a decision ({audio_s:.2f} s < --min-audio {cfg.min_audio_s:g} s)"
    first = math.ceil(cfg.min_audio_s / cfg.hop_s) * cfg.hop_s
    return (f"no window: --hop {cfg.hop_s:g} s is too long for {audio_s:.2f} s of audio (windows end every hop, "
            f"the first at {first:g} s; the closing one needs half a hop after the last); lower --hop")


@dataclass(frozen=True)
class Window:
    """One model window: absolute sample range at the model's rate, and its padded audio."""

    index: int
    start: int
    end: int
    audio: np.ndarray = field(repr=False)
    padded: bool
    final: bool
    sample_rate: int
    created: float  # time.monotonic() when the window's last sample arrived
    segment: int = 0  # bumped at every gap; smoothing never spans two segments
    # input samples the window covers, and how many of them were at full scale / NaN or inf (quality gate)
    span: int = 0
    clipped: int = 0
    invalid: int = 0

    @property
    def start_s(self) -> float:
        return self.start / self.sample_rate

    @property
    def end_s(self) -> float:
        return self.end / self.sample_rate


@dataclass
class Counters:
    """Running loss accounting of one stream, copied into every decision."""

    overflows: int = 0  # input-overflow flags reported by the audio driver
    lost_samples: int = 0  # captured samples overwritten before the pipeline read them
    gaps: int = 0  # discontinuities (device lost and back, serial frames lost)
    gap_s: float = 0.0
    skipped: int = 0  # windows dropped because inference fell behind

    def as_dict(self) -> dict[str, Any]:
        return {
            "overflows": self.overflows,
            "lost_samples": self.lost_samples,
            "gaps": self.gaps,
            "gap_s": round(self.gap_s, 3),
            "skipped": self.skipped,
        }


class WindowStream:
    """Samples in (any block size, input rate), `Window`s out every hop; identical for any blocking."""

    def __init__(
        self, features: FeatureConfig, cfg: StreamConfig, input_rate: int, clip_level: float = QualityConfig.clip_level
    ) -> None:
        if int(input_rate) <= 0:
            raise ValueError(f"WindowStream: expected a positive input sample rate, got {input_rate}")
        self.features = features
        self.cfg = cfg
        self.input_rate = int(input_rate)
        self.rate = features.sample_rate
        self.window_samples = features.window_samples
        self.hop = seconds_to_samples(cfg.hop_s, self.rate)
        self.min_samples = seconds_to_samples(cfg.min_audio_s, self.rate)
        if self.hop < 1:
            raise ValueError(f"hop_s (--hop): {cfg.hop_s} s is less than one sample at {self.rate} Hz")
        if self.min_samples < features.frame_length:
            raise ValueError(
                f"min_audio_s (--min-audio): expected at least one {features.frame_length_ms} ms frame, "
                f"got {cfg.min_audio_s} s"
            )
        self._ring = RingBuffer(self.window_samples)
        self.clip_level = float(clip_level)
        self._marks: RingBuffer | None = None  # sized per input rate in _start_segment
        self.reset()

    def reset(self) -> None:
        """Forget all audio and counters, as if just created."""
        self._resampler = StreamResampler(self.input_rate, self.rate)
        self._ring.reset()
        self._offset = 0  # absolute index (model rate) of the current segment's first sample
        self._index = 0
        self._segment = 0
        self._finished = False
        self.input_samples = 0
        self._start_segment()

    def _start_segment(self) -> None:
        self._ring.reset()
        # Per input sample: 2 = NaN/inf, 1 = full scale (quality.input_marks); one window plus the
        # resampler's lag and one input chunk, at the input rate, indexed from the segment's start.
        capacity = int(math.ceil(self.features.window_s * self.input_rate)) + self.input_rate
        if self._marks is None or self._marks.capacity != capacity:
            self._marks = RingBuffer(capacity)  # a new one only when the input rate changed
        self._marks.reset()
        self._seg_len = 0
        self._last_end = 0
        self._next_end = -(-self.min_samples // self.hop) * self.hop  # first hop multiple >= min audio

    @property
    def total_samples(self) -> int:
        """Absolute index (model rate) one past the newest sample, gaps included."""
        return self._offset + self._seg_len

    def accept_waveform(self, samples: np.ndarray) -> list[Window]:
        """Feed mono float32 samples at `input_rate`; returns the windows that became complete."""
        samples, marks = accepted_block(self, samples)  # NaN/inf never reach the resampler
        out: list[Window] = []
        chunk = max(1, self.input_rate // 2)  # keeps a window's input samples inside the marks ring
        for pos in range(0, samples.shape[0], chunk):
            self._marks.write(marks[pos : pos + chunk])
            out += self._push(self._resampler.process(samples[pos : pos + chunk]))
        return out

    def finish(self) -> list[Window]:
        """End of input: drain the resampler and cover the tail with a last window if it is worth one."""
        if self._finished:
            return []
        out = self._end_segment()
        self._finished = True
        return out

    def fills(self, gap_input_samples: int, new_input_rate: int | None = None) -> bool:
        """Whether `gap()` would fill this gap with silence (True) or restart the windowing (False)."""
        return new_input_rate is None and 0 < int(gap_input_samples) <= self.cfg.fill_gap_s * self.input_rate

    def gap(self, gap_input_samples: int, new_input_rate: int | None = None) -> list[Window]:
        """A discontinuity in the input: short ones (<= `fill_gap_s`, known length) become silence so the
        windowing carries on (a few lost serial frames); others restart it via `mark_gap`."""
        n = int(gap_input_samples)
        if self.fills(n, new_input_rate):
            out: list[Window] = []
            chunk = np.zeros(min(n, self.input_rate), dtype=np.float32)
            while n > 0:
                out += self.accept_waveform(chunk[: min(n, chunk.shape[0])])
                n -= chunk.shape[0]
            return out
        return self.mark_gap(n, new_input_rate)

    def mark_gap(self, gap_input_samples: int, new_input_rate: int | None = None) -> list[Window]:
        """A discontinuity of `gap_input_samples` (input rate): close the segment, restart windowing after it.

        Absolute indices keep counting through the gap so they stay timestamps. Returns the
        windows that closing the old segment produced.
        """
        out = self._end_segment()
        gap = int(round(max(0, gap_input_samples) * self.rate / self.input_rate))
        self._offset += self._seg_len + gap
        if new_input_rate is not None:
            if int(new_input_rate) <= 0:
                raise ValueError(f"mark_gap: expected a positive input sample rate, got {new_input_rate}")
            self.input_rate = int(new_input_rate)
        self._resampler = StreamResampler(self.input_rate, self.rate)
        self._segment += 1
        self._start_segment()
        return out

    def _end_segment(self) -> list[Window]:
        out = self._push(self._resampler.flush())
        tail = self._seg_len - self._last_end
        if self._seg_len >= self.min_samples and tail >= max(1, self.hop // 2):
            out.append(self._make_window(final=True))
        return out

    def _push(self, y: np.ndarray) -> list[Window]:
        out: list[Window] = []
        pos, n = 0, y.shape[0]
        while pos < n:
            take = min(self._next_end - self._seg_len, n - pos)
            self._ring.write(y[pos : pos + take])
            self._seg_len += take
            pos += take
            if self._seg_len == self._next_end:
                out.append(self._make_window(final=False))
                self._next_end += self.hop
        return out

    def _make_window(self, final: bool) -> Window:
        end = self._seg_len
        have = min(end, self.window_samples)
        audio = self._ring.get(end - have, end)
        padded = have < self.window_samples
        if padded:
            audio = cyclic_pad(audio, self.window_samples)
        self._last_end = end
        first = max(self._marks.start, (end - have) * self.input_rate // self.rate)
        marks = self._marks.get(first, max(first, min(self._marks.end, end * self.input_rate // self.rate)))
        window = Window(
            index=self._index,
            start=self._offset + end - have,
            end=self._offset + end,
            audio=audio,
            padded=padded,
            final=final,
            sample_rate=self.rate,
            created=time.monotonic(),
            segment=self._segment,
            span=marks.shape[0],
            clipped=int(np.count_nonzero(marks == 1.0)),
            invalid=int(np.count_nonzero(marks == 2.0)),
        )
        self._index += 1
        return window


@dataclass(frozen=True)
class Decision:
    """One decision event: what the runtime prints live and writes as a JSON line."""

    window: Window
    probabilities: np.ndarray
    label: str
    p_abnormal: float
    flag: bool
    smoothed_probabilities: np.ndarray
    smoothed_label: str
    smoothed_p_abnormal: float
    smoothed_flag: bool
    smoothed_over: int
    threshold: float
    feature_ms: float
    model_ms: float
    latency_ms: float
    wall_time: float
    labels: tuple[str, ...]
    counters: dict[str, Any]
    source: str | None = None
    quality: Quality | None = None  # None: the gate is off; a failing verdict leaves the class fields NaN

    @property
    def verdict(self) -> str:
        """`ok` when the window was classified, else the quality verdict that replaced the decision."""
        return OK if self.quality is None else self.quality.verdict

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready event (one line of `--jsonl`); a window the gate stopped has nulls for its class fields."""
        w = self.window
        event: dict[str, Any] = {
            "type": "window",
            "index": w.index,
            "start": w.start,
            "end": w.end,
            "sample_rate": w.sample_rate,
            "start_s": round(w.start_s, 4),
            "end_s": round(w.end_s, 4),
            "padded": w.padded,
            "final": w.final,
            "time": round(self.wall_time, 3),
            "probabilities": {n: _rounded(p) for n, p in zip(self.labels, self.probabilities, strict=True)},
            "label": self.label,
            "p_abnormal": _rounded(self.p_abnormal),
            "flag": self.flag,
            "smoothed_label": self.smoothed_label,
            "smoothed_p_abnormal": _rounded(self.smoothed_p_abnormal),
            "smoothed_flag": self.smoothed_flag,
            "smoothed_over": self.smoothed_over,
            "threshold": self.threshold,
            "feature_ms": round(self.feature_ms, 3),
            "model_ms": round(self.model_ms, 3),
            "latency_ms": round(self.latency_ms, 3),
            **self.counters,
        }
        if self.source is not None:
            event["source"] = self.source
        if self.quality is not None:
            event["quality"] = self.quality.verdict
            event["quality_ms"] = round(self.quality.ms, 3)
            if self.quality.stats is not None:
                event["quality_stats"] = self.quality.stats.as_dict()
        return event


def _rounded(value: float) -> float | None:
    """JSON has no NaN: a value the gate left undecided is null."""
    return None if math.isnan(value) else round(float(value), 6)


class Decider:
    """Probabilities -> `Decision`: label, P(abnormal), smoothing over the last N windows, threshold."""

    def __init__(self, labels: tuple[str, ...], abnormal_indices: list[int], cfg: StreamConfig) -> None:
        if not abnormal_indices:
            raise ValueError(f"Decider: the model's labels {labels} name no abnormal class")
        self.labels = tuple(labels)
        self.abnormal = np.asarray(abnormal_indices, dtype=np.int64)
        self.cfg = cfg
        self._recent: deque[np.ndarray] = deque(maxlen=int(cfg.smooth))
        self._segment = 0

    def reset(self) -> None:
        """Forget the smoothing history (new stream)."""
        self._recent.clear()
        self._segment = 0

    def decide(
        self,
        window: Window,
        probabilities: np.ndarray,
        feature_ms: float,
        model_ms: float,
        counters: Counters | None = None,
        source: str | None = None,
        quality: Quality | None = None,
    ) -> Decision:
        """One window's decision. A `quality` verdict other than `ok` replaces it: the label is the
        verdict, the class fields are NaN and the window does not enter the smoothing history."""
        if quality is not None and not quality.ok:
            return self._undecided(window, quality, counters, source)
        probs = np.asarray(probabilities, dtype=np.float32).reshape(-1)
        if probs.shape[0] != len(self.labels):
            raise ValueError(f"Decider: expected {len(self.labels)} probabilities, got {probs.shape[0]}")
        if window.segment != self._segment:  # audio after a gap is not averaged with audio before it
            self._recent.clear()
            self._segment = window.segment
        self._recent.append(probs)
        smoothed = np.mean(np.stack(self._recent), axis=0).astype(np.float32)
        p_abn = float(probs[self.abnormal].sum())
        s_abn = float(smoothed[self.abnormal].sum())
        now = time.monotonic()
        return Decision(
            window=window,
            probabilities=probs,
            label=self.labels[int(np.argmax(probs))],
            p_abnormal=p_abn,
            flag=p_abn >= self.cfg.threshold,
            smoothed_probabilities=smoothed,
            smoothed_label=self.labels[int(np.argmax(smoothed))],
            smoothed_p_abnormal=s_abn,
            smoothed_flag=s_abn >= self.cfg.threshold,
            smoothed_over=len(self._recent),
            threshold=self.cfg.threshold,
            feature_ms=feature_ms,
            model_ms=model_ms,
            latency_ms=1000.0 * (now - window.created),
            wall_time=time.time(),
            labels=self.labels,
            counters=(counters or Counters()).as_dict(),
            source=source,
            quality=quality,
        )

    def _undecided(self, window: Window, quality: Quality, counters: Counters | None, source: str | None) -> Decision:
        nan = np.full(len(self.labels), np.nan, dtype=np.float32)
        return Decision(
            window=window,
            probabilities=nan,
            label=quality.verdict,
            p_abnormal=math.nan,
            flag=False,
            smoothed_probabilities=nan,
            smoothed_label=quality.verdict,
            smoothed_p_abnormal=math.nan,
            smoothed_flag=False,
            smoothed_over=0,
            threshold=self.cfg.threshold,
            feature_ms=0.0,
            model_ms=0.0,
            latency_ms=1000.0 * (time.monotonic() - window.created),
            wall_time=time.time(),
            labels=self.labels,
            counters=(counters or Counters()).as_dict(),
            source=source,
            quality=quality,
        )


def accepted_block(stream: Any, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The checks every stream (`WindowStream`, `BreathStream`) makes on a block it is fed: not after
    `finish()`, mono; counts the input samples and returns `input_marks` (NaN/inf zeroed, full scale marked)."""
    if stream._finished:
        raise RuntimeError(f"{type(stream).__name__}: finish() was called; call reset() before feeding more audio")
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"accept_waveform: expected mono float32[n], got shape {samples.shape}")
    stream.input_samples += samples.shape[0]
    return input_marks(samples, stream.clip_level)


def assess_window(window: Window, cfg: QualityConfig) -> Quality:
    """The quality gate's verdict on a window: its real audio (before cyclic padding) and input-sample marks."""
    real = window.audio[: window.end - window.start]
    return assess(real, window.sample_rate, cfg, window.clipped, window.invalid, window.span)


@dataclass(frozen=True)
class WindowResult:
    """What the worker hands back for one window: the gate's verdict, and probabilities if the model ran."""

    quality: Quality | None
    probabilities: np.ndarray | None
    feature_ms: float = 0.0
    model_ms: float = 0.0


class StreamingClassifier:
    """A shared, stateless model plus the stream settings; creates per-stream state.

    `model` is an `edge_lung.runtime.artifact.model_dir.OnnxClassifier` (anything with `.info` and
    `.probabilities(features)` works) or, with `takes_audio` set, an `edge_lung.runtime.artifact.e2e.E2EClassifier`
    whose `.probabilities(audio)` runs the front end inside its graph.
    """

    def __init__(
        self, model: Any, cfg: StreamConfig | None = None, quality: QualityConfig | None = None, gate: bool = True
    ) -> None:
        self.model = model
        self.cfg = cfg or StreamConfig()
        self.features: FeatureConfig = model.info.features
        self.labels: tuple[str, ...] = tuple(model.info.labels)
        # the gate's thresholds: given, else the model directory's, else the defaults (older models)
        self.quality: QualityConfig = quality or getattr(model.info, "quality", None) or QualityConfig()
        self.gate = bool(gate)  # False (--quality off): only windows with NaN/inf samples are held back
        shift = self.features.frame_shift
        if seconds_to_samples(self.cfg.hop_s, self.features.sample_rate) < shift:
            raise ValueError(
                f"--hop: expected at least the model's frame shift ({shift / self.features.sample_rate:g} s), "
                f"got {self.cfg.hop_s:g}; a shorter hop decides on the same feature frames again and again"
            )

    def create_stream(self, input_rate: int) -> WindowStream:
        return WindowStream(self.features, self.cfg, input_rate, clip_level=self.quality.clip_level)

    def create_decider(self) -> Decider:
        return Decider(self.labels, list(self.model.info.abnormal_indices), self.cfg)

    def infer(self, window: Window) -> tuple[np.ndarray, float, float]:
        """Window -> (probabilities float32[C], feature ms, model ms), through the training feature function."""
        t0 = time.perf_counter()
        if getattr(self.model, "takes_audio", False):  # end-to-end graph: the feature time is inside the model's
            probs = self.model.probabilities(window.audio)[0]
            return probs, 0.0, 1000.0 * (time.perf_counter() - t0)
        feats = window_features(window.audio, self.features)
        t1 = time.perf_counter()
        probs = self.model.probabilities(feats)[0]
        t2 = time.perf_counter()
        return probs, 1000.0 * (t1 - t0), 1000.0 * (t2 - t1)

    def assess(self, window: Window) -> Quality:
        return assess_window(window, self.quality)

    def process(self, window: Window) -> WindowResult:
        """Gate, then features and model only for a window that passes; the worker thread runs this."""
        if not self.gate:
            if window.invalid:  # never classify zeros that stand in for NaN/inf, gate or not
                return WindowResult(assess(window.audio[:0], window.sample_rate, self.quality, invalid=window.invalid),
                                    None)
            return WindowResult(None, *self.infer(window))
        quality = self.assess(window)
        if not quality.ok:
            return WindowResult(quality, None)
        return WindowResult(quality, *self.infer(window))
