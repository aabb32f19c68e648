"""fileio: the one temp-then-replace helper for directories (export's MODEL_DIR, training's saved model), and
the writing policy every command's output goes through (`check_output`, issue 26)."""

from __future__ import annotations

import os

import pytest

from edge_lung.config import parse_int_list, reject_unknown_keys
from edge_lung.fileio import (
    EVENTS_JSONL,
    FLAC_RECORDING,
    OutputKind,
    OutputRefused,
    check_output,
    has_marker,
    is_event_jsonl,
    json_keys,
    json_report,
    marked_folder,
    replaced_dir,
    write_marker,
)

FOREIGN = b"the user's own bytes\n"


def test_replaced_dir_swaps_in_the_new_directory(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with replaced_dir(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target and not any(tmp.iterdir())
        (tmp / "new.txt").write_text("new")
        assert (target / "old.txt").read_text() == "old"  # untouched until the block succeeds
    assert sorted(os.listdir(target)) == ["new.txt"]
    assert os.listdir(tmp_path) == ["model"]  # neither the temp nor the old directory is left


def test_replaced_dir_failure_leaves_the_target_as_it_was(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="disk full"), replaced_dir(target) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("disk full")
    assert sorted(os.listdir(target)) == ["old.txt"]
    assert os.listdir(tmp_path) == ["model"]


def test_core_parsers_name_the_option_and_the_bad_keys():
    assert parse_int_list("1, 2,", "--threads") == (1, 2)
    with pytest.raises(ValueError, match=r"--seeds: expected comma-separated whole numbers .* got '1,x'"):
        parse_int_list("1,x", "--seeds")
    with pytest.raises(ValueError, match=r"preset.json: unknown preset keys \['typo'\]; expected a subset of"):
        reject_unknown_keys({"name": 1, "typo": 2}, {"name"}, "preset.json", "preset keys")
    reject_unknown_keys({"name": 1}, {"name", "other"}, "x")


def test_check_output_allows_new_and_empty_paths_and_refuses_a_missing_folder(tmp_path):
    check_output(tmp_path / "new.jsonl", "--jsonl", EVENTS_JSONL)
    (tmp_path / "empty.jsonl").touch()
    check_output(tmp_path / "empty.jsonl", "--jsonl", EVENTS_JSONL)  # nothing in it to lose
    folder = marked_folder("a report folder", "report")
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty", "--out", folder)
    check_output(tmp_path / "a" / "b", "--out", folder)  # a folder's parents are created by its writer
    with pytest.raises(OutputRefused, match=r"--jsonl .*no/x.jsonl: folder .*no does not exist"):
        check_output(tmp_path / "no" / "x.jsonl", "--jsonl", EVENTS_JSONL)
    with pytest.raises(OutputRefused, match="is a directory; expected a file path"):
        check_output(tmp_path / "empty", "--jsonl", EVENTS_JSONL)


def test_check_output_replaces_only_its_own_kind_and_only_with_overwrite(tmp_path):
    ours, theirs = tmp_path / "ours.jsonl", tmp_path / "theirs.jsonl"
    ours.write_text('{"type": "window", "index": 0}\n')
    theirs.write_bytes(FOREIGN)
    with pytest.raises(OutputRefused, match=r"--jsonl .*ours.jsonl: exists; add --overwrite to replace it"):
        check_output(ours, "--jsonl", EVENTS_JSONL)
    check_output(ours, "--jsonl", EVENTS_JSONL, overwrite=True)
    for overwrite in (False, True):
        with pytest.raises(OutputRefused, match=r"theirs.jsonl: exists and was not written by edge-lung .*"
                                                r"move it or choose another path"):
            check_output(theirs, "--jsonl", EVENTS_JSONL, overwrite)
    with pytest.raises(OutputRefused, match="pass --resume"):
        check_output(ours, "--out", EVENTS_JSONL, replace_hint="pass --resume")
    assert theirs.read_bytes() == FOREIGN


def test_check_output_refuses_an_input_however_it_is_named(tmp_path):
    rec = tmp_path / "rec.wav"
    rec.write_bytes(FOREIGN)
    (tmp_path / "link.wav").symlink_to(rec)
    os.link(rec, tmp_path / "hard.wav")
    for out in (rec, tmp_path / "link.wav", tmp_path / "hard.wav", tmp_path / "." / "rec.wav"):
        with pytest.raises(OutputRefused, match=r"--jsonl .*: is one of the input files .*choose another path"):
            check_output(out, "--jsonl", EVENTS_JSONL, overwrite=True, inputs=(None, "-", rec))
    folder = marked_folder("a report folder", "report")
    with pytest.raises(OutputRefused, match="holds the input"):
        check_output(tmp_path, "--out", folder, True, inputs=(rec,))
    with pytest.raises(OutputRefused, match="is inside the input folder"):
        check_output(tmp_path / "report", "--out", folder, True, inputs=(tmp_path,))
    check_output(tmp_path / "out.jsonl", "--jsonl", EVENTS_JSONL, inputs=(tmp_path,))  # a file beside the input
    assert rec.read_bytes() == FOREIGN


def test_a_folder_kind_needs_its_marker_and_no_foreign_entry(tmp_path):
    kind = marked_folder("a synthetic database", "data synth", owns=lambda p: p.name in ("a.wav", ".edge-lung"))
    db = tmp_path / "db"
    db.mkdir()
    (db / "a.wav").write_bytes(FOREIGN)
    with pytest.raises(OutputRefused, match="not written by edge-lung"):
        check_output(db, "DIR", kind, overwrite=True)
    write_marker(db, "data synth")
    assert has_marker(db, "data synth") and not has_marker(db, "report")
    check_output(db, "DIR", kind, overwrite=True)
    (db / "NOTES.txt").write_bytes(FOREIGN)
    with pytest.raises(OutputRefused, match="holds NOTES.txt, which edge-lung did not write"):
        check_output(db, "DIR", kind, overwrite=True)
    (tmp_path / "file").write_bytes(FOREIGN)
    with pytest.raises(OutputRefused, match="exists and is not a directory"):
        check_output(tmp_path / "file", "DIR", kind, overwrite=True)


def test_recognisers_read_little_and_accept_only_their_kind(tmp_path):
    path = tmp_path / "x"
    for content, event in ((b'{"type":"window"}\n{"type":"summary"}\n', True), (b'{"type": 3}\n', False),
                           (b"[1, 2]\n", False), (b"fLaC\x00\x00", False), (b"", False)):
        path.write_bytes(content)
        assert is_event_jsonl(path) is event, content
    path.write_bytes(b"fLaC\x00\x00\x00\x22")
    assert FLAC_RECORDING.recognise(path)
    path.write_text('{"passed": true, "checks": [], "model_dir": "m"}')
    verify = json_report("a verify report", ("passed", "checks"))
    assert verify.recognise(path) and json_keys(path) == {"passed", "checks", "model_dir"}
    path.write_text('{"passed": true}')
    assert not verify.recognise(path)
    assert not OutputKind("x", False, is_event_jsonl).recognise(tmp_path / "missing")
