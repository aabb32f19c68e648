"""Where decision events go: JSON lines (one flushed line each) and a compact live rich display."""

from __future__ import annotations

import json
import math
import sys
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from edge_lung.fileio import EVENTS_JSONL, check_output
from edge_lung.runtime.artifact.quality import Guidance
from edge_lung.runtime.live.stream import Decision


class JsonlWriter:
    """`--jsonl PATH`: one JSON object per line, flushed as written ('-' writes to stdout). An existing PATH is
    replaced only with `overwrite` and only if it is edge-lung JSON lines; an input path is refused."""

    def __init__(self, path: str | Path, overwrite: bool = False, inputs: Iterable[str | Path | None] = ()) -> None:
        self.path = str(path)
        if self.path == "-":
            self._file: TextIO = sys.stdout
            self._own = False
        else:
            # the writing policy: never an input, never a file edge-lung did not write (fileio.check_output)
            check_output(self.path, "--jsonl", EVENTS_JSONL, overwrite, inputs)
            try:
                self._file = open(self.path, "w", encoding="utf-8")  # closed in close()
            except OSError as exc:
                raise OSError(f"--jsonl {self.path}: cannot create ({exc.strerror or exc})") from exc
            self._own = True

    def write(self, event: dict[str, Any]) -> None:
        """One line, flushed; `OSError` naming --jsonl and the cause (a full disk) if it cannot be written."""
        try:
            self._file.write(json.dumps(event, separators=(",", ":")) + "\n")
            self._file.flush()
        except OSError as exc:
            raise OSError(f"--jsonl {self.path}: cannot write ({exc.strerror or exc})") from exc

    def __call__(self, decision: Decision) -> None:
        self.write(decision.to_dict())

    def close(self) -> None:
        if self._own and not self._file.closed:
            try:
                self._file.close()
            except OSError as exc:  # the last buffered bytes did not fit
                raise OSError(f"--jsonl {self.path}: cannot write ({exc.strerror or exc})") from exc

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LiveDisplay:
    """Last few decisions as a small table that redraws in place, with loss counters underneath.

    A window the quality gate stopped shows its verdict instead of a class, and the advice for it
    ("no signal: place the chest piece on the skin") is printed above the table, at most once per
    `advice_every_s` while the same verdict repeats.
    """

    def __init__(self, title: str, rows: int = 8, console=None, advice_every_s: float = 5.0) -> None:
        from rich.console import Console

        self.title = title
        self.console = console or Console(stderr=True)
        self._rows: deque[Decision] = deque(maxlen=rows)
        self._live = None
        self.guidance = Guidance(advice_every_s)

    def __enter__(self) -> LiveDisplay:
        from rich.live import Live

        self._live = Live(self._render(), console=self.console, refresh_per_second=4, transient=False)
        self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None

    def __call__(self, decision: Decision) -> None:
        self._rows.append(decision)
        advice = self.guidance.message(decision.verdict)
        if advice is not None:
            self.console.print(f"[bold yellow]{decision.window.end_s:7.1f} s  {advice}[/]", highlight=False)
        if self._live is not None:
            self._live.update(self._render())

    def _render(self):
        from rich.table import Table

        if self._rows and getattr(self._rows[-1], "kind", "window") == "breath":
            return self._render_breaths(Table)
        table = Table(title=self.title, title_justify="left", expand=False, box=None, padding=(0, 1))
        for name, justify in (
            ("window s", "right"),
            ("label", "left"),
            ("P(abn)", "right"),
            ("smoothed", "left"),
            ("flag", "left"),
            ("feat ms", "right"),
            ("model ms", "right"),
        ):
            table.add_column(name, justify=justify)
        for d in self._rows:
            w = d.window
            flag = "[bold red]ABNORMAL[/]" if d.smoothed_flag else "[green]ok[/]"
            if d.verdict != "ok":
                flag = f"[bold yellow]{d.verdict}[/]"
            pad = "*" if w.padded else ""
            table.add_row(
                f"{w.start_s:7.1f}-{w.end_s:<7.1f}{pad}",
                d.label,
                _prob(d.p_abnormal),
                f"{d.smoothed_label} {_prob(d.smoothed_p_abnormal)}",
                flag,
                f"{d.feature_ms:.1f}",
                f"{d.model_ms:.1f}",
            )
        if self._rows:
            c = self._rows[-1].counters
            table.caption = (
                f"overflows {c['overflows']}  lost samples {c['lost_samples']}  gaps {c['gaps']} "
                f"({c['gap_s']:.1f} s)  skipped windows {c['skipped']}   * = cyclic-padded (under one window of audio)"
            )
            table.caption_justify = "left"
        return table


    def _render_breaths(self, table_class):
        """--decide breath: one row per breath (its label, P(abnormal)) and the respiratory rate."""
        table = table_class(title=self.title, title_justify="left", expand=False, box=None, padding=(0, 1))
        for name in ("breath", "seconds", "label", "P(abn)", "flag", "rate /min"):
            table.add_column(name)
        for d in self._rows:
            w = d.window
            flag = "[bold red]ABNORMAL[/]" if d.flag else "[green]ok[/]"
            if d.verdict != "ok":
                flag = f"[bold yellow]{d.verdict}[/]"
            rate = "-" if d.rate_bpm is None else f"{d.rate_bpm:.0f}"
            table.add_row(str(w.index), f"{w.start_s:7.1f}-{w.end_s:<7.1f}", d.label, _prob(d.p_abnormal), flag, rate)
        last = self._rows[-1]
        rate = "-" if last.rate_bpm is None else f"{last.rate_bpm:.0f}"
        table.caption = f"respiratory rate {rate} breaths/min (last 30 s); gaps {last.counters['gaps']}"
        table.caption_justify = "left"
        return table


def _prob(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"
