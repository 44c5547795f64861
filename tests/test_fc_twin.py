"""kernels/c/fully_connected.c in firmware: the per-tensor row-pair loop (assembly on the
DSP cores, in kernels/schedules/matmul.py's block order) on every path it branches to:
right shift with the first value of a pair >= 0 or < 0 (rounding ties included), left
shift (output scale below the product of the input scales), odd last row, 4-column steps
with and without the 4x loop, scalar leftovers only, relu, with and without a bias (a null
pointer, as TFLite Micro passes it); and the per-channel entry point. Both compilers,
Cortex-M4 and M7, in Unicorn == numba, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from test_c_twins import INT8, INT32, FullyConnectedAttrs, OneOp, _firmware_or_skip, _q, assert_same

# (batches, k, n, per_channel, act, out_scale, weight range, input range[, bias])
CASES = [
    (1, 8, 128, False, "none", 0.1, 127, 128),  # ad01's 8 -> 128 shape, right shift
    (2, 37, 7, False, "relu", 0.1, 127, 128),  # 4x loop + 1 step + leftovers, odd row
    (1, 64, 12, False, "none", 0.1, 127, 128),  # 4x loop only
    (1, 8, 32, False, "none", 1e-3, 1, 10),  # right shift by 1: ties at both signs
    (16, 8, 3, False, "none", 1e-3, 1, 10),  # the same in the odd rows
    (1, 5, 9, False, "none", 2e-4, 1, 10),  # left shift (effective scale 1.5)
    (1, 20, 6, False, "relu6", 5e-5, 1, 4),  # left shift by 3
    (3, 37, 7, True, "relu", 0.1, 127, 128),  # per-channel entry point
    (1, 1, 16, False, "relu", 0.05, 127, 128),  # hello_world's 1 -> 16: no 4-column step
    (1, 3, 6, False, "none", 0.05, 127, 128, False),  # no bias, leftovers only
    (2, 52, 8, False, "none", 0.1, 127, 128, False),  # no bias, 4x loop + 1 step + leftovers
]


def _fc_case(i, batches, k, n, per_channel, act, out_scale, wmax, xmax, bias=True):
    rng = np.random.default_rng(100 + i)
    b = OneOp(rng)
    b.act("x", (batches, k), 0.03, 0)
    ws = rng.uniform(0.002, 0.02, n) if per_channel else [0.01]
    w = rng.integers(-wmax, wmax + 1, (n, k)).astype(np.int8)
    wt = b.const("w", w, INT8, _q(ws, 0, 0))
    ins = ["x", wt]
    if bias:
        ins.append(b.const("b", rng.integers(-20, 20, n).astype(np.int32), INT32))
    y = b.act("y", (batches, n), out_scale, -3)
    g, op = b.graph("fully_connected", FullyConnectedAttrs(activation=act), ins, y)
    return g, op, [rng.integers(-xmax, xmax, (batches, k)).astype(np.int8)]


@pytest.mark.parametrize("core", ["cortex-m4", "cortex-m7"])
@pytest.mark.parametrize("cc", ["gcc", "zig"])
def test_fc_twin_requant_paths_bit_exact(cc, core):
    from mcusim.firmware import harness_for
    from mcusim.firmware.layer import build_twins, marshal, run_firmware
    from mcusim.kernels import kernel_for

    _firmware_or_skip(cc)
    h = harness_for(build_twins(core, cc).elf, core)
    kdef = kernel_for("fully_connected")
    shifts = set()
    for i, case in enumerate(CASES):
        g, op, xs = _fc_case(i, *case)
        p = kdef.prepare(g, op)
        ref = np.asarray(kdef.compute(p, xs)[0])
        call = marshal(g, op, p, xs)
        assert ("per_ch" in call.path) == case[3], call.path
        run = run_firmware(call, h)
        assert run.value == 0
        assert_same(run.output, ref.reshape(run.output.shape))
        if not case[3]:
            shifts.add(int(np.sign(np.asarray(p.shift).ravel()[0])))
        h.reset_heap()
    assert shifts == {-1, 1}  # both the right- and the left-shift path ran


@pytest.mark.parametrize("cc", ["gcc", "zig"])
def test_fc_twin_wrapper_checks_its_arguments(cc):
    """The assembly wrapper (arm_fully_connected_s8's per-call code): no column or no row is
    an argument error on both entry points, no batch row returns 0 with the output
    untouched."""
    from dataclasses import replace

    from mcusim.firmware import harness_for
    from mcusim.firmware.layer import build_twins, marshal, run_firmware
    from mcusim.kernels import kernel_for

    _firmware_or_skip(cc)
    h = harness_for(build_twins("cortex-m4", cc).elf, "cortex-m4")
    kdef = kernel_for("fully_connected")
    for pc in (0, 1):
        g, op, xs = _fc_case(0, 2, 37, 7, False, "relu", 0.1, 127, 128)
        call = marshal(g, op, kdef.prepare(g, op), xs)
        for field in ("in_depth", "out_depth"):
            bad = replace(call, values={**call.values, field: 0, "per_channel": pc})
            assert run_firmware(bad, h).value == -1, (field, pc)
            h.reset_heap()
        none = run_firmware(replace(call, values={**call.values, "batches": 0}), h)
        assert none.value == 0 and not none.output.any()
        h.reset_heap()
