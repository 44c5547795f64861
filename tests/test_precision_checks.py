"""Graph checks of docs/precision.md section 2 (requant modes, thresholds input) and the
precision helpers of mcusim/precision.py."""

from __future__ import annotations

import numpy as np
import pytest

from mcusim import qnn
from mcusim.dtypes import INT8, INT32, Quant, elem_type
from mcusim.errors import GraphError
from mcusim.graph import Graph, Op, Tensor
from mcusim.ops import Conv2DAttrs, DepthwiseConv2DAttrs, FullyConnectedAttrs
from mcusim.precision import (
    acc_bound,
    describe,
    max_offset,
    needs_generic_kernel,
    op_precision,
    pack_rows,
    packed,
    unpacked,
    value_range,
)


def q(scale=0.1, zp=0) -> Quant:
    return Quant(np.array([scale], np.float32), np.array([zp]))


def conv_graph(
    ytype="int4",
    requant="thresholds",
    thr_shape=None,
    thr=None,
    thr_dtype=INT32,
    activation="none",
    kind="conv2d",
    wtype="int4",
    xtype="int4",
) -> Graph:
    """One MAC op, 4 output channels, with an optional thresholds input."""
    yt, wt, xt = elem_type(ytype), elem_type(wtype), elem_type(xtype)
    if kind == "conv2d":
        wshape, xshape, yshape = (4, 3, 3, 2), (1, 5, 5, 2), (1, 3, 3, 4)
        attrs = Conv2DAttrs(activation=activation, requant=requant)
    elif kind == "depthwise_conv2d":
        wshape, xshape, yshape = (1, 3, 3, 4), (1, 5, 5, 2), (1, 3, 3, 4)
        attrs = DepthwiseConv2DAttrs(activation=activation, depth_multiplier=2, requant=requant)
    else:
        wshape, xshape, yshape = (4, 6), (1, 6), (1, 4)
        attrs = FullyConnectedAttrs(activation=activation, requant=requant)
    wdata = np.ones(wshape, np.int8)
    tensors = {
        "x": Tensor("x", xshape, xt, q()),
        "w": Tensor("w", wshape, wt, q(), wdata),
        "y": Tensor("y", yshape, yt, q()),
    }
    ins = ["x", "w", ""]
    if thr_shape is not None or thr is not None:
        data = np.zeros(thr_shape, np.int64) if thr is None else np.asarray(thr)
        data = data.astype(thr_dtype.np_dtype)
        tensors["t"] = Tensor("t", data.shape, thr_dtype, None, data)
        ins.append("t")
    op = Op(kind, "L", ins, ["y"], attrs)
    return Graph(tensors, [op], ["x"], ["y"])


def sorted_thr(rows, levels):
    return np.tile(np.arange(levels, dtype=np.int32) * 3 - 10, (rows, 1))


@pytest.mark.parametrize("kind", ["conv2d", "depthwise_conv2d", "fully_connected"])
@pytest.mark.parametrize(("ytype", "levels"), [("int4", 15), ("uint2", 3), ("binary", 1)])
def test_valid_thresholds_pass(kind, ytype, levels):
    conv_graph(ytype, thr=sorted_thr(4, levels), kind=kind).validate()


def test_fixed_point_default_passes_without_thresholds():
    conv_graph("int4", "fixed_point").validate()
    conv_graph("int8", "fixed_point", wtype="binary", xtype="uint8").validate()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"requant": "lut"}, "requant mode 'lut' is not one of"),
        ({"requant": "thresholds"}, "needs a constant thresholds input"),
        ({"requant": "fixed_point", "thr": sorted_thr(4, 15)}, "needs requant='thresholds'"),
        ({"ytype": "binary", "requant": "fixed_point"}, "binary output needs requant='thresholds'"),
        ({"ytype": "int8", "thr": sorted_thr(4, 255)}, "at most 4 bits, output is int8"),
        ({"ytype": "int4", "thr": sorted_thr(4, 7)}, r"shape \[4, 7\], expected \[4, 15\]"),
        ({"ytype": "int4", "thr": sorted_thr(3, 15)}, r"expected \[4, 15\] for a int4 output"),
        ({"ytype": "binary", "thr": sorted_thr(4, 3)}, r"expected \[4, 1\] for a binary"),
        (
            {"ytype": "uint2", "thr": np.array([[0, 5, 4]] * 4, np.int32)},
            "every row must be non-decreasing",
        ),
        ({"activation": "relu", "thr": sorted_thr(4, 15)}, "fold the fused activation"),
        (
            {"thr": sorted_thr(4, 15), "thr_dtype": INT8},
            "thresholds 't' are int8, expected int32",
        ),
        (
            {"thr": sorted_thr(4, 15).astype(np.float32), "thr_dtype": elem_type("float32")},
            "expected int32",
        ),
    ],
)
def test_requant_errors_name_the_layer(kwargs, message):
    with pytest.raises(GraphError, match=message) as e:
        conv_graph(**kwargs).validate()
    assert "layer L (conv2d)" in str(e.value)


