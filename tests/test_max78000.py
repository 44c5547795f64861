"""MAX78000 CNN tile: izer-exact arithmetic on the ai8x golden data, izer's cycle model per
layer and on its known-answer table, board timings, resources, the restricted checkpoint
unpickler, support reasons and the TFLite re-quantization report."""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mcusim.devices.loader import load_device
from mcusim.devices.npu.base import npu_tile
from mcusim.devices.npu.max78000 import (
    LayerGeometry,
    Max78000Tile,
    apply_requant,
    deviation_report,
    layer_cycles,
    requantize_for_max78000,
)
from mcusim.dtypes import INT8, INT32, Quant
from mcusim.errors import FitError, ModelFormatError
from mcusim.graph import Graph, Op, Tensor
from mcusim.importers.ai8x import load_ai8x, load_checkpoint
from mcusim.kernels.max78000 import accumulate, ai8x_kernel, compute_graph, requant_ai8x
from mcusim.ops import Conv2DAttrs, Pool2DAttrs

AI8X = Path(__file__).resolve().parents[2] / "shared" / "ai8x"
NETS = {
    "mnist": ("mnist-chw-ai85.yaml", "ai85-mnist-qat8-q.pth.tar", "sample_mnist.npy", 1410.0),
    "kws20_v3": (
        "kws20-v3-hwc.yaml",
        "ai85-kws20_v3-qat8-q.pth.tar",
        "sample_kws_20.npy",
        1442.0,
    ),
}


def _need_ai8x() -> None:
    if not AI8X.is_dir():
        pytest.skip(f"{AI8X} is absent: ai8x golden data not available")


@pytest.fixture(scope="module")
def tile() -> Max78000Tile:
    t = npu_tile(load_device("max78000"))
    assert isinstance(t, Max78000Tile)
    return t


_CACHE: dict[str, tuple] = {}


def _net(name: str):
    _need_ai8x()
    if name not in _CACHE:
        y, c, s, _ = NETS[name]
        g = load_ai8x(AI8X / "networks" / y, AI8X / "trained" / c)
        x = np.load(AI8X / "tests" / s)
        x_nhwc = x.transpose(1, 2, 0)[None] if x.ndim == 3 else x.T[None, :, None, :]
        env = compute_graph(g, [x_nhwc.astype(np.int8)])
        _CACHE[name] = (g, env)
    return _CACHE[name]


def _chw(a: np.ndarray) -> np.ndarray:
    """NHWC (1, H, W, C) or (1, N) -> channel-first, as izer logs tensors."""
    return a.transpose(0, 3, 1, 2)[0] if a.ndim == 4 else a[0]


def _golden(net: str, name: str) -> np.ndarray:
    return np.load(AI8X / "golden" / net / name).astype(np.int64)


# -- arithmetic ------------------------------------------------------------------------
@pytest.mark.parametrize("net", list(NETS))
def test_every_layer_tensor_equals_izer(net):
    g, env = _net(net)
    layers = g.metadata["ai8x"]["layers"]
    ops = {o.name: o for o in g.ops}
    checked = 0
    for m in layers:
        xx = f"{m['layer']:02d}"
        chain = [ops[n] for n in m["ops"]]
        mac = chain[-1]
        gin = _golden(net, f"layer_{xx}_input.npy")
        ours_in = _chw(env[chain[0].inputs[0]].astype(np.int64))
        assert np.array_equal(ours_in.reshape(gin.shape), gin)
        pool = [o for o in chain if o.kind in ("max_pool2d", "avg_pool2d")]
        if pool:
            gp = _golden(net, f"layer_{xx}_pooled.npy")
            assert np.array_equal(_chw(env[pool[0].outputs[0]]).reshape(gp.shape), gp)
            checked += 1
        conv_in_name = pool[0].outputs[0] if pool else chain[0].inputs[0]
        gci = _golden(net, f"layer_{xx}_conv_in.npy")
        assert np.array_equal(_chw(env[conv_in_name]).reshape(gci.shape), gci)
        kdef = ai8x_kernel(g, mac)
        acc = accumulate(kdef.prepare(g, mac), env[mac.inputs[0]])
        gacc = _golden(net, f"layer_{xx}_accum.npy")
        assert np.array_equal(_chw(acc).reshape(gacc.shape), gacc), f"layer {xx} accum"
        gout = _golden(net, f"layer_{xx}_output.npy")
        assert np.array_equal(_chw(env[mac.outputs[0]].astype(np.int64)).reshape(gout.shape), gout)
        checked += 4
    assert checked >= 4 * len(layers)
    out = env[g.outputs[0]].reshape(-1).astype(np.int64)
    assert np.array_equal(out, _golden(net, "output.npy"))
    kat = json.loads((AI8X / "golden" / net / "kat.json").read_text())
    words = [w for rec in kat["records"] for w in rec["values"]] if "records" in kat else None
    if words is not None:
        assert sorted(words) == sorted(out.tolist())


