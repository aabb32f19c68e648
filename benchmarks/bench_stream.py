#!/usr/bin/env python3
"""One hour of audio replayed through the live path without real-time pacing.

Checks the two streaming promises of issue #5 and prints both figures:
  * zero lost samples: every sample of the file reaches the window stream (no ring overrun,
    no skipped window), and
  * bounded memory: the process's RSS after the first minute of audio grows by < 5 MB.

    .venv/bin/python benchmarks/bench_stream.py                 # tiny test model, 1 h at 16 kHz
    .venv/bin/python benchmarks/bench_stream.py --model runs/export/int8 --rate 44100 --threads 2

Without --model it builds the tiny ONNX classifier of `edge_lung.testing` (needs the onnx
package of the dev install); feature extraction dominates the time either way.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf


def write_long_file(path: Path, seconds: float, rate: int) -> int:
    """A PCM16 WAV of `seconds`, written a minute at a time (the benchmark must not hold it in memory)."""
    from edge_lung.testing import make_signal

    total = 0
    with sf.SoundFile(str(path), "w", samplerate=rate, channels=1, subtype="PCM_16") as f:
        minute = 0
        while total < int(seconds * rate):
            n = min(60 * rate, int(seconds * rate) - total)
            f.write(make_signal(n / rate, rate, seed=minute))
            total += n
            minute += 1
    return total


def replay(classifier, wav: Path, events: Path) -> tuple:
    """Run the live path over `wav` as fast as it goes; (summary, wall seconds, RSS after the first minute,
    peak RSS after it, RSS at the end), memory read on every decision."""
    import psutil

    from edge_lung.runtime import ReplaySource, run_live
    from edge_lung.runtime.live.events import JsonlWriter

    proc = psutil.Process()
    rss = {"first_minute": None, "peak_after": 0}

    def watch(decision) -> None:
        now = proc.memory_info().rss
        if rss["first_minute"] is None:
            if decision.window.end_s >= 60.0:
                rss["first_minute"] = now
        else:
            rss["peak_after"] = max(rss["peak_after"], now)

    with JsonlWriter(events) as jsonl:  # the JSON-lines sink stays in the loop, as in the field
        t0 = time.perf_counter()
        summary = run_live(classifier, ReplaySource(wav), on_decision=[jsonl, watch], backpressure=True)
        wall = time.perf_counter() - t0
    rss_end = proc.memory_info().rss
    return summary, wall, rss["first_minute"] or rss_end, max(rss["peak_after"], rss_end), rss_end


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, help="MODEL_DIR (default: build the tiny test model)")
    p.add_argument("--hours", type=float, default=1.0, help="length of the replayed stream (default 1)")
    p.add_argument("--rate", type=int, default=16000, help="sample rate of the replayed file (default 16000)")
    p.add_argument("--hop", type=float, default=1.0, help="seconds between decisions (default 1)")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0: onnxruntime decides)")
    p.add_argument("--max-growth-mb", type=float, default=5.0, help="pass/fail limit on RSS growth")
    args = p.parse_args(argv)

    from edge_lung.runtime import StreamConfig
    from edge_lung.runtime.commands.session import load_classifier

    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        tmp = Path(tmp)
        model_dir = args.model
        if model_dir is None:
            from edge_lung.testing import build_tiny_model

            model_dir = build_tiny_model(tmp / "model")
        wav = tmp / "hour.wav"
        t0 = time.perf_counter()
        frames = write_long_file(wav, args.hours * 3600, args.rate)
        print(f"wrote {frames / args.rate / 60:.1f} min at {args.rate} Hz in {time.perf_counter() - t0:.1f} s")
        classifier = load_classifier(model_dir, StreamConfig(hop_s=args.hop), args.threads)
        summary, wall, first, peak, rss_end = replay(classifier, wav, tmp / "events.jsonl")

    c = summary.counters
    lost = c.lost_samples + (frames - summary.input_samples)
    growth_mb = (peak - first) / 2**20
    print(
        f"replayed {summary.seconds / 3600:.2f} h in {wall:.0f} s ({summary.seconds / wall:.0f}x real time), "
        f"{summary.windows} windows, skipped {c.skipped}, gaps {c.gaps}"
    )
    print(f"lost samples: {lost}  (ring overruns {c.lost_samples}, undelivered {frames - summary.input_samples})")
    print(
        f"RSS after first minute {first / 2**20:.1f} MB, peak after {peak / 2**20:.1f} MB, "
        f"end {rss_end / 2**20:.1f} MB: growth {growth_mb:.2f} MB (limit {args.max_growth_mb} MB)"
    )
    ok = lost == 0 and c.skipped == 0 and growth_mb < args.max_growth_mb
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
