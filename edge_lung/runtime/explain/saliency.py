"""Occlusion saliency: where in a window's time x frequency plane the model's decision came from.

Each patch of the normalised log-mel window (a block of frames x mel bins) is replaced by the
window's steady background (the per-bin median over time, so a transient crackle or a wheeze
disappears while the breath noise stays) and the drop of the decided class's probability is
measured. It needs only `probabilities(features)`, so it works for any exported model (AST or
CNN, FP32 or INT8) on the device; the masked copies are run in batches. Gradient methods
would be cheaper per window but need the training stack, which the device side never loads.

`saliency_hits` checks a map against where abnormal sound really is (the synthetic
database's drawn events, `edge_lung.data.synth.read_events`), so an explanation can fail.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edge_lung.config import FeatureConfig
from edge_lung.data.synth import read_events
from edge_lung.features import window_features
from edge_lung.runtime.offline.classify import classify_file


@dataclass(frozen=True)
class OcclusionConfig:
    """Patch size in frames (10 ms each by default) and mel bins, and how many masked copies per model call."""

    patch_frames: int = 50
    patch_bins: int = 16
    batch: int = 32

    def __post_init__(self) -> None:
        for name in ("patch_frames", "patch_bins", "batch"):
            value = getattr(self, name)
            # the range first: NaN fails it, and a number past int64 never reaches numpy (issue 26)
            if not 1 <= value <= 100_000 or int(value) != value:
                raise ValueError(f"OcclusionConfig.{name} (--{name.replace('_', '-')}): expected a whole number in "
                                 f"[1, 100000], got {value}")


@dataclass(frozen=True)
class WindowSaliency:
    """The occlusion map of one window. `drop[i, j]`: probability lost when time patch i x mel patch j is masked."""

    window_index: int
    start_s: float  # the window's audio span in the recording (shorter than the window while it is padded)
    end_s: float
    padded: bool
    target: tuple[int, ...]  # classes whose summed probability is explained
    base: float  # their probability on the unmasked window
    drop: np.ndarray
    frame_edges: np.ndarray  # int[nt + 1], frames of the window
    bin_edges: np.ndarray  # int[nf + 1], mel bins
    evaluations: int
    seconds: float

    @property
    def peak(self) -> tuple[int, int]:
        """(time patch, mel patch) of the largest drop."""
        i, j = np.unravel_index(int(np.argmax(self.drop)), self.drop.shape)
        return int(i), int(j)

    def peak_time_s(self, features: FeatureConfig) -> tuple[float, float]:
        """Seconds in the recording that the peak patch covers. A padded window repeats its audio, so
        its window time is folded back onto the audio it was tiled from."""
        i, _ = self.peak
        a = self.frame_edges[i] * features.frame_shift_ms / 1000
        b = ((self.frame_edges[i + 1] - 1) * features.frame_shift_ms + features.frame_length_ms) / 1000
        span = self.end_s - self.start_s
        if self.padded and span > 0:
            centre = ((a + b) / 2) % span
            a, b = centre - (b - a) / 2, centre + (b - a) / 2
        return self.start_s + a, self.start_s + b

    def peak_band_hz(self, features: FeatureConfig) -> tuple[float, float]:
        """The frequencies (Hz) the peak patch's mel filters cover."""
        _, j = self.peak
        return mel_bins_to_hz(int(self.bin_edges[j]), int(self.bin_edges[j + 1]), features)


def mel_bins_to_hz(first: int, stop: int, features: FeatureConfig) -> tuple[float, float]:
    """Frequency range (Hz) covered by the triangular filters of mel bins [first, stop), as `log_mel` builds them."""
    def mel(f: float) -> float:
        return 1127.0 * float(np.log(1.0 + f / 700.0))

    lo, hi = mel(features.low_freq_hz), mel(features.high_hz)
    delta = (hi - lo) / (features.num_mel_bins + 1)
    return tuple(700.0 * (np.exp((lo + k * delta) / 1127.0) - 1.0) for k in (first, stop + 1))  # type: ignore[return-value]


