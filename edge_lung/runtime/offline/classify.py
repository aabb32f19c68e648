"""`edge-lung classify`: the streaming windowing applied to files, as fast as the CPU allows.

A file is decoded at its own rate and fed to the same `WindowStream` the live path uses, in
blocks, so `classify` and `stream --replay` give identical windows. When ICBHI annotations
(`<stem>.txt`: start, end, crackle, wheeze per line) sit beside a recording, each annotated
cycle is matched with the windows that overlap it and the report says how they line up.
With `--decide breath` the decisions are per detected breath (runtime.live.breaths); on an annotated
recording each detected breath is matched to the annotated cycle it overlaps most (IoU >= 0.5), the
ICBHI Score is taken on the matched cycles, and window mode runs beside it for its figure.
Each decision is folded into running figures as it is made (nothing per window is kept), so
memory does not grow with the recording; one unreadable file is one error row, not a lost batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_lung.audio import UNKNOWN_LENGTH, AudioError, AudioInfo, audio_info, read_blocks
from edge_lung.config import LABELS
from edge_lung.data.icbhi import CycleSpec, parse_annotation
from edge_lung.metrics import score_predictions, screening_curve
from edge_lung.runtime.artifact.quality import nonfinite_runs
from edge_lung.runtime.live.breaths import BreathDecision, breaths_per_minute, match_cycles
from edge_lung.runtime.live.classifier import Classifier
from edge_lung.runtime.live.stream import Decision, StreamConfig, StreamingClassifier, no_window_reason


@dataclass(frozen=True)
class CycleMatch:
    """One annotated cycle and the decision of the windows overlapping it (overlap-weighted mean)."""

    cycle: CycleSpec
    windows: int
    predicted: int | None  # None: no window overlaps the cycle
    p_abnormal: float | None
    flag: bool | None


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during `classify`: `results` holds every finished file and, last, the cut one (status
    "interrupted"), so the caller can still report them."""

    def __init__(self, results: list[FileResult]) -> None:
        super().__init__(f"interrupted after {len(results)} file(s)")
        self.results = results


@dataclass
class FileResult:
    """One recording's figures, folded in window by window (nothing per window is kept unless asked).

    `status`: "ok"; "damaged" (decided up to where the file stops decoding or ends short of its
    header); "error" (nothing readable); "interrupted" (Ctrl-C while it was being decided).
    """

    path: Path
    input_rate: int
    duration_s: float
    windows: int = 0
    decided: int = 0  # windows that passed the quality gate and got a class decision
    flagged: int = 0
    max_p_abnormal: float | None = None  # over the decided windows
    verdicts: dict[str, int] = field(default_factory=dict)  # windows per quality verdict (`ok` = classified)
    decisions: list[Decision] = field(default_factory=list)  # only with classify_file(keep_decisions=True)
    cycles: list[CycleMatch] | None = None
    note: str = ""
    status: str = "ok"
    decide: str = "window"  # "breath": `windows` counts detected breaths
    breaths: BreathMatch | None = None  # breath mode on an annotated recording

    def add(self, decision: Decision | BreathDecision) -> None:
        self.windows += 1
        self.verdicts[decision.verdict] = self.verdicts.get(decision.verdict, 0) + 1
        if decision.verdict != "ok":
            return
        self.decided += 1
        self.flagged += int(decision.flag)
        if self.max_p_abnormal is None or decision.p_abnormal > self.max_p_abnormal:
            self.max_p_abnormal = decision.p_abnormal

    def summary(self, labels: tuple[str, ...]) -> dict[str, Any]:
        """Per-recording figures for the report (and for JSON)."""
        out: dict[str, Any] = {
            "file": str(self.path),
            "status": self.status,
            "input_rate": self.input_rate,
            "duration_s": round(self.duration_s, 3),
            "windows": self.windows,
            "flagged_windows": self.flagged,
            "max_p_abnormal": self.max_p_abnormal,
            "verdicts": self.verdicts,
            "note": self.note,
        }
        if self.cycles is not None:
            out.update(cycle_agreement(self.cycles, labels))
        if self.decide != "window":
            out["decide"] = self.decide
        if self.breaths is not None:
            out["breaths"] = breath_agreement([self.breaths], labels)
        return out


