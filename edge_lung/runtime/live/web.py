"""`--web HOST:PORT`: a live page for the field worker's phone, served beside the audio path, never in it.

The page shows decisions only: the live label and P(abnormal) timeline, the quality verdict with its
advice, the breath rate when breath events arrive, and an exam's site prompts and progress. Audio is
never served (the server holds none). `LiveWeb` is a decision sink of `run_live` like the JSON lines
writer: the decision loop turns a `Decision` into a small dict and drops it into a bounded queue
(`put_nowait`; a full queue counts a dropped event and moves on), so a slow phone, a stalled socket or
a crashed page can never hold up the audio. One pump thread folds the events into the page state and
wakes the clients; each client gets the newest state over server-sent events (a slow client skips
states, memory does not grow). Standard library only (`http.server`, `threading`): no CDN, no network
fetch, the page works with no internet.

Security: the default bind is 127.0.0.1 (this machine only). Any other address gets a random token,
printed with the URL (and as a QR code in the terminal when `segno` is installed); every request
must carry it (`?token=`), else 403.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import math
import queue
import secrets
import socket
import sys
import threading
from collections import deque
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO
from urllib.parse import parse_qs, urlsplit

from edge_lung.runtime.artifact.quality import GUIDANCE, OK
from edge_lung.runtime.live.stream import Decision

QR_INSTALL = "pip install segno"
_END = object()


@dataclass(frozen=True)
class WebConfig:
    """Where the page listens and what it keeps. A non-loopback `host` needs a `token` (`parse` makes one)."""

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    timeline: int = 120  # P(abnormal) points the page draws
    queue_size: int = 256  # events waiting for the pump thread; more are dropped (and counted)
    max_clients: int = 8  # page connections at once; more get 503
    keepalive_s: float = 15.0

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("--web: expected HOST:PORT, got an empty host")
        if int(self.port) != self.port or not 0 <= self.port <= 65535:
            raise ValueError(f"--web {self.host}:{self.port}: expected a port in 0..65535, got {self.port}")
        if not self.local and not self.token:
            raise ValueError(f"--web {self.host}:{self.port}: a non-local bind needs a token")
        for name in ("timeline", "queue_size", "max_clients"):
            if getattr(self, name) < 1:
                raise ValueError(f"WebConfig.{name}: expected >= 1, got {getattr(self, name)}")

    @classmethod
    def parse(cls, text: str) -> WebConfig:
        """`HOST:PORT`, `[IPv6]:PORT` or `PORT` (localhost); a non-loopback host gets a fresh random token."""
        host, sep, port = str(text).strip().rpartition(":")
        if not sep:
            host, port = cls.host, text
        host = host.strip("[]") or cls.host
        try:
            number = int(port)
        except ValueError as exc:
            raise ValueError(f"--web {text!r}: expected HOST:PORT with a numeric port, got {port!r}") from exc
        cfg = cls(host, number, token="-")  # validated below with the real token
        return replace(cfg, token=None if cfg.local else secrets.token_urlsafe(16))

    @property
    def local(self) -> bool:
        """Loopback only (127.0.0.0/8, ::1, localhost): no other machine can reach it."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False  # a host name: it may resolve to any interface


def decision_event(d: Decision) -> dict[str, Any]:
    """What the page needs of one decision (no audio, no probabilities vector): a few numbers and labels."""
    return {
        "type": "window",
        "index": d.window.index,
        "end_s": round(d.window.end_s, 3),
        "label": d.label,
        "p_abnormal": _num(d.p_abnormal),
        "smoothed_label": d.smoothed_label,
        "smoothed_p_abnormal": _num(d.smoothed_p_abnormal),
        "flag": bool(d.flag),
        "smoothed_flag": bool(d.smoothed_flag),
        "threshold": d.threshold,
        "verdict": d.verdict,
        "lost_samples": d.counters.get("lost_samples", 0),
        "gaps": d.counters.get("gaps", 0),
        "skipped": d.counters.get("skipped", 0),
    }


