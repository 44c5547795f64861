"""Sub-byte and binary schedules on Armv7E-M + DSP (kernels/schedules/cmix_*.py): dispatch
(CMSIS-NN s4 for W4A8, CMix-NN style elsewhere, XNOR-popcount for W1A1), inner loops
timed from the Cortex-M4 TRM rules by hand, packed stream bytes against hand formulas,
every precision on cortex-m4/m7/m33, and the binary-vs-int8 MAC rate."""

from __future__ import annotations

import numpy as np
import pytest
from test_isa_m4 import unrolled_cycles

from mcusim.dtypes import INT32, ElemType, Quant, elem_type
from mcusim.errors import UnsupportedOpError
from mcusim.graph import Graph, Op, Tensor
from mcusim.isa.schedule import Loop, Program
from mcusim.isa.timing import core_timing
from mcusim.kernels.schedules import schedule_for
from mcusim.kernels.schedules.cmix_binary import _kernel_blocks as xnor_blocks
from mcusim.kernels.schedules.cmix_common import Prec
from mcusim.kernels.schedules.cmix_conv import _cmix_kernel_blocks, _s4_blocks
from mcusim.kernels.schedules.matmul import _s8s16_blocks
from mcusim.ops import (
    Conv2DAttrs,
    DepthwiseConv2DAttrs,
    ElementwiseAttrs,
    FullyConnectedAttrs,
    Pool2DAttrs,
    conv_output_size,
)

M4 = core_timing("cortex-m4")
CORES = ("cortex-m4", "cortex-m7", "cortex-m33")
PRECISIONS = ("W8A8", "W4A8", "W4A4", "W2A4", "W2A2", "W1A8", "W1A1")


def dtype(bits: int, signed: bool = True) -> ElemType:
    if bits == 1:
        return elem_type("binary")
    return elem_type(("int" if signed else "uint") + str(bits))


def _q(n: int = 1, axis: int | None = None, zp: int = 0) -> Quant:
    return Quant(np.full(n, 0.05, np.float32), np.full(n, zp, np.int64), axis)


def mac_graph(
    prec: str,
    kind: str = "conv2d",
    h: int = 6,
    w: int = 6,
    cin: int = 16,
    cout: int = 8,
    k: int = 3,
    y_bits: int | None = None,
    thresholds: bool | None = None,
    a_signed: bool = True,
    in_zp: int = 0,
    padding: str = "same",
    per_channel: bool = True,
    seed: int = 0,
):
    """A validated one-op graph of precision ``prec`` (docs/precision.md): weights of the
    weight width (binary: +-1), input of the activation width, output ``y_bits`` (default:
    binary for W1A1, else the input width), threshold requantization when asked (or for a
    binary output) with a (C_out, 2^N - 1) non-decreasing int32 table."""
    wb, ab = (int(s) for s in prec[1:].split("A"))
    yb = y_bits or (1 if (wb == 1 and ab == 1) else ab)
    thr = thresholds if thresholds is not None else yb == 1
    rng = np.random.default_rng(seed)
    wd, xd, yd = dtype(wb), dtype(ab, a_signed), dtype(yb)
    mode = "thresholds" if thr else "fixed_point"
    if kind == "conv2d":
        wshape, axis = (cout, k, k, cin), 0
        attrs = Conv2DAttrs((1, 1), (1, 1), padding, "none", mode)
    elif kind == "depthwise_conv2d":
        cout = cin
        wshape, axis = (1, k, k, cin), 3
        attrs = DepthwiseConv2DAttrs((1, 1), (1, 1), padding, "none", 1, mode)
    else:
        wshape, axis = (cout, cin), 0
        attrs = FullyConnectedAttrs("none", False, mode)
    if kind == "fully_connected":
        xs, ys = (1, cin), (1, cout)
    else:
        oh, ow = (conv_output_size(n, k, 1, 1, padding) for n in (h, w))
        xs, ys = (1, h, w, cin), (1, oh, ow, cout)
    wv = rng.integers(wd.min, wd.max + 1, size=wshape)
    if wd.binary:
        wv = np.where(wv >= 0, 1, -1)
    wq = _q(cout, axis) if per_channel else _q()
    t = {
        "x": Tensor("x", xs, xd, _q(zp=in_zp)),
        "w": Tensor("w", wshape, wd, wq, wv.astype(wd.np_dtype)),
        "b": Tensor("b", (cout,), INT32, _q(), rng.integers(-99, 99, cout).astype(np.int32)),
        "y": Tensor("y", ys, yd, _q()),
    }
    ins = ["x", "w", "b"]
    if thr:
        levels = 1 if yd.binary else (1 << yb) - 1
        table = np.sort(rng.integers(-50, 50, (cout, levels)), axis=1).astype(np.int32)
        t["t"] = Tensor("t", (cout, levels), INT32, None, table)
        ins.append("t")
    op = Op(kind, "layer", ins, ["y"], attrs)
    g = Graph(t, [op], ["x"], ["y"])
    g.validate()
    return g, op


