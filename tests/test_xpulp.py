"""XpulpV2 / XpulpNN instruction semantics (isa/xpulp.py), lane by lane, against plain
Python models written here independently (bit strings / numpy views, not the module's
helpers) on edge values and random registers."""

from __future__ import annotations

import numpy as np
import pytest

from mcusim.isa import xpulp as xp

RNG = np.random.default_rng(1234)
WIDTHS = (16, 8, 4, 2)


# ------------------------------------------------------------- independent reference
def ref_lanes(x: int, bits: int, signed: bool) -> list[int]:
    """Lanes from a bit string: character k of the reversed binary string is bit k."""
    s = format(x & 0xFFFFFFFF, "032b")[::-1]
    out = []
    for i in range(32 // bits):
        chunk = s[i * bits : (i + 1) * bits][::-1]
        v = int(chunk, 2)
        if signed and chunk[0] == "1":
            v -= 2**bits
        out.append(v)
    return out


def ref_pack(vals: list[int], bits: int) -> int:
    s = "".join(format(v % 2**bits, f"0{bits}b") for v in reversed(vals))
    return ref_s32(int(s, 2))


def ref_s32(v: int) -> int:
    v %= 2**32
    return v - 2**32 if v >= 2**31 else v


def rand_regs(n: int) -> list[int]:
    return [int(v) for v in RNG.integers(0, 2**32, size=n, dtype=np.uint64)]


EDGE = [0, 0xFFFFFFFF, 0x80808080, 0x7F7F7F7F, 0x88888888, 0x77777777, 0xAAAAAAAA, 0x55555555]
EDGE += [0x80007FFF, 0x7FFF8000, 0x0F0F0F0F, 0xF0F0F0F0, 0x12345678, 0xDEADBEEF]


def test_lane_order_matches_numpy_little_endian_bytes():
    x = 0x80FF017F
    b = np.array([x], dtype="<u4").view(np.int8).tolist()
    assert [xp.lane(x, i, 8, True) for i in range(4)] == b == [127, 1, -1, -128]
    h = np.array([x], dtype="<u4").view("<u2").tolist()
    assert [xp.lane(x, i, 16, False) for i in range(2)] == h
    # nibble 0 is bits 3:0, crumb 0 bits 1:0
    assert [xp.lane(0x87654321, i, 4, False) for i in range(8)] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [xp.lane(0b11100100, i, 2, False) for i in range(4)] == [0, 1, 2, 3]
    assert xp.lane(0xF, 0, 4, True) == -1 and xp.lane(0x8, 0, 4, True) == -8
    assert xp.lane(0x2, 0, 2, True) == -2 and xp.lane(0x3, 0, 2, False) == 3
    for bits in WIDTHS:
        for x in EDGE + rand_regs(20):
            for sg in (True, False):
                got = [xp.lane(x, i, bits, sg) for i in range(32 // bits)]
                assert got == ref_lanes(x, bits, sg)
                assert xp.pack_lanes(np.array(got, dtype=np.int64), bits) == ref_s32(x)


DOTS = {
    # name: (rs1 signed, rs2 signed, accumulate)
    "dotup": (False, False, False),
    "dotusp": (False, True, False),
    "dotsp": (True, True, False),
    "sdotup": (False, False, True),
    "sdotusp": (False, True, True),
    "sdotsp": (True, True, True),
}


def ref_dot(name, acc, a, b, bits):
    sa, sb, accumulate = DOTS[name]
    s = sum(x * y for x, y in zip(ref_lanes(a, bits, sa), ref_lanes(b, bits, sb), strict=True))
    return ref_s32((acc if accumulate else 0) + s)


def run_dot(name, acc, a, b, bits):
    f = getattr(xp, "pv_" + name)
    return f(acc, a, b, bits) if name.startswith("s") else f(a, b, bits)


@pytest.mark.parametrize("name", list(DOTS))
@pytest.mark.parametrize("bits", WIDTHS)
def test_dot_products_lane_by_lane(name, bits):
    accs = [0, 2**31 - 1, -(2**31), 12345, -7]
    for a in EDGE + rand_regs(30):
        for b in EDGE[:6] + rand_regs(6):
            for acc in accs:
                assert run_dot(name, acc, a, b, bits) == ref_dot(name, acc, a, b, bits)


def test_dot_product_edge_values_by_hand():
    # four -128 x -128 lanes: 4 * 16384 = 65536
    assert xp.pv_dotsp(0x80808080, 0x80808080, 8) == 65536
    # usp: rs1 0x80 is +128 (unsigned), rs2 0x80 is -128: 4 * -16384
    assert xp.pv_dotusp(0x80808080, 0x80808080, 8) == -65536
    assert xp.pv_dotup(0xFFFFFFFF, 0xFFFFFFFF, 8) == 4 * 255 * 255
    # nibbles 0xF: signed -1 * -1 * 8 lanes = 8; unsigned 15 * 15 * 8 = 1800
    assert xp.pv_dotsp(0xFFFFFFFF, 0xFFFFFFFF, 4) == 8
    assert xp.pv_dotup(0xFFFFFFFF, 0xFFFFFFFF, 4) == 1800
    assert xp.pv_dotusp(0xFFFFFFFF, 0xFFFFFFFF, 4) == -120
    # crumbs: 16 lanes of -2 * -2 = 64
    assert xp.pv_dotsp(0xAAAAAAAA, 0xAAAAAAAA, 2) == 64
    # halfwords: two -32768^2 = 2^31 wraps to -2^31
    assert xp.pv_dotsp(0x80008000, 0x80008000, 16) == -(2**31)
    # accumulate wraps: INT32_MAX + 127*127*4
    assert xp.pv_sdotsp(2**31 - 1, 0x7F7F7F7F, 0x7F7F7F7F, 8) == -(2**31) + 64515


def test_sc_and_sci_operands():
    # .sc: rs2's lane 0 replicated; .sci: the 6-bit immediate replicated
    for bits in WIDTHS:
        for b in EDGE + rand_regs(5):
            lane0 = ref_lanes(b, bits, False)[0]
            assert xp.splat(b, bits) == ref_pack([lane0] * (32 // bits), bits)
    a = 0x01FF7F80
    # pv.sdotsp.sc.b a, rs2 = 0x...03: lanes (-128, 127, -1, 1) . 3
    assert xp.pv_sdotsp(10, a, xp.splat(0x12345603, 8), 8) == 10 + 3 * (-128 + 127 - 1 + 1)
    # pv.sdotsp.sci.h with imm -3
    assert xp.pv_sdotsp(0, 0x0002FFFF, xp.splat(-3, 16), 16) == (-1 * -3) + (2 * -3)


ALU_REF = {
    "add": lambda a, b, ua, ub, n: a + b,
    "sub": lambda a, b, ua, ub, n: a - b,
    "avg": lambda a, b, ua, ub, n: (a + b) // 2,
    "avgu": lambda a, b, ua, ub, n: (ua + ub) // 2,
    "min": lambda a, b, ua, ub, n: min(a, b),
    "minu": lambda a, b, ua, ub, n: min(ua, ub),
    "max": lambda a, b, ua, ub, n: max(a, b),
    "maxu": lambda a, b, ua, ub, n: max(ua, ub),
    "srl": lambda a, b, ua, ub, n: ua // 2 ** (ub % n),
    "sra": lambda a, b, ua, ub, n: a // 2 ** (ub % n),
    "sll": lambda a, b, ua, ub, n: ua * 2 ** (ub % n),
    "or": lambda a, b, ua, ub, n: ua | ub,
    "xor": lambda a, b, ua, ub, n: ua ^ ub,
    "and": lambda a, b, ua, ub, n: ua & ub,
    "abs": lambda a, b, ua, ub, n: abs(a),
}


@pytest.mark.parametrize("op", list(ALU_REF))
@pytest.mark.parametrize("bits", WIDTHS)
def test_lane_wise_alu(op, bits):
    f = ALU_REF[op]
    for a in EDGE + rand_regs(15):
        for b in EDGE[:8] + rand_regs(5):
            sa, sb = ref_lanes(a, bits, True), ref_lanes(b, bits, True)
            ua, ub = ref_lanes(a, bits, False), ref_lanes(b, bits, False)
            want = ref_pack([f(*t, bits) for t in zip(sa, sb, ua, ub, strict=True)], bits)
            assert xp.pv_alu(xp.ALU_OPS[op], a, b, bits) == want, (op, hex(a), hex(b))


def test_alu_edges_by_hand():
    # add.b wraps per lane and never carries into the next lane
    assert xp.pv_alu(xp.ADD, 0x7F7F7F7F, 0x01010101, 8) == ref_s32(0x80808080)
    assert xp.pv_alu(xp.ADD, 0x000000FF, 0x00000001, 8) == 0
    # max.b is signed: max(-128, 127) = 127; maxu: 0x80
    assert xp.pv_alu(xp.MAX, 0x80, 0x7F, 8) == 0x7F
    assert xp.pv_alu(xp.MAXU, 0x80, 0x7F, 8) == 0x80
    # abs.n of -8 stays -8 (0x8)
    assert xp.pv_alu(xp.ABS, 0x8, 0, 4) == 0x8
    assert xp.pv_alu(xp.MAX, 0xF, 0x1, 4) == 0x1  # nibble -1 vs 1


def test_pack_insert_extract():
    assert xp.pv_pack_h(0x1234ABCD, 0x5678EF01) == ref_s32(0xABCDEF01)
    assert xp.pv_packhi_b(0x11223344, 0xAB, 0xCD) == ref_s32(0xABCD3344)
    assert xp.pv_packlo_b(0x11223344, 0xAB, 0xCD) == ref_s32(0x1122ABCD)
    # the PULP-NN 4-byte pack: packlo then packhi
    r = xp.pv_packhi_b(xp.pv_packlo_b(0, 0x02, 0x01), 0x04, 0x03)
    assert np.array([r], dtype="<i4").view(np.uint8).tolist() == [1, 2, 3, 4]
    assert xp.pv_extract(0x80FF017F, 3, 8, True) == -128
    assert xp.pv_extract(0x80FF017F, 2, 8, False) == 255
    assert xp.pv_insert(0x11223344, 0xAB, 1, 8) == 0x1122AB44
    assert xp.pv_insert(0x11223344, 0xBEEF, 1, 16) == ref_s32(0xBEEF3344)


def test_shuffle():
    # manual: shuffle.b lane i = rs1.B[rs2.B[i][1:0]]; shuffle2.b picks rs1 when
    # rs2.B[i][2] is set, else the old rd
    for a, d, sel in zip(rand_regs(20), rand_regs(20), rand_regs(20), strict=True):
        ab = np.array([a], dtype="<u4").view(np.uint8)
        db = np.array([d], dtype="<u4").view(np.uint8)
        sb = np.array([sel], dtype="<u4").view(np.uint8)
        want = np.array([ab[s & 3] for s in sb], dtype=np.uint8).view("<i4")[0]
        assert xp.pv_shuffle(a, sel, 8) == want
        want2 = [(ab if s & 4 else db)[s & 3] for s in sb]
        assert xp.pv_shuffle2(d, a, sel, 8) == np.array(want2, dtype=np.uint8).view("<i4")[0]
        ah = np.array([a], dtype="<u4").view(np.uint16)
        sh = np.array([sel], dtype="<u4").view(np.uint16)
        want = np.array([ah[s & 1] for s in sh], dtype=np.uint16).view("<i4")[0]
        assert xp.pv_shuffle(a, sel, 16) == want
    # byte reverse
    assert xp.pv_shuffle(0x44332211, 0x00010203, 8) == 0x11223344


def test_popcount_bitscan_clb():
    for x in EDGE + rand_regs(50):
        assert xp.p_cnt(x) == bin(x & 0xFFFFFFFF).count("1")
        s = format(x & 0xFFFFFFFF, "032b")
        assert xp.p_ff1(x) == (31 - s.rindex("1") if "1" in s else 32)
        assert xp.p_fl1(x) == (31 - s.index("1") if "1" in s else 32)
        run = len(s) - len(s.lstrip(s[0]))
        assert xp.p_clb(x) == (0 if x & 0xFFFFFFFF == 0 else run - 1)
    assert xp.p_cnt(-1) == 32 and xp.p_cnt(0) == 0


def test_clip_family():
    vals = [-(2**31), -300, -129, -128, -127, -1, 0, 1, 126, 127, 128, 255, 256, 2**31 - 1]
    for v in vals:
        for imm in (1, 2, 4, 8, 9, 16, 31):
            lo, hi = -(2 ** (imm - 1)), 2 ** (imm - 1) - 1
            assert xp.p_clip(v, imm) == max(lo, min(hi, v))
            assert xp.p_clipu(v, imm) == max(0, min(hi, v))
        for h in (0, 1, 15, 127, 255):
            assert xp.p_clipr(v, h) == max(-h - 1, min(h, v))
            assert xp.p_clipur(v, h) == max(0, min(h, v))
    # PULP-NN's u8 requant clip: p.clipu x, 9 -> [0, 255]
    assert xp.p_clipu(300, 9) == 255 and xp.p_clipu(-5, 9) == 0


def test_bit_fields():
    for x in EDGE + rand_regs(20):
        s = format(x & 0xFFFFFFFF, "032b")[::-1]  # s[k] = bit k
        for is3, is2 in ((0, 0), (3, 4), (7, 24), (15, 16), (31, 0), (4, 30)):
            n = min(is3 + 1, 32 - is2)
            field = s[is2 : is2 + n][::-1]
            u = int(field, 2)
            sv = u - 2**n if field[0] == "1" else u
            assert xp.p_extractu(x, is3, is2) == ref_s32(u)
            assert xp.p_extract(x, is3, is2) == ref_s32(sv)
            bits = list(s)
            for k in range(is2, is2 + n):
                bits[k] = "1"
            assert xp.p_bset(x, is3, is2) == ref_s32(int("".join(bits)[::-1], 2))
            bits = list(s)
            for k in range(is2, is2 + n):
                bits[k] = "0"
            assert xp.p_bclr(x, is3, is2) == ref_s32(int("".join(bits)[::-1], 2))
            src = format(0x5A5A5A5A, "032b")[::-1]
            bits = list(s)
            for k in range(n):
                bits[is2 + k] = src[k]
            assert xp.p_insert(x, 0x5A5A5A5A, is3, is2) == ref_s32(int("".join(bits)[::-1], 2))


def test_mac_and_addn():
    for a, b, c in zip(rand_regs(30), rand_regs(30), rand_regs(30), strict=True):
        sa, sb, sc = ref_s32(a), ref_s32(b), ref_s32(c)
        assert xp.p_mac(c, a, b) == ref_s32(sc + sa * sb)
        assert xp.p_msu(c, a, b) == ref_s32(sc - sa * sb)
        for n in (0, 1, 7, 31):
            s = ref_s32(sa + sb)
            assert xp.p_addn(a, b, n, False, False, False) == s >> n
            r = ref_s32(s + (2 ** (n - 1) if n else 0))
            assert xp.p_addn(a, b, n, True, False, False) == r >> n
            assert xp.p_addn(a, b, n, False, True, True) == ref_s32((ref_s32(sa - sb) % 2**32) >> n)


# ---------------------------------------------------------------------- XpulpNN
def test_qnt_n_threshold_tree():
    # independent model: c = number of thresholds strictly below x; register gets c - 8
    for _ in range(200):
        thr = np.sort(RNG.integers(-32768, 32768, size=15)).astype(np.int64)
        for x in [int(v) for v in RNG.integers(-40000, 40000, size=10)] + [int(thr[3])]:
            c = sum(1 for t in thr if x > t)
            assert xp.pv_qnt_n(x, thr) == c - 8
    thr = np.arange(15, dtype=np.int64) * 10  # 0, 10, ..., 140
    assert xp.pv_qnt_n(-1, thr) == -8  # below all
    assert xp.pv_qnt_n(0, thr) == -8  # equal is not above
    assert xp.pv_qnt_n(1, thr) == -7
    assert xp.pv_qnt_n(70, thr) == -1 and xp.pv_qnt_n(71, thr) == 0
    assert xp.pv_qnt_n(10**6, thr) == 7
    # the register value is the sign-extended 4-bit code: low nibble = c ^ 8
    assert xp.pv_qnt_n(141, thr) & 0xF == 15 ^ 8


def test_macload_sequence():
    act_words, wt_words = rand_regs(4), rand_regs(8)
    for sa, sw in xp.MLS_SIGNS.values():
        for bits in (8, 4, 2):
            spr = xp.new_sprs()
            # init: load activation SPR 0 and weight SPRs 2..3 (acc into a scratch)
            _, inc = xp.pv_mlsdot(0, spr, 0b01000, act_words[0], bits, sa, sw)
            assert inc == 4 and spr[0] == act_words[0]
            xp.pv_mlsdot(0, spr, 0b10000, wt_words[0], bits, sa, sw)  # w SPR 2
            xp.pv_mlsdot(0, spr, 0b10010, wt_words[1], bits, sa, sw)  # w SPR 3
            assert spr[2] == wt_words[0] and spr[3] == wt_words[1]
            # dot with act 0 x weight 3 while reloading act 0: uses the OLD act value
            acc = 2**31 - 5
            r, inc = xp.pv_mlsdot(acc, spr, 0b01010, act_words[1], bits, sa, sw)
            la, lw = ref_lanes(act_words[0], bits, sa), ref_lanes(wt_words[1], bits, sw)
            assert r == ref_s32(acc + sum(p * q for p, q in zip(la, lw, strict=True)))
            assert inc == 4 and spr[0] == act_words[1]
            # no update bits: no load, SPRs unchanged
            before = spr.copy()
            r, inc = xp.pv_mlsdot(0, spr, 0b00101, 0xDEAD, bits, sa, sw)
            assert inc == 0 and (spr == before).all()
            la, lw = ref_lanes(int(spr[1]), bits, sa), ref_lanes(int(spr[4]), bits, sw)
            assert r == ref_s32(sum(p * q for p, q in zip(la, lw, strict=True)))
    # sup = unsigned activations x signed weights (PULP-NN u8 x i8): 0xFF act, 0xFF weight
    spr = xp.new_sprs()
    spr[0], spr[2] = 0xFFFFFFFF, 0xFFFFFFFF
    assert xp.pv_mlsdot(0, spr, 0, 0, 8, *xp.MLS_SIGNS["sup"])[0] == 4 * 255 * -1
    assert xp.pv_mlsdot(0, spr, 0, 0, 8, *xp.MLS_SIGNS["usp"])[0] == 4 * -1 * 255
