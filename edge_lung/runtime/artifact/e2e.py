"""The end-to-end graph (raw audio in, probabilities out) and the test vectors, on the device side.

`model.e2e.onnx` holds the Kaldi fbank front end as ONNX ops in front of the classifier
(edge_lung/export/frontend.py builds it): input `audio` float32[batch, window_samples] at the
model's sample rate, outputs `probabilities`, `logits` and the `features` the classifier saw.
`test_vectors.npz` holds a few real windows with what both graphs gave at export. Both files are
listed in manifest.json with their SHA-256. `verify_model_dir` re-runs the vectors on this machine:
what `edge-lung verify MODEL_DIR` does after a model is copied onto a device. onnxruntime only.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from edge_lung.features import window_features
from edge_lung.runtime.artifact.model_dir import (
    CALIBRATION_NAME,
    MANIFEST_NAME,
    ArtifactError,
    ModelInfo,
    OnnxClassifier,
    check_threads,
    listed_file,
    model_info,
    parse_metadata,
    resolve_model_path,
    session_options,
)

E2E_NAME = "model.e2e.onnx"
VECTORS_NAME = "test_vectors.npz"
AUDIO_NAME = "audio"
PROBS_NAME = "probabilities"
GRAPHS = ("model", "e2e")
"""`--graph` choices: the numpy front end + the classifier graph, or the end-to-end graph."""


def open_e2e_session(path: str | Path, threads: int | None = None):
    """`model_dir.open_session` for an end-to-end graph, with onnxruntime's memory arena whatever the file's
    size: the front end's float64 intermediates (~26 MB per 8 s window) would otherwise be allocated and
    faulted in on every window (demo-size INT8 model, one thread: 64 vs 38 ms per window; the numpy front
    end + model 41 ms; issue 30)."""
    import onnxruntime as ort

    check_threads(threads)
    try:
        return ort.InferenceSession(str(path), sess_options=session_options(threads),
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ArtifactError(f"{path}: onnxruntime cannot load it ({type(exc).__name__}: {exc})") from exc


def _manifest_entry(model_dir: Path, key: str) -> tuple[Path, dict[str, Any]]:
    """(path, entry) of the file the manifest lists under `key`, its SHA-256 checked."""
    _, manifest = resolve_model_path(model_dir)
    if isinstance(manifest.get(key), dict) and "skipped" in manifest[key]:
        raise ArtifactError(f"{model_dir}: has no {key} file: {manifest[key]['skipped']}")
    return listed_file(model_dir, manifest, key, "export the model again with this edge-lung (`edge-lung export`) "
                       "to get model.e2e.onnx and test_vectors.npz")


def refuse_calibrated(info: ModelInfo, model_dir: Path) -> None:
    """`ArtifactError` for a calibrated directory: model.e2e.onnx and test_vectors.npz are the uncalibrated
    model's (the calibration is applied in numpy, in front of the model file), so they would silently give
    uncalibrated results."""
    if info.calibration is not None:
        source = info.manifest.get("calibration", {}).get("source_model_dir", "the directory it was calibrated from")
        raise ArtifactError(
            f"{model_dir}: calibrated for a stethoscope ({CALIBRATION_NAME}), and {E2E_NAME} / {VECTORS_NAME} do not "
            f"contain the calibration: use --graph model (the default), which applies it; `edge-lung verify` "
            f"checks the uncalibrated model, so run it on {source}"
        )


class E2EClassifier:
    """Stateless end-to-end classifier: one window of audio float32[B, S] (or [S]) -> probabilities [B, C].

    The same `.info` as `OnnxClassifier`, read from the graph's own metadata; `takes_audio` tells
    `StreamingClassifier` to hand it the window's samples instead of features.
    """

    takes_audio = True

    def __init__(self, model: str | Path, threads: int | None = None) -> None:
        model = Path(model)
        path, manifest = (_manifest_entry(model, "e2e")[0], resolve_model_path(model)[1]) if model.is_dir() \
            else (model, {})
        self.session = open_e2e_session(path, threads)
        meta = parse_metadata(self.session.get_modelmeta().custom_metadata_map, path)
        self.info = model_info(path, meta, manifest)  # refuses metadata that disagrees with the manifest
        refuse_calibrated(self.info, model)
        self.threads = threads
        if [i.name for i in self.session.get_inputs()] != [AUDIO_NAME]:
            raise ArtifactError(f"{path}: expected one input {AUDIO_NAME!r}; not an edge-lung end-to-end graph")

    def run(self, audio: np.ndarray, outputs: tuple[str, ...] = (PROBS_NAME,)) -> list[np.ndarray]:
        """float32[B, window_samples] (or [window_samples]) -> the named outputs."""
        x = np.asarray(audio, dtype=np.float32)
        x = x[None] if x.ndim == 1 else x
        n = self.info.features.window_samples
        if x.ndim != 2 or x.shape[1] != n:
            raise ValueError(
                f"{self.info.path.name}: expected audio [B, {n}] ({self.info.features.window_s} s at "
                f"{self.info.features.sample_rate} Hz, cyclic-padded), got {x.shape}"
            )
        return self.session.run(list(outputs), {AUDIO_NAME: x})

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        return self.run(audio)[0]


def load_model(model: str | Path, graph: str = "model", threads: int | None = None) -> Any:
    """`OnnxClassifier` (graph 'model': numpy front end + classifier) or `E2EClassifier` (graph 'e2e')."""
    if graph not in GRAPHS:
        raise ValueError(f"--graph: expected one of {GRAPHS}, got {graph!r}")
    return E2EClassifier(model, threads) if graph == "e2e" else OnnxClassifier(model, threads)


def read_vectors(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of test_vectors.npz (no pickles); `ArtifactError` naming the file when it is not such an archive
    (numpy's own message advised loading pickled data unsafely and named no file, issue 26)."""
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError(f"a single {type(data).__name__}, not an archive")
        with data:
            return {k: data[k] for k in data.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        why = "holds pickled objects" if "pickle" in str(exc) else f"{type(exc).__name__}"
        raise ArtifactError(f"{path}: not a test-vector archive (expected the .npz of numeric arrays `edge-lung "
                            f"export` writes; {why}): the model directory is damaged, export it again") from None


def _check(name: str, got: np.ndarray, want: np.ndarray, limit: float) -> dict[str, Any]:
    diff = float(np.abs(np.asarray(got, np.float64) - want).max()) if got.shape == want.shape else float("inf")
    return {"check": name, "max_abs_diff": diff, "limit": limit, "passed": diff <= limit}


def verify_model_dir(model_dir: str | Path, threads: int | None = None) -> dict[str, Any]:
    """Re-run test_vectors.npz through the numpy front end and both graphs on this machine (the model graph
    alone for a front end with no end-to-end graph, the descriptors: that check is listed as skipped, with why).

    Checks: every file's SHA-256 against the manifest, both graphs' metadata against the manifest,
    and each stored output within the manifest's tolerance. Returns {"passed", "checks", ...};
    raises `ArtifactError` when a file is missing, altered or not ours.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ArtifactError(f"{model_dir}: expected a model directory written by `edge-lung export`")
    clf = OnnxClassifier(model_dir, threads)
    refuse_calibrated(clf.info, model_dir)
    vec_path, entry = _manifest_entry(model_dir, "test_vectors")
    v = read_vectors(vec_path)
    tol = entry["tolerance"]
    cfg = clf.info.features
    checks = [
        _metadata_check(model_dir, clf.info),
        _check("numpy front end vs stored features", np.stack([window_features(a, cfg) for a in v["audio"]]),
               v["features"], tol["features"]),
        _check("model graph vs stored logits", clf.logits(v["features"]), v["logits"], tol["logits"]),
    ]
    e2e_entry = clf.info.manifest.get("e2e", {})
    if isinstance(e2e_entry, dict) and "skipped" in e2e_entry:  # a front end with no ONNX form (the descriptors)
        checks.append({"check": "e2e graph", "skipped": e2e_entry["skipped"], "passed": True})
    else:
        checks += _e2e_checks(model_dir, threads, v, tol)
    return {"model_dir": str(model_dir), "windows": int(v["audio"].shape[0]), "quantization": clf.info.quantization,
            "checks": checks, "passed": all(c["passed"] for c in checks)}


def _e2e_checks(model_dir: Path, threads: int | None, v: dict[str, np.ndarray], tol: dict[str, float]) -> list:
    """model.e2e.onnx against the stored vectors: its metadata, features, logits and probabilities."""
    e2e = E2EClassifier(model_dir, threads)
    e_probs, e_logits, e_feats = e2e.run(v["audio"], (PROBS_NAME, "logits", "features"))
    return [
        _metadata_check(model_dir, e2e.info),
        _check("e2e graph features vs stored features", e_feats, v["features"], tol["features"]),
        _check("e2e graph vs stored e2e logits", e_logits, v["e2e_logits"], tol["logits"]),
        _check("e2e graph vs model graph probabilities", e_probs, v["probabilities"], tol["probabilities"]),
    ]


def _metadata_check(model_dir: Path, info: ModelInfo) -> dict[str, Any]:
    manifest = json.loads((model_dir / MANIFEST_NAME).read_text())
    same = (list(info.labels) == manifest.get("labels") and info.features.to_dict() == manifest.get("features")
            and info.quantization == manifest.get("quantization"))
    return {"check": f"{info.path.name} metadata vs manifest", "passed": bool(same)}


def verify_lines(report: dict[str, Any]) -> list[str]:
    """`edge-lung verify`'s printout: one line per check, then the verdict."""
    lines = [f"{report['model_dir']}: {report['windows']} test windows, {report['quantization']}"]
    for c in report["checks"]:
        if "skipped" in c:
            lines.append(f"  skip {c['check']}: {c['skipped']}")
            continue
        figure = f"  max |diff| {c['max_abs_diff']:.2e} (limit {c['limit']:.0e})" if "limit" in c else ""
        lines.append(f"  {'ok  ' if c['passed'] else 'FAIL'} {c['check']}{figure}")
    lines.append("all checks passed" if report["passed"] else "verification FAILED")
    return lines
