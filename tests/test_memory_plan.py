"""Arena planning: hand-worked lifetimes and offsets."""

from __future__ import annotations

import numpy as np

from mcusim.dtypes import INT8, INT32, Quant
from mcusim.graph import Graph, Op, Tensor
from mcusim.memory_plan import plan_arena
from mcusim.ops import ElementwiseAttrs, ReshapeAttrs


def _q():
    return Quant(np.array([0.1], np.float32), np.array([0]))


def chain_graph() -> Graph:
    """x(100) -> reshape -> a(100) -> add(a, x) -> b(100) -> reshape -> y(100)."""
    t = {n: Tensor(n, (1, 100), INT8, _q()) for n in ("x", "a", "b", "y")}
    t["shape"] = Tensor("shape", (2,), INT32, None, np.array([1, 100], np.int32))
    ops = [
        Op("reshape", "a", ["x", "shape"], ["a"], ReshapeAttrs((1, 100))),
        Op("add", "b", ["a", "x"], ["b"], ElementwiseAttrs()),
        Op("reshape", "y", ["b", "shape"], ["y"], ReshapeAttrs((1, 100))),
    ]
    return Graph(t, ops, ["x"], ["y"])


def test_lifetimes_and_reuse():
    g = chain_graph()
    plan = plan_arena(g)
    # x lives ops 0..1, a 0..1, b 1..2, y 2..2. Greedy; equal sizes (100 B, 16-B aligned)
    # go by first use, then name: a @0, x @112 (overlaps a), b @224 (overlaps a and x at
    # op 1), y @0 (a and x are dead by op 2).
    assert plan.offsets == {"a": 0, "x": 112, "b": 224, "y": 0}
    assert plan.peak_bytes == 324


def test_scratch_lives_only_in_its_op():
    g = chain_graph()
    plan = plan_arena(g, {1: 500})
    # the 500-B scratch of op 1 is placed first at 0; a, x, b then stack above it (512,
    # 624, 736); y (op 2) reuses offset 0 since the scratch is dead after op 1.
    assert plan.offsets["scratch:1"] == 0
    assert plan.offsets["a"] == 512 and plan.offsets["x"] == 624 and plan.offsets["b"] == 736
    assert plan.offsets["y"] == 0
    assert plan.peak_bytes == 836
