"""Throughput (GMAC/s) of the sub-byte and binary conv kernels on VWW-like layer shapes.

Synthetic MobileNetV1-0.25 (96x96, VWW) convolutions at W8A8 (the INT8 fast kernel, for
comparison), W4A8u (int4 x uint8 -> int8: x - zp needs 9 bits, int16 MACs),
W4A4 (int4 x uint4 -> uint4, fixed point, runs the INT8 loops) and W1A1 (binary x binary -> binary,
thresholds, XNOR-popcount). Best-of-N wall times (the machine is shared). Not a test. Run:
python bench/bench_subbyte.py [seconds_per_layer]
"""

from __future__ import annotations

import sys
import time

import numpy as np

from mcusim.dtypes import INT32, Quant, elem_type
from mcusim.graph import Graph, Op, Tensor
from mcusim.model import Model
from mcusim.ops import Conv2DAttrs

# (input HWC, kernel, stride, out channels)
LAYERS = [
    ((48, 48, 8), 1, 1, 16),
    ((24, 24, 32), 1, 1, 32),
    ((24, 24, 32), 3, 1, 32),
    ((12, 12, 64), 1, 1, 64),
    ((6, 6, 128), 1, 1, 128),
    ((3, 3, 256), 1, 1, 256),
]

PRECISIONS = {  # name: (weights, input, output, requant)
    "W8A8": ("int8", "int8", "int8", "fixed_point"),
    "W4A8u": ("int4", "uint8", "int8", "fixed_point"),  # uint8 input: the int16 path
    "W4A4": ("int4", "uint4", "uint4", "fixed_point"),
    "W1A1": ("binary", "binary", "binary", "thresholds"),
}


def _q(scale, zp=0, axis=None) -> Quant:
    return Quant(np.atleast_1d(np.asarray(scale, np.float32)), np.atleast_1d(zp), axis)


def _values(rng, t, shape) -> np.ndarray:
    if t.binary:
        return np.where(rng.random(shape) < 0.5, -1, 1).astype(np.int8)
    return rng.integers(t.min, t.max + 1, shape).astype(t.np_dtype)


def make_layer(prec: str, hwc, k: int, stride: int, cout: int, rng):
    """A one-op conv graph of the precision, an input, and its MAC count."""
    wt, xt, yt = (elem_type(n) for n in PRECISIONS[prec][:3])
    requant = PRECISIONS[prec][3]
    h, w, cin = hwc
    oh, ow = -(-h // stride), -(-w // stride)
    xz = 0 if xt.binary else (xt.min + xt.max + 1) // 2
    tensors = {
        "x": Tensor("x", (1, h, w, cin), xt, _q(0.05, xz)),
        "w": Tensor(
            "w",
            (cout, k, k, cin),
            wt,
            _q(np.full(cout, 0.01), np.zeros(cout), 0),
            _values(rng, wt, (cout, k, k, cin)),
        ),
        "b": Tensor("b", (cout,), INT32, None, rng.integers(-100, 100, cout).astype(np.int32)),
        "y": Tensor("y", (1, oh, ow, cout), yt, _q(0.5, 0 if yt.binary else yt.min + 1)),
    }
    ins = ["x", "w", "b"]
    if requant == "thresholds":
        levels = 1 if yt.binary else (1 << yt.bits) - 1
        thr = np.sort(rng.integers(-20, 20, (cout, levels)), axis=1).astype(np.int32)
        tensors["t"] = Tensor("t", thr.shape, INT32, None, thr)
        ins.append("t")
    attrs = Conv2DAttrs((stride, stride), (1, 1), "same", "none", requant)
    g = Graph(tensors, [Op("conv2d", "conv", ins, ["y"], attrs)], ["x"], ["y"]).validate()
    return g, _values(rng, xt, (1, h, w, cin)), oh * ow * cout * k * k * cin


def best_time(fn, budget: float) -> float:
    fn()  # compile / warm up
    best, spent = float("inf"), 0.0
    while spent < budget:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
    return best


def main(budget: float = 0.5) -> None:
    rng = np.random.default_rng(0)
    print(f"{'layer':<26}" + "".join(f"{p:>12}" for p in PRECISIONS) + "   (GMAC/s)")
    totals = {p: [0, 0.0] for p in PRECISIONS}
    for hwc, k, s, cout in LAYERS:
        row = f"{'x'.join(map(str, hwc))} k{k} s{s} -> {cout}"
        for prec in PRECISIONS:
            g, x, macs = make_layer(prec, hwc, k, s, cout, rng)
            p = Model(g).prepared()[0]
            t = best_time(lambda p=p, x=x: p.compute(p.params, [x]), budget)
            totals[prec][0] += macs
            totals[prec][1] += t
            row += f"{macs / t / 1e9:12.2f}"
        print(f"{row:<26}")
    print(f"{'all layers':<26}" + "".join(f"{m / t / 1e9:12.2f}" for m, t in totals.values()))


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 0.5)
