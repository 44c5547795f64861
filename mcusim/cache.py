"""Set-associative cache simulation (numba) on the address streams of compiled schedules.

Caches: ``sets x ways`` lines of ``line_bytes``; replacement LRU, random (xorshift, seeded,
deterministic) or round-robin (per-set pointer); an invalid way is always filled first.
Data caches are write-back + write-allocate or write-through (optionally no write-allocate:
a write miss then goes around the cache). Results per cache: hits, misses, writebacks
(dirty evictions) and sequential misses (a miss on the line after the previous access's
line: what a prefetcher hides).

Levels (set up by :func:`simulate` from a Device):

* ``dcache`` / ``icache``: the core's L1 caches, in front of memories marked ``cached``;
* ``flash_accel_d`` / ``flash_accel_i``: a flash accelerator (ST ART, ...) modelled as a
  fully associative LRU cache of ``dcache_lines`` / ``icache_lines`` lines in front of its
  flash; L1 misses to that flash are looked up there (one read of the L1 line).

How: the interpreter (:func:`_run`) walks the compiled loop nest of isa/addresses.py and
queues one request per (cache, line) that a block's instruction fetch or each data access
touches; :func:`_process` runs the queue through the caches in program order, in batches
(the hot loop makes no function calls: numba calls with array arguments are costly).

Exactness: an access to the line the same cache saw last is a hit that changes no
replacement state (LRU: it is already most recent; round-robin/random: hits never move the
pointer or draw), so it is counted without a set search, and consecutive requests of one
cache to one line are merged into one weighted request; everything else is simulated
access by access. Instruction fetch is counted per fetch unit (``fetch_bytes``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import njit

from mcusim.isa.addresses import (
    MEM_SHIFT,
    N_TAGS,
    OP_BLOCK,
    OP_END,
    OP_LOOP,
    CompiledStream,
)

POLICIES = {"lru": 0, "random": 1, "round_robin": 2}
# cfg columns
C_SETS, C_WAYS, C_SHIFT, C_POLICY, C_WB, C_WA, C_OFF, C_SOFF = range(8)
# per-cache runtime state columns
S_CLOCK, S_RNG, S_LAST, S_LASTWAY = range(4)
# stats columns per (layer, cache)
HITS, MISSES, WRITEBACKS, SEQ_MISSES = range(4)
# per (layer, memory) columns: lines filled into a cache level from this memory (L1 and
# accelerator separately), lines written back, bytes written through/around
M_L1_FILL, M_ACC_FILL, M_WB, M_WT = range(4)

L1D, L1I = 0, 1


@dataclass(frozen=True)
class CacheConfig:
    """One simulated cache (bytes, ways, line bytes, replacement, write policy)."""

    size: int
    ways: int
    line_bytes: int
    replacement: str = "lru"
    write_back: bool = True
    write_allocate: bool = True

    @property
    def sets(self) -> int:
        return self.size // (self.ways * self.line_bytes)

    @classmethod
    def of(cls, c) -> CacheConfig:
        """From a devices.model.Cache."""
        return cls(c.size, c.ways, c.line_bytes, c.replacement, c.write_back, c.write_allocate)

    @classmethod
    def fully_associative(cls, lines: int, line_bytes: int) -> CacheConfig:
        return cls(lines * line_bytes, lines, line_bytes, "lru", False, False)

    @classmethod
    def accelerator(cls, lines: int, acc) -> CacheConfig:
        """A flash accelerator's read cache: ``acc.ways``-way LRU (0 = fully associative)."""
        ways = acc.ways or lines
        return cls(lines * acc.line_bytes, ways, acc.line_bytes, "lru", False, False)


