"""Bit-exactness of the int8 MAC kernels (conv, depthwise, fully connected, pooling).

Each case is built twice from the same seeded arrays: as a one-op .tflite (run on the TFLite
Micro interpreter, the golden) and as an mcusim Graph (run through the registered kernel).
A plain-numpy integer reference written here, independently of the kernels, is checked too:
its multipliers come from exact rational arithmetic (``fractions``) and its rounding from
sign/magnitude formulas rather than gemmlowp's bit tricks.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pytest

from mcusim.dtypes import INT8, INT16, INT32, Quant
from mcusim.graph import Graph, Op, Tensor
from mcusim.kernels import kernel_for
from mcusim.kernels.fully_connected import per_tensor_fc_multiplier
from mcusim.ops import (
    Conv2DAttrs,
    DepthwiseConv2DAttrs,
    FullyConnectedAttrs,
    Pool2DAttrs,
    conv_output_size,
    conv_padding,
)

from conftest import SHARED_MODELS, model_path
from tflite_builder import TFLiteBuilder
from tflm_ref import tflm_run

# ---------------------------------------------------------------------------------------------
# Independent integer reference
# ---------------------------------------------------------------------------------------------


def exact_multiplier(real: Fraction) -> tuple[int, int]:
    """QuantizeMultiplier of the double nearest to ``real``, done in exact rationals."""
    d = Fraction(float(real))  # float(Fraction) rounds to nearest double, as C++ '/' does
    if d == 0:
        return 0, 0
    shift = 0
    while d >= 1:
        d /= 2
        shift += 1
    while d < Fraction(1, 2):
        d *= 2
        shift -= 1
    scaled = d * (1 << 31)
    q = math.floor(scaled + Fraction(1, 2))  # round half away from zero (positive value)
    if q == 1 << 31:
        q //= 2
        shift += 1
    return q, shift


def ref_multipliers(in_scale, w_scales, out_scale, n: int, fc_per_tensor: bool = False):
    """(multipliers, shifts) as TFLM derives them: double product, or float32 for FC."""
    ws = np.broadcast_to(np.asarray(w_scales, np.float32).reshape(-1), (n,))
    res = []
    for s in ws:
        if fc_per_tensor:
            prod = Fraction(float(np.float32(in_scale) * np.float32(s)))
        else:
            prod = Fraction(float(np.float32(in_scale))) * Fraction(float(s))
        res.append(exact_multiplier(prod / Fraction(float(np.float32(out_scale)))))
    return np.array([r[0] for r in res], np.int64), np.array([r[1] for r in res], np.int64)


def ref_requant(acc: np.ndarray, mult: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """x * 2^left, doubling high multiply (half up), rounded shift right (half away from 0)."""
    acc = acc.astype(np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    x = acc * (np.int64(1) << left)
    x = ((x + 2**31) % 2**32) - 2**31  # int32 wrap of the left shift
    # gemmlowp's nudge-and-truncate equals floor((x*M + 2^30) / 2^31): round half toward +inf
    h = (x * mult + 2**30) // 2**31
    half = np.where(right > 0, np.int64(1) << np.maximum(right - 1, 0), 0)
    return np.sign(h) * ((np.abs(h) + half) >> right)


def ref_output(acc, mult, shift, out_zp, lo, hi) -> np.ndarray:
    acc = ((acc.astype(np.int64) + 2**31) % 2**32) - 2**31
    return np.clip(ref_requant(acc, mult, shift) + out_zp, lo, hi).astype(np.int8)


def ref_act_range(act: str, scale: float, zp: int, qmin: int = -128, qmax: int = 127):
    def q(v: float) -> int:
        f = float(np.float32(v) / np.float32(scale))
        return zp + int(math.copysign(math.floor(abs(f) + 0.5), f))

    if act == "relu":
        return max(qmin, q(0.0)), qmax
    if act == "relu6":
        return max(qmin, q(0.0)), min(qmax, q(6.0))
    return qmin, qmax


def ref_pad_geometry(h, w, kh, kw, stride, dilation, padding):
    oh = conv_output_size(h, kh, stride[0], dilation[0], padding)
    ow = conv_output_size(w, kw, stride[1], dilation[1], padding)
    if padding == "same":
        return (
            oh,
            ow,
            conv_padding(h, kh, stride[0], dilation[0], oh),
            conv_padding(w, kw, stride[1], dilation[1], ow),
        )
    return oh, ow, 0, 0


def ref_windows(xo: np.ndarray, kh, kw, stride, dilation, oh, ow, pt, pl):
    """Yield (ky, kx, window) of the zero-padded offset input for each filter tap."""
    n, h, w, c = xo.shape
    big = np.zeros(
        (
            n,
            h + 2 * (kh * dilation[0] + oh * stride[0]),
            w + 2 * (kw * dilation[1] + ow * stride[1]),
            c,
        ),
        np.int64,
    )
    oy, ox = kh * dilation[0] + oh * stride[0], kw * dilation[1] + ow * stride[1]
    big[:, oy : oy + h, ox : ox + w] = xo
    for ky in range(kh):
        for kx in range(kw):
            y0 = oy - pt + ky * dilation[0]
            x0 = ox - pl + kx * dilation[1]
            win = big[:, y0 : y0 + oh * stride[0] : stride[0], x0 : x0 + ow * stride[1] : stride[1]]
            yield ky, kx, win


def ref_conv(x, w, bias, in_zp, groups, stride, dilation, padding):
    n, h, wd, cin = x.shape
    cout, kh, kw, cg = w.shape
    oh, ow, pt, pl = ref_pad_geometry(h, wd, kh, kw, stride, dilation, padding)
    acc = np.zeros((n, oh, ow, cout), np.int64)
    fg = cout // groups
    for ky, kx, win in ref_windows(
        x.astype(np.int64) - in_zp, kh, kw, stride, dilation, oh, ow, pt, pl
    ):
        for g in range(groups):
            xs = win[..., g * cg : (g + 1) * cg]
            ws = w[g * fg : (g + 1) * fg, ky, kx, :].astype(np.int64)
            acc[..., g * fg : (g + 1) * fg] += np.einsum("nhwc,oc->nhwo", xs, ws)
    return acc + (0 if bias is None else bias.astype(np.int64))


def ref_depthwise(x, w, bias, in_zp, mult_d, stride, dilation, padding):
    n, h, wd, cin = x.shape
    _, kh, kw, cout = w.shape
    oh, ow, pt, pl = ref_pad_geometry(h, wd, kh, kw, stride, dilation, padding)
    acc = np.zeros((n, oh, ow, cout), np.int64)
    for ky, kx, win in ref_windows(
        x.astype(np.int64) - in_zp, kh, kw, stride, dilation, oh, ow, pt, pl
    ):
        acc += np.repeat(win, mult_d, axis=3) * w[0, ky, kx, :].astype(np.int64)
    return acc + (0 if bias is None else bias.astype(np.int64))


def ref_pool(x, kind, fh, fw, stride, padding, lo, hi):
    n, h, wd, c = x.shape
    oh, ow, pt, pl = ref_pad_geometry(h, wd, fh, fw, stride, (1, 1), padding)
    out = np.zeros((n, oh, ow, c), np.int64)
    for oy in range(oh):
        for ox in range(ow):
            y0, x0 = oy * stride[0] - pt, ox * stride[1] - pl
            win = x[:, max(y0, 0) : min(y0 + fh, h), max(x0, 0) : min(x0 + fw, wd), :]
            win = win.reshape(n, -1, c).astype(np.int64)
            if kind == "max":
                out[:, oy, ox] = win.max(axis=1)
            else:
                s, cnt = win.sum(axis=1), win.shape[1]
                out[:, oy, ox] = np.sign(s) * ((np.abs(s) + cnt // 2) // cnt)
    return np.clip(out, lo, hi).astype(x.dtype)


# ---------------------------------------------------------------------------------------------
# One-op models, built both as .tflite and as an mcusim Graph
# ---------------------------------------------------------------------------------------------

TFL_ACT = {"none": "NONE", "relu": "RELU", "relu6": "RELU6"}


@dataclass
class OneOp:
    model: bytes
    graph: Graph
    op: Op
    x: np.ndarray
    y_index: int

    def ours(self, **override) -> np.ndarray:
        """Our kernel's output; ``override`` replaces fields of the prepared params."""
        kdef = kernel_for(self.op.kind)
        params = kdef.prepare(self.graph, self.op)
        if override:
            params = dataclasses.replace(params, **override)
        out = kdef.compute(params, [self.x])
        assert len(out) == 1
        return out[0]

    def golden(self) -> np.ndarray:
        return tflm_run(self.model, [self.x])[self.y_index]


