"""Export stage (issue #4): FP32 parity with PyTorch, INT8 modes, the artifact contract, bad input.

A tiny AST with LungAdapter adapters is trained for a few epochs on the synthetic database by the
real training code (module-scoped) and exported once per mode; the tests read the figures the
export measured.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edge_lung.config import LABELS, FeatureConfig
from edge_lung.export.onnx import ExportConfig, ExportError, ParityError, export_model
from edge_lung.export.quantize import QuantPreset, available_presets, load_preset
from edge_lung.runtime.artifact.model_dir import ArtifactError, OnnxClassifier, resolve_model_path
from edge_lung.runtime.artifact.quality import QualityConfig

QUIET = dict(log=lambda *_: None)
ROOT = Path(__file__).resolve().parents[2]


def make_run(run_dir: Path, db_dir: Path, features: FeatureConfig, epochs: int = 4, max_cycles: int | None = None,
             cache_dir: Path | None = None) -> Path:
    """A small run trained by `edge_lung.train.loop.train` (tiny AST + LungAdapter adapters, CPU).

    AdamW without label smoothing or SpecAugment, so that a few epochs give decisive logits: with
    the default SAM + smoothing, 3 epochs leave the top-2 logits ~0.01 apart (a near-tie that any
    rounding flips), and INT8 agreement would measure the model's indecision, not the quantisation.
    """
    from edge_lung.train.config import TrainConfig
    from edge_lung.train.loop import train

    cfg = TrainConfig(
        data=str(db_dir), out=str(run_dir), backbone="tiny", adapter="lung", optimizer="adamw", lr=3e-3,
        label_smoothing=0.0, spec_augment=False, epochs=epochs, batch_size=16, max_cycles=max_cycles,
        device="cpu", progress=False, features=features.to_dict(), cache_dir=str(cache_dir) if cache_dir else None,
    )
    return train(cfg)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory, synth_db: Path) -> Path:
    with pytest.MonkeyPatch.context() as mp:  # module-scoped: the autouse cache fixture is not active yet
        mp.setenv("EDGE_LUNG_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "decode-cache"))
        root = tmp_path_factory.mktemp("export")
        make_run(root / "run", synth_db, FeatureConfig(), cache_dir=tmp_path_factory.getbasetemp() / "decode-cache")
        for name, cfg in {
            "fp32": ExportConfig(),
            "dynamic": ExportConfig(int8=True, quant="dynamic", quality_set=("clipped_share=0.1",)),
            "static": ExportConfig(int8=True, quant="static", calibration_size=32, preset="arm64"),
        }.items():
            export_model(root / "run", root / name, cfg, **QUIET)
    return root


def parity(model_dir: Path) -> dict:
    return json.loads((model_dir / "parity.json").read_text())


@pytest.mark.slow
def test_fp32_onnx_matches_pytorch(work: Path) -> None:
    import onnx

    p = parity(work / "fp32")
    assert p["num_cycles"] > 0 and p["split"] == "val"
    assert p["fp32_vs_torch"]["max_abs_logit_diff"] < 1e-4
    assert p["fp32_vs_torch"]["argmax_agreement"] == 100.0
    assert p["scores"]["fp32"]["score"] == p["scores"]["torch"]["score"]
    assert sorted(os.listdir(work / "fp32")) == ["feature_stats.json", "manifest.json", "model.e2e.onnx", "model.onnx",
                                                 "model_card.md", "parity.json", "test_vectors.npz"]
    onnx.checker.check_model(str(work / "fp32" / "model.onnx"), full_check=True)


def _icbhi_score(y: np.ndarray, pred: np.ndarray) -> float:
    """ICBHI Score written out here, apart from edge_lung.metrics: mean of Sp (normal cycles called normal)
    and Se (abnormal cycles given their exact class), in percent."""
    normal = y == 0
    return 100.0 * (np.mean(pred[normal] == 0) + np.mean(pred[~normal] == y[~normal])) / 2


@pytest.fixture(scope="module")
def parity_logits(work: Path, synth_db: Path) -> dict[str, np.ndarray]:
    """Logits of every shipped model on the run's whole validation split, measured here, one window per call
    (as the device runs it), plus the labels: an independent measurement to check parity.json against."""
    from edge_lung.data.icbhi import load_split
    from edge_lung.scoring import stack_features

    cycles = load_split(synth_db, "val", FeatureConfig(), cache_dir=work / "cache-parity")
    x = stack_features(cycles, FeatureConfig())
    out = {"y": np.array([c.label for c in cycles])}
    for name in ("fp32", "dynamic", "static"):
        clf = OnnxClassifier(work / name, threads=1)
        out[name] = np.concatenate([clf.logits(x[i : i + 1]) for i in range(len(x))])
    return out


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_int8_flips_only_where_fp32_is_undecided(work: Path, parity_logits: dict, mode: str) -> None:
    """A cycle can change class under INT8 only if its FP32 top-2 logit margin is under twice the largest
    |INT8 - FP32| logit error; where FP32 is decisive (margin at least that), INT8 agrees at the 98% aim.

    Flips, margins and the error are measured here from the shipped models; the recorded error is the one
    parity.json states, so an export that under-measures it (e.g. batched INT8 runs) fails this test.
    """
    q = parity(work / mode)["int8_vs_fp32"]
    fp32, int8, y = parity_logits["fp32"], parity_logits[mode], parity_logits["y"]
    err = float(np.abs(int8 - fp32).max())
    assert q["max_abs_logit_diff"] == pytest.approx(err, rel=1e-3, abs=1e-6)
    top2 = np.sort(fp32, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    flipped = int8.argmax(1) != fp32.argmax(1)
    assert q["flipped_cycles"] == int(flipped.sum())
    assert np.all(margin[flipped] < 2 * q["max_abs_logit_diff"]), (margin[flipped], q["max_abs_logit_diff"])
    decisive = margin >= 2 * q["max_abs_logit_diff"]
    assert decisive.sum() >= len(y) // 2, f"only {decisive.sum()} of {len(y)} cycles decisive: model too weak to test"
    assert 100.0 * np.mean(~flipped[decisive]) >= 98.0
    assert q["argmax_agreement"] == pytest.approx(100.0 * np.mean(~flipped))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_int8_record_states_its_aims_truthfully(work: Path, parity_logits: dict, mode: str) -> None:
    """Each aim's `met` in parity.json against figures worked out here: agreement and ICBHI Score from the
    logits measured in `parity_logits`, the size from the files on disk, the aims as the issue states them."""
    q = parity(work / mode)["int8_vs_fp32"]
    fp32, int8, y = parity_logits["fp32"], parity_logits[mode], parity_logits["y"]
    assert q["mode"] == mode
    agreement = 100.0 * np.mean(int8.argmax(1) == fp32.argmax(1))
    score_fp32, score_int8 = _icbhi_score(y, fp32.argmax(1)), _icbhi_score(y, int8.argmax(1))
    assert q["score_fp32"] == pytest.approx(score_fp32) and q["score_int8"] == pytest.approx(score_int8)
    fp32_bytes = (work / "fp32" / "model.onnx").stat().st_size
    int8_bytes = (work / mode / "model.int8.onnx").stat().st_size
    assert q["size_ratio"] == pytest.approx(int8_bytes / fp32_bytes, abs=0.01)  # files differ by metadata only
    assert {k: v["met"] for k, v in q["aims"].items()} == {
        "argmax_agreement": agreement >= 98.0,
        "score_loss": score_fp32 - score_int8 <= 1.0,
        # The tiny model's weights are mostly positional embeddings and the patch convolution, which stay
        # float, so its file cannot reach 30% of FP32: that aim is checked at a realistic size below.
        "size_ratio": False,
    }
    assert q["mean_abs_logit_diff"] <= 0.1 * q["fp32_logit_std"], q
    import onnx

    onnx.checker.check_model(str(work / mode / "model.int8.onnx"), full_check=True)
    assert sorted(os.listdir(work / mode)) == ["feature_stats.json", "manifest.json", "model.e2e.onnx",
                                               "model.int8.onnx", "model_card.md", "parity.json", "test_vectors.npz"]
    info = OnnxClassifier(work / mode).info
    assert info.quantization == f"int8-{mode}"
    assert info.run["quantization"]["mode"] == mode


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fp32", "dynamic", "static"])
def test_every_export_ships_the_end_to_end_graph_and_test_vectors(work: Path, mode: str) -> None:
    """Issue 16: model.e2e.onnx reproduces window_features (1e-4) and the FP32 logits (FP32 limit) on the
    parity split; test_vectors.npz is in the manifest and `verify` passes on it."""
    from edge_lung.runtime.artifact.e2e import E2EClassifier, read_vectors, verify_model_dir

    p = parity(work / mode)
    e = p["e2e"]
    assert e["passed"] and e["num_windows"] == p["num_cycles"]
    assert e["features_max_abs_diff"] <= 1e-4 and e["logits_max_abs_diff"] < 1e-4 and e["argmax_agreement"] == 100.0
    manifest = json.loads((work / mode / "manifest.json").read_text())
    assert manifest["e2e"]["file"] == "model.e2e.onnx" and manifest["test_vectors"]["file"] == "test_vectors.npz"
    assert E2EClassifier(work / mode).info.quantization == manifest["quantization"]
    v = read_vectors(work / mode / "test_vectors.npz")
    assert v["audio"].shape == (4, FeatureConfig().window_samples) and len(set(v["source"])) == 4
    assert verify_model_dir(work / mode)["passed"]
    if mode != "fp32":  # the INT8 e2e graph against the INT8 classifier graph: recorded
        q = p["e2e_int8"]
        assert q["features_max_abs_diff"] <= 1e-4 and q["reference"] == "model.int8.onnx on window_features"


@pytest.mark.slow
def test_end_to_end_parity_miss_fails_the_export(tmp_path: Path, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A front end that drops pre-emphasis misses the 1e-4 feature parity: the export fails, writes nothing."""
    import dataclasses

    import edge_lung.export.e2e as e2e_mod

    real = e2e_mod.end_to_end_model
    monkeypatch.setattr(e2e_mod, "end_to_end_model",
                        lambda model, cfg: real(model, dataclasses.replace(cfg, preemphasis=0.0)))
    with pytest.raises(ParityError, match="end-to-end graph misses parity"):
        export_model(work / "run", tmp_path / "out", ExportConfig(parity_size=4), **QUIET)
    assert leftovers(tmp_path, "out") == []


