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
(the hot loop makes no function calls: numba calls with array arguments are costly). When
nothing but L1 D misses reaches the levels behind the L1 D (:func:`_dnow_ok`), the L1 D's
requests skip the queue: the walk looks them up at once, with the same steps (the arena in
a cached SRAM makes them the bulk of the work).

Exactness: an access to the line the same cache saw last is a hit that changes no
replacement state (LRU: it is already most recent; round-robin/random: hits never move the
pointer or draw), so it is counted without a set search, and consecutive requests of one
cache to one line are merged into one weighted request; everything else is simulated
access by access. Instruction fetch is counted per fetch unit (``fetch_bytes``).
For an L1 D with random or round-robin replacement a hit changes nothing but the last
line, so (see :func:`_run`) an iteration whose lines are all cached is counted without
walking it, and in an iteration of a flattened loop only the accesses to the sets of the
lines it misses are looked up one by one.
Two more shortcuts are exact (see :func:`_run`): a loop whose iterations touch the same
addresses in every cached memory stops as soon as the caches' state (lines, dirty bits,
LRU order up to way placement, round-robin pointers, random-draw state, last line) after
an iteration equals the state after the previous one -- every later iteration would add
the same counters; and the fetches of a loop, identical in every iteration, stop being
simulated once the instruction-side levels reach such a fixed point (their counters are
added per iteration). tests/test_cache_layer.py checks both against per-access
reference caches.

