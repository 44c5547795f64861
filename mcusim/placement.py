"""Heterogeneous placement: which engine (the device's NPU tile or its CPU) runs each layer.

The pass (docs/placement.md) walks the ops in execution order. A layer goes to the tile
(engine ``npu:<kind>``) when ``tile.supports(graph, op).ok`` and nothing the user said
keeps it off; otherwise to the CPU (engine ``cpu:<core>``) with the reason recorded. The
ops placed on the tile are then planned by the tile (``tile.plan``: a FitError names the
resource, the need and what is there). User overrides, strongest first:

1. ``place``: selector (op name, op index or glob on op names) -> "cpu" | "npu";
2. ``force``: "cpu" (every layer on the CPU) or "npu" (every layer on the tile);
3. the op's own ``placement`` field (e.g. from a .qnn file): a hint, "npu" is honoured
   only where the tile can run the layer;
4. the tile's answer.

Asking for the tile (``place`` / ``force``) on a layer it cannot run, or on a device
without one, is an error naming the layer and the tile's reason. Data crossing engines is
a :class:`Transfer`, charged to the layer that needs it (:func:`find_transfers`).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import UserError
from .graph import Graph, Op

ENGINE_KINDS = ("cpu", "npu")
FORCE_VALUES = ("cpu", "npu")


class PlacementError(UserError):
    """A placement request that cannot be honoured (layer, engine, why)."""


@dataclass(frozen=True)
class Transfer:
    """``nbytes`` of tensor ``tensor`` copied from one side ("cpu" / "npu") to the other,
    charged to layer ``layer`` (the layer that reads it; for a graph output left in NPU
    memory, the layer that produced it: the application reads it after that layer)."""

    tensor: str
    nbytes: int
    src: str
    dst: str
    layer: int


@dataclass(frozen=True)
class Placement:
    """Result of the pass: per op its engine and (for CPU layers) why it is not on the NPU."""

    engines: tuple[str, ...]
    reasons: tuple[str, ...]
    npu_engine: str | None  # "npu:<kind>", None when the device has no tile
    cpu_engine: str

    @property
    def npu_ops(self) -> tuple[int, ...]:
        return tuple(i for i, e in enumerate(self.engines) if e == self.npu_engine)

    @property
    def all_cpu(self) -> bool:
        return not self.npu_ops

    def side(self, i: int) -> str:
        return "npu" if self.engines[i] == self.npu_engine else "cpu"


def match_layers(graph: Graph, sel: str, what: str = "--place") -> list[int]:
    """Op indices a selector names: an exact op name, an op index (negative from the end)
    or a glob on op names (the selectors of mcusim.quantize.select_layers, over all ops)."""
    ops = graph.ops
    s = sel.strip()
    exact = [i for i, op in enumerate(ops) if op.name == s]
    if exact:
        return exact
    if re.fullmatch(r"-?\d+", s):
        i = int(s)
        if not -len(ops) <= i < len(ops):
            raise PlacementError(
                f"{what} {sel!r}: layer index {i} out of range, the model has {len(ops)} ops"
            )
        return [i % len(ops)]
    hits = [i for i, op in enumerate(ops) if fnmatch.fnmatchcase(op.name, s)]
    if not hits:
        raise PlacementError(
            f"{what} {sel!r} matches no layer (give an op name, an op index or a glob; "
            "`mcusim info MODEL` lists them)"
        )
    return hits


def parse_assignments(items: list[str] | None, flag: str, example: str) -> dict[str, str]:
    """``LAYER=VALUE`` command-line items -> {LAYER: VALUE} (the last ``=`` splits, so
    op names may contain ``=``)."""
    out: dict[str, str] = {}
    for item in items or []:
        layer, sep, value = item.rpartition("=")
        if not sep or not layer.strip() or not value.strip():
            raise UserError(f"{flag} {item!r}: expected LAYER=VALUE, e.g. {flag} {example}")
        out[layer.strip()] = value.strip()
    return out


def _requests(graph: Graph, place: Mapping[str, str] | None) -> dict[int, tuple[str, str]]:
    """op index -> (engine kind, selector that asked for it)."""
    out: dict[int, tuple[str, str]] = {}
    for sel, kind in (place or {}).items():
        k = str(kind).strip().lower()
        if k not in ENGINE_KINDS:
            raise PlacementError(f"--place {sel}={kind}: the engine must be cpu or npu")
        for i in match_layers(graph, sel):
            prev = out.get(i)
            if prev is not None and prev[0] != k:
                raise PlacementError(
                    f"layer {graph.ops[i].label}: --place {prev[1]}={prev[0]} and "
                    f"--place {sel}={k} disagree"
                )
            out[i] = (k, sel)
    return out


def place(
    graph: Graph,
    cpu_core: str,
    tile: Any | None,
    place: Mapping[str, str] | None = None,
    force: str | None = None,
) -> Placement:
    """Decide the engine of every op (see the module docstring for the precedence)."""
    if force is not None and force not in FORCE_VALUES:
        raise PlacementError(f"force={force!r}: expected 'cpu', 'npu' or None")
    cpu = f"cpu:{cpu_core}"
    npu = f"npu:{tile.kind}" if tile is not None else None
    req = _requests(graph, place)
    engines: list[str] = []
    reasons: list[str] = []
    for i, op in enumerate(graph.ops):
        # (engine asked for, who asked, hard: an impossible "npu" is an error)
        want, who, hard = None, "", True
        if i in req:
            want, who = req[i][0], f"--place {req[i][1]}={req[i][0]}"
        elif force is not None:
            want, who = force, f"--force-{force}"
        elif op.placement in ENGINE_KINDS:  # a hint from the model file: never an error
            want, who, hard = op.placement, "the model file's placement", False
        if want == "cpu":
            engines.append(cpu)
            reasons.append(f"placed on the CPU by {who}" if tile is not None else "")
            continue
        if tile is None:
            if want == "npu" and hard:
                raise PlacementError(f"layer {op.label}: {who}, but the device has no NPU")
            engines.append(cpu)
            reasons.append("")
            continue
        sup = tile.supports(graph, op)
        if sup.ok:
            engines.append(npu)
            reasons.append("")
            continue
        if want == "npu" and hard:
            raise PlacementError(
                f"layer {op.label}: {who}, but the {tile.kind} tile cannot run it: {sup.reason}"
            )
        engines.append(cpu)
        reasons.append(sup.reason or f"not supported by the {tile.kind} tile")
    return Placement(tuple(engines), tuple(reasons), npu, cpu)


def find_transfers(graph: Graph, pl: Placement) -> list[Transfer]:
    """Copies between CPU memory and the tile's memory that the placement implies.

    Graph inputs start in CPU memory and graph outputs must end there. Walking the ops in
    order, a layer that reads an activation which is not yet on its side gets the copy
    (the tensor then lives on both sides, so later readers on that side pay nothing); a
    graph output produced on the NPU is copied back and charged to its producer.
    """
    t = graph.tensors
    where: dict[str, set[str]] = {n: {"cpu"} for n in graph.inputs}
    producer: dict[str, int] = {}
    out: list[Transfer] = []
    for i, op in enumerate(graph.ops):
        side = pl.side(i)
        seen: set[str] = set()
        for n in op.inputs:
            if not n or t[n].is_const or n in seen:
                continue
            seen.add(n)
            have = where.setdefault(n, {"cpu"})
            if side not in have:
                src = next(iter(have))
                out.append(Transfer(n, t[n].nbytes, src, side, i))
                have.add(side)
        for n in op.outputs:
            where[n] = {side}
            producer[n] = i
    for n in graph.outputs:
        if "cpu" not in where.get(n, {"cpu"}):
            out.append(Transfer(n, t[n].nbytes, "npu", "cpu", producer[n]))
    return out


def cpu_view(graph: Graph, pl: Placement, shared_memory: bool) -> Graph:
    """The graph as CPU memory sees it, for planning the CPU arena.

    With a tile that works in CPU memory (``shared_memory``) every activation is in the
    arena. With a tile that has its own data memory, an NPU layer keeps only the tensors
    that are on the CPU side: inputs it receives from CPU memory (live until copied) and
    outputs copied back (live from then on); tensors only NPU layers touch stay out."""
    if shared_memory or pl.all_cpu:
        return graph
    from dataclasses import replace

    on_cpu = {n for n in graph.inputs} | set(graph.outputs)
    for i, op in enumerate(graph.ops):
        if pl.side(i) == "cpu":
            on_cpu.update(n for n in op.inputs if n)
            on_cpu.update(op.outputs)
    ops: list[Op] = []
    for i, op in enumerate(graph.ops):
        if pl.side(i) == "cpu":
            ops.append(op)
            continue
        ins = [n for n in op.inputs if n and (graph.tensors[n].is_const or n in on_cpu)]
        outs = [n for n in op.outputs if n in on_cpu]
        ops.append(replace(op, inputs=ins, outputs=outs))
    return Graph(graph.tensors, ops, graph.inputs, graph.outputs, graph.name, graph.metadata)


__all__ = [
    "Placement",
    "PlacementError",
    "Transfer",
    "cpu_view",
    "find_transfers",
    "match_layers",
    "parse_assignments",
    "place",
]
