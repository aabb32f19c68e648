"""`edge-lung exam`: a guided auscultation, site by site, ending in one answer per patient.

For each chest site (the ICBHI names: `Tc` trachea, `Al`/`Ar` anterior, `Pl`/`Pr` posterior, `Ll`/`Lr`
lateral, left/right) the exam prompts the field worker, runs the live path (`stream_session`: quality gate,
model, FLAC recorder named in the ICBHI pattern `{patient}_{session}_{site}_sc_{device}.flac`) and stops the
take once `seconds` of audio the gate judged `ok` were heard (or after `max_seconds`, or when a replayed file
ends). A take that heard less says why (the commonest failing verdict's advice, "no signal: place the chest
piece on the skin") and the site is kept, redone or skipped (`redo`: `ask` reads the answer from stdin,
`auto` redoes until `attempts` takes were made, `never` keeps the take). The end writes the patient
summary: JSON, a self-contained page with a chest diagram coloured by site linking to each site's recording
page (`edge-lung report`'s writer), and the recordings. Ctrl-C keeps every finished site and names the
missing ones.

A site's class is the argmax of the mean probabilities over its `ok` windows and it is abnormal when their
mean P(abnormal) reaches the threshold; the patient is `abnormal` when any examined site is, `normal` when
every site was heard well and none is, `incomplete` otherwise. A screening aid, not a diagnosis.
"""

from __future__ import annotations

import html
import math
import re
import sys
import threading
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from edge_lung.fileio import atomic_write_json, atomic_write_text
from edge_lung.runtime.artifact.quality import GUIDANCE, OK
from edge_lung.runtime.commands.session import AUDIO_SUFFIXES, StreamOptions, stream_session
from edge_lung.runtime.explain.report import write_report
from edge_lung.runtime.live.stream import Decision, StreamingClassifier
from edge_lung.runtime.live.web import LiveWeb, WebConfig

SITES = {
    "Tc": "trachea",
    "Al": "anterior left",
    "Ar": "anterior right",
    "Pl": "posterior left",
    "Pr": "posterior right",
    "Ll": "lateral left",
    "Lr": "lateral right",
}
"""The ICBHI chest locations, in the order an exam visits them by default."""

REDO = ("ask", "auto", "never")
_TAG = re.compile(r"^[A-Za-z0-9-]+$")  # a field of an ICBHI file name: no '_' (it separates the fields)


@dataclass(frozen=True)
class ExamOptions:
    """One patient's exam: who, which sites, how much clear audio each needs, where audio comes from."""

    patient: str
    out: Path
    sites: tuple[str, ...] = tuple(SITES)
    seconds: float = 20.0  # seconds of `ok` audio a site needs
    max_seconds: float | None = None  # longest take (default: twice `seconds`)
    session: str = "1b1"
    device_tag: str = "EdgeLung"  # the device field of the file names
    device: str | None = None  # input device (as `stream --device`)
    replay_dir: Path | None = None  # one file per site (Al.wav, Pl.flac, ...; Al-2.wav for a second take)
    realtime: bool = False
    redo: str = "ask"
    attempts: int = 3
    display: bool = True
    pages: bool = True  # per-site recording pages (`edge-lung report`)

    def __post_init__(self) -> None:
        for name in ("patient", "session", "device_tag"):
            if not _TAG.match(str(getattr(self, name))):
                raise ValueError(f"--{name.replace('_', '-')}: expected letters, digits or '-' (it goes into "
                                 f"ICBHI file names), got {getattr(self, name)!r}")
        unknown = [s for s in self.sites if s not in SITES]
        if unknown or not self.sites or len(set(self.sites)) != len(self.sites):
            raise ValueError(f"--sites: expected distinct names from {','.join(SITES)}, got {','.join(self.sites)}")
        if not (math.isfinite(self.seconds) and self.seconds > 0):
            raise ValueError(f"--seconds: expected seconds > 0, got {self.seconds}")
        if self.max_seconds is not None and not self.max_seconds >= self.seconds:
            raise ValueError(f"--max-seconds: expected >= --seconds ({self.seconds}), got {self.max_seconds}")
        if self.redo not in REDO:
            raise ValueError(f"--redo: expected one of {', '.join(REDO)}, got {self.redo!r}")
        if int(self.attempts) != self.attempts or self.attempts < 1:
            raise ValueError(f"--attempts: expected a whole number >= 1, got {self.attempts}")
        if self.realtime and self.replay_dir is None:
            raise ValueError("--realtime: expected together with --replay-dir DIR")

    @property
    def take_s(self) -> float:
        return self.max_seconds if self.max_seconds is not None else 2 * self.seconds

    @property
    def stem(self) -> str:
        return f"{self.patient}_{self.session}"

    def recording(self, site: str) -> Path:
        """`{patient}_{session}_{site}_sc_{device}.flac`: ICBHI's pattern (sc: one chest piece, site after site)."""
        return Path(self.out) / f"{self.stem}_{site}_sc_{self.device_tag}.flac"


