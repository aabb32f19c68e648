"""Your own recordings as a database (issue 27): a manifest of labelled spans, and layout detection.

A manifest is a CSV (header row) or JSON-lines file, one labelled span of one audio file per row:

    file,start,end,label,patient,device,location,split
    chest/p01_a.wav,0.0,2.4,normal,p01,MyScope,Tc,
    chest/p01_a.wav,2.4,5.1,crackle,p01,MyScope,Tc,
    chest/p02_b.wav,,,wheeze,p02,MyScope,,

`file`, `label` are required; `start`/`end` (seconds) may both be empty: the row labels the whole
file. `patient`, `device`, `location`, `split` (train|val|test) are optional. Paths are relative to
the manifest's folder. A column `true_label` (what `corrections.csv` from `edge-lung report` has,
`runtime.explain.corrections`) takes precedence over `label`; a row whose `true_label` is empty is
unlabelled and skipped (a note, not an error).

Labels are the four ICBHI classes `normal | crackle | wheeze | both`; other vocabularies map through
`LABEL_SYNONYMS` (case and spacing ignored): continuous adventitious sounds (wheeze, rhonchi, stridor,
"CAS") are "wheeze", discontinuous ones (fine or coarse crackles, rales, "DAS") "crackle", both at
once "both". A label outside the table is a `bad_label` problem naming the row, never a guess.

`--data` may name the manifest file itself or a folder holding `manifest.csv` or `manifest.jsonl`;
`detect_layout` tells these apart from the SPRSound layout (`data.sprsound`) and the ICBHI layout.
This module only parses: `data.icbhi` turns the rows into the same `Recording`s every command uses.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_lung.config import LABELS
from edge_lung.fileio import atomic_path

MANIFEST_NAMES = ("manifest.csv", "manifest.jsonl")
MANIFEST_SUFFIXES = (".csv", ".jsonl")
COLUMNS = ("file", "start", "end", "label", "patient", "device", "location", "split")
TRUE_LABEL = "true_label"
ROW_SPLITS = ("train", "val", "test")
LAYOUTS = ("icbhi", "manifest", "sprsound")

LABEL_SYNONYMS: dict[str, str] = {
    "normal": "normal", "none": "normal", "healthy": "normal", "clean": "normal", "0": "normal",
    "crackle": "crackle", "crackles": "crackle", "fine crackle": "crackle", "coarse crackle": "crackle",
    "rales": "crackle", "rale": "crackle", "das": "crackle", "discontinuous": "crackle", "1": "crackle",
    "wheeze": "wheeze", "wheezes": "wheeze", "rhonchi": "wheeze", "rhonchus": "wheeze", "stridor": "wheeze",
    "cas": "wheeze", "continuous": "wheeze", "2": "wheeze",
    "both": "both", "wheeze & crackle": "both", "wheeze+crackle": "both", "crackle & wheeze": "both",
    "crackle+wheeze": "both", "cas & das": "both", "3": "both",
}
"""Other vocabularies -> the four classes (keys lower-case, single-spaced). Numbers are ICBHI's class indices."""


@dataclass(frozen=True)
class Span:
    """One labelled span of one audio file (times None: the whole file), as a layout reader found it."""

    file: Path
    start_s: float | None
    end_s: float | None
    label: str
    patient: str | None = None
    device: str | None = None
    location: str | None = None
    split: str | None = None
    where: str = ""

    def __post_init__(self) -> None:
        if self.label not in LABELS:
            raise ValueError(f"{self.where or self.file}: label: expected one of {LABELS}, got {self.label!r}")


@dataclass
class LayoutRead:
    """What a layout reader found: the spans, problems as (file, code, reason), and the label mapping used."""

    layout: str
    source: Path
    spans: list[Span] = field(default_factory=list)
    problems: list[tuple[str, str, str]] = field(default_factory=list)
    label_map: dict[str, str] = field(default_factory=dict)


def normalise_label(text: str, synonyms: dict[str, str] = LABEL_SYNONYMS) -> str | None:
    """'Fine  Crackle' -> 'crackle'; None for a label the table does not know."""
    return synonyms.get(" ".join(str(text).strip().lower().split()))


