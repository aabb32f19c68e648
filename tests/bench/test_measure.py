"""`edge-lung bench` (issue #6): report fields and their relations, the table, the real-time verdict, bad input.

No timing assertions: speed figures belong to benchmarks/results/, not to tests. The tests run the
harness on the tiny ONNX classifier of edge_lung.testing with a handful of windows.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge_lung.bench.environment import usable_cores
from edge_lung.bench.measure import (
    SCHEMA,
    BenchConfig,
    BenchError,
    comparisons,
    latency_stats,
    parse_threads,
    run_bench,
    verdict,
)
from edge_lung.bench.report import results_markdown, row_labels, short_names, write_json
from edge_lung.cli import app
from edge_lung.machine import parse_cpuinfo
from edge_lung.plots import plot_bench_report

REPO = Path(__file__).resolve().parents[2]
WINDOWS = 4


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnx", reason="building the tiny test model needs onnx (pip install 'edge-lung[export]')")
    from edge_lung.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("bench") / "tiny")


@pytest.fixture(scope="module")
def report(tiny_dir: Path) -> dict:
    """One library run: 1 thread, and all usable cores as a second row where there are several."""
    threads = (1, 2) if usable_cores() >= 2 else (1,)
    cfg = BenchConfig(threads=threads, windows=WINDOWS, warmup=1, hop_s=0.5, budget_ms=400.0)
    return run_bench([tiny_dir], cfg)


def test_report_fields_and_their_relations(report: dict, tiny_dir: Path) -> None:
    manifest = json.loads((tiny_dir / "manifest.json").read_text())
    assert report["schema"] == SCHEMA
    env = report["environment"]
    for key in ("cpu", "cpu_flags", "cores", "usable_cores", "memory_bytes", "os", "python", "onnxruntime", "numpy"):
        assert key in env, key
    assert env["cores"] >= env["usable_cores"] >= 1
    assert [r["threads"] for r in report["results"]] == list(report["settings"]["threads"])
    for row in report["results"]:
        assert row["backend"] == "onnxruntime" and row["quantization"] == manifest["quantization"]
        assert row["sha256"] == manifest["sha256"]
        assert row["size_bytes"] == (tiny_dir / manifest["model_file"]).stat().st_size
        assert row["thread_env"]["OMP_NUM_THREADS"] is not None
        samples = row["samples"]
        for part in ("gate_ms", "features_ms", "model_ms", "e2e_ms"):
            stats = row[part]
            assert stats["n"] == len(samples[part]) == WINDOWS
            assert 0 < stats["min"] <= stats["p50"] <= stats["p95"] <= stats["p99"] <= stats["max"]
        # end to end is quality gate + features + model, window by window (rounding aside)
        parts = zip(samples["gate_ms"], samples["features_ms"], samples["model_ms"], samples["e2e_ms"], strict=True)
        for g, f, m, e in parts:
            assert e == pytest.approx(g + f + m, abs=0.01)
        assert row["rtf"] == pytest.approx(row["e2e_ms"]["mean"] / (1000 * row["window_s"]), rel=1e-3, abs=1e-6)
        assert row["load_ms"] > 0 and row["cold_ms"] >= row["cold_model_ms"] > 0
        if row["peak_rss_mb"] is not None:
            assert row["peak_rss_mb"] >= row["rss_before_load_mb"] > 0
            # the stages in the order they happen: each peak is at least the one before and the current size
            stages = [row["memory_stages"][k] for k in ("imported", "loaded", "cold_window", "end")]
            peaks = [s["peak_rss_mb"] for s in stages]
            assert peaks == sorted(peaks) and peaks[0] == row["rss_before_load_mb"], stages
            assert peaks[-1] == row["peak_rss_mb"] and stages[-1]["rss_mb"] == row["rss_end_mb"]
            assert all(s["rss_mb"] <= s["peak_rss_mb"] for s in stages)
        assert row["verdict"]["limit_ms"] == 400.0 and row["verdict"]["limited_by"] == "budget"


def test_memory_is_measured_per_process(tiny_dir: Path) -> None:
    """A worker's peak memory is its own, not its parent's (getrusage's ru_maxrss survives exec; VmHWM does not)."""
    import numpy as np

    ballast = np.ones(400 * 2**20 // 8)  # 400 MB resident in this process while the worker runs
    rep = run_bench([tiny_dir], BenchConfig(threads=(1,), windows=1, warmup=0))
    (row,) = rep["results"]
    if row["peak_rss_mb"] is None:
        pytest.skip("no peak-memory source on this platform")
    assert ballast.sum() > 0
    assert row["peak_rss_mb"] < 400, row


def test_cli_prints_table_and_writes_json_and_plot(tiny_dir: Path, tmp_path: Path) -> None:
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    args = ["bench", str(tiny_dir), "--threads", "1", "--windows", "2", "--warmup", "0", "--json", str(out)]
    have_mpl = True
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        have_mpl = False
    if have_mpl:
        args += ["--plot", str(png)]
    res = CliRunner().invoke(app, args + ["--hop", "2", "--budget-ms", "5000"])
    assert res.exit_code == 0, res.output
    for text in ("Latency per 8.0 s window", "e2e p95", "peak RSS MB", "tiny", "keeps up", "Machine:"):
        assert text in res.output, text
    data = json.loads(out.read_text())
    assert data["settings"]["hop_s"] == 2.0 and data["results"][0]["verdict"]["limited_by"] == "hop"
    if have_mpl:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_names_the_install(
    report: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")] or ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"pip install 'edge-lung\[plot\]'"):
        plot_bench_report(report, row_labels(report["results"]), tmp_path / "x.png")


@pytest.mark.parametrize(
    ("p95", "p99", "mean", "hop_s", "budget", "status", "sustainable", "limited_by"),
    [
        (100, 150, 90, 1.0, None, "keeps up", True, "hop"),
        (900, 1100, 800, 1.0, None, "marginal", True, "hop"),
        (1200, 1300, 900, 1.0, None, "too slow", True, "hop"),
        (1200, 1300, 1100, 1.0, None, "too slow", False, "hop"),
        (300, 450, 250, 1.0, 400.0, "marginal", True, "budget"),
        (300, 350, 250, 0.25, 400.0, "too slow", False, "hop"),
        (400, 400, 300, 1.0, 400.0, "keeps up", True, "budget"),
    ],
)
def test_verdict(p95, p99, mean, hop_s, budget, status, sustainable, limited_by) -> None:
    v = verdict({"p95": p95, "p99": p99, "mean": mean}, hop_s, budget)
    limit = min(1000 * hop_s, budget or math.inf)
    assert (v["status"], v["sustainable"], v["limited_by"], v["limit_ms"]) == (status, sustainable, limited_by, limit)
    assert v["headroom_p95_ms"] == pytest.approx(limit - p95)
    assert v["headroom_p99"] == pytest.approx((limit - p99) / limit, abs=1e-4)
    assert v["duty"] == pytest.approx(mean / (1000 * hop_s), abs=1e-4)


def test_latency_stats_percentiles() -> None:
    s = latency_stats(list(range(1, 101)))
    assert (s["n"], s["min"], s["max"], s["mean"]) == (100, 1, 100, 50.5)
    assert s["p50"] == pytest.approx(50.5) and s["p99"] == pytest.approx(99.01)
    with pytest.raises(ValueError, match="at least one sample"):
        latency_stats([])


def test_bad_model_dirs_get_clear_errors(tmp_path: Path, tiny_dir: Path) -> None:
    runner = CliRunner()
    missing = tmp_path / "nope"
    res = runner.invoke(app, ["bench", str(missing)])
    assert res.exit_code == 1 and str(missing) in res.output and "no such model directory" in res.output
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(app, ["bench", str(empty)])
    assert res.exit_code == 1 and "manifest.json" in res.output and str(empty) in res.output
    # a model file replaced after export: refused before anything is timed
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in tiny_dir.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    manifest = json.loads((bad / "manifest.json").read_text())
    (bad / manifest["model_file"]).write_bytes(b"not an onnx model")
    res = runner.invoke(app, ["bench", str(bad)])
    assert res.exit_code == 1 and "SHA-256" in res.output and manifest["model_file"] in res.output
    # an .onnx file without edge-lung metadata fails inside the worker; the error still names it
    foreign = tmp_path / "foreign.onnx"
    foreign.write_bytes(b"not an onnx model")
    with pytest.raises(BenchError, match="foreign.onnx"):
        run_bench([foreign], BenchConfig(threads=(1,), windows=1, warmup=0))


def test_bad_options(tmp_path: Path, tiny_dir: Path) -> None:
    runner = CliRunner()
    for args, text in (
        (["--threads", "1,x"], "--threads"),
        (["--threads", "0"], "--threads"),
        (["--threads", str(usable_cores() + 1)], "at most"),
        (["--windows", "0"], "--windows"),
        (["--hop", "-1"], "--hop"),
        (["--budget-ms", "nan"], "--budget-ms"),
    ):
        res = runner.invoke(app, ["bench", str(tiny_dir), *args])
        assert res.exit_code == 2 and text in res.output, (args, res.output)
    res = runner.invoke(app, ["bench", str(tiny_dir), "--json", str(tmp_path / "no" / "r.json")])
    assert res.exit_code == 1 and "--json" in res.output and "does not exist" in res.output
    res = runner.invoke(app, ["bench", str(tiny_dir), "--compare-torch", str(tmp_path / "norun")])
    assert res.exit_code == 1 and "norun" in res.output
    with pytest.raises(ValueError, match="each count once"):
        BenchConfig(threads=(1, 1))
    assert parse_threads("1, 2,") == (1, 2)


def test_parse_cpuinfo() -> None:
    x86 = "processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu sse avx avx2 fma avx512f avx512_vnni\n"
    pi4 = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU part\t: 0xd08\n"
    pi5 = "processor\t: 0\nFeatures\t: fp asimd asimdhp asimddp\nCPU implementer\t: 0x41\nCPU part\t: 0xd0b\n"
    a, b, c = parse_cpuinfo(x86), parse_cpuinfo(pi4), parse_cpuinfo(pi5)
    assert (a["model"], a["int8_dot"], a["neon"]) == ("AMD EPYC 9R14", True, False)
    assert {"avx2", "avx512_vnni"} <= set(a["flags"])
    assert (b["model"], b["neon"], b["int8_dot"]) == ("Cortex-A72", True, False)
    assert (c["model"], c["int8_dot"], "asimddp" in c["flags"]) == ("Cortex-A76", True, True)


def test_results_markdown_rows_come_from_json(report: dict, tmp_path: Path) -> None:
    path = write_json(report, tmp_path / "r.json")
    table = results_markdown([path])
    rows = [line for line in table.splitlines()[2:] if line]
    assert len(rows) == len(report["results"])
    assert all(f"[{path.name}](results/{path.name})" in row for row in rows)
    (tmp_path / "old.json").write_text(json.dumps({"schema": "something-else"}))
    with pytest.raises(BenchError, match="old.json"):
        results_markdown([tmp_path / "old.json"])


def test_readme_table_matches_committed_results() -> None:
    """benchmarks/README.md's results table is exactly what benchmarks/results/*.json say."""
    results = sorted((REPO / "benchmarks" / "results").glob("*.json"))
    if not results:
        pytest.skip("no committed benchmark results in benchmarks/results/")
    readme = (REPO / "benchmarks" / "README.md").read_text()
    for line in results_markdown(results).splitlines()[2:]:
        assert line in readme, f"benchmarks/README.md lacks the row {line!r}; regenerate it from the JSON files"


def _row(backend: str, threads: int, name: str, model_p50: float, e2e_p50: float, rss: float | None, run=None) -> dict:
    return {
        "backend": backend,
        "threads": threads,
        "name": name,
        "run_dir": run,
        "model_ms": {"p50": model_p50},
        "e2e_ms": {"p50": e2e_p50},
        "peak_rss_mb": rss,
    }


def test_comparisons_pair_torch_and_onnx_rows_by_threads(tmp_path: Path) -> None:
    """Hand-made rows with known ratios: torch eager / ONNX, above 1 where ONNX is faster or smaller."""
    run, other = str(tmp_path / "run"), str(tmp_path / "other")
    rows = [
        _row("onnxruntime", 1, "int8", model_p50=10.0, e2e_p50=20.0, rss=100.0, run=run),
        _row("onnxruntime", 2, "int8", model_p50=8.0, e2e_p50=16.0, rss=None, run=run),
        _row("onnxruntime", 1, "fp32", model_p50=40.0, e2e_p50=50.0, rss=200.0, run=other),
        _row("torch-eager", 1, run, model_p50=30.0, e2e_p50=40.0, rss=300.0, run=run + "/."),
        _row("torch-eager", 2, run, model_p50=4.0, e2e_p50=12.0, rss=250.0, run=run),
    ]
    got = {(c["threads"], c["onnx"]): c for c in comparisons(rows)}
    assert set(got) == {(1, "int8"), (1, "fp32"), (2, "int8")}  # a torch row meets the ONNX rows of its thread count
    one = got[(1, "int8")]
    assert (one["model_p50_ratio"], one["e2e_p50_ratio"], one["peak_rss_ratio"]) == (3.0, 2.0, 3.0)
    assert one["same_run"] and one["torch"] == run
    fp32 = got[(1, "fp32")]
    assert (fp32["model_p50_ratio"], fp32["e2e_p50_ratio"], fp32["peak_rss_ratio"]) == (0.75, 0.8, 1.5)
    assert not fp32["same_run"]
    two = got[(2, "int8")]
    assert (two["model_p50_ratio"], two["e2e_p50_ratio"], two["peak_rss_ratio"]) == (0.5, 0.75, None)


def test_short_names() -> None:
    rows = [{"name": "/a/int8"}, {"name": "/b/int8"}, {"name": "/a/fp32"}, {"name": "/a/fp32"}]
    assert short_names(rows) == ["/a/int8", "/b/int8", "fp32", "fp32"]


def test_bench_modules_import_without_torch_or_matplotlib() -> None:
    code = (
        "import sys, edge_lung.bench, edge_lung.cli.bench_cmd; "
        "bad = [m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_small_model_loads_without_openssl(tiny_dir: Path) -> None:
    """The device process that loads a small model and checks its hashes does not map libcrypto (3.7 MB)."""
    code = (
        "import sys; from edge_lung.runtime.artifact.e2e import load_model; "
        f"clf = load_model({str(tiny_dir)!r}, 'model', threads=1); "
        "assert clf.info.manifest.get('sha256'), 'the manifest hash was not read'; "
        "assert '_hashlib' not in sys.modules, 'hashlib (OpenSSL) was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_sha256_file_is_sha256_on_both_sides_of_the_size_threshold(tmp_path: Path, monkeypatch) -> None:
    import hashlib

    from edge_lung import fileio

    path = tmp_path / "blob"
    path.write_bytes(bytes(range(256)) * 5000)
    want = hashlib.sha256(path.read_bytes()).hexdigest()
    assert fileio.sha256_file(path, chunk=4096) == want  # built-in SHA-256
    monkeypatch.setattr(fileio, "SMALL_FILE_BYTES", 1000)
    assert fileio.sha256_file(path, chunk=4096) == want  # OpenSSL's


@pytest.mark.slow
def test_compare_torch_adds_eager_rows_and_ratios(tiny_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from edge_lung.config import LABELS, FeatureConfig
    from edge_lung.train import model as M

    features = FeatureConfig()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    M.save_backbone(M.load_backbone("tiny", features, len(LABELS)), run_dir)
    config = {
        "labels": list(LABELS),
        "features": features.to_dict(),
        "data": "none",
        "adapter": "none",
        "backbone": "tiny",
        "best": {"score": 0.0},
    }
    (run_dir / "config.json").write_text(json.dumps(config))
    rep = run_bench([tiny_dir], BenchConfig(threads=(1,), windows=2, warmup=0), compare_torch=run_dir)
    backends = [r["backend"] for r in rep["results"]]
    assert backends == ["onnxruntime", "torch-eager"]
    torch_row = rep["results"][1]
    assert torch_row["quantization"] == "fp32" and torch_row["size_bytes"] > 0
    (cmp,) = rep["comparisons"]
    assert cmp["threads"] == 1 and cmp["torch"] == str(run_dir) and cmp["onnx"] == str(tiny_dir)
    assert not cmp["same_run"]  # the tiny ONNX model was not exported from this run
    # the ratios themselves are checked on hand-made rows: test_comparisons_pair_torch_and_onnx_rows_by_threads
    assert all(cmp[k] > 0 for k in ("model_p50_ratio", "e2e_p50_ratio"))


def test_graph_e2e_rows_and_their_comparison(tmp_path: Path) -> None:
    """`--graph model,e2e`: one row per graph and thread count; the e2e row times model.e2e.onnx on padded audio
    (its 'features' step is the padding alone) and the comparison pairs the rows of the same model."""
    pytest.importorskip("onnx", reason="building model.e2e.onnx needs onnx (pip install '.[export]')")
    from edge_lung.config import FeatureConfig
    from edge_lung.testing import build_tiny_e2e_model

    model_dir = build_tiny_e2e_model(tmp_path / "m", FeatureConfig(window_s=4.0, num_mel_bins=64))
    rep = run_bench([model_dir], BenchConfig(threads=(1,), windows=3, warmup=0, graphs=("model", "e2e")))
    rows = {r["graph"]: r for r in rep["results"]}
    assert set(rows) == {"model", "e2e"}
    assert rows["e2e"]["model_file"].endswith("model.e2e.onnx") and rows["model"]["model_file"].endswith("tiny.onnx")
    # numpy fbank on a 4 s window takes milliseconds; padding alone takes far less
    assert rows["e2e"]["features_ms"]["p50"] < 0.5 * rows["model"]["features_ms"]["p50"]
    assert rows["e2e"]["model_ms"]["p50"] > rows["model"]["model_ms"]["p50"]  # the front end moved into the graph
    (c,) = rep["graph_comparisons"]
    assert c["e2e_over_model_p50"] == round(rows["e2e"]["e2e_ms"]["p50"] / rows["model"]["e2e_ms"]["p50"], 3)
    with pytest.raises(ValueError, match="graphs \\(--graph\\): expected one or both of model,e2e"):
        BenchConfig(graphs=("onnx",))


def test_small_models_run_without_the_memory_arena() -> None:
    """The CNN students' sessions drop onnxruntime's arena and memory pattern (peak memory); the ASTs keep them."""
    from edge_lung.runtime.artifact.model_dir import SMALL_MODEL_BYTES, session_options

    small, large, unknown = (session_options(1, n) for n in (SMALL_MODEL_BYTES, SMALL_MODEL_BYTES + 1, None))
    assert (small.enable_cpu_mem_arena, small.enable_mem_pattern) == (False, False)
    assert (large.enable_cpu_mem_arena, large.enable_mem_pattern) == (True, True)
    assert (unknown.enable_cpu_mem_arena, unknown.enable_mem_pattern) == (True, True)
