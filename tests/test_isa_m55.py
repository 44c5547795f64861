"""Cortex-M55 timing: the MVE beat model (LLVM ARMScheduleM55.td, shared/reference/cortex-m.md
section 3), the Armv8.1-M parser extension, low-overhead loops, the scalar side, and the
O(blocks) loop evaluator checked against an instruction-by-instruction walk."""

from __future__ import annotations

import pytest

from mcusim.isa.asm import LR, QBASE, VPR, AsmError, parse
from mcusim.isa.cortex_m55 import BeatTiming
from mcusim.isa.schedule import Block, Loop, Program
from mcusim.isa.timing import core_timing

Q = [QBASE + i for i in range(8)]


@pytest.fixture(scope="module")
def m55() -> BeatTiming:
    return core_timing("cortex-m55")


def cyc(model, text: str) -> int:
    return model.sequence_cycles(parse(text))


# ------------------------------------------------------------------------- unrolled walk
def _flatten(items, out, last_taken=None):
    n = len(items)
    for k, it in enumerate(items):
        lt = last_taken if k == n - 1 else None
        if isinstance(it, Block):
            for j, ins in enumerate(it.instrs):
                last = j == len(it.instrs) - 1
                out.append((ins, lt if last else None, last and lt is not None))
        else:
            for i in range(it.count):
                _flatten(it.body, out, (i < it.count - 1) if it.has_back_edge else None)
    return out


def unrolled_cycles(model: BeatTiming, prog: Program) -> int:
    """Every executed instruction one at a time, the pipeline state carried through."""
    st = model.initial_state()
    total = 0
    for ins, taken, backedge in _flatten(prog.items, []):
        c, st = model._run((ins,), st, taken, backedge_last=backedge)
        total += c
    return total + model.drain(st)


# ---------------------------------------------------------------------------- parser
def test_mve_loads_stores_parse():
    (i,) = parse("vldrb.8 q0, [r0], #16 {weights}")
    assert (i.mnemonic, i.cls, i.esize, i.size) == ("vldrb", "mve_load", 8, 4)
    assert i.dests == (Q[0], 0) and i.srcs == (0,)  # Q0 and the written-back base
    assert i.mem.nbytes == 16 and i.mem.nregs == 1 and i.mem.writeback and i.mem.post
    (i,) = parse("vldrb.s32 q1, [r2] {input}")  # widening: 4 lanes of one byte
    assert i.mem.nbytes == 4 and not i.mem.writeback and i.dests == (Q[1],)
    (i,) = parse("vstrb.8 q3, [r1], #16 {output}")
    assert i.cls == "mve_store" and i.srcs == (Q[3], 1) and i.dests == (1,)
    assert not i.mem.is_load and i.mem.nbytes == 16
    (i,) = parse("vstrb.32 q1, [r3, q7] {output}")  # scatter: one access per lane
    assert i.cls == "mve_scatter" and i.mem.nregs == 4 and i.mem.nbytes == 4
    (i,) = parse("vldrh.u32 q0, [r0, q2, uxtw #1] {input}")
    assert i.cls == "mve_gather" and Q[2] in i.srcs
    (i,) = parse("vldrb.8 q0, [r1], #16 {input} {lanes=5}")  # partial tail iteration
    assert i.mem.nbytes == 5


def test_mve_reductions_predication_and_loops_parse():
    (i,) = parse("vmladava.s8 r4, q0, q1")
    assert i.cls == "mve_dav" and i.dests == (4,) and i.srcs == (4, Q[0], Q[1])
    (i,) = parse("vmladav.s8 r4, q0, q1")  # no accumulate: r4 not read
    assert i.srcs == (Q[0], Q[1])
    (i,) = parse("vaddva.s8 r8, q0")
    assert i.dests == (8,) and i.srcs == (8, Q[0])
    (i,) = parse("vpstt")
    assert (i.mnemonic, i.it_len, i.srcs) == ("vpst", 2, (VPR,))
    (i,) = parse("vldrbt.u8 q2, [r3], #16 {input}")  # t-suffix inside a VPT block
    assert i.mnemonic == "vldrb" and i.pred == "t" and VPR in i.srcs
    (i,) = parse("vpte.s32 gt, q4, r12")
    assert (i.mnemonic, i.it_len, i.dests) == ("vpt", 2, (VPR,))
    (i,) = parse("vctp.8 r2")
    assert i.cls == "mve_sys" and i.dests == (VPR,) and i.srcs == (2,)
    for text, cls in [("wlstp.8 lr, r2, .L1", "loop_start"), ("dls lr, r3", "loop_start"),
                      ("dlstp.32 lr, r0", "loop_start"), ("letp lr, .L2", "loop_end"),
                      ("le lr, .L2", "loop_end")]:  # fmt: skip
        (i,) = parse(text)
        assert i.cls == cls and LR in i.dests
    (i,) = parse("vmaxv.s8 r0, q1")
    assert i.cls == "mve_maxv8"
    (i,) = parse("vmov.32 r0, q1[2]")
    assert i.cls == "mve_lane_from" and i.dests == (0,)
    (i,) = parse("vadd.f32 q0, q1, q2")
    assert i.cls == "mve_fp"
    (i,) = parse("vrshl.s32 q0, r2")  # shifts Qda in place: reads it
    assert i.srcs == (Q[0], 2)
    with pytest.raises(AsmError, match="unknown mnemonic"):
        parse("vfrobnicate.s8 q0, q1")


