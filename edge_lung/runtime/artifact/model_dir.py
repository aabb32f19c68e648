"""The exported model directory: the contract between export and the device.

A MODEL_DIR holds one ONNX file, `manifest.json`, `model_card.md` and `parity.json` (the names below).
The ONNX file's metadata (`metadata_props`) carries everything needed to turn microphone
samples into a decision, under the keys in `META_KEYS`; the manifest repeats it and adds the
file's SHA-256. This module reads both with onnxruntime alone (no torch, no onnx package).

Other files are listed in the manifest under a key, as {"file": NAME, "sha256": ...} (`listed_file`):
the training split's per-bin feature statistics (`STATS_NAME`, written by export) and, in a directory
written by `edge-lung calibrate`, the calibration for one stethoscope (`CALIBRATION_NAME`), which
`OnnxClassifier` applies to every input before the model (edge_lung/feature_stats.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_lung.config import FEATURE_VERSION, FeatureConfig
from edge_lung.feature_stats import Calibration, FeatureStats
from edge_lung.fileio import OutputKind, OutputRefused, atomic_write_json, check_output, sha256_file
from edge_lung.runtime.artifact.quality import QualityConfig
from edge_lung.scoring import softmax

ARTIFACT_FORMAT = 1
MANIFEST_NAME = "manifest.json"
PARITY_NAME = "parity.json"
CARD_NAME = "model_card.md"
INPUT_NAME = "features"
OUTPUT_NAME = "logits"
EMBEDDING_NAME = "embedding"  # second output: the pooled embedding the head reads (models exported since #14)
STATS_NAME = "feature_stats.json"  # the training split's per-bin feature statistics (manifest key "feature_stats")
CALIBRATION_NAME = "calibration.json"  # a stethoscope's calibration (manifest key "calibration", `edge-lung calibrate`)

META_KEYS = {
    "format": "edge_lung.format",
    "labels": "edge_lung.labels",
    "features": "edge_lung.features",
    "quantization": "edge_lung.quantization",
    "metrics": "edge_lung.metrics",
    "run": "edge_lung.run",
}
"""ONNX metadata key for each field; values are JSON strings."""

OPTIONAL_META_KEYS = {"quality": "edge_lung.quality"}
"""Keys added after format 1 shipped: a model without them gets the defaults (`QualityConfig()`)."""


class ArtifactError(ValueError):
    """A model directory or file that cannot be used, with the path and the reason."""


def build_metadata(
    labels: list[str] | tuple[str, ...],
    features: FeatureConfig,
    quantization: str,
    metrics: dict[str, Any],
    run: dict[str, Any],
    quality: QualityConfig | None = None,
) -> dict[str, str]:
    """The metadata_props dict (string -> JSON string) that export writes into the ONNX file."""
    values: dict[str, Any] = {
        "format": ARTIFACT_FORMAT,
        "labels": list(labels),
        "features": features.to_dict(),
        "quantization": quantization,
        "metrics": metrics,
        "run": run,
        "quality": (quality or QualityConfig()).to_dict(),
    }
    keys = {**META_KEYS, **OPTIONAL_META_KEYS}
    return {keys[k]: json.dumps(v, sort_keys=True) for k, v in values.items()}


@dataclass(frozen=True)
class ModelInfo:
    """What the device needs, parsed from the ONNX metadata."""

    path: Path
    labels: tuple[str, ...]
    features: FeatureConfig
    quantization: str
    metrics: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    quality: QualityConfig = field(default_factory=QualityConfig)  # the signal-quality gate's thresholds
    calibration: Calibration | None = None  # a calibrated directory's mapping, applied before the model

    @property
    def abnormal_indices(self) -> list[int]:
        return [i for i, name in enumerate(self.labels) if name != "normal"]


def parse_metadata(meta: dict[str, str], path: Path) -> dict[str, Any]:
    """Decode our metadata_props; `ArtifactError` if any key is missing or not JSON."""
    missing = [k for k in META_KEYS.values() if k not in meta]
    if missing:
        raise ArtifactError(
            f"{path}: not an edge-lung model: ONNX metadata lacks {missing} "
            "(export it with `edge-lung export`)"
        )
    out = {}
    for name, key in {**META_KEYS, **OPTIONAL_META_KEYS}.items():
        if key not in meta:
            continue
        try:
            out[name] = json.loads(meta[key])
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{path}: metadata {key!r} is not valid JSON ({exc})") from exc
    if out["format"] != ARTIFACT_FORMAT:
        raise ArtifactError(f"{path}: artifact format {out['format']}, this edge-lung reads {ARTIFACT_FORMAT}")
    return out


def resolve_model_path(model: str | Path) -> tuple[Path, dict[str, Any]]:
    """MODEL_DIR or .onnx path -> (onnx file, manifest or {}), checking the manifest's SHA-256."""
    model = Path(model)
    if model.is_dir():
        manifest_path = model / MANIFEST_NAME
        if not manifest_path.is_file():
            raise ArtifactError(f"{model}: no {MANIFEST_NAME}; expected a directory written by `edge-lung export`")
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{manifest_path}: not valid JSON ({exc})") from exc
        onnx_path = model / manifest.get("model_file", "")
        if not onnx_path.is_file():
            raise ArtifactError(f"{model}: manifest names model file {manifest.get('model_file')!r}, not found")
        check_sha256(onnx_path, manifest.get("sha256"))
        return onnx_path, manifest
    if model.is_file():
        return model, {}
    raise ArtifactError(f"{model}: no such model directory or .onnx file")


