"""Parse a Thumb-2 (Armv7E-M) assembly subset into frozen :class:`Instr` records.

Schedules describe the loops a compiled kernel executes as text, one instruction a line::

    ldr   r3, [r1], #4      {weights}     ; trailing {tag} = stream the access touches
    smlad r8, r3, r4, r8
    bne   .Linner

``;`` and ``@`` start comments. Trailing brace groups whose content is a stream tag or a
``key=value`` annotation are annotations (``{taken}`` marks a taken forward branch,
``{div=7}`` gives an SDIV/UDIV its cycle count); a brace group holding registers is a
register list. Labels (``name:``) are allowed and ignored. Parsing is cached: a given text
is parsed once per process.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources

from mcusim.errors import UserError

# "qparams": per-channel shifts (and thresholds); "qmult": per-channel multipliers, their
# own int32 array as TFLite Micro keeps it (a separate address stream)
STREAM_TAGS = (
    "input", "input2", "output", "weights", "bias", "const", "scratch", "stack", "qparams",
    "qmult",
)  # fmt: skip
CONDITIONS = ("eq ne cs hs cc lo mi pl vs vc hi ls ge lt gt le al").split()

_REG_ALIASES = {"sp": 13, "lr": 14, "pc": 15, "ip": 12, "fp": 11, "sl": 10, "sb": 9}
SP, LR, PC = 13, 14, 15
# MVE register numbers in Instr.dests/srcs: Q0-Q7 are 32-39, the predicate register VPR
# (P0) is 40; general registers keep 0-15.
QBASE, VPR = 32, 40


class AsmError(UserError):
    """A schedule's assembly text is malformed (a bug in a schedule, reported clearly)."""


@dataclass(frozen=True, slots=True)
class MemAccess:
    """The memory side of a load/store: address registers and what moves."""

    is_load: bool
    base: int
    offset_reg: int | None  # register offset, if any
    imm: int | None  # immediate offset (None for register offset)
    writeback: bool  # pre-indexed with ! or post-indexed
    post: bool
    elem_bytes: int  # bytes per transferred register
    nregs: int  # registers transferred (1 for LDR/STR, 2 for LDRD/STRD, N for LDM/STM)

    @property
    def nbytes(self) -> int:
        return self.elem_bytes * self.nregs

    @property
    def literal(self) -> bool:
        return self.base == PC

    @property
    def addr_regs(self) -> tuple[int, ...]:
        return (self.base,) if self.offset_reg is None else (self.base, self.offset_reg)


@dataclass(frozen=True, slots=True)
class Instr:
    """One decoded instruction: what a timing model needs, nothing more."""

    text: str
    mnemonic: str  # base mnemonic, e.g. "ldrsb", "smlad", "b", "it"
    cls: str  # instruction class from armv7em.toml
    cond: str | None
    setflags: bool
    size: int  # encoding size in bytes: 2 (16-bit) or 4 (32-bit)
    dests: tuple[int, ...]
    srcs: tuple[int, ...]
    mem: MemAccess | None = None
    tag: str | None = None
    taken: bool | None = None  # branches: None = default (conditional not taken)
    it_len: int = 0  # IT / VPT / VPST: number of instructions in the block
    annot: tuple[tuple[str, int], ...] = field(default=())
    pred: str | None = None  # MVE: "t"/"e" when executed inside a VPT block
    esize: int = 0  # MVE: element size in bits from the data type suffix (.s8 -> 8)

    @property
    def writes_pc(self) -> bool:
        return PC in self.dests

    @property
    def is_mve(self) -> bool:
        """True for an MVE (vector) instruction: its class names an EPU pipe group."""
        return self.cls.startswith("mve_")

    def annotation(self, key: str, default: int | None = None) -> int | None:
        for k, v in self.annot:
            if k == key:
                return v
        return default


@lru_cache(maxsize=1)
def isa_table() -> dict[str, dict]:
    """The mnemonic table of isa/armv7em.toml."""
    text = resources.files("mcusim.isa").joinpath("armv7em.toml").read_text()
    return tomllib.loads(text)["mnemonics"]


