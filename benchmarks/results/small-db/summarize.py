"""Join run_small_db.sh's results.jsonl of the old and the new code into one JSON and one markdown table.

    python summarize.py BEFORE.jsonl AFTER.jsonl OUT_STEM [EXTRA_LABEL=EXTRA.jsonl ...]
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

MACHINE = "2-core Intel Xeon VM (AVX-512; the task notes misnamed it AMD EPYC), shared with other work"


def read(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} +- {statistics.stdev(values):.1f}"


def rows(label: str, runs: list[dict]) -> list[str]:
    out = []
    for n in sorted({r["recordings"] for r in runs}):
        sel = sorted((r for r in runs if r["recordings"] == n), key=lambda r: r["seed"])
        bb = [r["backbone_val_score"] for r in sel]
        ad = [r["adapter_test_score"] for r in sel]
        out.append(
            f"| {label} | {n} | {', '.join(str(r['seed']) for r in sel)} | "
            f"{', '.join(str(r['train_cycles']) for r in sel)} | "
            f"{', '.join(str(r['backbone_batch_size']) for r in sel)} | "
            f"{', '.join(f'{x:.1f}' for x in bb)} | {mean_std(bb)} | {', '.join(f'{x:.1f}' for x in ad)} | "
            f"{mean_std(ad)} | {', '.join(str(r['backbone_seconds'] + r['adapter_seconds']) for r in sel)} |")
    return out


def main(before: str, after: str, stem: str, extra: list[str]) -> None:
    sets = {"before (cb22914)": read(before), "after": read(after)}
    for spec in extra:
        label, path = spec.split("=", 1)
        sets[label] = read(path)
    Path(f"{stem}.json").write_text(json.dumps({"machine": MACHINE, "runs": sets}, indent=1) + "\n")
    lines = ["| code | recordings | seeds | train cycles | batch | backbone val Score | mean +- std | "
             "adapter test Score | mean +- std | seconds (both stages) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label, runs in sets.items():
        lines += rows(label, runs)
    Path(f"{stem}.table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
