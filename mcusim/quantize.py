"""Post-training re-quantization of an INT8 graph to sub-byte / binary layers, per layer.

The method is specified in docs/quantize.md and implemented exactly here:

* weights of a selected layer are dequantized (scale * q) and re-quantized symmetric per
  output channel to N bits (scale = max|w| / (2^(N-1) - 1), round half away from zero), or
  binarized (sign, 0 -> +1, per-channel scale alpha = mean|w|);
* the layer's input activation tensor gets the requested A bits: its real range is
  calibrated by running the source model on the calibration inputs, the producing op emits
  the new type (fixed-point requantization to the new scale; a sign threshold for binary);
* biases of every MAC op whose input or weight scale changed are re-scaled to int32.

:func:`requantize` returns the rewritten graph and a per-layer report with the SQNR of each
op's output against the source model's (dequantized) output on the calibration data.
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .dtypes import BINARY, INT32, ElemType, Quant, elem_type
from .errors import GraphError, InputError, UserError
from .graph import Graph, Op, Tensor
from .precision import MAC_KINDS, op_precision

POOL_KINDS = ("max_pool2d", "avg_pool2d")
WEIGHT_AXIS = {"conv2d": 0, "depthwise_conv2d": 3, "fully_connected": 0}
DEFAULT_RANDOM_SAMPLES = 16
_SPEC_RE = re.compile(r"^W([1-8])A([1-8])([US]?)$", re.IGNORECASE)


class QuantizeError(UserError):
    """A re-quantization request that cannot be carried out (layer, precision, why)."""


@dataclass(frozen=True)
class Spec:
    """A requested precision: weight bits, activation bits (1 = binary), signedness."""

    w_bits: int
    a_bits: int
    a_signed: bool | None = None  # None: from the calibrated range (unsigned if min >= 0)

    @property
    def label(self) -> str:
        suffix = "" if self.a_signed is None else ("s" if self.a_signed else "u")
        return f"W{self.w_bits}A{self.a_bits}{suffix}"


def parse_spec(text: str) -> Spec:
    """``W4A4``, ``W1A1``, ``W2A8u`` (u / s force unsigned / signed activations)."""
    m = _SPEC_RE.match(text.strip())
    if not m:
        raise QuantizeError(
            f"precision {text!r}: expected W<bits>A<bits> with bits 1..8 (1 = binary), "
            "optionally followed by u or s (activation signedness), e.g. W4A4, W1A1, W8A4u"
        )
    w, a, s = int(m.group(1)), int(m.group(2)), m.group(3).lower()
    if a == 1 and s:
        raise QuantizeError(f"precision {text!r}: binary activations have no signedness")
    return Spec(w, a, None if not s else s == "s")


@dataclass
class QuantizeResult:
    graph: Graph
    records: list[dict]
    output_sqnr_db: list[float | None]
    notes: list[str] = field(default_factory=list)

    @property
    def report(self):
        """The per-layer report as a pandas DataFrame (one row per op)."""
        import pandas as pd

        return pd.DataFrame.from_records(self.records)


# -- numeric helpers ----------------------------------------------------------------------
def round_half_away(x: np.ndarray) -> np.ndarray:
    """Round half away from zero (std::round), elementwise."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def dequantize(values: np.ndarray, q: Quant | None, axis_size: int | None = None) -> np.ndarray:
    """real = scale * (q - zero_point) (per tensor, or per channel on ``q.axis``)."""
    v = np.asarray(values, dtype=np.float64)
    if q is None:
        return v
    s = q.scale.astype(np.float64)
    zp = q.zero_point.astype(np.float64)
    if q.axis is not None and s.size > 1:
        shape = [1] * v.ndim
        shape[q.axis] = s.size
        s = s.reshape(shape)
        zp = zp.reshape(shape) if zp.size > 1 else zp[0]
        return s * (v - zp)
    return float(s[0]) * (v - float(zp[0]))


