import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from edge_lung.cli import app
from edge_lung.data.icbhi import SPLIT_FILE, Database, DataError, load_cycles, load_recording_audio, parse_name


@pytest.fixture()
def db_copy(synth_db, tmp_path) -> Path:
    dst = tmp_path / "db"
    shutil.copytree(synth_db, dst)
    return dst


def _audio_dir(root: Path) -> Path:
    return root / "ICBHI_final_database"


def test_split_entries_match_on_four_fields_not_device(tmp_path):
    audio = tmp_path / "ICBHI_final_database"
    audio.mkdir()
    for stem in ("101_1b1_Al_sc_AKGC417L", "102_1b1_Ar_sc_Meditron"):
        sf.write(audio / f"{stem}.wav", np.zeros(16000, np.float32), 16000)
        (audio / f"{stem}.txt").write_text("0.1\t0.9\t1\t0\n")
    # The split file knows the first recording under its older device name.
    (tmp_path / SPLIT_FILE).write_text("101_1b1_Al_sc_Meditron\ttrain\n102_1b1_Ar_sc_Meditron\ttest\n")
    db = Database.scan(tmp_path, val_fraction=0.0)
    assert {r.stem: r.split for r in db.recordings} == {"101_1b1_Al_sc_AKGC417L": "train",
                                                      "102_1b1_Ar_sc_Meditron": "test"}
    assert db.renamed_device_matches == 1
    assert db.problems == []
    assert parse_name("101_1b1_Al_sc_AKGC417L").key == parse_name("101_1b1_Al_sc_Meditron").key


def test_synthetic_database_reads_cleanly(synth_db):
    db = Database.scan(synth_db)
    s = db.summary()
    assert s["recordings"] == 24
    assert s["problem_count"] == 0
    assert s["renamed_device_matches"] >= 1
    assert s["split_entries_without_recording"] == 3
    assert set(s["per_sample_rate"]) >= {"4000", "44100"}
    assert {r.subtype for r in db.recordings} >= {"PCM_16", "PCM_24"}
    assert all(s["cycles_per_split"][split]["total"] > 0 for split in ("train", "val", "test"))


def test_validation_split_is_grouped_by_patient_and_deterministic(synth_db):
    db = Database.scan(synth_db)
    by_split = {split: {r.patient for r in db.split_recordings(split)} for split in ("train", "val", "test")}
    assert by_split["val"] and by_split["train"]
    assert not by_split["val"] & by_split["train"]
    assert not by_split["val"] & by_split["test"]
    again = Database.scan(synth_db)
    assert [r.split for r in again.recordings] == [r.split for r in db.recordings]
    other_seed = Database.scan(synth_db, val_seed=1)
    assert {r.patient for r in other_seed.split_recordings("val")}.isdisjoint(by_split["test"])


def test_cycles_are_cut_from_annotation_times(synth_db):
    db = Database.scan(synth_db)
    rec = db.split_recordings("train")[0]
    cycles = [c for c in load_cycles(db, splits=("train",)) if c.recording == rec.stem]
    wave = load_recording_audio(rec, 16000)
    assert len(cycles) == len(rec.cycles)
    for c in cycles:
        a = int(round(c.start_s * 16000))
        np.testing.assert_array_equal(c.audio, wave[a : a + len(c.audio)])
        assert abs(len(c.audio) - (c.end_s - c.start_s) * 16000) <= 1
        assert c.label == int(rec.cycles[c.index].crackle) + 2 * int(rec.cycles[c.index].wheeze)


def test_cache_is_reused_and_invalidated(synth_db, tmp_path):
    db = Database.scan(synth_db)
    rec = db.recordings[0]
    cache = tmp_path / "cache"
    a = load_recording_audio(rec, 16000, cache_dir=cache)
    files = sorted(cache.glob("*.npy"))
    assert len(files) == 1
    np.save(files[0], np.full_like(a, 0.25))  # a cache hit returns what the cache holds
    np.testing.assert_array_equal(load_recording_audio(rec, 16000, cache_dir=cache), np.full_like(a, 0.25))
    load_recording_audio(rec, 8000, cache_dir=cache)  # another sample rate: another entry
    assert len(list(cache.glob("*.npy"))) == 2


def test_cache_invalidated_when_file_changes(db_copy, tmp_path):
    db = Database.scan(db_copy)
    rec = db.recordings[0]
    cache = tmp_path / "cache"
    first = load_recording_audio(rec, 16000, cache_dir=cache)
    info = sf.info(str(rec.wav))
    sf.write(rec.wav, np.zeros(info.frames, np.float32), info.samplerate, subtype=info.subtype)
    second = load_recording_audio(rec, 16000, cache_dir=cache)
    assert np.abs(first).max() > 0 and np.abs(second).max() == 0


def _problem_for(db: Database, name: str) -> list[str]:
    return [p.code for p in db.problems if Path(p.file).name == name]


