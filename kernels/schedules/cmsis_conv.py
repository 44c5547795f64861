"""CONV_2D on Armv7E-M + DSP as CMSIS-NN runs it (arm_convolve_wrapper_s8 dispatch).

Dispatch (arm_convolve_wrapper_s8.c, non-MVE):
- 1x1 (no padding, 1x1 filter, no dilation, filter depth == input depth):
  stride 1 -> arm_convolve_1x1_s8_fast, else arm_convolve_1x1_s8. Built with GCC (not
  Arm Compiler 6), the fast variant calls arm_nn_mat_mult_nt_t_s8 on all pixels at once
  (its s16 im2col path is only compiled for __ARMCC_VERSION); arm_convolve_1x1_s8 calls it
  once per output row with a strided lhs.
- 1xN (input height 1, filter height 1, no x dilation, stride_x * in_ch % 4 == 0):
  arm_convolve_1_x_n_s8, which without MVE is arm_convolve_s8.
- otherwise arm_convolve_s8: per output pixel an int8 im2col column (memcpy of the
  filter depth per tap, memset with -input_offset for padding taps), widened to s16 with
  arm_s8_to_s16_unordered_with_offset; every 2 columns arm_nn_mat_mult_kernel_s8_s16
  (grouped conv: arm_nn_mat_mult_kernel_row_offset_s8_s16, same loop structure); an odd
  last column goes through the single-column loop.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from mcusim.graph import Graph, Op
from mcusim.isa.schedule import Block, Loop, Program, Rewind

from .code_sizes import ARMV7EM_DSP, owned
from .common import (
    Geom,
    PixelWalk,
    axis_taps,
    conv_geom,
    memcpy_items,
    memset_items,
    pixels_by,
    qparam_rules,
    taps_key,
)
from .matmul import (
    leftover_column,
    mat_mult_kernel_s8_s16,
    mat_mult_nt_t_s8,
    s8s16_odd_channel_moves,
)

CONV_ENTRY = """
push   {r4, r5, r6, r7, r8, r9, r10, r11, lr}
sub    sp, #92
ldr    r4, [sp, #136]                ; input dims
ldr    r5, [sp, #140]                ; filter dims
ldrh   r6, [r4, #4] {stack}
ldrh   r7, [r4, #8] {stack}
ldrh   r8, [r5, #4] {stack}
ldrh   r9, [r5, #8] {stack}
mul    r10, r8, r9
ldrh   r9, [r5, #12] {stack}
mul    r10, r10, r9                  ; rhs_cols
ands   r11, r10, #3
it     ne
rsbne  r11, r11, #4
add    r11, r11, r10                 ; aligned_rhs_cols
str    r10, [sp, #16]
str    r11, [sp, #20]
"""
CONV_EXIT = """
movs   r0, #0
add    sp, #92
pop    {r4, r5, r6, r7, r8, r9, r10, r11, pc}
"""
PIXEL_SETUP = """
ldr    r3, [sp, #24]                 ; stride_x
ldr    r2, [sp, #28]                 ; i_out_x
mul    r3, r3, r2
ldr    r2, [sp, #32]                 ; pad_x
subs   r3, r3, r2                    ; base_idx_x
str    r3, [sp, #36]
ldr    r3, [sp, #40]                 ; base_idx_y (per row, kept)
movs   r2, #0
str    r2, [sp, #44]                 ; i_ker_y
"""
# per filter tap: k_y/k_x, bounds test, call memcpy or memset (arm_memcpy_s8/arm_memset_s8)
TAP_TEST = """
ldr    r3, [sp, #44]                 ; i_ker_y
ldr    r2, [sp, #48]                 ; dilation_y
ldr    r1, [sp, #40]
mla    r4, r2, r3, r1                ; k_y
ldr    r3, [sp, #52]                 ; i_ker_x
ldr    r2, [sp, #56]                 ; dilation_x
ldr    r1, [sp, #36]
mla    r5, r2, r3, r1                ; k_x
cmp    r4, #0
blt    .Lpad
cmp    r4, r6
bge    .Lpad
cmp    r5, #0
blt    .Lpad
cmp    r5, r7
bge    .Lpad
"""
# a padding tap leaves the bounds test at its first failing compare (taken branch)
TAP_TEST_PAD = TAP_TEST.split("blt    .Lpad")[0] + "blt    .Lpad {taken}\n"
TAP_COPY_ARGS = """
mla    r1, r4, r7, r5
ldr    r3, [sp, #60]                 ; input_ch
ldr    r2, [sp, #64]                 ; input_data
mla    r1, r1, r3, r2
ldr    r0, [sp, #68]                 ; im2col_buf
ldr    r2, [sp, #72]                 ; kernel_ch
"""
TAP_PAD_ARGS = """
ldr    r1, [sp, #76]                 ; -input_offset
ldr    r0, [sp, #68]
ldr    r2, [sp, #72]
"""
TAP_END = """
ldr    r3, [sp, #68]
ldr    r2, [sp, #72]
add    r3, r3, r2
str    r3, [sp, #68]                 ; im2col_buf += kernel_ch
ldr    r3, [sp, #52]
adds   r3, #1
str    r3, [sp, #52]
ldr    r2, [sp, #80]                 ; kernel_x
cmp    r3, r2
blt    .Ltap
"""
# end of a kernel row of the tap loop (arm_convolve_s8 walks taps as kernel rows x kernel
# columns): next row, reset the column counter; the last row falls through
TAP_ROW_NEXT = """
ldr    r3, [sp, #44]                 ; i_ker_y
adds   r3, #1
str    r3, [sp, #44]
ldr    r2, [sp, #8]                  ; kernel_y
cmp    r3, r2
blt    .Lker_row {taken}
movs   r3, #0
str    r3, [sp, #52]                 ; i_ker_x = 0
"""
TAP_ROW_LAST = """
ldr    r3, [sp, #44]
adds   r3, #1
str    r3, [sp, #44]
ldr    r2, [sp, #8]
cmp    r3, r2
blt    .Lker_row {nottaken}
"""
# arm_s8_to_s16_unordered_with_offset: 4 elements per step, PKHBT'd offset pair in r3
S16_CALL = """
ldr    r0, [sp, #68]
ldr    r1, [sp, #84]                 ; im2col_buf_start_s16
ldr    r2, [sp, #16]
subs   r0, r0, r2
ldr    r3, [sp, #88]
bl     arm_s8_to_s16_unordered_with_offset
push   {r4, r5, lr}
pkhbt  r3, r3, r3, lsl #16
asrs   r4, r2, #2
beq    .Ls16_tail
"""
S16_INNER = """
ldr    r5, [r0], #4     {scratch}
sxtab16 ip, r3, r5
ror    r5, r5, #8
sxtab16 r5, r3, r5
str    ip, [r1], #4     {scratch}
str    r5, [r1], #4     {scratch}
subs   r4, #1
bne    .Ls16_loop
"""
S16_TAIL = """
ldrsb  r5, [r0], #1     {scratch}
add    r5, r3
strh   r5, [r1], #2     {scratch}
subs   r2, #1
bne    .Ls16_tail
"""
S16_RET = """
pop    {r4, r5, pc}
"""
PIXEL_END = """
ldr    r3, [sp, #84]
ldr    r2, [sp, #20]
add    r3, r3, r2, lsl #1
str    r3, [sp, #84]                 ; im2col_buf_start_s16 += aligned_rhs_cols
ldr    r3, [sp, #12]
adds   r3, #1
str    r3, [sp, #12]                 ; lhs_rows++
cmp    r3, #2
bne    .Lnext_pixel
"""
PAIR_ARGS = """
ldr    r0, [sp, #4]                  ; filter
ldr    r1, [sp, #8]                  ; buffer_a
ldr    r2, [sp, #52]                 ; output_ch_per_group
ldr    r3, [sp, #56]
str    r3, [sp]
"""
PAIR_END = """
ldr    r3, [sp, #8]
str    r3, [sp, #84]
movs   r3, #0
str    r3, [sp, #12]
ldr    r3, [sp, #28]
adds   r3, #1
str    r3, [sp, #28]
cmp    r3, r8
blt    .Lpixels
"""


@cache
def _blocks():
    b = Block.asm
    conv = {
        "entry": b(CONV_ENTRY, "conv_entry"),
        "exit": b(CONV_EXIT, "conv_exit"),
        "pixel": b(PIXEL_SETUP, "conv_pixel_setup"),
        "tap_test": b(TAP_TEST, "conv_tap_test"),
        "tap_test_pad": b(TAP_TEST_PAD, "conv_tap_test_pad"),
        "tap_copy": b(TAP_COPY_ARGS, "conv_tap_copy_args"),
        "tap_pad": b(TAP_PAD_ARGS, "conv_tap_pad_args"),
        "tap_end": b(TAP_END, "conv_tap_end"),
        "row_next": b(TAP_ROW_NEXT, "conv_tap_row_next"),
        "row_last": b(TAP_ROW_LAST, "conv_tap_row_last"),
        "pixel_end": b(PIXEL_END, "conv_pixel_end"),
        "pair_args": b(PAIR_ARGS, "conv_pair_args"),
        "pair_end": b(PAIR_END, "conv_pair_end"),
    }
    widen = {
        "s16_call": b(S16_CALL, "s8_to_s16_entry"),
        "s16_inner": b(S16_INNER, "s8_to_s16_loop"),
        "s16_tail": b(S16_TAIL, "s8_to_s16_tail"),
        "s16_ret": b(S16_RET, "s8_to_s16_ret"),
    }
    return {
        **owned(ARMV7EM_DSP, "arm_convolve_s8", conv),
        **owned(ARMV7EM_DSP, "arm_s8_to_s16_unordered_with_offset", widen),
        "row_end_1x1": b("adds r4, #1\ncmp r4, r5\nblt .Lrows", "conv1x1_row_end"),
    }


def _im2col_column(g: Geom, kernel_ch: int, n_valid: int, rhs_cols: int) -> list:
    """Items of building one im2col column with ``n_valid`` in-bounds taps."""
    k = _blocks()
    taps = g.k_h * g.k_w
    # a tap copy is word-aligned when every offset is a multiple of 4 bytes
    aligned = g.in_c % 4 == 0 and kernel_ch % 4 == 0
    # taps row by row: the next tap is the next (dilated) pixel, after k_w taps the next
    # (dilated) input row (exact when every tap is in bounds, an estimate at borders)
    pix = g.in_c * g.d_w
    copy = Loop(
        "im2col_copy_taps",
        n_valid,
        [
            k["tap_test"],
            k["tap_copy"],
            *memcpy_items(kernel_ch, aligned, "input", "scratch"),
            k["tap_end"],
        ],
        addr={"input": Rewind(pix, every=g.k_w, skip=g.in_w * g.in_c * g.d_h - g.k_w * pix)},
    )
    pad = Loop(
        "im2col_pad_taps",
        taps - n_valid,
        [
            k["tap_test_pad"],
            k["tap_pad"],
            *memset_items(kernel_ch, aligned, "scratch"),
            k["tap_end"],
        ],
    )
    widen = [
        k["s16_call"],
        Loop("s8_to_s16", rhs_cols // 4, [k["s16_inner"]]),
        Loop("s8_to_s16_tail", rhs_cols % 4, [k["s16_tail"]]),
        k["s16_ret"],
    ]
    # the kernel-row level of the tap loop: k_h - 1 row changes and the final row exit per
    # pixel (the taps' own loop bookkeeping stays in TAP_END)
    rows = [Loop("im2col_kernel_rows", g.k_h - 1, [k["row_next"]]), k["row_last"]]
    return [k["pixel"], copy, pad, *rows, *widen, k["pixel_end"]]


# Pair groups above which arm_convolve_s8's schedule builds every im2col column first: the
# cache simulation walks at least one kernel call per group (a group of one pair is never
# repeated), so a layer whose border classes split its pairs finely (kws's 10x4 first
# conv: 15 groups of 62 pairs) would cost several times its im2col-first walk. Timing is
# the same in both orders (the same blocks, PIXEL_END's branch aside); the addresses
# keep the per-class input walk and sequential outputs.
MAX_PAIR_GROUPS = 8


def im2col_first_items(g: Geom, kernel_ch: int, groups: int) -> list:
    """arm_convolve_s8 (DSP) with every pixel's im2col first (pixels grouped by in-bounds
    taps), then the kernel per column pair and the odd column (see MAX_PAIR_GROUPS)."""
    k = _blocks()
    rhs_cols = g.k_h * g.k_w * kernel_ch
    out_ch_g = g.out_c // groups
    n_pix = g.out_pixels
    per_group: list = []
    classes = pixels_by(g, taps_key(g))
    walk = PixelWalk(g, ("input",))
    for n_valid, count in sorted(g.taps_valid().items()):
        per_group.append(
            Loop(
                f"im2col_pixels_{n_valid}taps",
                count,
                _im2col_column(g, kernel_ch, n_valid, rhs_cols),
                # each pixel of the class at its own input window; the column buffer
                # is reused
                addr={**walk.rules(classes[n_valid]), "scratch": Rewind(0)},
            )
        )
    per_group.append(
        Loop(
            "conv_column_pairs",
            n_pix // 2,
            [
                k["pair_args"],
                *mat_mult_kernel_s8_s16(out_ch_g, rhs_cols, g.out_c),
                k["pair_end"],
            ],
            # every pair of columns re-reads all filters, biases and requant parameters
            # and writes the outputs of the next two pixels
            addr={
                **{r: Rewind(0) for r in ("weights", "bias", "scratch")},
                **qparam_rules(),
                "output": Rewind(2 * g.out_c),
            },
            moves=s8s16_odd_channel_moves(out_ch_g, g.out_c),
        )
    )
    if n_pix % 2:
        per_group += leftover_column(out_ch_g, rhs_cols)
    body = [Loop("conv_groups", groups, per_group)] if groups > 1 else per_group
    return [k["entry"], Loop("batches", g.batches, body), k["exit"]]


def convolve_s8_items(g: Geom, kernel_ch: int, groups: int) -> list:
    """arm_convolve_s8 (DSP) in the library's order: per pair of output pixels (raster
    order) the im2col of the first, of the second, then the kernel on the two columns;
    an odd last pixel's column goes through the leftover path.

    Pairs are grouped by the in-bounds taps of their two pixels and the step between
    their windows (one loop per group, the address rules walking each group's pixels; the
    cache model sees the library's interleaving of im2col, filters and outputs). A pair
    of two pixels of one class runs the im2col as a loop of 2 (its PIXEL_END branch taken
    after the first pixel, falling through into the kernel after the second, as
    compiled); a pair across a border is two single-pixel loops (its first PIXEL_END
    counted not taken: a cycle or two per such pair)."""
    k = _blocks()
    rhs_cols = g.k_h * g.k_w * kernel_ch
    out_ch_g = g.out_c // groups
    n_pix = g.out_pixels
    ry, cx = axis_taps(g)
    # per pixel (raster order): in-bounds taps and the input offset of its window
    # (clamped into the image, as PixelWalk places it)
    taps = np.outer(ry, cx).ravel()
    wy = np.maximum(np.arange(g.out_h) * g.s_h - g.pad_t, 0) * g.in_w
    wx = np.maximum(np.arange(g.out_w) * g.s_w - g.pad_l, 0)
    window = (wy[:, None] + wx[None, :]).ravel() * g.in_c
    # a group's first pixels form a grid, so PixelWalk's rules are exact: same taps, same
    # step to the second pixel's window, and with an odd row width (pairs then start on
    # alternate columns) rows of one parity
    first = np.arange(0, n_pix - 1, 2)
    rows = first // g.out_w
    keys = np.stack(
        [
            taps[first],
            taps[first + 1],
            window[first + 1] - window[first],
            rows % 2 if g.out_w % 2 else np.zeros_like(rows),
        ],
        axis=1,
    )
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    pair_groups: dict[tuple, list[tuple[int, int]]] = {}
    for gi, key in enumerate(uniq.tolist()):
        sel = first[inverse == gi]
        pair_groups[tuple(key)] = list(
            zip((sel // g.out_w).tolist(), (sel % g.out_w).tolist(), strict=True)
        )
    if len(pair_groups) > MAX_PAIR_GROUPS:
        return im2col_first_items(g, kernel_ch, groups)
    col = 2 * rhs_cols  # the second s16 column follows the first
    columns: dict[int, list] = {}

    def column(n_valid: int) -> list:
        if n_valid not in columns:
            columns[n_valid] = _im2col_column(g, kernel_ch, n_valid, rhs_cols)
        return columns[n_valid]

    kernel = [
        k["pair_args"],
        *mat_mult_kernel_s8_s16(out_ch_g, rhs_cols, g.out_c),
        k["pair_end"],
    ]
    walk = PixelWalk(g, ("input", "output"))
    per_group: list = []
    for (ta, tb, px_in, _), firsts in pair_groups.items():  # np.unique: sorted
        # the kernel reads the columns from the buffer's start (one scratch pointer: the
        # second column's reads are modelled at the first's lines)
        back = {k["pair_args"]: {"scratch": -2 * col if ta == tb else -col}}
        if ta == tb:
            im2col = [
                Loop(
                    f"im2col_pair_{ta}taps",
                    2,
                    column(ta),
                    addr={"input": Rewind(px_in), "scratch": Rewind(col)},
                )
            ]
        else:
            im2col = [
                Loop(
                    f"im2col_first_{ta}taps",
                    1,
                    column(ta),
                    addr={"input": Rewind(0), "scratch": Rewind(0)},
                ),
                Loop(
                    f"im2col_second_{tb}taps",
                    1,
                    column(tb),
                    addr={"input": Rewind(0, start=px_in), "scratch": Rewind(0, start=col)},
                ),
            ]
        per_group.append(
            Loop(
                f"conv_column_pairs_{ta}_{tb}taps",
                len(firsts),
                [*im2col, *kernel],
                # every pair of columns re-reads all filters, biases and requant parameters
                addr={
                    **walk.rules(firsts),
                    **{r: Rewind(0) for r in ("weights", "bias", "scratch")},
                    **qparam_rules(),
                },
                moves={**s8s16_odd_channel_moves(out_ch_g, g.out_c), **back},
            )
        )
    if n_pix % 2:
        last = n_pix - 1
        per_group.append(
            Loop(
                "conv_last_column",
                1,
                [*column(int(taps[last])), *leftover_column(out_ch_g, rhs_cols)],
                addr={**walk.rules([divmod(last, g.out_w)]), "scratch": Rewind(0)},
            )
        )
    body = [Loop("conv_groups", groups, per_group)] if groups > 1 else per_group
    return [k["entry"], Loop("batches", g.batches, body), k["exit"]]


def is_1x1(g: Geom, kernel_ch: int) -> bool:
    return (
        g.pad_t == 0
        and g.pad_l == 0
        and g.k_h == 1
        and g.k_w == 1
        and g.d_h == 1
        and g.d_w == 1
        and g.in_c == kernel_ch
    )


def is_1_x_n(g: Geom, kernel_ch: int) -> bool:
    return (
        g.in_h == 1
        and g.d_w == 1
        and g.k_h == 1
        and (g.s_w * g.in_c) % 4 == 0
        and g.in_c == kernel_ch
    )


def conv2d_program(graph: Graph, op: Op) -> Program:
    g = conv_geom(graph, op)
    kernel_ch = int(graph.tensor(op.inputs[1]).shape[3])
    groups = max(1, g.in_c // kernel_ch)
    macs = g.batches * g.out_pixels * g.out_c * g.k_h * g.k_w * kernel_ch
    k = _blocks()
    if is_1x1(g, kernel_ch):
        if g.s_h == 1 and g.s_w == 1:
            kernel = "arm_convolve_1x1_s8_fast -> arm_nn_mat_mult_nt_t_s8"
            items = [
                k["entry"],
                *mat_mult_nt_t_s8(g.batches * g.in_h * g.in_w, g.out_c, g.in_c),
                k["exit"],
            ]
        else:
            kernel = "arm_convolve_1x1_s8 -> arm_nn_mat_mult_nt_t_s8"
            row = Loop(
                "conv1x1_out_rows",
                g.batches * g.out_h,
                [
                    *mat_mult_nt_t_s8(g.out_w, g.out_c, g.in_c, g.s_w * g.in_c),
                    k["row_end_1x1"],
                ],
                addr={
                    "input": Rewind(g.s_h * g.in_w * g.in_c),
                    "output": Rewind(g.out_w * g.out_c),
                    "weights": Rewind(0),
                    "bias": Rewind(0),
                    **qparam_rules(),
                },
            )
            items = [k["entry"], row, k["exit"]]
        notes = ["GCC build: the ACLE-only s16 im2col path of 1x1_fast is not compiled"]
    else:
        if is_1_x_n(g, kernel_ch):
            kernel = "arm_convolve_1_x_n_s8 -> arm_convolve_s8 -> arm_nn_mat_mult_kernel_s8_s16"
        else:
            kernel = "arm_convolve_s8 -> arm_nn_mat_mult_kernel_s8_s16"
        if groups > 1:
            kernel = kernel.replace("kernel_s8_s16", "kernel_row_offset_s8_s16")
        items = convolve_s8_items(g, kernel_ch, groups)
        notes = []
    return Program(items, kernel=kernel, macs=macs, notes=notes)
