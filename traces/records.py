"""Per-layer records and the whole-run result, with tabular and JSON exports."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class LayerRecord:
    """What one layer cost. Every number comes from a model in isa/, kernels/ or devices/.

    ``traffic[memory]``: "read"/"write" are core-side bytes (what the kernel's loads and
    stores asked of that memory, hits included); "fill"/"writeback" (present when caches
    were simulated) are bytes actually moved between the memory and a cache level: lines
    filled from it (into the L1 caches, or into its flash accelerator) and dirty lines
    written back to it. ``cache[level]`` ("dcache", "icache", "flash_accel_d",
    "flash_accel_i"): {"hits", "misses", "writebacks"} of this layer's accesses (core
    accesses for L1 levels and for an accelerator the core reaches directly; L1 line
    fills for an accelerator behind an L1). Empty when no cache was simulated.
    """

    index: int
    name: str
    op: str
    engine: str  # e.g. "cpu:cortex-m4"
    precision: str  # e.g. "int8"
    kernel: str  # library function whose loops were timed, e.g. "arm_convolve_s8"
    macs: int
    instructions: int
    compute_cycles: int  # core pipeline cycles with zero-wait-state memory
    stall_cycles: int  # extra cycles from memory wait states (flash, caches)
    cycles: int
    latency_s: float
    energy_j: float
    core_energy_j: float
    memory_energy_j: float
    traffic: dict[str, dict[str, int]]  # memory -> {"read", "write"[, "fill", "writeback"]}
    output_shape: tuple[int, ...] = ()
    cache: dict[str, dict[str, int]] = field(default_factory=dict)  # level -> hits/misses/...
    # cluster devices (docs/cluster.md): worker cores that got work, and the parts of
    # stall_cycles: TCDM bank conflicts on the slowest core, team barriers (one per tile),
    # DMA transfers not hidden behind compute; tiles = L2->L1 tiles of the layer
    cores: int = 1
    bank_conflict_cycles: int = 0
    barrier_cycles: int = 0
    dma_stall_cycles: int = 0
    tiles: int = 0

    def flat(self) -> dict[str, Any]:
        """One flat row (traffic expanded to <memory>_read / <memory>_write columns)."""
        row = {k: v for k, v in asdict(self).items() if k not in ("traffic", "cache")}
        row["output_shape"] = "x".join(str(d) for d in self.output_shape)
        for mem, rw in self.traffic.items():
            for kind, v in rw.items():
                row[f"{mem}_{kind}_bytes"] = v
        for level, st in self.cache.items():
            for kind, v in st.items():
                row[f"{level}_{kind}"] = v
        return row


@dataclass
class RunResult:
    model: str
    device: str
    clock_hz: float
    layers: list[LayerRecord]
    outputs: list[np.ndarray] = field(repr=False)
    peak_ram_bytes: int
    flash_bytes: int
    notes: list[str] = field(default_factory=list)
    tensors: dict[str, np.ndarray] | None = field(default=None, repr=False)

    @property
    def total_cycles(self) -> int:
        return sum(r.cycles for r in self.layers)

    @property
    def latency_s(self) -> float:
        return self.total_cycles / self.clock_hz

    @property
    def energy_j(self) -> float:
        return sum(r.energy_j for r in self.layers)

    @property
    def total_macs(self) -> int:
        return sum(r.macs for r in self.layers)

    def traffic_totals(self) -> dict[str, dict[str, int]]:
        tot: dict[str, dict[str, int]] = {}
        for r in self.layers:
            for mem, rw in r.traffic.items():
                t = tot.setdefault(mem, {"read": 0, "write": 0})
                for kind, v in rw.items():
                    t[kind] = t.get(kind, 0) + v
        return tot

    def cache_totals(self) -> dict[str, dict[str, int]]:
        """Hits/misses/writebacks per cache level over all layers."""
        tot: dict[str, dict[str, int]] = {}
        for r in self.layers:
            for level, st in r.cache.items():
                t = tot.setdefault(level, {})
                for kind, v in st.items():
                    t[kind] = t.get(kind, 0) + v
        return tot

    def totals(self) -> dict[str, Any]:
        return {
            "macs": self.total_macs,
            "cycles": self.total_cycles,
            "latency_s": self.latency_s,
            "energy_j": self.energy_j,
            "peak_ram_bytes": self.peak_ram_bytes,
            "flash_bytes": self.flash_bytes,
            "traffic": self.traffic_totals(),
            "cache": self.cache_totals(),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "device": self.device,
            "clock_hz": self.clock_hz,
            "totals": self.totals(),
            "notes": list(self.notes),
            "layers": [asdict(r) | {"output_shape": list(r.output_shape)} for r in self.layers],
        }

    def to_json(self, path: str | Path | None = None, indent: int = 2) -> str:
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    def to_dataframe(self):
        import pandas as pd

        return pd.DataFrame([r.flat() for r in self.layers])

    def to_csv(self, path: str | Path) -> None:
        self.to_dataframe().to_csv(path, index=False)
