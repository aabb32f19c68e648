"""Occlusion saliency finds what a model looks at, maps it back to seconds and Hz, and can fail.

The acceptance check (`check_saliency` on the demo model vs the same model with shuffled
weights) needs a model that learnt the synthetic sounds: it runs on the output of `make demo`
(or EDGE_LUNG_DEMO_OUT) and is skipped, with the command, when there is none.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_lung.config import FeatureConfig
from edge_lung.data.synth import read_events
from edge_lung.features import log_mel
from edge_lung.runtime.explain.saliency import (
    OcclusionConfig,
    WindowSaliency,
    mel_bins_to_hz,
    occlusion_map,
    saliency_hits,
)

REPO = Path(__file__).resolve().parents[3]


def blob_detector(frames: slice, bins: slice):
    """A stand-in model: P(crackle) rises with the brightest value in a wide region of the window."""

    def probabilities(x: np.ndarray) -> np.ndarray:
        peak = x[:, frames, bins].max(axis=(1, 2))
        p = 1.0 / (1.0 + np.exp(-4.0 * (peak - 1.5)))
        return np.stack([1 - p, p, np.zeros_like(p), np.zeros_like(p)], axis=1).astype(np.float32)

    return probabilities


def test_occlusion_peak_is_the_patch_holding_what_the_model_reacts_to():
    rng = np.random.default_rng(0)
    feats = rng.normal(0, 0.2, (798, 128)).astype(np.float32)
    feats[305:318, 35:44] = 3.0  # inside time patch 6 (frames 300-349) and mel patch 2 (bins 32-47)
    model = blob_detector(slice(100, 700), slice(10, 90))
    drop, base, t_edges, f_edges = occlusion_map(model, feats, [1], OcclusionConfig(batch=7))
    assert base > 0.9
    assert np.unravel_index(int(np.argmax(drop)), drop.shape) == (6, 2)
    assert drop[6, 2] > 0.8 and np.delete(drop.ravel(), 6 * drop.shape[1] + 2).max() < 0.05
    assert t_edges[-1] == 798 and f_edges[-1] == 128 and drop.shape == (16, 8)
    unbatched, *_ = occlusion_map(model, feats, [1], OcclusionConfig(batch=1))
    np.testing.assert_allclose(drop, unbatched, atol=1e-6)


def _saliency(peak_patch: int, start_s: float, end_s: float, padded: bool) -> WindowSaliency:
    drop = np.zeros((16, 8), dtype=np.float32)
    drop[peak_patch, 2] = 1.0
    edges = np.append(np.arange(0, 798, 50), 798)
    return WindowSaliency(0, start_s, end_s, padded, (1,), 1.0, drop, edges, np.append(np.arange(0, 128, 16), 128),
                          evaluations=129, seconds=0.0)


def test_peak_time_is_folded_back_onto_the_audio_of_a_padded_window():
    cfg = FeatureConfig()
    a, b = _saliency(12, 10.0, 18.0, padded=False).peak_time_s(cfg)  # frames 600-649
    assert a == pytest.approx(16.0) and b == pytest.approx(16.515)
    # a 3 s window tiled to 8 s: window time 6.0-6.515 s is recording time 0.0-0.515 s
    a, b = _saliency(12, 0.0, 3.0, padded=True).peak_time_s(cfg)
    assert a == pytest.approx(0.0, abs=1e-9) and b == pytest.approx(0.515)


@pytest.mark.parametrize("hz", [250.0, 900.0, 3000.0])
def test_mel_bins_to_hz_matches_the_filterbank(hz):
    cfg = FeatureConfig()
    t = np.arange(cfg.sample_rate) / cfg.sample_rate
    mel = log_mel((0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32), cfg)
    loudest = int(np.argmax(mel.mean(axis=0)))
    lo, hi = mel_bins_to_hz(loudest, loudest + 1, cfg)
    assert lo < hz < hi
    assert hi - lo < 0.5 * hz  # two neighbouring filters, not the whole range


def test_hits_need_time_and_frequency_overlap():
    from edge_lung.data.synth import DrawnEvent

    cfg = FeatureConfig()
    sal = _saliency(12, 10.0, 18.0, padded=False)  # 16.0-16.515 s, mel patch 2
    lo, hi = sal.peak_band_hz(cfg)
    assert saliency_hits(sal, [DrawnEvent("crackle", 16.2, 16.21, lo, hi)], cfg)
    assert not saliency_hits(sal, [DrawnEvent("crackle", 17.0, 17.01, lo, hi)], cfg)  # another time
    assert not saliency_hits(sal, [DrawnEvent("wheeze", 16.1, 16.4, hi + 200, hi + 400)], cfg)  # another band


def test_synthetic_recordings_record_the_events_they_draw(synth_db: Path):
    audio_dir = synth_db / "ICBHI_final_database"
    kinds_seen = set()
    for wav in sorted(audio_dir.glob("*.wav")):
        events = read_events(wav)
        assert events is not None, f"{wav.name}: no events sidecar"
        cycles = [line.split("\t") for line in wav.with_suffix(".txt").read_text().splitlines()]
        for e in events:
            kinds_seen.add(e.kind)
            holder = [c for c in cycles if float(c[0]) - 0.01 <= e.start_s and e.end_s <= float(c[1]) + 0.01]
            assert holder, f"{wav.name}: {e} lies in no annotated cycle"
            assert holder[0][2 if e.kind == "crackle" else 3] == "1", f"{wav.name}: {e} drawn in a cycle without it"
        for start, end, crackle, wheeze in cycles:
            inside = {e.kind for e in events if float(start) - 0.01 <= e.start_s < float(end)}
            assert ("crackle" in inside) == (crackle == "1") and ("wheeze" in inside) == (wheeze == "1")
        _check_wheeze_bands(wav, events)
    assert kinds_seen == {"crackle", "wheeze"}


def _check_wheeze_bands(wav: Path, events: list) -> None:
    """The loudest frequency during a wheeze lies in the band its sidecar gives."""
    audio, rate = sf.read(str(wav), dtype="float32")
    for e in events:
        if e.kind != "wheeze":
            continue
        seg = audio[int(e.start_s * rate) : int(e.end_s * rate)]
        spectrum = np.abs(np.fft.rfft(seg * np.hanning(seg.size)))
        peak_hz = np.fft.rfftfreq(seg.size, 1 / rate)[int(np.argmax(spectrum))]
        assert e.low_hz * 0.95 <= peak_hz <= e.high_hz, f"{wav.name}: wheeze peak {peak_hz:.0f} Hz outside {e}"


# --------------------------------------------------------------------------- acceptance on the demo model


def demo_out() -> Path:
    """The output folder of `make demo` (or EDGE_LUNG_DEMO_OUT) with its model and synthetic database, else skip."""
    out = Path(os.environ.get("EDGE_LUNG_DEMO_OUT", REPO / "demo-out"))
    model, db = out / "model-int8", out / "synthetic-db" / "ICBHI_final_database"
    if not (model / "manifest.json").is_file() or not db.is_dir():
        pytest.skip(f"no demo model at {out}: run `make demo` (or set EDGE_LUNG_DEMO_OUT to a demo output folder)")
    if not any(db.glob("*.events.json")):
        pytest.skip(f"{db} has no drawn-events sidecars (made before they existed): rerun `make demo`")
    return out


SALIENCY_RECORDINGS = 8
"""Held-out recordings the acceptance check explains (the first, by name): 78-100 flagged windows."""
SALIENCY_AIM = 0.65
"""Share of saliency peaks inside a drawn event the demo model must reach, and its shuffled copy must not."""


@pytest.mark.slow
def test_saliency_points_at_drawn_events_and_shuffled_weights_do_not(tmp_path: Path):
    """The demo model is trained on as many threads as the machine has, so it is not the same model on
    every machine: the check is set from measured spread, not from one run
    (benchmarks/results/small-db/2026-12-08-saliency-spread.md). Demo-recipe models of 100-recording
    databases (1 thread), hits on the first 4 / first 8 held-out recordings: seed 0: 34/42 (81.0%) / 67/78
    (85.9%); seed 1: 33/45 (73.3%) / 82/100 (82.0%); the model of issue 24 (seed 0, another machine): 33/42
    (78.6%) on 4, which failed the old check (4 recordings, aim 0.8). Shuffled copies: 6/34 (17.6%, seed 0,
    3 recordings), 20/61 (32.8%, seed 1, 4 recordings). On 80-100 windows one model's rate has a binomial
    spread (sd) of about 4 points: the aim of 0.65 sits 17 points (4 sd) below the lowest 8-recording rate
    measured and 32 points (5 sd on 61 windows) above the highest shuffled one. About twice the old
    check's time (two models x ~90 windows x 129 occlusions).
    """
    pytest.importorskip("onnx")
    from edge_lung.data.icbhi import Database
    from edge_lung.runtime.commands.session import load_classifier
    from edge_lung.runtime.explain.saliency import check_saliency
    from edge_lung.runtime.live.stream import StreamConfig
    from edge_lung.testing import shuffle_model_weights

    out = demo_out()
    recordings = Database.scan(out / "synthetic-db").recordings
    held_out = sorted(r.wav for r in recordings if r.split == "test")[:SALIENCY_RECORDINGS]
    model = out / "model-int8"
    real = check_saliency(load_classifier(model, StreamConfig(), 1), held_out)
    shuffled = check_saliency(load_classifier(shuffle_model_weights(model, tmp_path / "shuffled"), StreamConfig(), 1),
                              held_out)
    assert real.windows >= 40, f"demo model: only {real.windows} flagged windows hold a drawn event"
    assert real.passes(aim=SALIENCY_AIM), f"demo model: {real.hits}/{real.windows} saliency peaks inside a drawn event"
    assert not shuffled.passes(aim=SALIENCY_AIM), (
        f"shuffled weights: {shuffled.hits}/{shuffled.windows} peaks inside a drawn event")


@pytest.mark.parametrize("value", [0, 10**23, float("nan"), 2.5])
def test_occlusion_sizes_are_bounded(value):
    """`report --patch-frames 99999999999999999999999` crashed inside numpy (issue 26): a message names the range."""
    from edge_lung.runtime.explain.saliency import OcclusionConfig

    with pytest.raises(ValueError, match=r"--patch-frames\): expected a whole number in \[1, 100000\]"):
        OcclusionConfig(patch_frames=value)
