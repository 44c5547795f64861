"""Per-kind shape, type and attribute rules of graph ops.

:func:`check_op` is called by :meth:`Graph.validate` for every op and raises
:class:`GraphError` (naming the layer) on the first inconsistency. The rules check
shapes, ranks and attribute ranges, never exact integer widths, so graphs with sub-byte
or binary tensors pass as long as their shapes agree.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .errors import GraphError
from .graph import Graph, Op, Tensor
from .ops import (
    ACTIVATIONS,
    AI8X_ACTIVATIONS,
    PADDINGS,
    POOL_ROUNDINGS,
    REQUANT_MODES,
    StridedSliceAttrs,
    conv_output_size,
)

Check = Callable[[Graph, Op], None]
_CHECKS: dict[str, Check] = {}


def check_op(graph: Graph, op: Op) -> None:
    """Raise GraphError if the op's tensors and attributes are inconsistent."""
    if len(op.outputs) != 1:
        _fail(op, f"has {len(op.outputs)} outputs, expected 1")
    if op.inputs and not op.inputs[0]:
        _fail(op, "its first input is missing")
    check = _CHECKS.get(op.kind)
    if check is not None:
        check(graph, op)
    _sub_byte_support(graph, op)


# ops that compute at sub-byte / binary precision (docs/precision.md section 3); reshapes
# only move data
SUB_BYTE_KINDS = frozenset(
    ("conv2d", "depthwise_conv2d", "fully_connected", "avg_pool2d", "max_pool2d", "add",
     "reshape", "squeeze")
)  # fmt: skip


def _sub_byte_support(graph: Graph, op: Op) -> None:
    if op.kind in SUB_BYTE_KINDS:
        return
    for n in list(op.inputs) + list(op.outputs):
        t = graph.tensors[n] if n else None
        if t is not None and not t.dtype.is_float and (t.dtype.bits < 8 or t.dtype.binary):
            _fail(
                op,
                f"{op.kind} runs at 8 bits or more; tensor {t.name!r} is {t.dtype} "
                "(docs/precision.md section 3)",
            )


def strided_slice_shape(attrs: StridedSliceAttrs) -> tuple[int, ...]:
    """Output shape of a normalised strided slice (shrunk axes removed)."""
    out = []
    for ax, (b, e, s) in enumerate(zip(attrs.begin, attrs.end, attrs.strides, strict=True)):
        if ax in attrs.shrink_axes:
            continue
        n = (e - b + s - 1) // s if s > 0 else (b - e - s - 1) // (-s)
        out.append(max(n, 0))
    return tuple(out)


# -- helpers ---------------------------------------------------------------------------
def _fail(op: Op, msg: str) -> None:
    raise GraphError(msg, layer=op.label)


def _in(graph: Graph, op: Op, i: int) -> Tensor | None:
    if i >= len(op.inputs) or not op.inputs[i]:
        return None
    return graph.tensors[op.inputs[i]]


def _out(graph: Graph, op: Op) -> Tensor:
    return graph.tensors[op.outputs[0]]


def _shape(t: Tensor) -> list[int]:
    return list(t.shape)


def _rank(op: Op, t: Tensor, rank: int, what: str) -> None:
    if len(t.shape) != rank:
        _fail(op, f"{what} {t.name!r} has shape {_shape(t)}, expected rank {rank}")


def _activation(op: Op, act: str) -> None:
    if act not in ACTIVATIONS:
        _fail(op, f"unknown fused activation {act!r}; known: {', '.join(ACTIVATIONS)}")


def _mac_activation(op: Op) -> None:
    """ai8x layers allow ReLU / Abs / none; every other requant mode the TFLite set."""
    act = op.attrs.activation
    if getattr(op.attrs, "requant", "") == "ai8x":
        if act not in AI8X_ACTIVATIONS:
            _fail(op, f"activation {act!r} is not one of the ai8x set {AI8X_ACTIVATIONS}")
        return
    _activation(op, act)


def _pair(op: Op, value: tuple[int, ...], what: str) -> None:
    if len(value) != 2 or any(int(v) < 1 for v in value):
        _fail(op, f"{what} must be two integers >= 1, got {tuple(value)}")


