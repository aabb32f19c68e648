"""LungAdapter as a PEFT method: zero-init, frozen backbone, placements, save/reload, parameter share."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from edge_lung.config import LABELS, FeatureConfig  # noqa: E402
from edge_lung.train.adapters import LungAdapterConfig, LungAdapterLayer  # noqa: E402
from edge_lung.train.model import attach_adapter, count_parameters, load_backbone, size_config  # noqa: E402

FEATURES = FeatureConfig()


def _tiny(seed: int = 0):
    torch.manual_seed(seed)
    return load_backbone("tiny", FEATURES, len(LABELS))


def _x(n: int = 2) -> torch.Tensor:
    return torch.randn(n, FEATURES.num_frames, FEATURES.num_mel_bins, generator=torch.Generator().manual_seed(1))


def test_fresh_adapter_leaves_the_backbone_function_unchanged() -> None:
    base = _tiny()
    x = _x()
    with torch.no_grad():
        ref = base(input_values=x).logits
    model = attach_adapter(base, "lung", width=16)
    with torch.no_grad():
        out = model(input_values=x).logits
    torch.testing.assert_close(out, ref)


def test_only_adapters_head_and_final_norm_train() -> None:
    model = attach_adapter(_tiny(), "lung", width=16)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    for name in trainable:
        assert "lung_adapter_" in name or "modules_to_save" in name, name
    assert any("classifier.modules_to_save" in n for n in trainable)
    assert any("audio_spectrogram_transformer.layernorm.modules_to_save" in n for n in trainable)
    assert not any("layers.0.mlp.base_layer.fc1" in n for n in trainable)


@pytest.mark.parametrize("placement,wrapped", [("both", {"attention", "mlp"}), ("attention", {"attention"}),
                                               ("mlp", {"mlp"})])
def test_placements(placement: str, wrapped: set[str]) -> None:
    model = attach_adapter(_tiny(), "lung", width=8, placement=placement)
    kinds = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, LungAdapterLayer)}
    assert kinds == wrapped
    layers = sum(isinstance(m, LungAdapterLayer) for m in model.modules())
    assert layers == 2 * len(wrapped)  # tiny has 2 transformer layers


def test_save_and_reload_gives_identical_logits(tmp_path) -> None:
    model = attach_adapter(_tiny(), "lung", width=16, scale=0.5)
    with torch.no_grad():  # move away from the zero init so that the adapter matters
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    model.eval()
    x = _x()
    with torch.no_grad():
        ref = model(input_values=x).logits
    model.save_pretrained(tmp_path / "adapter", save_embedding_layers=False)
    saved = LungAdapterConfig.from_pretrained(str(tmp_path / "adapter"))
    assert saved.peft_type == "LUNG_ADAPTER" and saved.width == 16 and saved.scale == 0.5

    reloaded = peft.PeftModel.from_pretrained(_tiny(), tmp_path / "adapter").eval()
    with torch.no_grad():
        out = reloaded(input_values=x).logits
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_adapter_learns() -> None:
    model = attach_adapter(_tiny(), "lung", width=8)
    x, y = _x(4), torch.tensor([0, 1, 2, 3])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(8):
        loss = torch.nn.functional.cross_entropy(model(input_values=x).logits, y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss))
    assert losses[-1] < losses[0]


def test_lora_and_none_are_the_comparison_points() -> None:
    lora = attach_adapter(_tiny(), "lora", lora_rank=4)
    assert lora.peft_type == "LORA"
    full = attach_adapter(_tiny(), "none")
    trainable, total = count_parameters(full)
    assert trainable == total


def test_base_size_trainable_share_at_width_64_is_at_most_3_percent() -> None:
    from transformers import ASTForAudioClassification

    with torch.device("meta"):  # shapes only: no 350 MB of weights
        base = ASTForAudioClassification(size_config("base", FEATURES, len(LABELS)))
        model = attach_adapter(base, "lung", width=64)
    trainable, total = count_parameters(model)
    share = 100.0 * trainable / total
    print(f"base + LungAdapter width 64: {trainable:,} of {total:,} parameters trainable ({share:.2f}%)")
    assert 80e6 < total < 95e6
    assert share <= 3.0


def test_bad_config() -> None:
    with pytest.raises(ValueError, match="placement"):
        LungAdapterConfig(placement="everywhere")
    with pytest.raises(ValueError, match="width"):
        LungAdapterConfig(width=0)
