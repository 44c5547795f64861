"""Build small .tflite flatbuffers in memory, for tests that need models nobody converted.

Uses the ``tflite`` package's generated builder functions with ``flatbuffers.Builder`` so
the files are real TFLite schema v3 models that TFLM loads and runs. Usage::

    b = TFLiteBuilder()
    x = b.tensor("x", shape=(1, 8, 8, 3), dtype="int8", scale=0.05, zero_point=-3)
    w = b.tensor("w", shape=(4, 3, 3, 3), dtype="int8", data=w_arr,
                 scale=np.full(4, 0.01), zero_point=np.zeros(4), quantized_dimension=0)
    bias = b.tensor("b", shape=(4,), dtype="int32", data=b_arr, scale=..., zero_point=0)
    y = b.tensor("y", shape=(1, 8, 8, 4), dtype="int8", scale=0.1, zero_point=0)
    b.op("CONV_2D", inputs=[x, w, bias], outputs=[y],
         options=dict(padding="SAME", stride_w=1, stride_h=1, fused_activation="RELU"))
    data: bytes = b.build(inputs=[x], outputs=[y])

Options are given by their schema field names in snake_case (``stride_w``,
``fused_activation_function`` or its short form ``fused_activation``, ``filter_height``,
``new_shape``, ``squeeze_dims``, ``begin_mask`` ...). Enum fields take their schema
names as strings ("SAME", "relu6", ...) or ints; vector fields take sequences of ints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import flatbuffers
import numpy as np
import tflite
from tflite.utils import BUILTIN_OPCODE2NAME

OP_CODES: dict[str, int] = {name: code for code, name in BUILTIN_OPCODE2NAME.items()}

# Builtin options table of each operator we build (schema's builtin_options union).
OPTIONS_TABLE: dict[str, str] = {
    "CONV_2D": "Conv2DOptions",
    "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
    "FULLY_CONNECTED": "FullyConnectedOptions",
    "AVERAGE_POOL_2D": "Pool2DOptions",
    "MAX_POOL_2D": "Pool2DOptions",
    "L2_POOL_2D": "Pool2DOptions",
    "ADD": "AddOptions",
    "SUB": "SubOptions",
    "MUL": "MulOptions",
    "DIV": "DivOptions",
    "RESHAPE": "ReshapeOptions",
    "SQUEEZE": "SqueezeOptions",
    "SOFTMAX": "SoftmaxOptions",
    "PAD": "PadOptions",
    "PADV2": "PadV2Options",
    "CONCATENATION": "ConcatenationOptions",
    "MEAN": "ReducerOptions",
    "SUM": "ReducerOptions",
    "REDUCE_MAX": "ReducerOptions",
    "TRANSPOSE": "TransposeOptions",
    "QUANTIZE": "QuantizeOptions",
    "DEQUANTIZE": "DequantizeOptions",
    "HARD_SWISH": "HardSwishOptions",
    "STRIDED_SLICE": "StridedSliceOptions",
    "LSTM": "LSTMOptions",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "UnidirectionalSequenceLSTMOptions",
    "LEAKY_RELU": "LeakyReluOptions",
    "RESIZE_NEAREST_NEIGHBOR": "ResizeNearestNeighborOptions",
    "TRANSPOSE_CONV": "TransposeConvOptions",
    "GATHER": "GatherOptions",
    "SPLIT": "SplitOptions",
    "EXPAND_DIMS": "ExpandDimsOptions",
}

# Defaults for fields whose schema default (0) would make a broken model.
OPTION_DEFAULTS: dict[str, dict[str, Any]] = {
    "CONV_2D": {"stride_w": 1, "stride_h": 1},
    "DEPTHWISE_CONV_2D": {"stride_w": 1, "stride_h": 1, "depth_multiplier": 1},
    "AVERAGE_POOL_2D": {"stride_w": 1, "stride_h": 1},
    "MAX_POOL_2D": {"stride_w": 1, "stride_h": 1},
    "L2_POOL_2D": {"stride_w": 1, "stride_h": 1},
    "SOFTMAX": {"beta": 1.0},
}

# Option field name -> enum class used for string values.
ENUM_FIELDS: dict[str, Any] = {
    "padding": tflite.Padding,
    "fused_activation_function": tflite.ActivationFunctionType,
    "weights_format": tflite.FullyConnectedOptionsWeightsFormat,
    "kernel_type": tflite.LSTMKernelType,
}

FIELD_ALIASES = {
    "fused_activation": "fused_activation_function",
    "activation": "fused_activation_function",
}

TENSOR_TYPES: dict[str, int] = {
    "float32": tflite.TensorType.FLOAT32,
    "float16": tflite.TensorType.FLOAT16,
    "int32": tflite.TensorType.INT32,
    "uint8": tflite.TensorType.UINT8,
    "int64": tflite.TensorType.INT64,
    "bool": tflite.TensorType.BOOL,
    "int16": tflite.TensorType.INT16,
    "int8": tflite.TensorType.INT8,
    "float64": tflite.TensorType.FLOAT64,
    "uint16": tflite.TensorType.UINT16,
    "uint32": tflite.TensorType.UINT32,
    "int4": tflite.TensorType.INT4,
    "string": tflite.TensorType.STRING,
}

NP_DTYPES: dict[str, Any] = {
    "float32": np.float32,
    "float16": np.float16,
    "int32": np.int32,
    "uint8": np.uint8,
    "int64": np.int64,
    "bool": np.bool_,
    "int16": np.int16,
    "int8": np.int8,
    "float64": np.float64,
    "uint16": np.uint16,
    "uint32": np.uint32,
    "int4": np.int8,
}


@dataclass
class _TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str
    data: bytes | None
    scale: np.ndarray | None
    zero_point: np.ndarray | None
    quantized_dimension: int
    buffer: int = 0


@dataclass
class _OpSpec:
    opcode: int  # index into the operator-code table
    inputs: list[int]
    outputs: list[int]
    options_table: str | None
    options: dict[str, Any]
    custom_options: bytes | None


@dataclass
class _OpCodeSpec:
    builtin: int
    version: int
    custom_code: str | None


def _camel(snake: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in snake.split("_"))


def _pack_int4(values: np.ndarray) -> bytes:
    """TFLite INT4 packing: two values per byte, the first in the low nibble."""
    v = (values.reshape(-1).astype(np.int16) & 0xF).astype(np.uint8)
    if v.size % 2:
        v = np.append(v, np.uint8(0))
    return (v[0::2] | (v[1::2] << 4)).astype(np.uint8).tobytes()


def _align16(n: int) -> int:
    return (n + 15) // 16 * 16


def _enum_value(field_name: str, value: Any) -> Any:
    if isinstance(value, str):
        cls = ENUM_FIELDS.get(field_name)
        if cls is None:
            raise ValueError(f"option {field_name!r} does not take a name ({value!r})")
        members = {k.upper(): v for k, v in vars(cls).items() if not k.startswith("_")}
        if value.upper() not in members:
            raise ValueError(f"unknown {field_name} value {value!r}; known: {sorted(members)}")
        return int(members[value.upper()])
    return value  # numbers and bools go in as they are


class TFLiteBuilder:
    """Collects tensors and operators of one subgraph and serialises them as a .tflite."""

    def __init__(self, description: str = "mcusim test model") -> None:
        self.description = description
        self.tensors: list[_TensorSpec] = []
        self.ops: list[_OpSpec] = []
        self.opcodes: list[_OpCodeSpec] = []
        self.buffers: list[bytes | None] = [None]  # buffer 0: the empty sentinel
        # Test hooks to write deliberately broken models.
        self.extra_subgraphs = 0
        self.buffer_index_override: dict[int, int] = {}

    # -- tensors ---------------------------------------------------------------------
    def tensor(
        self,
        name: str,
        shape: Sequence[int],
        dtype: str = "int8",
        data: np.ndarray | None = None,
        scale: float | Sequence[float] | np.ndarray | None = None,
        zero_point: int | Sequence[int] | np.ndarray | None = None,
        quantized_dimension: int = 0,
    ) -> int:
        """Add a tensor (constant when ``data`` is given); returns its index."""
        dtype = dtype.lower()
        if dtype not in TENSOR_TYPES:
            raise ValueError(f"unknown tensor dtype {dtype!r}")
        shape = tuple(int(s) for s in shape)
        raw: bytes | None = None
        if data is not None:
            arr = np.asarray(data)
            if dtype in NP_DTYPES:
                arr = arr.astype(NP_DTYPES[dtype])
            if arr.size != int(np.prod(shape, dtype=np.int64)):
                raise ValueError(f"tensor {name!r}: data has {arr.size} elements for {shape}")
            raw = _pack_int4(arr) if dtype == "int4" else np.ascontiguousarray(arr).tobytes()
        sc = None if scale is None else np.asarray(scale, dtype=np.float32).reshape(-1)
        zp = None
        if zero_point is not None:
            zp = np.asarray(zero_point, dtype=np.int64).reshape(-1)
        if sc is not None and zp is None:
            zp = np.zeros(sc.size, dtype=np.int64)
        if sc is not None and zp is not None and zp.size == 1 and sc.size > 1:
            zp = np.full(sc.size, zp[0], dtype=np.int64)
        spec = _TensorSpec(name, shape, dtype, raw, sc, zp, int(quantized_dimension))
        if raw is not None:
            spec.buffer = len(self.buffers)
            self.buffers.append(raw)
        self.tensors.append(spec)
        return len(self.tensors) - 1

    # -- operators -------------------------------------------------------------------
    def _opcode_index(self, builtin: int, version: int, custom_code: str | None) -> int:
        for i, oc in enumerate(self.opcodes):
            if (oc.builtin, oc.version, oc.custom_code) == (builtin, version, custom_code):
                return i
        self.opcodes.append(_OpCodeSpec(builtin, version, custom_code))
        return len(self.opcodes) - 1

    def op(
        self,
        op: str | int,
        inputs: Sequence[int],
        outputs: Sequence[int],
        options: dict[str, Any] | None = None,
        version: int = 1,
        custom_code: str | None = None,
        custom_options: bytes | None = None,
        options_table: str | None = None,
    ) -> int:
        """Add an operator (builtin name like "CONV_2D", or a code); returns its index.

        Use ``-1`` in ``inputs`` for an absent optional input. ``op="CUSTOM"`` with
        ``custom_code`` makes a custom operator.
        """
        if isinstance(op, str):
            if op.upper() not in OP_CODES:
                raise ValueError(f"unknown builtin operator {op!r}")
            code = OP_CODES[op.upper()]
            name = op.upper()
        else:
            code = int(op)
            name = BUILTIN_OPCODE2NAME.get(code, str(code))
        table = options_table or OPTIONS_TABLE.get(name)
        opts = {} if options_table else dict(OPTION_DEFAULTS.get(name, {}))
        for k, v in (options or {}).items():
            opts[FIELD_ALIASES.get(k, k)] = v
        if opts and table is None:
            raise ValueError(f"{name}: no builtin options table known; pass options_table=")
        idx = self._opcode_index(code, version, custom_code)
        self.ops.append(
            _OpSpec(
                idx,
                [int(i) for i in inputs],
                [int(o) for o in outputs],
                table,
                opts,
                custom_options,
            )
        )
        return len(self.ops) - 1

    # -- serialisation ---------------------------------------------------------------
    @staticmethod
    def _int_vector(b: flatbuffers.Builder, values: Sequence[int]) -> int:
        b.StartVector(4, len(values), 4)
        for v in reversed(list(values)):
            b.PrependInt32(int(v))
        return b.EndVector()

    @staticmethod
    def _data_vector(b: flatbuffers.Builder, raw: bytes) -> int:
        b.StartVector(1, len(raw), 16)  # 16-byte aligned like the converter does
        b.head = b.head - len(raw)
        b.Bytes[b.head : b.head + len(raw)] = raw
        return b.EndVector()

    def _options(self, b: flatbuffers.Builder, table: str, opts: dict[str, Any]) -> int:
        prefix = table
        vectors: dict[str, int] = {}
        for k, v in opts.items():
            if isinstance(v, (list, tuple, np.ndarray)):
                fn = getattr(tflite, f"{prefix}Start{_camel(k)}Vector", None)
                if fn is None:
                    raise ValueError(f"{table} has no vector field {k!r}")
                vectors[k] = self._int_vector(b, list(v))
        getattr(tflite, f"{prefix}Start")(b)
        for k, v in opts.items():
            add = getattr(tflite, f"{prefix}Add{_camel(k)}", None)
            if add is None:
                raise ValueError(f"{table} has no field {k!r}")
            add(b, vectors[k] if k in vectors else _enum_value(k, v))
        return getattr(tflite, f"{prefix}End")(b)

    def _quant(self, b: flatbuffers.Builder, t: _TensorSpec) -> int | None:
        if t.scale is None:
            return None
        tflite.QuantizationParametersStartScaleVector(b, t.scale.size)
        for v in reversed(t.scale.tolist()):
            b.PrependFloat32(v)
        scale_off = b.EndVector()
        tflite.QuantizationParametersStartZeroPointVector(b, t.zero_point.size)
        for v in reversed(t.zero_point.tolist()):
            b.PrependInt64(int(v))
        zp_off = b.EndVector()
        tflite.QuantizationParametersStart(b)
        tflite.QuantizationParametersAddScale(b, scale_off)
        tflite.QuantizationParametersAddZeroPoint(b, zp_off)
        tflite.QuantizationParametersAddQuantizedDimension(b, t.quantized_dimension)
        return tflite.QuantizationParametersEnd(b)

    def build(
        self, inputs: Sequence[int], outputs: Sequence[int], external_buffers: bool = False
    ) -> bytes:
        """Serialise the model with the given subgraph inputs/outputs (tensor indices).

        ``external_buffers`` stores constant data after the flatbuffer, addressed by
        Buffer.offset/size, as the converter does for models over 2 GB.
        """
        if not external_buffers:
            return self._build(inputs, outputs, None)
        # Offsets do not change the flatbuffer's size: build once to learn it.
        fb_len = len(self._build(inputs, outputs, [(2, 2)] * len(self.buffers)))
        locs, tail, pos = [], b"", _align16(fb_len)
        for raw in self.buffers:
            if raw:
                locs.append((pos + len(tail), len(raw)))
                tail += raw + bytes(_align16(len(raw)) - len(raw))
            else:
                locs.append((0, 0))
        fb = self._build(inputs, outputs, locs)
        assert len(fb) == fb_len
        return fb + bytes(_align16(fb_len) - fb_len) + tail

    def _build(
        self,
        inputs: Sequence[int],
        outputs: Sequence[int],
        external: list[tuple[int, int]] | None,
    ) -> bytes:
        b = flatbuffers.Builder(1024)

        # Buffers.
        buf_offs = []
        for i, raw in enumerate(self.buffers):
            data_off = self._data_vector(b, raw) if raw and external is None else None
            tflite.BufferStart(b)
            if data_off is not None:
                tflite.BufferAddData(b, data_off)
            if external is not None and raw:
                tflite.BufferAddOffset(b, external[i][0])
                tflite.BufferAddSize(b, external[i][1])
            buf_offs.append(tflite.BufferEnd(b))

        # Tensors.
        tensor_offs = []
        for i, t in enumerate(self.tensors):
            name_off = b.CreateString(t.name)
            shape_off = self._int_vector(b, t.shape)
            q_off = self._quant(b, t)
            tflite.TensorStart(b)
            tflite.TensorAddShape(b, shape_off)
            tflite.TensorAddType(b, TENSOR_TYPES[t.dtype])
            tflite.TensorAddBuffer(b, self.buffer_index_override.get(i, t.buffer))
            tflite.TensorAddName(b, name_off)
            if q_off is not None:
                tflite.TensorAddQuantization(b, q_off)
            tensor_offs.append(tflite.TensorEnd(b))

        # Operators.
        op_offs = []
        for o in self.ops:
            in_off = self._int_vector(b, o.inputs)
            out_off = self._int_vector(b, o.outputs)
            opt_off = self._options(b, o.options_table, o.options) if o.options_table else None
            cust_off = b.CreateByteVector(o.custom_options) if o.custom_options else None
            tflite.OperatorStart(b)
            tflite.OperatorAddOpcodeIndex(b, o.opcode)
            tflite.OperatorAddInputs(b, in_off)
            tflite.OperatorAddOutputs(b, out_off)
            if opt_off is not None:
                tflite.OperatorAddBuiltinOptionsType(
                    b, getattr(tflite.BuiltinOptions, o.options_table)
                )
                tflite.OperatorAddBuiltinOptions(b, opt_off)
            if cust_off is not None:
                tflite.OperatorAddCustomOptions(b, cust_off)
            op_offs.append(tflite.OperatorEnd(b))

        def table_vector(start_fn, offs: list[int]) -> int:
            start_fn(b, len(offs))
            for off in reversed(offs):
                b.PrependUOffsetTRelative(off)
            return b.EndVector()

        sg_offs = []
        for _ in range(1 + self.extra_subgraphs):
            t_vec = table_vector(tflite.SubGraphStartTensorsVector, tensor_offs)
            in_vec = self._int_vector(b, inputs)
            out_vec = self._int_vector(b, outputs)
            op_vec = table_vector(tflite.SubGraphStartOperatorsVector, op_offs)
            sg_name = b.CreateString("main")
            tflite.SubGraphStart(b)
            tflite.SubGraphAddTensors(b, t_vec)
            tflite.SubGraphAddInputs(b, in_vec)
            tflite.SubGraphAddOutputs(b, out_vec)
            tflite.SubGraphAddOperators(b, op_vec)
            tflite.SubGraphAddName(b, sg_name)
            sg_offs.append(tflite.SubGraphEnd(b))

        # Operator codes.
        oc_offs = []
        for oc in self.opcodes:
            cc_off = b.CreateString(oc.custom_code) if oc.custom_code is not None else None
            tflite.OperatorCodeStart(b)
            tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(oc.builtin, 127))
            tflite.OperatorCodeAddBuiltinCode(b, oc.builtin)
            tflite.OperatorCodeAddVersion(b, oc.version)
            if cc_off is not None:
                tflite.OperatorCodeAddCustomCode(b, cc_off)
            oc_offs.append(tflite.OperatorCodeEnd(b))

        oc_vec = table_vector(tflite.ModelStartOperatorCodesVector, oc_offs)
        sg_vec = table_vector(tflite.ModelStartSubgraphsVector, sg_offs)
        buf_vec = table_vector(tflite.ModelStartBuffersVector, buf_offs)
        desc = b.CreateString(self.description)
        tflite.ModelStart(b)
        tflite.ModelAddVersion(b, 3)
        tflite.ModelAddOperatorCodes(b, oc_vec)
        tflite.ModelAddSubgraphs(b, sg_vec)
        tflite.ModelAddDescription(b, desc)
        tflite.ModelAddBuffers(b, buf_vec)
        b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
        return bytes(b.Output())


# -- convenience for tests -----------------------------------------------------------
def quantize_bias(bias_real: np.ndarray, in_scale: float, w_scale: np.ndarray) -> tuple:
    """int32 bias and its scale (in_scale * w_scale) as the converter makes them."""
    s = (np.float32(in_scale) * np.asarray(w_scale, dtype=np.float32)).astype(np.float32)
    q = np.round(np.asarray(bias_real, dtype=np.float64) / s.astype(np.float64))
    return np.clip(q, -(2**31), 2**31 - 1).astype(np.int32), s