def test_thumb2_text_still_parses_as_before():
    # lines sharing mnemonics with MVE keep their Armv7E-M parse (no Q/P0 operand)
    (i,) = parse("vldr s0, [r6] {input}")
    assert (i.cls, i.mnemonic, i.mem.nbytes) == ("load", "vldr", 4)
    (i,) = parse("vmov r0, s0")
    assert i.cls == "fp" and i.dests == (0,)
    (i,) = parse("ble .Lloop")  # "le" is a condition here, not the loop-end instruction
    assert (i.mnemonic, i.cond, i.cls) == ("b", "le", "branch")
    (i,) = parse("addle r0, r1, r2")
    assert i.mnemonic == "add" and i.cond == "le"
    assert parse("vadd.f32 s0, s1, s2")[0].cls == "fp"


# ------------------------------------------------------------- beat model (reference)
def test_reference_beat_examples(m55):
    # LLVM ARMScheduleM55.td header, reproduced in cortex-m.md section 3:
    #          1    2    3    4    5
    # LD/ST  : VLDR VLDR      VSTR VSTR
    # INTEGER:      VADD VADD
    # FP/MUL :           VMUL VMUL
    # VLDR q0 starts at 0 (LS 0-1, q0 usable at 1); VADD reads q0 at 1 (INT 1-2, q1 at 2);
    # VMUL at 2 (FP 2-3, q2 usable at 4); VSTR at 3: LS free, its data is read one cycle
    # late (4 - 1 = 3); its second beat ends at 5.
    assert (
        cyc(m55, "vldrw.u32 q0, [r0]\nvadd.i32 q1, q0, q0\nvmul.i32 q2, q1, q1\nvstrw.32 q2, [r1]")
        == 5
    )
    # VLDR 0-1; VLDRB waits for LS: 2-3 (q1 at 3); VADD 3-4; VSTR 4-5 (LS free at 4): 6
    assert (
        cyc(m55, "vldrw.u32 q0, [r0]\nvldrb.u32 q1, [r2]\nvadd.i32 q2, q0, q1\nvstrw.32 q2, [r1]")
        == 6
    )


def test_same_pipe_serializes_different_pipes_overlap(m55):
    # three loads: LS 0-1, 2-3, 4-5 = 6
    assert cyc(m55, "vldrw.u32 q0, [r0]\nvldrw.u32 q1, [r1]\nvldrw.u32 q2, [r2]") == 6
    # dependent VMULs: FP 0-1 (q1 at 2), FP 2-3 = 4
    assert cyc(m55, "vmul.i32 q1, q0, q0\nvmul.i32 q2, q1, q1") == 4
    # independent INT/FP alternation: starts 0, 1, 2, 3; last beat ends at 5
    alternating = "\n".join(
        ["vadd.i32 q1, q0, q0", "vmul.i32 q2, q3, q3", "vadd.i32 q4, q0, q0", "vmul.i32 q5, q3, q3"]
    )
    assert cyc(m55, alternating) == 5
    # load then an independent store still share LS: 0-1, 2-3 = 4
    assert cyc(m55, "vldrw.u32 q0, [r0]\nvstrw.32 q1, [r1]") == 4


def test_store_data_read_late_and_no_forward_from_narrowing(m55):
    # VMUL 0-1, q2 usable at 2; VSTR reads data at start + 1 -> starts at 1, ends at 3
    assert cyc(m55, "vmul.i32 q2, q1, q1\nvstrw.32 q2, [r1]") == 3
    # VMOVN (latency 3, "no forwarding into stores"): VSTR waits until 3, ends at 5
    assert cyc(m55, "vmovnb.i32 q2, q1\nvstrw.32 q2, [r1]") == 5


def test_gather_offsets_read_four_cycles_early(m55):
    # VADD 0-1 writes the offsets at 1; the gather needs them 4 cycles before its start:
    # starts at 5, LS 5-6, ends at 7
    assert cyc(m55, "vadd.i32 q1, q0, q0\nvldrb.u32 q2, [r0, q1]") == 7


def test_predication_sys_pipe(m55):
    # VCTP (SYS, one cycle) 0, VPR at 1; VPST 1; VLDRBT 2-3 -> 4
    assert cyc(m55, "vctp.8 r2\nvpst\nvldrbt.u8 q0, [r0]") == 4


def test_mve_to_scalar_latency(m55):
    # VMLADAVA (FP/MUL, latency 2) writes r0 at 2; ADDS waits: 2-3 -> 3 (FP pipe free at 2)
    assert cyc(m55, "vmladava.s8 r0, q0, q1\nadds r0, #1") == 3
    # chained accumulator: the second VMLADAVA needs r0 (at 2) and the FP pipe (at 2): 2-3
    assert cyc(m55, "vmladava.s8 r0, q0, q1\nvmladava.s8 r0, q2, q3") == 4


