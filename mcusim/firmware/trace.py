"""Trace-driven timing: cycles of compiled firmware from the blocks it really executed.

A :class:`Tracer` attached to a harness call (``h.call(fn, *args, trace=tracer)``) counts
the translation blocks Unicorn executes with a block hook keyed by (address, size) and the
transitions between them (toolchains.md §5: TBs are not basic blocks, so each TB is costed
from its own bytes). Each distinct TB is disassembled once (capstone) into the
:class:`~mcusim.isa.asm.Instr` records the simulator's schedules use and timed with the
SAME core model (``mcusim.isa.timing.core_timing(core).block_cycles``):

* the final branch of a TB is taken exactly when the next executed TB does not start at
  its fall-through address (from the recorded transitions);
* a TB enters with the exit state of its most frequent predecessor (fixed point over three
  passes); states only differ across a TB boundary in what the previous instruction was,
  and most TBs end in a branch, which resets the Cortex-M pipeline state.

Memory stalls: the ``flash`` region (code, .rodata, host constants) is the device memory
holding "constants" for data and "code" for instruction fetch, ``ram`` the "arena" memory
(an address keeps its offset from the region base). When the device has caches (L1 or a
flash accelerator, ``mcusim.cache.needs_simulation``) the firmware's real data addresses
(read/write hooks on the regions whose memory is cached or wait-stated) and every executed
TB's code bytes are fed, in program order, through :class:`mcusim.cache.TraceSim` -- the
simulator's own cache model -- and priced by ``mcusim.costs.layer_cost`` exactly as the
simulator prices its address streams. Without caches the first-order model of
mcusim/costs.py applies (``data_stall_cycles`` per region with the distinct bytes touched
as footprint, ``fetch_stall_cycles`` with the distinct code bytes executed; read hooks only
on wait-stated regions).

    tr = Tracer(device=load_device("stm32l4r5"))   # or Tracer(core="cortex-m4")
    res = h.call("fn", a, b, trace=tr).trace
    res.instructions, res.cycles, res.compute_cycles, res.stall_cycles, res.blocks
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from mcusim.isa.asm import AsmError, Instr
from mcusim.isa.asm import parse_line as arm_parse_line
from mcusim.isa.schedule import Block
from mcusim.isa.timing import core_timing

# capstone spellings the schedule parser knows under another name
_ARM_ALIASES = {"addw": "add", "subw": "sub", "ldmia": "ldm", "stmia": "stm"}


@dataclass
class TraceResult:
    instructions: int
    compute_cycles: int  # core timing model, zero-wait memory
    stall_cycles: int  # memory wait states (first-order model)
    blocks: dict[tuple[int, int], int]  # (address, size) -> times executed
    block_instrs: dict[tuple[int, int], int]  # (address, size) -> instructions in the TB
    code_bytes: int  # distinct code bytes executed
    read_bytes: dict[str, int]  # "total" + regions hooked (memory with wait states) -> bytes
    core: str = ""
    unmodeled: dict[str, int] = field(default_factory=dict)  # mnemonic -> times executed
    # cache levels simulated on the trace (devices with caches): level -> hits, misses,
    # writebacks, seq_misses (mcusim.costs.LayerCacheStats.levels)
    cache: dict[str, dict[str, int]] = field(default_factory=dict)
    write_bytes: dict[str, int] = field(default_factory=dict)  # region -> bytes (cached)

    @property
    def cycles(self) -> int:
        return self.compute_cycles + self.stall_cycles

    def to_dict(self) -> dict:
        """JSON-ready summary (blocks as "0xADDR+SIZE" -> executions)."""
        return {
            "core": self.core,
            "instructions": self.instructions,
            "cycles": self.cycles,
            "compute_cycles": self.compute_cycles,
            "stall_cycles": self.stall_cycles,
            "code_bytes": self.code_bytes,
            "read_bytes": dict(self.read_bytes),
            "blocks": {f"{a:#x}+{s}": n for (a, s), n in sorted(self.blocks.items())},
            "unmodeled": dict(self.unmodeled),
            "cache": {k: dict(v) for k, v in self.cache.items()},
        }


def _arm_instr(mn: str, ops: str, size: int) -> tuple[Instr, str | None]:
    """capstone text -> Instr (the asm.py record); an unknown mnemonic becomes a 1-cycle
    ALU instruction and is reported by name."""
    base = mn.split(".")[0]
    if base in _ARM_ALIASES:
        mn = _ARM_ALIASES[base] + mn[len(base) :]
    elif base == "adr":
        reg, _, imm = ops.partition(",")
        mn, ops = "add", f"{reg}, pc, {imm.strip()}"
    try:
        ins = arm_parse_line(f"{mn} {ops}".strip(), "firmware")
    except AsmError:
        ins = None
    if ins is None:
        ins = arm_parse_line("nop", "firmware")
        return replace(ins, text=f"{mn} {ops}", cls="alu", size=size), mn
    return replace(ins, size=size), None


_CS_ARM = None


def decode_arm(code: bytes, addr: int) -> tuple[tuple[Instr, ...], tuple[str, ...]]:
    """Thumb-2 bytes -> (Instr records, per instruction the unmodeled mnemonic or '')."""
    global _CS_ARM
    if _CS_ARM is None:
        from capstone import CS_ARCH_ARM, CS_MODE_MCLASS, CS_MODE_THUMB, Cs

        _CS_ARM = Cs(CS_ARCH_ARM, CS_MODE_THUMB | CS_MODE_MCLASS)
    out, unk = [], []
    off = 0
    while off < len(code):
        for _a, sz, mn, ops in _CS_ARM.disasm_lite(code[off:], addr + off):
            ins, u = _arm_instr(mn, ops, sz)
            out.append(ins)
            unk.append(u or "")
            off += sz
        if off < len(code):  # capstone stops at bytes it cannot decode
            hw = code[off : off + 2].hex()
            out.append(replace(arm_parse_line("nop", "firmware"), text=f".inst {hw}", size=2))
            unk.append(f".inst {hw}")
            off += 2
    return tuple(out), tuple(unk)


def _forward_branch(arch: str, code: bytes, addr: int, instrs) -> bool:
    """Whether the TB ends in a conditional branch whose target lies ahead of it."""
    if not instrs:
        return False
    last = instrs[-1]
    if last.cls == "cbz":
        return True  # CBZ/CBNZ only branch forward
    if last.cls != "branch" or last.cond is None:
        return False
    off = sum(i.size for i in instrs[:-1])
    at, raw = addr + off, code[off : off + last.size]
    try:
        if arch == "arm":
            ops = next(_CS_ARM.disasm_lite(raw, at))[3]
            return int(ops.split("#")[-1], 0) > at  # Thumb: absolute target
        from .riscv import _CS_RV, decode_custom

        got = next(_CS_RV.disasm_lite(raw, at), None) if _CS_RV is not None else None
        if got is not None:
            return int(got[3].split(",")[-1], 0) > 0  # RISC-V: relative offset
        return decode_custom(int.from_bytes(raw, "little"))[1][-1] > 0
    except (StopIteration, ValueError, IndexError, TypeError):
        return False


def region_map(device, harness) -> list[tuple]:
    """Where each harness region sits in the device's memories, as the cache model's
    global addresses: (region, base for data accesses, base for instruction fetch). Data in
    "flash" is the constants memory, in "ram" the arena; code is fetched from the code
    memory."""
    from mcusim.isa.addresses import global_address

    idx = {m.name: i for i, m in enumerate(device.memories)}
    code = device.memory_for("code")
    fbase = global_address(idx[code.name], code.base_address)
    out = []
    for reg in harness.regions:
        mem = device.memory_for("constants" if reg.name == "flash" else "arena")
        out.append((reg, global_address(idx[mem.name], mem.base_address), fbase))
    return out


def device_address(device, harness, addr: int, fetch: bool = False) -> int:
    """A harness address as the global address the cache model sees for it."""
    for reg, dbase, fbase in region_map(device, harness):
        if reg.contains(addr):
            return (fbase if fetch else dbase) + addr - reg.base
    raise ValueError(f"address {addr:#x} is in no harness region")


class Tracer:
    """Counts and times the TBs of one harness call at a time (reusable across calls; each
    call's result is separate). ``device`` gives the core model and the memories;
    ``core`` alone times with zero-wait memory."""

    # recorded accesses are fed to the cache model in batches of about this many
    FLUSH = 1 << 18

    def __init__(self, core: str | None = None, device=None, record: bool = False) -> None:
        if core is None and device is None:
            raise ValueError("Tracer needs a core name or a device")
        self.device = device
        self.cached = False
        if device is not None:
            from mcusim.cache import needs_simulation

            self.cached = needs_simulation(device)
        # record: keep the (global address, bytes, kind) arrays fed to the cache model
        # (``self.accesses`` after the call), for tests and debugging
        self.record = record
        self.accesses = None
        self.core = (core or device.core.name).lower()
        self.timing = core_timing(self.core)
        # TB -> (Block, instructions, unmodeled, read bytes, end address, forward branch)
        self._decoded: dict[tuple[int, int], tuple] = {}
        self._variants: dict = {}  # (TB, taken) -> Block with the final branch's outcome

    # -- hooks ---------------------------------------------------------------------------
    def begin(self, harness, budget: int) -> None:
        from unicorn import UC_HOOK_BLOCK, UC_HOOK_MEM_READ

        if getattr(self, "h", None) is not harness:
            self._decoded = {}  # TB keys are addresses: valid for one loaded image only
            self._variants = {}
        self.h = harness
        self.budget = budget
        self.edges: dict = {}
        self.prev = None
        self.pprev = None
        self.executed = 0
        self.region_reads: dict[str, list] = {}
        self._buf = None
        if self.cached:
            self._begin_cached(harness)
            harness.uc.ctl_flush_tb()
            return
        self._hooks = [harness.uc.hook_add(UC_HOOK_BLOCK, self._on_block)]
        for reg in harness.regions:
            mem = self._memory(reg.name, fetch=False)
            if mem is not None and mem.wait_states > 0:
                acc = [0, set(), max(mem.width_bits // 8, 1)]
                self.region_reads[reg.name] = acc
                self._hooks.append(
                    harness.uc.hook_add(
                        UC_HOOK_MEM_READ,
                        self._make_read_hook(acc),
                        begin=reg.base,
                        end=reg.end - 1,
                    )
                )
        harness.uc.ctl_flush_tb()  # hooks added after translation fire only after a flush

    def _begin_cached(self, harness) -> None:
        """Hooks for a device with caches: the block hook also records each TB's fetch, and
        read (and, behind an L1 D-cache, write) hooks record the data accesses of every
        region whose memory is cached or wait-stated, in one buffer in program order."""
        from unicorn import UC_HOOK_BLOCK, UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE

        from mcusim.cache import TraceSim
        from mcusim.costs import route

        dev = self.device
        self.sim = TraceSim.for_device(dev)
        self._buf = []
        self._fidx = -1
        self._recorded: list = []
        self.region_rw = {}  # region -> [read bytes, write bytes, reads, writes]
        self._map = region_map(dev, harness)
        buf = self._buf
        app = buf.append
        self._hooks = [harness.uc.hook_add(UC_HOOK_BLOCK, self._on_block_cached)]
        for reg, _, _ in self._map:
            mem = self._memory(reg.name, fetch=False)
            r = route(dev, mem)
            if r in ("tcm",) or (r == "direct" and mem.wait_states == 0):
                continue
            self.region_rw[reg.name] = [0, 0, 0, 0]

            def on_read(uc, access, address, size, value, ud):
                app((address << 24) | (size << 8))

            self._hooks.append(
                harness.uc.hook_add(UC_HOOK_MEM_READ, on_read, begin=reg.base, end=reg.end - 1)
            )
            if r == "l1":

                def on_write(uc, access, address, size, value, ud):
                    app((address << 24) | (size << 8) | 16)

                self._hooks.append(
                    harness.uc.hook_add(
                        UC_HOOK_MEM_WRITE, on_write, begin=reg.base, end=reg.end - 1
                    )
                )

    def _on_block_cached(self, uc, address, size, user_data) -> None:
        buf = self._buf
        if len(buf) >= self.FLUSH:
            self._flush()
        self._fidx = len(buf)
        buf.append((address << 24) | (size << 8) | 32)
        self._on_block(uc, address, size, user_data)

    def _flush(self) -> None:
        """Decode the recorded accesses (address << 24 | bytes << 8 | kind << 4), move them
        to the device's global addresses and feed them to the cache model."""
        buf = self._buf
        if not buf:
            return
        v = np.array(buf, dtype=np.int64)
        buf.clear()
        self._fidx = -1
        addr = v >> 24
        size = (v >> 8) & 0xFFFF
        kind = (v >> 4) & 0xF
        g = np.full(len(v), -1, dtype=np.int64)
        fetch = kind == 2
        for reg, dbase, fbase in self._map:
            inr = (addr >= reg.base) & (addr < reg.end)
            off = addr - reg.base
            g = np.where(inr, np.where(fetch, fbase, dbase) + off, g)
            acc = self.region_rw.get(reg.name)
            if acc is not None:
                rd = inr & (kind == 0)
                wr = inr & (kind == 1)
                acc[0] += int(size[rd].sum())
                acc[1] += int(size[wr].sum())
                acc[2] += int(rd.sum())
                acc[3] += int(wr.sum())
        self.sim.feed(g, size, kind)
        if self.record:
            self._recorded.append((g, size, kind))

    @staticmethod
    def _make_read_hook(acc):
        lines = acc[1]
        width = acc[2]

        def on_read(uc, access, address, size, value, ud):
            acc[0] += size
            lines.add(address // width)

        return on_read

    def end(self) -> None:
        for hk in self._hooks:
            self.h.uc.hook_del(hk)
        self._hooks = []
        self.h.uc.ctl_flush_tb()

    def _on_block(self, uc, address, size, user_data) -> None:
        key = (address, size)
        d = self._decoded.get(key)
        if d is None:
            d = self._decode(key)
        self.executed += d[1]
        e = (self.prev, key)
        edges = self.edges
        edges[e] = edges.get(e, 0) + 1
        self.pprev = self.prev
        self.prev = key
        if self.executed > self.budget:
            uc.emu_stop()

    def redirect(self, cut: int) -> None:
        """A hook moved the PC at address ``cut`` inside the current TB (a RISC-V hardware
        loop jumping back): this execution of the TB ran only its instructions before
        ``cut``, recorded as the TB (start, cut - start)."""
        k = self.prev
        if k is None or not (k[0] <= cut < k[0] + k[1]):
            return
        pp = self.pprev
        e = (pp, k)
        self.edges[e] -= 1
        if not self.edges[e]:
            del self.edges[e]
        self.executed -= self._decoded[k][1]
        if self._buf is not None and self._fidx >= 0:  # the TB fetched only up to the cut
            self._buf[self._fidx] = (k[0] << 24) | ((cut - k[0]) << 8) | 32
        if cut == k[0]:  # the TB had not started: the previous one ran last
            self.prev, self.pprev = pp, None
            return
        k2 = (k[0], cut - k[0])
        d2 = self._decoded.get(k2) or self._decode(k2)
        self.executed += d2[1]
        e2 = (pp, k2)
        self.edges[e2] = self.edges.get(e2, 0) + 1
        self.prev = k2

    def _decode(self, key):
        addr, size = key
        code = self.h.read(addr, size)
        if self.h.arch == "arm":
            instrs, unk = decode_arm(code, addr)
        else:
            from .riscv import decode_riscv

            instrs, unk = decode_riscv(code, addr)
        reads = sum(i.mem.nbytes for i in instrs if i.mem is not None and i.mem.is_load)
        fwd = _forward_branch(self.h.arch, code, addr, instrs)
        d = (Block(instrs, f"tb_{addr:#x}"), len(instrs), unk, reads, addr + size, fwd)
        self._decoded[key] = d
        return d

    def _cycles(self, key, state, taken: bool | None):
        """(cycles, exit state) of one execution of TB ``key``. A conditional branch that
        jumps forward is a schedule's ``{taken}`` branch (predicted not taken where the
        core predicts), a backward one a loop back edge (``last_taken``)."""
        d = self._decoded[key]
        if d[5] and taken is not None:
            vk = (key, taken)
            blk = self._variants.get(vk)
            if blk is None:
                ins = d[0].instrs
                blk = Block(ins[:-1] + (replace(ins[-1], taken=taken),), d[0].name)
                self._variants[vk] = blk
            return self.timing.block_cycles(blk, state, None)
        return self.timing.block_cycles(d[0], state, taken)

    # -- costing -------------------------------------------------------------------------
    def _memory(self, region: str, fetch: bool):
        if self.device is None:
            return None
        role = "code" if fetch else ("constants" if region == "flash" else "arena")
        return self.device.memory_for(role)

    def result(self) -> TraceResult:
        tm = self.timing
        dec = self._decoded
        blocks_seen = list(dict.fromkeys(k for _, k in self.edges))
        counts: dict = {}
        preds: dict = {}
        for (p, b), n in self.edges.items():
            counts[b] = counts.get(b, 0) + n
            if p is not None and (b not in preds or n > preds[b][1]):
                preds[b] = (p, n)
        init = tm.initial_state()
        entry = {k: init for k in blocks_seen}
        for _ in range(3):
            for k in blocks_seen:
                if k in preds:
                    q = preds[k][0]
                    taken = k[0] != dec[q][4]
                    entry[k] = self._cycles(q, entry[q], taken)[1]
        compute = 0
        for (p, b), n in self.edges.items():
            if p is not None:
                taken = b[0] != dec[p][4]
                compute += n * self._cycles(p, entry[p], taken)[0]
        if self.prev is not None:  # the last TB (ends with the return)
            compute += self._cycles(self.prev, entry[self.prev], None)[0]
        instructions = sum(dec[k][1] * n for k, n in counts.items())
        unmodeled: dict[str, int] = {}
        for k, n in counts.items():
            for u in dec[k][2]:
                if u:
                    unmodeled[u] = unmodeled.get(u, 0) + n
        # distinct code bytes (TBs may overlap: a loop TB inside a larger first TB)
        spans = sorted((k[0], dec[k][4]) for k in counts)
        code_bytes, hi = 0, -1
        for a, e in spans:
            if e > hi:
                code_bytes += e - max(a, hi)
                hi = e
        total_reads = sum(dec[k][3] * n for k, n in counts.items())
        read_bytes = {name: acc[0] for name, acc in self.region_reads.items()}
        stall = 0
        cache: dict = {}
        write_bytes: dict = {}
        if self.cached:
            stall, cache = self._cached_stalls(instructions, code_bytes)
            read_bytes = {name: acc[0] for name, acc in self.region_rw.items()}
            write_bytes = {name: acc[1] for name, acc in self.region_rw.items()}
        elif self.device is not None:
            from mcusim.costs import data_stall_cycles, fetch_stall_cycles

            for name, acc in self.region_reads.items():
                mem = self._memory(name, False)
                stall += data_stall_cycles(mem, acc[0], len(acc[1]) * acc[2])
            stall += fetch_stall_cycles(self._memory("flash", True), code_bytes, instructions)
        read_bytes["total"] = total_reads  # hooked regions are named; the rest is not split
        return TraceResult(
            instructions=instructions,
            compute_cycles=int(compute),
            stall_cycles=int(stall),
            blocks=counts,
            block_instrs={k: dec[k][1] for k in counts},
            code_bytes=code_bytes,
            read_bytes=read_bytes,
            core=self.core,
            unmodeled=unmodeled,
            cache=cache,
            write_bytes=write_bytes,
        )

    def _cached_stalls(self, instructions: int, code_bytes: int) -> tuple[int, dict]:
        """Stall cycles from the cache simulation of the recorded accesses, priced by
        ``mcusim.costs.layer_cost`` (the simulator's formulas; memories no cache level
        covers keep the first-order model there)."""
        from mcusim.costs import StreamUse, layer_cost

        self._flush()
        if self.record:
            rec = self._recorded
            self.accesses = tuple(
                np.concatenate([r[k] for r in rec]) if rec else np.zeros(0, np.int64)
                for k in range(3)
            )
        stats = self.sim.result().layer(0)
        # per region, a stream tag of the right memory role: flash data -> "constants"
        # (weights), ram -> "arena" (input)
        streams = {}
        for name, (rb, wb, nr, nw) in self.region_rw.items():
            tag = "weights" if name == "flash" else "input"
            streams[tag] = StreamUse(rb, wb, nr, nw)
        cost = layer_cost(self.device, 0, instructions, code_bytes, streams, {}, cache=stats)
        return int(cost.stall_cycles), {k: dict(v) for k, v in stats.levels.items()}
