"""Read a TFLite flatbuffer (.tflite, schema v3) into the mcusim graph IR.

Decoding uses the generated readers of the ``tflite`` package. Every problem with the
file becomes a :class:`ModelFormatError` (malformed/truncated file, several subgraphs, bad
buffer index, unsupported tensor type) or an :class:`UnsupportedOpError` (operator or
operator variant mcusim does not implement), each naming the file; graph inconsistencies
found by :meth:`Graph.validate` become :class:`GraphError` naming file and layer.

Weights stay exactly as stored (conv OHWI, depthwise 1HW(C*M), FC (out, in)); parameter
tensors of RESHAPE/PAD/MEAN/TRANSPOSE/STRIDED_SLICE stay inputs of their op, and their
values are also decoded into the op's typed attributes. Pairs (h, w) are in that order.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tflite
from tflite.utils import BUILTIN_OPCODE2NAME

from ..dtypes import FLOAT32, INT8, INT16, INT32, UINT8, ElemType, Quant, elem_type
from ..errors import GraphError, ModelFormatError, UnsupportedOpError, UserError
from ..graph import Graph, Op, Tensor
from ..ops import (
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

_TT = tflite.TensorType
# TFLite tensor type -> (IR element type, little-endian numpy dtype of the stored bytes).
_TENSOR_TYPES: dict[int, tuple[ElemType, str]] = {
    _TT.FLOAT32: (FLOAT32, "<f4"),
    _TT.INT32: (INT32, "<i4"),
    _TT.UINT8: (UINT8, "u1"),
    _TT.INT16: (INT16, "<i2"),
    _TT.INT8: (INT8, "i1"),
    _TT.UINT16: (elem_type("uint16"), "<u2"),
    _TT.UINT32: (elem_type("uint32"), "<u4"),
    _TT.INT4: (elem_type("int4"), "packed4"),
}
_TYPE_NAMES = {v: k for k, v in vars(_TT).items() if not k.startswith("_")}

_ACTIVATIONS = {
    tflite.ActivationFunctionType.NONE: "none",
    tflite.ActivationFunctionType.RELU: "relu",
    tflite.ActivationFunctionType.RELU_N1_TO_1: "relu_n1_to_1",
    tflite.ActivationFunctionType.RELU6: "relu6",
}
_PADDINGS = {tflite.Padding.SAME: "same", tflite.Padding.VALID: "valid"}

# A flatbuffer that is garbage makes the generated readers fail in these ways.
_DECODE_ERRORS = (
    struct.error,
    IndexError,
    ValueError,
    TypeError,
    AttributeError,
    UnicodeDecodeError,
    OverflowError,
    MemoryError,
)


def load_tflite(path: str | Path) -> Graph:
    """Read a .tflite file into a validated :class:`Graph`."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ModelFormatError(f"cannot read the file ({e.strerror or e})", file=str(p)) from None
    return load_tflite_bytes(data, p.name)


def load_tflite_bytes(data: bytes | bytearray, name: str = "<bytes>") -> Graph:
    """Read a .tflite model held in memory; ``name`` is used in messages and metadata."""
    data = bytes(data)
    reader = _Reader(data, name)
    try:
        graph = reader.read()
    except UserError:
        raise
    except _DECODE_ERRORS as e:
        what = "a read went past the end of the data" if isinstance(e, struct.error) else e
        raise ModelFormatError(
            f"malformed or truncated TFLite flatbuffer ({what})", file=name
        ) from None
    try:
        return graph.validate()
    except GraphError as e:
        raise GraphError(e.detail, file=name, layer=e.layer) from None


@dataclass
class _OpInfo:
    """What handlers need about one operator while converting it."""

    index: int
    code_name: str
    options: object | None  # flatbuffers Table of the builtin options, or None
    options_type: int  # tflite.BuiltinOptions member naming the table's type
    inputs: list[int]  # tensor indices, -1 = absent
    outputs: list[int]


