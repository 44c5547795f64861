"""RI5CY / CV32E40P timing: short sequences hand-timed from the CV32E40P user manual's
"Cycle counts per instruction type" table and hazard list (shared/reference/
riscv-xpulp.md §1, isa/ri5cy.toml), hardware loops, and the PULP-NN / XpulpNN inner loops
whose ideal MAC/cycle the papers quote (riscv-xpulp.md §6)."""

from __future__ import annotations

import pytest

from mcusim.isa.ri5cy import RI5CYTiming, XpulpNNTiming, div_cycles
from mcusim.isa.riscv_asm import hw_loop, parse
from mcusim.isa.schedule import Block, Loop, Program
from mcusim.isa.timing import core_timing


@pytest.fixture(scope="module")
def rv() -> RI5CYTiming:
    return core_timing("ri5cy")


@pytest.fixture(scope="module")
def nn() -> XpulpNNTiming:
    return core_timing("xpulpnn")


def cyc(model, text: str) -> int:
    return model.sequence_cycles(parse(text))


def test_registry():
    assert type(core_timing("cv32e40p")) is RI5CYTiming
    assert type(core_timing("RI5CY")) is RI5CYTiming
    assert type(core_timing("xpulpnn")) is XpulpNNTiming


def test_single_cycle_classes(rv):
    # ALU 1, mul 1, SIMD ALU 1, dot product 1, p.cnt/p.clip 1, hwloop setup 1
    assert cyc(rv, "add a0, a1, a2\naddi a0, a0, 1\nmul a0, a0, a0") == 3
    assert cyc(rv, "pv.add.b a0, a1, a2\npv.sdotsp.b a3, a0, a0\np.cnt a4, a3") == 3
    assert cyc(rv, "p.clip a0, a0, 8\np.mac a1, a0, a0\nlp.setupi x0, 8, .Lend") == 3
    # li of a 32-bit constant = lui + addi: 2 cycles; la = auipc + addi: 2
    assert cyc(rv, "li a0, 0x12345678\nla a1, table\nli a2, 5") == 5
    # results forward from EX: a dependent chain costs nothing extra
    assert cyc(rv, "addi a0, a0, 1\naddi a0, a0, 1\naddi a0, a0, 1") == 3


def test_mulh_and_div(rv):
    # mulh 5, its consumer 1 (forwarded)
    assert cyc(rv, "mulh a0, a1, a2\nadd a3, a0, a0") == 6
    assert cyc(rv, "mulhu a0, a1, a2") == 5
    # division: {div=N} clamped to 3..35, worst case 35 without annotation
    assert cyc(rv, "div a0, a1, a2") == 35
    assert cyc(rv, "divu a0, a1, a2 {div=10}") == 10
    assert cyc(rv, "rem a0, a1, a2 {div=1}") == 3
    # manual: 3 for a divisor with no leading zeros, 35 for 0; 3 + clz in between
    assert div_cycles(0x80000000, signed=False) == 3
    assert div_cycles(0) == 35
    assert div_cycles(1) == 34  # clz(1) = 31
    assert div_cycles(255) == 27  # clz = 24
    assert div_cycles(-1) == 34  # |-1| = 1


def test_load_use_stall(rv):
    # load 1 + (user 1 + 1 stall)
    assert cyc(rv, "lw a0, 0(a1) {input}\naddi a0, a0, 1") == 3
    # one instruction in between hides it
    assert cyc(rv, "lw a0, 0(a1) {input}\nnop\naddi a0, a0, 1") == 3
    # store of the loaded data stalls too; an unrelated instruction does not
    assert cyc(rv, "lw a0, 0(a1) {input}\nsw a0, 0(a2) {output}") == 3
    assert cyc(rv, "lw a0, 0(a1) {input}\naddi a2, a2, 1") == 2
    # the post-incremented base comes from the ALU: no stall on it
    assert cyc(rv, "p.lw a0, 4(a1!) {input}\naddi a1, a1, 4") == 2
    assert cyc(rv, "p.lw a0, 4(a1!) {input}\np.lw a2, 4(a1!) {input}") == 2
    # ... but the loaded value does: p.lbu then pv op using it
    assert cyc(rv, "p.lbu t0, 1(a1!) {input}\npv.sdotsp.b a4, t0, t1") == 3
    # a load feeding the next load's address
    assert cyc(rv, "lw a0, 0(a1) {input}\nlw a2, 0(a0) {input}") == 3


def test_misaligned_access(rv):
    # manual: misaligned word / word-crossing halfword = 2
    assert cyc(rv, "lw a0, 1(a1) {input} {misaligned}") == 2
    assert cyc(rv, "sh a0, 3(a1) {output} {misaligned}") == 2


