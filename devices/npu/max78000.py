"""MAX78000 CNN accelerator tile (docs/max78000.md).

One *hardware layer* of the accelerator is a short chain of IR ops that the tile fuses:
``[max_pool2d | avg_pool2d] -> [pad] -> conv2d`` or ``[pool] -> reshape -> fully_connected``,
or a pooling / element-wise op alone (a passthrough layer). The last op of a chain carries the
layer's cost; the ops fused into it cost 0 cycles and say so in their notes.

Cycles are izer's latency model (ai8x-synthesis ``izer/latency.py``): the layer streams its
pooled input frame row by row through the TRAM, and once the kernel rows are full each row
emits one output channel of one pixel per cycle per pass. Every hardware number (processors,
memories, clock divider, transfer and energy constants) lives in the device file's ``[npu]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mcusim.errors import DeviceError, FitError
from mcusim.ops import conv_output_size, conv_padding

from .base import NpuLayerCost, NpuSupport, NpuTile

_POOLS = ("max_pool2d", "avg_pool2d")


# -- izer's latency model -----------------------------------------------------------------
@dataclass(frozen=True)
class LayerGeometry:
    """The arguments of izer's per-layer cycle formula (latency.json ``model_inputs``)."""

    input_chan: int
    input_dim: tuple[int, int]
    pool: tuple[int, int]
    pool_stride: tuple[int, int]
    pooled_dim: tuple[int, int]
    padding: tuple[int, int]
    kernel_size: tuple[int, int]
    output_chan_hw: int
    output_dim: tuple[int, int]
    multipass: int
    num_elements: int = 1
    pool_first: bool = True
    passthrough: bool = False
    pass_out_chan: int = 1
    flatten: bool = False
    streaming: bool = False


def layer_cycles(g: LayerGeometry) -> tuple[int, dict[str, int]]:
    """CNN-clock cycles of one layer and the terms izer prints with --debug-latency.

    Per pooled input column a pass reads the pooling window (per operand) and writes one TRAM
    entry (``dat``: pool_area + 1 per operand and pass; a padding column costs ``pad``: 2);
    every column also costs one write-state cycle. Rows before the kernel has filled only
    stream data; each later row also emits ``multipass · Wo · C_out_hw`` output cycles.
    """
    rd = tram = wrt = 1
    mp, ne = g.multipass, g.num_elements
    pr, pc = g.pool
    hp, wp = g.pooled_dim
    row_pad, col_pad = g.padding
    kr, kc = g.kernel_size
    _, wo = g.output_dim
    pre_read = 0
    if g.pool_first:
        pad = mp * ne * (rd + tram)
        dat = mp * ne * (pr * pc * rd + tram)
        mpm = 1
    else:  # element-wise first, then pooling: every operand read per pass
        if mp > 1 or ne > 1:
            pre_read = 0  # izer passes kern_offs = 0 for MAX78000 layers
        pad = mp * (rd + tram)
        dat = mp * (ne * rd * pr * pc + tram)
        mpm = mp
    col = 2 * col_pad * (pad + wrt)
    first_row_pad = col + mpm * wp * (pad + wrt)
    row_no_conv = col + mpm * wp * (dat + wrt)
    left = col_pad * (pad + wrt)
    right = pad * col_pad
    row_conv = left + mpm * (kc - 1 - col_pad) * (dat + wrt) + mpm * (wo - col_pad) * dat + right
    bottom = left + mpm * (kc - 1 - col_pad) * (pad + wrt) + mpm * (wo - col_pad) * pad + right
    meq_one = 1 if g.output_chan_hw == 1 and mp == 1 else 0
    if g.passthrough:
        out_row = mp * hp * wp
        total = hp * wp * (dat + mp * g.pass_out_chan)
    else:
        out_row = mp * wo * g.output_chan_hw + g.output_chan_hw * meq_one
        fill = kr - 1 - row_pad
        total = (
            (1 if g.flatten else 0)
            + pre_read
            + row_pad * first_row_pad
            + fill * row_no_conv
            + (row_conv + out_row) * (hp - fill)
            + row_pad * (bottom + out_row)
        )
    if g.streaming:
        total = (15 * total + 9) // 10  # izer's unvalidated 1.5x streaming estimate
    terms = {
        "InPadMPPoolElt": pad,
        "InDatMPPoolElt": dat,
        "first_row_pad": first_row_pad,
        "row_data_no_conv": row_no_conv,
        "row_data_conv": row_conv,
        "bottom_pad_row": bottom,
        "data_row_output": out_row,
        "layer_subtotal": total,
    }
    return total, terms