class _Reader:
    def __init__(self, data: bytes, name: str) -> None:
        self.data = data
        self.name = name
        self.tensors: list[Tensor | None] = []  # None: not used by the graph
        self.tnames: list[str] = []

    # -- helpers ---------------------------------------------------------------------
    def fail(self, msg: str) -> ModelFormatError:
        return ModelFormatError(msg, file=self.name)

    def check_len(self, n: int, elem_bytes: int, what: str) -> int:
        """Reject vector lengths that cannot fit in the file (garbage would loop forever)."""
        if n < 0 or n * elem_bytes > len(self.data):
            raise self.fail(f"{what} claims {n} entries, more than the file can hold")
        return n

    def unsupported(self, info: _OpInfo, what: str) -> UnsupportedOpError:
        ins = ", ".join(self.tnames[i] if i >= 0 else "-" for i in info.inputs)
        outs = ", ".join(self.tnames[i] for i in info.outputs)
        return UnsupportedOpError(
            f"operator #{info.index} {info.code_name}: {what} (inputs: {ins}; outputs: {outs})",
            file=self.name,
        )

    # -- model -----------------------------------------------------------------------
    def read(self) -> Graph:
        data = self.data
        if len(data) == 0:
            raise self.fail("file is empty")
        if len(data) < 8:
            raise self.fail(f"file is truncated ({len(data)} bytes)")
        if data[4:8] != b"TFL3":
            raise self.fail(
                f"not a TFLite model: file identifier is {data[4:8]!r}, expected b'TFL3'"
            )
        root = struct.unpack_from("<I", data, 0)[0]
        if root + 4 > len(data):
            raise self.fail("file is truncated (root table lies beyond the end)")
        model = tflite.Model.GetRootAs(data, 0)
        version = model.Version()
        if version != 3:
            raise self.fail(f"unsupported TFLite schema version {version} (expected 3)")
        n_sg = self.check_len(model.SubgraphsLength(), 4, "subgraph list")
        if n_sg != 1:
            raise self.fail(f"model has {n_sg} subgraphs; mcusim supports exactly one")
        sg = model.Subgraphs(0)
        self.model = model
        self.n_buffers = self.check_len(model.BuffersLength(), 4, "buffer list")

        n_t = self.check_len(sg.TensorsLength(), 4, "tensor list")
        raw_names = []
        for i in range(n_t):
            nm = sg.Tensors(i).Name()
            raw_names.append(nm.decode("utf-8", errors="replace") if nm else "")
        self.tnames = unique_tensor_names(raw_names)

        n_codes = self.check_len(model.OperatorCodesLength(), 4, "operator code list")
        codes: list[str] = []
        for i in range(n_codes):
            oc = model.OperatorCodes(i)
            code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
            cname = BUILTIN_OPCODE2NAME.get(code, f"BUILTIN_{code}")
            if cname == "CUSTOM":
                cc = oc.CustomCode()
                cname = f"CUSTOM({cc.decode('utf-8', errors='replace') if cc else '?'})"
            codes.append(cname)

        g_inputs = self.index_list(sg.InputsAsNumpy(), n_t, "subgraph inputs")
        g_outputs = self.index_list(sg.OutputsAsNumpy(), n_t, "subgraph outputs")

        # First the operator list (unsupported operators are reported before tensor
        # problems), then only the tensors the graph uses, then the conversion.
        infos: list[_OpInfo] = []
        n_ops = self.check_len(sg.OperatorsLength(), 4, "operator list")
        for i in range(n_ops):
            o = sg.Operators(i)
            ci = o.OpcodeIndex()
            if not 0 <= ci < n_codes:
                raise self.fail(f"operator #{i} uses operator code {ci}, file has {n_codes}")
            info = _OpInfo(
                index=i,
                code_name=codes[ci],
                options=o.BuiltinOptions(),
                options_type=o.BuiltinOptionsType(),
                inputs=self.index_list(o.InputsAsNumpy(), n_t, f"operator #{i} inputs", True),
                outputs=self.index_list(o.OutputsAsNumpy(), n_t, f"operator #{i} outputs"),
            )
            if not info.outputs:
                raise self.fail(f"operator #{i} {info.code_name} has no outputs")
            if info.code_name not in _HANDLERS:
                raise self.unsupported(info, "operator is not supported by mcusim")
            infos.append(info)

        used = set(g_inputs) | set(g_outputs)
        for info in infos:
            used |= {t for t in info.inputs + info.outputs if t >= 0}
        self.tensors = [
            self.read_tensor(sg.Tensors(i), i) if i in used else None for i in range(n_t)
        ]
        ops = [self.convert_op(info) for info in infos]

        desc = model.Description()
        metadata = {
            "source": self.name,
            "format": "tflite",
            "sha256": hashlib.sha256(self.data).hexdigest(),
            "description": desc.decode("utf-8", errors="replace") if desc else "",
        }
        kept = {n for op in ops for n in op.inputs + op.outputs if n}
        kept |= {self.tnames[i] for i in g_inputs + g_outputs}
        tensors = {t.name: t for t in self.tensors if t is not None and t.name in kept}
        return Graph(
            tensors=tensors,
            ops=ops,
            inputs=[self.tnames[i] for i in g_inputs],
            outputs=[self.tnames[i] for i in g_outputs],
            name=Path(self.name).stem or "model",
            metadata=metadata,
        )

    def index_list(self, arr, n_t: int, what: str, optional: bool = False) -> list[int]:
        if isinstance(arr, int):  # generated readers return 0 for an absent vector
            return []
        self.check_len(int(arr.size), 4, what)
        out = [int(v) for v in arr.tolist()]
        for v in out:
            if not (0 <= v < n_t or (optional and v == -1)):
                raise self.fail(f"{what}: tensor index {v} out of range (0..{n_t - 1})")
        return out

    # -- tensors ---------------------------------------------------------------------
    def buffer_bytes(self, idx: int, tname: str) -> bytes | None:
        if not 0 <= idx < self.n_buffers:
            raise self.fail(f"tensor {tname!r} refers to buffer {idx}, file has {self.n_buffers}")
        buf = self.model.Buffers(idx)
        off, size = buf.Offset(), buf.Size()
        if off > 1:  # large models keep data after the flatbuffer, addressed by offset
            if off + size > len(self.data):
                raise self.fail(f"buffer {idx} of tensor {tname!r} lies beyond the end of file")
            return self.data[off : off + size] if size else None
        n = buf.DataLength()
        if n == 0:
            return None
        self.check_len(n, 1, f"buffer {idx}")
        return buf.DataAsNumpy().tobytes()

    def read_tensor(self, t, i: int) -> Tensor:
        name = self.tnames[i]
        shape_arr = t.ShapeAsNumpy()
        shape = () if isinstance(shape_arr, int) else tuple(int(s) for s in shape_arr.tolist())
        if any(s < 0 for s in shape):
            raise self.fail(f"tensor {name!r} has a dynamic shape {list(shape)}")
        raw = self.buffer_bytes(t.Buffer(), name)
        ttype = t.Type()
        n_elem = int(np.prod(shape, dtype=np.int64)) if shape else 1
        data = None
        if ttype == _TT.INT64 and raw is not None:
            # Shape/axis parameters are sometimes int64; hold them as int32 when they fit.
            vals = self.decode_array(raw, "<i8", n_elem, shape, name)
            if np.any(vals != vals.astype(np.int32)):
                raise self.fail(f"tensor {name!r}: int64 constant does not fit in int32")
            dtype, data = INT32, vals.astype(np.int32)
        elif ttype in _TENSOR_TYPES:
            dtype, stored = _TENSOR_TYPES[ttype]
            if raw is not None:
                if stored == "packed4":
                    if len(raw) != (n_elem + 1) // 2:
                        raise self.fail(
                            f"tensor {name!r}: buffer has {len(raw)} bytes, "
                            f"{(n_elem + 1) // 2} expected for {n_elem} int4 values"
                        )
                    data = _unpack_int4(raw, n_elem, dtype.signed).reshape(shape)
                else:
                    data = self.decode_array(raw, stored, n_elem, shape, name)
                data = np.ascontiguousarray(data.astype(dtype.np_dtype, copy=False))
        else:
            tname = _TYPE_NAMES.get(ttype, str(ttype))
            raise self.fail(f"tensor {name!r} has unsupported type {tname}")
        return Tensor(name, shape, dtype, self.read_quant(t, name, shape), data)

    def decode_array(self, raw: bytes, stored: str, n: int, shape: tuple, name: str):
        item = np.dtype(stored).itemsize
        if len(raw) != n * item:
            raise self.fail(
                f"tensor {name!r}: buffer has {len(raw)} bytes, {n * item} expected for "
                f"shape {list(shape)}"
            )
        return np.frombuffer(raw, dtype=stored).reshape(shape).copy()

    def read_quant(self, t, name: str, shape: tuple[int, ...]) -> Quant | None:
        q = t.Quantization()
        if q is None or q.ScaleLength() == 0:
            return None
        n = self.check_len(q.ScaleLength(), 4, f"tensor {name!r} scales")
        scale = q.ScaleAsNumpy().astype(np.float32)
        nz = self.check_len(q.ZeroPointLength(), 8, f"tensor {name!r} zero points")
        zp = q.ZeroPointAsNumpy().astype(np.int64) if nz else np.zeros(n, dtype=np.int64)
        if zp.size not in (1, n):
            raise self.fail(f"tensor {name!r} has {n} scales but {zp.size} zero points")
        axis = None
        if n > 1:
            axis = int(q.QuantizedDimension())
            if not 0 <= axis < len(shape) or shape[axis] != n:
                raise self.fail(
                    f"tensor {name!r}: {n} per-channel scales on dimension {axis} "
                    f"of shape {list(shape)}"
                )
        return Quant(scale, zp, axis)

    # -- operators -------------------------------------------------------------------
    def convert_op(self, info: _OpInfo) -> Op:
        kind, attrs, keep = _HANDLERS[info.code_name](self, info)
        inputs = [self.tnames[i] if i >= 0 else "" for i in info.inputs[:keep]]
        while inputs and inputs[-1] == "":
            inputs.pop()
        return Op(
            kind=kind,
            name=self.tnames[info.outputs[0]],
            inputs=inputs,
            outputs=[self.tnames[i] for i in info.outputs],
            attrs=attrs,
            source_index=info.index,
        )

    def options(self, info: _OpInfo, cls: type, required: bool = False):
        if info.options is None:
            if required:
                raise self.fail(f"operator #{info.index} {info.code_name} has no builtin options")
            return None
        expected = getattr(tflite.BuiltinOptions, cls.__name__)
        if info.options_type != expected:
            raise self.fail(
                f"operator #{info.index} {info.code_name} has builtin options of type "
                f"{info.options_type}, expected {cls.__name__}"
            )
        o = cls()
        o.Init(info.options.Bytes, info.options.Pos)
        return o

    def activation(self, info: _OpInfo, code: int) -> str:
        act = _ACTIVATIONS.get(code)
        if act is None:
            name = next(
                (k for k, v in vars(tflite.ActivationFunctionType).items() if v == code), code
            )
            raise self.unsupported(info, f"fused activation {name} is not supported")
        return act

    def padding(self, info: _OpInfo, code: int) -> str:
        if code not in _PADDINGS:
            raise self.fail(f"operator #{info.index} {info.code_name}: unknown padding {code}")
        return _PADDINGS[code]

    def const_input(self, info: _OpInfo, pos: int, what: str) -> np.ndarray:
        """Value of a constant parameter input (paddings, axes, perm, ...)."""
        if pos >= len(info.inputs) or info.inputs[pos] < 0:
            raise self.unsupported(info, f"{what} input is missing")
        t = self.tensors[info.inputs[pos]]
        if t.data is None:
            raise self.unsupported(info, f"non-constant {what} ({t.name!r}) is not supported")
        if t.dtype.is_float:
            raise self.fail(f"operator #{info.index} {info.code_name}: {what} must be integer")
        return t.data.astype(np.int64)

    def in_shape(self, info: _OpInfo, pos: int = 0) -> tuple[int, ...]:
        if pos >= len(info.inputs) or info.inputs[pos] < 0:
            raise self.fail(f"operator #{info.index} {info.code_name}: input {pos} is missing")
        return self.tensors[info.inputs[pos]].shape

    def out_shape(self, info: _OpInfo) -> tuple[int, ...]:
        return self.tensors[info.outputs[0]].shape


