"""The `respiratory` descriptors' time per 8 s window beside the numpy fbank's, on one core, in one run
(issue #30), and how far the fast descriptors are from the straightforward reference on real audio.

    OMP_NUM_THREADS=1 python benchmarks/bench_descriptors.py [--data DB] [--repeats 30] [--json PATH.json]

Timing: fbank (`log_mel` + `normalize`, the default FeatureConfig: 128 bins), the reference descriptors
(the straightforward implementation kept in tests/test_respiratory.py, as the module was before #30) and
`respiratory_features`, interleaved window by window so that machine noise hits all alike; the median ms
per window of each, in wall time and in the thread's CPU time, and the ratio descriptors / fbank (the
acceptance: at most 1.5, read on CPU time, which a shared machine's queue for its cores does not inflate).
Also timed: the Fourier transforms alone (the floor of any exact implementation) and a half-rate crackle
option that is not shipped.
With `--data`, the windows are 8 s of the real recordings, and every annotated cycle (cut or padded as
`cycle_features` does) and every 8 s window of continuous audio (hop 8 s) is compared: the largest
absolute and relative difference per descriptor and how many values differ at all.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core, set before numpy loads its BLAS

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from functools import lru_cache  # noqa: E402
from pathlib import Path  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from edge_lung import respiratory  # noqa: E402
from edge_lung.audio import cyclic_pad  # noqa: E402
from edge_lung.bench.environment import environment  # noqa: E402
from edge_lung.config import FeatureConfig  # noqa: E402
from edge_lung.data.icbhi import Database, load_cycles, load_recording_audio  # noqa: E402
from edge_lung.features import log_mel, normalize  # noqa: E402
from edge_lung.fileio import atomic_write_json, atomic_write_text  # noqa: E402
from edge_lung.respiratory import (  # noqa: E402
    CRACKLE_BANDS_HZ,
    NAMES,
    OUTLIER_SIGMAS,
    STFT_HOP,
    STFT_SIZE,
    TRANSIENT_SAMPLES,
    butterworth_band,
    respiratory_features,
)

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "val", "test")


def reference_module() -> ModuleType:
    """tests/test_respiratory.py, whose `reference_features` is the straightforward implementation."""
    spec = importlib.util.spec_from_file_location("test_descriptors", ROOT / "tests" / "test_respiratory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def real_windows(db: Database, cfg: FeatureConfig) -> list[np.ndarray]:
    """Every 8 s window (hop 8 s) of every recording at cfg.sample_rate, float32."""
    out = []
    for rec in db.recordings:
        wave = load_recording_audio(rec, cfg.sample_rate)
        out += [wave[a : a + cfg.window_samples] for a in range(0, wave.size - cfg.window_samples + 1,
                                                                 cfg.window_samples)]
    return out


def real_cycles(db: Database, cfg: FeatureConfig) -> list[np.ndarray]:
    """Every annotated cycle as `cycle_features` measures it: cut to the window, cyclic-padded to one frame."""
    out = []
    for cycle in load_cycles(db, splits=SPLITS, sample_rate=cfg.sample_rate):
        audio = cycle.audio[: cfg.window_samples]
        out.append(cyclic_pad(audio, STFT_SIZE) if audio.size < STFT_SIZE else audio)
    return out


def time_interleaved(fns: dict[str, Callable[[np.ndarray], Any]], windows: list[np.ndarray],
                     repeats: int) -> dict[str, dict[str, list[float]]]:
    """ms per window of each function, the functions taking turns on each window: wall time, and the thread's
    CPU time (which leaves out the time spent waiting for a core when the machine is shared: load above the
    core count), {"wall": {name: [ms, ...]}, "cpu": {...}}."""
    for fn in fns.values():  # warm-up: caches, masks, lazy imports
        fn(windows[0])
    times: dict[str, dict[str, list[float]]] = {clock: {name: [] for name in fns} for clock in ("wall", "cpu")}
    for i in range(repeats):
        window = windows[i % len(windows)]
        for name, fn in fns.items():
            t0, c0 = time.perf_counter(), time.thread_time()
            fn(window)
            c1, t1 = time.thread_time(), time.perf_counter()
            times["wall"][name].append(1000.0 * (t1 - t0))
            times["cpu"][name].append(1000.0 * (c1 - c0))
    return times


@lru_cache(maxsize=4)
def masks(n: int, sample_rate: int) -> tuple[np.ndarray, ...]:
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    return tuple(butterworth_band(freqs, band, sample_rate) for band in CRACKLE_BANDS_HZ)


def transforms(window: np.ndarray, sample_rate: int) -> None:
    """Only the Fourier transforms that define the descriptors (the 64 ms STFT, the window's rfft and one irfft
    per crackle band), at full length: the floor of any implementation that computes the same numbers."""
    x = window.astype(np.float64)
    padded = np.pad(x, (STFT_SIZE // 2, STFT_SIZE // 2 + (-(x.size % STFT_HOP) % STFT_HOP)))
    np.fft.rfft(np.lib.stride_tricks.sliding_window_view(padded, STFT_SIZE)[::STFT_HOP], axis=1)
    spectrum = np.fft.rfft(x)
    for mask in masks(x.size, sample_rate):
        np.fft.irfft(spectrum * mask, n=x.size)


def half_rate_features(window: np.ndarray, sample_rate: int) -> np.ndarray:
    """An option measured here, not shipped: the crackle bands' outputs at half the sample rate (the irfft of
    each masked spectrum's lower half, transient frames of half as many samples), the wheeze part unchanged.
    The descriptors change (the first difference of an 8 kHz signal is not that of a 16 kHz one); how much,
    and whether a trained model's decisions move, is what `--data` and `--run` report."""
    x = window.astype(np.float64)
    x = x - x.mean()
    duration_s = x.size / sample_rate
    spectrum = np.fft.rfft(x)
    n, frame = x.size // 2, TRANSIENT_SAMPLES // 2
    scratch = np.empty(n)
    out: list[float] = []
    for mask in masks(x.size, sample_rate):
        y = np.fft.irfft(spectrum[: n // 2 + 1] * mask[: n // 2 + 1], n=n)
        kurtosis = respiratory._excess_kurtosis(y, scratch, centre=False)
        energy = scratch[: n // frame * frame].reshape(-1, frame).mean(1)
        dkurtosis = respiratory._excess_kurtosis(np.diff(y), scratch[1:])
        median_energy = respiratory._median(energy) + 1e-20
        magnitude = np.abs(y)
        outliers = np.count_nonzero(magnitude > OUTLIER_SIGMAS * respiratory._robust_scale(magnitude))
        out += [np.log1p(max(kurtosis, -0.99) + 1.0), np.log1p(outliers / n * 1e3),
                np.log1p(max(dkurtosis, -0.99) + 1.0),
                np.log1p(np.count_nonzero(energy > 10.0 * median_energy) / duration_s),
                np.log1p(np.count_nonzero(energy > 30.0 * median_energy) / duration_s)]
    return np.asarray(respiratory._wheeze(x, sample_rate, duration_s) + out, dtype=np.float32)


def compare(audio: list[np.ndarray], reference: Callable[[np.ndarray], np.ndarray], rate: int,
            candidate: Callable[[np.ndarray, int], np.ndarray] = respiratory_features) -> dict[str, Any]:
    """Largest |new - old| and |new - old| / |old| per descriptor over `audio`, and the count of unequal values
    (with the mean |new - old| over the descriptor's spread, for a candidate that changes them)."""
    old = np.stack([reference(a) for a in audio]).astype(np.float64)
    new = np.stack([candidate(a, rate) for a in audio]).astype(np.float64)
    diff = np.abs(new - old)
    rel = diff / np.maximum(np.abs(old), 1e-12)
    return {"count": len(audio),
            "per_descriptor": {name: {"max_abs": float(diff[:, i].max()), "max_rel": float(rel[:, i].max()),
                                      "mean_abs_over_std": float(diff[:, i].mean() / max(old[:, i].std(), 1e-12)),
                                      "unequal": int((diff[:, i] > 0).sum())} for i, name in enumerate(NAMES)},
            "max_abs": float(diff.max()), "max_rel": float(rel.max()), "unequal": int((diff > 0).sum())}


def decisions(run: Path, db: Path, candidate: Callable[[np.ndarray, int], np.ndarray]) -> dict[str, Any]:
    """How often a training run decides the same with `candidate` descriptors as with the shipped ones, on every
    cycle of `db`'s splits that have cycles, and the largest change of a logit."""
    from edge_lung import features  # the training side (torch) only for this option
    from edge_lung.train.evaluate import run_predictions

    splits = [s for s in SPLITS if s in {r.split for r in Database.scan(db).recordings if r.cycles}]
    logits = {}
    for name, fn in (("shipped", respiratory_features), ("candidate", candidate)):
        features.respiratory_features = fn  # what cycle_features calls: the run's own feature path, swapped
        try:
            logits[name] = np.concatenate([run_predictions(run, db, split)[1] for split in splits])
        finally:
            features.respiratory_features = respiratory_features
    a, b = logits["shipped"], logits["candidate"]
    return {"run": str(run), "cycles": len(a), "agreement": float((a.argmax(1) == b.argmax(1)).mean()),
            "max_abs_logit_change": float(np.abs(a - b).max())}


def summary(times: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    """Per clock: the median ms per window of each function and the ratios that the acceptance reads."""
    out: dict[str, Any] = {}
    for clock, by_name in times.items():
        ms = {name: statistics.median(t) for name, t in by_name.items()}
        out[clock] = {"median_ms": ms, "over_fbank": {name: ms[name] / ms["fbank"] for name in ms},
                      "speedup": ms["reference"] / ms["descriptors"]}
    return out


def markdown(result: dict[str, Any]) -> str:
    env, timing = result["environment"], result["timing"]
    wall, cpu = timing["wall"], timing["cpu"]
    lines = [f"# Descriptors vs fbank, one 8 s window, 1 thread ({result['created_utc'][:10]})", "",
             f"Machine: {result['machine']} ({env['cpu']}, {env['cores']} cores, numpy {env['numpy']}, "
             f"load {env['load_avg_1m']} before the run, {env['load_avg_1m_after']} after). {timing['repeats']} "
             f"interleaved repeats over {timing['windows']} windows ({timing['source']}). CPU time is the thread's: "
             "it leaves out waiting for a core, which wall time includes when the load exceeds the cores.", "",
             "| front end | wall ms (median) | / fbank | CPU ms (median) | / fbank |",
             "| --- | --- | --- | --- | --- |"]
    for name, label in (("fbank", "fbank (log_mel + normalize, 128 bins)"),
                        ("reference", "descriptors, straightforward reference (before #30)"),
                        ("descriptors", "descriptors, `respiratory_features`"),
                        ("transforms", "its Fourier transforms alone (STFT, rfft, 3 irfft)"),
                        ("half_rate", "option, not shipped: crackle bands at half rate")):
        lines.append(f"| {label} | {wall['median_ms'][name]:.2f} | {wall['over_fbank'][name]:.2f} | "
                     f"{cpu['median_ms'][name]:.2f} | {cpu['over_fbank'][name]:.2f} |")
    ratio = cpu["over_fbank"]["descriptors"]
    lines += ["", f"Speed-up over the reference: {wall['speedup']:.1f}x wall, {cpu['speedup']:.1f}x CPU. Acceptance "
              f"(descriptors <= 1.5x fbank, CPU time): {'met' if ratio <= 1.5 else 'not met'} ({ratio:.2f}x; the "
              f"transforms alone: {cpu['over_fbank']['transforms']:.2f}x)."]
    for key in ("cycles", "windows"):
        if key in result.get("check", {}):
            c = result["check"][key]
            lines += ["", f"Fast vs reference on {c['count']} real {key}: {c['unequal']} unequal float32 values, "
                      f"max abs {c['max_abs']:.3g}, max rel {c['max_rel']:.3g}."]
            changed = {n: d for n, d in c["per_descriptor"].items() if d["unequal"]}
            if changed:
                lines += ["", "| descriptor | unequal | max abs | max rel |", "| --- | --- | --- | --- |"]
                lines += [f"| {n} | {d['unequal']} | {d['max_abs']:.3g} | {d['max_rel']:.3g} |"
                          for n, d in changed.items()]
    if "half_rate" in result:
        h = result["half_rate"]
        lines += ["", "Option, not shipped: the crackle bands at half rate, vs the reference on "
                  f"{h['cycles']['count']} real cycles (mean |change| over the descriptor's spread across cycles):", "",
                  "| descriptor | max abs | mean abs / std |", "| --- | --- | --- |"]
        lines += [f"| {n} | {d['max_abs']:.3g} | {d['mean_abs_over_std']:.3f} |"
                  for n, d in h["cycles"]["per_descriptor"].items() if d["unequal"]]
        if "decisions" in h:
            d = h["decisions"]
            lines += ["", f"A run trained on the shipped descriptors ({d['run']}) decides the same on "
                      f"{100 * d['agreement']:.1f}% of {d['cycles']} cycles with the option; largest logit change "
                      f"{d['max_abs_logit_change']:.3f}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="an ICBHI-layout database: real windows, and the comparison")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--machine", default="unnamed machine", help="said in the report, e.g. '2-core Intel Xeon VM'")
    parser.add_argument("--json", type=Path, help="write the figures here, and a .md beside it")
    parser.add_argument("--run", type=Path, help="with --data: a training run on the descriptors, whose decisions "
                        "with the half-rate option are compared with its decisions as shipped (needs torch)")
    args = parser.parse_args()
    cfg = FeatureConfig()
    reference = reference_module().reference_features
    if args.data:
        db = Database.scan(args.data)
        windows, source = real_windows(db, cfg), f"8 s windows of {args.data.name}"
    else:
        rng = np.random.default_rng(0)
        windows, source = [(0.1 * rng.standard_normal(cfg.window_samples)).astype(np.float32)], "white noise"
    env = environment()
    times = time_interleaved({"fbank": lambda w: normalize(log_mel(w, cfg), cfg),
                              "reference": reference,
                              "descriptors": lambda w: respiratory_features(w, cfg.sample_rate),
                              "transforms": lambda w: transforms(w, cfg.sample_rate),
                              "half_rate": lambda w: half_rate_features(w, cfg.sample_rate)},
                             windows, args.repeats)
    result = {"created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "machine": args.machine,
              "environment": {**env, "load_avg_1m_after": round(os.getloadavg()[0], 2)},
              "timing": {**summary(times), "repeats": args.repeats, "windows": min(len(windows), args.repeats),
                         "source": source, "samples_ms": times}}
    if args.data:
        cycles = real_cycles(db, cfg)
        result["check"] = {"cycles": compare(cycles, reference, cfg.sample_rate),
                           "windows": compare(windows, reference, cfg.sample_rate)}
        result["half_rate"] = {"cycles": compare(cycles, reference, cfg.sample_rate, half_rate_features)}
        if args.run:
            result["half_rate"]["decisions"] = decisions(args.run, args.data, half_rate_features)
    text = markdown(result)
    print(text)
    if args.json:
        atomic_write_json(args.json, result)
        atomic_write_text(args.json.with_suffix(".md"), text)


if __name__ == "__main__":
    main()
