"""Semantics of the XpulpV2 / XpulpNN custom instructions mcusim models, on 32-bit registers.

Every function takes register values as Python/numba integers (only the low 32 bits
matter) and returns the destination register as a signed 32-bit value (``s32``), so an
accumulator that overflows wraps exactly as the 32-bit register does.

Lanes: a register holds 32/bits lanes of ``bits`` = 16 (.h), 8 (.b), 4 (.n, nibbles) or
2 (.c, crumbs); lane ``i`` is bits ``[i*bits, (i+1)*bits)`` (lane 0 = least significant),
as in GVSoC's vector library. Signedness per operand follows the mnemonic: ``up``
unsigned x unsigned, ``usp`` rs1 unsigned x rs2 signed, ``sp`` signed x signed
(riscv-xpulp.md §4). ``.sc`` replicates rs2's lane 0 (:func:`splat`), ``.sci`` a 6-bit
immediate (:func:`splat`) on it.

Sources: riscv-xpulp.md §2-§5 (CV32E40P ISA extensions doc, GVSoC isa_pulpv2 / pulp_nn
models). Where the documents are silent the GVSoC model is followed and the choice is
named in the function's docstring.
"""

from __future__ import annotations

import numpy as np
from numba import njit

MASK32 = 0xFFFFFFFF


@njit(cache=True)
def u32(x: int) -> int:
    return x & MASK32


@njit(cache=True)
def s32(x: int) -> int:
    x &= MASK32
    return x - (1 << 32) if x >= (1 << 31) else x


@njit(cache=True)
def lane(x: int, i: int, bits: int, signed: bool) -> int:
    """Lane ``i`` of register ``x`` (lane 0 = least significant bits)."""
    v = (x >> (i * bits)) & ((1 << bits) - 1)
    if signed and v >= (1 << (bits - 1)):
        v -= 1 << bits
    return v


