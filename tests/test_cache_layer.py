"""The single-layer cache path (mcusim.cache.simulate_layer) and the cached model layout
equal the whole-model path: same stream bases, same counters, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from mcusim.cache import layer_bases, simulate_layer, simulate_model, stream_bases
from mcusim.devices.loader import load_device
from mcusim.isa.addresses import memory_of
from mcusim.isa.schedule import Program


@pytest.fixture(scope="module")
def ad01():
    import mcusim

    from conftest import model_path

    return mcusim.load(model_path("ad01_int8"))


@pytest.mark.parametrize("device", ["stm32l4r5", "stm32f746"])
def test_simulate_layer_equals_the_model_path_with_empty_neighbours(ad01, device):
    from mcusim.runner import device_costs

    dev = load_device(device)
    g = ad01.graph
    dc = device_costs(ad01, dev)
    progs = [t.program for t in dc.timings]
    for code_bytes in (0, 1234, 4096):
        full = stream_bases(g, dc.plan, dev, code_bytes)
        assert full == [layer_bases(g, dc.plan, dev, code_bytes, i) for i in range(len(g.ops))]
    for i in range(len(g.ops)):
        others = [Program([])] * len(g.ops)
        others[i] = progs[i]
        want = simulate_model(g, others, dc.plan, dev).layer(i)
        got = simulate_layer(g, progs[i], dc.plan, dev, i)
        assert got == want
        assert any(v["misses"] for v in got.levels.values())
    # the whole-model simulation is what device_costs priced
    sim = simulate_model(g, progs, dc.plan, dev)
    for i, c in enumerate(dc.costs):
        assert c.cache == {
            k: {"hits": int(v[i, 0]), "misses": int(v[i, 1]), "writebacks": int(v[i, 2])}
            for k, v in sim.caches.items()
        }
    assert all(np.all(v >= 0) for v in sim.caches.values())


# ------------------------------------------- the fixed-point shortcut vs the reference
def _reference(cs, dcfg, icfg, fetch_bytes=4):
    """Per-access reference caches (tests/test_cache.py RefCache) fed the plain-Python
    expansion of the stream: no shortcut, no merging."""
    from test_cache import RefCache

    from mcusim.isa.addresses import MEM_SHIFT, expand

    rd = RefCache(dcfg, 0) if dcfg is not None else None
    ri = RefCache(icfg, 1) if icfg is not None else None
    for _l, kind, _t, addr, nbytes, write, nacc in expand(cs, fetch=True):
        local = addr - (1 << MEM_SHIFT)
        if kind == "data":
            if rd is not None:
                rd.access(local, nbytes, write, nacc)
        elif ri is not None:
            lb = icfg.line_bytes
            for line in range(local // lb, (local + nbytes - 1) // lb + 1):
                lo, hi = max(local, line * lb), min(local + nbytes, (line + 1) * lb)
                ri.access_line(line, False, (hi - 1) // fetch_bytes - lo // fetch_bytes + 1)
    return rd, ri


def _reuse_program(words: int, outer: int, store: bool):
    """An outer loop re-reading ``words`` weights (rewound every iteration: the same
    addresses each time) in an inner loop, optionally storing one output word per
    iteration (the output pointer moves on)."""
    from mcusim.isa.schedule import Block, Loop, Rewind

    body = [
        Block.asm("ldr r3, [r1], #4 {weights}\nldr r4, [r0, #8] {bias}\nadd r2, r2, r3"),
    ]
    items = [Block.asm("movs r2, #0"), Loop("inner", words, body)]
    if store:
        items.append(Block.asm("str r2, [r5], #4 {output}"))
    return Program([Loop("outer", outer, items, addr={"weights": Rewind(0), "bias": Rewind(0)})])


CONFIGS = [
    ("lru", 256, 2, 32),
    ("round_robin", 256, 2, 32),
    ("random", 256, 4, 16),
    ("lru", 1024, 4, 32),
]


@pytest.mark.parametrize("policy, size, ways, line", CONFIGS)
@pytest.mark.parametrize("words", [24, 200])  # 96 B: fits; 800 B: thrashes
@pytest.mark.parametrize("store", [False, True])
def test_fixed_point_shortcut_equals_the_per_access_reference(
    policy, size, ways, line, words, store
):
    """Loops whose iterations repeat the same addresses skip to their end once the caches'
    state repeats; the counters equal the per-access reference, whether the shortcut fires
    (data fitting the cache; the output in an uncached memory or not stored) or cannot
    (thrashing random replacement never repeats its draw state; a moving cached output)."""
    from mcusim.cache import CacheConfig, simulate
    from mcusim.devices.model import Memory
    from mcusim.isa.addresses import compile_program, global_address

    cached = Memory("m", "sram", 1 << 20, 32, 0, 1.0, 1.0, (), None, True, 0)
    dcfg = CacheConfig(size, ways, line, policy)
    icfg = CacheConfig(128, 2, 16, "lru")
    prog = _reuse_program(words, 40, store)
    bases = {
        "weights": (global_address(0, 0x1000), 4 * words),
        "bias": (global_address(0, 0x3000), 64),
        "output": (global_address(0, 0x8000), 4096),
    }
    cs = compile_program(prog, bases)
    res = simulate(cs, [cached], dcache=dcfg, icache=icfg, fetch_bytes=4)
    rd, ri = _reference(cs, dcfg, icfg)
    dc, ic = res.caches["dcache"][0], res.caches["icache"][0]
    assert (int(dc[0]), int(dc[1]), int(dc[2])) == (rd.hits, rd.misses, rd.writebacks)
    assert (int(ic[0]), int(ic[1]), int(ic[2])) == (ri.hits, ri.misses, ri.writebacks)
    assert int(res.memories["m"][0, 0]) == rd.fills + ri.fills
    if store:  # the moving output keeps the data side going; fetches repeat anyway
        assert res.fetch_skipped_iterations > 0
    if store:
        assert res.skipped_iterations == 0  # the cached output moves: not a repeat
    elif words == 24 or policy == "lru":
        # the lines fit: all hits from iteration 2 on (nothing drawn or rotated); or LRU
        # thrashing, whose state is the last lines used, the same after every iteration
        assert res.skipped_iterations > 0


def test_fixed_point_shortcut_on_real_layers_with_an_uncached_arena():
    """A conv and a depthwise layer on an M7 whose arena is uncached (only constants and
    code behind the L1s, and an ART-like accelerator on another device): equal to the
    reference, with the shortcut firing on the loops that re-read the weights."""
    from test_schedules_m4 import conv_graph

    from mcusim.cache import CacheConfig, simulate
    from mcusim.devices.model import Memory
    from mcusim.isa.addresses import compile_program, global_address
    from mcusim.kernels.schedules import schedule_for

    flash = Memory("flash", "flash", 1 << 20, 32, 0, 1.0, 1.0, (), None, True, 0)
    ram = Memory("ram", "sram", 1 << 20, 32, 0, 1.0, 1.0, (), None, False, 0)
    g, op = conv_graph(10, 10, 8, 8, 3)
    prog = schedule_for("armv7em-dsp", g, op)
    bases = {
        t: global_address(1, 0x4000 * (k + 1))
        for k, t in enumerate(("input", "output", "scratch", "stack", "qparams", "qmult"))
    }
    bases.update(
        {t: global_address(0, 0x4000 * (k + 1)) for k, t in enumerate(("weights", "bias", "const"))}
    )
    cs = compile_program(prog, bases)
    for d in (CacheConfig(1024, 2, 32, "lru"), CacheConfig(512, 4, 32, "round_robin")):
        i = CacheConfig(1024, 2, 32, "lru")
        res = simulate(cs, [flash, ram], dcache=d, icache=i, fetch_bytes=4)
        from test_cache import RefCache

        from mcusim.isa.addresses import MEM_SHIFT, expand

        rd, ri = RefCache(d, 0), RefCache(i, 1)
        for _l, kind, _t, addr, nbytes, write, nacc in expand(cs, fetch=True):
            mem = (addr >> MEM_SHIFT) - 1
            local = addr & ((1 << MEM_SHIFT) - 1)
            if kind == "data":
                if mem == 0:
                    rd.access(local, nbytes, write, nacc)
            elif mem == 0:
                for line in range(local // 32, (local + nbytes - 1) // 32 + 1):
                    lo, hi = max(local, line * 32), min(local + nbytes, (line + 1) * 32)
                    ri.access_line(line, False, (hi - 1) // 4 - lo // 4 + 1)
        dc, ic = res.caches["dcache"][0], res.caches["icache"][0]
        assert (int(dc[0]), int(dc[1]), int(dc[2])) == (rd.hits, rd.misses, rd.writebacks)
        assert (int(ic[0]), int(ic[1])) == (ri.hits, ri.misses)
        assert res.skipped_iterations > 0
        assert res.fetch_skipped_iterations > 0  # the instruction-side shortcut ran too


@pytest.mark.parametrize("l1", [True, False])
def test_shortcuts_with_a_flash_accelerator_equal_the_reference(l1):
    """A conv layer's stream with code and constants in a flash with separate instruction
    and data accelerator caches (4 and 2 lines, fully associative LRU), behind 512 B L1
    caches or alone, the arena in uncached SRAM: every level's counters equal per-access
    references chained like the hardware (an L1 miss reads its line from the accelerator),
    while both shortcuts run."""
    from test_cache import RefCache
    from test_schedules_m4 import conv_graph

    from mcusim.cache import CacheConfig, simulate
    from mcusim.devices.model import FlashAccelerator, Memory
    from mcusim.isa.addresses import MEM_SHIFT, compile_program, expand, global_address
    from mcusim.kernels.schedules import schedule_for

    acc = FlashAccelerator(line_bytes=32, icache_lines=4, dcache_lines=2)
    flash = Memory("flash", "flash", 1 << 20, 64, 5, 1.0, 1.0, (), acc, l1, 0)
    ram = Memory("ram", "sram", 1 << 20, 32, 0, 1.0, 1.0, (), None, False, 0)
    g, op = conv_graph(10, 10, 8, 8, 3)
    cs = compile_program(
        schedule_for("armv7em-dsp", g, op),
        {
            **{t: global_address(1, 0x4000 * (k + 1)) for k, t in
               enumerate(("input", "output", "scratch", "stack", "qparams", "qmult"))},
            **{t: global_address(0, 0x8000 * (k + 1)) for k, t in
               enumerate(("weights", "bias", "const"))},
        },
    )  # fmt: skip
    d = CacheConfig(512, 2, 32, "lru") if l1 else None
    i = CacheConfig(512, 2, 32, "round_robin") if l1 else None
    res = simulate(cs, [flash, ram], dcache=d, icache=i, fetch_bytes=4)
    ad = RefCache(CacheConfig.fully_associative(2, 32))
    ai = RefCache(CacheConfig.fully_associative(4, 32))
    rd = RefCache(d, 0) if l1 else None
    ri = RefCache(i, 1) if l1 else None

    def touch(l1ref, accref, line, write, weight):
        if l1ref is None:
            if not write:
                accref.access_line(line, False, weight)
            return
        before = l1ref.fills
        l1ref.access_line(line, write, weight)
        if l1ref.fills > before:
            accref.access_line(line, False)

    for _l, kind, _t, addr, nbytes, write, nacc in expand(cs, fetch=True):
        if (addr >> MEM_SHIFT) - 1 != 0:
            continue  # SRAM: uncached
        local = addr & ((1 << MEM_SHIFT) - 1)
        l0, l1_ = local // 32, (local + max(nbytes, 1) - 1) // 32
        for line in range(l0, l1_ + 1):
            if kind == "data":
                w = max(nacc - (l1_ - l0), 1) if line == l0 else 1
                touch(rd, ad, line, write, w)
            else:
                lo, hi = max(local, line * 32), min(local + nbytes, (line + 1) * 32)
                touch(ri, ai, line, False, (hi - 1) // 4 - lo // 4 + 1)
    got = {k: (int(v[0, 0]), int(v[0, 1])) for k, v in res.caches.items()}
    assert got["flash_accel_d"] == (ad.hits, ad.misses)
    assert got["flash_accel_i"] == (ai.hits, ai.misses)
    if l1:
        assert got["dcache"] == (rd.hits, rd.misses) and got["icache"] == (ri.hits, ri.misses)
    assert res.skipped_iterations + res.fetch_skipped_iterations > 0


@pytest.mark.parametrize("policy", ["lru", "random", "round_robin"])
@pytest.mark.parametrize(
    "write_back, write_allocate", [(True, True), (False, True), (False, False)]
)
@pytest.mark.parametrize("unified", [False, True])
def test_immediate_l1d_lookups_equal_the_queued_path(
    monkeypatch, policy, write_back, write_allocate, unified
):
    """The L1 D requests looked up at once in the stream walk (mcusim.cache._dnow_ok) give
    the same counters, bit for bit, as queueing them for _process: a conv layer with the
    arena and constants both in cached memories, the flash's accelerator behind the L1 D
    (its misses queued in miss order) or unified with the instruction side (then the
    immediate path is refused: an L1 I miss reaches the same lines)."""
    from test_schedules_m4 import conv_graph

    import mcusim.cache as cache
    from mcusim.cache import CacheConfig, levels, simulate
    from mcusim.devices.model import FlashAccelerator, Memory
    from mcusim.isa.addresses import compile_program, global_address
    from mcusim.kernels.schedules import schedule_for

    acc = FlashAccelerator(line_bytes=32, icache_lines=4, dcache_lines=4, unified=unified)
    flash = Memory("flash", "flash", 1 << 20, 64, 5, 1.0, 1.0, (), acc, True, 0)
    ram = Memory("ram", "sram", 1 << 20, 32, 0, 1.0, 1.0, (), None, True, 0)
    g, op = conv_graph(10, 10, 8, 8, 3)
    cs = compile_program(
        schedule_for("armv7em-dsp", g, op),
        {
            **{t: global_address(1, 0x4000 * (k + 1)) for k, t in
               enumerate(("input", "output", "scratch", "stack", "qparams", "qmult"))},
            **{t: global_address(0, 0x8000 * (k + 1)) for k, t in
               enumerate(("weights", "bias", "const"))},
        },
    )  # fmt: skip
    d = CacheConfig(512, 4, 32, policy, write_back, write_allocate)
    i = CacheConfig(512, 2, 32, "lru")
    assert cache._dnow_ok(levels([flash, ram], d, i)) == (not unified)
    got = simulate(cs, [flash, ram], dcache=d, icache=i, fetch_bytes=4)
    monkeypatch.setattr(cache, "_dnow_ok", lambda lv: False)
    want = simulate(cs, [flash, ram], dcache=d, icache=i, fetch_bytes=4)
    assert got.caches.keys() == want.caches.keys()
    for k in want.caches:
        assert np.array_equal(got.caches[k], want.caches[k]), k
    for k in want.memories:
        assert np.array_equal(got.memories[k], want.memories[k]), k
    assert got.caches["dcache"][0, 1] > 0 and got.caches["dcache"][0, 2 if write_back else 0] > 0
    if not write_back:
        assert got.memories["ram"][0, 3] > 0  # bytes written through
    acc_level = "flash_accel_u" if unified else "flash_accel_d"
    assert got.caches[acc_level][0, 1] > 0  # L1 D misses went on to the accelerator


def test_immediate_l1d_lookups_on_devices():
    """Devices whose flash accelerator sits off the L1 path (STM32F746: the ART on the ITCM
    path only) take the immediate L1 D path."""
    from mcusim.cache import _device_caches, _dnow_ok, levels

    dev = load_device("stm32f746")
    c = _device_caches(dev)
    assert _dnow_ok(levels(list(dev.memories), c["dcache"], c["icache"]))


# ------------------------------------- whole-iteration shortcuts of a non-LRU L1 D
def _layer_stream(shape: str, skew: int):
    """A layer's compiled stream with the arena and the constants in two cached memories
    (like the STM32F746), buffers ``skew`` bytes off word alignment (word accesses then
    cross lines)."""
    from test_schedules_m4 import conv_graph

    from mcusim.devices.model import Memory
    from mcusim.isa.addresses import compile_program, global_address
    from mcusim.kernels.schedules import schedule_for

    g, op = {
        "conv": lambda: conv_graph(10, 10, 8, 8, 3),
        "depthwise": lambda: conv_graph(10, 10, 8, 8, 3, depthwise=True),
        "pointwise": lambda: conv_graph(12, 12, 16, 16, 1),
    }[shape]()
    flash = Memory("flash", "flash", 1 << 20, 64, 5, 1.0, 1.0, (), None, True, 0)
    ram = Memory("ram", "sram", 1 << 20, 32, 0, 1.0, 1.0, (), None, True, 0)
    cs = compile_program(
        schedule_for("armv7em-dsp", g, op),
        {
            **{t: global_address(1, 0x4000 * (k + 1) + skew) for k, t in
               enumerate(("input", "output", "scratch", "stack", "qparams", "qmult"))},
            **{t: global_address(0, 0x8000 * (k + 1) + skew) for k, t in
               enumerate(("weights", "bias", "const"))},
        },
    )  # fmt: skip
    return cs, [flash, ram]


@pytest.mark.parametrize("shape", ["conv", "depthwise", "pointwise"])
@pytest.mark.parametrize("policy", ["random", "round_robin"])
@pytest.mark.parametrize("write_back", [True, False])
@pytest.mark.parametrize("size", [512, 4096])
@pytest.mark.parametrize("skew", [0, 1, 2])
def test_whole_iteration_shortcuts_equal_the_walk(
    monkeypatch, shape, policy, write_back, size, skew
):
    """An L1 D whose hits change nothing but its last line (random, round-robin): the
    all-hit iterations counted without walking them and the flattened loops (only the
    accesses to sets with a missing line looked up) give every counter of the plain walk,
    bit for bit -- sequential misses, write-backs, bytes written through included --
    with the shortcuts taken."""
    import mcusim.cache as cache
    from mcusim.cache import CacheConfig, simulate

    cs, mems = _layer_stream(shape, skew)
    d = CacheConfig(size, 4, 32, policy, write_back, write_back)
    i = CacheConfig(512, 2, 32, "random")
    got = simulate(cs, mems, dcache=d, icache=i, fetch_bytes=8)
    monkeypatch.setattr(cache, "FLATTEN", False)
    skipped_only = simulate(cs, mems, dcache=d, icache=i, fetch_bytes=8)
    monkeypatch.setattr(cache, "FOOTPRINTS", False)
    want = simulate(cs, mems, dcache=d, icache=i, fetch_bytes=8)
    assert want.hit_skipped_iterations == want.flattened_iterations == 0
    for res in (got, skipped_only):
        assert res.caches.keys() == want.caches.keys()
        for k in want.caches:
            assert np.array_equal(res.caches[k], want.caches[k]), k
        for k in want.memories:
            assert np.array_equal(res.memories[k], want.memories[k]), k
    assert got.flattened_iterations > 0
    if size >= 4096 and skew == 0:  # (a 512 B cache rarely holds an iteration's lines)
        assert skipped_only.hit_skipped_iterations > 0
    assert want.caches["dcache"][0, 1] > 0  # misses: the caches matter


def test_whole_iteration_shortcuts_equal_the_reference():
    """The same shortcuts against the independent per-access reference caches."""
    from test_cache import RefCache

    from mcusim.cache import CacheConfig, simulate
    from mcusim.isa.addresses import MEM_SHIFT, expand

    cs, mems = _layer_stream("conv", 1)
    d = CacheConfig(1024, 4, 32, "random")
    i = CacheConfig(512, 2, 32, "round_robin")
    res = simulate(cs, mems, dcache=d, icache=i, fetch_bytes=8)
    assert res.flattened_iterations > 0
    # one reference per level; the two memories' lines never alias (memory index on top)
    rd, ri = RefCache(d, 0), RefCache(i, 1)
    for _l, kind, _t, addr, nbytes, write, nacc in expand(cs, fetch=True):
        if kind == "data":
            rd.access(addr, nbytes, write, nacc)
        else:
            lb = i.line_bytes
            for line in range(addr // lb, (addr + nbytes - 1) // lb + 1):
                lo, hi = max(addr, line * lb), min(addr + nbytes, (line + 1) * lb)
                ri.access_line(line, False, (hi - 1) // 8 - lo // 8 + 1)
    dc, ic = res.caches["dcache"][0], res.caches["icache"][0]
    assert (int(dc[0]), int(dc[1]), int(dc[2])) == (rd.hits, rd.misses, rd.writebacks)
    assert (int(ic[0]), int(ic[1])) == (ri.hits, ri.misses)
    assert MEM_SHIFT > 32


# ------------------------------------- the requantization arrays: multipliers and shifts
def _layer_addresses(g, op, dev):
    """layer_bases of a one-op graph on ``dev`` (its arena plan with the persistent
    parameters) and the data addresses its schedule emits, per stream tag."""
    from collections import defaultdict

    from mcusim.cache import code_size
    from mcusim.isa.addresses import compile_programs, expand
    from mcusim.memory_plan import plan_arena, qparam_buffers
    from mcusim.runner import time_op

    tm = time_op(dev, g, op)
    plan = plan_arena(g, {0: tm.scratch_bytes}, qparam_buffers(g))
    bases = layer_bases(g, plan, dev, code_size([tm.program]), 0)
    out = defaultdict(list)
    for _l, _k, tag, addr, _n, _w, _a in expand(compile_programs([tm.program], [bases])):
        out[tag].append(addr)
    return tm, plan, bases, out


def test_multipliers_and_shifts_are_two_arrays_a_way_apart_on_the_f746():
    """TFLite Micro keeps a layer's per-channel multipliers and shifts as two int32
    arrays, 4 * C bytes apart; with C = 256 that is 1 KB, the way size of the STM32F746's
    4 KB 4-way D-cache: channel c's multiplier and shift share a cache set (the conflict
    the firmware has and an interleaved (shift, multiplier) stream never showed)."""
    from test_schedules_m4 import conv_graph

    c = 256
    dev = load_device("stm32f746")
    g, op = conv_graph(6, 6, c, c, 3, depthwise=True)
    tm, plan, bases, s = _layer_addresses(g, op, dev)
    assert tm.kernel == "arm_depthwise_conv_3x3_s8"
    q, n = plan.offsets["qparams:0"], plan.persistent["qparams:0"]
    assert n == 8 * c  # the plan's buffer holds both arrays
    shifts, mults = bases["qparams"], bases["qmult"]
    assert shifts[1] == mults[1] == 4 * c and mults[0] - shifts[0] == 4 * c
    assert memory_of(shifts[0]) == memory_of(bases["input"][0])  # the arena
    assert shifts[0] & ((1 << 40) - 1) == dev.memory_for("arena").base_address + q
    # every output: its channel's shift and multiplier, 4 * C bytes apart, every channel
    # of both arrays read once per pixel (6 x 6 pixels)
    qs, qm = s["qparams"], s["qmult"]
    assert len(qs) == len(qm) == 36 * c
    assert all(m - a == 4 * c for a, m in zip(qs, qm, strict=True))
    assert sorted(set(qs)) == [shifts[0] + 4 * ch for ch in range(c)]
    assert sorted(set(qm)) == [mults[0] + 4 * ch for ch in range(c)]
    d = dev.core.dcache
    sets = d.size // (d.ways * d.line_bytes)
    assert 4 * c == sets * d.line_bytes  # one way: the same set
    line = d.line_bytes
    assert all((a // line) % sets == (m // line) % sets for a, m in zip(qs, qm, strict=True))


def test_thresholds_keep_the_whole_parameter_buffer():
    """A thresholds layer has no multipliers: its thresholds ("qparams") keep the plan's
    whole buffer (not half of it) and nothing reads the multipliers' stream."""
    from test_schedules_cmix import mac_graph

    dev = load_device("stm32f746")
    g, op = mac_graph("W2A2", h=4, w=4, cin=16, cout=4, thresholds=True)
    _tm, plan, bases, s = _layer_addresses(g, op, dev)
    q0 = plan.offsets["qparams:0"]
    assert bases["qparams"][1] == plan.persistent["qparams:0"] == 8 * 4
    assert bases["qparams"][0] & ((1 << 40) - 1) == dev.memory_for("arena").base_address + q0
    assert bases["qmult"][1] == 0 and not s["qmult"]
    assert s["qparams"]
