"""DEPTHWISE_CONV_2D on Armv7E-M + DSP as CMSIS-NN runs it (arm_depthwise_conv_wrapper_s8).

Dispatch (non-MVE): ch_mult == 1, batch 1 and no dilation ->
  3x3 filter with padding <= 1: arm_depthwise_conv_3x3_s8 (4 channels per step, one word
  of input and weights per tap, SMLABB/SMLATT), else arm_depthwise_conv_s8_opt (s16
  im2col of the whole patch, 4 channels x 2 taps per step with PKHBT/PKHTB + SMLAD).
Otherwise arm_depthwise_conv_s8: ch_mult % 4 == 0 (batch 1, no dilation) ->
  depthwise_conv_s8_mult_4 (4 output channels per input value), else the generic scalar
  loop. Border taps are skipped in all three (trip counts from the layer geometry).
"""

from __future__ import annotations

from collections import Counter
from functools import cache

from mcusim.graph import Graph, Op
from mcusim.isa.schedule import Block, Loop, Program, Rewind

from .common import (
    GCC_PARAMS_POST,
    GCC_RQ_DIV,
    GCC_RQ_MUL,
    Geom,
    PixelWalk,
    conv_geom,
    gcc_out_block,
    memset_items,
    pixels_by,
    qparam_rules,
    rows_cols_key,
)

# ------------------------------------------------------------------ arm_depthwise_conv_3x3_s8
DW3_TAP = """
ldr     r4, [r0{off}]   {{input}}     ; 4 channels of one input pixel
ldr     r5, [r1{off}]   {{weights}}   ; 4 channels of one filter tap
sxtab16 r6, r3, r4, ror #8          ; odd input bytes + input offset
sxtb16  r7, r5, ror #8
smlabb  r9, r6, r7, r9
sxtab16 r4, r3, r4
smlatt  r11, r6, r7, r11
sxtb16  r5, r5
smlabb  r8, r4, r5, r8
smlatt  r10, r4, r5, r10
"""
DW3_CHECK_LEFT = """
ldr     ip, [sp, #8]                 ; ker_w_start
cmp     ip, #0
bne     .Ldw3_noleft
"""
DW3_CHECK_RIGHT = """
ldr     ip, [sp, #12]                ; input_x - in_w
cmp     ip, #2
ble     .Ldw3_noright
"""
DW3_ROW_END = """
add     r0, r0, lr                   ; input_ptr += input_ch * input_x
add     r1, r1, r2, lsl #1
add     r1, r1, r2                   ; kernel_ptr += input_ch * 3
adds    r6, #1
ldr     ip, [sp, #16]                ; MIN(3, input_y - in_h)
cmp     r6, ip
blt     .Ldw3_rows
"""
DW3_GROUP_SETUP = """
ldr     r8, [r5], #4    {bias}
ldr     r9, [r5], #4    {bias}
ldr     r10, [r5], #4   {bias}
ldr     r11, [r5], #4   {bias}
ldr     ip, [sp, #20]                ; in_h + ker_h_start
ldr     r6, [sp, #24]                ; in_w
mla     r0, ip, lr, r7
mla     r0, r6, r2, r0               ; input_ptr
ldr     r6, [sp, #28]                ; ker_h_start
add     ip, r2, r2, lsl #1
ldr     r1, [sp, #32]
mla     r1, r6, ip, r1               ; kernel_ptr
ldr     r3, [sp, #36]                ; offset pair (PKHBT hoisted)
"""
DW3_GROUP_END = """
adds    r7, #4
ldr     ip, [sp, #40]                ; input_ch - 4
cmp     r7, ip
ble     .Ldw3_groups
"""
# per output pixel, as GCC 12 -O2 compiles the 2024 kernel: the window bounds (ker_w_start,
# MIN(3, input_x - in_w), ker_h end) clamped and spilled, the group loop's pointers set up
# (loop-invariant values GCC keeps on the stack), and at the end the moves of in_w /
# the output pointer and the pixel counter, all through the stack
DW3_PIXEL_SETUP = """
ldr     r3, [sp, #80]                ; in_w
cmp     r3, #0
ldr     r3, [sp, #84]
it      gt
movgt   r3, #0
str     r3, [sp, #16]                ; ker_w_start
ldr     r3, [sp, #64]
cmp     r3, #3
ble     .Ldw3_narrow
ldr     r2, [sp, #92]
ldr     r3, [sp, #100]
ldr     fp, [sp, #232]
str     r0, [sp, #96]
add     r3, r2
cmp     r3, #3
it      ge
movge   r3, #3
str     r3, [sp, #12]                ; MIN(3, input_y - in_h)
ldr     r3, [sp, #76]
subs    r3, #4
str     r3, [sp, #56]
ldr     r3, [sp, #240]
ldrd    r9, r8, [sp, #104]
movs    r2, #4
add     r3, r0
str     r3, [sp, #60]
mov     r3, r2
mov     r2, fp
mov     fp, r9
mov     r9, r3
cmp     r2, #0
beq     .Ldw3_nobias
ldr     r5, [sp, #48]                ; bias = bias_base
movs    r7, #0                       ; in_ch
"""
DW3_PIXEL_END = """
ldr     r0, [sp, #96]
ldr     r5, [sp, #124]
mov     fp, r2
ldr     r2, [sp, #128]
adds    r3, r0, #4
adds    r0, r2, r3
ldr     r1, [sp, #64]
cmp     r1, r5
ble     .Ldw3_noleftover{taken}
ldr     r2, [sp, #116]
ldr     r1, [sp, #80]
ldr     r4, [sp, #120]
ldr     r3, [sp, #88]
add     r1, r2
str     r1, [sp, #80]                ; in_w += stride_x
ldr     r1, [sp, #84]
subs    r1, r1, r2
str     r1, [sp, #84]
ldr     r1, [sp, #76]
add     r1, r4
str     r1, [sp, #76]
ldr     r1, [sp]
subs    r2, r1, r2
str     r2, [sp]
ldr     r2, [sp, #112]
adds    r3, #1
cmp     r2, r3
str     r3, [sp, #88]
bne     .Ldw3_pixels
"""
DW3_LEFT_TAP = """
ldrsb   r4, [r0{off}]   {{input}}
ldrsb   r6, [r1{off}]   {{weights}}
add     r4, r4, r3
mla     r8, r4, r6, r8
"""
DW3_LEFT_SETUP = """
ldr     r8, [r5], #4    {bias}
ldr     ip, [sp, #20]
mla     r0, ip, lr, r7
ldr     ip, [sp, #24]
mla     r0, ip, r2, r0
ldr     r1, [sp, #32]
add     r1, r1, r7
ldr     r3, [sp, #64]                ; input_offset
"""
DW3_LEFT_END = """
adds    r7, #1
cmp     r7, r2
blt     .Ldw3_leftover
"""
DW3_ENTRY = """
push    {r4, r5, r6, r7, r8, r9, r10, r11, lr}
sub     sp, #68
ldr     r4, [sp, #112]
ldr     r2, [r4, #12] {stack}  ; input_ch
ldr     lr, [r4, #8] {stack}
mul     lr, lr, r2                   ; input_ch * input_x
"""
DW3_EXIT = """
movs    r0, #0
add     sp, #68
pop     {r4, r5, r6, r7, r8, r9, r10, r11, pc}
"""


