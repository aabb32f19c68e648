"""Export a trained run to a self-describing ONNX model directory (FP32 or INT8) with measured parity.

`export_model(run_dir, out_dir, ExportConfig(...))` writes MODEL_DIR (see edge_lung/runtime/model_dir.py and
export/README.md): one ONNX file whose metadata carries labels, every feature setting, the
quantisation and the run's validation metrics, plus manifest.json (with the file's SHA-256),
parity.json and model_card.md. Everything is built in a temp directory beside MODEL_DIR and renamed
into place at the end, so a failed export leaves no half-written MODEL_DIR.

Decisions, measured (figures in export/README.md and benchmarks/bench_export.py):
- Exporter: ``torch.onnx.export`` with the TorchScript tracer (``dynamo=False``, opset 17).
  optimum's ONNX exporter (it has an ``ASTOnnxConfig``) now lives in ``optimum-onnx``, whose only
  release pins ``transformers<4.58``: installing it would downgrade our transformers 5.x
  (``pip install --dry-run optimum-onnx`` shows it), and optimum 2.3 alone no longer ships the
  exporter. ASTOnnxConfig would only add the input name and a dynamic batch axis, which we set
  ourselves, and our graph is `edge_lung.train.model.LogitsModel` (adapters merged or inlined, head
  included), not a stock checkpoint. The dynamo exporter (torch's default since 2.9) needs
  onnxscript, which is not a dependency; the tracer matches PyTorch to ~1e-6 on AST.
- Graph optimisation: no offline rewrite of the shipped file. onnxruntime applies its full
  optimisation level when the device loads the model (`artifact.session_options`), and an offline
  ORT_ENABLE_ALL model is tied to the exporting machine's CPU. The transformer fusion tool
  (``onnxruntime.transformers.optimizer``, model type vit) fuses BiasGelu and SkipLayerNorm but not
  attention on this graph, and measured 0.94x-1.08x of plain FP32 on base-size AST: no gain, not kept.
- Quantisation: onnxruntime.quantization directly (see edge_lung/export/quantize.py for why not
  ORTQuantizer). Default `dynamic`: on base-size AST it ran 1.9-2.3x faster than FP32 ONNX and
  2.3-3.7x faster than PyTorch eager, static QDQ 1.55-1.8x / 1.7-3.1x (three benchmark runs).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_lung.config import FeatureConfig
from edge_lung.export.quantize import QUANT_MODES, check_patterns, load_preset, quantize_model
from edge_lung.fileio import atomic_path, sha256_file
from edge_lung.metrics import score_predictions
from edge_lung.runtime.model_dir import INPUT_NAME, OUTPUT_NAME, ArtifactError, build_metadata, write_manifest

OPSET = 17
FP32_TOLERANCE = 1e-4
"""Max abs logit difference allowed between FP32 ONNX and PyTorch; above it the export fails."""
AIMS = {"int8_argmax_agreement": 98.0, "int8_score_loss": 1.0, "int8_size_ratio": 0.30}
"""Targets for INT8 (issue #4): recorded and checked in parity.json, warnings when missed."""
FP32_NAME = "model.onnx"
INT8_NAME = "model.int8.onnx"


class ExportError(ValueError):
    """An export that cannot proceed, naming the run, file or option and what was expected."""


class ParityError(ExportError):
    """FP32 ONNX does not reproduce PyTorch within `FP32_TOLERANCE`."""


@dataclass(frozen=True)
class ExportConfig:
    """Options of one export (the `edge-lung export` flags)."""

    int8: bool = False
    quant: str = "dynamic"
    calibration_size: int = 64
    preset: str = "x86-avx2"
    parity_size: int = 0  # 0: every cycle of the parity split
    parity_split: str = "val"
    data_dir: str | None = None  # None: the database the run was trained on
    overwrite: bool = False
    threads: int | None = None
    opset: int = OPSET
    fp32_tolerance: float = FP32_TOLERANCE
    seed: int = 0
    keep_float: tuple[str, ...] = ()  # extra node-name regexes kept in float, on top of the preset's

    def __post_init__(self) -> None:
        if self.quant not in QUANT_MODES:
            raise ValueError(f"--quant: expected one of {QUANT_MODES}, got {self.quant!r}")
        if self.calibration_size < 1:
            raise ValueError(f"--calibration-size: expected >= 1 windows, got {self.calibration_size}")
        if self.parity_size < 0:
            raise ValueError(f"--parity-size: expected >= 0 (0 = whole split), got {self.parity_size}")
        if self.parity_split not in ("train", "val", "test"):
            raise ValueError(f"--parity-split: expected 'train', 'val' or 'test', got {self.parity_split!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads: expected >= 1, got {self.threads}")
        if not 13 <= self.opset <= 21:
            raise ValueError(f"opset: expected 13..21, got {self.opset}")
        if self.fp32_tolerance <= 0:
            raise ValueError(f"fp32_tolerance: expected > 0, got {self.fp32_tolerance}")
        check_patterns(self.keep_float, "--keep-float")


# ---------------------------------------------------------------------------------------------
# Building blocks (also used by benchmarks/bench_export.py)


def export_fp32(module: Any, path: str | Path, features: FeatureConfig, opset: int = OPSET) -> None:
    """Trace `module` (features[B, T, M] -> logits[B, C]) to ONNX at `path`, dynamic batch; full checker."""
    import warnings

    import onnx
    import torch

    dummy = torch.zeros(1, features.num_frames, features.num_mel_bins, dtype=torch.float32)
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about the legacy exporter and about shape-dependent Python branches in
        # transformers' SDPA wrapper; both are constant for our fixed [T, M] input.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (dummy,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(str(path), full_check=True)


def set_metadata(path: str | Path, metadata: dict[str, str]) -> None:
    """Replace our keys in the ONNX file's metadata_props (other keys are kept); rewrites `path`."""
    import onnx

    model = onnx.load(str(path))
    keep = [p for p in model.metadata_props if p.key not in metadata]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))


