"""The `edge-lung` command. Each command parses options and calls one library function.

Command groups live beside this file, one module per stage; importing them must stay cheap
(torch and transformers are imported inside the training and export commands only).
"""

from __future__ import annotations

import typer

from edge_lung.cli import (
    adapt_cmd,
    bench_cmd,
    data_cmd,
    demo_cmd,
    distill_cmd,
    exam_cmd,
    export_cmd,
    runtime_cmd,
    train_cmd,
)

app = typer.Typer(
    name="edge-lung",
    help="Train, export and run respiratory-sound classifiers (ICBHI 2017) on edge devices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _module in (demo_cmd, data_cmd, train_cmd, distill_cmd, adapt_cmd, export_cmd, runtime_cmd, exam_cmd, bench_cmd):
    _module.register(app)


def main() -> None:
    app()
