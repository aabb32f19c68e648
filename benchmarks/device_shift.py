"""Leave-one-device-out (issue #12): how a recipe scores on a stethoscope it never trained on.

    python benchmarks/device_shift.py DB_DIR --recipes default,icbhi-robust --seeds 0,1,2 --epochs 6
    python benchmarks/device_shift.py DB_DIR --recipes icbhi-descriptors --seeds 0,1,2 --calibrate

For every device of the database's non-test recordings, every recipe and every seed, trains with
`--val-devices DEVICE` (every recording of that device is validation; patients also heard on another
device are removed from training) and reads the held-out device's figures. The primary figure is the
**last epoch's** Score: selecting the epoch on the held-out device would peek at it, so the selected
epoch's Score is printed beside it, marked optimistic. Always-"normal" scores exactly 50 on any split
with both kinds of cycle; it is printed next to every row. With `--degrade 4k` the selected model's
validation loss is also measured through a 4 kHz stethoscope-like channel. With `--calibrate` the saved
model is scored on the held-out device twice, as shipped and calibrated exactly as `edge-lung calibrate`
would calibrate it from that device's recordings without their labels (`calibration_figures`); both use
the checkpoint selected on the held-out device, so read the difference, not the level. Runs already
finished under `--work` are read back, not retrained. Writes `--out`.json and `--out`.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from edge_lung.config import FeatureConfig
from edge_lung.data.icbhi import Database
from edge_lung.fileio import atomic_write_json
from edge_lung.train.recipes import apply_recipe

ALWAYS_NORMAL = 50.0


def devices_of(db_dir: str) -> list[str]:
    """Devices of the database's non-test recordings, sorted."""
    return sorted({r.device for r in Database.scan(db_dir).recordings if r.split in ("train", "val")})


