"""Ethos-U55 tile: hand-worked Vela-model arithmetic, weight-compression estimate, device files,
supported-operator rules, and the peer comparison against Vela (ethos-u-vela) on the shared
models (skipped with a message when ethos-u-vela or ../shared/models is absent)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from mcusim.devices.loader import load_device
from mcusim.devices.npu import npu_tile
from mcusim.devices.npu.ethos_u55 import (
    AxiMemory,
    BlockConfig,
    EthosU55Tile,
    NpuQuery,
    encoded_weight_bytes,
    find_block_config,
    npu_cycles,
    u55_arch,
)
from mcusim.errors import DeviceError

ROOT = Path(__file__).resolve().parents[1]
MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
HAVE_VELA = importlib.util.find_spec("ethosu") is not None
SRAM = AxiMemory("sram", 8.0, 32, 32, 32)
FLASH = AxiMemory("flash", 1.0, 64, 0, 128)


def _models():
    if not MODELS.is_dir():
        return []
    return sorted(MODELS.glob("*.tflite"))


needs_models = pytest.mark.skipif(not MODELS.is_dir(), reason="../shared/models is absent")
needs_vela = pytest.mark.skipif(
    not HAVE_VELA, reason="ethos-u-vela is not installed (pip install ethos-u-vela)"
)


def test_worked_example_conv_1x1_u55_128():
    """KWS 1x1 conv, OFM 25x5x64, IFM C 64, U55-128 (ethos-u55.md section 2.1): block 9x6x32
    (clipped to 9x5x32), DepthFirst, Acc32, ReLU. dpu 864 per block, ao 0.5 x 1440 = 720;
    Vela 5.2 counts 25*5*64 / (9*5*32) = 5.56 blocks -> 864 * 5.56 + 720 = 5520 MAC-pipeline
    cycles, plus the pipeline fill/drain (first 9x5x32 IFM block read: 32 + 1440/8 = 212, last
    OFM block write: 212) = 5944, the NPU cycles Vela 5.2 reports for this layer."""
    a = u55_arch(128)
    q = NpuQuery(
        "conv",
        "conv",
        (25, 5, 64),
        (25, 5, 64),
        activation="relu",
        ifm_brick=True,
        ofm_brick=True,
        weight_bytes=4096,
        scale_bytes=640,
    )
    cfg = find_block_config(a, q)
    assert cfg == BlockConfig((9, 6, 32), (9, 6, 32), "DepthFirst")
    parts: dict = {}
    cycles, macs = npu_cycles(a, q, cfg, SRAM, FLASH, parts)
    assert (parts["dpu_blk"], parts["out_blk"], parts["minmem"]) == (864, 720, 424)
    assert cycles == int(864 * 25 * 5 * 64 / (9 * 5 * 32) + 720) + 424 == 5944
    assert macs == 25 * 5 * 64 * 64


def test_elementwise_add_cycles_per_element():
    """ADD costs 1.5 cycles/element on U55-128 and 0.75 on U55-256 (out_cpe[5])."""
    for macs, cpe in ((128, 1.5), (256, 0.75)):
        a = u55_arch(macs)
        q = NpuQuery(
            "elementwise", "add", (16, 16, 64), (16, 16, 64), ifm2=(16, 16, 64), activation="relu"
        )
        cfg = find_block_config(a, q)
        assert npu_cycles(a, q, cfg, SRAM, FLASH)[0] == int(cpe * 16 * 16 * 64)


def test_block_config_fits_shram_and_prefers_big_blocks():
    a = u55_arch(128)
    q = NpuQuery("conv", "conv", (24, 24, 32), (24, 24, 32), activation="relu")
    cfg = find_block_config(a, q)
    # Vela 5.2 --verbose-schedule picks OFM block 8x8x32, IFM block 8x8x32 DepthFirst here
    assert cfg.ofm == (8, 8, 32) and cfg.ifm == (8, 8, 32) and cfg.traversal == "DepthFirst"


def test_mac_configs_scale_compute():
    q = NpuQuery("conv", "conv", (24, 24, 64), (24, 24, 64), kernel=(3, 3), activation="relu")
    cyc = {}
    for macs in (32, 64, 128, 256):
        a = u55_arch(macs)
        cyc[macs] = npu_cycles(a, q, find_block_config(a, q), SRAM, FLASH)[0]
    assert cyc[32] > cyc[64] > cyc[128] > cyc[256]
    macs_total = 24 * 24 * 64 * 64 * 9
    assert cyc[256] >= macs_total / 256  # never faster than the MAC array


def test_weight_compression_zero_runs():
    rng = np.random.default_rng(0)
    dense = rng.integers(-127, 128, 4096)
    sparse = np.where(rng.random(4096) < 0.95, 0, dense)
    assert encoded_weight_bytes(sparse) < 0.25 * encoded_weight_bytes(dense)
    assert 3500 < encoded_weight_bytes(dense) < 4700  # ~8-9 bits per uniform int8 weight


@needs_vela
@needs_models
def test_weight_compression_against_vela_encoder():
    from ethosu import mlw_codec

    from mcusim.importers.tflite import load_tflite

    for name in ("ad01_int8", "vww_96_int8", "pretrainedResnet_quant"):
        g = load_tflite(MODELS / f"{name}.tflite")
        for op in g.ops:
            if op.kind in ("conv2d", "depthwise_conv2d", "fully_connected"):
                w = g.tensors[op.inputs[1]].data.reshape(-1)
                ref = len(mlw_codec.encode(w.astype(int).tolist()))
                if ref >= 256:
                    assert 0.75 < encoded_weight_bytes(w) / ref < 1.1, (name, op.name)


@needs_vela
@needs_models
@pytest.mark.parametrize("macs", [128, 256])
def test_weight_streams_against_vela_reorder_encode(macs):
    """Encoded conv/FC weight streams (zero-padded to micro-blocks, in MAC-array order) vs
    Vela's encoder on the same weights and block depth: every op >= 256 B within -20/+5 %,
    the whole set of shared models within 10 %."""
    from ethosu import mlw_codec

    from mcusim.devices.npu.ethos_u55 import op_queries
    from mcusim.importers.tflite import load_tflite

    a = u55_arch(macs)
    ours = ref_total = 0
    for model in _models():
        g = load_tflite(model)
        for op in g.ops:
            if op.kind not in ("conv2d", "fully_connected"):
                continue
            q = op_queries(a, g, op)[0]
            cfg = find_block_config(a, q)
            w = g.tensors[op.inputs[1]].data
            vol = w.reshape(w.shape[0], 1, 1, w.shape[1]) if w.ndim == 2 else w
            vol = np.ascontiguousarray(vol.astype(np.int16))
            part = cfg.traversal == "PartKernel"
            enc = mlw_codec.reorder_encode(
                a.ifm_ublock[2], a.ofm_ublock[2], vol, cfg.ofm[2], False, part, 8, 8, 8
            )
            ref = len(enc[0])
            if ref >= 256:
                assert 0.8 <= q.weight_bytes / ref <= 1.05, (model.name, op.name, ref)
            ours += q.weight_bytes
            ref_total += ref
    assert abs(ours / ref_total - 1) < 0.10


@pytest.mark.parametrize(
    "name,macs",
    [
        ("corstone300-u55-128", 128),
        ("corstone300-u55-256", 256),
        ("alif-e3", 256),
        ("alif-e3-he", 128),
        ("hx6538-we2", 64),
    ],
)
def test_device_files(name, macs):
    dev = load_device(name)
    tile = npu_tile(dev)
    assert isinstance(tile, EthosU55Tile)
    assert tile.arch.macs == macs
    assert tile.fm.name in {m.name for m in dev.memories}


def test_bad_macs_is_a_device_error():
    dev = load_device("corstone300-u55-128")
    with pytest.raises(DeviceError, match="macs"):
        EthosU55Tile({**dev.npu, "macs": 100}, dev)


@needs_models
def test_standalone_layer_cost_every_op():
    from mcusim.importers.tflite import load_tflite

    dev = load_device("corstone300-u55-128")
    tile = EthosU55Tile(dev.npu, dev)
    for model in _models():
        g = load_tflite(model)
        for op in g.ops:
            assert tile.supports(g, op).ok, (model.name, op.name, tile.supports(g, op).reason)
            cost = tile.layer_cost(g, op, None)
            if op.kind in ("reshape", "squeeze"):
                assert cost.cycles == 0
            else:
                bound = max(cost.compute_cycles, cost.memory_cycles)
                if op.kind == "softmax":  # 28 commands, each max(compute, memory)
                    assert bound <= cost.cycles <= cost.compute_cycles + cost.memory_cycles
                else:
                    assert cost.cycles == bound > 0
                assert cost.traffic["sram"]["write"] > 0
        assert tile.compute_kernel(g, g.ops[0]) is None


@needs_models
def test_supports_reasons():
    from dataclasses import replace

    from mcusim.importers.tflite import load_tflite

    g = load_tflite(MODELS / "vww_96_int8.tflite")
    dev = load_device("corstone300-u55-256")
    tile = npu_tile(dev)
    conv = next(op for op in g.ops if op.kind == "conv2d" and op.attrs.stride == (2, 2))
    bad = replace(conv, attrs=replace(conv.attrs, stride=(4, 4)))
    s = tile.supports(g, bad)
    assert not s.ok and "stride" in s.reason
    s = tile.supports(g, replace(conv, precision="W4A8"))
    assert not s.ok and "W4A8" in s.reason


# -- peer comparison against Vela -----------------------------------------------------------

sys.path.insert(0, str(ROOT / "bench"))


@needs_vela
@needs_models
@pytest.mark.parametrize("macs", [128, 256])
@pytest.mark.parametrize("model", [m.stem for m in _models()])
def test_vela_network_total_within_10_percent(model, macs):
    from bench_vela import compare

    vela, ours, layers = compare(MODELS / f"{model}.tflite", macs)
    assert abs(ours / vela - 1) <= 0.10, (vela, ours)


@needs_vela
@needs_models
@pytest.mark.parametrize("macs", [128, 256])
@pytest.mark.parametrize("model", [m.stem for m in _models()])
def test_vela_per_layer_within_25_percent(model, macs):
    from bench_vela import compare

    vela, ours, layers = compare(MODELS / f"{model}.tflite", macs)
    assert len(layers) >= 3
    for name, v, o in layers:
        if v:
            assert abs(o / v - 1) <= 0.25, (name, v, o)


@needs_vela
@needs_models
@pytest.mark.parametrize("macs", [128, 256])
@pytest.mark.parametrize("model", [m.stem for m in _models()])
def test_block_configs_match_vela(model, macs):
    """Our SHRAM block search picks the OFM block and traversal Vela's debug database reports,
    for every single-command layer."""
    from bench_vela import run_vela, tile_for, vela_block_configs

    from mcusim.devices.npu.ethos_u55 import op_queries
    from mcusim.importers.tflite import load_tflite

    g = load_tflite(MODELS / f"{model}.tflite")
    tile = tile_for(macs)
    vela = vela_block_configs(g, run_vela(MODELS / f"{model}.tflite", macs))
    assert vela
    for op in g.ops:
        if op.name in vela:
            cfg = find_block_config(tile.arch, op_queries(tile.arch, g, op)[0])
            assert (*cfg.ofm, cfg.traversal) == vela[op.name], op.name


@needs_vela
@needs_models
@pytest.mark.parametrize("macs", [128, 256])
def test_npu_cycles_match_vela_per_command(macs):
    """NPU (compute) cycles of every single-command layer vs Vela's NPU column: within 15 %,
    RMS error under 5 %."""
    from bench_vela import run_vela, tile_for

    from mcusim.importers.tflite import load_tflite

    tile = tile_for(macs)
    errs = []
    for model in _models():
        g = load_tflite(model)
        plan = tile.plan(g, g.ops)
        by_out = {o: op for op in g.ops for o in op.outputs}
        for r in run_vela(model, macs).rows:
            op = by_out.get(r["Name"].strip())
            if op is None or op.kind == "softmax" or r["NNG Operator"] in ("Relu", "LUT"):
                continue
            ratio = plan.costs[op.name].compute_cycles / int(r["NPU"])
            assert 0.85 <= ratio <= 1.15, (model.name, op.name, ratio)
            errs.append(ratio - 1)
    assert len(errs) > 50
    assert float(np.sqrt(np.mean(np.square(errs)))) < 0.05
