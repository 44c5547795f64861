"""CMSIS-NN schedules for Armv7E-M + DSP timed on the Cortex-M4: kernel dispatch, a whole
small layer worked out by hand, stream byte counts against hand formulas, inner-loop
MAC/cycle from the rules, and whole-model timing speed."""

from __future__ import annotations

import numpy as np
import pytest
from test_isa_m4 import unrolled_cycles

from mcusim.dtypes import INT8, INT32, Quant
from mcusim.graph import Graph, Op, Tensor
from mcusim.isa.schedule import Loop, Program
from mcusim.isa.timing import core_timing
from mcusim.kernels.schedules import schedule_for
from mcusim.kernels.schedules.matmul import _s8s16_blocks
from mcusim.ops import (
    Conv2DAttrs,
    DepthwiseConv2DAttrs,
    ElementwiseAttrs,
    FullyConnectedAttrs,
    Pool2DAttrs,
    ReshapeAttrs,
    SoftmaxAttrs,
    conv_output_size,
)

from conftest import model_path

M4 = core_timing("cortex-m4")


def _q(n: int = 1, axis: int | None = None) -> Quant:
    return Quant(np.full(n, 0.05, np.float32), np.zeros(n, np.int64), axis)


def _t(name, shape, dtype=INT8, data=None, n_q=1, axis=None):
    return Tensor(name, tuple(shape), dtype, _q(n_q, axis), data)


def fc_graph(n_in: int, n_out: int, batch: int = 1):
    t = {
        "x": _t("x", (batch, n_in)),
        "w": _t("w", (n_out, n_in), data=np.ones((n_out, n_in), np.int8)),
        "b": _t("b", (n_out,), INT32, np.zeros(n_out, np.int32)),
        "y": _t("y", (batch, n_out)),
    }
    op = Op("fully_connected", "fc", ["x", "w", "b"], ["y"], FullyConnectedAttrs())
    return Graph(t, [op], ["x"], ["y"]), op


def conv_graph(h, w, c_in, c_out, k, stride=1, padding="same", depthwise=False, mult=1):
    oh = conv_output_size(h, k, stride, 1, padding)
    ow = conv_output_size(w, k, stride, 1, padding)
    if depthwise:
        c_out = c_in * mult
        wshape = (1, k, k, c_out)
        attrs = DepthwiseConv2DAttrs((stride, stride), (1, 1), padding, "none", mult)
        kind = "depthwise_conv2d"
    else:
        wshape = (c_out, k, k, c_in)
        attrs = Conv2DAttrs((stride, stride), (1, 1), padding, "none")
        kind = "conv2d"
    t = {
        "x": _t("x", (1, h, w, c_in)),
        "w": _t("w", wshape, data=np.ones(wshape, np.int8), n_q=c_out, axis=3 if depthwise else 0),
        "b": _t("b", (c_out,), INT32, np.zeros(c_out, np.int32)),
        "y": _t("y", (1, oh, ow, c_out)),
    }
    op = Op(kind, "conv", ["x", "w", "b"], ["y"], attrs)
    return Graph(t, [op], ["x"], ["y"]), op


def _unary_graph(kind, shape_in, shape_out, attrs, second=False):
    t = {"x": _t("x", shape_in), "y": _t("y", shape_out)}
    ins = ["x"]
    if second:
        t["x2"] = _t("x2", shape_in)
        ins.append("x2")
    op = Op(kind, kind, ins, ["y"], attrs)
    return Graph(t, [op], ins, ["y"]), op


# --------------------------------------------------------------------------- dispatch
@pytest.mark.parametrize(
    "args, kernel",
    [
        (dict(h=6, w=6, c_in=8, c_out=16, k=1), "arm_convolve_1x1_s8_fast"),
        (dict(h=6, w=6, c_in=8, c_out=16, k=1, stride=2), "arm_convolve_1x1_s8 "),
        (dict(h=6, w=6, c_in=8, c_out=16, k=3), "arm_convolve_s8 "),
        (dict(h=1, w=16, c_in=4, c_out=8, k=1, padding="valid", stride=2), "arm_convolve_1x1_s8 "),
        (dict(h=6, w=6, c_in=8, c_out=8, k=3, depthwise=True), "arm_depthwise_conv_3x3_s8"),
        (dict(h=6, w=6, c_in=8, c_out=8, k=5, depthwise=True), "arm_depthwise_conv_s8_opt"),
        (dict(h=6, w=6, c_in=1, c_out=8, k=3, depthwise=True, mult=8), "depthwise_conv_s8_mult_4"),
        (dict(h=6, w=6, c_in=2, c_out=6, k=3, depthwise=True, mult=3), "depthwise_conv_s8_generic"),
    ],
)
def test_cmsis_dispatch(args, kernel):
    g, op = conv_graph(**args)
    prog = schedule_for("armv7em-dsp", g, op)
    assert kernel in prog.kernel + " "


