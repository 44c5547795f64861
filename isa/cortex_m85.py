"""Cortex-M85 timing: the M55 beat engine with the M85's units and a dual-issue scalar side.

Data: isa/cortex_m85.toml (LLVM ARMScheduleM85.td). What differs from the Cortex-M55
(isa/cortex_m55.py) is only data and two issue rules, both from that LLVM model:

- MVE: still two beats per instruction on each unit (ReleaseAtCycles = 2 on the 64-bit
  L/H halves), but separate load and store pipes and four vector ALU groups (A integer,
  B multiply/FP, C compare, D predication), bitwise ops on the register port alone, and
  GPR results of reductions 4 cycles after start (accumulators read 2 cycles late);
- scalar: up to two instructions a cycle (IssueWidth 2: two ALUs, two load and two store
  pipes, one MAC), DSP/FP/MVE only as the older of a pair, load/store multiples alone;
  word loads have latency 1, address operands are read a cycle early; loop back edges are
  predicted (the exit costs the mispredict penalty).
"""

from __future__ import annotations

from functools import lru_cache

from .cortex_m55 import BeatParams, BeatTiming, load_beat_params


@lru_cache(maxsize=1)
def load_params() -> BeatParams:
    return load_beat_params("cortex_m85.toml")


class CortexM85Timing(BeatTiming):
    """Cortex-M85: dual-beat MVE on split units, dual-issue scalar pipeline."""

    name = "cortex-m85"

    def __init__(self, params: BeatParams | None = None) -> None:
        super().__init__(params or load_params())
