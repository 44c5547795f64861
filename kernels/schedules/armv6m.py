"""Schedules for Armv6-M cores (Cortex-M0/M0+, e.g. RP2040): CMSIS-NN's portable C.

Without ARM_MATH_DSP (and MVEI) CMSIS-NN compiles its ``#else`` pure-C branches; the
wrappers dispatch as on the DSP build, except that arm_depthwise_conv_s8_opt falls back to
arm_depthwise_conv_s8 and the 1x1_fast s16 path does not exist. Ops CMSIS-NN lacks run
TFLM's reference kernels (soft-float where they use float); reshapes are a memcpy.
Every instruction in these schedules is checked to be Armv6-M code by the Cortex-M0+
timing model.
"""

from __future__ import annotations

from mcusim.errors import UnsupportedOpError
from mcusim.graph import Graph, Op
from mcusim.isa.schedule import Program

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


def schedule(graph: Graph, op: Op) -> Program:
    """CMSIS-NN pure-C (or TFLM reference) schedule of ``op`` on an Armv6-M core."""
    from mcusim.precision import describe, needs_generic_kernel

    from . import cmsis_c_conv, cmsis_c_ops
    from .cmsis_eltwise import same_shape

    kind = op.kind
    if kind in _INT8_ONLY and needs_generic_kernel(graph, op):
        raise UnsupportedOpError(
            f"no Armv6-M schedule for {kind} at {describe(graph, op)}: CMSIS-NN's pure-C "
            "path is INT8 only (sub-byte layers run on Armv7E-M, Armv8.1-M or RISC-V devices)",
            layer=op.label,
        )
    if kind in _INT8_ONLY:
        dt = graph.tensor(op.inputs[0]).dtype
        if dt.name.lower() != "int8":
            raise UnsupportedOpError(
                f"no Armv6-M schedule for {kind} with {dt.name} activations "
                "(CMSIS-NN int8 kernels only)",
                layer=op.label,
            )
    if kind == "conv2d":
        return cmsis_c_conv.conv2d_c_program(graph, op)
    if kind == "depthwise_conv2d":
        return cmsis_c_conv.depthwise_c_program(graph, op)
    if kind == "fully_connected":
        return cmsis_c_ops.fully_connected_c_program(graph, op)
    if kind == "avg_pool2d":
        return cmsis_c_ops.avg_pool_c_program(graph, op)
    if kind == "max_pool2d":
        return cmsis_c_ops.max_pool_c_program(graph, op)
    if kind in ("add", "sub", "mul"):
        if same_shape(graph, op):
            return cmsis_c_ops.elementwise_c_program(graph, op)
        return cmsis_c_ops.reference_c_program(graph, op)
    if kind == "softmax":
        return cmsis_c_ops.softmax_c_program(graph, op)
    if kind in ("reshape", "squeeze"):
        return cmsis_c_ops.reshape_c_program(graph, op)
    if kind == "concat":
        return cmsis_c_ops.concat_c_program(graph, op)
    return cmsis_c_ops.reference_c_program(graph, op)
