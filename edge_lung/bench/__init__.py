"""Bench: latency, memory and environment measurement of exported models on the device
(`edge-lung bench`), each model and thread count in a fresh process.

May import: core, data, runtime. Torch only lazily, for `--compare-torch` against a training run.
"""
