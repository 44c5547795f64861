"""Cortex-M7 dual-issue timing: cycle counts worked out by hand from the rules in
isa/cortex_m7.toml (LLVM ARMScheduleM7.td latencies/units; quinapalus.com and jnk0le's
STM32H743 measurements for pairing, mispredicts and LDM/STM).

Conventions of the comments: "cN" is the issue cycle counted from 1 on an idle pipeline;
"sN" the slot (s0 = older, s1 = younger of a pair). A sequence costs the cycle of its
last issue. A value of latency L written in cycle t is read in cycle t+L by a plain
reader, t+L+1 by an early reader (address, shifted operand), t+L-1 by a late reader
(MAC accumulator, store data).
"""

from __future__ import annotations

import pytest
from test_isa_m4 import _flatten
from test_schedules_m4 import conv_graph, fc_graph

from mcusim.isa.asm import parse
from mcusim.isa.cortex_m7 import CortexM7Timing
from mcusim.isa.schedule import Block, Loop, Program
from mcusim.isa.timing import core_timing
from mcusim.kernels.schedules import schedule_for
from mcusim.kernels.schedules.matmul import _s8s16_blocks

from conftest import SHARED_MODELS, model_path

M7: CortexM7Timing = core_timing("cortex-m7")
M4 = core_timing("cortex-m4")


def cyc(text: str) -> int:
    return M7.sequence_cycles(parse(text))


def slots(text: str) -> list[tuple[int, int]]:
    return M7.issue_cycles(parse(text))


def unrolled(prog: Program) -> int:
    """Every instruction stepped one at a time through the whole program."""
    st, total = M7.initial_state(), 0
    for ins, taken in _flatten(prog.items, []):
        c, st = M7.step(ins, st, taken)
        total += c
    return total


# ------------------------------------------------------------------------ pairing
def test_independent_alu_ops_pair():
    # two ALUs: c1 s0 ADD, c1 s1 ADD -> 1 cycle
    assert slots("add r0, r1, r2\nadd r3, r4, r5") == [(1, 0), (1, 1)]
    assert cyc("add r0, r1, r2\nadd r3, r4, r5") == 1
    # a third ALU op starts c2 (issue width 2); the fourth pairs with it
    assert cyc("add r0, r1, r2\nadd r3, r4, r5\nsub r6, r6, #1\neor r7, r7, r1") == 2
    # dependent: ALU latency 1, the reader waits for c2
    assert cyc("add r0, r1, r2\nadd r3, r0, r5") == 2


def test_dsp_op_pairs_only_as_older():
    # SXTB16 (M7WriteSIMD1, BeginGroup): older of a pair -> c1 s0 + c1 s1 = 1
    assert cyc("sxtb16 r0, r1\nadd r3, r4, r5") == 1
    # as the younger it cannot take slot 1: ADD c1, SXTB16 c2 = 2
    assert slots("add r3, r4, r5\nsxtb16 r0, r1") == [(1, 0), (2, 0)]
    # two SIMD ops never pair: c1, c2
    assert cyc("sadd16 r0, r1, r2\nsel r3, r4, r5") == 2
    # REV counts as DSP too (quinapalus): ADD c1, REV c2
    assert cyc("add r3, r4, r5\nrev r0, r1") == 2


def test_one_shifter_per_pair():
    # shifted operands share one shifter: c1 + c2
    assert cyc("add r0, r1, r2, lsl #2\nadd r3, r4, r5, lsl #1") == 2
    # a wide immediate counts as shifted (0x7e0 does not fit in 8 bits): c1 + c2
    assert cyc("add r0, r1, r2, lsl #2\nand r3, r3, #0x7e0") == 2
    # with a plain immediate, or a replicated-byte pattern, they pair: 1
    assert cyc("add r0, r1, r2, lsl #2\nand r3, r3, #0x7e") == 1
    assert cyc("add r0, r1, r2, lsl #2\neor r3, r3, #0x1b1b1b1b") == 1
    # a pure shift (LSL by a constant, MOV-ror) needs no shared shifter: 1
    assert cyc("add r0, r1, r2, lsl #2\nlsl r3, r4, #2") == 1
    assert cyc("add r0, r1, r2, lsl #2\nmov r3, r4, ror #8") == 1
    # the shifted operand is read one cycle early: ADD c1 (lat 1) -> plain reader c2, but
    # the shifted reader c3
    assert cyc("add r2, r2, #1\nadd r3, r4, r2, lsl #1") == 3
    assert cyc("add r2, r2, #1\nadd r3, r2, r4, lsl #1") == 2  # r2 unshifted: c2


