"""The CMSIS-NN matrix kernels shared by conv, 1x1 conv and fully connected (DSP path).

- ``arm_nn_mat_mult_kernel_s8_s16``: 2 output channels x 2 im2col columns (s16), 4 columns
  of the reduction per step with SMLAD; leftover reduction columns and an odd channel.
- ``arm_nn_mat_mult_nt_t_s8`` (DSP branch): int8 x int8 with the input offset folded into
  sum(w) * offset; 2 out-channels x 2 rows, 16/4/1 reduction columns per step.
- ``arm_nn_vec_mat_mult_t_s8`` (DSP branch, rhs_offset == 0 or not): 2 rows per pass, 4
  columns per step, unrolled 4x by ``#pragma GCC optimize("unroll-loops")``.
"""

from __future__ import annotations

from functools import cache

from mcusim.isa.schedule import Block, Loop, Rewind

from .common import gcc_out_block, gcc_requant_text, qparam_rules

# ----------------------------------------------------------------- mat_mult_kernel_s8_s16
# GCC 12 -O2 -mcpu=cortex-m4 (instruction order as compiled, docs/firmware.md section 6):
# 26 instructions per 16 MACs; the ROR of read_and_pad_reordered is not folded (C ROR +
# SXTB16 intrinsic) and the second weight row's pointer lives on the stack (LDR, post-
# incremented LDR through it, STR back). GCC for cortex-m7 orders the same instructions
# differently (20 instead of 18 cycles on the M7 model): schedules are per ISA family.
S8S16_INNER = """
ldr    r4, [sp, #4]                  ; ip_a1 (spilled)
ldr    r0, [r9], #4     {weights}   ; 4 weights, channel n
ldr    r1, [r4], #4     {weights}   ; 4 weights, channel n+1
str    r4, [sp, #4]
ror    r5, r0, #8
ror    r4, r1, #8
ldr    r8, [r2]         {scratch}   ; column 0: 2 x s16
ldr    lr, [r3]         {scratch}   ; column 1: 2 x s16
sxtb16 r0, r0                        ; a01
sxtb16 r5, r5                        ; a02
sxtb16 r1, r1                        ; a11
sxtb16 r4, r4                        ; a12
smlad  r10, r0, r8, r10
smlad  r11, r0, lr, r11
smlad  fp, r1, r8, fp
smlad  r6, r1, lr, r6
ldr    r0, [r2, #4]     {scratch}
ldr    r1, [r3, #4]     {scratch}
adds   r2, #8
adds   r3, #8
smlad  r10, r5, r0, r10
smlad  r11, r5, r1, r11
smlad  fp, r4, r0, fp
smlad  r6, r4, r1, r6
subs   ip, ip, #1
bne    .Lk_inner
"""

S8S16_LEFT = """
ldrsb  r4, [r0], #1     {weights}
ldrsh  r6, [r2], #2     {scratch}
ldrsb  r5, [r1], #1     {weights}
ldrsh  r7, [r3], #2     {scratch}
mla    r8, r4, r6, r8
mla    r9, r4, r7, r9
mla    r10, r5, r6, r10
mla    r11, r5, r7, r11
subs   ip, #1
bne    .Lk_left
"""

S8S16_ROW_SETUP = """
ldr    r2, [sp, #8]                  ; input_b
ldr    r3, [sp, #12]                 ; aligned_num_col_a
add    r3, r2, r3, lsl #1            ; ip_b1
ldr    ip, [sp, #16]                 ; num_col_a
add    r1, r0, ip                    ; ip_a1
ldr    r8, [r5], #4     {bias}
mov    r9, r8
ldr    r10, [r5], #4    {bias}
mov    r11, r10
lsrs   ip, ip, #2
str    ip, [sp, #4]
beq    .Lk_nocols
"""

S8S16_ROW_MID = """
ldr    ip, [sp, #16]
ands   ip, ip, #3                     ; leftover columns
beq    .Lk_noleft
"""

S8S16_ROW_END = """
ldr    ip, [sp, #16]
add    r0, r0, ip                    ; skip the second row of A
ldr    ip, [sp, #20]                 ; row_count
subs   ip, #1
str    ip, [sp, #20]
bne    .Lk_rows
"""

S8S16_ODD_INNER = """
ldr    r4, [r0], #4     {weights}
ldr    r6, [r2]         {scratch}
ldr    r7, [r3]         {scratch}
mov    lr, r4, ror #8
sxtb16 r4, r4
sxtb16 lr, lr
smlad  r8, r4, r6, r8
smlad  r9, r4, r7, r9
ldr    r6, [r2, #4]     {scratch}
ldr    r7, [r3, #4]     {scratch}
adds   r2, #8
adds   r3, #8
smlad  r8, lr, r6, r8
smlad  r9, lr, r7, r9
subs   ip, #1
bne    .Lk_odd
"""

S8S16_ODD_LEFT = """
ldrsb  r4, [r0], #1     {weights}
ldrsh  r6, [r2], #2     {scratch}
ldrsh  r7, [r3], #2     {scratch}
mla    r8, r4, r6, r8
mla    r9, r4, r7, r9
subs   ip, #1
bne    .Lk_oddleft
"""

S8S16_ENTRY = """
push   {r4, r5, r6, r7, r8, r9, r10, r11, lr}
sub    sp, #28
ldr    r5, [sp, #76]                 ; bias
ldr    r6, [sp, #64]                 ; out_shift
ldr    r7, [sp, #68]                 ; out_mult
lsrs   ip, r2, #1
str    ip, [sp, #20]
beq    .Lk_norows
"""

