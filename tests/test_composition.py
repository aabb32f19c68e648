"""Composition: every recipe and the default student through every stage a user chains, as the CLI runs them.

train -> export FP32 and INT8 (dynamic and static) -> verify -> classify (model and e2e graphs) -> stream --replay
-> report -> calibrate -> classify the calibrated copy -> evaluate -> bench, on the shared 24-recording synthetic
database, 1 epoch on 24 cycles each. This is the test that fails when two features stop fitting together (issue 24:
`icbhi-robust` trained fine and exported nowhere). A new recipe or option joins `RECIPES` or `chain`.

Cost (2-core VM, idle): about 25-40 s per recipe, 2-3 minutes in all; marked slow, CI runs it.
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

QUICK = ["--epochs", "1", "--max-cycles", "24", "--batch-size", "8", "--num-threads", "2", "--no-progress"]
RECIPES = {
    "default": ["--backbone", "tiny", "--adapter-width", "8"],
    "icbhi-robust": ["--recipe", "icbhi-robust", "--backbone", "tiny", "--adapter-width", "8"],
    "icbhi-descriptors": ["--recipe", "icbhi-descriptors", "--val-devices", "Meditron"],
}
"""Recipe name -> its `edge-lung train` options (the student is distilled from the default run)."""


def cli(*args: str | Path) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, f"edge-lung {' '.join(map(str, args))}\n{result.output}"
    return result.output


@pytest.fixture(scope="module")
def recordings(synth_db: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(one annotated test recording, a folder of 6 unannotated recordings for calibrate)."""
    wavs = sorted((synth_db / "ICBHI_final_database").glob("*.wav"))
    folder = tmp_path_factory.mktemp("calibration")
    for wav in wavs[:6]:
        shutil.copy(wav, folder / wav.name)
    return wavs[-1], folder


@pytest.fixture(scope="module")
def default_run(synth_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("default") / "run"
    cli("train", "--data", synth_db, "--out", run, *RECIPES["default"], *QUICK)
    return run


def train_run(recipe: str, synth_db: Path, default_run: Path, work: Path) -> Path:
    if recipe == "default":
        return default_run
    run = work / "run"
    if recipe == "student":
        cli("distill", "--teacher", default_run, "--data", synth_db, "--out", run, *QUICK)
    else:
        cli("train", "--data", synth_db, "--out", run, *RECIPES[recipe], *QUICK)
    return run


def chain(model: Path, synth_db: Path, recordings: tuple[Path, Path], work: Path) -> dict:
    """Every device-side stage on one exported model directory; returns what the stages said."""
    wav, folder = recordings
    manifest = json.loads((model / "manifest.json").read_text())
    has_e2e = "skipped" not in manifest.get("e2e", {"skipped": "absent"})
    cli("verify", model)
    cli("classify", model, wav, "--jsonl", work / f"{model.name}.jsonl")
    if has_e2e:
        cli("classify", model, wav, "--graph", "e2e")
    cli("stream", model, "--replay", wav, "--jsonl", work / f"{model.name}-stream.jsonl", "--quiet")
    cli("report", model, wav, "--out", work / f"{model.name}-report")
    calibrated = work / f"{model.name}-calibrated"
    cli("calibrate", model, "--recordings", folder, "--out", calibrated, "--min-audio", "10")
    cli("classify", calibrated, wav)
    evaluation = json.loads(cli("evaluate", model, "--data", synth_db, "--split", "test", "--json"))
    cli("bench", model, "--threads", "1", "--windows", "3", "--warmup", "1",
        "--graph", "model,e2e" if has_e2e else "model", "--json", work / f"{model.name}-bench.json")
    return {"e2e": has_e2e, "score": evaluation["score"]}


@pytest.mark.parametrize("recipe", [*RECIPES, "student"])
def test_every_recipe_composes_from_train_to_bench(recipe, synth_db, default_run, recordings, tmp_path):
    run = train_run(recipe, synth_db, default_run, tmp_path)
    exports = {"fp32": [], "dynamic": ["--int8", "--quant", "dynamic"],
               "static": ["--int8", "--quant", "static", "--calibration-size", "16"]}
    said = {}
    for name, options in exports.items():
        model = tmp_path / name
        output = cli("export", run, "--out", model, "--parity-size", "16", "--threads", "2", *options)
        if name != "fp32":  # the last line and the card say whether INT8 is the faster file on this machine
            assert "ms per window" in output.strip().splitlines()[-1] and "FP32" in output.strip().splitlines()[-1]
            assert "Which file is faster on this machine class" in (model / "model_card.md").read_text()
            speed = json.loads((model / "manifest.json").read_text())["parity"]["speed"]
            assert speed["fp32_ms_p50"] > 0 and speed["int8_ms_p50"] > 0 and speed["faster"] in ("int8", "fp32", "same")
        said[name] = chain(model, synth_db, recordings, tmp_path)
    # every fbank front end has its end-to-end graph; the descriptors say they have none
    assert all(s["e2e"] == (recipe != "icbhi-descriptors") for s in said.values()), said
    assert all(0.0 <= s["score"] <= 100.0 for s in said.values())
