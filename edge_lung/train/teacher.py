"""Teachers for distillation and their soft targets, cached on disk.

A teacher is a training run (`edge-lung train`, loaded with torch through `load_run`) or an exported
MODEL_DIR (`edge-lung export`, run with onnxruntime through `runtime.model_dir.OnnxClassifier`, so an
INT8 model made on a GPU box can teach on a CPU box). It always sees the audio through its own
`FeatureConfig`: the student may use other features (64 mel bins, another window), and the teacher's
logits are computed from the same audio, resampled to the teacher's rate if the two differ.

Soft targets are cached per teacher in one SQLite file, `<cache>/soft-targets/<teacher key>.sqlite`.
The teacher key hashes the teacher's weights (every file of a run's `model/` folder, or the ONNX file
of a model directory, SHA-256), its feature settings and labels, so a retrained or re-exported
teacher never reuses another's targets. Within the file an entry is keyed by the SHA-256 of the
audio the teacher hears (its samples and rate): that is the window's identity and, when the
training augments waveforms, the augmentation draw, so each draw is computed once and a rerun with
the same seed and settings reuses it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_lung.audio import resample
from edge_lung.config import FeatureConfig
from edge_lung.features import cycle_features
from edge_lung.fileio import RUN_CONFIG, sha256_file
from edge_lung.runtime.artifact.model_dir import ArtifactError, OnnxClassifier, is_model_dir
from edge_lung.train.model import MODEL_DIR, RunError, load_run

CACHE_SUBDIR = "soft-targets"
_SQL_CHUNK = 500  # keys per SELECT ... IN (...): below SQLite's bound-variable limit


class TeacherError(ValueError):
    """A teacher that cannot be used, with the path and what was expected."""


@dataclass
class Teacher:
    """A loaded teacher: its features, labels, weight hash and a logits function on its own features."""

    path: Path
    kind: str  # "run" (torch) or "model_dir" (onnxruntime)
    features: FeatureConfig
    labels: tuple[str, ...]
    weights_sha256: str
    quantization: str
    logits_fn: Callable[[np.ndarray], np.ndarray]

    @property
    def key(self) -> str:
        """Names the cache file: changes with the weights, the feature settings or the labels."""
        identity = {"weights": self.weights_sha256, "features": self.features.to_dict(), "labels": list(self.labels)}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]

    def describe(self) -> dict[str, Any]:
        """What config.json records about the teacher."""
        return {"path": str(self.path.resolve()), "kind": self.kind, "sha256": self.weights_sha256,
                "key": self.key, "quantization": self.quantization, "features": self.features.to_dict()}

    def inputs(self, audio: np.ndarray, rate: int) -> np.ndarray:
        """The teacher's input float32[T, M] for unpadded audio at `rate`: its rate, its window, its fbank."""
        if rate != self.features.sample_rate:
            audio = resample(audio, rate, self.features.sample_rate)
        return cycle_features(audio, self.features)


def load_teacher(path: str | Path, device: str = "cpu", threads: int | None = None) -> Teacher:
    """A teacher from a run directory or an exported model directory; `TeacherError` naming the path otherwise."""
    path = Path(path)
    if not path.is_dir():
        raise TeacherError(f"--teacher {path}: no such directory; expected a run directory (from `edge-lung "
                           "train`) or an exported model directory (from `edge-lung export`)")
    if is_model_dir(path):
        return _model_dir_teacher(path, threads)
    if (path / RUN_CONFIG).is_file():
        return _run_teacher(path, device)
    raise TeacherError(f"--teacher {path}: neither a run directory (no {RUN_CONFIG} from `edge-lung train`) nor an "
                       "exported model directory (no manifest.json from `edge-lung export`)")


def _model_dir_teacher(path: Path, threads: int | None) -> Teacher:

    try:
        model = OnnxClassifier(path, threads)
    except ArtifactError as exc:
        raise TeacherError(f"--teacher {path}: {exc}") from exc
    info = model.info
    weights = info.manifest.get("sha256") or sha256_file(info.path)  # the manifest's is checked on load
    return Teacher(path, "model_dir", info.features, tuple(info.labels), weights, info.quantization, model.logits)


def _run_teacher(path: Path, device: str) -> Teacher:
    import torch
    from transformers.utils import logging as hf_logging


    hf_logging.disable_progress_bar()  # "Loading weights" bars would tear through the training display
    try:
        model, cfg = load_run(path, device=device)
    except RunError as exc:
        raise TeacherError(f"--teacher {path}: {exc}") from exc

    @torch.no_grad()
    def logits(x: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(x).to(device)).float().cpu().numpy()

    return Teacher(path, "run", FeatureConfig.from_dict(cfg["features"]), tuple(cfg["labels"]),
                   tree_sha256(path / MODEL_DIR), "fp32", logits)


def tree_sha256(root: Path) -> str:
    """SHA-256 over every file under `root` (relative names and contents, in sorted order)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0" + sha256_file(file).encode())
    return digest.hexdigest()


def audio_key(audio: np.ndarray, rate: int) -> str:
    """The identity of the audio a teacher hears: SHA-256 of its rate and float32 samples."""
    digest = hashlib.sha256(str(int(rate)).encode() + b"\0")
    digest.update(np.ascontiguousarray(audio, dtype=np.float32).tobytes())
    return digest.hexdigest()


class SoftTargetCache:
    """The teacher's logits per audio content, computed on a miss and kept in `<root>/soft-targets/<key>.sqlite`.

    `computed` and `reused` count the entries this object computed and found.
    """

    def __init__(self, root: str | Path, teacher: Teacher, batch_size: int = 16) -> None:
        self.teacher = teacher
        self.batch_size = int(batch_size)
        self.path = Path(root) / CACHE_SUBDIR / f"{teacher.key}.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60.0)
        self._db.execute("CREATE TABLE IF NOT EXISTS logits (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS teacher (what TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._db.execute("INSERT OR REPLACE INTO teacher VALUES ('describe', ?)", (json.dumps(teacher.describe()),))
        self._db.commit()
        self.computed = 0
        self.reused = 0

    def close(self) -> None:
        self._db.close()

    def logits(self, audios: Sequence[np.ndarray], rate: int) -> np.ndarray:
        """float32[N, C]: the teacher's logits for each unpadded audio at `rate` (cached or computed now)."""
        keys = [audio_key(a, rate) for a in audios]
        found = self._lookup(keys)
        self.reused += sum(k in found for k in keys)
        first = {k: i for i, k in reversed(list(enumerate(keys)))}  # a repeated window is computed once
        missing = sorted(i for k, i in first.items() if k not in found)
        for start in range(0, len(missing), self.batch_size):
            part = missing[start : start + self.batch_size]
            out = np.asarray(self.teacher.logits_fn(np.stack([self.teacher.inputs(audios[i], rate) for i in part])),
                             dtype=np.float32)
            rows = [(keys[i], out[j].tobytes()) for j, i in enumerate(part)]
            self._db.executemany("INSERT OR REPLACE INTO logits VALUES (?, ?)", rows)
            self._db.commit()
            found.update((keys[i], out[j]) for j, i in enumerate(part))
            self.computed += len(part)
        width = len(self.teacher.labels)
        return np.stack([found[k] for k in keys]) if keys else np.zeros((0, width), np.float32)

    def _lookup(self, keys: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _SQL_CHUNK):
            part = unique[start : start + _SQL_CHUNK]
            query = f"SELECT key, value FROM logits WHERE key IN ({','.join('?' * len(part))})"
            for key, value in self._db.execute(query, part):
                found[key] = np.frombuffer(value, dtype=np.float32).copy()
        return found
