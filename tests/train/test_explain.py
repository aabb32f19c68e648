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
