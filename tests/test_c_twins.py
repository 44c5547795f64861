"""The C twins (kernels/c) against the numba kernels, bit for bit.

Host: the same freestanding C compiled for this machine (portable DSP helpers) and called
through ctypes on seeded random layers that reach every loop of every path (odd channel
and pixel counts, reduction lengths that are not multiples of 4 or 16, padding on every
border, strides, groups, channel multipliers, relu clamps). Firmware: the twins built
for Cortex-M4 (DSP instructions) run in the Unicorn harness on layers of kws_ref_model;
skipped with a message when the harness or a cross compiler is missing.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from mcusim.dtypes import INT8, INT32, Quant
from mcusim.graph import Graph, Op, Tensor
from mcusim.kernels import kernel_for
from mcusim.ops import (
    Conv2DAttrs,
    DepthwiseConv2DAttrs,
    ElementwiseAttrs,
    FullyConnectedAttrs,
    Pool2DAttrs,
    ReshapeAttrs,
    SoftmaxAttrs,
    conv_output_size,
)

from conftest import model_path

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="no host gcc for ctypes")


# ------------------------------------------------------------------ one-op graphs


def _q(scale, zp=0, axis=None) -> Quant:
    sc = np.asarray(scale, np.float32).reshape(-1)
    z = np.broadcast_to(np.asarray(zp, np.int64).reshape(-1), sc.shape).copy()
    return Quant(sc, z, axis if sc.size > 1 else None)


class OneOp:
    """A one-op graph with seeded data; ``check`` runs numba and the host twin."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.tensors: dict[str, Tensor] = {}

    def act(self, name, shape, scale, zp) -> str:
        self.tensors[name] = Tensor(name, tuple(shape), INT8, _q(scale, zp))
        return name

    def const(self, name, data, dtype=INT8, quant=None) -> str:
        self.tensors[name] = Tensor(name, tuple(data.shape), dtype, quant, data)
        return name

    def graph(self, kind, attrs, inputs, out) -> tuple[Graph, Op]:
        op = Op(kind, f"{kind}_0", list(inputs), [out], attrs, source_index=0)
        acts = [n for n in inputs if n and self.tensors[n].data is None]
        return Graph(dict(self.tensors), [op], acts, [out], name=f"one_{kind}"), op

    def x(self, name) -> np.ndarray:
        t = self.tensors[name]
        return self.rng.integers(-128, 128, size=t.shape).astype(np.int8)


def run_both(g: Graph, op: Op, xs: list[np.ndarray]):
    from mcusim.firmware.layer import marshal, run_host

    kdef = kernel_for(op.kind)
    p = kdef.prepare(g, op)
    ref = kdef.compute(p, xs)[0]
    call = marshal(g, op, p, xs)
    out, ret = run_host(call)
    assert ret == 0
    return out, np.asarray(ref).reshape(out.shape), call


def assert_same(out, ref):
    diff = np.flatnonzero(out.ravel() != ref.ravel())
    assert diff.size == 0, (
        f"{diff.size} of {out.size} differ; first [{diff[0]}]: twin {out.ravel()[diff[0]]} "
        f"numba {ref.ravel()[diff[0]]}"
    )


def _same_pad(n, k, s, d=1):
    return conv_output_size(n, k, s, d, "same")


def conv_case(seed, h, w, cin, cout, k, stride=(1, 1), pad="same", groups=1, act="none",
              dil=(1, 1), in_zp=5, bias=True, y_scale=0.08):  # fmt: skip
    rng = np.random.default_rng(seed)
    b = OneOp(rng)
    x = b.act("x", (1, h, w, cin), 0.05, in_zp)
    cg = cin // groups
    wq = _q(rng.uniform(0.002, 0.02, cout), 0, 0)
    wt = b.const("w", rng.integers(-127, 128, (cout, k[0], k[1], cg)).astype(np.int8), INT8, wq)
    bt = b.const("b", rng.integers(-3000, 3000, cout).astype(np.int32), INT32) if bias else ""
    oh = conv_output_size(h, k[0], stride[0], dil[0], pad)
    ow = conv_output_size(w, k[1], stride[1], dil[1], pad)
    y = b.act("y", (1, oh, ow, cout), y_scale, -3)
    attrs = Conv2DAttrs(stride=stride, dilation=dil, padding=pad, activation=act)
    g, op = b.graph("conv2d", attrs, ["x", wt, bt], y)
    return g, op, [b.x(x)]


CONV_CASES = {
    "3x3_s1_same": dict(h=9, w=7, cin=5, cout=7, k=(3, 3)),
    "3x3_s2_same_relu": dict(h=11, w=10, cin=8, cout=6, k=(3, 3), stride=(2, 2), act="relu"),
    "5x3_valid_oddpix": dict(h=8, w=9, cin=3, cout=5, k=(5, 3), pad="valid"),
    "10x4_s2_cin1": dict(h=17, w=10, cin=1, cout=9, k=(10, 4), stride=(2, 2)),
    "3x3_groups2": dict(h=6, w=6, cin=8, cout=6, k=(3, 3), groups=2),
    "3x3_dilated": dict(h=9, w=9, cin=4, cout=4, k=(3, 3), dil=(2, 2)),
    "3x3_nobias_k36": dict(h=5, w=6, cin=4, cout=3, k=(3, 3), bias=False),
    "1x1_s1_k37": dict(h=5, w=7, cin=37, cout=9, k=(1, 1)),
    "1x1_s1_k64_oddrows": dict(h=5, w=5, cin=64, cout=16, k=(1, 1)),
    "1x1_s2": dict(h=9, w=8, cin=20, cout=7, k=(1, 1), stride=(2, 2)),
    "1x1_relu6_zp": dict(h=4, w=4, cin=16, cout=8, k=(1, 1), act="relu6", in_zp=-128),
}


