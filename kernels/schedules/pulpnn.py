"""Schedules for RI5CY-class cores with XpulpV2 (GAP8, GAP9 cluster cores): PULP-NN.

``schedule(graph, op)`` is the whole layer on one core; ``schedule_part(graph, op,
part)`` is what one cluster core runs for its :class:`~mcusim.cluster.Part` (same
instruction text, the part's trip counts). INT8: im2col + the 4x2 ``pv.sdotusp.b``
matmul (pulp-nn ``pulp_nn_matmul``); sub-byte layers as pulp-nn-mixed's XpulpV2 path
runs them (values unpacked to bytes, 8-bit dot products); binary x binary with XOR +
``p.cnt``. The shared builder and its sources: :mod:`.pulpnn_common`.
"""

from __future__ import annotations

from mcusim.graph import Graph, Op
from mcusim.isa.schedule import Program

from .pulpnn_common import Target, build, whole_part

TARGET = Target(xpulpnn=False)


def schedule(graph: Graph, op: Op) -> Program:
    """PULP-NN (XpulpV2) schedule of the whole ``op`` on one core."""
    return build(graph, op, whole_part(graph, op), TARGET)


def schedule_part(graph: Graph, op: Op, part) -> Program:
    """PULP-NN (XpulpV2) schedule of one cluster core's ``part`` of ``op``."""
    return build(graph, op, part, TARGET)
