"""Cortex-M85 timing: the dual-beat MVE model on the M85's split units and the dual-issue
scalar side, hand-worked from LLVM ARMScheduleM85.td (isa/cortex_m85.toml)."""

from __future__ import annotations

import pytest
from test_isa_m55 import unrolled_cycles

from mcusim.isa.asm import parse
from mcusim.isa.cortex_m55 import BeatTiming
from mcusim.isa.schedule import Block, Loop, Program
from mcusim.isa.timing import core_timing


@pytest.fixture(scope="module")
def m85() -> BeatTiming:
    return core_timing("cortex-m85")


@pytest.fixture(scope="module")
def m55() -> BeatTiming:
    return core_timing("cortex-m55")


def cyc(model, text: str) -> int:
    return model.sequence_cycles(parse(text))


def test_mve_is_dual_beat(m85):
    # LLVM: every MVE write holds both 64-bit halves of its unit for 2 cycles
    # (ReleaseAtCycles = [2, 2, ...]): two beats per instruction, as on the M55
    occ = {c: v[1] for c, v in m85.p.mve_classes.items()}
    assert occ["mve_load"] == occ["mve_store"] == occ["mve_int"] == occ["mve_dav"] == 2
    assert occ["mve_logic"] == 1  # VAND/VORR...: the register port only (GrpABLat1Mve)


def test_reference_beat_examples_hold(m85):
    # VLDR 0-1 (load pipe); VADD 1-2 (group A); VMUL 2-3 (group B, q2 at 4); VSTR 3:
    # its data is read 2 cycles late (M85Read_EX3), store pipe 3-4 -> 5
    assert (
        cyc(m85, "vldrw.u32 q0, [r0]\nvadd.i32 q1, q0, q0\nvmul.i32 q2, q1, q1\nvstrw.32 q2, [r1]")
        == 5
    )
    # back-to-back loads still serialize on the load pipes: 0-1, 2-3; VADD 3-4; VSTR 4-5
    assert (
        cyc(m85, "vldrw.u32 q0, [r0]\nvldrb.u32 q1, [r2]\nvadd.i32 q2, q0, q1\nvstrw.32 q2, [r1]")
        == 6
    )


def test_separate_load_and_store_pipes(m85, m55):
    # M85: VLDR (load pipes) 0-1, VSTR (store pipes) 1-2 -> 3; M55 shares one LS pipe: 4
    text = "vldrw.u32 q0, [r0]\nvstrw.32 q1, [r1]"
    assert cyc(m85, text) == 3 and cyc(m55, text) == 4


def test_reduction_to_general_register(m85):
    # VMLADAVA: group B, result in r0 after 4 (M85GrpBLat2MveR); ADDS at 4 -> 5
    assert cyc(m85, "vmladava.s8 r0, q0, q1\nadds r0, #1") == 5
    # chained accumulator read 2 cycles late (M85Read_EX3): 4 - 2 = 2 = B free: 2-3 -> 4
    assert cyc(m85, "vmladava.s8 r0, q0, q1\nvmladava.s8 r0, q2, q3") == 4


def test_narrowing_forwards_to_store_and_gather_offsets(m85):
    # VMOVN latency 2 on the M85 (no M55-style no-forward rule): store at 1 -> 3
    assert cyc(m85, "vmovnb.i32 q2, q1\nvstrw.32 q2, [r1]") == 3
    # gather offsets read one cycle early (M85Read_ISS): VADD at 0 (q1 at 1) -> gather 2-3
    assert cyc(m85, "vadd.i32 q1, q0, q0\nvldrb.u32 q2, [r0, q1]") == 4


def test_scalar_dual_issue(m85):
    # two independent ALU ops, 32-bit too: one cycle (two ALUs)
    assert cyc(m85, "add.w r0, r0, #1\nmov.w r1, #2") == 1
    # two word loads pair (two load pipes); the dependent ADD waits for latency 1
    assert cyc(m85, "ldr r0, [r1]\nldr r2, [r3]\nadd r4, r0, r2") == 2
    # one MAC unit: two independent SMLADs issue in consecutive cycles
    assert cyc(m85, "smlad r0, r1, r2, r0\nsmlad r5, r3, r4, r5") == 2
    # chained SMLAD: latency 2 with the accumulator read 1 cycle late: 0, 1 -> 2
    assert cyc(m85, "smlad r0, r1, r2, r0\nsmlad r0, r3, r4, r0") == 2
    # DSP SIMD is slot-0 only: it cannot be the younger of a pair: 2
    assert cyc(m85, "adds r0, #1\nsxtb16 r1, r2") == 2
    # ...but it can be the older one: 1
    assert cyc(m85, "sxtb16 r1, r2\nadds r0, #1") == 1
    # byte load latency 2 (M85SlowLoad): LDRB 0, ADDS 2 -> 3
    assert cyc(m85, "ldrb r0, [r1]\nadds r0, #1") == 3
    # address operands are read one cycle early (M85Read_ISS): ADD 0 (r1 at 1), LDR 2 -> 3
    assert cyc(m85, "adds r1, #4\nldr r0, [r1]") == 3


def test_loop_back_edges_predicted(m85):
    body = Block.asm("ldr r3, [r1], #4 {input}\nadds r4, r4, r3\nsubs r2, #1\nbne .L")
    p = m85.p
    # LDR 0 (r3 at 1, base update bypassed); ADDS 1 pairs with SUBS; BNE (branch) 2 ->
    # 3 cycles per iteration, taken back edge predicted (no refill); the exit
    # mispredicts: + 4. The next iteration's LDR needs r1 (written at 0, read early) at 1.
    for n in (1, 5):
        prog = Program([Loop("l", n, [body])])
        res = m85.time(prog)
        assert res.cycles == unrolled_cycles(m85, prog)
        assert res.cycles == 3 * n + p.branch_refill


def test_low_overhead_loop_first_iteration_refill(m85):
    dls = Block.asm("dls lr, r2")
    body = Block.asm("ldr r3, [r1], #4 {input}\nstr r3, [r0], #4 {output}\nle lr, .L")
    # DLS 0; iteration 1: LDR 1 (r3 at 2), STR 2 -> 3, LE first time 3 + 1 + 4 -> 8;
    # later: LDR 0, STR 1 (r3 at 1): 2 cycles, LE free
    for n in (1, 6):
        prog = Program([dls, Loop("copy", n, [body])])
        assert m85.time(prog).cycles == 1 + 7 + 2 * (n - 1)
        assert m85.time(prog).cycles == unrolled_cycles(m85, prog)


def test_registry_name(m85):
    assert m85.name == "cortex-m85" and isinstance(m85, BeatTiming)
