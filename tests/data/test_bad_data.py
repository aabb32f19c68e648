"""Bad database input found by the issue #10 battery: every one counted with its file and reason.

NaN / inf audio, nan / inf annotation times, a 5-column annotation line and a truncated WAV.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from edge_lung.audio import audio_info, load_audio
from edge_lung.cli import app
from edge_lung.data.icbhi import SPLITS, Database, load_cycles, parse_annotation


@pytest.fixture()
def db_copy(synth_db: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "db"
    shutil.copytree(synth_db, dst)
    return dst


def _wavs(db: Path) -> list[Path]:
    return sorted((db / "ICBHI_final_database").glob("*.wav"))


def _summary(db: Path) -> dict:
    result = CliRunner().invoke(app, ["data", "summary", str(db), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _problems(summary: dict, name: str) -> list[str]:
    return [p["reason"] for p in summary["problems"] if Path(p["file"]).name == name]


def test_non_finite_audio_is_a_problem_and_never_decoded(db_copy: Path) -> None:
    """A float WAV holding NaN and inf samples: counted per file, and no split hands it out."""
    wav = _wavs(db_copy)[0]
    audio, rate = sf.read(str(wav), dtype="float32")
    audio[100:110] = np.nan
    audio[500] = np.inf
    sf.write(str(wav), audio, rate, subtype="FLOAT")

    s = _summary(db_copy)
    reasons = _problems(s, wav.name)
    assert any("11 non-finite samples" in r and "skipped" in r for r in reasons), reasons
    assert s["recordings"] == 23
    db = Database.scan(db_copy)
    assert wav.stem not in {r.stem for r in db.recordings}
    cycles = load_cycles(db, splits=SPLITS)
    assert cycles and all(np.isfinite(c.audio).all() for c in cycles)


@pytest.mark.parametrize("bad", ["nan\t1.5\t0\t0", "0.5\tinf\t1\t0", "-inf\t2.0\t0\t1", "0.5\tNaN\t0\t0"])
def test_nan_and_inf_annotation_times_are_rejected_per_line(tmp_path: Path, bad: str) -> None:
    txt = tmp_path / "101_1b1_Al_sc_Meditron.txt"
    txt.write_text(f"0.1\t0.9\t1\t0\n{bad}\n1.0\t1.8\t0\t0\n")
    cycles, problems = parse_annotation(txt, duration_s=10.0)
    assert [(c.start_s, c.end_s) for c in cycles] == [(0.1, 0.9), (1.0, 1.8)]
    assert len(problems) == 1 and problems[0].file == str(txt)
    assert "line 2" in problems[0].reason and "finite" in problems[0].reason


def test_nan_annotation_time_in_a_database_names_file_and_line(db_copy: Path) -> None:
    txt = _wavs(db_copy)[0].with_suffix(".txt")
    txt.write_text(txt.read_text() + "nan\tnan\t0\t0\n")
    lines = len(txt.read_text().splitlines())
    db = Database.scan(db_copy)
    reasons = [p.reason for p in db.problems if p.file == str(txt)]
    assert any(f"line {lines}" in r and "finite" in r for r in reasons), reasons
    for c in load_cycles(db, splits=SPLITS):
        assert np.isfinite([c.start_s, c.end_s]).all()


def test_five_column_annotation_line_is_a_problem(tmp_path: Path) -> None:
    txt = tmp_path / "101_1b1_Al_sc_Meditron.txt"
    txt.write_text("0.1\t0.9\t1\t0\n1.0\t1.8\t0\t1\t1\n")
    cycles, problems = parse_annotation(txt, duration_s=10.0)
    assert [(c.start_s, c.end_s) for c in cycles] == [(0.1, 0.9)]
    assert len(problems) == 1 and problems[0].file == str(txt)
    assert "line 2" in problems[0].reason and "4 columns" in problems[0].reason and "got 5" in problems[0].reason


def _truncate(wav: Path, keep: float) -> tuple[int, int]:
    """Cut `wav` to `keep` of its bytes, header untouched: (frames declared, frames left)."""
    declared = sf.info(str(wav)).frames
    data_bytes = wav.stat().st_size - 44
    with open(wav, "r+b") as f:
        f.truncate(44 + int(data_bytes * keep) // 2 * 2)
    return declared, sf.info(str(wav)).frames


def test_truncated_wav_is_reported_where_it_is_read(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    wav = tmp_path / "rec.wav"
    sf.write(str(wav), np.zeros(30000, np.float32), 10000, subtype="PCM_16")
    assert audio_info(wav).missing_frames == 0
    declared, left = _truncate(wav, 1 / 3)
    info = audio_info(wav)
    assert (info.header_frames, info.frames, info.missing_frames) == (declared, left, declared - left)
    audio, _ = load_audio(wav)
    assert audio.shape[0] == left
    expected = f"rec.wav: truncated: the header declares 3.00 s, the file holds {left / 10000:.2f} s"
    assert any(expected in r.getMessage() and f"{declared - left} of {declared} frames missing" in r.getMessage()
               for r in caplog.records), caplog.text


def _truncated_and_model(tmp_path: Path) -> tuple[Path, Path, str]:
    """A tiny model and a 30 s WAV cut to a third (still a few windows): (model dir, wav, missing frames)."""
    from edge_lung.testing import build_tiny_model

    model = build_tiny_model(tmp_path / "model")
    wav = tmp_path / "rec.wav"
    sf.write(str(wav), np.zeros(300000, np.float32), 10000, subtype="PCM_16")
    declared, left = _truncate(wav, 1 / 3)
    return model, wav, f"{declared - left} of {declared} frames missing"


def test_truncated_wav_is_noted_by_classify(tmp_path: Path) -> None:
    """classify decides what is there (status ok, exit 0) and its per-file record says what is missing."""
    model, wav, missing = _truncated_and_model(tmp_path)
    jsonl = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["classify", str(model), str(wav), "--jsonl", str(jsonl)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    (record,) = [r for r in records if r["type"] == "file"]
    assert record["file"] == str(wav) and record["status"] == "ok" and record["windows"] > 0
    assert record["note"].startswith("truncated: the header declares 30.00 s") and missing in record["note"]


def test_truncated_wav_is_reported_by_stream_replay(tmp_path: Path) -> None:
    model, wav, missing = _truncated_and_model(tmp_path)
    # A subprocess: what the user's terminal shows, without pytest's log capture in between.
    cli = [sys.executable, "-c", "from edge_lung.cli import main; main()"]
    result = subprocess.run([*cli, "stream", str(model), "--quiet", "--replay", str(wav)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"{wav}: truncated" in result.stderr and missing in result.stderr, result.stderr


def test_truncated_wav_in_a_database_is_a_problem(db_copy: Path) -> None:
    wav = _wavs(db_copy)[0]
    declared, left = _truncate(wav, 1 / 3)
    s = _summary(db_copy)
    reasons = _problems(s, wav.name)
    rate = sf.info(str(wav)).samplerate
    missing_s = f"{(declared - left) / rate:.2f} s"
    assert any("truncated" in r and missing_s in r for r in reasons), reasons
    assert s["recordings"] == 24  # what is there is still used


def test_wav_writers_that_leave_the_length_open_are_not_truncated(tmp_path: Path) -> None:
    """A streaming writer's placeholder data size (0xFFFFFFFF) means "unknown", not "more frames"."""
    wav = tmp_path / "open.wav"
    sf.write(str(wav), np.zeros(8000, np.float32), 8000, subtype="PCM_16")
    raw = bytearray(wav.read_bytes())
    raw[40:44] = b"\xff\xff\xff\xff"
    wav.write_bytes(bytes(raw))
    info = audio_info(wav)
    assert info.frames == 8000 and info.missing_frames == 0
