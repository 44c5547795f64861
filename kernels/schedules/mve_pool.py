"""AVERAGE_POOL_2D / MAX_POOL_2D on Armv8.1-M + MVE (arm_avgpool_s8, arm_max_pool_s8).

arm_avgpool_s8 (MVE): per output pixel and 16-channel group (VCTP.8 predicate), per
in-bounds tap one predicated VLDRB.S8 widened to four int32 vectors (VMOVLB/VMOVLT .s8 then
.s16) and added to four sums; then rounding (VPTE: +/- count/2), a per-lane signed division
by the tap count (the C loop ``sum[i] / count``: lane move, SDIV, lane move back, 16 lanes),
clamp, narrowing (VMOVNB/VMOVNT) and a predicated byte store.
arm_max_pool_s8 (MVE): per output pixel the first in-bounds tap is copied with
arm_memcpy_s8 and every other tap merged with compare_and_replace_if_larger (16 lanes per
step: two predicated loads, VMAX, predicated store); the whole output is clamped at the end
(clamp_output: load, VMAX, VMIN, store, 16 lanes per step).
"""

from __future__ import annotations

from mcusim.graph import Graph, Op
from mcusim.isa.schedule import Loop, Program, Rewind

from .cmsis_pool import AVG_PIXEL, AVG_PIXEL_NEXT, AVG_TAP, AVG_TAP_END, POOL_ENTRY, POOL_EXIT
from .common import PixelWalk, pixels_by, pool_geom, taps_key
from .mve_common import block, memcpy_mve_items, tap_walk, tp_loop

AVG_GROUP_SETUP = """
vctp.8 r9
vmrs   r8, p0
subs   r9, #16
vmov.i32 q4, #0
vmov.i32 q5, #0
vmov.i32 q6, #0
vmov.i32 q7, #0
dls    lr, r7                         ; taps
"""


def _avg_tap(note: str) -> str:
    return f"""
mla    r3, r4, r10, r5
vmsr   p0, r8
vpst
vldrbt.s8 q0, [r3] {{input}}{note}
vmovlb.s8 q1, q0
vmovlt.s8 q2, q0
vmovlb.s16 q3, q1
vmovlt.s16 q1, q1
vadd.i32 q4, q4, q3
vadd.i32 q5, q5, q1
vmovlb.s16 q3, q2
vmovlt.s16 q2, q2
vadd.i32 q6, q6, q3
vadd.i32 q7, q7, q2
adds   r4, #1
le     lr, .Lavg_taps
"""


def _avg_group_out(note: str) -> str:
    t = "asrs r6, r7, #1                   ; half_count\n"
    for q in ("q4", "q5", "q6", "q7"):
        t += f"vpte.s32 gt, {q}, r12\nvaddt.i32 {q}, {q}, r6\nvsube.i32 {q}, {q}, r6\n"
    for q in ("q4", "q5", "q6", "q7"):  # sum[i] / count, lane by lane
        for lane in range(4):
            t += f"vmov.32 r0, {q}[{lane}]\nsdiv r0, r0, r7\nvmov.32 {q}[{lane}], r0\n"
    t += "vdup.32 q0, r4\nvdup.32 q1, r10\n"  # activation range
    for q in ("q4", "q5", "q6", "q7"):
        t += f"vmax.s32 {q}, {q}, q0\nvmin.s32 {q}, {q}, q1\n"
    t += """
vmovnb.i32 q2, q4
vmovnt.i32 q2, q5
vmovnb.i32 q3, q6
vmovnt.i32 q3, q7
vmovnb.i16 q2, q2
vmovnt.i16 q2, q3
vmsr   p0, r8
vpst
"""
    t += f"vstrbt.8 q2, [r11], #16 {{output}}{note}\nadds r5, #16\n"
    return t


