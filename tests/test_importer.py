"""TFLite importer: real models against model_analysis.json and TFLM, builder-made
single-op models against TFLM's outputs, and bad files against clear errors."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from mcusim.dtypes import FLOAT32, INT8, INT32
from mcusim.errors import GraphError, ModelFormatError, UnsupportedOpError, UserError
from mcusim.importers.tflite import load_tflite, load_tflite_bytes
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

from conftest import MODELS, SHARED_MODELS, model_path
from tflite_builder import TFLiteBuilder, quantize_bias
from tflm_ref import tflm_run, tflm_run_by_name

KIND_OF = {
    "CONV_2D": "conv2d",
    "DEPTHWISE_CONV_2D": "depthwise_conv2d",
    "FULLY_CONNECTED": "fully_connected",
    "AVERAGE_POOL_2D": "avg_pool2d",
    "MAX_POOL_2D": "max_pool2d",
    "ADD": "add",
    "RESHAPE": "reshape",
    "SOFTMAX": "softmax",
}


# -- shared real models ------------------------------------------------------------------
@pytest.fixture(scope="module")
def analysis() -> dict:
    p = MODELS / "model_analysis.json"
    if not p.exists():
        pytest.skip(f"{p} is absent: shared real models are not available")
    return json.loads(p.read_text())


def _macs(graph) -> int:
    total = 0
    for op in graph.ops:
        y = graph.tensors[op.outputs[0]]
        w = graph.tensors[op.inputs[1]] if len(op.inputs) > 1 else None
        if op.kind == "conv2d":
            total += y.size * w.shape[1] * w.shape[2] * w.shape[3]
        elif op.kind == "depthwise_conv2d":
            total += y.size * w.shape[1] * w.shape[2]
        elif op.kind == "fully_connected":
            total += y.size * w.shape[1]
    return total


@pytest.mark.parametrize("name", SHARED_MODELS)
def test_shared_model_matches_analysis(name: str, analysis: dict) -> None:
    path = model_path(name)
    a = analysis[name]
    g = load_tflite(path)
    assert Counter(op.kind for op in g.ops) == {KIND_OF[k]: v for k, v in a["ops"].items()}
    assert len(g.ops) == a["n_ops"]
    assert _macs(g) == a["macs_total"]
    assert [op.source_index for op in g.ops] == list(range(a["n_ops"]))
    assert sum(t.size for t in g.tensors.values() if t.is_const) == a["params"]
    assert g.metadata["sha256"] == a["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert g.metadata["source"] == path.name and g.metadata["format"] == "tflite"
    for names, spec in ((g.inputs, a["inputs"]), (g.outputs, a["outputs"])):
        assert len(names) == len(spec)
        for n, (shape, dt, (scale, zp)) in zip(names, spec, strict=True):
            t = g.tensors[n]
            assert list(t.shape) == shape and t.dtype.name == dt.lower() and not t.is_const
            assert t.quant.scale[0] == np.float32(scale) and t.quant.zero_point[0] == zp
    # Per layer: shapes, and per-channel weights carry the right axis.
    per_channel = Counter()
    for op, layer in zip(g.ops, a["layers"], strict=True):
        assert op.kind == KIND_OF[layer["op"]]
        assert list(g.tensors[op.inputs[0]].shape) == layer["ifm"]
        assert list(g.tensors[op.outputs[0]].shape) == layer["ofm"]
        if layer["w"] is not None:
            w = g.tensors[op.inputs[1]]
            assert list(w.shape) == layer["w"] and w.dtype == INT8 and w.is_const
            if layer["wq"].startswith("per-channel"):
                per_channel[layer["op"]] += 1
                assert w.quant.axis == (3 if op.kind == "depthwise_conv2d" else 0)
                assert w.quant.scale.size == w.shape[w.quant.axis]
            else:
                assert w.quant.axis is None and w.quant.scale.size == 1
            b = g.tensors[op.inputs[2]]
            assert b.dtype == INT32 and b.shape == (
                w.shape[0 if op.kind != "depthwise_conv2d" else 3],
            )
    assert dict(per_channel) == a["per_channel_ops"]


@pytest.mark.parametrize("name", SHARED_MODELS)
def test_shared_model_constants_match_independent_reader(name: str) -> None:
    """Constant data equals what TFLM's own schema reader (object API) decodes."""
    schema = pytest.importorskip("tflite_micro.tensorflow.lite.micro.python.schema_py_generated")
    path = model_path(name)
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAs(path.read_bytes(), 0))
    sg = m.subgraphs[0]
    g = load_tflite(path)
    n_checked = 0
    for t in sg.tensors:
        name_ = t.name.decode()
        raw = m.buffers[t.buffer].data
        if raw is None or len(raw) == 0:
            assert name_ not in g.tensors or not g.tensors[name_].is_const
            continue
        if name_ not in g.tensors:
            continue
        mine = g.tensors[name_]
        ref = np.asarray(raw, dtype=np.uint8).tobytes()
        np_type = {9: "i1", 2: "<i4", 3: "u1", 0: "<f4", 7: "<i2"}[t.type]
        expect = np.frombuffer(ref, dtype=np_type).reshape(tuple(t.shape))
        np.testing.assert_array_equal(mine.data, expect)
        assert mine.data.flags.c_contiguous and mine.data.dtype == mine.dtype.np_dtype
        if t.quantization is not None and t.quantization.scale is not None:
            np.testing.assert_array_equal(
                mine.quant.scale, np.asarray(t.quantization.scale, np.float32)
            )
        n_checked += 1
    assert n_checked > 0


