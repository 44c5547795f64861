"""CMSIS-NN's portable-C matrix kernels on Armv6-M (built without ARM_MATH_DSP / MVEI).

- ``arm_nn_mat_mult_kernel_s8_s16`` (``#else`` branch): 2 output channels x 2 s16 im2col
  columns, one reduction column per step (4 MULS); an odd channel takes 2 MULS per step.
- ``arm_nn_mat_mult_nt_t_s8`` (``#else`` branch): per pair of filters a sum(w) pass (the input
  offset folded as sum(w) * lhs_offset), then 2 x 2 (pixels x filters) one column per step;
  an odd pixel 1 x 2; an odd filter 1 x 1 with the offset added per element.
- ``arm_nn_vec_mat_mult_t_s8`` / ``..._per_ch_s8`` (``#else`` branch): 3 rows per pass, one
  column per step (the offset added to every loaded activation), then single rows.

Loop bodies follow GCC 12.2 -O2 -mcpu=cortex-m0plus output for these sources (instruction
mix, spills of the fourth accumulator, register-offset LDRSB) in our own rendering.
"""

from __future__ import annotations

from functools import cache

from mcusim.isa.schedule import Block, Loop, Rewind

from .cmsis_c_common import requant_out_items
from .common import QPARAM_TAGS, qparam_moves, qparam_rules

# Address rules (cache model only, docs/cost-model.md "Address streams"). These C loops
# index their rows with the column counter ([rn, r3]) instead of moving pointers, so the
# column loops carry Rewind(step) rules. Where one block reads two or three rows of the
# same tensor through the same counter, the rows fold into one pointer stepping over
# all of them (the rows are contiguous: the same bytes in another order). The
# requantization reads a channel's multiplier and shift through pointers it never
# moves: the per-channel parameters are one 4-byte step per channel of the "qmult"
# (multipliers) and "qparams" (shifts) pointers, two arrays as TFLite Micro keeps them.
# Its store goes through the output pointer without moving it: the caller's loops place
# it (``moves`` per output block).


def _out_moves(outs: list, deltas: list[dict]) -> dict:
    """moves for requant_out_items sequences: ``deltas[i]`` before output i's blocks
    (pre block: the requantization arrays' moves, post block: "output" moves)."""
    mv: dict = {}
    for i, d in enumerate(deltas):
        pre, post = outs[3 * i], outs[3 * i + 2]
        q = {t: d[t] for t in QPARAM_TAGS if d.get(t)}
        if q:
            mv[pre] = q
        if d.get("output"):
            mv[post] = {"output": d["output"]}
    return mv


