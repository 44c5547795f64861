"""The .qnn model file: exact round trips, sub-byte packing and every refusal it promises.

Packed bytes below are worked out by hand from the rule in docs/qnn-format.md (element i at
bits [i*bits, (i+1)*bits) of an LSB-first bit stream), not produced by the code under test.
"""

from __future__ import annotations

import dataclasses
import io
import json
import pickle
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

import mcusim
from mcusim import qnn
from mcusim.dtypes import BINARY, ELEM_TYPES, FLOAT32, INT8, INT32, ElemType, Quant, elem_type
from mcusim.errors import GraphError, ModelFormatError, UnsupportedOpError
from mcusim.graph import Graph, Op, Tensor
from mcusim.ops import (
    OPS,
    ConcatAttrs,
    Conv2DAttrs,
    DepthwiseConv2DAttrs,
    ElementwiseAttrs,
    FullyConnectedAttrs,
    MeanAttrs,
    OpDef,
    PadAttrs,
    Pool2DAttrs,
    ReshapeAttrs,
    SoftmaxAttrs,
    StridedSliceAttrs,
    TransposeAttrs,
)

from conftest import SHARED_MODELS, model_path

RNG_SEED = 20261121


# --------------------------------------------------------------------------------------
# Graph builders (shapes follow TFLite conventions so that Graph.validate() passes)


def _q(scale: Any, zp: Any = 0, axis: int | None = None) -> Quant:
    return Quant(np.asarray(scale, dtype=np.float32), np.asarray(zp, dtype=np.int64), axis)


def _const(name: str, data: np.ndarray, dtype: ElemType = INT8, quant: Quant | None = None):
    return Tensor(name, tuple(data.shape), dtype, quant, np.ascontiguousarray(data))


def _act(name: str, shape: tuple[int, ...], scale: float, zp: int, dtype=INT8) -> Tensor:
    return Tensor(name, shape, dtype, _q([scale], [zp]))


def _graph(tensors: list[Tensor], ops: list[Op], inputs, outputs, name, metadata=None):
    return Graph({t.name: t for t in tensors}, ops, inputs, outputs, name, metadata or {})


def cnn_graph() -> Graph:
    """conv, depthwise (both per-channel) -> add -> avgpool -> reshape -> fc -> softmax."""
    rng = np.random.default_rng(RNG_SEED)
    in_scale = np.float32(0.0473)
    x = _act("input", (1, 8, 8, 3), in_scale, -5)
    w_scale = rng.uniform(0.001, 0.02, 4).astype(np.float32)
    w = _const(
        "conv/weights",
        rng.integers(-127, 128, (4, 3, 3, 3), dtype=np.int8),
        quant=_q(w_scale, np.zeros(4), 0),
    )
    b = _const(
        "conv/bias",
        rng.integers(-5000, 5000, 4, dtype=np.int32),
        INT32,
        _q(in_scale * w_scale, np.zeros(4), 0),
    )
    c1 = _act("conv/out", (1, 4, 4, 4), 0.0235, -128)
    dw_scale = rng.uniform(0.001, 0.02, 4).astype(np.float32)
    dw = _const(
        "dw/weights",
        rng.integers(-127, 128, (1, 3, 3, 4), dtype=np.int8),
        quant=_q(dw_scale, np.zeros(4), 3),
    )
    db = _const(
        "dw/bias",
        rng.integers(-3000, 3000, 4, dtype=np.int32),
        INT32,
        _q(np.float32(0.0235) * dw_scale, np.zeros(4), 0),
    )
    d1 = _act("dw/out", (1, 4, 4, 4), 0.031, 3)
    a1 = _act("add/out", (1, 4, 4, 4), 0.05, -10)
    p1 = _act("pool/out", (1, 2, 2, 4), 0.05, -10)
    shp = _const("reshape/shape", np.array([1, 16], dtype=np.int32), INT32)
    r1 = _act("reshape/out", (1, 16), 0.05, -10)
    fw = _const(
        "fc/weights", rng.integers(-127, 128, (10, 16), dtype=np.int8), quant=_q([0.0071], [0])
    )
    fb = _const(
        "fc/bias",
        rng.integers(-900, 900, 10, dtype=np.int32),
        INT32,
        _q([np.float32(0.05) * np.float32(0.0071)], [0]),
    )
    f1 = _act("fc/out", (1, 10), 0.17, 12)
    out = _act("probs", (1, 10), 1.0 / 256, -128)
    ops = [
        Op("conv2d", "conv", ["input", "conv/weights", "conv/bias"], ["conv/out"],
           Conv2DAttrs((2, 2), (1, 1), "same", "relu6"), "W8A8", "cpu", 0),
        Op("depthwise_conv2d", "dw", ["conv/out", "dw/weights", "dw/bias"], ["dw/out"],
           DepthwiseConv2DAttrs((1, 1), (1, 1), "same", "relu", 1), "W8A8", "npu", 1),
        Op("add", "add", ["conv/out", "dw/out"], ["add/out"], ElementwiseAttrs("none"), None,
           None, 2),
        Op("avg_pool2d", "pool", ["add/out"], ["pool/out"],
           Pool2DAttrs((2, 2), (2, 2), "valid", "none"), source_index=3),
        Op("reshape", "reshape", ["pool/out", "reshape/shape"], ["reshape/out"],
           ReshapeAttrs((1, 16)), source_index=4),
        Op("fully_connected", "fc", ["reshape/out", "fc/weights", "fc/bias"], ["fc/out"],
           FullyConnectedAttrs("none", False), "W8A8", None, 5),
        Op("softmax", "softmax", ["fc/out"], ["probs"], SoftmaxAttrs(1.0), source_index=6),
    ]  # fmt: skip
    tensors = [x, w, b, c1, dw, db, d1, a1, p1, shp, r1, fw, fb, f1, out]
    meta = {
        "source": "built in tests/test_qnn.py",
        "producer": {"tool": "pytest", "version": 3},
        "values": [1, 2.5, "x", None, True, {"nested": [[-1, 0]]}],
    }
    return _graph(tensors, ops, ["input"], ["probs"], "tiny_cnn", meta)


