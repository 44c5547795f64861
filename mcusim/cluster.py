"""Layers on a PULP-style cluster: work split, TCDM bank conflicts, barrier, DMA tiling.

docs/cluster.md derives every formula. In short, for one layer on ``n`` worker cores:

* :func:`split` cuts the layer as PULP-NN's parallel kernels do (pulp-platform/pulp-nn
  ``32bit/src``, pulp-nn-mixed): ``chunk = ceil(X / n)``, core ``i`` takes
  ``[min(i*chunk, X), min(i*chunk + chunk, X))`` of output rows (``ho``), of output
  channels / neurons (``co``), or of rows in ``n/2`` groups with each row halved in
  columns when the rows do not divide evenly (``howo``, pulp-nn-mixed's conv default);
* each core's part is an instruction schedule (``build(graph, op, part) -> Program``, see
  :data:`PART_BUILDERS`) timed by the cluster's core model;
* TCDM bank conflicts: :func:`conflict_stalls` (each bank a one-cycle-service queue fed by
  the other cores' access rates over ``banks`` word-interleaved banks), checked against
  the cycle-level arbiter :func:`simulate_banks` on explicit bank streams;
* compute = max over cores (+ their conflicts) + one barrier per kernel call (tile);
* L2 -> L1: :func:`plan_tiles` picks the largest double-buffered tiles that fit the L1
  budget; :func:`dma_overlap` overlaps each tile's transfers with the previous tile's
  compute and reports the part that does not overlap as DMA stall.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from mcusim.devices.model import Cluster, Device, Dma
from mcusim.errors import UnsupportedOpError
from mcusim.graph import Graph, Op
from mcusim.isa.schedule import Program

# ---------------------------------------------------------------------------------------
# Work split (PULP-NN)


@dataclass(frozen=True)
class Part:
    """What one core computes of a layer: output rows ``rows``, output columns ``cols``
    and output channels ``channels`` as [start, stop) ranges of the output tensor (NHWC;
    rank-2 outputs (N, C) have one row and one column). ``strategy`` names the split."""

    core_index: int
    n_cores: int
    rows: tuple[int, int]
    cols: tuple[int, int]
    channels: tuple[int, int]
    strategy: str = "ho"

    @property
    def n_rows(self) -> int:
        return max(0, self.rows[1] - self.rows[0])

    @property
    def n_cols(self) -> int:
        return max(0, self.cols[1] - self.cols[0])

    @property
    def n_channels(self) -> int:
        return max(0, self.channels[1] - self.channels[0])

    @property
    def outputs(self) -> int:
        return self.n_rows * self.n_cols * self.n_channels

    @property
    def empty(self) -> bool:
        return self.outputs == 0


PartBuilder = Callable[[Graph, Op, Part], Program]

# ISA family -> "module:function" implementing build(graph, op, part) -> Program for the
# part of the layer one core executes (PULP-NN parallel kernels; the schedules author
# fills these modules). Imported lazily.
PART_BUILDERS: dict[str, str] = {
    "rv32-xpulpv2": "mcusim.kernels.schedules.pulpnn:schedule_part",
    "rv32-xpulpnn": "mcusim.kernels.schedules.pulpnn_xpulpnn:schedule_part",
}

# op kind -> PULP-NN parallelisation (pulp-nn 32bit/src, pulp-nn-mixed):
#   conv2d: pulp_nn_conv_HoWo_parallel / pulp-nn-mixed pulp_nn_conv_*: "howo"
#   depthwise_conv2d: pulp_nn_depthwise_generic: channels; fully_connected:
#   pulp_nn_linear: output neurons; max/avg pool, add: rows; others: one core.
DEFAULT_STRATEGY: dict[str, str] = {
    "conv2d": "howo",
    "depthwise_conv2d": "co",
    "fully_connected": "co",
    "max_pool2d": "ho",
    "avg_pool2d": "ho",
    "add": "ho",
    "sub": "ho",
    "mul": "ho",
}
STRATEGIES = ("ho", "howo", "co", "single")


def chunk_range(total: int, n: int, i: int) -> tuple[int, int]:
    """PULP-NN's chunking: chunk = ceil(total / n); part i = [i*chunk, i*chunk + chunk)
    clipped to ``total`` (trailing cores may get nothing)."""
    chunk = -(-total // n)
    start = min(chunk * i, total)
    return start, min(start + chunk, total)


def output_dims(graph: Graph, op: Op) -> tuple[int, int, int]:
    """(rows, cols, channels) of the op's first output: NHWC -> (H, W, C), (N, C) -> (1,
    1, C), anything else flattened to (1, 1, size)."""
    shape = graph.tensors[op.outputs[0]].shape
    if len(shape) == 4:
        return int(shape[1]), int(shape[2]), int(shape[3])
    if len(shape) == 3:
        return int(shape[1]), 1, int(shape[2])
    if len(shape) == 2:
        return 1, 1, int(shape[1])
    return 1, 1, int(np.prod(shape, dtype=np.int64)) if shape else 1


def split(graph: Graph, op: Op, n_cores: int, strategy: str | None = None) -> list[Part]:
    """One :class:`Part` per core, as PULP-NN's parallel kernel for ``op`` divides it."""
    if n_cores < 1:
        raise ValueError(f"n_cores must be >= 1, got {n_cores}")
    strat = strategy or DEFAULT_STRATEGY.get(op.kind, "single")
    if strat not in STRATEGIES:
        raise ValueError(f"unknown split strategy {strat!r}; known: {STRATEGIES}")
    return split_dims(output_dims(graph, op), n_cores, strat)