class CacheState:
    """Flat arrays holding several caches' contents (numba-friendly)."""

    def __init__(self, configs: list[CacheConfig | None], seed: int = 1):
        n = len(configs)
        self.configs = configs
        self.cfg = np.zeros((n, 8), dtype=np.int64)
        lines = sets = 0
        for i, c in enumerate(configs):
            if c is None:
                continue
            if c.line_bytes & (c.line_bytes - 1) or c.sets < 1 or c.sets & (c.sets - 1):
                raise ValueError(f"cache {c}: line size and set count must be powers of two")
            self.cfg[i] = (
                c.sets,
                c.ways,
                c.line_bytes.bit_length() - 1,
                POLICIES[c.replacement],
                int(c.write_back),
                int(c.write_allocate),
                lines,
                sets,
            )
            lines += c.sets * c.ways
            sets += c.sets
        self.tags = np.full(max(lines, 1), -1, dtype=np.int64)
        self.stamp = np.zeros(max(lines, 1), dtype=np.int64)
        self.dirty = np.zeros(max(lines, 1), dtype=np.uint8)
        self.rr = np.zeros(max(sets, 1), dtype=np.int64)
        self.st = np.zeros((n, 4), dtype=np.int64)
        self.st[:, S_RNG] = [(seed * 2654435761 + 97 * i) | 1 for i in range(n)]
        self.st[:, S_LAST] = -1


# request queue columns: cache, line, weight (core accesses), is_write, bytes, layer
Q_CACHE, Q_LINE, Q_W, Q_WRITE, Q_NB, Q_LAYER = range(6)
QCAP = 1 << 13  # requests per batch (chained requests of a batch are appended after it)


@njit(cache=True)
def _process(q, n, nxt_d, nxt_i, cfg, tags, stamp, dirty, rr, st, cst, mst):
    """Run ``n`` queued line requests through their caches, in order. An L1 miss appends a
    request for the line to the next level (the flash accelerator of its memory), so each
    cache still sees its own requests in program order. One function holds the lookup so
    the hot loop makes no calls."""
    i = 0
    while i < n:
        c = q[i, Q_CACHE]
        line = q[i, Q_LINE]
        w = q[i, Q_W]
        write = q[i, Q_WRITE] != 0
        nb = q[i, Q_NB]
        layer = q[i, Q_LAYER]
        i += 1
        wb = cfg[c, C_WB] != 0
        if line == st[c, S_LAST]:
            cst[layer, c, HITS] += w
            if write:
                if wb:
                    dirty[st[c, S_LASTWAY]] = 1
                else:
                    mst[layer, ((line << cfg[c, C_SHIFT]) >> MEM_SHIFT) - 1, M_WT] += nb
            continue
        sets = cfg[c, C_SETS]
        ways = cfg[c, C_WAYS]
        s = line & (sets - 1)
        b = cfg[c, C_OFF] + s * ways
        st[c, S_CLOCK] += 1
        clock = st[c, S_CLOCK]
        found = -1
        for k in range(ways):
            if tags[b + k] == line:
                found = b + k
                break
        sh = cfg[c, C_SHIFT]
        mem = ((line << sh) >> MEM_SHIFT) - 1
        if found >= 0:
            stamp[found] = clock
            cst[layer, c, HITS] += w
            if write:
                if wb:
                    dirty[found] = 1
                else:
                    mst[layer, mem, M_WT] += nb
            st[c, S_LAST] = line
            st[c, S_LASTWAY] = found
            continue
        cst[layer, c, MISSES] += 1
        cst[layer, c, HITS] += w - 1
        if line == st[c, S_LAST] + 1:
            cst[layer, c, SEQ_MISSES] += 1
        if write and cfg[c, C_WA] == 0:
            mst[layer, mem, M_WT] += nb  # write around: nothing allocated, state unchanged
            continue
        victim = -1
        for k in range(ways):
            if tags[b + k] == -1:
                victim = b + k
                break
        if victim < 0:
            pol = cfg[c, C_POLICY]
            if pol == 0:
                best = stamp[b]
                victim = b
                for k in range(1, ways):
                    if stamp[b + k] < best:
                        best = stamp[b + k]
                        victim = b + k
            elif pol == 1:
                x = st[c, S_RNG]
                x ^= (x << 13) & 0x7FFFFFFFFFFFFFFF
                x ^= x >> 7
                x ^= (x << 17) & 0x7FFFFFFFFFFFFFFF
                x &= 0x7FFFFFFFFFFFFFFF
                st[c, S_RNG] = x
                victim = b + x % ways
            else:
                r = cfg[c, C_SOFF] + s
                victim = b + rr[r]
                rr[r] = (rr[r] + 1) % ways
        old = tags[victim]
        if old != -1 and dirty[victim]:
            cst[layer, c, WRITEBACKS] += 1
            mst[layer, ((old << sh) >> MEM_SHIFT) - 1, M_WB] += 1
        tags[victim] = line
        stamp[victim] = clock
        dirty[victim] = 1 if (write and wb) else 0
        st[c, S_LAST] = line
        st[c, S_LASTWAY] = victim
        if write and not wb:
            mst[layer, mem, M_WT] += nb
        if c == L1D or c == L1I:
            mst[layer, mem, M_L1_FILL] += 1
            a = nxt_d[mem] if c == L1D else nxt_i[mem]
            if a >= 0:
                q[n, Q_CACHE] = a
                q[n, Q_LINE] = (line << sh) >> cfg[a, C_SHIFT]
                q[n, Q_W] = 1
                q[n, Q_WRITE] = 0
                q[n, Q_NB] = 0
                q[n, Q_LAYER] = layer
                n += 1
        else:
            mst[layer, mem, M_ACC_FILL] += 1


