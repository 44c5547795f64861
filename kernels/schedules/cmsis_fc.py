"""FULLY_CONNECTED on Armv7E-M + DSP: arm_fully_connected_s8 -> arm_nn_vec_mat_mult_t_s8.

TFLM's CMSIS-NN FC calls arm_fully_connected_s8 (per-tensor weights; per-channel weights
go to arm_fully_connected_per_channel_s8, whose DSP loop has the same structure with the
multiplier/shift loaded per row). One call of the vector x matrix kernel per batch row;
the DSP branch differs on whether the filter zero point is 0 (SXTB16) or not (SXTAB16).
"""

from __future__ import annotations

from mcusim.graph import Graph, Op
from mcusim.isa.schedule import Block, Loop, Program, Rewind

from .common import per_channel, weight_zero_point
from .matmul import vec_mat_mult_t_s8

FC_ENTRY = """
push    {r4, r5, r6, r7, lr}
sub     sp, #44
ldr     r4, [sp, #64]
ldr     r5, [r4] {stack}  ; batch count
"""
FC_BATCH_END = """
ldr     r3, [sp, #16]
add     r6, r6, r3                   ; input += accum depth
ldr     r3, [sp, #20]
add     r7, r7, r3                   ; output += output depth
subs    r5, #1
bne     .Lfc_batches
"""
FC_EXIT = """
movs    r0, #0
add     sp, #44
pop     {r4, r5, r6, r7, pc}
"""

_BLOCKS: dict = {}


def _b(name: str, text: str) -> Block:
    blk = _BLOCKS.get(name)
    if blk is None:
        blk = _BLOCKS[name] = Block.asm(text, name)
    return blk


def fully_connected_program(graph: Graph, op: Op) -> Program:
    x = graph.tensor(op.inputs[0])
    w = graph.tensor(op.inputs[1])
    out_f, in_f = int(w.shape[0]), int(w.shape[1])
    batches = max(1, x.size // in_f)
    wofs = weight_zero_point(graph, op) != 0
    pc = per_channel(graph, op)
    kernel = (
        "arm_fully_connected_per_channel_s8 -> arm_nn_vec_mat_mult_t_per_ch_s8"
        if pc
        else "arm_fully_connected_s8 -> arm_nn_vec_mat_mult_t_s8"
    )
    items = [
        _b("fc_entry", FC_ENTRY),
        Loop(
            "fc_batches",
            batches,
            [*vec_mat_mult_t_s8(out_f, in_f, wofs, pc), _b("fc_batch_end", FC_BATCH_END)],
            # next batch row: the next input vector against the same weights
            addr={
                "input": Rewind(in_f),
                "weights": Rewind(0),
                "bias": Rewind(0),
                "qparams": Rewind(0),
            },
        ),
        _b("fc_exit", FC_EXIT),
    ]
    return Program(items, kernel=kernel, macs=batches * out_f * in_f)
