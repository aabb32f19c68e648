"""Respiratory-cycle segmentation and per-breath decisions (`runtime.live.breaths`, issue 28)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from edge_lung import Classifier
from edge_lung.config import LABELS, FeatureConfig
from edge_lung.data.synth import _breath_noise, _cycle
from edge_lung.runtime.live.breaths import BreathConfig, BreathStream, cycle_iou, match_cycles, segment_audio
from edge_lung.runtime.live.stream import StreamConfig
from edge_lung.testing import build_tiny_model

RATE = 16000


def breathing(seconds_per_cycle: list[float], rate: int = RATE, seed: int = 0) -> tuple[np.ndarray, list]:
    """The synthetic database's cycles (data.synth) laid end to end with short pauses; returns the audio and
    the true (start_s, end_s) of every cycle."""
    rng = np.random.default_rng(seed)
    noise = _breath_noise(rng, int(max(seconds_per_cycle) * rate) + 1, rate)
    pauses = rng.uniform(0.05, 0.3, len(seconds_per_cycle) + 1)
    total = sum(seconds_per_cycle) + pauses.sum()
    wave = np.zeros(int(total * rate) + rate)
    t, truth = float(pauses[0]), []
    for k, dur in enumerate(seconds_per_cycle):
        x, _ = _cycle(rng, int(rng.integers(4)), dur, rate, noise)
        i = int(t * rate)
        wave[i : i + x.shape[0]] += x
        truth.append((t, t + dur))
        t += dur + pauses[k + 1]
    wave += 0.004 * rng.standard_normal(wave.shape[0])  # the sensor floor between cycles, as synth adds
    return wave.astype(np.float32), truth


def _durations(n: int, seed: int) -> list[float]:
    return list(np.random.default_rng(seed).uniform(2.2, 3.0, n))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), scale=0.05)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_synthetic_breaths_are_found_within_tolerance(seed):
    """Fails if boundaries drift (e.g. a cycle split at the inhale/exhale dip, or no boundary found)."""
    audio, truth = breathing(_durations(12, seed), seed=seed)
    # the synthetic cycles start at their quietest point; ICBHI's annotators mark a cycle later (the default
    # offset_s, tuned on their annotations), so the synthetic truth is compared without it
    found = segment_audio(audio, RATE, dataclasses.replace(BreathConfig(), offset_s=0.0))
    pairs = match_cycles(found, truth)
    assert len(pairs) == len(found), "every detected breath matches a true cycle (IoU >= 0.5)"
    assert len(pairs) >= len(truth) - 3  # the first cycle has no start boundary, the last no confirmed end
    for i, j in pairs:  # each boundary within 0.35 s of the truth (the pauses between cycles are up to 0.3 s)
        assert abs(found[i][0] - truth[j][0]) < 0.35 and abs(found[i][1] - truth[j][1]) < 0.35


@pytest.mark.parametrize("bad", ["silence", "clipping", "nan"])
def test_a_bad_stretch_is_a_gap_not_a_breath(bad):
    """Fails if silence, full-scale input or NaN between breaths is taken into (or taken for) a breath."""
    audio, _ = breathing(_durations(14, 5), seed=5)
    a, b = 12 * RATE, int(13.5 * RATE)  # 1.5 s: short enough to sit inside what looks like one cycle
    if bad == "silence":
        audio[a:b] = 0.0
    elif bad == "clipping":
        audio[a:b] = np.sign(np.sin(np.arange(b - a) * 2 * np.pi * 300 / RATE)).astype(np.float32)
    else:
        audio[a:b] = np.nan
    found = segment_audio(audio, RATE)
    assert found, "breaths on both sides of the gap are still found"
    assert any(end <= a / RATE for _, end in found) and any(start >= b / RATE for start, _ in found)
    for start, end in found:
        assert end <= a / RATE or start >= b / RATE, f"breath {start:.2f}-{end:.2f} s overlaps the {bad} stretch"


def test_block_size_does_not_change_the_breaths():
    audio, _ = breathing(_durations(8, 3), rate=22050, seed=3)
    features = FeatureConfig(sample_rate=RATE)
    runs = []
    for block in (220, 2205, 22050):  # 10 ms, 100 ms, 1 s at 22.05 kHz
        stream = BreathStream(features, BreathConfig(), 22050)
        got = []
        for pos in range(0, audio.shape[0], block):
            got += stream.accept_waveform(audio[pos : pos + block])
        got += stream.finish()
        runs.append([(w.start, w.end, w.clipped, w.span) for w in got])
    assert runs[0] == runs[1] == runs[2] and len(runs[0]) >= 4


def test_a_breath_is_known_within_the_stated_delay():
    audio, _ = breathing(_durations(8, 4), seed=4)
    stream = BreathStream(FeatureConfig(sample_rate=RATE), BreathConfig(), RATE)
    block = RATE // 100
    delays = []
    for pos in range(0, audio.shape[0], block):
        for w in stream.accept_waveform(audio[pos : pos + block]):
            delays.append((pos + block) / RATE - w.end_s)
    assert delays and max(delays) <= BreathConfig().decision_delay_s + 0.02
    assert BreathConfig().decision_delay_s <= 1.0


def _key(d) -> tuple:
    probs = np.round(np.nan_to_num(d.probabilities, nan=-1.0), 6).tolist()
    rate = getattr(d, "rate_bpm", None)
    return type(d).__name__, d.window.index, d.window.start, d.window.end, d.label, d.verdict, probs, rate


@pytest.mark.parametrize("decide", ["breath", "window"])
def test_each_mode_gives_identical_decisions_run_twice(model_dir, decide):
    """Fails if a mode keeps state across `reset()` (the breath segmenter's period, the rate window, ...)."""
    audio, _ = breathing(_durations(10, 6), seed=6)
    clf = Classifier(model_dir, decide=decide)
    runs = []
    for _ in range(2):
        runs.append([_key(d) for d in clf.accept_waveform(audio, RATE) + clf.finish()])
        clf.reset()
    fresh = Classifier(model_dir, config=StreamConfig(decide=decide))
    runs.append([_key(d) for d in fresh.accept_waveform(audio, RATE) + fresh.finish()])
    assert runs[0] == runs[1] == runs[2] and len(runs[0]) >= 5
    assert {k[0] for k in runs[0]} == {"BreathDecision" if decide == "breath" else "Decision"}


def test_breath_event_schema(model_dir):
    audio, _ = breathing(_durations(8, 7), seed=7)
    # too quiet from 11 s (about -60 dBFS, above the segmenter's -70 dB floor): those breaths get a verdict
    quiet = slice(int(11 * RATE), None)
    audio[quiet] = 0.02 * audio[quiet] + 5e-4 * np.random.default_rng(0).standard_normal(audio[quiet].shape[0])
    clf = Classifier(model_dir, decide="breath", source="mic0")
    events = [json.loads(json.dumps(d.to_dict())) for d in clf.accept_waveform(audio, RATE) + clf.finish()]
    assert len(events) >= 4
    required = {"type", "source", "index", "start_s", "end_s", "label", "probabilities", "quality"}
    for k, e in enumerate(events):
        assert required <= set(e) and e["type"] == "breath" and e["source"] == "mic0" and e["index"] == k
        assert 0 <= e["start_s"] < e["end_s"] and list(e["probabilities"]) == list(LABELS)
        if e["quality"] == "ok":
            assert e["label"] in LABELS and math.isclose(sum(e["probabilities"].values()), 1.0, abs_tol=1e-4)
            assert e["rate_bpm"] is not None and 10 < e["rate_bpm"] < 40
        else:
            assert e["label"] == e["quality"] and all(p is None for p in e["probabilities"].values())
    assert {e["quality"] for e in events} >= {"ok", "too_quiet"}


def test_iou_and_matching():
    assert cycle_iou((0, 2), (1, 3)) == pytest.approx(1 / 3)
    assert cycle_iou((0, 1), (2, 3)) == 0.0
    assert match_cycles([(0.1, 2.0), (2.0, 2.5)], [(0, 2), (2, 4)]) == [(0, 0)]


def test_classify_matches_breaths_to_annotated_cycles_beside_window_mode(model_dir, tmp_path):
    """`classify --decide breath` on an annotated recording: breaths matched (IoU >= 0.5), window mode beside."""
    import soundfile as sf

    from edge_lung.runtime.artifact.model_dir import OnnxClassifier
    from edge_lung.runtime.live.stream import StreamingClassifier
    from edge_lung.runtime.offline.classify import classify_file, overall_agreement

    audio, truth = breathing(_durations(10, 8), seed=8)
    wav = tmp_path / "rec.wav"
    sf.write(wav, audio, RATE)
    wav.with_suffix(".txt").write_text("".join(f"{a:.3f}\t{b:.3f}\t0\t0\n" for a, b in truth))
    engine = StreamingClassifier(OnnxClassifier(model_dir), StreamConfig(decide="breath"))
    result = classify_file(engine, wav)
    assert result.decide == "breath" and result.cycles is not None and len(result.cycles) == len(truth)
    assert result.breaths.annotated == len(truth) and len(result.breaths.matched) >= len(truth) - 3
    pooled = overall_agreement([result], engine.labels)
    assert pooled["cycles"] == len(truth) and pooled["breaths"]["precision"] == 100.0
    assert "icbhi_score" in pooled["breaths"] and "icbhi_score" in pooled


def test_live_runner_gives_the_classifiers_breaths(model_dir, tmp_path):
    """`stream --decide breath --replay`: the live path (worker thread, capture ring) decides the same breaths
    as `Classifier` on the whole file, and its summary counts them with the rate."""
    import soundfile as sf

    from edge_lung.runtime.artifact.model_dir import OnnxClassifier
    from edge_lung.runtime.live.runner import run_live
    from edge_lung.runtime.live.sources import ReplaySource
    from edge_lung.runtime.live.stream import StreamingClassifier

    audio, _ = breathing(_durations(9, 9), seed=9)
    wav = tmp_path / "rec.wav"
    sf.write(wav, audio, RATE, subtype="FLOAT")
    engine = StreamingClassifier(OnnxClassifier(model_dir), StreamConfig(decide="breath"))
    got: list = []
    summary = run_live(engine, ReplaySource(wav), on_decision=[got.append], backpressure=True)
    clf = Classifier.around(engine)
    expected = clf.accept_waveform(audio, RATE) + clf.finish()
    assert [_key(d) for d in got] == [_key(d) for d in expected] and len(got) >= 4
    assert summary.breaths == len(got) and summary.windows == 0 and summary.rate_bpm == got[-1].rate_bpm
    assert summary.as_dict()["breaths"] == len(got)


def test_breath_mode_on_the_end_to_end_graph_matches_the_numpy_front_end(tmp_path):
    """The e2e graph gets the breath cyclic-padded to the window, as `cycle_features` pads it for the model graph."""
    pytest.importorskip("onnx")
    from edge_lung.testing import build_tiny_e2e_model

    model_dir = build_tiny_e2e_model(tmp_path / "e2e")
    audio, _ = breathing(_durations(8, 10), seed=10)
    runs = {}
    for graph in ("model", "e2e"):
        clf = Classifier(model_dir, graph=graph, decide="breath")
        runs[graph] = clf.accept_waveform(audio, RATE) + clf.finish()
    assert [d.window.start for d in runs["model"]] == [d.window.start for d in runs["e2e"]] and runs["model"]
    for a, b in zip(runs["model"], runs["e2e"], strict=True):
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-3)


def test_a_breath_is_classified_on_its_own_samples_padded_as_training_pads_a_cycle(model_dir):
    """The model sees `cycle_features` of exactly the samples between the breath's boundaries."""
    from edge_lung.features import cycle_features
    from edge_lung.runtime.artifact.model_dir import OnnxClassifier

    audio, _ = breathing(_durations(8, 11), seed=11)
    clf = Classifier(model_dir, decide="breath", quality_gate=False)
    decisions = clf.accept_waveform(audio, RATE) + clf.finish()
    model = OnnxClassifier(model_dir)
    assert decisions
    for d in decisions:
        np.testing.assert_array_equal(d.window.audio, audio[d.window.start : d.window.end])
        expected = model.probabilities(cycle_features(audio[d.window.start : d.window.end], model.info.features))[0]
        np.testing.assert_allclose(d.probabilities, expected, rtol=1e-5, atol=1e-6)
