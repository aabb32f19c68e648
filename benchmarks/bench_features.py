"""Median time of one 8 s window's features on one core: edge-lung's numpy fbank vs transformers'
ASTFeatureExtractor, interleaved in one run so that machine noise hits both alike.

    OMP_NUM_THREADS=1 python benchmarks/bench_features.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core, set before numpy loads its BLAS

import numpy as np  # noqa: E402

from edge_lung.config import FeatureConfig  # noqa: E402
from edge_lung.features import window_features  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    cfg = FeatureConfig()
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(cfg.window_samples)).astype(np.float32)
    try:
        from transformers import ASTFeatureExtractor
    except ImportError:
        ASTFeatureExtractor = None  # noqa: N806
    ref = ASTFeatureExtractor(max_length=cfg.num_frames) if ASTFeatureExtractor else None
    ours_t, ref_t = [], []
    window_features(wave, cfg)
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        window_features(wave, cfg)
        ours_t.append(time.perf_counter() - t0)
        if ref is not None:
            t0 = time.perf_counter()
            ref(wave, sampling_rate=cfg.sample_rate, return_tensors="np")
            ref_t.append(time.perf_counter() - t0)
    ours = 1000 * statistics.median(ours_t)
    shape = f"{cfg.num_frames}x{cfg.num_mel_bins}"
    print(f"edge-lung window_features (numpy): median {ours:.2f} ms per 8 s window ({shape})")
    if ref_t:
        theirs = 1000 * statistics.median(ref_t)
        print(f"transformers ASTFeatureExtractor:   median {theirs:.2f} ms per 8 s window")
        print(f"speed-up: {theirs / ours:.1f}x  ({args.repeats} interleaved repeats, 1 thread)")
    else:
        print("transformers not installed: no reference timing (pip install 'edge-lung[train]')")


if __name__ == "__main__":
    main()
