"""INT8 against FP32 for trained runs, one quantisation recipe per row (issue #13, "INT8 that holds").

    .venv/bin/python benchmarks/int8_students.py RUN_DIR [RUN_DIR ...] [--splits val,test] [--preset x86-avx2]
        [--recipes auto,dynamic,static,static-float-edges] [--sensitivity] [--json out.json]

For each run: exports FP32 ONNX with the export's own function, quantises it with each recipe
through `edge_lung.export.quantize.quantize_model` (static recipes calibrated on the export's own
calibration set: class-balanced train cycles), and runs FP32 and INT8 one window per call, as the
device does, on every cycle of each split. Prints argmax agreement and the ICBHI Score of each
(points of change), the aims beside them (>= 98% agreement, <= 1 point). `--sensitivity` also
quantises with one quantisable node kept in float at a time and prints the nodes whose exclusion
changes agreement most: the measurement behind a preset's `exclude` patterns.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

RECIPES = {
    # name: (mode, extra node-name regexes kept in float on top of the preset's)
    "auto": ("auto", ()),
    "dynamic": ("dynamic", ()),
    "static": ("static", ()),
    "static-float-edges": ("static", (r"^/model/features/features\.0/", r"/Gemm$")),
}


def split_features(run_dir: Path, cfg: dict, split: str) -> tuple[np.ndarray, np.ndarray]:
    from edge_lung.config import FeatureConfig
    from edge_lung.data.devices import load_run_split
    from edge_lung.export.parity import cycles_to_features

    features = FeatureConfig.from_dict(cfg["features"])
    cycles = load_run_split(cfg["data"], split, features, cfg.get("train", {}), run_dir)
    return cycles_to_features(cycles, features)


def calibration(run_dir: Path, cfg: dict, size: int) -> np.ndarray:
    from edge_lung.export.parity import pick_balanced

    x, y = split_features(run_dir, cfg, "train")
    return x[pick_balanced(y, size)]


def measure(int8: Path, fp32_logits: dict, sets: dict) -> dict:
    from edge_lung.export.parity import agreement, onnx_logits
    from edge_lung.metrics import score_predictions

    out = {}
    for split, (x, y) in sets.items():
        q = onnx_logits(int8, x, threads=1, batch=1)
        f = fp32_logits[split]
        s_f, s_q = score_predictions(y, f.argmax(1))["score"], score_predictions(y, q.argmax(1))["score"]
        out[split] = {"cycles": len(y), "agreement": agreement(q, f), "score_fp32": s_f, "score_int8": s_q,
                      "score_change": s_q - s_f, "max_abs_logit_diff": float(np.abs(q - f).max()),
                      # fidelity apart from the model's accuracy: logit error against the spread of the logits
                      "mean_abs_diff_over_std": float(np.abs(q - f).mean() / max(f.std(), 1e-12)),
                      "fp32_argmax_classes": int(len(np.unique(f.argmax(1))))}
    return out


def quantise(fp32: Path, dst: Path, recipe: str, preset, kind: str, calib: np.ndarray, keep: tuple = ()) -> dict:
    import dataclasses

    from edge_lung.export.quantize import quantize_model, resolve_quant

    mode, extra = RECIPES[recipe]
    mode = resolve_quant(mode, kind)
    preset = dataclasses.replace(preset, exclude=preset.exclude + tuple(extra) + tuple(keep))
    return quantize_model(fp32, dst, mode, preset, calib if mode == "static" else None, kind=kind)


def run_one(run_dir: Path, args, work: Path) -> dict:
    from edge_lung.config import FeatureConfig
    from edge_lung.export.onnx import export_fp32, onnx_logits
    from edge_lung.export.quantize import load_preset
    from edge_lung.train.model import LogitsAndEmbedding, load_run, model_kind

    module, cfg = load_run(run_dir)
    kind = model_kind(module)
    features = FeatureConfig.from_dict(cfg["features"])
    fp32 = work / f"{run_dir.name}.onnx"
    export_fp32(LogitsAndEmbedding(module), fp32, features, with_embedding=True)
    sets = {s: split_features(run_dir, cfg, s) for s in args.splits.split(",")}
    fp32_logits = {s: onnx_logits(fp32, x, threads=1, batch=1) for s, (x, _) in sets.items()}
    calib = calibration(run_dir, cfg, args.calibration_size)
    preset = load_preset(args.preset)
    rows = {}
    for recipe in args.recipes.split(","):
        dst = work / f"{run_dir.name}.{recipe}.onnx"
        rec = quantise(fp32, dst, recipe, preset, kind, calib)
        rows[recipe] = {"mode": rec["mode"], "excluded": len(rec["excluded_nodes"]), **measure(dst, fp32_logits, sets)}
        print_row(run_dir.name, recipe, rows[recipe])
    result = {"run": str(run_dir), "backbone": cfg.get("backbone"), "kind": kind, "recipes": rows}
    if args.sensitivity:
        result["sensitivity"] = sensitivity(fp32, work, preset, kind, calib, fp32_logits, sets, args.sensitivity_recipe)
    return result


def sensitivity(fp32: Path, work: Path, preset, kind: str, calib, fp32_logits, sets, recipe: str) -> list:
    """Agreement on the first split with each quantisable node kept in float alone."""
    import onnx

    ops = set(preset.op_types) | ({"Conv"} if kind == "cnn" else set())
    names = [n.name for n in onnx.load(str(fp32), load_external_data=False).graph.node if n.op_type in ops]
    split = next(iter(sets))
    out = []
    for name in names:
        dst = work / "sens.onnx"
        quantise(fp32, dst, recipe, preset, kind, calib, keep=("^" + _escape(name) + "$",))
        m = measure(dst, fp32_logits, {split: sets[split]})[split]
        out.append({"node": name, "agreement": m["agreement"], "max_abs_logit_diff": m["max_abs_logit_diff"]})
    out.sort(key=lambda r: (-r["agreement"], r["max_abs_logit_diff"]))
    for r in out[:8]:
        print(f"  keep float {r['node']}: agreement {r['agreement']:.1f}%, max |diff| {r['max_abs_logit_diff']:.3f}")
    return out


def _escape(name: str) -> str:
    import re

    return re.escape(name)


def print_row(run: str, recipe: str, row: dict) -> None:
    parts = [f"{s}: agree {m['agreement']:.1f}% ({m['cycles']} cycles), Score {m['score_fp32']:.1f} -> "
             f"{m['score_int8']:.1f} ({m['score_change']:+.1f}), max |diff| {m['max_abs_logit_diff']:.3f}, "
             f"mean |diff|/std {m['mean_abs_diff_over_std']:.3f}, FP32 predicts {m['fp32_argmax_classes']} classes"
             for s, m in row.items() if isinstance(m, dict)]
    print(f"{run} {recipe} ({row['mode']}, {row['excluded']} nodes float): " + "; ".join(parts), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--splits", default="val,test")
    ap.add_argument("--preset", default="x86-avx2")
    ap.add_argument("--recipes", default="auto,dynamic,static")
    ap.add_argument("--calibration-size", type=int, default=64)
    ap.add_argument("--sensitivity", action="store_true")
    ap.add_argument("--sensitivity-recipe", default="static")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="int8-students-") as tmp:
        results = [run_one(run, args, Path(tmp)) for run in args.runs]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
