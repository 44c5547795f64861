"""CMSIS-NN pure-C schedules for Armv6-M timed on the Cortex-M0+: dispatch of the wrappers
without ARM_MATH_DSP, a whole small layer worked out by hand, inner-loop MAC/cycle from
the TRM rules, stream byte counts against hand formulas, scratch sizes, and every shared
model scheduled and timed on ("armv6m", "cortex-m0plus")."""

from __future__ import annotations

import numpy as np
import pytest
from test_isa_m0plus import unrolled_cycles
from test_schedules_m4 import _q, _t, _unary_graph, conv_graph, fc_graph

from mcusim.dtypes import INT32
from mcusim.graph import Graph, Op
from mcusim.isa.cortex_m0plus import CortexM0PlusTiming
from mcusim.isa.schedule import Program
from mcusim.isa.timing import core_timing
from mcusim.kernels.schedules import schedule_for
from mcusim.kernels.schedules.cmsis_c_matmul import _nt_blocks, _s8s16_blocks, _vm_blocks
from mcusim.ops import (
    Conv2DAttrs,
    DepthwiseConv2DAttrs,
    ElementwiseAttrs,
    NoAttrs,
    Pool2DAttrs,
    ReshapeAttrs,
    SoftmaxAttrs,
)

from conftest import SHARED_MODELS, model_path

M0 = core_timing("cortex-m0plus")
M4 = core_timing("cortex-m4")


def _steady(block) -> int:
    """Cycles of one loop iteration whose back edge is taken (no state on the M0+)."""
    return M0.block_cycles(block, M0.initial_state(), True)[0]


# --------------------------------------------------------------------------- dispatch
@pytest.mark.parametrize(
    "args, kernel",
    [
        (
            dict(h=6, w=6, c_in=8, c_out=16, k=1),
            "arm_convolve_1x1_s8_fast -> arm_nn_mat_mult_nt_t_s8",
        ),
        (dict(h=6, w=6, c_in=8, c_out=16, k=1, stride=2), "arm_convolve_1x1_s8 -> "),
        (dict(h=6, w=6, c_in=8, c_out=16, k=3), "arm_convolve_s8 -> arm_nn_mat_mult_kernel_s8_s16"),
        (dict(h=6, w=6, c_in=8, c_out=8, k=3, depthwise=True), "arm_depthwise_conv_3x3_s8"),
        # without ARM_MATH_DSP the _opt function returns arm_depthwise_conv_s8 (generic)
        (
            dict(h=6, w=6, c_in=8, c_out=8, k=5, depthwise=True),
            "arm_depthwise_conv_s8_opt -> arm_depthwise_conv_s8 (depthwise_conv_s8_generic)",
        ),
        (dict(h=6, w=6, c_in=1, c_out=8, k=3, depthwise=True, mult=8), "depthwise_conv_s8_mult_4"),
        (dict(h=6, w=6, c_in=2, c_out=6, k=3, depthwise=True, mult=3), "depthwise_conv_s8_generic"),
    ],
)
def test_cmsis_c_dispatch(args, kernel):
    g, op = conv_graph(**args)
    prog = schedule_for("armv6m", g, op)
    assert kernel in prog.kernel
    assert prog.isa == "armv6m"
    assert prog.kernel.endswith("(C)") or "depthwise_conv_s8_" in prog.kernel


def test_dilated_depthwise_divides_with_aeabi_idiv():
    g, op = conv_graph(h=8, w=8, c_in=8, c_out=8, k=3, depthwise=True, padding="valid")
    op.attrs = DepthwiseConv2DAttrs((1, 1), (2, 2), "valid", "none", 1)
    g.tensors["y"] = _t("y", (1, 4, 4, 8))
    prog = schedule_for("armv6m", g, op)
    assert prog.kernel == "arm_depthwise_conv_s8 (depthwise_conv_s8_generic)"
    res = M0.time(prog)
    # four __aeabi_idiv calls per output (start/end of the x and y tap ranges)
    assert res.loops["c_dwg_outputs_3x3"].iterations == 4 * 4 * 8
    names = {b.name for b, _ in prog.walk() if hasattr(b, "instrs")}
    assert "__aeabi_idiv" in names