# Mnemonics whose two-operand form does not read Rd.
_UNARY = frozenset(
    "mov mvn movw neg clz rbit rev rev16 revsh sxtb sxth uxtb uxth sxtb16 uxtb16 rrx "
    "ssat usat ssat16 usat16".split()
)
# Mnemonics that read Rd even in three-operand form (partial writes).
_READS_RD = frozenset(("movt", "bfi", "bfc"))
_SHIFTS = ("lsl", "lsr", "asr", "ror", "rrx")


def _reg(tok: str) -> int | None:
    t = tok.strip().lower().rstrip("!")
    if t in _REG_ALIASES:
        return _REG_ALIASES[t]
    if len(t) >= 2 and t[0] == "r" and t[1:].isdigit():
        n = int(t[1:])
        if n <= 15:
            return n
    return None


def _imm(tok: str) -> int | None:
    t = tok.strip()
    if t.startswith("#"):
        t = t[1:]
    try:
        return int(t, 0)
    except ValueError:
        return None


def _split_operands(s: str) -> list[str]:
    out, depth, cur = [], 0, []
    for ch in s:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


def _reglist(tok: str, where: str) -> tuple[int, ...]:
    body = tok.strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise AsmError(f"{where}: expected a register list, got {tok!r}")
    regs: list[int] = []
    for part in body[1:-1].split(","):
        part = part.strip()
        if "-" in part:
            a, b = (_reg(x) for x in part.split("-"))
            if a is None or b is None:
                raise AsmError(f"{where}: bad register range {part!r}")
            regs.extend(range(a, b + 1))
        else:
            r = _reg(part)
            if r is None:
                raise AsmError(f"{where}: bad register {part!r}")
            regs.append(r)
    return tuple(regs)


def _split_mnemonic(tok: str, where: str) -> tuple[str, str | None, bool, str | None]:
    """-> (base, cond, setflags, width) for tokens like 'addseq', 'bne', 'ldrsb.w', 'ite'."""
    tok = tok.lower()
    width = None
    if "." in tok:  # .w/.n width, or FPU data types (vcvt.f32.s32)
        tok, *suffixes = tok.split(".")
        width = next((x for x in suffixes if x in ("w", "n")), None)
    if re.fullmatch(r"it[te]{0,3}", tok):
        return "it", None, False, width
    table = isa_table()
    for n in range(len(tok), 0, -1):
        base, rest = tok[:n], tok[n:]
        if base not in table:
            continue
        if rest == "":
            return base, None, False, width
        s = False
        if rest.startswith("s") and table[base]["form"] in ("dp", "acc", "long", "cmp", "fp"):
            # UAL puts S before the condition: addseq; a lone "s" is the S suffix.
            if rest == "s" or rest[1:] in CONDITIONS:
                s, rest = True, rest[1:]
        if rest == "":
            return base, None, s, width
        if rest in CONDITIONS:
            return base, (None if rest == "al" else rest), s, width
    raise AsmError(f"{where}: unknown mnemonic {tok!r}")


def _parse_mem(tok_rest: list[str], is_load: bool, elem: int, nregs: int, where: str):
    """Parse '[rn, #imm]!', '[rn, rm, lsl #2]', '[rn], #imm', '=sym' / label (literal)."""
    first = tok_rest[0].strip()
    if first.startswith("="):  # ldr rX, =const -> literal pool load
        return MemAccess(is_load, PC, None, 0, False, False, elem, nregs)
    if not first.startswith("["):
        # "ldr r0, .Lconst" (PC-relative label)
        return MemAccess(is_load, PC, None, 0, False, False, elem, nregs)
    wb = first.endswith("!")
    inner = first.rstrip("!")
    if not inner.endswith("]"):
        raise AsmError(f"{where}: bad memory operand {first!r}")
    parts = [p.strip() for p in inner[1:-1].split(",")]
    base = _reg(parts[0])
    if base is None:
        raise AsmError(f"{where}: bad base register in {first!r}")
    off_reg, imm = None, 0
    if len(parts) >= 2:
        r = _reg(parts[1])
        if r is not None:
            off_reg, imm = r, None
        else:
            imm = _imm(parts[1])
            if imm is None:
                raise AsmError(f"{where}: bad offset in {first!r}")
    post = False
    if len(tok_rest) > 1:  # post-indexed: [rn], #imm  or [rn], rm
        post, wb = True, True
        r = _reg(tok_rest[1])
        if r is not None:
            off_reg, imm = r, None
        else:
            imm = _imm(tok_rest[1])
    return MemAccess(is_load, base, off_reg, imm, wb, post, elem, nregs)


