"""One layer in firmware: marshal an op's prepared params + inputs for its C twin, run it.

The C twins live in kernels/c (freestanding C, calling convention in kernels/c/README.md):
every entry point takes one pointer to an argument struct whose fields are the pointers
first, then int32 values. :func:`marshal` turns (graph, op, prepared params, inputs) into a
:class:`LayerCall` -- the entry name, the struct's field values and the buffers the
pointers refer to -- independently of where it runs; :func:`run_firmware` places it in a
Unicorn harness (constants in flash, activations/scratch/args in RAM, as a device keeps
them) and :func:`run_host` calls the same C compiled for the host through ctypes (the fast
bit-exactness check that needs no cross compiler).

The twins compute from the prepared params what the numba kernels compute; where the numba
kernel folds the input offset into the bias (conv, FC) the raw bias is recovered
(``bias + in_zp * sum(weights)`` modulo 2^32), since the DSP loops add the offset to the
activations as CMSIS-NN does.
"""

from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np

from mcusim.errors import UnsupportedOpError
from mcusim.graph import Graph, Op
from mcusim.precision import packed
from mcusim.qnn import packed_size, unpack_bits

P, I = "p", "i"  # field kinds: pointer (a buffer name or None) / int32

# argument structs of kernels/c/mcusim_nn.h, field order as declared there
STRUCTS: dict[str, tuple[tuple[str, str], ...]] = {
    "conv": tuple(
        [(n, P) for n in ("input", "weights", "bias", "mult", "shift", "output", "scratch")]
        + [
            (n, I)
            for n in (
                "batches in_h in_w in_c out_h out_w out_c k_h k_w s_h s_w d_h d_w pad_t pad_l "
                "groups in_offset out_offset act_min act_max"
            ).split()
        ]
    ),
    "dw": tuple(
        [(n, P) for n in ("input", "weights", "bias", "mult", "shift", "output", "scratch")]
        + [
            (n, I)
            for n in (
                "batches in_h in_w in_c out_h out_w out_c k_h k_w s_h s_w d_h d_w pad_t pad_l "
                "ch_mult in_offset out_offset act_min act_max"
            ).split()
        ]
    ),
    "fc": tuple(
        [(n, P) for n in ("input", "weights", "bias", "mult", "shift", "output")]
        + [
            (n, I)
            for n in "batches in_depth out_depth in_offset out_offset act_min act_max "
            "per_channel".split()
        ]
    ),
    "pool": tuple(
        [(n, P) for n in ("input", "output", "scratch")]
        + [
            (n, I)
            for n in "batches in_h in_w in_c out_h out_w f_h f_w s_h s_w pad_t pad_l "
            "act_min act_max".split()
        ]
    ),
    "add": tuple(
        [(n, P) for n in ("input1", "input2", "output")]
        + [
            (n, I)
            for n in "n sign in1_offset in2_offset left_shift in1_mult in1_shift in2_mult "
            "in2_shift out_mult out_shift out_offset act_min act_max".split()
        ]
    ),
    "softmax": tuple(
        [(n, P) for n in ("input", "output")]
        + [(n, I) for n in "rows depth input_mult input_left_shift diff_min".split()]
    ),
    "copy": (("src", P), ("dst", P), ("nbytes", I)),
    "sbconv": tuple(
        [(n, P) for n in ("input weights bias mult shift thresholds output scratch".split())]
        + [
            (n, I)
            for n in (
                "batches in_h in_w in_c out_h out_w out_c k_h k_w s_h s_w d_h d_w pad_t pad_l "
                "groups in_bits in_signed in_zp w_bits row_words out_bits out_offset act_min "
                "act_max levels out_lo out_step"
            ).split()
        ]
    ),
}

# op kind -> (entry point, struct)
ENTRIES: dict[str, tuple[str, str]] = {
    "conv2d": ("mn_conv_s8", "conv"),
    "depthwise_conv2d": ("mn_depthwise_s8", "dw"),
    "fully_connected": ("mn_fully_connected_s8", "fc"),
    "avg_pool2d": ("mn_avgpool_s8", "pool"),
    "max_pool2d": ("mn_maxpool_s8", "pool"),
    "add": ("mn_add_s8", "add"),
    "sub": ("mn_add_s8", "add"),
    "softmax": ("mn_softmax_s8", "softmax"),
    "reshape": ("mn_copy", "copy"),
    "squeeze": ("mn_copy", "copy"),
}
SUBBYTE_ENTRY = ("mn_conv_subbyte", "sbconv")  # conv2d / fully_connected below 8 bits
BINARY_ENTRY = ("mn_conv_binary", "sbconv")  # W1A1 conv2d / fully_connected (XNOR-popcount)
PULP_ENTRY = ("mn_conv_pulp", "sbconv")  # RV32 Xpulp conv2d / fully_connected (pv.sdot*)
ENTRY_NAMES = tuple(
    sorted({e for e, _ in ENTRIES.values()} | {SUBBYTE_ENTRY[0], BINARY_ENTRY[0], PULP_ENTRY[0]})
)
# ISA families whose conv / FC run the Xpulp twin, and the dot widths each has
# (XpulpV2: pv.sdot*.b only; XpulpNN adds the nibble / crumb lanes .n / .c)
XPULP_DOT_BITS = {"rv32-xpulpv2": (8,), "rv32-xpulpnn": (8, 4, 2)}


