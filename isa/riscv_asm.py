"""Parse RV32IMC + XpulpV2 + XpulpNN assembly (GNU / PULP syntax) into the shared frozen
:class:`~mcusim.isa.asm.Instr` / :class:`~mcusim.isa.asm.MemAccess` records.

Schedules for RI5CY / CV32E40P cores are written one instruction a line, exactly as the
PULP GCC toolchain prints them, with the Arm parser's trailing brace annotations::

    lp.setup  x0, a3, .Lend           # hardware loop 0: count a3, body up to .Lend
    p.lw      t0, 4(a0!)  {weights}   # post-increment load: t0 = [a0]; a0 += 4
    p.lw      t1, a2(a1!) {input}     # register post-increment: a1 += a2
    p.lw      t2, a2(a1)  {input}     # register offset, no writeback
    lw        a5, 8(sp)               # sp-based accesses default to the "stack" stream
    pv.sdotsp.b    a4, t0, t1         # a4 += sum of 4 signed byte products
    pv.sdotusp.sc.b a4, t0, t1        # .sc: t1's low byte replicated in every lane
    pv.sdotsp.sci.h a4, t0, -3        # .sci: 6-bit immediate replicated
    pv.sdotsp.n    a4, t0, t1         # XpulpNN: 8 signed nibbles (.c: 16 crumbs)
    pv.qnt.n       a0, a1, a2 {const} # XpulpNN: 4-bit code of a1, thresholds at a2
    pv.mlsdotsp.b  a4, a0, 0b11010 {weights}  # MAC&LOAD: rd, address register, ctl imm5
    p.clip a0, a0, 8 / p.cnt a0, a1 / p.extract a0, a1, 3, 4 / pv.pack a0, a1, a2
    bne  a0, a1, .Lloop {taken} / beqz a0, 1f / j .Lout / ret / p.bneimm a0, 3, .L2
    .Lend:                            # labels and .directives are ignored ...
    .option norvc                     # ... except .option rvc / norvc (see below)

Registers: ``x0``-``x31`` or ABI names (zero ra sp gp tp t0-t6 s0-s11 fp a0-a7) as
numbers 0-31; x0 is never a source or destination (no dependency). XpulpNN's six MAC&LOAD
special registers are numbers 32-37 (:data:`NN_SPR`): SPR 0-1 activations, 2-5 weights.
Comments start with ``#`` or ``//``. Annotations: ``{tag}`` (a stream, see
``asm.STREAM_TAGS``), ``{taken}``/``{nottaken}`` for branches, ``{misaligned}`` for an
access that crosses a word (2 cycles on the core), ``{div=N}`` cycles of a division.

Hardware loops: ``lp.setup L, rs1, end`` / ``lp.setupi L, n, end`` / ``lp.count[i]`` /
``lp.starti`` / ``lp.endi`` with L = ``x0``/``0`` (inner loop) or ``x1``/``1``; CORE-V
``cv.setup`` ... are accepted as aliases. In a Program, a hardware loop is a
:class:`~mcusim.isa.schedule.Loop` whose body has no back-edge branch, preceded by a block
holding the ``lp.setup``; :func:`hw_loop` builds one and checks the documented constraints.

Instruction sizes: with RVC on (the default, as GCC's ``-march=rv32imc...``), instructions
with a 16-bit encoding for their operands count 2 bytes (``c.`` mnemonics always do);
``.option norvc`` in the text (or ``rvc=False``) makes every instruction 4 bytes.
Custom (``p.``/``pv.``/``lp.``) instructions are always 4 bytes. ``la`` and an ``li`` whose
constant needs more than 12 bits are two instructions (annotation ``insns=2``: 8 bytes,
6 with RVC's c.lui, and two issue cycles); ``call``/``tail`` are taken as linker-relaxed
to ``jal``/``j``.

Build blocks with ``Block.rv(text, name="", shared=False, rvc=True)`` (isa/schedule.py) or
:func:`rv_block`; memory accesses without a stream tag are an error there.

Record fields: ``cls`` from isa/riscv.toml (``nn_*`` = XpulpNN only); ``cond`` for branches
(eq ne lt ge ltu geu gt le gtu leu; a Block ending in one is a loop back edge);
``esize`` = lane bits of a SIMD op (16/8/4/2); ``mnemonic`` without the width/.sc
suffixes (``pv.sdotsp``). ``Instr.writes_pc`` and ``MemAccess.literal`` are Arm notions
(register 15 is a5 here): ignore them for RISC-V records; :class:`RVBlock` carries
``isa = "riscv"`` so isa/addresses.py can tell.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import replace
from functools import lru_cache
from importlib import resources

from .asm import STREAM_TAGS, AsmError, Instr, MemAccess
from .schedule import Block, Loop

ABI = (
    "zero ra sp gp tp t0 t1 t2 s0 s1 a0 a1 a2 a3 a4 a5 a6 a7 "
    "s2 s3 s4 s5 s6 s7 s8 s9 s10 s11 t3 t4 t5 t6"
).split()
_REGS = {n: i for i, n in enumerate(ABI)}
_REGS.update({f"x{i}": i for i in range(32)})
_REGS["fp"] = 8
RA, SP = 1, 2
NN_SPR = 32  # XpulpNN MAC&LOAD special registers: NN_SPR + 0 .. NN_SPR + 5
LANE_BITS = {"b": 8, "h": 16, "n": 4, "c": 2}
_C_ALIASES = {"lwsp": "lw", "swsp": "sw", "addi16sp": "addi", "addi4spn": "addi"}
_CV_ALIASES = {"cv.setup": "lp.setup", "cv.setupi": "lp.setupi", "cv.count": "lp.count"}
_CV_ALIASES |= {"cv.counti": "lp.counti", "cv.starti": "lp.starti", "cv.endi": "lp.endi"}


class RVBlock(Block):
    """A :class:`Block` of RISC-V instructions (register numbering x0-x31, sp = x2)."""

    isa = "riscv"


@lru_cache(maxsize=1)
def rv_table() -> dict[str, dict]:
    """The mnemonic table of isa/riscv.toml."""
    text = resources.files("mcusim.isa").joinpath("riscv.toml").read_text()
    return tomllib.loads(text)["mnemonics"]


def rv_reg(tok: str) -> int | None:
    """Register number of an x/ABI register name, else None."""
    return _REGS.get(tok.strip().lower())


def _imm(tok: str) -> int | None:
    t = tok.strip().lower()
    try:
        return int(t, 0)
    except ValueError:
        return None


def _split_ops(s: str) -> list[str]:
    return [p.strip() for p in s.split(",")] if s.strip() else []


_MEM = re.compile(r"^(?P<off>[^()]*)\(\s*(?P<base>[\w]+)\s*(?P<wb>!?)\s*\)$")


def _mem(tok: str, is_load: bool, nbytes: int, where: str) -> MemAccess:
    m = _MEM.match(tok.strip())
    if not m:
        raise AsmError(f"{where}: bad memory operand {tok!r} (expected off(reg), off(reg!))")
    base = rv_reg(m.group("base"))
    if base is None:
        raise AsmError(f"{where}: bad base register in {tok!r}")
    off = m.group("off").strip()
    wb = m.group("wb") == "!"
    off_reg, imm = None, 0
    if off:
        r = rv_reg(off)
        if r is not None:
            off_reg, imm = r, None
        else:
            imm = _imm(off)
            if imm is None:
                raise AsmError(f"{where}: bad offset in {tok!r}")
    # PULP post-increment: access at rs1, then rs1 += offset (register or immediate)
    return MemAccess(is_load, base, off_reg, imm, wb, wb, nbytes, 1)


def _annotations(line: str, where: str):
    tag, taken, annot = None, None, []
    while True:
        m = re.search(r"\{\s*([A-Za-z_]\w*)\s*(?:=\s*(-?\d+))?\s*\}\s*$", line)
        if not m:
            break
        key, val = m.group(1).lower(), m.group(2)
        if val is not None:
            annot.append((key, int(val)))
        elif key in STREAM_TAGS:
            tag = key
        elif key in ("taken", "nottaken"):
            taken = key == "taken"
        elif key == "misaligned":
            annot.append((key, 1))
        else:
            raise AsmError(f"{where}: unknown annotation {{{key}}}")
        line = line[: m.start()].rstrip()
    return line, tag, taken, tuple(annot)


def _regs(tokens) -> tuple[int, ...]:
    out = []
    for t in tokens:
        r = rv_reg(t)
        if r is not None and r != 0:
            out.append(r)
    return tuple(out)


def _nz(*regs) -> tuple[int, ...]:
    return tuple(r for r in regs if r is not None and r != 0)


def _c8(*regs) -> bool:
    return all(r is not None and 8 <= r <= 15 for r in regs)


def _rvc_size(mn: str, ops: list[str], mem: MemAccess | None) -> int:
    """2 when GNU as (with the C extension) would pick a 16-bit encoding, else 4."""
    regs = [rv_reg(o) for o in ops]
    imms = [_imm(o) for o in ops]
    if mn == "nop":
        return 2
    if mn == "li":
        return 2 if regs[0] and imms[1] is not None and -32 <= imms[1] < 32 else 4
    if mn == "lui":
        ok = regs[0] not in (0, 2, None) and imms[1] is not None
        return 2 if ok and imms[1] != 0 and -32 <= imms[1] < 32 else 4
    if mn == "mv":
        return 2 if regs[0] and regs[1] else 4
    if mn in ("addi", "andi", "slli", "srli", "srai"):
        rd, rs, v = regs[0], regs[1], imms[2] if len(imms) > 2 else None
        if v is None or rd is None or rs is None:
            return 4
        if mn == "addi":
            if rd == rs and rd != 0 and -32 <= v < 32:
                return 2
            if rd == rs == SP and v % 16 == 0 and -512 <= v < 512 and v:
                return 2
            if rs == SP and _c8(rd) and 0 < v < 1024 and v % 4 == 0:
                return 2
            if v == 0 and rd and rs:
                return 2  # c.mv
            return 4
        if mn == "slli":
            return 2 if rd == rs and rd and 0 < v < 32 else 4
        if mn == "andi":
            return 2 if rd == rs and _c8(rd) and -32 <= v < 32 else 4
        return 2 if rd == rs and _c8(rd) and 0 < v < 32 else 4
    if mn == "add":
        rd, a, b = regs[0], regs[1], regs[2]
        if rd and ((rd == a and b) or (rd == b and a) or (a == 0 and b)):
            return 2
        return 4
    if mn in ("sub", "xor", "or", "and"):
        return 2 if regs[0] == regs[1] and _c8(regs[0], regs[2]) else 4
    if mn in ("lw", "sw") and mem is not None and not mem.writeback and mem.imm is not None:
        rt = regs[0]
        v = mem.imm
        if mem.base == SP and v % 4 == 0 and 0 <= v < 256 and (mn == "sw" or rt):
            return 2
        return 2 if _c8(rt, mem.base) and v % 4 == 0 and 0 <= v < 128 else 4
    if mn in ("beqz", "bnez"):
        return 2 if _c8(regs[0]) else 4
    if mn in ("beq", "bne"):
        return 2 if (_c8(regs[0]) and regs[1] == 0) or (_c8(regs[1]) and regs[0] == 0) else 4
    if mn in ("j", "jr", "ret"):
        return 2
    if mn == "jal":
        return 2 if len(ops) == 1 or regs[0] == RA else 4
    if mn == "jalr":
        return 2 if len(ops) == 1 and regs[0] else 4
    return 4


def _li_split(v: int) -> tuple[int, int]:
    """li of a 32-bit constant -> (lui immediate, addi immediate), as GNU as splits it."""
    v &= 0xFFFFFFFF
    hi = ((v + 0x800) >> 12) & 0xFFFFF
    lo = v - (hi << 12)
    lo = ((lo + 0x800) & 0xFFF) - 0x800
    return hi, lo


def _li_size(rd: int, v: int | None, rvc: bool) -> int:
    """Bytes of a two-part li/la (la and symbolic li: auipc/lui + addi, 8 bytes)."""
    if v is None:
        return 8
    hi, lo = _li_split(v)
    hs = hi - (1 << 20) if hi >= 1 << 19 else hi
    lui = 2 if rvc and rd not in (0, 2) and hs != 0 and -32 <= hs < 32 else 4
    if lo == 0:
        return lui
    return lui + (2 if rvc and -32 <= lo < 32 else 4)


def _pv_split(tok: str, where: str) -> tuple[str, bool, bool, int]:
    """'pv.sdotsp.sc.b' -> ('pv.sdotsp', sc, sci, lane bits)."""
    parts = tok.split(".")
    base = ".".join(parts[:2])
    sc = sci = False
    bits = 0
    for p in parts[2:]:
        if p == "sc":
            sc = True
        elif p == "sci":
            sci = True
        elif p in LANE_BITS and not bits:
            bits = LANE_BITS[p]
        else:
            raise AsmError(f"{where}: unknown suffix .{p} in {tok!r}")
    return base, sc, sci, bits


def parse_line(line: str, where: str = "asm", rvc: bool = True) -> Instr | None:
    """Parse one line; None for blank, comment-only, label-only or directive lines."""
    code = re.split(r"#|//", line, maxsplit=1)[0].strip()
    code = re.sub(r"^[.\w$]+:\s*", "", code)
    if not code or code.startswith("."):
        return None
    code, tag, taken, annot = _annotations(code, where)
    head, _, rest = code.partition(" ")
    tok = head.lower()
    forced16 = False
    if tok.startswith("c."):
        t = _C_ALIASES.get(tok[2:], tok[2:])
        if t in rv_table():
            tok, forced16 = t, True
    tok = _CV_ALIASES.get(tok, tok)
    if tok.startswith("cv.") and tok not in rv_table():  # CORE-V names of p./pv. ops
        alt = "p." + tok[3:]
        tok = alt if alt in rv_table() else "pv." + tok[3:]
    table = rv_table()
    sc = sci = False
    bits = 0
    if tok in table:
        base = tok
    elif tok.startswith("pv."):
        base, sc, sci, bits = _pv_split(tok, where)
        if base not in table:
            raise AsmError(f"{where}: unknown mnemonic {head!r}")
    else:
        raise AsmError(f"{where}: unknown mnemonic {head!r}")
    spec = table[base]
    form, cls = spec["form"], spec["class"]
    ops = _split_ops(rest)
    if forced16 and form in ("r", "i") and len(ops) == 2:
        ops = [ops[0], *ops]  # c.add rd, rs2 -> add rd, rd, rs2
    dests: tuple[int, ...] = ()
    srcs: tuple[int, ...] = ()
    mem = None
    cond = spec.get("cond")

    def need(n: int) -> None:
        if len(ops) < n:
            raise AsmError(f"{where}: {head} needs {n} operands, got {rest.strip()!r}")

    def rd_of(t: str) -> int:
        r = rv_reg(t)
        if r is None:
            raise AsmError(f"{where}: bad register {t!r} in {head}")
        return r

    if form in ("r", "acc"):
        need(3)
        rd = rd_of(ops[0])
        dests = _nz(rd)
        srcs = _nz(*(rd_of(o) for o in ops[1:3]))
        if form == "acc":
            srcs = _nz(rd) + srcs
    elif form == "i":
        need(3)
        dests, srcs = _nz(rd_of(ops[0])), _nz(rd_of(ops[1]))
        if _imm(ops[2]) is None and base != "addi":
            raise AsmError(f"{where}: bad immediate {ops[2]!r} in {head}")
    elif form == "rri":
        need(4)
        dests, srcs = _nz(rd_of(ops[0])), _nz(rd_of(ops[1]), rd_of(ops[2]))
    elif form in ("ext", "extw"):
        need(4)
        rd = rd_of(ops[0])
        dests, srcs = _nz(rd), _nz(rd_of(ops[1]))
        if form == "extw":
            srcs = _nz(rd) + srcs
    elif form == "u":
        need(2)
        dests = _nz(rd_of(ops[0]))
        v = _imm(ops[1])
        if base == "la" or (base == "li" and v is None):
            annot = annot + (("insns", 2),)  # auipc/lui + addi
        elif base == "li" and not -2048 <= v < 2048:
            hi, lo = _li_split(v)
            annot = annot + (("insns", 1 + (lo != 0)),)  # lui [+ addi]
    elif form == "un":
        need(2)
        dests, srcs = _nz(rd_of(ops[0])), _nz(rd_of(ops[1]))
    elif form in ("ld", "st"):
        need(2)
        rt = rd_of(ops[0])
        mem = _mem(ops[1], form == "ld", spec["bytes"], where)
        if form == "ld":
            dests = _nz(rt)
            srcs = _nz(*mem.addr_regs)
        else:
            srcs = _nz(rt, *mem.addr_regs)
        if mem.writeback:
            dests = dests + _nz(mem.base)
    elif form == "br":
        need(3)
        srcs = _nz(rd_of(ops[0]), rd_of(ops[1]))
    elif form in ("brz", "bri"):
        need(2)
        srcs = _nz(rd_of(ops[0]))
    elif form == "j":
        need(1)
        if base in ("jal", "call") and (len(ops) == 1 or base == "call"):
            dests = (RA,)
        elif base == "jal":
            dests = _nz(rd_of(ops[0]))
    elif form == "jr":
        if base == "ret":
            srcs = (RA,)
        elif base == "jr":
            need(1)
            srcs = _nz(rd_of(ops[0].split("(")[-1].rstrip(")")))
        else:  # jalr rs | jalr rd, off(rs) | jalr rd, rs, off
            need(1)
            if len(ops) == 1:
                dests, srcs = (RA,), _nz(rd_of(ops[0]))
            else:
                rs = ops[1].split("(")[-1].rstrip(")") if "(" in ops[1] else ops[1]
                dests, srcs = _nz(rd_of(ops[0])), _nz(rd_of(rs))
    elif form == "csr":
        regs = [rv_reg(o) for o in ops]
        if base == "csrr":
            dests = _nz(regs[0])
        elif base in ("csrw", "csrs", "csrc"):
            srcs = _nz(regs[1] if len(regs) > 1 else None)
        elif base == "csrwi":
            pass
        else:
            dests, srcs = _nz(regs[0]), _nz(regs[2] if len(regs) > 2 else None)
    elif form == "lp":
        need(2)
        if base in ("lp.setup", "lp.count"):
            srcs = _nz(rd_of(ops[1]))
        if _imm(ops[0].lower().lstrip("x")) not in (0, 1):
            raise AsmError(f"{where}: hardware loop index must be x0/x1 (0/1), got {ops[0]!r}")
    elif form == "pv":
        unary = spec.get("unary", False)
        if bits == 0:
            if base in ("pv.pack",):
                bits = 16
            else:
                raise AsmError(f"{where}: {head} needs a lane width (.b .h .n .c)")
        if bits in (4, 2):
            if not spec.get("nn"):
                raise AsmError(f"{where}: {head}: no nibble/crumb form")
            cls = "nn_dotp" if cls == "simd_dotp" else "nn_simd"
        need(2 if unary else 3)
        rd = rd_of(ops[0])
        dests = _nz(rd)
        srcs = _nz(rd_of(ops[1]))
        if not unary:
            r2 = rv_reg(ops[2])
            if r2 is None:
                if _imm(ops[2]) is None:
                    raise AsmError(f"{where}: bad operand {ops[2]!r} in {head}")
                if not (sci or base in ("pv.extract", "pv.extractu", "pv.insert")):
                    raise AsmError(f"{where}: {head} takes a register, not {ops[2]!r}")
            else:
                srcs = srcs + _nz(r2)
        if spec.get("acc"):
            srcs = _nz(rd) + srcs
    elif form == "qnt":
        need(3)
        if bits != 4:
            raise AsmError(f"{where}: {head}: only pv.qnt.n exists")
        rd, rs1, rs2 = rd_of(ops[0]), rd_of(ops[1]), rd_of(ops[2])
        dests, srcs = _nz(rd), _nz(rs1, rs2)
        # four int16 threshold reads around the table pointer (tree walk)
        mem = MemAccess(True, rs2, None, 0, False, False, 2, 4)
    elif form == "mls":
        need(3)
        if not bits:
            raise AsmError(f"{where}: {head} needs a lane width (.h .b .n .c)")
        rd = rd_of(ops[0])
        addr = rv_reg(ops[1].strip("()! "))
        ctl = _imm(ops[2])
        if addr is None or ctl is None or not 0 <= ctl < 32:
            raise AsmError(f"{where}: {head} expects rd, rs1, imm5 (0..31), got {rest!r}")
        a_spr = NN_SPR + (ctl & 1)
        w_spr = NN_SPR + 2 + ((ctl >> 1) & 3)
        dests = _nz(rd)
        srcs = _nz(rd) + (a_spr, w_spr)
        if ctl & 0b11000:  # activation (bit 3) or else weight (bit 4) SPR reloaded
            spr = a_spr if ctl & 0b01000 else w_spr
            mem = MemAccess(True, addr, None, 4, True, True, 4, 1)
            dests = dests + _nz(addr) + (spr,)
            srcs = srcs + _nz(addr)
    if tag is None and mem is not None and mem.base == SP:
        tag = "stack"
    if base in ("li", "la") and dict(annot).get("insns"):
        size = _li_size(dests[0] if dests else 0, _imm(ops[1]), rvc and not forced16)
    elif base.startswith(("p.", "pv.", "lp.")):
        size = 4
    elif forced16:
        size = 2
    elif rvc and spec.get("rvc"):
        size = _rvc_size(base, ops, mem)
    else:
        size = 4
    return Instr(
        text=code,
        mnemonic=base,
        cls=cls,
        cond=cond,
        setflags=False,
        size=size,
        dests=dests,
        srcs=srcs,
        mem=mem,
        tag=tag,
        taken=taken,
        annot=annot,
        esize=bits,
    )


@lru_cache(maxsize=4096)
def parse(
    text: str, where: str = "asm", require_tags: bool = False, rvc: bool = True
) -> tuple[Instr, ...]:
    """Parse a multi-line RISC-V assembly text once (cached by text). With ``require_tags``
    a load/store without a stream tag (other than sp-based: "stack") is an error."""
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        low = line.split("#")[0].strip().lower()
        if low.startswith(".option"):
            if low.split()[-1] == "norvc":
                rvc = False
            elif low.split()[-1] == "rvc":
                rvc = True
            continue
        ins = parse_line(line, f"{where}:{i}", rvc)
        if ins is None:
            continue
        if ins.mem is not None and ins.tag is None and require_tags:
            raise AsmError(f"{where}:{i}: memory access without a stream tag: {line!r}")
        out.append(ins)
    return tuple(out)


def rv_block(text: str, name: str = "", shared: bool = False, rvc: bool = True) -> RVBlock:
    """A schedule block of RISC-V instructions (stream tags required on accesses)."""
    return RVBlock(parse(text, name or "block", True, rvc), name, shared)


def with_tag(ins: Instr, tag: str) -> Instr:
    return replace(ins, tag=tag)


_HWLOOP_FORBIDDEN = frozenset(("branch", "jump", "jump_reg", "fence", "fence_i", "system"))


def hw_loop(
    name: str, count: int, body: list, min_instrs: int = 3, rvc_ok: bool = True, **kw
) -> Loop:
    """A hardware loop (``lp.setup``-driven, zero-overhead loop-back): a Loop whose body
    has no back-edge branch. Checks the CV32E40P constraints (riscv-xpulp.md §3): at least
    ``min_instrs`` instructions, no branch/jump/fence/ecall in the body (an inner
    hardware loop, i.e. a nested Loop, is allowed); with ``rvc_ok=False`` also no 16-bit
    (RVC) instruction, as CV32E40P v2 requires (build such bodies with ``rvc=False``).
    The ``lp.setup`` belongs in the block before the loop, so its cycle is charged once
    per entry. Keyword arguments (addr, regs, moves) go to :class:`Loop`."""
    n = 0
    for it in body:
        if isinstance(it, Loop):
            n += 1
            continue
        for ins in it.instrs:
            if ins.cls in _HWLOOP_FORBIDDEN:
                raise AsmError(
                    f"hardware loop {name!r}: {ins.text!r} is not allowed in the body "
                    "(no branches, jumps, fences or system instructions)"
                )
            if not rvc_ok and ins.size == 2:
                raise AsmError(
                    f"hardware loop {name!r}: compressed instruction {ins.text!r} in the body"
                )
            n += 1
    if n < min_instrs:
        raise AsmError(f"hardware loop {name!r}: body has {n} instructions, needs >= 3")
    return Loop(name, count, body, **kw)
