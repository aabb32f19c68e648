#!/usr/bin/env python3
"""The phone page under load: a real-time replay with 5 pages connected costs no samples and little memory.

Two `edge-lung stream --replay FILE --realtime` processes run the same file side by side, one plain and one
with `--web 127.0.0.1:PORT` and `CLIENTS` page clients (threads of this process, so their memory is not the
stream's) that load the page and read its server-sent events for the whole replay. Printed and written to
benchmarks/results/web/: lost samples and skipped windows of each run (from its `--jsonl` summary), each
process's peak RSS (`wait4` ru_maxrss) and their ratio, and per client the events received and the longest
wait between two of them.

    .venv/bin/python benchmarks/bench_web_load.py                  # 10 minutes, 5 clients, tiny test model
    .venv/bin/python benchmarks/bench_web_load.py --minutes 2 --model runs/export/int8
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_stream import write_long_file  # noqa: E402  (the benchmarks folder is not a package)

RESULTS = Path(__file__).resolve().parent / "results" / "web"
CLI = "from edge_lung.cli import main; main()"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_stream(model: Path, wav: Path, jsonl: Path, web: str | None, threads: int) -> subprocess.Popen:
    cmd = [sys.executable, "-c", CLI, "stream", str(model), "--replay", str(wav), "--realtime", "--quiet",
           "--jsonl", str(jsonl), "--threads", str(threads)]
    if web is not None:
        cmd += ["--web", web]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_rusage(proc: subprocess.Popen) -> tuple[int, float]:
    """(exit status, peak RSS in MB) of a child, from wait4."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024  # ru_maxrss is in KB on Linux


class PageClient(threading.Thread):
    """One phone: GET / once, then read /events until the server ends the stream."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.events = 0
        self.windows: set[int] = set()
        self.max_wait_s = 0.0
        self.error: str | None = None

    def run(self) -> None:
        try:
            page = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            page.request("GET", "/")
            assert page.getresponse().read().startswith(b"<!DOCTYPE html>")
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            conn.request("GET", "/events")
            res = conn.getresponse()
            last = None
            for raw in res:
                line = raw.decode().rstrip("\n")
                if line.startswith("data: {") and line != "data: {}":
                    self.events += 1
                    state = json.loads(line[6:])
                    if state["last"] is not None:  # waits between window updates (the first comes after --min-audio)
                        now = time.monotonic()
                        self.max_wait_s, last = max(self.max_wait_s, now - (last or now)), now
                        self.windows.add(state["last"]["index"])
                elif line.startswith("event: end"):
                    return
        except (OSError, AssertionError, ValueError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"


class RssWatch(threading.Thread):
    """Samples a child's VmRSS once a second: the steady-state memory (ru_maxrss is often set while loading)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.status = Path(f"/proc/{pid}/status")
        self.max_mb, self.last_mb = 0.0, 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            try:
                kb = next(int(line.split()[1]) for line in self.status.read_text().splitlines()
                          if line.startswith("VmRSS:"))
            except (OSError, StopIteration):
                return
            self.max_mb, self.last_mb = max(self.max_mb, kb / 1024), kb / 1024


def wait_for_port(port: int, proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"--web 127.0.0.1:{port}: nothing listening after {timeout_s:.0f} s")


def summary_of(jsonl: Path) -> dict:
    lines = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    return next(e for e in reversed(lines) if e.get("type") == "summary")