def test_1xn_conv_goes_through_convolve_s8():
    t = {
        "x": _t("x", (1, 1, 16, 4)),
        "w": _t("w", (8, 1, 3, 4), data=np.ones((8, 1, 3, 4), np.int8), n_q=8, axis=0),
        "b": _t("b", (8,), INT32, np.zeros(8, np.int32)),
        "y": _t("y", (1, 1, 16, 8)),
    }
    op = Op("conv2d", "c", ["x", "w", "b"], ["y"], Conv2DAttrs((1, 1), (1, 1), "same"))
    prog = schedule_for("armv6m", Graph(t, [op], ["x"], ["y"]), op)
    assert prog.kernel.startswith("arm_convolve_1_x_n_s8 -> arm_convolve_s8")


# --------------------------------------------------------------- a whole layer by hand
def test_fully_connected_8x2_by_hand():
    """FC 8 inputs -> 2 outputs: arm_fully_connected_s8 -> arm_nn_vec_mat_mult_t_s8 (C),
    every block counted from DDI 0484C Table 3-1 (cortex_m0plus.toml)."""
    g, op = fc_graph(8, 2)
    prog = schedule_for("armv6m", g, op)
    assert prog.kernel == "arm_fully_connected_s8 -> arm_nn_vec_mat_mult_t_s8 (C)"
    # function entry (both functions): BL 3; PUSH 5 regs 6; 4 MOV 4; PUSH 4 regs 5;
    #   SUB SP 1; 2 LDR 4; 2 STR 4                                               = 27
    entry = 3 + 6 + 4 + 5 + 1 + 4 + 4
    # function exit: MOVS 1; ADD SP 1; POP 4 regs 5; 4 MOV 4; POP 4 regs + PC 3+5 = 19
    exit_ = 1 + 1 + 5 + 4 + 8
    # 2 rows < 3: no 3-row pass; each row goes through the single-row loop:
    # row setup: LDR 2, LDR 2, ADDS 1, STR 2, LDR 2, LDR 2, MOVS 1               = 12
    setup1 = 12
    # 8 columns: LDRSB 2, LDRSB 2, ADDS 1, MULS 1, ADDS 1, ADDS 1, CMP 1, BNE 2 = 11
    # taken 7 times, the last BNE not taken: 10                                  = 87
    cols = 7 * 11 + 10
    # requantize + clamp + store one output (per tensor): 15 + lmul 58 + 27 + 18  = 118
    out = 15 + 58 + 27 + 18
    # row end: LDR 2, LDR 2, ADDS 1, STR 2, LDR 2, SUBS 1, STR 2, BNE 2 / 1      = 14 / 13
    rows = (setup1 + cols + out + 14) + (setup1 + cols + out + 13)
    # batch end: 2 LDR 4, ADDS 1, STR 2, 2 LDR 4, ADDS 1, STR 2, SUBS 1, BNE 1   = 16
    batch_end = 16
    expected = entry + entry + rows + exit_ + batch_end + exit_
    assert expected == 569
    res = M0.time(prog)
    assert res.cycles == expected
    assert res.cycles == unrolled_cycles(M0, prog)
    assert res.macs == 16
    # traffic: the activations are re-read for each single row; 1 byte loads only
    assert res.stream("input").read_bytes == 2 * 8 and res.stream("input").reads == 16
    assert res.stream("weights").read_bytes == 16 and res.stream("weights").reads == 16
    assert res.stream("bias").read_bytes == 8
    assert res.stream("output").write_bytes == 2
    assert "qparams" not in res.streams  # per-tensor multiplier/shift live on the stack
    # the M4 (DSP path) runs the same layer 1.6x faster (356 cycles: with 8 columns the
    # per-call code of GCC's CMSIS-NN build, ~120 cycles, and the row pair's setup and
    # requantize + clamp, ~120, dominate the M4 run)
    m4 = M4.time(schedule_for("armv7em-dsp", g, op)).cycles
    assert m4 == 356 and res.cycles > 1.5 * m4


