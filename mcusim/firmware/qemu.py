"""Cortex-M55 / Helium (MVE) firmware in QEMU ``-M mps3-an547`` (toolchains.md §6).

Unicorn 2.1 has no M55 and no MVE, so Helium kernels run as whole firmware images in
``qemu-system-arm`` with semihosting: mcusim/firmware/an547_start.c (vector table, .bss
clearing, CPACR for the FPU/MVE, semihosting exit) + a generated driver that holds the
inputs as data, calls the kernel once and prints the return value and the output buffers
as hex. Linked with link_an547.ld: code in the ITCM, data in the DDR (VMA = LMA, since
``-kernel`` writes segments at their LMA), stack in the DTCM.

    from mcusim.firmware.qemu import qemu_available, call_function
    if qemu_available():
        r = call_function(["kernels/c/mve_dot.c"], "dot_s8", [a, b, len(a)],
                          outputs={}, cc="zig")
        r.value, r.outputs, r.build

No cycle model: QEMU gives bit-exact results only (``-icount`` counts instructions).
Without qemu-system-arm, :func:`qemu_available` is False and callers skip with a message
(CI: ``apt-get install -y --no-install-recommends qemu-system-arm``).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from .build import BuildResult, build
from .harness import FirmwareError

QEMU = "qemu-system-arm"


def qemu_available() -> bool:
    return shutil.which(QEMU) is not None


@dataclass
class QemuRun:
    exit_code: int
    stdout: str
    stderr: str


def run_elf(elf: str | Path, timeout: float = 60.0) -> QemuRun:
    """Run a whole-firmware ELF on mps3-an547 until it exits through semihosting."""
    prog = shutil.which(QEMU)
    if prog is None:
        raise FirmwareError(
            f"{QEMU} not found: install it (apt-get install qemu-system-arm) for Cortex-M55/MVE"
        )
    cmd = [prog, "-M", "mps3-an547", "-nographic", "-monitor", "none", "-serial", "none"]
    cmd += ["-semihosting-config", "enable=on,target=native", "-kernel", str(elf)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise FirmwareError(
            f"{Path(elf).name}: QEMU did not exit within {timeout:g} s (firmware hang?)"
        ) from e
    return QemuRun(res.returncode, res.stdout, res.stderr)


@dataclass
class QemuCall:
    value: int  # return register, unsigned 32-bit
    outputs: dict[int, np.ndarray]  # argument index -> buffer after the call
    build: BuildResult
    stdout: str

    @property
    def signed(self) -> int:
        return self.value - (1 << 32) if self.value & 0x8000_0000 else self.value


def _c_array(name: str, a: np.ndarray) -> str:
    b = np.ascontiguousarray(a).tobytes()
    body = ",".join(str(x) for x in b) or "0"
    return f"static uint8_t {name}[{max(len(b), 1)}] __attribute__((aligned(16))) = {{{body}}};\n"


def driver_source(entry: str, args: list, outputs: dict[int, tuple]) -> str:
    """C source of the driver: one array per ndarray argument (in .data, writable), a call
    of ``entry`` with pointers / 32-bit integers, then hex dumps of the return value and
    of every output argument."""
    lines = ["#include <stdint.h>\n", "void mcusim_dump(const char *, const void *, uint32_t);\n"]
    call_args = []
    for i, a in enumerate(args):
        if isinstance(a, np.ndarray):
            lines.append(_c_array(f"arg{i}", a))
            call_args.append(f"(void *)arg{i}")
        else:
            call_args.append(f"(uint32_t){int(a) & 0xFFFF_FFFF}u")
    proto = ", ".join("uint32_t" if not isinstance(a, np.ndarray) else "void *" for a in args)
    lines.append(f"uint32_t {entry}({proto or 'void'});\n")
    lines.append("int mcusim_main(void) {\n")
    lines.append(f"    uint32_t r = {entry}({', '.join(call_args)});\n")
    lines.append('    mcusim_dump("R", &r, 4);\n')
    for i in sorted(outputs):
        lines.append(f'    mcusim_dump("O{i}", arg{i}, sizeof(arg{i}));\n')
    lines.append("    return 0;\n}\n")
    return "".join(lines)


def call_function(
    sources,
    entry: str,
    args: list,
    outputs: dict[int, tuple] | None = None,
    core: str = "cortex-m55",
    cc: str = "zig",
    opt: str = "-O2",
    defines: dict | None = None,
    include_dirs=(),
    timeout: float = 120.0,
) -> QemuCall:
    """Build ``sources`` with a generated driver and run ``entry(*args)`` once in QEMU.

    ``args``: ints (passed as 32-bit values) or ndarrays (passed by address; their bytes
    are data in the image). ``outputs``: {argument index: (dtype, shape)} of ndarray
    arguments to read back after the call."""
    outputs = outputs or {}
    for i in outputs:
        if not isinstance(args[i], np.ndarray):
            raise FirmwareError(f"output argument {i} of {entry} is not an array")
    pkg = resources.files("mcusim.firmware")
    work = Path(tempfile.mkdtemp(prefix="mcusim_qemu_"))
    try:
        drv = work / f"drv_{entry}.c"
        drv.write_text(driver_source(entry, args, outputs))
        start = Path(str(pkg.joinpath("an547_start.c")))
        srcs = [Path(s) for s in ([sources] if isinstance(sources, (str, Path)) else sources)]
        res = build(
            srcs + [drv, start],
            core,
            cc=cc,
            opt=opt,
            entries=["Reset_Handler", "mcusim_vectors"],
            defines=defines,
            include_dirs=include_dirs,
            ldscript=Path(str(pkg.joinpath("link_an547.ld"))),
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    run = run_elf(res.elf, timeout)
    dumps = _dumps(run)
    if run.exit_code != 0:
        where = ""
        if "F" in dumps and len(dumps["F"]) == 12:
            from .elf import load_elf

            pc, cfsr, bfar = np.frombuffer(dumps["F"], dtype="<u4").tolist()
            sym = load_elf(res.elf).nearest(pc & ~1)
            where = f" (PC {pc:#010x} in {sym}; CFSR {cfsr:#010x}, BFAR {bfar:#010x})"
        text = (run.stdout + run.stderr).strip().splitlines()
        raise FirmwareError(
            f"{entry} on QEMU mps3-an547 exited with status {run.exit_code}: "
            f"{text[-1] if text else ''}{where}"
        )
    if "R" not in dumps:
        out = (run.stdout + run.stderr)[-300:]
        raise FirmwareError(f"{entry} on QEMU printed no result: {out!r}")
    value = int.from_bytes(dumps["R"], "little")
    outs = {}
    for i, (dtype, shape) in outputs.items():
        outs[i] = np.frombuffer(dumps[f"O{i}"], dtype=dtype)[: int(np.prod(shape))].reshape(shape)
    return QemuCall(value, outs, res, run.stdout + run.stderr)


def _dumps(run: QemuRun) -> dict[str, bytes]:
    """The driver's "<tag> <hex>" lines (R = return value, O<i> = outputs, F = fault)."""
    dumps = {}
    # QEMU writes the semihosting console to stderr when stdout is not a terminal
    for line in (run.stdout + "\n" + run.stderr).splitlines():
        tag, _, hexdata = line.partition(" ")
        if tag in ("R", "F") or (tag.startswith("O") and tag[1:].isdigit()):
            try:
                dumps[tag] = bytes.fromhex(hexdata.strip())
            except ValueError:
                continue
    return dumps
