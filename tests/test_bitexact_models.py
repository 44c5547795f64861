"""Every intermediate tensor of the six shared models equals TFLite Micro's, bit for bit.

Five seeded random inputs per model; every operator output is compared, so a mismatch
names the first layer where mcusim and the reference interpreter part ways.
"""

from __future__ import annotations

import numpy as np
import pytest

import mcusim
from mcusim.inputs import random_inputs
from mcusim.runner import compute_outputs

from conftest import SHARED_MODELS, model_path
from tflm_ref import operator_outputs, tensor_names, tflm_interpreter

SEEDS = range(5)


@pytest.mark.parametrize("name", SHARED_MODELS)
def test_every_tensor_bit_exact(name):
    path = model_path(name)
    data = path.read_bytes()
    model = mcusim.load(path)
    g = model.graph
    interp = tflm_interpreter(data)
    names = tensor_names(data)
    outs = operator_outputs(data)
    checked = 0
    for seed in SEEDS:
        xs = random_inputs(g, seed)
        for i, x in enumerate(xs):
            interp.set_input(x, i)
        interp.invoke()
        env = compute_outputs(model, xs)
        for op in g.ops:  # in execution order: report the first layer that differs
            for tname in op.outputs:
                idx = outs[[names[j] for j in outs].index(tname)]
                ref = np.asarray(interp.GetTensor(idx, 0)["tensor_data"]).reshape(
                    g.tensors[tname].shape
                )
                got = env[tname]
                assert got.dtype == ref.dtype, f"{op.label}: dtype {got.dtype} vs {ref.dtype}"
                if not np.array_equal(got, ref):
                    bad = np.argwhere(got != ref)
                    first = tuple(bad[0])
                    pytest.fail(
                        f"seed {seed}, {op.label}: {len(bad)} of {got.size} elements differ; "
                        f"first at {first}: mcusim {got[first]} vs TFLM {ref[first]}"
                    )
                checked += 1
    assert checked == len(SEEDS) * sum(len(op.outputs) for op in g.ops)


@pytest.mark.parametrize("name", SHARED_MODELS)
def test_run_outputs_are_graph_outputs(name):
    """mcusim.run returns the graph outputs of the same computation."""
    model = mcusim.load(model_path(name))
    xs = random_inputs(model.graph, 7)
    env = compute_outputs(model, xs)
    r = mcusim.run(model, device="stm32l4r5", inputs=xs)
    for n, y in zip(model.graph.outputs, r.outputs, strict=True):
        assert np.array_equal(env[n], y)
