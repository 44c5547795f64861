"""The run loop: for each layer, kernel choice -> compute (numba) + timing (ISA) + memory
traffic -> energy -> record.

Costs do not depend on data values, so they are computed once per (model, device) and
reused by every run on that device; outputs are computed on every run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mcusim.devices.loader import load_device
from mcusim.devices.model import Device
from mcusim.traces.records import LayerRecord, RunResult

from .costs import LayerCost, StreamUse, layer_cost
from .errors import FitError
from .graph import Graph, Op
from .inputs import check_inputs, random_inputs
from .memory_plan import ArenaPlan, plan_arena
from .model import Model, load
from .stats import constant_bytes, op_macs

if TYPE_CHECKING:
    from mcusim.isa.schedule import Program


@dataclass(frozen=True)
class OpTiming:
    """What the ISA timing model says about one op's kernel, before memory is added."""

    kernel: str
    compute_cycles: int
    instructions: int
    code_bytes: int
    scratch_bytes: int
    streams: dict[str, StreamUse]
    program: Program | None = field(default=None, repr=False, compare=False)  # for caches


@dataclass(frozen=True)
class DeviceCosts:
    device: Device
    timings: tuple[OpTiming, ...]
    costs: tuple[LayerCost, ...]
    plan: ArenaPlan
    flash_bytes: int
    cluster: tuple | None = None  # per layer mcusim.cluster.ClusterLayer on cluster devices


def time_op(device: Device, graph: Graph, op: Op) -> OpTiming:
    """Instruction schedule of the op's kernel for the device's ISA, timed by its core."""
    from mcusim.isa.timing import core_timing
    from mcusim.kernels.schedules import schedule_for

    program = schedule_for(device.core.isa, graph, op)
    tr = core_timing(device.core.name).time(program)
    streams = {
        tag: StreamUse(s.read_bytes, s.write_bytes, s.reads, s.writes)
        for tag, s in tr.streams.items()
    }
    return OpTiming(
        kernel=program.kernel,
        compute_cycles=int(tr.cycles),
        instructions=int(tr.instructions),
        code_bytes=int(tr.code_bytes),
        scratch_bytes=int(program.scratch_bytes),
        streams=streams,
        program=program,
    )


def device_costs(model: Model, device: Device) -> DeviceCosts:
    key = device  # the loader returns one shared Device per distinct file content
    cached = model._costs.get(key)
    if cached is not None:
        return cached
    g = model.graph
    if device.cluster is not None:
        dc = _cluster_costs(model, device)
        model._costs[key] = dc
        return dc
    timings = tuple(time_op(device, g, op) for op in g.ops)
    plan = plan_arena(g, {i: tm.scratch_bytes for i, tm in enumerate(timings)})
    flash = constant_bytes(g)
    check_fit(model, device, plan.peak_bytes, flash)
    from .cache import needs_simulation, simulate_model  # numba: imported when needed

    sim = None
    if needs_simulation(device):
        # caches see the address stream of the whole model in order (contents carry over
        # from layer to layer), simulated once per (model, device)
        sim = simulate_model(g, [tm.program for tm in timings], plan, device)
    costs = tuple(
        layer_cost(
            device,
            tm.compute_cycles,
            tm.instructions,
            tm.code_bytes,
            tm.streams,
            {},
            cache=sim.layer(i) if sim is not None else None,
        )
        for i, tm in enumerate(timings)
    )
    dc = DeviceCosts(device, timings, costs, plan, flash)
    model._costs[key] = dc
    return dc


def _cluster_costs(model: Model, device: Device) -> DeviceCosts:
    """Every layer split across the device's cluster (mcusim/cluster.py): its scratch
    (im2col) lives in L1, so the L2 arena holds the activations only."""
    from .cluster import cluster_layer
    from .costs import cluster_layer_cost

    g = model.graph
    layers = tuple(cluster_layer(device, g, op) for op in g.ops)
    timings = tuple(
        OpTiming(
            kernel=cl.kernel,
            compute_cycles=cl.compute_cycles,
            instructions=cl.instructions,
            code_bytes=cl.code_bytes,
            scratch_bytes=0,
            streams={},
        )
        for cl in layers
    )
    plan = plan_arena(g, {})
    flash = constant_bytes(g)
    check_fit(model, device, plan.peak_bytes, flash)
    costs = tuple(cluster_layer_cost(device, cl) for cl in layers)
    return DeviceCosts(device, timings, costs, plan, flash, cluster=layers)