# ------------------------------------------------------ arm_nn_mat_mult_kernel_s8_s16
# 24 instructions, 4 MACs: ch_0_out_0 lives on the stack (8 accumulators + 4 pointers do
# not fit the low registers), both weight pointers are indexed by the column counter.
S8S16_INNER = """
ldr    r2, [sp, #8]                 ; ip_a0
lsls   r0, r3, #1
ldrsb  r1, [r2, r3]   {weights}
ldr    r2, [sp, #12]                ; ip_b0
ldrsh  r2, [r2, r0]   {scratch}
movs   r4, r2
muls   r4, r1
mov    ip, r4
ldr    r4, [sp, #4]                 ; ch_0_out_0 (spilled)
add    r4, ip
str    r4, [sp, #4]
ldr    r4, [sp, #16]                ; ip_b1
ldrsh  r0, [r4, r0]   {scratch}
muls   r1, r0
adds   r6, r6, r1
mov    r1, fp                       ; ip_a1
ldrsb  r1, [r1, r3]   {weights}
adds   r3, r3, #1
muls   r2, r1
muls   r1, r0
adds   r5, r5, r2
adds   r7, r7, r1
cmp    r3, r8
bne    .Lk_inner
"""
S8S16_ODD = """
ldr    r2, [sp, #8]
lsls   r0, r3, #1
ldrsb  r1, [r2, r3]   {weights}
ldr    r2, [sp, #12]
ldrsh  r2, [r2, r0]   {scratch}
muls   r2, r1
adds   r6, r6, r2
ldr    r2, [sp, #16]
ldrsh  r2, [r2, r0]   {scratch}
muls   r2, r1
adds   r5, r5, r2
adds   r3, r3, #1
cmp    r3, r8
bne    .Lk_odd
"""
S8S16_ROW_SETUP = """
ldr    r3, [sp, #8]                 ; ip_a0
mov    fp, r3
ldr    r3, [sp, #36]                ; num_col_a
add    fp, r3                       ; ip_a1
ldr    r3, [sp, #40]                ; bias
ldr    r2, [r3]       {bias}
mov    ip, r2
ldr    r4, [r3, #4]   {bias}
adds   r3, #8
str    r3, [sp, #40]
mov    r6, ip
movs   r5, r4
movs   r7, r4
mov    r2, ip
str    r2, [sp, #4]
movs   r3, #0
"""
S8S16_ROW_END = """
ldr    r2, [sp, #32]
adds   r2, #2
str    r2, [sp, #32]                ; out_1 += 2
ldr    r2, [sp, #28]
adds   r2, #2
str    r2, [sp, #28]                ; out_0 += 2
adds   r5, #8                       ; multiplier pointer
adds   r6, #8                       ; shift pointer
ldr    r3, [sp, #8]
ldr    r2, [sp, #36]
lsls   r2, r2, #1
adds   r3, r3, r2
str    r3, [sp, #8]                 ; ip_a0 += 2 * num_col_a
ldr    r3, [sp, #44]
subs   r3, #1
uxth   r3, r3
str    r3, [sp, #44]
cmp    r3, #0
bne    .Lk_rows
"""
S8S16_ODD_SETUP = """
ldr    r3, [sp, #40]
ldr    r2, [r3]       {bias}
movs   r6, r2
movs   r5, r2
movs   r3, #0
"""
S8S16_EXIT = """
ldr    r0, [sp, #28]
ldr    r3, [sp, #24]
adds   r0, r0, r3                   ; out_0 + output_ch
"""


@cache
def _s8s16_blocks():
    b = Block.asm
    return {
        "inner": b(S8S16_INNER, "c_s8s16_inner"),
        "odd": b(S8S16_ODD, "c_s8s16_odd_inner"),
        "row_setup": b(S8S16_ROW_SETUP, "c_s8s16_row_setup"),
        "row_end": b(S8S16_ROW_END, "c_s8s16_row_end"),
        "odd_setup": b(S8S16_ODD_SETUP, "c_s8s16_odd_setup"),
        "exit": b(S8S16_EXIT, "c_s8s16_exit"),
    }


