"""graph_checks: consistent graphs pass (also with sub-byte types), each inconsistency
raises a GraphError naming the layer and what disagrees."""

from __future__ import annotations

import numpy as np
import pytest

from mcusim.dtypes import BINARY, FLOAT32, INT8, INT32, Quant, elem_type
from mcusim.errors import GraphError
from mcusim.graph import Graph, Op, Tensor
from mcusim.ops import (
    ConcatAttrs,
    Conv2DAttrs,
    DepthwiseConv2DAttrs,
    ElementwiseAttrs,
    FullyConnectedAttrs,
    MeanAttrs,
    NoAttrs,
    PadAttrs,
    Pool2DAttrs,
    ReshapeAttrs,
    SoftmaxAttrs,
    StridedSliceAttrs,
    TransposeAttrs,
)

Q = Quant(np.array([0.1]), np.array([0]))


def act(name: str, shape: tuple, dtype=INT8) -> Tensor:
    return Tensor(name, tuple(shape), dtype, None if dtype.is_float else Q)


def const(name: str, shape: tuple, dtype=INT8, quant: Quant | None = Q) -> Tensor:
    return Tensor(name, tuple(shape), dtype, quant, np.zeros(shape, dtype.np_dtype))


def graph(kind: str, attrs, inputs: list[Tensor | None], out: Tensor) -> Graph:
    tensors = {t.name: t for t in inputs if t is not None}
    tensors[out.name] = out
    g_inputs = [t.name for t in inputs if t is not None and not t.is_const]
    op = Op(
        kind, out.name, [t.name if t else "" for t in inputs], [out.name], attrs, source_index=3
    )
    return Graph(tensors, [op], g_inputs, [out.name], name="g")


def conv_graph(x=(1, 8, 8, 3), w=(4, 3, 3, 3), b=(4,), y=(1, 8, 8, 4), wq=None, **kw):
    attrs = Conv2DAttrs(**{"padding": "same", **kw})
    bias = const("b", b, INT32) if b is not None else None
    return graph("conv2d", attrs, [act("x", x), const("w", w, quant=wq or Q), bias], act("y", y))


def check_fails(g: Graph, *fragments: str) -> str:
    with pytest.raises(GraphError) as e:
        g.validate()
    msg = str(e.value)
    assert msg.startswith(f"layer #3 {g.ops[0].name} ({g.ops[0].kind}): "), msg
    for f in fragments:
        assert f in msg, msg
    return msg


# -- consistent graphs pass ----------------------------------------------------------------
def test_valid_conv_variants_pass() -> None:
    conv_graph().validate()
    conv_graph(y=(1, 6, 6, 4), padding="valid").validate()
    conv_graph(y=(1, 4, 4, 4), stride=(2, 2)).validate()
    conv_graph(y=(1, 4, 8, 4), stride=(2, 1)).validate()
    conv_graph(y=(1, 4, 6, 4), padding="valid", dilation=(2, 1)).validate()
    conv_graph(b=None).validate()
    pc = Quant(np.full(4, 0.1), np.zeros(4), axis=0)
    conv_graph(wq=pc).validate()


def test_sub_byte_and_binary_types_pass() -> None:
    i4, u2 = elem_type("int4"), elem_type("uint2")
    g = graph(
        "conv2d",
        Conv2DAttrs(padding="valid"),
        [act("x", (1, 5, 5, 8), u2), const("w", (16, 3, 3, 8), BINARY), const("b", (16,), INT32)],
        act("y", (1, 3, 3, 16), i4),
    )
    g.validate()
    g = graph(
        "fully_connected",
        FullyConnectedAttrs(),
        [act("x", (1, 32), i4), const("w", (10, 32), i4)],
        act("y", (1, 10), INT8),
    )
    g.validate()


# -- convolution -----------------------------------------------------------------------------
def test_conv_output_shape() -> None:
    check_fails(
        conv_graph(y=(1, 8, 8, 4), padding="valid"),
        "output 'y' has shape [1, 8, 8, 4], expected [1, 6, 6, 4]",
        "valid padding",
    )
    check_fails(conv_graph(y=(1, 8, 8, 5)), "expected [1, 8, 8, 4]")


def test_conv_channels_and_bias() -> None:
    check_fails(conv_graph(x=(1, 8, 8, 5)), "input 'x' has 5 channels", "expect 3")
    check_fails(conv_graph(b=(3,)), "bias 'b' has shape [3], expected [4]")
    check_fails(conv_graph(w=(4, 3, 3)), "weights 'w' has shape [4, 3, 3], expected rank 4")
    check_fails(conv_graph(x=(8, 8, 3)), "input 'x' has shape [8, 8, 3], expected rank 4")


