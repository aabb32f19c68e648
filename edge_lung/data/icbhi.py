"""ICBHI 2017 database reader: recordings, splits, cycles, a patient-grouped validation split.

Official layout: `{patient}_{index}_{location}_{mode}_{device}.wav` beside a `.txt` of cycles
(`start end crackles wheezes`), the split file `ICBHI_challenge_train_test.txt` and, when
present, `ICBHI_Challenge_diagnosis.txt`. The audio may sit in the database folder itself or
in its `ICBHI_final_database/` subfolder.

The split file names 91 recordings with an older device field (e.g. `..._Meditron` for what
the database ships as `..._AKGC417L`), so recordings are matched on the first four name
fields (patient, recording index, chest location, acquisition mode), never on the device.

Nothing is dropped silently: every file or cycle that cannot be used is a `Problem` with the
file and the reason, counted in the summary; `strict=True` raises on the first one.

`Database.scan` also reads your own recordings (issue 27): a manifest of labelled spans
(`data.manifest`) or the SPRSound layout (`data.sprsound`), told apart by `manifest.detect_layout`.
Both become the same `Recording`s and `Cycle`s, so every command that takes `--data` takes them.
Without a split column every recording is train, and whole patients move to val as for ICBHI.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_lung.audio import RESAMPLER_ID, AudioError, AudioInfo, audio_info, load_audio, non_finite_samples
from edge_lung.config import LABELS, FeatureConfig, label_of
from edge_lung.data.manifest import LABEL_SYNONYMS, LayoutRead, Span, detect_layout, read_manifest, write_manifest
from edge_lung.data.sprsound import EVENT_LABELS, read_sprsound
from edge_lung.fileio import atomic_path

log = logging.getLogger(__name__)

SPLIT_FILE = "ICBHI_challenge_train_test.txt"
DIAGNOSIS_FILE = "ICBHI_Challenge_diagnosis.txt"
AUDIO_SUBDIR = "ICBHI_final_database"
SPLITS: tuple[str, ...] = ("train", "val", "test")
SHORT_CYCLE_S = 0.1
END_TOLERANCE_S = 0.05  # annotation ends this close past the audio end are rounding, not errors
CACHE_VERSION = 1
_NON_ANNOTATION_TXT = {SPLIT_FILE, DIAGNOSIS_FILE, "filename_differences.txt", "README.txt"}
_NAME_RE = re.compile(
    r"^(?P<patient>\d+)_(?P<index>[0-9A-Za-z]+)_(?P<location>[A-Za-z]+)_(?P<mode>sc|mc)_(?P<device>\w+)$"
)


class DataError(ValueError):
    """Bad database input in strict mode, or a database with nothing usable."""


PROBLEM_CODES: dict[str, str] = {
    "no_split_file": "error",
    "missing_wav": "error",
    "missing_txt": "error",
    "bad_name": "error",
    "duplicate": "error",
    "unreadable_audio": "error",
    "empty_audio": "error",
    "non_finite_audio": "error",
    "truncated_audio": "error",
    "not_in_split": "error",
    "bad_line": "error",
    "bad_columns": "error",
    "non_finite_times": "error",
    "bad_values": "error",
    "starts_past_end": "error",
    "ends_past_end": "error",
    "bad_label": "error",
    "conflicting_rows": "error",
    "no_cycles": "note",
    "short_cycle": "note",
    "unlabelled": "note",
    "no_patient": "note",
}
"""Every kind of database problem, by code, with its kind: "error" (data skipped or altered) or "note"
(kept, worth knowing). Consumers match the code, never the wording of `reason`."""


@dataclass(frozen=True)
class Problem:
    """One thing in the database that could not be used as-is: `code` (a key of `PROBLEM_CODES`)
    says what, `reason` says it in words for people."""

    file: str
    code: str
    reason: str

    def __post_init__(self) -> None:
        if self.code not in PROBLEM_CODES:
            raise ValueError(f"Problem code: expected one of {sorted(PROBLEM_CODES)}, got {self.code!r}")

    @property
    def kind(self) -> str:
        return PROBLEM_CODES[self.code]

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


@dataclass(frozen=True)
class RecordingName:
    patient: str
    index: str
    location: str
    mode: str
    device: str

    @property
    def key(self) -> tuple[str, str, str, str]:
        """The first four fields: the identity used to match split entries (device excluded)."""
        return (self.patient, self.index, self.location, self.mode)


def parse_name(stem: str) -> RecordingName:
    """Split an ICBHI file stem into its five fields; ValueError naming the stem if malformed."""
    m = _NAME_RE.match(stem)
    if not m:
        raise ValueError(
            f"{stem!r}: expected an ICBHI name patient_index_location_mode_device "
            "(e.g. 101_1b1_Al_sc_Meditron)"
        )
    return RecordingName(**m.groupdict())


@dataclass(frozen=True)
class CycleSpec:
    """One annotated respiratory cycle (times as annotated, clipped to the audio)."""

    index: int
    start_s: float
    end_s: float
    crackle: bool
    wheeze: bool

    @property
    def label(self) -> int:
        return label_of(self.crackle, self.wheeze)


@dataclass(frozen=True)
class Recording:
    stem: str
    patient: str
    index: str
    location: str
    mode: str
    device: str
    wav: Path
    txt: Path
    split: str | None
    sample_rate: int
    channels: int
    subtype: str
    duration_s: float
    cycles: tuple[CycleSpec, ...]
    diagnosis: str | None = None


@dataclass(frozen=True)
class Cycle:
    """A decoded cycle: unpadded mono float32 audio at the requested rate."""

    recording: str
    patient: str
    device: str
    split: str
    index: int
    start_s: float
    end_s: float
    label: int
    audio: np.ndarray


@dataclass
class Database:
    """A scanned ICBHI-layout database (annotations and headers read, audio not decoded)."""

    root: Path
    audio_dir: Path
    recordings: list[Recording]
    problems: list[Problem] = field(default_factory=list)
    unmatched_split_entries: list[str] = field(default_factory=list)
    renamed_device_matches: int = 0
    split_file: Path | None = None
    val_fraction: float = 0.2
    val_seed: int = 0
    layout: str = "icbhi"
    label_map: dict[str, str] = field(default_factory=dict)

    @classmethod
    def scan(
        cls, root: str | Path, strict: bool = False, val_fraction: float = 0.2, val_seed: int = 0
    ) -> Database:
        """Read the layout under `root`; see the module docstring."""
        return _scan(Path(root), strict=strict, val_fraction=val_fraction, val_seed=val_seed)

    def split_recordings(self, split: str) -> list[Recording]:
        _check_split(split)
        return [r for r in self.recordings if r.split == split]

    def summary(self) -> dict[str, Any]:
        return summarize(self)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")


class _Problems:
    """Collects problems; in strict mode the first error raises."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.items: list[Problem] = []

    def add(self, file: Path | str, code: str, reason: str) -> None:
        problem = Problem(str(file), code, reason)
        if self.strict and problem.kind == "error":
            raise DataError(f"{problem} (strict mode)")
        log.warning("%s", problem)
        self.items.append(problem)


