"""MAX/AVERAGE_POOL_2D and ADD on packed sub-byte activations (Armv7E-M + DSP).

Our renderings of what a CMix-NN-style library does with packed tensors (CMix-NN itself
ships no pooling/add; CMSIS-NN's int8 loops are the model for the structure):
- max pool: the first in-bounds tap is copied (memcpy of the packed pixel), later taps
  are merged one packed byte at a time, per element SBFX/UBFX of both values, CMP, and a
  conditional BFI; binary values (bit 1 = +1) merge with one ORR per word (max = OR);
  a fused activation clamps the output in a final pass.
- avg pool: per output pixel, per tap, each element is extracted and added to an int32
  sum per channel (scratch, as arm_avgpool_s8); then (sum +- n/2) / n with SDIV, clamp to
  the output type and BFI into the packed output, one STRB per byte.
- add: TFLite's integer ADD per element (docs/precision.md 3): extract both inputs, add
  offsets, shift left 20, three arm_nn_requantize, clamp, BFI, one STRB per output byte.
"""

from __future__ import annotations

from functools import cache

from mcusim.errors import UnsupportedOpError
from mcusim.graph import Graph, Op
from mcusim.isa.schedule import Block, Loop, Program, Rewind
from mcusim.precision import describe

from .cmix_common import CLAMP_TEXT, layer_prec, packed_bytes
from .common import REQUANT_TEXT, Geom, PixelWalk, memcpy_items, pixels_by, pool_geom, taps_key


def _ext(signed: bool) -> str:
    return "sbfx" if signed else "ubfx"


