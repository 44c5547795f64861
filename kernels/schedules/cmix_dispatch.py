"""Dispatch of sub-byte and binary layers on Armv7E-M + DSP (docs/cores.md, "Sub-byte and
binary on Cortex-M"): W1A1 -> XNOR-popcount (cmix_binary.py); W4A8 int8 -> CMSIS-NN's s4
kernels; everything else -> our CMix-NN-style schedules (cmix_conv.py, cmix_depthwise.py);
pooling and add on packed activations (cmix_pool.py)."""

from __future__ import annotations

from mcusim.errors import UnsupportedOpError
from mcusim.graph import Graph, Op
from mcusim.isa.schedule import Program
from mcusim.precision import describe

from .cmix_common import layer_prec


def schedule(graph: Graph, op: Op, cmsis_s4: bool = True) -> Program:
    """``cmsis_s4=False`` (MVE builds, where CMSIS-NN compiles its Helium s4 branch, not the
    DSP one) schedules W4A8 layers with the CMix-NN-style code too."""
    from . import cmix_binary, cmix_conv, cmix_depthwise, cmix_pool

    kind = op.kind
    p = layer_prec(graph, op)
    x = graph.tensor(op.inputs[0]).dtype
    if x.is_float or x.bits > 8:
        raise UnsupportedOpError(
            f"no Armv7E-M sub-byte schedule for {kind} {describe(graph, op)}", layer=op.label
        )
    if kind in ("conv2d", "depthwise_conv2d", "fully_connected"):
        if p.w == 1 and p.a == 1:
            return cmix_binary.program(graph, op)
        if p.a == 1:
            raise UnsupportedOpError(
                f"binary activations need binary weights on Cortex-M ({describe(graph, op)})",
                layer=op.label,
            )
        if kind == "conv2d":
            return cmix_conv.conv2d_program(graph, op, cmsis_s4)
        if kind == "fully_connected":
            return cmix_conv.fully_connected_program(graph, op, cmsis_s4)
        return cmix_depthwise.depthwise_program(graph, op, cmsis_s4)
    if kind == "max_pool2d":
        return cmix_pool.max_pool_program(graph, op)
    if kind == "avg_pool2d":
        return cmix_pool.avg_pool_program(graph, op)
    if kind == "add":
        return cmix_pool.add_program(graph, op)
    raise UnsupportedOpError(
        f"no Armv7E-M sub-byte schedule for {kind} {describe(graph, op)}", layer=op.label
    )
