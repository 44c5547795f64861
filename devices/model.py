"""The architecture object: one Device built from one TOML file (Vela-style config).

Everything that describes hardware lives in the TOML; this module only gives it types and
checks it. A malformed file raises DeviceError naming the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ROLES = ("constants", "arena", "code")


@dataclass(frozen=True)
class FlashAccelerator:
    """Flash read buffers/caches in front of a wait-stated flash (e.g. ST ART, nRF NVMC
    cache, MAX78000 ICC). Reads that hit a line already in a buffer cost no wait states."""

    line_bytes: int
    icache_lines: int = 0
    dcache_lines: int = 0
    prefetch: bool = False
    ways: int = 0  # associativity of its caches; 0 = fully associative
    unified: bool = False  # one set of lines serves both reads (dcache_lines == icache_lines)

    @property
    def icache_bytes(self) -> int:
        return self.icache_lines * self.line_bytes

    @property
    def dcache_bytes(self) -> int:
        return self.dcache_lines * self.line_bytes


@dataclass(frozen=True)
class Cache:
    """An L1 cache of the core (Cortex-M7/M55/M85 I- and D-caches)."""

    size: int  # bytes
    ways: int
    line_bytes: int
    replacement: str = "lru"  # "lru" | "random" | "round_robin"
    write_back: bool = True  # D-cache: write-back (else write-through)
    write_allocate: bool = True  # D-cache: a write miss allocates a line

    @property
    def sets(self) -> int:
        return self.size // (self.ways * self.line_bytes)


@dataclass(frozen=True)
class Memory:
    name: str
    kind: str  # "flash" | "sram" | "tcm" | "external"
    size: int  # bytes
    width_bits: int  # bus/array read width
    wait_states: int  # extra cycles per array access at the configured clock
    read_pj_per_byte: float  # incremental energy per byte read
    write_pj_per_byte: float  # incremental energy per byte written
    holds: tuple[str, ...]  # what the default placement puts here: "constants", "arena", "code"
    accelerator: FlashAccelerator | None = None
    cached: bool = False  # reached through the core's L1 caches (AXI/AHB path), not a TCM
    base_address: int = 0  # where it sits in the memory map (cache set mapping)


@dataclass(frozen=True)
class Core:
    name: str  # timing model name, e.g. "cortex-m4"
    isa: str  # schedule family, e.g. "armv7em-dsp"
    clock_hz: float
    icache: Cache | None = None
    dcache: Cache | None = None


@dataclass(frozen=True)
class Tcdm:
    """A cluster's shared L1 (tightly-coupled data memory): ``banks`` single-port banks of
    ``bank_width`` bytes; word-interleaved means consecutive words go to consecutive banks
    (bank = address / bank_width mod banks)."""

    size: int  # bytes
    banks: int
    bank_width: int = 4  # bytes per bank word
    interleaved: bool = True
    read_pj_per_byte: float = 0.0
    write_pj_per_byte: float = 0.0

    def bank_of(self, address: int) -> int:
        if self.interleaved:
            return (address // self.bank_width) % self.banks
        return address // (self.size // self.banks)


@dataclass(frozen=True)
class Dma:
    """The cluster DMA moving tiles between L2 and the L1 TCDM (cluster clock cycles)."""

    bytes_per_cycle: float  # sustained L2 -> L1 (and L1 -> L2) bandwidth
    setup_cycles: int  # programming + first-beat latency of one transfer
    row_cycles: int = 0  # extra per row of a 2-D/3-D transfer
    channels: int = 1  # transfers in flight; they share the bandwidth


@dataclass(frozen=True)
class Cluster:
    """A PULP-style compute cluster: ``cores`` identical workers sharing an L1 TCDM, fed
    by a DMA from the L2 memory named ``l2``; layers are split across the workers
    (mcusim/cluster.py). The workers' core type is the device's ``core``."""

    cores: int  # worker cores that run kernel parts
    l1: Tcdm
    l2: str  # name of the device memory the DMA reads tiles from / writes back to
    dma: Dma
    barrier_cycles: int  # one team barrier at the end of every kernel call
    extra_cores: int = 0  # cores present but not running kernels (GAP9 cluster controller)
    l1_reserved: int = 0  # L1 bytes the runtime keeps (stacks, descriptors)

    @property
    def l1_budget(self) -> int:
        return self.l1.size - self.l1_reserved


@dataclass(frozen=True)
class Engine:
    """A further CPU engine of a device (e.g. the MAX78000's RISC-V core) that a later
    placement step may run layers on; it does not change the main core's results."""

    name: str
    core: str  # timing model name
    isa: str  # schedule family
    clock_hz: float
    memories: tuple[str, ...] = ()  # device memories it can reach
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Power:
    voltage_v: float
    active_ua_per_mhz: float  # core + always-on logic while running the kernels

    def active_power_w(self, clock_hz: float) -> float:
        return self.active_ua_per_mhz * 1e-6 * (clock_hz / 1e6) * self.voltage_v


@dataclass(frozen=True, eq=False)  # identity-hashed: results are cached per Device object
class Device:
    name: str
    description: str
    core: Core
    memories: tuple[Memory, ...]
    power: Power
    npu: dict | None = None  # NPU tile config (later issue); None = CPU only
    notes: tuple[str, ...] = field(default_factory=tuple)
    source: str = ""  # file it was loaded from
    cluster: Cluster | None = None  # layers run split across a core cluster (PULP)
    fabric_controller: Core | None = None  # the SoC's control core (GAP8/GAP9 FC)
    engines: tuple[Engine, ...] = ()  # further CPU engines (not used by run() yet)

    def memory(self, name: str) -> Memory:
        for m in self.memories:
            if m.name == name:
                return m
        raise KeyError(name)

    def memory_for(self, what: str) -> Memory:
        """The memory the placement uses for 'constants', 'arena' or 'code'."""
        for m in self.memories:
            if what in m.holds:
                return m
        raise KeyError(what)

    def with_placement(self, placement: dict[str, str]) -> Device:
        """A copy of this device with roles moved to other memories, e.g.
        ``{"arena": "axi_sram", "constants": "dtcm"}``. Roles: constants, arena, code."""
        from dataclasses import replace

        from mcusim.errors import DeviceError

        names = {m.name for m in self.memories}
        for role, mem in placement.items():
            if role not in ROLES:
                raise DeviceError(f"{self.name}: unknown placement role {role!r}; roles: {ROLES}")
            if mem not in names:
                raise DeviceError(
                    f"{self.name}: placement {role}={mem}: no memory named {mem!r} "
                    f"(memories: {', '.join(sorted(names))})"
                )
            if role == "arena" and self.memory(mem).kind == "flash":
                raise DeviceError(
                    f"{self.name}: placement arena={mem}: activations need writable memory, "
                    f"{mem!r} is flash"
                )
        mems = []
        for m in self.memories:
            holds = tuple(h for h in m.holds if h not in placement)
            holds += tuple(r for r, name in placement.items() if name == m.name)
            mems.append(replace(m, holds=holds))
        return replace(self, memories=tuple(mems))

    @property
    def cycle_s(self) -> float:
        return 1.0 / self.core.clock_hz
