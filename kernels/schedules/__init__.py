"""Instruction schedules per ISA: what a library kernel executes for one op of a graph.

    from mcusim.kernels.schedules import schedule_for
    prog = schedule_for("armv7em-dsp", graph, op)      # -> mcusim.isa.schedule.Program
    res = core_timing("cortex-m4").time(prog)           # -> TimingResult

For "armv7em-dsp" (Cortex-M4/M7 class cores with the DSP extension) the schedules follow
CMSIS-NN's int8 kernels and their dispatch (the chosen function is ``prog.kernel``), TFLM
reference kernels for ops CMSIS-NN lacks, and memcpy for reshapes. Schedules are data: a
timing model for another core times the same Program with its own rules.
"""

from __future__ import annotations

from collections.abc import Callable

from mcusim.errors import UnsupportedOpError
from mcusim.graph import Graph, Op
from mcusim.isa.schedule import Program
from mcusim.observed import OpData

Builder = Callable[[Graph, Op], Program]

# ISA family -> "module:function" building a Program for (graph, op); imported lazily.
FAMILIES: dict[str, str] = {
    "armv7em-dsp": "mcusim.kernels.schedules.armv7em:schedule",  # M4, M7, M33 (DSP ext.)
    "armv6m": "mcusim.kernels.schedules.armv6m:schedule",  # M0/M0+: CMSIS-NN pure C
    "armv8.1m-mve": "mcusim.kernels.schedules.mve:schedule",  # M55/M85: CMSIS-NN Helium
    "rv32-xpulpv2": "mcusim.kernels.schedules.pulpnn:schedule",  # RI5CY: PULP-NN
    "rv32-xpulpnn": "mcusim.kernels.schedules.pulpnn_xpulpnn:schedule",  # RI5CY + XpulpNN
    "rv32imc": "mcusim.kernels.schedules.pulpnn_rv32imc:schedule",  # plain RV32IMC: TFLM ref
}

# ISA family -> op kinds whose schedule depends on the data (mcusim.observed): a full run
# passes the observed facts to the builder (``data=``); no other builder takes them.
DATA_KINDS: dict[str, frozenset[str]] = {
    # CMSIS-NN softmax skips exp below diff_min; the FC's rounding divide branches on sign
    "armv7em-dsp": frozenset({"softmax", "fully_connected"}),
    "armv8.1m-mve": frozenset({"softmax"}),  # the same scalar softmax
}

ISA_ALIASES = {
    "armv7em-dsp": "armv7em-dsp",
    "armv7e-m": "armv7em-dsp",
    "armv7em": "armv7em-dsp",
    "armv8m-dsp": "armv7em-dsp",  # Armv8-M Mainline + DSP runs the same CMSIS-NN DSP code
    "cortex-m4": "armv7em-dsp",
    "cortex-m4f": "armv7em-dsp",
    "cortex-m7": "armv7em-dsp",
    "cortex-m33": "armv7em-dsp",
    "armv6m": "armv6m",
    "armv6-m": "armv6m",
    "armv8.1m-mve": "armv8.1m-mve",
    "armv8.1-m": "armv8.1m-mve",
    "mve": "armv8.1m-mve",
    "rv32-xpulpv2": "rv32-xpulpv2",
    "xpulpv2": "rv32-xpulpv2",
    "ri5cy": "rv32-xpulpv2",
    "rv32-xpulpnn": "rv32-xpulpnn",
    "xpulpnn": "rv32-xpulpnn",
    "rv32imc": "rv32imc",
    "rv32im": "rv32imc",
}


def _builder(family: str) -> Builder:
    import importlib

    mod, fn = FAMILIES[family].split(":")
    return getattr(importlib.import_module(mod), fn)


def data_kinds(isa: str) -> frozenset[str]:
    """The op kinds whose schedule on ``isa`` depends on the values they run on."""
    return DATA_KINDS.get(ISA_ALIASES.get(isa.lower(), ""), frozenset())


def uses_data(isa: str, op: Op) -> bool:
    """Whether ``op``'s schedule on ``isa`` depends on the values it runs on."""
    return op.kind in data_kinds(isa)


def schedule_for(isa: str, graph: Graph, op: Op, data: OpData | None = None) -> Program:
    """The instruction schedule ``op`` executes on ``isa`` (e.g. "armv7em-dsp"); ``data``:
    the run's observed facts, used where :func:`uses_data` (else the schedule's own
    expectation)."""
    key = ISA_ALIASES.get(isa.lower())
    if key is None:
        raise UnsupportedOpError(f"no instruction schedules for ISA {isa!r}", layer=op.label)
    from .buffers import scratch_bytes

    if data is not None and uses_data(key, op):
        prog = _builder(key)(graph, op, data=data)
    else:
        prog = _builder(key)(graph, op)
    prog.isa = key
    prog.scratch_bytes = scratch_bytes(graph, op, prog)
    return prog
