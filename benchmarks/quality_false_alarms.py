"""False alarms and detections of the signal-quality gate on the real ICBHI subset (issue 11).

Every recording goes through the runtime's own windowing (`WindowStream`, 1 s blocks, the
default 8 s window and 1 s hop) and every window is measured by `edge_lung.runtime.artifact.quality`:

1. **clean**: each check on its own, on every window of every recording as recorded; a check
   that fires there is a false alarm (aim: <= 1% each). Percentiles of each feature show the
   margin to its threshold.
2. **degraded** copies of every recording: zeroed, a constant level (issue 26), overdriven
   (peak 6/12/18 dB over full scale, then clipped), white noise at 20/10/0/-10 dB SNR, friction
   (white-noise bursts of 0.1-0.5 s
   over half the time) at 10/0/-10 dB SNR, and a 0.1 s NaN run; the table gives the
   share of windows whose verdict is the expected one (and, for the NaN run, of the windows
   that cover it).
3. **clipping sweep**: false alarms on clean windows against detection of the +6 dB and
   +12 dB overdrive for a range of `clipped_share` thresholds (the subset is clipped at the source).

    python benchmarks/quality_false_alarms.py [--data DIR] [--set NAME=VALUE ...]

Prints the tables; `benchmarks/results/quality_false_alarms.txt` holds a run.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edge_lung.audio import load_audio
from edge_lung.config import FeatureConfig
from edge_lung.runtime.artifact.quality import CHECKS, QualityConfig, QualityStats, checks, verdict
from edge_lung.runtime.live.stream import StreamConfig, Window, WindowStream, assess_window
from edge_lung.testing import add_friction, add_white_noise, overdrive, with_nan_run

NAN_RUN_S = 0.1


def degradations() -> dict[str, tuple[str, Callable[[np.ndarray, int], np.ndarray]]]:
    """name -> (expected verdicts, function(audio, rate) -> degraded audio)."""
    out: dict[str, tuple[str, Callable[[np.ndarray, int], np.ndarray]]] = {
        "zeroed": ("no_signal", lambda x, r: np.zeros_like(x)),
        "constant 0.5": ("no_signal", lambda x, r: np.full_like(x, 0.5)),
        "constant 0.01": ("no_signal", lambda x, r: np.full_like(x, 0.01)),
    }
    for db in (6, 12, 18, 24):
        out[f"overdrive +{db} dB"] = ("clipping", lambda x, r, db=db: overdrive(x, db))
    for snr in (20, 10, 0, -10):
        out[f"white noise {snr:+d} dB SNR"] = ("noise|no_signal", lambda x, r, snr=snr: add_white_noise(x, snr))
    for snr in (10, 0, -10):
        out[f"friction {snr:+d} dB SNR"] = ("noise|no_signal", lambda x, r, snr=snr: add_friction(x, r, snr))
    out["NaN run 0.1 s"] = ("invalid", lambda x, r: with_nan_run(x, x.shape[0] // 2, int(NAN_RUN_S * r)))
    return out


def windows_of(audio: np.ndarray, rate: int, cfg: QualityConfig) -> list[Window]:
    """The runtime's windows of one recording, fed in 1 s blocks."""
    stream = WindowStream(FeatureConfig(), StreamConfig(), rate, clip_level=cfg.clip_level)
    out: list[Window] = []
    for pos in range(0, audio.shape[0], rate):
        out += stream.accept_waveform(audio[pos : pos + rate])
    return out + stream.finish()


def measure_all(audio: np.ndarray, rate: int, cfg: QualityConfig) -> list[tuple[Window, QualityStats]]:
    return [(w, assess_window(w, cfg).stats) for w in windows_of(audio, rate, cfg)]


