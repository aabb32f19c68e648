"""`corrections.csv` beside a report (issue 27): every decided window, for a clinician to correct.

One row per window the model decided (the quality gate's refusals are left out: nothing was decided):

    file,start,end,patient,device,model_label,p_abnormal,true_label

`model_label` is the model's decision, `true_label` is left empty. A clinician fills `true_label`
(normal | crackle | wheeze | both, or a synonym of `data.manifest.LABEL_SYNONYMS`) where they know
it, and optionally `patient` and `device`; the file is then a manifest (`data.manifest`: a filled
`true_label` is the label, an empty one skips the row), so `edge-lung adapt RUN --data corrections.csv`
adapts the model on those windows. Times are seconds in the recording, a padded last window ends at
the audio's end. `file` is the recording's absolute path, so the CSV may be moved.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from edge_lung.fileio import atomic_write_text
from edge_lung.runtime.offline.classify import FileResult

CORRECTIONS_FILE = "corrections.csv"
COLUMNS = ("file", "start", "end", "patient", "device", "model_label", "p_abnormal", "true_label")


def corrections_rows(result: FileResult) -> list[list[str]]:
    """One row per decided window of one recording (`true_label` empty)."""
    path = result.path.resolve() if result.path.exists() else result.path
    rows = []
    for d in result.decisions:
        if d.verdict != "ok":
            continue
        end = min(d.window.end_s, result.duration_s) if result.duration_s > 0 else d.window.end_s
        rows.append([str(path), f"{d.window.start_s:.3f}", f"{end:.3f}", "", "", d.label,
                     f"{d.p_abnormal:.4f}", ""])
    return rows


def write_corrections(results: Sequence[FileResult], out_dir: str | Path) -> Path:
    """`out_dir`/corrections.csv for the decided windows of `results` (written whole, atomically)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for result in results:
        writer.writerows(corrections_rows(result))
    path = Path(out_dir) / CORRECTIONS_FILE
    atomic_write_text(path, buffer.getvalue())
    return path
