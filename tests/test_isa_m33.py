"""Cortex-M33 timing: the Cortex-M4 rules plus the documented M33 differences
(isa/cortex_m33.toml: Arm's pipeline description and jnk0le's RP2350 measurements): 1-cycle
loads with a 2-cycle load-to-use latency, 2-cycle results of MACs / SXTA* / shifted
operand2 ops (accumulators and store data excepted), taken-branch refill P = 1, LDRD 2 and
LDM N cycles, and a 16-bit conditional branch dual-issued with a preceding 16-bit
instruction. Cycle counts below are worked out by hand from those rules."""

from __future__ import annotations

import pytest
from test_isa_m4 import unrolled_cycles
from test_schedules_m4 import conv_graph, fc_graph

from mcusim.isa.asm import parse
from mcusim.isa.cortex_m4 import load_params as m4_params
from mcusim.isa.cortex_m33 import load_m33_data
from mcusim.isa.schedule import Block, Loop, Program
from mcusim.isa.timing import core_timing
from mcusim.kernels.schedules import schedule_for
from mcusim.kernels.schedules.common import requant_out_block
from mcusim.kernels.schedules.matmul import _s8s16_blocks

from conftest import SHARED_MODELS, model_path

M33 = core_timing("cortex-m33")
M4 = core_timing("cortex-m4")


def cyc(text: str) -> int:
    return M33.sequence_cycles(parse(text))


def test_inherited_numbers_are_the_m4_ones():
    p4, p33 = m4_params(), M33.p
    overridden = set(load_m33_data()["class_cycles"]) | set(load_m33_data()["rules"])
    assert overridden == {"load", "multi_base", "branch_refill"}
    for k, v in p4.class_cycles.items():
        if k not in overridden:
            assert p33.class_cycles[k] == v, k
    for k in (
        "store_imm_cycles",
        "address_dependency_stall",
        "literal_load_extra",
        "table_branch_cycles",
        "ldr_pc_refill",
        "div_default_cycles",
        "it_folding",
    ):
        assert getattr(p33, k) == getattr(p4, k), k
    # every inherited class is stated in the TOML with its "no public difference" comment
    inherited = load_m33_data()["inherited"]
    assert all("no public M33 difference" in v for v in inherited.values())


def test_loads():
    # LDR 1; the M4's pipelining has nothing left to save: k independent loads = k
    # (M4: k + 1)
    assert cyc("ldr r0, [r1, r5]\nldr r1, [r2]\nldr r2, [r3, #4]") == 3
    assert M4.sequence_cycles(parse("ldr r0, [r1, r5]\nldr r1, [r2]\nldr r2, [r3, #4]")) == 4
    # load to use 2: LDR 1 + ADD (1 + 1) = 3
    assert cyc("ldr r0, [r1]\nadd r2, r0, r3") == 3
    # as a multiplicand too: 1 + (1 + 1); as the MAC accumulator no wait: 1 + 1
    assert cyc("ldr r0, [r1]\nsmlad r2, r0, r3, r2") == 3
    assert cyc("ldr r0, [r1]\nsmlad r2, r3, r4, r0") == 2
    # load to store 1: the loaded value stored at once, 1 + 1
    assert cyc("ldr r0, [r1]\nstr r0, [r2]") == 2
    # the loaded value as the next address: 1 + (1 + 1) = 3 (M4: 2 + 2)
    assert cyc("ldr r0, [r1]\nldr r2, [r0]") == 3
    # one instruction in between hides the latency: 1 + 1 + 1
    assert cyc("ldr r0, [r1]\nnop\nadd r2, r0, r3") == 3
    # inherited: address dependency on a data-processing result +1: 1 + (1 + 1)
    assert cyc("add r1, r1, #4\nldr r0, [r1]") == 3
    # inherited: STR imm 1; register-offset STR 2, 1 right after an LDR
    assert cyc("str r0, [r1, #4]\nstr r0, [r1, r2]") == 3
    assert cyc("ldr r0, [r1]\nstr r0, [r3, r2]") == 2
    # LDRD 2 (M4 3), LDM of N registers N (M4 1 + N)
    assert cyc("ldrd r2, r3, [r4]") == 2
    assert cyc("ldm r0!, {r1, r2, r3}") == 3
    assert cyc("push {r4-r7, lr}") == 5