@pytest.mark.parametrize("name", list(CONV_CASES))
def test_conv_twin_bit_exact(name):
    g, op, xs = conv_case(len(name), **CONV_CASES[name])
    out, ref, call = run_both(g, op, xs)
    assert_same(out, ref)
    one = CONV_CASES[name]["k"] == (1, 1)
    assert ("1x1" in call.path) == one


def dw_case(seed, h, w, cin, mult, k, stride=(1, 1), pad="same", dil=(1, 1), act="none"):
    rng = np.random.default_rng(seed)
    b = OneOp(rng)
    cout = cin * mult
    x = b.act("x", (1, h, w, cin), 0.04, -7)
    wq = _q(rng.uniform(0.002, 0.03, cout), 0, 3)
    wt = b.const("w", rng.integers(-127, 128, (1, k[0], k[1], cout)).astype(np.int8), INT8, wq)
    bt = b.const("b", rng.integers(-2000, 2000, cout).astype(np.int32), INT32)
    oh = conv_output_size(h, k[0], stride[0], dil[0], pad)
    ow = conv_output_size(w, k[1], stride[1], dil[1], pad)
    y = b.act("y", (1, oh, ow, cout), 0.06, 4)
    attrs = DepthwiseConv2DAttrs(
        stride=stride, dilation=dil, padding=pad, activation=act, depth_multiplier=mult
    )
    g, op = b.graph("depthwise_conv2d", attrs, ["x", wt, bt], y)
    return g, op, [b.x(x)]


DW_CASES = {
    "3x3_s1_c11": (dict(h=7, w=6, cin=11, mult=1, k=(3, 3)), "3x3"),
    "3x3_s2_c8_relu": (dict(h=9, w=8, cin=8, mult=1, k=(3, 3), stride=(2, 2), act="relu"), "3x3"),
    "3x3_valid_c6": (dict(h=6, w=5, cin=6, mult=1, k=(3, 3), pad="valid"), "3x3"),
    "mult8_10x8_s2": (
        dict(h=13, w=9, cin=1, mult=8, k=(10, 8), stride=(2, 2)),
        "channel multiplier 4",
    ),
    "mult4_c3": (dict(h=6, w=6, cin=3, mult=4, k=(3, 3)), "channel multiplier 4"),
    "mult2_generic": (dict(h=6, w=5, cin=3, mult=2, k=(3, 3)), "generic"),
    "5x5_generic": (dict(h=8, w=8, cin=5, mult=1, k=(5, 5)), "generic"),
    "dilated_generic": (dict(h=9, w=9, cin=4, mult=1, k=(3, 3), dil=(2, 2)), "generic"),
}


@pytest.mark.parametrize("name", list(DW_CASES))
def test_depthwise_twin_bit_exact(name):
    spec, path = DW_CASES[name]
    g, op, xs = dw_case(len(name) + 100, **spec)
    out, ref, call = run_both(g, op, xs)
    assert_same(out, ref)
    assert call.path.startswith(path)


@pytest.mark.parametrize(
    "batches,k,n,per_channel,act",
    [(1, 64, 12, False, "none"), (3, 37, 7, True, "relu"), (1, 250, 1, False, "none"),
     (2, 3, 5, True, "none"), (1, 640, 128, False, "relu")],
)  # fmt: skip
def test_fully_connected_twin_bit_exact(batches, k, n, per_channel, act):
    rng = np.random.default_rng(k * n)
    b = OneOp(rng)
    x = b.act("x", (batches, k), 0.03, 9)
    ws = rng.uniform(0.002, 0.02, n) if per_channel else [0.01]
    wt = b.const("w", rng.integers(-127, 128, (n, k)).astype(np.int8), INT8, _q(ws, 0, 0))
    bt = b.const("b", rng.integers(-5000, 5000, n).astype(np.int32), INT32)
    y = b.act("y", (batches, n), 0.1, -11)
    g, op = b.graph("fully_connected", FullyConnectedAttrs(activation=act), ["x", wt, bt], y)
    out, ref, _ = run_both(g, op, [b.x(x)])
    assert_same(out, ref)