@cache
def _dw3_blocks():
    b = Block.asm
    taps = {
        "left": b(DW3_TAP.format(off=""), "dw3_tap_left"),
        "mid": b(DW3_TAP.format(off=", r2"), "dw3_tap_mid"),
        "right": b(
            DW3_TAP.format(off=", r2, lsl #1").replace("[r1, r2, lsl #1]", "[r1, ip]"),
            "dw3_tap_right",
        ),
    }
    return {
        **taps,
        "check_left": b(DW3_CHECK_LEFT, "dw3_check_left"),
        "check_right": b(DW3_CHECK_RIGHT, "dw3_check_right"),
        # the tap is absent at the border: the compare's branch skips it (taken)
        "skip_left": b(DW3_CHECK_LEFT.replace("noleft", "noleft {taken}"), "dw3_skip_left"),
        "skip_right": b(DW3_CHECK_RIGHT.replace("noright", "noright {taken}"), "dw3_skip_right"),
        "row_end": b(DW3_ROW_END, "dw3_row_end"),
        "group_setup": b(DW3_GROUP_SETUP, "dw3_group_setup"),
        "group_end": b(DW3_GROUP_END, "dw3_group_end"),
        "pixel_setup": b(DW3_PIXEL_SETUP, "dw3_pixel_setup"),
        "pixel_end": b(DW3_PIXEL_END, "dw3_pixel_end"),
        "l_tap_left": b(DW3_LEFT_TAP.format(off=""), "dw3_ch1_tap_left"),
        "l_tap_mid": b(DW3_LEFT_TAP.format(off=", r2"), "dw3_ch1_tap_mid"),
        "l_tap_right": b(DW3_LEFT_TAP.format(off=", ip"), "dw3_ch1_tap_right"),
        "l_setup": b(DW3_LEFT_SETUP, "dw3_ch1_setup"),
        "l_end": b(DW3_LEFT_END, "dw3_ch1_end"),
        "entry": b(DW3_ENTRY, "dw3_entry"),
        "exit": b(DW3_EXIT, "dw3_exit"),
    }


