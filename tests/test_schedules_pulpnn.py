"""PULP-NN (XpulpV2) and XpulpNN instruction schedules (kernels/schedules/pulpnn*.py).

Cycle counts are derived by hand from the RI5CY rules (isa/ri5cy.toml: every ALU / SIMD /
dot-product / load / store / MAC&LOAD instruction 1 cycle, a load whose data the next
instruction reads +1, hardware loops loop back in 0 cycles, taken branch 3)."""

from __future__ import annotations

import pytest
from test_kernels_subbyte import COMBO_IDS, COMBOS, make_mac
from test_schedules_m4 import conv_graph, fc_graph

from mcusim import cluster as C
from mcusim.devices.loader import load_device
from mcusim.isa.riscv_asm import hw_loop
from mcusim.isa.schedule import Program
from mcusim.isa.timing import core_timing
from mcusim.kernels.schedules import FAMILIES, pulpnn, pulpnn_xpulpnn, schedule_for
from mcusim.kernels.schedules.pulpnn_common import MM, Target, inner_block

V2 = Target(xpulpnn=False)
NN = Target(xpulpnn=True)
NN_NO_ML = Target(xpulpnn=True, macload=False)


def _per_iter(mm: MM, n_ch: int, n_px: int, core: str) -> float:
    prog = Program([hw_loop("inner", 10, [inner_block(mm, n_ch, n_px)])])
    return core_timing(core).time(prog).cycles / 10


# ---- inner loops, by hand ----------------------------------------------------------------


def test_int8_4x2_inner_loop_is_14_cycles_for_32_macs():
    # 4 p.lw weights + 2 p.lw im2col + 8 pv.sdotusp.b; the first dot reads the first im2col
    # word, loaded two instructions earlier: no load-use stall; loop-back free: 14 cycles
    mm = MM(8, 8, 8, False, V2)
    blk = inner_block(mm, 4, 2)
    assert [i.mnemonic for i in blk.instrs].count("pv.sdotusp") == 8
    assert _per_iter(mm, 4, 2, "ri5cy") == 14  # 32 MACs: 2.29 MAC/cycle (riscv-xpulp.md §6)


def test_xpulpv2_int4_weights_unpacked_through_the_stack():
    # per iteration 8 columns: 4 p.lw weight words; per channel two byte words each of
    # 4 p.extract + 2 pv.pack (12) and the first stored to the stack array (MemoryFence):
    # 4 x 13 = 52; then 4 lw back + 2 p.lw im2col + 8 dots, 2 p.lw + 8 dots: 4+52+14+10 = 80
    assert _per_iter(MM(4, 8, 8, False, V2), 4, 2, "ri5cy") == 80  # 64 MACs
    # 2-bit: 4 byte words per weight word: 4 x (4 x 6 + 3 sw) = 108, 3 x 4 reloads,
    # 4 x (2 + 8): 4 + 108 + 12 + 40 = 164 cycles for 128 MACs
    assert _per_iter(MM(2, 8, 8, False, V2), 4, 2, "ri5cy") == 164


def test_xnor_popcount_4x2_is_30_cycles_for_256_binary_macs():
    # 4 + 2 p.lw, then per (channel, pixel) xor + p.cnt + add: 6 + 24 = 30 (riscv-xpulp.md §7)
    mm = MM(1, 1, 1, False, V2)
    assert mm.xnor and mm.cols == 32
    assert _per_iter(mm, 4, 2, "ri5cy") == 30


@pytest.mark.parametrize(("bits", "macs"), [(8, 64), (4, 128), (2, 256)])
def test_macload_4x4_is_17_cycles(bits, macs):
    # 1 init + 16 pv.mlsdotsup; no MAC&LOAD reads the SPR the previous one reloaded
    # (SPR load-use would cost 1): 17 cycles for 4 channels x 4 pixels x 32/bits MACs,
    # i.e. 3.76 / 7.5 / 15.1 MAC/cycle (riscv-xpulp.md §5 table)
    mm = MM(bits, bits, bits, False, NN)
    blk = inner_block(mm, 4, 4)
    assert len(blk.instrs) == 17 and {i.cls for i in blk.instrs} == {"nn_macload"}
    assert sum(1 for i in blk.instrs if i.mem is not None) == 8  # 4 act + 4 weight words
    assert _per_iter(mm, 4, 4, "xpulpnn") == 17
    assert macs / 17 == pytest.approx({8: 3.76, 4: 7.5, 2: 15.1}[bits], abs=0.05)


