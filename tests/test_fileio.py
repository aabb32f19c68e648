"""fileio: the one temp-then-replace helper for directories (export's MODEL_DIR, training's saved model)."""

from __future__ import annotations

import os

import pytest

from edge_lung.config import parse_int_list, reject_unknown_keys
from edge_lung.fileio import replaced_dir


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
