"""The main job at a reduced size: every artifact exists and the summary's figures are the files'."""

import json
from pathlib import Path

import pytest
from rich.console import Console

from edge_lung.demo import DemoConfig, run_demo


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path):
    console = Console(record=True, width=160, force_terminal=False)
    summary = run_demo(DemoConfig(out_dir=tmp_path / "demo", quick=True, threads=(1,)), console=console)
    artifacts = {k: Path(v) for k, v in summary["artifacts"].items()}
    for name, path in artifacts.items():
        assert path.exists(), f"{name}: {path} missing"
    assert json.loads((tmp_path / "demo" / "summary.json").read_text()) == json.loads(json.dumps(summary))

    def read(name):
        return json.loads(artifacts[name].read_text())

    data = read("data_summary")
    assert summary["data"]["cycles"] == data["cycles"] and summary["data"]["recordings"] == data["recordings"]
    best = read("run_config")["best"]
    assert summary["train"]["val"]["score"] == best["val"]["score"]
    assert summary["eval_pytorch"]["score"] == read("eval_pytorch")["score"]
    assert summary["eval_int8"]["score"] == read("eval_int8")["score"]
    parity = read("parity")
    assert summary["parity"]["int8_argmax_agreement"] == parity["int8_vs_fp32"]["argmax_agreement"]
    assert summary["parity"]["fp32_max_abs_logit_diff"] < 1e-4
    bench = read("bench")
    assert [b["e2e_p95_ms"] for b in summary["bench"]] == [r["e2e_ms"]["p95"] for r in bench["results"]]
    events = [json.loads(x) for x in artifacts["replay_events"].read_text().splitlines()]
    assert summary["replay"]["windows"] == sum(e["type"] == "window" for e in events) > 0
    assert summary["replay"]["lost_samples"] == 0
    assert sum(summary["replay"]["verdicts"].values()) == summary["replay"]["windows"]  # windows per quality verdict
    text = console.export_text()
    assert "Score" in text and "relaxed 2-class" in text and str(artifacts["model"]) in text
    # the student: distilled from the demo's run, exported, benchmarked, and on the Pareto plot
    student = read("student_run_config")
    assert student["backbone"] == summary["student"]["backbone"] == "mobilenet"
    assert student["distill"]["teacher"]["path"] == str(artifacts["run"])
    assert student["features"]["num_mel_bins"] == 64  # `distill`'s default student, front end included
    assert summary["student"]["int8_argmax_agreement"] == read("student_parity")["int8_vs_fp32"]["argmax_agreement"]
    benched = ("model", "model_fp32", "student_model", "student_model_fp32")
    assert {Path(r["name"]) for r in bench["results"]} == {artifacts[k] for k in benched}
    points = {(p["label"], p["precision"]): p for p in summary["pareto"]}
    assert set(points) == {("teacher", "int8-dynamic"), ("teacher", "fp32"), ("student", "int8-static"),
                           ("student", "fp32")}
    assert points[("student", "int8-static")]["score"] == read("eval_student_int8")["score"]
    assert points[("teacher", "fp32")]["ms"] == next(r["e2e_ms"]["p50"] for r in bench["results"]
                                                     if Path(r["name"]) == artifacts["model_fp32"])
    assert any(p["on_front"] for p in summary["pareto"]) and artifacts["pareto"].stat().st_size > 10_000
