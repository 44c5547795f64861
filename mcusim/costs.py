"""From a kernel's timed instruction stream to cycles, traffic and energy on a device.

The ISA timing model gives pipeline cycles with zero-wait-state memory plus, per stream
(input, weights, output, scratch, ...), the bytes and accesses the kernel's loads and
stores made. This module places each stream in a device memory and adds what the memory
costs (docs/cost-model.md, "Memory stalls and traffic"):

* memories behind a cache level (the core's L1 caches for ``cached`` memories, a flash
  accelerator's lines) are costed from the cache simulation of the kernel's real address
  stream (mcusim/cache.py): an L1 line fill costs ``wait_states + line_bytes / bus bytes``
  cycles (first-beat latency, then one beat per bus width), a dirty writeback the same, an
  accelerator line fill ``line_bytes / array bytes x wait_states`` (one wait-stated array
  read per flash word; sequential instruction misses half hidden by prefetch);
* TCMs are zero-wait;
* other wait-stated memories keep the first-order model: every read that needs a new
  array word (``width_bits``) waits ``wait_states`` cycles; instruction fetch likewise
  (:func:`data_stall_cycles`, :func:`fetch_stall_cycles`, also used when no simulation
  result is given);
* energy = active core power x time + per-byte energy of the bytes each memory array
  actually moved (core accesses that bypass caches, line fills, writebacks).

Every constant used here comes from the device file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mcusim.devices.model import Device, Memory

# Which memory role each stream tag of a kernel schedule lives in.
STREAM_ROLE = {
    "input": "arena",
    "input2": "arena",
    "output": "arena",
    "scratch": "arena",
    "stack": "arena",
    "weights": "constants",
    "bias": "constants",
    "const": "constants",  # literal pools, constant tensors read by non-MAC ops
    # per-channel requantization parameters / thresholds the runtime prepares at init
    # (TFLite Micro: persistent buffers at the tail of the arena)
    "qparams": "arena",
    "qmult": "arena",  # the multipliers: an array of their own next to the shifts
}


@dataclass(frozen=True)
class StreamUse:
    """Loads/stores one kernel made to one stream (from the timed schedule)."""

    read_bytes: int
    write_bytes: int
    reads: int
    writes: int


@dataclass(frozen=True)
class LayerCacheStats:
    """One layer's cache simulation counters (mcusim/cache.py SimResult, one row).

    ``levels``: level name ("dcache", "icache", "flash_accel_d", "flash_accel_i") ->
    {"hits", "misses", "writebacks", "seq_misses"} (hits/misses count core accesses:
    register transfers for data, fetch units for instructions; a miss fills one line).
    ``memories``: memory name -> {"l1_fills", "accel_fills", "writebacks" (lines),
    "write_through" (bytes)}. ``line_bytes``: line size of each level; ``level_memory``:
    the memory each accelerator level belongs to."""

    levels: dict[str, dict[str, int]]
    memories: dict[str, dict[str, int]]
    line_bytes: dict[str, int]
    level_memory: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LayerCost:
    compute_cycles: int
    stall_cycles: int
    instructions: int
    traffic: dict[str, dict[str, int]]
    core_energy_j: float
    memory_energy_j: float
    cache: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def cycles(self) -> int:
        return self.compute_cycles + self.stall_cycles

    @property
    def energy_j(self) -> float:
        return self.core_energy_j + self.memory_energy_j


def _words(nbytes: int, mem: Memory) -> int:
    wb = max(mem.width_bits // 8, 1)
    return (nbytes + wb - 1) // wb


def data_stall_cycles(mem: Memory, read_bytes: int, footprint_bytes: int | None) -> int:
    """Wait-state cycles for a stream of reads from ``mem``."""
    if mem.wait_states == 0 or read_bytes == 0:
        return 0
    acc = mem.accelerator
    fetched = read_bytes
    if acc is not None and footprint_bytes is not None and 0 < footprint_bytes <= acc.dcache_bytes:
        fetched = min(read_bytes, footprint_bytes)
    return _words(fetched, mem) * mem.wait_states


def fetch_stall_cycles(mem: Memory, code_bytes: int, instructions: int) -> int:
    """Wait-state cycles for fetching the kernel's instructions from ``mem``."""
    if mem.wait_states == 0 or code_bytes == 0:
        return 0
    acc = mem.accelerator
    if acc is not None and code_bytes <= acc.icache_bytes:
        return _words(code_bytes, mem) * mem.wait_states  # cold misses only
    avg_instr_bytes = code_bytes / max(instructions, 1) if instructions else 2
    words = _words(int(instructions * avg_instr_bytes), mem)
    if acc is not None and acc.prefetch:
        words = (words + 1) // 2  # sequential prefetch overlaps every other word
    return words * mem.wait_states


