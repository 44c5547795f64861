"""Heterogeneous placement (mcusim/placement.py, docs/placement.md): decisions and reasons,
user overrides, transfers at engine changes, cost conventions, CLI; with a fake tile
registered here, and on the real tiles when they exist."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import mcusim
from mcusim.cli import main
from mcusim.devices.npu import NpuLayerCost, NpuSupport, NpuTile, register_tile
from mcusim.dtypes import INT8, INT32, Quant
from mcusim.errors import FitError, UserError
from mcusim.graph import Graph, Op, Tensor
from mcusim.model import Model
from mcusim.ops import Conv2DAttrs, FullyConnectedAttrs, ReshapeAttrs
from mcusim.placement import Placement, find_transfers, match_layers, place
from mcusim.runner import compute_outputs
from mcusim.stats import op_macs

from conftest import REPO, model_path

NPU_CLOCK = 50e6
CPU_CLOCK = 120e6  # stm32l4r5 (devices/stm32l4r5.toml)


# -- the fake tile ---------------------------------------------------------------------------
def _offset_compute(params, inputs):
    """The reference conv2d output plus one (saturating): visibly not TFLite arithmetic."""
    from mcusim.kernels.registry import kernel_for

    (y,) = kernel_for("conv2d").compute(params, inputs)
    return [np.clip(y.astype(np.int16) + 1, -128, 127).astype(np.int8)]


class FakeTile(NpuTile):
    """Runs conv2d with an even number of output channels and 8-bit weights only."""

    kind = "fake-even"

    def supports(self, graph, op):
        if op.kind != "conv2d":
            return NpuSupport(False, f"{op.kind} is not a conv2d")
        w = graph.tensors[op.inputs[1]]
        if w.dtype.bits != 8:
            return NpuSupport(False, f"weights are {w.dtype}, the tile runs 8-bit weights")
        c = graph.tensors[op.outputs[0]].shape[-1]
        if c % 2:
            return NpuSupport(False, f"{c} output channels: the tile needs an even number")
        return NpuSupport(True)

    def plan(self, graph, ops):
        have = int(self.config.get("max_layers", 32))
        if len(ops) > have:
            raise FitError(f"{self.kind} tile: layers: need {len(ops)}, have {have}")
        return {"layers": [op.name for op in ops]}

    def layer_cost(self, graph, op, plan):
        macs = op_macs(graph, op)
        assert op.name in plan["layers"]
        return NpuLayerCost(
            cycles=macs // 16 + 100,
            compute_cycles=macs // 16,
            memory_cycles=100,
            traffic={"npu_sram": {"read": 64, "write": 32}},
            energy_j=1e-9 * (macs // 16 + 100) + 0.002 * (macs // 16 + 100) / self.clock_hz,
            notes=["fake"],
            estimate=True,
        )

    def transfer_cycles(self, nbytes):
        return 20 + nbytes // 4

    def one_time_costs(self, graph, ops, plan):
        return {"weight_load_cycles": 10 * len(ops)}

    def compute_kernel(self, graph, op):
        if not self.config.get("offset_kernel"):
            return None
        from mcusim.kernels.registry import KernelDef, kernel_for

        return KernelDef("conv2d", kernel_for("conv2d").prepare, _offset_compute)


register_tile("fake-even", f"{__name__}:FakeTile")


def _transfer(n: int) -> int:
    return 20 + n // 4


@pytest.fixture(scope="module")
def dev_path(tmp_path_factory) -> Path:
    return _device(tmp_path_factory.mktemp("dev"), "fake", "")


def _device(d: Path, name: str, extra: str) -> Path:
    src = (REPO / "devices" / "stm32l4r5.toml").read_text()
    src = src.replace('name = "stm32l4r5"', f'name = "{name}"', 1)
    p = d / f"{name}.toml"
    p.write_text(src + f'\n[npu]\nkind = "fake-even"\nclock_hz = {NPU_CLOCK:.0f}\n{extra}\n')
    return p


# -- a small graph: conv1 (8 ch) -> conv2 (5 ch) -> conv3 (6 ch) -> reshape -> fc ----------
def _q(scale, zp=0, axis=None) -> Quant:
    return Quant(np.asarray(scale, np.float32), np.asarray(zp, np.int64), axis)


def build_graph(seed: int = 0) -> Graph:
    rng = np.random.default_rng(seed)
    t: dict[str, Tensor] = {}
    ops: list[Op] = []

    def act(name, shape, scale, zp):
        t[name] = Tensor(name, shape, INT8, _q(scale, zp))

    def conv(name, x, cin, cout, k, sx, y, sy, zy):
        shape = (cout, k, k, cin)
        sw = rng.uniform(0.002, 0.01, cout)
        t[f"{name}_w"] = Tensor(
            f"{name}_w",
            shape,
            INT8,
            _q(sw, np.zeros(cout), 0),
            rng.integers(-127, 128, size=shape).astype(np.int8),
        )
        t[f"{name}_b"] = Tensor(
            f"{name}_b",
            (cout,),
            INT32,
            _q(sx * sw, np.zeros(cout), 0),
            rng.integers(-2000, 2000, size=cout).astype(np.int32),
        )
        act(y, (1, 8, 8, cout), sy, zy)
        ops.append(
            Op(
                "conv2d",
                name,
                [x, f"{name}_w", f"{name}_b"],
                [y],
                Conv2DAttrs(padding="same", activation="relu"),
            )
        )

    act("x", (1, 8, 8, 3), 0.02, -5)
    conv("conv1", "x", 3, 8, 3, 0.02, "c1", 0.03, -128)
    conv("conv2", "c1", 8, 5, 1, 0.03, "c2", 0.05, -128)
    conv("conv3", "c2", 5, 6, 1, 0.05, "c3", 0.04, -128)
    act("r", (1, 384), 0.04, -128)
    ops.append(Op("reshape", "flatten", ["c3"], ["r"], ReshapeAttrs((1, 384))))
    sw = rng.uniform(0.002, 0.01, 4)
    t["w4"] = Tensor(
        "w4",
        (4, 384),
        INT8,
        _q(sw, np.zeros(4), 0),
        rng.integers(-127, 128, size=(4, 384)).astype(np.int8),
    )
    t["b4"] = Tensor("b4", (4,), INT32, _q(0.04 * sw, np.zeros(4), 0), np.zeros(4, np.int32))
    act("y", (1, 4), 0.3, 2)
    ops.append(Op("fully_connected", "fc4", ["r", "w4", "b4"], ["y"], FullyConnectedAttrs()))
    return Graph(t, ops, ["x"], ["y"], name="tiny").validate()


@pytest.fixture(scope="module")
def model() -> Model:
    return Model(build_graph())


@pytest.fixture(scope="module")
def qnn_path(tmp_path_factory, model) -> Path:
    from mcusim import qnn

    p = tmp_path_factory.mktemp("m") / "tiny.qnn"
    qnn.save(model.graph, p)
    return p


# -- placement decisions -----------------------------------------------------------------------
def test_auto_placement_and_reasons(model, dev_path):
    dev = mcusim.load_device(dev_path)
    pl = place(model.graph, dev.core.name, FakeTile({}, dev))
    assert pl.engines == (
        "npu:fake-even",
        "cpu:cortex-m4",
        "npu:fake-even",
        "cpu:cortex-m4",
        "cpu:cortex-m4",
    )
    assert pl.reasons[0] == pl.reasons[2] == ""
    assert pl.reasons[1] == "5 output channels: the tile needs an even number"
    assert pl.reasons[3] == "reshape is not a conv2d"
    assert pl.reasons[4] == "fully_connected is not a conv2d"


def test_run_records_engines_reasons(model, dev_path):
    r = mcusim.run(model, dev_path)
    assert [x.engine for x in r.layers] == [
        "npu:fake-even",
        "cpu:cortex-m4",
        "npu:fake-even",
        "cpu:cortex-m4",
        "cpu:cortex-m4",
    ]
    assert r.layers[1].placement_reason.startswith("5 output channels")
    assert r.layers[0].placement_reason == ""
    assert r.npu["kind"] == "fake-even" and r.npu["layers"] == 2
    assert r.npu["one_time"] == {"weight_load_cycles": 20}
    # the tile's arithmetic is TFLite's here (compute_kernel None): outputs equal CPU-only
    ref = compute_outputs(model, [np.asarray(x) for x in _inputs(model)])
    r2 = mcusim.run(model, dev_path, inputs=_inputs(model))
    np.testing.assert_array_equal(r2.outputs[0], ref["y"])


def _inputs(model):
    from mcusim.inputs import random_inputs

    return random_inputs(model.graph, 0)


def test_selectors():
    g = build_graph()
    assert match_layers(g, "conv2") == [1]
    assert match_layers(g, "-1") == [4]
    assert match_layers(g, "conv*") == [0, 1, 2]
    with pytest.raises(UserError, match="matches no layer"):
        match_layers(g, "nope*")
    with pytest.raises(UserError, match="out of range"):
        match_layers(g, "9")


def test_place_and_force_overrides(model, dev_path):
    r = mcusim.run(model, dev_path, place={"conv1": "cpu"})
    assert r.layers[0].engine == "cpu:cortex-m4"
    assert r.layers[0].placement_reason == "placed on the CPU by --place conv1=cpu"
    assert r.layers[2].engine == "npu:fake-even"
    r = mcusim.run(model, dev_path, force="cpu")
    assert {x.engine for x in r.layers} == {"cpu:cortex-m4"}
    assert r.layers[0].placement_reason == "placed on the CPU by --force-cpu"
    assert not r.npu and all(x.transfer_bytes == 0 for x in r.layers)
    # a per-layer --place beats --force
    r = mcusim.run(model, dev_path, force="cpu", place={"conv3": "npu"})
    assert [x.engine.split(":")[0] for x in r.layers] == ["cpu", "cpu", "npu", "cpu", "cpu"]


def test_impossible_forcing_names_layer_and_reason(model, dev_path):
    with pytest.raises(UserError, match=r"conv2 \(conv2d\).*--place conv2=npu.*5 output"):
        mcusim.run(model, dev_path, place={"conv2": "npu"})
    with pytest.raises(UserError, match=r"conv2 \(conv2d\).*--force-npu.*5 output channels"):
        mcusim.run(model, dev_path, force="npu")
    with pytest.raises(UserError, match="no NPU"):
        mcusim.run(model, "stm32l4r5", place={"conv1": "npu"})
    with pytest.raises(UserError, match="force="):
        mcusim.run(model, dev_path, force="gpu")
    with pytest.raises(UserError, match="cpu or npu"):
        mcusim.run(model, dev_path, place={"conv1": "dsp"})


def test_precision_override_moves_int4_layer_to_cpu(model, dev_path):
    r = mcusim.run(model, dev_path, precision={"conv3": "W4A8"})
    assert r.layers[2].engine == "cpu:cortex-m4"
    assert r.layers[2].precision == "W4A8"
    assert r.layers[2].placement_reason == "weights are int4, the tile runs 8-bit weights"
    assert r.layers[0].engine == "npu:fake-even" and r.layers[0].precision == "W8A8"
    rep = {x["layer"]: x for x in r.precision_report}
    assert rep["conv3"]["precision"] == "W4A8" and rep["conv1"]["sqnr_db"] == math.inf


# -- transfers -------------------------------------------------------------------------------
def test_transfers_exactly_at_engine_changes(model, dev_path):
    dev = mcusim.load_device(dev_path)
    pl = place(model.graph, dev.core.name, FakeTile({}, dev))
    got = [(t.tensor, t.nbytes, t.src, t.dst, t.layer) for t in find_transfers(model.graph, pl)]
    assert got == [
        ("x", 8 * 8 * 3, "cpu", "npu", 0),  # input loaded into NPU memory
        ("c1", 8 * 8 * 8, "npu", "cpu", 1),
        ("c2", 8 * 8 * 5, "cpu", "npu", 2),
        ("c3", 8 * 8 * 6, "npu", "cpu", 3),
    ]
    r = mcusim.run(model, dev_path)
    assert [x.transfer_bytes for x in r.layers] == [192, 512, 320, 384, 0]
    assert [x.transfer_cycles for x in r.layers] == [
        _transfer(192),
        _transfer(512),
        _transfer(320),
        _transfer(384),
        0,
    ]


def test_output_left_on_npu_is_copied_back_by_its_producer():
    g = build_graph()
    g.ops = g.ops[:1]
    g.outputs = ["c1"]
    pl = Placement(("npu:fake-even",), ("",), "npu:fake-even", "cpu:cortex-m4")
    got = [(t.tensor, t.nbytes, t.src, t.dst, t.layer) for t in find_transfers(g, pl)]
    assert got == [("x", 192, "cpu", "npu", 0), ("c1", 512, "npu", "cpu", 0)]


def test_tensor_read_twice_on_the_other_side_is_copied_once():
    g = build_graph()
    pl = Placement(("npu:t", "cpu:c", "cpu:c", "cpu:c", "cpu:c"), ("",) * 5, "npu:t", "cpu:c")
    g.ops[2].inputs[0] = "c1"  # conv3 reads c1 too (shapes do not matter for transfers)
    got = [(t.tensor, t.layer) for t in find_transfers(g, pl)]
    assert got == [("x", 0), ("c1", 1)]


# -- costs -----------------------------------------------------------------------------------
def test_costs_follow_the_documented_conventions(model, dev_path):
    r = mcusim.run(model, dev_path)
    cpu_only = mcusim.run(model, dev_path, force="cpu")
    dev = mcusim.load_device(dev_path)
    p_active = dev.power.active_power_w(CPU_CLOCK)
    sram = dev.memory_for("arena")
    for i in (0, 2):  # NPU layers: tile cycles in the NPU clock
        rec = r.layers[i]
        macs = op_macs(model.graph, model.graph.ops[i])
        assert rec.cycles == macs // 16 + 100 and rec.clock_hz == NPU_CLOCK
        assert rec.compute_cycles == macs // 16 and rec.stall_cycles == 100
        xfer = rec.transfer_cycles
        assert rec.latency_s == pytest.approx(rec.cycles / NPU_CLOCK + xfer / CPU_CLOCK)
        wait = 0.002 * rec.cycles / NPU_CLOCK  # the tile's energy includes the CPU waiting
        assert rec.npu_energy_j == pytest.approx(1e-9 * rec.cycles + wait)
        xfer_j = p_active * xfer / CPU_CLOCK + rec.transfer_bytes * sram.read_pj_per_byte * 1e-12
        assert rec.energy_j == pytest.approx(1e-9 * rec.cycles + wait + xfer_j)
        assert rec.traffic["npu_sram"] == {"read": 64, "write": 32}
        assert rec.traffic[sram.name]["read"] == rec.transfer_bytes  # copied out of SRAM
        assert rec.estimate and rec.kernel == "fake-even (estimate)"
    for i in (1, 3, 4):  # CPU layers: the core's timing, unchanged by the placement
        rec, ref = r.layers[i], cpu_only.layers[i]
        assert rec.clock_hz == CPU_CLOCK
        assert rec.compute_cycles == ref.compute_cycles and rec.kernel == ref.kernel
        assert rec.latency_s == pytest.approx((rec.cycles + rec.transfer_cycles) / CPU_CLOCK)
    rec = r.layers[1]  # receives c1 from the tile: written into SRAM
    assert rec.traffic[sram.name]["write"] >= 512
    # totals: latency sums the layers; total_cycles is in CPU cycles
    assert r.latency_s == pytest.approx(sum(x.latency_s for x in r.layers))
    npu_cycles = r.layers[0].cycles + r.layers[2].cycles
    cpu_cycles = sum(r.layers[i].cycles for i in (1, 3, 4))
    xfers = sum(x.transfer_cycles for x in r.layers)
    assert r.total_cycles == cpu_cycles + xfers + round(npu_cycles * CPU_CLOCK / NPU_CLOCK)
    assert r.energy_j == pytest.approx(sum(x.energy_j for x in r.layers))
    eng = r.totals()["engines"]
    assert eng["npu:fake-even"]["cycles"] == npu_cycles
    assert eng["cpu:cortex-m4"]["cycles"] == cpu_cycles
    assert r.totals()["transfer_bytes"] == 192 + 512 + 320 + 384
    # the CPU arena holds only what the CPU sees: c1 and c3 never sit next to x there...
    assert r.peak_ram_bytes <= cpu_only.peak_ram_bytes
    assert r.flash_bytes == cpu_only.flash_bytes


def test_force_cpu_equals_device_without_npu(model, dev_path):
    """A device with a tile, all layers forced on the CPU, costs what the plain device does."""
    a = mcusim.run(model, dev_path, force="cpu")
    b = mcusim.run(model, "stm32l4r5")
    for x, y in zip(a.layers, b.layers, strict=True):
        assert (x.cycles, x.stall_cycles, x.energy_j, x.traffic) == (
            y.cycles,
            y.stall_cycles,
            y.energy_j,
            y.traffic,
        )
    assert a.total_cycles == b.total_cycles and a.latency_s == b.latency_s
    assert b.latency_s == b.total_cycles / b.clock_hz  # CPU-only: as before placement
    assert all(x.placement_reason == "" and x.transfer_bytes == 0 for x in b.layers)
    np.testing.assert_array_equal(a.outputs[0], b.outputs[0])


def test_tile_compute_kernel_is_used_on_its_layers(model, tmp_path):
    p = _device(tmp_path, "fake-offset", "offset_kernel = true")
    r = mcusim.run(model, p, keep_tensors=True)
    cpu = mcusim.run(model, "stm32l4r5", keep_tensors=True)
    # conv1 runs on the tile: its kernel adds one to the reference result
    ref_c1 = cpu.tensors["c1"].astype(np.int16)
    np.testing.assert_array_equal(r.tensors["c1"], np.clip(ref_c1 + 1, -128, 127))
    # conv2 runs on the CPU with TFLite arithmetic on its (shifted) input
    from mcusim.kernels.registry import kernel_for

    g = model.graph
    k = kernel_for("conv2d")
    (c2,) = k.compute(k.prepare(g, g.ops[1]), [r.tensors["c1"]])
    np.testing.assert_array_equal(r.tensors["c2"], c2)
    # the plain (reference-kernel) preparation is not disturbed
    np.testing.assert_array_equal(mcusim.run(model, "stm32l4r5").outputs[0], cpu.outputs[0])


def test_fit_error_from_tile_plan(model, tmp_path, qnn_path, capsys):
    p = _device(tmp_path, "fake-small", "max_layers = 1")
    with pytest.raises(FitError, match="layers: need 2, have 1"):
        mcusim.run(model, p)
    assert main(["run", str(qnn_path), "--device", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "layers: need 2, have 1" in err[0]
    # one layer fits
    assert mcusim.run(model, p, place={"conv3": "cpu"}).layers[2].engine == "cpu:cortex-m4"


# -- command line ----------------------------------------------------------------------------
def test_cli_table_engine_and_reason(qnn_path, dev_path, capsys):
    assert main(["run", str(qnn_path), "--device", str(dev_path)]) == 0
    out = capsys.readouterr().out
    assert "npu:fake-even" in out and "cpu:cortex-m4" in out
    assert "why CPU" in out
    assert "[1] on the CPU (layers 1): 5 output channels: the tile needs an even number" in out
    assert "[2] on the CPU (layers 3): reshape is not a conv2d" in out
    assert "transfers" in out


def test_cli_overrides(qnn_path, dev_path, tmp_path, capsys):
    js = tmp_path / "r.json"
    argv = ["run", str(qnn_path), "--device", str(dev_path), "--json", str(js)]
    assert main(argv + ["--place", "conv1=cpu", "--place", "2=cpu"]) == 0
    import json

    d = json.loads(js.read_text())
    assert {x["engine"] for x in d["layers"]} == {"cpu:cortex-m4"}
    assert d["layers"][2]["placement_reason"] == "placed on the CPU by --place 2=cpu"
    capsys.readouterr()
    assert main(argv + ["--force-npu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "conv2" in err[0] and "5 output channels" in err[0]
    assert main(argv + ["--place", "conv2"]) == 2
    assert "LAYER=VALUE" in capsys.readouterr().err
    assert main(argv + ["--force-cpu"]) == 0
    d = json.loads(js.read_text())
    assert d["totals"]["transfer_bytes"] == 0
    with pytest.raises(SystemExit):  # argparse: the two forces exclude each other
        main(argv + ["--force-cpu", "--force-npu"])


def test_cli_precision(qnn_path, dev_path, tmp_path, capsys):
    js = tmp_path / "r.json"
    argv = ["run", str(qnn_path), "--device", str(dev_path), "--json", str(js)]
    assert main(argv + ["--precision", "conv3=W4A8"]) == 0
    import json

    d = json.loads(js.read_text())
    assert d["layers"][2]["engine"] == "cpu:cortex-m4"
    assert d["layers"][2]["precision"] == "W4A8"
    cal = tmp_path / "cal.npy"
    np.save(cal, np.random.default_rng(3).integers(-128, 128, (4, 1, 8, 8, 3)).astype(np.int8))
    assert main(argv + ["--precision", "conv3=W4A8", "--calibration", str(cal)]) == 0


# -- real tiles (when present) ----------------------------------------------------------------
def _real_device(name: str):
    """A bundled device with an NPU tile (missing device or tile is a failure)."""
    from mcusim.devices.npu import npu_tile

    dev = mcusim.load_device(name)
    assert dev.npu, f"{name} has no [npu] table"
    npu_tile(dev)
    return dev


def test_kws_on_max78000_places_layers_and_reports_requant():
    dev = _real_device("max78000")
    p = model_path("kws_ref_model")
    m = mcusim.load(p)
    tile = _tile_of(dev)
    r = mcusim.run(m, dev, keep_tensors=True)
    npu = [x for x in r.layers if x.engine == "npu:max78000-cnn"]
    cpu = [x for x in r.layers if x.engine == "cpu:cortex-m4"]
    assert npu and cpu and len(npu) + len(cpu) == len(r.layers)
    g = m.graph
    for x in npu:  # the tile accepts every layer it got
        assert tile.supports(g, g.ops[x.index]).ok and x.placement_reason == ""
        assert x.clock_hz == tile.clock_hz
    for x in cpu:  # every CPU layer says why, in the tile's words
        assert x.placement_reason == tile.supports(g, g.ops[x.index]).reason != ""
    # transfers exactly where the engine changes (graph input and output in CPU memory)
    side = ["npu" if x.engine.startswith("npu") else "cpu" for x in r.layers]
    for i, x in enumerate(r.layers):
        prev = side[i - 1] if i else "cpu"
        assert (x.transfer_bytes > 0) == (prev != side[i]), i
        assert x.transfer_cycles == (tile.transfer_cycles(x.transfer_bytes))
    assert r.latency_s == pytest.approx(sum(x.latency_s for x in r.layers))
    # re-quantization report: one row per NPU conv / FC, checked against the tensors of
    # the INT8 model run on the CPU (the original TFLite arithmetic)
    from mcusim.devices.npu.max78000 import deviation_report

    ref = mcusim.run(m, dev, force="cpu", keep_tensors=True)
    rows = {row["index"]: row for row in r.requant_report}
    macs = [x.index for x in npu if x.op in ("conv2d", "fully_connected")]
    assert sorted(rows) == macs
    for i, row in rows.items():
        y = g.ops[i].outputs[0]
        zp = int(g.tensors[y].quant.zero_point[0])
        want = deviation_report(ref.tensors[y], r.tensors[y], zp)
        assert row["max_abs_diff_in_run"] == want["max_abs_diff"]
        assert row["pct_equal_in_run"] == pytest.approx(want["pct_equal"])
        assert 0.0 <= row["pct_equal_layer"] <= 100.0
    first = min(rows)  # the first re-quantized layer sees the original input: alone = as run
    assert rows[first]["sqnr_db_layer"] == pytest.approx(rows[first]["sqnr_db_in_run"])
    (o,) = r.npu["requant_outputs"]
    assert o["output"] == g.outputs[0]


def test_kws_on_max78000_cli_prints_reasons_and_report(capsys):
    _real_device("max78000")
    p = model_path("kws_ref_model")
    assert main(["run", str(p), "--device", "max78000"]) == 0
    out = capsys.readouterr().out
    assert "npu:max78000-cnn" in out and "cpu:cortex-m4" in out
    assert "on the CPU (layers" in out and "re-quantized to the tile's arithmetic" in out


def test_model_on_corstone300_u55_128_runs():
    dev = _real_device("corstone300-u55-128")
    p = model_path("kws_ref_model")
    r = mcusim.run(p, dev)
    assert any(x.engine == "npu:ethos-u55" for x in r.layers)
    assert r.npu["shared_memory"] is True  # the U55 works in the shared SRAM: no copies
    assert all(x.transfer_bytes == 0 for x in r.layers)
    assert r.latency_s == pytest.approx(sum(x.latency_s for x in r.layers))
    cpu = mcusim.run(p, dev, force="cpu")
    assert {x.engine for x in cpu.layers} == {"cpu:cortex-m55"}
    np.testing.assert_array_equal(r.outputs[0], cpu.outputs[0])  # U55: TFLite arithmetic


def _tile_of(dev):
    from mcusim.devices.npu import npu_tile

    return npu_tile(dev)


def test_kws_on_max78000_three_ways():
    """All CPU, NPU + CPU fallback, NPU INT8 + CPU INT4 (the README example)."""
    dev = _real_device("max78000")
    m = mcusim.load(model_path("kws_ref_model"))
    cpu = mcusim.run(m, dev, force="cpu")
    mixed = mcusim.run(m, dev)
    int4 = mcusim.run(m, dev, precision={"*depthwise*": "W4A8", "0": "W4A8"})
    assert mixed.latency_s < cpu.latency_s and mixed.energy_j < cpu.energy_j
    assert [x.engine for x in int4.layers] == [x.engine for x in mixed.layers]
    for x in int4.layers:
        if x.op in ("conv2d", "depthwise_conv2d", "fully_connected"):
            want = "W4A8" if x.engine.startswith("cpu") else "W8A8"
            assert x.precision == want, (x.index, x.engine, x.precision)
    assert int4.flash_bytes < mixed.flash_bytes  # 4-bit weights of the CPU layers
    # the NPU layers cost the same; only the CPU layers changed
    for a, b in zip(mixed.layers, int4.layers, strict=True):
        if a.engine.startswith("npu"):
            assert (a.cycles, a.transfer_bytes) == (b.cycles, b.transfer_bytes)


def test_model_file_placement_is_a_hint(dev_path):
    g = build_graph()
    g.ops[0].placement = "cpu"
    g.ops[1].placement = "npu"  # the tile cannot run it: CPU, with the tile's reason
    m = Model(g)
    r = mcusim.run(m, dev_path)
    assert r.layers[0].engine == "cpu:cortex-m4"
    assert r.layers[0].placement_reason == "placed on the CPU by the model file's placement"
    assert r.layers[1].engine == "cpu:cortex-m4"
    assert r.layers[1].placement_reason.startswith("5 output channels")
    assert r.layers[2].engine == "npu:fake-even"
    plain = mcusim.run(m, "stm32l4r5")  # no NPU: the hint is ignored
    assert {x.engine for x in plain.layers} == {"cpu:cortex-m4"}