def test_two_loads_pair_one_store():
    # two load pipes: c1 s0 + c1 s1
    assert slots("ldr r0, [r1]\nldr r2, [r3]") == [(1, 0), (1, 1)]
    # a third load starts c2
    assert cyc("ldr r0, [r1]\nldr r2, [r3]\nldr r4, [r5, #4]") == 2
    # one store unit: two stores c1, c2; a load and a store pair
    assert cyc("str r0, [r1]\nstr r2, [r3]") == 2
    assert cyc("ldr r0, [r1]\nstr r2, [r3]") == 1


def test_load_use_and_address_dependencies():
    # word load latency 1: the user issues c2
    assert cyc("ldr r0, [r1]\nadd r2, r0, r3") == 2
    # byte/halfword loads latency 2 (M7SlowLoad): user c3
    assert cyc("ldrsb r0, [r1]\nadd r2, r0, r3") == 3
    # the loaded value as the next address: addresses are read early -> c1 + lat 1 + 1
    assert cyc("ldr r0, [r1]\nldr r2, [r0]") == 3
    # an ADD forming the next address: same, c3
    assert cyc("add r1, r1, #4\nldr r0, [r1]") == 3
    # the stored data is read late: a store pairs with the ALU op producing its data
    assert cyc("add r0, r0, #1\nstr r0, [r1]") == 1
    # an op reading another operand early (shifted r4) cannot take a word load of the
    # previous cycle in its unshifted operand either: LDR c1, ADD c3 (not c2)
    assert cyc("ldr r0, [r1]\nadd r2, r0, r4, lsl #1") == 3
    # post-increment base (latency 0, M7BaseUpdate) feeds the next address a cycle later
    assert cyc("ldr r0, [r1], #4\nldr r2, [r1]") == 2


def test_mac_chain_into_one_accumulator():
    # one MAC unit: one SMLAD per cycle; the accumulator is read a cycle late (ReadMAC 1),
    # so chaining into r0 costs nothing more: c1, c2, c3
    chain = "smlad r0, r1, r2, r0\nsmlad r0, r3, r4, r0\nsmlad r0, r5, r6, r0"
    assert slots(chain) == [(1, 0), (2, 0), (3, 0)]
    # the MAC result as a multiplicand waits the full latency 2: c1, c3
    assert cyc("smlad r0, r1, r2, r0\nsmlad r3, r0, r4, r3") == 3
    # a MAC pairs with a (non-MAC) older SIMD op and as the older of an ALU op
    assert cyc("sxtb16 r1, r1\nsmlad r0, r2, r3, r0") == 1
    assert cyc("smlad r0, r2, r3, r0\nadd r4, r4, #1") == 1
    # MUL result latency 2 (MLA accumulator chained): MUL c1, MLA reads r0 as accumulator
    # (advance 1): c2
    assert cyc("mul r0, r1, r2\nmla r0, r3, r4, r0") == 2
    # a multiplicand cannot take a word load of the previous cycle: LDR c1, SMLAD c3
    assert cyc("ldr r1, [r0]\nsmlad r2, r1, r3, r2") == 3
    # ... the accumulator is read a cycle late: a word load (latency 1) feeds it in the
    # same cycle (LDR + SMLAD pair in c1), a byte load (latency 2) in the next (jnk0le:
    # "it can consume ldrb result from previous cycle")
    assert cyc("ldr r2, [r0]\nsmlad r2, r1, r3, r2") == 1
    assert cyc("ldrb r2, [r0]\nsmlad r2, r1, r3, r2") == 2
    # a MAC and a store never pair: c1, c2
    assert cyc("smlad r0, r1, r2, r0\nstr r3, [r4]") == 2


