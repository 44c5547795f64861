"""Instruction schedules: straight-line blocks and counted loops, as a kernel executes them.

A :class:`Program` is a tree of :class:`Block` (instructions executed once each time control
reaches them) and :class:`Loop` (a body executed ``count`` times). A loop body ends with
its back-edge branch in the text, so the branch is timed like any other instruction:
taken for the first ``count - 1`` iterations and not taken on the last. Timing models
(isa/timing.py, isa/cortex_m4.py) evaluate a loop from its first iteration and its steady
state, so the cost of a program grows with the number of distinct blocks, never with trip
counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .asm import STREAM_TAGS, Instr, parse

_TAG_INDEX = {t: i for i, t in enumerate(STREAM_TAGS)}
N_TAGS = len(STREAM_TAGS)


def _traffic(instrs: tuple[Instr, ...]) -> np.ndarray:
    """(N_TAGS, 4) int64: read bytes, write bytes, read accesses, write accesses."""
    t = np.zeros((N_TAGS, 4), dtype=np.int64)
    for ins in instrs:
        m = ins.mem
        if m is None or ins.tag is None:
            continue
        row = _TAG_INDEX[ins.tag]
        if m.is_load:
            t[row, 0] += m.nbytes
            t[row, 2] += m.nregs
        else:
            t[row, 1] += m.nbytes
            t[row, 3] += m.nregs
    return t


@dataclass(eq=False)
class Block:
    """Straight-line instructions. Build once (module level) and reuse: timing is cached per
    block object. ``shared`` marks library code (memcpy, ...) whose bytes count once.
    ``func`` / ``func_bytes``: the compiled library function the block's code belongs to
    and that function's size, when known (kernels/schedules/code_sizes.toml); the code
    layout (isa/addresses.py) puts the function's unexecuted bytes between its blocks."""

    instrs: tuple[Instr, ...]
    name: str = ""
    shared: bool = False
    func: str = ""
    func_bytes: int = 0

    @classmethod
    def asm(cls, text: str, name: str = "", shared: bool = False) -> Block:
        return cls(parse(text, name or "block", True), name, shared)

    @classmethod
    def rv(cls, text: str, name: str = "", shared: bool = False, rvc: bool = True) -> Block:
        """A block of RISC-V (RV32IMC + XpulpV2/XpulpNN) assembly; see isa/riscv_asm.py."""
        from .riscv_asm import rv_block

        return rv_block(text, name, shared, rvc)

    @cached_property
    def traffic(self) -> np.ndarray:
        return _traffic(self.instrs)

    @cached_property
    def code_bytes(self) -> int:
        return sum(i.size for i in self.instrs)

    @cached_property
    def jumps(self) -> int:
        """Taken transfers of control that land away from the next instruction: branches
        marked ``{taken}``, unconditional branches and jumps, calls (loop back edges, the
        default not-taken conditional branches, and returns are not counted)."""
        return sum(
            i.cls == "branch_call"
            or (i.cls in ("branch", "cbz") and i.taken is True)
            or (i.cls in ("branch", "jump") and i.cond is None and i.taken is not False)
            for i in self.instrs
        )

    def __len__(self) -> int:
        return len(self.instrs)

    @property
    def ends_with_branch(self) -> bool:
        """True when the last instruction is a conditional branch (a loop back edge)."""
        if not self.instrs:
            return False
        last = self.instrs[-1]
        return last.cls == "cbz" or (last.cls == "branch" and last.cond is not None)


