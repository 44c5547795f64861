"""RV32IMC firmware functions in Unicorn, with XpulpV2 / XpulpNN instructions emulated.

Unicorn runs RV32IMC natively; the PULP custom instructions (emitted by the C kernels
with the assembler's ``.insn``, PULP encodings of riscv-xpulp.md §2 / GVSoC
isa_pulpv2.py) trap as illegal instructions and are emulated in a ``UC_HOOK_INTR``
handler (toolchains.md §4 method A: Unicorn has already advanced the PC by 4, so the
instruction is at pc - 4; every custom encoding is 32-bit). Semantics come from
isa/xpulp.py, the same functions the simulator's kernels are checked against.

Emulated (PULP encodings):

* OP-V ``0x57``: ``pv.{add,sub,avg,avgu,min,minu,max,maxu,srl,sra,sll,or,xor,and,abs}``,
  ``pv.{dotup,dotusp,dotsp,sdotup,sdotusp,sdotsp}``, ``pv.cmp{eq,ne,gt,ge,lt,le}[u]``,
  ``pv.extract[u]``, ``pv.insert``, ``pv.shuffle[2]``, ``pv.pack[hi|lo]`` in .h/.b with
  .sc/.sci, XpulpNN .n/.c (funct3 010/011) and ``pv.qnt.n``;
* ``0x77`` XpulpNN MAC&LOAD ``pv.mlsdot{up,usp,sup,sp}.{h,b,n,c}`` (six SPRs per harness);
* ``0x0B``/``0x2B`` post-increment loads/stores (immediate and register), ``0x03``
  funct3 111 register-offset loads, ``0x23`` funct3 1xx register-offset stores;
* ``0x33`` ALU extensions (p.abs/slet/min/max/ror/ff1/fl1/clb/cnt/ext*/clip*/mac/msu,
  p.extract*/insert*/bset*/bclr*), ``0x5B`` p.addN/subN families, ``0x63`` p.beqimm/bneimm;
* ``0x7B`` hardware loops (lp.starti/endi/count/counti/setup/setupi): the loop ends found by
  a sweep of the executable sections get a code hook that jumps back while the count lasts.

Python handlers cost ~15 us per emulated instruction (correctness runs, not benchmarks).

    h = RiscvHarness(elf, "xpulpnn")
    r = h.call("dot_u8", h.put(a), h.put(b), n)     # a0.. a7, then the stack
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from mcusim.isa import xpulp as X

from .build import target
from .elf import ElfImage
from .harness import RET_MAGIC, FirmwareError, Harness

ABI = (
    "zero ra sp gp tp t0 t1 t2 s0 s1 a0 a1 a2 a3 a4 a5 a6 a7 "
    "s2 s3 s4 s5 s6 s7 s8 s9 s10 s11 t3 t4 t5 t6"
).split()

_ALU = "add sub avg avgu min minu max maxu srl sra sll or xor and abs".split()
_DOT = {0b100000: "dotup", 0b100010: "dotusp", 0b100110: "dotsp"}
_DOT |= {0b101000: "sdotup", 0b101010: "sdotusp", 0b101110: "sdotsp"}
_DOT_SIGNS = {"up": (False, False), "usp": (False, True), "sp": (True, True)}
_CMP = "eq ne gt ge lt le gtu geu ltu leu".split()  # funct6 = 2*i + 1
_UNSIGNED_IMM = {"avgu", "minu", "maxu", "srl", "sll", "dotup", "sdotup", "extract", "extractu"}
_UNSIGNED_IMM |= {"insert", "shuffle", "cmpgtu", "cmpgeu", "cmpltu", "cmpleu"}
_MLS = {0b1110000: "up", 0b1110100: "usp", 0b1101100: "sup", 0b1111100: "sp"}
_LD_W = {0b0000000: ("p.lb", 1, True), 0b0001000: ("p.lh", 2, True)}
_LD_W |= {0b0010000: ("p.lw", 4, True), 0b0100000: ("p.lbu", 1, False)}
_LD_W |= {0b0101000: ("p.lhu", 2, False)}
_LD_F3 = {0: ("p.lb", 1, True), 1: ("p.lh", 2, True), 2: ("p.lw", 4, True)}
_LD_F3 |= {4: ("p.lbu", 1, False), 5: ("p.lhu", 2, False)}
_ST_F3 = {0: ("p.sb", 1), 1: ("p.sh", 2), 2: ("p.sw", 4)}


def _sx(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def _u32(v: int) -> int:
    return int(v) & 0xFFFF_FFFF


class _Unsupported(Exception):
    pass


def decode_custom(word: int) -> tuple[str, tuple]:
    """A custom 32-bit word -> (assembly text as riscv_asm.py parses it, operation tuple).
    Raises _Unsupported for encodings outside the list in the module docstring."""
    op = word & 0x7F
    rd, f3, rs1, rs2 = (word >> 7) & 31, (word >> 12) & 7, (word >> 15) & 31, (word >> 20) & 31
    f7 = word >> 25
    R = ABI
    if op == 0x57:
        f6 = word >> 26
        if f3 in (2, 3):  # XpulpNN nibble (.n) / crumb (.c)
            if f7 == 0b1110000 and f3 == 2:
                return f"pv.qnt.n {R[rd]}, {R[rs1]}, {R[rs2]}", ("qnt", rd, rs1, rs2)
            bits = 2 if f7 & 1 else 4
            w = "c" if bits == 2 else "n"
            sc = ".sc" if f3 == 3 else ""
            bsel = ("sc", rs2) if f3 == 3 else ("vv", rs2)
        else:
            bits = 8 if f3 & 1 else 16
            w = "b" if bits == 8 else "h"
            if f3 in (0, 1):
                sc, bsel = "", ("vv", rs2)
            elif f3 in (4, 5):
                sc, bsel = ".sc", ("sc", rs2)
            else:
                sc, bsel = ".sci", ("imm", ((word >> 25) & 1) | (rs2 << 1))
        if f6 <= 0b011100 and f6 % 2 == 0:
            name = _ALU[f6 >> 1]
        elif f6 in _DOT:
            name = _DOT[f6]
        elif f6 % 2 == 1 and (f6 >> 1) < len(_CMP):
            name = "cmp" + _CMP[f6 >> 1]
        elif f6 == 0b011110 and f3 in (6, 7):
            name = "extract"
        elif f6 == 0b100100 and f3 in (6, 7):
            name = "extractu"
        elif f6 == 0b101100 and f3 in (6, 7):
            name = "insert"
        elif f6 == 0b110000 and f3 in (0, 1, 6):
            name = "shuffle"
        elif f6 == 0b110010 and f3 in (0, 1):
            name = "shuffle2"
        elif f7 == 0b1101000 and f3 == 0:
            name = "pack"
        elif f6 == 0b110110 and f3 == 1:
            name = "packhi"
        elif f6 == 0b111000 and f3 == 1:
            name = "packlo"
        else:
            raise _Unsupported
        if bsel[0] == "imm":
            imm = bsel[1] if name in _UNSIGNED_IMM else _sx(bsel[1], 6)
            bsel = ("imm", imm)
            opnd = str(imm)
        else:
            opnd = R[rs2]
        if name in ("extract", "extractu", "insert"):
            text = f"pv.{name}.{w} {R[rd]}, {R[rs1]}, {bsel[1]}"
        elif name in ("abs",):
            text = f"pv.abs.{w} {R[rd]}, {R[rs1]}"
        else:
            text = f"pv.{name}{sc}.{w} {R[rd]}, {R[rs1]}, {opnd}"
        return text, ("pv", name, bits, rd, rs1, bsel)
    if op == 0x77:
        if f7 not in _MLS or f3 > 3:
            raise _Unsupported
        v = _MLS[f7]
        bits = (16, 8, 4, 2)[f3]
        w = "hbnc"[f3]
        return f"pv.mlsdot{v}.{w} {R[rd]}, {R[rs1]}, {rs2}", ("mls", v, bits, rd, rs1, rs2)
    if op == 0x0B:  # post-increment loads
        if f3 == 7:
            if f7 not in _LD_W:
                raise _Unsupported
            mn, n, sg = _LD_W[f7]
            return f"{mn} {R[rd]}, {R[rs2]}({R[rs1]}!)", ("ld", n, sg, rd, rs1, ("r", rs2), True)
        if f3 not in _LD_F3:
            raise _Unsupported
        mn, n, sg = _LD_F3[f3]
        imm = _sx(word >> 20, 12)
        return f"{mn} {R[rd]}, {imm}({R[rs1]}!)", ("ld", n, sg, rd, rs1, ("i", imm), True)
    if op == 0x03 and f3 == 7:  # register-offset load, no writeback
        if f7 not in _LD_W:
            raise _Unsupported
        mn, n, sg = _LD_W[f7]
        return f"{mn} {R[rd]}, {R[rs2]}({R[rs1]})", ("ld", n, sg, rd, rs1, ("r", rs2), False)
    if op == 0x2B:  # post-increment stores: rs2 = value, rd field = rs3 for register forms
        if f3 in _ST_F3:
            mn, n = _ST_F3[f3]
            imm = _sx((f7 << 5) | rd, 12)
            return f"{mn} {R[rs2]}, {imm}({R[rs1]}!)", ("st", n, rs2, rs1, ("i", imm), True)
        if f3 in (4, 5, 6) and f7 == 0:
            mn, n = _ST_F3[f3 - 4]
            return f"{mn} {R[rs2]}, {R[rd]}({R[rs1]}!)", ("st", n, rs2, rs1, ("r", rd), True)
        raise _Unsupported
    if op == 0x23 and f3 in (4, 5, 6) and f7 == 0:
        mn, n = _ST_F3[f3 - 4]
        return f"{mn} {R[rs2]}, {R[rd]}({R[rs1]})", ("st", n, rs2, rs1, ("r", rd), False)
    if op == 0x33:
        return _decode_alu(word, rd, f3, rs1, rs2, f7)
    if op == 0x5B:
        sub, rnd = f3 in (3, 7), f3 in (6, 7)
        if f3 not in (2, 3, 6, 7):
            raise _Unsupported
        hi2 = f7 >> 5
        if hi2 in (0b00, 0b10):  # immediate shift forms (Is3 = bits 29:25)
            n_imm = f7 & 31
            uns = hi2 == 0b10
            mn = f"p.{'sub' if sub else 'add'}{'u' if uns else ''}{'r' if rnd else ''}n"
            text = f"{mn} {R[rd]}, {R[rs1]}, {R[rs2]}, {n_imm}"
            return text, ("addn", rd, rs1, rs2, n_imm, rnd, uns, sub)
        raise _Unsupported
    if op == 0x63 and f3 in (2, 3):
        imm5 = _sx(rs2, 5)
        off = (
            ((word >> 31) & 1) << 12
            | ((word >> 7) & 1) << 11
            | ((word >> 25) & 0x3F) << 5
            | ((word >> 8) & 0xF) << 1
        )
        off = _sx(off, 13)
        mn = "p.beqimm" if f3 == 2 else "p.bneimm"
        return f"{mn} {R[rs1]}, {imm5}, .Lt", ("bimm", f3 == 2, rs1, imm5, off)
    if op == 0x7B and f3 <= 5:
        L = rd & 1
        u12 = word >> 20
        names = ["lp.starti", "lp.endi", "lp.count", "lp.counti", "lp.setup", "lp.setupi"]
        text = {
            0: f"lp.starti x{L}, .Lstart",
            1: f"lp.endi x{L}, .Lend",
            2: f"lp.count x{L}, {R[rs1]}",
            3: f"lp.counti x{L}, {u12}",
            4: f"lp.setup x{L}, {R[rs1]}, .Lend",
            5: f"lp.setupi x{L}, {u12}, .Lend",
        }[f3]
        return text, ("lp", names[f3], L, rs1, u12)
    raise _Unsupported


def _decode_alu(word, rd, f3, rs1, rs2, f7):
    R = ABI
    if f7 == 0b0000010:
        names = ["p.abs", "p.avgu", "p.slet", "p.sletu", "p.min", "p.minu", "p.max", "p.maxu"]
        mn = names[f3]
        if f3 == 0:
            return f"p.abs {R[rd]}, {R[rs1]}", ("alu", mn, rd, rs1, rs2)
        return f"{mn} {R[rd]}, {R[rs1]}, {R[rs2]}", ("alu", mn, rd, rs1, rs2)
    if f7 == 0b0000100 and f3 == 5:
        return f"p.ror {R[rd]}, {R[rs1]}, {R[rs2]}", ("alu", "p.ror", rd, rs1, rs2)
    if f7 == 0b0001000:
        names = ["p.ff1", "p.fl1", "p.clb", "p.cnt", "p.exths", "p.exthz", "p.extbs", "p.extbz"]
        return f"{names[f3]} {R[rd]}, {R[rs1]}", ("alu", names[f3], rd, rs1, rs2)
    if f7 == 0b0001010:
        if f3 == 1:
            return f"p.clip {R[rd]}, {R[rs1]}, {rs2}", ("alu", "p.clip", rd, rs1, rs2)
        if f3 == 2:
            return f"p.clipu {R[rd]}, {R[rs1]}, {rs2}", ("alu", "p.clipu", rd, rs1, rs2)
        if f3 == 5:
            return f"p.clipr {R[rd]}, {R[rs1]}, {R[rs2]}", ("alu", "p.clipr", rd, rs1, rs2)
        if f3 == 6:
            return f"p.clipur {R[rd]}, {R[rs1]}, {R[rs2]}", ("alu", "p.clipur", rd, rs1, rs2)
    if f7 == 0b0100001 and f3 in (0, 1):
        mn = "p.mac" if f3 == 0 else "p.msu"
        return f"{mn} {R[rd]}, {R[rs1]}, {R[rs2]}", ("alu", mn, rd, rs1, rs2)
    if f7 >> 5 == 0b11 and f3 <= 4:
        is3, is2 = f7 & 31, rs2
        mn = ["p.extract", "p.extractu", "p.insert", "p.bclr", "p.bset"][f3]
        return f"{mn} {R[rd]}, {R[rs1]}, {is3}, {is2}", ("bits", mn, rd, rs1, is3, is2)
    if f7 == 0b1000000 and f3 <= 4:
        mn = ["p.extractr", "p.extractur", "p.insertr", "p.bclrr", "p.bsetr"][f3]
        return f"{mn} {R[rd]}, {R[rs1]}, {R[rs2]}", ("bitsr", mn, rd, rs1, rs2)
    raise _Unsupported


class RiscvHarness(Harness):
    """One RV32IMC core (RI5CY / CV32E40P / XpulpNN) with an ELF loaded."""

    arch = "riscv"

    def __init__(self, elf: str | Path | ElfImage, core: str = "rv32imc", **kw) -> None:
        tgt = target(core)
        if tgt.arch != "riscv":
            raise FirmwareError(f"core {core!r} is not a RISC-V core")
        from unicorn import riscv_const as RC

        self._RC = RC
        self._xregs = [getattr(RC, f"UC_RISCV_REG_X{i}") for i in range(32)]
        self.ret_value_reg, self.pc_reg = self._xregs[10], RC.UC_RISCV_REG_PC
        self.sp_reg = self._xregs[2]
        self.spr = X.new_sprs()  # XpulpNN MAC&LOAD special registers
        self.hwloop = [[0, 0, 0], [0, 0, 0]]  # per loop L: start, end, count
        self.emulated = 0  # custom instructions emulated (all calls)
        self._ops: dict[int, tuple] = {}
        super().__init__(elf, core.lower(), **kw)
        self._hook_loop_ends()

    def _make_uc(self):
        from unicorn import UC_ARCH_RISCV, UC_HOOK_INTR, UC_MODE_RISCV32, Uc

        uc = Uc(UC_ARCH_RISCV, UC_MODE_RISCV32)
        uc.hook_add(UC_HOOK_INTR, self._on_intr)
        return uc

    def x(self, n: int) -> int:
        return self.uc.reg_read(self._xregs[n]) & 0xFFFF_FFFF

    def _setx(self, n: int, v: int) -> None:
        if n:
            self.uc.reg_write(self._xregs[n], _u32(v))

    def _set_args(self, args: list[int], sp: int) -> int:
        stack = args[8:]
        sp -= 4 * len(stack)
        sp &= ~15
        if stack:
            self.write(sp, struct.pack(f"<{len(stack)}I", *stack))
        for i, v in enumerate(args[:8]):
            self._setx(10 + i, v)
        self._setx(2, sp)
        self._setx(1, RET_MAGIC)
        self.hwloop = [[0, 0, 0], [0, 0, 0]]
        return sp

    def _start(self, entry: int, count: int) -> None:
        self.uc.emu_start(entry, RET_MAGIC, count=count)

    # -- custom instructions -------------------------------------------------------------
    def _on_intr(self, uc, intno, user_data) -> None:
        if intno != 2:
            causes = {0: "misaligned fetch", 1: "fetch access fault", 3: "breakpoint"}
            causes |= {4: "misaligned load", 5: "load access fault", 6: "misaligned store"}
            causes |= {7: "store access fault", 8: "ecall", 11: "ecall"}
            self._on_exception(causes.get(intno, f"CPU exception {intno}"))
            return
        pc = (self._pc() - 4) & 0xFFFF_FFFF  # Unicorn already advanced PC by 4
        word = struct.unpack("<I", self.read(pc, 4))[0]
        op = self._ops.get(word)
        if op is None:
            try:
                op = decode_custom(word)[1]
            except _Unsupported:
                self.uc.reg_write(self.pc_reg, pc)
                self._on_exception(f"illegal or unsupported instruction {word:#010x}")
                return
            self._ops[word] = op
        try:
            nxt = self._exec(op, pc)
        except Exception as e:  # unicorn.UcError on a bad emulated access
            self.uc.reg_write(self.pc_reg, pc)
            self._on_exception(f"fault emulating {decode_custom(word)[0]!r} ({e})")
            return
        self.emulated += 1
        self.uc.reg_write(self.pc_reg, nxt)

    def _load(self, addr: int, n: int, signed: bool) -> int:
        addr &= 0xFFFF_FFFF
        if self.region_of(addr) is None:
            self._fault = (f"read of {n} bytes from unmapped memory", addr, self._pc())
            raise FirmwareError("unmapped")
        v = int.from_bytes(self.read(addr, n), "little", signed=signed)
        return v

    def _store(self, addr: int, n: int, v: int) -> None:
        addr &= 0xFFFF_FFFF
        if self.region_of(addr) is None:
            self._fault = (f"write of {n} bytes to unmapped memory", addr, self._pc())
            raise FirmwareError("unmapped")
        self.write(addr, (_u32(v) & ((1 << (8 * n)) - 1)).to_bytes(n, "little"))

    def _exec(self, op: tuple, pc: int) -> int:
        kind = op[0]
        x = self.x
        if kind == "pv":
            _, name, bits, rd, rs1, bsel = op
            a = x(rs1)
            if bsel[0] == "vv":
                b = x(bsel[1])
            elif bsel[0] == "sc":
                b = X.splat(x(bsel[1]), bits)
            else:
                b = X.splat(bsel[1], bits)
            self._setx(rd, self._pv(name, bits, a, b, rd, bsel))
        elif kind == "qnt":
            _, rd, rs1, rs2 = op
            base = x(rs2) - 14  # rs2 points at thr[7]
            thr = np.frombuffer(self.read(base, 30), dtype="<i2").astype(np.int64)
            self._setx(rd, X.pv_qnt_n(x(rs1), thr))
        elif kind == "mls":
            _, v, bits, rd, rs1, ctl = op
            sa, sw = X.MLS_SIGNS[v]
            addr = x(rs1)
            word = self._load(addr, 4, False) if ctl & 24 else 0
            r, inc = X.pv_mlsdot(x(rd), self.spr, ctl, word, bits, sa, sw)
            self._setx(rd, r)
            if inc and rs1 != rd:
                self._setx(rs1, addr + inc)
        elif kind == "ld":
            _, n, sg, rd, rs1, off, post = op
            base = x(rs1)
            o = x(off[1]) if off[0] == "r" else off[1]
            v = self._load(base if post else base + o, n, sg)
            if post:
                self._setx(rs1, base + o)
            self._setx(rd, v)  # rd written last: p.lw a0, 4(a0!) loads into a0
        elif kind == "st":
            _, n, rs2, rs1, off, post = op
            base = x(rs1)
            o = x(off[1]) if off[0] == "r" else off[1]
            self._store(base if post else base + o, n, x(rs2))
            if post:
                self._setx(rs1, base + o)
        elif kind == "alu":
            _, mn, rd, rs1, rs2 = op
            b = rs2 if mn in ("p.clip", "p.clipu") else x(rs2)  # immediate in the rs2 field
            self._setx(rd, _scalar(mn, x(rs1), b, x(rd)))
        elif kind == "bits":
            _, mn, rd, rs1, is3, is2 = op
            f = {"p.extract": X.p_extract, "p.extractu": X.p_extractu}
            f |= {"p.bclr": X.p_bclr, "p.bset": X.p_bset}
            if mn == "p.insert":
                self._setx(rd, X.p_insert(x(rd), x(rs1), is3, is2))
            else:
                self._setx(rd, f[mn](x(rs1), is3, is2))
        elif kind == "bitsr":
            _, mn, rd, rs1, rs2 = op
            b = x(rs2)
            is3, is2 = (b >> 5) & 31, b & 31
            if mn == "p.insertr":
                self._setx(rd, X.p_insert(x(rd), x(rs1), is3, is2))
            else:
                f = {"p.extractr": X.p_extract, "p.extractur": X.p_extractu}
                f |= {"p.bclrr": X.p_bclr, "p.bsetr": X.p_bset}
                self._setx(rd, f[mn](x(rs1), is3, is2))
        elif kind == "addn":
            _, rd, rs1, rs2, n, rnd, uns, sub = op
            self._setx(rd, X.p_addn(x(rs1), x(rs2), n, rnd, uns, sub))
        elif kind == "bimm":
            _, eq, rs1, imm5, off = op
            if (X.s32(x(rs1)) == imm5) == eq:
                return (pc + off) & 0xFFFF_FFFF
        elif kind == "lp":
            _, name, L, rs1, u12 = op
            lp = self.hwloop[L]
            rs1_field = (struct.unpack("<I", self.read(pc, 4))[0] >> 15) & 31
            if name == "lp.starti":
                lp[0] = pc + (u12 << 1)
            elif name == "lp.endi":
                lp[1] = pc + (u12 << 1)
            elif name == "lp.count":
                lp[2] = x(rs1)
            elif name == "lp.counti":
                lp[2] = u12
            elif name == "lp.setup":
                lp[:] = [pc + 4, pc + (u12 << 1), x(rs1)]
            else:  # lp.setupi: count = uimm12, end offset in the rs1 field
                lp[:] = [pc + 4, pc + (rs1_field << 1), u12]
        return pc + 4

    def _pv(self, name: str, bits: int, a: int, b: int, rd: int, bsel) -> int:
        if name in _ALU:
            return X.pv_alu(X.ALU_OPS[name], a, b, bits)
        if name.startswith(("sdot", "dot")):
            sg = _DOT_SIGNS[name.removeprefix("s").removeprefix("dot")]
            acc = self.x(rd) if name.startswith("sdot") else 0
            return X.s32(acc + X.dot(a, b, bits, sg[0], sg[1]))
        if name.startswith("cmp"):
            r = 0
            for i in range(32 // bits):
                uns = name.endswith("u")
                la, lb = X.lane(a, i, bits, not uns), X.lane(b, i, bits, not uns)
                c = name[3:-1] if uns else name[3:]
                ok = {"eq": la == lb, "ne": la != lb, "gt": la > lb, "ge": la >= lb}.get(c)
                if ok is None:
                    ok = la < lb if c == "lt" else la <= lb
                if ok:
                    r |= ((1 << bits) - 1) << (i * bits)
            return r
        imm = bsel[1]
        if name == "extract":
            return X.pv_extract(a, imm % (32 // bits), bits, True)
        if name == "extractu":
            return X.pv_extract(a, imm % (32 // bits), bits, False)
        if name == "insert":
            return X.pv_insert(self.x(rd), a, imm % (32 // bits), bits)
        if name == "shuffle":
            return X.pv_shuffle(a, b, bits)
        if name == "shuffle2":
            return X.pv_shuffle2(self.x(rd), a, b, bits)
        if name == "pack":
            return X.pv_pack_h(a, b)
        if name == "packhi":
            return X.pv_packhi_b(self.x(rd), a, b)
        return X.pv_packlo_b(self.x(rd), a, b)

    # -- hardware loops ------------------------------------------------------------------
    def _hook_loop_ends(self) -> None:
        """Code hooks at every hardware-loop end address a sweep of the code finds."""
        from unicorn import UC_HOOK_CODE

        ends = set()
        for lo, hi in self.image.exec_ranges:
            code = self.read(lo, hi - lo)
            off = 0
            while off + 2 <= len(code):
                half = code[off] | (code[off + 1] << 8)
                if half & 3 != 3:
                    off += 2
                    continue
                if off + 4 > len(code):
                    break
                w = struct.unpack_from("<I", code, off)[0]
                if w & 0x7F == 0x7B and ((w >> 12) & 7) in (1, 4, 5):
                    f3 = (w >> 12) & 7
                    field = (w >> 15) & 31 if f3 == 5 else w >> 20
                    ends.add(lo + off + (field << 1))
                off += 4
        for e in sorted(ends):
            self.uc.hook_add(UC_HOOK_CODE, self._on_loop_end, begin=e, end=e)

    def _on_loop_end(self, uc, address, size, user_data) -> None:
        for lp in self.hwloop:
            if lp[1] == address and lp[2] > 0:
                lp[2] -= 1
                if lp[2] > 0:
                    uc.reg_write(self.pc_reg, lp[0])
                    if self._tracer is not None:
                        self._tracer.redirect(address)  # the TB stops here this time
                return


def _scalar(mn: str, a: int, b: int, d: int) -> int:
    sa, sb = X.s32(a), X.s32(b)
    if mn == "p.abs":
        return abs(sa)
    if mn == "p.avgu":
        return (a + b) >> 1
    if mn == "p.slet":
        return int(sa <= sb)
    if mn == "p.sletu":
        return int(a <= b)
    if mn == "p.min":
        return min(sa, sb)
    if mn == "p.minu":
        return min(a, b)
    if mn == "p.max":
        return max(sa, sb)
    if mn == "p.maxu":
        return max(a, b)
    if mn == "p.ror":
        s = b & 31
        return ((a >> s) | (a << (32 - s))) & 0xFFFF_FFFF
    if mn in ("p.ff1", "p.fl1", "p.clb", "p.cnt"):
        return {"p.ff1": X.p_ff1, "p.fl1": X.p_fl1, "p.clb": X.p_clb, "p.cnt": X.p_cnt}[mn](a)
    if mn == "p.exths":
        return _sx(a, 16)
    if mn == "p.exthz":
        return a & 0xFFFF
    if mn == "p.extbs":
        return _sx(a, 8)
    if mn == "p.extbz":
        return a & 0xFF
    if mn == "p.clip":
        return X.p_clip(sa, b)
    if mn == "p.clipu":
        return X.p_clipu(sa, b)
    if mn == "p.clipr":
        return X.p_clipr(sa, sb)
    if mn == "p.clipur":
        return X.p_clipur(sa, sb)
    if mn == "p.mac":
        return X.p_mac(d, a, b)
    return X.p_msu(d, a, b)


# ----------------------------------------------------------------------- trace decoding
_CS_RV = None


def decode_riscv(code: bytes, addr: int):
    """RV32IMC (+ custom words) bytes -> (Instr records, unmodeled mnemonic or '' each)."""
    from dataclasses import replace

    from mcusim.isa.riscv_asm import parse_line

    global _CS_RV
    if _CS_RV is None:
        from capstone import CS_ARCH_RISCV, CS_MODE_RISCV32, CS_MODE_RISCVC, Cs

        _CS_RV = Cs(CS_ARCH_RISCV, CS_MODE_RISCV32 | CS_MODE_RISCVC)
    out, unk = [], []
    off = 0
    nop = parse_line("nop", "firmware")
    while off < len(code):
        for _a, sz, mn, ops in _CS_RV.disasm_lite(code[off:], addr + off):
            text = f"{mn} {ops}".strip()
            try:
                ins = parse_line(_rv_text(mn, ops), "firmware")
            except Exception:  # noqa: BLE001 - AsmError or an operand form we do not map
                ins = None
            if ins is None:
                out.append(replace(nop, text=text, size=sz))
                unk.append(mn)
            else:
                out.append(replace(ins, size=sz))
                unk.append("")
            off += sz
        if off + 4 <= len(code):
            w = struct.unpack_from("<I", code, off)[0]
            try:
                text = decode_custom(w)[0]
                ins = parse_line(text, "firmware")
                out.append(replace(ins, size=4))
                unk.append("")
            except Exception:  # noqa: BLE001
                out.append(replace(nop, text=f".word {w:#x}", size=4))
                unk.append(f".word {w:#010x}")
            off += 4
        elif off < len(code):
            out.append(replace(nop, text=".half", size=2))
            unk.append(".half")
            off += 2
    return tuple(out), tuple(unk)


def _rv_text(mn: str, ops: str) -> str:
    """capstone's RISC-V text -> riscv_asm.py's (branch targets become labels)."""
    parts = [p.strip() for p in ops.split(",")] if ops else []
    base = mn[2:] if mn.startswith("c.") else mn
    if base.startswith("b") and parts and base not in ("bset", "bclr"):
        parts[-1] = ".Lt"
    elif base in ("j", "jal") and parts:
        parts[-1] = ".Lt"
    return f"{mn} {', '.join(parts)}".strip()