def test_1xn_conv_goes_through_convolve_s8():
    g, op = conv_graph(h=1, w=16, c_in=4, c_out=8, k=1, padding="valid")
    # 1x1 wins over 1xN in the wrapper (1x1 is tested first)
    assert "1x1_s8_fast" in schedule_for("armv7em-dsp", g, op).kernel
    t = {
        "x": _t("x", (1, 1, 16, 4)),
        "w": _t("w", (8, 1, 3, 4), data=np.ones((8, 1, 3, 4), np.int8), n_q=8, axis=0),
        "b": _t("b", (8,), INT32, np.zeros(8, np.int32)),
        "y": _t("y", (1, 1, 16, 8)),
    }
    op = Op("conv2d", "c", ["x", "w", "b"], ["y"], Conv2DAttrs((1, 1), (1, 1), "same"))
    prog = schedule_for("armv7em-dsp", Graph(t, [op], ["x"], ["y"]), op)
    assert prog.kernel.startswith("arm_convolve_1_x_n_s8 -> arm_convolve_s8")


def test_dilated_depthwise_uses_generic():
    # the wrapper needs dilation 1 for 3x3/opt; ch_mult 1 with dilation -> generic loop
    g, op = conv_graph(h=8, w=8, c_in=8, c_out=8, k=3, depthwise=True, padding="valid")
    op.attrs = DepthwiseConv2DAttrs((1, 1), (2, 2), "valid", "none", 1)
    g.tensors["y"] = _t("y", (1, 4, 4, 8))
    prog = schedule_for("armv7em-dsp", g, op)
    assert prog.kernel == "arm_depthwise_conv_s8 (depthwise_conv_s8_generic)"


