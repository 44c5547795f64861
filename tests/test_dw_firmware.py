"""The depthwise twin's DSP build (inline assembly of kernels/c/depthwise.c) bit for bit
against the numba kernel, in Unicorn on Cortex-M4 and Cortex-M7, both compilers: the
host build (tests/test_c_twins.py) only reaches the portable C of the ``#else`` branches.
Cases reach every path: 3x3 padding on each border, stride 2, leftover channels, shift > 0
(the requantization's left-shift branch), no bias, channel multiplier 4, generic."""

from __future__ import annotations

import numpy as np
import pytest
from test_c_twins import DW_CASES, _firmware_or_skip, assert_same, dw_case

EXTRA = {
    "3x3_s1_c4_small": (dict(h=2, w=3, cin=4, mult=1, k=(3, 3)), "3x3"),
    "3x3_valid_c8_w1": (dict(h=5, w=3, cin=8, mult=1, k=(3, 3), pad="valid"), "3x3"),
    "3x3_s2_c12_even": (dict(h=8, w=6, cin=12, mult=1, k=(3, 3), stride=(2, 2)), "3x3"),
    "3x3_s2_c13_relu6": (
        dict(h=8, w=7, cin=13, mult=1, k=(3, 3), stride=(2, 2), act="relu6"),
        "3x3",
    ),
}


def _left_shift(g, op):
    """Scale the weights' quant so some channels get a multiplier shift > 0."""
    w = g.tensors[op.inputs[1]]
    w.quant.scale[::3] *= 400.0


@pytest.mark.parametrize("cc", ["gcc", "zig"])
@pytest.mark.parametrize("core", ["cortex-m4", "cortex-m7"])
def test_depthwise_firmware_bit_exact(core, cc):
    from mcusim.firmware.layer import marshal, run_firmware
    from mcusim.kernels import kernel_for

    h = _firmware_or_skip(cc, core)
    cases = {**DW_CASES, **EXTRA}
    for name, (spec, path) in cases.items():
        for lshift in (False, True):
            g, op, xs = dw_case(len(name) + 200, **spec)
            if lshift:
                _left_shift(g, op)
            kdef = kernel_for(op.kind)
            p = kdef.prepare(g, op)
            if lshift:
                assert max(int(s) for s in np.ravel(p.shift)) > 0, name
            ref = kdef.compute(p, xs)[0]
            call = marshal(g, op, p, xs)
            assert call.path.startswith(path)
            run = run_firmware(call, h)
            h.reset_heap()
            assert run.value == 0
            assert_same(run.output, np.asarray(ref).reshape(run.output.shape))
