"""Peak memory of `edge-lung bench` on one model, repeated, with the stages where it grows.

    python benchmarks/bench_memory.py MODEL_DIR --label NAME [--repeats 3] [--windows 50] [--jsonl PATH]

Runs `edge-lung bench MODEL_DIR --threads 1` `--repeats` times (each row is its own fresh process)
with the edge-lung found on PYTHONPATH, so the same script measures any revision: check the revision
out in a worktree and point PYTHONPATH at it. Prints, and appends to `--jsonl`, the median of the
peak RSS, the resident memory at each stage and the latency p50s; the before/after tables in
benchmarks/results/bench-memory/ are made from these lines.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

STAGES = ("imported", "loaded", "cold_window", "end")


def one_run(model: Path, windows: int) -> dict:
    """One `edge-lung bench --threads 1` run; its single result row."""
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        out = Path(tmp) / "r.json"
        cli = [sys.executable, "-c", "from edge_lung.cli import main; main()"]
        cmd = [*cli, "bench", str(model), "--threads", "1", "--windows", str(windows), "--json", str(out)]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        report = json.loads(out.read_text())
    (row,) = report["results"]
    row["load_avg_1m"] = report["environment"]["load_avg_1m"]
    return row


def summarise(rows: list[dict], label: str, revision: str) -> dict:
    """Medians over the repeats (each figure on its own), the peaks of every repeat beside them."""
    med = statistics.median
    out = {
        "label": label,
        "revision": revision,
        "repeats": len(rows),
        "peak_rss_mb": med(r["peak_rss_mb"] for r in rows),
        "peaks": [r["peak_rss_mb"] for r in rows],
        "e2e_p50_ms": round(med(r["e2e_ms"]["p50"] for r in rows), 2),
        "features_p50_ms": round(med(r["features_ms"]["p50"] for r in rows), 2),
        "model_p50_ms": round(med(r["model_ms"]["p50"] for r in rows), 2),
        "load_avg_1m": [r["load_avg_1m"] for r in rows],
    }
    if all("memory_stages" in r for r in rows):
        out["rss_mb"] = {s: med(r["memory_stages"][s]["rss_mb"] for r in rows) for s in STAGES}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--label", required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--windows", type=int, default=50)
    ap.add_argument("--jsonl", type=Path)
    args = ap.parse_args()
    import edge_lung

    src = Path(edge_lung.__file__).resolve().parents[1]
    rev = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    revision = rev.stdout.strip() or "unknown"
    env_threads = {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    rows = [one_run(args.model, args.windows) for _ in range(args.repeats)]
    line = {**summarise(rows, args.label, revision), "edge_lung": str(src), "thread_env": env_threads}
    print(json.dumps(line))
    if args.jsonl is not None:
        with args.jsonl.open("a") as f:
            f.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
