#!/usr/bin/env python3
"""Peak memory of `edge-lung classify` on a 1-minute and a 30-minute recording (issue 10).

`classify` must not keep anything per window: its peak resident memory on the long file should be
within 20% of the short one's. Each file is classified by the real command (`--jsonl` on) in a
fresh Python process, and that process's peak RSS (Linux `VmHWM`) is printed.

    .venv/bin/python benchmarks/bench_classify_memory.py                      # tiny test model, 16 kHz
    .venv/bin/python benchmarks/bench_classify_memory.py --model runs/export/int8 --rate 44100 \
        --json benchmarks/results/classify-memory/NAME.json

Without --model it builds the tiny ONNX classifier of `edge_lung.testing` (needs the onnx package
of the dev install); memory per window is the runtime's, whatever the model.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import soundfile as sf

CHILD = textwrap.dedent(
    """
    import sys
    from edge_lung.cli import app
    try:
        app(["classify", sys.argv[1], sys.argv[2], "--jsonl", sys.argv[3], "--threads", "1"], standalone_mode=False)
    finally:
        status = open("/proc/self/status").read()
        print([line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")][0])
    """
)


def write_long_file(path: Path, seconds: float, rate: int) -> None:
    """A PCM16 WAV of `seconds`, written a minute at a time (the benchmark must not hold it in memory)."""
    from edge_lung.testing import make_signal

    total, minute = 0, 0
    with sf.SoundFile(str(path), "w", samplerate=rate, channels=1, subtype="PCM_16") as f:
        while total < int(seconds * rate):
            n = min(60 * rate, int(seconds * rate) - total)
            f.write(make_signal(n / rate, rate, seed=minute))
            total, minute = total + n, minute + 1


def peak_rss_mb(model: Path, wav: Path, jsonl: Path) -> tuple[float, int]:
    """(peak RSS in MB of a fresh process classifying `wav`, windows it wrote)."""
    done = subprocess.run([sys.executable, "-c", CHILD, str(model), str(wav), str(jsonl)], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"classify {wav} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    windows = sum(1 for line in jsonl.read_text().splitlines() if '"type":"window"' in line)
    return int(done.stdout.split()[-1]) / 1024, windows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, help="MODEL_DIR (default: build the tiny test model)")
    p.add_argument("--rate", type=int, default=16000, help="sample rate of the recordings (default 16000)")
    p.add_argument("--minutes", type=float, nargs=2, default=(1.0, 30.0), help="short and long length (1 30)")
    p.add_argument("--max-ratio", type=float, default=1.2, help="pass/fail limit on long / short peak RSS")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-classify-mem-") as tmp:
        tmp = Path(tmp)
        model = args.model
        if model is None:
            from edge_lung.testing import build_tiny_model

            model = build_tiny_model(tmp / "model")
        rows = []
        for minutes in args.minutes:
            wav = tmp / f"{minutes:g}min.wav"
            write_long_file(wav, 60 * minutes, args.rate)
            peak, windows = peak_rss_mb(model, wav, tmp / "out.jsonl")
            wav.unlink()
            rows.append({"minutes": minutes, "windows": windows, "peak_rss_mb": round(peak, 1)})
            print(f"{minutes:5g} min at {args.rate} Hz: {windows:5d} windows, peak RSS {peak:7.1f} MB", flush=True)
    ratio = rows[1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    verdict = "PASS" if ratio <= args.max_ratio else "FAIL"
    print(f"long / short peak RSS: {ratio:.3f} (limit {args.max_ratio}): {verdict}")
    if args.json is not None:
        report = {"rows": rows, "ratio": round(ratio, 4), "max_ratio": args.max_ratio, "rate": args.rate,
                  "model": str(args.model or "tiny test model"), "machine": platform.platform(),
                  "python": platform.python_version()}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
