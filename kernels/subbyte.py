"""Compute kernels for every precision of docs/precision.md (sub-byte, binary, uint8, mixed).

The INT8 kernels (conv2d.py, depthwise_conv2d.py, fully_connected.py, pooling.py,
elementwise.py) hand a layer over here from their ``prepare`` when
:func:`mcusim.precision.needs_generic_kernel` says so, and their ``compute`` passes our params
on to :func:`compute`. Values are held unpacked (int8 / uint8 numpy arrays, binary as ±1), as
in the IR.

MAC layers compute ``acc = bias + sum over valid taps w * (x - zp_x)`` in int32:

* W1A1: XNOR-popcount on packed words (:mod:`mcusim.kernels.binary`);
* every other combination: integer MACs on int16 operands (x - zp_x fits in 9 bits, weights
  in 8), padding taps read 0 after the offset so they add nothing; a fully connected layer is
  run as a 1x1 convolution over a 1x1 image.

Then ``fixed_point`` (TFLite's rule, output type's range) or ``thresholds`` (count of
thresholds <= acc, plus the type's low bound; binary 2k - 1) gives the output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from mcusim.dtypes import BINARY
from mcusim.errors import UnsupportedOpError
from mcusim.graph import Graph, Op, Tensor
from mcusim.ops import Conv2DAttrs, conv_output_size, conv_padding
from mcusim.precision import acc_bound, describe, is_small_int, pack_rows, zero_point

from .binary import pack_channels, xnor_conv_acc, xnor_depthwise_acc
from .conv2d import (
    choose_path,
    const_data,
    dot_acc_int32,
    folded_bias,
    im2col_int8,
    im2col_t_int8,
    lanes_acc_int32,
    per_channel_multipliers,
    requant_vec,
)
from .fixedpoint import mbqm, quantize_multiplier, wrap32
from .pooling import avg_pool, max_pool
from .quant_params import activation_range

ACC_LIMIT = 1 << 31
ADD_LEFT_SHIFT = 20  # docs/precision.md section 3: TFLite's int8 ADD rule


# ---------------------------------------------------------------------------------------------
# Compiled loops
# ---------------------------------------------------------------------------------------------


@njit(cache=True, boundscheck=False)
def im2col_offset(x, in_zp, geom, groups):
    """(n*oh*ow, groups*k) int16 patches of x - in_zp; padding taps hold 0.

    Group g's patch occupies columns [g*k, (g+1)*k), each in (kh, kw, cg) order (OHWI rows).
    """
    kh, kw, sh, sw, dh, dw, ph, pw, oh, ow = geom
    n_b, h, wd, cin = x.shape
    cg = cin // groups
    k = kh * kw * cg
    cols = np.empty((n_b * oh * ow, groups * k), np.int16)
    x2 = x.reshape((n_b * h * wd, cin))
    zp = np.int16(in_zp)
    for b in range(n_b):
        for oy in range(oh):
            iy0 = oy * sh - ph
            for ox in range(ow):
                ix0 = ox * sw - pw
                r = (b * oh + oy) * ow + ox
                for ky in range(kh):
                    iy = iy0 + ky * dh
                    for kx in range(kw):
                        ix = ix0 + kx * dw
                        tap = (ky * kw + kx) * cg
                        inside = iy >= 0 and iy < h and ix >= 0 and ix < wd
                        row = (b * h + iy) * wd + ix
                        for g in range(groups):
                            base = g * k + tap
                            if inside:
                                for ci in range(cg):
                                    cols[r, base + ci] = np.int16(x2[row, g * cg + ci]) - zp
                            else:
                                for ci in range(cg):
                                    cols[r, base + ci] = 0
    return cols


@njit(cache=True, boundscheck=False)
def dot_acc(cols, w, groups, bias):
    """acc[p, c] = bias[c] + cols[p, group(c) patch] . w[c] (int16 operands, int32 sums).

    Group g's patch is the column block [g*k, (g+1)*k); indices are range variables (plus
    non-negative offsets) so that numba drops negative-index handling and the dot vectorizes.
    """
    n_p = cols.shape[0]
    cout, k = w.shape
    fg = cout // groups
    acc = np.empty((n_p, cout), np.int32)
    for p in range(n_p):
        for g in range(groups):
            for c in range(g * fg, (g + 1) * fg):
                s = np.int32(0)
                for i in range(k):
                    s += np.int32(cols[p, g * k + i]) * np.int32(w[c, i])
                acc[p, c] = wrap32(np.int64(s) + bias[c])
    return acc


@njit(cache=True, boundscheck=False)
def depthwise_acc(x, w, bias, in_zp, geom, dm):
    """int32 accumulators (n*oh*ow, cout) of a depthwise layer, channels innermost."""
    kh, kw, sh, sw, dh, dw, ph, pw, oh, ow = geom
    n_b, h, wd, cin = x.shape
    cout = w.shape[1]
    acc = np.empty((n_b * oh * ow, cout), np.int32)
    x2 = x.reshape((n_b * h * wd, cin))
    s = np.empty(cout, np.int32)
    zp = np.int32(in_zp)
    for b in range(n_b):
        for oy in range(oh):
            iy0 = oy * sh - ph
            for ox in range(ow):
                ix0 = ox * sw - pw
                r = (b * oh + oy) * ow + ox
                s[:] = 0
                for ky in range(kh):
                    iy = iy0 + ky * dh
                    if iy < 0 or iy >= h:
                        continue
                    for kx in range(kw):
                        ix = ix0 + kx * dw
                        if ix < 0 or ix >= wd:
                            continue
                        row = (b * h + iy) * wd + ix
                        t = ky * kw + kx
                        if dm == 1:
                            for c in range(cout):
                                s[c] += (np.int32(x2[row, c]) - zp) * w[t, c]
                        else:
                            for ci in range(cin):
                                xv = np.int32(x2[row, ci]) - zp
                                for m in range(dm):
                                    s[ci * dm + m] += xv * w[t, ci * dm + m]
                for c in range(cout):
                    acc[r, c] = wrap32(np.int64(s[c]) + bias[c])
    return acc


@njit(cache=True, boundscheck=False)
def requant_fixed_into(acc, mult, shift, out_zp, lo, hi, out):
    """out[p, c] = clamp(out_zp + MultiplyByQuantizedMultiplier(acc, M[c], s[c]), lo, hi)."""
    n_p, cout = acc.shape
    m = np.empty(cout, np.int64)
    left = np.empty(cout, np.int64)
    right = np.empty(cout, np.int64)
    for c in range(cout):
        m[c] = mult[c]
        left[c] = max(shift[c], 0)
        right[c] = max(-shift[c], 0)
    for p in range(n_p):
        for c in range(cout):
            out[p, c] = requant_vec(acc[p, c], m[c], left[c], right[c], out_zp, lo, hi)
    return out


@njit(cache=True, boundscheck=False)
def requant_thresholds_into(acc, thr_t, lo_type, step, out):
    """out[p, c] = lo_type + step * #{j : thr[c, j] <= acc[p, c]} (docs/precision.md 2.2).

    ``thr_t`` is the thresholds transposed (levels, cout): at most 15 levels (4-bit outputs),
    so a branch-free linear count, vectorized over the channels of a pixel.
    """
    n_p, cout = acc.shape
    n_t = thr_t.shape[0]
    for p in range(n_p):
        for c in range(cout):
            out[p, c] = lo_type
        for j in range(n_t):
            for c in range(cout):
                out[p, c] += step * (acc[p, c] >= thr_t[j, c])
    return out


@njit(cache=True, boundscheck=False)
def requant_fixed_cp(acc_t, mult, shift, out_zp, lo, hi, out_t):
    """:func:`requant_fixed_into` on channel-first accumulators (cout, pixels)."""
    cout, n_p = acc_t.shape
    for c in range(cout):
        m = np.int64(mult[c])
        left = np.int64(max(shift[c], 0))
        right = np.int64(max(-shift[c], 0))
        for p in range(n_p):
            out_t[c, p] = requant_vec(acc_t[c, p], m, left, right, out_zp, lo, hi)
    return out_t


@njit(cache=True, boundscheck=False)
def requant_thresholds_cp(acc_t, thr, lo_type, step, out_t):
    """:func:`requant_thresholds_into` on channel-first accumulators (cout, pixels)."""
    cout, n_p = acc_t.shape
    n_t = thr.shape[1]
    for c in range(cout):
        for p in range(n_p):
            out_t[c, p] = lo_type
        for j in range(n_t):
            t = thr[c, j]
            for p in range(n_p):
                out_t[c, p] += step * (acc_t[c, p] >= t)
    return out_t


@njit(cache=True, boundscheck=False)
def add_into(
    a, b, a_off, b_off, a_mult, a_shift, b_mult, b_shift, o_mult, o_shift, o_zp, lo, hi, out
):
    """TFLite's integer ADD on equally long flat arrays, written into ``out`` (any int dtype)."""
    for i in range(a.shape[0]):
        sa = wrap32((np.int64(a[i]) + a_off) << ADD_LEFT_SHIFT)
        sb = wrap32((np.int64(b[i]) + b_off) << ADD_LEFT_SHIFT)
        raw = wrap32(mbqm(sa, a_mult, a_shift) + mbqm(sb, b_mult, b_shift))
        v = mbqm(raw, o_mult, o_shift) + o_zp
        out[i] = min(max(v, lo), hi)
    return out


