"""Never lose a recording or a result (issue 10, runtime half): reused names, full disks, damaged files,
Ctrl-C, models whose metadata lies, unbounded options and messages that name what failed.

The full-disk tests use a real 256 KiB tmpfs (the kernel's own ENOSPC), so they need root to mount it.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import subprocess
import weakref

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from edge_lung.cli import app
from edge_lung.config import FeatureConfig
from edge_lung.runtime import StreamConfig, StreamingClassifier, classify_file
from edge_lung.runtime.artifact.model_dir import ArtifactError, OnnxClassifier
from edge_lung.runtime.commands.session import StreamOptions, load_classifier, stream_session
from edge_lung.testing import build_tiny_model, write_signal

FEATURES_4S = FeatureConfig(window_s=4.0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny4"), FEATURES_4S)


@pytest.fixture(scope="module")
def model(model_dir):
    return OnnxClassifier(model_dir, threads=1)


@pytest.fixture
def small_disk(tmp_path):
    """A real 256 KiB filesystem, so that 'disk full' is the kernel's ENOSPC and not a mock."""
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a 256 KiB tmpfs needs root and mount(8)")
    mount = ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)]
    done = subprocess.run(mount, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def fill(disk) -> None:
    """Write to `disk` until the kernel says it is full."""
    fd = os.open(disk / "filler.bin", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


def damaged_flac(path, seconds: float = 12.0, rate: int = 16000, keep: float = 0.6) -> np.ndarray:
    """A FLAC cut off part-way with its length field still 'unknown', as a killed or disk-full writer leaves it."""
    x = write_signal(path, seconds, rate, seed=4, subtype="PCM_16")
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(int(size * keep))
        f.seek(8 + 13)  # STREAMINFO total-samples field: 0 means "unknown"
        byte = f.read(1)[0]
        f.seek(8 + 13)
        f.write(bytes([byte & 0xF0]) + b"\0\0\0\0")
    return x


# --- 2. --record never replaces an existing recording ------------------------------------------------


def test_record_never_replaces_an_existing_recording(model, tmp_path, caplog):
    src = tmp_path / "in.wav"
    x = write_signal(src, 5.0, 16000, subtype="PCM_16")
    out = tmp_path / "patient.flac"
    previous = np.full(1000, 0.25, np.float32)
    sf.write(out, previous, 16000, subtype="PCM_16")
    classifier = StreamingClassifier(model, StreamConfig())
    with caplog.at_level(logging.WARNING):
        summary = stream_session(classifier, StreamOptions(replay=src, record=out, display=False))
    kept, _ = sf.read(out, dtype="float32")
    np.testing.assert_allclose(kept, previous, atol=1e-4)  # the previous patient's recording is untouched
    second = tmp_path / "patient-2.flac"
    assert np.array_equal(sf.read(second, dtype="float32")[0], x)
    assert summary.recordings == [str(second)]
    assert any("patient.flac exists" in r.getMessage() and "patient-2.flac" in r.getMessage() for r in caplog.records)
    # a third session goes on to -3; --overwrite replaces the named file
    stream_session(classifier, StreamOptions(replay=src, record=out, display=False))
    assert (tmp_path / "patient-3.flac").is_file()
    stream_session(classifier, StreamOptions(replay=src, record=out, display=False, overwrite=True))
    assert np.array_equal(sf.read(out, dtype="float32")[0], x)
    assert not (tmp_path / "patient-4.flac").exists()


# --- 3. disk full while recording: keep deciding, leave a readable FLAC ----------------------------------


def test_full_disk_while_recording_keeps_deciding_and_leaves_a_readable_flac(model, tmp_path, small_disk, caplog):
    src = tmp_path / "in.wav"
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.5, 0.5, 16000 * 30).astype(np.float32)  # noise: ~30 KB/s of FLAC, the disk holds ~8 s
    sf.write(src, x, 16000, subtype="PCM_16")
    x = sf.read(src, dtype="float32")[0]
    out = small_disk / "rec.flac"
    classifier = StreamingClassifier(model, StreamConfig())
    with caplog.at_level(logging.WARNING):
        summary = stream_session(classifier, StreamOptions(replay=src, record=out, display=False))
    assert summary.stopped_by == "source ended" and summary.seconds == pytest.approx(30.0)
    assert summary.windows == 29  # decisions carried on to the end of the input
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert str(out) in warning and "disk is full" in warning and "decisions continue" in warning
    assert any("disk is full" in w for w in summary.warnings)
    from edge_lung.audio import load_audio

    kept, rate = load_audio(out)  # edge-lung itself reads what was saved
    assert rate == 16000 and 16000 <= kept.shape[0] < x.shape[0]
    np.testing.assert_allclose(kept, x[: kept.shape[0]], atol=1e-4)


def test_a_failed_write_finalises_the_recording_with_what_reached_the_disk(tmp_path, monkeypatch):
    """The same path without root: libsndfile's bare "System error." on a disk reported full."""
    from edge_lung.runtime.live.recorder import FlacRecorder, RecordingError

    path = tmp_path / "r.flac"
    x = np.random.default_rng(1).uniform(-0.5, 0.5, 16000 * 5).astype(np.float32)
    rec = FlacRecorder(path, 16000)
    for pos in range(0, 16000 * 3, 320):
        rec.write(x[pos : pos + 320])

    def refuse(*args, **kwargs):
        raise RuntimeError("System error.")

    monkeypatch.setattr(rec._file, "write", refuse)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1 << 30, 1 << 30, 0))
    with pytest.raises(RecordingError, match=rf"--record {path}: the disk is full \(0 bytes free\); the file keeps"):
        rec.write(x[16000 * 3 : 16000 * 3 + 320])
    rec.close()
    kept, rate = sf.read(path, dtype="float32")
    assert rate == 16000 and kept.shape[0] == rec.durable_samples >= 16000 * 2
    np.testing.assert_allclose(kept, x[: kept.shape[0]], atol=1e-4)


