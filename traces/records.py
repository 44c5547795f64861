"""Per-layer records and the whole-run result, with tabular and JSON exports."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


def _jsonable(x: Any) -> Any:
    """JSON for values tiles may put in their reports (numpy scalars/arrays, dataclasses)."""
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if hasattr(x, "__dataclass_fields__"):
        return asdict(x)
    return str(x)


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
    # heterogeneous placement (docs/placement.md). ``cycles`` are in the clock of the
    # layer's engine (``clock_hz``: the CPU core's, or the NPU tile's for "npu:<kind>"),
    # without transfers; ``transfer_bytes`` / ``transfer_cycles`` (CPU clock) move this
    # layer's inputs between CPU memory and the tile's memory (graph outputs left in NPU
    # memory: on their producer); ``latency_s`` = cycles / clock_hz + transfer_cycles /
    # CPU clock. ``energy_j`` = core_energy_j (CPU: running, waiting, copying) +
    # memory_energy_j (CPU-side memories) + npu_energy_j (the tile's own model).
    placement_reason: str = ""  # why a CPU layer is not on the NPU ("" on NPU layers)
    clock_hz: float = 0.0  # the engine's clock; 0 = the run's CPU clock
    transfer_bytes: int = 0
    transfer_cycles: int = 0
    npu_energy_j: float = 0.0
    estimate: bool = False  # the engine's numbers are labelled estimates (tile says so)
    notes: list[str] = field(default_factory=list)

    def flat(self) -> dict[str, Any]:
        """One flat row (traffic expanded to <memory>_read / <memory>_write columns)."""
        row = {k: v for k, v in asdict(self).items() if k not in ("traffic", "cache")}
        row["output_shape"] = "x".join(str(d) for d in self.output_shape)
        row["notes"] = "; ".join(self.notes)
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
    # heterogeneous runs (docs/placement.md): the tile ({"kind", "engine", "clock_hz",
    # "one_time": tile.one_time_costs(...), "plan": summary}), and for a TFLite INT8
    # model moved to MAX78000 arithmetic the per-layer deviation report
    npu: dict[str, Any] = field(default_factory=dict)
    requant_report: list[dict[str, Any]] | None = None
    # per-layer precision overrides: mcusim.quantize's per-layer records (SQNR etc.)
    precision_report: list[dict[str, Any]] | None = None

    def _cycles_by_clock(self) -> tuple[int, dict[float, int]]:
        """(CPU-clock cycles incl. every transfer, {other engine clock: its cycles})."""
        cpu = 0
        other: dict[float, int] = {}
        for r in self.layers:
            clk = r.clock_hz or self.clock_hz
            if clk == self.clock_hz:
                cpu += r.cycles
            else:
                other[clk] = other.get(clk, 0) + r.cycles
            cpu += r.transfer_cycles
        return cpu, other

    @property
    def total_cycles(self) -> int:
        """Whole inference in CPU clock cycles: CPU layers and transfers as counted, each
        other engine's total converted to the CPU clock (rounded once per engine clock).
        On CPU-only runs this is the sum of the layers' cycles."""
        cpu, other = self._cycles_by_clock()
        return cpu + sum(round(c * self.clock_hz / clk) for clk, c in other.items())

    @property
    def latency_s(self) -> float:
        """Sum over engines of their cycles / their clock (layers run one after another)."""
        cpu, other = self._cycles_by_clock()
        return cpu / self.clock_hz + sum(c / clk for clk, c in other.items())

    def engine_totals(self) -> dict[str, dict[str, Any]]:
        """Per engine: layers, cycles in its own clock, clock, latency (transfers apart)."""
        out: dict[str, dict[str, Any]] = {}
        for r in self.layers:
            clk = r.clock_hz or self.clock_hz
            e = out.setdefault(
                r.engine, {"layers": 0, "cycles": 0, "clock_hz": clk, "energy_j": 0.0}
            )
            e["layers"] += 1
            e["cycles"] += r.cycles
            e["energy_j"] += r.energy_j
        for e in out.values():
            e["latency_s"] = e["cycles"] / e["clock_hz"]
        return out

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
            "engines": self.engine_totals(),
            "transfer_bytes": sum(r.transfer_bytes for r in self.layers),
            "transfer_cycles": sum(r.transfer_cycles for r in self.layers),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "device": self.device,
            "clock_hz": self.clock_hz,
            "totals": self.totals(),
            "notes": list(self.notes),
            "npu": self.npu,
            "requant_report": self.requant_report,
            "precision_report": self.precision_report,
            "layers": [asdict(r) | {"output_shape": list(r.output_shape)} for r in self.layers],
        }

    def to_json(self, path: str | Path | None = None, indent: int = 2) -> str:
        text = json.dumps(self.to_dict(), indent=indent, default=_jsonable)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    def to_dataframe(self):
        import pandas as pd

        return pd.DataFrame([r.flat() for r in self.layers])

    def to_csv(self, path: str | Path) -> None:
        self.to_dataframe().to_csv(path, index=False)
