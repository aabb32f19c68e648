"""`bench --sustained`: per-minute aggregation on a fake clock, and the thermal readings beside each minute."""

from __future__ import annotations

import itertools

import pytest

from edge_lung.bench.sustained import per_period, run_sustained, summarize, sustained_lines
from edge_lung.testing import build_tiny_model


def test_samples_fall_in_their_minute_with_the_reading_taken_at_its_end():
    samples = [(t, 10.0 if t < 60 else 20.0 if t < 120 else 40.0) for t in range(0, 150, 2)]
    thermal = [(59.9, {"temp_c": 50.0, "throttled": "throttled=0x0"}), (119.9, {"temp_c": 61.5}),
               (149.9, {"temp_c": 70.0, "throttled": "throttled=0x50005"})]
    periods = per_period(samples, thermal)
    assert [p["minute"] for p in periods] == [1, 2, 3]
    assert [p["windows"] for p in periods] == [30, 30, 15]
    assert [p["seconds"] for p in periods] == [60.0, 60.0, 28.0]  # the last sample is at 148 s
    assert [p["p50_ms"] for p in periods] == [10.0, 20.0, 40.0]
    assert [p["temp_c"] for p in periods] == [50.0, 61.5, 70.0]
    summary = summarize(periods)
    assert summary["p50_drift"] == 4.0 and summary["temp_c_max"] == 70.0
    assert summary["throttled_flags"] == ["throttled=0x0", "throttled=0x50005"]


def test_no_thermal_zone_is_said_not_guessed():
    periods = per_period([(0.0, 5.0), (61.0, 5.0)], [(59.9, {}), (61.0, {})])
    assert [p["temp_c"] for p in periods] == [None, None]
    assert summarize(periods)["temperature"].startswith("absent")
    assert per_period([], []) == []


def test_run_on_a_fake_clock_reads_the_thermal_state_once_a_minute(tmp_path):
    model = build_tiny_model(tmp_path / "m")
    ticks = itertools.count(0.0, 7.0)  # every clock() call moves the clock 7 s: windows start at 7, 21, ..., 119 s
    readings = []

    def thermal() -> dict:
        readings.append(1)
        return {"temp_c": 40.0 + len(readings)}

    result = run_sustained(model, 130.0, clock=lambda: next(ticks), thermal=thermal)
    assert result["windows"] == 9
    assert [(p["minute"], p["windows"]) for p in result["periods"]] == [(1, 4), (2, 5)]
    assert len(readings) == 3  # once past 60 s, once past 120 s, and at the end
    assert [p["temp_c"] for p in result["periods"]] == [41.0, 42.0]
    lines = sustained_lines(result)
    assert "p50 drift" in lines[-1] and len(lines) == 2 + 2 + 1


def test_bad_duration_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--sustained: expected seconds"):
        run_sustained(build_tiny_model(tmp_path / "m"), float("inf"))