def test_conv_attrs() -> None:
    check_fails(conv_graph(stride=(0, 1)), "stride must be two integers >= 1, got (0, 1)")
    check_fails(conv_graph(dilation=(1,)), "dilation must be two integers >= 1")
    check_fails(conv_graph(activation="gelu"), "unknown fused activation 'gelu'")
    check_fails(conv_graph(padding="full"), "unknown padding 'full'")
    check_fails(
        conv_graph(x=(1, 2, 2, 3), w=(4, 3, 3, 3), y=(1, 1, 1, 4), padding="valid"),
        "window 3x3 does not fit input [1, 2, 2, 3]",
    )


def test_conv_per_channel_quant() -> None:
    check_fails(
        conv_graph(wq=Quant(np.full(3, 0.1), np.zeros(3), axis=3)),
        "quantized per channel on axis 3, not 0",
    )
    check_fails(
        conv_graph(wq=Quant(np.full(5, 0.1), np.zeros(5), axis=0)),
        "have 5 channel scales for 4 channels",
    )


def test_conv_float_mismatch() -> None:
    g = conv_graph()
    g.tensors["y"] = act("y", (1, 8, 8, 4), FLOAT32)
    check_fails(g, "input 'x' is int8 but output 'y' is float32")


def _dw(x=(1, 8, 8, 4), w=(1, 3, 3, 8), y=(1, 8, 8, 8), mult=2, b=(8,), wq=None):
    attrs = DepthwiseConv2DAttrs(padding="same", depth_multiplier=mult)
    return graph(
        "depthwise_conv2d",
        attrs,
        [act("x", x), const("w", w, quant=wq or Q), const("b", b, INT32)],
        act("y", y),
    )


def test_depthwise() -> None:
    _dw().validate()
    _dw(wq=Quant(np.full(8, 0.1), np.zeros(8), axis=3)).validate()
    check_fails(_dw(mult=1), "weights 'w' have 8 channels", "depth multiplier 1 (4 expected)")
    check_fails(_dw(mult=0), "depth multiplier 0 must be >= 1")
    check_fails(_dw(w=(2, 3, 3, 8)), "first dim must be 1")
    check_fails(_dw(y=(1, 8, 8, 4)), "expected [1, 8, 8, 8]")
    check_fails(_dw(b=(4,)), "bias 'b' has shape [4], expected [8]")
    check_fails(
        _dw(wq=Quant(np.full(8, 0.1), np.zeros(8), axis=0)),
        "quantized per channel on axis 0, not 3",
    )


# -- fully connected / pooling ---------------------------------------------------------------
def _fc(x=(1, 16), w=(5, 16), y=(1, 5), b=(5,), keep=False):
    return graph(
        "fully_connected",
        FullyConnectedAttrs(keep_num_dims=keep),
        [act("x", x), const("w", w), const("b", b, INT32)],
        act("y", y),
    )


def test_fully_connected() -> None:
    _fc().validate()
    _fc(x=(1, 1, 1, 16)).validate()  # TFLite flattens leading dims
    _fc(x=(3, 16), y=(3, 5)).validate()
    _fc(x=(2, 3, 16), y=(2, 3, 5), keep=True).validate()
    check_fails(
        _fc(x=(1, 14)),
        "14 elements, not a multiple of the 16 input features",
        "weights 'w' [5, 16]",
    )
    check_fails(_fc(y=(1, 6)), "output 'y' has shape [1, 6], expected [1, 5]")
    check_fails(_fc(x=(2, 16), y=(1, 5)), "expected [2, 5]")
    check_fails(_fc(b=(6,)), "bias 'b' has shape [6], expected [5]")
    check_fails(_fc(w=(5, 16, 1)), "weights 'w' has shape [5, 16, 1], expected rank 2")
    check_fails(_fc(x=(2, 3, 16), y=(6, 5), keep=True), "expected [2, 3, 5] (keep_num_dims)")


def _pool(x=(1, 7, 6, 3), y=(1, 4, 6, 3), **kw):
    attrs = Pool2DAttrs(**{"filter": (3, 2), "stride": (2, 1), "padding": "same", **kw})
    return graph("avg_pool2d", attrs, [act("x", x)], act("y", y))


def test_pool() -> None:
    _pool().validate()
    _pool(y=(1, 3, 5, 3), padding="valid").validate()
    check_fails(_pool(y=(1, 4, 6, 4)), "expected [1, 4, 6, 3] (3x2 pool, same)")
    check_fails(_pool(filter=(0, 2)), "filter size must be two integers >= 1")


