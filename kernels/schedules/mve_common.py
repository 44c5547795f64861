"""Shared pieces of the CMSIS-NN Helium (MVE) schedules: vector requantization, clamping,
the MVE arm_memcpy_s8 / arm_memset_s8 loops, and tail-predicated loops.

Instruction text is our rendering of what the CMSIS-NN MVE sources execute when built with
GCC 12 for -mcpu=cortex-m55 (inline assembly verbatim in its instruction sequence; intrinsic
code as GCC 12 emits it: DLS/LE loops, VCTP + VPST-predicated loads/stores). Register
choices are plausible, not exact; the timing-relevant parts (instruction mix, pipes, data
dependencies, loop structure) follow the source.

Tail predication: a loop over ``n`` elements, ``lanes`` per vector, runs ceil(n / lanes)
iterations; the last one has n - (iterations - 1) * lanes active lanes. Schedules emit the
iterations before the last as a Loop and the last one as its own block whose
loads/stores carry ``{lanes=N}`` when partial, so stream traffic counts only the bytes
predicated-on lanes move (the beats and their cycles are those of a full iteration), and
whose LE/LETP is marked {nottaken}.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache

from mcusim.isa.schedule import Block, Loop

# arm_requantize_mve(val, multiplier, shift) with a per-tensor (scalar) multiplier: VSHL by
# max(shift, 0), VQRDMULH by the multiplier, then arm_divide_by_power_of_two_mve:
# fixup = (x & -e) >> 31, VQADD, VRSHL by -e (t1, t2: free Q registers).
REQUANT_MVE = """
bic    r3, {shift}, {shift}, asr #31  ; LEFT_SHIFT(shift)
vshl.s32 {q}, r3
vqrdmulh.s32 {q}, {q}, {mult}
rsbs   r3, {shift}, #0
bic    r3, r3, r3, asr #31            ; RIGHT_SHIFT(shift)
rsbs   r3, r3, #0
vdup.32 {t1}, r3                      ; -exponent
vand   {t2}, {q}, {t1}
vshr.s32 {t2}, {t2}, #31              ; fixup
vqadd.s32 {q}, {q}, {t2}
vrshl.s32 {q}, {q}, {t1}
"""

# arm_requantize_mve_32x4(val, multipliers, shifts): per-lane shifts against a zero vector
# (t2 may be the zero register: it is written after the last use of zero)
REQUANT_MVE_32X4 = """
vmax.s32 {t1}, {shifts}, {zero}       ; left shifts
vshl.s32 {q}, {q}, {t1}
vqrdmulh.s32 {q}, {q}, {mults}
vmin.s32 {t1}, {shifts}, {zero}       ; -right shifts
vand   {t2}, {q}, {t1}
vshr.s32 {t2}, {t2}, #31
vqadd.s32 {q}, {q}, {t2}
vrshl.s32 {q}, {q}, {t1}
"""


def requant_mve(q="q1", mult="r1", shift="r2", t1="q2", t2="q3") -> str:
    return REQUANT_MVE.format(q=q, mult=mult, shift=shift, t1=t1, t2=t2)


def requant_mve_32x4(q="q1", mults="q2", shifts="q3", zero="q0", t1="q4", t2="q0") -> str:
    return REQUANT_MVE_32X4.format(q=q, mults=mults, shifts=shifts, zero=zero, t1=t1, t2=t2)


def offset_clamp(q="q1", vmin="q5", vmax="q6", hoisted=True) -> str:
    """+ output offset (r9), clamp to [act_min (r4), act_max (r10)]. ``hoisted``: the
    VDUPs of the bounds live outside the loop in vmin/vmax."""
    dup = "" if hoisted else f"vdup.32 {vmin}, r4\nvdup.32 {vmax}, r10\n"
    return (
        f"vadd.i32 {q}, {q}, r9               ; + output offset\n"
        + dup
        + f"vmax.s32 {q}, {q}, {vmin}\nvmin.s32 {q}, {q}, {vmax}\n"
    )


# scalar tail: + output offset (r9), clamp to [r4, r10], store one byte
SCALAR_OUT = """
add    r0, r0, r9
cmp    r0, r4
it     lt
movlt  r0, r4
cmp    r0, r10
it     gt
movgt  r0, r10
strb   r0, [r11], #1   {output}
"""


def lanes_note(lanes: int | None) -> str:
    """Annotation for a tail iteration's loads/stores (empty for a full iteration)."""
    return "" if lanes is None else f" {{lanes={lanes}}}"