def misc_graph() -> Graph:
    """pad, transpose, strided_slice, mean, concat, mul, logistic, dequantize."""
    x = _act("x", (1, 4, 4, 2), 0.02, 1)
    y = _act("y", (1, 3), 0.04, -3)
    pads = _const("pads", np.array([[0, 0], [1, 1], [1, 1], [0, 0]], dtype=np.int32), INT32)
    p = _act("padded", (1, 6, 6, 2), 0.02, 1)
    perm = _const("perm", np.array([0, 3, 1, 2], dtype=np.int32), INT32)
    t = _act("transposed", (1, 2, 6, 6), 0.02, 1)
    begin = _const("begin", np.array([0, 0, 1, 1], dtype=np.int32), INT32)
    end = _const("end", np.array([1, 2, 5, 5], dtype=np.int32), INT32)
    strides = _const("strides", np.array([1, 1, 2, 2], dtype=np.int32), INT32)
    s = _act("sliced", (1, 2, 2, 2), 0.02, 1)
    axes = _const("axes", np.array([2, 3], dtype=np.int32), INT32)
    m = _act("mean", (1, 2), 0.015, 0)
    c = _act("concat", (1, 5), 0.04, -3)
    k = _const("k", np.array([[3, -7, 100, -128, 127]], dtype=np.int8), quant=_q([0.01], [0]))
    mu = _act("mul", (1, 5), 0.03, 4)
    lg = _act("sigmoid", (1, 5), 1.0 / 256, -128)
    f = Tensor("float_out", (1, 5), FLOAT32)
    ops = [
        Op("pad", "pad", ["x", "pads"], ["padded"], PadAttrs(((0, 0), (1, 1), (1, 1), (0, 0)))),
        Op("transpose", "transpose", ["padded", "perm"], ["transposed"],
           TransposeAttrs((0, 3, 1, 2))),
        Op("strided_slice", "slice", ["transposed", "begin", "end", "strides"], ["sliced"],
           StridedSliceAttrs((0, 0, 1, 1), (1, 2, 5, 5), (1, 1, 2, 2), ())),
        Op("mean", "mean", ["sliced", "axes"], ["mean"], MeanAttrs((2, 3), False)),
        Op("concat", "concat", ["mean", "y"], ["concat"], ConcatAttrs(1, "none")),
        Op("mul", "mul", ["concat", "k"], ["mul"], ElementwiseAttrs("relu")),
        Op("logistic", "sigmoid", ["mul"], ["sigmoid"], OPS["logistic"].attrs()),
        Op("dequantize", "deq", ["sigmoid"], ["float_out"], OPS["dequantize"].attrs()),
    ]  # fmt: skip
    tensors = [x, y, pads, p, perm, t, begin, end, strides, s, axes, m, c, k, mu, lg, f]
    return _graph(tensors, ops, ["x", "y"], ["float_out"], "misc_ops")


SUBBYTE = ["int2", "uint2", "int3", "uint3", "int4", "uint4", "int5", "int6", "uint7", "binary"]


def subbyte_graph() -> Graph:
    """A reshape plus unused constants of every sub-byte type (odd sizes: partial last byte)."""
    rng = np.random.default_rng(RNG_SEED + 1)
    tensors = [_act("in", (1, 2, 3), 0.1, 0), _act("out", (1, 6), 0.1, 0)]
    for i, name in enumerate(SUBBYTE):
        t = elem_type(name)
        shape = (3, 1 + i, 5)
        if t.binary:
            data = rng.choice(np.array([-1, 1], dtype=np.int8), shape)
        else:
            data = rng.integers(t.min, t.max + 1, shape).astype(t.np_dtype)
        tensors.append(_const(f"w_{name}", data, t, _q([0.5 + i], [0])))
    ops = [Op("reshape", "flatten", ["in"], ["out"], ReshapeAttrs((1, 6)))]
    return _graph(tensors, ops, ["in"], ["out"], "subbyte")


# --------------------------------------------------------------------------------------
# Exact comparison


def _plain(value: Any) -> Any:
    """Metadata as JSON gives it back (tuples become lists)."""
    return json.loads(json.dumps(value))


def assert_graphs_equal(a: Graph, b: Graph) -> None:
    assert (a.name, a.inputs, a.outputs) == (b.name, b.inputs, b.outputs)
    assert _plain(a.metadata) == b.metadata
    assert list(a.tensors) == list(b.tensors)
    for name, ta in a.tensors.items():
        tb = b.tensors[name]
        assert tb.name == ta.name
        assert tuple(ta.shape) == tb.shape and all(type(d) is int for d in tb.shape), name
        assert ta.dtype == tb.dtype, name
        assert (ta.quant is None) == (tb.quant is None), name
        if ta.quant is not None:
            assert ta.quant.axis == tb.quant.axis, name
            assert tb.quant.scale.dtype == np.float32
            assert np.array_equal(ta.quant.scale.view(np.uint32), tb.quant.scale.view(np.uint32))
            assert np.array_equal(ta.quant.zero_point, tb.quant.zero_point), name
        assert (ta.data is None) == (tb.data is None), name
        if ta.data is not None:
            assert tb.data.dtype == ta.data.dtype == ta.dtype.np_dtype, name
            assert tb.data.shape == ta.data.shape and tb.data.flags.c_contiguous, name
            assert np.array_equal(ta.data, tb.data), name
    assert len(a.ops) == len(b.ops)
    for oa, ob in zip(a.ops, b.ops, strict=True):
        assert (oa.kind, oa.name, oa.inputs, oa.outputs) == (
            ob.kind,
            ob.name,
            ob.inputs,
            ob.outputs,
        )
        assert type(oa.attrs) is type(ob.attrs) and oa.attrs == ob.attrs, oa.name
        assert (oa.precision, oa.placement, oa.source_index) == (
            ob.precision,
            ob.placement,
            ob.source_index,
        )