def check_fit(model: Model, device: Device, ram_need: int, flash_need: int) -> None:
    arena = device.memory_for("arena")
    consts = device.memory_for("constants")
    if ram_need > arena.size:
        raise FitError(
            f"model {model.name!r} does not fit {device.name}: activations need {ram_need} "
            f"bytes of {arena.name}, the device has {arena.size}"
        )
    if flash_need > consts.size:
        raise FitError(
            f"model {model.name!r} does not fit {device.name}: constants need {flash_need} "
            f"bytes of {consts.name}, the device has {consts.size}"
        )


def _precision(graph: Graph, op: Op) -> str:
    if op.precision:
        return op.precision
    t = graph.tensors
    acts = [t[n] for n in op.inputs if n and not t[n].is_const]
    a = acts[0].dtype if acts else t[op.outputs[0]].dtype
    a_s = "F32" if a.is_float else f"A{a.bits}"
    if op.kind in ("conv2d", "depthwise_conv2d", "fully_connected"):
        return f"W{t[op.inputs[1]].dtype.bits}{a_s}"
    return a_s


@lru_cache(maxsize=256)
def _placed(device: Device, placement: tuple[tuple[str, str], ...]) -> Device:
    """One shared Device object per (device, placement), so per-device costs are reused."""
    return device.with_placement(dict(placement))


def compute_outputs(model: Model, inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Run every op's compute kernel; returns every activation tensor by name."""
    env: dict[str, np.ndarray] = dict(zip(model.graph.inputs, inputs, strict=True))
    for p in model.prepared():
        outs = p.compute(p.params, [env[n] for n in p.inputs])
        for n, o in zip(p.outputs, outs, strict=True):
            env[n] = o
    return env


def run(
    model: Model | str | Path,
    device: str | Path | Device = "stm32l4r5",
    inputs: np.ndarray | Sequence[np.ndarray] | Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
    keep_tensors: bool = False,
    placement: Mapping[str, str] | None = None,
) -> RunResult:
    """Simulate one inference of ``model`` on ``device``.

    ``inputs`` default to seeded random values over each input's range. With
    ``keep_tensors`` the result also carries every intermediate tensor (``result.tensors``).
    ``placement`` moves roles to other memories of the device for this run, e.g.
    ``{"arena": "axi_sram", "constants": "flash"}`` (roles: constants, arena, code).
    """
    if not isinstance(model, Model):
        model = load(model)
    dev = device if isinstance(device, Device) else load_device(device)
    if placement:
        dev = _placed(dev, tuple(sorted(placement.items())))
    g = model.graph
    dc = device_costs(model, dev)
    xs = random_inputs(g, seed) if inputs is None else check_inputs(g, inputs)
    env = compute_outputs(model, xs)
    engine = f"cpu:{dev.core.name}"
    layers = []
    for i, (op, tm, c) in enumerate(zip(g.ops, dc.timings, dc.costs, strict=True)):
        cl = dc.cluster[i] if dc.cluster is not None else None
        extra = {}
        if cl is not None:
            extra = dict(
                cores=cl.cores_used,
                bank_conflict_cycles=cl.bank_conflict_cycles,
                barrier_cycles=cl.barrier_cycles,
                dma_stall_cycles=cl.dma_stall_cycles,
                tiles=cl.tiles.tiles,
            )
        layers.append(
            LayerRecord(
                index=i,
                name=op.name,
                op=op.kind,
                engine=engine,
                precision=_precision(g, op),
                kernel=tm.kernel,
                macs=op_macs(g, op),
                instructions=c.instructions,
                compute_cycles=c.compute_cycles,
                stall_cycles=c.stall_cycles,
                cycles=c.cycles,
                latency_s=c.cycles / dev.core.clock_hz,
                energy_j=c.energy_j,
                core_energy_j=c.core_energy_j,
                memory_energy_j=c.memory_energy_j,
                traffic={m: dict(rw) for m, rw in c.traffic.items()},
                output_shape=tuple(g.tensors[op.outputs[0]].shape),
                cache={lv: dict(st) for lv, st in c.cache.items()},
                **extra,
            )
        )
    result = RunResult(
        model=g.name,
        device=dev.name,
        clock_hz=dev.core.clock_hz,
        layers=layers,
        outputs=[env[n] for n in g.outputs],
        peak_ram_bytes=dc.plan.peak_bytes,
        flash_bytes=dc.flash_bytes,
        notes=list(dev.notes),
        tensors=env if keep_tensors else None,
    )
    return result
