"""MAX78000 CNN-accelerator arithmetic, bit-exact with ADI's izer (docs/precision.md 2.3).

The accelerator has no zero points and no per-channel multipliers: a layer accumulates
``Σ x·w + bias8·128`` at full precision, then scales by a power of two with round half up,
clamps to int8 and applies ReLU / Abs, or returns the accumulator itself (32-bit "wide"
output). Average pooling truncates toward zero. These kernels implement the IR ops that carry
``requant="ai8x"`` (conv2d, fully_connected) and ``rounding="trunc"`` (avg_pool2d); the other
ops of an ai8x graph (max pool, pad with zero, reshape) are exact with the CPU kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from mcusim.graph import Graph, Op
from mcusim.ops import conv_output_size, conv_padding

from .registry import KernelDef

_ACT = {"none": 0, "relu": 1, "abs": 2}


@numba.njit(cache=True)
def requant_ai8x(acc, shift, act, wide):
    """izer's output stage on int64 accumulators (any shape, flattened view)."""
    out = np.empty(acc.size, dtype=np.int64)
    flat = acc.reshape(-1)
    if wide:
        for i in range(flat.size):
            out[i] = flat[i]
        return out.reshape(acc.shape)
    k = 7 - shift  # y = floor(0.5 + acc * 2^s / 128) = floor((acc + 2^(k-1)) / 2^k)
    for i in range(flat.size):
        a = flat[i]
        if k > 0:
            y = (a + (np.int64(1) << (k - 1))) >> k
        else:
            y = a << (-k)
        if y > 127:
            y = 127
        elif y < -128:
            y = -128
        if act == 1 and y < 0:
            y = 0
        elif act == 2:
            if y < 0:
                y = -y
            if y > 127:
                y = 127
        out[i] = y
    return out.reshape(acc.shape)


@numba.njit(cache=True)
def conv_acc(x, w, bias, pt, pl, oh, ow):
    """int64 accumulators of a stride-1 conv with zero padding: x NHWC, w OHWI."""
    n, h, wd, c = x.shape
    co, kh, kw, ci = w.shape
    acc = np.zeros((n, oh, ow, co), dtype=np.int64)
    for b in range(n):
        for oy in range(oh):
            for ox in range(ow):
                for o in range(co):
                    s = bias[o]
                    for ky in range(kh):
                        iy = oy + ky - pt
                        if iy < 0 or iy >= h:
                            continue
                        for kx in range(kw):
                            ix = ox + kx - pl
                            if ix < 0 or ix >= wd:
                                continue
                            for i in range(ci):
                                s += np.int64(x[b, iy, ix, i]) * np.int64(w[o, ky, kx, i])
                    acc[b, oy, ox, o] = s
    return acc


@numba.njit(cache=True)
def fc_acc(x, w, bias):
    """int64 accumulators of y = x W^T + b; x (batch, in), w (out, in)."""
    nb = x.shape[0]
    no, ni = w.shape
    acc = np.zeros((nb, no), dtype=np.int64)
    for b in range(nb):
        for o in range(no):
            s = bias[o]
            for i in range(ni):
                s += np.int64(x[b, i]) * np.int64(w[o, i])
            acc[b, o] = s
    return acc


@numba.njit(cache=True)
def avg_pool_trunc(x, fh, fw, sh, sw, oh, ow):
    """ai8x average pooling: integer mean truncated toward zero, no padding (NHWC)."""
    n, _, _, c = x.shape
    out = np.empty((n, oh, ow, c), dtype=np.int64)
    area = fh * fw
    for b in range(n):
        for oy in range(oh):
            for ox in range(ow):
                for ch in range(c):
                    s = np.int64(0)
                    for ky in range(fh):
                        for kx in range(fw):
                            s += x[b, oy * sh + ky, ox * sw + kx, ch]
                    q = abs(s) // area
                    out[b, oy, ox, ch] = q if s >= 0 else -q
    return out


@dataclass
class Ai8xMacParams:
    kind: str
    weights: np.ndarray  # int64; conv OHWI, FC (out, in)
    bias: np.ndarray  # int64 (out,), already bias8 * 128
    shift: int
    act: int
    wide: bool
    out_dtype: np.dtype
    out_shape: tuple[int, ...]
    pads: tuple[int, int] = (0, 0)  # top, left (conv, zero padding)


