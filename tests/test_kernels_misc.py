"""Bit-exactness of the non-MAC int8 kernels against the TFLite Micro interpreter.

Every case builds a one-operator .tflite with TFLiteBuilder, runs it on TFLM (the
reference) and on mcusim (importer -> kernel prepare -> compute), and requires identical
outputs: same shape, dtype and every bit. Where TFLM refuses a configuration (concat of
differently quantized int8 inputs, hard_swish with a too-small output scale) the test checks
that it does and checks mcusim's behaviour against an independent formula instead.
"""

from __future__ import annotations

import numpy as np
import pytest

from mcusim.errors import UnsupportedOpError
from mcusim.importers.tflite import load_tflite_bytes
from mcusim.kernels.registry import kernel_for

from tflite_builder import TFLiteBuilder
from tflm_ref import tflm_run

RNG = np.random.default_rng(20261121)
ALL_INT8 = np.arange(-128, 128, dtype=np.int8).reshape(1, 256)


# ---------------------------------------------------------------------------------------
# harness
# ---------------------------------------------------------------------------------------


def _model(op: str, ins: list[dict], out: dict, options: dict | None = None):
    """One-op model; ``ins``/``out`` are TFLiteBuilder.tensor kwargs (constant if ``data``).

    Returns (flatbuffer bytes, output tensor index)."""
    b = TFLiteBuilder()
    idx = [b.tensor(f"in{i}", **spec) for i, spec in enumerate(ins)]
    o = b.tensor("out", **out)
    b.op(op, idx, [o], options=options)
    variable = [i for i, spec in zip(idx, ins, strict=True) if spec.get("data") is None]
    return b.build(variable, [o]), o


def _mcusim(data: bytes, xs: list[np.ndarray]) -> np.ndarray:
    g = load_tflite_bytes(data, "test.tflite")
    assert len(g.ops) == 1
    op = g.ops[0]
    env = dict(zip(g.inputs, xs, strict=True))
    kdef = kernel_for(op.kind)
    params = kdef.prepare(g, op)
    ins = [env[n] for n in op.inputs if n and not g.tensors[n].is_const]
    outs = kdef.compute(params, ins)
    assert len(outs) == 1
    return outs[0]


def _same(ref: np.ndarray, got: np.ndarray) -> None:
    assert got.shape == ref.shape, (got.shape, ref.shape)
    assert got.dtype == ref.dtype, (got.dtype, ref.dtype)
    bad = np.flatnonzero(ref.reshape(-1).view(np.uint8) != got.reshape(-1).view(np.uint8))
    assert bad.size == 0, (
        f"{bad.size} of {ref.size} bytes differ; first elements ref={ref.reshape(-1)[:8]} "
        f"got={got.reshape(-1)[:8]}"
    )


def check_bit_exact(op, ins, out, xs, options=None) -> np.ndarray:
    data, o = _model(op, ins, out, options)
    ref = tflm_run(data, xs)[o]
    got = _mcusim(data, xs)
    _same(ref, got)
    return ref


def i8(shape, scale, zp, data=None) -> dict:
    return dict(shape=shape, dtype="int8", scale=scale, zero_point=zp, data=data)


def rand8(shape) -> np.ndarray:
    return RNG.integers(-128, 128, shape, dtype=np.int8)


# ---------------------------------------------------------------------------------------
# add / sub / mul
# ---------------------------------------------------------------------------------------

BROADCASTS = [
    ((1, 6, 6, 8), (1, 6, 6, 8)),
    ((1, 6, 6, 8), (1, 1, 1, 8)),
    ((1, 1, 1, 8), (1, 6, 6, 8)),
    ((2, 1, 5), (1, 3, 1)),
    ((4, 4, 3), (3,)),
    ((1, 5, 1, 2), (3, 1, 4, 1)),
    ((7,), (1,)),
]
QUANTS = [  # (in1, in2, out) as (scale, zero point)
    ((0.05, -3), (0.07, 5), (0.1, 1)),
    ((0.02, 0), (0.02, 0), (0.01, -128)),  # saturates often
    ((0.5, 100), (0.001, -100), (0.3, 20)),  # very different input scales
    ((0.0123, 7), (0.0456, -9), (0.004, -3)),
]


@pytest.mark.parametrize("op", ["ADD", "SUB", "MUL"])
@pytest.mark.parametrize("shapes", BROADCASTS, ids=lambda s: f"{s[0]}x{s[1]}")
def test_binary_broadcast_bit_exact(op, shapes):
    s1, s2 = shapes
    out_shape = np.broadcast_shapes(s1, s2)
    for k, (q1, q2, qo) in enumerate(QUANTS):
        act = ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"][k]
        xs = [rand8(s1), rand8(s2)]
        check_bit_exact(
            op, [i8(s1, *q1), i8(s2, *q2)], i8(out_shape, *qo), xs, dict(fused_activation=act)
        )


