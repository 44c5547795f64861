"""kernels/c/matmul.c (the 1x1 convolution's int8 matrix product) in firmware: every shape
class its dispatch specialises (16-, 4- and 1-column loops present or not, lhs rows
contiguous or strided), odd pixel and channel counts, no bias, multipliers above 1 (the
left-shift path), built by both compilers for the Cortex-M4 and M7 (the assembly DSP
path) and run in Unicorn == numba, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from test_c_twins import _firmware_or_skip, assert_same, conv_case

# (h, w, cin, cout, stride): cin picks the column loops (16 / 4 / 1 per step)
CASES = [
    (5, 5, 64, 6, 1),  # 16 only, odd pixel count
    (3, 4, 8, 5, 1),  # 4 only, odd channel count
    (3, 3, 3, 4, 1),  # 1 only
    (4, 3, 37, 7, 1),  # 16 + 4 + 1
    (5, 4, 20, 4, 1),  # 16 + 4
    (3, 5, 17, 4, 1),  # 16 + 1
    (4, 4, 6, 2, 1),  # 4 + 1
    (9, 9, 16, 6, 2),  # strided rows (one call per output row), 16 only, odd width
    (8, 10, 40, 5, 2),  # strided, 16 + 4, odd channel count
    (7, 7, 7, 3, 2),  # strided, 4 + 1
]


def _run_cases(core: str, cc: str) -> None:
    """Every case of CASES through the twin built by ``cc`` for ``core`` == numba."""
    from mcusim.firmware import harness_for
    from mcusim.firmware.layer import build_twins, marshal, run_firmware
    from mcusim.kernels import kernel_for

    _firmware_or_skip(cc)
    h = harness_for(build_twins(core, cc).elf, core)
    for i, (hh, ww, cin, cout, s) in enumerate(CASES):
        act = "relu6" if i % 3 == 1 else "none"
        g, op, xs = conv_case(i, hh, ww, cin, cout, (1, 1), stride=(s, s), act=act,
                              pad="valid", in_zp=-128 if i % 2 else 5, bias=i % 4 != 3,
                              y_scale=0.0002 if i % 5 == 2 else 0.08)  # fmt: skip
        kdef = kernel_for("conv2d")
        p = kdef.prepare(g, op)
        ref = np.asarray(kdef.compute(p, xs)[0])
        call = marshal(g, op, p, xs)
        assert "1x1" in call.path
        run = run_firmware(call, h)
        assert run.value == 0
        assert_same(run.output, ref.reshape(run.output.shape))
        h.reset_heap()


@pytest.mark.parametrize("core", ["cortex-m4", "cortex-m7"])
@pytest.mark.parametrize("cc", ["gcc", "zig"])
def test_matmul_twin_shape_classes_bit_exact(cc, core):
    _run_cases(core, cc)


def test_matmul_twin_portable_path_bit_exact():
    """The portable C branch (no DSP: the RV32IMC build) on the same shape classes."""
    _run_cases("rv32imc", "zig")