@pytest.mark.parametrize("net", list(NETS))
def test_weights_and_bias_equal_izer(net):
    g, _ = _net(net)
    ops = {o.name: o for o in g.ops}
    for m in g.metadata["ai8x"]["layers"]:
        xx = f"{m['layer']:02d}"
        mac = ops[m["ops"][-1]]
        w = g.tensors[mac.inputs[1]].data.astype(np.int64)
        gw = _golden(net, f"weights_layer_{xx}.npy")
        if mac.kind == "conv2d":
            ours = w.transpose(0, 3, 1, 2)
        else:
            x = g.tensors[ops[m["ops"][0]].inputs[0]]
            h, wd, c = x.shape[1:]
            ours = w.reshape(-1, h, wd, c).transpose(0, 3, 1, 2).reshape(gw.shape)
        assert np.array_equal(ours.reshape(gw.shape), gw)
        bpath = AI8X / "golden" / net / f"bias_layer_{xx}.npy"
        if bpath.exists():
            b = g.tensors[mac.inputs[2]].data.astype(np.int64)
            assert np.array_equal(b, 128 * _golden(net, f"bias_layer_{xx}.npy"))
        else:
            assert not (len(mac.inputs) > 2 and mac.inputs[2])


def test_requant_rounding_and_activation_by_hand():
    acc = np.array([64, -64, -65, 63, 1000, -1000, 191, 192], np.int64)
    # s = 0: floor(0.5 + acc/128), round half up
    assert requant_ai8x(acc, 0, 0, False).tolist() == [1, 0, -1, 0, 8, -8, 1, 2]
    assert requant_ai8x(acc, 0, 1, False).tolist() == [1, 0, 0, 0, 8, 0, 1, 2]
    assert requant_ai8x(acc, 0, 2, False).tolist() == [1, 0, 1, 0, 8, 8, 1, 2]
    # s = 7: y = acc, clamped; s = 8: acc * 2
    assert requant_ai8x(acc, 7, 0, False).tolist() == [64, -64, -65, 63, 127, -128, 127, 127]
    assert requant_ai8x(np.array([3, -3]), 8, 0, False).tolist() == [6, -6]
    assert requant_ai8x(np.array([-128 * 128]), 0, 2, False).tolist() == [127]  # |−128| → 127
    assert requant_ai8x(acc, 3, 0, True).tolist() == acc.tolist()  # wide: the accumulator


