"""The generic NPU tile (devices/npu/generic.py) and the three devices that use it
(stm32n6 Neural-ART, gap9 NE16, mcxn947 eIQ Neutron): the roofline cost formula on layers
worked out by hand (compute-bound, memory-bound, channel padding, per-kernel rates), the
reasons supports() gives, labels on every parameter, and every op of every shared model
costed on each tile."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import numpy as np
import pytest

import mcusim
from mcusim.devices.loader import load_device
from mcusim.devices.npu.base import npu_tile
from mcusim.devices.npu.generic import LABELS, GenericPlan, GenericTile
from mcusim.dtypes import FLOAT32, INT8, INT32, Quant, elem_type
from mcusim.errors import DeviceError, FitError
from mcusim.graph import Graph, Op, Tensor
from mcusim.ops import (
    Conv2DAttrs,
    DepthwiseConv2DAttrs,
    FullyConnectedAttrs,
    NoAttrs,
    Pool2DAttrs,
    conv_output_size,
)

from conftest import SHARED_MODELS, model_path

DEVICES = ("stm32n6", "gap9", "mcxn947")


# ---- small graphs -----------------------------------------------------------------------
def _t(name, shape, dtype=INT8, data=None, n_q=1, axis=None):
    q = Quant(np.full(n_q, 0.05, np.float32), np.zeros(n_q, np.int64), axis)
    return Tensor(name, tuple(shape), dtype, q, data)


def conv(
    h,
    w,
    c_in,
    c_out,
    k,
    stride=1,
    padding="same",
    depthwise=False,
    mult=1,
    wtype=INT8,
    dilation=1,
    act_type=INT8,
):
    oh = conv_output_size(h, k, stride, dilation, padding)
    ow = conv_output_size(w, k, stride, dilation, padding)
    if depthwise:
        c_out = c_in * mult
        wshape = (1, k, k, c_out)
        attrs = DepthwiseConv2DAttrs((stride, stride), (dilation, dilation), padding, "none", mult)
        kind = "depthwise_conv2d"
    else:
        wshape = (c_out, k, k, c_in)
        attrs = Conv2DAttrs((stride, stride), (dilation, dilation), padding, "none")
        kind = "conv2d"
    data = np.ones(wshape, wtype.np_dtype)
    t = {
        "x": _t("x", (1, h, w, c_in), act_type),
        "w": _t("w", wshape, wtype, data, n_q=c_out, axis=3 if depthwise else 0),
        "b": _t("b", (c_out,), INT32, np.zeros(c_out, np.int32)),
        "y": _t("y", (1, oh, ow, c_out), act_type),
    }
    op = Op(kind, "layer", ["x", "w", "b"], ["y"], attrs)
    return Graph(t, [op], ["x"], ["y"]), op


def fc(n_in, n_out):
    t = {
        "x": _t("x", (1, n_in)),
        "w": _t("w", (n_out, n_in), data=np.ones((n_out, n_in), np.int8)),
        "b": _t("b", (n_out,), INT32, np.zeros(n_out, np.int32)),
        "y": _t("y", (1, n_out)),
    }
    op = Op("fully_connected", "fc", ["x", "w", "b"], ["y"], FullyConnectedAttrs())
    return Graph(t, [op], ["x"], ["y"]), op


def pool(h, w, c, k, kind="avg_pool2d"):
    oh, ow = h // k, w // k
    t = {"x": _t("x", (1, h, w, c)), "y": _t("y", (1, oh, ow, c))}
    op = Op(kind, "pool", ["x"], ["y"], Pool2DAttrs((k, k), (k, k), "valid"))
    return Graph(t, [op], ["x"], ["y"]), op


def unary(kind, shape):
    t = {"x": _t("x", shape), "y": _t("y", shape)}
    op = Op(kind, kind, ["x"], ["y"], NoAttrs())
    return Graph(t, [op], ["x"], ["y"]), op


# ---- a hand-made tile -------------------------------------------------------------------
def base_cfg(**over):
    cfg = {
        "kind": "generic",
        "name": "TestNPU",
        "clock_hz": 500_000_000,
        "activation_bits": [8],
        "macs_per_cycle": {"int8": 64},
        "setup_cycles": 10,
        "power_w": 0.1,
        "pj_per_mac": 0.5,
        "ops": {
            "conv2d": {"kernels": [[1, 1], [3, 3]], "strides": [1, 2], "max_channels": 256},
            "depthwise_conv2d": {"max_kernel": 5, "max_stride": 2, "depth_multiplier": [1]},
            "fully_connected": {},
            "avg_pool2d": {"elements_per_cycle": 8},
            "reshape": {"free": True},
        },
        "memory": [
            {
                "name": "ram",
                "holds": ["activations"],
                "size": 65536,
                "bytes_per_cycle": 16.0,
                "latency_cycles": 5,
                "read_pj_per_byte": 1.0,
                "write_pj_per_byte": 2.0,
            },
            {
                "name": "rom",
                "holds": ["weights"],
                "size": 1 << 20,
                "bytes_per_cycle": 1.0,
                "latency_cycles": 100,
                "read_pj_per_byte": 10.0,
            },
        ],
        "transfer": {"cpu_bytes_per_cycle": 4.0, "setup_cycles": 7},
        "labels": {
            "clock_hz": "published: test",
            "activation_bits": "published: test",
            "macs_per_cycle": "estimate: test",
            "setup_cycles": "estimate: test",
            "power_w": "measured: test",
            "pj_per_mac": "estimate: test",
            "ops": "published: test",
            "ops.avg_pool2d.elements_per_cycle": "estimate: test",
            "memory": "estimate: test",
            "transfer": "estimate: test",
        },
    }
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def host():
    return load_device("stm32n6")


def tile_of(host, cfg):
    return GenericTile(cfg, host, "test.toml")


def test_compute_bound_layer_by_hand(host):
    tile = tile_of(host, base_cfg())
    g, op = conv(8, 8, 64, 64, 1)
    c = tile.layer_cost(g, op, None)
    macs = 8 * 8 * 64 * 64  # 262,144
    assert c.compute_cycles == 10 + macs // 64 == 4106
    act_in, act_out, weights = 8 * 8 * 64, 8 * 8 * 64, 64 * 64 + 64 * 4
    ram = math.ceil((act_in + act_out) / 16) + 5  # 517
    rom = weights + 100  # 1 B/cycle: 4,452
    assert c.memory_cycles == max(ram, rom) == 4452
    assert c.cycles == max(4106, 4452) == 4452  # weight streaming from rom dominates
    assert c.traffic == {
        "ram": {"read": act_in, "write": act_out},
        "rom": {"read": weights, "write": 0},
    }
    # energy = power x time + pJ/MAC x MACs + per-byte energies
    e = 0.1 * 4452 / 500e6 + (0.5 * macs + act_in * 1.0 + act_out * 2.0 + weights * 10.0) * 1e-12
    assert c.energy_j == pytest.approx(e, rel=1e-12)
    assert c.estimate


def test_compute_bound_when_weights_are_fast(host):
    cfg = base_cfg()
    cfg["memory"][1]["bytes_per_cycle"] = 64.0
    tile = tile_of(host, cfg)
    g, op = conv(8, 8, 64, 64, 1)
    c = tile.layer_cost(g, op, None)
    assert c.memory_cycles == max(517, math.ceil(4352 / 64) + 100) == 517
    assert c.cycles == c.compute_cycles == 4106
    assert not any("memory-bound" in n for n in c.notes)


def test_memory_bound_fully_connected(host):
    tile = tile_of(host, base_cfg())
    g, op = fc(1024, 256)
    c = tile.layer_cost(g, op, None)
    assert c.compute_cycles == 10 + 1024 * 256 // 64 == 4106
    weights = 1024 * 256 + 256 * 4
    assert c.memory_cycles == weights + 100 == 263268
    assert c.cycles == 263268
    assert any("memory-bound on rom" in n for n in c.notes)


def test_channel_padding_to_the_array_granularity(host):
    cfg = base_cfg()
    cfg["ops"]["conv2d"]["granularity"] = {"in": 16, "out": 32}
    cfg["ops"]["conv2d"]["efficiency"] = 0.5
    cfg["labels"]["ops.conv2d.granularity"] = "estimate: test"
    cfg["labels"]["ops.conv2d.efficiency"] = "estimate: test"
    tile = tile_of(host, cfg)
    g, op = conv(4, 4, 3, 40, 1)
    macs, padded, rate = tile.padded_macs(g, op)
    assert macs == 4 * 4 * 3 * 40 == 1920
    assert padded == 4 * 4 * 16 * 64 == 16384  # 3 -> 16 inputs, 40 -> 64 outputs
    assert rate == 32.0
    assert tile.layer_cost(g, op, None).compute_cycles == 10 + 16384 // 32


def test_rate_labels_are_not_inherited_from_the_op_entry(host):
    cfg = base_cfg()
    cfg["ops"]["conv2d"]["efficiency"] = 0.5  # only "ops" is labelled
    with pytest.raises(DeviceError, match=r"ops\.conv2d\.efficiency"):
        tile_of(host, cfg)


def test_unlabelled_or_mislabelled_parameters_refused(host):
    cfg = base_cfg()
    del cfg["labels"]["power_w"]
    with pytest.raises(DeviceError, match=r"test\.toml: key 'npu\.labels'.*power_w"):
        tile_of(host, cfg)
    cfg = base_cfg()
    cfg["labels"]["power_w"] = "guess: from a forum"
    with pytest.raises(DeviceError, match="label must start with one of"):
        tile_of(host, cfg)
    cfg = base_cfg()
    cfg["ops"]["conv2d"]["kernel_size"] = 3
    with pytest.raises(DeviceError, match=r"ops\.conv2d.*unknown keys"):
        tile_of(host, cfg)
    cfg = base_cfg()
    cfg["ops"]["add"] = {}
    with pytest.raises(DeviceError, match="elements_per_cycle or free"):
        tile_of(host, cfg)


def test_pooling_and_free_ops(host):
    tile = tile_of(host, base_cfg())
    g, op = pool(8, 8, 16, 2)
    c = tile.layer_cost(g, op, None)
    assert c.compute_cycles == 10 + (4 * 4 * 16 * 4) // 8 == 138  # output x window taps
    assert c.memory_cycles == math.ceil((1024 + 256) / 16) + 5 == 85
    g, op = unary("reshape", (1, 64))
    op.kind = "reshape"
    c = tile.layer_cost(g, op, None)
    assert (c.cycles, c.traffic, c.energy_j, c.estimate) == (0, {}, 0.0, True)


def test_supports_reasons(host):
    tile = tile_of(host, base_cfg())
    cases = [
        (unary("softmax", (1, 10)), "op kind 'softmax' is not supported"),
        (conv(8, 8, 8, 8, 5), "kernel 5x5 not supported (kernels: 1x1, 3x3)"),
        (conv(9, 9, 8, 8, 3, stride=3), "stride 3x3 not supported"),
        (conv(8, 8, 8, 8, 3, dilation=2), "dilation 2x2 not supported"),
        (conv(8, 8, 8, 300, 1), "300 channels in 'y' exceed the tile's 256"),
        (conv(8, 8, 8, 8, 1, wtype=elem_type("int4")), "int4 weights are not supported"),
        (conv(8, 8, 8, 8, 1, act_type=FLOAT32), "the tile takes 8-bit integer activations"),
        (conv(8, 8, 8, 8, 7, depthwise=True), "kernel 7x7 exceeds the tile's 5x5"),
        (conv(8, 8, 8, 8, 3, depthwise=True, mult=2), "depth multiplier 2 not supported"),
        (conv(16, 16, 8, 8, 3, stride=4, depthwise=True), "stride 4x4 exceeds the tile's 2"),
    ]
    for (g, op), why in cases:
        s = tile.supports(g, op)
        assert not s.ok and s.reason.startswith("TestNPU: ") and why in s.reason, s.reason
    g, op = conv(8, 8, 8, 8, 3)
    assert tile.supports(g, op).ok
    op.attrs = Conv2DAttrs((1, 1), (1, 1), "same", "none", "thresholds")
    assert "threshold requantization" in tile.supports(g, op).reason
    with pytest.raises(FitError, match="not supported"):
        tile.layer_cost(*unary("softmax", (1, 10)), None)


def test_plan_names_resource_need_and_have(host):
    tile = tile_of(host, base_cfg())
    g, op = conv(64, 64, 16, 16, 1)  # 64 KB in + 64 KB out > 64 KB ram
    with pytest.raises(FitError) as e:
        tile.plan(g, [op])
    msg = str(e.value)
    assert "activations memory 'ram'" in msg and "needs 131072 B" in msg
    assert "has 65536 B" in msg and "layer" in msg
    cfg = base_cfg()
    cfg["memory"][1]["size"] = 1000
    g, op = fc(64, 64)
    with pytest.raises(FitError, match=r"weight memory 'rom': needs 4352 B .* has 1000 B"):
        tile_of(host, cfg).plan(g, [op])
    small = conv(8, 8, 8, 8, 1)
    plan = tile.plan(small[0], [small[1]])
    assert isinstance(plan, GenericPlan) and plan.homes["layer"] == {
        "activations": "ram",
        "weights": "rom",
    }


def test_second_activation_memory_takes_what_the_first_cannot_hold(host):
    cfg = base_cfg()
    cfg["memory"].append(
        {"name": "big", "holds": ["activations"], "size": 1 << 20, "bytes_per_cycle": 4.0}
    )
    tile = tile_of(host, cfg)
    g, op = conv(64, 64, 16, 16, 1)
    c = tile.layer_cost(g, op, tile.plan(g, [op]))
    assert "big" in c.traffic and "ram" not in c.traffic
    assert c.memory_cycles == math.ceil(2 * 65536 / 4.0)


def test_transfer_cycles(host):
    tile = tile_of(host, base_cfg())
    assert tile.transfer_cycles(0) == 0
    assert tile.transfer_cycles(1000) == 7 + 250
    assert npu_tile(load_device("gap9")).transfer_cycles(10_000) == 0  # NE16 shares L1/L2
    assert npu_tile(load_device("stm32n6")).transfer_cycles(1000) == 50 + 125


# ---- the three devices ------------------------------------------------------------------
@pytest.mark.parametrize("name", DEVICES)
def test_device_loads_with_a_labelled_generic_tile(name):
    d = load_device(name)
    tile = npu_tile(d)
    assert isinstance(tile, GenericTile) and d.npu["kind"] == "generic"
    rows = tile.parameter_table()
    assert len(rows) > 20
    for key, _value, label, source in rows:
        assert label in LABELS and source, key
    # the NPU memories that mirror device memories agree on size
    names = {m.name for m in d.memories}
    for m in tile.memories:
        if m.name in names and m.size:
            assert m.size == d.memory(m.name).size, m.name


def test_headline_figures():
    n6 = npu_tile(load_device("stm32n6"))
    # 288 MACs x 2 ops x 1 GHz = 576 GOPS, 4 % below ST's 600 GOPS headline
    gops = n6.macs_per_cycle["int8"] * 2 * n6.clock_hz / 1e9
    assert gops == 576 and (600 - gops) / 600 == pytest.approx(0.04)
    assert sum(m.size for m in n6.memories if m.name == "npu_ram") == 4 * 448 * 1024
    mcx = npu_tile(load_device("mcxn947"))
    assert mcx.macs_per_cycle["int8"] * 2 * mcx.clock_hz == 4.8e9  # NXP: 4.8 GOPS
    ne16 = npu_tile(load_device("gap9"))
    # NE16 3x3 mode: 9 pixels x 16 input channels x 9 taps per 8 cycles (bit-serial weights)
    assert ne16.macs_per_cycle == {
        "int8": 9 * 16 * 9 / 8,
        "int4": 9 * 16 * 9 / 4,
        "int2": 9 * 16 * 9 / 2,
    }


def test_mcxn947_cpu_side():
    d = load_device("mcxn947")
    assert (d.core.name, d.core.isa, d.core.clock_hz) == ("cortex-m33", "armv8m-dsp", 150e6)
    assert d.memory_for("arena").name == "sram" and d.memory("sram").size == 416 * 1024
    assert d.memory_for("constants").name == "flash" and d.memory("flash").size == 2 << 20
    assert d.memory("flash").wait_states == 3
    assert d.power.active_power_w(d.core.clock_hz) == pytest.approx(75e-6 * 150 * 1.8)


def test_ne16_rates_by_kernel_by_hand():
    tile = npu_tile(load_device("gap9"))
    # 3x3: 16x16x64 -> 64, outputs padded 16 -> 18 (3x3 pixel tile), 162 x 0.81 MACs/cycle
    g, op = conv(16, 16, 64, 64, 3)
    macs, padded, rate = tile.padded_macs(g, op)
    assert macs == 16 * 16 * 64 * 9 * 64
    assert padded == 18 * 18 * 64 * 9 * 64
    assert rate == pytest.approx(162 * 0.81)
    assert tile.layer_cost(g, op, None).compute_cycles == 200 + math.ceil(padded / (162 * 0.81))
    # 1x1 mode: 144 MACs/cycle peak (weight bits in parallel) x 0.41
    g, op = conv(15, 15, 64, 64, 1)
    assert tile.padded_macs(g, op)[2] == pytest.approx(144 * 0.41)
    # depthwise 3x3: only the 16-channel diagonal, 10.125 MACs/cycle x 0.56
    g, op = conv(12, 12, 40, 40, 3, depthwise=True)
    macs, padded, rate = tile.padded_macs(g, op)
    assert padded == 12 * 12 * 48 * 9 and rate == pytest.approx(10.125 * 0.56)
    # 4-bit weights: bit-serial 3x3 mode doubles the rate; 1x1 mode does not change
    g, op = conv(15, 15, 64, 64, 3, wtype=elem_type("int4"))
    assert tile.padded_macs(g, op)[2] == pytest.approx(324 * 0.81)
    g, op = conv(15, 15, 64, 64, 1, wtype=elem_type("int4"))
    assert tile.padded_macs(g, op)[2] == pytest.approx(144 * 0.41)
    # NE16 data: L2 through the cluster DMA (16 B/cycle) and the L1 port (32 B/cycle)
    c = tile.layer_cost(g, op, None)
    assert set(c.traffic) == {"l2", "l1"} and c.traffic["l2"] == c.traffic["l1"]


def test_device_specific_refusals():
    n6 = npu_tile(load_device("stm32n6"))
    g, op = conv(8, 8, 8, 8, 3, wtype=elem_type("int4"))
    assert "int4 weights are not supported" in n6.supports(g, op).reason
    g, op = conv(64, 64, 8, 8, 3, stride=8)
    assert "exceeds the tile's 7" in n6.supports(g, op).reason
    assert "'softmax' is not supported" in n6.supports(*unary("softmax", (1, 10))).reason
    ne16 = npu_tile(load_device("gap9"))
    g, op = conv(49, 10, 1, 64, 5)
    assert "kernel 5x5 not supported (kernels: 1x1, 3x3)" in ne16.supports(g, op).reason
    mcx = npu_tile(load_device("mcxn947"))
    assert mcx.supports(*unary("softmax", (1, 10))).ok


# ---- every shared model's ops on every tile ------------------------------------------------
@pytest.fixture(scope="module")
def shared():
    return {n: mcusim.load(model_path(n)).graph for n in SHARED_MODELS}


@pytest.mark.parametrize("name", DEVICES)
def test_every_shared_model_costed_on_each_tile(shared, name):
    tile = npu_tile(load_device(name))
    supported_total = 0
    for mname, g in shared.items():
        ops = [op for op in g.ops if tile.supports(g, op).ok]
        plan = tile.plan(g, ops)
        for op in g.ops:
            s = tile.supports(g, op)
            if not s.ok:
                assert s.reason.startswith(tile.name + ": ") and len(s.reason) > 20
                continue
            c = tile.layer_cost(g, op, plan)
            assert c.estimate and c.notes[0].startswith("estimate:"), (mname, op.name)
            assert c.cycles == max(c.compute_cycles, c.memory_cycles), (mname, op.name)
            if tile.ops[op.kind].get("free"):
                assert c.cycles == 0
                continue
            assert c.compute_cycles > tile.setup_cycles and c.energy_j > 0
            act, const, out = tile._working_set(g, op)
            reads = sum(t["read"] for n, t in c.traffic.items() if n != "l1")
            writes = sum(t["write"] for n, t in c.traffic.items() if n != "l1")
            assert (reads, writes) == (act + const, out), (mname, op.name)
            assert c == tile.layer_cost(g, op, None)  # the plan only records the homes
            if op.kind in ("conv2d", "depthwise_conv2d", "fully_connected"):
                macs, padded, rate = tile.padded_macs(g, op)
                assert padded >= macs > 0
                assert c.compute_cycles == tile.setup_cycles + math.ceil(padded / rate)
        supported_total += sum(
            1 for op in ops if op.kind in ("conv2d", "depthwise_conv2d", "fully_connected")
        )
    assert supported_total >= 40  # the MAC layers of the six models run on every tile


def test_tiles_are_faster_than_their_cpus_on_kws(shared):
    """Sanity of the labelled numbers: the NPU's cycles for KWS's convolutions are far
    fewer than the MACs (each tile does many MACs per cycle)."""
    g = shared["kws_ref_model"]
    for name in DEVICES:
        tile = npu_tile(load_device(name))
        macs = cycles = 0
        for op in g.ops:
            if op.kind == "conv2d" and tile.supports(g, op).ok:
                macs += tile.padded_macs(g, op)[0]
                cycles += tile.layer_cost(g, op, None).cycles
        assert macs > 1_000_000 and cycles < macs / 4, name


def test_config_is_not_mutated(host):
    cfg = base_cfg()
    before = copy.deepcopy(cfg)
    tile = tile_of(host, cfg)
    tile.layer_cost(*conv(8, 8, 8, 8, 3), None)
    assert cfg == before


# ---- docs/npu-generic.md lists every parameter with the file's value and label -----------
DOC = Path(__file__).resolve().parents[1] / "docs" / "npu-generic.md"


def _doc_value(v) -> str:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10000:
        return f"{v:_}"
    return str(v)


@pytest.mark.parametrize("name", DEVICES)
def test_doc_tables_match_device_files(name):
    text = DOC.read_text(encoding="utf-8")
    section = text.split(f"### `{name}`", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    rows = {}
    for ln in section.splitlines():
        m = re.match(r"^\| `([^`]+)` \| (.*?) \| (\w+) \| (.*) \|$", ln)
        if m:
            rows[m.group(1)] = (m.group(2), m.group(3), m.group(4))
    tile = npu_tile(load_device(name))
    table = tile.parameter_table()
    assert set(rows) == {k for k, *_ in table}
    for key, value, label, source in table:
        assert rows[key][0] == _doc_value(value), key
        assert rows[key][1] == label, key
        assert rows[key][2] == source, key