# ------------------------------------------------------------------------ scalar side
def test_scalar_dual_issue_and_latencies(m55):
    # two 16-bit T1 instructions, ADD/MOV immediate: one cycle
    assert cyc(m55, "adds r0, #1\nmovs r1, #2") == 1
    # dependent: no pair -> 2
    assert cyc(m55, "adds r0, #1\nadds r0, #1") == 2
    # 32-bit encodings never pair -> 2
    assert cyc(m55, "add.w r0, r0, #1\nmov.w r1, #2") == 2
    # neither is a dual-issue kind (register ADDS, LDR) -> 2
    assert cyc(m55, "adds r0, r1, r2\nldr r3, [r4]") == 2
    # load latency 2: LDR 0, ADDS 2 -> 3
    assert cyc(m55, "ldr r0, [r1]\nadds r0, #1") == 3
    # shifted-operand ALU latency 2: ADD 0, ADDS 2 -> 3
    assert cyc(m55, "add.w r0, r1, r2, lsl #2\nadds r0, #1") == 3
    # SMLAD latency 2, accumulator not forwarded: 0, 2 -> 3
    assert cyc(m55, "smlad r0, r1, r2, r0\nsmlad r0, r3, r4, r0") == 3
    # PUSH {r4-r7, lr}: 1 + 5
    assert cyc(m55, "push {r4, r5, r6, r7, lr}") == 6


def test_taken_branch_refill(m55):
    p = m55.p
    # B: issue 1 + refill (LLVM MispredictPenalty 3)
    assert cyc(m55, "b .Lx") == 1 + p.branch_refill == 4
    # conditional not taken: 1
    assert cyc(m55, "bne .Lx") == 1


# --------------------------------------------------------------------- low-overhead loops
def test_low_overhead_loop_zero_cost_after_first_iteration(m55):
    dls = Block.asm("dls lr, r2")
    body = Block.asm("ldrb r3, [r1], #1 {input}\nstrb r3, [r0], #1 {output}\nle lr, .Lcopy")
    p = m55.p
    # DLS 1. Iteration 1: LDRB 0 (r3 at 2), STRB 2 -> 3, LE executes as a taken branch:
    # 1 + refill 3 -> 7. Later iterations: LDRB 0, STRB 2, LE handled by the loop cache: 3.
    assert p.le_first_extra == 3
    for n in (1, 2, 10):
        prog = Program([dls, Loop("copy", n, [body])])
        expected = 1 + (3 + 1 + p.le_first_extra) + 3 * (n - 1)
        assert m55.time(prog).cycles == expected
        assert m55.time(prog).cycles == unrolled_cycles(m55, prog)


def test_single_iteration_loop_end_falls_through(m55):
    # a {nottaken} LE (the only iteration: it never branches back) costs its issue cycle:
    # WLSTP 0; VLDRB 1 (LS 1-2); LETP 2 -> 3; the load's second beat ends at 3: 3
    assert cyc(m55, "wlstp.8 lr, r2, .Le\nvldrb.8 q0, [r1], #16\nletp lr, .Ll {nottaken}") == 3
    # the same LETP taken for the first time refills: 1 + 1 + (1 + 3) = 6 (LS done at 3)
    assert cyc(m55, "wlstp.8 lr, r2, .Le\nvldrb.8 q0, [r1], #16\nletp lr, .Ll") == 6


def test_tail_predicated_steady_state_loop(m55):
    # DLSTP + LETP copy: VLDRB (LS) and VSTRB (LS) serialize on the load/store pipe
    body = Block.asm("vldrb.8 q0, [r1], #16 {input}\nvstrb.8 q0, [r0], #16 {output}\nletp lr, .L")
    prog = Program([Block.asm("dlstp.8 lr, r2"), Loop("copy", 8, [body])])
    # DLSTP: 1 (now 1).
    # iteration 1: VLDRB 1 (LS 1-2, q0 at 2); VSTRB 3 (LS busy) -> LS 3-4, now 4; LETP first
    #   time: 4 + 1 + 3 refill -> now 8                                          = 7
    # iteration 2: LS free: VLDRB 8, VSTRB 10, now 11 (LETP cached: 0)           = 3
    # iterations 3-8: VLDRB waits for the previous store's second beat: 4 each  = 24
    # drain: the last store's second beat ends one cycle after the last issue    = 1
    res = m55.time(prog)
    assert res.cycles == 1 + 7 + 3 + 24 + 1 == 36
    assert res.cycles == unrolled_cycles(m55, prog)
    assert res.stream("input").read_bytes == 8 * 16
    # steady state: LS-bound, 2 instructions x 2 beats = 4 cycles per 16 bytes
    assert m55.time(Program([Block.asm("dlstp.8 lr, r2"), Loop("copy", 9, [body])])).cycles == 40


def test_unknown_core_and_registry():
    assert core_timing("cortex-m55").name == "cortex-m55"
    assert isinstance(core_timing("cortex-m55"), BeatTiming)
