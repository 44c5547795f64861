"""int8 activation kernels: logistic, tanh, hard_swish, relu, relu6, as TFLite Micro does them.

TFLM's reference int8 logistic and tanh are *not* table lookups: they rescale the input to
a Q4.27 fixed-point value and evaluate gemmlowp's fixed-point ``logistic`` / ``tanh``
(polynomial exp on [-1/4, 0) + barrel shifter + Newton-Raphson reciprocal). The gemmlowp
primitives are implemented here in numba, on int32 values held in int64 (wrapping where
C++ int32 arithmetic would). Since every op here is a pure function of one int8 value,
``prepare`` evaluates it once for all 256 inputs and ``compute`` is a table lookup; the
table is bit-identical to evaluating TFLM's per-element code.

Note what TFLM does (and hence we do): int8 RELU requantizes from the input to the output
scale, but int8 RELU6 does not — it clamps to [zp_in, q_in(6.0)] on the *input*
quantization and copies, whatever the output quantization says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from mcusim.dtypes import INT8
from mcusim.errors import GraphError, UnsupportedOpError

from .fixedpoint import INT32_MAX, INT32_MIN, mbqm, quantize_multiplier, rdbpot, srdhm, wrap32
from .registry import KernelDef, register

# ---------------------------------------------------------------------------------------
# gemmlowp fixed-point primitives (int32 raw values held in int64)
# ---------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def sat_mul_pot(x: np.int64, exponent: np.int64) -> np.int64:
    """gemmlowp SaturatingRoundingMultiplyByPOT<exponent> on an int32 raw value."""
    if exponent > 0:
        threshold = (np.int64(1) << (31 - exponent)) - 1
        if x > threshold:
            return INT32_MAX
        if x < -threshold:
            return INT32_MIN
        return x << exponent
    if exponent < 0:
        return rdbpot(x, -exponent)
    return x


@njit(cache=True, inline="always")
def rounding_half_sum(a: np.int64, b: np.int64) -> np.int64:
    """gemmlowp RoundingHalfSum for int32: (a + b +- 1) / 2 with C truncating division."""
    s = a + b
    if s >= 0:
        return (s + 1) // 2
    return -((-(s - 1)) // 2)


@njit(cache=True)
def exp_on_interval_neg_quarter_0(a: np.int64) -> np.int64:
    """exp(a) for a in [-1/4, 0), Q0.31 in and out (Taylor around -1/8)."""
    constant_term = np.int64(1895147668)  # exp(-1/8)
    constant_1_over_3 = np.int64(715827883)
    x = wrap32(a + (np.int64(1) << 28))
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = rdbpot(x4, 2)
    poly = rdbpot(wrap32(srdhm(wrap32(x4_over_4 + x3), constant_1_over_3) + x2), 1)
    return wrap32(constant_term + srdhm(constant_term, wrap32(x + poly)))


# exp(-2^e) for e = -2..4 in Q0.31, gemmlowp's barrel-shifter constants.
_EXP_BARREL = np.array(
    [1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242], dtype=np.int64
)


@njit(cache=True)
def exp_on_negative_values(a: np.int64, integer_bits: np.int64) -> np.int64:
    """gemmlowp exp_on_negative_values: a in Q(integer_bits).(31-integer_bits), a <= 0,
    result in Q0.31."""
    frac_bits = 31 - integer_bits
    one_quarter = np.int64(1) << (frac_bits - 2)
    mask = one_quarter - 1
    a_mod_q_minus_q = wrap32((a & mask) - one_quarter)
    result = exp_on_interval_neg_quarter_0(sat_mul_pot(a_mod_q_minus_q, integer_bits))
    remainder = wrap32(a_mod_q_minus_q - a)
    for i in range(7):
        e = i - 2
        if integer_bits > e:
            shift = frac_bits + e
            if remainder & (np.int64(1) << shift):
                result = srdhm(result, _EXP_BARREL[i])
    if integer_bits > 5:
        clamp = -(np.int64(1) << (36 - integer_bits))
        if a < clamp:
            result = 0
    if a == 0:
        result = INT32_MAX
    return result


@njit(cache=True)
def _newton_reciprocal_half(half_denominator: np.int64) -> np.int64:
    """Three Newton-Raphson steps for 1/half_denominator, result in Q2.29."""
    one_f2 = np.int64(1) << 29
    x = wrap32(np.int64(1515870810) + srdhm(half_denominator, np.int64(-1010580540)))
    for _ in range(3):
        hdx = srdhm(half_denominator, x)
        one_minus = wrap32(one_f2 - hdx)
        x = wrap32(x + sat_mul_pot(srdhm(x, one_minus), 2))
    return x


@njit(cache=True)
def one_over_one_plus_x_for_x_in_0_1(a: np.int64) -> np.int64:
    """gemmlowp: 1/(1+a) for a in [0,1), Q0.31 in and out."""
    half_denominator = rounding_half_sum(a, INT32_MAX)
    x = _newton_reciprocal_half(half_denominator)
    return sat_mul_pot(x, 1)


@njit(cache=True)
def one_minus_x_over_one_plus_x_for_x_in_0_1(a: np.int64) -> np.int64:
    """gemmlowp: (1-a)/(1+a) for a in [0,1), Q0.31 in and out."""
    half_denominator = rounding_half_sum(a, INT32_MAX)
    x = _newton_reciprocal_half(half_denominator)
    return sat_mul_pot(wrap32(x - (np.int64(1) << 29)), 2)


@njit(cache=True)
def fp_logistic(a: np.int64, integer_bits: np.int64) -> np.int64:
    """gemmlowp logistic of a Q(integer_bits) value, result Q0.31."""
    if a == 0:
        return np.int64(1) << 30
    positive = a > 0
    abs_a = a if positive else wrap32(-a)
    r_pos = one_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(wrap32(-abs_a), integer_bits))
    if positive:
        return r_pos
    return wrap32(INT32_MAX - r_pos)


@njit(cache=True)
def fp_tanh(a: np.int64, integer_bits: np.int64) -> np.int64:
    """gemmlowp tanh of a Q(integer_bits) value, result Q0.31."""
    if a == 0:
        return np.int64(0)
    negative = a < 0
    n = a if negative else wrap32(-a)
    # neg_tanh_on_negative_values: ExactMulByPot<1> reinterprets n with one more int bit.
    t = one_minus_x_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(n, integer_bits + 1))
    return wrap32(-t) if negative else t


# ---------------------------------------------------------------------------------------
# int8 lookup-table construction (exactly TFLM's per-element code, run on all 256 inputs)
# ---------------------------------------------------------------------------------------

_INT8_VALUES = np.arange(-128, 128, dtype=np.int64)


@njit(cache=True)
def _logistic_table(zp: np.int64, radius: np.int64, mult: np.int64, shift: np.int64) -> np.ndarray:
    out = np.empty(256, dtype=np.int8)
    for i in range(256):
        x = np.int64(i - 128) - zp
        if x <= -radius:
            out[i] = -128
        elif x >= radius:
            out[i] = 127
        else:
            q4 = mbqm(x, mult, shift)
            r = rdbpot(fp_logistic(q4, 4), 23) - 128
            out[i] = min(max(r, -128), 127)
    return out


@njit(cache=True)
def _tanh_table(zp: np.int64, radius: np.int64, mult: np.int64, shift: np.int64) -> np.ndarray:
    out = np.empty(256, dtype=np.int8)
    for i in range(256):
        x = np.int64(i - 128) - zp
        if x <= -radius:
            out[i] = -128
        elif x >= radius:
            out[i] = 127
        else:
            q4 = mbqm(x, mult, shift)
            r = rdbpot(fp_tanh(q4, 4), 24)
            out[i] = min(max(r, -128), 127)
    return out


@njit(cache=True, inline="always")
def _wrap16(x: np.int64) -> np.int64:
    return ((x + 32768) & 0xFFFF) - 32768


@njit(cache=True, inline="always")
def _srdhm16(a: np.int64, b: np.int64) -> np.int64:
    """gemmlowp SaturatingRoundingDoublingHighMul for int16."""
    if a == -32768 and b == -32768:
        return np.int64(32767)
    ab = a * b
    nudge = (1 << 14) if ab >= 0 else 1 - (1 << 14)
    num = ab + nudge
    q = num >> 15 if num >= 0 else -((-num) >> 15)
    return _wrap16(q)


@njit(cache=True, inline="always")
def _sdhm16(a: np.int64, b: np.int64) -> np.int64:
    """TFLite SaturatingDoublingHighMul (int16, truncating toward zero)."""
    if a == -32768 and b == -32768:
        return np.int64(32767)
    ab = a * b
    q = ab >> 15 if ab >= 0 else -((-ab) >> 15)
    return _wrap16(q)


@njit(cache=True, inline="always")
def _rdbpot16(x: np.int64, exponent: np.int64) -> np.int64:
    """gemmlowp RoundingDivideByPOT on int16 (mask built as an int16 like Dup<int16_t>)."""
    mask = _wrap16((np.int64(1) << exponent) - 1)
    remainder = _wrap16(x & mask)
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return _wrap16((x >> exponent) + (1 if remainder > threshold else 0))


@njit(cache=True, inline="always")
def _sat_left_shift16(x: np.int64, amount: np.int64) -> np.int64:
    r = x * (np.int64(1) << amount)
    return min(max(r, -32768), 32767)


@njit(cache=True)
def _hard_swish_table(
    in_zp: np.int64,
    out_zp: np.int64,
    out_mult16: np.int64,
    out_exp: np.int64,
    relu_mult16: np.int64,
    relu_exp: np.int64,
) -> np.ndarray:
    out = np.empty(256, dtype=np.int8)
    for i in range(256):
        v = _wrap16(np.int64(i - 128) - in_zp)
        hires = _wrap16(v * 128)
        preshift_out = _srdhm16(hires, out_mult16)
        reluish = hires
        if relu_exp > 0:
            reluish = _sat_left_shift16(reluish, relu_exp - 1)
        reluish = _srdhm16(reluish, relu_mult16)
        if relu_exp > 0:
            reluish = _sat_left_shift16(reluish, 1)
        if relu_exp < 0:
            reluish = _rdbpot16(reluish, -relu_exp)
        reluish = _wrap16((reluish + 32768) >> 1)
        pre = _sdhm16(reluish, preshift_out)
        o = _rdbpot16(pre, -out_exp)
        o = _wrap16(o + out_zp)
        out[i] = min(max(o, -128), 127)
    return out


@njit(cache=True)
def _requant_table(
    in_zp: np.int64, out_zp: np.int64, mult: np.int64, shift: np.int64, lo: np.int64, hi: np.int64
) -> np.ndarray:
    out = np.empty(256, dtype=np.int8)
    for i in range(256):
        r = out_zp + mbqm(np.int64(i - 128) - in_zp, mult, shift)
        out[i] = min(max(r, lo), hi)
    return out


# ---------------------------------------------------------------------------------------
# prepare / compute
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableParams:
    """A 256-entry int8 -> int8 table, indexed by (x + 128)."""

    table: np.ndarray
    out_shape: tuple[int, ...]


def lut_compute(params: TableParams, inputs: list[np.ndarray]) -> list[np.ndarray]:
    x = inputs[0]
    idx = x.reshape(-1).view(np.uint8) ^ np.uint8(0x80)  # (x + 128) as an index, no copy
    return [params.table[idx].reshape(params.out_shape)]


def _io(graph, op):
    """The int8 input and output tensors of a one-in one-out op (both quantized)."""
    tin = graph.tensors[op.inputs[0]]
    tout = graph.tensors[op.outputs[0]]
    for t in (tin, tout):
        if t.dtype != INT8:
            raise UnsupportedOpError(
                f"tensor {t.name!r} is {t.dtype}; only int8 is implemented", layer=op.label
            )
        if t.quant is None:
            raise GraphError(f"int8 tensor {t.name!r} has no quantization", layer=op.label)
    return tin, tout


def tflm_frexp_multiplier(real: float) -> tuple[int, int]:
    """The (multiplier, shift) TFLM's logistic/tanh Prepare builds: frexp, then round(q*2^31)
    with no renormalisation (so q rounding up to 2^31 wraps like the C++ int32 cast)."""
    q, shift = math.frexp(real)
    m = int(math.floor(abs(q) * (1 << 31) + 0.5)) * (1 if q >= 0 else -1)
    m = ((m + (1 << 31)) % (1 << 32)) - (1 << 31)
    return m, shift


def input_radius(integer_bits: int, left_shift: int, total_bits: int = 31) -> int:
    """TFLite CalculateInputRadius (double-precision form)."""
    v = 1.0 * ((1 << integer_bits) - 1) * float(1 << (total_bits - integer_bits))
    return int(math.floor(v / float(1 << left_shift) if left_shift >= 0 else v * 2.0**-left_shift))


def _q4_params(tin) -> tuple[int, int, int, int]:
    zp = int(tin.quant.zero_point[0])
    real = float(np.float32(tin.quant.scale[0])) * float(1 << 27)
    mult, shift = tflm_frexp_multiplier(real)
    return zp, input_radius(4, shift), mult, shift


def logistic_prepare(graph, op) -> TableParams:
    tin, tout = _io(graph, op)
    if int(tout.quant.zero_point[0]) != -128:
        raise UnsupportedOpError(
            "int8 logistic needs output zero point -128 (TFLM requires it)", layer=op.label
        )
    zp, radius, mult, shift = _q4_params(tin)
    return TableParams(_logistic_table(zp, radius, mult, shift), tuple(tout.shape))


def tanh_prepare(graph, op) -> TableParams:
    tin, tout = _io(graph, op)
    zp, radius, mult, shift = _q4_params(tin)
    return TableParams(_tanh_table(zp, radius, mult, shift), tuple(tout.shape))


def _int16_multiplier(real: float) -> tuple[int, int]:
    """QuantizeMultiplier then DownScaleInt32ToInt16Multiplier."""
    m32, exp = quantize_multiplier(real)
    if m32 >= INT32_MAX - (1 << 15):
        return 32767, exp
    return (m32 + (1 << 15)) >> 16, exp


def hard_swish_prepare(graph, op) -> TableParams:
    tin, tout = _io(graph, op)
    in_scale = np.float32(tin.quant.scale[0])
    out_scale = np.float32(tout.quant.scale[0])
    hires_scale = np.float32(np.float32(1.0 / 128.0) * in_scale)
    reluish_scale = np.float32(3.0) / np.float32(32768.0)
    # The divisions are in double: that is what the tflite-micro interpreter computes (its
    # source reads float32 / float32 here; the interpreter disagrees with that, see tests).
    out_m, out_e = _int16_multiplier(float(hires_scale) / float(out_scale))
    if out_e > 0:
        raise UnsupportedOpError(
            "hard_swish output/input scale ratio too small (TFLM requires a multiplier "
            "exponent <= 0)",
            layer=op.label,
        )
    rel_m, rel_e = _int16_multiplier(float(hires_scale) / float(reluish_scale))
    table = _hard_swish_table(
        int(tin.quant.zero_point[0]), int(tout.quant.zero_point[0]), out_m, out_e, rel_m, rel_e
    )
    return TableParams(table, tuple(tout.shape))


def relu_prepare(graph, op) -> TableParams:
    tin, tout = _io(graph, op)
    # s_in / s_out in double, as the tflite-micro interpreter computes it (a float32 quotient
    # differs on exact ties, e.g. 0.45 / 0.1).
    real = float(np.float32(tin.quant.scale[0])) / float(np.float32(tout.quant.scale[0]))
    mult, shift = quantize_multiplier(real)
    out_zp = int(tout.quant.zero_point[0])
    lo = max(-128, out_zp)  # zp + roundf(0 / scale)
    table = _requant_table(int(tin.quant.zero_point[0]), out_zp, mult, shift, lo, 127)
    return TableParams(table, tuple(tout.shape))


def relu6_prepare(graph, op) -> TableParams:
    tin, tout = _io(graph, op)
    zp = int(tin.quant.zero_point[0])
    q6 = float(np.float32(6.0) / np.float32(tin.quant.scale[0]))
    six = int(math.floor(abs(q6) + 0.5)) * (1 if q6 >= 0 else -1) + zp
    six = min(max(six, -128), 127)
    # Relu6Quantized: val > six ? six : (val < zero ? zero : val)
    vals = _INT8_VALUES
    table = np.where(vals > six, six, np.where(vals < zp, zp, vals)).astype(np.int8)
    return TableParams(table, tuple(tout.shape))


register(KernelDef("logistic", logistic_prepare, lut_compute))
register(KernelDef("tanh", tanh_prepare, lut_compute))
register(KernelDef("hard_swish", hard_swish_prepare, lut_compute))
register(KernelDef("relu", relu_prepare, lut_compute))
register(KernelDef("relu6", relu6_prepare, lut_compute))
