"""The main job: the whole pipeline end to end, with a visible progress display.

    edge-lung demo [--data ICBHI_DIR] [--out demo-out]

Steps: database (synthetic unless a real one is given) and its summary with a feature
picture; train the tiny AST with LungAdapter adapters, SAM and WRS (the teacher); evaluate on
test; export it (INT8 and FP32); replay a held-out recording through the streaming path; distil
a MobileNet student from the teacher and export it (INT8 static QDQ and FP32); benchmark all four
models and plot Score against latency (`pareto.png`). It ends with a summary whose every figure
is read back from the artifact files it names.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from edge_lung.bench.environment import usable_cores
from edge_lung.bench.measure import BenchConfig, run_bench
from edge_lung.bench.report import render, write_json
from edge_lung.config import LABELS, FeatureConfig
from edge_lung.data.icbhi import Database, format_summary, load_cycles
from edge_lung.data.synth import synthesize_database
from edge_lung.features import cycle_features
from edge_lung.fileio import RUN_CONFIG, atomic_write_json
from edge_lung.plots import ascii_spectrogram, pareto_front, save_feature_png, save_pareto
from edge_lung.runtime.artifact.model_dir import MANIFEST_NAME, PARITY_NAME
from edge_lung.runtime.commands.session import StreamOptions, load_classifier, stream_session
from edge_lung.runtime.live.stream import StreamConfig
from edge_lung.runtime.offline.evaluate import evaluate_model_dir
from edge_lung.scoring import format_report
from edge_lung.train.config import DEFAULT_STUDENT, DEFAULT_STUDENT_OPTIMIZER, student_features


@dataclass(frozen=True)
class DemoConfig:
    """Options of `edge-lung demo`. `quick` shrinks every step for tests."""

    out_dir: Path = Path("demo-out")
    data: Path | None = None
    recordings: int = 100
    seed: int = 0
    epochs: int | None = None
    quick: bool = False
    bench_windows: int = 30
    threads: tuple[int, ...] = (1, 2)

    def __post_init__(self) -> None:
        if self.recordings < 4:
            raise ValueError(f"--recordings: expected at least 4, got {self.recordings}")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"--epochs: expected >= 1, got {self.epochs}")
        if self.data is not None and not Path(self.data).is_dir():
            raise ValueError(f"--data: expected an ICBHI database folder, got {self.data} (not a directory)")


@dataclass
class StepLog:
    name: str
    seconds: float
    artifacts: dict[str, str] = field(default_factory=dict)


class Demo:
    """Runs the steps in order, timing each; one method per step."""

    def __init__(self, cfg: DemoConfig, console: Console | None = None) -> None:
        self.cfg = cfg
        self.console = console or Console()
        self.out = Path(cfg.out_dir).absolute()
        self.steps: list[StepLog] = []
        self.artifacts: dict[str, Path] = {}
        self.eval_split = "test"

    def _step(self, title: str, fn: Callable[[], dict[str, Path]]) -> None:
        index = len(self.steps) + 1
        self.console.rule(f"[bold]Step {index}: {title}")
        t0 = time.perf_counter()
        with self.console.status(f"{title}..."):
            produced = fn()
        self.artifacts.update(produced)
        seconds = time.perf_counter() - t0
        self.steps.append(StepLog(title, seconds, {k: str(v) for k, v in produced.items()}))
        self.console.print(f"[green]done[/green] in {seconds:.1f} s")

    # -- step 1 ---------------------------------------------------------------------------
    def database(self) -> dict[str, Path]:

        if self.cfg.data is not None:
            db_dir = Path(self.cfg.data).absolute()
            self.console.print(f"Using the real database at {db_dir}")
        else:
            db_dir = self.out / "synthetic-db"
            n = min(self.cfg.recordings, 16) if self.cfg.quick else self.cfg.recordings
            report = synthesize_database(db_dir, recordings=n, seed=self.cfg.seed, overwrite=True)  # its own folder
            self.console.print(f"Wrote a synthetic database of {report.recordings} recordings to {db_dir}")
        db = Database.scan(db_dir)
        summary = db.summary()
        if not summary["cycles_per_split"].get("test", {}).get("total"):
            # e.g. the shared subset, which holds official-train recordings only
            self.eval_split = "val"
            self.console.print("[yellow]No test cycles in this database: evaluating on the validation split "
                               "instead (the figures are then not held-out test figures).[/yellow]")
        summary_path = self.out / "data_summary.json"
        atomic_write_json(summary_path, summary)
        self.console.print(format_summary(summary, max_problems=10))
        picture = self._feature_picture(db)
        return {"database": db_dir, "data_summary": summary_path, "feature_picture": picture}

    def _feature_picture(self, db: Any) -> Path:

        cfg = FeatureConfig()
        cycles = load_cycles(db, splits=("train", "val"))
        panels = []
        for label, name in enumerate(LABELS):
            cycle = next((c for c in cycles if c.label == label), None)
            if cycle is None:
                continue
            feats = cycle_features(cycle.audio, cfg)
            seconds = cycle.end_s - cycle.start_s
            title = f"{name}: {cycle.recording} cycle {cycle.index} ({seconds:.2f} s, cyclic-padded)"
            panels.append((title, feats))
            self.console.print(f"[bold]{title}[/bold]  log-mel {feats.shape[0]} frames x {feats.shape[1]} bins")
            self.console.print(ascii_spectrogram(feats), highlight=False)
        return save_feature_png(panels, self.out / "features.png", cfg.frame_shift_ms)

    # -- step 2 ---------------------------------------------------------------------------
    def pretrain(self) -> dict[str, Path]:
        """A tiny AST trained from scratch: the stand-in for the AudioSet checkpoint, which real runs
        name with `--backbone MIT/ast-finetuned-audioset-10-10-0.4593` (it cannot be downloaded here)."""
        from edge_lung.train.config import TrainConfig
        from edge_lung.train.loop import train

        run_dir = self.out / "backbone-run"
        epochs = self.cfg.epochs or (3 if self.cfg.quick else DEMO_BACKBONE_EPOCHS)
        cfg = TrainConfig(
            data=str(self.artifacts["database"]), out=str(run_dir), backbone="tiny", adapter="none",
            optimizer="sam", sampler="uniform", epochs=epochs, seed=self.cfg.seed, device="cpu",
            max_cycles=48 if self.cfg.quick else None,
        )
        _fresh(run_dir)
        train(cfg, console=self.console)
        return {"backbone": run_dir / "model" / "backbone"}

    # -- step 3 ---------------------------------------------------------------------------
    def train(self) -> dict[str, Path]:
        """LungAdapter adapters on the frozen backbone, with SAM and the weighted random sampler."""
        from edge_lung.train.config import TrainConfig
        from edge_lung.train.loop import METRICS, train

        run_dir = self.out / "run"
        epochs = self.cfg.epochs or (2 if self.cfg.quick else DEMO_ADAPTER_EPOCHS)
        cfg = TrainConfig(
            data=str(self.artifacts["database"]), out=str(run_dir), backbone=str(self.artifacts["backbone"]),
            adapter="lung", optimizer="sam", sampler="wrs", epochs=epochs, seed=self.cfg.seed, device="cpu",
            max_cycles=48 if self.cfg.quick else None,
        )
        _fresh(run_dir)
        train(cfg, console=self.console)
        return {"run": run_dir, "run_config": run_dir / RUN_CONFIG, "metrics": run_dir / METRICS,
                "training_curve": run_dir / "training_curve.png", "confusion_matrix": run_dir / "confusion_matrix.png"}

    # -- step 3 ---------------------------------------------------------------------------
    def evaluate(self) -> dict[str, Path]:
        from edge_lung.train.evaluate import evaluate_run

        report = evaluate_run(self.artifacts["run"], self.artifacts["database"], split=self.eval_split)
        path = self.out / "eval_pytorch.json"
        atomic_write_json(path, report)
        self.console.print(format_report(report), highlight=False)
        return {"eval_pytorch": path}

    # -- step 4 ---------------------------------------------------------------------------
    def export(self) -> dict[str, Path]:
        """The teacher as the device gets it (INT8, dynamic: the transformer default) and in FP32 (the
        Pareto plot's other precision)."""
        q8 = self._export_and_evaluate(self.artifacts["run"], "model-int8", "eval_int8", int8=True)
        fp32 = self._export_and_evaluate(self.artifacts["run"], "model-fp32", "eval_fp32", int8=False)
        return {"model": q8["model"], "parity": q8["parity"], "manifest": q8["manifest"], "eval_int8": q8["eval"],
                "model_fp32": fp32["model"], "eval_fp32": fp32["eval"]}

    def _export_and_evaluate(self, run: Path, name: str, eval_name: str, int8: bool) -> dict[str, Path]:
        """`edge-lung export RUN [--int8]` into OUT/name (INT8: the model kind's default quantisation), then
        the model directory scored on the evaluation split (OUT/eval_name.json)."""
        from edge_lung.export.onnx import ExportConfig, export_model

        model_dir = self.out / name
        export_model(run, model_dir, ExportConfig(int8=int8, overwrite=True), log=self.console.print)
        report = evaluate_model_dir(model_dir, self.artifacts["database"], split=self.eval_split)
        path = self.out / f"{eval_name}.json"
        atomic_write_json(path, report)
        self.console.print(f"[bold]{name} ({report['quantization']}) on the {self.eval_split} split:[/bold]")
        self.console.print(format_report(report), highlight=False)
        return {"model": model_dir, "parity": model_dir / PARITY_NAME, "manifest": model_dir / MANIFEST_NAME,
                "eval": path}

    # -- step 5 ---------------------------------------------------------------------------
    def replay(self) -> dict[str, Path]:

        db = Database.scan(self.artifacts["database"])
        held_out = db.split_recordings("test") or db.split_recordings("val")
        if not held_out:
            raise ValueError(f"{db.root}: no test or validation recording to replay")
        rec = max(held_out, key=lambda r: (len(r.cycles), r.stem))  # the most annotated held-out recording
        jsonl = self.out / "replay.jsonl"
        classifier = load_classifier(self.artifacts["model"], StreamConfig(), threads=None)
        self.console.print(f"Replaying {rec.wav.name} ({rec.duration_s:.1f} s, {rec.sample_rate} Hz, "
                           f"{len(rec.cycles)} annotated cycles) through the streaming path")
        stream_session(classifier, StreamOptions(replay=rec.wav, jsonl=jsonl, display=False, overwrite=True))  # ours
        return {"replay_recording": rec.wav, "replay_events": jsonl}

    # -- step 6 ---------------------------------------------------------------------------
    def distill(self) -> dict[str, Path]:
        """`edge-lung distill`'s default student of the adapter run: KD on the teacher's cached soft targets
        (alpha 1, T 2), as measured in benchmarks/results/distill."""
        from edge_lung.train.config import DistillConfig, TrainConfig
        from edge_lung.train.distill import distill
        from edge_lung.train.evaluate import evaluate_run

        run_dir = self.out / "student-run"
        cfg = TrainConfig(
            data=str(self.artifacts["database"]), out=str(run_dir), backbone=DEFAULT_STUDENT,
            optimizer=DEFAULT_STUDENT_OPTIMIZER, features=student_features(DEFAULT_STUDENT),
            epochs=self.cfg.epochs or (2 if self.cfg.quick else DEMO_STUDENT_EPOCHS),
            seed=self.cfg.seed, device="cpu", max_cycles=48 if self.cfg.quick else None,
        )
        _fresh(run_dir)
        distill(cfg, DistillConfig(teacher=str(self.artifacts["run"]), alpha=1.0, temperature=2.0),
                console=self.console)
        report = evaluate_run(run_dir, self.artifacts["database"], split=self.eval_split)
        path = self.out / "eval_student_pytorch.json"
        atomic_write_json(path, report)
        self.console.print(f"[bold]Student ({DEFAULT_STUDENT}), PyTorch, on the {self.eval_split} split:[/bold]")
        self.console.print(format_report(report), highlight=False)
        return {"student_run": run_dir, "student_run_config": run_dir / RUN_CONFIG, "eval_student_pytorch": path}

    def export_student(self) -> dict[str, Path]:
        q8 = self._export_and_evaluate(self.artifacts["student_run"], "student-int8", "eval_student_int8", int8=True)
        fp32 = self._export_and_evaluate(self.artifacts["student_run"], "student-fp32", "eval_student_fp32",
                                         int8=False)
        return {"student_model": q8["model"], "student_parity": q8["parity"], "eval_student_int8": q8["eval"],
                "student_model_fp32": fp32["model"], "eval_student_fp32": fp32["eval"]}

    # -- step 7 ---------------------------------------------------------------------------
    def bench(self) -> dict[str, Path]:
        """Every exported model at each thread count, then the Pareto plot: Score on the evaluation split
        against the 1-thread end-to-end p50."""

        threads = tuple(t for t in self.cfg.threads if t <= usable_cores()) or (1,)
        windows = 5 if self.cfg.quick else self.cfg.bench_windows
        models = [self.artifacts[k] for k, _, _ in PARETO_MODELS]
        report = run_bench(models, BenchConfig(threads=threads, windows=windows, warmup=2))
        path = write_json(report, self.out / "bench.json")
        render(report, self.console)
        points = pareto_points(report, _scored_models(self.artifacts))
        title = f"edge-lung demo: {self.eval_split} split, {report['environment'].get('cpu') or 'this machine'}"
        return {"bench": path, "pareto": save_pareto(points, self.out / "pareto.png", title)}

    # -- run ------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        self._step("database and features", self.database)
        self._step("train a tiny AST backbone from scratch (stand-in for AudioSet AST)", self.pretrain)
        self._step("train LungAdapter adapters on the frozen backbone with SAM + WRS (the teacher)", self.train)
        self._step("evaluate the selected model (PyTorch)", self.evaluate)
        self._step("export INT8 and FP32 ONNX with parity", self.export)
        self._step("replay a held-out recording through the streaming runtime", self.replay)
        self._step(f"distil a {DEFAULT_STUDENT} student from the teacher", self.distill)
        self._step("export the student, INT8 (static QDQ) and FP32, with parity", self.export_student)
        self._step("benchmark the four models; Pareto plot of Score against latency", self.bench)
        summary = self.summary()
        path = self.out / "summary.json"
        atomic_write_json(path, summary)
        self.print_summary(summary)
        return summary

    def summary(self) -> dict[str, Any]:
        """Every figure read back from the artifact it belongs to."""
        a = self.artifacts
        data = _read_json(a["data_summary"])
        run_cfg = _read_json(a["run_config"])
        pt = _read_json(a["eval_pytorch"])
        q8 = _read_json(a["eval_int8"])
        parity = _read_json(a["parity"])
        bench = _read_json(a["bench"])
        student_cfg = _read_json(a["student_run_config"])
        student_parity = _read_json(a["student_parity"])
        events = [json.loads(line) for line in Path(a["replay_events"]).read_text().splitlines() if line.strip()]
        decisions = [e for e in events if e.get("type") == "window"]
        stream_summary = next((e for e in reversed(events) if e.get("type") == "summary"), {})
        return {
            "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self.cfg).items()},
            "steps": [asdict(s) for s in self.steps],
            "data": {"recordings": data["recordings"], "cycles": data["cycles"],
                     "cycles_per_class": data["cycles_per_class"], "problems": data["problem_count"]},
            "train": {"best_epoch": run_cfg["best"]["epoch"], "val": _scores(run_cfg["best"]["val"]),
                      "trainable_percent": run_cfg["parameters"]["trainable_percent"],
                      "seconds": run_cfg.get("train_seconds")},
            "eval_split": self.eval_split,
            "eval_pytorch": _scores(pt),
            "eval_int8": _scores(q8),
            "parity": {"fp32_max_abs_logit_diff": parity["fp32_vs_torch"]["max_abs_logit_diff"],
                       "int8_argmax_agreement": parity["int8_vs_fp32"]["argmax_agreement"],
                       "int8_score_diff": parity["int8_vs_fp32"]["score_diff"],
                       "int8_size_ratio": parity["int8_vs_fp32"]["size_ratio"],
                       "split": parity["split"], "cycles": parity["num_cycles"]},
            "replay": {"recording": str(a["replay_recording"]), "windows": len(decisions),
                       "flagged": sum(1 for d in decisions if d.get("flag")),
                       "verdicts": stream_summary.get("verdicts", {}),
                       "lost_samples": stream_summary.get("lost_samples"),
                       "skipped_windows": stream_summary.get("skipped")},
            "student": {"backbone": student_cfg["backbone"], "best_epoch": student_cfg["best"]["epoch"],
                        "val": _scores(student_cfg["best"]["val"]),
                        "val_teacher_agreement": student_cfg["best"]["val"].get("teacher_agreement"),
                        "teacher_val_score": student_cfg["distill"]["teacher_val"]["score"],
                        "eval_pytorch": _scores(_read_json(a["eval_student_pytorch"])),
                        "int8_argmax_agreement": student_parity["int8_vs_fp32"]["argmax_agreement"],
                        "int8_score_diff": student_parity["int8_vs_fp32"]["score_diff"],
                        "seconds": student_cfg.get("train_seconds")},
            "bench": [{"model": Path(r["name"]).name, "threads": r["threads"], "e2e_p50_ms": r["e2e_ms"]["p50"],
                       "e2e_p95_ms": r["e2e_ms"]["p95"], "peak_rss_mb": r["peak_rss_mb"],
                       "gmac_per_window": r.get("gmac_per_window")} for r in bench["results"]],
            "pareto": pareto_points(bench, _scored_models(a)),
            "artifacts": {k: str(v) for k, v in a.items()},
        }

    def print_summary(self, s: dict[str, Any]) -> None:
        a = s["artifacts"]
        table = Table(title="edge-lung demo: summary (every figure read from the file named beside it)")
        table.add_column("what")
        table.add_column("figure")
        table.add_column("from", overflow="fold")
        d = s["data"]
        table.add_row("database", f"{d['recordings']} recordings, {d['cycles']} cycles, {d['problems']} problems",
                      a["data_summary"])
        t = s["train"]
        table.add_row("validation (selected epoch)", f"epoch {t['best_epoch']}: {_fmt_scores(t['val'])}",
                      a["run_config"])
        table.add_row("trainable parameters", f"{t['trainable_percent']:.1f}%", a["run_config"])
        table.add_row(f"{s['eval_split']}, PyTorch", _fmt_scores(s["eval_pytorch"]), a["eval_pytorch"])
        table.add_row(f"{s['eval_split']}, INT8 ONNX", _fmt_scores(s["eval_int8"]), a["eval_int8"])
        p = s["parity"]
        table.add_row(
            "parity",
            f"FP32 vs torch max |dlogit| {p['fp32_max_abs_logit_diff']:.1e}; INT8 agrees on "
            f"{p['int8_argmax_agreement']:.1f}% of {p['cycles']} {p['split']} cycles, "
            f"Score {p['int8_score_diff']:+.2f}, size {100 * p['int8_size_ratio']:.0f}% of FP32",
            a["parity"],
        )
        r = s["replay"]
        quality = ", ".join(f"{k} {v}" for k, v in sorted(r["verdicts"].items(), key=lambda kv: kv[0] != "ok"))
        table.add_row("streaming replay", f"{r['windows']} windows (quality: {quality or '-'}), "
                      f"{r['flagged']} flagged abnormal, {r['lost_samples']} lost samples, "
                      f"{r['skipped_windows']} skipped", a["replay_events"])
        st = s["student"]
        table.add_row(f"student ({st['backbone']}), distilled", f"epoch {st['best_epoch']}: {_fmt_scores(st['val'])}; "
                      f"agrees with the teacher on {st['val_teacher_agreement']:.1f}% of validation cycles "
                      f"(teacher: Score {st['teacher_val_score']:.1f})", a["student_run_config"])
        table.add_row(f"student, {s['eval_split']}, PyTorch", _fmt_scores(st["eval_pytorch"]),
                      a["eval_student_pytorch"])
        table.add_row("student parity", f"INT8 agrees on {st['int8_argmax_agreement']:.1f}%, Score "
                      f"{st['int8_score_diff']:+.2f}", a["student_parity"])
        for b in s["bench"]:
            gmac = f", {b['gmac_per_window']:.3f} GMAC/window" if b.get("gmac_per_window") else ""
            table.add_row(f"bench {b['model']}, {b['threads']} thread(s)", f"end-to-end p50 {b['e2e_p50_ms']:.1f} ms, "
                          f"p95 {b['e2e_p95_ms']:.1f} ms, peak memory {b['peak_rss_mb']} MB{gmac}", a["bench"])
        best = ", ".join(f"{p['label']} {p['precision']}" for p in s["pareto"] if p["on_front"])
        table.add_row("Pareto plot", f"Score vs ms per window; on the front: {best}", a["pareto"])
        total = sum(step["seconds"] for step in s["steps"])
        table.add_row("wall time", f"{total:.0f} s in {len(s['steps'])} steps", "")
        self.console.print(table)
        self.console.print(f"Artifacts under {self.out}; the device needs only {a['model']}")


DEMO_BACKBONE_EPOCHS = 30
DEMO_ADAPTER_EPOCHS = 6
DEMO_STUDENT_EPOCHS = 8
# (model artifact, its evaluation artifact, label) of each point of the Pareto plot
PARETO_MODELS = (
    ("model", "eval_int8", "teacher"),
    ("model_fp32", "eval_fp32", "teacher"),
    ("student_model", "eval_student_int8", "student"),
    ("student_model_fp32", "eval_student_fp32", "student"),
)


def _scored_models(artifacts: dict[str, Any]) -> dict[str, tuple[str, float]]:
    """Model path -> (label, Score on the evaluation split) for each model of the Pareto plot."""
    return {str(artifacts[m]): (label, _read_json(artifacts[e])["score"]) for m, e, label in PARETO_MODELS}


def pareto_points(bench: dict[str, Any], scored: dict[str, tuple[str, float]]) -> list[dict[str, Any]]:
    """One point per benchmarked model at its fewest threads: label, precision, Score (from `scored`: model path
    -> (label, Score)), end-to-end p50 ms, GMAC per window, and whether it is on the Pareto front."""

    fewest = min(r["threads"] for r in bench["results"])
    points = []
    for r in bench["results"]:
        if r["threads"] != fewest or r["name"] not in scored:
            continue
        label, score = scored[r["name"]]
        points.append({"label": label, "precision": r.get("quantization") or "fp32", "model": r["name"],
                       "threads": fewest, "ms": r["e2e_ms"]["p50"], "score": score,
                       "gmac_per_window": r.get("gmac_per_window")})
    front = set(pareto_front(points))
    return [{**p, "on_front": i in front} for i, p in enumerate(points)]


def _read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def _scores(report: dict[str, Any]) -> dict[str, float]:
    keys = ("specificity", "sensitivity", "score", "sensitivity_relaxed_2class", "score_relaxed_2class")
    return {k: report[k] for k in keys}


def _fmt_scores(s: dict[str, float]) -> str:
    return (f"Sp {s['specificity']:.1f}  Se {s['sensitivity']:.1f}  Score {s['score']:.1f} (official); "
            f"relaxed 2-class Score {s['score_relaxed_2class']:.1f}")


def _fresh(run_dir: Path) -> None:
    """A demo re-run starts its training runs afresh; the database and decode cache are kept."""
    import shutil

    if run_dir.exists():
        shutil.rmtree(run_dir)


def run_demo(cfg: DemoConfig, console: Console | None = None) -> dict[str, Any]:
    """Run the whole pipeline; returns the summary also written to OUT/summary.json."""
    os.environ.setdefault("EDGE_LUNG_CACHE_DIR", str(Path(cfg.out_dir).absolute() / "cache"))
    return Demo(cfg, console).run()