@pytest.mark.parametrize("kind", ["avg_pool2d", "max_pool2d"])
@pytest.mark.parametrize(
    "h,w,c,f,s,pad,act",
    [(25, 5, 64, (25, 5), (1, 1), "valid", "none"), (7, 6, 13, (3, 3), (2, 2), "same", "relu"),
     (8, 8, 5, (2, 2), (2, 2), "valid", "none"), (5, 5, 3, (3, 3), (1, 1), "same", "none")],
)  # fmt: skip
def test_pool_twin_bit_exact(kind, h, w, c, f, s, pad, act):
    rng = np.random.default_rng(h * w * c)
    b = OneOp(rng)
    x = b.act("x", (1, h, w, c), 0.05, -2)
    oh, ow = conv_output_size(h, f[0], s[0], 1, pad), conv_output_size(w, f[1], s[1], 1, pad)
    y = b.act("y", (1, oh, ow, c), 0.05, -2)
    attrs = Pool2DAttrs(filter=f, stride=s, padding=pad, activation=act)
    g, op = b.graph(kind, attrs, ["x"], y)
    out, ref, _ = run_both(g, op, [b.x(x)])
    assert_same(out, ref)


@pytest.mark.parametrize("kind", ["add", "sub"])
@pytest.mark.parametrize("n,act,bshape", [(1023, "none", None), (64, "relu", None),
                                          (30, "none", (1, 1, 1, 6))])  # fmt: skip
