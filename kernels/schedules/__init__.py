"""Instruction schedules per ISA: what a library kernel executes for one op of a graph.

    from mcusim.kernels.schedules import schedule_for
    prog = schedule_for("armv7em-dsp", graph, op)      # -> mcusim.isa.schedule.Program
    res = core_timing("cortex-m4").time(prog)           # -> TimingResult

For "armv7em-dsp" (Cortex-M4/M7 class cores with the DSP extension) the schedules follow
CMSIS-NN's int8 kernels and their dispatch (the chosen function is ``prog.kernel``), TFLM
reference kernels for ops CMSIS-NN lacks, and memcpy for reshapes. Schedules are data: a
timing model for another core times the same Program with its own rules.
"""

from __future__ import annotations

from collections.abc import Callable

from mcusim.errors import UnsupportedOpError
from mcusim.graph import Graph, Op
from mcusim.isa.schedule import Program

Builder = Callable[[Graph, Op], Program]

ISA_ALIASES = {
    "armv7em-dsp": "armv7em-dsp",
    "armv7e-m": "armv7em-dsp",
    "armv7em": "armv7em-dsp",
    "cortex-m4": "armv7em-dsp",
    "cortex-m4f": "armv7em-dsp",
    "cortex-m7": "armv7em-dsp",
}


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


def _armv7em(kind: str, graph: Graph, op: Op) -> Program:
    from . import (
        cmsis_conv,
        cmsis_depthwise,
        cmsis_eltwise,
        cmsis_fc,
        cmsis_pool,
        cmsis_softmax,
        copy,
        tflm_reference,
    )

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
        return cmsis_fc.fully_connected_program(graph, op)
    if kind == "avg_pool2d":
        return cmsis_pool.avg_pool_program(graph, op)
    if kind == "max_pool2d":
        return cmsis_pool.max_pool_program(graph, op)
    if kind in ("add", "sub", "mul"):
        if cmsis_eltwise.same_shape(graph, op):
            return cmsis_eltwise.elementwise_program(graph, op)
        return tflm_reference.reference_program(graph, op)
    if kind == "softmax":
        return cmsis_softmax.softmax_program(graph, op)
    if kind in ("reshape", "squeeze"):
        return copy.reshape_program(graph, op)
    if kind == "concat":
        return copy.concat_program(graph, op)
    return tflm_reference.reference_program(graph, op)


def schedule_for(isa: str, graph: Graph, op: Op) -> Program:
    """The instruction schedule ``op`` executes on ``isa`` (e.g. "armv7em-dsp")."""
    key = ISA_ALIASES.get(isa.lower())
    if key is None:
        raise UnsupportedOpError(f"no instruction schedules for ISA {isa!r}", layer=op.label)
    from .buffers import scratch_bytes

    prog = _armv7em(op.kind, graph, op)
    prog.isa = key
    prog.scratch_bytes = scratch_bytes(graph, op, prog)
    return prog