def _annotations(line: str, where: str) -> tuple[str, str | None, bool | None, tuple]:
    """Strip trailing {tag}/{key=value} groups -> (rest, tag, taken, annotations)."""
    tag, taken, annot = None, None, []
    while True:
        m = re.search(r"\{\s*([A-Za-z_][\w]*)\s*(?:=\s*(-?\d+))?\s*\}\s*$", line)
        if not m or _reg(m.group(1)) is not None:
            break
        key, val = m.group(1).lower(), m.group(2)
        if val is not None:
            annot.append((key, int(val)))
        elif key in STREAM_TAGS:
            tag = key
        elif key in ("taken", "nottaken"):
            taken = key == "taken"
        else:
            raise AsmError(f"{where}: unknown annotation {{{key}}}")
        line = line[: m.start()].rstrip()
    return line, tag, taken, tuple(annot)


def _is_low(regs) -> bool:
    return all(r <= 7 for r in regs)


def _encoding_size(base, width, setflags, cond, ops, dests, srcs, mem, spec) -> int:
    """A simplified Thumb-2 encoder choice: 2 if a 16-bit form fits, else 4 bytes."""
    if width == "w":
        return 4
    if width == "n":
        return 2
    if not spec.get("t16", False):
        return 4
    form = spec["form"]
    in_it = cond is not None
    if form in ("b", "bx", "cbz", "it", "none"):
        return 2
    if form in ("push", "pop"):
        extra = LR if form == "push" else PC
        return 2 if all(r <= 7 or r == extra for r in dests + srcs if r != SP) else 4
    if form in ("ldm", "stm"):
        return 2 if (mem.writeback or form == "ldm") and _is_low(dests + srcs) else 4
    if form in ("ld", "st"):
        rt = dests if form == "ld" else srcs[:1]
        if mem.literal:
            return 2 if _is_low(rt) else 4
        if mem.writeback or base in ("ldrex",):
            return 4
        if mem.offset_reg is not None:
            return 2 if _is_low(rt + mem.addr_regs) and "lsl" not in " ".join(ops) else 4
        if base in ("ldrsb", "ldrsh"):
            return 4
        imm = mem.imm or 0
        if mem.base == SP and spec.get("bytes") == 4:
            return 2 if _is_low(rt) and 0 <= imm <= 1020 and imm % 4 == 0 else 4
        lim = {4: 124, 2: 62, 1: 31}[spec.get("bytes", 4)]
        ok = 0 <= imm <= lim and imm % spec.get("bytes", 4) == 0
        return 2 if ok and _is_low(rt + (mem.base,)) else 4
    # data processing
    shifted = any(o.split()[0].lower() in _SHIFTS for o in ops[1:] if " " in o.strip())
    if shifted:
        return 4
    imms = [_imm(o) for o in ops if o.strip().startswith("#")]
    regs = dests + srcs
    if base == "mov" and not imms and not setflags:
        return 2  # MOV Rd, Rm (any registers)
    if base == "add" and not imms and len(ops) == 2 and not setflags:
        return 2  # ADD Rdn, Rm (high registers allowed)
    if base == "cmp" and not imms:
        return 2
    if not _is_low(regs):
        return 4
    # 16-bit ALU forms set flags outside IT blocks and do not inside them.
    needs_s = base not in (
        "cmp",
        "cmn",
        "tst",
        "rev",
        "rev16",
        "revsh",
        "sxtb",
        "sxth",
        "uxtb",
        "uxth",
    )
    if needs_s and setflags == in_it:
        return 4
    if imms:
        v = imms[0]
        if base in ("mov", "cmp"):
            return 2 if 0 <= v <= 255 else 4
        if base in ("add", "sub"):
            if len(ops) == 2 or (len(ops) == 3 and ops[0].lower() == ops[1].lower()):
                return 2 if 0 <= v <= 255 else 4
            return 2 if 0 <= v <= 7 else 4
        if base in ("lsl", "lsr", "asr"):
            return 2 if 0 <= v <= 31 else 4
        if base == "rsb":
            return 2 if v == 0 else 4
        return 4
    if base in ("add", "sub"):
        return 2
    if base == "mul":
        return 2 if len(ops) == 2 or ops[0].lower() in (ops[1].lower(), ops[2].lower()) else 4
    # two-operand logical / shift-by-register forms need Rd == Rn
    if len(ops) == 2 or (len(ops) == 3 and ops[0].lower() == ops[1].lower()):
        return 2
    return 4


