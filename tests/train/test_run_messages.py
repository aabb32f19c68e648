"""Messages that name what failed when a run directory is missing or holds no weights (issue #10, item 11)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge_lung.cli import app
from edge_lung.config import LABELS, FeatureConfig

pytest.importorskip("torch")


def _run_without_weights(run: Path, adapter: str) -> Path:
    """A run folder whose config.json says training selected epoch 1, with no model/ beside it."""
    run.mkdir()
    config = {"labels": list(LABELS), "features": FeatureConfig().to_dict(), "data": str(run), "adapter": adapter,
              "best": {"epoch": 1, "val": {}}, "train": {"val_fraction": 0.2, "val_seed": 0}}
    (run / "config.json").write_text(json.dumps(config))
    return run


@pytest.mark.parametrize("adapter", ["lung", "none"])
def test_run_dir_without_weights_says_so(tmp_path: Path, adapter: str) -> None:
    run = _run_without_weights(tmp_path / "run", adapter)
    runner = CliRunner()
    for args in (["evaluate", str(run)], ["export", str(run), "--out", str(tmp_path / "model")]):
        result = runner.invoke(app, args)
        assert result.exit_code != 0
        assert "Repo id" not in result.output, result.output
        assert f"{run}: no trained weights" in result.output and "model/backbone" in result.output, result.output
    assert not (tmp_path / "model").exists()


def test_run_dir_with_an_empty_model_folder_says_so(tmp_path: Path) -> None:
    from edge_lung.train.model import RunError, load_run

    run = _run_without_weights(tmp_path / "run", "lung")
    (run / "model" / "backbone").mkdir(parents=True)
    with pytest.raises(RunError, match=r"no trained weights.*model/backbone"):
        load_run(run)


def test_evaluate_on_a_missing_directory_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    result = CliRunner().invoke(app, ["evaluate", str(missing)])
    assert result.exit_code == 2
    assert f"{missing}: no such directory" in result.output, result.output
    assert "edge-lung train" in result.output and "edge-lung export" in result.output
