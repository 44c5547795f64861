"""CONV_2D and FULLY_CONNECTED below 8 bits on Armv7E-M + DSP.

W4A8 with int8 input and int8 fixed-point output runs CMSIS-NN's s4 kernels
(arm_convolve_wrapper_s4 dispatch, DSP build; ARM-software/CMSIS-NN Source/
ConvolutionFunctions/arm_convolve_s4.c, arm_nn_mat_mult_kernel_s4_s16.c,
NNSupportFunctions/arm_nn_mat_mult_nt_t_s4.c, arm_nn_vec_mat_mult_t_s4.c):
- 1x1 stride 1 -> arm_convolve_1x1_s4_fast -> arm_nn_mat_mult_nt_t_s4 (2 lhs rows x 2 rhs
  rows, int8 lhs widened with SXTAB16, weights by read_and_pad_s4);
- otherwise arm_convolve_s4: s16 im2col (arm_q7_to_q15_with_offset) of 2 pixels ->
  arm_nn_mat_mult_kernel_s4_s16 (2 x 2, weights by read_and_pad_s4_ordered);
- FC (per-tensor weights) -> arm_fully_connected_s4 -> arm_nn_vec_mat_mult_t_s4 (2 rows
  per pass). read_and_pad_s4 is LDRH + 3 ALU to spread the two bytes + SXTB16(ROR 4) on
  both nibble positions (SXTB16 only rotates by 8/16/24, so ROR #4 is a separate
  instruction); the _ordered variant adds 2 PKH.
Every other precision (W4A4, W2A4, W2A2, W1A8, uint8 input, sub-byte or threshold output,
per-channel FC) runs our CMix-NN-style rendering (cmix_common.py): s16 im2col with the
pair reorder and column sums, 2 x 2 kernel with AND-unpacked weights.
"""

from __future__ import annotations

import dataclasses
from functools import cache

from mcusim.graph import Graph, Op
from mcusim.isa.schedule import Block, Loop, Program, Rewind

from .cmix_common import (
    LOOP_END,
    Prec,
    kernel_step_text,
    kernel_tail_text,
    layer_prec,
    out_block,
    packed_bytes,
    row_end_text,
    row_setup_text,
    row_words,
    unpack_blocks,
)
from .cmsis_conv import _blocks as conv_blocks
from .cmsis_conv import is_1x1
from .common import (
    Geom,
    PixelWalk,
    conv_geom,
    memcpy_items,
    memset_items,
    pixels_by,
    qparam_rules,
    requant_out_block,
    taps_key,
)


def cmsis_s4_ok(graph: Graph, op: Op, p: Prec) -> bool:
    """CMSIS-NN's s4 kernels: int4 weights, int8 input and int8 fixed-point output."""
    x, y = graph.tensor(op.inputs[0]), graph.tensor(op.outputs[0])
    w = graph.tensor(op.inputs[1])
    return (
        w.dtype.name == "int4"
        and x.dtype.name == "int8"
        and y.dtype.name == "int8"
        and not p.thresholds
        and not (op.kind == "fully_connected" and p.per_channel)
    )


# ---------------------------------------------------------------- CMSIS-NN s4 (W4A8)
# read_and_pad_s4(src) -> (lanes of nibbles 0,2), (1,3); 11 instructions with the load
READ_PAD_S4 = """
ldrsh  {t}, [{src}]{post}    {{weights}}
uxtb   {o1}, {t}
and    {t}, {t}, #0xFF00
orr    {t}, {o1}, {t}, lsl #8            ; bytes to lanes 0 and 2
lsl    {o1}, {t}, #4
sxtb16 {o1}, {o1}
ror    {o1}, {o1}, #4
sxtb16 {o1}, {o1}                        ; low nibbles
sxtb16 {o2}, {t}
ror    {o2}, {o2}, #4
sxtb16 {o2}, {o2}                        ; high nibbles
"""
# _ordered: + PKHBT / PKHTB to (0,1), (2,3): the results are {t} and {o2}
READ_PAD_S4_ORDERED = (
    READ_PAD_S4
    + """
pkhbt  {t}, {o1}, {o2}, lsl #16
pkhtb  {o2}, {o2}, {o1}, asr #16
"""
)


