"""`edge-lung calibrate MODEL_DIR --recordings DIR --out MODEL_DIR2`: a model directory for a new stethoscope.

A field team records a few minutes with its own stethoscope (no labels). `measure_recordings` cuts the
recordings into windows exactly as `classify` and `stream` do (`WindowStream` at the model's rate, any
input rate, the model's quality gate: only windows the model would decide on count) and accumulates the
per-bin mean and std of their model input (`features.window_features`). `calibrate_model_dir` pairs them
with the training split's statistics that export wrote into the model directory (`STATS_NAME`), and
writes a copy of the directory with `CALIBRATION_NAME` listed in its manifest (with its SHA-256 and where
the calibration came from); `OnnxClassifier` then maps every input onto the training statistics before
the model (edge_lung/feature_stats.py), in every runtime path. The original directory is not touched.

The e2e graph and test vectors stay the uncalibrated model's: `--graph e2e` and `edge-lung verify` refuse a
calibrated directory (`runtime.e2e.refuse_calibrated`). A model trained with `--mel-norm window` already
standardises each window per bin; calibration is then nearly the identity (the report shows how far the
mapping moves each bin).

numpy + onnxruntime + soundfile only (device code).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_lung.audio import AudioError, audio_info, read_blocks
from edge_lung.config import FeatureConfig
from edge_lung.feature_stats import STD_FLOOR, Calibration, FeatureStats, StatsAccumulator, cycles_feature_stats
from edge_lung.features import window_features
from edge_lung.fileio import atomic_write_json, atomic_write_text, replaced_dir, sha256_file, temp_dir_beside
from edge_lung.runtime.artifact.model_dir import (
    CALIBRATION_NAME,
    CARD_NAME,
    MANIFEST_NAME,
    STATS_NAME,
    ArtifactError,
    OnnxClassifier,
    check_out_dir,
    reference_stats,
)
from edge_lung.runtime.artifact.quality import QualityConfig
from edge_lung.runtime.live.stream import StreamConfig, Window, WindowStream, assess_window, check_seconds

MIN_AUDIO_S = 60.0
"""Default least usable audio (seconds covered by windows that pass the quality gate) a calibration needs."""
AUDIO_SUFFIXES = (".wav", ".flac")


class CalibrationError(ValueError):
    """Recordings, reference or output that a calibration cannot use, naming the folder or file and why."""


@dataclass
class FileMeasure:
    """What one recording gave: windows cut, windows used (passed the quality gate), usable audio, and why not."""

    path: Path
    input_rate: int = 0
    duration_s: float = 0.0
    windows: int = 0
    used: int = 0
    usable_s: float = 0.0
    verdicts: dict[str, int] = field(default_factory=dict)
    status: str = "used"  # "used" or "skipped"
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"file": str(self.path), "status": self.status, "input_rate": self.input_rate,
                "duration_s": round(self.duration_s, 3), "windows": self.windows, "used_windows": self.used,
                "usable_s": round(self.usable_s, 3), "verdicts": self.verdicts, "note": self.note}


@dataclass
class Measurement:
    """A device's feature statistics over a set of recordings, with every file's fate."""

    stats: FeatureStats | None
    files: list[FileMeasure]

    @property
    def usable_s(self) -> float:
        return sum(f.usable_s for f in self.files)

    @property
    def windows(self) -> int:
        return sum(f.used for f in self.files)

    @property
    def skipped(self) -> list[FileMeasure]:
        return [f for f in self.files if f.status == "skipped"]


class _FileMeter:
    """Feeds one file's windows through the quality gate into the shared accumulator."""

    def __init__(self, measure: FileMeasure, features: FeatureConfig, quality: QualityConfig,
                 acc: StatsAccumulator) -> None:
        self.m, self.features, self.quality, self.acc = measure, features, quality, acc
        self._covered = 0  # end (model-rate sample) of the audio already counted as usable

    def take(self, windows: Iterable[Window]) -> None:
        for w in windows:
            verdict = assess_window(w, self.quality).verdict
            self.m.windows += 1
            self.m.verdicts[verdict] = self.m.verdicts.get(verdict, 0) + 1
            if verdict != "ok":
                continue
            self.acc.add(window_features(w.audio, self.features))
            self.m.used += 1
            self.m.usable_s += max(0, w.end - max(w.start, self._covered)) / w.sample_rate
            self._covered = max(self._covered, w.end)