# ---------------------------------------------------------------------------------------------
# Prepare
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Requant:
    """How int32 accumulators become outputs: ``fixed_point`` or ``thresholds``."""

    mode: str
    out_dtype: np.dtype
    mult: np.ndarray | None = None  # int32 (cout,)
    shift: np.ndarray | None = None  # int32 (cout,)
    out_zp: int = 0
    lo: int = 0
    hi: int = 0
    thresholds: np.ndarray | None = None  # int64 (cout, levels)
    thresholds_t: np.ndarray | None = None  # the same, transposed (levels, cout)
    step: int = 1  # thresholds: value per level (2 for binary)

    def apply_cp(self, acc_t: np.ndarray) -> np.ndarray:
        """Requantize channel-first (cout, pixels) accumulators into (pixels, cout)."""
        out_t = np.empty(acc_t.shape, self.out_dtype)
        if self.mode == "thresholds":
            requant_thresholds_cp(acc_t, self.thresholds, self.lo, self.step, out_t)
        else:
            requant_fixed_cp(acc_t, self.mult, self.shift, self.out_zp, self.lo, self.hi, out_t)
        return out_t.T

    def apply(self, acc: np.ndarray) -> np.ndarray:
        """Requantize (pixels, cout) accumulators."""
        out = np.empty(acc.shape, self.out_dtype)
        if self.mode == "thresholds":
            return requant_thresholds_into(acc, self.thresholds_t, self.lo, self.step, out)
        return requant_fixed_into(acc, self.mult, self.shift, self.out_zp, self.lo, self.hi, out)