def read_split_file(path: Path) -> dict[tuple[str, str, str, str], tuple[str, str]]:
    """Split file -> {first-four-fields key: (stem as written, 'train'|'test')}."""
    out: dict[tuple[str, str, str, str], tuple[str, str]] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ("train", "test"):
            raise DataError(f"{path}:{lineno}: expected '<recording> train|test', got {line!r}")
        out[parse_name(parts[0]).key] = (parts[0], parts[1])
    return out


def read_diagnosis_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            out[parts[0]] = " ".join(parts[1:])
    return out


def parse_annotation(path: str | Path, duration_s: float = math.inf) -> tuple[list[CycleSpec], list[Problem]]:
    """Cycles of one annotation file and the problems found (never raises on a bad line).

    The one parser of ICBHI annotations: the database reader and `edge-lung classify` both use it.
    """
    problems = _Problems(strict=False)
    return read_annotation(Path(path), duration_s, problems), problems.items


def read_annotation(path: Path, duration_s: float, problems: _Problems) -> list[CycleSpec]:
    """Parse a cycle annotation, clipping or skipping cycles beyond the audio (each reported)."""
    cycles: list[CycleSpec] = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 4:  # a fifth column is another format, not a comment: its flags may mean something else
            problems.add(path, "bad_columns", f"line {lineno}: expected 4 columns 'start end crackles wheezes', "
                         f"got {len(parts)}: {line.strip()!r}; skipped")
            continue
        try:
            start, end, crackle, wheeze = float(parts[0]), float(parts[1]), int(parts[2]), int(parts[3])
        except ValueError:
            problems.add(path, "bad_line",
                         f"line {lineno}: expected 'start end crackles wheezes', got {line.strip()!r}; skipped")
            continue
        if not (math.isfinite(start) and math.isfinite(end)):
            problems.add(path, "non_finite_times",
                         f"line {lineno}: expected finite start and end times, got {line.strip()!r}; skipped")
            continue
        if crackle not in (0, 1) or wheeze not in (0, 1) or end <= start or start < 0:
            problems.add(
                path, "bad_values",
                f"line {lineno}: expected 0 <= start < end and 0/1 flags, got {line.strip()!r}; skipped"
            )
            continue
        if start >= duration_s:
            problems.add(
                path, "starts_past_end",
                f"line {lineno}: cycle {start:.3f}-{end:.3f} s starts past the audio end ({duration_s:.3f} s); "
                "skipped"
            )
            continue
        if end > duration_s + END_TOLERANCE_S:
            problems.add(
                path, "ends_past_end",
                f"line {lineno}: cycle {start:.3f}-{end:.3f} s ends past the audio end ({duration_s:.3f} s); "
                "clipped to the end"
            )
        end = min(end, duration_s)
        if end - start < SHORT_CYCLE_S:
            problems.add(path, "short_cycle", f"line {lineno}: cycle of {1000 * (end - start):.0f} ms (< 100 ms), kept")
        cycles.append(CycleSpec(len(cycles), start, end, bool(crackle), bool(wheeze)))
    return cycles


