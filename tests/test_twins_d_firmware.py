"""Firmware builds of the FC / ADD / SUB / softmax twins (inline-assembly loops on Armv7E-M)
against the numba kernels, bit for bit, in Unicorn on Cortex-M4 and M7 with both compilers.

The layers are run under a device tracer (flash read hooks, as `mcusim crosscheck` does):
shapes reach every loop (odd rows, 1-3 leftover 4-column steps, scalar tails, no bias,
lengths not a multiple of 4), shifts of both signs, relu clamps.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_c_twins import OneOp, _firmware_or_skip, _q, assert_same

from mcusim.dtypes import INT8, INT32
from mcusim.graph import Tensor
from mcusim.ops import ElementwiseAttrs, FullyConnectedAttrs, SoftmaxAttrs


def _check(h, device, g, op, xs):
    from mcusim.devices.loader import load_device
    from mcusim.firmware import Tracer
    from mcusim.firmware.layer import marshal, run_firmware
    from mcusim.kernels import kernel_for

    kdef = kernel_for(op.kind)
    p = kdef.prepare(g, op)
    ref = np.asarray(kdef.compute(p, xs)[0])
    run = run_firmware(marshal(g, op, p, xs), h, tracer=Tracer(device=load_device(device)))
    assert run.value == 0
    assert_same(run.output, ref.reshape(run.output.shape))


def _fc(seed, batches, k, n, per_channel, act, bias=True):
    rng = np.random.default_rng(seed)
    b = OneOp(rng)
    x = b.act("x", (batches, k), 0.03, 9)
    ws = rng.uniform(0.002, 0.02, n) if per_channel else [0.01]
    wt = b.const("w", rng.integers(-127, 128, (n, k)).astype(np.int8), INT8, _q(ws, 0, 0))
    ins = ["x", wt]
    if bias:
        ins.append(b.const("b", rng.integers(-5000, 5000, n).astype(np.int32), INT32))
    y = b.act("y", (batches, n), 0.1, -11)
    g, op = b.graph("fully_connected", FullyConnectedAttrs(activation=act), ins, y)
    return g, op, [b.x(x)]


def _add(seed, kind, n, act, s1=0.07, s2=0.03, sy=0.09):
    rng = np.random.default_rng(seed)
    b = OneOp(rng)
    x1 = b.act("x1", (1, n), s1, 3)
    x2 = b.act("x2", (1, n), s2, -20)
    y = b.act("y", (1, n), sy, 1)
    g, op = b.graph(kind, ElementwiseAttrs(activation=act), ["x1", "x2"], y)
    return g, op, [b.x(x1), b.x(x2)]


def _softmax(seed, rows, depth, scale):
    rng = np.random.default_rng(seed)
    b = OneOp(rng)
    x = b.act("x", (rows, depth), scale, 7)
    b.tensors["y"] = Tensor("y", (rows, depth), INT8, _q(1 / 256, -128))
    g, op = b.graph("softmax", SoftmaxAttrs(beta=1.0), ["x"], "y")
    return g, op, [b.x(x)]


CASES = {
    "fc_pairs_x4": lambda: _fc(1, 1, 128, 8, False, "none"),
    "fc_odd_rows_peeled": lambda: _fc(2, 2, 61, 7, True, "relu"),  # 15 steps: 3 + 12, 1 col
    "fc_short": lambda: _fc(3, 1, 8, 5, False, "none"),  # 2 peeled steps only
    "fc_no_bias": lambda: _fc(4, 1, 70, 3, True, "none", bias=False),
    "add_relu": lambda: _add(5, "add", 1023, "relu"),
    "add_small_scales": lambda: _add(6, "add", 64, "none", 0.5, 0.004, 0.002),
    "sub": lambda: _add(7, "sub", 37, "none"),
    "softmax": lambda: _softmax(8, 3, 37, 0.05),
    "softmax_wide": lambda: _softmax(9, 2, 12, 0.3),
}


@pytest.mark.parametrize("core,device", [("cortex-m4", "stm32l4r5"), ("cortex-m7", "stm32f746")])
@pytest.mark.parametrize("cc", ["gcc", "zig"])
def test_twins_bit_exact_in_firmware(cc, core, device):
    h = _firmware_or_skip(cc, core)
    for name, make in CASES.items():
        g, op, xs = make()
        try:
            _check(h, device, g, op, xs)
        except AssertionError as e:
            raise AssertionError(f"{name}: {e}") from None
        h.reset_heap()
