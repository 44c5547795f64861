"""ADD / SUB / MUL on Armv8.1-M + MVE (arm_elementwise_add_s8 / arm_elementwise_mul_s8).

Both process 4 elements per iteration in int32 lanes under a VCTP.32 predicate (the loop
count is ceil(n / 4), DLS/LE with GCC 12). ADD: two predicated widening loads, + input
offsets, VSHL by left_shift, arm_requantize_mve of each input, VADD, arm_requantize_mve of
the sum, + output offset, clamp, predicated byte store. MUL: loads, offsets, VMUL.I32,
arm_requantize_mve_32x4 with duplicated multiplier/shift, offset, clamp, store.
Broadcasting shapes run TFLM's reference kernels (tflm_reference.py).
"""

from __future__ import annotations

from mcusim.graph import Graph, Op
from mcusim.isa.schedule import Program

from .cmsis_eltwise import ELT_ENTRY, ELT_EXIT
from .mve_common import block, offset_clamp, requant_mve, requant_mve_32x4, tp_loop


def _add_body(note: str) -> str:
    return (
        f"""
vctp.32 r2
vmrs   r3, p0
subs   r2, #4
vmsr   p0, r3
vpst
vldrbt.s32 q1, [r6], #4 {{input}}{note}
vmsr   p0, r3
vpst
vldrbt.s32 q2, [r7], #4 {{input2}}{note}
vadd.i32 q1, q1, r4                  ; + input_1 offset
vadd.i32 q2, q2, r5                  ; + input_2 offset
vshl.s32 q1, r8                      ; << left_shift
vshl.s32 q2, r8
ldr    r1, [sp, #20]
ldr    r12, [sp, #24]
"""
        + requant_mve("q1", "r1", "r12", "q3", "q4")
        + "ldr r1, [sp, #28]\nldr r12, [sp, #32]\n"
        + requant_mve("q2", "r1", "r12", "q3", "q4")
        + "vadd.i32 q1, q1, q2\nldr r1, [sp, #36]\nldr r12, [sp, #40]\n"
        + requant_mve("q1", "r1", "r12", "q3", "q4")
        + offset_clamp("q1")
        + f"vmsr p0, r3\nvpst\nvstrbt.32 q1, [r11], #4 {{output}}{note}\nle lr, .Ladd4\n"
    )


def _mul_body(note: str) -> str:
    return (
        f"""
vctp.32 r2
vmrs   r3, p0
subs   r2, #4
vmsr   p0, r3
vpst
vldrbt.s32 q1, [r6], #4 {{input}}{note}
vadd.i32 q1, q1, r4
vmsr   p0, r3
vpst
vldrbt.s32 q2, [r7], #4 {{input2}}{note}
vadd.i32 q2, q2, r5
vmul.i32 q1, q1, q2
ldr    r1, [sp, #36]
vdup.32 q2, r1
ldr    r1, [sp, #40]
vdup.32 q3, r1
vmov.i32 q0, #0
"""
        + requant_mve_32x4("q1", "q2", "q3")
        + offset_clamp("q1")
        + f"vmsr p0, r3\nvpst\nvstrbt.32 q1, [r11], #4 {{output}}{note}\nle lr, .Lmul4\n"
    )


def elementwise_program(graph: Graph, op: Op) -> Program:
    n = graph.tensor(op.outputs[0]).size
    kind = "mul" if op.kind == "mul" else "add"
    body = _mul_body if kind == "mul" else _add_body
    setup = block(
        "vdup.32 q5, r12\nvdup.32 q6, r10\nadds r3, r2, #3\nlsrs r3, r3, #2\ndls lr, r3",
        "elt_mve_setup",
    )
    items = [
        block(ELT_ENTRY, "elt_entry"),
        setup,
        *tp_loop(f"{kind}_mve4", n, 4, body),
        block(ELT_EXIT, "elt_exit"),
    ]
    fn = "arm_elementwise_mul_s8 (MVE)" if kind == "mul" else "arm_elementwise_add_s8 (MVE)"
    return Program(items, kernel=fn, macs=0)
