"""Cache simulator (mcusim/cache.py): hand-computed hit/miss counts on small caches, an
independent per-access reference cache on random traces and on the compiled address stream
of a real conv layer, and the cost formulas of cached memories (mcusim/costs.py)."""

from __future__ import annotations

import numpy as np
import pytest
from test_schedules_m4 import conv_graph

from mcusim.cache import CacheConfig, CacheState, simulate, simulate_trace
from mcusim.costs import LayerCacheStats, StreamUse, layer_cost
from mcusim.devices.loader import load_device
from mcusim.devices.model import FlashAccelerator, Memory
from mcusim.isa.addresses import MEM_SHIFT, compile_program, expand, global_address
from mcusim.kernels.schedules import schedule_for


def run(cfg: CacheConfig, trace) -> tuple[int, int, int, int]:
    """(hits, misses, writebacks, fills) of a trace of (address, bytes, is_write)."""
    st = CacheState([cfg])
    a = np.array([t[0] for t in trace], dtype=np.int64)
    n = np.array([t[1] for t in trace], dtype=np.int64)
    w = np.array([int(t[2]) for t in trace], dtype=np.int64)
    out = simulate_trace(a, n, w, st.cfg, st.tags, st.stamp, st.dirty, st.rr, st.st)
    return tuple(int(x) for x in out)


def reads(addrs, nbytes=4):
    return [(a, nbytes, False) for a in addrs]


# ------------------------------------------------------------------ hand-computed cases
def test_direct_mapped_conflict():
    # 4 sets x 1 way x 16 B = 64 B: addresses 0 and 64 are lines 0 and 4, both set 0.
    # 0, 64, 0, 64: each access evicts the other line -> 4 misses, 0 hits.
    dm = CacheConfig(64, 1, 16)
    assert run(dm, reads([0, 64, 0, 64])) == (0, 4, 0, 4)
    # same 64 B as 2 sets x 2 ways: lines 0 and 4 share set 0 but fit its 2 ways:
    # 2 cold misses, then 2 hits.
    assert run(CacheConfig(64, 2, 16), reads([0, 64, 0, 64])) == (2, 2, 0, 2)
    # a 16 B line serves 4 words: 0, 4, 8, 12 -> 1 miss + 3 hits
    assert run(dm, reads([0, 4, 8, 12])) == (3, 1, 0, 1)


def test_two_way_lru_thrash():
    # 2 sets x 2 ways x 16 B; addresses 0, 32, 64 are lines 0, 2, 4: all in set 0.
    # Cyclic 0, 32, 64, 0, 32, 64 with LRU: each access evicts the line needed next
    # -> 6 misses.
    c = CacheConfig(64, 2, 16, "lru")
    assert run(c, reads([0, 32, 64] * 2)) == (0, 6, 0, 6)
    # 0, 32, 0, 64, 0, 32: miss, miss, hit, miss (evicts 32, the LRU), hit, miss -> 2/4
    assert run(c, reads([0, 32, 0, 64, 0, 32])) == (2, 4, 0, 4)
    # round robin on the same pattern: 64 replaces way 0 (line 0, the pointer starts at
    # way 0 once the set is full), so the next 0 misses and replaces way 1 (line 32),
    # and the last 32 misses again -> 1 hit, 5 misses
    assert run(CacheConfig(64, 2, 16, "round_robin"), reads([0, 32, 0, 64, 0, 32])) == (1, 5, 0, 5)


def test_blocked_reuse_fits_and_does_not_fit():
    c = CacheConfig(1024, 4, 32)  # 8 sets x 4 ways x 32 B
    # a 512 B block read 4 times word by word: 16 lines, each set holds 2 of them
    # -> 16 cold misses, every other access hits: 4 x 128 - 16 = 496 hits
    block = reads(range(0, 512, 4))
    assert run(c, block * 4) == (496, 16, 0, 16)
    # a 2 KB block (64 lines, 8 per set) read twice: LRU evicts every line before its
    # reuse -> 2 x 64 misses, 2 x 512 - 128 = 896 hits
    big = reads(range(0, 2048, 4))
    assert run(c, big * 2) == (896, 128, 0, 128)


def test_write_back_dirty_evictions():
    dm = CacheConfig(64, 1, 16)  # write-back, write-allocate
    trace = (
        [(a, 4, True) for a in range(0, 64, 4)]  # 4 lines allocated dirty: 4 miss, 12 hit
        + reads(range(64, 128, 4))  # 4 misses, each evicting a dirty line: 4 writebacks
        + reads(range(0, 64, 4))  # 4 misses evicting clean lines: no writeback
    )
    assert run(dm, trace) == (36, 12, 4, 12)
    # write-through without write-allocate: the 16 writes all miss and allocate nothing;
    # then the two read passes miss once per line each
    wt = CacheConfig(64, 1, 16, write_back=False, write_allocate=False)
    assert run(wt, trace) == (24, 24, 0, 8)


