"""AST backbone: named sizes, local checkpoints at another length, offline hub ids, load_run errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from edge_lung.config import LABELS, FeatureConfig  # noqa: E402
from edge_lung.train.model import (  # noqa: E402
    BackboneError,
    RunError,
    build_model,
    interpolate_position_embeddings,
    load_run,
    patch_grid,
)

FEATURES = FeatureConfig()


def _tiny_checkpoint(tmp_path, max_length: int = 1024, num_labels: int = 7, mel_bins: int = 128):
    """A small AudioSet-shaped AST (strides 10, 12 x 101 grid at 1024 frames) saved with save_pretrained.

    Positional embeddings are constant along time within each frequency row and differ between
    rows, so the row structure must survive interpolation exactly.
    """
    from transformers import ASTConfig, ASTForAudioClassification

    cfg = ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                    max_length=max_length, num_mel_bins=mel_bins, num_labels=num_labels)
    torch.manual_seed(0)
    model = ASTForAudioClassification(cfg)
    freq, time = patch_grid(cfg)
    rows = torch.randn(freq, 1, cfg.hidden_size)
    pos = model.audio_spectrogram_transformer.embeddings.position_embeddings
    with torch.no_grad():
        pos[0, :2] = torch.randn(2, cfg.hidden_size)
        pos[0, 2:] = rows.expand(freq, time, cfg.hidden_size).reshape(freq * time, cfg.hidden_size)
    path = tmp_path / "ast-ckpt"
    model.save_pretrained(path)
    return path, model, rows


def test_named_sizes_forward_shape() -> None:
    torch.manual_seed(0)
    model = build_model("tiny", len(LABELS), FEATURES, adapter="none")
    x = torch.randn(2, FEATURES.num_frames, FEATURES.num_mel_bins)
    assert model(input_values=x).logits.shape == (2, len(LABELS))


def test_local_checkpoint_at_another_length_interpolates_time_only(tmp_path) -> None:
    path, source, rows = _tiny_checkpoint(tmp_path)
    model = build_model(str(path), len(LABELS), FEATURES, adapter="none")
    cfg = model.config
    assert cfg.max_length == FEATURES.num_frames == 798
    assert patch_grid(cfg) == (12, 79) and patch_grid(source.config) == (12, 101)
    pos = model.audio_spectrogram_transformer.embeddings.position_embeddings.detach()
    assert pos.shape == (1, 2 + 12 * 79, 32)
    src_pos = source.audio_spectrogram_transformer.embeddings.position_embeddings.detach()
    torch.testing.assert_close(pos[0, :2], src_pos[0, :2])  # CLS and distillation tokens untouched
    grid = pos[0, 2:].reshape(12, 79, 32)
    # frequency axis intact: every row still holds its own (time-constant) embedding
    torch.testing.assert_close(grid, rows.expand(12, 79, 32), rtol=1e-6, atol=1e-6)
    # other weights copied, head replaced for 4 labels
    torch.testing.assert_close(
        model.audio_spectrogram_transformer.layers[0].mlp.fc1.weight,
        source.audio_spectrogram_transformer.layers[0].mlp.fc1.weight,
    )
    assert model.classifier.dense.out_features == len(LABELS)
    x = torch.randn(1, FEATURES.num_frames, FEATURES.num_mel_bins)
    assert model(input_values=x).logits.shape == (1, len(LABELS))


def test_interpolation_along_time_is_smooth_resampling() -> None:
    freq, old, new, hidden = 3, 101, 79, 2
    t = torch.linspace(0.0, 1.0, old)
    grid = torch.stack([t * (f + 1) for f in range(freq)])  # [F, T]: a ramp per row
    pos = torch.cat([torch.zeros(1, 2, hidden), grid[:, :, None].expand(freq, old, hidden).reshape(1, -1, hidden)], 1)
    out = interpolate_position_embeddings(pos, freq, old, new)[0, 2:].reshape(freq, new, hidden)[..., 0]
    for f in range(freq):
        row = out[f].numpy()
        assert np.all(np.diff(row) > 0)  # still a ramp in time
        assert row[0] >= 0 and row[-1] <= f + 1 + 1e-6
    with pytest.raises(ValueError, match="expected"):
        interpolate_position_embeddings(pos, freq + 1, old, new)


def test_mel_bin_mismatch_is_a_clear_error(tmp_path) -> None:
    path, _, _ = _tiny_checkpoint(tmp_path, mel_bins=64)
    with pytest.raises(BackboneError, match="128 mel bins, got 64"):
        build_model(str(path), len(LABELS), FEATURES, adapter="none")


def test_hub_id_offline_gives_instructions(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # empty cache: nothing can be found locally
    with pytest.raises(BackboneError) as err:
        build_model("edge-lung-tests/no-such-model", len(LABELS), FEATURES, adapter="none")
    msg = str(err.value)
    assert "edge-lung-tests/no-such-model" in msg and "--backbone DIR" in msg and "--allow-download" in msg


def test_missing_local_dir_and_bad_names(tmp_path) -> None:
    with pytest.raises(BackboneError, match="no such directory"):
        build_model(str(tmp_path / "nope"), len(LABELS), FEATURES, adapter="none")
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(BackboneError, match="got a file"):
        build_model(str(tmp_path / "file.bin"), len(LABELS), FEATURES, adapter="none")
    (tmp_path / "blank").mkdir()  # a directory without a checkpoint in it
    with pytest.raises(BackboneError, match=r"blank: cannot load an AST checkpoint from it \("):
        build_model(str(tmp_path / "blank"), len(LABELS), FEATURES, adapter="none")
    with pytest.raises(ValueError, match="--adapter"):
        build_model("tiny", len(LABELS), FEATURES, adapter="bogus")


def test_load_run_errors(tmp_path) -> None:
    with pytest.raises(RunError, match="config.json"):
        load_run(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(RunError, match="not valid JSON"):
        load_run(tmp_path)
    cfg = {"labels": list(LABELS), "features": FEATURES.to_dict(), "data": "db", "adapter": "none", "best": None}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RunError, match="no selected checkpoint"):
        load_run(tmp_path)
    cfg["best"] = {"epoch": 1, "val": {"score": 50.0}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    backbone = tmp_path / "model" / "backbone"
    backbone.mkdir(parents=True)
    (backbone / "config.json").write_text("{}")
    (backbone / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(RunError, match="cannot load the saved model"):
        load_run(tmp_path)
