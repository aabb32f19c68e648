"""INT8 quantisation of an exported FP32 ONNX model with onnxruntime.quantization.

Two modes, both with per-channel weights (`--quant auto`, the default, picks one per model kind:
dynamic for transformers, static for CNNs, whose convolutions are quantised too):
- ``dynamic``: weights INT8 offline, activation ranges computed per call (MatMulInteger /
  DynamicQuantizeMatMul kernels). Needs no data.
- ``static``: QDQ format, activation ranges calibrated offline on real cycles (MinMax over the
  calibration windows); onnxruntime fuses the QDQ pairs into integer kernels at load time.

Why onnxruntime.quantization and not optimum's ``ORTQuantizer`` / ``AutoQuantizationConfig``:
ORTQuantizer is a thin wrapper that builds the same arguments and calls the same
``quantize_dynamic`` / ``quantize_static``; it now ships in the ``optimum-onnx`` package, whose
only release (0.1.0) pins ``transformers<4.58`` and would downgrade this project's transformers 5.x
(checked with ``pip install --dry-run``), and optimum 2.3 alone no longer contains it. Calling
onnxruntime directly gives the identical model with one dependency fewer. The presets in
``edge_lung/export/presets/*.json`` carry AutoQuantizationConfig's choices (avx2 / avx512_vnni / arm64),
adjusted to onnxruntime's own CPU guidance (7-bit weights on x86 without VNNI).

This module imports no torch: it only needs onnx and onnxruntime.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_lung.config import reject_unknown_keys
from edge_lung.runtime.artifact.model_dir import INPUT_NAME

QUANT_MODES: tuple[str, ...] = ("dynamic", "static")
QUANT_CHOICES: tuple[str, ...] = ("auto", *QUANT_MODES)
"""`--quant`: 'auto' picks per model kind (`resolve_quant`)."""
MODEL_KINDS: tuple[str, ...] = ("transformer", "cnn")
# onnxruntime's guidance, measured on our models (benchmarks/results/students/): dynamic INT8 for transformers
# (activation ranges per call suit LayerNorm'd tokens; no data needed), static QDQ for CNNs (ranges calibrated
# on real cycles; dynamic Conv runs as slow ConvInteger and lost the most agreement).
AUTO_MODE = {"transformer": "dynamic", "cnn": "static"}
# Quantised on top of the preset's op types for a CNN: its products are convolutions.
CNN_OP_TYPES: tuple[str, ...] = ("Conv",)
_QUANT_TYPES = ("QInt8", "QUInt8")
_CALIBRATE_METHODS = ("MinMax", "Percentile", "Entropy")
PRESET_DIR = Path(__file__).resolve().parent / "presets"
"""Where the named presets live: package data, so they ship with the wheel too."""


@dataclass(frozen=True)
class QuantPreset:
    """One target CPU's INT8 settings, read from a JSON file in edge_lung/export/presets/."""

    name: str
    description: str = ""
    weight_type: str = "QInt8"
    activation_type: str = "QUInt8"
    reduce_range: bool = False
    per_channel: bool = True
    op_types: tuple[str, ...] = ("MatMul", "Gemm")
    exclude: tuple[str, ...] = ()
    calibrate_method: str = "MinMax"
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for name in ("weight_type", "activation_type"):
            value = getattr(self, name)
            if value not in _QUANT_TYPES:
                raise ValueError(f"preset {self.name!r}: {name}: expected one of {_QUANT_TYPES}, got {value!r}")
        if self.calibrate_method not in _CALIBRATE_METHODS:
            raise ValueError(
                f"preset {self.name!r}: calibrate_method: expected one of {_CALIBRATE_METHODS}, "
                f"got {self.calibrate_method!r}"
            )
        if not self.op_types:
            raise ValueError(f"preset {self.name!r}: op_types: expected at least one operator type, got none")
        check_patterns(self.exclude, f"preset {self.name!r}: exclude")

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "weight_type": self.weight_type,
            "activation_type": self.activation_type,
            "reduce_range": self.reduce_range,
            "per_channel": self.per_channel,
            "op_types": list(self.op_types),
            "exclude": list(self.exclude),
            "calibrate_method": self.calibrate_method,
        }


def check_patterns(patterns: tuple[str, ...], option: str) -> None:
    """ValueError naming `option` for the first pattern that is not a valid regular expression."""
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{option}: expected a regular expression, got {pattern!r} ({exc})") from exc