@pytest.mark.parametrize("name", SHARED_MODELS)
def test_shared_model_shapes_match_tflm(name: str) -> None:
    """Every op output's shape and dtype agree with what TFLM produces running the file."""
    path = model_path(name)
    g = load_tflite(path)
    x = g.tensors[g.inputs[0]]
    rng = np.random.default_rng(7)
    arr = rng.integers(x.dtype.min, x.dtype.max + 1, x.shape).astype(x.dtype.np_dtype)
    outs = tflm_run_by_name(path, [arr])
    assert set(outs) == {n for op in g.ops for n in op.outputs}
    for name_, val in outs.items():
        t = g.tensors[name_]
        assert val.shape == t.shape and val.dtype == t.dtype.np_dtype
    # Same reference run from bytes, keyed by tensor index.
    by_index = tflm_run(path.read_bytes(), [arr])
    assert len(by_index) == len(outs)
    np.testing.assert_array_equal(list(by_index.values())[-1], outs[g.outputs[0]])


# -- builder-made single-op models ---------------------------------------------------------
RNG = np.random.default_rng(1234)


def _rand(shape, dtype="int8") -> np.ndarray:
    if dtype == "float32":
        return RNG.uniform(-3, 3, shape).astype(np.float32)
    info = np.iinfo(dtype)
    return RNG.integers(info.min, info.max + 1, shape).astype(dtype)


@dataclass
class Case:
    name: str
    model: bytes
    inputs: list[np.ndarray]
    kind: str
    attrs: Any
    n_inputs: int  # inputs the IR op keeps
    reference: Any = None  # f(inputs) -> expected output values (data-movement ops)


def _single(
    op: str,
    in_shapes: list[tuple],
    out_shape: tuple,
    options: dict | None = None,
    const_inputs: list[tuple[str, np.ndarray, str]] = (),
    in_q=(0.05, -3),
    out_q=(0.05, -3),
    in_dtype="int8",
    out_dtype="int8",
) -> tuple[bytes, list[np.ndarray]]:
    b = TFLiteBuilder()
    ins = []
    arrays = []
    for i, s in enumerate(in_shapes):
        q = {} if in_dtype == "float32" else dict(scale=in_q[0], zero_point=in_q[1])
        ins.append(b.tensor(f"in{i}", s, in_dtype, **q))
        arrays.append(_rand(s, in_dtype))
    consts = [
        b.tensor(n, a.shape, dt, data=a, **(kw[0] if kw else {})) for n, a, dt, *kw in const_inputs
    ]
    q = {} if out_dtype == "float32" else dict(scale=out_q[0], zero_point=out_q[1])
    y = b.tensor("out", out_shape, out_dtype, **q)
    b.op(op, inputs=ins + consts, outputs=[y], options=options)
    return b.build(inputs=ins, outputs=[y]), arrays


def _conv_case(depthwise: bool) -> Case:
    b = TFLiteBuilder()
    x = b.tensor("x", (1, 9, 7, 3), "int8", scale=0.05, zero_point=-3)
    if depthwise:
        oc, wshape, axis = 6, (1, 3, 3, 6), 3
    else:
        oc, wshape, axis = 4, (4, 3, 2, 3), 0
    w_scale = RNG.uniform(0.002, 0.02, oc)
    w = b.tensor(
        "w",
        wshape,
        "int8",
        data=_rand(wshape),
        scale=w_scale,
        zero_point=np.zeros(oc),
        quantized_dimension=axis,
    )
    bq, bs = quantize_bias(RNG.normal(size=oc), 0.05, w_scale)
    bias = b.tensor("bias", (oc,), "int32", data=bq, scale=bs, zero_point=0)
    if depthwise:
        # stride h 1, w 2, SAME: out h 9, w ceil(7/2)=4
        y = b.tensor("y", (1, 9, 4, 6), "int8", scale=0.1, zero_point=1)
        opts = dict(
            padding="SAME",
            stride_h=1,
            stride_w=2,
            depth_multiplier=2,
            fused_activation="RELU6",
            dilation_h_factor=1,
            dilation_w_factor=1,
        )
        b.op("DEPTHWISE_CONV_2D", [x, w, bias], [y], opts)
        attrs = DepthwiseConv2DAttrs((1, 2), (1, 1), "same", "relu6", 2)
        kind = "depthwise_conv2d"
    else:
        # stride h 2, dilation h 2, VALID: eff kh 5 -> (9-5+2)//2 = 3; w: (7-2+1)//1 = 6
        y = b.tensor("y", (1, 3, 6, 4), "int8", scale=0.1, zero_point=1)
        opts = dict(
            padding="VALID",
            stride_h=2,
            stride_w=1,
            fused_activation="RELU",
            dilation_h_factor=2,
            dilation_w_factor=1,
        )
        b.op("CONV_2D", [x, w, bias], [y], opts)
        attrs = Conv2DAttrs((2, 1), (2, 1), "valid", "relu")
        kind = "conv2d"
    return Case(kind, b.build([x], [y]), [_rand((1, 9, 7, 3))], kind, attrs, 3)