def test_branches_and_jumps(rv):
    # not taken 1, taken 3
    assert cyc(rv, "bne a0, a1, .L") == 1
    assert cyc(rv, "bne a0, a1, .L {taken}") == 3
    # jal / j 2; ret 2
    assert cyc(rv, "jal foo") == 2
    assert cyc(rv, "j .L\nret") == 4
    # jalr depending on the immediately preceding instruction: +1
    assert cyc(rv, "addi t0, t0, 4\njalr t0") == 1 + 3
    assert cyc(rv, "addi t0, t0, 4\nnop\njalr t0") == 1 + 1 + 2
    # load then ret using it: load-use 1 (one stall, not two)
    assert cyc(rv, "lw ra, 12(sp)\nret") == 1 + 3


def test_csr(rv):
    assert cyc(rv, "csrr a0, mcycle") == 4
    assert cyc(rv, "csrr a0, mhpmcounter3") == 4
    assert cyc(rv, "csrw mstatus, a0") == 4
    assert cyc(rv, "csrr a0, 0x7c0") == 1


def test_software_loop_back_edge(rv):
    # body: addi 1 + bnez taken 3 for n-1 iterations, the last bnez not taken (1)
    body = Block.rv("addi a0, a0, -1\nbnez a0, .L")
    n = 10
    prog = Program([Loop("l", n, [body])])
    assert rv.time(prog).cycles == (n - 1) * (1 + 3) + (1 + 1)


def _pulpnn_4x2_body() -> str:
    # PULP-NN 4x2 matmul step (riscv-xpulp.md §6): 2 activation words (pixels 0, 1),
    # 4 weight words (output channels 0..3), 8 pv.sdotusp.b (u8 activation x s8 weight),
    # loads interleaved so no loaded register is used by the next instruction.
    return """
        p.lw  t4, 4(a4!) {input}
        p.lw  t5, 4(a5!) {input}
        p.lw  t0, 4(a0!) {weights}
        p.lw  t1, 4(a1!) {weights}
        pv.sdotusp.b s0, t4, t0
        pv.sdotusp.b s1, t5, t0
        p.lw  t2, 4(a2!) {weights}
        pv.sdotusp.b s2, t4, t1
        pv.sdotusp.b s3, t5, t1
        p.lw  t3, 4(a3!) {weights}
        pv.sdotusp.b s4, t4, t2
        pv.sdotusp.b s5, t5, t2
        pv.sdotusp.b s6, t4, t3
        pv.sdotusp.b s7, t5, t3
    """


def test_hardware_loop_pulpnn_4x2_dot_product(rv):
    setup = Block.rv("lp.setup x0, a6, .Lend")
    body = Block.rv(_pulpnn_4x2_body())
    n = 16
    prog = Program([setup, hw_loop("k", n, [body])], macs=32 * n)
    res = rv.time(prog)
    # 14 single-cycle instructions, no load-use stall, zero-overhead loop-back:
    # 14 cycles per iteration; lp.setup 1 cycle once
    assert res.cycles == 1 + 14 * n
    assert res.loops["k"].cycles == 14 * n
    # 32 MACs / 14 cycles = 2.29 MAC/cycle, PULP-NN's ideal (riscv-xpulp.md §6)
    assert 32 / 14 == pytest.approx(2.29, abs=0.005)
    # the generic loop evaluator equals stepping every executed instruction
    unrolled = parse("lp.setup x0, a6, .Lend\n" + _pulpnn_4x2_body() * n)
    assert rv.sequence_cycles(unrolled) == res.cycles
    # the same loop closed by a software branch (addi + bnez): +1 +3 per iteration, the
    # last bnez not taken: +1 + 1
    sw = Block.rv(_pulpnn_4x2_body() + "addi a6, a6, -1\nbnez a6, .Lk")
    res_sw = rv.time(Program([Loop("k", n, [sw])]))
    assert res_sw.cycles == (14 + 1 + 3) * (n - 1) + (14 + 1 + 1)


def test_naive_order_stalls(rv):
    # each weight used right after its load: 4 load-use stalls per iteration
    body = Block.rv(
        """
        p.lw  t4, 4(a4!) {input}
        p.lw  t5, 4(a5!) {input}
        p.lw  t0, 4(a0!) {weights}
        pv.sdotusp.b s0, t4, t0
        pv.sdotusp.b s1, t5, t0
        p.lw  t1, 4(a1!) {weights}
        pv.sdotusp.b s2, t4, t1
        pv.sdotusp.b s3, t5, t1
        p.lw  t2, 4(a2!) {weights}
        pv.sdotusp.b s4, t4, t2
        pv.sdotusp.b s5, t5, t2
        p.lw  t3, 4(a3!) {weights}
        pv.sdotusp.b s6, t4, t3
        pv.sdotusp.b s7, t5, t3
        """
    )
    assert rv.time(Program([hw_loop("k", 8, [body])])).cycles == 8 * (14 + 4)


def test_load_use_across_the_hardware_loop_back(rv):
    # the last body instruction loads t0, the first uses it: the first iteration has no
    # stall (entered from nothing), every later one has 1
    body = Block.rv("pv.sdotsp.b a4, t0, t1\nnop\np.lw t0, 4(a0!) {weights}")
    n = 5
    res = rv.time(Program([hw_loop("k", n, [body])]))
    assert res.cycles == 3 + 4 * (n - 1)
    unrolled = parse("pv.sdotsp.b a4, t0, t1\nnop\np.lw t0, 4(a0!) {weights}\n" * n)
    assert rv.sequence_cycles(unrolled) == res.cycles