def _num(value: float) -> float | None:
    return None if math.isnan(value) else round(float(value), 4)


class PageState:
    """The page's whole state, folded from events (pump thread only); `snapshot()` is what a client gets."""

    def __init__(self, title: str, timeline: int) -> None:
        self.title = title
        self.timeline: deque[list] = deque(maxlen=timeline)
        self.last: dict[str, Any] | None = None
        self.quality = {"verdict": "", "advice": ""}
        self.breath: dict[str, Any] | None = None
        self.exam: dict[str, Any] | None = None
        self.warnings: deque[str] = deque(maxlen=3)
        self.summary: dict[str, Any] | None = None
        self.dropped = 0

    def apply(self, event: dict[str, Any]) -> None:
        """Fold one event in; unknown types are ignored (the page shows what it knows)."""
        kind = event.get("type")
        if kind == "window":
            self.last = event
            self.timeline.append([event["end_s"], event["p_abnormal"], event["verdict"]])
            self.quality = {"verdict": event["verdict"], "advice": GUIDANCE.get(event["verdict"], "")}
        elif kind == "breath":  # breath mode's events (type "breath", with the rate): shown when present
            self.breath = event
        elif kind == "exam":
            current = event.get("current")
            if current and (self.exam is None or self.exam.get("current") != current):
                self.timeline.clear()  # a new site: its own timeline (the last one stays when the exam ends)
                self.last, self.quality = None, {"verdict": "", "advice": ""}
            self.exam = event
        elif kind in ("gap", "warning"):
            self.warnings.append(str(event.get("reason") or event.get("message") or kind))
        elif kind == "summary":
            self.summary = {k: event.get(k) for k in ("audio_s", "windows", "flagged", "lost_samples", "stopped_by")}

    def snapshot(self, seq: int, ended: bool) -> dict[str, Any]:
        return {
            "seq": seq,
            "title": self.title,
            "ended": ended,
            "last": self.last,
            "timeline": list(self.timeline),
            "quality": self.quality,
            "ok": OK,
            "breath": self.breath,
            "exam": self.exam,
            "warnings": list(self.warnings),
            "summary": self.summary,
            "dropped": self.dropped,
        }