def parse_line(line: str, where: str = "asm") -> Instr | None:
    """Parse one line; None for blank, comment-only or label-only lines."""
    code = re.split(r"[;@]", line, maxsplit=1)[0].strip()
    if not code:
        return None
    code = re.sub(r"^[.\w$]+:\s*", "", code)  # leading label
    if not code:
        return None
    code, tag, taken, annot = _annotations(code, where)
    head, _, rest = code.partition(" ")
    if _QP_OPERAND.search(rest):
        return _parse_v81m(code, head, rest, tag, annot, where, taken)
    try:
        base, cond, setflags, width = _split_mnemonic(head, where)
    except AsmError:
        if _v81m_base(head.lower().split(".")[0]) is None:
            raise
        return _parse_v81m(code, head, rest, tag, annot, where, taken)
    spec = isa_table()[base]
    form = spec["form"]
    ops = _split_operands(rest.strip()) if rest.strip() else []
    dests: tuple[int, ...] = ()
    srcs: tuple[int, ...] = ()
    mem = None
    it_len = 0

    def regs_of(tokens):
        out = []
        for t in tokens:
            for w in t.replace("#", " #").split():
                r = _reg(w.strip("[]{}!"))
                if r is not None:
                    out.append(r)
        return tuple(out)

    if form in ("dp", "acc"):
        if not ops:
            raise AsmError(f"{where}: {head} needs operands")
        rd = _reg(ops[0])
        if rd is None:
            raise AsmError(f"{where}: bad destination {ops[0]!r}")
        dests = (rd,)
        srcs = regs_of(ops[1:])
        if (len(ops) == 2 and base not in _UNARY) or base in _READS_RD:
            srcs = (rd,) + srcs
    elif form == "long":
        dests = regs_of(ops[:2])
        srcs = regs_of(ops[2:]) + (dests if spec.get("accumulate") else ())
    elif form == "cmp":
        srcs = regs_of(ops)
    elif form in ("ld", "ldd"):
        nt = 1 if form == "ld" else 2
        dests = regs_of(ops[:nt])
        mem = _parse_mem(ops[nt:], True, spec["bytes"], nt, where)
        srcs = mem.addr_regs if not mem.literal else ()
        if mem.writeback:
            dests = dests + (mem.base,)
    elif form in ("st", "std"):
        nt = 1 if form == "st" else 2
        srcs = regs_of(ops[:nt])
        mem = _parse_mem(ops[nt:], False, spec["bytes"], nt, where)
        srcs = srcs + mem.addr_regs
        if mem.writeback:
            dests = (mem.base,)
    elif form in ("ldm", "stm"):
        wb = ops[0].strip().endswith("!")
        rn = _reg(ops[0])
        lst = _reglist(",".join(ops[1:]), where)
        mem = MemAccess(form == "ldm", rn, None, 0, wb, False, 4, len(lst))
        if form == "ldm":
            dests, srcs = lst + ((rn,) if wb else ()), (rn,)
        else:
            dests, srcs = ((rn,) if wb else ()), lst + (rn,)
    elif form in ("push", "pop"):
        lst = _reglist(",".join(ops), where)
        mem = MemAccess(form == "pop", SP, None, 0, True, False, 4, len(lst))
        if form == "pop":
            dests, srcs = lst + (SP,), (SP,)
        else:
            dests, srcs = (SP,), lst + (SP,)
    elif form == "b":
        if base == "bl":
            dests = (LR,)
        dests = dests + (PC,)
    elif form == "bx":
        srcs = regs_of(ops)
        dests = (PC,) if base == "bx" else (PC, LR)
    elif form == "cbz":
        srcs = regs_of(ops[:1])
        dests = (PC,)
    elif form == "tbb":
        mem = _parse_mem(ops, True, 1 if base == "tbb" else 2, 1, where)
        srcs = mem.addr_regs
        dests = (PC,)
    elif form == "fp":
        dests = regs_of(ops[:1])  # core registers only (vmov r0, s0); s/d registers untracked
        srcs = regs_of(ops[1:])
    elif form == "it":
        it_len = len(head) - 1 if head.lower().startswith("it") else 1
    size = _encoding_size(base, width, setflags, cond, ops, dests, srcs, mem, spec)
    return Instr(
        text=code,
        mnemonic=base,
        cls=spec["class"],
        cond=cond,
        setflags=setflags,
        size=size,
        dests=dests,
        srcs=srcs,
        mem=mem,
        tag=tag,
        taken=taken,
        it_len=it_len,
        annot=annot,
    )