def measure_file(path: str | Path, features: FeatureConfig, quality: QualityConfig, acc: StatsAccumulator,
                 stream_cfg: StreamConfig | None = None, block_s: float = 1.0) -> FileMeasure:
    """Add one recording's gated windows to `acc`; a file that gives none is "skipped" with the reason."""
    m = FileMeasure(Path(path))
    try:
        info = audio_info(path)
    except AudioError as exc:
        m.status, m.note = "skipped", f"unreadable: {exc}"
        return m
    m.input_rate = info.sample_rate
    stream = WindowStream(features, stream_cfg or StreamConfig(), info.sample_rate, clip_level=quality.clip_level)
    meter = _FileMeter(m, features, quality, acc)
    try:
        for block in read_blocks(path, max(1, int(round(block_s * info.sample_rate)))):
            meter.take(stream.accept_waveform(block))
    except AudioError as exc:
        m.note = f"damaged: measured the part that decodes ({exc})"
    meter.take(stream.finish())
    m.duration_s = stream.input_samples / info.sample_rate
    if not m.used:
        m.status = "skipped"
        why = (f"no window passed the quality gate ({m.verdicts})" if m.windows
               else f"too short for a window ({m.duration_s:.2f} s)")
        m.note = "; ".join(filter(None, [m.note, why]))
    return m


def measure_recordings(paths: Iterable[str | Path], features: FeatureConfig, quality: QualityConfig | None = None,
                       stream_cfg: StreamConfig | None = None) -> Measurement:
    """The per-bin statistics of the model input over every window the runtime would decide on in `paths`;
    `stats` is None when no window passed."""
    acc = StatsAccumulator(features.num_mel_bins)
    files = [measure_file(p, features, quality or QualityConfig(), acc, stream_cfg) for p in paths]
    return Measurement(acc.stats() if acc.frames >= 2 else None, files)


def recording_files(folder: str | Path) -> tuple[list[Path], list[str]]:
    """(WAV/FLAC files, other entries) of `folder` (not recursive), sorted; `CalibrationError` if it has no audio."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationError(f"--recordings {folder}: no such directory; expected a folder of WAV/FLAC recordings "
                               "made with the new stethoscope")
    audio, other = [], []
    for entry in sorted(folder.iterdir()):
        if entry.is_file() and entry.suffix.lower() in AUDIO_SUFFIXES:
            audio.append(entry)
        else:
            other.append(entry.name)
    if not audio:
        raise CalibrationError(f"--recordings {folder}: holds no {'/'.join(AUDIO_SUFFIXES)} files ({len(other)} other "
                               f"entries); expected at least {MIN_AUDIO_S:g} s of recordings made with the stethoscope")
    return audio, other


def train_split_stats(db_dir: str | Path, features: FeatureConfig, settings: dict[str, Any],
                      source: str | Path = "run", cache_dir: str | Path | None = None) -> tuple[FeatureStats, int]:
    """(statistics, cycles) of a run's training split (device split honoured), cycles as training sees them."""
    from edge_lung.data.devices import load_run_split

    cycles = load_run_split(db_dir, "train", features, settings, source, cache_dir)
    return cycles_feature_stats(cycles, features), len(cycles)


def write_feature_stats(model_dir: Path, stats: FeatureStats, provenance: dict[str, Any]) -> dict[str, Any]:
    """Write `STATS_NAME` (the training split's statistics) into `model_dir`; returns its manifest entry."""
    path = model_dir / STATS_NAME
    atomic_write_json(path, {"train": stats.to_dict(), "space": "model input (features.window_features)",
                             **provenance})
    return {"file": STATS_NAME, "sha256": sha256_file(path), **provenance}


def mapping_summary(cal: Calibration) -> dict[str, Any]:
    """How far the mapping moves the features: the largest mean shift and the range of per-bin scales."""
    scale = np.asarray(cal.reference.std) / np.maximum(np.asarray(cal.device.std), STD_FLOOR)
    shift = np.abs(np.asarray(cal.reference.mean) - np.asarray(cal.device.mean))
    return {"max_mean_shift": round(float(shift.max()), 4), "scale_min": round(float(scale.min()), 4),
            "scale_max": round(float(scale.max()), 4), "flat_bins": cal.flat_bins}