def quantize_weights(
    w_real: np.ndarray, bits: int, axis: int
) -> tuple[np.ndarray, ElemType, Quant]:
    """Symmetric per-output-channel N-bit weights, or binary (sign, alpha = mean|w|)."""
    moved = np.moveaxis(np.asarray(w_real, np.float64), axis, 0)
    rows = moved.reshape(moved.shape[0], -1)
    if bits == 1:
        alpha = np.abs(rows).mean(axis=1)
        alpha = np.where(alpha > 0, alpha, 1.0).astype(np.float32)
        q = np.where(rows >= 0, 1, -1)
        dtype = BINARY
    else:
        qmax = (1 << (bits - 1)) - 1
        amax = np.abs(rows).max(axis=1)
        scale = np.where(amax > 0, amax / qmax, 1.0).astype(np.float32)
        q = np.clip(round_half_away(rows / scale.astype(np.float64)[:, None]), -qmax - 1, qmax)
        dtype = elem_type(f"int{bits}")
        alpha = scale
    q = np.moveaxis(q.reshape(moved.shape), 0, axis).astype(dtype.np_dtype)
    quant = Quant(alpha, np.zeros(alpha.size, np.int64), axis)
    return np.ascontiguousarray(q), dtype, quant


def activation_params(
    lo: float, hi: float, mean_abs: float, bits: int, signed: bool | None
) -> tuple[ElemType, Quant]:
    """Type and (scale, zero point) of an A-bit activation with calibrated range [lo, hi].

    The range is widened to contain 0. Unsigned when ``lo >= 0`` (unless forced).
    scale = (hi - lo) / (qmax - qmin); zero point = qmin - round(lo / scale), clamped.
    Binary: scale = mean|x|, zero point 0.
    """
    if bits == 1:
        s = mean_abs if mean_abs > 0 else 1.0
        return BINARY, Quant(np.float32(s), 0)
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if signed is None:
        signed = lo < 0
    dtype = elem_type(f"{'int' if signed else 'uint'}{bits}")
    qmin, qmax = dtype.min, dtype.max
    scale = np.float32((hi - lo) / (qmax - qmin)) if hi > lo else np.float32(1.0)
    zp = qmin - round_half_away(lo / float(scale))
    zp = int(np.clip(zp, qmin, qmax))
    return dtype, Quant(scale, zp)


def sqnr_db(signal_power: float, noise_power: float) -> float:
    """10 log10(sum ref^2 / sum (ref - test)^2); +inf when equal."""
    if noise_power == 0.0:
        return math.inf
    if signal_power == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal_power / noise_power)


# -- layer selection ---------------------------------------------------------------------
def select_layers(
    graph: Graph, bits: Mapping[str, str], default: str | None
) -> dict[int, tuple[Spec, bool]]:
    """op index -> (spec, explicit). Selectors: op name, op index, or a glob on op names."""
    chosen: dict[int, tuple[Spec, bool, str]] = {}
    for sel, text in bits.items():
        spec = parse_spec(text)
        idx = _match(graph, sel)
        for i in idx:
            prev = chosen.get(i)
            if prev is not None and prev[0] != spec:
                raise QuantizeError(
                    f"layer {graph.ops[i].label}: selectors {prev[2]!r} and {sel!r} ask for "
                    f"{prev[0].label} and {spec.label}"
                )
            chosen[i] = (spec, True, sel)
    out = {i: (s, e) for i, (s, e, _) in chosen.items()}
    if default is not None:
        spec = parse_spec(default)
        for i, op in enumerate(graph.ops):
            if op.kind in MAC_KINDS and i not in out:
                out[i] = (spec, False)
    return dict(sorted(out.items()))


