"""Read what the harnesses need from an ELF: loadable segments, symbols, code ranges.

img = load_elf("k.elf")
img.segments            # [(vaddr, bytes padded with zeros to p_memsz, flags)]
img.symbol("dot_s8")    # address (Thumb bit kept as the symbol table has it)
img.nearest(0x1a2)      # "dot_s8+0x12" for error messages
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from mcusim.errors import UserError


class ElfError(UserError):
    """An ELF cannot be used by the harness (missing, not 32-bit, missing symbol)."""


@dataclass(frozen=True)
class Segment:
    vaddr: int
    data: bytes  # p_filesz bytes + zeros up to p_memsz (.bss cleared)
    executable: bool

    @property
    def end(self) -> int:
        return self.vaddr + len(self.data)


@dataclass(frozen=True)
class ElfImage:
    path: Path
    machine: str  # "EM_ARM" | "EM_RISCV"
    entry: int
    segments: tuple[Segment, ...]
    symbols: dict[str, int]  # name -> st_value (functions and objects)
    sizes: dict[str, int] = field(default_factory=dict)
    exec_ranges: tuple[tuple[int, int], ...] = ()  # SHF_EXECINSTR sections (start, end)
    _sorted: tuple = ()  # (addresses, names) sorted by address, for nearest()

    @property
    def arch(self) -> str:
        return "arm" if self.machine == "EM_ARM" else "riscv"

    def symbol(self, name: str) -> int:
        if name not in self.symbols:
            raise ElfError(f"{self.path.name}: no symbol {name!r} (is the function static?)")
        return self.symbols[name]

    def nearest(self, addr: int) -> str:
        """'func+0xoff' of the closest symbol at or below ``addr`` (Thumb bit ignored)."""
        addrs, names = self._sorted
        i = bisect.bisect_right(addrs, addr) - 1
        if i < 0:
            return "?"
        off = addr - addrs[i]
        size = self.sizes.get(names[i], 0)
        if size and off >= size + 64:  # past the symbol's end: not inside any function
            return f"{addr:#x} (no symbol; {names[i]} ends at {addrs[i] + size:#x})"
        return names[i] if off == 0 else f"{names[i]}+{off:#x}"

    def end_of(self, kind: str) -> int:
        """Highest address used by segments in FLASH ("flash", below 0x2000_0000) or RAM."""
        segs = [s for s in self.segments if (s.vaddr < 0x2000_0000) == (kind == "flash")]
        return max((s.end for s in segs), default=0)


@lru_cache(maxsize=64)
def _load(path: str, mtime: float) -> ElfImage:
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    p = Path(path)
    with open(p, "rb") as f:
        try:
            ef = ELFFile(f)
        except Exception as e:  # noqa: BLE001 - pyelftools raises several types
            raise ElfError(f"{p}: not an ELF file ({e})") from e
        if ef.elfclass != 32:
            raise ElfError(f"{p}: {ef.elfclass}-bit ELF; the harness runs 32-bit cores")
        segs = []
        for seg in ef.iter_segments():
            if seg["p_type"] != "PT_LOAD" or seg["p_memsz"] == 0:
                continue
            data = seg.data() + bytes(seg["p_memsz"] - seg["p_filesz"])
            segs.append(Segment(seg["p_vaddr"], data, bool(seg["p_flags"] & 1)))
        syms: dict[str, int] = {}
        sizes: dict[str, int] = {}
        for sec in ef.iter_sections():
            if not isinstance(sec, SymbolTableSection):
                continue
            for s in sec.iter_symbols():
                if s["st_info"]["type"] in ("STT_FUNC", "STT_OBJECT") and s.name:
                    glob = s["st_info"]["bind"] != "STB_LOCAL"
                    if s.name in syms and not glob:
                        continue  # a global definition wins over a local of the same name
                    syms[s.name] = s["st_value"]
                    sizes[s.name] = s["st_size"]
        ex = tuple(
            (sec["sh_addr"], sec["sh_addr"] + sec["sh_size"])
            for sec in ef.iter_sections()
            if sec["sh_flags"] & 0x4 and sec["sh_size"]
        )
        machine = ef["e_machine"]
        entry = ef["e_entry"]
    if machine not in ("EM_ARM", "EM_RISCV"):
        raise ElfError(f"{p}: machine {machine}; the harness runs Arm and RISC-V only")
    order = sorted((a & ~1, n) for n, a in syms.items())
    srt = (tuple(a for a, _ in order), tuple(n for _, n in order))
    return ElfImage(p, machine, entry, tuple(segs), syms, sizes, ex, srt)


def load_elf(path: str | Path) -> ElfImage:
    """Parse ``path`` once per (path, mtime)."""
    p = Path(path)
    if not p.is_file():
        raise ElfError(f"ELF file {p} not found")
    return _load(str(p.resolve()), p.stat().st_mtime)
