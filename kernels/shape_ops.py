"""Data-movement kernels: reshape, squeeze, pad, concat, transpose, strided_slice.

These move bytes and never change values, except two cases that TFLite defines:
PAD fills with the output zero point (or the PADV2 constant), and CONCAT of int8 inputs
whose quantization differs from the output's requantizes them. TFLM itself *rejects* the
latter in Prepare (it requires every int8 input to share the output scale and zero point;
the converter inserts QUANTIZE ops instead). For such graphs we apply TFLite's
ConcatenationWithScaling arithmetic (float32: round(q*s_in/s_out - zp_in*s_in/s_out) +
zp_out, clamped) so that hand-built graphs still run; inputs that share the output
quantization are copied bit for bit as TFLM does.

strided_slice expects the importer's normalised attributes (mcusim.ops.StridedSliceAttrs):
per input axis the absolute start and stop TFLite's StartForAxis/StopForAxis produce
(masks and negative indices already resolved and clamped; a stop of -1 with a negative
stride means "through index 0"), the stride, and the input axes to drop (shrink_axis_mask).
The selected indices of an axis are range(begin, end, stride).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mcusim.errors import GraphError, UnsupportedOpError

from .registry import KernelDef, register

# ---------------------------------------------------------------------------------------
# reshape / squeeze: a view with the output shape (row-major order is unchanged)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReshapeParams:
    out_shape: tuple[int, ...]
    dtype: np.dtype


def reshape_prepare(graph, op) -> ReshapeParams:
    tin = graph.tensors[op.inputs[0]]
    tout = graph.tensors[op.outputs[0]]
    if tin.size != tout.size:
        raise GraphError(
            f"{op.kind} from {tin.shape} to {tout.shape} changes the element count",
            layer=op.label,
        )
    return ReshapeParams(tuple(tout.shape), tout.dtype.np_dtype)


def reshape_compute(params: ReshapeParams, inputs: list[np.ndarray]) -> list[np.ndarray]:
    x = np.asarray(inputs[0], dtype=params.dtype)
    return [np.ascontiguousarray(x).reshape(params.out_shape).copy()]


# ---------------------------------------------------------------------------------------
# pad
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PadParams:
    paddings: tuple[tuple[int, int], ...]
    value: int | float
    out_shape: tuple[int, ...]
    dtype: np.dtype


def pad_prepare(graph, op) -> PadParams:
    tin = graph.tensors[op.inputs[0]]
    tout = graph.tensors[op.outputs[0]]
    paddings = tuple((int(a), int(b)) for a, b in op.attrs.paddings)
    if not paddings:
        if len(op.inputs) < 2 or not op.inputs[1]:
            raise GraphError("pad has neither paddings attributes nor a tensor", layer=op.label)
        t = graph.tensors[op.inputs[1]]
        if t.data is None:
            raise UnsupportedOpError("pad with non-constant paddings", layer=op.label)
        paddings = tuple((int(a), int(b)) for a, b in np.asarray(t.data).reshape(-1, 2))
    if len(paddings) != len(tin.shape):
        raise GraphError(
            f"{len(paddings)} padding pairs for a rank-{len(tin.shape)} input", layer=op.label
        )
    if any(a < 0 or b < 0 for a, b in paddings):
        raise UnsupportedOpError("negative paddings", layer=op.label)
    expect = tuple(s + a + b for s, (a, b) in zip(tin.shape, paddings, strict=True))
    if expect != tuple(tout.shape):
        raise GraphError(
            f"output shape {tout.shape} is not the padded input shape {expect}", layer=op.label
        )
    value: int | float = 0
    if len(op.inputs) > 2 and op.inputs[2]:
        cv = graph.tensors[op.inputs[2]]
        if cv.data is None:
            raise UnsupportedOpError("pad with a non-constant pad value", layer=op.label)
        value = np.asarray(cv.data).reshape(-1)[0].item()
    elif tout.quant is not None and not tout.dtype.is_float:
        value = int(tout.quant.zero_point[0])
    return PadParams(paddings, value, tuple(tout.shape), tout.dtype.np_dtype)


def pad_compute(params: PadParams, inputs: list[np.ndarray]) -> list[np.ndarray]:
    x = inputs[0]
    out = np.full(params.out_shape, params.value, dtype=params.dtype)
    region = tuple(slice(a, a + s) for (a, _), s in zip(params.paddings, x.shape, strict=True))
    out[region] = x
    return [out]


# ---------------------------------------------------------------------------------------
# concat
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConcatParams:
    axis: int
    consts: tuple[np.ndarray | None, ...]  # per input, None = runtime input
    tables: tuple[np.ndarray | None, ...]  # int8 requantization table per input, or None
    out_shape: tuple[int, ...]
    dtype: np.dtype


def _scaling_table(s_in: np.float32, zp_in: int, s_out: np.float32, zp_out: int) -> np.ndarray:
    """TFLite ConcatenationWithScaling for one int8 input, as a 256-entry table."""
    inv_out = np.float32(1.0) / s_out
    scale = np.float32(s_in * inv_out)
    bias = np.float32(np.float32(-zp_in) * scale)
    q = np.arange(-128, 128).astype(np.float32)
    v = (q * scale + bias).astype(np.float32).astype(np.float64)
    r = np.trunc(v + np.copysign(0.5, v)).astype(np.int64) + zp_out  # TfLiteRound
    return np.clip(r, -128, 127).astype(np.int8)


def concat_prepare(graph, op) -> ConcatParams:
    tout = graph.tensors[op.outputs[0]]
    if op.attrs.activation != "none":
        raise UnsupportedOpError("concat with a fused activation", layer=op.label)
    ndim = len(tout.shape)
    axis = op.attrs.axis + ndim if op.attrs.axis < 0 else op.attrs.axis
    if not 0 <= axis < ndim:
        raise GraphError(f"concat axis {op.attrs.axis} out of range", layer=op.label)
    total = 0
    consts, tables = [], []
    for name in op.inputs:
        t = graph.tensors[name]
        if t.dtype != tout.dtype:
            raise UnsupportedOpError(f"concat of {t.dtype} into {tout.dtype}", layer=op.label)
        if len(t.shape) != ndim or any(
            t.shape[i] != tout.shape[i] for i in range(ndim) if i != axis
        ):
            raise GraphError(f"concat input {t.shape} does not fit {tout.shape}", layer=op.label)
        total += t.shape[axis]
        consts.append(None if t.data is None else np.asarray(t.data))
        table = None
        if t.quant is not None and tout.quant is not None and t.quant != tout.quant:
            if tout.dtype.np_dtype != np.int8:
                raise UnsupportedOpError(
                    f"requantizing concat of {tout.dtype} inputs", layer=op.label
                )
            table = _scaling_table(
                np.float32(t.quant.scale[0]),
                int(t.quant.zero_point[0]),
                np.float32(tout.quant.scale[0]),
                int(tout.quant.zero_point[0]),
            )
        tables.append(table)
    if total != tout.shape[axis]:
        raise GraphError(
            f"concat inputs sum to {total} along axis {axis}, output has {tout.shape[axis]}",
            layer=op.label,
        )
    return ConcatParams(axis, tuple(consts), tuple(tables), tuple(tout.shape), tout.dtype.np_dtype)


def concat_compute(params: ConcatParams, inputs: list[np.ndarray]) -> list[np.ndarray]:
    it = iter(inputs)
    parts = []
    for c, table in zip(params.consts, params.tables, strict=True):
        x = c if c is not None else next(it)
        if table is not None:
            x = table[x.view(np.uint8) ^ np.uint8(0x80)]
        parts.append(x)
    return [np.concatenate(parts, axis=params.axis).astype(params.dtype, copy=False)]


# ---------------------------------------------------------------------------------------
# transpose
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TransposeParams:
    perm: tuple[int, ...]
    out_shape: tuple[int, ...]


def transpose_prepare(graph, op) -> TransposeParams:
    tin = graph.tensors[op.inputs[0]]
    tout = graph.tensors[op.outputs[0]]
    perm = tuple(op.attrs.perm)
    if not perm and len(op.inputs) > 1 and op.inputs[1]:
        t = graph.tensors[op.inputs[1]]
        if t.data is None:
            raise UnsupportedOpError("transpose with a non-constant permutation", layer=op.label)
        perm = tuple(int(p) for p in np.asarray(t.data).reshape(-1))
    ndim = len(tin.shape)
    perm = tuple(p + ndim if p < 0 else p for p in perm)
    if sorted(perm) != list(range(ndim)):
        raise GraphError(f"transpose permutation {perm} is not one of rank {ndim}", layer=op.label)
    expect = tuple(tin.shape[p] for p in perm)
    if expect != tuple(tout.shape):
        raise GraphError(f"output shape {tout.shape} is not {expect}", layer=op.label)
    return TransposeParams(perm, expect)


def transpose_compute(params: TransposeParams, inputs: list[np.ndarray]) -> list[np.ndarray]:
    return [np.ascontiguousarray(np.transpose(inputs[0], params.perm))]


# ---------------------------------------------------------------------------------------
# strided_slice
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StridedSliceParams:
    index: tuple[np.ndarray, ...]  # open-mesh index arrays (np.ix_) of the kept elements
    out_shape: tuple[int, ...]


def strided_slice_prepare(graph, op) -> StridedSliceParams:
    tin = graph.tensors[op.inputs[0]]
    tout = graph.tensors[op.outputs[0]]
    a = op.attrs
    ndim = len(tin.shape)
    if not (len(a.begin) == len(a.end) == len(a.strides) == ndim):
        raise GraphError(
            f"strided_slice needs begin/end/strides for all {ndim} axes (normalised)",
            layer=op.label,
        )
    ranges = []
    for ax in range(ndim):
        if a.strides[ax] == 0:
            raise GraphError("strided_slice stride 0", layer=op.label)
        r = np.arange(a.begin[ax], a.end[ax], a.strides[ax], dtype=np.int64)
        if r.size and (r.min() < 0 or r.max() >= tin.shape[ax]):
            raise GraphError(
                f"strided_slice axis {ax}: indices {a.begin[ax]}:{a.end[ax]}:{a.strides[ax]} "
                f"outside 0..{tin.shape[ax] - 1}",
                layer=op.label,
            )
        ranges.append(r)
    shrink = set(a.shrink_axes)
    for ax in shrink:
        if ranges[ax].size != 1:
            raise GraphError(f"strided_slice shrinks axis {ax} of length != 1", layer=op.label)
    kept = tuple(r.size for ax, r in enumerate(ranges) if ax not in shrink)
    if kept != tuple(tout.shape):
        raise GraphError(
            f"strided_slice selects shape {kept}, output tensor is {tuple(tout.shape)}",
            layer=op.label,
        )
    return StridedSliceParams(np.ix_(*ranges), kept)


def strided_slice_compute(params: StridedSliceParams, inputs: list[np.ndarray]) -> list[np.ndarray]:
    return [np.ascontiguousarray(inputs[0][params.index]).reshape(params.out_shape)]


register(KernelDef("reshape", reshape_prepare, reshape_compute))
register(KernelDef("squeeze", reshape_prepare, reshape_compute))
register(KernelDef("pad", pad_prepare, pad_compute))
register(KernelDef("concat", concat_prepare, concat_compute))
register(KernelDef("transpose", transpose_prepare, transpose_compute))
register(KernelDef("strided_slice", strided_slice_prepare, strided_slice_compute))