def _find_audio_dir(root: Path) -> Path:
    if not root.is_dir():
        raise DataError(f"{root}: not a directory; expected an ICBHI database folder")
    sub = root / AUDIO_SUBDIR
    return sub if sub.is_dir() else root


def _find_file(root: Path, audio_dir: Path, name: str) -> Path | None:
    for candidate in (root / name, audio_dir / name):
        if candidate.is_file():
            return candidate
    return None


def _files_with_suffix(folder: Path, suffix: str) -> dict[str, Path]:
    """{stem: path} of the files in `folder` ending in `suffix`, any case (.wav, .WAV)."""
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() == suffix and p.is_file()}


def _scan(root: Path, strict: bool, val_fraction: float, val_seed: int) -> Database:
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction: expected 0 <= f < 1, got {val_fraction}")
    layout = detect_layout(root)
    if layout != "icbhi":
        return _scan_spans(root, layout, strict, val_fraction, val_seed)
    audio_dir = _find_audio_dir(root)
    problems = _Problems(strict)
    split_path = _find_file(root, audio_dir, SPLIT_FILE)
    if split_path is None:
        problems.add(root, "no_split_file", f"no {SPLIT_FILE}: every recording is unassigned (no train/test split)")
    diag_path = _find_file(root, audio_dir, DIAGNOSIS_FILE)
    ctx = _ScanContext(
        split_path=split_path,
        split_map=read_split_file(split_path) if split_path else {},
        diagnosis=read_diagnosis_file(diag_path) if diag_path else {},
        problems=problems,
    )
    wavs, txts = _paired_files(audio_dir, problems)
    recordings = [rec for stem in sorted(set(wavs) & set(txts))
                  if (rec := _read_recording(stem, wavs[stem], txts[stem], ctx)) is not None]
    matched = {(r.patient, r.index, r.location, r.mode) for r in recordings}
    unmatched = sorted(stem for key, (stem, _) in ctx.split_map.items() if key not in matched)
    renamed = sum(1 for r in recordings if r.split is not None
                  and ctx.split_map[(r.patient, r.index, r.location, r.mode)][0] != r.stem)
    recordings = assign_validation(recordings, val_fraction, val_seed)
    return Database(
        root=root, audio_dir=audio_dir, recordings=recordings, problems=problems.items,
        unmatched_split_entries=unmatched, renamed_device_matches=renamed, split_file=split_path,
        val_fraction=val_fraction, val_seed=val_seed,
    )


