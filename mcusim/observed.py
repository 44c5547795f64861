"""What a layer's kernel timing takes from the values it runs on.

Most kernels execute the same instructions whatever the data. CMSIS-NN's int8 softmax
does not: an element whose difference to its row's maximum is below diff_min skips the
exponential in both passes, so the layer costs a few hundred cycles more or less per such
element. A full run therefore times softmax layers on the row counts of its own input
tensors (:func:`observe`); estimate mode, which computes no tensors, uses the schedule's
expectation (``cmsis_softmax.passing_elements``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .errors import UnsupportedOpError
from .graph import Graph, Op


@dataclass(frozen=True)
class OpData:
    """The data facts one op's schedule depends on (hashable: part of cost-cache keys).

    ``passing``: for a softmax, (elements >= diff_min in a row, rows with that count),
    ascending by count."""

    passing: tuple[tuple[int, int], ...] = ()


def softmax_passing(x: np.ndarray, diff_min: int) -> tuple[tuple[int, int], ...]:
    """Rows of ``x`` (last axis) grouped by how many elements lie within |diff_min| of
    the row's maximum (the maximum itself always does)."""
    depth = int(x.shape[-1]) if x.ndim else 1
    rows = np.asarray(x, dtype=np.int16).reshape(-1, depth)
    diff = rows - rows.max(axis=1, keepdims=True)
    counts = np.count_nonzero(diff >= diff_min, axis=1)
    values, rows_with = np.unique(counts, return_counts=True)
    return tuple((int(v), int(n)) for v, n in zip(values, rows_with, strict=True))


def observe_op(graph: Graph, op: Op, x: np.ndarray) -> OpData | None:
    """The data facts of ``op`` run on its first input ``x``, or None when its timing does
    not depend on the values."""
    if op.kind != "softmax":
        return None
    from mcusim.kernels.softmax import softmax_prepare

    try:
        diff_min = softmax_prepare(graph, op).diff_min
    except UnsupportedOpError:  # not the int8 kernel: its schedule times every element
        return None
    return OpData(passing=softmax_passing(x, diff_min))


def observe(graph: Graph, env: Mapping[str, np.ndarray]) -> dict[int, OpData]:
    """Per op index, the data facts of the ops whose timing depends on their inputs
    (``env``: the run's tensors by name)."""
    out: dict[int, OpData] = {}
    for i, op in enumerate(graph.ops):
        if op.inputs and op.inputs[0] in env:
            d = observe_op(graph, op, env[op.inputs[0]])
            if d is not None:
                out[i] = d
    return out