def test_nibble_4x2_without_macload_is_14_cycles():
    # DATE 2020 kernel: 6 p.lw + 8 pv.sdotusp.n = 14 cycles for 64 MACs (4.6 MAC/cycle)
    mm = MM(4, 4, 4, False, NN_NO_ML)
    assert not mm.macload
    assert [i.cls for i in inner_block(mm, 4, 2).instrs].count("nn_dotp") == 8
    assert _per_iter(mm, 4, 2, "xpulpnn") == 14


def test_linear_pair_loop_avoids_load_use():
    # pulp_nn_linear, 2 neurons: input word first, then the 2 weight words, 2 dots: the
    # first dot reads a word loaded 2 instructions earlier: 5 cycles per 8 MACs
    assert _per_iter(MM(8, 8, 8, False, V2), 2, 1, "ri5cy") == 5


def test_xpulpnn_instructions_never_leak_into_xpulpv2_schedules():
    # the ri5cy model refuses nn_* classes: every XpulpV2 schedule of a sub-byte layer
    # times on it, the XpulpNN ones do not
    layer = make_mac("conv2d", "int4", "uint4", "uint4", "thresholds", _GEO, seed=3)
    g, op = layer.graph, layer.graph.ops[0]
    core_timing("ri5cy").time(pulpnn.schedule(g, op))
    with pytest.raises(ValueError, match="XpulpNN instruction"):
        core_timing("ri5cy").time(pulpnn_xpulpnn.schedule(g, op))


# ---- a small conv: stream bytes by hand -----------------------------------------------------


def test_int8_conv_stream_bytes_by_hand():
    """6x6x8 -> 8, 3x3 'same', one core, XpulpV2: K = 72, 18 pairs of columns."""
    g, op = conv_graph(6, 6, 8, 8, 3)
    prog = schedule_for("rv32-xpulpv2", g, op)
    r = core_timing("ri5cy").time(prog)
    s = r.streams
    k, pairs = 72, 18
    # im2col reads the in-bounds taps: (2+3+3+3+3+2)^2 = 256 taps of 8 channels
    assert s["input"].read_bytes == 256 * 8
    # ... and writes every pixel's whole column (copies + zero fill)
    assert s["scratch"].write_bytes == 36 * k
    # every pair re-reads all 8 filters; each of its 2 channel groups both columns
    assert s["weights"].read_bytes == pairs * 8 * k
    assert s["scratch"].read_bytes == pairs * 2 * (2 * k)
    assert s["bias"].read_bytes == pairs * 8 * 4
    # kappa (the multiplier, "qmult") and lambda per channel, each from its own array
    assert s["qmult"].read_bytes == s["qparams"].read_bytes == pairs * 8 * 2 * 2
    assert s["output"].write_bytes == 6 * 6 * 8
    assert prog.macs == 36 * 8 * k and prog.scratch_bytes == 2 * k  # two im2col columns


def test_pointwise_conv_reads_the_input_directly():
    g, op = conv_graph(8, 8, 16, 16, 1, padding="valid")
    prog = schedule_for("rv32-xpulpv2", g, op)
    s = core_timing("ri5cy").time(prog).streams
    assert prog.kernel.startswith("pulp_nn_pointwise")
    assert "scratch" not in s
    # 32 pairs of pixels, each re-read by the 4 channel groups: 32 x 4 x 2 x 16 bytes
    assert s["input"].read_bytes == 32 * 4 * 2 * 16


