"""DEPTHWISE_CONV_2D below 8 bits on Armv7E-M + DSP.

W4A8 (int8 in/out, fixed point) with depth multiplier 1, batch 1 and no dilation runs
CMSIS-NN's arm_depthwise_conv_s4_opt (DSP branch; Source/ConvolutionFunctions/
arm_depthwise_conv_s4_opt.c): per output pixel an s16 im2col of the whole patch
(arm_q7_to_q15_with_offset per in-bounds tap, memset 0 for padding), then 4 channels x 2
taps per step: two read_and_pad_s4 (channels c..c+3 of taps t and t+1), 4 LDR of s16
pairs, 8 PKHBT/PKHTB to pair (tap t, tap t+1) per channel, 4 SMLAD; an odd last tap and
leftover channels run scalar.

Every other precision runs our CMix-NN-style rendering, with no im2col: per output pixel,
4 channels per step and per in-bounds tap, the packed activations of the 4 channels are
spread into 16-bit lanes (pairs c0/c2 and c1/c3: SXTAB16 for 8-bit inputs, ORR-spread +
AND + SSUB16 for 4/2-bit), the weights by SBFX + PKHBT (binary: then 2b - 1 with QADD16 /
SSUB16), and SMLABB/SMLATT accumulate the 4 channels. Leftover channels and depth
multipliers > 1 run a scalar loop (bitfield extract + MLA per tap and output channel).
"""

from __future__ import annotations

import dataclasses
from functools import cache

from mcusim.graph import Graph, Op
from mcusim.isa.schedule import Block, Loop, Program, Rewind

from .cmix_common import Prec, layer_prec, out_block, packed_bytes
from .cmix_conv import _rp, q7_to_q15_items
from .common import (
    Geom,
    PixelWalk,
    conv_geom,
    memset_items,
    pixels_by,
    qparam_rules,
    requant_out_block,
    taps_key,
)

