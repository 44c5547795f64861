"""AVERAGE_POOL_2D and MAX_POOL_2D on int8 or int16, bit-exact to TFLite Micro's reference.

Neither op rescales: TFLM requires the output to share the input's scale and zero point.
The average divides the int32 sum by the number of taps inside the image (padding is not
counted) with C's truncating division after adding or subtracting half the count, i.e.
round half away from zero (int32 sum for both element types). Both clamp to the fused
activation's quantized range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from mcusim.dtypes import INT8, INT16
from mcusim.errors import UnsupportedOpError
from mcusim.graph import Graph, Op
from mcusim.ops import conv_output_size, conv_padding
from mcusim.precision import needs_generic_kernel

from .quant_params import activation_range
from .registry import KernelDef, register


@dataclass(frozen=True)
class PoolParams:
    filter: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]  # (top, left)
    act_min: int
    act_max: int
    out_shape: tuple[int, ...]
    lowest: int  # the element type's minimum: max pool's starting value


def prepare(graph: Graph, op: Op) -> PoolParams:
    if needs_generic_kernel(graph, op):  # sub-byte / binary / uint8 / thresholds
        from . import subbyte

        return subbyte.prepare_pool(graph, op)
    a = op.attrs
    x = graph.tensors[op.inputs[0]]
    y = graph.tensors[op.outputs[0]]
    if x.dtype not in (INT8, INT16) or y.dtype != x.dtype or x.quant is None or y.quant is None:
        raise UnsupportedOpError(
            f"pooling implements quantized int8/int16 in and out, got {x.dtype} -> {y.dtype}",
            layer=op.label,
        )
    if (
        abs(float(x.quant.scale[0]) - float(y.quant.scale[0])) > 1e-6
        or x.quant.zero_point[0] != y.quant.zero_point[0]
    ):
        raise UnsupportedOpError(
            "integer pooling needs the output scale/zero point equal to the input's "
            f"(input {x.quant.scale[0]}/{x.quant.zero_point[0]}, "
            f"output {y.quant.scale[0]}/{y.quant.zero_point[0]})",
            layer=op.label,
        )
    fh, fw = a.filter
    oh = conv_output_size(x.shape[1], fh, a.stride[0], 1, a.padding)
    ow = conv_output_size(x.shape[2], fw, a.stride[1], 1, a.padding)
    pt = conv_padding(x.shape[1], fh, a.stride[0], 1, oh) if a.padding == "same" else 0
    pl = conv_padding(x.shape[2], fw, a.stride[1], 1, ow) if a.padding == "same" else 0
    lo, hi = activation_range(a.activation, y.quant, y.dtype)
    return PoolParams((fh, fw), tuple(a.stride), (pt, pl), lo, hi, tuple(y.shape), x.dtype.min)


@njit(cache=True, boundscheck=False, fastmath=False)
def avg_pool(x, fh, fw, sh, sw, ph, pw, oh, ow, lo, hi, lowest):
    n_b, h, wd, c = x.shape
    out = np.empty((n_b, oh, ow, c), x.dtype)
    acc = np.empty(c, np.int32)
    for b in range(n_b):
        for oy in range(oh):
            iy0 = oy * sh - ph
            y0 = max(0, -iy0)
            y1 = min(fh, h - iy0)
            for ox in range(ow):
                ix0 = ox * sw - pw
                x0 = max(0, -ix0)
                x1 = min(fw, wd - ix0)
                acc[:] = 0
                for fy in range(y0, y1):
                    for fx in range(x0, x1):
                        for ch in range(c):
                            acc[ch] += np.int32(x[b, iy0 + fy, ix0 + fx, ch])
                cnt = max(y1 - y0, 0) * max(x1 - x0, 0)
                half = cnt // 2
                for ch in range(c):
                    s = np.int64(acc[ch])
                    if cnt == 0:
                        v = np.int64(0)
                    elif s > 0:
                        v = (s + half) // cnt
                    else:  # C division truncates toward zero
                        v = -((half - s) // cnt)
                    v = min(max(v, lo), hi)
                    out[b, oy, ox, ch] = v
    return out


@njit(cache=True, boundscheck=False, fastmath=False)
def max_pool(x, fh, fw, sh, sw, ph, pw, oh, ow, lo, hi, lowest):
    n_b, h, wd, c = x.shape
    out = np.empty((n_b, oh, ow, c), x.dtype)
    m = np.empty(c, x.dtype)
    for b in range(n_b):
        for oy in range(oh):
            iy0 = oy * sh - ph
            y0 = max(0, -iy0)
            y1 = min(fh, h - iy0)
            for ox in range(ow):
                ix0 = ox * sw - pw
                x0 = max(0, -ix0)
                x1 = min(fw, wd - ix0)
                m[:] = lowest
                for fy in range(y0, y1):
                    for fx in range(x0, x1):
                        for ch in range(c):
                            v = x[b, iy0 + fy, ix0 + fx, ch]
                            if v > m[ch]:
                                m[ch] = v
                for ch in range(c):
                    out[b, oy, ox, ch] = min(max(np.int64(m[ch]), lo), hi)
    return out


def _run(fn, p: PoolParams, inputs: list[np.ndarray]) -> list[np.ndarray]:
    if not isinstance(p, PoolParams):  # prepared by kernels/subbyte.py
        from . import subbyte

        return subbyte.compute(p, inputs)
    (fh, fw), (sh, sw), (ph, pw) = p.filter, p.stride, p.pad
    x = np.ascontiguousarray(inputs[0])
    oh, ow = p.out_shape[1], p.out_shape[2]
    out = fn(x, fh, fw, sh, sw, ph, pw, oh, ow, p.act_min, p.act_max, p.lowest)
    return [out]


def compute_avg(p: PoolParams, inputs: list[np.ndarray]) -> list[np.ndarray]:
    return _run(avg_pool, p, inputs)


def compute_max(p: PoolParams, inputs: list[np.ndarray]) -> list[np.ndarray]:
    return _run(max_pool, p, inputs)


register(KernelDef("avg_pool2d", prepare, compute_avg))
register(KernelDef("max_pool2d", prepare, compute_max))