def _fc_case() -> Case:
    b = TFLiteBuilder()
    x = b.tensor("x", (2, 16), "int8", scale=0.05, zero_point=-3)
    w = b.tensor("w", (5, 16), "int8", data=_rand((5, 16)), scale=0.01, zero_point=0)
    y = b.tensor("y", (2, 5), "int8", scale=0.2, zero_point=2)
    b.op("FULLY_CONNECTED", [x, w, -1], [y], dict(fused_activation="RELU_N1_TO_1"))
    attrs = FullyConnectedAttrs(activation="relu_n1_to_1", keep_num_dims=False)
    return Case("fc_nobias", b.build([x], [y]), [_rand((2, 16))], "fully_connected", attrs, 2)


def _strided_ref(attrs: StridedSliceAttrs):
    def ref(ins):
        x = ins[0]
        # Python's range walks a (begin, end, stride) exactly like the slice does.
        idx = [
            np.array(list(range(bb, e, s)), dtype=np.int64)
            for bb, e, s in zip(attrs.begin, attrs.end, attrs.strides, strict=True)
        ]
        out = x[np.ix_(*idx)]
        return out.reshape([n for a, n in enumerate(out.shape) if a not in attrs.shrink_axes])

    return ref


def _cases() -> list[Case]:
    cases = [_conv_case(False), _conv_case(True), _fc_case()]
    # Pools: filter (h 3, w 2), stride (h 2, w 1), SAME on 1x7x6x3 -> 1x4x6x3.
    for op, kind in (("AVERAGE_POOL_2D", "avg_pool2d"), ("MAX_POOL_2D", "max_pool2d")):
        m, ins = _single(
            op,
            [(1, 7, 6, 3)],
            (1, 4, 6, 3),
            dict(
                padding="SAME",
                filter_height=3,
                filter_width=2,
                stride_h=2,
                stride_w=1,
                fused_activation="RELU",
            ),
        )
        cases.append(Case(kind, m, ins, kind, Pool2DAttrs((3, 2), (2, 1), "same", "relu"), 1))
    for op in ("ADD", "SUB", "MUL"):
        m, ins = _single(
            op,
            [(1, 4, 4, 3), (1, 1, 1, 3)],
            (1, 4, 4, 3),
            dict(fused_activation="RELU6"),
            out_q=(0.1, 0),
        )
        cases.append(Case(op.lower(), m, ins, op.lower(), ElementwiseAttrs("relu6"), 2))
    m, ins = _single(
        "RESHAPE",
        [(1, 2, 2, 12)],
        (4, 12),
        const_inputs=[("shape", np.array([-1, 12], np.int32), "int32")],
    )
    cases.append(
        Case("reshape", m, ins, "reshape", ReshapeAttrs((4, 12)), 2, lambda i: i[0].reshape(4, 12))
    )
    m, ins = _single("SQUEEZE", [(1, 1, 1, 10)], (1, 10), dict(squeeze_dims=[1, 2]))
    cases.append(
        Case("squeeze", m, ins, "squeeze", ReshapeAttrs((1, 10)), 1, lambda i: i[0].reshape(1, 10))
    )
    m, ins = _single("SOFTMAX", [(1, 10)], (1, 10), dict(beta=1.0), out_q=(1 / 256, -128))
    cases.append(Case("softmax", m, ins, "softmax", SoftmaxAttrs(1.0), 1))
    m, ins = _single("LOGISTIC", [(1, 10)], (1, 10), out_q=(1 / 256, -128))
    cases.append(Case("logistic", m, ins, "logistic", NoAttrs(), 1))
    m, ins = _single("TANH", [(1, 10)], (1, 10), out_q=(1 / 128, 0))
    cases.append(Case("tanh", m, ins, "tanh", NoAttrs(), 1))
    for op in ("RELU", "RELU6", "HARD_SWISH"):
        m, ins = _single(op, [(1, 3, 3, 4)], (1, 3, 3, 4), out_q=(0.03, -10))
        cases.append(Case(op.lower(), m, ins, op.lower(), NoAttrs(), 1))
    pads = np.array([[0, 0], [1, 2], [2, 1], [0, 0]], np.int32)
    m, ins = _single(
        "PAD", [(1, 3, 4, 2)], (1, 6, 7, 2), const_inputs=[("paddings", pads, "int32")]
    )
    cases.append(
        Case(
            "pad",
            m,
            ins,
            "pad",
            PadAttrs(((0, 0), (1, 2), (2, 1), (0, 0))),
            2,
            lambda i: np.pad(i[0], pads, constant_values=-3),
        )
    )
    m, ins = _single(
        "PADV2",
        [(1, 3, 4, 2)],
        (1, 6, 7, 2),
        const_inputs=[
            ("paddings", pads, "int32"),
            ("value", np.array([17], np.int8), "int8", dict(scale=0.05, zero_point=-3)),
        ],
    )
    cases.append(
        Case(
            "padv2",
            m,
            ins,
            "pad",
            PadAttrs(((0, 0), (1, 2), (2, 1), (0, 0))),
            3,
            lambda i: np.pad(i[0], pads, constant_values=17),
        )
    )
    m, ins = _single("CONCATENATION", [(1, 2, 2, 3), (1, 2, 2, 5)], (1, 2, 2, 8), dict(axis=-1))
    cases.append(
        Case(
            "concat",
            m,
            ins,
            "concat",
            ConcatAttrs(3, "none"),
            2,
            lambda i: np.concatenate(i, axis=3),
        )
    )
    m, ins = _single(
        "MEAN",
        [(1, 4, 5, 3)],
        (1, 1, 1, 3),
        dict(keep_dims=True),
        const_inputs=[("axes", np.array([2, -3], np.int32), "int32")],
    )
    cases.append(Case("mean", m, ins, "mean", MeanAttrs((1, 2), True), 2))
    m, ins = _single(
        "TRANSPOSE",
        [(1, 2, 3, 4)],
        (1, 4, 2, 3),
        const_inputs=[("perm", np.array([0, 3, 1, 2], np.int32), "int32")],
    )
    cases.append(
        Case(
            "transpose",
            m,
            ins,
            "transpose",
            TransposeAttrs((0, 3, 1, 2)),
            2,
            lambda i: np.transpose(i[0], (0, 3, 1, 2)),
        )
    )
    m, ins = _single("QUANTIZE", [(1, 8)], (1, 8), in_dtype="float32")
    cases.append(Case("quantize", m, ins, "quantize", NoAttrs(), 1))
    m, ins = _single("QUANTIZE", [(1, 8)], (1, 8), out_q=(0.02, 5))
    cases.append(Case("requantize", m, ins, "quantize", NoAttrs(), 1))
    m, ins = _single("DEQUANTIZE", [(1, 8)], (1, 8), out_dtype="float32")
    cases.append(Case("dequantize", m, ins, "dequantize", NoAttrs(), 1))
    # Strided slices: plain, masks, negative stride, shrink axis.
    for tag, shape, begin, end, strides, opts, out_shape, attrs in [
        (
            "plain",
            (1, 6, 5, 4),
            [0, 1, 0, 1],
            [1, 5, 5, 4],
            [1, 2, 2, 1],
            {},
            (1, 2, 3, 3),
            StridedSliceAttrs((0, 1, 0, 1), (1, 5, 5, 4), (1, 2, 2, 1), ()),
        ),
        (
            "masks",
            (1, 6, 5, 4),
            [0, -4, 3, 0],
            [0, -1, 0, 3],
            [1, 1, 1, 1],
            dict(begin_mask=0b0001, end_mask=0b0101),
            (1, 3, 2, 3),
            StridedSliceAttrs((0, 2, 3, 0), (1, 5, 5, 3), (1, 1, 1, 1), ()),
        ),
        (
            "reverse",
            (1, 6, 5, 4),
            [0, -1, 0, 3],
            [1, 0, 5, 0],
            [1, -2, 1, -1],
            dict(end_mask=0b1000),
            (1, 3, 5, 4),
            StridedSliceAttrs((0, 5, 0, 3), (1, 0, 5, -1), (1, -2, 1, -1), ()),
        ),
        (
            "reverse_masked",
            (1, 6, 5, 4),
            [0, 0, 4, 0],
            [1, 0, 0, 4],
            [1, -1, -2, 1],
            dict(begin_mask=0b0010, end_mask=0b0010),
            (1, 6, 2, 4),
            StridedSliceAttrs((0, 5, 4, 0), (1, -1, 0, 4), (1, -1, -2, 1), ()),
        ),
    ]:
        consts = [
            (n, np.array(v, np.int32), "int32")
            for n, v in (("begin", begin), ("end", end), ("strides", strides))
        ]
        m, ins = _single("STRIDED_SLICE", [shape], out_shape, opts or None, consts)
        cases.append(
            Case(f"strided_slice_{tag}", m, ins, "strided_slice", attrs, 4, _strided_ref(attrs))
        )
    # shrink: axes 0 and 3 dropped -> x[0, 2:3, 0:5, 3] has shape (1, 5).
    consts = [
        (n, np.array(v, np.int32), "int32")
        for n, v in (("begin", [0, 2, 0, -1]), ("end", [1, 3, 5, 0]), ("strides", [1, 1, 1, 1]))
    ]
    attrs = StridedSliceAttrs((0, 2, 0, 3), (1, 3, 5, 4), (1, 1, 1, 1), (0, 3))
    m, ins = _single("STRIDED_SLICE", [(1, 6, 5, 4)], (1, 5), dict(shrink_axis_mask=0b1001), consts)
    cases.append(
        Case("strided_slice_shrink", m, ins, "strided_slice", attrs, 4, _strided_ref(attrs))
    )
    return cases


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_single_op_model(case: Case) -> None:
    g = load_tflite_bytes(case.model, f"{case.name}.tflite")
    assert len(g.ops) == 1
    op = g.ops[0]
    assert op.kind == case.kind
    assert op.attrs == case.attrs
    assert len(op.inputs) == case.n_inputs
    assert op.name == "out" or op.name == "y"
    assert op.source_index == 0 and op.label.startswith("#0 ")
    assert g.metadata["source"] == f"{case.name}.tflite"
    # TFLM runs the same bytes: output shape/dtype agree, and data movement agrees
    # with what the decoded attributes say.
    outs = tflm_run(case.model, case.inputs)
    (y,) = outs.values()
    t = g.tensors[op.outputs[0]]
    assert y.shape == t.shape and y.dtype == t.dtype.np_dtype
    if case.reference is not None:
        np.testing.assert_array_equal(y, case.reference(case.inputs))


