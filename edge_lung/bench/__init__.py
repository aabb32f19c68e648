"""Bench: latency, memory and environment measurement of exported models on the device
(`edge-lung bench`), each model and thread count in a fresh process.

`measure`: timing, memory, the worker processes and `run_bench`; `environment`: the machine
(CPU, flags, cores, thermals); `report`: tables, the results table, JSON. The PNG is drawn by
`edge_lung.plots.plot_bench_report`.

May import: core, data, runtime. Torch only lazily, for `--compare-torch` against a training run.
"""
