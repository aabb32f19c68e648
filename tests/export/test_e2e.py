"""Issue 24: the icbhi-robust front end (20-2000 Hz, 64 bins, per-window mel normalisation) exports with
model.e2e.onnx, and `edge-lung verify` passes on it.

Before, `edge-lung export R --int8` of an `--recipe icbhi-robust` run failed: the ONNX front end had no
per-window normalisation, so the e2e graph missed feature parity by 6.6 and nothing was written.
A tiny AST is trained for one epoch on 32 cycles (about 20 s on a 2-core VM); speed is not the point here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("onnx", reason="export needs onnx (pip install '.[export]')")

from edge_lung.config import FeatureConfig  # noqa: E402
from edge_lung.export.onnx import ExportConfig, export_model  # noqa: E402
from edge_lung.runtime.artifact.e2e import E2E_NAME, verify_model_dir  # noqa: E402

ROBUST_FEATURES = FeatureConfig(high_freq_hz=2000.0, num_mel_bins=64)  # the icbhi-robust recipe's (v2)


@pytest.mark.slow
def test_robust_front_end_exports_the_end_to_end_graph_and_verify_passes(tmp_path: Path, synth_db: Path) -> None:
    from edge_lung.train.config import TrainConfig
    from edge_lung.train.loop import train

    run = train(TrainConfig(
        data=str(synth_db), out=str(tmp_path / "run"), backbone="tiny", adapter="none", optimizer="adamw",
        epochs=1, batch_size=16, max_cycles=32, mel_norm="window", channel_aug=True, spec_augment=False,
        sampler="uniform", device="cpu", progress=False, features=ROBUST_FEATURES.to_dict(),
    ))
    out = tmp_path / "model"
    export_model(run, out, ExportConfig(int8=True, quant="dynamic", parity_size=8), log=lambda *_: None)
    parity = json.loads((out / "parity.json").read_text())
    e2e = parity["e2e"]
    assert e2e["passed"] and e2e["features_max_abs_diff"] <= 1e-4 and e2e["logits_max_abs_diff"] < 1e-4, e2e
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["e2e"]["file"] == E2E_NAME and manifest["features"]["mel_norm"] == "window"
    report = verify_model_dir(out)
    assert report["passed"], report["checks"]