def test_two_stage_results():
    # MAC result latency 2: SMLAD 1 + ADD (1 + 1); chained into the accumulator 1 + 1
    assert cyc("smlad r0, r1, r2, r0\nadd r3, r0, #1") == 3
    assert cyc("smlad r0, r1, r2, r0\nsmlad r0, r3, r4, r0") == 2
    # operand2 shifted register: latency 2 into an ALU op, 1 into a MAC accumulator
    assert cyc("add r0, r1, r2, lsl #2\nadd r3, r0, r4") == 3
    assert cyc("add r0, r1, r2, lsl #2\nsmlad r3, r4, r5, r0") == 2
    # a pure shift (MOV-ror = ROR) is a 1-stage op: 1 + 1
    assert cyc("mov r0, r1, ror #8\nadd r3, r0, r4") == 2
    # SXTAB16 chains on its accumulate operand (Rn) but not from a load: 1 + 1, 1 + 2
    assert cyc("sxtab16 r0, r0, r1\nsxtab16 r0, r0, r2") == 2
    assert cyc("ldr r0, [r5]\nsxtab16 r0, r0, r2") == 3
    # MULS and a flag-setting shifted-constant op take 2 cycles: 2 + 1
    assert cyc("muls r0, r1\nadds r2, #1") == 3
    assert cyc("eors r0, r1, #0x1fc0\nadds r2, #1") == 3
    assert cyc("eors r0, r1, #0x1b1b1b1b\nadds r2, #1") == 2  # a byte pattern: plain
    # flags of a shifted-register compare come a cycle late: CMP 1 + BNE (1 + 1)
    assert cyc("cmp r0, r1, lsl #2\nbne .L") == 3


def test_branches():
    # taken: 1 + P with P = 1; not taken 1
    assert cyc("bne .L1 {taken}") == 2
    assert cyc("bne .L1") == 1
    assert cyc("b .L1") == 2
    assert cyc("bl f") == 2
    assert cyc("bx lr") == 2
    # POP {.., PC}: N + P = 2 + 1
    assert cyc("pop {r4, pc}") == 3
    # LDR PC: load 1 + the inherited 3-cycle reload
    assert cyc("ldr pc, [r0]") == 4
    # a 16-bit B<cc> after a 16-bit instruction dual-issues: not taken 0 (SUBS 1 + 0) ...
    assert cyc("subs r7, #1\nbne .L") == 1
    # ... taken: 2 after a flag-setting one, 1 after one that sets no flags
    assert cyc("subs r7, #1\nbne .L {taken}") == 1 + 2
    assert cyc("subs r7, #1\nadd r0, r1\nbne .L {taken}") == 1 + 1 + 1
    # not after a 32-bit instruction: ADD.W 1 + BNE 1
    assert cyc("add.w r0, r0, #1\nbne .L") == 2
    # inherited: 1-cycle MAC/DSP issue, SDIV worst case 12, IT folding
    assert cyc("smlad r8, r3, r4, r8\nsxtb16 r3, r3, ror #8\nsdiv r0, r1, r2") == 14
    assert cyc("adds r0, #1\nit eq\nmoveq r1, r2") == 2


def test_loop_by_hand():
    body = Block.asm("ldr r3, [r0], #4 {input}\nadds r2, r2, r3\nsubs r1, #1\nbne .Lsum")
    prog = Program([Loop("sum", 10, [body])])
    # LDR 1 + ADDS (1 + 1: the loaded r3 at once) + SUBS 1 + BNE taken 1 + P(1) = 6 for
    # nine iterations (SUBS sets the flags: no dual issue when taken); the last BNE, not
    # taken, dual-issues with the 16-bit SUBS: 0 -> 4.   (M4: 9 * 7 + 5 = 68)
    assert M33.time(prog).cycles == 9 * 6 + 4
    assert M33.time(prog).cycles == unrolled_cycles(M33, prog)