# --------------------------------------------------------------------------------------
# Zip surgery helpers


def _members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def _zip(entries: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name" is what one test wants
        with zipfile.ZipFile(buf, "w", method) as zf:
            for name, payload in entries:
                info = zipfile.ZipInfo(name)
                info.compress_type = method
                zf.writestr(info, payload)
    return buf.getvalue()


def _rezip(data: bytes, replace: dict[str, bytes | None] | None = None, add=()) -> bytes:
    replace = replace or {}
    entries = [
        (n, replace.get(n, p)) for n, p in _members(data).items() if replace.get(n, p) is not None
    ]
    return _zip(entries + list(add))


def _manifest(data: bytes) -> dict[str, Any]:
    return json.loads(_members(data)[qnn.MANIFEST])


def _edit(data: bytes, fn: Callable[[dict[str, Any]], None]) -> bytes:
    m = _manifest(data)
    fn(m)
    return _rezip(data, {qnn.MANIFEST: json.dumps(m).encode()})


def _npy(arr: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def _member_of(data: bytes, tensor: str) -> str:
    m = _manifest(data)
    return next(t for t in m["graph"]["tensors"] if t["name"] == tensor)["constant"]["member"]


def _tensor_entry(m: dict[str, Any], tensor: str) -> dict[str, Any]:
    return next(t for t in m["graph"]["tensors"] if t["name"] == tensor)


def _fails(data: bytes, *fragments: str, exc: type = ModelFormatError, **kw) -> str:
    with pytest.raises(exc) as info:
        qnn.loads(data, name="bad.qnn", **kw)
    msg = str(info.value)
    assert msg.startswith("bad.qnn: "), msg
    assert "\n" not in msg
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"
    return msg


# --------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("build", [cnn_graph, misc_graph, subbyte_graph])
def test_roundtrip_file_preserves_everything(build, tmp_path: Path) -> None:
    g = build().validate()
    path = tmp_path / f"{g.name}.qnn"
    qnn.save(g, path)
    g2 = qnn.load(path)
    assert_graphs_equal(g, g2)
    # Deterministic: the same graph gives the same bytes, also after a round trip.
    assert qnn.dumps(g2) == qnn.dumps(g) == path.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind


def test_container_layout() -> None:
    g = cnn_graph()
    data = qnn.dumps(g)
    names = list(_members(data))
    assert names[0] == "manifest.json"
    consts = [t for t in g.tensors.values() if t.is_const]
    assert sorted(names[1:]) == sorted(
        f"tensors/{list(g.tensors).index(t.name)}.npy" for t in consts
    )
    m = _manifest(data)
    assert (m["format"], m["format_version"]) == ("mcusim-qnn", 1)
    assert m["mcusim_version"] == mcusim.__version__
    conv = next(o for o in m["graph"]["ops"] if o["name"] == "conv")
    assert conv["attrs"] == {
        "stride": [2, 2], "dilation": [1, 1], "padding": "same", "activation": "relu6",
        "requant": "fixed_point", "output_shift": 0,
    }  # fmt: skip
    assert (conv["precision"], conv["placement"], conv["source_index"]) == ("W8A8", "cpu", 0)
    w = _tensor_entry(m, "dw/weights")
    assert w["quantization"]["axis"] == 3 and w["quantization"]["zero_point"] == [0, 0, 0, 0]
    assert w["constant"] == {"member": w["constant"]["member"], "storage": "npy"}
    # Each constant is a plain .npy that numpy reads without pickle.
    arr = np.load(io.BytesIO(_members(data)[w["constant"]["member"]]), allow_pickle=False)
    assert np.array_equal(arr, g.tensors["dw/weights"].data)
    jsonschema.validate(m, qnn.manifest_schema())


def test_float32_scales_roundtrip_bit_exactly() -> None:
    rng = np.random.default_rng(RNG_SEED)
    bits = rng.integers(1, 0x7F800000, 4000, dtype=np.uint32)  # positive finite incl. subnormal
    special = np.array([1, 0x007FFFFF, 0x00800000, 0x7F7FFFFF, 0x3DCCCCCD], dtype=np.uint32)
    scales = np.concatenate([bits, special]).view(np.float32)
    n = scales.size
    data = np.zeros((n, 1), dtype=np.int8)
    g = _graph(
        [_const("w", data, quant=_q(scales, np.arange(n) - 2000, 0)), _act("a", (1,), 1.0, 0)],
        [], ["a"], ["a"], "scales",
    )  # fmt: skip
    blob = qnn.dumps(g)
    g2 = qnn.loads(blob)
    assert np.array_equal(g2.tensors["w"].quant.scale.view(np.uint32), scales.view(np.uint32))
    assert np.array_equal(g2.tensors["w"].quant.zero_point, np.arange(n) - 2000)
    # The text holds the float32's exact double value: 0x3DCCCCCD is float32(0.1).
    text = _members(blob)[qnn.MANIFEST].decode()
    assert "0.10000000149011612" in text
    stored = np.array(_tensor_entry(_manifest(blob), "w")["quantization"]["scale"], np.float64)
    assert np.array_equal(stored, scales.astype(np.float64))


def test_attrs_of_every_op_kind_roundtrip() -> None:
    for kind, opdef in OPS.items():
        a = opdef.attrs()
        j = qnn.attrs_to_json(a)
        assert json.loads(json.dumps(j)) == j
        assert qnn.attrs_from_json(kind, j) == a, kind
    pad = PadAttrs(((0, 0), (2, 1), (1, 3), (0, 0)))
    j = qnn.attrs_to_json(pad)
    assert j == {"paddings": [[0, 0], [2, 1], [1, 3], [0, 0]]}
    back = qnn.attrs_from_json("pad", j)
    assert back == pad and isinstance(back.paddings, tuple) and isinstance(back.paddings[1], tuple)


@dataclass(frozen=True)
class _Inner:
    gain: float = 1.0
    taps: tuple[int, ...] = ()


@dataclass(frozen=True)
class _FutureAttrs:
    """An attrs class qnn.py has never seen: nested dataclass, optionals, fixed/var tuples."""

    window: tuple[int, int] = (1, 1)
    table: tuple[tuple[int, int], ...] = ()
    mode: str = "a"
    limit: int | None = None
    scale: float = 0.5
    flag: bool = False
    inner: _Inner = _Inner()
    names: list[str] | None = None


def test_attrs_generic_for_new_attrs_classes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(OPS, "future_op", OpDef("future_op", _FutureAttrs, (1, 1)))
    a = _FutureAttrs((3, 2), ((1, 2), (3, 4)), "b", 7, 0.25, True, _Inner(2.0, (5, 6, 7)), ["p"])
    j = json.loads(json.dumps(qnn.attrs_to_json(a)))
    back = qnn.attrs_from_json("future_op", j)
    assert back == a and isinstance(back.table[0], tuple) and isinstance(back.inner.taps, tuple)
    # A file written before a field existed: the missing field takes its default.
    del j["flag"]
    assert qnn.attrs_from_json("future_op", j).flag is False
    # int is accepted for a float field, nothing else is coerced.
    assert qnn.attrs_from_json("future_op", {"scale": 2}).scale == 2.0
    bad = [
        ({"window": [1]}, "attrs.window: expected 2 items, got 1"),
        ({"window": [1, "2"]}, "attrs.window[1]: expected int"),
        ({"window": [1, True]}, "attrs.window[1]: expected int"),
        ({"flag": 1}, "attrs.flag: expected bool"),
        ({"limit": 1.5}, "attrs.limit: expected int"),
        ({"limit": 1 << 64}, "attrs.limit: 18446744073709551616 does not fit in 64 bits"),
        ({"inner": {"gain": "x"}}, "attrs.inner.gain: expected float"),
        ({"inner": {"colour": 1}}, "unknown attribute 'colour' for _Inner"),
        ({"bogus": 1}, "unknown attribute 'bogus' for _FutureAttrs"),
        ({"table": [[1, 2], 3]}, "attrs.table[1]: expected a list"),
    ]
    for obj, fragment in bad:
        with pytest.raises(ValueError) as info:
            qnn.attrs_from_json("future_op", obj)
        assert fragment in str(info.value), (obj, str(info.value))


# --------------------------------------------------------------------------------------
# Sub-byte packing


# (type, values, packed bytes worked by hand)
HAND_PACKED = [
    # int4 codes 1, 0xE, 7, 0x8, 3 -> 0xE1, 0x87, 0x03
    ("int4", [1, -2, 7, -8, 3], [0xE1, 0x87, 0x03]),
    # uint4 15, 0 | 9 -> 0x0F, 0x09
    ("uint4", [15, 0, 9], [0x0F, 0x09]),
    # int2 codes 3,0,1,2 -> 3 | 0<<2 | 1<<4 | 2<<6 = 0x93; then 1
    ("int2", [-1, 0, 1, -2, 1], [0x93, 0x01]),
    # uint2 0,1,2,3 -> 0 | 1<<2 | 2<<4 | 3<<6 = 0xE4; then 3
    ("uint2", [0, 1, 2, 3, 3], [0xE4, 0x03]),
    # binary bits 1,0,0,1,1,1,0,1 -> 0b10111001 = 0xB9; then bits 0,1 -> 0x02
    ("binary", [1, -1, -1, 1, 1, 1, -1, 1, -1, 1], [0xB9, 0x02]),
    # int3 codes 4 (bits 0-2), 3 (bits 3-5), 1 (bits 6-8, straddles) -> 0x5C, 0x00
    ("int3", [-4, 3, 1], [0x5C, 0x00]),
    # uint3 codes 7, 5, 6 -> 7 | 5<<3 | 6<<6 = 0x1AF -> 0xAF, 0x01
    ("uint3", [7, 5, 6], [0xAF, 0x01]),
]


@pytest.mark.parametrize(("name", "values", "packed"), HAND_PACKED)
def test_pack_bits_hand_worked(name: str, values: list[int], packed: list[int]) -> None:
    t = elem_type(name)
    v = np.array(values, dtype=t.np_dtype)
    got = qnn.pack_bits(v, t)
    assert got.dtype == np.uint8 and got.tolist() == packed
    back = qnn.unpack_bits(np.array(packed, dtype=np.uint8), t, len(values))
    assert back.dtype == t.np_dtype and back.tolist() == values
    # And in the file: the member holds exactly those bytes, the manifest records the packing.
    g = _graph([_const("w", v.reshape(1, -1), t), _act("a", (1,), 1.0, 0)], [], ["a"], ["a"], "p")
    blob = qnn.dumps(g)
    entry = _tensor_entry(_manifest(blob), "w")["constant"]
    assert entry == {"member": "tensors/0.npy", "storage": "packed", "bits": t.bits,
                     "packing": "lsb_first"}  # fmt: skip
    raw = np.load(io.BytesIO(_members(blob)["tensors/0.npy"]), allow_pickle=False)
    assert raw.dtype == np.uint8 and raw.tolist() == packed
    assert qnn.loads(blob).tensors["w"].data.tolist() == [values]


@pytest.mark.parametrize("name", [n for n, t in ELEM_TYPES.items() if t.bits < 8])
def test_pack_bits_full_range_roundtrip(name: str) -> None:
    t = elem_type(name)
    rng = np.random.default_rng(RNG_SEED)
    for n in (0, 1, 7, 8, 9, 1001):
        if t.binary:
            v = rng.choice(np.array([-1, 1], dtype=np.int8), n)
        else:
            v = rng.integers(t.min, t.max + 1, n).astype(t.np_dtype)
        p = qnn.pack_bits(v, t)
        assert p.size == (n * t.bits + 7) // 8 == t.storage_bytes(n)
        assert np.array_equal(qnn.unpack_bits(p, t, n), v)
    every = np.arange(t.min, t.max + 1, 2 if t.binary else 1).astype(t.np_dtype)
    assert np.array_equal(qnn.unpack_bits(qnn.pack_bits(every, t), t, every.size), every)


def test_pack_bits_refuses_unrepresentable_values() -> None:
    with pytest.raises(ValueError, match="outside int4"):
        qnn.pack_bits(np.array([8], dtype=np.int8), elem_type("int4"))
    with pytest.raises(ValueError, match="outside uint2"):
        qnn.pack_bits(np.array([-1], dtype=np.int8), elem_type("uint2"))
    with pytest.raises(ValueError, match="only -1 and \\+1"):
        qnn.pack_bits(np.array([1, 0], dtype=np.int8), BINARY)
    g = _graph([_const("w", np.array([9], dtype=np.int8), elem_type("int4"))], [], [], [], "g")
    with pytest.raises(ModelFormatError, match="tensor 'w': value 9 is outside int4"):
        qnn.dumps(g)


def test_packed_padding_bits_must_be_zero() -> None:
    # int2 codes 1, 2, 1 -> 1 | 2<<2 | 1<<4 = 0x19; bits 6-7 are padding.
    w = _const("w", np.array([1, -2, 1], dtype=np.int8), elem_type("int2"))
    blob = qnn.dumps(_graph([w], [], [], [], "g"))
    assert np.load(io.BytesIO(_members(blob)["tensors/0.npy"])).tolist() == [0x19]
    _fails(
        _rezip(blob, {"tensors/0.npy": _npy(np.array([0x59], dtype=np.uint8))}),
        "tensor 'w': unused padding bits",
    )


# --------------------------------------------------------------------------------------
# Refusals: every one is a one-line ModelFormatError naming the file and what is wrong


@pytest.fixture(scope="module")
def good() -> bytes:
    return qnn.dumps(cnn_graph())


def test_not_a_zip(tmp_path: Path) -> None:
    _fails(b"this is not a zip file at all", "not a .qnn file", "not a readable zip")
    p = tmp_path / "model.qnn"
    p.write_bytes(b"TFL3 garbage")
    with pytest.raises(ModelFormatError, match=f"^{p}: not a .qnn file"):
        qnn.load(p)
    with pytest.raises(ModelFormatError, match="missing.qnn: no such file"):
        qnn.load(tmp_path / "missing.qnn")


def test_truncated_zip(good: bytes) -> None:
    _fails(good[: len(good) // 2], "not a readable zip")


def test_missing_manifest(good: bytes) -> None:
    _fails(_rezip(good, {"manifest.json": None}), "no manifest.json in the archive")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (b'{"format": "mcusim-qnn",', "manifest.json is not valid JSON: Expecting"),
        (b"\xff\xfe{}", "manifest.json is not UTF-8"),
        (b'{"a": NaN}', "NaN is not valid JSON"),
        (b'{"a": 1e400}', "number 1e400 is out of the range of a double"),
        (b'{"format": "mcusim-qnn", "format": "x"}', "duplicate key 'format'"),
        (b"[1, 2]", "manifest.json must hold a JSON object, not list"),
        (b'{"format": "onnx"}', "'format' is 'onnx', expected 'mcusim-qnn'"),
        (b"[" * 100000 + b"]" * 100000, "manifest.json is not valid JSON"),
    ],
    ids=["truncated", "not-utf8", "nan", "inf", "dup-key", "list", "format", "deep"],
)
def test_bad_manifest_json(good: bytes, text: bytes, fragment: str) -> None:
    _fails(_rezip(good, {"manifest.json": text}), fragment)


def test_newer_format_version_is_refused(good: bytes) -> None:
    def bump(m):
        m["format_version"] = 2
        m["graph"]["something_new"] = True

    _fails(_edit(good, bump), "format_version 2 is newer", "reads (up to 1); upgrade mcusim")


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (lambda m: m.pop("graph"), ["schema violation at $:", "'graph' is a required property"]),
        (lambda m: m.update(format_version=0), ["at $.format_version", "1 was expected"]),
        (
            lambda m: m["graph"]["tensors"][1].pop("dtype"),
            ["at $.graph.tensors[1] (tensor 'conv/weights')", "'dtype' is a required property"],
        ),
        (
            lambda m: m["graph"]["tensors"][0]["shape"].__setitem__(2, -8),
            ["at $.graph.tensors[0].shape[2] (tensor 'input')", "-8 is less than the minimum"],
        ),
        (
            lambda m: m["graph"]["tensors"][0]["shape"].__setitem__(0, 1 << 40),
            ["at $.graph.tensors[0].shape[0]", "is greater than the maximum of 2147483647"],
        ),
        (
            lambda m: m["graph"]["tensors"][1]["quantization"]["zero_point"].__setitem__(
                0, 1 << 63
            ),
            ["at $.graph.tensors[1].quantization.zero_point[0]", "greater than the maximum"],
        ),
        (
            lambda m: m["graph"]["tensors"][0].update(dtype="int9"),
            ["at $.graph.tensors[0].dtype (tensor 'input')", "'int9' is not one of"],
        ),
        (
            lambda m: m["graph"]["tensors"][1]["constant"].update(member="../../etc/passwd"),
            ["at $.graph.tensors[1].constant.member (tensor 'conv/weights')", "does not match"],
        ),
        (
            lambda m: m["graph"]["tensors"][1]["constant"].update(bits=4),
            [
                "at $.graph.tensors[1].constant.bits (tensor 'conv/weights')",
                "key 'bits' is not allowed: only with storage 'packed'",
            ],
        ),
        (
            lambda m: m["graph"]["ops"][2].update(attrs=[1]),
            ["at $.graph.ops[2].attrs (op 'add' add)", "[1] is not of type 'object'"],
        ),
        (
            lambda m: m["graph"]["ops"][0].update(colour="red"),
            ["at $.graph.ops[0] (op 'conv' conv2d)", "'colour' was unexpected"],
        ),
        (
            lambda m: m["graph"]["tensors"][0]["quantization"].update(scale=[]),
            ["at $.graph.tensors[0].quantization", "tensor 'input'"],
        ),
    ],
)
def test_schema_violations_name_the_json_path(good: bytes, edit, fragments: list[str]) -> None:
    _fails(_edit(good, edit), *fragments)


