"""Activation arena planning from tensor lifetimes (TFLite Micro's greedy planner idea).

Each non-constant tensor lives from the op that produces it (graph inputs: from the start)
to the last op that reads it (graph outputs: to the end); each op's scratch buffer lives
during that op only. Buffers are placed largest first at the lowest aligned offset that
does not overlap, in time and space, a buffer already placed. Persistent buffers (the
per-channel requantization parameters a runtime prepares at init: TFLite Micro's
``AllocatePersistentBuffer``) live for the whole run and sit after them, at the arena's
tail. Peak RAM is the arena size, persistent buffers included.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .graph import Graph

ALIGN = 16  # TFLite Micro aligns arena buffers to 16 bytes


@dataclass(frozen=True)
class Buffer:
    key: str  # tensor name, or "scratch:<op index>"
    size: int
    first: int  # first op index it is live at
    last: int  # last op index it is live at


@dataclass(frozen=True)
class ArenaPlan:
    offsets: dict[str, int]
    buffers: tuple[Buffer, ...]
    peak_bytes: int  # the whole arena: planned buffers + persistent ones
    persistent: dict[str, int] = field(default_factory=dict)  # key -> bytes, at the tail

    @property
    def persistent_bytes(self) -> int:
        return sum(_align(n) for n in self.persistent.values())


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def lifetimes(graph: Graph, scratch: dict[int, int] | None = None) -> list[Buffer]:
    n_ops = len(graph.ops)
    first: dict[str, int] = {n: 0 for n in graph.inputs}
    last: dict[str, int] = {n: 0 for n in graph.inputs}
    for i, op in enumerate(graph.ops):
        for n in op.inputs:
            if n and not graph.tensors[n].is_const:
                last[n] = max(last.get(n, i), i)
        for n in op.outputs:
            first.setdefault(n, i)
            last[n] = max(last.get(n, i), i)
    for n in graph.outputs:
        last[n] = n_ops - 1
    bufs = [Buffer(n, graph.tensors[n].nbytes, first[n], last[n]) for n in first]
    for i, size in (scratch or {}).items():
        if size > 0:
            bufs.append(Buffer(f"scratch:{i}", size, i, i))
    return bufs


def qparam_buffers(graph: Graph, ops=None) -> dict[str, int]:
    """The persistent requantization buffers of the MAC ops (``qparams:<op index>``): an
    int32 multiplier and an int32 shift per output channel, TFLite Micro's two per-channel
    arrays (4 * C bytes each) that CMSIS-NN kernels read: the schedules' "qmult" stream
    (multipliers) and "qparams" stream (shifts), mcusim.cache.layer_bases places both.
    Conv and depthwise always have them (TFLite Micro allocates them per channel even for
    per-tensor weights); a per-tensor FC keeps one pair in its op data instead.
    ``ops``: the op indices that run on the CPU (None: all)."""
    from .precision import MAC_KINDS

    out = {}
    for i, op in enumerate(graph.ops):
        if op.kind not in MAC_KINDS or (ops is not None and i not in ops):
            continue
        y = graph.tensors[op.outputs[0]] if op.outputs else None
        if y is None or not y.shape:
            continue
        if op.kind == "fully_connected" and not _fc_per_channel(graph, op):
            continue
        out[f"qparams:{i}"] = 8 * int(y.shape[-1])
    return out


def _fc_per_channel(graph: Graph, op) -> bool:
    """An FC whose kernel reads per-output-channel parameters: per-channel weight scales,
    or sub-byte weights (their thresholds / parameters are per channel)."""
    w = graph.tensors[op.inputs[1]] if len(op.inputs) > 1 and op.inputs[1] else None
    if w is None:
        return False
    return (w.quant is not None and w.quant.per_channel) or w.dtype.bits < 8


def plan_arena(
    graph: Graph, scratch: dict[int, int] | None = None, persistent: dict[str, int] | None = None
) -> ArenaPlan:
    bufs = lifetimes(graph, scratch)
    order = sorted(bufs, key=lambda b: (-b.size, b.first, b.key))
    placed: list[tuple[int, int, Buffer]] = []  # (offset, end, buffer)
    offsets: dict[str, int] = {}
    for b in order:
        live = sorted((o, e) for o, e, p in placed if not (p.last < b.first or b.last < p.first))
        off = 0
        for o, e in live:
            if off + b.size <= o:
                break
            off = max(off, _align(e))
        offsets[b.key] = off
        placed.append((off, off + b.size, b))
    peak = max((e for _, e, _ in placed), default=0)
    tail = _align(peak) if persistent else peak
    for key, size in (persistent or {}).items():
        offsets[key] = tail
        tail = _align(tail + size)
    return ArenaPlan(offsets, tuple(bufs), tail, dict(persistent or {}))