def test_conv_weights_and_quant_are_kept_as_stored() -> None:
    case = CASES[0]
    g = load_tflite_bytes(case.model, "conv.tflite")
    op = g.ops[0]
    w, bias = g.tensors[op.inputs[1]], g.tensors[op.inputs[2]]
    assert w.shape == (4, 3, 2, 3) and w.dtype == INT8 and w.data.shape == w.shape
    assert w.quant.axis == 0 and w.quant.scale.dtype == np.float32 and w.quant.scale.size == 4
    assert np.all(w.quant.zero_point == 0)
    assert bias.dtype == INT32 and bias.data.dtype == np.int32
    x = g.tensors[g.inputs[0]]
    assert x.quant.axis is None and x.quant.scale[0] == np.float32(0.05)
    assert x.quant.zero_point[0] == -3


def test_float_tensors_and_quantize() -> None:
    m, _ = _single("QUANTIZE", [(1, 8)], (1, 8), in_dtype="float32")
    g = load_tflite_bytes(m, "q.tflite")
    assert g.tensors[g.inputs[0]].dtype == FLOAT32 and g.tensors[g.inputs[0]].quant is None
    m, _ = _single("DEQUANTIZE", [(1, 8)], (1, 8), out_dtype="float32")
    g = load_tflite_bytes(m, "dq.tflite")
    assert g.tensors[g.outputs[0]].dtype == FLOAT32


