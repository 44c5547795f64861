"""Data-movement ops on Armv7E-M: RESHAPE/SQUEEZE (memcpy) and CONCATENATION.

TFLM's RESHAPE evaluates to ``memcpy(output, input, bytes)`` whenever the two tensors do
not share memory; mcusim plans separate buffers, so the copy is charged. CONCATENATION
(TFLM reference) copies, for every outer index, each input's contiguous slice with memcpy.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from mcusim.graph import Graph, Op
from mcusim.isa.schedule import Block, Loop, Program

from .common import memcpy_items

CALL = """
push   {r4, lr}
ldr    r0, [sp, #8]
ldr    r1, [sp, #12]
ldr    r2, [sp, #16]
"""
RET = """
movs   r0, #0
pop    {r4, pc}
"""
CONCAT_STEP = """
ldr    r3, [sp, #4]
ldr    r0, [r3], #4    {const}       ; input pointer table
ldr    r2, [sp, #8]                  ; copy size of this input
ldr    r1, [sp, #12]
"""
CONCAT_STEP_END = """
ldr    r3, [sp, #16]
subs   r3, #1
str    r3, [sp, #16]
bne    .Lconcat
"""


@cache
def _blocks():
    b = Block.asm
    return {
        "call": b(CALL, "copy_entry"),
        "ret": b(RET, "copy_exit"),
        "cstep": b(CONCAT_STEP, "concat_step"),
        "cend": b(CONCAT_STEP_END, "concat_end"),
    }


def copy_items(nbytes: int) -> list:
    k = _blocks()
    return [k["call"], *memcpy_items(nbytes, True, "input", "output"), k["ret"]]


def reshape_program(graph: Graph, op: Op) -> Program:
    nbytes = graph.tensor(op.inputs[0]).nbytes
    return Program(
        copy_items(nbytes),
        kernel="tflm reshape (memcpy)",
        notes=["charged as a copy: input and output are separate buffers"],
    )


def concat_program(graph: Graph, op: Op) -> Program:
    out = graph.tensor(op.outputs[0])
    axis = op.attrs.axis % len(out.shape)
    outer = int(np.prod(out.shape[:axis], dtype=np.int64)) if axis else 1
    k = _blocks()
    items: list = [k["call"]]
    for name in op.inputs:
        if not name:
            continue
        t = graph.tensor(name)
        inner = int(np.prod(t.shape[axis:], dtype=np.int64)) * t.dtype.storage_bytes(1)
        src = "const" if t.is_const else "input"
        items.append(
            Loop(
                f"concat_{name}",
                outer,
                [k["cstep"], *memcpy_items(inner, inner % 4 == 0, src, "output"), k["cend"]],
            )
        )
    items.append(k["ret"])
    return Program(items, kernel="tflm concatenation (reference, memcpy per slice)")