def _match(graph: Graph, sel: str) -> list[int]:
    ops = graph.ops
    exact = [i for i, op in enumerate(ops) if op.name == sel]
    if not exact and re.fullmatch(r"-?\d+", sel.strip()):
        i = int(sel)
        if not -len(ops) <= i < len(ops):
            raise QuantizeError(f"layer index {i} out of range: the model has {len(ops)} ops")
        exact = [i % len(ops)]
    if exact:
        for i in exact:
            if ops[i].kind not in MAC_KINDS:
                raise QuantizeError(
                    f"layer {ops[i].label} has no weights: only {', '.join(MAC_KINDS)} "
                    "layers can be re-quantized"
                )
        return exact
    hits = [
        i for i, op in enumerate(ops) if op.kind in MAC_KINDS and fnmatch.fnmatchcase(op.name, sel)
    ]
    if not hits:
        raise QuantizeError(
            f"layer selector {sel!r} matches no conv2d / depthwise_conv2d / fully_connected op "
            "(give an op name, an op index or a glob; `mcusim info MODEL` lists them)"
        )
    return hits


# -- calibration ---------------------------------------------------------------------------
def calibration_inputs(
    graph: Graph, calibration: Sequence[np.ndarray] | np.ndarray | None
) -> list[list[np.ndarray]]:
    """Samples as lists of model inputs. Float data is quantized with the input's quant."""
    from .inputs import check_inputs, random_inputs

    if len(graph.inputs) != 1:
        raise QuantizeError(
            f"calibration supports single-input models; this one has {len(graph.inputs)}"
        )
    t = graph.tensors[graph.inputs[0]]
    if calibration is None:
        return [random_inputs(graph, seed) for seed in range(DEFAULT_RANDOM_SAMPLES)]
    if isinstance(calibration, np.ndarray):
        arr = calibration
        if tuple(arr.shape) == tuple(t.shape):
            samples = [arr]
        elif tuple(arr.shape[1:]) == tuple(t.shape):
            samples = list(arr)
        elif t.shape and t.shape[0] == 1 and tuple(arr.shape[1:]) == tuple(t.shape[1:]):
            samples = [a[None] for a in arr]
        else:
            raise InputError(
                f"calibration array has shape {tuple(arr.shape)}; expected {tuple(t.shape)} "
                f"or (N, ...) stacking samples of that shape"
            )
    else:
        samples = [np.asarray(a) for a in calibration]
    if not samples:
        raise InputError("calibration data holds no sample")
    out = []
    for x in samples:
        x = np.asarray(x)
        if np.issubdtype(x.dtype, np.floating) and not t.dtype.is_float:
            if t.quant is None:
                raise InputError(f"model input {t.name!r} has no quantization for float data")
            s, zp = float(t.quant.scale[0]), int(t.quant.zero_point[0])
            x = np.clip(round_half_away(x / s) + zp, t.dtype.min, t.dtype.max)
            x = x.astype(t.dtype.np_dtype)
        out.append(check_inputs(graph, [x]))
    return out


@dataclass
class _Stats:
    lo: float = math.inf
    hi: float = -math.inf
    abs_sum: float = 0.0
    count: int = 0

    def add(self, real: np.ndarray) -> None:
        if real.size:
            self.lo = min(self.lo, float(real.min()))
            self.hi = max(self.hi, float(real.max()))
            self.abs_sum += float(np.abs(real).sum())
            self.count += real.size

    def merge(self, other: _Stats) -> _Stats:
        return _Stats(
            min(self.lo, other.lo),
            max(self.hi, other.hi),
            self.abs_sum + other.abs_sum,
            self.count + other.count,
        )

    @property
    def mean_abs(self) -> float:
        return self.abs_sum / self.count if self.count else 0.0


# -- graph rewriting -----------------------------------------------------------------------
def copy_graph(graph: Graph) -> Graph:
    """A deep copy (tensors, constant data and ops are new objects)."""
    return copy.deepcopy(graph)


def _consumers(graph: Graph) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, op in enumerate(graph.ops):
        for n in op.inputs:
            if n:
                out.setdefault(n, []).append(i)
    return out


