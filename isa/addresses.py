"""Compile instruction schedules into the address stream they generate (for cache models).

Address model (docs/cost-model.md, "Caches"):

* every stream tag (input, input2, output, weights, bias, const, scratch, stack, qparams,
  qmult) is one pointer; a load/store touches ``pointer + offset`` where the offset is the
  immediate (pre-indexed/offset forms), 0 (post-indexed forms), or a register value given
  by ``Loop.regs`` / ``Program.regs`` (``ldr r5, [r1, r2]``; unknown registers count as 0);
* writeback (post-increment, ``[rn, #i]!``, ``ldm rn!``, push/pop) moves the pointer by the
  instruction's writeback amount; an ``add``/``sub`` of an immediate (or of a register with
  a known value, optionally ``lsl #n``) to a register that the same block uses as the base
  of a tagged access moves that tag's pointer; arithmetic on ``sp`` moves the stack pointer;
* a :class:`~mcusim.isa.schedule.Loop` may rewind pointers (``Loop.addr``,
  :class:`~mcusim.isa.schedule.Rewind`); without a rule a pointer just continues;
* instruction fetch: every distinct Block object gets a code address (blocks laid out one
  after the other in first-execution order, so library blocks shared by many kernels sit
  once); executing a block fetches its bytes sequentially. A taken jump in a block (a
  ``{taken}`` branch, an unconditional branch, a call: :attr:`Block.jumps`) lands on code
  that is not the next in line: compiled code has other paths in between (the real
  library's skipped branch arms, its cold paths, the callee elsewhere). The layout leaves
  :data:`JUMP_GAP` bytes after such a block per jump, so the next block does not share
  the jumping code's cache line. A block of a library function whose compiled size is
  known (:attr:`Block.func_bytes`) may leave more: the function's bytes that no compiled
  program executes (its skipped branch arms and cold paths) are shared out evenly after
  its executed blocks, so its hot code spans what the compiled function spans.

The result is a :class:`CompiledStream`: flat int64 arrays (a small bytecode over blocks and
loops plus per-block access events) that the numba interpreter in mcusim/cache.py walks.
:func:`expand` walks the same description in plain Python (for tests and debugging).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from .asm import SP, STREAM_TAGS, Instr, _reg, _split_operands
from .riscv_asm import SP as RV_SP
from .riscv_asm import rv_reg
from .schedule import Block, Loop, Program, Rewind

TAG_INDEX = {t: i for i, t in enumerate(STREAM_TAGS)}
N_TAGS = len(STREAM_TAGS)
STACK = TAG_INDEX["stack"]

# bytecode
OP_LAYER, OP_BLOCK, OP_LOOP, OP_END = 1, 2, 3, 4
# event columns: tag, offset, nbytes (0 = pointer move only), accesses, is_write, post delta
EV_TAG, EV_OFF, EV_NBYTES, EV_NACC, EV_WRITE, EV_POST = range(6)
MEM_SHIFT = 40  # address bits above this hold (memory index + 1): memories never alias
# Bytes of other code assumed between a taken jump and its target: one line of the
# instruction caches and flash accelerators the devices model (32 B), the distance at which
# the target stops sharing the jumping code's line; farther changes no line count.
# Measured against compiled firmware (docs/firmware.md section 6): without it the
# schedules' code sat denser than GCC's and zig's, and small layers missed fewer lines.
JUMP_GAP = 32


def global_address(mem_index: int, address: int) -> int:
    """A device address tagged with its memory, so two memories never share a cache tag."""
    return ((mem_index + 1) << MEM_SHIFT) | int(address)


def memory_of(addr: int) -> int:
    return (int(addr) >> MEM_SHIFT) - 1


@dataclass
class CompiledStream:
    """What the cache interpreter needs; every array is int64."""

    prog: np.ndarray  # bytecode
    events: np.ndarray  # (n_events, 6)
    blk_ev: np.ndarray  # (n_variants, 2): first event, event count
    blk_code: np.ndarray  # (n_variants, 2): code address (global), code bytes
    rules: np.ndarray  # (n_rules, 6): tag, step, start, every, skip, phase
    base: np.ndarray  # (n_layers, N_TAGS): pointer value at layer start (global address)
    size: np.ndarray  # (n_layers, N_TAGS): bytes of the stream's buffer (0: unbounded)
    code_bytes: int  # bytes of code laid out
    n_layers: int
    block_names: list[str] = field(default_factory=list)


_ALU_MOVE = re.compile(r"^(add|sub)w?s?$")


def _reg_value(tok: str, regs: dict[int, int]) -> int | None:
    """Value of an operand: '#imm', 'rN', 'rN, lsl #k' (known registers only)."""
    t = tok.strip()
    if t.startswith("#"):
        try:
            return int(t[1:], 0)
        except ValueError:
            return None
    m = re.match(r"^([a-z0-9]+)(?:\s*,?\s*lsl\s*#?(\d+))?$", t.lower())
    if not m:
        return None
    r = _reg(m.group(1))
    if r is None or r not in regs:
        return None
    return regs[r] << int(m.group(2) or 0)


def _mem_offset_reg_shift(ins: Instr) -> int:
    """The 'lsl #k' of a register-offset memory operand ([r2, r3, lsl #1] -> 1)."""
    m = re.search(r"\[[^\]]*lsl\s*#?(\d+)", ins.text.lower())
    return int(m.group(1)) if m else 0


_RV_MOVE = frozenset(("addi", "add", "sub"))


def _rv_move(ins: Instr, rd: int, regs: dict[int, int]) -> int | None:
    """Pointer delta of a RISC-V ``addi rd, rd, imm`` / ``add|sub rd, rd, rs`` (rs known)."""
    ops = [o.strip() for o in ins.text.partition(" ")[2].split(",")]
    if len(ops) == 3 and rv_reg(ops[1]) == rd:
        tok = ops[2]
    elif len(ops) == 2:  # c.addi rd, imm / c.add rd, rs
        tok = ops[1]
    else:
        return None
    r = rv_reg(tok)
    if r is not None:
        v = regs.get(r)
    else:
        try:
            v = int(tok, 0)
        except ValueError:
            return None
    if v is None:
        return None
    return -v if ins.mnemonic == "sub" else v


def block_events(block: Block, regs: dict[int, int]) -> list[tuple[int, int, int, int, int, int]]:
    """The access/pointer events of one execution of ``block`` given register values.
    RISC-V blocks (``getattr(block, "isa", "") == "riscv"``, isa/riscv_asm.py) have no
    literal loads, their stack pointer is x2 and their pointer moves are addi/add/sub.
    Memoized on the block per register values (blocks are module-level and reused by
    every layer and model, like the cores' per-block cycle caches)."""
    memo = block.__dict__.setdefault("_events_memo", {})
    key = tuple(sorted(regs.items()))
    hit = memo.get(key)
    if hit is None:
        hit = memo[key] = _block_events(block, regs)
    return list(hit)


def _block_events(block: Block, regs: dict[int, int]) -> list[tuple[int, int, int, int, int, int]]:
    rv = getattr(block, "isa", "") == "riscv"
    base_tag: dict[int, int] = {}
    for ins in block.instrs:
        m = ins.mem
        if m is not None and ins.tag is not None and (rv or not m.literal):
            base_tag.setdefault(m.base, TAG_INDEX[ins.tag])
    base_tag[RV_SP if rv else SP] = STACK
    out: list[tuple[int, int, int, int, int, int]] = []
    for ins in block.instrs:
        m = ins.mem
        if m is not None and ins.tag is not None:
            tag = TAG_INDEX[ins.tag]
            nbytes, nregs = m.nbytes, m.nregs
            write = 0 if m.is_load else 1
            mn = ins.mnemonic
            if m.literal and not rv:
                out.append((tag, 0, nbytes, nregs, write, 0))
                continue
            if mn in ("push", "vpush") or mn.endswith("db"):
                # full-descending store/load multiple: below the pointer, then it moves down
                post = -nbytes if m.writeback else 0
                out.append((tag, -nbytes, nbytes, nregs, write, post))
                continue
            if ins.cls in ("load_multi", "store_multi") or mn in ("pop", "ldm", "stm"):
                out.append((tag, 0, nbytes, nregs, write, nbytes if m.writeback else 0))
                continue
            if m.offset_reg is not None:
                v = regs.get(m.offset_reg)
                roff = (v << _mem_offset_reg_shift(ins)) if v is not None else None
            else:
                roff = None
            if m.post:
                inc = m.imm if m.offset_reg is None else (roff if roff is not None else nbytes)
                out.append((tag, 0, nbytes, nregs, write, int(inc or 0)))
            else:
                off = int((m.imm if m.offset_reg is None else roff) or 0)
                out.append((tag, off, nbytes, nregs, write, off if m.writeback else 0))
            continue
        if rv:
            if ins.mnemonic in _RV_MOVE and ins.dests and ins.dests[0] in base_tag:
                v = _rv_move(ins, ins.dests[0], regs)
                if v is not None:
                    out.append((base_tag[ins.dests[0]], 0, 0, 0, 0, int(v)))
            continue
        if not ins.dests or not _ALU_MOVE.match(ins.mnemonic + ("s" if ins.setflags else "")):
            continue
        if ins.cond is not None:
            continue
        rd = ins.dests[0]
        if rd not in base_tag:
            continue
        ops = _split_operands(ins.text.partition(" ")[2])
        if len(ops) == 2:
            v = _reg_value(ops[1], regs)
        elif len(ops) == 3 and _reg(ops[1]) == rd:
            v = _reg_value(ops[2], regs)
        elif len(ops) == 4 and _reg(ops[1]) == rd:
            v = _reg_value(ops[2] + " " + ops[3].replace(",", " "), regs)
        else:
            v = None
        if v is None:
            continue
        if ins.mnemonic.startswith("sub"):
            v = -v
        out.append((base_tag[rd], 0, 0, 0, 0, int(v)))
    return out


def _regs_map(d: dict) -> dict[int, int]:
    out = {}
    for k, v in d.items():
        r = _reg(str(k))
        if r is None:
            r = rv_reg(str(k))  # RISC-V names (a2, x12, t0, ...)
        if r is None:
            raise ValueError(f"address annotation: {k!r} is not a register")
        out[r] = int(v)
    return out


def distinct_blocks(programs) -> list[Block]:
    """Every distinct Block object of ``programs`` once (a loop met again holds no new
    block): the code the layout places."""
    seen: set[int] = set()
    out: list[Block] = []
    stack = [it for p in programs for it in p.items]
    while stack:
        it = stack.pop()
        if id(it) in seen:
            continue
        seen.add(id(it))
        if isinstance(it, Block):
            out.append(it)
        else:
            stack.extend(it.body)
    return out


class _Compiler:
    def __init__(self, code_base: int, fetch_align: int = 4):
        self.prog: list[int] = []
        self.events: list[tuple[int, int, int, int, int, int]] = []
        self.blk_ev: list[tuple[int, int]] = []
        self.blk_code: list[tuple[int, int]] = []
        self.names: list[str] = []
        self.rules: list[tuple[int, ...]] = []
        self.variants: dict[tuple[int, tuple], int] = {}
        self.code_addr: dict[int, int] = {}
        self.code_next = code_base
        self.code_base = code_base
        self.fetch_align = fetch_align
        self.gaps: dict[str, int] = {}  # library function -> its cold bytes after each block
        self._keep: list[Block] = []  # id() stays unique while compiling

    def function_gaps(self, programs: list[Program]) -> None:
        """Bytes left after each block of every sized library function: its compiled size
        less the bytes of its distinct blocks in ``programs``, shared out over those
        blocks (2-byte steps: Thumb code stays halfword aligned)."""
        executed: dict[str, int] = {}
        blocks: dict[str, int] = {}
        size: dict[str, int] = {}
        for b in distinct_blocks(programs):
            if b.func and b.func_bytes > 0:
                executed[b.func] = executed.get(b.func, 0) + b.code_bytes + b.code_bytes % 2
                blocks[b.func] = blocks.get(b.func, 0) + 1
                size[b.func] = b.func_bytes
        for f, n in executed.items():
            self.gaps[f] = max(size[f] - n, 0) // blocks[f] // 2 * 2

    def _addr_of(self, block: Block) -> int:
        a = self.code_addr.get(id(block))
        if a is None:
            a = self.code_next
            self.code_addr[id(block)] = a
            self._keep.append(block)
            size = max(block.code_bytes, 0)
            gap = max(JUMP_GAP * block.jumps, self.gaps.get(block.func, 0))
            self.code_next += size + (-size) % 2 + gap
        return a

    def block(
        self, block: Block, regs: dict[int, int], rkey: tuple, pre: dict | None = None
    ) -> None:
        """One execution of ``block``; ``rkey`` is ``regs`` as a sorted tuple (worked out
        once per loop, not per block)."""
        moves = tuple(sorted((TAG_INDEX[t], int(d)) for t, d in pre.items())) if pre else ()
        key = (id(block), rkey, moves)
        v = self.variants.get(key)
        if v is None:
            evs = [(t, 0, 0, 0, 0, d) for t, d in moves] + block_events(block, regs)
            v = len(self.blk_ev)
            self.variants[key] = v
            self.blk_ev.append((len(self.events), len(evs)))
            self.events.extend(evs)
            self.blk_code.append((self._addr_of(block), block.code_bytes))
            self.names.append(block.name)
        self.prog += [OP_BLOCK, v]

    def items(
        self, items: list, regs: dict[int, int], moves: dict | None = None, rkey=None
    ) -> None:
        if rkey is None:
            rkey = tuple(sorted(regs.items()))
        for it in items:
            if isinstance(it, Block):
                self.block(it, regs, rkey, moves.get(it) if moves else None)
            elif isinstance(it, Loop):
                self.loop(it, regs, rkey)
            else:
                raise TypeError(f"schedule item {it!r} is neither a Block nor a Loop")

    def loop(self, loop: Loop, regs: dict[int, int], rkey: tuple = ()) -> None:
        if loop.count == 0 or not loop.body:
            return
        lregs = getattr(loop, "regs", None)
        if lregs:
            inner = {**regs, **_regs_map(lregs)}
            rkey = tuple(sorted(inner.items()))
        else:
            inner = regs
        lo = len(self.rules)
        for tag, rule in (getattr(loop, "addr", None) or {}).items():
            if tag not in TAG_INDEX:
                raise ValueError(f"loop {loop.name!r}: unknown stream tag {tag!r}")
            if not isinstance(rule, Rewind):
                raise TypeError(f"loop {loop.name!r}: address rule for {tag!r} must be a Rewind")
            if rule.every < 0 or rule.phase < 0:
                raise ValueError(f"loop {loop.name!r}: Rewind.every/phase must be >= 0")
            self.rules.append(
                (
                    TAG_INDEX[tag],
                    int(rule.step),
                    int(rule.start),
                    int(rule.every),
                    int(rule.skip),
                    int(rule.phase),
                )
            )
        hi = len(self.rules)
        at = len(self.prog)
        self.prog += [OP_LOOP, loop.count, lo, hi, 0]
        self.items(loop.body, inner, getattr(loop, "moves", None), rkey)
        self.prog += [OP_END, at]
        self.prog[at + 4] = len(self.prog)


def compile_programs(
    programs: list[Program],
    bases: list[dict[str, int | tuple[int, int]]],
    code_base: int = global_address(0, 0),
) -> CompiledStream:
    """Compile one program per layer; ``bases[i]`` maps stream tags to the global address
    of their pointer at the start of layer ``i``, or to (address, buffer bytes): an
    access that would leave a sized buffer wraps around inside it, so a schedule without
    address rules re-reads its buffers instead of running into other data. Tags without
    a base start at address 0, outside every memory (the cache model skips them)."""
    c = _Compiler(code_base)
    c.function_gaps(programs)
    base = np.zeros((len(programs), N_TAGS), dtype=np.int64)
    size = np.zeros((len(programs), N_TAGS), dtype=np.int64)
    for i, (p, b) in enumerate(zip(programs, bases, strict=True)):
        for tag, a in b.items():
            a, n = a if isinstance(a, tuple) else (a, 0)
            base[i, TAG_INDEX[tag]] = a
            size[i, TAG_INDEX[tag]] = n
        c.prog += [OP_LAYER, i]
        c.items(p.items, _regs_map(getattr(p, "regs", None) or {}))

    def arr(x, cols):
        a = np.asarray(x, dtype=np.int64)
        return a.reshape(-1, cols) if cols else a

    return CompiledStream(
        prog=arr(c.prog, 0),
        events=arr(c.events, 6),
        blk_ev=arr(c.blk_ev, 2),
        blk_code=arr(c.blk_code, 2),
        rules=arr(c.rules, 6),
        base=base,
        size=size,
        code_bytes=c.code_next - c.code_base,
        n_layers=len(programs),
        block_names=c.names,
    )


def compile_program(program: Program, bases: dict[str, int] | None = None) -> CompiledStream:
    return compile_programs([program], [bases or {}])


def expand(cs: CompiledStream, fetch: bool = False):
    """Yield every access of the stream in execution order, in plain Python:
    (layer, kind, tag, address, nbytes, is_write, accesses) with kind "data" (accesses:
    registers transferred), or "fetch" (code bytes of one block execution: tag None,
    address of the block, accesses 0) when ``fetch``."""
    prog = cs.prog.tolist()
    ev = cs.events.tolist()
    ptr = [0] * N_TAGS
    layer = -1
    frames: list[list[int]] = []  # [loop pc, iteration, count, entry pointers...]
    pc = 0
    while pc < len(prog):
        op = prog[pc]
        if op == OP_LAYER:
            layer = prog[pc + 1]
            ptr = [int(x) for x in cs.base[layer]]
            pc += 2
        elif op == OP_BLOCK:
            v = prog[pc + 1]
            if fetch:
                a, n = (int(x) for x in cs.blk_code[v])
                yield (layer, "fetch", None, a, n, False, 0)
            s, n = (int(x) for x in cs.blk_ev[v])
            for tag, off, nb, nacc, wr, post in ev[s : s + n]:
                if nb:
                    a = ptr[tag] + off
                    sz = int(cs.size[layer, tag])
                    b0 = int(cs.base[layer, tag])
                    if sz and not b0 <= a < b0 + sz:
                        a = b0 + (a - b0) % sz
                    yield (layer, "data", STREAM_TAGS[tag], a, nb, bool(wr), nacc)
                ptr[tag] += post
            pc += 2
        elif op == OP_LOOP:
            _, count, lo, hi, _end = prog[pc : pc + 5]
            frames.append([pc, 0, count, list(ptr)])
            for tag, _step, start, every, skip, ph in cs.rules[lo:hi].tolist():
                rows = ph // every if every else 0
                ptr[tag] = frames[-1][3][tag] + start + rows * skip
            pc += 5
        else:  # OP_END
            f = frames[-1]
            lpc = f[0]
            lo, hi = prog[lpc + 2], prog[lpc + 3]
            f[1] += 1
            i = f[1]
            for tag, step, start, every, skip, ph in cs.rules[lo:hi].tolist():
                rows = (i + ph) // every if every else 0
                ptr[tag] = f[3][tag] + start + i * step + rows * skip
            if f[1] < f[2]:
                pc = lpc + 5
            else:
                frames.pop()
                pc += 2
