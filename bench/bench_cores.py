"""Simulation speed per core: first run (schedules + timing + caches) and warm run on VWW.

Each bundled device is loaded fresh; "first" is the first mcusim.run of the model on that
device (per-device costs are computed then and reused), "warm" the median of later runs.
Every device's code paths are loaded beforehand on a tiny model (one-time JIT loading).
Run:  python bench/bench_cores.py [N]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import mcusim
from mcusim.inputs import random_inputs

MODEL = Path(__file__).resolve().parents[2] / "shared" / "models" / "vww_96_int8.tflite"


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    base = mcusim.load(MODEL)
    x = random_inputs(base.graph, 0)
    mcusim.run(base, device="stm32l4r5", inputs=x)  # JIT + kernel prepare out of the way
    # load every device's numba code paths (cache simulator specialisations) once on a tiny
    # model, so "first" measures simulating VWW, not one-time JIT loading per process
    tiny = MODEL.parent / "hello_world_int8.tflite"
    for name in mcusim.bundled_devices():
        mcusim.run(mcusim.load(tiny), device=name)
    print(f"{'device':14s} {'core':14s} {'first ms':>9s} {'warm ms':>8s} {'first/M4':>9s}")
    ref_first = None
    for name in ["stm32l4r5"] + [d for d in mcusim.bundled_devices() if d != "stm32l4r5"]:
        dev = mcusim.load_device(name)
        model = mcusim.load(MODEL)
        model.prepared()
        t0 = time.perf_counter()
        mcusim.run(model, device=dev, inputs=x)
        first = time.perf_counter() - t0
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            mcusim.run(model, device=dev, inputs=x)
            ts.append(time.perf_counter() - t0)
        ref_first = ref_first or first
        print(
            f"{name:14s} {dev.core.name:14s} {first * 1e3:9.1f} "
            f"{statistics.median(ts) * 1e3:8.2f} {first / ref_first:9.2f}"
        )


if __name__ == "__main__":
    main()
