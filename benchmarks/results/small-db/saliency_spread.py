"""How far the saliency acceptance check (tests/runtime/explain/test_saliency.py) spreads over demo models trained
with other seeds and thread counts: for each exported demo model, check_saliency over every held-out (test) recording of
its synthetic database, the cumulative hits/windows after each recording (sorted by name, as the test takes
them), for the model and for its shuffled-weights control.

    python saliency_spread.py OUT.json MAX_RECORDINGS LABEL=MODEL_DIR:DB_DIR [...]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from edge_lung.data.icbhi import Database
from edge_lung.runtime.commands.session import load_classifier
from edge_lung.runtime.explain.saliency import check_saliency
from edge_lung.runtime.live.stream import StreamConfig
from edge_lung.testing import shuffle_model_weights


def curve(model: Path, recordings: list[Path]) -> dict:
    """Cumulative (hits, windows) after each recording, and the seconds the whole check took."""
    steps: list[tuple[int, int]] = []

    def on_file(path: str, hits: int, windows: int) -> None:
        steps.append((hits, windows))
        print(path, hits, windows, flush=True)

    t0 = time.perf_counter()
    check_saliency(load_classifier(model, StreamConfig(), 1), recordings, on_file=on_file)
    return {"cumulative": steps, "seconds": time.perf_counter() - t0}


def main(out: str, max_recordings: int, specs: list[str]) -> None:
    results = {}
    for spec in specs:
        label, paths = spec.split("=", 1)
        model, db = (Path(p) for p in paths.split(":"))
        held_out = sorted(r.wav for r in Database.scan(db).recordings if r.split == "test")[:max_recordings]
        with tempfile.TemporaryDirectory() as tmp:
            shuffled = shuffle_model_weights(model, Path(tmp) / "shuffled")
            results[label] = {"recordings": [p.name for p in held_out], "real": curve(model, held_out),
                              "shuffled": curve(shuffled, held_out)}
        real = results[label]["real"]["cumulative"]
        print(label, "first 4:", real[min(3, len(real) - 1)], "all:", real[-1], "shuffled all:",
              results[label]["shuffled"]["cumulative"][-1], flush=True)
        Path(out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3:])