# -- hardware layers -------------------------------------------------------------------
@dataclass
class HwLayer:
    """One accelerator layer: the IR ops it fuses and its geometry and resources."""

    index: int
    ops: list[str]  # op names, execution order; the last one carries the cost
    kind: str  # conv | linear | passthrough | eltwise
    geometry: LayerGeometry
    in_procs: int  # processor bitmap (64 bits) reading the input
    out_procs: int  # processor bitmap the output is written for
    c_in: int
    c_out: int
    weight_bits: int = 8
    weight_words: dict[int, int] = field(default_factory=dict)  # processor -> 72-bit words
    weight_bytes: int = 0  # izer's "weight memory used" (kernel bytes)
    bias_quadrant: int | None = None
    bias_bytes: int = 0
    macc: int = 0
    in_bytes: int = 0
    out_bytes: int = 0
    wide: bool = False
    cycles: int = 0
    terms: dict[str, int] = field(default_factory=dict)


@dataclass
class Max78000Plan:
    layers: list[HwLayer]
    op_layer: dict[str, int]  # op name -> hardware layer index
    weight_words_used: list[int]  # per processor
    bias_bytes_used: list[int]  # per quadrant
    startup_cycles: int = 1

    @property
    def total_cycles(self) -> int:
        return self.startup_cycles + sum(hl.cycles for hl in self.layers)


def _popcount(x: int) -> int:
    return bin(x).count("1")


def _span(x: int) -> int:
    return x.bit_length() - ((x & -x).bit_length() - 1) if x else 0


def _procs(n: int, first: int = 0) -> int:
    return ((1 << n) - 1) << first


