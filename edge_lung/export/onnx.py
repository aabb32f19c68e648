"""Export a trained run to a self-describing ONNX model directory (FP32 or INT8) with measured parity.

`export_model(run_dir, out_dir, ExportConfig(...))` writes MODEL_DIR (see edge_lung/runtime/artifact/model_dir.py and
export/README.md): one ONNX file whose metadata carries labels, every feature setting, the
quantisation and the run's validation metrics, plus manifest.json (with the file's SHA-256),
parity.json and model_card.md. Everything is built in a temp directory beside MODEL_DIR and renamed
into place at the end (`fileio.replaced_dir`), so a failed export leaves no half-written MODEL_DIR.
The parity measurements live in `edge_lung.export.parity`, the model card in `edge_lung.export.card`.

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
  optimisation level when the device loads the model (`runtime.model_dir.session_options`), and an offline
  ORT_ENABLE_ALL model is tied to the exporting machine's CPU. The transformer fusion tool
  (``onnxruntime.transformers.optimizer``, model type vit) fuses BiasGelu and SkipLayerNorm but not
  attention on this graph, and measured 0.94x-1.08x of plain FP32 on base-size AST: no gain, not kept.
- Quantisation: onnxruntime.quantization directly (see edge_lung/export/quantize.py for why not
  ORTQuantizer). Default `dynamic`: on base-size AST it ran 1.9-2.3x faster than FP32 ONNX and
  2.3-3.7x faster than PyTorch eager, static QDQ 1.55-1.8x / 1.7-3.1x (three benchmark runs).
"""

from __future__ import annotations

import dataclasses
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_lung.config import FeatureConfig
from edge_lung.data.icbhi import load_split, run_val_split
from edge_lung.export.card import model_card
from edge_lung.export.cost import count_macs
from edge_lung.export.e2e import (
    check_fp32_end_to_end,
    cycle_windows,
    e2e_unsupported,
    finish_end_to_end,
    write_model_vectors,
)
from edge_lung.export.parity import (
    AIMS,
    FP32_TOLERANCE,
    ExportError,
    ParityError,
    cycles_to_features,
    fp32_parity,
    int8_parity,
    onnx_logits,
    parity_summary,
    pick_balanced,
)
from edge_lung.export.quantize import QUANT_CHOICES, check_patterns, load_preset, quantize_model, resolve_quant
from edge_lung.fileio import (
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    replaced_dir,
    sha256_file,
    temp_dir_beside,
)
from edge_lung.runtime.artifact.e2e import E2E_NAME, verify_model_dir
from edge_lung.runtime.artifact.model_dir import (
    CARD_NAME,
    EMBEDDING_NAME,
    INPUT_NAME,
    OUTPUT_NAME,
    PARITY_NAME,
    ArtifactError,
    OnnxClassifier,
    build_metadata,
    check_out_dir,
    write_manifest,
)
from edge_lung.runtime.artifact.quality import QualityConfig
from edge_lung.runtime.offline.calibrate import train_split_stats, write_feature_stats

__all__ = [
    "AIMS", "FP32_TOLERANCE", "OPSET", "ExportConfig", "ExportError", "ParityError", "cycles_to_features",
    "export_fp32", "export_model", "load_trained", "onnx_logits", "pick_balanced", "set_metadata",
]

OPSET = 17
FP32_NAME = "model.onnx"
INT8_NAME = "model.int8.onnx"


@dataclass(frozen=True)
class ExportConfig:
    """Options of one export (the `edge-lung export` flags)."""

    int8: bool = False
    quant: str = "auto"  # auto: dynamic for transformers, static for CNNs (export.quantize.resolve_quant)
    calibration_size: int = 64
    preset: str = "x86-avx2"
    parity_size: int = 0  # 0: every cycle of the parity split
    parity_split: str = "val"
    data_dir: str | None = None  # None: the database the run was trained on
    cache_dir: str | None = None  # decoded-audio cache; None: the run's own (else ~/.cache/edge-lung)
    overwrite: bool = False
    threads: int | None = None
    opset: int = OPSET
    fp32_tolerance: float = FP32_TOLERANCE
    seed: int = 0
    keep_float: tuple[str, ...] = ()  # extra node-name regexes kept in float, on top of the preset's
    quality_set: tuple[str, ...] = ()  # NAME=VALUE overrides of the signal-quality gate's defaults

    def __post_init__(self) -> None:
        if self.quant not in QUANT_CHOICES:
            raise ValueError(f"--quant: expected one of {QUANT_CHOICES}, got {self.quant!r}")
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
        QualityConfig().with_overrides(self.quality_set)  # a bad --quality-set fails here, before any work

    @property
    def quality(self) -> QualityConfig:
        """The gate thresholds written into the model: the defaults with `quality_set` applied."""
        return QualityConfig().with_overrides(self.quality_set)


