"""Cortex-M7 core timing: an in-order two-slot issue scoreboard (LLVM ARMScheduleM7.td rules).

The M7 issues up to two instructions a cycle in program order. Every instruction is mapped
(isa/cortex_m7.toml) to a group that says which functional units it uses (2 ALUs, 2 load
pipes, 1 store, 1 MAC, 1 shifter, 1 SIMD, 1 branch, 1 VFP), whether it may only be the
older instruction of a pair (slot 0), whether it issues alone, how long its result takes
and which operands it reads a cycle early (addresses, shifted operands) or late
(accumulators, store data). An instruction issues in the first cycle, not earlier than its
predecessor, in which its operands are ready; it joins its predecessor's cycle as the
younger instruction (slot 1) only when that cycle still has a free slot and units. A
stalled older instruction therefore holds back everything behind it.

Times are kept relative to the issue cycle of the last instruction, so the block state
carried between blocks (register-ready times, whether the last cycle still has a free
slot and which units it used) is small, hashable and cached like the M4's.

Branches: a loop back edge (the last instruction of a loop body, ``last_taken`` given)
sits in the BTAC, so a taken back edge costs no refill and the not-taken exit mispredicts.
Not modelled (documented in docs/cores.md): fetch bandwidth and alignment, caches and
wait states (the device layer adds those), write-buffer and bus contention, BTAC capacity,
FPU register dependencies (s/d registers are not tracked by isa/asm.py).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from .asm import PC, Instr, _reg, isa_table
from .schedule import Block
from .timing import CoreTiming

UNITS = ("alu", "load", "store", "mac", "branch", "vfp", "shift", "simd", "mac_store")
_U = {u: i for i, u in enumerate(UNITS)}
FLAGS = 16  # pseudo-register index of the NZCV flags
_FLAG_SETTERS = frozenset(("cmp", "cmn", "tst", "teq"))
_CARRY_READERS = frozenset(("adc", "sbc", "rrx"))
_SHIFT_SPEC = re.compile(r"^(lsl|lsr|asr|ror|rrx)\b", re.IGNORECASE)
# branch kinds
NOT_BRANCH, COND, DIRECT, INDIRECT = 0, 1, 2, 3


@dataclass(frozen=True)
class Group:
    name: str
    units: tuple[int, ...]  # count per unit index
    latency: int
    slot0: bool = False
    single: bool = False
    early: str = ""  # "", "all", "second", "address"
    accumulate: bool = False
    store_data: bool = False
    occupancy: str = ""  # "", "div", "multi", "table_branch"


@dataclass(frozen=True)
class M7Params:
    caps: tuple[int, ...]
    width: int
    groups: dict
    by_mnemonic: dict
    class_groups: dict
    lat: dict
    adv: dict
    mispredict: int
    mispredict_late_flags: int
    flags_early: int
    indirect: int
    direct: int
    multi_regs_per_cycle: int
    table_branch_cycles: int
    wide_imm_max: int
    wide_imm_max_add_sub: int
    wide_imm_exempt: frozenset
    fetch_bytes: int  # bytes per instruction fetch (top-level key of the TOML)


@lru_cache(maxsize=1)
def load_params() -> M7Params:
    data = tomllib.loads(resources.files("mcusim.isa").joinpath("cortex_m7.toml").read_text())
    lat = dict(data["latency"])
    caps = tuple(int(data["units"][u]) for u in UNITS)
    groups, by_mn = {}, {}
    for name, g in data["groups"].items():
        units = [0] * len(UNITS)
        for u in g["units"]:
            units[_U[u]] += 1
        grp = Group(
            name=name,
            units=tuple(units),
            latency=int(lat[g["latency"]]),
            slot0=bool(g.get("slot0", False)),
            single=bool(g.get("single", False)),
            early=g.get("early", ""),
            accumulate=bool(g.get("accumulate", False)),
            store_data=bool(g.get("store_data", False)),
            occupancy=g.get("occupancy", ""),
        )
        groups[name] = grp
        for m in g.get("mnemonics", ()):
            by_mn[m] = grp
    class_groups = {c: groups[g] for c, g in data["class_groups"].items()}
    br = data["branch"]
    occ = data["occupancy"]
    return M7Params(
        caps=caps,
        width=int(data["issue"]["width"]),
        groups=groups,
        by_mnemonic=by_mn,
        class_groups=class_groups,
        lat=lat,
        adv=dict(data["advance"]),
        mispredict=int(br["mispredict"]),
        mispredict_late_flags=int(br["mispredict_late_flags"]),
        flags_early=int(br["flags_early"]),
        indirect=int(br["indirect"]),
        direct=int(br["direct"]),
        multi_regs_per_cycle=int(occ["multi_regs_per_cycle"]),
        table_branch_cycles=int(occ["table_branch"]),
        wide_imm_max=int(data["wide_immediate"]["max_plain"]),
        wide_imm_max_add_sub=int(data["wide_immediate"]["max_plain_add_sub"]),
        wide_imm_exempt=frozenset(data["wide_immediate"]["exempt"]),
        fetch_bytes=int(data["fetch_bytes"]),
    )


@dataclass(slots=True, eq=False)
class M7Op:
    """What the scoreboard needs about one instruction (derived once per Instr)."""

    group: str
    units: tuple[int, ...]
    slot0: bool
    single: bool
    reads: tuple[tuple[int, int, bool], ...]  # (reg, advance, read early if a load wrote it)
    writes: tuple[tuple[int, int, bool], ...]  # (reg, latency after issue, loaded data)
    occupancy: int  # issue cycles held (>= 1)
    branch: int  # NOT_BRANCH / COND / DIRECT / INDIRECT
    unz: tuple[tuple[int, int], ...] = ()  # (unit index, count) of the units it uses
    fits: bool = True  # its unit counts within the core's (else it never pairs after)


def _operands(ins: Instr) -> list[str]:
    _, _, rest = ins.text.partition(" ")
    if "[" not in rest and "{" not in rest:  # no nesting: a plain split (same pieces)
        parts = rest.split(",")
        if not parts[-1].strip():
            parts.pop()
        return [s.strip() for s in parts]
    out, depth, cur = [], 0, []
    for ch in rest:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


def _imm_of(tok: str) -> int | None:
    t = tok.strip()
    if not t.startswith("#"):
        return None
    try:
        return int(t[1:], 0)
    except ValueError:
        return None


def plain_immediate(v: int, mn: str, max_plain: int, max_add_sub: int, exempt) -> bool:
    """An immediate the ALU takes without the shifter ([Q], [JNK] operand2 forms: 8-bit,
    12-bit ADDW/SUBW, replicated byte patterns); otherwise a "shifted constant"."""
    v &= 0xFFFFFFFF
    if mn in exempt or v <= max_plain or (-v) & 0xFFFFFFFF <= max_plain:
        return True
    if mn in ("add", "sub") and v <= max_add_sub:
        return True
    b = v & 0xFF
    return v in (b * 0x00010001, (b << 8) * 0x00010001, b * 0x01010101)


def operand2(ins: Instr) -> tuple[int | None, list[int]]:
    """(register shifted by a shift-spec operand or None, immediates) of an ALU instruction."""
    ops = _operands(ins)
    shifted = None
    for k, o in enumerate(ops):
        if k >= 2 and _SHIFT_SPEC.match(o):
            shifted = _reg(ops[k - 1])
    return shifted, [v for o in ops if (v := _imm_of(o)) is not None]


def decode(ins: Instr, p: M7Params) -> M7Op:
    """Map an instruction to its issue group, units, operand timing and results."""
    mn = ins.mnemonic
    grp = p.by_mnemonic.get(mn) or p.class_groups.get(ins.cls)
    if grp is None:
        raise ValueError(f"cortex-m7: no timing for instruction class {ins.cls!r} ({ins.text})")
    units = list(grp.units)
    early_adv = int(p.adv["early"])
    reads: dict[int, tuple[int, bool]] = {}

    def read(r: int, adv: int, from_load: bool = False) -> None:
        old = reads.get(r)
        if old is None or adv < old[0]:
            reads[r] = (adv, from_load or (old[1] if old else False))
        elif old is not None and from_load:
            reads[r] = (old[0], True)

    shifted_reg = None
    flag_lat = int(p.lat["alu"])
    if grp.name == "alu":
        shifted_reg, imms = operand2(ins)
        wide = any(
            not plain_immediate(v, mn, p.wide_imm_max, p.wide_imm_max_add_sub, p.wide_imm_exempt)
            for v in imms
        )
        pure_shift = mn == "mov" and shifted_reg is not None  # MOV Rd, Rm, ror #n = ROR
        if (shifted_reg is not None and not pure_shift) or wide:
            units[_U["shift"]] = 1
        if shifted_reg is not None and mn in _FLAG_SETTERS:
            flag_lat = int(p.lat["flags_shifted"])

    mem = ins.mem
    addr = set(mem.addr_regs) if (mem is not None and not mem.literal) else set()
    srcs = tuple(r for r in ins.srcs if r < 16)  # core registers only
    acc: set[int] = set()
    if grp.accumulate:
        spec = isa_table()[mn]
        acc = set(ins.dests) if spec["form"] == "long" else ({srcs[-1]} if srcs else set())
    # operands read in EX2 of an instruction that reads another operand early cannot take
    # a word load from the previous cycle; neither can multiplicands ([LLVM]
    # M7Ex1ReadNoFastBypass, [JNK])
    load_sensitive = grp.early in ("all", "second") or grp.units[_U["mac"]] > 0
    pure_shift = grp.name == "alu" and mn == "mov" and shifted_reg is not None
    if grp.name == "alu" and shifted_reg is not None and not pure_shift:
        load_sensitive = True
    for k, r in enumerate(srcs):
        if r == PC:
            continue
        if grp.early == "all":
            read(r, early_adv)
        elif grp.early == "address" and r in addr:
            read(r, early_adv)
        elif grp.early == "second" and k == 1:
            read(r, early_adv)
        elif grp.accumulate and r in acc:
            read(r, int(p.adv["accumulate"]))
        elif grp.store_data and r not in addr:
            read(r, int(p.adv["store_data"]))
        elif r == shifted_reg and not pure_shift:
            read(r, early_adv)
        else:
            read(r, 0, load_sensitive)
    # conditional execution and carry-in read the flags
    if ins.cond is not None or mn in _CARRY_READERS:
        read(FLAGS, 0)

    # results
    writes: list[tuple[int, int, bool]] = []
    is_load = grp.name in ("load", "load_excl", "load_sub", "load_dual", "load_multi")
    occupancy = 1
    branch = NOT_BRANCH
    data_dests = tuple(r for r in ins.dests if r < 16)
    if mem is not None and mem.writeback and mem.base in ins.dests:
        data_dests = tuple(r for r in ins.dests if r != mem.base)
        writes.append((mem.base, int(p.lat["base_update"]), False))
    if grp.occupancy == "multi":
        n = mem.nregs if mem is not None else 1
        occupancy = max(1, -(-n // p.multi_regs_per_cycle))
        for j, r in enumerate(r for r in data_dests if r != PC):
            writes.append((r, j // p.multi_regs_per_cycle + grp.latency, True))
    elif grp.occupancy == "div":
        occupancy = int(p.lat["div"])
        writes.extend((r, occupancy, False) for r in data_dests)
    elif grp.occupancy == "table_branch":
        occupancy = p.table_branch_cycles
    else:
        writes.extend((r, grp.latency, is_load) for r in data_dests if r != PC)
    if ins.setflags or mn in _FLAG_SETTERS:
        writes.append((FLAGS, flag_lat, False))

    cls = ins.cls
    if cls in ("branch", "cbz"):
        branch = COND if (ins.cond is not None or cls == "cbz") else DIRECT
    elif cls == "branch_call":
        branch = DIRECT
    elif cls in ("branch_reg", "table_branch") or ins.writes_pc:
        branch = INDIRECT
    return M7Op(
        group=grp.name,
        units=tuple(units),
        slot0=grp.slot0,
        single=grp.single,
        reads=tuple((r, a, fl) for r, (a, fl) in sorted(reads.items())),
        writes=tuple(writes),
        occupancy=occupancy,
        branch=branch,
        unz=tuple((i, c) for i, c in enumerate(units) if c),
        fits=all(u <= c for u, c in zip(units, p.caps, strict=True)),
    )


_EMPTY_USED = (0,) * len(UNITS)


def initial_m7_state():
    # (ready times relative to the last issue cycle, clamped at -1; registers last written
    # by a load; earliest next issue relative to the last issue cycle (0 = the last cycle
    # still has a free slot); units used in the last cycle when it is open)
    return ((-1,) * FLAGS + (-load_params().flags_early,), 0, 1, _EMPTY_USED)


class M7State:
    """A scoreboard state (the tuple of :func:`initial_m7_state`'s form), interned by the
    timing model: equal states are one object, so the per-block cache hashes it by
    identity instead of hashing the tuple on every lookup."""

    __slots__ = ("t",)

    def __init__(self, t: tuple) -> None:
        self.t = t

    def __repr__(self) -> str:
        return f"M7State({self.t!r})"


class CortexM7Timing(CoreTiming):
    """Dual-issue scoreboard of the Cortex-M7 (0-wait TCM memory)."""

    name = "cortex-m7"

    def __init__(self, params: M7Params | None = None) -> None:
        self.p = params or load_params()
        self.fetch_bytes = self.p.fetch_bytes  # read by mcusim/cache.py fetch_bytes_of
        self._ops: dict[Instr, M7Op] = {}
        self._bops: dict[Block, tuple] = {}  # per Block object: its instructions' steps
        self._states: dict[tuple, M7State] = {}
        self._cache: dict = {}

    def op(self, ins: Instr) -> M7Op:
        o = self._ops.get(ins)
        if o is None:
            o = self._ops[ins] = decode(ins, self.p)
        return o

    def _steps(self, instrs) -> tuple:
        """Per instruction what the scoreboard reads: (reads, units used as (index, count)
        pairs, units, whether they fit the unit counts, slot0 or single, single, writes,
        occupancy, branch kind, taken)."""
        ops = self._ops
        out = []
        for ins in instrs:
            o = ops.get(ins)
            if o is None:
                o = ops[ins] = decode(ins, self.p)
            out.append(
                (o.reads, o.unz, o.units, o.fits, o.single or o.slot0, o.single, o.writes,
                 o.occupancy, o.branch, bool(ins.taken))
            )  # fmt: skip
        return tuple(out)

    def _state(self, t: tuple) -> M7State:
        s = self._states.get(t)
        if s is None:
            s = self._states[t] = M7State(t)
        return s

    def initial_state(self):
        return self._state(initial_m7_state())

    def block_cycles(self, block: Block, state, last_taken):
        key = (block, state, last_taken)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        steps = self._bops.get(block)
        if steps is None:
            steps = self._bops[block] = self._steps(block.instrs)
        res = self._scoreboard(steps, state, last_taken, None)
        self._cache[key] = res
        return res

    def sequence_cycles(self, instrs: tuple[Instr, ...], state=None) -> int:
        """Cycles of a straight-line sequence from an idle pipeline (tests, diagnostics)."""
        return self.run(instrs, self.initial_state() if state is None else state, None)[0]

    def step(self, ins: Instr, state, taken: bool | None):
        """One instruction -> (cycles, state); ``taken`` not None marks a loop back edge."""
        return self.run((ins,), state, taken)

    def issue_cycles(self, instrs: tuple[Instr, ...], state=None) -> list[tuple[int, int]]:
        """(cycle, slot) of every instruction of a sequence (diagnostics and tests)."""
        out: list[tuple[int, int]] = []
        self.run(instrs, self.initial_state() if state is None else state, None, out)
        return out

    # -- the scoreboard ------------------------------------------------------------------
    def run(self, instrs, state, last_taken, trace: list | None = None):
        """(cycles, exit state) of ``instrs`` entered in ``state`` (an interned state or
        its tuple); ``trace`` collects (cycle, slot) per instruction."""
        return self._scoreboard(self._steps(instrs), state, last_taken, trace)

    def _scoreboard(self, steps, state, last_taken, trace):
        p = self.p
        caps = p.caps
        after_load = int(p.adv["unshifted_after_load"])
        rel_ready, loadmask, nxt, used = state.t if isinstance(state, M7State) else state
        ready = list(rel_ready)
        used = list(used)
        # every unit count of the last cycle within its cap (then a pair needs to check
        # only the units the younger instruction uses)
        used_fits = all(u <= c for u, c in zip(used, caps, strict=True))
        t_last = 0
        n = len(steps)
        for k, step in enumerate(steps):
            reads, unz, units, fits, alone, single, writes, occ, branch, ins_taken = step
            t_ops = -(10**9)
            for r, adv, from_load in reads:
                a = min(adv, after_load) if (from_load and (loadmask >> r) & 1) else adv
                v = ready[r] - a
                if v > t_ops:
                    t_ops = v
            paired = False
            if nxt == 0 and not alone and t_ops <= t_last and used_fits:
                paired = True
                for i, c in unz:
                    if used[i] + c > caps[i]:
                        paired = False
                        break
            if paired:
                t = t_last
                for i, c in unz:
                    used[i] += c
            else:
                t = max(t_last + max(nxt, 1), t_ops)
                used = list(units)
                used_fits = fits
            if trace is not None:
                trace.append((t, 1 if paired else 0))
            for r, lat, loaded in writes:
                ready[r] = t + lat
                if loaded:
                    loadmask |= 1 << r
                else:
                    loadmask &= ~(1 << r)
            t_last = t
            # what may follow in this cycle
            if paired or single or occ > 1:
                nxt = 1
                t_last = t + occ - 1
            else:
                nxt = 0
            if branch != NOT_BRANCH:
                back_edge = k == n - 1 and last_taken is not None
                if branch == COND:
                    taken = last_taken if back_edge else ins_taken
                    # a back edge is predicted taken, a forward branch not taken
                    mispredicted = (not taken) if back_edge else taken
                    penalty = 0
                    if mispredicted:
                        penalty = p.mispredict
                        reads_flags = any(r == FLAGS for r, _, _ in reads)
                        if reads_flags and ready[FLAGS] > t - (p.flags_early - 1):
                            penalty = p.mispredict_late_flags
                elif branch == DIRECT:
                    taken, penalty = True, p.direct
                else:
                    taken, penalty = True, p.indirect
                if taken or penalty:
                    # the target starts a new cycle (after the refill, if any)
                    t_last += penalty
                    nxt = 1
        # ready times older than any reader can look back are all alike: clamp them (the
        # flags further back: the mispredict cost looks flags_early cycles back)
        exit_ready = tuple(max(v - t_last, -1) for v in ready[:FLAGS]) + (
            max(ready[FLAGS] - t_last, -p.flags_early),
        )
        exit_used = tuple(used) if nxt == 0 else _EMPTY_USED
        return t_last, self._state((exit_ready, loadmask, nxt, exit_used))