def mat_mult_kernel_s8_s16_c(out_ch: int, cols: int, out_row: int | None = None) -> list:
    """One call of arm_nn_mat_mult_kernel_s8_s16 (pure C) on two im2col columns.
    ``out_row``: bytes between the two columns' outputs (the layer's output channels;
    default ``out_ch``)."""
    from .cmsis_c_common import entry_block, exit_block

    k = _s8s16_blocks()
    ob = out_ch if out_row is None else out_row
    outs = []
    for i, src in enumerate(("r6", "r5", "r7", "r6")):
        outs += requant_out_items(True, src if i < 3 else "r0", "s8s16")
    # outputs: r6 = (column 1, ch 0), r5 = (column 0, ch 1), r7 = (column 1, ch 1),
    # r0 = (column 0, ch 0); column 1's outputs one output row (ob bytes) further
    moves = _out_moves(
        outs,
        [
            {"output": ob},
            {"output": 1 - ob, **qparam_moves(1)},
            {"output": ob},
            {"output": -ob - 1, **qparam_moves(-1)},
        ],
    )
    row = Loop(
        "c_s8s16_rows",
        out_ch // 2,
        [
            k["row_setup"],
            # both filter rows (2 x cols bytes) and both s16 columns (2 x 2 x cols)
            Loop(
                "c_s8s16_cols",
                cols,
                [k["inner"]],
                addr={"weights": Rewind(2), "scratch": Rewind(4)},
            ),
            *outs,
            k["row_end"],
        ],
        addr={
            "weights": Rewind(2 * cols),
            "scratch": Rewind(0),
            "output": Rewind(2),
            **qparam_rules(2),
        },
        moves=moves,
    )
    items = [entry_block("arm_nn_mat_mult_kernel_s8_s16"), row]
    if out_ch % 2:
        items += [
            k["odd_setup"],
            Loop(
                "c_s8s16_odd_cols",
                cols,
                [k["odd"]],
                addr={"weights": Rewind(1), "scratch": Rewind(4)},
            ),
            *requant_out_items(True, "r6", "s8s16"),
            *requant_out_items(True, "r5", "s8s16"),
        ]
    items += [k["exit"], exit_block("arm_nn_mat_mult_kernel_s8_s16")]
    return items


# the odd last im2col column of arm_convolve_s8 (pure C): 1 MAC per step, per channel
LEFT_COL_SETUP = """
ldr    r3, [sp, #40]
ldr    r6, [r3]       {bias}
adds   r3, #4
str    r3, [sp, #40]
ldr    r5, [sp, #84]                ; buffer_a (s16 column)
movs   r3, #0
"""
LEFT_COL_INNER = """
ldrsb  r1, [r4, r3]   {weights}
lsls   r0, r3, #1
ldrsh  r2, [r5, r0]   {scratch}
adds   r3, r3, #1
muls   r2, r1
adds   r6, r6, r2
cmp    r3, r7
bne    .Lleft_col
"""
LEFT_COL_END = """
adds   r4, r4, r7                   ; next filter row
ldr    r3, [sp, #20]
adds   r3, #1
str    r3, [sp, #20]
ldr    r2, [sp, #24]
cmp    r3, r2
blt    .Lleft_ch
"""


@cache
def _left_blocks():
    b = Block.asm
    return (
        b(LEFT_COL_SETUP, "c_left_col_setup"),
        b(LEFT_COL_INNER, "c_left_col_inner"),
        b(LEFT_COL_END, "c_left_col_end"),
    )


def leftover_column_c(out_ch: int, cols: int) -> list:
    setup, inner, end = _left_blocks()
    return [
        Loop(
            "c_left_col_channels",
            out_ch,
            [
                setup,
                Loop(
                    "c_left_col_cols",
                    cols,
                    [inner],
                    addr={"weights": Rewind(1), "scratch": Rewind(2)},
                ),
                *requant_out_items(True, "r6", "left"),
                end,
            ],
            # filter row per channel, the one s16 column re-read, one output byte
            addr={
                "weights": Rewind(cols),
                "scratch": Rewind(0),
                "output": Rewind(1),
                **qparam_rules(1),
            },
        )
    ]