def test_single_issue_ldrd_ldm_div():
    # LDRD is single-issue: LDRD c1 alone, ADD c2 alone... the next ADD pairs with it
    assert slots("ldrd r0, r1, [r2]\nadd r3, r3, #1\nadd r4, r4, #1") == [
        (1, 0),
        (2, 0),
        (2, 1),
    ]
    # LDM of 4 registers: single issue, 64 bits a cycle -> c1..c2; the ADD c3
    assert cyc("ldm r0!, {r4, r5, r6, r7}\nadd r3, r3, #1") == 3
    # SDIV: single issue, stalls for its latency 7: the user issues c8
    assert cyc("sdiv r0, r1, r2\nadd r3, r0, #1") == 8
    # NOP is single issue (M7NonGeneralPurpose): c1, c2, c3
    assert cyc("add r0, r0, #1\nnop\nadd r1, r1, #1") == 3


def test_stalled_older_blocks_both_slots():
    # LDRB latency 2: the ADD waits for c3; the independent SUB behind it cannot issue
    # earlier (in order) and pairs with it in c3
    assert slots("ldrb r0, [r1]\nadd r2, r0, r3\nsub r4, r4, #1") == [(1, 0), (3, 0), (3, 1)]


def test_branches():
    # a forward conditional branch not taken pairs and costs nothing extra
    assert cyc("add r0, r0, #1\nbeq .Lskip\nadd r1, r1, #1") == 2
    # CMP then B<cc>: flags latency 1 -> c1, c2
    assert cyc("cmp r0, r1\nbne .Lx") == 2
    # a taken forward branch is unpredicted: mispredict 6 -> c1 + 6
    assert cyc("bne .Lx {taken}") == 7
    # ... 8 when the flags were set fewer than 3 cycles before the branch: CMP c1, BNE c2
    assert cyc("cmp r0, r1\nbne .Lx {taken}") == 2 + 8
    assert cyc("cmp r0, r1\nadd r2, r2, #1\nnop\nnop\nbne .Lx {taken}") == 4 + 6
    # BX LR: indirect, charged the base mispredict 6 -> c1 + 6
    assert cyc("bx lr") == 7
    # direct B/BL: BTAC hit, no refill
    assert cyc("bl f") == 1


def test_loop_predicted_back_edge_and_exit():
    body = Block.asm("ldr r3, [r0], #4 {input}\nadds r2, r2, r3\nsubs r1, #1\nbne .Lsum")
    res = M7.time(Program([Loop("sum", 10, [body])]))
    # each iteration: c1 LDR; c2 ADDS (load latency 1) + SUBS pair (two ALUs); c3 BNE
    # (flags of SUBS, latency 1). A taken back edge is predicted: no refill, the next
    # iteration starts right after -> 3 cycles. The last BNE is not taken: mispredict, with
    # the flags set 1 cycle before the branch (< 3): 8.
    assert res.cycles == 9 * 3 + (3 + 8)
    assert res.cycles == unrolled(Program([Loop("sum", 10, [body])]))
    # on the M4: 9 * 7 + 5 = 68 (tests/test_isa_m4.py)
    assert M4.time(Program([Loop("sum", 10, [body])])).cycles == 68


def test_cross_block_dependency_and_pairing():
    a = Block.asm("ldrb r0, [r1] {input}")
    b = Block.asm("add r2, r0, #1")
    c = Block.asm("add r3, r3, #1")
    # the ADD of the next block waits for the LDRB result (latency 2): c1, c3
    assert M7.time(Program([a, b])).cycles == 3
    # an independent first instruction pairs with the previous block's last: 1 cycle
    assert M7.time(Program([a, c])).cycles == 1


