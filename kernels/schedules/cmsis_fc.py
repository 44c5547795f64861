"""FULLY_CONNECTED on Armv7E-M + DSP: arm_fully_connected_s8 -> arm_nn_vec_mat_mult_t_s8.

TFLM's CMSIS-NN FC calls arm_fully_connected_s8 (per-tensor weights; per-channel weights
go to arm_fully_connected_per_channel_s8, whose DSP loop has the same structure with the
multiplier/shift loaded per row). One call of the vector x matrix kernel per batch row;
the DSP branch differs on whether the filter zero point is 0 (SXTB16) or not (SXTAB16).
"""

from __future__ import annotations

from mcusim.graph import Graph, Op
from mcusim.isa.schedule import Block, Loop, Program, Rewind
from mcusim.observed import OpData

from .common import per_channel, qparam_rules, weight_zero_point
from .matmul import vec_mat_mult_t_s8

# GCC 12.2 -O2 -mcpu=cortex-m4 of arm_fully_connected_s8.c (the per-channel wrapper compiles
# to the same code): the struct fields TFLM passes (dims, params, quant params; on the
# caller's stack) are read once, and every batch row marshals the 15 arguments of the vector
# x matrix call, 11 of them on the stack.
FC_ENTRY = """
push    {r4, r5, r6, r7, r8, r9, r10, r11, lr}
ldr     r5, [r3]        {stack}      ; input_dims->n: batch count
ldr     r0, [r0]        {stack}      ; ctx->buf: kernel sums
sub     sp, #60
ldrd    r9, r7, [sp, #116]           ; output_dims, output
ldr     r6, [sp, #96]                ; input
ldr     r10, [sp, #100]              ; filter_dims
cbz     r5, .Lfc_done
mov     r4, r1
ldr     r3, [r9, #12]   {stack}      ; output_dims->c
ldr     r1, [r10]       {stack}      ; filter_dims->n
str     r0, [sp, #52]
mov     r8, r2
mov     r11, #1
"""
FC_BATCH_ARGS = """
str     r3, [sp, #24]
ldr     r3, [r8, #4]    {stack}      ; quant_params->shift
str     r3, [sp, #16]
str     r7, [sp]
str     r1, [sp, #20]
str     r11, [sp, #36]
ldr     r2, [r8]        {stack}      ; quant_params->multiplier
ldr     r3, [r4, #8]    {stack}      ; fc_params->output_offset
strd    r3, r2, [sp, #8]
ldr     r3, [r4]        {stack}      ; fc_params->input_offset
str     r3, [sp, #4]
ldr     r1, [r4, #4]    {stack}      ; fc_params->filter_offset
str     r1, [sp, #40]
ldr     r1, [r4, #16]   {stack}      ; activation.max
str     r1, [sp, #32]
ldr     r1, [r4, #12]   {stack}      ; activation.min
ldr     r3, [sp, #112]               ; bias
str     r1, [sp, #28]
mov     r0, r6
ldr     r1, [sp, #104]               ; kernel
ldr     r2, [sp, #52]                ; kernel sums
"""
FC_BATCH_END = """
ldr     r1, [r10]       {stack}
ldr     r3, [r9, #12]   {stack}
subs    r5, #1
add     r6, r1                       ; input += accum depth
add     r7, r3                       ; output += output depth
bne     .Lfc_batches
"""
FC_EXIT = """
movs    r0, #0
add     sp, #60
pop     {r4, r5, r6, r7, r8, r9, r10, r11, pc}
"""

_BLOCKS: dict = {}


def _b(name: str, text: str) -> Block:
    blk = _BLOCKS.get(name)
    if blk is None:
        blk = _BLOCKS[name] = Block.asm(text, name)
    return blk


def fully_connected_program(graph: Graph, op: Op, data: OpData | None = None) -> Program:
    """``data``: the observed count of row pairs with a negative first value per batch row
    (mcusim.observed); without it each batch row takes the schedule's expectation."""
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
    groups = (data.neg_pairs if data is not None else ()) or ((None, batches),)
    items = [_b("fc_entry", FC_ENTRY)]
    for neg, rows in groups:  # batch rows grouped by their count (their order is immaterial)
        items.append(
            Loop(
                "fc_batches",
                rows,
                [
                    _b("fc_batch_args", FC_BATCH_ARGS),
                    *vec_mat_mult_t_s8(out_f, in_f, wofs, pc, neg),
                    _b("fc_batch_end", FC_BATCH_END),
                ],
                # next batch row: the next input vector against the same weights
                addr={
                    "input": Rewind(in_f),
                    "weights": Rewind(0),
                    "bias": Rewind(0),
                    **qparam_rules(),
                },
            )
        )
    items.append(_b("fc_exit", FC_EXIT))
    return Program(items, kernel=kernel, macs=batches * out_f * in_f)
