"""AVERAGE_POOL_2D / MAX_POOL_2D on Armv7E-M + DSP (arm_avgpool_s8, arm_max_pool_s8).

arm_avgpool_s8 (DSP branch): per output pixel the in-bounds taps are summed per channel
into an int32 scratch buffer (first tap copies, later taps QADD), then
scale_q31_to_q7_and_clamp rounds (sum +/- count/2) / count with SDIV and clamps.
arm_max_pool_s8: the first tap is memcpy'd to the output, later taps are merged 4 bytes at
a time by byte compares (compare_and_replace_if_larger_q7), and a final pass clamps the
whole output to the activation range (clamp_output).
"""

from __future__ import annotations

from functools import cache

from mcusim.graph import Graph, Op
from mcusim.isa.schedule import Block, Loop, Program, Rewind

from .common import Geom, PixelWalk, memcpy_items, pixels_by, pool_geom, taps_key


def _window_taps(g: Geom) -> dict:
    """Taps after the first of a pooling window (the first-tap loop leaves the input one
    pixel on): the next pixel, and after each row of the filter the next input row."""
    c = g.in_c
    return {"input": Rewind(c, every=g.k_w, skip=(g.in_w - g.k_w) * c, phase=1)}


AVG_FIRST = """
ldrsb   r3, [r1], #1    {input}
subs    r2, #1
str     r3, [r0], #4    {scratch}
bne     .Lavg_first
"""
AVG_ACC = """
ldrsb   r3, [r1], #1    {input}
ldr     r4, [r0]        {scratch}
qadd    r3, r3, r4
subs    r2, #1
str     r3, [r0], #4    {scratch}
bne     .Lavg_acc
"""
AVG_TAP = """
ldr     r3, [sp, #8]                 ; k_x
ldr     r4, [sp, #12]                ; idx_x
add     r3, r3, r4
ldr     r4, [sp, #16]                ; row base
ldr     r5, [sp, #20]                ; ch_src
mla     r1, r3, r5, r4               ; start
ldr     r0, [sp, #24]                ; buffer
mov     r2, r5
cmp     r6, #0                       ; count == 0 ?
"""
AVG_TAP_END = """
adds    r6, #1                       ; count++
ldr     r3, [sp, #8]
adds    r3, #1
str     r3, [sp, #8]
ldr     r4, [sp, #28]                ; kernel_x_end
cmp     r3, r4
blt     .Lavg_taps
"""
AVG_SCALE = """
ldr     r3, [r0], #4    {scratch}
cmp     r3, #0
ite     gt
addgt   r3, r3, r7                   ; + count / 2
suble   r3, r3, r7                   ; - count / 2
sdiv    r3, r3, r6
cmp     r3, r8
it      lt
movlt   r3, r8
cmp     r3, r9
it      gt
movgt   r3, r9
strb    r3, [r1], #1    {output}
subs    r2, #1
bne     .Lavg_scale
"""
AVG_PIXEL = """
ldr     r3, [sp, #32]                ; idx_x
rsbs    r4, r3, #0
bic     r4, r4, r4, asr #31          ; kernel_x_start
str     r4, [sp, #8]
ldr     r5, [sp, #36]                ; input_x
subs    r5, r5, r3
ldr     r4, [sp, #40]                ; kernel_x
cmp     r5, r4
it      gt
movgt   r5, r4
str     r5, [sp, #28]                ; kernel_x_end
movs    r6, #0                       ; count
"""
AVG_PIXEL_END = """
ldr     r0, [sp, #24]
ldr     r1, [sp, #44]                ; dst
ldr     r2, [sp, #20]
lsrs    r7, r6, #1                   ; half_count
"""
AVG_PIXEL_NEXT = """
ldr     r3, [sp, #32]
ldr     r4, [sp, #48]                ; stride_x
add     r3, r3, r4
str     r3, [sp, #32]
ldr     r4, [sp, #52]
adds    r4, #1
str     r4, [sp, #52]
ldr     r5, [sp, #56]
cmp     r4, r5
blt     .Lavg_pixels
"""
POOL_ENTRY = """
push    {r4, r5, r6, r7, r8, r9, lr}
sub     sp, #68
ldr     r4, [sp, #96]
ldr     r8, [r4, #16] {stack}  ; act_min
ldr     r9, [r4, #20] {stack}  ; act_max
"""
POOL_EXIT = """
movs    r0, #0
add     sp, #68
pop     {r4, r5, r6, r7, r8, r9, pc}
"""
MAX_CMP4 = """
ldr     r4, [r0]        {output}
ldr     r5, [r1], #4    {input}
sxtb    r6, r5
sxtb    r7, r4
cmp     r6, r7
it      gt
bfigt   r4, r6, #0, #8
sbfx    r6, r5, #8, #8
sbfx    r7, r4, #8, #8
cmp     r6, r7
it      gt
bfigt   r4, r6, #8, #8
sbfx    r6, r5, #16, #8
sbfx    r7, r4, #16, #8
cmp     r6, r7
it      gt
bfigt   r4, r6, #16, #8
asrs    r6, r5, #24
asrs    r7, r4, #24
cmp     r6, r7
it      gt
bfigt   r4, r6, #24, #8
str     r4, [r0], #4    {output}
subs    r2, #1
bne     .Lmax_cmp4
"""
MAX_CMP1 = """
ldrsb   r5, [r1], #1    {input}
ldrsb   r4, [r0]        {output}
cmp     r5, r4
it      gt
strbgt  r5, [r0]        {output}
adds    r0, #1
subs    r2, #1
bne     .Lmax_cmp1
"""
MAX_CALL = """
ldr     r0, [sp, #24]                ; dst
ldr     r2, [sp, #20]                ; channel_in
lsrs    r2, r2, #2
"""
CLAMP4 = """
ldr     r4, [r0]        {output}
sxtb    r5, r4
cmp     r5, r8
it      lt
movlt   r5, r8
cmp     r5, r9
it      gt
movgt   r5, r9
bfi     r4, r5, #0, #8
sbfx    r5, r4, #8, #8
cmp     r5, r8
it      lt
movlt   r5, r8
cmp     r5, r9
it      gt
movgt   r5, r9
bfi     r4, r5, #8, #8
sbfx    r5, r4, #16, #8
cmp     r5, r8
it      lt
movlt   r5, r8
cmp     r5, r9
it      gt
movgt   r5, r9
bfi     r4, r5, #16, #8
asrs    r5, r4, #24
cmp     r5, r8
it      lt
movlt   r5, r8
cmp     r5, r9
it      gt
movgt   r5, r9
bfi     r4, r5, #24, #8
str     r4, [r0], #4    {output}
subs    r2, #1
bne     .Lclamp4
"""
CLAMP1 = """
ldrsb   r5, [r0]        {output}
cmp     r5, r8
it      lt
movlt   r5, r8
cmp     r5, r9
it      gt
movgt   r5, r9
strb    r5, [r0], #1    {output}
subs    r2, #1
bne     .Lclamp1
"""