# ------------------------------------------------------------------- a layer by hand
def test_fully_connected_4x2_by_hand():
    """FC 4 -> 2 (arm_fully_connected_s8 -> arm_nn_vec_mat_mult_t_s8), block by block.
    "+n" is what a block adds to the cycle count; a block's first instruction may pair with
    the previous block's last one (+0)."""
    g, op = fc_graph(4, 2)
    prog = schedule_for("armv7em-dsp", g, op)
    # fc_entry (GCC 12 -O2 of arm_fully_connected_s8): PUSH 9 regs single-issue c1-c5;
    # LDR c6 + LDR; SUB SP c7; LDRD c8-c9; LDR c10 + LDR; CBZ (not taken) c11 + MOV; LDR
    # c12 + LDR; STR c13 + MOV; MOV c14                                              = 14
    fc_entry = 5 + 1 + 1 + 2 + 1 + 1 + 1 + 1 + 1
    # the batch row's 15 call arguments: STR pairs with the MOV; c1 LDR + STR; c2 STR; c3
    # STR (one store a cycle); c4 STR + LDR; c5 LDR; c6 STRD; c7-c9 LDR + STR; c10 LDR +
    # LDR; c11 STR + MOV; c12 LDR + LDR                                              = 12
    batch_args = 12
    # BL c1 (the last pair filled c12), direct: BTAC hit, no refill                  = 1
    bl = 1
    # vm_entry (GCC 12.2 -O2 of CMSIS-NN, up to the rhs_rows < 2 test): PUSH 9 regs
    # c1-c5; SUB SP c6; STR (SP read early) c8 + LDR; c9 LDR + LDR; STR c10; STR c11 +
    # CMP; BEQ (not taken) c12 + LDR; LDR c13 + ADD (shifted); ASRS c14 + CMP; SXTH c15
    # (one shifted/extend op a cycle); SXTH c16 + STR; PKHBT c17; PKHBT c18 + BLE     = 18
    vm_entry = 5 + 1 + 2 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1
    # the row-pair loop's setup: c1 LDR + LDR; c2 LDR + STR; c3 CMP + RSB; c4 IT +
    # ADDLT; c5 MOVS; c6 LSLS (reads the MOVS result) + ASRS; c7 BIC + SUB; c8 LDR + STR;
    # c9 LDR + STR; c10 MOV + LSLS; c11 ASRS + LSLS; c12 LDR + LDR; c13 STR + LDR; c14 LDR
    # + STR; c15 BIC (shifted) + ADD; c16 STR; c17 STR + ADDS; c18 MOVS + SUBS; c19-c25
    # one store a cycle (the LDR pairs with the third); c26 STR + MOV; c27 MOV + STR; c28
    # CMP; c29 BEQ (not taken)                                                        = 29
    pairs_setup = 29
    # row setup (one peeled 4-column step): its first LDR pairs with the BEQ (+0); c1 LDR +
    # STR; c2 LDR + LDR; c3 ADDS + STR; c4 LDR + LDR; c5 ADDS + CMP; c6 BEQ (not taken,
    # predicted) + MOV; c7 SUBS + ANDS; c8 BEQ                                        = 8
    row_setup = 8
    # cols4, one iteration: LDR pairs with the BEQ; SXTAB16 reads r5 (extended) early
    # c2; SXTAB16 (slot 0 only) c3 + LDR; SXTB16 c4; SXTB16 c5 + SMLAD; SMLAD c6 + LDR;
    # SXTB16 c7; SXTB16 c8 + SMLAD; SMLAD c9 + SUBS; BNE not taken: the loop exit
    # mispredicts, flags set 1 cycle before: +9                                      = 18
    cols4 = 9 + 9
    # entry spills of the (empty) unrolled loop: STRD c1 (single issue); STR c2      = 2
    x4_entry = 2
    # row mid: LDRD c1 (single issue); c2 LDR + LDR; c3 LDR + ADD; c4 MOV + LDR; c5 LDR;
    # c6 CMP; BLE taken forward: predicted not taken, mispredict +9                  = 15
    row_mid = 6 + 9
    # both outputs of the row pair (per-tensor requantize, shift <= 0 path):
    #   c1 LDR + LDR; c2 LDR + LSLS; c3 MOV + MOVS; c4 SMLAL; c6 LSRS (SMLAL latency 2)
    #   + CMP; c7 ORR; BLE taken forward: mispredicted +8                            = 15
    #   c1 LDR + LDR; c2 AND + ASRS; c3 MOV + MOV; c4 BMI (not taken)                 =  4
    #   LDR pairs with BMI; SMLAL c2 (r7 just loaded); LSRS c4; ORR c5 + LDR; AND c6 +
    #   ASRS; CMP c7 + LDR; IT c8 + ADDGT; CMP c9 + IT; ADDLT c10; CMP c11 + IT; ADDLT
    #   c12 + B (direct: BTAC hit)                                                    = 12
    #   clamp: 7 LDRs two a cycle c1-c4 (the 7th with ADD); ADD c5 + CMP; IT c6 + MOVLT;
    #   CMP c7 + IT; MOVLT c8 + CMP; IT c9 + MOVGE; CMP c10 + IT; MOVGE c11 + STRB;
    #   STRB c12 (one store unit)                                                    = 12
    pair_out = 15 + 4 + 12 + 12
    # row end: LDR pairs with the STRB; ADDS c1; CMP c2 + STR; ADD c3 + ADD; BLE (not
    # taken) c4 + LDR; LDR c5 + CMP; BNE not taken: the row-pair loop exits, +9       = 14
    row_end = 5 + 9
    # after the pairs: c1 LDR + LDR; c2 LDR + LDR; c3 CMP + MOV; c4 MOV + IT; c5 MOVLE +
    # LDR; c6 MLA; c7 STR (a MAC and a store share one issue port); c8 MLA            = 8
    pairs_end = 8
    # odd-row test: LSLS pairs with the MLA (+0); BPL c1, taken forward: mispredicted,
    # flags written the cycle before: +8                                              = 9
    even = 1 + 8
    # vm_exit: MOVS + ADD SP c1; POP reads SP early c3, 9 regs c3-c7; return 6         = 13
    vm_exit = 7 + 6
    # batch end: LDR c1 + LDR; SUBS c2 + ADD; ADD c3; BNE: the batch loop exits,
    # mispredicted +8                                                                = 11
    batch_end = 3 + 8
    # fc_exit: MOVS + ADD SP c1; POP c2-c6 (9 regs two a cycle); return 6             = 13
    fc_exit = 1 + 6 + 6
    expected = fc_entry + batch_args + bl + vm_entry + pairs_setup + row_setup + cols4
    expected += x4_entry + row_mid + pair_out + row_end + pairs_end + even + vm_exit
    expected += batch_end + fc_exit
    assert expected == 228
    res = M7.time(prog)
    assert res.cycles == expected
    assert res.cycles == unrolled(prog)
    assert M4.time(prog).cycles == 336  # tests/test_schedules_m4.py