S8S16_EXIT = """
add    sp, #28
pop    {r4, r5, r6, r7, r8, r9, r10, r11, pc}
"""


@cache
def _s8s16_blocks():
    b = Block.asm
    return {
        "entry": b(S8S16_ENTRY, "s8s16_entry"),
        "row_setup": b(S8S16_ROW_SETUP, "s8s16_row_setup"),
        "inner": b(S8S16_INNER, "s8s16_inner"),
        "row_mid": b(S8S16_ROW_MID, "s8s16_row_mid"),
        "left": b(S8S16_LEFT, "s8s16_left"),
        "row_end": b(S8S16_ROW_END, "s8s16_row_end"),
        "odd_inner": b(S8S16_ODD_INNER, "s8s16_odd_inner"),
        "odd_left": b(S8S16_ODD_LEFT, "s8s16_odd_left"),
        "exit": b(S8S16_EXIT, "s8s16_exit"),
        "call": b("bl arm_nn_mat_mult_kernel_s8_s16", "s8s16_call"),
    }


def s8s16_outputs(out_row: int) -> dict:
    """Output pointer moves around the four stores of a row pair: r8 -> (pixel 0, ch n),
    r9 -> (pixel 1, ch n), r10 -> (pixel 0, ch n+1), r11 -> (pixel 1, ch n+1), pixel 1's
    outputs ``out_row`` bytes after pixel 0's (out_0 / out_1 in CMSIS-NN)."""
    out4 = [gcc_out_block(r) for r in ("r8", "r9", "r10", "r11")]
    return {
        out4[1]: {"output": out_row - 1},
        out4[2]: {"output": -out_row},
        out4[3]: {"output": out_row - 1},
        _s8s16_blocks()["row_end"]: {"output": -out_row},
    }


def s8s16_odd_channel_moves(out_ch: int, out_row: int) -> dict:
    """Moves for the odd last channel of a call (items directly in the caller's loop)."""
    return {gcc_out_block("r9"): {"output": out_row - 1}} if out_ch % 2 else {}


