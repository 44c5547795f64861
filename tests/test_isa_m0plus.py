"""Cortex-M0+ instruction timing: cycle counts worked out by hand from the Cortex-M0+ TRM
(Arm DDI 0484C section 3.3, Table 3-1), the Armv6-M instruction check, the libgcc routines
the schedules call, and the loop evaluator against an unrolled walk."""

from __future__ import annotations

import pytest
from test_isa_m4 import _flatten

from mcusim.isa.asm import AsmError, parse
from mcusim.isa.cortex_m0plus import CortexM0PlusTiming
from mcusim.isa.schedule import Block, Loop, Program
from mcusim.isa.timing import available_cores, core_timing


@pytest.fixture(scope="module")
def m0() -> CortexM0PlusTiming:
    return core_timing("cortex-m0plus")


def cyc(m0, text: str) -> int:
    return m0.sequence_cycles(parse(text))


def unrolled_cycles(m0: CortexM0PlusTiming, prog: Program) -> int:
    """Every executed instruction timed one by one (independent of the loop evaluator)."""
    return sum(m0.cycles(ins, taken) for ins, taken in _flatten(prog.items, []))


def test_registered_under_its_name():
    assert "cortex-m0plus" in available_cores()
    assert isinstance(core_timing("cortex-m0plus"), CortexM0PlusTiming)


# ------------------------------------------------------------- Table 3-1, one by one
def test_data_processing_is_one_cycle(m0):
    # MOVS imm 1, ADDS 1, LSLS imm 1, MOV any-to-any 1, ADD high 1, CMP 1, SXTB 1, REV 1
    assert cyc(m0, "movs r0, #1\nadds r0, r0, r1\nlsls r2, r2, #3") == 3
    assert cyc(m0, "mov r8, r0\nadd r0, r8\ncmp r0, r9\nsxtb r1, r1\nrev r2, r2") == 5
    # ADD/SUB SP, SP, #imm and ADD Rd, SP, #imm: 1 each
    assert cyc(m0, "sub sp, #60\nadd r0, sp, #8\nadd sp, #60") == 3
    # MOV PC, Rm: 2 (pipeline refill)
    assert cyc(m0, "mov pc, r0") == 2


def test_loads_and_stores_never_pipeline(m0):
    # LDR 2 + LDR 2: the M0+ has no load pipelining (the M4 gives 3 for this pair)
    assert cyc(m0, "ldr r0, [r1]\nldr r2, [r3]") == 4
    assert core_timing("cortex-m4").sequence_cycles(parse("ldr r0, [r1]\nldr r2, [r3]")) == 3
    # every load form is 2: byte/halfword/signed with register offset, SP, literal
    assert cyc(m0, "ldrsb r0, [r1, r2]\nldrh r3, [r4, #2]\nldr r5, [sp, #8]\nldr r6, =0x1234") == 8
    # every store form is 2, also STR after LDR
    assert cyc(m0, "str r0, [r1, #4]\nstrb r0, [r1, r2]\nstrh r0, [r1]") == 6
    assert cyc(m0, "ldr r0, [r1]\nstr r0, [r2, #4]") == 4
    # no address-generation interlock: ADDS then a load through its result = 1 + 2
    assert cyc(m0, "adds r1, #4\nldr r0, [r1]") == 3


def test_multiple_transfers(m0):
    # LDM/STM/PUSH/POP 1+N; POP with PC 3+N
    assert cyc(m0, "ldm r0!, {r1, r2, r3}") == 4
    assert cyc(m0, "stmia r0!, {r1, r2}") == 3
    assert cyc(m0, "push {r4, r5, r6, r7, lr}") == 6
    assert cyc(m0, "pop {r4, r5}") == 3
    assert cyc(m0, "pop {r4, r5, r6, r7, pc}") == 3 + 5


def test_branches(m0):
    # B 2; B<cc> 1 not taken, 2 taken; BL 3; BX/BLX 2
    assert cyc(m0, "b .L") == 2
    assert cyc(m0, "bne .L") == 1
    assert cyc(m0, "bne .L {taken}") == 2
    assert cyc(m0, "bl f") == 3
    assert cyc(m0, "bx lr\nblx r3") == 4
    assert cyc(m0, "nop\ndmb") == 1 + 3


def test_multiplier_configurations():
    fast = CortexM0PlusTiming()  # cortex_m0plus.toml: RP2040's single-cycle multiplier
    small = CortexM0PlusTiming(multiplier="small")  # the 32-cycle iterative option
    seq = parse("muls r0, r1\nadds r0, r0, r2")
    assert fast.sequence_cycles(seq) == 1 + 1
    assert small.sequence_cycles(seq) == 32 + 1
    with pytest.raises(ValueError, match="fast"):
        CortexM0PlusTiming(multiplier="medium")