def test_avg_pool_truncates_toward_zero():
    x = np.array([-1, -2, -2, -2, 1, 2, 2, 2], np.int8).reshape(1, 2, 4, 1)
    g = Graph(
        {"x": Tensor("x", (1, 2, 4, 1), INT8), "y": Tensor("y", (1, 1, 2, 1), INT8)},
        [Op("avg_pool2d", "p", ["x"], ["y"], Pool2DAttrs((2, 2), (2, 2), rounding="trunc"))],
        ["x"],
        ["y"],
    ).validate()
    y = compute_graph(g, [x.reshape(1, 2, 4, 1)])["y"]
    # windows: [-1,-2,1,2] sum 0 -> 0 ; [-2,-2,2,2] -> 0 ; check a negative mean separately
    assert y.reshape(-1).tolist() == [0, 0]
    x2 = np.array([-1, -2, -2, -2], np.int8).reshape(1, 2, 2, 1)
    g2 = Graph(
        {"x": Tensor("x", (1, 2, 2, 1), INT8), "y": Tensor("y", (1, 1, 1, 1), INT8)},
        [Op("avg_pool2d", "p", ["x"], ["y"], Pool2DAttrs((2, 2), (2, 2), rounding="trunc"))],
        ["x"],
        ["y"],
    ).validate()
    assert compute_graph(g2, [x2])["y"].item() == -1  # -7/4 = -1.75 -> -1 (floor gives -2)


# -- cycles ------------------------------------------------------------------------------
@pytest.mark.parametrize("net", list(NETS))
def test_cycles_per_layer_equal_izer(net, tile):
    g, _ = _net(net)
    plan = tile.plan(g, g.ops)
    lat = json.loads((AI8X / "golden" / net / "latency.json").read_text())
    assert len(plan.layers) == len(lat["layers"])
    for hl, ref in zip(plan.layers, lat["layers"], strict=True):
        mi, terms = ref["model_inputs"], ref["model_terms"]
        geo = hl.geometry
        assert geo.output_chan_hw == mi["output_chan_hw"]
        assert geo.multipass == mi["multipass"]
        assert list(geo.pooled_dim) == mi["pooled_dim"]
        assert list(geo.padding) == mi["padding"]
        assert list(geo.kernel_size) == mi["kernel_size"]
        assert hl.terms["InPadMPPoolElt"] == terms["InPadMPPoolElt"]
        assert hl.terms["InDatMPPoolElt"] == terms["InDatMPPoolElt"]
        assert hl.terms["first_row_pad"] == terms["first_row_pad"]["total"]
        assert hl.terms["row_data_no_conv"] == terms["row_data_no_conv"]["total"]
        assert hl.terms["row_data_conv"] == terms["row_data_conv"]["total"]
        assert hl.terms["bottom_pad_row"] == terms["bottom_pad_row"]["total"]
        assert hl.terms["data_row_output"] == terms["data_row_output"]
        assert hl.cycles == ref["cycles"], f"layer {hl.index}"
        assert hl.macc == ref["macc"]
    assert plan.total_cycles == lat["total_cycles"]
    # per-op costs: fused ops cost 0, the layer op carries the layer (+1 startup on layer 0)
    total = sum(tile.layer_cost(g, o, plan).cycles for o in g.ops)
    assert total == lat["total_cycles"]
    res = lat["resources"]
    assert sum(hl.weight_bytes for hl in plan.layers) == res["weight_memory_bytes"]
    assert sum(hl.bias_bytes for hl in plan.layers) == res["bias_memory_bytes"]


@pytest.mark.parametrize("net", list(NETS))
def test_board_time_within_2_percent(net, tile):
    g, _ = _net(net)
    plan = tile.plan(g, g.ops)
    assert tile.clock_hz == 50e6  # APB 50 MHz / divider 1 (device file)
    us = plan.total_cycles / tile.clock_hz * 1e6
    board = NETS[net][3]
    assert abs(us - board) / board < 0.02
    assert abs(us - board) / board > 0.001  # the model is not the measurement (IRQ overhead)


