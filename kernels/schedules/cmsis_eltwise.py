"""ADD / SUB / MUL on Armv7E-M + DSP (arm_elementwise_add_s8, arm_elementwise_mul_s8).

Both read 4 int8 of each operand per step (read_and_pad_reordered: LDR, ROR, 2 SXTB16),
add the input offsets with SADD16, then per element: ADD requantizes each input
(arm_nn_requantize after the left shift) and the sum; MUL multiplies with SMULBB/SMULTT
and requantizes once. The 4 results are packed into one word store. A 1-3 element tail
runs the scalar loop. Broadcasting shapes are not handled by these kernels (TFLM runs its
reference broadcast kernel, see tflm_reference.py); SUB uses the add kernel with a negated
second multiplier in TFLM's CMSIS-NN port.
"""

from __future__ import annotations

from functools import cache

from mcusim.graph import Graph, Op
from mcusim.isa.schedule import Block, Loop, Program

from .common import OUT_STORE_TEXT, REQUANT_TEXT

# load the per-tensor multiplier/shift pair (kept on the stack by GCC: too many live values)
_PARAMS = "ldr r1, [sp, #{m}]\nldr r2, [sp, #{s}]\n"
_CLAMP = OUT_STORE_TEXT.replace("strb   r0, [r11], #1   {output}", "")

LOAD4 = """
ldr     r4, [r6], #4    {input}
ldr     r5, [r7], #4    {input2}
mov     ip, r4, ror #8
sxtb16  r4, r4
sxtb16  ip, ip
mov     lr, r5, ror #8
sxtb16  r5, r5
sxtb16  lr, lr
ldr     r3, [sp, #8]                 ; packed input_1 offset
sadd16  r4, r4, r3
sadd16  ip, ip, r3
ldr     r3, [sp, #12]                ; packed input_2 offset
sadd16  r5, r5, r3
sadd16  lr, lr, r3
"""
ADD_ELEM = (
    "uxth r0, r4\nldr r3, [sp, #16]\nlsl r0, r0, r3\n"
    + _PARAMS.format(m=20, s=24)
    + REQUANT_TEXT
    + "str r0, [sp, #48]\nuxth r0, r5\nldr r3, [sp, #16]\nlsl r0, r0, r3\n"
    + _PARAMS.format(m=28, s=32)
    + REQUANT_TEXT
    + "ldr r3, [sp, #48]\nadd r0, r0, r3\n"
    + _PARAMS.format(m=36, s=40)
    + REQUANT_TEXT
    + _CLAMP
    + "strb r0, [sp, #52]\n"
)
MUL_ELEM = (
    "smulbb r0, r4, r5\n"
    + _PARAMS.format(m=36, s=40)
    + REQUANT_TEXT
    + _CLAMP
    + "strb r0, [sp, #52]\n"
)
STORE4 = """
ldr     r0, [sp, #52]
str     r0, [r11], #4   {output}
ldr     r3, [sp, #4]                 ; loop_count
subs    r3, #1
str     r3, [sp, #4]
bne     .Lelt4
"""
ADD_TAIL = (
    "ldrsb r4, [r6], #1 {input}\nldrsb r5, [r7], #1 {input2}\n"
    "ldr r3, [sp, #56]\nadd r4, r4, r3\nldr r3, [sp, #16]\nlsl r0, r4, r3\n"
    + _PARAMS.format(m=20, s=24)
    + REQUANT_TEXT
    + "str r0, [sp, #48]\nldr r3, [sp, #60]\nadd r5, r5, r3\nldr r3, [sp, #16]\nlsl r0, r5, r3\n"
    + _PARAMS.format(m=28, s=32)
    + REQUANT_TEXT
    + "ldr r3, [sp, #48]\nadd r0, r0, r3\n"
    + _PARAMS.format(m=36, s=40)
    + REQUANT_TEXT
    + OUT_STORE_TEXT
    + "subs r10, #1\nbne .Ladd_tail\n"
)
MUL_TAIL = (
    "ldrsb r4, [r6], #1 {input}\nldrsb r5, [r7], #1 {input2}\n"
    "ldr r3, [sp, #56]\nadd r4, r4, r3\nldr r3, [sp, #60]\nadd r5, r5, r3\nmul r0, r4, r5\n"
    + _PARAMS.format(m=36, s=40)
    + REQUANT_TEXT
    + OUT_STORE_TEXT
    + "subs r10, #1\nbne .Lmul_tail\n"
)
ELT_ENTRY = """
push    {r4, r5, r6, r7, r8, r9, r10, r11, lr}
sub     sp, #68
ldr     r8, [sp, #112]               ; out_offset
ldr     r9, [sp, #116]               ; act_min
ldr     r10, [sp, #120]              ; act_max
lsrs    r3, r2, #2
str     r3, [sp, #4]
"""
ELT_EXIT = """
movs    r0, #0
add     sp, #68
pop     {r4, r5, r6, r7, r8, r9, r10, r11, pc}
"""


@cache
def _blocks(kind: str):
    b = Block.asm
    elem = ADD_ELEM if kind == "add" else MUL_ELEM
    return {
        "entry": b(ELT_ENTRY, "elt_entry"),
        "exit": b(ELT_EXIT, "elt_exit"),
        "load4": b(LOAD4, "elt_load4"),
        "elem_lo": b(elem, f"{kind}_elem"),
        "elem_hi": b(
            elem.replace("uxth r0, r4", "lsrs r0, r4, #16")
            .replace("uxth r0, r5", "lsrs r0, r5, #16")
            .replace("smulbb", "smultt"),
            f"{kind}_elem_hi",
        ),
        "store4": b(STORE4, "elt_store4"),
        "tail": b(ADD_TAIL if kind == "add" else MUL_TAIL, f"{kind}_tail"),
    }


def elementwise_items(kind: str, n: int) -> list:
    k = _blocks(kind)
    body = [k["load4"], k["elem_lo"], k["elem_hi"], k["elem_lo"], k["elem_hi"], k["store4"]]
    return [
        k["entry"],
        Loop(f"{kind}_x4", n // 4, body),
        Loop(f"{kind}_tail", n % 4, [k["tail"]]),
        k["exit"],
    ]


def same_shape(graph: Graph, op: Op) -> bool:
    a, b = (graph.tensor(n) for n in op.inputs[:2])
    return tuple(a.shape) == tuple(b.shape)


def elementwise_program(graph: Graph, op: Op) -> Program:
    """ADD/SUB -> arm_elementwise_add_s8, MUL -> arm_elementwise_mul_s8 (same shapes)."""
    n = graph.tensor(op.outputs[0]).size
    kind = "mul" if op.kind == "mul" else "add"
    fn = "arm_elementwise_mul_s8" if kind == "mul" else "arm_elementwise_add_s8"
    return Program(elementwise_items(kind, n), kernel=fn, macs=0)
