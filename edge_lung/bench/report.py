"""Bench report: reading the figures of an `edge-lung bench` report.

Owns the console tables and verdict lines (`render`), the benchmarks/README.md results table
(`results_markdown`), the row names and labels shared with the plot (`edge_lung.plots`), and
writing the report as JSON. Measures nothing; see `bench.measure` for the figures.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_lung.bench.measure import SCHEMA, BenchError
from edge_lung.fileio import atomic_write_json

LATENCY_COLUMNS = (
    "model",
    "runtime",
    "thr",
    "gate p50",
    "feat p50",
    "model p50",
    "model p95",
    "e2e p50",
    "e2e p95",
    "e2e p99",
    "e2e max",
    "RTF",
)
MEMORY_STAGES = (("imported", "imports"), ("loaded", "model loaded"), ("cold_window", "cold window"),
                 ("end", "last window"))
FOOTPRINT_COLUMNS = ("model", "thr", "load ms", "cold ms", "peak RSS MB", "RSS before load MB", "file MB",
                     "GMAC/window", "GMAC/s")


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    """Write the report atomically (indent 2, keys sorted)."""

    path = Path(path)
    if path.parent and not path.parent.is_dir():
        raise BenchError(f"--json {path}: folder {path.parent} does not exist")
    atomic_write_json(path, report)
    return path


def runtime_label(row: dict[str, Any]) -> str:
    """'onnx int8-dynamic', 'onnx fp32', 'onnx e2e fp32' (model.e2e.onnx) or 'torch fp32': what ran, in a few
    characters."""
    graph = " e2e" if row.get("graph") == "e2e" else ""
    return f"{'torch' if row['backend'] == 'torch-eager' else 'onnx'}{graph} {row['quantization']}"


def short_names(rows: list[dict[str, Any]]) -> list[str]:
    """Each row's model folder name, or its full path where two different models share a name."""
    base = [Path(r["name"]).name or r["name"] for r in rows]
    owners: dict[str, set[str]] = {}
    for r, b in zip(rows, base, strict=True):
        owners.setdefault(b, set()).add(r["name"])
    return [r["name"] if len(owners[b]) > 1 else b for r, b in zip(rows, base, strict=True)]


def row_labels(rows: list[dict[str, Any]]) -> list[str]:
    """'name\\nruntime, N thr' per row: the plot's axis labels."""
    return [f"{name}\n{runtime_label(r)}, {r['threads']} thr" for r, name in zip(rows, short_names(rows), strict=True)]


def _mb(n: float | None) -> str:
    return "-" if n is None else f"{n:.0f}"


def _file_mb(size_bytes: int | None) -> str:
    if size_bytes is None:
        return "-"
    return f"{size_bytes / 1e6:.1f}" if size_bytes >= 1e6 else f"{size_bytes / 1e6:.3f}"


def environment_line(env: dict[str, Any]) -> str:
    """One line: CPU, cores, memory, flags, versions, load."""
    mem = env.get("memory_bytes")
    flags = " ".join(env.get("cpu_flags") or []) or "no SIMD flags read"
    parts = [
        env.get("board") or env.get("cpu"),
        f"{env.get('machine')}, {env.get('usable_cores')}/{env.get('cores')} cores",
        f"{mem / 2**30:.1f} GiB" if mem else None,
        f"governor {env['governor']}" if env.get("governor") else None,
        flags,
        f"onnxruntime {env.get('onnxruntime')}, numpy {env.get('numpy')}, Python {env.get('python')}",
        f"load {env['load_avg_1m']}" if env.get("load_avg_1m") is not None else None,
    ]
    return " | ".join(p for p in parts if p)