@pytest.mark.parametrize("op", ["ADD", "SUB", "MUL"])
@pytest.mark.parametrize("act", ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"])
def test_binary_constant_operand_and_activation(op, act):
    s1, s2 = (1, 5, 5, 6), (1, 1, 1, 6)
    const = rand8(s2)
    check_bit_exact(
        op,
        [i8(s1, 0.031, -4), i8(s2, 0.011, 9, data=const)],
        i8(s1, 0.027, 6),
        [rand8(s1)],
        dict(fused_activation=act),
    )


def test_sub_multipliers_in_double():
    """Scales where a float32 derivation of SUB's multipliers is off on many elements."""
    s = (1, 64, 64, 3)
    check_bit_exact("SUB", [i8(s, 0.05, -3), i8(s, 0.07, 5)], i8(s, 0.1, 1), [rand8(s), rand8(s)])


def test_binary_saturation_is_exercised():
    """The saturating quantization really hits both int8 limits (and stays bit-exact)."""
    s = (1, 16, 16, 4)
    ref = check_bit_exact(
        "ADD", [i8(s, 0.05, 0), i8(s, 0.05, 0)], i8(s, 0.01, 0), [rand8(s), rand8(s)]
    )
    assert (ref == 127).sum() > 100 and (ref == -128).sum() > 100


# ---------------------------------------------------------------------------------------
# softmax
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [1.0, 0.5, 2.0, 0.1, 10.0])
@pytest.mark.parametrize("scale", [0.1, 0.0390625, 0.5, 0.01, 1.7])
def test_softmax_bit_exact(beta, scale):
    for shape in [(1, 10), (3, 7), (2, 2, 5, 33), (4, 1)]:
        check_bit_exact(
            "SOFTMAX",
            [i8(shape, scale, 3)],
            i8(shape, 1 / 256, -128),
            [rand8(shape)],
            dict(beta=beta),
        )


def test_softmax_long_row_bit_exact():
    shape = (2, 1000)
    check_bit_exact("SOFTMAX", [i8(shape, 0.2, 0)], i8(shape, 1 / 256, -128), [rand8(shape)])


def test_softmax_sum_overflow_is_refused():
    """A row whose exp-sum exceeds 2^8 makes TFLM abort (TFLITE_CHECK): we raise instead."""
    shape = (1, 1000)
    data, _ = _model("SOFTMAX", [i8(shape, 0.003, 0)], i8(shape, 1 / 256, -128))
    with pytest.raises(UnsupportedOpError, match="exceeds 2\\^8"):
        _mcusim(data, [np.zeros(shape, dtype=np.int8)])


# ---------------------------------------------------------------------------------------
# logistic / tanh / hard_swish / relu / relu6: every int8 input value
# ---------------------------------------------------------------------------------------

IN_QUANTS = [(0.1, 0), (0.05, -20), (0.02, 30), (0.4, -128), (0.003, 5), (0.45, 100)]


@pytest.mark.parametrize("in_q", IN_QUANTS)
def test_logistic_full_range(in_q):
    ref = check_bit_exact(
        "LOGISTIC", [i8((1, 256), *in_q)], i8((1, 256), 1 / 256, -128), [ALL_INT8]
    )
    assert np.all(np.diff(ref.astype(int)) >= 0)  # monotone: the table is not garbage


@pytest.mark.parametrize("in_q", IN_QUANTS)
def test_tanh_full_range(in_q):
    check_bit_exact("TANH", [i8((1, 256), *in_q)], i8((1, 256), 1 / 128, 0), [ALL_INT8])


@pytest.mark.parametrize("in_q", IN_QUANTS)
@pytest.mark.parametrize("out_q", [(0.1, -5), (0.02, 10), (0.05, -128), (1 / 256, -128)])
def test_hard_swish_full_range(in_q, out_q):
    check_bit_exact("HARD_SWISH", [i8((1, 256), *in_q)], i8((1, 256), *out_q), [ALL_INT8])


@pytest.mark.parametrize(
    "in_q,out_q",
    [
        ((0.00570529792457819, -47), (0.004205403383821249, -92)),
        ((0.008066808804869652, 113), (0.022177929058670998, -7)),
    ],
)
def test_hard_swish_multipliers_in_double(in_q, out_q):
    """Scales where float32 and double multiplier derivations give different tables."""
    check_bit_exact("HARD_SWISH", [i8((1, 256), *in_q)], i8((1, 256), *out_q), [ALL_INT8])


