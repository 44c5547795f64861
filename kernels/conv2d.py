"""int8 CONV_2D, bit-exact to TFLite Micro's reference ``ConvPerChannel``.

TFLM computes ``acc = bias + sum(w * (x - in_zp))`` over the taps inside the image (padding
taps are skipped), requantizes with a per-channel (multiplier, shift) and clamps. We compute
the same integer in a faster order: padding taps read the value ``in_zp`` (so they add
nothing) and the ``- in_zp * sum(w)`` term is folded into the bias at prepare time. Both are
equal modulo 2^32, which is all int32 arithmetic keeps, so the results are bit-identical.

Two loop orders, picked per layer at prepare time (:func:`choose_path`) from the dot length
k = kh*kw*cin/groups and the number of output pixels:

* ``dot`` (long k): each output pixel's patch is a contiguous row (im2col; a 1x1 stride-1
  convolution reads the input in place) and each output channel one contiguous dot product,
  which LLVM turns into packed 16-bit multiply-accumulates.
* ``lanes`` (short k, e.g. the 3-channel first layer or 8-channel 1x1 layers): the transposed
  patch matrix (k, pixels) is swept once per weight, output pixels being the vector lanes, so
  short dot products never fall into LLVM's scalar remainder loop.

Both produce int32 accumulators laid out (channel, pixel), which :func:`requant_to_nhwc`
requantizes with the per-channel parameters broadcast over long vectorizable rows.

The helpers shared by the other MAC kernels (multipliers, requantization, constant access)
live here too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from mcusim.dtypes import INT8, INT32
from mcusim.errors import UnsupportedOpError
from mcusim.graph import Graph, Op, Tensor
from mcusim.ops import conv_output_size, conv_padding
from mcusim.precision import needs_generic_kernel

from .fixedpoint import mbqm, quantize_multipliers
from .quant_params import activation_range
from .registry import KernelDef, register

# ---------------------------------------------------------------------------------------------
# Helpers shared by conv2d, depthwise_conv2d and fully_connected
# ---------------------------------------------------------------------------------------------


def per_channel_multipliers(
    input_scale: np.ndarray, filter_scale: np.ndarray, output_scale: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """TFLite PopulateConvolutionQuantizationParams: per channel, in double precision.

    effective = double(input_scale) * double(filter_scale[c]) / double(output_scale); a
    per-tensor filter scale is broadcast to all ``n`` channels.
    """
    fs = np.asarray(filter_scale, dtype=np.float32).astype(np.float64)
    if fs.size == 1:
        fs = np.full(n, fs[0])
    in_s = float(np.float32(input_scale[0]))
    out_s = float(np.float32(output_scale[0]))
    reals = np.array([in_s * float(f) / out_s for f in fs], dtype=np.float64)
    return quantize_multipliers(reals)


def folded_bias(bias: np.ndarray | None, weights2d: np.ndarray, in_zp: int) -> np.ndarray:
    """bias - in_zp * sum(weights row), wrapped to int32 as C int32 arithmetic would."""
    n = weights2d.shape[0]
    b = np.zeros(n, np.int64) if bias is None else bias.astype(np.int64).reshape(n)
    b = b - int(in_zp) * weights2d.astype(np.int64).sum(axis=1)
    return (((b + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)).astype(np.int32)


def const_data(graph: Graph, op: Op, index: int, what: str) -> np.ndarray | None:
    """Data of constant input ``index`` of ``op`` (None if the optional input is absent)."""
    if index >= len(op.inputs) or not op.inputs[index]:
        return None
    t = graph.tensors[op.inputs[index]]
    if not t.is_const:
        raise UnsupportedOpError(f"{what} must be a constant tensor", layer=op.label)
    return np.ascontiguousarray(t.data)


def check_int8(t: Tensor, op: Op, what: str) -> None:
    if t.dtype != INT8:
        raise UnsupportedOpError(
            f"{what} {t.name!r} is {t.dtype}, the kernel implements int8", layer=op.label
        )
    if t.quant is None:
        raise UnsupportedOpError(f"{what} {t.name!r} has no quantization", layer=op.label)


def check_bias(graph: Graph, op: Op, index: int) -> None:
    if index < len(op.inputs) and op.inputs[index]:
        t = graph.tensors[op.inputs[index]]
        if t.dtype != INT32:
            raise UnsupportedOpError(
                f"bias {t.name!r} is {t.dtype}, the int8 kernel needs int32", layer=op.label
            )


@njit(cache=True, inline="always")
def requant_clamp(acc, mult, shift, out_zp, lo, hi):
    """MultiplyByQuantizedMultiplier, + output offset, clamp to the activation range."""
    v = mbqm(acc, mult, shift) + out_zp
    if v < lo:
        v = lo
    if v > hi:
        v = hi
    return v


@njit(cache=True, inline="always")
def requant_vec(acc, mult, left, right, out_zp, lo, hi):
    """:func:`requant_clamp` with the shift split as left = max(shift, 0), right = max(-shift, 0).

    Branch-free so that loops over it vectorize. gemmlowp's nudge-and-truncate rounding of the
    doubling high multiply equals floor((x*M + 2^30) / 2^31) whenever M != INT32_MIN (our
    multipliers are in [0, 2^31)); RoundingDivideByPOT is written out as in gemmlowp. Tests
    check it against :func:`mbqm` on random and edge values.
    """
    x = np.int64(acc) << left
    x = ((x + 2147483648) & 0xFFFFFFFF) - 2147483648  # int32 wrap of the left shift
    q = (x * mult + 1073741824) >> 31
    mask = (np.int64(1) << right) - 1
    v = (q >> right) + ((q & mask) > ((mask >> 1) + (q < 0))) + out_zp
    return min(max(v, lo), hi)


@njit(cache=True, boundscheck=False, fastmath=False)
def requant_to_nhwc(acc_t, mult, shift, out_zp, lo, hi):
    """int32 accumulators (cout, pixels) -> requantized int8 (pixels, cout)."""
    cout, n_p = acc_t.shape
    out_t = np.empty((cout, n_p), np.int8)
    for c in range(cout):
        m = np.int64(mult[c])
        left = np.int64(max(shift[c], 0))
        right = np.int64(max(-shift[c], 0))
        for p in range(n_p):
            out_t[c, p] = requant_vec(acc_t[c, p], m, left, right, out_zp, lo, hi)
    return out_t.T.copy()


@njit(cache=True, boundscheck=False, fastmath=False)
def requant_rows(acc, mult, shift, out_zp, lo, hi):
    """int32 accumulators (pixels, cout) -> requantized int8 of the same layout.

    The per-channel parameters vary along the vectorized inner loop (loaded, not broadcast),
    which suits rows of 16 or more channels.
    """
    n_p, cout = acc.shape
    m = np.empty(cout, np.int64)
    left = np.empty(cout, np.int64)
    right = np.empty(cout, np.int64)
    for c in range(cout):
        m[c] = mult[c]
        left[c] = max(shift[c], 0)
        right[c] = max(-shift[c], 0)
    out = np.empty((n_p, cout), np.int8)
    for p in range(n_p):
        for c in range(cout):
            out[p, c] = requant_vec(acc[p, c], m[c], left[c], right[c], out_zp, lo, hi)
    return out


# ---------------------------------------------------------------------------------------------
# Convolution
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Conv2DParams:
    weights: np.ndarray  # int8 (cout, kh*kw*cin_per_group), rows in (kh, kw, cin) order
    bias: np.ndarray  # int32 (cout,), input offset folded in
    mult: np.ndarray  # int32 (cout,)
    shift: np.ndarray  # int32 (cout,), >0 = left shift (TFLite convention)
    in_zp: int
    out_zp: int
    act_min: int
    act_max: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pad: tuple[int, int]  # (top, left)
    groups: int
    out_shape: tuple[int, ...]
    path: str  # "dot" or "lanes", see the module docstring

    @property
    def geom(self) -> tuple[int, ...]:
        """(kh, kw, sh, sw, dh, dw, ph, pw, oh, ow), as the compiled loops take it."""
        parts = (*self.kernel, *self.stride, *self.dilation, *self.pad, *self.out_shape[1:3])
        return tuple(int(v) for v in parts)


def choose_path(k: int, n_pixels: int) -> str:
    """Loop order for dot length k over n_pixels outputs (measured on VWW-like layers).

    "lanes" wins for short dots, and for medium ones when there are enough pixels to fill
    its vectors; long dots are fastest as contiguous "dot" products.
    """
    if k < 48 or (k < 96 and n_pixels >= 128):
        return "lanes"
    return "dot"


def prepare(graph: Graph, op: Op) -> Conv2DParams:
    if needs_generic_kernel(graph, op):  # sub-byte / binary / uint8 / thresholds
        from . import subbyte

        return subbyte.prepare_conv2d(graph, op)
    a = op.attrs
    x = graph.tensors[op.inputs[0]]
    w = graph.tensors[op.inputs[1]]
    y = graph.tensors[op.outputs[0]]
    check_int8(x, op, "input")
    check_int8(y, op, "output")
    check_int8(w, op, "filter")
    check_bias(graph, op, 2)
    wd = const_data(graph, op, 1, "filter")
    bias = const_data(graph, op, 2, "bias")
    cout, kh, kw, cin_g = wd.shape
    cin = x.shape[3]
    if cin % cin_g or cout % (cin // cin_g):
        raise UnsupportedOpError(
            f"input depth {cin} / filter depth {cin_g} / output depth {cout} do not form groups",
            layer=op.label,
        )
    oh = conv_output_size(x.shape[1], kh, a.stride[0], a.dilation[0], a.padding)
    ow = conv_output_size(x.shape[2], kw, a.stride[1], a.dilation[1], a.padding)
    pt = conv_padding(x.shape[1], kh, a.stride[0], a.dilation[0], oh) if a.padding == "same" else 0
    pl = conv_padding(x.shape[2], kw, a.stride[1], a.dilation[1], ow) if a.padding == "same" else 0
    w2 = np.ascontiguousarray(wd.reshape(cout, kh * kw * cin_g).astype(np.int8))
    in_zp = int(x.quant.zero_point[0])
    mult, shift = per_channel_multipliers(x.quant.scale, w.quant.scale, y.quant.scale, cout)
    lo, hi = activation_range(a.activation, y.quant, y.dtype)
    return Conv2DParams(
        weights=w2,
        bias=folded_bias(bias, w2, in_zp),
        mult=mult,
        shift=shift,
        in_zp=in_zp,
        out_zp=int(y.quant.zero_point[0]),
        act_min=lo,
        act_max=hi,
        kernel=(kh, kw),
        stride=tuple(a.stride),
        dilation=tuple(a.dilation),
        pad=(pt, pl),
        groups=cin // cin_g,
        out_shape=tuple(y.shape),
        path=choose_path(kh * kw * cin_g, y.shape[0] * oh * ow),
    )


@njit(cache=True, boundscheck=False, fastmath=False)
def im2col_int8(x, in_zp, geom, groups):
    """(n*oh*ow, groups*k) patches; taps outside the image hold ``in_zp``.

    Group g's patch occupies columns [g*k, (g+1)*k), each in (kh, kw, cg) order.
    """
    kh, kw, sh, sw, dh, dw, ph, pw, oh, ow = geom
    n_b, h, wd, cin = x.shape
    cg = cin // groups
    k = kh * kw * cg
    cols = np.empty((n_b * oh * ow, groups * k), np.int8)
    x2 = x.reshape((n_b * h * wd, cin))
    zp8 = np.int8(in_zp)
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
                        if iy >= 0 and iy < h and ix >= 0 and ix < wd:
                            row = (b * h + iy) * wd + ix
                            for g in range(groups):
                                for ci in range(cg):
                                    cols[r, g * k + tap + ci] = x2[row, g * cg + ci]
                        else:
                            for g in range(groups):
                                for ci in range(cg):
                                    cols[r, g * k + tap + ci] = zp8
    return cols


@njit(cache=True, boundscheck=False, fastmath=False)
def im2col_t_int8(x, in_zp, geom, groups):
    """The transpose of :func:`im2col_int8`: (groups*k, n*oh*ow), built row by row."""
    kh, kw, sh, sw, dh, dw, ph, pw, oh, ow = geom
    n_b, h, wd, cin = x.shape
    cg = cin // groups
    k = kh * kw * cg
    cols = np.empty((groups * k, n_b * oh * ow), np.int8)
    zp8 = np.int8(in_zp)
    for kx in range(kw):
        off = kx * dw - pw
        ox_lo = 0  # first ox whose input column is inside the image
        while ox_lo < ow and ox_lo * sw + off < 0:
            ox_lo += 1
        ox_hi = ow
        while ox_hi > ox_lo and (ox_hi - 1) * sw + off >= wd:
            ox_hi -= 1
        for ky in range(kh):
            for g in range(groups):
                for ci in range(cg):
                    r = g * k + (ky * kw + kx) * cg + ci
                    ch = g * cg + ci
                    for b in range(n_b):
                        for oy in range(oh):
                            iy = oy * sh - ph + ky * dh
                            base = (b * oh + oy) * ow
                            if iy < 0 or iy >= h:
                                for ox in range(ow):
                                    cols[r, base + ox] = zp8
                                continue
                            for ox in range(ox_lo):
                                cols[r, base + ox] = zp8
                            for ox in range(ox_hi, ow):
                                cols[r, base + ox] = zp8
                            for ox in range(ox_lo, ox_hi):
                                cols[r, base + ox] = x[b, iy, ox * sw + off, ch]
    return cols


@njit(cache=True, boundscheck=False, fastmath=False)
def dot_acc_int32(cols, w, groups, bias):
    """acc[c, p] = bias[c] + cols[p, group(c) patch] . w[c]: one contiguous dot per output.

    2-D arrays indexed by range variables only: numba then drops its negative-index
    wraparound and LLVM vectorizes the dot.
    """
    n_p = cols.shape[0]
    cout, k = w.shape
    fg = cout // groups
    acc = np.empty((cout, n_p), np.int32)
    for p in range(n_p):
        for g in range(groups):
            for c in range(g * fg, (g + 1) * fg):
                s = np.int32(0)
                for i in range(k):
                    s += np.int32(cols[p, g * k + i]) * np.int32(w[c, i])
                acc[c, p] = s + bias[c]
    return acc


@njit(cache=True, boundscheck=False, fastmath=False)
def lanes_acc_int32(cols_t, w, groups, bias):
    """acc[c, :] = bias[c] + sum_i w[c, i] * cols_t[group(c)*k + i, :], pixels as lanes."""
    n_p = cols_t.shape[1]
    cout, k = w.shape
    fg = cout // groups
    acc = np.empty((cout, n_p), np.int32)
    for c in range(cout):
        r0 = (c // fg) * k
        b0 = bias[c]
        for p in range(n_p):
            acc[c, p] = b0
        i = 0
        while i + 4 <= k:  # four weights per sweep: fewer accumulator loads/stores
            w0 = np.int32(w[c, i])
            w1 = np.int32(w[c, i + 1])
            w2 = np.int32(w[c, i + 2])
            w3 = np.int32(w[c, i + 3])
            ra = r0 + i
            for p in range(n_p):
                acc[c, p] += (
                    w0 * np.int32(cols_t[ra, p])
                    + w1 * np.int32(cols_t[ra + 1, p])
                    + w2 * np.int32(cols_t[ra + 2, p])
                    + w3 * np.int32(cols_t[ra + 3, p])
                )
            i += 4
        while i < k:
            w0 = np.int32(w[c, i])
            ra = r0 + i
            for p in range(n_p):
                acc[c, p] += w0 * np.int32(cols_t[ra, p])
            i += 1
    return acc


def compute(p: Conv2DParams, inputs: list[np.ndarray]) -> list[np.ndarray]:
    if not isinstance(p, Conv2DParams):  # prepared by kernels/subbyte.py
        from . import subbyte

        return subbyte.compute(p, inputs)
    x = np.ascontiguousarray(inputs[0])
    n_b, h, w, cin = x.shape
    pointwise = p.kernel == (1, 1) and p.stride == (1, 1) and p.groups == 1
    if p.path == "dot":
        if pointwise:  # the input is the patch matrix
            cols = x.reshape(n_b * h * w, cin)
        else:
            cols = im2col_int8(x, p.in_zp, p.geom, p.groups)
        acc = dot_acc_int32(cols, p.weights, p.groups, p.bias)
    else:
        if pointwise:
            cols_t = np.ascontiguousarray(x.reshape(n_b * h * w, cin).T)
        else:
            cols_t = im2col_t_int8(x, p.in_zp, p.geom, p.groups)
        acc = lanes_acc_int32(cols_t, p.weights, p.groups, p.bias)
    out = requant_to_nhwc(acc, p.mult, p.shift, p.out_zp, p.act_min, p.act_max)
    return [out.reshape(p.out_shape)]


register(KernelDef("conv2d", prepare, compute))