@dataclass(frozen=True)
class MacParams:
    """A prepared conv2d / depthwise_conv2d / fully_connected of any precision."""

    kind: str
    precision: str  # e.g. "W4A8 (int4 x uint8 -> int4)"
    path: str  # "int8" (the INT8 kernels' loops), "int" (int16 MACs), "xnor" (W1A1 popcount)
    weights: np.ndarray  # see prepare_* per path
    bias: np.ndarray  # int32 (cout,)
    in_zp: int
    geom: tuple[int, ...]  # (kh, kw, sh, sw, dh, dw, ph, pw, oh, ow)
    groups: int  # conv groups; depthwise: the depth multiplier
    in_shape: tuple[int, ...]  # NHWC the loops see (FC: (batches, 1, 1, k))
    out_shape: tuple[int, ...]
    requant: Requant
    n_planes: int = 0  # binary depthwise: bit-sliced counter width
    loop: str = ""  # "int8" path: conv2d's "dot" or "lanes" loop order


@dataclass(frozen=True)
class PoolParams:
    kind: str
    precision: str
    args: tuple[int, ...]  # fh, fw, sh, sw, ph, pw, oh, ow, lo, hi, lowest
    out_shape: tuple[int, ...]


@dataclass(frozen=True)
class AddParams:
    precision: str
    out_shape: tuple[int, ...]
    out_dtype: np.dtype
    consts: tuple[np.ndarray | None, np.ndarray | None]
    ints: tuple[int, ...]


