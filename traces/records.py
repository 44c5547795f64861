"""Per-layer records and the whole-run result, with tabular and JSON exports."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class LayerRecord:
    """What one layer cost. Every number comes from a model in isa/, kernels/ or devices/."""

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
    traffic: dict[str, dict[str, int]]  # memory -> {"read": bytes, "write": bytes}
    output_shape: tuple[int, ...] = ()

    def flat(self) -> dict[str, Any]:
        """One flat row (traffic expanded to <memory>_read / <memory>_write columns)."""
        row = {k: v for k, v in asdict(self).items() if k != "traffic"}
        row["output_shape"] = "x".join(str(d) for d in self.output_shape)
        for mem, rw in self.traffic.items():
            row[f"{mem}_read_bytes"] = rw.get("read", 0)
            row[f"{mem}_write_bytes"] = rw.get("write", 0)
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
                t["read"] += rw.get("read", 0)
                t["write"] += rw.get("write", 0)
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