def test_missing_and_extra_tensor_members(good: bytes) -> None:
    member = _member_of(good, "fc/weights")
    _fails(
        _rezip(good, {member: None}),
        f"tensor 'fc/weights': member '{member}' is missing from the archive",
    )
    _fails(
        _rezip(good, add=[("tensors/999.npy", _npy(np.zeros(3, np.int8)))]),
        "unexpected member 'tensors/999.npy' (not referenced by manifest.json)",
    )
    _fails(_rezip(good, add=[("notes.txt", b"hi")]), "unexpected member 'notes.txt'")


def test_npy_shape_and_dtype_must_match_manifest(good: bytes) -> None:
    member = _member_of(good, "conv/weights")
    wrong_shape = _npy(np.zeros((4, 3, 3, 2), dtype=np.int8))
    _fails(
        _rezip(good, {member: wrong_shape}),
        f"tensor 'conv/weights': member '{member}' has shape (4, 3, 3, 2), manifest needs "
        "(4, 3, 3, 3)",
    )
    wrong_dtype = _npy(np.zeros((4, 3, 3, 3), dtype=np.int16))
    _fails(_rezip(good, {member: wrong_dtype}), "has dtype <i2, manifest needs |i1 for int8")
    big_endian = _npy(np.zeros(4, dtype=">i4"))
    _fails(_rezip(good, {_member_of(good, "conv/bias"): big_endian}), "has dtype >i4")
    trailing = _npy(np.zeros((4, 3, 3, 3), dtype=np.int8)) + b"\x00\x01"
    _fails(_rezip(good, {member: trailing}), "its header implies")
    _fails(_rezip(good, {member: b"\x93NUMPY garbage"}), "is not a valid .npy file")


