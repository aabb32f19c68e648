"""A synthetic database in the official ICBHI layout whose four classes are learnable from sound.

Each recording is a run of breathing cycles: band-limited noise under an inhale/exhale
envelope, plus crackles (5-20 ms damped transients, several per cycle) for "crackle", a
wheeze (a sustained 100-1000 Hz tone with a harmonic, 150-600 ms) for "wheeze", and both for
"both". Recordings mix sample rates (4 kHz, 44.1 kHz, some 10 kHz), bit depths (16, 24) and
device names; some split-file entries use the older device name (as 91 real ones do), and a
few split entries have no recording, so the reader's hard cases are exercised. The same seed
gives the same files.

Every crackle burst and wheeze drawn is written, with its time span and frequency band, to a
sidecar `<stem>.events.json` (`EVENTS_SUFFIX`), so explanations (saliency maps) can be checked
against where the abnormal sound really is.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from edge_lung.config import label_of
from edge_lung.data.icbhi import DIAGNOSIS_FILE, SPLIT_FILE
from edge_lung.fileio import MARKER_NAME, check_output, marked_folder, replaced_dir, write_marker

AUDIO_DIR = "ICBHI_final_database"
SYNTH_DB = marked_folder(
    "a synthetic database written by `edge-lung data synth`", "data synth",
    owns=lambda entry: entry.name in (AUDIO_DIR, SPLIT_FILE, DIAGNOSIS_FILE, MARKER_NAME),
)
"""The writing policy's kind for `data synth DIR` (`edge_lung.fileio.check_output`): a real database, which
has no marker, is never replaced."""

# (device, sample rate, subtype) as the real database pairs them
_DEVICES = (
    ("AKGC417L", 44100, "PCM_24"),
    ("Meditron", 44100, "PCM_16"),
    ("LittC2SE", 4000, "PCM_16"),
    ("Litt3200", 4000, "PCM_16"),
    ("Meditron", 10000, "PCM_16"),
)
_LOCATIONS = ("Al", "Ar", "Pl", "Pr", "Tc", "Ll", "Lr")
_DIAGNOSES = ("Healthy", "COPD", "URTI", "Asthma", "Pneumonia", "Bronchiectasis")
_CLASS_P = (0.45, 0.25, 0.18, 0.12)  # normal, crackle, wheeze, both: imbalanced like ICBHI
EVENTS_SUFFIX = ".events.json"


@dataclass(frozen=True)
class DrawnEvent:
    """One crackle burst or wheeze as drawn: seconds from the start of the recording and its band in Hz."""

    kind: str  # "crackle" or "wheeze"
    start_s: float
    end_s: float
    low_hz: float
    high_hz: float


def events_path(audio_path: str | Path) -> Path:
    """The sidecar beside a synthetic recording that lists the events drawn into it."""
    path = Path(audio_path)
    return path.with_name(path.stem + EVENTS_SUFFIX)


def read_events(audio_path: str | Path) -> list[DrawnEvent] | None:
    """The drawn events of a synthetic recording, or None when it has no sidecar (a real recording)."""
    path = events_path(audio_path)
    if not path.is_file():
        return None
    try:
        return [DrawnEvent(**e) for e in json.loads(path.read_text())["events"]]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: expected {{'events': [{{kind, start_s, end_s, low_hz, high_hz}}, ...]}} ({exc})") \
            from exc


@dataclass(frozen=True)
class SynthReport:
    out_dir: Path
    recordings: int
    cycles_per_class: tuple[int, int, int, int]
    renamed_split_entries: int
    split_entries_without_recording: int


def _breath_noise(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    """White noise shaped to 80-1200 Hz (tracheal/vesicular breath sound band)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / rate)
    shape = np.exp(-0.5 * ((f - 350.0) / 300.0) ** 2) + 0.15 * ((f > 80) & (f < 1200))
    x = np.fft.irfft(spec * shape, n)
    return x / (np.std(x) + 1e-12)


def _cycle(
    rng: np.random.Generator, label: int, dur: float, rate: int, noise: np.ndarray
) -> tuple[np.ndarray, list[DrawnEvent]]:
    """One breathing cycle and the events drawn into it (times from the cycle's start)."""
    n = int(dur * rate)
    t = np.arange(n) / rate
    inhale = 0.4 * dur
    rise = np.sin(np.pi * t / (2 * inhale)) ** 2
    fall = np.cos(np.pi * (t - inhale) / (2 * (dur - inhale)))
    env = np.where(t < inhale, rise, fall)
    x = 0.08 * env * noise[:n]
    crackle, wheeze = label in (1, 3), label in (2, 3)
    events = []
    if crackle:
        for _ in range(rng.integers(5, 12)):
            width = rng.uniform(0.005, 0.020)
            start = rng.uniform(0.05, dur - width - 0.05)
            m = int(width * rate)
            tt = np.arange(m) / rate
            f0 = rng.uniform(250, min(1500, 0.4 * rate))
            burst = np.sin(2 * np.pi * f0 * tt) * np.exp(-tt / (width / 4)) * rng.uniform(0.35, 0.6)
            i = int(start * rate)
            x[i : i + m] += burst * rng.choice((-1, 1))
            # a sine decaying with tau = width / 4 has a Lorentzian spectrum of half-width 1 / (2 pi tau)
            half = 3.0 / (2 * np.pi * width / 4)
            band = (max(0.0, f0 - half), min(rate / 2, f0 + half))
            events.append(DrawnEvent("crackle", i / rate, (i + m) / rate, *band))
    if wheeze:
        length = rng.uniform(0.15, min(0.6, 0.8 * dur))
        start = rng.uniform(0.05, dur - length - 0.02)
        m = int(length * rate)
        tt = np.arange(m) / rate
        f0 = rng.uniform(150, min(900, 0.2 * rate)) * (1 + 0.1 * tt / length)  # slight glide
        phase = 2 * np.pi * np.cumsum(f0) / rate
        tone = (np.sin(phase) + 0.3 * np.sin(2 * phase)) * np.sin(np.pi * tt / length) ** 0.5
        i = int(start * rate)
        x[i : i + m] += rng.uniform(0.12, 0.2) * tone
        events.append(DrawnEvent("wheeze", i / rate, (i + m) / rate, float(f0[0]), min(rate / 2, 2 * float(f0[-1]))))
    return x, events