def test_int4_weights_are_unpacked() -> None:
    b = TFLiteBuilder()
    x = b.tensor("x", (1, 5), "int8", scale=0.1, zero_point=0)
    wv = np.array([[-8, 7, 0, -1, 3], [1, 2, -3, 4, -5], [6, -7, 5, -2, 0]], np.int8)
    w = b.tensor("w", (3, 5), "int4", data=wv, scale=0.5, zero_point=0)
    y = b.tensor("y", (1, 3), "int8", scale=0.3, zero_point=0)
    b.op("FULLY_CONNECTED", [x, w], [y])
    g = load_tflite_bytes(b.build([x], [y]), "int4.tflite")
    t = g.tensors["w"]
    assert t.dtype.name == "int4" and t.dtype.bits == 4
    np.testing.assert_array_equal(t.data, wv)


def test_duplicate_and_empty_tensor_names_are_made_unique() -> None:
    b = TFLiteBuilder()
    x = b.tensor("t", (1, 4), "int8", scale=0.1, zero_point=0)
    h = b.tensor("t", (1, 4), "int8", scale=0.1, zero_point=0)
    y = b.tensor("", (1, 4), "int8", scale=0.1, zero_point=0)
    z = b.tensor("t_1", (1, 4), "int8", scale=0.1, zero_point=0)
    b.op("RELU", [x], [h])
    b.op("RELU", [h], [y])
    b.op("RELU", [y], [z])
    g = load_tflite_bytes(b.build([x], [z]), "dup.tflite")
    assert g.inputs == ["t"]
    assert [op.outputs[0] for op in g.ops] == ["t_2", "tensor_2", "t_1"]
    assert [op.inputs[0] for op in g.ops] == ["t", "t_2", "tensor_2"]
    # Deterministic: a second import gives the same names.
    g2 = load_tflite_bytes(b.build([x], [z]), "dup.tflite")
    assert list(g2.tensors) == list(g.tensors)


