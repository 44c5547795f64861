"""Host-side quantization parameters shared by kernels (TFLite's Prepare-time helpers)."""

from __future__ import annotations

import numpy as np

from mcusim.dtypes import ElemType, Quant


def tflite_round(x: float) -> int:
    """std::round: half away from zero."""
    return int(np.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)


def quantize_value(f: float, quant: Quant) -> int:
    """TFLite's in-kernel Quantize lambda: zp + round(f / scale), computed in float32."""
    scale = np.float32(quant.scale[0])
    return int(quant.zero_point[0]) + tflite_round(float(np.float32(f) / scale))


def activation_range(activation: str, out_quant: Quant | None, dtype: ElemType) -> tuple[int, int]:
    """TFLite CalculateActivationRangeQuantized: clamp bounds for a fused activation."""
    qmin, qmax = dtype.min, dtype.max
    if activation == "none" or out_quant is None:
        return qmin, qmax
    if activation == "relu":
        return max(qmin, quantize_value(0.0, out_quant)), qmax
    if activation == "relu6":
        return max(qmin, quantize_value(0.0, out_quant)), min(qmax, quantize_value(6.0, out_quant))
    if activation == "relu_n1_to_1":
        return (
            max(qmin, quantize_value(-1.0, out_quant)),
            min(qmax, quantize_value(1.0, out_quant)),
        )
    raise ValueError(f"unknown fused activation {activation!r}")
