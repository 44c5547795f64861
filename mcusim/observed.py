"""What a layer's kernel timing takes from the values it runs on.

Most kernels execute the same instructions whatever the data. Two CMSIS-NN int8 kernels do
not. Softmax: an element whose difference to its row's maximum is below diff_min skips the
exponential in both passes, a few hundred cycles per element. Fully connected: the
rounding divide of a row pair branches on the sign of its first value (GCC's build of
arm_nn_vec_mat_mult_t_s8), a taken branch, which the Cortex-M7 mispredicts. A full run
therefore times these layers on the counts taken from its own input tensors
(:func:`observe`); estimate mode, which computes no tensors, uses the schedules'
expectations (``cmsis_softmax.passing_elements``, half the row pairs negative).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import UnsupportedOpError
from .graph import Graph, Op


@dataclass(frozen=True)
class OpData:
    """The data facts one op's schedule depends on (hashable: part of cost-cache keys).

    ``passing``: for a softmax, (elements >= diff_min in a row, rows with that count),
    ascending by count. ``neg_pairs``: for a fully connected layer, (row pairs whose
    first value is negative before rounding, batch rows with that count), ascending."""

    passing: tuple[tuple[int, int], ...] = ()
    neg_pairs: tuple[tuple[int, int], ...] = ()


def softmax_passing(x: np.ndarray, diff_min: int) -> tuple[tuple[int, int], ...]:
    """Rows of ``x`` (last axis) grouped by how many elements lie within |diff_min| of
    the row's maximum (the maximum itself always does)."""
    depth = int(x.shape[-1]) if x.ndim else 1
    rows = np.asarray(x, dtype=np.int16).reshape(-1, depth)
    diff = rows - rows.max(axis=1, keepdims=True)
    counts = np.count_nonzero(diff >= diff_min, axis=1)
    return _grouped(counts)


def _grouped(counts: np.ndarray) -> tuple[tuple[int, int], ...]:
    """(value, how many rows have it), ascending by value."""
    if counts.size == 1:
        return ((int(counts[0]), 1),)
    values, rows_with = np.unique(counts, return_counts=True)
    return tuple((int(v), int(n)) for v, n in zip(values, rows_with, strict=True))


def fc_negative_pairs(x: np.ndarray, p) -> tuple[tuple[int, int], ...] | None:
    """Batch rows of a fully connected layer grouped by how many of their row pairs (rows
    2j, 2j + 1 of the weights) have a negative first value after the high multiply, where
    the divide branches (``p``: the kernel's FullyConnectedParams); None where a shift is
    left (that path has no such branch)."""
    k = p.weights.shape[1]
    first = slice(0, 2 * (p.weights.shape[0] // 2), 2)
    if np.any(p.shift[first] > 0):
        return None
    xb = np.asarray(x).reshape(-1, k).astype(np.int32)
    # int32 products and sums wrap as the kernel's accumulator does
    acc = (xb @ p.weights[first].T.astype(np.int32)) + p.bias[first]
    high = (acc.astype(np.int64) * p.mult[first] + (1 << 30)) >> 31
    return _grouped(np.count_nonzero(high < 0, axis=1))


def observe_op(graph: Graph, op: Op, x: np.ndarray, params=None) -> OpData | None:
    """The data facts of ``op`` run on its first input ``x``, or None when its timing does
    not depend on the values (``params``: the op's prepared kernel params, if at hand)."""
    if op.kind == "fully_connected":
        from mcusim.kernels.fully_connected import FullyConnectedParams, prepare

        if params is None:
            try:
                params = prepare(graph, op)
            except UnsupportedOpError:
                return None
        if not isinstance(params, FullyConnectedParams):  # sub-byte / binary / ai8x kernels
            return None
        neg = fc_negative_pairs(x, params)
        return None if neg is None else OpData(neg_pairs=neg)
    if op.kind != "softmax":
        return None
    from mcusim.kernels.softmax import softmax_prepare

    try:
        diff_min = softmax_prepare(graph, op).diff_min
    except UnsupportedOpError:  # not the int8 kernel: its schedule times every element
        return None
    return OpData(passing=softmax_passing(x, diff_min))


def observe(
    graph: Graph, env: Mapping[str, np.ndarray], params: Sequence | None = None
) -> dict[int, OpData]:
    """Per op index, the data facts of the ops whose timing depends on their inputs
    (``env``: the run's tensors by name; ``params``: per op, its prepared kernel params,
    e.g. ``[p.params for p in model.prepared()]``, so they are not prepared again)."""
    out: dict[int, OpData] = {}
    for i, op in enumerate(graph.ops):
        if op.kind in _KINDS and op.inputs and op.inputs[0] in env:
            d = observe_op(graph, op, env[op.inputs[0]], params[i] if params else None)
            if d is not None:
                out[i] = d
    return out


_KINDS = frozenset({"softmax", "fully_connected"})