def _mac_params(graph: Graph, op: Op) -> Ai8xMacParams:
    t = graph.tensors
    w = t[op.inputs[1]].data.astype(np.int64)
    b_name = op.inputs[2] if len(op.inputs) > 2 else ""
    n_out = w.shape[0]
    bias = t[b_name].data.astype(np.int64).reshape(-1) if b_name else np.zeros(n_out, np.int64)
    y = t[op.outputs[0]]
    wide = y.dtype.bits == 32
    pads = (0, 0)
    if op.kind == "conv2d":
        x = t[op.inputs[0]]
        a = op.attrs
        if tuple(a.stride) != (1, 1) or tuple(a.dilation) != (1, 1):
            raise ValueError(f"{op.label}: ai8x convolutions are stride 1, dilation 1")
        _, kh, kw, _ = w.shape
        oh = conv_output_size(x.shape[1], kh, 1, 1, a.padding)
        ow = conv_output_size(x.shape[2], kw, 1, 1, a.padding)
        if a.padding == "same":
            pads = (conv_padding(x.shape[1], kh, 1, 1, oh), conv_padding(x.shape[2], kw, 1, 1, ow))
    return Ai8xMacParams(
        op.kind,
        np.ascontiguousarray(w),
        bias,
        int(op.attrs.output_shift),
        _ACT[op.attrs.activation],
        wide,
        y.dtype.np_dtype,
        tuple(y.shape),
        pads,
    )


def accumulate(p: Ai8xMacParams, x: np.ndarray) -> np.ndarray:
    """Full-resolution accumulators (izer's ``accum``), in the output's NHWC layout."""
    xi = x.astype(np.int64)
    if p.kind == "conv2d":
        oh, ow = p.out_shape[1], p.out_shape[2]
        return conv_acc(xi, p.weights, p.bias, p.pads[0], p.pads[1], oh, ow)
    n_in = p.weights.shape[1]
    return fc_acc(xi.reshape(-1, n_in), p.weights, p.bias).reshape(p.out_shape)


def compute_mac(p: Ai8xMacParams, inputs: list[np.ndarray]) -> list[np.ndarray]:
    acc = accumulate(p, inputs[0])
    y = requant_ai8x(acc, p.shift, p.act, p.wide)
    return [y.astype(p.out_dtype)]


@dataclass
class Ai8xPoolParams:
    filter: tuple[int, int]
    stride: tuple[int, int]
    out_shape: tuple[int, ...]
    out_dtype: np.dtype


def prepare_avg_pool(graph: Graph, op: Op) -> Ai8xPoolParams:
    a = op.attrs
    if a.padding != "valid":
        raise ValueError(f"{op.label}: ai8x pooling has no padding")
    y = graph.tensors[op.outputs[0]]
    return Ai8xPoolParams(tuple(a.filter), tuple(a.stride), tuple(y.shape), y.dtype.np_dtype)


def compute_avg_pool(p: Ai8xPoolParams, inputs: list[np.ndarray]) -> list[np.ndarray]:
    (fh, fw), (sh, sw) = p.filter, p.stride
    y = avg_pool_trunc(inputs[0].astype(np.int64), fh, fw, sh, sw, p.out_shape[1], p.out_shape[2])
    return [y.astype(p.out_dtype)]


CONV2D = KernelDef("conv2d", _mac_params, compute_mac, precision="ai8x")
FULLY_CONNECTED = KernelDef("fully_connected", _mac_params, compute_mac, precision="ai8x")
AVG_POOL = KernelDef("avg_pool2d", prepare_avg_pool, compute_avg_pool, precision="ai8x")


def ai8x_kernel(graph: Graph, op: Op) -> KernelDef | None:
    """The ai8x kernel of ``op`` when its arithmetic is the accelerator's, else None."""
    if op.kind in ("conv2d", "fully_connected") and op.attrs.requant == "ai8x":
        return CONV2D if op.kind == "conv2d" else FULLY_CONNECTED
    if op.kind == "avg_pool2d" and op.attrs.rounding == "trunc":
        return AVG_POOL
    return None


def compute_graph(graph: Graph, inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Every tensor of ``graph`` for ``inputs``: ai8x kernels where they apply, else the CPU
    reference kernels (max pool, zero pad and reshape are exact for ai8x data)."""
    import mcusim.kernels  # noqa: F401  (registers the CPU kernels)
    from mcusim.kernels.registry import kernel_for

    env = dict(zip(graph.inputs, inputs, strict=True))
    for op in graph.ops:
        kdef = ai8x_kernel(graph, op) or kernel_for(op.kind, layer=op.label)
        params = kdef.prepare(graph, op)
        xs = [env[n] for n in op.inputs if n and not graph.tensors[n].is_const]
        for name, val in zip(op.outputs, kdef.compute(params, xs), strict=True):
            env[name] = val
    return env
