"""SOFTMAX on Armv7E-M (arm_softmax_s8 -> arm_nn_softmax_common_s8, non-MVE).

Per row: a max pass; a sum pass computing exp(diff) for every element whose difference to
the max is >= diff_min (EXP_ON_NEG: a fixed-point polynomial plus seven conditional
multiplies, each a saturating rounding doubling high multiply); CLZ and a Newton
reciprocal (ONE_OVER1: a linear guess and three Newton steps, seven saturating doubling
multiplies); an output pass recomputing exp, scaling, shifting and clamping.
Which elements pass the diff_min test depends on the data: a full run passes the counts
it observed per row (mcusim.observed); without them (estimate mode) the schedule takes the
row's maximum plus the expected share of the other elements when activations spread evenly
over the int8 range, (|diff_min| + 1) / 256 of them (all when |diff_min| >= 255). A skipped
element costs its load, compare and taken branch in the sum pass and a store of -128 in
the output pass.
"""

from __future__ import annotations

from functools import cache

from mcusim.errors import UnsupportedOpError
from mcusim.graph import Graph, Op
from mcusim.isa.schedule import Block, Loop, Program, Rewind
from mcusim.observed import OpData


def _mul_sat(a: str, b: str, d: str) -> str:
    """arm_nn_doubling_high_mult(a, b) -> d (gemmlowp rounding, saturating)."""
    return f"""
mov    r6, #0x40000000
eors   r7, {a}, {b}
it     mi
rsbmi  r6, r6, #1
asrs   r7, r6, #31
smlal  r6, r7, {a}, {b}
lsrs   r6, r6, #31
orr    {d}, r6, r7, lsl #1
cmp    {a}, #0x80000000
it     eq
cmpeq  {b}, #0x80000000
it     eq
mvneq  {d}, #0x80000000
"""


def _div_pow2(x: str, e: int) -> str:
    """arm_nn_divide_by_power_of_two with a constant exponent."""
    return f"""
and    r6, {x}, #{(1 << e) - 1}
asrs   {x}, {x}, #{e}
movs   r7, #{((1 << e) - 1) >> 1}
add    r7, r7, {x}, lsr #31
cmp    r6, r7
it     gt
addgt  {x}, #1
"""


def _const(reg: str, value: int) -> str:
    return f"movw {reg}, #{value & 0xFFFF}\nmovt {reg}, #{(value >> 16) & 0xFFFF}\n"


def _exp_on_negative() -> str:
    """EXP_ON_NEG(val in r0) -> r0."""
    t = """
bic    r1, r0, #0xFF000000
sub    r1, r1, #0x1000000            ; val_mod_minus_quarter
sub    r2, r1, r0                    ; remainder
lsl    r3, r1, #5
add    r3, r3, #0x10000000           ; x
"""
    t += _mul_sat("r3", "r3", "r4")  # x2
    t += _mul_sat("r4", "r4", "r5")  # x2^2
    t += _div_pow2("r5", 2)
    t += _mul_sat("r4", "r3", "r1")  # x2 * x
    t += "add r5, r5, r1\n" + _const("r1", 715827883)
    t += _mul_sat("r5", "r1", "r5")
    t += "add r5, r5, r4\n" + _div_pow2("r5", 1) + "add r5, r5, r3\n"
    t += _const("r1", 1895147668) + _mul_sat("r1", "r5", "r5") + "add r5, r5, r1\n"
    for bit, c in zip(
        range(24, 31),
        (1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242),
        strict=True,
    ):
        t += _const("r1", c) + _mul_sat("r5", "r1", "r4")
        t += f"tst r2, #{1 << bit}\nit ne\nmovne r5, r4\n"
    t += "cmp r0, #0\nite eq\nmvneq r0, #0x80000000\nmovne r0, r5\n"
    return t


MAX_LOOP = """
ldrsb  r3, [r1], #1    {input}
cmp    r3, r4
it     gt
movgt  r4, r3
subs   r2, #1
bne    .Lsm_max
"""
SUM_PRE = """
ldrsb  r0, [r1], #1    {input}
subs   r0, r0, r4                    ; diff = x - max
cmp    r0, r8                        ; diff >= diff_min ?
blt    .Lsm_skip
ldr    r3, [sp, #8]                  ; mask (1 << shift)
mul    r0, r0, r3
ldr    r3, [sp, #12]                 ; mult
"""
SUM_POST = """
add    r9, r9, r0                    ; sum += DIV_POW2(exp, ACCUM_BITS)
subs   r10, #1
bne    .Lsm_sum
"""


def _mul_pow2_sat(x: str, d: str, e: int) -> str:
    """arm_nn_mult_by_power_of_two(x, e) -> d: x << e saturated to the int32 range. With
    lim = 2^(31-e) - 1 (not an encodable immediate): x > lim is tested as x >= lim + 1,
    x < -lim as x + (lim + 1) <= 0, lim + 1 = 2^(31-e) being one."""
    lim1 = 1 << (31 - e)
    return f"""
lsl    {d}, {x}, #{e}
cmp    {x}, #{lim1:#x}
it     ge
mvnge  {d}, #0x80000000
cmn    {x}, #{lim1:#x}
it     le
movle  {d}, #0x80000000
"""


