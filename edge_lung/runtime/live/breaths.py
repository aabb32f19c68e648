"""Respiratory cycles from continuous audio, online: where each breath starts and ends (issue 28).

Training classifies one annotated cycle at a time, cyclic-padded to the window; the device hears
continuous audio. `BreathStream` finds the cycles itself so the runtime can decide per breath:

1. the breathing envelope: the energy in a low band (`band_low_hz`-`band_high_hz`, where breath
   sounds live and heart sounds mostly do not) of `frame_s` frames, in dB, smoothed over `smooth_s`;
2. the expected cycle length: the strongest peak of the envelope's autocorrelation over the last
   `period_history_s` (re-estimated every second); boundaries stay at least `period_share` of it apart;
3. boundaries: envelope minima that are the lowest point from `period_share` x period before to
   `lookahead_s` after, with the envelope rising at least `depth_db` on both sides, moved by `offset_s`
   (annotators mark the onset of inspiration, a little after the quietest point);
4. a cycle is the stretch between two boundaries, `min_cycle_s` to `max_cycle_s` long, holding at most
   `max_bad_s` of bad frames: digital silence (RMS under `floor_db`), full-scale input (a share of
   `clipped_share` of its input samples or more) or NaN/inf. A longer bad stretch, or a gap in the input,
   is a gap, never a breath (and the quality gate still judges each breath as it judges a window).

A cycle is known `decision_delay_s` (lookahead + half the smoothing + one frame - offset; 0.45 s with the
defaults) after its end boundary.
Every step depends only on absolute frame indices, so any blocking of the input gives the same cycles.
Settings were chosen on the shared ICBHI subset's annotated cycles, grouped by patient
(`benchmarks/bench_breaths.py`). numpy only.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_lung.audio import StreamResampler, cyclic_pad
from edge_lung.config import FeatureConfig
from edge_lung.features import cycle_features
from edge_lung.runtime.artifact.quality import OK, Quality, QualityConfig
from edge_lung.runtime.live.ring import RingBuffer
from edge_lung.runtime.live.stream import (
    Counters,
    StreamingClassifier,
    Window,
    WindowResult,
    _rounded,
    accepted_block,
    assess_window,
)

_EPS = 1e-12


@dataclass(frozen=True)
class BreathConfig:
    """How `BreathStream` finds respiratory cycles (defaults tuned on patient-grouped ICBHI recordings)."""

    band_low_hz: float = 300.0
    band_high_hz: float = 800.0
    frame_s: float = 0.05
    smooth_s: float = 0.8
    lookahead_s: float = 0.6
    min_cycle_s: float = 1.0
    max_cycle_s: float = 8.0
    period_share: float = 0.5
    period_history_s: float = 16.0
    depth_db: float = 0.25
    offset_s: float = 0.6
    floor_db: float = QualityConfig.floor_db
    clipped_share: float = QualityConfig.clipped_share
    # a cycle may hold this much bad audio in all (the subset's AKG recordings clip in short bursts, 7% of
    # their frames); a longer bad stretch (contact lost, silence, clipping) ends it as a gap
    max_bad_s: float = 0.2
    rate_window_s: float = 30.0  # the respiratory rate is over the breaths that ended in the last 30 s

    def __post_init__(self) -> None:
        for name in ("frame_s", "smooth_s", "lookahead_s", "min_cycle_s", "period_history_s", "rate_window_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"BreathConfig.{name}: expected seconds > 0, got {value}")
        if not 0.0 <= self.band_low_hz < self.band_high_hz:
            raise ValueError(f"BreathConfig band: expected 0 <= band_low_hz < band_high_hz, got "
                             f"{self.band_low_hz}, {self.band_high_hz}")
        if not self.min_cycle_s < self.max_cycle_s:
            raise ValueError(f"BreathConfig: expected min_cycle_s < max_cycle_s, got {self.min_cycle_s}, "
                             f"{self.max_cycle_s}")
        if not 0.0 < self.period_share <= 1.0:
            raise ValueError(f"BreathConfig.period_share: expected a share in (0, 1], got {self.period_share}")
        if not (math.isfinite(self.max_bad_s) and self.max_bad_s >= 0):
            raise ValueError(f"BreathConfig.max_bad_s: expected seconds >= 0, got {self.max_bad_s}")
        if not (math.isfinite(self.depth_db) and self.depth_db >= 0):
            raise ValueError(f"BreathConfig.depth_db: expected dB >= 0, got {self.depth_db}")
        if abs(self.offset_s) > self.lookahead_s:
            raise ValueError(f"BreathConfig.offset_s: expected |offset_s| <= lookahead_s ({self.lookahead_s}), "
                             f"got {self.offset_s}")

    @property
    def decision_delay_s(self) -> float:
        """Longest time from a cycle's end to the moment it is known: its end boundary is `offset_s` after the
        envelope minimum, which is confirmed once the smoothed envelope `lookahead_s` after it is complete."""
        return self.lookahead_s + self.smooth_s / 2 + self.frame_s - self.offset_s


class BreathSegmenter:
    """Frame envelope in, cycle frame ranges out: the decision logic of `BreathStream`, on frames only.

    `push(energy_db, bad)` takes one frame's band energy and whether it is unusable; it returns the cycles
    `(start_frame, end_frame)` (half-open, offset applied) confirmed by that frame.
    """

    def __init__(self, cfg: BreathConfig) -> None:
        self.cfg = cfg
        fs = 1.0 / cfg.frame_s
        self.half = max(0, int(round(cfg.smooth_s * fs / 2)))
        self.look = max(1, int(round(cfg.lookahead_s * fs)))
        self.offset = int(round(cfg.offset_s * fs))
        self.min_frames = max(1, int(round(cfg.min_cycle_s * fs)))
        self.max_frames = int(round(cfg.max_cycle_s * fs))
        self.history = int(round(cfg.period_history_s * fs))
        self.every = max(1, int(round(fs)))  # period re-estimated once a second
        self.max_bad = int(round(cfg.max_bad_s * fs))
        self.capacity = max(self.history, self.max_frames) + 2 * (self.half + self.look + abs(self.offset)) + 8
        self._e = np.full(self.capacity, np.nan)
        self._s = np.full(self.capacity, np.nan)
        self._bad = np.zeros(self.capacity, dtype=bool)
        self.reset()

    def reset(self) -> None:
        """Forget the envelope, the period and the open cycle (a gap in the input)."""
        self._e.fill(np.nan)
        self._s.fill(np.nan)
        self._bad.fill(False)
        self.frames = 0  # frames pushed since the reset
        self.period: int | None = None
        self._prev: int | None = None

    def _get(self, ring: np.ndarray, a: int, b: int) -> np.ndarray:
        """Frames [a, b) of a ring (clipped to what exists)."""
        a, b = max(a, 0, self.frames - self.capacity), min(b, self.frames)
        if b <= a:
            return ring[:0]
        idx = np.arange(a, b) % self.capacity
        return ring[idx]

    def push(self, energy_db: float, bad: bool) -> list[tuple[int, int]]:
        """One frame; the cycles it confirms."""
        n = self.frames
        self._e[n % self.capacity] = np.nan if bad else energy_db
        self._bad[n % self.capacity] = bad
        self.frames = n + 1
        c = n - self.half  # its smoothed value is complete now
        if c >= 0:
            part = self._get(self._e, c - self.half, c + self.half + 1)
            self._s[c % self.capacity] = np.nan if np.all(np.isnan(part)) else float(np.nanmean(part))
            if c % self.every == 0:
                self._estimate_period(c)
        return self._check(n - self.half - self.look)

    def _estimate_period(self, c: int) -> None:
        """The envelope's strongest autocorrelation peak between min and max cycle length, if clear."""
        s = self._get(self._s, c - self.history + 1, c + 1)
        good = ~np.isnan(s)
        if s.shape[0] < 2 * self.min_frames or good.mean() < 0.8:
            return
        x = np.where(good, s - np.nanmean(s), 0.0)
        spec = np.fft.rfft(x, 2 * x.shape[0])
        ac = np.fft.irfft(spec * np.conj(spec))[: x.shape[0]]
        if ac[0] <= 0:
            return
        ac = ac / ac[0]
        lo, hi = self.min_frames, min(self.max_frames, x.shape[0] // 2)
        if hi <= lo + 1:
            return
        seg = ac[lo - 1 : hi + 1]
        peaks = np.flatnonzero((seg[1:-1] > seg[:-2]) & (seg[1:-1] >= seg[2:])) + 1
        if peaks.shape[0] == 0:
            return
        best = int(peaks[np.argmax(seg[peaks])])
        if seg[best] > 0.1:
            self.period = lo - 1 + best

    def _check(self, c: int) -> list[tuple[int, int]]:
        """Is frame `c` (whose lookahead is complete) a boundary? Returns the cycle it closes, if any."""
        if c < 0:
            return []
        here = self._s[c % self.capacity]
        if np.isnan(here):
            return []
        sep = self.min_frames if self.period is None else max(self.min_frames,
                                                              int(self.cfg.period_share * self.period))
        before = self._get(self._s, c - sep, c)
        after = self._get(self._s, c + 1, c + self.look + 1)
        if (before.size and np.nanmin(before, initial=np.inf) <= here) or np.nanmin(after, initial=np.inf) < here:
            return []
        rise = self.cfg.depth_db
        if np.nanmax(after, initial=-np.inf) - here < rise or np.nanmax(before, initial=-np.inf) - here < rise:
            return []
        if self._prev is not None and c - self._prev < sep:
            return []
        out: list[tuple[int, int]] = []
        prev, self._prev = self._prev, c
        if prev is not None:
            start, end = prev + self.offset, c + self.offset
            bad = int(self._get(self._bad, start, end).sum())
            if self.min_frames <= end - start <= self.max_frames and bad <= self.max_bad:
                out.append((start, end))
        return out


def band_energy_db(frames: np.ndarray, sample_rate: int, low_hz: float, high_hz: float) -> np.ndarray:
    """float64[F] energy in dB of each row of float32[F, N] between `low_hz` and `high_hz` (Hann window)."""
    n = frames.shape[1]
    spec = np.fft.rfft(frames * np.hanning(n).astype(np.float32), axis=1)
    f = np.fft.rfftfreq(n, 1.0 / sample_rate)
    band = (f >= low_hz) & (f < high_hz)
    power = np.square(np.abs(spec[:, band]), dtype=np.float64).sum(axis=1) / n
    return 10.0 * np.log10(power + _EPS)


class BreathStream:
    """Samples in (any block size, input rate), one `Window` per detected respiratory cycle out.

    A breath's `Window` holds the cycle's own audio at the model's rate (unpadded; `classify_breath` pads it
    as training pads a cycle), its absolute sample range, and the input samples it covers that were at full
    scale or NaN/inf, so the quality gate judges it as it judges a window. Same interface as `WindowStream`
    for the live runner: `accept_waveform`, `finish`, `gap`, `fills`, `mark_gap`, `total_samples`.
    """

    def __init__(self, features: FeatureConfig, cfg: BreathConfig, input_rate: int, fill_gap_s: float = 0.5,
                 clip_level: float = QualityConfig.clip_level) -> None:
        if int(input_rate) <= 0:
            raise ValueError(f"BreathStream: expected a positive input sample rate, got {input_rate}")
        self.features, self.cfg = features, cfg
        self.rate = features.sample_rate
        self.input_rate = int(input_rate)
        self.fill_gap_s = fill_gap_s
        self.clip_level = float(clip_level)
        self.frame = max(1, int(round(cfg.frame_s * self.rate)))
        self.segmenter = BreathSegmenter(cfg)
        keep = cfg.max_cycle_s + cfg.decision_delay_s + abs(cfg.offset_s) + 1.0
        self._ring = RingBuffer(int(math.ceil(keep * self.rate)))
        # per frame: clipped, invalid and all input samples; twice the segmenter's reach, cleared as it passes
        self._mcap = 2 * self.segmenter.capacity
        self._marks = np.zeros((self._mcap, 3), dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        """Forget all audio, as if just created."""
        self._offset = 0
        self._segment = 0
        self._index = 0
        self._finished = False
        self.input_samples = 0
        self._start_segment()

    def _start_segment(self) -> None:
        self._resampler = StreamResampler(self.input_rate, self.rate)
        self.segmenter.reset()
        self._ring.reset()
        self._marks.fill(0)
        self._seg_len = 0  # model-rate samples in this segment
        self._seg_input = 0  # input samples in this segment
        self._pending = np.zeros(0, dtype=np.float32)  # model-rate samples short of a whole frame

    @property
    def total_samples(self) -> int:
        """Absolute index (model rate) one past the newest sample, gaps included."""
        return self._offset + self._seg_len

    def accept_waveform(self, samples: np.ndarray) -> list[Window]:
        """Feed mono float32 samples at `input_rate`; returns the breaths that became known."""
        samples, marks = accepted_block(self, samples)
        out: list[Window] = []
        chunk = max(1, self.input_rate // 2)  # half a second at a time: a breath is still in the ring when known
        for pos in range(0, samples.shape[0], chunk):
            self._add_marks(marks[pos : pos + chunk])
            out += self._push(self._resampler.process(samples[pos : pos + chunk]))
        return out

    def _add_marks(self, marks: np.ndarray) -> None:
        """Count each input sample (and those at full scale / NaN) against the model-rate frame it falls in."""
        n = marks.shape[0]
        if n == 0:
            return
        idx = np.arange(self._seg_input, self._seg_input + n, dtype=np.int64)
        frames = (idx * self.rate // self.input_rate) // self.frame
        self._seg_input += n
        cap = self._mcap
        for col, sel in ((0, marks == 1.0), (1, marks == 2.0), (2, slice(None))):
            f = frames[sel]
            if f.size:
                np.add.at(self._marks[:, col], f % cap, 1)

    def _push(self, y: np.ndarray) -> list[Window]:
        self._ring.write(y)
        self._seg_len += y.shape[0]
        data = np.concatenate([self._pending, y]) if self._pending.size else y
        whole = data.shape[0] // self.frame
        self._pending = data[whole * self.frame :].copy()
        if whole == 0:
            return []
        frames = data[: whole * self.frame].reshape(whole, self.frame)
        energy = band_energy_db(frames, self.rate, self.cfg.band_low_hz, self.cfg.band_high_hz)
        rms = 10.0 * np.log10(np.mean(np.square(frames, dtype=np.float64), axis=1) + _EPS)
        out: list[Window] = []
        for k in range(whole):
            f = self.segmenter.frames
            row = self._marks[f % self._mcap]
            span = max(1, int(row[2]))
            bad = bool(rms[k] < self.cfg.floor_db or row[1] > 0 or row[0] / span >= self.cfg.clipped_share)
            for start, end in self.segmenter.push(float(energy[k]), bad):
                out.append(self._breath(start, end))
            self._marks[(f - self.segmenter.capacity) % self._mcap] = 0  # a frame no breath can reach any more
        return out

    def _breath(self, start_frame: int, end_frame: int) -> Window:
        a, b = start_frame * self.frame, end_frame * self.frame
        audio = self._ring.get(max(a, self._ring.start), min(b, self._ring.end))
        marks = self._marks[np.arange(start_frame, end_frame) % self._mcap].sum(axis=0)
        window = Window(
            index=self._index, start=self._offset + a, end=self._offset + a + audio.shape[0], audio=audio,
            padded=audio.shape[0] < self.features.window_samples, final=False, sample_rate=self.rate,
            created=time.monotonic(), segment=self._segment, span=int(marks[2]), clipped=int(marks[0]),
            invalid=int(marks[1]),
        )
        self._index += 1
        return window

    def finish(self) -> list[Window]:
        """End of input: a cycle still open has no end boundary, so it is not a breath; nothing more comes."""
        if self._finished:
            return []
        out = self._push(self._resampler.flush())
        self._finished = True
        return out

    def fills(self, gap_input_samples: int, new_input_rate: int | None = None) -> bool:
        """Whether `gap()` fills this gap with silence (which the segmenter treats as a gap anyway)."""
        return new_input_rate is None and 0 < int(gap_input_samples) <= self.fill_gap_s * self.input_rate

    def gap(self, gap_input_samples: int, new_input_rate: int | None = None) -> list[Window]:
        """A discontinuity: a short one becomes silence (no breath spans it), a long one restarts the segmenter."""
        n = int(gap_input_samples)
        if self.fills(n, new_input_rate):
            return self.accept_waveform(np.zeros(n, dtype=np.float32))
        return self.mark_gap(n, new_input_rate)

    def mark_gap(self, gap_input_samples: int, new_input_rate: int | None = None) -> list[Window]:
        """Restart the segmenter after `gap_input_samples` missing input samples; absolute indices keep counting."""
        out = self._push(self._resampler.flush())
        gap = int(round(max(0, gap_input_samples) * self.rate / self.input_rate))
        self._offset += self._seg_len + gap
        if new_input_rate is not None:
            if int(new_input_rate) <= 0:
                raise ValueError(f"mark_gap: expected a positive input sample rate, got {new_input_rate}")
            self.input_rate = int(new_input_rate)
        self._segment += 1
        self._start_segment()
        return out


def classify_breath(engine: StreamingClassifier, window: Window) -> WindowResult:
    """Gate, then the model on one breath padded exactly as training pads an annotated cycle.

    The numpy front end gets `features.cycle_features` of the cycle, an end-to-end graph the cycle
    cyclic-padded to the window. With the gate off only a breath holding NaN/inf samples is held back.
    """
    quality = assess_window(window, engine.quality) if engine.gate or window.invalid else None
    if quality is not None and not quality.ok:
        return WindowResult(quality, None)
    t0 = time.perf_counter()
    cfg = engine.features
    if getattr(engine.model, "takes_audio", False):
        probs = engine.model.probabilities(cyclic_pad(window.audio, cfg.window_samples))[0]
        return WindowResult(quality, probs, 0.0, 1000.0 * (time.perf_counter() - t0))
    feats = cycle_features(window.audio, cfg)
    t1 = time.perf_counter()
    probs = engine.model.probabilities(feats)[0]
    return WindowResult(quality, probs, 1000.0 * (t1 - t0), 1000.0 * (time.perf_counter() - t1))


def segment_audio(audio: np.ndarray, sample_rate: int, cfg: BreathConfig | None = None) -> list[tuple[float, float]]:
    """Offline helper: the cycles (start_s, end_s) `BreathStream` finds in a whole recording at `sample_rate`."""
    features = FeatureConfig(sample_rate=sample_rate)
    stream = BreathStream(features, cfg or BreathConfig(), sample_rate)
    windows = stream.accept_waveform(audio) + stream.finish()
    return [(w.start_s, w.end_s) for w in windows]


def cycle_iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Intersection over union of two time spans."""
    inter = min(a[1], b[1]) - max(a[0], b[0])
    if inter <= 0:
        return 0.0
    return inter / (max(a[1], b[1]) - min(a[0], b[0]))


def match_cycles(detected: list[tuple[float, float]], annotated: list[tuple[float, float]],
                 min_iou: float = 0.5) -> list[tuple[int, int]]:
    """(detected index, annotated index) pairs: each detected breath matches the annotated cycle it overlaps
    most when their IoU is at least `min_iou` (at 0.5 no cycle can take two breaths)."""
    pairs = []
    for i, d in enumerate(detected):
        ious = [cycle_iou(d, a) for a in annotated]
        if ious and max(ious) >= min_iou:
            pairs.append((i, int(np.argmax(ious))))
    return pairs


def breaths_per_minute(durations_s: list[float]) -> float | None:
    """Respiratory rate from cycle durations: 60 / their mean (gaps between breaths do not count)."""
    return 60.0 * len(durations_s) / float(np.sum(durations_s)) if durations_s else None


@dataclass(frozen=True)
class BreathDecision:
    """One breath's decision: what the runtime prints live and writes as a `"type": "breath"` JSON line.

    `rate_bpm` is the respiratory rate over the breaths that ended in the last `BreathConfig.rate_window_s`
    (60 / their mean length, so a gap lowers no rate). A breath the quality gate stopped has NaN class fields
    and its verdict as label, as a window's decision does.
    """

    window: Window
    probabilities: np.ndarray
    label: str
    p_abnormal: float
    flag: bool
    rate_bpm: float | None
    threshold: float
    feature_ms: float
    model_ms: float
    latency_ms: float
    wall_time: float
    labels: tuple[str, ...]
    counters: dict[str, Any]
    source: str | None = None
    quality: Quality | None = None
    kind: str = "breath"

    @property
    def verdict(self) -> str:
        """`ok` when the breath was classified, else the quality verdict that replaced the decision."""
        return OK if self.quality is None else self.quality.verdict

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready event: type, source, index, start_s, end_s, label, probabilities, quality, and more."""
        w = self.window
        return {
            "type": "breath",
            "source": self.source,
            "index": w.index,
            "start_s": round(w.start_s, 4),
            "end_s": round(w.end_s, 4),
            "label": self.label,
            "probabilities": {n: _rounded(p) for n, p in zip(self.labels, self.probabilities, strict=True)},
            "quality": None if self.quality is None else self.quality.verdict,
            "p_abnormal": _rounded(self.p_abnormal),
            "flag": self.flag,
            "threshold": self.threshold,
            "rate_bpm": None if self.rate_bpm is None else round(self.rate_bpm, 2),
            "start": w.start,
            "end": w.end,
            "sample_rate": w.sample_rate,
            "time": round(self.wall_time, 3),
            "feature_ms": round(self.feature_ms, 3),
            "model_ms": round(self.model_ms, 3),
            "latency_ms": round(self.latency_ms, 3),
            **self.counters,
        }


class BreathDecider:
    """Probabilities of one breath -> `BreathDecision`, with the respiratory rate over the last 30 s."""

    def __init__(self, labels: tuple[str, ...], abnormal_indices: list[int], threshold: float,
                 cfg: BreathConfig) -> None:
        if not abnormal_indices:
            raise ValueError(f"BreathDecider: the model's labels {labels} name no abnormal class")
        self.labels = tuple(labels)
        self.abnormal = np.asarray(abnormal_indices, dtype=np.int64)
        self.threshold, self.cfg = threshold, cfg
        self._recent: deque[tuple[float, float]] = deque()  # (end_s, length_s) of recent breaths

    def reset(self) -> None:
        """Forget the recent breaths (new stream)."""
        self._recent.clear()

    def rate(self, window: Window) -> float | None:
        """Breaths per minute over the breaths that ended in the last `rate_window_s`, this one included."""
        self._recent.append((window.end_s, window.end_s - window.start_s))
        while self._recent and self._recent[0][0] <= window.end_s - self.cfg.rate_window_s:
            self._recent.popleft()
        return breaths_per_minute([length for _, length in self._recent])

    def decide(self, window: Window, result: WindowResult, counters: Counters | None = None,
               source: str | None = None) -> BreathDecision:
        """The decision on one breath (undecided, NaN class fields, when the gate stopped it)."""
        rate = self.rate(window)
        nan = np.full(len(self.labels), np.nan, dtype=np.float32)
        decided = result.probabilities is not None
        probs = np.asarray(result.probabilities, dtype=np.float32).reshape(-1) if decided else nan
        if decided and probs.shape[0] != len(self.labels):
            raise ValueError(f"BreathDecider: expected {len(self.labels)} probabilities, got {probs.shape[0]}")
        p_abn = float(probs[self.abnormal].sum()) if decided else math.nan
        return BreathDecision(
            window=window, probabilities=probs,
            label=self.labels[int(np.argmax(probs))] if decided else result.quality.verdict,
            p_abnormal=p_abn, flag=decided and p_abn >= self.threshold, rate_bpm=rate, threshold=self.threshold,
            feature_ms=result.feature_ms, model_ms=result.model_ms,
            latency_ms=1000.0 * (time.monotonic() - window.created), wall_time=time.time(), labels=self.labels,
            counters=(counters or Counters()).as_dict(), source=source, quality=result.quality,
        )
