"""The quantized graph IR: tensors, ops and a graph in execution order.

Layout is NHWC. Constant tensors carry their (unpacked) data. Per-op ``precision`` and
``placement`` fields exist from the start so later issues (sub-byte precisions, NPU/CPU
placement) fill them in rather than reshaping the IR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .dtypes import ElemType, Quant
from .errors import GraphError
from .ops import OPS


@dataclass(eq=False)
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: ElemType
    quant: Quant | None = None
    data: np.ndarray | None = None  # constant tensors only, unpacked, C-contiguous

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        return math.prod(self.shape)  # 1 for a scalar (shape ())

    @property
    def nbytes(self) -> int:
        """Bytes in device memory (packed for sub-byte types)."""
        return self.dtype.storage_bytes(self.size)


@dataclass(eq=False)
class Op:
    kind: str
    name: str
    inputs: list[str]  # tensor names; "" marks an absent optional input
    outputs: list[str]
    attrs: Any
    precision: str | None = None  # e.g. "W8A8"; None = as the tensors say
    placement: str | None = None  # "cpu" / "npu" / None = let the placer decide
    source_index: int | None = None  # operator index in the source file, for messages

    @property
    def label(self) -> str:
        idx = f"#{self.source_index} " if self.source_index is not None else ""
        return f"{idx}{self.name} ({self.kind})"


@dataclass(eq=False)
class Graph:
    tensors: dict[str, Tensor]
    ops: list[Op]
    inputs: list[str]
    outputs: list[str]
    name: str = "model"
    metadata: dict[str, Any] = field(default_factory=dict)  # provenance etc.

    def tensor(self, name: str) -> Tensor:
        return self.tensors[name]

    def op_inputs(self, op: Op) -> list[Tensor | None]:
        return [self.tensors[n] if n else None for n in op.inputs]

    def op_outputs(self, op: Op) -> list[Tensor]:
        return [self.tensors[n] for n in op.outputs]

    def validate(self) -> Graph:
        """Check names, execution order and each op's shape/type rules."""
        from .graph_checks import check_op  # local: checks import this module

        for n in self.inputs + self.outputs:
            if n not in self.tensors:
                raise GraphError(f"graph input/output {n!r} is not a tensor of the graph")
        produced = {n for n in self.inputs} | {n for n, t in self.tensors.items() if t.is_const}
        for op in self.ops:
            opdef = OPS.get(op.kind)
            if opdef is None:
                raise GraphError(f"unknown op kind {op.kind!r}", layer=op.label)
            if not isinstance(op.attrs, opdef.attrs):
                raise GraphError(
                    f"attributes are {type(op.attrs).__name__}, expected {opdef.attrs.__name__}",
                    layer=op.label,
                )
            lo, hi = opdef.n_inputs
            if not lo <= len(op.inputs) <= hi:
                raise GraphError(f"takes {lo}..{hi} inputs, got {len(op.inputs)}", layer=op.label)
            for n in op.inputs:
                if not n:
                    continue
                if n not in self.tensors:
                    raise GraphError(f"input tensor {n!r} does not exist", layer=op.label)
                if n not in produced:
                    raise GraphError(
                        f"input tensor {n!r} is used before any op produces it", layer=op.label
                    )
            for n in op.outputs:
                if n not in self.tensors:
                    raise GraphError(f"output tensor {n!r} does not exist", layer=op.label)
                produced.add(n)
            check_op(self, op)
        for n in self.outputs:
            if n not in produced:
                raise GraphError(f"graph output {n!r} is never produced")
        return self