# ----------------------------------------------------------- Armv6-M instruction check
@pytest.mark.parametrize(
    "text, why",
    [
        ("smlad r0, r1, r2, r0", "instruction set"),
        ("sxtb16 r0, r1", "instruction set"),
        ("sdiv r0, r1, r2", "instruction set"),
        ("ldr r0, [r1], #4", "write-back"),
        ("ldrb r0, [r1, #1]!", "write-back"),
        ("ldrsb r0, [r1, #1]", "32-bit"),  # LDRSB has only a register-offset form
        ("adds r0, r1, #100", "32-bit"),  # 3-bit immediate only in the 3-operand form
        ("add r0, r1, r8", "32-bit"),  # high-register ADD is two-operand only
        ("mul r0, r1, r2", "32-bit"),  # MULS Rd, Rm, Rd only
        ("lsls r0, r1, r2", "32-bit"),  # shift by register needs Rd == Rn
        ("it eq", "instruction set"),
        ("addeq r0, r1", "conditional"),
        ("cbz r0, .L", "instruction set"),
    ],
)
def test_thumb2_only_forms_are_rejected(m0, text, why):
    with pytest.raises(AsmError, match=why):
        m0.sequence_cycles(parse(text))
    with pytest.raises(AsmError, match="not Armv6-M"):
        m0.time(Program([Block.asm(text + (" {input}" if "[" in text else ""))]))


# --------------------------------------------------------------- library routines
def test_aeabi_lmul_by_hand(m0):
    from mcusim.kernels.schedules.cmsis_c_common import lmul_block

    blk = lmul_block()
    assert sum(1 for i in blk.instrs if i.mnemonic == "mul") == 6  # 4 partial + 2 cross
    # PUSH 5 regs 6; 12 MOV/shift 12; PUSH 2 regs 3; MOVS, LSRS 2; 4 MULS 4;
    # LSRS, ADDS, ADDS, MOV, CMP 5; BLS taken 2; MOV + 2 MULS + 8 ALU 11;
    # POP 2 regs 3; 2 MOV 2; POP 4 regs + PC 3 + 5                              = 58
    assert m0.block_cycles(blk, 0, None)[0] == 6 + 12 + 3 + 2 + 4 + 5 + 2 + 11 + 3 + 2 + 8
    # with the 32-cycle multiplier: 6 MULS cost 31 more each
    assert CortexM0PlusTiming(multiplier="small").block_cycles(blk, 0, None)[0] == 58 + 6 * 31


def test_requantize_one_output_by_hand(m0):
    from mcusim.kernels.schedules.cmsis_c_common import requant_out_items

    items = requant_out_items(False, "r0", "t")
    total = sum(m0.block_cycles(b, 0, None)[0] for b in items)
    # pre: LDR shift 2; MOV, MVNS, MOV, ASRS, ANDS, LSLS 6; LDR mult 2; 2 ASRS 2; BL 3 = 15
    # __aeabi_lmul 58
    # post: 9 ALU (+2^30 in 64 bits, bits [62:31]); CMP 1; BGT not taken 1; B 2;
    #       11 ALU (rounding divide by 2^e); BGT not taken 1; B 2                      = 27
    # clamp/store: LDR 2, MOV 1, LDR 2, ADD 1, CMP 1, BGE taken 2, LDR 2, CMP 1,
    #              BLE taken 2, LDR 2, STRB 2                                        = 18
    assert total == 15 + 58 + 27 + 18
    # the M4 does the same requantize + clamp + store in about 20-25 cycles (SMLAL)
    assert total > 4 * 25


# ------------------------------------------------------------------- loop evaluator
def test_evaluator_matches_unrolled_walk(m0):
    inner = Block.asm(
        "movs r1, #0\nldrsb r1, [r7, r1] {input}\nldrsb r2, [r3, r4] {weights}\n"
        "muls r2, r1\nadds r6, r6, r2\nadds r4, r4, #1\ncmp r4, r5\nbne .Li"
    )
    head = Block.asm("ldr r6, [r0] {bias}\nmovs r4, #0")
    tail = Block.asm("strb r6, [r2] {output}\nadds r2, #1\nsubs r3, #1\nbne .Lrow")
    for n_rows, n_cols in [(3, 5), (1, 1), (2, 0), (4, 2)]:
        prog = Program(
            [
                Block.asm("push {r4, r5, r6, r7, lr}"),
                Loop("rows", n_rows, [head, Loop("cols", n_cols, [inner]), tail]),
                Block.asm("pop {r4, r5, r6, r7, pc}"),
            ]
        )
        res = m0.time(prog)
        assert res.cycles == unrolled_cycles(m0, prog)
    # (4, 2) by hand: PUSH 6; per row LDR 2 + MOVS 1; inner 11 taken + 10 not taken;
    # STRB 2 ADDS 1 SUBS 1 BNE 2 (taken) / 1 (last row); POP 8
    assert res.cycles == 6 + 4 * (3 + 21 + 5) + 3 * 1 + 8