def test_wrong_storage_for_dtype(good: bytes) -> None:
    def to_int4(m):
        _tensor_entry(m, "conv/weights")["dtype"] = "int4"

    _fails(_edit(good, to_int4), "tensor 'conv/weights': storage 'npy' is wrong for int4")
    sub = qnn.dumps(subbyte_graph())

    def wrong_bits(m):
        _tensor_entry(m, "w_int4")["constant"]["bits"] = 2

    _fails(_edit(sub, wrong_bits), "tensor 'w_int4': packed bits 2 differ from 4 of int4")
    packed_member = _member_of(sub, "w_int4")
    _fails(
        _rezip(sub, {packed_member: _npy(np.zeros(3, dtype=np.uint8))}),
        "has shape (3,), manifest needs (38,) (packed bytes)",
    )


class _Trap:
    """Unpickling this would create a file: proof that nothing was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_pickled_objects_are_refused(good: bytes, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    member = _member_of(good, "fc/weights")
    obj_arr = np.empty((10, 16), dtype=object)
    obj_arr[0, 0] = _Trap(marker)
    _fails(
        _rezip(good, {member: _npy(obj_arr, allow_pickle=True)}),
        f"tensor 'fc/weights': member '{member}' holds Python objects (a pickle); refused",
    )
    _fails(_rezip(good, {member: pickle.dumps(_Trap(marker))}), "is not a valid .npy file")
    assert not marker.exists()


@pytest.mark.parametrize("evil", ["../evil.npy", "tensors/../../evil.npy", "/etc/evil.npy",
                                  "tensors\\..\\evil.npy", "C:/evil.npy", ".."])  # fmt: skip
def test_zip_slip_members_are_refused(good: bytes, evil: str) -> None:
    _fails(_rezip(good, add=[(evil, b"x")]), f"unsafe member name {evil!r}", "refused")


def test_duplicate_member_names(good: bytes) -> None:
    member = _member_of(good, "fc/bias")
    _fails(
        _rezip(good, add=[(member, _npy(np.zeros(10, np.int32)))]),
        f"duplicate member name '{member}'",
    )
    _fails(_rezip(good, add=[("manifest.json", b"{}")]), "duplicate member name 'manifest.json'")


def test_size_limits_use_declared_sizes(good: bytes) -> None:
    sizes = {n: len(p) for n, p in _members(good).items()}
    biggest = max((n for n in sizes if n != "manifest.json"), key=sizes.get)
    _fails(
        good,
        f"member '{biggest}' declares {sizes[biggest]} bytes uncompressed, over the limit of "
        f"{sizes[biggest] - 1} bytes",
        limits=qnn.Limits(max_member_bytes=sizes[biggest] - 1),
    )
    total = sum(sizes.values())
    _fails(
        good,
        f"members declare {total} bytes uncompressed in total, over the limit of {total - 1}",
        limits=qnn.Limits(max_total_bytes=total - 1),
    )
    _fails(
        good,
        "member 'manifest.json' declares",
        limits=qnn.Limits(max_manifest_bytes=sizes["manifest.json"] - 1),
    )
    assert qnn.Limits() == qnn.Limits(512 << 20, 2 << 30, 64 << 20, 100_000)
    # A zip bomb: 520 MiB of zeros deflate to ~0.5 MiB; refused before inflating anything.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", b"{}")
        with zf.open("tensors/0.npy", "w", force_zip64=True) as f:
            chunk = bytes(1 << 20)
            for _ in range(520):
                f.write(chunk)
    bomb = buf.getvalue()
    assert len(bomb) < 1 << 20
    _fails(bomb, "member 'tensors/0.npy' declares 545259520 bytes uncompressed, over the limit")


def _patch_central_dir(blob: bytes, member: str, offset: int, value: int, size: int) -> bytes:
    """Overwrite a little-endian field of ``member``'s central directory entry."""
    eocd = blob.rindex(b"PK\x05\x06")
    pos = int.from_bytes(blob[eocd + 16 : eocd + 20], "little")
    out = bytearray(blob)
    while blob[pos : pos + 4] == b"PK\x01\x02":
        n, x, c = (int.from_bytes(blob[pos + k : pos + k + 2], "little") for k in (28, 30, 32))
        if blob[pos + 46 : pos + 46 + n] == member.encode():
            out[pos + offset : pos + offset + size] = value.to_bytes(size, "little")
            return bytes(out)
        pos += 46 + n + x + c
    raise AssertionError(f"{member} not in central directory")


