"""Distillation (issue 13): a student learns the teacher, unlabeled windows carry no label, the soft-target
cache follows the teacher, and bad input names its path."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

torch = pytest.importorskip("torch")

from edge_lung.audio import cyclic_pad, resample  # noqa: E402
from edge_lung.config import LABELS, FeatureConfig  # noqa: E402
from edge_lung.data.devices import load_run_split  # noqa: E402
from edge_lung.scoring import stack_features  # noqa: E402
from edge_lung.testing import build_tiny_model  # noqa: E402
from edge_lung.train.config import DistillConfig, TrainConfig  # noqa: E402
from edge_lung.train.distill import DistillLoss, DistillSet, distill, unpack_targets  # noqa: E402
from edge_lung.train.teacher import SoftTargetCache, TeacherError, load_teacher  # noqa: E402
from edge_lung.train.unlabeled import UNLABELED, load_unlabeled  # noqa: E402

SPLIT = {"val_fraction": TrainConfig.val_fraction, "val_seed": TrainConfig.val_seed}


@pytest.fixture(scope="module")
def pca_teacher(synth_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fixed ONNX teacher whose decisions ignore the labels: the four logits are +-the first two principal
    components of the training cycles' time-averaged log-mel, so its class is the larger component and its sign."""
    features = FeatureConfig()
    pooled = stack_features(load_run_split(synth_db, "train", features, SPLIT), features).mean(axis=1)
    mean = pooled.mean(axis=0)
    _, s, vt = np.linalg.svd(pooled - mean, full_matrices=False)
    u = vt[:2] / (s[:2, None] / np.sqrt(len(pooled)))  # unit variance along each component
    w = np.stack([u[0], -u[0], u[1], -u[1]], axis=1).astype(np.float32)
    return build_tiny_model(tmp_path_factory.mktemp("pca-teacher"), features, weights=(w, -(mean @ w)))


def _student(db: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=str(db), out=str(out), backbone="tiny", optimizer="adamw", epochs=2, batch_size=8,
                eval_batch_size=32, progress=False, num_threads=2, device="cpu")
    return TrainConfig(**(base | kw))


def _run_teacher(run_dir: Path, seed: int) -> Path:
    """A run directory as `edge-lung train` leaves it, with a randomly initialised tiny AST (no training)."""
    from edge_lung.train.model import load_backbone

    torch.manual_seed(seed)
    load_backbone("tiny", FeatureConfig(), len(LABELS)).save_pretrained(run_dir / "model" / "backbone")
    config = {"labels": list(LABELS), "features": FeatureConfig().to_dict(), "data": "synthetic", "adapter": "none",
              "best": {"epoch": 1}}
    (run_dir / "config.json").write_text(json.dumps(config))
    return run_dir


@pytest.mark.slow
def test_distillation_drives_agreement_with_the_teacher_up(synth_db: Path, pca_teacher: Path, tmp_path: Path) -> None:
    """Only the KD term can teach this: alpha = 1 (no cross-entropy) and a teacher whose classes are not the
    labels. A student that did not learn the teacher agrees with it at most as often as its commonest class."""
    from edge_lung.train.evaluate import evaluate_run

    run = distill(_student(synth_db, tmp_path / "student"), DistillConfig(str(pca_teacher), temperature=1.0,
                                                                          alpha=1.0))
    config = json.loads((run / "config.json").read_text())
    section = config["distill"]
    assert section["teacher"]["kind"] == "model_dir" and section["alpha"] == 1.0 and section["temperature"] == 1.0
    manifest = json.loads((pca_teacher / "manifest.json").read_text())
    assert section["teacher"]["sha256"] == manifest["sha256"]
    assert section["teacher_val"]["accuracy"] < 40.0  # the teacher's classes are not the labels
    val = load_run_split(synth_db, "val", FeatureConfig(), SPLIT)
    teacher = load_teacher(pca_teacher)
    decided = teacher.logits_fn(stack_features(val, teacher.features)).argmax(axis=1)
    commonest = 100.0 * np.bincount(decided).max() / len(decided)
    assert commonest < 50.0, f"the teacher should spread its decisions, {commonest:.0f}% are one class"

    history = json.loads((run / "metrics.json").read_text())
    agreement = [e["val"]["teacher_agreement"] for e in history]
    assert max(agreement) >= 80.0 and max(agreement) >= commonest + 30.0, agreement
    # an ordinary run directory: evaluate reproduces the selection figures
    report = evaluate_run(run, None, "val")
    assert report["score"] == pytest.approx(config["best"]["val"]["score"])
    assert config["best"]["val"]["teacher_agreement"] == max(
        e["val"]["teacher_agreement"] for e in history if e["epoch"] == config["best"]["epoch"])