def test_conv_inner_loop():
    """arm_nn_mat_mult_kernel_s8_s16 steady state (16 MACs), in GCC 12's instruction
    order (docs/firmware.md section 6). M4: 31 cycles (its first LDR 2, the two after the
    SMLADs 2 + 1, BNE taken 3). M33: loads 1 each, and no result is read by the next
    instruction (the spilled row pointer is loaded two instructions before the LDR that
    uses it; the RORs read loads two instructions old; no SMLAD feeds the next one): the
    25 instructions before the branch 1 each; BNE taken 1 + 1  ->  27 cycles, 0.59
    MAC/cycle (M4 0.52). The exit iteration's BNE is not taken: 1 -> 26."""
    inner = _s8s16_blocks()["inner"]
    st = M33.step(inner.instrs[-1], M33.initial_state(), True)[1]
    assert M33.block_cycles(inner, st, True)[0] == 27
    assert M33.block_cycles(inner, st, False)[0] == 26
    prog = Program([Loop("inner", 20, [inner])])
    assert M33.time(prog).cycles == unrolled_cycles(M33, prog) == 19 * 27 + 26


def test_requantize_block_by_hand():
    """One per-channel output (requantize + clamp + store), instruction by instruction:
    MOV 1; LDR 1; LDR 1; BIC (shifted operand2) 1; LSL reads the BIC result at once: 2;
    MOV #0x40000000 1; MOVS 1; SMLAL 1 (its accumulators r4/r3 chain from the shifted-
    constant MOV without a wait); LSRS reads SMLAL's r4 at once: 2; ORR 1; RSBS 1; BIC 1;
    MOVS 1; LSLS 1; SUBS 1; AND 1; ASRS 1; ASRS 1; ADD (shifted operand2) 1; CMP reads its
    r4 at once: 2; IT folded 0; ADDGT 1; ADD 1; CMP 1; IT 0; MOVLT 1; CMP 1; IT 0; MOVGT 1;
    STRB 1  ->  30 (M4: 28: its loads cost 2 + 1 but no result waits)."""
    b = requant_out_block("r8")
    assert M33.sequence_cycles(b.instrs) == 30
    assert M4.sequence_cycles(b.instrs) == 28


def test_fc_layer_and_unrolled_walks():
    g, op = fc_graph(4, 2)
    prog = schedule_for("armv7em-dsp", g, op)
    assert M33.time(prog).cycles == unrolled_cycles(M33, prog)
    assert M33.time(prog).cycles < M4.time(prog).cycles == 336  # test_schedules_m4.py
    g, op = conv_graph(h=3, w=3, c_in=3, c_out=3, k=3)
    prog = schedule_for("armv7em-dsp", g, op)
    assert M33.time(prog).cycles == unrolled_cycles(M33, prog)


@pytest.mark.parametrize("name", SHARED_MODELS)
def test_whole_models_time_on_m33(name):
    from mcusim.importers.tflite import load_tflite

    g = load_tflite(model_path(name))
    c4 = c33 = macs = 0
    for op in g.ops:
        prog = schedule_for("armv7em-dsp", g, op)
        c4 += M4.time(prog).cycles
        c33 += M33.time(prog).cycles
        macs += prog.macs
    # Band: loads (2 -> 1), taken branches (3 -> 2) and LDM/STM (1 + N -> N) get faster,
    # but MAC, SXTA* and shifted-operand2 results and loads reach the next instruction a
    # cycle late, which the serial requantization chain pays (GCC's requantize + clamp:
    # 38 cycles per output against the M4's 37). The conv inner loop gains 31/27 =
    # 1.15x, load-heavy loops more (the depthwise mult_4 tap, 5 LDRSB per 4 MACs: 21 ->
    # 17, 1.24x: micro_speech 1.21x); whole networks land between 0.9x and 1.25x of the
    # M4, at the M4's few tenths of a MAC per cycle.
    assert 0.9 < c4 / c33 < 1.25
    assert 0.1 < macs / c33 < 0.6
