"""`--web`: the phone page. The token guards a non-local bind, the sink never blocks the decision loop, and the
page, opened in headless Chromium during a real-time replay, shows every window's decision as it comes."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from edge_lung.runtime.commands.session import StreamOptions, load_classifier, stream_session
from edge_lung.runtime.live.stream import StreamConfig
from edge_lung.runtime.live.web import LiveWeb, WebConfig
from tests.runtime.explain.test_report import chromium


def status_of(url: str, headers: dict | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as res:
            return res.status
    except urllib.error.HTTPError as err:
        return err.code


def test_bind_parsing_puts_a_token_on_every_non_local_address():
    assert WebConfig.parse("127.0.0.1:8000") == WebConfig("127.0.0.1", 8000)
    assert WebConfig.parse("8001").host == "127.0.0.1" and WebConfig.parse("[::1]:0").token is None
    for bind in ("0.0.0.0:8000", "192.168.1.20:0", "[::]:0", "phone-host:8000"):
        cfg = WebConfig.parse(bind)
        assert not cfg.local and cfg.token and len(cfg.token) >= 16
    assert WebConfig.parse("0.0.0.0:1").token != WebConfig.parse("0.0.0.0:1").token
    with pytest.raises(ValueError, match="needs a token"):
        WebConfig("0.0.0.0", 8000)
    with pytest.raises(ValueError, match="numeric port"):
        WebConfig.parse("127.0.0.1:http")
    with pytest.raises(ValueError, match="0..65535"):
        WebConfig.parse("127.0.0.1:70000")


def test_a_non_local_bind_refuses_requests_without_the_token():
    with LiveWeb(WebConfig.parse("0.0.0.0:0")) as web:
        base, token = f"http://127.0.0.1:{web.port}", web.cfg.token
        for path in ("/", "/state", "/events", "/audio.wav"):
            assert status_of(base + path) == 403, path
            assert status_of(f"{base}{path}?token=wrong{token}") == 403, path
        assert status_of(f"{base}/?token={token}") == 200
        assert status_of(f"{base}/state", {"X-Edge-Lung-Token": token}) == 200
        assert status_of(f"{base}/audio.wav?token={token}") == 404  # audio is never served
        assert f"token={token}" in web.url and web.requests_refused == 8
        printed = io.StringIO()
        web.announce(printed)
        assert f":{web.port}/?token={token}" in printed.getvalue()
        if importlib.util.find_spec("segno") is not None:  # the QR code of the address, in block characters
            assert printed.getvalue().count("\u2588") > 100
    with LiveWeb(WebConfig.parse("127.0.0.1:0")) as web:  # loopback: no token
        assert status_of(f"http://127.0.0.1:{web.port}/state") == 200 and "token" not in web.url


def test_the_sink_never_blocks_and_counts_what_it_drops():
    web = LiveWeb(WebConfig(queue_size=4))  # not started: nothing drains the queue
    for k in range(100):
        web.event({"type": "warning", "message": str(k)})
    assert web.dropped == 96


def test_page_state_folds_events_and_keeps_a_bounded_timeline():
    web = LiveWeb(WebConfig(port=0, timeline=5))
    with web:
        for k in range(20):
            web.event({"type": "window", "index": k, "end_s": k + 2.0, "label": "normal", "p_abnormal": 0.1,
                       "verdict": "ok" if k % 2 else "no_signal"})
        web.event({"type": "breath", "rate_bpm": 16})
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{web.port}/state", timeout=5) as res:
                state = json.loads(res.read())
            if state["breath"]:
                break
            time.sleep(0.05)
    assert [p[0] for p in state["timeline"]] == [17.0, 18.0, 19.0, 20.0, 21.0]
    assert state["last"]["index"] == 19 and state["quality"]["verdict"] == "ok"
    assert state["breath"]["rate_bpm"] == 16


# --------------------------------------------------------------------------- a real browser, a real-time replay

@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("onnx")
    from edge_lung.testing import build_tiny_model

    return load_classifier(build_tiny_model(tmp_path_factory.mktemp("tiny-model")), StreamConfig(threshold=0.2), 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(url)


def test_live_page_in_a_headless_browser_during_a_realtime_replay(classifier, tmp_path):
    import matplotlib.image as mpimg

    from edge_lung.testing import write_signal

    exe = chromium()
    wav = tmp_path / "signal.wav"
    write_signal(wav, 12.0, 16000)
    port = free_port()
    opts = StreamOptions(replay=wav, realtime=True, display=False, web=f"127.0.0.1:{port}")
    done: dict = {}
    session = threading.Thread(target=lambda: done.update(summary=stream_session(classifier, opts)))
    session.start()
    url = f"http://127.0.0.1:{port}/"
    wait_for(url + "state")
    base = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
            "--virtual-time-budget=60000", "--window-size=360,740"]
    shot = tmp_path / "phone.png"
    # both pages stay open until the session ends (the server's last event closes them)
    runs = [subprocess.Popen([*base, f"--user-data-dir={tmp_path / name}", *args, url], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
            for name, args in (("dom", ["--dump-dom"]), ("shot", [f"--screenshot={shot}"]))]
    outputs = [run.communicate(timeout=120) for run in runs]
    session.join(timeout=30)
    summary = done["summary"]
    assert summary.windows >= 10 and summary.counters.lost_samples == 0
    for run, (_, err) in zip(runs, outputs, strict=True):
        console = [line for line in err.splitlines() if ":CONSOLE" in line]
        assert run.returncode == 0 and not console, console or err[-2000:]
    dom = outputs[0][0]
    seen = {k: re.search(rf'data-{k}="([^"]+)"', dom).group(1) for k in ("updates", "windows", "missed", "ended")}
    # the page opened after the first windows (Chromium starts slowly on a busy machine); from then on it showed
    # every hop's window, in order: no index skipped between the first and the last it saw
    assert int(seen["windows"]) >= 4 and seen["missed"] == "0" and seen["ended"] == "true", seen
    assert int(seen["updates"]) >= int(seen["windows"])
    pixels = mpimg.imread(str(shot))[..., :3]
    assert pixels.shape[:2] == (740, 360)
    assert pixels.std() > 0.05 and (pixels.mean(axis=2) < 0.6).mean() > 0.01  # text and a plot, not blank


def test_exam_events_give_each_site_its_own_timeline_and_keep_the_last_one_at_the_end():
    from edge_lung.runtime.live.web import PageState

    state = PageState("exam 101", timeline=10)

    def exam(current):
        return {"type": "exam", "patient": "101", "current": current, "prompt": "", "progress": "1/2", "sites": []}

    def window(k):
        return {"type": "window", "index": k, "end_s": float(k), "p_abnormal": 0.5, "verdict": "ok"}

    for event in (exam("Tc"), window(0), window(1), exam("Tc"), window(2)):
        state.apply(event)
    assert len(state.timeline) == 3  # the same site's prompt again (a redo) does not wipe it
    state.apply(exam("Al"))
    assert len(state.timeline) == 0 and state.last is None
    state.apply(window(0))
    state.apply(exam(None))  # the exam's end: the finding, the last site's timeline stays
    assert len(state.timeline) == 1 and state.snapshot(1, True)["exam"]["current"] is None
