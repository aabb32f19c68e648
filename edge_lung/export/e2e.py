"""model.e2e.onnx and test_vectors.npz in an exported model directory (issue 16).

`write_end_to_end` joins the ONNX front end (edge_lung/export/frontend.py) to the classifier file;
`e2e_parity` measures the joined graph against the numpy front end and a reference's logits
(PyTorch for FP32) and raises `ParityError` on a miss; `write_test_vectors` stores a few real
windows with what both graphs give, for `edge-lung verify` and for ports to other runtimes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_lung.config import FeatureConfig
from edge_lung.export.frontend import end_to_end_model
from edge_lung.export.parity import ParityError, pick_balanced
from edge_lung.features import window_features
from edge_lung.fileio import atomic_path, sha256_file
from edge_lung.runtime.artifact.e2e import (
    AUDIO_NAME,
    E2E_NAME,
    PROBS_NAME,
    VECTORS_NAME,
    E2EClassifier,
    open_e2e_session,
)
from edge_lung.runtime.artifact.model_dir import OnnxClassifier
from edge_lung.scoring import softmax

FEATURES_LIMIT = 1e-4
"""Max abs difference between graph and numpy features, after normalisation; above it export fails."""
VECTOR_WINDOWS = 4
INT8_LIMITS = {"logits": 5e-2, "probabilities": 1e-2}
"""verify's limits for INT8 models. Dynamic activation quantisation turns the 1.2e-7 feature difference
between the two graphs into up to one quantisation step: the INT8 e2e graph measured 0.013 / 0.0094
max logit and 0.0026 / 0.0024 max probability difference from the INT8 classifier graph (demo model,
13 windows; 4 s / 64-bin model on the real subset, 116 windows; parity.json `e2e_int8`); with
`mel_norm="window"` (features within 2.6e-6) a 1-epoch icbhi-robust run measured 0.016 (synthetic, 13 windows).
The limits are about 3-4x those, room for another CPU's INT8 kernels, and far below a decision flip on a
clear window."""


class E2EParityError(ParityError):
    """The end-to-end graph does not reproduce the numpy front end + classifier within the limits."""


def write_end_to_end(classifier_path: str | Path, out_path: str | Path, cfg: FeatureConfig) -> Path:
    """Write model.e2e.onnx (audio -> probabilities, logits, features) for the classifier at `classifier_path`;
    its metadata is the classifier's."""
    import onnx

    model = end_to_end_model(onnx.load(str(classifier_path)), cfg)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        onnx.save(model, str(tmp))
    return out_path


def run_e2e(path: str | Path, audio: np.ndarray, threads: int | None = None, batch: int = 8) -> tuple:
    """(probabilities, logits, features) of the end-to-end graph at `path` on float32[N, S], in batches."""
    sess = open_e2e_session(path, threads)
    outs = [sess.run([PROBS_NAME, "logits", "features"], {AUDIO_NAME: audio[i : i + batch]})
            for i in range(0, len(audio), batch)]
    return tuple(np.concatenate([o[k] for o in outs]) for k in range(3))


def e2e_parity(path: Path, audio: np.ndarray, features: np.ndarray, ref_logits: np.ndarray,
               logits_limit: float | None, reference: str, threads: int | None = None) -> dict[str, Any]:
    """The e2e graph vs `window_features` (features) and `reference`'s logits on the same windows.

    With a `logits_limit`, raises `E2EParityError` when features differ by more than `FEATURES_LIMIT` or
    logits by `logits_limit` or more; without one (INT8) the figures are recorded only.
    """
    probs, logits, feats = run_e2e(path, audio, threads, batch=1)
    rec = {
        "graph": path.name,
        "num_windows": int(len(audio)),
        "reference": reference,
        "features_max_abs_diff": float(np.abs(feats - features).max()),
        "features_limit": FEATURES_LIMIT,
        "logits_max_abs_diff": float(np.abs(logits - ref_logits).max()),
        "probabilities_max_abs_diff": float(np.abs(probs - softmax(ref_logits)).max()),
        "argmax_agreement": float(100.0 * np.mean(probs.argmax(1) == ref_logits.argmax(1))),
    }
    if logits_limit is None:
        return rec
    rec["logits_limit"] = logits_limit
    rec["passed"] = rec["features_max_abs_diff"] <= FEATURES_LIMIT and rec["logits_max_abs_diff"] < logits_limit
    if not rec["passed"]:
        raise E2EParityError(
            f"{path.name}: the end-to-end graph misses parity (features {rec['features_max_abs_diff']:.2e}, limit "
            f"{FEATURES_LIMIT:.0e}; logits vs {reference} {rec['logits_max_abs_diff']:.2e}, limit {logits_limit:.0e}); "
            "nothing was written"
        )
    return rec


def write_test_vectors(model_dir: Path, classifier: Any, audio: np.ndarray, features: np.ndarray,
                       sources: list[str], int8: bool) -> dict[str, Any]:
    """Write test_vectors.npz (audio, features, and both graphs' logits and probabilities) into `model_dir`;
    returns its manifest entry (file, SHA-256, tolerances verify applies)."""
    e2e = E2EClassifier(model_dir / E2E_NAME)
    logits = classifier.logits(features)
    e_probs, e_logits, e_feats = e2e.run(audio, (PROBS_NAME, "logits", "features"))
    arrays = {"audio": audio, "features": features, "logits": logits, "probabilities": softmax(logits),
              "e2e_features": e_feats, "e2e_logits": e_logits, "e2e_probabilities": e_probs,
              "source": np.array(sources)}
    path = model_dir / VECTORS_NAME
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    return {
        "file": VECTORS_NAME, "sha256": sha256_file(path), "size_bytes": path.stat().st_size,
        "windows": int(len(audio)), "sources": list(sources),
        "arrays": {k: list(v.shape) for k, v in arrays.items()},
        "tolerance": {"features": FEATURES_LIMIT, **(INT8_LIMITS if int8 else {"logits": 1e-4, "probabilities": 1e-4})},
    }


