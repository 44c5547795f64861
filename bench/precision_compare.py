"""Per-layer cycles of one model at INT8, INT4, INT2 and binary, on several devices.

Re-quantizes the KWS DS-CNN with `mcusim.quantize.requantize` (--all W8A8 / W4A4 / W2A2 /
W1A1; layers that cannot take a precision keep theirs, see the report's note column) and
runs each variant on each device. Prints a markdown table: one row per layer, one column
per (precision, device). Run:  python bench/precision_compare.py [device ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import mcusim
from mcusim.inputs import random_inputs
from mcusim.quantize import requantize

MODEL = Path(__file__).resolve().parents[2] / "shared" / "models" / "kws_ref_model.tflite"
PRECISIONS = ["W8A8", "W4A4", "W2A2", "W1A1"]


def main() -> None:
    devices = sys.argv[1:] or ["xpulpnn", "stm32l4r5"]
    src = mcusim.load(MODEL)
    calib = [random_inputs(src.graph, s)[0] for s in range(8)]
    runs = {}
    for p in PRECISIONS:
        q = requantize(src, None, calib, default=p)
        model = mcusim.Model(q.graph)
        for d in devices:
            runs[(p, d)] = mcusim.run(model, device=d, seed=0)
        runs[(p, "sqnr")] = q.output_sqnr_db
    cols = [(p, d) for d in devices for p in PRECISIONS]
    print("| # | op | " + " | ".join(f"{d} {p}" for p, d in cols) + " |")
    print("|---|---|" + "---:|" * len(cols))
    first = runs[cols[0]]
    for i, layer in enumerate(first.layers):
        cells = []
        for p, d in cols:
            r = runs[(p, d)].layers[i]
            cells.append(f"{r.cycles:,} ({r.precision})")
        print(f"| {i} | {layer.op} | " + " | ".join(cells) + " |")
    tot = [f"**{runs[c].total_cycles:,}**" for c in cols]
    print("| | total cycles | " + " | ".join(tot) + " |")
    lat = [f"{runs[c].latency_s * 1e3:.2f} ms" for c in cols]
    print("| | latency | " + " | ".join(lat) + " |")
    sq = [f"{float(min(runs[(p, 'sqnr')])):.1f} dB" for p, _ in cols]
    print("| | output SQNR vs INT8 | " + " | ".join(sq) + " |")


if __name__ == "__main__":
    main()