def test_reshape_copy_by_hand():
    g, op = _unary_graph("reshape", (1, 2, 2, 4), (1, 16), ReshapeAttrs((1, 16)))
    res = M0.time(schedule_for("armv6m", g, op))
    # entry 27; 3 LDR 6 + BL 3; memcpy entry: PUSH 3 regs 4, CMP 1, BLS not taken 1,
    # MOVS, ORRS, LSLS 3, BNE not taken 1 = 10; one 16-byte block: 4 x (LDR 2 + STR 2),
    # 2 ADDS, SUBS, CMP 4, BHI not taken 1 = 21; no words; byte setup MOVS, CMP 2,
    # BEQ not taken 1 = 3; no bytes; POP + PC 3+3 = 6; exit 19
    assert res.cycles == 27 + 9 + 10 + 21 + 3 + 6 + 19
    assert res.stream("input").read_bytes == 16 and res.stream("output").write_bytes == 16


# ------------------------------------------------------------------ inner-loop MAC/cycle
def test_conv_inner_loops_mac_per_cycle_from_rules():
    # arm_nn_mat_mult_kernel_s8_s16 (C): 2 channels x 2 columns, one column per step:
    # LDR 2, LSLS 1, LDRSB 2, LDR 2, LDRSH 2, MOVS 1, MULS 1, MOV 1, LDR 2 (spill), ADD 1,
    # STR 2 (spill), LDR 2, LDRSH 2, MULS 1, ADDS 1, MOV 1, LDRSB 2, ADDS 1, MULS 1,
    # MULS 1, ADDS 1, ADDS 1, CMP 1, BNE taken 2                                  = 34
    inner = _s8s16_blocks()["inner"]
    assert len(inner) == 24
    macs = sum(1 for i in inner.instrs if i.mnemonic == "mul")
    assert macs == 4
    assert _steady(inner) == 34
    s8s16 = macs / 34  # 0.118 MAC/cycle, against ~0.52 on the M4 (SMLAD path)
    assert 0.11 < s8s16 < 0.12
    # arm_nn_mat_mult_nt_t_s8 (C, 1x1 conv): 2 pixels x 2 filters per step:
    # MOVS, MOVS 2; LDRSB, LDRSB 4; MOVS, MULS, MOV 3; LDR 2 + ADD 1 + STR 2 (spilled
    # res00); MOV 1, LDRSB 2, ADDS, MULS, ADDS, MOV 4; LDRSB 2; ADDS, MULS, MULS, ADDS,
    # ADDS, CMP 6; BNE taken 2                                                       = 31
    nt = _nt_blocks()["inner"]
    assert sum(1 for i in nt.instrs if i.mnemonic == "mul") == 4
    assert _steady(nt) == 31  # 0.129 MAC/cycle
    # arm_nn_vec_mat_mult_t_s8 (C, FC): 3 rows per step, 18 instructions            = 24
    vm3 = _vm_blocks(False)["inner3"]
    assert sum(1 for i in vm3.instrs if i.mnemonic == "mul") == 3
    assert _steady(vm3) == 24  # 0.125 MAC/cycle
    # single row: LDRSB 2, LDRSB 2, ADDS 1, MULS 1, ADDS 1, ADDS 1, CMP 1, BNE 2    = 11
    assert _steady(_vm_blocks(False)["inner1"]) == 11
    # against the M4's DSP loop (~0.52): over 4x fewer MACs per cycle
    m4_inner = 16 / 31
    assert m4_inner / s8s16 > 4
    # with the 32-cycle iterative multiplier every MULS costs 31 more
    small = CortexM0PlusTiming(multiplier="small")
    assert small.block_cycles(inner, 0, True)[0] == 34 + 4 * 31