class Max78000Tile(NpuTile):
    kind = "max78000-cnn"

    _REQUIRED = (
        "apb_hz", "clock_divider", "processors", "quadrants", "data_memory_instances",
        "data_memory_instance_bytes", "weight_words_per_processor", "weight_word_bits",
        "bias_bytes_per_quadrant", "hw_layers", "max_channels", "max_passes", "startup_cycles",
        "cpu_cycles_per_word", "cpu_call_cycles", "energy_per_cycle_j", "cpu_wait_power_w",
        "weight_load_power_w",
    )  # fmt: skip

    def __init__(self, config: dict[str, Any], device: Any, origin: str = ""):
        super().__init__(config, device, origin)
        missing = [k for k in self._REQUIRED if k not in config]
        if missing:
            raise DeviceError(f"{origin}: [npu] lacks {', '.join(missing)}")
        c = config
        if int(c["clock_divider"]) not in (1, 2, 4, 8, 16):
            raise DeviceError(f"{origin}: key 'npu.clock_divider' must be 1, 2, 4, 8 or 16")
        self.clock_hz = float(c["apb_hz"]) / int(c["clock_divider"])
        self.n_proc = int(c["processors"])
        self.n_quad = int(c["quadrants"])
        self.words_per_proc = int(c["weight_words_per_processor"])
        self.word_bits = int(c["weight_word_bits"])
        self.bias_per_quad = int(c["bias_bytes_per_quadrant"])
        self.n_layers = int(c["hw_layers"])
        self.max_ch = int(c["max_channels"])
        self.max_passes = int(c["max_passes"])
        self.inst_bytes = int(c["data_memory_instance_bytes"])
        self.n_inst = int(c["data_memory_instances"])

    # -- what runs where --------------------------------------------------------------
    def supports(self, graph, op) -> NpuSupport:
        why = self._refusal(graph, op)
        return NpuSupport(ok=not why, reason=why)

    def _refusal(self, graph, op) -> str:
        t = graph.tensors
        k = op.kind
        if k == "depthwise_conv2d":
            return "depthwise convolution is not supported on MAX78000 (MAX78002 only)"
        if k == "conv2d":
            a = op.attrs
            x, w, y = t[op.inputs[0]], t[op.inputs[1]], t[op.outputs[0]]
            if tuple(a.dilation) != (1, 1):
                return "dilation is not supported on MAX78000"
            if tuple(a.stride) != (1, 1):
                return f"stride {tuple(a.stride)}: MAX78000 convolutions are stride 1"
            co, kh, kw, ci = w.shape
            if ci != x.shape[3]:
                return "grouped convolution is not supported on MAX78000"
            conv1d = x.shape[2] == 1 and kw == 1
            if conv1d and not 1 <= kh <= 9:
                return f"Conv1d kernel {kh}: MAX78000 supports 1..9"
            if not conv1d and (kh, kw) not in ((1, 1), (3, 3)):
                return f"kernel {kh}x{kw}: MAX78000 Conv2d kernels are 1x1 or 3x3"
            pad = self._pad_of(graph, op)
            if max(pad) > (3 if conv1d else 2):
                return f"padding {max(pad)}: MAX78000 pads 0..{3 if conv1d else 2}"
            if len(op.inputs) > 2 and op.inputs[2] and co > self.bias_per_quad:
                return (
                    f"{co} biased outputs: MAX78000 bias memory holds {self.bias_per_quad} "
                    "per layer (one quadrant)"
                )
            return self._mac_common(a, x, w, y, ci, co)
        if k == "fully_connected":
            x, w, y = t[op.inputs[0]], t[op.inputs[1]], t[op.outputs[0]]
            co, n_in = w.shape
            if n_in > 16384:
                return f"{n_in} inputs: MAX78000 flatten allows C*H*W <= 16384"
            if len(op.inputs) > 2 and op.inputs[2] and co > self.bias_per_quad:
                return (
                    f"{co} biased outputs: MAX78000 bias memory holds {self.bias_per_quad} "
                    "per layer (one quadrant)"
                )
            return self._mac_common(op.attrs, x, w, y, min(n_in, self.max_ch), co)
        if k in _POOLS:
            a = op.attrs
            if a.padding != "valid" and self._pool_pad(graph, op):
                return "pooling with padding is not supported on MAX78000"
            if max(a.filter) > 16 or max(a.stride) > 16:
                return f"pool {a.filter} stride {a.stride}: MAX78000 allows up to 16"
            if a.activation not in ("none", "relu"):
                return f"fused {a.activation} after pooling is not supported on MAX78000"
            if t[op.inputs[0]].dtype.bits != 8:
                return "MAX78000 data are 8-bit"
            return ""
        if k == "pad":
            cons = [o for o in graph.ops if op.outputs[0] in o.inputs]
            if len(cons) != 1 or cons[0].kind != "conv2d":
                return "a pad op runs on MAX78000 only when a convolution consumes it"
            p = op.attrs.paddings
            if len(p) != 4 or any(p[0]) or any(p[3]) or max(max(p[1]), max(p[2])) > 3:
                return f"padding {list(p)}: MAX78000 pads rows/columns by 0..3 only"
            if p[1][0] != p[1][1] or p[2][0] != p[2][1]:
                return "asymmetric padding is not supported on MAX78000"
            return ""
        if k in ("reshape", "squeeze"):
            cons = [o for o in graph.ops if op.outputs[0] in o.inputs]
            if len(cons) == 1 and cons[0].kind == "fully_connected":
                return ""
            return "a reshape runs on MAX78000 only as the flatten before a linear layer"
        if k in ("add", "sub"):
            a, b, y = (t[n] for n in (*op.inputs[:2], op.outputs[0]))
            if a.shape != b.shape:
                return "broadcasting element-wise ops are not supported on MAX78000"
            if a.shape[-1] > 64:
                return f"{a.shape[-1]} channels: fused element-wise ops allow <= 64"
            qs = [q.quant for q in (a, b, y)]
            if any(q is None for q in qs) or any(
                float(q.scale[0]) != float(qs[0].scale[0]) or int(q.zero_point[0]) for q in qs
            ):
                return (
                    "MAX78000 adds raw int8 values: inputs and output need one scale and zero "
                    "point 0 (no requantizing element-wise op)"
                )
            return ""
        if k == "mul":
            return "element-wise multiply is not supported on MAX78000"
        if k in ("softmax",):
            return "softmax runs in software on MAX78000 (Cortex-M4)"
        return f"{k} is not an operator of the MAX78000 CNN accelerator"

    def _mac_common(self, a, x, w, y, ci, co) -> str:
        if w.dtype.binary:
            return "binary (+-1) weights are MAX78002-only"
        if w.dtype.is_float or w.dtype.bits not in (1, 2, 4, 8) or not w.dtype.signed:
            return f"weights are {w.dtype}: MAX78000 weights are 1/2/4/8-bit signed"
        if x.dtype.bits != 8 or not x.dtype.signed:
            return f"input is {x.dtype}: MAX78000 data are int8"
        if ci > self.max_ch or co > self.max_ch:
            return f"{max(ci, co)} channels: MAX78000 allows up to {self.max_ch}"
        act = a.activation
        if act not in ("none", "relu", "abs"):
            return f"activation {act}: MAX78000 has ReLU / Abs only"
        if y.dtype.bits == 32 and act != "none":
            return "a 32-bit (wide) output takes no activation on MAX78000"
        return ""

    # -- grouping into hardware layers ------------------------------------------------
    @staticmethod
    def _pad_of(graph, op) -> tuple[int, int]:
        """Row/column zero padding of a conv: its own SAME padding or a feeding pad op."""
        x = graph.tensors[op.inputs[0]]
        w = graph.tensors[op.inputs[1]]
        _, kh, kw, _ = w.shape
        if op.attrs.padding == "same":
            oh = conv_output_size(x.shape[1], kh, 1, 1, "same")
            ow = conv_output_size(x.shape[2], kw, 1, 1, "same")
            return conv_padding(x.shape[1], kh, 1, 1, oh), conv_padding(x.shape[2], kw, 1, 1, ow)
        prod = next((o for o in graph.ops if op.inputs[0] in o.outputs), None)
        if prod is not None and prod.kind == "pad":
            p = prod.attrs.paddings
            return int(p[1][0]), int(p[2][0])
        return 0, 0

    @staticmethod
    def _pool_pad(graph, op) -> bool:
        x, y = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
        fh, fw = op.attrs.filter
        sh, sw = op.attrs.stride
        return (
            y.shape[1] != (x.shape[1] - fh) // sh + 1 or y.shape[2] != (x.shape[2] - fw) // sw + 1
        )

    def group(self, graph, ops: list) -> list[list]:
        """Split ``ops`` (execution order) into fused hardware-layer chains."""
        names = {o.name for o in ops}
        consumers: dict[str, list] = {}
        for o in graph.ops:
            for n in o.inputs:
                if n:
                    consumers.setdefault(n, []).append(o)
        chains: list[list] = []
        cur: list = []
        for o in ops:
            cur.append(o)
            nxt = consumers.get(o.outputs[0], [])
            fusable = (
                len(nxt) == 1
                and nxt[0].name in names
                and o.outputs[0] not in graph.outputs
                and (
                    (o.kind in _POOLS and nxt[0].kind in ("pad", "conv2d", "reshape", "squeeze",
                                                          "fully_connected"))
                    or (o.kind == "pad" and nxt[0].kind == "conv2d")
                    or (o.kind in ("reshape", "squeeze") and nxt[0].kind == "fully_connected")
                )
            )  # fmt: skip
            if not fusable:
                chains.append(cur)
                cur = []
        if cur:
            chains.append(cur)
        return chains

    # -- resource plan ----------------------------------------------------------------
    def plan(self, graph, ops: list) -> Max78000Plan:
        for o in ops:
            why = self._refusal(graph, o)
            if why:
                raise FitError(f"{o.label} cannot run on MAX78000: {why}")
        chains = self.group(graph, ops)
        if len(chains) > self.n_layers:
            raise FitError(f"MAX78000 hardware layers: need {len(chains)}, have {self.n_layers}")
        meta = self._meta_layers(graph)
        layers = [self._layer(graph, i, ch, meta.get(ch[-1].name)) for i, ch in enumerate(chains)]
        # output processors: the next layer's input processors (izer's default)
        for i, hl in enumerate(layers):
            m = meta.get(hl.ops[-1])
            if m and m.get("output_processors"):
                hl.out_procs = int(m["output_processors"], 16)
            elif i + 1 < len(layers):
                hl.out_procs = layers[i + 1].in_procs
            else:
                hl.out_procs = _procs(min(hl.c_out, self.n_proc))
            self._finish(hl)
        used = [0] * self.n_proc
        bias = [0] * self.n_quad
        for hl in layers:
            for p, nw in hl.weight_words.items():
                used[p] += nw
                if used[p] > self.words_per_proc:
                    raise FitError(
                        f"MAX78000 weight memory of processor {p} (layer {hl.index}, "
                        f"{hl.ops[-1]}): need {used[p]} 72-bit words, have {self.words_per_proc}"
                    )
            if hl.bias_bytes:
                q = min(range(self.n_quad), key=lambda j: bias[j])
                if bias[q] + hl.bias_bytes > self.bias_per_quad:
                    raise FitError(
                        f"MAX78000 bias memory (layer {hl.index}): need {hl.bias_bytes} bytes in "
                        f"one quadrant, have {self.bias_per_quad - bias[q]}"
                    )
                bias[q] += hl.bias_bytes
                hl.bias_quadrant = q
            need = self._instance_bytes(hl)
            if need > self.inst_bytes:
                raise FitError(
                    f"MAX78000 data memory (layer {hl.index}, {hl.ops[-1]}): need {need} bytes "
                    f"per memory instance for input + output, have {self.inst_bytes}"
                )
        op_layer = {n: hl.index for hl in layers for n in hl.ops}
        return Max78000Plan(layers, op_layer, used, bias, int(self.config["startup_cycles"]))

    @staticmethod
    def _meta_layers(graph) -> dict[str, dict]:
        """ai8x-imported graphs carry the YAML's processor maps (keyed by last op name)."""
        info = (graph.metadata or {}).get("ai8x") or {}
        return {m["ops"][-1]: m for m in info.get("layers", []) if m.get("ops")}

    def _default_in_procs(self, c_in: int) -> int:
        mp = math.ceil(c_in / self.n_proc)
        n = math.ceil(c_in / mp)
        if mp > 1:
            n = min(self.n_proc, 4 * math.ceil(n / 4))
        return _procs(n)

    def _layer(self, graph, index: int, chain: list, meta: dict | None) -> HwLayer:
        t = graph.tensors
        last = chain[-1]
        x0 = t[chain[0].inputs[0]]
        if len(x0.shape) == 4:
            h, w, c_in = x0.shape[1], x0.shape[2], x0.shape[3]
        else:  # a linear layer's (batch, features) input: features streamed as channels
            h, w, c_in = 1, 1, int(x0.shape[-1])
        pool, pstride = (1, 1), (1, 1)
        for o in chain:
            if o.kind in _POOLS:
                pool, pstride = tuple(o.attrs.filter), tuple(o.attrs.stride)
        hp, wp = (h - pool[0]) // pstride[0] + 1, (w - pool[1]) // pstride[1] + 1
        mp = math.ceil(c_in / self.n_proc)
        if mp > self.max_passes:
            raise FitError(f"MAX78000 passes ({last.label}): need {mp}, have {self.max_passes}")
        in_procs = (
            int(meta["processors"], 16) if meta and meta.get("processors")
            else self._default_in_procs(c_in)
        )  # fmt: skip
        y = t[last.outputs[0]]
        wide = y.dtype.bits == 32
        kind, kernel, padding, c_out = "passthrough", (1, 1), (0, 0), c_in
        out_dim, ne, pass_out = (hp, wp), 1, 1
        wbits, macc, flatten_timeslots = 8, 0, False
        if last.kind == "conv2d":
            wt = t[last.inputs[1]]
            c_out, kh, kw, _ = wt.shape
            kind, kernel = "conv", (kh, kw)
            padding = self._pad_of(graph, last)
            out_dim = (y.shape[1], y.shape[2])
            wbits = wt.dtype.bits
            macc = c_in * kh * kw * c_out * out_dim[0] * out_dim[1]
        elif last.kind == "fully_connected":
            wt = t[last.inputs[1]]
            c_out = wt.shape[0]
            kind, wbits = "linear", wt.dtype.bits
            out_dim = (hp, wp)  # izer streams the flattened frame: Hp x Wp columns
            pass_out = hp * wp
            flatten_timeslots = True
            macc = wt.shape[1] * c_out
        elif last.kind in ("add", "sub"):
            kind, ne = "eltwise", 2
        geo = LayerGeometry(
            input_chan=c_in,
            input_dim=(h, w),
            pool=pool,
            pool_stride=pstride,
            pooled_dim=(hp, wp),
            padding=padding,
            kernel_size=kernel,
            output_chan_hw=c_out,  # refined from the output processors in _finish
            output_dim=out_dim,
            multipass=mp,
            num_elements=ne,
            passthrough=kind in ("passthrough", "eltwise"),
            pass_out_chan=pass_out if flatten_timeslots else 1,
        )
        hl = HwLayer(
            index, [o.name for o in chain], kind, geo, in_procs, 0, c_in, c_out, wbits,
            macc=macc, wide=wide,
            in_bytes=x0.size * (ne if kind == "eltwise" else 1), out_bytes=y.nbytes,
        )  # fmt: skip
        if kind in ("conv", "linear"):
            self._weights(graph, hl, last)
        return hl

    def _weights(self, graph, hl: HwLayer, op) -> None:
        """72-bit kernel words per processor: izer packs a processor's kernels (one per input
        channel it reads and output channel) contiguously, kern_len = ceil(n·taps·bits / 72)
        (S izer/kernels.py): one 3x3 8-bit kernel per word, 9 1x1 8-bit kernels per word."""
        t = graph.tensors
        wt = t[op.inputs[1]]
        b = hl.weight_bits
        procs = [p for p in range(self.n_proc) if hl.in_procs >> p & 1]
        if op.kind == "conv2d":
            taps = wt.shape[1] * wt.shape[2]
            hl.weight_bytes = math.ceil(hl.c_in * taps * hl.c_out * b / 8)
        else:
            taps = wt.shape[1] // hl.c_in if hl.c_in else 1
            hl.weight_bytes = math.ceil(wt.shape[1] * hl.c_out * b / 8)
        # input channel c is read by processor procs[c % n] in pass c // n
        n = len(procs)
        per_proc = [0] * n
        for c in range(hl.c_in):
            per_proc[c % n] += 1
        for i, p in enumerate(procs):
            kernels = per_proc[i] * hl.c_out
            if kernels == 0:
                continue
            hl.weight_words[p] = math.ceil(kernels * taps * b / self.word_bits)
        bname = op.inputs[2] if len(op.inputs) > 2 else ""
        if bname:
            hl.bias_bytes = hl.c_out
            if hl.c_out > self.bias_per_quad:
                raise FitError(
                    f"MAX78000 bias memory ({op.label}): need {hl.c_out} biased outputs in one "
                    f"quadrant, have {self.bias_per_quad}"
                )

    def _finish(self, hl: HwLayer) -> None:
        n = _popcount(hl.out_procs)
        if hl.kind in ("conv", "linear") and n:
            c_hw = _span(hl.out_procs) * math.ceil(hl.c_out / n)
            g = hl.geometry
            hl.geometry = LayerGeometry(**{**g.__dict__, "output_chan_hw": c_hw})
        hl.cycles, hl.terms = layer_cycles(hl.geometry)

    def _instance_bytes(self, hl: HwLayer) -> int:
        """Bytes one data-memory instance holds for the layer's input and output (HWC, four
        channels per 32-bit word; the busiest instance)."""
        g = hl.geometry
        h, w = g.input_dim
        in_words = h * w * g.multipass * g.num_elements
        ho, wo = (1, 1) if hl.kind == "linear" else g.output_dim
        out_words = ho * wo * math.ceil(hl.c_out / self.n_proc) * (4 if hl.wide else 1)
        if g.input_chan == 1 or hl.kind == "passthrough" and g.input_chan <= 4:
            in_words = math.ceil(h * w / 4)  # CHW: one channel per instance, 4 pixels a word
        return 4 * (in_words + out_words)

    # -- what it costs ----------------------------------------------------------------
    def layer_cost(self, graph, op, plan: Max78000Plan) -> NpuLayerCost:
        hl = plan.layers[plan.op_layer[op.name]]
        if op.name != hl.ops[-1]:
            return NpuLayerCost(cycles=0, notes=[f"fused into MAX78000 layer {hl.index}"])
        g = hl.geometry
        hp, wp = g.pooled_dim
        area = g.pool[0] * g.pool[1]
        ho, wo = (1, 1) if hl.kind == "linear" else g.output_dim
        n_in = _popcount(hl.in_procs)
        traffic = {
            "cnn_data": {
                "read": g.input_dim[0] * g.input_dim[1] * hl.c_in * g.num_elements
                if area > 1 else hp * wp * hl.c_in * g.num_elements,
                "write": ho * wo * hl.c_out * (4 if hl.wide else 1),
            },
            "cnn_weights": {
                "read": math.ceil(
                    g.output_dim[0] * g.output_dim[1] * g.output_chan_hw * g.multipass * n_in
                    * self.word_bits / 8
                ) if hl.kind in ("conv", "linear") else 0,
                "write": 0,
            },
        }  # fmt: skip
        cyc = hl.cycles + (plan.startup_cycles if hl.index == 0 else 0)
        energy = cyc * float(self.config["energy_per_cycle_j"])
        energy += float(self.config["cpu_wait_power_w"]) * cyc / self.clock_hz
        notes = [
            f"MAX78000 layer {hl.index}: {hl.kind}, {hl.c_in}->{hl.c_out} ch, "
            f"{g.multipass} pass(es), C_out_hw {g.output_chan_hw}, izer cycles {hl.cycles}"
            + (" + 1 startup" if hl.index == 0 else "")
        ]
        return NpuLayerCost(
            cycles=cyc,
            compute_cycles=cyc,
            memory_cycles=0,
            traffic=traffic,
            energy_j=energy,
            notes=notes,
            estimate=False,
        )

    def transfer_cycles(self, nbytes: int) -> int:
        """Cortex-M4 cycles for the generated cnn_load_input / cnn_unload word loops."""
        if nbytes <= 0:
            return 0
        words = math.ceil(nbytes / 4)
        return int(self.config["cpu_call_cycles"]) + words * int(self.config["cpu_cycles_per_word"])

    def one_time_costs(self, graph, ops: list, plan: Max78000Plan) -> dict[str, Any]:
        """Loading kernels and biases (cnn_load_weights / cnn_load_bias) once per model."""
        wbytes = sum(hl.weight_bytes for hl in plan.layers)
        bbytes = sum(hl.bias_bytes for hl in plan.layers)
        cyc = self.transfer_cycles(wbytes) + self.transfer_cycles(bbytes)
        cpu_hz = self.device.core.clock_hz
        seconds = cyc / cpu_hz
        return {
            "weight_bytes": wbytes,
            "bias_bytes": bbytes,
            "weight_words_72bit": sum(sum(hl.weight_words.values()) for hl in plan.layers),
            "cpu_cycles": cyc,
            "seconds": seconds,
            "energy_j": seconds * float(self.config["weight_load_power_w"]),
            "estimate": True,
            "notes": ["weight load by the Cortex-M4 over the CNN's memory bus (estimate)"],
        }

    # -- what it computes -------------------------------------------------------------
    def compute_kernel(self, graph, op):
        from mcusim.kernels.max78000 import ai8x_kernel

        return ai8x_kernel(graph, op)