def _scan_spans(root: Path, layout: str, strict: bool, val_fraction: float, val_seed: int) -> Database:
    """A manifest or SPRSound database: its spans grouped by audio file into `Recording`s."""
    problems = _Problems(strict)
    read = read_manifest(root) if layout == "manifest" else read_sprsound(root)
    for file, code, reason in read.problems:
        problems.add(file, code, reason)
    by_file: dict[Path, list[Span]] = defaultdict(list)
    for span in read.spans:
        by_file[span.file].append(span)
    recordings = [rec for file, spans in by_file.items()
                  if (rec := _span_recording(file, spans, read, problems)) is not None]
    if not any(r.split for r in recordings):  # no split given: train, and whole patients to val below
        recordings = [_replace_split(r, "train") for r in recordings]
    else:
        for r in recordings:
            if r.split is None:
                problems.add(r.wav, "not_in_split", "no split given while other rows have one; excluded from every "
                             "split")
    if not any(r.split == "val" for r in recordings):  # a manifest's own val split is kept as given
        recordings = assign_validation(recordings, val_fraction, val_seed)
    base = read.source if read.source.is_dir() else read.source.parent
    return Database(root=root, audio_dir=base, recordings=recordings, problems=problems.items,
                    val_fraction=val_fraction, val_seed=val_seed, layout=layout, label_map=read.label_map)


def _span_recording(file: Path, spans: list[Span], read: LayoutRead, problems: _Problems) -> Recording | None:
    """The spans of one audio file as a `Recording` (times checked against the audio), or None."""
    first = spans[0]
    meta = {(s.patient, s.device, s.location, s.split) for s in spans}
    if len(meta) > 1:
        problems.add(file, "conflicting_rows", f"{len(spans)} rows disagree on patient/device/location/split "
                     f"({sorted(meta, key=str)}); expected one value per file; skipped")
        return None
    if not file.is_file():
        problems.add(file, "missing_wav", f"no such audio file (named by {first.where}); its {len(spans)} rows "
                     "skipped")
        return None
    try:
        info = audio_info(file)
    except AudioError as exc:
        problems.add(file, "unreadable_audio", f"{exc}; skipped")
        return None
    if info.frames == 0:
        problems.add(file, "empty_audio", "empty audio (0 samples); skipped")
        return None
    if not _samples_usable(file, info, problems):
        return None
    cycles = _span_cycles(file, spans, info.duration_s, problems)
    if not cycles:
        problems.add(file, "no_cycles", "no usable labelled span")
    if first.patient is None:
        problems.add(file, "no_patient", "no patient given: this file is its own patient for every split")
    base = read.source if read.source.is_dir() else read.source.parent
    stem = str(file.relative_to(base).with_suffix("")).replace("/", "__") if file.is_relative_to(base) else file.stem
    return Recording(
        stem=stem, patient=first.patient or stem, index="", location=first.location or "", mode="",
        device=first.device or "unknown", wav=file, txt=read.source, split=first.split,
        sample_rate=info.sample_rate, channels=info.channels, subtype=info.subtype, duration_s=info.duration_s,
        cycles=tuple(cycles),
    )