class Both:
    """Adds each tensor to a TFLiteBuilder and to a Graph's tensor dict at once."""

    def __init__(self) -> None:
        self.b = TFLiteBuilder()
        self.tensors: dict[str, Tensor] = {}
        self.index: dict[str, int] = {}

    def tensor(self, name, shape, dtype, data=None, scale=None, zp=0, axis=None) -> str:
        et = {"int8": INT8, "int16": INT16, "int32": INT32}[dtype]
        quant = None
        if scale is not None:
            sc = np.asarray(scale, np.float32).reshape(-1)
            zpa = np.broadcast_to(np.asarray(zp, np.int64).reshape(-1), sc.shape).copy()
            quant = Quant(sc, zpa, axis if sc.size > 1 else None)
        arr = None if data is None else np.ascontiguousarray(np.asarray(data).astype(et.np_dtype))
        self.tensors[name] = Tensor(name, tuple(shape), et, quant, arr)
        self.index[name] = self.b.tensor(
            name,
            shape,
            dtype,
            data=arr,
            scale=scale,
            zero_point=zp,
            quantized_dimension=0 if axis is None else axis,
        )
        return name

    def finish(self, kind, tfl_op, attrs, inputs, output, options, x) -> OneOp:
        self.b.op(
            tfl_op,
            [self.index[n] if n else -1 for n in inputs],
            [self.index[output]],
            options=options,
        )
        model = self.b.build(inputs=[self.index[inputs[0]]], outputs=[self.index[output]])
        op = Op(kind, f"{kind}_0", list(inputs), [output], attrs, source_index=0)
        graph = Graph(dict(self.tensors), [op], [inputs[0]], [output], name=f"one_{kind}")
        return OneOp(model, graph, op, x, self.index[output])


def rand_i8(rng, shape, lo=-128, hi=127) -> np.ndarray:
    return rng.integers(lo, hi + 1, size=shape, dtype=np.int64).astype(np.int8)


def rand_x(rng, shape, zp: int, spread: int) -> np.ndarray:
    lo, hi = max(-128, zp - spread), min(127, zp + spread)
    return rand_i8(rng, shape, lo, hi)


def rand_bias(rng, n, mag) -> np.ndarray:
    return rng.integers(-mag, mag + 1, size=n, dtype=np.int64).astype(np.int32)


@dataclass
class ConvSpec:
    hw: tuple[int, int] = (9, 9)
    cin: int = 3
    cout: int = 5
    k: tuple[int, int] = (3, 3)
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    padding: str = "same"
    act: str = "none"
    in_zp: int = -7
    out_zp: int = 3
    in_scale: float = 0.05
    out_scale: float = 0.08
    w_scale: tuple[float, float] = (0.002, 0.02)  # per-channel scales spread (geometric)
    per_tensor: bool = False
    groups: int = 1
    batch: int = 1
    bias: bool = True
    seed: int = 0
    depth_multiplier: int = 1  # depthwise only
    x_spread: int = 255  # inputs drawn from in_zp +- x_spread (clipped to int8)
    w_max: int = 127
    bias_mag: int = 4000


