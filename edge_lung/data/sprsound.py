"""The SPRSound layout (Zhang et al., SJTU Paediatric Respiratory Sound database, 2022) as spans (issue 27).

One JSON annotation per recording, beside (or in a sibling folder of) its 8 kHz WAV of the same stem:

    {"record_annotation": "CAS", "event_annotation": [{"start": "1030", "end": "2480", "type": "Wheeze"}, ...]}

Event times are in milliseconds (numbers or numeric strings). File stems are
`{patient}_{age}_{gender}_{location}_{number}` (e.g. `65036089_4.4_1_p1_1033`): the patient and the chest
location are read from them; a stem that does not split so is its own patient (reported as a note).

Events map to the four ICBHI classes by `EVENT_LABELS`, the mapping a run records in its config.json:
Normal -> normal; Fine Crackle, Coarse Crackle -> crackle; Wheeze, Rhonchi, Stridor (continuous
adventitious sounds) -> wheeze; Wheeze & Crackle (also spelt Wheeze+Crackle) -> both. An event type
outside the table is a `bad_label` problem. The split comes from the folder names (a path part
starting with "train" is train, "test" or "valid" is test; SPRSound ships `train_*` and `valid_*`/`test_*`
folders); recordings under neither go to the patient-grouped split (train, with whole patients in val).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge_lung.data.manifest import LayoutRead, Span, normalise_label

DEVICE = "Yunting"
"""SPRSound was recorded with the Yunting model II electronic stethoscope."""

EVENT_LABELS: dict[str, str] = {
    "normal": "normal",
    "fine crackle": "crackle",
    "coarse crackle": "crackle",
    "wheeze": "wheeze",
    "rhonchi": "wheeze",
    "stridor": "wheeze",
    "wheeze & crackle": "both",
    "wheeze+crackle": "both",
}
"""SPRSound event type (lower case) -> ICBHI class."""


def read_sprsound(root: str | Path) -> LayoutRead:
    """Every event of every recording under `root` as a `Span`; problems name the file and the event."""
    root = Path(root)
    out = LayoutRead("sprsound", root, label_map=dict(EVENT_LABELS))
    wavs = {p.stem: p for p in sorted(root.rglob("*")) if p.suffix.lower() == ".wav" and p.is_file()}
    jsons = sorted(p for p in root.rglob("*.json") if p.is_file())
    for path in jsons:
        wav = wavs.get(path.stem)
        if wav is None:
            out.problems.append((str(path), "missing_wav", "annotation without its recording (no .wav of this "
                                 "name under the database folder); skipped"))
            continue
        out.spans.extend(_events(path, wav, root, out))
    for stem in sorted(set(wavs) - {p.stem for p in jsons}):
        out.problems.append((str(wavs[stem]), "missing_txt", "recording without its annotation (.json); skipped"))
    return out


def _events(path: Path, wav: Path, root: Path, out: LayoutRead) -> list[Span]:
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        out.problems.append((str(path), "bad_line", f"not JSON ({exc}); skipped"))
        return []
    events = doc.get("event_annotation") if isinstance(doc, dict) else None
    if not isinstance(events, list):
        out.problems.append((str(path), "bad_columns", "expected an object with an 'event_annotation' list; skipped"))
        return []
    patient, location = _name_fields(path.stem)
    split = _split_of(path.relative_to(root))
    spans = []
    for i, event in enumerate(events):
        span = _event_span(path, wav, i, event, out)
        if span is not None:
            spans.append(Span(span.file, span.start_s, span.end_s, span.label, patient, DEVICE, location, split,
                              span.where))
    return spans


def _event_span(path: Path, wav: Path, i: int, event: Any, out: LayoutRead) -> Span | None:
    where = f"{path.name} event {i}"
    if not isinstance(event, dict):
        out.problems.append((str(path), "bad_line", f"event {i}: expected an object; skipped"))
        return None
    kind = str(event.get("type", ""))
    label = normalise_label(kind, EVENT_LABELS)
    if label is None:
        out.problems.append((str(path), "bad_label", f"event {i}: type {kind!r}: expected one of "
                             f"{sorted(EVENT_LABELS)} (data.sprsound.EVENT_LABELS); skipped"))
        return None
    try:
        start, end = float(event["start"]) / 1000.0, float(event["end"]) / 1000.0
    except (KeyError, TypeError, ValueError):
        out.problems.append((str(path), "bad_values", f"event {i}: expected numeric 'start' and 'end' in ms, got "
                             f"{event.get('start')!r}, {event.get('end')!r}; skipped"))
        return None
    if not 0 <= start < end:
        out.problems.append((str(path), "bad_values", f"event {i}: expected 0 <= start < end, got {start}-{end} s; "
                             "skipped"))
        return None
    return Span(wav, start, end, label, where=where)


def _name_fields(stem: str) -> tuple[str, str | None]:
    """(patient, location) from `patient_age_gender_location_number`; (stem, None) otherwise."""
    parts = stem.split("_")
    return (parts[0], parts[3]) if len(parts) == 5 else (stem, None)


def _split_of(relative: Path) -> str | None:
    """'train' or 'test' from the folder names of a path under the database root; None if neither."""
    for part in relative.parts[:-1]:
        low = part.lower()
        if low.startswith("train"):
            return "train"
        if low.startswith(("test", "valid")):
            return "test"
    return None
