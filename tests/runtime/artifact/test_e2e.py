"""The device side of the end-to-end graph: `E2EClassifier`, `edge-lung verify` on test_vectors.npz."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx", reason="building model.e2e.onnx needs onnx (pip install '.[export]')")

from edge_lung.config import FeatureConfig  # noqa: E402
from edge_lung.fileio import sha256_file  # noqa: E402
from edge_lung.runtime.artifact.e2e import E2E_NAME, VECTORS_NAME, E2EClassifier, read_vectors, verify_model_dir  # noqa: E402
from edge_lung.runtime.artifact.model_dir import ArtifactError  # noqa: E402

SHORT = FeatureConfig(window_s=4.0, num_mel_bins=64)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edge_lung.testing import build_tiny_e2e_model

    return build_tiny_e2e_model(tmp_path_factory.mktemp("e2e") / "m", SHORT)


def _copy(tiny_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_dir, tmp_path / "copy"))


def test_verify_passes_on_an_exported_directory(tiny_dir: Path) -> None:
    report = verify_model_dir(tiny_dir)
    assert report["passed"] and report["windows"] == 4
    assert {c["check"] for c in report["checks"]} >= {"e2e graph features vs stored features",
                                                     "e2e graph vs model graph probabilities"}


def test_verify_reports_a_stored_value_the_graphs_do_not_reproduce(tiny_dir: Path, tmp_path: Path) -> None:
    model_dir = _copy(tiny_dir, tmp_path)
    v = read_vectors(model_dir / VECTORS_NAME)
    v["e2e_logits"][2, 1] += 1e-3  # as if the e2e graph had computed something else at export
    np.savez(model_dir / VECTORS_NAME, **v)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    manifest["test_vectors"]["sha256"] = sha256_file(model_dir / VECTORS_NAME)
    (model_dir / "manifest.json").write_text(json.dumps(manifest))
    report = verify_model_dir(model_dir)
    failed = [c["check"] for c in report["checks"] if not c["passed"]]
    assert not report["passed"] and failed == ["e2e graph vs stored e2e logits"]


@pytest.mark.parametrize("name", [E2E_NAME, VECTORS_NAME])
def test_verify_refuses_an_altered_file(tiny_dir: Path, tmp_path: Path, name: str) -> None:
    model_dir = _copy(tiny_dir, tmp_path)
    with open(model_dir / name, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ArtifactError, match=f"{name}: SHA-256 .* does not match the manifest"):
        verify_model_dir(model_dir)


def test_a_directory_without_the_e2e_graph_says_how_to_get_it(tiny_dir: Path, tmp_path: Path) -> None:
    from edge_lung.runtime.artifact.model_dir import write_manifest

    model_dir = _copy(tiny_dir, tmp_path)
    write_manifest(model_dir, model_dir / "tiny.onnx")  # as an export before issue 16 wrote it
    with pytest.raises(ArtifactError, match="lists no 'e2e' file; export the model again"):
        E2EClassifier(model_dir)


def test_e2e_classifier_checks_the_window_length(tiny_dir: Path) -> None:
    clf = E2EClassifier(tiny_dir, threads=1)
    assert clf.info.features == SHORT and clf.probabilities(np.zeros(SHORT.window_samples, np.float32)).shape == (1, 4)
    with pytest.raises(ValueError, match=r"expected audio \[B, 64000\] \(4.0 s at 16000 Hz, cyclic-padded\)"):
        clf.probabilities(np.zeros(SHORT.window_samples - 1, np.float32))


def test_classify_with_the_e2e_graph_gives_the_same_decisions(tiny_dir: Path, tmp_path: Path) -> None:
    """`--graph e2e` and the default numpy front end + model graph: same windows, same probabilities."""
    from edge_lung.runtime.commands.session import load_classifier
    from edge_lung.runtime.live.stream import StreamConfig
    from edge_lung.runtime.offline.classify import classify_files
    from edge_lung.testing import write_signal

    wav = tmp_path / "rec.wav"
    write_signal(wav, 15.0, 44100, seed=2)  # resampled to the model's 16 kHz by the stream
    results = {}
    for graph in ("model", "e2e"):
        clf = load_classifier(tiny_dir, StreamConfig(hop_s=1.0), threads=1, quality="off", graph=graph)
        results[graph] = []
        classify_files(clf, [wav], on_decision=results[graph].append)
    model, e2e = (np.stack([d.probabilities for d in results[g]]) for g in ("model", "e2e"))
    assert model.shape == e2e.shape and model.shape[0] >= 10
    assert np.abs(model - e2e).max() < 1e-4
    assert len(set(model.argmax(1))) >= 2
    assert all(d.feature_ms == 0.0 for d in results["e2e"])


def test_verify_command_exit_status(tiny_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edge_lung.cli import app

    ok = CliRunner().invoke(app, ["verify", str(tiny_dir), "--json", str(tmp_path / "v.json")])
    assert ok.exit_code == 0, ok.output
    assert "all checks passed" in ok.output and json.loads((tmp_path / "v.json").read_text())["passed"]
    bad = CliRunner().invoke(app, ["verify", str(tmp_path)])
    assert bad.exit_code == 2 and "no manifest.json" in bad.output