def test_whole_conv_layer_mac_rate_and_unrolled_equivalence():
    g, op = conv_graph(h=8, w=8, c_in=16, c_out=32, k=3)
    res = M0.time(schedule_for("armv6m", g, op))
    # requantization (118 cycles per output) and im2col on top of the 0.118 inner loop
    assert 0.07 < res.macs_per_cycle < 0.118
    g, op = conv_graph(h=3, w=3, c_in=3, c_out=3, k=3)
    prog = schedule_for("armv6m", g, op)
    assert M0.time(prog).cycles == unrolled_cycles(M0, prog)


@pytest.mark.parametrize(
    "args",
    [
        dict(h=4, w=4, c_in=6, c_out=6, k=3, depthwise=True, stride=2),
        dict(h=5, w=5, c_in=5, c_out=5, k=5, depthwise=True),
        dict(h=4, w=4, c_in=1, c_out=4, k=3, depthwise=True, mult=4),
        dict(h=3, w=3, c_in=2, c_out=6, k=3, depthwise=True, mult=3),
        dict(h=3, w=3, c_in=4, c_out=5, k=1),
        dict(h=3, w=4, c_in=4, c_out=5, k=1, stride=2),
    ],
)
def test_conv_paths_match_unrolled_walk(args):
    g, op = conv_graph(**args)
    prog = schedule_for("armv6m", g, op)
    res = M0.time(prog)
    assert res.cycles == unrolled_cycles(M0, prog)
    assert res.stream("output").write_bytes == g.tensor("y").size


