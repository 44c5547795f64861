"""Cortex-M4/M7/M33 firmware functions in Unicorn (toolchains.md §3).

The engine is ``Uc(UC_ARCH_ARM, UC_MODE_THUMB)`` with the CPU model set before any memory
is mapped (``UC_MODE_MCLASS`` would silently force a Cortex-M33). Calls follow the AAPCS:
arguments 1-4 in R0-R3, the rest on the 8-byte aligned stack, LR = the return sentinel
with the Thumb bit, result in R0 (R1:R0 for 64-bit results: ``reg(1)``).

    from mcusim.firmware.arm import ArmHarness
    h = ArmHarness(build_result.elf, "cortex-m4")
    x = h.put(np.arange(64, dtype=np.int8))          # RAM buffer -> address
    r = h.call("sum_s8", x, 64)                      # CallResult
    r.signed, r.instructions
    tr = Tracer(device)                              # mcusim.firmware.trace
    r = h.call("sum_s8", x, 64, trace=tr)            # + r.trace.cycles

Cortex-M55 (MVE) is not in Unicorn 2.1: use mcusim.firmware.qemu.
"""

from __future__ import annotations

import struct
from pathlib import Path

from .build import target
from .elf import ElfImage
from .harness import RET_MAGIC, FirmwareError, Harness

# Armv7-M exception numbers as Unicorn reports them in UC_HOOK_INTR (QEMU EXCP_*)
_EXCP = {
    1: "undefined/illegal instruction (UsageFault)",
    2: "supervisor call (SVC)",
    3: "prefetch abort (instruction fetch fault)",
    4: "data abort (bus fault)",
    6: "FIQ",
    7: "breakpoint (BKPT)",
    8: "exception return",
    18: "invalid state (UsageFault: INVSTATE, e.g. a branch without the Thumb bit)",
    19: "stack check (UsageFault: STKOF)",
    22: "lazy FP state preservation fault",
    23: "lazy stacking fault",
    25: "UsageFault (unaligned access or division by zero trap)",
}


_WORD_ALIGNED = ("ldrd", "strd", "ldm", "stm", "push", "pop", "ldrex", "strex", "vldr", "vstr")
_WORD_ALIGNED += ("vldm", "vstm", "vpush", "vpop", "lda", "stl")


class ArmHarness(Harness):
    """One Cortex-M core (M4, M7, M33) with an ELF loaded; see the module docstring."""

    arch = "arm"

    def __init__(self, elf: str | Path | ElfImage, core: str = "cortex-m4", **kw) -> None:
        tgt = target(core)
        if tgt.arch != "arm":
            raise FirmwareError(f"core {core!r} is not a Cortex-M core")
        if tgt.unicorn_cpu is None:
            raise FirmwareError(
                f"core {core!r} (MVE) is not emulated by Unicorn; run it with "
                "mcusim.firmware.qemu (qemu-system-arm -M mps3-an547)"
            )
        self._cpu = tgt.unicorn_cpu
        from unicorn import arm_const as A

        self.ret_value_reg, self.pc_reg = A.UC_ARM_REG_R0, A.UC_ARM_REG_PC
        self.sp_reg = A.UC_ARM_REG_SP
        self._A = A
        super().__init__(elf, tgt.name, **kw)

    def _make_uc(self):
        from unicorn import UC_ARCH_ARM, UC_HOOK_INSN_INVALID, UC_HOOK_INTR, UC_MODE_THUMB, Uc

        uc = Uc(UC_ARCH_ARM, UC_MODE_THUMB)
        uc.ctl_set_cpu_model(getattr(self._A, self._cpu))  # before mem_map (UC_ERR_ARG after)
        uc.hook_add(UC_HOOK_INTR, self._on_intr)
        uc.hook_add(UC_HOOK_INSN_INVALID, self._on_invalid_insn)
        return uc

    def _on_intr(self, uc, intno, user_data) -> None:
        self._on_exception(_EXCP.get(intno, f"CPU exception {intno}"))

    def _on_invalid_insn(self, uc, user_data) -> bool:
        pc = self._pc()
        word = self.read(pc & ~1, 4)
        hw = struct.unpack("<HH", word)
        self._on_exception(f"illegal instruction {hw[0]:04x} {hw[1]:04x}")
        return False

    def _misaligned(self, address: int, size: int) -> bool:
        """Armv7-M: LDR/STR/LDRH/STRH may be unaligned (CCR.UNALIGN_TRP = 0, the reset
        value); LDRD/STRD, LDM/STM/PUSH/POP, exclusives and FP loads/stores fault."""
        pc = self._pc() & ~1
        mn = self._mn_at.get(pc)
        if mn is None:
            from capstone import CS_ARCH_ARM, CS_MODE_MCLASS, CS_MODE_THUMB, Cs

            cs = Cs(CS_ARCH_ARM, CS_MODE_THUMB | CS_MODE_MCLASS)
            got = next(cs.disasm_lite(self.read(pc, 4), pc), None)
            mn = got[2].split(".")[0] if got else ""
            self._mn_at[pc] = mn
        return mn.startswith(_WORD_ALIGNED)

    def reg(self, n: int) -> int:
        """Core register Rn (0-12, 13 = SP, 14 = LR, 15 = PC) after a call."""
        A = self._A
        regs = [getattr(A, f"UC_ARM_REG_R{i}") for i in range(13)]
        regs += [A.UC_ARM_REG_SP, A.UC_ARM_REG_LR, A.UC_ARM_REG_PC]
        return self.uc.reg_read(regs[n])

    def _set_args(self, args: list[int], sp: int) -> int:
        A = self._A
        stack = args[4:]
        sp -= 4 * len(stack)
        sp &= ~7
        if stack:
            self.write(sp, struct.pack(f"<{len(stack)}I", *stack))
        for i, v in enumerate(args[:4]):
            self.uc.reg_write(getattr(A, f"UC_ARM_REG_R{i}"), v)
        self.uc.reg_write(A.UC_ARM_REG_SP, sp)
        self.uc.reg_write(A.UC_ARM_REG_LR, RET_MAGIC | 1)
        return sp

    def _start(self, entry: int, count: int) -> None:
        # the until address must not carry the Thumb bit (toolchains.md §3)
        self.uc.emu_start(entry | 1, RET_MAGIC, count=count)