def _refuse(op: Op, prec: str, why: str) -> None:
    raise UnsupportedOpError(f"{prec}: {why}", layer=op.label)


def _check_activation_type(op: Op, prec: str, t: Tensor, what: str) -> None:
    if not is_small_int(t.dtype):
        _refuse(op, prec, f"{what} {t.name!r} is {t.dtype}; sub-byte kernels take <= 8-bit ints")
    if t.dtype.binary and zero_point(t) != 0:
        _refuse(op, prec, f"binary {what} {t.name!r} must have zero point 0")


def _geometry(x_shape, kh, kw, attrs) -> tuple[int, ...]:
    oh = conv_output_size(x_shape[1], kh, attrs.stride[0], attrs.dilation[0], attrs.padding)
    ow = conv_output_size(x_shape[2], kw, attrs.stride[1], attrs.dilation[1], attrs.padding)
    same = attrs.padding == "same"
    pt = conv_padding(x_shape[1], kh, attrs.stride[0], attrs.dilation[0], oh) if same else 0
    pl = conv_padding(x_shape[2], kw, attrs.stride[1], attrs.dilation[1], ow) if same else 0
    return tuple(int(v) for v in (kh, kw, *attrs.stride, *attrs.dilation, pt, pl, oh, ow))


def _mac_common(graph: Graph, op: Op):
    """Type checks shared by the MAC kinds; returns (x, w, y, precision, bias int32)."""
    x = graph.tensors[op.inputs[0]]
    w = graph.tensors[op.inputs[1]]
    y = graph.tensors[op.outputs[0]]
    prec = describe(graph, op)
    _check_activation_type(op, prec, x, "input")
    _check_activation_type(op, prec, y, "output")
    if not (w.dtype.binary or (is_small_int(w.dtype) and w.dtype.signed)):
        _refuse(op, prec, f"weights {w.name!r} are {w.dtype}; use int2..int8 or binary")
    if w.quant is not None and np.any(w.quant.zero_point != 0):
        _refuse(op, prec, f"weights {w.name!r} must be symmetric (zero point 0)")
    if not w.is_const:
        _refuse(op, prec, f"weights {w.name!r} must be constant")
    bias = const_data(graph, op, 2, "bias")
    n_out = y.shape[-1]
    if bias is None:
        bias = np.zeros(n_out, np.int32)
    else:
        bt = graph.tensors[op.inputs[2]]
        if bt.dtype.is_float or bt.dtype.bits != 32 or not bt.dtype.signed:
            _refuse(op, prec, f"bias {bt.name!r} is {bt.dtype}, expected int32")
        bias = np.ascontiguousarray(bias.astype(np.int32).reshape(-1))
    return x, w, y, prec, bias


def _requant(graph: Graph, op: Op, x: Tensor, w: Tensor, y: Tensor, prec: str, n: int) -> Requant:
    mode = op.attrs.requant
    out_dt = y.dtype.np_dtype
    if mode == "thresholds":
        if op.attrs.activation != "none":
            _refuse(
                op,
                prec,
                f"fused activation {op.attrs.activation!r} with thresholds "
                "requantization (fold it into the thresholds)",
            )
        if not y.dtype.binary and y.dtype.bits > 4:
            _refuse(op, prec, f"thresholds requantization gives <= 4-bit outputs, not {y.dtype}")
        thr = const_data(graph, op, 3, "thresholds")
        levels = 1 if y.dtype.binary else (1 << y.dtype.bits) - 1
        if thr is None or thr.shape != (n, levels):
            shape = None if thr is None else list(thr.shape)
            _refuse(op, prec, f"thresholds {shape} must have shape [{n}, {levels}]")
        thr = np.ascontiguousarray(thr.astype(np.int64))
        if np.any(np.diff(thr, axis=1) < 0):
            _refuse(op, prec, "every row of the thresholds must be non-decreasing")
        step = 2 if y.dtype.binary else 1
        thr_t = np.ascontiguousarray(thr.T)
        return Requant(
            "thresholds", out_dt, lo=y.dtype.min, thresholds=thr, thresholds_t=thr_t, step=step
        )
    if mode != "fixed_point":
        _refuse(op, prec, f"unknown requant mode {mode!r}")
    if y.dtype.binary:
        _refuse(op, prec, "a binary output needs requant='thresholds'")
    for t, what in ((x, "input"), (w, "weights"), (y, "output")):
        if t.quant is None:
            _refuse(op, prec, f"{what} {t.name!r} has no quantization (fixed_point needs scales)")
    mult, shift = per_channel_multipliers(x.quant.scale, w.quant.scale, y.quant.scale, n)
    lo, hi = activation_range(op.attrs.activation, y.quant, y.dtype)
    return Requant("fixed_point", out_dt, mult, shift, zero_point(y), lo, hi)


