"""Roofs of a device for the roofline plot: peak MAC/cycle per engine and the bandwidth of
each memory, every number derived from the device file or measured on the kernel schedules.

Compute roof of a CPU core (or a cluster of cores): the MAC rate of the kernel schedules'
inner loops, measured by differencing. Two probe layers that differ only in the reduction
length (a 1x1 conv2d 8x8x64->32 vs 8x8x128->32, and a fully connected 512->64 vs 1024->64,
INT8) are scheduled for the device's ISA and timed on its core (cluster devices: split over
the cluster, mcusim/cluster.py). Everything outside the inner loop (requantization, loop
setup, im2col of the output rows) is the same in both, so extra MACs / extra cycles is the
steady-state rate of the innermost MAC loop; the roof is the best of the probes.

Compute roof of an NPU: the tile's MAC array from the ``[npu]`` table: ``macs``
(Ethos-U55 MACs/cycle), ``macs_per_cycle`` (generic tiles: the int8 rate), or
for the MAX78000 CNN ``processors x weight_word_bits / 8`` (each processor applies one
3x3 8-bit kernel word per cycle, docs/max78000.md).

Memory roofs (bytes per cycle of the engine's clock): CPU memories
``width_bits / 8 / (1 + wait_states)`` (one array access per 1 + wait-state cycles; flash
accelerators and caches can beat this for reuse); cluster L1 ``banks x bank_width`` and L2
the cluster DMA's ``bytes_per_cycle``; NPU memories their ``bytes_per_cycle`` in the
``[npu]`` table (MAX78000: data ``data_memory_instances`` 32-bit words per cycle, weights
``processors x weight_word_bits / 8``). Memories work in parallel, so the plot also draws
their sum over the memories the engine's layers touched ("all memories"): the roof that
bounds a layer whose arithmetic intensity counts the bytes of every memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from mcusim.devices.model import Device


@dataclass(frozen=True)
class MemoryRoof:
    name: str
    bytes_per_cycle: float
    source: str  # how it was derived


@dataclass(frozen=True)
class EngineRoof:
    engine: str  # "cpu:<core>" / "npu:<kind>" as in LayerRecord.engine
    macs_per_cycle: float
    source: str
    memories: tuple[MemoryRoof, ...] = field(default_factory=tuple)


def _probe_graphs():
    """Pairs of INT8 layers differing only in reduction length (see module docstring)."""
    from mcusim.dtypes import INT8, INT32, Quant
    from mcusim.graph import Graph, Op, Tensor
    from mcusim.ops import Conv2DAttrs, FullyConnectedAttrs

    def t(name, shape, dtype=INT8, n=1, axis=None, const=False):
        q = Quant(np.full(n, 0.05, np.float32), np.zeros(n, np.int64), axis)
        data = None
        if const:
            data = np.ones(shape, dtype.np_dtype)
        return Tensor(name, tuple(shape), dtype, q, data)

    def conv(c_in: int):
        ts = {
            "x": t("x", (1, 8, 8, c_in)),
            "w": t("w", (32, 1, 1, c_in), n=32, axis=0, const=True),
            "b": t("b", (32,), INT32, const=True),
            "y": t("y", (1, 8, 8, 32)),
        }
        op = Op("conv2d", "probe_conv", ["x", "w", "b"], ["y"], Conv2DAttrs())
        return Graph(ts, [op], ["x"], ["y"], name="probe"), op

    def fc(n_in: int):
        ts = {
            "x": t("x", (1, n_in)),
            "w": t("w", (64, n_in), n=64, axis=0, const=True),
            "b": t("b", (64,), INT32, const=True),
            "y": t("y", (1, 64)),
        }
        op = Op("fully_connected", "probe_fc", ["x", "w", "b"], ["y"], FullyConnectedAttrs())
        return Graph(ts, [op], ["x"], ["y"], name="probe"), op

    return [("1x1 conv2d", conv(64), conv(128)), ("fully_connected", fc(512), fc(1024))]


def _compute_cycles(device: Device, graph, op) -> int:
    if device.cluster is not None:
        from mcusim.cluster import cluster_layer

        return int(cluster_layer(device, graph, op).compute_cycles)
    from mcusim.runner import time_op

    return int(time_op(device, graph, op).compute_cycles)


@lru_cache(maxsize=64)
def cpu_peak(device: Device) -> tuple[float, str]:
    """(MAC/cycle of the best probe's inner loop, which probe)."""
    from mcusim.stats import op_macs

    best, which = 0.0, ""
    for name, (g0, op0), (g1, op1) in _probe_graphs():
        dm = op_macs(g1, op1) - op_macs(g0, op0)
        dc = _compute_cycles(device, g1, op1) - _compute_cycles(device, g0, op0)
        if dc > 0 and dm / dc > best:
            best, which = dm / dc, name
    return best, which


def _cpu_memories(device: Device) -> list[MemoryRoof]:
    out = []
    if device.cluster is not None:
        cl = device.cluster
        out.append(
            MemoryRoof(
                cl.l1.name if hasattr(cl.l1, "name") else "l1",
                float(cl.l1.banks * cl.l1.bank_width),
                "TCDM banks x bank width",
            )
        )
        out.append(MemoryRoof("l2", float(cl.dma.bytes_per_cycle), "cluster DMA bytes/cycle"))
        return out
    for m in device.memories:
        bpc = m.width_bits / 8 / (1 + m.wait_states)
        out.append(
            MemoryRoof(m.name, bpc, f"{m.width_bits}-bit / (1 + {m.wait_states} wait states)")
        )
    return out


def _npu_roof(device: Device) -> EngineRoof | None:
    cfg = device.npu or {}
    kind = cfg.get("kind")
    if not kind:
        return None
    if "macs" in cfg:
        peak, src = float(cfg["macs"]), "[npu] macs (MAC array)"
    elif "macs_per_cycle" in cfg:
        mpc = cfg["macs_per_cycle"]
        if isinstance(mpc, dict) and "int8" in mpc:
            peak, src = float(mpc["int8"]), "[npu] macs_per_cycle.int8"
        else:
            vals = mpc.values() if isinstance(mpc, dict) else [mpc]
            peak, src = float(max(vals)), "[npu] macs_per_cycle (best precision)"
    elif "processors" in cfg and "weight_word_bits" in cfg:
        peak = float(cfg["processors"] * cfg["weight_word_bits"] // 8)
        src = "[npu] processors x one 3x3 kernel word (weight_word_bits / 8 MACs) per cycle"
    else:
        return None
    mems: list[MemoryRoof] = []
    named = cfg.get("memories")
    if isinstance(named, dict):
        for name, m in named.items():
            if isinstance(m, dict) and "bytes_per_cycle" in m:
                mems.append(MemoryRoof(name, float(m["bytes_per_cycle"]), "[npu.memories]"))
    for m in cfg.get("memory", []) or []:
        if isinstance(m, dict) and "bytes_per_cycle" in m:
            mems.append(MemoryRoof(m["name"], float(m["bytes_per_cycle"]), "[[npu.memory]]"))
    if "processors" in cfg and "weight_word_bits" in cfg:
        mems.append(
            MemoryRoof(
                "cnn_weights",
                float(cfg["processors"] * cfg["weight_word_bits"] // 8),
                "processors x one weight_word_bits kernel word per cycle",
            )
        )
    if "data_memory_instances" in cfg:
        mems.append(
            MemoryRoof(
                "cnn_data",
                float(cfg["data_memory_instances"] * 4),
                "data_memory_instances x 32-bit words per cycle",
            )
        )
    engine = f"npu:{kind}"
    return EngineRoof(engine, peak, src, tuple(mems))


def device_roofs(device: Device) -> dict[str, EngineRoof]:
    """Roofs per engine name ("cpu:<core>", and "npu:<kind>" on devices with a tile)."""
    peak, which = cpu_peak(device)
    cpu = EngineRoof(
        f"cpu:{device.core.name}",
        peak,
        f"inner-loop MAC rate of the {device.core.isa} schedules ({which} probe, INT8)"
        + (f", {device.cluster.cores} cluster cores" if device.cluster is not None else ""),
        tuple(_cpu_memories(device)),
    )
    out = {cpu.engine: cpu}
    npu = _npu_roof(device)
    if npu is not None:
        out[npu.engine] = npu
    return out
