"""`edge-lung adapt` (issue 27): a SPRSound-layout and a manifest database through `train`, `evaluate` and `adapt`;
the minimums refused with the reason; the test split never read; `report` -> filled corrections.csv -> `adapt`
moves the corrected windows' decisions towards the corrections."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edge_lung.cli import app
from edge_lung.config import LABELS
from edge_lung.data.icbhi import Database, load_cycles
from edge_lung.scoring import stack_features
from edge_lung.train.adapt import AdaptError, adapt, logits_of, paired_gain, patient_folds
from edge_lung.train.adapt_config import AdaptConfig
from edge_lung.train.model import load_run
from tests.data.test_manifest import make_manifest, make_sprsound, write_events

DESCRIPTORS = ["--recipe", "icbhi-descriptors", "--epochs", "3", "--normal-margin", "none", "--no-progress",
               "--num-threads", "1"]


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def spr_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sprsound(tmp_path_factory.mktemp("sprsound"))


@pytest.fixture(scope="module")
def manifest_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_manifest(tmp_path_factory.mktemp("manifest"), patients=5)


@pytest.fixture(scope="module")
def spr_run(tmp_path_factory: pytest.TempPathFactory, spr_db: Path) -> Path:
    """The descriptors' linear model trained by `edge-lung train` on the SPRSound-layout fixture."""
    out = tmp_path_factory.mktemp("runs") / "spr"
    invoke("train", "--data", spr_db, "--out", out, *DESCRIPTORS)
    return out


@pytest.mark.slow
def test_sprsound_run_records_its_layout_and_evaluates(spr_run: Path, spr_db: Path) -> None:
    config = json.loads((spr_run / "config.json").read_text())
    assert config["data_layout"]["layout"] == "sprsound" and config["data_layout"]["label_map"]["stridor"] == "wheeze"
    output = invoke("evaluate", spr_run, "--split", "test")
    assert "ICBHI official" in output and "on 8 cycles" in output  # the one test recording's events


