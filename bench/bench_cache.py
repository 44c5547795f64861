"""Speed of the cache simulation (mcusim/cache.py).

1. Raw simulator throughput: a 4-way LRU 16 KB cache fed a plain trace (streaming runs
   mixed with scattered accesses), in accesses per second.
2. Whole-model simulation (warm JIT): every layer's address stream compiled and run
   through a device's caches, for the shared MLPerf Tiny models, on a Cortex-M7 with L1
   caches (stm32f746, or the L4R5 file with a 16+16 KB L1 added if it is absent) and on the
   STM32L4R5 (ART accelerator), with the number of core accesses simulated per second.
3. First ``mcusim.run`` of VWW in a fresh process (numba cache warm, cold Python): the
   cached device against the Cortex-M4 device.

Run:  python bench/bench_cache.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

import mcusim
from mcusim.cache import CacheConfig, CacheState, simulate_model, simulate_trace
from mcusim.devices.loader import bundled_devices, load_device
from mcusim.devices.model import Cache, Device
from mcusim.memory_plan import plan_arena

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
NAMES = ["kws_ref_model", "vww_96_int8", "pretrainedResnet_quant", "ad01_int8"]


def cached_device() -> Device:
    """A Cortex-M7 device with L1 caches: the bundled stm32f746, or an L4R5-based one."""
    if "stm32f746" in bundled_devices():
        return load_device("stm32f746")
    d = load_device("stm32l4r5")
    core = replace(
        d.core,
        name="cortex-m7",
        icache=Cache(16384, 2, 32),
        dcache=Cache(16384, 4, 32),
    )
    mems = tuple(replace(m, cached=True, accelerator=None) for m in d.memories)
    return replace(d, name="l4r5+l1", core=core, memories=mems)


def raw_throughput(n: int = 10_000_000) -> float:
    rng = np.random.default_rng(0)
    seq = (np.arange(n, dtype=np.int64) * 4) % (256 << 10)
    scat = rng.integers(0, 1 << 20, n, dtype=np.int64) & ~3
    addrs = np.where(rng.random(n) < 0.8, seq, scat)
    nb = np.full(n, 4, np.int64)
    wr = (rng.random(n) < 0.2).astype(np.int64)
    best = float("inf")
    for _ in range(3):
        st = CacheState([CacheConfig(16384, 4, 32)])
        t0 = time.perf_counter()
        simulate_trace(addrs, nb, wr, st.cfg, st.tags, st.stamp, st.dirty, st.rr, st.st)
        best = min(best, time.perf_counter() - t0)
    return n / best


def model_sim(name: str, device: Device) -> tuple[float, int]:
    """Warm wall time of simulate_model and the core accesses it simulated."""
    from mcusim.kernels.schedules import schedule_for

    m = mcusim.load(MODELS / f"{name}.tflite")
    g = m.graph
    progs = [schedule_for(device.core.isa, g, op) for op in g.ops]
    plan = plan_arena(g, {i: p.scratch_bytes for i, p in enumerate(progs)})
    simulate_model(g, progs, plan, device)  # JIT / cache load
    ts = []
    for _ in range(3):
        t0 = time.perf_counter()
        res = simulate_model(g, progs, plan, device)
        ts.append(time.perf_counter() - t0)
    # core-side accesses: those of the first level each access reaches
    first = [k for k in res.caches if k in ("dcache", "icache")] or list(res.caches)
    n = int(sum(res.caches[k][:, :2].sum() for k in first))
    return statistics.median(ts), n


FIRST_RUN = """
import time, sys
t0 = time.perf_counter()
import mcusim
from mcusim.devices.loader import load_device
m = mcusim.load(sys.argv[1])
t1 = time.perf_counter()
mcusim.run(m, device=sys.argv[2])
print(time.perf_counter() - t1, t1 - t0)
"""


def first_run(model: Path, device: str) -> tuple[float, float]:
    out = subprocess.run(
        [sys.executable, "-c", FIRST_RUN, str(model), device],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return float(out[0]), float(out[1])


def main() -> None:
    if not MODELS.is_dir():
        sys.exit(f"{MODELS} is absent: the shared models are needed for this benchmark")
    print(f"raw simulator: {raw_throughput() / 1e6:.1f} M accesses/s (16 KB 4-way LRU, 10 M)")
    dev = cached_device()
    l4 = load_device("stm32l4r5")
    print(f"\nwhole-model simulation, warm ({dev.name}: L1 D+I; stm32l4r5: ART D+I)")
    print(f"{'model':26s} {'device':10s} {'ms':>8s} {'accesses':>12s} {'M acc/s':>8s}")
    for name in NAMES:
        for d in (dev, l4):
            t, n = model_sim(name, d)
            print(f"{name:26s} {d.name:10s} {t * 1e3:8.1f} {n:12,d} {n / t / 1e6:8.1f}")
    vww = MODELS / "vww_96_int8.tflite"
    cached_name = dev.name if dev.name in bundled_devices() else None
    if cached_name is None:
        print("\n(no bundled cached device: first-run comparison skipped)")
        return
    first_run(vww, "stm32l4r5")  # warm the numba cache on disk
    runs = {d: [first_run(vww, d)[0] for _ in range(3)] for d in ("stm32l4r5", cached_name)}
    m4 = statistics.median(runs["stm32l4r5"])
    m7 = statistics.median(runs[cached_name])
    print("\nfirst mcusim.run of vww_96_int8 in a fresh process (median of 3):")
    print(f"  stm32l4r5 (Cortex-M4, ART simulated): {m4:.3f} s")
    print(f"  {cached_name} (Cortex-M7, L1 D+I simulated): {m7:.3f} s  ({m7 / m4:.2f}x)")


if __name__ == "__main__":
    main()
