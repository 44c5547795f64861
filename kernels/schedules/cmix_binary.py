"""Binary (W1A1) conv, fully connected and depthwise on Armv7E-M + DSP: XNOR-popcount
without a popcount instruction (cortex-m.md section 6).

Per 32-bit word of activations a and weights w: EOR, then the SWAR bit count stopped after
the byte-sum step (x - ((x & 0xAAAAAAAA) >> 1); (x & 0x33333333) + ((x & 0xCCCCCCCC) >> 2);
(x + (x >> 4)) & 0x0F0F0F0F, all masks modified immediates) and USADA8 against a zero
register adds the four byte counts to the accumulator: 9 instructions per word and
(channel, column). The matrix kernel is 2 channels x 2 im2col columns (4 words loaded per
4 XOR-popcounts). The output is n - 2 * popcount (docs/precision.md 2), n the valid bits.

conv2d: bit-packed im2col per pixel (a tap of C channels is C bits: byte copies when C is a
multiple of 8, else a shift/OR bit-append), padding taps written as 0 bits; a padded tap
then adds popcount(w) over its bits, which a per (border class, channel) table of
popcounts removes in the epilogue (Larq compute engine's padding correction; one LDR and
SUB per output, the table is extra constant data). Weight rows start on a word boundary
(rows padded to whole words by the deployment tool; traffic counts the padded words).
fully_connected: the packed input rows are the columns (no im2col).
depthwise_conv2d: the channels of one pixel are the bits of a word, so per tap and group of
32 channels: EOR, then a bit-sliced ("vertical") counter adds the mismatch bits into
ceil(log2(taps + 1)) bit planes (AND + EOR per plane), and per output channel the count
is read back from the planes. Border taps are skipped (n = valid taps).
"""

from __future__ import annotations

from functools import cache

from mcusim.graph import Graph, Op
from mcusim.isa.schedule import Block, Loop, Program, Rewind

from .cmix_common import (
    ACC,
    CLAMP_TEXT,
    LOOP_END,
    Prec,
    layer_prec,
    packed_bytes,
    row_words,
    store_text,
    threshold_text,
)
from .common import (
    LOAD_QPARAMS_TEXT,
    REQUANT_TEXT,
    Geom,
    PixelWalk,
    conv_geom,
    memcpy_items,
    memset_items,
    pixels_by,
    qparam_rules,
    taps_key,
)

# x in ip, temporary lr, zero register r5
SWAR_TEXT = """
and    lr, ip, #0xAAAAAAAA
sub    ip, ip, lr, lsr #1
and    lr, ip, #0xCCCCCCCC
and    ip, ip, #0x33333333
add    ip, ip, lr, lsr #2
add    ip, ip, ip, lsr #4
and    ip, ip, #0x0F0F0F0F
"""


def xnor_text(acc: str, a: str, w: str) -> str:
    """acc += popcount(a XOR w): EOR + SWAR to byte counts + USADA8."""
    return f"eor    ip, {a}, {w}\n" + SWAR_TEXT + f"usada8 {acc}, ip, r5, {acc}\n"


def xnor_step_text(nch: int, ncol: int, src: str = "scratch") -> str:
    """One word of every (channel, column): weights r0/r1, columns r2/r3."""
    t = "ldr    r4, [r0], #4    {weights}\n"
    t += f"ldr    r6, [r2], #4    {{{src}}}\n"
    if ncol == 2:
        t += f"ldr    r7, [r3], #4    {{{src}}}\n"
    for i in range(nch):
        if i == 1:
            t += "ldr    r4, [r1], #4    {weights}\n"
        t += xnor_text(ACC[2 * i], "r6", "r4")
        if ncol == 2:
            t += xnor_text(ACC[2 * i + 1], "r7", "r4")
    return t + LOOP_END


ROW_SETUP = """
ldr    r2, [sp, #12]                 ; column 0
ldr    r3, [sp, #16]                 ; column 1
ldr    r1, [sp, #20]                 ; second filter row
movs   r8, #0
movs   r9, #0
movs   r10, #0
movs   r11, #0
movs   r5, #0                        ; zero operand of USADA8
ldr    ip, [sp, #24]                 ; words per row
str    ip, [sp, #4]
"""
ROW_END = """
ldr    ip, [sp, #28]
subs   ip, #1
str    ip, [sp, #28]
bne    .Lxnor_rows
"""


def binary_epilogue(src: str, col: int, correction: bool) -> str:
    """popcount -> n - 2 * popcount (+ bias): n per column on the stack."""
    t = f"mov    r0, {src}\n"
    if correction:
        t += "ldr    r2, [lr], #4    {qparams}       ; padding popcount of (class, channel)\n"
        t += "sub    r0, r0, r2\n"
    t += f"ldr    r1, [sp, #{32 + 4 * col}]          ; valid bits n\n"
    t += "sub    r0, r1, r0, lsl #1\n"
    t += "ldr    r1, [r5], #4    {bias}\nadd    r0, r0, r1\n"
    return t