def test_load_from_path(tmp_path) -> None:
    p = tmp_path / "model.tflite"
    p.write_bytes(CASES[0].model)
    g = load_tflite(p)
    assert g.metadata == {
        "source": "model.tflite",
        "format": "tflite",
        "sha256": hashlib.sha256(CASES[0].model).hexdigest(),
        "description": "mcusim test model",
    }
    assert g.name == "model"


# -- errors ------------------------------------------------------------------------------
def _relu_builder() -> tuple[TFLiteBuilder, int, int]:
    b = TFLiteBuilder()
    x = b.tensor("x", (1, 4), "int8", scale=0.1, zero_point=0)
    y = b.tensor("y", (1, 4), "int8", scale=0.1, zero_point=0)
    b.op("RELU", [x], [y])
    return b, x, y


@pytest.mark.parametrize(
    "data, pattern",
    [
        (b"", "file is empty"),
        (b"\x00\x01", "truncated"),
        (b"this is not a tflite model at all", "not a TFLite model"),
        (
            np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes(),
            "not a TFLite model",
        ),
    ],
)
def test_garbage_is_a_model_format_error(data: bytes, pattern: str) -> None:
    with pytest.raises(ModelFormatError, match=pattern) as e:
        load_tflite_bytes(data, "bad.tflite")
    assert str(e.value).startswith("bad.tflite: ")


