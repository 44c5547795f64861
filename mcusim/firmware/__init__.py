"""Firmware cross-check: build C kernels for the target, run them, time the real trace.

Layers (docs/firmware.md):

* :mod:`.build` -- ``build(sources, core, cc="zig"|"gcc", entries=..., defines=...,
  include_dirs=..., opt="-O2") -> BuildResult(elf, target, compiler, version, flags,
  cached)``; freestanding, linked with link.ld (FLASH 0x0, RAM 0x2000_0000), cached by
  content hash in ``$MCUSIM_CACHE``/``~/.cache/mcusim/fw``.
* :mod:`.arm` -- ``ArmHarness(elf, core="cortex-m4"|"cortex-m7"|"cortex-m33",
  flash_size=8 MiB, ram_size=16 MiB, stack_size=256 KiB, budget=2e8)``;
  :mod:`.riscv` -- ``RiscvHarness(elf, core="rv32imc"|"ri5cy"|"xpulpnn")`` with XpulpV2 /
  XpulpNN custom instructions emulated (isa/xpulp.py semantics). Both share
  :class:`~.harness.Harness`: ``put(array, region="ram"|"flash") -> addr``,
  ``alloc(nbytes, region)``, ``write(addr, data)``, ``read(addr, n)``,
  ``read_array(addr, dtype, count)``, ``reset_heap()``,
  ``call(fn, *args, budget=None, trace=None|True|Tracer) -> CallResult(value,
  instructions, trace)`` (``.signed`` for a signed return; ``ArmHarness.reg(n)`` /
  ``RiscvHarness.x(n)`` read registers after the call, e.g. the high word of an int64).
  Failures raise :class:`FirmwareError` (a UserError) with PC, address and nearest symbol.
* :mod:`.trace` -- ``Tracer(core=None, device=None)``; pass ``trace=tracer`` to ``call``;
  ``CallResult.trace`` is a ``TraceResult(instructions, compute_cycles, stall_cycles,
  cycles, blocks, code_bytes, read_bytes, unmodeled)`` (``to_dict()`` for JSON).
* :mod:`.qemu` -- Cortex-M55/MVE in ``qemu-system-arm -M mps3-an547``:
  ``call_function(sources, entry, args, outputs={i: (dtype, shape)}, cc="zig") ->
  QemuCall(value, outputs, build)`` (``qemu_available()``; skip with a message without it).

Example::

    from mcusim.firmware import build, harness_for, Tracer
    res = build(["kernels/c/sum.c"], "cortex-m4", entries=["sum_s8"])
    h = harness_for(res.elf, "cortex-m4")
    out = h.call("sum_s8", h.put(x), len(x), trace=Tracer(device=dev))
    out.signed, out.instructions, out.trace.cycles
"""

from __future__ import annotations

from .build import BuildError, BuildResult, build, gcc_available, target, zig_available
from .harness import CallResult, FirmwareError
from .trace import Tracer, TraceResult

__all__ = [
    "BuildError",
    "BuildResult",
    "CallResult",
    "FirmwareError",
    "TraceResult",
    "Tracer",
    "build",
    "gcc_available",
    "harness_for",
    "target",
    "zig_available",
]


def harness_for(elf, core: str, **kw):
    """The Unicorn harness for ``core`` (Arm or RISC-V) with ``elf`` loaded."""
    if target(core).arch == "arm":
        from .arm import ArmHarness

        return ArmHarness(elf, core, **kw)
    from .riscv import RiscvHarness

    return RiscvHarness(elf, core, **kw)