def _ka(c, hw, pool, ps, mp, co, k, pad, ops=1, pf=True, passthrough=False, ts=1, flat=False,
        transpose=False):  # fmt: skip
    """izer test_cycles.py's wrapper: pooled and output dims from the layer arguments."""
    ih, iw = (hw[0] * 2, hw[1] * 2) if transpose else hw
    hp = (ih + ps[0] - pool[0]) // ps[0]
    wp = (iw + ps[1] - pool[1]) // ps[1]
    oh, ow = hp - k[0] + 1 + 2 * pad[0], wp - k[1] + 1 + 2 * pad[1]
    geo = LayerGeometry(
        c, hw, pool, ps, (hp, wp), pad, k, co, (oh, ow), mp, ops, pf, passthrough, ts, flat
    )
    return 1 + layer_cycles(geo)[0]


KNOWN = [  # ../shared/reference/max78000.md §3 (izer/test/test_cycles.py), +1 startup
    (dict(c=64, hw=(20, 20), pool=(2, 2), ps=(2, 2), mp=1, co=16, k=(3, 3), pad=(2, 2)), 3049),
    (dict(c=3, hw=(65, 65), pool=(16, 16), ps=(4, 4), mp=1, co=32, k=(3, 3), pad=(1, 1)), 49010),
    (dict(c=3, hw=(32, 32), pool=(1, 1), ps=(1, 1), mp=1, co=64, k=(3, 3), pad=(1, 1)), 67981),
    (dict(c=3, hw=(32, 32), pool=(1, 1), ps=(1, 1), mp=1, co=64, k=(3, 3), pad=(0, 0)), 59773),
    (dict(c=3, hw=(32, 32), pool=(2, 2), ps=(2, 2), mp=1, co=64, k=(3, 3), pad=(0, 0)), 13885),
    (dict(c=128, hw=(8, 8), pool=(2, 2), ps=(2, 2), mp=2, co=16, k=(3, 3), pad=(1, 1)), 773),
    (dict(c=128, hw=(8, 8), pool=(1, 1), ps=(1, 1), mp=2, co=16, k=(3, 3), pad=(1, 1)), 2485),
    (dict(c=128, hw=(8, 8), pool=(1, 1), ps=(1, 1), mp=2, co=16, k=(3, 3), pad=(0, 0)), 1437),
    (dict(c=1, hw=(28, 28), pool=(1, 1), ps=(1, 1), mp=1, co=8, k=(3, 3), pad=(1, 1)), 8189),
    (
        dict(
            c=4,
            hw=(12, 12),
            pool=(1, 1),
            ps=(1, 1),
            mp=1,
            co=4,
            k=(1, 1),
            pad=(0, 0),
            ops=2,
            passthrough=True,
        ),
        721,
    ),
    (
        dict(
            c=3,
            hw=(7, 9),
            pool=(1, 1),
            ps=(1, 1),
            mp=1,
            co=64,
            k=(3, 3),
            pad=(1, 1),
            transpose=True,
        ),
        16837,
    ),
    (dict(c=12, hw=(4, 4), pool=(1, 1), ps=(1, 1), mp=1, co=10, k=(1, 1), pad=(0, 0), ts=16), 193),
    (
        dict(
            c=4,
            hw=(12, 12),
            pool=(1, 1),
            ps=(1, 1),
            mp=2,
            co=4,
            k=(3, 3),
            pad=(0, 0),
            ops=2,
            passthrough=True,
        ),
        1441,
    ),
    (dict(c=79, hw=(11, 11), pool=(1, 1), ps=(1, 1), mp=2, co=1, k=(3, 3), pad=(0, 0)), 687),
    (
        dict(
            c=8,
            hw=(17, 17),
            pool=(2, 2),
            ps=(2, 2),
            mp=1,
            co=8,
            k=(1, 1),
            pad=(0, 0),
            ops=2,
            pf=False,
            passthrough=True,
            ts=2,
        ),
        705,
    ),
    (
        dict(c=12, hw=(8, 8), pool=(1, 1), ps=(1, 1), mp=1, co=10, k=(1, 1), pad=(0, 0), flat=True),
        770,
    ),
    (dict(c=1, hw=(1, 1), pool=(1, 1), ps=(1, 1), mp=1, co=1, k=(3, 3), pad=(1, 1)), 29),
    (dict(c=12, hw=(1, 1), pool=(1, 1), ps=(1, 1), mp=1, co=17, k=(1, 1), pad=(0, 0)), 20),
    (dict(c=5, hw=(31, 7), pool=(1, 1), ps=(1, 1), mp=1, co=11, k=(3, 3), pad=(1, 1)), 3062),
]