def _producers(graph: Graph) -> dict[str, int]:
    return {n: i for i, op in enumerate(graph.ops) for n in op.outputs}


def activation_group(graph: Graph, name: str) -> list[str]:
    """Tensors that must share one type and quantization with ``name``.

    Pooling keeps its input's scale and zero point (docs/precision.md section 3), so the
    input and output of a max/avg pool are one group; the group is closed over both ways.
    """
    cons, prod = _consumers(graph), _producers(graph)
    group, todo = [name], [name]
    while todo:
        n = todo.pop()
        linked = []
        p = prod.get(n)
        if p is not None and graph.ops[p].kind in POOL_KINDS:
            linked.append(graph.ops[p].inputs[0])
        for c in cons.get(n, []):
            if graph.ops[c].kind in POOL_KINDS and graph.ops[c].inputs[0] == n:
                linked.append(graph.ops[c].outputs[0])
        for m in linked:
            if m not in group:
                group.append(m)
                todo.append(m)
    return group


def check_group(graph: Graph, group: list[str], binary: bool) -> str | None:
    """Why the group cannot take a sub-byte/binary type (None if it can)."""
    cons, prod = _consumers(graph), _producers(graph)
    what = "binary" if binary else "sub-byte"
    for n in group:
        if n in graph.inputs:
            return f"tensor {n!r} is a graph input (its type is fixed by the model's user)"
        if n in graph.outputs:
            return f"tensor {n!r} is a graph output"
        p = graph.ops[prod[n]]
        if p.kind in POOL_KINDS:
            if binary and p.kind == "avg_pool2d":
                return f"it is produced by {p.label}, and avg_pool2d has no binary form"
        elif p.kind == "add":
            if binary:
                return f"it is produced by {p.label}, and add has no binary form"
        elif p.kind not in MAC_KINDS:
            return (
                f"it is produced by {p.label}, which stays INT8; only conv2d, depthwise_conv2d, "
                f"fully_connected, add and pooling can emit {what} values (docs/precision.md)"
            )
        for c in cons.get(n, []):
            op = graph.ops[c]
            if op.kind in MAC_KINDS and op.inputs[0] == n:
                continue
            if op.kind in POOL_KINDS and not (binary and op.kind == "avg_pool2d"):
                continue
            if op.kind == "add" and not binary:
                continue
            return (
                f"tensor {n!r} also feeds {op.label}, which stays INT8 "
                f"(docs/precision.md section 3)"
            )
    return None


def _set_binary_producer(graph: Graph, op: Op) -> None:
    """A MAC op that emits binary values: sign of its accumulator via one threshold (0)."""
    w = graph.tensors[op.inputs[1]]
    n_out = w.shape[WEIGHT_AXIS[op.kind]]
    name = f"{op.outputs[0]}/thresholds"
    while name in graph.tensors:
        name += "_"
    graph.tensors[name] = Tensor(name, (n_out, 1), INT32, None, np.zeros((n_out, 1), np.int32))
    inputs = list(op.inputs[:3]) + [""] * (3 - len(op.inputs[:3]))
    op.inputs = inputs + [name]
    op.attrs = dataclasses.replace(op.attrs, requant="thresholds", activation="none")