# ------------------------------------------------------------ arm_depthwise_conv_s4_opt
DW_S4_STEP = (
    _rp(False, "r1", "r4", "r5", "ip", post="")
    + _rp(False, "r1, r2", "r6", "r7", "ip", post="")
    + """ldr    ip, [r0]        {scratch}
ldr    lr, [r0, r3]    {scratch}
pkhbt  r2, lr, ip, lsl #16
pkhtb  ip, lr, ip, asr #16
pkhbt  lr, r6, r4, lsl #16
smlad  r8, r2, lr, r8
pkhbt  lr, r5, r7, lsl #16
smlad  r9, ip, lr, r9
ldr    ip, [r0, #4]    {scratch}
ldr    r2, [sp, #8]                  ; 2 * input_ch + 4 (spilled)
ldr    lr, [r0, r2]    {scratch}
pkhbt  r2, lr, ip, lsl #16
pkhtb  ip, lr, ip, asr #16
pkhtb  lr, r4, r6, asr #16
smlad  r10, r2, lr, r10
pkhtb  lr, r7, r5, asr #16
smlad  r11, ip, lr, r11
ldr    r2, [sp, #12]                 ; input_ch
add    r1, r1, r2                    ; row_pos += input_ch (two taps of nibbles)
add    r0, r0, r2, lsl #2            ; col_pos += 2 * input_ch
asrs   r2, r2, #1                    ; input_ch / 2
ldr    ip, [sp, #4]
subs   ip, #1
str    ip, [sp, #4]
bne    .Ldws4
"""
)
DW_S4_ODD_TAP = """
ldrsb  r4, [r1]        {weights}
ldrsb  r5, [r1, #1]    {weights}
lsl    r6, r4, #28
asr    r6, r6, #28
asr    r4, r4, #4
lsl    r7, r5, #28
asr    r7, r7, #28
asr    r5, r5, #4
ldrsh  ip, [r0]        {scratch}
mla    r8, r6, ip, r8
ldrsh  ip, [r0, #2]    {scratch}
mla    r9, r4, ip, r9
ldrsh  ip, [r0, #4]    {scratch}
mla    r10, r7, ip, r10
ldrsh  ip, [r0, #6]    {scratch}
mla    r11, r5, ip, r11
"""
DW_S4_GROUP = """
ldr    r8, [r5], #4    {bias}
ldr    r9, [r5], #4    {bias}
ldr    r10, [r5], #4   {bias}
ldr    r11, [r5], #4   {bias}
ldr    r0, [sp, #16]                 ; col_buffer + col_shift
ldr    r1, [sp, #20]                 ; kernel + row_shift
ldr    r3, [sp, #24]                 ; 2 * input_ch
ldr    ip, [sp, #28]                 ; num_cols / 2
str    ip, [sp, #4]
"""
DW_S4_GROUP_END = """
ldr    r3, [sp, #16]
adds   r3, #8
str    r3, [sp, #16]
ldr    r3, [sp, #20]
adds   r3, #2
str    r3, [sp, #20]
ldr    ip, [sp, #32]
subs   ip, #1
str    ip, [sp, #32]
bne    .Ldws4_rows
"""
DW_S4_LEFT_TAP = """
ldrsb  r4, [r1]        {weights}
lsl    r4, r4, ip
asr    r4, r4, #28
ldrsh  r6, [r0]        {scratch}
mla    r8, r4, r6, r8
add    r1, r1, r2
add    r0, r0, r3
subs   lr, #1
bne    .Ldws4_left
"""
DW_S4_LEFT_SETUP = """
ldr    r8, [r5], #4    {bias}
ldr    r0, [sp, #16]
ldr    r1, [sp, #20]
ldr    lr, [sp, #36]                 ; num_cols
"""
DW_S4_PIXEL = """
ldr    r3, [sp, #40]                 ; i_out_x
ldr    r2, [sp, #44]                 ; stride_x
mul    r3, r3, r2
ldr    r2, [sp, #48]
subs   r3, r3, r2                    ; base_idx_x
str    r3, [sp, #52]
ldr    r5, [sp, #56]                 ; bias start
"""
DW_S4_PIXEL_END = """
ldr    r3, [sp, #40]
adds   r3, #1
str    r3, [sp, #40]
ldr    r2, [sp, #60]
cmp    r3, r2
blt    .Ldws4_pixels
"""


@cache
def _s4_blocks():
    b = Block.asm
    return {
        "step": b(DW_S4_STEP, "dws4_step"),
        "odd": b(DW_S4_ODD_TAP, "dws4_odd_tap"),
        "group": b(DW_S4_GROUP, "dws4_group_setup"),
        "group_end": b(DW_S4_GROUP_END, "dws4_group_end"),
        "left_tap": b(DW_S4_LEFT_TAP, "dws4_left_tap"),
        "left_setup": b(DW_S4_LEFT_SETUP, "dws4_left_setup"),
        "pixel": b(DW_S4_PIXEL, "dws4_pixel"),
        "pixel_end": b(DW_S4_PIXEL_END, "dws4_pixel_end"),
    }


def _tap_rule(g: Geom, px_bytes: int) -> dict:
    pix = px_bytes * g.d_w
    return {"input": Rewind(pix, every=g.k_w, skip=g.in_w * px_bytes * g.d_h - g.k_w * pix)}