def onnx_logits(path: str | Path, x: np.ndarray, threads: int | None = None, batch: int = 8) -> np.ndarray:
    """Run an ONNX file on float32[N, T, M] in batches -> float32[N, C]."""
    import onnxruntime as ort

    from edge_lung.runtime.model_dir import session_options

    sess = ort.InferenceSession(str(path), sess_options=session_options(threads), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    out = [sess.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def torch_logits(module: Any, x: np.ndarray, batch: int = 8) -> np.ndarray:
    """Run the PyTorch module on float32[N, T, M] in batches -> float32[N, C]."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(module(torch.from_numpy(x[i : i + batch])).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def cycles_to_features(cycles: list, features: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """Cycles -> (float32[N, T, M] model inputs, int64[N] labels), exactly as training and the device do."""
    from edge_lung.scoring import stack_features

    return stack_features(cycles, features), np.array([c.label for c in cycles], dtype=np.int64)


def pick_balanced(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of up to `n` items, round-robin over classes in a seeded order (all classes represented)."""
    rng = np.random.default_rng(seed)
    pools = [list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)]
    picked: list[int] = []
    while len(picked) < n and any(pools):
        for pool in pools:
            if pool and len(picked) < n:
                picked.append(int(pool.pop()))
    return np.array(sorted(picked), dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# The export


def export_model(run_dir: str | Path, out_dir: str | Path, cfg: ExportConfig | None = None, log=print) -> dict:
    """Export the run in `run_dir` to `out_dir` (MODEL_DIR); returns the parity record.

    Raises `ExportError` (bad run, data, option or output directory) and `ParityError` (FP32 ONNX
    differs from PyTorch); in both cases `out_dir` is left as it was.
    """
    cfg = cfg or ExportConfig()
    preset = load_preset(cfg.preset) if cfg.int8 else None
    if preset is not None and cfg.keep_float:
        preset = dataclasses.replace(preset, exclude=preset.exclude + tuple(cfg.keep_float))
    out_dir = Path(out_dir).expanduser().absolute()
    tmp = _make_temp_dir(out_dir, cfg.overwrite)
    try:
        record = _export_into(Path(run_dir), tmp, cfg, preset, log)
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record


def _make_temp_dir(out_dir: Path, overwrite: bool) -> Path:
    parent = out_dir.parent
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"--out {out_dir}: exists and is not a directory")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ExportError(f"--out {out_dir}: exists and is not empty; pass --overwrite to replace it")
    if not parent.is_dir():
        raise ExportError(f"--out {out_dir}: parent directory {parent} does not exist")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=parent))
    except OSError as exc:
        raise ExportError(f"--out {out_dir}: cannot write in {parent} ({exc.strerror})") from exc
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it 0700; MODEL_DIR should get the usual permissions
    return tmp


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        out_dir.rename(old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def load_trained(run_dir: Path) -> tuple[Any, dict]:
    """`edge_lung.train.model.load_run`, with its errors turned into `ExportError` naming the run."""
    from edge_lung.train import model as model_lib

    if not run_dir.is_dir():
        raise ExportError(f"RUN_DIR {run_dir}: no such directory; expected a run written by `edge-lung train`")
    try:
        return model_lib.load_run(run_dir, device="cpu")
    except (OSError, ValueError) as exc:
        raise ExportError(f"RUN_DIR {run_dir}: cannot load the trained model: {exc}") from exc


def _load_split_cycles(run_config: dict, cfg: ExportConfig, features: FeatureConfig, split: str) -> tuple:
    from edge_lung.data.icbhi import Database, load_cycles

    data_dir = cfg.data_dir or run_config.get("data")
    if not data_dir or not Path(data_dir).is_dir():
        raise ExportError(
            f"database {data_dir!r} (from the run config) not found; pass --data DB_DIR for calibration and parity"
        )
    # The run's own validation slice: same fraction and seed as training used.
    val_fraction, val_seed = _val_split(run_config)
    db = Database.scan(data_dir, val_fraction=val_fraction, val_seed=val_seed)
    cycles = load_cycles(db, splits=(split,), sample_rate=features.sample_rate)
    return cycles, data_dir


def _val_split(run_config: dict) -> tuple[float, int]:
    from edge_lung.data.icbhi import run_val_split

    try:
        return run_val_split(run_config.get("train", {}), run_config.get("train", {}).get("out", "run"))
    except ValueError as exc:
        raise ExportError(str(exc)) from exc


def _export_into(run_dir: Path, tmp: Path, cfg: ExportConfig, preset, log) -> dict:
    """Every step of the export, writing into `tmp`; returns the parity record."""
    t0 = time.perf_counter()
    module, run_config = load_trained(run_dir)
    features = FeatureConfig.from_dict(run_config["features"])
    x_par, y_par, data_dir = _parity_set(run_config, cfg, features, log)
    # Checked before any slow step, so an empty calibration set fails at once.
    calibration = _calibration_windows(run_config, cfg, features, log) if cfg.int8 and cfg.quant == "static" else None

    fp32_path = tmp / FP32_NAME
    export_fp32(module, fp32_path, features, cfg.opset)
    fp32 = onnx_logits(fp32_path, x_par, cfg.threads)
    record = _fp32_parity(module, fp32, x_par, y_par, cfg, run_dir, log)
    record.update(split=cfg.parity_split, data=str(data_dir), num_cycles=len(y_par),
                  sizes_bytes={"fp32": fp32_path.stat().st_size})

    run_info = _run_info(run_dir, run_config, data_dir, cfg)
    shipped, quantization = fp32_path, "fp32"
    if cfg.int8:
        shipped, quantization = tmp / INT8_NAME, f"int8-{cfg.quant}"
        qrec = quantize_model(fp32_path, shipped, cfg.quant, preset, calibration)
        run_info["quantization"] = {**qrec, "excluded_nodes": len(qrec["excluded_nodes"])}
        record["int8_vs_fp32"] = _int8_parity(shipped, fp32_path, fp32, x_par, y_par, cfg, log)
        fp32_path.unlink()

    metrics = run_config.get("best") or {}
    set_metadata(shipped, build_metadata(list(run_config["labels"]), features, quantization, metrics, run_info))
    if cfg.int8:
        import onnx

        onnx.checker.check_model(str(shipped), full_check=True)  # FP32 was checked right after tracing
    record["sizes_bytes"][quantization] = shipped.stat().st_size
    record["sha256"] = sha256_file(shipped)
    record["export_seconds"] = round(time.perf_counter() - t0, 1)
    _write_files(tmp, shipped, record)
    return record


def _parity_set(run_config: dict, cfg: ExportConfig, features: FeatureConfig, log) -> tuple:
    """(inputs float32[N, T, M], labels int64[N], database dir) of the parity split."""
    cycles, data_dir = _load_split_cycles(run_config, cfg, features, cfg.parity_split)
    if not cycles:
        raise ExportError(f"database {data_dir}: no {cfg.parity_split!r} cycles to measure parity on")
    if cfg.parity_size:
        cycles = [cycles[i] for i in pick_balanced(np.array([c.label for c in cycles]), cfg.parity_size, cfg.seed)]
    log(f"parity set: {len(cycles)} {cfg.parity_split} cycles from {data_dir}")
    x, y = cycles_to_features(cycles, features)
    return x, y, data_dir


def _fp32_parity(module: Any, fp32: np.ndarray, x: np.ndarray, y: np.ndarray, cfg: ExportConfig, run_dir: Path,
                 log) -> dict:
    """FP32 ONNX against PyTorch; `ParityError` when the logits differ by `fp32_tolerance` or more."""
    ref = torch_logits(module, x)
    diff = float(np.abs(fp32 - ref).max())
    agreement = _agreement(fp32, ref)
    log(f"FP32 ONNX vs PyTorch: max |logit diff| {diff:.2e}, argmax agreement {agreement:.2f}%")
    if not diff < cfg.fp32_tolerance:
        raise ParityError(
            f"RUN_DIR {run_dir}: FP32 ONNX differs from PyTorch by {diff:.3e} (limit {cfg.fp32_tolerance:.0e}); "
            "the exported graph does not reproduce the model, nothing was written"
        )
    return {
        "fp32_vs_torch": {"max_abs_logit_diff": diff, "limit": cfg.fp32_tolerance, "argmax_agreement": agreement,
                          "passed": True},
        "scores": {"torch": score_predictions(y, ref.argmax(1)), "fp32": score_predictions(y, fp32.argmax(1))},
    }


def _run_info(run_dir: Path, run_config: dict, data_dir: str, cfg: ExportConfig) -> dict:
    """Provenance written into the metadata (`edge_lung.run`)."""
    import onnxruntime
    import torch
    import transformers

    val_fraction, val_seed = _val_split(run_config)
    return {
        "run_dir": str(run_dir.absolute()),
        "data": str(data_dir),
        "exporter": f"torch.onnx.export (TorchScript tracer, opset {cfg.opset})",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnxruntime": onnxruntime.__version__,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": f"{platform.system()}-{platform.machine()}",
        "val_fraction": val_fraction,
        "val_seed": val_seed,
        **{k: run_config[k] for k in ("backbone", "adapter") if k in run_config},
    }


def _write_files(tmp: Path, shipped: Path, record: dict) -> None:
    """parity.json, manifest.json, model_card.md; then load it back the way the device will."""
    from edge_lung.fileio import atomic_write_json, atomic_write_text
    from edge_lung.runtime.model_dir import OnnxClassifier

    atomic_write_json(tmp / "parity.json", record)
    manifest = write_manifest(tmp, shipped, {"parity": _parity_summary(record)})
    atomic_write_text(tmp / "model_card.md", model_card(manifest, record))
    try:
        OnnxClassifier(tmp)
    except ArtifactError as exc:
        raise ExportError(f"exported model does not load back: {exc}") from exc


def _calibration_windows(run_config: dict, cfg: ExportConfig, features: FeatureConfig, log) -> np.ndarray:
    cycles, data_dir = _load_split_cycles(run_config, cfg, features, "train")
    if not cycles:
        raise ExportError(
            f"database {data_dir}: empty calibration set (no 'train' cycles); static INT8 needs real cycles, "
            "use --quant dynamic or point --data at the training database"
        )
    idx = pick_balanced(np.array([c.label for c in cycles]), cfg.calibration_size, cfg.seed)
    x, _ = cycles_to_features([cycles[i] for i in idx], features)
    log(f"calibration set: {len(x)} train cycles (class-balanced, seed {cfg.seed})")
    return x


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(100.0 * np.mean(a.argmax(1) == b.argmax(1))) if len(a) else float("nan")


def _int8_parity(int8_path: Path, fp32_path: Path, fp32: np.ndarray, x: np.ndarray, y: np.ndarray,
                 cfg: ExportConfig, log) -> dict:
    """INT8 against FP32 on the parity set: argmax agreement, ICBHI Score of each, size ratio."""
    # One window per call, as on the device: dynamic INT8 ranges depend on the whole batch of a call.
    int8 = onnx_logits(int8_path, x, cfg.threads, batch=1)
    s_fp32 = score_predictions(y, fp32.argmax(1))
    s_int8 = score_predictions(y, int8.argmax(1))
    size_fp32, size_int8 = fp32_path.stat().st_size, int8_path.stat().st_size
    out = {
        "mode": cfg.quant,
        "preset": cfg.preset,
        "argmax_agreement": _agreement(int8, fp32),
        "max_abs_logit_diff": float(np.abs(int8 - fp32).max()),
        "mean_abs_logit_diff": float(np.abs(int8 - fp32).mean()),
        "fp32_logit_std": float(fp32.std()),
        "score_fp32": s_fp32["score"],
        "score_int8": s_int8["score"],
        "score_diff": s_int8["score"] - s_fp32["score"],
        "size_fp32_bytes": size_fp32,
        "size_int8_bytes": size_int8,
        "size_ratio": size_int8 / size_fp32,
        "scores_int8": s_int8,
    }
    # Context for the agreement figure: a flip needs a top-2 gap under 2 x the logit error, so an
    # undertrained model with near-tied logits loses agreement that says little about the INT8 model.
    top2 = np.sort(fp32, axis=1)[:, -2:] if fp32.shape[1] > 1 else np.zeros((len(fp32), 2), np.float32)
    margin = top2[:, 1] - top2[:, 0]
    flipped = int8.argmax(1) != fp32.argmax(1)
    out["fp32_median_top2_margin"] = float(np.median(margin)) if len(margin) else float("nan")
    out["flipped_cycles"] = int(flipped.sum())
    out["fp32_top2_margin_of_flipped"] = [round(float(m), 6) for m in margin[flipped]]
    out["aims"] = {
        "argmax_agreement": {"aim": f">= {AIMS['int8_argmax_agreement']}",
                             "met": out["argmax_agreement"] >= AIMS["int8_argmax_agreement"]},
        "score_loss": {"aim": f"<= {AIMS['int8_score_loss']}", "met": -out["score_diff"] <= AIMS["int8_score_loss"]},
        "size_ratio": {"aim": f"<= {AIMS['int8_size_ratio']}", "met": out["size_ratio"] <= AIMS["int8_size_ratio"]},
    }
    log(
        f"INT8 ({cfg.quant}, {cfg.preset}) vs FP32: argmax agreement {out['argmax_agreement']:.2f}%, "
        f"ICBHI Score {out['score_int8']:.2f} vs {out['score_fp32']:.2f} ({out['score_diff']:+.2f}), "
        f"size {size_int8 / 1e6:.1f} MB = {100 * out['size_ratio']:.1f}% of FP32"
    )
    for name, aim in out["aims"].items():
        if not aim["met"]:
            log(f"warning: INT8 {name} misses the aim {aim['aim']} (recorded in parity.json)")
    return out


def _parity_summary(record: dict) -> dict:
    out = {
        "split": record["split"],
        "num_cycles": record["num_cycles"],
        "fp32_max_abs_logit_diff": record["fp32_vs_torch"]["max_abs_logit_diff"],
    }
    if "int8_vs_fp32" in record:
        q = record["int8_vs_fp32"]
        out.update({k: q[k] for k in ("argmax_agreement", "score_fp32", "score_int8", "score_diff", "size_ratio")})
    return out


def model_card(manifest: dict, record: dict) -> str:
    """model_card.md text: what the model is, its input, its figures and its limits."""
    feats = manifest["features"]
    run = manifest["run"]
    lines = [
        f"# edge-lung respiratory-sound classifier ({manifest['quantization']})",
        "",
        "Classifies one respiratory cycle, cyclic-padded to a fixed window, into "
        + ", ".join(f"`{x}`" for x in manifest["labels"])
        + " (ICBHI 2017 classes). Research software, not a medical device: it does not diagnose.",
        "",
        "## Files",
        f"- `{manifest['model_file']}`: ONNX, {manifest['size_bytes'] / 1e6:.1f} MB, SHA-256 `{manifest['sha256']}`",
        "- `manifest.json`: the same metadata as the ONNX file, plus the hash; `parity.json`: measured parity",
        "",
        "## Input and output",
        f"- input `{manifest['input']['name']}`: float32 {manifest['input']['shape']}, normalised log-mel features",
        f"- output `{manifest['output']['name']}`: float32 {manifest['output']['shape']}, logits (softmax for "
        "probabilities)",
        f"- audio: mono, {feats['sample_rate']} Hz, {feats['window_s']} s windows, `{feats['padding']}` padding, "
        f"{feats['num_mel_bins']} Kaldi fbank bins ({feats['frame_length_ms']} ms / {feats['frame_shift_ms']} ms), "
        f"normalised (x - {feats['norm_mean']}) / (2 * {feats['norm_std']}), feature version "
        f"`{feats['feature_version']}`",
        "- every setting is in the ONNX metadata (`edge_lung.*` keys); "
        "`edge_lung.runtime.model_dir.OnnxClassifier` reads them",
        "",
        "## Provenance",
        f"- run: `{run.get('run_dir')}`, data: `{run.get('data')}`",
        f"- exporter: {run.get('exporter')}; torch {run.get('torch')}, transformers {run.get('transformers')}, "
        f"onnxruntime {run.get('onnxruntime')}; exported {run.get('exported_at')}",
    ]
    if "quantization" in run:
        q = run["quantization"]
        lines.append(
            f"- quantisation: {q['mode']}, preset `{q['preset']['name']}` (weights {q['preset']['weight_type']}, "
            f"per-channel {q['preset']['per_channel']}, reduce_range {q['preset']['reduce_range']}), "
            f"{q['excluded_nodes']} nodes kept in float"
        )
    best = manifest.get("metrics") or {}
    val = best.get("val", best)  # train.py records {"epoch": N, "val": report}
    lines += ["", "## Figures", ""]
    if val:
        lines.append(
            f"Run validation (PyTorch{', epoch ' + str(best['epoch']) if 'epoch' in best else ''}): "
            + ", ".join(f"{k} {val[k]:.2f}" for k in ("score", "sensitivity", "specificity") if k in val)
        )
    fp = record["fp32_vs_torch"]
    lines += [
        "",
        f"Parity on {record['num_cycles']} `{record['split']}` cycles:",
        "",
        "| check | value | limit / aim |",
        "| --- | --- | --- |",
        f"| FP32 ONNX vs PyTorch, max abs logit diff | {fp['max_abs_logit_diff']:.2e} | < {fp['limit']:.0e} |",
        f"| FP32 ONNX vs PyTorch, argmax agreement | {fp['argmax_agreement']:.2f}% | 100% |",
        f"| ICBHI Score, PyTorch / FP32 ONNX | {record['scores']['torch']['score']:.2f} / "
        f"{record['scores']['fp32']['score']:.2f} | |",
    ]
    if "int8_vs_fp32" in record:
        q = record["int8_vs_fp32"]
        lines += [
            f"| INT8 vs FP32, argmax agreement | {q['argmax_agreement']:.2f}% "
            f"| {q['aims']['argmax_agreement']['aim']} |",
            f"| ICBHI Score, INT8 / FP32 (diff) | {q['score_int8']:.2f} / {q['score_fp32']:.2f} "
            f"({q['score_diff']:+.2f}) | loss {q['aims']['score_loss']['aim']} |",
            f"| size INT8 / FP32 | {q['size_int8_bytes'] / 1e6:.1f} MB / {q['size_fp32_bytes'] / 1e6:.1f} MB "
            f"({100 * q['size_ratio']:.1f}%) | {q['aims']['size_ratio']['aim']} |",
        ]
    lines += [
        "",
        "## Limits",
        "- Trained and validated on the data named above only; performance on other stethoscopes, body positions "
        "or populations is unknown until measured (`edge-lung evaluate MODEL_DIR --data DB --split test`).",
        "- The ICBHI Score counts exact classes; see the run's report for the relaxed 2-class figures.",
        "",
    ]
    return "\n".join(lines)
