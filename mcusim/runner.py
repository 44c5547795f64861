"""The run loop: for each layer, kernel choice -> compute (numba) + timing (ISA) + memory
traffic -> energy -> record.

Costs are computed once per (model, device) and reused by every run on that device; the
few kernels whose timing depends on the values (mcusim.observed: softmax, FC) are timed again
on each full run's own tensors. Outputs are computed on every run, except in
``mode="estimate"`` (cycles, traffic and energy only: the same numbers but for those
data-dependent layers, which take their schedules' expectation; no outputs).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mcusim.devices.loader import load_device
from mcusim.devices.model import Device
from mcusim.devices.npu.base import NpuLayerCost, NpuTile
from mcusim.traces.records import LayerRecord, RunResult

from .costs import LayerCost, StreamUse, layer_cost
from .errors import FitError, UserError
from .graph import Graph, Op
from .inputs import check_inputs, random_inputs
from .memory_plan import ArenaPlan, plan_arena, qparam_buffers
from .model import Model, load
from .observed import OpData, observe
from .placement import Placement, Transfer
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


def time_op(device: Device, graph: Graph, op: Op, data: OpData | None = None) -> OpTiming:
    """Instruction schedule of the op's kernel for the device's ISA, timed by its core
    (``data``: the run's observed facts for a data-dependent kernel, mcusim.observed)."""
    from mcusim.isa.timing import core_timing
    from mcusim.kernels.schedules import schedule_for

    program = schedule_for(device.core.isa, graph, op, data)
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


def _data_used(device: Device, graph: Graph, data: Mapping[int, OpData] | None) -> tuple:
    """The observed facts the device's schedules use, as a cache key (empty: none)."""
    if not data or device.cluster is not None:
        return ()
    from mcusim.kernels.schedules import uses_data

    return tuple(
        sorted((i, d) for i, d in data.items() if uses_data(device.core.isa, graph.ops[i]))
    )


_DATA_KEYS_KEPT = 8  # cost sets kept per model for observed data (a seed sweep: one each)


def _remember(model: Model, key, costs) -> None:
    if isinstance(key, tuple) and key[0] == "data":
        old = [k for k in model._costs if isinstance(k, tuple) and k[0] == "data"]
        for k in old[: max(0, len(old) - _DATA_KEYS_KEPT + 1)]:
            del model._costs[k]
    model._costs[key] = costs


def _estimate_timings(model: Model, device: Device) -> tuple[OpTiming, ...]:
    """Every layer's schedule timed without observed data, cached per (model, device):
    estimate-mode costs and a full run's data-independent layers share them, so a full run
    simulates the caches once, not once more for an estimate nobody asked for."""
    key = ("timings", device)
    timings = model._costs.get(key)
    if timings is None:
        timings = tuple(time_op(device, model.graph, op) for op in model.graph.ops)
        model._costs[key] = timings
    return timings


def _arena_plan(graph: Graph, timings) -> ArenaPlan:
    """The arena plan for these timings' scratch needs and the persistent parameters."""
    scratch = {i: tm.scratch_bytes for i, tm in enumerate(timings)}
    return plan_arena(graph, scratch, qparam_buffers(graph))


def check_device_fit(model: Model, device: Device) -> None:
    """FitError unless the model's arena and constants fit ``device`` (the arena plan of
    the estimate timings: no cache simulation; checked once per model and device)."""
    key = ("fits", device)
    if key in model._costs:
        return
    plan = _arena_plan(model.graph, _estimate_timings(model, device))
    check_fit(model, device, plan.peak_bytes, constant_bytes(model.graph))
    model._costs[key] = True


def device_costs(
    model: Model, device: Device, data: Mapping[int, OpData] | None = None
) -> DeviceCosts:
    """Per-layer timings and costs of ``model`` on ``device``, cached per device (and per
    observed data, ``data`` from mcusim.observed.observe, for data-dependent kernels)."""
    used = _data_used(device, model.graph, data)
    key = ("data", device, used) if used else device  # the loader shares one Device per file
    cached = model._costs.get(key)
    if cached is not None:
        return cached
    g = model.graph
    if device.cluster is not None:
        dc = _cluster_costs(model, device)
        model._costs[key] = dc
        return dc
    timings = _estimate_timings(model, device)
    if used:  # only the data-dependent layers are timed again
        facts = dict(used)
        timings = tuple(
            time_op(device, g, op, facts[i]) if i in facts else timings[i]
            for i, op in enumerate(g.ops)
        )
    plan = _arena_plan(g, timings)
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
    _remember(model, key, dc)
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


def compute_outputs(
    model: Model, inputs: list[np.ndarray], prepared: list | None = None
) -> dict[str, np.ndarray]:
    """Run every op's compute kernel (``prepared``: the per-placement kernels, default the
    reference ones); returns every activation tensor by name."""
    env: dict[str, np.ndarray] = dict(zip(model.graph.inputs, inputs, strict=True))
    for p in prepared if prepared is not None else model.prepared():
        outs = p.compute(p.params, [env[n] for n in p.inputs])
        for n, o in zip(p.outputs, outs, strict=True):
            env[n] = o
    return env


# ---------------------------------------------------------------------------------------
# Heterogeneous placement (docs/placement.md)


@dataclass(frozen=True)
class HeteroCosts:
    """Costs of one (model, device, placement): CPU layers timed by the core (or its
    cluster), NPU layers by the tile, transfers at engine changes."""

    device: Device
    placement: Placement
    tile: NpuTile
    cpu: dict[int, tuple[OpTiming, LayerCost, object]]  # op -> (timing, cost, cluster layer)
    npu: dict[int, NpuLayerCost]
    transfers: tuple[Transfer, ...]
    transfer_cycles: tuple[int, ...]  # CPU cycles of each transfer (tile.transfer_cycles)
    plan: ArenaPlan  # CPU arena
    flash_bytes: int
    npu_plan: object
    one_time: dict
    shared_memory: bool


@lru_cache(maxsize=64)
def _tile(device: Device) -> NpuTile | None:
    from mcusim.devices.npu import npu_tile

    return npu_tile(device)


def shares_cpu_memory(tile: NpuTile) -> bool:
    """True when the tile computes in CPU memory (no copy at engine changes): the tile says
    so with ``shared_memory``; otherwise a tile whose transfers cost nothing is taken so."""
    flag = getattr(tile, "shared_memory", None)
    if flag is not None:
        return bool(flag)
    return tile.transfer_cycles(1024) == 0


def hetero_costs(
    model: Model,
    device: Device,
    tile: NpuTile,
    pl: Placement,
    data: Mapping[int, OpData] | None = None,
) -> HeteroCosts:
    """``data``: as for :func:`device_costs` (used by CPU layers only)."""
    cpu_side = {i: d for i, d in (data or {}).items() if pl.side(i) == "cpu"}
    used = _data_used(device, model.graph, cpu_side)
    key = ("data", device, pl.engines, used) if used else (device, pl.engines)
    facts = dict(used)
    cached = model._costs.get(key)
    if cached is not None:
        return cached
    from mcusim.isa.schedule import Program

    from .placement import cpu_view, find_transfers

    g = model.graph
    cpu_ops = [i for i in range(len(g.ops)) if pl.side(i) == "cpu"]
    npu_ops = [g.ops[i] for i in pl.npu_ops]
    npu_plan = tile.plan(g, npu_ops)  # FitError names resource / need / have
    shared = shares_cpu_memory(tile)
    cluster_layers: dict[int, object] = {}
    timings: dict[int, OpTiming] = {}
    if device.cluster is not None:
        from .cluster import cluster_layer

        for i in cpu_ops:
            cl = cluster_layer(device, g, g.ops[i])
            cluster_layers[i] = cl
            timings[i] = OpTiming(
                cl.kernel, cl.compute_cycles, cl.instructions, cl.code_bytes, 0, {}
            )
    elif used:  # only the data-dependent CPU layers are timed again
        base = hetero_costs(model, device, tile, pl).cpu
        for i in cpu_ops:
            timings[i] = time_op(device, g, g.ops[i], facts[i]) if i in facts else base[i][0]
    else:
        for i in cpu_ops:
            timings[i] = time_op(device, g, g.ops[i])
    view = cpu_view(g, pl, shared)
    plan = plan_arena(
        view, {i: tm.scratch_bytes for i, tm in timings.items()}, qparam_buffers(view, set(cpu_ops))
    )
    flash = constant_bytes(g)
    check_fit(model, device, plan.peak_bytes, flash)
    cpu: dict[int, tuple[OpTiming, LayerCost, object]] = {}
    if device.cluster is not None:
        from .costs import cluster_layer_cost

        for i in cpu_ops:
            cpu[i] = (timings[i], cluster_layer_cost(device, cluster_layers[i]), cluster_layers[i])
    else:
        from .cache import needs_simulation, simulate_model

        sim = None
        if needs_simulation(device) and cpu_ops:
            # the CPU's caches see the CPU layers' address streams in order; NPU layers
            # run no CPU code (an empty program)
            programs = [
                timings[i].program if i in timings else Program([]) for i in range(len(g.ops))
            ]
            sim = simulate_model(g, programs, plan, device)
        for i in cpu_ops:
            tm = timings[i]
            c = layer_cost(
                device,
                tm.compute_cycles,
                tm.instructions,
                tm.code_bytes,
                tm.streams,
                {},
                cache=sim.layer(i) if sim is not None else None,
            )
            cpu[i] = (tm, c, None)
    npu = {i: tile.layer_cost(g, g.ops[i], npu_plan) for i in pl.npu_ops}
    # a tile computing in CPU memory reads and writes the arena itself: nothing is copied
    transfers = () if shared else tuple(find_transfers(g, pl))
    tcycles = tuple(int(tile.transfer_cycles(t.nbytes)) for t in transfers)
    one_time = tile.one_time_costs(g, npu_ops, npu_plan) or {}
    hc = HeteroCosts(
        device, pl, tile, cpu, npu, transfers, tcycles, plan, flash, npu_plan, one_time, shared
    )
    _remember(model, key, hc)
    return hc


def _with_precision(
    model: Model, precision: Mapping[str, str], calibration
) -> tuple[Model, list[dict]]:
    """The model with the requested layers re-quantized (mcusim.quantize.requantize; seeded
    random calibration inputs unless ``calibration`` is given), cached per request."""
    from .quantize import requantize

    key = ("precision", tuple(sorted(precision.items())))
    if calibration is None and key in model._costs:
        return model._costs[key]
    res = requantize(model, dict(precision), calibration)
    out = (Model(res.graph, path=model.path), res.records)
    if calibration is None:
        model._costs[key] = out
    return out


def _tile_fn(tile: NpuTile, name: str):
    """A function the tile's module (or the tile) provides beyond the base interface."""
    fn = getattr(tile, name, None)
    if fn is None:
        fn = getattr(importlib.import_module(type(tile).__module__), name, None)
    return fn


def _tile_requant(model: Model, tile: NpuTile, pl: Placement):
    """A TFLite INT8 model whose NPU layers move to the tile's own arithmetic (MAX78000:
    ``requantize_for_max78000(graph, op) -> (rewrite, report)`` + ``apply_requant``): the
    rewritten model and the per-layer rewrite reports, or None when nothing changes.

    Re-quantized: conv2d / fully_connected layers on the tile with TFLite fixed-point
    requantization and 8-bit weights (layers already in the tile's arithmetic, e.g. an
    imported ai8x network, are left alone)."""
    fn = _tile_fn(tile, "requantize_for_max78000")
    apply = _tile_fn(tile, "apply_requant")
    if fn is None or apply is None or not pl.npu_ops:
        return None
    key = ("tile-requant", tile.kind, pl.engines)
    if key in model._costs:
        return model._costs[key]
    from .quantize import copy_graph

    g = model.graph
    todo = [
        i
        for i in pl.npu_ops
        if g.ops[i].kind in ("conv2d", "fully_connected")
        and getattr(g.ops[i].attrs, "requant", "fixed_point") == "fixed_point"
        and g.tensors[g.ops[i].inputs[1]].dtype.bits == 8
        and not g.tensors[g.ops[i].inputs[1]].dtype.is_float
    ]
    out = None
    if todo:
        g2 = copy_graph(g)
        reports = {}
        for i in todo:
            rq, rep = fn(g2, g2.ops[i])
            apply(g2, g2.ops[i], rq)
            reports[i] = rep
        used = {n for op in g2.ops for n in op.inputs if n}
        for n in [n for n, t in g2.tensors.items() if t.is_const and n not in used]:
            del g2.tensors[n]  # the replaced INT8 weights and biases
        g2.validate()
        out = (Model(g2, path=model.path), reports)
    model._costs[key] = out
    return out


def _requant_report(
    tile: NpuTile, src: Model, new: Model, reports: dict[int, dict], ref_env, new_env, prepared
) -> tuple[list[dict], list[dict]]:
    """Per re-quantized layer: the tile's rewrite report, the deviation of the layer alone
    (the original INT8 input through both arithmetics: ``*_layer``) and as run (errors of
    earlier layers included: ``*_in_run``); and per model output its deviation."""
    dev = _tile_fn(tile, "deviation_report")
    if dev is None:
        return [], []
    g0, g = src.graph, new.graph
    rows = []
    for i, rep in reports.items():
        op = g.ops[i]
        y = op.outputs[0]
        zp = int(g.tensors[y].quant.zero_point[0]) if g.tensors[y].quant is not None else 0
        p = prepared[i]
        alone = p.compute(p.params, [ref_env[n] for n in p.inputs])[0]
        a = dev(ref_env[y], alone, zp)
        b = dev(ref_env[y], new_env[y], zp)
        row = {"index": i, **rep}
        row.update({f"{k}_layer": v for k, v in a.items()})
        row.update({f"{k}_in_run": v for k, v in b.items()})
        rows.append(row)
    outs = []
    for n in g0.outputs:
        t = g0.tensors[n]
        zp = int(t.quant.zero_point[0]) if t.quant is not None else 0
        outs.append({"output": n, **dev(ref_env[n], new_env[n], zp)})
    return rows, outs


def _cpu_record(
    i: int,
    g: Graph,
    op: Op,
    tm: OpTiming,
    c: LayerCost,
    cl,
    engine: str,
    clock_hz: float,
    **extra,
) -> LayerRecord:
    if cl is not None:
        extra.update(
            cores=cl.cores_used,
            bank_conflict_cycles=cl.bank_conflict_cycles,
            barrier_cycles=cl.barrier_cycles,
            dma_stall_cycles=cl.dma_stall_cycles,
            tiles=cl.tiles.tiles,
        )
    return LayerRecord(
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
        latency_s=c.cycles / clock_hz,
        energy_j=c.energy_j,
        core_energy_j=c.core_energy_j,
        memory_energy_j=c.memory_energy_j,
        traffic={m: dict(rw) for m, rw in c.traffic.items()},
        output_shape=tuple(g.tensors[op.outputs[0]].shape),
        cache={lv: dict(st) for lv, st in c.cache.items()},
        clock_hz=clock_hz,
        **extra,
    )


def _add_transfers(rec: LayerRecord, items: list[tuple[Transfer, int]], dev: Device, hc) -> None:
    """Charge the copies of this layer's data to its record: bytes, CPU cycles (latency),
    the CPU's active energy for them and the CPU-side memory traffic of a real copy."""
    if not items:
        return
    arena = dev.memory_for("arena")
    clk = dev.core.clock_hz
    p_active = dev.power.active_power_w(clk)
    for t, cyc in items:
        rec.transfer_bytes += t.nbytes
        rec.transfer_cycles += cyc
        rec.latency_s += cyc / clk
        core_j = p_active * cyc / clk
        mem_j = 0.0
        if cyc > 0 and not hc.shared_memory:
            rw = rec.traffic.setdefault(arena.name, {"read": 0, "write": 0})
            if t.dst == "npu":
                rw["read"] = rw.get("read", 0) + t.nbytes
                mem_j = t.nbytes * arena.read_pj_per_byte * 1e-12
            else:
                rw["write"] = rw.get("write", 0) + t.nbytes
                mem_j = t.nbytes * arena.write_pj_per_byte * 1e-12
        rec.core_energy_j += core_j
        rec.memory_energy_j += mem_j
        rec.energy_j += core_j + mem_j
        rec.notes.append(f"{t.src}->{t.dst} {t.tensor}: {t.nbytes} B, {cyc} cycles")


def _run_hetero(
    model, dev, tile, pl, xs, keep_tensors, requant=None, estimate: bool = False
) -> RunResult:
    """``requant``: (source model, per-layer rewrite reports) when ``model`` is the source
    with its NPU layers moved to the tile's arithmetic. ``estimate``: no kernel runs: no
    outputs, data-dependent CPU layers take their schedules' expectation
    (mcusim.observed), and no re-quantization deviation report."""
    g = model.graph
    hc = hetero_costs(model, dev, tile, pl)
    env: dict[str, np.ndarray] = {}
    prepared = None
    if not estimate:
        kernels = {}
        for i in pl.npu_ops:
            k = tile.compute_kernel(g, g.ops[i])
            if k is not None:
                kernels[i] = k
        prepared = model.prepared_for((dev, pl.engines), kernels)
        env = compute_outputs(model, xs, prepared)
        hc = hetero_costs(model, dev, tile, pl, observe(g, env, [p.params for p in prepared]))
    clk = dev.core.clock_hz
    npu_clk = float(tile.clock_hz)
    by_layer: dict[int, list[tuple[Transfer, int]]] = {}
    for t, cyc in zip(hc.transfers, hc.transfer_cycles, strict=True):
        by_layer.setdefault(t.layer, []).append((t, cyc))
    layers = []
    for i, op in enumerate(g.ops):
        if i in hc.cpu:
            tm, c, cl = hc.cpu[i]
            rec = _cpu_record(
                i, g, op, tm, c, cl, pl.engines[i], clk, placement_reason=pl.reasons[i]
            )
        else:
            nc = hc.npu[i]
            # the tile's energy covers the layer, the CPU waiting included (the tile
            # model decides how: MAX78000 adds its cpu_wait_power_w x time)
            lat = nc.cycles / npu_clk
            rec = LayerRecord(
                index=i,
                name=op.name,
                op=op.kind,
                engine=pl.engines[i],
                precision=_precision(g, op),
                kernel=tile.kind + (" (estimate)" if nc.estimate else ""),
                macs=op_macs(g, op),
                instructions=0,
                compute_cycles=int(nc.compute_cycles),
                stall_cycles=max(int(nc.cycles) - int(nc.compute_cycles), 0),
                cycles=int(nc.cycles),
                latency_s=lat,
                energy_j=nc.energy_j,
                core_energy_j=0.0,
                memory_energy_j=0.0,
                traffic={m: dict(rw) for m, rw in nc.traffic.items()},
                output_shape=tuple(g.tensors[op.outputs[0]].shape),
                clock_hz=npu_clk,
                npu_energy_j=nc.energy_j,
                estimate=bool(nc.estimate),
                notes=list(nc.notes),
            )
        _add_transfers(rec, by_layer.get(i, []), dev, hc)
        layers.append(rec)
    notes = list(dev.notes)
    result = RunResult(
        model=g.name,
        device=dev.name,
        clock_hz=clk,
        layers=layers,
        outputs=[] if estimate else [env[n] for n in g.outputs],
        peak_ram_bytes=hc.plan.peak_bytes,
        flash_bytes=hc.flash_bytes,
        notes=notes,
        tensors=env if keep_tensors else None,
        npu={
            "kind": tile.kind,
            "engine": pl.npu_engine,
            "clock_hz": npu_clk,
            "layers": len(pl.npu_ops),
            "shared_memory": hc.shared_memory,
            "one_time": hc.one_time,
            "plan": _plan_summary(hc.npu_plan),
        },
    )
    if estimate:
        result.notes.append(ESTIMATE_NOTE)
        if requant is not None:
            result.notes.append(
                f"estimate mode: the {tile.kind} re-quantization deviation report "
                "(requant_report) needs outputs and was skipped; run with mode='full' for it"
            )
    elif requant is not None:
        src, reports = requant
        ref_env = compute_outputs(src, xs)
        rows, outs = _requant_report(tile, src, model, reports, ref_env, env, prepared)
        result.requant_report = rows
        result.npu["requant_outputs"] = outs
    return result


MODES = ("full", "estimate")
ESTIMATE_NOTE = "estimate mode: outputs were not computed (result.outputs is empty)"


def _plan_summary(plan) -> object:
    fn = getattr(plan, "summary", None)
    if callable(fn):
        return fn()
    return plan


def run(
    model: Model | str | Path,
    device: str | Path | Device = "stm32l4r5",
    inputs: np.ndarray | Sequence[np.ndarray] | Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
    keep_tensors: bool = False,
    placement: Mapping[str, str] | None = None,
    *,
    place: Mapping[str, str] | None = None,
    force: str | None = None,
    precision: Mapping[str, str] | None = None,
    calibration: np.ndarray | Sequence[np.ndarray] | None = None,
    mode: str = "full",
) -> RunResult:
    """Simulate one inference of ``model`` on ``device``.

    ``inputs`` default to seeded random values over each input's range. With
    ``keep_tensors`` the result also carries every intermediate tensor (``result.tensors``).
    ``placement`` moves roles to other memories of the device for this run, e.g.
    ``{"arena": "axi_sram", "constants": "flash"}`` (roles: constants, arena, code).

    On a device with an NPU tile each layer runs on the tile when it supports it, else on
    the CPU (docs/placement.md). ``place`` maps layer selectors (op name, index or glob)
    to "cpu" / "npu"; ``force`` = "cpu" | "npu" moves every other layer; ``precision``
    maps layer selectors to precisions (e.g. ``{"conv_*": "W4A8"}``): those layers are
    re-quantized first (mcusim.quantize.requantize, on ``calibration`` inputs or seeded
    random ones), so the tile's support check sees the new precision.

    ``mode="estimate"`` computes cycles, traffic and energy without running any kernel:
    every layer record, total and the peak RAM / flash equal the full run's exactly except
    where a kernel's timing depends on the values (mcusim.observed: softmax on Arm cores, FC
    on Armv7E-M, timed on this run's data in full mode, on the schedule's expectation in
    estimate mode); ``outputs`` is empty and the MAX78000 re-quantization report (it compares
    outputs) is skipped (both said in ``result.notes``). Given ``inputs`` are still
    checked.
    """
    from .placement import PlacementError
    from .placement import place as place_layers

    if mode not in MODES:
        raise UserError(f"mode={mode!r}: expected one of {', '.join(MODES)}")
    estimate = mode == "estimate"
    if estimate and keep_tensors:
        raise UserError("keep_tensors needs mode='full': estimate mode computes no tensors")
    if not isinstance(model, Model):
        model = load(model)
    dev = device if isinstance(device, Device) else load_device(device)
    if placement:
        dev = _placed(dev, tuple(sorted(placement.items())))
    if force is not None and force not in ("cpu", "npu"):
        raise PlacementError(f"force={force!r}: expected 'cpu', 'npu' or None")
    precision_report = None
    if precision:
        model, precision_report = _with_precision(model, precision, calibration)
    g = model.graph
    tile = _tile(dev)
    pl = None
    if tile is not None or place or force is not None or any(op.placement for op in g.ops):
        pl = place_layers(g, dev.core.name, tile, place, force)
    if inputs is not None:
        xs = check_inputs(g, inputs)
    else:
        xs = None if estimate else random_inputs(g, seed)
    if pl is not None and not pl.all_cpu:
        rq = _tile_requant(model, tile, pl)  # the rewrite changes costs: kept in estimate
        if rq is not None:
            result = _run_hetero(
                rq[0], dev, tile, pl, xs, keep_tensors, (model, rq[1]), estimate=estimate
            )
        else:
            result = _run_hetero(model, dev, tile, pl, xs, keep_tensors, estimate=estimate)
        result.precision_report = precision_report
        return result
    result = _run_cpu(model, dev, xs, keep_tensors, pl, estimate)
    result.precision_report = precision_report
    return result


def _run_cpu(
    model: Model,
    dev: Device,
    xs,
    keep_tensors: bool,
    pl: Placement | None,
    estimate: bool = False,
) -> RunResult:
    """Every layer on the device's CPU (or its cluster): the pre-NPU run, unchanged."""
    g = model.graph
    if estimate or dev.cluster is not None:
        dc = device_costs(model, dev)  # checks the fit before any kernel runs
    else:  # the fit before any kernel runs; the costs once, on the observed data
        check_device_fit(model, dev)
    env = {} if estimate else compute_outputs(model, xs)
    if not estimate:
        dc = device_costs(model, dev, observe(g, env, [p.params for p in model.prepared()]))
    engine = f"cpu:{dev.core.name}"
    layers = []
    for i, (op, tm, c) in enumerate(zip(g.ops, dc.timings, dc.costs, strict=True)):
        cl = dc.cluster[i] if dc.cluster is not None else None
        reason = pl.reasons[i] if pl is not None else ""
        layers.append(
            _cpu_record(i, g, op, tm, c, cl, engine, dev.core.clock_hz, placement_reason=reason)
        )
    return RunResult(
        model=g.name,
        device=dev.name,
        clock_hz=dev.core.clock_hz,
        layers=layers,
        outputs=[] if estimate else [env[n] for n in g.outputs],
        peak_ram_bytes=dc.plan.peak_bytes,
        flash_bytes=dc.flash_bytes,
        notes=list(dev.notes) + ([ESTIMATE_NOTE] if estimate else []),
        tensors=env if keep_tensors else None,
    )
