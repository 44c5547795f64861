"""Where kernels register: one compute implementation per op kind (and precision).

A kernel is split the way TFLite Micro splits it: ``prepare`` runs once per model (derive
integer multipliers, clamp ranges, reorder weights) and returns a params object; ``compute``
runs per inference on numpy arrays and must be numba-compiled in its hot loops.

Instruction schedules (timing) are registered separately per ISA in
:mod:`mcusim.kernels.schedules`; they never run compute.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mcusim.errors import UnsupportedOpError


@dataclass(frozen=True)
class KernelDef:
    kind: str
    prepare: Callable[..., Any]  # (graph, op) -> params
    compute: Callable[[Any, list[np.ndarray]], list[np.ndarray]]  # (params, inputs) -> outputs
    precision: str = "int8"  # activation precision family this kernel implements


KERNELS: dict[tuple[str, str], KernelDef] = {}


def register(kdef: KernelDef) -> KernelDef:
    KERNELS[(kdef.kind, kdef.precision)] = kdef
    return kdef


def kernel_for(kind: str, precision: str = "int8", *, layer: str | None = None) -> KernelDef:
    try:
        return KERNELS[(kind, precision)]
    except KeyError:
        raise UnsupportedOpError(
            f"no {precision} compute kernel for op kind {kind!r}", layer=layer
        ) from None