@cache
def block(text: str, name: str) -> Block:
    """One Block per (text, name): timing caches are per block object."""
    return Block.asm(text, name)


def last_iteration(text: str) -> str:
    """Mark the loop-end instruction of a loop's last iteration {nottaken} (it falls
    through: with one iteration only, the loop never branches back)."""
    return re.sub(r"^(\s*(?:le|letp)\s+[^;{\n]*)", r"\1 {nottaken}", text, flags=re.M)


def tp_loop(name: str, n: int, lanes: int, make_text: Callable[[str], str]) -> list:
    """A tail-predicated loop over ``n`` elements, ``lanes`` per iteration: the iterations
    before the last as a Loop, the last (full or partial) as its own block. ``make_text``
    gets the lanes annotation ("" or " {lanes=k}") to put on every predicated access."""
    iters = -(-int(n) // lanes)
    if iters == 0:
        return []
    rem = int(n) - (iters - 1) * lanes
    items: list = []
    if iters > 1:
        items.append(Loop(name, iters - 1, [block(make_text(""), name)]))
    note = "" if rem == lanes else lanes_note(rem)
    items.append(block(last_iteration(make_text(note)), f"{name}_last"))
    return items


# --- arm_memcpy_s8 / arm_memset_s8 (MVE inline assembly: WLSTP.8 ... LETP) ---------------
def memcpy_mve_items(n: int, src: str, dst: str) -> list:
    """arm_memcpy_s8(dst, src, n) on MVE: 16 bytes per iteration, tail-predicated."""
    entry = block("wlstp.8 lr, r2, .Lmcpy_end", "memcpy_mve_entry")

    def body(note: str) -> str:
        return (
            f"vldrb.8 q0, [r1], #16 {{{src}}}{note}\n"
            f"vstrb.8 q0, [r0], #16 {{{dst}}}{note}\n"
            "letp   lr, .Lmcpy\n"
        )

    return [entry, *tp_loop(f"memcpy_mve_{src}_{dst}", n, 16, body)]


def memset_mve_items(n: int, dst: str) -> list:
    """arm_memset_s8(dst, val, n) on MVE: VDUP then 16 bytes per iteration."""
    entry = block("vdup.8 q0, r1\nwlstp.8 lr, r2, .Lmset_end", "memset_mve_entry")

    def body(note: str) -> str:
        return f"vstrb.8 q0, [r0], #16 {{{dst}}}{note}\nletp   lr, .Lmset\n"

    return [entry, *tp_loop(f"memset_mve_{dst}", n, 16, body)]


# --- address rules (cache model only; timing never reads them) ---------------------------
def tap_walk(g, pixels: list[tuple[int, int]], pix: int, row: int | None = None):
    """Rewind of an im2col copy loop over the in-bounds taps of ``pixels`` (one class of
    output pixels with the same number of in-bounds taps): taps row by row, ``pix`` bytes
    apart, the next input row (``row`` bytes, default in_w * in_c * d_h) after each row of
    in-bounds taps. When every pixel of the class has the same number of in-bounds
    columns the walk is exact; otherwise full filter rows are assumed."""
    from mcusim.isa.schedule import Rewind

    from .common import rows_cols_key

    key = rows_cols_key(g)
    cols = {key(oy, ox)[1] for oy, ox in pixels}
    per_row = cols.pop() if len(cols) == 1 else g.k_w
    row = g.in_w * g.in_c * g.d_h if row is None else row
    return Rewind(pix, every=max(per_row, 1), skip=row - per_row * pix)