def write_model_vectors(model_dir: Path, shipped: Path, cfg: FeatureConfig, audio: np.ndarray, labels: np.ndarray,
                        names: list[str], int8: bool, threads: int | None, seed: int) -> dict[str, Any]:
    """test_vectors.npz for a front end with no end-to-end graph (the descriptors): a few windows' audio, the numpy
    front end's features of them and the shipped model's logits, so `edge-lung verify` still checks both on the
    device. Returns its manifest entry."""
    picks = pick_balanced(labels, VECTOR_WINDOWS, seed)
    audio = audio[picks]
    features = np.stack([window_features(a, cfg) for a in audio])
    logits = OnnxClassifier(shipped, threads).logits(features)
    arrays = {"audio": audio, "features": features, "logits": logits, "probabilities": softmax(logits),
              "source": np.array([names[i] for i in picks])}
    path = model_dir / VECTORS_NAME
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    return {
        "file": VECTORS_NAME, "sha256": sha256_file(path), "size_bytes": path.stat().st_size,
        "windows": int(len(audio)), "sources": [names[i] for i in picks],
        "arrays": {k: list(v.shape) for k, v in arrays.items()},
        "tolerance": {"features": FEATURES_LIMIT, **(INT8_LIMITS if int8 else {"logits": 1e-4, "probabilities": 1e-4})},
    }


def e2e_manifest_entry(path: Path, cfg: FeatureConfig, num_classes: int) -> dict[str, Any]:
    """The manifest's `e2e` entry: file, SHA-256, size, input and outputs."""
    return {
        "file": path.name, "sha256": sha256_file(path), "size_bytes": path.stat().st_size,
        "input": {"name": AUDIO_NAME, "dtype": "float32", "shape": ["batch", cfg.window_samples],
                  "sample_rate": cfg.sample_rate},
        "outputs": [{"name": PROBS_NAME, "shape": ["batch", num_classes]},
                    {"name": "logits", "shape": ["batch", num_classes]},
                    {"name": "features", "shape": ["batch", cfg.num_frames, cfg.num_mel_bins]}],
    }


def cycle_windows(cycles: list, cfg: FeatureConfig) -> tuple[np.ndarray, list[str]]:
    """(float32[N, window_samples] cyclic-padded windows, names 'recording#index') of ICBHI cycles."""
    from edge_lung.audio import cyclic_pad

    audio = np.stack([cyclic_pad(c.audio, cfg.window_samples) for c in cycles]) if cycles else \
        np.zeros((0, cfg.window_samples), np.float32)
    return audio, [f"{c.recording}#{c.index}" for c in cycles]


def e2e_unsupported(cfg: FeatureConfig) -> str | None:
    """Why `cfg`'s front end has no end-to-end graph (None when it has one)."""
    if cfg.front_end == "fbank":
        return None
    return (f"not built: the {cfg.front_end!r} front end (FFT band filters, medians, run lengths; "
            "edge_lung/respiratory.py) has no ONNX form in edge-lung; the device computes it in numpy (--graph model)")


def check_fp32_end_to_end(fp32_path: Path, e2e_path: Path, audio: np.ndarray, features: np.ndarray,
                          fp32_logits: np.ndarray, cfg: FeatureConfig, limit: float, threads: int | None,
                          log) -> dict[str, Any]:
    """Build the FP32 end-to-end graph at `e2e_path` and measure it on the parity windows against the
    numpy front end and model.onnx's logits on the same windows; `E2EParityError` on a miss."""
    write_end_to_end(fp32_path, e2e_path, cfg)
    rec = e2e_parity(e2e_path, audio, features, fp32_logits, limit, "model.onnx (FP32) on window_features", threads)
    log(f"e2e graph vs numpy front end + FP32 model: features max |diff| {rec['features_max_abs_diff']:.2e}, "
        f"logits {rec['logits_max_abs_diff']:.2e}, probabilities {rec['probabilities_max_abs_diff']:.2e}")
    return rec


def finish_end_to_end(model_dir: Path, shipped: Path, cfg: FeatureConfig, parity: tuple, int8: bool,
                      threads: int | None, seed: int, log) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """After the shipped classifier has its metadata: (re)build model.e2e.onnx from it, measure the INT8
    one against the INT8 classifier (recorded, not fatal), write test_vectors.npz.

    `parity` is (audio[N, S], features[N, T, M], labels[N], names). Returns (manifest entries, INT8 record).
    """
    audio, features, labels, names = parity
    e2e_path = write_end_to_end(shipped, model_dir / E2E_NAME, cfg)
    classifier = OnnxClassifier(shipped, threads)
    int8_rec = None
    if int8:
        ref = np.concatenate([classifier.logits(features[i : i + 1]) for i in range(len(features))])
        int8_rec = e2e_parity(e2e_path, audio, features, ref, None, f"{shipped.name} on window_features", threads)
        log(f"INT8 e2e graph vs INT8 model graph: features max |diff| {int8_rec['features_max_abs_diff']:.2e}, "
            f"logits {int8_rec['logits_max_abs_diff']:.2e}, argmax agreement {int8_rec['argmax_agreement']:.2f}%")
    picks = pick_balanced(labels, VECTOR_WINDOWS, seed)
    vectors = write_test_vectors(model_dir, classifier, audio[picks], features[picks], [names[i] for i in picks], int8)
    return {"e2e": e2e_manifest_entry(e2e_path, cfg, len(classifier.info.labels)), "test_vectors": vectors}, int8_rec