def detect_layout(path: str | Path) -> str:
    """'manifest' (a .csv/.jsonl file, or a folder with manifest.csv/.jsonl), 'sprsound' (a folder whose
    annotations are .json files beside .wav files, no ICBHI .txt) or 'icbhi' (anything else)."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        return "manifest"
    if not path.is_dir():
        return "icbhi"
    if manifest_file(path) is not None:
        return "manifest"
    has_json = next((True for p in path.rglob("*.json") if p.is_file()), False)
    has_txt = next((True for p in path.rglob("*.txt") if p.is_file()), False)
    return "sprsound" if has_json and not has_txt else "icbhi"


def manifest_file(path: str | Path) -> Path | None:
    """The manifest `path` names: the file itself, or manifest.csv / manifest.jsonl inside a folder."""
    path = Path(path)
    if path.is_file():
        return path
    return next((path / n for n in MANIFEST_NAMES if (path / n).is_file()), None)


def read_manifest(path: str | Path) -> LayoutRead:
    """Every row of a manifest as a `Span`, and every unusable row as a problem naming its line."""
    source = manifest_file(path)
    if source is None:
        raise ValueError(f"{path}: expected a manifest (.csv or .jsonl) or a folder holding one of {MANIFEST_NAMES}")
    out = LayoutRead("manifest", source, label_map=dict(LABEL_SYNONYMS))
    for where, row in _rows(source, out):
        span = _span(source, where, row, out)
        if span is not None:
            out.spans.append(span)
    return out


def _rows(source: Path, out: LayoutRead) -> list[tuple[str, dict[str, Any]]]:
    """(where, row dict) for every row of a CSV (header row) or JSON-lines manifest."""
    text = source.read_text()
    if source.suffix.lower() == ".jsonl":
        rows = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                out.problems.append((str(source), "bad_line", f"line {lineno}: not JSON ({exc}); skipped"))
                continue
            if not isinstance(row, dict):
                out.problems.append((str(source), "bad_line", f"line {lineno}: expected a JSON object; skipped"))
                continue
            rows.append((f"line {lineno}", row))
        return rows
    reader = csv.DictReader(text.splitlines())
    missing = {"file"} - set(reader.fieldnames or ()) or (
        {"label"} - set(reader.fieldnames or ()) if TRUE_LABEL not in (reader.fieldnames or ()) else set())
    if missing:
        raise ValueError(f"{source}: expected a CSV header with columns {COLUMNS[:4]} (and optional "
                         f"{COLUMNS[4:]}), got {reader.fieldnames}; missing {sorted(missing)}")
    return [(f"line {i}", row) for i, row in enumerate(reader, 2)]


def _span(source: Path, where: str, row: dict[str, Any], out: LayoutRead) -> Span | None:
    """One row as a `Span`, or None with the problem recorded."""

    def cell(key: str) -> str:
        value = row.get(key)
        return "" if value is None else str(value).strip()

    if not cell("file"):
        out.problems.append((str(source), "bad_line", f"{where}: no 'file'; skipped"))
        return None
    raw = cell(TRUE_LABEL) if TRUE_LABEL in row else cell("label")
    if not raw:
        out.problems.append((str(source), "unlabelled", f"{where}: {cell('file')} has no "
                             f"{'true_label' if TRUE_LABEL in row else 'label'}; skipped"))
        return None
    label = normalise_label(raw)
    if label is None:
        out.problems.append((str(source), "bad_label", f"{where}: label {raw!r}: expected one of {LABELS} or a "
                             "synonym in data.manifest.LABEL_SYNONYMS; skipped"))
        return None
    times = _times(cell("start"), cell("end"))
    if isinstance(times, str):
        out.problems.append((str(source), "bad_values", f"{where}: {times}; skipped"))
        return None
    split = cell("split").lower() or None
    if split is not None and split not in ROW_SPLITS:
        out.problems.append((str(source), "bad_values", f"{where}: split: expected one of {ROW_SPLITS} or empty, "
                             f"got {split!r}; skipped"))
        return None
    file = Path(cell("file"))
    return Span(file if file.is_absolute() else source.parent / file, times[0], times[1], label,
                cell("patient") or None, cell("device") or None, cell("location") or None, split,
                f"{source.name} {where}")


def _times(start: str, end: str) -> tuple[float | None, float | None] | str:
    """(start, end) in seconds, (None, None) for the whole file, or the reason they are unusable."""
    if not start and not end:
        return None, None
    try:
        a, b = float(start), float(end)
    except ValueError:
        return f"expected numeric start and end seconds (or both empty), got {start!r}, {end!r}"
    if not (math.isfinite(a) and math.isfinite(b)) or a < 0 or b <= a:
        return f"expected finite 0 <= start < end, got {start!r}, {end!r}"
    return a, b


def write_manifest(spans: list[Span], out_dir: str | Path) -> Path:
    """`out_dir`/manifest.csv for `spans` (paths relative to `out_dir` where they lie inside it, else absolute)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / MANIFEST_NAMES[0]
    root = out_dir.resolve()
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for s in spans:
            file = s.file.resolve()
            name = file.relative_to(root) if file.is_relative_to(root) else file
            writer.writerow([str(name), "" if s.start_s is None else f"{s.start_s:.4f}",
                             "" if s.end_s is None else f"{s.end_s:.4f}", s.label, s.patient or "",
                             s.device or "", s.location or "", s.split or ""])
    return path