# -- per-operator conversion ---------------------------------------------------------
Handler = Callable[[_Reader, _OpInfo], tuple[str, object, int]]
_HANDLERS: dict[str, Handler] = {}


def _handles(*names: str):
    def deco(fn: Handler) -> Handler:
        for n in names:
            _HANDLERS[n] = fn
        return fn

    return deco


@_handles("CONV_2D")
def _conv2d(r: _Reader, info: _OpInfo):
    o = r.options(info, tflite.Conv2DOptions, required=True)
    attrs = Conv2DAttrs(
        stride=(o.StrideH(), o.StrideW()),
        dilation=(o.DilationHFactor(), o.DilationWFactor()),
        padding=r.padding(info, o.Padding()),
        activation=r.activation(info, o.FusedActivationFunction()),
    )
    return "conv2d", attrs, 3


@_handles("DEPTHWISE_CONV_2D")
def _depthwise(r: _Reader, info: _OpInfo):
    o = r.options(info, tflite.DepthwiseConv2DOptions, required=True)
    mult = o.DepthMultiplier()
    # Old converters wrote 0 or stale multipliers; the shapes define the computation.
    in_c, w_shape = r.in_shape(info, 0), r.in_shape(info, 1)
    if in_c and w_shape and in_c[-1] > 0 and w_shape[-1] % in_c[-1] == 0:
        mult = w_shape[-1] // in_c[-1]
    attrs = DepthwiseConv2DAttrs(
        stride=(o.StrideH(), o.StrideW()),
        dilation=(o.DilationHFactor(), o.DilationWFactor()),
        padding=r.padding(info, o.Padding()),
        activation=r.activation(info, o.FusedActivationFunction()),
        depth_multiplier=mult,
    )
    return "depthwise_conv2d", attrs, 3