def test_truncated_model_is_a_model_format_error() -> None:
    data = CASES[0].model
    for cut in (8, 16, len(data) // 3, len(data) // 2, len(data) - 40):
        with pytest.raises(ModelFormatError, match="^cut.tflite: "):
            load_tflite_bytes(data[:cut], "cut.tflite")


def test_missing_file(tmp_path) -> None:
    with pytest.raises(ModelFormatError, match="cannot read"):
        load_tflite(tmp_path / "nope.tflite")


def test_corrupted_bytes_never_raise_raw_exceptions() -> None:
    """Random corruption of a real-format file ends in a UserError or a valid graph."""
    data = CASES[0].model
    rng = np.random.default_rng(5)
    outcomes = Counter()
    for i in range(300):
        b = bytearray(data)
        if i % 2:
            for _ in range(int(rng.integers(1, 12))):
                b[int(rng.integers(8, len(b)))] = int(rng.integers(0, 256))
        else:
            b = b[: int(rng.integers(0, len(b)))]
        try:
            load_tflite_bytes(bytes(b), "fuzz.tflite")
            outcomes["ok"] += 1
        except UserError as e:
            assert str(e).startswith("fuzz.tflite: ")
            outcomes[type(e).__name__] += 1
    assert outcomes["ModelFormatError"] > 100


def test_two_subgraphs() -> None:
    b, x, y = _relu_builder()
    b.extra_subgraphs = 1
    with pytest.raises(ModelFormatError, match="2 subgraphs"):
        load_tflite_bytes(b.build([x], [y]), "two.tflite")


def test_bad_buffer_index() -> None:
    b = TFLiteBuilder()
    x = b.tensor("x", (1, 4), "int8", scale=0.1, zero_point=0)
    w = b.tensor("w", (2, 4), "int8", data=np.ones((2, 4)), scale=0.1, zero_point=0)
    y = b.tensor("y", (1, 2), "int8", scale=0.1, zero_point=0)
    b.op("FULLY_CONNECTED", [x, w], [y])
    b.buffer_index_override[w] = 99
    with pytest.raises(ModelFormatError, match="tensor 'w' refers to buffer 99"):
        load_tflite_bytes(b.build([x], [y]), "buf.tflite")


def test_wrong_buffer_size() -> None:
    b = TFLiteBuilder()
    x = b.tensor("x", (1, 4), "int8", scale=0.1, zero_point=0)
    w = b.tensor("w", (2, 4), "int8", data=np.ones((2, 4)), scale=0.1, zero_point=0)
    b.tensors[w].shape = (2, 5)  # data no longer matches the declared shape
    y = b.tensor("y", (1, 2), "int8", scale=0.1, zero_point=0)
    b.op("FULLY_CONNECTED", [x, w], [y])
    with pytest.raises(ModelFormatError, match="tensor 'w': buffer has 8 bytes, 10 expected"):
        load_tflite_bytes(b.build([x], [y]), "size.tflite")


@pytest.mark.parametrize("dtype", ["float16", "bool", "string"])
def test_unsupported_tensor_type(dtype: str) -> None:
    b = TFLiteBuilder()
    x = b.tensor("x", (1, 4), dtype)
    y = b.tensor("y", (1, 4), dtype)
    b.op("RELU", [x], [y])
    with pytest.raises(ModelFormatError, match=f"tensor 'x' has unsupported type {dtype.upper()}"):
        load_tflite_bytes(b.build([x], [y]), "type.tflite")


def test_unsupported_builtin_op_names_op_index_and_tensors() -> None:
    b, x, y = _relu_builder()
    z = b.tensor("z", (1, 4), "int8", scale=0.1, zero_point=0)
    b.op("LSTM", [y], [z], dict(fused_activation="TANH", cell_clip=0.0))
    with pytest.raises(UnsupportedOpError) as e:
        load_tflite_bytes(b.build([x], [z]), "lstm.tflite")
    msg = str(e.value)
    assert msg.startswith("lstm.tflite: ")
    assert "operator #1 LSTM" in msg and "inputs: y" in msg and "outputs: z" in msg


def test_unsupported_custom_op() -> None:
    b, x, y = _relu_builder()
    z = b.tensor("z", (1, 4), "int8", scale=0.1, zero_point=0)
    b.op("CUSTOM", [y], [z], custom_code="MyFancyOp", custom_options=b"\x01\x02")
    with pytest.raises(UnsupportedOpError, match=r"operator #1 CUSTOM\(MyFancyOp\)"):
        load_tflite_bytes(b.build([x], [z]), "custom.tflite")


def test_new_builtin_code_above_127_uses_builtin_code_field() -> None:
    b, x, y = _relu_builder()
    z = b.tensor("z", (1, 4), "int8", scale=0.1, zero_point=0)
    b.op("GELU", [y], [z])  # code 150: deprecated field holds 127 (placeholder)
    with pytest.raises(UnsupportedOpError, match="operator #1 GELU"):
        load_tflite_bytes(b.build([x], [z]), "gelu.tflite")


def test_unsupported_fused_activation() -> None:
    m, _ = _single("ADD", [(1, 4), (1, 4)], (1, 4), dict(fused_activation="TANH"))
    with pytest.raises(UnsupportedOpError, match="operator #0 ADD: fused activation TANH"):
        load_tflite_bytes(m, "act.tflite")


@pytest.mark.parametrize("mask", ["ellipsis_mask", "new_axis_mask", "offset"])
def test_strided_slice_ellipsis_new_axis_and_offset_rejected(mask: str) -> None:
    consts = [
        (n, np.array(v, np.int32), "int32")
        for n, v in (("begin", [0, 0]), ("end", [1, 2]), ("strides", [1, 1]))
    ]
    m, _ = _single("STRIDED_SLICE", [(1, 4)], (1, 2), {mask: 1}, consts)
    pattern = "offset=true" if mask == "offset" else f"{mask}=1"
    with pytest.raises(UnsupportedOpError, match=f"STRIDED_SLICE: {pattern} is not supported"):
        load_tflite_bytes(m, "ss.tflite")


def test_non_constant_paddings_rejected() -> None:
    b = TFLiteBuilder()
    x = b.tensor("x", (1, 4), "int8", scale=0.1, zero_point=0)
    p = b.tensor("p", (2, 2), "int32")
    y = b.tensor("y", (1, 6), "int8", scale=0.1, zero_point=0)
    b.op("PAD", [x, p], [y])
    with pytest.raises(UnsupportedOpError, match="non-constant paddings"):
        load_tflite_bytes(b.build([x, p], [y]), "pad.tflite")


def test_inconsistent_shapes_are_graph_errors_naming_file_and_layer() -> None:
    m, _ = _single(
        "CONV_2D",
        [(1, 8, 8, 3)],
        (1, 8, 8, 4),
        dict(padding="VALID"),
        const_inputs=[("w", _rand((4, 3, 3, 3)), "int8")],
    )
    with pytest.raises(GraphError) as e:
        load_tflite_bytes(m, "conv.tflite")
    msg = str(e.value)
    assert msg.startswith("conv.tflite: layer #0 out (conv2d): ")
    assert "expected [1, 6, 6, 4]" in msg


def test_per_channel_scale_count_must_match_dimension() -> None:
    b = TFLiteBuilder()
    x = b.tensor("x", (1, 4), "int8", scale=0.1, zero_point=0)
    w = b.tensor(
        "w",
        (2, 4),
        "int8",
        data=np.ones((2, 4)),
        scale=[0.1, 0.2, 0.3],
        zero_point=0,
        quantized_dimension=0,
    )
    y = b.tensor("y", (1, 2), "int8", scale=0.1, zero_point=0)
    b.op("FULLY_CONNECTED", [x, w], [y])
    with pytest.raises(ModelFormatError, match="3 per-channel scales on dimension 0"):
        load_tflite_bytes(b.build([x], [y]), "q.tflite")


def test_unused_tensor_of_unsupported_type_is_ignored() -> None:
    b, x, y = _relu_builder()
    b.tensor("leftover", (2,), "float16")
    g = load_tflite_bytes(b.build([x], [y]), "unused.tflite")
    assert set(g.tensors) == {"x", "y"}


def test_unsupported_op_reported_before_tensor_problems() -> None:
    b = TFLiteBuilder()
    x = b.tensor("x", (1, 4), "float16")
    y = b.tensor("y", (1, 4), "float16")
    b.op("SIN", [x], [y])
    with pytest.raises(UnsupportedOpError, match="operator #0 SIN"):
        load_tflite_bytes(b.build([x], [y]), "sin.tflite")


def test_int64_shape_constant_becomes_int32() -> None:
    m, _ = _single(
        "RESHAPE", [(1, 2, 3)], (6,), const_inputs=[("shape", np.array([6], np.int64), "int64")]
    )
    g = load_tflite_bytes(m, "r64.tflite")
    t = g.tensors["shape"]
    assert t.dtype == INT32 and t.data.dtype == np.int32 and t.data.tolist() == [6]
    assert g.ops[0].attrs == ReshapeAttrs((6,))


def test_depthwise_multiplier_comes_from_shapes() -> None:
    """Old converters wrote depth_multiplier 0; the weight shape defines it."""
    b = TFLiteBuilder()
    x = b.tensor("x", (1, 4, 4, 2), "int8", scale=0.1, zero_point=0)
    w = b.tensor("w", (1, 1, 1, 6), "int8", data=np.ones((1, 1, 1, 6)), scale=0.1, zero_point=0)
    y = b.tensor("y", (1, 4, 4, 6), "int8", scale=0.1, zero_point=0)
    b.op("DEPTHWISE_CONV_2D", [x, w], [y], dict(padding="VALID", depth_multiplier=0))
    g = load_tflite_bytes(b.build([x], [y]), "dw.tflite")
    assert g.ops[0].attrs.depth_multiplier == 3


def test_options_of_the_wrong_table_type() -> None:
    b = TFLiteBuilder()
    x = b.tensor("x", (1, 4, 4, 2), "int8", scale=0.1, zero_point=0)
    y = b.tensor("y", (1, 2, 2, 2), "int8", scale=0.1, zero_point=0)
    b.op("MAX_POOL_2D", [x], [y], dict(axis=1), options_table="ConcatenationOptions")
    with pytest.raises(ModelFormatError, match="operator #0 MAX_POOL_2D has builtin options of"):
        load_tflite_bytes(b.build([x], [y]), "opt.tflite")


def test_external_buffers_read_like_inline_ones() -> None:
    """Buffers stored after the flatbuffer (offset/size, >2 GB layout) give the same data.

    TFLM itself does not read this layout, so the inline model is the reference."""
    b = TFLiteBuilder()
    x = b.tensor("x", (1, 4), "int8", scale=0.1, zero_point=0)
    wv = RNG.integers(-127, 128, (3, 4))
    w = b.tensor("w", (3, 4), "int8", data=wv, scale=0.01, zero_point=0)
    bias = b.tensor("b", (3,), "int32", data=[-70000, 5, 123456], scale=0.001, zero_point=0)
    y = b.tensor("y", (1, 3), "int8", scale=0.2, zero_point=0)
    b.op("FULLY_CONNECTED", [x, w, bias], [y])
    inline = load_tflite_bytes(b.build([x], [y]), "inline.tflite")
    data = b.build([x], [y], external_buffers=True)
    ext = load_tflite_bytes(data, "ext.tflite")
    for n in ("w", "b"):
        np.testing.assert_array_equal(ext.tensors[n].data, inline.tensors[n].data)
    np.testing.assert_array_equal(ext.tensors["w"].data, wv)
    assert ext.tensors["b"].data.tolist() == [-70000, 5, 123456]
    # Pointing past the end of the file is a format error.
    with pytest.raises(ModelFormatError, match="lies beyond the end of file"):
        load_tflite_bytes(data[: len(data) - 16], "ext.tflite")


def test_shuffled_fc_weights_rejected() -> None:
    b = TFLiteBuilder()
    x = b.tensor("x", (1, 16), "int8", scale=0.1, zero_point=0)
    w = b.tensor("w", (4, 16), "int8", data=np.ones((4, 16)), scale=0.1, zero_point=0)
    y = b.tensor("y", (1, 4), "int8", scale=0.1, zero_point=0)
    b.op("FULLY_CONNECTED", [x, w], [y], dict(weights_format="SHUFFLED4x16INT8"))
    with pytest.raises(UnsupportedOpError, match="FULLY_CONNECTED: shuffled weights format"):
        load_tflite_bytes(b.build([x], [y]), "fc.tflite")


def test_conv_without_options_is_a_format_error() -> None:
    b = TFLiteBuilder()
    x = b.tensor("x", (1, 4, 4, 1), "int8", scale=0.1, zero_point=0)
    w = b.tensor("w", (1, 1, 1, 1), "int8", data=np.ones((1, 1, 1, 1)), scale=0.1, zero_point=0)
    y = b.tensor("y", (1, 4, 4, 1), "int8", scale=0.1, zero_point=0)
    b.op("CONV_2D", [x, w], [y])
    b.ops[0].options_table = None  # drop the options table entirely
    with pytest.raises(ModelFormatError, match="operator #0 CONV_2D has no builtin options"):
        load_tflite_bytes(b.build([x], [y]), "conv.tflite")