@dataclass
class SiteResult:
    """What one site gave: its status and, for a kept take, its figures."""

    site: str
    status: str = "missing"  # ok | poor (kept with too little clear audio) | skipped | interrupted | missing
    takes: int = 0
    recording: str | None = None  # file name inside the exam folder
    page: str | None = None  # its recording page, relative to the exam folder
    audio_s: float = 0.0
    ok_s: float = 0.0
    windows: int = 0
    flagged: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    label: str | None = None
    p_abnormal: float | None = None
    abnormal: bool | None = None
    advice: str = ""

    @property
    def name(self) -> str:
        return SITES[self.site]

    @property
    def examined(self) -> bool:
        return self.status in ("ok", "poor") and self.label is not None


@dataclass
class ExamResult:
    """The patient summary: every requested site, the overall finding, and where it was written."""

    patient: str
    session: str
    sites: list[SiteResult]
    seconds: float
    threshold: float
    labels: tuple[str, ...]
    interrupted: bool = False
    finding: dict[str, Any] = field(default_factory=dict)
    json_path: Path | None = None
    page_path: Path | None = None

    @property
    def missing(self) -> list[str]:
        return [s.site for s in self.sites if s.status in ("missing", "interrupted")]

    def as_dict(self) -> dict[str, Any]:
        return {
            "patient": self.patient,
            "session": self.session,
            "seconds_needed": self.seconds,
            "threshold": self.threshold,
            "labels": list(self.labels),
            "interrupted": self.interrupted,
            "missing": self.missing,
            "finding": self.finding,
            "sites": [{"site": s.site, "name": s.name, **{k: v for k, v in asdict(s).items() if k != "site"}}
                      for s in self.sites],
        }


class SiteTally:
    """Decision sink of one take: seconds of `ok` audio (new audio per window), verdicts, mean probabilities.

    Sets `stop` once `need_s` of `ok` audio were heard, so the take ends there.
    """

    def __init__(self, need_s: float, stop: threading.Event, abnormal: Sequence[int]) -> None:
        self.need_s, self.stop, self.abnormal = need_s, stop, list(abnormal)
        self.ok_s, self.windows, self.flagged = 0.0, 0, 0
        self.verdicts: dict[str, int] = {}
        self._sum: np.ndarray | None = None
        self._ends: dict[int, int] = {}  # per segment: end of the last window (model-rate index)

    def __call__(self, d: Decision) -> None:
        w = d.window
        new = w.end - max(w.start, self._ends.get(w.segment, w.start))
        self._ends[w.segment] = w.end
        self.windows += 1
        self.verdicts[d.verdict] = self.verdicts.get(d.verdict, 0) + 1
        if d.verdict != OK:
            return
        self.ok_s += new / w.sample_rate
        self.flagged += int(d.flag)
        self._sum = d.probabilities.astype(np.float64) if self._sum is None else self._sum + d.probabilities
        if self.ok_s >= self.need_s:
            self.stop.set()

    @property
    def heard(self) -> bool:
        return self.ok_s >= self.need_s - 1e-6

    def mean_probabilities(self) -> np.ndarray | None:
        ok = self.verdicts.get(OK, 0)
        return None if self._sum is None else self._sum / ok

    def advice(self) -> str:
        """Why the take fell short: the commonest failing verdict's advice, else that it was too short."""
        failing = {v: n for v, n in self.verdicts.items() if v != OK}
        if failing:
            worst = max(failing, key=failing.get)
            return f"{failing[worst]} of {self.windows} windows {worst}: {GUIDANCE[worst]}"
        return "the recording ended too soon: hold the chest piece longer"


