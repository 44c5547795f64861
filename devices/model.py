"""The architecture object: one Device built from one TOML file (Vela-style config).

Everything that describes hardware lives in the TOML; this module only gives it types and
checks it. A malformed file raises DeviceError naming the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FlashAccelerator:
    """Flash read buffers/caches in front of a wait-stated flash (e.g. ST ART, nRF NVMC
    cache, MAX78000 ICC). Reads that hit a line already in a buffer cost no wait states."""

    line_bytes: int
    icache_lines: int = 0
    dcache_lines: int = 0
    prefetch: bool = False

    @property
    def icache_bytes(self) -> int:
        return self.icache_lines * self.line_bytes

    @property
    def dcache_bytes(self) -> int:
        return self.dcache_lines * self.line_bytes


@dataclass(frozen=True)
class Memory:
    name: str
    kind: str  # "flash" | "sram" | "tcm"
    size: int  # bytes
    width_bits: int  # bus/array read width
    wait_states: int  # extra cycles per array access at the configured clock
    read_pj_per_byte: float  # incremental energy per byte read
    write_pj_per_byte: float  # incremental energy per byte written
    holds: tuple[str, ...]  # what the default placement puts here: "constants", "arena", "code"
    accelerator: FlashAccelerator | None = None


@dataclass(frozen=True)
class Core:
    name: str  # timing model name, e.g. "cortex-m4"
    isa: str  # schedule family, e.g. "armv7em-dsp"
    clock_hz: float


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
        """The memory the default placement uses for 'constants', 'arena' or 'code'."""
        for m in self.memories:
            if what in m.holds:
                return m
        raise KeyError(what)

    @property
    def cycle_s(self) -> float:
        return 1.0 / self.core.clock_hz