Recorded traces (the firmware's real accesses, mcusim/firmware/trace.py) go through the
same levels with :class:`TraceSim`; :func:`simulate_layer` simulates one layer of a model
alone (the model's buffer layout cached per (graph, plan, device)).
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
    distinct_blocks,
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


@njit(cache=True, inline="always")
def _victim(tags, stamp, rr, st, c, b, ways, pol, rr_index):
    """The way a miss fills in the set starting at ``b``: an invalid way first, else by
    policy: 0 LRU (oldest stamp), 1 random (xorshift state of cache ``c``), 2 round-robin."""
    for k in range(ways):
        if tags[b + k] == -1:
            return b + k
    if pol == 0:
        best = stamp[b]
        victim = b
        for k in range(1, ways):
            if stamp[b + k] < best:
                best = stamp[b + k]
                victim = b + k
        return victim
    if pol == 1:
        x = st[c, S_RNG]
        x ^= (x << 13) & 0x7FFFFFFFFFFFFFFF
        x ^= x >> 7
        x ^= (x << 17) & 0x7FFFFFFFFFFFFFFF
        x &= 0x7FFFFFFFFFFFFFFF
        st[c, S_RNG] = x
        return b + x % ways
    victim = b + rr[rr_index]
    rr[rr_index] = (rr[rr_index] + 1) % ways
    return victim


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
        if ways == 4:  # the common L1 D case, unrolled into branch-free selects
            found = b if tags[b] == line else found
            found = b + 1 if tags[b + 1] == line else found
            found = b + 2 if tags[b + 2] == line else found
            found = b + 3 if tags[b + 3] == line else found
        else:
            for k in range(ways):  # no early exit: a line sits in at most one way
                if tags[b + k] == line:
                    found = b + k
        sh = cfg[c, C_SHIFT]
        if found >= 0:
            stamp[found] = clock
            cst[layer, c, HITS] += w
            if write:
                if wb:
                    dirty[found] = 1
                else:
                    mst[layer, ((line << sh) >> MEM_SHIFT) - 1, M_WT] += nb
            st[c, S_LAST] = line
            st[c, S_LASTWAY] = found
            continue
        mem = ((line << sh) >> MEM_SHIFT) - 1
        cst[layer, c, MISSES] += 1
        cst[layer, c, HITS] += w - 1
        if line == st[c, S_LAST] + 1:
            cst[layer, c, SEQ_MISSES] += 1
        if write and cfg[c, C_WA] == 0:
            mst[layer, mem, M_WT] += nb  # write around: nothing allocated, state unchanged
            continue
        victim = _victim(tags, stamp, rr, st, c, b, ways, cfg[c, C_POLICY], cfg[c, C_SOFF] + s)
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
def _lru_ranks(cfg, tags, stamp, rank):
    """Per line of every LRU cache, its rank by last use within its set (valid ways only):
    what LRU replacement depends on, independent of the clock values."""
    for c in range(cfg.shape[0]):
        if cfg[c, C_SETS] == 0 or cfg[c, C_POLICY] != 0:
            continue
        ways = cfg[c, C_WAYS]
        for s in range(cfg[c, C_SETS]):
            b = cfg[c, C_OFF] + s * ways
            for k in range(ways):
                r = 0
                if tags[b + k] != -1:
                    for k2 in range(ways):
                        if tags[b + k2] != -1 and stamp[b + k2] < stamp[b + k]:
                            r += 1
                rank[b + k] = r


@njit(cache=True)
def _same_state(cfg, tags, dirty, rank, rr, st, s_tags, s_dirty, s_rank, s_rr, s_st, only):
    """Whether the caches behave the same from now as from the snapshot on: the same
    last line, and per set the same lines with the same dirty bits and LRU order -- in any
    ways for LRU (which way holds a line never matters to it), in the same ways with the
    same round-robin pointer or random-draw state otherwise."""
    for c in range(cfg.shape[0]):
        if cfg[c, C_SETS] == 0 or only[c] == 0:
            continue
        if st[c, S_LAST] != s_st[c, S_LAST]:
            return False
        ways = cfg[c, C_WAYS]
        lru = cfg[c, C_POLICY] == 0
        if not lru:
            if st[c, S_RNG] != s_st[c, S_RNG]:
                return False
        for s in range(cfg[c, C_SETS]):
            b = cfg[c, C_OFF] + s * ways
            if lru:
                nv = 0
                for k in range(ways):
                    if s_tags[b + k] != -1:
                        nv += 1
                for k in range(ways):
                    line = tags[b + k]
                    if line == -1:
                        continue
                    nv -= 1
                    hit = False
                    for k2 in range(ways):
                        if s_tags[b + k2] == line:
                            if s_rank[b + k2] != rank[b + k] or s_dirty[b + k2] != dirty[b + k]:
                                return False
                            hit = True
                            break
                    if not hit:
                        return False
                if nv != 0:
                    return False
            else:
                for k in range(ways):
                    i = b + k
                    if tags[i] != s_tags[i] or (tags[i] != -1 and dirty[i] != s_dirty[i]):
                        return False
                r = cfg[c, C_SOFF] + s
                if rr[r] != s_rr[r]:
                    return False
    return True


NO_ROUTE = -9  # a tag's route must be found from each address (see _tag_routes)
OP_FLAT = 99  # _run: an iteration of a flattened loop (not in the bytecode)


@njit(cache=True)
def _tag_routes(lbase, lsize, rd, nmem, tcl):
    """The first level of each tag's accesses when its buffer (``lsize`` > 0: accesses
    wrap inside it) lies in one memory -- every access then goes to that memory -- else
    NO_ROUTE (the stack, whose accesses are not wrapped)."""
    for t in range(lbase.shape[0]):
        m0 = (lbase[t] >> MEM_SHIFT) - 1
        m1 = ((lbase[t] + lsize[t] - 1) >> MEM_SHIFT) - 1
        for wr in range(2):
            if lsize[t] > 0 and m0 == m1 and 0 <= m0 < nmem:
                tcl[2 * t + wr] = rd[2 * m0 + wr]
            else:
                tcl[2 * t + wr] = NO_ROUTE


@njit(cache=True, inline="always")
def _iteration_routes(row, rinfo, tinfo, ftl, ptr, lbase, lsize, tcl, rd, nmem, out):
    """Whether every access of one iteration of footprint ``row`` (pointers ``ptr`` at its
    start) stays inside its buffer and goes to the L1 D or to no simulated level; per tag
    the level (L1D or -1) in ``out``. Shared by the all-hit skip and the flattened loops."""
    for k in range(rinfo[row, R_TL0], rinfo[row, R_TL1]):
        t = ftl[k]
        has = tinfo[row, t, T_HAS]
        p = ptr[t]
        if lsize[t] > 0 and (
            p + tinfo[row, t, T_MINST] < lbase[t]
            or p + tinfo[row, t, T_MAXST] >= lbase[t] + lsize[t]
        ):
            return False
        c = -2
        for w in range(2):
            if (has >> w) & 1:
                cw = tcl[2 * t + w]
                if cw == NO_ROUTE:
                    m0 = ((p + tinfo[row, t, T_LO]) >> MEM_SHIFT) - 1
                    m1 = ((p + tinfo[row, t, T_HI] - 1) >> MEM_SHIFT) - 1
                    if m0 != m1:
                        cw = -3
                    elif 0 <= m0 < nmem:
                        cw = rd[2 * m0 + w]
                    else:
                        cw = -1
                if c == -2 or c == cw:
                    c = cw
                else:
                    c = -3
        if c != L1D and c != -1:
            return False
        out[t] = c
    return True


@njit(cache=True)
def _run(
    prog, events, blk_ev, blk_code, rules, base, size, fshift, margin,
    route_d, route_i, nxt_d, nxt_i, cfg, tags, stamp, dirty, rr, st, cst, mst,
    lrow, lmove, lwork, min_work, skipped, igroup, cmem, dnow,
    rinfo, tinfo, ftl, fcl, fwc, fcx, ffq, fsub, fso, fil, flat_ok,
    ev_t, ev_off, ev_nb, ev_acc, ev_w, ev_post,
):  # fmt: skip
    """Walk the compiled loop nest; queue one request per (cache, line) a block's fetch or
    a data access touches, and process the queue in batches.

    Exact shortcut (a fixed point): a loop whose iterations touch the same addresses in
    every simulated memory (``lmove[row]``: the stream pointers that move from one
    iteration to the next; none of them may point into a cached memory) repeats the same
    request sequence. When the caches' state after an iteration -- tags, dirty bits, the
    LRU order within each set, round-robin pointers, random-draw states, last lines -- is
    the state after the previous one, every later iteration sees the same state and the
    same requests, so it adds the same counters: they are added for the iterations left
    and the loop ends (its pointers set as if it had run). Checked once per iteration of
    loops with at least ``min_work`` block executions + accesses per iteration (the check
    costs about one pass over the caches).

    The same for instruction fetch alone: the fetch requests of every iteration of a loop
    are the same (the blocks and inner trip counts are fixed), so when the instruction-side
    levels (``igroup``: the first level of fetches from the code memory ``cmem`` and the
    accelerator behind an L1 I-cache; no data request ever reaches them) are in the same
    state after two consecutive iterations, the remaining iterations queue no fetch: each
    adds the last iteration's instruction-side counters (and its line fills: one per miss)
    while its data accesses are still simulated.

    With ``dnow`` (:func:`_dnow_ok`) the L1 D's requests are not queued: each data access
    is looked up at once, with _process's steps (its misses to a memory with an
    accelerator queue the accelerator's request); nothing else reads the L1 D's state
    between two syncs, so its hits, last line and clock live in locals until then.

    With ``dnow`` and an L1 D whose hits change nothing but its last line (random or
    round-robin replacement), loops whose iteration's accesses are worked out
    (:func:`_footprints`: offsets from the pointers at the iteration's start, the same in
    every iteration) take two more exact shortcuts:

    * all-hit iterations: when every line an iteration touches is in the L1 D at its
      start, every access hits (a hit evicts nothing), so the iteration is counted, not
      walked: its hits, its written lines made dirty, the last line, its fetch requests
      queued as the walk would (merged per cache), its pointer moves;
    * flattened loops (``flat_ok``; not when an inner loop could reach the data-side fixed
      point): each iteration runs from its worked-out list as one block, without walking
      the inner loops. The lines it touches that are missing from the L1 D are the only
      ones that can miss, and their misses evict lines of their own sets only; so the
      accesses to lines of other sets are hits that change nothing: they are counted in
      bulk, and only the accesses to lines of the missing lines' sets are looked up, in
      order (the last line set from the access before each, as the walk leaves it). Its
      fetches, when they all go to the L1 I (not LRU) and all its lines are there -- checked
      again only after a _process call, where the L1 I changes -- are all hits, counted."""
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
    ncache = cfg.shape[0]
    # the line of each cache's last queued request (-1: none, or another layer's) and the
    # per-cache config the hot path reads, hoisted out of the 2-D cfg array
    lline = np.full(ncache, -1, dtype=np.int64)
    csh = cfg[:, C_SHIFT].copy()
    # the L1 D-cache's config, for its requests looked up at once (``dnow``, see _dnow_ok)
    dsets = cfg[L1D, C_SETS]
    dways = cfg[L1D, C_WAYS]
    doff = cfg[L1D, C_OFF]
    dsoff = cfg[L1D, C_SOFF]
    dpol = cfg[L1D, C_POLICY]
    dwb = cfg[L1D, C_WB] != 0
    dwa = cfg[L1D, C_WA] != 0
    dsh = cfg[L1D, C_SHIFT]
    dlru = dpol == 0
    # with ``dnow`` only that path changes the L1 D's last line / way, clock and hits: kept
    # in locals, written back to st / cst (the ``# sync`` blocks) at every loop end, layer
    # change and the end, before anything else reads them
    dlast = st[L1D, S_LAST]
    dlastway = st[L1D, S_LASTWAY]
    dclock = st[L1D, S_CLOCK]
    dh = 0
    rd = route_d.ravel().copy()  # route_d[mem, write] at 2 * mem + write
    lbase = base[0].copy()  # the current layer's rows of base and size
    lsize = size[0].copy()
    # per tag and write flag (2 * tag + write) the first level of its accesses when its
    # buffer lies in one memory (accesses wrap inside it), else NO_ROUTE: from each address
    tcl = np.empty(2 * N_TAGS, dtype=np.int64)
    _tag_routes(base[0], size[0], rd, nmem, tcl)
    cwa = cfg[:, C_WA].copy()
    # the snapshot of one loop (the innermost eligible one running): cache state after its
    # previous iteration and the counters then
    s_tags = np.empty_like(tags)
    s_dirty = np.empty_like(dirty)
    s_rank = np.zeros(tags.shape[0], dtype=np.int64)
    rank = np.zeros(tags.shape[0], dtype=np.int64)
    s_rr = np.empty_like(rr)
    s_st = np.empty_like(st)
    s_cst = np.zeros((ncache, 4), dtype=np.int64)
    s_mst = np.zeros((nmem, 4), dtype=np.int64)
    slot = -1  # depth of the loop holding the snapshot
    all_c = np.ones(ncache, dtype=np.int64)
    # instruction side: its own snapshot, the loop (depth) whose fetches are being added
    # instead of simulated, and what one of its iterations adds
    i_tags = np.empty_like(tags)
    i_dirty = np.empty_like(dirty)
    i_rank = np.zeros(tags.shape[0], dtype=np.int64)
    i_rr = np.empty_like(rr)
    i_st = np.empty_like(st)
    i_cst = np.zeros((ncache, 4), dtype=np.int64)
    di_cst = np.zeros((ncache, 4), dtype=np.int64)
    islot = -1
    ifix = -1
    has_i = 0
    for c in range(ncache):
        has_i += igroup[c]
    fi_fail = np.zeros(maxd, dtype=np.int64)
    fi_wait = np.zeros(maxd, dtype=np.int64)
    f_fix = np.zeros(maxd, dtype=np.int64)  # the loop at this depth may reach a fixed point
    f_fail = np.zeros(maxd, dtype=np.int64)  # back-off after failed checks (iterations to
    f_wait = np.zeros(maxd, dtype=np.int64)  # wait before the next snapshot)
    # all-hit iterations (see _footprints): the tags whose accesses reach the L1 D, the
    # loop depth whose iteration starts now, per loop the failed checks in a row and the
    # iterations to let pass before the next check
    sim_t = np.zeros(N_TAGS, dtype=np.int64)
    fr_t = np.zeros(N_TAGS, dtype=np.int64)  # per tag the L1 D or -1 (fast flattened path)
    isets = cfg[L1I, C_SETS]
    iways = cfg[L1I, C_WAYS]
    ioff = cfg[L1I, C_OFF]
    ilru = cfg[L1I, C_POLICY] == 0
    pep = 0  # _process calls so far (the L1 I changes only in them)
    irow_ep = np.full(rinfo.shape[0], -1, dtype=np.int64)  # ... when a loop's lines were in
    hz = np.zeros(max(dsets, 1), dtype=np.int64)  # L1 D sets with a missing line (== gen)
    gen = 0
    hzm = False
    hzw = 0
    prevk = -1
    nhp = 0
    hl = np.zeros((256, 2), dtype=np.int64)  # lines in those sets (tag, line)
    hp = np.zeros(512, dtype=np.int64)  # positions of the accesses to them
    fl = -1  # depth of the loop whose iterations run flattened (see OP_LOOP), its row
    frow = 0
    sk_first = np.zeros(rinfo.shape[0], dtype=np.int64)
    sk_fail = np.zeros(rinfo.shape[0], dtype=np.int64)
    sk_wait = np.zeros(rinfo.shape[0], dtype=np.int64)
    att = -1
    nq = 0
    depth = 0
    layer = 0
    pc = 0
    n = prog.shape[0]
    while pc < n:
        if att >= 0:
            # Exact shortcut: an iteration whose every data line is in the L1 D already
            # hits throughout -- no fill, eviction or draw (its replacement is not LRU) --
            # so it is counted, not walked: its hits, its written lines made dirty, the
            # L1 D's last line, its fetch requests queued (merged like the walk's) and its
            # pointer moves; then on to the loop's end.
            lpc = f_pc[att]
            att = -1
            row = lrow[lpc]
            if row >= 0 and rinfo[row, R_OK] != 0 and sk_wait[row] > 0:
                sk_wait[row] -= 1
            elif row >= 0 and rinfo[row, R_OK] != 0:
                # every access inside its buffer (nothing wraps) and going to the L1 D or
                # to no simulated level
                ok = _iteration_routes(
                    row, rinfo, tinfo, ftl, ptr, lbase, lsize, tcl, rd, nmem, sim_t
                )
                # every line it touches is in the L1 D (a failed probe starts there next)
                if ok:
                    c0 = rinfo[row, R_CL0]
                    nc = rinfo[row, R_CL1] - c0
                    s0 = sk_first[row]
                    for kk in range(nc):
                        j = s0 + kk
                        if j >= nc:
                            j -= nc
                        t = fcl[c0 + j, 0]
                        if sim_t[t] != L1D:
                            continue
                        a1 = (ptr[t] + fcl[c0 + j, 2] - 1) >> dsh
                        for ln in range((ptr[t] + fcl[c0 + j, 1]) >> dsh, a1 + 1):
                            b = doff + (ln & (dsets - 1)) * dways
                            found = -1
                            for k in range(dways):
                                if tags[b + k] == ln:
                                    found = b + k
                            if found < 0:
                                ok = False
                                break
                        if not ok:
                            sk_first[row] = j
                            break
                if not ok:  # back off: wait 0, 1, 3, ... 63 iterations after failures
                    sk_fail[row] += 1
                    sk_wait[row] = (1 << min(sk_fail[row] - 1, 6)) - 1
                if ok:
                    sk_fail[row] = 0
                    wsum = 0
                    bpos = -1
                    bt = -1
                    for k in range(rinfo[row, R_TL0], rinfo[row, R_TL1]):
                        t = ftl[k]
                        if sim_t[t] != L1D:
                            continue
                        p = ptr[t]
                        wsum += tinfo[row, t, T_W]
                        al = tinfo[row, t, T_ALIGN]
                        if al < 0 or (al > 0 and (p & (al - 1)) != 0):
                            for k2 in range(rinfo[row, R_CX0], rinfo[row, R_CX1]):
                                if fcx[k2, 0] == t:
                                    a = p + fcx[k2, 1]
                                    nl = ((a + fcx[k2, 2] - 1) >> dsh) - (a >> dsh) + 1
                                    if nl > fcx[k2, 3]:
                                        wsum += (nl - fcx[k2, 3]) * fcx[k2, 4]
                        if tinfo[row, t, T_LASTPOS] > bpos:
                            bpos = tinfo[row, t, T_LASTPOS]
                            bt = t
                        if not dwb and tinfo[row, t, T_WBYTES] > 0:
                            mm = ((p + tinfo[row, t, T_LO]) >> MEM_SHIFT) - 1
                            mst[layer, mm, M_WT] += tinfo[row, t, T_WBYTES]
                    dh += wsum
                    if dwb:
                        for k in range(rinfo[row, R_WC0], rinfo[row, R_WC1]):
                            t = fwc[k, 0]
                            if sim_t[t] != L1D:
                                continue
                            a1 = (ptr[t] + fwc[k, 2] - 1) >> dsh
                            for ln in range((ptr[t] + fwc[k, 1]) >> dsh, a1 + 1):
                                b = doff + (ln & (dsets - 1)) * dways
                                for k2 in range(dways):
                                    if tags[b + k2] == ln:
                                        dirty[b + k2] = 1
                    if bt >= 0:
                        ln = (ptr[bt] + tinfo[row, bt, T_LASTEND]) >> dsh
                        if ln != dlast:
                            b = doff + (ln & (dsets - 1)) * dways
                            for k2 in range(dways):
                                if tags[b + k2] == ln:
                                    dlastway = b + k2
                            dlast = ln
                            dclock += 1
                            stamp[dlastway] = dclock
                    if ifix < 0:
                        for k in range(rinfo[row, R_FQ0], rinfo[row, R_FQ1]):
                            c = ffq[k, 0]
                            if lline[c] == ffq[k, 1]:
                                q[lastq[c], Q_W] += ffq[k, 2]
                                continue
                            q[nq, Q_CACHE] = c
                            q[nq, Q_LINE] = ffq[k, 1]
                            q[nq, Q_W] = ffq[k, 2]
                            q[nq, Q_WRITE] = 0
                            q[nq, Q_NB] = 0
                            q[nq, Q_LAYER] = layer
                            lastq[c] = nq
                            lline[c] = ffq[k, 1]
                            nq += 1
                        if nq >= QCAP:
                            pep += 1
                            _process(q, nq, nxt_d, nxt_i, cfg, tags, stamp, dirty, rr, st, cst, mst)
                            nq = 0
                            lastq[:] = -1
                            lline[:] = -1
                    for t in range(N_TAGS):
                        ptr[t] += tinfo[row, t, T_NET]
                    skipped[2] += 1
                    pc = prog[lpc + 4] - 2  # on to the loop's end, as if the body had run
                    continue
        op = prog[pc]
        if fl >= 0 and op != OP_END:
            op = OP_FLAT
        if op == OP_FLAT:
            # one iteration of a flattened loop: its fetch requests, then its accesses as
            # one block's events (then on to the loop's end)
            ihit = False
            if ifix < 0 and rinfo[frow, R_IOK] != 0 and not ilru:
                # every line it fetches already in the L1 I (checked again only after the
                # L1 I may have changed: a _process call): all hits, counted
                if nq > 0:
                    pep += 1
                    _process(q, nq, nxt_d, nxt_i, cfg, tags, stamp, dirty, rr, st, cst, mst)
                    nq = 0
                    lastq[:] = -1
                    lline[:] = -1
                ihit = irow_ep[frow] == pep
                if not ihit:
                    ihit = True
                    for k in range(rinfo[frow, R_IL0], rinfo[frow, R_IL1]):
                        ln = fil[k]
                        b = ioff + (ln & (isets - 1)) * iways
                        found = -1
                        for k2 in range(iways):
                            if tags[b + k2] == ln:
                                found = b + k2
                        if found < 0:
                            ihit = False
                            break
                    if ihit:
                        irow_ep[frow] = pep
                if ihit:
                    cst[layer, L1I, HITS] += rinfo[frow, R_IW]
                    st[L1I, S_LAST] = rinfo[frow, R_ILAST]
            if ifix < 0 and not ihit:
                for k in range(rinfo[frow, R_FQ0], rinfo[frow, R_FQ1]):
                    c = ffq[k, 0]
                    if lline[c] == ffq[k, 1]:
                        q[lastq[c], Q_W] += ffq[k, 2]
                        continue
                    q[nq, Q_CACHE] = c
                    q[nq, Q_LINE] = ffq[k, 1]
                    q[nq, Q_W] = ffq[k, 2]
                    q[nq, Q_WRITE] = 0
                    q[nq, Q_NB] = 0
                    q[nq, Q_LAYER] = layer
                    lastq[c] = nq
                    lline[c] = ffq[k, 1]
                    nq += 1
            e0 = rinfo[frow, R_FE0]
            e1 = rinfo[frow, R_FE1]
            # when every access goes to the L1 D or nowhere and stays inside its buffer
            # (as the all-hit check works it out), the events below skip those checks
            fast = dnow and _iteration_routes(
                frow, rinfo, tinfo, ftl, ptr, lbase, lsize, tcl, rd, nmem, fr_t
            )
            # Exact shortcut: the lines of the iteration missing from the L1 D now are the
            # only ones that can miss, and their misses evict lines of their own sets only;
            # so accesses to lines of the other sets hit and change nothing (the
            # replacement is not LRU). Those are only counted (their weights in bulk, their
            # written lines made dirty, the last line kept); accesses to lines in the sets
            # of missing lines are looked up one by one, in order, as usual.
            hzm = fast and dwb
            if hzm:
                gen += 1
                nhl = 0
                for pas in range(2):
                    # first the sets of the missing lines, then every line in those sets
                    for j in range(rinfo[frow, R_CL0], rinfo[frow, R_CL1]):
                        t = fcl[j, 0]
                        if fr_t[t] != L1D:
                            continue
                        a1 = (ptr[t] + fcl[j, 2] - 1) >> dsh
                        for ln in range((ptr[t] + fcl[j, 1]) >> dsh, a1 + 1):
                            s = ln & (dsets - 1)
                            if pas == 1:
                                if hz[s] == gen and nhl < hl.shape[0]:
                                    hl[nhl, 0] = t
                                    hl[nhl, 1] = ln
                                    nhl += 1
                                continue
                            if hz[s] == gen:
                                continue
                            b = doff + s * dways
                            found = -1
                            for k in range(dways):
                                if tags[b + k] == ln:
                                    found = b + k
                            if found < 0:
                                hz[s] = gen
                # the accesses to those lines (an access touching several: once), in order
                nhp = 0
                for j in range(nhl):
                    t = hl[j, 0]
                    lo = (hl[j, 1] << dsh) - ptr[t]
                    hi = lo + (np.int64(1) << dsh)
                    k0 = tinfo[frow, t, T_S0]
                    k1 = tinfo[frow, t, T_S1]
                    x = lo - tinfo[frow, t, T_MAXNB]
                    while k0 < k1:  # first offset above x (binary search)
                        mid = (k0 + k1) >> 1
                        if fso[mid, 1] <= x:
                            k0 = mid + 1
                        else:
                            k1 = mid
                    for k in range(k0, tinfo[frow, t, T_S1]):
                        if fso[k, 1] >= hi:
                            break
                        if fso[k, 2] > lo and nhp < hp.shape[0]:
                            hp[nhp] = fso[k, 0]
                            nhp += 1
                if nhp >= hp.shape[0] or nhl >= hl.shape[0]:
                    hzm = False  # (more than the buffers hold: the plain walk)
                else:
                    for j in range(1, nhp):  # insertion sort: a few positions
                        v = hp[j]
                        k = j - 1
                        while k >= 0 and hp[k] > v:
                            hp[k + 1] = hp[k]
                            k -= 1
                        hp[k + 1] = v
                    m = 0
                    for j in range(nhp):
                        if m == 0 or hp[j] != hp[m - 1]:
                            hp[m] = hp[j]
                            m += 1
                    nhp = m
                    hzw = 0  # weights of the accesses looked up
                    prevk = -1  # position of the last access looked up
        else:
            fast = False
            hzm = False
        if op == OP_BLOCK:
            v = prog[pc + 1]
            # instruction fetch: one request per line, weighted by fetch units in it
            addr = blk_code[v, 0]
            nb = blk_code[v, 1]
            mem = (addr >> MEM_SHIFT) - 1
            if nb > 0 and 0 <= mem < nmem and ifix < 0:
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
                        if lline[c] == line:
                            q[lastq[c], Q_W] += w
                            continue
                        q[nq, Q_CACHE] = c
                        q[nq, Q_LINE] = line
                        q[nq, Q_W] = w
                        q[nq, Q_WRITE] = 0
                        q[nq, Q_NB] = 0
                        q[nq, Q_LAYER] = layer
                        lastq[c] = nq
                        lline[c] = line
                        nq += 1
            e0 = blk_ev[v, 0]
            e1 = e0 + blk_ev[v, 1]
        if op == OP_BLOCK or op == OP_FLAT:
            if op == OP_FLAT:
                skipped[3] += 1
            if hzm:
                if nhp == 0:
                    skipped[2] += 1  # nothing missing: all hits
                e1 = e0 + nhp  # only the accesses to lines of the missing lines' sets
            for ee in range(e0, e1):
                e = ee
                if hzm:
                    k = hp[ee - e0]
                    # the L1 D's last line: the previous access's, if it was not looked up
                    kp = k - 1
                    while kp > prevk and fr_t[ev_t[e0 + kp]] != L1D:
                        kp -= 1
                    if kp > prevk:
                        tp = ev_t[e0 + kp]
                        ln = (ptr[tp] + ev_off[e0 + kp] + ev_nb[e0 + kp] - 1) >> dsh
                        b = doff + (ln & (dsets - 1)) * dways
                        for k2 in range(dways):
                            if tags[b + k2] == ln:
                                dlastway = b + k2
                        dlast = ln
                    prevk = k
                    e = e0 + k
                    a = ptr[ev_t[e]] + ev_off[e]
                    hzw += max(ev_acc[e], ((a + ev_nb[e] - 1) >> dsh) - (a >> dsh) + 1)
                t = ev_t[e]
                nb = ev_nb[e]
                if nb > 0:
                    addr = ptr[t] + ev_off[e]
                    write = ev_w[e]
                    if fast:
                        c = fr_t[t]
                    else:
                        sz = lsize[t]
                        if sz > 0:
                            rel = addr - lbase[t]
                            if rel < 0 or rel >= sz:
                                addr = lbase[t] + rel % sz  # stay inside the buffer
                        c = tcl[2 * t + write]
                        if c == NO_ROUTE:
                            mem = (addr >> MEM_SHIFT) - 1
                            # a stream with no base (outside every memory) is not simulated
                            c = rd[2 * mem + write] if 0 <= mem < nmem else -1
                    if c == L1D and dnow:
                        # the L1 D lookup of _process, inline (same steps and counters)
                        l0 = addr >> dsh
                        l1 = (addr + nb - 1) >> dsh
                        if l0 == l1:
                            # the common case, one line that hits: the loop's steps below
                            # for it (the line seen last is always in way dlastway, so the
                            # search finds it there; only another line moves clock/stamp)
                            b = doff + (l0 & (dsets - 1)) * dways
                            found = -1
                            if dways == 4:
                                found = b if tags[b] == l0 else found
                                found = b + 1 if tags[b + 1] == l0 else found
                                found = b + 2 if tags[b + 2] == l0 else found
                                found = b + 3 if tags[b + 3] == l0 else found
                            else:
                                for k in range(dways):
                                    if tags[b + k] == l0:
                                        found = b + k
                            if found >= 0:
                                ww = ev_acc[e]
                                dh += ww if ww > 0 else 1
                                if dlru:
                                    if l0 != dlast:
                                        dclock += 1
                                        stamp[found] = dclock
                                # (an LRU's hit stamps; no other policy reads stamps)
                                dlast = l0
                                dlastway = found
                                if write:
                                    if dwb:
                                        dirty[found] = 1
                                    else:
                                        mst[layer, ((l0 << dsh) >> MEM_SHIFT) - 1, M_WT] += nb
                                ptr[t] += ev_post[e]
                                continue
                        w = ev_acc[e] - (l1 - l0)
                        for line in range(l0, l1 + 1):
                            ww = w if w > 0 else 1
                            wnb = nb if (write and line == l0) else 0
                            w = 1
                            if line == dlast:
                                dh += ww
                                if write:
                                    if dwb:
                                        dirty[dlastway] = 1
                                    else:
                                        mst[layer, ((line << dsh) >> MEM_SHIFT) - 1, M_WT] += wnb
                                continue
                            s = line & (dsets - 1)
                            b = doff + s * dways
                            dclock += 1
                            found = -1
                            if dways == 4:  # unrolled into branch-free selects
                                found = b if tags[b] == line else found
                                found = b + 1 if tags[b + 1] == line else found
                                found = b + 2 if tags[b + 2] == line else found
                                found = b + 3 if tags[b + 3] == line else found
                            else:
                                for k in range(dways):  # a line sits in at most one way
                                    if tags[b + k] == line:
                                        found = b + k
                            if found >= 0:
                                stamp[found] = dclock
                                dh += ww
                                if write:
                                    if dwb:
                                        dirty[found] = 1
                                    else:
                                        mst[layer, ((line << dsh) >> MEM_SHIFT) - 1, M_WT] += wnb
                                dlast = line
                                dlastway = found
                                continue
                            dm = ((line << dsh) >> MEM_SHIFT) - 1
                            cst[layer, L1D, MISSES] += 1
                            dh += ww - 1
                            if line == dlast + 1:
                                cst[layer, L1D, SEQ_MISSES] += 1
                            if write and not dwa:
                                mst[layer, dm, M_WT] += wnb  # write around: state unchanged
                                continue
                            victim = _victim(tags, stamp, rr, st, L1D, b, dways, dpol, dsoff + s)
                            old = tags[victim]
                            if old != -1 and dirty[victim]:
                                cst[layer, L1D, WRITEBACKS] += 1
                                mst[layer, ((old << dsh) >> MEM_SHIFT) - 1, M_WB] += 1
                            tags[victim] = line
                            stamp[victim] = dclock
                            dirty[victim] = 1 if (write and dwb) else 0
                            dlast = line
                            dlastway = victim
                            if write and not dwb:
                                mst[layer, dm, M_WT] += wnb
                            mst[layer, dm, M_L1_FILL] += 1
                            a = nxt_d[dm]
                            if a >= 0:  # the miss goes on to the accelerator: queued
                                q[nq, Q_CACHE] = a
                                q[nq, Q_LINE] = (line << dsh) >> csh[a]
                                q[nq, Q_W] = 1
                                q[nq, Q_WRITE] = 0
                                q[nq, Q_NB] = 0
                                q[nq, Q_LAYER] = layer
                                nq += 1
                    elif c >= 0:
                        sh = csh[c]
                        l0 = addr >> sh
                        l1 = (addr + nb - 1) >> sh
                        wa = cwa[c] != 0
                        if l0 == l1:  # the common case: one line (the loop below, unrolled)
                            ww = ev_acc[e]
                            if ww < 1:
                                ww = 1
                            j = lastq[c]
                            if lline[c] == l0 and (wa or (write == 0 and q[j, Q_WRITE] == 0)):
                                q[j, Q_W] += ww
                                if write:
                                    q[j, Q_NB] += nb
                                    q[j, Q_WRITE] = 1
                            else:
                                q[nq, Q_CACHE] = c
                                q[nq, Q_LINE] = l0
                                q[nq, Q_W] = ww
                                q[nq, Q_WRITE] = write
                                q[nq, Q_NB] = nb if write else 0
                                q[nq, Q_LAYER] = layer
                                lastq[c] = nq
                                lline[c] = l0
                                nq += 1
                            ptr[t] += ev_post[e]
                            continue
                        w = ev_acc[e] - (l1 - l0)
                        for line in range(l0, l1 + 1):
                            ww = w if w > 0 else 1
                            wnb = nb if (write and line == l0) else 0
                            j = lastq[c]
                            if lline[c] == line and (wa or (write == 0 and q[j, Q_WRITE] == 0)):
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
                                lline[c] = line
                                nq += 1
                            w = 1
                ptr[t] += ev_post[e]
            if hzm:
                # the accesses only counted: their weights, their written lines dirty, the
                # last line if it was theirs; then the pointers' moves
                wsum = 0
                for k in range(rinfo[frow, R_TL0], rinfo[frow, R_TL1]):
                    t = ftl[k]
                    if fr_t[t] != L1D:
                        continue
                    p = ptr[t]
                    wsum += tinfo[frow, t, T_W]
                    al = tinfo[frow, t, T_ALIGN]
                    if al < 0 or (al > 0 and (p & (al - 1)) != 0):
                        for k2 in range(rinfo[frow, R_CX0], rinfo[frow, R_CX1]):
                            if fcx[k2, 0] == t:
                                a = p + fcx[k2, 1]
                                nl = ((a + fcx[k2, 2] - 1) >> dsh) - (a >> dsh) + 1
                                if nl > fcx[k2, 3]:
                                    wsum += (nl - fcx[k2, 3]) * fcx[k2, 4]
                dh += wsum - hzw
                for k in range(rinfo[frow, R_WC0], rinfo[frow, R_WC1]):
                    t = fwc[k, 0]
                    if fr_t[t] != L1D:
                        continue
                    p = ptr[t]
                    a1 = (p + fwc[k, 2] - 1) >> dsh
                    for ln in range((p + fwc[k, 1]) >> dsh, a1 + 1):
                        s = ln & (dsets - 1)
                        if hz[s] == gen:
                            continue  # looked up (and made dirty) in order
                        b = doff + s * dways
                        for k2 in range(dways):
                            if tags[b + k2] == ln:
                                dirty[b + k2] = 1
                kp = rinfo[frow, R_FE1] - e0 - 1  # the iteration's last access
                while kp > prevk and (ev_nb[e0 + kp] == 0 or fr_t[ev_t[e0 + kp]] != L1D):
                    kp -= 1
                if kp > prevk:
                    tp = ev_t[e0 + kp]
                    ln = (ptr[tp] + ev_off[e0 + kp] + ev_nb[e0 + kp] - 1) >> dsh
                    b = doff + (ln & (dsets - 1)) * dways
                    for k2 in range(dways):
                        if tags[b + k2] == ln:
                            dlastway = b + k2
                    dlast = ln
                for t in range(N_TAGS):
                    ptr[t] += tinfo[frow, t, T_NET]
            if nq >= QCAP:
                pep += 1
                _process(q, nq, nxt_d, nxt_i, cfg, tags, stamp, dirty, rr, st, cst, mst)
                nq = 0
                lastq[:] = -1
                lline[:] = -1
            if op == OP_FLAT:
                pc = prog[f_pc[fl] + 4] - 2
            else:
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
            row = lrow[pc]
            fix = 0
            if row >= 0 and prog[pc + 1] >= 3 and lwork[row] >= min_work:
                fix = 1
                for t in range(N_TAGS):
                    if lmove[row, t] != 0:
                        mem = (base[layer, t] >> MEM_SHIFT) - 1
                        if 0 <= mem < nmem and (route_d[mem, 0] >= 0 or route_d[mem, 1] >= 0):
                            fix = 0
                            break
            f_fix[depth] = fix
            f_fail[depth] = 0
            f_wait[depth] = 0
            fi_fail[depth] = 0
            fi_wait[depth] = 0
            att = depth
            # Flattened: a loop whose iteration's accesses and fetches are worked out
            # (_footprints) runs each iteration as one block -- the same accesses in the
            # same order, the same fetch requests, the same pointer moves -- without
            # walking its inner loops; unless the data-side fixed point could skip some of
            # its loops (then they are walked, to be skipped)
            if row >= 0 and rinfo[row, R_OK] != 0 and flat_ok:
                fl = depth
                frow = row
                for k in range(rinfo[row, R_SB0], rinfo[row, R_SB1]):
                    p2 = fsub[k]
                    r2 = lrow[p2]
                    if r2 >= 0 and prog[p2 + 1] >= 3 and lwork[r2] >= min_work:
                        moving_cached = False
                        for t in range(N_TAGS):
                            if lmove[r2, t] != 0:
                                mem = (base[layer, t] >> MEM_SHIFT) - 1
                                if 0 <= mem < nmem and (
                                    route_d[mem, 0] >= 0 or route_d[mem, 1] >= 0
                                ):
                                    moving_cached = True
                                    break
                        if not moving_cached:
                            fl = -1
                            break
                if fl >= 0:
                    att = -1  # (its iterations check their lines themselves)
            depth += 1
            pc += 5
        elif op == OP_END:
            if dnow:  # sync
                cst[layer, L1D, HITS] += dh
                dh = 0
                st[L1D, S_LAST] = dlast
                st[L1D, S_LASTWAY] = dlastway
                st[L1D, S_CLOCK] = dclock
            d = depth - 1
            lpc = f_pc[d]
            count = prog[lpc + 1]
            if ifix == d:  # this iteration's fetches, added instead of simulated
                skipped[1] += 1
                for c in range(ncache):
                    if igroup[c] != 0:
                        for j in range(4):
                            cst[layer, c, j] += di_cst[c, j]
                        mst[layer, cmem, M_L1_FILL if c == L1I else M_ACC_FILL] += di_cst[c, MISSES]
            if f_wait[d] > 0:
                f_wait[d] -= 1
            elif f_fix[d] != 0 and (slot == -1 or slot == d) and f_it[d] + 1 < count:
                pep += 1
                _process(q, nq, nxt_d, nxt_i, cfg, tags, stamp, dirty, rr, st, cst, mst)
                nq = 0
                lastq[:] = -1
                lline[:] = -1
                _lru_ranks(cfg, tags, stamp, rank)
                same = slot == d
                if same:
                    same = _same_state(cfg, tags, dirty, rank, rr, st, s_tags, s_dirty,
                                       s_rank, s_rr, s_st, all_c)  # fmt: skip
                if same:
                    k = count - f_it[d] - 1  # iterations left: each adds the same counters
                    for c in range(ncache):
                        for j in range(4):
                            cst[layer, c, j] += (cst[layer, c, j] - s_cst[c, j]) * k
                    for mm in range(nmem):
                        for j in range(4):
                            mst[layer, mm, j] += (mst[layer, mm, j] - s_mst[mm, j]) * k
                    row = lrow[lpc]
                    for t in range(N_TAGS):  # pointers not set by a rule move on
                        ptr[t] += k * lmove[row, t]
                    f_it[d] += k
                    skipped[0] += k
                    slot = -1
                    f_fix[d] = 0
                elif slot == d:  # not yet: wait 0, 1, 3, 7, ... (at most 255) iterations
                    f_wait[d] = (1 << f_fail[d]) - 1
                    if f_fail[d] < 8:
                        f_fail[d] += 1
                    slot = -1
                else:
                    s_tags[:] = tags
                    s_dirty[:] = dirty
                    s_rank[:] = rank
                    s_rr[:] = rr
                    s_st[:, :] = st
                    for c in range(ncache):
                        for j in range(4):
                            s_cst[c, j] = cst[layer, c, j]
                    for mm in range(nmem):
                        for j in range(4):
                            s_mst[mm, j] = mst[layer, mm, j]
                    slot = d
            if (
                has_i > 0 and ifix < 0 and (islot == -1 or islot == d)
                and prog[lpc + 1] >= 3 and lwork[lrow[lpc]] >= min_work
                and f_it[d] + 1 < count
            ):  # fmt: skip
                if fi_wait[d] > 0:
                    fi_wait[d] -= 1
                else:
                    pep += 1
                    _process(q, nq, nxt_d, nxt_i, cfg, tags, stamp, dirty, rr, st, cst, mst)
                    nq = 0
                    lastq[:] = -1
                    lline[:] = -1
                    _lru_ranks(cfg, tags, stamp, rank)
                    same = islot == d
                    if same:
                        same = _same_state(cfg, tags, dirty, rank, rr, st, i_tags, i_dirty,
                                           i_rank, i_rr, i_st, igroup)  # fmt: skip
                    if same:
                        for c in range(ncache):
                            for j in range(4):
                                di_cst[c, j] = cst[layer, c, j] - i_cst[c, j]
                        ifix = d
                        islot = -1
                    elif islot == d:
                        fi_wait[d] = (1 << fi_fail[d]) - 1
                        if fi_fail[d] < 8:
                            fi_fail[d] += 1
                        islot = -1
                    else:
                        i_tags[:] = tags
                        i_dirty[:] = dirty
                        i_rank[:] = rank
                        i_rr[:] = rr
                        i_st[:, :] = st
                        for c in range(ncache):
                            for j in range(4):
                                i_cst[c, j] = cst[layer, c, j]
                        islot = d
            f_it[d] += 1
            it = f_it[d]
            for r in range(prog[lpc + 2], prog[lpc + 3]):
                p = f_entry[d, rules[r, 0]] + rules[r, 2] + it * rules[r, 1]
                ev = rules[r, 3]
                if ev > 0:
                    p += ((it + rules[r, 5]) // ev) * rules[r, 4]
                ptr[rules[r, 0]] = p
            if it < count:
                pc = lpc + 5
                if fl != d:
                    att = d
            else:
                if slot == d:
                    slot = -1
                if islot == d:
                    islot = -1
                if ifix == d:
                    ifix = -1
                if fl == d:
                    fl = -1
                depth -= 1
                pc += 2
        else:  # OP_LAYER
            if dnow:  # sync
                cst[layer, L1D, HITS] += dh
                dh = 0
                st[L1D, S_LAST] = dlast
                st[L1D, S_LASTWAY] = dlastway
                st[L1D, S_CLOCK] = dclock
            layer = prog[pc + 1]
            lline[:] = -1  # requests of another layer are never merged
            lbase[:] = base[layer]
            lsize[:] = size[layer]
            _tag_routes(base[layer], size[layer], rd, nmem, tcl)
            for t in range(N_TAGS):
                ptr[t] = base[layer, t]
            pc += 2
    if dnow:  # sync
        cst[layer, L1D, HITS] += dh
        dh = 0
        st[L1D, S_LAST] = dlast
        st[L1D, S_LASTWAY] = dlastway
        st[L1D, S_CLOCK] = dclock
    pep += 1
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
    skipped_iterations: int = 0  # loop iterations added by the fixed-point shortcut
    fetch_skipped_iterations: int = 0  # iterations whose fetches were added, not simulated
    hit_skipped_iterations: int = 0  # iterations of all hits counted, not walked
    flattened_iterations: int = 0  # iterations run from their worked-out access list

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


@dataclass
class Levels:
    """The cache levels of a device and how accesses reach them (built by :func:`levels`):
    ``configs``/``names`` per level (0 = L1 D, 1 = L1 I, then accelerators), ``owner``
    (accelerator level -> its memory), ``route_d[mem, is_write]`` / ``route_i[mem]`` the
    first level an access goes to (-1: none), ``accd``/``acci`` the accelerator behind
    the L1 for each memory (-1: none)."""

    configs: list
    names: list[str]
    owner: dict[str, str]
    route_d: np.ndarray
    route_i: np.ndarray
    accd: np.ndarray
    acci: np.ndarray


def levels(
    memories: list, dcache: CacheConfig | None = None, icache: CacheConfig | None = None
) -> Levels:
    """The cache levels in front of ``memories`` (``cached`` memories go through the L1
    caches; an ``accelerator`` adds its caches; TCMs are never cached)."""
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
    return Levels(configs, names, owner, route_d, route_i, accd, acci)


def _result(lv: Levels, memories: list, cst: np.ndarray, mst: np.ndarray) -> SimResult:
    # levels no access reached (e.g. the accelerator of a flash path nothing is placed on)
    # are left out of the results
    configs, names = lv.configs, lv.names
    used = [i for i, c in enumerate(configs) if c is not None and cst[:, i, :2].any()]
    caches = {names[i]: cst[:, i] for i in used}
    lines = {names[i]: configs[i].line_bytes for i in used}
    mems = {m.name: mst[:, i] for i, m in enumerate(memories)}
    return SimResult(caches, mems, lines, {k: v for k, v in lv.owner.items() if k in caches})


def _loop_meta(cs: CompiledStream) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per OP_LOOP of the bytecode (``lrow[pc]`` -> row): ``lmove[row, tag]``, how far the
    tag's pointer moves from one iteration to the next when no rule of the loop sets it
    (the body's writebacks and moves, inner loops included), and a nonzero marker when a
    rule of the loop moves it (step, or row skips); ``lwork[row]``: block executions +
    accesses of one iteration (inner loops multiplied out)."""
    return _loop_meta_nb(cs.prog, cs.events, cs.blk_ev, cs.rules)


@njit(cache=True)
def _loop_meta_nb(prog, ev, blk_ev, rules):
    """:func:`_loop_meta` in one pass over the bytecode: loops are numbered in the order
    they start; a stack holds the enclosing loops' net moves and work until their END."""
    nb = blk_ev.shape[0]
    blk_net = np.zeros((nb, N_TAGS), np.int64)
    blk_w = np.zeros(nb, np.int64)
    for b in range(nb):
        s0 = blk_ev[b, 0]
        n = blk_ev[b, 1]
        for e in range(s0, s0 + n):
            blk_net[b, ev[e, 0]] += ev[e, 5]
        blk_w[b] = n + 1
    n_prog = prog.shape[0]
    n_loops = 0
    for pc in range(n_prog):  # an upper bound (operands may equal OP_LOOP): sizes only
        if prog[pc] == OP_LOOP:
            n_loops += 1
    lrow = np.full(n_prog, -1, np.int64)
    moves = np.zeros((n_loops, N_TAGS), np.int64)
    work = np.zeros(n_loops, np.int64)
    net = np.zeros((n_loops + 1, N_TAGS), np.int64)  # per depth: net moves so far
    wk = np.zeros(n_loops + 1, np.int64)
    at = np.zeros(n_loops + 1, np.int64)  # per depth: pc of its OP_LOOP
    rows = 0
    d = 0
    pc = 0
    while pc < n_prog:
        op = prog[pc]
        if op == OP_BLOCK:
            b = prog[pc + 1]
            for t in range(N_TAGS):
                net[d, t] += blk_net[b, t]
            wk[d] += blk_w[b]
            pc += 2
        elif op == OP_LOOP:
            lrow[pc] = rows
            rows += 1
            d += 1
            at[d] = pc
            for t in range(N_TAGS):
                net[d, t] = 0
            wk[d] = 0
            pc += 5
        elif op == OP_END:
            lp = at[d]
            row = lrow[lp]
            count = prog[lp + 1]
            lo = prog[lp + 2]
            hi = prog[lp + 3]
            for t in range(N_TAGS):
                moves[row, t] = net[d, t]
                net[d - 1, t] += count * net[d, t]
            for r in range(lo, hi):
                tag = rules[r, 0]
                step = rules[r, 1]
                every = rules[r, 3]
                skip = rules[r, 4]
                n_rows = (count + rules[r, 5]) // every if every else 0
                # the rule sets the pointer: undo the body's moves, apply the rule's
                net[d - 1, tag] += rules[r, 2] + count * step + n_rows * skip
                net[d - 1, tag] -= count * net[d, tag]
                moves[row, tag] = 0
            for r in range(lo, hi):
                if rules[r, 1] != 0 or (rules[r, 3] and rules[r, 4] != 0):
                    moves[row, rules[r, 0]] = 1  # a rule moves it: never a fixed point here
            work[row] = wk[d]
            wk[d - 1] += count * wk[d]
            d -= 1
            pc += 2
        else:
            pc += 2
    return lrow, moves[:rows].copy(), work[:rows].copy()


# ------------------------------------------------------- all-hit iterations (footprints)
# Per loop (row of _loop_meta), what one iteration does, relative to the stream pointers at
# the iteration's start (the same for every iteration: every pointer move is static).
# Row columns (rinfo): footprint worked out, ranges into the tag list, touched ranges,
# written ranges, line-crossing accesses and fetch requests
R_OK, R_TL0, R_TL1, R_CL0, R_CL1, R_WC0, R_WC1, R_CX0, R_CX1, R_FQ0, R_FQ1 = range(11)
R_FE0, R_FE1, R_SB0, R_SB1 = range(11, 15)  # its accesses as events; its loops (their pcs)
# its fetches when all go to the L1 I: their lines (a range of a list), weight, last line
R_IOK, R_IL0, R_IL1, R_IW, R_ILAST = range(15, 20)
R_N = 20
# per (row, tag) columns (tinfo): access kinds (bit 0 read, bit 1 write), lowest / highest
# access start, lowest byte / end of the bytes touched, sum of max(accesses, 1), bytes
# written, position of the tag's last access and the offset of its last byte, a pointer
# alignment under which no access crosses more lines than it counts accesses (0: none can;
# -1: none found), how far the iteration moves the pointer
T_HAS, T_MINST, T_MAXST, T_LO, T_HI, T_W, T_WBYTES, T_LASTPOS, T_LASTEND, T_ALIGN, T_NET = range(11)
# ... and its accesses sorted by offset (a range of the sorted list) and their largest size
T_S0, T_S1, T_MAXNB = range(11, 14)
T_N = 14


@njit(cache=True)
def _footprints(prog, events, blk_ev, blk_code, rules, lrow, lwork, cap, min_work,
                dsh, csh, fshift, route_i, qmax):  # fmt: skip
    """What one iteration touches, for every loop whose iteration does between
    ``min_work`` and ``cap`` block executions + accesses (``lwork``): per stream tag the
    byte ranges it touches (merged while the gap between two is shorter than a D line of
    ``1 << dsh`` bytes, so every line a range overlaps is touched), the ranges it writes,
    its access weights and last access, the accesses that may cross a line (grouped by
    offset within a line), its accesses per tag sorted by offset, its fetch requests as
    the walk queues them (per cache, a request for the line of that cache's previous one
    merged into it; at most ``qmax``, else the loop is left out) and, when they all go to
    the L1 I, their distinct lines; the iteration as events (accesses, then pointer
    moves) for flattened runs, and the bytecode positions of the loop and its inner loops."""
    nrows = lwork.shape[0]
    line = np.int64(1) << dsh
    nmem = route_i.shape[0]
    ncache = csh.shape[0]
    rinfo = np.zeros((nrows, R_N), dtype=np.int64)
    tinfo = np.zeros((nrows, N_TAGS, T_N), dtype=np.int64)
    total = 1
    for r in range(nrows):
        if min_work <= lwork[r] <= cap:
            total += lwork[r]
    ftl = np.zeros(total, dtype=np.int64)  # tags with accesses
    cl = np.zeros((total, 3), dtype=np.int64)  # tag, lo, hi (touched)
    wc = np.zeros((total, 3), dtype=np.int64)  # tag, lo, hi (written)
    cx = np.zeros((total, 5), dtype=np.int64)  # tag, offset in a line, bytes, accesses, count
    fq = np.zeros((total, 3), dtype=np.int64)  # cache, line, weight
    fe = np.zeros((total + nrows * N_TAGS, 6), dtype=np.int64)  # an iteration as events
    fsub = np.zeros(total + nrows, dtype=np.int64)  # pcs of the loop and its inner loops
    fso = np.zeros((total, 3), dtype=np.int64)  # per tag by offset: position, offset, end
    nso = 0
    il = np.zeros(total, dtype=np.int64)  # L1 I lines
    nil = 0
    ntl = ncl = nwc = ncx = nfq = nfe = nsub = 0
    acc = np.zeros((cap + 1, 5), dtype=np.int64)  # tag, offset, bytes, accesses, write
    blks = np.zeros(cap + 1, dtype=np.int64)
    keys = np.zeros(cap + 1, dtype=np.int64)
    ptr = np.zeros(N_TAGS, dtype=np.int64)
    fpc = np.zeros(64, dtype=np.int64)
    fit = np.zeros(64, dtype=np.int64)
    fent = np.zeros((64, N_TAGS), dtype=np.int64)
    qlast = np.zeros(ncache, dtype=np.int64)
    qline = np.zeros(ncache, dtype=np.int64)
    n = prog.shape[0]
    pc = 0
    while pc < n:
        if prog[pc] != OP_LOOP:
            pc += 2
            continue
        row = lrow[pc]
        pc0 = pc
        pc += 5
        if row < 0 or lwork[row] > cap or lwork[row] < min_work:
            continue
        # one iteration of the body, as _run walks it, pointers relative to its start
        ptr[:] = 0
        q = pc0 + 5
        end = prog[pc0 + 4] - 2
        d = 0
        na = 0
        nbk = 0
        # the loop and the loops inside it (their bytecode positions)
        rinfo[row, R_SB0] = nsub
        q = pc0
        while q < end:
            if prog[q] == OP_LOOP:
                fsub[nsub] = q
                nsub += 1
                q += 5
            else:
                q += 2
        rinfo[row, R_SB1] = nsub
        q = pc0 + 5
        while q < end:
            op = prog[q]
            if op == OP_BLOCK:
                v = prog[q + 1]
                blks[nbk] = v
                nbk += 1
                for e in range(blk_ev[v, 0], blk_ev[v, 0] + blk_ev[v, 1]):
                    t = events[e, 0]
                    if events[e, 2] > 0:
                        acc[na, 0] = t
                        acc[na, 1] = ptr[t] + events[e, 1]
                        acc[na, 2] = events[e, 2]
                        acc[na, 3] = max(events[e, 3], 1)
                        acc[na, 4] = events[e, 4]
                        na += 1
                    ptr[t] += events[e, 5]
                q += 2
            elif op == OP_LOOP:
                fpc[d] = q
                fit[d] = 0
                for t in range(N_TAGS):
                    fent[d, t] = ptr[t]
                for r in range(prog[q + 2], prog[q + 3]):
                    p = fent[d, rules[r, 0]] + rules[r, 2]
                    if rules[r, 3] > 0:
                        p += (rules[r, 5] // rules[r, 3]) * rules[r, 4]
                    ptr[rules[r, 0]] = p
                d += 1
                q += 5
            else:  # OP_END
                dd = d - 1
                lpc = fpc[dd]
                fit[dd] += 1
                it = fit[dd]
                for r in range(prog[lpc + 2], prog[lpc + 3]):
                    p = fent[dd, rules[r, 0]] + rules[r, 2] + it * rules[r, 1]
                    ev = rules[r, 3]
                    if ev > 0:
                        p += ((it + rules[r, 5]) // ev) * rules[r, 4]
                    ptr[rules[r, 0]] = p
                if it < prog[lpc + 1]:
                    q = lpc + 5
                else:
                    d -= 1
                    q += 2
        # fetch requests, merged per cache like the walk's queue
        rinfo[row, R_FQ0] = nfq
        qline[:] = -1
        nreq = 0
        for k in range(nbk):
            v = blks[k]
            addr = blk_code[v, 0]
            nb = blk_code[v, 1]
            mem = (addr >> MEM_SHIFT) - 1
            if nb <= 0 or mem < 0 or mem >= nmem or route_i[mem] < 0:
                continue
            c = route_i[mem]
            sh = csh[c]
            e = addr + nb
            for ln in range(addr >> sh, ((e - 1) >> sh) + 1):
                lo = ln << sh
                hi = lo + (np.int64(1) << sh)
                if lo < addr:
                    lo = addr
                if hi > e:
                    hi = e
                w = ((hi - 1) >> fshift) - (lo >> fshift) + 1
                if qline[c] == ln:
                    fq[qlast[c], 2] += w
                    continue
                nreq += 1
                if nreq > qmax or nfq >= fq.shape[0]:
                    break
                fq[nfq, 0] = c
                fq[nfq, 1] = ln
                fq[nfq, 2] = w
                qlast[c] = nfq
                qline[c] = ln
                nfq += 1
        rinfo[row, R_FQ1] = nfq
        if nreq > qmax or nfq >= fq.shape[0]:
            continue  # too many requests for the queue's margin: never skipped
        # when every fetch goes to the L1 I: its distinct lines, their weight, the last one
        iok = 1 if nfq > rinfo[row, R_FQ0] else 0
        iw = 0
        for k in range(rinfo[row, R_FQ0], nfq):
            iok = iok if fq[k, 0] == L1I else 0
            iw += fq[k, 2]
        rinfo[row, R_IOK] = iok
        rinfo[row, R_IW] = iw
        rinfo[row, R_IL0] = nil
        if iok and nfq > rinfo[row, R_FQ0]:
            rinfo[row, R_ILAST] = fq[nfq - 1, 1]
            u = np.sort(fq[rinfo[row, R_FQ0] : nfq, 1])
            for k in range(u.shape[0]):
                if k == 0 or u[k] != u[k - 1]:
                    il[nil] = u[k]
                    nil += 1
        rinfo[row, R_IL1] = nil
        # per tag: how far the iteration moves its pointer (a rule of the loop, applied at
        # its end, overrides it), kinds, extent, weights, last access, alignment
        for t in range(N_TAGS):
            tinfo[row, t, T_NET] = ptr[t]
        # the iteration as one block's events: every access at its offset from the
        # pointers at the iteration's start, then each pointer's move
        rinfo[row, R_FE0] = nfe
        for k in range(na):
            fe[nfe, 0] = acc[k, 0]
            fe[nfe, 1] = acc[k, 1]
            fe[nfe, 2] = acc[k, 2]
            fe[nfe, 3] = acc[k, 3]
            fe[nfe, 4] = acc[k, 4]
            nfe += 1
        for t in range(N_TAGS):
            if ptr[t] != 0:
                fe[nfe, 0] = t
                fe[nfe, 5] = ptr[t]
                nfe += 1
        rinfo[row, R_FE1] = nfe
        rinfo[row, R_TL0] = ntl
        for k in range(na):
            t = acc[k, 0]
            o = acc[k, 1]
            nb = acc[k, 2]
            if tinfo[row, t, T_HAS] == 0:
                ftl[ntl] = t
                ntl += 1
                tinfo[row, t, T_MINST] = o
                tinfo[row, t, T_MAXST] = o
                tinfo[row, t, T_LO] = o
                tinfo[row, t, T_HI] = o + nb
            tinfo[row, t, T_HAS] |= 1 << acc[k, 4]
            tinfo[row, t, T_MINST] = min(tinfo[row, t, T_MINST], o)
            tinfo[row, t, T_MAXST] = max(tinfo[row, t, T_MAXST], o)
            tinfo[row, t, T_LO] = min(tinfo[row, t, T_LO], o)
            tinfo[row, t, T_HI] = max(tinfo[row, t, T_HI], o + nb)
            tinfo[row, t, T_W] += acc[k, 3]
            if acc[k, 4]:
                tinfo[row, t, T_WBYTES] += nb
            tinfo[row, t, T_LASTPOS] = k
            tinfo[row, t, T_LASTEND] = o + nb - 1
            # an access counted as fewer accesses than the lines it may span: crossing a
            # line adds to its weight, unless the pointer's alignment keeps it in one
            if acc[k, 3] < (nb + line - 2) // line + 1 and tinfo[row, t, T_ALIGN] >= 0:
                a = 1
                while a < nb:
                    a *= 2
                tinfo[row, t, T_ALIGN] = -1 if a > line else max(tinfo[row, t, T_ALIGN], a)
        rinfo[row, R_TL1] = ntl
        for k in range(na):  # the alignment works when every such offset is a multiple
            t = acc[k, 0]
            al = tinfo[row, t, T_ALIGN]
            if al > 0 and acc[k, 3] < (acc[k, 2] + line - 2) // line + 1 and acc[k, 1] % al:
                tinfo[row, t, T_ALIGN] = -1
        # touched and written ranges per tag, merged while gaps are shorter than a line
        for k in range(na):
            keys[k] = (acc[k, 0] << 44) + ((acc[k, 1] + (1 << 42)) << 1) + acc[k, 4]
        order = np.argsort(keys[:na])
        for k in order:
            t = acc[k, 0]
            if tinfo[row, t, T_S1] == 0:
                tinfo[row, t, T_S0] = nso
            fso[nso, 0] = k
            fso[nso, 1] = acc[k, 1]
            fso[nso, 2] = acc[k, 1] + acc[k, 2]
            nso += 1
            tinfo[row, t, T_S1] = nso
            tinfo[row, t, T_MAXNB] = max(tinfo[row, t, T_MAXNB], acc[k, 2])
        rinfo[row, R_CL0] = ncl
        rinfo[row, R_WC0] = nwc
        ct = wt = -1
        clo = chi = wlo = whi = 0
        for k in order:
            t = acc[k, 0]
            o = acc[k, 1]
            hi = o + acc[k, 2]
            if t == ct and o < chi + line:
                chi = max(chi, hi)
            else:
                if ct >= 0:
                    cl[ncl, 0] = ct
                    cl[ncl, 1] = clo
                    cl[ncl, 2] = chi
                    ncl += 1
                ct = t
                clo = o
                chi = hi
            if acc[k, 4]:
                if t == wt and o < whi + line:
                    whi = max(whi, hi)
                else:
                    if wt >= 0:
                        wc[nwc, 0] = wt
                        wc[nwc, 1] = wlo
                        wc[nwc, 2] = whi
                        nwc += 1
                    wt = t
                    wlo = o
                    whi = hi
        if ct >= 0:
            cl[ncl, 0] = ct
            cl[ncl, 1] = clo
            cl[ncl, 2] = chi
            ncl += 1
        if wt >= 0:
            wc[nwc, 0] = wt
            wc[nwc, 1] = wlo
            wc[nwc, 2] = whi
            nwc += 1
        rinfo[row, R_CL1] = ncl
        rinfo[row, R_WC1] = nwc
        # accesses that may cross a line, counted per (tag, offset in a line, bytes, count)
        rinfo[row, R_CX0] = ncx
        m = 0
        for k in range(na):
            t = acc[k, 0]
            if tinfo[row, t, T_ALIGN] != 0 and acc[k, 3] < (acc[k, 2] + line - 2) // line + 1:
                keys[m] = (((t * line + acc[k, 1] % line) << 20) + acc[k, 2]) * 4096 + acc[k, 3]
                m += 1
        if m > 0:
            srt = np.sort(keys[:m])
            for k in range(m):
                if k > 0 and srt[k] == srt[k - 1]:
                    cx[ncx - 1, 4] += 1
                    continue
                key = srt[k]
                cx[ncx, 3] = key % 4096
                key //= 4096
                cx[ncx, 2] = key & ((1 << 20) - 1)
                key >>= 20
                cx[ncx, 1] = key % line
                cx[ncx, 0] = key // line
                cx[ncx, 4] = 1
                ncx += 1
        rinfo[row, R_CX1] = ncx
        rinfo[row, R_OK] = 1
    return (
        rinfo, tinfo, ftl, cl[: max(ncl, 1)], wc[: max(nwc, 1)], cx[: max(ncx, 1)], fq,
        fe[:nfe], fsub[: max(nsub, 1)], fso[: max(nso, 1)], il[: max(nil, 1)],
    )  # fmt: skip


def _instruction_group(cs: CompiledStream, lv: Levels) -> tuple[np.ndarray, int]:
    """The levels only instruction fetches reach (mask per level; empty when the code
    spans memories, or a data access or a data-side miss can reach one of them) and the
    code memory's index."""
    n = len(lv.configs)
    none = np.zeros(n, dtype=np.int64), 0
    code = cs.blk_code[cs.blk_code[:, 1] > 0, 0] if len(cs.blk_code) else cs.blk_code[:, 0]
    mems = set(((code >> MEM_SHIFT) - 1).tolist())
    nm = lv.route_i.shape[0]
    if len(mems) != 1:
        return none
    cmem = mems.pop()
    if not 0 <= cmem < nm or lv.route_i[cmem] < 0:
        return none
    group = {int(lv.route_i[cmem])}
    if lv.route_i[cmem] == L1I and lv.acci[cmem] >= 0:
        group.add(int(lv.acci[cmem]))
    data = set(lv.route_d.ravel().tolist())
    for m in range(nm):
        if lv.route_d[m, 0] == L1D or lv.route_d[m, 1] == L1D:
            data.add(int(lv.accd[m]))  # an L1 D miss goes on to this memory's accelerator
    if group & data:
        return none
    mask = np.zeros(n, dtype=np.int64)
    mask[list(group)] = 1
    return mask, cmem


def _dnow_ok(lv: Levels) -> bool:
    """Whether :func:`_run` may look the L1 D-cache's requests up at once instead of
    queueing them (saves the queue's writes and reads on the hottest path).

    Exact when the accelerators behind the L1 D (for the misses to their memories) are
    reached by nothing else: no uncached read or fetch goes to one directly and no L1 I
    miss goes on to one. Then every cache still sees the same requests in the same order:
    the L1 D its own, in program order; the other levels their queued requests, in
    program order (they never interact with the L1 D's state); an accelerator behind the
    L1 D only its L1 D misses, in miss order (queued as they happen rather than appended
    after their batch: nothing else reaches it, so its sequence is the same). A request the
    queue would merge into the D-cache's previous one (same line) is, looked up alone, a
    hit on the line the cache saw last: the same counters, no change of replacement state
    (see _process)."""
    if lv.configs[L1D] is None:
        return False
    behind_d = set()
    others = {int(c) for c in lv.route_d.ravel().tolist() + lv.route_i.tolist() if c > L1I}
    for m in range(lv.route_i.shape[0]):
        if (lv.route_d[m] == L1D).any() and lv.accd[m] >= 0:
            behind_d.add(int(lv.accd[m]))
        if lv.route_i[m] == L1I and lv.acci[m] >= 0:
            others.add(int(lv.acci[m]))
    return not (behind_d & others)


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
    lv = levels(memories, dcache, icache)
    configs = lv.configs
    state = CacheState(configs, seed)
    L = cs.n_layers
    cst = np.zeros((L, len(configs), 4), dtype=np.int64)
    mst = np.zeros((L, len(memories), 4), dtype=np.int64)
    fshift = max(int(fetch_bytes), 1).bit_length() - 1
    # most requests one block execution can queue: every access spanning two lines, and
    # its code lines at the smallest line size
    min_line = min((c.line_bytes for c in configs if c is not None), default=4)
    per_block = 2 * cs.blk_ev[:, 1] + cs.blk_code[:, 1] // min_line + 2
    margin = int(per_block.max()) if len(per_block) else 2
    lrow, lmove, lwork = _loop_meta(cs)
    # a fixed-point check costs about a pass over the cache lines: loops with very small
    # iterations are not checked (failed checks back off exponentially anyway)
    min_work = 16
    skipped = np.zeros(4, dtype=np.int64)
    igroup, cmem = _instruction_group(cs, lv)
    dnow = _dnow_ok(lv)
    if FOOTPRINTS and dnow and dcache.replacement != "lru":
        # iterations whose every line is in the L1 D are counted, not walked (exact for a
        # replacement whose hits change nothing but the last line: random, round-robin)
        csh = np.array([c.line_bytes.bit_length() - 1 if c else 0 for c in configs], np.int64)
        fp = _footprints(
            cs.prog, cs.events, cs.blk_ev, cs.blk_code, cs.rules, lrow, lwork, FP_CAP,
            FP_MIN_WORK, int(csh[L1D]), csh, fshift, lv.route_i, margin,
        )  # fmt: skip
    else:
        fp = _NO_FOOTPRINTS(len(lwork))
    rinfo, tinfo, ftl, fcl, fwc, fcx, ffq, fe, fsub, fso, fil = fp
    # flattened iterations' events follow the blocks' (their ranges shifted to match)
    events = cs.events
    if len(fe):
        rinfo[:, R_FE0] += len(events)
        rinfo[:, R_FE1] += len(events)
        events = np.concatenate((events, fe))
    _run(
        cs.prog, events, cs.blk_ev, cs.blk_code, cs.rules, cs.base, cs.size, fshift, margin,
        lv.route_d, lv.route_i, lv.accd, lv.acci, state.cfg, state.tags, state.stamp,
        state.dirty, state.rr, state.st, cst, mst, lrow, lmove, lwork, min_work, skipped,
        igroup, cmem, dnow, rinfo, tinfo, ftl, fcl, fwc, fcx, ffq, fsub, fso, fil, FLATTEN,
        *(np.ascontiguousarray(events[:, j]) for j in range(6)),
    )  # fmt: skip
    res = _result(lv, memories, cst, mst)
    res.skipped_iterations = int(skipped[0])
    res.fetch_skipped_iterations = int(skipped[1])
    res.hit_skipped_iterations = int(skipped[2])
    res.flattened_iterations = int(skipped[3])
    return res


# loops whose iteration does more block executions + accesses than FP_CAP are never
# skipped as a whole (their footprint is not worked out), nor those doing fewer than
# FP_MIN_WORK (checking costs about as much as walking them)
FP_CAP = 1024
FP_MIN_WORK = 12


FOOTPRINTS = True  # the shortcuts of whole iterations (off: the plain walk, for tests)
FLATTEN = True  # ... and flattened loops


def _NO_FOOTPRINTS(nrows: int) -> tuple:
    z = np.zeros((1, 3), dtype=np.int64)
    return (
        np.zeros((max(nrows, 1), R_N), dtype=np.int64),
        np.zeros((max(nrows, 1), N_TAGS, T_N), dtype=np.int64),
        np.zeros(1, dtype=np.int64), z, z, np.zeros((1, 5), dtype=np.int64), z,
        np.zeros((0, 6), dtype=np.int64), np.zeros(1, dtype=np.int64), z,
        np.zeros(1, dtype=np.int64),
    )  # fmt: skip


# ------------------------------------------------------------------- recorded traces
# kinds of a recorded access (TraceSim.feed)
K_READ, K_WRITE, K_FETCH = 0, 1, 2


@njit(cache=True)
def _feed(
    addrs, nbytes, kinds, fshift, route_d, route_i, nxt_d, nxt_i,
    cfg, tags, stamp, dirty, rr, st, cst, mst,
):  # fmt: skip
    """Queue one request per (cache, line) of each recorded access, as :func:`_run` does for
    a compiled stream: a fetch of ``nbytes`` code bytes weighted by the fetch units in each
    line, a data access one core access per line; then process them in order."""
    n = addrs.shape[0]
    min_sh = 62
    for c in range(cfg.shape[0]):
        if cfg[c, C_SETS] > 0 and cfg[c, C_SHIFT] < min_sh:
            min_sh = cfg[c, C_SHIFT]
    q = np.zeros((2 * QCAP + 2 * 4096, 6), dtype=np.int64)
    nmem = route_i.shape[0]
    nq = 0
    for i in range(n):
        addr = addrs[i]
        nb = nbytes[i]
        k = kinds[i]
        mem = (addr >> MEM_SHIFT) - 1
        if nb <= 0 or mem < 0 or mem >= nmem:
            continue
        c = route_i[mem] if k == K_FETCH else route_d[mem, k]
        if c < 0:
            continue
        sh = cfg[c, C_SHIFT]
        end = addr + nb
        if ((end - 1) >> sh) - (addr >> sh) > 4000:
            continue  # cannot happen for a real access or block (bounded queue margin)
        for line in range(addr >> sh, ((end - 1) >> sh) + 1):
            if k == K_FETCH:
                lo = line << sh
                hi = lo + (1 << sh)
                if lo < addr:
                    lo = addr
                if hi > end:
                    hi = end
                w = ((hi - 1) >> fshift) - (lo >> fshift) + 1
            else:
                w = 1
            q[nq, Q_CACHE] = c
            q[nq, Q_LINE] = line
            q[nq, Q_W] = w
            q[nq, Q_WRITE] = 1 if k == K_WRITE else 0
            q[nq, Q_NB] = nb if (k == K_WRITE and line == addr >> sh) else 0
            q[nq, Q_LAYER] = 0
            nq += 1
        if nq >= QCAP:
            _process(q, nq, nxt_d, nxt_i, cfg, tags, stamp, dirty, rr, st, cst, mst)
            nq = 0
    _process(q, nq, nxt_d, nxt_i, cfg, tags, stamp, dirty, rr, st, cst, mst)


class TraceSim:
    """The caches of a device fed a recorded access trace (the firmware trace of
    mcusim/firmware/trace.py): the same levels, routing, replacement and counters as
    :func:`simulate` on a compiled stream, so both sides' stalls come from one model.
    Feed batches in program order (:meth:`feed`); :meth:`result` is a one-layer
    :class:`SimResult`."""

    def __init__(
        self,
        memories: list,
        dcache: CacheConfig | None = None,
        icache: CacheConfig | None = None,
        fetch_bytes: int = 4,
        seed: int = 1,
    ) -> None:
        self.memories = list(memories)
        self.lv = levels(self.memories, dcache, icache)
        self.state = CacheState(self.lv.configs, seed)
        self.cst = np.zeros((1, len(self.lv.configs), 4), dtype=np.int64)
        self.mst = np.zeros((1, len(self.memories), 4), dtype=np.int64)
        self.fshift = max(int(fetch_bytes), 1).bit_length() - 1

    @classmethod
    def for_device(cls, device, seed: int = 1) -> TraceSim:
        core = device.core
        return cls(
            list(device.memories),
            dcache=CacheConfig.of(core.dcache) if core.dcache is not None else None,
            icache=CacheConfig.of(core.icache) if core.icache is not None else None,
            fetch_bytes=fetch_bytes_of(core.name),
            seed=seed,
        )

    def feed(self, addrs, nbytes, kinds) -> None:
        """Accesses in program order: global addresses (isa/addresses.global_address),
        bytes, kind (K_READ, K_WRITE, K_FETCH: ``nbytes`` code bytes of one block)."""
        s, lv = self.state, self.lv
        _feed(
            np.ascontiguousarray(addrs, dtype=np.int64),
            np.ascontiguousarray(nbytes, dtype=np.int64),
            np.ascontiguousarray(kinds, dtype=np.int64),
            self.fshift, lv.route_d, lv.route_i, lv.accd, lv.acci,
            s.cfg, s.tags, s.stamp, s.dirty, s.rr, s.st, self.cst, self.mst,
        )  # fmt: skip

    def result(self) -> SimResult:
        return _result(self.lv, self.memories, self.cst, self.mst)


# ----------------------------------------------------------------- model on a device
MAC_KINDS = ("conv2d", "depthwise_conv2d", "fully_connected")
STACK_HEADROOM = 512  # bytes between the top of the arena memory and the kernels' frames
ALIGN = 16


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def code_size(programs) -> int:
    """Bytes of code when every distinct Block is laid out once (as isa/addresses.py does)."""
    return sum(b.code_bytes + b.code_bytes % 2 for b in distinct_blocks(programs))


@dataclass(frozen=True)
class _Layout:
    """Where a model's buffers sit on a device, independent of the code size: constant
    offsets are relative to the start of the constants (shifted by the 16-byte aligned
    code size when the code shares their memory)."""

    arena_index: int
    arena_base: int
    const_index: int
    const_base: int
    shares_code: bool
    const_off: dict[str, int]
    end_const: int
    stack: int
    scratch: dict[str, int]


_LAYOUTS: dict = {}  # (id(graph), id(plan), id(device)) -> (graph, plan, device, _Layout)


def _layout(graph, plan, device) -> _Layout:
    """The per-model part of :func:`stream_bases`, computed once per (graph, plan, device)
    objects (the objects are kept with the entry, so an id is never reused while cached)."""
    key = (id(graph), id(plan), id(device))
    hit = _LAYOUTS.get(key)
    if hit is not None and hit[0] is graph and hit[1] is plan and hit[2] is device:
        return hit[3]
    from mcusim.isa.addresses import global_address

    mems = list(device.memories)
    idx = {m.name: i for i, m in enumerate(mems)}
    arena = device.memory_for("arena")
    consts = device.memory_for("constants")
    code = device.memory_for("code")
    t = graph.tensors
    coff = 0
    const_off: dict[str, int] = {}
    for op in graph.ops:
        for n in op.inputs:
            if n and t[n].is_const and n not in const_off:
                const_off[n] = coff
                coff = _align(coff + t[n].nbytes)
    ai = idx[arena.name]
    lay = _Layout(
        arena_index=ai,
        arena_base=arena.base_address,
        const_index=idx[consts.name],
        const_base=consts.base_address,
        shares_code=consts.name == code.name,
        const_off=const_off,
        end_const=coff,
        stack=global_address(ai, arena.base_address + max(arena.size - STACK_HEADROOM, 0) // 8 * 8),
        scratch={b.key: b.size for b in plan.buffers if b.key.startswith("scratch:")},
    )
    if len(_LAYOUTS) >= 64:
        _LAYOUTS.pop(next(iter(_LAYOUTS)))
    _LAYOUTS[key] = (graph, plan, device, lay)
    return lay


def layer_bases(graph, plan, device, code_bytes: int, i: int) -> dict[str, tuple[int, int]]:
    """:func:`stream_bases` of layer ``i`` alone (the model's layout is cached)."""
    from mcusim.isa.addresses import global_address

    lay = _layout(graph, plan, device)
    t = graph.tensors
    shift = _align(code_bytes) if lay.shares_code else 0

    def at_arena(off: int) -> int:
        return global_address(lay.arena_index, lay.arena_base + off)

    def at_const(off: int) -> int:
        return global_address(lay.const_index, lay.const_base + shift + off)

    end_const = lay.end_const
    const_off = lay.const_off
    op = graph.ops[i]
    acts = [n for n in op.inputs if n and not t[n].is_const]
    cins = [n for n in op.inputs if n and t[n].is_const]
    b: dict[str, tuple[int, int]] = {"stack": (lay.stack, 0)}  # (address, buffer bytes)
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
    b["scratch"] = (at_arena(plan.offsets.get(key, plan.peak_bytes)), lay.scratch.get(key, 0))
    if op.kind in MAC_KINDS:
        w = op.inputs[1]
        b["weights"] = (at_const(const_off.get(w, end_const)), t[w].nbytes)
        if len(op.inputs) > 2 and op.inputs[2]:
            bias = op.inputs[2]
            b["bias"] = (at_const(const_off.get(bias, end_const)), t[bias].nbytes)
        b["const"] = (at_const(end_const), 0)  # literal pools
    else:
        first = (at_const(const_off[cins[0]]), t[cins[0]].nbytes) if cins else None
        for tag in ("weights", "bias", "const"):
            b[tag] = first or (at_const(end_const), 0)
    key = f"qparams:{i}"
    q = plan.offsets.get(key)
    if q is None:
        b["qparams"] = b["qmult"] = (at_arena(plan.peak_bytes), 0)
    elif getattr(op.attrs, "requant", "fixed_point") == "thresholds":
        b["qparams"] = (at_arena(q), plan.persistent[key])  # thresholds: no multipliers
        b["qmult"] = (at_arena(q), 0)
    else:
        # TFLite Micro allocates the multipliers first from the arena's tail downwards,
        # then the shifts: shifts at the buffer's start, multipliers 4 * C bytes above
        half = plan.persistent[key] // 2
        b["qparams"] = (at_arena(q), half)
        b["qmult"] = (at_arena(q + half), half)
    return b


def stream_bases(graph, plan, device, code_bytes: int) -> list[dict[str, tuple[int, int]]]:
    """Global address of every stream pointer at the start of each layer, with the bytes
    of the buffer behind it (accesses wrap inside it; 0 for the stack: unbounded).

    Activations (input, input2, output) and scratch sit at their arena-plan offsets in the
    arena memory; constant tensors are laid out in op order (16-byte aligned) in the
    constants memory (after the code if code shares it); the per-channel requantization
    parameters of each MAC op (the "qparams" stream: shifts or thresholds; "qmult":
    multipliers) are the arena plan's persistent buffers at the arena's tail, as TFLite
    Micro allocates them at init (two int32 arrays, 4 * C bytes apart); literal pools
    ("const" of a MAC op) point past the constants; the stack pointer starts
    ``STACK_HEADROOM`` bytes below the top of the arena memory."""
    return [layer_bases(graph, plan, device, code_bytes, i) for i in range(len(graph.ops))]


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


def _device_caches(device) -> dict:
    core = device.core
    return dict(
        dcache=CacheConfig.of(core.dcache) if core.dcache is not None else None,
        icache=CacheConfig.of(core.icache) if core.icache is not None else None,
        fetch_bytes=fetch_bytes_of(core.name),
    )


def simulate_layer(graph, program, plan, device, index: int):
    """The cache simulation of layer ``index`` alone, caches cold (as the NPU-placement
    path and the per-layer bench see a layer whose neighbours run no CPU code): equal to
    ``simulate_model`` with every other layer an empty Program, ``.layer(index)``, without
    compiling or walking the other layers. Returns a mcusim.costs.LayerCacheStats."""
    from mcusim.isa.addresses import global_address

    code = device.memory_for("code")
    ci = [m.name for m in device.memories].index(code.name)
    bases = layer_bases(graph, plan, device, code_size([program]), index)
    return simulate_at(program, device, bases, global_address(ci, code.base_address))


def simulate_at(program, device, bases: dict[str, tuple[int, int]], code_base: int):
    """The cache simulation of one schedule alone, caches cold, with its stream pointers
    at ``bases`` (tag -> (global address, buffer bytes)) and its code from ``code_base``:
    the simulator's side of a firmware cross-check, whose twin runs cold with its buffers
    where the harness put them. Returns a mcusim.costs.LayerCacheStats."""
    from mcusim.isa.addresses import compile_programs

    cs = compile_programs([program], [bases], code_base=code_base)
    return simulate(cs, list(device.memories), **_device_caches(device)).layer(0)


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