def _w_scales(spec: ConvSpec, n: int) -> np.ndarray:
    if spec.per_tensor:
        return np.array([spec.w_scale[0]], np.float32)
    return np.geomspace(spec.w_scale[0], spec.w_scale[1], n).astype(np.float32)


def build_conv(spec: ConvSpec) -> tuple[OneOp, np.ndarray, np.ndarray | None]:
    rng = np.random.default_rng(spec.seed)
    h, w = spec.hw
    kh, kw = spec.k
    cg = spec.cin // spec.groups
    x = rand_x(rng, (spec.batch, h, w, spec.cin), spec.in_zp, spec.x_spread)
    wt = rand_i8(rng, (spec.cout, kh, kw, cg), -spec.w_max, spec.w_max)
    ws = _w_scales(spec, spec.cout)
    oh, ow, _, _ = ref_pad_geometry(h, w, kh, kw, spec.stride, spec.dilation, spec.padding)
    t = Both()
    t.tensor("x", x.shape, "int8", scale=spec.in_scale, zp=spec.in_zp)
    t.tensor("w", wt.shape, "int8", data=wt, scale=ws, zp=0, axis=0)
    bias = None
    if spec.bias:
        bias = rand_bias(rng, spec.cout, spec.bias_mag)
        bs = (np.float32(spec.in_scale) * np.broadcast_to(ws, (spec.cout,))).astype(np.float32)
        t.tensor("b", (spec.cout,), "int32", data=bias, scale=bs, zp=0, axis=0)
    t.tensor("y", (spec.batch, oh, ow, spec.cout), "int8", scale=spec.out_scale, zp=spec.out_zp)
    attrs = Conv2DAttrs(spec.stride, spec.dilation, spec.padding, spec.act)
    opts = dict(
        padding=spec.padding.upper(),
        stride_h=spec.stride[0],
        stride_w=spec.stride[1],
        dilation_h_factor=spec.dilation[0],
        dilation_w_factor=spec.dilation[1],
        fused_activation=TFL_ACT[spec.act],
    )
    ins = ["x", "w", "b" if spec.bias else ""]
    return t.finish("conv2d", "CONV_2D", attrs, ins, "y", opts, x), wt, bias


def build_depthwise(spec: ConvSpec) -> tuple[OneOp, np.ndarray, np.ndarray | None]:
    rng = np.random.default_rng(spec.seed)
    h, w = spec.hw
    kh, kw = spec.k
    cout = spec.cin * spec.depth_multiplier
    x = rand_x(rng, (spec.batch, h, w, spec.cin), spec.in_zp, spec.x_spread)
    wt = rand_i8(rng, (1, kh, kw, cout), -spec.w_max, spec.w_max)
    ws = _w_scales(spec, cout)
    oh, ow, _, _ = ref_pad_geometry(h, w, kh, kw, spec.stride, spec.dilation, spec.padding)
    t = Both()
    t.tensor("x", x.shape, "int8", scale=spec.in_scale, zp=spec.in_zp)
    t.tensor("w", wt.shape, "int8", data=wt, scale=ws, zp=0, axis=3)
    bias = None
    if spec.bias:
        bias = rand_bias(rng, cout, spec.bias_mag)
        bs = (np.float32(spec.in_scale) * np.broadcast_to(ws, (cout,))).astype(np.float32)
        t.tensor("b", (cout,), "int32", data=bias, scale=bs, zp=0, axis=0)
    t.tensor("y", (spec.batch, oh, ow, cout), "int8", scale=spec.out_scale, zp=spec.out_zp)
    attrs = DepthwiseConv2DAttrs(
        spec.stride, spec.dilation, spec.padding, spec.act, spec.depth_multiplier
    )
    opts = dict(
        padding=spec.padding.upper(),
        stride_h=spec.stride[0],
        stride_w=spec.stride[1],
        dilation_h_factor=spec.dilation[0],
        dilation_w_factor=spec.dilation[1],
        fused_activation=TFL_ACT[spec.act],
        depth_multiplier=spec.depth_multiplier,
    )
    # TFLM's depthwise crashes on an absent (-1) bias input: omit it instead.
    ins = ["x", "w", "b"] if spec.bias else ["x", "w"]
    return t.finish("depthwise_conv2d", "DEPTHWISE_CONV_2D", attrs, ins, "y", opts, x), wt, bias


def check_saturates(y: np.ndarray) -> None:
    assert (y == -128).any() and (y == 127).any(), "case meant to saturate does not"


# ---------------------------------------------------------------------------------------------
# Tests: fixed-point reference self-checks
# ---------------------------------------------------------------------------------------------


def test_reference_requant_matches_kernel_mbqm():
    """The independent rounding formulas agree with fixedpoint.mbqm on edge values."""
    from mcusim.kernels.fixedpoint import mbqm

    rng = np.random.default_rng(1)
    acc = np.concatenate(
        [
            rng.integers(-(2**31), 2**31, 3000),
            rng.integers(-5000, 5000, 3000),
            np.array([0, 1, -1, 2**31 - 1, -(2**31), 2**30, -(2**30), 3, -3]),
        ]
    )
    for m, s in [
        (1 << 30, -1),
        (1 << 30, -2),
        (1518500250, -7),
        (2**31 - 1, 0),
        (1 << 30, 1),
        (1431655765, -12),
        (1073741825, 2),
        (1987654321, -31),
    ]:
        want = ref_requant(acc, np.int64(m), np.int64(s))
        got = np.array([mbqm(int(a), m, s) for a in acc])
        np.testing.assert_array_equal(got, want, err_msg=f"m={m} s={s}")


