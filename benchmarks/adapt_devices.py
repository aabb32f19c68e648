"""Adapting to a held-out stethoscope with a few labelled patients (issue 27).

    python benchmarks/adapt_devices.py DB_DIR --recipes icbhi-descriptors --seeds 0,1,2 --work runs/adapt

For every device of the database's non-test recordings, every recipe and every seed: train a source model on
the other devices (`--val-devices DEVICE`: every recording of the device is held out, patients also heard on
another device are removed from training; `select last`, so the held-out device never chooses an epoch),
then `edge-lung adapt` it to the held-out device (`--device DEVICE`), leave one patient out within that
device. Printed per row: the Score of the source model on the device (before), of the adapted model
(after, out of fold) and of the same head fitted from zero on the device alone (from scratch, out of fold;
head-mode models only), each with a 95% interval by bootstrap over the device's patients. Always-"normal"
scores 50 beside every figure.

Recipes: `icbhi-descriptors` (the linear model on the 26 descriptors), `student` (a MobileNet, the
distillation student's architecture, trained directly with icbhi-robust at lr 3e-3 for 8 epochs, as in
benchmarks/results/device-shift/2026-12-07-device-shift-mobilenet-8ep-robust.md; not distilled), `default`
(the tiny AST with the LungAdapter, 6 epochs; adapted in adapter mode). Runs finished under `--work` are
read back, not retrained. Writes `--out`.json and `--out`.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from edge_lung.data.icbhi import Database
from edge_lung.fileio import atomic_write_json, atomic_write_text

ALWAYS_NORMAL = 50.0
MACHINE = "2-core Intel Xeon VM (AVX-512; the task notes misnamed it AMD EPYC), shared with other work"
RECIPE_OPTIONS: dict[str, dict[str, Any]] = {
    "icbhi-descriptors": {"recipe": "icbhi-descriptors"},
    "student": {"recipe": "icbhi-robust", "backbone": "mobilenet", "lr": 3e-3, "epochs": 8, "select": "last"},
    "default": {"epochs": 6, "select": "last"},
}
VARIANTS = ("before", "after", "from_scratch")


def devices_of(db_dir: str) -> list[str]:
    return sorted({r.device for r in Database.scan(db_dir).recordings if r.split in ("train", "val")})


def finished(run_dir: Path) -> bool:
    config = run_dir / "config.json"
    return config.is_file() and json.loads(config.read_text()).get("status") == "done"


def source_run(db_dir: str, recipe: str, device: str, seed: int, args: argparse.Namespace) -> Path:
    """Train (or read back) the model of `recipe` that never heard `device`."""
    from edge_lung.train.config import TrainConfig
    from edge_lung.train.pipeline import train_recipe
    from edge_lung.train.recipes import apply_recipe

    run_dir = Path(args.work) / recipe / device / f"seed{seed}" / "source"
    if finished(run_dir):
        return run_dir
    options = {"data": db_dir, "out": str(run_dir), "seed": seed, "val_devices": device, "progress": False,
               "num_threads": args.threads, **RECIPE_OPTIONS[recipe]}
    given = [k for k in options if k != "recipe"]
    train_recipe(TrainConfig(**apply_recipe(options, explicit=given)))
    return run_dir


def adapt_one(db_dir: str, recipe: str, device: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """The cross-validated before / after (/ from scratch) figures of one source model on `device`."""
    from edge_lung.train.adapt import adapt
    from edge_lung.train.adapt_config import AdaptConfig

    t0 = time.perf_counter()
    source = source_run(db_dir, recipe, device, seed, args)
    t_source = time.perf_counter() - t0
    out = Path(args.work) / recipe / device / f"seed{seed}" / "adapted"
    head_mode = json.loads((source / "config.json").read_text())["adapter"] != "lung"
    cfg = AdaptConfig(str(source), db_dir, str(out), device=device, seed=seed, from_scratch=head_mode,
                      num_threads=args.threads, overwrite=True)
    t1 = time.perf_counter()
    adapt(cfg, say=print)
    cv = json.loads((out / "config.json").read_text())["adapted"]["cross_validation"]
    return {"recipe": recipe, "device": device, "seed": seed, "source": str(source), "adapted": str(out),
            "patients": cv["patients"], "cycles": cv["cycles"], "scheme": cv["scheme"],
            **{v: {k: cv[v][k] for k in ("score", "specificity", "sensitivity", "ci95")} for v in VARIANTS if v in cv},
            "gain": cv["gain"],
            "source_seconds": round(t_source, 1), "adapt_seconds": round(time.perf_counter() - t1, 1)}


def cell(rows: list[dict[str, Any]], variant: str) -> str:
    """'52.1 [44.0, 60.2]' for one seed, 'mean +- std (n seeds)' for several; '-' when not measured."""
    values = [r[variant] for r in rows if variant in r]
    if not values:
        return "-"
    if len(values) == 1:
        low, high = values[0]["ci95"]["score"]
        return f"{values[0]['score']:.1f} [{low:.1f}, {high:.1f}]" if low is not None else f"{values[0]['score']:.1f}"
    scores = [v["score"] for v in values]
    return f"{statistics.mean(scores):.1f} +- {statistics.stdev(scores):.1f} ({len(scores)} seeds)"


def gain_cell(rows: list[dict[str, Any]]) -> str:
    """'+8.3 [+1.2, +15.0]' per seed (paired bootstrap over patients), seeds separated by '; '."""
    out = []
    for r in rows:
        low, high = r["gain"]["ci95"]
        out.append(f"{r['gain']['score']:+.1f} [{low:+.1f}, {high:+.1f}]" if low is not None else "-")
    return "; ".join(out)


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace, seconds: float) -> str:
    lines = [
        "# Adapting to a held-out stethoscope, leave one patient out within it (issue 27), 2026-12-08",
        "",
        f"`python benchmarks/adapt_devices.py {args.db} --recipes {args.recipes} --seeds {args.seeds}` on the "
        f"{MACHINE} ({seconds / 60:.1f} min in all).",
        "",
        "Official ICBHI Score of every cycle of the held-out device, out of fold: before = the model trained on "
        "the other devices; after = `edge-lung adapt` on the device's other patients; from scratch = the same "
        "head fitted from zero on the device's other patients (head-mode models only). Interval: 95% by "
        "bootstrap over the device's patients (one seed); with several seeds, mean +- std over seeds.",
        "",
        "| held-out device | recipe | patients | cycles | before | after | from scratch | after - before (paired) "
        "| always-normal |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        for device in dict.fromkeys(r["device"] for r in rows if r["recipe"] == recipe):
            sel = [r for r in rows if r["recipe"] == recipe and r["device"] == device]
            lines.append(f"| {device} | {recipe} | {sel[0]['patients']} | {sel[0]['cycles']} | "
                         + " | ".join(cell(sel, v) for v in VARIANTS) + f" | {gain_cell(sel)} | {ALWAYS_NORMAL:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("db")
    p.add_argument("--recipes", default="icbhi-descriptors")
    p.add_argument("--seeds", default="0")
    p.add_argument("--devices", default=None, help="comma-separated; default: every device of the database")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", default="runs/adapt")
    p.add_argument("--out", default="benchmarks/results/adapt/2026-12-08-adapt-devices")
    p.add_argument("--only-finished", action="store_true", help="adapt only the source runs already finished under "
                   "--work (train none)")
    args = p.parse_args()
    t0 = time.perf_counter()
    devices = args.devices.split(",") if args.devices else devices_of(args.db)
    rows = []
    for recipe in args.recipes.split(","):
        for device in devices:
            for seed in (int(s) for s in args.seeds.split(",")):
                if args.only_finished and not finished(Path(args.work) / recipe / device / f"seed{seed}" / "source"):
                    continue
                rows.append(adapt_one(args.db, recipe, device, seed, args))
                atomic_write_json(Path(args.out + ".json"), {"machine": MACHINE, "rows": rows,
                                                              "always_normal": ALWAYS_NORMAL})
                atomic_write_text(Path(args.out + ".md"), markdown(rows, args, time.perf_counter() - t0))
    print(markdown(rows, args, time.perf_counter() - t0))


if __name__ == "__main__":
    main()
