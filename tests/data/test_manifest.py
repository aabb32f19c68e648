"""Your own recordings as a database (issue 27): manifests (CSV, JSON lines), the SPRSound layout, `data import`
and `data summary`, all read by `Database.scan` into the same recordings and cycles as the ICBHI layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from edge_lung.cli import app
from edge_lung.config import LABELS
from edge_lung.data.icbhi import Database, import_database, load_cycles
from edge_lung.data.manifest import LABEL_SYNONYMS, detect_layout, normalise_label
from edge_lung.data.sprsound import EVENT_LABELS

RATE = 8000
EVENT_S = 1.5
SPR_EVENTS = ("Normal", "Fine Crackle", "Normal", "Wheeze", "Normal", "Stridor", "Normal", "Wheeze & Crackle")


def sound(kind: str, seconds: float, rate: int, seed: int) -> np.ndarray:
    """Breath-like noise (shaped around 350 Hz, swelling with each breath: the quality gate's idea of breathing),
    with clicks for a crackle and a 400 Hz tone for a wheeze (both for 'both')."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    f = np.fft.rfftfreq(n, 1.0 / rate)
    noise = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * np.exp(-0.5 * ((f - 350.0) / 150.0) ** 2), n)
    x = 0.05 * noise / (noise.std() + 1e-12) * (0.2 + np.sin(np.pi * t / EVENT_S) ** 2)
    if kind in ("crackle", "both"):
        for start in np.arange(0.05, seconds - 0.05, 0.12):
            i, m = int(start * rate), int(0.01 * rate)
            x[i : i + m] += 0.5 * np.sin(2 * np.pi * 700 * t[:m]) * np.exp(-t[:m] / 0.002)
    if kind in ("wheeze", "both"):
        x += 0.2 * np.sin(2 * np.pi * 400 * t)
    return x.astype(np.float32)