@dataclass(frozen=True)
class Buf:
    """One buffer a struct pointer refers to: initial contents (None: uninitialised) and
    where it lives ("flash": constants, "ram": activations and scratch)."""

    name: str
    nbytes: int
    data: np.ndarray | None = None
    region: str = "ram"


@dataclass(frozen=True)
class LayerCall:
    """Everything needed to run one op's twin: entry point, struct values, buffers."""

    kind: str
    entry: str
    struct: str
    values: dict  # field -> int, or buffer name / None for pointer fields
    buffers: tuple[Buf, ...]
    output: str  # the buffer holding the result
    out_shape: tuple[int, ...]
    path: str = ""  # which C path runs (for reports)
    notes: tuple[str, ...] = field(default=())
    out_dtype: object = None  # ElemType of the output (sub-byte outputs are packed)


def c_dir() -> Path:
    """kernels/c as installed (package data of mcusim.kernels)."""
    return Path(str(resources.files("mcusim.kernels").joinpath("c")))


def c_sources() -> list[Path]:
    return sorted(c_dir().glob("*.c"))


def supports(graph: Graph, op: Op) -> str | None:
    """None if a twin exists for ``op``, else the reason there is none."""
    from mcusim.precision import needs_generic_kernel

    if op.kind not in ENTRIES:
        return f"no C twin for op kind {op.kind!r}"
    mac_or_pool = ("conv2d", "depthwise_conv2d", "fully_connected", "avg_pool2d", "max_pool2d")
    if op.kind in (*mac_or_pool, "add", "sub") and needs_generic_kernel(graph, op):
        return _subbyte_support(graph, op)
    if op.kind in ("reshape", "squeeze"):
        dt = graph.tensors[op.inputs[0]].dtype
        if dt.is_float or dt.bits > 8:
            return f"tensor {op.inputs[0]!r} is {dt.name}, the copy twin moves <= 8-bit data"
        return None  # packed bytes are moved as they are
    for name in [*op.inputs[:1], op.outputs[0]]:
        if name and graph.tensors[name].dtype.name.lower() != "int8":
            return f"tensor {name!r} is {graph.tensors[name].dtype.name}, the twins are int8"
    return None


def _subbyte_support(graph: Graph, op: Op) -> str | None:
    """The sub-byte twin: conv2d / fully_connected, 2- or 4-bit signed weights, 2/4/8-bit
    activations, any <= 8-bit or binary (thresholds) output."""
    from mcusim.precision import describe

    t = graph.tensors
    if op.kind not in ("conv2d", "fully_connected"):
        return f"{op.kind} {describe(graph, op)} has no C twin yet (sub-byte: conv, FC only)"
    x, w, y = t[op.inputs[0]], t[op.inputs[1]], t[op.outputs[0]]
    if y.dtype.is_float or not (y.dtype.binary or y.dtype.bits in (2, 4, 8)):
        return f"{describe(graph, op)}: output type {y.dtype} has no twin"
    if w.dtype.binary or x.dtype.binary:
        if w.dtype.binary and x.dtype.binary:
            return None  # the XNOR-popcount twin (binary.c)
        return f"{describe(graph, op)}: binary twin only for W1A1 (both operands binary)"
    if not w.dtype.signed or w.dtype.bits not in (2, 4):
        return f"{describe(graph, op)}: the sub-byte twin takes int2/int4 weights"
    if x.dtype.binary or x.dtype.is_float or x.dtype.bits not in (2, 4, 8):
        return f"{describe(graph, op)}: the sub-byte twin takes 2/4/8-bit activations"
    if y.dtype.is_float or not (y.dtype.binary or y.dtype.bits in (2, 4, 8)):
        return f"{describe(graph, op)}: output type {y.dtype} has no twin"
    return None


def _i32(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a).astype(np.int32))


