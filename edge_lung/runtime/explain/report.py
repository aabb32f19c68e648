"""`edge-lung report`: what the model heard, as one self-contained HTML page per recording plus an index.

A page shows the log-mel of the whole recording (annotated cycles drawn when `<stem>.txt` is
beside it), the per-window timeline of P(abnormal) and the class probabilities from the very
windows `classify` and `stream` decide (`classify_file`), the predicted vs true label of every
annotated cycle with their confusion, and an occlusion saliency map over each flagged window
(`edge_lung.runtime.explain.saliency`), its cost stated. Pages work offline: pictures are inline PNG
(base64), no script, no external stylesheet. A recording that cannot be reported (unreadable,
empty, a sample rate too low to hold the sounds) is listed in the index with its reason and
the others are still written. Torch-free: it runs on the device.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from edge_lung.audio import AudioError, audio_info, resample
from edge_lung.features import log_mel, window_features
from edge_lung.fileio import atomic_write_text
from edge_lung.runtime.explain.corrections import write_corrections
from edge_lung.runtime.explain.saliency import OcclusionConfig, WindowSaliency, decided_classes, window_saliency
from edge_lung.runtime.live.stream import Decision, StreamingClassifier
from edge_lung.runtime.offline.classify import FileResult, classify_file

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
    saliencies: list[WindowSaliency] = field(default_factory=list)
    window_mels: list[np.ndarray] = field(default_factory=list)
    events: list | None = None  # drawn events of a synthetic recording (`edge_lung.data.synth`)
    error: str | None = None

    @property
    def page_name(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]", "_", self.result.path.stem) + ".html"


def explain_decisions(
    classifier: StreamingClassifier, decisions: Sequence[Decision], occlusion: OcclusionConfig
) -> tuple[list[WindowSaliency], list[np.ndarray]]:
    """Occlusion saliency of every flagged window, with each window's normalised log-mel."""
    abnormal = list(classifier.model.info.abnormal_indices)
    saliencies, mels = [], []
    for d in decisions:
        if not d.flag:
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
        kept = SessionCollector()  # every decision, but window audio only for the flagged ones
        result = classify_file(classifier, path, on_decision=kept.decision)
        result.decisions = kept.decisions
        audio = _load_model_rate(path, classifier.features.sample_rate)
        report = RecordingReport(result, mel=_recording_mel(audio, classifier))
        report.saliencies, report.window_mels = explain_decisions(classifier, result.decisions, occlusion)
        report.events = read_events(path)
    except (AudioError, ValueError) as exc:
        return RecordingReport(FileResult(path, 0, 0.0, note=f"error: {exc}"), error=str(exc))
    return report


def _load_model_rate(path: Path, rate: int) -> np.ndarray:
    from edge_lung.audio import load_audio

    return load_audio(path, target_rate=rate)[0]


def _recording_mel(audio: np.ndarray, classifier: StreamingClassifier) -> np.ndarray | None:
    cfg = classifier.features
    return log_mel(audio, cfg) if audio.shape[0] >= cfg.frame_length else None


def session_report(
    classifier: StreamingClassifier,
    decisions: Sequence[Decision],
    blocks: Sequence[np.ndarray],
    input_rate: int,
    source: str,
    occlusion: OcclusionConfig = OcclusionConfig(),
) -> RecordingReport:
    """The page of a live `stream` session: its decisions and the captured audio (blocks at `input_rate`)."""
    audio = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
    model_rate = classifier.features.sample_rate
    if audio.size and input_rate != model_rate:
        audio = resample(audio, input_rate, model_rate)
    result = FileResult(Path(source), input_rate, audio.shape[0] / model_rate, decisions=list(decisions))
    for d in decisions:
        result.add(d)  # the counts the index and summary read
    report = RecordingReport(result, mel=_recording_mel(audio, classifier))
    report.saliencies, report.window_mels = explain_decisions(classifier, result.decisions, occlusion)
    return report


class SessionCollector:
    """Keeps what a live session's page needs: every decision (the audio of flagged windows only, for their
    saliency) and the captured audio at the first input rate. A rate change mid-session ends the audio kept
    for the spectrogram (said in the page's note); decisions are still kept."""

    def __init__(self) -> None:
        self.decisions: list[Decision] = []
        self.blocks: list[np.ndarray] = []
        self.rate: int | None = None
        self.note = ""

    def decision(self, decision: Decision) -> None:
        if not decision.flag:
            window = replace(decision.window, audio=np.zeros(0, dtype=np.float32))
            decision = replace(decision, window=window)
        self.decisions.append(decision)

    def audio(self, block: np.ndarray, rate: int) -> None:
        if self.rate is None:
            self.rate = int(rate)
        if int(rate) != self.rate:
            self.note = self.note or f"input rate changed from {self.rate} to {rate} Hz: the spectrogram stops there"
            return
        self.blocks.append(np.array(block, dtype=np.float32).reshape(-1))

    def write(self, classifier: StreamingClassifier, out_dir: str | Path, source: str,
              occlusion: OcclusionConfig = OcclusionConfig()) -> Path:
        """The session's page and an index naming it, in `out_dir`; returns the page's path."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        report = session_report(classifier, self.decisions, self.blocks, self.rate or 0, source, occlusion)
        report.result.note = self.note
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
        parts.append(_img(plots.spectrogram_png(report.mel, info.features, cycles, labels), "log-mel spectrogram"))
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
