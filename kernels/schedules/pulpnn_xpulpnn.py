"""Schedules for RI5CY cores with the XpulpNN extension (``xpulpnn`` device): PULP-NN
mixed-precision kernels using nibble (``.n``, 8 x 4-bit) and crumb (``.c``, 16 x 2-bit)
dot products on packed data, the MAC&LOAD 4x4 matmul (``pv.mlsdotsup``: a dot product
and the next operand's load in one instruction) and ``pv.qnt.n`` threshold requantisation
(pulp-nn-mixed ``XpulpNN``; Garofalo et al., DATE 2020 and IEEE TETC 2021).

``macload=False`` selects the DATE 2020 kernel generation (4x2 ``pv.sdotusp.n/.c``
without MAC&LOAD), which the published DATE 2020 speedups were measured with.
The shared builder and its sources: :mod:`.pulpnn_common`.
"""

from __future__ import annotations

from mcusim.graph import Graph, Op
from mcusim.isa.schedule import Program

from .pulpnn_common import Target, build, whole_part


def schedule(graph: Graph, op: Op, macload: bool = True) -> Program:
    """XpulpNN schedule of the whole ``op`` on one core."""
    return build(graph, op, whole_part(graph, op), Target(xpulpnn=True, macload=macload))


def schedule_part(graph: Graph, op: Op, part, macload: bool = True) -> Program:
    """XpulpNN schedule of one cluster core's ``part`` of ``op``."""
    return build(graph, op, part, Target(xpulpnn=True, macload=macload))