# ---------------------------------------------------------- arm_nn_mat_mult_nt_t_s8
NT_SUM = """
movs   r0, #0
ldrsb  r0, [r3, r0]   {weights}
adds   r1, r1, r0
ldrsb  r0, [r3, r6]   {weights}
adds   r3, r3, #1
adds   r2, r2, r0
cmp    r4, r3
bne    .Lnt_sum
"""
NT_PAIR_SETUP = """
ldr    r0, [sp, #40]                ; lhs_offset
muls   r1, r0
muls   r2, r0
ldr    r0, [sp, #44]
ldr    r3, [r0]       {bias}
adds   r1, r1, r3
ldr    r3, [r0, #4]   {bias}
adds   r2, r2, r3
adds   r0, #8
str    r0, [sp, #44]
str    r1, [sp, #16]
str    r2, [sp, #20]
ldr    r3, [sp, #48]                ; lhs_rows
asrs   r3, r3, #1
str    r3, [sp, #24]
"""
NT_PAIR_HEAD = """
movs   r1, #0
movs   r2, #0
ldr    r3, [sp, #52]                ; rhs
str    r1, [sp, #36]
mov    r8, r2
"""
NT_ROWS_SETUP = """
ldr    r4, [sp, #16]
ldr    r5, [sp, #20]
str    r4, [sp]
movs   r6, r5
ldr    r3, [sp, #52]                ; rhs_ptr
ldr    r2, [sp, #56]
mov    r8, r2                       ; rhs end
"""
NT_INNER = """
movs   r1, #0
movs   r2, #0
ldrsb  r1, [r7, r1]   {input}       ; lhs row 0
ldrsb  r2, [r3, r2]   {weights}     ; rhs row 0
movs   r0, r1
muls   r0, r2
mov    sl, r0
ldr    r0, [sp]                     ; res00 (spilled)
add    r0, sl
str    r0, [sp]
mov    r0, fp
ldrsb  r0, [r7, r0]   {input}       ; lhs row 1
adds   r7, r7, #1
muls   r2, r0
adds   r4, r4, r2
mov    r2, ip
ldrsb  r2, [r3, r2]   {weights}     ; rhs row 1
adds   r3, r3, #1
muls   r1, r2
muls   r2, r0
adds   r5, r5, r1
adds   r6, r6, r2
cmp    r3, r8
bne    .Lnt_inner
"""
NT_ROWS_END = """
ldr    r3, [sp, #28]                ; dst_ptr
ldr    r2, [sp, #32]                ; 2 * rhs_rows
adds   r3, r3, r2
str    r3, [sp, #28]
ldr    r2, [sp, #60]                ; 2 * lhs_cols_offset - rhs_cols
adds   r7, r7, r2
ldr    r3, [sp, #24]
subs   r3, #1
str    r3, [sp, #24]
bne    .Lnt_rows
"""
NT_ODD_ROW_SETUP = """
ldr    r6, [sp, #16]
ldr    r4, [sp, #20]
ldr    r1, [sp, #52]
movs   r3, #0
"""
NT_ODD_ROW = """
movs   r2, #0
movs   r0, #0
ldrsb  r2, [r1, r2]   {weights}
ldrsb  r0, [r7, r0]   {input}
adds   r1, r1, #1
muls   r0, r2
adds   r6, r6, r0
ldrsb  r0, [r1, r5]   {weights}
adds   r7, r7, #1
muls   r2, r0
adds   r4, r4, r2
cmp    r1, r3
bne    .Lnt_odd_row
"""
NT_PAIR_END = """
ldr    r3, [sp, #52]
ldr    r2, [sp, #64]                ; 2 * rhs_cols
adds   r3, r3, r2
str    r3, [sp, #52]                ; rhs += 2 * rhs_cols
ldr    r3, [sp, #68]
adds   r3, #2
str    r3, [sp, #68]                ; dst += 2
adds   r5, #8
adds   r6, #8
ldr    r3, [sp, #72]
subs   r3, #1
str    r3, [sp, #72]
bne    .Lnt_pairs
"""
NT_LAST_SETUP = """
ldr    r3, [sp, #44]
ldr    r0, [r3]       {bias}
ldr    r4, [sp, #52]
movs   r3, #0
"""
NT_LAST = """
ldrsb  r1, [r4, r3]   {input}
ldrsb  r2, [r5, r3]   {weights}
adds   r1, r1, r7
muls   r2, r1
adds   r3, r3, #1
adds   r0, r0, r2
cmp    r3, r6
bne    .Lnt_last
"""
NT_LAST_END = """
ldr    r3, [sp, #76]
adds   r4, r4, r3                   ; next lhs row
ldr    r3, [sp, #80]
subs   r3, #1
str    r3, [sp, #80]
bne    .Lnt_last_rows
"""


