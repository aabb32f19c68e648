"""`edge_lung.Classifier`: the README's three lines give `classify`'s decisions; `reset()` really resets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_lung.runtime.artifact.model_dir import OnnxClassifier
from edge_lung.runtime.live.stream import StreamConfig, StreamingClassifier
from edge_lung.runtime.offline.classify import classify_file
from edge_lung.testing import build_tiny_model, make_signal


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    # scale < 1 keeps the probabilities away from 0 and 1 on loud real recordings, so smoothing shows
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), scale=0.05)


def _key(d) -> tuple:
    probs = np.round(np.nan_to_num(d.probabilities, nan=-1.0), 6).tolist()
    smoothed = np.round(np.nan_to_num(d.smoothed_probabilities, nan=-1.0), 6).tolist()
    return d.window.start, d.window.end, d.label, d.verdict, probs, smoothed, d.smoothed_over


def test_readme_example_gives_classify_decisions_on_a_real_recording(model_dir, icbhi_dir):
    from edge_lung import Classifier

    wav = sorted((icbhi_dir / "ICBHI_final_database").glob("*.wav"))[0]
    samples, sample_rate = sf.read(wav, dtype="float32")
    # the README's three lines
    clf = Classifier(model_dir)
    decisions = [d for d in clf.accept_waveform(samples, sample_rate)]
    decisions += clf.finish()

    expected = classify_file(StreamingClassifier(OnnxClassifier(model_dir)), wav, keep_decisions=True).decisions
    assert len(decisions) == len(expected) > 5
    assert [_key(d) for d in decisions] == [_key(d) for d in expected]
    assert len({d.label for d in decisions}) >= 1 and all(d.source is None for d in decisions)


def test_block_size_does_not_change_decisions(model_dir):
    audio = make_signal(14.0, 22050, seed=3)
    runs = []
    for block in (220, 2205, 22050):  # 10 ms, 100 ms, 1 s
        from edge_lung import Classifier

        clf = Classifier(model_dir, config=StreamConfig(hop_s=0.5))
        got = []
        for pos in range(0, audio.shape[0], block):
            got += clf.accept_waveform(audio[pos : pos + block], 22050)
        runs.append([_key(d) for d in got + clf.finish()])
    assert runs[0] == runs[1] == runs[2] and len(runs[0]) > 10


def test_reset_forgets_the_stream_and_the_smoothing(model_dir):
    """Fails if `reset()` keeps the decider's smoothing history (a no-op `Decider.reset()`) or the window stream."""
    from edge_lung import Classifier

    first, second = make_signal(12.0, 16000, seed=1), make_signal(12.0, 16000, seed=2)
    fresh = Classifier(model_dir, config=StreamConfig(smooth=5))
    want = [_key(d) for d in fresh.accept_waveform(second, 16000) + fresh.finish()]

    clf = Classifier(model_dir, config=StreamConfig(smooth=5))
    clf.accept_waveform(first, 16000)
    clf.finish()
    clf.reset()
    got = [_key(d) for d in clf.accept_waveform(second, 16000) + clf.finish()]
    assert got == want


def test_misuse_is_refused_with_a_clear_message(model_dir):
    from edge_lung import Classifier

    clf = Classifier(model_dir, source="mic0")
    assert clf.labels == ("normal", "crackle", "wheeze", "both") and clf.sample_rate == 16000
    clf.accept_waveform(np.zeros(1600, np.float32), 16000)
    with pytest.raises(ValueError, match="runs at 16000 Hz, got a block at 8000 Hz"):
        clf.accept_waveform(np.zeros(800, np.float32), 8000)
    clf.finish()
    with pytest.raises(ValueError, match="call reset"):
        clf.accept_waveform(np.zeros(1600, np.float32), 16000)
    clf.reset()
    decisions = clf.accept_waveform(make_signal(4.0, 16000), 16000)
    assert decisions and all(d.source == "mic0" for d in decisions)