def _dw3_x_classes(g: Geom) -> Counter:
    """Counter over output columns of (left tap present, right tap present)."""
    c: Counter = Counter()
    for ox in range(g.out_w):
        in_w = ox * g.s_w - g.pad_l
        c[(in_w >= 0, g.in_w - in_w >= 3)] += 1
    return c


def _dw3_y_classes(g: Geom) -> Counter:
    c: Counter = Counter()
    for oy in range(g.out_h):
        in_h = oy * g.s_h - g.pad_t
        c[min(3, g.in_h - in_h) - max(0, -in_h)] += 1
    return c


def depthwise_3x3_items(g: Geom) -> list:
    k = _dw3_blocks()
    ch4, chl = g.in_c // 4, g.in_c % 4
    c = g.in_c
    # taps read [ptr], [ptr, r2] and [ptr, r2, lsl #1] / [r1, ip]: one channel group of
    # three neighbouring pixels (input) or filter taps (weights)
    regs = {"r2": c, "ip": 2 * c}
    rows_addr = {"input": Rewind(g.in_w * c), "weights": Rewind(3 * c)}

    def key(oy: int, ox: int):
        in_h, in_w = oy * g.s_h - g.pad_t, ox * g.s_w - g.pad_l
        return (min(3, g.in_h - in_h) - max(0, -in_h), (in_w >= 0, g.in_w - in_w >= 3))

    classes = pixels_by(g, key)
    walk = PixelWalk(g, clamp=False)  # the left tap sits at column -1 when padded
    outs = [gcc_out_block(r) for r in ("r8", "r9", "r10", "r11")]
    items: list = [k["entry"]]
    for rows, ny in sorted(_dw3_y_classes(g).items()):
        for (left, right), nx in sorted(_dw3_x_classes(g).items()):
            row_body = [
                k["check_left" if left else "skip_left"],
                *([k["left"]] if left else []),
                k["mid"],
                k["check_right" if right else "skip_right"],
                *([k["right"]] if right else []),
                k["row_end"],
            ]
            l_row = [
                k["check_left" if left else "skip_left"],
                *([k["l_tap_left"]] if left else []),
                k["l_tap_mid"],
                k["check_right" if right else "skip_right"],
                *([k["l_tap_right"]] if right else []),
                k["row_end"],
            ]
            group = Loop(
                "dw3_channel_groups",
                ch4,
                [
                    k["group_setup"],
                    Loop("dw3_rows", rows, row_body, addr=rows_addr),
                    *outs,
                    k["group_end"],
                ],
                addr={"input": Rewind(4), "weights": Rewind(4)},
            )
            leftover = Loop(
                "dw3_leftover_channels",
                chl,
                [
                    k["l_setup"],
                    Loop("dw3_ch1_rows", rows, l_row, addr=rows_addr),
                    outs[0],
                    k["l_end"],
                ],
                addr={"input": Rewind(1), "weights": Rewind(1)},
            )
            tag = f"{rows}r{'L' if left else ''}{'R' if right else ''}"
            items.append(
                Loop(
                    f"dw3_pixels_{tag}",
                    ny * nx,
                    [k["pixel_setup"], group, leftover, k["pixel_end"]],
                    addr={
                        **walk.rules(classes[(rows, (left, right))]),
                        "weights": Rewind(0),
                        "bias": Rewind(0),
                        **qparam_rules(),
                    },
                    regs=regs,
                )
            )
    items.append(k["exit"])
    return items


