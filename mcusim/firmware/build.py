"""Compile freestanding C kernels for a target core into an ELF, cached by content hash.

Two compiler families (toolchains.md §2):

* ``cc="zig"`` (default): ``python -m ziglang cc`` from PyPI, a clang cross compiler that
  needs no root;
* ``cc="gcc"``: ``arm-none-eabi-gcc`` / ``riscv64-unknown-elf-gcc`` when on PATH.

Every build is freestanding (no libc, no startup code: the harness writes the PT_LOAD
segments and calls functions directly). Compiler support routines come from libgcc
(``-lgcc``) or zig's compiler_rt (``-lcompiler_rt``, which also has memcpy/memset/memmove);
GCC builds add mcusim/firmware/rt.c for those (weak). Linked with mcusim/firmware/link.ld
(FLASH at 0x0, RAM at 0x2000_0000). Results are cached in ``$MCUSIM_CACHE`` (default
``~/.cache/mcusim/fw``) under a SHA-256 of the sources, headers in ``include`` dirs,
linker script, flags and compiler version, so a second build of the same kernel is free.

    from mcusim.firmware.build import build
    res = build(["kernels/c/dot.c"], "cortex-m4", cc="zig", entries=["dot_s8"])
    res.elf, res.compiler, res.version, res.flags
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

from mcusim.errors import UserError


class BuildError(UserError):
    """A firmware build failed (compiler missing or compile error); names the target."""


@dataclass(frozen=True)
class Target:
    """How to compile for one core: ``arch`` "arm" | "riscv"; flags per compiler."""

    name: str
    arch: str
    zig: tuple[str, ...]
    gcc: tuple[str, ...]
    gcc_prog: str
    unicorn_cpu: str | None  # unicorn.arm_const UC_CPU_* name; None: not in Unicorn (QEMU)


_ZIG_ARM = ("-target", "thumb-freestanding-eabi")
_GCC_RV = ("-march=rv32imc", "-mabi=ilp32")
TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            "cortex-m4",
            "arm",
            _ZIG_ARM + ("-mcpu=cortex_m4",),
            ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=soft"),
            "arm-none-eabi-gcc",
            "UC_CPU_ARM_CORTEX_M4",
        ),
        Target(
            "cortex-m7",
            "arm",
            _ZIG_ARM + ("-mcpu=cortex_m7",),
            ("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=soft"),
            "arm-none-eabi-gcc",
            "UC_CPU_ARM_CORTEX_M7",
        ),
        Target(
            "cortex-m33",
            "arm",
            _ZIG_ARM + ("-mcpu=cortex_m33",),
            ("-mcpu=cortex-m33", "-mthumb", "-mfloat-abi=soft"),
            "arm-none-eabi-gcc",
            "UC_CPU_ARM_CORTEX_M33",
        ),
        Target(
            "cortex-m55",
            "arm",
            ("-target", "thumb-freestanding-eabihf", "-mcpu=cortex_m55+mve+mve_fp"),
            ("-mcpu=cortex-m55", "-mthumb", "-mfloat-abi=hard"),
            "arm-none-eabi-gcc",
            None,
        ),
        Target(
            "rv32imc",
            "riscv",
            ("-target", "riscv32-freestanding-none", "-mcpu=generic_rv32+m+c"),
            _GCC_RV,
            "riscv64-unknown-elf-gcc",
            None,
        ),
    )
}
# Core names of device files -> build target. Xpulp cores build as rv32imc: their custom
# instructions come from the kernels' ``.insn`` directives, emulated by the harness.
ALIASES = {
    "cortex-m4f": "cortex-m4",
    "cortex-m85": "cortex-m55",
    "ri5cy": "rv32imc",
    "cv32e40p": "rv32imc",
    "xpulpnn": "rv32imc",
    "rv32": "rv32imc",
    "rv32-xpulp": "rv32imc",
}
# zig (clang) keeps unwind tables that reference __aeabi_unwind_cpp_pr0 without these
_ZIG_COMMON = ("-fno-unwind-tables", "-fno-asynchronous-unwind-tables")
_COMMON = ("-ffreestanding", "-nostdlib", "-ffunction-sections", "-fdata-sections")


def target(name: str) -> Target:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in TARGETS:
        known = ", ".join(sorted(set(TARGETS) | set(ALIASES)))
        raise BuildError(f"no firmware build target for core {name!r}; known: {known}")
    return TARGETS[key]


@dataclass(frozen=True)
class BuildResult:
    """One built ELF and how it was made (for reports: compiler, version, full flags)."""

    elf: Path
    target: str
    compiler: str  # "zig" | "gcc"
    version: str
    flags: tuple[str, ...]
    cached: bool = False
    sources: tuple[str, ...] = field(default=())


def cache_dir() -> Path:
    """Where builds are cached: $MCUSIM_CACHE/fw, else $XDG_CACHE_HOME or ~/.cache."""
    env = os.environ.get("MCUSIM_CACHE")
    if env:
        return Path(env) / "fw"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mcusim" / "fw"


def linker_script(arch: str) -> Path:
    """The bundled linker script for ``arch`` ("arm" | "riscv")."""
    name = "link.ld" if arch == "arm" else "link_riscv.ld"
    return Path(str(resources.files("mcusim.firmware").joinpath(name)))


def gcc_available(tgt: str = "cortex-m4") -> bool:
    return shutil.which(target(tgt).gcc_prog) is not None


def zig_available() -> bool:
    try:
        _zig_version()
    except BuildError:
        return False
    return True


def _zig_cmd() -> list[str]:
    return [sys.executable, "-m", "ziglang"]


@cache
def _zig_version() -> str:
    try:
        out = subprocess.run(
            _zig_cmd() + ["version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BuildError(f"zig compiler unavailable: {e}") from e
    if out.returncode != 0:
        raise BuildError(
            "zig compiler unavailable (pip install ziglang): " + out.stderr.strip()[:200]
        )
    return "zig " + out.stdout.strip()


@cache
def _gcc_version(prog: str) -> str:
    path = shutil.which(prog)
    if path is None:
        raise BuildError(f"{prog} not found on PATH (use cc='zig', or install it)")
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0].strip() if out.stdout else prog


def compiler_version(cc: str, tgt: Target) -> str:
    return _zig_version() if cc == "zig" else _gcc_version(tgt.gcc_prog)


def _flags(
    cc: str, tgt: Target, opt: str, entries, defines, include_dirs, extra, ld: Path
) -> list[str]:
    f = list(tgt.zig if cc == "zig" else tgt.gcc) + [opt] + list(_COMMON)
    if cc == "zig":
        f += list(_ZIG_COMMON)
    f += [f"-D{k}" if v is None else f"-D{k}={v}" for k, v in sorted((defines or {}).items())]
    f += [f"-I{d}" for d in include_dirs]
    f += list(extra)
    f += [f"-Wl,-T,{ld}"]
    if entries:
        f += ["-Wl,--gc-sections", f"-Wl,-e,{entries[0]}"]
        f += [f"-Wl,-u,{e}" for e in entries]
    else:  # zig links with --gc-sections by default: keep every function
        f += ["-Wl,--no-gc-sections"]
    return f


def _digest(sources: list[Path], include_dirs: list[Path], ld: Path, flags, version) -> str:
    h = hashlib.sha256()
    h.update(version.encode())
    for f in flags:
        h.update(b"\0F" + f.encode())
    for p in sources:
        h.update(b"\0S" + p.name.encode() + b"\0" + p.read_bytes())
    for d in include_dirs:
        for hdr in sorted(Path(d).rglob("*.h")):
            h.update(b"\0H" + str(hdr.relative_to(d)).encode() + b"\0" + hdr.read_bytes())
    h.update(b"\0L" + ld.read_bytes())
    return h.hexdigest()[:32]


def build(
    sources,
    core: str,
    cc: str = "zig",
    opt: str = "-O2",
    entries=(),
    defines: dict | None = None,
    include_dirs=(),
    extra_flags=(),
    ldscript: str | Path | None = None,
    use_cache: bool = True,
) -> BuildResult:
    """Compile and link C/assembly ``sources`` for ``core`` (a device core name, e.g.
    "cortex-m4", "cortex-m7", "cortex-m55", "rv32imc", "xpulpnn") into a cached ELF.

    ``entries``: functions the host calls; with them the link garbage-collects everything
    they do not reach (the first is the ELF entry). ``cc``: "zig" | "gcc"."""
    if cc not in ("zig", "gcc"):
        raise BuildError(f"unknown compiler {cc!r}: use 'zig' or 'gcc'")
    tgt = target(core)
    srcs = [Path(s) for s in ([sources] if isinstance(sources, (str, Path)) else sources)]
    for s in srcs:
        if not s.is_file():
            raise BuildError(f"firmware source {s} not found")
    incs = [Path(d) for d in include_dirs]
    ld = Path(ldscript) if ldscript else linker_script(tgt.arch)
    version = compiler_version(cc, tgt)
    flags = _flags(cc, tgt, opt, list(entries), defines, incs, extra_flags, ld)
    if cc == "gcc":  # no libc: memcpy/memset/memmove the compiler may call come from rt.c
        srcs = srcs + [Path(str(resources.files("mcusim.firmware").joinpath("rt.c")))]
    # compiler support routines (64-bit division, __aeabi_*, and zig's memcpy/memset)
    libs = ["-lgcc"] if cc == "gcc" else ["-lcompiler_rt"]
    key = _digest(srcs, incs, ld, flags + libs, version)
    out_dir = cache_dir() / tgt.name
    elf = out_dir / f"{key}.elf"
    names = tuple(str(s) for s in srcs)
    if use_cache and elf.is_file():
        return BuildResult(elf, tgt.name, cc, version, tuple(flags + libs), True, names)
    out_dir.mkdir(parents=True, exist_ok=True)
    prog = _zig_cmd() + ["cc"] if cc == "zig" else [shutil.which(tgt.gcc_prog) or tgt.gcc_prog]
    fd, tmp = tempfile.mkstemp(suffix=".elf", dir=out_dir)
    os.close(fd)
    cmd = prog + flags + ["-o", tmp] + [str(s) for s in srcs] + libs
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        if res.returncode != 0:
            msg = (res.stderr or res.stdout).strip()
            raise BuildError(
                f"{cc} build of {', '.join(s.name for s in srcs)} for {tgt.name} failed:\n{msg}"
            )
        os.replace(tmp, elf)  # atomic: concurrent builders never see a partial ELF
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return BuildResult(elf, tgt.name, cc, version, tuple(flags + libs), False, names)
