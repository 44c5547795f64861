"""Post-training re-quantization (mcusim.quantize, docs/quantize.md).

Graph rewriting and calibration are checked on a small synthetic INT8 graph (types,
scales, biases, validation, bit-exact W8A8 identity); the SQNR tests run the re-quantized
graphs and need the sub-byte kernels (mcusim.kernels.subbyte), skipped with a message
while that module is absent.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mcusim import qnn
from mcusim.cli import main
from mcusim.dtypes import BINARY, INT8, INT32, Quant, elem_type
from mcusim.graph import Graph, Op, Tensor
from mcusim.model import Model
from mcusim.ops import (
    Conv2DAttrs,
    DepthwiseConv2DAttrs,
    FullyConnectedAttrs,
    NoAttrs,
    Pool2DAttrs,
    ReshapeAttrs,
)
from mcusim.quantize import (
    QuantizeError,
    activation_params,
    parse_spec,
    quantize_weights,
    requantize,
    round_half_away,
)
from mcusim.runner import compute_outputs

from conftest import model_path


# -- a small INT8 graph -------------------------------------------------------------------
def _q(scale, zp=0, axis=None) -> Quant:
    return Quant(np.asarray(scale, np.float32), np.asarray(zp, np.int64), axis)


def build_graph(seed: int = 0, fc_via_reshape: bool = False) -> Graph:
    """x -> conv1 3x3 (relu) -> max_pool 2x2 -> conv2 1x1 -> dw 3x3 (relu) -> fc -> y."""
    rng = np.random.default_rng(seed)
    t: dict[str, Tensor] = {}
    ops: list[Op] = []

    def act(name, shape, scale, zp):
        t[name] = Tensor(name, shape, INT8, _q(scale, zp))

    def weights(name, shape, axis):
        n = shape[axis]
        data = rng.integers(-127, 128, size=shape).astype(np.int8)
        scale = rng.uniform(0.002, 0.01, n)
        t[name] = Tensor(name, shape, INT8, _q(scale, np.zeros(n), axis), data)
        return scale

    def bias(name, n, sx, sw):
        data = rng.integers(-3000, 3000, size=n).astype(np.int32)
        t[name] = Tensor(name, (n,), INT32, _q(sx * sw, np.zeros(n), 0), data)

    act("x", (1, 8, 8, 3), 0.02, -5)
    sw = weights("w1", (8, 3, 3, 3), 0)
    bias("b1", 8, 0.02, sw)
    act("c1", (1, 8, 8, 8), 0.03, -128)
    ops.append(
        Op(
            "conv2d",
            "conv1",
            ["x", "w1", "b1"],
            ["c1"],
            Conv2DAttrs(padding="same", activation="relu"),
        )
    )
    act("p1", (1, 4, 4, 8), 0.03, -128)
    ops.append(Op("max_pool2d", "pool1", ["c1"], ["p1"], Pool2DAttrs((2, 2), (2, 2))))
    sw = weights("w2", (12, 1, 1, 8), 0)
    bias("b2", 12, 0.03, sw)
    act("c2", (1, 4, 4, 12), 0.05, 3)
    ops.append(Op("conv2d", "conv2", ["p1", "w2", "b2"], ["c2"], Conv2DAttrs()))
    sw = weights("w3", (1, 3, 3, 12), 3)
    bias("b3", 12, 0.05, sw)
    act("d3", (1, 4, 4, 12), 0.04, -128)
    ops.append(
        Op(
            "depthwise_conv2d",
            "dw3",
            ["c2", "w3", "b3"],
            ["d3"],
            DepthwiseConv2DAttrs(padding="same", activation="relu"),
        )
    )
    fc_in = "d3"
    if fc_via_reshape:
        act("r", (1, 192), 0.04, -128)
        ops.append(Op("reshape", "flatten", ["d3"], ["r"], ReshapeAttrs((1, 192))))
        fc_in = "r"
    sw = weights("w4", (5, 192), 0)
    bias("b4", 5, 0.04, sw)
    act("y", (1, 5), 0.3, 2)
    ops.append(Op("fully_connected", "fc4", [fc_in, "w4", "b4"], ["y"], FullyConnectedAttrs()))
    return Graph(t, ops, ["x"], ["y"], name="tiny").validate()


def calib(n: int = 6, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(-128, 128, size=(n, 1, 8, 8, 3)).astype(np.int8)


def dequant(v, t: Tensor) -> np.ndarray:
    return t.quant.scale[0].astype(np.float64) * (v.astype(np.float64) - t.quant.zero_point[0])


# -- specs and numeric rules ----------------------------------------------------------------
def test_parse_spec():
    s = parse_spec("w4a4")
    assert (s.w_bits, s.a_bits, s.a_signed) == (4, 4, None)
    assert parse_spec("W1A1").label == "W1A1"
    assert parse_spec("W2A8u").a_signed is False
    assert parse_spec("W8A4s").a_signed is True
    for bad in ("W9A8", "W4", "A4W4", "W0A8", "W4A1u", "int4"):
        with pytest.raises(QuantizeError, match="precision"):
            parse_spec(bad)


def test_round_half_away():
    assert round_half_away(np.array([0.5, -0.5, 1.5, -2.5, 2.4])).tolist() == [1, -1, 2, -3, 2]


def test_quantize_weights_int4_hand_worked():
    # channel 0: max|w| = 0.875 -> scale 0.125 (exact in float32); -0.3125 -> -2.5 -> -3 and
    # 0.0625 -> 0.5 -> 1 (half away from zero); channel 1: all zero -> scale 1, values 0
    w = np.array([[0.875, -0.3125, 0.0625], [0.0, 0.0, 0.0]])
    q, dtype, quant = quantize_weights(w, 4, 0)
    assert dtype == elem_type("int4")
    assert q.tolist() == [[7, -3, 1], [0, 0, 0]]
    assert quant.scale.tolist() == [0.125, 1.0]
    assert quant.axis == 0 and quant.zero_point.tolist() == [0, 0]


def test_quantize_weights_depthwise_axis_and_clamp():
    w = np.zeros((1, 1, 2, 2))
    w[0, 0, :, 0] = [1.0, -1.0]  # channel 0 on axis 3
    w[0, 0, :, 1] = [0.25, -0.5]  # channel 1
    q, dtype, quant = quantize_weights(w, 2, 3)
    assert dtype == elem_type("int2")
    assert q[0, 0, :, 0].tolist() == [1, -1] and q[0, 0, :, 1].tolist() == [1, -1]
    assert quant.scale.tolist() == pytest.approx([1.0, 0.5]) and quant.axis == 3


def test_quantize_weights_binary():
    w = np.array([[0.2, -0.4, 0.0, 0.6], [-1.0, -1.0, 1.0, 1.0]])
    q, dtype, quant = quantize_weights(w, 1, 0)
    assert dtype == BINARY
    assert q.tolist() == [[1, -1, 1, 1], [-1, -1, 1, 1]]  # 0 -> +1
    assert quant.scale.tolist() == pytest.approx([0.3, 1.0])


def test_activation_params_hand_worked():
    dt, q = activation_params(-1.0, 3.0, 0.0, 4, None)
    assert dt == elem_type("int4")
    assert float(q.scale[0]) == pytest.approx(4 / 15)
    assert int(q.zero_point[0]) == -4  # -8 - round(-3.75)
    dt, q = activation_params(0.0, 3.0, 0.0, 4, None)
    assert dt == elem_type("uint4") and int(q.zero_point[0]) == 0
    assert float(q.scale[0]) == pytest.approx(0.2)
    dt, q = activation_params(0.5, 3.0, 0.0, 2, None)  # range widened to contain 0
    assert dt == elem_type("uint2") and float(q.scale[0]) == pytest.approx(1.0)
    dt, q = activation_params(0.0, 3.0, 0.0, 4, True)  # forced signed
    assert dt == elem_type("int4") and int(q.zero_point[0]) == -8
    dt, q = activation_params(-2.0, 2.0, 0.75, 1, None)
    assert dt == BINARY and float(q.scale[0]) == pytest.approx(0.75)


# -- graph rewriting --------------------------------------------------------------------------
def test_w8a8_reproduces_source_bit_exact():
    g = build_graph()
    res = requantize(g, {}, calib(), default="W8A8")
    assert res.graph is not g and res.graph.tensors["w1"] is not g.tensors["w1"]
    xs = calib(4, seed=7)
    src, new = Model(g), Model(res.graph)
    for x in xs:
        a, b = compute_outputs(src, [x]), compute_outputs(new, [x])
        for n in a:
            np.testing.assert_array_equal(a[n], b[n])
    assert all(math.isinf(r["sqnr_db"]) for r in res.records)
    assert res.output_sqnr_db == [math.inf]
    assert list(res.report["precision"]) == ["W8A8", "A8", "W8A8", "W8A8", "W8A8"]


def test_w4a4_types_scales_and_bias():
    g = build_graph()
    cal = calib()
    res = requantize(g, {"conv2": "W4A4"}, cal)
    h = res.graph.validate()
    # input of conv2 is the max-pool output; pooling keeps scale/zp, so conv1's output
    # and the pool's output form one group: relu output -> uint4, scale = max / 15
    envs = [compute_outputs(Model(g), [x]) for x in cal]
    real = np.concatenate([dequant(e["c1"], g.tensors["c1"]).ravel() for e in envs])
    for n in ("c1", "p1"):
        assert h.tensors[n].dtype == elem_type("uint4")
        assert float(h.tensors[n].quant.scale[0]) == pytest.approx(real.max() / 15, rel=1e-6)
        assert int(h.tensors[n].quant.zero_point[0]) == 0
    # weights: symmetric per channel, 4 bits, scale max|w|/7
    w_old, w_new = g.tensors["w2"], h.tensors["w2"]
    assert w_new.dtype == elem_type("int4") and w_new.quant.axis == 0
    w_real = (
        w_old.data.astype(np.float64) * w_old.quant.scale.astype(np.float64)[:, None, None, None]
    )
    amax = np.abs(w_real).reshape(12, -1).max(axis=1)
    np.testing.assert_allclose(w_new.quant.scale, amax / 7, rtol=1e-6)
    assert w_new.data.min() >= -8 and w_new.data.max() <= 7
    assert np.abs(w_new.data).reshape(12, -1).max(axis=1).tolist() == [7] * 12
    # bias: round(bias_real / (s_x * s_w[c]))
    b_real = g.tensors["b2"].data * 0.03 * w_old.quant.scale.astype(np.float64)
    s_new = float(h.tensors["p1"].quant.scale[0]) * w_new.quant.scale.astype(np.float64)
    np.testing.assert_array_equal(h.tensors["b2"].data, round_half_away(b_real / s_new))
    assert h.tensors["b2"].dtype == INT32
    # untouched layers keep their weights, conv1 keeps its bias (its input did not change)
    np.testing.assert_array_equal(h.tensors["w1"].data, g.tensors["w1"].data)
    np.testing.assert_array_equal(h.tensors["b1"].data, g.tensors["b1"].data)
    # the source graph is not modified
    assert g.tensors["c1"].dtype == INT8 and g.tensors["w2"].dtype == INT8
    rec = {r["layer"]: r for r in res.records}
    assert rec["conv2"]["precision"] == "W4A4" and rec["conv2"]["requested"] == "W4A4"
    assert rec["conv1"]["output"] == "uint4"


def test_qnn_round_trip_of_requantized_graph(tmp_path):
    res = requantize(build_graph(), {"conv2": "W2A4", "dw3": "W4A8"}, calib())
    p = tmp_path / "q.qnn"
    qnn.save(res.graph, p)
    back = qnn.load(p)
    for n, t in res.graph.tensors.items():
        b = back.tensors[n]
        assert b.dtype == t.dtype and b.quant == t.quant
        if t.is_const:
            np.testing.assert_array_equal(b.data, t.data)
    assert back.metadata["requantized"]["layers"] == {"conv2": "W2A4", "dw3": "W4A8"}


def test_consumer_bias_rescaled_even_if_not_selected():
    # dw3 is requested at A4: its input c2 is conv2's output; fc4 is untouched, dw3's
    # bias is rescaled to the new input scale and weights stay int8
    g = build_graph()
    res = requantize(g, {"dw3": "W8A4"}, calib())
    h = res.graph
    assert h.tensors["c2"].dtype == elem_type("int4")  # conv2 has no relu: signed
    np.testing.assert_array_equal(h.tensors["w3"].data, g.tensors["w3"].data)
    b_real = g.tensors["b3"].data * 0.05 * g.tensors["w3"].quant.scale.astype(np.float64)
    s_new = float(h.tensors["c2"].quant.scale[0]) * g.tensors["w3"].quant.scale.astype(np.float64)
    np.testing.assert_array_equal(h.tensors["b3"].data, round_half_away(b_real / s_new))


def test_binary_activations_get_sign_thresholds():
    g = build_graph()
    res = requantize(g, {"dw3": "W1A1"}, calib())
    h = res.graph
    conv2 = h.ops[2]
    assert h.tensors["c2"].dtype == BINARY and h.tensors["w3"].dtype == BINARY
    assert conv2.attrs.requant == "thresholds" and conv2.attrs.activation == "none"
    th = h.tensors[conv2.inputs[3]]
    assert th.shape == (12, 1) and th.dtype == INT32 and not th.data.any()
    assert float(h.tensors["c2"].quant.scale[0]) > 0


def test_refuses_binary_after_relu():
    with pytest.raises(QuantizeError, match=r"conv2.*W4A1.*relu"):
        requantize(build_graph(), {"conv2": "W4A1"}, calib())


def test_refuses_graph_input_and_names_layer_and_precision():
    with pytest.raises(QuantizeError, match=r"conv1 \(conv2d\).*W4A4.*graph input"):
        requantize(build_graph(), {"conv1": "W4A4"}, calib())


def test_refuses_input_feeding_int8_op():
    g = build_graph(fc_via_reshape=True)
    with pytest.raises(QuantizeError, match=r"fc4.*W4A4.*flatten \(reshape\).*INT8"):
        requantize(g, {"fc4": "W4A4"}, calib())
    # an input that also feeds an op that stays INT8
    h = build_graph()
    h.tensors["r2"] = Tensor("r2", (1, 4, 4, 12), INT8, _q(0.05, 3))
    h.ops.append(Op("relu", "extra", ["c2"], ["r2"], NoAttrs()))
    h.validate()
    with pytest.raises(QuantizeError, match=r"dw3.*W8A4.*'c2' also feeds extra \(relu\).*INT8"):
        requantize(h, {"dw3": "W8A4"}, calib())
    # with --all the layers whose input cannot change keep it and say why
    res = requantize(g, {}, calib(), default="W4A4")
    rec = {r["layer"]: r for r in res.records}
    assert rec["conv1"]["input"] == "int8" and "graph input" in rec["conv1"]["note"]
    assert rec["fc4"]["input"] == "int8" and "reshape" in rec["fc4"]["note"]
    assert rec["conv2"]["input"] == "uint4" and rec["dw3"]["input"] == "int4"
    assert rec["fc4"]["weights"] == "int4"


def test_selectors():
    g = build_graph()
    res = requantize(g, {"conv*": "W4A8", "4": "W2A8"}, calib())
    ws = {r["layer"]: r["weights"] for r in res.records}
    assert ws == {"conv1": "int4", "pool1": "", "conv2": "int4", "dw3": "int8", "fc4": "int2"}
    with pytest.raises(QuantizeError, match="no weights"):
        requantize(g, {"pool1": "W4A4"}, calib())
    with pytest.raises(QuantizeError, match="matches no"):
        requantize(g, {"nothing*": "W4A4"}, calib())
    with pytest.raises(QuantizeError, match="out of range"):
        requantize(g, {"9": "W4A4"}, calib())
    with pytest.raises(QuantizeError, match="asks for|ask for"):
        requantize(g, {"conv2": "W4A4", "2": "W2A4"}, calib())
    with pytest.raises(QuantizeError, match="nothing to re-quantize"):
        requantize(g, {}, calib())


def test_float_calibration_is_quantized_with_input_quant():
    g = build_graph()
    xi = calib(3)
    xf = (xi.astype(np.float64) + 5) * 0.02  # real values of the int8 samples
    a = requantize(g, {"conv2": "W4A4"}, xi).graph
    b = requantize(g, {"conv2": "W4A4"}, xf).graph
    assert a.tensors["c1"].quant == b.tensors["c1"].quant


def test_cli_quantize_w8a8(tmp_path, capsys):
    g = build_graph()
    src = tmp_path / "tiny.qnn"
    qnn.save(g, src)
    cal = tmp_path / "cal.npy"
    np.save(cal, calib()[:, 0])  # (N, 8, 8, 3): batch dim of 1 dropped
    out = tmp_path / "out.qnn"
    rc = main(["quantize", str(src), "--all", "W8A8", "--calibration", str(cal), "-o", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "conv2" in text and "exact" in text
    h = qnn.load(out)
    x = calib(1, seed=3)[0]
    np.testing.assert_array_equal(
        compute_outputs(Model(g), [x])["y"], compute_outputs(Model(h), [x])["y"]
    )


def test_cli_quantize_errors(tmp_path, capsys):
    src = tmp_path / "tiny.qnn"
    qnn.save(build_graph(), src)
    rc = main(["quantize", str(src), "--bits", "conv1=W4A4", "-o", str(tmp_path / "o.qnn")])
    assert rc == 2
    assert "conv1" in capsys.readouterr().err
    rc = main(["quantize", str(src), "--bits", "conv1", "-o", str(tmp_path / "o.qnn")])
    assert rc == 2
    assert "LAYER=" in capsys.readouterr().err


# -- SQNR (needs the sub-byte kernels) ---------------------------------------------------------
def test_sqnr_matches_independent_computation():
    g = build_graph()
    cal = calib(5)
    res = requantize(g, {"conv2": "W4A4", "fc4": "W4A8"}, cal)
    src, new = Model(g), Model(res.graph)
    sig = err = 0.0
    sig_c2 = err_c2 = 0.0
    for x in cal:
        a, b = compute_outputs(src, [x]), compute_outputs(new, [x])
        ra, rb = dequant(a["y"], g.tensors["y"]), dequant(b["y"], res.graph.tensors["y"])
        sig += float((ra**2).sum())
        err += float(((ra - rb) ** 2).sum())
        ra, rb = dequant(a["c2"], g.tensors["c2"]), dequant(b["c2"], res.graph.tensors["c2"])
        sig_c2 += float((ra**2).sum())
        err_c2 += float(((ra - rb) ** 2).sum())
    assert res.output_sqnr_db[0] == pytest.approx(10 * math.log10(sig / err))
    rec = {r["layer"]: r for r in res.records}
    assert rec["conv2"]["sqnr_db"] == pytest.approx(10 * math.log10(sig_c2 / err_c2))


def test_sqnr_decreases_with_bits():
    g = build_graph()
    cal = calib(6)
    s = {b: requantize(g, {"conv2": f"W{b}A8"}, cal).records[2]["sqnr_db"] for b in (8, 4, 2)}
    assert math.isinf(s[8])
    assert 12.0 < s[4] < 40.0  # ~6 dB per bit: 4-bit weights give roughly 20 dB
    assert s[2] < s[4] - 6.0
    a = {b: requantize(g, {"conv2": f"W8A{b}"}, cal).records[2]["sqnr_db"] for b in (4, 2)}
    assert a[2] < a[4] - 6.0


def test_binary_layer_runs_and_reports():
    g = build_graph()
    res = requantize(g, {"dw3": "W1A1"}, calib())
    rec = {r["layer"]: r for r in res.records}
    assert rec["dw3"]["precision"] == "W1A1"
    assert rec["conv2"]["output"] == "binary"
    assert all(r["sqnr_db"] is not None for r in res.records)
    # a binary output is the sign of the source's real output (0 -> +1)
    x = calib(1, seed=9)[0]
    a = compute_outputs(Model(g), [x])["c2"]
    b = compute_outputs(Model(res.graph), [x])["c2"]
    real = dequant(a, g.tensors["c2"])
    agree = np.mean(np.where(real >= 0, 1, -1) == b)
    assert agree > 0.95  # differs only where the int8 rounding of the source crosses 0


def test_shared_model_all_w4a8():
    p = model_path("vww_96_int8")
    import mcusim

    m = mcusim.load(p)
    x = np.random.default_rng(0).integers(
        -128, 128, size=(2, *m.graph.tensors[m.graph.inputs[0]].shape)
    )
    res = requantize(m, {}, x.astype(np.int8), default="W4A8")
    assert res.output_sqnr_db[0] is not None and res.output_sqnr_db[0] > 0
    macs = [r for r in res.records if r["op"] in ("conv2d", "depthwise_conv2d", "fully_connected")]
    assert all(r["weights"] == "int4" for r in macs)
    # W4A4 everywhere it can go: the first layer reads the graph input and the dense layer
    # reads the reshape's output, so both keep int8 inputs and say why
    res = requantize(m, {}, x.astype(np.int8), default="W4A4")
    macs = [r for r in res.records if r["op"] in ("conv2d", "depthwise_conv2d", "fully_connected")]
    assert "graph input" in macs[0]["note"] and macs[0]["input"] == "int8"
    assert "reshape" in macs[-1]["note"] and macs[-1]["input"] == "int8"
    assert all(r["input"] in ("uint4", "int4") for r in macs[1:-1])
    assert res.output_sqnr_db[0] is not None