def _one_over_one_plus_x() -> str:
    """arm_nn_one_over_one_plus_x_for_x_in_0_1(r0) -> r0: the 64-bit half denominator, the
    linear first guess and three Newton steps (two saturating doubling multiplies and a
    saturating x4 each), then a saturating x2. The half denominator is gemmlowp's
    RoundingHalfSum(a, Q31_MAX) = (a + Q31_MAX + 1) >> 1 for a >= 0 (here a is in [0, 2^31)),
    so the 64-bit sum adds 2^31."""
    t = """
asrs   r2, r0, #31
mov    r1, #0x80000000               ; Q31_MAX + 1 (the rounding of the half sum)
adds   r0, r0, r1
adc    r2, r2, #0
lsrs   r0, r0, #1
orr    ip, r0, r2, lsl #31           ; half_denominator
"""
    t += _const("r1", -1010580540) + _mul_sat("ip", "r1", "r0")
    t += _const("r1", 1515870810) + "add r5, r0, r1\n"  # x
    for _ in range(3):
        t += _mul_sat("ip", "r5", "r1") + "rsb r1, r1, #0x20000000\n"
        t += _mul_sat("r5", "r1", "r2") + _mul_pow2_sat("r2", "r3", 2) + "add r5, r5, r3\n"
    return t + _mul_pow2_sat("r5", "r0", 1)


# CLZ headroom, the shifted sum and the reciprocal of the sum (ONE_OVER1)
ROW_MID = (
    """
clz    r3, r9                         ; headroom
lsl    r0, r9, r3
sub    r0, r0, #0x80000000
"""
    + _one_over_one_plus_x()
    + """
str    r0, [sp, #16]                  ; shifted_scale
rsb    r3, r3, #35                    ; bits_over_unit
str    r3, [sp, #20]
"""
)
OUT_POST = (
    """
ldr    r1, [sp, #16]
"""
    + _mul_sat("r1", "r0", "r0")
    + """
ldr    r3, [sp, #20]
movs   r1, #1
lsls   r1, r3
subs   r1, #1
and    r2, r0, r1
asrs   r0, r3
asrs   r1, #1
add    r1, r1, r0, lsr #31
cmp    r2, r1
it     gt
addgt  r0, #1
subs   r0, #128                       ; + NN_Q7_MIN
cmp    r0, #127
it     gt
movgt  r0, #127
strb   r0, [r11], #1   {output}
subs   r10, #1
bne    .Lsm_out
"""
)
# GCC 12.2 -O2 -mcpu=cortex-m4 of CMSIS-NN's arm_softmax_s8.c and
# arm_nn_softmax_common_s8.c: the blocks around the loops below (the wrapper copies its
# stack arguments and calls the common function, whose entry spills the row pointers and
# counts it keeps on the stack; each row reloads them and each row end advances them).
ROW_SETUP = """
ldr    r2, [sp, #80]                 ; row_size
ldr    r3, [sp, #68]                 ; input row - 1
cmp    r2, #1
ldrsb  r4, [r3, #1]    {input}        ; max = input[0]
add    r3, r3, #1
ble    .Lsm_max_done
ldr    r1, [sp, #4]                  ; last element
"""
SUM_SETUP = """
ldr    lr, [sp, #68]
str    fp, [sp, #72]
movs   r3, #0
strd   r3, r4, [sp, #12]             ; sum = 0, max
mov    ip, lr
b      .Lsm_sum_first
"""
SUM_SKIP = """
ldrsb  r0, [r1], #1    {input}
subs   r0, r0, r4                    ; diff = x - max
cmp    r0, r8
blt    .Lsm_skip {taken}
subs   r10, #1
bne    .Lsm_sum
"""
OUT_SKIP = """
ldrsb  r0, [r1], #1    {input}
subs   r0, r0, r4
cmp    r0, r8
blt    .Lsm_min {taken}
mvn    r0, #127                       ; NN_Q7_MIN
strb   r0, [r11], #1   {output}
subs   r10, #1
bne    .Lsm_out
"""
ROW_END = """
ldr    fp, [sp, #116]
ldr    r2, [sp, #80]
ldr    r1, [sp, #4]
ldr    r0, [sp, #112]
ldr    r3, [sp, #92]                 ; row
add    r1, r2
str    r1, [sp, #4]
ldr    r1, [sp, #84]
add    r1, r0
str    r1, [sp, #84]
ldr    r1, [sp, #68]
add    fp, r2
add    r1, r2
ldr    r2, [sp, #104]                ; num_rows
str    r1, [sp, #68]
adds   r3, #1
cmp    r2, r3
str    r3, [sp, #92]
bne    .Lsm_rows
"""
ENTRY = """
push   {r4, lr}                      ; arm_softmax_s8
sub    sp, #16
ldr    r4, [sp, #24]
str    r4, [sp, #0]
ldr    r4, [sp, #28]
str    r4, [sp, #4]
ldr    r4, [sp, #32]
str    r4, [sp, #12]
movs   r4, #0
str    r4, [sp, #8]
bl     arm_nn_softmax_common_s8
push   {r4, r5, r6, r7, r8, r9, r10, r11, lr}
sub    sp, #124
str    r3, [sp, #8]
ldrb   r3, [sp, #168]
str    r3, [sp, #108]
subs   r3, r1, #0
str    r2, [sp, #80]
str    r3, [sp, #104]
ble    .Lsm_done
subs   r3, r2, #1
adds   r3, r0, r3
str    r3, [sp, #4]
subs   r3, r0, #1
ldr    fp, [sp, #172]
str    r3, [sp, #68]
lsls   r3, r2, #1
str    r3, [sp, #112]
ldr    r8, [pc, #776]  {const}
str    fp, [sp, #84]
movs   r3, #0
mov    sl, fp
str    r3, [sp, #92]
"""
EXIT = """
add    sp, #124
pop    {r4, r5, r6, r7, r8, r9, r10, r11, pc}
add    sp, #16                       ; arm_softmax_s8
pop    {r4, pc}
"""