def test_hard_swish_refuses_what_tflm_refuses():
    data, _ = _model("HARD_SWISH", [i8((1, 256), 1.3, 100)], i8((1, 256), 1 / 256, -128))
    with pytest.raises(RuntimeError):
        tflm_run(data, [ALL_INT8])
    with pytest.raises(UnsupportedOpError):
        _mcusim(data, [ALL_INT8])


@pytest.mark.parametrize("op", ["RELU", "RELU6"])
@pytest.mark.parametrize("in_q", IN_QUANTS)
@pytest.mark.parametrize("out_q", [(0.1, 0), (0.07, -5), (0.02, 10), (1 / 128, -128)])
def test_relu_full_range(op, in_q, out_q):
    check_bit_exact(op, [i8((1, 256), *in_q)], i8((1, 256), *out_q), [ALL_INT8])


def test_relu6_ignores_output_quantization_like_tflm():
    """TFLM's int8 RELU6 clamps on the input quantization and does not requantize."""
    ref = check_bit_exact("RELU6", [i8((1, 256), 0.05, -20)], i8((1, 256), 0.5, 7), [ALL_INT8])
    np.testing.assert_array_equal(ref, np.clip(ALL_INT8, -20, -20 + 120))


# ---------------------------------------------------------------------------------------
# mean
# ---------------------------------------------------------------------------------------

MEAN_CASES = [
    ((1, 7, 7, 16), (1, 2)),
    ((1, 10, 10, 8), (2, 1)),
    ((2, 5, 3, 4), (1,)),
    ((2, 5, 3, 4), (3,)),
    ((2, 5, 3, 4), (0, 2)),
    ((2, 5, 3, 4), (-1, -3)),
    ((3, 33), (1,)),
    ((1, 12, 12, 5), (1, 2, 3)),
]


@pytest.mark.parametrize("shape,axes", MEAN_CASES)
@pytest.mark.parametrize("keep", [True, False])
def test_mean_bit_exact(shape, axes, keep):
    nd = len(shape)
    red = {a % nd for a in axes}
    if keep:
        out = tuple(1 if i in red else s for i, s in enumerate(shape))
    else:
        out = tuple(s for i, s in enumerate(shape) if i not in red)
    axis_t = dict(shape=(len(axes),), dtype="int32", data=np.array(axes, np.int32))
    for in_q, out_q in [
        ((0.05, -3), (0.05, -3)),
        ((0.02, 10), (0.01, -5)),
        ((0.1, -128), (0.3, 20)),
    ]:
        check_bit_exact(
            "MEAN",
            [i8(shape, *in_q), axis_t],
            i8(out, *out_q),
            [rand8(shape)],
            dict(keep_dims=keep),
        )


# ---------------------------------------------------------------------------------------
# concat
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shapes,axis",
    [
        ([(1, 4, 4, 3), (1, 4, 4, 5)], 3),
        ([(1, 2, 4, 3), (1, 3, 4, 3), (1, 1, 4, 3)], 1),
        ([(2, 3), (2, 3)], 0),
        ([(2, 3), (2, 4)], -1),
        ([(1, 2, 2, 3), (1, 2, 5, 3)], 2),
    ],
)
def test_concat_same_quant_bit_exact(shapes, axis):
    nd = len(shapes[0])
    out = list(shapes[0])
    out[axis % nd] = sum(s[axis % nd] for s in shapes)
    check_bit_exact(
        "CONCATENATION",
        [i8(s, 0.05, 3) for s in shapes],
        i8(tuple(out), 0.05, 3),
        [rand8(s) for s in shapes],
        dict(axis=axis),
    )


def _concat_scaling_reference(q: np.ndarray, s_in, zp_in, s_out, zp_out) -> np.ndarray:
    """TFLite ConcatenationWithScaling, one element at a time in float32."""
    f32 = np.float32
    scale = f32(f32(s_in) * (f32(1.0) / f32(s_out)))
    bias = f32(f32(-zp_in) * scale)
    out = []
    for v in q.reshape(-1).tolist():
        r = float(f32(f32(v) * scale + bias))
        rounded = int(np.floor(abs(r) + 0.5)) * (1 if r >= 0 else -1)
        out.append(min(127, max(-128, rounded + zp_out)))
    return np.array(out, dtype=np.int8).reshape(q.shape)


