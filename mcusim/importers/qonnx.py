"""Read a QONNX model (Brevitas / FINN export) into mcusim's integer graph IR.

The ``qonnx`` package (optional extra ``mcusim[qonnx]``) loads and cleans the model
(``cleanup_model``: shape inference, constant folding that keeps Quant nodes, unique
names); this module then lowers the fake-quantized float graph to integers
(docs/quantize.md, "QONNX import"):

* a Quant / BipolarQuant node on a constant becomes integer weights of the matching
  ElemType with a per-output-channel scale (zero point 0);
* a Quant / BipolarQuant node on an activation defines the integer type, scale and zero
  point of that tensor; the op that computes it (Conv, MatMul, Gemm, Add, AveragePool)
  becomes an mcusim op whose fixed-point requantization (or sign threshold for bipolar)
  produces exactly that tensor; Relu between the op and its Quant is fused;
* NCHW becomes NHWC: activations are transposed, conv weights become OHWI, depthwise
  weights 1HW(C*M); a Flatten before a fully connected layer is absorbed by permuting the
  weight columns from CHW to HWC order. The graph input is the integer output of the input
  Quant node, in NHWC.

Anything else raises :class:`UnsupportedOpError` naming the node, its op type and what is
missing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..dtypes import BINARY, INT32, ElemType, Quant, elem_type
from ..errors import GraphError, ModelFormatError, UnsupportedOpError
from ..graph import Graph, Op, Tensor
from ..ops import (
    Conv2DAttrs,
    DepthwiseConv2DAttrs,
    ElementwiseAttrs,
    FullyConnectedAttrs,
    Pool2DAttrs,
    conv_output_size,
    conv_padding,
)

QUANT_DOMAIN = "qonnx.custom_op.general"
# Rounding modes of activation quantizers whose result mcusim's fixed-point requantization
# reproduces up to exact ties (mcusim rounds ties away from zero / toward +inf).
NEAREST_MODES = ("ROUND", "HALF_EVEN", "HALF_UP")
PASS_THROUGH = ("Identity", "Dropout")


def _require_qonnx():
    try:
        import onnx  # noqa: F401
        from qonnx.core.modelwrapper import ModelWrapper  # noqa: F401
    except ImportError as e:
        raise ModelFormatError(
            f"reading QONNX models needs the optional packages onnx and qonnx ({e.name} is "
            "missing): pip install 'mcusim[qonnx]'"
        ) from None


def load_qonnx(path: str | Path) -> Graph:
    """Read a QONNX .onnx file into a validated integer :class:`Graph`."""
    _require_qonnx()
    import onnx
    from google.protobuf.message import DecodeError

    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ModelFormatError(f"cannot read the file ({e.strerror or e})", file=str(p)) from None
    try:
        proto = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise ModelFormatError(f"not a readable ONNX protobuf ({e})", file=p.name) from None
    if not proto.graph.node:
        raise ModelFormatError("ONNX model has no nodes", file=p.name)
    g = load_qonnx_model(proto, name=p.name)
    g.metadata["sha256"] = hashlib.sha256(data).hexdigest()
    return g


def load_qonnx_model(model, name: str = "<qonnx>") -> Graph:
    """Lower an in-memory QONNX model (``onnx.ModelProto`` or qonnx ``ModelWrapper``)."""
    _require_qonnx()
    from qonnx.core.modelwrapper import ModelWrapper

    mw = model if isinstance(model, ModelWrapper) else ModelWrapper(model)
    try:
        mw = _cleanup(mw)
    except Exception as e:  # qonnx raises plain exceptions on malformed graphs
        raise ModelFormatError(f"qonnx could not clean up the model ({e})", file=name) from None
    graph = _Lowering(mw, name).run()
    try:
        return graph.validate()
    except GraphError as e:
        raise GraphError(e.detail, file=name, layer=e.layer) from None


def _cleanup(mw):
    """qonnx's cleanup_model steps, keeping the exporter's node and tensor names (for
    messages and layer names); only nameless or duplicate nodes get a name."""
    from qonnx.transformation.fold_constants import FoldConstants
    from qonnx.transformation.general import (
        GiveUniqueParameterTensors,
        RemoveStaticGraphInputs,
        RemoveUnusedTensors,
    )
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.transformation.quant_constant_folding import FoldTransposeIntoQuantInit

    for node in mw.graph.node:  # as cleanup_model: QONNX ops live in qonnx's domain
        if node.op_type in ("Quant", "BipolarQuant", "Trunc"):
            node.domain = QUANT_DOMAIN
    for t in (
        InferShapes(),
        GiveUniqueParameterTensors(),
        FoldConstants(exclude_op_types=["Quant", "BipolarQuant", "Trunc"]),
        FoldTransposeIntoQuantInit(),
        RemoveUnusedTensors(),
        RemoveStaticGraphInputs(),
        InferShapes(),
    ):
        mw = mw.transform(t)
    seen: set[str] = set()
    for i, node in enumerate(mw.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)
    return mw


# -- values flowing through the lowering -------------------------------------------------------
@dataclass
class _Int:
    """An integer activation that exists in the mcusim graph."""

    name: str  # mcusim tensor name
    chw: tuple[int, int, int] | None = None  # set when ONNX flattened a 4-D NCHW tensor


@dataclass
class _Weights:
    """A constant quantized by a Quant / BipolarQuant node (ONNX layout)."""

    q: np.ndarray  # integer values, ONNX layout
    scale: np.ndarray  # broadcast to q's shape
    dtype: ElemType
    node: str


@dataclass
class _Pending:
    """A float result (MAC, Add, pool) waiting for the Quant node that defines its type."""

    kind: str
    node: str
    index: int
    inputs: list[str]
    attrs: object
    shape: tuple[int, ...]  # mcusim (NHWC) shape of the result
    weights: np.ndarray | None = None  # mcusim layout
    w_scale: np.ndarray | None = None  # per output channel
    w_dtype: ElemType | None = None
    w_axis: int = 0
    bias: np.ndarray | None = None  # real bias per output channel
    activation: str = "none"
    pools: list = field(default_factory=list)  # max pools applied after (commute with quant)


class _Lowering:
    def __init__(self, mw, name: str) -> None:
        self.mw = mw
        self.name = name
        self.tensors: dict[str, Tensor] = {}
        self.ops: list[Op] = []
        self.values: dict[str, object] = {}  # ONNX tensor name -> _Int | _Weights | _Pending
        self.inputs: list[str] = []

    # -- helpers ------------------------------------------------------------------------
    def fail(self, node, what: str) -> UnsupportedOpError:
        return UnsupportedOpError(
            f"node {node.name or '?'} ({node.op_type}): {what}", file=self.name
        )

    def init(self, name: str) -> np.ndarray | None:
        return self.mw.get_initializer(name) if name else None

    def attr(self, node, key: str, default=None):
        from onnx import helper

        for a in node.attribute:
            if a.name == key:
                v = helper.get_attribute_value(a)
                return v.decode() if isinstance(v, bytes) else v
        return default

    def onnx_shape(self, name: str) -> tuple[int, ...]:
        s = self.mw.get_tensor_shape(name)
        if s is None or any(not isinstance(d, int) or d < 1 for d in s):
            raise ModelFormatError(f"tensor {name!r} has no static shape {s}", file=self.name)
        return tuple(int(d) for d in s)

    def int_value(self, node, i: int) -> _Int:
        v = self.values.get(node.input[i])
        if isinstance(v, _Int):
            return v
        if isinstance(v, _Pending):
            raise self.fail(
                node,
                f"input {node.input[i]!r} is the float output of {v.node}; mcusim needs a Quant "
                "or BipolarQuant node between them",
            )
        raise self.fail(
            node,
            f"input {node.input[i]!r} is not a quantized activation (no Quant / BipolarQuant "
            "node defines its integer type)",
        )

    def add_tensor(self, t: Tensor) -> str:
        name = t.name
        while name in self.tensors:
            name += "_"
        t.name = name
        self.tensors[name] = t
        return name

    # -- driver ---------------------------------------------------------------------------
    def run(self) -> Graph:
        g = self.mw.graph
        inits = {i.name for i in g.initializer}
        for inp in g.input:
            if inp.name not in inits:
                self.values[inp.name] = ("graph_input", inp.name)
        handlers = {
            "Quant": self.quant,
            "BipolarQuant": self.quant,
            "Conv": self.conv,
            "MatMul": self.matmul,
            "Gemm": self.matmul,
            "Add": self.add,
            "Relu": self.relu,
            "MaxPool": self.maxpool,
            "AveragePool": self.avgpool,
            "GlobalAveragePool": self.avgpool,
            "Flatten": self.flatten,
            "Reshape": self.flatten,
        }
        for index, node in enumerate(g.node):
            if node.op_type in PASS_THROUGH:
                self.values[node.output[0]] = self.values.get(node.input[0])
                continue
            h = handlers.get(node.op_type)
            if h is None:
                if node.op_type == "Trunc":
                    raise self.fail(
                        node,
                        "bit truncation (e.g. Brevitas TruncAvgPool) is not lowerable: "
                        "mcusim's avg_pool2d rounds the average half away from zero "
                        "(docs/precision.md section 3); export the pool with a Quant node "
                        "instead",
                    )
                raise self.fail(node, "operator is not supported by the QONNX importer")
            h(node, index)
        outputs = []
        for out in g.output:
            v = self.values.get(out.name)
            if isinstance(v, _Pending):
                raise UnsupportedOpError(
                    f"graph output {out.name!r} is the float output of node {v.node}: "
                    "mcusim needs a Quant node defining its integer type",
                    file=self.name,
                )
            if not isinstance(v, _Int):
                raise UnsupportedOpError(
                    f"graph output {out.name!r} is not a quantized activation", file=self.name
                )
            if v.chw is not None and v.chw[1] * v.chw[2] > 1 and v.chw[0] > 1:
                raise UnsupportedOpError(
                    f"graph output {out.name!r} is a flattened NCHW tensor; mcusim keeps "
                    "NHWC order (flatten only in front of a fully connected layer)",
                    file=self.name,
                )
            outputs.append(v.name)
        return Graph(
            tensors=self.tensors,
            ops=self.ops,
            inputs=self.inputs,
            outputs=outputs,
            name=Path(self.name).stem or "model",
            metadata={
                "source": self.name,
                "format": "qonnx",
                "layout": "NHWC (activations transposed from ONNX NCHW)",
            },
        )

    # -- Quant / BipolarQuant --------------------------------------------------------------
    def quant_params(self, node) -> tuple[np.ndarray, np.ndarray, ElemType, str]:
        """(scale, zero point, element type, rounding mode) of a Quant / BipolarQuant node."""
        scale = self.init(node.input[1])
        if scale is None:
            raise self.fail(node, "scale is not a constant")
        scale = np.asarray(scale, np.float32)
        if np.any(~np.isfinite(scale)) or np.any(scale <= 0):
            raise self.fail(node, "scales must be finite and positive")
        if node.op_type == "BipolarQuant":
            return scale, np.zeros(1), BINARY, "ROUND"
        zp, bits = self.init(node.input[2]), self.init(node.input[3])
        if zp is None or bits is None:
            raise self.fail(node, "zero point and bit width must be constants")
        bits_f = float(np.asarray(bits).reshape(-1)[0])
        if np.asarray(bits).size != 1 or bits_f != int(bits_f):
            raise self.fail(node, f"bit width {np.asarray(bits).tolist()} is not one integer")
        b = int(bits_f)
        signed = bool(self.attr(node, "signed", 1))
        if b == 1 and signed:
            return scale, np.asarray(zp, np.float64), BINARY, "ROUND"
        if not 2 <= b <= 8:
            raise self.fail(node, f"{b}-bit quantization: mcusim supports 2..8 bits and bipolar")
        dtype = elem_type(f"{'int' if signed else 'uint'}{b}")
        return scale, np.asarray(zp, np.float64), dtype, self.attr(node, "rounding_mode", "ROUND")

    def quant(self, node, index: int) -> None:
        src = node.input[0]
        const = self.init(src)
        if const is not None:
            self.values[node.output[0]] = self.quant_weights(node, np.asarray(const, np.float64))
            return
        v = self.values.get(src)
        scale, zp, dtype, mode = self.quant_params(node)
        if isinstance(v, _Weights):
            raise self.fail(node, "re-quantization of already quantized weights")
        if scale.size != 1 or zp.size != 1:
            raise self.fail(node, "activations need one scale and one zero point (per tensor)")
        zpv = float(zp.reshape(-1)[0])
        if zpv != int(zpv):
            raise self.fail(node, f"zero point {zpv} is not an integer")
        zpi = int(zpv)
        if dtype.binary and zpi != 0:
            raise self.fail(node, "a bipolar quantizer needs zero point 0")
        if not dtype.binary:
            if bool(self.attr(node, "narrow", 0)):
                raise self.fail(
                    node,
                    "narrow-range activations are not representable: mcusim clamps to the "
                    "full range of the type",
                )
            if mode.upper() not in NEAREST_MODES:
                raise self.fail(
                    node,
                    f"rounding_mode {mode}: mcusim's requantization rounds to nearest "
                    f"(supported: {', '.join(NEAREST_MODES)})",
                )
            if not dtype.min <= zpi <= dtype.max:
                raise self.fail(node, f"zero point {zpi} is outside the {dtype} range")
        quant = Quant(scale.reshape(-1)[:1], [zpi])
        out = node.output[0]
        if isinstance(v, tuple) and v[0] == "graph_input":
            shape = self.onnx_shape(src)
            t = self.add_tensor(Tensor(out, _nhwc(shape), dtype, quant))
            self.inputs.append(t)
            self.values[out] = _Int(t)
            return
        if isinstance(v, _Int):
            t = self.tensors[v.name]
            if t.dtype == dtype and t.quant == quant:
                self.values[out] = v
                return
            raise self.fail(
                node,
                f"re-quantizes {src!r} ({t.dtype}, scale {float(t.quant.scale[0]):g}, zero "
                f"point {int(t.quant.zero_point[0])}) without an op in between; mcusim has no "
                "sub-byte requantize op",
            )
        if isinstance(v, _Pending):
            self.emit(v, node, out, dtype, quant)
            return
        raise self.fail(node, f"input {src!r} is not produced by a supported node")

    def quant_weights(self, node, w: np.ndarray) -> _Weights:
        from qonnx.custom_op.general.quant import resolve_rounding_mode

        scale, zp, dtype, mode = self.quant_params(node)
        if np.any(zp != 0):
            raise self.fail(node, "weights need zero point 0 (symmetric)")
        s = np.broadcast_to(scale.astype(np.float64), w.shape)
        if dtype.binary:
            q = np.where(w >= 0, 1, -1)
        else:
            narrow = bool(self.attr(node, "narrow", 0))
            lo = dtype.min + (1 if narrow and dtype.signed else 0)
            hi = dtype.max - (1 if narrow and not dtype.signed else 0)
            q = resolve_rounding_mode(mode)(np.clip(w / s, lo, hi))
        return _Weights(q.astype(np.int64), s, dtype, node.name)

    def emit(self, p: _Pending, node, out: str, dtype: ElemType, quant: Quant) -> None:
        """Materialize a pending op with the output type given by a Quant node."""
        shape = p.shape
        inputs = list(p.inputs)
        attrs = p.attrs
        if p.kind in ("conv2d", "depthwise_conv2d", "fully_connected"):
            x = self.tensors[inputs[0]]
            n = p.w_scale.size
            wq = Quant(p.w_scale.astype(np.float32), np.zeros(n, np.int64), p.w_axis)
            w_name = self.add_tensor(
                Tensor(f"{p.node}/weights", p.weights.shape, p.w_dtype, wq, p.weights)
            )
            acc_scale = float(x.quant.scale[0]) * p.w_scale.astype(np.float64)
            if dtype.binary:
                if p.activation != "none":
                    raise self.fail(
                        node,
                        f"the sign of {p.node}'s rectified output is always +1 ({p.activation} "
                        "before a bipolar quantizer)",
                    )
                # y = +1 iff s_x*s_w*sum + bias >= 0 iff sum >= ceil(-bias / (s_x*s_w))
                b = np.zeros(n) if p.bias is None else p.bias
                t = -b / acc_scale
                # a bias that is a multiple of s_x*s_w (Brevitas' int32 bias) gives an integer
                # up to float rounding: snap it before the ceiling
                near = np.round(t)
                t = np.where(np.abs(t - near) <= 1e-6 * np.maximum(1.0, np.abs(t)), near, t)
                th = np.ceil(t).reshape(n, 1)
                if np.any(np.abs(th) > 2**31 - 1):
                    raise self.fail(node, "sign threshold overflows int32")
                t_name = self.add_tensor(
                    Tensor(f"{p.node}/thresholds", (n, 1), INT32, None, th.astype(np.int32))
                )
                inputs = [inputs[0], w_name, "", t_name]
                attrs = _replace(attrs, requant="thresholds", activation="none")
            else:
                inputs = [inputs[0], w_name]
                if p.bias is not None:
                    bq = np.round(p.bias / acc_scale)
                    if np.any(np.abs(bq) > 2**31 - 1):
                        raise self.fail(node, "bias overflows int32 at scale s_x*s_w")
                    bquant = Quant(acc_scale.astype(np.float32), np.zeros(n, np.int64), 0)
                    inputs.append(
                        self.add_tensor(
                            Tensor(f"{p.node}/bias", (n,), INT32, bquant, bq.astype(np.int32))
                        )
                    )
                attrs = _replace(attrs, activation=p.activation)
                self.check_multiplier(node, p, acc_scale / float(quant.scale[0]))
        else:
            if dtype.binary:
                raise self.fail(node, f"{p.kind} has no binary output (docs/precision.md)")
            attrs = _replace(attrs, activation=p.activation)
            if p.kind == "avg_pool2d":
                x = self.tensors[inputs[0]]
                if x.dtype != dtype or x.quant != quant:
                    raise self.fail(
                        node,
                        f"the average pool {p.node} must keep its input's type and scale "
                        f"({x.dtype}, {float(x.quant.scale[0]):g}, {int(x.quant.zero_point[0])})",
                    )
        name = out if not p.pools else f"{out}/pre_pool"
        y = self.add_tensor(Tensor(name, shape, dtype, quant))
        self.ops.append(Op(p.kind, p.node, inputs, [y], attrs, source_index=p.index))
        for pool_node, pool_attrs, pool_shape, pool_index in p.pools:
            z = self.add_tensor(Tensor(f"{pool_node}/out", pool_shape, dtype, quant))
            self.ops.append(
                Op("max_pool2d", pool_node, [y], [z], pool_attrs, source_index=pool_index)
            )
            y = z
        self.values[out] = _Int(y)

    def check_multiplier(self, node, p: _Pending, real: np.ndarray) -> None:
        from mcusim.kernels.fixedpoint import quantize_multiplier

        for r in np.atleast_1d(real):
            m, s = quantize_multiplier(float(r))
            if not (r > 0 and m != 0 and -31 <= s <= 30):
                raise self.fail(
                    node,
                    f"requantization multiplier s_x*s_w/s_y = {r:g} of {p.node} is not "
                    "representable as a Q31 multiplier and shift",
                )

    # -- MAC ops ----------------------------------------------------------------------------
    def weights_of(self, node, i: int) -> _Weights:
        v = self.values.get(node.input[i])
        if isinstance(v, _Weights):
            return v
        if self.init(node.input[i]) is not None:
            raise self.fail(node, f"weights {node.input[i]!r} are float: no Quant node on them")
        raise self.fail(node, f"weights {node.input[i]!r} are not a constant")

    def bias_of(self, node, i: int, n: int) -> np.ndarray | None:
        if len(node.input) <= i or not node.input[i]:
            return None
        name = node.input[i]
        b = self.init(name)
        if b is None:
            v = self.values.get(name)
            if isinstance(v, _Weights):
                b = v.q * v.scale
            else:
                raise self.fail(node, f"bias {name!r} is not a constant")
        b = np.asarray(b, np.float64).reshape(-1)
        if b.size not in (1, n):
            raise self.fail(node, f"bias {name!r} has {b.size} values for {n} channels")
        return np.broadcast_to(b, (n,)).copy()

    def channel_scale(self, node, w: _Weights, axis: int) -> np.ndarray:
        s = np.moveaxis(w.scale, axis, 0).reshape(w.scale.shape[axis], -1)
        if np.any(s != s[:, :1]):
            raise self.fail(node, "weight scales must be per output channel (or per tensor)")
        return s[:, 0].copy()

    def conv(self, node, index: int) -> None:
        x = self.int_value(node, 0)
        w = self.weights_of(node, 1)
        xs = self.onnx_shape(node.input[0])
        ys = self.onnx_shape(node.output[0])
        if len(xs) != 4 or w.q.ndim != 4:
            raise self.fail(node, "only 2-D convolutions (NCHW input, OIHW weights)")
        o, ig, kh, kw = w.q.shape
        c = xs[1]
        group = int(self.attr(node, "group", 1))
        strides = tuple(self.attr(node, "strides", [1, 1]))
        dil = tuple(self.attr(node, "dilations", [1, 1]))
        padding = self.padding(node, xs[2:], (kh, kw), strides, dil)
        s_w = self.channel_scale(node, w, 0)
        bias = self.bias_of(node, 2, o)
        if group == 1:
            kind, wdata, axis = "conv2d", w.q.transpose(0, 2, 3, 1), 0
            attrs = Conv2DAttrs(stride=strides, dilation=dil, padding=padding)
        elif group == c and ig == 1:
            kind, wdata, axis = "depthwise_conv2d", w.q.transpose(1, 2, 3, 0), 3
            attrs = DepthwiseConv2DAttrs(
                stride=strides, dilation=dil, padding=padding, depth_multiplier=o // c
            )
        else:
            raise self.fail(node, f"grouped convolution (group {group}) other than depthwise")
        self.values[node.output[0]] = _Pending(
            kind,
            node.name,
            index,
            [x.name],
            attrs,
            _nhwc(ys),
            np.ascontiguousarray(wdata.astype(w.dtype.np_dtype)),
            s_w,
            w.dtype,
            axis,
            bias,
        )

    def padding(self, node, hw, k, strides, dil) -> str:
        auto = self.attr(node, "auto_pad", "NOTSET")
        if self.attr(node, "ceil_mode", 0):
            raise self.fail(node, "ceil_mode=1 is not supported")
        if auto in ("SAME_UPPER",):
            return "same"
        if auto == "VALID":
            return "valid"
        if auto not in ("NOTSET", ""):
            raise self.fail(node, f"auto_pad {auto} (TFLite SAME pads the extra row at the end)")
        pads = list(self.attr(node, "pads", [0, 0, 0, 0]))
        if not any(pads):
            return "valid"
        for d in range(2):
            out = conv_output_size(hw[d], k[d], strides[d], dil[d], "same")
            before = conv_padding(hw[d], k[d], strides[d], dil[d], out)
            eff = (k[d] - 1) * dil[d] + 1
            total = max((out - 1) * strides[d] + eff - hw[d], 0)
            if (pads[d], pads[d + 2]) != (before, total - before):
                raise self.fail(
                    node,
                    f"pads {pads} are neither none nor TFLite's SAME padding for this shape",
                )
        return "same"

    def matmul(self, node, index: int) -> None:
        x = self.int_value(node, 0)
        w = self.weights_of(node, 1)
        if w.q.ndim != 2:
            raise self.fail(node, "weights must be a 2-D matrix")
        if node.op_type == "Gemm":
            if self.attr(node, "transA", 0) or float(self.attr(node, "alpha", 1.0)) != 1.0:
                raise self.fail(node, "transA=1 or alpha != 1 is not supported")
            if float(self.attr(node, "beta", 1.0)) != 1.0:
                raise self.fail(node, "beta != 1 is not supported")
            trans_b = bool(self.attr(node, "transB", 0))
        else:
            trans_b = False
        q = w.q if trans_b else w.q.T  # (out, in)
        scale = w.scale if trans_b else w.scale.T
        ww = _Weights(q, scale, w.dtype, w.node)
        n_out, n_in = q.shape
        s_w = self.channel_scale(node, ww, 0)
        bias = self.bias_of(node, 2, n_out) if node.op_type == "Gemm" else None
        xt = self.tensors[x.name]
        if x.chw is not None:
            c, h, wd = x.chw
            if c * h * wd != n_in:
                raise self.fail(node, f"flattened input has {c * h * wd} values, weights {n_in}")
            q = q.reshape(n_out, c, h, wd).transpose(0, 2, 3, 1).reshape(n_out, n_in)
        elif xt.shape[-1] != n_in:
            raise self.fail(node, f"input {xt.shape} does not match weights {w.q.shape}")
        out_shape = self.onnx_shape(node.output[0])
        self.values[node.output[0]] = _Pending(
            "fully_connected",
            node.name,
            index,
            [x.name],
            FullyConnectedAttrs(),
            out_shape,
            np.ascontiguousarray(q.astype(w.dtype.np_dtype)),
            s_w,
            w.dtype,
            0,
            bias,
        )

    # -- other ops ---------------------------------------------------------------------------
    def add(self, node, index: int) -> None:
        a, b = (self.values.get(n) for n in node.input[:2])
        ca, cb = (self.init(n) for n in node.input[:2])
        if isinstance(a, _Pending) and cb is not None or isinstance(b, _Pending) and ca is not None:
            p, const = (a, cb) if isinstance(a, _Pending) else (b, ca)
            if p.kind != "fully_connected" and p.kind not in ("conv2d", "depthwise_conv2d"):
                raise self.fail(node, f"constant added to the output of {p.kind}")
            if p.activation != "none":
                raise self.fail(node, "bias added after an activation")
            n = p.w_scale.size
            c = np.asarray(const, np.float64)
            if p.kind != "fully_connected":
                c = c.reshape(-1) if c.size in (1, n) else None
                if c is None:
                    raise self.fail(node, "constant is not a per-channel bias")
            c = np.broadcast_to(c.reshape(-1), (n,))
            p.bias = c.copy() if p.bias is None else p.bias + c
            self.values[node.output[0]] = p
            return
        xa, xb = self.int_value(node, 0), self.int_value(node, 1)
        out = self.onnx_shape(node.output[0])
        self.values[node.output[0]] = _Pending(
            "add", node.name, index, [xa.name, xb.name], ElementwiseAttrs(), _nhwc(out)
        )

    def relu(self, node, index: int) -> None:
        v = self.values.get(node.input[0])
        if not isinstance(v, _Pending):
            raise self.fail(
                node, "Relu must follow a Conv / MatMul / Gemm / Add before its Quant node"
            )
        if v.kind in ("avg_pool2d",):
            raise self.fail(node, "Relu after an average pool")
        v.activation = "relu"
        self.values[node.output[0]] = v

    def pool_attrs(self, node, xs) -> tuple[Pool2DAttrs, tuple[int, int]]:
        if node.op_type == "GlobalAveragePool":
            k = (xs[2], xs[3])
            return Pool2DAttrs(filter=k, stride=(1, 1), padding="valid"), k
        k = tuple(self.attr(node, "kernel_shape"))
        strides = tuple(self.attr(node, "strides", [1, 1]))
        if len(k) != 2:
            raise self.fail(node, "only 2-D pooling")
        if self.attr(node, "dilations", None) not in (None, [1, 1]):
            raise self.fail(node, "dilated pooling")
        if node.op_type == "AveragePool" and self.attr(node, "count_include_pad", 0):
            raise self.fail(node, "count_include_pad=1 (mcusim divides by the valid taps)")
        padding = self.padding(node, xs[2:], k, strides, (1, 1))
        return Pool2DAttrs(filter=k, stride=strides, padding=padding), k

    def maxpool(self, node, index: int) -> None:
        if len(node.output) > 1 and node.output[1]:
            raise self.fail(node, "the Indices output is not supported")
        v = self.values.get(node.input[0])
        xs = self.onnx_shape(node.input[0])
        attrs, _ = self.pool_attrs(node, xs)
        ys = _nhwc(self.onnx_shape(node.output[0]))
        if isinstance(v, _Pending) and v.kind != "avg_pool2d":
            # max pooling commutes with a (monotonic) quantizer: pool after requantization
            v.pools.append((node.name, attrs, ys, index))
            self.values[node.output[0]] = v
            return
        x = self.int_value(node, 0)
        t = self.tensors[x.name]
        y = self.add_tensor(Tensor(node.output[0], ys, t.dtype, t.quant))
        self.ops.append(Op("max_pool2d", node.name, [x.name], [y], attrs, source_index=index))
        self.values[node.output[0]] = _Int(y)

    def avgpool(self, node, index: int) -> None:
        x = self.int_value(node, 0)
        if self.tensors[x.name].dtype.binary:
            raise self.fail(node, "average pooling of binary values (docs/precision.md)")
        xs = self.onnx_shape(node.input[0])
        attrs, _ = self.pool_attrs(node, xs)
        ys = self.onnx_shape(node.output[0])
        self.values[node.output[0]] = _Pending(
            "avg_pool2d", node.name, index, [x.name], attrs, _nhwc(ys)
        )

    def flatten(self, node, index: int) -> None:
        x = self.int_value(node, 0)
        xs = self.onnx_shape(node.input[0])
        ys = self.onnx_shape(node.output[0])
        if node.op_type == "Flatten" and int(self.attr(node, "axis", 1)) != 1:
            raise self.fail(node, "Flatten with axis != 1")
        if len(ys) != 2 or ys[0] != xs[0]:
            raise self.fail(node, f"reshape {list(xs)} -> {list(ys)}: only flattening to 2-D")
        chw = tuple(xs[1:]) if len(xs) == 4 else x.chw
        self.values[node.output[0]] = _Int(x.name, chw)


def _nhwc(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[0], shape[2], shape[3], shape[1]) if len(shape) == 4 else tuple(shape)


def _replace(attrs, **kw):
    import dataclasses

    names = {f.name for f in dataclasses.fields(attrs)}
    return dataclasses.replace(attrs, **{k: v for k, v in kw.items() if k in names})


def is_onnx(head: bytes) -> bool:
    """An ONNX ModelProto starts with field 1 (ir_version, varint): tag byte 0x08."""
    return len(head) >= 2 and head[0] == 0x08 and head[1] < 0x80