@_handles("FULLY_CONNECTED")
def _fully_connected(r: _Reader, info: _OpInfo):
    o = r.options(info, tflite.FullyConnectedOptions)
    if o is None:
        return "fully_connected", FullyConnectedAttrs(), 3
    if o.WeightsFormat() != tflite.FullyConnectedOptionsWeightsFormat.DEFAULT:
        raise r.unsupported(info, "shuffled weights format is not supported")
    attrs = FullyConnectedAttrs(
        activation=r.activation(info, o.FusedActivationFunction()),
        keep_num_dims=bool(o.KeepNumDims()),
    )
    return "fully_connected", attrs, 3


@_handles("AVERAGE_POOL_2D", "MAX_POOL_2D")
def _pool(r: _Reader, info: _OpInfo):
    o = r.options(info, tflite.Pool2DOptions, required=True)
    attrs = Pool2DAttrs(
        filter=(o.FilterHeight(), o.FilterWidth()),
        stride=(o.StrideH(), o.StrideW()),
        padding=r.padding(info, o.Padding()),
        activation=r.activation(info, o.FusedActivationFunction()),
    )
    return ("avg_pool2d" if info.code_name == "AVERAGE_POOL_2D" else "max_pool2d"), attrs, 1


@_handles("ADD", "SUB", "MUL")
def _elementwise(r: _Reader, info: _OpInfo):
    cls = {"ADD": tflite.AddOptions, "SUB": tflite.SubOptions, "MUL": tflite.MulOptions}
    o = r.options(info, cls[info.code_name])
    act = r.activation(info, o.FusedActivationFunction()) if o is not None else "none"
    return info.code_name.lower(), ElementwiseAttrs(activation=act), 2