class Prompter:
    """Questions on `say`, answers one line each from `answers` (stdin); an empty line or the end of input
    takes the default, so a piped or closed stdin never hangs the exam."""

    def __init__(self, answers: TextIO, say: Callable[[str], None]) -> None:
        self.answers, self.say = answers, say

    def ask(self, question: str, choices: dict[str, str], default: str) -> str:
        keys = "/".join(f"[{k}]{word[1:]}" for k, word in choices.items())
        for _ in range(3):
            self.say(f"{question} {keys} (default {choices[default]})")
            line = self.answers.readline()
            key = line.strip().lower()[:1]
            if not line or not key:
                return default
            if key in choices:
                return key
            self.say(f"expected one of {', '.join(choices)}, got {line.strip()!r}")
        return default


class ExamInterrupted(KeyboardInterrupt):
    """Ctrl-C during an exam; `result` is the summary written with every finished site."""

    def __init__(self, result: ExamResult) -> None:
        super().__init__(f"exam interrupted; missing sites: {', '.join(result.missing) or 'none'}")
        self.result = result


def replay_files(replay_dir: Path, sites: Sequence[str]) -> dict[str, Path]:
    """The file of each site (`Al.wav` or `Al.flac`); `ValueError` naming every missing one."""
    found, missing = {}, []
    for site in sites:
        paths = [Path(replay_dir) / f"{site}{ext}" for ext in AUDIO_SUFFIXES]
        hit = next((p for p in paths if p.is_file()), None)
        if hit is None:
            missing.append(site)
        else:
            found[site] = hit
    if missing:
        raise ValueError(f"--replay-dir {replay_dir}: expected one file per site, no "
                         f"{', '.join(f'{s}.wav/.flac' for s in missing)}")
    return found


def take_file(first: Path, take: int) -> Path:
    """The replayed file of a take: `Al-2.wav` for the second take when it exists, else the first file again."""
    for ext in AUDIO_SUFFIXES:
        again = first.with_name(f"{first.stem}-{take}{ext}")
        if take > 1 and again.is_file():
            return again
    return first


def check_out_dir(opts: ExamOptions) -> None:
    """Create the exam folder; refuse one holding this patient's session already (never overwrite an exam)."""
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    taken = sorted(p.name for p in out.glob(f"{opts.stem}_*"))
    if taken:
        raise ValueError(f"--out {out}: holds an exam of patient {opts.patient} session {opts.session} already "
                         f"({', '.join(taken[:3])}); choose another --session or --out")


