"""`edge-lung report`: what the model heard, as one self-contained HTML page per recording plus an index.

A page shows the log-mel of the whole recording (annotated cycles drawn when `<stem>.txt` is
beside it; built block by block from the windows as they are decided, its frames averaged into at
most a few thousand columns, so memory does not grow with the recording: issue 26), the
per-window timeline of P(abnormal) and the class probabilities from the very windows `classify`
and `stream` decide (`classify_file`), the predicted vs true label of every annotated cycle with
their confusion, and an occlusion saliency map over each flagged window (the `MAX_EXPLAINED` with
the highest P(abnormal); `edge_lung.runtime.explain.saliency`), its cost stated. A file that stops
decoding part-way is reported as far as it decodes, as `classify` decides it. Pages work offline:
pictures are inline PNG (base64), no script, no external stylesheet. A recording that cannot be reported (unreadable,
empty, a sample rate too low to hold the sounds) is listed in the index with its reason and
the others are still written. Torch-free: it runs on the device.
"""

from __future__ import annotations

import base64
import heapq
import html
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from edge_lung.audio import AudioError, audio_info
from edge_lung.config import FeatureConfig, num_frames_for
from edge_lung.features import log_mel, window_features
from edge_lung.fileio import atomic_write_text, marked_folder, write_marker
from edge_lung.runtime.explain.corrections import write_corrections
from edge_lung.runtime.explain.saliency import OcclusionConfig, WindowSaliency, decided_classes, window_saliency
from edge_lung.runtime.live.stream import Decision, StreamingClassifier
from edge_lung.runtime.offline.classify import FileResult, classify_file

REPORT_FOLDER = marked_folder("an edge-lung report folder (index.html, one page per recording)", "report")
"""The writing policy's kind for `report --out` and `stream --report` (`edge_lung.fileio.check_output`)."""

MAX_EXPLAINED = 16
"""Flagged windows explained per recording, those with the highest P(abnormal): each keeps its 8 s of audio until
the page is drawn and costs a few hundred model calls, so a long recording's page stays bounded (issue 26)."""

OVERVIEW_COLUMNS = 2048
"""The whole-recording spectrogram keeps between this many and twice this many columns (more than the page's
pixels): longer recordings average more 10 ms frames into each column."""

MIN_INPUT_RATE = 4000
"""Lowest input rate reported: ICBHI's slowest stethoscopes record at 4 kHz, and crackles and wheezes reach
2 kHz; a slower file cannot hold the sounds the model was trained to hear."""

_CSS = """body{font-family:sans-serif;margin:1.5em;max-width:1100px;color:#222}
img{max-width:100%;display:block;margin:.4em 0}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #bbb;padding:2px 7px;font-size:90%;text-align:right}
.bad{color:#b00}.ok{color:#070}.note{color:#555;font-size:90%}"""


@dataclass
class RecordingReport:
    """What one page shows. `mel`: log-mel of the whole recording at the model's rate."""

    result: FileResult
    mel: np.ndarray | None = None
    mel_seconds: float | None = None  # time the columns of `mel` span (None: one column per feature frame)
    saliencies: list[WindowSaliency] = field(default_factory=list)
    window_mels: list[np.ndarray] = field(default_factory=list)
    events: list | None = None  # drawn events of a synthetic recording (`edge_lung.data.synth`)
    error: str | None = None

    @property
    def page_name(self) -> str:
        """STEM-XXXXXXXX.html: the file's name and a CRC-32 of its absolute path, so two recordings of one
        name from different folders get pages of their own (issue 26)."""
        tag = zlib.crc32(str(Path(self.result.path).absolute()).encode()) & 0xFFFFFFFF
        return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', self.result.path.stem)}-{tag:08x}.html"


