"""Arena planning: hand-worked lifetimes and offsets."""

from __future__ import annotations

import numpy as np

from mcusim.dtypes import INT8, INT32, Quant
from mcusim.graph import Graph, Op, Tensor
from mcusim.memory_plan import plan_arena
from mcusim.ops import ElementwiseAttrs, ReshapeAttrs

from conftest import model_path


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


def test_persistent_buffers_sit_at_the_tail():
    g = chain_graph()
    plan = plan_arena(g, {1: 500}, {"qparams:1": 40, "qparams:2": 8})
    # the lifetime-planned buffers end at 836; persistent ones follow, 16-byte aligned
    # (848, then 848 + 48 = 896), and the arena grows by their aligned sizes
    assert plan.offsets["qparams:1"] == 848 and plan.offsets["qparams:2"] == 896
    assert plan.peak_bytes == 912 and plan.persistent_bytes == 64
    assert plan.persistent == {"qparams:1": 40, "qparams:2": 8}


def test_qparam_buffers_follow_tflite_micro():
    """Conv / depthwise: multiplier + shift per output channel (TFLite Micro allocates
    them even for per-tensor weights); a per-tensor FC keeps one pair in its op data."""
    from mcusim.memory_plan import qparam_buffers
    from mcusim.model import load

    g = load(model_path("kws_ref_model")).graph
    q = qparam_buffers(g)
    kinds = {int(k.split(":")[1]): g.ops[int(k.split(":")[1])].kind for k in q}
    assert set(kinds.values()) == {"conv2d", "depthwise_conv2d"}
    for i in kinds:
        assert q[f"qparams:{i}"] == 8 * g.tensors[g.ops[i].outputs[0]].shape[-1]
    fc = [i for i, op in enumerate(g.ops) if op.kind == "fully_connected"]
    assert fc and all(f"qparams:{i}" not in q for i in fc)
    assert sum(q.values()) == 8 * 64 * 9  # 9 conv/depthwise layers of 64 channels
    assert qparam_buffers(g, ops={0}) == {"qparams:0": 8 * 64}
