"""From a kernel's timed instruction stream to cycles, traffic and energy on a device.

The ISA timing model gives pipeline cycles with zero-wait-state memory plus, per stream
(input, weights, output, scratch, ...), the bytes and accesses the kernel's loads and
stores made. This module places each stream in a device memory and adds what the memory
costs:

* data reads from a wait-stated memory (flash): every read that needs a new array word
  (``width_bits``) waits ``wait_states`` cycles; if the stream's whole footprint fits in
  the flash accelerator's data cache it is fetched once and then hits;
* instruction fetch from a wait-stated memory: with the kernel's code inside the
  instruction cache only the first pass misses (one array word per ``width_bits``);
  otherwise every executed instruction word is fetched again (half hidden by prefetch);
* energy = active core power x time + per-byte energy of each memory's reads and writes.

Every constant used here comes from the device file.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    "const": "constants",
}


@dataclass(frozen=True)
class StreamUse:
    """Loads/stores one kernel made to one stream (from the timed schedule)."""

    read_bytes: int
    write_bytes: int
    reads: int
    writes: int


@dataclass(frozen=True)
class LayerCost:
    compute_cycles: int
    stall_cycles: int
    instructions: int
    traffic: dict[str, dict[str, int]]
    core_energy_j: float
    memory_energy_j: float

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


def layer_cost(
    device: Device,
    compute_cycles: int,
    instructions: int,
    code_bytes: int,
    streams: dict[str, StreamUse],
    footprints: dict[str, int],
) -> LayerCost:
    """Cycles, traffic per memory and energy of one layer on ``device``."""
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
