"""The architecture-independent part of the Unicorn harnesses (arm.py, riscv.py).

A harness owns one Unicorn engine with the ELF loaded, a bump allocator over two regions
and a ``call`` that runs one function to its return under an instruction budget:

* ``flash`` at 0x0000_0000 (code, .rodata, and constants the host places there with
  ``put(..., region="flash")``; the trace costs its reads with the device's flash);
* ``ram`` at 0x2000_0000 (.data/.bss, host buffers, the stack at the top).

Every failure (unmapped or misaligned access, illegal instruction, CPU exception, budget
exhausted) raises :class:`FirmwareError` naming the ELF, the PC, the address and the
nearest symbol; nothing hangs (the budget bounds every run).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mcusim.errors import UserError

from .elf import ElfImage, load_elf

FLASH_BASE, RAM_BASE = 0x0000_0000, 0x2000_0000
# The return address the host plants: mapped (a page of its own) but never executed;
# emu_start stops when the PC reaches it.
RET_MAGIC = 0x0FFF_F000
DEFAULT_BUDGET = 200_000_000


class FirmwareError(UserError):
    """The firmware faulted, executed an illegal instruction or did not return in time."""


@dataclass(frozen=True)
class Region:
    name: str  # "flash" | "ram"
    base: int
    size: int

    @property
    def end(self) -> int:
        return self.base + self.size

    def contains(self, addr: int) -> bool:
        return self.base <= addr < self.end


@dataclass
class CallResult:
    """What one ``call`` returned: the raw return register (``value``, unsigned 32-bit),
    instructions executed (exact when counted: always with a trace) and the trace."""

    value: int
    instructions: int | None = None
    trace: Any = None  # mcusim.firmware.trace.TraceResult when traced

    @property
    def signed(self) -> int:
        return self.value - (1 << 32) if self.value & 0x8000_0000 else self.value


def _align(x: int, a: int) -> int:
    return (x + a - 1) // a * a


class Harness:
    """Base class; subclasses set up the engine (``_make_uc``) and the calling convention."""

    arch = ""
    ret_value_reg: int = 0
    pc_reg: int = 0
    sp_reg: int = 0

    def __init__(
        self,
        elf: str | Path | ElfImage,
        core: str,
        flash_size: int = 8 << 20,
        ram_size: int = 16 << 20,
        stack_size: int = 256 << 10,
        budget: int = DEFAULT_BUDGET,
        check_alignment: bool = False,
    ) -> None:
        self.image = elf if isinstance(elf, ElfImage) else load_elf(elf)
        if self.image.arch != self.arch:
            raise FirmwareError(
                f"{self.image.path.name}: {self.image.machine} ELF given to the {self.arch} harness"
            )
        self.core = core
        self.budget = budget
        self.regions = (Region("flash", FLASH_BASE, flash_size), Region("ram", RAM_BASE, ram_size))
        self.stack_size = stack_size
        self._fault: tuple | None = None  # (what, address, pc) recorded by hooks
        self._tracer = None  # the Tracer of the call in progress
        self.uc = self._make_uc()
        from unicorn import UC_PROT_ALL

        for r in self.regions:
            self.uc.mem_map(r.base, r.size, UC_PROT_ALL)
        self.uc.mem_map(RET_MAGIC, 0x1000, UC_PROT_ALL)  # RISC-V fetches before stopping
        for seg in self.image.segments:
            reg = self.region_of(seg.vaddr)
            if reg is None or seg.end > reg.end:
                raise FirmwareError(
                    f"{self.image.path.name}: segment {seg.vaddr:#x}-{seg.end:#x} outside "
                    "FLASH/RAM (link with mcusim/firmware/link.ld)"
                )
            self.uc.mem_write(seg.vaddr, seg.data)
        self._heap0 = {
            "flash": _align(max(self.image.end_of("flash"), FLASH_BASE) + 64, 64),
            "ram": _align(max(self.image.end_of("ram"), RAM_BASE) + 64, 64),
        }
        self._heap = dict(self._heap0)
        self.call_sp: int | None = None
        self._install_fault_hooks()
        self._mn_at: dict[int, str] = {}
        if check_alignment:
            from unicorn import UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE

            self.uc.hook_add(UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE, self._on_access)

    # -- engine specifics ---------------------------------------------------------------
    def _make_uc(self):
        raise NotImplementedError

    def _set_args(self, args: list[int], sp: int) -> int:
        raise NotImplementedError

    def _start(self, entry: int, count: int) -> None:
        raise NotImplementedError

    def _pc(self) -> int:
        return self.uc.reg_read(self.pc_reg)

    @property
    def timing_core(self) -> str:
        """The isa/ timing model name for this harness's core (rv32imc: the RI5CY pipeline)."""
        from mcusim.isa.timing import available_cores

        return self.core if self.core in available_cores() else "ri5cy"

    # -- memory -------------------------------------------------------------------------
    def region_of(self, addr: int) -> Region | None:
        for r in self.regions:
            if r.contains(addr):
                return r
        return None

    def region(self, name: str) -> Region:
        for r in self.regions:
            if r.name == name:
                return r
        raise FirmwareError(f"no memory region {name!r}; regions: flash, ram")

    def alloc(self, nbytes: int, region: str = "ram", align: int = 16) -> int:
        """Reserve ``nbytes`` in ``region`` ("ram" or "flash"); returns the address."""
        r = self.region(region)
        addr = _align(self._heap[region], align)
        limit = r.end - (self.stack_size if region == "ram" else 0)
        if addr + nbytes > limit:
            raise FirmwareError(
                f"{self.image.path.name}: {region} exhausted allocating {nbytes} bytes "
                f"({limit - addr} left; raise {region}_size)"
            )
        self._heap[region] = addr + max(nbytes, 1)
        return addr

    def reset_heap(self) -> None:
        """Forget every allocation (buffers are reused by the next ``alloc``)."""
        self._heap = dict(self._heap0)

    def write(self, addr: int, data) -> None:
        b = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
        self.uc.mem_write(addr, b)

    def read(self, addr: int, nbytes: int) -> bytes:
        return bytes(self.uc.mem_read(addr, nbytes))

    def read_array(self, addr: int, dtype, count: int) -> np.ndarray:
        dt = np.dtype(dtype)
        return np.frombuffer(self.read(addr, dt.itemsize * count), dtype=dt).copy()

    def put(self, data, region: str = "ram", align: int = 16) -> int:
        """Allocate and write ``data`` (ndarray or bytes); returns its address."""
        b = np.ascontiguousarray(data).tobytes() if isinstance(data, np.ndarray) else bytes(data)
        addr = self.alloc(len(b), region, align)
        self.write(addr, b)
        return addr

    def symbol(self, name: str) -> int:
        return self.image.symbol(name)

    # -- running --------------------------------------------------------------------------
    def call(self, fn: str | int, *args, budget: int | None = None, trace=None) -> CallResult:
        """Run ``fn`` (symbol or address) with integer/pointer ``args`` (ndarrays and bytes
        are ``put`` into RAM and passed by address) until it returns; ``budget``: most
        instructions allowed. ``trace``: a :class:`mcusim.firmware.trace.Tracer` to count
        and time the executed blocks (True: a zero-wait Tracer for this core; None: plain
        run, counted by Unicorn)."""
        entry = self.image.symbol(fn) if isinstance(fn, str) else int(fn)
        if trace is True:
            from .trace import Tracer

            trace = Tracer(core=self.timing_core)
        vals = []
        for a in args:
            if isinstance(a, (np.ndarray, bytes, bytearray)):
                a = self.put(a)
            vals.append(int(a) & 0xFFFF_FFFF)
        n = self.budget if budget is None else int(budget)
        ram = self.region("ram")
        sp = (ram.end - 64) & ~0xF
        sp = self._set_args(vals, sp)
        self.call_sp = sp  # the stack pointer the call starts with (cross-check layouts)
        self._fault = None
        self._tracer = trace
        if trace is not None:
            trace.begin(self, n)
        try:
            self._start(entry, 0 if trace is not None else n)
        except Exception as e:  # unicorn.UcError
            self._raise_fault(e, entry)
        finally:
            self._tracer = None
            if trace is not None:
                trace.end()
        if self._fault is not None:
            self._raise_fault(None, entry)
        pc = self._pc() & ~1
        name = fn if isinstance(fn, str) else f"{entry:#x}"
        if pc != RET_MAGIC:
            raise FirmwareError(
                f"{self.image.path.name}: {name} did not return within {n} instructions "
                f"(stopped at PC {pc:#x} in {self.image.nearest(pc)})"
            )
        value = self.uc.reg_read(self.ret_value_reg) & 0xFFFF_FFFF
        if trace is not None:
            res = trace.result()
            return CallResult(value, res.instructions, res)
        return CallResult(value, None, None)

    # -- faults ---------------------------------------------------------------------------
    def _install_fault_hooks(self) -> None:
        from unicorn import UC_HOOK_MEM_INVALID

        self.uc.hook_add(UC_HOOK_MEM_INVALID, self._on_invalid_mem)

    def _on_invalid_mem(self, uc, access, address, size, value, user_data) -> bool:
        from unicorn import (
            UC_MEM_FETCH_PROT,
            UC_MEM_FETCH_UNMAPPED,
            UC_MEM_READ_PROT,
            UC_MEM_READ_UNMAPPED,
            UC_MEM_WRITE_PROT,
            UC_MEM_WRITE_UNMAPPED,
        )

        what = {
            UC_MEM_READ_UNMAPPED: f"read of {size} bytes from unmapped memory",
            UC_MEM_WRITE_UNMAPPED: f"write of {size} bytes to unmapped memory",
            UC_MEM_FETCH_UNMAPPED: "instruction fetch from unmapped memory",
            UC_MEM_READ_PROT: f"read of {size} bytes from protected memory",
            UC_MEM_WRITE_PROT: f"write of {size} bytes to read-only memory",
            UC_MEM_FETCH_PROT: "instruction fetch from non-executable memory",
        }.get(access, f"invalid memory access (kind {access})")
        if self._fault is None:
            self._fault = (what, address, self._pc())
        return False

    def _misaligned(self, address: int, size: int) -> bool:
        """Whether an access the core makes at ``address`` would fault (subclass rule)."""
        return address % size != 0

    def _on_access(self, uc, access, address, size, value, user_data) -> None:
        if address % size and self._misaligned(address, size) and self._fault is None:
            from unicorn import UC_MEM_WRITE

            kind = "write" if access == UC_MEM_WRITE else "read"
            self._fault = (f"misaligned {size}-byte {kind}", address, self._pc())
            uc.emu_stop()

    def _on_exception(self, what: str, address: int | None = None) -> None:
        """Called by subclass interrupt hooks: record and stop."""
        if self._fault is None:
            self._fault = (what, address, self._pc())
        self.uc.emu_stop()

    def _raise_fault(self, err, entry: int) -> None:
        name = self.image.path.name
        if self._fault is not None:
            what, addr, pc = self._fault
        else:
            what, addr, pc = _describe_uc_error(err), None, self._pc()
        pc &= ~1
        at = f" at address {addr:#010x}" if addr is not None else ""
        where, fn = self.image.nearest(pc), self.image.nearest(entry & ~1)
        raise FirmwareError(f"{name}: {what}{at} (PC {pc:#010x} in {where}; called {fn})") from (
            err if isinstance(err, BaseException) else None
        )


def _describe_uc_error(err) -> str:
    from unicorn import unicorn_const as C

    errno = getattr(err, "errno", None)
    names = {
        C.UC_ERR_READ_UNMAPPED: "read from unmapped memory",
        C.UC_ERR_WRITE_UNMAPPED: "write to unmapped memory",
        C.UC_ERR_FETCH_UNMAPPED: "instruction fetch from unmapped memory",
        C.UC_ERR_INSN_INVALID: "illegal instruction",
        C.UC_ERR_READ_UNALIGNED: "misaligned read",
        C.UC_ERR_WRITE_UNALIGNED: "misaligned write",
        C.UC_ERR_FETCH_UNALIGNED: "misaligned instruction fetch",
        C.UC_ERR_EXCEPTION: "CPU exception (fault)",
        C.UC_ERR_READ_PROT: "read from protected memory",
        C.UC_ERR_WRITE_PROT: "write to read-only memory",
        C.UC_ERR_FETCH_PROT: "fetch from non-executable memory",
    }
    return names.get(errno, f"emulator error: {err}")