def run(args: argparse.Namespace, tmp: Path) -> dict:
    model = args.model
    if model is None:
        from edge_lung.testing import build_tiny_model

        model = build_tiny_model(tmp / "model")
    wav = tmp / "replay.wav"
    frames = write_long_file(wav, args.minutes * 60, args.rate)
    port = free_port()
    plain = start_stream(model, wav, tmp / "plain.jsonl", None, args.threads)
    web = start_stream(model, wav, tmp / "web.jsonl", f"127.0.0.1:{port}", args.threads)
    watches = {"plain": RssWatch(plain.pid), "web": RssWatch(web.pid)}
    for w in watches.values():
        w.start()
    wait_for_port(port, web)
    clients = [PageClient(port) for _ in range(args.clients)]
    for c in clients:
        c.start()
    status = {name: wait_rusage(proc) for name, proc in (("plain", plain), ("web", web))}
    for w in watches.values():
        w.stop.set()
    for c in clients:
        c.join(timeout=30)
    runs = {}
    for name, proc in (("plain", plain), ("web", web)):
        s = summary_of(tmp / f"{name}.jsonl")
        runs[name] = {"exit": status[name][0], "peak_rss_mb": round(status[name][1], 1),
                      "max_sampled_rss_mb": round(watches[name].max_mb, 1),
                      "last_sampled_rss_mb": round(watches[name].last_mb, 1), "windows": s["windows"],
                      "lost_samples": s["lost_samples"] + frames - round(s["audio_s"] * args.rate),
                      "ring_lost_samples": s["lost_samples"], "skipped_windows": s["skipped"], "gaps": s["gaps"],
                      "audio_s": s["audio_s"], "stderr_tail": proc.stderr.read()[-300:]}
    ratio = runs["web"]["peak_rss_mb"] / runs["plain"]["peak_rss_mb"]
    sampled = runs["web"]["max_sampled_rss_mb"] / max(runs["plain"]["max_sampled_rss_mb"], 1e-9)
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": args.machine,
        "python": platform.python_version(),
        "minutes": args.minutes,
        "rate": args.rate,
        "clients": args.clients,
        "model": "tiny test model (edge_lung.testing)" if args.model is None else str(args.model),
        "note": "both streams ran at the same time on the same file; clients are threads of the benchmark process",
        "runs": runs,
        "peak_rss_ratio_web_over_plain": round(ratio, 4),
        "sampled_rss_ratio_web_over_plain": round(sampled, 4),
        "client_results": [{"events": c.events, "windows_seen": len(c.windows), "max_wait_s": round(c.max_wait_s, 3),
                            "error": c.error} for c in clients],
        "pass": bool(runs["web"]["lost_samples"] == 0 and runs["plain"]["lost_samples"] == 0
                     and max(ratio, sampled) <= 1.10 and all(c.error is None and c.events > 0 for c in clients)),
    }


def markdown(r: dict) -> str:
    rows = "\n".join(f"| {name} | {x['audio_s']:.0f} | {x['windows']} | {x['lost_samples']} | {x['skipped_windows']} "
                     f"| {x['gaps']} | {x['peak_rss_mb']:.1f} | {x['max_sampled_rss_mb']:.1f} | "
                     f"{x['last_sampled_rss_mb']:.1f} |" for name, x in r["runs"].items())
    waits = ", ".join(f"{c['events']} events / {c['windows_seen']} windows, longest wait {c['max_wait_s']:.2f} s"
                      for c in r["client_results"])
    return (f"# Phone page under load ({r['date']})\n\nMachine: {r['machine']}. {r['minutes']:g} min replayed at "
            f"real time ({r['rate']} Hz, {r['model']}); {r['note']}.\n\n"
            "| run | audio s | windows | lost samples | skipped windows | gaps | peak RSS MB (wait4) | "
            "max sampled RSS MB | last sampled RSS MB |\n"
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
            f"{rows}\n\nWith --web and {r['clients']} pages / without: peak RSS "
            f"**{r['peak_rss_ratio_web_over_plain']:.3f}**, max RSS sampled once a second "
            f"**{r['sampled_rss_ratio_web_over_plain']:.3f}** (limit 1.10).\n\nClients (events received / "
            f"distinct windows seen, longest wait between window updates): {waits}.\n\n"
            f"Result: {'PASS' if r['pass'] else 'FAIL'}\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, help="MODEL_DIR (default: build the tiny test model)")
    p.add_argument("--minutes", type=float, default=10.0, help="length of the replay (default 10)")
    p.add_argument("--rate", type=int, default=16000, help="sample rate of the replayed file (default 16000)")
    p.add_argument("--clients", type=int, default=5, help="page clients connected (default 5)")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads per stream (default 1)")
    p.add_argument("--machine", default="2-core Intel Xeon VM, shared with other work")
    p.add_argument("--name", default=None, help="results file stem (default DATE-web-load-MINUTESmin)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        result = run(args, Path(tmp))
    stem = args.name or f"{result['date']}-web-load-{args.minutes:g}min"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