def verdict_line(row: dict[str, Any]) -> str:
    """'model, N threads: keeps up with a decision every 1.0 s: p95 ... (headroom ...)'."""
    v, e = row["verdict"], row["e2e_ms"]
    limit = f"a decision every {v['hop_ms'] / 1000:g} s"
    if v["budget_ms"] is not None:
        limit += f" within {v['budget_ms']:g} ms"
    text = (
        f"{row['name']} ({runtime_label(row)}), {row['threads']} thread(s): {v['status']} with {limit} "
        f"(limit {v['limit_ms']:g} ms, by {v['limited_by']}): p95 {e['p95']:.1f} ms ({v['headroom_p95']:+.0%} "
        f"headroom), p99 {e['p99']:.1f} ms ({v['headroom_p99']:+.0%}); inference uses {v['duty']:.0%} of each hop"
    )
    if not v["sustainable"]:
        text += "; the mean reaches the hop, so the backlog grows without bound"
    return text


def render(report: dict[str, Any], console: Any) -> None:
    """Print the environment, a latency table, a footprint table, ratios and verdicts with rich."""
    rows = report["results"]
    console.print(f"[bold]Machine:[/bold] {environment_line(report['environment'])}")
    console.print(latency_table(rows, report["settings"]))
    console.print(footprint_table(rows))
    for c in report.get("comparisons", []):
        console.print(comparison_line(c))
    for c in report.get("graph_comparisons", []):
        console.print(
            f"e2e graph / numpy front end + model at {c['threads']} thread(s) ({Path(c['name']).name}): end-to-end "
            f"p50 {c['e2e_graph_e2e_p50_ms']:.1f} vs {c['model_e2e_p50_ms']:.1f} ms (x{c['e2e_over_model_p50']}), "
            f"peak memory x{c['peak_rss_ratio']}"
        )
    for r, name in zip(rows, short_names(rows), strict=True):
        if r.get("memory_stages"):
            console.print(memory_line(name, r))
    for line in dict.fromkeys(export_speed_line(r) for r in rows if r.get("export_speed")):
        console.print(line)
    for r in rows:
        console.print(verdict_line(r))
    console.print(
        "RTF = mean end-to-end time / window length (below 1: faster than real time). Figures from a "
        "shared or throttled machine are noisy: check load and thermal_after in the JSON."
    )
    env = report["environment"]
    if env.get("load_avg_1m") is not None and env.get("load_avg_1m_after") is not None:
        console.print(
            f"Load average (1 min) {env['load_avg_1m']} at the start, {env['load_avg_1m_after']} at the end, "
            f"on {env['cores']} cores (a load above {env['cores']}: other work competed for them)."
        )


def export_speed_line(row: dict[str, Any]) -> str:
    """The FP32 vs INT8 comparison `export --int8` measured (model only, 1 thread) and which file it recommends,
    beside this run's own model p50 at the thread count measured here."""
    s = row["export_speed"]
    faster = {"int8": "INT8 is faster there", "fp32": "INT8 is slower there: the FP32 export is the faster file",
              "same": "INT8 is no faster there"}[s["faster"]]
    return (f"{Path(row['model_file']).name}: at export, INT8 {s['int8_ms_p50']:.2f} ms vs FP32 {s['fp32_ms_p50']:.2f} "
            f"ms per window (model only, 1 thread, {s['machine']}): {faster}; here the model takes "
            f"{row['model_ms']['p50']:.2f} ms p50 at {row['threads']} thread(s)")


def memory_line(name: str, row: dict[str, Any]) -> str:
    """'name, N thread(s): resident MB after imports A, model loaded B, cold window C, last window D; peak P'."""
    st = row["memory_stages"]
    parts = ", ".join(f"{label} {_mb(st[key]['rss_mb'])}" for key, label in MEMORY_STAGES if key in st)
    return f"{name}, {row['threads']} thread(s): resident MB after {parts}; peak {_mb(row['peak_rss_mb'])} MB"


