"""`mcusim.run` on every shared model and bundled device: records carry real costs."""

from __future__ import annotations

import json

import numpy as np
import pytest

import mcusim
from mcusim import qnn

from conftest import SHARED_MODELS, model_path

DEVICES = ["stm32l4r5", "nrf52840", "max78000"]


@pytest.fixture(scope="module")
def models():
    return {n: mcusim.load(model_path(n)) for n in SHARED_MODELS}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", SHARED_MODELS)
def test_every_model_on_every_device(models, name, device):
    # the CPU path of each device (max78000's CNN tile is tested in test_npu_runs below)
    r = mcusim.run(models[name], device=device, seed=1, force="cpu")
    d = json.loads(r.to_json())
    assert len(d["layers"]) == len(models[name].graph.ops)
    for layer in d["layers"]:
        assert layer["engine"] == "cpu:cortex-m4"
        assert layer["cycles"] > 0 and layer["latency_s"] > 0 and layer["energy_j"] > 0
        assert layer["cycles"] == layer["compute_cycles"] + layer["stall_cycles"]
        reads = sum(rw["read"] for rw in layer["traffic"].values())
        writes = sum(rw["write"] for rw in layer["traffic"].values())
        assert reads > 0 and writes > 0  # every layer reads its input and writes its output
        if layer["macs"]:
            assert layer["traffic"]["flash"]["read"] > 0  # weights stream from flash
    t = d["totals"]
    assert t["cycles"] == sum(layer["cycles"] for layer in d["layers"])
    assert t["latency_s"] == pytest.approx(t["cycles"] / r.clock_hz)
    assert t["peak_ram_bytes"] > 0 and t["flash_bytes"] > 0
    assert r.to_dataframe().shape[0] == len(d["layers"])


def test_same_model_slower_at_lower_clock_and_more_wait_states(models):
    """Identical core work; nRF52840 (64 MHz, 2 WS) takes longer than the L4R5 (120 MHz)."""
    m = models["kws_ref_model"]
    a = mcusim.run(m, device="stm32l4r5")
    b = mcusim.run(m, device="nrf52840")
    assert [x.compute_cycles for x in a.layers] == [x.compute_cycles for x in b.layers]
    assert b.latency_s > a.latency_s
    assert [np.array_equal(x, y) for x, y in zip(a.outputs, b.outputs, strict=True)] == [True]


def test_peak_ram_covers_largest_layer_io(models):
    """The arena holds, at least, the input and output of the biggest layer at once."""
    m = models["vww_96_int8"]
    g = m.graph
    r = mcusim.run(m, device="stm32l4r5")
    biggest = max(
        sum(g.tensors[n].nbytes for n in list(op.inputs[:1]) + op.outputs) for op in g.ops
    )
    assert r.peak_ram_bytes >= biggest
    # constants: the sum of every weight, bias and constant operand in the file
    assert r.flash_bytes == sum(t.nbytes for t in g.tensors.values() if t.is_const)


@pytest.mark.parametrize("name", ["kws_ref_model", "pretrainedResnet_quant"])
def test_qnn_runs_identically(tmp_path, models, name):
    src = models[name]
    p = tmp_path / f"{name}.qnn"
    qnn.save(src.graph, p)
    back = mcusim.load(p)
    a = mcusim.run(src, device="stm32l4r5", seed=4)
    b = mcusim.run(back, device="stm32l4r5", seed=4)
    for x, y in zip(a.outputs, b.outputs, strict=True):
        assert np.array_equal(x, y)
    da, db = a.to_dict(), b.to_dict()
    assert da["layers"] == db["layers"] and da["totals"] == db["totals"]


ALL_DEVICES = mcusim.bundled_devices()


@pytest.mark.parametrize("device", ALL_DEVICES)
def test_every_bundled_device_runs_every_model_bit_exact(models, device):
    """Outputs never depend on the core: every device's CPU gives the reference outputs."""
    dev = mcusim.load_device(device)
    for name, m in models.items():
        ref = mcusim.run(m, device="stm32l4r5", seed=2)
        r = mcusim.run(m, device=dev, seed=2, force="cpu")
        for x, y in zip(ref.outputs, r.outputs, strict=True):
            assert np.array_equal(x, y), f"{name} on {device}"
        assert all(layer.cycles > 0 and layer.energy_j > 0 for layer in r.layers), name
        assert all(layer.engine == f"cpu:{dev.core.name}" for layer in r.layers)
        assert r.peak_ram_bytes <= dev.memory_for("arena").size


NPU_DEVICES = [d for d in ALL_DEVICES if mcusim.load_device(d).npu]


@pytest.mark.parametrize("device", NPU_DEVICES)
def test_npu_runs(models, device):
    """Default placement on an NPU device: supported layers on the tile, the rest on the CPU
    with a reason; TFLite-exact tiles give the reference outputs, MAX78000 (power-of-two
    re-quantization) reports how far each re-quantized layer moved."""
    dev = mcusim.load_device(device)
    for name, m in models.items():
        try:
            r = mcusim.run(m, device=dev, seed=2)
        except mcusim.UserError as e:  # a model the tile cannot hold says so in one line
            assert "need" in str(e) and "have" in str(e), str(e)
            continue
        engines = {layer.engine for layer in r.layers}
        assert engines <= {f"cpu:{dev.core.name}", f"npu:{dev.npu['kind']}"}, engines
        for layer in r.layers:
            if layer.engine.startswith("cpu"):
                assert layer.placement_reason, (name, layer.name)
            if layer.macs:
                assert layer.cycles > 0 and layer.energy_j > 0, (name, layer.name)
        if dev.npu["kind"] == "max78000-cnn":
            if any(layer.engine.startswith("npu") and layer.macs for layer in r.layers):
                assert r.requant_report, name
        else:
            ref = mcusim.run(m, device="stm32l4r5", seed=2)
            for x, y in zip(ref.outputs, r.outputs, strict=True):
                assert np.array_equal(x, y), f"{name} on {device}"


def test_full_run_simulates_the_caches_once(monkeypatch):
    """A full run on a cached device checks the fit from the arena plan alone and simulates
    the caches once, on the observed data (not once more for an estimate first), with the
    same result as the estimate's costs on the data-independent layers."""
    import mcusim.cache as cache

    calls = []
    real = cache.simulate_model

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(cache, "simulate_model", counting)
    m = mcusim.load(model_path("kws_ref_model"))
    r = mcusim.run(m, device="stm32f746", seed=1)
    assert len(calls) == 1
    est = mcusim.run(mcusim.load(model_path("kws_ref_model")), device="stm32f746", mode="estimate")
    assert len(calls) == 2
    # the conv layers do not depend on the data: same cycles in both
    for a, b in zip(r.layers[:11], est.layers[:11], strict=True):
        assert a.cycles == b.cycles