def explain_decisions(
    classifier: StreamingClassifier, decisions: Sequence[Decision], occlusion: OcclusionConfig
) -> tuple[list[WindowSaliency], list[np.ndarray]]:
    """Occlusion saliency of every flagged window, with each window's normalised log-mel."""
    abnormal = list(classifier.model.info.abnormal_indices)
    saliencies, mels = [], []
    for d in decisions:
        if not d.flag or d.window.audio.size == 0:  # a flagged window past MAX_EXPLAINED kept no audio
            continue
        feats = window_features(d.window.audio, classifier.features)
        target = decided_classes(d.probabilities, abnormal)
        saliencies.append(window_saliency(classifier.model.probabilities, d.window, feats, target, occlusion))
        mels.append(feats)
    return saliencies, mels


def analyse_recording(
    classifier: StreamingClassifier, path: str | Path, occlusion: OcclusionConfig = OcclusionConfig()
) -> RecordingReport:
    """Classify one file with the runtime's windows and explain its flagged windows; errors become `error`."""
    from edge_lung.data.synth import read_events

    path = Path(path)
    try:
        info = audio_info(path)
        if info.sample_rate < MIN_INPUT_RATE:
            raise AudioError(f"{path}: sample rate {info.sample_rate} Hz, expected >= {MIN_INPUT_RATE} Hz")
        kept = SessionCollector(classifier.features)  # every decision, window audio only for the explained ones
        result = classify_file(classifier, path, on_decision=kept.decision)
        result.decisions = kept.decisions
        report = kept.report(result, classifier, occlusion)
        report.events = read_events(path)
    except (AudioError, ValueError) as exc:
        return RecordingReport(FileResult(path, 0, 0.0, note=f"error: {exc}"), error=str(exc))
    return report


def _without_audio(decision: Decision) -> Decision:
    return replace(decision, window=replace(decision.window, audio=np.zeros(0, dtype=np.float32)))


class MelOverview:
    """The log-mel of a whole recording at bounded memory: fed its model-rate audio in order, a block at a time,
    each column the mean of `pool` 10 ms frames; when the columns reach twice `max_columns`, neighbours are
    merged and `pool` doubles. Frames are cut as `log_mel` cuts them (Kaldi frames are independent), so with
    `pool` 1 the image is the recording's `log_mel`."""

    def __init__(self, cfg: FeatureConfig, max_columns: int = OVERVIEW_COLUMNS) -> None:
        self.cfg, self.max_columns = cfg, max_columns
        self.pool, self.frames = 1, 0
        self._columns: list[np.ndarray] = []
        self._sum = np.zeros(cfg.num_mel_bins, dtype=np.float64)
        self._count = 0
        self._tail = np.zeros(0, dtype=np.float32)  # samples not yet in a whole frame

    def add(self, audio: np.ndarray) -> None:
        """The next model-rate samples (float32[N]) of the recording."""
        x = np.concatenate([self._tail, np.asarray(audio, dtype=np.float32)])
        length, shift = self.cfg.frame_length, self.cfg.frame_shift
        n = num_frames_for(x.shape[0], length, shift)
        if n:
            self._fold(log_mel(x[: (n - 1) * shift + length], self.cfg))
            x = x[n * shift :]
        self._tail = x.copy()

    def gap(self, samples: int) -> None:
        """`samples` with no audio (windows never decided): drawn at the log floor, never held as samples."""
        self._tail = np.zeros(0, dtype=np.float32)
        floor = np.full((4096, self.cfg.num_mel_bins), np.log(self.cfg.log_floor), dtype=np.float32)
        frames = samples // self.cfg.frame_shift
        for a in range(0, frames, floor.shape[0]):
            self._fold(floor[: min(floor.shape[0], frames - a)])

    def _fold(self, mel: np.ndarray) -> None:
        self.frames += mel.shape[0]
        i = 0
        while i < mel.shape[0]:
            take = min(self.pool - self._count, mel.shape[0] - i)
            self._sum += mel[i : i + take].sum(axis=0, dtype=np.float64)
            self._count += take
            i += take
            if self._count == self.pool:
                self._columns.append((self._sum / self.pool).astype(np.float32))
                self._sum[:], self._count = 0.0, 0
                if len(self._columns) >= 2 * self.max_columns:
                    self._merge()

    def _merge(self) -> None:
        cols = np.stack(self._columns)
        self._columns = list(0.5 * (cols[0::2] + cols[1::2]))
        self.pool *= 2

    def image(self) -> tuple[np.ndarray, float] | None:
        """(float32[C, M] columns, seconds they span), or None before the first whole frame."""
        cols = self._columns + ([(self._sum / self._count).astype(np.float32)] if self._count else [])
        if not cols:
            return None
        seconds = self.frames * self.cfg.frame_shift_ms / 1000.0
        return np.stack(cols), seconds