class _Hub:
    """The newest serialized state and a condition the client threads wait on."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.seq = 0
        self.body = "{}"
        self.closed = False

    def put(self, body: str, closed: bool = False) -> None:
        with self.cond:
            self.seq += 1
            self.body, self.closed = body, closed
            self.cond.notify_all()

    def wait(self, seen: int, timeout: float) -> tuple[int, str | None, bool]:
        """(seq, body or None on timeout, closed) once the state is newer than `seen`."""
        with self.cond:
            self.cond.wait_for(lambda: self.seq != seen, timeout)
            if self.seq == seen:
                return seen, None, self.closed
            return self.seq, self.body, self.closed


class LiveWeb:
    """The phone page: a decision sink (`__call__`), an event sink (`event`) and a small HTTP server.

    Use as a context manager (or `start()` / `close()`); `url` is the address to open (token included).
    """

    def __init__(self, cfg: WebConfig, title: str = "edge-lung") -> None:
        self.cfg = cfg
        self.state = PageState(title, cfg.timeline)
        self.dropped = 0  # events the decision loop could not hand over (queue full)
        self.clients = 0
        self.requests_refused = 0
        self._queue: queue.Queue = queue.Queue(maxsize=cfg.queue_size)
        self._hub = _Hub()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # ----------------------------------------------------------------- sinks (decision loop side)

    def __call__(self, decision: Decision) -> None:
        """Sink signature of `run_live(on_decision=...)`: never blocks."""
        self.event(decision_event(decision))

    def event(self, event: dict[str, Any]) -> None:
        """Any JSON-ready event (gap, warning, breath, exam, summary); dropped and counted if the queue is full."""
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1

    # ----------------------------------------------------------------- life cycle

    def start(self) -> LiveWeb:
        """Listen (`OSError` naming --web if the address is taken) and start the pump and server threads."""
        if self._server is not None:
            return self
        family = socket.AF_INET6 if ":" in self.cfg.host else socket.AF_INET
        server_cls = type("_Server", (ThreadingHTTPServer,), {"address_family": family, "daemon_threads": True})
        try:
            self._server = server_cls((self.cfg.host, self.cfg.port), _handler_for(self))
        except OSError as exc:
            raise OSError(f"--web {self.cfg.host}:{self.cfg.port}: cannot listen ({exc.strerror or exc})") from exc
        self._publish(ended=False)
        for target, name in ((self._pump, "web-pump"), (self._server.serve_forever, "web-server")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def close(self) -> None:
        """Send the final state (clients close their connection on it) and stop the threads."""
        if self._server is None:
            return
        self._queue.put(_END)  # blocking put is fine here: the session is over
        self._threads[0].join(timeout=5.0)
        self._server.shutdown()
        self._server.server_close()
        self._threads[1].join(timeout=5.0)
        self._server = None

    def __enter__(self) -> LiveWeb:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def port(self) -> int:
        """The port listened on (the one the OS chose for port 0)."""
        return self._server.server_address[1] if self._server is not None else self.cfg.port

    @property
    def url(self) -> str:
        """The page's address as a phone on the same network opens it (the token in the query)."""
        host = self.cfg.host
        if host in ("0.0.0.0", "::", ""):
            host = lan_address()
        if ":" in host:
            host = f"[{host}]"
        query = f"?token={self.cfg.token}" if self.cfg.token else ""
        return f"http://{host}:{self.port}/{query}"

    def announce(self, out: TextIO | None = None) -> None:
        """Print the address (and, for a non-local bind, the QR code of it) for the field worker."""
        out = out or sys.stderr
        scope = "this machine only" if self.cfg.local else "anyone on this network who has the token"
        print(f"phone page: {self.url}  ({scope}; decisions only, never audio)", file=out)
        if not self.cfg.local:
            print(qr_text(self.url), file=out)

    # ----------------------------------------------------------------- pump thread

    def _pump(self) -> None:
        while True:
            event = self._queue.get()
            if event is _END:
                self._publish(ended=True)
                return
            self.state.apply(event)
            while True:  # fold everything already waiting before waking the clients once
                try:
                    event = self._queue.get_nowait()
                except queue.Empty:
                    break
                if event is _END:
                    self._publish(ended=True)
                    return
                self.state.apply(event)
            self._publish(ended=False)

    def _publish(self, ended: bool) -> None:
        self.state.dropped = self.dropped
        snapshot = self.state.snapshot(self._hub.seq + 1, ended)
        self._hub.put(json.dumps(snapshot, separators=(",", ":")), closed=ended)

    # ----------------------------------------------------------------- used by the request handler

    def authorised(self, query: str, headers) -> bool:
        """Whether a request carries the token (always, when none is needed)."""
        if self.cfg.token is None:
            return True
        given = parse_qs(query).get("token", [""])[0] or headers.get("X-Edge-Lung-Token", "")
        return hmac.compare_digest(given.encode(), self.cfg.token.encode())

    def join_client(self) -> bool:
        with self._lock:
            if self.clients >= self.cfg.max_clients:
                return False
            self.clients += 1
            return True

    def leave_client(self) -> None:
        with self._lock:
            self.clients -= 1


