"""Training stops at the first non-finite loss and never saves that model (issue #10, item 6).

The reader refuses NaN / inf audio (tests/data/test_bad_data.py); this is the second line of defence for
anything else that makes the loss non-finite: here one train cycle's samples are made NaN after
decoding, where no reader can see them.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edge_lung.cli import app

pytest.importorskip("torch")


@pytest.mark.slow
def test_non_finite_loss_stops_training_naming_the_batch(synth_db: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import edge_lung.data.devices as devices  # training reads its splits through devices.load_run_split

    decode = devices.load_cycles
    poisoned: list = []

    def load_cycles(db, splits=("train",), *args, **kwargs):
        cycles = decode(db, splits, *args, **kwargs)
        if tuple(splits) == ("train",):
            bad = cycles[3]
            cycles[3] = dataclasses.replace(bad, audio=np.full_like(bad.audio, np.nan))
            poisoned.append(bad)
        return cycles

    monkeypatch.setattr(devices, "load_cycles", load_cycles)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train", "--data", str(synth_db), "--out", str(run), "--backbone", "tiny", "--adapter", "lung",
        "--adapter-width", "8", "--epochs", "1", "--batch-size", "8", "--no-progress", "--num-threads", "2",
    ])
    assert poisoned, "the train split was never loaded"
    bad = poisoned[0]
    assert result.exit_code == 2, result.output
    assert "non-finite" in result.output and "loss" in result.output, result.output
    assert f"{bad.recording} cycle {bad.index}" in result.output, result.output
    assert not (run / "model" / "adapter").exists()  # no trained model saved
    config = json.loads((run / "config.json").read_text())
    assert config["best"] is None and config["status"].startswith("failed")