@cache
def binary_out_block(src: str, p: Prec, chan: int, col: int, correction: bool) -> Block:
    t = binary_epilogue(src, col, correction)
    if p.thresholds:
        t += threshold_text(p.y, p.y_signed)
    else:
        t += (LOAD_QPARAMS_TEXT if p.per_channel else "") + REQUANT_TEXT + CLAMP_TEXT
    t += store_text(p.y, chan, col)
    name = f"xnor_out_y{p.y}{'t' if p.thresholds else ''}_{src}_{col}_{int(correction)}"
    return Block.asm(t, name)


@cache
def _kernel_blocks(nch: int, ncol: int, src: str):
    b = Block.asm
    return {
        "setup": b(ROW_SETUP, "xnor_row_setup"),
        "step": b(xnor_step_text(nch, ncol, src), f"xnor_step_{nch}x{ncol}_{src}"),
        "end": b(ROW_END, "xnor_row_end"),
    }


def xnor_kernel_items(
    p: Prec, out_c: int, words: int, ncol: int, src: str, correction: bool
) -> list:
    items = []
    for nch, count in ((2, out_c // 2), (1, out_c % 2)):
        if not count:
            continue
        k = _kernel_blocks(nch, ncol, src)
        outs = [
            binary_out_block(f"r{8 + 2 * i + j}", p, i if nch == 2 else 1, j, correction)
            for i in range(nch)
            for j in range(ncol)
        ]
        items.append(
            Loop(
                f"xnor_rows_{nch}ch",
                count,
                [k["setup"], Loop("xnor_words", words, [k["step"]]), *outs, k["end"]],
                addr={src: Rewind(0)},
            )
        )
    return items


BIT_APPEND = """
ldr    r4, [r0], #4    {input}
lsl    r5, r4, r6
orr    r7, r7, r5
str    r7, [r1], #4    {scratch}
rsb    r5, r6, #32
lsr    r7, r4, r5
subs   r2, #1
bne    .Lxnor_bits
"""
BIT_PAD = """
lsl    r5, r2, r6
str    r7, [r1], #4    {scratch}
movs   r7, #0
subs   r2, #1
bne    .Lxnor_pad
"""


@cache
def _im2col_blocks():
    b = Block.asm
    return {"append": b(BIT_APPEND, "xnor_bit_append"), "pad": b(BIT_PAD, "xnor_bit_pad")}


def _bit_column(g: Geom, n_valid: int) -> list:
    from .cmix_conv import conv_blocks

    k = conv_blocks()
    kb = _im2col_blocks()
    c = g.in_c
    taps = g.k_h * g.k_w
    if c % 8 == 0:
        nb = c // 8
        copy = [
            k["tap_test"],
            k["tap_copy"],
            *memcpy_items(nb, nb % 4 == 0, "input", "scratch"),
            k["tap_end"],
        ]
        pad = [
            k["tap_test_pad"],
            k["tap_pad"],
            *memset_items(nb, nb % 4 == 0, "scratch"),
            k["tap_end"],
        ]
        px = nb
    else:
        nw = -(-c // 32)
        copy = [
            k["tap_test"],
            k["tap_copy"],
            Loop("xnor_bit_append", nw, [kb["append"]]),
            k["tap_end"],
        ]
        pad = [k["tap_test_pad"], k["tap_pad"], Loop("xnor_bit_pad", nw, [kb["pad"]]), k["tap_end"]]
        px = 0  # not whole bytes: the tap walk is approximate
    rule = {}
    if px:
        pix = px * g.d_w
        rule = {"input": Rewind(pix, every=g.k_w, skip=g.in_w * px * g.d_h - g.k_w * pix)}
    return [
        k["pixel"],
        Loop("xnor_im2col_taps", n_valid, copy, addr=rule),
        Loop("xnor_im2col_pad_taps", taps - n_valid, pad),
        k["pixel_end"],
    ]


def conv_items(p: Prec, g: Geom) -> list:
    from dataclasses import replace

    from .cmix_conv import _cmix_blocks, conv_blocks

    kc = conv_blocks()
    kb = _cmix_blocks()
    words = row_words(g.k_h * g.k_w * g.in_c, 1)
    out_row = packed_bytes(g.out_c, p.y)
    padded = any(n < g.k_h * g.k_w for n in g.taps_valid())
    body: list = []
    classes = pixels_by(g, taps_key(g))
    bg = replace(g, in_c=packed_bytes(g.in_c, 1), out_c=out_row)
    walk = PixelWalk(bg, ("input",))
    for n_valid, count in sorted(g.taps_valid().items()):
        body.append(
            Loop(
                f"xnor_im2col_pixels_{n_valid}taps",
                count,
                _bit_column(g, n_valid),
                addr={**walk.rules(classes[n_valid]), "scratch": Rewind(0)},
            )
        )
    per_pass = {r: Rewind(0) for r in ("weights", "bias", "scratch")} | qparam_rules()
    body.append(
        Loop(
            "xnor_column_pairs",
            g.out_pixels // 2,
            [
                kb["pair_args"],
                *xnor_kernel_items(p, g.out_c, words, 2, "scratch", padded),
                kc["pair_end"],
            ],
            addr={**per_pass, "output": Rewind(2 * out_row)},
        )
    )
    if g.out_pixels % 2:
        body += [kb["pair_args"], *xnor_kernel_items(p, g.out_c, words, 1, "scratch", padded)]
    return [kb["entry"], Loop("batches", g.batches, body), kb["exit"]]


def fc_items(p: Prec, out_f: int, in_f: int, batches: int) -> list:
    from .cmix_conv import _cmix_blocks

    kb = _cmix_blocks()
    words = row_words(in_f, 1)
    row_in = packed_bytes(in_f, 1)
    out_row = packed_bytes(out_f, p.y)
    items = [
        kb["entry"],
        Loop(
            "xnor_fc_row_pairs",
            batches // 2,
            [kb["pair_args"], *xnor_kernel_items(p, out_f, words, 2, "input", False)],
            addr={
                "input": Rewind(2 * row_in),
                "output": Rewind(2 * out_row),
                "weights": Rewind(0),
                "bias": Rewind(0),
                **qparam_rules(),
            },
        ),
    ]
    if batches % 2:
        items += [kb["pair_args"], *xnor_kernel_items(p, out_f, words, 1, "input", False)]
    items.append(kb["exit"])
    return items


# ------------------------------------------------------------------ binary depthwise
def vcount_text(planes: int) -> str:
    """Add the mismatch bits v (r4) into bit planes r6.. (ripple of half adders)."""
    regs = [f"r{6 + j}" for j in range(planes)]  # r6..r11 (at most 6 planes: 63 taps)
    t = "ldr    r4, [r0]        {input}\nldr    r5, [r1]        {weights}\neor    r4, r4, r5\n"
    carry, spare = "r4", "ip"
    for j, pj in enumerate(regs):
        if j == planes - 1:
            t += f"eor    {pj}, {pj}, {carry}\n"
        else:
            t += f"and    {spare}, {pj}, {carry}\neor    {pj}, {pj}, {carry}\n"
            carry, spare = spare, carry
    t += """ldr    r2, [sp, #8]                  ; packed bytes of one input pixel
add    r0, r0, r2
ldr    r2, [sp, #12]                 ; packed bytes of one filter tap
add    r1, r1, r2
ldr    r2, [sp, #4]
subs   r2, #1
str    r2, [sp, #4]
bne    .Lxnor_dw_taps
"""
    return t


def vread_text(planes: int) -> str:
    """Count of the next channel (bit 0 of every plane), planes shifted for the next."""
    t = "movs   r0, #0\n"
    for j in range(planes):
        pj = f"r{6 + j}"
        t += f"and    r2, {pj}, #1\norr    r0, r0, r2, lsl #{j}\nlsr    {pj}, {pj}, #1\n"
    t += "ldr    r1, [sp, #24]                 ; valid taps n\nsub    r0, r1, r0, lsl #1\n"
    t += "ldr    r1, [lr], #4    {bias}\nadd    r0, r0, r1\n"
    return t


DW_GROUP = """
ldr    r0, [sp, #16]                 ; first in-bounds input pixel, channel word
ldr    r1, [sp, #20]
ldr    ip, [sp, #24]
str    ip, [sp, #4]
movs   r6, #0
movs   r7, #0
movs   r8, #0
movs   r9, #0
movs   r10, #0
movs   r11, #0
"""
DW_GROUP_END = """
ldr    r3, [sp, #16]
adds   r3, #4
str    r3, [sp, #16]
ldr    r3, [sp, #20]
adds   r3, #4
str    r3, [sp, #20]
ldr    r3, [sp, #28]
subs   r3, #1
str    r3, [sp, #28]
bne    .Lxnor_dw_groups
"""


@cache
def _dw_blocks(p: Prec, planes: int):
    b = Block.asm
    tail = REQUANT_TEXT + CLAMP_TEXT if not p.thresholds else threshold_text(p.y, p.y_signed)
    if not p.thresholds and p.per_channel:
        tail = LOAD_QPARAMS_TEXT + tail
    if p.y == 1:  # binary outputs: shift each bit into r4, one store per channel word
        st0 = st1 = "lsr    r4, r4, #1\norr    r4, r4, r0, lsl #31\n"
    else:
        st0, st1 = store_text(p.y, 0, 0), store_text(p.y, 1, 0)
    return {
        "group": b(DW_GROUP, "xnor_dw_group"),
        "tap": b(vcount_text(planes), f"xnor_dw_tap_{planes}"),
        "out0": b(vread_text(planes) + tail + st0, f"xnor_dw_out0_{p.y}"),
        "out1": b(vread_text(planes) + tail + st1, f"xnor_dw_out1_{p.y}"),
        "end": b(DW_GROUP_END, "xnor_dw_group_end"),
    }


@cache
def _dw_word_store(size: int) -> Block:
    """Store the output bits of one channel word (binary outputs): a word, or the bytes."""
    t = f"lsr    r4, r4, #{32 - size}\n" if size < 32 else ""
    t += "ldr    r3, [sp, #44]\n"
    if size == 32:
        t += "str    r4, [r3], #4   {output}\n"
    else:
        for _ in range(-(-size // 8)):
            t += "strb   r4, [r3], #1   {output}\nlsr    r4, r4, #8\n"
    t += "str    r3, [sp, #44]\n"
    return Block.asm(t, f"xnor_dw_store_{size}")


def depthwise_items(p: Prec, g: Geom) -> list:
    from dataclasses import replace

    from .cmix_conv import _cmix_blocks

    kb = _cmix_blocks()
    taps = g.k_h * g.k_w
    planes = max(1, taps.bit_length())
    k = _dw_blocks(p, planes)
    # full groups of 32 channels, then a last word holding the remaining channels
    group_sizes = [(32, g.out_c // 32), (g.out_c % 32, 1 if g.out_c % 32 else 0)]
    items: list = [kb["entry"]]
    classes = pixels_by(g, taps_key(g))
    bg = replace(g, in_c=packed_bytes(g.in_c, 1), out_c=packed_bytes(g.out_c, p.y))
    walk = PixelWalk(bg, ("input", "output"))
    pix = bg.in_c * g.d_w
    rule = {"input": Rewind(pix, every=g.k_w, skip=g.in_w * bg.in_c * g.d_h - g.k_w * pix)}
    for n_valid, count in sorted(g.taps_valid().items()):
        groups = [
            Loop(
                f"xnor_dw_groups_{size}ch",
                n,
                [
                    k["group"],
                    Loop("xnor_dw_taps", n_valid, [k["tap"]], addr=rule),
                    Loop("xnor_dw_channel_pairs", size // 2, [k["out0"], k["out1"]]),
                    Loop("xnor_dw_odd_channel", size % 2, [k["out1"]]),
                    *([_dw_word_store(size)] if p.y == 1 else []),
                    k["end"],
                ],
            )
            for size, n in group_sizes
        ]
        items.append(
            Loop(
                f"xnor_dw_pixels_{n_valid}taps",
                count,
                groups,
                addr={
                    **walk.rules(classes[n_valid]),
                    "weights": Rewind(0),
                    "bias": Rewind(0),
                    **qparam_rules(),
                },
            )
        )
    items.append(kb["exit"])
    return [Loop("batches", g.batches, items)] if g.batches > 1 else items


def program(graph: Graph, op: Op) -> Program:
    p = layer_prec(graph, op)
    req = "thresholds" if p.thresholds else "fixed_point"
    if op.kind == "fully_connected":
        w = graph.tensor(op.inputs[1])
        out_f, in_f = int(w.shape[0]), int(w.shape[1])
        batches = max(1, graph.tensor(op.inputs[0]).size // in_f)
        return Program(
            fc_items(p, out_f, in_f, batches),
            kernel=f"cmix-style xnor-popcount fully connected W1A1 (SWAR + USADA8, {req})",
            macs=batches * out_f * in_f,
        )
    g = conv_geom(graph, op)
    if op.kind == "depthwise_conv2d":
        return Program(
            depthwise_items(p, g),
            kernel=f"cmix-style xnor depthwise W1A1 (bit-sliced counters, {req})",
            macs=g.batches * g.out_pixels * g.out_c * g.k_h * g.k_w,
            notes=["channel groups of 32: the last group's word is partly padding"],
        )
    kernel_ch = int(graph.tensor(op.inputs[1]).shape[3])
    macs = g.batches * g.out_pixels * g.out_c * g.k_h * g.k_w * kernel_ch
    if kernel_ch != g.in_c:
        from dataclasses import replace

        groups = g.in_c // kernel_ch
        sub = replace(g, in_c=kernel_ch, out_c=g.out_c // groups)
        items = [Loop("xnor_groups", groups, conv_items(p, sub))]
    else:
        items = conv_items(p, g)
    return Program(
        items,
        kernel=f"cmix-style xnor-popcount conv W1A1 (bit-packed im2col, SWAR + USADA8, {req})",
        macs=macs,
        notes=["padding taps: per (border class, channel) popcount correction table"],
    )
