"""The compiled sizes of modelled library functions (code_sizes.toml) and the marking of a
schedule's blocks with the function they belong to (:attr:`Block.func`)."""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path

from mcusim.isa.schedule import Block

ARMV7EM_DSP = "armv7em-dsp"  # the table's section for the Armv7E-M + DSP schedules


@cache
def _table() -> dict[str, dict[str, int]]:
    with open(Path(__file__).with_name("code_sizes.toml"), "rb") as f:
        return tomllib.load(f)


def function_bytes(isa: str, func: str) -> int:
    """Bytes of ``func`` as compiled for ``isa`` (0: not measured)."""
    return int(_table().get(isa, {}).get(func, 0))


def owned(isa: str, func: str, blocks: dict[str, Block]) -> dict[str, Block]:
    """Mark ``blocks`` (built for this function only, never shared with another) as code of
    ``func``; returns them."""
    n = function_bytes(isa, func)
    for b in blocks.values():
        b.func, b.func_bytes = func, n
    return blocks