def _rescale_bias(graph: Graph, op: Op, old_x: Quant, old_w: Quant, users: dict) -> bool:
    """bias_real / (s_x * s_w[c]) rounded half away from zero, as int32 (True if changed)."""
    if len(op.inputs) < 3 or not op.inputs[2]:
        return False
    x = graph.tensors[op.inputs[0]]
    w = graph.tensors[op.inputs[1]]
    b = graph.tensors[op.inputs[2]]
    n = b.size
    sx_old = float(old_x.scale[0])
    sw_old = np.broadcast_to(old_w.scale.astype(np.float64), (n,))
    sx_new = float(x.quant.scale[0])
    sw_new = np.broadcast_to(w.quant.scale.astype(np.float64), (n,))
    if sx_old == sx_new and np.array_equal(sw_old, sw_new):
        return False
    real = b.data.astype(np.float64).reshape(n) * sx_old * sw_old
    q = round_half_away(real / (sx_new * sw_new))
    if np.any(np.abs(q) > 2**31 - 1):
        raise QuantizeError(
            f"re-scaled bias {b.name!r} overflows int32 (input scale {sx_new:g})",
            layer=op.label,
        )
    scale = (sx_new * sw_new).astype(np.float32)
    new = Tensor(
        b.name,
        b.shape,
        INT32,
        Quant(scale, np.zeros(n, np.int64), 0 if n > 1 else None),
        q.astype(np.int32).reshape(b.shape),
    )
    if users.get(b.name, 1) > 1:  # shared bias: give this op its own tensor
        new.name = f"{b.name}/{op.name}"
        op.inputs[2] = new.name
    graph.tensors[new.name] = new
    return True


def _check_multipliers(graph: Graph, op: Op) -> None:
    """The fixed-point requant multiplier s_x*s_w/s_y must be representable (> 2^-31)."""
    if op.attrs.requant != "fixed_point":
        return
    x = graph.tensors[op.inputs[0]]
    w = graph.tensors[op.inputs[1]]
    y = graph.tensors[op.outputs[0]]
    if x.quant is None or y.quant is None or w.quant is None:
        return
    real = float(x.quant.scale[0]) * w.quant.scale.astype(np.float64) / float(y.quant.scale[0])
    bad = (real <= 2.0**-31) | (real >= 2.0**31) | ~np.isfinite(real)
    if np.any(bad):
        raise QuantizeError(
            f"requantization multiplier s_x*s_w/s_y = {real[bad][0]:g} is not representable "
            "as a Q31 multiplier and shift",
            layer=op.label,
        )


