"""Teacher vs students on one split (issue 13): each model's official ICBHI Score and its agreement with the teacher.

    python benchmarks/distill_agreement.py --data DB --split test --teacher RUN|MODEL_DIR STUDENT... [--out PATH]

Every model (a run directory or an exported MODEL_DIR, FP32 or INT8) hears each cycle of the split through
its own features (`train.teacher.load_teacher` loads any of them); agreement is the percent of cycles where
a model's class is the teacher's. The split's recordings are the database's (test: the official split file;
val: `TrainConfig`'s default fraction and seed). Prints a Markdown table; `--out` also writes PATH.json and
PATH.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from edge_lung.data.devices import load_run_split
from edge_lung.fileio import atomic_write_json, atomic_write_text
from edge_lung.metrics import score_predictions
from edge_lung.scoring import predict
from edge_lung.train.config import TrainConfig
from edge_lung.train.teacher import load_teacher

SPLIT_SETTINGS = {"val_fraction": TrainConfig.val_fraction, "val_seed": TrainConfig.val_seed}


def model_logits(path: str, db: str, split: str, cycles_by_rate: dict[int, list]) -> tuple[np.ndarray, np.ndarray, Any]:
    """(labels, logits, teacher-like model) of one model on the split's cycles, through its own features."""
    model = load_teacher(path)
    rate = model.features.sample_rate
    if rate not in cycles_by_rate:
        cycles_by_rate[rate] = load_run_split(db, split, model.features, SPLIT_SETTINGS)
    y, logits = predict(cycles_by_rate[rate], model.features, model.logits_fn, batch_size=16)
    return y, logits, model


def compare(teacher: str, students: list[str], db: str, split: str) -> dict[str, Any]:
    """One row per model (the teacher first): Score, Se, Sp, agreement with the teacher, weights hash."""
    cycles: dict[int, list] = {}
    y, teacher_logits, _ = model_logits(teacher, db, split, cycles)
    rows = []
    for path in [teacher, *students]:
        y_m, logits, model = model_logits(path, db, split, cycles)
        assert np.array_equal(y_m, y), "every model scores the same cycles"
        scores = score_predictions(y, logits.argmax(axis=1))
        agree = 100.0 * float(np.mean(logits.argmax(axis=1) == teacher_logits.argmax(axis=1)))
        rows.append({"model": path, "kind": model.kind, "quantization": model.quantization,
                     "mel_bins": model.features.num_mel_bins, "score": scores["score"],
                     "sensitivity": scores["sensitivity"], "specificity": scores["specificity"],
                     "agreement": agree, "sha256": model.weights_sha256[:16]})
    return {"data": db, "split": split, "cycles": int(len(y)), "teacher": teacher, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    lines = [f"{result['split']} split of {result['data']}: {result['cycles']} cycles; teacher {result['teacher']}",
             "", "| model | kind | precision | mel bins | Score | Se | Sp | agreement with teacher % |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['kind']} | {r['quantization']} | {r['mel_bins']} | {r['score']:.2f} | "
                     f"{r['sensitivity']:.2f} | {r['specificity']:.2f} | {r['agreement']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("students", nargs="+", help="Run directories or MODEL_DIRs to compare with the teacher.")
    parser.add_argument("--teacher", required=True, help="The teacher: a run directory or a MODEL_DIR.")
    parser.add_argument("--data", required=True, help="ICBHI-layout database.")
    parser.add_argument("--split", default="test", choices=("test", "val"))
    parser.add_argument("--out", help="Also write OUT.json and OUT.md.")
    args = parser.parse_args()
    result = compare(args.teacher, args.students, args.data, args.split)
    text = markdown(result)
    print(text, end="")
    if args.out:
        atomic_write_json(Path(args.out).with_suffix(".json"), result)
        atomic_write_text(Path(args.out).with_suffix(".md"), text)
        print(json.dumps({"wrote": [str(Path(args.out).with_suffix(s)) for s in (".json", ".md")]}))


if __name__ == "__main__":
    main()
