"""The writing policy of the whole CLI (issue 26 part A; `edge_lung.fileio.check_output`).

No command replaces or deletes a file or folder it did not create; an existing output is replaced only with
--overwrite and only if it is of the kind that command writes; an output equal to an input is refused.
Each case runs the real CLI (typer's CliRunner) on tiny models and databases; the commands that need a
training run get a folder with a config.json, enough for a refusal, which comes before anything is loaded.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge_lung.cli import app
from edge_lung.data.synth import synthesize_database
from edge_lung.testing import build_tiny_e2e_model, write_signal

FOREIGN = b"a user's own file: patient 12, follow up in March\n"
RATE = 16000
COARSE = ("--patch-frames", "400", "--patch-bins", "64")  # a few occlusion patches: the pages, not the maps


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A model directory, recordings, a synthetic database and a stand-in run directory (read-only)."""
    root = tmp_path_factory.mktemp("policy")
    env = {"model": build_tiny_e2e_model(root / "model"), "recs": root / "recs", "run": root / "run"}
    env["recs"].mkdir()
    env["wav"], env["flac"] = env["recs"] / "rec.wav", env["recs"] / "rec.flac"
    write_signal(env["wav"], 9.0, RATE, seed=1)
    write_signal(env["flac"], 9.0, RATE, seed=2, subtype="PCM_16")
    env["db"] = synthesize_database(root / "db", recordings=4, seed=1).out_dir
    env["run"].mkdir()
    (env["run"] / "config.json").write_text(json.dumps({"train": {}}))
    return env


