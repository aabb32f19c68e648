"""Unlabeled recordings for distillation: any folder of audio, cut into windows the way the runtime cuts them.

A device maker adapts a student to its own stethoscope from recordings it never annotated
(`edge-lung distill --unlabeled DIR`). Each file under DIR (any rate, any channel count) goes through
the runtime's own `WindowStream` at its input rate (windows of the model's length every `hop_s`,
cyclic-padded before a full window exists, the tail covered at the end) and the runtime's signal-quality
gate: a window the device would not classify (`no_signal`, `clipping`, ...) is counted by verdict and
not used. A kept window is the slice of the whole file resampled to the model's rate (soxr gives the
same samples block by block as at once, so this is the window's audio without a copy per window).

The windows carry no label (`label = -1`): only the teacher labels them. Files that cannot be read,
or are too short for a window, are counted and reported with their reason, never dropped silently.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_lung.audio import AudioError, load_audio, resample
from edge_lung.config import FeatureConfig
from edge_lung.runtime.artifact.quality import OK, QualityConfig
from edge_lung.runtime.live.stream import StreamConfig, Window, WindowStream, assess_window

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif")
UNLABELED = -1
"""The label of a window that has none: it contributes no cross-entropy term."""


@dataclass(frozen=True)
class UnlabeledWindow:
    """One window of an unlabeled recording: its real (unpadded) audio at the model's rate."""

    source: str
    index: int  # the window's number in its file
    start: int  # model-rate samples from the start of the file
    end: int
    audio: np.ndarray = field(repr=False)
    label: int = UNLABELED

    @property
    def recording(self) -> str:
        """The file, as messages about a training batch name a cycle's recording."""
        return self.source


@dataclass
class UnlabeledDir:
    """What one `--unlabeled DIR` gave: windows kept, windows the gate stopped, files skipped and why."""

    path: str
    files: int = 0
    used_files: int = 0
    windows: int = 0
    gated: dict[str, int] = field(default_factory=dict)  # verdict -> windows not used
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"file", "reason"}
    other_files: int = 0  # files without an audio suffix (annotations, notes): not read

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "files": self.files, "used_files": self.used_files, "windows": self.windows,
                "gated_windows": dict(self.gated), "skipped_files": list(self.skipped),
                "other_files": self.other_files}


def load_unlabeled(
    dirs: list[str] | tuple[str, ...],
    features: FeatureConfig,
    hop_s: float = StreamConfig.hop_s,
    quality: QualityConfig | None = None,
) -> tuple[list[UnlabeledWindow], list[UnlabeledDir]]:
    """Every kept window of every audio file under each directory (recursively), and a report per directory.

    `ValueError` naming the directory if it does not exist, holds no audio file at all, or gives no usable window
    (every file unreadable, too short or held back by the quality gate: issue 26, where such a folder ran to the
    end with `unlabeled_windows: 0` and no word; `calibrate` refuses the same folder).
    """
    cfg = StreamConfig(hop_s=hop_s)
    quality = quality or QualityConfig()
    windows: list[UnlabeledWindow] = []
    reports = []
    for d in dirs:
        files, others = audio_files(Path(d))
        report = UnlabeledDir(str(Path(d).resolve()), files=len(files), other_files=others)
        for path in files:
            windows.extend(_file_windows(path, features, cfg, quality, report))
        if not report.windows:
            raise ValueError(_nothing_usable(d, report))
        reports.append(report)
    return windows, reports


def _file_windows(path: Path, features: FeatureConfig, cfg: StreamConfig, quality: QualityConfig,
                  report: UnlabeledDir) -> list[UnlabeledWindow]:
    """One file's kept windows, counted in `report` (a file that gives none is skipped with its reason)."""
    gated: dict[str, int] = {}
    try:
        got = recording_windows(path, features, cfg, quality, gated)
    except AudioError as exc:
        report.skipped.append({"file": str(path), "reason": str(exc)})
        return []
    for verdict, n in gated.items():
        report.gated[verdict] = report.gated.get(verdict, 0) + n
    if not got:
        reason = (f"no window passed the quality gate ({', '.join(f'{n} {v}' for v, n in sorted(gated.items()))})"
                  if gated else f"too short for a window (under {cfg.min_audio_s:g} s)")
        report.skipped.append({"file": str(path), "reason": reason})
        return []
    report.used_files += 1
    report.windows += len(got)
    return got


def _nothing_usable(directory: str, report: UnlabeledDir) -> str:
    first = "; ".join(f"{Path(s['file']).name}: {s['reason']}" for s in report.skipped[:3])
    return (f"--unlabeled {directory}: no usable window in its {report.files} audio files (every one unreadable, "
            f"too short or held back by the signal-quality gate; {first}{'; ...' if len(report.skipped) > 3 else ''})"
            "; expected recordings of chests")


def audio_files(directory: Path) -> tuple[list[Path], int]:
    """(audio files under `directory`, sorted; count of other files); `ValueError` naming it if it has no audio."""
    if not directory.is_dir():
        raise ValueError(f"--unlabeled {directory}: no such directory; expected a folder of recordings")
    every = sorted(p for p in directory.rglob("*") if p.is_file())
    audio = [p for p in every if p.suffix.lower() in AUDIO_SUFFIXES]
    if not audio:
        raise ValueError(f"--unlabeled {directory}: holds no audio files (expected {', '.join(AUDIO_SUFFIXES)}; "
                         f"found {len(every)} other files)")
    return audio, len(every) - len(audio)


def recording_windows(
    path: Path, features: FeatureConfig, cfg: StreamConfig, quality: QualityConfig, gated: dict[str, int]
) -> list[UnlabeledWindow]:
    """The windows `edge-lung classify` would decide for one file, kept if the quality gate passes them.

    Windows the gate stops are counted in `gated` by verdict. `AudioError` naming the file if it is unreadable.
    """
    wave, rate = load_audio(path)
    stream = WindowStream(features, cfg, rate, clip_level=quality.clip_level)
    spans: list[tuple[int, int]] = []
    for window in _stream_windows(stream, wave, max(1, rate)):
        verdict = assess_window(window, quality).verdict
        if verdict == OK:
            spans.append((window.start, window.end))
        else:
            gated[verdict] = gated.get(verdict, 0) + 1
    at_model_rate = resample(wave, rate, features.sample_rate)
    return [UnlabeledWindow(str(path), i, s, e, at_model_rate[s:e]) for i, (s, e) in enumerate(spans)]


def _stream_windows(stream: WindowStream, wave: np.ndarray, block: int) -> Iterator[Window]:
    """The stream's windows as `block`-sample pieces go in (so a few windows' audio are alive at a time), then
    the tail's."""
    for pos in range(0, wave.shape[0], block):
        yield from stream.accept_waveform(wave[pos : pos + block])
    yield from stream.finish()