def test_vectorized_requant_matches_mbqm():
    """The branch-free, vectorized requantizations equal mbqm + offset + clamp."""
    from mcusim.kernels.conv2d import requant_clamp, requant_rows, requant_to_nhwc

    rng = np.random.default_rng(2)
    n = 4000
    acc = np.concatenate(
        [
            rng.integers(-(2**31), 2**31, n),
            rng.integers(-70000, 70000, n),
            [0, 1, -1, 2**31 - 1, -(2**31), 2**30, -(2**30), 2**29 + 1, -(2**29) - 1],
        ]
    ).astype(np.int32)
    mults = np.array([1 << 30, 2**31 - 1, 1518500250, 1073741825, 1987654321, 0], np.int32)
    shifts = np.array([-1, 0, -7, 2, -31, 3], np.int32)
    acc_t = np.broadcast_to(acc, (len(mults), acc.size)).copy()
    for out_zp, lo, hi in [(0, -128, 127), (-7, -20, 100), (127, -128, 127)]:
        got = requant_to_nhwc(acc_t, mults, shifts, out_zp, lo, hi)
        want = np.array(
            [
                [
                    requant_clamp(int(a), int(m), int(s), out_zp, lo, hi)
                    for m, s in zip(mults, shifts, strict=True)
                ]
                for a in acc
            ]
        )
        np.testing.assert_array_equal(got, want)
        rows = requant_rows(np.ascontiguousarray(acc_t.T), mults, shifts, out_zp, lo, hi)
        np.testing.assert_array_equal(rows, want)


def test_multiplier_derivation_matches_exact_rationals():
    from mcusim.kernels.conv2d import per_channel_multipliers

    ws = np.geomspace(1e-5, 3.0, 41).astype(np.float32)
    m, s = per_channel_multipliers(np.float32([0.0371]), ws, np.float32([0.0123]), 41)
    em, es = ref_multipliers(0.0371, ws, 0.0123, 41)
    np.testing.assert_array_equal(m, em)
    np.testing.assert_array_equal(s, es)
    assert (s > 0).any() and (s < 0).any()


def test_fc_per_tensor_multiplier_products():
    """The per-tensor FC multiplier: double product by default, float32 on request."""
    from mcusim.kernels.fixedpoint import quantize_multiplier

    a, b, c = 0.0371, 0.00517, 0.0123
    em, es = ref_multipliers(a, [b], c, 1, fc_per_tensor=True)
    dm, ds = ref_multipliers(a, [b], c, 1, fc_per_tensor=False)
    assert em[0] != dm[0], "scales chosen do not discriminate float32 from double product"
    assert quantize_multiplier(per_tensor_fc_multiplier(a, b, c)) == (int(dm[0]), int(ds[0]))
    f32 = quantize_multiplier(per_tensor_fc_multiplier(a, b, c, product="float32"))
    assert f32 == (int(em[0]), int(es[0]))


# ---------------------------------------------------------------------------------------------
# Tests: convolution
# ---------------------------------------------------------------------------------------------

CONV_CASES = {
    "same_3x3_s1": ConvSpec(),
    "valid_3x3_s1": ConvSpec(padding="valid", cin=5, cout=7, seed=1),
    "same_3x3_s2_even": ConvSpec(hw=(10, 12), stride=(2, 2), cin=3, cout=8, seed=2),
    "same_3x3_s2_odd": ConvSpec(hw=(11, 9), stride=(2, 2), cin=7, cout=3, seed=3),
    "valid_5x5_s2": ConvSpec(hw=(13, 12), k=(5, 5), stride=(2, 2), padding="valid", seed=4),
    "same_5x5": ConvSpec(k=(5, 5), cin=4, cout=6, seed=5),
    "nonsquare_3x1_s12": ConvSpec(k=(3, 1), stride=(1, 2), cin=5, cout=5, seed=6),
    "nonsquare_1x5_same": ConvSpec(hw=(7, 11), k=(1, 5), cin=3, cout=7, seed=7),
    "dilation2_same": ConvSpec(hw=(12, 11), dilation=(2, 2), cin=5, cout=4, seed=8),
    "dilation2_valid": ConvSpec(hw=(12, 11), dilation=(2, 2), padding="valid", seed=9),
    "1x1_s1": ConvSpec(k=(1, 1), cin=16, cout=24, seed=10),
    "1x1_s2": ConvSpec(hw=(9, 8), k=(1, 1), stride=(2, 2), cin=8, cout=5, seed=11),
    "1x1_large": ConvSpec(hw=(6, 6), k=(1, 1), cin=128, cout=64, seed=12),
    "relu": ConvSpec(act="relu", out_zp=-20, seed=13),
    "relu6": ConvSpec(act="relu6", out_scale=0.03, out_zp=-100, seed=14),
    "per_tensor": ConvSpec(per_tensor=True, w_scale=(0.01, 0.01), seed=15),
    "saturating": ConvSpec(in_scale=0.5, out_scale=0.05, w_scale=(0.0005, 0.05), seed=16),
    "shift_positive": ConvSpec(
        w_scale=(0.01, 1.2), in_scale=0.4, out_scale=0.02, x_spread=3, w_max=4, bias_mag=30, seed=17
    ),
    "zp_extremes": ConvSpec(in_zp=-128, out_zp=127, seed=18),
    "zp_pos": ConvSpec(in_zp=127, out_zp=-128, act="relu", seed=19),
    "no_bias": ConvSpec(bias=False, seed=20),
    "batch2": ConvSpec(batch=2, hw=(6, 5), seed=21),
    "grouped": ConvSpec(cin=6, cout=9, groups=3, seed=22),
    "first_layer_vww": ConvSpec(hw=(24, 24), cin=3, cout=8, stride=(2, 2), seed=23),
}


