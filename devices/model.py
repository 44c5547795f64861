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