@pytest.mark.parametrize("axis", [0, 1, 3])
def test_concat_requantizes_differing_inputs(axis):
    """TFLM rejects int8 concat with differing input quantization; mcusim requantizes the
    way TFLite's ConcatenationWithScaling does and copies inputs that already match."""
    shapes = [(2, 3, 2, 4), (2, 3, 2, 4), (2, 3, 2, 4)]
    qs = [(0.05, 3), (0.1, 0), (0.013, -100)]
    q_out = (0.05, 3)
    out = list(shapes[0])
    out[axis] *= 3
    xs = [rand8(s) for s in shapes]
    data, _ = _model(
        "CONCATENATION",
        [i8(s, *q) for s, q in zip(shapes, qs, strict=True)],
        i8(tuple(out), *q_out),
        dict(axis=axis),
    )
    with pytest.raises(RuntimeError):
        tflm_run(data, xs)
    got = _mcusim(data, xs)
    expect = np.concatenate(
        [xs[0]]
        + [_concat_scaling_reference(x, *q, *q_out) for x, q in zip(xs[1:], qs[1:], strict=True)],
        axis=axis,
    )
    np.testing.assert_array_equal(got, expect)
    assert not np.array_equal(got, np.concatenate(xs, axis=axis))


# ---------------------------------------------------------------------------------------
# pad / transpose / strided_slice / reshape / squeeze
# ---------------------------------------------------------------------------------------

PADS = [
    ((1, 4, 4, 3), [[0, 0], [1, 1], [2, 0], [0, 0]]),
    ((2, 3), [[1, 2], [0, 3]]),
    ((1, 5, 5, 2), [[0, 1], [1, 0], [0, 0], [2, 2]]),
]


@pytest.mark.parametrize("shape,pads", PADS)
def test_pad_fills_with_output_zero_point(shape, pads):
    out = tuple(s + a + b for s, (a, b) in zip(shape, pads, strict=True))
    p = dict(shape=(len(shape), 2), dtype="int32", data=np.array(pads, np.int32))
    ref = check_bit_exact("PAD", [i8(shape, 0.1, -7), p], i8(out, 0.1, -7), [rand8(shape)])
    assert (ref == -7).sum() >= ref.size - int(np.prod(shape))


@pytest.mark.parametrize("shape,pads", PADS)
def test_padv2_constant_value(shape, pads):
    out = tuple(s + a + b for s, (a, b) in zip(shape, pads, strict=True))
    p = dict(shape=(len(shape), 2), dtype="int32", data=np.array(pads, np.int32))
    cv = i8((1,), 0.1, -7, data=np.array([33], np.int8))
    check_bit_exact("PADV2", [i8(shape, 0.1, -7), p, cv], i8(out, 0.1, -7), [rand8(shape)])


@pytest.mark.parametrize(
    "shape,perm",
    [
        ((1, 4, 5, 3), (0, 3, 1, 2)),
        ((2, 3, 4), (2, 0, 1)),
        ((3, 7), (1, 0)),
        ((2, 3, 4, 5), (3, 2, 1, 0)),
    ],
)
def test_transpose_bit_exact(shape, perm):
    out = tuple(shape[p] for p in perm)
    pt = dict(shape=(len(perm),), dtype="int32", data=np.array(perm, np.int32))
    check_bit_exact("TRANSPOSE", [i8(shape, 0.1, 0), pt], i8(out, 0.1, 0), [rand8(shape)])


def _tflite_slice_shape(shape, b, e, s, bm, em, sm):
    """Output shape by TFLite's StartForAxis/StopForAxis (independent of the importer)."""
    out = []
    for ax, n in enumerate(shape):
        st = b[ax] + n if b[ax] < 0 else b[ax]
        st = min(max(st, 0), n) if s[ax] > 0 else min(max(st, -1), n - 1)
        if bm >> ax & 1:
            st = 0 if s[ax] > 0 else n - 1
        if sm >> ax & 1:
            continue
        en = e[ax] + n if e[ax] < 0 else e[ax]
        en = min(max(en, 0), n) if s[ax] > 0 else min(max(en, -1), n - 1)
        if em >> ax & 1:
            en = n if s[ax] > 0 else -1
        out.append(len(range(st, en, s[ax])))
    return tuple(out)


SLICES = [  # shape, begin, end, strides, begin_mask, end_mask, shrink_mask
    ((1, 8, 8, 3), [0, 1, 0, 0], [1, 7, 8, 3], [1, 2, 3, 1], 0, 0, 0),
    ((1, 8, 8, 3), [0, -1, 0, 0], [1, -9, 8, 3], [1, -1, 1, 1], 0, 0, 0),
    ((1, 8, 8, 3), [0, 7, 0, 2], [1, 0, 8, 0], [1, -2, 1, -1], 0b0001, 0b0110, 0),
    ((4, 6), [1, 0], [2, 6], [1, 1], 0, 0, 0b01),
    ((4, 6), [-1, 5], [0, 0], [1, -1], 0, 0, 0b01),
    ((2, 3, 5), [0, 0, -2], [0, 0, 0], [1, 1, 1], 0b011, 0b111, 0b001),
    ((5,), [3], [0], [-1], 0, 0, 0),
    ((5,), [10], [-10], [-2], 0, 0, 0),
    ((6, 7), [0, -3], [0, -1], [1, 1], 1, 1, 0),
]