@pytest.mark.parametrize("name", list(CONV_CASES))
def test_conv2d(name):
    spec = CONV_CASES[name]
    case, wt, bias = build_conv(spec)
    ours = case.ours()
    x = case.x
    mult, shift = ref_multipliers(
        spec.in_scale, _w_scales(spec, spec.cout), spec.out_scale, spec.cout
    )
    lo, hi = ref_act_range(spec.act, spec.out_scale, spec.out_zp)
    acc = ref_conv(x, wt, bias, spec.in_zp, spec.groups, spec.stride, spec.dilation, spec.padding)
    ref = ref_output(acc, mult, shift, spec.out_zp, lo, hi)
    assert ours.dtype == np.int8 and ours.shape == ref.shape
    np.testing.assert_array_equal(ours, ref, err_msg="vs numpy reference")
    np.testing.assert_array_equal(ours, case.golden(), err_msg="vs TFLM")
    for path in ("dot", "lanes"):  # both loop orders, whichever prepare picked
        np.testing.assert_array_equal(case.ours(path=path), ref, err_msg=f"path {path}")
    assert len(np.unique(ours)) > 8, "degenerate case: output nearly constant"
    if name == "saturating":
        check_saturates(ours)
    if name == "shift_positive":
        assert (shift > 0).any() and (shift < 0).any()


# ---------------------------------------------------------------------------------------------
# Tests: depthwise convolution
# ---------------------------------------------------------------------------------------------

DW_CASES = {
    "same_3x3_s1": ConvSpec(cin=8),
    "same_3x3_s2": ConvSpec(hw=(10, 10), cin=16, stride=(2, 2), seed=1),
    "valid_3x3_s2_odd": ConvSpec(hw=(11, 9), cin=5, stride=(2, 2), padding="valid", seed=2),
    "same_5x5": ConvSpec(k=(5, 5), cin=7, seed=3),
    "nonsquare_3x2": ConvSpec(k=(3, 2), cin=3, stride=(2, 1), seed=4),
    "dilation2": ConvSpec(hw=(12, 12), dilation=(2, 2), cin=6, seed=5),
    "mult2": ConvSpec(cin=3, depth_multiplier=2, seed=6),
    "one_channel_mult8": ConvSpec(hw=(13, 10), cin=1, k=(5, 4), stride=(2, 2), depth_multiplier=8),
    "mult3_s2_valid": ConvSpec(cin=5, depth_multiplier=3, stride=(2, 2), padding="valid", seed=7),
    "relu6": ConvSpec(cin=8, act="relu6", out_scale=0.03, out_zp=-110, seed=8),
    "relu": ConvSpec(cin=8, act="relu", out_zp=10, seed=9),
    "saturating": ConvSpec(cin=8, in_scale=0.5, out_scale=0.02, w_scale=(0.0005, 0.05), seed=10),
    "shift_positive": ConvSpec(
        cin=9,
        w_scale=(0.01, 1.5),
        in_scale=0.4,
        out_scale=0.05,
        x_spread=3,
        w_max=4,
        bias_mag=30,
        seed=11,
    ),
    "per_tensor": ConvSpec(cin=8, per_tensor=True, w_scale=(0.01, 0.01), seed=12),
    "no_bias_batch2": ConvSpec(cin=4, bias=False, batch=2, seed=13),
    "zp_extremes": ConvSpec(cin=8, in_zp=-128, out_zp=127, seed=14),
}


@pytest.mark.parametrize("name", list(DW_CASES))
def test_depthwise_conv2d(name):
    spec = DW_CASES[name]
    case, wt, bias = build_depthwise(spec)
    ours = case.ours()
    cout = spec.cin * spec.depth_multiplier
    mult, shift = ref_multipliers(spec.in_scale, _w_scales(spec, cout), spec.out_scale, cout)
    lo, hi = ref_act_range(spec.act, spec.out_scale, spec.out_zp)
    acc = ref_depthwise(
        case.x,
        wt,
        bias,
        spec.in_zp,
        spec.depth_multiplier,
        spec.stride,
        spec.dilation,
        spec.padding,
    )
    ref = ref_output(acc, mult, shift, spec.out_zp, lo, hi)
    assert ours.dtype == np.int8 and ours.shape == ref.shape
    np.testing.assert_array_equal(ours, ref, err_msg="vs numpy reference")
    np.testing.assert_array_equal(ours, case.golden(), err_msg="vs TFLM")
    for path in ("pixel", "planar", "lanes"):  # every loop order, whichever prepare picked
        np.testing.assert_array_equal(case.ours(path=path), ref, err_msg=f"path {path}")
    assert len(np.unique(ours)) > 8, "degenerate case: output nearly constant"
    if name == "saturating":
        check_saturates(ours)
    if name == "shift_positive":
        assert (shift > 0).any() and (shift < 0).any()


# ---------------------------------------------------------------------------------------------
# Tests: fully connected
# ---------------------------------------------------------------------------------------------


@dataclass
class FCSpec:
    in_shape: tuple[int, ...] = (1, 32)
    n_out: int = 10
    keep_num_dims: bool = False
    act: str = "none"
    in_zp: int = -5
    out_zp: int = 4
    in_scale: float = 0.0371
    w_scale: tuple[float, float] = (0.00517, 0.00517)
    out_scale: float = 0.1
    per_channel: bool = False
    bias: bool = True
    seed: int = 0
    x_spread: int = 255
    w_max: int = 127
    bias_mag: int = 3000