# ----------------------------------------------------------------------- dispatch
@pytest.mark.parametrize(
    "prec, kind, kw, kernel",
    [
        ("W8A8", "conv2d", {}, "arm_convolve_s8 "),
        ("W4A8", "conv2d", {"y_bits": 8}, "arm_convolve_s4 -> arm_nn_mat_mult_kernel_s4_s16"),
        ("W4A8", "conv2d", {"y_bits": 8, "k": 1}, "arm_convolve_1x1_s4_fast"),
        ("W4A8", "depthwise_conv2d", {"y_bits": 8}, "arm_depthwise_conv_s4_opt"),
        (
            "W4A8",
            "fully_connected",
            {"y_bits": 8, "per_channel": False},
            "arm_fully_connected_s4 -> arm_nn_vec_mat_mult_t_s4",
        ),
        # per-channel FC, uint8 input, int4 output: no CMSIS-NN s4 kernel
        ("W4A8", "fully_connected", {"y_bits": 8}, "cmix-style fully connected W4A8"),
        ("W4A8", "conv2d", {"y_bits": 8, "a_signed": False, "in_zp": 128}, "cmix-style conv"),
        ("W4A8", "conv2d", {"y_bits": 4}, "cmix-style conv W4A8"),
        ("W4A4", "conv2d", {}, "cmix-style conv W4A4"),
        ("W2A2", "depthwise_conv2d", {}, "cmix-style depthwise W2A2"),
        ("W1A8", "fully_connected", {"y_bits": 8}, "cmix-style fully connected W1A8"),
        ("W1A1", "conv2d", {}, "cmix-style xnor-popcount conv W1A1"),
        ("W1A1", "depthwise_conv2d", {}, "cmix-style xnor depthwise W1A1"),
        ("W1A1", "fully_connected", {}, "cmix-style xnor-popcount fully connected"),
    ],
)
def test_dispatch(prec, kind, kw, kernel):
    g, op = mac_graph(prec, kind, **kw)
    assert kernel in schedule_for("armv7em-dsp", g, op).kernel + " "


def test_binary_activations_need_binary_weights():
    g, op = mac_graph("W1A1")
    g.tensors["w"] = Tensor(
        "w", g.tensors["w"].shape, dtype(4), _q(8, 0), np.zeros(g.tensors["w"].shape, np.int8)
    )
    g.tensors["y"] = Tensor("y", g.tensors["y"].shape, dtype(1), _q())
    with pytest.raises(UnsupportedOpError, match=r"layer.*W4A1|W4A1.*layer"):
        schedule_for("cortex-m4", g, op)


# ------------------------------------------------------------ inner loops by hand
def _steady(timing, block) -> int:
    one = timing.time(Program([Loop("l", 1, [block])])).cycles
    many = timing.time(Program([Loop("l", 101, [block])])).cycles
    return (many - one) // 100


