"""Operator kinds of the graph IR, their typed attributes and their shape rules.

Each kind is registered once in :data:`OPS` with its attribute class, how many inputs it
takes and a ``check`` function that validates shapes/types and returns nothing (raising
:class:`~mcusim.errors.GraphError` with the op name on inconsistency). Importers produce
these kinds; kernels are selected by kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .graph import Graph, Op

ACTIVATIONS = ("none", "relu", "relu6", "relu_n1_to_1")
PADDINGS = ("same", "valid")


@dataclass(frozen=True)
class NoAttrs:
    pass


REQUANT_MODES = ("fixed_point", "thresholds", "ai8x")  # docs/precision.md section 2
# MAX78000 (ai8x) layers may also take the absolute value (docs/precision.md section 2.3)
AI8X_ACTIVATIONS = ("none", "relu", "abs")
POOL_ROUNDINGS = ("tflite", "trunc")  # avg pool: TFLite rounding or ai8x truncation


@dataclass(frozen=True)
class Conv2DAttrs:
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    padding: str = "valid"
    activation: str = "none"
    requant: str = "fixed_point"
    output_shift: int = 0  # requant="ai8x": effective shift s in [-15, 15]


@dataclass(frozen=True)
class DepthwiseConv2DAttrs:
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    padding: str = "valid"
    activation: str = "none"
    depth_multiplier: int = 1
    requant: str = "fixed_point"


@dataclass(frozen=True)
class FullyConnectedAttrs:
    activation: str = "none"
    keep_num_dims: bool = False
    requant: str = "fixed_point"
    output_shift: int = 0  # requant="ai8x": effective shift s in [-15, 15]


@dataclass(frozen=True)
class Pool2DAttrs:
    filter: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: str = "valid"
    activation: str = "none"
    rounding: str = "tflite"  # avg pool: "tflite" or "trunc" (ai8x: mean truncated toward 0)


@dataclass(frozen=True)
class ElementwiseAttrs:
    activation: str = "none"


@dataclass(frozen=True)
class SoftmaxAttrs:
    beta: float = 1.0


@dataclass(frozen=True)
class ConcatAttrs:
    axis: int = -1
    activation: str = "none"


@dataclass(frozen=True)
class MeanAttrs:
    axes: tuple[int, ...] = ()
    keep_dims: bool = False


@dataclass(frozen=True)
class ReshapeAttrs:
    shape: tuple[int, ...] = ()


@dataclass(frozen=True)
class TransposeAttrs:
    perm: tuple[int, ...] = ()


@dataclass(frozen=True)
class PadAttrs:
    paddings: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class StridedSliceAttrs:
    """Normalised slice: one (begin, end, stride) per input axis, plus axes to drop."""

    begin: tuple[int, ...] = ()
    end: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    shrink_axes: tuple[int, ...] = ()


@dataclass(frozen=True)
class OpDef:
    kind: str
    attrs: type
    n_inputs: tuple[int, int]  # (min, max) number of inputs, optional ones may be ""
    check: Callable[[Graph, Op], None] | None = None
    doc: str = ""
    weighted: bool = False  # has constant weights (conv/fc) counted as parameters
    extra: dict = field(default_factory=dict)


OPS: dict[str, OpDef] = {}


def register(opdef: OpDef) -> OpDef:
    OPS[opdef.kind] = opdef
    return opdef


def conv_output_size(in_size: int, k: int, stride: int, dilation: int, padding: str) -> int:
    """TFLite's ComputeOutSize."""
    eff = (k - 1) * dilation + 1
    if padding == "same":
        return (in_size + stride - 1) // stride
    return (in_size - eff + stride) // stride


def conv_padding(in_size: int, k: int, stride: int, dilation: int, out_size: int) -> int:
    """TFLite's ComputePaddingHeightWidth: padding before (top/left) for SAME, else 0."""
    eff = (k - 1) * dilation + 1
    total = max((out_size - 1) * stride + eff - in_size, 0)
    return total // 2


# Shape checks live in graph_checks.py to keep this file a catalogue.
for _kind, _attrs, _n, _doc, _w in [
    # MAC ops: inputs x, weights, bias ("" if absent), thresholds (requant="thresholds" only)
    ("conv2d", Conv2DAttrs, (2, 4), "2-D convolution, NHWC input, OHWI weights, int32 bias", True),
    ("depthwise_conv2d", DepthwiseConv2DAttrs, (2, 4), "depthwise conv, 1HW(C*M) weights", True),
    ("fully_connected", FullyConnectedAttrs, (2, 4), "y = x W^T + b, W is (out, in)", True),
    ("avg_pool2d", Pool2DAttrs, (1, 1), "average pooling (TFLite rounding)", False),
    ("max_pool2d", Pool2DAttrs, (1, 1), "max pooling", False),
    ("add", ElementwiseAttrs, (2, 2), "broadcasting add with requantization", False),
    ("sub", ElementwiseAttrs, (2, 2), "broadcasting sub with requantization", False),
    ("mul", ElementwiseAttrs, (2, 2), "broadcasting mul with requantization", False),
    ("reshape", ReshapeAttrs, (1, 2), "reshape (no data change)", False),
    ("squeeze", ReshapeAttrs, (1, 1), "squeeze (no data change)", False),
    ("softmax", SoftmaxAttrs, (1, 1), "int8 softmax as TFLite Micro computes it", False),
    ("logistic", NoAttrs, (1, 1), "int8 logistic (sigmoid)", False),
    ("tanh", NoAttrs, (1, 1), "int8 tanh", False),
    ("pad", PadAttrs, (1, 3), "constant pad with the zero point", False),
    ("concat", ConcatAttrs, (1, 64), "concatenation with requantization", False),
    ("mean", MeanAttrs, (1, 2), "mean over axes", False),
    ("transpose", TransposeAttrs, (1, 2), "permute axes", False),
    ("quantize", NoAttrs, (1, 1), "float->int or int->int requantize", False),
    ("dequantize", NoAttrs, (1, 1), "int->float32", False),
    ("relu", NoAttrs, (1, 1), "quantized ReLU", False),
    ("relu6", NoAttrs, (1, 1), "quantized ReLU6", False),
    ("hard_swish", NoAttrs, (1, 1), "quantized hard-swish", False),
    ("strided_slice", StridedSliceAttrs, (1, 4), "strided slice", False),
]:
    register(OpDef(_kind, _attrs, _n, doc=_doc, weighted=_w))
