"""Training stage: schedule, sampler, augmentation, run directory, evaluation agreement, resume."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge_lung.config import LABELS  # noqa: E402
from edge_lung.train.augment import EpochRandom, augment_waveform, sample_order, spec_augment  # noqa: E402
from edge_lung.train.config import TrainConfig, TrainError  # noqa: E402
from edge_lung.train.loop import lr_at, train  # noqa: E402
from edge_lung.train.rundir import CHECKPOINT  # noqa: E402
from edge_lung.train.seeds import train_seeds  # noqa: E402


def test_lr_at_warmup_then_cosine() -> None:
    total, warm, base, low = 110, 10, 1e-3, 1e-5
    # warm-up: step s of 10 reaches (s + 1) / 10 of the peak
    assert [lr_at(s, total, warm, base, low) for s in range(warm)] == pytest.approx(
        [1e-4, 2e-4, 3e-4, 4e-4, 5e-4, 6e-4, 7e-4, 8e-4, 9e-4, 1e-3], rel=1e-12)
    # cosine over the remaining 100 steps: peak at its start, midway between peak and floor at
    # step 10 + 50, cos(pi/4) of the way at 10 + 25, the floor at the last step and beyond
    assert lr_at(10, total, warm, base, low) == pytest.approx(1e-3, rel=1e-12)
    assert lr_at(60, total, warm, base, low) == pytest.approx(5.05e-4, rel=1e-12)
    assert lr_at(35, total, warm, base, low) == pytest.approx(1e-5 + 9.9e-4 * (1 + 2**-0.5) / 2, rel=1e-12)
    assert lr_at(110, total, warm, base, low) == pytest.approx(1e-5, rel=1e-12)
    assert lr_at(500, total, warm, base, low) == pytest.approx(1e-5, rel=1e-12)
    # no warm-up: the first step is at the peak, and min_lr defaults to 0
    assert lr_at(0, 10, 0, base) == pytest.approx(1e-3, rel=1e-12)
    assert lr_at(5, 10, 0, base) == pytest.approx(5e-4, rel=1e-12)


def test_epoch_streams_depend_on_seed_and_epoch_only() -> None:
    def draws(seed: int, epoch: int) -> tuple:
        r = EpochRandom.for_epoch(seed, epoch)
        return (torch.randperm(50, generator=r.order).tolist(), torch.rand(3, generator=r.spec).tolist(),
                r.wave.random(3).tolist(), r.dropout_seed)

    a = draws(3, 2)
    assert a == draws(3, 2)  # a resumed epoch redraws exactly what it drew before
    assert all(x != y for x, y in zip(a, draws(3, 3), strict=True))  # every stream moves with the epoch
    assert all(x != y for x, y in zip(a, draws(4, 2), strict=True))  # and with the seed
    fresh = EpochRandom.for_epoch(3, 2)  # four distinct streams, not one seed used four times
    assert torch.rand(3, generator=fresh.order).tolist() != torch.rand(3, generator=fresh.spec).tolist()
    assert fresh.dropout_seed not in (fresh.order.initial_seed(), fresh.spec.initial_seed())


def test_weighted_sampler_matches_class_weights() -> None:
    counts = [4000, 2000, 1200, 800]  # imbalanced like ICBHI
    labels = np.repeat(np.arange(4), counts)
    order = sample_order(labels, "wrs", torch.Generator().manual_seed(0), 4)
    assert order.shape == labels.shape
    freq = np.bincount(labels[order], minlength=4) / len(order)
    # weight 1/count per sample: every class is drawn with probability 1/4
    np.testing.assert_allclose(freq, 0.25, atol=0.015)
    again = sample_order(labels, "wrs", torch.Generator().manual_seed(0), 4)
    np.testing.assert_array_equal(order, again)  # fixed seed, same draw
    uniform = sample_order(labels, "uniform", torch.Generator().manual_seed(0), 4)
    np.testing.assert_array_equal(np.sort(uniform), np.arange(len(labels)))


def test_spec_augment_masks_bands_and_spans() -> None:
    x = torch.ones(64, 798, 128)
    out = spec_augment(x, freq_mask=24, time_mask=96, num_masks=1, generator=torch.Generator().manual_seed(0))
    zero = out == 0
    freq_masked = zero.all(dim=1).sum(dim=1)  # bins masked over all frames
    time_masked = zero.all(dim=2).sum(dim=1)
    assert int(freq_masked.max()) <= 24 and int(time_masked.max()) <= 96
    assert int(freq_masked.sum()) > 0 and int(time_masked.sum()) > 0
    # masked samples are exactly a union of one band and one span
    expected_zeros = freq_masked * 798 + time_masked * 128 - freq_masked * time_masked
    assert torch.equal(zero.sum(dim=(1, 2)), expected_zeros)
    same = spec_augment(x, 24, 96, 1, torch.Generator().manual_seed(0))
    assert torch.equal(out, same)
    assert torch.equal(spec_augment(x, 0, 0, 1, torch.Generator()), x)


def test_waveform_augmentation_gain_and_noise() -> None:
    cfg = TrainConfig(data="unused", gain_db=6.0, noise_snr_min_db=30.0, noise_snr_max_db=30.0)
    audio = np.sin(np.linspace(0, 200, 16000)).astype(np.float32)
    out = augment_waveform(audio, np.random.default_rng(0), cfg)
    assert out.dtype == np.float32 and out.shape == audio.shape
    ratio = np.sqrt(np.mean(out**2) / np.mean(audio**2))
    assert 10 ** (-6.5 / 20) < ratio < 10 ** (6.5 / 20)
    again = augment_waveform(audio, np.random.default_rng(0), cfg)
    np.testing.assert_array_equal(out, again)


def test_config_validation_names_the_option() -> None:
    with pytest.raises(ValueError, match="optimizer: expected one of"):
        TrainConfig(data="db", optimizer="sgd")
    with pytest.raises(ValueError, match="epochs: expected a positive integer"):
        TrainConfig(data="db", epochs=0)
    with pytest.raises(ValueError, match="label_smoothing"):
        TrainConfig(data="db", label_smoothing=1.0)
    with pytest.raises(ValueError, match="noise_snr"):
        TrainConfig(data="db", noise_snr_min_db=40, noise_snr_max_db=20)
    cfg = TrainConfig(data="db", epochs=3)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_bad_data_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(TrainError, match="no such directory"):
        train(TrainConfig(data=str(tmp_path / "missing"), out=str(tmp_path / "run"), progress=False))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="'train' split has no cycles"):
        train(TrainConfig(data=str(tmp_path / "empty"), out=str(tmp_path / "run"), progress=False))
    assert not (tmp_path / "run").exists()  # nothing written


def _quick(db: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=str(db), out=str(out), backbone="tiny", adapter="lung", adapter_width=8, epochs=2,
                batch_size=8, max_cycles=16, eval_batch_size=16, progress=False, num_threads=2)
    base.update(kw)
    return TrainConfig(**base)


def _strip_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k not in ("seconds", "samples_per_s")} for e in history]


@pytest.mark.slow
def test_run_dir_evaluate_agrees_and_resume_is_identical(synth_db: Path, tmp_path: Path) -> None:
    from edge_lung.train.evaluate import evaluate_run
    from edge_lung.train.model import load_run

    cfg = _quick(synth_db, tmp_path / "a")
    run_a = train(cfg)
    for name in ("config.json", "metrics.json", "confusion_matrix.png", "training_curve.png", CHECKPOINT,
                 "model/backbone/model.safetensors", "model/adapter/adapter_model.safetensors"):
        assert (run_a / name).is_file(), name
    config = json.loads((run_a / "config.json").read_text())
    assert config["labels"] == list(LABELS) and config["status"] == "done"
    assert config["train"]["optimizer"] == "sam" and config["rho"] == 0.05 and config["adapter"] == "lung"
    assert config["data"] == str(synth_db.resolve())
    history = json.loads((run_a / "metrics.json").read_text())
    assert [e["epoch"] for e in history] == [1, 2]
    best = config["best"]
    assert best["val"]["score"] == max(e["val"]["score"] for e in history)

    # evaluate on val reproduces the figures that selected the checkpoint
    report = evaluate_run(run_a, None, "val")
    assert report["confusion_matrix"] == best["val"]["confusion_matrix"]
    assert report["score"] == pytest.approx(best["val"]["score"])
    model, run_cfg = load_run(run_a)
    assert {"labels", "features", "data", "best"} <= set(run_cfg)
    x = torch.zeros(2, 798, 128)
    assert model(x).shape == (2, len(LABELS)) and not model.training

    # interrupted after epoch 1, then resumed: identical to the uninterrupted run
    class Interrupt(Exception):
        pass

    def stop_after_first(epoch: int, entry: dict) -> None:
        if epoch == 1:
            raise Interrupt

    cfg_b = dataclasses.replace(cfg, out=str(tmp_path / "b"))
    with pytest.raises(Interrupt):
        train(cfg_b, on_epoch_end=stop_after_first)
    assert len(json.loads((tmp_path / "b" / "metrics.json").read_text())) == 1
    run_b = train(dataclasses.replace(cfg_b, resume=True))
    assert _strip_timing(json.loads((run_b / "metrics.json").read_text())) == _strip_timing(history)
    wa = torch.load(run_a / CHECKPOINT, weights_only=False)["trainable"]
    wb = torch.load(run_b / CHECKPOINT, weights_only=False)["trainable"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)

    # resuming with other settings, or training into an existing run, fails and changes nothing
    before = (run_b / "config.json").read_text()
    with pytest.raises(TrainError, match="lr"):
        train(dataclasses.replace(cfg_b, resume=True, lr=0.5))
    with pytest.raises(TrainError, match="exists; pass --resume"):
        train(cfg_b)
    assert (run_b / "config.json").read_text() == before

    # a corrupt checkpoint is reported, not loaded
    (run_b / CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(TrainError, match="corrupt checkpoint"):
        train(dataclasses.replace(cfg_b, resume=True))


@pytest.mark.slow
def test_cli_train_seeds_and_evaluate(synth_db: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edge_lung.cli import app

    out = tmp_path / "seeds"
    args = ["train", "--data", str(synth_db), "--out", str(out), "--backbone", "tiny", "--adapter", "none",
            "--optimizer", "adamw", "--epochs", "1", "--batch-size", "8", "--max-cycles", "12", "--seeds", "0,1",
            "--no-progress", "--num-threads", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "mean +- std" in result.output
    summary = json.loads((out / "seeds_summary.json").read_text())
    assert len(summary["runs"]) == 2 and set(summary["mean"]) >= {"score", "sensitivity", "specificity"}

    result = CliRunner().invoke(app, ["evaluate", str(out / "seed0"), "--split", "test"])
    assert result.exit_code == 0, result.output
    assert "ICBHI official" in result.output and "Relaxed 2-class" in result.output
    result = CliRunner().invoke(app, ["evaluate", str(out / "seed0"), "--split", "val", "--json"])
    report = json.loads(result.stdout)
    assert report["split"] == "val" and len(report["confusion_matrix"]) == 4

    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "nothing"), "--split", "test"])
    assert result.exit_code == 2 and "nothing: no such directory" in result.output  # issue 10: not "no config.json"
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "empty"), "--split", "test"])
    assert result.exit_code == 2 and "config.json" in result.output


@pytest.mark.slow
def test_checkpoint_backbone_trains_lung_adapter_by_default(synth_db: Path, tmp_path: Path) -> None:
    from transformers import ASTConfig, ASTForAudioClassification

    from edge_lung.train.evaluate import evaluate_run

    torch.manual_seed(0)
    ckpt = ASTForAudioClassification(ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                               intermediate_size=64, max_length=1024, num_labels=5))
    ckpt.save_pretrained(tmp_path / "ckpt")  # an AudioSet-shaped checkpoint (12 x 101 grid)
    run = train(_quick(synth_db, tmp_path / "run", backbone=str(tmp_path / "ckpt"), adapter="auto", epochs=1,
                       max_cycles=8))
    config = json.loads((run / "config.json").read_text())
    assert config["adapter"] == "lung" and config["backbone_kind"] == "dir"
    assert config["parameters"]["trainable"] < config["parameters"]["total"]
    report = evaluate_run(run, None, "val")
    assert report["score"] == pytest.approx(config["best"]["val"]["score"])
    # a crash between saving the model and recording it as best is detected, not exported silently
    from edge_lung.train.model import RunError, load_run

    (run / "model" / "adapter" / "selected.json").write_text(json.dumps({"epoch": 99}))
    with pytest.raises(RunError, match="saved model is epoch 99 but config.json selects epoch 1"):
        load_run(run)


def test_train_seeds_rejects_duplicates(tmp_path) -> None:
    with pytest.raises(TrainError, match="distinct"):
        train_seeds(TrainConfig(data=str(tmp_path)), [1, 1])


@pytest.mark.slow
@pytest.mark.real_data
def test_real_subset_trains_and_evaluates(icbhi_dir: Path, tmp_path: Path) -> None:
    from edge_lung.train.evaluate import evaluate_run

    run = train(_quick(icbhi_dir, tmp_path / "real", adapter="none", optimizer="adamw", epochs=1, max_cycles=24))
    report = evaluate_run(run, None, "val")  # the subset holds official-train recordings only: no test split
    config = json.loads((run / "config.json").read_text())
    assert report["num_cycles"] == config["val_cycles"] > 0
    assert report["confusion_matrix"] == config["best"]["val"]["confusion_matrix"]  # what selected it
    assert sum(map(sum, report["confusion_matrix"])) == report["num_cycles"]


def test_cli_train_defaults_are_the_library_defaults() -> None:
    import typer

    from edge_lung.cli import app
    from edge_lung.cli.train_cmd import _parse_seeds

    params = {p.name: p for p in typer.main.get_command(app).commands["train"].params}
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    # every field is an option except the feature settings (they travel in config.json); --seeds sets seed
    assert set(fields) - set(params) == {"features", "seed"}
    assert set(params) - set(fields) == {"seeds"}
    assert params["data"].required and fields["data"].default is dataclasses.MISSING
    differ = {name: (params[name].default, f.default) for name, f in fields.items()
              if name in params and name != "data" and params[name].default != f.default}
    assert not differ, f"CLI default != TrainConfig default: {differ}"
    assert _parse_seeds(params["seeds"].default) == [TrainConfig.seed]


def test_default_batch_gives_a_small_database_enough_steps() -> None:
    """`batch_size` unset: 32 where an epoch is at least 10 steps at 32 (the README's 100-recording database,
    322-375 training cycles, and the real subset's 400), halved down to 8 below that; explicit values stand."""
    from edge_lung.train.config import MIN_BATCH_SIZE, MIN_STEPS_PER_EPOCH, resolve_batch_size

    cfg = TrainConfig(data="db")
    assert cfg.batch_size is None
    chosen = {n: resolve_batch_size(cfg, n) for n in (1, 50, 80, 186, 222, 288, 289, 322, 375, 400, 7000)}
    assert chosen == {1: 8, 50: 8, 80: 8, 186: 16, 222: 16, 288: 16, 289: 32, 322: 32, 375: 32, 400: 32, 7000: 32}
    for n, batch in chosen.items():  # enough steps, or the smallest batch
        assert -(-n // batch) >= MIN_STEPS_PER_EPOCH or batch == MIN_BATCH_SIZE
    assert resolve_batch_size(dataclasses.replace(cfg, batch_size=32), 222) == 32
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(data="db", batch_size=0)
    # the named recipes keep the batch they were measured with, on any database size
    from edge_lung.train.recipes import RECIPES, apply_recipe

    for name in RECIPES:
        recipe_cfg = TrainConfig(**apply_recipe({"data": "db", "recipe": name, "batch_size": None}, ["data"]))
        assert resolve_batch_size(recipe_cfg, 100) == 32, name


LEARNING_RECORDINGS = 60
"""The smallest synthetic database the README's recipe must learn: `edge-lung data synth DB --recordings 60`,
then `edge-lung train --data DB --backbone tiny` (222 training cycles; the README's own example has 100)."""


@pytest.mark.slow
def test_default_recipe_learns_a_small_synthetic_database(tmp_path: Path) -> None:
    """The default recipe, untouched, must learn a 60-recording database: best validation Score >= 75
    (chance is 50; the README promises > 80). With a fixed batch of 32 (7 optimizer steps an epoch) this
    run ended at 70.4: a small database got half the updates (benchmarks/results/small-db).

    The threshold is set from measured spread (benchmarks/results/small-db/2026-12-08-small-db.md), one
    thread: this run (database and training seed 0) scored 81.8, 70.4 with the old fixed batch; over
    database and training seeds 0-2 the new default scored 81.8, 87.0, 76.8 and the old one 70.4, 72.2,
    73.2. 75 lies between the two sets (1.8 points under the new lowest, 1.8 over the old highest).
    Trained on one thread, so the result does not depend on the machine's thread count (it may still
    differ between CPU types, by about the spread over seeds). About two minutes on one free core, the
    suite's one long training: nothing cheaper measures whether training works at all."""
    from edge_lung.data.synth import synthesize_database

    db = tmp_path / "synth"
    synthesize_database(db, recordings=LEARNING_RECORDINGS, seed=0)
    run = train(TrainConfig(data=str(db), out=str(tmp_path / "run"), device="cpu", progress=False, num_threads=1))
    history = json.loads((run / "metrics.json").read_text())
    scores = [round(entry["val"]["score"], 1) for entry in history]
    assert max(scores) >= 75.0, f"validation Score per epoch never reached 75: {scores}"
    config = json.loads((run / "config.json").read_text())
    assert config["best"]["val"]["score"] == max(entry["val"]["score"] for entry in history)
    assert config["optimizer_steps"] >= 10 * config["train"]["epochs"]