def _rp(ordered: bool, src: str, o1: str, o2: str, t: str, post: str = ", #2") -> str:
    text = READ_PAD_S4_ORDERED if ordered else READ_PAD_S4
    return text.format(src=src, o1=o1, o2=o2, t=t, post=post)


# arm_nn_mat_mult_kernel_s4_s16, 4 reduction columns of 2 channels x 2 s16 columns:
# a01/a02 in r4/r5, a11/a12 in r6/lr, b0/b1 in ip/r7 (GCC spills the trip count)
S4S16_STEP = (
    _rp(True, "r0", "ip", "r5", "r4")
    + _rp(True, "r1", "ip", "lr", "r6")
    + """ldr    ip, [r2], #4    {scratch}
ldr    r7, [r3], #4    {scratch}
smlad  r8, r4, ip, r8
smlad  r9, r4, r7, r9
smlad  r10, r6, ip, r10
smlad  r11, r6, r7, r11
ldr    ip, [r2], #4    {scratch}
ldr    r7, [r3], #4    {scratch}
smlad  r8, r5, ip, r8
smlad  r9, r5, r7, r9
smlad  r10, lr, ip, r10
smlad  r11, lr, r7, r11
"""
    + LOOP_END
)
S4S16_COL1_STEP = (
    _rp(True, "r0", "ip", "r5", "r4")
    + """ldr    r6, [r2], #4    {scratch}
smlad  r8, r4, r6, r8
ldr    r7, [r2], #4    {scratch}
smlad  r8, r5, r7, r8
subs   lr, #1
bne    .Ls4c1
"""
)
# scalar pair of columns (num_col % 4 >> 1)
S4_PAIR = """
ldrsb  r4, [r0], #1    {weights}
lsl    r5, r4, #28
asr    r5, r5, #28
asr    r4, r4, #4
ldrsh  r6, [r2], #2    {scratch}
ldrsh  r7, [r3], #2    {scratch}
mla    r8, r5, r6, r8
mla    r9, r5, r7, r9
ldrsh  r6, [r2], #2    {scratch}
ldrsh  r7, [r3], #2    {scratch}
mla    r8, r4, r6, r8
mla    r9, r4, r7, r9
subs   ip, #1
bne    .Ls4pair
"""
S4_PAIR_LHS = """
ldrsb  r4, [r1], #1    {weights}
lsl    r5, r4, #28
asr    r5, r5, #28
asr    r4, r4, #4
ldrsb  r6, [r0], #1    {input}
ldrsb  r7, [r0], #1    {input}
add    r6, r6, r3
add    r7, r7, r3
mla    r8, r5, r6, r8
mla    r8, r4, r7, r8
subs   ip, #1
bne    .Ls4pair_lhs
"""
S4_ROW_SETUP = """
ldr    r2, [sp, #8]                  ; ip_b0 = input_b
ldr    ip, [sp, #12]                 ; num_col_a
add    r3, r2, ip, lsl #1            ; ip_b1
ldr    r8, [r5]        {bias}
mov    r9, r8
ldr    r10, [r5, #8]   {bias}
mov    r11, r10
asrs   ip, ip, #2
str    ip, [sp, #4]
beq    .Ls4_nocols
"""
S4_ROW_END = """
ldr    ip, [sp, #20]
subs   ip, #1
str    ip, [sp, #20]
bne    .Ls4_rows
"""
S4_ENTRY = """
push   {r4, r5, r6, r7, r8, r9, r10, r11, lr}
sub    sp, #28
ldr    r5, [sp, #76]                 ; bias
lsrs   ip, r2, #2                    ; row_count = output_ch / 4
str    ip, [sp, #20]
"""
S4_EXIT = """
add    sp, #28
pop    {r4, r5, r6, r7, r8, r9, r10, r11, pc}
"""
# arm_q7_to_q15_with_offset: 4 int8 -> 4 s16 (+ offset), natural order
Q7_Q15 = """
ldr    r4, [r0], #4    {input}
sxtab16 r5, r3, r4
sxtab16 r4, r3, r4, ror #8
pkhbt  r6, r5, r4, lsl #16
pkhtb  r4, r4, r5, asr #16
str    r6, [r1], #4    {scratch}
str    r4, [r1], #4    {scratch}
subs   r2, #1
bne    .Lq7q15
"""
Q7_Q15_TAIL = """
ldrsb  r4, [r0], #1    {input}
add    r4, r4, r3
strh   r4, [r1], #2    {scratch}
subs   ip, #1
bne    .Lq7q15_tail
"""
Q7_Q15_CALL = """
bl     arm_q7_to_q15_with_offset
push   {r4, r5, r6}
pkhbt  r3, r3, r3, lsl #16
lsrs   r2, r2, #2
"""
Q7_Q15_RET = "pop    {r4, r5, r6}\nbx     lr\n"


