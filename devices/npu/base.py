"""The interface every NPU tile model implements, and the registry of tile kinds."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from mcusim.errors import DeviceError

# tile kind (the device file's [npu] kind) -> "module:Class"; imported lazily
_TILES: dict[str, str] = {
    "max78000-cnn": "mcusim.devices.npu.max78000:Max78000Tile",
    "ethos-u55": "mcusim.devices.npu.ethos_u55:EthosU55Tile",
    "generic": "mcusim.devices.npu.generic:GenericTile",
}


def register_tile(kind: str, factory: str) -> None:
    _TILES[kind] = factory


@dataclass(frozen=True)
class NpuSupport:
    """Whether the tile runs an op; ``reason`` says why not (shown in the report)."""

    ok: bool
    reason: str = ""


@dataclass
class NpuLayerCost:
    """One layer on the tile. Cycles are NPU clock cycles (``NpuTile.clock_hz``)."""

    cycles: int
    compute_cycles: int = 0
    memory_cycles: int = 0  # memory-bound cycles (the larger of the two sets ``cycles``)
    traffic: dict[str, dict[str, int]] = field(default_factory=dict)  # memory -> read/write
    energy_j: float = 0.0
    notes: list[str] = field(default_factory=list)
    estimate: bool = False  # True when the tile's numbers are estimates (labelled so)


class NpuTile:
    """Base class: a tile model built from a device file's ``[npu]`` table.

    Subclasses implement ``supports``, ``plan`` and ``layer_cost``; ``compute_kernel`` may
    return a KernelDef when the tile's arithmetic differs from TFLite's (e.g. MAX78000's
    power-of-two scaling), else None (the CPU reference kernels are bit-exact for it).
    """

    kind: str = ""

    def __init__(self, config: dict[str, Any], device: Any, origin: str = ""):
        self.config = config
        self.device = device
        self.origin = origin
        self.clock_hz = float(config.get("clock_hz", 0)) or device.core.clock_hz

    # -- what runs where ------------------------------------------------------------
    def supports(self, graph, op) -> NpuSupport:  # pragma: no cover - interface
        raise NotImplementedError

    def plan(self, graph, ops: list) -> Any:
        """Allocate resources for ``ops`` (in execution order). Raise FitError naming the
        resource, what is needed and what is there when they do not fit."""
        return None

    # -- what it costs --------------------------------------------------------------
    def layer_cost(self, graph, op, plan: Any) -> NpuLayerCost:  # pragma: no cover
        raise NotImplementedError

    def transfer_cycles(self, nbytes: int) -> int:
        """CPU clock cycles to move ``nbytes`` between CPU memory and the tile's memory."""
        return 0

    def one_time_costs(self, graph, ops: list, plan: Any) -> dict[str, Any]:
        """Costs paid once per model (e.g. loading weights), reported apart from inference."""
        return {}

    # -- what it computes -----------------------------------------------------------
    def compute_kernel(self, graph, op):
        return None


def npu_tile(device) -> NpuTile | None:
    """The tile model of ``device`` (None when it has no NPU)."""
    cfg = device.npu
    if not cfg:
        return None
    kind = cfg.get("kind")
    if kind not in _TILES:
        raise DeviceError(
            f"{device.source}: key 'npu.kind': unknown NPU tile {kind!r}; known: "
            f"{', '.join(sorted(_TILES))}"
        )
    mod, cls = _TILES[kind].split(":")
    return getattr(importlib.import_module(mod), cls)(cfg, device, device.source)