def _unlabeled_dir(synth_db: Path, out: Path) -> tuple[Path, list[Path]]:
    """Three recordings at other rates (one stereo), an unreadable .wav and a note that is not audio."""
    out.mkdir()
    sources = sorted((synth_db / "ICBHI_final_database").glob("*.wav"))[:3]
    written = []
    for src, rate, channels, suffix in zip(sources, (44100, 8000, 22050), (2, 1, 1), (".wav", ".flac", ".wav"),
                                           strict=True):
        audio, src_rate = sf.read(src, dtype="float32")
        audio = resample(audio, src_rate, rate)
        path = out / "device" / f"{src.stem}{suffix}"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, np.stack([audio] * channels, axis=1) if channels > 1 else audio, rate)
        written.append(path)
    (out / "broken.wav").write_bytes(b"RIFF not really a wave file")
    (out / "notes.txt").write_text("recorded at the clinic, no annotations")
    return out, written


@pytest.mark.filterwarnings("ignore:.*2 channels, downmixing to mono")  # the stereo recording, on purpose
def test_unlabeled_windows_are_the_runtime_windows_and_carry_no_label(synth_db: Path, tmp_path: Path) -> None:
    from edge_lung.runtime.artifact.model_dir import OnnxClassifier
    from edge_lung.runtime.live.stream import StreamingClassifier
    from edge_lung.runtime.offline.classify import classify_file

    folder, files = _unlabeled_dir(synth_db, tmp_path / "unlabeled")
    features = FeatureConfig()
    windows, reports = load_unlabeled([str(folder)], features)
    report = reports[0].to_dict()
    assert report["files"] == 4 and report["used_files"] == 3 and report["other_files"] == 1
    assert [s["file"] for s in report["skipped_files"]] == [str(folder / "broken.wav")]
    assert "broken.wav: not a readable audio file" in report["skipped_files"][0]["reason"]

    # the windows `classify` decides for each file, the ones its quality gate passes, sample for sample
    model_dir = build_tiny_model(tmp_path / "teacher")
    runtime = StreamingClassifier(OnnxClassifier(model_dir))
    for path in files:
        decided = [d for d in classify_file(runtime, path, keep_decisions=True).decisions if d.verdict == "ok"]
        mine = [w for w in windows if w.source == str(path)]
        assert len(mine) == len(decided) > 0
        for w, d in zip(mine, decided, strict=True):
            assert (w.start, w.end) == (d.window.start, d.window.end)
            np.testing.assert_array_equal(cyclic_pad(w.audio, features.window_samples), d.window.audio)
    assert report["windows"] == len(windows)

    # in a batch, an unlabeled window has no label, and the loss has no cross-entropy term for it
    cycles = load_run_split(synth_db, "train", features, SPLIT)[:6]
    cfg = TrainConfig(data=str(synth_db))
    targets = SoftTargetCache(tmp_path / "cache", load_teacher(model_dir))
    data = DistillSet(cycles, windows, features, cfg, targets)
    unlabeled = np.arange(len(cycles), len(cycles) + len(windows))
    labels, teacher = unpack_targets(data.batch(unlabeled[:5], np.random.default_rng(0))[1])
    assert labels.tolist() == [UNLABELED] * 5
    mixed = np.array([0, 1, 2, unlabeled[0], unlabeled[1]])
    x, y = data.batch(mixed, np.random.default_rng(0))
    labels, teacher = unpack_targets(y)
    assert labels.tolist()[:3] == [c.label for c in cycles[:3]] and labels.tolist()[3:] == [UNLABELED] * 2
    np.testing.assert_allclose(teacher.numpy(), targets.logits([data.cycles[i].audio for i in mixed], 16000))

    student = torch.randn(5, len(LABELS), requires_grad=True)
    loss = DistillLoss(torch.nn.CrossEntropyLoss(), temperature=2.0, alpha=0.3)
    with torch.no_grad():
        kd, ce = loss.terms(student, y)
        assert float(ce) == pytest.approx(float(torch.nn.functional.cross_entropy(student[:3], labels[:3])))
    only_ce = DistillLoss(torch.nn.CrossEntropyLoss(), temperature=2.0, alpha=0.0)
    only_ce(student, y).backward()
    assert torch.count_nonzero(student.grad[:3]) > 0 and torch.count_nonzero(student.grad[3:]) == 0
    targets.close()