@cache
def _s4_blocks():
    b = Block.asm
    return {
        "entry": b(S4_ENTRY, "s4s16_entry"),
        "exit": b(S4_EXIT, "s4s16_exit"),
        "call": b("bl arm_nn_mat_mult_kernel_s4_s16", "s4s16_call"),
        "row_setup": b(S4_ROW_SETUP, "s4s16_row_setup"),
        "step": b(S4S16_STEP, "s4s16_cols4"),
        "pair": b(S4_PAIR, "s4s16_cols2"),
        "row_end": b(S4_ROW_END, "s4s16_row_end"),
        "col1_setup": b(
            "ldr r8, [r5], #4 {bias}\nldr r2, [sp, #8]\nldr lr, [sp, #12]\nlsrs lr, lr, #2\n",
            "s4_col1_setup",
        ),
        "col1_step": b(S4S16_COL1_STEP, "s4_col1_cols4"),
        "col1_end": b(
            "ldr ip, [sp, #24]\nsubs ip, #1\nstr ip, [sp, #24]\nbne .Ls4c1_rows\n", "s4_col1_end"
        ),
        "q7_call": b(Q7_Q15_CALL, "q7_to_q15_entry", shared=True),
        "q7": b(Q7_Q15, "q7_to_q15_loop", shared=True),
        "q7_tail": b(Q7_Q15_TAIL, "q7_to_q15_tail", shared=True),
        "q7_ret": b(Q7_Q15_RET, "q7_to_q15_ret", shared=True),
    }