# -- elementwise ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["add", "sub", "mul"])
def test_binary_broadcast(kind: str) -> None:
    def g(a, b, y):
        return graph(kind, ElementwiseAttrs(), [act("a", a), act("b", b)], act("y", y))

    g((1, 4, 4, 3), (1, 4, 4, 3), (1, 4, 4, 3)).validate()
    g((1, 4, 4, 3), (1, 1, 1, 3), (1, 4, 4, 3)).validate()
    g((1, 4, 1, 3), (1, 1, 5, 1), (1, 4, 5, 3)).validate()
    g((4, 3), (1, 4, 4, 3), (1, 4, 4, 3)).validate()
    check_fails(
        g((1, 4, 4, 3), (1, 4, 4, 2), (1, 4, 4, 3)),
        "inputs 'a' [1, 4, 4, 3] and 'b' [1, 4, 4, 2] do not broadcast",
    )
    check_fails(
        g((1, 4, 4, 3), (1, 1, 1, 3), (1, 4, 4, 1)),
        "expected [1, 4, 4, 3] (broadcast of the inputs)",
    )


@pytest.mark.parametrize("kind", ["softmax", "logistic", "tanh", "relu", "relu6", "hard_swish"])
def test_unary_shape(kind: str) -> None:
    attrs = SoftmaxAttrs() if kind == "softmax" else NoAttrs()
    graph(kind, attrs, [act("x", (1, 10))], act("y", (1, 10))).validate()
    check_fails(
        graph(kind, attrs, [act("x", (1, 10))], act("y", (1, 11))),
        "output 'y' has shape [1, 11], input 'x' has [1, 10]",
    )


def test_softmax_beta() -> None:
    check_fails(
        graph("softmax", SoftmaxAttrs(beta=0.0), [act("x", (1, 4))], act("y", (1, 4))),
        "beta must be > 0",
    )


def test_quantize_dequantize_types() -> None:
    graph("quantize", NoAttrs(), [act("x", (1, 4), FLOAT32)], act("y", (1, 4))).validate()
    graph("dequantize", NoAttrs(), [act("x", (1, 4))], act("y", (1, 4), FLOAT32)).validate()
    check_fails(
        graph("quantize", NoAttrs(), [act("x", (1, 4))], act("y", (1, 4), FLOAT32)),
        "quantize output 'y' is float32, expected an integer type",
    )
    check_fails(
        graph("dequantize", NoAttrs(), [act("x", (1, 4))], act("y", (1, 4))),
        "dequantize output 'y' is int8, expected float32",
    )
    check_fails(
        graph("dequantize", NoAttrs(), [act("x", (1, 4))], act("y", (2, 2), FLOAT32)),
        "output 'y' has shape [2, 2]",
    )


# -- data movement -----------------------------------------------------------------------------
def test_reshape_and_squeeze() -> None:
    graph("reshape", ReshapeAttrs((4, 12)), [act("x", (1, 2, 2, 12))], act("y", (4, 12))).validate()
    check_fails(
        graph("reshape", ReshapeAttrs((4, 13)), [act("x", (1, 2, 2, 12))], act("y", (4, 13))),
        "input 'x' [1, 2, 2, 12] has 48 elements, output 'y' [4, 13] has 52",
    )
    check_fails(
        graph("reshape", ReshapeAttrs((6, 8)), [act("x", (48,))], act("y", (4, 12))),
        "target shape [6, 8] differs from output 'y' [4, 12]",
    )
    check_fails(
        graph("squeeze", ReshapeAttrs((1, 10)), [act("x", (1, 1, 1, 10))], act("y", (1, 9))),
        "has 10 elements",
    )


def test_pad() -> None:
    pads = ((0, 0), (1, 2), (2, 1), (0, 0))
    graph("pad", PadAttrs(pads), [act("x", (1, 3, 4, 2))], act("y", (1, 6, 7, 2))).validate()
    check_fails(
        graph("pad", PadAttrs(pads), [act("x", (1, 3, 4, 2))], act("y", (1, 6, 6, 2))),
        "expected [1, 6, 7, 2] (paddings [[0, 0], [1, 2], [2, 1], [0, 0]])",
    )
    check_fails(
        graph("pad", PadAttrs(pads[:3]), [act("x", (1, 3, 4, 2))], act("y", (1, 6, 7, 2))),
        "3 padding pairs for input 'x' of rank 4",
    )
    check_fails(
        graph("pad", PadAttrs(((0, 0), (-1, 0))), [act("x", (1, 3))], act("y", (1, 2))),
        "paddings must be non-negative",
    )
    cv = const("v", (2,))
    check_fails(
        graph(
            "pad",
            PadAttrs(((0, 0), (1, 0))),
            [act("x", (1, 3)), const("p", (2, 2), INT32, None), cv],
            act("y", (1, 4)),
        ),
        "pad value 'v' has 2 elements, expected 1",
    )


