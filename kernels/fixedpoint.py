"""TFLite's integer fixed-point arithmetic (gemmlowp double rounding), exactly.

Host-side: :func:`quantize_multiplier` turns a real multiplier into (Q31 multiplier, shift)
as TFLite's ``QuantizeMultiplier`` does. Device-side (numba): :func:`mbqm` is
``MultiplyByQuantizedMultiplier``: SaturatingRoundingDoublingHighMul followed by
RoundingDivideByPOT. These are what the TFLite Micro reference kernels compute. The
doubling high multiply rounds exact ties up (toward +inf: the negative nudge 1 - 2^30 plus
truncation toward zero lands there), the same as CMSIS-NN's floor((x*M + 2^30) / 2^31), so
the two agree everywhere except the saturating INT32_MIN * INT32_MIN case.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite ``QuantizeMultiplier``: real = m * 2^(shift - 31), m in [2^30, 2^31)."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = int(math.floor(abs(q) * (1 << 31) + 0.5))  # std::round: half away from zero
    if q < 0:
        q_fixed = -q_fixed
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift = 0
        q_fixed = 0
    # TFLite clamps shift > 30 only in its single-rounding build; the double-rounding
    # arithmetic TFLite Micro uses by default keeps the large shift (softmax reaches it).
    return int(q_fixed), int(shift)


def quantize_multipliers(reals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vector form of :func:`quantize_multiplier` (per-channel), int32 arrays; the same
    steps on whole arrays (np.frexp is math.frexp per element; the products are exact in
    float64, so the rounding is the scalar one)."""
    r = np.asarray(reals, dtype=np.float64).reshape(-1)
    if not np.isfinite(r).all():
        raise ValueError(f"multiplier not finite: {r[~np.isfinite(r)][0]}")
    q, shift = np.frexp(r)
    q_fixed = np.floor(np.abs(q) * float(1 << 31) + 0.5).astype(np.int64)
    q_fixed = np.where(q < 0, -q_fixed, q_fixed)
    shift = shift.astype(np.int64)
    top = q_fixed == (1 << 31)
    q_fixed = np.where(top, q_fixed // 2, q_fixed)
    shift = np.where(top, shift + 1, shift)
    tiny = (shift < -31) | (r == 0.0)
    q_fixed = np.where(tiny, 0, q_fixed)
    shift = np.where(tiny, 0, shift)
    return q_fixed.astype(np.int32), shift.astype(np.int32)


@njit(cache=True, inline="always")
def srdhm(a: np.int64, b: np.int64) -> np.int64:
    """gemmlowp SaturatingRoundingDoublingHighMul on int32 values held in int64."""
    if a == INT32_MIN and b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else (1 - (1 << 30))
    num = ab + nudge
    # C++ integer division truncates toward zero
    if num >= 0:
        q = num >> 31
    else:
        q = -((-num) >> 31)
    return q


@njit(cache=True, inline="always")
def rdbpot(x: np.int64, exponent: np.int64) -> np.int64:
    """gemmlowp RoundingDivideByPOT: round half away from zero."""
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


@njit(cache=True, inline="always")
def wrap32(x: np.int64) -> np.int64:
    """Two's-complement wrap to int32 (what C int32 arithmetic does in practice)."""
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


@njit(cache=True, inline="always")
def mbqm(x: np.int64, multiplier: np.int64, shift: np.int64) -> np.int64:
    """TFLite MultiplyByQuantizedMultiplier(int32 x, int32 multiplier, int shift)."""
    left = shift if shift > 0 else 0
    right = -shift if shift < 0 else 0
    return rdbpot(srdhm(wrap32(x << left), multiplier), right)