@pytest.mark.parametrize("case", SLICES, ids=range(len(SLICES)))
def test_strided_slice_bit_exact(case):
    shape, b, e, s, bm, em, sm = case
    out = _tflite_slice_shape(shape, b, e, s, bm, em, sm)
    nd = len(shape)
    vecs = [dict(shape=(nd,), dtype="int32", data=np.array(v, np.int32)) for v in (b, e, s)]
    check_bit_exact(
        "STRIDED_SLICE",
        [i8(shape, 0.1, 0), *vecs],
        i8(out, 0.1, 0),
        [rand8(shape)],
        dict(begin_mask=bm, end_mask=em, shrink_axis_mask=sm),
    )


def test_reshape_and_squeeze_bit_exact():
    shape_t = dict(shape=(2,), dtype="int32", data=np.array([4, 15], np.int32))
    check_bit_exact(
        "RESHAPE",
        [i8((1, 4, 5, 3), 0.1, 0), shape_t],
        i8((4, 15), 0.1, 0),
        [rand8((1, 4, 5, 3))],
        dict(new_shape=[4, 15]),
    )
    check_bit_exact("SQUEEZE", [i8((1, 1, 5, 1), 0.1, 0)], i8((5,), 0.1, 0), [rand8((1, 1, 5, 1))])


# ---------------------------------------------------------------------------------------
# quantize / dequantize
# ---------------------------------------------------------------------------------------

FLOATS = (
    np.concatenate(
        [
            RNG.normal(0, 3, 200),
            np.arange(-20, 20) * 0.05,  # exact halves of the 0.1 scale: ties round away from 0
            [0.025, -0.025, 0.075, -0.075, 6.35, -6.45, 1e10, -1e10, 3e9, 0.0, -0.0],
        ]
    )
    .astype(np.float32)
    .reshape(1, -1)
)


@pytest.mark.parametrize(
    "dtype,scale,zp",
    [("int8", 0.05, 0), ("int8", 0.1, -10), ("int8", 0.0234, 17), ("int16", 0.001, 0)],
)
def test_quantize_float_bit_exact(dtype, scale, zp):
    f = dict(shape=FLOATS.shape, dtype="float32")
    o = dict(shape=FLOATS.shape, dtype=dtype, scale=scale, zero_point=zp)
    check_bit_exact("QUANTIZE", [f], o, [FLOATS])


@pytest.mark.parametrize(
    "in_q,out_q",
    [
        ((0.05, 0), (0.1, -5)),
        ((0.1, -10), (0.03, 20)),
        ((0.02, 3), (0.02, 3)),
        ((0.5, -128), (1e-4, 0)),
    ],
)
def test_requantize_int8_bit_exact(in_q, out_q):
    check_bit_exact("QUANTIZE", [i8((1, 256), *in_q)], i8((1, 256), *out_q), [ALL_INT8])


def test_requantize_int8_int16_bit_exact():
    o16 = dict(shape=(1, 256), dtype="int16", scale=0.001, zero_point=0)
    check_bit_exact("QUANTIZE", [i8((1, 256), 0.05, 3)], o16, [ALL_INT8])
    x16 = RNG.integers(-32768, 32768, (1, 300), dtype=np.int16)
    i16 = dict(shape=(1, 300), dtype="int16", scale=0.001, zero_point=0)
    check_bit_exact("QUANTIZE", [i16], i8((1, 300), 0.1, -3), [x16])


@pytest.mark.parametrize("in_q", [(0.05, 0), (0.1, -10), (0.0234, 17)])
def test_dequantize_int8_bit_exact(in_q):
    f = dict(shape=(1, 256), dtype="float32")
    check_bit_exact("DEQUANTIZE", [i8((1, 256), *in_q)], f, [ALL_INT8])


def test_dequantize_int16_bit_exact():
    x16 = RNG.integers(-32768, 32768, (1, 300), dtype=np.int16)
    i16 = dict(shape=(1, 300), dtype="int16", scale=0.00123, zero_point=0)
    check_bit_exact("DEQUANTIZE", [i16], dict(shape=(1, 300), dtype="float32"), [x16])