def clean_table(rows: list[tuple[str, QualityStats]], cfg: QualityConfig) -> list[str]:
    """False alarms of each check over every clean window, overall and per device."""
    devices = sorted({d for d, _ in rows})
    fired = [(d, checks(s, cfg)) for d, s in rows]
    lines = [f"Clean windows: {len(rows)} ({', '.join(f'{d} {sum(x == d for x, _ in rows)}' for d in devices)})",
             f"{'check':<12} {'verdict':<10} {'fires':>6} {'rate %':>7}  " + "  ".join(f"{d:>9}" for d in devices)]
    for name, verdict_name in CHECKS.items():
        n = sum(f[name] for _, f in fired)
        per = [100.0 * sum(f[name] for d, f in fired if d == dev) / max(1, sum(d == dev for d, _ in fired))
               for dev in devices]
        lines.append(f"{name:<12} {verdict_name:<10} {n:>6} {100.0 * n / len(rows):>7.2f}  "
                     + "  ".join(f"{p:>8.2f}%" for p in per))
    verdicts = [verdict(s, cfg) for _, s in rows]
    lines.append("verdicts: " + ", ".join(f"{v} {verdicts.count(v)}" for v in sorted(set(verdicts))))
    lines.append("feature percentiles (p0.5 / p1 / p50 / p99 / p99.5 / max) over clean windows:")
    for feat in ("rms_db", "clipped_share", "flatness", "envelope_db", "band_share_db"):
        vals = np.array([s.band_db - s.rms_db if feat == "band_share_db" else getattr(s, feat) for _, s in rows])
        pct = np.percentile(vals, [0.5, 1, 50, 99, 99.5, 100])
        lines.append(f"  {feat:<14}" + " ".join(f"{v:>9.4f}" for v in pct))
    return lines


def degraded_table(audio_by_file: list[tuple[Path, np.ndarray, int]], cfg: QualityConfig) -> list[str]:
    """Share of windows with the expected verdict under each degradation."""
    lines = [f"{'degradation':<24} {'expected':<16} {'windows':>7} {'detected %':>10}  other verdicts"]
    for name, (expected, degrade) in degradations().items():
        hit, total, other = 0, 0, {}
        for _, audio, rate in audio_by_file:
            bad = degrade(audio, rate)
            nan_at = np.flatnonzero(~np.isfinite(bad))
            for w, stats in measure_all(bad, rate, cfg):
                if expected == "invalid" and not _covers(w, nan_at, rate):
                    continue
                v = verdict(stats, cfg)
                total += 1
                hit += v in expected.split("|")
                if v not in expected.split("|"):
                    other[v] = other.get(v, 0) + 1
        lines.append(f"{name:<24} {expected:<16} {total:>7} {100.0 * hit / max(1, total):>10.1f}  "
                     + ", ".join(f"{k} {v}" for k, v in sorted(other.items())))
    return lines


def clipping_sweep(audio_by_file: list[tuple[Path, np.ndarray, int]], cfg: QualityConfig) -> list[str]:
    """Clean false alarms vs overdrive detection of the clipping check at other `clipped_share` values."""
    shares: dict[str, list[float]] = {"clean": [], "+6 dB": [], "+12 dB": []}
    for _, audio, rate in audio_by_file:
        for name, x in (("clean", audio), ("+6 dB", overdrive(audio, 6)), ("+12 dB", overdrive(audio, 12))):
            shares[name] += [s.clipped_share for _, s in measure_all(x, rate, cfg)]
    lines = [f"{'clipped_share':>13} " + " ".join(f"{k + ' %':>9}" for k in shares)]
    for t in (0.02, 0.05, 0.1, 0.2, 0.3, 0.4):
        lines.append(f"{t:>13.2f} " + " ".join(f"{100.0 * np.mean(np.array(v) >= t):>9.2f}" for v in shares.values()))
    return lines


def _covers(window: Window, nan_at: np.ndarray, rate: int) -> bool:
    """Whether the window's time span holds one of the NaN samples (input indices at `rate`)."""
    if nan_at.size == 0:
        return False
    t = nan_at / rate
    return bool(np.any((t >= window.start_s) & (t < window.end_s)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("EDGE_LUNG_ICBHI_DIR"), help="ICBHI folder (real subset)")
    parser.add_argument("--set", action="append", default=[], help="override a QualityConfig field: NAME=VALUE")
    args = parser.parse_args(argv)
    if not args.data:
        parser.error("--data: expected the ICBHI subset folder (or set EDGE_LUNG_ICBHI_DIR)")
    cfg = QualityConfig().with_overrides(args.set)
    files = sorted(Path(args.data).rglob("*.wav"))
    if not files:
        parser.error(f"--data {args.data}: expected .wav recordings, found none")
    audio_by_file = [(f, *load_audio(f)) for f in files]
    rows = [(f.stem.rsplit("_", 1)[-1], s) for f, x, r in audio_by_file for _, s in measure_all(x, r, cfg)]
    print(f"Quality gate on {len(files)} recordings of {args.data}; thresholds: {cfg.to_dict()}\n")
    print("\n".join(clean_table(rows, cfg)))
    print()
    print("\n".join(degraded_table(audio_by_file, cfg)))
    print()
    print("\n".join(clipping_sweep(audio_by_file, cfg)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