def _reference(model_dir: Path, clf: OnnxClassifier, reference_db: str | Path | None,
               cache_dir: str | Path | None, log: Callable[[str], None]) -> tuple[FeatureStats, str]:
    """(the training statistics, where they came from): the directory's own, or `reference_db`'s train split."""
    if reference_db is None:
        return reference_stats(model_dir, clf.info.manifest), STATS_NAME
    try:
        stats, cycles = train_split_stats(reference_db, clf.info.features, clf.info.run, model_dir, cache_dir)
    except ValueError as exc:
        raise CalibrationError(f"--reference {reference_db}: {exc}") from exc
    log(f"reference: {cycles} train cycles of {reference_db}")
    return stats, f"train split of {Path(reference_db).absolute()} ({cycles} cycles)"


def _check_enough(folder: Path, measurement: Measurement, min_audio_s: float) -> None:
    if measurement.stats is None or measurement.usable_s < min_audio_s:
        skipped = "; ".join(f"{f.path.name}: {f.note}" for f in measurement.skipped[:5])
        raise CalibrationError(
            f"--recordings {folder}: {measurement.usable_s:.1f} s of usable audio ({measurement.windows} windows "
            f"passed the quality gate, {len(measurement.skipped)} of {len(measurement.files)} files skipped"
            f"{': ' + skipped if skipped else ''}); calibration needs at least {min_audio_s:g} s (--min-audio): "
            "record more with the stethoscope on a chest"
        )