def route(device: Device, mem: Memory, fetch: bool = False) -> str:
    """Which level serves the core's accesses to ``mem``: "tcm", "l1" (the core's L1
    cache), "accel" (the memory's flash accelerator) or "direct"."""
    if mem.kind == "tcm":
        return "tcm"
    l1 = device.core.icache if fetch else device.core.dcache
    if mem.cached and l1 is not None:
        return "l1"
    acc = mem.accelerator
    if acc is not None and (acc.icache_lines if fetch else acc.dcache_lines):
        return "accel"
    return "direct"


def _beats(nbytes: int, mem: Memory) -> int:
    return _words(nbytes, mem)


def l1_fill_cycles(mem: Memory, line_bytes: int) -> int:
    """Stall of one L1 line fill from ``mem``: first-beat latency (its wait states, unless
    a flash accelerator answers for it: then its own misses are charged) + one beat per
    bus word. The core's zero-wait timing already holds the hit cycle."""
    ws = 0 if mem.accelerator is not None else mem.wait_states
    return ws + _beats(line_bytes, mem)


def accel_fill_cycles(mem: Memory) -> int:
    """Stall of one flash-accelerator line fill: each flash word of the line is one
    wait-stated array read (the same per-word charge as the first-order model)."""
    acc = mem.accelerator
    return _words(acc.line_bytes, mem) * mem.wait_states if acc is not None else 0


def layer_cost(
    device: Device,
    compute_cycles: int,
    instructions: int,
    code_bytes: int,
    streams: dict[str, StreamUse],
    footprints: dict[str, int],
    cache: LayerCacheStats | None = None,
) -> LayerCost:
    """Cycles, traffic per memory and energy of one layer on ``device``.

    With ``cache`` (the simulation of this layer's address stream) memories behind a cache
    level are costed from its line fills; without it the first-order model applies
    everywhere (``footprints``: distinct bytes per stream, for the accelerator heuristic)."""
    if cache is not None:
        return _layer_cost_sim(device, compute_cycles, instructions, code_bytes, streams, cache)
    traffic: dict[str, dict[str, int]] = {}
    stall = 0
    mem_energy_pj = 0.0
    for tag, use in streams.items():
        role = STREAM_ROLE.get(tag)
        if role is None:
            raise ValueError(f"schedule stream {tag!r} has no memory role")
        mem = device.memory_for(role)
        t = traffic.setdefault(mem.name, {"read": 0, "write": 0})
        t["read"] += use.read_bytes
        t["write"] += use.write_bytes
        stall += data_stall_cycles(mem, use.read_bytes, footprints.get(tag))
        mem_energy_pj += use.read_bytes * mem.read_pj_per_byte
        mem_energy_pj += use.write_bytes * mem.write_pj_per_byte
    stall += fetch_stall_cycles(device.memory_for("code"), code_bytes, instructions)
    cycles = compute_cycles + stall
    core_j = device.power.active_power_w(device.core.clock_hz) * cycles / device.core.clock_hz
    return LayerCost(
        compute_cycles=compute_cycles,
        stall_cycles=stall,
        instructions=instructions,
        traffic=traffic,
        core_energy_j=core_j,
        memory_energy_j=mem_energy_pj * 1e-12,
    )


