"""Latency of one 8 s window on the base-size AST: PyTorch eager vs ONNX FP32 vs INT8 (issue #4).

    .venv/bin/python benchmarks/bench_export.py [--reps 7] [--threads 1 2] [--preset x86-avx2] [--json out.json]

Builds the base architecture (hidden 768, 12 layers, LungAdapter adapters; random weights: speed
does not depend on them), exports it with the same functions as `edge-lung export`, quantises it
dynamically and statically (calibrated on cycles of a small synthetic database), and times one
window per call for each variant and thread count. The variants are timed round-robin, one call
each per round, so a machine that is busy with something else slows all of them alike; the
median over rounds is reported. Also times FP32 after onnxruntime's transformer fusion
(`onnxruntime.transformers.optimizer`) to decide whether the export should apply it.
Artifacts (~800 MB) go to a temp dir under /tmp and are deleted unless --keep is given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build_base_model(features):
    """Base-size AST + LungAdapter, unwrapped as export sees it, in eval mode."""
    import torch

    from edge_lung.train import model as M

    torch.manual_seed(0)
    base = M.load_backbone("base", features, 4)
    net = M.LogitsModel(M.unwrap_peft(M.attach_adapter(base, "lung"))).eval()
    return net


def calibration_windows(features, n: int, work: Path) -> np.ndarray:
    from edge_lung.data.icbhi import Database, load_cycles
    from edge_lung.data.synth import synthesize_database
    from edge_lung.export.onnx import cycles_to_features, pick_balanced

    synthesize_database(work / "synth", recordings=8, seed=0)
    cycles = load_cycles(Database.scan(work / "synth"), ("train",), features.sample_rate, cache=False)
    labels = np.array([c.label for c in cycles])
    x, _ = cycles_to_features([cycles[i] for i in pick_balanced(labels, n)], features)
    return x


def fuse_transformer(src: Path, dst: Path, heads: int, hidden: int) -> dict:
    from onnxruntime.transformers.optimizer import optimize_model

    m = optimize_model(str(src), model_type="vit", num_heads=heads, hidden_size=hidden, opt_level=0)
    m.save_model_to_file(str(dst))
    return {k: v for k, v in m.get_fused_operator_statistics().items() if v}


def build_variants(features, preset, work: Path, calibration_size: int, fusion: bool) -> tuple:
    """Export the base model to FP32 (and fused FP32), quantise it dynamically and statically; prints as it goes.

    Returns (torch module, parameter count, {variant: .onnx path}, calibration windows)."""
    from edge_lung.export.onnx import export_fp32
    from edge_lung.export.quantize import quantize_model

    t = time.perf_counter()
    net = build_base_model(features)
    n_params = sum(p.numel() for p in net.parameters())
    paths = {"onnx-fp32": work / "fp32.onnx"}
    export_fp32(net, paths["onnx-fp32"], features)
    print(f"base AST + LungAdapter: {n_params / 1e6:.1f} M params; exported in {time.perf_counter() - t:.0f} s",
          flush=True)
    if fusion:
        paths["onnx-fp32-fused"] = work / "fused.onnx"
        fused = fuse_transformer(paths["onnx-fp32"], paths["onnx-fp32-fused"], 12, 768)
        print(f"transformer fusion: {fused}", flush=True)
    t = time.perf_counter()
    paths["int8-dynamic"] = work / "dynamic.onnx"
    quantize_model(paths["onnx-fp32"], paths["int8-dynamic"], "dynamic", preset)
    print(f"dynamic INT8 in {time.perf_counter() - t:.0f} s", flush=True)
    t = time.perf_counter()
    calib = calibration_windows(features, calibration_size, work)
    paths["int8-static"] = work / "static.onnx"
    quantize_model(paths["onnx-fp32"], paths["int8-static"], "static", preset, calib)
    print(f"static INT8 (QDQ, {len(calib)} calibration windows) in {time.perf_counter() - t:.0f} s", flush=True)
    return net, n_params, paths, calib


def variant_calls(net, paths: dict[str, Path], threads: list[int], x: np.ndarray) -> dict:
    """{(variant, threads): one call on window `x`}: PyTorch eager, and an onnxruntime session per file."""
    import torch

    from edge_lung.runtime.artifact.model_dir import INPUT_NAME, open_session

    def run_torch(n: int) -> None:
        torch.set_num_threads(n)
        with torch.no_grad():
            net(torch.from_numpy(x))

    calls = {("pytorch-eager", n): (lambda n=n: run_torch(n)) for n in threads}
    for name, p in paths.items():
        for n in threads:
            sess = open_session(p, n)
            calls[(name, n)] = lambda sess=sess: sess.run(None, {INPUT_NAME: x})
    return calls


def time_round_robin(calls: dict, reps: int) -> dict[tuple[str, int], list[float]]:
    """ms per call: one warm-up round, then `reps` rounds of one call each, so load slows all variants alike."""
    times: dict[tuple[str, int], list[float]] = {k: [] for k in calls}
    for rnd in range(reps + 1):
        for key, fn in calls.items():
            t = time.perf_counter()
            fn()
            if rnd:  # round 0 is the warm-up
                times[key].append(1000 * (time.perf_counter() - t))
        print(f"round {rnd}/{reps} done", file=sys.stderr, flush=True)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=7, help="timed rounds (after one warm-up round)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--preset", default="x86-avx2", help="INT8 preset (edge_lung/presets/NAME.json)")
    ap.add_argument("--calibration-size", type=int, default=16)
    ap.add_argument("--no-fusion", action="store_true", help="skip the transformer-fusion FP32 variant")
    ap.add_argument("--keep", action="store_true", help="keep the ONNX files in the temp dir")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)

    import logging

    import onnxruntime as ort
    import torch

    from edge_lung.config import FeatureConfig
    from edge_lung.export.quantize import load_preset
    from edge_lung.machine import cpu_info

    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime.quantization's pre-processing hint
    features = FeatureConfig()
    preset = load_preset(args.preset)
    work = Path(tempfile.mkdtemp(prefix="bench-export-", dir="/tmp"))
    try:
        net, n_params, paths, calib = build_variants(features, preset, work, args.calibration_size, not args.no_fusion)
        times = time_round_robin(variant_calls(net, paths, args.threads, calib[:1].copy()), args.reps)
        sizes = {name: p.stat().st_size for name, p in paths.items()}
        rows = report(times, sizes, args.threads)
        meta = {
            "cpu": cpu_info()["model"],
            "cores": os.cpu_count(),
            "load_average": os.getloadavg(),
            "onnxruntime": ort.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "preset": preset.name,
            "reps": args.reps,
            "params_m": round(n_params / 1e6, 1),
        }
        print(f"machine: {meta['cpu']}, {meta['cores']} cores, load average {meta['load_average']}")
        if args.json:
            args.json.write_text(json.dumps({"meta": meta, "rows": rows, "sizes_bytes": sizes}, indent=2))
    finally:
        if args.keep:
            print(f"kept artifacts in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def report(times: dict, sizes: dict, threads: list[int]) -> list[dict]:
    """Print the table; returns its rows."""
    rows = []
    print()
    print(f"{'variant':<18} {'threads':>7} {'median ms':>10} {'min ms':>8} {'vs ONNX FP32':>13} {'vs eager':>9} "
          f"{'size MB':>8}")
    for (name, n), ts in times.items():
        med = statistics.median(ts)
        fp32 = statistics.median(times[("onnx-fp32", n)])
        eager = statistics.median(times[("pytorch-eager", n)])
        size = sizes.get(name)
        rows.append({"variant": name, "threads": n, "median_ms": round(med, 1), "min_ms": round(min(ts), 1),
                     "speedup_vs_onnx_fp32": round(fp32 / med, 2), "speedup_vs_eager": round(eager / med, 2),
                     "size_bytes": size})
    for r in sorted(rows, key=lambda r: (r["threads"], r["variant"])):
        size = f"{r['size_bytes'] / 1e6:8.1f}" if r["size_bytes"] else f"{'-':>8}"
        print(f"{r['variant']:<18} {r['threads']:>7} {r['median_ms']:>10.1f} {r['min_ms']:>8.1f} "
              f"{r['speedup_vs_onnx_fp32']:>12.2f}x {r['speedup_vs_eager']:>8.2f}x {size}")
    fp32 = sizes["onnx-fp32"]
    for name in ("int8-dynamic", "int8-static"):
        print(f"{name}: {sizes[name] / 1e6:.1f} MB = {100 * sizes[name] / fp32:.1f}% of FP32 ({fp32 / 1e6:.1f} MB)")
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