def _with_declared_size(blob: bytes, member: str, size: int) -> bytes:
    return _patch_central_dir(blob, member, 24, size, 4)  # uncompressed size field


def test_encrypted_members_and_member_count(good: bytes) -> None:
    member = _member_of(good, "fc/weights")
    stored = _zip(list(_members(good).items()), method=zipfile.ZIP_STORED)
    _fails(_patch_central_dir(stored, member, 8, 0x1, 2), f"member '{member}' is encrypted")
    n = len(_members(good))
    _fails(good, f"zip has {n} members, limit is {n - 1}", limits=qnn.Limits(max_members=n - 1))


def test_lying_size_headers_are_caught(good: bytes) -> None:
    """Sizes declared in the central directory are what limits check; reads stay bounded."""
    members = _members(good)
    member = _member_of(good, "fc/weights")
    real = len(members[member])
    stored = _zip(list(members.items()), method=zipfile.ZIP_STORED)
    assert qnn.loads(stored).name == "tiny_cnn"
    _fails(_with_declared_size(stored, member, real + 4), f"member '{member}' holds {real} bytes, "
           f"header declares {real + 4}")  # fmt: skip
    _fails(_with_declared_size(stored, member, real - 4), f"member '{member}' is corrupt")


def test_unsupported_compression(good: bytes) -> None:
    blob = io.BytesIO()
    with zipfile.ZipFile(blob, "w") as zf:
        for n, p in _members(good).items():
            zf.writestr(zipfile.ZipInfo(n), p, compress_type=zipfile.ZIP_BZIP2)
    _fails(blob.getvalue(), "uses compression method 12; only stored (0) and deflate (8)")