def test_soft_target_cache_follows_the_teacher(synth_db: Path, tmp_path: Path) -> None:
    cycles = load_run_split(synth_db, "val", FeatureConfig(), SPLIT)[:5]
    audios = [c.audio for c in cycles]
    teacher_dir = build_tiny_model(tmp_path / "teacher")

    first = SoftTargetCache(tmp_path / "cache", load_teacher(teacher_dir))
    logits = first.logits([*audios, audios[0]], 16000)  # a window seen twice is computed once
    np.testing.assert_array_equal(logits[5], logits[0])
    logits = logits[:5]
    assert (first.computed, first.reused) == (5, 0)
    first.close()
    again = SoftTargetCache(tmp_path / "cache", load_teacher(teacher_dir))  # the same teacher, loaded anew
    np.testing.assert_array_equal(again.logits(audios, 16000), logits)
    assert (again.computed, again.reused) == (0, 5)
    again.close()

    # the model directory replaced by another model: nothing of the old teacher's is used
    shutil.rmtree(teacher_dir)
    build_tiny_model(teacher_dir, scale=0.5)
    changed = SoftTargetCache(tmp_path / "cache", load_teacher(teacher_dir))
    assert changed.path != again.path
    np.testing.assert_allclose(changed.logits(audios, 16000), 0.5 * logits, rtol=1e-5, atol=1e-5)
    assert (changed.computed, changed.reused) == (5, 0)
    changed.close()

    # a run directory teacher: its key follows its weights, then its features
    run = load_teacher(_run_teacher(tmp_path / "run", seed=0))
    assert run.kind == "run" and load_teacher(tmp_path / "run").key == run.key
    _run_teacher(tmp_path / "run", seed=1)
    assert load_teacher(tmp_path / "run").key != run.key
    assert dataclasses.replace(run, features=FeatureConfig(mel_norm="window")).key != run.key

    # with waveform augmentation the teacher hears each draw: one entry per draw, reused on a rerun
    cfg = TrainConfig(data=str(synth_db), waveform_aug=True)
    cache = SoftTargetCache(tmp_path / "cache", load_teacher(teacher_dir))
    data = DistillSet(cycles, [], FeatureConfig(), cfg, cache)
    assert (cache.computed, cache.reused) == (0, 5)  # the unaugmented cycles, computed above
    idx = np.arange(5)
    _, y1 = data.batch(idx, np.random.default_rng(1))
    _, y2 = data.batch(idx, np.random.default_rng(2))
    assert cache.computed == 10 and not torch.equal(y1, y2)
    _, y1_again = data.batch(idx, np.random.default_rng(1))
    assert cache.computed == 10 and torch.equal(y1, y1_again)
    cache.close()


