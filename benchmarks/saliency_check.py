#!/usr/bin/env python3
"""Does the occlusion saliency point at the sound? Real model vs the same model with shuffled weights.

For every correctly flagged window (P(abnormal) >= threshold and a drawn crackle or wheeze in
its audio) of the held-out synthetic recordings, the saliency peak must overlap a drawn event
in time and frequency (`edge_lung.runtime.explain.saliency.check_saliency`). Prints the hit rate of the
model and of a copy whose weights are permuted (`edge_lung.testing.shuffle_model_weights`):
the aim is >= 80% for the model, and the control must miss it.

    .venv/bin/python benchmarks/saliency_check.py demo-out/model-int8 demo-out/synthetic-db
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def held_out(db_dir: Path, limit: int | None) -> list[Path]:
    """The recordings of the official test split of a synthetic database (the demo trains on the others)."""
    from edge_lung.data.icbhi import Database

    db = Database.scan(db_dir)
    paths = sorted(r.wav for r in db.recordings if r.split == "test")
    return paths[:limit] if limit else paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="exported MODEL_DIR")
    parser.add_argument("database", type=Path, help="the synthetic database the model was trained on")
    parser.add_argument("--limit", type=int, default=None, help="first N held-out recordings only")
    args = parser.parse_args()

    from edge_lung.runtime.commands.session import load_classifier
    from edge_lung.runtime.explain.saliency import check_saliency
    from edge_lung.runtime.live.stream import StreamConfig
    from edge_lung.testing import shuffle_model_weights

    paths = held_out(args.database, args.limit)
    print(f"{len(paths)} held-out recordings of {args.database}")
    with tempfile.TemporaryDirectory() as tmp:
        shuffled = shuffle_model_weights(args.model, Path(tmp) / "shuffled")
        for name, model in (("model", args.model), ("shuffled weights", shuffled)):
            result = check_saliency(load_classifier(model, StreamConfig(), 1), paths)
            verdict = "passes" if result.passes() else "fails"
            print(f"{name:>17}: saliency peak inside a drawn event in {result.hits}/{result.windows} correctly "
                  f"flagged windows = {100 * result.rate:.1f}% ({verdict} the 80% check); "
                  f"{result.seconds_per_window:.2f} s per window")


if __name__ == "__main__":
    main()