def avg_pool_program(graph: Graph, op: Op) -> Program:
    g = pool_geom(graph, op)
    c = g.in_c
    items: list = [block(POOL_ENTRY, "pool_entry")]
    full, rem = divmod(c, 16)
    classes = pixels_by(g, taps_key(g))
    walk = PixelWalk(g)
    for n_taps, npix in sorted(g.taps_valid().items()):
        # address rules: the tap loop walks the window's in-bounds taps (its loads do not
        # move the pointer); each 16-channel group 16 bytes on; each pixel at its window
        taps_rule = {"input": tap_walk(g, classes[n_taps], c)}
        groups: list = []
        for note_lanes, count in ((None, full), (rem, 1 if rem else 0)):
            note = "" if note_lanes is None else f" {{lanes={note_lanes}}}"
            if not count:
                continue
            groups.append(
                Loop(
                    "avg_ch_groups" if note_lanes is None else "avg_ch_group_tail",
                    count,
                    [
                        block(AVG_GROUP_SETUP, "avg_group_setup"),
                        Loop(
                            "avg_taps",
                            n_taps,
                            [block(_avg_tap(note), f"avg_tap{note}")],
                            addr=taps_rule,
                        ),
                        block(_avg_group_out(note), f"avg_group_out{note}"),
                    ],
                    addr={"input": Rewind(16)},
                )
            )
        body = [block(AVG_PIXEL, "pool_avg_pixel"), *groups, block(AVG_PIXEL_NEXT, "pool_next")]
        rules = (
            walk.rules(classes[n_taps])
            if g.batches == 1
            else {"input": Rewind(g.s_w * c), "output": Rewind(c)}
        )
        items.append(Loop(f"avg_pixels_{n_taps}taps", npix * g.batches, body, addr=rules))
    items.append(block(POOL_EXIT, "pool_exit"))
    return Program(
        items,
        kernel="arm_avgpool_s8 (MVE)",
        macs=0,
        notes=["SDIV per lane charged at the core's worst case"],
    )


def _max_cmp(note: str) -> str:
    return f"""
vctp.8 r2
subs   r2, #16
vpstt
vldrbt.s8 q0, [r0] {{output}}{note}
vldrbt.s8 q1, [r1], #16 {{input}}{note}
vmax.s8 q0, q0, q1
vpst
vstrbt.8 q0, [r0], #16 {{output}}{note}
le     lr, .Lmax_cmp
"""


def _clamp(note: str) -> str:
    return f"""
vctp.8 r2
subs   r2, #16
vpst
vldrbt.s8 q0, [r0] {{output}}{note}
vmax.s8 q0, q0, q6
vmin.s8 q0, q0, q7
vpst
vstrbt.8 q0, [r0], #16 {{output}}{note}
le     lr, .Lclamp
"""


MAX_CALL = """
add    r3, r2, #15
lsrs   r3, r3, #4
dls    lr, r3
"""


def max_pool_program(graph: Graph, op: Op) -> Program:
    g = pool_geom(graph, op)
    c = g.in_c
    items: list = [block(POOL_ENTRY, "pool_entry")]
    classes = pixels_by(g, taps_key(g))
    walk = PixelWalk(g)
    vec = 16 * -(-c // 16)  # bytes the MVE loops move their pointers per pixel
    for n_taps, npix in sorted(g.taps_valid().items()):
        # address rules: the first tap is copied to the output pixel, every other tap of
        # the window (the walk one tap on, from where the copy left the input) merged
        # into it in place
        w = tap_walk(g, classes[n_taps], c)
        later = Rewind(c, start=c - vec, every=w.every, skip=w.skip, phase=1)
        body = [
            block(AVG_PIXEL, "pool_avg_pixel"),
            Loop(
                "max_first_tap",
                1 if n_taps else 0,
                addr={"output": Rewind(0)},
                body=[
                    block(AVG_TAP, "pool_avg_tap"),
                    *memcpy_mve_items(c, "input", "output"),
                    block(AVG_TAP_END, "pool_avg_tap_end"),
                ],
            ),
            Loop(
                "max_taps",
                max(n_taps - 1, 0),
                addr={"output": Rewind(0), "input": later},
                body=[
                    block(AVG_TAP, "pool_avg_tap"),
                    block(MAX_CALL, "max_mve_call"),
                    *tp_loop("max_cmp16", c, 16, _max_cmp),
                    block(AVG_TAP_END, "pool_avg_tap_end"),
                ],
            ),
            block(AVG_PIXEL_NEXT, "pool_next"),
        ]
        items.append(Loop(f"max_pixels_{n_taps}taps", npix, body, addr=walk.rules(classes[n_taps])))
    total = g.out_pixels * c
    clamp = tp_loop("clamp16", total, 16, _clamp)
    if isinstance(clamp[0], Loop):  # the clamp pass starts at the output's first byte
        clamp[0].addr = {"output": Rewind(16, start=-walk.used["output"])}
    items += [
        block("vdup.8 q6, r8\nvdup.8 q7, r9", "max_clamp_setup"),
        block(MAX_CALL, "max_mve_call"),
        *clamp,
    ]
    items.append(block(POOL_EXIT, "pool_exit"))
    batch = {
        "input": Rewind(g.in_h * g.in_w * c),
        "output": Rewind(g.out_pixels * c),
    }
    prog_items = items if g.batches == 1 else [Loop("batches", g.batches, items, addr=batch)]
    return Program(prog_items, kernel="arm_max_pool_s8 (MVE)", macs=0)
