"""int8 FULLY_CONNECTED, bit-exact to TFLite Micro's reference integer kernel.

acc = bias + sum((w - w_zp) * (x - in_zp)); per-tensor or per-channel requantization.

The per-tensor multiplier comes from TFLM's GetQuantizedConvolutionMultipler, whose source
reads ``static_cast<double>(input->params.scale * filter->params.scale)`` (a float32
product). The TFLM Python interpreter we use as the golden was compiled so that this product
is done in double (its machine code is cvtss2sd, cvtss2sd, mulsd: the compiler widened it), and
it is bit-exact to that. The two differ in the low bits of the Q31 multiplier and flip an output
by one LSB for some accumulators (tests/test_kernels_mac.py has such values). We default to the
golden's double product; ``product="float32"`` gives what a firmware build that keeps the float
multiply (e.g. arm-none-eabi-gcc without fast-math) would compute.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from mcusim.errors import UnsupportedOpError
from mcusim.graph import Graph, Op
from mcusim.precision import needs_generic_kernel

from .conv2d import (
    check_bias,
    check_int8,
    const_data,
    folded_bias,
    per_channel_multipliers,
    requant_clamp,
)
from .fixedpoint import quantize_multiplier, wrap32
from .quant_params import activation_range
from .registry import KernelDef, register


@dataclass(frozen=True)
class FullyConnectedParams:
    weights: np.ndarray  # int8 (n_out, k), or int16 if the filter zero point is non-zero
    bias: np.ndarray  # int32 (n_out,), input offset folded in
    mult: np.ndarray  # int32 (n_out,) (per-tensor: the same value repeated)
    shift: np.ndarray  # int32 (n_out,)
    out_zp: int
    act_min: int
    act_max: int
    out_shape: tuple[int, ...]


def per_tensor_fc_multiplier(
    in_scale: float, filter_scale: float, out_scale: float, product: str = "double"
) -> float:
    """Real per-tensor FC multiplier: s_in * s_w / s_out with the product in ``product``."""
    if product == "float32":
        prod = float(np.float32(in_scale) * np.float32(filter_scale))
    elif product == "double":
        prod = float(np.float32(in_scale)) * float(np.float32(filter_scale))  # exact
    else:
        raise ValueError(f"product must be 'double' or 'float32', not {product!r}")
    return prod / float(np.float32(out_scale))


def prepare(graph: Graph, op: Op) -> FullyConnectedParams:
    if needs_generic_kernel(graph, op):  # sub-byte / binary / uint8 / thresholds
        from . import subbyte

        return subbyte.prepare_fully_connected(graph, op)
    a = op.attrs
    x = graph.tensors[op.inputs[0]]
    w = graph.tensors[op.inputs[1]]
    y = graph.tensors[op.outputs[0]]
    check_int8(x, op, "input")
    check_int8(y, op, "output")
    check_int8(w, op, "weights")
    check_bias(graph, op, 2)
    wd = const_data(graph, op, 1, "weights")
    bias = const_data(graph, op, 2, "bias")
    if wd.ndim != 2 or x.size % wd.shape[1] or y.size != (x.size // wd.shape[1]) * wd.shape[0]:
        raise UnsupportedOpError(
            f"weights {tuple(wd.shape)} do not fit input {x.shape} / output {y.shape}",
            layer=op.label,
        )
    n_out = wd.shape[0]
    w_zp = int(w.quant.zero_point[0])
    w2 = wd.astype(np.int8) if w_zp == 0 else (wd.astype(np.int16) - w_zp).astype(np.int16)
    w2 = np.ascontiguousarray(w2)
    in_zp = int(x.quant.zero_point[0])
    if w.quant.scale.size > 1:
        mult, shift = per_channel_multipliers(x.quant.scale, w.quant.scale, y.quant.scale, n_out)
    else:
        real = per_tensor_fc_multiplier(x.quant.scale[0], w.quant.scale[0], y.quant.scale[0])
        m, s = quantize_multiplier(real)
        mult = np.full(n_out, m, np.int32)
        shift = np.full(n_out, s, np.int32)
    lo, hi = activation_range(a.activation, y.quant, y.dtype)
    return FullyConnectedParams(
        weights=w2,
        bias=folded_bias(bias, w2, in_zp),
        mult=mult,
        shift=shift,
        out_zp=int(y.quant.zero_point[0]),
        act_min=lo,
        act_max=hi,
        out_shape=tuple(y.shape),
    )


@njit(cache=True, boundscheck=False, fastmath=False)
def fully_connected_int8(x2, w, bias, mult, shift, out_zp, lo, hi):
    """(batches, k) int8 x (n_out, k) weights -> (batches, n_out) int8."""
    nb, k = x2.shape
    n_out = w.shape[0]
    out = np.empty((nb, n_out), np.int8)
    for b in range(nb):
        for n in range(n_out):
            acc = np.int32(0)
            for i in range(k):
                acc += np.int32(x2[b, i]) * np.int32(w[n, i])
            acc = wrap32(np.int64(acc) + bias[n])
            out[b, n] = requant_clamp(acc, mult[n], shift[n], out_zp, lo, hi)
    return out


def compute(p: FullyConnectedParams, inputs: list[np.ndarray]) -> list[np.ndarray]:
    if not isinstance(p, FullyConnectedParams):  # prepared by kernels/subbyte.py
        from . import subbyte

        return subbyte.compute(p, inputs)
    k = p.weights.shape[1]
    x2 = np.ascontiguousarray(inputs[0]).reshape(-1, k)
    out = fully_connected_int8(
        x2, p.weights, p.bias, p.mult, p.shift, p.out_zp, p.act_min, p.act_max
    )
    return [out.reshape(p.out_shape)]


register(KernelDef("fully_connected", prepare, compute))