def _span_cycles(file: Path, spans: list[Span], duration_s: float, problems: _Problems) -> list[CycleSpec]:
    """`CycleSpec`s of one file's spans (a span without times is the whole file), clipped to the audio."""
    cycles: list[CycleSpec] = []
    for s in spans:
        start, end = (0.0, duration_s) if s.start_s is None or s.end_s is None else (s.start_s, s.end_s)
        if start >= duration_s:
            problems.add(file, "starts_past_end", f"{s.where}: span {start:.3f}-{end:.3f} s starts past the audio "
                         f"end ({duration_s:.3f} s); skipped")
            continue
        if end > duration_s + END_TOLERANCE_S:
            problems.add(file, "ends_past_end", f"{s.where}: span {start:.3f}-{end:.3f} s ends past the audio end "
                         f"({duration_s:.3f} s); clipped to the end")
        end = min(end, duration_s)
        if end - start < SHORT_CYCLE_S:
            problems.add(file, "short_cycle", f"{s.where}: span of {1000 * (end - start):.0f} ms (< 100 ms), kept")
        cycles.append(CycleSpec(len(cycles), start, end, s.label in ("crackle", "both"), s.label in ("wheeze", "both")))
    return cycles


@dataclass
class _ScanContext:
    """What every recording of one scan is checked against, and where its problems go."""

    split_path: Path | None
    split_map: dict[tuple[str, str, str, str], tuple[str, str]]
    diagnosis: dict[str, str]
    problems: _Problems
    seen_keys: dict[tuple[str, str, str, str], str] = field(default_factory=dict)


def _paired_files(audio_dir: Path, problems: _Problems) -> tuple[dict[str, Path], dict[str, Path]]:
    """({stem: wav}, {stem: annotation txt}); a file without its partner is a problem."""
    wavs = _files_with_suffix(audio_dir, ".wav")
    txts = {stem: p for stem, p in _files_with_suffix(audio_dir, ".txt").items() if p.name not in _NON_ANNOTATION_TXT}
    for stem in sorted(set(txts) - set(wavs)):
        problems.add(txts[stem], "missing_wav", "annotation without its recording (missing .wav); skipped")
    for stem in sorted(set(wavs) - set(txts)):
        problems.add(wavs[stem], "missing_txt", "recording without its annotation (.txt); skipped")
    return wavs, txts


def _read_recording(stem: str, wav: Path, txt: Path, ctx: _ScanContext) -> Recording | None:
    """One wav + annotation pair as a `Recording`, or None (with the problem recorded) if unusable."""
    problems = ctx.problems
    try:
        name = parse_name(stem)
    except ValueError as exc:
        problems.add(wav, "bad_name", f"{exc}; skipped")
        return None
    if name.key in ctx.seen_keys:
        problems.add(wav, "duplicate",
                     f"same patient/index/location/mode as {ctx.seen_keys[name.key]}; skipped as a duplicate")
        return None
    ctx.seen_keys[name.key] = stem
    try:
        info = audio_info(wav)
    except AudioError as exc:
        problems.add(wav, "unreadable_audio", f"{exc}; skipped")
        return None
    if info.frames == 0:
        problems.add(wav, "empty_audio", "empty audio (0 samples); skipped")
        return None
    if not _samples_usable(wav, info, problems):
        return None
    split = None
    if ctx.split_path is not None:
        entry = ctx.split_map.get(name.key)
        if entry is None:
            problems.add(wav, "not_in_split", f"not listed in {SPLIT_FILE}; excluded from every split")
        else:
            split = entry[1]
    cycles = read_annotation(txt, info.duration_s, problems)
    if not cycles:
        problems.add(txt, "no_cycles", "no usable cycles in the annotation")
    return Recording(
        stem=stem, patient=name.patient, index=name.index, location=name.location, mode=name.mode,
        device=name.device, wav=wav, txt=txt, split=split, sample_rate=info.sample_rate,
        channels=info.channels, subtype=info.subtype, duration_s=info.duration_s, cycles=tuple(cycles),
        diagnosis=ctx.diagnosis.get(name.patient),
    )