def test_each_bad_input_is_counted_with_its_reason(db_copy):
    audio = _audio_dir(db_copy)
    stems = sorted(p.stem for p in audio.glob("*.wav"))
    missing, unreadable, empty, past_end, unlisted = stems[:5]
    (audio / f"{missing}.wav").unlink()
    (audio / f"{unreadable}.wav").write_bytes(b"RIFF garbage")
    sf.write(audio / f"{empty}.wav", np.zeros(0, np.float32), 4000)
    duration = sf.info(str(audio / f"{past_end}.wav")).duration
    with open(audio / f"{past_end}.txt", "a") as f:
        f.write(f"{duration - 0.5:.3f}\t{duration + 2:.3f}\t0\t1\n{duration + 5:.3f}\t{duration + 6:.3f}\t0\t0\n")
    split_path = db_copy / SPLIT_FILE
    lines = [ln for ln in split_path.read_text().splitlines() if not ln.startswith(unlisted.rsplit("_", 1)[0])]
    split_path.write_text("\n".join(lines) + "\n")

    db = Database.scan(db_copy)
    assert _problem_for(db, f"{missing}.txt") == ["missing_wav"]
    assert _problem_for(db, f"{unreadable}.wav") == ["unreadable_audio"]
    assert _problem_for(db, f"{empty}.wav") == ["empty_audio"]
    assert _problem_for(db, f"{past_end}.txt") == ["ends_past_end", "starts_past_end"]
    assert _problem_for(db, f"{unlisted}.wav") == ["not_in_split"]
    s = db.summary()
    assert s["problem_count"] == 6
    assert sorted(p["code"] for p in s["problems"]) == sorted(
        ["missing_wav", "unreadable_audio", "empty_audio", "ends_past_end", "starts_past_end", "not_in_split"])
    assert s["recordings"] == 24 - 3  # missing, unreadable, empty are skipped; the others kept
    unlisted_rec = next(r for r in db.recordings if r.stem == unlisted)
    assert unlisted_rec.split is None
    clipped = next(r for r in db.recordings if r.stem == past_end).cycles[-1]
    assert clipped.end_s == pytest.approx(duration)

    with pytest.raises(DataError, match=r"\.(txt|wav): .*strict"):
        Database.scan(db_copy, strict=True)


def test_short_cycles_are_reported_not_dropped(db_copy):
    audio = _audio_dir(db_copy)
    txt = sorted(audio.glob("*.txt"))[0]
    txt.write_text(txt.read_text() + "0.100\t0.150\t1\t0\n")
    db = Database.scan(db_copy)
    rec = next(r for r in db.recordings if r.txt == txt)
    assert any(abs(c.end_s - c.start_s - 0.05) < 1e-9 for c in rec.cycles)
    assert db.summary()["short_cycles"] == 1
    Database.scan(db_copy, strict=True)  # a short cycle is a note, not an error


def test_not_a_database_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="not a directory"):
        Database.scan(tmp_path / "nope")


def test_summary_cli(synth_db):
    runner = CliRunner()
    result = runner.invoke(app, ["data", "summary", str(synth_db), "--json"])
    assert result.exit_code == 0, result.output
    s = json.loads(result.output)
    assert s["recordings"] == 24 and len(s["split_entries_without_recording_list"]) == 3
    text = runner.invoke(app, ["data", "summary", str(synth_db)])
    assert "Validation:" in text.output and "grouped by patient" in text.output


def test_synth_is_deterministic(tmp_path):
    from edge_lung.data.synth import synthesize_database

    synthesize_database(tmp_path / "a", recordings=5, seed=3)
    synthesize_database(tmp_path / "b", recordings=5, seed=3)
    for f in sorted((tmp_path / "a").rglob("*.*")):
        assert f.read_bytes() == (tmp_path / "b" / f.relative_to(tmp_path / "a")).read_bytes()


@pytest.mark.real_data
def test_real_subset_counts(icbhi_dir):
    s = Database.scan(icbhi_dir).summary()
    assert s["recordings"] == 52
    assert s["cycles"] == 516
    assert s["cycles_per_class"] == {"normal": 250, "crackle": 167, "wheeze": 72, "both": 27}
    assert s["split_entries_without_recording"] == 868
    assert s["problem_count"] == 0
    train_patients = {p for p in s["validation"]["patients"]}
    assert train_patients and s["cycles_per_split"]["val"]["total"] > 0


def test_upper_case_extensions_and_audio_in_root(tmp_path):
    stem = "150_2b4_Pl_mc_Litt3200"
    sf.write(tmp_path / f"{stem}.WAV", np.zeros(8000, np.float32), 4000, subtype="PCM_16")
    (tmp_path / f"{stem}.txt").write_text("0.0\t1.0\t0\t1\r\n")  # CRLF, as some copies have
    (tmp_path / SPLIT_FILE).write_text(f"{stem}\ttest\n")
    db = Database.scan(tmp_path)
    assert [r.stem for r in db.recordings] == [stem] and db.problems == []
    assert db.recordings[0].cycles[0].label == 2