def test_conv_inner_loop_more_mac_per_cycle_than_m4():
    """arm_nn_mat_mult_kernel_s8_s16 steady state: 16 MACs per iteration, in GCC 12's
    -mcpu=cortex-m4 instruction order (docs/firmware.md section 6).
    M7, entered after a taken back edge:
      c1 LDR (spilled row pointer) + LDR; c3 LDR through the just-loaded pointer + STR
      (data read late); c4 ROR + ROR; c5 LDR + LDR; c6-c9 the four SXTB16 (each may only
      be the older of a pair), c9 with an SMLAD; c10, c11 SMLAD (one MAC unit); c12
      SMLAD + LDR; c13 LDR + ADDS; c14 ADDS + SMLAD; c15, c16 SMLAD; c17 SMLAD + SUBS;
      c18 BNE (flags), predicted taken: no refill                          -> 18 cycles.
    M4: 31 cycles (tests/test_schedules_m4.py). The 8 SMLADs (one MAC unit) bound the M7
    loop at 8 cycles; the serial SXTB16s, the reload of the spilled pointer feeding a load
    and the back-to-back SMLADs more than double that. 31 / 18 = 1.72x: 0.89 MAC/cycle
    on the M7 against 0.52 on the M4. (GCC for cortex-m7 orders the loop differently:
    20 cycles on this model; schedules are per ISA family.)"""
    inner = _s8s16_blocks()["inner"]
    macs = 16
    after_back_edge = M7.step(inner.instrs[-1], M7.initial_state(), True)[1]
    steady7 = M7.block_cycles(inner, after_back_edge, True)[0]
    assert steady7 == 18
    # the exit iteration: the same 18 + the mispredicted not-taken back edge (SUBS sets the
    # flags 1 cycle before the BNE: 8)
    assert M7.block_cycles(inner, after_back_edge, False)[0] == 26
    s4 = M4.step(inner.instrs[-1], M4.initial_state(), True)[1]
    steady4 = M4.block_cycles(inner, s4, True)[0]
    assert steady4 == 31
    assert macs / steady7 == 16 / 18
    assert macs / steady7 > 1.7 * macs / steady4
    # the block-level evaluator = the instruction-by-instruction walk for a whole loop
    prog = Program([Loop("inner", 50, [inner])])
    assert M7.time(prog).cycles == unrolled(prog) == 18 * 49 + 26