# ---- cluster parts ---------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["rv32-xpulpv2", "rv32-xpulpnn"])
@pytest.mark.parametrize(
    "make",
    [
        lambda: conv_graph(15, 15, 16, 24, 3),  # howo split, odd rows and columns
        lambda: conv_graph(16, 16, 8, 8, 3),  # rows only
        lambda: conv_graph(9, 9, 20, 20, 3, depthwise=True),  # channels
        lambda: fc_graph(100, 37),  # neurons 5 x 8 - 3
        lambda: conv_graph(12, 12, 8, 8, 1, padding="valid"),  # pointwise
    ],
    ids=["conv_howo", "conv_ho", "depthwise", "fc", "pointwise"],
)
def test_part_programs_sum_to_the_whole_layer(family, make):
    g, op = make()
    build = C.part_builder(family)
    whole = schedule_for(family, g, op)
    parts = [p for p in C.split(g, op, 8) if not p.empty]
    progs = [build(g, op, p) for p in parts]
    assert sum(p.macs for p in progs) == whole.macs > 0
    core = "ri5cy" if family == "rv32-xpulpv2" else "xpulpnn"
    cyc = [core_timing(core).time(p).cycles for p in progs]
    total = core_timing(core).time(whole).cycles
    # the parts run the same loops with smaller trip counts: together about the whole
    # layer (each part repeats the per-call overhead), the largest part a fraction of it
    assert 0.95 * total < sum(cyc) < 1.25 * total
    assert max(cyc) < total / 3
    w = [core_timing(core).time(p).streams["output"].write_bytes for p in progs]
    assert sum(w) == core_timing(core).time(whole).streams["output"].write_bytes


def test_families_registered():
    assert FAMILIES["rv32-xpulpv2"].endswith("pulpnn:schedule")
    assert FAMILIES["rv32-xpulpnn"].endswith("pulpnn_xpulpnn:schedule")
    assert C.part_builder("rv32-xpulpv2") is pulpnn.schedule_part
    assert C.part_builder("rv32-xpulpnn") is pulpnn_xpulpnn.schedule_part


# ---- every precision on both families --------------------------------------------------------

_GEO = (7, 9, 8, 6, 3, 1, "same", 1, 1)
_KIND_GEO = {
    "conv2d": _GEO,
    "depthwise_conv2d": (7, 8, 5, 0, 3, 1, "same", 1, 1),
    "fully_connected": (2, 3, 70, 5, 1, 1, "valid", 1, 1),
}


@pytest.mark.parametrize("kind", list(_KIND_GEO))
@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
def test_every_precision_schedules_on_both_families(combo, kind):
    layer = make_mac(kind, *combo, _KIND_GEO[kind], seed=5)
    g, op = layer.graph, layer.graph.ops[0]
    res = {}
    fams = (("rv32-xpulpv2", "ri5cy"), ("rv32-xpulpnn", "xpulpnn"), ("rv32imc", "cv32e40p"))
    for family, core in fams:
        prog = schedule_for(family, g, op)
        r = core_timing(core).time(prog)
        assert prog.isa == family and r.cycles > 0 and prog.macs > 0
        assert r.stream("weights").read_bytes > 0 and r.stream("output").write_bytes > 0
        res[family] = (prog, r)
    w, a, o, mode = combo
    prog, r = res["rv32-xpulpnn"]
    classes = [i.cls for it, m in prog.walk() if m and hasattr(it, "instrs") for i in it.instrs]
    if mode == "thresholds" and o in ("int4", "uint4"):
        assert "nn_qnt" in classes  # pv.qnt.n for 4-bit threshold outputs
    sub = {w, a} <= {"int4", "uint4"} or {w, a} <= {"int2", "uint2"}
    if kind != "depthwise_conv2d" and sub:  # XpulpNN runs them on packed nibbles/crumbs
        assert {"nn_dotp", "nn_macload"} & set(classes)
        assert res["rv32-xpulpv2"][1].cycles > 2 * r.cycles
    if w == a == "binary" and kind != "depthwise_conv2d":  # XOR + p.cnt on both
        for fam in (res["rv32-xpulpv2"], res["rv32-xpulpnn"]):
            mn = [i.mnemonic for it, m in fam[0].walk() if m and hasattr(it, "instrs")
                  for i in it.instrs]  # fmt: skip
            assert "p.cnt" in mn and not {"pv.sdotusp", "pv.sdotsp"} & set(mn)