def _snapshot(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def _refused(result, option: str, path: Path) -> None:
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # a message, not a traceback
    text = " ".join(result.output.split())  # rich and typer wrap long lines
    assert option in text and str(path) in text.replace("\n", ""), result.output


# --------------------------------------------------------------------------- every command with an output path

# (id, argv with OUT for the output path, the option, "file" or "folder", whether the command has --overwrite);
# every command of `edge-lung --help` that writes a file is here (devices and data summary write nothing).
COMMANDS = [
    ("classify --jsonl", ["classify", "{model}", "{wav}", "--jsonl", "OUT"], "--jsonl", "file", True),
    ("stream --jsonl", ["stream", "{model}", "--replay", "{wav}", "--quiet", "--jsonl", "OUT"], "--jsonl", "file",
     True),
    ("stream --record", ["stream", "{model}", "--replay", "{flac}", "--quiet", "--record", "OUT"], "--record",
     "flac", True),
    ("stream --report", ["stream", "{model}", "--replay", "{wav}", "--quiet", "--report", "OUT"], "--report",
     "folder", True),
    ("report --out", ["report", "{model}", "{wav}", "--out", "OUT"], "--out", "folder", True),
    ("verify --json", ["verify", "{model}", "--json", "OUT"], "--json", "file", True),
    ("calibrate --out", ["calibrate", "{model}", "--recordings", "{recs}", "--out", "OUT"], "--out", "folder", True),
    ("export --out", ["export", "{run}", "--out", "OUT"], "--out", "folder", True),
    ("train --out", ["train", "--data", "{db}", "--backbone", "tiny", "--epochs", "1", "--no-progress", "--out",
                     "OUT"], "--out", "folder", False),
    ("distill --out", ["distill", "--teacher", "{model}", "--data", "{db}", "--out", "OUT"], "--out", "folder",
     False),
    ("bench --json", ["bench", "{model}", "--windows", "1", "--json", "OUT"], "--json", "file", True),
    ("bench --plot", ["bench", "{model}", "--windows", "1", "--plot", "OUT"], "--plot", "file", True),
    ("explain --out", ["explain", "{run}", "{wav}", "--out", "OUT"], "--out", "file", True),
    ("evaluate --embeddings", ["evaluate", "{model}", "--data", "{db}", "--embeddings", "OUT"], "--embeddings",
     "file", True),
    ("data synth", ["data", "synth", "OUT", "-n", "4"], "DIR", "folder", True),
    ("demo --out", ["demo", "--data", "{db}", "--quick", "--out", "OUT"], "--out", "folder", True),
]
# the input each command's output may not be: a file where the command reads one, else its model or database
SAME_AS_INPUT = {"classify --jsonl": "wav", "stream --jsonl": "wav", "stream --record": "flac",
                 "stream --report": "wav", "report --out": "wav", "verify --json": "model", "calibrate --out": "recs",
                 "export --out": "run", "train --out": "db", "distill --out": "model", "bench --json": "model",
                 "bench --plot": "model", "explain --out": "wav", "evaluate --embeddings": "model",
                 "demo --out": "db"}


def _argv(template: list[str], env: dict[str, Path], out: Path) -> list[str]:
    return [str(out) if a == "OUT" else a.format(**{k: str(v) for k, v in env.items()}) for a in template]


def _options(has_overwrite: bool) -> list[tuple[str, ...]]:
    return [(), ("--overwrite",)] if has_overwrite else [()]


@pytest.mark.parametrize("name", list(SAME_AS_INPUT))
def test_an_output_equal_to_an_input_is_refused(env: dict[str, Path], name: str) -> None:
    template, option, _, has_overwrite = next(c[1:] for c in COMMANDS if c[0] == name)
    target = env[SAME_AS_INPUT[name]]
    before = _snapshot(target)
    for extra in _options(has_overwrite):
        result = _cli(*_argv(template, env, target), *extra)
        _refused(result, option, target)
        assert re.search(r"input|the run directory|is MODEL_DIR", result.output), result.output
    assert _snapshot(target) == before


@pytest.mark.parametrize("name,template,option,kind,has_overwrite", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_a_foreign_file_is_refused_and_left_byte_identical(env: dict[str, Path], tmp_path: Path, name: str,
                                                           template: list[str], option: str, kind: str,
                                                           has_overwrite: bool) -> None:
    suffix = {"file": ".png" if option in ("--plot", "--embeddings") or name == "explain --out" else ".json",
              "flac": ".flac", "folder": ""}[kind]
    targets = [tmp_path / f"mine{suffix}"]
    targets[0].write_bytes(FOREIGN)
    if kind == "folder":  # a folder of the user's files, too
        targets.append(tmp_path / "my-folder")
        targets[1].mkdir()
        (targets[1] / "notes.txt").write_bytes(FOREIGN)
        (targets[1] / "index.html").write_bytes(FOREIGN)
    for target in targets:
        before = _snapshot(target)
        for extra in _options(has_overwrite):
            if kind == "flac" and not extra:
                continue  # without --overwrite, --record keeps an existing file and records to NAME-2.flac
            result = _cli(*_argv(template, env, target), *extra)
            _refused(result, option, target)
            assert "not written by edge-lung" in result.output or "not a directory" in result.output, result.output
        assert _snapshot(target) == before


# --------------------------------------------------------------------------- the battery's cases, one by one

def test_jsonl_onto_the_input_recording_is_refused(env: dict[str, Path], tmp_path: Path) -> None:
    """BAD 1: `classify M self.wav --jsonl self.wav` destroyed the recording."""
    rec = tmp_path / "self.wav"
    rec.write_bytes(env["wav"].read_bytes())
    result = _cli("classify", env["model"], rec, "--jsonl", rec)
    _refused(result, "--jsonl", rec)
    assert "is one of the input files" in result.output and "choose another path" in result.output
    assert rec.read_bytes() == env["wav"].read_bytes()


@pytest.mark.parametrize("command", ["classify", "stream"])
def test_jsonl_replaces_only_its_own_results_and_only_with_overwrite(env: dict[str, Path], tmp_path: Path,
                                                                     command: str) -> None:
    """BAD 1: a previous session's results and a FLAC recording were overwritten silently."""
    run = (["classify", env["model"], env["wav"]] if command == "classify"
           else ["stream", env["model"], "--replay", env["wav"], "--quiet"])
    flac = tmp_path / "other.flac"
    flac.write_bytes(env["flac"].read_bytes())
    for extra in ((), ("--overwrite",)):
        _refused(_cli(*run, "--jsonl", flac, *extra), "--jsonl", flac)
    assert flac.read_bytes() == env["flac"].read_bytes()
    out = tmp_path / "results.jsonl"
    assert _cli(*run, "--jsonl", out).exit_code == 0
    first = out.read_bytes()
    result = _cli(*run, "--jsonl", out)
    _refused(result, "--jsonl", out)
    assert "exists; add --overwrite to replace it" in result.output
    assert out.read_bytes() == first
    assert _cli(*run, "--jsonl", out, "--overwrite").exit_code == 0
    assert json.loads(out.read_text().splitlines()[0])["type"]


def _real_layout(db: Path) -> None:
    """An ICBHI-layout database that edge-lung did not write (the real one's file names)."""
    audio = db / "ICBHI_final_database"
    audio.mkdir(parents=True)
    stems = [f"10{k}_1b1_Al_sc_Meditron" for k in range(3)]
    for stem in stems:
        write_signal(audio / f"{stem}.wav", 2.0, 4000, seed=len(stem))
        (audio / f"{stem}.txt").write_text("0.1\t1.5\t0\t0\n")
    (db / "ICBHI_challenge_train_test.txt").write_text("".join(f"{s}\ttrain\n" for s in stems))
    (db / "ICBHI_Challenge_diagnosis.txt").write_text("".join(f"10{k}\tURTI\n" for k in range(3)))


def test_data_synth_never_replaces_a_real_database(tmp_path: Path) -> None:
    """BAD 2: `data synth DIR` onto a real database replaced its split and diagnosis files, exit 0."""
    real = tmp_path / "icbhi"
    _real_layout(real)
    before = _snapshot(real)
    for extra in ((), ("--overwrite",)):
        result = _cli("data", "synth", real, "-n", "4", *extra)
        _refused(result, "DIR", real)
        assert "not written by edge-lung" in result.output
    assert _snapshot(real) == before


def test_data_synth_replaces_its_own_database_whole_with_overwrite(tmp_path: Path) -> None:
    db = tmp_path / "synth"
    db.mkdir()  # empty: written without --overwrite
    assert _cli("data", "synth", db, "-n", "6").exit_code == 0
    result = _cli("data", "synth", db, "-n", "4")
    _refused(result, "DIR", db)
    assert "add --overwrite" in result.output
    assert len(list((db / "ICBHI_final_database").glob("*.wav"))) == 6
    result = _cli("data", "synth", db, "-n", "4", "--overwrite")
    assert result.exit_code == 0, result.output
    assert len(list((db / "ICBHI_final_database").glob("*.wav"))) == 4  # no recording of the old one left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synth"]  # no temp folder left


def test_report_pages_are_unique_per_input_path(env: dict[str, Path], tmp_path: Path) -> None:
    """BAD 4: two recordings named rec.wav from two folders shared one rec.html holding the second."""
    recs = []
    for k, folder in enumerate(("ward-a", "ward-b")):
        (tmp_path / folder).mkdir()
        recs.append(tmp_path / folder / "rec.wav")
        write_signal(recs[-1], 4.0, RATE, seed=10 + k)
    out = tmp_path / "report"
    result = _cli("report", env["model"], *recs, "--out", out, *COARSE)
    assert result.exit_code == 0 and "2 recordings reported" in result.output, result.output
    links = re.findall(r'href="([^"]+\.html)"', (out / "index.html").read_text())
    assert len(links) == 2 and len(set(links)) == 2, links
    pages = [(out / link).read_text() for link in links]
    assert pages[0] != pages[1]
    assert sorted(p.name for p in out.glob("*.html")) == sorted(["index.html", *links])


def test_report_out_keeps_a_users_folder_and_replaces_its_own_only_with_overwrite(env: dict[str, Path],
                                                                                   tmp_path: Path) -> None:
    """MINOR: `report --out` into an existing folder replaced the user's index.html silently."""
    mine = tmp_path / "site"
    mine.mkdir()
    (mine / "index.html").write_bytes(FOREIGN)
    for extra in ((), ("--overwrite",)):
        _refused(_cli("report", env["model"], env["wav"], "--out", mine, *extra), "--out", mine)
    assert _snapshot(mine) == {"index.html": FOREIGN}
    out, rec = tmp_path / "report", tmp_path / "short.wav"
    write_signal(rec, 3.0, RATE)
    assert _cli("report", env["model"], rec, "--out", out, *COARSE).exit_code == 0
    result = _cli("report", env["model"], rec, "--out", out, *COARSE)
    _refused(result, "--out", out)
    assert "add --overwrite" in result.output
    assert _cli("report", env["model"], rec, "--out", out, "--overwrite", *COARSE).exit_code == 0


def test_record_into_a_missing_folder_is_refused_before_the_session(env: dict[str, Path], tmp_path: Path) -> None:
    """MINOR: --record into a folder that does not exist ran the session and exited 0 with nothing recorded."""
    record = tmp_path / "no" / "such" / "take.flac"
    events = tmp_path / "events.jsonl"
    result = _cli("stream", env["model"], "--replay", env["wav"], "--quiet", "--record", record, "--jsonl", events)
    _refused(result, "--record", record)
    assert "does not exist" in result.output
    assert not events.exists()  # refused before the session started


def test_distill_names_its_own_options(env: dict[str, Path], tmp_path: Path) -> None:
    """MINOR: distill advised --resume, which it does not have, and called --student banana --backbone banana."""
    pytest.importorskip("torch")
    result = _cli("distill", "--teacher", env["model"], "--data", env["db"], "--out", env["run"])
    _refused(result, "--out", env["run"])
    assert "--resume" not in result.output
    result = _cli("distill", "--teacher", env["model"], "--data", env["db"], "--student", "banana", "--out",
                  tmp_path / "student", "--epochs", "1", "--no-progress")
    assert result.exit_code == 2, result.output
    assert "--student banana" in result.output and "--backbone" not in result.output, result.output


def test_verify_json_replaces_its_own_report_only_with_overwrite(env: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "verify.json"
    assert _cli("verify", env["model"], "--json", out).exit_code == 0
    first = out.read_bytes()
    result = _cli("verify", env["model"], "--json", out)
    _refused(result, "--json", out)
    assert "add --overwrite" in result.output and out.read_bytes() == first
    assert _cli("verify", env["model"], "--json", out, "--overwrite").exit_code == 0
    assert json.loads(out.read_text())["passed"] is True
