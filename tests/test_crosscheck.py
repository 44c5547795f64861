"""mcusim crosscheck: per-layer report fields, user firmware (--elf/--entry), the CLI.

Needs the Unicorn harness and a Cortex-M compiler (arm-none-eabi-gcc or ziglang); skipped
with a message otherwise. Uses a few layers of kws_ref_model to stay fast.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from conftest import model_path


def _cc() -> str:
    from mcusim.firmware import gcc_available, zig_available

    if gcc_available("cortex-m4"):
        return "gcc"
    if zig_available():
        return "zig"
    pytest.skip("no Cortex-M compiler (arm-none-eabi-gcc or ziglang)")


@pytest.fixture(scope="module")
def kws_report():
    from mcusim.crosscheck import crosscheck

    cc = _cc()
    return crosscheck(model_path("kws_ref_model"), "stm32l4r5", layers=[0, 1, 10, 11, 12], cc=cc)


def test_report_fields(kws_report):
    import mcusim

    rep = kws_report
    assert rep.device == "stm32l4r5" and rep.core == "cortex-m4"
    assert rep.compiler in ("gcc", "zig") and rep.compiler_version and rep.flags
    assert [r.index for r in rep.layers] == [0, 1, 10, 11, 12]
    run = mcusim.run(model_path("kws_ref_model"), "stm32l4r5")  # the same seed-0 inputs
    for r in rep.layers:
        assert r.skipped is None
        assert r.bit_exact is True and r.mismatch is None
        assert r.twin and r.instructions > 0
        # the model-run numbers are the runner's, unchanged; the compared ones are the same
        # schedule (same compute) with its memory stalls simulated as the firmware ran
        rec = run.layers[r.index]
        assert r.sim_model_cycles == rec.cycles
        assert r.sim_compute_cycles == rec.compute_cycles
        assert r.sim_cycles > r.sim_compute_cycles
        assert r.sim_kernel == rec.kernel
        assert r.fw_cycles >= r.fw_compute_cycles > 0
        assert r.delta_pct == pytest.approx(
            100 * (r.fw_cycles - r.sim_cycles) / r.sim_cycles, abs=0.01
        )
    assert rep.all_bit_exact
    assert rep.max_abs_delta_pct == max(abs(r.delta_pct) for r in rep.layers)
    d = rep.to_dict()
    assert d["all_bit_exact"] is True and len(d["layers"]) == 5
    json.dumps(d)  # serialisable


def test_softmax_is_timed_on_the_layers_input(kws_report):
    """kws's softmax row has fewer elements within |diff_min| of its maximum than the
    estimate expects: timed on the observed count (mcusim.observed), the simulator agrees
    with the twin within 5 %, both in instructions and in cycles as run."""
    from collections import Counter

    import mcusim
    from mcusim.kernels.schedules.cmsis_softmax import passing_elements
    from mcusim.kernels.softmax import softmax_prepare
    from mcusim.observed import OpData, observe

    m = mcusim.load(model_path("kws_ref_model"))
    g = m.graph
    run = mcusim.run(m, "stm32l4r5", keep_tensors=True)
    op = g.ops[12]
    x = run.tensors[op.inputs[0]]
    dmin = softmax_prepare(g, op).diff_min
    counts = [sum(int(v) - int(max(row)) >= dmin for v in row) for row in x.reshape(-1, 12)]
    assert observe(g, run.tensors)[12] == OpData(tuple(sorted(Counter(counts).items())))
    assert counts[0] < passing_elements(g, op, 12)
    est = mcusim.run(m, "stm32l4r5", mode="estimate").layers[12]
    assert run.layers[12].instructions < est.instructions
    r = kws_report.layers[-1]
    assert r.op == "softmax" and r.sim_instructions == run.layers[12].instructions
    assert abs(r.instructions - r.sim_instructions) <= 0.05 * r.sim_instructions
    assert abs(r.delta_pct) <= 5.0


def test_fc_is_timed_on_the_signs_of_its_row_pairs(kws_report):
    """The FC's rounding divide branches on the sign of each row pair's first value: kws's
    FC has all 6 negative on seed 0 (the estimate assumes half). Counted here with Python
    integers (TFLite's rounding high multiply), it is what mcusim.observed reports, and
    the simulator's cycles agree with the twin's within 5 %, compute and as run."""
    import mcusim
    from mcusim.observed import OpData, observe

    m = mcusim.load(model_path("kws_ref_model"))
    g = m.graph
    run = mcusim.run(m, "stm32l4r5", keep_tensors=True)
    op, p = g.ops[11], m.prepared()[11].params
    x = [int(v) for v in run.tensors[op.inputs[0]].ravel()]
    neg = 0
    for r in range(0, 2 * (p.weights.shape[0] // 2), 2):
        acc = sum(xi * int(wi) for xi, wi in zip(x, p.weights[r], strict=True)) + int(p.bias[r])
        assert int(p.shift[r]) <= 0
        neg += (acc * int(p.mult[r]) + (1 << 30)) >> 31 < 0
    assert observe(g, run.tensors)[11] == OpData(neg_pairs=((neg, 1),)) and neg == 6
    est = mcusim.run(m, "stm32l4r5", mode="estimate").layers[11]
    assert run.layers[11].compute_cycles > est.compute_cycles  # 6 taken branches, not 3
    r = kws_report.layers[3]
    assert r.op == "fully_connected" and r.sim_compute_cycles == run.layers[11].compute_cycles
    assert abs(r.compute_delta_pct) <= 5.0 and abs(r.delta_pct) <= 5.0


def test_conv_layer_instructions_close_to_simulator(kws_report):
    """The im2col conv twin mirrors the schedule's loops: instruction counts within 25 %."""
    r = kws_report.layers[0]
    assert r.op == "conv2d"
    assert abs(r.instructions - r.sim_instructions) / r.sim_instructions < 0.25


USER_FC = r"""
#include "mcusim_nn.h"
/* deliberately wrong: every output is the output zero point except the last, 0x55 */
int32_t my_fc(const mn_fc_args *a)
{
    int32_t n = a->batches * a->out_depth;
    for (int32_t i = 0; i < n; i++)
        a->output[i] = (int8_t)(i == n - 1 ? 0x55 : a->out_offset);
    return 0;
}
"""


def test_user_elf_mismatch_is_reported(tmp_path):
    from mcusim.crosscheck import crosscheck
    from mcusim.firmware import build
    from mcusim.firmware.layer import c_dir
    from mcusim.inputs import random_inputs
    from mcusim.model import load
    from mcusim.runner import compute_outputs

    cc = _cc()
    src = tmp_path / "my_fc.c"
    src.write_text(USER_FC)
    elf = build([src], "cortex-m4", cc=cc, entries=["my_fc"], include_dirs=[c_dir()]).elf
    path = model_path("kws_ref_model")
    rep = crosscheck(path, "stm32l4r5", layers=[11], elf=elf, entry="my_fc")
    r = rep.layers[0]
    assert rep.compiler == "user"
    m = load(path)
    ref = compute_outputs(m, random_inputs(m.graph, 0))[m.graph.ops[11].outputs[0]].ravel()
    out_zp = int(m.graph.tensors[m.graph.ops[11].outputs[0]].quant.zero_point[0])
    got = np.full(ref.size, out_zp, np.int8)
    got[-1] = 0x55
    diff = np.flatnonzero(got != ref)
    assert r.bit_exact is False
    assert r.mismatch == dict(
        index=int(diff[0]), firmware=int(got[diff[0]]), simulator=int(ref[diff[0]]),
        count=int(diff.size),
    )  # fmt: skip
    assert not rep.all_bit_exact


def test_unsupported_layer_is_skipped_with_reason():
    from mcusim.crosscheck import crosscheck
    from mcusim.dtypes import INT8, Quant
    from mcusim.graph import Graph, Op, Tensor
    from mcusim.model import Model
    from mcusim.ops import ElementwiseAttrs

    cc = _cc()
    q = Quant(np.array([0.1], np.float32), np.array([0], np.int64))
    t = {n: Tensor(n, (1, 8), INT8, q) for n in ("a", "b", "y")}
    op = Op("mul", "mul_0", ["a", "b"], ["y"], ElementwiseAttrs(), source_index=0)
    m = Model(Graph(t, [op], ["a", "b"], ["y"], name="one_mul"))
    rep = crosscheck(m, "stm32l4r5", cc=cc)
    assert rep.layers[0].skipped and "mul" in rep.layers[0].skipped
    assert rep.checked == [] and rep.max_abs_delta_pct is None


def test_layers_spec_errors():
    from mcusim.crosscheck import _parse_layers
    from mcusim.errors import UserError

    assert _parse_layers("0,3,2-4", 13) == [0, 2, 3, 4]
    assert _parse_layers(None, 5) is None
    with pytest.raises(UserError, match="out of range"):
        _parse_layers("13", 13)
    with pytest.raises(UserError, match="expected indices"):
        _parse_layers("a", 13)


def test_cli_subcommand_json(tmp_path, capsys):
    from mcusim.crosscheck import add_crosscheck_parser

    cc = _cc()
    parser = argparse.ArgumentParser()
    add_crosscheck_parser(parser.add_subparsers())
    out = tmp_path / "x.json"
    args = parser.parse_args(
        ["crosscheck", str(model_path("kws_ref_model")), "--device", "stm32f746",
         "--layers", "10-12", "--cc", cc, "--json", str(out)]
    )  # fmt: skip
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "3/3 checked layers bit-exact" in text
    d = json.loads(out.read_text())
    assert d["device"] == "stm32f746" and d["core"] == "cortex-m7"
    assert [r["index"] for r in d["layers"]] == [10, 11, 12]
    assert all(r["bit_exact"] for r in d["layers"])


# ------------------------------------------------------------------ sub-byte / binary / Xpulp


def _zig_or_skip():
    from mcusim.firmware import zig_available

    if not zig_available():
        pytest.skip("ziglang not installed (pip install ziglang): no RV32 compiler")


@pytest.mark.parametrize("prec", ["W4A4", "W2A2"])
def test_xpulpnn_routes_xpulp_twin(prec):
    """On the xpulpnn device (ISA family rv32-xpulpnn) conv / FC layers of a re-quantized
    kws_ref_model run the Xpulp twin (pv.sdot* .n/.c/.b), bit-exact, with trace cycles
    next to the PULP-NN schedules' (the deltas are informative, not bounded here)."""
    from mcusim.crosscheck import crosscheck
    from mcusim.model import Model, load
    from mcusim.quantize import requantize

    _zig_or_skip()
    m = Model(requantize(load(model_path("kws_ref_model")), None, None, default=prec).graph)
    rep = crosscheck(m, "xpulpnn", layers=[2, 9, 11], cc="zig")
    assert rep.core == "xpulpnn" and rep.all_bit_exact
    conv, pool, fc = rep.layers
    lanes = ".n" if prec == "W4A4" else ".c"
    assert f"sdotusp{lanes}" in conv.twin and "rv32-xpulpnn" in conv.twin
    assert "pv.sdotsp.b" in fc.twin
    assert "portable C" in pool.twin  # no Xpulp pooling twin: RV32IMC C
    for r in rep.layers:
        assert r.fw_cycles >= r.fw_compute_cycles > 0 and r.sim_cycles > 0
        assert r.delta_pct == pytest.approx(
            100 * (r.fw_cycles - r.sim_cycles) / r.sim_cycles, abs=0.01
        )


def _binary_graph():
    """A binary network built here: W1A1 3x3 conv (binary output, thresholds) -> reshape
    -> W1A1 fully connected (int4 output, thresholds)."""
    from mcusim.dtypes import BINARY, INT32, Quant, elem_type
    from mcusim.graph import Graph, Op, Tensor
    from mcusim.model import Model
    from mcusim.ops import Conv2DAttrs, FullyConnectedAttrs, ReshapeAttrs

    rng = np.random.default_rng(21)

    def q(s):
        s = np.asarray(s, np.float32).reshape(-1)
        return Quant(s, np.zeros(s.size, np.int64), 0 if s.size > 1 else None)

    def pm(shape):
        return (2 * rng.integers(0, 2, shape) - 1).astype(np.int8)

    cin, c1, k = 24, 16, 3
    int4 = elem_type("int4")
    t = {
        "x": Tensor("x", (1, 6, 6, cin), BINARY, q(1.0)),
        "w1": Tensor("w1", (c1, k, k, cin), BINARY, q(np.ones(c1)), pm((c1, k, k, cin))),
        "b1": Tensor("b1", (c1,), INT32, None, rng.integers(-3, 4, c1).astype(np.int32)),
        "t1": Tensor("t1", (c1, 1), INT32, None, rng.integers(-20, 20, (c1, 1)).astype(np.int32)),
        "y1": Tensor("y1", (1, 6, 6, c1), BINARY, q(1.0)),
        "s": Tensor("s", (2,), INT32, None, np.array([1, 6 * 6 * c1], np.int32)),
        "f": Tensor("f", (1, 6 * 6 * c1), BINARY, q(1.0)),
        "w2": Tensor("w2", (10, 576), BINARY, q(np.ones(10)), pm((10, 576))),
        "t2": Tensor(
            "t2", (10, 15), INT32, None,
            np.sort(rng.integers(-60, 60, (10, 15)), axis=1).astype(np.int32),
        ),
        "y": Tensor("y", (1, 10), int4, q(1.0)),
    }  # fmt: skip
    ops = [
        Op("conv2d", "bconv", ["x", "w1", "b1", "t1"], ["y1"],
           Conv2DAttrs(padding="same", requant="thresholds"), source_index=0),
        Op("reshape", "flat", ["y1", "s"], ["f"], ReshapeAttrs(shape=(1, 576)), source_index=1),
        Op("fully_connected", "bfc", ["f", "w2", "", "t2"], ["y"],
           FullyConnectedAttrs(requant="thresholds"), source_index=2),
    ]  # fmt: skip
    g = Graph(t, ops, ["x"], ["y"], name="binary_net")
    g.validate()
    return Model(g)


def test_binary_graph_on_cortex_m4():
    """The binary network's conv and FC run the XNOR-popcount twin on stm32l4r5, bit-exact,
    and the trace counts the USADA8 popcount loop (no unmodeled instructions)."""
    from mcusim.crosscheck import crosscheck

    cc = _cc()
    # explicit ±1 inputs: mcusim.inputs.random_inputs draws 0 too for a binary input
    x = (2 * np.random.default_rng(3).integers(0, 2, (1, 6, 6, 24)) - 1).astype(np.int8)
    rep = crosscheck(_binary_graph(), "stm32l4r5", cc=cc, inputs=[x])
    conv, flat, fc = rep.layers
    assert rep.all_bit_exact and not any(r.skipped for r in rep.layers)
    assert "XNOR" in conv.twin and "XNOR" in fc.twin and flat.twin == "memcpy"
    for r in (conv, fc):
        assert r.unmodeled == {} and r.fw_compute_cycles > 0


def test_as_run_layout_is_the_twins_buffers():
    """The simulator's side of the comparison puts every schedule stream on the twin's
    buffer (weights/bias in flash = the constants memory, per-channel parameters and
    activations in RAM = the arena memory, code at the entry), and its cold simulation
    there is what the report compares."""
    from mcusim.cache import simulate_at
    from mcusim.costs import layer_cost
    from mcusim.devices.loader import load_device
    from mcusim.firmware import Tracer, harness_for
    from mcusim.firmware.layer import build_twins, marshal, run_firmware, stream_layout
    from mcusim.firmware.trace import device_address
    from mcusim.inputs import random_inputs
    from mcusim.isa.addresses import memory_of
    from mcusim.model import load
    from mcusim.runner import compute_outputs, device_costs

    cc = _cc()
    m = load(model_path("kws_ref_model"))
    dev = load_device("stm32l4r5")
    g = m.graph
    env = compute_outputs(m, random_inputs(g, 0))
    i = 1  # depthwise 3x3
    p = m.prepared()[i]
    call = marshal(g, g.ops[i], p.params, [env[n] for n in p.inputs])
    h = harness_for(build_twins("cortex-m4", cc).elf, "cortex-m4")
    run = run_firmware(call, h, tracer=Tracer(device=dev))
    bases, code = stream_layout(call, run, h, dev)
    names = [mm.name for mm in dev.memories]
    flash, ram = (
        names.index(dev.memory_for("constants").name),
        names.index(dev.memory_for("arena").name),
    )
    for tag, buf in [("input", "input"), ("output", "output"), ("weights", "weights"),
                     ("bias", "bias"), ("qmult", "mult"), ("qparams", "shift")]:  # fmt: skip
        assert bases[tag][0] == device_address(dev, h, run.addrs[buf])
    assert memory_of(bases["weights"][0]) == memory_of(bases["bias"][0]) == flash
    assert memory_of(bases["qparams"][0]) == memory_of(bases["input"][0]) == ram
    assert memory_of(bases["qmult"][0]) == ram
    assert bases["weights"][1] == 9 * 64 and bases["qparams"][1] == bases["qmult"][1] == 4 * 64
    assert code == device_address(dev, h, h.symbol(call.entry) & ~1, fetch=True)
    tm = device_costs(m, dev).timings[i]
    st = simulate_at(tm.program, dev, bases, code)
    cost = layer_cost(dev, tm.compute_cycles, tm.instructions, tm.code_bytes, tm.streams, {},
                      cache=st)  # fmt: skip
    from mcusim.crosscheck import crosscheck

    rep = crosscheck(m, dev, layers=[i], cc=cc)
    assert rep.layers[0].sim_cycles == cost.cycles
    # cold, alone: fewer flash-accelerator misses than inside the model, never zero
    assert 0 < st.levels["flash_accel_d"]["misses"]