def usable_cores() -> int:
    """CPUs this process may run on (respects `taskset`), or the machine's count where unknown."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_threads(threads: int | None, option: str = "--threads") -> None:
    """0/None (onnxruntime decides) or 1..usable cores: more threads than cores only adds contention
    (10000 threads loaded a 4-core board to 105 and took 44 s to stop, issue 10)."""
    if threads is None or threads == 0:
        return
    cores = usable_cores()
    if threads < 0 or threads > cores:
        raise ValueError(
            f"{option}: expected at most {cores} (the cores this process may use), or 0 to let onnxruntime "
            f"decide, got {threads}; more threads than cores only adds contention"
        )


SMALL_MODEL_BYTES = 32 * 2**20
"""Model files up to this size run without onnxruntime's memory arena and memory pattern (`session_options`)."""


def session_options(threads: int | None = None, model_bytes: int | None = None):
    """onnxruntime SessionOptions for CPU inference with `threads` intra-op threads.

    A model of at most `SMALL_MODEL_BYTES` (the CNN students) runs without the CPU memory arena and the
    memory pattern: both keep blocks sized for the largest activations resident between windows, which
    for the INT8 mobilenet cost more than its weights (benchmarks/results/bench-memory/README.md), and
    small tensors gain nothing from them. Large models (the ASTs) keep both.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Prepacked weight copies cost the base INT8 model ~58 MB of peak memory at 2+ threads
    # (323 vs 267 MB) with no latency difference measurable on x86-64 (benchmarks/README.md);
    # re-check on each new board with `edge-lung bench`.
    opts.add_session_config_entry("session.disable_prepacking", "1")
    if model_bytes is not None and model_bytes <= SMALL_MODEL_BYTES:
        opts.enable_cpu_mem_arena = False
        opts.enable_mem_pattern = False
    return opts


def open_session(path: str | Path, threads: int | None = None):
    """The one place an onnxruntime InferenceSession is built: CPU, `session_options(threads, file size)`.

    `ValueError` for more threads than usable cores; `ArtifactError` naming the file when onnxruntime
    cannot load it.
    """
    import onnxruntime as ort

    check_threads(threads)  # before onnxruntime starts them
    try:
        return ort.InferenceSession(
            str(path), sess_options=session_options(threads, Path(path).stat().st_size),
            providers=["CPUExecutionProvider"],
        )
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ArtifactError(f"{path}: onnxruntime cannot load it ({type(exc).__name__}: {exc})") from exc


def model_info(path: Path, meta: dict[str, Any], manifest: dict[str, Any]) -> ModelInfo:
    """`ModelInfo` from decoded metadata, refusing a manifest that disagrees with it or features this
    edge-lung does not compute (either would run the model on input it was not trained for)."""
    for name in (*META_KEYS, *OPTIONAL_META_KEYS):
        if name in manifest and name in meta and manifest[name] != meta[name]:
            raise ArtifactError(
                f"{path.parent / MANIFEST_NAME}: {name!r} {manifest[name]!r} disagrees with the ONNX metadata of "
                f"{path.name} ({meta[name]!r}); the directory was edited or mixed up: re-export it"
            )
    try:
        features = FeatureConfig.from_dict(meta["features"])
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"{path}: metadata {META_KEYS['features']!r} is not a valid FeatureConfig ({exc})") from exc
    if features.feature_version != FEATURE_VERSION:
        raise ArtifactError(
            f"{path}: the model expects feature_version {features.feature_version!r}, this edge-lung computes "
            f"{FEATURE_VERSION!r}; use the edge-lung release that exported it, or re-export the model"
        )
    return ModelInfo(
        path=path,
        labels=tuple(meta["labels"]),
        features=features,
        quantization=str(meta["quantization"]),
        metrics=meta["metrics"],
        run=meta["run"],
        manifest=manifest,
        quality=quality_from_meta(meta.get("quality"), path),
        calibration=load_calibration(path.parent, manifest, features.num_mel_bins) if manifest else None,
    )


def listed_file(model_dir: Path, manifest: dict[str, Any], key: str, hint: str) -> tuple[Path, dict[str, Any]]:
    """(path, entry) of the file `manifest` lists under `key`, its SHA-256 checked; `ArtifactError` ending with
    `hint` when the manifest lists none."""
    entry = manifest.get(key)
    if not isinstance(entry, dict) or "file" not in entry:
        raise ArtifactError(f"{model_dir / MANIFEST_NAME}: lists no {key!r} file; {hint}")
    path = model_dir / entry["file"]
    if not path.is_file():
        raise ArtifactError(f"{model_dir}: manifest names {key} file {entry['file']!r}, not found")
    check_sha256(path, entry.get("sha256"))
    return path, entry


def check_sha256(path: Path, expected: Any) -> None:
    """`ArtifactError` unless `path`'s SHA-256 is the manifest's `expected`."""
    actual = sha256_file(path)
    if actual != expected:
        raise ArtifactError(
            f"{path}: SHA-256 {actual[:16]}... does not match the manifest's {str(expected)[:16]}...; "
            "the file is corrupt, truncated or replaced"
        )


def _listed_json(model_dir: Path, manifest: dict[str, Any], key: str, hint: str) -> dict[str, Any]:
    path, _ = listed_file(model_dir, manifest, key, hint)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from exc


def load_calibration(model_dir: Path, manifest: dict[str, Any], num_mel_bins: int) -> Calibration | None:
    """The calibration a directory's manifest lists (hash checked), or None for an uncalibrated one."""
    if "calibration" not in manifest:
        return None
    data = _listed_json(model_dir, manifest, "calibration", "")
    try:
        cal = Calibration.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{model_dir / CALIBRATION_NAME}: not a valid calibration ({exc!r})") from exc
    if cal.num_bins != num_mel_bins:
        raise ArtifactError(f"{model_dir / CALIBRATION_NAME}: {cal.num_bins} mel bins, the model's features have "
                            f"{num_mel_bins}; calibrate the model again")
    return cal


