"""Cortex-M0+ instruction timing from the TRM (Arm DDI 0484C section 3.3, Table 3-1).

The M0+ has a 2-stage pipeline and a single AHB-Lite master port; its TRM gives one cycle
count per instruction form with no neighbour-dependent rules (no load pipelining, no
address-generation interlock, no IT folding). A block's time is therefore the sum of its
instructions' table values, plus the refill cycle of every taken branch. All numbers come
from isa/cortex_m0plus.toml.

The model also checks that a schedule is Armv6-M code: only the 16-bit Thumb instructions
(plus BL and the barriers), no IT blocks or conditional execution outside B<cc>, no
post-indexed or write-back single loads/stores, no SXTB16/SMLAD/SDIV. A schedule that
leaks a Thumb-2 instruction is a bug, reported as an AsmError naming the instruction.

Not modelled (documented limits): flash wait states and XIP caches (mcusim.costs), the
single-cycle I/O port (1-cycle loads/stores only to that port), bus contention with DMA or
the second core of an RP2040.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from .asm import PC, SP, AsmError, Instr
from .schedule import Block
from .timing import CoreTiming

# Base mnemonics (isa/armv7em.toml names) that exist in Armv6-M (ARMv6-M ARM, DDI 0419,
# section A5.2 "16-bit Thumb instruction encoding" + A5.3 "32-bit": BL, MSR, MRS, barriers).
ARMV6M_MNEMONICS = frozenset(
    "mov mvn add adc sub sbc rsb neg and orr eor bic cmp cmn tst lsl lsr asr ror mul "
    "rev rev16 revsh sxtb sxth uxtb uxth ldr ldrb ldrsb ldrh ldrsh str strb strh "
    "ldm ldmia stm stmia push pop b bl bx blx nop dmb dsb isb".split()
)
_WIDE_OK = frozenset(("bl", "dmb", "dsb", "isb"))  # the only 32-bit encodings


@dataclass(frozen=True)
class M0PlusParams:
    class_cycles: dict
    branch_taken_extra: int
    alu_pc_extra: int
    pop_pc_extra: int
    mul_cycles: int
    fetch_bytes: int  # bytes per instruction fetch (top-level key of the TOML)


@lru_cache(maxsize=2)
def load_params(multiplier: str | None = None) -> M0PlusParams:
    """Parameters from cortex_m0plus.toml; ``multiplier`` "fast"/"small" overrides the file."""
    text = resources.files("mcusim.isa").joinpath("cortex_m0plus.toml").read_text()
    data = tomllib.loads(text)
    r = data["rules"]
    kind = multiplier or r["multiplier"]
    if kind not in ("fast", "small"):
        raise ValueError(f"cortex-m0plus: multiplier must be 'fast' or 'small', got {kind!r}")
    return M0PlusParams(
        class_cycles=dict(data["class_cycles"]),
        branch_taken_extra=r["branch_taken_extra"],
        alu_pc_extra=r["alu_pc_extra"],
        pop_pc_extra=r["pop_pc_extra"],
        mul_cycles=r["mul_fast"] if kind == "fast" else r["mul_small"],
        fetch_bytes=int(data["fetch_bytes"]),
    )


def _sp_immediate_form(ins: Instr) -> bool:
    """ADD/SUB SP, SP, #imm and ADD Rd, SP, #imm: 16-bit in Armv6-M (the shared parser
    sizes them as Thumb-2 wide forms because SP is not a low register)."""
    if ins.mnemonic not in ("add", "sub") or ins.setflags or ins.cond is not None:
        return False
    regs = ins.dests + ins.srcs
    if SP not in regs or "#" not in ins.text:
        return False
    try:
        imm = int(ins.text.rsplit("#", 1)[1].strip(), 0)
    except ValueError:
        return False
    return imm % 4 == 0 and 0 <= imm <= 1020 and all(r <= 7 or r == SP for r in regs)


def check_armv6m(ins: Instr, where: str = "schedule") -> None:
    """Raise AsmError when ``ins`` is not an Armv6-M (Thumb-1 + BL/barriers) instruction."""
    why = None
    if ins.mnemonic not in ARMV6M_MNEMONICS:
        why = "not in the Armv6-M instruction set"
    elif ins.cond is not None and ins.mnemonic != "b":
        why = "conditional execution exists only for B<cc>"
    elif ins.mem is not None and ins.cls in ("load", "store") and ins.mem.writeback:
        why = "no pre/post-indexed write-back for single loads/stores"
    elif ins.size != 2 and ins.mnemonic not in _WIDE_OK and not _sp_immediate_form(ins):
        why = "needs a 32-bit Thumb-2 encoding (high register, large immediate or missing S)"
    if why:
        raise AsmError(f"{where}: {ins.text!r} is not Armv6-M code: {why}")


class CortexM0PlusTiming(CoreTiming):
    """TRM Table 3-1 of the Cortex-M0+ (0-wait memory). The pipeline state is empty."""

    name = "cortex-m0plus"

    def __init__(self, params: M0PlusParams | None = None, multiplier: str | None = None):
        self.p = params or load_params(multiplier)
        self.fetch_bytes = self.p.fetch_bytes  # read by mcusim/cache.py fetch_bytes_of
        self._cache: dict = {}

    def initial_state(self):
        return 0

    def block_cycles(self, block: Block, state, last_taken):
        key = (block, last_taken)
        hit = self._cache.get(key)
        if hit is not None:
            return hit, state
        total = 0
        instrs = block.instrs
        n = len(instrs)
        for k, ins in enumerate(instrs):
            check_armv6m(ins, block.name or "block")
            taken = last_taken if (k == n - 1 and last_taken is not None) else None
            total += self.cycles(ins, taken)
        self._cache[key] = total
        return total, state

    def sequence_cycles(self, instrs: tuple[Instr, ...]) -> int:
        """Cycles of a straight-line instruction sequence (tests, diagnostics)."""
        total = 0
        for ins in instrs:
            check_armv6m(ins, "sequence")
            total += self.cycles(ins, None)
        return total

    def cycles(self, ins: Instr, taken: bool | None) -> int:
        """Cycles of one instruction; ``taken`` overrides a branch's direction."""
        p = self.p
        cc = p.class_cycles
        cls = ins.cls
        if cls == "alu":
            return cc["alu"] + (p.alu_pc_extra if ins.writes_pc else 0)
        if cls == "mul":
            return p.mul_cycles
        if cls in ("load", "store"):
            return cc[cls]
        if cls in ("load_multi", "store_multi"):
            c = cc["multi_base"] + ins.mem.nregs
            if cls == "load_multi" and PC in ins.dests:
                c += p.pop_pc_extra
            return c
        if cls == "branch":
            if taken is None:
                taken = ins.taken if ins.taken is not None else ins.cond is None
            return cc["branch"] + (p.branch_taken_extra if taken else 0)
        if cls in ("branch_call", "branch_reg", "nop", "barrier"):
            return cc[cls]
        raise AsmError(f"cortex-m0plus: no timing for instruction class {cls!r} ({ins.text})")