@pytest.mark.slow
def test_int8_size_ratio_at_realistic_size(tmp_path: Path) -> None:
    """The 30% size aim, where it means something: the 'small' AST (12 layers x 384, ~22 M params;
    random weights, the ratio depends on the shapes only). benchmarks/bench_export.py shows base size."""
    import torch

    from edge_lung.export.onnx import export_fp32
    from edge_lung.train import model as M

    torch.manual_seed(0)
    features = FeatureConfig()
    net = M.LogitsModel(M.unwrap_peft(M.attach_adapter(M.load_backbone("small", features, 4), "lung"))).eval()
    export_fp32(net, tmp_path / "fp32.onnx", features)
    from edge_lung.export.quantize import quantize_model

    quantize_model(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", "dynamic", load_preset("x86-avx2"))
    ratio = (tmp_path / "int8.onnx").stat().st_size / (tmp_path / "fp32.onnx").stat().st_size
    assert ratio <= 0.30, ratio  # the aim


@pytest.mark.slow
def test_metadata_carries_everything_the_device_needs(work: Path) -> None:
    info = OnnxClassifier(work / "dynamic").info
    assert info.labels == LABELS
    assert info.features == FeatureConfig()
    run_config = json.loads((work / "run" / "config.json").read_text())
    assert info.metrics == run_config["best"]  # the run's validation metrics
    manifest = json.loads((work / "dynamic" / "manifest.json").read_text())
    assert manifest["model_file"] == "model.int8.onnx"
    assert manifest["parity"]["argmax_agreement"] == parity(work / "dynamic")["int8_vs_fp32"]["argmax_agreement"]
    assert "int8-dynamic" in (work / "dynamic" / "model_card.md").read_text()
    # the quality gate's thresholds travel in the ONNX metadata and the manifest (issue 11)
    meta = OnnxClassifier(work / "dynamic").session.get_modelmeta().custom_metadata_map
    expected = QualityConfig(clipped_share=0.1).to_dict()  # the defaults with the export's --quality-set
    assert json.loads(meta["edge_lung.quality"]) == manifest["quality"] == expected
    assert "`clipping` when 10% of the input" in (work / "dynamic" / "model_card.md").read_text()


@pytest.mark.slow
def test_int8_model_runs_without_torch(work: Path, synth_db: Path) -> None:
    """The device side: load, classify, evaluate and verify the INT8 model with torch, transformers, optimum and
    onnx absent."""
    code = f"""
import sys
from edge_lung.runtime.artifact.model_dir import OnnxClassifier
from edge_lung.runtime.offline.evaluate import evaluate_model_dir
clf = OnnxClassifier({str(work / "static")!r}, threads=1)
report = evaluate_model_dir({str(work / "static")!r}, {str(synth_db)!r}, split="test", threads=1)
assert report["num_cycles"] > 0 and 0 <= report["score"] <= 100, report
from edge_lung.runtime.artifact.e2e import verify_model_dir
assert verify_model_dir({str(work / "static")!r}, threads=1)["passed"]
bad = [m for m in ("torch", "transformers", "optimum", "onnx") if m in sys.modules]
assert not bad, bad
print("ok", report["score"])
"""
    env = {**os.environ, "EDGE_LUNG_CACHE_DIR": str(work / "cache-subprocess")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("ok")


@pytest.mark.slow
def test_onnx_evaluation_matches_the_runs_own(work: Path, synth_db: Path) -> None:
    from edge_lung.runtime.offline.evaluate import evaluate_model_dir, is_model_dir
    from edge_lung.train.evaluate import evaluate_run

    assert is_model_dir(work / "fp32") and not is_model_dir(work / "run")
    onnx_report = evaluate_model_dir(work / "fp32", synth_db, split="test")
    torch_report = evaluate_run(work / "run", synth_db, split="test")
    assert onnx_report["confusion_matrix"] == torch_report["confusion_matrix"]
    assert onnx_report["score"] == torch_report["score"]
    assert abs(onnx_report["loss"] - torch_report["loss"]) < 1e-4
    val = evaluate_model_dir(work / "fp32", synth_db, split="val")
    assert val["num_cycles"] == parity(work / "fp32")["num_cycles"]  # same validation slice as the run


@pytest.mark.slow
def test_export_writes_the_training_splits_feature_statistics(work: Path, synth_db: Path) -> None:
    from edge_lung.data.devices import load_run_split
    from edge_lung.features import cycle_features
    from edge_lung.runtime.artifact.model_dir import listed_file, reference_stats

    model_dir = work / "fp32"
    _, manifest = resolve_model_path(model_dir)
    listed_file(model_dir, manifest, "feature_stats", "")  # listed, its SHA-256 checked
    config = json.loads((work / "run" / "config.json").read_text())
    features = FeatureConfig.from_dict(config["features"])
    cycles = load_run_split(synth_db, "train", features, config["train"])
    x = np.concatenate([cycle_features(c.audio, features) for c in cycles]).astype(np.float64)
    stats = reference_stats(model_dir, manifest)
    np.testing.assert_allclose(stats.mean, x.mean(axis=0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(stats.std, x.std(axis=0), rtol=1e-9, atol=1e-9)
    assert stats.frames == len(x) and manifest["feature_stats"]["cycles"] == len(cycles)


@pytest.mark.slow
def test_device_shift_calibrate_column_measures_what_calibrate_writes(work: Path, synth_db: Path,
                                                                      tmp_path: Path) -> None:
    """benchmarks/device_shift.py's calibrate column (PyTorch, the run's saved model, its held-out 'val'
    recordings without labels) scores exactly what `edge-lung calibrate` + `evaluate MODEL_DIR` give."""
    import importlib.util

    from edge_lung.data.devices import scan_for_run
    from edge_lung.runtime.offline.calibrate import calibrate_model_dir
    from edge_lung.runtime.offline.evaluate import evaluate_model_dir
    from edge_lung.train.evaluate import evaluate_run

    spec = importlib.util.spec_from_file_location("device_shift", ROOT / "benchmarks" / "device_shift.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    figures = bench.calibration_figures(work / "run", str(synth_db))
    config = json.loads((work / "run" / "config.json").read_text())
    held_out = tmp_path / "held_out"
    held_out.mkdir()
    for r in scan_for_run(synth_db, config["train"])[0].recordings:
        if r.split == "val":
            shutil.copy(r.wav, held_out / r.wav.name)
    record = calibrate_model_dir(work / "fp32", held_out, tmp_path / "cal", min_audio_s=5.0, **QUIET)
    assert record["calibration"]["windows"] == figures["windows"]
    onnx_cal = evaluate_model_dir(tmp_path / "cal", synth_db, split="val")
    torch_plain = evaluate_run(work / "run", synth_db, split="val")
    assert onnx_cal["calibrated"] and not torch_plain["calibrated"]
    assert figures["calibrated"] == {k: onnx_cal[k] for k in bench.FIGURES}
    assert figures["plain"] == {k: torch_plain[k] for k in bench.FIGURES}
    rows = [{"recipe": "default", "device": "X", "seed": 0, "last": {k: 50.0 for k in ("score", "specificity",
             "sensitivity")}, "selected": {"score": 50.0}, "calibration": figures}]
    table = bench.markdown(bench.summarize(rows), SimpleNamespace(db="db", backbone="tiny", epochs=1, seeds="0",
                                                                  max_cycles=None, degrade=None, lr=None))
    assert f"| {figures['plain']['score']:.1f} +- 0.0 | {figures['calibrated']['score']:.1f} +- 0.0 |" in table


@pytest.mark.slow
def test_corrupt_truncated_or_foreign_models_are_refused(work: Path, tmp_path: Path) -> None:
    import onnx

    bad = tmp_path / "truncated"
    shutil.copytree(work / "dynamic", bad)
    data = (bad / "model.int8.onnx").read_bytes()
    (bad / "model.int8.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="SHA-256"):
        OnnxClassifier(bad)
    flipped = tmp_path / "flipped"
    shutil.copytree(work / "dynamic", flipped)
    blob = bytearray(data)
    blob[len(blob) // 2] ^= 0xFF
    (flipped / "model.int8.onnx").write_bytes(bytes(blob))
    with pytest.raises(ArtifactError, match="SHA-256"):
        OnnxClassifier(flipped)
    model = onnx.load(str(work / "fp32" / "model.onnx"))
    del model.metadata_props[:]
    foreign = tmp_path / "foreign.onnx"
    onnx.save(model, str(foreign))
    with pytest.raises(ArtifactError, match="not an edge-lung model"):
        OnnxClassifier(foreign)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(data[:1000])
    with pytest.raises(ArtifactError, match="cannot load"):
        OnnxClassifier(garbage)


@pytest.mark.slow
def test_runtime_follows_feature_settings_changed_at_training(tmp_path: Path, synth_db: Path) -> None:
    """Train with 4 s windows and 64 mel bins: the exported model tells the device so; nothing is hard-coded."""
    from edge_lung.audio import cyclic_pad
    from edge_lung.features import window_features

    features = FeatureConfig(window_s=4.0, num_mel_bins=64)
    make_run(tmp_path / "run", synth_db, features, epochs=1, max_cycles=16)
    export_model(tmp_path / "run", tmp_path / "model", ExportConfig(int8=True, parity_size=8), **QUIET)
    clf = OnnxClassifier(tmp_path / "model")
    assert clf.info.features == features
    assert (clf.info.features.num_frames, clf.info.features.num_mel_bins) == (398, 64)
    wave = np.random.default_rng(0).standard_normal(20000).astype(np.float32) * 0.1
    cfg = clf.info.features
    x = window_features(cyclic_pad(wave, cfg.window_samples), cfg)
    assert clf.probabilities(x).shape == (1, 4)
    with pytest.raises(ValueError, match="expected features"):
        clf.logits(np.zeros((1, 798, 128), np.float32))
    # The streaming runtime takes its window from the model: 4 s windows (64000 samples at 16 kHz),
    # the first ones cyclic-padded, from a 10 s file at 44.1 kHz.
    import soundfile as sf

    from edge_lung.runtime import StreamConfig, StreamingClassifier, classify_file

    sf.write(tmp_path / "rec.wav", np.random.default_rng(1).standard_normal(441000).astype(np.float32) * 0.1, 44100)
    result = classify_file(StreamingClassifier(clf, StreamConfig()), tmp_path / "rec.wav", keep_decisions=True)
    windows = [d.window for d in result.decisions]
    assert windows and all(w.end - w.start <= 64000 and w.audio.shape == (64000,) for w in windows)
    assert windows[0].padded and not windows[-1].padded


# ---------------------------------------------------------------------------------------------
# Bad input: clear errors, nothing half-written


def leftovers(parent: Path, name: str) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name == name or p.name.startswith(f".{name}.")]


@pytest.mark.slow
def test_run_dir_without_model(tmp_path: Path, work: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text((work / "run" / "config.json").read_text())
    with pytest.raises(ExportError, match="RUN_DIR.*cannot load the trained model"):
        export_model(run, tmp_path / "out", **QUIET)
    with pytest.raises(ExportError, match="no such directory"):
        export_model(tmp_path / "missing", tmp_path / "out", **QUIET)
    assert leftovers(tmp_path, "out") == []


@pytest.mark.parametrize(("key", "value"), [("adapter", "banana"), ("backbone", "nonsense-model"),
                                          ("adapter", None)])
def test_edited_adapter_or_backbone_names_are_refused(tmp_path: Path, work: Path, key: str, value) -> None:
    """An edited config.json naming adapter "banana" or backbone "nonsense-model" was exported and the names
    recorded in the manifest (issue 26): refused, naming the file, the key and what training writes."""
    run = tmp_path / "run"
    shutil.copytree(work / "run", run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, key: value}))
    with pytest.raises(ExportError, match=rf"config.json: {key} {value!r}: expected one of"):
        export_model(run, tmp_path / "out", **QUIET)
    assert leftovers(tmp_path, "out") == []


@pytest.mark.slow
def test_empty_calibration_set(tmp_path: Path, work: Path, synth_db: Path) -> None:
    """A database without train cycles cannot calibrate static INT8: clear error, no MODEL_DIR."""
    db = tmp_path / "db"
    shutil.copytree(synth_db, db)
    split_file = db / "ICBHI_challenge_train_test.txt"
    split_file.write_text(split_file.read_text().replace("\ttrain", "\ttest"))
    cfg = ExportConfig(int8=True, quant="static", data_dir=str(db), parity_split="test")
    with pytest.raises(ExportError, match="empty calibration set"):
        export_model(work / "run", tmp_path / "out", cfg, **QUIET)
    assert leftovers(tmp_path, "out") == []
    from edge_lung.export.quantize import quantize_model

    with pytest.raises(ValueError, match="calibration window"):
        quantize_model(work / "fp32" / "model.onnx", tmp_path / "q.onnx", "static", load_preset("arm64"),
                       np.zeros((0, 798, 128), np.float32))


@pytest.mark.slow
def test_unwritable_or_occupied_output_dir(tmp_path: Path, work: Path) -> None:
    if os.geteuid() == 0:
        unwritable = Path("/sys/edge-lung-model")  # root ignores file modes; sysfs refuses new entries
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        unwritable = locked / "model"
    with pytest.raises(ExportError, match="cannot write"):
        export_model(work / "run", unwritable, **QUIET)
    with pytest.raises(ExportError, match="does not exist"):
        export_model(work / "run", tmp_path / "no" / "such" / "model", **QUIET)
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="was not written by edge-lung"):  # --overwrite would not help
        export_model(work / "run", occupied, **QUIET)
    with pytest.raises(ExportError, match="not an edge-lung model directory"):
        export_model(work / "run", occupied, ExportConfig(overwrite=True), **QUIET)  # not ours to delete
    assert (occupied / "keep.txt").read_text() == "mine"
    assert leftovers(tmp_path, "occupied") == ["occupied"]


@pytest.mark.slow
def test_failure_midway_leaves_nothing(tmp_path: Path, work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import edge_lung.export.onnx as export_mod

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export_mod, "quantize_model", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        export_model(work / "run", tmp_path / "out", ExportConfig(int8=True, parity_size=4), **QUIET)
    assert leftovers(tmp_path, "out") == []
    # An existing MODEL_DIR survives a failed --overwrite untouched.
    shutil.copytree(work / "fp32", tmp_path / "out")
    before = (tmp_path / "out" / "manifest.json").read_text()
    with pytest.raises(RuntimeError, match="disk full"):
        export_model(work / "run", tmp_path / "out", ExportConfig(int8=True, overwrite=True, parity_size=4), **QUIET)
    assert (tmp_path / "out" / "manifest.json").read_text() == before
    assert leftovers(tmp_path, "out") == ["out"]


@pytest.mark.slow
def test_fp32_parity_failure_is_fatal(tmp_path: Path, work: Path) -> None:
    with pytest.raises(ParityError, match="differs from PyTorch"):
        export_model(work / "run", tmp_path / "out", ExportConfig(fp32_tolerance=1e-12, parity_size=4), **QUIET)
    assert leftovers(tmp_path, "out") == []


def test_cli_reports_errors_with_nonzero_status(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edge_lung.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["export", str(tmp_path / "missing"), "--out", str(tmp_path / "m")])
    assert result.exit_code == 1
    assert "no such directory" in result.output
    result = runner.invoke(app, ["export", str(tmp_path), "--out", str(tmp_path / "m"), "--quant", "fast"])
    assert result.exit_code == 2
    assert "--quant: expected one of" in result.output
    result = runner.invoke(app, ["export", str(tmp_path), "--out", str(tmp_path / "m"), "--int8", "--preset", "z80"])
    assert result.exit_code == 2
    assert "x86-avx2" in result.output


# ---------------------------------------------------------------------------------------------
# Presets and options (fast)


@pytest.mark.parametrize("name", ["x86-avx2", "x86-avx512-vnni", "arm64"])
def test_shipped_presets_load(name: str) -> None:
    preset = load_preset(name)
    assert preset.name == name and preset.per_channel
    assert name in available_presets()


def test_preset_and_option_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="weight_type: expected one of"):
        QuantPreset(name="x", weight_type="int4")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "bad", "bits": 4}))
    with pytest.raises(ValueError, match="unknown preset keys"):
        load_preset(bad)
    with pytest.raises(ValueError, match="--calibration-size: expected >= 1"):
        ExportConfig(calibration_size=0)
    with pytest.raises(ValueError, match="--quant: expected one of"):
        ExportConfig(quant="int4")
    with pytest.raises(ValueError, match="--quality-set 'clip=1'"):
        ExportConfig(quality_set=("clip=1",))


@pytest.mark.slow
def test_exported_models_carry_the_pooled_embedding_as_a_second_output(work: Path, synth_db: Path) -> None:
    import torch

    from edge_lung.data.icbhi import load_split
    from edge_lung.features import cycle_features
    from edge_lung.train.model import load_run

    module, cfg = load_run(work / "run")
    features = FeatureConfig.from_dict(cfg["features"])
    x = np.stack([cycle_features(c.audio, features) for c in load_split(synth_db, "test", features)[:6]])
    with torch.no_grad():
        logits, pooled = (t.numpy() for t in module.logits_and_embedding(torch.from_numpy(x)))
        np.testing.assert_allclose(logits, module(torch.from_numpy(x)).numpy(), atol=1e-5)  # the same head
    for name in ("fp32", "dynamic", "static"):
        clf = OnnxClassifier(work / name)
        assert [o.name for o in clf.session.get_outputs()] == ["logits", "embedding"]  # logits stay first
        manifest = json.loads((work / name / "manifest.json").read_text())
        assert manifest["embedding"] == {"name": "embedding", "shape": ["batch", pooled.shape[1]]}
        emb = np.concatenate([clf.embeddings(x[i : i + 1]) for i in range(len(x))])
        assert emb.shape == pooled.shape
        if name == "fp32":
            np.testing.assert_allclose(emb, pooled, atol=1e-4)
            np.testing.assert_allclose(clf.logits(x), logits, atol=1e-4)
        else:  # INT8: the embedding points the same way as PyTorch's
            cos = (emb * pooled).sum(1) / np.linalg.norm(emb, axis=1) / np.linalg.norm(pooled, axis=1)
            assert cos.min() > 0.9, cos


@pytest.mark.slow
def test_evaluate_embeddings_on_a_model_dir(work: Path, synth_db: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edge_lung.cli import app

    png = tmp_path / "map.png"
    args = ["evaluate", str(work / "dynamic"), "--data", str(synth_db), "--embeddings", str(png)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "silhouette by class:" in res.output and "silhouette by device:" in res.output and png.stat().st_size > 0


@pytest.mark.slow
def test_explain_draws_attention_rollout_for_the_runtime_windows(work: Path, synth_db: Path, tmp_path: Path) -> None:
    import matplotlib.image as mpimg

    from edge_lung.features import window_features
    from edge_lung.train.explain import explain_recording, patch_relevance, recording_windows
    from edge_lung.train.model import load_run, patch_grid

    wav = sorted((synth_db / "ICBHI_final_database").glob("*.wav"))[0]
    png = explain_recording(work / "run", wav, tmp_path / "rollout.png", max_windows=3)
    image = mpimg.imread(str(png))
    assert image.shape[0] > 400 and image[..., :3].std() > 0.05
    wrapped, cfg = load_run(work / "run")
    wrapped.model.set_attn_implementation("eager")
    features = FeatureConfig.from_dict(cfg["features"])
    windows = recording_windows(wav, features, 1.0, 2.0)
    assert [w.end for w in windows][:3] == [32000, 48000, 64000]  # the runtime's hop and first window
    x = np.stack([window_features(w.audio, features) for w in windows[:2]])
    relevance, probs = patch_relevance(wrapped.model, x)
    assert relevance.shape == (2, *patch_grid(wrapped.model.config)) and (relevance >= 0).all()
    assert 0 < relevance.sum(axis=(1, 2)).max() < 1  # the patches' share of the pooled tokens' rollout
    np.testing.assert_allclose(probs, torch_probs(wrapped, x), atol=1e-5)


def torch_probs(wrapped, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return torch.softmax(wrapped(torch.from_numpy(x)), dim=-1).numpy()