def _layer_cost_sim(
    device: Device,
    compute_cycles: int,
    instructions: int,
    code_bytes: int,
    streams: dict[str, StreamUse],
    cache: LayerCacheStats,
) -> LayerCost:
    traffic: dict[str, dict[str, int]] = {}
    moved: dict[str, list[int]] = {}  # memory -> [array bytes read, array bytes written]
    stall = 0
    for tag, use in streams.items():
        role = STREAM_ROLE.get(tag)
        if role is None:
            raise ValueError(f"schedule stream {tag!r} has no memory role")
        mem = device.memory_for(role)
        t = traffic.setdefault(mem.name, {"read": 0, "write": 0, "fill": 0, "writeback": 0})
        t["read"] += use.read_bytes
        t["write"] += use.write_bytes
        mv = moved.setdefault(mem.name, [0, 0])
        r = route(device, mem)
        if r in ("tcm", "direct"):
            mv[0] += use.read_bytes
            mv[1] += use.write_bytes
            if r == "direct":
                stall += data_stall_cycles(mem, use.read_bytes, None)
        elif r == "accel":
            mv[1] += use.write_bytes  # the accelerator caches reads only
    code = device.memory_for("code")
    if route(device, code, fetch=True) == "direct":
        stall += fetch_stall_cycles(code, code_bytes, instructions)
    for mem in device.memories:
        ms = cache.memories.get(mem.name)
        if ms is None or not any(ms.values()):
            continue
        t = traffic.setdefault(mem.name, {"read": 0, "write": 0, "fill": 0, "writeback": 0})
        mv = moved.setdefault(mem.name, [0, 0])
        l1_line = cache.line_bytes.get("dcache") or cache.line_bytes.get("icache") or 0
        acc = mem.accelerator
        acc_line = acc.line_bytes if acc is not None else 0
        stall += ms["l1_fills"] * l1_fill_cycles(mem, l1_line) if ms["l1_fills"] else 0
        stall += ms["writebacks"] * (mem.wait_states + _beats(l1_line, mem))
        fill_bytes = ms["accel_fills"] * acc_line
        if acc is None:
            fill_bytes += ms["l1_fills"] * l1_line
        t["fill"] += fill_bytes
        t["writeback"] += ms["writebacks"] * l1_line
        mv[0] += fill_bytes
        mv[1] += ms["writebacks"] * l1_line + ms["write_through"]
    # flash accelerator misses: data and instruction side (prefetch hides half of each
    # sequential instruction miss)
    for name, st in cache.levels.items():
        if not name.endswith(("accel_d", "accel_i", "accel_u")) or not st["misses"]:
            continue
        owner = cache.level_memory.get(name)
        mem = device.memory(owner) if owner else _accel_memory(device, name)
        per = accel_fill_cycles(mem)
        seq = st["seq_misses"] if name.endswith("accel_i") and mem.accelerator.prefetch else 0
        stall += (st["misses"] - seq) * per + seq * per // 2
    mem_pj = 0.0
    for name, (rd, wr) in moved.items():
        m = device.memory(name)
        mem_pj += rd * m.read_pj_per_byte + wr * m.write_pj_per_byte
    cycles = compute_cycles + stall
    core_j = device.power.active_power_w(device.core.clock_hz) * cycles / device.core.clock_hz
    levels = {
        k: {"hits": v["hits"], "misses": v["misses"], "writebacks": v["writebacks"]}
        for k, v in cache.levels.items()
    }
    return LayerCost(
        compute_cycles=compute_cycles,
        stall_cycles=stall,
        instructions=instructions,
        traffic=traffic,
        core_energy_j=core_j,
        memory_energy_j=mem_pj * 1e-12,
        cache=levels,
    )


def _accel_memory(device: Device, level: str) -> Memory:
    """The memory whose accelerator a level name ("flash_accel_d", "<mem>_flash_accel_i")
    belongs to: the first memory with an accelerator unless the name carries a memory."""
    for m in device.memories:
        if level.startswith(m.name + "_flash_accel"):
            return m
    for m in device.memories:
        if m.accelerator is not None:
            return m
    raise KeyError(level)


def cluster_layer_cost(device: Device, layer) -> LayerCost:
    """Cycles, traffic and energy of one layer run on ``device.cluster``
    (``layer``: :class:`mcusim.cluster.ClusterLayer`; docs/cluster.md). Core accesses hit
    the L1 TCDM; tiles move between the L2 memory and L1 by DMA (both directions counted
    on both sides); time = compute + bank conflicts + barriers + DMA stall."""
    cl = device.cluster
    l1, l2 = cl.l1, device.memory(cl.l2)
    traffic = {
        "l1": {
            "read": layer.l1_read_bytes + layer.dma_out_bytes,
            "write": layer.l1_write_bytes + layer.dma_in_bytes,
        },
        l2.name: {"read": layer.dma_in_bytes, "write": layer.dma_out_bytes},
    }
    mem_pj = (
        traffic["l1"]["read"] * l1.read_pj_per_byte
        + traffic["l1"]["write"] * l1.write_pj_per_byte
        + layer.dma_in_bytes * l2.read_pj_per_byte
        + layer.dma_out_bytes * l2.write_pj_per_byte
    )
    cycles = layer.compute_cycles + layer.stall_cycles
    core_j = device.power.active_power_w(device.core.clock_hz) * cycles / device.core.clock_hz
    return LayerCost(
        compute_cycles=layer.compute_cycles,
        stall_cycles=layer.stall_cycles,
        instructions=layer.instructions,
        traffic=traffic,
        core_energy_j=core_j,
        memory_energy_j=mem_pj * 1e-12,
    )