@njit(cache=True)
def pack_lanes(vals, bits: int) -> int:
    """Inverse of :func:`lane`: lane values (any sign, truncated to ``bits``) -> s32."""
    r = 0
    m = (1 << bits) - 1
    for i in range(32 // bits):
        r |= (vals[i] & m) << (i * bits)
    return s32(r)


@njit(cache=True)
def splat(x: int, bits: int) -> int:
    """``.sc`` / ``.sci`` operand: lane 0 of ``x`` replicated into every lane."""
    v = x & ((1 << bits) - 1)
    r = 0
    for i in range(32 // bits):
        r |= v << (i * bits)
    return s32(r)


# ------------------------------------------------------------------------- dot products
@njit(cache=True)
def dot(a: int, b: int, bits: int, a_signed: bool, b_signed: bool) -> int:
    """Sum over lanes of a[i] * b[i] (exact, before any 32-bit wrap)."""
    s = 0
    for i in range(32 // bits):
        s += lane(a, i, bits, a_signed) * lane(b, i, bits, b_signed)
    return s


@njit(cache=True)
def pv_dotup(a: int, b: int, bits: int) -> int:
    return s32(dot(a, b, bits, False, False))


@njit(cache=True)
def pv_dotusp(a: int, b: int, bits: int) -> int:
    return s32(dot(a, b, bits, False, True))


@njit(cache=True)
def pv_dotsp(a: int, b: int, bits: int) -> int:
    return s32(dot(a, b, bits, True, True))


@njit(cache=True)
def pv_sdotup(acc: int, a: int, b: int, bits: int) -> int:
    return s32(acc + dot(a, b, bits, False, False))


@njit(cache=True)
def pv_sdotusp(acc: int, a: int, b: int, bits: int) -> int:
    return s32(acc + dot(a, b, bits, False, True))


@njit(cache=True)
def pv_sdotsp(acc: int, a: int, b: int, bits: int) -> int:
    return s32(acc + dot(a, b, bits, True, True))


# ------------------------------------------------------------------ lane-wise SIMD ALU
# op codes of pv_alu, in the order of riscv-xpulp.md §5's funct7 table
ADD, SUB, AVG, AVGU, MIN, MINU, MAX, MAXU, SRL, SRA, SLL, OR, XOR, AND, ABS = range(15)
ALU_OPS = {
    n: i
    for i, n in enumerate("add sub avg avgu min minu max maxu srl sra sll or xor and abs".split())
}


@njit(cache=True)
def _lane_op(op: int, a_s: int, b_s: int, a_u: int, b_u: int, bits: int) -> int:
    if op == ADD:
        return a_s + b_s
    if op == SUB:
        return a_s - b_s
    if op == AVG:  # GVSoC: (a + b) >> 1 in full precision, then truncated to the lane
        return (a_s + b_s) >> 1
    if op == AVGU:
        return (a_u + b_u) >> 1
    if op == MIN:
        return min(a_s, b_s)
    if op == MINU:
        return min(a_u, b_u)
    if op == MAX:
        return max(a_s, b_s)
    if op == MAXU:
        return max(a_u, b_u)
    sh = b_u & (bits - 1)  # shift amount: log2(bits) low bits of the lane
    if op == SRL:
        return a_u >> sh
    if op == SRA:
        return a_s >> sh
    if op == SLL:
        return a_u << sh
    if op == OR:
        return a_u | b_u
    if op == XOR:
        return a_u ^ b_u
    if op == AND:
        return a_u & b_u
    return -a_s if a_s < 0 else a_s  # ABS: |-2^(bits-1)| wraps to itself


@njit(cache=True)
def pv_alu(op: int, a: int, b: int, bits: int) -> int:
    """Lane-wise ``pv.<op>.{h,b,n,c}``: each lane's result truncated to the lane (wraps)."""
    m = (1 << bits) - 1
    r = 0
    for i in range(32 // bits):
        v = _lane_op(
            op,
            lane(a, i, bits, True),
            lane(b, i, bits, True),
            lane(a, i, bits, False),
            lane(b, i, bits, False),
            bits,
        )
        r |= (v & m) << (i * bits)
    return s32(r)


@njit(cache=True)
def pv_extract(a: int, i: int, bits: int, signed: bool) -> int:
    """``pv.extract[u].{h,b}``: lane ``i`` of ``a``, sign- or zero-extended."""
    return lane(a, i, bits, signed)


@njit(cache=True)
def pv_insert(d: int, a: int, i: int, bits: int) -> int:
    """``pv.insert.{h,b} rd, rs1, i``: lane ``i`` of rd replaced by rs1's lane 0."""
    m = (1 << bits) - 1
    return s32((d & ~(m << (i * bits))) | ((a & m) << (i * bits)))


@njit(cache=True)
def pv_pack_h(a: int, b: int) -> int:
    """``pv.pack.h rd, rs1, rs2``: rd = rs1[15:0] : rs2[15:0] (rs1 in the upper half)."""
    return s32(((a & 0xFFFF) << 16) | (b & 0xFFFF))


@njit(cache=True)
def pv_packhi_b(d: int, a: int, b: int) -> int:
    """``pv.packhi.b``: rd[31:24] = rs1[7:0], rd[23:16] = rs2[7:0], rd[15:0] kept."""
    return s32((d & 0xFFFF) | ((a & 0xFF) << 24) | ((b & 0xFF) << 16))


@njit(cache=True)
def pv_packlo_b(d: int, a: int, b: int) -> int:
    """``pv.packlo.b``: rd[15:8] = rs1[7:0], rd[7:0] = rs2[7:0], rd[31:16] kept."""
    return s32((d & 0xFFFF0000) | ((a & 0xFF) << 8) | (b & 0xFF))


@njit(cache=True)
def pv_shuffle(a: int, sel: int, bits: int) -> int:
    """``pv.shuffle.{h,b} rd, rs1, rs2``: lane i = rs1's lane (rs2 lane i mod lanes)."""
    n = 32 // bits
    r = 0
    for i in range(n):
        k = lane(sel, i, bits, False) % n
        r |= lane(a, k, bits, False) << (i * bits)
    return s32(r & MASK32)


@njit(cache=True)
def pv_shuffle2(d: int, a: int, sel: int, bits: int) -> int:
    """``pv.shuffle2.{h,b} rd, rs1, rs2``: lane i = lane (rs2 lane i mod lanes) of rs1 when
    the next selector bit (bit log2(lanes)) is set, else of the old rd."""
    n = 32 // bits
    r = 0
    for i in range(n):
        s = lane(sel, i, bits, False)
        src = a if (s // n) & 1 else d
        r |= lane(src, s % n, bits, False) << (i * bits)
    return s32(r & MASK32)


# ------------------------------------------------------------------- scalar XpulpV2
@njit(cache=True)
def p_cnt(a: int) -> int:
    """Population count of the 32-bit register."""
    x = a & MASK32
    n = 0
    while x:
        x &= x - 1
        n += 1
    return n


@njit(cache=True)
def p_ff1(a: int) -> int:
    """Index of the least significant set bit; 32 when none."""
    x = a & MASK32
    for i in range(32):
        if (x >> i) & 1:
            return i
    return 32


@njit(cache=True)
def p_fl1(a: int) -> int:
    """Index of the most significant set bit; 32 when none."""
    x = a & MASK32
    for i in range(31, -1, -1):
        if (x >> i) & 1:
            return i
    return 32


@njit(cache=True)
def p_clb(a: int) -> int:
    """Leading bits equal to bit 31, not counting bit 31 itself; 0 for a zero register."""
    x = a & MASK32
    if x == 0:
        return 0
    top = (x >> 31) & 1
    n = 0
    for i in range(30, -1, -1):
        if ((x >> i) & 1) != top:
            break
        n += 1
    return n


@njit(cache=True)
def p_clip(a: int, imm: int) -> int:
    """``p.clip rd, rs1, imm`` (imm 1..31): clamp to [-2^(imm-1), 2^(imm-1) - 1]."""
    x = s32(a)
    lo, hi = -(1 << (imm - 1)), (1 << (imm - 1)) - 1
    return lo if x < lo else (hi if x > hi else x)


@njit(cache=True)
def p_clipu(a: int, imm: int) -> int:
    """``p.clipu rd, rs1, imm`` (imm 1..31): clamp to [0, 2^(imm-1) - 1]."""
    x = s32(a)
    hi = (1 << (imm - 1)) - 1
    return 0 if x < 0 else (hi if x > hi else x)


@njit(cache=True)
def p_clipr(a: int, b: int) -> int:
    """``p.clipr rd, rs1, rs2``: clamp to [-(rs2 + 1), rs2]."""
    x, h = s32(a), s32(b)
    lo = -(h + 1)
    return lo if x < lo else (h if x > h else x)


@njit(cache=True)
def p_clipur(a: int, b: int) -> int:
    """``p.clipur rd, rs1, rs2``: clamp to [0, rs2]."""
    x, h = s32(a), s32(b)
    return 0 if x < 0 else (h if x > h else x)


@njit(cache=True)
def p_extract(a: int, is3: int, is2: int) -> int:
    """``p.extract rd, rs1, Is3, Is2``: the Is3+1 bits from bit Is2, sign-extended."""
    n = min(is3 + 1, 32 - is2)
    v = ((a & MASK32) >> is2) & ((1 << n) - 1)
    if v >= (1 << (n - 1)):
        v -= 1 << n
    return s32(v)


@njit(cache=True)
def p_extractu(a: int, is3: int, is2: int) -> int:
    """``p.extractu``: as p.extract, zero-extended."""
    n = min(is3 + 1, 32 - is2)
    return s32(((a & MASK32) >> is2) & ((1 << n) - 1))


@njit(cache=True)
def p_insert(d: int, a: int, is3: int, is2: int) -> int:
    """``p.insert rd, rs1, Is3, Is2``: rd's bits [Is2, Is2+Is3] = rs1's low Is3+1 bits."""
    n = min(is3 + 1, 32 - is2)
    m = ((1 << n) - 1) << is2
    return s32((d & ~m) | (((a & MASK32) << is2) & m))


@njit(cache=True)
def p_bset(a: int, is3: int, is2: int) -> int:
    """``p.bset rd, rs1, Is3, Is2``: bits [Is2, Is2+Is3] set."""
    n = min(is3 + 1, 32 - is2)
    return s32(a | (((1 << n) - 1) << is2))


@njit(cache=True)
def p_bclr(a: int, is3: int, is2: int) -> int:
    """``p.bclr rd, rs1, Is3, Is2``: bits [Is2, Is2+Is3] cleared."""
    n = min(is3 + 1, 32 - is2)
    return s32(a & ~(((1 << n) - 1) << is2))


@njit(cache=True)
def p_mac(acc: int, a: int, b: int) -> int:
    """``p.mac rd, rs1, rs2``: rd + rs1 * rs2 (low 32 bits)."""
    return s32(acc + s32(a) * s32(b))


@njit(cache=True)
def p_msu(acc: int, a: int, b: int) -> int:
    return s32(acc - s32(a) * s32(b))


@njit(cache=True)
def p_addn(a: int, b: int, n: int, rnd: bool, unsigned: bool, sub: bool) -> int:
    """``p.{add,sub}[u][r]N rd, rs1, rs2, Is3``: (rs1 ± rs2 [+ 2^(Is3-1)]) >> Is3, arithmetic
    (logical for the u forms) on the 32-bit sum."""
    x = s32(a) - s32(b) if sub else s32(a) + s32(b)
    x = s32(x)
    if rnd and n > 0:
        x = s32(x + (1 << (n - 1)))
    if unsigned:
        return s32((x & MASK32) >> n)
    return x >> n


# --------------------------------------------------------------------------- XpulpNN
@njit(cache=True)
def pv_qnt_n(x: int, thr) -> int:
    """``pv.qnt.n rd, rs1, rs2``: 4-bit code of rs1 from 15 int16 thresholds (ascending),
    ``thr[0..14]``, rs2 pointing at ``thr[7]``. Balanced-tree search as GVSoC's
    pulp_nn.hpp walks it: compare with thr[7], then step 4, 2, 1 entries up when
    ``x > thr`` and down otherwise; the four decisions give c = #{i: x > thr[i]} (0..15).
    GVSoC records the first decision inverted and sign-extends bit 3, so the register
    receives c - 8 (-8..7), a signed int4."""
    v = s32(x)
    idx = 7
    c = 0
    step = 4
    for k in range(4):
        up = v > thr[idx]
        c = (c << 1) | (1 if up else 0)
        if k < 3:
            idx += step if up else -step
            step >>= 1
    code = c ^ 8  # first bit inverted
    return code - 16 if code & 8 else code


# MAC&LOAD variants: (activation lanes signed, weight lanes signed), GVSoC pulp_nn.hpp
MLS_SIGNS = {"up": (False, False), "usp": (True, False), "sup": (False, True), "sp": (True, True)}


@njit(cache=True)
def pv_mlsdot(acc: int, spr, ctl: int, word: int, bits: int, act_signed: bool, wt_signed: bool):
    """``pv.mlsdot<v>.<w> rd, rs1, ctl``: rd += dot(SPR[a], SPR[2 + w]) with
    a = ctl[0], w = ctl[2:1], using the SPR values from before this instruction; then, if
    ctl[3] the activation SPR a, else if ctl[4] the weight SPR 2 + w, is loaded with
    ``word`` (the word at rs1), and rs1 advances by 4. Mutates ``spr`` (6 entries);
    returns (rd, rs1 increment). Variant signedness: :data:`MLS_SIGNS`."""
    a_i = ctl & 1
    w_i = 2 + ((ctl >> 1) & 3)
    r = s32(acc + dot(spr[a_i], spr[w_i], bits, act_signed, wt_signed))
    inc = 0
    if ctl & 8:
        spr[a_i] = word & MASK32
        inc = 4
    elif ctl & 16:
        spr[w_i] = word & MASK32
        inc = 4
    return r, inc


def new_sprs() -> np.ndarray:
    """The six MAC&LOAD special registers (2 activation, 4 weight), zeroed."""
    return np.zeros(6, dtype=np.int64)