def annotation_for(audio_path: str | Path) -> Path | None:
    """The ICBHI annotation file beside a recording (same stem, `.txt`), if there is one."""
    txt = Path(audio_path).with_suffix(".txt")
    return txt if txt.is_file() else None


class CycleAccumulator:
    """Each annotated cycle's overlap-weighted mean probabilities, folded in one decision at a time."""

    def __init__(self, cycles: list[CycleSpec], abnormal: list[int], threshold: float) -> None:
        self.cycles, self.abnormal, self.threshold = list(cycles), list(abnormal), threshold
        self._sums: list[np.ndarray | None] = [None] * len(self.cycles)
        self._weights = [0.0] * len(self.cycles)
        self._counts = [0] * len(self.cycles)

    def add(self, decision: Decision) -> None:
        if decision.verdict != "ok":  # the quality gate stopped it: no probabilities
            return
        w = decision.window
        for i, cycle in enumerate(self.cycles):
            overlap = min(cycle.end_s, w.end_s) - max(cycle.start_s, w.start_s)
            if overlap > 0:
                part = overlap * decision.probabilities.astype(np.float64)
                self._sums[i] = part if self._sums[i] is None else self._sums[i] + part
                self._weights[i] += overlap
                self._counts[i] += 1

    def matches(self) -> list[CycleMatch]:
        out = []
        for cycle, total, weight, count in zip(self.cycles, self._sums, self._weights, self._counts, strict=True):
            if total is None:
                out.append(CycleMatch(cycle, 0, None, None, None))
                continue
            mean = total / weight
            p_abn = float(mean[self.abnormal].sum())
            out.append(CycleMatch(cycle, count, int(np.argmax(mean)), p_abn, p_abn >= self.threshold))
        return out


def align_cycles(decisions: list[Decision], cycles: list[CycleSpec], abnormal: list[int]) -> list[CycleMatch]:
    """Match each annotated cycle with the windows that overlap it, weighting by overlap length.

    Windows the quality gate stopped have no probabilities and are left out."""
    acc = CycleAccumulator(cycles, abnormal, decisions[0].threshold if decisions else 0.5)
    for d in decisions:
        acc.add(d)
    return acc.matches()


def cycle_agreement(matches: list[CycleMatch], labels: tuple[str, ...]) -> dict[str, Any]:
    """How window decisions line up with the annotated cycles of one or more recordings."""
    covered = [m for m in matches if m.predicted is not None]
    out: dict[str, Any] = {"cycles": len(matches), "cycles_covered": len(covered)}
    if not covered:
        return out
    truth = np.array([m.cycle.label for m in covered])
    flags = np.array([bool(m.flag) for m in covered])
    abnormal = truth > 0
    n_abn, n_norm = int(abnormal.sum()), int((~abnormal).sum())  # None: no cycle of that kind to score
    out["screening_sensitivity"] = 100.0 * float((flags & abnormal).sum()) / n_abn if n_abn else None
    out["screening_specificity"] = 100.0 * float((~flags & ~abnormal).sum()) / n_norm if n_norm else None
    out["abnormal_cycles"] = int(abnormal.sum())
    if tuple(labels) == LABELS:
        scores = score_predictions(truth, np.array([m.predicted for m in covered]))
        out["class_agreement"] = scores["accuracy"]
        out["icbhi_score"] = scores["score"]
    out["screening_curve"] = screening_curve(truth, np.array([m.p_abnormal for m in covered]))
    return out


