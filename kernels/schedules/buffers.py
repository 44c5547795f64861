"""Scratch buffers the library kernels ask the runtime for (CMSIS-NN DSP build, GCC).

These follow CMSIS-NN's ``*_get_buffer_size`` rules for a DSP (non-MVE) target compiled
with GCC: the sizes TFLite Micro requests from its arena before calling each kernel.
"""

from __future__ import annotations

from mcusim.graph import Graph, Op
from mcusim.isa.schedule import Program


def scratch_bytes(graph: Graph, op: Op, program: Program) -> int:
    """Bytes of arena scratch the kernel ``program.kernel`` uses during ``op``."""
    fn = program.kernel.split(" ")[0]
    t = graph.tensors
    if fn in ("arm_convolve_s8", "arm_convolve_1_x_n_s8"):
        w = t[op.inputs[1]]  # OHWI
        cols = w.shape[1] * w.shape[2] * w.shape[3]
        cols += (-cols) % 4  # rhs columns aligned to 4
        return 2 * cols * 2  # two im2col columns of int16
    if fn == "arm_depthwise_conv_s8_opt":
        w = t[op.inputs[1]]  # 1HWC
        return w.shape[1] * w.shape[2] * w.shape[3] * 2  # one int16 im2col column
    if fn == "arm_avgpool_s8":
        return t[op.inputs[0]].shape[-1] * 4  # one int32 accumulator per channel
    # arm_convolve_1x1_s8_fast (GCC: no s16 buffer), arm_convolve_1x1_s8,
    # arm_depthwise_conv_3x3_s8, generic depthwise, fully connected, pooling max,
    # elementwise, softmax and the TFLM reference kernels use no scratch.
    return 0
