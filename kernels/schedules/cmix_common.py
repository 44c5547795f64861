"""Shared pieces of the sub-byte Cortex-M schedules (CMix-NN style, Armv7E-M + DSP).

CMix-NN (Capotondi et al., IEEE TCAS-II 2020; github.com/EEESlab/CMix-NN) runs every mix
of 8/4/2-bit weights and activations on the CMSIS-NN structure: an im2col of s16 columns
(activations unpacked, zero point removed) and a 2 output-channel x 2 column SMLAD kernel
whose packed weights are unpacked on the fly. Its unpack is "reordered": one 32-bit word of
G = 32/w weights gives, by AND with a per-lane mask after a right shift by k*w, the pair of
16-bit lanes (element k, element k + G/2); the im2col writes the activations in that same
pair order, so no PKH is needed in the kernel. The weight zero point is folded out of the
loop (CMix-NN: ``bias - z_wt * sum(x)``); our weights are signed and symmetric
(docs/precision.md), so the kernel XORs each word with the lanes' sign bits (int4: 0x8888_8888,
int2: 0xAAAA_AAAA), which turns every w into the unsigned w + 2^(w-1), and the epilogue
subtracts 2^(w-1) * sum(x) with the column sum the im2col computed (one SMLAD per pair with
0x0001_0001). Binary weights (W1Ax) give lanes b in {0, 1}; w = 2b - 1, so the epilogue
computes 2 * acc - sum(x). These are our renderings of that scheme (register choices are
plausible, not a compiler's); ``Program.kernel`` says "cmix-style ...".

Requantization per output: arm_nn_requantize + offset + clamp to the output type's range
(fixed_point), or a balanced binary search over the channel's 2^N - 1 thresholds
(docs/precision.md 2.2, N levels of LDR/CMP/IT/ADDGE). Sub-byte outputs are packed:
int4 two channels per byte (one STRB per pixel per channel pair), 2-bit and binary
outputs read-modify-write their byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from mcusim.dtypes import ElemType
from mcusim.graph import Graph, Op
from mcusim.isa.schedule import Block
from mcusim.precision import width, zero_point

from .common import LOAD_QPARAMS_TEXT, OUT_STORE_TEXT, REQUANT_TEXT

# offset + clamp of one output (value in r0) without its store
CLAMP_TEXT = OUT_STORE_TEXT.replace("strb   r0, [r11], #1   {output}", "")

ACC = ("r8", "r9", "r10", "r11")  # accumulator of (channel i, column j) is ACC[2 * i + j]


@dataclass(frozen=True)
class Prec:
    """What a layer's schedule depends on: operand widths, signedness, output mode."""

    w: int  # weight width (1 = binary; 0 = no weights)
    a: int  # input activation width (1 = binary)
    a_signed: bool
    y: int  # output width (1 = binary)
    y_signed: bool
    thresholds: bool
    per_channel: bool
    in_zp: int

    @property
    def name(self) -> str:
        return f"W{self.w}A{self.a}" if self.w else f"A{self.a}"

    @property
    def group(self) -> int:
        """G: weights per 32-bit word, the pair-reorder group of the kernel."""
        return 32 // self.w


def _signed(dt: ElemType) -> bool:
    return dt.signed and not dt.binary


def layer_prec(graph: Graph, op: Op) -> Prec:
    x = graph.tensor(op.inputs[0])
    y = graph.tensor(op.outputs[0])
    w = graph.tensor(op.inputs[1]) if len(op.inputs) > 1 and op.inputs[1] else None
    wb = width(w.dtype) if (w is not None and op.kind != "add") else 0
    pc = w is not None and w.quant is not None and w.quant.per_channel
    return Prec(
        w=wb,
        a=width(x.dtype),
        a_signed=_signed(x.dtype),
        y=width(y.dtype),
        y_signed=_signed(y.dtype),
        thresholds=getattr(op.attrs, "requant", "fixed_point") == "thresholds",
        per_channel=bool(pc),
        in_zp=zero_point(x),
    )


def packed_bytes(n: int, bits: int) -> int:
    return (n * bits + 7) // 8


