"""`edge-lung classify`: the streaming windowing applied to files, as fast as the CPU allows.

A file is decoded at its own rate and fed to the same `WindowStream` the live path uses, in
blocks, so `classify` and `stream --replay` give identical windows. When ICBHI annotations
(`<stem>.txt`: start, end, crackle, wheeze per line) sit beside a recording, each annotated
cycle is matched with the windows that overlap it and the report says how they line up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_lung.audio import AudioError, load_audio
from edge_lung.config import LABELS
from edge_lung.data.icbhi import CycleSpec, parse_annotation
from edge_lung.metrics import score_predictions, screening_curve
from edge_lung.runtime.quality import nonfinite_runs
from edge_lung.runtime.stream import Decision, StreamingClassifier


@dataclass(frozen=True)
class CycleMatch:
    """One annotated cycle and the decision of the windows overlapping it (overlap-weighted mean)."""

    cycle: CycleSpec
    windows: int
    predicted: int | None  # None: no window overlaps the cycle
    p_abnormal: float | None
    flag: bool | None


@dataclass
class FileResult:
    path: Path
    input_rate: int
    duration_s: float
    decisions: list[Decision] = field(default_factory=list)
    cycles: list[CycleMatch] | None = None
    note: str = ""

    def summary(self, labels: tuple[str, ...]) -> dict[str, Any]:
        """Per-recording figures for the report (and for JSON)."""
        out: dict[str, Any] = {
            "file": str(self.path),
            "input_rate": self.input_rate,
            "duration_s": round(self.duration_s, 3),
            "windows": len(self.decisions),
            "flagged_windows": sum(d.flag for d in self.decisions),
            "max_p_abnormal": max((d.p_abnormal for d in self.decided), default=None),
            "verdicts": self.verdicts,
            "note": self.note,
        }
        if self.cycles is not None:
            out.update(cycle_agreement(self.cycles, labels))
        return out

    @property
    def decided(self) -> list[Decision]:
        """The windows that passed the quality gate and got a class decision."""
        return [d for d in self.decisions if d.verdict == "ok"]

    @property
    def verdicts(self) -> dict[str, int]:
        """Windows per quality verdict (`ok` = classified)."""
        counts: dict[str, int] = {}
        for d in self.decisions:
            counts[d.verdict] = counts.get(d.verdict, 0) + 1
        return counts


def annotation_for(audio_path: str | Path) -> Path | None:
    """The ICBHI annotation file beside a recording (same stem, `.txt`), if there is one."""
    txt = Path(audio_path).with_suffix(".txt")
    return txt if txt.is_file() else None


def align_cycles(decisions: list[Decision], cycles: list[CycleSpec], abnormal: list[int]) -> list[CycleMatch]:
    """Match each annotated cycle with the windows that overlap it, weighting by overlap length.

    Windows the quality gate stopped have no probabilities and are left out."""
    decisions = [d for d in decisions if d.verdict == "ok"]
    out = []
    for cycle in cycles:
        weights, probs = [], []
        for d in decisions:
            overlap = min(cycle.end_s, d.window.end_s) - max(cycle.start_s, d.window.start_s)
            if overlap > 0:
                weights.append(overlap)
                probs.append(d.probabilities)
        if not weights:
            out.append(CycleMatch(cycle, 0, None, None, None))
            continue
        mean = np.average(np.stack(probs), axis=0, weights=np.asarray(weights))
        p_abn = float(mean[abnormal].sum())
        threshold = decisions[0].threshold
        out.append(CycleMatch(cycle, len(weights), int(np.argmax(mean)), p_abn, p_abn >= threshold))
    return out


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


def classify_file(
    classifier: StreamingClassifier,
    path: str | Path,
    block_s: float = 1.0,
    on_decision: Callable[[Decision], None] | None = None,
) -> FileResult:
    """Run the streaming windowing over one file (no pacing) and decide every window."""
    path = Path(path)
    audio, rate = load_audio(path)
    result = FileResult(path, rate, audio.shape[0] / rate)
    stream = classifier.create_stream(rate)
    decider = classifier.create_decider()
    block = max(1, int(round(block_s * rate)))

    def decide(windows: Iterable) -> None:
        for window in windows:
            r = classifier.process(window)
            decision = decider.decide(window, r.probabilities, r.feature_ms, r.model_ms, source=str(path),
                                      quality=r.quality)
            result.decisions.append(decision)
            if on_decision is not None:
                on_decision(decision)

    for pos in range(0, audio.shape[0], block):
        decide(stream.accept_waveform(audio[pos : pos + block]))
    decide(stream.finish())
    if not result.decisions:
        result.note = (
            f"too short for a decision ({result.duration_s:.2f} s < --min-audio {classifier.cfg.min_audio_s} s)"
        )
    invalid_note = nonfinite_note(audio)
    if invalid_note:
        result.note = "; ".join(filter(None, [invalid_note, result.note]))  # first: `classify` exits 1 on "error"
    txt = annotation_for(path)
    if txt is not None:
        abnormal = list(classifier.model.info.abnormal_indices)
        cycles, problems = parse_annotation(txt)
        result.cycles = align_cycles(result.decisions, cycles, abnormal)
        if problems:
            notes = [f"{Path(p.file).name}: {p.reason}" for p in problems if p.kind == "error"]
            result.note = "; ".join([result.note, *notes] if result.note else notes)
    return result


def nonfinite_note(audio: np.ndarray) -> str:
    """'error: N NaN/inf samples at input samples a-b, ...' or '' for finite audio."""
    count, runs = nonfinite_runs(audio)
    if not count:
        return ""
    ranges = ", ".join(f"{s}-{e - 1}" for s, e in runs)
    more = "" if sum(e - s for s, e in runs) == count else ", ..."
    return f"error: {count} NaN/inf samples (input samples {ranges}{more}), their windows not classified"


def classify_files(
    classifier: StreamingClassifier,
    paths: list[str | Path],
    on_decision: Callable[[Decision], None] | None = None,
) -> list[FileResult]:
    """`classify_file` for each path; an unreadable file is reported in its result's note, not skipped silently."""
    results = []
    for path in paths:
        try:
            results.append(classify_file(classifier, path, on_decision=on_decision))
        except AudioError as exc:
            results.append(FileResult(Path(path), 0, 0.0, note=f"error: {exc}"))
    return results


def overall_agreement(results: list[FileResult], labels: tuple[str, ...]) -> dict[str, Any] | None:
    """Cycle agreement pooled over every annotated recording, or None if none had annotations."""
    matches = [m for r in results if r.cycles is not None for m in r.cycles]
    return cycle_agreement(matches, labels) if matches else None
