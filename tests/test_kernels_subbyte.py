"""Bit-exactness of the sub-byte / binary / mixed-precision kernels against docs/precision.md.

The reference here is written from the spec, independently of the kernels: plain integer numpy
with explicit padding masks and int64 accumulation, the multiplier from
``kernels.fixedpoint.quantize_multiplier`` (the one allowed shared piece) and the rounding of
MultiplyByQuantizedMultiplier redone on Python integers (round half up of the doubling high
product, then a sign/magnitude rounding shift). Every case is a random layer built as an
mcusim Graph, validated, prepared through ``Model.prepared()`` (so the INT8 kernels' dispatch is
exercised) and run with ``runner.compute_outputs``.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import pytest

from mcusim import qnn
from mcusim.dtypes import INT8, INT32, ElemType, Quant, elem_type
from mcusim.errors import GraphError, UnsupportedOpError
from mcusim.graph import Graph, Op, Tensor
from mcusim.kernels import binary, subbyte
from mcusim.kernels import conv2d as k_conv
from mcusim.kernels import depthwise_conv2d as k_dw
from mcusim.kernels import fully_connected as k_fc
from mcusim.kernels.fixedpoint import quantize_multiplier
from mcusim.model import Model
from mcusim.ops import (
    Conv2DAttrs,
    DepthwiseConv2DAttrs,
    ElementwiseAttrs,
    FullyConnectedAttrs,
    Pool2DAttrs,
)
from mcusim.precision import acc_bound, op_precision, pack_rows
from mcusim.runner import compute_outputs

# ---------------------------------------------------------------------------------------------
# Independent reference of docs/precision.md
# ---------------------------------------------------------------------------------------------


def wrap_i32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


def ref_mbqm(acc: int, mult: int, shift: int) -> int:
    """MultiplyByQuantizedMultiplier on Python ints, from its definition.

    x * 2^left (wrapped to int32), high half of the doubled product rounded half up, then a
    division by 2^right rounded half away from zero (sign and magnitude).
    """
    left, right = max(shift, 0), max(-shift, 0)
    x = wrap_i32(acc << left)
    prod = x * mult
    high = (prod + (1 << 30)) // (1 << 31)  # floor(prod / 2^31 + 1/2)
    if right == 0:
        return high
    mag = (abs(high) + (1 << (right - 1))) >> right
    return mag if high >= 0 else -mag


def ref_fixed_point(acc, sx, sw, sy, y_zp, lo, hi) -> np.ndarray:
    """docs/precision.md 2.1 on int64 accumulators (..., C), per-channel weight scales sw."""
    c = acc.shape[-1]
    sw = np.broadcast_to(np.asarray(sw, np.float32).reshape(-1), (c,))
    ms = [quantize_multiplier(float(np.float32(sx)) * float(s) / float(np.float32(sy))) for s in sw]
    flat = acc.reshape(-1, c)
    out = np.empty(flat.shape, np.int64)
    for j in range(c):
        m, s = ms[j]
        out[:, j] = [min(max(y_zp + ref_mbqm(int(a), m, s), lo), hi) for a in flat[:, j]]
    return out.reshape(acc.shape)


def ref_thresholds(acc, thr, ytype: ElemType) -> np.ndarray:
    """docs/precision.md 2.2: k = #{t <= acc}; y = lo + k (binary: 2k - 1)."""
    k = (acc[..., None] >= thr.astype(np.int64)).sum(axis=-1)
    return 2 * k - 1 if ytype.binary else ytype.min + k


def ref_act_range(act: str, ytype: ElemType, sy: float, y_zp: int) -> tuple[int, int]:
    """Output type's range intersected with the fused activation's quantized range."""

    def q(f: float) -> int:
        r = float(np.float32(f) / np.float32(sy))
        return y_zp + int(math.copysign(math.floor(abs(r) + 0.5), r))

    lo, hi = ytype.min, ytype.max
    if act == "relu":
        return max(lo, q(0.0)), hi
    if act == "relu6":
        return max(lo, q(0.0)), min(hi, q(6.0))
    return lo, hi