def test_access_spanning_two_lines():
    # an 8-byte access at 12 touches lines 0 and 1 of a 16 B-line cache: 2 misses
    assert run(CacheConfig(64, 1, 16), [(12, 8, False)]) == (0, 2, 0, 2)


def test_random_replacement_is_deterministic():
    c = CacheConfig(256, 4, 16, "random")
    rng = np.random.default_rng(3)
    trace = reads((rng.integers(0, 64, 2000) * 16).tolist())
    assert run(c, trace) == run(c, trace)
    # 4 sets x 4 ways: lines 0..15 put exactly 4 lines in each set, so nothing is ever
    # evicted: only cold misses, whatever the victim choice
    small = reads((rng.integers(0, 16, 500) * 16).tolist())
    h, m, wb, f = run(c, small)
    assert m == len({a for a, _, _ in small}) and h == len(small) - m


# ------------------------------------------------------------ independent reference cache
class RefCache:
    """Per-access set-associative cache, written from the policy definitions only:
    invalid way first; LRU evicts the least recently used; round robin a per-set pointer
    that advances on each replacement; random the xorshift64 draw documented in
    mcusim/cache.py. Write-back marks lines dirty; write-through does not; without
    write-allocate a write miss leaves the cache untouched."""

    MASK = (1 << 63) - 1

    def __init__(self, cfg: CacheConfig, seed_index: int = 0):
        self.c = cfg
        self.nsets = cfg.size // (cfg.ways * cfg.line_bytes)
        self.ways = [[] for _ in range(self.nsets)]  # per set: list of [line, last_use, dirty]
        self.rr = [0] * self.nsets
        self.rng = (1 * 2654435761 + 97 * seed_index) | 1
        self.t = 0
        self.hits = self.misses = self.writebacks = self.fills = 0

    def _draw(self) -> int:
        x = self.rng
        x ^= (x << 13) & self.MASK
        x ^= x >> 7
        x ^= (x << 17) & self.MASK
        x &= self.MASK
        self.rng = x
        return x

    def access_line(self, line: int, write: bool, weight: int = 1) -> bool:
        self.t += 1
        s = line % self.nsets
        ways = self.ways[s]
        for w in ways:
            if w[0] == line:
                w[1] = self.t
                if write and self.c.write_back:
                    w[2] = True
                self.hits += weight
                return True
        self.misses += 1
        self.hits += weight - 1
        if write and not self.c.write_allocate:
            return False
        self.fills += 1
        new = [line, self.t, bool(write and self.c.write_back)]
        if len(ways) < self.c.ways:
            ways.append(new)
            return False
        pol = self.c.replacement
        if pol == "lru":
            k = min(range(len(ways)), key=lambda i: ways[i][1])
        elif pol == "random":
            k = self._draw() % self.c.ways
        else:
            k = self.rr[s]
            self.rr[s] = (k + 1) % self.c.ways
        if ways[k][2]:
            self.writebacks += 1
        ways[k] = new
        return False

    def access(self, addr: int, nbytes: int, write: bool, nacc: int = 1) -> None:
        lb = self.c.line_bytes
        l0, l1 = addr // lb, (addr + max(nbytes, 1) - 1) // lb
        first = max(nacc - (l1 - l0), 1)
        for line in range(l0, l1 + 1):
            self.access_line(line, write, first if line == l0 else 1)


CONFIGS = [
    CacheConfig(256, 1, 16),
    CacheConfig(512, 2, 32, "lru"),
    CacheConfig(1024, 4, 32, "lru", write_back=False, write_allocate=False),
    CacheConfig(512, 4, 16, "random"),
    CacheConfig(512, 2, 16, "round_robin"),
    CacheConfig(2048, 8, 64, "round_robin", write_back=True, write_allocate=False),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.size}B-{c.ways}w-{c.replacement}")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_reference_on_random_traces(cfg, seed):
    rng = np.random.default_rng(seed)
    n = 4000
    # a mix of streaming runs, hot words and scattered accesses, reads and writes
    base = rng.integers(0, 4096, n)
    seq = np.cumsum(rng.integers(0, 8, n)) % 4096
    addrs = np.where(rng.random(n) < 0.5, seq, base)
    sizes = rng.choice([1, 2, 4, 8], n)
    writes = rng.random(n) < 0.3
    trace = [(int(a), int(s), bool(w)) for a, s, w in zip(addrs, sizes, writes, strict=True)]
    ref = RefCache(cfg)
    for a, s, w in trace:
        ref.access(a, s, w)
    assert run(cfg, trace) == (ref.hits, ref.misses, ref.writebacks, ref.fills)