class _Exam:
    """State of one `run_exam` call (kept in a class so each step stays short)."""

    def __init__(self, classifier, opts: ExamOptions, answers: TextIO, say, web: LiveWeb | None, stop) -> None:
        self.clf, self.opts, self.say, self.web, self.stop = classifier, opts, say, web, stop
        self.prompter = Prompter(answers, say)
        self.files = replay_files(opts.replay_dir, opts.sites) if opts.replay_dir is not None else {}
        self.result = ExamResult(opts.patient, opts.session, [SiteResult(s) for s in opts.sites], opts.seconds,
                                 classifier.cfg.threshold, classifier.labels)

    def publish(self, current: str | None, prompt: str, status: dict[str, str] | None = None) -> None:
        """The exam's progress on the phone page (if any)."""
        if self.web is None:
            return
        status = status or {}
        done = sum(s.status not in ("missing",) for s in self.result.sites)
        self.web.event({
            "type": "exam", "patient": self.opts.patient, "current": current, "prompt": prompt,
            "progress": f"{min(done + 1, len(self.result.sites))}/{len(self.result.sites)}",
            "sites": [{"site": s.site, "name": s.name, "status": status.get(s.site, _chip(s))}
                      for s in self.result.sites],
        })

    def run(self) -> ExamResult:
        for k, site in enumerate(self.result.sites):
            if self.stop is not None and self.stop.is_set():
                raise KeyboardInterrupt
            self.say(f"site {k + 1}/{len(self.result.sites)}: {site.site} ({site.name})")
            self.examine(site)
        return self.result

    def examine(self, site: SiteResult) -> None:
        for take in range(1, self.opts.attempts + 1):
            site.takes = take
            prompt = f"{site.site} ({site.name}): place the chest piece" + (f", take {take}" if take > 1 else "")
            self.publish(site.site, prompt, {site.site: "recording"})
            if self.opts.replay_dir is None and self.opts.redo == "ask":
                if self.prompter.ask(f"{prompt}; Enter starts", {"r": "record", "s": "skip"}, "r") == "s":
                    site.status = "skipped"
                    return
            tally = self.record(site, take)
            if tally.heard:
                site.status, site.advice = "ok", ""
                return
            site.advice = tally.advice()
            self.say(f"{site.site}: only {tally.ok_s:.1f} of {self.opts.seconds:g} s heard clearly ({site.advice})")
            choice = self.choose(site, take)
            if choice != "r":
                site.status = "poor" if choice == "k" else "skipped"
                return

    def choose(self, site: SiteResult, take: int) -> str:
        """k(eep), r(edo) or s(kip) after a short take, by the `redo` policy; no redo past `attempts`."""
        last = take >= self.opts.attempts
        if self.opts.redo == "never" or (self.opts.redo == "auto" and last):
            return "k"
        if self.opts.redo == "auto":
            return "r"
        self.publish(site.site, f"{site.site}: {site.advice}. Keep, redo or skip?", {site.site: "poor"})
        choices = {"k": "keep", "s": "skip"} if last else {"k": "keep", "r": "redo", "s": "skip"}
        return self.prompter.ask(f"{site.site}: keep, redo or skip?", choices, "k")

    def record(self, site: SiteResult, take: int) -> SiteTally:
        """One take: the live path with the tally, recorder and phone page; its figures into `site`."""
        path = self.opts.recording(site.site)
        replay = take_file(self.files[site.site], take) if self.files else None
        stream_opts = StreamOptions(
            device=None if replay else self.opts.device, replay=replay, realtime=self.opts.realtime, record=path,
            duration_s=self.opts.take_s, display=self.opts.display, overwrite=True,
        )
        heard = threading.Event()
        tally = SiteTally(self.opts.seconds, heard, self.clf.model.info.abnormal_indices)
        sinks = [tally] + ([self.web] if self.web is not None else [])
        events = [self.web.event] if self.web is not None else []
        summary = stream_session(self.clf, stream_opts, stop=heard, on_decision=sinks, on_event=events)
        self.fill(site, tally, summary.seconds, path)
        if summary.stopped_by == "interrupted":
            site.status = "interrupted"
            raise KeyboardInterrupt
        return tally

    def fill(self, site: SiteResult, tally: SiteTally, audio_s: float, path: Path) -> None:
        site.recording = path.name if path.is_file() else None
        site.audio_s, site.ok_s = round(audio_s, 3), round(tally.ok_s, 3)
        site.windows, site.flagged, site.verdicts = tally.windows, tally.flagged, dict(tally.verdicts)
        mean = tally.mean_probabilities()
        if mean is None:
            site.label = site.p_abnormal = site.abnormal = None
            return
        p_abn = float(mean[self.clf.model.info.abnormal_indices].sum())
        site.label = self.clf.labels[int(np.argmax(mean))]
        site.p_abnormal, site.abnormal = round(p_abn, 4), p_abn >= self.clf.cfg.threshold


def _chip(s: SiteResult) -> str:
    """A site's word on the phone page: its status, or `abnormal` for an examined site that is."""
    return "abnormal" if s.examined and s.abnormal else s.status