def test_concat() -> None:
    def g(shapes, y, axis=3):
        ins = [act(f"in{i}", s) for i, s in enumerate(shapes)]
        return graph("concat", ConcatAttrs(axis=axis), ins, act("y", y))

    g([(1, 2, 2, 3), (1, 2, 2, 5)], (1, 2, 2, 8)).validate()
    g([(1, 2, 2, 3), (1, 3, 2, 3)], (1, 5, 2, 3), axis=-3).validate()
    check_fails(
        g([(1, 2, 2, 3), (1, 2, 3, 5)], (1, 2, 2, 8)),
        "input 'in1' [1, 2, 3, 5] differs from output [1, 2, 2, 8] in dimension 2",
    )
    check_fails(
        g([(1, 2, 2, 3), (1, 2, 2, 5)], (1, 2, 2, 9)),
        "inputs sum to 8 along axis 3, output 'y' has 9",
    )
    check_fails(g([(1, 2, 2, 3), (2, 2, 5)], (1, 2, 2, 8)), "input 'in1' has rank 3")
    check_fails(g([(1, 2, 2, 3)], (1, 2, 2, 3), axis=4), "axis 4 out of range for output rank 4")


def test_mean() -> None:
    def g(axes, keep, y):
        return graph("mean", MeanAttrs(axes, keep), [act("x", (1, 4, 5, 3))], act("y", y))

    g((1, 2), True, (1, 1, 1, 3)).validate()
    g((1, 2), False, (1, 3)).validate()
    g((-3, -2), False, (1, 3)).validate()
    check_fails(g((1, 2), False, (1, 1, 1, 3)), "expected [1, 3] (mean over axes [1, 2])")
    check_fails(g((4,), False, (1, 3)), "axes [4] out of range for input rank 4")
    check_fails(g((), False, (1, 4, 5, 3)), "mean over no axes")


def test_transpose() -> None:
    x = act("x", (1, 2, 3, 4))
    graph("transpose", TransposeAttrs((0, 3, 1, 2)), [x], act("y", (1, 4, 2, 3))).validate()
    check_fails(
        graph("transpose", TransposeAttrs((0, 3, 1, 1)), [x], act("y", (1, 4, 2, 2))),
        "perm [0, 3, 1, 1] is not a permutation of the 4 input axes",
    )
    check_fails(
        graph("transpose", TransposeAttrs((0, 3, 1, 2)), [x], act("y", (1, 2, 3, 4))),
        "expected [1, 4, 2, 3] (perm [0, 3, 1, 2])",
    )


def test_strided_slice() -> None:
    x = act("x", (1, 6, 5, 4))

    def g(attrs, y):
        return graph("strided_slice", attrs, [x], act("y", y))

    g(StridedSliceAttrs((0, 1, 0, 1), (1, 5, 5, 4), (1, 2, 2, 1)), (1, 2, 3, 3)).validate()
    g(StridedSliceAttrs((0, 5, 0, 3), (1, 0, 5, -1), (1, -2, 1, -1)), (1, 3, 5, 4)).validate()
    g(StridedSliceAttrs((0, 2, 0, 3), (1, 3, 5, 4), (1, 1, 1, 1), (0, 3)), (1, 5)).validate()
    check_fails(
        g(StridedSliceAttrs((0, 1, 0, 1), (1, 5, 5, 4), (1, 2, 2, 1)), (1, 2, 2, 3)),
        "expected [1, 2, 3, 3] (slice of the input)",
    )
    check_fails(
        g(StridedSliceAttrs((0, 1, 0), (1, 5, 5), (1, 2, 2)), (1, 2, 3)),
        "lengths 3/3/3, input rank is 4",
    )
    check_fails(
        g(StridedSliceAttrs((0, 1, 0, 1), (1, 7, 5, 4), (1, 1, 1, 1)), (1, 6, 5, 3)),
        "axis 1: begin 1 / end 7 out of range for size 6",
    )
    check_fails(
        g(StridedSliceAttrs((0, 1, 0, 1), (1, 5, 5, 4), (1, 0, 1, 1)), (1, 4, 5, 3)),
        "stride of axis 1 is 0",
    )


def test_generic_rules() -> None:
    g = conv_graph()
    g.ops[0].outputs.append("x")
    check_fails(g, "has 2 outputs, expected 1")
