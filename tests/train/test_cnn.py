"""Distillation students as backbones (issue #13): the AST student and the log-mel CNN build, train, save,
load back and export through the same paths as every other backbone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from edge_lung.config import LABELS, FeatureConfig  # noqa: E402
from edge_lung.train.cnn import LogMelCNN, is_cnn_dir  # noqa: E402
from edge_lung.train.model import (  # noqa: E402
    BackboneError,
    LogitsAndEmbedding,
    LogitsModel,
    RunError,
    attach_adapter,
    build_model,
    load_run,
    model_kind,
    save_trained,
)

FEATURES = FeatureConfig()
QUIET = dict(log=lambda *_: None)


def _x(n: int, features: FeatureConfig = FEATURES, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(
        (n, features.num_frames, features.num_mel_bins)).astype(np.float32))


@pytest.mark.parametrize("backbone", ["ast-student", "mobilenet"])
def test_students_give_logits_and_pooled_embedding(backbone: str) -> None:
    torch.manual_seed(0)
    net = LogitsModel(build_model(backbone, len(LABELS), FEATURES, adapter="none")).eval()
    with torch.no_grad():
        logits, emb = net.logits_and_embedding(_x(2))
        assert logits.shape == (2, len(LABELS)) and emb.ndim == 2 and emb.shape[0] == 2
        torch.testing.assert_close(net(_x(2)), logits, rtol=0, atol=0)  # forward is the first output
    expected = {"ast-student": (192, 12, 16), "mobilenet": None}[backbone]
    if expected is not None:
        cfg = net.model.config
        assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.time_stride) == expected
        assert cfg.frequency_stride == cfg.patch_size == 16  # non-overlapping 16 x 16 patches


def test_cnn_takes_a_64_bin_front_end() -> None:
    features = FeatureConfig(num_mel_bins=64)
    model = build_model("mobilenet", len(LABELS), features, adapter="none").eval()
    assert model.config.num_mel_bins == 64
    with torch.no_grad():
        assert model(_x(1, features)).shape == (1, len(LABELS))


def _hand_made_run(run_dir: Path, model: torch.nn.Module, features: FeatureConfig, backbone: str) -> None:
    """A run folder as `train` leaves it, without training: the model saved by `save_trained`, config.json."""
    save_trained(model, run_dir, epoch=3)
    config = {"labels": list(LABELS), "features": features.to_dict(), "data": "unused", "adapter": "none",
              "backbone": backbone, "best": {"epoch": 3, "val": {"score": 60.0}}}
    (run_dir / "config.json").write_text(json.dumps(config))


def test_cnn_run_round_trips_through_load_run(tmp_path: Path) -> None:
    features = FeatureConfig(num_mel_bins=64)
    torch.manual_seed(1)
    model = build_model("mobilenet", len(LABELS), features, adapter="none")
    model.train()
    with torch.no_grad():  # move the BatchNorm running statistics off their defaults, so they must be saved
        model(_x(4, features, seed=3) * 2 + 1)
    model.eval()
    _hand_made_run(tmp_path, model, features, "mobilenet")
    assert is_cnn_dir(tmp_path / "model" / "backbone")
    loaded, cfg = load_run(tmp_path)
    assert model_kind(loaded) == "cnn" and isinstance(loaded.model, LogMelCNN)
    x = _x(3, features, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
        torch.testing.assert_close(loaded.logits_and_embedding(x)[1], model.logits_and_embedding(x)[1], rtol=0, atol=0)


def test_cnn_run_for_other_features_is_refused(tmp_path: Path) -> None:
    model = build_model("mobilenet", len(LABELS), FeatureConfig(num_mel_bins=64), adapter="none").eval()
    _hand_made_run(tmp_path, model, FEATURES, "mobilenet")  # config.json claims 128 bins
    with pytest.raises(RunError, match=r"model expects \[798, 64\] features, run config says \[798, 128\]"):
        load_run(tmp_path)


def test_saved_cnn_is_a_backbone_with_a_new_head(tmp_path: Path) -> None:
    from edge_lung.train.cnn import save_cnn

    torch.manual_seed(0)
    source = build_model("mobilenet", 7, FEATURES, adapter="none").eval()
    save_cnn(source, tmp_path / "cnn")
    model = build_model(str(tmp_path / "cnn"), len(LABELS), FEATURES, adapter="none").eval()
    assert model.config.num_labels == len(LABELS) and model.classifier.out_features == len(LABELS)
    x = _x(1)
    with torch.no_grad():  # the body's weights came over
        torch.testing.assert_close(model.embedding(x), source.embedding(x), rtol=0, atol=0)
    with pytest.raises(BackboneError, match="expected a CNN for 64 mel bins, got 128"):
        build_model(str(tmp_path / "cnn"), len(LABELS), FeatureConfig(num_mel_bins=64), adapter="none")


@pytest.mark.parametrize("adapter", ["lung", "lora"])
def test_adapters_on_a_cnn_are_refused_with_the_way_out(adapter: str, tmp_path: Path) -> None:
    from edge_lung.train.config import TrainConfig, resolve_adapter

    with pytest.raises(ValueError, match=rf"--adapter {adapter}: the backbone mobilenet is a CNN.*--adapter none"):
        TrainConfig(data=str(tmp_path), backbone="mobilenet", adapter=adapter)
    with pytest.raises(BackboneError, match="use --adapter none"):
        attach_adapter(build_model("mobilenet", len(LABELS), FEATURES, adapter="none"), adapter)
    assert resolve_adapter(TrainConfig(data=str(tmp_path), backbone="mobilenet")) == "none"


# ---------------------------------------------------------------------------------------------
# A CNN run trained by `train`, exported by `export`, read by the runtime


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory: pytest.TempPathFactory, synth_db: Path) -> Path:
    from edge_lung.train.config import TrainConfig
    from edge_lung.train.loop import train

    cache = tmp_path_factory.getbasetemp() / "decode-cache"
    with pytest.MonkeyPatch.context() as mp:  # module-scoped: the autouse cache fixture is not active yet
        mp.setenv("EDGE_LUNG_CACHE_DIR", str(cache))
        out = tmp_path_factory.mktemp("students") / "cnn-run"
        cfg = TrainConfig(data=str(synth_db), out=str(out), backbone="mobilenet", optimizer="adamw", epochs=1,
                          batch_size=8, max_cycles=16, device="cpu", progress=False, cache_dir=str(cache))
        return train(cfg)


@pytest.mark.slow
def test_cnn_run_exports_with_onnx_parity(cnn_run: Path, tmp_path: Path) -> None:
    import onnx

    from edge_lung.export.onnx import ExportConfig, export_model
    from edge_lung.runtime.artifact.model_dir import EMBEDDING_NAME, INPUT_NAME, OUTPUT_NAME, OnnxClassifier

    config = json.loads((cnn_run / "config.json").read_text())
    assert config["adapter"] == "none" and config["backbone_kind"] == "size"
    record = export_model(cnn_run, tmp_path / "fp32", ExportConfig(parity_size=12), **QUIET)
    assert record["fp32_vs_torch"]["max_abs_logit_diff"] < 1e-4 and record["fp32_vs_torch"]["passed"]
    graph = onnx.load(str(tmp_path / "fp32" / "model.onnx")).graph
    assert [i.name for i in graph.input] == [INPUT_NAME]
    assert [o.name for o in graph.output] == [OUTPUT_NAME, EMBEDDING_NAME]
    model, _ = load_run(cnn_run)
    x = _x(2)
    with torch.no_grad():
        want_logits, want_emb = LogitsAndEmbedding(model)(x)
    clf = OnnxClassifier(tmp_path / "fp32", threads=1)
    np.testing.assert_allclose(clf.logits(x.numpy()), want_logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(clf.embeddings(x.numpy()), want_emb.numpy(), atol=1e-4)


@pytest.mark.slow
def test_explain_refuses_a_cnn_run_and_names_the_alternative(cnn_run: Path, synth_db: Path, tmp_path: Path) -> None:
    from edge_lung.train.explain import explain_recording

    wav = sorted((synth_db / "ICBHI_final_database").glob("*.wav"))[0]
    with pytest.raises(ValueError, match="is a CNN.*edge-lung report"):
        explain_recording(cnn_run, wav, tmp_path / "rollout.png")


# ---------------------------------------------------------------------------------------------
# INT8 per model kind, and the cost per window


def test_auto_quantisation_follows_the_model_kind() -> None:
    from edge_lung.export.quantize import resolve_quant

    assert resolve_quant("auto", "transformer") == "dynamic" and resolve_quant("auto", "cnn") == "static"
    assert resolve_quant("dynamic", "cnn") == "dynamic" and resolve_quant("static", "transformer") == "static"
    with pytest.raises(ValueError, match="model kind: expected one of"):
        resolve_quant("auto", "rnn")
    with pytest.raises(ValueError, match="--quant: expected one of"):
        resolve_quant("fp16", "cnn")


def test_macs_of_a_graph_whose_cost_is_known(tmp_path: Path) -> None:
    """One MatMul [1, T, M] x [M, K] costs T*M*K multiply-accumulates, and nothing else is in the graph."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edge_lung.export.cost import count_macs
    from edge_lung.runtime.artifact.model_dir import INPUT_NAME

    features, k = FeatureConfig(num_mel_bins=64), 5
    w = np.ones((features.num_mel_bins, k), np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", [INPUT_NAME, "W"], ["y"])], "g",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", features.num_frames, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", features.num_frames, k])],
        initializer=[numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "m.onnx"))
    cost = count_macs(tmp_path / "m.onnx", features)
    assert cost["macs"] == features.num_frames * 64 * k and cost["by_op"] == {"MatMul": cost["macs"]}
    assert cost["params"] == 64 * k


