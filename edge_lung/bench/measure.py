"""Bench measurement: can this board run this model? Latency, real-time factor and memory.

Owns the timing of windows, peak-memory reading, the worker processes and `run_bench`, which
assembles the JSON-ready report (environment from `bench.environment`; reading it:
`bench.report`; its picture: `edge_lung.plots`).

Each (model, thread count) is measured in a fresh Python process, so its load time, first
(cold) inference and peak resident memory are its own and not inherited from the model before
it. The worker times the device's whole path for one 8 s window, exactly as the runtime runs
it: cyclic padding of a respiratory cycle -> the signal-quality gate (`runtime.quality`: the
input-sample marks and the window's level, flatness and envelope, thresholds from the model)
-> `window_features` (settings from the model's own metadata) -> `OnnxClassifier.logits` ->
softmax. The gate's verdict is not acted on here: every window is timed through the model.
`--compare-torch RUN_DIR` adds the same run in PyTorch eager FP32, measured in the same order,
so ratios come from one session.

Only the base install is needed (numpy + onnxruntime); torch is imported in the torch worker
only. Peak memory comes from /proc/self/status (VmHWM) or `resource.getrusage`, so psutil is
not needed either.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_lung.audio import cyclic_pad
from edge_lung.bench.environment import environment, read_proc, thermal_state, usable_cores
from edge_lung.config import FeatureConfig, parse_int_list
from edge_lung.features import (
    cycle_features,
    window_features,  # noqa: F401
)
from edge_lung.fileio import RUN_CONFIG, sha256_file
from edge_lung.plots import PLOT_INSTALL
from edge_lung.runtime.artifact.e2e import GRAPHS, load_model
from edge_lung.runtime.artifact.model_dir import ArtifactError, resolve_model_path
from edge_lung.runtime.artifact.quality import QualityConfig, assess, input_marks
from edge_lung.runtime.live.stream import StreamConfig
from edge_lung.scoring import softmax

SCHEMA = "edge-lung-bench/1"
TORCH_INSTALL = "pip install 'edge-lung[train]'"
POOL_SIZE = 8  # distinct synthetic cycles that the timed windows cycle through
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class BenchError(ValueError):
    """A model or run that cannot be benchmarked, naming it and the reason."""


def default_threads() -> tuple[int, ...]:
    """1 thread and all usable cores: the two ends a device maker chooses between."""
    n = usable_cores()
    return (1,) if n == 1 else (1, n)


def parse_threads(text: str) -> tuple[int, ...]:
    """'1,2,4' -> (1, 2, 4); `ValueError` naming --threads otherwise."""

    return parse_int_list(text, "threads (--threads)")


def default_hop_s() -> float:
    """The streaming runtime's default hop (`edge-lung stream --hop`), defined there only."""

    return StreamConfig().hop_s


