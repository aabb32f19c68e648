"""Multiply-accumulates per window of every named backbone, counted from its exported ONNX graph (issue #13).

    .venv/bin/python benchmarks/count_macs.py [--sizes tiny,ast-student,mobilenet,small,base] [--mel-bins 128,64]

Builds each named size at random weights (the count does not depend on them), exports it with the
export's own function (`export_fp32`, logits + embedding, as `edge-lung export` ships it) and counts
it with `edge_lung.export.cost.count_macs` (onnx-tool), the figure an exported model carries in its
metadata. Prints a markdown table: parameters, GMAC per 8 s window, the products' share (MatMul,
Gemm, Conv) and the ratio to AST-base. The CNN is counted at each `--mel-bins`; the ASTs at 128
only (their checkpoints are made for 128 bins).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

PRODUCTS = ("MatMul", "Gemm", "Conv")


def count(size: str, mel_bins: int, work: Path) -> dict:
    import torch

    from edge_lung.config import LABELS, FeatureConfig
    from edge_lung.export.cost import count_macs
    from edge_lung.export.onnx import export_fp32
    from edge_lung.train.model import LogitsAndEmbedding, LogitsModel, build_model, count_parameters

    features = FeatureConfig(num_mel_bins=mel_bins)
    torch.manual_seed(0)
    net = LogitsModel(build_model(size, len(LABELS), features, adapter="none")).eval()
    path = work / f"{size}-{mel_bins}.onnx"
    export_fp32(LogitsAndEmbedding(net), path, features, with_embedding=True)
    cost = count_macs(path, features)
    path.unlink()
    products = sum(n for op, n in cost["by_op"].items() if op in PRODUCTS)
    return {"size": size, "mel_bins": mel_bins, "params": count_parameters(net)[1], "macs": cost["macs"],
            "products_share": products / cost["macs"], "counted_by": cost["counted_by"]}


def main(argv: list[str] | None = None) -> int:
    from edge_lung.train.model import CNN_SIZES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="tiny,ast-student,mobilenet,small,base")
    ap.add_argument("--mel-bins", default="128,64")
    args = ap.parse_args(argv)
    bins = [int(b) for b in args.mel_bins.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="count-macs-") as tmp:
        for size in args.sizes.split(","):
            for mel in bins if size in CNN_SIZES else [128]:
                rows.append(count(size, mel, Path(tmp)))
                print(f"counted {size} at {mel} bins: {rows[-1]['macs'] / 1e9:.3f} GMAC", file=sys.stderr, flush=True)
    base = next((r["macs"] for r in rows if r["size"] == "base"), None)
    print(f"counted by {rows[0]['counted_by']}\n")
    print("| backbone | mel bins | parameters | GMAC per 8 s window | products' share | vs base |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"1/{base / r['macs']:.0f}" if base and r["size"] != "base" else "-"
        print(f"| {r['size']} | {r['mel_bins']} | {r['params'] / 1e6:.2f} M | {r['macs'] / 1e9:.3f} "
              f"| {100 * r['products_share']:.0f}% | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