def lan_address() -> str:
    """This machine's address on its default route (a UDP socket is 'connected', no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed anywhere, only picks the interface
            return s.getsockname()[0]
        except OSError:
            return socket.gethostbyname(socket.gethostname())


def qr_text(url: str) -> str:
    """The QR code of `url` drawn with block characters, or how to get one."""
    try:
        import segno  # optional: the URL above it is enough without it
    except ImportError:
        return f"(no QR code: {QR_INSTALL})"
    buf = _StringOut()
    segno.make(url, error="l").terminal(out=buf, compact=True)
    return buf.text()


class _StringOut:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> None:
        self.parts.append(text)

    def text(self) -> str:
        return "".join(self.parts)


# --------------------------------------------------------------------------- HTTP

_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the token never leaves in a Referer header
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                               "connect-src 'self'; img-src data:",
}


def _handler_for(web: LiveWeb) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        pass

    Handler.web = web
    return Handler


class _Handler(BaseHTTPRequestHandler):
    """GET / (the page), /state (JSON), /events (server-sent events); nothing else, and never audio."""

    web: LiveWeb
    server_version = "edge-lung"
    sys_version = ""

    def log_message(self, format: str, *args) -> None:  # the terminal belongs to the live view
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if not self.web.authorised(parts.query, self.headers):
            self.web.requests_refused += 1
            return self._send(403, "text/plain; charset=utf-8", b"403: missing or wrong token\n")
        if parts.path == "/":
            return self._send(200, "text/html; charset=utf-8", PAGE.encode())
        if parts.path == "/state":
            return self._send(200, "application/json", self.web._hub.body.encode())
        if parts.path == "/events":
            return self._events()
        return self._send(404, "text/plain; charset=utf-8", b"404: not here\n")

    def _send(self, status: int, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in _HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _events(self) -> None:
        if not self.web.join_client():
            return self._send(503, "text/plain; charset=utf-8", b"503: too many pages open\n")
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            for name, value in _HEADERS.items():
                self.send_header(name, value)
            self.end_headers()
            self._stream()
        except OSError:  # the phone went away (BrokenPipe, ConnectionReset): nothing to do
            pass
        finally:
            self.web.leave_client()

    def _stream(self) -> None:
        seen = 0
        while True:
            seen, body, closed = self.web._hub.wait(seen, self.web.cfg.keepalive_s)
            self.wfile.write(b": keepalive\n\n" if body is None else f"data: {body}\n\n".encode())
            if closed:
                self.wfile.write(b"event: end\ndata: {}\n\n")
                self.wfile.flush()
                return
            self.wfile.flush()


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edge-lung live</title>
<style>
body{font-family:sans-serif;margin:0;padding:10px;color:#222;background:#fafafa;max-width:640px}
h1{font-size:16px;margin:0 0 8px;word-break:break-all}
.card{background:#fff;border:1px solid #ddd;border-radius:8px;padding:8px 10px;margin:0 0 8px}
#label{font-size:28px;font-weight:bold}
.normal{color:#070}.abnormal{color:#b00}.held{color:#a60}.muted{color:#666;font-size:13px}
#p{font-size:20px}
svg{width:100%;height:auto;display:block}
#sites{display:flex;flex-wrap:wrap;gap:4px;margin:4px 0}
.site{border-radius:4px;padding:3px 6px;font-size:13px;border:1px solid #aaa;background:#eee}
.site.ok{background:#cfc}.site.abnormal{background:#fbb}.site.poor{background:#fe9}
.site.skipped,.site.missing,.site.interrupted{background:#ddd;color:#777}.site.current{outline:2px solid #06c}
#prompt{font-size:17px;font-weight:bold;color:#06c}
</style></head><body>
<h1 id="title">edge-lung live</h1>
<div class="card" id="examcard" hidden>
<div class="muted" id="patient"></div><div id="sites"></div><div id="prompt"></div></div>
<div class="card"><div id="label" class="muted">waiting for audio</div>
<div id="p"></div><div class="muted" id="smoothed"></div></div>
<div class="card"><div class="muted">P(abnormal), last windows (dashed: threshold)</div>
<svg id="plot" viewBox="0 0 340 110" role="img" aria-label="P(abnormal) timeline">
<rect x="0" y="0" width="340" height="110" fill="#fff" stroke="#ccc"/>
<line id="thr" x1="0" x2="340" y1="55" y2="55" stroke="#b00" stroke-dasharray="4 3"/>
<polyline id="line" fill="none" stroke="#222" stroke-width="2" points=""/>
<g id="held"></g></svg></div>
<div class="card"><div>Signal: <b id="verdict">-</b></div><div id="advice" class="held"></div></div>
<div class="card" id="breathcard" hidden><div>Breath rate: <b id="breath">-</b></div></div>
<div class="muted" id="counters"></div><div class="muted" id="status">connecting</div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const seen = [];
let updates = 0;
function fmt(p) { return p === null || p === undefined ? "-" : p.toFixed(2); }
function drawTimeline(points, threshold) {
  const W = 340, H = 110, n = points.length;
  $("thr").setAttribute("y1", H - threshold * H); $("thr").setAttribute("y2", H - threshold * H);
  const xs = (k) => (n < 2 ? W : (k * W) / (n - 1)).toFixed(1);
  const pts = [];
  const held = $("held");
  while (held.firstChild) held.removeChild(held.firstChild);
  points.forEach((pt, k) => {
    if (pt[1] === null) {
      const c = document.createElementNS("http://www.w3.org/2000/svg", "circle");
      c.setAttribute("cx", xs(k)); c.setAttribute("cy", H - 4); c.setAttribute("r", 3); c.setAttribute("fill", "#a60");
      held.appendChild(c);
    } else { pts.push(xs(k) + "," + (H - pt[1] * H).toFixed(1)); }
  });
  $("line").setAttribute("points", pts.join(" "));
}
function drawExam(exam) {
  $("examcard").hidden = !exam;
  if (!exam) return;
  $("patient").textContent = "Patient " + exam.patient + " - site " + exam.progress;
  const box = $("sites");
  while (box.firstChild) box.removeChild(box.firstChild);
  exam.sites.forEach((s) => {
    const chip = document.createElement("span");
    chip.className = "site " + s.status + (s.site === exam.current ? " current" : "");
    chip.textContent = s.site + " " + s.status;
    chip.title = s.name;
    box.appendChild(chip);
  });
  $("prompt").textContent = exam.prompt || "";
}
function render(s) {
  updates += 1;
  $("title").textContent = s.title;
  document.title = "edge-lung: " + s.title;
  const last = s.last;
  if (last) {
    if (seen.length === 0 || seen[seen.length - 1] !== last.index) seen.push(last.index);
    const held = last.verdict !== s.ok;
    $("label").textContent = held ? "not heard (" + last.verdict + ")" : last.label + (last.flag ? " - flagged" : "");
    $("label").className = held ? "held" : (last.flag ? "abnormal" : "normal");
    $("p").textContent = "P(abnormal) " + fmt(last.p_abnormal) + " at " + last.end_s.toFixed(1) + " s";
    $("smoothed").textContent = "smoothed: " + last.smoothed_label + " " + fmt(last.smoothed_p_abnormal);
    $("counters").textContent =
      "lost samples " + last.lost_samples + ", gaps " + last.gaps + ", skipped windows " + last.skipped;
    drawTimeline(s.timeline, last.threshold);
  }
  $("verdict").textContent = s.quality.verdict || "-";
  $("advice").textContent = s.quality.advice || "";
  $("breathcard").hidden = !s.breath;
  if (s.breath) {
    const b = s.breath, rate = b.rate_bpm ?? b.rate ?? b.breaths_per_min ?? b.bpm;
    $("breath").textContent = rate === undefined || rate === null ? "-" : Number(rate).toFixed(0) + " /min";
  }
  drawExam(s.exam);
  const missed = seen.length ? (seen[seen.length - 1] - seen[0] + 1) - seen.length : 0;
  document.body.dataset.updates = updates;
  document.body.dataset.windows = seen.length;
  document.body.dataset.missed = missed;
  document.body.dataset.ended = s.ended;
}
const es = new EventSource("/events" + location.search);
es.onopen = () => { $("status").textContent = "live"; };
es.onmessage = (e) => render(JSON.parse(e.data));
es.addEventListener("end", () => { es.close(); $("status").textContent = "session ended"; });
es.onerror = () => { $("status").textContent = "reconnecting"; };
</script></body></html>
"""
