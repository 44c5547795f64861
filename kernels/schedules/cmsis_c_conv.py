"""CONV_2D and DEPTHWISE_CONV_2D on Armv6-M: CMSIS-NN's wrappers with the pure-C branches.

Convolution (arm_convolve_wrapper_s8, same dispatch as the DSP build):
- 1x1, no padding, stride 1 -> arm_convolve_1x1_s8_fast -> arm_nn_mat_mult_nt_t_s8 over all
  pixels; other 1x1 strides -> arm_convolve_1x1_s8, one mat_mult_nt_t_s8 call per output row.
- 1xN -> arm_convolve_1_x_n_s8, which without MVE is arm_convolve_s8.
- otherwise arm_convolve_s8: per pixel an int8 im2col column (memcpy / memset per tap), widened
  to s16 by arm_q7_to_q15_with_offset (its Cortex-M0 element loop), every 2 columns
  arm_nn_mat_mult_kernel_s8_s16 (pure C), the odd last column in a 1-MAC C loop.

Depthwise (arm_depthwise_conv_wrapper_s8 without MVE/DSP):
- ch_mult 1, batch 1, no dilation: 3x3 with padding <= 1 -> arm_depthwise_conv_3x3_s8 (its C
  branch reads 4 channels of input and of weights with arm_nn_read_s8x4, i.e. two 4-byte
  memcpy calls per tap: Armv6-M has no unaligned word loads); otherwise
  arm_depthwise_conv_s8_opt, which without ARM_MATH_DSP returns arm_depthwise_conv_s8.
- arm_depthwise_conv_s8: ch_mult % 4 == 0, batch 1, no dilation -> depthwise_conv_s8_mult_4,
  else depthwise_conv_s8_generic (one MAC per innermost iteration with the full index
  arithmetic; with dilation the tap range needs four __aeabi_idiv calls per output).
"""

from __future__ import annotations

from functools import cache

from mcusim.graph import Graph, Op
from mcusim.isa.schedule import Block, Loop, Program, Rewind

from .cmsis_c_common import (
    entry_block,
    exit_block,
    idiv_block,
    memcpy_items,
    memset_items,
    requant_out_items,
)
from .cmsis_c_matmul import (
    _out_moves,
    leftover_column_c,
    mat_mult_kernel_s8_s16_c,
    mat_mult_nt_t_s8_c,
)
from .cmsis_conv import is_1_x_n, is_1x1
from .common import (
    QPARAM_TAGS,
    Geom,
    PixelWalk,
    conv_geom,
    pixels_by,
    qparam_moves,
    qparam_rules,
    rows_cols_key,
    taps_key,
)
from .mve_common import tap_walk
from .mve_depthwise import _Pos

