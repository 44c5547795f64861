"""Ops CMSIS-NN does not implement: TFLM's reference C kernels compiled for the M4(F).

Each is an element loop: index arithmetic (where the reference kernel walks a
multi-dimensional subscript), the element's arithmetic (TFLite's
MultiplyByQuantizedMultiplier for requantizing ops, gemmlowp fixed-point exp/reciprocal for
LOGISTIC/TANH, single-precision FPU for (DE)QUANTIZE), and the loads/stores. Trip counts
come from the tensor sizes; data-dependent branches are taken as the common case.
"""

from __future__ import annotations

from functools import cache

from mcusim.errors import UnsupportedOpError
from mcusim.graph import Graph, Op
from mcusim.isa.schedule import Block, Loop, Program, Rewind

from .cmsis_softmax import _exp_on_negative, _mul_sat

# TFLite MultiplyByQuantizedMultiplier(x in r0, M r1, shift r2): left shift, gemmlowp
# SaturatingRoundingDoublingHighMul (round half away from zero), RoundingDivideByPOT.
MBQM = (
    """
bic    r3, r2, r2, asr #31
lsl    r0, r0, r3
"""
    + _mul_sat("r0", "r1", "r0")
    + """
rsbs   r3, r2, #0
bic    r3, r3, r3, asr #31
movs   r4, #1
lsls   r4, r3
subs   r4, #1
and    r1, r0, r4
asrs   r0, r3
asrs   r4, #1
add    r4, r4, r0, lsr #31
cmp    r1, r4
it     gt
addgt  r0, #1
"""
)
PARAMS = "ldr r1, [sp, #8]\nldr r2, [sp, #12]\n"
CLAMP_STORE = """
add    r0, r0, r8
cmp    r0, r9
it     lt
movlt  r0, r9
cmp    r0, r10
it     gt
movgt  r0, r10
strb   r0, [r11], #1   {output}
"""
LOOP_END = "subs r5, #1\nbne .Lref_elems\n"
LOAD_IN = "ldrsb r0, [r6], #1 {input}\nsub r0, r0, r7\n"
# reference kernels walking a 4-D subscript: per element offset computation
INDEX4 = """
ldr    r3, [sp, #16]
ldr    r4, [sp, #20]
mla    r3, r3, r4, r12
ldr    r4, [sp, #24]
mla    r3, r3, r4, lr
ldr    r4, [sp, #28]
adds   lr, #1
cmp    lr, r4
it     ge
movge  lr, #0
"""

_ELEM = {
    "requant": LOAD_IN + PARAMS + MBQM + CLAMP_STORE,
    "clamp": LOAD_IN.replace("sub r0, r0, r7\n", "")
    + CLAMP_STORE.replace("add    r0, r0, r8\n", ""),
    "hard_swish": LOAD_IN
    + """
lsl    r1, r0, #7                     ; input in Q.7 with more headroom
ssat   r1, #16, r1
ldr    r2, [sp, #8]
smulbb r3, r1, r2
asrs   r3, r3, #15                    ; SaturatingDoublingHighMul (16-bit)
ldr    r2, [sp, #12]
smulbb r4, r1, r2
asrs   r4, r4, #15
ldr    r2, [sp, #16]
cmp    r2, #0
ite    gt
lslgt  r4, r4, r2
asrle  r4, r4, #1
add    r4, r4, #0x8000
asrs   r4, r4, #1
usat   r4, #15, r4                    ; relu6 of the reluish value
smulbb r0, r3, r4
asrs   r0, r0, #15
ldr    r2, [sp, #20]
rsbs   r2, r2, #0
asrs   r0, r2
"""
    + CLAMP_STORE,
    "dequantize": LOAD_IN
    + """
vmov   s0, r0
vcvt.f32.s32 s0, s0
vmul.f32 s0, s0, s15
vstr   s0, [r11]     {output}
adds   r11, #4
""",
    "quantize_float": """
vldr   s0, [r6]      {input}
adds   r6, #4
vdiv.f32 s0, s0, s15
vcmp.f32 s0, #0
vmrs   APSR_nzcv, fpscr
ite    ge
vaddge.f32 s0, s0, s14
vsublt.f32 s0, s0, s14
vcvt.s32.f32 s0, s0
vmov   r0, s0
"""
    + CLAMP_STORE,
    "sigmoid": LOAD_IN
    + PARAMS
    + MBQM
    + "cmp r0, #0\nit gt\nneggt r0, r0\n"
    + _exp_on_negative()
    + "".join(_mul_sat("r0", "r1", "r2") + "add r1, r1, r2\n" for _ in range(3))
    + "cmp r7, #0\nit gt\nrsbgt r0, r0, #0x7fffffff\nasrs r0, r0, #23\n"
    + CLAMP_STORE,
    "pad": """
ldr    r3, [sp, #8]
cmp    lr, r3
blt    .Lpad_value
ldr    r3, [sp, #12]
cmp    lr, r3
bge    .Lpad_value
ldrsb  r0, [r6], #1 {input}
strb   r0, [r11], #1   {output}
adds   lr, #1
""",
    "gather": INDEX4 + "ldrsb r0, [r6, r3] {input}\nstrb r0, [r11], #1 {output}\n",
    "broadcast_add": INDEX4
    + "ldrsb r0, [r6, r3] {input}\n"
    + INDEX4.replace("r12", "r9")
    + "ldrsb r1, [r7, r3] {input2}\n"
    + "ldr r3, [sp, #32]\nadd r0, r0, r3\nldr r3, [sp, #36]\nadd r1, r1, r3\n"
    + "ldr r3, [sp, #40]\nlsl r0, r0, r3\nlsl r1, r1, r3\nstr r1, [sp, #44]\n"
    + PARAMS
    + MBQM
    + "str r0, [sp, #48]\nldr r0, [sp, #44]\n"
    + PARAMS
    + MBQM
    + "ldr r3, [sp, #48]\nadd r0, r0, r3\n"
    + PARAMS
    + MBQM
    + CLAMP_STORE,
    "broadcast_mul": INDEX4
    + "ldrsb r0, [r6, r3] {input}\n"
    + INDEX4.replace("r12", "r9")
    + "ldrsb r1, [r7, r3] {input2}\n"
    + "ldr r3, [sp, #32]\nadd r0, r0, r3\nldr r3, [sp, #36]\nadd r1, r1, r3\nmul r0, r0, r1\n"
    + PARAMS
    + MBQM
    + CLAMP_STORE,
    "mean_acc": "ldrsb r0, [r6], #1 {input}\nadd r9, r9, r0\n",
}
ENTRY = """
push   {r4, r5, r6, r7, r8, r9, r10, r11, lr}
sub    sp, #60
ldr    r5, [sp, #96]
"""
EXIT = """
movs   r0, #0
add    sp, #60
pop    {r4, r5, r6, r7, r8, r9, r10, r11, pc}
"""
MEAN_OUT = (
    "ldr r3, [sp, #8]\nmul r0, r9, r3\nldr r3, [sp, #12]\nsub r0, r0, r3\n"
    + PARAMS
    + MBQM
    + CLAMP_STORE
    + "movs r9, #0\nsubs r10, #1\nbne .Lmean_out\n"
)