# --------------------------------------------------------------- a whole layer by hand
def test_fully_connected_4x2_by_hand():
    """FC 4 inputs -> 2 outputs: every block of arm_fully_connected_s8 ->
    arm_nn_vec_mat_mult_t_s8 counted from the TRM rules (cortex_m4.toml values)."""
    g, op = fc_graph(4, 2)
    prog = schedule_for("armv7em-dsp", g, op)
    assert prog.kernel == "arm_fully_connected_s8 -> arm_nn_vec_mat_mult_t_s8"
    # fc_entry (GCC 12 -O2 of arm_fully_connected_s8): PUSH 9 regs 10; LDR 2; LDR 1
    # (pipelined); SUB SP 1; LDRD 3 +1 (SP written by the SUB); LDR 2 (LDRD does not
    # pipeline); LDR 1; CBZ not taken 1; MOV 1; LDR 2; LDR 1; STR 1; MOV, MOV 2      = 29
    fc_entry = 10 + 2 + 1 + 1 + 4 + 2 + 1 + 1 + 1 + 2 + 1 + 1 + 2
    # the batch row's 15 call arguments (11 on the stack): STR 1; LDR 2; 4 STR 4; LDR 2;
    # LDR 1; STRD 3; then LDR 2 + STR 1 three times; LDR 2; LDR 1; STR 1; MOV 1; LDR 2;
    # LDR 1                                                                         = 30
    batch_args = 1 + 2 + 4 + 2 + 1 + 3 + 3 * (2 + 1) + 2 + 1 + 1 + 1 + 2 + 1
    bl = 3  # BL: 1 + P
    # vm_entry (GCC 12.2 -O2 of CMSIS-NN, up to the rhs_rows < 2 test): PUSH 9 regs 10;
    # SUB SP 1; STR 2 (SP written by the SUB); LDR 2 (after a store); LDR, LDR 2
    # (pipelined); STR, STR 2; CMP, BEQ not taken 2; LDR 2; LDR 1; ADD (shifted), ASRS,
    # CMP, SXTH, SXTH 5; STR 1; PKHBT, PKHBT 2; BLE not taken 1                     = 33
    vm_entry = 10 + 1 + 2 + 2 + 2 + 2 + 2 + 2 + 1 + 5 + 1 + 2 + 1
    # the row-pair loop's setup (offset pairs, shift facts, strides to the stack): LDR 2,
    # LDR 1, LDR 1; STR 1; CMP, RSB 2; IT (after a 32-bit RSB: not folded) 1; ADDLT 1;
    # MOVS, LSLS, ASRS, BIC, SUB 5; LDR 2; STR 1; LDR 2 (after a store); STR 1; MOV,
    # LSLS, ASRS, LSLS 4; LDR 2; LDR 1; STR 1; LDR 2; LDR 1; STR 1; BIC, ADD 2; STR, STR
    # 2; ADDS, MOVS, SUBS 3; STR x3 3; LDR 2; STR x5 5; MOV, MOV 2; STR 1; CMP 1; BEQ
    # not taken (a bias) 1                                                          = 54
    pairs_setup = 4 + 1 + 2 + 1 + 1 + 5 + 2 + 1 + 2 + 1 + 4 + 3 + 1 + 3 + 1 + 2 + 2 + 3
    pairs_setup += 3 + 2 + 5 + 2 + 1 + 1 + 1
    # row setup (4 inputs = one 4-column step, peeled before the unrolled loop): LDR
    # post-indexed 2; LDR 1 (pipelined); STR 1; LDR 2 (after a store nothing pipelines);
    # LDR 1; ADDS 1; STR 1; LDR 2; LDR 1; ADDS, CMP 2; BEQ not taken 1; MOV, SUBS, ANDS 3;
    # BEQ not taken (one peeled step to run) 1                                     = 19
    row_setup = 2 + 1 + 1 + 2 + 1 + 1 + 1 + 2 + 1 + 2 + 1 + 3 + 1
    # the peeled 4-column step, its only iteration: LDR 2 + 2 SXTAB16; (LDR 2 + 2 SXTB16
    # + 2 SMLAD) * 2; SUBS 1; BNE not taken 1                                      = 18
    cols4 = 2 + 2 + 6 + 6 + 1 + 1
    # entry spills of the (here empty) unrolled loop: STRD 3 (never pipelines); STR 1 = 4
    x4_entry = 3 + 1
    # row mid: LDRD 3; LDR 2 (LDRD does not pipeline); LDR 1; LDR 1; ADD, MOV 2; LDR 2
    # (after an ALU op); LDR 1; CMP 1; BLE taken (no scalar columns) 1 + 2          = 16
    row_mid = 3 + 2 + 1 + 1 + 2 + 2 + 1 + 1 + 3
    # both outputs of the row pair (per-tensor requantize, shift <= 0 path):
    #   LDR 2, LDR 1, LDR 1; LSLS, MOV, MOVS, SMLAL, LSRS, CMP, ORR 7; BLE taken 3   = 14
    #   LDR 2, LDR 1; AND, ASRS, MOV, MOV 4; BMI not taken 1                          =  8
    #   LDR 2; SMLAL, LSRS, ORR 3; LDR 2; AND, ASRS, CMP 3; LDR 2; three (IT folded 0 +
    #   1) and two CMPs 5; B 3                                                       = 20
    #   clamp: LDR 2 + 6 pipelined LDR 6; ADD, ADD 2; 4 * (CMP 1, IT folded, MOV 1) 8;
    #   STRB, STRB 2                                                                 = 20
    pair_out = 14 + 8 + 20 + 20
    # row end: LDR 2; ADDS, CMP 2; STR 1; ADD, ADD 2; BLE not taken 1; LDR 2; LDR 1; CMP
    # 1; BNE not taken 1                                                           = 13
    row_end = 2 + 2 + 1 + 2 + 1 + 2 + 1 + 1 + 1
    # after the pairs (the odd row's pointers): LDR 2, three pipelined LDR 3; CMP, MOV,
    # MOV 3; IT folded 0; MOVLE 1; LDR 2; MLA 1 (Table 3-1); STR 1; MLA 1           = 14
    pairs_end = 2 + 3 + 3 + 0 + 1 + 2 + 1 + 1 + 1
    # odd-row test: LSLS 1; BPL taken (even rows) 1 + P(2)                          =  4
    even = 1 + 3
    # vm_exit: MOVS 1; ADD SP 1; POP 9 regs with PC: 1 + 9 + P(2) + 1 (SP written) = 15
    vm_exit = 1 + 1 + 13
    # fc batch end: LDR 2; LDR 1 (pipelined); SUBS, ADD, ADD 3; BNE not taken 1    = 7
    batch_end = 2 + 1 + 3 + 1
    # fc_exit: MOVS 1; ADD SP 1; POP 9 regs with PC 1 + 9 + 2 + 1 (SP)           = 15
    fc_exit = 1 + 1 + 13
    expected = (
        fc_entry
        + batch_args
        + bl
        + vm_entry
        + pairs_setup
        + row_setup
        + cols4
        + x4_entry
        + row_mid
        + pair_out
        + row_end
        + pairs_end
        + even
        + vm_exit
        + batch_end
        + fc_exit
    )
    assert expected == 336
    res = M4.time(prog)
    assert res.cycles == expected
    assert res.cycles == unrolled_cycles(M4, prog)
    assert res.macs == 8
    # traffic: 4 input bytes, 8 weight bytes, 2 biases, 2 outputs, no per-channel params
    assert res.stream("input").read_bytes == 4
    assert res.stream("weights").read_bytes == 8 and res.stream("weights").reads == 2
    assert res.stream("bias").read_bytes == 8
    assert res.stream("output").write_bytes == 2
    assert "qparams" not in res.streams


