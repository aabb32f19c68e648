"""`edge-lung exam --replay-dir`: real recordings mapped to chest sites, one site silent; the redo prompt, the
ICBHI-named FLACs, the JSON summary and the patient page."""

from __future__ import annotations

import io
import json
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_lung.runtime.commands.exam import ExamInterrupted, ExamOptions, run_exam
from edge_lung.runtime.commands.session import load_classifier
from edge_lung.runtime.live.stream import StreamConfig

SECONDS = 6.0
ICBHI_NAME = re.compile(r"^(\w+?)_(\w+?)_(Tc|Al|Ar|Pl|Pr|Ll|Lr)_(sc|mc)_([A-Za-z0-9-]+)\.flac$")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnx")
    from edge_lung.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="module")
def classifier(model_dir: Path):
    return load_classifier(model_dir, StreamConfig(), 1)


@pytest.fixture(scope="module")
def replay_dir(tmp_path_factory: pytest.TempPathFactory, icbhi_dir: Path) -> Path:
    """Tc and Al: real recordings; Pl: digital silence, and a real recording as its second take (Pl-2.wav)."""
    real = sorted((icbhi_dir / "ICBHI_final_database").glob("*.wav"))
    if len(real) < 3:
        pytest.skip(f"{icbhi_dir}: expected at least 3 recordings")
    folder = tmp_path_factory.mktemp("sites")
    for site, path in zip(("Tc", "Al", "Pl-2"), (real[0], real[len(real) // 2], real[-1]), strict=True):
        shutil.copy(path, folder / f"{site}.wav")
    sf.write(str(folder / "Pl.wav"), np.zeros(int(12 * 16000), dtype=np.float32), 16000)
    return folder


def options(out: Path, replay_dir: Path, **kw) -> ExamOptions:
    kw.setdefault("sites", ("Tc", "Al", "Pl"))
    return ExamOptions("101", out, seconds=SECONDS, replay_dir=replay_dir, display=False, **kw)


def test_cli_exam_redoes_the_silent_site_and_writes_the_summary(model_dir, replay_dir, tmp_path):
    from typer.testing import CliRunner

    from edge_lung.cli import app

    out = tmp_path / "exam"
    args = ["exam", str(model_dir), "--patient", "101", "--sites", "Tc,Al,Pl", "--seconds", str(SECONDS),
            "--out", str(out), "--replay-dir", str(replay_dir), "--redo", "ask", "--quiet", "--threads", "1"]
    res = CliRunner().invoke(app, args, input="r\n")
    assert res.exit_code == 0, res.output
    # the silent take: why, and the question; the answer "r" replays Pl-2.wav as the second take
    assert "Pl: only 0.0 of 6 s heard clearly" in res.output and "no signal: place the chest piece" in res.output
    assert res.output.count("keep, redo or skip?") == 1
    flacs = sorted(out.glob("*.flac"))
    assert [ICBHI_NAME.match(p.name).group(3) for p in flacs] == ["Al", "Pl", "Tc"]
    assert all(ICBHI_NAME.match(p.name).group(1, 2, 4) == ("101", "1b1", "sc") for p in flacs)
    for p in flacs:
        audio, rate = sf.read(str(p), dtype="float32")
        assert audio.shape[0] / rate >= SECONDS and np.sqrt(np.mean(audio**2)) > 1e-4  # Pl is the good take
    summary = json.loads((out / "101_1b1_exam.json").read_text())
    sites = {s["site"]: s for s in summary["sites"]}
    assert [s["status"] for s in summary["sites"]] == ["ok", "ok", "ok"] and sites["Pl"]["takes"] == 2
    assert all(s["ok_s"] >= SECONDS and s["label"] in summary["labels"] for s in sites.values())
    assert summary["finding"]["result"] in ("normal", "abnormal") and summary["missing"] == []
    page = (out / "101_1b1_exam.html").read_text()
    assert not re.search(r"(src|href)=\"(https?:)?//", page) and "<script" not in page
    assert page.count("<circle") == 3 and "<svg" in page
    links = re.findall(r'href="([^"]+)"', page)
    assert {p.name for p in flacs} <= set(links)
    pages = [link for link in links if link.startswith("pages/")]
    assert len(set(pages)) == 3 and all((out / link).is_file() for link in pages)


@pytest.mark.parametrize(("redo", "answers", "status", "takes", "questions"), [
    ("ask", "k\n", "poor", 1, 1),
    ("ask", "s\n", "skipped", 1, 1),
    ("ask", "", "poor", 1, 1),  # end of input: the default (keep), never a hang
    ("never", "", "poor", 1, 0),
    ("auto", "", "poor", 2, 0),  # Pl.wav replayed again: still silent after --attempts takes
])
def test_a_short_take_is_kept_skipped_or_redone_as_told(classifier, replay_dir, tmp_path, redo, answers, status,
                                                       takes, questions):
    said: list[str] = []
    only_silence = tmp_path / "sites"
    only_silence.mkdir()
    shutil.copy(replay_dir / "Pl.wav", only_silence / "Pl.wav")
    opts = options(tmp_path / "exam", only_silence, sites=("Pl",), redo=redo, attempts=2, pages=False)
    result = run_exam(classifier, opts, answers=io.StringIO(answers), say=said.append)
    site = result.sites[0]
    assert (site.status, site.takes, site.ok_s, site.label) == (status, takes, 0.0, None)
    assert sum("keep, redo or skip?" in line for line in said) == questions
    assert "no_signal" in site.advice and result.finding["result"] == "incomplete"
    assert json.loads(result.json_path.read_text())["sites"][0]["status"] == status


def test_an_interrupted_exam_keeps_the_finished_sites_and_names_the_missing(classifier, replay_dir, tmp_path):
    stop = threading.Event()

    def say(line: str) -> None:  # Ctrl-C as soon as the first site starts: it finishes, the others are missing
        if line.startswith("site 1/"):
            stop.set()

    with pytest.raises(ExamInterrupted) as cut:
        run_exam(classifier, options(tmp_path, replay_dir, pages=False), io.StringIO(), say, stop=stop)
    result = cut.value.result
    assert [s.status for s in result.sites] == ["ok", "missing", "missing"] and result.missing == ["Al", "Pl"]
    summary = json.loads(result.json_path.read_text())
    assert summary["interrupted"] and summary["missing"] == ["Al", "Pl"]
    assert [p.name for p in tmp_path.glob("*.flac")] == ["101_1b1_Tc_sc_EdgeLung.flac"]
    assert "missing Al, Pl" in result.page_path.read_text()


def test_exam_refuses_a_used_session_and_a_missing_site_file(classifier, replay_dir, tmp_path):
    with pytest.raises(ValueError, match=r"no Ar\.wav/\.flac"):
        run_exam(classifier, options(tmp_path / "a", replay_dir, sites=("Tc", "Ar")), io.StringIO(), print)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "101_1b1_Tc_sc_EdgeLung.flac").write_bytes(b"")
    with pytest.raises(ValueError, match="choose another --session"):
        run_exam(classifier, options(tmp_path / "b", replay_dir), io.StringIO(), print)
    with pytest.raises(ValueError, match="--sites"):
        options(tmp_path, replay_dir, sites=("Tc", "Xx"))
    with pytest.raises(ValueError, match="--patient"):
        ExamOptions("10_1", tmp_path)