# binary is defined for max pooling only (docs/precision.md section 3)
@pytest.mark.parametrize(
    "kind, tname",
    [(k, t) for k in ("max_pool2d", "avg_pool2d", "add") for t in ("int8", "uint4", "int2")]
    + [("max_pool2d", "binary")],
)
def test_pool_and_add_at_sub_byte(kind, tname):
    from test_kernels_subbyte import q

    from mcusim.dtypes import elem_type
    from mcusim.graph import Graph, Op, Tensor
    from mcusim.ops import ElementwiseAttrs, Pool2DAttrs

    t = elem_type(tname)
    x = Tensor("x", (1, 8, 8, 16), t, q(0.05, 0))
    if kind == "add":
        y = Tensor("y", (1, 8, 8, 16), t, q(0.1, 0))
        op = Op("add", "add", ["x", "x2"], ["y"], ElementwiseAttrs())
        ts = {"x": x, "x2": Tensor("x2", x.shape, t, q(0.07, 0)), "y": y}
        ins = ["x", "x2"]
    else:
        y = Tensor("y", (1, 4, 4, 16), t, q(0.05, 0))
        op = Op(kind, "pool", ["x"], ["y"], Pool2DAttrs((2, 2), (2, 2), "valid"))
        ts, ins = {"x": x, "y": y}, ["x"]
    g = Graph(ts, [op], ins, ["y"]).validate()
    cyc = {}
    for family, core in (("rv32-xpulpv2", "ri5cy"), ("rv32-xpulpnn", "xpulpnn")):
        r = core_timing(core).time(schedule_for(family, g, op))
        # outputs written once, packed: 16 channels of 4x4 (pool) or 8x8 (add) pixels
        assert r.stream("output").write_bytes >= y.dtype.storage_bytes(y.size)
        cyc[family] = r.cycles
    if kind == "max_pool2d" and tname in ("uint4", "int2"):
        assert cyc["rv32-xpulpnn"] < cyc["rv32-xpulpv2"]  # pv.maxu.n/.c on packed words


def test_threshold_tree_on_xpulpv2_qnt_on_xpulpnn():
    layer = make_mac("conv2d", "int4", "uint4", "uint4", "thresholds", _GEO, seed=9)
    g, op = layer.graph, layer.graph.ops[0]
    outs = 2 * 7 * 9 * 6
    v2 = core_timing("ri5cy").time(pulpnn.schedule(g, op))
    nn = core_timing("xpulpnn").time(pulpnn_xpulpnn.schedule(g, op))
    assert v2.loops["thr_tree_outputs"].iterations == outs  # a tree call per output
    # the tree reads 4 int16 thresholds per output (4 levels), pv.qnt.n 4 too
    assert v2.stream("qparams").read_bytes == 4 * 2 * outs
    assert "thr_tree_outputs" not in nn.loops
    assert nn.stream("qparams").read_bytes == 4 * 2 * outs


def test_models_on_xpulpnn_faster_than_on_one_ri5cy():
    """The same INT8 model: XpulpNN's MAC&LOAD matmul beats the XpulpV2 4x2 kernel."""
    import mcusim

    from conftest import model_path

    m = mcusim.load(model_path("kws_ref_model"))
    g = m.graph
    conv = [op for op in g.ops if op.kind == "conv2d"]
    for op in conv:
        a = core_timing("ri5cy").time(schedule_for("rv32-xpulpv2", g, op)).cycles
        b = core_timing("xpulpnn").time(schedule_for("rv32-xpulpnn", g, op)).cycles
        assert b < a


def test_gap8_cluster_runs_pulpnn_parts():
    g, op = conv_graph(16, 16, 32, 64, 3)
    lay = C.cluster_layer(load_device("gap8"), g, op)
    assert lay.cores_used == 8 and lay.kernel.startswith("pulp_nn_conv_w8a8o8")
    # 16 rows over 8 cores: every core 2 rows, same program: equal pipeline cycles up to
    # the border rows' im2col (first and last core)
    assert max(lay.core_cycles) - min(lay.core_cycles) < 0.01 * max(lay.core_cycles)


def test_wide_types_refused_with_layer_and_precision():
    from dataclasses import replace

    from mcusim.dtypes import INT16
    from mcusim.errors import UnsupportedOpError

    g, op = conv_graph(6, 6, 8, 8, 3)
    g.tensors[op.inputs[0]] = replace(g.tensors[op.inputs[0]], dtype=INT16)
    for family in ("rv32-xpulpv2", "rv32-xpulpnn"):
        with pytest.raises(UnsupportedOpError, match=r"conv.*rv32-xpulp.*W8A16 \(int8 x int16"):
            schedule_for(family, g, op)