def split_dims(dims: tuple[int, int, int], n: int, strategy: str) -> list[Part]:
    h, w, c = dims
    parts = []
    if strategy == "howo" and (h % n == 0 or w <= 1 or n % 2):
        strategy = "ho"  # pulp-nn HoWo: rows only when they divide evenly (or W == 1)
    for i in range(n):
        rows, cols, chans = (0, h), (0, w), (0, c)
        if strategy == "ho":
            rows = chunk_range(h, n, i)
        elif strategy == "co":
            chans = chunk_range(c, n, i)
        elif strategy == "howo":
            rows = chunk_range(h, n // 2, i // 2)
            half = w // 2
            cols = (0, half) if i % 2 == 0 else (half, w)  # odd column to section 1
        elif i > 0:  # single: core 0 does everything
            rows = (0, 0)
        parts.append(Part(i, n, rows, cols, chans, strategy))
    return parts


def part_builder(isa: str) -> PartBuilder:
    """The per-core schedule builder registered for ISA family ``isa``."""
    import importlib

    if isa not in PART_BUILDERS:
        raise UnsupportedOpError(f"no cluster (per-core) schedules for ISA {isa!r}")
    mod, fn = PART_BUILDERS[isa].split(":")
    try:
        return getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as e:
        raise UnsupportedOpError(
            f"cluster schedules for ISA {isa!r} ({PART_BUILDERS[isa]}) are not available: {e}"
        ) from None


def channel_slice(graph: Graph, op: Op, part: Part) -> tuple[Graph, Op]:
    """A sub-layer computing only ``part.channels`` of the op's outputs (conv2d,
    fully_connected: a slice of the filters and bias; depthwise: of the channels too), so
    a whole-layer schedule builder can time one core's output-channel part."""
    from dataclasses import replace

    from mcusim.graph import Tensor

    c0, c1 = part.channels
    t = dict(graph.tensors)

    def sliced(name: str, axis: int) -> str:
        src = t[name]
        idx = [slice(None)] * len(src.shape)
        idx[axis] = slice(c0, c1)
        data = None if src.data is None else np.ascontiguousarray(src.data[tuple(idx)])
        shape = list(src.shape)
        shape[axis] = c1 - c0
        quant = src.quant
        if quant is not None and quant.axis is not None and quant.axis == axis:
            quant = replace(quant, scale=quant.scale[c0:c1], zero_point=quant.zero_point[c0:c1])
        new = f"{name}[{c0}:{c1}]"
        t[new] = Tensor(new, tuple(shape), src.dtype, quant, data)
        return new

    ins = list(op.inputs)
    if op.kind in ("conv2d", "fully_connected"):
        ins[1] = sliced(ins[1], 0)
        if len(ins) > 2 and ins[2]:
            ins[2] = sliced(ins[2], 0)
    elif op.kind == "depthwise_conv2d":
        ins[0] = sliced(ins[0], 3)
        ins[1] = sliced(ins[1], 3)
        if len(ins) > 2 and ins[2]:
            ins[2] = sliced(ins[2], 0)
    else:
        raise UnsupportedOpError(f"no channel slice for {op.kind}", layer=op.label)
    out = sliced(op.outputs[0], len(t[op.outputs[0]].shape) - 1)
    sub_op = replace(op, inputs=ins, outputs=[out])
    sub = replace(graph, tensors=t, ops=[sub_op])
    return sub, sub_op


def whole_layer_builder(isa: str) -> PartBuilder:
    """build(graph, op, part) from a whole-layer schedule family (``schedule_for``) for
    output-channel parts (exact sub-layers via :func:`channel_slice`)."""
    from mcusim.kernels.schedules import schedule_for

    def build(graph: Graph, op: Op, part: Part) -> Program:
        h, w, c = output_dims(graph, op)
        if (part.rows, part.cols, part.channels) == ((0, h), (0, w), (0, c)):
            return schedule_for(isa, graph, op)  # the whole layer (one core)
        if part.rows != (0, h) or part.cols != (0, w):
            raise UnsupportedOpError(
                f"whole-layer schedules of {isa!r} only time output-channel parts",
                layer=op.label,
            )
        return schedule_for(isa, *channel_slice(graph, op, part))

    return build


# ---------------------------------------------------------------------------------------
# TCDM bank conflicts


def conflict_stalls(
    accesses: np.ndarray, cycles: np.ndarray, banks: int, extra_rate: float = 0.0
) -> np.ndarray:
    """Expected bank-conflict stall cycles of each core (docs/cluster.md, "TCDM").

    Core ``j`` issues ``accesses[j]`` single-word L1 accesses in ``cycles[j]`` stall-free
    cycles (rate ``r_j``), each to a uniformly random one of ``banks`` word-interleaved
    banks; a bank serves one access per cycle. Each bank is a queue with deterministic
    one-cycle service (M/D/1): an access of core ``i`` waits on average
    ``w_i = rho_i / (2 (1 - rho_i))`` cycles, where ``rho_i`` is the load the *other*
    requesters put on its bank, ``rho_i = (sum_{j != i} r_j / (1 + r_j w_j) + extra_rate) /
    banks`` (a stalled core issues more slowly: the system is closed). Solved by fixed-point
    iteration; stall of core ``i`` = ``accesses[i] * w_i``. ``extra_rate``: words per cycle
    of other requesters (the DMA filling tiles). Matches the cycle-level arbiter
    (:func:`simulate_banks`) on random streams within a few percent (tests)."""
    a = np.asarray(accesses, dtype=np.float64)
    c = np.maximum(np.asarray(cycles, dtype=np.float64), 1.0)
    r = np.minimum(a / c, 1.0)
    w = np.zeros_like(r)
    for _ in range(200):
        eff = r / (1.0 + r * w)
        rho = np.minimum((eff.sum() - eff + extra_rate) / banks, 0.999)
        new = rho / (2.0 * (1.0 - rho))
        if np.allclose(new, w, rtol=1e-12, atol=1e-12):
            w = new
            break
        w = 0.5 * (w + new)
    return a * w


@njit(cache=True)
def _simulate_banks(streams: np.ndarray, lengths: np.ndarray, banks: int) -> np.ndarray:
    n = streams.shape[0]
    pos = np.zeros(n, dtype=np.int64)
    done = np.zeros(n, dtype=np.int64)
    prio = np.zeros(banks, dtype=np.int64)  # round-robin pointer per bank
    want = np.full(n, -1, dtype=np.int64)
    cycle = 0
    remaining = 0
    for i in range(n):
        if lengths[i] > 0:
            remaining += 1
    while remaining > 0:
        for i in range(n):
            want[i] = -2
            if pos[i] < lengths[i]:
                want[i] = streams[i, pos[i]]
        for b in range(banks):
            winner = -1
            for k in range(n):
                i = (prio[b] + k) % n
                if want[i] == b:
                    winner = i
                    break
            if winner >= 0:
                want[winner] = -1  # served
                prio[b] = (winner + 1) % n
        for i in range(n):
            if want[i] == -1:  # no access this slot, or served
                pos[i] += 1
                if pos[i] == lengths[i]:
                    done[i] = cycle + 1
                    remaining -= 1
        cycle += 1
    return done


def simulate_banks(streams: list[np.ndarray], banks: int) -> np.ndarray:
    """Cycle-level TCDM arbiter on explicit per-core streams: ``streams[i][k]`` is the bank
    core ``i`` accesses in its k-th instruction slot, or -1 for a slot without an L1
    access. One access per bank per cycle, round-robin among the requesters; a core that
    loses stays on the slot. Returns each core's finishing cycle (stall = that - length)."""
    n = len(streams)
    longest = max((len(s) for s in streams), default=0)
    arr = np.full((n, max(longest, 1)), -1, dtype=np.int64)
    lengths = np.zeros(n, dtype=np.int64)
    for i, s in enumerate(streams):
        s = np.asarray(s, dtype=np.int64)
        if s.size and (s.max() >= banks or s.min() < -1):
            raise ValueError(f"stream {i}: bank indices must be in [-1, {banks})")
        arr[i, : len(s)] = s
        lengths[i] = len(s)
    return _simulate_banks(arr, lengths, banks)


def word_banks(addresses: np.ndarray, banks: int, bank_width: int = 4) -> np.ndarray:
    """Bank of each byte address on word-interleaved banks (-1 stays -1: no access)."""
    a = np.asarray(addresses, dtype=np.int64)
    return np.where(a < 0, -1, (a // bank_width) % banks)


# ---------------------------------------------------------------------------------------
# L2 -> L1 tiling and DMA


@dataclass(frozen=True)
class LayerFootprint:
    """Bytes a layer keeps in L1 as a function of its tile (h output rows x c output
    channels of H x C), from its tensors (sub-byte types packed)."""

    H: int
    C: int
    W: int  # output columns (pixels per output row)
    W_in: int  # input columns
    in_row_bytes: int  # input bytes per input row (all channels, or per channel if c-sliced)
    in_rows: Callable[[int], int] = field(repr=False)  # input rows for h output rows
    in_per_channel: bool  # input sliced along with the output channels (depthwise, eltwise)
    in_fixed_bytes: int  # input loaded whole for every tile (FC vector)
    w_bytes_per_channel: int  # weights + bias bytes per output channel
    out_bytes_per_row_channel: float  # output bytes per (row, channel)
    scratch_bytes: int  # per-layer L1 scratch (im2col buffers of all cores)

    def bytes(self, h: int, c: int) -> tuple[int, int, int]:
        """(input, weights, output) bytes of one tile."""
        rows = self.in_rows(h)
        inp = rows * self.in_row_bytes * (c if self.in_per_channel else 1) + self.in_fixed_bytes
        return inp, self.w_bytes_per_channel * c, math.ceil(self.out_bytes_per_row_channel * h * c)


def footprint(graph: Graph, op: Op, n_cores: int) -> LayerFootprint:
    """The L1 footprint model of ``op`` (docs/cluster.md "Tiling")."""
    t = graph.tensors
    out = t[op.outputs[0]]
    H, W, C = output_dims(graph, op)
    out_bits = out.dtype.bits
    acts = [t[n] for n in op.inputs if n and not t[n].is_const]
    consts = [t[n] for n in op.inputs if n and t[n].is_const]
    out_rc = W * out_bits / 8
    if op.kind in ("conv2d", "depthwise_conv2d", "max_pool2d", "avg_pool2d"):
        x = acts[0]
        _, hi, wi, ci = x.shape
        a = op.attrs
        if op.kind in ("conv2d", "depthwise_conv2d"):
            w = t[op.inputs[1]]
            kh = int(w.shape[1])
            dil = int(a.dilation[0])
        else:
            kh, dil = int(a.filter[0]), 1
        sh = int(a.stride[0])
        keff = (kh - 1) * dil + 1

        def in_rows(h: int, sh=sh, keff=keff, hi=hi) -> int:
            return min(hi, (h - 1) * sh + keff) if h > 0 else 0

        per_chan = op.kind != "conv2d"
        row = x.dtype.storage_bytes(wi * (1 if per_chan else ci))
        if op.kind == "conv2d":
            w_per = w.dtype.storage_bytes(int(np.prod(w.shape[1:]))) + _bias_bytes(consts)
            k = int(np.prod(w.shape[1:]))
            scratch = 2 * x.dtype.storage_bytes(k) * n_cores  # pulp-nn: 2 im2col columns/core
        elif op.kind == "depthwise_conv2d":
            w_per = w.dtype.storage_bytes(kh * int(w.shape[2])) + _bias_bytes(consts)
            # pulp-nn depthwise: per core a column buffer of kw x (padded input rows) + kw
            scratch = n_cores * (int(w.shape[2]) * (hi + 2 * (kh - 1)) + int(w.shape[2]))
        else:
            w_per, scratch = 0, 0
        return LayerFootprint(H, C, W, int(wi), row, in_rows, per_chan, 0, w_per, out_rc, scratch)
    if op.kind == "fully_connected":
        w = t[op.inputs[1]]
        k = int(w.shape[1])
        return LayerFootprint(
            H,
            C,
            W,
            1,
            0,
            lambda h: 0,
            False,
            acts[0].dtype.storage_bytes(k),
            w.dtype.storage_bytes(k) + _bias_bytes(consts),
            out_rc,
            0,
        )
    # element-wise and everything else: inputs walk with the output rows and channels
    per_rc = sum(a.dtype.bits for a in acts) * W / 8 if acts else 0.0
    return LayerFootprint(
        H,
        C,
        W,
        W,
        math.ceil(per_rc),
        lambda h: h,
        True,
        sum(c.nbytes for c in consts),
        0,
        out_rc,
        0,
    )


def _bias_bytes(consts: list) -> int:
    """int32 bias bytes per output channel (weights are the first constant)."""
    return 4 if len(consts) > 1 else 0


@dataclass(frozen=True)
class TilePlan:
    h: int  # output rows per tile
    c: int  # output channels per tile
    n_h: int  # row tiles
    n_c: int  # channel tiles
    double_buffered: bool
    in_bytes: int  # per (full) tile
    w_bytes: int
    out_bytes: int

    @property
    def tiles(self) -> int:
        return self.n_h * self.n_c


def plan_tiles(fp: LayerFootprint, budget: int) -> TilePlan:
    """Largest tiles that fit ``budget`` bytes of L1: the whole layer in one buffer if it
    fits; else double-buffered tiles (2 x (in + w + out) + scratch <= budget), keeping all
    output channels (weights loaded once) and the most rows possible, and only if one row
    does not fit, the most channels for one row... then the most rows for those channels.
    Raises FitError when not even one row of one channel fits."""
    from mcusim.errors import FitError

    def need(h: int, c: int, dbl: bool) -> int:
        return (2 if dbl else 1) * sum(fp.bytes(h, c)) + fp.scratch_bytes

    H, C = max(fp.H, 1), max(fp.C, 1)
    if need(H, C, False) <= budget:
        return TilePlan(H, C, 1, 1, False, *fp.bytes(H, C))
    c = C
    if need(1, C, True) > budget:
        lo, hi = 0, C  # largest c with need(1, c) <= budget
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if need(1, mid, True) <= budget:
                lo = mid
            else:
                hi = mid - 1
        if lo == 0:
            raise FitError(
                f"one output row of one channel needs {need(1, 1, True)} bytes of L1, "
                f"the cluster has {budget}"
            )
        c = lo
    lo, hi = 1, H
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if need(mid, c, True) <= budget:
            lo = mid
        else:
            hi = mid - 1
    h = lo
    return TilePlan(h, c, -(-H // h), -(-C // c), True, *fp.bytes(h, c))


def transfer_cycles(dma: Dma, nbytes: int, rows: int = 1) -> float:
    """One DMA transfer: setup + per-row cost (2-D) + bytes / bandwidth. 0 bytes: free."""
    if nbytes <= 0:
        return 0.0
    return dma.setup_cycles + dma.row_cycles * max(rows - 1, 0) + nbytes / dma.bytes_per_cycle


def dma_overlap(compute: list[float], dma_in: list[float], dma_out: list[float]) -> float:
    """Stall cycles of a double-buffered tile loop with one DMA engine.

    Tile k computes for ``compute[k]``; its inputs take ``dma_in[k]`` and its outputs
    ``dma_out[k]``. Before tile 0 its inputs load alone (stall ``dma_in[0]``); while tile k
    computes, the DMA writes back tile k-1 and loads tile k+1 (``dma_out[k-1] +
    dma_in[k+1]``), stalling ``max(0, that - compute[k])``; after the last tile its outputs
    are written back (stall ``dma_out[-1]``). Without double buffering (one tile) the
    same formula gives in + out."""
    n = len(compute)
    if n == 0:
        return 0.0
    stall = dma_in[0]
    for k in range(n):
        busy = (dma_out[k - 1] if k > 0 else 0.0) + (dma_in[k + 1] if k + 1 < n else 0.0)
        stall += max(0.0, busy - compute[k])
    return stall + dma_out[n - 1]


# ---------------------------------------------------------------------------------------
# One layer on the cluster


@dataclass(frozen=True)
class CoreRun:
    part: Part
    cycles: int
    instructions: int
    accesses: int  # L1 loads + stores (register transfers)
    read_bytes: int
    write_bytes: int
    code_bytes: int
    kernel: str


@dataclass(frozen=True)
class ClusterLayer:
    """The cost breakdown of one layer on the cluster (all in cluster cycles)."""

    kernel: str
    cores_used: int
    core_cycles: tuple[int, ...]  # pipeline cycles per core (0-wait L1)
    conflict_cycles: tuple[int, ...]  # bank-conflict stall per core
    compute_cycles: int  # max core pipeline cycles
    bank_conflict_cycles: int  # what conflicts add to the slowest core
    barrier_cycles: int
    dma_stall_cycles: int
    tiles: TilePlan
    dma_in_bytes: int
    dma_out_bytes: int
    instructions: int
    l1_read_bytes: int
    l1_write_bytes: int
    code_bytes: int

    @property
    def stall_cycles(self) -> int:
        return self.bank_conflict_cycles + self.barrier_cycles + self.dma_stall_cycles

    @property
    def cycles(self) -> int:
        return self.compute_cycles + self.stall_cycles


def run_parts(
    cluster: Cluster,
    core: str,
    graph: Graph,
    op: Op,
    build: PartBuilder,
    strategy: str | None = None,
) -> list[CoreRun]:
    """Build and time every core's part (empty parts cost nothing)."""
    from mcusim.isa.timing import core_timing

    timing = core_timing(core)
    runs = []
    for part in split(graph, op, cluster.cores, strategy):
        if part.empty:
            runs.append(CoreRun(part, 0, 0, 0, 0, 0, 0, ""))
            continue
        prog = build(graph, op, part)
        tr = timing.time(prog)
        acc = sum(s.reads + s.writes for s in tr.streams.values())
        rd = sum(s.read_bytes for s in tr.streams.values())
        wr = sum(s.write_bytes for s in tr.streams.values())
        runs.append(
            CoreRun(
                part,
                int(tr.cycles),
                int(tr.instructions),
                int(acc),
                int(rd),
                int(wr),
                int(tr.code_bytes),
                prog.kernel,
            )
        )
    return runs


def combine(cluster: Cluster, runs: list[CoreRun], fp: LayerFootprint) -> ClusterLayer:
    """Layer cost from the timed parts: conflicts, barrier per tile, DMA tiling."""
    cyc = np.array([r.cycles for r in runs], dtype=np.float64)
    acc = np.array([r.accesses for r in runs], dtype=np.float64)
    plan = plan_tiles(fp, cluster.l1_budget)
    dma = cluster.dma
    # DMA transfers per tile, in tile order (channel tiles outer, row tiles inner)
    H, C = max(fp.H, 1), max(fp.C, 1)
    comp_total = float(cyc.max()) if len(cyc) else 0.0
    dma_in, dma_out, share = [], [], []
    in_bytes_total = out_bytes_total = 0
    for ci in range(plan.n_c):
        c = min(plan.c, C - ci * plan.c)
        for hi in range(plan.n_h):
            h = min(plan.h, H - hi * plan.h)
            b_in, b_w, b_out = fp.bytes(h, c)
            # a channel slice of an NHWC tensor is one DMA row per pixel (2-D transfer)
            in_rows = fp.in_rows(h) * fp.W_in if fp.in_per_channel and c < C else 1
            w_now = b_w if hi == 0 else 0  # weights once per channel tile, reused by its rows
            dma_in.append(transfer_cycles(dma, b_in, in_rows) + transfer_cycles(dma, w_now))
            dma_out.append(transfer_cycles(dma, b_out, h * fp.W if c < C else 1))
            share.append(h * c / (H * C))
            in_bytes_total += b_in + w_now
            out_bytes_total += b_out
    compute = [comp_total * s for s in share]
    # the DMA writes into the banks too: its word rate while the cores compute
    dma_words = (in_bytes_total + out_bytes_total) / cluster.l1.bank_width
    dma_rate = min(dma_words / max(comp_total, 1.0), dma.bytes_per_cycle / cluster.l1.bank_width)
    conf = conflict_stalls(acc, cyc, cluster.l1.banks, dma_rate)
    slow = float((cyc + conf).max()) if len(cyc) else 0.0
    used = int(sum(1 for r in runs if not r.part.empty))
    return ClusterLayer(
        kernel=next((r.kernel for r in runs if r.kernel), ""),
        cores_used=used,
        core_cycles=tuple(int(x) for x in cyc),
        conflict_cycles=tuple(int(round(x)) for x in conf),
        compute_cycles=int(comp_total),
        bank_conflict_cycles=int(round(slow - comp_total)),
        barrier_cycles=cluster.barrier_cycles * plan.tiles,
        dma_stall_cycles=int(round(dma_overlap(compute, dma_in, dma_out))),
        tiles=plan,
        dma_in_bytes=int(in_bytes_total),
        dma_out_bytes=int(out_bytes_total),
        instructions=int(sum(r.instructions for r in runs)),
        l1_read_bytes=int(sum(r.read_bytes for r in runs)),
        l1_write_bytes=int(sum(r.write_bytes for r in runs)),
        code_bytes=max((r.code_bytes for r in runs), default=0),
    )


def cluster_layer(
    device: Device,
    graph: Graph,
    op: Op,
    build: PartBuilder | None = None,
    strategy: str | None = None,
) -> ClusterLayer:
    """One layer of ``graph`` on ``device``'s cluster. ``build`` defaults to the per-core
    builder registered for the device's ISA family (:data:`PART_BUILDERS`)."""
    cl = device.cluster
    if cl is None:
        raise ValueError(f"device {device.name} has no cluster")
    if build is None:
        try:
            build = part_builder(device.core.isa)
        except UnsupportedOpError as e:
            raise UnsupportedOpError(e.detail, layer=op.label) from None
    runs = run_parts(cl, device.core.name, graph, op, build, strategy)
    return combine(cl, runs, footprint(graph, op, cl.cores))
