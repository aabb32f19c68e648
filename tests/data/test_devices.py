"""Device shift (issue #12): per-group scores with patient-bootstrap intervals, the band-limited
channel, validation on whole devices, and the loud warning for a model at or below always-normal."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from edge_lung.audio import degrade
from edge_lung.config import FeatureConfig
from edge_lung.data.devices import assign_device_validation, cycle_groups, load_run_split
from edge_lung.data.icbhi import Database
from edge_lung.metrics import group_scores
from edge_lung.scoring import evaluate_cycles

# Hand-made: group A has two patients, p1 (normal, normal | crackle, crackle->normal) and
# p2 (normal, normal->crackle | wheeze, wheeze); group B one patient p3 (normal | both->crackle).
Y_TRUE = [0, 0, 1, 1, 0, 0, 2, 2, 0, 3]
Y_PRED = [0, 0, 1, 0, 0, 1, 2, 2, 0, 1]
GROUPS = ["A"] * 8 + ["B"] * 2
PATIENTS = ["p1"] * 4 + ["p2"] * 4 + ["p3"] * 2


def test_group_scores_on_a_hand_made_set():
    a, b = group_scores(Y_TRUE, Y_PRED, GROUPS, PATIENTS, n_boot=2000, seed=1)
    assert (a["group"], a["num_cycles"], a["num_patients"]) == ("A", 8, 2)
    assert (a["specificity"], a["sensitivity"], a["score"]) == (75.0, 75.0, 75.0)
    assert (b["group"], b["num_cycles"], b["num_patients"]) == ("B", 2, 1)
    assert (b["specificity"], b["sensitivity"], b["score"]) == (100.0, 0.0, 50.0)
    # Whole patients: p1 alone is Sp 100 / Se 50, p2 alone Sp 50 / Se 100, both Sp 75 / Se 75.
    # Every patient draw scores 75, so the Score interval is exactly [75, 75] (cycle resampling
    # would spread it); Sp spans p2-only to p1-only draws (each 1/4 of the draws).
    assert a["ci95"]["score"] == [75.0, 75.0]
    assert a["ci95"]["specificity"] == [50.0, 100.0]
    assert a["ci95"]["sensitivity"] == [50.0, 100.0]
    assert b["ci95"]["score"] == [50.0, 50.0]


def test_group_scores_refuses_mismatched_lengths():
    with pytest.raises(ValueError, match="equal lengths"):
        group_scores(Y_TRUE, Y_PRED, GROUPS[:-1], PATIENTS)


def test_evaluate_cycles_reports_each_group():
    cycles = [SimpleNamespace(label=y, patient=p, audio=np.zeros(1600, np.float32))
              for y, p in zip(Y_TRUE, PATIENTS, strict=True)]
    logits = np.eye(4, dtype=np.float32)[Y_PRED]
    calls = iter(range(len(cycles)))
    report = evaluate_cycles(cycles, FeatureConfig(), lambda x: logits[[next(calls) for _ in x]], batch_size=3,
                             groups=GROUPS)
    assert [(g["group"], g["score"]) for g in report["by_group"]] == [("A", 75.0), ("B", 50.0)]


def _tone(freq: float, rate: int = 16000, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.sin(2 * np.pi * freq * t).astype(np.float32)


@pytest.mark.parametrize(("channel", "kept_hz", "cut_hz"), [("4k", 1000, 3000), ("8k", 3000, 5000)])
def test_degrade_band_limits_and_keeps_length(channel, kept_hz, cut_hz):
    mid = slice(2000, 14000)  # away from the resampler's edge transients
    kept, cut = degrade(_tone(kept_hz), 16000, channel), degrade(_tone(cut_hz), 16000, channel)
    assert kept.shape == cut.shape == (16000,) and kept.dtype == np.float32
    assert np.sqrt(np.mean(kept[mid] ** 2)) > 0.6  # a sine's RMS is 0.707
    assert np.sqrt(np.mean(cut[mid] ** 2)) < 0.01


def test_degrade_names_the_channels_it_knows():
    with pytest.raises(ValueError, match="4k"):
        degrade(_tone(100), 16000, "2k")


def _recordings(synth_db):
    return Database.scan(synth_db).recordings


def test_device_validation_holds_out_whole_devices_and_shared_patients(synth_db):
    recordings = _recordings(synth_db)
    device = sorted({r.device for r in recordings})[0]
    out, split = assign_device_validation(recordings, (device,))
    val = [r for r in out if r.split == "val"]
    train = [r for r in out if r.split == "train"]
    assert val and train and {r.device for r in val} == {device}
    assert len(val) == split.val_recordings == sum(r.device == device and r.split != "test" for r in recordings)
    assert device not in {r.device for r in train}
    assert not {r.patient for r in val} & {r.patient for r in train}  # no chest on both sides
    removed = [r for r in out if r.split is None]
    assert split.removed_recordings == len(removed) and set(split.removed_patients) == {r.patient for r in removed}
    assert [r.stem for r in out if r.split == "test"] == [r.stem for r in recordings if r.split == "test"]


def test_device_validation_counts_a_patient_on_both_sides(synth_db):
    a, b, c = _recordings(synth_db)[:3]
    recordings = [replace(a, patient="101", device="Meditron", split="train"),
                  replace(b, patient="101", device="LittC2SE", split="train"),
                  replace(c, patient="102", device="Meditron", split="val")]
    out, split = assign_device_validation(recordings, ("LittC2SE",))
    assert [r.split for r in out] == [None, "val", "train"]
    assert (split.removed_patients, split.removed_recordings, split.removed_cycles) == (("101",), 1, len(a.cycles))


def test_unknown_or_every_device_is_a_clear_error(synth_db):
    recordings = _recordings(synth_db)
    with pytest.raises(ValueError, match="Nokia"):
        assign_device_validation(recordings, ("Nokia",))
    every = tuple(sorted({r.device for r in recordings if r.split != "test"}))
    with pytest.raises(ValueError, match="every device"):
        assign_device_validation(recordings, every)


def test_run_split_and_groups_on_a_device_split(synth_db):
    cfg = FeatureConfig()
    device = sorted({r.device for r in _recordings(synth_db)})[0]
    settings = {"val_fraction": 0.2, "val_seed": 0, "val_devices": device}
    val = load_run_split(synth_db, "val", cfg, settings)
    assert set(cycle_groups(synth_db, val, "device")) == {device}
    rates = set(cycle_groups(synth_db, val, "rate"))
    assert rates and all(r.endswith("kHz") for r in rates)
    degraded = load_run_split(synth_db, "val", cfg, settings, channel="4k")
    assert [c.audio.shape for c in degraded] == [c.audio.shape for c in val]
    assert not np.allclose(degraded[0].audio, val[0].audio)


def test_selection_warnings_at_or_below_always_normal():
    from edge_lung.train.loop import selection_warnings

    collapsed = {"score": 50.0, "num_cycles": 10, "confusion_matrix": [[6, 0, 0, 0], [2, 0, 0, 0],
                                                                         [1, 0, 0, 0], [1, 0, 0, 0]]}
    texts = selection_warnings(collapsed)
    assert len(texts) == 2 and "always-normal" in texts[0] and "one class" in texts[1]
    good = {"score": 75.0, "num_cycles": 4, "confusion_matrix": [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0],
                                                                  [0, 0, 0, 0]]}
    assert selection_warnings(good) == []