class SessionCollector:
    """Keeps what a page needs as the windows are decided: every decision (window audio only for the
    `MAX_EXPLAINED` flagged windows with the highest P(abnormal), for their saliency) and the recording's
    `MelOverview`, fed the new part of each window's audio (so memory stays bounded however long it runs)."""

    def __init__(self, features: FeatureConfig | None = None) -> None:
        self.decisions: list[Decision] = []
        self.features = features
        self.overview = MelOverview(features) if features is not None else None
        self._fed = 0  # model-rate sample up to which the overview has audio (before a first window: a gap)
        self._explained: list[tuple[float, int]] = []  # heap of (P(abnormal), index) of the windows kept
        self.flagged = 0
        self.rate: int | None = None  # a live session's first input rate (the page states it)
        self.note = ""

    def decision(self, decision: Decision) -> None:
        self._feed(decision.window)
        self.flagged += int(decision.flag)
        keep = decision.flag and self._keep(decision.p_abnormal, len(self.decisions))
        self.decisions.append(decision if keep else _without_audio(decision))

    def audio(self, block: np.ndarray, rate: int) -> None:
        """A captured block (`stream`): only its rate is kept; the overview is drawn from the windows."""
        self.rate = self.rate or int(rate)

    def _keep(self, p_abnormal: float, index: int) -> bool:
        """Whether a flagged window is among the `MAX_EXPLAINED` highest so far (the one it displaces drops its
        audio)."""
        if len(self._explained) < MAX_EXPLAINED:
            heapq.heappush(self._explained, (p_abnormal, index))
            return True
        if p_abnormal <= self._explained[0][0]:
            return False
        _, dropped = heapq.heapreplace(self._explained, (p_abnormal, index))
        self.decisions[dropped] = _without_audio(self.decisions[dropped])
        return True

    def _feed(self, window) -> None:
        """Give the overview the part of `window`'s real audio it has not seen (a skipped stretch as a gap)."""
        if self.overview is None:
            return
        if window.start > self._fed:
            self.overview.gap(window.start - self._fed)
            self._fed = window.start
        if window.end > self._fed and window.audio.size:
            self.overview.add(window.audio[self._fed - window.start : window.end - window.start])
            self._fed = window.end

    def report(self, result: FileResult, classifier: StreamingClassifier, occlusion: OcclusionConfig
               ) -> RecordingReport:
        """The page's content: `result` (its decisions these), the overview, the saliency of the kept windows."""
        image = self.overview.image() if self.overview is not None else None
        report = RecordingReport(result, mel=None if image is None else image[0],
                                 mel_seconds=None if image is None else image[1])
        report.saliencies, report.window_mels = explain_decisions(classifier, result.decisions, occlusion)
        if self.flagged > len(report.saliencies):
            result.note = "; ".join(filter(None, [result.note, f"{self.flagged} windows flagged; the "
                                                  f"{len(report.saliencies)} with the highest P(abnormal) explained"]))
        return report

    def session_result(self, source: str, input_rate: int) -> FileResult:
        """A live session's figures, from its decisions."""
        duration = self._fed / self.features.sample_rate if self.features else 0.0
        result = FileResult(Path(source), input_rate, duration, decisions=list(self.decisions), note=self.note)
        for d in self.decisions:
            result.add(d)  # the counts the index and summary read
        return result

    def write(self, classifier: StreamingClassifier, out_dir: str | Path, source: str,
              occlusion: OcclusionConfig = OcclusionConfig()) -> Path:
        """The session's page and an index naming it, in `out_dir`; returns the page's path."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_marker(out_dir, "report")  # ours: --overwrite may replace it (fileio's writing policy)
        report = self.report(self.session_result(source, self.rate or 0), classifier, occlusion)
        page = out_dir / report.page_name
        atomic_write_text(page, render_page(report, classifier, occlusion))
        atomic_write_text(out_dir / "index.html", render_index([report], classifier))
        write_corrections([report.result], out_dir)  # corrections.csv for a clinician (issue 27)
        return page


def write_report(
    classifier: StreamingClassifier,
    paths: Sequence[Path],
    out_dir: str | Path,
    occlusion: OcclusionConfig = OcclusionConfig(),
    on_file: Callable[[Path, RecordingReport], None] | None = None,
) -> list[RecordingReport]:
    """One page per recording in `out_dir` plus `index.html`; `on_file` is called after each (progress)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_marker(out_dir, "report")  # ours: --overwrite may replace it (fileio's writing policy)
    reports = []
    for path in paths:
        report = analyse_recording(classifier, path, occlusion)
        if report.error is None:
            atomic_write_text(out_dir / report.page_name, render_page(report, classifier, occlusion))
        reports.append(report)
        if on_file is not None:
            on_file(Path(path), report)
    atomic_write_text(out_dir / "index.html", render_index(reports, classifier))
    write_corrections([r.result for r in reports if r.error is None], out_dir)  # for a clinician (issue 27)
    return reports


