"""Estimate-mode throughput: layer evaluations per second (issue 7 target: >= 10,000).

A "layer evaluation" is one layer record of one point. Three cases:

* cold: every (model, device) pair is new (fresh Model objects): schedules are built and
  timed, caches simulated, tiles planned. This is the first point of each pair in a sweep.
* warm run(): the same points again on the same Model objects: per-(model, device,
  placement) costs come from the cache; what remains is placement, records and totals.
* warm sweep(): mcusim.sweep(mode="estimate", executor="serial") over the same grid a
  second time in this process (its models stay loaded), DataFrames included.

Run: python bench/bench_estimate.py [--devices a,b,c] [--repeat N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import mcusim

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO.parent / "shared" / "models"
NAMES = [
    "hello_world_int8",
    "micro_speech_quantized",
    "ad01_int8",
    "kws_ref_model",
    "vww_96_int8",
    "pretrainedResnet_quant",
]
DEVICES = "stm32l4r5,stm32h743,rp2040,max78000,corstone300-u55-128,gap8"
TARGET = 10_000


def _rate(layers: int, seconds: float) -> str:
    return f"{layers:7d} layers in {seconds:7.3f} s = {layers / seconds:10,.0f} layers/s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", default=DEVICES)
    ap.add_argument("--repeat", type=int, default=20, help="warm repetitions of each point")
    args = ap.parse_args()
    paths = [MODELS / f"{n}.tflite" for n in NAMES if (MODELS / f"{n}.tflite").exists()]
    if not paths:
        raise SystemExit(f"no shared models in {MODELS}")
    devices = args.devices.split(",")
    mcusim.run(paths[0], devices[0], mode="estimate")  # imports, numba cache loads

    # cold: new Model objects, each pair costed from scratch
    models = [mcusim.load(p) for p in paths]
    n = 0
    t0 = time.perf_counter()
    for dev in devices:
        for m in models:
            fresh = mcusim.Model(m.graph, path=m.path)  # no cost cache
            n += len(mcusim.run(fresh, dev, mode="estimate").layers)
    cold = time.perf_counter() - t0
    print(f"cold  run()    ({len(devices)} devices x {len(models)} models):  {_rate(n, cold)}")

    # warm: the same points again (costs cached per (model, device))
    for dev in devices:
        for m in models:
            mcusim.run(m, dev, mode="estimate")
    n = 0
    t0 = time.perf_counter()
    for _ in range(args.repeat):
        for dev in devices:
            for m in models:
                n += len(mcusim.run(m, dev, mode="estimate").layers)
    warm = time.perf_counter() - t0
    print(f"warm  run()    (x{args.repeat} repeats):                 {_rate(n, warm)}")

    # sweep(): first pass cold (its own model cache), second pass warm, DataFrames built
    grid = dict(mode="estimate", executor="serial", progress=False)
    for label in ("cold", "warm"):
        t0 = time.perf_counter()
        pts, lay = mcusim.sweep(paths, devices, **grid)
        dt = time.perf_counter() - t0
        print(f"{label}  sweep()  ({len(pts)} points, serial):           {_rate(len(lay), dt)}")

    warm_rate = n / warm
    cold_rate = sum(len(m.graph.ops) for m in models) * len(devices) / cold
    for label, rate in (("warm run()", warm_rate), ("cold run()", cold_rate)):
        verdict = "reaches" if rate >= TARGET else "misses"
        print(f"target {TARGET:,} layers/s: {label} {verdict} it ({rate:,.0f} layers/s)")


if __name__ == "__main__":
    main()