def test_xpulpnn_instructions_need_the_xpulpnn_core(rv, nn):
    text = "pv.sdotsp.n a4, t0, t1"
    with pytest.raises(ValueError, match="xpulpnn"):
        cyc(rv, text)
    assert cyc(nn, text) == 1
    assert cyc(nn, "pv.sdotup.c a4, t0, t1\npv.max.n a0, a1, a2") == 2
    # XpulpV2 code times the same on both cores
    body = _pulpnn_4x2_body()
    assert cyc(nn, body) == cyc(rv, body) == 14


def test_qnt(nn):
    # GVSoC: 5 executions + 2 accounted stalls = 7; its result is not a load-use hazard
    assert cyc(nn, "pv.qnt.n a0, a1, a2 {const}") == 7
    assert cyc(nn, "pv.qnt.n a0, a1, a2 {const}\naddi a0, a0, 8") == 8


def test_macload_spr_hazard(nn):
    # an SPR loaded by pv.mlsdot* and read by the next one stalls like a load (1)
    assert cyc(nn, "pv.mlsdotsp.b a4, a0, 0b01000 {input}\npv.mlsdotsp.b a5, a1, 0") == 3
    # reading the other activation SPR (ctl bit 0 = 1): no stall
    assert cyc(nn, "pv.mlsdotsp.b a4, a0, 0b01000 {input}\npv.mlsdotsp.b a5, a1, 1") == 2
    # the accumulator rd is an EX result (forwarded), the pointer an ALU result
    assert cyc(nn, "pv.mlsdotsp.b a4, a0, 0b01000 {input}\naddi a5, a4, 1\naddi a0, a0, 4") == 3


def _macload_4x4(width: str) -> str:
    """A 4x4 (4 pixels x 4 output channels) MAC&LOAD step as pulp-nn-mixed's XpulpNN
    kernel has it: 16 pv.mlsdotsup + 1 re-initialising load (riscv-xpulp.md §6).
    SPR A0/A1 = activations, W0..W3 = weights; a reload always targets the SPR the
    instruction itself reads, and no SPR is read right after it is reloaded."""
    steps = []  # (accumulator, act SPR, weight SPR, reload act?, reload weight?, pointer)
    for o in range(4):  # pixel 0 with A0; reload A0 <- pixel 2 on the last
        steps.append((f"acc{0}{o}", 0, o, o == 3, False, "a2"))
    for o in range(4):  # pixel 1 with A1; reload A1 <- pixel 3
        steps.append((f"acc{1}{o}", 1, o, o == 3, False, "a3"))
    for o in range(4):  # pixel 2 with A0; reload A0 <- next pixel 0
        steps.append((f"acc{2}{o}", 0, o, o == 3, False, "a0"))
    for o in range(4):  # pixel 3 with A1; reload W0..W3 <- next weights
        steps.append((f"acc{3}{o}", 1, o, False, True, f"a{4 + o}"))
    steps.append(("x0", 1, 0, True, False, "a1"))  # next pixel 1 into A1
    regs = [f"s{i}" for i in range(12)] + ["t3", "t4", "t5", "t6"]
    acc_reg = {f"acc{p}{o}": regs[4 * p + o] for p in range(4) for o in range(4)}
    acc_reg["x0"] = "x0"
    lines = []
    for acc, a, w, ua, uw, ptr in steps:
        ctl = a | (w << 1) | (8 if ua else 0) | (16 if uw else 0)
        tag = " {weights}" if uw else (" {input}" if ua else "")
        lines.append(f"pv.mlsdotsup.{width} {acc_reg[acc]}, {ptr}, {ctl}{tag}")
    return "\n".join(lines)


@pytest.mark.parametrize(("width", "macs", "paper"), [("b", 64, 3.76), ("n", 128, 7.5)])
def test_xpulpnn_macload_4x4_kernel(nn, width, macs, paper):
    body = Block.rv(_macload_4x4(width))
    assert len(body) == 17
    n = 32
    res = nn.time(Program([Block.rv("lp.setup x0, t0, .Lend"), hw_loop("k", n, [body])]))
    # 17 single-cycle MAC&LOADs, no SPR hazard, zero-overhead loop-back
    assert res.cycles == 1 + 17 * n
    # per iteration 16 dot products of 4 (INT8) or 8 (INT4) lanes over 17 cycles:
    # the papers' 3.76 / 7.5 MAC/cycle/core (riscv-xpulp.md §6)
    assert macs / 17 == pytest.approx(paper, rel=0.01)
    # the traffic: 4 activation words + 4 weight words per iteration
    t = res.stream("input"), res.stream("weights")
    assert (t[0].read_bytes, t[1].read_bytes) == (16 * n, 16 * n)