# --------------------------------------------------------------------------- HTML


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _document(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>\n")


def render_page(report: RecordingReport, classifier: StreamingClassifier, occlusion: OcclusionConfig) -> str:
    """The self-contained HTML page of one recording."""
    from edge_lung.runtime.explain import report_plots as plots

    r, info, labels = report.result, classifier.model.info, classifier.labels
    flagged = sum(d.flag for d in r.decisions)
    parts = [
        f"<h1>{html.escape(r.path.name)}</h1>",
        f"<p>{r.duration_s:.1f} s at {r.input_rate} Hz; {len(r.decisions)} windows of {info.features.window_s:g} s "
        f"every {classifier.cfg.hop_s:g} s, {flagged} flagged (P(abnormal) &ge; {classifier.cfg.threshold:.2f}). "
        f"Model {html.escape(info.path.name)} ({html.escape(info.quantization)}).</p>",
    ]
    held = {v: n for v, n in r.verdicts.items() if v != "ok"}
    if held:
        verdicts = ", ".join(f"{n} {v}" for v, n in sorted(held.items()))
        parts.append(f'<p class="note">Not classified by the signal-quality gate: {html.escape(verdicts)}.</p>')
    if r.note:
        parts.append(f'<p class="note">{html.escape(r.note)}</p>')
    cycles = [m.cycle for m in r.cycles] if r.cycles else []
    if report.mel is not None:
        parts.append(_img(plots.spectrogram_png(report.mel, info.features, cycles, labels, report.mel_seconds),
                          "log-mel spectrogram"))
    if r.decisions:
        parts.append("<h2>Windows</h2>")
        parts.append(_img(plots.timeline_png(r.decisions, labels, classifier.cfg.threshold, r.duration_s),
                          "per-window probabilities"))
    if r.cycles:
        parts.append(_cycles_section(r, labels))
    parts.append(_saliency_section(report, classifier, occlusion))
    return _document(f"edge-lung report: {r.path.name}", "\n".join(parts))


def _cycles_section(result: FileResult, labels: tuple[str, ...]) -> str:
    """Per annotated cycle: true and predicted label; then the cycles' confusion and screening figures."""
    rows = []
    confusion = np.zeros((len(labels), len(labels)), dtype=int)
    for m in result.cycles or []:
        c = m.cycle
        predicted = "-" if m.predicted is None else labels[m.predicted]
        agree = "" if m.predicted is None else ("yes" if m.predicted == c.label else "no")
        p_abn = "-" if m.p_abnormal is None else f"{m.p_abnormal:.2f}"
        rows.append((c.index, f"{c.start_s:.2f}", f"{c.end_s:.2f}", labels[c.label], predicted, p_abn,
                     "" if m.flag is None else ("flag" if m.flag else ""), agree))
        if m.predicted is not None:
            confusion[c.label, m.predicted] += 1
    summary = result.summary(labels)
    se, sp = summary.get("screening_sensitivity"), summary.get("screening_specificity")
    screening = f"screening sensitivity {_pct(se)}, specificity {_pct(sp)} over {summary['cycles_covered']} cycles"
    grid = _table(["true \\ predicted", *labels], [(labels[k], *confusion[k]) for k in range(len(labels))])
    return ("<h2>Annotated cycles</h2>"
            + _table(["cycle", "start s", "end s", "true", "predicted", "P(abnormal)", "flag", "agree"], rows)
            + f"<h3>Confusion of the cycles</h3>{grid}<p>{screening}</p>")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def _saliency_section(report: RecordingReport, classifier: StreamingClassifier, occlusion: OcclusionConfig) -> str:
    from edge_lung.runtime.explain import report_plots as plots
    from edge_lung.runtime.explain.saliency import events_in

    if not report.saliencies:
        return "<h2>Saliency</h2><p>No flagged window, so nothing to explain.</p>"
    features, labels = classifier.features, classifier.labels
    per_window = np.mean([s.seconds for s in report.saliencies])
    evaluations = report.saliencies[0].evaluations
    parts = [
        "<h2>Saliency of the flagged windows (occlusion)</h2>",
        f"<p>Each {occlusion.patch_frames * features.frame_shift_ms / 1000:g} s x {occlusion.patch_bins}-mel-bin "
        "patch is replaced by the window's per-band median and the drop of the decided class's probability is "
        f"drawn (green box: the largest drop). Cost: {evaluations} model evaluations, {per_window:.2f} s per window "
        f"on this machine, batches of {occlusion.batch}.</p>",
    ]
    for s, mel in zip(report.saliencies, report.window_mels, strict=True):
        name = " + ".join(labels[k] for k in s.target)
        a, b = s.peak_time_s(features)
        lo, hi = s.peak_band_hz(features)
        title = (f"window {s.window_index} ({s.start_s:.1f}-{s.end_s:.1f} s{', padded' if s.padded else ''}): "
                 f"P({name}) {s.base:.2f}, peak {a:.2f}-{b:.2f} s, {lo:.0f}-{hi:.0f} Hz")
        events = events_in(report.events, s.start_s, s.end_s) if report.events else ()
        parts.append(_img(plots.saliency_png(mel, s, features, title, events), title))
    return "\n".join(parts)


def render_index(reports: Sequence[RecordingReport], classifier: StreamingClassifier) -> str:
    """The index: one row per recording, linked to its page, or its error."""
    labels = classifier.labels
    rows = []
    for rep in reports:
        r = rep.result
        if rep.error is not None:
            rows.append(f'<tr><td>{html.escape(r.path.name)}</td><td colspan="5" class="bad">'
                        f"not reported: {html.escape(rep.error)}</td></tr>")
            continue
        s = r.summary(labels)
        agreement = s.get("class_agreement")
        cells = [f"{r.duration_s:.1f}", s["windows"], s["flagged_windows"],
                 "-" if s["max_p_abnormal"] is None else f"{s['max_p_abnormal']:.2f}",
                 "-" if agreement is None else f"{agreement:.1f}%"]
        link = f'<a href="{html.escape(rep.page_name)}">{html.escape(r.path.name)}</a>'
        rows.append(f"<tr><td>{link}</td>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    bad = sum(rep.error is not None for rep in reports)
    head = "".join(f"<th>{h}</th>" for h in ("recording", "seconds", "windows", "flagged", "max P(abnormal)",
                                              "cycle agreement"))
    body = (f"<h1>edge-lung report</h1><p>Model {html.escape(str(classifier.model.info.path))}; "
            f"{len(reports) - bad} recordings reported, {bad} not.</p>"
            f"<table><tr>{head}</tr>{''.join(rows)}</table>")
    return _document("edge-lung report", body)