def test_reshape_copy_by_hand():
    g, op = _unary_graph("reshape", (1, 2, 2, 2), (1, 8), ReshapeAttrs((1, 8)))
    res = M4.time(schedule_for("armv7em-dsp", g, op))
    # entry: PUSH {r4,lr} 3; 3 LDR from SP: 2 + 1 + 1 (pipelined)                   = 7
    # memcpy entry: BL 3; MOV, ORR, LSLS 3; BNE, SUBS, BLO 3 (not taken)            = 9
    # word loop x2: LDR 2, SUBS 1, STR imm 1, BHS taken 3 = 7; last with BHS 1 = 5 = 12
    # ADDS 1; byte loop x0; BX LR 3; exit MOVS 1 + POP {r4,pc} 1+2+2               = 10
    assert res.cycles == 7 + 9 + 12 + 1 + 3 + 1 + 5
    assert res.stream("input").read_bytes == 8 and res.stream("output").write_bytes == 8


# ------------------------------------------------------------------ inner-loop MAC/cycle
def test_conv_inner_loop_mac_per_cycle_from_rules():
    inner = _s8s16_blocks()["inner"]
    assert len(inner) == 26  # cortex-m.md section 5: 26 instructions per 16 MACs
    macs = sum(1 for i in inner.instrs if i.mnemonic == "smlad") * 2
    assert macs == 16
    # steady state: LDR 2 + 3 pipelined LDR; 2 MOV-ROR, 4 SXTB16, 8 SMLAD, 2 ADDS, SUBS
    # = 17; 2 LDR after SMLAD 2 + 1; spill LDR 2; STR imm 1; BNE taken 3          = 31
    prog = Program([Loop("inner", 1000, [inner])])
    res = M4.time(prog)
    after_back_edge = M4.step(inner.instrs[-1], M4.initial_state(), True)[1]
    steady = M4.block_cycles(inner, after_back_edge, True)[0]
    assert steady == 31
    assert 0.45 < macs / steady < 0.55  # ~0.52 MAC/cycle (cortex-m.md section 5)
    assert res.cycles == 999 * 31 + 29


def test_whole_conv_layer_mac_rate_and_unrolled_equivalence():
    # big enough that the 2x2 kernel dominates: 16 -> 32 channels, 3x3, 8x8 pixels
    g, op = conv_graph(h=8, w=8, c_in=16, c_out=32, k=3)
    res = M4.time(schedule_for("armv7em-dsp", g, op))
    assert 0.3 < res.macs_per_cycle < 0.52
    # a tiny conv (odd pixel count, odd channel count, leftover columns, padding) unrolled
    g, op = conv_graph(h=3, w=3, c_in=3, c_out=3, k=3)
    prog = schedule_for("armv7em-dsp", g, op)
    assert M4.time(prog).cycles == unrolled_cycles(M4, prog)


