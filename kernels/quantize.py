"""QUANTIZE and DEQUANTIZE exactly as TFLite Micro's reference kernels.

QUANTIZE float32 -> int8/int16: ``round(x / scale) + zp`` with the division in float32,
round half away from zero, clamp (AffineQuantize). The C++ float -> int32 conversion of
values beyond int32 (and NaN) yields INT32_MIN on x86 and Arm alike in practice; we do the
same so huge inputs clamp the way the interpreter does.
QUANTIZE int -> int (int8/uint8/int16/int32 in, int8/uint8/int16/int32 out): Requantize
with MultiplyByQuantizedMultiplier of s_in/s_out.
DEQUANTIZE int8/uint8/int16 -> float32: float32(double(scale) * (q - zp)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from mcusim.errors import GraphError, UnsupportedOpError

from .fixedpoint import mbqm, wrap32
from .fixedpoint import quantize_multiplier as _quantize_multiplier
from .registry import KernelDef, register

_INT_OUT = {"int8", "uint8", "int16", "int32"}


@njit(cache=True)
def requantize_flat(
    x: np.ndarray,
    in_zp: np.int64,
    out_zp: np.int64,
    mult: np.int64,
    shift: np.int64,
    lo: np.int64,
    hi: np.int64,
    out: np.ndarray,
) -> None:
    for i in range(x.shape[0]):
        v = wrap32(mbqm(wrap32(np.int64(x[i]) - in_zp), mult, shift) + out_zp)
        out[i] = min(max(v, lo), hi)


@njit(cache=True)
def quantize_float_flat(
    x: np.ndarray, scale: np.float32, zp: np.int64, lo: np.int64, hi: np.int64, out: np.ndarray
) -> None:
    """AffineQuantize: float32 quotient, std::round (half away from zero), int32 cast."""
    for i in range(x.shape[0]):
        q = np.float64(x[i] / scale)  # float32 / float32, widened exactly
        r = np.floor(q + 0.5) if q >= 0 else -np.floor(-q + 0.5)
        if r >= -2147483648.0 and r < 2147483648.0:  # NaN fails both tests
            v = np.int64(r)
        else:
            v = np.int64(-2147483648)  # what the C++ cast yields out of range / for NaN
        v = wrap32(v + zp)
        out[i] = min(max(v, lo), hi)


@njit(cache=True)
def dequantize_flat(x: np.ndarray, scale: np.float64, zp: np.int64, out: np.ndarray) -> None:
    """float32(double(scale) * (q - zp))."""
    for i in range(x.shape[0]):
        out[i] = np.float32(scale * np.float64(np.int64(x[i]) - zp))


@dataclass(frozen=True)
class QuantizeParams:
    mode: str  # "float" | "requant" | "xor80"
    scale: np.float32
    in_zp: int
    out_zp: int
    mult: int
    shift: int
    lo: int
    hi: int
    out_shape: tuple[int, ...]
    dtype: np.dtype


def _quant_of(t, op):
    if t.quant is None:
        raise GraphError(f"tensor {t.name!r} has no quantization", layer=op.label)
    if t.quant.per_channel:
        raise UnsupportedOpError(
            f"per-channel quantized tensor {t.name!r} in {op.kind}", layer=op.label
        )
    return np.float32(t.quant.scale[0]), int(t.quant.zero_point[0])


def quantize_prepare(graph, op) -> QuantizeParams:
    tin = graph.tensors[op.inputs[0]]
    tout = graph.tensors[op.outputs[0]]
    if tout.dtype.name not in _INT_OUT:
        raise UnsupportedOpError(f"quantize to {tout.dtype}", layer=op.label)
    s_out, zp_out = _quant_of(tout, op)
    lo, hi = tout.dtype.min, tout.dtype.max
    shape, dt = tuple(tout.shape), tout.dtype.np_dtype
    if tin.dtype.is_float:
        if tout.dtype.name not in ("int8", "int16"):
            raise UnsupportedOpError(f"quantize float32 -> {tout.dtype}", layer=op.label)
        return QuantizeParams("float", s_out, 0, zp_out, 0, 0, lo, hi, shape, dt)
    if tin.dtype.name not in _INT_OUT:
        raise UnsupportedOpError(f"quantize from {tin.dtype}", layer=op.label)
    s_in, zp_in = _quant_of(tin, op)
    mult, shift = _quantize_multiplier(float(s_in) / float(s_out))
    mode = "requant"
    # Requantize's int8 <-> uint8 fast path: same scale and zero points 128 apart -> flip bit 7
    if (mult, shift) == (1 << 30, 1) and (
        (tin.dtype.name, tout.dtype.name, zp_in - zp_out)
        in (("int8", "uint8", -128), ("uint8", "int8", 128))
    ):
        mode = "xor80"
    return QuantizeParams(mode, s_out, zp_in, zp_out, mult, shift, lo, hi, shape, dt)


def quantize_compute(params: QuantizeParams, inputs: list[np.ndarray]) -> list[np.ndarray]:
    x = inputs[0]
    if params.mode == "float":
        out = np.empty(x.size, dtype=params.dtype)
        flat = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
        quantize_float_flat(flat, params.scale, params.out_zp, params.lo, params.hi, out)
        return [out.reshape(params.out_shape)]
    if params.mode == "xor80":
        return [(x.view(np.uint8) ^ np.uint8(0x80)).view(params.dtype).reshape(params.out_shape)]
    out = np.empty(x.size, dtype=params.dtype)
    requantize_flat(
        np.ascontiguousarray(x).reshape(-1),
        params.in_zp,
        params.out_zp,
        params.mult,
        params.shift,
        params.lo,
        params.hi,
        out,
    )
    return [out.reshape(params.out_shape)]


@dataclass(frozen=True)
class DequantizeParams:
    scale: float  # double(float32 scale)
    zp: int
    out_shape: tuple[int, ...]


def dequantize_prepare(graph, op) -> DequantizeParams:
    tin = graph.tensors[op.inputs[0]]
    tout = graph.tensors[op.outputs[0]]
    if tin.dtype.name not in ("int8", "uint8", "int16") or not tout.dtype.is_float:
        raise UnsupportedOpError(f"dequantize {tin.dtype} -> {tout.dtype}", layer=op.label)
    s, zp = _quant_of(tin, op)
    return DequantizeParams(float(s), zp, tuple(tout.shape))


def dequantize_compute(params: DequantizeParams, inputs: list[np.ndarray]) -> list[np.ndarray]:
    out = np.empty(inputs[0].size, dtype=np.float32)
    dequantize_flat(np.ascontiguousarray(inputs[0]).reshape(-1), params.scale, params.zp, out)
    return [out.reshape(params.out_shape)]


register(KernelDef("quantize", quantize_prepare, quantize_compute))
register(KernelDef("dequantize", dequantize_prepare, dequantize_compute))