# ------------------------------------------------------------------ arm_convolve_s8
PIXEL_SETUP = """
ldr    r3, [sp, #24]                ; stride_x
ldr    r2, [sp, #32]                ; i_out_x
muls   r3, r2
ldr    r2, [sp, #36]                ; pad_x
subs   r6, r3, r2                   ; base_idx_x
ldr    r7, [sp, #40]                ; input pointer of the first tap
movs   r4, #0
"""
# tap in bounds: two unsigned range tests (k < 0 wraps to a large value), memcpy args
TAP_TEST = """
ldr    r3, [sp, #44]                ; input_y
mov    r2, fp                       ; k_y
cmp    r3, r2
bls    .Lpad
ldr    r3, [sp, #64]                ; input_x
cmp    r3, r6                       ; k_x
bls    .Lpad
"""
TAP_TEST_PAD = """
ldr    r3, [sp, #44]
mov    r2, fp
cmp    r3, r2
bls    .Lpad  {taken}
"""
TAP_COPY = """
movs   r0, r5                       ; im2col_buf
movs   r1, r7                       ; input + (k_y * input_x + k_x) * input_ch
ldr    r2, [sp, #52]                ; kernel_ch
bl     memcpy
"""
TAP_PAD = """
movs   r0, r5
ldr    r1, [sp, #52]                ; -input_offset
ldr    r2, [sp, #56]
bl     memset
"""
TAP_END = """
ldr    r3, [sp, #48]                ; kernel_ch
adds   r4, r4, #1
mov    ip, r3
add    r5, ip                       ; im2col_buf += kernel_ch
add    r7, r9                       ; input pointer += dilation_x * input_ch
add    r6, sl                       ; k_x += dilation_x
cmp    r4, r8
bne    .Ltap
"""
Q15_CALL = """
ldr    r0, [sp, #68]
ldr    r2, [sp, #16]                ; rhs_cols
subs   r0, r0, r2
ldr    r1, [sp, #84]                ; im2col_buf_start_s16
ldr    r3, [sp, #88]                ; input_offset
bl     arm_q7_to_q15_with_offset
push   {r4, lr}
cmp    r2, #0
ble    .Lq15_done
uxth   r3, r3
adds   r2, r0, r2
"""
Q15_LOOP = """
movs   r4, #0
ldrsb  r4, [r0, r4]   {scratch}
adds   r0, r0, #1
adds   r4, r3, r4
strh   r4, [r1]       {scratch}
adds   r1, r1, #2
cmp    r0, r2
bne    .Lq15
"""
Q15_RET = "pop    {r4, pc}\n"
PIXEL_END = """
ldr    r3, [sp, #84]
ldr    r2, [sp, #20]                ; aligned_rhs_cols
lsls   r2, r2, #1
adds   r3, r3, r2
str    r3, [sp, #84]
ldr    r3, [sp, #12]
adds   r3, #1
str    r3, [sp, #12]                ; lhs_rows++
cmp    r3, #2
bne    .Lnext_pixel
"""
PAIR_ARGS = """
ldr    r0, [sp, #4]                 ; filter
ldr    r1, [sp, #8]                 ; buffer_a
ldr    r2, [sp, #60]                ; output_ch_per_group
ldr    r3, [sp, #72]
str    r3, [sp]
"""
PAIR_END = """
str    r0, [sp, #28]                ; out = returned pointer
ldr    r3, [sp, #8]
str    r3, [sp, #84]
movs   r3, #0
str    r3, [sp, #12]
ldr    r3, [sp, #32]
adds   r3, #1
str    r3, [sp, #32]
cmp    r3, r8
blt    .Lpixels
"""
ROW_END_1X1 = """
ldr    r3, [sp, #92]
adds   r3, #1
str    r3, [sp, #92]
cmp    r3, r8
blt    .Lrows
"""


@cache
def _blocks():
    b = Block.asm
    return {
        "pixel": b(PIXEL_SETUP, "c_conv_pixel_setup"),
        "tap_test": b(TAP_TEST, "c_conv_tap_test"),
        "tap_test_pad": b(TAP_TEST_PAD, "c_conv_tap_test_pad"),
        "tap_copy": b(TAP_COPY, "c_conv_tap_copy"),
        "tap_pad": b(TAP_PAD, "c_conv_tap_pad"),
        "tap_end": b(TAP_END, "c_conv_tap_end"),
        "q15_call": b(Q15_CALL, "q7_to_q15_entry"),
        "q15_loop": b(Q15_LOOP, "q7_to_q15_loop"),
        "q15_ret": b(Q15_RET, "q7_to_q15_ret"),
        "pixel_end": b(PIXEL_END, "c_conv_pixel_end"),
        "pair_args": b(PAIR_ARGS, "c_conv_pair_args"),
        "pair_end": b(PAIR_END, "c_conv_pair_end"),
        "row_end_1x1": b(ROW_END_1X1, "c_conv1x1_row_end"),
    }


def _im2col_column(g: Geom, kernel_ch: int, n_valid: int, rhs_cols: int, pixels: list) -> list:
    """One im2col column with ``n_valid`` in-bounds taps; ``pixels``: that class's output
    pixels (address rules: the copies walk the in-bounds taps of the window)."""
    k = _blocks()
    taps = g.k_h * g.k_w
    aligned = g.in_c % 4 == 0 and kernel_ch % 4 == 0
    copy = Loop(
        "c_im2col_copy_taps",
        n_valid,
        addr={"input": tap_walk(g, pixels, g.in_c * g.d_w)},
        body=[
            k["tap_test"],
            k["tap_copy"],
            *memcpy_items(kernel_ch, aligned, "input", "scratch"),
            k["tap_end"],
        ],
    )
    pad = Loop(
        "c_im2col_pad_taps",
        taps - n_valid,
        [
            k["tap_test_pad"],
            k["tap_pad"],
            *memset_items(kernel_ch, aligned, "scratch"),
            k["tap_end"],
        ],
    )
    # the widening reads the int8 column and writes the s16 column through one folded
    # scratch pointer: from the column start, 2 bytes per element (read, then write)
    widen = [
        k["q15_call"],
        Loop("q7_to_q15", rhs_cols, [k["q15_loop"]], addr={"scratch": Rewind(2, start=-rhs_cols)}),
        k["q15_ret"],
    ]
    return [k["pixel"], copy, pad, *widen, k["pixel_end"]]