def pad_amounts(size, k, s, d, padding):
    eff = (k - 1) * d + 1
    if padding == "valid":
        return (size - eff) // s + 1, 0
    out = -(-size // s)
    return out, max((out - 1) * s + eff - size, 0) // 2


def ref_taps(x, kh, kw, stride, dilation, padding):
    """Yield (ky, kx, patch, valid) per tap: patch (n, oh, ow, c) int64, valid (oh, ow) bool."""
    n, h, w, c = x.shape
    oh, pt = pad_amounts(h, kh, stride[0], dilation[0], padding)
    ow, pl = pad_amounts(w, kw, stride[1], dilation[1], padding)
    for ky in range(kh):
        iy = np.arange(oh) * stride[0] - pt + ky * dilation[0]
        vy = (iy >= 0) & (iy < h)
        for kx in range(kw):
            ix = np.arange(ow) * stride[1] - pl + kx * dilation[1]
            vx = (ix >= 0) & (ix < w)
            valid = vy[:, None] & vx[None, :]
            patch = np.zeros((n, oh, ow, c), np.int64)
            sel = x[:, np.clip(iy, 0, h - 1)][:, :, np.clip(ix, 0, w - 1)].astype(np.int64)
            patch[:, valid] = sel[:, valid]
            yield ky, kx, patch, valid


def ref_conv_acc(x, x_zp, wd, bias, stride, dilation, padding):
    """int64 acc = bias + sum over taps inside the image of w * (x - zp); groups from shapes."""
    cout, kh, kw, cg = wd.shape
    groups = x.shape[3] // cg
    cout_g = cout // groups
    acc = None
    for ky, kx, patch, valid in ref_taps(x, kh, kw, stride, dilation, padding):
        off = (patch - x_zp) * valid[None, :, :, None]  # padding taps contribute nothing
        if acc is None:
            acc = np.zeros(off.shape[:3] + (cout,), np.int64)
        for g in range(groups):
            wg = wd[g * cout_g : (g + 1) * cout_g, ky, kx, :].astype(np.int64)
            acc[..., g * cout_g : (g + 1) * cout_g] += off[..., g * cg : (g + 1) * cg] @ wg.T
    return acc + bias.astype(np.int64)


def ref_depthwise_acc(x, x_zp, wd, bias, stride, dilation, padding, dm):
    _, kh, kw, cout = wd.shape
    acc = None
    for ky, kx, patch, valid in ref_taps(x, kh, kw, stride, dilation, padding):
        off = np.repeat((patch - x_zp) * valid[None, :, :, None], dm, axis=3)
        if acc is None:
            acc = np.zeros(off.shape, np.int64)
        acc += off * wd[0, ky, kx, :].astype(np.int64)
    return acc + bias.astype(np.int64)


def ref_xnor_acc(x, wd, stride, padding):
    """A W1A1 conv by the identity n - 2*popcount(a XOR w) on Python-int bit strings."""
    n, h, w, c = x.shape
    cout, kh, kw, _ = wd.shape
    oh, pt = pad_amounts(h, kh, stride[0], 1, padding)
    ow, pl = pad_amounts(w, kw, stride[1], 1, padding)
    acc = np.zeros((n, oh, ow, cout), np.int64)
    bits = lambda v: sum(1 << i for i, e in enumerate(v) if e > 0)  # noqa: E731
    wbits = [[bits(wd[o, ky, kx]) for ky in range(kh) for kx in range(kw)] for o in range(cout)]
    for b in range(n):
        for oy in range(oh):
            for ox in range(ow):
                for o in range(cout):
                    tot = 0
                    for ky in range(kh):
                        for kx in range(kw):
                            iy, ix = oy * stride[0] - pt + ky, ox * stride[1] - pl + kx
                            if 0 <= iy < h and 0 <= ix < w:
                                a = bits(x[b, iy, ix])
                                tot += c - 2 * bin(a ^ wbits[o][ky * kw + kx]).count("1")
                    acc[b, oy, ox, o] = tot
    return acc


# ---------------------------------------------------------------------------------------------
# Random layers
# ---------------------------------------------------------------------------------------------


def seed_of(*parts) -> int:
    """A seed that is the same in every process (``hash`` of strings is not)."""
    return zlib.crc32(repr(parts).encode())


def q(scale, zp=0, axis=None) -> Quant:
    return Quant(np.atleast_1d(np.asarray(scale, np.float32)), np.atleast_1d(zp), axis)


def rand_values(rng, t: ElemType, shape) -> np.ndarray:
    if t.binary:
        return np.where(rng.random(shape) < 0.5, -1, 1).astype(np.int8)
    return rng.integers(t.min, t.max + 1, shape).astype(t.np_dtype)


def rand_zp(rng, t: ElemType) -> int:
    if t.binary:
        return 0
    span = t.max - t.min
    return int(rng.integers(t.min + span // 4, t.max - span // 4 + 1))


@dataclass
class Layer:
    graph: Graph
    x: np.ndarray
    expected: np.ndarray
    acc: np.ndarray


def _requant_setup(rng, ytype, requant, acc, cout, ins, tensors):
    """Output tensor quant and (for thresholds) the thresholds tensor around the acc spread."""
    if requant == "thresholds":
        levels = 1 if ytype.binary else (1 << ytype.bits) - 1
        thr = np.sort(rng.choice(acc.reshape(-1), (cout, levels)), axis=1)  # inside the data
        thr[0, :] = thr[0, -1]  # a row of equal thresholds
        tensors["thr"] = Tensor("thr", thr.shape, INT32, None, thr.astype(np.int32))
        ins.append("thr")
        return q(0.5, 0), thr
    y_zp = rand_zp(rng, ytype)
    return q(1.0, y_zp), None  # the caller sets the scale from the acc spread


def make_mac(kind, wname, xname, yname, requant, geo, seed, act="none") -> Layer:
    """A random one-op MAC graph of the given types, and its reference output."""
    rng = np.random.default_rng(seed)
    wt, xt, yt = elem_type(wname), elem_type(xname), elem_type(yname)
    h, w, cin, cout, k, stride, padding, dil, groups = geo
    x_zp = rand_zp(rng, xt)
    sx = float(rng.uniform(0.01, 0.1))
    if kind == "conv2d":
        wshape, wq_axis = (cout, k, k, cin // groups), 0
        attrs = Conv2DAttrs((stride, stride), (dil, dil), padding, act, requant)
    elif kind == "depthwise_conv2d":
        cout = cin * groups  # groups = depth multiplier here
        wshape, wq_axis = (1, k, k, cout), 3
        attrs = DepthwiseConv2DAttrs((stride, stride), (dil, dil), padding, act, groups, requant)
    else:
        wshape, wq_axis = (cout, h * w * cin), 0
        attrs = FullyConnectedAttrs(act, False, requant)
    wd = rand_values(rng, wt, wshape)
    sw = rng.uniform(0.002, 0.02, cout).astype(np.float32)
    bias = rng.integers(-300, 300, cout).astype(np.int32)
    xv = rand_values(rng, xt, (2, h, w, cin))
    tensors = {
        "x": Tensor("x", xv.shape, xt, q(sx, x_zp)),
        "w": Tensor("w", wshape, wt, q(sw, np.zeros(cout, np.int64), wq_axis), wd),
        "b": Tensor("b", (cout,), INT32, None, bias),
    }
    ins = ["x", "w", "b"]
    if kind == "conv2d":
        acc = ref_conv_acc(xv, x_zp, wd, bias, (stride, stride), (dil, dil), padding)
    elif kind == "depthwise_conv2d":
        acc = ref_depthwise_acc(xv, x_zp, wd, bias, (stride, stride), (dil, dil), padding, groups)
    else:
        xo = xv.reshape(2, -1).astype(np.int64) - x_zp
        acc = xo @ wd.astype(np.int64).T + bias
    acc = np.vectorize(wrap_i32)(acc).astype(np.int64)  # int32 accumulator (C semantics)
    spread = max(int(np.percentile(np.abs(acc), 90)), 1)
    yq, thr = _requant_setup(rng, yt, requant, acc, acc.shape[-1], ins, tensors)
    if requant == "fixed_point":
        half_levels = (yt.max - yt.min + 1) / 2
        sy = sx * float(sw.mean()) * spread / half_levels
        yq = q(sy, int(yq.zero_point[0]))
        lo, hi = ref_act_range(act, yt, sy, int(yq.zero_point[0]))
        expected = ref_fixed_point(acc, sx, sw, sy, int(yq.zero_point[0]), lo, hi)
    else:
        expected = ref_thresholds(acc, thr, yt)
    tensors["y"] = Tensor("y", acc.shape, yt, yq)
    op = Op(kind, "layer", ins, ["y"], attrs)
    g = Graph(tensors, [op], ["x"], ["y"], name=f"{kind}_{wname}_{xname}_{yname}").validate()
    return Layer(g, xv, expected.astype(yt.np_dtype), acc)


def run_graph(g: Graph, *xs: np.ndarray) -> dict[str, np.ndarray]:
    return compute_outputs(Model(g), list(xs))


# (weights, input, output, requant): every combination of issue 4, signed and unsigned.
COMBOS = [
    ("int8", "int8", "int8", "fixed_point"),  # W8A8
    ("int8", "uint8", "uint8", "fixed_point"),  # W8A8 unsigned
    ("int4", "int8", "int4", "fixed_point"),  # W4A8
    ("int4", "uint8", "uint4", "thresholds"),  # W4A8
    ("int4", "int4", "int4", "fixed_point"),  # W4A4
    ("int4", "uint4", "uint4", "thresholds"),  # W4A4
    ("int4", "uint4", "int8", "fixed_point"),  # W4A4 -> 8 bit
    ("int2", "int4", "int4", "fixed_point"),  # W2A4
    ("int2", "uint4", "uint2", "thresholds"),  # W2A4
    ("int2", "int2", "int2", "fixed_point"),  # W2A2
    ("int2", "uint2", "uint2", "thresholds"),  # W2A2
    ("int8", "uint4", "uint4", "fixed_point"),  # W8A4
    ("binary", "int8", "int8", "fixed_point"),  # W1A8
    ("binary", "uint8", "binary", "thresholds"),  # W1A8 -> binary
    ("int8", "binary", "int4", "thresholds"),  # W8A1
    ("int4", "binary", "int2", "fixed_point"),  # W4A1
    ("binary", "binary", "binary", "thresholds"),  # W1A1
    ("binary", "binary", "int8", "fixed_point"),  # W1A1 -> 8 bit
    ("binary", "binary", "uint4", "thresholds"),  # W1A1 -> 4 bit
]
COMBO_IDS = ["-".join(c[:3]) + ("-thr" if c[3] == "thresholds" else "-fp") for c in COMBOS]

# h, w, cin, cout, k, stride, padding, dilation, groups
CONV_GEOS = [
    (7, 9, 5, 6, 3, 1, "same", 1, 1),
    (8, 7, 67, 5, 3, 2, "same", 1, 1),  # 67 channels: two packing words, odd tail
    (5, 6, 130, 3, 1, 1, "valid", 1, 1),  # 130 channels: three words
    (9, 6, 3, 4, 3, 2, "valid", 1, 1),
    (8, 8, 12, 6, 3, 1, "same", 2, 3),  # dilated, 3 groups of 4 channels
    (6, 5, 33, 7, 5, 3, "same", 1, 1),  # stride 3, 5x5 window
]


@pytest.mark.parametrize("geo", CONV_GEOS, ids=[f"g{i}" for i in range(len(CONV_GEOS))])
@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
def test_conv2d_bitexact(combo, geo):
    layer = make_mac("conv2d", *combo, geo, seed=seed_of(combo, geo))
    out = run_graph(layer.graph, layer.x)["y"]
    assert out.dtype == layer.expected.dtype
    np.testing.assert_array_equal(out, layer.expected)
    assert len(np.unique(out)) >= 2  # a layer that saturates everywhere would prove nothing


DW_GEOS = [
    (7, 8, 5, 0, 3, 1, "same", 1, 1),
    (9, 9, 70, 0, 3, 2, "same", 1, 1),  # 70 channels: two words of bit-sliced counters
    (6, 7, 3, 0, 3, 1, "valid", 1, 2),  # depth multiplier 2
    (8, 8, 4, 0, 5, 1, "same", 2, 3),  # dilated 5x5, multiplier 3
]


@pytest.mark.parametrize("geo", DW_GEOS, ids=[f"g{i}" for i in range(len(DW_GEOS))])
@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
def test_depthwise_bitexact(combo, geo):
    layer = make_mac("depthwise_conv2d", *combo, geo, seed=seed_of(combo, geo, 1))
    out = run_graph(layer.graph, layer.x)["y"]
    np.testing.assert_array_equal(out, layer.expected)


FC_GEOS = [(1, 1, 37, 9, 1, 1, "valid", 1, 1), (2, 3, 70, 5, 1, 1, "valid", 1, 1)]


@pytest.mark.parametrize("geo", FC_GEOS, ids=["k37", "k420"])
@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
def test_fully_connected_bitexact(combo, geo):
    layer = make_mac("fully_connected", *combo, geo, seed=seed_of(combo, geo, 2))
    out = run_graph(layer.graph, layer.x)["y"]
    np.testing.assert_array_equal(out, layer.expected)


@pytest.mark.parametrize("act", ["relu", "relu6"])
@pytest.mark.parametrize("combo", [COMBOS[2], COMBOS[6], COMBOS[12]], ids=["W4A8", "W4A4", "W1A8"])
def test_fused_activation_clamps_in_output_type(combo, act):
    layer = make_mac("conv2d", *combo, CONV_GEOS[0], seed=7, act=act)
    np.testing.assert_array_equal(run_graph(layer.graph, layer.x)["y"], layer.expected)


def test_dispatch_and_paths():
    """int8 layers keep the INT8 kernels; others get subbyte params; W1A1 uses XNOR."""
    int8 = make_mac("conv2d", "int8", "int8", "int8", "fixed_point", CONV_GEOS[0], 1)
    w4a4 = make_mac("conv2d", "int4", "int4", "int4", "fixed_point", CONV_GEOS[0], 1)
    w1a1 = make_mac("conv2d", "binary", "binary", "binary", "thresholds", CONV_GEOS[0], 1)
    dw11 = make_mac("depthwise_conv2d", "binary", "binary", "binary", "thresholds", DW_GEOS[0], 1)
    assert isinstance(Model(int8.graph).prepared()[0].params, k_conv.Conv2DParams)
    p4 = Model(w4a4.graph).prepared()[0].params
    assert isinstance(p4, subbyte.MacParams) and p4.path == "int8"  # values fit int8 loops
    u8 = make_mac("conv2d", "int4", "uint8", "int4", "fixed_point", CONV_GEOS[0], 1)
    assert Model(u8.graph).prepared()[0].params.path == "int"  # x - zp needs 9 bits
    assert p4.precision.startswith("W4A4")
    assert Model(w1a1.graph).prepared()[0].params.path == "xnor"
    assert Model(dw11.graph).prepared()[0].params.path == "xnor"
    assert op_precision(w1a1.graph, w1a1.graph.ops[0]) == "W1A1"


def test_w1a1_conv_equals_xnor_identity():
    """The XNOR kernel's accumulators equal n - 2*popcount(a^w) and the ±1 integer dot."""
    layer = make_mac("conv2d", "binary", "binary", "binary", "thresholds", CONV_GEOS[1], 3)
    g = layer.graph
    params = Model(g).prepared()[0].params
    acc = subbyte.mac_accumulators(params, layer.x).reshape(layer.acc.shape)
    np.testing.assert_array_equal(acc, layer.acc)  # the ±1 integer dot product + bias
    wd = g.tensors["w"].data
    xnor = ref_xnor_acc(layer.x, wd, (2, 2), "same") + g.tensors["b"].data
    np.testing.assert_array_equal(acc, xnor)


@pytest.mark.parametrize(
    ("kind", "geo"),
    [
        ("conv2d", CONV_GEOS[0]),
        ("conv2d", CONV_GEOS[4]),
        ("depthwise_conv2d", DW_GEOS[2]),
        ("depthwise_conv2d", DW_GEOS[1]),
        ("fully_connected", FC_GEOS[1]),
    ],
)
def test_w8a8_generic_path_equals_int8_kernel(kind, geo):
    """The generic path on an int8 layer gives the INT8 kernels' (TFLM-exact) output."""
    layer = make_mac(kind, "int8", "int8", "int8", "fixed_point", geo, seed=11, act="relu6")
    g, op = layer.graph, layer.graph.ops[0]
    fast = {"conv2d": k_conv, "depthwise_conv2d": k_dw, "fully_connected": k_fc}[kind]
    p_fast = fast.prepare(g, op)
    assert not isinstance(p_fast, subbyte.MacParams)
    prep = getattr(subbyte, f"prepare_{kind}")
    generic = subbyte.compute(prep(g, op), [layer.x])[0]
    np.testing.assert_array_equal(generic, fast.compute(p_fast, [layer.x])[0])
    np.testing.assert_array_equal(generic, layer.expected)


# ---------------------------------------------------------------------------------------------
# Packing and popcount
# ---------------------------------------------------------------------------------------------


def test_popcount_and_packing():
    rng = np.random.default_rng(5)
    words = rng.integers(0, 2**63, 200, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    want = [int(w).bit_count() for w in words]
    assert [int(binary.popcount_swar(w)) for w in words] == want
    got = _popcount_all(words)
    assert list(got) == want
    x = rand_values(rng, elem_type("binary"), (2, 3, 4, 70))
    xp = binary.pack_channels(x, 1)  # (24, 1, 2)
    np.testing.assert_array_equal(xp[:, 0, :], pack_rows(x, elem_type("binary")).reshape(24, 2))
    # bit k of word j is channel 64 j + k, +1 -> 1
    assert int(xp[0, 0, 1]) >> 5 & 1 == int(x[0, 0, 0, 69] > 0)


def _popcount_all(words):
    from numba import njit

    @njit
    def f(ws):
        out = np.empty(ws.shape[0], np.int64)
        for i in range(ws.shape[0]):
            out[i] = binary.popcount(ws[i])
        return out

    return f(words)


# ---------------------------------------------------------------------------------------------
# Pooling and add
# ---------------------------------------------------------------------------------------------


def ref_pool(x, kind, fh, fw, stride, padding, lo, hi):
    n, h, w, c = x.shape
    oh, pt = pad_amounts(h, fh, stride, 1, padding)
    ow, pl = pad_amounts(w, fw, stride, 1, padding)
    out = np.empty((n, oh, ow, c), np.int64)
    for oy in range(oh):
        for ox in range(ow):
            y0, x0 = oy * stride - pt, ox * stride - pl
            win = x[:, max(y0, 0) : y0 + fh, max(x0, 0) : x0 + fw, :].astype(np.int64)
            cnt = win.shape[1] * win.shape[2]
            if kind == "max_pool2d":
                v = win.max(axis=(1, 2))
            else:
                s = win.sum(axis=(1, 2))
                v = np.sign(s) * ((np.abs(s) * 2 + cnt) // (2 * cnt))  # half away from zero
            out[:, oy, ox, :] = np.clip(v, lo, hi)
    return out


POOL_CASES = [
    (kind, tname)
    for kind in ("max_pool2d", "avg_pool2d")
    for tname in ("int4", "uint4", "int2", "uint2", "uint8", "binary")
    if not (kind == "avg_pool2d" and tname == "binary")  # refused: test_refusals
]


@pytest.mark.parametrize(("kind", "tname"), POOL_CASES)
@pytest.mark.parametrize("geo", [(3, 2, "same"), (2, 2, "valid"), (3, 1, "same")])
def test_pooling_bitexact(kind, tname, geo):
    t = elem_type(tname)
    rng = np.random.default_rng(seed_of(kind, tname, geo))
    f, s, pad = geo
    x = rand_values(rng, t, (2, 7, 9, 5))
    zp = rand_zp(rng, t)
    act = "none" if t.binary else "relu"
    oh, _ = pad_amounts(7, f, s, 1, pad)
    ow, _ = pad_amounts(9, f, s, 1, pad)
    tq = q(0.05, zp)
    tensors = {
        "x": Tensor("x", x.shape, t, tq),
        "y": Tensor("y", (2, oh, ow, 5), t, tq),
    }
    op = Op(kind, "pool", ["x"], ["y"], Pool2DAttrs((f, f), (s, s), pad, act))
    g = Graph(tensors, [op], ["x"], ["y"]).validate()
    lo, hi = ref_act_range(act, t, 0.05, zp)
    expected = ref_pool(x, kind, f, f, s, pad, lo, hi)
    out = run_graph(g, x)["y"]
    assert out.dtype == t.np_dtype
    np.testing.assert_array_equal(out, expected)


def ref_add(a, b, za, zb, sa, sb, sy, zy, lo, hi):
    s1, s2, so = (float(np.float32(v)) for v in (sa, sb, sy))
    twice = 2 * max(s1, s2)
    ma, ea = quantize_multiplier(s1 / twice)
    mb, eb = quantize_multiplier(s2 / twice)
    mo, eo = quantize_multiplier(twice / ((1 << 20) * so))
    out = np.empty(np.broadcast_shapes(a.shape, b.shape), np.int64)
    aa, bb = np.broadcast_arrays(a.astype(np.int64), b.astype(np.int64))
    for i in np.ndindex(out.shape):
        ra = ref_mbqm(wrap_i32((int(aa[i]) - za) << 20), ma, ea)
        rb = ref_mbqm(wrap_i32((int(bb[i]) - zb) << 20), mb, eb)
        out[i] = min(max(zy + ref_mbqm(wrap_i32(ra + rb), mo, eo), lo), hi)
    return out


@pytest.mark.parametrize(
    ("ta", "tb", "ty", "act"),
    [
        ("int4", "int4", "int4", "relu"),
        ("uint4", "int8", "uint4", "relu"),
        ("uint2", "uint2", "uint8", "relu6"),
        ("int2", "uint4", "int2", "none"),
    ],
)
def test_add_bitexact(ta, tb, ty, act):
    rng = np.random.default_rng(seed_of(ta, tb, ty))
    A, B, Y = elem_type(ta), elem_type(tb), elem_type(ty)
    a = rand_values(rng, A, (2, 4, 5, 6))
    b = rand_values(rng, B, (1, 1, 5, 6))  # broadcast
    za, zb, zy = rand_zp(rng, A), rand_zp(rng, B), rand_zp(rng, Y)
    sa, sb = 0.1, 0.07
    sy = (sa * (A.max - A.min) + sb * (B.max - B.min)) / (Y.max - Y.min + 1)
    tensors = {
        "a": Tensor("a", a.shape, A, q(sa, za)),
        "b": Tensor("b", b.shape, B, q(sb, zb)),
        "y": Tensor("y", a.shape, Y, q(sy, zy)),
    }
    op = Op("add", "add", ["a", "b"], ["y"], ElementwiseAttrs(act))
    g = Graph(tensors, [op], ["a", "b"], ["y"]).validate()
    lo, hi = ref_act_range(act, Y, sy, zy)
    expected = ref_add(a, b, za, zb, sa, sb, sy, zy, lo, hi)
    out = run_graph(g, a, b)["y"]
    assert out.dtype == Y.np_dtype
    np.testing.assert_array_equal(out, expected)
    assert len(np.unique(out)) >= 3


# ---------------------------------------------------------------------------------------------
# A whole sub-byte graph, and its .qnn round trip
# ---------------------------------------------------------------------------------------------


def build_network(seed=0):
    """conv W4A8 (uint8 in) -> dw W4A4 -> conv W2A4 (thresholds, uint2) -> max pool ->
    conv W2A2 -> add (residual, int4) -> avg pool -> FC W1A4 (binary out, thresholds) -> FC W1A1.
    Returns (graph, input, reference outputs per tensor)."""
    rng = np.random.default_rng(seed)
    T = elem_type
    tensors: dict[str, Tensor] = {}
    ops: list[Op] = []
    ref: dict[str, np.ndarray] = {}
    x = rng.integers(0, 256, (1, 10, 10, 3)).astype(np.uint8)
    tensors["x"] = Tensor("x", x.shape, T("uint8"), q(0.02, 128))
    ref["x"] = x

    def mac(name, kind, src, wt, yt, shape_w, attrs, requant_levels=None, dm=1):
        xin = tensors[src]
        xv = ref[src]
        wty = T(wt)
        wd = rand_values(rng, wty, shape_w)
        n = shape_w[3] if kind == "depthwise_conv2d" else shape_w[0]
        sw = rng.uniform(0.005, 0.02, n).astype(np.float32)
        bias = rng.integers(-100, 100, n).astype(np.int32)
        zp = int(xin.quant.zero_point[0])
        if kind == "conv2d":
            acc = ref_conv_acc(xv, zp, wd, bias, attrs.stride, attrs.dilation, attrs.padding)
        elif kind == "depthwise_conv2d":
            acc = ref_depthwise_acc(
                xv, zp, wd, bias, attrs.stride, attrs.dilation, attrs.padding, dm
            )
        else:
            acc = (xv.reshape(xv.shape[0], -1).astype(np.int64) - zp) @ wd.astype(np.int64).T
            acc = acc + bias
        axis = 3 if kind == "depthwise_conv2d" else 0
        tensors[name + "_w"] = Tensor(name + "_w", wd.shape, wty, q(sw, np.zeros(n), axis), wd)
        tensors[name + "_b"] = Tensor(name + "_b", (n,), INT32, None, bias)
        ins = [src, name + "_w", name + "_b"]
        yty = T(yt)
        spread = max(int(np.percentile(np.abs(acc), 90)), 1)
        if attrs.requant == "thresholds":
            levels = 1 if yty.binary else (1 << yty.bits) - 1
            thr = np.sort(rng.choice(acc.reshape(-1), (n, levels)), axis=1).astype(np.int32)
            tensors[name + "_t"] = Tensor(name + "_t", thr.shape, INT32, None, thr)
            ins.append(name + "_t")
            yq = q(0.1, 0)
            out = ref_thresholds(acc, thr, yty)
        else:
            zy = rand_zp(rng, yty)
            sy = float(xin.quant.scale[0]) * float(sw.mean()) * spread / ((yty.max - yty.min) / 2)
            yq = q(sy, zy)
            lo, hi = ref_act_range(attrs.activation, yty, sy, zy)
            out = ref_fixed_point(acc, float(xin.quant.scale[0]), sw, sy, zy, lo, hi)
        tensors[name] = Tensor(name, out.shape, yty, yq)
        ops.append(Op(kind, name, ins, [name], attrs))
        ref[name] = out.astype(yty.np_dtype)

    mac(
        "c1",
        "conv2d",
        "x",
        "int4",
        "int8",
        (8, 3, 3, 3),
        Conv2DAttrs((1, 1), (1, 1), "same", "relu"),
    )
    mac(
        "d1",
        "depthwise_conv2d",
        "c1",
        "int4",
        "int4",
        (1, 3, 3, 8),
        DepthwiseConv2DAttrs((2, 2), (1, 1), "same", "none", 1),
    )
    mac(
        "c2",
        "conv2d",
        "d1",
        "int2",
        "uint2",
        (6, 1, 1, 8),
        Conv2DAttrs((1, 1), (1, 1), "valid", "none", "thresholds"),
    )
    # max pool keeps the type
    t = tensors["c2"]
    pooled = ref_pool(ref["c2"], "max_pool2d", 2, 2, 1, "same", 0, 3).astype(np.uint8)
    tensors["p1"] = Tensor("p1", pooled.shape, t.dtype, t.quant)
    ops.append(Op("max_pool2d", "p1", ["c2"], ["p1"], Pool2DAttrs((2, 2), (1, 1), "same")))
    ref["p1"] = pooled
    mac("c3", "conv2d", "p1", "int2", "int4", (8, 3, 3, 6), Conv2DAttrs((1, 1), (1, 1), "same"))
    # residual add of d1 (int4) and c3 (int4) -> int4
    d1, c3 = tensors["d1"], tensors["c3"]
    sa, sb = float(d1.quant.scale[0]), float(c3.quant.scale[0])
    sy = (sa + sb) * 8 / 16
    zy = 0
    added = ref_add(
        ref["d1"],
        ref["c3"],
        int(d1.quant.zero_point[0]),
        int(c3.quant.zero_point[0]),
        sa,
        sb,
        sy,
        zy,
        -8,
        7,
    )
    tensors["a1"] = Tensor("a1", added.shape, T("int4"), q(sy, zy))
    ops.append(Op("add", "a1", ["d1", "c3"], ["a1"], ElementwiseAttrs()))
    ref["a1"] = added.astype(np.int8)
    avg = ref_pool(ref["a1"], "avg_pool2d", 5, 5, 5, "valid", -8, 7).astype(np.int8)
    tensors["p2"] = Tensor("p2", avg.shape, T("int4"), q(sy, zy))
    ops.append(Op("avg_pool2d", "p2", ["a1"], ["p2"], Pool2DAttrs((5, 5), (5, 5), "valid")))
    ref["p2"] = avg
    mac(
        "f1",
        "fully_connected",
        "p2",
        "binary",
        "binary",
        (70, 8),
        FullyConnectedAttrs(requant="thresholds"),
    )
    mac("f2", "fully_connected", "f1", "binary", "int8", (10, 70), FullyConnectedAttrs())
    g = Graph(tensors, ops, ["x"], ["f2"], name="subbyte_net").validate()
    return g, x, ref


def test_whole_subbyte_graph_and_qnn_roundtrip(tmp_path):
    g, x, ref = build_network()
    env = run_graph(g, x)
    for name, want in ref.items():
        np.testing.assert_array_equal(env[name], want, err_msg=name)
    assert [op_precision(g, op) for op in g.ops if op.kind in ("conv2d", "fully_connected")] == [
        "W4A8",
        "W2A4",
        "W2A2",
        "W1A4",
        "W1A1",
    ]
    path = tmp_path / "net.qnn"
    qnn.save(g, path)
    g2 = qnn.load(path)
    assert g2.tensors["f1_w"].dtype.binary and g2.tensors["c2_w"].dtype.bits == 2
    env2 = run_graph(g2, x)
    for name in ref:
        np.testing.assert_array_equal(env2[name], env[name], err_msg=name)


# ---------------------------------------------------------------------------------------------
# Prepare-time refusals
# ---------------------------------------------------------------------------------------------


def _prepare(g: Graph):
    return Model(g).prepared()


def test_accumulator_bound_refused():
    k = 70_000  # 70000 * 127 * 255 > 2^31
    wd = np.full((2, k), 127, np.int8)
    tensors = {
        "x": Tensor("x", (1, k), elem_type("uint8"), q(0.1, 0)),
        "w": Tensor("w", (2, k), INT8, q(0.1), wd),
        "y": Tensor("y", (1, 2), elem_type("int4"), q(1.0)),
    }
    g = Graph(
        tensors,
        [Op("fully_connected", "big", ["x", "w"], ["y"], FullyConnectedAttrs())],
        ["x"],
        ["y"],
    ).validate()
    assert acc_bound(wd, elem_type("uint8"), 0) == 127 * k * 255
    with pytest.raises(UnsupportedOpError, match=r"big.*W8A8.*2\^31"):
        _prepare(g)
    tensors["w"] = Tensor("w", (2, k), elem_type("int4"), q(0.1), np.full((2, k), 7, np.int8))
    _prepare(g)  # 70000 * 7 * 255 < 2^31: accepted


def test_refusals():
    t4 = elem_type("int4")
    b = elem_type("binary")
    # binary avg_pool2d
    tensors = {"x": Tensor("x", (1, 4, 4, 3), b, q(1.0)), "y": Tensor("y", (1, 2, 2, 3), b, q(1.0))}
    g = Graph(
        tensors, [Op("avg_pool2d", "ap", ["x"], ["y"], Pool2DAttrs((2, 2), (2, 2)))], ["x"], ["y"]
    ).validate()
    with pytest.raises(UnsupportedOpError, match="ap.*binary avg_pool2d"):
        _prepare(g)
    # binary add
    tensors = {
        "a": Tensor("a", (1, 4), b, q(1.0)),
        "c": Tensor("c", (1, 4), b, q(1.0)),
        "y": Tensor("y", (1, 4), b, q(1.0)),
    }
    g = Graph(
        tensors, [Op("add", "ad", ["a", "c"], ["y"], ElementwiseAttrs())], ["a", "c"], ["y"]
    ).validate()
    with pytest.raises(UnsupportedOpError, match="ad.*binary add"):
        _prepare(g)
    # fused activation with thresholds (checked at prepare even on an unvalidated graph)
    layer = make_mac("conv2d", "int4", "int4", "uint2", "thresholds", CONV_GEOS[0], 2)
    op = layer.graph.ops[0]
    op.attrs = Conv2DAttrs((1, 1), (1, 1), "same", "relu", "thresholds")
    with pytest.raises(UnsupportedOpError, match=r"layer.*W4A4.*fused activation 'relu'"):
        subbyte.prepare_conv2d(layer.graph, op)
    # unsigned weights
    layer = make_mac("conv2d", "int4", "int4", "int4", "fixed_point", CONV_GEOS[0], 2)
    w = layer.graph.tensors["w"]
    layer.graph.tensors["w"] = Tensor(
        "w", w.shape, elem_type("uint4"), w.quant, (w.data.astype(np.int16) + 8).astype(np.uint8)
    )
    with pytest.raises(UnsupportedOpError, match="uint4; use int2..int8 or binary"):
        _prepare(layer.graph)
    # a binary output with fixed_point (validate refuses it too; the kernel does on its own)
    layer = make_mac("conv2d", "int4", "int4", "int4", "fixed_point", CONV_GEOS[0], 2)
    layer.graph.tensors["y"] = Tensor("y", layer.graph.tensors["y"].shape, b, q(1.0))
    with pytest.raises(UnsupportedOpError, match="binary output needs requant='thresholds'"):
        _prepare(layer.graph)
    # sub on sub-byte tensors stays INT8-only: refused when the graph is validated
    tensors = {n: Tensor(n, (1, 4), t4, q(0.1)) for n in ("a", "c", "y")}
    g = Graph(tensors, [Op("sub", "sb", ["a", "c"], ["y"], ElementwiseAttrs())], ["a", "c"], ["y"])
    with pytest.raises(GraphError, match=r"layer sb \(sub\): sub runs at 8 bits"):
        g.validate()