def _raw_bias(folded: np.ndarray, weights2d: np.ndarray, in_zp: int) -> np.ndarray:
    """Undo kernels/conv2d.folded_bias: bias = folded + in_zp * sum(row), int32 wrap."""
    b = folded.astype(np.int64) + int(in_zp) * weights2d.astype(np.int64).sum(axis=1)
    return (((b + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)).astype(np.int32)


# per-channel parameters a runtime prepares at init: RAM, as TFLite Micro's persistent
# arena buffers (and the simulator's "qmult" / "qparams" streams); weights and biases stay
# in flash
QPARAM_BUFFERS = ("mult", "shift", "thresholds")


def _consts(**arrays) -> list[Buf]:
    out = []
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        out.append(Buf(name, a.nbytes, a, "ram" if name in QPARAM_BUFFERS else "flash"))
    return out


def pulp_bits(graph: Graph, op: Op, family: str | None) -> tuple[int, int] | None:
    """(activation bits, weight bits) when ``op`` runs the Xpulp twin (pulp.c) on an ISA
    ``family``: conv2d / fully_connected with signed weights and activations of equal width
    among the family's dot widths (8 on XpulpV2; 8, 4, 2 on XpulpNN), or int8 activations
    with 4/2-bit weights (unpacked to bytes); else None."""
    widths = XPULP_DOT_BITS.get((family or "").lower())
    if widths is None or op.kind not in ("conv2d", "fully_connected"):
        return None
    t = graph.tensors
    x, w, y = t[op.inputs[0]], t[op.inputs[1]], t[op.outputs[0]]
    if any(d.binary or d.is_float for d in (x.dtype, w.dtype, y.dtype)):
        return None
    if not w.dtype.signed or y.dtype.bits not in (2, 4, 8):
        return None
    xb, wb = x.dtype.bits, w.dtype.bits
    if xb == wb and xb in widths:
        return xb, wb
    if xb == 8 and wb in (4, 2):
        return xb, wb
    return None


def marshal(
    graph: Graph, op: Op, params, inputs: list[np.ndarray], family: str | None = None
) -> LayerCall:
    """The twin call of ``op`` given its prepared ``params`` and runtime ``inputs``.

    ``family``: the device's ISA family; "rv32-xpulpv2" / "rv32-xpulpnn" route conv2d and
    fully_connected to the Xpulp twin (:func:`pulp_bits`)."""
    why = supports(graph, op)
    if why is not None:
        raise UnsupportedOpError(why, layer=op.label)
    entry, struct = ENTRIES[op.kind]
    out_t = graph.tensors[op.outputs[0]]
    out_shape = tuple(int(s) for s in out_t.shape)
    n_out = int(np.prod(out_shape))
    pb = pulp_bits(graph, op, family)
    if pb is not None:
        entry, struct = PULP_ENTRY
        values, bufs, path = _marshal_pulp(graph, op, params, inputs, family)
    else:
        if _is_mac(params):
            x_t = graph.tensors[op.inputs[0]]
            entry, struct = BINARY_ENTRY if x_t.dtype.binary else SUBBYTE_ENTRY
        fn = globals()[f"_marshal_{struct}"]
        values, bufs, path = fn(graph, op, params, inputs)
    out_bytes = packed_size(out_t.dtype, n_out) if struct in ("sbconv", "copy") else n_out
    bufs.append(Buf("output", out_bytes))
    values.setdefault("output", "output")
    return LayerCall(
        op.kind, entry, struct, values, tuple(bufs), "output", out_shape, path,
        out_dtype=out_t.dtype,
    )  # fmt: skip


def _is_mac(obj) -> bool:
    from mcusim.kernels.subbyte import MacParams

    return isinstance(obj, MacParams)


def _wrap32(a) -> np.ndarray:
    a = np.asarray(a, np.int64)
    return (((a + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)).astype(np.int32)


def _marshal_pulp(graph, op, p, inputs, family):
    """The Xpulp twin (pulp.c): int8 params (Conv2DParams / FullyConnectedParams, whose
    bias already has the input offset folded) or sub-byte MacParams (raw bias: folded
    here as bias - zp_x * sum(w), wrapped to int32); weight rows packed in 32-bit words."""
    from mcusim.kernels.conv2d import Conv2DParams, const_data
    from mcusim.kernels.fully_connected import FullyConnectedParams
    from mcusim.precision import pack_rows, zero_point

    t = graph.tensors
    x_t, w_t, y_t = t[op.inputs[0]], t[op.inputs[1]], t[op.outputs[0]]
    xb, wb = pulp_bits(graph, op, family)
    x = np.asarray(inputs[0])
    if isinstance(p, (Conv2DParams, FullyConnectedParams)):
        if p.weights.dtype != np.int8:
            raise UnsupportedOpError(
                "fully_connected with a non-zero weight zero point has no C twin", layer=op.label
            )
        rows = p.weights.reshape(p.weights.shape[0], -1)
        bias = _i32(p.bias)
        cout = rows.shape[0]
        if isinstance(p, Conv2DParams):
            x = x.reshape(x.shape)
            geom, groups, in_shape = p.geom, p.groups, x.shape
        else:
            k = rows.shape[1]
            x = x.reshape(-1, 1, 1, k)
            geom, groups, in_shape = (1, 1, 1, 1, 1, 1, 0, 0, 1, 1), 1, x.shape
        in_zp = zero_point(x_t)
        mult = np.broadcast_to(_i32(p.mult).reshape(-1), (cout,)).copy()
        shift = np.broadcast_to(_i32(p.shift).reshape(-1), (cout,)).copy()
        req = dict(thresholds=None, out_offset=p.out_zp, act_min=p.act_min, act_max=p.act_max,
                   levels=0, out_lo=p.act_min, out_step=1)  # fmt: skip
        consts = dict(mult=mult, shift=shift)
    else:
        wd = const_data(graph, op, 1, "weights")
        cout = wd.shape[0]
        rows = wd.reshape(cout, -1)
        raw = const_data(graph, op, 2, "bias")
        raw = np.zeros(cout, np.int64) if raw is None else raw.astype(np.int64).reshape(cout)
        in_zp = zero_point(x_t)
        bias = _wrap32(raw - in_zp * rows.astype(np.int64).sum(axis=1))
        x = x.reshape(p.in_shape)
        geom, groups, in_shape = p.geom, p.groups, p.in_shape
        r = p.requant
        thr = r.mode == "thresholds"
        req = dict(
            thresholds="thresholds" if thr else None, out_offset=r.out_zp, act_min=r.lo,
            act_max=r.hi, levels=r.thresholds.shape[1] if thr else 0, out_lo=r.lo,
            out_step=r.step,
        )  # fmt: skip
        consts = (
            dict(thresholds=r.thresholds.astype(np.int32))
            if thr
            else dict(mult=_i32(r.mult), shift=_i32(r.shift))
        )
    words = np.ascontiguousarray(pack_rows(rows.astype(np.int8), w_t.dtype, 32)).astype("<u4")
    n_b, h, w, cin = (int(v) for v in in_shape)
    kh, kw, sh, sw, dh, dw, ph, pw, oh, ow = geom
    xin = packed(x, x_t.dtype) if xb < 8 else x.astype(x_t.dtype.np_dtype)
    xin = np.ascontiguousarray(xin).view(np.uint8).reshape(-1)
    v = dict(
        input="input", weights="weights", bias="bias",
        mult=None if "thresholds" in consts else "mult",
        shift=None if "thresholds" in consts else "shift", scratch="scratch", batches=n_b,
        in_h=h, in_w=w, in_c=cin, out_h=oh, out_w=ow, out_c=cout, k_h=kh, k_w=kw, s_h=sh,
        s_w=sw, d_h=dh, d_w=dw, pad_t=ph, pad_l=pw, groups=groups, in_bits=xb,
        in_signed=int(x_t.dtype.signed), in_zp=in_zp, w_bits=wb, row_words=words.shape[1],
        out_bits=y_t.dtype.bits, **req,
    )  # fmt: skip
    bufs = [Buf("input", xin.nbytes, xin, "ram")] + _consts(weights=words, bias=bias, **consts)
    bufs.append(Buf("scratch", 2 * 4 * words.shape[1] * (xb // wb)))
    lanes = {8: "b", 4: "n", 2: "c"}[wb if xb == wb else 8]
    sg = "sp" if x_t.dtype.signed else "usp"
    path = f"Xpulp W{wb}A{xb}: packed im2col + 4x2 pv.sdot{sg}.{lanes} kernel"
    if xb != wb:
        path += f" (int{wb} weights unpacked to bytes)"
    return v, bufs, path + (", thresholds" if req["thresholds"] else ", fixed point")


def _marshal_sbconv(graph, op, p, inputs):
    """A sub-byte conv / FC (kernels/subbyte.MacParams): packed input, weight rows packed
    in 32-bit words, raw bias from the graph, the requant of docs/precision.md."""
    from mcusim.kernels.conv2d import const_data
    from mcusim.precision import pack_rows, width, zero_point

    t = graph.tensors
    x_t, w_t, y_t = t[op.inputs[0]], t[op.inputs[1]], t[op.outputs[0]]
    wd = const_data(graph, op, 1, "weights")
    cout = wd.shape[0]
    rows = wd.reshape(cout, -1)
    binary = w_t.dtype.binary
    words = np.ascontiguousarray(pack_rows(rows, w_t.dtype, 32)).astype("<u4")
    bias = const_data(graph, op, 2, "bias")
    bias = np.zeros(cout, np.int32) if bias is None else bias.astype(np.int32).reshape(cout)
    x = np.asarray(inputs[0]).reshape(p.in_shape)
    n_b, h, w, cin = x.shape
    kh, kw, sh, sw, dh, dw, ph, pw, oh, ow = p.geom
    xin = packed(x, x_t.dtype) if x_t.dtype.bits < 8 else x.astype(x_t.dtype.np_dtype)
    xin = np.ascontiguousarray(xin).view(np.uint8).reshape(-1)
    r = p.requant
    thr = r.mode == "thresholds"
    v = dict(
        input="input", weights="weights", bias="bias", mult=None if thr else "mult",
        shift=None if thr else "shift", thresholds="thresholds" if thr else None,
        scratch="scratch", batches=n_b, in_h=h, in_w=w, in_c=cin, out_h=oh, out_w=ow,
        out_c=cout, k_h=kh, k_w=kw, s_h=sh, s_w=sw, d_h=dh, d_w=dw, pad_t=ph, pad_l=pw,
        groups=p.groups, in_bits=x_t.dtype.bits, in_signed=int(x_t.dtype.signed),
        in_zp=zero_point(x_t), w_bits=width(w_t.dtype), row_words=words.shape[1],
        out_bits=width(y_t.dtype), out_offset=r.out_zp, act_min=r.lo, act_max=r.hi,
        levels=0 if not thr else r.thresholds.shape[1], out_lo=r.lo, out_step=r.step,
    )  # fmt: skip
    bufs = [Buf("input", xin.nbytes, xin, "ram")] + _consts(weights=words, bias=bias)
    if thr:
        bufs += _consts(thresholds=r.thresholds.astype(np.int32))
    else:
        bufs += _consts(mult=_i32(r.mult), shift=_i32(r.shift))
    if binary:
        bufs.append(Buf("scratch", 4 * 4 * words.shape[1]))
        path = f"binary {p.precision}: bit im2col + 2x2 XNOR-popcount (SWAR + USADA8) kernel"
        return v, bufs, path + (", thresholds" if thr else ", fixed point")
    grp = 32 // v["w_bits"]
    bufs.append(Buf("scratch", 2 * words.shape[1] * (grp // 2) * 4))
    path = f"sub-byte {p.precision}: s16 pair-order im2col + 2x2 unpack-SMLAD kernel"
    return v, bufs, path + (", thresholds" if thr else ", fixed point")


def _act(x: np.ndarray) -> Buf:
    x = np.ascontiguousarray(x, dtype=np.int8)
    return Buf("input", x.nbytes, x, "ram")


def _marshal_conv(graph, op, p, inputs):
    from mcusim.kernels.conv2d import Conv2DParams

    if not isinstance(p, Conv2DParams):
        raise UnsupportedOpError("conv2d params are not int8 Conv2DParams", layer=op.label)
    x = np.ascontiguousarray(inputs[0], dtype=np.int8)
    n_b, h, w, cin = x.shape
    _, oh, ow, cout = p.out_shape
    bias = _raw_bias(p.bias, p.weights, p.in_zp)
    v = dict(
        input="input", weights="weights", bias="bias", mult="mult", shift="shift",
        scratch=None, batches=n_b, in_h=h, in_w=w, in_c=cin, out_h=oh, out_w=ow,
        out_c=cout, k_h=p.kernel[0], k_w=p.kernel[1], s_h=p.stride[0], s_w=p.stride[1],
        d_h=p.dilation[0], d_w=p.dilation[1], pad_t=p.pad[0], pad_l=p.pad[1],
        groups=p.groups, in_offset=-p.in_zp, out_offset=p.out_zp, act_min=p.act_min,
        act_max=p.act_max,
    )  # fmt: skip
    bufs = [_act(x)] + _consts(
        weights=p.weights.astype(np.int8), bias=bias, mult=_i32(p.mult), shift=_i32(p.shift)
    )
    one = p.pad == (0, 0) and p.kernel == (1, 1) and p.dilation == (1, 1) and p.groups == 1
    if one:
        path = "1x1 (mat_mult_nt_t_s8)" + ("" if p.stride == (1, 1) else ", per output row")
    else:
        cols = p.kernel[0] * p.kernel[1] * (cin // p.groups)
        al = (cols + 3) & ~3
        bufs.append(Buf("scratch", 2 * al * 2 + al))
        v["scratch"] = "scratch"
        path = "im2col s16 + 2x2 mat_mult_kernel_s8_s16"
    return v, bufs, path


def _marshal_dw(graph, op, p, inputs):
    from mcusim.kernels.depthwise_conv2d import DepthwiseParams

    if not isinstance(p, DepthwiseParams):
        raise UnsupportedOpError("depthwise params are not int8", layer=op.label)
    x = np.ascontiguousarray(inputs[0], dtype=np.int8)
    n_b, h, w, cin = x.shape
    _, oh, ow, cout = p.out_shape
    v = dict(
        input="input", weights="weights", bias="bias", mult="mult", shift="shift",
        scratch=None, batches=n_b, in_h=h, in_w=w, in_c=cin, out_h=oh, out_w=ow,
        out_c=cout, k_h=p.kernel[0], k_w=p.kernel[1], s_h=p.stride[0], s_w=p.stride[1],
        d_h=p.dilation[0], d_w=p.dilation[1], pad_t=p.pad[0], pad_l=p.pad[1],
        ch_mult=p.depth_multiplier, in_offset=-p.in_zp, out_offset=p.out_zp,
        act_min=p.act_min, act_max=p.act_max,
    )  # fmt: skip
    bufs = [_act(x)] + _consts(
        weights=p.weights.astype(np.int8), bias=_i32(p.bias), mult=_i32(p.mult),
        shift=_i32(p.shift),
    )  # fmt: skip
    simple = n_b == 1 and p.dilation == (1, 1)
    if simple and p.depth_multiplier == 1 and p.kernel == (3, 3) and max(p.pad) <= 1:
        path = "3x3 (4 channels per step)"
    elif simple and p.depth_multiplier % 4 == 0:
        path = "channel multiplier 4"
    else:
        path = "generic"
    return v, bufs, path


def _marshal_fc(graph, op, p, inputs):
    from mcusim.kernels.conv2d import const_data
    from mcusim.kernels.fully_connected import FullyConnectedParams

    if not isinstance(p, FullyConnectedParams):
        raise UnsupportedOpError("fully_connected params are not int8", layer=op.label)
    if p.weights.dtype != np.int8:
        raise UnsupportedOpError(
            "fully_connected with a non-zero weight zero point has no C twin", layer=op.label
        )
    k = p.weights.shape[1]
    x = np.ascontiguousarray(inputs[0], dtype=np.int8).reshape(-1, k)
    in_zp = int(graph.tensors[op.inputs[0]].quant.zero_point[0])
    w_q = graph.tensors[op.inputs[1]].quant
    v = dict(
        input="input", weights="weights", bias="bias", mult="mult", shift="shift",
        batches=x.shape[0], in_depth=k, out_depth=p.weights.shape[0], in_offset=-in_zp,
        out_offset=p.out_zp, act_min=p.act_min, act_max=p.act_max,
        per_channel=int(w_q is not None and w_q.per_channel),
    )  # fmt: skip
    consts = dict(weights=p.weights, mult=_i32(p.mult), shift=_i32(p.shift))
    if const_data(graph, op, 2, "bias") is None:
        v["bias"] = None  # as TFLite Micro calls CMSIS-NN: a null bias pointer
    else:
        consts["bias"] = _raw_bias(p.bias, p.weights, in_zp)
    bufs = [_act(x)] + _consts(**consts)
    name = "vec_mat_mult_t_per_ch_s8" if v["per_channel"] else "vec_mat_mult_t_s8"
    return v, bufs, f"{name} (2 rows x 4 columns)"


def _marshal_pool(graph, op, p, inputs):
    from mcusim.kernels.pooling import PoolParams

    if not isinstance(p, PoolParams) or p.lowest != -128:
        raise UnsupportedOpError("pooling twin is int8 only", layer=op.label)
    x = np.ascontiguousarray(inputs[0], dtype=np.int8)
    n_b, h, w, c = x.shape
    v = dict(
        input="input", scratch=None, batches=n_b, in_h=h, in_w=w, in_c=c,
        out_h=p.out_shape[1], out_w=p.out_shape[2], f_h=p.filter[0], f_w=p.filter[1],
        s_h=p.stride[0], s_w=p.stride[1], pad_t=p.pad[0], pad_l=p.pad[1],
        act_min=p.act_min, act_max=p.act_max,
    )  # fmt: skip
    bufs = [_act(x)]
    if op.kind == "avg_pool2d":
        bufs.append(Buf("scratch", 4 * c))
        v["scratch"] = "scratch"
    return v, bufs, "avgpool (int32 sums, QADD)" if op.kind == "avg_pool2d" else "maxpool"


def _marshal_add(graph, op, p, inputs):
    from mcusim.kernels.elementwise import BinaryParams, _flat_operands

    if not isinstance(p, BinaryParams):
        raise UnsupportedOpError("add/sub params are not int8", layer=op.label)
    a, b = _flat_operands(p, inputs)
    names = "sign in1_offset in2_offset left_shift in1_mult in1_shift in2_mult in2_shift " \
        "out_mult out_shift out_offset act_min act_max"  # fmt: skip
    v = dict(zip(names.split(), (int(i) for i in p.ints), strict=True))
    v.update(input1="input1", input2="input2", n=int(a.size))
    bufs = [Buf("input1", a.nbytes, a, "ram"), Buf("input2", b.nbytes, b, "ram")]
    bcast = any(tuple(x.shape) != p.out_shape for x in inputs) or any(
        c is not None and tuple(c.shape) != p.out_shape for c in p.consts
    )
    notes = "broadcast operands expanded by the host" if bcast else ""
    return v, bufs, "elementwise (4 per step)" + (f"; {notes}" if notes else "")


def _marshal_softmax(graph, op, p, inputs):
    x = np.ascontiguousarray(inputs[0], dtype=np.int8)
    depth = x.shape[-1] if x.ndim else 1
    v = dict(
        input="input", rows=x.size // depth, depth=depth, input_mult=int(p.input_multiplier),
        input_left_shift=int(p.input_left_shift), diff_min=int(p.diff_min),
    )  # fmt: skip
    return v, [_act(x)], "softmax (gemmlowp exp, Newton reciprocal)"


def _marshal_copy(graph, op, p, inputs):
    dt = graph.tensors[op.inputs[0]].dtype
    if dt.bits < 8:  # sub-byte / binary: the packed bytes (docs/precision.md 4)
        x = np.ascontiguousarray(packed(np.asarray(inputs[0]), dt)).view(np.int8).reshape(-1)
    else:
        x = np.ascontiguousarray(inputs[0]).view(np.int8)
    return dict(src="input", dst="output", nbytes=x.nbytes), [_act(x)], "memcpy"


# ------------------------------------------------------------------ packing and running


def pack_struct(call: LayerCall, addrs: dict[str, int]) -> bytes:
    """The argument struct for a 32-bit target: one little-endian word per field."""
    words = []
    for name, kind in STRUCTS[call.struct]:
        v = call.values.get(name)
        if kind == P:
            words.append(0 if v is None else addrs[v])
        else:
            words.append(int(v) & 0xFFFFFFFF)
    return np.array(words, dtype=np.uint32).tobytes()


@dataclass
class FirmwareRun:
    """A twin's run in a harness: outputs, return value and the harness's CallResult."""

    output: np.ndarray
    value: int
    result: object  # mcusim.firmware.harness.CallResult
    addrs: dict = field(default_factory=dict)  # buffer name -> harness address


def run_firmware(call: LayerCall, harness, tracer=None, budget: int | None = None) -> FirmwareRun:
    """Place ``call``'s buffers in ``harness`` (heap reset first), call the twin, read the
    output. ``tracer``: a mcusim.firmware.trace.Tracer for trace-driven cycles."""
    harness.reset_heap()
    addrs: dict[str, int] = {}
    for b in call.buffers:
        if b.data is not None:
            addrs[b.name] = harness.put(b.data, region=b.region, align=16)
        else:
            addrs[b.name] = harness.alloc(b.nbytes, region=b.region, align=16)
            harness.write(addrs[b.name], bytes(b.nbytes))
    args = harness.put(pack_struct(call, addrs), region="ram", align=16)
    res = harness.call(call.entry, args, budget=budget, trace=tracer)
    nbytes = next(b.nbytes for b in call.buffers if b.name == call.output)
    out = decode_output(call, harness.read(addrs[call.output], nbytes))
    return FirmwareRun(out, res.signed, res, addrs)


# schedule stream tag -> the twin buffers that play its part (first one present wins)
STREAM_BUFFERS = {
    "input": ("input", "input1"),
    "input2": ("input2",),
    "output": ("output",),
    "weights": ("weights",),
    "bias": ("bias",),
    "qparams": ("shift", "thresholds"),  # shifts, or the thresholds of a thresholds twin
    "qmult": ("mult",),
    "scratch": ("scratch",),
}


def stream_layout(call: LayerCall, run: FirmwareRun, harness, device) -> tuple[dict, int]:
    """Where the twin's run put what each schedule stream addresses, as the cache model's
    global addresses: (tag -> (address, buffer bytes), code base = the entry's address).
    A stream whose buffer the twin does not have points at the input with no bytes."""
    from .trace import device_address

    size = {b.name: b.nbytes for b in call.buffers}
    bases: dict[str, tuple[int, int]] = {}
    for tag, names in STREAM_BUFFERS.items():
        name = next((n for n in names if n in run.addrs), None)
        if name is not None:
            bases[tag] = (device_address(device, harness, run.addrs[name]), size[name])
    first = bases.get("input") or next(iter(bases.values()))
    for tag in STREAM_BUFFERS:
        bases.setdefault(tag, (first[0], 0))
    entry = harness.symbol(call.entry) & ~1
    bases["const"] = (device_address(device, harness, entry), 0)  # literal pools: in the code
    bases["stack"] = (device_address(device, harness, harness.call_sp), 0)
    return bases, device_address(device, harness, entry, fetch=True)


def decode_output(call: LayerCall, data: bytes) -> np.ndarray:
    """The output buffer's bytes as values of the output type and shape."""
    raw = np.frombuffer(bytes(data), np.uint8)
    dt = call.out_dtype
    if call.struct in ("sbconv", "copy") and dt is not None:
        n = int(np.prod(call.out_shape))
        if dt.bits < 8:
            return unpack_bits(raw, dt, n).reshape(call.out_shape)
        return raw[:n].view(dt.np_dtype).reshape(call.out_shape).copy()
    return raw.view(np.int8).reshape(call.out_shape).copy()


def build_twins(core: str, cc: str = "zig"):
    """Build every C twin for ``core`` into one ELF (cached by content hash)."""
    from .build import build

    return build(
        c_sources(), core, cc=cc, entries=list(ENTRY_NAMES), include_dirs=[c_dir()], opt="-O2"
    )


# ------------------------------------------------------------------ QEMU (Cortex-M55 / MVE)

FLAT_KIND = {
    "mn_conv_s8": 0,
    "mn_depthwise_s8": 1,
    "mn_fully_connected_s8": 2,
    "mn_avgpool_s8": 3,
    "mn_maxpool_s8": 4,
    "mn_add_s8": 5,
    "mn_softmax_s8": 6,
    "mn_copy": 7,
}


def run_qemu(call: LayerCall, core: str = "cortex-m55", cc: str = "zig") -> tuple[np.ndarray, int]:
    """Run the twin as whole firmware in QEMU mps3-an547 (Helium build: the conv and FC
    matrix loops use MVE) through kernels/c/flat.c; returns (output, return value).
    No timing: QEMU has no cycle model."""
    from .qemu import call_function

    fields = STRUCTS[call.struct]
    ptr_names = [n for n, k in fields if k == P]
    bufs = {b.name: b for b in call.buffers}
    args: list = [FLAT_KIND[call.entry]]
    out_index = None
    for i in range(7):
        v = call.values.get(ptr_names[i]) if i < len(ptr_names) else None
        if v is None:
            args.append(0)
            continue
        b = bufs[v]
        data = b.data if b.data is not None else np.zeros(b.nbytes, np.uint8)
        args.append(np.ascontiguousarray(data).view(np.uint8).reshape(-1).copy())
        if v == call.output:
            out_index = len(args) - 1
    ints = [int(call.values[n]) for n, k in fields if k == I]
    args.append(np.array(ints + [0], np.int32))
    res = call_function(
        c_sources(),
        "mn_call_flat",
        args,
        outputs={out_index: (np.int8, call.out_shape)},
        core=core,
        cc=cc,
        include_dirs=[c_dir()],
    )
    return res.outputs[out_index].reshape(call.out_shape), res.signed


# ------------------------------------------------------------------ host (ctypes) build


class HostBuildError(RuntimeError):
    pass


@cache
def host_library(compiler: str = "gcc") -> ctypes.CDLL:
    """kernels/c compiled for this machine (portable C paths) as a shared library."""
    cc = shutil.which(compiler)
    if cc is None:
        raise HostBuildError(f"host compiler {compiler!r} not found")
    srcs = c_sources()
    h = hashlib.sha256(compiler.encode())
    for s in srcs + sorted(c_dir().glob("*.h")):
        h.update(s.name.encode() + b"\0" + s.read_bytes())
    from .build import cache_dir

    out = cache_dir() / "host" / f"twins-{h.hexdigest()[:24]}.so"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".{id(out)}.tmp")
        cmd = [cc, "-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-ffreestanding",
               "-fPIC", "-shared", f"-I{c_dir()}", "-o", str(tmp), *map(str, srcs)]  # fmt: skip
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise HostBuildError(f"host build of kernels/c failed:\n{r.stderr.strip()}")
        tmp.replace(out)
    return ctypes.CDLL(str(out))


@cache
def _ctypes_struct(struct: str):
    fields = [(n, ctypes.c_void_p if k == P else ctypes.c_int32) for n, k in STRUCTS[struct]]
    return type(f"mn_{struct}_args", (ctypes.Structure,), {"_fields_": fields})


def run_host(call: LayerCall, lib: ctypes.CDLL | None = None) -> tuple[np.ndarray, int]:
    """Run the host-compiled twin; returns (output, return value)."""
    lib = host_library() if lib is None else lib
    arrays: dict[str, np.ndarray] = {}
    for b in call.buffers:
        buf = np.zeros(b.nbytes + 16, np.uint8)  # slack: never read, guards off-by-ones
        if b.data is not None:
            buf[: b.nbytes] = np.frombuffer(np.ascontiguousarray(b.data).tobytes(), np.uint8)
        arrays[b.name] = buf
    st = _ctypes_struct(call.struct)()
    for name, kind in STRUCTS[call.struct]:
        v = call.values.get(name)
        if kind == P:
            setattr(st, name, None if v is None else arrays[v].ctypes.data)
        else:
            setattr(st, name, int(v))
    fn = getattr(lib, call.entry)
    fn.restype = ctypes.c_int32
    fn.argtypes = [ctypes.c_void_p]
    ret = fn(ctypes.addressof(st))
    nbytes = next(b.nbytes for b in call.buffers if b.name == call.output)
    return decode_output(call, arrays[call.output][:nbytes].tobytes()), int(ret)