@lru_cache(maxsize=4096)
def parse(text: str, where: str = "asm", require_tags: bool = False) -> tuple[Instr, ...]:
    """Parse a multi-line assembly text once; cached by text. SP-based accesses default to
    the "stack" stream and literal loads to "const"; with ``require_tags`` any other
    untagged load/store is an error (schedules must say which buffer they touch)."""
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        ins = parse_line(line, f"{where}:{i}")
        if ins is not None:
            if ins.mem is not None and ins.tag is None:
                if ins.mem.base == SP:
                    ins = _with_tag(ins, "stack")
                elif ins.mem.literal:
                    ins = _with_tag(ins, "const")
                elif require_tags:
                    raise AsmError(f"{where}:{i}: memory access without a stream tag: {line!r}")
            out.append(ins)
    return tuple(out)


def _with_tag(ins: Instr, tag: str) -> Instr:
    return replace(ins, tag=tag)


# ----------------------------------------------------------------------------------------
# Armv8.1-M: MVE (Helium), low-overhead loops and conditional selects (isa/armv81m_mve.toml).
# A line comes here only when its mnemonic is unknown to the Armv7E-M table or when it
# names a Q register or P0, so every Armv7E-M line parses exactly as before.

_QP_OPERAND = re.compile(r"(?<![\w.])(q[0-7]|p0)(?![\w])", re.IGNORECASE)
_DTYPE = re.compile(r"([suifp]?)(8|16|32|64)")
# two-operand forms that shift the destination in place (Qda, Rm)
_SHIFT_IN_PLACE = frozenset(("vshl", "vrshl", "vqshl", "vqrshl"))


@lru_cache(maxsize=1)
def mve_table() -> dict[str, dict]:
    """The mnemonic table of isa/armv81m_mve.toml."""
    text = resources.files("mcusim.isa").joinpath("armv81m_mve.toml").read_text()
    return tomllib.loads(text)["mnemonics"]