FC_CASES = {
    "per_tensor": FCSpec(),
    "per_tensor_batch3": FCSpec(in_shape=(3, 48), n_out=7, seed=1),
    "keep_num_dims": FCSpec(in_shape=(2, 3, 16), n_out=5, keep_num_dims=True, seed=2),
    "flatten_4d": FCSpec(in_shape=(1, 2, 2, 9), n_out=3, seed=3),
    "relu": FCSpec(act="relu", out_zp=-30, seed=4),
    "relu6": FCSpec(act="relu6", out_scale=0.031, out_zp=-90, seed=5),
    "saturating": FCSpec(
        in_shape=(2, 64), in_scale=0.3, w_scale=(0.05, 0.05), out_scale=0.02, seed=6
    ),
    "shift_positive": FCSpec(
        in_scale=0.31,
        w_scale=(0.09, 0.09),
        out_scale=0.021,
        x_spread=3,
        w_max=5,
        bias_mag=20,
        seed=7,
    ),
    "per_channel": FCSpec(
        in_shape=(2, 40), n_out=9, per_channel=True, w_scale=(0.0005, 0.05), seed=8
    ),
    "no_bias": FCSpec(bias=False, seed=9),
    "vww_head": FCSpec(in_shape=(1, 256), n_out=2, out_scale=0.3, seed=10),
}


@pytest.mark.parametrize("name", list(FC_CASES))
def test_fully_connected(name):
    spec = FC_CASES[name]
    rng = np.random.default_rng(spec.seed)
    k = spec.in_shape[-1]
    x = rand_x(rng, spec.in_shape, spec.in_zp, spec.x_spread)
    wt = rand_i8(rng, (spec.n_out, k), -spec.w_max, spec.w_max)
    n_b = x.size // k
    out_shape = spec.in_shape[:-1] + (spec.n_out,) if spec.keep_num_dims else (n_b, spec.n_out)
    if spec.per_channel:
        ws = np.geomspace(spec.w_scale[0], spec.w_scale[1], spec.n_out).astype(np.float32)
    else:
        ws = np.array([spec.w_scale[0]], np.float32)
    t = Both()
    t.tensor("x", x.shape, "int8", scale=spec.in_scale, zp=spec.in_zp)
    t.tensor("w", wt.shape, "int8", data=wt, scale=ws, zp=0, axis=0)
    bias = None
    if spec.bias:
        bias = rand_bias(rng, spec.n_out, spec.bias_mag)
        bs = (np.float32(spec.in_scale) * ws).astype(np.float32)
        t.tensor("b", (spec.n_out,), "int32", data=bias, scale=bs, zp=0, axis=0)
    t.tensor("y", out_shape, "int8", scale=spec.out_scale, zp=spec.out_zp)
    opts = dict(fused_activation=TFL_ACT[spec.act], keep_num_dims=spec.keep_num_dims)
    attrs = FullyConnectedAttrs(spec.act, spec.keep_num_dims)
    case = t.finish(
        "fully_connected",
        "FULLY_CONNECTED",
        attrs,
        ["x", "w", "b" if spec.bias else ""],
        "y",
        opts,
        x,
    )
    ours = case.ours()

    mult, shift = ref_multipliers(spec.in_scale, ws, spec.out_scale, spec.n_out)
    lo, hi = ref_act_range(spec.act, spec.out_scale, spec.out_zp)
    acc = (x.reshape(n_b, k).astype(np.int64) - spec.in_zp) @ wt.astype(np.int64).T
    if bias is not None:
        acc += bias
    ref = ref_output(acc, mult, shift, spec.out_zp, lo, hi).reshape(out_shape)
    assert ours.dtype == np.int8 and ours.shape == out_shape
    np.testing.assert_array_equal(ours, ref, err_msg="vs numpy reference")
    np.testing.assert_array_equal(ours, case.golden().reshape(out_shape), err_msg="vs TFLM")
    if name == "saturating":
        check_saturates(ours)
    if name == "shift_positive":
        assert (shift > 0).all()
    if name != "saturating":
        sat = np.mean((ours == -128) | (ours == 127))
        assert sat < 0.5, "degenerate case: output mostly saturated"


def test_fc_per_tensor_product_is_double_in_tflm():
    """Accumulators where a float32 and a double scale product give different outputs.

    TFLM's source multiplies the scales in float32 but the golden interpreter's compiled code
    does it in double; this pins which one the golden (and so our kernel) follows. The input
    equals its zero point, so each output's accumulator is exactly its bias; the biases are
    the values (found by scanning) where the two multipliers round differently.
    """
    a, b, c, out_zp = 0.011500915512442589, 0.00322073046118021, 0.1750272512435913, 0
    mf, sf = ref_multipliers(a, [b], c, 1, fc_per_tensor=True)
    md, sd = ref_multipliers(a, [b], c, 1)
    span = np.arange(-600_000, 600_000)
    diff = span[ref_requant(span, mf, sf) != ref_requant(span, md, sd)]
    assert len(diff) >= 2
    n_out, k, zp = len(diff) + 3, 8, -17
    bias = np.concatenate([diff, [0, 12345, -54321]]).astype(np.int32)
    rng = np.random.default_rng(7)
    wt = rand_i8(rng, (n_out, k), -127, 127)
    x = np.full((1, k), zp, np.int8)
    t = Both()
    t.tensor("x", x.shape, "int8", scale=a, zp=zp)
    t.tensor("w", wt.shape, "int8", data=wt, scale=b, zp=0)
    t.tensor("b", (n_out,), "int32", data=bias, scale=np.float32(a) * np.float32(b), zp=0)
    t.tensor("y", (1, n_out), "int8", scale=c, zp=out_zp)
    case = t.finish(
        "fully_connected", "FULLY_CONNECTED", FullyConnectedAttrs(), ["x", "w", "b"], "y", {}, x
    )
    want_f32 = ref_output(bias.astype(np.int64), mf, sf, out_zp, -128, 127).reshape(1, n_out)
    want_f64 = ref_output(bias.astype(np.int64), md, sd, out_zp, -128, 127).reshape(1, n_out)
    assert (want_f32 != want_f64).sum() == len(diff)
    golden = case.golden().reshape(1, n_out)
    np.testing.assert_array_equal(golden, want_f64)
    np.testing.assert_array_equal(case.ours(), golden)


