#!/usr/bin/env python3
"""Peak memory of `edge-lung report` (or `stream --report`) on recordings of 1, 10 and 20 minutes (issue 26).

`report` must stream the recording: its peak resident memory on the 20-minute file should be
within 20% of the 1-minute one's. Each file is reported by the real command in a fresh Python
process, and that process's peak RSS (Linux `VmHWM`) is printed. `--code DIR` (repeatable)
runs the same files against another checkout of the package (e.g. `git worktree add /tmp/old
3bccfa1`), so old and new are measured in one run on the same files.

    .venv/bin/python benchmarks/bench_report_memory.py --code /tmp/old --code . \
        --json benchmarks/results/report-memory/NAME.json --md benchmarks/results/report-memory/NAME.md

Without --model it builds the tiny ONNX classifier of `edge_lung.testing` (needs the onnx package
of the dev install); the recording is `edge_lung.testing.make_signal` at 44.1 kHz (a stethoscope's rate).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import soundfile as sf

CHILD = textwrap.dedent(
    """
    import sys
    from edge_lung.cli import app
    try:
        if sys.argv[4] == "report":
            args = ["report", sys.argv[1], sys.argv[2], "--out", sys.argv[3]]
        else:  # stream --replay FILE --report DIR: the live session's page
            args = ["stream", sys.argv[1], "--replay", sys.argv[2], "--quiet", "--report", sys.argv[3]]
        code = app([*args, "--threads", "1"], standalone_mode=False)
    finally:
        status = open("/proc/self/status").read()
        print([line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")][0])
    sys.exit(code or 0)
    """
)

BUILD = "import sys; from edge_lung.testing import build_tiny_model; build_tiny_model(sys.argv[1])"
"""Each checkout builds its own tiny model: a runtime refuses quality settings it does not know."""


def write_long_file(path: Path, seconds: float, rate: int) -> None:
    """A PCM16 WAV of `seconds`, written a minute at a time (the benchmark must not hold it in memory)."""
    from edge_lung.testing import make_signal

    total, minute = 0, 0
    with sf.SoundFile(str(path), "w", samplerate=rate, channels=1, subtype="PCM_16") as f:
        while total < int(seconds * rate):
            n = min(60 * rate, int(seconds * rate) - total)
            f.write(make_signal(n / rate, rate, seed=minute))
            total, minute = total + n, minute + 1


def _env(code: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1"}


def build_model(code: Path, model: Path) -> Path:
    """The tiny test model, written by the package at `code`."""
    subprocess.run([sys.executable, "-c", BUILD, str(model)], check=True, env=_env(code), cwd=model.parent)
    return model


def peak_rss_mb(code: Path, model: Path, wav: Path, out: Path, command: str = "report") -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of a fresh process running `command` ('report', or 'stream' with --report)
    on `wav` with the package at `code`."""
    t0 = time.perf_counter()
    # cwd: the temp folder, so sys.path[0] does not put this checkout ahead of `code`
    done = subprocess.run([sys.executable, "-c", CHILD, str(model), str(wav), str(out), command], capture_output=True,
                          text=True, check=False, env=_env(code), cwd=out.parent)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"report {wav} with {code} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return int(done.stdout.strip().splitlines()[-1]) / 1024.0, seconds


def markdown(record: dict) -> str:
    """The results as a markdown table: peak MB per duration and code, and the long/short ratio."""
    minutes = record["minutes"]
    what = "report" if record.get("command", "report") == "report" else "stream --replay FILE --report DIR"
    lines = [f"# `edge-lung {what}` peak memory ({record['date']}, {record['machine']})", "",
             f"Tiny test model, `make_signal` at {record['rate']} Hz, PCM16 WAV; peak RSS (VmHWM) of a fresh "
             "process per run.", "",
             "| code | " + " | ".join(f"{m:g} min (MB)" for m in minutes) + " | longest / shortest |",
             "|---|" + "---|" * (len(minutes) + 1)]
    for name, runs in record["runs"].items():
        peaks = [r["peak_mb"] for r in runs]
        lines.append(f"| {name} | " + " | ".join(f"{p:.0f}" for p in peaks) + f" | {peaks[-1] / peaks[0]:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="MODEL_DIR (default: the tiny test model)")
    parser.add_argument("--code", type=Path, action="append", help="package checkout to run (repeatable; "
                        "default: this one)")
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 10.0, 20.0])
    parser.add_argument("--rate", type=int, default=44100)
    parser.add_argument("--command", choices=("report", "stream"), default="report",
                        help="report FILE, or stream --replay FILE --report DIR")
    parser.add_argument("--machine", default="2-core Intel Xeon VM, shared with other work")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--md", type=Path, help="also write them as a markdown table here")
    args = parser.parse_args(argv)
    codes = args.code or [Path(__file__).resolve().parents[1]]
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        models = {code: args.model or build_model(code.resolve(), tmp_path / f"model-{i}")
                  for i, code in enumerate(codes)}
        record = {"command": args.command, "date": time.strftime("%Y-%m-%d"), "machine": args.machine,
                  "platform": platform.platform(),
                  "rate": args.rate, "minutes": args.minutes, "runs": {}}
        for minutes in args.minutes:
            wav = tmp_path / f"rec-{minutes:g}min.wav"
            write_long_file(wav, 60.0 * minutes, args.rate)
            for code in codes:
                out = tmp_path / f"out-{codes.index(code)}-{minutes:g}"
                peak, seconds = peak_rss_mb(code.resolve(), models[code], wav, out, args.command)
                record["runs"].setdefault(str(code), []).append(
                    {"minutes": minutes, "peak_mb": round(peak, 1), "seconds": round(seconds, 1)})
                print(f"{code}: {minutes:g} min: peak {peak:.0f} MB, {seconds:.0f} s", flush=True)
            wav.unlink()
    for name, runs in record["runs"].items():
        print(f"{name}: longest / shortest peak = {runs[-1]['peak_mb'] / runs[0]['peak_mb']:.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(markdown(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