def test_thresholds_roundtrip_qnn():
    g = conv_graph("uint2", thr=sorted_thr(4, 3), wtype="int2", xtype="uint4").validate()
    g2 = qnn.loads(qnn.dumps(g))
    assert g2.ops[0].attrs.requant == "thresholds"
    np.testing.assert_array_equal(g2.tensors["t"].data, g.tensors["t"].data)


# -- mcusim/precision.py ------------------------------------------------------------------


def test_precision_names_and_ranges():
    g = conv_graph("int4", "fixed_point", wtype="binary", xtype="uint8")
    op = g.ops[0]
    assert op_precision(g, op) == "W1A8"
    assert describe(g, op) == "W1A8 (binary x uint8 -> int4)"
    assert needs_generic_kernel(g, op)
    g8 = conv_graph("int8", "fixed_point", wtype="int8", xtype="int8")
    assert op_precision(g8, g8.ops[0]) == "W8A8"
    assert not needs_generic_kernel(g8, g8.ops[0])
    g8t = conv_graph("int4", "thresholds", thr=sorted_thr(4, 15), wtype="int8", xtype="int8")
    assert needs_generic_kernel(g8t, g8t.ops[0])  # thresholds always go generic
    assert value_range(elem_type("int2")) == (-2, 1)
    assert value_range(elem_type("uint4")) == (0, 15)
    assert value_range(elem_type("binary")) == (-1, 1)
    assert max_offset(elem_type("uint8"), 3) == 252
    assert max_offset(elem_type("int4"), -8) == 15
    assert max_offset(elem_type("binary"), 0) == 1
    w = np.array([[1, -2, 3], [-7, 7, 0]])
    assert acc_bound(w, elem_type("int4"), 2) == 14 * 10


def test_packing_helpers_follow_qnn_format():
    i4 = elem_type("int4")
    v = np.array([1, -2, 7, -8, 3], np.int8)
    assert packed(v, i4).tolist() == [0xE1, 0x87, 0x03]  # docs/qnn-format.md 4.2 example
    np.testing.assert_array_equal(unpacked(packed(v, i4), i4, (5,)), v)
    b = elem_type("binary")
    bits = np.array([1, -1, -1, 1, 1, 1, -1, 1, -1, 1], np.int8)
    assert packed(bits, b).tolist() == [0xB9, 0x02]
    words = pack_rows(np.stack([bits, -bits]), b, word_bits=32)
    assert words.shape == (2, 1) and words.dtype == np.uint32
    assert int(words[0, 0]) == 0x02B9
    assert int(words[1, 0]) == (~0x02B9) & 0x3FF  # past the row's 10 bits: 0
    rows = pack_rows(np.ones((3, 130), np.int8), b)
    assert rows.shape == (3, 3) and int(rows[0, 2]) == 0b11
    assert pack_rows(np.array([[-1, 1, 0, -2]], np.int8), elem_type("int2"), 8).tolist() == [
        [0b10_00_01_11]
    ]


def test_other_ops_refuse_sub_byte_tensors():
    from mcusim.dtypes import INT8, Quant, elem_type
    from mcusim.errors import GraphError
    from mcusim.graph import Graph, Op, Tensor
    from mcusim.ops import SoftmaxAttrs

    q = Quant(np.array([0.1], np.float32), np.array([0]))
    t = {
        "x": Tensor("x", (1, 8), elem_type("int4"), q),
        "y": Tensor("y", (1, 8), INT8, Quant(np.array([1 / 256], np.float32), np.array([-128]))),
    }
    g = Graph(t, [Op("softmax", "sm", ["x"], ["y"], SoftmaxAttrs())], ["x"], ["y"])
    with pytest.raises(
        GraphError, match=r"layer sm \(softmax\): softmax runs at 8 bits.*'x' is int4"
    ):
        g.validate()


def test_random_binary_inputs_are_plus_minus_one():
    from mcusim.dtypes import BINARY
    from mcusim.graph import Graph, Tensor
    from mcusim.inputs import random_inputs

    g = Graph({"x": Tensor("x", (4, 64), BINARY)}, [], ["x"], ["x"])
    x = random_inputs(g, 3)[0]
    assert set(np.unique(x)) == {-1, 1} and x.dtype == np.int8