@pytest.mark.parametrize(
    "w, expected",
    [
        # per weight word of both channels (G = 32/w reduction columns x 2 ch x 2 cols):
        # LDR, LDR (pipelined) 2 + 1; EOR x2 (int4/int2 lanes' sign bias) 2; per pair
        # (G/2 of them): LDR 2 (after an ALU/DSP op) + LDR 1 (pipelined) + 2 AND + 4 SMLAD
        # = 9; spilled counter LDR 2 + SUBS 1 + STR imm 1 + BNE taken 1 + P(2) = 7
        (4, 3 + 2 + 4 * 9 + 7),  # 48 cycles / 32 MACs = 0.667
        (2, 3 + 2 + 8 * 9 + 7),  # 84 / 64 = 0.762
        # binary weights: no EOR, so the first column LDR pipelines behind the weight LDRs
        (1, 3 + 16 * 9 - 1 + 7),  # 153 / 128 = 0.837
    ],
)
def test_cmix_inner_loop_from_rules(w, expected):
    p = Prec(w, 4, True, 4, True, False, True, 0)
    blk = _cmix_kernel_blocks(p, 2, 2)["step"]
    macs = 2 * sum(1 for i in blk.instrs if i.mnemonic == "smlad")
    assert macs == 2 * 2 * (32 // w)
    assert _steady(M4, blk) == expected
    # sub-byte weights make the CMix-NN scheme faster than CMSIS-NN's int8 kernel (31
    # cycles per 16 MACs, test_schedules_m4): no weight sign extension per MAC pair
    assert macs / expected > 16 / 31


def test_cmsis_s4_inner_loop_from_rules():
    blk = _s4_blocks()["step"]
    # read_and_pad_s4_ordered x2: LDRSH 2 + 12 ALU/DSP (UXTB, AND, ORR; LSL, SXTB16, ROR,
    # SXTB16; SXTB16, ROR, SXTB16; PKHBT, PKHTB) = 14 each -> 28; LDR 2 + LDR 1; 4 SMLAD;
    # LDR 2 + LDR 1; 4 SMLAD; spilled counter 7                                   = 49
    assert _steady(M4, blk) == 28 + 3 + 4 + 3 + 4 + 7 == 49
    assert 16 / 49 < 16 / 31  # int4 unpacking costs CMSIS-NN a third of its int8 rate


def test_binary_swar_loop_from_rules_and_vs_int8():
    blk = xnor_blocks(2, 2, "scratch")["step"]
    assert sum(1 for i in blk.instrs if i.mnemonic == "usada8") == 4
    # LDR w, a0, a1: 2 + 1 + 1; per XOR-popcount EOR + 7 SWAR + USADA8 = 9, two of them;
    # LDR w1 2 (after USADA8); two more = 18; spilled counter 7                    = 49
    cyc = 4 + 18 + 2 + 18 + 7
    assert _steady(M4, blk) == cyc == 49
    per_word = cyc / 4
    assert 11 <= per_word <= 13  # cortex-m.md section 6: ~11-13 cycles per 32 bits
    bmac = 128 / cyc  # 2.61 bMAC/cycle
    int8 = 16 / _steady(M4, _s8s16_blocks()["inner"])  # 16 / 31
    assert 2.5 <= bmac <= 3.0
    assert bmac / int8 == pytest.approx((128 / 49) / (16 / 31))
    assert 4.5 < bmac / int8 < 5.5  # ~5x the int8 SMLAD path


# ---------------------------------------------------------------- stream bytes
def test_w4a4_conv_stream_bytes_packed():
    # 5x5x8 int4 input, 3x3 SAME, 4 int4 filters, int4 output, per-channel fixed point
    g, op = mac_graph("W4A4", h=5, w=5, cin=8, cout=4)
    res = M4.time(schedule_for("cortex-m4", g, op))
    k_cols, out_c, pix = 3 * 3 * 8, 4, 25
    pairs, odd = divmod(pix, 2)
    # input: only in-bounds taps (13 x 13 over the 5x5 image), 8 nibbles = 4 bytes each
    assert res.stream("input").read_bytes == 13 * 13 * 4
    # weights: a row of 72 nibbles = 9 words, every filter re-read per column pair and
    # once for the odd column
    assert res.stream("weights").read_bytes == (pairs + odd) * out_c * 9 * 4
    # outputs: two int4 channels per byte, one STRB per pixel and channel pair
    assert res.stream("output").write_bytes == pix * out_c // 2 == g.tensor("y").nbytes
    # s16 im2col: written once per pixel (unpacked taps + zeroed padding taps), both
    # columns re-read per channel pair (the odd column per channel pair too)
    assert res.stream("scratch").write_bytes == pix * 2 * k_cols
    assert res.stream("scratch").read_bytes == (pairs * 2 + odd) * (out_c // 2) * 2 * k_cols
    assert res.stream("bias").read_bytes == (pairs + odd) * out_c * 4
    # multiplier and shift: two arrays, 4 bytes per output each
    assert res.stream("qmult").read_bytes == res.stream("qparams").read_bytes == pix * out_c * 4
    assert res.macs == pix * out_c * k_cols


def test_threshold_outputs_read_n_thresholds_per_output():
    # W2A2 with int2 outputs by thresholds: a 2-level binary search reads 2 of the 3
    # thresholds of the channel per output
    g, op = mac_graph("W2A2", h=4, w=4, cin=16, cout=4, thresholds=True)
    res = M4.time(schedule_for("cortex-m4", g, op))
    assert res.stream("qparams").read_bytes == 16 * 4 * 2 * 4
    # binary outputs: one threshold per output
    g, op = mac_graph("W1A1", h=4, w=4, cin=32, cout=4, padding="valid", k=1)
    res = M4.time(schedule_for("cortex-m4", g, op))
    assert res.stream("qparams").read_bytes == 16 * 4 * 1 * 4
    # int2/binary outputs: read-modify-write of the output byte per pixel and channel pair
    assert res.stream("output").write_bytes == 16 * 2


def test_binary_fc_reads_packed_words():
    g, op = mac_graph("W1A1", "fully_connected", cin=256, cout=16)
    res = M4.time(schedule_for("cortex-m4", g, op))
    assert res.stream("weights").read_bytes == 16 * 256 // 8
    assert res.stream("input").read_bytes == 8 * 256 // 8  # re-read per channel pair
    assert res.macs == 16 * 256
    assert 1.2 < res.macs_per_cycle < 2.7


# ------------------------------------------------------------ every precision
@pytest.mark.parametrize("core", CORES)
@pytest.mark.parametrize("prec", PRECISIONS)
@pytest.mark.parametrize("kind", ["conv2d", "depthwise_conv2d", "fully_connected"])
def test_every_precision_schedules_and_times(core, prec, kind):
    g, op = mac_graph(prec, kind, y_bits=8 if prec.endswith("A8") else None)
    prog = schedule_for(core, g, op)
    res = core_timing(core).time(prog)
    w, x, y = (g.tensor(n) for n in ("w", "x", "y"))
    assert res.macs == (
        y.size * (w.size // w.shape[0]) if kind != "depthwise_conv2d" else y.size * 9
    )
    assert 0.03 < res.macs_per_cycle < 3.0
    # packed traffic: the weights at least once (rows padded to words at most), the input
    # at least once, the packed outputs written
    assert res.stream("weights").read_bytes >= w.nbytes
    assert res.stream("input").read_bytes >= x.nbytes
    assert res.stream("output").write_bytes >= y.nbytes
    if core == "cortex-m4":
        assert res.cycles == unrolled_cycles(M4, prog)  # evaluator == instruction walk


def test_m7_faster_and_sub_byte_faster_than_int8_on_conv():
    rates = {}
    for core in ("cortex-m4", "cortex-m7"):
        for prec in ("W8A8", "W4A4", "W2A2", "W1A1"):
            g, op = mac_graph(prec, h=12, w=12, cin=32, cout=32)
            rates[core, prec] = core_timing(core).time(schedule_for(core, g, op)).macs_per_cycle
    for prec in ("W8A8", "W4A4", "W2A2", "W1A1"):
        assert rates["cortex-m7", prec] > rates["cortex-m4", prec]
    for core in ("cortex-m4", "cortex-m7"):
        assert rates[core, "W8A8"] < rates[core, "W4A4"] < rates[core, "W2A2"]
        assert rates[core, "W1A1"] > rates[core, "W2A2"]
    # M4: 128 bMACs per 49 cycles vs 64 MACs per 84 in the kernels' inner loops
    assert rates["cortex-m4", "W1A1"] > 2 * rates["cortex-m4", "W2A2"]


def test_int8_path_unchanged():
    g, op = mac_graph("W8A8", h=5, w=5, cin=4, cout=6)
    prog = schedule_for("cortex-m4", g, op)
    assert prog.kernel == "arm_convolve_s8 -> arm_nn_mat_mult_kernel_s8_s16"
    assert prog.scratch_bytes == 2 * 36 * 2


def test_scratch_buffers():
    g, op = mac_graph("W4A8", y_bits=8, cin=8)
    assert schedule_for("cortex-m4", g, op).scratch_bytes == 2 * 72 * 2  # arm_convolve_s4
    g, op = mac_graph("W4A4", cin=8)
    assert schedule_for("cortex-m4", g, op).scratch_bytes == 2 * 72 * 2  # 2 s16 columns
    g, op = mac_graph("W4A4", cin=6)  # 6 channels: packed column + one unpack pass
    assert schedule_for("cortex-m4", g, op).scratch_bytes == 2 * 54 * 2 + 28
    g, op = mac_graph("W1A1", cin=48)
    assert schedule_for("cortex-m4", g, op).scratch_bytes == 2 * 4 * 14  # 432 bits
    g, op = mac_graph("W4A8", "depthwise_conv2d", y_bits=8, cin=8)
    assert schedule_for("cortex-m4", g, op).scratch_bytes == 9 * 8 * 2


# --------------------------------------------------------------- pooling and add
def _unary(kind, xt, yt, shape_in, shape_out, attrs, second=False):
    t = {"x": Tensor("x", shape_in, xt, _q()), "y": Tensor("y", shape_out, yt, _q())}
    ins = ["x"]
    if second:
        t["x2"] = Tensor("x2", shape_in, xt, _q())
        ins.append("x2")
    op = Op(kind, kind, ins, ["y"], attrs)
    g = Graph(t, [op], ins, ["y"])
    g.validate()
    return g, op


@pytest.mark.parametrize("bits, signed", [(4, True), (4, False), (2, False), (1, False)])
def test_max_pool_packed(bits, signed):
    dt = dtype(bits, signed)
    g, op = _unary(
        "max_pool2d", dt, dt, (1, 8, 8, 32), (1, 4, 4, 32), Pool2DAttrs((2, 2), (2, 2), "valid")
    )
    res = M4.time(schedule_for("cortex-m4", g, op))
    assert res.kernel.startswith("cmix-style max pool")
    assert res.stream("input").read_bytes == g.tensor("x").nbytes  # every tap once, packed
    # first tap copied to the output, later taps merged in place
    assert res.stream("output").write_bytes == 4 * g.tensor("y").nbytes


def test_avg_pool_and_add_packed():
    dt = dtype(4)
    g, op = _unary(
        "avg_pool2d", dt, dt, (1, 8, 8, 16), (1, 4, 4, 16), Pool2DAttrs((2, 2), (2, 2), "valid")
    )
    prog = schedule_for("cortex-m4", g, op)
    res = M4.time(prog)
    assert res.stream("input").read_bytes == 8 * 8 * 16 // 2
    assert res.stream("output").write_bytes == 4 * 4 * 16 // 2
    assert prog.scratch_bytes == 16 * 4
    g, op = _unary("add", dt, dt, (1, 4, 4, 16), (1, 4, 4, 16), ElementwiseAttrs(), second=True)
    res = M4.time(schedule_for("cortex-m4", g, op))
    assert res.kernel.startswith("cmix-style add")
    assert res.stream("output").write_bytes == 128
    # three requantizations per element, as the int8 kernel: 50-120 cycles per element
    assert 50 < res.cycles / 256 < 120
    with pytest.raises(UnsupportedOpError, match="binary"):
        schedule_for(
            "cortex-m4",
            *_unary(
                "avg_pool2d",
                dtype(1),
                dtype(1),
                (1, 4, 4, 8),
                (1, 2, 2, 8),
                Pool2DAttrs((2, 2), (2, 2), "valid"),
            ),
        )


def test_whole_subbyte_layer_runs_on_devices():
    from mcusim.model import Model
    from mcusim.runner import run

    for prec in ("W4A4", "W1A1"):
        g, op = mac_graph(prec, h=8, w=8, cin=32, cout=16)
        for dev in ("stm32l4r5", "stm32h743"):
            rec = run(Model(g), dev).layers[0]
            assert rec.kernel.startswith("cmix-style")
            assert rec.cycles >= rec.compute_cycles > 0


def test_binary_depthwise_vertical_counter_from_rules():
    from mcusim.kernels.schedules.cmix_binary import _dw_blocks

    p = Prec(1, 1, False, 1, False, True, True, 0)
    tap = _dw_blocks(p, 4)["tap"]  # 3x3: 9 taps -> 4 bit planes
    # LDR x 2 (after the back edge) + LDR w 1 (pipelined); EOR 1; 3 half adders (AND +
    # EOR) + the last plane's EOR = 7; stride loads LDR 2 + ADD 1, LDR 2 + ADD 1;
    # spilled counter LDR 2 + SUBS 1 + STR 1 + BNE taken 3                       = 24
    assert _steady(M4, tap) == 3 + 1 + 7 + 6 + 7 == 24  # 32 bMACs per 24 cycles
    g, op = mac_graph("W1A1", "depthwise_conv2d", cin=40)
    res = M4.time(schedule_for("cortex-m4", g, op))
    # binary outputs gathered in a register: one word (or the last bytes) per channel word
    assert res.stream("output").write_bytes == g.tensor("y").nbytes == 36 * 5
    # one word per in-bounds tap and channel word (40 channels: 2 words); SAME 3x3 over 6:
    # 2+3+3+3+3+2 = 16 in-bounds rows and columns -> 256 taps
    assert res.stream("input").read_bytes == 16 * 16 * 2 * 4


@pytest.mark.parametrize("prec", ["W2A2", "W4A4", "W1A1"])
@pytest.mark.parametrize("kind", ["conv2d", "depthwise_conv2d", "fully_connected"])
def test_odd_channel_counts_store_every_output(prec, kind):
    # odd channels and channels that are not whole groups: every packed output is written
    g, op = mac_graph(prec, kind, cin=5, cout=7)
    res = M4.time(schedule_for("cortex-m4", g, op))
    assert res.stream("output").write_bytes >= g.tensor("y").nbytes
    assert res.cycles == unrolled_cycles(M4, schedule_for("cortex-m4", g, op))


def test_mve_dispatch_for_sub_byte_layers():
    # conv / FC with int4 / int2 weights and W1A1 run the Helium kernels (mve_subbyte.py);
    # depthwise, pooling, add and W1A8 run the CMix-NN-style scalar DSP code (CMSIS-NN's
    # MVE build compiles its Helium s4 branch, never the DSP one, so no DSP s4 names)
    g, op = mac_graph("W4A8", y_bits=8)
    assert schedule_for("armv8.1m-mve", g, op).kernel == (
        "arm_convolve_s4 -> arm_nn_mat_mult_nt_t_s4 (MVE)"
    )
    g, op = mac_graph("W2A2", "fully_connected")
    assert schedule_for("armv8.1m-mve", g, op).kernel.startswith("cmix-style mve fc W2A2")
    g, op = mac_graph("W1A1")
    assert "mve xnor-popcount conv" in schedule_for("armv8.1m-mve", g, op).kernel
    g, op = mac_graph("W4A8", "depthwise_conv2d", y_bits=8)
    prog = schedule_for("armv8.1m-mve", g, op)
    assert prog.kernel.startswith("cmix-style depthwise W4A8")
    assert any("no MVE kernel" in n for n in prog.notes)
    for core in ("cortex-m55", "cortex-m85"):
        res = core_timing(core).time(prog)
        assert res.macs == g.tensor("y").size * 9 and res.cycles > 0
    g, op = mac_graph("W8A8")
    assert "cmix" not in schedule_for("armv8.1m-mve", g, op).kernel


@pytest.mark.parametrize("core", ["cortex-m55", "cortex-m85"])
@pytest.mark.parametrize("prec", ["W4A8", "W4A4", "W2A4", "W2A2", "W1A1"])
@pytest.mark.parametrize("kind", ["conv2d", "fully_connected"])
def test_mve_sub_byte_schedules_time(core, prec, kind):
    g, op = mac_graph(prec, kind, y_bits=8 if prec.endswith("A8") else None, cin=32, cout=8)
    prog = schedule_for("armv8.1m-mve", g, op)
    res = core_timing(core).time(prog)
    w, y = g.tensor("w"), g.tensor("y")
    assert res.macs == y.size * (w.size // w.shape[0])
    assert res.stream("weights").read_bytes >= w.nbytes
    assert res.stream("output").write_bytes >= y.nbytes
    assert 0.1 < res.macs_per_cycle < 8


def test_mve_inner_loops_instruction_mix_and_bounds():
    from mcusim.isa.schedule import Block
    from mcusim.kernels.schedules.mve_subbyte import _kernel_blocks

    m55 = core_timing("cortex-m55")

    def steady(blk):
        dls = Block.asm("dls lr, r2", "dls")
        one = m55.time(Program([dls, Loop("l", 2, [blk])])).cycles
        return (m55.time(Program([dls, Loop("l", 102, [blk])])).cycles - one) / 100

    # int4 weights, 4 rows: VLDRB + VSHL/VSHR/VSHR + 2 VADDVA.S8 (sum of w) + per row
    # VLD20/VLD21 + 2 VMLADAVA.S8 = 128 MACs. Every MVE instruction holds its pipe 2
    # cycles (dual-beat M55): the LS pipe alone needs 9 x 2 = 18, the MUL pipe 10 x 2 = 20;
    # fully serial would be 23 x 2 = 46
    blk = _kernel_blocks(Prec(4, 8, True, 8, True, False, True, 0), 4, "scratch")["step"]
    mn = [i.mnemonic for i in blk.instrs]
    assert mn.count("vmladava") == 8 and mn.count("vld20") + mn.count("vld21") == 8
    cyc = steady(blk)
    assert 20 <= cyc <= 46
    # binary: per row VLDRB, VEOR, 10 SWAR ops on the INT pipe, VADDVA.U8: at least
    # 11 x 2 = 22 cycles per 128 bits and row on the INT pipe
    blk = _kernel_blocks(Prec(1, 1, False, 1, False, True, True, 0), 4, "scratch")["step"]
    cyc = steady(blk)
    assert 4 * 22 <= cyc <= 4 * 27
    bmac = 4 * 128 / cyc  # ~5.4 bMAC/cycle (cortex-m.md section 6 estimates 7-8)
    assert 4.5 < bmac < 6
