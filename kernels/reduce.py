"""int8 MEAN exactly as TFLite Micro's reference kernel (QuantizedMeanOrSum) computes it.

TFLM's int8 mean takes one path for every axis set and keep_dims value (the special
H,W case exists only for float): an int32 sum per output element, minus
zp_in * count, times a multiplier that folds both the scale ratio and 1/count:
``shift = min(floor(log2(count)), 32, 31 + shift_in)``,
``mult = (mult_in << shift) // count`` (truncating), ``shift_out = shift_in - shift``,
then MultiplyByQuantizedMultiplier, + zp_out, clamp.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from mcusim.dtypes import INT8
from mcusim.errors import GraphError, UnsupportedOpError

from .fixedpoint import mbqm, wrap32
from .fixedpoint import quantize_multiplier as _quantize_multiplier
from .registry import KernelDef, register


@njit(cache=True)
def requantize_sums(
    sums: np.ndarray,
    zp_times_count: np.int64,
    mult: np.int64,
    shift: np.int64,
    out_zp: np.int64,
) -> np.ndarray:
    n = sums.shape[0]
    out = np.empty(n, dtype=np.int8)
    for i in range(n):
        shifted = wrap32(wrap32(sums[i]) - zp_times_count)
        v = mbqm(shifted, mult, shift) + out_zp
        out[i] = min(max(v, -128), 127)
    return out


@dataclass(frozen=True)
class MeanParams:
    axes: tuple[int, ...]
    zp_times_count: int
    mult: int
    shift: int
    out_zp: int
    out_shape: tuple[int, ...]


def _axes(graph, op, ndim: int) -> tuple[int, ...]:
    axes = tuple(op.attrs.axes)
    if not axes and len(op.inputs) > 1 and op.inputs[1]:
        t = graph.tensors[op.inputs[1]]
        if t.data is None:
            raise UnsupportedOpError("mean with a non-constant axis tensor", layer=op.label)
        axes = tuple(int(a) for a in np.asarray(t.data).reshape(-1))
    resolved: list[int] = []
    for a in axes:
        r = a + ndim if a < 0 else a
        if not 0 <= r < ndim:
            raise GraphError(f"mean axis {a} out of range for rank {ndim}", layer=op.label)
        if r not in resolved:
            resolved.append(r)
    return tuple(sorted(resolved))


def mean_prepare(graph, op) -> MeanParams:
    tin = graph.tensors[op.inputs[0]]
    tout = graph.tensors[op.outputs[0]]
    for t in (tin, tout):
        if t.dtype != INT8:
            raise UnsupportedOpError(
                f"tensor {t.name!r} is {t.dtype}; only int8 mean is implemented", layer=op.label
            )
        if t.quant is None:
            raise GraphError(f"int8 tensor {t.name!r} has no quantization", layer=op.label)
    axes = _axes(graph, op, len(tin.shape))
    count = 1
    for a in axes:
        count *= int(tin.shape[a])
    if count == 0:
        raise GraphError("mean over an empty axis", layer=op.label)
    if int(np.prod(tout.shape, dtype=np.int64)) * count != int(np.prod(tin.shape, dtype=np.int64)):
        raise GraphError(
            f"output shape {tout.shape} does not match input {tin.shape} reduced over {axes}",
            layer=op.label,
        )
    real = float(np.float32(tin.quant.scale[0])) / float(np.float32(tout.quant.scale[0]))
    mult, shift_in = _quantize_multiplier(real)
    shift = min(count.bit_length() - 1, 32, 31 + shift_in)
    mult = (mult << shift) // count
    mult = ((mult + (1 << 31)) % (1 << 32)) - (1 << 31)  # static_cast<int32_t>
    zp_in = int(tin.quant.zero_point[0])
    return MeanParams(
        axes,
        zp_in * count,
        mult,
        shift_in - shift,
        int(tout.quant.zero_point[0]),
        tuple(tout.shape),
    )


def mean_compute(params: MeanParams, inputs: list[np.ndarray]) -> list[np.ndarray]:
    x = inputs[0]
    sums = x.sum(axis=params.axes, dtype=np.int64).reshape(-1)
    y = requantize_sums(sums, params.zp_times_count, params.mult, params.shift, params.out_zp)
    return [y.reshape(params.out_shape)]


register(KernelDef("mean", mean_prepare, mean_compute))