# ---------------------------------------------------------------------------------------------
# Building blocks (also used by benchmarks/bench_export.py)


def export_fp32(
    module: Any, path: str | Path, features: FeatureConfig, opset: int = OPSET, with_embedding: bool = False
) -> None:
    """Trace `module` (features[B, T, M] -> logits[B, C]) to ONNX at `path`, dynamic batch; full checker.

    With `with_embedding`, `module` returns (logits, pooled embedding [B, D]) (`train.model.LogitsAndEmbedding`)
    and the embedding becomes a second output named `EMBEDDING_NAME`; the first output stays the logits."""
    import warnings

    import onnx
    import torch

    dummy = torch.zeros(1, features.num_frames, features.num_mel_bins, dtype=torch.float32)
    outputs = [OUTPUT_NAME, EMBEDDING_NAME] if with_embedding else [OUTPUT_NAME]
    # Eval mode on the module traced, wrapper included: the exporter puts a module in training mode back
    # into training mode afterwards, recursively, which would leave the caller's model with BatchNorm on
    # batch statistics and dropout on (the CNN student's parity check then measured a 0.2 logit gap).
    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about the legacy exporter and about shape-dependent Python branches in
        # transformers' SDPA wrapper; both are constant for our fixed [T, M] input.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (dummy,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=outputs,
            dynamic_axes={INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in outputs}},
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
    check_out_is_ours(out_dir, Path(run_dir), cfg.overwrite)
    _check_out_dir(out_dir, cfg.overwrite, (cfg.data_dir,))
    try:
        tmp = temp_dir_beside(out_dir)
    except OSError as exc:
        raise ExportError(f"--out {out_dir}: cannot write in {out_dir.parent} ({exc.strerror})") from exc
    with replaced_dir(out_dir, tmp):
        return _export_into(Path(run_dir), tmp, cfg, preset, log)


def check_out_is_ours(out_dir: Path, run_dir: Path, overwrite: bool) -> None:
    """Refuse an --out whose replacement would destroy what export did not write.

    The swap renames --out away and deletes it: so --out may not be the run, hold it or lie inside it
    (with or without --overwrite); what else --overwrite may replace is `_check_out_dir`'s (fileio's policy).
    """
    out_real, run_real = out_dir.resolve(), run_dir.expanduser().resolve()
    where = ("is" if out_real == run_real else "holds" if run_real.is_relative_to(out_real)
             else "is inside" if out_real.is_relative_to(run_real) else None)
    if where is not None:
        raise ExportError(f"--out {out_dir}: {where} the run directory {run_dir}; choose a folder outside the run")


def _check_out_dir(out_dir: Path, overwrite: bool, inputs: tuple[str | None, ...] = ()) -> None:
    """`runtime.model_dir.check_out_dir` (--overwrite replaces only an edge-lung model directory holding nothing
    export did not write; never an input), as `ExportError`."""
    try:
        check_out_dir(out_dir, overwrite, inputs=inputs)
    except ArtifactError as exc:
        raise ExportError(str(exc)) from exc


def load_trained(run_dir: Path) -> tuple[Any, dict]:
    """`edge_lung.train.model.load_run`, with its errors turned into `ExportError` naming the run."""
    from edge_lung.train import model as model_lib

    if not run_dir.is_dir():
        raise ExportError(f"RUN_DIR {run_dir}: no such directory; expected a run written by `edge-lung train`")
    try:
        check_run_names(run_dir, model_lib.read_run_config(run_dir))
        return model_lib.load_run(run_dir, device="cpu")
    except ExportError:
        raise
    except (OSError, ValueError) as exc:
        raise ExportError(f"RUN_DIR {run_dir}: cannot load the trained model: {exc}") from exc


def check_run_names(run_dir: Path, run_config: dict) -> None:
    """`ExportError` for an adapter or backbone in config.json that training could not have written (an edited
    "banana" was loaded and recorded in the manifest, issue 26): the adapter one of `ADAPTERS`, the backbone a
    named size, a path or hub id (it has a '/'), or a directory here."""
    from edge_lung.train.model import ADAPTERS, named_sizes

    config = run_dir / "config.json"
    adapter, backbone = run_config.get("adapter"), run_config.get("backbone")
    if adapter not in ADAPTERS:
        raise ExportError(f"{config}: adapter {adapter!r}: expected one of {list(ADAPTERS)} (what training writes); "
                          "the file was edited or is not from this edge-lung version")
    if backbone is None:
        return  # runs from before the backbone was recorded: the weights in the run are what is exported
    if not isinstance(backbone, str) or not (backbone in named_sizes() or "/" in backbone
                                             or Path(backbone).expanduser().is_dir()):
        raise ExportError(f"{config}: backbone {backbone!r}: expected one of {named_sizes()}, a directory or a "
                          "hub id (ORG/NAME); the file was edited or is not from this edge-lung version")