def calibrate_model_dir(model_dir: str | Path, recordings: str | Path, out: str | Path, overwrite: bool = False,
                        reference_db: str | Path | None = None, min_audio_s: float = MIN_AUDIO_S,
                        cache_dir: str | Path | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write `out`, a copy of `model_dir` calibrated to the stethoscope that made `recordings`; returns the record.

    `ArtifactError` for a bad MODEL_DIR or --out, `CalibrationError` for recordings that give too little
    usable audio or a missing reference; in every case nothing is written and `model_dir` is untouched.
    """
    model_dir, folder = Path(model_dir), Path(recordings)
    out = Path(out).expanduser().absolute()
    if not model_dir.is_dir():
        raise ArtifactError(f"MODEL_DIR {model_dir}: expected a model directory written by `edge-lung export`")
    clf = OnnxClassifier(model_dir)  # refuses a directory that is not ours, or altered
    out_real, src_real = out.resolve(), model_dir.resolve()
    where = ("is" if out_real == src_real else "holds" if src_real.is_relative_to(out_real)
             else "is inside" if out_real.is_relative_to(src_real) else None)
    if where is not None:
        raise ArtifactError(f"--out {out}: {where} MODEL_DIR {model_dir}; calibrate writes a calibrated copy and "
                            "leaves the original untouched: choose a folder outside it")
    check_out_dir(out, overwrite, inputs=(folder, reference_db))  # the recordings and database are not ours
    try:
        check_seconds(min_audio_s, "--min-audio")
    except ValueError as exc:
        raise CalibrationError(str(exc)) from None
    paths, other = recording_files(folder)
    reference, reference_source = _reference(model_dir, clf, reference_db, cache_dir, log)
    measurement = measure_recordings(paths, clf.info.features, clf.info.quality)
    _check_enough(folder, measurement, min_audio_s)
    cal = Calibration(reference, measurement.stats)
    info = {"recordings": str(folder.absolute()), "files_used": len(paths) - len(measurement.skipped),
            "files_skipped": len(measurement.skipped), "entries_ignored": len(other),
            "windows": measurement.windows, "usable_audio_s": round(measurement.usable_s, 1),
            "calibrated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source_model_dir": str(model_dir.absolute()),
            "source_manifest_sha256": sha256_file(model_dir / MANIFEST_NAME), "reference": reference_source,
            "mel_norm": clf.info.features.mel_norm, "mapping": mapping_summary(cal)}
    record = {**cal.to_dict(), "calibration": info, "files": [f.to_dict() for f in measurement.files],
              "ignored": other}
    try:
        tmp = temp_dir_beside(out)
    except OSError as exc:
        raise ArtifactError(f"--out {out}: cannot write in {out.parent} ({exc.strerror})") from exc
    with replaced_dir(out, tmp):
        _write_calibrated(model_dir, tmp, record, info)
    return record


def _write_calibrated(model_dir: Path, tmp: Path, record: dict[str, Any], info: dict[str, Any]) -> None:
    """Copy `model_dir` into `tmp`, add calibration.json, list it in the manifest and the model card; load it back."""
    shutil.copytree(model_dir, tmp, dirs_exist_ok=True)
    atomic_write_json(tmp / CALIBRATION_NAME, record)
    manifest = json.loads((tmp / MANIFEST_NAME).read_text())
    manifest["calibration"] = {"file": CALIBRATION_NAME, "sha256": sha256_file(tmp / CALIBRATION_NAME), **info}
    atomic_write_json(tmp / MANIFEST_NAME, manifest)
    if (tmp / CARD_NAME).is_file():
        atomic_write_text(tmp / CARD_NAME, (tmp / CARD_NAME).read_text().rstrip("\n") + "\n\n" + card_section(info))
    if OnnxClassifier(tmp).info.calibration is None:  # an internal invariant: the copy must load calibrated
        raise ArtifactError(f"{tmp}: the calibrated copy does not load its calibration")


def card_section(info: dict[str, Any]) -> str:
    """The model card's calibration section."""
    mapping = info["mapping"]
    lines = [
        "## Calibration",
        "",
        f"Calibrated by `edge-lung calibrate` on {info['calibrated_at']} from {info['source_model_dir']}, for the "
        f"stethoscope that recorded {info['recordings']}: {info['windows']} windows, {info['usable_audio_s']} s of "
        f"usable audio from {info['files_used']} recordings ({info['files_skipped']} skipped). Every input is mapped "
        f"per input bin (mel bin, or descriptor for the respiratory front end) from that stethoscope's statistics "
        f"onto the training statistics ({info['reference']}) before "
        f"the model ({CALIBRATION_NAME}): largest mean shift {mapping['max_mean_shift']}, scales "
        f"{mapping['scale_min']}-{mapping['scale_max']}.",
        "",
        "model.e2e.onnx and test_vectors.npz are the uncalibrated model's: `--graph e2e` and `edge-lung verify` "
        "refuse this directory.",
    ]
    if mapping["flat_bins"]:
        lines += ["", f"{mapping['flat_bins']} mel bins barely move on this stethoscope (an empty band, e.g. above "
                  "its bandwidth): calibration cannot restore what it does not record."]
    if info["mel_norm"] == "window":
        lines += ["", "This model standardises each window per mel bin (`mel_norm` window), so the mapping is "
                  "nearly the identity."]
    return "\n".join(lines) + "\n"


def calibrate_lines(record: dict[str, Any], out: str | Path) -> list[str]:
    """`edge-lung calibrate`'s printout: every file's fate, the measurement, the mapping, where it went."""
    info, mapping = record["calibration"], record["calibration"]["mapping"]
    lines = [f"  {'used   ' if f['status'] == 'used' else 'SKIPPED'} {Path(f['file']).name}: {f['used_windows']} "
             f"windows, {f['usable_s']:.1f} s usable{'; ' + f['note'] if f['note'] else ''}" for f in record["files"]]
    if record["ignored"]:
        lines.append(f"  ignored {len(record['ignored'])} entries that are not WAV/FLAC: "
                     f"{', '.join(record['ignored'][:5])}{', ...' if len(record['ignored']) > 5 else ''}")
    lines.append(f"measured {info['windows']} windows, {info['usable_audio_s']} s of usable audio from "
                 f"{info['files_used']} recordings ({info['files_skipped']} skipped); reference: {info['reference']}")
    lines.append(f"mapping: largest mean shift {mapping['max_mean_shift']}, scales {mapping['scale_min']}-"
                 f"{mapping['scale_max']}, {mapping['flat_bins']} flat bins")
    if info["mel_norm"] == "window":
        lines.append("note: this model standardises each window per mel bin (mel_norm window): calibration is "
                     "nearly the identity for it")
    lines.append(f"wrote {out} (calibrated copy; --graph e2e and `edge-lung verify` refuse it, the original is "
                 "untouched)")
    return lines
