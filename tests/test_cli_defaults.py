"""The runtime commands' options take their defaults from the dataclasses they fill, field by field, and their
signatures are pinned (a renamed or dropped option is a deliberate change, not an accident)."""

from __future__ import annotations

import dataclasses

import typer

from edge_lung.cli import app
from edge_lung.runtime.explain.saliency import OcclusionConfig
from edge_lung.runtime.live.stream import StreamConfig
from edge_lung.runtime.offline.calibrate import MIN_AUDIO_S

STREAM_OPTIONS = {"hop": "hop_s", "min_audio": "min_audio_s", "smooth": "smooth", "threshold": "threshold",
                  "decide": "decide"}
"""CLI parameter -> StreamConfig field (fill_gap_s is the live runner's own, not an option)."""


def _params(command: str) -> dict:
    return {p.name: p for p in typer.main.get_command(app).commands[command].params}


def test_stream_options_default_to_stream_config_field_by_field():
    for command in ("stream", "classify"):
        params = _params(command)
        for option, field in STREAM_OPTIONS.items():
            assert params[option].default == getattr(StreamConfig, field), (command, option)
    covered = set(STREAM_OPTIONS.values()) | {"fill_gap_s"}
    assert covered == {f.name for f in dataclasses.fields(StreamConfig)}, "a new StreamConfig field needs an option"


def test_report_and_calibrate_defaults_come_from_their_configs():
    report = _params("report")
    assert (report["patch_frames"].default, report["patch_bins"].default) == (
        OcclusionConfig.patch_frames, OcclusionConfig.patch_bins)
    assert _params("calibrate")["min_audio"].default == MIN_AUDIO_S


def test_exam_defaults_come_from_exam_options():
    from edge_lung.runtime.commands.exam import ExamOptions

    params = _params("exam")
    assert params["sites"].default == ",".join(ExamOptions.sites)
    for name in ("seconds", "max_seconds", "session", "device_tag", "device", "replay_dir", "realtime", "redo",
                 "attempts"):
        assert params[name].default == getattr(ExamOptions, name), name
    assert params["threshold"].default == StreamConfig.threshold


RUNTIME_SIGNATURES = {
    "stream": ["model_dir", "device", "hop", "min_audio", "smooth", "threshold", "threads", "graph", "jsonl", "record",
               "replay", "realtime", "serial", "overwrite", "duration", "quiet", "quality", "quality_set", "report",
               "web", "decide"],
    "classify": ["model_dir", "files", "hop", "min_audio", "smooth", "threshold", "threads", "graph", "jsonl",
                 "quality", "quality_set", "overwrite", "decide"],
    "report": ["model_dir", "files", "out", "hop", "min_audio", "smooth", "threshold", "threads", "patch_frames",
               "patch_bins", "overwrite"],
    "verify": ["model_dir", "threads", "json_path", "overwrite"],
    "calibrate": ["model_dir", "recordings", "out", "overwrite", "reference", "min_audio"],
    "exam": ["model_dir", "patient", "out", "sites", "seconds", "max_seconds", "session", "device_tag", "device",
             "replay_dir", "realtime", "redo", "attempts", "web", "threshold", "threads", "quality_set", "quiet"],
}


def test_runtime_command_signatures_are_pinned():
    """Options in order; a change here is a change to the documented CLI (README "Commands")."""
    for command, names in RUNTIME_SIGNATURES.items():
        assert [p for p in _params(command)] == names, command