@_handles("RESHAPE")
def _reshape(r: _Reader, info: _OpInfo):
    in_shape = r.in_shape(info)
    keep = 1
    target: list[int] | None = None
    if len(info.inputs) > 1 and info.inputs[1] >= 0 and r.tensors[info.inputs[1]].is_const:
        target = [int(v) for v in r.const_input(info, 1, "shape").reshape(-1)]
        keep = 2
    else:
        o = r.options(info, tflite.ReshapeOptions)
        if o is not None and o.NewShapeLength() > 0:
            target = [int(v) for v in o.NewShapeAsNumpy().tolist()]
    if target is None:  # shape computed at run time: the output tensor's shape is static
        target = list(r.out_shape(info))
    n_in = int(np.prod(in_shape, dtype=np.int64))
    if target.count(-1) > 1:
        raise r.fail(f"operator #{info.index} RESHAPE: more than one -1 in {target}")
    if -1 in target:
        rest = int(np.prod([d for d in target if d != -1], dtype=np.int64))
        target[target.index(-1)] = n_in // rest if rest else 0
    return "reshape", ReshapeAttrs(shape=tuple(target)), keep


@_handles("SQUEEZE")
def _squeeze(r: _Reader, info: _OpInfo):
    in_shape = r.in_shape(info)
    o = r.options(info, tflite.SqueezeOptions)
    dims: list[int] = []
    if o is not None and o.SqueezeDimsLength() > 0:
        dims = [int(d) % max(len(in_shape), 1) for d in o.SqueezeDimsAsNumpy().tolist()]
    if dims:
        if any(in_shape[d] != 1 for d in dims):
            raise r.fail(
                f"operator #{info.index} SQUEEZE: squeezed dimensions {dims} of "
                f"{list(in_shape)} are not all 1"
            )
        shape = tuple(s for i, s in enumerate(in_shape) if i not in dims)
    else:
        shape = tuple(s for s in in_shape if s != 1)
    return "squeeze", ReshapeAttrs(shape=shape), 1