@cache
def _nt_blocks():
    b = Block.asm
    return {
        "sum": b(NT_SUM, "c_nt_sum"),
        "pair_setup": b(NT_PAIR_SETUP, "c_nt_pair_setup"),
        "pair_head": b(NT_PAIR_HEAD, "c_nt_pair_head"),
        "rows_setup": b(NT_ROWS_SETUP, "c_nt_rows_setup"),
        "inner": b(NT_INNER, "c_nt_inner"),
        "rows_end": b(NT_ROWS_END, "c_nt_rows_end"),
        "odd_setup": b(NT_ODD_ROW_SETUP, "c_nt_odd_row_setup"),
        "odd": b(NT_ODD_ROW, "c_nt_odd_row"),
        "pair_end": b(NT_PAIR_END, "c_nt_pair_end"),
        "last_setup": b(NT_LAST_SETUP, "c_nt_last_setup"),
        "last": b(NT_LAST, "c_nt_last"),
        "last_end": b(NT_LAST_END, "c_nt_last_end"),
    }


def mat_mult_nt_t_s8_c(
    lhs_rows: int, rhs_rows: int, cols: int, lhs_row_bytes: int | None = None
) -> list:
    """One call of arm_nn_mat_mult_nt_t_s8 (pure C): lhs = pixels, rhs = filters;
    ``lhs_row_bytes``: bytes between lhs rows (lhs_cols_offset, default cols).

    Address rules: per filter pair the weight-sum pass reads both rows (the second
    through [r3, r6], r6 = cols), then every pair of pixels reads the first row again
    (the second row's loads use the same offset register with another value: they fold
    onto the first) and two lhs rows ([r7, r0], r0 = lhs_cols_offset); outputs land per
    pixel one output row (rhs_rows bytes) apart."""
    from .cmsis_c_common import entry_block, exit_block

    k = _nt_blocks()
    lb = cols if lhs_row_bytes is None else lhs_row_bytes
    ob = rhs_rows
    out4 = []
    for src in ("r0", "r4", "r5", "r6"):
        out4 += requant_out_items(True, src, "nt")
    # r0 = (row 0, filter 0), r4 = (row 1, filter 0), r5 = (row 0, filter 1),
    # r6 = (row 1, filter 1)
    moves4 = _out_moves(
        out4,
        [{}, {"output": ob}, {"output": 1 - ob, **qparam_moves(1)}, {"output": ob}],
    )
    odd2 = [*requant_out_items(True, "r6", "nt"), *requant_out_items(True, "r4", "nt")]
    pair_body = [
        k["pair_head"],
        Loop("c_nt_sum", cols, [k["sum"]], regs={"r6": cols}),
        k["pair_setup"],
        Loop(
            "c_nt_row_pairs",
            lhs_rows // 2,
            [
                k["rows_setup"],
                Loop(
                    "c_nt_cols",
                    cols,
                    [k["inner"]],
                    regs={"r0": lb},
                ),
                *out4,
                k["rows_end"],
            ],
            addr={
                "weights": Rewind(0, start=-cols),  # back to the pair's rows after the sums
                "input": Rewind(2 * lb),
                "output": Rewind(2 * ob),
                **qparam_rules(),
            },
            moves=moves4,
        ),
    ]
    if lhs_rows % 2:
        pair_body += [k["odd_setup"], Loop("c_nt_odd_row_cols", cols, [k["odd"]]), *odd2]
    pair_body.append(k["pair_end"])
    items = [
        entry_block("arm_nn_mat_mult_nt_t_s8"),
        Loop(
            "c_nt_filter_pairs",
            rhs_rows // 2,
            pair_body,
            # the odd row's second output (filter 1) is one byte on; [r1, r5] of its
            # loop reads the second filter row (r5 = cols - 1 after the increment)
            addr={
                "weights": Rewind(2 * cols),
                "input": Rewind(0),
                "output": Rewind(2),
                **qparam_rules(2),
            },
            moves=_out_moves(odd2, [{}, {"output": 1, **qparam_moves(1)}]),
            regs={"r5": cols - 1},
        ),
    ]
    if rhs_rows % 2:
        items.append(k["last_setup"])
        items.append(
            Loop(
                "c_nt_last_filter_rows",
                lhs_rows,
                [
                    Loop(
                        "c_nt_last_cols",
                        cols,
                        [k["last"]],
                        addr={"input": Rewind(1), "weights": Rewind(1)},
                    ),
                    *requant_out_items(True, "r0", "nt"),
                    k["last_end"],
                ],
                addr={
                    "weights": Rewind(0),
                    "input": Rewind(lb),
                    "output": Rewind(ob),
                    **qparam_rules(),
                },
            )
        )
    items.append(exit_block("arm_nn_mat_mult_nt_t_s8"))
    return items