def latency_table(rows: list[dict[str, Any]], settings: dict[str, Any]) -> Any:
    """rich Table: quality gate, features, model and end-to-end percentiles and the RTF, one row per (model, threads).

    Reports written before the gate have no `gate_ms`: their column shows '-'."""
    from rich.table import Table

    table = Table(
        title=f"Latency per {rows[0]['window_s'] if rows else '?'} s window, ms "
        f"({settings['windows']} timed after {settings['warmup']} warm-up)",
        title_justify="left",
    )
    for col in LATENCY_COLUMNS:
        table.add_column(col, justify="left" if col in ("model", "runtime") else "right")
    for r, name in zip(rows, short_names(rows), strict=True):
        f, m, e = r["features_ms"], r["model_ms"], r["e2e_ms"]
        gate = r.get("gate_ms")
        table.add_row(
            name,
            runtime_label(r),
            str(r["threads"]),
            "-" if gate is None else f"{gate['p50']:.2f}",
            *(f"{x:.1f}" for x in (f["p50"], m["p50"], m["p95"], e["p50"], e["p95"], e["p99"], e["max"])),
            f"{r['rtf']:.3f}",
        )
    return table


def footprint_table(rows: list[dict[str, Any]]) -> Any:
    """rich Table: load and cold-start times, peak and baseline memory, file size."""
    from rich.table import Table

    table = Table(title="Footprint (each row measured in a fresh process)", title_justify="left")
    for col in FOOTPRINT_COLUMNS:
        table.add_column(col, justify="left" if col == "model" else "right")
    for r, name in zip(rows, short_names(rows), strict=True):
        table.add_row(
            name,
            str(r["threads"]),
            f"{r['load_ms']:.0f}",
            f"{r['cold_ms']:.0f}",
            _mb(r["peak_rss_mb"]),
            _mb(r["rss_before_load_mb"]),
            _file_mb(r["size_bytes"]),
            *_compute_cells(r),
        )
    return table


def _compute_cells(row: dict[str, Any]) -> tuple[str, str]:
    """GMAC per window and GMAC/s at the model's p50; '-' for models exported before the count (and e2e rows)."""
    gmac, rate = row.get("gmac_per_window"), row.get("gmac_per_s")
    return ("-" if gmac is None else f"{gmac:.3f}", "-" if rate is None else f"{rate:.1f}")


def comparison_line(c: dict[str, Any]) -> str:
    """'torch eager / ONNX at N thread(s) (...): model p50 xR, ...' for one entry of `comparisons`."""
    return (
        f"torch eager / ONNX at {c['threads']} thread(s) ({c['onnx']}"
        f"{', exported from this run' if c['same_run'] else ', another run'}): model p50 x{c['model_p50_ratio']}, "
        f"end-to-end p50 x{c['e2e_p50_ratio']}, peak memory x{c['peak_rss_ratio']}"
    )


def results_markdown(paths: Sequence[str | Path]) -> str:
    """The benchmarks/README.md results table, one row per (model, threads) of each JSON report.

    `load` is the 1-minute load average at the start of the run: above the core count, other work
    shared the cores and the latencies are not the machine's alone.
    """
    lines = [
        "| machine | cores | load | model | runtime | threads | e2e p50 ms | e2e p95 ms | e2e p99 ms | RTF "
        "| peak RSS MB | file MB | JSON |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for path in paths:
        path = Path(path)
        report = json.loads(path.read_text())
        if report.get("schema") != SCHEMA:
            raise BenchError(f"{path}: expected a {SCHEMA} report, got schema {report.get('schema')!r}")
        env = report["environment"]
        machine = f"{env.get('board') or env.get('cpu')} ({env.get('machine')})"
        load = "-" if env.get("load_avg_1m") is None else f"{env['load_avg_1m']:.1f}"
        for r in report["results"]:
            e = r["e2e_ms"]
            lines.append(
                f"| {machine} | {env.get('usable_cores')} | {load} | {Path(r['name']).name} | {runtime_label(r)} "
                f"| {r['threads']} | {e['p50']:.0f} | {e['p95']:.0f} | {e['p99']:.0f} | {r['rtf']:.3f} "
                f"| {_mb(r['peak_rss_mb'])} | {_file_mb(r['size_bytes'])} | [{path.name}](results/{path.name}) |"
            )
    return "\n".join(lines) + "\n"
