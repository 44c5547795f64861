"""Precisions of layers (docs/precision.md): names, value ranges, accumulator bounds, packing.

Kernels and schedules ask this module what a layer computes: :func:`op_precision` names it
(``"W4A8"``, ``"W1A1"``, ``"A4"`` for ops without weights), :func:`needs_generic_kernel` says
whether the INT8 fast kernels can run it, :func:`acc_bound` is the prepare-time overflow bound
of docs/precision.md section 2. Packing is the .qnn packing (:func:`mcusim.qnn.pack_bits`);
:func:`pack_rows` lays rows of a tensor out as little-endian machine words of that bit stream,
which is what the XNOR-popcount kernels read.
"""

from __future__ import annotations

import numpy as np

from .dtypes import INT8, ElemType
from .graph import Graph, Op, Tensor

MAC_KINDS = ("conv2d", "depthwise_conv2d", "fully_connected")


def width(dtype: ElemType) -> int:
    """Bits per value as a precision name writes it (binary is 1)."""
    return 1 if dtype.binary else dtype.bits


def is_small_int(dtype: ElemType) -> bool:
    """An integer type of at most 8 bits (binary included): what the generic kernels take."""
    return not dtype.is_float and (dtype.binary or dtype.bits <= 8)


def value_range(dtype: ElemType) -> tuple[int, int]:
    """(lowest, highest) integer value of ``dtype`` (binary: -1, +1)."""
    return dtype.min, dtype.max


def max_offset(dtype: ElemType, zero_point: int) -> int:
    """max |x - zero_point| over the values x of ``dtype`` (binary: 1)."""
    if dtype.binary:
        return 1
    return max(abs(dtype.min - zero_point), abs(dtype.max - zero_point))


def zero_point(t: Tensor) -> int:
    """The tensor's (per-tensor) zero point; 0 when it has no quantization."""
    return 0 if t.quant is None else int(t.quant.zero_point[0])


def _tensor(graph: Graph, op: Op, i: int) -> Tensor | None:
    if i >= len(op.inputs) or not op.inputs[i]:
        return None
    return graph.tensors[op.inputs[i]]


def op_precision(graph: Graph, op: Op) -> str:
    """``W<w>A<a>`` of a MAC layer (weights, input activation widths); ``A<a>`` otherwise.

    A signedness suffix is not part of the name (docs/precision.md section 1): W4A4 covers
    int4 and uint4 activations.
    """
    x = graph.tensors[op.inputs[0]]
    if op.kind in MAC_KINDS:
        w = _tensor(graph, op, 1)
        if w is not None:
            return f"W{width(w.dtype)}A{width(x.dtype)}"
    return f"A{width(x.dtype)}"


def describe(graph: Graph, op: Op) -> str:
    """Precision plus exact types, for error messages: ``W4A8 (int4 x uint8 -> int4)``."""
    x = graph.tensors[op.inputs[0]]
    y = graph.tensors[op.outputs[0]]
    w = _tensor(graph, op, 1) if op.kind in MAC_KINDS else None
    types = f"{w.dtype} x {x.dtype}" if w is not None else f"{x.dtype}"
    return f"{op_precision(graph, op)} ({types} -> {y.dtype})"


def needs_generic_kernel(graph: Graph, op: Op) -> bool:
    """True if the op has a sub-byte, binary or uint8 operand, or threshold requantization.

    Such layers run in :mod:`mcusim.kernels.subbyte`; int8 (and the int16/float cases the int8
    kernels accept or refuse themselves) keep their fast kernels.
    """
    if getattr(op.attrs, "requant", "fixed_point") != "fixed_point":
        return True
    names = [op.inputs[0], *op.outputs]
    if op.kind in MAC_KINDS or op.kind == "add":
        names.append(op.inputs[1] if len(op.inputs) > 1 else "")
    for n in names:
        if not n:
            continue
        dt = graph.tensors[n].dtype
        if is_small_int(dt) and dt != INT8:
            return True
    return False


def acc_bound(weights2d: np.ndarray, x_dtype: ElemType, x_zero_point: int) -> int:
    """max over output channels of sum |w| * max |x - zp| (docs/precision.md section 2).

    ``weights2d`` is (channels, taps of one output); the accumulator of a layer stays in int32
    when this is below 2^31.
    """
    w = np.abs(np.asarray(weights2d, dtype=np.int64)).reshape(weights2d.shape[0], -1)
    if w.size == 0:
        return 0
    return int(w.sum(axis=1).max()) * max_offset(x_dtype, x_zero_point)


def packed(values: np.ndarray, dtype: ElemType) -> np.ndarray:
    """The .qnn / device-memory bytes of ``values`` (lsb_first, docs/qnn-format.md 4.2)."""
    from .qnn import pack_bits

    return pack_bits(values, dtype)


def unpacked(data: np.ndarray, dtype: ElemType, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`packed`: values of ``shape`` in ``dtype.np_dtype``."""
    from .qnn import unpack_bits

    count = int(np.prod(shape, dtype=np.int64))
    return unpack_bits(data, dtype, count).reshape(shape)


def pack_rows(values: np.ndarray, dtype: ElemType, word_bits: int = 64) -> np.ndarray:
    """Pack each row (last axis) separately into little-endian words of ``word_bits``.

    Row r becomes ``ceil(n*bits/word_bits)`` words holding the .qnn bit stream of that row;
    the bits after the row's end are 0 (for binary: the value -1 pads, whose bit is 0). Word
    j bit k is stream bit j*word_bits + k, as a little-endian load of the packed bytes gives.
    """
    if word_bits not in (8, 16, 32, 64):
        raise ValueError(f"word_bits must be 8, 16, 32 or 64, not {word_bits}")
    v = np.asarray(values)
    n = v.shape[-1]
    per = word_bits // dtype.bits if 8 % dtype.bits == 0 else 0
    if per == 0:
        raise ValueError(f"{dtype} does not divide a byte; rows cannot be word-packed")
    n_words = -(-n // per)
    pad_value = dtype.min if dtype.binary else 0
    rows = v.reshape(-1, n)
    full = np.full((rows.shape[0], n_words * per), pad_value, dtype=dtype.np_dtype)
    full[:, :n] = rows
    data = packed(full, dtype)
    words = data.view(np.dtype(f"<u{word_bits // 8}"))
    return words.reshape(*v.shape[:-1], n_words).copy()