@dataclass(frozen=True)
class Rewind:
    """Address annotation of one stream in a :class:`Loop`: at the start of iteration ``i``
    the stream's pointer is set to (its value at loop entry) + ``start`` + ``i * step``, and
    after the loop it is left at entry + ``start`` + ``count * step``. ``Rewind()`` re-reads
    the same bytes every iteration (weights per output pixel pair); ``Rewind(step=row)``
    jumps rows. With ``every > 0`` the pointer also moves ``skip`` more bytes after each
    ``every`` iterations (a 2-D walk: filter taps or output pixels row by row, the
    ``skip`` being the rest of the image row); iteration ``i`` is element ``i + phase`` of
    that walk (a loop starting at the second tap of a window, one pixel on, has phase 1).
    Streams without a rule just continue."""

    step: int = 0
    start: int = 0
    every: int = 0
    skip: int = 0
    phase: int = 0

    def offset(self, i: int) -> int:
        """Pointer offset from the loop-entry value at the start of iteration ``i``."""
        rows = (i + self.phase) // self.every if self.every else 0
        return self.start + i * self.step + rows * self.skip


@dataclass(eq=False)
class Loop:
    """``body`` executed ``count`` times; the last instruction of the body is the back edge
    (a conditional branch) when the compiled loop has one.

    ``addr``, ``regs`` and ``moves`` only shape the address stream (isa/addresses.py),
    never timing: ``addr`` maps a stream tag to a :class:`Rewind`; ``regs`` gives register
    values (bytes) used as address offsets inside the loop (``ldr r5, [r1, r2]``,
    ``add r1, r1, r3``), inherited by nested loops; ``moves`` maps a Block of this body to
    {tag: bytes} added to those pointers just before that block runs (a store through a
    second pointer into the same buffer, e.g. the output of the second pixel of a pair)."""

    name: str
    count: int
    body: list  # list[Block | Loop]
    addr: dict = field(default_factory=dict)  # tag -> Rewind
    regs: dict = field(default_factory=dict)  # "r2" -> bytes
    moves: dict = field(default_factory=dict)  # Block -> {tag: bytes} before it runs

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError(f"loop {self.name!r}: negative trip count {self.count}")
        self.count = int(self.count)

    @cached_property
    def last_block(self) -> Block | None:
        item = self.body[-1] if self.body else None
        return item if isinstance(item, Block) else None

    @property
    def has_back_edge(self) -> bool:
        lb = self.last_block
        return lb is not None and lb.ends_with_branch


@dataclass(eq=False)
class Program:
    """What one op executes: the items, the library function(s) it ran and notes."""

    items: list
    kernel: str = ""  # e.g. "arm_convolve_1x1_s8_fast -> arm_nn_mat_mult_nt_t_s8"
    isa: str = "armv7em-dsp"
    macs: int = 0
    notes: list[str] = field(default_factory=list)
    scratch_bytes: int = 0  # arena scratch the kernel needs (set by schedule_for)
    regs: dict = field(default_factory=dict)  # register values for addresses (see Loop.regs)

    def walk(self):
        """Yield (item, multiplier) for every block/loop occurrence with its execution count."""
        stack = [(it, 1) for it in reversed(self.items)]
        while stack:
            it, mult = stack.pop()
            yield it, mult
            if isinstance(it, Loop):
                for sub in reversed(it.body):
                    stack.append((sub, mult * it.count))

    def summary(self) -> tuple[int, np.ndarray, int]:
        """(instructions executed, traffic per stream tag, code bytes) in one walk: the
        blocks' executions are summed per distinct block first, so the per-block work
        (traffic rows) is done once per block, not once per occurrence."""
        runs: dict[Block, int] = {}
        places: dict[Block, int] = {}
        stack = [(it, 1) for it in self.items]  # walk()'s occurrences, in any order
        while stack:
            it, m = stack.pop()
            if isinstance(it, Loop):
                mm = m * it.count
                stack.extend([(sub, mm) for sub in it.body])
            else:
                places[it] = places.get(it, 0) + 1
                if m:
                    runs[it] = runs.get(it, 0) + m
        instrs = sum(len(b) * m for b, m in runs.items())
        tot = np.zeros((N_TAGS, 4), dtype=np.int64)
        for b, m in runs.items():
            tot += b.traffic * m
        # a shared (library) block's bytes count once; any other block once per place
        code = sum(b.code_bytes * (1 if b.shared else n) for b, n in places.items())
        return instrs, tot, code
