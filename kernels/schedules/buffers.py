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
    if fn == "cmix-style" or fn in _S4_FUNCS:
        return _subbyte_scratch_bytes(graph, op, program)
    if program.isa == "armv8.1m-mve":
        return _mve_scratch_bytes(graph, op, program)
    if program.isa in ("rv32-xpulpv2", "rv32-xpulpnn"):
        from .pulpnn_common import scratch_bytes as pulpnn_scratch

        return pulpnn_scratch(graph, op, program)
    if program.isa == "armv6m":
        return _armv6m_scratch_bytes(graph, op, fn)
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


def _armv6m_scratch_bytes(graph: Graph, op: Op, fn: str) -> int:
    """CMSIS-NN built without ARM_MATH_DSP/MVEI (Armv6-M): arm_convolve_s8_get_buffer_size
    keeps its non-MVE rule (two s16 im2col columns of aligned_rhs_cols); the depthwise opt,
    avgpool (its C branch needs no accumulator buffer) and 1x1 sizes are 0."""
    if fn in ("arm_convolve_s8", "arm_convolve_1_x_n_s8"):
        w = graph.tensors[op.inputs[1]]  # OHWI
        cols = w.shape[1] * w.shape[2] * w.shape[3]
        cols += (-cols) % 4
        return 2 * cols * 2
    return 0


# --- MVE build (ARM_MATH_MVEI): the *_get_buffer_size_mve rules ----------------------------
def _conv_s8_mve(in_c: int, k_h: int, k_w: int) -> int:
    """arm_convolve_s8_get_buffer_size_mve: 4 im2col columns, each rounded up to 16 bytes."""
    return 4 * (-(-(in_c * k_h * k_w) // 16)) * 16


def _mve_scratch_bytes(graph: Graph, op: Op, program: Program) -> int:
    from .common import conv_geom
    from .mve_conv import _one_x_n_split
    from .mve_depthwise import CH_IN_BLOCK_MVE

    k = program.kernel
    fn = k.split(" ")[0]
    t = graph.tensors
    if fn == "arm_depthwise_conv_wrapper_s8":  # one input channel: transposed filter + conv
        g = conv_geom(graph, op)
        w = t[op.inputs[1]]
        conv = 0 if "1x1" in k else _conv_s8_mve(g.in_c, g.k_h, g.k_w)
        return conv + int(w.size)
    if fn in ("arm_convolve_s8", "arm_convolve_1_x_n_s8"):
        g = conv_geom(graph, op)
        split = _one_x_n_split(g) if "-> arm_convolve_s8" not in k else None
        if fn == "arm_convolve_1_x_n_s8" and split is not None:
            # arm_convolve_1_x_n_s8_get_buffer_size_mve: the larger padded im2col row
            _, _, _, pad_l, pad_r = split
            left = g.k_w * g.in_c
            return max(left + pad_l, left - g.in_c + pad_r)
        return _conv_s8_mve(g.in_c, g.k_h, g.k_w)
    if fn == "arm_depthwise_conv_s8_opt":
        w = t[op.inputs[1]]  # 1HWC
        return 4 * CH_IN_BLOCK_MVE * int(w.shape[1]) * int(w.shape[2])
    if fn in ("arm_fully_connected_s8", "arm_fully_connected_per_channel_s8"):
        return int(t[op.inputs[1]].shape[0]) * 4  # kernel sums, one int32 per output
    # 1x1 convs, avgpool (MVE: 0), max pool, elementwise, softmax, TFLM reference: none
    return 0


# --- sub-byte schedules (cmix_*.py): CMSIS-NN's s4 get_buffer_size rules (DSP build) and
# the buffers of our CMix-NN-style / XNOR renderings
_S4_FUNCS = (
    "arm_convolve_s4",
    "arm_convolve_1x1_s4_fast",
    "arm_depthwise_conv_s4_opt",
    "arm_fully_connected_s4",
)


def _subbyte_scratch_bytes(graph: Graph, op: Op, program: Program) -> int:
    from mcusim.precision import width

    k = program.kernel
    fn = k.split(" ")[0]
    t = graph.tensors
    if program.isa == "armv8.1m-mve" and "conv" in k and ("(MVE)" in k or "cmix-style mve" in k):
        # 4 int8 (or bit-packed) im2col columns of whole 16-byte steps
        # (arm_convolve_s4_get_buffer_size_mve: 4 columns rounded up to 16 bytes)
        from .mve_subbyte import group

        w = t[op.inputs[1]]
        cols = int(w.shape[1] * w.shape[2] * w.shape[3])
        wb = width(w.dtype)
        steps = -(-cols // group(wb))
        return 4 * steps * (16 if width(t[op.inputs[0]].dtype) == 1 else 128 // wb)
    if fn == "arm_convolve_s4":  # arm_convolve_s4_get_buffer_size: 2 s16 columns
        w = t[op.inputs[1]]
        return 2 * int(w.shape[1] * w.shape[2] * w.shape[3]) * 2
    if fn == "arm_depthwise_conv_s4_opt":  # ..._s8_opt_get_buffer_size_dsp: one s16 patch
        w = t[op.inputs[1]]
        return int(w.shape[1] * w.shape[2] * w.shape[3]) * 2
    if fn != "cmix-style":
        return 0  # 1x1 fast and FC s4: no buffer
    x = t[op.inputs[0]]
    a = width(x.dtype)
    if "xnor-popcount conv" in k:  # two bit-packed im2col columns of whole words
        w = t[op.inputs[1]]
        bits = int(w.shape[1] * w.shape[2] * w.shape[3])
        return 2 * 4 * (-(-bits // 32))
    if " conv " in k or "grouped conv" in k:  # two s16 columns (+ a packed column)
        from .cmix_common import layer_prec, packed_bytes
        from .cmix_conv import direct_unpack

        w = t[op.inputs[1]]
        cols = int(w.shape[1] * w.shape[2] * w.shape[3])
        extra = (
            0
            if direct_unpack(layer_prec(graph, op), int(w.shape[3]))
            else (-(-packed_bytes(cols, a) // 4) * 4)
        )
        return 2 * cols * 2 + extra
    if "fully connected" in k and "xnor" not in k:  # two unpacked s16 input rows
        return 2 * int(t[op.inputs[1]].shape[1]) * 2
    if "avg pool" in k:  # int32 sum per channel
        return int(x.shape[-1]) * 4
    return 0  # depthwise, max pool, add, binary FC / depthwise