@dataclass(frozen=True)
class BenchConfig:
    """What to measure: thread counts, windows timed after a warm-up, and the real-time question.

    `hop_s`: one decision every hop (the stream's default when None). `budget_ms`: the longest
    acceptable time from the end of a window's audio to its decision; the verdict compares the
    end-to-end p95/p99 with min(hop, budget).
    """

    threads: tuple[int, ...] = field(default_factory=default_threads)
    windows: int = 50
    warmup: int = 5
    hop_s: float | None = None
    budget_ms: float | None = None
    seed: int = 0
    graphs: tuple[str, ...] = ("model",)  # `--graph`: 'model' (numpy front end + model file) and/or 'e2e'

    def __post_init__(self) -> None:

        graphs = tuple(self.graphs)
        if not graphs or len(set(graphs)) != len(graphs) or any(g not in GRAPHS for g in graphs):
            raise ValueError(f"graphs (--graph): expected one or both of {','.join(GRAPHS)}, each once, got {graphs}")
        object.__setattr__(self, "graphs", graphs)
        threads = tuple(self.threads)
        if not threads or any(not isinstance(t, int) or isinstance(t, bool) or t < 1 for t in threads):
            raise ValueError(f"threads (--threads): expected whole numbers >= 1 such as 1,2,4, got {self.threads}")
        if len(set(threads)) != len(threads):
            raise ValueError(f"threads (--threads): expected each count once, got {self.threads}")
        cores = usable_cores()
        if max(threads) > cores:
            raise ValueError(
                f"threads (--threads): expected at most {cores} (the cores this process may use), got {max(threads)}; "
                "more threads than cores measures contention, not the board"
            )
        object.__setattr__(self, "threads", threads)
        if isinstance(self.windows, bool) or not isinstance(self.windows, int) or self.windows < 1:
            raise ValueError(f"windows (--windows): expected a whole number >= 1, got {self.windows}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"warmup (--warmup): expected a whole number >= 0, got {self.warmup}")
        if self.hop_s is not None and not (math.isfinite(self.hop_s) and self.hop_s > 0):
            raise ValueError(f"hop_s (--hop): expected seconds > 0, got {self.hop_s}")
        if self.budget_ms is not None and not (math.isfinite(self.budget_ms) and self.budget_ms > 0):
            raise ValueError(f"budget_ms (--budget-ms): expected milliseconds > 0, got {self.budget_ms}")

    @property
    def hop(self) -> float:
        """The hop the verdict uses: `hop_s`, or the stream's default."""
        return self.hop_s if self.hop_s is not None else default_hop_s()


# --------------------------------------------------------------------------- figures


def latency_stats(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max/mean/min of latencies in ms (linear-interpolated percentiles)."""
    x = np.asarray(samples_ms, dtype=np.float64)
    if x.size == 0:
        raise ValueError("latency_stats: expected at least one sample, got none")
    p50, p95, p99 = np.percentile(x, [50, 95, 99])
    return {
        "n": int(x.size),
        "p50": round(float(p50), 3),
        "p95": round(float(p95), 3),
        "p99": round(float(p99), 3),
        "max": round(float(x.max()), 3),
        "mean": round(float(x.mean()), 3),
        "min": round(float(x.min()), 3),
    }


def verdict(e2e_ms: dict[str, float], hop_s: float, budget_ms: float | None = None) -> dict[str, Any]:
    """Does a board with these end-to-end figures keep up with one decision every `hop_s`?

    The stream runs one window at a time, so a window that takes longer than the hop delays
    the next decision; the limit is therefore min(hop, budget). Status:
      * "keeps up"   p99 <= limit: at most ~1% of decisions late;
      * "marginal"   p95 <= limit < p99: a few decisions late, the stream recovers;
      * "too slow"   p95 > limit; `sustainable` is False as well when the mean reaches the hop,
                     i.e. the backlog grows without bound.
    Headroom is (limit - pXX) / limit; `duty` is mean / hop, the share of the thread budget spent
    on inference (what is left is for capture, display and radio).
    """
    if not (math.isfinite(hop_s) and hop_s > 0):
        raise ValueError(f"hop_s: expected seconds > 0, got {hop_s}")
    if budget_ms is not None and not (math.isfinite(budget_ms) and budget_ms > 0):
        raise ValueError(f"budget_ms: expected milliseconds > 0, got {budget_ms}")
    hop_ms = 1000.0 * hop_s
    limit = hop_ms if budget_ms is None else min(hop_ms, budget_ms)
    p95, p99, mean = e2e_ms["p95"], e2e_ms["p99"], e2e_ms["mean"]
    if p99 <= limit:
        status = "keeps up"
    elif p95 <= limit:
        status = "marginal"
    else:
        status = "too slow"
    return {
        "hop_ms": hop_ms,
        "budget_ms": budget_ms,
        "limit_ms": limit,
        "limited_by": "hop" if budget_ms is None or hop_ms <= budget_ms else "budget",
        "status": status,
        "sustainable": mean < hop_ms,  # at 100% duty any hiccup is never caught up
        "headroom_p95_ms": round(limit - p95, 3),
        "headroom_p99_ms": round(limit - p99, 3),
        "headroom_p95": round((limit - p95) / limit, 4),
        "headroom_p99": round((limit - p99) / limit, 4),
        "duty": round(mean / hop_ms, 4),
    }


# --------------------------------------------------------------------------- the worker (one process per row)


def _proc_status_bytes(field: str) -> int | None:
    """A `kB` field of /proc/self/status (Linux) in bytes, or None."""
    for line in (read_proc("/proc/self/status") or "").splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return None


def peak_rss_bytes() -> int | None:
    """Peak resident memory of this process so far.

    Linux: VmHWM, the high-water mark of this process's own address space. Not ru_maxrss there:
    getrusage keeps the maximum across execve, so a worker started from a large parent (a CLI
    that imported torch, say) would report the parent's size as its own peak.
    Elsewhere: ru_maxrss (KiB, bytes on macOS); None on Windows.
    """
    hwm = _proc_status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def bench_cycles(sample_rate: int, count: int, seed: int) -> list[np.ndarray]:
    """`count` unpadded respiratory-cycle stand-ins (1-6 s of noise and a tone), float32, made before timing.

    Built in float32 from an integer hash of the sample index, not with `numpy.random`: the worker's peak
    memory is the runtime's, and numpy.random's extension modules (1.7 MB resident) and float64 buffers
    are not part of it.
    """
    out = []
    for k in range(count):
        u = _uniform(3, seed, k)
        n = int((1.0 + 5.0 * u[0]) * sample_rate)
        noise = _hash_noise(n, seed * 7919 + k)
        phase = np.arange(n, dtype=np.float32) * np.float32(2 * np.pi * (100.0 + 1900.0 * u[1]) / sample_rate)
        wave = np.sin(phase, out=phase)
        wave *= np.float32(0.2)
        wave += noise
        out.append(wave)
    return out


def _hash32(x: np.ndarray) -> np.ndarray:
    """murmur3's 32-bit finaliser, elementwise on uint32 (a well-mixed hash of consecutive integers)."""
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x85EBCA6B)
    x ^= x >> np.uint32(13)
    x *= np.uint32(0xC2B2AE35)
    x ^= x >> np.uint32(16)
    return x


def _uniform(n: int, seed: int, stream: int) -> np.ndarray:
    """n float32 draws in [0, 1) from the hash of (seed, stream, index)."""
    key = np.uint32((seed * 0x9E3779B1 + stream * 0x85EBCA77 + 1) & 0xFFFFFFFF)
    return (_hash32(np.arange(n, dtype=np.uint32) + key) >> np.uint32(8)).astype(np.float32) / np.float32(2**24)


def _hash_noise(n: int, key: int) -> np.ndarray:
    """float32[n] white noise, uniform with the standard deviation 0.05 of the previous Gaussian noise."""
    u = _uniform(n, key, 1)
    u -= np.float32(0.5)
    u *= np.float32(0.05 * np.sqrt(12.0))
    return u


def _time_windows(
    infer: Callable[[np.ndarray], np.ndarray],
    feature_cfg: Any,
    windows: int,
    warmup: int,
    seed: int,
    quality_cfg: Any = None,
    audio_in: bool = False,
    on_cold: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Cold first window, then `warmup` untimed ones, then `windows` timed: gate, pad + features, model, total.

    `audio_in`: `infer` takes the padded window itself (the e2e graph), so "features" is the padding alone.
    `on_cold` is called once, after the cold window (the memory stages of `measure_onnx`).
    """

    quality_cfg = quality_cfg or QualityConfig()

    # A small pool, reused: audio for hundreds of windows would add tens of MB to the peak memory measured.
    pool = bench_cycles(feature_cfg.sample_rate, POOL_SIZE, seed)
    feat_ms, model_ms, e2e_ms, gate_ms = [], [], [], []
    cold: dict[str, float] = {}
    for i in range(1 + warmup + windows):
        cycle = pool[i % POOL_SIZE]
        tg = time.perf_counter()
        # the gate sees a full window (its worst case): the marks stand in for the input-rate pass
        window, marks = input_marks(cyclic_pad(cycle, feature_cfg.window_samples), quality_cfg.clip_level)
        assess(window, feature_cfg.sample_rate, quality_cfg, int(np.count_nonzero(marks == 1.0)), 0, marks.shape[0])
        t0 = time.perf_counter()
        feats = cyclic_pad(cycle, feature_cfg.window_samples) if audio_in else cycle_features(cycle, feature_cfg)
        t1 = time.perf_counter()
        probs = softmax(infer(feats))
        t2 = time.perf_counter()
        if probs.shape[0] != 1 or not np.isfinite(probs).all():
            raise RuntimeError(f"model output: expected one finite row of probabilities, got {probs!r}")
        if i == 0:
            cold = {"cold_ms": 1000 * (t2 - tg), "cold_model_ms": 1000 * (t2 - t1)}
            if on_cold is not None:
                on_cold()
        elif i > warmup:
            gate_ms.append(1000 * (t0 - tg))
            feat_ms.append(1000 * (t1 - t0))
            model_ms.append(1000 * (t2 - t1))
            e2e_ms.append(1000 * (t2 - tg))
    return {
        **{k: round(v, 3) for k, v in cold.items()},
        "gate_ms": latency_stats(gate_ms),
        "features_ms": latency_stats(feat_ms),
        "model_ms": latency_stats(model_ms),
        "e2e_ms": latency_stats(e2e_ms),
        "rtf": round(float(np.mean(e2e_ms)) / (1000 * feature_cfg.window_s), 6),
        "samples": {
            "gate_ms": [round(x, 3) for x in gate_ms],
            "features_ms": [round(x, 3) for x in feat_ms],
            "model_ms": [round(x, 3) for x in model_ms],
            "e2e_ms": [round(x, 3) for x in e2e_ms],
        },
    }


def _mb(n: int | None) -> float | None:
    return None if n is None else round(n / 2**20, 1)


def memory_stage() -> dict[str, float | None]:
    """Resident memory now and its peak so far, in MB (None where the platform has no /proc)."""
    return {"rss_mb": _mb(_proc_status_bytes("VmRSS")), "peak_rss_mb": _mb(peak_rss_bytes())}


def _memory(baseline: int | None, stages: dict[str, dict[str, float | None]] | None = None) -> dict[str, Any]:
    """Peak, end and before-load memory; `stages` adds where it grew: imports done, model loaded, cold window
    run, the last window run (`memory_stage` at each)."""
    out: dict[str, Any] = {
        "peak_rss_mb": _mb(peak_rss_bytes()),
        "rss_end_mb": _mb(_proc_status_bytes("VmRSS")),
        "rss_before_load_mb": _mb(baseline),
    }
    if stages is not None:
        out["memory_stages"] = {**stages, "end": memory_stage()}
    return out


def measure_onnx(model: str | Path, threads: int, windows: int, warmup: int, seed: int,
                 graph: str = "model") -> dict[str, Any]:
    """Measure one exported MODEL_DIR (or .onnx) at `threads` intra-op threads, in this process; `graph` 'e2e'
    times model.e2e.onnx on the padded audio instead of `window_features` + the model file."""
    import onnxruntime  # noqa: F401  (imported before the baseline, as any runtime has it loaded)


    baseline = peak_rss_bytes()  # numpy, onnxruntime and the edge-lung runtime imported, no model yet
    stages = {"imported": memory_stage()}
    t0 = time.perf_counter()
    clf = load_model(model, graph, threads=threads)
    load_ms = 1000 * (time.perf_counter() - t0)
    stages["loaded"] = memory_stage()
    info = clf.info
    infer = (lambda audio: clf.run(audio, ("logits",))[0]) if graph == "e2e" else clf.logits
    timing = _time_windows(infer, info.features, windows, warmup, seed, info.quality, audio_in=graph == "e2e",
                           on_cold=lambda: stages.__setitem__("cold_window", memory_stage()))
    return {
        "backend": "onnxruntime",
        "graph": graph,
        "quantization": info.quantization,
        "model_file": str(info.path),
        "size_bytes": info.path.stat().st_size,
        "sha256": (info.manifest.get("e2e", {}) if graph == "e2e" else info.manifest).get("sha256")
        or sha256_file(info.path),
        "labels": list(info.labels),
        "run_dir": info.run.get("run_dir"),
        "window_s": info.features.window_s,
        "input": [info.features.num_frames, info.features.num_mel_bins],
        "load_ms": round(load_ms, 3),
        **timing,
        **_memory(baseline, stages),
        **_compute_rate(info.run.get("cost"), timing["model_ms"]["p50"], graph),
        # what `export --int8` measured on the exporting machine: FP32 vs INT8, model only (bench prints it)
        "export_speed": (info.manifest.get("parity") or {}).get("speed"),
    }


def _compute_rate(cost: dict[str, Any] | None, model_p50_ms: float, graph: str) -> dict[str, Any]:
    """GMAC per window (counted from the graph at export, `edge_lung.export.cost`) and the GMAC/s achieved at the
    model's p50: the figure that compares boards. None for models exported before the count, and for the e2e graph,
    whose front end the count leaves out."""
    if not cost or graph != "model" or model_p50_ms <= 0:
        return {"gmac_per_window": None, "gmac_per_s": None}
    gmac = cost["macs"] / 1e9
    return {"gmac_per_window": round(gmac, 4), "gmac_per_s": round(gmac / (model_p50_ms / 1000), 2)}


def measure_torch(run_dir: str | Path, threads: int, windows: int, warmup: int, seed: int) -> dict[str, Any]:
    """Measure a training run in PyTorch eager FP32 (`edge_lung.train.model.load_run`), in this process."""
    try:
        import torch
    except ImportError as exc:
        raise ImportError(f"--compare-torch needs torch and transformers: {TORCH_INSTALL}") from exc
    from edge_lung.train.model import load_run

    torch.set_num_threads(threads)
    baseline = peak_rss_bytes()
    t0 = time.perf_counter()
    module, cfg = load_run(run_dir)
    load_ms = 1000 * (time.perf_counter() - t0)
    features = FeatureConfig.from_dict(cfg["features"])

    def infer(feats: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(feats[None])).float().numpy()

    timing = _time_windows(infer, features, windows, warmup, seed)
    model_dir = Path(run_dir) / "model"
    size = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file()) if model_dir.is_dir() else None
    return {
        "backend": "torch-eager",
        "quantization": "fp32",
        "model_file": str(model_dir),
        "size_bytes": size,
        "sha256": None,
        "labels": list(cfg["labels"]),
        "run_dir": str(Path(run_dir).absolute()),
        "window_s": features.window_s,
        "input": [features.num_frames, features.num_mel_bins],
        "load_ms": round(load_ms, 3),
        "torch": torch.__version__,
        **timing,
        **_memory(baseline),
    }


def worker_main() -> int:
    """Entry of the measuring subprocess: argv[1] is a JSON spec; the result goes to spec["out"]."""
    spec = json.loads(sys.argv[1])
    args = (spec["target"], spec["threads"], spec["windows"], spec["warmup"], spec["seed"])
    try:
        if spec["backend"] == "torch":
            result = {"ok": True, "result": measure_torch(*args)}
        else:
            result = {"ok": True, "result": measure_onnx(*args, graph=spec.get("graph", "model"))}
    except (ValueError, OSError, ImportError, RuntimeError) as exc:  # ArtifactError and RunError are ValueErrors
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    if result["ok"]:
        result["result"]["thread_env"] = {var: os.environ.get(var) for var in THREAD_ENV}
    Path(spec["out"]).write_text(json.dumps(result))
    return 0 if result["ok"] else 1


def run_worker(backend: str, target: str | Path, threads: int, cfg: BenchConfig,
               graph: str = "model") -> dict[str, Any]:
    """Measure one row in a fresh interpreter with `threads` for onnxruntime, torch and numpy's BLAS.

    The BLAS variables are set to `threads` too, so that a 1-thread row really uses one core,
    unless the caller's environment already sets them (then they are kept, and recorded).
    """
    env = dict(os.environ)
    for var in THREAD_ENV:
        env.setdefault(var, str(threads))
    with tempfile.TemporaryDirectory(prefix="edge-lung-bench-") as tmp:
        out = Path(tmp) / "result.json"
        spec = {
            "backend": backend,
            "graph": graph,
            "target": str(target),
            "threads": threads,
            "windows": cfg.windows,
            "warmup": cfg.warmup,
            "seed": cfg.seed,
            "out": str(out),
        }
        code = "from edge_lung.bench.measure import worker_main; raise SystemExit(worker_main())"
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], env=env, capture_output=True, text=True)
        if not out.is_file():
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
            killed = " (killed: out of memory?)" if proc.returncode in (-9, 137) else ""
            raise BenchError(f"{target}: the measuring process exited with {proc.returncode}{killed}:\n{tail}")
        answer = json.loads(out.read_text())
    if not answer["ok"]:
        raise BenchError(f"{target}: {answer['error']}")
    return answer["result"]


# --------------------------------------------------------------------------- the whole run


def check_targets(models: Sequence[str | Path], compare_torch: str | Path | None) -> None:
    """Fail fast, before any timing, on a model dir, .onnx file or run dir that cannot be used."""

    if not models:
        raise BenchError("MODEL_DIR: expected at least one exported model directory, got none")
    for model in models:
        try:
            resolve_model_path(model)
        except ArtifactError as exc:
            raise BenchError(str(exc)) from exc
    if compare_torch is not None:
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            raise ImportError(f"--compare-torch {compare_torch}: torch is not installed; {TORCH_INSTALL}")
        if not (Path(compare_torch) / RUN_CONFIG).is_file():
            raise BenchError(
                f"--compare-torch {compare_torch}: no config.json; expected a run directory written by "
                "`edge-lung train`"
            )


def check_outputs(json_path: str | Path | None, plot_path: str | Path | None) -> None:
    """Fail before a long run, not after it: output folders exist, and matplotlib is there for --plot."""
    for option, path in (("--json", json_path), ("--plot", plot_path)):
        if path is not None and not Path(path).absolute().parent.is_dir():
            raise BenchError(f"{option} {path}: folder {Path(path).absolute().parent} does not exist")
    if plot_path is not None:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            raise ImportError(f"--plot needs matplotlib: {PLOT_INSTALL}")


def _same_path(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and Path(a).resolve() == Path(b).resolve()


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def comparisons(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Torch eager / ONNX ratios per thread count (above 1: ONNX is faster or smaller); `same_run` is True
    where the ONNX model was exported from the torch run measured."""
    out = []
    for t in (r for r in results if r["backend"] == "torch-eager"):
        for o in (r for r in results if r["backend"] == "onnxruntime" and r["threads"] == t["threads"]):
            out.append(
                {
                    "threads": t["threads"],
                    "onnx": o["name"],
                    "torch": t["name"],
                    "same_run": _same_path(o.get("run_dir"), t["run_dir"]),
                    "model_p50_ratio": _ratio(t["model_ms"]["p50"], o["model_ms"]["p50"]),
                    "e2e_p50_ratio": _ratio(t["e2e_ms"]["p50"], o["e2e_ms"]["p50"]),
                    "peak_rss_ratio": _ratio(t["peak_rss_mb"], o["peak_rss_mb"]),
                }
            )
    return out


def graph_comparisons(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """e2e graph / (numpy front end + model graph) end-to-end p50 per model and thread count (below 1: e2e is
    faster), where both graphs were measured."""
    out = []
    for m in (r for r in results if r.get("graph") == "model"):
        for e in (r for r in results if r.get("graph") == "e2e" and r["name"] == m["name"]
                  and r["threads"] == m["threads"]):
            out.append({"name": m["name"], "threads": m["threads"], "model_e2e_p50_ms": m["e2e_ms"]["p50"],
                        "e2e_graph_e2e_p50_ms": e["e2e_ms"]["p50"],
                        "e2e_over_model_p50": _ratio(e["e2e_ms"]["p50"], m["e2e_ms"]["p50"]),
                        "peak_rss_ratio": _ratio(e["peak_rss_mb"], m["peak_rss_mb"])})
    return out


def run_bench(
    models: Sequence[str | Path],
    cfg: BenchConfig,
    compare_torch: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure every model (then the torch run, if any) at every thread count; the JSON-ready report."""
    log = log or (lambda _msg: None)
    check_targets(models, compare_torch)
    hop_s = cfg.hop
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": {
            **asdict(cfg),
            "threads": list(cfg.threads),
            "hop_s": hop_s,
            "compare_torch": None if compare_torch is None else str(compare_torch),
        },
        "environment": environment(),
        "results": [],
    }
    targets = [("onnx", str(m), g) for m in models for g in cfg.graphs]
    if compare_torch is not None:
        targets.append(("torch", str(compare_torch), "model"))
    for threads in cfg.threads:
        for backend, target, graph in targets:
            log(f"{target} ({graph} graph): {threads} thread(s), {cfg.warmup} warm-up + {cfg.windows} timed "
                "windows ...")
            row = {"name": target, "threads": threads, **run_worker(backend, target, threads, cfg, graph)}
            row["verdict"] = verdict(row["e2e_ms"], hop_s, cfg.budget_ms)
            report["results"].append(row)
            e = row["e2e_ms"]
            log(f"  end-to-end p50 {e['p50']:.1f} ms, p95 {e['p95']:.1f} ms; peak memory {row['peak_rss_mb']} MB")
    report["comparisons"] = comparisons(report["results"])
    report["graph_comparisons"] = graph_comparisons(report["results"])
    report["environment"]["thermal_after"] = thermal_state()
    if hasattr(os, "getloadavg"):  # other work during the run shows here, not in the start figure
        report["environment"]["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    return report