def _same_shape(op: Op, a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape:
        _fail(op, f"output {b.name!r} has shape {_shape(b)}, input {a.name!r} has {_shape(a)}")


def _float_match(op: Op, x: Tensor, y: Tensor) -> None:
    if x.dtype.is_float != y.dtype.is_float:
        _fail(op, f"input {x.name!r} is {x.dtype} but output {y.name!r} is {y.dtype}")


def _bias(op: Op, b: Tensor | None, n: int) -> None:
    if b is None:
        return
    if b.size != n or len(b.shape) > 1 and max(b.shape) != n:
        _fail(op, f"bias {b.name!r} has shape {_shape(b)}, expected [{n}]")


def _weight_quant(op: Op, w: Tensor, axis: int, n: int) -> None:
    q = w.quant
    if q is None or not q.per_channel:
        return
    if q.axis != axis:
        _fail(op, f"weights {w.name!r} are quantized per channel on axis {q.axis}, not {axis}")
    if q.scale.size != n:
        _fail(op, f"weights {w.name!r} have {q.scale.size} channel scales for {n} channels")


def _spatial_out(op: Op, x: Tensor, kh: int, kw: int, attrs) -> tuple[int, int]:
    sh, sw = attrs.stride
    dh, dw = getattr(attrs, "dilation", (1, 1))
    if attrs.padding not in PADDINGS:
        _fail(op, f"unknown padding {attrs.padding!r}; known: {', '.join(PADDINGS)}")
    oh = conv_output_size(x.shape[1], kh, sh, dh, attrs.padding)
    ow = conv_output_size(x.shape[2], kw, sw, dw, attrs.padding)
    if oh < 1 or ow < 1:
        _fail(op, f"window {kh}x{kw} does not fit input {_shape(x)} with padding {attrs.padding}")
    return oh, ow


def _expect_out(op: Op, y: Tensor, expected: tuple[int, ...] | list[int], why: str) -> None:
    if tuple(y.shape) != tuple(expected):
        _fail(op, f"output {y.name!r} has shape {_shape(y)}, expected {list(expected)} ({why})")


def _register(*kinds: str):
    def deco(fn: Check) -> Check:
        for k in kinds:
            _CHECKS[k] = fn
        return fn

    return deco


# -- convolutions and matrix products ---------------------------------------------------
def _requant(graph: Graph, op: Op, y: Tensor, n_out: int) -> None:
    """docs/precision.md section 2: fixed-point requantization or per-channel thresholds."""
    mode = op.attrs.requant
    if mode not in REQUANT_MODES:
        _fail(op, f"requant mode {mode!r} is not one of {REQUANT_MODES}")
    t = _in(graph, op, 3)
    if mode == "ai8x":
        _requant_ai8x(graph, op, y, t)
        return
    if mode == "fixed_point":
        if t is not None:
            _fail(op, "a thresholds input needs requant='thresholds'")
        if y.dtype.binary:
            _fail(op, "a binary output needs requant='thresholds' (docs/precision.md 2.2)")
        return
    if t is None or t.data is None:
        _fail(op, "requant='thresholds' needs a constant thresholds input (4th input)")
    if y.dtype.is_float or y.dtype.bits > 4:
        _fail(op, f"thresholds give outputs of at most 4 bits, output is {y.dtype}")
    if op.attrs.activation != "none":
        _fail(op, "fold the fused activation into the thresholds (requant='thresholds')")
    if t.dtype.is_float or t.dtype.bits != 32 or not t.dtype.signed:
        _fail(op, f"thresholds {t.name!r} are {t.dtype}, expected int32")
    levels = 1 if y.dtype.binary else (1 << y.dtype.bits) - 1
    if tuple(t.shape) != (n_out, levels):
        _fail(
            op,
            f"thresholds {t.name!r} have shape {_shape(t)}, expected [{n_out}, {levels}] "
            f"for a {y.dtype} output",
        )
    if levels > 1 and np.any(np.diff(t.data.astype(np.int64), axis=1) < 0):
        _fail(op, f"thresholds {t.name!r}: every row must be non-decreasing")


def _requant_ai8x(graph: Graph, op: Op, y: Tensor, t: Tensor | None) -> None:
    """docs/precision.md section 2.3: MAX78000 power-of-two requantization."""
    if t is not None:
        _fail(op, "requant='ai8x' takes no thresholds input")
    s = op.attrs.output_shift
    if not -15 <= int(s) <= 15:
        _fail(op, f"ai8x output_shift {s} is outside [-15, 15]")
    wide = y.dtype.bits == 32 and not y.dtype.is_float
    if wide and op.attrs.activation != "none":
        _fail(op, "an ai8x 32-bit (wide) output takes no activation")
    if not wide and (y.dtype.is_float or y.dtype.bits != 8 or not y.dtype.signed):
        _fail(op, f"ai8x output {y.name!r} is {y.dtype}, expected int8 or int32 (wide)")
    b = _in(graph, op, 2)
    if b is not None and b.data is not None:
        bd = b.data.astype(np.int64)
        if np.any(bd % 128) or np.any(bd < -128 * 128) or np.any(bd > 127 * 128):
            _fail(op, f"ai8x bias {b.name!r} must be 128 x an int8 value (bias8 * 128)")


@_register("conv2d")
def _check_conv2d(graph: Graph, op: Op) -> None:
    a = op.attrs
    x, w, b, y = _in(graph, op, 0), _in(graph, op, 1), _in(graph, op, 2), _out(graph, op)
    if w is None:
        _fail(op, "weights input is missing")
    _rank(op, x, 4, "input")
    _rank(op, w, 4, "weights")
    _rank(op, y, 4, "output")
    _pair(op, a.stride, "stride")
    _pair(op, a.dilation, "dilation")
    _mac_activation(op)
    o, kh, kw, wi = w.shape
    c = x.shape[3]
    if wi < 1 or c % wi != 0:
        _fail(
            op, f"input {x.name!r} has {c} channels but weights {w.name!r} {_shape(w)} expect {wi}"
        )
    groups = c // wi
    if o % groups != 0:
        _fail(op, f"{o} output channels cannot be split into {groups} groups")
    oh, ow = _spatial_out(op, x, kh, kw, a)
    _expect_out(op, y, (x.shape[0], oh, ow, o), f"{kh}x{kw} conv, {a.padding} padding")
    _bias(op, b, o)
    _weight_quant(op, w, 0, o)
    _float_match(op, x, y)
    _requant(graph, op, y, o)


@_register("depthwise_conv2d")
def _check_depthwise(graph: Graph, op: Op) -> None:
    a = op.attrs
    x, w, b, y = _in(graph, op, 0), _in(graph, op, 1), _in(graph, op, 2), _out(graph, op)
    if w is None:
        _fail(op, "weights input is missing")
    _rank(op, x, 4, "input")
    _rank(op, w, 4, "weights")
    _rank(op, y, 4, "output")
    _pair(op, a.stride, "stride")
    _pair(op, a.dilation, "dilation")
    _activation(op, a.activation)
    if a.depth_multiplier < 1:
        _fail(op, f"depth multiplier {a.depth_multiplier} must be >= 1")
    one, kh, kw, oc = w.shape
    c = x.shape[3]
    if one != 1:
        _fail(op, f"depthwise weights {w.name!r} have shape {_shape(w)}, first dim must be 1")
    if oc != c * a.depth_multiplier:
        _fail(
            op,
            f"weights {w.name!r} have {oc} channels; input has {c} channels and depth "
            f"multiplier {a.depth_multiplier} ({c * a.depth_multiplier} expected)",
        )
    oh, ow = _spatial_out(op, x, kh, kw, a)
    _expect_out(op, y, (x.shape[0], oh, ow, oc), f"{kh}x{kw} depthwise, {a.padding} padding")
    _bias(op, b, oc)
    _weight_quant(op, w, 3, oc)
    _float_match(op, x, y)
    _requant(graph, op, y, oc)


@_register("fully_connected")
def _check_fully_connected(graph: Graph, op: Op) -> None:
    a = op.attrs
    x, w, b, y = _in(graph, op, 0), _in(graph, op, 1), _in(graph, op, 2), _out(graph, op)
    if w is None:
        _fail(op, "weights input is missing")
    _rank(op, w, 2, "weights")
    _mac_activation(op)
    n_out, n_in = w.shape
    if n_in < 1 or x.size % n_in != 0:
        _fail(
            op,
            f"input {x.name!r} {_shape(x)} has {x.size} elements, not a multiple of the "
            f"{n_in} input features of weights {w.name!r} {_shape(w)}",
        )
    if a.keep_num_dims:
        if not x.shape or x.shape[-1] != n_in:
            _fail(op, f"keep_num_dims needs input last dim {n_in}, input is {_shape(x)}")
        _expect_out(op, y, tuple(x.shape[:-1]) + (n_out,), "keep_num_dims")
    else:
        batch = x.size // n_in
        if not y.shape or y.shape[-1] != n_out or y.size != batch * n_out:
            _fail(
                op,
                f"output {y.name!r} has shape {_shape(y)}, expected [{batch}, {n_out}] "
                f"(input {_shape(x)}, weights {_shape(w)})",
            )
    _bias(op, b, n_out)
    _weight_quant(op, w, 0, n_out)
    _float_match(op, x, y)
    _requant(graph, op, y, n_out)


@_register("avg_pool2d", "max_pool2d")
def _check_pool(graph: Graph, op: Op) -> None:
    a = op.attrs
    x, y = _in(graph, op, 0), _out(graph, op)
    _rank(op, x, 4, "input")
    _rank(op, y, 4, "output")
    _pair(op, a.filter, "filter size")
    _pair(op, a.stride, "stride")
    _activation(op, a.activation)
    if a.rounding not in POOL_ROUNDINGS:
        _fail(op, f"pool rounding {a.rounding!r} is not one of {POOL_ROUNDINGS}")
    fh, fw = a.filter
    oh, ow = _spatial_out(op, x, fh, fw, a)
    _expect_out(op, y, (x.shape[0], oh, ow, x.shape[3]), f"{fh}x{fw} pool, {a.padding}")
    _float_match(op, x, y)


# -- elementwise -----------------------------------------------------------------------
@_register("add", "sub", "mul")
def _check_binary(graph: Graph, op: Op) -> None:
    x1, x2, y = _in(graph, op, 0), _in(graph, op, 1), _out(graph, op)
    if x2 is None:
        _fail(op, "second input is missing")
    _activation(op, op.attrs.activation)
    try:
        shape = np.broadcast_shapes(x1.shape, x2.shape)
    except ValueError:
        _fail(op, f"inputs {x1.name!r} {_shape(x1)} and {x2.name!r} {_shape(x2)} do not broadcast")
    _expect_out(op, y, shape, "broadcast of the inputs")
    _float_match(op, x1, y)


@_register("softmax", "logistic", "tanh", "relu", "relu6", "hard_swish")
def _check_unary(graph: Graph, op: Op) -> None:
    x, y = _in(graph, op, 0), _out(graph, op)
    _same_shape(op, x, y)
    _float_match(op, x, y)
    if op.kind == "softmax" and not op.attrs.beta > 0:
        _fail(op, f"softmax beta must be > 0, got {op.attrs.beta}")


@_register("quantize")
def _check_quantize(graph: Graph, op: Op) -> None:
    x, y = _in(graph, op, 0), _out(graph, op)
    _same_shape(op, x, y)
    if y.dtype.is_float:
        _fail(op, f"quantize output {y.name!r} is {y.dtype}, expected an integer type")
    if y.quant is None:
        _fail(op, f"quantize output {y.name!r} has no quantization parameters")


@_register("dequantize")
def _check_dequantize(graph: Graph, op: Op) -> None:
    x, y = _in(graph, op, 0), _out(graph, op)
    _same_shape(op, x, y)
    if not y.dtype.is_float:
        _fail(op, f"dequantize output {y.name!r} is {y.dtype}, expected float32")
    if x.dtype.is_float or x.quant is None:
        _fail(op, f"dequantize input {x.name!r} must be a quantized integer tensor")


# -- data movement ---------------------------------------------------------------------
@_register("reshape", "squeeze")
def _check_reshape(graph: Graph, op: Op) -> None:
    x, y = _in(graph, op, 0), _out(graph, op)
    if x.size != y.size:
        _fail(
            op,
            f"input {x.name!r} {_shape(x)} has {x.size} elements, output {y.name!r} "
            f"{_shape(y)} has {y.size}",
        )
    target = tuple(op.attrs.shape)
    if target and target != tuple(y.shape):
        _fail(op, f"target shape {list(target)} differs from output {y.name!r} {_shape(y)}")


@_register("pad")
def _check_pad(graph: Graph, op: Op) -> None:
    x, y = _in(graph, op, 0), _out(graph, op)
    pads = op.attrs.paddings
    if len(pads) != len(x.shape):
        _fail(op, f"{len(pads)} padding pairs for input {x.name!r} of rank {len(x.shape)}")
    if any(len(p) != 2 or p[0] < 0 or p[1] < 0 for p in pads):
        _fail(op, f"paddings must be non-negative (before, after) pairs, got {list(pads)}")
    expected = tuple(d + p[0] + p[1] for d, p in zip(x.shape, pads, strict=True))
    _expect_out(op, y, expected, f"paddings {[list(p) for p in pads]}")
    cv = _in(graph, op, 2)
    if cv is not None and cv.size != 1:
        _fail(op, f"pad value {cv.name!r} has {cv.size} elements, expected 1")
    _float_match(op, x, y)


@_register("concat")
def _check_concat(graph: Graph, op: Op) -> None:
    y = _out(graph, op)
    _activation(op, op.attrs.activation)
    rank = len(y.shape)
    axis = op.attrs.axis
    if not -rank <= axis < rank:
        _fail(op, f"axis {axis} out of range for output rank {rank}")
    axis %= rank
    total = 0
    for n in op.inputs:
        if not n:
            _fail(op, "an input is missing")
        t = graph.tensors[n]
        if len(t.shape) != rank:
            _fail(op, f"input {t.name!r} has rank {len(t.shape)}, output has rank {rank}")
        for d in range(rank):
            if d != axis and t.shape[d] != y.shape[d]:
                _fail(
                    op,
                    f"input {t.name!r} {_shape(t)} differs from output {_shape(y)} "
                    f"in dimension {d} (concat axis {axis})",
                )
        total += t.shape[axis]
    if total != y.shape[axis]:
        _fail(op, f"inputs sum to {total} along axis {axis}, output {y.name!r} has {y.shape[axis]}")


@_register("mean")
def _check_mean(graph: Graph, op: Op) -> None:
    x, y = _in(graph, op, 0), _out(graph, op)
    rank = len(x.shape)
    axes = op.attrs.axes
    if not axes:
        _fail(op, "mean over no axes")
    if any(not -rank <= a < rank for a in axes):
        _fail(op, f"axes {list(axes)} out of range for input rank {rank}")
    red = {a % rank for a in axes}
    if op.attrs.keep_dims:
        expected = tuple(1 if d in red else s for d, s in enumerate(x.shape))
    else:
        expected = tuple(s for d, s in enumerate(x.shape) if d not in red)
    if tuple(y.shape) != expected and not (expected == () and tuple(y.shape) == (1,)):
        _expect_out(op, y, expected, f"mean over axes {sorted(red)}")


@_register("transpose")
def _check_transpose(graph: Graph, op: Op) -> None:
    x, y = _in(graph, op, 0), _out(graph, op)
    perm = tuple(op.attrs.perm)
    if sorted(perm) != list(range(len(x.shape))):
        _fail(op, f"perm {list(perm)} is not a permutation of the {len(x.shape)} input axes")
    _expect_out(op, y, tuple(x.shape[p] for p in perm), f"perm {list(perm)}")


@_register("strided_slice")
def _check_strided_slice(graph: Graph, op: Op) -> None:
    x, y = _in(graph, op, 0), _out(graph, op)
    a = op.attrs
    rank = len(x.shape)
    if not len(a.begin) == len(a.end) == len(a.strides) == rank:
        _fail(
            op,
            f"begin/end/strides have lengths {len(a.begin)}/{len(a.end)}/{len(a.strides)}, "
            f"input rank is {rank}",
        )
    for ax, (b, e, s) in enumerate(zip(a.begin, a.end, a.strides, strict=True)):
        dim = x.shape[ax]
        if s == 0:
            _fail(op, f"stride of axis {ax} is 0")
        lo, hi = (0, dim) if s > 0 else (-1, dim - 1)
        if not (lo <= b <= hi and lo <= e <= hi):
            _fail(op, f"axis {ax}: begin {b} / end {e} out of range for size {dim}, stride {s}")
    if any(not 0 <= ax < rank for ax in a.shrink_axes):
        _fail(op, f"shrink axes {list(a.shrink_axes)} out of range for rank {rank}")
    _expect_out(op, y, strided_slice_shape(a), "slice of the input")