def _load_split_cycles(run_config: dict, cfg: ExportConfig, features: FeatureConfig, split: str) -> tuple:
    """(cycles of `split`, database dir) through `data.icbhi.load_split`, with the run's own validation split."""

    data_dir = cfg.data_dir or run_config.get("data")
    if not data_dir or not Path(data_dir).exists():  # a folder, or a manifest file (issue 27)
        raise ExportError(
            f"database {data_dir!r} (from the run config) not found; pass --data DB_DIR for calibration and parity"
        )
    train = run_config.get("train", {})
    try:
        # The run's own validation slice: same fraction and seed as training used.
        val_fraction, val_seed = run_val_split(train, train.get("out", "run"))
    except ValueError as exc:
        raise ExportError(str(exc)) from exc
    cache_dir = cfg.cache_dir or train.get("cache_dir")
    try:
        return load_split(data_dir, split, features, val_fraction, val_seed, cache_dir), data_dir
    except ValueError as exc:  # the split has no cycles
        raise ExportError(f"{exc}; {_EMPTY_SPLIT[split]}") from exc


_EMPTY_SPLIT = {
    "train": "empty calibration set: static INT8 needs real cycles, use --quant dynamic or point --data at the "
             "training database",
    "val": "no cycles to measure parity on",
    "test": "no cycles to measure parity on",
}


def _export_into(run_dir: Path, tmp: Path, cfg: ExportConfig, preset, log) -> dict:
    """Every step of the export, writing into `tmp`; returns the parity record."""
    from edge_lung.train.model import LogitsAndEmbedding, model_kind

    t0 = time.perf_counter()
    module, run_config = load_trained(run_dir)
    kind = model_kind(module)
    quant = resolve_quant(cfg.quant, kind)
    features = FeatureConfig.from_dict(run_config["features"])
    x_par, y_par, data_dir, (audio_par, names_par) = _parity_set(run_config, cfg, features, log)
    # Checked before any slow step, so an empty calibration set fails at once.
    calibration = _calibration_windows(run_config, cfg, features, log) if cfg.int8 and quant == "static" else None

    fp32_path = tmp / FP32_NAME
    # the pooled embedding rides along as a second output for embedding maps on the device (#14)
    export_fp32(LogitsAndEmbedding(module), fp32_path, features, cfg.opset, with_embedding=True)
    fp32 = onnx_logits(fp32_path, x_par, cfg.threads)
    record = fp32_parity(module, fp32, x_par, y_par, cfg.fp32_tolerance, run_dir, log)
    no_e2e = e2e_unsupported(features)
    if no_e2e is None:
        record["e2e"] = check_fp32_end_to_end(fp32_path, tmp / E2E_NAME, audio_par, x_par, fp32, features,
                                              cfg.fp32_tolerance, cfg.threads, log)
    else:
        log(f"end-to-end graph and test vectors: {no_e2e}")
    record.update(split=cfg.parity_split, data=str(data_dir), num_cycles=len(y_par),
                  sizes_bytes={"fp32": fp32_path.stat().st_size})

    run_info = _run_info(run_dir, run_config, data_dir, cfg)
    run_info["cost"] = count_macs(fp32_path, features)  # read by `bench` on the device, which has no onnx-tool
    log(f"cost: {run_info['cost']['macs'] / 1e9:.3f} GMAC per window ({run_info['cost']['counted_by']})")
    shipped, quantization = fp32_path, "fp32"
    if cfg.int8:
        shipped, quantization = tmp / INT8_NAME, f"int8-{quant}"
        qrec = quantize_model(fp32_path, shipped, quant, preset, calibration, INPUT_NAME, kind)
        run_info["quantization"] = {**qrec, "excluded_nodes": len(qrec["excluded_nodes"])}
        record["int8_vs_fp32"] = int8_parity(shipped, fp32_path, fp32, x_par, y_par, quant, cfg.preset,
                                             cfg.threads, log)
        fp32_path.unlink()

    metrics = run_config.get("best") or {}
    set_metadata(shipped, build_metadata(list(run_config["labels"]), features, quantization, metrics, run_info,
                                         cfg.quality))
    if no_e2e:  # the model graph's own test vectors, so `verify` checks the front end and the model on the device
        extra, int8_e2e = {"e2e": {"skipped": no_e2e}, "test_vectors": write_model_vectors(
            tmp, shipped, features, audio_par, y_par, names_par, cfg.int8, cfg.threads, cfg.seed)}, None
    else:
        extra, int8_e2e = finish_end_to_end(tmp, shipped, features, (audio_par, x_par, y_par, names_par), cfg.int8,
                                            cfg.threads, cfg.seed, log)
    extra["feature_stats"] = _write_train_stats(tmp, run_dir, run_config, cfg, features, log)
    if int8_e2e is not None:
        record["e2e_int8"] = int8_e2e
    if cfg.int8:
        import onnx

        onnx.checker.check_model(str(shipped), full_check=True)  # FP32 was checked right after tracing
    record["sizes_bytes"][quantization] = shipped.stat().st_size
    record["sha256"] = sha256_file(shipped)
    record["export_seconds"] = round(time.perf_counter() - t0, 1)
    _write_files(tmp, shipped, record, extra)
    return record


