"""What one window costs: multiply-accumulates counted from the exported ONNX graph with onnx-tool.

Counted once, at export, on the FP32 graph (the INT8 graph runs the same products; its Q/DQ nodes
would only add noise to the count) and written into the model's metadata and manifest
(`edge_lung.run` -> `cost`), so `edge-lung bench` on the device reads the figure without onnx or
onnx-tool, and reports the achieved GMAC/s beside its latencies: a Pi owner compares boards by it.

onnx-tool counts every node of the graph: convolutions and matrix products as multiply-accumulates,
and elementwise nodes (ReLU, Add, Softmax, LayerNorm parts) at their own per-element cost; `by_op`
keeps the split so the products' share is visible. onnx-tool rather than a hand-written counter:
it knows every ONNX operator's arithmetic, and the count follows the graph the device runs, not a
model description that could drift from it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edge_lung.config import FeatureConfig
from edge_lung.runtime.artifact.model_dir import INPUT_NAME

COST_INSTALL = "pip install 'edge-lung[export]'"


def count_macs(onnx_path: str | Path, features: FeatureConfig, input_name: str = INPUT_NAME) -> dict[str, Any]:
    """{'macs': per window, 'params', 'by_op': {op type: macs}, 'counted_by'} of the graph at `onnx_path`,
    for one window of `features` (batch 1)."""
    try:
        import onnx_tool
    except ImportError as exc:
        raise ImportError(f"counting multiply-accumulates needs onnx-tool: {COST_INSTALL}") from exc
    model = onnx_tool.Model(str(onnx_path), {"verbose": False})
    if not model.valid:
        raise ValueError(f"{onnx_path}: onnx-tool cannot read this ONNX graph")
    graph = model.graph
    graph.graph_reorder_nodes()
    graph.shape_infer({input_name: np.zeros((1, features.num_frames, features.num_mel_bins), np.float32)})
    graph.profile()
    by_op: Counter[str] = Counter()
    for node in graph.nodemap.values():
        by_op[node.op_type] += int(round(node.macs[0]))
    return {
        "macs": int(round(graph.macs[0])),
        "params": int(graph.params),
        "by_op": {op: n for op, n in by_op.most_common() if n > 0},
        "counted_by": f"onnx-tool {onnx_tool.VERSION}",
        "graph": "fp32, batch 1",
    }
