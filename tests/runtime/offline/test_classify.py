"""`edge_lung.runtime.offline.classify`: annotations beside a recording, read against the audio's real length."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_lung.runtime.artifact.model_dir import OnnxClassifier
from edge_lung.runtime.live.stream import StreamingClassifier
from edge_lung.runtime.offline.classify import classify_file
from edge_lung.testing import build_tiny_model, write_signal


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> StreamingClassifier:
    return StreamingClassifier(OnnxClassifier(build_tiny_model(tmp_path_factory.mktemp("tiny")), threads=1))


def test_cycles_past_the_end_of_the_audio_are_named_with_their_line(classifier, tmp_path: Path):
    """A cycle past the end said only "10 (9 overlapped)" (issue 26): its line and reason are named, as `data
    summary` names them, and it is not counted as a cycle no window overlapped."""
    write_signal(tmp_path / "rec.wav", 20.0, 16000)
    lines = [f"{2 * i}\t{2 * i + 2}\t0\t0" for i in range(8)] + ["18\t22.5\t1\t0", "25\t27\t0\t1"]
    (tmp_path / "rec.txt").write_text("\n".join(lines) + "\n")
    result = classify_file(classifier, tmp_path / "rec.wav")
    assert "rec.txt: line 10: cycle 25.000-27.000 s starts past the audio end (20.000 s); skipped" in result.note
    assert "rec.txt: line 9: cycle 18.000-22.500 s ends past the audio end (20.000 s)" in result.note
    assert len(result.cycles) == 9 and all(m.predicted is not None for m in result.cycles)