def reference_stats(model_dir: Path, manifest: dict[str, Any]) -> FeatureStats:
    """The training split's feature statistics the directory carries; `ArtifactError` saying how to get them."""
    data = _listed_json(model_dir, manifest, "feature_stats",
                        "the model was exported before export wrote the training split's feature statistics: "
                        "export it again (`edge-lung export RUN_DIR --out DIR`), or pass --reference DB_DIR to "
                        "compute them from the training database")
    try:
        return FeatureStats.from_dict(data["train"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{model_dir / STATS_NAME}: not valid feature statistics ({exc!r})") from exc


def is_model_dir(path: str | Path) -> bool:
    """True for a directory written by `edge-lung export`: its manifest.json is ours (format, model file,
    SHA-256), not merely a file of that common name."""
    try:
        manifest = json.loads((Path(path) / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and {"format", "model_file", "sha256"} <= manifest.keys()


def owned_by_export(entry: Path) -> bool:
    """True for a file `edge-lung export` or `calibrate` writes in a MODEL_DIR (ONNX files and their external
    data, the manifest, card, parity, statistics, calibration, test vectors)."""
    return entry.is_file() and (entry.name in _MODEL_DIR_FILES or entry.name.endswith((".onnx", ".onnx.data")))


_MODEL_DIR_FILES = frozenset({MANIFEST_NAME, PARITY_NAME, CARD_NAME, STATS_NAME, CALIBRATION_NAME, "test_vectors.npz"})

MODEL_DIR_KIND = OutputKind("an edge-lung model directory (manifest.json written by `edge-lung export`)", True,
                            is_model_dir, owned_by_export)
"""The writing policy's kind for MODEL_DIR (`edge_lung.fileio.check_output`)."""


def check_out_dir(out: Path, overwrite: bool, option: str = "--out", inputs: Iterable[Path | None] = ()) -> None:
    """Where a new MODEL_DIR may go (`fileio.check_output` with `MODEL_DIR_KIND`): nowhere yet, an empty
    directory, or with `overwrite` an edge-lung model directory holding nothing export did not write; never
    another folder, nor a user's file inside one, which `overwrite` would delete."""
    try:
        check_output(out, option, MODEL_DIR_KIND, overwrite, inputs)
    except OutputRefused as exc:
        raise ArtifactError(str(exc)) from exc
    if not out.parent.is_dir():
        raise ArtifactError(f"{option} {out}: parent directory {out.parent} does not exist")


def check_graph(info: ModelInfo, session) -> None:
    """The graph's input [batch, frames, mel bins] and output [batch, classes] agree with the metadata
    wherever the graph fixes a size (a mismatch would fail, or silently misread, at the first window)."""
    cfg = info.features
    expected_in = ("batch", cfg.num_frames, cfg.num_mel_bins)
    expected_out = ("batch", len(info.labels))
    for port, expected, what in (
        (session.get_inputs()[0], expected_in, f"num_frames {cfg.num_frames}, num_mel_bins {cfg.num_mel_bins}"),
        (session.get_outputs()[0], expected_out, f"{len(info.labels)} labels"),
    ):
        shape = list(port.shape)
        pairs = zip(shape[1:], expected[1:], strict=False)
        if len(shape) != len(expected) or any(isinstance(d, int) and d != e for d, e in pairs):
            dims = ", ".join("batch" if i == 0 else str(d) for i, d in enumerate(shape))
            raise ArtifactError(
                f"{info.path}: metadata says {what} ([{', '.join(map(str, expected))}]) but the graph's "
                f"{port.name!r} is [{dims}]; the metadata does not describe this graph: re-export the model"
            )


class OnnxClassifier:
    """Stateless ONNX classifier: normalised features [B, T, M] -> logits [B, C].

    Shared by `classify`, `stream`, `evaluate` on exported models and `bench`. All settings
    come from the model's own metadata (`self.info`). In a directory written by `edge-lung calibrate`
    every input goes through the stethoscope's calibration first (`model_input`).
    """

    def __init__(self, model: str | Path, threads: int | None = None) -> None:
        path, manifest = resolve_model_path(model)
        self.session = open_session(path, threads)
        meta = parse_metadata(self.session.get_modelmeta().custom_metadata_map, path)
        self.info = model_info(path, meta, manifest)
        check_graph(self.info, self.session)
        self.threads = threads
        self._input = self.session.get_inputs()[0].name
        outputs = [o.name for o in self.session.get_outputs()]
        self._output = outputs[0]
        self.has_embedding = EMBEDDING_NAME in outputs

    def logits(self, features: np.ndarray) -> np.ndarray:
        """float32[B, T, M] (or [T, M]) -> float32[B, C]."""
        return self.session.run([self._output], {self._input: self._checked(features)})[0]

    def require_embedding(self) -> None:
        """`ArtifactError` unless the model has the embedding output (models exported before it lack it)."""
        if not self.has_embedding:
            raise ArtifactError(
                f"{self.info.path}: this model has no {EMBEDDING_NAME!r} output (exported before embedding maps "
                "existed); re-export it from its run with `edge-lung export RUN --out DIR` to draw embedding maps"
            )

    def embeddings(self, features: np.ndarray) -> np.ndarray:
        """float32[B, T, M] (or [T, M]) -> float32[B, D], the pooled embedding (second output)."""
        self.require_embedding()
        return self.session.run([EMBEDDING_NAME], {self._input: self._checked(features)})[0]

    def _checked(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, dtype=np.float32)
        if x.ndim == 2:
            x = x[None]
        cfg = self.info.features
        if x.shape[1:] != (cfg.num_frames, cfg.num_mel_bins):
            raise ValueError(
                f"{self.info.path.name}: expected features [B, {cfg.num_frames}, {cfg.num_mel_bins}], got {x.shape}"
            )
        return self.model_input(x)

    def model_input(self, features: np.ndarray) -> np.ndarray:
        """What the graph is fed for `features`: the features themselves, or in a calibrated directory the
        stethoscope's calibration applied to them (every runtime path comes through here)."""
        cal = self.info.calibration
        return features if cal is None else cal.apply(features)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        return softmax(self.logits(features))


def quality_from_meta(data: dict[str, Any] | None, path: Path) -> QualityConfig:
    """The gate's thresholds stored in a model; the defaults for a model exported before they were."""
    if data is None:
        return QualityConfig()
    try:
        return QualityConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        key = OPTIONAL_META_KEYS["quality"]
        raise ArtifactError(f"{path}: metadata {key!r} is not a valid quality-gate config ({exc})") from exc


def write_manifest(model_dir: str | Path, onnx_path: str | Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write `manifest.json` for the ONNX file in `model_dir` (SHA-256, size, metadata copy)."""
    model_dir, onnx_path = Path(model_dir), Path(onnx_path)
    sess = open_session(onnx_path)
    meta = parse_metadata(sess.get_modelmeta().custom_metadata_map, onnx_path)
    features = FeatureConfig.from_dict(meta["features"])
    manifest = {
        "format": ARTIFACT_FORMAT,
        "model_file": onnx_path.name,
        "sha256": sha256_file(onnx_path),
        "size_bytes": onnx_path.stat().st_size,
        "input": {"name": INPUT_NAME, "shape": ["batch", features.num_frames, features.num_mel_bins]},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", len(meta["labels"])]},
        **meta,
        **(extra or {}),
    }
    embedding = [o for o in sess.get_outputs() if o.name == EMBEDDING_NAME]
    if embedding:
        manifest["embedding"] = {"name": EMBEDDING_NAME, "shape": ["batch", embedding[0].shape[-1]]}
    atomic_write_json(model_dir / MANIFEST_NAME, manifest)
    return manifest