# -- the main entry --------------------------------------------------------------------------
def requantize(
    model_or_graph,
    bits: Mapping[str, str] | None,
    calibration: Sequence[np.ndarray] | np.ndarray | None,
    *,
    default: str | None = None,
) -> QuantizeResult:
    """Re-quantize the MAC layers of an INT8 graph per layer (docs/quantize.md).

    ``bits`` maps a layer selector (op name, op index or glob) to a precision such as
    ``"W4A4"``; ``default`` applies to every other MAC layer. Explicitly requested layers
    that cannot take the precision raise :class:`QuantizeError`; default-only layers keep
    their source input type instead (said in the report's ``note`` column).
    """
    from .model import Model
    from .runner import compute_outputs

    src_model = model_or_graph if isinstance(model_or_graph, Model) else Model(model_or_graph)
    src = src_model.graph
    selection = select_layers(src, dict(bits or {}), default)
    if not selection:
        raise QuantizeError("nothing to re-quantize: give --bits LAYER=WxAy or --all WxAy")
    for i in selection:
        _check_source_layer(src, src.ops[i])

    samples = calibration_inputs(src, calibration)
    src_envs = [compute_outputs(src_model, xs) for xs in samples]
    stats: dict[str, _Stats] = {}
    for env in src_envs:
        for n, v in env.items():
            t = src.tensors[n]
            stats.setdefault(n, _Stats()).add(dequantize(v, t.quant))

    g = copy_graph(src)
    notes: dict[int, str] = {}
    # 1. activation types: group -> (spec, deciding op index, explicit)
    wanted: dict[str, tuple[Spec, int, bool]] = {}
    for i, (spec, explicit) in selection.items():
        x_name = g.ops[i].inputs[0]
        x = g.tensors[x_name]
        if not _changes_activation(x, spec):
            continue
        group = activation_group(g, x_name)
        why = check_group(g, group, spec.a_bits == 1)
        if why is None and spec.a_bits == 1:
            why = _binary_relu_problem(g, group)
        if why is not None:
            if explicit:
                raise QuantizeError(
                    f"cannot give the input of this layer {spec.label} activations: {why}",
                    layer=g.ops[i].label,
                )
            notes[i] = f"input kept {x.dtype}: {why}"
            continue
        key = min(group)
        prev = wanted.get(key)
        if prev is not None and (prev[0].a_bits, prev[0].a_signed) != (spec.a_bits, spec.a_signed):
            if explicit and prev[2]:
                raise QuantizeError(
                    f"input tensor {x_name!r} is shared with {g.ops[prev[1]].label}, which "
                    f"asks for {prev[0].label}; this layer asks for {spec.label}",
                    layer=g.ops[i].label,
                )
            if prev[2] or not explicit:
                notes[i] = f"input shared with {g.ops[prev[1]].label}: {prev[0].label} applies"
                continue
        wanted[key] = (spec, i, explicit)

    old_quant = {n: t.quant for n, t in g.tensors.items()}
    prod = _producers(g)
    for key, (spec, _i, _e) in wanted.items():
        group = activation_group(g, key)
        st = _Stats()
        for n in group:
            st = st.merge(stats.get(n, _Stats()))
        if st.count == 0:
            st = _Stats(0.0, 0.0, 0.0, 0)
        dtype, quant = activation_params(st.lo, st.hi, st.mean_abs, spec.a_bits, spec.a_signed)
        for n in group:
            t = g.tensors[n]
            t.dtype, t.quant = dtype, quant
            p = g.ops[prod[n]]
            if dtype.binary and p.kind in MAC_KINDS:
                _set_binary_producer(g, p)

    # 2. weights of the selected layers
    for i, (spec, _explicit) in selection.items():
        op = g.ops[i]
        w = g.tensors[op.inputs[1]]
        if spec.w_bits == 8 and w.dtype.bits == 8 and w.dtype.signed and not w.dtype.binary:
            continue  # same width as the source: the weights stay exactly as they are
        axis = WEIGHT_AXIS[op.kind]
        real = dequantize(w.data, w.quant)
        q, dtype, quant = quantize_weights(real, spec.w_bits, axis)
        g.tensors[w.name] = Tensor(w.name, w.shape, dtype, quant, q)
        if sum(n == w.name for o in g.ops for n in o.inputs) > 1:
            raise QuantizeError(f"weights {w.name!r} are shared by several ops", layer=op.label)

    # 3. biases of every MAC op whose input or weight scale changed
    users: dict[str, int] = {}
    for op in g.ops:
        for n in op.inputs:
            users[n] = users.get(n, 0) + 1
    for sop, op in zip(src.ops, g.ops, strict=True):
        if op.kind in MAC_KINDS:
            _rescale_bias(g, op, old_quant[sop.inputs[0]], src.tensors[sop.inputs[1]].quant, users)
            _check_multipliers(g, op)

    g.metadata = dict(g.metadata)
    g.metadata["requantized"] = {
        "from": src.metadata.get("source", src.name),
        "layers": {src.ops[i].name: s.label for i, (s, _e) in selection.items()},
        "calibration_samples": len(samples),
        "method": "docs/quantize.md",
    }
    try:
        g.validate()
    except GraphError as e:
        raise QuantizeError(f"re-quantized graph is inconsistent: {e}") from None

    records, out_sqnr, run_notes = _evaluate(src, g, selection, notes, samples, src_envs)
    return QuantizeResult(g, records, out_sqnr, run_notes)


def _check_source_layer(graph: Graph, op: Op) -> None:
    w = graph.tensors[op.inputs[1]]
    x = graph.tensors[op.inputs[0]]
    if not w.is_const or w.dtype.is_float or w.quant is None:
        raise QuantizeError(
            f"weights {w.name!r} are {w.dtype}{'' if w.is_const else ' (not constant)'}; "
            "re-quantization needs quantized constant integer weights",
            layer=op.label,
        )
    if np.any(w.quant.zero_point != 0):
        raise QuantizeError(
            f"weights {w.name!r} are not symmetric (zero point != 0)", layer=op.label
        )
    if x.dtype.is_float or x.quant is None:
        raise QuantizeError(f"input {x.name!r} is not a quantized integer tensor", layer=op.label)