# -------------------------------------------------------- arm_nn_vec_mat_mult_t_s8
# rhs_offset == 0: 18 instructions, 3 MACs (one activation, three filter rows)
VM3_INNER = """
mov    r3, fp
ldrsb  r3, [r3, r2]   {input}
ldrsb  r1, [r6, r2]   {weights}
add    r3, sl                       ; + lhs_offset
muls   r1, r3
mov    r8, r1
ldr    r1, [sp, #4]                 ; rhs_ptr_1 (spilled)
add    r0, r8
ldrsb  r1, [r1, r2]   {weights}
muls   r1, r3
mov    r8, r1
ldrsb  r1, [r5, r2]   {weights}
adds   r2, r2, #1
muls   r3, r1
add    r4, r8
adds   r7, r7, r3
cmp    ip, r2
bne    .Lvm3
"""
# rhs_offset != 0 (filter zero point): 34 instructions, 3 MACs
VM3_INNER_WOFS = """
movs   r6, #0
ldrsb  r6, [r1, r6]   {weights}
movs   r3, #0
mov    r9, r6
add    r9, r5                       ; + rhs_offset
mov    r6, r9
ldrsb  r3, [r4, r3]   {input}
adds   r1, r1, #1
add    r3, sl                       ; + lhs_offset
muls   r6, r3
mov    r9, r6
ldr    r6, [sp, #4]                 ; res00 (spilled)
adds   r4, r4, #1
add    r6, r9
str    r6, [sp, #4]
movs   r6, #0
ldrsb  r6, [r2, r6]   {weights}
adds   r2, r2, #1
mov    r9, r6
add    r9, r5
mov    r6, r9
muls   r6, r3
mov    r9, r6
movs   r6, #0
ldrsb  r6, [r0, r6]   {weights}
add    r7, r9
mov    r9, r6
add    r9, r5
mov    r6, r9
muls   r3, r6
adds   r0, r0, #1
add    ip, r3
cmp    r1, r8
bne    .Lvm3o
"""
VM1_INNER = """
ldrsb  r1, [r7, r3]   {input}
ldrsb  r2, [r4, r3]   {weights}
adds   r1, r1, r6
muls   r2, r1
adds   r3, r3, #1
adds   r0, r0, r2
cmp    r5, r3
bne    .Lvm1
"""
VM1_INNER_WOFS = """
ldrsb  r1, [r4, r2]   {input}
ldrsb  r3, [r7, r2]   {weights}
add    r1, r8
adds   r3, r3, r6
muls   r3, r1
adds   r2, r2, #1
adds   r0, r0, r3
cmp    r5, r2
bne    .Lvm1o
"""
VM3_SETUP = """
ldr    r3, [sp, #24]                ; bias
ldr    r0, [r3]       {bias}
ldr    r4, [r3, #4]   {bias}
ldr    r7, [r3, #8]   {bias}
adds   r3, #12
str    r3, [sp, #24]
ldr    r6, [sp, #16]                ; rhs row 0
ldr    r3, [sp, #20]                ; rhs_cols
adds   r2, r6, r3
str    r2, [sp, #4]                 ; rhs row 1
adds   r5, r2, r3                   ; rhs row 2
movs   r2, #0
"""
VM3_END = """
ldr    r3, [sp, #20]
movs   r2, #3
muls   r3, r2
ldr    r2, [sp, #16]
adds   r2, r2, r3
str    r2, [sp, #16]                ; rhs += 3 * rhs_cols
ldr    r3, [sp, #8]
subs   r3, #1
str    r3, [sp, #8]
bne    .Lvm_rows3
"""
VM1_SETUP = """
ldr    r3, [sp, #24]
ldr    r0, [r3]       {bias}
adds   r3, #4
str    r3, [sp, #24]
ldr    r4, [sp, #16]
ldr    r7, [sp, #12]                ; lhs
movs   r3, #0
"""
VM1_END = """
ldr    r3, [sp, #20]
ldr    r2, [sp, #16]
adds   r2, r2, r3
str    r2, [sp, #16]
ldr    r3, [sp, #8]
subs   r3, #1
str    r3, [sp, #8]
bne    .Lvm_rows1
"""


