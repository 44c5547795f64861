"""Static per-op statistics: MAC counts and parameter counts (no device involved)."""

from __future__ import annotations

import numpy as np

from .graph import Graph, Op


def _prod(shape) -> int:
    return int(np.prod(shape, dtype=np.int64)) if len(shape) else 1


def op_macs(graph: Graph, op: Op) -> int:
    """Multiply-accumulates the op performs (padding taps counted, as TFLite tools do)."""
    out = graph.tensors[op.outputs[0]]
    if op.kind == "conv2d":
        w = graph.tensors[op.inputs[1]]  # OHWI
        return _prod(out.shape) * w.shape[1] * w.shape[2] * w.shape[3]
    if op.kind == "depthwise_conv2d":
        w = graph.tensors[op.inputs[1]]  # 1HWC
        return _prod(out.shape) * w.shape[1] * w.shape[2]
    if op.kind == "fully_connected":
        w = graph.tensors[op.inputs[1]]  # (out, in)
        return _prod(out.shape) * w.shape[1]
    return 0


def op_params(graph: Graph, op: Op) -> int:
    """Number of constant elements the op owns (weights, bias, constant operands)."""
    return sum(graph.tensors[n].size for n in op.inputs if n and graph.tensors[n].is_const)


def graph_macs(graph: Graph) -> int:
    return sum(op_macs(graph, op) for op in graph.ops)


def constant_bytes(graph: Graph) -> int:
    """Bytes of all constant tensors in device memory (packed for sub-byte types)."""
    return sum(t.nbytes for t in graph.tensors.values() if t.is_const)