def _changes_activation(x: Tensor, spec: Spec) -> bool:
    if spec.a_bits == 1:
        return not x.dtype.binary
    if x.dtype.binary or x.dtype.bits != spec.a_bits:
        return True
    return spec.a_signed is not None and spec.a_signed != x.dtype.signed


def _binary_relu_problem(graph: Graph, group: list[str]) -> str | None:
    """Binary outputs come from the sign of the producer's accumulator; a fused ReLU before
    a sign would make every value +1, so such producers are refused."""
    prod = _producers(graph)
    for n in group:
        p = graph.ops[prod[n]]
        if p.kind in MAC_KINDS and p.attrs.activation != "none":
            return (
                f"its producer {p.label} has a fused {p.attrs.activation}, and the sign of a "
                "rectified value is always +1"
            )
    return None


def _evaluate(
    src: Graph,
    g: Graph,
    selection: dict[int, tuple[Spec, bool]],
    notes: dict[int, str],
    samples: list[list[np.ndarray]],
    src_envs: list[dict[str, np.ndarray]],
) -> tuple[list[dict], list[float | None], list[str]]:
    """Per-op and end-to-end SQNR of the new graph against the source, on the samples."""
    from .model import Model
    from .runner import compute_outputs

    run_notes: list[str] = []
    sig: dict[str, float] = {}
    err: dict[str, float] = {}
    ok = True
    try:
        new_model = Model(g)
        for xs, senv in zip(samples, src_envs, strict=True):
            env = compute_outputs(new_model, xs)
            for n, v in env.items():
                if n in g.inputs:
                    continue
                ref = dequantize(senv[n], src.tensors[n].quant)
                test = dequantize(v, g.tensors[n].quant)
                sig[n] = sig.get(n, 0.0) + float(np.square(ref).sum())
                err[n] = err.get(n, 0.0) + float(np.square(ref - test).sum())
    except UserError as e:
        ok = False
        run_notes.append(f"SQNR not computed: the re-quantized graph cannot run here ({e})")
    except (ImportError, NotImplementedError) as e:
        ok = False
        run_notes.append(f"SQNR not computed: {e}")

    records = []
    for i, (sop, op) in enumerate(zip(src.ops, g.ops, strict=True)):
        x = g.tensors[op.inputs[0]]
        y = g.tensors[op.outputs[0]]
        n = op.outputs[0]
        w = g.tensors[op.inputs[1]] if op.kind in MAC_KINDS else None
        records.append(
            {
                "index": i,
                "layer": op.name,
                "op": op.kind,
                "source": op_precision(src, sop),
                "precision": op_precision(g, op),
                "requested": selection[i][0].label if i in selection else "",
                "weights": str(w.dtype) if w is not None else "",
                "input": str(x.dtype),
                "output": str(y.dtype),
                "in_scale": float(x.quant.scale[0]) if x.quant is not None else None,
                "in_zero_point": int(x.quant.zero_point[0]) if x.quant is not None else None,
                "sqnr_db": sqnr_db(sig[n], err[n]) if ok else None,
                "note": notes.get(i, ""),
            }
        )
    out = [sqnr_db(sig[n], err[n]) if ok else None for n in g.outputs]
    return records, out, run_notes


def format_sqnr(v: float | None) -> str:
    if v is None:
        return "-"
    if math.isinf(v):
        return "exact" if v > 0 else "-inf"
    return f"{v:.1f}"


__all__ = [
    "QuantizeError",
    "QuantizeResult",
    "Spec",
    "activation_params",
    "parse_spec",
    "quantize_weights",
    "requantize",
]