def test_sub_and_mul_parts_split_the_elements():
    """Ops without a PULP-NN kernel but with a row split (sub, mul) time only their rows."""
    from mcusim.graph import Graph, Op, Tensor
    from mcusim.ops import ElementwiseAttrs

    g0, op0 = conv_graph(16, 8, 8, 8, 1, padding="valid")
    x = g0.tensors[op0.inputs[0]]
    ts = {
        "a": x,
        "b": Tensor("b", x.shape, x.dtype, x.quant),
        "y": Tensor("y", x.shape, x.dtype, x.quant),
    }
    op = Op("sub", "sub", ["a", "b"], ["y"], ElementwiseAttrs())
    g = Graph(ts, [op], ["a", "b"], ["y"]).validate()
    whole = core_timing("ri5cy").time(schedule_for("rv32-xpulpv2", g, op))
    parts = [pulpnn.schedule_part(g, op, p) for p in C.split(g, op, 8)]
    loops = [core_timing("ri5cy").time(p).loops["rv32imc_sub"].iterations for p in parts]
    assert loops == [2 * 8 * 8] * 8 and whole.loops["rv32imc_sub"].iterations == 16 * 8 * 8


def test_macload_pointwise_stream_bytes_by_hand():
    """8x8x16 -> 8, 1x1 on XpulpNN: 16 blocks of 4 pixels, 2 groups of 4 channels, K = 16:
    4 MAC&LOAD iterations per group, each loading 4 activation + 4 weight words; the
    group's preload (1 activation + 4 weight words) reads one step ahead, so the last
    iteration's 5 loads fall past the group's data (the library over-reads the same)."""
    g, op = conv_graph(8, 8, 16, 8, 1, padding="valid")
    prog = schedule_for("rv32-xpulpnn", g, op)
    r = core_timing("xpulpnn").time(prog)
    assert "xpulp_nn_matmul_4x4" in prog.kernel
    groups = 16 * 2
    assert r.stream("weights").read_bytes == groups * (4 * 4 * 4 + 4 * 4)
    assert r.stream("input").read_bytes == groups * (4 * 4 * 4 + 4)
    assert r.loops["xpulp_nn_matmul_4x4_inner4x4"].iterations == groups * 4
    # 17 cycles per iteration inside the hardware loop
    assert r.loops["xpulp_nn_matmul_4x4_inner4x4"].cycles == groups * 4 * 17
    assert prog.macs == 64 * 8 * 16 and r.stream("output").write_bytes == 64 * 8


# ---- plain RV32IMC (MAX78000 RISC-V engine): TFLM reference loops ------------------------------


def test_rv32imc_mac_loop_by_hand():
    # lb, lb, add offset, mul, add, 2 x addi, bne: 8 instructions; each loaded register is
    # read two instructions later (no load-use); the taken back edge costs 3: 10 cycles per
    # MAC, the last (not taken) iteration 8
    from mcusim.isa.schedule import Loop
    from mcusim.kernels.schedules.pulpnn_rv32imc import mac_block

    blk = mac_block(8, 8, True, "t")
    r = core_timing("cv32e40p").time(Program([Loop("mac", 20, [blk])]))
    assert len(blk.instrs) == 8 and r.cycles == 20 * 10 - 2


def test_rv32imc_runs_a_whole_model_without_custom_instructions():
    import mcusim

    from conftest import model_path

    g = mcusim.load(model_path("kws_ref_model")).graph
    for op in g.ops:
        prog = schedule_for("rv32imc", g, op)
        assert prog.isa == "rv32imc"
        mn = {i.mnemonic for it, _ in prog.walk() if hasattr(it, "instrs") for i in it.instrs}
        assert not any(m.startswith(("p.", "pv.", "lp.")) for m in mn), op.label
        r = core_timing("cv32e40p").time(prog)
        assert r.cycles > 0
        if op.kind == "conv2d" and g.tensors[op.inputs[1]].shape[3] >= 16:
            # deep filters: ~10 cycles per MAC plus the per-tap tests and requantisation
            assert 0.07 < prog.macs / r.cycles < 0.1