def run_exam(
    classifier: StreamingClassifier,
    opts: ExamOptions,
    answers: TextIO | None = None,
    say: Callable[[str], None] | None = None,
    web: str | None = None,
    stop: threading.Event | None = None,
) -> ExamResult:
    """`edge-lung exam`: every site in turn, then the summary (JSON + patient page + recording pages).

    Args:
        answers: where prompt answers come from (default stdin); one line per answer.
        say: where prompts and notes go (default stderr).
        web: HOST:PORT of the phone page (sites, prompts, progress and the live decisions).
        stop: set it to end the exam before the next site, as Ctrl-C does.

    Returns:
        The summary; `ExamInterrupted` carries it when the exam was cut (finished sites kept, the rest missing).
    """
    say = say or (lambda text: print(text, file=sys.stderr, flush=True))
    check_out_dir(opts)
    with ExitStack() as stack:
        page = None
        if web is not None:
            page = stack.enter_context(LiveWeb(WebConfig.parse(web), title=f"exam {opts.patient}"))
            page.announce()
        exam = _Exam(classifier, opts, answers or sys.stdin, say, page, stop)
        try:
            exam.run()
        except KeyboardInterrupt:
            exam.result.interrupted = True
        finish(classifier, opts, exam.result)
        exam.publish(None, exam.result.finding["text"])
    if exam.result.interrupted:
        raise ExamInterrupted(exam.result)
    return exam.result


def finish(classifier: StreamingClassifier, opts: ExamOptions, result: ExamResult) -> None:
    """The recording pages of the kept takes, the finding, the JSON summary and the patient page."""
    kept = [s for s in result.sites if s.recording is not None and s.status in ("ok", "poor", "skipped")]
    if opts.pages and kept:
        reports = write_report(classifier, [Path(opts.out) / s.recording for s in kept], Path(opts.out) / "pages")
        for s, rep in zip(kept, reports, strict=True):
            s.page = None if rep.error is not None else f"pages/{rep.page_name}"
    result.finding = finding(result)
    result.json_path = Path(opts.out) / f"{opts.stem}_exam.json"
    result.page_path = Path(opts.out) / f"{opts.stem}_exam.html"
    atomic_write_json(result.json_path, result.as_dict())
    atomic_write_text(result.page_path, render_patient_page(result))


def finding(result: ExamResult) -> dict[str, Any]:
    """abnormal (any examined site is), normal (every site heard well, none abnormal) or incomplete."""
    abnormal = [s.site for s in result.sites if s.examined and s.abnormal]
    poor = [s.site for s in result.sites if s.status == "poor"]
    unheard = [s.site for s in result.sites if s.status in ("skipped", "missing", "interrupted")]
    if abnormal:
        outcome, text = "abnormal", f"abnormal sounds at {', '.join(abnormal)}"
    elif not poor and not unheard:
        outcome, text = "normal", "no abnormal sounds at any site"
    else:
        outcome, text = "incomplete", "no abnormal sounds where heard"
    if poor:
        text += f"; poorly heard: {', '.join(poor)}"
    if unheard:
        text += f"; not examined: {', '.join(unheard)}"
    return {"result": outcome, "text": text, "abnormal_sites": abnormal, "poor_sites": poor, "unheard_sites": unheard}


def summary_lines(result: ExamResult) -> list[str]:
    """The terminal's closing lines: one per site, then the finding and the files."""
    lines = []
    for s in result.sites:
        figures = (f"{s.ok_s:.1f}/{result.seconds:g} s clear, {s.flagged}/{s.windows} windows flagged, class "
                   f"{s.label}, mean P(abnormal) {s.p_abnormal:.2f}: {'ABNORMAL' if s.abnormal else 'normal'}"
                   if s.examined else s.advice)
        lines.append(f"{s.site:2} {s.status:11} {figures}")
    lines.append(f"patient {result.patient}: {result.finding.get('result', '?')} ({result.finding.get('text', '')})")
    if result.interrupted:
        lines.append(f"interrupted: missing {', '.join(result.missing) or 'none'}")
    lines.append(f"summary: {result.page_path}  {result.json_path}")
    return lines


# --------------------------------------------------------------------------- the patient page

_COLOURS = {"normal": "#4c4", "abnormal": "#e44", "poor": "#fc4", "unheard": "#ccc"}
# (x, y) of each site on two 150 x 200 torsos: the front as one faces the patient (their right on the
# left of the picture), the back as one stands behind them (their left on the left).
_POSITIONS = {"Tc": (75, 38), "Ar": (50, 85), "Al": (100, 85), "Lr": (18, 130), "Ll": (132, 130),
              "Pl": (210, 95), "Pr": (260, 95)}