def test_scales_must_be_float32_values(good: bytes) -> None:
    def inexact(m):
        _tensor_entry(m, "input")["quantization"]["scale"] = [0.1]

    _fails(
        _edit(good, inexact),
        "tensor 'input': quantization scale[0] = 0.1 is not exactly a float32 value",
    )


def test_quantization_consistency(good: bytes) -> None:
    def short(m):
        q = _tensor_entry(m, "conv/weights")["quantization"]
        q["scale"] = q["scale"][:3]
        q["zero_point"] = q["zero_point"][:3]

    _fails(_edit(good, short), "tensor 'conv/weights': 3 per-channel scales but shape")

    def zp_mismatch(m):
        _tensor_entry(m, "conv/weights")["quantization"]["zero_point"] = [0, 0]

    _fails(_edit(good, zp_mismatch), "quantization scale and zero_point lengths differ")

    def axis_out(m):
        _tensor_entry(m, "conv/weights")["quantization"]["axis"] = 4

    _fails(_edit(good, axis_out), "quantization axis 4 is out of range")


def test_op_and_tensor_cross_references(good: bytes) -> None:
    def dup_tensor(m):
        m["graph"]["tensors"][3]["name"] = "input"

    _fails(_edit(good, dup_tensor), "tensor name 'input' appears twice")

    def shared_member(m):
        a = _tensor_entry(m, "conv/bias")["constant"]
        _tensor_entry(m, "dw/bias")["constant"]["member"] = a["member"]

    _fails(_edit(good, shared_member), "tensors 'conv/bias' and 'dw/bias' both use member")

    def unknown_kind(m):
        m["graph"]["ops"][2]["kind"] = "frobnicate"

    _fails(
        _edit(good, unknown_kind),
        "layer add (frobnicate): op kind 'frobnicate' is not known",
        exc=UnsupportedOpError,
    )

    def bad_attr(m):
        m["graph"]["ops"][0]["attrs"]["stride"] = [2, "2"]

    _fails(_edit(good, bad_attr), "layer conv (conv2d): bad attributes: attrs.stride[1]")

    def extra_attr(m):
        m["graph"]["ops"][0]["attrs"]["groups"] = 2

    _fails(_edit(good, extra_attr), "unknown attribute 'groups' for Conv2DAttrs")

    def dangling(m):
        m["graph"]["ops"][3]["inputs"] = ["nowhere"]

    msg = _fails(_edit(good, dangling), "'nowhere'", exc=GraphError)
    assert "pool" in msg