# ---------------------------------------------------------------------------------------------
# Tests: pooling
# ---------------------------------------------------------------------------------------------

POOL_CASES = {
    "avg_same_3x3_s2": ("avg", (9, 9), 5, (3, 3), (2, 2), "same", "none"),
    "avg_same_3x3_s1": ("avg", (6, 7), 3, (3, 3), (1, 1), "same", "none"),
    "avg_same_2x2_s2_odd": ("avg", (7, 7), 7, (2, 2), (2, 2), "same", "none"),
    "avg_valid_3x3_global": ("avg", (3, 3), 16, (3, 3), (1, 1), "valid", "none"),
    "avg_valid_2x3": ("avg", (8, 9), 4, (2, 3), (2, 3), "valid", "relu"),
    "avg_same_5x5_relu6": ("avg", (6, 6), 6, (5, 5), (1, 1), "same", "relu6"),
    "max_same_3x3_s2": ("max", (9, 9), 5, (3, 3), (2, 2), "same", "none"),
    "max_valid_2x2": ("max", (8, 6), 3, (2, 2), (2, 2), "valid", "none"),
    "max_same_3x2_relu": ("max", (7, 5), 7, (3, 2), (1, 2), "same", "relu"),
    "max_same_relu6": ("max", (6, 6), 4, (2, 1), (1, 1), "same", "relu6"),
    "int16_avg_same_3x3_s2": ("avg", (9, 8), 5, (3, 3), (2, 2), "same", "none"),
    "int16_avg_valid_relu": ("avg", (8, 9), 3, (2, 3), (2, 3), "valid", "relu"),
    "int16_max_same_relu6": ("max", (7, 6), 4, (3, 2), (1, 2), "same", "relu6"),
    "int16_max_valid_2x2": ("max", (8, 6), 3, (2, 2), (2, 2), "valid", "none"),
}


