"""Throughput of the int8 MAC kernels (GMAC/s per layer type) on VWW-like shapes.

Synthetic layers (seeded random weights, realistic per-channel scales) of MobileNetV1-0.25 at
96x96; then, when ../shared/models/vww_96_int8.tflite exists, the sum of our kernel times over
that model's MAC layers next to one TFLM ``invoke`` of the whole model. Best-of-N wall times
(the machine is shared). Not a test. Run:  python bench/bench_kernels.py [seconds_per_layer]
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from mcusim.dtypes import INT8, INT32, Quant
from mcusim.graph import Graph, Op, Tensor
from mcusim.kernels import kernel_for
from mcusim.ops import Conv2DAttrs, DepthwiseConv2DAttrs, FullyConnectedAttrs, Pool2DAttrs

VWW = Path(__file__).resolve().parents[2] / "shared" / "models" / "vww_96_int8.tflite"

# (kind, input HWC, kernel, stride, out channels) of MobileNetV1-0.25 on 96x96 (VWW).
LAYERS = [
    ("conv2d", (96, 96, 3), 3, 2, 8),
    ("depthwise_conv2d", (48, 48, 8), 3, 1, 8),
    ("conv2d", (48, 48, 8), 1, 1, 16),
    ("depthwise_conv2d", (48, 48, 16), 3, 2, 16),
    ("conv2d", (24, 24, 16), 1, 1, 32),
    ("depthwise_conv2d", (24, 24, 32), 3, 1, 32),
    ("conv2d", (24, 24, 32), 1, 1, 32),
    ("conv2d", (12, 12, 64), 1, 1, 64),
    ("depthwise_conv2d", (12, 12, 64), 3, 1, 64),
    ("conv2d", (6, 6, 128), 1, 1, 128),
    ("depthwise_conv2d", (6, 6, 128), 3, 1, 128),
    ("conv2d", (3, 3, 256), 1, 1, 256),
    ("avg_pool2d", (3, 3, 256), 3, 1, 256),
    ("fully_connected", (1, 1, 256), 1, 1, 2),
]


def _q(scale, zp=0, axis=None) -> Quant:
    return Quant(np.atleast_1d(np.asarray(scale, np.float32)), np.atleast_1d(zp), axis)


def make_layer(kind: str, hwc, k: int, stride: int, cout: int, rng) -> tuple[Graph, Op, int]:
    """A one-op graph and its MAC count."""
    h, w, cin = hwc
    t: dict[str, Tensor] = {"x": Tensor("x", (1, h, w, cin), INT8, _q(0.02, -5))}
    inputs = ["x"]
    oh, ow = -(-h // stride), -(-w // stride)  # SAME
    if kind == "conv2d":
        wt = rng.integers(-127, 128, (cout, k, k, cin)).astype(np.int8)
        attrs = Conv2DAttrs((stride, stride), (1, 1), "same", "relu6")
        macs = oh * ow * cout * k * k * cin
    elif kind == "depthwise_conv2d":
        wt = rng.integers(-127, 128, (1, k, k, cout)).astype(np.int8)
        attrs = DepthwiseConv2DAttrs((stride, stride), (1, 1), "same", "relu6", cout // cin)
        macs = oh * ow * cout * k * k
    elif kind == "fully_connected":
        wt = rng.integers(-127, 128, (cout, h * w * cin)).astype(np.int8)
        t["x"] = Tensor("x", (1, h * w * cin), INT8, _q(0.02, -5))
        attrs, macs, oh, ow = FullyConnectedAttrs(), cout * h * w * cin, 1, 1
    else:
        attrs, macs, oh, ow = Pool2DAttrs((k, k), (1, 1), "valid"), 0, h - k + 1, w - k + 1
    if kind != "avg_pool2d":
        axis = 3 if kind == "depthwise_conv2d" else 0
        ws = np.geomspace(0.002, 0.02, cout)
        t["w"] = Tensor("w", wt.shape, INT8, _q(ws, np.zeros(cout, np.int64), axis), wt)
        bias = rng.integers(-5000, 5000, cout).astype(np.int32)
        t["b"] = Tensor("b", (cout,), INT32, _q(0.02 * ws, np.zeros(cout, np.int64), 0), bias)
        inputs += ["w", "b"]
    oshape = (1, cout) if kind == "fully_connected" else (1, oh, ow, cout)
    yq = _q(0.02, -5) if kind == "avg_pool2d" else _q(0.05, -128)
    t["y"] = Tensor("y", oshape, INT8, yq)
    op = Op(kind, kind, inputs, ["y"], attrs)
    return Graph(t, [op], ["x"], ["y"]), op, macs


def best_time(fn, seconds: float) -> float:
    fn()  # compile / warm
    best, t_end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def synthetic(seconds: float) -> None:
    rng = np.random.default_rng(0)
    per_kind: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    head = f"{'layer':18s} {'input':>14s} {'k':>2s} {'s':>2s} {'cout':>5s}"
    print(f"{head} {'us':>8s} {'GMAC/s':>7s}")
    for kind, hwc, k, s, cout in LAYERS:
        g, op, macs = make_layer(kind, hwc, k, s, cout, rng)
        kdef = kernel_for(kind)
        params = kdef.prepare(g, op)
        x = rng.integers(-128, 128, g.tensors["x"].shape).astype(np.int8)
        dt = best_time(lambda: kdef.compute(params, [x]), seconds)  # noqa: B023
        per_kind[kind][0] += macs
        per_kind[kind][1] += dt
        rate = f"{macs / dt / 1e9:7.2f}" if macs else "      -"
        print(f"{kind:18s} {str(hwc):>14s} {k:2d} {s:2d} {cout:5d} {dt * 1e6:8.1f} {rate}")
    print()
    for kind, (macs, dt) in per_kind.items():
        if macs:
            print(f"{kind:18s} overall {macs / dt / 1e9:6.2f} GMAC/s")


def whole_vww(seconds: float) -> None:
    if not VWW.exists():
        print(f"\n{VWW} absent: skipping the whole-model comparison")
        return
    from mcusim.importers.tflite import load_tflite

    g = load_tflite(VWW)
    rng = np.random.default_rng(0)
    total, macs = 0.0, 0
    for op in g.ops:
        if op.kind not in ("conv2d", "depthwise_conv2d", "fully_connected", "avg_pool2d"):
            continue
        kdef = kernel_for(op.kind)
        params = kdef.prepare(g, op)
        x = rng.integers(-128, 128, g.tensors[op.inputs[0]].shape).astype(np.int8)
        total += best_time(lambda: kdef.compute(params, [x]), seconds / 4)  # noqa: B023
        if op.kind != "avg_pool2d":
            w = g.tensors[op.inputs[1]].shape
            y = g.tensors[op.outputs[0]]
            macs += y.size * (
                w[1] * w[2] * (w[3] if op.kind == "conv2d" else 1)
                if op.kind != "fully_connected"
                else w[1]
            )
    try:
        from tflite_micro import runtime as tflm
    except ImportError:
        tflm = None
    line = f"\nvww_96_int8: our MAC layers {total * 1e3:.3f} ms ({macs / 1e6:.2f} MMAC, "
    line += f"{macs / total / 1e9:.2f} GMAC/s)"
    if tflm is not None:
        it = tflm.Interpreter.from_file(str(VWW))
        it.set_input(rng.integers(-128, 128, (1, 96, 96, 3)).astype(np.int8), 0)
        line += f"; TFLM invoke {best_time(it.invoke, seconds) * 1e3:.3f} ms"
    print(line)


if __name__ == "__main__":
    secs = float(sys.argv[1]) if len(sys.argv) > 1 else 0.2
    synthetic(secs)
    whole_vww(secs)
