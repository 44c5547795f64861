"""Schedules for Armv8.1-M Mainline cores with MVE (Cortex-M55, Cortex-M85): CMSIS-NN built
with ARM_MATH_MVEI by GCC 12 (the dispatch of the library's Helium paths), TFLM reference
kernels for ops CMSIS-NN lacks, memcpy for reshapes.

- conv2d: arm_convolve_wrapper_s8 -> 1x1 fast / 1x1 / 1xN / arm_convolve_s8, all on
  arm_nn_mat_mult_nt_t_s8's 4x16 VMLADAVA kernel (mve_conv.py, mve_matmul.py);
- depthwise_conv2d: one-input-channel layers as conv, arm_depthwise_conv_s8_opt's MVE
  4-channel x 4-pixel kernel, else the scalar loops (mve_depthwise.py);
- fully_connected: arm_nn_vec_mat_mult_t_s8's 4-row x 16-column kernel (mve_conv.py);
- pooling and elementwise add/mul: their MVE loops (mve_pool.py, mve_eltwise.py);
- softmax: arm_softmax_s8's scalar path: with GCC 12.0-12.2 CMSIS-NN defines
  ARM_GCC_12_2_ICE (Include/Internal/arm_nn_compiler.h) and compiles out its MVE softmax;
- everything else: TFLM reference C (tflm_reference.py) and memcpy (copy.py), the same
  scalar code as on Armv7E-M (Armv8.1-M executes the Thumb-2 + DSP instruction set).
"""

from __future__ import annotations

from mcusim.errors import UnsupportedOpError
from mcusim.graph import Graph, Op
from mcusim.isa.schedule import Program
from mcusim.observed import OpData
from mcusim.precision import needs_generic_kernel

from .armv7em import _INT8_ONLY, _SUBBYTE


def schedule(graph: Graph, op: Op, data: OpData | None = None) -> Program:
    """CMSIS-NN MVE-path (or TFLM reference) schedule of ``op`` on an Armv8.1-M MVE core;
    ``data``: as for armv7em.schedule."""
    from . import (  # noqa: I001
        cmsis_eltwise,
        cmsis_softmax,
        copy,
        mve_conv,
        mve_depthwise,
        mve_eltwise,
        mve_pool,
        tflm_reference,
    )

    kind = op.kind
    if kind in _SUBBYTE and needs_generic_kernel(graph, op):
        # Helium sub-byte conv / FC (mve_subbyte.py); the rest runs the CMix-NN-style
        # scalar DSP code, which Armv8.1-M Mainline executes (docs/cores.md, "Sub-byte
        # and binary on Cortex-M")
        from . import mve_subbyte
        from .cmix_dispatch import schedule as cmix_schedule

        if mve_subbyte.supported(graph, op):  # conv / FC with int4, int2 weights; W1A1
            return mve_subbyte.program(graph, op)
        prog = cmix_schedule(graph, op, cmsis_s4=False)
        prog.notes.append("sub-byte layer: scalar DSP (CMix-NN style) code, no MVE kernel")
        return prog
    if kind in _INT8_ONLY:
        dt = graph.tensor(op.inputs[0]).dtype
        if dt.name.lower() != "int8":
            raise UnsupportedOpError(
                f"no Armv8.1-M MVE schedule for {kind} with {dt.name} activations "
                "(CMSIS-NN int8 kernels only)",
                layer=op.label,
            )
    if kind == "conv2d":
        return mve_conv.conv2d_program(graph, op)
    if kind == "depthwise_conv2d":
        return mve_depthwise.depthwise_program(graph, op)
    if kind == "fully_connected":
        return mve_conv.fully_connected_program(graph, op)
    if kind == "avg_pool2d":
        return mve_pool.avg_pool_program(graph, op)
    if kind == "max_pool2d":
        return mve_pool.max_pool_program(graph, op)
    if kind in ("add", "sub", "mul"):
        if cmsis_eltwise.same_shape(graph, op):
            return mve_eltwise.elementwise_program(graph, op)
        return tflm_reference.reference_program(graph, op)
    if kind == "softmax":
        prog = cmsis_softmax.softmax_program(graph, op, data)
        prog.notes.append("GCC 12.2: ARM_GCC_12_2_ICE compiles out the MVE softmax")
        return prog
    if kind in ("reshape", "squeeze"):
        return copy.reshape_program(graph, op)
    if kind == "concat":
        return copy.concat_program(graph, op)
    return tflm_reference.reference_program(graph, op)