@_handles("SOFTMAX")
def _softmax(r: _Reader, info: _OpInfo):
    o = r.options(info, tflite.SoftmaxOptions)
    return "softmax", SoftmaxAttrs(beta=float(o.Beta()) if o is not None else 1.0), 1


@_handles("LOGISTIC", "TANH", "QUANTIZE", "DEQUANTIZE", "RELU", "RELU6", "HARD_SWISH")
def _no_attrs(r: _Reader, info: _OpInfo):
    return info.code_name.lower(), NoAttrs(), 1


@_handles("PAD", "PADV2")
def _pad(r: _Reader, info: _OpInfo):
    p = r.const_input(info, 1, "paddings")
    rank = len(r.in_shape(info))
    if p.shape != (rank, 2):
        raise r.fail(
            f"operator #{info.index} {info.code_name}: paddings have shape {list(p.shape)}, "
            f"expected [{rank}, 2]"
        )
    keep = 2
    if info.code_name == "PADV2" and len(info.inputs) > 2 and info.inputs[2] >= 0:
        cv = r.tensors[info.inputs[2]]
        if not cv.is_const:
            raise r.unsupported(info, f"non-constant pad value ({cv.name!r}) is not supported")
        keep = 3
    paddings = tuple((int(a), int(b)) for a, b in p.tolist())
    return "pad", PadAttrs(paddings=paddings), keep


@_handles("CONCATENATION")
def _concat(r: _Reader, info: _OpInfo):
    o = r.options(info, tflite.ConcatenationOptions)
    rank = len(r.out_shape(info))
    axis = int(o.Axis()) if o is not None else 0
    if not -rank <= axis < rank:
        raise r.fail(f"operator #{info.index} CONCATENATION: axis {axis} for rank {rank}")
    act = r.activation(info, o.FusedActivationFunction()) if o is not None else "none"
    return "concat", ConcatAttrs(axis=axis % rank, activation=act), len(info.inputs)


@_handles("MEAN")
def _mean(r: _Reader, info: _OpInfo):
    rank = len(r.in_shape(info))
    axes = r.const_input(info, 1, "axes").reshape(-1).tolist()
    if any(not -rank <= a < rank for a in axes):
        raise r.fail(f"operator #{info.index} MEAN: axes {axes} out of range for rank {rank}")
    o = r.options(info, tflite.ReducerOptions)
    keep = bool(o.KeepDims()) if o is not None else False
    return "mean", MeanAttrs(axes=tuple(sorted({a % rank for a in axes})), keep_dims=keep), 2


@_handles("TRANSPOSE")
def _transpose(r: _Reader, info: _OpInfo):
    perm = tuple(int(v) for v in r.const_input(info, 1, "permutation").reshape(-1).tolist())
    return "transpose", TransposeAttrs(perm=perm), 2


