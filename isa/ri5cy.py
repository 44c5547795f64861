"""RI5CY / CV32E40P instruction timing (4-stage in-order pipeline), from the CV32E40P user
manual's "Cycle counts per instruction type" table and hazard list (numbers and sources in
isa/ri5cy.toml; restated in shared/reference/riscv-xpulp.md §1).

IF - ID - EX - WB. ALU, multiplier and divider results forward from EX to ID, so they
cost no stall; load data arrives in WB, so an instruction that reads a register loaded by
the instruction right before it waits one cycle (load-use). The pipeline state carried
from one instruction to the next is (registers loaded by the previous instruction,
registers written by the previous instruction) -- the second only for the jalr hazard.

Hardware loops (``lp.setup`` ...) return from the last body instruction to the first in
zero cycles: a schedule models one as a :class:`~mcusim.isa.schedule.Loop` without a
back-edge branch (see :func:`mcusim.isa.riscv_asm.hw_loop`); the generic evaluator then
adds nothing per iteration, and the ``lp.setup`` (1 cycle) sits in the block before the
loop, charged once per entry. The load-use rule still applies across the loop-back.

``ri5cy`` / ``cv32e40p`` accept RV32IMC + XpulpV2; ``xpulpnn`` (:class:`XpulpNNTiming`) is
the same pipeline with the XpulpNN extension (nibble/crumb SIMD, pv.qnt.n, MAC&LOAD) --
the only difference is which instructions exist.

Not modelled: instruction-side stalls (prefetch buffer refills beyond the documented
jump/branch cycles, +1 for a jump/branch target that is a non-word-aligned 32-bit
instruction), data-side wait states and TCDM contention (cost layer / cluster model),
FPU, cv.elw, interrupts.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from .asm import Instr
from .timing import SteppedTiming


def _mask(regs) -> int:
    m = 0
    for r in regs:
        m |= 1 << r
    return m


@dataclass(frozen=True)
class RI5CYParams:
    class_cycles: dict
    branch_taken: int
    load_use_stall: int
    jalr_dependency_stall: int
    misaligned_extra: int
    slow_csr_cycles: int
    slow_csrs: list
    slow_csr_prefixes: list
    div_default_cycles: int
    div_min_cycles: int
    div_max_cycles: int
    hwloop_backedge_cycles: int
    fetch_bytes: int  # bytes per instruction fetch (top-level key of the TOML)


@lru_cache(maxsize=1)
def load_params() -> RI5CYParams:
    data = tomllib.loads(resources.files("mcusim.isa").joinpath("ri5cy.toml").read_text())
    return RI5CYParams(
        class_cycles=dict(data["class_cycles"]),
        fetch_bytes=int(data["fetch_bytes"]),
        **data["rules"],
    )


def div_cycles(divisor: int, signed: bool = True) -> int:
    """CV32E40P division latency for a divisor value: 3 + leading zeros of the divisor
    (35 for 0), the manual's rule (ri5cy.toml). Use it to write ``{div=N}`` annotations."""
    p = load_params()
    b = divisor & 0xFFFFFFFF
    if signed and b >= 1 << 31:
        b = (1 << 32) - b  # |b| [verify: the manual speaks of "operand b"]
    clz = 32 - b.bit_length()
    return min(max(p.div_min_cycles + clz, p.div_min_cycles), p.div_max_cycles)


class RI5CYTiming(SteppedTiming):
    """CV32E40P pipeline rules (0-wait memory). State = (loaded-regs mask, written mask)."""

    name = "ri5cy"
    xpulpnn = False

    def __init__(self, params: RI5CYParams | None = None) -> None:
        self.p = params or load_params()
        self._cache: dict = {}
        self.fetch_bytes = self.p.fetch_bytes  # read by mcusim/cache.py fetch_bytes_of

    def initial_state(self):
        return (0, 0)

    def _csr_cycles(self, ins: Instr) -> int:
        p = self.p
        ops = [o.strip().lower() for o in ins.text.partition(" ")[2].split(",")]
        for o in ops:
            if o in p.slow_csrs or any(o.startswith(x) for x in p.slow_csr_prefixes):
                return p.slow_csr_cycles
        return self.p.class_cycles["csr"]

    def step(self, ins: Instr, state, taken: bool | None):
        """Cycles of one instruction given the previous pipeline state -> (cycles, state)."""
        p = self.p
        loaded, written = state
        cls = ins.cls
        if cls.startswith("nn_") and not self.xpulpnn:
            raise ValueError(
                f"{self.name}: {ins.text!r} is an XpulpNN instruction; use core 'xpulpnn'"
            )
        src = _mask(ins.srcs)
        stall = p.load_use_stall if (loaded & src) else 0
        new_loaded = 0
        if cls == "div":
            c = ins.annotation("div", p.div_default_cycles)
            c = min(max(c, p.div_min_cycles), p.div_max_cycles)
        elif cls == "csr":
            c = self._csr_cycles(ins)
        elif cls == "branch":
            if taken is None:
                taken = bool(ins.taken)
            c = p.branch_taken if taken else p.class_cycles["branch"]
        elif cls == "jump_reg":
            c = p.class_cycles["jump_reg"]
            if (written & src) and not stall:
                c += p.jalr_dependency_stall
        else:
            # pseudo-instructions that assemble to several (li/la: lui/auipc + addi)
            c = p.class_cycles[cls] * ins.annotation("insns", 1)
        m = ins.mem
        if m is not None and ins.annotation("misaligned"):
            c += p.misaligned_extra
        if m is not None and m.is_load and cls != "nn_qnt":  # qnt: result after its walk
            # registers that receive memory data (not the post-incremented base)
            data = [r for r in ins.dests if not (m.writeback and r == m.base)]
            if cls == "nn_macload":
                data = [r for r in data if r >= 32]  # only the SPR comes from memory
            new_loaded = _mask(data)
        return c + stall, (new_loaded, _mask(ins.dests))


class XpulpNNTiming(RI5CYTiming):
    """RI5CY pipeline with the XpulpNN extension (same numbers, more instructions)."""

    name = "xpulpnn"
    xpulpnn = True