def _check_bound(op: Op, prec: str, rows: np.ndarray, x: Tensor) -> None:
    bound = acc_bound(rows, x.dtype, zero_point(x))
    if bound >= ACC_LIMIT:
        _refuse(op, prec, f"accumulator bound sum|w|*max|x-zp| = {bound} reaches 2^31")


def _conv_like(op, prec, x, w, y, wd, bias, geom, groups, in_shape, out_shape, req):
    """Params of a (grouped) convolution with OHWI weights ``wd``."""
    cout, kh, kw, cg = wd.shape
    rows = wd.reshape(cout, kh * kw * cg)
    _check_bound(op, prec, rows, x)
    if x.dtype.binary and w.dtype.binary:
        packed = pack_rows(wd, BINARY)  # (cout, kh, kw, nw)
        wp = np.ascontiguousarray(packed.reshape(cout, kh * kw, -1).transpose(1, 2, 0))
        return MacParams(op.kind, prec, "xnor", wp, bias, 0, geom, groups, in_shape, out_shape, req)
    zp = zero_point(x)
    if x.dtype.min >= -128 and x.dtype.max <= 127 and -128 <= zp <= 127:
        # values and zero point fit int8: run conv2d's INT8 loops (padding reads zp, the
        # -zp*sum(w) term folded into the bias, equal modulo 2^32 and hence exact here)
        w8 = np.ascontiguousarray(rows.astype(np.int8))
        n_p = out_shape[0] * geom[8] * geom[9] if len(out_shape) == 4 else in_shape[0]
        return MacParams(
            op.kind,
            prec,
            "int8",
            w8,
            folded_bias(bias, w8, zp),
            zp,
            geom,
            groups,
            in_shape,
            out_shape,
            req,
            loop=choose_path(rows.shape[1], n_p),
        )
    w16 = np.ascontiguousarray(rows.astype(np.int16))
    return MacParams(op.kind, prec, "int", w16, bias, zp, geom, groups, in_shape, out_shape, req)