def test_load_without_validation_still_checks_the_format(good: bytes) -> None:
    def dangling(m):
        m["graph"]["ops"][3]["inputs"] = ["nowhere"]

    g = qnn.loads(_edit(good, dangling), validate=False)
    assert g.ops[3].inputs == ["nowhere"]


def test_save_refuses_graphs_it_cannot_represent(tmp_path: Path) -> None:
    g = cnn_graph()
    g.tensors["conv/bias"].data = g.tensors["conv/bias"].data.astype(np.int64)
    with pytest.raises(ModelFormatError, match="tensor 'conv/bias': data dtype int64 differs"):
        qnn.save(g, tmp_path / "x.qnn")
    g = cnn_graph()
    g.metadata["when"] = object()
    with pytest.raises(
        ModelFormatError, match="metadata.when: a value of type object cannot be stored"
    ):
        qnn.save(g, tmp_path / "x.qnn")
    g = cnn_graph()
    g.metadata["nan"] = float("nan")
    with pytest.raises(ModelFormatError, match="metadata.nan: nan cannot be stored"):
        qnn.save(g, tmp_path / "x.qnn")
    g = cnn_graph()
    g.ops[0].attrs = FullyConnectedAttrs()
    with pytest.raises(ModelFormatError, match="attributes are FullyConnectedAttrs"):
        qnn.save(g, tmp_path / "x.qnn")
    g = cnn_graph()
    g.ops[1].placement = 3
    with pytest.raises(ModelFormatError, match=r"cannot save: manifest.json: schema violation at "
                       r"\$.graph.ops\[1\].placement \(op 'dw' depthwise_conv2d\)"):  # fmt: skip
        qnn.save(g, tmp_path / "x.qnn")
    assert list(tmp_path.iterdir()) == []


def test_save_is_atomic_and_readable(tmp_path: Path) -> None:
    g = cnn_graph()
    with pytest.raises(ModelFormatError, match="nowhere/m.qnn: cannot write"):
        qnn.save(g, tmp_path / "nowhere" / "m.qnn")
    target = tmp_path / "m.qnn"
    target.write_bytes(b"old")
    qnn.save(g, target)
    assert (target.stat().st_mode & 0o777) == 0o644
    assert_graphs_equal(g, qnn.load(target))
    with pytest.raises(ModelFormatError, match="is a directory"):
        qnn.load(tmp_path)


def test_schema_is_valid_and_lists_every_elem_type() -> None:
    schema = qnn.manifest_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert set(schema["$defs"]["tensor"]["properties"]["dtype"]["enum"]) == set(ELEM_TYPES)


# --------------------------------------------------------------------------------------
# Real models: .tflite -> Graph -> .qnn -> Graph is exact


@pytest.mark.parametrize("name", SHARED_MODELS)
def test_shared_models_roundtrip(name: str, tmp_path: Path) -> None:
    from mcusim.importers.tflite import load_tflite

    path = model_path(name)
    g = load_tflite(path)
    out = tmp_path / f"{name}.qnn"
    qnn.save(g, out)
    g2 = qnn.load(out)
    assert_graphs_equal(g, g2)
    assert qnn.dumps(g2) == out.read_bytes()


# --------------------------------------------------------------------------------------
# The published spec stays in step with the code

DOC = Path(__file__).resolve().parents[1] / "docs" / "qnn-format.md"


def _doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def test_doc_example_manifest_loads() -> None:
    text = _doc_text()
    example = json.loads(text.split("```json\n", 1)[1].split("```", 1)[0])
    jsonschema.validate(example, qnn.manifest_schema())
    w4 = np.array([1, -2, 7, -8, 3, 0], dtype=np.int8)  # codes 1,E,7,8,3,0 -> E1 87 03
    members = [
        ("manifest.json", json.dumps(example).encode()),
        ("tensors/1.npy", _npy(np.array([0xE1, 0x87, 0x03], dtype=np.uint8))),
        ("tensors/2.npy", _npy(np.array([10, -20, 30], dtype=np.int32))),
    ]
    g = qnn.loads(_zip(members))
    assert np.array_equal(g.tensors["w"].data, w4.reshape(3, 1, 1, 2))
    assert (
        g.tensors["b"].quant.scale.tolist()
        == (np.float32(0.1) * np.float32([0.1, 0.2, 0.3])).tolist()
    )
    assert g.ops[0].attrs == Conv2DAttrs((1, 1), (1, 1), "valid", "relu")
    assert g.ops[0].precision == "W4A8"


def test_doc_lists_every_op_kind_and_attr() -> None:
    text = _doc_text()
    rows = {line.split("|")[1].strip().strip("`"): line for line in text.splitlines()
            if line.startswith("| `")}  # fmt: skip
    for kind, opdef in OPS.items():
        assert kind in rows, f"op kind {kind} missing from {DOC.name}"
        row = rows[kind]
        assert opdef.attrs.__name__ in row, kind
        assert f"{opdef.n_inputs[0]}..{opdef.n_inputs[1]}" in row, kind
        base = rows["avg_pool2d"] if "as `avg_pool2d`" in row else ""
        for f in dataclasses.fields(opdef.attrs):
            assert f"`{f.name}`" in row + base, (kind, f.name)
