"""The device runtime never imports torch, transformers, optimum (or the onnx package) while it works.

tests/test_structure.py imports every device-side module (a pkgutil walk) and checks the import
alone; this file runs the real paths in fresh processes (load a model, classify a file, stream it
through a replay source, and the `edge-lung classify` command), which also catches a training
import done lazily inside a function."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from edge_lung.config import FeatureConfig
from edge_lung.testing import build_tiny_model, write_signal

FORBIDDEN = ("torch", "transformers", "optimum", "onnx", "peft", "accelerate")

LIBRARY_PATH = textwrap.dedent(
    """
    import json, sys
    from edge_lung.runtime.artifact.model_dir import OnnxClassifier
    from edge_lung.runtime import ReplaySource, StreamConfig, StreamingClassifier, classify_file, run_live

    model = OnnxClassifier(sys.argv[1], threads=1)
    classifier = StreamingClassifier(model, StreamConfig())
    result = classify_file(classifier, sys.argv[2])
    summary = run_live(classifier, ReplaySource(sys.argv[2]), backpressure=True)
    loaded = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[3].split(",")))
    print(json.dumps({"windows": result.windows, "live": summary.windows, "loaded": loaded}))
    """
)

CLI_PATH = textwrap.dedent(
    """
    import json, sys
    from edge_lung.cli import app
    try:
        app(["classify", sys.argv[1], sys.argv[2]], standalone_mode=False)
    finally:
        loaded = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[3].split(",")))
        print(json.dumps({"loaded": loaded}))
    """
)


@pytest.fixture(scope="module")
def model_and_file(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("notorch")
    model_dir = build_tiny_model(tmp / "model", FeatureConfig(window_s=4.0))
    wav = tmp / "rec.wav"
    write_signal(wav, 6.0, 44100, subtype="PCM_16")
    return model_dir, wav


def _run(code: str, model_dir, wav) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", code, str(model_dir), str(wav), ",".join(FORBIDDEN)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_runtime_library_loads_classifies_and_streams_without_torch(model_and_file):
    out = _run(LIBRARY_PATH, *model_and_file)
    assert out["windows"] == out["live"] == 5
    assert out["loaded"] == [], f"the runtime imported {out['loaded']}"


def test_edge_lung_classify_command_imports_no_training_stack(model_and_file):
    out = _run(CLI_PATH, *model_and_file)
    assert out["loaded"] == [], f"`edge-lung classify` imported {out['loaded']} (a CLI module imports it at top level)"