@pytest.mark.parametrize(("args", "cycles"), KNOWN)
def test_izer_known_answer_cycles(args, cycles):
    assert _ka(**args) == cycles


# -- resources ---------------------------------------------------------------------------
_Q = Quant(np.array([1 / 128], np.float32), np.array([0]))


def _conv_chain(n_layers: int, c_in: int, c_out: int, hw: tuple[int, int], k: int = 1) -> Graph:
    rng = np.random.default_rng(1)
    t = {"x0": Tensor("x0", (1, *hw, c_in), INT8, _Q)}
    ops = []
    c = c_in
    for i in range(n_layers):
        co = c_out
        w = rng.integers(-8, 8, size=(co, k, k, c)).astype(np.int8)
        t[f"w{i}"] = Tensor(f"w{i}", w.shape, INT8, None, w)
        t[f"x{i + 1}"] = Tensor(f"x{i + 1}", (1, *hw, co), INT8, _Q)
        pad = "same" if k == 3 else "valid"
        ops.append(
            Op("conv2d", f"c{i}", [f"x{i}", f"w{i}", ""], [f"x{i + 1}"],
               Conv2DAttrs(padding=pad, activation="relu", requant="ai8x"))
        )  # fmt: skip
        c = co
    return Graph(t, ops, ["x0"], [f"x{n_layers}"]).validate()


def test_too_many_layers(tile):
    g = _conv_chain(33, 8, 8, (4, 4))
    with pytest.raises(FitError, match=r"hardware layers: need 33, have 32"):
        tile.plan(g, g.ops)
    g = _conv_chain(32, 8, 8, (4, 4))
    assert len(tile.plan(g, g.ops).layers) == 32


def test_weight_memory_overflow_names_need_and_have(tile):
    # 3x3 8-bit: one 72-bit word per kernel; 64 inputs -> 1 channel per processor, 1000
    # outputs -> 1000 words on every processor, 768 available
    g = _conv_chain(1, 64, 1000, (3, 3), k=3)
    with pytest.raises(
        FitError, match=r"weight memory of processor 0 .*need 1000 72-bit words, have 768"
    ):
        tile.plan(g, g.ops)
    # layers stack in each processor's kernel memory: 64->64 3x3 takes 64 words a layer,
    # 12 layers fill 768 words exactly, the 13th overflows
    g = _conv_chain(12, 64, 64, (3, 3), k=3)
    assert tile.plan(g, g.ops).weight_words_used[0] == 768
    g = _conv_chain(13, 64, 64, (3, 3), k=3)
    with pytest.raises(FitError, match=r"\(layer 12, c12\): need 832 72-bit words, have 768"):
        tile.plan(g, g.ops)


def test_data_memory_overflow(tile):
    g = _conv_chain(1, 64, 64, (128, 128))
    with pytest.raises(FitError, match=r"data memory .*need 131072 bytes per memory instance"):
        tile.plan(g, g.ops)


