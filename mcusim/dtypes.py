"""Element types and quantization parameters of tensors.

Sub-byte and binary types are first-class here so that later precisions (W4A8, W1A1, ...)
fit without changing the IR: in memory (numpy) every integer type is held unpacked in the
smallest numpy integer that holds it; packing only happens in the .qnn file and in the
traffic model (bytes moved = ceil(elements * bits / 8)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ElemType:
    """An element type: integer of 1..8, 16 or 32 bits (signed or not), or float32.

    ``binary`` is the 1-bit type whose bit b encodes the value 2*b-1 (i.e. {-1, +1}).
    """

    name: str
    bits: int
    signed: bool
    is_float: bool = False
    binary: bool = False

    @property
    def np_dtype(self) -> np.dtype:
        """numpy dtype used to hold (unpacked) values of this type."""
        if self.is_float:
            return np.dtype(np.float32)
        if self.bits <= 8:
            return np.dtype(np.int8 if (self.signed or self.binary) else np.uint8)
        if self.bits <= 16:
            return np.dtype(np.int16 if self.signed else np.uint16)
        return np.dtype(np.int32 if self.signed else np.uint32)

    @property
    def min(self) -> int:
        if self.binary:
            return -1
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def max(self) -> int:
        if self.binary:
            return 1
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    def storage_bytes(self, n_elements: int) -> int:
        """Bytes that n_elements occupy in device memory, packed for sub-byte types."""
        return (n_elements * self.bits + 7) // 8

    def __str__(self) -> str:
        return self.name


def _int(bits: int, signed: bool) -> ElemType:
    return ElemType(("int" if signed else "uint") + str(bits), bits, signed)


INT8 = _int(8, True)
UINT8 = _int(8, False)
INT16 = _int(16, True)
INT32 = _int(32, True)
FLOAT32 = ElemType("float32", 32, True, is_float=True)
BINARY = ElemType("binary", 1, False, binary=True)

ELEM_TYPES: dict[str, ElemType] = {
    t.name: t
    for t in (
        [INT8, UINT8, INT16, INT32, FLOAT32, BINARY, _int(16, False), _int(32, False)]
        + [_int(b, s) for b in range(2, 8) for s in (True, False)]
    )
}


def elem_type(name: str) -> ElemType:
    try:
        return ELEM_TYPES[name]
    except KeyError:
        raise ValueError(f"unknown element type {name!r}; known: {sorted(ELEM_TYPES)}") from None


@dataclass(frozen=True, eq=False)
class Quant:
    """Affine quantization real = scale * (q - zero_point).

    ``scale`` is kept as float32, exactly as TFLite stores it, because the integer
    multipliers are derived from those float32 values (in double precision). ``axis`` is
    None for per-tensor quantization, else the per-channel axis.
    """

    scale: np.ndarray  # float32, shape (1,) or (C,)
    zero_point: np.ndarray  # int64, same shape
    axis: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", np.asarray(self.scale, dtype=np.float32).reshape(-1))
        object.__setattr__(
            self, "zero_point", np.asarray(self.zero_point, dtype=np.int64).reshape(-1)
        )
        if self.scale.shape != self.zero_point.shape and self.zero_point.size != 1:
            raise ValueError("quantization scale and zero_point lengths differ")

    @property
    def per_channel(self) -> bool:
        return self.axis is not None and self.scale.size > 1

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Quant)
            and self.axis == other.axis
            and np.array_equal(self.scale, other.scale)
            and np.array_equal(self.zero_point, other.zero_point)
        )

    def __hash__(self) -> int:
        return hash((self.axis, self.scale.tobytes(), self.zero_point.tobytes()))
