"""Numpy front end + model graph vs the end-to-end graph (model.e2e.onnx), 1 and 2 threads (issue 16).

    .venv/bin/python benchmarks/bench_e2e.py MODEL_DIR [MODEL_DIR ...] [--threads 1 2] [--reps 20] [--json out.json]
    .venv/bin/python benchmarks/bench_e2e.py --base [--int8] ...   # base-size AST, random weights
    .venv/bin/python benchmarks/bench_e2e.py --frontends --data ICBHI_DIR [--reps 30]   # the graph's DFT forms

`--frontends` (issue 30) times the front end alone, one thread, for each way `edge_lung.export.frontend`
can compute the DFT (`METHODS`: the two-stage float64 split, one float64 MatMul, one float32 MatMul) against
`window_features`, round-robin, on real windows of the database (loud, -60 dB, and resampled through 4 kHz),
with each graph's largest feature difference: the measurement behind the module's choice.

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


FRONTEND_CONFIGS = {
    "8 s / 128 bins (default)": {},
    "8 s / 64 bins, 20-2000 Hz, mel_norm window (icbhi-robust)": {"high_freq_hz": 2000.0, "num_mel_bins": 64,
                                                                   "mel_norm": "window"},
    "8 s / 128 bins, mel_norm window": {"mel_norm": "window"},
    "8 s / 64 bins, 20-6000 Hz": {"high_freq_hz": 6000.0, "num_mel_bins": 64},
}


def real_windows(data: Path, cfg, recordings: int = 6) -> np.ndarray:
    """Of `recordings` recordings spread over the database: a middle window, it at -60 dB, and the same
    window resampled through 4 kHz (a band-limited device), loud and at -60 dB."""
    from edge_lung.audio import cyclic_pad, load_audio, resample

    files = sorted(data.rglob("*.wav"))
    out = []
    for f in files[:: max(1, len(files) // recordings)][:recordings]:
        wave, _ = load_audio(f, cfg.sample_rate)
        mid = max(0, wave.shape[0] // 2 - cfg.window_samples // 2)
        limited = resample(resample(wave, cfg.sample_rate, 4000), 4000, cfg.sample_rate)
        for w in (cyclic_pad(wave[mid:], cfg.window_samples), cyclic_pad(limited[mid:], cfg.window_samples)):
            out += [w, 1e-3 * w]
    return np.stack(out).astype(np.float32)


def frontend_rows(data: Path, reps: int) -> list[dict]:
    """Per config and DFT method: median ms of the front end alone (one thread, round-robin with numpy) and
    the largest |graph - window_features| over `real_windows`."""
    import onnxruntime as ort

    from edge_lung.config import FeatureConfig
    from edge_lung.export.frontend import METHODS, fft_plan, frontend_model
    from edge_lung.features import window_features

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    rows = []
    for name, fields in FRONTEND_CONFIGS.items():
        cfg = FeatureConfig(**fields)
        windows = real_windows(data, cfg)
        ref = np.stack([window_features(w, cfg) for w in windows])
        calls = {"numpy": lambda c=cfg, w=windows: window_features(w[0], c)}
        diffs = {"numpy": 0.0}
        for method in (m for m in METHODS if m != "auto" and (m != "fft" or fft_plan(cfg, "fft"))):
            sess = ort.InferenceSession(frontend_model(cfg, method=method).SerializeToString(), opts,
                                        providers=["CPUExecutionProvider"])
            got = np.concatenate([sess.run(None, {"audio": windows[i : i + 1]})[0] for i in range(len(windows))])
            diffs[method] = float(np.abs(got - ref).max())
            calls[method] = lambda s=sess, w=windows: s.run(None, {"audio": w[:1]})
        times: dict[str, list[float]] = {k: [] for k in calls}
        for rnd in range(reps + 1):
            for k, fn in calls.items():
                t = time.perf_counter()
                fn()
                if rnd:
                    times[k].append(1000 * (time.perf_counter() - t))
        plan = fft_plan(cfg)
        rows.append({"config": name, "features": cfg.to_dict(), "windows": len(windows),
                     "shipped": "fft" if plan else "direct", "plan": plan and plan.__dict__,
                     "ms": {k: round(statistics.median(v), 2) for k, v in times.items()},
                     "max_abs_diff": diffs})
    return rows


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
    ap.add_argument("--frontends", action="store_true", help="time the graph's DFT forms (needs --data)")
    ap.add_argument("--data", type=Path, help="with --frontends: an ICBHI database for real windows")
    args = ap.parse_args(argv)
    if args.frontends:
        return print_frontends(args)
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


def print_frontends(args: argparse.Namespace) -> int:
    """`--frontends`: the table, and the JSON if asked."""
    if args.data is None:
        raise SystemExit("--frontends: expected --data ICBHI_DIR (real windows)")
    for var in THREAD_ENV:
        os.environ.setdefault(var, "1")
    rows = frontend_rows(args.data, args.reps)
    print("| config | shipped | numpy ms | split (fft) ms, max diff | one MatMul f64 ms, max diff "
          "| one MatMul f32 ms, max diff |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        cells = [f"{r['ms'][m]} ({r['max_abs_diff'][m]:.1e})" if m in r["ms"] else "-"
                 for m in ("fft", "direct", "direct-f32")]
        print(f"| {r['config']} | {r['shipped']} | {r['ms']['numpy']} | " + " | ".join(cells) + " |")
    meta = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "load_average": os.getloadavg(), "python": platform.python_version()}
    print(f"machine: {meta['cores']} cores, load average {meta['load_average']}")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "frontends": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
