"""`edge-lung bench MODEL_DIR --sustained SECONDS`: does the board keep its speed under minutes of load?

A Pi-class board in a case throttles after minutes; the short `bench` run (a few hundred windows) cannot see it.
This runs windows back to back (features + model, one after the other, as fast as the board goes) for SECONDS,
then reports per minute: windows, p50 and p95 end-to-end milliseconds, and the SoC temperature, clock and
`vcgencmd get_throttled` flags read at the end of each minute where the board exposes them
(`bench.environment.thermal_state`: /sys/class/thermal, cpufreq, vcgencmd). The drift is the last minute's p50
over the first's. On a machine without thermal zones (most VMs) the temperature is absent and the report says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_lung.audio import cyclic_pad
from edge_lung.bench.environment import thermal_state
from edge_lung.bench.measure import POOL_SIZE, bench_cycles, latency_stats
from edge_lung.features import cycle_features
from edge_lung.runtime.artifact.e2e import load_model

PERIOD_S = 60.0
"""Length of one reported period: a minute."""


def per_period(samples: Sequence[tuple[float, float]], thermal: Sequence[tuple[float, dict[str, Any]]],
               period_s: float = PERIOD_S) -> list[dict[str, Any]]:
    """Group (seconds since start, ms) samples into periods of `period_s`: windows, p50 and p95 per period, with
    the thermal reading taken at the end of the period (the last one inside it), if any.

    A last, partial period is reported with its length, so a 150 s run has periods of 60, 60 and 30 s.
    """
    if not samples:
        return []
    end = max(t for t, _ in samples)
    out = []
    for k in range(int(end // period_s) + 1):
        lo, hi = k * period_s, (k + 1) * period_s
        ms = [m for t, m in samples if lo <= t < hi]
        if not ms:
            continue
        reading = next((r for t, r in reversed(thermal) if lo <= t < hi), {})
        stats = latency_stats(ms)
        out.append({"minute": k + 1, "start_s": lo, "seconds": round(min(hi, end) - lo, 3), "windows": len(ms),
                    "p50_ms": stats["p50"], "p95_ms": stats["p95"], "temp_c": reading.get("temp_c"),
                    "cpu0_mhz": reading.get("cpu0_mhz"), "throttled": reading.get("throttled")})
    return out


def summarize(periods: list[dict[str, Any]]) -> dict[str, Any]:
    """Drift (last period's p50 / first's) and whether any temperature or throttling flag was read."""
    temps = [p["temp_c"] for p in periods if p["temp_c"] is not None]
    return {
        "p50_drift": round(periods[-1]["p50_ms"] / periods[0]["p50_ms"], 3) if periods else None,
        "temperature": ("read" if temps else
                        "absent: this machine exposes no /sys/class/thermal zone (a VM or container)"),
        "temp_c_max": max(temps) if temps else None,
        "throttled_flags": sorted({p["throttled"] for p in periods if p["throttled"]}),
    }


def run_sustained(model: str | Path, seconds: float, threads: int = 1, graph: str = "model", seed: int = 0,
                  clock: Callable[[], float] = time.monotonic,
                  thermal: Callable[[], dict[str, Any]] = thermal_state,
                  period_s: float = PERIOD_S) -> dict[str, Any]:
    """Windows back to back on `model` for `seconds` (clock: `clock`), the thermal state read every `period_s`;
    returns the settings, the per-period figures and their summary."""
    if not seconds > 0 or seconds != seconds or seconds > 7 * 24 * 3600:
        raise ValueError(f"--sustained: expected seconds in (0, 604800], got {seconds}")
    clf = load_model(model, graph, threads=threads)
    cfg = clf.info.features
    pool = bench_cycles(cfg.sample_rate, POOL_SIZE, seed)
    infer = (lambda audio: clf.run(audio, ("logits",))[0]) if graph == "e2e" else clf.logits
    prepare = (lambda cycle: _padded(cycle, cfg)) if graph == "e2e" else (lambda cycle: cycle_features(cycle, cfg))
    samples: list[tuple[float, float]] = []
    readings: list[tuple[float, dict[str, Any]]] = []
    start = clock()
    next_reading = period_s
    i = 0
    while (now := clock() - start) < seconds:
        t0 = time.perf_counter()
        infer(prepare(pool[i % POOL_SIZE]))
        samples.append((now, 1000.0 * (time.perf_counter() - t0)))
        i += 1
        if clock() - start >= next_reading:
            readings.append((next_reading - 1e-9, thermal()))
            next_reading += period_s
    readings.append((clock() - start - 1e-9, thermal()))
    periods = per_period(samples, readings, period_s)
    return {"model": str(model), "graph": graph, "threads": threads, "seconds": seconds, "period_s": period_s,
            "windows": len(samples), "periods": periods, **summarize(periods)}


def _padded(cycle: np.ndarray, cfg: Any) -> np.ndarray:
    return cyclic_pad(cycle, cfg.window_samples)[None, :]


def sustained_lines(result: dict[str, Any]) -> list[str]:
    """The per-minute table as text lines, then the drift and the temperature note."""
    lines = [f"sustained load on {Path(result['model']).name} ({result['graph']} graph, {result['threads']} "
             f"thread(s), {result['seconds']:g} s, {result['windows']} windows):",
             "  minute  windows   p50 ms   p95 ms   temp C   MHz  throttled"]
    for p in result["periods"]:
        temp = "-" if p["temp_c"] is None else f"{p['temp_c']:.1f}"
        mhz = "-" if p["cpu0_mhz"] is None else str(p["cpu0_mhz"])
        lines.append(f"  {p['minute']:>6}  {p['windows']:>7}  {p['p50_ms']:>7.2f}  {p['p95_ms']:>7.2f}  {temp:>7}"
                     f"  {mhz:>4}  {p['throttled'] or '-'}")
    lines.append(f"  p50 drift (last minute / first): x{result['p50_drift']}; temperature {result['temperature']}")
    return lines
