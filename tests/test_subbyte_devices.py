"""A re-quantized (sub-byte) shared model runs on RISC-V and Cortex-M devices end to end.

Outputs never depend on the device: every device gives the same tensors as the compute
kernels, which tests/test_kernels_subbyte.py checks against an independent reference.
"""

from __future__ import annotations

import numpy as np
import pytest

import mcusim
from mcusim.inputs import random_inputs
from mcusim.quantize import requantize
from mcusim.runner import compute_outputs

from conftest import model_path

DEVICES = ["gap8", "gap9", "xpulpnn", "stm32l4r5", "stm32h743", "alif-e3-hp"]


@pytest.fixture(scope="module", params=["W4A4", "W2A2", "W4A8"])
def quantized(request):
    src = mcusim.load(model_path("kws_ref_model"))
    calib = [random_inputs(src.graph, s)[0] for s in range(4)]
    q = requantize(src, None, calib, default=request.param)
    return request.param, mcusim.Model(q.graph)


@pytest.mark.parametrize("device", DEVICES)
def test_sub_byte_model_runs_bit_exact_on_device(quantized, device):
    precision, model = quantized
    xs = random_inputs(model.graph, 11)
    ref = compute_outputs(model, xs)
    r = mcusim.run(model, device=device, inputs=xs)
    for name, y in zip(model.graph.outputs, r.outputs, strict=True):
        assert np.array_equal(ref[name], y)
    got = {layer.precision for layer in r.layers if layer.macs}
    assert precision in got, got  # the requested precision really reached the device
    assert all(layer.cycles > 0 for layer in r.layers if layer.macs)


def test_armv6m_refuses_sub_byte_with_layer_and_precision(quantized):
    precision, model = quantized
    with pytest.raises(mcusim.UserError, match=r"layer .*no Armv6-M schedule .* at W"):
        mcusim.run(model, device="rp2040")