# -------------------------------------------------------------- arm_depthwise_conv_s8_opt
Q15_CALL = """
mla     r0, r4, r6, r5               ; (idx_y * input_x + idx_x)
ldr     r3, [sp, #16]                ; input_ch
ldr     ip, [sp, #20]                ; input
mla     r0, r0, r3, ip
ldr     r1, [sp, #24]                ; &col_buffer[index]
mov     r2, r3
ldr     r3, [sp, #28]                ; input_offset
bl      arm_q7_to_q15_with_offset
push    {r4, r5, lr}
pkhbt   r3, r3, r3, lsl #16
asrs    r4, r2, #2
beq     .Lq15_tail
"""
Q15_INNER = """
ldr     r5, [r0], #4    {input}
ror     ip, r5, #8
sxtab16 ip, r3, ip                   ; odd bytes + offset
sxtab16 r5, r3, r5                   ; even bytes + offset
pkhtb   lr, ip, r5, asr #16
pkhbt   r5, r5, ip, lsl #16
str     r5, [r1], #4    {scratch}
str     lr, [r1], #4    {scratch}
subs    r4, #1
bne     .Lq15_loop
"""
Q15_TAIL = """
ldrsb   r5, [r0], #1    {input}
add     r5, r3
strh    r5, [r1], #2    {scratch}
subs    r2, #1
bne     .Lq15_tail
"""
Q15_RET = "pop {r4, r5, pc}"
OPT_TAP_TEST = """
ldr     r5, [sp, #32]                ; base_idx_x
add     r5, r5, r7                   ; idx_x
cmp     r5, #0
blt     .Lopt_padx
ldr     ip, [sp, #36]                ; input_x
cmp     r5, ip
bge     .Lopt_padx
"""
OPT_TAP_END = """
ldr     ip, [sp, #24]
ldr     r3, [sp, #16]
add     ip, ip, r3, lsl #1
str     ip, [sp, #24]                ; index += input_ch
adds    r7, #1
ldr     ip, [sp, #40]                ; kernel_x
cmp     r7, ip
blt     .Lopt_taps
"""
OPT_PAD_ARGS = """
ldr     r0, [sp, #24]
movs    r1, #0
ldr     r2, [sp, #16]
lsls    r2, r2, #1
"""
OPT_MAC8 = """
ldr     r4, [r1]        {weights}    ; 4 weights, tap t
ldr     r5, [r1, r3]    {weights}    ; 4 weights, tap t+1
ldr     r6, [r2]        {scratch}    ; 2 x s16, tap t
ldr     r7, [r2, r3, lsl #1] {scratch}  ; 2 x s16, tap t+1
ror     ip, r4, #8
sxtb16  lr, r4
sxtb16  r4, ip
ror     ip, r5, #8
sxtb16  r0, r5
sxtb16  r5, ip
str     r0, [sp, #4]                 ; spill
pkhbt   ip, r6, r7, lsl #16
pkhtb   r6, r7, r6, asr #16
pkhbt   r7, lr, r0, lsl #16
smlad   r8, ip, r7, r8
pkhbt   r7, r4, r5, lsl #16
smlad   r9, r6, r7, r9
add     ip, r2, r3, lsl #1
ldr     r6, [r2, #4]    {scratch}
ldr     r7, [ip, #4]    {scratch}
pkhbt   ip, r6, r7, lsl #16
pkhtb   r6, r7, r6, asr #16
ldr     r0, [sp, #4]                 ; reload
pkhtb   r7, lr, r0, asr #16
smlad   r10, ip, r7, r10
pkhtb   r7, r5, r4, asr #16
smlad   r11, r6, r7, r11
add     r1, r1, r3, lsl #1           ; row_pos += 2 * input_ch
add     r2, r2, r3, lsl #2           ; col_pos += 2 * input_ch (s16)
ldr     r0, [sp, #8]                 ; col_count (spilled)
subs    r0, #1
str     r0, [sp, #8]
bne     .Lopt_mac8
"""
OPT_MAC4_ODD = """
ldrsb   r4, [r1]        {weights}
ldrsh   r6, [r2]        {scratch}
mla     r8, r4, r6, r8
ldrsb   r4, [r1, #1]    {weights}
ldrsh   r6, [r2, #2]    {scratch}
mla     r9, r4, r6, r9
ldrsb   r4, [r1, #2]    {weights}
ldrsh   r6, [r2, #4]    {scratch}
mla     r10, r4, r6, r10
ldrsb   r4, [r1, #3]    {weights}
ldrsh   r6, [r2, #6]    {scratch}
mla     r11, r4, r6, r11
"""
OPT_GROUP_SETUP = """
ldr     r8, [r5], #4    {bias}
ldr     r9, [r5], #4    {bias}
ldr     r10, [r5], #4   {bias}
ldr     r11, [r5], #4   {bias}
ldr     r2, [sp, #44]                ; col_buffer_start
ldr     ip, [sp, #48]                ; row_shift
add     r2, r2, ip, lsl #1
ldr     r1, [sp, #52]                ; kernel
add     r1, r1, ip
adds    ip, #4
str     ip, [sp, #48]
ldr     r3, [sp, #16]
ldr     r0, [sp, #56]                ; (kernel_x * kernel_y) / 2
str     r0, [sp, #8]
"""
OPT_GROUP_END = """
ldr     ip, [sp, #60]
subs    ip, #1
str     ip, [sp, #60]
bne     .Lopt_groups
"""
OPT_CH1_SETUP = """
ldr     r8, [r5], #4    {bias}
ldr     r2, [sp, #44]
ldr     ip, [sp, #48]
add     r2, r2, ip, lsl #1
ldr     r1, [sp, #52]
add     r1, r1, ip
adds    ip, #1
str     ip, [sp, #48]
ldr     r3, [sp, #16]
"""
OPT_CH1_MAC = """
ldrsb   r4, [r1]        {weights}
ldrsh   r6, [r2]        {scratch}
add     r1, r1, r3
add     r2, r2, r3, lsl #1
mla     r8, r4, r6, r8
subs    r0, #1
bne     .Lopt_ch1
"""
OPT_CH1_END = """
ldr     ip, [sp, #64]
subs    ip, #1
str     ip, [sp, #64]
bne     .Lopt_ch1_rows
"""
OPT_PIXEL_SETUP = """
ldr     r3, [sp, #68]                ; i_out_x
ldr     ip, [sp, #72]                ; stride_x
mul     r3, r3, ip
ldr     ip, [sp, #76]
subs    r3, r3, ip
str     r3, [sp, #32]                ; base_idx_x
ldr     r3, [sp, #44]
str     r3, [sp, #24]                ; index = 0
movs    r3, #0
str     r3, [sp, #48]                ; row_shift
ldr     r5, [sp, #80]                ; bias start
"""
OPT_ROW_SETUP = """
movs    r7, #0
ldr     r4, [sp, #84]                ; idx_y
"""
OPT_ROW_END = """
adds    r4, #1
str     r4, [sp, #84]
ldr     ip, [sp, #88]
cmp     r4, ip
blt     .Lopt_rows
"""
OPT_PIXEL_END = """
ldr     r3, [sp, #68]
adds    r3, #1
str     r3, [sp, #68]
ldr     ip, [sp, #92]
cmp     r3, ip
blt     .Lopt_pixels
"""
OPT_ENTRY = """
push    {r4, r5, r6, r7, r8, r9, r10, r11, lr}
sub     sp, #100
ldr     r4, [sp, #144]
ldr     r3, [r4, #12] {stack}
str     r3, [sp, #16]
"""
OPT_EXIT = """
movs    r0, #0
add     sp, #100
pop     {r4, r5, r6, r7, r8, r9, r10, r11, pc}
"""