@_handles("STRIDED_SLICE")
def _strided_slice(r: _Reader, info: _OpInfo):
    shape = r.in_shape(info)
    begin = r.const_input(info, 1, "begin").reshape(-1).tolist()
    end = r.const_input(info, 2, "end").reshape(-1).tolist()
    if len(info.inputs) > 3 and info.inputs[3] >= 0:
        strides = r.const_input(info, 3, "strides").reshape(-1).tolist()
    else:
        strides = [1] * len(begin)
    o = r.options(info, tflite.StridedSliceOptions)
    bm = em = sm = 0
    if o is not None:
        if o.EllipsisMask():
            raise r.unsupported(info, f"ellipsis_mask={o.EllipsisMask()} is not supported")
        if o.NewAxisMask():
            raise r.unsupported(info, f"new_axis_mask={o.NewAxisMask()} is not supported")
        if o.Offset():  # TFLM (our reference) does not implement it either
            raise r.unsupported(info, "offset=true is not supported (end relative to begin)")
        bm, em, sm = o.BeginMask(), o.EndMask(), o.ShrinkAxisMask()
    if not len(begin) == len(end) == len(strides) <= len(shape):
        raise r.fail(
            f"operator #{info.index} STRIDED_SLICE: begin/end/strides lengths "
            f"{len(begin)}/{len(end)}/{len(strides)} for an input of rank {len(shape)}"
        )
    try:
        attrs = normalise_strided_slice(shape, begin, end, strides, bm, em, sm)
    except ValueError as e:
        raise r.fail(f"operator #{info.index} STRIDED_SLICE: {e}") from None
    return "strided_slice", attrs, 4


def normalise_strided_slice(
    shape: tuple[int, ...],
    begin: list[int],
    end: list[int],
    strides: list[int],
    begin_mask: int = 0,
    end_mask: int = 0,
    shrink_mask: int = 0,
) -> StridedSliceAttrs:
    """Resolve masks and negative indices to one concrete (begin, end, stride) per axis.

    Axes beyond the given vectors take their full range. A negative stride walks from
    ``begin`` down to (excluding) ``end``, where ``end`` may be -1 (run through index 0).
    Shrunk axes get (b, b+1, 1) and are listed in ``shrink_axes``.
    """
    nb, ne, ns, shrink = [], [], [], []
    for ax, dim in enumerate(shape):
        if ax >= len(begin):
            nb.append(0)
            ne.append(dim)
            ns.append(1)
            continue
        s = int(strides[ax])
        if s == 0:
            raise ValueError(f"stride of axis {ax} is 0")
        if shrink_mask >> ax & 1:
            b = int(begin[ax])
            b = b + dim if b < 0 else b
            if not 0 <= b < dim:
                raise ValueError(f"shrunk index {begin[ax]} out of range for axis {ax} ({dim})")
            nb.append(b)
            ne.append(b + 1)
            ns.append(1)
            shrink.append(ax)
            continue
        lo, hi = (0, dim) if s > 0 else (-1, dim - 1)
        if begin_mask >> ax & 1:
            b = lo if s > 0 else hi
        else:
            b = int(begin[ax])
            b = b + dim if b < 0 else b
            b = min(max(b, lo), hi)
        if end_mask >> ax & 1:
            e = hi if s > 0 else lo
        else:
            e = int(end[ax])
            e = e + dim if e < 0 else e
            e = min(max(e, lo), hi)
        nb.append(b)
        ne.append(e)
        ns.append(s)
    return StridedSliceAttrs(
        begin=tuple(nb), end=tuple(ne), strides=tuple(ns), shrink_axes=tuple(shrink)
    )


def unique_tensor_names(names: list[str]) -> list[str]:
    """Make tensor names unique and non-empty, deterministically (name, name_1, ...)."""
    out: list[str] = []
    seen: set[str] = set()
    base = [n if n else f"tensor_{i}" for i, n in enumerate(names)]
    taken = set(base)
    for n in base:
        cand, k = n, 0
        # A suffixed name must not collide with a name some other tensor carries itself.
        while cand in seen or (cand != n and cand in taken):
            k += 1
            cand = f"{n}_{k}"
        seen.add(cand)
        out.append(cand)
    return out


def _unpack_int4(raw: bytes, n: int, signed: bool) -> np.ndarray:
    """TFLite INT4: two values per byte, the first in the low nibble."""
    b = np.frombuffer(raw, dtype=np.uint8)
    nib = np.empty(b.size * 2, dtype=np.int16)
    nib[0::2] = b & 0xF
    nib[1::2] = b >> 4
    nib = nib[:n]
    if signed:
        nib = np.where(nib >= 8, nib - 16, nib)
    return nib.astype(np.int8 if signed else np.uint8)