def _conv_macs(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of every convolution of `model` on `x`, from the layer shapes (bias add included:
    BatchNorm folds into a bias at export)."""
    total = 0

    def hook(mod, _inp, out) -> None:
        nonlocal total
        total += out.numel() * (mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1] + 1)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return total


@pytest.mark.slow
def test_cnn_int8_export_is_static_with_its_convolutions_quantised(cnn_run: Path, tmp_path: Path) -> None:
    import onnx

    from edge_lung.bench.measure import measure_onnx
    from edge_lung.export.onnx import ExportConfig, export_model

    record = export_model(cnn_run, tmp_path / "int8", ExportConfig(int8=True, parity_size=12, calibration_size=8),
                          **QUIET)
    manifest = json.loads((tmp_path / "int8" / "manifest.json").read_text())
    assert manifest["quantization"] == "int8-static" and record["int8_vs_fp32"]["mode"] == "static"
    assert manifest["run"]["quantization"]["kind"] == "cnn" and "Conv" in manifest["run"]["quantization"]["op_types"]
    graph = onnx.load(str(tmp_path / "int8" / "model.int8.onnx")).graph
    producers = {o: n.op_type for n in graph.node for o in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    quantised = [n for n in convs if producers.get(n.input[1]) == "DequantizeLinear"]
    assert len(quantised) >= len(convs) - 2, f"{len(quantised)} of {len(convs)} convolutions take INT8 weights"
    # the cost counted at export: the convolutions' share agrees with the layer shapes
    model, _ = load_run(cnn_run)
    cost = manifest["run"]["cost"]
    assert cost["by_op"]["Conv"] == _conv_macs(model.model, _x(1))
    assert cost["macs"] >= cost["by_op"]["Conv"] and cost["counted_by"].startswith("onnx-tool")
    # bench reads it and turns it into a rate at the model's median latency
    row = measure_onnx(tmp_path / "int8", threads=1, windows=3, warmup=1, seed=0)
    assert row["gmac_per_window"] == pytest.approx(cost["macs"] / 1e9, abs=1e-4)
    assert row["gmac_per_s"] == pytest.approx(row["gmac_per_window"] / (row["model_ms"]["p50"] / 1000), rel=1e-2)


def test_resume_checkpoint_keeps_the_cnn_batchnorm_statistics(tmp_path: Path) -> None:
    """A resumed CNN run continues from the same model: running means and variances are not parameters, so the
    checkpoint must carry them too."""
    from edge_lung.train.rundir import restore_checkpoint, save_checkpoint

    torch.manual_seed(0)
    trained = LogitsModel(build_model("mobilenet", len(LABELS), FeatureConfig(num_mel_bins=64), adapter="none"))
    with torch.no_grad():
        trained(_x(4, FeatureConfig(num_mel_bins=64)) * 3 + 2)  # train mode: the running statistics move
    optimizer = torch.optim.AdamW(trained.parameters())
    save_checkpoint(tmp_path, 2, [], None, trained, optimizer)
    fresh = LogitsModel(build_model("mobilenet", len(LABELS), FeatureConfig(num_mel_bins=64), adapter="none"))
    restore_checkpoint(fresh, torch.optim.AdamW(fresh.parameters()), torch.load(tmp_path / "checkpoint.pt"), tmp_path)
    x = _x(2, FeatureConfig(num_mel_bins=64), seed=5)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), trained.eval()(x), rtol=0, atol=0)


def test_precise_batchnorm_sets_the_plain_average_and_leaves_a_model_without_batchnorm_alone() -> None:
    """Before validation the loop re-estimates BatchNorm statistics at the current weights: the running
    mean/var become the plain mean/var of the batches' activations, not a lagging exponential average."""
    from edge_lung.train.loop import precise_batchnorm

    bn = torch.nn.BatchNorm1d(3, momentum=0.1)
    batches = [torch.randn(8, 3) * 2 + 5, torch.randn(8, 3) * 2 + 5]
    assert precise_batchnorm(bn, iter(batches)) == 1
    stacked = torch.cat(batches)
    assert torch.allclose(bn.running_mean, stacked.mean(0), atol=1e-5)
    # a cumulative average of per-batch unbiased variances (what momentum=None keeps)
    assert torch.allclose(bn.running_var, torch.stack([b.var(0) for b in batches]).mean(0), atol=1e-4)
    assert not bn.training and bn.momentum == 0.1

    linear = torch.nn.Linear(3, 2).train()
    before = {k: v.clone() for k, v in linear.state_dict().items()}
    assert precise_batchnorm(linear, iter(batches)) == 0
    assert not linear.training and all(torch.equal(before[k], v) for k, v in linear.state_dict().items())


def test_a_cnn_trained_briefly_is_not_collapsed_by_its_batchnorm_statistics(synth_db: Path, tmp_path: Path) -> None:
    """The mobilenet's validation used to predict "normal" for every cycle (Score 50.0) because its running
    statistics lagged its weights; with the statistics re-estimated before validation it predicts more
    than one class after a few epochs on the synthetic database."""
    from edge_lung.train.config import TrainConfig
    from edge_lung.train.loop import train

    run = train(TrainConfig(data=str(synth_db), out=str(tmp_path / "run"), backbone="mobilenet", adapter="none",
                            epochs=3, lr=3e-3, batch_size=16, seed=0, progress=False, num_threads=2,
                            features={"num_mel_bins": 64}))
    history = json.loads((run / "metrics.json").read_text())
    best = max(history, key=lambda e: e["val"]["score"])["val"]
    used = [i for i, row in enumerate(np.asarray(best["confusion_matrix"]).T) if row.sum() > 0]
    assert len(used) > 1, f"the CNN predicts one class only: {best['confusion_matrix']}"
    assert best["score"] > 55.0