def write_events(path: Path, kinds: list[str], seed: int, rate: int = RATE) -> None:
    """A WAV of consecutive `EVENT_S` segments, one per class name in `kinds`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.concatenate([sound(k, EVENT_S, rate, seed * 100 + i) for i, k in enumerate(kinds)]), rate)


def make_sprsound(root: Path, patients: int = 6) -> Path:
    """SPRSound layout: train_wav/ + train_json/ (`patients` patients), test_wav/ + test_json/ (one more),
    8 kHz WAVs named patient_age_gender_location_number, events in ms; one event of an unknown type."""
    for i in range(patients + 1):
        part = "train" if i < patients else "test"
        stem = f"{6503600 + i}_4.{i}_1_p{1 + i % 4}_{1000 + i}"
        kinds = [normalise_label(e, EVENT_LABELS) for e in SPR_EVENTS]
        write_events(root / f"{part}_wav" / f"{stem}.wav", kinds, seed=i)
        events = [{"start": str(int(k * EVENT_S * 1000)), "end": str(int((k + 1) * EVENT_S * 1000)), "type": e}
                  for k, e in enumerate(SPR_EVENTS)]
        if i == 0:
            events.append({"start": "0", "end": "500", "type": "Squawk"})
        doc = {"record_annotation": "CAS & DAS", "event_annotation": events}
        (root / f"{part}_json").mkdir(parents=True, exist_ok=True)
        (root / f"{part}_json" / f"{stem}.json").write_text(json.dumps(doc))
    return root


def make_manifest(root: Path, patients: int = 4) -> Path:
    """A CSV manifest: per patient one annotated recording (spans) and one whole-file row, synonyms for labels,
    no split column; plus a row with an unknown label and one naming a missing file."""
    rows = ["file,start,end,label,patient,device,location"]
    kinds = ["normal", "crackle", "normal", "wheeze", "normal", "both", "normal", "crackle"]
    names = {"normal": "Normal", "crackle": "fine crackle", "wheeze": "Rhonchi", "both": "both"}
    for p in range(patients):
        write_events(root / "audio" / f"p{p}_a.wav", kinds, seed=p)
        for k, kind in enumerate(kinds):
            rows.append(f"audio/p{p}_a.wav,{k * EVENT_S},{(k + 1) * EVENT_S},{names[kind]},P{p},MyScope,Tc")
        write_events(root / "audio" / f"p{p}_b.wav", ["wheeze"] * 2, seed=50 + p)
        rows.append(f"audio/p{p}_b.wav,,,wheeze,P{p},MyScope,Al")
    rows.append("audio/p0_a.wav,0,1,squawk,P0,MyScope,Tc")
    rows.append("audio/nothere.wav,0,1,normal,P9,MyScope,Tc")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def spr_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sprsound(tmp_path_factory.mktemp("sprsound"))


@pytest.fixture(scope="module")
def manifest_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_manifest(tmp_path_factory.mktemp("manifest"))


def test_layouts_are_told_apart(spr_db: Path, manifest_db: Path, synth_db: Path) -> None:
    assert detect_layout(spr_db) == "sprsound"
    assert detect_layout(manifest_db) == "manifest"
    assert detect_layout(manifest_db / "manifest.csv") == "manifest"
    assert detect_layout(synth_db) == "icbhi"


def test_manifest_rows_become_recordings_and_cycles(manifest_db: Path) -> None:
    db = Database.scan(manifest_db)
    assert db.layout == "manifest" and len(db.recordings) == 8
    whole = [r for r in db.recordings if r.stem.endswith("_b")]
    assert all(len(r.cycles) == 1 and r.cycles[0].start_s == 0 for r in whole)
    assert all(abs(r.cycles[0].end_s - r.duration_s) < 1e-6 and LABELS[r.cycles[0].label] == "wheeze" for r in whole)
    counts = db.summary()["cycles_per_class"]
    # per patient: 4 normal, 2 crackle ("fine crackle"), 1 wheeze ("Rhonchi") + the whole-file wheeze, 1 both
    assert counts == {"normal": 16, "crackle": 8, "wheeze": 8, "both": 4}
    assert {r.device for r in db.recordings} == {"MyScope"} and {r.location for r in db.recordings} == {"Tc", "Al"}
    codes = {p.code: p for p in db.problems}
    assert "squawk" in codes["bad_label"].reason and "line" in codes["bad_label"].reason
    assert codes["missing_wav"].file.endswith("nothere.wav")


def test_manifest_without_split_is_split_by_patient(manifest_db: Path) -> None:
    db = Database.scan(manifest_db, val_fraction=0.3)
    splits = {r.patient: set() for r in db.recordings}
    for r in db.recordings:
        splits[r.patient].add(r.split)
    assert all(len(s) == 1 for s in splits.values()), f"a patient on two sides: {splits}"
    assert {s for v in splits.values() for s in v} == {"train", "val"}


def test_jsonl_manifest_with_true_label_reads_like_corrections(manifest_db: Path, tmp_path: Path) -> None:
    wav = manifest_db / "audio" / "p0_a.wav"
    lines = [{"file": str(wav), "start": 0, "end": 1.5, "model_label": "crackle", "true_label": "normal",
              "patient": "P0", "split": "train"},
             {"file": str(wav), "start": 1.5, "end": 3.0, "model_label": "crackle", "true_label": ""}]
    path = tmp_path / "fix.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    db = Database.scan(path)
    assert [LABELS[c.label] for r in db.recordings for c in r.cycles] == ["normal"]
    assert [p.code for p in db.problems] == ["unlabelled"] and db.problems[0].kind == "note"


def test_sprsound_events_map_to_the_four_classes(spr_db: Path) -> None:
    db = Database.scan(spr_db)
    assert db.layout == "sprsound" and db.label_map == EVENT_LABELS
    train = db.split_recordings("train") + db.split_recordings("val")
    assert len(train) == 6 and len(db.split_recordings("test")) == 1
    rec = sorted(train, key=lambda r: r.patient)[0]
    assert rec.patient == "6503600" and rec.location == "p1" and rec.device == "Yunting" and rec.sample_rate == RATE
    got = [LABELS[c.label] for c in rec.cycles]
    assert got == ["normal", "crackle", "normal", "wheeze", "normal", "wheeze", "normal", "both"]
    assert [c.start_s for c in rec.cycles][:2] == [0.0, 1.5]
    bad = [p for p in db.problems if p.code == "bad_label"]
    assert len(bad) == 1 and "Squawk" in bad[0].reason
    cycles = load_cycles(db, ("train",), 16000)
    assert cycles and all(abs(c.audio.shape[0] - EVENT_S * 16000) <= 1 for c in cycles)


def test_label_synonyms_cover_the_sprsound_vocabulary() -> None:
    for event, label in EVENT_LABELS.items():
        assert normalise_label(event.upper()) == label, event
    assert set(LABEL_SYNONYMS.values()) == set(LABELS)
    assert normalise_label("  Wheeze   &  Crackle ") == "both" and normalise_label("squawk") is None


def test_import_writes_a_manifest_with_the_same_cycles(synth_db: Path, tmp_path: Path) -> None:
    source = Database.scan(synth_db)
    import_database(synth_db, tmp_path / "db")
    copy = Database.scan(tmp_path / "db")
    assert copy.layout == "manifest"
    for split in ("train", "val", "test"):
        a = sorted((r.patient, c.start_s, c.label) for r in source.split_recordings(split) for c in r.cycles)
        b = sorted((r.patient, round(c.start_s, 3), c.label) for r in copy.split_recordings(split) for c in r.cycles)
        assert [(p, round(s, 3), lab) for p, s, lab in a] == b, split


def test_cli_summary_and_import_name_every_skipped_row(spr_db: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["data", "import", str(spr_db), "--out", str(tmp_path / "db")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "db" / "manifest.csv").is_file() and "manifest layout" in result.output
    result = runner.invoke(app, ["data", "summary", str(spr_db)])
    assert result.exit_code == 0, result.output
    assert "sprsound layout" in result.output and "Squawk" in result.output
    assert "wheeze <- " in result.output and "stridor" in result.output