@pytest.mark.slow
def test_adapt_on_a_manifest_makes_an_ordinary_run(spr_run: Path, manifest_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "adapted"
    output = invoke("adapt", spr_run, "--data", manifest_db, "--out", out, "--from-scratch", "--num-threads", "1")
    assert "before" in output and "after" in output and "always-normal scores 50" in output
    config = json.loads((out / "config.json").read_text())
    cv = config["adapted"]["cross_validation"]
    assert cv["scheme"] == "leave-one-patient-out" and cv["patients"] == 5 and cv["folds"] == 5
    for name in ("before", "after", "from_scratch"):
        low, high = cv[name]["ci95"]["score"]
        assert low <= cv[name]["score"] <= high, name
    assert config["adapted"]["data_layout"]["layout"] == "manifest" and config["adapted"]["mode"] == "head"
    model, _ = load_run(out)  # an ordinary run: load_run (export, evaluate) takes it
    output = invoke("evaluate", out, "--split", "val")
    assert "ICBHI official" in output
    source, _ = load_run(spr_run)
    changed = [name for (name, a), (_, b) in zip(model.state_dict().items(), source.state_dict().items(), strict=True)
               if not np.array_equal(a.numpy(), b.numpy())]
    assert changed and all(n.startswith(("model.classifier.", "model.features.1.")) for n in changed), changed


@pytest.mark.slow
def test_adapt_never_reads_the_test_split(spr_run: Path, spr_db: Path, tmp_path: Path) -> None:
    adapt(AdaptConfig(str(spr_run), str(spr_db), str(tmp_path / "a"), folds=3, num_threads=1), say=lambda _: None)
    adapted = json.loads((tmp_path / "a" / "config.json").read_text())["adapted"]
    test_patients = {r.patient for r in Database.scan(spr_db).split_recordings("test")}
    assert test_patients and not test_patients & set(adapted["patients"])
    assert adapted["cross_validation"]["scheme"] == "3 patient folds" and adapted["splits_used"] == ["train", "val"]


@pytest.mark.slow
def test_adapt_refuses_too_little_data_and_model_dirs(spr_run: Path, tmp_path: Path) -> None:
    small = make_manifest(tmp_path / "small", patients=2)
    short = r"2 patients \(expected >= 3\), 8 normal cycles \(expected >= 20\), 10 abnormal"
    with pytest.raises(AdaptError, match=short):
        adapt(AdaptConfig(str(spr_run), str(small), str(tmp_path / "x")), say=lambda _: None)
    result = CliRunner().invoke(app, ["adapt", str(spr_run), "--data", str(small), "--out", str(tmp_path / "y")])
    assert result.exit_code == 2 and "too little labelled data" in result.output
    model_dir = tmp_path / "md"
    model_dir.mkdir()
    (model_dir / "manifest.json").write_text("{}")
    with pytest.raises(AdaptError, match="MODEL_DIR"):
        adapt(AdaptConfig(str(model_dir), str(small), str(tmp_path / "z")), say=lambda _: None)


@pytest.mark.slow
def test_an_ast_with_the_lung_adapter_adapts_its_adapters_and_head(spr_db: Path, manifest_db: Path,
                                                                    tmp_path: Path) -> None:
    from edge_lung.train.config import TrainConfig
    from edge_lung.train.loop import train

    run = train(TrainConfig(data=str(spr_db), out=str(tmp_path / "ast"), backbone="tiny", adapter="lung", epochs=1,
                            batch_size=8, max_cycles=16, optimizer="adamw", progress=False, num_threads=1))
    adapt(AdaptConfig(str(run), str(manifest_db), str(tmp_path / "a"), epochs=1, folds=2, num_threads=1),
          say=lambda _: None)
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["adapter"] == "lung" and config["adapted"]["mode"] == "adapter"
    backbone = "model/backbone/model.safetensors"
    assert (tmp_path / "a" / backbone).read_bytes() == (run / backbone).read_bytes()  # the backbone stays frozen
    assert (tmp_path / "a" / "model/adapter").is_dir()
    load_run(tmp_path / "a")


def test_patient_folds_partition_the_patients() -> None:
    patients = [f"p{i}" for i in range(7)]
    assert sorted(sum(patient_folds(patients, 0, 0), [])) == patients and len(patient_folds(patients, 0, 0)) == 7
    folds = patient_folds(patients, 3, 1)
    assert len(folds) == 3 and sorted(sum(folds, [])) == patients


def test_paired_gain_is_zero_for_the_same_model_and_positive_for_a_better_one() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    patients = [f"p{i % 7}" for i in range(200)]
    noisy = np.where(rng.random(200) < 0.5, y, rng.integers(0, 4, 200))
    same = paired_gain(y, noisy, noisy, patients, 200, 0)
    assert same["score"] == 0 and same["ci95"] == [0.0, 0.0]
    better = paired_gain(y, np.zeros_like(y), y, patients, 200, 0)  # always-normal -> perfect: +50 on every draw
    assert better["score"] == pytest.approx(50.0) and better["ci95"][0] == pytest.approx(50.0)


# --------------------------------------------------------------------------- corrections from the field


@pytest.mark.slow
def test_report_corrections_adapt_round_trip(spr_run: Path, tmp_path: Path) -> None:
    """A new stethoscope adds clicks to every normal breath: the model calls them crackles, a clinician corrects
    them to normal in corrections.csv, and the run adapted on that file decides them normal more often."""
    pytest.importorskip("onnx")
    field = tmp_path / "field"
    for p in range(4):  # two patients with 'normal' breaths full of device clicks, two with wheezes
        write_events(field / f"pt{p}.wav", ["crackle" if p < 2 else "wheeze"] * 12, seed=200 + p)
    model_dir = tmp_path / "md"
    invoke("export", spr_run, "--out", model_dir)
    invoke("report", model_dir, field, "--out", tmp_path / "report", "--threshold", "0.5")
    path = tmp_path / "report" / "corrections.csv"
    rows = list(csv.DictReader(path.open()))
    assert rows and {r["true_label"] for r in rows} == {""} and {r["model_label"] for r in rows} <= set(LABELS)
    for r in rows:  # the clinician's corrections
        r["true_label"] = "normal" if Path(r["file"]).stem in ("pt0", "pt1") else "wheeze"
        r["patient"] = Path(r["file"]).stem
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "adapted"
    invoke("adapt", spr_run, "--data", path, "--out", out, "--num-threads", "1")
    db = Database.scan(path)
    before_model, config = load_run(spr_run)
    after_model, _ = load_run(out)
    features = before_model_features(db, config)
    y = np.array([c.label for c in load_cycles(db, ("train", "val"), 16000)])
    agree_before = (logits_of(before_model, features).argmax(1) == y).mean()
    agree_after = (logits_of(after_model, features).argmax(1) == y).mean()
    assert agree_before < 0.9, f"the field windows were already decided as corrected ({agree_before:.2f})"
    assert agree_after > agree_before + 0.1, (agree_before, agree_after)
    invoke("export", out, "--out", tmp_path / "md2")  # an ordinary run: export takes it, the card says what it is
    card = (tmp_path / "md2" / "model_card.md").read_text()
    assert "adapted (head) on" in card and "leave-one-patient-out Score" in card


def before_model_features(db: Database, config: dict) -> np.ndarray:
    from edge_lung.config import FeatureConfig

    features = FeatureConfig.from_dict(config["features"])
    return stack_features(load_cycles(db, ("train", "val"), features.sample_rate), features)