def prepare_conv2d(graph: Graph, op: Op) -> MacParams:
    x, w, y, prec, bias = _mac_common(graph, op)
    wd = const_data(graph, op, 1, "filter")
    cout, kh, kw, cg = wd.shape
    cin = x.shape[3]
    if cg < 1 or cin % cg or cout % (cin // cg):
        _refuse(op, prec, f"input depth {cin} / filter depth {cg} / output {cout} form no groups")
    req = _requant(graph, op, x, w, y, prec, cout)
    geom = _geometry(x.shape, kh, kw, op.attrs)
    return _conv_like(
        op, prec, x, w, y, wd, bias, geom, cin // cg, tuple(x.shape), tuple(y.shape), req
    )


def prepare_fully_connected(graph: Graph, op: Op) -> MacParams:
    x, w, y, prec, bias = _mac_common(graph, op)
    wd = const_data(graph, op, 1, "weights")
    n_out, k = wd.shape
    if x.size % k or y.size != (x.size // k) * n_out:
        _refuse(op, prec, f"weights {tuple(wd.shape)} do not fit input {x.shape} / {y.shape}")
    req = _requant(graph, op, x, w, y, prec, n_out)
    geom = (1, 1, 1, 1, 1, 1, 0, 0, 1, 1)
    return _conv_like(
        op,
        prec,
        x,
        w,
        y,
        wd.reshape(n_out, 1, 1, k),
        bias,
        geom,
        1,
        (x.size // k, 1, 1, k),
        tuple(y.shape),
        req,
    )


def prepare_depthwise_conv2d(graph: Graph, op: Op) -> MacParams:
    x, w, y, prec, bias = _mac_common(graph, op)
    wd = const_data(graph, op, 1, "filter")
    _, kh, kw, cout = wd.shape
    cin = x.shape[3]
    if cout != y.shape[3] or cout % cin:
        _refuse(op, prec, f"filter depth {cout} is not a multiple of input depth {cin}")
    dm = cout // cin
    req = _requant(graph, op, x, w, y, prec, cout)
    geom = _geometry(x.shape, kh, kw, op.attrs)
    taps = wd.reshape(kh * kw, cout)
    _check_bound(op, prec, taps.T, x)
    common = dict(geom=geom, groups=dm, in_shape=tuple(x.shape), out_shape=tuple(y.shape))
    if x.dtype.binary and w.dtype.binary:
        wp = np.ascontiguousarray(pack_rows(taps, BINARY))  # (kh*kw, nw)
        n_planes = int(kh * kw).bit_length()
        return MacParams(
            op.kind, prec, "xnor", wp, bias, 0, requant=req, n_planes=n_planes, **common
        )
    w32 = np.ascontiguousarray(taps.astype(np.int32))
    return MacParams(op.kind, prec, "int", w32, bias, zero_point(x), requant=req, **common)


def prepare_pool(graph: Graph, op: Op) -> PoolParams:
    a = op.attrs
    x = graph.tensors[op.inputs[0]]
    y = graph.tensors[op.outputs[0]]
    prec = describe(graph, op)
    _check_activation_type(op, prec, x, "input")
    if y.dtype != x.dtype:
        _refuse(op, prec, f"pooling keeps the type: input {x.dtype}, output {y.dtype}")
    if x.dtype.binary:
        if op.kind == "avg_pool2d":
            _refuse(op, prec, "binary avg_pool2d is not defined (docs/precision.md section 3)")
        if a.activation != "none":
            _refuse(op, prec, f"fused activation {a.activation!r} on a binary max_pool2d")
    elif (
        x.quant is None
        or y.quant is None
        or (
            abs(float(x.quant.scale[0]) - float(y.quant.scale[0])) > 1e-6
            or zero_point(x) != zero_point(y)
        )
    ):
        _refuse(op, prec, "integer pooling needs the output scale/zero point equal to the input's")
    fh, fw = a.filter
    geom = _geometry(x.shape, fh, fw, Conv2DAttrs(a.stride, (1, 1), a.padding))
    lo, hi = (-1, 1) if x.dtype.binary else activation_range(a.activation, y.quant, y.dtype)
    kh, kw, sh, sw, _, _, ph, pw, oh, ow = geom
    return PoolParams(
        op.kind, prec, (fh, fw, sh, sw, ph, pw, oh, ow, lo, hi, x.dtype.min), tuple(y.shape)
    )


def prepare_add(graph: Graph, op: Op) -> AddParams:
    ts = [graph.tensors[n] for n in op.inputs]
    y = graph.tensors[op.outputs[0]]
    prec = describe(graph, op)
    for t in (*ts, y):
        _check_activation_type(op, prec, t, "tensor")
        if t.dtype.binary:
            _refuse(op, prec, "binary add is not defined (docs/precision.md section 3)")
        if t.quant is None:
            _refuse(op, prec, f"tensor {t.name!r} has no quantization")
    s1, s2, so = (float(np.float32(t.quant.scale[0])) for t in (*ts, y))
    twice_max = 2.0 * max(s1, s2)
    ro = twice_max / (float(1 << ADD_LEFT_SHIFT) * so)
    if not 0.0 < ro < 1.0:
        _refuse(op, prec, f"add output multiplier {ro:g} outside (0, 1)")
    m1, sh1 = quantize_multiplier(s1 / twice_max)
    m2, sh2 = quantize_multiplier(s2 / twice_max)
    mo, sho = quantize_multiplier(ro)
    lo, hi = activation_range(op.attrs.activation, y.quant, y.dtype)
    consts = tuple(None if t.data is None else np.asarray(t.data) for t in ts)
    ints = (
        -zero_point(ts[0]),
        -zero_point(ts[1]),
        m1,
        sh1,
        m2,
        sh2,
        mo,
        sho,
        zero_point(y),
        lo,
        hi,
    )
    return AddParams(prec, tuple(y.shape), y.dtype.np_dtype, consts, ints)


# ---------------------------------------------------------------------------------------------
# Compute
# ---------------------------------------------------------------------------------------------


def _int8_acc_t(p: MacParams, x: np.ndarray) -> np.ndarray:
    """Channel-first accumulators (cout, pixels) by conv2d's INT8 loops (values fit int8)."""
    x = np.ascontiguousarray(x).reshape(p.in_shape)
    if x.dtype != np.int8:
        x = x.astype(np.int8)  # uint2/uint4 values (<= 15) are unchanged
    n_b, h, w, cin = x.shape
    pointwise = p.geom[:4] == (1, 1, 1, 1) and p.groups == 1
    if p.loop == "dot":
        cols = (
            x.reshape(n_b * h * w, cin) if pointwise else im2col_int8(x, p.in_zp, p.geom, p.groups)
        )
        return dot_acc_int32(cols, p.weights, p.groups, p.bias)
    if pointwise:
        cols_t = np.ascontiguousarray(x.reshape(n_b * h * w, cin).T)
    else:
        cols_t = im2col_t_int8(x, p.in_zp, p.geom, p.groups)
    return lanes_acc_int32(cols_t, p.weights, p.groups, p.bias)


def mac_accumulators(p: MacParams, x: np.ndarray) -> np.ndarray:
    """The int32 accumulators (pixels, cout) before requantization (for tests and tools)."""
    if p.path == "int8":
        return np.ascontiguousarray(_int8_acc_t(p, x).T)
    x = np.ascontiguousarray(x).reshape(p.in_shape)
    n_b, h, wd, _ = x.shape
    if p.kind == "depthwise_conv2d":
        if p.path == "xnor":
            xe = x if p.groups == 1 else np.repeat(x, p.groups, axis=3)
            xp = pack_channels(np.ascontiguousarray(xe), 1)
            return xnor_depthwise_acc(
                xp.reshape(xp.shape[0], xp.shape[2]),
                n_b,
                h,
                wd,
                p.weights,
                p.bias,
                p.geom,
                p.n_planes,
            )
        return depthwise_acc(x, p.weights, p.bias, p.in_zp, p.geom, p.groups)
    if p.path == "xnor":
        cg = x.shape[3] // p.groups
        return xnor_conv_acc(pack_channels(x, p.groups), n_b, h, wd, p.weights, p.bias, p.geom, cg)
    return dot_acc(im2col_offset(x, p.in_zp, p.geom, p.groups), p.weights, p.groups, p.bias)


def compute(p, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Run a layer prepared by one of the ``prepare_*`` functions of this module."""
    if isinstance(p, MacParams):
        if p.path == "int8":
            out = p.requant.apply_cp(_int8_acc_t(p, inputs[0]))
        else:
            out = p.requant.apply(mac_accumulators(p, inputs[0]))
        return [np.ascontiguousarray(out).reshape(p.out_shape)]
    if isinstance(p, PoolParams):
        fn = avg_pool if p.kind == "avg_pool2d" else max_pool
        return [fn(np.ascontiguousarray(inputs[0]), *p.args)]
    if isinstance(p, AddParams):
        it = iter(inputs)
        ops = [c if c is not None else next(it) for c in p.consts]
        a, b = (np.ascontiguousarray(np.broadcast_to(v, p.out_shape)).reshape(-1) for v in ops)
        out = np.empty(a.shape[0], p.out_dtype)
        return [add_into(a, b, *p.ints, out).reshape(p.out_shape)]
    raise TypeError(f"not a sub-byte kernel's params: {type(p).__name__}")