def _mem(name, kind="sram", cached=True, acc=None, base=0):
    return Memory(name, kind, 1 << 20, 32, 0, 1.0, 1.0, (), acc, cached, base)


def test_against_reference_on_a_conv_layer_stream():
    """The compiled stream of a real conv layer (im2col + s8s16 kernel) through a D-cache
    and an I-cache equals the reference fed access by access from the plain-Python
    expansion of the same stream."""
    g, op = conv_graph(8, 8, 8, 6, 3)
    prog = schedule_for("armv7em-dsp", g, op)
    mem = _mem("ram")
    tags = ("input", "output", "scratch", "weights", "bias", "const", "qparams", "stack", "qmult")
    bases = {t: global_address(0, 0x2000 * (i + 1)) for i, t in enumerate(tags)}
    cs = compile_program(prog, bases)
    d = CacheConfig(512, 2, 32, "lru")
    i = CacheConfig(256, 2, 16, "round_robin")
    res = simulate(cs, [mem], dcache=d, icache=i, fetch_bytes=4)
    rd, ri = RefCache(d), RefCache(i, 1)
    for _l, kind, _t, addr, nbytes, write, nacc in expand(cs, fetch=True):
        local = addr - (1 << MEM_SHIFT)
        if kind == "data":
            rd.access(local, nbytes, write, nacc)
        else:  # fetch units of 4 bytes, counted per line touched
            lb = i.line_bytes
            for line in range(local // lb, (local + nbytes - 1) // lb + 1):
                lo, hi = max(local, line * lb), min(local + nbytes, (line + 1) * lb)
                ri.access_line(line, False, (hi - 1) // 4 - lo // 4 + 1)
    dc, ic = res.caches["dcache"][0], res.caches["icache"][0]
    assert rd.misses > 50 and ri.misses > 5  # the caches are small enough to matter
    assert (int(dc[0]), int(dc[1]), int(dc[2])) == (rd.hits, rd.misses, rd.writebacks)
    assert (int(ic[0]), int(ic[1]), int(ic[2])) == (ri.hits, ri.misses, ri.writebacks)
    assert int(res.memories["ram"][0, 0]) == rd.fills + ri.fills  # L1 line fills


def test_flash_accelerator_behind_l1_and_alone():
    """L1 misses to a flash with an accelerator are looked up in the accelerator (one line
    read each); without L1 the accelerator sees the core's reads, never its writes."""
    acc = FlashAccelerator(line_bytes=32, icache_lines=4, dcache_lines=2)
    flash = _mem("flash", "flash", cached=True, acc=acc)
    prog_items = conv_graph(6, 6, 4, 4, 1, padding="valid")
    prog = schedule_for("armv7em-dsp", *prog_items)
    tags = ("input", "output", "scratch", "weights", "bias", "const", "qparams", "stack", "qmult")
    bases = {t: global_address(0, 0x4000 * (k + 1)) for k, t in enumerate(tags)}
    cs = compile_program(prog, bases)
    d = CacheConfig(256, 2, 32)
    res = simulate(cs, [flash], dcache=d, icache=None)
    # every L1 data miss of this flash-only stream is one accelerator lookup
    assert int(res.caches["flash_accel_d"][0, :2].sum()) == int(res.caches["dcache"][0, 1])
    # reference: the accelerator as a 2-line fully associative LRU cache fed the L1 misses
    ref_l1, ref_acc = RefCache(d), RefCache(CacheConfig.fully_associative(2, 32))
    for _l, _k, _t, addr, nbytes, write, nacc in expand(cs):
        local = addr - (1 << MEM_SHIFT)
        lb = 32
        l0, l1 = local // lb, (local + nbytes - 1) // lb
        first = max(nacc - (l1 - l0), 1)
        for line in range(l0, l1 + 1):
            before = ref_l1.fills
            ref_l1.access_line(line, write, first if line == l0 else 1)
            if ref_l1.fills > before:
                ref_acc.access_line(line, False)
    a = res.caches["flash_accel_d"][0]
    assert (int(a[0]), int(a[1])) == (ref_acc.hits, ref_acc.misses)
    # uncached flash: the accelerator alone, reads only
    flash2 = _mem("flash", "flash", cached=False, acc=acc)
    res2 = simulate(cs, [flash2], dcache=d, icache=None)
    assert "dcache" not in res2.caches
    ref = RefCache(CacheConfig.fully_associative(2, 32))
    for _l, _k, _t, addr, nbytes, write, nacc in expand(cs):
        if not write:
            ref.access(addr - (1 << MEM_SHIFT), nbytes, False, nacc)
    a2 = res2.caches["flash_accel_d"][0]
    assert (int(a2[0]), int(a2[1])) == (ref.hits, ref.misses)


# ----------------------------------------------------------------------- cost formulas
def _stats(levels=None, memories=None, line_bytes=None):
    z = {"hits": 0, "misses": 0, "writebacks": 0, "seq_misses": 0}
    lv = {k: {**z, **v} for k, v in (levels or {}).items()}
    mz = {"l1_fills": 0, "accel_fills": 0, "writebacks": 0, "write_through": 0}
    ms = {k: {**mz, **v} for k, v in (memories or {}).items()}
    return LayerCacheStats(lv, ms, line_bytes or {})


def test_accelerator_costs_on_l4r5():
    d = load_device("stm32l4r5")  # flash 64-bit, 5 WS, ART lines of 32 B, prefetch on
    st = _stats(
        {
            "flash_accel_d": {"hits": 90, "misses": 10},
            "flash_accel_i": {"hits": 500, "misses": 4, "seq_misses": 2},
        },
        {"flash": {"accel_fills": 14}},
        {"flash_accel_d": 32, "flash_accel_i": 32},
    )
    streams = {"weights": StreamUse(400, 0, 100, 0), "input": StreamUse(100, 0, 25, 0)}
    c = layer_cost(d, 1000, 800, 300, streams, {}, cache=st)
    # a line fill = 32 B / 8 B = 4 flash words x 5 WS = 20 cycles
    # data: 10 misses x 20 = 200; instructions: 2 non-sequential x 20 + 2 sequential x 10
    # (prefetch hides half) = 60; SRAM input is zero-wait
    assert c.stall_cycles == 260
    assert c.traffic["flash"] == {"read": 400, "write": 0, "fill": 14 * 32, "writeback": 0}
    assert c.cache["flash_accel_d"] == {"hits": 90, "misses": 10, "writebacks": 0}
    # energy: flash array bytes are the line fills (448 B x 20 pJ), SRAM the core reads
    assert c.memory_energy_j == pytest.approx((448 * 20.0 + 100 * 2.0) * 1e-12)


def test_l1_costs_on_f746():
    d = load_device("stm32f746")  # flash: 256-bit, 7 WS, cached; sram: 64-bit, 0 WS, cached
    st = _stats(
        {"dcache": {"hits": 900, "misses": 8, "writebacks": 2}, "icache": {"misses": 1}},
        {"flash": {"l1_fills": 4}, "sram": {"l1_fills": 5, "writebacks": 2}},
        {"dcache": 32, "icache": 32},
    )
    streams = {"weights": StreamUse(3000, 0, 750, 0), "output": StreamUse(0, 500, 0, 500)}
    c = layer_cost(d, 10_000, 8000, 2000, streams, {}, cache=st)
    # flash fill: 7 WS + 32 B / 32 B per beat = 8 cycles x 4 = 32
    # SRAM fill: 0 WS + 32 / 8 = 4 beats x 5 = 20; SRAM writeback: 4 x 2 = 8
    assert c.stall_cycles == 32 + 20 + 8
    assert c.traffic["sram"] == {"read": 0, "write": 500, "fill": 160, "writeback": 64}
    assert c.traffic["flash"]["fill"] == 128


def test_tcm_is_zero_wait():
    d = load_device("stm32f746").with_placement({"arena": "dtcm"})
    streams = {"input": StreamUse(1000, 1000, 250, 250)}
    c = layer_cost(d, 100, 100, 0, streams, {}, cache=_stats())
    assert c.stall_cycles == 0
    assert c.traffic["dtcm"]["read"] == 1000


def test_run_records_cache_counters_and_stalls():
    """A whole model on the STM32F746 (Cortex-M7, 4 KB L1 D/I, flash and SRAM on the
    cached AXIM path): every layer's stall cycles are exactly its line fills and
    writebacks priced by the formulas (flash fill 7 WS + 1 beat of 32 B, SRAM fill or
    writeback 4 beats of 8 B), and every L1 miss is one line of fill traffic."""
    import mcusim

    from conftest import model_path

    r = mcusim.run(mcusim.load(model_path("ad01_int8")), device="stm32f746")
    total_misses = total_fill_lines = 0
    for rec in r.layers:
        assert set(rec.cache) == {"dcache", "icache"}
        fl, sr = rec.traffic.get("flash", {}), rec.traffic.get("sram", {})
        want = fl.get("fill", 0) // 32 * 8 + sr.get("fill", 0) // 32 * 4
        want += sr.get("writeback", 0) // 32 * 4
        assert rec.stall_cycles == want, rec.name
        assert rec.cache["dcache"]["writebacks"] * 32 == sr.get("writeback", 0)
        total_misses += rec.cache["dcache"]["misses"] + rec.cache["icache"]["misses"]
        total_fill_lines += (fl.get("fill", 0) + sr.get("fill", 0)) // 32
    assert total_misses == total_fill_lines > 0
    assert r.totals()["cache"]["dcache"]["misses"] == sum(
        x.cache["dcache"]["misses"] for x in r.layers
    )