def convolve_s8_c_items(g: Geom, kernel_ch: int, groups: int) -> list:
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
                f"c_im2col_pixels_{n_valid}taps",
                count,
                _im2col_column(g, kernel_ch, n_valid, rhs_cols, classes[n_valid]),
                # each pixel at its own input window; the column buffer is reused (the
                # s8 -> s16 widening reads and writes it through one folded pointer)
                addr={**walk.rules(classes[n_valid]), "scratch": Rewind(0)},
            )
        )
    per_group.append(
        Loop(
            "c_conv_column_pairs",
            n_pix // 2,
            [
                k["pair_args"],
                *mat_mult_kernel_s8_s16_c(out_ch_g, rhs_cols, g.out_c),
                k["pair_end"],
            ],
            # every pair of columns re-reads all filters, biases and parameters and
            # writes the outputs of the next two pixels
            addr={
                **{r: Rewind(0) for r in ("weights", "bias", "scratch")},
                **qparam_rules(),
                "output": Rewind(2 * g.out_c),
            },
        )
    )
    if n_pix % 2:
        per_group += leftover_column_c(out_ch_g, rhs_cols)
    body: list = per_group
    if groups > 1:
        body = [
            Loop(
                "c_conv_groups",
                groups,
                per_group,
                addr={
                    "input": Rewind(kernel_ch),
                    "weights": Rewind(out_ch_g * rhs_cols),
                    "bias": Rewind(4 * out_ch_g),
                    **qparam_rules(out_ch_g),
                    "output": Rewind(out_ch_g),
                    "scratch": Rewind(0),
                },
            )
        ]
    name = "arm_convolve_s8"
    batch = {
        "input": Rewind(g.in_h * g.in_w * g.in_c),
        "output": Rewind(g.out_pixels * g.out_c),
        **{r: Rewind(0) for r in ("weights", "bias", "scratch")},
        **qparam_rules(),
    }
    return [entry_block(name), Loop("batches", g.batches, body, addr=batch), exit_block(name)]