@pytest.mark.parametrize("name", list(POOL_CASES))
def test_pooling(name):
    kind, (h, w), c, (fh, fw), stride, padding, act = POOL_CASES[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    if name.startswith("int16"):  # int16 activations: symmetric (zero point 0)
        dtype, scale, zp, qmin, qmax = "int16", 0.0004, 0, -32768, 32767
    else:
        dtype, scale, zp, qmin, qmax = "int8", 0.03, -9, -128, 127
    x = rng.integers(qmin, qmax + 1, (1, h, w, c)).astype(np.dtype(dtype))
    oh, ow, _, _ = ref_pad_geometry(h, w, fh, fw, stride, (1, 1), padding)
    t = Both()
    t.tensor("x", x.shape, dtype, scale=scale, zp=zp)
    t.tensor("y", (1, oh, ow, c), dtype, scale=scale, zp=zp)
    opts = dict(
        padding=padding.upper(),
        stride_h=stride[0],
        stride_w=stride[1],
        filter_height=fh,
        filter_width=fw,
        fused_activation=TFL_ACT[act],
    )
    attrs = Pool2DAttrs((fh, fw), stride, padding, act)
    tfl = "AVERAGE_POOL_2D" if kind == "avg" else "MAX_POOL_2D"
    case = t.finish(f"{kind}_pool2d", tfl, attrs, ["x"], "y", opts, x)
    ours = case.ours()
    lo, hi = ref_act_range(act, scale, zp, qmin, qmax)
    ref = ref_pool(x, kind, fh, fw, stride, padding, lo, hi)
    assert ours.dtype == x.dtype and ours.shape == ref.shape
    np.testing.assert_array_equal(ours, ref, err_msg="vs numpy reference")
    np.testing.assert_array_equal(ours, case.golden(), err_msg="vs TFLM")
    if act != "none":
        unclamped = ref_pool(x, kind, fh, fw, stride, padding, qmin, qmax)
        assert (unclamped != ours).any(), "the fused activation changes nothing in this case"


def test_avg_pool_rounds_half_away_from_zero():
    """Sums over 2 taps that are exact halves round away from zero: 5/2 -> 3, -1/2 -> -1."""
    p0 = [2, -2, 0, 0, 1, -1]
    p1 = [3, -3, -1, 1, 2, -2]
    x = np.array([p0, p1], np.int8).reshape(1, 1, 2, 6)
    t = Both()
    t.tensor("x", x.shape, "int8", scale=0.1, zp=0)
    t.tensor("y", (1, 1, 1, 6), "int8", scale=0.1, zp=0)
    opts = dict(filter_height=1, filter_width=2, padding="VALID", stride_h=1, stride_w=2)
    attrs = Pool2DAttrs((1, 2), (1, 2), "valid")
    case = t.finish("avg_pool2d", "AVERAGE_POOL_2D", attrs, ["x"], "y", opts, x)
    ours = case.ours()
    np.testing.assert_array_equal(ours.reshape(-1), [3, -3, -1, 1, 2, -2])
    np.testing.assert_array_equal(ours, case.golden())


def test_pool_rejects_rescaling():
    from mcusim.errors import UnsupportedOpError

    t = Both()
    x = np.zeros((1, 4, 4, 2), np.int8)
    t.tensor("x", x.shape, "int8", scale=0.1, zp=0)
    t.tensor("y", (1, 2, 2, 2), "int8", scale=0.2, zp=0)
    case = t.finish(
        "avg_pool2d",
        "AVERAGE_POOL_2D",
        Pool2DAttrs((2, 2), (2, 2), "valid"),
        ["x"],
        "y",
        dict(filter_height=2, filter_width=2, stride_h=2, stride_w=2),
        x,
    )
    with pytest.raises(UnsupportedOpError, match="avg_pool2d"):
        case.ours()


# ---------------------------------------------------------------------------------------------
# Tests: every MAC layer of the shared real models, fed TFLM's own input activations
# ---------------------------------------------------------------------------------------------

MAC_KINDS = {"conv2d", "depthwise_conv2d", "fully_connected", "avg_pool2d", "max_pool2d"}


@pytest.mark.parametrize("name", SHARED_MODELS)
def test_real_model_layers_bit_exact(name):
    import tflite

    from mcusim.importers.tflite import load_tflite, unique_tensor_names

    path = model_path(name)
    data = path.read_bytes()
    graph = load_tflite(path)
    sg = tflite.Model.GetRootAs(data, 0).Subgraphs(0)
    raw = [(sg.Tensors(i).Name() or b"").decode() for i in range(sg.TensorsLength())]
    index = {n: i for i, n in enumerate(unique_tensor_names(raw))}
    rng = np.random.default_rng(0)
    xs = []
    for n in graph.inputs:
        t = graph.tensors[n]
        assert not t.dtype.is_float, "shared models are integer-input"
        xs.append(rng.integers(t.dtype.min, t.dtype.max + 1, t.shape).astype(t.dtype.np_dtype))
    golden = tflm_run(data, xs)
    for n, x in zip(graph.inputs, xs, strict=True):
        golden[index[n]] = x
    checked = 0
    for op in graph.ops:
        if op.kind not in MAC_KINDS:
            continue
        ins = [
            golden[index[n]].reshape(graph.tensors[n].shape)
            for n in op.inputs
            if n and not graph.tensors[n].is_const
        ]
        kdef = kernel_for(op.kind, layer=op.label)
        out = kdef.compute(kdef.prepare(graph, op), ins)[0]
        want = golden[index[op.outputs[0]]].reshape(out.shape)
        np.testing.assert_array_equal(out, want, err_msg=f"{name} {op.label}")
        checked += 1
    assert checked > 0


def test_fc_nonzero_filter_zero_point_numpy_reference():
    """TFLM asserts the FC filter zero point is 0; ours honours a non-zero one anyway."""
    rng = np.random.default_rng(11)
    k, n_out, w_zp, in_zp = 20, 6, 3, -4
    x = rand_i8(rng, (3, k))
    wt = rand_i8(rng, (n_out, k), -120, 120)
    bias = rand_bias(rng, n_out, 2000)
    t = Both()
    t.tensor("x", x.shape, "int8", scale=0.05, zp=in_zp)
    t.tensor("w", wt.shape, "int8", data=wt, scale=0.004, zp=w_zp)
    t.tensor("b", (n_out,), "int32", data=bias, scale=0.0002, zp=0)
    t.tensor("y", (3, n_out), "int8", scale=0.08, zp=2)
    case = t.finish(
        "fully_connected", "FULLY_CONNECTED", FullyConnectedAttrs(), ["x", "w", "b"], "y", {}, x
    )
    mult, shift = ref_multipliers(0.05, [0.004], 0.08, n_out)
    acc = (x.astype(np.int64) - in_zp) @ (wt.astype(np.int64) - w_zp).T + bias
    np.testing.assert_array_equal(case.ours(), ref_output(acc, mult, shift, 2, -128, 127))


@pytest.mark.parametrize("kind", ["conv2d", "depthwise_conv2d", "fully_connected"])
def test_unsupported_activation_type_names_the_layer(kind):
    from mcusim.errors import UnsupportedOpError

    t = Both()
    t.tensor("x", (1, 4, 4, 2), "int16", scale=0.001, zp=0)
    if kind == "fully_connected":
        t.tensor("w", (3, 32), "int8", data=np.ones((3, 32)), scale=0.01)
        attrs, y_shape = FullyConnectedAttrs(), (1, 3)
    elif kind == "conv2d":
        t.tensor("w", (3, 1, 1, 2), "int8", data=np.ones((3, 1, 1, 2)), scale=0.01)
        attrs, y_shape = Conv2DAttrs(), (1, 4, 4, 3)
    else:
        t.tensor("w", (1, 1, 1, 2), "int8", data=np.ones((1, 1, 1, 2)), scale=0.01, axis=3)
        attrs, y_shape = DepthwiseConv2DAttrs(), (1, 4, 4, 2)
    t.tensor("y", y_shape, "int16", scale=0.002, zp=0)
    op = Op(kind, "layer_x", ["x", "w"], ["y"], attrs, source_index=7)
    graph = Graph(dict(t.tensors), [op], ["x"], ["y"])
    with pytest.raises(UnsupportedOpError, match=r"#7 layer_x .*int16"):
        kernel_for(kind).prepare(graph, op)


def test_vector_multipliers_equal_the_scalar_rule():
    """quantize_multipliers (numpy, per channel) is QuantizeMultiplier element by element,
    rounding ties, the 2^31 carry, underflow and zero included; each result reconstructs
    the real within half a unit of the Q31 multiplier."""
    from mcusim.kernels.fixedpoint import quantize_multiplier, quantize_multipliers

    rng = np.random.default_rng(7)
    reals = np.concatenate(
        [
            rng.random(3000) * 10.0 ** rng.integers(-14, 4, 3000),
            -rng.random(200),
            [0.0, 1.0, 0.5, 1 - 2**-40, 2**-31, 2**-32, 2**-45, 1e-300, 3 * 2**-33],
        ]
    )
    m, s = quantize_multipliers(reals)
    assert m.dtype == np.int32 and s.dtype == np.int32
    ref = [quantize_multiplier(float(r)) for r in reals]
    assert [(int(a), int(b)) for a, b in zip(m, s, strict=True)] == ref
    for r, a, b in zip(reals[:500], m[:500], s[:500], strict=True):
        if a:
            err = abs(Fraction(float(r)) - Fraction(int(a)) * Fraction(2) ** (int(b) - 31))
            assert err <= Fraction(2) ** (int(b) - 32)
    with pytest.raises(ValueError, match="not finite"):
        quantize_multipliers(np.array([1.0, np.inf]))
