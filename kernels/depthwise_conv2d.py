"""int8 DEPTHWISE_CONV_2D, bit-exact to TFLite Micro's reference ``DepthwiseConvPerChannel``.

Output channel ``c = ci * depth_multiplier + m`` accumulates ``w[ky, kx, c] * (x[ci] - in_zp)``
over the taps inside the image, plus the int32 bias, then is requantized per channel. Three
loop orders, picked at prepare time (:func:`choose_path`):

* ``pixel`` (many channels): per output pixel, each tap updates a contiguous vector of
  per-channel accumulators (channels innermost).
* ``planar`` (few channels, stride 1): the input is transposed to channel planes and each
  (channel, tap) sweeps whole output rows, so the vectors are as long as the rows.
* ``lanes`` (one input channel): run as a grouped convolution (one group per input channel)
  through conv2d's pixels-as-lanes loop; padding then reads ``in_zp`` and the input offset
  is folded into the bias, as conv2d does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from mcusim.errors import UnsupportedOpError
from mcusim.graph import Graph, Op
from mcusim.ops import conv_output_size, conv_padding
from mcusim.precision import needs_generic_kernel

from .conv2d import (
    check_bias,
    check_int8,
    const_data,
    folded_bias,
    im2col_t_int8,
    lanes_acc_int32,
    per_channel_multipliers,
    requant_rows,
    requant_to_nhwc,
)
from .quant_params import activation_range
from .registry import KernelDef, register


def choose_path(cin: int, cout: int, stride_w: int) -> str:
    """Loop order, from timings of VWW/KWS/micro_speech-like layers.

    One input channel (micro_speech's 10x8, depth multiplier 8) is an ordinary convolution:
    "lanes" is 2.4x faster there. Under 16 channels at stride 1 the per-pixel channel
    vectors are too short and "planar" wins (48x48x8: 2x; 96x96x4: 7x); otherwise "pixel".
    """
    if cin == 1:
        return "lanes"
    if cout < 16 and stride_w == 1:
        return "planar"
    return "pixel"


@dataclass(frozen=True)
class DepthwiseParams:
    weights: np.ndarray  # int32 (kh*kw, cout)
    bias: np.ndarray  # int32 (cout,)
    mult: np.ndarray  # int32 (cout,)
    shift: np.ndarray  # int32 (cout,)
    in_zp: int
    out_zp: int
    act_min: int
    act_max: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pad: tuple[int, int]  # (top, left)
    depth_multiplier: int
    out_shape: tuple[int, ...]
    path: str  # "pixel", "planar" or "lanes", see the module docstring
    rows: np.ndarray  # int8 (cout, kh*kw): weights as a grouped convolution's, for "lanes"
    rows_bias: np.ndarray  # int32 (cout,): bias with the input offset folded in, for "lanes"

    @property
    def geom(self) -> tuple[int, ...]:
        """(kh, kw, sh, sw, dh, dw, ph, pw, oh, ow), as the compiled loops take it."""
        parts = (*self.kernel, *self.stride, *self.dilation, *self.pad, *self.out_shape[1:3])
        return tuple(int(v) for v in parts)


def prepare(graph: Graph, op: Op) -> DepthwiseParams:
    if needs_generic_kernel(graph, op):  # sub-byte / binary / uint8 / thresholds
        from . import subbyte

        return subbyte.prepare_depthwise_conv2d(graph, op)
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
    _, kh, kw, cout = wd.shape
    cin = x.shape[3]
    if cout != y.shape[3] or cout % cin:
        raise UnsupportedOpError(
            f"filter depth {cout} is not a multiple of input depth {cin} (or != output depth)",
            layer=op.label,
        )
    mult_d = cout // cin
    oh = conv_output_size(x.shape[1], kh, a.stride[0], a.dilation[0], a.padding)
    ow = conv_output_size(x.shape[2], kw, a.stride[1], a.dilation[1], a.padding)
    pt = conv_padding(x.shape[1], kh, a.stride[0], a.dilation[0], oh) if a.padding == "same" else 0
    pl = conv_padding(x.shape[2], kw, a.stride[1], a.dilation[1], ow) if a.padding == "same" else 0
    m, s = per_channel_multipliers(x.quant.scale, w.quant.scale, y.quant.scale, cout)
    lo, hi = activation_range(a.activation, y.quant, y.dtype)
    b = np.zeros(cout, np.int32) if bias is None else bias.astype(np.int32).reshape(cout)
    rows = np.ascontiguousarray(wd.reshape(kh * kw, cout).T.astype(np.int8))
    in_zp = int(x.quant.zero_point[0])
    return DepthwiseParams(
        weights=np.ascontiguousarray(wd.reshape(kh * kw, cout).astype(np.int32)),
        bias=b,
        mult=m,
        shift=s,
        in_zp=in_zp,
        out_zp=int(y.quant.zero_point[0]),
        act_min=lo,
        act_max=hi,
        kernel=(kh, kw),
        stride=tuple(a.stride),
        dilation=tuple(a.dilation),
        pad=(pt, pl),
        depth_multiplier=mult_d,
        out_shape=tuple(y.shape),
        path=choose_path(cin, cout, a.stride[1]),
        rows=rows,
        rows_bias=folded_bias(b, rows, in_zp),
    )


@njit(cache=True, boundscheck=False, fastmath=False)
def depthwise_pixel_acc(x, w, bias, in_zp, geom, dm):
    """int32 accumulators (n*oh*ow, cout), channels innermost.

    2-D arrays indexed by range variables keep numba's negative-index handling out of the
    inner loops so that they vectorize.
    """
    kh, kw, sh, sw, dh, dw, ph, pw, oh, ow = geom
    n_b, h, wd, cin = x.shape
    cout = w.shape[1]
    acc = np.empty((n_b * oh * ow, cout), np.int32)
    x2 = x.reshape((n_b * h * wd, cin))
    zp = np.int32(in_zp)
    for b in range(n_b):
        for oy in range(oh):
            iy0 = oy * sh - ph
            for ox in range(ow):
                ix0 = ox * sw - pw
                r = (b * oh + oy) * ow + ox
                for c in range(cout):
                    acc[r, c] = bias[c]
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
                                acc[r, c] += (np.int32(x2[row, c]) - zp) * w[t, c]
                        else:
                            for ci in range(cin):
                                xv = np.int32(x2[row, ci]) - zp
                                for m in range(dm):
                                    acc[r, ci * dm + m] += xv * w[t, ci * dm + m]
    return acc


@njit(cache=True, boundscheck=False, fastmath=False)
def depthwise_planar_acc(xt, w, bias, in_zp, n_b, h, wd, geom, dm):
    """int32 accumulators (cout, n*oh*ow) from channel planes ``xt`` (cin, n*h*w).

    Flat offsets are unsigned so that numba emits no negative-index wraparound and the row
    loops vectorize.
    """
    kh, kw, sh, sw, dh, dw, ph, pw, oh, ow = geom
    cout = w.shape[1]
    acc = np.empty((cout, n_b * oh * ow), np.int32)
    zp = np.int32(in_zp)
    usw = np.uint64(sw)
    for c in range(cout):
        ci = c // dm
        b0 = bias[c]
        for p in range(n_b * oh * ow):
            acc[c, p] = b0
        for kx in range(kw):
            off = kx * dw - pw
            ox_lo = 0  # first ox whose input column is inside the image
            while ox_lo < ow and ox_lo * sw + off < 0:
                ox_lo += 1
            ox_hi = ow
            while ox_hi > ox_lo and (ox_hi - 1) * sw + off >= wd:
                ox_hi -= 1
            n_ok = np.uint64(ox_hi - ox_lo)
            for ky in range(kh):
                wv = w[ky * kw + kx, c]
                for b in range(n_b):
                    for oy in range(oh):
                        iy = oy * sh - ph + ky * dh
                        if iy < 0 or iy >= h:
                            continue
                        src = np.uint64((b * h + iy) * wd + ox_lo * sw + off)
                        dst = np.uint64((b * oh + oy) * ow + ox_lo)
                        if sw == 1:  # contiguous rows: a plain vector loop
                            for j in range(n_ok):
                                acc[c, dst + j] += wv * (np.int32(xt[ci, src + j]) - zp)
                        else:
                            for j in range(n_ok):
                                acc[c, dst + j] += wv * (np.int32(xt[ci, src + j * usw]) - zp)
    return acc


def compute(p: DepthwiseParams, inputs: list[np.ndarray]) -> list[np.ndarray]:
    if not isinstance(p, DepthwiseParams):  # prepared by kernels/subbyte.py
        from . import subbyte

        return subbyte.compute(p, inputs)
    x = np.ascontiguousarray(inputs[0])
    dm = p.depth_multiplier
    if p.path == "lanes":  # a grouped convolution: one group per input channel
        cols_t = im2col_t_int8(x, p.in_zp, p.geom, x.shape[3])
        acc = lanes_acc_int32(cols_t, p.rows, x.shape[3], p.rows_bias)
        out = requant_to_nhwc(acc, p.mult, p.shift, p.out_zp, p.act_min, p.act_max)
        return [out.reshape(p.out_shape)]
    if p.path == "planar":
        n_b, h, w, cin = x.shape
        xt = np.ascontiguousarray(x.reshape(n_b * h * w, cin).T)
        acc = depthwise_planar_acc(xt, p.weights, p.bias, p.in_zp, n_b, h, w, p.geom, dm)
        out = requant_to_nhwc(acc, p.mult, p.shift, p.out_zp, p.act_min, p.act_max)
        return [out.reshape(p.out_shape)]
    acc = depthwise_pixel_acc(x, p.weights, p.bias, p.in_zp, p.geom, dm)
    out = requant_rows(acc, p.mult, p.shift, p.out_zp, p.act_min, p.act_max)
    return [out.reshape(p.out_shape)]


register(KernelDef("depthwise_conv2d", prepare, compute))
