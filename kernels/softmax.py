"""int8 softmax exactly as TFLite Micro's reference kernel computes it.

TFLM's int8 -> int8 softmax (reference_ops::Softmax, not a LUT; the LUT path is int16 only)
works on differences to the row maximum: diff * (beta * input_scale) is brought to Q5.26
by ``input_multiplier``/``input_left_shift``, differences below ``diff_min`` contribute
nothing, gemmlowp ``exp_on_negative_values`` gives Q0.31 exps that are summed in Q12.19,
and the reciprocal of the sum comes from gemmlowp's Newton-Raphson
``one_over_one_plus_x_for_x_in_0_1``. The output is fixed at scale 1/256, zero point -128.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from mcusim.dtypes import INT8
from mcusim.errors import UnsupportedOpError

from .activations import exp_on_negative_values, one_over_one_plus_x_for_x_in_0_1
from .fixedpoint import quantize_multiplier as _quantize_multiplier
from .fixedpoint import rdbpot, srdhm, wrap32
from .registry import KernelDef, register

SCALED_DIFF_INTEGER_BITS = 5
ACCUMULATION_INTEGER_BITS = 12


@njit(cache=True)
def exp_table(input_multiplier: np.int64, input_left_shift: np.int64, diff_min: np.int64):
    """Q0.31 exp of every int8 difference to the row max, indexed by -diff (0..255);
    -1 marks differences below diff_min, which TFLM skips."""
    table = np.empty(256, dtype=np.int64)
    for d in range(256):
        diff = np.int64(-d)
        if diff >= diff_min:
            rescaled = srdhm(wrap32(diff << input_left_shift), input_multiplier)
            table[d] = exp_on_negative_values(rescaled, SCALED_DIFF_INTEGER_BITS)
        else:
            table[d] = -1
    return table


@njit(cache=True)
def softmax_rows(x: np.ndarray, exps: np.ndarray) -> tuple[np.ndarray, np.int64]:
    """Softmax over the last axis of a (rows, depth) int8 array, given :func:`exp_table`.

    Also returns the index of the first row whose output exponent falls outside [0, 31]
    (TFLM aborts there: the row's exp sum exceeds 2^8), or -1.
    """
    rows, depth = x.shape
    out = np.empty((rows, depth), dtype=np.int8)
    bad_row = np.int64(-1)
    for r in range(rows):
        max_in_row = np.int64(-128)
        for c in range(depth):
            if x[r, c] > max_in_row:
                max_in_row = np.int64(x[r, c])
        sum_of_exps = np.int64(0)
        for c in range(depth):
            e = exps[max_in_row - np.int64(x[r, c])]
            if e >= 0:
                sum_of_exps = wrap32(sum_of_exps + rdbpot(e, ACCUMULATION_INTEGER_BITS))
        # GetReciprocal(sum, kAccumulationIntegerBits)
        u = sum_of_exps & 0xFFFFFFFF
        headroom_plus_one = 32
        while u:
            u >>= 1
            headroom_plus_one -= 1
        num_bits_over_unit = ACCUMULATION_INTEGER_BITS - headroom_plus_one
        shifted = (((sum_of_exps & 0xFFFFFFFF) << headroom_plus_one) & 0xFFFFFFFF) - (1 << 31)
        shifted_scale = one_over_one_plus_x_for_x_in_0_1(wrap32(shifted))
        exponent = num_bits_over_unit + 31 - 8
        if exponent < 0 or exponent > 31:
            if bad_row < 0:
                bad_row = r
            exponent = min(max(exponent, 0), 31)
        for c in range(depth):
            e = exps[max_in_row - np.int64(x[r, c])]
            if e < 0:
                out[r, c] = -128
            else:
                v = rdbpot(srdhm(shifted_scale, e), exponent) - 128
                out[r, c] = min(max(v, -128), 127)
    return out, bad_row


@dataclass(frozen=True)
class SoftmaxParams:
    input_multiplier: int
    input_left_shift: int
    diff_min: int
    exps: np.ndarray  # exp_table(...)
    out_shape: tuple[int, ...]


def softmax_prepare(graph, op) -> SoftmaxParams:
    tin = graph.tensors[op.inputs[0]]
    tout = graph.tensors[op.outputs[0]]
    if tin.dtype != INT8 or tout.dtype != INT8:
        raise UnsupportedOpError(
            f"softmax {tin.dtype} -> {tout.dtype}: only int8 -> int8 is implemented",
            layer=op.label,
        )
    if (
        tout.quant is None
        or int(tout.quant.zero_point[0]) != -128
        or np.float32(tout.quant.scale[0]) != np.float32(1.0 / 256.0)
    ):
        raise UnsupportedOpError(
            "int8 softmax output must have scale 1/256 and zero point -128 (TFLM requires it)",
            layer=op.label,
        )
    beta = float(np.float32(op.attrs.beta))
    in_scale = float(np.float32(tin.quant.scale[0]))
    # PreprocessSoftmaxScaling (double rounding build): cap at 2^31 - 1.
    real = min(beta * in_scale * float(1 << (31 - SCALED_DIFF_INTEGER_BITS)), (1 << 31) - 1.0)
    if not real > 1.0:
        raise UnsupportedOpError(
            f"softmax beta*input_scale = {beta * in_scale:g} is too small for TFLM's int8 "
            "softmax (its input multiplier must exceed 1)",
            layer=op.label,
        )
    mult, shift = _quantize_multiplier(real)
    radius = (
        1.0
        * ((1 << SCALED_DIFF_INTEGER_BITS) - 1)
        * float(1 << (31 - SCALED_DIFF_INTEGER_BITS))
        / float(1 << shift)
    )
    diff_min = -int(math.floor(radius))
    exps = exp_table(mult, shift, diff_min)
    return SoftmaxParams(mult, shift, diff_min, exps, tuple(tout.shape))


def softmax_compute(params: SoftmaxParams, inputs: list[np.ndarray]) -> list[np.ndarray]:
    x = inputs[0]
    depth = x.shape[-1] if x.ndim else 1
    rows = np.ascontiguousarray(x).reshape(-1, depth)
    y, bad_row = softmax_rows(rows, params.exps)
    if bad_row >= 0:
        raise UnsupportedOpError(
            f"softmax row {bad_row}: the sum of exponentials exceeds 2^8, where TFLM's int8 "
            "softmax aborts (TFLITE_CHECK on the output exponent); use a larger beta * "
            "input_scale or a shorter axis"
        )
    return [y.reshape(params.out_shape)]


register(KernelDef("softmax", softmax_prepare, softmax_compute))