def test_bad_input_names_the_path(synth_db: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edge_lung.cli import app

    (tmp_path / "neither").mkdir()
    (tmp_path / "neither" / "notes.txt").write_text("not a model")
    with pytest.raises(TeacherError, match=r"neither.*neither a run directory .*nor an exported model directory"):
        load_teacher(tmp_path / "neither")
    with pytest.raises(TeacherError, match="missing: no such directory"):
        load_teacher(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"--unlabeled .*neither: holds no audio files.*found 1 other"):
        load_unlabeled([str(tmp_path / "neither")], FeatureConfig())
    with pytest.raises(ValueError, match="--unlabeled .*nowhere: no such directory"):
        load_unlabeled([str(tmp_path / "nowhere")], FeatureConfig())
    with pytest.raises(ValueError, match="alpha"):
        DistillConfig("teacher", alpha=1.5)
    with pytest.raises(ValueError, match="temperature"):
        DistillConfig("teacher", temperature=0.0)

    teacher = build_tiny_model(tmp_path / "teacher")
    base = ["distill", "--data", str(synth_db), "--out", str(tmp_path / "out"), "--no-progress"]
    for extra, named in (
        (["--teacher", str(tmp_path / "neither")], "neither a run directory"),
        (["--teacher", str(teacher), "--unlabeled", str(tmp_path / "neither")], "holds no audio files"),
        (["--teacher", str(teacher), "--alpha", "2"], "alpha"),
    ):
        result = CliRunner().invoke(app, base + extra)
        assert result.exit_code == 2 and named in result.output, result.output
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.fixture
def fake_distill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """`edge-lung distill` with the training replaced: the dict receives the configs the CLI built."""
    import edge_lung.train.distill as distill_module

    seen: dict = {}

    def fake(cfg: TrainConfig, dcfg: DistillConfig) -> Path:
        seen.update(cfg=cfg, dcfg=dcfg)
        best = {"epoch": 1, "val": {"score": 60.0, "teacher_agreement": 90.0}}
        (tmp_path / "config.json").write_text(json.dumps({"best": best, "distill": {"teacher_val": {"score": 70.0}}}))
        return tmp_path

    monkeypatch.setattr(distill_module, "distill", fake)
    return seen


def test_cli_builds_the_student_as_train_does(synth_db: Path, tmp_path: Path, fake_distill: dict) -> None:
    """`distill` takes `train`'s options and recipes; an explicit --num-mel-bins wins over a recipe's front end."""
    from typer.testing import CliRunner

    from edge_lung.cli import app
    from edge_lung.train.recipes import recipe_id

    seen = fake_distill
    args = ["distill", "--teacher", "T", "--data", str(synth_db), "--out", str(tmp_path / "s"), "--student", "tiny",
            "--recipe", "icbhi-robust", "--num-mel-bins", "32", "--unlabeled", "A", "--unlabeled", "B",
            "--temperature", "3", "--alpha", "0.7", "--epochs", "1", "--seed", "4", "--lr", "0.01"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Score 60.00 (teacher 70.00), agreement with the teacher 90.0%" in result.output
    cfg, dcfg = seen["cfg"], seen["dcfg"]
    assert (cfg.backbone, cfg.epochs, cfg.seed, cfg.lr, cfg.recipe) == ("tiny", 1, 4, 0.01, recipe_id("icbhi-robust"))
    assert cfg.channel_aug and cfg.features["num_mel_bins"] == 32 and cfg.features["high_freq_hz"] == 2000.0
    assert dcfg == DistillConfig("T", temperature=3.0, alpha=0.7, unlabeled=("A", "B"))


def test_cli_default_student_is_the_measured_one(synth_db: Path, tmp_path: Path, fake_distill: dict) -> None:
    """Without --student, --optimizer and --lr: the MobileNet student with AdamW at a CNN's 3e-3."""
    from typer.testing import CliRunner

    from edge_lung.cli import app
    from edge_lung.train.config import resolve_lr

    args = ["distill", "--teacher", "T", "--data", str(synth_db), "--out", str(tmp_path / "s")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    cfg = fake_distill["cfg"]
    assert (cfg.backbone, cfg.optimizer, cfg.lr) == ("mobilenet", "adamw", None)
    assert cfg.features["num_mel_bins"] == 64 and cfg.feature_config == FeatureConfig(num_mel_bins=64)
    assert resolve_lr(cfg, "none") == 3e-3
    assert resolve_lr(dataclasses.replace(cfg, backbone="tiny"), "none") == 1e-3


@pytest.mark.parametrize(("args", "bins"), [
    (["--student", "tiny"], 128),  # no measured front end: the standard features
    (["--num-mel-bins", "96"], 96),  # explicit wins over the student's
    (["--student", "tiny", "--recipe", "icbhi-robust"], 64),  # a recipe's front end
])
def test_cli_student_front_end(synth_db: Path, tmp_path: Path, fake_distill: dict, args: list, bins: int) -> None:
    """The student's mel bins: explicit, else a recipe's, else the student's measured ones, else 128."""
    from typer.testing import CliRunner

    from edge_lung.cli import app

    base = ["distill", "--teacher", "T", "--data", str(synth_db), "--out", str(tmp_path / "s")]
    result = CliRunner().invoke(app, base + args)
    assert result.exit_code == 0, result.output
    assert fake_distill["cfg"].features["num_mel_bins"] == bins


def test_cli_recipe_front_end_wins_over_the_students(synth_db: Path, tmp_path: Path, fake_distill: dict,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A student's measured bins (here 32) give way to a recipe's (icbhi-robust: 64)."""
    from typer.testing import CliRunner

    import edge_lung.train.config as config_module
    from edge_lung.cli import app

    monkeypatch.setitem(config_module.STUDENT_MEL_BINS, "mobilenet", 32)
    base = ["distill", "--teacher", "T", "--data", str(synth_db), "--out", str(tmp_path / "s")]
    for args, bins in (([], 32), (["--recipe", "icbhi-robust"], 64)):
        result = CliRunner().invoke(app, base + args)
        assert result.exit_code == 0, result.output
        assert fake_distill["cfg"].features["num_mel_bins"] == bins
