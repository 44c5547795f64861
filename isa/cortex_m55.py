"""Cortex-M55 timing: the MVE beat model plus a scalar in-order pipeline (isa/cortex_m55.toml).

MVE ("Helium") on the M55 is dual-beat: each vector instruction holds one of four EPU
pipes (load/store, integer, FP/MUL, system) for two cycles, one 64-bit half per cycle. The
next instruction may start one cycle later when it uses another pipe (its first beat
overlaps the second beat of the previous one) and two cycles later on the same pipe, so
back-to-back loads serialize (LLVM ARMScheduleM55.td: VLDR;VADD;VMUL;VSTR = 5 cycles,
VLDR;VLDRB;VADD;VSTR = 6). Results become usable ``latency`` cycles after an instruction
starts; stores read their data one cycle late; gathers read their vector offsets four
cycles early.

The evaluation is an issue-time simulation: ``now`` is the earliest cycle the next
instruction may start; every instruction starts at max(now, its pipe free, its operands
ready). The pipeline state carried between blocks (pipe free times, pending register
writes, a possible dual-issue partner, the cached low-overhead loop) is relative to
``now`` so blocks and loop iterations are timed once per distinct entry state.

:class:`BeatTiming` is shared with the Cortex-M85 model (isa/cortex_m85.py), which only
changes the data (pipes, latencies) and the scalar issue/branch rules.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources

from .asm import LR, PC, QBASE, Instr
from .schedule import Block, Program
from .timing import CoreTiming, TimingResult

_SHIFTED = re.compile(r",\s*(lsl|lsr|asr|ror|rrx)\b", re.IGNORECASE)
_SCALAR_FP = frozenset(("fp", "fp_mac", "fp_div"))
_MULTI = frozenset(("load_dual", "store_dual", "load_multi", "store_multi"))
_BRANCHES = frozenset(("branch", "cbz", "branch_call", "branch_reg", "table_branch"))


@dataclass(frozen=True)
class BeatParams:
    """What a beat-model core needs, loaded from its TOML."""

    mve_classes: dict  # class -> (pipe index, occupancy, latency, nofwd, hi_extra, acc_advance)
    pipes: tuple[str, ...]
    store_data_advance: int
    gather_offset_advance: int
    scalar_latency: dict
    latency_overrides: dict
    load_latency_by_bytes: dict  # element bytes -> latency (empty: scalar_latency["load"])
    multi_base: int
    div_default_cycles: int
    div_min_cycles: int
    div_max_cycles: int
    branch_refill: int
    ldr_pc_refill: int
    le_first_extra: int
    dual_issue: str  # "t16" (M55) or "superscalar" (M85)
    dual_issue_mnemonics: frozenset
    address_advance: int  # scalar load/store address operands read this many cycles late
    mac_acc_advance: int  # scalar MAC accumulator operand read this many cycles late
    predict_back_edges: bool
    single_issue_classes: frozenset
    slot0_classes: frozenset
    slot0_mnemonics: frozenset
    mac_classes: frozenset
    fp_pipe: str
    base_update_latency: int  # scalar post/pre-indexed base register written back after this
    mve_base_update_latency: int  # the same for VLDR/VSTR
    fetch_bytes: int  # bytes per instruction fetch (top-level key of the TOML)


def load_beat_params(filename: str) -> BeatParams:
    data = tomllib.loads(resources.files("mcusim.isa").joinpath(filename).read_text())
    mve = data["mve"]
    classes = mve["classes"]
    pipes = tuple(sorted({c["pipe"] for c in classes.values()}))
    table = {
        name: (
            pipes.index(c["pipe"]),
            int(c["occupancy"]),
            int(c["latency"]),
            bool(c.get("nofwd", False)),
            int(c.get("hi_extra", 0)),
            int(c.get("acc_advance", 0)),
        )
        for name, c in classes.items()
    }
    sc = dict(data["scalar"])
    overrides = dict(sc.pop("latency_overrides", {}))
    issue = dict(sc.pop("issue", {}))
    by_bytes = {int(k): int(v) for k, v in sc.pop("load_latency_by_bytes", {}).items()}
    r = data["rules"]
    di = data.get("dual_issue", {})
    return BeatParams(
        mve_classes=table,
        pipes=pipes,
        store_data_advance=int(mve["store_data_advance"]),
        gather_offset_advance=int(mve["gather_offset_advance"]),
        scalar_latency=sc,
        latency_overrides=overrides,
        load_latency_by_bytes=by_bytes,
        multi_base=int(issue["multi_base"]),
        div_default_cycles=int(issue["div_default_cycles"]),
        div_min_cycles=int(issue["div_min_cycles"]),
        div_max_cycles=int(issue["div_max_cycles"]),
        branch_refill=int(r["branch_refill"]),
        ldr_pc_refill=int(r["ldr_pc_refill"]),
        le_first_extra=int(r["le_first_extra"]),
        dual_issue=str(r["dual_issue"]),
        dual_issue_mnemonics=frozenset(r.get("dual_issue_mnemonics", ())),
        address_advance=int(r.get("address_advance", 0)),
        mac_acc_advance=int(r.get("mac_acc_advance", 0)),
        predict_back_edges=bool(r.get("predict_back_edges", False)),
        single_issue_classes=frozenset(di.get("single_issue_classes", ())),
        slot0_classes=frozenset(di.get("slot0_classes", ())),
        slot0_mnemonics=frozenset(di.get("slot0_mnemonics", ())),
        mac_classes=frozenset(di.get("mac_classes", ())),
        fp_pipe=str(r.get("scalar_fp_pipe", "fpmul")),
        base_update_latency=int(r["base_update_latency"]),
        mve_base_update_latency=int(mve["base_update_latency"]),
        fetch_bytes=int(data["fetch_bytes"]),
    )


@lru_cache(maxsize=1)
def load_params() -> BeatParams:
    return load_beat_params("cortex_m55.toml")


# decoded instruction kinds
_MVE, _SCALAR, _BRANCH, _LOOP_START, _LOOP_END = range(5)


@dataclass(frozen=True, slots=True)
class _Rec:
    """An instruction decoded once for the timing loop."""

    kind: int
    pipe: int  # MVE pipe index (-1: none)
    occupancy: int  # MVE: cycles the pipe is held; scalar: issue cycles
    latency: int
    dests: tuple[int, ...]
    srcs: tuple[tuple[int, int], ...]  # (register, read advance: + late, - early)
    wb_base: int  # post/pre-indexed base register (-1: none)
    hi_dest: int  # second destination with extra latency (-1: none)
    hi_extra: int
    nofwd: bool
    size16: bool
    di: bool  # a dual-issue candidate (M55 T1 rule)
    single: bool  # never paired
    slot0: bool
    mac: bool
    loads: int
    stores: int
    cond: bool  # conditional branch
    writes_pc: bool


class BeatTiming(CoreTiming):
    """Issue-time model of an in-order core with a beat-wise MVE unit."""

    name = "beat-core"

    def __init__(self, params: BeatParams | None = None) -> None:
        self.p = params or load_params()
        self.fetch_bytes = self.p.fetch_bytes  # read by mcusim/cache.py fetch_bytes_of
        self._cache: dict = {}
        self._recs: dict = {}
        self._exit_state = None
        # a pending write matters while some operand may still read it early
        self._early = min(0, self.p.gather_offset_advance, -self.p.address_advance)
        self._max_explicit = 16  # loop-head states remembered before assuming steady state

    # ------------------------------------------------------------------ state
    def initial_state(self):
        # (pipe free times, pending register writes ((reg, ready, nofwd),...),
        #  dual-issue partner (dests, di, size16, single, slot0, mac, loads, stores) or None,
        #  cached loop-end text or None); all times relative to "now".
        return ((0,) * len(self.p.pipes), (), None, None)

    # ------------------------------------------------------------------ decoding
    def _rec(self, ins: Instr) -> _Rec:
        rec = self._recs.get(ins)
        if rec is None:
            rec = self._recs[ins] = self._decode(ins)
        return rec

    def _scalar_latency(self, ins: Instr) -> int:
        p = self.p
        if ins.mnemonic in p.latency_overrides:
            return int(p.latency_overrides[ins.mnemonic])
        cls = ins.cls
        if cls == "alu" and _SHIFTED.search(ins.text):
            return int(p.scalar_latency["alu_shifted"])
        if cls == "load" and ins.mem is not None and p.load_latency_by_bytes:
            return p.load_latency_by_bytes.get(ins.mem.elem_bytes, int(p.scalar_latency[cls]))
        return int(p.scalar_latency[cls])

    def _decode(self, ins: Instr) -> _Rec:
        p = self.p
        cls = ins.cls
        mem = ins.mem
        wb = mem.base if (mem is not None and mem.writeback and mem.base < QBASE) else -1
        loads = 1 if (mem is not None and mem.is_load) else 0
        stores = 1 if (mem is not None and not mem.is_load) else 0
        common = dict(
            wb_base=wb,
            hi_dest=-1,
            hi_extra=0,
            nofwd=False,
            size16=ins.size == 2,
            di=False,
            single=False,
            slot0=False,
            mac=False,
            loads=loads,
            stores=stores,
            cond=ins.cond is not None or cls == "cbz",
            writes_pc=ins.writes_pc,
        )
        if ins.is_mve:
            if cls not in p.mve_classes:
                raise ValueError(f"{self.name}: no timing for MVE class {cls!r} ({ins.text})")
            pipe, occ, lat, nofwd, hi, acc_adv = p.mve_classes[cls]
            srcs = []
            data_reg = ins.srcs[0] if cls in ("mve_store", "mve_scatter", "mve_stn") else -1
            addr_q = (
                set(mem.addr_regs)
                if (mem is not None and cls.endswith(("gather", "scatter")))
                else set()
            )
            for k, r in enumerate(ins.srcs):
                adv = 0
                if k == 0 and r == data_reg:
                    adv = p.store_data_advance
                elif r in addr_q and r >= QBASE:
                    adv = p.gather_offset_advance
                elif r < QBASE and r in ins.dests:
                    adv = acc_adv  # accumulating into a general register (VMLADAVA, ...)
                srcs.append((r, adv))
            dests = tuple(d for d in ins.dests if d != wb)
            hi_dest = dests[1] if (hi and len(dests) > 1) else -1
            common.update(nofwd=nofwd, hi_dest=hi_dest, hi_extra=hi, single=True, slot0=True)
            return _Rec(_MVE, pipe, occ, lat, dests, tuple(srcs), **common)
        if cls in ("loop_start", "loop_end"):
            common.update(single=True)  # LOB instructions issue alone
        if cls == "loop_start":
            return _Rec(
                _LOOP_START, -1, 1, int(p.scalar_latency["loop_start"]), ins.dests,
                tuple((r, 0) for r in ins.srcs), **common,
            )  # fmt: skip
        if cls == "loop_end":
            return _Rec(_LOOP_END, -1, 0, 0, (), (), **common)
        lat = self._scalar_latency(ins)
        occ = 1
        if cls in _MULTI:
            occ = p.multi_base + mem.nregs
        elif cls == "div":
            c = ins.annotation("div", p.div_default_cycles)
            occ = min(max(c, p.div_min_cycles), p.div_max_cycles)
        srcs = []
        addr = set(mem.addr_regs) if (mem is not None and not mem.literal) else set()
        acc = ins.srcs[-1] if (ins.mnemonic.startswith(("sml", "mla", "mls", "usada"))) else -1
        for r in ins.srcs:
            adv = 0
            if r in addr:
                adv = -p.address_advance
            elif r == acc:
                adv = p.mac_acc_advance
            srcs.append((r, adv))
        pipe = p.pipes.index(p.fp_pipe) if (cls in _SCALAR_FP and p.fp_pipe in p.pipes) else -1
        kind = _BRANCH if (cls in _BRANCHES or ins.writes_pc) else _SCALAR
        mn = ins.mnemonic
        di = ins.size == 2 and mn in p.dual_issue_mnemonics
        if mn in ("add", "sub") and "#" not in ins.text:
            di = False
        common.update(
            di=di,
            single=cls in p.single_issue_classes or cls in _MULTI or kind != _SCALAR,
            slot0=cls in p.slot0_classes or mn in p.slot0_mnemonics,
            mac=cls in p.mac_classes or mn.startswith(("smla", "smlsd", "smlal", "smul")),
        )
        dests = tuple(d for d in ins.dests if d != wb)
        return _Rec(kind, pipe, occ, lat, dests, tuple(srcs), **common)

    # ------------------------------------------------------------------ pairing
    def _pairs(self, prev, rec: _Rec) -> bool:
        """Can ``rec`` issue in the same cycle as the previous lone instruction?"""
        pdests, pdi, p16, psingle, _pslot0, pmac, ploads, pstores = prev
        if rec.kind in (_MVE, _LOOP_START, _LOOP_END) or psingle:
            return False
        if any(r in pdests for r, _ in rec.srcs):
            return False
        if self.p.dual_issue == "t16":
            return p16 and rec.size16 and (pdi or rec.di)
        # superscalar: both general-purpose, resource limits of the pair
        if rec.single or rec.slot0:  # slot-0-only instructions must be the older one
            return False
        if pmac and rec.mac:
            return False
        if ploads + rec.loads > 2 or pstores + rec.stores > 2:
            return False
        return True

    # ------------------------------------------------------------------ timing
    def block_cycles(self, block: Block, state, last_taken):
        key = (block, state, last_taken)
        hit = self._cache.get(key)
        if hit is not None:
            self._exit_state = hit[1]
            return hit
        res = self._run(block.instrs, state, last_taken, backedge_last=last_taken is not None)
        self._cache[key] = res
        self._exit_state = res[1]
        return res

    def _run(self, instrs, state, last_taken, backedge_last: bool):
        p = self.p
        pipes = list(state[0])
        ready: dict[int, tuple[int, bool]] = {r: (t, nf) for r, t, nf in state[1]}
        prev = state[2]
        lob = state[3]
        now = 0
        prev_start = -1
        n = len(instrs)
        for k, ins in enumerate(instrs):
            rec = self._rec(ins)
            # earliest cycle the operands allow
            opnd = -(1 << 30)  # no operand constraint
            for r, adv in rec.srcs:
                rt = ready.get(r)
                if rt is not None:
                    t, nf = rt
                    if adv > 0 and nf:
                        adv = 0
                    opnd = max(opnd, t - adv)
            if rec.kind == _MVE:
                start = max(now, pipes[rec.pipe], opnd)
                pipes[rec.pipe] = start + rec.occupancy
                for d in rec.dests:
                    ready[d] = (start + rec.latency, rec.nofwd)
                if rec.hi_dest >= 0:
                    ready[rec.hi_dest] = (start + rec.latency + rec.hi_extra, rec.nofwd)
                if rec.wb_base >= 0:
                    ready[rec.wb_base] = (start + p.mve_base_update_latency, False)
                now = start + 1
                prev, prev_start = None, start
                continue
            if rec.kind == _LOOP_END:
                if lob == ins.text:
                    prev = None  # handled by the fetch stage: no issue slot
                    continue
                start = max(now, opnd)
                if ins.taken is False:  # the only iteration: LE falls through, no refill
                    now, lob, prev = start + 1, None, None
                    continue
                now = start + 1 + p.le_first_extra
                lob, prev = ins.text, None
                continue
            # scalar: try to pair with the previous lone instruction
            if (
                prev is not None
                and prev_start == now - 1
                and opnd <= prev_start
                and self._pairs(prev, rec)
                and (rec.pipe < 0 or pipes[rec.pipe] <= prev_start)
            ):
                start = prev_start
                paired = True
            else:
                start = max(now, opnd)
                if rec.pipe >= 0:
                    start = max(start, pipes[rec.pipe])
                paired = False
            if rec.pipe >= 0:
                pipes[rec.pipe] = start + 1
            for d in rec.dests:
                ready[d] = (start + rec.latency, False)
            if rec.wb_base >= 0:
                ready[rec.wb_base] = (start + p.base_update_latency, False)
            end = start + (0 if paired else rec.occupancy)
            if rec.kind == _LOOP_START:
                lob = None
            if rec.kind == _BRANCH or rec.writes_pc:
                taken = last_taken if (k == n - 1 and last_taken is not None) else None
                if taken is None:
                    taken = ins.taken if ins.taken is not None else not rec.cond
                backedge = backedge_last and k == n - 1
                end = max(end, start + 1) + self._branch_extra(ins, rec, taken, backedge)
                prev = None
            else:
                prev = (
                    None
                    if paired
                    else (
                        rec.dests + ((rec.wb_base,) if rec.wb_base >= 0 else ()),
                        rec.di,
                        rec.size16,
                        rec.single,
                        rec.slot0,
                        rec.mac,
                        rec.loads,
                        rec.stores,
                    )
                )
            now = max(now, end)
            prev_start = start
        # normalise the exit state to the new "now"
        pipes_rel = tuple(max(0, t - now) for t in pipes)
        early = self._early  # operands read early (gathers, addresses) still wait
        pend = tuple(sorted((r, t - now, nf) for r, (t, nf) in ready.items() if t - now > early))
        keep_prev = prev if (prev is not None and prev_start == now - 1) else None
        return now, (pipes_rel, pend, keep_prev, lob)

    def _branch_extra(self, ins: Instr, rec: _Rec, taken: bool, backedge: bool) -> int:
        """Cycles a branch adds after its issue cycle (pipeline refill)."""
        p = self.p
        if ins.cls == "load_multi" or (ins.cls == "load" and PC in ins.dests):
            return p.ldr_pc_refill
        if not taken:
            if backedge and p.predict_back_edges:
                return p.branch_refill  # predicted taken, falls through: mispredict
            return 0
        if backedge and p.predict_back_edges:
            return 0
        return p.branch_refill

    # ------------------------------------------------------------------ loops
    def _loop(self, loop, state, mult: int, loops):
        """Loop evaluation until the entry state repeats, then whole periods at once.

        The generic evaluator (isa/timing.py) times iterations 2..n from the state after
        the first; here the first iteration of a low-overhead loop ends with a refill that
        hides pipe occupancy, so iteration 2 is not yet the steady state. Iterating until
        the pipeline state at the loop head repeats keeps the result equal to an unrolled
        walk while the cost stays independent of trip counts."""
        n = loop.count
        if n == 0 or not loop.body:
            return 0, state
        back = loop.has_back_edge
        body = loop.body
        total, i, st = 0, 0, state
        seen: dict = {}
        while i < n:
            last = i == n - 1
            lt = (not last) if back else None
            if not last:
                hit = seen.get(st)
                if hit is not None:
                    j, cj = hit
                    period, cyc = i - j, total - cj
                    k = (n - 1 - i) // period
                    if k > 0:
                        s2 = st  # replay one period to count the skipped inner-loop stats
                        for _ in range(period):
                            _, s2 = self._items(body, s2, lt, mult * k, loops)
                        total += k * cyc
                        i += k * period
                    seen.clear()
                    continue
                if len(seen) < self._max_explicit:
                    seen[st] = (i, total)
            c, st = self._items(body, st, lt, mult, loops)
            total += c
            i += 1
            if not last and len(seen) >= self._max_explicit and i < n - 1:
                # no repeat found: charge the remaining iterations at the last cost
                rest = n - 1 - i
                _, st2 = self._items(body, st, lt, mult * rest, loops)
                total += c * rest
                i += rest
                st = st2
        acc = loops.setdefault(loop.name, [0, 0])
        acc[0] += n * mult
        acc[1] += total * mult
        return total, st

    # ------------------------------------------------------------------ API
    def drain(self, state) -> int:
        """Cycles after the last issue until every pipe has finished its beats."""
        return max((0, *state[0]))

    def sequence_cycles(self, instrs: tuple[Instr, ...], state=None) -> int:
        """Cycles of a straight-line sequence until its last beat completes (tests)."""
        st = self.initial_state() if state is None else state
        c, st = self._run(instrs, st, None, backedge_last=False)
        return c + self.drain(st)

    def time(self, program: Program) -> TimingResult:
        self._exit_state = None
        res = super().time(program)
        if self._exit_state is not None:
            res = replace(res, cycles=res.cycles + self.drain(self._exit_state))
        return res


class CortexM55Timing(BeatTiming):
    """Cortex-M55: dual-beat MVE (4 EPU pipes), single-issue scalar with T1 pairs."""

    name = "cortex-m55"


__all__ = ["BeatParams", "BeatTiming", "CortexM55Timing", "load_beat_params", "LR"]