@cache
def _opt_blocks():
    b = Block.asm
    names = {
        "q15_call": Q15_CALL,
        "q15_inner": Q15_INNER,
        "q15_tail": Q15_TAIL,
        "q15_ret": Q15_RET,
        "tap_test": OPT_TAP_TEST,
        "tap_end": OPT_TAP_END,
        "pad_args": OPT_PAD_ARGS,
        "mac8": OPT_MAC8,
        "mac4_odd": OPT_MAC4_ODD,
        "group_setup": OPT_GROUP_SETUP,
        "group_end": OPT_GROUP_END,
        "ch1_setup": OPT_CH1_SETUP,
        "ch1_mac": OPT_CH1_MAC,
        "ch1_end": OPT_CH1_END,
        "pixel_setup": OPT_PIXEL_SETUP,
        "row_setup": OPT_ROW_SETUP,
        "row_end": OPT_ROW_END,
        "pixel_end": OPT_PIXEL_END,
        "entry": OPT_ENTRY,
        "exit": OPT_EXIT,
    }
    return {k: b(v, f"dwopt_{k}") for k, v in names.items()}


def depthwise_opt_items(g: Geom) -> list:
    k = _opt_blocks()
    c = g.in_c
    kk = g.k_h * g.k_w
    aligned = c % 2 == 0
    outs = [gcc_out_block(r) for r in ("r8", "r9", "r10", "r11")]
    # compute part: the same for every pixel; the s16 patch (2 * c * kk bytes, just
    # written by the im2col part) is read back from its start, 4 channels per group
    patch = 2 * c * kk
    compute = [
        Loop(
            "dwopt_channel_groups",
            g.out_c // 4,
            addr={"weights": Rewind(4), "scratch": Rewind(8, start=-patch)},
            body=[
                k["group_setup"],
                Loop("dwopt_mac8", kk // 2, [k["mac8"]]),
                *([k["mac4_odd"]] if kk % 2 else []),
                *outs,
                k["group_end"],
            ],
        ),
        Loop(
            "dwopt_leftover_channels",
            g.out_c % 4,
            [k["ch1_setup"], Loop("dwopt_ch1_mac", kk, [k["ch1_mac"]]), outs[0], k["ch1_end"]],
            addr={"weights": Rewind(1), "scratch": Rewind(2)},
        ),
    ]
    widen = [
        k["q15_call"],
        Loop("q7_to_q15", c // 4, [k["q15_inner"]]),
        Loop("q7_to_q15_tail", c % 4, [k["q15_tail"]]),
        k["q15_ret"],
    ]
    items: list = [k["entry"]]
    rows_c = g.rows_valid()
    cols_c = g.cols_valid()
    classes = pixels_by(g, rows_cols_key(g))
    walk = PixelWalk(g)
    for ry, ny in sorted(rows_c.items()):
        for cx, nx in sorted(cols_c.items()):
            # rows outside the input are zeroed with one memset each side
            pad_rows = g.k_h - ry
            im2col = [
                Loop(
                    "dwopt_pad_rows",
                    1 if pad_rows else 0,
                    memset_items(2 * g.k_w * c * pad_rows, True, "scratch"),
                ),
                Loop(
                    "dwopt_rows",
                    ry,
                    addr={"input": Rewind(g.in_w * c)},
                    body=[
                        k["row_setup"],
                        Loop("dwopt_copy_taps", cx, [k["tap_test"], *widen, k["tap_end"]]),
                        Loop(
                            "dwopt_pad_taps",
                            g.k_w - cx,
                            [
                                k["tap_test"],
                                k["pad_args"],
                                *memset_items(2 * c, aligned, "scratch"),
                                k["tap_end"],
                            ],
                        ),
                        k["row_end"],
                    ],
                ),
            ]
            items.append(
                Loop(
                    f"dwopt_pixels_{ry}x{cx}",
                    ny * nx,
                    [k["pixel_setup"], *im2col, *compute, k["pixel_end"]],
                    addr={
                        **walk.rules(classes[(ry, cx)]),
                        "scratch": Rewind(0),
                        "weights": Rewind(0),
                        "bias": Rewind(0),
                        **qparam_rules(),
                    },
                    regs={"r3": c},  # [r1, r3], [r2, r3, lsl #1], add r1, r1, r3, lsl #1
                )
            )
    items.append(k["exit"])
    return items


# ------------------------------------------------------------ arm_depthwise_conv_s8 (mult_4)
# GCC 12 -O2: the four weights of a tap are four LDRSB (not one word + SXTB), the tap
# counter is compared against its end, both pointers step by register
M4_TAP = """
ldrsb   r4, [r0]        {input}      ; input value of this channel
ldrsb   r5, [r1]        {weights}    ; weight of output channel 0
add     r4, r4, r3                   ; + input_offset
mla     r8, r4, r5, r8
ldrsb   r5, [r1, #1]    {weights}
mla     r9, r4, r5, r9
ldrsb   r5, [r1, #2]    {weights}
adds    ip, #1
mla     r10, r4, r5, r10
ldrsb   r5, [r1, #3]    {weights}
cmp     ip, r6
add     r0, r0, r2                   ; next input pixel (input_ch)
mla     r11, r4, r5, r11
add     r1, r1, lr                   ; next tap (output_ch)
bne     .Lm4_taps
"""
M4_ROW_SETUP = """
ldr     r6, [sp, #24]                ; ker_x end
cmp     r6, ip
mov     r1, r9                       ; kernel row start
bge     .Lm4_norow
ldr     r0, [sp, #28]                ; input row start
strd    r2, r3, [sp, #4]
add     r0, r3
movs    ip, #0
"""
M4_ROW_END = """
ldrd    r2, r3, [sp, #4]
ldr     r7, [sp, #16]
add     r9, r7                       ; kernel row += k_w * output_ch
ldr     r7, [sp, #20]
add     r3, r7                       ; input row += input_x * input_ch
ldr     r7, [sp, #12]
adds    r2, #1
cmp     r2, r7
bne     .Lm4_rows
"""
# the four outputs of a tile: requantized (multiplier/shift per channel), clamped with
# the limits reloaded from the stack, packed with BFI into one word store
M4_TILE_OUT = (
    "".join(
        GCC_PARAMS_POST + (GCC_RQ_MUL.format(src=r) + GCC_RQ_DIV).replace("r2", r)
        for r in ("r8", "r9", "r10", "r11")
    )
    + "".join(
        f"ldr r4, [sp, #244]\nadd {r}, r4\nldr r4, [sp, #252]\ncmp {r}, r4\nit lt\n"
        f"movlt {r}, r4\nldr r4, [sp, #256]\ncmp {r}, r4\nit ge\nmovge {r}, r4\n"
        for r in ("r8", "r9", "r10", "r11")
    )
    + """
movs    r4, #0
bfi     r4, r8, #0, #8
bfi     r4, r9, #8, #8
bfi     r4, r10, #16, #8
ldr     r1, [sp, #224]
bfi     r4, r11, #24, #8
str     r4, [r1], #4    {output}
"""
)
M4_TILE_SETUP = """
ldr     r8, [r5], #4    {bias}
ldr     r9, [r5], #4    {bias}
ldr     r10, [r5], #4   {bias}
ldr     r11, [r5], #4   {bias}
ldr     r6, [sp, #28]
str     r6, [sp, #8]                 ; ker_h = ker_h_start
"""
M4_TILE_END = """
ldr     r6, [sp, #32]
adds    r6, #4
str     r6, [sp, #32]
ldr     r7, [sp, #36]
cmp     r6, r7
blt     .Lm4_tiles
"""
M4_PIXEL = """
ldr     r3, [sp, #40]
ldr     ip, [sp, #44]
add     r3, r3, ip
str     r3, [sp, #40]
rsbs    ip, r3, #0
bic     ip, ip, ip, asr #31
str     ip, [sp, #48]
ldr     ip, [sp, #52]
adds    ip, #1
str     ip, [sp, #52]
ldr     r3, [sp, #56]
cmp     ip, r3
blt     .Lm4_pixels
"""

# generic: one output channel per pass, scalar MAC per tap
GEN_TAP = """
ldrsb   r4, [r0]        {input}
ldrsb   r5, [r1]        {weights}
add     r0, r0, r2
add     r1, r1, lr
add     r4, r4, r3
mla     r8, r4, r5, r8
subs    ip, #1
bne     .Lgen_taps
"""
GEN_OUT_SETUP = """
ldr     r6, [sp, #8]
ldr     r8, [r5, r6, lsl #2] {bias}
ldr     r7, [sp, #12]
cmp     r7, #1
ble     .Lgen_nodil
ldr     ip, [sp, #16]
ldr     r0, [sp, #20]
ldr     r1, [sp, #24]
"""
GEN_ROW = """
ldr     r0, [sp, #28]
ldr     r1, [sp, #32]
mla     r0, r6, r2, r0
mla     r1, r6, lr, r1
ldr     ip, [sp, #36]
"""
GEN_ROW_END = """
adds    r6, #1
ldr     r7, [sp, #40]
cmp     r6, r7
blt     .Lgen_rows
"""
GEN_OUT_END = """
ldr     r6, [sp, #8]
adds    r6, #1
str     r6, [sp, #8]
ldr     r7, [sp, #44]
cmp     r6, r7
blt     .Lgen_outs
"""
DW_ENTRY = """
push    {r4, r5, r6, r7, r8, r9, r10, r11, lr}
sub     sp, #76
ldr     r4, [sp, #120]
ldr     r2, [r4, #12] {stack}
"""
DW_EXIT = """
movs    r0, #0
add     sp, #76
pop     {r4, r5, r6, r7, r8, r9, r10, r11, pc}
"""


@cache
def _dwg_blocks():
    b = Block.asm
    names = {
        "m4_tap": M4_TAP,
        "m4_row_setup": M4_ROW_SETUP,
        "m4_row_end": M4_ROW_END,
        "m4_tile_setup": M4_TILE_SETUP,
        "m4_tile_end": M4_TILE_END,
        "m4_tile_out": M4_TILE_OUT,
        "m4_pixel": M4_PIXEL,
        "gen_tap": GEN_TAP,
        "gen_out_setup": GEN_OUT_SETUP,
        "gen_row": GEN_ROW,
        "gen_row_end": GEN_ROW_END,
        "gen_out_end": GEN_OUT_END,
        "entry": DW_ENTRY,
        "exit": DW_EXIT,
    }
    return {k: b(v, f"dw_{k}") for k, v in names.items()}


def depthwise_generic_items(g: Geom, ch_mult: int, mult4: bool) -> list:
    k = _dwg_blocks()
    c = g.in_c
    oc = g.out_c
    # input steps over pixels (r2 = input_ch), weights over taps (lr = output_ch)
    regs = {"r2": c, "lr": oc}
    rows_addr = {"input": Rewind(g.in_w * c), "weights": Rewind(g.k_w * oc)}
    classes = pixels_by(g, rows_cols_key(g))
    walk = PixelWalk(g)
    outs = [gcc_out_block(r) for r in ("r8", "r9", "r10", "r11")]
    items: list = [k["entry"]]
    for ry, ny in sorted(g.rows_valid().items()):
        for cx, nx in sorted(g.cols_valid().items()):
            if mult4:
                tile = Loop(
                    "dw_mult4_tiles",
                    g.in_c * (ch_mult // 4),
                    [
                        k["m4_tile_setup"],
                        Loop(
                            "dw_mult4_rows",
                            ry,
                            addr=rows_addr,
                            body=[
                                k["m4_row_setup"],
                                Loop("dw_mult4_taps", cx, [k["m4_tap"]]),
                                k["m4_row_end"],
                            ],
                        ),
                        k["m4_tile_out"],
                        k["m4_tile_end"],
                    ],
                    # 4 output channels per tile; a tile's input channel is tile // (mult/4)
                    addr={"weights": Rewind(4), "input": Rewind(0, every=ch_mult // 4, skip=1)},
                )
                body = [tile, k["m4_pixel"]]
            else:
                out = Loop(
                    "dw_generic_outputs",
                    g.out_c,
                    [
                        k["gen_out_setup"],
                        Loop(
                            "dw_generic_rows",
                            ry,
                            addr=rows_addr,
                            body=[
                                k["gen_row"],
                                Loop("dw_generic_taps", cx, [k["gen_tap"]]),
                                k["gen_row_end"],
                            ],
                        ),
                        outs[0],
                        k["gen_out_end"],
                    ],
                    addr={
                        "weights": Rewind(1),
                        "bias": Rewind(4),  # bias[ch] by register index
                        "input": Rewind(0, every=ch_mult, skip=1),  # channel = out // mult
                    },
                )
                body = [out, k["m4_pixel"]]
            items.append(
                Loop(
                    f"dw_pixels_{ry}x{cx}",
                    ny * nx * g.batches,
                    body,
                    addr={
                        **(
                            walk.rules(classes[(ry, cx)])
                            if g.batches == 1
                            else {"input": Rewind(g.s_w * c)}
                        ),
                        "weights": Rewind(0),
                        "bias": Rewind(0),
                        **qparam_rules(),
                    },
                    regs=regs,
                )
            )
    items.append(k["exit"])
    return items


def depthwise_program(graph: Graph, op: Op) -> Program:
    g = conv_geom(graph, op)
    mult = max(1, g.out_c // max(g.in_c, 1))  # ch_mult as TFLM passes it to CMSIS-NN
    macs = g.batches * g.out_pixels * g.out_c * g.k_h * g.k_w
    no_dil = g.d_h == 1 and g.d_w == 1
    if mult == 1 and g.batches == 1 and no_dil:
        if g.k_h == 3 and g.k_w == 3 and g.pad_t <= 1 and g.pad_l <= 1:
            return Program(depthwise_3x3_items(g), kernel="arm_depthwise_conv_3x3_s8", macs=macs)
        return Program(depthwise_opt_items(g), kernel="arm_depthwise_conv_s8_opt", macs=macs)
    if mult % 4 == 0 and g.batches == 1 and no_dil:
        return Program(
            depthwise_generic_items(g, mult, True),
            kernel="arm_depthwise_conv_s8 (depthwise_conv_s8_mult_4)",
            macs=macs,
        )
    return Program(
        depthwise_generic_items(g, mult, False),
        kernel="arm_depthwise_conv_s8 (depthwise_conv_s8_generic)",
        macs=macs,
    )