@cache
def _blocks():
    b = Block.asm
    exp = _exp_on_negative()
    scaled = _mul_sat("r0", "r3", "r0") + exp
    return {
        "entry": b(ENTRY, "sm_entry"),
        "exit": b(EXIT, "sm_exit"),
        "row_setup": b(ROW_SETUP, "sm_row_setup"),
        "sum_setup": b(SUM_SETUP, "sm_sum_setup"),
        "max": b(MAX_LOOP, "sm_max"),
        "sum": b(SUM_PRE + scaled + _div_pow2("r0", 12) + SUM_POST, "sm_sum"),
        "mid": b(ROW_MID, "sm_row_mid"),
        "out": b(SUM_PRE.replace(".Lsm_skip", ".Lsm_min") + scaled + OUT_POST, "sm_out"),
        "sum_skip": b(SUM_SKIP, "sm_sum_skip"),
        "out_skip": b(OUT_SKIP, "sm_out_skip"),
        "row_end": b(ROW_END, "sm_row_end"),
    }


def softmax_program(graph: Graph, op: Op, data: OpData | None = None) -> Program:
    """``data``: the rows grouped by their count of elements >= diff_min, observed in a
    full run (mcusim.observed); without it every row takes :func:`passing_elements`."""
    x = graph.tensor(op.inputs[0])
    row = int(x.shape[-1]) if x.shape else 1
    rows = max(1, x.size // max(row, 1))
    if data is not None and data.passing:
        groups = data.passing
        note = "elements >= diff_min per row as observed in this run's input: " + ", ".join(
            f"{k} of {row} in {n} row{'s' if n > 1 else ''}" for k, n in groups
        )
    else:
        groups = ((passing_elements(graph, op, row), rows),)
        note = (
            f"{groups[0][0]} of {row} elements per row assumed >= diff_min (the maximum plus "
            "the share expected for activations spread over the int8 range)"
        )
    k = _blocks()
    # rows with the same count share one loop (row order does not change the cycles but
    # for one not-taken row back edge per extra group)
    loops = [Loop("sm_rows", n, _row_body(k, row, n_pass)) for n_pass, n in groups]
    return Program(
        [k["entry"], *loops, k["exit"]],
        kernel="arm_softmax_s8 -> arm_nn_softmax_common_s8",
        macs=0,
        notes=[note],
    )


def _row_body(k: dict, row: int, n_pass: int) -> list:
    n_skip = row - n_pass
    return [
        k["row_setup"],
        Loop("sm_max", row - 1, [k["max"]]),
        k["sum_setup"],
        # the sum and output passes re-read the row from its start (passing elements
        # first, then the skipped ones: the order does not change the cycles)
        Loop("sm_sum", n_pass, [k["sum"]], addr={"input": Rewind(1, start=-row)}),
        Loop("sm_sum_skip", n_skip, [k["sum_skip"]]),
        k["mid"],
        Loop("sm_out", n_pass, [k["out"]], addr={"input": Rewind(1, start=-row)}),
        Loop("sm_out_skip", n_skip, [k["out_skip"]]),
        k["row_end"],
    ]


def passing_elements(graph: Graph, op: Op, row: int) -> int:
    """Elements per row expected to pass the diff_min test: the row maximum, plus the
    other elements within |diff_min| of it when values spread evenly over int8."""
    from mcusim.kernels.softmax import softmax_prepare

    try:
        diff_min = softmax_prepare(graph, op).diff_min
    except UnsupportedOpError:  # a layer the int8 kernel rejects: time every element
        return row
    share = min(1.0, (abs(int(diff_min)) + 1) / 256.0)
    return max(1, min(row, 1 + round((row - 1) * share)))