def _samples_usable(wav: Path, info: AudioInfo, problems: _Problems) -> bool:
    """Report a truncated file (its cycles are still used) and refuse one holding NaN or inf samples.

    Only float WAVs can hold non-finite samples, so only they are read here (ICBHI's PCM never is).
    """
    if (cut := info.truncation()) is not None:
        problems.add(wav, "truncated_audio", f"{cut}; cycles past the end are skipped")
    try:
        bad = non_finite_samples(wav, info)
    except AudioError as exc:
        problems.add(wav, "unreadable_audio", f"{exc}; skipped")
        return False
    if bad:
        problems.add(wav, "non_finite_audio", f"{bad} non-finite samples (NaN or inf) of "
                     f"{info.frames * info.channels}; skipped: training on them makes a NaN model")
        return False
    return True


def assign_validation(recordings: list[Recording], fraction: float, seed: int) -> list[Recording]:
    """Move whole train patients to 'val' until they hold about `fraction` of train cycles.

    Patients are taken in the order of sha256(seed:patient), so the split is deterministic,
    independent of file order, and no patient is on both sides. A patient whose cycles would
    overshoot the target by more than 20% is passed over for a smaller one later in the order.
    """
    train = [r for r in recordings if r.split == "train"]
    total = sum(len(r.cycles) for r in train)
    per_patient: dict[str, int] = defaultdict(int)
    for r in train:
        per_patient[r.patient] += len(r.cycles)
    order = sorted(per_patient, key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())
    val_patients: set[str] = set()
    taken = 0
    # Keep at least one train patient: a validation split must never empty the training split.
    target = fraction * total
    for patient in order[:-1]:
        if taken >= target:
            break
        if taken and taken + per_patient[patient] > 1.2 * target:
            continue
        val_patients.add(patient)
        taken += per_patient[patient]
    return [
        _replace_split(r, "val") if r.split == "train" and r.patient in val_patients else r for r in recordings
    ]


def _replace_split(r: Recording, split: str) -> Recording:
    return replace(r, split=split)


# ---------------------------------------------------------------------------------------------
# Decoding with a cache


def default_cache_dir() -> Path:
    return Path(os.environ.get("EDGE_LUNG_CACHE_DIR", Path.home() / ".cache" / "edge-lung"))