def test_add_sub_twin_bit_exact(kind, n, act, bshape):
    rng = np.random.default_rng(n)
    b = OneOp(rng)
    shape = (1, 1, n // 6, 6) if bshape else (1, n)
    x1 = b.act("x1", shape, 0.07, 3)
    x2 = b.act("x2", bshape or shape, 0.03, -20)
    y = b.act("y", shape, 0.09, 1)
    g, op = b.graph(kind, ElementwiseAttrs(activation=act), ["x1", "x2"], y)
    out, ref, call = run_both(g, op, [b.x(x1), b.x(x2)])
    assert_same(out, ref)
    assert ("broadcast" in call.path) == (bshape is not None)


@pytest.mark.parametrize("rows,depth,scale", [(1, 12, 0.1), (5, 37, 0.05), (3, 2, 0.3),
                                              (2, 100, 0.02)])  # fmt: skip
def test_softmax_twin_bit_exact(rows, depth, scale):
    rng = np.random.default_rng(depth)
    b = OneOp(rng)
    x = b.act("x", (rows, depth), scale, 7)
    b.tensors["y"] = Tensor("y", (rows, depth), INT8, _q(1 / 256, -128))
    g, op = b.graph("softmax", SoftmaxAttrs(beta=1.0), ["x"], "y")
    out, ref, _ = run_both(g, op, [b.x(x)])
    assert_same(out, ref)
    assert out.max() > -128  # the row maximum always gets a real probability


def test_reshape_twin_copies():
    rng = np.random.default_rng(1)
    b = OneOp(rng)
    x = b.act("x", (1, 1, 3, 7), 0.1, 0)
    y = b.act("y", (1, 21), 0.1, 0)
    shp = b.const("shape", np.array([1, 21], np.int32), INT32)
    g, op = b.graph("reshape", ReshapeAttrs(shape=(1, 21)), ["x", shp], y)
    xs = [b.x(x)]
    out, ref, _ = run_both(g, op, xs)
    assert_same(out, xs[0].reshape(1, 21))


def test_requantize_edges_match_mbqm():
    """mn_requantize through a 1-element FC against kernels/fixedpoint.mbqm on edge values:
    exact ties, the largest accumulators, left and right shifts; every other call through
    the per-channel entry (arrays), the rest through the per-tensor one (scalars)."""
    from mcusim.firmware.layer import Buf, LayerCall, run_host
    from mcusim.kernels.fixedpoint import mbqm

    rng = np.random.default_rng(3)
    accs = [0, 1, -1, (1 << 30), -(1 << 30), (1 << 31) - 1, -(1 << 31), 12345, -12345]
    accs += list(rng.integers(-(1 << 31), 1 << 31, 200))
    for m, s in [(1 << 30, -1), (1 << 30, 0), (1518500250, -5), (2147483647, -31), (1 << 30, 1),
                 (1073741825, 2), (1800000000, -12)]:  # fmt: skip
        for k, acc in enumerate(accs):
            # x = 1, weight = 1, bias = acc - 1 - in_offset... use in_offset 0: acc = bias + 1
            bias = np.array([np.int32(np.int64(acc) - 1)], np.int32)
            expect = int(np.clip(mbqm(np.int64(acc), np.int64(m), np.int64(s)), -128, 127))
            call = LayerCall(
                "fully_connected", "mn_fully_connected_s8", "fc",
                dict(input="x", weights="w", bias="b", mult="m", shift="s", output="y",
                     batches=1, in_depth=1, out_depth=1, in_offset=0, out_offset=0,
                     act_min=-128, act_max=127, per_channel=k % 2),
                (Buf("x", 1, np.array([1], np.int8)), Buf("w", 1, np.array([1], np.int8)),
                 Buf("b", 4, bias), Buf("m", 4, np.array([m], np.int32)),
                 Buf("s", 4, np.array([s], np.int32)), Buf("y", 1)),
                "y", (1,),
            )  # fmt: skip
            out, _ = run_host(call)
            assert int(out[0]) == expect, (acc, m, s)


def test_bad_arguments_return_error():
    from dataclasses import replace

    g, op, xs = conv_case(1, **CONV_CASES["3x3_s1_same"])
    from mcusim.firmware.layer import marshal, run_host

    p = kernel_for("conv2d").prepare(g, op)
    call = marshal(g, op, p, xs)
    bad = replace(call, values={**call.values, "groups": 3})  # 5 channels are not 3 groups
    _, ret = run_host(bad)
    assert ret == -1


# ------------------------------------------------------------------ firmware (Unicorn)


def _firmware_or_skip(cc: str, core: str = "cortex-m4"):
    """The Unicorn harness with every twin built by ``cc`` for ``core``; skips when the
    compiler is missing (unicorn and capstone are dependencies)."""
    from mcusim.firmware import gcc_available, harness_for, zig_available

    if cc == "gcc" and not gcc_available(core):
        pytest.skip("arm-none-eabi-gcc not installed")
    if cc == "zig" and not zig_available():
        pytest.skip("ziglang not installed (pip install ziglang)")
    from mcusim.firmware.layer import build_twins

    return harness_for(build_twins(core, cc).elf, core)


@pytest.mark.parametrize("cc", ["gcc", "zig"])
def test_firmware_twins_kws_layers(cc):
    """conv (im2col), depthwise 3x3, 1x1, avg pool, reshape, FC and softmax of
    kws_ref_model in Unicorn (Cortex-M4 DSP build) == numba, and cost instructions."""
    from mcusim.devices.loader import load_device
    from mcusim.firmware import Tracer
    from mcusim.firmware.layer import marshal, run_firmware
    from mcusim.inputs import random_inputs
    from mcusim.model import load
    from mcusim.runner import compute_outputs, time_op

    h = _firmware_or_skip(cc)
    dev = load_device("stm32l4r5")
    m = load(model_path("kws_ref_model"))
    g = m.graph
    env = compute_outputs(m, random_inputs(g, 1))
    for i in (0, 1, 2, 9, 10, 11, 12):
        op, p = g.ops[i], m.prepared()[i]
        call = marshal(g, op, p.params, [env[n] for n in p.inputs])
        run = run_firmware(call, h, tracer=Tracer(core="cortex-m4"))
        assert run.value == 0
        assert_same(run.output, np.asarray(env[op.outputs[0]]).reshape(run.output.shape))
        tr = run.result.trace
        assert tr.instructions > 0 and tr.cycles >= tr.instructions // 2
        # same kernel structure as the simulator's schedule: instruction counts agree to
        # within a factor of 1.5 (the crosscheck report gives the exact deltas)
        # (softmax: the schedule estimates how many elements pass the diff_min test)
        sim = time_op(dev, g, op).instructions
        assert sim / 1.5 < tr.instructions < sim * 1.5, (i, op.kind, tr.instructions, sim)


# ------------------------------------------------------------------ Helium (QEMU) and RV32


@pytest.mark.parametrize("layer", [0, 2, 11])
def test_helium_twins_bit_exact_in_qemu(layer):
    """kws_ref_model's im2col conv, 1x1 conv and FC built for Cortex-M55 (VMLADAVA/VADDVA
    with VCTP tail predication) and run as whole firmware in QEMU mps3-an547 == numba."""
    from mcusim.firmware import zig_available
    from mcusim.firmware.qemu import qemu_available

    if not qemu_available():
        pytest.skip("qemu-system-arm not installed (Helium twins run only in QEMU)")
    if not zig_available():
        pytest.skip("ziglang not installed (pip install ziglang)")
    from mcusim.firmware.layer import marshal, run_qemu
    from mcusim.inputs import random_inputs
    from mcusim.model import load
    from mcusim.runner import compute_outputs

    m = load(model_path("kws_ref_model"))
    g = m.graph
    env = compute_outputs(m, random_inputs(g, 2))
    op, p = g.ops[layer], m.prepared()[layer]
    out, ret = run_qemu(marshal(g, op, p.params, [env[n] for n in p.inputs]), cc="zig")
    assert ret == 0
    assert_same(out, np.asarray(env[op.outputs[0]]).reshape(out.shape))


def test_helium_build_uses_mve():
    """The Helium build really takes the MVE branch (VMLADAVA / VCTP in the code)."""
    from mcusim.firmware import build, zig_available

    if not zig_available() or shutil.which("arm-none-eabi-objdump") is None:
        pytest.skip("ziglang or arm-none-eabi-objdump missing")
    import subprocess

    from mcusim.firmware.layer import ENTRY_NAMES, c_dir, c_sources

    elf = build(
        c_sources(), "cortex-m55", cc="zig", entries=list(ENTRY_NAMES), include_dirs=[c_dir()]
    ).elf
    dis = subprocess.run(
        ["arm-none-eabi-objdump", "-d", "-marmv8.1-m.main", str(elf)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # VMLADAVA disassembles as its alias VMLAVA; clang folds VCTP into DLSTP/LETP loops
    assert "vaddva.s8" in dis and ("vmlava.s8" in dis or "vmladava.s8" in dis)
    assert "vctp.8" in dis or "dlstp.8" in dis


# ------------------------------------------------------------------ sub-byte conv / FC


def subbyte_case(seed, kind, x_t, w_t, y_t, h=6, w=5, cin=7, cout=5, k=(3, 3), stride=(1, 1),
                 pad="same", groups=1, thresholds=False, act="none", thr_mag=150):  # fmt: skip
    from mcusim.dtypes import elem_type

    rng = np.random.default_rng(seed)
    b = OneOp(rng)
    xt, wt_, yt = elem_type(x_t), elem_type(w_t), elem_type(y_t)
    x_zp = 0 if xt.binary else int(rng.integers(xt.min, xt.max + 1))
    shape_x = (1, h, w, cin) if kind == "conv2d" else (2, cin)
    b.tensors["x"] = Tensor("x", shape_x, xt, _q(0.05, x_zp))
    cg = cin // groups
    wshape = (cout, k[0], k[1], cg) if kind == "conv2d" else (cout, cin)
    wdata = rng.integers(wt_.min, wt_.max + 1, wshape).astype(np.int8)
    b.tensors["w"] = Tensor("w", wshape, wt_, _q(rng.uniform(0.01, 0.1, cout), 0, 0), wdata)
    b.const("b", rng.integers(-60, 60, cout).astype(np.int32), INT32)
    if kind == "conv2d":
        oh = conv_output_size(h, k[0], stride[0], 1, pad)
        ow = conv_output_size(w, k[1], stride[1], 1, pad)
        yshape = (1, oh, ow, cout)
    else:
        yshape = (2, cout)
    y_zp = 0 if (yt.binary or thresholds) else int(rng.integers(yt.min, yt.max + 1))
    b.tensors["y"] = Tensor("y", yshape, yt, _q(0.2, y_zp))
    inputs = ["x", "w", "b"]
    req = "thresholds" if thresholds else "fixed_point"
    if thresholds:
        levels = 1 if yt.binary else (1 << yt.bits) - 1
        thr = np.sort(rng.integers(-thr_mag, thr_mag, (cout, levels)), axis=1).astype(np.int32)
        inputs.append(b.const("t", thr, INT32))
    if kind == "conv2d":
        attrs = Conv2DAttrs(stride=stride, padding=pad, activation=act, requant=req)
    else:
        attrs = FullyConnectedAttrs(activation=act, requant=req)
    g, op = b.graph(kind, attrs, inputs, "y")
    xs = [rng.integers(xt.min, xt.max + 1, shape_x).astype(xt.np_dtype)]
    return g, op, xs


SUBBYTE_CASES = {
    "W4A8_int4out": dict(kind="conv2d", x_t="int8", w_t="int4", y_t="int4"),
    "W4A4_u4_s2": dict(kind="conv2d", x_t="uint4", w_t="int4", y_t="uint4", stride=(2, 2)),
    "W2A2_thr_int2": dict(kind="conv2d", x_t="int2", w_t="int2", y_t="int2", thresholds=True),
    "W4A4_thr_binary": dict(
        kind="conv2d", x_t="int4", w_t="int4", y_t="binary", thresholds=True
    ),  # fmt: skip
    "W2A8_u8_groups": dict(
        kind="conv2d", x_t="uint8", w_t="int2", y_t="int8", cin=8, cout=6, groups=2, act="relu"
    ),  # fmt: skip
    "W4A2_valid_5x1": dict(
        kind="conv2d", x_t="uint2", w_t="int4", y_t="int4", k=(5, 1), pad="valid", h=9, cout=6
    ),  # fmt: skip
    "FC_W4A4": dict(kind="fully_connected", x_t="int4", w_t="int4", y_t="int4", cin=37),
    "FC_W2A8_thr_u4": dict(
        kind="fully_connected",
        x_t="int8",
        w_t="int2",
        y_t="uint4",
        cin=70,
        thresholds=True,
        thr_mag=4000,
    ),  # fmt: skip
}


@pytest.mark.parametrize("name", list(SUBBYTE_CASES))
def test_subbyte_twin_bit_exact(name):
    g, op, xs = subbyte_case(len(name) * 7, **SUBBYTE_CASES[name])
    out, ref, call = run_both(g, op, xs)
    assert call.entry == "mn_conv_subbyte"
    assert_same(out, ref)
    assert len(np.unique(ref)) > 1  # outputs are not all clamped to one value


def test_subbyte_firmware_bit_exact():
    """A W4A4 conv with a packed int4 output in the Cortex-M4 harness (DSP build)."""
    from mcusim.firmware import Tracer
    from mcusim.firmware.layer import marshal, run_firmware

    h = _firmware_or_skip("gcc")
    for name in ("W4A4_u4_s2", "W2A2_thr_int2", "FC_W4A4"):
        g, op, xs = subbyte_case(len(name) * 7, **SUBBYTE_CASES[name])
        kdef = kernel_for(op.kind)
        p = kdef.prepare(g, op)
        ref = np.asarray(kdef.compute(p, xs)[0])
        run = run_firmware(marshal(g, op, p, xs), h, tracer=Tracer(core="cortex-m4"))
        assert run.value == 0
        assert_same(run.output, ref.reshape(run.output.shape))
        assert run.result.trace.instructions > 0


# ------------------------------------------------------------------ binary (W1A1) conv / FC


def binary_case(seed, kind, y_t="binary", h=6, w=5, cin=7, cout=5, k=(3, 3), stride=(1, 1),
                pad="same", groups=1, batches=1):  # fmt: skip
    """A W1A1 layer with thresholds requantization (binary or int-N output)."""
    from mcusim.dtypes import BINARY, elem_type

    rng = np.random.default_rng(seed)
    b = OneOp(rng)
    yt = elem_type(y_t)
    shape_x = (batches, h, w, cin) if kind == "conv2d" else (batches, cin)
    b.tensors["x"] = Tensor("x", shape_x, BINARY, _q(1.0, 0))
    cg = cin // groups
    wshape = (cout, k[0], k[1], cg) if kind == "conv2d" else (cout, cin)
    wdata = (2 * rng.integers(0, 2, wshape) - 1).astype(np.int8)
    b.tensors["w"] = Tensor("w", wshape, BINARY, _q(rng.uniform(0.5, 1.0, cout), 0, 0), wdata)
    b.const("b", rng.integers(-4, 5, cout).astype(np.int32), INT32)
    if kind == "conv2d":
        oh = conv_output_size(h, k[0], stride[0], 1, pad)
        ow = conv_output_size(w, k[1], stride[1], 1, pad)
        yshape = (batches, oh, ow, cout)
    else:
        yshape = (batches, cout)
    b.tensors["y"] = Tensor("y", yshape, yt, _q(1.0, 0))
    levels = 1 if yt.binary else (1 << yt.bits) - 1
    n = cg * k[0] * k[1] if kind == "conv2d" else cin
    thr = np.sort(rng.integers(-n // 2, n // 2 + 1, (cout, levels)), axis=1).astype(np.int32)
    if kind == "conv2d":
        attrs = Conv2DAttrs(stride=stride, padding=pad, requant="thresholds")
    else:
        attrs = FullyConnectedAttrs(requant="thresholds")
    g, op = b.graph(kind, attrs, ["x", "w", "b", b.const("t", thr, INT32)], "y")
    xs = [(2 * rng.integers(0, 2, shape_x) - 1).astype(np.int8)]
    return g, op, xs


BINARY_CASES = {
    "3x3_same_c7": dict(kind="conv2d"),  # padded borders, 63-bit rows (2 words)
    "3x3_s2_c32_int4out": dict(
        kind="conv2d", cin=32, cout=6, h=7, w=7, stride=(2, 2), y_t="int4"
    ),  # fmt: skip
    "5x3_valid_c16_oddpix": dict(kind="conv2d", cin=16, cout=3, h=7, w=5, k=(5, 3), pad="valid"),
    "3x3_groups2_c12": dict(kind="conv2d", cin=12, cout=4, groups=2),
    "1x1_c40_batch2": dict(kind="conv2d", cin=40, cout=9, k=(1, 1), batches=2),
    "fc_k100": dict(kind="fully_connected", cin=100, cout=11, batches=3),
    "fc_k64_uint2out": dict(kind="fully_connected", cin=64, cout=4, y_t="uint2"),
}


@pytest.mark.parametrize("name", list(BINARY_CASES))
def test_binary_twin_bit_exact(name):
    g, op, xs = binary_case(len(name) * 11, **BINARY_CASES[name])
    out, ref, call = run_both(g, op, xs)
    assert call.entry == "mn_conv_binary" and "XNOR" in call.path
    assert_same(out, ref)
    assert len(np.unique(ref)) > 1


def test_binary_padding_excluded():
    """The all-(+1) layer with zero bias: acc = number of valid taps * C, so border outputs
    differ from interior ones exactly when padding is excluded from n and the popcount."""
    from mcusim.kernels.subbyte import mac_accumulators

    g, op, xs = binary_case(5, "conv2d", y_t="int4", h=5, w=5, cin=8, cout=2)
    g.tensors["w"].data[:] = 1
    g.tensors["b"].data[:] = 0
    xs = [np.ones_like(xs[0])]
    thr = np.arange(8, 8 * 16, 8, dtype=np.int32)[None, :15].repeat(2, axis=0)
    g.tensors["t"].data[:] = thr
    p = kernel_for(op.kind).prepare(g, op)
    acc = mac_accumulators(p, xs[0]).reshape(5, 5, 2)
    assert acc[2, 2, 0] == 72 and acc[0, 0, 0] == 32 and acc[0, 2, 0] == 48
    out, ref, _ = run_both(g, op, xs)
    assert_same(out, ref)
    assert out[0, 0, 0, 0] == -8 + 4 and out[0, 2, 2, 0] == -8 + 9


# ------------------------------------------------------------------ Xpulp (pulp.c) on the host


def pulp_run_both(g, op, xs, family="rv32-xpulpnn"):
    from mcusim.firmware.layer import marshal, run_host

    kdef = kernel_for(op.kind)
    p = kdef.prepare(g, op)
    ref = kdef.compute(p, xs)[0]
    call = marshal(g, op, p, xs, family=family)
    out, ret = run_host(call)
    assert ret == 0
    return out, np.asarray(ref).reshape(out.shape), call


PULP_SUBBYTE = {
    "W4A4_u4_s2": (
        "n",
        dict(kind="conv2d", x_t="uint4", w_t="int4", y_t="uint4", stride=(2, 2)),
    ),  # fmt: skip
    "W4A4_s4_fc": (
        "n",
        dict(kind="fully_connected", x_t="int4", w_t="int4", y_t="int4", cin=37),
    ),  # fmt: skip
    "W2A2_thr": (
        "c",
        dict(kind="conv2d", x_t="int2", w_t="int2", y_t="int2", thresholds=True),
    ),  # fmt: skip
    "W2A2_u2_groups": (
        "c",
        dict(kind="conv2d", x_t="uint2", w_t="int2", y_t="uint2", cin=8, cout=6, groups=2),
    ),  # fmt: skip
    "W4A8_int8out": (
        "b",
        dict(kind="conv2d", x_t="int8", w_t="int4", y_t="int8", act="relu"),
    ),  # fmt: skip
    "W2A8_u8_fc_thr": (
        "b",
        dict(
            kind="fully_connected",
            x_t="uint8",
            w_t="int2",
            y_t="uint4",
            cin=70,
            thresholds=True,
            thr_mag=4000,
        ),
    ),  # fmt: skip
}


@pytest.mark.parametrize("name", list(PULP_SUBBYTE))
def test_pulp_twin_subbyte_bit_exact(name):
    lanes, spec = PULP_SUBBYTE[name]
    g, op, xs = subbyte_case(len(name) * 13, **spec)
    out, ref, call = pulp_run_both(g, op, xs)
    assert call.entry == "mn_conv_pulp" and f".{lanes} " in call.path
    assert_same(out, ref)
    assert len(np.unique(ref)) > 1


@pytest.mark.parametrize("name", ["3x3_s1_same", "3x3_s2_same_relu", "3x3_groups2",
                                  "3x3_dilated", "1x1_s1_k37", "10x4_s2_cin1"])  # fmt: skip
def test_pulp_twin_int8_conv_bit_exact(name):
    g, op, xs = conv_case(len(name), **CONV_CASES[name])
    out, ref, call = pulp_run_both(g, op, xs, family="rv32-xpulpv2")
    assert call.entry == "mn_conv_pulp" and "pv.sdotsp.b" in call.path
    assert_same(out, ref)


def test_pulp_twin_int8_fc_and_routing():
    from mcusim.firmware.layer import pulp_bits

    rng = np.random.default_rng(9)
    b = OneOp(rng)
    x = b.act("x", (2, 37), 0.03, 9)
    wt = b.const("w", rng.integers(-127, 128, (7, 37)).astype(np.int8), INT8,
                 _q(rng.uniform(0.002, 0.02, 7), 0, 0))  # fmt: skip
    bt = b.const("b", rng.integers(-5000, 5000, 7).astype(np.int32), INT32)
    y = b.act("y", (2, 7), 0.1, -11)
    g, op = b.graph("fully_connected", FullyConnectedAttrs(activation="relu"), ["x", wt, bt], y)
    out, ref, call = pulp_run_both(g, op, [b.x(x)], family="rv32-xpulpnn")
    assert call.entry == "mn_conv_pulp"
    assert_same(out, ref)
    assert pulp_bits(g, op, "armv7em-dsp") is None and pulp_bits(g, op, "rv32imc") is None
    # XpulpV2 has no nibble lanes: W4A4 stays on the portable sub-byte twin there
    g4, op4, _ = subbyte_case(3, kind="conv2d", x_t="int4", w_t="int4", y_t="int4")
    assert pulp_bits(g4, op4, "rv32-xpulpv2") is None
    assert pulp_bits(g4, op4, "rv32-xpulpnn") == (4, 4)


# ------------------------------------------------------------------ re-quantized kws in firmware


def _requantized_kws(prec: str):
    from mcusim.model import Model, load
    from mcusim.quantize import requantize

    m = load(model_path("kws_ref_model"))
    return m if prec == "int8" else Model(requantize(m, None, None, default=prec).graph)


def _check_layers(m, h, layers, core, family=None, entry=None):
    """Run ``layers`` of model ``m`` in harness ``h``; outputs == the simulator's compute."""
    from mcusim.firmware import Tracer
    from mcusim.firmware.layer import marshal, run_firmware
    from mcusim.inputs import random_inputs
    from mcusim.runner import compute_outputs

    g = m.graph
    env = compute_outputs(m, random_inputs(g, 4))
    paths = []
    for i in layers:
        op, p = g.ops[i], m.prepared()[i]
        call = marshal(g, op, p.params, [env[n] for n in p.inputs], family=family)
        if entry is not None:
            assert call.entry == entry, (i, call.entry)
        run = run_firmware(call, h, tracer=Tracer(core=core))
        assert run.value == 0
        assert_same(run.output, np.asarray(env[op.outputs[0]]).reshape(run.output.shape))
        assert run.result.trace.instructions > 0
        paths.append(call.path)
    return paths


@pytest.mark.parametrize("prec", ["W4A4", "W2A2"])
def test_subbyte_firmware_requantized_kws(prec):
    """kws_ref_model re-quantized to W4A4 / W2A2 (first conv W4A8/W2A8, pointwise convs
    WnAn with uint-N and int8 outputs, the int8-input FC) in the Cortex-M4 harness."""
    h = _firmware_or_skip("gcc")
    m = _requantized_kws(prec)
    paths = _check_layers(m, h, (0, 2, 8, 11), "cortex-m4", entry="mn_conv_subbyte")
    assert f"sub-byte {prec} " in paths[1]


def test_binary_firmware_bit_exact():
    """W1A1 conv (borders, groups, int4 output) and FC in the Cortex-M4 harness (USADA8)."""
    from mcusim.firmware import Tracer
    from mcusim.firmware.layer import marshal, run_firmware

    h = _firmware_or_skip("gcc")
    for name in ("3x3_same_c7", "3x3_s2_c32_int4out", "3x3_groups2_c12", "fc_k100"):
        g, op, xs = binary_case(len(name) * 11, **BINARY_CASES[name])
        kdef = kernel_for(op.kind)
        p = kdef.prepare(g, op)
        ref = np.asarray(kdef.compute(p, xs)[0])
        call = marshal(g, op, p, xs)
        assert call.entry == "mn_conv_binary"
        run = run_firmware(call, h, tracer=Tracer(core="cortex-m4"))
        assert run.value == 0
        assert_same(run.output, ref.reshape(run.output.shape))
        assert run.result.trace.instructions > 0


def _riscv_or_skip():
    from mcusim.firmware import harness_for, zig_available

    if not zig_available():
        pytest.skip("ziglang not installed (pip install ziglang): no RV32 compiler")
    from mcusim.firmware.layer import build_twins

    return harness_for(build_twins("xpulpnn", "zig").elf, "xpulpnn")


@pytest.mark.parametrize(
    "prec,family,lanes",
    [("W4A4", "rv32-xpulpnn", ".n"), ("W2A2", "rv32-xpulpnn", ".c"),
     ("int8", "rv32-xpulpnn", ".b"), ("int8", "rv32-xpulpv2", ".b")],
)  # fmt: skip
def test_xpulp_twins_requantized_kws_in_rv32_harness(prec, family, lanes):
    """The Xpulp twin (pv.sdot* emitted with .insn, emulated by the RV32 harness with
    isa/xpulp.py semantics) on kws_ref_model layers re-quantized to ``prec`` == numba."""
    h = _riscv_or_skip()
    m = _requantized_kws(prec)
    before = h.emulated
    paths = _check_layers(m, h, (0, 2, 8, 11), "xpulpnn", family=family, entry="mn_conv_pulp")
    assert h.emulated > before  # the custom dot products really ran
    if prec != "int8":  # pointwise convs: nibble / crumb lanes; first conv, FC: bytes
        assert f"sdotusp{lanes} " in paths[1] and ".b " in paths[0] and ".b " in paths[3]
    else:
        assert all("pv.sdotsp.b" in p for p in paths)


def test_xpulp_twin_encodings_in_rv32_elf():
    """The RV32 build's mn_conv_pulp holds the six pv.sdot{sp,usp}.{b,n,c} words with the
    PULP OP-V encodings of riscv-xpulp.md (opcode 0x57; funct3 001 .b, 010 .n/.c; funct7
    1011100 sdotsp / 1010100 sdotusp, +1 for .c), which the harness's decoder names and
    isa/riscv_asm.py parses (so the trace times them)."""
    _riscv_or_skip()
    from elftools.elf.elffile import ELFFile

    from mcusim.firmware.layer import build_twins
    from mcusim.firmware.riscv import decode_riscv
    from mcusim.isa.riscv_asm import parse_line

    with open(build_twins("xpulpnn", "zig").elf, "rb") as fh:
        elf = ELFFile(fh)
        syms = {s.name: s for s in elf.get_section_by_name(".symtab").iter_symbols()}
        text = elf.get_section_by_name(".text")
        lo, hi = text["sh_addr"], text["sh_addr"] + text["sh_size"]
        # the functions of pulp.c (the kernels live in its static dispatch function)
        fns = [s for n, s in syms.items() if n.startswith("mn_pulp") or n == "mn_conv_pulp"]
        fns = [s for s in fns if lo <= s["st_value"] < hi and s["st_size"]]
        assert fns
        start = min(s["st_value"] for s in fns)
        end = max(s["st_value"] + s["st_size"] for s in fns)
        code = text.data()[start - lo : end - lo]
    instrs, unknown = decode_riscv(code, start)
    assert not [u for u in unknown if u.startswith(".word")]
    expect = {("sp", "b"): (1, 0x5C), ("usp", "b"): (1, 0x54), ("sp", "n"): (2, 0x5C),
              ("usp", "n"): (2, 0x54), ("sp", "c"): (2, 0x5D), ("usp", "c"): (2, 0x55)}  # fmt: skip
    seen = set()
    addr = 0
    for ins in instrs:
        mn = ins.text.split()[0]
        if mn.startswith("pv.sdot"):
            word = int.from_bytes(code[addr : addr + 4], "little")
            sg, lanes = mn.removeprefix("pv.sdot").split(".")
            f3, f7 = expect[(sg, lanes)]
            assert (word & 0x7F, (word >> 12) & 7, word >> 25) == (0x57, f3, f7), ins.text
            assert parse_line(ins.text, "test") is not None
            seen.add((sg, lanes))
        addr += ins.size
    assert seen == set(expect)
