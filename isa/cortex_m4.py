"""Cortex-M4 instruction timing from the TRM (Arm DDI 0439 section 3.3), as pipeline rules.

The M4 issues one instruction a cycle in order; what makes timing depend on neighbours is
only the load/store unit and branches. The pipeline state carried from one instruction to
the next is therefore small: what the previous instruction was (a pipelinable single
load, a data-processing instruction, or anything else), the registers it wrote, and
whether it had a 16-bit encoding (IT folding). All numbers come from isa/cortex_m4.toml.

Loads with base writeback (post-indexed ``[rn], #4``) pipeline like any other load: the
Cortex-M3 TRM's "a load with a base update is not normally pipelined" bullet is absent
from the Cortex-M4 TRM's list of load/store timing rules (DDI 0439 section 3.3.2).

Not modelled (documented limits): unaligned accesses (+1/+2), odd-halfword alignment of
32-bit instructions, flash wait states and vendor prefetch/caches, bus contention with
DMA. Load-use and MAC-accumulator latencies are not charged: the TRM tables give no such
stall (LLVM's model lists latency 2 for loads and MACs; the TRM's 2-cycle load already
covers the first).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from .asm import PC, Instr
from .timing import SteppedTiming

# previous-instruction kinds carried in the pipeline state
NONE, LOAD, DP = 0, 1, 2
_DP_CLASSES = frozenset(("alu", "mul", "mul_long", "dsp", "div", "fp", "fp_mac", "fp_div"))


def _mask(regs) -> int:
    m = 0
    for r in regs:
        m |= 1 << r
    return m


@dataclass(frozen=True)
class M4Params:
    class_cycles: dict
    branch_refill: int
    ldr_pc_refill: int
    table_branch_cycles: int
    load_pipeline_saving: int
    store_imm_cycles: int
    address_dependency_stall: int
    literal_load_extra: int
    it_folding: bool
    div_default_cycles: int
    div_min_cycles: int
    div_max_cycles: int
    fetch_bytes: int  # bytes per instruction fetch (top-level key of the TOML)


@lru_cache(maxsize=1)
def load_params() -> M4Params:
    data = tomllib.loads(resources.files("mcusim.isa").joinpath("cortex_m4.toml").read_text())
    return M4Params(
        class_cycles=dict(data["class_cycles"]),
        fetch_bytes=int(data["fetch_bytes"]),
        **data["rules"],
    )


class CortexM4Timing(SteppedTiming):
    """TRM rules of the Cortex-M4 (0-wait memory). State = (kind, written-regs mask, 16-bit)."""

    name = "cortex-m4"

    def __init__(self, params: M4Params | None = None) -> None:
        self.p = params or load_params()
        self.fetch_bytes = self.p.fetch_bytes  # read by mcusim/cache.py fetch_bytes_of
        self._cache: dict = {}

    def initial_state(self):
        return (NONE, 0, False)

    def step(self, ins: Instr, state, taken: bool | None):
        """Cycles of one instruction given the previous pipeline state -> (cycles, state)."""
        p = self.p
        cc = p.class_cycles
        kind, regs, narrow = state
        cls = ins.cls
        size16 = ins.size == 2
        if cls in _DP_CLASSES:
            if cls == "div":
                c = ins.annotation("div", p.div_default_cycles)
                c = min(max(c, p.div_min_cycles), p.div_max_cycles)
            else:
                c = cc[cls]
            if ins.writes_pc:  # ADD PC / MOV PC: 1+P
                return c + p.branch_refill, (NONE, 0, size16)
            return c, (DP, _mask(ins.dests), size16)
        if cls == "load" or cls == "store":
            m = ins.mem
            addr = _mask(m.addr_regs) if not m.literal else 0
            if cls == "load":
                c = cc["load"]
                if m.literal:
                    c += p.literal_load_extra
            else:
                c = p.store_imm_cycles if m.offset_reg is None else cc["store"]
            if kind == LOAD and not (addr & regs):
                # pipelined behind a load: one cycle removed (never below 1)
                c = max(1, c - p.load_pipeline_saving) if (cls == "load" or c > 1) else c
            elif kind == DP and (addr & regs):
                c += p.address_dependency_stall
            if cls == "load":
                if ins.writes_pc:
                    return cc["load"] + p.ldr_pc_refill, (NONE, 0, size16)
                data = ins.dests[:-1] if m.writeback else ins.dests
                return c, (LOAD, _mask(data), size16)
            # nothing pipelines after a store
            return c, (NONE, 0, size16)
        if cls in ("load_dual", "store_dual", "load_multi", "store_multi"):
            m = ins.mem
            c = cc["multi_base"] + m.nregs
            if kind == DP and (_mask(m.addr_regs) & regs):
                c += p.address_dependency_stall
            if cls == "load_multi" and PC in ins.dests:
                c += p.branch_refill
            return c, (NONE, 0, size16)
        if cls == "it":
            if p.it_folding and narrow:
                return 0, (kind, regs, False)  # folded: the next instr follows the previous
            return cc["it"], (NONE, 0, True)
        if cls in ("branch", "cbz"):
            if taken is None:
                taken = ins.taken if ins.taken is not None else (ins.cond is None and cls != "cbz")
            c = cc[cls] + (p.branch_refill if taken else 0)
            return c, (NONE, 0, size16)
        if cls in ("branch_call", "branch_reg"):
            return cc[cls] + p.branch_refill, (NONE, 0, size16)
        if cls == "table_branch":
            return p.table_branch_cycles, (NONE, 0, False)
        if cls in ("nop", "barrier"):
            return cc[cls], (NONE, 0, size16)
        raise ValueError(f"cortex-m4: no timing for instruction class {cls!r} ({ins.text})")