# -- checkpoint loader -------------------------------------------------------------------
def _zip_with(pkl: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/version", "3\n")
    return buf.getvalue()


def test_unpickler_refuses_other_globals(tmp_path):
    evil = tmp_path / "evil.pth.tar"
    evil.write_bytes(_zip_with(pickle.dumps({"state_dict": {}, "x": os.system}, protocol=2)))
    with pytest.raises(ModelFormatError, match=r"system is not allowed"):
        load_checkpoint(evil)
    # a REDUCE of an allowed-looking but unlisted callable is refused the same way
    evil2 = tmp_path / "evil2.pth.tar"
    evil2.write_bytes(_zip_with(b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1\x85R."))
    with pytest.raises(ModelFormatError, match=r"builtins.eval is not allowed"):
        load_checkpoint(evil2)


def test_real_checkpoints_load_as_numpy():
    _need_ai8x()
    ck = load_checkpoint(AI8X / "trained" / NETS["mnist"][1])
    assert ck["epoch"] == 194 and ck["arch"] == "ai85net5"
    w = ck["state_dict"]["conv1.op.weight"]
    assert isinstance(w, np.ndarray) and w.shape == (60, 1, 3, 3) and w.dtype == np.float32
    with pytest.raises(pickle.UnpicklingError):
        ck["optimizer_type"]()  # the optimizer class is an inert placeholder
    kws = load_checkpoint(AI8X / "trained" / NETS["kws20_v3"][1])
    keys = [k for k in kws["state_dict"] if k.endswith("weight")]
    assert keys[0] == "module.voice_conv1.op.weight"


# -- supports() ------------------------------------------------------------------------
def test_support_reasons_on_a_tflite_model(tile):
    p = Path(__file__).resolve().parents[2] / "shared" / "models" / "kws_ref_model.tflite"
    if not p.exists():
        pytest.skip(f"{p} absent")
    import mcusim

    g = mcusim.load(p).graph
    reasons = {o.kind: tile.supports(g, o) for o in g.ops}
    assert "depthwise" in reasons["depthwise_conv2d"].reason
    assert "MAX78002" in reasons["depthwise_conv2d"].reason
    first = tile.supports(g, g.ops[0])
    assert not first.ok and "stride (2, 2)" in first.reason
    assert "software" in reasons["softmax"].reason
    assert reasons["fully_connected"].ok and reasons["reshape"].ok
    pw = [o for o in g.ops if o.kind == "conv2d" and o.attrs.stride == (1, 1)]
    assert len(pw) == 4 and all(tile.supports(g, o).ok for o in pw)
    pool = next(o for o in g.ops if o.kind == "avg_pool2d")
    assert "up to 16" in tile.supports(g, pool).reason


def test_support_reasons_dilation_kernel_and_activation(tile):
    g = _conv_chain(1, 8, 8, (9, 9), k=3)
    op = g.ops[0]
    assert tile.supports(g, op).ok
    op.attrs = Conv2DAttrs(dilation=(2, 2), requant="ai8x")
    g.tensors["x1"] = Tensor("x1", (1, 5, 5, 8), INT8, _Q)
    assert "dilation" in tile.supports(g, op).reason
    op.attrs = Conv2DAttrs(padding="same", activation="relu6")
    g.tensors["x1"] = Tensor("x1", (1, 9, 9, 8), INT8, _Q)
    assert "ReLU / Abs only" in tile.supports(g, op).reason
    w = np.zeros((8, 5, 5, 8), np.int8)
    g.tensors["w0"] = Tensor("w0", w.shape, INT8, None, w)
    op.attrs = Conv2DAttrs(padding="same", requant="ai8x")
    assert "1x1 or 3x3" in tile.supports(g, op).reason


# -- data movement and one-time costs ------------------------------------------------------
def test_transfer_and_weight_load_costs(tile):
    cfg = tile.config
    assert tile.transfer_cycles(0) == 0
    assert tile.transfer_cycles(784) == cfg["cpu_call_cycles"] + 196 * cfg["cpu_cycles_per_word"]
    g, _ = _net("mnist")
    plan = tile.plan(g, g.ops)
    one = tile.one_time_costs(g, g.ops, plan)
    assert one["weight_bytes"] == 71148 and one["bias_bytes"] == 10
    assert one["cpu_cycles"] == tile.transfer_cycles(71148) + tile.transfer_cycles(10)
    assert one["energy_j"] > 0 and one["estimate"] is True
    cost = tile.layer_cost(g, g.ops[-1], plan)
    assert cost.energy_j == pytest.approx(
        cost.cycles * cfg["energy_per_cycle_j"] + cfg["cpu_wait_power_w"] * cost.cycles / 50e6
    )
    assert cost.traffic["cnn_data"]["write"] == 10 * 4  # 10 wide (32-bit) outputs


# -- TFLite INT8 -> MAX78000 re-quantization --------------------------------------------------
def test_deviation_report_by_hand():
    r = deviation_report(np.array([0, 10, 20]), np.array([0, 11, 20]))
    assert r["max_abs_diff"] == 1
    assert r["pct_equal"] == pytest.approx(200 / 3)
    assert r["sqnr_db"] == pytest.approx(10 * math.log10(500.0))
    assert deviation_report([5, -5], [5, -5])["sqnr_db"] == math.inf
    r = deviation_report(np.array([-128, -118]), np.array([-128, -117]), zero_point=-128)
    assert r["sqnr_db"] == pytest.approx(10 * math.log10(100.0))


def test_requantize_tflite_pointwise_convs():
    p = Path(__file__).resolve().parents[2] / "shared" / "models" / "kws_ref_model.tflite"
    if not p.exists():
        pytest.skip(f"{p} absent")
    import copy

    import mcusim

    g = mcusim.load(p).graph
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, size=g.tensors[g.inputs[0]].shape).astype(np.int8)
    env = compute_graph(g, [x])
    pw = [o for o in g.ops if o.kind == "conv2d" and o.attrs.stride == (1, 1)]
    pw.append(next(o for o in g.ops if o.kind == "fully_connected"))
    for op in pw:
        sample = env[op.inputs[0]]
        rq, rep = requantize_for_max78000(g, op, sample)
        w = rq.tensors[rq.inputs[1]]
        assert w.dtype == INT8 and np.abs(w.data).max() <= 127 and rep["weights_saturated"] == 0
        b = rq.tensors[rq.inputs[2]]
        assert b.dtype == INT32 and not np.any(b.data % 128)
        assert -15 <= rep["output_shift"] <= 15 and rq.attrs.requant == "ai8x"
        assert rep["activation"] == "exact"  # ReLU with zero point -128 is the int8 clamp
        g2 = copy.copy(g)
        g2.tensors = dict(g.tensors)
        op2 = copy.copy(op)
        apply_requant(g2, op2, rq)
        g2.ops = [op2 if o is op else o for o in g.ops]
        g2.validate()
        k = ai8x_kernel(g2, op2)
        out = k.compute(k.prepare(g2, op2), [sample])[0]
        zy = int(g.tensors[op.outputs[0]].quant.zero_point[0])
        dev = deviation_report(env[op.outputs[0]], out, zy)
        # the chosen shift is the best of those tried, and the report says what it costs
        tried = rep["shift_sqnr_db"]
        if tried:
            assert dev["sqnr_db"] == pytest.approx(max(tried.values()), abs=0.01)
        assert dev["sqnr_db"] > 10.0 and dev["pct_equal"] < 100
        assert dev["max_abs_diff"] > 0


def test_requantize_exact_for_power_of_two_layer():
    """A TFLite layer whose multiplier is already 2^s/128 with zero points 0 and no ties maps
    without loss: weights unchanged, shift s."""
    rng = np.random.default_rng(3)
    w = rng.integers(-127, 128, size=(4, 1, 1, 8)).astype(np.int8)
    qx = Quant(np.array([0.5], np.float32), np.array([0]))
    qy = Quant(np.array([32.0], np.float32), np.array([0]))  # M = 0.5·0.5/32 = 2^-7
    qw = Quant(np.full(4, 0.5, np.float32), np.zeros(4, np.int64), 0)
    t = {
        "x": Tensor("x", (1, 3, 3, 8), INT8, qx),
        "w": Tensor("w", w.shape, INT8, qw, w),
        "y": Tensor("y", (1, 3, 3, 4), INT8, qy),
    }
    g = Graph(t, [Op("conv2d", "c", ["x", "w", ""], ["y"], Conv2DAttrs())], ["x"], ["y"])
    g.validate()
    rq, rep = requantize_for_max78000(g, g.ops[0])
    assert rep["output_shift"] == 0
    assert np.array_equal(rq.tensors[rq.inputs[1]].data, w)
    x = (rng.integers(-64, 64, size=(1, 3, 3, 8)) * 2 + 1).astype(np.int8)  # odd: no .5 ties?
    env = compute_graph(g, [x])
    op2 = Op("conv2d", "c", ["x", "w", ""], ["y"], Conv2DAttrs())
    apply_requant(g, op2, rq)
    k = ai8x_kernel(g, op2)
    out = k.compute(k.prepare(g, op2), [x])[0]
    acc = np.einsum("nhwc,oc->nhwo", x.astype(np.int64), w[:, 0, 0, :].astype(np.int64))
    ties = (acc % 128) == 64
    same = out == env["y"]
    assert np.all(same[~ties])  # TFLite rounds ties away from zero, the tile half up
    assert np.all(out[ties] == (acc[ties] + 64) // 128)


def test_eltwise_add_layer_exact_and_timed(tile):
    """An add with one scale and zero point 0 is the accelerator's saturating add; as a layer
    alone it is izer's 4x12x12 two-operand case (721 cycles with the startup cycle)."""
    from mcusim.ops import ElementwiseAttrs

    t = {n: Tensor(n, (1, 12, 12, 4), INT8, _Q) for n in ("a", "b", "y")}
    g = Graph(t, [Op("add", "e", ["a", "b"], ["y"], ElementwiseAttrs())], ["a", "b"], ["y"])
    g.validate()
    assert tile.supports(g, g.ops[0]).ok
    plan = tile.plan(g, g.ops)
    assert plan.total_cycles == 721
    rng = np.random.default_rng(5)
    a, b = (rng.integers(-128, 128, (1, 12, 12, 4)).astype(np.int8) for _ in range(2))
    assert tile.compute_kernel(g, g.ops[0]) is None  # the CPU kernel is exact here
    y = compute_graph(g, [a, b])["y"]
    assert np.array_equal(y, np.clip(a.astype(np.int64) + b, -128, 127))
    t["b"] = Tensor("b", (1, 12, 12, 4), INT8, Quant(np.array([0.5], np.float32), np.array([3])))
    assert "raw int8" in tile.supports(g, g.ops[0]).reason


def test_cli_runs_ai8x_network_with_its_sample_input(tmp_path):
    """`mcusim run net.yaml --checkpoint ck --device max78000 --input sample.npy` (the
    sample is channel-first, as ai8x ships it) reproduces izer's output and cycles."""
    import json

    from mcusim.cli import main

    ai8x = Path(__file__).resolve().parents[2] / "shared" / "ai8x"
    if not ai8x.is_dir():
        pytest.skip(f"{ai8x} is absent: ai8x golden data not available")
    out, js = tmp_path / "out", tmp_path / "r.json"
    rc = main([
        "run", str(ai8x / "networks" / "kws20-v3-hwc.yaml"),
        "--checkpoint", str(ai8x / "trained" / "ai85-kws20_v3-qat8-q.pth.tar"),
        "--device", "max78000", "--input", str(ai8x / "tests" / "sample_kws_20.npy"),
        "--save-outputs", str(out), "--json", str(js),
    ])  # fmt: skip
    assert rc == 0
    golden = np.load(ai8x / "golden" / "kws20_v3" / "output.npy")
    assert np.array_equal(np.load(out / "output_0.npy").ravel(), golden)
    d = json.loads(js.read_text())
    npu = [layer for layer in d["layers"] if layer["engine"] == "npu:max78000-cnn"]
    assert len(npu) == len(d["layers"])
    assert sum(layer["cycles"] for layer in npu) == 71_782  # izer's ESTIMATED LATENCY