def occlusion_map(
    probabilities: Callable[[np.ndarray], np.ndarray],
    features: np.ndarray,
    target: Sequence[int],
    cfg: OcclusionConfig = OcclusionConfig(),
) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """float32[T, M] window -> (drop float32[nt, nf], base probability, frame edges, bin edges).

    `probabilities` maps float32[B, T, M] to float32[B, C] (e.g. `OnnxClassifier.probabilities`);
    the probabilities of the classes in `target` are summed.
    """
    feats = np.asarray(features, dtype=np.float32)
    if feats.ndim != 2:
        raise ValueError(f"occlusion_map: expected one window float32[T, M], got shape {feats.shape}")
    idx = np.asarray(list(target), dtype=np.int64)
    fill = np.median(feats, axis=0)
    t_edges = np.append(np.arange(0, feats.shape[0], cfg.patch_frames), feats.shape[0])
    f_edges = np.append(np.arange(0, feats.shape[1], cfg.patch_bins), feats.shape[1])
    patches = [(i, j) for i in range(len(t_edges) - 1) for j in range(len(f_edges) - 1)]
    base = float(probabilities(feats[None])[0][idx].sum())
    drop = np.empty(len(patches), dtype=np.float32)
    for a in range(0, len(patches), cfg.batch):
        chunk = patches[a : a + cfg.batch]
        x = np.repeat(feats[None], len(chunk), axis=0)
        for k, (i, j) in enumerate(chunk):
            f0, f1 = f_edges[j], f_edges[j + 1]
            x[k, t_edges[i] : t_edges[i + 1], f0:f1] = fill[f0:f1]
        drop[a : a + len(chunk)] = base - probabilities(x)[:, idx].sum(axis=1)
    return drop.reshape(len(t_edges) - 1, len(f_edges) - 1), base, t_edges, f_edges


def decided_classes(probabilities: np.ndarray, abnormal: Sequence[int]) -> tuple[int, ...]:
    """The class a flagged window was decided as: its most likely abnormal class when that is also the most likely
    class, else (the flag came from the abnormal classes together) all abnormal classes."""
    best = int(np.argmax(probabilities))
    return (best,) if best in abnormal else tuple(int(a) for a in abnormal)


def window_saliency(
    probabilities: Callable[[np.ndarray], np.ndarray],
    window,
    window_features: np.ndarray,
    target: Sequence[int],
    cfg: OcclusionConfig = OcclusionConfig(),
) -> WindowSaliency:
    """`occlusion_map` of one runtime `Window` (its features given), timed."""
    t0 = time.perf_counter()
    drop, base, t_edges, f_edges = occlusion_map(probabilities, window_features, target, cfg)
    seconds = time.perf_counter() - t0
    return WindowSaliency(
        window.index, window.start_s, window.end_s, window.padded, tuple(target), base, drop, t_edges, f_edges,
        evaluations=drop.size + 1, seconds=seconds,
    )


def saliency_hits(saliency: WindowSaliency, events: Sequence, features: FeatureConfig) -> bool:
    """Whether the peak patch overlaps a drawn event (`DrawnEvent`-like: start_s, end_s, low_hz, high_hz) in
    both time and frequency."""
    a, b = saliency.peak_time_s(features)
    lo, hi = saliency.peak_band_hz(features)
    return any(e.start_s < b and a < e.end_s and e.low_hz < hi and lo < e.high_hz for e in events)


def events_in(events: Sequence, start_s: float, end_s: float) -> list:
    """The events that overlap [start_s, end_s)."""
    return [e for e in events if e.start_s < end_s and start_s < e.end_s]


@dataclass(frozen=True)
class SaliencyCheck:
    """How often the saliency peak of a correctly flagged window falls inside a drawn event."""

    hits: int
    windows: int  # flagged windows whose audio holds at least one drawn event
    seconds_per_window: float

    @property
    def rate(self) -> float:
        return self.hits / self.windows if self.windows else 0.0

    def passes(self, aim: float = 0.8, min_windows: int = 10) -> bool:
        """The acceptance check: at least `min_windows` windows explained and a hit rate >= `aim`."""
        return self.windows >= min_windows and self.rate >= aim


def check_saliency(
    classifier,
    paths: Sequence,
    cfg: OcclusionConfig = OcclusionConfig(),
    on_file: Callable[[str, int, int], None] | None = None,
) -> SaliencyCheck:
    """`saliency_hits` over the correctly flagged windows of synthetic recordings (each with its drawn events
    sidecar), through the runtime's own windows (`classify_file`). `classifier`: a `StreamingClassifier`."""

    abnormal = list(classifier.model.info.abnormal_indices)
    hits = windows = 0
    seconds = 0.0
    for path in paths:
        events = read_events(path)
        if events is None:
            raise ValueError(f"{path}: no drawn-events sidecar; expected a recording from `edge-lung data synth`")
        for d in classify_file(classifier, path, keep_decisions=True).decisions:
            inside = events_in(events, d.window.start_s, d.window.end_s)
            if not (d.flag and inside):
                continue
            feats = window_features(d.window.audio, classifier.features)
            sal = window_saliency(classifier.model.probabilities, d.window, feats,
                                  decided_classes(d.probabilities, abnormal), cfg)
            hits += saliency_hits(sal, inside, classifier.features)
            windows += 1
            seconds += sal.seconds
        if on_file is not None:
            on_file(str(path), hits, windows)
    return SaliencyCheck(hits, windows, seconds / windows if windows else 0.0)