# -- TFLite INT8 layers moved to MAX78000 arithmetic ---------------------------------------
@dataclass
class Max78000Requant:
    """A TFLite INT8 conv / FC re-expressed in MAX78000 arithmetic (docs/max78000.md §4).

    ``tensors`` are new constant tensors (fresh names), ``inputs`` the op's new input list and
    ``attrs`` its new attributes; the op's input and output tensors are unchanged (the layer
    reads the same int8 data and writes int8 with the original scale and zero point).
    """

    tensors: dict[str, Any]
    inputs: list[str]
    attrs: Any


def requantize_for_max78000(graph, op, sample=None) -> tuple[Max78000Requant, dict[str, Any]]:
    """Fold a TFLite per-channel multiplier M_c = s_x·s_w[c]/s_y into the weights, one
    power-of-two layer shift and an 8-bit bias (bias8·128), as the accelerator computes:

        w'_c = round(w_c · M_c · 128 · 2^-s)              (int8, |w'| <= 127)
        bias8_c = round((zp_y + M_c·(b_c − zp_x·Σw_c)) · 2^-s)   (int8, saturated)
        y = clamp(floor(0.5 + (Σ w'x + 128·bias8)·2^s / 128))

    ``s`` is the smallest shift that keeps weights and biases in range; given ``sample`` (an
    input of the layer), every shift between the weights' and the biases' minimum is tried and
    the one with the best SQNR against the TFLite result is kept. The input zero point
    is folded into the bias, which is exact except at zero-padded borders (the hardware pads
    raw 0, TFLite pads zp_x). The report lists shift, weight levels, saturated biases and
    whether the fused activation maps exactly."""
    import numpy as np

    if op.kind not in ("conv2d", "fully_connected"):
        raise ValueError(f"{op.label}: only conv2d / fully_connected are re-quantized")
    t = graph.tensors
    x, w, y = t[op.inputs[0]], t[op.inputs[1]], t[op.outputs[0]]
    b = t[op.inputs[2]] if len(op.inputs) > 2 and op.inputs[2] else None
    if x.quant is None or w.quant is None or y.quant is None:
        raise ValueError(f"{op.label}: needs quantized input, weights and output")
    co = w.shape[0]
    wd = w.data.astype(np.float64).reshape(co, -1)
    sw = np.broadcast_to(w.quant.scale.astype(np.float64), (co,))
    sx, sy = float(x.quant.scale[0]), float(y.quant.scale[0])
    zx, zy = int(x.quant.zero_point[0]), int(y.quant.zero_point[0])
    m = sx * sw / sy
    bias = b.data.astype(np.float64) if b is not None else np.zeros(co)
    big_b = zy + m * (bias - zx * wd.sum(axis=1))
    wm = np.abs(wd * m[:, None]).max() * 128.0
    s_w = math.ceil(math.log2(wm / 127.0)) if wm > 0 else -15
    bm = float(np.abs(big_b).max())
    s_b = math.ceil(math.log2(bm / 127.0)) if bm > 0 else -15
    s = max(-15, min(15, max(s_w, s_b)))
    choices = {}
    if sample is not None and s_b > s_w:
        for cand in range(max(-15, s_w), s + 1):
            rq, rep = _requant_at(graph, op, cand, wd, m, big_b)
            choices[cand] = _try(graph, op, rq, sample)
        s = max(choices, key=lambda k: choices[k])
    rq, rep = _requant_at(graph, op, s, wd, m, big_b)
    rep["input_zero_point_folded"] = zx
    rep["shift_sqnr_db"] = {k: round(v, 2) for k, v in choices.items()}
    return rq, rep