def synthesize_database(out_dir: str | Path, recordings: int = 100, seed: int = 0,
                        overwrite: bool = False) -> SynthReport:
    """Write `recordings` synthetic recordings in the official layout under `out_dir`: a new or empty folder,
    or with `overwrite` a synthetic database written here before (replaced whole; fileio's writing policy).

    Built in a temp folder beside `out_dir`, then swapped in: a failure leaves `out_dir` as it was.
    """
    if recordings < 4:
        raise ValueError(f"recordings: expected at least 4 (train, val and test need patients), got {recordings}")
    out_dir = Path(out_dir)
    check_output(out_dir, "DIR", SYNTH_DB, overwrite)
    out_dir.absolute().parent.mkdir(parents=True, exist_ok=True)
    with replaced_dir(out_dir) as tmp:
        write_marker(tmp, "data synth")
        report = _synthesize_into(tmp, recordings, seed)
    return SynthReport(out_dir, *report[1:])


def _synthesize_into(out_dir: Path, recordings: int, seed: int) -> tuple:
    """The database's files under `out_dir`; returns the `SynthReport` fields."""
    audio_dir = out_dir / AUDIO_DIR
    audio_dir.mkdir()
    rng = np.random.default_rng(seed)
    split_lines: list[str] = []
    diagnosis: dict[str, str] = {}
    counts = [0, 0, 0, 0]
    renamed = 0
    patient = 300
    made = 0
    while made < recordings:
        patient += 1
        pid = str(patient)
        split = "test" if patient % 5 in (1, 3) else "train"  # 60/40 by patient, like the official split
        diagnosis[pid] = str(rng.choice(_DIAGNOSES))
        for rec_idx in range(min(int(rng.integers(1, 4)), recordings - made)):
            device, rate, subtype = _DEVICES[rng.integers(len(_DEVICES))]
            loc = _LOCATIONS[rng.integers(len(_LOCATIONS))]
            mode = "mc" if device == "AKGC417L" else "sc"
            stem = f"{pid}_{rec_idx + 1}b{rng.integers(1, 4)}_{loc}_{mode}_{device}"
            n_cycles = int(rng.integers(5, 10))
            durs = rng.uniform(1.2, 3.2, n_cycles)
            gaps = rng.uniform(0.0, 0.3, n_cycles + 1)
            total = float(durs.sum() + gaps.sum())
            wave = np.zeros(int(total * rate) + rate // 10)
            noise = _breath_noise(rng, int(durs.max() * rate) + 1, rate)
            lines, events, t = [], [], gaps[0]
            for k in range(n_cycles):
                label = int(rng.choice(4, p=_CLASS_P))
                x, drawn = _cycle(rng, label, float(durs[k]), rate, noise)
                i = int(t * rate)
                wave[i : i + len(x)] += x
                events += [_shifted(e, i / rate) for e in drawn]
                lines.append(f"{t:.3f}\t{t + durs[k]:.3f}\t{int(label in (1, 3))}\t{int(label in (2, 3))}")
                assert label == label_of(label in (1, 3), label in (2, 3))
                counts[label] += 1
                t += durs[k] + gaps[k + 1]
            wave += 0.004 * rng.standard_normal(len(wave))  # sensor floor between cycles
            sf.write(str(audio_dir / f"{stem}.wav"), np.clip(wave, -1, 1).astype(np.float32), rate, subtype=subtype)
            (audio_dir / f"{stem}.txt").write_text("\n".join(lines) + "\n")
            _write_events(audio_dir / f"{stem}.wav", events)
            listed = stem
            if device == "AKGC417L" and rng.random() < 0.5:  # the split file's older device name
                listed = stem.rsplit("_", 1)[0] + "_Meditron"
                renamed += 1
            split_lines.append(f"{listed}\t{split}")
            made += 1
    missing = 3  # entries of recordings that are not in this folder, as in a partial download
    for k in range(missing):
        split_lines.append(f"{patient + 1 + k}_1b1_Tc_sc_Meditron\t{'test' if k % 2 else 'train'}")
    (out_dir / SPLIT_FILE).write_text("\n".join(split_lines) + "\n")
    (out_dir / DIAGNOSIS_FILE).write_text("".join(f"{p}\t{d}\n" for p, d in diagnosis.items()))
    return out_dir, recordings, tuple(counts), renamed, missing


def _shifted(event: DrawnEvent, offset_s: float) -> DrawnEvent:
    return DrawnEvent(event.kind, event.start_s + offset_s, event.end_s + offset_s, event.low_hz, event.high_hz)


def _write_events(audio_path: Path, events: list[DrawnEvent]) -> None:
    rows = [{k: round(v, 5) if isinstance(v, float) else v for k, v in asdict(e).items()} for e in events]
    events_path(audio_path).write_text(json.dumps({"events": rows}) + "\n")
