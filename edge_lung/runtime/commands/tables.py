"""Rich tables for the runtime commands' terminal output."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from edge_lung.runtime.live.runner import LiveSummary
from edge_lung.runtime.offline.classify import FileResult
from edge_lung.scoring import format_pct


def devices_table(devices: list) -> Table:
    """`edge-lung devices`: index, name, host API, channels, default and supported rates, stethoscope mark."""
    table = Table(title="Audio input devices", title_justify="left")
    for col in ("#", "name", "host API", "ch", "default Hz", "supported Hz", "capture Hz", "stethoscope?"):
        table.add_column(col)
    for d in devices:
        table.add_row(
            f"{d.index}{'*' if d.is_default else ''}",
            d.name,
            d.hostapi,
            str(d.channels),
            str(d.default_rate),
            ", ".join(str(r) for r in d.supported_rates) or "-",
            str(d.capture_rate),
            "[bold green]likely (USB audio)[/]" if d.likely_stethoscope else "",
        )
    table.caption = "* = system default input.  Use `edge-lung stream MODEL_DIR --device <# or name part>`."
    table.caption_justify = "left"
    return table


def classify_table(results: list[FileResult], labels: tuple[str, ...], threshold: float) -> Table:
    """`edge-lung classify`: one row per file; annotated recordings add cycle agreement columns."""
    annotated = any(r.cycles is not None for r in results)
    notes = any(r.note for r in results)
    table = Table(title=f"Windows per recording (flag: P(abnormal) >= {threshold:.2f})", title_justify="left")
    cols = ["file", "Hz", "sec", "win", "flag", "maxP", "quality"]
    cols += ["cycles", "agree%", "Se%", "Sp%"] if annotated else []
    cols += ["note"] if notes else []
    for col in cols:
        table.add_column(col, overflow="fold")
    for r in results:
        s = r.summary(labels)
        row = [r.path.name, str(r.input_rate), f"{r.duration_s:.1f}", str(s["windows"]), str(s["flagged_windows"])]
        row.append("-" if not r.decided else f"{s['max_p_abnormal']:.2f}")
        row.append(verdict_counts(s["verdicts"]))
        if annotated:
            row += [
                str(s.get("cycles", "-")),
                format_pct(s.get("class_agreement"), 0),
                format_pct(s.get("screening_sensitivity"), 0),
                format_pct(s.get("screening_specificity"), 0),
            ]
        if notes:
            row.append(r.note)
        table.add_row(*row)
    table.caption = ("win: windows; flag: windows flagged abnormal; maxP: highest P(abnormal); quality: windows per "
                     "signal-quality verdict (only 'ok' windows get a class)")
    if annotated:
        table.caption += "; agree/Se/Sp: annotated cycles vs overlapping windows"
    if any(r.decide == "breath" for r in results):
        table.caption += "; --decide breath: win, flag and quality count detected breaths (window mode runs beside "\
                         "them on annotated recordings for the agree/Se/Sp columns)"
    table.caption_justify = "left"
    return table


def pooled_lines(pooled: dict[str, Any]) -> list[str]:
    """Cycle agreement over all annotated recordings, with the screening curve to pick --threshold."""
    lines = [
        f"Annotated cycles: {pooled['cycles']} ({pooled['cycles_covered']} overlapped by a window)",
    ]
    if "screening_sensitivity" in pooled:
        lines.append(
            f"Screening at the chosen threshold: Se {format_pct(pooled['screening_sensitivity'], 0)}%  "
            f"Sp {format_pct(pooled['screening_specificity'], 0)}%  ({pooled['abnormal_cycles']} abnormal cycles)"
        )
    if "class_agreement" in pooled:
        lines.append(f"4-class agreement {pooled['class_agreement']:.1f}%  ICBHI score {pooled['icbhi_score']:.1f}")
    lines += breath_lines(pooled.get("breaths"))
    if "screening_curve" in pooled:
        lines.append("Threshold  Se%    Sp%   (cycle level, windows' overlap-weighted mean)")
        for row in pooled["screening_curve"][::2]:
            se, sp = format_pct(row["sensitivity"]), format_pct(row["specificity"])
            lines.append(f"  {row['threshold']:.2f}   {se}  {sp}")
    return lines


def breath_lines(breaths: dict[str, Any] | None) -> list[str]:
    """--decide breath on annotated recordings: how detected breaths match the cycles, and their Score."""
    if not breaths:
        return []
    lines = [
        f"Breaths: {breaths['detected']} detected inside the annotated stretches, {breaths['annotated']} annotated "
        f"cycles, {breaths['matched']} matched (IoU >= 0.5): precision {format_pct(breaths['precision'], 1)}%  "
        f"recall {format_pct(breaths['recall'], 1)}%  F1 {format_pct(breaths['f1'], 1)}%",
    ]
    if breaths.get("rate_mae_bpm") is not None:
        lines.append(f"Respiratory rate error (per recording, 60 / mean cycle length): "
                     f"{breaths['rate_mae_bpm']:.1f} breaths/min")
    if "icbhi_score" in breaths:
        lines.append(f"Per-breath decisions on the {breaths['matched_decided']} matched cycles: 4-class agreement "
                     f"{breaths['class_agreement']:.1f}%  ICBHI score {breaths['icbhi_score']:.1f} "
                     "(always-normal: 50; window mode's figure on all cycles is above)")
    return lines


def verdict_counts(verdicts: dict[str, int]) -> str:
    """'ok 12, clipping 3' ('-' for none), `ok` first."""
    order = sorted(verdicts, key=lambda v: (v != "ok", v))
    return ", ".join(f"{v} {verdicts[v]}" for v in order) or "-"


def summary_line(summary: LiveSummary) -> str:
    c = summary.counters
    speed = summary.seconds / summary.wall_s if summary.wall_s > 0 else float("nan")
    return (
        f"{summary.source}: {summary.seconds:.1f} s of audio at {summary.input_rate} Hz in {summary.wall_s:.1f} s "
        f"({speed:.1f}x real time), {summary.windows} windows ({verdict_counts(summary.verdicts)}), "
        f"{summary.flagged} flagged; "
        f"overflows {c.overflows}, lost samples {c.lost_samples}, gaps {c.gaps} ({c.gap_s:.1f} s), "
        f"skipped windows {c.skipped}, reconnects {summary.reconnects}; stopped: {summary.stopped_by}"
        + (f"; recorded: {', '.join(summary.recordings)}" if summary.recordings else "")
        + (f"; {summary.breaths} breaths ({verdict_counts(summary.breath_labels)}), respiratory rate "
           f"{'-' if summary.rate_bpm is None else f'{summary.rate_bpm:.0f}'}/min over the last 30 s"
           if summary.breaths else "")
        + "".join(f"\n[bold red]warning:[/] {w}" for w in summary.warnings)
    )