_CSS = """body{font-family:sans-serif;margin:1.5em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:2px 7px;font-size:90%}
.bad{color:#b00}.ok{color:#070}.note{color:#555;font-size:90%}svg{max-width:420px;width:100%;height:auto}"""


def site_colour(s: SiteResult) -> str:
    """Abnormal red (even when poorly heard), poor amber, normal green, not examined grey."""
    if s.examined and s.abnormal:
        return _COLOURS["abnormal"]
    if s.status == "poor":
        return _COLOURS["poor"]
    return _COLOURS["normal"] if s.examined else _COLOURS["unheard"]


def chest_svg(sites: Sequence[SiteResult]) -> str:
    """Inline SVG: front and back torsos, a disc per examined site coloured by its result, linked to its page."""
    torso = ('<path d="M{x0} 20 Q{xm} 0 {x1} 20 L{x2} 60 L{x2} 190 L{x3} 190 L{x3} 60 Z" fill="#f6efe6" '
             'stroke="#998"/>')
    parts = [torso.format(x0=45, xm=75, x1=105, x2=140, x3=10), torso.format(x0=205, xm=235, x1=265, x2=300, x3=170),
             '<text x="75" y="205" text-anchor="middle" font-size="11">front</text>',
             '<text x="235" y="205" text-anchor="middle" font-size="11">back</text>']
    for s in sites:
        x, y = _POSITIONS[s.site]
        tip = f"{s.site} ({s.name}): {s.status}" + (f", {s.label}, P(abnormal) {s.p_abnormal:.2f}" if s.examined
                                                     else "")
        disc = (f'<circle cx="{x}" cy="{y}" r="15" fill="{site_colour(s)}" stroke="#333"><title>'
                f'{html.escape(tip)}</title></circle><text x="{x}" y="{y + 4}" text-anchor="middle" '
                f'font-size="11">{s.site}</text>')
        parts.append(f'<a href="{html.escape(s.page)}">{disc}</a>' if s.page else disc)
    return f'<svg viewBox="0 0 310 215" role="img" aria-label="chest sites">{"".join(parts)}</svg>'


def render_patient_page(result: ExamResult) -> str:
    """The patient page: the finding, the chest diagram, a row per site linked to its recording and page."""
    f = result.finding
    cls = "bad" if f.get("result") == "abnormal" else ("ok" if f.get("result") == "normal" else "note")
    rows = []
    for s in result.sites:
        rec = f'<a href="{html.escape(s.recording)}">{html.escape(s.recording)}</a>' if s.recording else "-"
        page = f'<a href="{html.escape(s.page)}">page</a>' if s.page else "-"
        cells = [s.site, s.name, s.status, f"{s.ok_s:.1f} / {result.seconds:g}", f"{s.flagged} / {s.windows}",
                 s.label or "-", "-" if s.p_abnormal is None else f"{s.p_abnormal:.2f}", s.advice]
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + f"<td>{rec}</td>"
                    f"<td>{page}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("site", "", "status", "clear s", "flagged windows", "class",
                                              "P(abnormal)", "advice", "recording", "report"))
    legend = " ".join(f'<span style="background:{c};padding:0 6px">&nbsp;</span> {n}' for n, c in _COLOURS.items())
    interrupted = (f'<p class="bad">Interrupted: missing {html.escape(", ".join(result.missing))}.</p>'
                   if result.interrupted else "")
    body = (f"<h1>Patient {html.escape(result.patient)}, session {html.escape(result.session)}</h1>"
            f'<p class="{cls}"><b>{html.escape(f.get("result", ""))}</b>: {html.escape(f.get("text", ""))}</p>'
            f"{interrupted}{chest_svg(result.sites)}<p class=\"note\">{legend}</p>"
            f"<table><tr>{head}</tr>{''.join(rows)}</table>"
            f'<p class="note">Each site needs {result.seconds:g} s of audio the quality gate judged ok; its class is '
            f"the mean of its windows' probabilities (flag: P(abnormal) &ge; {result.threshold:.2f}). A screening "
            "aid, not a diagnosis.</p>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>edge-lung exam '
            f"{html.escape(result.patient)}</title><style>{_CSS}</style></head><body>\n{body}\n</body></html>\n")