def q7_to_q15_items(n: int) -> list:
    k = _s4_blocks()
    return [
        k["q7_call"],
        Loop("q7_to_q15", n // 4, [k["q7"]]),
        Loop("q7_to_q15_tail", n % 4, [k["q7_tail"]]),
        k["q7_ret"],
    ]


def s4s16_kernel_items(out_ch: int, num_col: int) -> list:
    """arm_nn_mat_mult_kernel_s4_s16: out_ch / 4 passes of 2 channel pairs (channels n,
    n+2 then n+1, n+3, the spill trick keeps odd num_col symmetric) x 2 columns."""
    k = _s4_blocks()
    out4 = [requant_out_block(r) for r in ("r8", "r9", "r10", "r11")]
    pair = [
        k["row_setup"],
        Loop("s4s16_cols4", num_col // 4, [k["step"]]),
        Loop("s4s16_cols2", (num_col % 4) >> 1, [k["pair"]]),
        *out4,
    ]
    rows = Loop(
        "s4s16_rows",
        out_ch // 4,
        [*pair, *pair, k["row_end"]],
        addr={"scratch": Rewind(0)},
    )
    items = [k["call"], k["entry"], rows]
    if out_ch % 4:
        items.append(Loop("s4s16_left_rows", out_ch % 4, [*pair[:3], out4[0], out4[1]]))
    return [*items, k["exit"]]


def s4_leftover_column(out_ch: int, num_col: int) -> list:
    k = _s4_blocks()
    return [
        Loop(
            "s4_leftover_col_rows",
            out_ch,
            [
                k["col1_setup"],
                Loop("s4_leftover_cols4", num_col // 4, [k["col1_step"]]),
                Loop("s4_leftover_cols2", (num_col % 4) >> 1, [k["pair"]]),
                requant_out_block("r8"),
                k["col1_end"],
            ],
            addr={"scratch": Rewind(0)},
        )
    ]


def _im2col_s16_column(g: Geom, n_valid: int, q7: bool) -> list:
    """One s16 im2col column of arm_convolve_s4 (q7 -> q15 per tap, memset 0 padding)."""
    k = conv_blocks()
    c = g.in_c
    pix = c * g.d_w
    copy = Loop(
        "im2col_taps",
        n_valid,
        [k["tap_test"], k["tap_copy"], *q7_to_q15_items(c), k["tap_end"]],
        addr={"input": Rewind(pix, every=g.k_w, skip=g.in_w * c * g.d_h - g.k_w * pix)},
    )
    pad = Loop(
        "im2col_pad_taps",
        g.k_h * g.k_w - n_valid,
        [
            k["tap_test_pad"],
            k["tap_pad"],
            *memset_items(2 * c, c % 2 == 0, "scratch"),
            k["tap_end"],
        ],
    )
    return [k["pixel"], copy, pad, k["pixel_end"]]


def convolve_s4_items(g: Geom) -> list:
    k = conv_blocks()
    rhs_cols = g.k_h * g.k_w * g.in_c
    n_pix = g.out_pixels
    body: list = []
    classes = pixels_by(g, taps_key(g))
    walk = PixelWalk(g, ("input",))
    for n_valid, count in sorted(g.taps_valid().items()):
        body.append(
            Loop(
                f"s4_im2col_pixels_{n_valid}taps",
                count,
                _im2col_s16_column(g, n_valid, True),
                addr={**walk.rules(classes[n_valid]), "scratch": Rewind(0)},
            )
        )
    body.append(
        Loop(
            "s4_column_pairs",
            n_pix // 2,
            [k["pair_args"], *s4s16_kernel_items(g.out_c, rhs_cols), k["pair_end"]],
            addr={
                **{r: Rewind(0) for r in ("weights", "bias", "scratch")},
                **qparam_rules(),
                "output": Rewind(2 * g.out_c),
            },
        )
    )
    if n_pix % 2:
        body += s4_leftover_column(g.out_c, rhs_cols)
    return [k["entry"], Loop("batches", g.batches, body), k["exit"]]


# arm_nn_mat_mult_nt_t_s4 (DSP): 4 columns of 2 lhs rows x 2 rhs rows (rows i, i+2)
NT_S4_STEP = (
    _rp(False, "r1", "r4", "r5", "ip")
    + _rp(False, "r1", "r6", "r7", "ip").replace("[r1], #2", "[r1, r2]")
    + """ldr    lr, [r0], #4    {input}
sxtab16 ip, r3, lr
sxtab16 lr, r3, lr, ror #8
smlad  r8, r4, ip, r8
smlad  r8, r5, lr, r8
smlad  r9, r6, ip, r9
smlad  r9, r7, lr, r9
ldr    lr, [sp, #20]                 ; lhs_cols_off1 (spilled)
ldr    lr, [r0, lr]    {input}
sxtab16 ip, r3, lr
sxtab16 lr, r3, lr, ror #8
smlad  r10, r4, ip, r10
smlad  r10, r5, lr, r10
smlad  r11, r6, ip, r11
smlad  r11, r7, lr, r11
"""
)
NT_S4_END = """
ldr    ip, [sp, #4]
subs   ip, #1
str    ip, [sp, #4]
bne    .Lnts4
"""
NT_S4_SETUP = """
ldr    r1, [sp, #8]                  ; packed rhs
ldr    r8, [r5]        {bias}
ldr    r9, [r5, #8]    {bias}
mov    r10, r8
mov    r11, r9
ldr    ip, [sp, #12]
str    ip, [sp, #4]
"""
NT_S4_PAIR_END = """
ldr    ip, [sp, #16]
subs   ip, #1
str    ip, [sp, #16]
bne    .Lnts4_rows
"""


@cache
def _nt_s4_blocks():
    b = Block.asm
    return {
        "call": b("bl arm_nn_mat_mult_nt_t_s4", "nts4_call"),
        "entry": b(S4_ENTRY, "nts4_entry"),
        "exit": b(S4_EXIT, "nts4_exit"),
        "setup": b(NT_S4_SETUP, "nts4_setup"),
        "c16": b(NT_S4_STEP * 4 + NT_S4_END, "nts4_cols16"),
        "c4": b(NT_S4_STEP + NT_S4_END, "nts4_cols4"),
        "c2": b(S4_PAIR_LHS, "nts4_cols2"),
        "end": b(NT_S4_PAIR_END, "nts4_rows_end"),
    }


def mat_mult_nt_t_s4(lhs_rows: int, rhs_rows: int, rhs_cols: int) -> list:
    k = _nt_s4_blocks()
    out = [requant_out_block(r) for r in ("r8", "r9", "r10", "r11")]
    n16, n4 = rhs_cols // 16, (rhs_cols % 16) // 4
    pass_ = [
        k["setup"],
        Loop("nts4_cols16", n16, [k["c16"]]),
        Loop("nts4_cols4", n4, [k["c4"]]),
        Loop("nts4_cols2", (rhs_cols % 4) >> 1, [k["c2"]]),
        *out,
    ]
    rows = Loop(
        "nts4_lhs_row_pairs",
        -(-lhs_rows // 2),
        [*pass_, *pass_, k["end"]],  # rows (i, i+2), then the spilled (i+1, i+3)
        addr={"weights": Rewind(0), "input": Rewind(2 * rhs_cols), **qparam_rules()},
        regs={"r2": packed_bytes(rhs_cols, 4) - 2, "lr": rhs_cols - 4},
    )
    blocks = Loop(
        "nts4_rhs_row_quads",
        -(-rhs_rows // 4),
        [rows],
        addr={
            "weights": Rewind(packed_bytes(4 * rhs_cols, 4)),
            "input": Rewind(0),
            "output": Rewind(4),
        },
    )
    return [k["call"], k["entry"], blocks, k["exit"]]


# arm_nn_vec_mat_mult_t_s4 (DSP): rows (i, i + 2 * row_loop_cnt), 4 columns per step
VM_S4_STEP = (
    _rp(False, "r1", "r4", "r5", "ip")
    + _rp(False, "r1", "r6", "r7", "ip").replace("[r1], #2", "[r1, r2]")
    + """ldr    lr, [r0], #4    {input}
sxtab16 ip, r3, lr
sxtab16 lr, r3, lr, ror #8
smlad  r8, ip, r4, r8
smlad  r8, lr, r5, r8
smlad  r9, ip, r6, r9
smlad  r9, lr, r7, r9
subs   r10, #1
bne    .Lvms4
"""
)
VM_S4_SETUP = """
ldr    r0, [sp, #8]                  ; lhs
ldr    r8, [r11]       {bias}
ldr    r9, [r11, #8]   {bias}
adds   r11, #4
ldr    r10, [sp, #12]                ; rhs_cols / 4
"""


@cache
def _vm_s4_blocks():
    b = Block.asm
    return {
        "call": b("bl arm_nn_vec_mat_mult_t_s4", "vms4_call"),
        "entry": b(S4_ENTRY, "vms4_entry"),
        "exit": b(S4_EXIT, "vms4_exit"),
        "setup": b(VM_S4_SETUP, "vms4_setup"),
        "step": b(VM_S4_STEP, "vms4_cols4"),
        "c2": b(S4_PAIR_LHS, "vms4_cols2"),
    }


def vec_mat_mult_t_s4(rows: int, cols: int) -> list:
    k = _vm_s4_blocks()
    out = [requant_out_block(r, per_channel=False) for r in ("r8", "r9")]
    body = [
        k["setup"],
        Loop("vms4_cols4", cols // 4, [k["step"]]),
        Loop("vms4_cols2", (cols % 4) >> 1, [k["c2"]]),
        *out,
    ]
    items = [
        k["call"],
        k["entry"],
        Loop(
            "vms4_row_pairs",
            rows // 4,
            [*body, *body],
            addr={"input": Rewind(0)},
            regs={"r2": packed_bytes(cols * (rows // 4), 4) - 2},
        ),
    ]
    if rows % 4:
        items.append(
            Loop("vms4_left_rows", rows % 4, [*body[:3], out[0]], addr={"input": Rewind(0)})
        )
    return [*items, k["exit"]]


# ---------------------------------------------------------------- CMix-NN style
@cache
def _cmix_kernel_blocks(p: Prec, nch: int, ncol: int):
    b = Block.asm
    tag = f"{p.name}_{nch}x{ncol}"
    return {
        "setup": b(row_setup_text(nch, ncol, p.w), f"cmix_row_setup_{tag}"),
        "step": b(kernel_step_text(p.w, nch, ncol) + LOOP_END, f"cmix_step_{tag}"),
        "tail": b(kernel_tail_text(p.w, nch, ncol), f"cmix_tail_{tag}"),
        "end": b(row_end_text(nch), f"cmix_row_end_{nch}"),
    }


def cmix_kernel_items(p: Prec, out_c: int, k_cols: int, ncol: int) -> list:
    """Our CMix-NN-style kernel over ``ncol`` (1 or 2) s16 columns and all channels."""
    words = k_cols // p.group
    tail = k_cols % p.group
    items: list = []
    for nch, count in ((2, out_c // 2), (1, out_c % 2)):
        if not count:
            continue
        k = _cmix_kernel_blocks(p, nch, ncol)
        # a lone last channel stores (merges) its output as the second of a pair does
        outs = [
            out_block(f"r{8 + 2 * i + j}", p, i if nch == 2 else 1, j)
            for i in range(nch)
            for j in range(ncol)
        ]
        items.append(
            Loop(
                f"cmix_rows_{nch}ch",
                count,
                [
                    k["setup"],
                    Loop("cmix_words", words, [k["step"]]),
                    Loop("cmix_tail", tail, [k["tail"]]),
                    *outs,
                    k["end"],
                ],
                addr={"scratch": Rewind(0)},  # the columns are re-read per channel pair
                regs={"r1": 0},
            )
        )
    return items


ENTRY = """
push   {r4, r5, r6, r7, r8, r9, r10, r11, lr}
sub    sp, #60
ldr    r5, [sp, #96]                 ; bias
"""
EXIT = """
movs   r0, #0
add    sp, #60
pop    {r4, r5, r6, r7, r8, r9, r10, r11, pc}
"""
COLUMN_END = """
ldr    r3, [sp, #16]
ldr    r2, [sp, #20]
add    r3, r3, r2, lsl #1
str    r3, [sp, #16]                 ; next column buffer
"""
PAIR_ARGS = """
ldr    r0, [sp, #8]                  ; weights
ldr    r5, [sp, #12]                 ; bias
ldr    r2, [sp, #24]
str    r2, [sp, #28]                 ; channel pairs
"""


@cache
def _cmix_blocks():
    b = Block.asm
    return {
        "entry": b(ENTRY, "cmix_entry"),
        "exit": b(EXIT, "cmix_exit"),
        "col_end": b(COLUMN_END, "cmix_column_end"),
        "pair_args": b(PAIR_ARGS, "cmix_pair_args"),
        "bit_append": b(
            """
ldr    r4, [r0], #4    {input}
lsl    r5, r4, r6
orr    r7, r7, r5
str    r7, [r1], #4    {scratch}
rsb    r5, r6, #32
lsr    r7, r4, r5
subs   r2, #1
bne    .Lcmix_bits
""",
            "cmix_bit_append",
        ),
    }


def unpack_items(p: Prec, n: int, src: str) -> list:
    """One call unpacking n activations (groups of G, then a natural-order tail)."""
    k = unpack_blocks(p.a, p.a_signed, p.w, src)
    return [
        k["call"],
        k["entry"],
        Loop("cmix_unpack_groups", n // p.group, [k["group"]]),
        Loop("cmix_unpack_tail", n % p.group, [k["tail"]]),
        k["exit"],
    ]


def direct_unpack(p: Prec, c: int) -> bool:
    """CMix-NN's per-tap unpack needs whole groups and whole bytes per pixel."""
    return c % p.group == 0 and (c * p.a) % 8 == 0


def _cmix_column(p: Prec, g: Geom, n_valid: int) -> list:
    """One im2col column: per tap unpack (or packed copy), padding, column sum."""
    k = conv_blocks()
    kb = _cmix_blocks()
    c = g.in_c
    px_bytes = packed_bytes(c, p.a)
    pix = px_bytes * g.d_w
    in_rule = {"input": Rewind(pix, every=g.k_w, skip=g.in_w * px_bytes * g.d_h - g.k_w * pix)}
    k_cols = g.k_h * g.k_w * c
    n_pad = g.k_h * g.k_w - n_valid
    if direct_unpack(p, c):
        copy = [k["tap_test"], k["tap_copy"], *unpack_items(p, c, "input"), k["tap_end"]]
        pad = [k["tap_test_pad"], k["tap_pad"], *memset_items(2 * c, True, "scratch"), k["tap_end"]]
        return [
            k["pixel"],
            Loop("cmix_im2col_taps", n_valid, copy, addr=in_rule),
            Loop("cmix_im2col_pad_taps", n_pad, pad),
            kb["col_end"],
        ]
    # packed im2col per tap (byte copies, or a bit-append when a pixel is not whole
    # bytes), padding with the zero-point code, then one unpack over the whole column
    if (c * p.a) % 8 == 0:
        copy = [
            k["tap_test"],
            k["tap_copy"],
            *memcpy_items(px_bytes, px_bytes % 4 == 0, "input", "scratch"),
            k["tap_end"],
        ]
    else:
        copy = [
            k["tap_test"],
            k["tap_copy"],
            Loop("cmix_bit_append", -(-c * p.a // 32), [kb["bit_append"]]),
            k["tap_end"],
        ]
    pad = [k["tap_test_pad"], k["tap_pad"], *memset_items(px_bytes, False, "scratch"), k["tap_end"]]
    return [
        k["pixel"],
        Loop("cmix_im2col_taps", n_valid, copy, addr=in_rule),
        Loop("cmix_im2col_pad_taps", n_pad, pad),
        *unpack_items(p, k_cols, "scratch"),
        kb["col_end"],
    ]


def _byte_geom(g: Geom, p: Prec) -> Geom:
    """The geometry in bytes per pixel (address rules of packed tensors)."""
    return dataclasses.replace(g, in_c=packed_bytes(g.in_c, p.a), out_c=packed_bytes(g.out_c, p.y))


def cmix_conv_items(p: Prec, g: Geom) -> list:
    kb = _cmix_blocks()
    k = conv_blocks()
    k_cols = g.k_h * g.k_w * g.in_c
    n_pix = g.out_pixels
    out_row = packed_bytes(g.out_c, p.y)
    body: list = []
    classes = pixels_by(g, taps_key(g))
    walk = PixelWalk(_byte_geom(g, p), ("input",))
    for n_valid, count in sorted(g.taps_valid().items()):
        body.append(
            Loop(
                f"cmix_im2col_pixels_{n_valid}taps",
                count,
                _cmix_column(p, g, n_valid),
                addr={**walk.rules(classes[n_valid]), "scratch": Rewind(0)},
            )
        )
    per_pass = {r: Rewind(0) for r in ("weights", "bias", "scratch")} | qparam_rules()
    body.append(
        Loop(
            "cmix_column_pairs",
            n_pix // 2,
            [kb["pair_args"], *cmix_kernel_items(p, g.out_c, k_cols, 2), k["pair_end"]],
            addr={**per_pass, "output": Rewind(2 * out_row)},
        )
    )
    if n_pix % 2:
        body += [kb["pair_args"], *cmix_kernel_items(p, g.out_c, k_cols, 1)]
    return [kb["entry"], Loop("batches", g.batches, body), kb["exit"]]


def _kernel_name(p: Prec, what: str) -> str:
    req = "thresholds" if p.thresholds else "fixed_point"
    return f"cmix-style {what} {p.name} (s16 im2col + 2x2 SMLAD, {req}, {p.y}-bit out)"


def conv2d_program(graph: Graph, op: Op, cmsis_s4: bool = True) -> Program:
    g = conv_geom(graph, op)
    p = layer_prec(graph, op)
    kernel_ch = int(graph.tensor(op.inputs[1]).shape[3])
    macs = g.batches * g.out_pixels * g.out_c * g.k_h * g.k_w * kernel_ch
    if kernel_ch != g.in_c:  # grouped: every group is a conv of its own channels
        groups = g.in_c // kernel_ch
        sub = dataclasses.replace(g, in_c=kernel_ch, out_c=g.out_c // groups)
        items = cmix_conv_items(p, sub)
        items = [Loop("cmix_groups", groups, items)]
        return Program(items, kernel=_kernel_name(p, "grouped conv"), macs=macs)
    if cmsis_s4 and cmsis_s4_ok(graph, op, p):
        k = conv_blocks()
        if is_1x1(g, kernel_ch) and g.s_h == 1 and g.s_w == 1:
            items = [
                k["entry"],
                *mat_mult_nt_t_s4(g.batches * g.in_h * g.in_w, g.out_c, g.in_c),
                k["exit"],
            ]
            kernel = "arm_convolve_1x1_s4_fast -> arm_nn_mat_mult_nt_t_s4"
        else:
            items = convolve_s4_items(g)
            kernel = "arm_convolve_s4 -> arm_nn_mat_mult_kernel_s4_s16"
        return Program(items, kernel=kernel, macs=macs)
    return Program(cmix_conv_items(p, g), kernel=_kernel_name(p, "conv"), macs=macs)


def fully_connected_program(graph: Graph, op: Op, cmsis_s4: bool = True) -> Program:
    w = graph.tensor(op.inputs[1])
    x = graph.tensor(op.inputs[0])
    out_f, in_f = int(w.shape[0]), int(w.shape[1])
    batches = max(1, x.size // in_f)
    p = layer_prec(graph, op)
    macs = batches * out_f * in_f
    kb = _cmix_blocks()
    if cmsis_s4 and cmsis_s4_ok(graph, op, p):
        items = [
            kb["entry"],
            Loop(
                "fc_batches",
                batches,
                vec_mat_mult_t_s4(out_f, in_f),
                addr={"input": Rewind(in_f), "weights": Rewind(0), "bias": Rewind(0)},
            ),
            kb["exit"],
        ]
        return Program(
            items, kernel="arm_fully_connected_s4 -> arm_nn_vec_mat_mult_t_s4", macs=macs
        )
    row_in = packed_bytes(in_f, p.a)
    out_row = packed_bytes(out_f, p.y)
    # batch rows are the kernel's columns: unpack two rows, run the 2 x 2 kernel
    pair = Loop(
        "cmix_fc_row_pairs",
        batches // 2,
        [
            *unpack_items(p, in_f, "input"),
            *unpack_items(p, in_f, "input"),
            kb["pair_args"],
            *cmix_kernel_items(p, out_f, in_f, 2),
        ],
        addr={
            "input": Rewind(2 * row_in),
            "output": Rewind(2 * out_row),
            **{r: Rewind(0) for r in ("weights", "bias", "scratch")},
            **qparam_rules(),
        },
    )
    items = [kb["entry"], pair]
    if batches % 2:
        items += [
            *unpack_items(p, in_f, "input"),
            kb["pair_args"],
            *cmix_kernel_items(p, out_f, in_f, 1),
        ]
    items.append(kb["exit"])
    return Program(
        items,
        kernel=_kernel_name(p, "fully connected"),
        macs=macs,
        notes=[f"weight rows padded to {4 * row_words(in_f, p.w)} bytes"],
    )
