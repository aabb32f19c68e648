"""Numpy front end + model graph vs the end-to-end graph (model.e2e.onnx), 1 and 2 threads (issue 16).

    .venv/bin/python benchmarks/bench_e2e.py MODEL_DIR [MODEL_DIR ...] [--threads 1 2] [--reps 20] [--json out.json]
    .venv/bin/python benchmarks/bench_e2e.py --base [--int8] ...   # base-size AST, random weights

Each timed call is the device's whole path for one window from an unpadded cycle: cyclic padding,
then either `window_features` + the classifier graph + softmax ('model', the runtime's default), or
the e2e graph with the front end inside it ('e2e'). One subprocess per thread count, with the BLAS
thread variables set to it, so a 1-thread row uses one core in numpy as well; inside it the two
graphs are timed round-robin, one call each per round, so load from other jobs slows both alike.
Medians over the rounds; `edge-lung bench --graph model,e2e` gives the full per-board report.
`--base` builds the base-size AST + LungAdapter (benchmarks/bench_export.py) with random weights
(speed does not depend on them) and exports both graphs into a temp dir under /tmp.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def build_base_dir(work: Path, int8: bool) -> Path:
    """A MODEL_DIR with the base-size model (random weights), its e2e graph and a manifest listing it."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_export import build_base_model

    from edge_lung.config import LABELS, FeatureConfig
    from edge_lung.export.e2e import e2e_manifest_entry, write_end_to_end
    from edge_lung.export.onnx import export_fp32, set_metadata
    from edge_lung.export.quantize import load_preset, quantize_model
    from edge_lung.runtime.artifact.e2e import E2E_NAME
    from edge_lung.runtime.artifact.model_dir import build_metadata, write_manifest

    features = FeatureConfig()
    out = work / ("base-int8" if int8 else "base-fp32")
    out.mkdir(parents=True)
    path = out / "model.onnx"
    export_fp32(build_base_model(features), path, features)
    if int8:
        quantize_model(path, out / "model.int8.onnx", "dynamic", load_preset("x86-avx2"))
        path.unlink()
        path = out / "model.int8.onnx"
    set_metadata(path, build_metadata(LABELS, features, "int8-dynamic" if int8 else "fp32", {},
                                      {"name": "base-random-weights"}))
    e2e = write_end_to_end(path, out / E2E_NAME, features)
    write_manifest(out, path, {"e2e": e2e_manifest_entry(e2e, features, len(LABELS))})
    return out


def measure(model_dir: str, threads: int, reps: int) -> dict:
    """In this process: median and p90 ms of both graphs at `threads`, round-robin over `reps` + 1 rounds."""
    from edge_lung.audio import cyclic_pad
    from edge_lung.bench.measure import bench_cycles
    from edge_lung.features import window_features
    from edge_lung.runtime.artifact.e2e import E2EClassifier
    from edge_lung.runtime.artifact.model_dir import OnnxClassifier
    from edge_lung.scoring import softmax

    clf, e2e = OnnxClassifier(model_dir, threads), E2EClassifier(model_dir, threads)
    cfg = clf.info.features
    pool = bench_cycles(cfg.sample_rate, 8, seed=0)
    calls = {
        "model": lambda c: softmax(clf.logits(window_features(cyclic_pad(c, cfg.window_samples), cfg))),
        "e2e": lambda c: e2e.probabilities(cyclic_pad(c, cfg.window_samples)),
    }
    times: dict[str, list[float]] = {k: [] for k in calls}
    diffs = []
    for rnd in range(reps + 1):
        cycle = pool[rnd % len(pool)]
        outs = {}
        for name, fn in calls.items():
            t = time.perf_counter()
            outs[name] = fn(cycle)
            if rnd:  # round 0 is the warm-up
                times[name].append(1000 * (time.perf_counter() - t))
        diffs.append(float(np.abs(outs["model"] - outs["e2e"]).max()))
    return {
        "model_dir": model_dir, "threads": threads, "quantization": clf.info.quantization,
        "window_s": cfg.window_s, "bins": cfg.num_mel_bins, "reps": reps,
        "ms": {k: {"median": round(statistics.median(v), 2), "p90": round(float(np.percentile(v, 90)), 2)}
               for k, v in times.items()},
        "max_prob_diff": max(diffs),
    }


def _child(model_dir: str, threads: int, reps: int) -> dict:
    env = dict(os.environ)
    for var in THREAD_ENV:
        env[var] = str(threads)
    proc = subprocess.run([sys.executable, __file__, "--child", model_dir, str(threads), str(reps)],
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        raise SystemExit(f"{model_dir} at {threads} threads failed:\n{proc.stderr}")
    return json.loads(proc.stdout.splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        print(json.dumps(measure(argv[1], int(argv[2]), int(argv[3]))))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dirs", nargs="*", help="exported MODEL_DIRs with model.e2e.onnx")
    ap.add_argument("--base", action="store_true", help="also the base-size AST (random weights), exported here")
    ap.add_argument("--int8", action="store_true", help="with --base: INT8 dynamic (x86-avx2) instead of FP32")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--reps", type=int, default=20, help="timed rounds (after one warm-up round)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-e2e-", dir="/tmp"))
    try:
        dirs = list(args.model_dirs) + ([str(build_base_dir(work, args.int8))] if args.base else [])
        rows = [_child(d, n, args.reps) for d in dirs for n in args.threads]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("| model | quantization | window / bins | threads | numpy front end + model, median ms (p90) "
          "| e2e graph, median ms (p90) | e2e / numpy | max prob diff |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        m, e = r["ms"]["model"], r["ms"]["e2e"]
        print(f"| {Path(r['model_dir']).name} | {r['quantization']} | {r['window_s']} s / {r['bins']} | {r['threads']} "
              f"| {m['median']} ({m['p90']}) | {e['median']} ({e['p90']}) | {e['median'] / m['median']:.2f}x "
              f"| {r['max_prob_diff']:.1e} |")
    meta = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "load_average": os.getloadavg(), "python": platform.python_version()}
    print(f"machine: {meta['cores']} cores, load average {meta['load_average']}")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