# --------------------------------------------------------------------- stream bytes
def test_convolve_s8_stream_bytes_hand_formula():
    # 5x5x4 input, 3x3 SAME, 6 filters: 25 output pixels (12 column pairs + 1 leftover)
    g, op = conv_graph(h=5, w=5, c_in=4, c_out=6, k=3)
    res = M4.time(schedule_for("armv7em-dsp", g, op))
    rhs_cols, out_c, pix = 3 * 3 * 4, 6, 25
    pairs, odd = divmod(pix, 2)
    # weights: every filter re-read once per column pair, and once for the odd column
    assert res.stream("weights").read_bytes == (pairs + odd) * out_c * rhs_cols
    # input: the in-bounds taps only (SAME 3x3 over 5: 2+3+3+3+2 = 13 rows and columns)
    assert res.stream("input").read_bytes == 13 * 13 * 4
    # scratch: int8 im2col written (copies + padding fills), read once by the widening,
    # s16 column written; the kernel reads both s16 columns for every filter pair
    assert res.stream("scratch").write_bytes == pix * rhs_cols + pix * 2 * rhs_cols
    kernel_reads = pairs * (out_c // 2) * 2 * (2 * rhs_cols) + odd * out_c * 2 * rhs_cols
    assert res.stream("scratch").read_bytes == pix * rhs_cols + kernel_reads
    assert res.stream("output").write_bytes == pix * out_c
    assert res.stream("bias").read_bytes == (pairs + odd) * out_c * 4
    # per-channel multiplier and shift reloaded for every output (int8 stores may alias),
    # each from its own array
    assert res.stream("qmult").read_bytes == pix * out_c * 4
    assert res.stream("qparams").read_bytes == pix * out_c * 4


def test_1x1_fast_stream_bytes_hand_formula():
    # 5x4 pixels x 24 -> 10 channels: arm_nn_mat_mult_nt_t_s8(lhs_rows=20, rhs_rows=10)
    g, op = conv_graph(h=5, w=4, c_in=24, c_out=10, k=1)
    res = M4.time(schedule_for("armv7em-dsp", g, op))
    rows, ch, cols = 20, 10, 24
    # per filter pair: sum(w) pass reads 2 rows; each row pair re-reads both filters
    assert res.stream("weights").read_bytes == (ch // 2) * (2 * cols + (rows // 2) * 2 * cols)
    # the input is re-read once per filter pair
    assert res.stream("input").read_bytes == (ch // 2) * rows * cols
    assert res.stream("output").write_bytes == rows * ch
    assert "scratch" not in res.streams


def test_1x1_row_pair_end_charges_dst_bookkeeping():
    # arm_nn_mat_mult_nt_t_s8's row-pair tail as GCC 12.2 -O2 -mcpu=cortex-m4 compiles it:
    # dst_ptr += rhs_rows twice (both output pointers: LDR step, 2 x MOV + ADD, 2 STR), the
    # lhs pointer's one ADD of the precomputed 2 * lhs_cols_offset - rhs_cols (LDR), the
    # row-pair count on the stack (LDR, SUBS, STR, BNE): 13 instructions
    from mcusim.kernels.schedules.matmul import _nt_blocks

    end = _nt_blocks()["row_end"]
    assert len(end) == 13
    # LDR 2, MOV 1, ADD 1, MOV 1, ADD 1, STR 1, LDR 2, STR 1, LDR 2, SUBS 1, ADD 1, STR 1
    # = 15; BNE taken 3                                                              = 18
    assert M4.block_cycles(end, M4.initial_state(), True)[0] == 18
    g, op = conv_graph(h=5, w=4, c_in=24, c_out=10, k=1)
    res = M4.time(schedule_for("armv7em-dsp", g, op))
    assert res.loops["nt_row_pairs"].iterations == (10 // 2) * (20 // 2)


def test_depthwise_3x3_stream_bytes():
    g, op = conv_graph(h=6, w=6, c_in=8, c_out=8, k=3, depthwise=True)
    res = M4.time(schedule_for("armv7em-dsp", g, op))
    # one word of input and of weights per in-bounds tap and 4-channel group
    rows = [2, 3, 3, 3, 3, 2]  # in-bounds kernel rows per output row (SAME, 6 rows)
    taps = sum(rows) * sum(rows)
    assert res.stream("input").read_bytes == taps * 8
    assert res.stream("weights").read_bytes == taps * 8
    assert res.stream("output").write_bytes == 36 * 8


def test_fc_weights_read_once_per_batch():
    g, op = fc_graph(64, 12, batch=3)
    res = M4.time(schedule_for("armv7em-dsp", g, op))
    assert res.stream("weights").read_bytes == 3 * 64 * 12
    assert res.stream("input").read_bytes == 3 * (12 // 2) * 64
    assert res.macs == 3 * 64 * 12
    # GCC's unrolled loop: 32 MACs per 75-76 cycles (0.42 MAC/cycle, docs/firmware.md
    # section 6); each row pair of 64 columns also pays ~120 cycles of setup, requantize
    # and clamp: 128 MACs in 4 * 75.5 + 118 = 420 cycles, ~0.30 MAC/cycle
    assert res.loops["vm_cols4x4"].cycles / res.loops["vm_cols4x4"].iterations == 75.5
    assert 0.27 < res.macs_per_cycle < 0.33


# ----------------------------------------------------------------------- other ops
def test_pool_add_softmax_schedules_scale_with_size():
    small = []
    for n in (8, 16):
        g, op = _unary_graph(
            "avg_pool2d", (1, n, n, 8), (1, n // 2, n // 2, 8), Pool2DAttrs((2, 2), (2, 2), "valid")
        )
        r = M4.time(schedule_for("armv7em-dsp", g, op))
        assert r.stream("input").read_bytes == n * n * 8
        assert r.stream("output").write_bytes == (n // 2) ** 2 * 8
        small.append(r.cycles)
    assert 3.8 < small[1] / small[0] < 4.1
    g, op = _unary_graph(
        "max_pool2d", (1, 8, 8, 8), (1, 4, 4, 8), Pool2DAttrs((2, 2), (2, 2), "valid")
    )
    r = M4.time(schedule_for("armv7em-dsp", g, op))
    assert r.kernel == "arm_max_pool_s8" and r.stream("input").read_bytes == 8 * 8 * 8
    g, op = _unary_graph("add", (1, 4, 4, 6), (1, 4, 4, 6), ElementwiseAttrs(), second=True)
    r = M4.time(schedule_for("armv7em-dsp", g, op))
    assert r.kernel == "arm_elementwise_add_s8"
    assert r.stream("input").read_bytes == 96 and r.stream("input2").read_bytes == 96
    assert r.stream("output").write_bytes == 96
    # three requantizations per element: well over 50 cycles per element
    assert 50 < r.cycles / 96 < 120
    g, op = _unary_graph("softmax", (1, 10), (1, 10), SoftmaxAttrs())
    r = M4.time(schedule_for("armv7em-dsp", g, op))
    assert r.stream("input").read_bytes == 30  # max, sum and output passes
    assert r.stream("output").write_bytes == 10


def test_reference_fallbacks():
    from mcusim.ops import NoAttrs

    g, op = _unary_graph("relu", (1, 4, 4, 8), (1, 4, 4, 8), NoAttrs())
    r = M4.time(schedule_for("armv7em-dsp", g, op))
    assert r.kernel.startswith("tflm relu") and r.stream("output").write_bytes == 128


# ----------------------------------------------------------------------- real models
@pytest.mark.parametrize("name", ["vww_96_int8", "kws_ref_model"])
def test_whole_model_mac_rate(name):
    from mcusim.importers.tflite import load_tflite

    g = load_tflite(model_path(name))
    total = macs = 0
    for op in g.ops:
        r = M4.time(schedule_for("armv7em-dsp", g, op))
        total += r.cycles
        macs += r.macs
    # M4 + CMSIS-NN runs these networks at a few tenths of a MAC per cycle
    assert 0.2 < macs / total < 0.5


def test_per_channel_fc_loads_row_params():
    g, op = fc_graph(32, 6)
    g.tensors["w"].quant = _q(6, axis=0)
    r = M4.time(schedule_for("armv7em-dsp", g, op))
    assert r.kernel.startswith("arm_fully_connected_per_channel_s8")
    # multiplier and shift per output row, each from its own array
    assert r.stream("qmult").read_bytes == 6 * 4
    assert r.stream("qparams").read_bytes == 6 * 4
    g, op = fc_graph(32, 6)
    streams = M4.time(schedule_for("armv7em-dsp", g, op)).streams
    assert "qparams" not in streams and "qmult" not in streams


def test_non_int8_activations_are_rejected_clearly():
    from mcusim.dtypes import FLOAT32
    from mcusim.errors import UnsupportedOpError

    g, op = fc_graph(8, 2)
    g.tensors["x"].dtype = FLOAT32
    with pytest.raises(UnsupportedOpError, match="float32"):
        schedule_for("armv7em-dsp", g, op)
    with pytest.raises(UnsupportedOpError, match="riscv"):
        schedule_for("riscv-xpulp", *fc_graph(8, 2))


@pytest.mark.parametrize(
    "args",
    [
        dict(h=4, w=4, c_in=6, c_out=6, k=3, depthwise=True, stride=2),
        dict(h=5, w=5, c_in=5, c_out=5, k=5, depthwise=True),
        dict(h=4, w=4, c_in=1, c_out=4, k=3, depthwise=True, mult=4),
        dict(h=3, w=3, c_in=2, c_out=6, k=3, depthwise=True, mult=3),
    ],
)
def test_depthwise_paths_match_unrolled_walk(args):
    g, op = conv_graph(**args)
    prog = schedule_for("armv7em-dsp", g, op)
    res = M4.time(prog)
    assert res.cycles == unrolled_cycles(M4, prog)
    assert res.stream("output").write_bytes == g.tensor("y").size
    assert res.macs == g.tensor("y").size * 9 * (1 if args["k"] == 3 else 25 / 9)


def test_im2col_walks_kernel_rows_and_unaligned_copies_branch():
    # arm_convolve_s8's tap loop is kernel rows x kernel columns: per pixel k_h - 1 row
    # changes and one row-loop exit; a 3-channel tap copy is not word-aligned, so newlib's
    # memcpy leaves its alignment test for the byte loop (taken branch, no word setup)
    from mcusim.kernels.schedules.common import memcpy_items

    g, op = conv_graph(h=6, w=6, c_in=3, c_out=8, k=3)
    res = M4.time(schedule_for("armv7em-dsp", g, op))
    pixels = 6 * 6
    assert res.loops["im2col_kernel_rows"].iterations == pixels * 2
    items = memcpy_items(3, False, "input", "scratch")
    assert [getattr(i, "name", None) for i in items][:2] == [
        "memcpy_entry_unaligned",
        "memcpy_bytes",
    ]
    entry = items[0]  # bl, mov, orr, lsls, bne (taken)
    assert entry.instrs[-1].taken is True and len(entry) == 5


@pytest.mark.parametrize("core", ["cortex-m4", "cortex-m7", "cortex-m55"])
def test_loop_memo_changes_nothing(core):
    """CoreTiming.time memoizes each loop per entry state; cycles and every loop's
    statistics equal the plain recursive evaluation's (no memo)."""
    isa = "armv8.1m-mve" if core == "cortex-m55" else "armv7em-dsp"
    tm = core_timing(core)
    for depthwise, k in ((False, 3), (True, 3), (False, 1)):
        g, op = conv_graph(h=9, w=7, c_in=8, c_out=8, k=k, stride=2, depthwise=depthwise)
        prog = schedule_for(isa, g, op)
        res = tm.time(prog)
        plain: dict = {}
        cycles, _ = tm._items(prog.items, tm.initial_state(), None, 1, plain)
        assert res.cycles == cycles
        assert {k: (v.iterations, v.cycles) for k, v in res.loops.items()} == {
            k: tuple(v) for k, v in plain.items()
        }


def test_fc_row_branches_follow_the_column_count():
    """VM_ROW_MID's branch past the 1-column steps is taken only when there are none; with
    fewer than 4 columns VM_ROW_SETUP branches to the row middle (the rest of it skipped)."""
    from mcusim.isa.schedule import Block
    from mcusim.kernels.schedules.matmul import vec_mat_mult_t_s8

    def blocks(cols):
        out = {}
        for it in vec_mat_mult_t_s8(4, cols):
            for b in (
                [it] if isinstance(it, Block) else [x for x in it.body if isinstance(x, Block)]
            ):
                out.setdefault(b.name.split("_peeled")[0].split("_nocols")[0], b)
        return out

    for cols, mid_taken in ((16, True), (17, False), (1, False)):
        last = blocks(cols)["vm_row_mid" + ("" if mid_taken else "_scalar")].instrs[-1]
        assert last.cls == "branch" and last.taken is (True if mid_taken else None)
    setup = blocks(1)["vm_row_setup"].instrs
    assert len(setup) == 12 and setup[-1].taken is True
    assert len(blocks(16)["vm_row_setup"].instrs) == 16
