"""Timing results and the registry of core timing models.

A core timing model turns a :class:`~mcusim.isa.schedule.Program` into a
:class:`TimingResult`. The evaluation here is generic: a model only says how long a block
takes given the pipeline state it enters with (``block_cycles``); loops are evaluated from
their first iteration, one steady-state iteration and the last (not-taken back edge), so
time grows with the number of distinct blocks, not with trip counts.

    from mcusim.isa.timing import core_timing
    res = core_timing("cortex-m4").time(program)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

from mcusim.errors import DeviceError

from .asm import STREAM_TAGS
from .schedule import Block, Loop, Program


@dataclass(frozen=True)
class StreamTraffic:
    """Bytes and accesses one stream (tensor/buffer) sees from executed loads/stores."""

    read_bytes: int = 0
    write_bytes: int = 0
    reads: int = 0
    writes: int = 0


@dataclass(frozen=True)
class LoopStat:
    iterations: int  # total iterations executed (over all entries of the loop)
    cycles: int  # cycles inside the loop, inclusive of nested loops


@dataclass
class TimingResult:
    cycles: int
    instructions: int
    streams: dict[str, StreamTraffic]
    code_bytes: int
    core: str = ""
    kernel: str = ""
    macs: int = 0
    loops: dict[str, LoopStat] = field(default_factory=dict)

    @property
    def macs_per_cycle(self) -> float:
        return self.macs / self.cycles if self.cycles else 0.0

    def stream(self, tag: str) -> StreamTraffic:
        return self.streams.get(tag, StreamTraffic())


class CoreTiming:
    """Base of the per-core timing models; subclasses implement the per-block rules."""

    name: str = ""

    def initial_state(self) -> Any:
        raise NotImplementedError

    def block_cycles(self, block: Block, state: Any, last_taken: bool | None) -> tuple[int, Any]:
        """Cycles of ``block`` entered in ``state``; ``last_taken`` overrides whether a final
        branch is taken (None: as the instruction says). Returns (cycles, exit state)."""
        raise NotImplementedError

    # -- generic evaluation ------------------------------------------------------------
    def time(self, program: Program) -> TimingResult:
        loops: dict[str, list[int]] = {}
        self._memo: dict | None = {}
        try:
            cycles, _ = self._items(program.items, self.initial_state(), None, 1, loops)
        finally:
            self._memo = None
        instructions, traffic, code_bytes = program.summary()
        streams = {
            tag: StreamTraffic(*(int(v) for v in traffic[i]))
            for i, tag in enumerate(STREAM_TAGS)
            if traffic[i].any()
        }
        return TimingResult(
            cycles=int(cycles),
            instructions=instructions,
            streams=streams,
            code_bytes=code_bytes,
            core=self.name,
            kernel=program.kernel,
            macs=program.macs,
            loops={k: LoopStat(v[0], v[1]) for k, v in loops.items()},
        )

    def _items(self, items, state, last_taken, mult, loops) -> tuple[int, Any]:
        total = 0
        n = len(items)
        for k, it in enumerate(items):
            lt = last_taken if k == n - 1 else None
            if isinstance(it, Block):
                c, state = self.block_cycles(it, state, lt)
            else:
                c, state = self._loop_once(it, state, mult, loops)
            total += c
        return total, state

    _memo: dict | None = None

    def _loop_once(self, loop: Loop, state, mult: int, loops) -> tuple[int, Any]:
        """``_loop`` memoized per (loop, entry state) for one ``time`` call: the first,
        middle and last iterations of an outer loop enter an inner loop in the same states
        again and again, and the result does not depend on ``mult`` (which only scales the
        loop statistics, replayed here)."""
        memo = self._memo
        if memo is None:
            return self._loop(loop, state, mult, loops)
        key = (loop, state)
        hit = memo.get(key)
        if hit is None:
            local: dict[str, list[int]] = {}
            c, out = self._loop(loop, state, 1, local)
            hit = memo[key] = (c, out, tuple((k, v[0], v[1]) for k, v in local.items()))
        c, out, stats = hit
        for name, n, cyc in stats:
            acc = loops.setdefault(name, [0, 0])
            acc[0] += n * mult
            acc[1] += cyc * mult
        return c, out

    def _loop(self, loop: Loop, state, mult: int, loops) -> tuple[int, Any]:
        n = loop.count
        if n == 0 or not loop.body:
            return 0, state
        if loop.has_back_edge:
            if n == 1:
                total, state = self._items(loop.body, state, False, mult, loops)
            else:
                c1, s1 = self._items(loop.body, state, True, mult, loops)
                total = c1
                if n > 2:
                    cm, _ = self._items(loop.body, s1, True, mult * (n - 2), loops)
                    total += cm * (n - 2)
                cl, state = self._items(loop.body, s1, False, mult, loops)
                total += cl
        else:
            c1, s1 = self._items(loop.body, state, None, mult, loops)
            total, state = c1, s1
            if n > 1:
                cm, state = self._items(loop.body, s1, None, mult * (n - 1), loops)
                total += cm * (n - 1)
        acc = loops.setdefault(loop.name, [0, 0])
        acc[0] += n * mult
        acc[1] += total * mult
        return total, state


class SteppedTiming(CoreTiming):
    """A core whose block time is the sum of per-instruction ``step`` costs, the pipeline
    state threaded through (Cortex-M4/M33, RI5CY). Results are cached per (block, entry
    state, last_taken): schedules reuse blocks, so each is timed once per state."""

    _cache: dict

    def step(self, ins, state, taken: bool | None) -> tuple[int, Any]:  # pragma: no cover
        raise NotImplementedError

    def block_cycles(self, block: Block, state, last_taken):
        key = (block, state, last_taken)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        total = 0
        instrs = block.instrs
        n = len(instrs)
        for k, ins in enumerate(instrs):
            taken = last_taken if (k == n - 1 and last_taken is not None) else None
            c, state = self.step(ins, state, taken)
            total += c
        res = (total, state)
        self._cache[key] = res
        return res

    def sequence_cycles(self, instrs, state=None) -> int:
        """Cycles of a straight-line instruction sequence (tests, diagnostics)."""
        st = self.initial_state() if state is None else state
        total = 0
        for ins in instrs:
            c, st = self.step(ins, st, None)
            total += c
        return total


_FACTORIES: dict[str, str] = {
    # name -> "module:Class"; imported lazily so adding a core costs nothing at import
    "cortex-m4": "mcusim.isa.cortex_m4:CortexM4Timing",
    "cortex-m4f": "mcusim.isa.cortex_m4:CortexM4Timing",
    "cortex-m7": "mcusim.isa.cortex_m7:CortexM7Timing",
    "cortex-m33": "mcusim.isa.cortex_m33:CortexM33Timing",
    "cortex-m0plus": "mcusim.isa.cortex_m0plus:CortexM0PlusTiming",
    "cortex-m55": "mcusim.isa.cortex_m55:CortexM55Timing",
    "cortex-m85": "mcusim.isa.cortex_m85:CortexM85Timing",
    "ri5cy": "mcusim.isa.ri5cy:RI5CYTiming",
    "cv32e40p": "mcusim.isa.ri5cy:RI5CYTiming",
    "xpulpnn": "mcusim.isa.ri5cy:XpulpNNTiming",
}


def register_core(name: str, factory: str) -> None:
    """Register a timing model as 'package.module:ClassName' under a core name."""
    _FACTORIES[name.lower()] = factory
    core_timing.cache_clear()


def available_cores() -> list[str]:
    return sorted(_FACTORIES)


@cache
def core_timing(name: str) -> CoreTiming:
    """The timing model of a core by name (e.g. "cortex-m4"); one shared instance."""
    key = name.lower()
    if key not in _FACTORIES:
        raise DeviceError(
            f"no instruction timing model for core {name!r}; known: {', '.join(available_cores())}"
        )
    mod_name, cls_name = _FACTORIES[key].split(":")
    import importlib

    cls = getattr(importlib.import_module(mod_name), cls_name)
    return cls()