@pytest.mark.parametrize(
    "args",
    [
        dict(h=3, w=3, c_in=3, c_out=3, k=3),
        dict(h=4, w=4, c_in=6, c_out=6, k=3, depthwise=True, stride=2),
        dict(h=5, w=4, c_in=8, c_out=6, k=1),
    ],
)
def test_evaluator_matches_unrolled_walk(args):
    # cross-block state (register-ready times, open slot) is carried exactly: the
    # O(blocks) loop evaluation equals stepping every executed instruction
    g, op = conv_graph(**args)
    prog = schedule_for("armv7em-dsp", g, op)
    assert M7.time(prog).cycles == unrolled(prog)


# ------------------------------------------------------------------------ real models
@pytest.mark.parametrize("name", SHARED_MODELS)
def test_whole_models_time_on_m7(name):
    from mcusim.importers.tflite import load_tflite

    g = load_tflite(model_path(name))
    c4 = c7 = macs = 0
    for op in g.ops:
        prog = schedule_for("armv7em-dsp", g, op)
        c4 += M4.time(prog).cycles
        c7 += M7.time(prog).cycles
        macs += prog.macs
    # Band: the conv inner loop's 0.89 MAC/cycle is near the ceiling of these schedules
    # on the M7 (one SMLAD a cycle would be 2.0, the loop's SIMD/shifter limits halve it),
    # and requantization/im2col overhead brings whole networks below it; hello_world (288
    # MACs in three tiny FC layers) is all per-call and per-output overhead: 0.13. The
    # gain over the M4 is at least 1.2x (every block's loads pair, taken back edges are
    # free) and below the inner loop's 1.72x on these networks, whose overhead blocks are
    # serial dependency chains (GCC's requantize + clamp: 23 cycles on the M7 vs 37 on
    # the M4, its mispredicted forward branches cost the M7 8-9 each).
    assert 0.1 < macs / c7 < 1.0
    assert 1.2 < c4 / c7 < 1.72


def test_every_armv7em_mnemonic_has_an_m7_group():
    # explicit groups for everything but plain ALU ops (which default to WriteALU)
    from mcusim.isa.asm import isa_table

    p = M7.p
    missing = [m for m, s in isa_table().items() if m not in p.by_mnemonic and s["class"] != "alu"]
    assert missing == []
