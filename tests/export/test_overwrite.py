"""`edge-lung export --overwrite` replaces only an edge-lung model directory (issue #10, item 1).

It once deleted whatever `--out` named: a folder of the user's own files, the training run itself,
or the run's parent. Each case runs the real CLI on a copy of a small trained run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge_lung.cli import app

pytest.importorskip("torch")
pytestmark = pytest.mark.slow


@pytest.fixture()
def run(tiny_run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "runs" / "run"
    shutil.copytree(tiny_run, dst)
    return dst


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _export(run: Path, out: Path, *extra: str):
    return CliRunner().invoke(app, ["export", str(run), "--out", str(out), "--parity-size", "4", *extra])


@pytest.mark.parametrize("manifest", [None, '{"name": "my web app", "start_url": "/"}'])
def test_overwrite_refuses_a_folder_of_the_users_files(run: Path, tmp_path: Path, manifest: str | None) -> None:
    mine = tmp_path / "my-files"
    (mine / "photos").mkdir(parents=True)
    (mine / "notes.txt").write_text("patient 12: follow up")
    (mine / "photos" / "a.jpg").write_bytes(b"\xff\xd8jpeg")
    if manifest is not None:  # manifest.json is a common name: another tool's is not ours to delete
        (mine / "manifest.json").write_text(manifest)
    before = _snapshot(mine)
    result = _export(run, mine, "--overwrite")
    assert result.exit_code == 1, result.output
    assert f"--out {mine}" in result.output and "not an edge-lung model directory" in result.output, result.output
    assert _snapshot(mine) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my-files", "runs"]  # no temp left behind


@pytest.mark.parametrize("where", ["run", "parent", "inside", "link"])
def test_out_that_is_contains_or_is_inside_the_run_is_refused(run: Path, tmp_path: Path, where: str) -> None:
    out = {"run": run, "parent": run.parent, "inside": run / "model", "link": tmp_path / "link"}[where]
    if where == "link":
        out.symlink_to(run, target_is_directory=True)
    before = _snapshot(run)
    for extra in (("--overwrite",), ()):
        result = _export(run, out, *extra)
        assert result.exit_code == 1, result.output
        assert f"--out {out}" in result.output and "the run directory" in result.output, result.output
    assert _snapshot(run) == before
    assert sorted(p.name for p in run.parent.iterdir()) == ["run"]


def test_out_new_folder_inside_the_run_is_refused(run: Path) -> None:
    result = _export(run, run / "export")
    assert result.exit_code == 1 and "the run directory" in result.output, result.output
    assert not (run / "export").exists()


def test_overwrite_replaces_an_edge_lung_model_dir(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    assert _export(run, out).exit_code == 0
    first = json.loads((out / "manifest.json").read_text())
    result = _export(run, out)
    assert result.exit_code == 1 and "add --overwrite" in result.output  # still refused without the flag
    result = _export(run, out, "--overwrite", "--int8")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["feature_stats.json", "manifest.json", "model.e2e.onnx",
                                                     "model.int8.onnx", "model_card.md", "parity.json",
                                                     "test_vectors.npz"]
    assert json.loads((out / "manifest.json").read_text())["model_file"] != first["model_file"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "runs"]


def test_overwrite_never_deletes_a_users_file_inside_a_model_dir(run: Path, tmp_path: Path) -> None:
    """Issue 26 (MINOR): `export --overwrite` deleted the user's NOTES.txt in the model directory without a word.
    Decided: refused, naming the file; the user moves it (export never keeps or deletes what it did not write)."""
    out = tmp_path / "model"
    assert _export(run, out).exit_code == 0
    (out / "NOTES.txt").write_text("shipped to ward 3 on Monday")
    before = _snapshot(out)
    result = _export(run, out, "--overwrite", "--int8")
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert f"--out {out}" in text and "holds NOTES.txt, which edge-lung did not write" in text, result.output
    assert _snapshot(out) == before
    (out / "NOTES.txt").unlink()
    assert _export(run, out, "--overwrite", "--int8").exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "runs"]