def max_merge_text(a: int, signed: bool) -> str:
    """Merge one packed byte of a tap into the output byte (8/a elements)."""
    x = _ext(signed)
    t = "ldrb   r5, [r1], #1    {input}\nldrb   r4, [r0]        {output}\n"
    for e in range(8 // a):
        pos = e * a
        t += f"{x}   r6, r5, #{pos}, #{a}\n{x}   r7, r4, #{pos}, #{a}\n"
        t += f"cmp    r6, r7\nit     gt\nbfigt  r4, r6, #{pos}, #{a}\n"
    t += "strb   r4, [r0], #1    {output}\nsubs   r2, #1\nbne    .Lcmix_max\n"
    return t


BIN_MAX = """
ldr    r5, [r1], #4    {input}
ldr    r4, [r0]        {output}
orr    r4, r4, r5
str    r4, [r0], #4    {output}
subs   r2, #1
bne    .Lcmix_bmax
"""


def clamp_text(a: int, signed: bool) -> str:
    x = _ext(signed)
    t = "ldrb   r4, [r0]        {output}\n"
    for e in range(8 // a):
        pos = e * a
        t += f"{x}   r5, r4, #{pos}, #{a}\ncmp    r5, r8\nit     lt\nmovlt  r5, r8\n"
        t += f"cmp    r5, r9\nit     gt\nmovgt  r5, r9\nbfi    r4, r5, #{pos}, #{a}\n"
    t += "strb   r4, [r0], #1    {output}\nsubs   r2, #1\nbne    .Lcmix_clamp\n"
    return t


def avg_acc_text(a: int, signed: bool, first: bool) -> str:
    """Add the elements of one packed byte into the int32 sums (first tap: store)."""
    x = _ext(signed)
    t = "ldrb   r5, [r1], #1    {input}\n"
    for e in range(8 // a):
        t += f"{x}   r6, r5, #{e * a}, #{a}\n"
        if first:
            t += "str    r6, [r0], #4    {scratch}\n"
        else:
            t += "ldr    r7, [r0]        {scratch}\nadd    r7, r7, r6\n"
            t += "str    r7, [r0], #4    {scratch}\n"
    t += "subs   r2, #1\nbne    .Lcmix_avg\n"
    return t


def avg_out_text(y: int) -> str:
    """8/y channels: rounded division, clamp, BFI into one output byte."""
    t = "movs   r4, #0\n"
    for e in range(8 // y):
        t += """ldr    r3, [r0], #4    {scratch}
cmp    r3, #0
ite    gt
addgt  r3, r3, r7
suble  r3, r3, r7
sdiv   r3, r3, r6
cmp    r3, r8
it     lt
movlt  r3, r8
cmp    r3, r9
it     gt
movgt  r3, r9
"""
        t += f"bfi    r4, r3, #{e * y}, #{y}\n"
    t += "strb   r4, [r1], #1    {output}\nsubs   r2, #1\nbne    .Lcmix_avg_out\n"
    return t


TAP = """
ldr    r3, [sp, #8]                  ; k_x
ldr    r4, [sp, #12]                 ; idx_x
add    r3, r3, r4
ldr    r4, [sp, #16]                 ; row base
ldr    r5, [sp, #20]                 ; packed bytes per pixel
mla    r1, r3, r5, r4
ldr    r0, [sp, #24]
mov    r2, r5
"""
TAP_END = """
ldr    r3, [sp, #8]
adds   r3, #1
str    r3, [sp, #8]
ldr    r4, [sp, #28]
cmp    r3, r4
blt    .Lcmix_taps
"""
PIXEL = """
ldr    r3, [sp, #32]
ldr    r4, [sp, #36]                 ; stride_x
add    r3, r3, r4
str    r3, [sp, #32]
movs   r6, #0
"""
PIXEL_END = """
ldr    r0, [sp, #24]
ldr    r1, [sp, #40]
ldr    r2, [sp, #44]
lsrs   r7, r6, #1                    ; half count
ldr    r4, [sp, #48]
adds   r4, #1
str    r4, [sp, #48]
"""
ENTRY = """
push   {r4, r5, r6, r7, r8, r9, r10, r11, lr}
sub    sp, #60
ldr    r8, [sp, #96]                 ; act_min (type range and fused activation)
ldr    r9, [sp, #100]                ; act_max
"""
EXIT = """
movs   r0, #0
add    sp, #60
pop    {r4, r5, r6, r7, r8, r9, r10, r11, pc}
"""


@cache
def _blocks(a: int, signed: bool, y: int):
    b = Block.asm
    tag = f"a{a}{'s' if signed else 'u'}"
    return {
        "entry": b(ENTRY, "cmix_pool_entry"),
        "exit": b(EXIT, "cmix_pool_exit"),
        "tap": b(TAP, "cmix_pool_tap"),
        "tap_end": b(TAP_END, "cmix_pool_tap_end"),
        "pixel": b(PIXEL, "cmix_pool_pixel"),
        "pixel_end": b(PIXEL_END, "cmix_pool_pixel_end"),
        "max": b(max_merge_text(a, signed) if a > 1 else BIN_MAX, f"cmix_max_{tag}"),
        "clamp": b(clamp_text(a, signed), f"cmix_clamp_{tag}") if a > 1 else None,
        "acc0": b(avg_acc_text(a, signed, True), f"cmix_avg_first_{tag}") if a > 1 else None,
        "acc": b(avg_acc_text(a, signed, False), f"cmix_avg_acc_{tag}") if a > 1 else None,
        "out": b(avg_out_text(y), f"cmix_avg_out_y{y}") if y > 1 else None,
    }


def _window(g: Geom, px: int) -> dict:
    return {"input": Rewind(px, every=g.k_w, skip=(g.in_w - g.k_w) * px, phase=1)}


def _pool(graph: Graph, op: Op, kind: str) -> Program:
    g = pool_geom(graph, op)
    p = layer_prec(graph, op)
    if kind == "avg" and p.a == 1:
        raise UnsupportedOpError(
            f"average pooling of binary activations is not defined ({describe(graph, op)})",
            layer=op.label,
        )
    k = _blocks(p.a, p.a_signed, p.y)
    px = packed_bytes(g.in_c, p.a)
    out_px = packed_bytes(g.out_c, p.y)
    steps = -(-px // 4) if p.a == 1 else px  # binary: words, else bytes
    classes = pixels_by(g, taps_key(g))
    from dataclasses import replace

    walk = PixelWalk(replace(g, in_c=px, out_c=out_px))
    items: list = [k["entry"]]
    for n_taps, npix in sorted(g.taps_valid().items()):
        if kind == "max":
            first = [k["tap"], *memcpy_items(px, px % 4 == 0, "input", "output"), k["tap_end"]]
            later = [k["tap"], Loop("cmix_max_merge", steps, [k["max"]]), k["tap_end"]]
            tail: list = []
        else:
            first = [k["tap"], Loop("cmix_avg_first", px, [k["acc0"]]), k["tap_end"]]
            later = [k["tap"], Loop("cmix_avg_acc", px, [k["acc"]]), k["tap_end"]]
            tail = [k["pixel_end"], Loop("cmix_avg_out", out_px, [k["out"]])]
        reuse = {"output": Rewind(0)} if kind == "max" else {"scratch": Rewind(0)}
        body = [
            k["pixel"],
            Loop("cmix_pool_first_tap", 1 if n_taps else 0, first, addr=reuse),
            Loop("cmix_pool_taps", max(n_taps - 1, 0), later, addr={**reuse, **_window(g, px)}),
            *tail,
        ]
        items.append(
            Loop(f"cmix_{kind}_pixels_{n_taps}taps", npix, body, addr=walk.rules(classes[n_taps]))
        )
    notes = []
    if kind == "max" and op.attrs.activation != "none" and p.a > 1:
        total = g.out_pixels * out_px
        items.append(
            Loop(
                "cmix_clamp_pass",
                1,
                [Loop("cmix_clamp", total, [k["clamp"]])],
                addr={"output": Rewind(0, start=-walk.used["output"])},
            )
        )
    if kind == "avg":
        notes.append("SDIV charged at the TRM worst case (cortex_m4.toml)")
    items.append(k["exit"])
    prog_items = items if g.batches == 1 else [Loop("batches", g.batches, items)]
    fn = "cmix-style max pool" if kind == "max" else "cmix-style avg pool"
    return Program(prog_items, kernel=f"{fn} {p.name} (packed, {p.y}-bit out)", macs=0, notes=notes)


def max_pool_program(graph: Graph, op: Op) -> Program:
    return _pool(graph, op, "max")


def avg_pool_program(graph: Graph, op: Op) -> Program:
    return _pool(graph, op, "avg")


# ------------------------------------------------------------------------------ add
_PARAMS = "ldr r1, [sp, #{m}]\nldr r2, [sp, #{s}]\n"


def add_elem_text(a1: int, s1: bool, a2: int, s2: bool, pos1: int, pos2: int) -> str:
    t = f"{_ext(s1)}   r0, r4, #{pos1}, #{a1}\nldr    r3, [sp, #8]\nadd    r0, r0, r3\n"
    t += "lsl    r0, r0, #20\n" + _PARAMS.format(m=20, s=24) + REQUANT_TEXT
    t += "str    r0, [sp, #48]\n"
    t += f"{_ext(s2)}   r0, r5, #{pos2}, #{a2}\nldr    r3, [sp, #12]\nadd    r0, r0, r3\n"
    t += "lsl    r0, r0, #20\n" + _PARAMS.format(m=28, s=32) + REQUANT_TEXT
    t += "ldr    r3, [sp, #48]\nadd    r0, r0, r3\n" + _PARAMS.format(m=36, s=40)
    t += REQUANT_TEXT + CLAMP_TEXT
    return t


def add_program(graph: Graph, op: Op) -> Program:
    x1, x2 = graph.tensor(op.inputs[0]), graph.tensor(op.inputs[1])
    y = graph.tensor(op.outputs[0])
    p = layer_prec(graph, op)
    if p.a == 1 or x2.dtype.binary or y.dtype.binary:
        raise UnsupportedOpError(
            f"add of binary tensors is not defined ({describe(graph, op)})", layer=op.label
        )
    if tuple(x1.shape) != tuple(x2.shape):
        raise UnsupportedOpError(
            f"broadcasting add on packed sub-byte tensors has no Armv7E-M schedule "
            f"({describe(graph, op)})",
            layer=op.label,
        )
    a1, a2, yb = p.a, x2.dtype.bits, p.y
    s2 = x2.dtype.signed
    per = 8 // yb  # outputs per output byte
    text = "ldr    r4, [r6]    {input}\nldr    r5, [r7]    {input2}\nmovs   ip, #0\n"
    for e in range(per):
        text += add_elem_text(a1, p.a_signed, a2, s2, (e * a1) % 32, (e * a2) % 32)
        text += f"bfi    ip, r0, #{e * yb}, #{yb}\n"
    text += f"adds   r6, #{packed_bytes(per, a1)}\nadds   r7, #{packed_bytes(per, a2)}\n"
    text += "strb   ip, [r11], #1    {output}\n"
    text += "ldr    r3, [sp, #4]\nsubs   r3, #1\nstr    r3, [sp, #4]\nbne    .Lcmix_add\n"
    k = _blocks(2, True, 2)
    body = Block.asm(text, f"cmix_add_{a1}_{a2}_{yb}")
    n_bytes = packed_bytes(y.size, yb)
    items = [k["entry"], Loop("cmix_add_bytes", n_bytes, [body]), k["exit"]]
    return Program(items, kernel=f"cmix-style add {p.name} (packed, {yb}-bit out)", macs=0)
