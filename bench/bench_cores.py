"""Simulation speed per core: first run (schedules + timing + caches) and warm run on VWW.

Every device is measured in a fresh process of its own, after the same warm-up: the
model's numba kernels are compiled or loaded and run once (``compute_outputs``, which does
no timing), and the device's own code paths are loaded on a tiny model (hello_world: the
cache simulator's numba specialisations, the core model's code). No core model has timed a
block of the measured model before, so "first" is the same work for every device: building
the schedules, timing them on the device's core and simulating its memories. "warm" is the
median of later runs (per-device costs reused). first/M4 is the ratio to stm32l4r5's first.
Run:  python bench/bench_cores.py [N] [--devices a,b,...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODEL = Path(__file__).resolve().parents[2] / "shared" / "models" / "vww_96_int8.tflite"
TINY = MODEL.parent / "hello_world_int8.tflite"
REFERENCE = "stm32l4r5"


def measure(device: str, n: int) -> dict:
    """First and warm run of VWW on ``device`` in this (fresh) process."""
    import mcusim
    from mcusim.inputs import random_inputs
    from mcusim.runner import compute_outputs

    dev = mcusim.load_device(device)
    model = mcusim.load(MODEL)
    x = random_inputs(model.graph, 0)
    compute_outputs(model, x)  # numba kernels compiled / loaded, weights prepared
    mcusim.run(mcusim.load(TINY), device=dev)  # this device's code paths loaded
    t0 = time.perf_counter()
    mcusim.run(model, device=dev, inputs=x)
    first = time.perf_counter() - t0
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        mcusim.run(model, device=dev, inputs=x)
        ts.append(time.perf_counter() - t0)
    return {"device": device, "core": dev.core.name, "first": first, "warm": statistics.median(ts)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=10)
    ap.add_argument("--devices", default=None)
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child process
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.n)))
        return
    import mcusim

    names = args.devices.split(",") if args.devices else mcusim.bundled_devices()
    names = [REFERENCE] + [d for d in names if d != REFERENCE]
    print(f"{'device':20s} {'core':14s} {'first ms':>9s} {'warm ms':>8s} {'first/M4':>9s}")
    ref = None
    for name in names:
        out = subprocess.run(
            [sys.executable, __file__, str(args.n), "--one", name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        ref = ref or r["first"]
        print(
            f"{name:20s} {r['core']:14s} {r['first'] * 1e3:9.1f} {r['warm'] * 1e3:8.2f} "
            f"{r['first'] / ref:9.2f}"
        )


if __name__ == "__main__":
    main()