def cache_key(wav: Path, sample_rate: int) -> str:
    """Key of a decoded, resampled recording: the file's identity plus every decoding setting."""
    st = wav.stat()
    ident = {
        "path": str(wav.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "sample_rate": sample_rate,
        "resampler": RESAMPLER_ID,
        "version": CACHE_VERSION,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


def load_recording_audio(
    rec: Recording, sample_rate: int, cache_dir: str | Path | None = None, cache: bool = True
) -> np.ndarray:
    """Whole recording as mono float32 at `sample_rate`, through the decode cache."""
    if not cache:
        return load_audio(rec.wav, sample_rate)[0]
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache_dir / f"{rec.stem}-{cache_key(rec.wav, sample_rate)}.npy"
    if path.is_file():
        try:
            return np.load(path)
        except (OSError, ValueError) as exc:  # a torn cache file is rebuilt, not trusted
            log.warning("%s: unreadable cache entry (%s); decoding again", path, exc)
    wave = load_audio(rec.wav, sample_rate)[0]
    cache_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, wave)
    return wave


def load_cycles(
    db: Database,
    splits: tuple[str, ...] | list[str] = ("train",),
    sample_rate: int = 16000,
    cache_dir: str | Path | None = None,
    cache: bool = True,
) -> list[Cycle]:
    """Decode the cycles of the given splits (unpadded audio at `sample_rate`)."""
    for s in splits:
        _check_split(s)
    out: list[Cycle] = []
    for rec in db.recordings:
        if rec.split not in splits or not rec.cycles:
            continue
        wave = load_recording_audio(rec, sample_rate, cache_dir, cache)
        for c in rec.cycles:
            a = int(round(c.start_s * sample_rate))
            b = min(int(round(c.end_s * sample_rate)), wave.shape[0])
            if b <= a:  # a cycle shorter than one output sample: keep it audible as one sample
                a, b = max(0, min(a, wave.shape[0] - 1)), max(1, min(a, wave.shape[0] - 1) + 1)
            out.append(
                Cycle(rec.stem, rec.patient, rec.device, rec.split, c.index, c.start_s, c.end_s, c.label,
                      np.ascontiguousarray(wave[a:b]))
            )
    return out


# ---------------------------------------------------------------------------------------------
# Summary


def summarize(db: Database) -> dict[str, Any]:
    """Counts per split, class, device and sample rate, plus every problem with its reason."""
    cycles_by_split: dict[str, Counter] = defaultdict(Counter)
    recs_by_split: Counter = Counter()
    by_device: dict[str, Counter] = defaultdict(Counter)
    by_rate: dict[int, Counter] = defaultdict(Counter)
    for r in db.recordings:
        split = r.split or "unassigned"
        recs_by_split[split] += 1
        for c in r.cycles:
            cycles_by_split[split][LABELS[c.label]] += 1
        for d in (by_device[r.device], by_rate[r.sample_rate]):
            d["recordings"] += 1
            d["cycles"] += len(r.cycles)
    class_totals = Counter()
    for counts in cycles_by_split.values():
        class_totals.update(counts)
    val_patients = sorted({r.patient for r in db.recordings if r.split == "val"})
    return {
        "root": str(db.root),
        "layout": db.layout,
        "label_map": db.label_map,
        "recordings": len(db.recordings),
        "cycles": sum(len(r.cycles) for r in db.recordings),
        "cycles_per_class": {name: class_totals.get(name, 0) for name in LABELS},
        "recordings_per_split": dict(sorted(recs_by_split.items())),
        "cycles_per_split": {
            s: {name: c.get(name, 0) for name in LABELS} | {"total": sum(c.values())}
            for s, c in sorted(cycles_by_split.items())
        },
        "validation": {
            "fraction": db.val_fraction,
            "seed": db.val_seed,
            "patients": val_patients,
            "recordings": recs_by_split.get("val", 0),
            "cycles": sum(cycles_by_split["val"].values()) if "val" in cycles_by_split else 0,
        },
        "per_device": {k: dict(v) for k, v in sorted(by_device.items())},
        "per_sample_rate": {str(k): dict(v) for k, v in sorted(by_rate.items())},
        "short_cycles": sum(1 for p in db.problems if p.code == "short_cycle"),
        "renamed_device_matches": db.renamed_device_matches,
        "split_entries_without_recording": len(db.unmatched_split_entries),
        "split_entries_without_recording_list": db.unmatched_split_entries,
        "problems": [{"file": p.file, "code": p.code, "reason": p.reason, "kind": p.kind} for p in db.problems],
        "problem_count": sum(1 for p in db.problems if p.kind == "error"),
    }


def format_summary(s: dict[str, Any], max_problems: int = 20) -> str:
    """Plain-text rendering of `summarize()` for the terminal."""
    lines = [
        f"Database {s['root']} ({s.get('layout', 'icbhi')} layout): {s['recordings']} recordings, {s['cycles']} cycles "
        f"({', '.join(f'{v} {k}' for k, v in s['cycles_per_class'].items())})",
        f"{'split':<11}{'recs':>6}" + "".join(f"{n:>9}" for n in LABELS) + f"{'total':>9}",
    ]
    for split, counts in s["cycles_per_split"].items():
        lines.append(
            f"{split:<11}{s['recordings_per_split'].get(split, 0):>6}"
            + "".join(f"{counts[n]:>9}" for n in LABELS) + f"{counts['total']:>9}"
        )
    v = s["validation"]
    lines.append(
        f"Validation: {v['recordings']} recordings / {v['cycles']} cycles from train patients "
        f"{', '.join(v['patients']) or '-'} (fraction {v['fraction']}, seed {v['seed']}, grouped by patient)"
    )
    if s.get("label_map"):
        lines.append("Labels mapped: " + "; ".join(
            f"{name} <- " + ", ".join(k for k, v in s["label_map"].items() if v == name and not k.isdigit())
            for name in LABELS))
    lines.append("Per device: " + ", ".join(f"{d} {c['recordings']} rec / {c['cycles']} cyc"
                                           for d, c in s["per_device"].items()))
    lines.append("Per sample rate: " + ", ".join(f"{r} Hz {c['recordings']} rec / {c['cycles']} cyc"
                                                for r, c in s["per_sample_rate"].items()))
    lines.append(
        f"Split entries matched with another device name: {s['renamed_device_matches']}; "
        f"split entries without a recording here: {s['split_entries_without_recording']}; "
        f"cycles under 100 ms: {s['short_cycles']}"
    )
    problems = s["problems"]
    lines.append(f"Problems: {s['problem_count']} (plus {len(problems) - s['problem_count']} notes)")
    for p in problems[:max_problems]:
        lines.append(f"  [{p['kind']}] {p['file']}: {p['reason']}")
    if len(problems) > max_problems:
        lines.append(f"  ... {len(problems) - max_problems} more (see --json)")
    return "\n".join(lines)


def import_database(src: str | Path, out_dir: str | Path, val_fraction: float = 0.2, val_seed: int = 0) -> Path:
    """`edge-lung data import`: any database `--data` takes, written as `out_dir`/manifest.csv (the audio stays
    where it is, named by absolute path). Splits are written as scanned (val included), so the manifest
    database splits exactly as its source did with these settings; unusable rows are left out (see `summary`)."""
    db = Database.scan(src, strict=False, val_fraction=val_fraction, val_seed=val_seed)
    spans = [Span(r.wav.resolve(), c.start_s, c.end_s, LABELS[c.label], r.patient, r.device, r.location or None,
                  r.split) for r in db.recordings if r.split is not None for c in r.cycles]
    if not spans:
        raise DataError(f"{src}: no usable labelled cycle to import ({len(db.problems)} problems; see "
                        "`edge-lung data summary`)")
    return write_manifest(spans, out_dir)


def layout_record(db_dir: str | Path) -> dict[str, Any]:
    """What a run's config.json records of its database's layout: the layout and the label mapping it used."""
    layout = detect_layout(db_dir)
    label_map = {"manifest": LABEL_SYNONYMS, "sprsound": EVENT_LABELS}.get(layout, {})
    return {"layout": layout, "label_map": dict(label_map)}


def run_val_split(settings: dict[str, Any], source: str | Path) -> tuple[float, int]:
    """(val_fraction, val_seed) a run was trained with. Never a default: another fraction or seed
    would re-split train and leak patients the model trained on into "validation"."""
    try:
        return float(settings["val_fraction"]), int(settings["val_seed"])
    except KeyError as exc:
        raise ValueError(
            f"{source}: the run's validation split settings ({exc.args[0]}) are not recorded; "
            "this run or model was not written by this edge-lung version"
        ) from exc

def load_split(db_dir: str | Path, split: str, cfg: FeatureConfig, val_fraction: float = 0.2, val_seed: int = 0,
               cache_dir: str | Path | None = None) -> list:
    """Cycles of one split of an ICBHI-layout database; `ValueError` naming the folder if it is empty."""

    db = Database.scan(db_dir, strict=False, val_fraction=val_fraction, val_seed=val_seed)
    cycles = load_cycles(db, splits=(split,), sample_rate=cfg.sample_rate, cache_dir=cache_dir)
    if not cycles:
        raise ValueError(f"{db_dir}: the {split!r} split has no cycles; expected an ICBHI-layout database with "
                         f"{split} recordings, a manifest or the SPRSound layout "
                         f"({len(db.recordings)} recordings found, {len(db.problems)} problems)")
    return cycles