@cache
def _block(kind: str) -> Block:
    if kind == "entry":
        return Block.asm(ENTRY, "ref_entry")
    if kind == "exit":
        return Block.asm(EXIT, "ref_exit")
    if kind == "mean_out":
        return Block.asm(MEAN_OUT, "ref_mean_out")
    if kind == "mean_acc":
        return Block.asm(_ELEM[kind] + "subs r5, #1\nbne .Lmean_acc\n", "ref_mean_acc")
    return Block.asm(_ELEM[kind] + LOOP_END, f"ref_{kind}")


# kernels reading through a computed subscript ([r6, r3]): one element per iteration
_INDEXED = {
    "gather": {"input": Rewind(1)},
    "broadcast_add": {"input": Rewind(1), "input2": Rewind(1)},
    "broadcast_mul": {"input": Rewind(1), "input2": Rewind(1)},
}


def _elementwise(kind: str, n: int, kernel: str) -> Program:
    loop = Loop(f"ref_{kind}", n, [_block(kind)], addr=dict(_INDEXED.get(kind, {})))
    items = [_block("entry"), loop, _block("exit")]
    return Program(items, kernel=kernel)


def reference_program(graph: Graph, op: Op) -> Program:
    x = graph.tensor(op.inputs[0])
    y = graph.tensor(op.outputs[0])
    n_out = y.size
    in_dt = x.dtype.name.lower()
    out_dt = y.dtype.name.lower()
    k = op.kind
    if (
        k in ("relu", "quantize")
        and in_dt.startswith(("int", "uint"))
        and out_dt.startswith(("int", "uint"))
    ):
        return _elementwise(
            "requant", n_out, f"tflm {k} (reference, MultiplyByQuantizedMultiplier)"
        )
    if k == "relu6":
        return _elementwise("clamp", n_out, "tflm relu6 (reference, clamp)")
    if k == "quantize":
        return _elementwise("quantize_float", n_out, "tflm quantize float->int (reference)")
    if k == "dequantize":
        return _elementwise("dequantize", n_out, "tflm dequantize (reference, FPU)")
    if k in ("logistic", "tanh"):
        return _elementwise("sigmoid", n_out, f"tflm {k} int8 (reference, gemmlowp fixed point)")
    if k == "hard_swish":
        return _elementwise("hard_swish", n_out, "tflm hard_swish int8 (reference)")
    if k == "pad":
        return _elementwise("pad", n_out, "tflm pad (reference)")
    if k in ("transpose", "strided_slice"):
        return _elementwise("gather", n_out, f"tflm {k} (reference)")
    if k in ("add", "sub"):
        return _elementwise("broadcast_add", n_out, f"tflm {k} broadcast (reference)")
    if k == "mul":
        return _elementwise("broadcast_mul", n_out, "tflm mul broadcast (reference)")
    if k == "mean":
        n_in = x.size
        items = [
            _block("entry"),
            Loop(
                "ref_mean_outputs",
                1,
                [
                    Loop("ref_mean_acc", n_in, [_block("mean_acc")]),
                    Loop("ref_mean_out", n_out, [_block("mean_out")]),
                ],
            ),
            _block("exit"),
        ]
        return Program(items, kernel="tflm mean int8 (reference)")
    raise UnsupportedOpError(f"no Cortex-M instruction schedule for op kind {k!r}", layer=op.label)