@cache
def _vm_blocks(wofs: bool):
    b = Block.asm
    return {
        "inner3": b(VM3_INNER_WOFS if wofs else VM3_INNER, f"c_vm3_inner{'_wofs' * wofs}"),
        "inner1": b(VM1_INNER_WOFS if wofs else VM1_INNER, f"c_vm1_inner{'_wofs' * wofs}"),
        "setup3": b(VM3_SETUP, "c_vm3_setup"),
        "end3": b(VM3_END, "c_vm3_end"),
        "setup1": b(VM1_SETUP, "c_vm1_setup"),
        "end1": b(VM1_END, "c_vm1_end"),
    }


def vec_mat_mult_t_s8_c(rows: int, cols: int, wofs: bool, per_channel: bool) -> list:
    """One call of arm_nn_vec_mat_mult_t_s8 (or the per-channel variant), pure C."""
    from .cmsis_c_common import entry_block, exit_block

    fn = "arm_nn_vec_mat_mult_t_per_ch_s8" if per_channel else "arm_nn_vec_mat_mult_t_s8"
    k = _vm_blocks(wofs)
    out3 = []
    for src in ("r0", "r4", "r7"):
        out3 += requant_out_items(per_channel, src, "vm")
    step = {"input": Rewind(1), "weights": Rewind(1)}
    return [
        entry_block(fn),
        # 3 filter rows per pass (folded: 3 bytes per column), the input re-read per
        # pass, outputs (and per-channel parameters) 3 per pass
        Loop(
            "c_vm_rows3",
            rows // 3,
            [
                k["setup3"],
                Loop(
                    "c_vm3_cols",
                    cols,
                    [k["inner3"]],
                    addr={"input": Rewind(1), "weights": Rewind(3)},
                ),
                *out3,
                k["end3"],
            ],
            addr={
                "weights": Rewind(3 * cols),
                "input": Rewind(0),
                "output": Rewind(3),
                **qparam_rules(3),
            },
            moves=_out_moves(
                out3, [{}, {"output": 1, **qparam_moves(1)}, {"output": 1, **qparam_moves(1)}]
            ),
        ),
        Loop(
            "c_vm_rows1",
            rows % 3,
            [
                k["setup1"],
                Loop("c_vm1_cols", cols, [k["inner1"]], addr=step),
                *requant_out_items(per_channel, "r0", "vm"),
                k["end1"],
            ],
            addr={
                "weights": Rewind(cols),
                "input": Rewind(0),
                "output": Rewind(1),
                **qparam_rules(1),
            },
        ),
        exit_block(fn),
    ]