@njit(cache=True)
def simulate_trace(addrs, nbytes, writes, cfg, tags, stamp, dirty, rr, st):
    """Feed a plain trace (byte addresses, sizes, write flags) to cache 0, one request per
    line touched. Returns int64[4]: hits, misses, writebacks, line fills."""
    cst = np.zeros((1, cfg.shape[0], 4), dtype=np.int64)
    mst = np.zeros((1, 1 << 4, 4), dtype=np.int64)
    none = np.full(1 << 4, -1, dtype=np.int64)
    q = np.zeros((2 * QCAP, 6), dtype=np.int64)
    sh = cfg[0, C_SHIFT]
    fills = 0
    n = 0
    for i in range(addrs.shape[0]):
        a = addrs[i] | (1 << MEM_SHIFT)  # memory 0
        for line in range(a >> sh, ((a + max(nbytes[i], 1) - 1) >> sh) + 1):
            q[n, Q_CACHE] = 0
            q[n, Q_LINE] = line
            q[n, Q_W] = 1
            q[n, Q_WRITE] = writes[i]
            q[n, Q_NB] = nbytes[i]
            n += 1
        if n >= QCAP - 64 or i == addrs.shape[0] - 1:
            _process(q, n, none, none, cfg, tags, stamp, dirty, rr, st, cst, mst)
            fills += mst[0, 0, M_L1_FILL]
            mst[0, 0, M_L1_FILL] = 0
            n = 0
    out = np.zeros(4, dtype=np.int64)
    out[0] = cst[0, 0, HITS]
    out[1] = cst[0, 0, MISSES]
    out[2] = cst[0, 0, WRITEBACKS]
    out[3] = fills
    return out