def test_classify_decodes_what_it_can_of_a_damaged_flac(model, tmp_path):
    path = tmp_path / "cut.flac"
    damaged_flac(path)
    result = classify_file(StreamingClassifier(model, StreamConfig()), path)
    assert 4.0 < result.duration_s < 12.0 and result.windows >= 3
    assert result.status == "damaged"
    assert "decoded" in result.note and "unreadable" in result.note


# --- 4. one damaged file is one error row -------------------------------------------------------------


def test_one_damaged_file_is_one_row_and_the_good_results_are_kept(model_dir, tmp_path):
    write_signal(tmp_path / "a.wav", 6.0, 16000, subtype="PCM_16")
    damaged_flac(tmp_path / "b_cut.flac")
    (tmp_path / "c_junk.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10)
    write_signal(tmp_path / "d.wav", 6.0, 16000, subtype="PCM_16")
    jsonl = tmp_path / "out.jsonl"
    res = CliRunner().invoke(app, ["classify", str(model_dir), str(tmp_path), "--jsonl", str(jsonl)])
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    events = [json.loads(line) for line in jsonl.read_text().splitlines()]
    files = {os.path.basename(e["file"]): e for e in events if e["type"] == "file"}
    assert sorted(files) == ["a.wav", "b_cut.flac", "c_junk.wav", "d.wav"]
    assert files["a.wav"]["windows"] == files["d.wav"]["windows"] == 5
    assert files["b_cut.flac"]["status"] == "damaged" and files["b_cut.flac"]["windows"] > 0
    assert files["c_junk.wav"]["status"] == "error" and "c_junk.wav" in files["c_junk.wav"]["note"]
    for name in ("a.wav", "b_cut.flac", "c_junk.wav", "d.wav"):
        assert name in res.output


# --- 5. Ctrl-C during classify --------------------------------------------------------------------------


def test_ctrl_c_during_classify_keeps_what_finished(model_dir, tmp_path, monkeypatch):
    for name in ("a.wav", "b.wav", "c.wav"):
        write_signal(tmp_path / name, 6.0, 16000, subtype="PCM_16")
    calls = {"n": 0}
    infer = StreamingClassifier.infer

    def interrupted_infer(self, window):
        calls["n"] += 1
        if calls["n"] == 8:  # a.wav has 5 windows: Ctrl-C lands in b.wav's third
            raise KeyboardInterrupt
        return infer(self, window)

    monkeypatch.setattr(StreamingClassifier, "infer", interrupted_infer)
    jsonl = tmp_path / "out.jsonl"
    res = CliRunner().invoke(app, ["classify", str(model_dir), str(tmp_path), "--jsonl", str(jsonl)])
    assert res.exit_code == 130, res.output
    events = [json.loads(line) for line in jsonl.read_text().splitlines()]
    files = [e for e in events if e["type"] == "file"]
    assert [(os.path.basename(e["file"]), e["status"]) for e in files] == [("a.wav", "ok"), ("b.wav", "interrupted")]
    assert files[0]["windows"] == 5 and files[1]["windows"] == 2
    assert len([e for e in events if e["type"] == "window"]) == 7
    assert "a.wav" in res.output and "b.wav" in res.output and "interrupted" in res.output
    assert "c.wav" not in res.output.split("interrupted", 1)[0]


# --- 8. model metadata that disagrees with the graph ----------------------------------------------------


def tamper(model_dir, *, input_dims=None, features=None, manifest=None) -> None:
    """Rewrite a tiny MODEL_DIR: fixed input dims, other feature metadata, or manifest fields."""
    import onnx

    from edge_lung.runtime.artifact.model_dir import META_KEYS, write_manifest

    path = model_dir / "tiny.onnx"
    m = onnx.load(str(path))
    if input_dims is not None:
        for dim, value in zip(m.graph.input[0].type.tensor_type.shape.dim[1:], input_dims, strict=True):
            dim.dim_value = value
    if features is not None:
        for entry in m.metadata_props:
            if entry.key == META_KEYS["features"]:
                entry.value = json.dumps({**json.loads(entry.value), **features}, sort_keys=True)
    onnx.save(m, str(path))
    written = write_manifest(model_dir, path)
    if manifest is not None:
        (model_dir / "manifest.json").write_text(json.dumps({**written, **manifest}))


def test_metadata_that_disagrees_with_the_graph_is_refused_at_load(tmp_path):
    model_dir = build_tiny_model(tmp_path / "m", FEATURES_4S)
    tamper(model_dir, input_dims=(FEATURES_4S.num_frames, 128), features={"num_mel_bins": 7})
    with pytest.raises(ArtifactError, match=r"num_mel_bins 7.*\[batch, 398, 128\]"):
        OnnxClassifier(model_dir)
    write_signal(tmp_path / "a.wav", 5.0, 16000)
    for args in (["classify", str(model_dir), str(tmp_path / "a.wav")], ["stream", str(model_dir), "--replay",
                                                                         str(tmp_path / "a.wav"), "--quiet"]):
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 2 and "num_mel_bins 7" in res.output, res.output


# --- 9. bounds on --threads and --hop ---------------------------------------------------------------------


def test_threads_and_hop_are_bounded_saying_why(model_dir, tmp_path):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with pytest.raises(ValueError, match=rf"--threads: expected at most {cores} \(the cores this process may use\)"):
        load_classifier(model_dir, StreamConfig(), cores + 1)
    with pytest.raises(ValueError, match=r"--hop: expected at least the model's frame shift \(0.01 s\)"):
        load_classifier(model_dir, StreamConfig(hop_s=0.005), 1)
    write_signal(tmp_path / "a.wav", 3.0, 16000)
    res = CliRunner().invoke(app, ["classify", str(model_dir), str(tmp_path / "a.wav"), "--hop", "0.0001"])
    assert res.exit_code == 2 and "frame shift" in res.output, res.output
    assert load_classifier(model_dir, StreamConfig(hop_s=0.01), cores).cfg.hop_s == 0.01


# --- 10. classify memory does not grow with the recording -------------------------------------------------


def test_classify_keeps_no_window_after_deciding_it(model, tmp_path):
    path = tmp_path / "long.wav"
    write_signal(path, 30.0, 16000, subtype="PCM_16")
    alive = []
    result = classify_file(
        StreamingClassifier(model, StreamConfig()), path, on_decision=lambda d: alive.append(weakref.ref(d.window))
    )
    gc.collect()
    assert len(alive) == 29
    assert sum(ref() is not None for ref in alive) == 0  # nothing per window (0.5 MB of audio each) is kept
    assert result.windows == 29


# --- 11. messages that name what failed ---------------------------------------------------------------------


def test_jsonl_to_a_directory_or_a_full_disk_names_the_option(model_dir, tmp_path, small_disk):
    wav = tmp_path / "a.wav"
    write_signal(wav, 3.0, 16000)
    res = CliRunner().invoke(app, ["classify", str(model_dir), str(wav), "--jsonl", str(tmp_path)])
    assert res.exit_code == 2 and f"--jsonl {tmp_path}: is a directory" in res.output, res.output
    fill(small_disk)
    target = small_disk / "out.jsonl"
    for cmd in (["classify", str(model_dir), str(wav)], ["stream", str(model_dir), "--replay", str(wav), "--quiet"]):
        res = CliRunner().invoke(app, [*cmd, "--jsonl", str(target)])
        assert res.exit_code == 2 and f"--jsonl {target}: cannot write" in res.output, res.output
        assert "No space left on device" in res.output


def test_stream_options_name_what_is_wrong(model_dir, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["stream", str(model_dir), "--replay", str(tmp_path / "gone.wav"), "--duration", "nan"])
    assert res.exit_code == 2 and "--duration: expected seconds in (0, 604800] (a week), got nan" in res.output
    res = runner.invoke(app, ["stream", str(model_dir), "--replay", str(tmp_path / "gone.wav")])
    assert res.exit_code == 2 and f"--replay {tmp_path / 'gone.wav'}: no such file" in res.output, res.output


def test_manifest_that_disagrees_with_the_onnx_metadata_is_refused(tmp_path):
    model_dir = build_tiny_model(tmp_path / "m", FEATURES_4S)
    tamper(model_dir, manifest={"labels": ["normal", "abnormal"]})
    with pytest.raises(ArtifactError, match=r"manifest.json: 'labels' .*disagrees with the ONNX metadata"):
        OnnxClassifier(model_dir)


def test_unknown_feature_version_is_refused(tmp_path):
    model_dir = build_tiny_model(tmp_path / "m", FEATURES_4S)
    tamper(model_dir, features={"feature_version": "kaldi-fbank-v9"})
    with pytest.raises(ArtifactError, match=r"feature_version 'kaldi-fbank-v9'.*computes 'kaldi-fbank-v1'"):
        OnnxClassifier(model_dir)