def depthwise_s4_items(g: Geom) -> list:
    from .cmix_conv import conv_blocks

    k = _s4_blocks()
    kc = conv_blocks()
    c = g.in_c
    taps = g.k_h * g.k_w
    outs = [requant_out_block(r) for r in ("r8", "r9", "r10", "r11")]
    body_tail = [
        Loop(
            "dws4_ch4",
            c // 4,
            [
                k["group"],
                Loop("dws4_tap_pairs", taps // 2, [k["step"]]),
                Loop("dws4_odd_tap", taps % 2, [k["odd"]]),
                *outs,
                k["group_end"],
            ],
            regs={"r2": c // 2, "r3": 2 * c},
        ),
        Loop(
            "dws4_left_ch",
            c % 4,
            [k["left_setup"], Loop("dws4_left_taps", taps, [k["left_tap"]]), outs[0]],
            regs={"r2": c // 2, "r3": 2 * c},
        ),
        k["pixel_end"],
    ]
    classes = pixels_by(g, taps_key(g))
    walk = PixelWalk(g, ("input", "output"))
    items: list = [kc["entry"]]
    for n_valid, count in sorted(g.taps_valid().items()):
        copy = Loop(
            "dws4_im2col_taps",
            n_valid,
            [kc["tap_test"], kc["tap_copy"], *q7_to_q15_items(c), kc["tap_end"]],
            addr=_tap_rule(g, c),
        )
        pad = Loop(
            "dws4_im2col_pad",
            taps - n_valid,
            [
                kc["tap_test_pad"],
                kc["tap_pad"],
                *memset_items(2 * c, True, "scratch"),
                kc["tap_end"],
            ],
        )
        items.append(
            Loop(
                f"dws4_pixels_{n_valid}taps",
                count,
                [k["pixel"], copy, pad, *body_tail],
                addr={
                    **walk.rules(classes[n_valid]),
                    "scratch": Rewind(0),
                    "weights": Rewind(0),
                    "bias": Rewind(0),
                    **qparam_rules(),
                },
            )
        )
    items.append(kc["exit"])
    return items


# ------------------------------------------------------------------- CMix-NN style
def _act4_text(p: Prec) -> str:
    """4 channels of one input pixel -> pairs (c0, c2) in r6, (c1, c3) in r7."""
    a = p.a
    if a == 8:
        ext = "sxtab16" if p.a_signed else "uxtab16"
        return f"ldr    r4, [r0]        {{input}}\n{ext} r6, r3, r4\n{ext} r7, r3, r4, ror #8\n"
    ld = {4: "ldrh", 2: "ldrb", 1: "ldrb"}[a]
    t = f"{ld}   r4, [r0]        {{input}}\n"
    t += f"orr    r4, r4, r4, lsl #{16 - 2 * a}\n"
    if p.a_signed:
        t += "eor    r4, r4, #" + {4: "0x88888888", 2: "0xAAAAAAAA"}[a] + "\n"
    t += "and    r6, lr, r4\nssub16 r6, r6, r3\n"
    t += f"and    r7, lr, r4, lsr #{a}\nssub16 r7, r7, r3\n"
    return t


def _w4_text(w: int) -> str:
    """4 channels of one filter tap -> pairs (c0, c2) in r2, (c1, c3) in r5."""
    if w == 8:
        return "ldr    r5, [r1]        {weights}\nsxtb16 r2, r5\nsxtb16 r5, r5, ror #8\n"
    ld = "ldrh" if w == 4 else "ldrb"
    t = f"{ld}   r5, [r1]        {{weights}}\n"
    t += f"sbfx   ip, r5, #{2 * w}, #{w}\nsbfx   r2, r5, #0, #{w}\npkhbt  r2, r2, ip, lsl #16\n"
    t += f"sbfx   ip, r5, #{3 * w}, #{w}\nsbfx   r5, r5, #{w}, #{w}\npkhbt  r5, r5, ip, lsl #16\n"
    if w == 1:  # sbfx gives -b: w = 2b - 1 = -1 - 2 * (-b)
        t += "qadd16 r2, r2, r2\nqadd16 r5, r5, r5\nmvn    ip, #0\n"
        t += "ssub16 r2, ip, r2\nssub16 r5, ip, r5\n"
    return t


def _tap_text(p: Prec) -> str:
    return (
        _act4_text(p)
        + _w4_text(p.w)
        + """smlabb r8, r6, r2, r8
smlatt r10, r6, r2, r10
smlabb r9, r7, r5, r9
smlatt r11, r7, r5, r11
ldr    r2, [sp, #8]                  ; packed bytes of one input pixel
add    r0, r0, r2
ldr    r2, [sp, #12]                 ; packed bytes of one filter tap
add    r1, r1, r2
ldr    ip, [sp, #4]
subs   ip, #1
str    ip, [sp, #4]
bne    .Lcmix_dw_taps
"""
    )


def _scalar_tap_text(p: Prec) -> str:
    xe = "sbfx" if p.a_signed else "ubfx"
    t = "ldrb   r4, [r0]        {input}\nlsr    r4, r4, r6\n"
    t += f"{xe}   r4, r4, #0, #{min(p.a, 8)}\nadd    r4, r4, r3\n"
    t += "ldrb   r5, [r1]        {weights}\nlsr    r5, r5, r7\n"
    if p.w == 1:
        t += "ubfx   r5, r5, #0, #1\nlsl    r5, r5, #1\nsubs   r5, #1\n"
    else:
        t += f"sbfx   r5, r5, #0, #{p.w}\n"
    t += "mla    r8, r4, r5, r8\n"
    t += "ldr    r2, [sp, #8]\nadd    r0, r0, r2\nldr    r2, [sp, #12]\nadd    r1, r1, r2\n"
    t += "subs   ip, #1\nbne    .Lcmix_dw_scalar\n"
    return t


GROUP_SETUP = """
ldr    r8, [r5], #4    {bias}
ldr    r9, [r5], #4    {bias}
ldr    r10, [r5], #4   {bias}
ldr    r11, [r5], #4   {bias}
ldr    r0, [sp, #16]                 ; first in-bounds input pixel, channel group
ldr    r1, [sp, #20]                 ; its filter tap
ldr    ip, [sp, #24]                 ; in-bounds taps
str    ip, [sp, #4]
"""
GROUP_END = """
ldr    r3, [sp, #16]
adds   r3, #{xb}
str    r3, [sp, #16]
ldr    r3, [sp, #20]
adds   r3, #{wb}
str    r3, [sp, #20]
ldr    r3, [sp, #28]                 ; offset pair (reloaded: r3 was a temporary)
ldr    ip, [sp, #32]
subs   ip, #1
str    ip, [sp, #32]
bne    .Lcmix_dw_groups
"""
SCALAR_SETUP = """
ldr    r8, [r5], #4    {bias}
ldr    r0, [sp, #16]
ldr    r1, [sp, #20]
ldr    r6, [sp, #36]                 ; bit position of the input channel
ldr    r7, [sp, #40]                 ; bit position of the weight
ldr    ip, [sp, #24]
"""
SCALAR_END = """
ldr    ip, [sp, #44]
subs   ip, #1
str    ip, [sp, #44]
bne    .Lcmix_dw_scalar_ch
"""
PIXEL = """
ldr    r3, [sp, #48]                 ; out_x
ldr    r2, [sp, #52]                 ; stride_x
mul    r3, r3, r2
ldr    r2, [sp, #56]
subs   r3, r3, r2                    ; base x
str    r3, [sp, #60]
ldr    r5, [sp, #64]                 ; bias
movw   lr, #{m}
movt   lr, #{m}                      ; lane mask of the input width
"""
PIXEL_END = """
ldr    r3, [sp, #48]
adds   r3, #1
str    r3, [sp, #48]
ldr    r2, [sp, #68]
cmp    r3, r2
blt    .Lcmix_dw_pixels
"""


@cache
def _cmix_blocks(p: Prec):
    b = Block.asm
    xb, wb = packed_bytes(4, p.a), packed_bytes(4, p.w)
    m = (1 << p.a) - 1 if p.a < 8 else 0
    return {
        "tap": b(_tap_text(p), f"cmix_dw_tap_{p.name}"),
        "scalar": b(_scalar_tap_text(p), f"cmix_dw_scalar_{p.name}"),
        "group": b(GROUP_SETUP, "cmix_dw_group"),
        "group_end": b(
            GROUP_END.replace("{xb}", str(xb)).replace("{wb}", str(wb)),
            f"cmix_dw_group_end_{xb}_{wb}",
        ),
        "scalar_setup": b(SCALAR_SETUP, "cmix_dw_scalar_setup"),
        "scalar_end": b(SCALAR_END, "cmix_dw_scalar_end"),
        "pixel": b(PIXEL.replace("{m}", str(m)), f"cmix_dw_pixel_{m}"),
        "pixel_end": b(PIXEL_END, "cmix_dw_pixel_end"),
    }


def cmix_depthwise_items(p: Prec, g: Geom, mult: int) -> list:
    from .cmix_conv import _cmix_blocks as conv_cmix_blocks

    k = _cmix_blocks(p)
    kc = conv_cmix_blocks()
    oc = g.out_c
    po = dataclasses.replace(p, w=8)  # exact signed weights: no column-sum epilogue
    outs = [out_block(f"r{8 + i}", po, i % 2, 0) for i in range(4)]
    lone = out_block("r8", po, 1, 0)  # a scalar channel stores (merges) its own output
    groups = oc // 4 if mult == 1 else 0
    scalar_ch = oc - 4 * groups
    classes = pixels_by(g, taps_key(g))
    bg = dataclasses.replace(g, in_c=packed_bytes(g.in_c, p.a), out_c=packed_bytes(oc, p.y))
    walk = PixelWalk(bg, ("input", "output"))
    items: list = [kc["entry"]]
    for n_valid, count in sorted(g.taps_valid().items()):
        body = [
            k["pixel"],
            Loop(
                "cmix_dw_groups",
                groups,
                [
                    k["group"],
                    Loop("cmix_dw_taps", n_valid, [k["tap"]], addr=_tap_rule(bg, bg.in_c)),
                    *outs,
                    k["group_end"],
                ],
            ),
            Loop(
                "cmix_dw_scalar_ch",
                scalar_ch,
                [
                    k["scalar_setup"],
                    Loop("cmix_dw_scalar", n_valid, [k["scalar"]]),
                    lone,
                    k["scalar_end"],
                ],
            ),
            k["pixel_end"],
        ]
        items.append(
            Loop(
                f"cmix_dw_pixels_{n_valid}taps",
                count,
                body,
                addr={
                    **walk.rules(classes[n_valid]),
                    "weights": Rewind(0),
                    "bias": Rewind(0),
                    **qparam_rules(),
                },
            )
        )
    items.append(kc["exit"])
    return [Loop("batches", g.batches, items)] if g.batches > 1 else items


def depthwise_program(graph: Graph, op: Op, cmsis_s4: bool = True) -> Program:
    from .cmix_conv import cmsis_s4_ok

    g = conv_geom(graph, op)
    p = layer_prec(graph, op)
    mult = int(op.attrs.depth_multiplier)
    macs = g.batches * g.out_pixels * g.out_c * g.k_h * g.k_w
    if (
        cmsis_s4
        and cmsis_s4_ok(graph, op, p)
        and mult == 1
        and g.batches == 1
        and g.d_h == 1
        and g.d_w == 1
    ):
        return Program(depthwise_s4_items(g), kernel="arm_depthwise_conv_s4_opt", macs=macs)
    req = "thresholds" if p.thresholds else "fixed_point"
    kernel = f"cmix-style depthwise {p.name} (4-channel SMLABB/SMLATT, {req}, {p.y}-bit out)"
    notes = []
    if mult > 1:
        notes.append("depth multiplier > 1: scalar loop per output channel")
    return Program(cmix_depthwise_items(p, g, mult), kernel=kernel, macs=macs, notes=notes)