def conv2d_c_program(graph: Graph, op: Op) -> Program:
    g = conv_geom(graph, op)
    kernel_ch = int(graph.tensor(op.inputs[1]).shape[3])
    groups = max(1, g.in_c // kernel_ch)
    macs = g.batches * g.out_pixels * g.out_c * g.k_h * g.k_w * kernel_ch
    k = _blocks()
    notes = ["CMSIS-NN pure C (no ARM_MATH_DSP); requantization calls __aeabi_lmul"]
    if is_1x1(g, kernel_ch):
        if g.s_h == 1 and g.s_w == 1:
            kernel = "arm_convolve_1x1_s8_fast -> arm_nn_mat_mult_nt_t_s8 (C)"
            items = [
                entry_block("arm_convolve_1x1_s8_fast"),
                *mat_mult_nt_t_s8_c(g.batches * g.in_h * g.in_w, g.out_c, g.in_c),
                exit_block("arm_convolve_1x1_s8_fast"),
            ]
        else:
            kernel = "arm_convolve_1x1_s8 -> arm_nn_mat_mult_nt_t_s8 (C)"
            row_in = g.s_h * g.in_w * g.in_c
            row = Loop(
                "c_conv1x1_out_rows",
                g.batches * g.out_h,
                [
                    *mat_mult_nt_t_s8_c(g.out_w, g.out_c, g.in_c, g.s_w * g.in_c),
                    k["row_end_1x1"],
                ],
                # one call per output row on its strided input row (next image after
                # out_h rows); every row re-reads the filters and parameters
                addr={
                    "input": Rewind(
                        row_in, every=g.out_h, skip=g.in_h * g.in_w * g.in_c - g.out_h * row_in
                    ),
                    "output": Rewind(g.out_w * g.out_c),
                    **{r: Rewind(0) for r in ("weights", "bias")},
                    **qparam_rules(),
                },
            )
            items = [entry_block("arm_convolve_1x1_s8"), row, exit_block("arm_convolve_1x1_s8")]
        return Program(items, kernel=kernel, macs=macs, notes=notes)
    if is_1_x_n(g, kernel_ch):
        kernel = "arm_convolve_1_x_n_s8 -> arm_convolve_s8 -> arm_nn_mat_mult_kernel_s8_s16 (C)"
    else:
        kernel = "arm_convolve_s8 -> arm_nn_mat_mult_kernel_s8_s16 (C)"
    if groups > 1:
        kernel = kernel.replace("kernel_s8_s16", "kernel_row_offset_s8_s16")
    return Program(convolve_s8_c_items(g, kernel_ch, groups), kernel=kernel, macs=macs, notes=notes)


# ---------------------------------------------------------- arm_depthwise_conv_3x3_s8
DW3_PIXEL = """
ldr    r3, [sp, #100]               ; in_w
ldr    r2, [sp, #104]               ; stride_x
adds   r3, r3, r2
str    r3, [sp, #100]
asrs   r2, r3, #31
bics   r2, r3                       ; ker_w_start = MAX(0, -in_w)
str    r2, [sp, #108]
ldr    r3, [sp, #112]
str    r3, [sp, #40]                ; bias = bias_base
"""
DW3_GROUP = """
ldr    r3, [sp, #40]
ldr    r4, [r3]       {bias}
mov    r8, r4
ldr    r4, [r3, #4]   {bias}
mov    r9, r4
ldr    r4, [r3, #8]   {bias}
mov    sl, r4
ldr    r4, [r3, #12]  {bias}
str    r4, [sp, #4]
adds   r3, #16
str    r3, [sp, #40]
ldr    r3, [sp, #116]               ; input row offset
ldr    r6, [sp, #120]
adds   r6, r6, r3                   ; input_ptr
ldr    r7, [sp, #124]               ; kernel_ptr
ldr    r5, [sp, #128]               ; input_offset
ldr    r3, [sp, #108]
cmp    r3, #0
"""
# one tap of 4 channels: two arm_nn_read_s8x4 (memcpy 4 bytes to the stack), 4 MACs
DW3_TAP_IN = """
ldr    r3, [sp, #8]                 ; tap offset
movs   r2, #4
adds   r1, r6, r3
add    r0, sp, #180
bl     memcpy
"""
DW3_TAP_W = """
ldr    r3, [sp, #8]
ldr    r4, [sp, #180]
adds   r1, r7, r3
movs   r2, #4
add    r0, sp, #180
bl     memcpy
"""
DW3_TAP_MAC = """
ldr    r3, [sp, #180]
sxtb   r1, r4
adds   r1, r1, r5
sxtb   r2, r3
muls   r2, r1
asrs   r1, r4, #8
add    r8, r2
sxtb   r1, r1
asrs   r2, r3, #8
adds   r1, r1, r5
sxtb   r2, r2
muls   r2, r1
asrs   r1, r4, #16
add    r9, r2
sxtb   r1, r1
asrs   r2, r3, #16
adds   r1, r1, r5
sxtb   r2, r2
muls   r2, r1
add    sl, r2
ldr    r2, [sp, #4]
asrs   r4, r4, #24
mov    ip, r2
adds   r4, r4, r5
asrs   r3, r3, #24
muls   r3, r4
add    ip, r3
mov    r3, ip
str    r3, [sp, #4]
"""
DW3_ROW_END = """
ldr    r3, [sp, #44]                ; input_ch * input_x
mov    ip, r3
ldr    r3, [sp, #40]                ; input_ch * 3
add    r6, ip
mov    ip, r3
movs   r3, #1
add    r7, ip
mov    ip, r3
ldr    r3, [sp, #36]                ; row end
add    fp, ip
cmp    fp, r3
bne    .Ldw3_rows
"""
DW3_GROUP_END = """
ldr    r3, [sp, #48]
adds   r3, #4
str    r3, [sp, #48]                ; in_ch += 4
ldr    r2, [sp, #52]
cmp    r3, r2
ble    .Ldw3_groups
"""
DW3_LEFT_SETUP = """
ldr    r3, [sp, #40]
ldr    r0, [r3]       {bias}
adds   r3, #4
str    r3, [sp, #40]
ldr    r6, [sp, #120]
ldr    r7, [sp, #124]
"""
DW3_LEFT_TAP = """
ldr    r3, [sp, #8]
movs   r1, #0
adds   r2, r6, r3
ldrsb  r1, [r2, r1]   {input}
adds   r1, r1, r5
adds   r2, r7, r3
movs   r4, #0
ldrsb  r4, [r2, r4]   {weights}
muls   r4, r1
adds   r0, r0, r4
ldr    r3, [sp, #12]
adds   r3, #1
str    r3, [sp, #12]
cmp    r3, r8
bne    .Ldw3_left_taps
"""
DW3_LEFT_END = """
ldr    r3, [sp, #48]
adds   r3, #1
str    r3, [sp, #48]
ldr    r2, [sp, #56]
cmp    r3, r2
blt    .Ldw3_left
"""
DW3_PIXEL_END = """
ldr    r3, [sp, #60]
adds   r3, #1
str    r3, [sp, #60]
ldr    r2, [sp, #64]
cmp    r3, r2
blt    .Ldw3_pixels
"""


@cache
def _dw3_blocks():
    b = Block.asm
    return {
        "pixel": b(DW3_PIXEL, "c_dw3_pixel"),
        "group": b(DW3_GROUP, "c_dw3_group"),
        "tap_in": b(DW3_TAP_IN, "c_dw3_tap_read_input"),
        "tap_w": b(DW3_TAP_W, "c_dw3_tap_read_weights"),
        "tap_mac": b(DW3_TAP_MAC, "c_dw3_tap_mac"),
        "row_end": b(DW3_ROW_END, "c_dw3_row_end"),
        "group_end": b(DW3_GROUP_END, "c_dw3_group_end"),
        "left_setup": b(DW3_LEFT_SETUP, "c_dw3_left_setup"),
        "left_tap": b(DW3_LEFT_TAP, "c_dw3_left_tap"),
        "left_end": b(DW3_LEFT_END, "c_dw3_left_end"),
        "pixel_end": b(DW3_PIXEL_END, "c_dw3_pixel_end"),
    }


def _dw3_items(g: Geom) -> list:
    k = _dw3_blocks()
    tap = [
        k["tap_in"],
        *memcpy_items(4, False, "input", "stack"),
        k["tap_w"],
        *memcpy_items(4, False, "weights", "stack"),
        k["tap_mac"],
    ]
    out4 = []
    for src in ("r8", "r9", "sl", "r0"):
        out4 += requant_out_items(True, src, "dw3")
    # r8/r9/sl are high registers: GCC moves them through a low register first
    groups, left = divmod(g.in_c, 4)
    c = g.in_c
    # address rules: pixels of a (rows, columns) class at their clamped windows; 4
    # channels per group (outputs and per-channel parameters one channel apart); per tap
    # row the next input row and filter row, per tap the next pixel and filter column
    # (the two 4-byte reads of arm_nn_read_s8x4 move each pointer 4); the filter taps
    # start at the first in-bounds one
    classes = pixels_by(g, rows_cols_key(g))
    walk = PixelWalk(g)
    nxt = {"output": 1, **qparam_moves(1)}  # the next channel's output and parameters
    gmoves = _out_moves(out4, [{}, nxt, nxt, nxt])
    pixels: list = []
    for ry, ny in sorted(g.rows_valid().items()):
        for cx, nx in sorted(g.cols_valid().items()):
            oy, ox = classes[(ry, cx)][0]
            kr0 = max(0, g.pad_t - oy * g.s_h)
            kc0 = max(0, g.pad_l - ox * g.s_w)
            w0 = (kr0 * g.k_w + kc0) * c
            rows = Loop(
                "c_dw3_rows",
                ry,
                [
                    Loop(
                        "c_dw3_taps",
                        cx,
                        tap,
                        addr={"input": Rewind(c), "weights": Rewind(c)},
                    ),
                    k["row_end"],
                ],
                addr={"input": Rewind(g.in_w * c), "weights": Rewind(g.k_w * c)},
            )
            body = [
                k["pixel"],
                Loop(
                    "c_dw3_groups",
                    groups,
                    [k["group"], rows, *out4, k["group_end"]],
                    addr={
                        "input": Rewind(4),
                        "weights": Rewind(4, start=w0),
                        "output": Rewind(4),
                        **qparam_rules(4),
                    },
                    moves=gmoves,
                ),
                Loop(
                    "c_dw3_left_channels",
                    left,
                    [
                        k["left_setup"],
                        Loop(
                            "c_dw3_left_taps",
                            ry * cx,
                            [k["left_tap"]],
                            addr={
                                "input": Rewind(c, every=cx, skip=(g.in_w - cx) * c),
                                "weights": Rewind(c, every=cx, skip=(g.k_w - cx) * c),
                            },
                        ),
                        *requant_out_items(True, "r0", "dw3"),
                        k["left_end"],
                    ],
                    # (the group loop left the pointers on the first leftover channel)
                    addr={
                        "input": Rewind(1),
                        "weights": Rewind(1, start=0 if groups else w0),
                        "output": Rewind(1),
                        **qparam_rules(1),
                    },
                ),
                k["pixel_end"],
            ]
            rules = walk.rules(classes[(ry, cx)])
            # every pixel re-reads the filters, biases and parameters from their start
            rules.update({r: Rewind(0) for r in ("weights", "bias")}, **qparam_rules())
            pixels.append(Loop(f"c_dw3_pixels_{ry}x{cx}", ny * nx, body, addr=rules))
    return pixels


# ----------------------------------------------------- depthwise_conv_s8_generic
DWG_OUT_SETUP = """
ldr    r3, [sp, #100]               ; base_idx_x
rsbs   r2, r3, #0
asrs   r1, r2, #31
bics   r2, r1                       ; ker_x_start = MAX(0, -base_idx_x)
str    r2, [sp, #104]
ldr    r1, [sp, #108]               ; input_x
subs   r1, r1, r3
ldr    r0, [sp, #112]               ; kernel_x
cmp    r1, r0
ble    .Ldwg_xend  {taken}
str    r1, [sp, #116]               ; ker_x_end
ldr    r3, [sp, #120]               ; base_idx_y
rsbs   r2, r3, #0
asrs   r1, r2, #31
bics   r2, r1
str    r2, [sp, #124]               ; ker_y_start
ldr    r1, [sp, #128]
subs   r1, r1, r3
ldr    r0, [sp, #132]
cmp    r1, r0
ble    .Ldwg_yend  {taken}
str    r1, [sp, #136]               ; ker_y_end
ldr    r3, [sp, #140]               ; idx_out_ch
lsls   r3, r3, #2
ldr    r2, [sp, #144]               ; bias
ldr    r1, [r2, r3]   {bias}
"""
DWG_DIL = """
ldr    r0, [sp, #100]
ldr    r1, [sp, #148]               ; dilation
bl     __aeabi_idiv
"""
DWG_ROW = """
ldr    r3, [sp, #124]
ldr    r2, [sp, #152]               ; dilation_y
muls   r2, r3
ldr    r3, [sp, #120]
adds   r3, r3, r2                   ; idx_y
ldr    r2, [sp, #108]
muls   r3, r2
str    r3, [sp, #156]
ldr    r3, [sp, #104]
str    r3, [sp, #116]
"""
DWG_MAC = """
ldr    r3, [sp, #192]
movs   r2, #0
mov    ip, r3
ldr    r0, [sp, #128]
ldr    r3, [sp, #96]
ldrsb  r2, [r0, r2]   {input}
ldrb   r3, [r3]       {weights}
add    r2, ip                       ; + input_offset
sxtb   r3, r3
muls   r3, r2
adds   r1, r1, r3
movs   r3, r0
ldr    r0, [sp, #224]
ldr    r2, [sp, #116]
mov    ip, r0
ldr    r0, [sp, #124]
add    r3, ip
mov    ip, r0
str    r3, [sp, #128]
ldr    r3, [sp, #96]
adds   r2, r2, #1
add    r3, ip
str    r3, [sp, #96]
ldr    r3, [sp, #80]
str    r2, [sp, #116]
cmp    r2, r3
bne    .Ldwg_cols
"""
DWG_ROW_END = """
ldr    r3, [sp, #124]
adds   r3, #1
str    r3, [sp, #124]
ldr    r2, [sp, #136]
cmp    r3, r2
blt    .Ldwg_rows
"""
DWG_OUT_END = """
ldr    r3, [sp, #160]
adds   r3, #1
str    r3, [sp, #160]
ldr    r2, [sp, #164]
cmp    r3, r2
blt    .Ldwg_outputs
"""


@cache
def _dwg_blocks():
    b = Block.asm
    return {
        "setup": b(DWG_OUT_SETUP, "c_dwg_out_setup"),
        "dil": b(DWG_DIL, "c_dwg_dilation_div"),
        "row": b(DWG_ROW, "c_dwg_row"),
        "mac": b(DWG_MAC, "c_dwg_mac"),
        "row_end": b(DWG_ROW_END, "c_dwg_row_end"),
        "out_end": b(DWG_OUT_END, "c_dwg_out_end"),
    }


def _dwg_items(g: Geom, dilated: bool) -> list:
    k = _dwg_blocks()
    head = [k["setup"]]
    if dilated:
        head = [k["setup"], *([k["dil"], idiv_block()] * 4)]
    items: list = []
    n_out_ch = g.out_c
    oc, ic = g.out_c, g.in_c
    mult = max(1, oc // max(ic, 1))
    # address rules: per tap the next (dilated) pixel / filter column, per tap row the
    # next input / filter row (its loads never move their pointers); one output per
    # (pixel, out channel): the out channel walks the filter, bias and parameters, the
    # input channel is out_ch / mult; the next pixel's window stride_x pixels on (within
    # a class row: an estimate for classes spanning several rows)
    classes = pixels_by(g, rows_cols_key(g))
    pos = _Pos()
    if mult == 1:
        elem_in = {"step": 1, "every": oc, "skip": g.s_w * ic - oc}
    else:
        elem_in = {"step": 0, "every": mult, "skip": 1}
    for ry, ny in sorted(g.rows_valid().items()):
        for cx, nx in sorted(g.cols_valid().items()):
            oy, ox = classes[(ry, cx)][0]
            kr0 = -(-max(0, g.pad_t - oy * g.s_h) // g.d_h)
            kc0 = -(-max(0, g.pad_l - ox * g.s_w) // g.d_w)
            y0 = oy * g.s_h - g.pad_t + kr0 * g.d_h
            x0 = ox * g.s_w - g.pad_l + kc0 * g.d_w
            n = ny * nx * n_out_ch
            per_row = sum(1 for y, _ in classes[(ry, cx)] if y == oy)
            body = [
                *head,
                Loop(
                    "c_dwg_rows",
                    ry,
                    [
                        k["row"],
                        Loop(
                            "c_dwg_cols",
                            cx,
                            [k["mac"]],
                            addr={"input": Rewind(ic * g.d_w), "weights": Rewind(oc)},
                        ),
                        k["row_end"],
                    ],
                    addr={
                        "input": Rewind(g.in_w * ic * g.d_h),
                        "weights": Rewind(g.k_w * oc),
                    },
                ),
                *requant_out_items(True, "r1", "dwg"),
                k["out_end"],
            ]
            rules = {
                "input": pos.rule("input", n, (y0 * g.in_w + x0) * ic, **elem_in),
                "weights": pos.rule("weights", n, (kr0 * g.k_w + kc0) * oc, 1, every=oc, skip=-oc),
                "bias": pos.rule("bias", n, 0, 4, every=oc, skip=-4 * oc),
                # channel by channel through both requantization arrays
                **{t: pos.rule(t, n, 0, 4, every=oc, skip=-4 * oc) for t in QPARAM_TAGS},
                # outputs row by row through the class (exact for a rectangle)
                "output": pos.rule(
                    "output",
                    n,
                    (oy * g.out_w + ox) * oc,
                    1,
                    every=per_row * oc,
                    skip=(g.out_w - per_row) * oc,
                ),
            }
            items.append(Loop(f"c_dwg_outputs_{ry}x{cx}", n, body, addr=rules))
    batch = {
        "input": Rewind(g.in_h * g.in_w * ic),
        "output": Rewind(g.out_pixels * oc),
        **{r: Rewind(0) for r in ("weights", "bias")},
        **qparam_rules(),
    }
    return [Loop("batches", g.batches, items, addr=batch)]


# ------------------------------------------------------- depthwise_conv_s8_mult_4
DWM4_MAC = """
movs   r3, #0
movs   r1, #0
ldrsb  r3, [r0, r3]   {input}
ldrsb  r1, [r2, r1]   {weights}
add    r3, r9                       ; + input_offset
muls   r1, r3
adds   r4, r4, r1
movs   r1, #1
ldrsb  r1, [r2, r1]   {weights}
adds   r5, r5, #1
muls   r1, r3
adds   r6, r6, r1
movs   r1, #2
ldrsb  r1, [r2, r1]   {weights}
add    r0, fp                       ; next input tap
muls   r1, r3
adds   r7, r7, r1
movs   r1, #3
ldrsb  r1, [r2, r1]   {weights}
add    r2, sl                       ; next kernel tap
muls   r3, r1
add    ip, r3
cmp    r5, r8
bne    .Ldwm4_cols
"""
DWM4_TILE = """
ldr    r3, [sp, #40]
ldr    r4, [r3]       {bias}
ldr    r6, [r3, #4]   {bias}
ldr    r7, [r3, #8]   {bias}
ldr    r2, [r3, #12]  {bias}
mov    ip, r2
adds   r3, #16
str    r3, [sp, #40]
"""
DWM4_ROW = """
ldr    r3, [sp, #44]
ldr    r2, [sp, #48]
muls   r3, r2
ldr    r2, [sp, #52]
adds   r2, r2, r3                   ; kernel pointer
ldr    r0, [sp, #56]
ldr    r5, [sp, #60]                ; ker_w_start
"""
DWM4_ROW_END = """
ldr    r3, [sp, #44]
adds   r3, #1
str    r3, [sp, #44]
ldr    r2, [sp, #64]
cmp    r3, r2
blt    .Ldwm4_rows
"""
DWM4_TILE_END = """
ldr    r3, [sp, #68]
adds   r3, #4
str    r3, [sp, #68]
ldr    r2, [sp, #72]
cmp    r3, r2
blt    .Ldwm4_tiles
"""


@cache
def _dwm4_blocks():
    b = Block.asm
    return {
        "mac": b(DWM4_MAC, "c_dwm4_mac"),
        "tile": b(DWM4_TILE, "c_dwm4_tile"),
        "row": b(DWM4_ROW, "c_dwm4_row"),
        "row_end": b(DWM4_ROW_END, "c_dwm4_row_end"),
        "tile_end": b(DWM4_TILE_END, "c_dwm4_tile_end"),
    }


def _dwm4_items(g: Geom, mult: int) -> list:
    k = _dwm4_blocks()
    out4 = []
    for src in ("r4", "r6", "r7", "r0"):
        out4 += requant_out_items(True, src, "dwm4")
    items: list = []
    tiles = g.in_c * (mult // 4)
    oc, ic = g.out_c, g.in_c
    # address rules: per tap the next pixel / filter column, per tap row the next row;
    # a tile is 4 out channels of one input channel (outputs and parameters one channel
    # apart); pixels of a class at their clamped windows, filters from the first
    # in-bounds tap
    classes = pixels_by(g, rows_cols_key(g))
    walk = PixelWalk(g)
    nxt = {"output": 1, **qparam_moves(1)}
    tmoves = _out_moves(out4, [{}, nxt, nxt, nxt])
    for ry, ny in sorted(g.rows_valid().items()):
        for cx, nx in sorted(g.cols_valid().items()):
            oy, ox = classes[(ry, cx)][0]
            kr0 = max(0, g.pad_t - oy * g.s_h)
            kc0 = max(0, g.pad_l - ox * g.s_w)
            tile = [
                k["tile"],
                Loop(
                    "c_dwm4_rows",
                    ry,
                    [
                        k["row"],
                        Loop(
                            "c_dwm4_cols",
                            cx,
                            [k["mac"]],
                            addr={"input": Rewind(ic), "weights": Rewind(oc)},
                        ),
                        k["row_end"],
                    ],
                    addr={"input": Rewind(g.in_w * ic), "weights": Rewind(g.k_w * oc)},
                ),
                *out4,
                k["tile_end"],
            ]
            tiles_loop = Loop(
                "c_dwm4_tiles",
                tiles,
                tile,
                addr={
                    "input": Rewind(0, every=mult // 4, skip=1),
                    "weights": Rewind(4, start=(kr0 * g.k_w + kc0) * oc),
                    "output": Rewind(4),
                    **qparam_rules(4),
                },
                moves=tmoves,
            )
            rules = walk.rules(classes[(ry, cx)])
            rules.update({r: Rewind(0) for r in ("weights", "bias")}, **qparam_rules())
            items.append(Loop(f"c_dwm4_pixels_{ry}x{cx}", ny * nx, [tiles_loop], addr=rules))
    return items


def depthwise_c_program(graph: Graph, op: Op) -> Program:
    g = conv_geom(graph, op)
    mult = max(1, g.out_c // max(1, g.in_c))
    macs = g.batches * g.out_pixels * g.out_c * g.k_h * g.k_w
    dil1 = g.d_h == 1 and g.d_w == 1
    notes = ["CMSIS-NN pure C (no ARM_MATH_DSP); requantization calls __aeabi_lmul"]
    if mult == 1 and g.batches == 1 and dil1:
        if g.k_h == 3 and g.k_w == 3 and g.pad_t <= 1 and g.pad_l <= 1:
            fn, kernel = "arm_depthwise_conv_3x3_s8", "arm_depthwise_conv_3x3_s8 (C)"
            items = _dw3_items(g)
            notes.append("arm_nn_read_s8x4 is a 4-byte memcpy call on Armv6-M")
        else:
            fn = "arm_depthwise_conv_s8"
            kernel = (
                "arm_depthwise_conv_s8_opt -> arm_depthwise_conv_s8 (depthwise_conv_s8_generic)"
            )
            items = _dwg_items(g, False)
    elif mult % 4 == 0 and g.batches == 1 and dil1:
        fn, kernel = "arm_depthwise_conv_s8", "arm_depthwise_conv_s8 (depthwise_conv_s8_mult_4)"
        items = _dwm4_items(g, mult)
    else:
        fn, kernel = "arm_depthwise_conv_s8", "arm_depthwise_conv_s8 (depthwise_conv_s8_generic)"
        items = _dwg_items(g, not dil1)
    return Program([entry_block(fn), *items, exit_block(fn)], kernel=kernel, macs=macs, notes=notes)