def available_presets() -> list[str]:
    """Names of the presets shipped in edge_lung/export/presets/."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.json")) if PRESET_DIR.is_dir() else []


def load_preset(name_or_path: str | Path) -> QuantPreset:
    """A preset by name (edge_lung/export/presets/NAME.json) or by the path of a JSON file."""
    path = Path(name_or_path)
    if not path.suffix == ".json":
        path = PRESET_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise ValueError(
            f"--preset: expected one of {available_presets()} or the path of a preset .json file, "
            f"got {str(name_or_path)!r} ({path} not found)"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: preset is not valid JSON ({exc})") from exc
    reject_unknown_keys(data, set(QuantPreset.__dataclass_fields__) - {"source"}, str(path), "preset keys")
    data = {k: tuple(v) if k in ("op_types", "exclude") else v for k, v in data.items()}
    data.setdefault("name", path.stem)
    return QuantPreset(**data, source=str(path))


def excluded_nodes(model_path: str | Path, patterns: tuple[str, ...]) -> list[str]:
    """Names of graph nodes whose name matches any regex in `patterns` (kept in float)."""
    import onnx

    if not patterns:
        return []
    model = onnx.load(str(model_path), load_external_data=False)
    regex = re.compile("|".join(f"(?:{p})" for p in patterns))
    return [n.name for n in model.graph.node if n.name and regex.search(n.name)]


def resolve_quant(mode: str, kind: str) -> str:
    """'dynamic' or 'static' for `--quant mode` on a model of `kind` ('transformer' or 'cnn')."""
    if mode not in QUANT_CHOICES:
        raise ValueError(f"--quant: expected one of {QUANT_CHOICES}, got {mode!r}")
    if kind not in MODEL_KINDS:
        raise ValueError(f"model kind: expected one of {MODEL_KINDS}, got {kind!r}")
    return AUTO_MODE[kind] if mode == "auto" else mode


class _DropPreprocessHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextlib.contextmanager
def _no_preprocess_hint() -> Iterator[None]:
    """Silence onnxruntime's "consider pre-processing" hint: measured on our AST graph,
    `quant_pre_process` (symbolic shape inference + basic fusions) gives bit-identical INT8 logits,
    so the exporter does not run it and the hint would only alarm users."""
    hint = _DropPreprocessHint()
    logging.getLogger().addFilter(hint)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(hint)


class _WindowReader:
    """onnxruntime CalibrationDataReader over float32[N, T, M] windows, one window per call."""

    def __init__(self, windows: np.ndarray, input_name: str) -> None:
        self._windows = windows
        self._input_name = input_name
        self._it = self._iterate()

    def _iterate(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(self._windows.shape[0]):
            yield {self._input_name: self._windows[i : i + 1]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = self._iterate()


def quantize_model(
    src: str | Path,
    dst: str | Path,
    mode: str,
    preset: QuantPreset,
    calibration: np.ndarray | None = None,
    input_name: str = INPUT_NAME,
    kind: str = "transformer",
) -> dict:
    """Write the INT8 version of the FP32 model `src` to `dst`; returns what was done (for the record).

    `calibration` (float32[N, T, M] model inputs) is required for ``static`` and ignored for ``dynamic``.
    `kind` 'cnn' adds `CNN_OP_TYPES` to the preset's operator types.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    if mode not in QUANT_MODES:
        raise ValueError(f"--quant: expected one of {QUANT_MODES}, got {mode!r}")
    if kind not in MODEL_KINDS:
        raise ValueError(f"model kind: expected one of {MODEL_KINDS}, got {kind!r}")
    exclude = excluded_nodes(src, preset.exclude)
    op_types = list(preset.op_types) + (list(CNN_OP_TYPES) if kind == "cnn" else [])
    record = {"mode": mode, "kind": kind, "op_types": op_types, "preset": preset.to_dict(), "excluded_nodes": exclude}
    if mode == "dynamic":
        with _no_preprocess_hint():
            quantize_dynamic(
                str(src),
                str(dst),
                op_types_to_quantize=op_types,
                per_channel=preset.per_channel,
                reduce_range=preset.reduce_range,
                weight_type=getattr(QuantType, preset.weight_type),
                nodes_to_exclude=exclude,
                extra_options={"MatMulConstBOnly": True},
            )
        return record
    if calibration is None or len(calibration) == 0:
        raise ValueError("static quantisation: expected at least one calibration window, got an empty set")
    calibration = np.ascontiguousarray(calibration, dtype=np.float32)
    with _no_preprocess_hint():
        quantize_static(
            str(src),
            str(dst),
            _WindowReader(calibration, input_name),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=op_types,
            per_channel=preset.per_channel,
            reduce_range=preset.reduce_range,
            activation_type=getattr(QuantType, preset.activation_type),
            weight_type=getattr(QuantType, preset.weight_type),
            nodes_to_exclude=exclude,
            calibrate_method=getattr(CalibrationMethod, preset.calibrate_method),
            # Only weight x activation MatMuls: the attention score products (activation x activation)
            # would need two calibrated activation ranges and lose the most accuracy. No
            # CalibMaxIntermediateOutputs: in onnxruntime 1.32 it discards the collected ranges instead of
            # merging them ("No data is collected"); the MinMax calibrator keeps only per-tensor min/max
            # scalars per window, so memory stays small without it.
            extra_options={"MatMulConstBOnly": True},
        )
    record["calibration_windows"] = int(calibration.shape[0])
    return record
