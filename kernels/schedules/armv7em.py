"""Schedules for Armv7E-M / Armv8-M Mainline cores with the DSP extension (M4, M7, M33).

Follows CMSIS-NN's dispatch for its DSP (SMLAD) int8 paths; ops CMSIS-NN lacks run TFLM's
reference kernels; reshapes are a memcpy. Sub-byte, binary, uint8 and threshold layers
(conv, depthwise, FC, pooling, add) go to cmix_dispatch.py (CMSIS-NN s4 kernels for W4A8,
else our CMix-NN-style and XNOR-popcount renderings).
"""

from __future__ import annotations

from mcusim.errors import UnsupportedOpError
from mcusim.graph import Graph, Op
from mcusim.isa.schedule import Program
from mcusim.observed import OpData
from mcusim.precision import needs_generic_kernel

# kinds whose schedules are CMSIS-NN int8 kernels: they need int8 activations
_INT8_ONLY = frozenset(
    (
        "conv2d",
        "depthwise_conv2d",
        "fully_connected",
        "avg_pool2d",
        "max_pool2d",
        "add",
        "sub",
        "mul",
        "softmax",
    )
)


# kinds with sub-byte schedules (cmix_dispatch.py): MAC layers, pooling, add
_SUBBYTE = frozenset(
    ("conv2d", "depthwise_conv2d", "fully_connected", "avg_pool2d", "max_pool2d", "add")
)


def schedule(graph: Graph, op: Op, data: OpData | None = None) -> Program:
    """CMSIS-NN DSP-path (or TFLM reference) schedule of ``op`` on an Armv7E-M core;
    ``data``: the run's observed data facts for a kind in DATA_KINDS (mcusim.observed)."""
    kind = op.kind
    from . import (  # noqa: I001
        cmsis_conv,
        cmsis_depthwise,
        cmsis_eltwise,
        cmsis_fc,
        cmsis_pool,
        cmsis_softmax,
        copy,
        tflm_reference,
    )

    if kind in _SUBBYTE and needs_generic_kernel(graph, op):
        # sub-byte / binary / uint8 / threshold layers: CMSIS-NN s4 or CMix-NN style
        from .cmix_dispatch import schedule as cmix_schedule

        return cmix_schedule(graph, op)
    if kind in _INT8_ONLY:
        dt = graph.tensor(op.inputs[0]).dtype
        if dt.name.lower() != "int8":
            raise UnsupportedOpError(
                f"no Armv7E-M schedule for {kind} with {dt.name} activations "
                "(CMSIS-NN int8 kernels only)",
                layer=op.label,
            )
    if kind == "conv2d":
        return cmsis_conv.conv2d_program(graph, op)
    if kind == "depthwise_conv2d":
        return cmsis_depthwise.depthwise_program(graph, op)
    if kind == "fully_connected":
        return cmsis_fc.fully_connected_program(graph, op, data)
    if kind == "avg_pool2d":
        return cmsis_pool.avg_pool_program(graph, op)
    if kind == "max_pool2d":
        return cmsis_pool.max_pool_program(graph, op)
    if kind in ("add", "sub", "mul"):
        if cmsis_eltwise.same_shape(graph, op):
            return cmsis_eltwise.elementwise_program(graph, op)
        return tflm_reference.reference_program(graph, op)
    if kind == "softmax":
        return cmsis_softmax.softmax_program(graph, op, data)
    if kind in ("reshape", "squeeze"):
        return copy.reshape_program(graph, op)
    if kind == "concat":
        return copy.concat_program(graph, op)
    return tflm_reference.reference_program(graph, op)