def run_one(db_dir: str, recipe: str, device: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train (or read back) one run holding out `device`; its last and selected held-out figures."""
    from edge_lung.train.config import TrainConfig
    from edge_lung.train.evaluate import evaluate_run
    from edge_lung.train.pipeline import train_recipe

    run_dir = Path(args.work) / recipe / device / f"seed{seed}"
    config_path = run_dir / "config.json"
    finished = json.loads(config_path.read_text()) if config_path.is_file() else {}
    done = finished.get("status") == "done"
    if done and args.lr is not None and finished["lr"] != args.lr:
        raise SystemExit(f"{run_dir}: finished at lr {finished['lr']}, not the --lr {args.lr} asked for; give "
                         "another --work")
    if not done:
        given = {"backbone": args.backbone, "epochs": args.epochs, "lr": args.lr}  # None: the recipe's, else train's
        options = {"data": db_dir, "out": str(run_dir), "seed": seed, "val_devices": device, "progress": False,
                   "num_threads": args.threads, "max_cycles": args.max_cycles,
                   "recipe": None if recipe == "default" else recipe}
        options.update({k: v for k, v in given.items() if v is not None})
        if args.normal_margin:  # on every recipe; the margin is measured on the last epoch's model
            options.update(normal_margin=args.normal_margin, select="last")
        train_recipe(TrainConfig(**apply_recipe(options, explicit=["data", "out", "seed", *options])))
    history = json.loads((run_dir / "metrics.json").read_text())
    config = finished if done else json.loads(config_path.read_text())  # just written by train()
    last, best = history[-1]["val"], config["best"]["val"]
    margin = config.get("normal_margin")
    if margin:  # the saved model decides with the margin; with --select last it is the last epoch's
        if config["best"]["epoch"] != history[-1]["epoch"]:
            raise SystemExit(f"{run_dir}: a normal margin on epoch {config['best']['epoch']}, not the last; train "
                             "such recipes with --select last")
        last = best
    row = {"recipe": recipe, "device": device, "seed": seed, "run": str(run_dir),
           "last": {k: last[k] for k in ("score", "specificity", "sensitivity", "loss", "num_cycles")},
           "selected": {k: best[k] for k in ("score", "specificity", "sensitivity", "loss")},
           "selected_epoch": config["best"]["epoch"], "removed_patients": config["device_split"]["removed_patients"],
           "warnings": config.get("warnings", [])}
    if margin:
        row["normal_margin"] = {"margin": margin["margin"], "without": {k: margin["val_before"][k] for k in FIGURES},
                                "held_out": margin["held_out"]}
    if args.degrade:
        row[f"loss_{args.degrade}"] = evaluate_run(run_dir, None, "val", degrade=args.degrade)["loss"]
    if args.calibrate:
        row["calibration"] = calibration_figures(run_dir, db_dir)
    return row


FIGURES = ("score", "specificity", "sensitivity")


def calibration_figures(run_dir: Path, db_dir: str) -> dict[str, Any]:
    """The run's saved model on its held-out device (its 'val' split), as shipped and calibrated.

    The calibration is the one `edge-lung calibrate` writes: the device's statistics from its recordings'
    audio alone (windows cut and gated as the runtime cuts them, labels unused), the reference from the
    run's training split (`runtime.calibrate.train_split_stats`, what export writes), applied by
    `evaluate_run(calibration=...)` with the same `Calibration.apply` as a calibrated model directory.
    """
    from edge_lung.data.devices import scan_for_run
    from edge_lung.feature_stats import Calibration
    from edge_lung.runtime.offline.calibrate import measure_recordings, train_split_stats
    from edge_lung.train.evaluate import evaluate_run

    config = json.loads((run_dir / "config.json").read_text())
    features, settings = FeatureConfig.from_dict(config["features"]), config["train"]
    db, _ = scan_for_run(db_dir, settings, run_dir)
    measurement = measure_recordings([r.wav for r in db.recordings if r.split == "val"], features)
    if measurement.stats is None:
        raise ValueError(f"{run_dir}: no window of the held-out recordings passed the quality gate")
    reference, _ = train_split_stats(db_dir, features, settings, run_dir)
    out: dict[str, Any] = {"windows": measurement.windows, "usable_s": round(measurement.usable_s, 1),
                           "files_skipped": len(measurement.skipped)}
    for name, cal in (("plain", None), ("calibrated", Calibration(reference, measurement.stats))):
        report = evaluate_run(run_dir, db_dir, "val", calibration=cal)
        out[name] = {k: report[k] for k in FIGURES}
    return out


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std over seeds per (recipe, device), and per recipe over devices ("mean")."""
    out = []
    keys = sorted({(r["recipe"], r["device"]) for r in rows})
    for recipe, device in keys + sorted({(r["recipe"], "mean") for r in rows}):
        sel = [r for r in rows if r["recipe"] == recipe and device in (r["device"], "mean")]
        entry = {"recipe": recipe, "device": device, "runs": len(sel), "always_normal": ALWAYS_NORMAL}
        for name, get in (("score", lambda r: r["last"]["score"]), ("sp", lambda r: r["last"]["specificity"]),
                          ("se", lambda r: r["last"]["sensitivity"]), ("selected", lambda r: r["selected"]["score"]),
                          ("loss_degraded", lambda r: next((v for k, v in r.items() if k.startswith("loss_")), None))):
            values = [v for v in map(get, sel) if v is not None]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            entry[name] = [statistics.mean(values), spread] if values else None
        entry.update(calibration_summary(sel))
        entry.update(margin_summary(sel))
        out.append(entry)
    return out


def margin_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std of the chosen normal margin and of the held-out figures without it; {} without margins."""
    rows = [r for r in rows if "normal_margin" in r]
    if not rows:
        return {}
    out = {}
    for name, values in (("margin", [r["normal_margin"]["margin"] for r in rows]),
                         *((f"nomargin_{k}", [r["normal_margin"]["without"][k] for r in rows]) for k in FIGURES)):
        out[name] = [statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0]
    return out


def calibration_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std over `rows` of each figure, as shipped ("plain_*") and calibrated ("cal_*"); {} without."""
    rows = [r for r in rows if "calibration" in r]
    if not rows:
        return {}
    out = {}
    for kind, prefix in (("plain", "plain_"), ("calibrated", "cal_")):
        for k in FIGURES:
            values = [r["calibration"][kind][k] for r in rows]
            out[prefix + k] = [statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0]
    return out


def markdown(summary: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The one table: held-out device x recipe, Score mean +- std over seeds, always-normal beside it."""
    def pm(pair: list[float] | None, digits: int = 1) -> str:
        return "-" if pair is None else f"{pair[0]:.{digits}f} +- {pair[1]:.{digits}f}"

    lines = [f"Leave-one-device-out on {args.db}: backbone {args.backbone or 'each recipe`s'}, "
             f"{args.epochs or 'each recipe`s'} epochs, seeds {args.seeds}"
             f"{', max ' + str(args.max_cycles) + ' train cycles' if args.max_cycles else ''}"
             f"{', peak lr ' + str(args.lr) + ' for every recipe' if args.lr is not None else ''}"
             f"{_margin_words(args)}.",
             "Score/Sp/Se: last epoch on the held-out device (official ICBHI); selected: the epoch chosen on it "
             f"(optimistic); loss {args.degrade or '-'}: selected model's held-out loss through the channel.", "",
             "| held-out device | recipe | runs | Score | Sp | Se | selected (optimistic) "
             f"| loss {args.degrade or '-'} | always-normal |", "|" + " --- |" * 9]
    for e in summary:
        lines.append(f"| {e['device']} | {e['recipe']} | {e['runs']} | {pm(e['score'])} | {pm(e['sp'])} | "
                     f"{pm(e['se'])} | {pm(e['selected'])} | {pm(e['loss_degraded'], 3)} | {e['always_normal']:.0f} |")
    return "\n".join(lines + margin_markdown(summary, pm) + calibration_markdown(summary, pm)) + "\n"


def _margin_words(args: argparse.Namespace) -> str:
    margin = getattr(args, "normal_margin", None)  # tables written before the option have none
    return f", normal margin {margin} and the last epoch for every recipe" if margin else ""


def margin_markdown(summary: list[dict[str, Any]], pm) -> list[str]:
    """The normal-margin table (`train --normal-margin cross-device`): the last epoch with and without it."""
    rows = [e for e in summary if "margin" in e]
    if not rows:
        return []
    lines = ["", "Normal margin (chosen on the training devices held out one at a time; the held-out device is "
             "never seen): the same last-epoch model scored without it and with it.", "",
             "| held-out device | recipe | runs | margin | Score without | Score with | Sp without | Sp with "
             "| Se without | Se with |", "|" + " --- |" * 10]
    for e in rows:
        lines.append(f"| {e['device']} | {e['recipe']} | {e['runs']} | {pm(e['margin'], 2)} | "
                     f"{pm(e['nomargin_score'])} | {pm(e['score'])} | {pm(e['nomargin_specificity'])} | {pm(e['sp'])} "
                     f"| {pm(e['nomargin_sensitivity'])} | {pm(e['se'])} |")
    return lines


def calibration_markdown(summary: list[dict[str, Any]], pm) -> list[str]:
    """The `--calibrate` table: the saved model on the held-out device, as shipped and calibrated."""
    rows = [e for e in summary if "cal_score" in e]
    if not rows:
        return []
    lines = ["", "Calibration (`edge-lung calibrate`, the held-out device's recordings without labels; reference: "
             "the run's training split). Both columns use the checkpoint selected on the held-out device "
             "(optimistic): read the difference.", "",
             "| held-out device | recipe | runs | Score | Score calibrated | Sp | Sp calibrated | Se | Se calibrated |",
             "|" + " --- |" * 9]
    for e in rows:
        lines.append(f"| {e['device']} | {e['recipe']} | {e['runs']} | {pm(e['plain_score'])} | {pm(e['cal_score'])} "
                     f"| {pm(e['plain_specificity'])} | {pm(e['cal_specificity'])} | {pm(e['plain_sensitivity'])} "
                     f"| {pm(e['cal_sensitivity'])} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("db")
    p.add_argument("--recipes", default="default,icbhi-robust")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=None, help="default: each recipe's, else train's")
    p.add_argument("--backbone", default=None, help="default: each recipe's, else train's (tiny)")
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate for every recipe (default: each recipe's, else train's default)")
    p.add_argument("--normal-margin", choices=("cross-device",), default=None,
                   help="train every recipe with --normal-margin cross-device --select last (default: each recipe's)")
    p.add_argument("--max-cycles", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--degrade", choices=("4k", "8k"), default=None)
    p.add_argument("--calibrate", action="store_true",
                   help="also score each run's saved model on the held-out device calibrated from its unlabelled "
                        "recordings (edge-lung calibrate)")
    p.add_argument("--work", default="runs/device_shift")
    p.add_argument("--out", default="benchmarks/results/device-shift/device_shift")
    args = p.parse_args()
    rows = []
    # seeds outermost, so an interrupted table still compares every recipe on every device
    for seed in (int(s) for s in args.seeds.split(",")):
        for device in devices_of(args.db):
            for recipe in args.recipes.split(","):
                rows.append(run_one(args.db, recipe, device, seed, args))
                print(json.dumps({k: rows[-1][k] for k in ("recipe", "device", "seed", "last")}), flush=True)
                write_results(rows, args)
    print(markdown(summarize(rows), args))


def write_results(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """`--out`.json (settings, every run, the summary) and `--out`.md (the table), rewritten after each run."""
    summary = summarize(rows)
    atomic_write_json(Path(args.out + ".json"), {"settings": vars(args), "runs": rows, "summary": summary})
    Path(args.out + ".md").write_text(markdown(summary, args))

if __name__ == "__main__":
    main()
