"""μNPU tile models: what a device's neural accelerator can run, and what each layer costs.

A device file's ``[npu]`` table names the tile model (``kind``) and its parameters; the
tile class lives in this package and is built from that table. The placement pass
(mcusim/placement.py) asks each tile which ops it supports, lets it allocate its resources
for the ops placed on it, and asks it for per-layer costs; ops it cannot run go to the
device's CPU with the reason recorded.
"""

from .base import NpuLayerCost, NpuSupport, NpuTile, npu_tile, register_tile  # noqa: F401