def row_words(n: int, bits: int) -> int:
    """32-bit words of one weight row of n elements (rows start on a word boundary)."""
    return -(-n * bits // 32)


# --------------------------------------------------------------------- weight unpack
_W_BIAS = {4: "#0x88888888", 2: "#0xAAAAAAAA"}  # lanes' sign bits: w -> w + 2^(w-1)


def weight_pair(dst: str, word: str, k: int, w: int, mask: str = "lr") -> str:
    """Pair k (elements k, k + G/2) of a weight word as two 16-bit lanes."""
    if w == 8:  # signed bytes: SXTB16 gives (0, 2) and, rotated, (1, 3)
        return f"sxtb16 {dst}, {word}" + (", ror #8" if k else "") + "\n"
    if k == 0:
        return f"and    {dst}, {mask}, {word}\n"
    return f"and    {dst}, {mask}, {word}, lsr #{k * w}\n"


def weight_word_fix(word: str, w: int) -> str:
    """Per-word bias of signed sub-byte weights (see the module doc)."""
    return f"eor    {word}, {word}, {_W_BIAS[w]}\n" if w in _W_BIAS else ""


def kernel_step_text(w: int, nch: int, ncol: int) -> str:
    """One weight word per channel (G = 32/w reduction columns) of the nch x ncol kernel.

    r0/r1 weights of channels n/n+1, r2/r3 s16 columns 0/1, r4/r5 weight words, r6/r7
    column pairs, ip unpacked weight pair, lr the lane mask, accumulators r8-r11."""
    g = 32 // w
    t = "ldr    r4, [r0], #4    {weights}\n"
    if nch == 2:
        t += "ldr    r5, [r1], #4    {weights}\n"
    t += weight_word_fix("r4", w) + (weight_word_fix("r5", w) if nch == 2 else "")
    for k in range(g // 2):
        t += "ldr    r6, [r2], #4    {scratch}\n"
        if ncol == 2:
            t += "ldr    r7, [r3], #4    {scratch}\n"
        for i, word in enumerate(("r4", "r5")[:nch]):
            t += weight_pair("ip", word, k, w)
            t += f"smlad  {ACC[2 * i]}, ip, r6, {ACC[2 * i]}\n"
            if ncol == 2:
                t += f"smlad  {ACC[2 * i + 1]}, ip, r7, {ACC[2 * i + 1]}\n"
    return t


# spilled trip counter (all 14 registers are live in the kernel), as CMSIS-NN's GCC build
LOOP_END = """
ldr    ip, [sp, #4]
subs   ip, #1
str    ip, [sp, #4]
bne    .Lcmix_k
"""


def kernel_tail_text(w: int, nch: int, ncol: int) -> str:
    """One leftover reduction column (natural order): the weight field extracted from
    the current word (biased like the word loop, so the epilogue stays the same)."""
    t = "ldrsh  r6, [r2], #2    {scratch}\n"
    if ncol == 2:
        t += "ldrsh  r7, [r3], #2    {scratch}\n"
    for i, (ptr, reg) in enumerate((("r0", "r4"), ("r1", "r5"))[:nch]):
        t += f"ldr    {reg}, [{ptr}]    {{weights}}\n"
        if w == 8:
            t += f"lsr    {reg}, {reg}, ip\nsxtb   {reg}, {reg}\n"
        else:
            t += f"lsr    {reg}, {reg}, ip\nand    {reg}, {reg}, #{(1 << w) - 1}\n"
            if w in _W_BIAS:
                t += f"eor    {reg}, {reg}, #{1 << (w - 1)}\n"
        t += f"mla    {ACC[2 * i]}, {reg}, r6, {ACC[2 * i]}\n"
        if ncol == 2:
            t += f"mla    {ACC[2 * i + 1]}, {reg}, r7, {ACC[2 * i + 1]}\n"
    t += f"adds   ip, #{w}\n"
    t += "ldr    r4, [sp, #8]\nsubs   r4, #1\nstr    r4, [sp, #8]\nbne    .Lcmix_tail\n"
    return t


def row_setup_text(nch: int, ncol: int, w: int) -> str:
    """Per channel block: bias into the accumulators, column pointers, mask, counter."""
    mask = {4: 0x000F000F, 2: 0x00030003, 1: 0x00010001}.get(w)
    t = "ldr    r2, [sp, #12]                 ; column 0\n"
    if ncol == 2:
        t += "ldr    r3, [sp, #16]                 ; column 1\n"
    t += "ldr    r1, [sp, #20]                 ; second filter row\n" if nch == 2 else ""
    for i in range(nch):
        t += f"ldr    {ACC[2 * i]}, [r5, #{4 * i}] {{bias}}\n"
        if ncol == 2:
            t += f"mov    {ACC[2 * i + 1]}, {ACC[2 * i]}\n"
    if mask:
        t += f"movw   lr, #{mask & 0xFFFF}\nmovt   lr, #{mask >> 16}  ; lane mask\n"
    t += "ldr    ip, [sp, #24]                 ; words per row\nstr    ip, [sp, #4]\n"
    return t


def row_end_text(nch: int) -> str:
    return f"""
adds   r5, #{4 * nch}                       ; bias of the next channels
ldr    ip, [sp, #28]
subs   ip, #1
str    ip, [sp, #28]
bne    .Lcmix_rows
"""


# --------------------------------------------------------------------- outputs
def epilogue_text(src: str, w: int, col: int) -> str:
    """acc (with bias) -> the exact sum: remove the weight bias 2^(w-1) * sum(x) (int4 /
    int2) or map binary weights b -> 2b - 1 (2 * acc - sum(x) - bias)."""
    t = f"mov    r0, {src}\n"
    if w in (4, 2):
        shift = w - 1
        t += f"ldr    r1, [sp, #{32 + 4 * col}]          ; column sum\n"
        t += f"sub    r0, r0, r1, lsl #{shift}\n"
    elif w == 1:
        t += f"ldr    r1, [sp, #{32 + 4 * col}]          ; column sum\n"
        t += "rsb    r0, r1, r0, lsl #1\n"
        t += "ldr    r1, [r5] {bias}\n"
        t += "subs   r0, r0, r1\n"
    return t


def threshold_text(levels_bits: int, y_signed: bool) -> str:
    """k = #(t <= acc) by a balanced binary search over the channel's 2^N - 1 thresholds
    (row pointer r1 from the stack), then the output code in r0."""
    t = "ldr    r1, [sp, #40]                 ; thresholds row of this channel\nmov    r2, r1\n"
    step = 1 << (levels_bits - 1)
    while step >= 1:
        t += f"ldr    r3, [r1, #{4 * (step - 1)}] {{qparams}}\n"
        t += "cmp    r0, r3\nit     ge\n"
        t += f"addge  r1, r1, #{4 * step}\n"
        step //= 2
    t += "sub    r0, r1, r2\nlsrs   r0, r0, #2                 ; k\n"
    if y_signed and levels_bits > 1:
        t += f"eor    r0, r0, #{1 << (levels_bits - 1)}         ; lo_type + k, two's complement\n"
    t += f"ldr    r1, [sp, #40]\nadd    r1, r1, #{4 * ((1 << levels_bits) - 1)}\n"
    t += "str    r1, [sp, #40]\n"
    return t


def store_text(y: int, chan: int, col: int) -> str:
    """Store (or stage) one output in r0: channel ``chan`` (0/1) of a pair, column col."""
    part = ("r7", "ip")[col]
    ptr = 44 + 4 * col
    if y == 8:
        t = f"ldr    r3, [sp, #{ptr}]\nstrb   r0, [r3], #1   {{output}}\n"
        return t + f"str    r3, [sp, #{ptr}]\n"
    m = (1 << y) - 1
    if chan == 0:
        return f"and    {part}, r0, #{m}\n"
    t = f"and    r0, r0, #{m}\norr    {part}, {part}, r0, lsl #{y}\n"
    t += f"ldr    r3, [sp, #{ptr}]\n"
    if y == 4:  # a whole byte: channels n, n+1
        return t + f"strb   {part}, [r3], #1   {{output}}\nstr    r3, [sp, #{ptr}]\n"
    # 2-bit / binary: merge the pair's bits into the output byte at the channel position
    t += "ldr    r2, [sp, #52]                 ; bit position of channel n\n"
    t += f"lsl    {part}, {part}, r2\n"
    t += "ldrb   r1, [r3]       {output}\n"
    t += f"orr    r1, r1, {part}\nstrb   r1, [r3]       {{output}}\n"
    return t


@cache
def out_block(src: str, p: Prec, chan: int, col: int) -> Block:
    """One output of the kernel: epilogue, requantization or thresholds, packing."""
    t = epilogue_text(src, p.w, col)
    if p.thresholds:
        t += threshold_text(p.y, p.y_signed)
    else:
        t += (LOAD_QPARAMS_TEXT if p.per_channel else "") + REQUANT_TEXT + CLAMP_TEXT
    t += store_text(p.y, chan, col)
    return Block.asm(t, f"cmix_out_{p.name}_y{p.y}{'t' if p.thresholds else ''}_{src}_{col}")


# --------------------------------------------------------------------- activation unpack
def act_group_text(a: int, a_signed: bool, w: int, src: str = "input") -> str:
    """Unpack G = 32/w activations into G/2 s16 pairs (k, k + G/2), minus the zero point,
    stored to the im2col column, and their sum accumulated (SMLAD with 0x0001_0001).

    r0 source, r1 column, r3 offset pair (-zp, for int also the sign bias), r4 lane mask,
    r5 = 0x0001_0001, r6 column sum; natural pairs in r8-r11, r7/ip/lr temporaries."""
    g = 32 // w
    t = ""
    bits = g * a

    def store(reg: str) -> str:
        return f"str    {reg}, [r1], #4    {{scratch}}\nsmlad  r6, {reg}, r5, r6\n"

    def natural(word: str, j: int, dst: str) -> str:
        """Natural pair j of a loaded word: elements (j, j + 16/a)."""
        if a == 8:
            ext = "sxtab16" if a_signed else "uxtab16"
            return f"{ext} {dst}, r3, {word}" + (", ror #8" if j else "") + "\n"
        sh = f", lsr #{j * a}" if j else ""
        return f"and    {dst}, r4, {word}{sh}\nssub16 {dst}, {dst}, r3\n"

    fix = {4: "#0x88888888", 2: "#0xAAAAAAAA"}
    if bits <= 32 and (a != 8 or g == 4):
        # one load holds the whole group
        ld = {32: "ldr", 16: "ldrh", 8: "ldrb"}[bits]
        t += f"{ld}    r7, [r0], #{bits // 8}    {{{src}}}\n"
        if bits < 32:  # spread: element k + G/2 to lane 1
            t += f"orr    r7, r7, r7, lsl #{16 - bits // 2}\n"
        if a_signed and a in fix:
            t += f"eor    r7, r7, {fix[a]}\n"
        for k in range(g // 2):
            t += natural("r7", k, "ip")
            t += store("ip")
        return t
    # the group spans L words: pair (k, k + G/2) combines the same natural lane of words
    # u and u + L/2 with PKHBT / PKHTB
    n_words = bits // 32
    per = 16 // a if a < 8 else 2  # natural pairs per word
    for u in range(n_words // 2):
        v = u + n_words // 2
        t += f"ldr    r7, [r0, #{4 * u}]    {{{src}}}\n"
        t += f"ldr    lr, [r0, #{4 * v}]    {{{src}}}\n"
        if a_signed and a in fix:
            t += f"eor    r7, r7, {fix[a]}\neor    lr, lr, {fix[a]}\n"
        for j in range(per):
            t += natural("r7", j, "r8")
            t += natural("lr", j, "r9")
            t += "pkhbt  ip, r8, r9, lsl #16\n" + store("ip")
            t += "pkhtb  ip, r9, r8, asr #16\n" + store("ip")
    t += f"add    r0, r0, #{bits // 8}\n"
    return t


def act_tail_text(a: int, a_signed: bool, src: str = "scratch") -> str:
    """One leftover element (natural order): extract, minus zp, store s16, add to sum."""
    ext = "sbfx" if a_signed else "ubfx"
    if a == 8:
        t = f"ldr{'sb' if a_signed else 'b'}  r7, [r0], #1    {{{src}}}\n"
    else:
        t = f"ldrb   r7, [r0]    {{{src}}}\nlsr    r7, r7, r2\n{ext}   r7, r7, #0, #{a}\n"
    t += "add    r7, r7, r3\nstrh   r7, [r1], #2    {scratch}\nadd    r6, r6, r7\n"
    t += "subs   ip, #1\nbne    .Lcmix_utail\n"
    return t


UNPACK_ENTRY = """
push   {r4, r5, r6, r7, r8, r9, r10, r11, lr}
ldr    r3, [sp, #36]                 ; offset pair
mov    r5, #0x00010001
movw   r4, #{m}
movt   r4, #{m}                      ; lane mask
movs   r6, #0                        ; column sum
"""
UNPACK_EXIT = """
str    r6, [r2]       {stack}        ; column sum out
pop    {r4, r5, r6, r7, r8, r9, r10, r11, pc}
"""


@cache
def unpack_blocks(a: int, a_signed: bool, w: int, src: str) -> dict:
    b = Block.asm
    grp = act_group_text(a, a_signed, w, src) + "subs   r2, #1\nbne    .Lcmix_unpack\n"
    return {
        "call": b("bl     cmix_unpack_to_s16", "cmix_unpack_call"),
        "entry": b(
            UNPACK_ENTRY.replace("{m}", str((1 << a) - 1 if a < 8 else 0)),
            f"cmix_unpack_entry_a{a}",
        ),
        "group": b(grp, f"cmix_unpack_a{a}{'s' if a_signed else 'u'}_w{w}_{src}", shared=True),
        "tail": b(act_tail_text(a, a_signed, src), f"cmix_unpack_tail_a{a}_{src}", shared=True),
        "exit": b(UNPACK_EXIT, "cmix_unpack_exit", shared=True),
    }