# --------------------------------------------------------------------- stream bytes
def test_convolve_s8_stream_bytes_hand_formula():
    g, op = conv_graph(h=5, w=5, c_in=4, c_out=6, k=3)
    res = M0.time(schedule_for("armv6m", g, op))
    rhs_cols, out_c, pix = 3 * 3 * 4, 6, 25
    pairs, odd = divmod(pix, 2)
    # weights: one byte load per MAC of each filter pair and column pair, odd column too
    assert res.stream("weights").read_bytes == (pairs + odd) * out_c * rhs_cols
    assert res.stream("weights").reads == (pairs + odd) * out_c * rhs_cols
    # input: in-bounds taps only (13 x 13 rows/cols for SAME 3x3 over 5), 4 bytes each
    assert res.stream("input").read_bytes == 13 * 13 * 4
    # scratch: int8 im2col written, read once by q7_to_q15 (byte loads), s16 written;
    # the kernel reads both s16 columns per filter pair (halfwords), the odd one per filter
    assert res.stream("scratch").write_bytes == pix * rhs_cols + pix * 2 * rhs_cols
    kernel_reads = pairs * (out_c // 2) * 2 * (2 * rhs_cols) + odd * out_c * 2 * rhs_cols
    assert res.stream("scratch").read_bytes == pix * rhs_cols + kernel_reads
    assert res.stream("output").write_bytes == pix * out_c
    # per-channel multiplier and shift loaded for every output, each from its own array
    assert res.stream("qmult").read_bytes == pix * out_c * 4
    assert res.stream("qparams").read_bytes == pix * out_c * 4


def test_1x1_fast_stream_bytes_hand_formula():
    g, op = conv_graph(h=5, w=4, c_in=24, c_out=10, k=1)
    res = M0.time(schedule_for("armv6m", g, op))
    rows, ch, cols = 20, 10, 24
    # per filter pair: the sum(w) pass reads both rows; each pixel pair re-reads them
    assert res.stream("weights").read_bytes == (ch // 2) * (2 * cols + (rows // 2) * 2 * cols)
    assert res.stream("input").read_bytes == (ch // 2) * rows * cols
    assert res.stream("output").write_bytes == rows * ch
    assert "scratch" not in res.streams


def test_depthwise_3x3_reads_words_through_memcpy():
    g, op = conv_graph(h=6, w=6, c_in=8, c_out=8, k=3, depthwise=True)
    res = M0.time(schedule_for("armv6m", g, op))
    rows = [2, 3, 3, 3, 3, 2]
    taps = sum(rows) * sum(rows)
    # arm_nn_read_s8x4 = memcpy of 4 bytes (byte loop): 4 byte loads per tap and group
    assert res.stream("input").read_bytes == taps * 8
    assert res.stream("input").reads == taps * 8
    assert res.stream("weights").read_bytes == taps * 8
    assert res.stream("output").write_bytes == 36 * 8
    assert res.macs_per_cycle < 0.05


# ------------------------------------------------------------------------ other ops
def test_pool_eltwise_softmax_reference():
    g, op = _unary_graph(
        "avg_pool2d", (1, 8, 8, 8), (1, 4, 4, 8), Pool2DAttrs((2, 2), (2, 2), "valid")
    )
    p = schedule_for("armv6m", g, op)
    r = M0.time(p)
    assert r.kernel == "arm_avgpool_s8 (C)" and p.scratch_bytes == 0
    assert r.stream("input").read_bytes == 8 * 8 * 8 and r.stream("output").write_bytes == 128
    # one __aeabi_idiv per output element
    assert r.loops["c_avg_outputs_4taps"].iterations == 128
    g, op = _unary_graph(
        "max_pool2d", (1, 8, 8, 8), (1, 4, 4, 8), Pool2DAttrs((2, 2), (2, 2), "valid")
    )
    r = M0.time(schedule_for("armv6m", g, op))
    assert r.kernel == "arm_max_pool_s8 (C)" and r.stream("input").read_bytes == 8 * 8 * 8
    g, op = _unary_graph("add", (1, 4, 4, 6), (1, 4, 4, 6), ElementwiseAttrs(), second=True)
    r = M0.time(schedule_for("armv6m", g, op))
    assert r.kernel == "arm_elementwise_add_s8 (C)"
    assert r.stream("input").read_bytes == 96 and r.stream("input2").read_bytes == 96
    # three lmul-based requantizations per element: over 250 cycles per element
    assert 250 < r.cycles / 96 < 450
    g, op = _unary_graph("softmax", (1, 10), (1, 10), SoftmaxAttrs())
    r = M0.time(schedule_for("armv6m", g, op))
    assert r.stream("input").read_bytes == 30 and r.stream("output").write_bytes == 10
    g, op = _unary_graph("relu", (1, 4, 4, 8), (1, 4, 4, 8), NoAttrs())
    r = M0.time(schedule_for("armv6m", g, op))
    assert r.kernel.startswith("tflm relu") and r.stream("output").write_bytes == 128


def test_scratch_sizes_follow_non_dsp_rules():
    g, op = conv_graph(h=5, w=5, c_in=3, c_out=4, k=3)
    assert schedule_for("armv6m", g, op).scratch_bytes == 2 * 28 * 2  # 27 -> 28 aligned
    g, op = conv_graph(h=6, w=6, c_in=8, c_out=8, k=5, depthwise=True)
    assert schedule_for("armv6m", g, op).scratch_bytes == 0  # DSP build: 5*5*8*2
    assert schedule_for("armv7em-dsp", g, op).scratch_bytes == 5 * 5 * 8 * 2


def test_non_int8_activations_are_rejected_clearly():
    from mcusim.dtypes import FLOAT32
    from mcusim.errors import UnsupportedOpError

    g, op = fc_graph(8, 2)
    g.tensors["x"].dtype = FLOAT32
    with pytest.raises(UnsupportedOpError, match="Armv6-M"):
        schedule_for("armv6m", g, op)


def test_per_channel_fc_loads_row_params():
    g, op = fc_graph(32, 6)
    g.tensors["w"].quant = _q(6, axis=0)
    r = M0.time(schedule_for("armv6m", g, op))
    assert r.kernel.startswith("arm_fully_connected_per_channel_s8")
    assert r.stream("qmult").read_bytes == r.stream("qparams").read_bytes == 6 * 4
    assert r.stream("weights").read_bytes == 6 * 32


# ----------------------------------------------------------------------- real models
@pytest.mark.parametrize("name", SHARED_MODELS)
def test_every_shared_model_schedules_and_times(name):
    from mcusim.importers.tflite import load_tflite

    g = load_tflite(model_path(name))
    total = macs = total_m4 = 0
    for op in g.ops:
        prog = schedule_for("armv6m", g, op)  # every instruction is checked as Armv6-M
        assert isinstance(prog, Program) and prog.kernel
        r = M0.time(prog)
        assert r.cycles > 0
        total += r.cycles
        macs += r.macs
        total_m4 += M4.time(schedule_for("armv7em-dsp", g, op)).cycles
    # the pure-C path on the M0+ is several times slower than the DSP path on the M4
    assert total > 1.5 * total_m4
    if macs > 1_000_000:
        assert 0.03 < macs / total < 0.125


def test_loop_names_are_reported():
    g, op = fc_graph(16, 4)
    res = M0.time(schedule_for("armv6m", g, op))
    assert res.loops["c_vm3_cols"].iterations == 16
    assert res.loops["c_vm1_cols"].iterations == 16


@pytest.mark.parametrize(
    "kind",
    [
        "requant",
        "clamp",
        "hard_swish",
        "dequantize",
        "quantize_float",
        "sigmoid",
        "pad",
        "gather",
        "broadcast_add",
        "broadcast_mul",
    ],
)
def test_reference_kernels_are_armv6m_code(kind):
    from mcusim.kernels.schedules.cmsis_c_ops import _elementwise_ref

    one = M0.time(_elementwise_ref(kind, 1, kind)).cycles
    ten = M0.time(_elementwise_ref(kind, 11, kind)).cycles
    per_elem = (ten - one) / 10
    assert per_elem == int(per_elem) and per_elem > 10
    # MultiplyByQuantizedMultiplier = one MUL_SAT (an lmul call): over 100 cycles
    if kind in ("requant", "broadcast_mul"):
        assert per_elem > 100
    if kind == "sigmoid":  # exp_on_negative_values: 12 MUL_SAT + 5 more
        assert per_elem > 15 * 80


def test_concat_and_mean():
    from mcusim.ops import ConcatAttrs, MeanAttrs

    t = {"a": _t("a", (1, 2, 2, 4)), "b": _t("b", (1, 2, 2, 4)), "y": _t("y", (1, 2, 2, 8))}
    op = Op("concat", "cat", ["a", "b"], ["y"], ConcatAttrs(3))
    r = M0.time(schedule_for("armv6m", Graph(t, [op], ["a", "b"], ["y"]), op))
    assert r.stream("input").read_bytes == 32 and r.stream("output").write_bytes == 32
    t = {"x": _t("x", (1, 4, 4, 8)), "y": _t("y", (1, 1, 1, 8))}
    op = Op("mean", "mean", ["x"], ["y"], MeanAttrs((1, 2), True))
    r = M0.time(schedule_for("armv6m", Graph(t, [op], ["x"], ["y"]), op))
    assert r.kernel.startswith("tflm mean") and r.stream("input").read_bytes == 128


def test_sub_byte_layers_are_refused_not_timed_as_int8():
    """A W4A8 layer must not be timed as an INT8 kernel on the pure-C path."""
    from mcusim.dtypes import elem_type
    from mcusim.errors import UnsupportedOpError

    g, op = fc_graph(16, 4)
    w = g.tensors[op.inputs[1]]
    w.dtype = elem_type("int4")
    w.data = np.clip(w.data, -8, 7).astype(np.int8)
    with pytest.raises(UnsupportedOpError, match=r"W4A8.*pure-C path is INT8 only"):
        schedule_for("armv6m", g, op)
