"""Attention rollout (Abnar & Zuidema 2020) on hand-made attention, and `explain` on a trained tiny AST."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def test_rollout_adds_the_residual_and_multiplies_layers_from_the_input_up():
    from edge_lung.train.explain import rollout

    n = 3
    uniform = torch.full((1, 2, n, n), 1.0 / n)  # two heads, both uniform
    first_token = torch.zeros(1, 1, n, n)
    first_token[..., 0] = 1.0  # every token attends to token 0
    a1 = 0.5 * np.full((n, n), 1.0 / n) + 0.5 * np.eye(n)
    a2 = 0.5 * np.eye(n)
    a2[:, 0] += 0.5
    np.testing.assert_allclose(rollout([uniform, first_token])[0], a2 @ a1, atol=1e-6)
    identity = torch.eye(n).expand(1, 4, n, n)
    np.testing.assert_allclose(rollout([identity] * 3)[0], np.eye(n), atol=1e-6)
    with pytest.raises(ValueError, match="at least one layer"):
        rollout([])


@pytest.mark.parametrize("kind", ["nan", "silence", "constant"])
def test_windows_the_quality_gate_holds_back_get_no_rollout(kind, tmp_path, monkeypatch):
    """An all-NaN file, digital silence or a constant level: every window is held back by the runtime's gate, so
    `explain` refuses naming the file and the verdicts, and never runs the model on them (issue 26)."""
    import soundfile as sf

    import edge_lung.train.model as model_module
    from edge_lung.config import FeatureConfig
    from edge_lung.train.explain import explain_recording

    audio = {"nan": np.full(48000, np.nan), "silence": np.zeros(48000), "constant": np.full(48000, 0.5)}[kind]
    sf.write(str(tmp_path / "bad.wav"), audio.astype(np.float32), 16000, subtype="FLOAT")
    fake = type("Run", (), {"model": type("Model", (), {"set_attn_implementation": lambda self, name: None})()})()
    cfg = {"features": FeatureConfig().to_dict(), "labels": ["normal", "crackle", "wheeze", "both"]}
    monkeypatch.setattr(model_module, "load_run", lambda run_dir: (fake, cfg))
    monkeypatch.setattr(model_module, "model_kind", lambda wrapped: "transformer")
    with pytest.raises(ValueError, match=r"bad.wav: no window passes the signal-quality gate \(\d+ (invalid|no_sig)"):
        explain_recording(tmp_path / "run", tmp_path / "bad.wav", tmp_path / "out.png")