def _parity_set(run_config: dict, cfg: ExportConfig, features: FeatureConfig, log) -> tuple:
    """(inputs float32[N, T, M], labels int64[N], database dir, (audio windows float32[N, S], names)) of the
    parity split."""

    cycles, data_dir = _load_split_cycles(run_config, cfg, features, cfg.parity_split)
    if cfg.parity_size:
        cycles = [cycles[i] for i in pick_balanced(np.array([c.label for c in cycles]), cfg.parity_size, cfg.seed)]
    log(f"parity set: {len(cycles)} {cfg.parity_split} cycles from {data_dir}")
    x, y = cycles_to_features(cycles, features)
    return x, y, data_dir, cycle_windows(cycles, features)


def _write_train_stats(tmp: Path, run_dir: Path, run_config: dict, cfg: ExportConfig, features: FeatureConfig,
                       log) -> dict:
    """feature_stats.json: the training split's per-bin feature statistics, the reference `edge-lung calibrate`
    maps a new stethoscope onto; returns its manifest entry."""

    data_dir = cfg.data_dir or run_config.get("data")
    train = run_config.get("train", {})
    try:
        stats, cycles = train_split_stats(data_dir, features, train, run_dir, cfg.cache_dir or train.get("cache_dir"))
    except ValueError as exc:
        raise ExportError(f"feature statistics of the training split: {exc}") from exc
    log(f"feature statistics: {cycles} train cycles, {stats.frames} frames")
    return write_feature_stats(tmp, stats, {"split": "train", "data": str(data_dir), "cycles": cycles})


def _run_info(run_dir: Path, run_config: dict, data_dir: str, cfg: ExportConfig) -> dict:
    """Provenance written into the metadata (`edge_lung.run`)."""
    import onnxruntime
    import torch
    import transformers


    train = run_config.get("train", {})
    val_fraction, val_seed = run_val_split(train, train.get("out", "run"))  # checked when the data was loaded
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
        **({"val_devices": train["val_devices"]} if train.get("val_devices") else {}),
        **{k: run_config[k] for k in ("backbone", "adapter") if k in run_config},
        **({"normal_margin": run_config["normal_margin"]["margin"]} if run_config.get("normal_margin") else {}),
        **({"adapted": run_config["adapted"]["summary"]} if run_config.get("adapted") else {}),  # issue 27
    }


def _write_files(tmp: Path, shipped: Path, record: dict, extra: dict) -> None:
    """parity.json, manifest.json (with `extra` entries), model_card.md; then load it back the way the device
    will and re-run the test vectors."""

    atomic_write_json(tmp / PARITY_NAME, record)
    manifest = write_manifest(tmp, shipped, {"parity": parity_summary(record), **extra})
    atomic_write_text(tmp / CARD_NAME, model_card(manifest, record))
    try:
        OnnxClassifier(tmp)
        verified = verify_model_dir(tmp)
    except ArtifactError as exc:
        raise ExportError(f"exported model does not load back: {exc}") from exc
    if not verified["passed"]:
        raise ExportError(f"exported model fails its own test vectors: {verified['checks']}")


def _calibration_windows(run_config: dict, cfg: ExportConfig, features: FeatureConfig, log) -> np.ndarray:
    cycles, _ = _load_split_cycles(run_config, cfg, features, "train")
    idx = pick_balanced(np.array([c.label for c in cycles]), cfg.calibration_size, cfg.seed)
    x, _ = cycles_to_features([cycles[i] for i in idx], features)
    log(f"calibration set: {len(x)} train cycles (class-balanced, seed {cfg.seed})")
    return x
