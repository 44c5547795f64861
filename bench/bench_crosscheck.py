"""Speed of the simulator's evaluation of one layer against the firmware run of that layer.

For each layer of the shared models (default kws_ref_model and vww_96_int8) on each device
(default stm32l4r5, stm32f746), in one process, the median wall time of N repetitions of:

(a) simulator -- everything mcusim does to evaluate that layer from the graph, computed
    afresh (the per-(model, device) cache of mcusim.runner.device_costs is NOT used):
      1. kernel: ``KernelDef.prepare(graph, op)`` (multipliers, weight reordering) and
         ``compute(params, inputs)`` on the layer's real inputs (numba, JIT warm);
      2. schedule + core timing: ``mcusim.observed.observe_op`` (the data facts of a
         data-dependent kernel: softmax, FC) and ``mcusim.runner.time_op`` = ``schedule_for``
         (the instruction schedule of the library kernel) + ``core_timing(core).time``;
      3. memory: when the device has caches or a flash accelerator,
         ``mcusim.cache.simulate_layer``: this layer's address stream alone, caches cold
         (equal to ``simulate_model`` with every other layer an empty Program, as
         hetero_costs does for NPU layers, without touching the other layers; the model's
         buffer layout is cached per (graph, plan, device)); then
         ``mcusim.costs.layer_cost`` (stalls, traffic, energy).
    Not timed: loading the model, the arena plan of the whole model (a model-level result,
    taken from device_costs) and computing the layer's inputs.
(b) firmware -- ``mcusim.firmware.layer.run_firmware`` of the layer's C twin in the Unicorn
    harness with a ``Tracer`` (the trace-driven cycle count of mcusim crosscheck): buffers
    placed in the harness, the emulated call with the block hook (on devices with caches
    also the read/write hooks recording the data addresses, fed with the TB fetches
    through the same cache model; otherwise the flash read hook on wait-stated memories),
    the trace costed (``Tracer.result``) and the output read.
    Not timed: building the twins (zig, content-hash cached), creating the harness and
    ``marshal`` (packing the prepared params into the twin's buffers), so the firmware side
    is, if anything, under-counted and the ratio conservative.

Both sides get one untimed warm-up run per layer first: numba kernels are compiled/loaded,
the core models' per-block cycle caches (isa/cortex_m*.py ``_cache``, keyed by Block
object) and the Tracer's per-TB decode cache are warm, as in any run after the first.
Each run is also checked: firmware output bit-exact with the simulator's, and the fresh
compute cycles equal to device_costs' (the cached whole-model result).

Ratio = firmware time / simulator time, per layer and in total (sum of medians). Columns:
kernel / sched+t / memory = medians of steps 1 / 2 / 3 of (a) in ms; no-mem = firmware time
/ (steps 1 + 2), i.e. the ratio if memory were costed without the cache simulation.

Run:  python bench/bench_crosscheck.py [-n 5] [--max-layers K] [--layers 0-3]
          [--models kws_ref_model,vww_96_int8] [--devices stm32l4r5,stm32f746] [--json F]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import mcusim
from mcusim.cache import needs_simulation, simulate_layer
from mcusim.costs import layer_cost
from mcusim.devices.loader import load_device
from mcusim.inputs import random_inputs
from mcusim.isa.schedule import Program
from mcusim.observed import observe, observe_op
from mcusim.runner import compute_outputs, device_costs, time_op

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
TARGET_RATIO = 50.0
STAGES = ("sim_kernel_s", "sim_schedule_timing_s", "sim_memory_s")


def kernel_def(graph, op):
    """The KernelDef the simulator uses for ``op`` (as mcusim.model.Model.prepared)."""
    import mcusim.kernels  # noqa: F401  (registers every kernel)
    from mcusim.kernels.max78000 import ai8x_kernel
    from mcusim.kernels.registry import kernel_for

    return ai8x_kernel(graph, op) or kernel_for(op.kind, layer=op.label)


def sim_layer(dev, graph, i: int, plan, inputs, kdef, empty: Program):
    """(a): the simulator's evaluation of layer ``i`` from scratch -> (outputs, timing, cost,
    seconds per stage: kernel, schedule + core timing, memory)."""
    op = graph.ops[i]
    t0 = time.perf_counter()
    params = kdef.prepare(graph, op)
    outs = kdef.compute(params, inputs)
    t1 = time.perf_counter()
    tm = time_op(dev, graph, op, observe_op(graph, op, inputs[0], params) if inputs else None)
    t2 = time.perf_counter()
    cache = None
    if needs_simulation(dev):
        cache = simulate_layer(graph, tm.program, plan, dev, i)
    cost = layer_cost(
        dev, tm.compute_cycles, tm.instructions, tm.code_bytes, tm.streams, {}, cache=cache
    )
    t3 = time.perf_counter()
    return outs, tm, cost, (t1 - t0, t2 - t1, t3 - t2)


def median_s(fn, n: int) -> tuple[float, object, list]:
    """Median wall time of ``n`` calls (after one untimed warm-up), the last result and
    every result (for per-stage medians)."""
    fn()
    ts, results = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        res = fn()
        ts.append(time.perf_counter() - t0)
        results.append(res)
    return statistics.median(ts), results[-1], results


def parse_layers(spec: str | None, n: int) -> list[int]:
    if spec is None:
        return list(range(n))
    out: set[int] = set()
    for part in spec.split(","):
        lo, sep, hi = part.strip().partition("-")
        out.update(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    return sorted(i for i in out if 0 <= i < n)


def bench_model(name: str, device: str, args) -> dict:
    from mcusim.firmware import Tracer, harness_for
    from mcusim.firmware.layer import build_twins, marshal, run_firmware, supports

    m = mcusim.load(MODELS / f"{name}.tflite")
    g = m.graph
    dev = load_device(device)
    env = compute_outputs(m, random_inputs(g, args.seed))
    # for the arena plan and the consistency check
    dc = device_costs(m, dev, observe(g, env, [p.params for p in m.prepared()]))
    prepared = m.prepared()
    h = harness_for(build_twins(dev.core.name, args.cc).elf, dev.core.name)
    tracer = Tracer(device=dev)
    empty = Program([])
    sel = parse_layers(args.layers, len(g.ops))
    if args.max_layers is not None:
        sel = sel[: args.max_layers]
    rows = []
    print(f"\n{name} on {dev.name} ({dev.core.name}), median of {args.n}")
    print(
        f"{'#':>3s} {'op':17s} {'fw instr':>10s} {'kernel':>7s} {'sched+t':>7s} "
        f"{'memory':>7s} {'sim ms':>8s} {'fw ms':>8s} {'ratio':>6s} {'no-mem':>6s}  check"
    )
    for i in sel:
        op = g.ops[i]
        why = supports(g, op)
        if why is not None:
            print(f"{i:3d} {op.kind:18s} skipped: {why}")
            continue
        p = prepared[i]
        xs = [env[n] for n in p.inputs]
        kdef = kernel_def(g, op)
        t_sim, (outs, tm, cost, _), all_sim = median_s(
            lambda i=i, xs=xs, kdef=kdef: sim_layer(dev, g, i, dc.plan, xs, kdef, empty), args.n
        )
        stages = [statistics.median(r[3][k] for r in all_sim) for k in range(3)]
        call = marshal(g, op, p.params, xs)  # untimed (see the module docstring)
        t_fw, run, _ = median_s(lambda call=call: run_firmware(call, h, tracer=tracer), args.n)
        ok = []
        if run.value != 0:
            ok.append(f"twin returned {run.value}")
        if not np.array_equal(run.output.reshape(-1), np.asarray(outs[0]).reshape(-1)):
            ok.append("outputs differ")
        if tm.compute_cycles != dc.timings[i].compute_cycles:
            ok.append("compute cycles differ from device_costs")
        tr = run.result.trace
        ratio = t_fw / t_sim
        no_mem = t_fw / (stages[0] + stages[1])
        check = "ok" if not ok else "; ".join(ok)
        k_ms, s_ms, m_ms = (x * 1e3 for x in stages)
        print(
            f"{i:3d} {op.kind:17s} {tr.instructions:10,d} {k_ms:7.3f} {s_ms:7.3f} "
            f"{m_ms:7.3f} {t_sim * 1e3:8.3f} {t_fw * 1e3:8.2f} {ratio:6.1f} {no_mem:6.0f}  {check}"
        )
        rows.append(
            dict(
                index=i,
                op=op.kind,
                fw_instructions=int(tr.instructions),
                fw_cycles=int(tr.cycles),
                sim_cycles=int(cost.cycles),
                sim_s=t_sim,
                sim_kernel_s=stages[0],
                sim_schedule_timing_s=stages[1],
                sim_memory_s=stages[2],
                fw_s=t_fw,
                ratio=ratio,
                check=check,
            )
        )
    sim_tot = sum(r["sim_s"] for r in rows)
    fw_tot = sum(r["fw_s"] for r in rows)
    stage_tot = [sum(r[k] for r in rows) for k in STAGES]
    ratio_tot = fw_tot / sim_tot if sim_tot else float("nan")
    no_mem_tot = fw_tot / (stage_tot[0] + stage_tot[1]) if rows else float("nan")
    mn = min(rows, key=lambda r: r["ratio"]) if rows else None
    k_ms, s_ms, m_ms = (x * 1e3 for x in stage_tot)
    print(
        f"{'':3s} {'total':17s} {'':10s} {k_ms:7.2f} {s_ms:7.2f} {m_ms:7.2f} "
        f"{sim_tot * 1e3:8.2f} {fw_tot * 1e3:8.1f} {ratio_tot:6.1f} {no_mem_tot:6.0f}"
    )
    if mn is not None:
        below = [r["index"] for r in rows if r["ratio"] < TARGET_RATIO]
        print(
            f"    min layer ratio {mn['ratio']:.1f} (layer {mn['index']}, {mn['op']}); "
            f"layers below {TARGET_RATIO:.0f}x: {below or 'none'}"
        )
    return dict(
        model=name,
        device=dev.name,
        core=dev.core.name,
        n=args.n,
        layers=rows,
        sim_total_s=sim_tot,
        sim_stage_totals_s=dict(zip(STAGES, stage_tot, strict=True)),
        ratio_total_without_memory=no_mem_tot,
        fw_total_s=fw_tot,
        ratio_total=ratio_tot,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=5, help="timed repetitions per layer (median)")
    ap.add_argument("--models", default="kws_ref_model,vww_96_int8")
    ap.add_argument("--devices", default="stm32l4r5,stm32f746")
    ap.add_argument("--layers", help="layer indices per model, e.g. 0,3 or 2-5 (default all)")
    ap.add_argument("--max-layers", type=int, help="at most this many layers per model")
    ap.add_argument("--cc", choices=("zig", "gcc"), default="zig", help="twin compiler")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random model inputs")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    args = ap.parse_args()
    if not MODELS.is_dir():
        sys.exit(f"{MODELS} is absent: the shared models are needed for this benchmark")
    t0 = time.perf_counter()
    results = [
        bench_model(name, device, args)
        for device in args.devices.split(",")
        for name in args.models.split(",")
    ]
    print("\nsummary: ratio = firmware time / simulator time (no-mem: simulator without step 3)")
    print(
        f"{'model':16s} {'device':10s} {'sim ms':>8s} {'fw ms':>8s} {'total':>6s} "
        f"{'min':>6s} {'max':>6s} {'no-mem':>6s} {'>=50x':>6s}"
    )
    for r in results:
        rs = [x["ratio"] for x in r["layers"]] or [float("nan")]
        n_ok = sum(x >= TARGET_RATIO for x in rs)
        print(
            f"{r['model']:16s} {r['device']:10s} {r['sim_total_s'] * 1e3:8.2f} "
            f"{r['fw_total_s'] * 1e3:8.1f} {r['ratio_total']:6.1f} {min(rs):6.1f} "
            f"{max(rs):6.1f} {r['ratio_total_without_memory']:6.0f} {n_ok:>3d}/{len(r['layers'])}"
        )
    print(f"(benchmark wall time {time.perf_counter() - t0:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