def _v81m_base(tok: str) -> tuple[str, str | None, int] | None:
    """'vldrbt' -> ('vldrb', 't', 0); 'vpstt' -> ('vpst', None, 2); None when unknown."""
    table = mve_table()
    if tok in table:
        return tok, None, 1 if tok in ("vpt", "vpst") else 0
    m = re.fullmatch(r"(vpt|vpst)([te]{1,3})", tok)
    if m:
        return m.group(1), None, 1 + len(m.group(2))
    if tok[-1:] in ("t", "e") and table.get(tok[:-1], {}).get("pred"):
        return tok[:-1], tok[-1], 0
    return None


def _mreg(tok: str) -> int | None:
    t = tok.strip().lower().strip("[]{}!")
    t = t.split("[")[0]  # q0[2] -> q0
    if len(t) == 2 and t[0] == "q" and t[1] in "01234567":
        return QBASE + int(t[1])
    if t == "p0":
        return VPR
    return _reg(t)


def _mregs(tokens) -> tuple[int, ...]:
    out = []
    for t in tokens:
        for w in t.replace("#", " #").replace(",", " ").split():
            r = _mreg(w)
            if r is not None:
                out.append(r)
    return tuple(out)


def _vmem(ops: list[str], is_load: bool, mem_bytes: int, lanes: int, where: str):
    """Vector memory operand -> (MemAccess, gather). Contiguous accesses are one access of
    lanes * mem_bytes; gathers/scatters are one access per lane."""
    first = ops[0].strip()
    if not first.startswith("["):
        raise AsmError(f"{where}: bad vector memory operand {first!r}")
    wb = first.endswith("!")
    inner = first.rstrip("!")
    if not inner.endswith("]"):
        raise AsmError(f"{where}: bad vector memory operand {first!r}")
    parts = [p.strip() for p in inner[1:-1].split(",")]
    base = _mreg(parts[0])
    if base is None:
        raise AsmError(f"{where}: bad base register in {first!r}")
    off_reg, imm = None, 0
    if len(parts) >= 2:
        r = _mreg(parts[1])
        if r is not None:
            off_reg, imm = r, None
        else:
            imm = _imm(parts[1])
            if imm is None:
                raise AsmError(f"{where}: bad offset in {first!r}")
    post = False
    if len(ops) > 1:
        post, wb = True, True
        imm = _imm(ops[1])
    gather = base >= QBASE or (off_reg is not None and off_reg >= QBASE)
    if gather:
        return MemAccess(is_load, base, off_reg, imm, wb, post, mem_bytes, lanes), True
    return MemAccess(is_load, base, off_reg, imm, wb, post, mem_bytes * lanes, 1), False