def _try(graph, op, rq: Max78000Requant, sample) -> float:
    """SQNR (dB) of the re-quantized layer against the TFLite kernel on ``sample``."""
    import copy

    import mcusim.kernels  # noqa: F401
    from mcusim.kernels.max78000 import ai8x_kernel
    from mcusim.kernels.registry import kernel_for

    ref_k = kernel_for(op.kind, layer=op.label)
    ref = ref_k.compute(ref_k.prepare(graph, op), [sample])[0]
    g2 = copy.copy(graph)
    g2.tensors = dict(graph.tensors)
    op2 = copy.copy(op)
    apply_requant(g2, op2, rq)
    k = ai8x_kernel(g2, op2)
    out = k.compute(k.prepare(g2, op2), [sample])[0]
    zy = int(graph.tensors[op.outputs[0]].quant.zero_point[0])
    return deviation_report(ref, out, zy)["sqnr_db"]


def _requant_at(graph, op, s: int, wd, m, big_b) -> tuple[Max78000Requant, dict[str, Any]]:
    import numpy as np

    from mcusim.dtypes import INT8, INT32
    from mcusim.graph import Tensor
    from mcusim.ops import Conv2DAttrs, FullyConnectedAttrs

    t = graph.tensors
    w, y = t[op.inputs[1]], t[op.outputs[0]]
    co = w.shape[0]
    zy = int(y.quant.zero_point[0])
    zx = int(t[op.inputs[0]].quant.zero_point[0])
    w_new = np.rint(wd * m[:, None] * 128.0 * 2.0**-s)
    w_sat = int(np.sum(np.abs(w_new) > 127))
    w_new = np.clip(w_new, -128, 127).astype(np.int8).reshape(w.shape)
    b8 = np.rint(big_b * 2.0**-s)
    b_sat = int(np.sum((b8 < -128) | (b8 > 127)))
    b8 = np.clip(b8, -128, 127).astype(np.int64)
    act = op.attrs.activation
    act_note = "exact"
    if act == "relu":
        if zy == -128:
            act = "none"  # the int8 clamp is the ReLU floor
        elif zy != 0:
            act, act_note = "none", f"ReLU floor at zero point {zy} is not representable"
    elif act != "none":
        act, act_note = "none", f"{op.attrs.activation} is not representable (clamp only)"
    wt = Tensor(f"{op.name}.max78000.weights", tuple(w.shape), INT8, None, w_new)
    bt = Tensor(f"{op.name}.max78000.bias", (co,), INT32, None, (b8 * 128).astype(np.int32))
    if op.kind == "conv2d":
        a = op.attrs
        attrs = Conv2DAttrs(a.stride, a.dilation, a.padding, act, requant="ai8x", output_shift=s)
    else:
        attrs = FullyConnectedAttrs(act, op.attrs.keep_num_dims, requant="ai8x", output_shift=s)
    pad = op.kind == "conv2d" and op.attrs.padding == "same" and max(w.shape[1:3]) > 1
    report = {
        "layer": op.name,
        "output_shift": s,
        "weight_levels_used": int(np.abs(w_new).max()),
        "weights_saturated": w_sat,
        "bias_saturated": b_sat,
        "activation": act_note,
        "border_inexact": bool(pad and zx != 0),
    }
    rq = Max78000Requant({wt.name: wt, bt.name: bt}, [op.inputs[0], wt.name, bt.name], attrs)
    return rq, report


def apply_requant(graph, op, rq: Max78000Requant) -> None:
    """Put a :func:`requantize_for_max78000` result into ``graph`` (mutates it)."""
    graph.tensors.update(rq.tensors)
    op.inputs = list(rq.inputs)
    op.attrs = rq.attrs


def deviation_report(ref_output, npu_output, zero_point: int = 0) -> dict[str, float]:
    """How far the tile's int8 output moves from the INT8 reference: max |diff|, % of
    elements equal, SQNR in dB over (q − zero_point) (+inf when identical)."""
    import numpy as np

    from mcusim.quantize import sqnr_db

    r = np.asarray(ref_output, dtype=np.int64).reshape(-1)
    n = np.asarray(npu_output, dtype=np.int64).reshape(-1)
    if r.shape != n.shape:
        raise ValueError(f"outputs differ in size: {r.size} vs {n.size}")
    d = r - n
    sig = r - zero_point
    return {
        "max_abs_diff": int(np.abs(d).max()) if d.size else 0,
        "pct_equal": float(100.0 * np.mean(d == 0)) if d.size else 100.0,
        "sqnr_db": sqnr_db(float(np.sum(sig * sig)), float(np.sum(d * d))),
    }