@dataclass
class BreathTally:
    """The detected breaths of one recording, folded in one decision at a time (spans and classes, no audio)."""

    spans: list[tuple[float, float]] = field(default_factory=list)
    predicted: list[int | None] = field(default_factory=list)  # None: the quality gate stopped the breath
    p_abnormal: list[float | None] = field(default_factory=list)
    flags: list[bool] = field(default_factory=list)

    def add(self, decision: BreathDecision) -> None:
        self.spans.append((decision.window.start_s, decision.window.end_s))
        ok = decision.verdict == "ok"
        self.predicted.append(int(np.argmax(decision.probabilities)) if ok else None)
        self.p_abnormal.append(decision.p_abnormal if ok else None)
        self.flags.append(bool(decision.flag))

    def match(self, cycles: list[CycleSpec]) -> BreathMatch:
        """Each detected breath matched to the annotated cycle it overlaps most (IoU >= 0.5)."""
        annotated = [(c.start_s, c.end_s) for c in cycles]
        if not annotated:
            return BreathMatch(0, 0, [], None, None)  # nothing annotated: nothing to match
        lo, hi = annotated[0][0], annotated[-1][1]
        inside = [i for i, (a, b) in enumerate(self.spans) if min(b, hi) - max(a, lo) >= 0.5 * (b - a)]
        pairs = match_cycles([self.spans[i] for i in inside], annotated)
        matched = [(cycles[j].label, self.predicted[inside[i]], self.p_abnormal[inside[i]], self.flags[inside[i]])
                   for i, j in pairs]
        return BreathMatch(len(inside), len(annotated), matched,
                           breaths_per_minute([b - a for a, b in self.spans]),
                           breaths_per_minute([b - a for a, b in annotated]), [j for _, j in pairs])


@dataclass(frozen=True)
class BreathMatch:
    """Breath mode on one annotated recording: detected breaths inside the annotated stretch (annotators leave
    a recording's ends unmarked), annotated cycles, and per matched cycle (true class, predicted class or None,
    P(abnormal) or None, flag); the respiratory rate detected and annotated (60 / mean cycle length)."""

    detected: int
    annotated: int
    matched: list[tuple[int, int | None, float | None, bool]]
    rate_bpm: float | None
    annotated_rate_bpm: float | None
    cycle_indices: list[int] = field(default_factory=list)  # the annotated cycle of each `matched` entry


def breath_agreement(matches: list[BreathMatch], labels: tuple[str, ...]) -> dict[str, Any]:
    """How detected breaths line up with annotated cycles (IoU >= 0.5), and the Score on the matched cycles."""
    det = sum(m.detected for m in matches)
    ann = sum(m.annotated for m in matches)
    pairs = [p for m in matches for p in m.matched]
    precision = 100.0 * len(pairs) / det if det else None
    recall = 100.0 * len(pairs) / ann if ann else None
    out: dict[str, Any] = {
        "detected": det, "annotated": ann, "matched": len(pairs), "precision": precision, "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision and recall else None,
    }
    errors = [abs(m.rate_bpm - m.annotated_rate_bpm) for m in matches
              if m.rate_bpm is not None and m.annotated_rate_bpm is not None]
    out["rate_mae_bpm"] = float(np.mean(errors)) if errors else None
    decided = [p for p in pairs if p[1] is not None]
    out["matched_decided"] = len(decided)
    if decided and tuple(labels) == LABELS:
        scores = score_predictions(np.array([p[0] for p in decided]), np.array([p[1] for p in decided]))
        out["class_agreement"] = scores["accuracy"]
        out["icbhi_score"] = scores["score"]
    return out


