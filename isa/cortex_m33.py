"""Cortex-M33 instruction timing: the Cortex-M4 rules with the M33's documented differences.

Arm publishes no M33 cycle table and LLVM schedules the M33 with the Cortex-M4 machine
model, so this model is the M4 one (isa/cortex_m4.py) plus what Arm's description of the
M33 pipeline and published micro-benchmarks (isa/cortex_m33.toml, each number with its
source) change:

- 1-cycle loads whose result reaches the next instruction one cycle late, except as a MAC
  accumulator or as store data;
- 2-cycle result latency of multiplies/MACs, SXTA*/UXTA* and operand2 shifted-register /
  shifted-constant ALU ops, except into a MAC accumulator or store data;
- taken-branch refill P = 1;
- LDRD/STRD in 2 cycles and LDM/STM in N;
- MULS and flag-setting shifted-constant ops in 2 cycles, and late flags from
  shifted-register ops;
- dual issue of a 16-bit conditional branch with a preceding 16-bit instruction.

The pipeline state is the M4's (previous kind, registers, 16-bit) plus the registers the
previous instruction produces late (from a load / from a 2-stage op) and how it set the
flags.
"""

from __future__ import annotations

import tomllib
from dataclasses import replace
from functools import lru_cache
from importlib import resources

from .asm import Instr, isa_table
from .cortex_m4 import DP, CortexM4Timing, M4Params, _mask
from .cortex_m4 import load_params as load_m4_params
from .cortex_m7 import operand2, plain_immediate

_LOAD_CLASSES = frozenset(("load", "load_dual", "load_multi"))
_STORE_CLASSES = frozenset(("store", "store_dual", "store_multi"))
_MEM_CLASSES = _LOAD_CLASSES | _STORE_CLASSES | {"table_branch"}
# flags state of the previous instruction
NO_FLAGS, FLAGS, LATE_FLAGS = 0, 1, 2


@lru_cache(maxsize=1)
def load_m33_data() -> dict:
    text = resources.files("mcusim.isa").joinpath("cortex_m33.toml").read_text()
    return tomllib.loads(text)


@lru_cache(maxsize=1)
def load_params() -> M4Params:
    """The M4 parameters with cortex_m33.toml's [class_cycles] and [rules] overrides."""
    m4 = load_m4_params()
    data = load_m33_data()
    cc = dict(m4.class_cycles)
    for k, v in data.get("class_cycles", {}).items():
        if k not in cc:
            raise ValueError(f"cortex_m33.toml: unknown class {k!r}")
        cc[k] = v
    return replace(
        m4, class_cycles=cc, fetch_bytes=int(data["fetch_bytes"]), **data.get("rules", {})
    )


class CortexM33Timing(CortexM4Timing):
    """Cortex-M4 rules + the M33 differences (0-wait memory)."""

    name = "cortex-m33"

    def __init__(self, params: M4Params | None = None) -> None:
        super().__init__(params or load_params())
        m = load_m33_data()["m33"]
        self.load_use_stall = int(m["load_use_stall"])
        self.late_result_stall = int(m["late_result_stall"])
        self.late_flags_stall = int(m["late_flags_stall"])
        self.two_stage_flags_extra = int(m["two_stage_flags_extra"])
        self.narrow_branch_dual_issue = bool(m["narrow_branch_dual_issue"])
        self.multiplies = frozenset(m["multiplies"]) | frozenset(m["macs"])
        self.macs = frozenset(m["macs"])
        self.xta = frozenset(m["extend_accumulate"])
        self._imm = (
            int(m["max_plain_immediate"]),
            int(m["max_plain_add_sub"]),
            frozenset(m["plain_immediate_exempt"]),
        )
        self._info: dict[Instr, tuple] = {}

    def initial_state(self):
        # M4 state + (loaded registers, late 2-stage results, flags state)
        return super().initial_state() + (0, 0, NO_FLAGS)

    def _roles(self, ins: Instr) -> tuple:
        """(accumulator mask, store-data mask, other-source mask, late-result?, op2 kind)."""
        info = self._info.get(ins)
        if info is not None:
            return info
        mn = ins.mnemonic
        srcs = tuple(r for r in ins.srcs if r < 16)
        acc = 0
        if mn in self.macs:
            form = isa_table()[mn]["form"]
            acc = _mask(ins.dests) if form == "long" else _mask(srcs[-1:])
        xta_acc = _mask(srcs[:1]) if mn in self.xta else 0
        data = 0
        if ins.cls in _STORE_CLASSES and ins.mem is not None:
            data = _mask(r for r in srcs if r not in ins.mem.addr_regs)
        other = _mask(srcs) & ~acc & ~xta_acc & ~data
        shifted_reg, shifted_const = None, False
        if ins.cls == "alu":
            shifted_reg, imms = operand2(ins)
            if mn == "mov" and shifted_reg is not None:
                shifted_reg = None  # MOV Rd, Rm, <shift> is a plain shift
            shifted_const = any(not plain_immediate(v, mn, *self._imm) for v in imms)
        late = mn in self.multiplies or mn in self.xta or shifted_reg is not None or shifted_const
        info = (acc, xta_acc, data, other, late, shifted_reg is not None, shifted_const)
        self._info[ins] = info
        return info

    def step(self, ins: Instr, state, taken: bool | None):
        kind, regs, narrow, loaded, late_regs, flags = state
        c, (k2, r2, n2) = super().step(ins, (kind, regs, narrow), taken)
        acc, xta_acc, data, other, late, shifted_reg, shifted_const = self._roles(ins)
        cls = ins.cls
        # the M4 address-dependency stall already covers a DP result used as an address
        if kind == DP and cls in _MEM_CLASSES and ins.mem is not None:
            if _mask(ins.mem.addr_regs) & regs:
                other &= ~_mask(ins.mem.addr_regs)
        stall = 0
        if (other | xta_acc) & loaded:
            stall = self.load_use_stall
        if other & late_regs:
            stall = max(stall, self.late_result_stall)
        reads_flags = ins.cond is not None and cls != "it"
        if reads_flags and flags == LATE_FLAGS:
            stall = max(stall, self.late_flags_stall)
        c += stall
        if ins.setflags and (ins.mnemonic == "mul" or shifted_const):
            c += self.two_stage_flags_extra
        if (
            self.narrow_branch_dual_issue
            and cls == "branch"
            and ins.cond is not None
            and ins.size == 2
            and narrow
            and stall == 0
        ):
            if taken is None:
                taken = bool(ins.taken)
            if not taken:
                c -= 1  # issued with the preceding 16-bit instruction
            elif flags == NO_FLAGS:
                c -= 1  # taken: one cycle in all when the previous one set no flags
        # what this instruction leaves for the next one
        if cls == "it":
            return c, (k2, r2, n2, loaded, late_regs, flags)
        new_loaded = 0
        if cls in _LOAD_CLASSES:
            m = ins.mem
            dests = ins.dests if not (m is not None and m.writeback) else ins.dests[:-1]
            new_loaded = _mask(r for r in dests if r < 15)
        new_late = _mask(r for r in ins.dests if r < 15) if late else 0
        if ins.setflags or ins.mnemonic in ("cmp", "cmn", "tst", "teq"):
            new_flags = LATE_FLAGS if shifted_reg else FLAGS
        else:
            new_flags = NO_FLAGS
        return c, (k2, r2, n2, new_loaded, new_late, new_flags)