@cache
def _blocks():
    names = {
        "avg_first": AVG_FIRST,
        "avg_acc": AVG_ACC,
        "avg_tap": AVG_TAP,
        "avg_tap_end": AVG_TAP_END,
        "avg_scale": AVG_SCALE,
        "avg_pixel": AVG_PIXEL,
        "avg_pixel_end": AVG_PIXEL_END,
        "avg_pixel_next": AVG_PIXEL_NEXT,
        "entry": POOL_ENTRY,
        "exit": POOL_EXIT,
        "max_cmp4": MAX_CMP4,
        "max_cmp1": MAX_CMP1,
        "max_call": MAX_CALL,
        "clamp4": CLAMP4,
        "clamp1": CLAMP1,
    }
    return {k: Block.asm(v, f"pool_{k}") for k, v in names.items()}


def avg_pool_program(graph: Graph, op: Op) -> Program:
    g = pool_geom(graph, op)
    k = _blocks()
    c = g.in_c
    items: list = [k["entry"]]
    classes = pixels_by(g, taps_key(g))
    walk = PixelWalk(g)
    for n_taps, npix in sorted(g.taps_valid().items()):
        body = [
            k["avg_pixel"],
            Loop(
                "avg_first_tap",
                1 if n_taps else 0,
                [k["avg_tap"], Loop("avg_copy_ch", c, [k["avg_first"]]), k["avg_tap_end"]],
                addr={"scratch": Rewind(0)},  # int32 sums of the pixel, reused per tap
            ),
            Loop(
                "avg_taps",
                max(n_taps - 1, 0),
                [k["avg_tap"], Loop("avg_acc_ch", c, [k["avg_acc"]]), k["avg_tap_end"]],
                addr={"scratch": Rewind(0), **_window_taps(g)},
            ),
            k["avg_pixel_end"],
            Loop("avg_scale_ch", c, [k["avg_scale"]]),
            k["avg_pixel_next"],
        ]
        items.append(
            Loop(
                f"avg_pixels_{n_taps}taps",
                npix * g.batches,
                body,
                addr={
                    **(
                        walk.rules(classes[n_taps])
                        if g.batches == 1
                        else {"input": Rewind(g.s_w * c)}
                    ),
                    "scratch": Rewind(0),
                },
            )
        )
    items.append(k["exit"])
    return Program(
        items,
        kernel="arm_avgpool_s8",
        macs=0,
        notes=["SDIV charged at the TRM worst case (cortex_m4.toml)"],
    )


def max_pool_program(graph: Graph, op: Op) -> Program:
    g = pool_geom(graph, op)
    k = _blocks()
    c = g.in_c
    items: list = [k["entry"]]
    aligned = c % 4 == 0
    classes = pixels_by(g, taps_key(g))
    walk = PixelWalk(g)
    for n_taps, npix in sorted(g.taps_valid().items()):
        body = [
            k["avg_pixel"],
            Loop(
                "max_first_tap",
                1 if n_taps else 0,
                [k["avg_tap"], *memcpy_items(c, aligned, "input", "output"), k["avg_tap_end"]],
                addr={"output": Rewind(0)},  # the output pixel is merged in place per tap
            ),
            Loop(
                "max_taps",
                max(n_taps - 1, 0),
                addr={"output": Rewind(0), **_window_taps(g)},
                body=[
                    k["avg_tap"],
                    k["max_call"],
                    Loop("max_cmp4", c // 4, [k["max_cmp4"]]),
                    Loop("max_cmp1", c % 4, [k["max_cmp1"]]),
                    k["avg_tap_end"],
                ],
            ),
            k["avg_pixel_next"],
        ]
        items.append(
            Loop(
                f"max_pixels_{n_taps}taps",
                npix,
                body,
                addr=walk.rules(classes[n_taps]),
            )
        )
    total = g.out_pixels * c
    items += [
        Loop(
            "max_batches_clamp",
            1,
            addr={"output": Rewind(0, start=-walk.used["output"])},  # clamp from the start
            body=[
                k["max_call"],
                Loop("clamp4", total // 4, [k["clamp4"]]),
                Loop("clamp1", total % 4, [k["clamp1"]]),
            ],
        )
    ]
    items.append(k["exit"])
    prog_items = items if g.batches == 1 else [Loop("batches", g.batches, items)]
    return Program(prog_items, kernel="arm_max_pool_s8", macs=0)