def classify_file(
    classifier: StreamingClassifier,
    path: str | Path,
    block_s: float = 1.0,
    on_decision: Callable[[Decision], None] | None = None,
    keep_decisions: bool = False,
) -> FileResult:
    """Run the streaming windowing over one file (no pacing) and decide every window.

    The file is decoded block by block and each decision is folded into the result and the annotated
    cycles it overlaps, so memory does not grow with the recording (a 30-minute file kept 1 GB of
    windows, issue 10); `keep_decisions=True` keeps every `Decision` (each holds its window's audio).
    A file damaged part-way is decided as far as it decodes (status "damaged"). `AudioError` if
    nothing is readable; Ctrl-C raises `Interrupted` with the partial result.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: file not found")
    info = audio_info(path)
    if info.frames == 0:
        raise AudioError(f"{path}: empty audio (0 samples)")
    result = FileResult(path, info.sample_rate, 0.0)
    txt = annotation_for(path)
    cycles, problems = parse_annotation(txt) if txt is not None else ([], [])
    acc = CycleAccumulator(cycles, list(classifier.model.info.abnormal_indices), classifier.cfg.threshold)
    clf = Classifier.around(classifier, source=str(path))
    stream = clf.start(info.sample_rate)
    result.decide = clf.mode
    tally = BreathTally()
    # breath mode on an annotated recording: window mode runs beside it, for its figure on the same cycles
    beside = Classifier.around(classifier, str(path), decide="window") if clf.mode == "breath" and txt else None

    def decide(decisions: Iterable[Decision | BreathDecision]) -> None:
        for decision in decisions:
            result.add(decision)
            if isinstance(decision, BreathDecision):
                tally.add(decision)
            else:
                acc.add(decision)
            if keep_decisions:
                result.decisions.append(decision)
            if on_decision is not None:
                on_decision(decision)

    invalid = NonfiniteTally()
    try:
        damage = _decide_blocks(clf, decide, path, max(1, int(round(block_s * info.sample_rate))), invalid,
                                beside=None if beside is None else (beside, _folder(acc)))
        result.duration_s = stream.input_samples / info.sample_rate
    except KeyboardInterrupt:
        result.duration_s = stream.input_samples / info.sample_rate
        result.status, result.note = "interrupted", f"interrupted after {result.duration_s:.1f} s of audio"
        raise Interrupted([result]) from None
    _finish_notes(result, info, damage, classifier.cfg)
    if invalid.count:
        result.note = "; ".join(filter(None, [invalid.note(), result.note]))  # first: `classify` exits 1 on "error"
    if txt is not None:
        # read again now that the audio's length is known: a cycle past its end is named with its line (as
        # `data summary` names it) and left out, not counted as a cycle no window overlapped (issue 26)
        _, problems = parse_annotation(txt, result.duration_s)
        result.cycles = [m for m in acc.matches() if m.cycle.start_s < result.duration_s]
        result.breaths = tally.match([c for c in cycles if c.start_s < result.duration_s]) \
            if clf.mode == "breath" else None
        notes = [f"{Path(p.file).name}: {p.reason}" for p in problems if p.kind == "error"]
        result.note = "; ".join([result.note, *notes] if result.note else notes)
    return result


def _decide_blocks(
    clf: Classifier, decide: Callable[[Iterable[Decision]], None], path: Path, block: int, invalid: NonfiniteTally,
    beside: tuple[Classifier, Callable[[Iterable[Decision]], None]] | None = None,
) -> AudioError | None:
    """Feed the file through `clf` (and the `beside` classifier, if any) block by block; returns the error where
    decoding stopped, if it did."""
    damage = None
    rate = clf.stream.input_rate
    try:
        for samples in read_blocks(path, block):
            invalid.add(samples, clf.input_samples)
            decide(clf.accept_waveform(samples, rate))
            if beside is not None:
                beside[1](beside[0].accept_waveform(samples, rate))
    except AudioError as exc:
        damage = exc
    decide(clf.finish())
    if beside is not None:
        beside[1](beside[0].finish())
    return damage


def _folder(acc: CycleAccumulator) -> Callable[[Iterable[Decision]], None]:
    """Window decisions folded into the annotated cycles only (window mode's figure beside breath mode)."""
    def fold(decisions: Iterable[Decision]) -> None:
        for decision in decisions:
            acc.add(decision)
    return fold


class NonfiniteTally:
    """NaN/inf samples of a file read block by block: their count and the first `limit` runs, in input samples."""

    def __init__(self, limit: int = 5) -> None:
        self.limit, self.count = limit, 0
        self.runs: list[tuple[int, int]] = []

    def add(self, block: np.ndarray, offset: int) -> None:
        count, runs = nonfinite_runs(block, limit=self.limit + 1)
        self.count += count
        for start, end in runs:
            if self.runs and self.runs[-1][1] == start + offset:  # a run carried over from the last block
                self.runs[-1] = (self.runs[-1][0], end + offset)
            elif len(self.runs) < self.limit:
                self.runs.append((start + offset, end + offset))

    def note(self) -> str:
        """'error: N NaN/inf samples (input samples a-b, ...), their windows not classified' or ''."""
        if not self.count:
            return ""
        ranges = ", ".join(f"{s}-{e - 1}" for s, e in self.runs)
        more = "" if sum(e - s for s, e in self.runs) == self.count else ", ..."
        return f"error: {self.count} NaN/inf samples (input samples {ranges}{more}), their windows not classified"


def _finish_notes(result: FileResult, info: AudioInfo, damage: AudioError | None, cfg: StreamConfig) -> None:
    """Say what was not decided: a damaged or short-read file, a truncated WAV, or why there is no window.

    A WAV whose header declares more frames than it holds (a cut-off copy) keeps status "ok": libsndfile
    reads it whole as far as it goes, so what is there is decided; the note says how much is missing.
    """
    header_s = info.duration_s if info.frames < UNKNOWN_LENGTH else None
    said = f"header says {header_s:.1f} s" if header_s is not None else "length unknown in its header"
    if damage is not None:
        result.status = "damaged"
        result.note = f"damaged: decoded {result.duration_s:.1f} s ({said}); the rest is unreadable ({damage})"
    elif header_s is not None and result.duration_s < header_s - 1.0 / info.sample_rate:
        result.status = "damaged"
        result.note = f"damaged: decoded {result.duration_s:.1f} s, {said}; the file ends early (truncated)"
    elif (cut := info.truncation()) is not None:
        result.note = f"{cut}; classified what is there"
    if not result.windows:
        why = no_window_reason(cfg, result.duration_s)
        result.note = f"{result.note}; {why}" if result.note else why


def classify_files(
    classifier: StreamingClassifier,
    paths: list[str | Path],
    on_decision: Callable[[Decision], None] | None = None,
    on_file: Callable[[FileResult], None] | None = None,
) -> list[FileResult]:
    """`classify_file` for each path, calling `on_file` as each one finishes.

    A file with nothing readable is one result with status "error" naming it, and the batch carries
    on. Ctrl-C raises `Interrupted` holding the finished results and the cut file (already passed to
    `on_file`).
    """
    results: list[FileResult] = []
    try:
        for path in paths:
            try:
                result = classify_file(classifier, path, on_decision=on_decision)
            except AudioError as exc:
                result = FileResult(Path(path), 0, 0.0, note=f"error: {exc}", status="error")
            except Interrupted as exc:
                results.extend(exc.results)
                if on_file is not None:
                    on_file(exc.results[-1])
                raise
            results.append(result)
            if on_file is not None:
                on_file(result)
    except KeyboardInterrupt:
        raise Interrupted(results) from None
    return results


def overall_agreement(results: list[FileResult], labels: tuple[str, ...]) -> dict[str, Any] | None:
    """Cycle agreement pooled over every annotated recording, or None if none had annotations."""
    matches = [m for r in results if r.cycles is not None for m in r.cycles]
    pooled = cycle_agreement(matches, labels) if matches else None
    breaths = [r.breaths for r in results if r.breaths is not None]
    if pooled is not None and breaths:
        pooled["breaths"] = breath_agreement(breaths, labels)
    return pooled