def _parse_v81m(code: str, head: str, rest: str, tag, annot, where: str, taken=None) -> Instr:
    """Parse one Armv8.1-M line (MVE, LOB, CSEL family)."""
    tok = head.lower()
    name, *suffixes = tok.split(".")
    found = _v81m_base(name)
    if found is None:
        raise AsmError(f"{where}: unknown mnemonic {tok!r}")
    base, pred, blk = found
    spec = mve_table()[base]
    form = spec["form"]
    esize, fp = 0, False
    for sfx in suffixes:
        m = _DTYPE.fullmatch(sfx)
        if m:
            esize, fp = int(m.group(2)), m.group(1) == "f"
            break
    cls = spec["class"]
    if fp and "fclass" in spec:
        cls = spec["fclass"]
    if spec.get("by_size"):
        cls = f"{cls}{esize or 8}"
    ops = _split_operands(rest.strip()) if rest.strip() else []
    dests: tuple[int, ...] = ()
    srcs: tuple[int, ...] = ()
    mem = None
    vpr_in = (VPR,) if (pred or spec.get("reads_vpr")) else ()
    ann = dict(annot)
    if form in ("vld", "vst"):
        mb = spec["bytes"]
        lanes = 128 // (esize or 8 * mb)
        active = ann.get("lanes", lanes)
        if not 0 <= active <= lanes:
            raise AsmError(f"{where}: {{lanes={active}}} outside 0..{lanes}")
        mem, gather = _vmem(ops[1:], form == "vld", mb, active, where)
        q = _mregs(ops[:1])
        if form == "vld":
            cls = "mve_gather" if gather else cls
            dests = q + ((mem.base,) if mem.writeback else ())
            srcs = mem.addr_regs + vpr_in
        else:
            cls = "mve_scatter" if gather else cls
            srcs = q + mem.addr_regs + vpr_in
            dests = (mem.base,) if mem.writeback else ()
    elif form in ("vldn", "vstn"):
        lst = _mregs([ops[0]])
        mem, _ = _vmem(ops[1:], form == "vldn", spec["bytes"], 1, where)
        if form == "vldn":
            dests = lst + ((mem.base,) if mem.writeback else ())
            srcs = (mem.base,)
        else:
            srcs = lst + (mem.base,)
            dests = (mem.base,) if mem.writeback else ()
    elif form == "vdp":
        if not ops:
            raise AsmError(f"{where}: {head} needs operands")
        d = _mregs(ops[:1])
        dests = d
        srcs = _mregs(ops[1:])
        reads_d = spec.get("accumulate") or pred is not None
        if base in _SHIFT_IN_PLACE and len(ops) == 2 and (_mreg(ops[1]) or 0) < QBASE:
            reads_d = True
        if reads_d:
            srcs = d + srcs
        srcs = srcs + vpr_in
    elif form == "vdav":
        regs = _mregs(ops)
        dests = tuple(r for r in regs if r < QBASE)
        srcs = tuple(r for r in regs if r >= QBASE)
        if spec.get("accumulate"):
            srcs = dests + srcs
        srcs = srcs + vpr_in
    elif form in ("vcmp", "vpt"):
        srcs = _mregs(ops[1:]) + vpr_in
        dests = (VPR,)
    elif form == "vctp":
        srcs = _mregs(ops) + vpr_in
        dests = (VPR,)
    elif form == "vpst":
        srcs = (VPR,)
    elif form == "vmov":
        regs = _mregs(ops)
        lane_to = "[" in ops[0] if ops else False
        lane_from = not lane_to and any("[" in o for o in ops)
        if lane_to:
            cls = "mve_lane_to"
            dests = tuple(r for r in _mregs([o for o in ops if "[" in o]))[:1]
            srcs = dests + tuple(r for r in regs if r < QBASE)
        elif lane_from:
            cls = "mve_lane_from"
            dests = tuple(r for r in regs if r < QBASE)
            srcs = tuple(r for r in regs if r >= QBASE)[:1]
        else:
            if ops and ops[-1].strip().startswith("#"):
                cls = "mve_movimm"
            dests, srcs = regs[:1], regs[1:]
        srcs = srcs + vpr_in
    elif form == "vpr":
        dests, srcs = _mregs(ops[:1]), _mregs(ops[1:])
    elif form == "vpushpop":
        nums = [int(x) for x in re.findall(r"\bd(\d+)\b", rest.lower())]
        nd = nums[-1] - nums[0] + 1 if ("-" in rest and len(nums) == 2) else len(nums)
        mem = MemAccess(base in ("vpop", "vldm"), SP, None, 0, True, False, 8, nd)
        dests, srcs = (SP,), (SP,)
    elif form == "dls":
        dests, srcs = _mregs(ops[:1]), _mregs(ops[1:2])
    elif form == "le":
        dests = srcs = (LR,)
    elif form == "dp":
        dests = _mregs(ops[:1])
        srcs = _mregs(ops[1:])
        if base in ("asrl", "lsll", "lsrl", "sqrshrl"):
            dests = _mregs(ops[:2])
            srcs = dests + _mregs(ops[2:])
    return Instr(
        text=code,
        mnemonic=base,
        cls=cls,
        cond=None,
        setflags=False,
        size=4,
        dests=dests,
        srcs=srcs,
        mem=mem,
        tag=tag,
        taken=taken,  # LE/LETP {nottaken}: the last iteration (falls through)
        it_len=blk,
        annot=annot,
        pred=pred,
        esize=esize,
    )