@njit(cache=True)
def _run(
    prog, events, blk_ev, blk_code, rules, base, size, fshift, margin,
    route_d, route_i, nxt_d, nxt_i, cfg, tags, stamp, dirty, rr, st, cst, mst,
):  # fmt: skip
    """Walk the compiled loop nest; queue one request per (cache, line) a block's fetch or
    a data access touches, and process the queue in batches."""
    ptr = np.zeros(N_TAGS, dtype=np.int64)
    maxd = 64
    f_pc = np.zeros(maxd, dtype=np.int64)
    f_it = np.zeros(maxd, dtype=np.int64)
    f_entry = np.zeros((maxd, N_TAGS), dtype=np.int64)
    # a batch is flushed once it holds QCAP requests; ``margin`` bounds one block's requests
    q = np.zeros((2 * (QCAP + margin), 6), dtype=np.int64)
    nmem = route_i.shape[0]
    # index in the queue of the last request of each cache: a request for the same line
    # (same layer) is merged into it. Exact: processed in order it would hit the line the
    # cache saw last, which changes no replacement state (see _process); not for a write
    # that may go around a no-write-allocate cache (the line would not be there).
    lastq = np.full(cfg.shape[0], -1, dtype=np.int64)
    nq = 0
    depth = 0
    layer = 0
    pc = 0
    n = prog.shape[0]
    while pc < n:
        op = prog[pc]
        if op == OP_BLOCK:
            v = prog[pc + 1]
            # instruction fetch: one request per line, weighted by fetch units in it
            addr = blk_code[v, 0]
            nb = blk_code[v, 1]
            mem = (addr >> MEM_SHIFT) - 1
            if nb > 0 and 0 <= mem < nmem:
                c = route_i[mem]
                if c >= 0:
                    sh = cfg[c, C_SHIFT]
                    end = addr + nb
                    for line in range(addr >> sh, ((end - 1) >> sh) + 1):
                        lo = line << sh
                        hi = lo + (1 << sh)
                        if lo < addr:
                            lo = addr
                        if hi > end:
                            hi = end
                        w = ((hi - 1) >> fshift) - (lo >> fshift) + 1
                        j = lastq[c]
                        if j >= 0 and q[j, Q_LINE] == line and q[j, Q_LAYER] == layer:
                            q[j, Q_W] += w
                            continue
                        q[nq, Q_CACHE] = c
                        q[nq, Q_LINE] = line
                        q[nq, Q_W] = w
                        q[nq, Q_WRITE] = 0
                        q[nq, Q_NB] = 0
                        q[nq, Q_LAYER] = layer
                        lastq[c] = nq
                        nq += 1
            e0 = blk_ev[v, 0]
            for e in range(e0, e0 + blk_ev[v, 1]):
                t = events[e, 0]
                nb = events[e, 2]
                if nb > 0:
                    addr = ptr[t] + events[e, 1]
                    sz = size[layer, t]
                    if sz > 0:
                        rel = addr - base[layer, t]
                        if rel < 0 or rel >= sz:
                            addr = base[layer, t] + rel % sz  # stay inside the buffer
                    write = events[e, 4]
                    mem = (addr >> MEM_SHIFT) - 1
                    # a stream with no base (outside every memory) is not simulated
                    c = route_d[mem, write] if 0 <= mem < nmem else -1
                    if c >= 0:
                        sh = cfg[c, C_SHIFT]
                        l0 = addr >> sh
                        l1 = (addr + nb - 1) >> sh
                        w = events[e, 3] - (l1 - l0)
                        wa = cfg[c, C_WA] != 0
                        for line in range(l0, l1 + 1):
                            ww = w if w > 0 else 1
                            wnb = nb if (write and line == l0) else 0
                            j = lastq[c]
                            if (
                                j >= 0
                                and q[j, Q_LINE] == line
                                and q[j, Q_LAYER] == layer
                                and (wa or (write == 0 and q[j, Q_WRITE] == 0))
                            ):
                                q[j, Q_W] += ww
                                q[j, Q_NB] += wnb
                                if write:
                                    q[j, Q_WRITE] = 1
                            else:
                                q[nq, Q_CACHE] = c
                                q[nq, Q_LINE] = line
                                q[nq, Q_W] = ww
                                q[nq, Q_WRITE] = write
                                q[nq, Q_NB] = wnb
                                q[nq, Q_LAYER] = layer
                                lastq[c] = nq
                                nq += 1
                            w = 1
                ptr[t] += events[e, 5]
            if nq >= QCAP:
                _process(q, nq, nxt_d, nxt_i, cfg, tags, stamp, dirty, rr, st, cst, mst)
                nq = 0
                lastq[:] = -1
            pc += 2
        elif op == OP_LOOP:
            if depth >= maxd:
                raise ValueError("loop nest deeper than 64")
            f_pc[depth] = pc
            f_it[depth] = 0
            for t in range(N_TAGS):
                f_entry[depth, t] = ptr[t]
            for r in range(prog[pc + 2], prog[pc + 3]):
                p = f_entry[depth, rules[r, 0]] + rules[r, 2]
                if rules[r, 3] > 0:
                    p += (rules[r, 5] // rules[r, 3]) * rules[r, 4]
                ptr[rules[r, 0]] = p
            depth += 1
            pc += 5
        elif op == OP_END:
            d = depth - 1
            lpc = f_pc[d]
            f_it[d] += 1
            it = f_it[d]
            for r in range(prog[lpc + 2], prog[lpc + 3]):
                p = f_entry[d, rules[r, 0]] + rules[r, 2] + it * rules[r, 1]
                ev = rules[r, 3]
                if ev > 0:
                    p += ((it + rules[r, 5]) // ev) * rules[r, 4]
                ptr[rules[r, 0]] = p
            if it < prog[lpc + 1]:
                pc = lpc + 5
            else:
                depth -= 1
                pc += 2
        else:  # OP_LAYER
            layer = prog[pc + 1]
            for t in range(N_TAGS):
                ptr[t] = base[layer, t]
            pc += 2
    _process(q, nq, nxt_d, nxt_i, cfg, tags, stamp, dirty, rr, st, cst, mst)


@dataclass
class SimResult:
    """Per-layer counters of one simulation.

    ``caches[name]``: int64 (layers, 4) = hits, misses, writebacks, sequential misses, for
    each simulated level ("dcache", "icache", "flash_accel_d", "flash_accel_i").
    ``memories[name]``: int64 (layers, 4) = lines filled into the L1 from this memory,
    lines filled into its accelerator, L1 lines written back to it, bytes written through.
    ``line_bytes[name]``: line size of each level.
    """

    caches: dict[str, np.ndarray]
    memories: dict[str, np.ndarray]
    line_bytes: dict[str, int]
    level_memory: dict[str, str] = field(default_factory=dict)  # accelerator -> its memory

    def layer(self, i: int):
        """Layer ``i``'s counters as a mcusim.costs.LayerCacheStats."""
        from mcusim.costs import LayerCacheStats

        levels = {
            k: {
                "hits": int(v[i, HITS]),
                "misses": int(v[i, MISSES]),
                "writebacks": int(v[i, WRITEBACKS]),
                "seq_misses": int(v[i, SEQ_MISSES]),
            }
            for k, v in self.caches.items()
        }
        mems = {
            k: {
                "l1_fills": int(v[i, M_L1_FILL]),
                "accel_fills": int(v[i, M_ACC_FILL]),
                "writebacks": int(v[i, M_WB]),
                "write_through": int(v[i, M_WT]),
            }
            for k, v in self.memories.items()
        }
        return LayerCacheStats(levels, mems, dict(self.line_bytes), dict(self.level_memory))


def _level_name(names: list[str], name: str, mem: str) -> str:
    return name if name not in names else f"{mem}_{name}"


def simulate(
    cs: CompiledStream,
    memories: list,
    dcache: CacheConfig | None = None,
    icache: CacheConfig | None = None,
    fetch_bytes: int = 4,
    seed: int = 1,
) -> SimResult:
    """Run the compiled stream through the caches a device has.

    ``memories``: the device's Memory objects in the index order used for the addresses
    (``cached`` routes them through the L1 caches; an ``accelerator`` adds its caches).
    """
    configs: list[CacheConfig | None] = [dcache, icache]
    names = ["dcache", "icache"]
    owner: dict[str, str] = {}
    nm = len(memories)
    l1d = np.zeros(nm, dtype=np.bool_)
    l1i = np.zeros(nm, dtype=np.bool_)
    accd = np.full(nm, -1, dtype=np.int64)
    acci = np.full(nm, -1, dtype=np.int64)
    for i, m in enumerate(memories):
        if m.kind == "tcm":
            continue  # tightly coupled: never behind a cache
        l1d[i] = bool(m.cached and dcache is not None)
        l1i[i] = bool(m.cached and icache is not None)
        acc = m.accelerator
        if acc is not None and acc.unified and acc.icache_lines:
            # one set of lines answers both instruction and data reads
            accd[i] = acci[i] = len(configs)
            configs.append(CacheConfig.accelerator(acc.icache_lines, acc))
            names.append(_level_name(names, "flash_accel_u", m.name))
            owner[names[-1]] = m.name
        elif acc is not None:
            if acc.dcache_lines:
                accd[i] = len(configs)
                configs.append(CacheConfig.accelerator(acc.dcache_lines, acc))
                names.append(_level_name(names, "flash_accel_d", m.name))
                owner[names[-1]] = m.name
            if acc.icache_lines:
                acci[i] = len(configs)
                configs.append(CacheConfig.accelerator(acc.icache_lines, acc))
                names.append(_level_name(names, "flash_accel_i", m.name))
                owner[names[-1]] = m.name
    # first level each access goes to: route_d[mem, is_write], route_i[mem] (-1: none);
    # an accelerator caches reads only (flash is not written by inference)
    route_d = np.full((nm, 2), -1, dtype=np.int64)
    route_i = np.full(nm, -1, dtype=np.int64)
    for i in range(nm):
        if l1d[i]:
            route_d[i] = L1D
        elif accd[i] >= 0:
            route_d[i, 0] = accd[i]
        route_i[i] = L1I if l1i[i] else acci[i]
    state = CacheState(configs, seed)
    L = cs.n_layers
    cst = np.zeros((L, len(configs), 4), dtype=np.int64)
    mst = np.zeros((L, nm, 4), dtype=np.int64)
    fshift = max(int(fetch_bytes), 1).bit_length() - 1
    # most requests one block execution can queue: every access spanning two lines, and
    # its code lines at the smallest line size
    min_line = min((c.line_bytes for c in configs if c is not None), default=4)
    per_block = 2 * cs.blk_ev[:, 1] + cs.blk_code[:, 1] // min_line + 2
    margin = int(per_block.max()) if len(per_block) else 2
    _run(
        cs.prog, cs.events, cs.blk_ev, cs.blk_code, cs.rules, cs.base, cs.size, fshift, margin,
        route_d, route_i, accd, acci, state.cfg, state.tags, state.stamp, state.dirty, state.rr,
        state.st, cst, mst,
    )  # fmt: skip
    # levels no access reached (e.g. the accelerator of a flash path nothing is placed on)
    # are left out of the results
    used = [i for i, c in enumerate(configs) if c is not None and cst[:, i, :2].any()]
    caches = {names[i]: cst[:, i] for i in used}
    lines = {names[i]: configs[i].line_bytes for i in used}
    mems = {m.name: mst[:, i] for i, m in enumerate(memories)}
    return SimResult(caches, mems, lines, {k: v for k, v in owner.items() if k in caches})


# ----------------------------------------------------------------- model on a device
MAC_KINDS = ("conv2d", "depthwise_conv2d", "fully_connected")
STACK_HEADROOM = 512  # bytes between the top of the arena memory and the kernels' frames
ALIGN = 16


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def code_size(programs) -> int:
    """Bytes of code when every distinct Block is laid out once (as isa/addresses.py does)."""
    seen: set[int] = set()
    total = 0
    for p in programs:
        for it, _m in p.walk():
            if hasattr(it, "instrs") and id(it) not in seen:
                seen.add(id(it))
                total += it.code_bytes + it.code_bytes % 2
    return total


def stream_bases(graph, plan, device, code_bytes: int) -> list[dict[str, tuple[int, int]]]:
    """Global address of every stream pointer at the start of each layer, with the bytes
    of the buffer behind it (accesses wrap inside it; 0 for the stack: unbounded).

    Activations (input, input2, output) and scratch sit at their arena-plan offsets in the
    arena memory; constant tensors are laid out in op order (16-byte aligned) in the
    constants memory (after the code if code shares it), followed per MAC op by its
    per-channel requantization parameters (the "const" stream); the stack pointer starts
    ``STACK_HEADROOM`` bytes below the top of the arena memory."""
    from mcusim.isa.addresses import global_address

    mems = list(device.memories)
    idx = {m.name: i for i, m in enumerate(mems)}
    arena = device.memory_for("arena")
    consts = device.memory_for("constants")
    code = device.memory_for("code")
    ai, ci = idx[arena.name], idx[consts.name]

    def at_arena(off: int) -> int:
        return global_address(ai, arena.base_address + off)

    def at_const(off: int) -> int:
        return global_address(ci, consts.base_address + off)

    t = graph.tensors
    coff = _align(code_bytes) if consts.name == code.name else 0
    const_off: dict[str, int] = {}
    for op in graph.ops:
        for n in op.inputs:
            if n and t[n].is_const and n not in const_off:
                const_off[n] = coff
                coff = _align(coff + t[n].nbytes)
    qparams: dict[int, int] = {}
    for i, op in enumerate(graph.ops):
        if op.kind in MAC_KINDS:
            qparams[i] = coff
            coff = _align(coff + 8 * int(t[op.outputs[0]].shape[-1]))
    end_const = coff
    stack = at_arena(max(arena.size - STACK_HEADROOM, 0) // 8 * 8)
    scratch = {b.key: b.size for b in plan.buffers if b.key.startswith("scratch:")}
    out = []
    for i, op in enumerate(graph.ops):
        acts = [n for n in op.inputs if n and not t[n].is_const]
        cins = [n for n in op.inputs if n and t[n].is_const]
        b: dict[str, tuple[int, int]] = {"stack": (stack, 0)}  # (address, buffer bytes)
        if acts:
            b["input"] = (at_arena(plan.offsets.get(acts[0], 0)), t[acts[0]].nbytes)
        else:
            b["input"] = (at_const(end_const), 0)
        second = op.inputs[1] if len(op.inputs) > 1 and op.inputs[1] else None
        if second is not None:
            a2 = (
                at_const(const_off[second]) if t[second].is_const
                else at_arena(plan.offsets.get(second, 0))
            )  # fmt: skip
            b["input2"] = (a2, t[second].nbytes)
        y = op.outputs[0]
        b["output"] = (at_arena(plan.offsets.get(y, 0)), t[y].nbytes)
        key = f"scratch:{i}"
        b["scratch"] = (at_arena(plan.offsets.get(key, plan.peak_bytes)), scratch.get(key, 0))
        if op.kind in MAC_KINDS:
            w = op.inputs[1]
            b["weights"] = (at_const(const_off.get(w, end_const)), t[w].nbytes)
            if len(op.inputs) > 2 and op.inputs[2]:
                bias = op.inputs[2]
                b["bias"] = (at_const(const_off.get(bias, end_const)), t[bias].nbytes)
            b["const"] = (at_const(qparams[i]), 8 * int(t[y].shape[-1]))
        else:
            first = (at_const(const_off[cins[0]]), t[cins[0]].nbytes) if cins else None
            for tag in ("weights", "bias", "const"):
                b[tag] = first or (at_const(end_const), 0)
        out.append(b)
    return out


def fetch_bytes_of(core_name: str) -> int:
    """Bytes per instruction fetch of a core: its timing model's ``fetch_bytes``, read from
    the core's TOML (isa/cortex_*.toml, with the TRM source of each width)."""
    from mcusim.isa.timing import core_timing

    fb = getattr(core_timing(core_name), "fetch_bytes", None)
    if not fb:
        raise ValueError(
            f"{core_name}: its timing model has no fetch_bytes (put the instruction fetch "
            "width in the core's isa/*.toml and expose it as the timing class's attribute)"
        )
    return int(fb)


def needs_simulation(device) -> bool:
    """True when some memory sits behind a cache level (L1 or flash accelerator)."""
    core = device.core
    for m in device.memories:
        if m.kind == "tcm":
            continue
        if m.cached and (core.dcache is not None or core.icache is not None):
            return True
        if m.accelerator is not None and (m.accelerator.icache_lines or m.accelerator.dcache_lines):
            return True
    return False


def simulate_model(graph, programs, plan, device) -> SimResult:
    """Compile every layer's schedule into its address stream on ``device`` and run it
    through the device's caches; cache contents carry over from layer to layer."""
    from mcusim.isa.addresses import compile_programs, global_address

    code = device.memory_for("code")
    ci = [m.name for m in device.memories].index(code.name)
    csize = code_size(programs)
    bases = stream_bases(graph, plan, device, csize)
    cs = compile_programs(programs, bases, code_base=global_address(ci, code.base_address))
    core = device.core
    return simulate(
        cs,
        list(device.memories),
        dcache=CacheConfig.of(core.dcache) if core.dcache is not None else None,
        icache=CacheConfig.of(core.icache) if core.icache is not None else None,
        fetch_bytes=fetch_bytes_of(core.name),
    )
