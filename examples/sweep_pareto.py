"""Sweep the shared models over five devices and two precisions, then plot latency vs energy
with each model's Pareto front highlighted.

    python examples/sweep_pareto.py                       # -> sweep_out/pareto.png
    python examples/sweep_pareto.py --out results --plot docs/img/sweep_pareto.png

Runs in estimate mode (cycles, traffic and energy without computing outputs: the same numbers
as a full run, docs/sweeps.md) on a process pool of 2 workers and prints its wall time.
Points that fail (a model too big for a device, a precision a layer cannot take) are
listed and left out of the plot.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import mcusim
from mcusim.traces.plots import plot_compare, plot_pareto

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO.parent / "shared" / "models"
DEVICES = ["stm32l4r5", "stm32h743", "max78000", "gap8", "corstone300-u55-128"]
PRECISIONS = [None, "W4A8"]  # the model as it is (INT8), every conv/dw/fc layer at W4A8


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="sweep_out", help="directory for the sweep's tables")
    ap.add_argument("--plot", help="Pareto picture (.png/.svg; default OUT/pareto.png)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--mode", default="estimate", choices=("estimate", "full"))
    args = ap.parse_args()
    models = sorted(MODELS.glob("*.tflite"))
    if not models:
        raise SystemExit(f"no models in {MODELS} (the shared models are not present)")

    t0 = time.perf_counter()
    points, layers = mcusim.sweep(
        models,
        DEVICES,
        precisions=PRECISIONS,
        mode=args.mode,
        n_jobs=args.jobs,
        out=args.out,
    )
    wall = time.perf_counter() - t0
    ok = points[points.status == "ok"]
    failed = points[points.status != "ok"]
    print(
        f"{len(points)} points ({len(models)} models x {len(DEVICES)} devices x "
        f"{len(PRECISIONS)} precisions), {len(ok)} ok, {len(failed)} failed, "
        f"{len(layers)} layer rows, mode={args.mode}, {args.jobs} jobs: wall {wall:.1f} s"
    )
    for _, p in failed.iterrows():
        print(f"  failed: {p.model} on {p.device} at {p.precision}: {p.error}")

    plot = Path(args.plot) if args.plot else Path(args.out) / "pareto.png"
    plot_pareto(points, plot, size=(1200, 800))
    stem = (
        plot.stem.replace("pareto", "compare") if "pareto" in plot.stem else plot.stem + "_compare"
    )
    compare = plot.with_name(stem + plot.suffix)
    plot_compare(points, compare, by="precision", size=(1200, 700))
    print(f"wrote {plot} and {compare}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