def mat_mult_kernel_s8_s16(out_ch: int, num_col: int, out_row: int | None = None) -> list:
    """One call: 2 im2col columns against ``out_ch`` filters of ``num_col`` weights; the
    second column's outputs ``out_row`` bytes after the first's (default ``out_ch``)."""
    k = _s8s16_blocks()
    out4 = [gcc_out_block(r) for r in ("r8", "r9", "r10", "r11")]
    row = Loop(
        "s8s16_rows",
        out_ch // 2,
        # both columns re-read per row pair; the channel pair's multipliers and shifts
        addr={"scratch": Rewind(0), **qparam_rules(2)},
        moves=s8s16_outputs(out_ch if out_row is None else out_row),
        body=[
            k["row_setup"],
            Loop("s8s16_cols4", num_col // 4, [k["inner"]]),
            k["row_mid"],
            Loop("s8s16_cols_left", num_col % 4, [k["left"]]),
            *out4,
            k["row_end"],
        ],
    )
    items: list = [k["call"], k["entry"], row]
    if out_ch % 2:
        items += [
            k["row_setup"],
            Loop("s8s16_odd_cols4", num_col // 4, [k["odd_inner"]]),
            k["row_mid"],
            Loop("s8s16_odd_left", num_col % 4, [k["odd_left"]]),
            out4[0],
            out4[1],
        ]
    items.append(k["exit"])
    return items


# Leftover single column of arm_convolve_s8 / arm_convolve_1x1_s8_fast (inline in caller):
# one filter at a time against one s16 column.
COL1_INNER = """
ldr    r4, [r0], #4     {weights}
mov    r5, r4, ror #8
sxtb16 r4, r4
sxtb16 r5, r5
ldr    r6, [r2], #4     {scratch}
smlad  r8, r4, r6, r8
ldr    r7, [r2], #4     {scratch}
smlad  r8, r5, r7, r8
subs   ip, #1
bne    .Lc1_inner
"""
COL1_LEFT = """
ldrsb  r4, [r0], #1     {weights}
ldrsh  r6, [r2], #2     {scratch}
mla    r8, r4, r6, r8
subs   ip, #1
bne    .Lc1_left
"""
COL1_SETUP = """
ldr    r8, [r5], #4     {bias}
ldr    r2, [sp, #8]                  ; buffer_a
ldr    ip, [sp, #16]
lsrs   ip, ip, #2
beq    .Lc1_nocols
"""
COL1_END = """
ldr    ip, [sp, #24]
subs   ip, #1
str    ip, [sp, #24]
bne    .Lc1_rows
"""


@cache
def _col1_blocks():
    b = Block.asm
    return (
        b(COL1_SETUP, "col1_setup"),
        b(COL1_INNER, "col1_inner"),
        b(COL1_LEFT, "col1_left"),
        b(COL1_END, "col1_end"),
    )


def leftover_column(out_ch: int, num_col: int) -> list:
    setup, inner, left, end = _col1_blocks()
    return [
        Loop(
            "leftover_col_rows",
            out_ch,
            addr={"scratch": Rewind(0)},  # the single column is re-read per filter
            body=[
                setup,
                Loop("leftover_col_cols4", num_col // 4, [inner]),
                Loop("leftover_col_left", num_col % 4, [left]),
                gcc_out_block("r8"),
                end,
            ],
        )
    ]


# ------------------------------------------------------------------------ mat_mult_nt_t_s8
# One 4-column step for 2 rows x 2 out-channels (16 MACs); SXTB16_RORn is inline asm, so
# the rotation is folded into SXTB16.
NT_CHUNK = """
ldr    r4, [r1], #4     {weights}   ; rhs row 0
sxtb16 r5, r4
ldr    r6, [r0], #4     {input}     ; lhs row 0
sxtb16 r7, r6
ldr    ip, [r1, r2]     {weights}   ; rhs row 1 (rhs_off0)
sxtb16 r4, r4, ror #8
sxtb16 r6, r6, ror #8
smlad  r8, r7, r5, r8
sxtb16 lr, ip
smlad  r8, r6, r4, r8
sxtb16 ip, ip, ror #8
smlad  r9, r7, lr, r9
smlad  r9, r6, ip, r9
ldr    r6, [r0, r3]     {input}     ; lhs row 1 (lhs_off0)
sxtb16 r7, r6
sxtb16 r6, r6, ror #8
smlad  r10, r7, r5, r10
smlad  r11, r7, lr, r11
smlad  r10, r6, r4, r10
smlad  r11, r6, ip, r11
"""
NT_LOOP_END = """
ldr    r5, [sp, #12]                 ; rhs_cols_idx
adds   r5, #{step}
str    r5, [sp, #12]
ldr    r4, [sp, #16]                 ; rhs_cols - {step}
cmp    r5, r4
ble    .Lnt_{step}
"""
NT_SCALAR = """
ldrsb  r4, [r1]         {weights}
ldrsb  r5, [r1, r2]     {weights}
ldrsb  r6, [r0]         {input}
ldrsb  r7, [r0, r3]     {input}
mla    r8, r6, r4, r8
mla    r9, r6, r5, r9
mla    r10, r7, r4, r10
mla    r11, r7, r5, r11
adds   r1, #1
adds   r0, #1
ldr    r5, [sp, #12]
adds   r5, #1
str    r5, [sp, #12]
cmp    r5, lr
blt    .Lnt_1
"""
NT_ODDROW_CHUNK = """
ldr    r4, [r1], #4     {weights}
ldr    r5, [r1, r2]     {weights}
ldr    r6, [r0], #4     {input}
sxtb16 r7, r4
sxtb16 ip, r6
sxtb16 lr, r5
sxtb16 r4, r4, ror #8
sxtb16 r6, r6, ror #8
sxtb16 r5, r5, ror #8
smlad  r8, ip, r7, r8
smlad  r8, r6, r4, r8
smlad  r9, ip, lr, r9
smlad  r9, r6, r5, r9
"""
NT_ODDROW_SCALAR = """
ldrsb  r4, [r1]         {weights}
ldrsb  r5, [r1, r2]     {weights}
ldrsb  r6, [r0], #1     {input}
adds   r1, #1
mla    r8, r6, r4, r8
mla    r9, r6, r5, r9
subs   ip, #1
bne    .Lnt_odd1
"""
NT_WSUM = """
ldrsb  r4, [r1], #1     {weights}
ldrsb  r5, [r1, r2]     {weights}
add    r8, r4
add    r9, r5
subs   ip, #1
bne    .Lnt_wsum
"""
NT_PAIR_SETUP = """
ldr    r0, [sp, #32]                 ; lhs
ldr    r1, [sp, #36]                 ; rhs
ldr    r2, [sp, #40]                 ; rhs_cols
movs   r8, #0
movs   r9, #0
mov    ip, r2
"""
NT_PAIR_OFFS = """
ldr    r3, [sp, #44]                 ; lhs_offset
mul    r8, r8, r3
mul    r9, r9, r3
ldr    r4, [r5], #4     {bias}
add    r8, r4
ldr    r4, [r5], #4     {bias}
add    r9, r4
strd   r8, r9, [sp, #48]
ldr    ip, [sp, #52]                 ; lhs_rows
lsrs   ip, ip, #1
str    ip, [sp, #20]
beq    .Lnt_nopairs
"""
NT_ROW_SETUP = """
ldr    r1, [sp, #36]
ldrd   r8, r9, [sp, #48]
mov    r10, r8
mov    r11, r9
movs   r5, #0
str    r5, [sp, #12]
ldr    r4, [sp, #16]
cmp    r4, #0
blt    .Lnt_no16
"""
# End of a row pair as GCC 12 -O2 -mcpu=cortex-m4 compiles CMSIS-NN's loop tail (13
# instructions, checked against arm-none-eabi-gcc 12.2 output of arm_nn_mat_mult_nt_t_s8.c):
# both dst pointers (the two rows' outputs, still in registers after their stores) step
# by 2 * rhs_rows and go back to the stack; `lhs_ptr -= rhs_cols; lhs_ptr += 2 *
# lhs_cols_offset` is one add of a constant GCC precomputes in the prologue; the row-pair
# count lives on the stack.
NT_ROW_END = """
ldr    r2, [sp, #64]                 ; 2 * rhs_rows: output step of a row pair
mov    r3, r7                        ; dst of the second row (live after its stores)
add    r3, r2
mov    r1, r4                        ; dst of the first row
add    r1, r2
str    r3, [sp, #4]
ldr    r3, [sp, #20]                 ; row pairs left
str    r1, [sp, #16]
ldr    r1, [sp, #28]                 ; 2 * lhs_cols_offset - rhs_cols (precomputed)
subs   r3, #1
add    r0, r1                        ; next pair of lhs rows
str    r3, [sp, #20]
bne    .Lnt_rows
"""
NT_PAIR_END = """
ldr    r4, [sp, #40]
ldr    r1, [sp, #36]
add    r1, r1, r4, lsl #1
str    r1, [sp, #36]
ldr    r4, [sp, #56]
adds   r4, #2
str    r4, [sp, #56]
ldr    ip, [sp, #60]
cmp    r4, ip
ble    .Lnt_pairs
"""
NT_ODDCH_SCALAR = """
ldrsb  r4, [r1], #1     {weights}
ldrsb  r6, [r0], #1     {input}
add    r6, r6, r3
mla    r8, r6, r4, r8
subs   ip, #1
bne    .Lnt_oddch1
"""
NT_ODDCH_SETUP = """
ldr    r8, [r5]         {bias}
ldr    r1, [sp, #36]
ldr    ip, [sp, #40]
"""
NT_ODDCH_END = """
ldr    r4, [sp, #28]
subs   r0, r0, lr
add    r0, r0, r4
ldr    ip, [sp, #24]
subs   ip, #1
str    ip, [sp, #24]
bne    .Lnt_oddrows
"""
NT_ENTRY = """
push   {r4, r5, r6, r7, r8, r9, r10, r11, lr}
sub    sp, #68
ldr    r5, [sp, #108]                ; bias
ldr    r6, [sp, #116]                ; dst_shifts
ldr    r7, [sp, #112]                ; dst_multipliers
"""
NT_EXIT = """
add    sp, #68
pop    {r4, r5, r6, r7, r8, r9, r10, r11, pc}
"""


@cache
def _nt_blocks():
    b = Block.asm
    return {
        "call": b("bl arm_nn_mat_mult_nt_t_s8", "nt_call"),
        "entry": b(NT_ENTRY, "nt_entry"),
        "exit": b(NT_EXIT, "nt_exit"),
        "pair_setup": b(NT_PAIR_SETUP, "nt_pair_setup"),
        "wsum": b(NT_WSUM, "nt_wsum"),
        "pair_offs": b(NT_PAIR_OFFS, "nt_pair_offs"),
        "row_setup": b(NT_ROW_SETUP, "nt_row_setup"),
        "c16": b(NT_CHUNK * 4 + NT_LOOP_END.format(step=16), "nt_cols16"),
        "c4": b(NT_CHUNK + NT_LOOP_END.format(step=4), "nt_cols4"),
        "c1": b(NT_SCALAR, "nt_cols1"),
        "row_end": b(NT_ROW_END, "nt_row_end"),
        "odd16": b(NT_ODDROW_CHUNK * 4 + NT_LOOP_END.format(step=16), "nt_odd16"),
        "odd4": b(NT_ODDROW_CHUNK + NT_LOOP_END.format(step=4), "nt_odd4"),
        "odd1": b(NT_ODDROW_SCALAR, "nt_odd1"),
        "pair_end": b(NT_PAIR_END, "nt_pair_end"),
        "oddch_setup": b(NT_ODDCH_SETUP, "nt_oddch_setup"),
        "oddch1": b(NT_ODDCH_SCALAR, "nt_oddch1"),
        "oddch_end": b(NT_ODDCH_END, "nt_oddch_end"),
    }


def mat_mult_nt_t_s8(
    lhs_rows: int, rhs_rows: int, rhs_cols: int, lhs_row_bytes: int | None = None
) -> list:
    """One call of arm_nn_mat_mult_nt_t_s8 (DSP branch): lhs_rows pixels x rhs_rows
    filters of rhs_cols int8 weights; lhs rows ``lhs_row_bytes`` apart (lhs_cols_offset,
    default rhs_cols). Address rules: each channel pair reads its two filter rows once for
    the weight sums and again per pair of lhs rows; every channel pair re-reads all lhs
    rows; outputs of a row pair land 2 rows apart (NHWC, out channels innermost)."""
    k = _nt_blocks()
    kb = rhs_cols
    lb = rhs_cols if lhs_row_bytes is None else lhs_row_bytes
    # register offsets of the second row (rhs_off0 / lhs_off0): read after a post-increment
    # of 4 (word steps: rhs_cols - 4), of 1 (weight sums) or of 0 (scalar steps)
    regs = {"r2": kb, "r3": lb}
    word_regs = {"r2": kb - 4, "r3": lb - 4}
    # GCC loads a channel's multiplier/shift once for both rows' outputs (res00/res10 and
    # res01/res11) through pointers kept on the stack; the output offset and act_min stay
    # in a register across the second row's clamps
    out = [
        gcc_out_block("r8", "stack"),
        gcc_out_block("r9", "stack"),
        gcc_out_block("r10", "none", reload_clamp=False),
        gcc_out_block("r11", "none", reload_clamp=False),
    ]
    n16 = rhs_cols // 16
    n4 = (rhs_cols % 16) // 4
    n1 = rhs_cols % 4
    pair_rows = Loop(
        "nt_row_pairs",
        lhs_rows // 2,
        addr={
            "weights": Rewind(0, start=-kb),  # back to the pair's rows after the sums
            "input": Rewind(2 * lb),
            "output": Rewind(2 * rhs_rows),
            **qparam_rules(),
        },
        # the second lhs row's two outputs go one output row further
        moves={out[2]: {"output": rhs_rows - 2}},
        body=[
            k["row_setup"],
            Loop("nt_cols16", n16, [k["c16"]], regs=word_regs),
            Loop("nt_cols4", n4, [k["c4"]], regs=word_regs),
            Loop("nt_cols1", n1, [k["c1"]]),
            *out,
            k["row_end"],
        ],
    )
    odd_row: list = []
    if lhs_rows % 2:
        odd_row = [
            k["row_setup"],
            Loop("nt_odd16", n16, [k["odd16"]], regs=word_regs),
            Loop("nt_odd4", n4, [k["odd4"]], regs=word_regs),
            Loop("nt_odd1", n1, [k["odd1"]]),
            out[0],
            out[1],
        ]
    pairs = Loop(
        "nt_ch_pairs",
        rhs_rows // 2,
        addr={
            "weights": Rewind(2 * kb),
            "input": Rewind(0),
            "output": Rewind(2),
            **qparam_rules(2),
        },
        regs=regs,
        body=[
            k["pair_setup"],
            Loop("nt_wsum", rhs_cols, [k["wsum"]], regs={"r2": kb - 1}),
            k["pair_offs"],
            pair_rows,
            *odd_row,
            k["pair_end"],
        ],
    )
    items: list = [k["call"], k["entry"], pairs]
    if rhs_rows % 2:
        items += [
            Loop(
                "nt_oddch_rows",
                lhs_rows,
                addr={
                    "weights": Rewind(0),
                    "input": Rewind(lb),
                    "output": Rewind(rhs_rows),
                    **qparam_rules(),
                },
                regs=regs,
                body=[
                    k["oddch_setup"],
                    Loop("nt_oddch_cols", rhs_cols, [k["oddch1"]]),
                    out[0],
                    k["oddch_end"],
                ],
            )
        ]
    items.append(k["exit"])
    return items


# ----------------------------------------------------------------------- vec_mat_mult_t_s8
# GCC 12 -O2 rendering of the DSP branch (docs/firmware.md section 6): the 4-column step
# unrolled 4x copies each row pointer into a scratch register for its first, post-indexed
# load (MOV then LDR through it: an address dependency) and addresses the other three words
# at immediate offsets, adding 16 to the three pointers at the end. Address model: both
# rows share the weights pointer, their words interleaved (row 0 at +0, +8, ..., row 1 at
# +4, +12, ...), which reads the same bytes per step as the two rows do.
VM_X4 = """
mov     r8, r4
ldr     r5, [r8]        {input}     ; lhs[0..3]
sxtab16 sl, fp, r5, ror #8          ; odd bytes + lhs offset pair
mov     lr, r1
sxtab16 r7, fp, r5                  ; even bytes
ldr     sb, [lr]        {weights}   ; row 0
sxtb16  ip, sb, ror #8
sxtb16  r5, sb
smlad   r2, ip, sl, r2
smlad   r5, r5, r7, r2
mov     ip, r0
ldr     r2, [ip, #4]    {weights}   ; row 1
sxtb16  sb, r2, ror #8
sxtb16  r2, r2
smlad   r3, sb, sl, r3
smlad   r2, r2, r7, r3
ldr     r7, [r4, #4]    {input}
sxtab16 sb, fp, r7, ror #8
ldr     r3, [r1, #8]    {weights}
sxtab16 r7, fp, r7
sxtb16  sl, r3, ror #8
sxtb16  r3, r3
smlad   r5, sl, sb, r5
smlad   r3, r3, r7, r5
ldr     sl, [r0, #12]   {weights}
sxtb16  r5, sl, ror #8
sxtb16  sl, sl
smlad   r2, r5, sb, r2
smlad   sb, sl, r7, r2
ldr     r7, [r8, #8]    {input}
sxtab16 r5, fp, r7, ror #8
ldr     r8, [lr, #16]   {weights}
sxtab16 sl, fp, r7
sxtb16  r2, r8, ror #8
sxtb16  r7, r8
smlad   r3, r2, r5, r3
smlad   r8, r7, sl, r3
ldr     lr, [ip, #20]   {weights}
sxtb16  r7, lr, ror #8
sxtb16  ip, lr
smlad   sb, r7, r5, sb
smlad   r5, ip, sl, sb
ldr     r2, [r4, #12]   {input}
adds    r4, #16
sxtab16 sl, fp, r2, ror #8
ldr     r3, [r1, #24]   {weights}
sxtab16 r7, fp, r2
adds    r1, #16
sxtb16  lr, r3, ror #8
sxtb16  ip, r3
smlad   r2, lr, sl, r8
smlad   r2, ip, r7, r2
ldr     r3, [r0, #12]   {weights}   ; +28 (the shared pointer moved 16 already)
adds    r0, #16
sxtb16  lr, r3, ror #8
sxtb16  r8, r3
smlad   sb, lr, sl, r5
smlad   r3, r8, r7, sb
subs    r6, #4
bne     .Lvm_x4
"""
# one 4-column step (the col_loop_cnt % 4 steps GCC peels before the unrolled loop)
VM_CHUNK_W0 = """
ldr     r5, [r4], #4    {input}
sxtab16 sl, fp, r5, ror #8
sxtab16 r7, fp, r5
ldr     sb, [r1], #4    {weights}
sxtb16  ip, sb, ror #8
sxtb16  sb, sb
smlad   r2, ip, sl, r2
smlad   r2, sb, r7, r2
ldr     sb, [r0], #4    {weights}
sxtb16  ip, sb, ror #8
sxtb16  sb, sb
smlad   r3, ip, sl, r3
smlad   r3, sb, r7, r3
subs    r5, #1
bne     .Lvm_cols
"""


def _woff(text: str) -> str:
    """rhs_offset != 0: the weights get the filter offset pair (in r9) with SXTAB16."""
    out = []
    for line in text.splitlines():
        if line.startswith("sxtb16"):
            op = line.split(None, 1)[1]
            dst, rest = op.split(",", 1)
            line = f"sxtab16 {dst}, r9,{rest}"
        out.append(line)
    return "\n".join(out) + "\n"


VM_ODD_X4 = """
mov     r8, r4
ldr     r5, [r8]        {input}
sxtab16 sl, fp, r5, ror #8
mov     lr, r1
sxtab16 r7, fp, r5
ldr     sb, [lr]        {weights}
sxtb16  ip, sb, ror #8
sxtb16  r5, sb
smlad   r2, ip, sl, r2
smlad   r2, r5, r7, r2
ldr     r7, [r4, #4]    {input}
sxtab16 sb, fp, r7, ror #8
ldr     r3, [r1, #4]    {weights}
sxtab16 r7, fp, r7
sxtb16  sl, r3, ror #8
sxtb16  r3, r3
smlad   r2, sl, sb, r2
smlad   r2, r3, r7, r2
ldr     r7, [r8, #8]    {input}
sxtab16 r5, fp, r7, ror #8
ldr     r8, [lr, #8]    {weights}
sxtab16 sl, fp, r7
sxtb16  r3, r8, ror #8
sxtb16  r7, r8
smlad   r2, r3, r5, r2
smlad   r2, r7, sl, r2
ldr     r3, [r4, #12]   {input}
adds    r4, #16
sxtab16 sl, fp, r3, ror #8
ldr     r5, [r1, #12]   {weights}
sxtab16 r7, fp, r3
adds    r1, #16
sxtb16  lr, r5, ror #8
sxtb16  ip, r5
smlad   r2, lr, sl, r2
smlad   r2, ip, r7, r2
subs    r6, #4
bne     .Lvm_odd_x4
"""
VM_ODD_CHUNK = """
ldr     r5, [r4], #4    {input}
sxtab16 sl, fp, r5, ror #8
sxtab16 r7, fp, r5
ldr     sb, [r1], #4    {weights}
sxtb16  ip, sb, ror #8
sxtb16  sb, sb
smlad   r2, ip, sl, r2
smlad   r2, sb, r7, r2
subs    r5, #1
bne     .Lvm_oddcols
"""
VM_SCALAR = """
ldrsb   r5, [r4], #1    {input}
ldrsb   r7, [r1], #1    {weights}
ldrsb   ip, [r0], #1    {weights}
add     r5, r5, r10
mla     r2, r5, r7, r2
mla     r3, r5, ip, r3
subs    r6, #1
bne     .Lvm_scalar
"""
VM_ODD_SCALAR = """
ldrsb   r5, [r4], #1    {input}
ldrsb   r7, [r1], #1    {weights}
add     r5, r5, r10
mla     r2, r5, r7, r2
subs    r6, #1
bne     .Lvm_oddscalar
"""
# per row pair: both biases, the row pointers, the peeled-step test (taken when the number
# of 4-column steps is a multiple of 4), then the unrolled loop's entry spills
VM_ROW_SETUP = """
ldr     r2, [r0], #8    {bias}
ldr     r3, [r0, #-4]   {bias}
str     r0, [sp, #8]
ldr     r4, [sp, #4]
ldr     r7, [sp, #148]
adds    r5, r1, r4
str     r5, [sp, #20]
ldr     r5, [sp, #36]
ldr     r4, [sp, #12]
adds    r0, r1, r7
cmp     r5, #0
beq     .Lvm_nocols
mov     r6, r5
subs    r7, r5, #1
ands    r5, r5, #3
beq     .Lvm_x4_entry{taken}
"""
VM_X4_ENTRY = """
strd    sb, sl, [sp, #44]
str     ip, [sp, #132]
"""
VM_ROW_MID = """
ldrd    sb, sl, [sp, #44]
ldr     ip, [sp, #132]
ldr     r1, [sp, #148]
ldr     r4, [sp, #52]
add     r0, sl, r1
mov     r1, sl
ldr     r5, [sp, #148]
ldr     r6, [sp, #40]
cmp     r5, r6
ble     .Lvm_noscalar{taken}
"""
# both outputs of a row pair (per-tensor multiplier and shift; max(shift, 0), the
# remainder mask and the threshold hoisted to the stack by GCC); the rounding divide of
# the two values is interleaved, the clamps share the reloaded limits. The divide branches
# on the sign of the first value (BMI: a negative one rounds against threshold + 1), so a
# pair costs what its data takes: VM_PAIR_POS falls through, VM_PAIR_NEG is branched to.
VM_PAIR_HEAD = """
ldr     r4, [sp, #24]                ; max(shift, 0)
ldr     r7, [sp, #140]               ; multiplier
ldr     r5, [sp, #144]               ; shift
lsls    r2, r4
mov     r1, #0x40000000
movs    r0, #0
smlal   r1, r0, r2, r7
lsrs    r2, r1, #31
cmp     r5, #0
orr     r2, r2, r0, lsl #1
ble     .Lvm_right {taken}
ldr     r5, [sp, #68]                ; remainder mask
ldr     r6, [sp, #64]                ; right shift
and     r8, r2, r5
asrs    r2, r6
mov     r1, #0x40000000
mov     r4, #0
"""
# the second row's high multiply (its left shift is 0 on this path) and both roundings
_VM_PAIR_SECOND = """
ldr     r7, [sp, #140]
smlal   r1, r4, r7, r3
lsrs    r3, r1, #31
orr     r7, r3, r4, lsl #1
ldr     r4, [sp, #60]                ; threshold
and     r1, r5, r7
asrs    r7, r6
{neg}cmp     r8, r4
ldr     r0, [sp, #60]
it      gt
addgt   r2, #1
cmp     r7, #0
it      lt
addlt   r0, #1
cmp     r0, r1
it      lt
addlt   r7, #1
"""
VM_PAIR_POS = "bmi     .Lvm_neg\n" + _VM_PAIR_SECOND.format(neg="") + "b       .Lvm_clamp\n"
VM_PAIR_NEG = "bmi     .Lvm_neg {taken}\n" + _VM_PAIR_SECOND.format(
    neg="adds    r4, #1                       ; first value < 0: threshold + 1\n"
)
VM_PAIR_CLAMP = """
ldr     r8, [sp, #136]               ; out_offset
ldr     r1, [sp, #156]               ; act_min
ldr     r6, [sp, #160]               ; act_max
ldr     r0, [sp, #164]
ldr     r3, [sp, #28]
ldr     r5, [sp, #32]
ldr     r4, [sp, #4]
add     r2, r8
add     r7, r8
cmp     r2, r1
it      lt
movlt   r2, r1
cmp     r7, r1
it      lt
movlt   r7, r1
cmp     r2, r6
it      ge
movge   r2, r6
cmp     r7, r6
it      ge
movge   r7, r6
strb    r2, [r11], #1   {output}
strb    r7, [r11], #1   {output}
"""
VM_PAIR_OUT = VM_PAIR_HEAD + VM_PAIR_POS + VM_PAIR_CLAMP
VM_PAIR_OUT_NEG = VM_PAIR_HEAD + VM_PAIR_NEG + VM_PAIR_CLAMP
VM_ROW_END = """
ldr     r7, [sp, #16]
adds    r7, #1
cmp     r3, r7
str     r7, [sp, #16]
add     sb, r5
add     sl, r4
ble     .Lvm_done
ldr     r0, [sp, #8]
ldr     r1, [sp, #20]
cmp     r0, #0
bne     .Lvm_rows
"""
VM_ODD_OUT = gcc_requant_text("r2", "pt")
# Entry and exit as GCC 12.2 -O2 -mcpu=cortex-m4 compiles CMSIS-NN's
# arm_nn_vec_mat_mult_t_s8 (the prologue's 21 instructions up to the rhs_rows < 2 test,
# then 43 that set up the row-pair loop: the offset pairs, max(+-shift, 0), the remainder
# mask and threshold, row strides, all kept on the stack; after the pairs 13 that set up
# the odd row and test for it; the return value and the epilogue).
VM_ENTRY = """
push    {r4, r5, r6, r7, r8, r9, r10, r11, lr}
sub     sp, #100
str     r3, [sp, #20]
ldr     r3, [sp, #176]               ; rhs_rows
ldr     fp, [sp, #136]
ldr     r5, [sp, #160]
str     r0, [sp, #16]
str     r1, [sp, #40]
cmp     r3, #0
beq     .Lvm_ret
ldr     sl, [sp, #140]               ; lhs_offset
ldr     ip, [sp, #176]
add     r3, r5, r5, lsr #31
asrs    r4, r3, #1
cmp     r5, #1
sxth    r7, sl
sxth    r0, ip
str     r4, [sp, #52]
pkhbt   r6, r7, r7, lsl #16          ; lhs offset pair
pkhbt   r8, r0, r0, lsl #16
ble     .Lvm_odd_only{taken}
"""
VM_PAIRS_SETUP = """
ldr     r2, [sp, #156]
ldr     r3, [sp, #152]               ; dst_shift
ldr     sl, [sp, #152]
str     r6, [sp, #4]
cmp     r2, #0
rsb     r1, r3, #0
it      lt
addlt   r2, #3
movs    r4, #1
lsls    r4, r1
asrs    r0, r2, #2
bic     r7, r2, #3
sub     r9, r4, #1                   ; remainder mask
ldr     r2, [sp, #156]
str     r0, [sp, #64]
ldr     r0, [sp, #172]
str     r1, [sp, #80]
mov     r1, r9
lsls    r3, r2, #1
asrs    r4, r1, #1                   ; threshold
lsls    r2, r0, #1
ldr     r1, [sp, #40]
ldr     r0, [sp, #156]
str     r9, [sp, #84]
ldr     r9, [sp, #16]
ldr     r6, [sp, #20]
str     r7, [sp, #60]
bic     ip, sl, sl, asr #31          ; max(shift, 0)
add     r9, r7
str     r3, [sp, #28]
str     r4, [sp, #68]
adds    r3, r1, r7
movs    r4, #0
subs    r7, r0, r7
str     r3, [sp, #24]
str     fp, [sp, #32]
str     fp, [sp, #136]
ldr     r3, [sp, #176]
str     r2, [sp, #56]
str     ip, [sp, #48]
str     r9, [sp, #72]
str     r4, [sp, #36]
str     r7, [sp, #76]
mov     sl, r1
mov     fp, r8
str     r5, [sp, #160]
cmp     r6, #0
beq     .Lvm_nobias
"""
VM_PAIRS_END = """
ldr     r5, [sp, #160]
ldr     r7, [sp, #40]
ldr     sl, [sp, #56]
ldr     r6, [sp, #4]
cmp     r5, #1
mov     r3, ip
mov     r8, fp
it      le
movle   r3, #1
ldr     fp, [sp, #136]
mla     r1, r3, r9, r7
str     r1, [sp, #40]
mla     fp, r3, sl, fp
"""
VM_ODD_TEST = """
lsls    r0, r5, #31
bpl     .Lvm_ret{taken}
"""
VM_EXIT = """
movs    r0, #0
add     sp, #100
pop     {r4, r5, r6, r7, r8, r9, r10, r11, pc}
"""


def _row_setup_text(peeled: bool, nocols: bool) -> str:
    """VM_ROW_SETUP as it runs: with no 4-column step (rhs_cols < 4) the BEQ to the row
    middle is taken and the rest skipped; else the peeled-step test is taken unless
    there are steps before the unrolled loop."""
    if nocols:
        head = VM_ROW_SETUP[: VM_ROW_SETUP.index(".Lvm_nocols") + len(".Lvm_nocols")]
        return head + "{taken}\n"
    return VM_ROW_SETUP if not peeled else VM_ROW_SETUP.replace("{taken}", "")


@cache
def _vm_blocks(
    weight_offset: bool, per_channel: bool, peeled: bool, nocols: bool = False, scalar: bool = False
):
    b = Block.asm
    w = _woff if weight_offset else (lambda t: t)
    pc = "ldr r1, [r6], #4 {qparams}\nldr r3, [r5], #4 {qmult}\n" * 2 if per_channel else ""
    setup = _row_setup_text(peeled, nocols)
    # the row middle's BLE past the 1-column steps is taken only when there are none
    mid = VM_ROW_MID.replace("{taken}", "") if scalar else VM_ROW_MID
    sfx = ("_woff" if weight_offset else "") + ("_pc" if per_channel else "")
    return {
        "call": b("bl arm_nn_vec_mat_mult_t_s8", "vm_call"),
        "entry": b(VM_ENTRY.replace("{taken}", ""), "vm_entry"),
        "entry_odd_only": b(VM_ENTRY, "vm_entry_odd_only"),
        "pairs_setup": b(VM_PAIRS_SETUP, "vm_pairs_setup"),
        "pairs_end": b(VM_PAIRS_END, "vm_pairs_end"),
        "even": b(VM_ODD_TEST, "vm_even"),
        "odd": b(VM_ODD_TEST.replace("{taken}", ""), "vm_odd"),
        "exit": b(VM_EXIT, "vm_exit"),
        "row_setup": b(
            setup, "vm_row_setup" + ("_nocols" if nocols else "_peeled" if peeled else "")
        ),
        "x4_entry": b(VM_X4_ENTRY, "vm_x4_entry"),
        "c4x4": b(w(VM_X4), "vm_cols4x4" + sfx),
        "c4": b(w(VM_CHUNK_W0), "vm_cols4" + sfx),
        "row_mid": b(mid, "vm_row_mid" + ("_scalar" if scalar else "")),
        "c1": b(VM_SCALAR, "vm_cols1"),
        "out": b(pc + VM_PAIR_OUT, "vm_pair_out" + sfx),
        "out_neg": b(pc + VM_PAIR_OUT_NEG, "vm_pair_out_neg" + sfx),
        "row_end": b(VM_ROW_END, "vm_row_end"),
        "odd4x4": b(w(VM_ODD_X4), "vm_odd4x4" + sfx),
        "odd4": b(w(VM_ODD_CHUNK), "vm_odd4" + sfx),
        "odd1": b(VM_ODD_SCALAR, "vm_odd1"),
        "odd_out": b(
            VM_ODD_OUT if not per_channel else gcc_requant_text("r2", "post"), "vm_odd_out" + sfx
        ),
    }


def vec_mat_mult_t_s8(
    rhs_rows: int,
    rhs_cols: int,
    weight_offset: bool = False,
    per_channel: bool = False,
    neg_pairs: int | None = None,
) -> list:
    """One call of arm_nn_vec_mat_mult_t_s8 (per_channel: ..._per_ch_s8, which loads the
    multiplier/shift of each row): one input vector against rhs_rows rows. ``neg_pairs``:
    how many row pairs round a negative first value (the taken BMI), observed on the
    layer's data (mcusim.observed); None: half of them (the sign of a pre-activation is
    a coin flip without the data)."""
    col4 = rhs_cols // 4
    k = _vm_blocks(weight_offset, per_channel, col4 % 4 != 0, col4 == 0, rhs_cols % 4 != 0)
    pairs = rhs_rows // 2
    neg = pairs // 2 if neg_pairs is None else min(max(int(neg_pairs), 0), pairs)

    def pair_loop(name: str, count: int, out: Block) -> Loop:
        return Loop(
            name,
            count,
            addr={"input": Rewind(0)},  # the input vector is re-read per pair of rows
            body=[
                k["row_setup"],
                Loop("vm_cols4", col4 % 4, [k["c4"]]),
                k["x4_entry"],
                Loop("vm_cols4x4", col4 // 4, [k["c4x4"]]),
                k["row_mid"],
                Loop("vm_cols1", rhs_cols % 4, [k["c1"]]),
                out,
                k["row_end"],
            ],
        )

    rows = [pair_loop("vm_row_pairs", pairs - neg, k["out"])]
    if neg:
        rows.append(pair_loop("vm_row_pairs_neg", neg, k["out_neg"]))
    if pairs:
        items: list = [k["call"], k["entry"], k["pairs_setup"], *rows, k["pairs_end"]]
        items.append(k["odd"] if rhs_rows % 2 else k["even"])
    else:  # one row: straight to the odd-row test
        items = [k["call"], k["entry_odd_only"], k["odd"]]
    if rhs_rows % 2:
        items += [
            k["row_setup"],
            Loop("vm_odd4", col4 % 4, [k["odd4"]]),
            k["x4_entry"],
            Loop("vm_odd4x4", col4 // 4, [k["odd4x4"]]),
            k["row_mid"],
            Loop("vm_odd1", rhs_cols % 4, [k["odd1"]]),
            k["odd_out"],
        ]
    items.append(k["exit"])
    return items
