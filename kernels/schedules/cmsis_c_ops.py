"""FC, pooling, elementwise, softmax, data movement and the TFLM reference kernels on
Armv6-M (CMSIS-NN pure-C branches; GCC 12.2 -O2 -mcpu=cortex-m0plus; no FPU, no SDIV).

- FULLY_CONNECTED: arm_fully_connected_s8 / _per_channel_s8 -> arm_nn_vec_mat_mult_t_s8
  (C branch: 3 rows per pass) once per batch row.
- AVERAGE_POOL_2D: arm_avgpool_s8 C branch ("adapted from arm_avepool_q7_HWC"): per output
  element and channel a walk over the whole window with a bounds test per tap, then
  (sum +/- count/2) / count through __aeabi_idiv; no scratch buffer.
- MAX_POOL_2D: arm_max_pool_s8 (same C for every non-MVE core): memcpy of the first tap,
  compare_and_replace_if_larger per later tap and clamp_output at the end; their
  arm_nn_read_s8x4 / arm_nn_write_s8x4_ia are 4-byte memcpy calls on Armv6-M.
- ADD/SUB/MUL (same shapes): arm_elementwise_add_s8 / _mul_s8 element loops (three / one
  arm_nn_requantize per element, each an __aeabi_lmul call).
- SOFTMAX: arm_softmax_s8 -> arm_nn_softmax_common_s8 in C: every gemmlowp fixed-point
  multiply (MUL_SAT) is an __aeabi_lmul call; exp_on_negative_values takes 12 of them.
- Other ops: TFLM reference kernels (MultiplyByQuantizedMultiplier with a 64-bit product,
  soft-float __aeabi_* calls for (DE)QUANTIZE); RESHAPE/CONCATENATION: newlib memcpy.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from mcusim.errors import UnsupportedOpError
from mcusim.graph import Graph, Op
from mcusim.isa.schedule import Block, Loop, Program, Rewind

from .cmsis_c_common import (
    entry_block,
    exit_block,
    idiv_block,
    memcpy_items,
    mul_sat_items,
    requant_out_items,
)
from .cmsis_c_matmul import vec_mat_mult_t_s8_c
from .common import (
    PixelWalk,
    per_channel,
    pixels_by,
    pool_geom,
    qparam_rules,
    taps_key,
    weight_zero_point,
)
from .mve_common import tap_walk


def _b(text: str, name: str) -> Block:
    return _block_cache(text, name)


@cache
def _block_cache(text: str, name: str) -> Block:
    return Block.asm(text, name)


LOOP_END = "ldr r3, [sp, #16]\nsubs r3, #1\nstr r3, [sp, #16]\nbne .Lelems\n"


# ----------------------------------------------------------------- fully connected
FC_BATCH_END = """
ldr    r3, [sp, #16]
ldr    r2, [sp, #20]
adds   r3, r3, r2                   ; input += accum depth
str    r3, [sp, #16]
ldr    r3, [sp, #24]
ldr    r2, [sp, #28]
adds   r3, r3, r2                   ; output += output depth
str    r3, [sp, #24]
subs   r5, #1
bne    .Lfc_batches
"""


def fully_connected_c_program(graph: Graph, op: Op) -> Program:
    x = graph.tensor(op.inputs[0])
    w = graph.tensor(op.inputs[1])
    out_f, in_f = int(w.shape[0]), int(w.shape[1])
    batches = max(1, x.size // in_f)
    wofs = weight_zero_point(graph, op) != 0
    pc = per_channel(graph, op)
    fn = "arm_fully_connected_per_channel_s8" if pc else "arm_fully_connected_s8"
    inner = "arm_nn_vec_mat_mult_t_per_ch_s8" if pc else "arm_nn_vec_mat_mult_t_s8"
    items = [
        entry_block(fn),
        Loop(
            "c_fc_batches",
            batches,
            [*vec_mat_mult_t_s8_c(out_f, in_f, wofs, pc), _b(FC_BATCH_END, "c_fc_batch_end")],
            # one input row per batch; every batch re-reads weights, biases, parameters
            addr={
                "input": Rewind(in_f),
                "output": Rewind(out_f),
                **{r: Rewind(0) for r in ("weights", "bias")},
                **qparam_rules(),
            },
        ),
        exit_block(fn),
    ]
    return Program(items, kernel=f"{fn} -> {inner} (C)", macs=batches * out_f * in_f)


# ------------------------------------------------------------------------- pooling
AVG_OUT_SETUP = """
ldr    r3, [sp, #40]                ; i_y * stride_y - pad_y
str    r3, [sp, #44]                ; k_y
movs   r6, #0                       ; sum
movs   r5, #0                       ; count
"""
AVG_ROW = """
ldr    r3, [sp, #44]
ldr    r2, [sp, #48]                ; input_x * ch
muls   r2, r3
ldr    r1, [sp, #52]
adds   r2, r2, r1                   ; row pointer
ldr    r3, [sp, #56]                ; k_x start
"""
# in-bounds tap: sign test of (k_x | k_y), two upper-bound tests, load, sum, count
AVG_TAP_IN = """
movs   r0, r1
orrs   r0, r3
bmi    .Lavg_skip
cmp    r6, r1
ble    .Lavg_skip
cmp    r8, r3
ble    .Lavg_skip
movs   r0, #0
ldrsb  r0, [r2, r0]   {input}
add    fp, r0
movs   r0, #1
mov    ip, r0
add    sl, ip
adds   r3, r3, #1
adds   r2, r2, r7
cmp    r3, r4
bne    .Lavg_taps
"""
AVG_TAP_OUT = """
movs   r0, r1
orrs   r0, r3
bmi    .Lavg_skip  {taken}
adds   r3, r3, #1
adds   r2, r2, r7
cmp    r3, r4
bne    .Lavg_taps
"""
AVG_ROW_END = """
ldr    r3, [sp, #44]
adds   r3, #1
str    r3, [sp, #44]
ldr    r2, [sp, #60]
cmp    r3, r2
blt    .Lavg_rows
"""
AVG_DIV = """
mov    r1, sl                       ; count
asrs   r3, r1, #1                   ; count / 2
mov    r0, fp
cmp    r0, #0
ble    .Lavg_neg
adds   r0, r0, r3
bl     __aeabi_idiv
"""
AVG_STORE = """
ldr    r3, [sp, #64]                ; act_min
cmp    r0, r3
bge    .Lavg_min_ok  {taken}
ldr    r3, [sp, #68]                ; act_max
cmp    r0, r3
ble    .Lavg_max_ok  {taken}
ldr    r3, [sp, #72]
ldr    r2, [sp, #76]
strb   r0, [r3, r2]   {output}
ldr    r3, [sp, #80]
adds   r3, #1
str    r3, [sp, #80]
ldr    r2, [sp, #84]
cmp    r3, r2
blt    .Lavg_outputs
"""


def avg_pool_c_program(graph: Graph, op: Op) -> Program:
    g = pool_geom(graph, op)
    taps = g.k_h * g.k_w
    items: list = []
    classes = pixels_by(g, taps_key(g))
    c = g.in_c
    for n_valid, npix in sorted(g.taps_valid().items()):
        body = [
            _b(AVG_OUT_SETUP, "c_avg_out_setup"),
            Loop("c_avg_rows", g.k_h, [_b(AVG_ROW, "c_avg_row"), _b(AVG_ROW_END, "c_avg_row_end")]),
            # the in-bounds taps of the window, one channel: its loads do not move the
            # pointer ([r2, r0], r0 = 0)
            Loop(
                "c_avg_taps_in",
                n_valid,
                [_b(AVG_TAP_IN, "c_avg_tap_in")],
                addr={"input": tap_walk(g, classes[n_valid], c)},
            ),
            Loop("c_avg_taps_out", taps - n_valid, [_b(AVG_TAP_OUT, "c_avg_tap_out")]),
            _b(AVG_DIV, "c_avg_div"),
            idiv_block(),
            _b(AVG_STORE, "c_avg_store"),
        ]
        # one output per (pixel, channel): channels one byte apart, the next pixel's
        # window stride_x pixels on (an estimate across the class's row ends: the pointers
        # continue from class to class); the output store does not move its pointer
        items.append(
            Loop(
                f"c_avg_outputs_{n_valid}taps",
                npix * g.in_c,
                body,
                addr={
                    "input": Rewind(1, every=c, skip=(g.s_w - 1) * c),
                    "output": Rewind(1),
                },
            )
        )
    batch = {"input": Rewind(g.in_h * g.in_w * c), "output": Rewind(g.out_pixels * c)}
    prog = [
        entry_block("arm_avgpool_s8"),
        Loop("batches", g.batches, items, addr=batch),
        exit_block("arm_avgpool_s8"),
    ]
    return Program(prog, kernel="arm_avgpool_s8 (C)", macs=0)


MAX_PIXEL = """
ldr    r3, [sp, #40]
ldr    r2, [sp, #44]                ; stride_x
adds   r3, r3, r2
str    r3, [sp, #40]                ; base_idx_x
rsbs   r2, r3, #0
asrs   r1, r2, #31
bics   r2, r1                       ; ker_x_start
str    r2, [sp, #48]
"""
MAX_TAP = """
ldr    r3, [sp, #48]
ldr    r2, [sp, #40]
adds   r3, r3, r2
ldr    r2, [sp, #52]                ; row base
ldr    r1, [sp, #56]                ; channel_in
muls   r3, r1
adds   r1, r2, r3                   ; start
ldr    r0, [sp, #60]                ; dst
ldr    r2, [sp, #56]
"""
MAX_FIRST_CALL = "bl memcpy\n"
MAX_CMP_CALL = """
bl     compare_and_replace_if_larger_s8
push   {r4, r5, r6, r7, lr}
sub    sp, #12
movs   r5, r0
movs   r6, r1
asrs   r7, r2, #2
"""
MAX_CMP4_READ = """
movs   r2, #4
movs   r1, r5
add    r0, sp, #4
bl     memcpy
"""
MAX_CMP4_READ2 = """
movs   r2, #4
movs   r1, r6
add    r0, sp, #8
bl     memcpy
"""
MAX_CMP4 = """
adds   r6, #4
add    r3, sp, #4
add    r2, sp, #8
movs   r0, #0
ldrsb  r0, [r3, r0]   {stack}
movs   r1, #0
ldrsb  r1, [r2, r1]   {stack}
cmp    r1, r0
ble    .Lmx0  {taken}
movs   r0, #1
ldrsb  r0, [r3, r0]   {stack}
movs   r1, #1
ldrsb  r1, [r2, r1]   {stack}
cmp    r1, r0
ble    .Lmx1  {taken}
movs   r0, #2
ldrsb  r0, [r3, r0]   {stack}
movs   r1, #2
ldrsb  r1, [r2, r1]   {stack}
cmp    r1, r0
ble    .Lmx2  {taken}
movs   r0, #3
ldrsb  r0, [r3, r0]   {stack}
movs   r1, #3
ldrsb  r1, [r2, r1]   {stack}
cmp    r1, r0
ble    .Lmx3  {taken}
movs   r2, #4
add    r1, sp, #4
movs   r0, r5
bl     memcpy
"""
MAX_CMP4_END = """
adds   r5, #4
subs   r7, #1
bne    .Lmax_cmp4
"""
MAX_CMP1 = """
movs   r0, #0
ldrsb  r0, [r5, r0]   {output}
movs   r1, #0
ldrsb  r1, [r6, r1]   {input}
cmp    r1, r0
ble    .Lmx_skip  {taken}
adds   r5, #1
adds   r6, #1
subs   r4, #1
bne    .Lmax_cmp1
"""
MAX_CMP_RET = "add sp, #12\npop {r4, r5, r6, r7, pc}\n"
MAX_TAP_END = """
ldr    r3, [sp, #48]
adds   r3, #1
str    r3, [sp, #48]
ldr    r2, [sp, #64]
cmp    r3, r2
blt    .Lmax_taps
"""
MAX_PIXEL_END = """
ldr    r3, [sp, #60]
ldr    r2, [sp, #56]
adds   r3, r3, r2
str    r3, [sp, #60]                ; dst += channel_in
ldr    r3, [sp, #68]
adds   r3, #1
str    r3, [sp, #68]
ldr    r2, [sp, #72]
cmp    r3, r2
blt    .Lmax_pixels
"""
CLAMP_CALL = """
bl     clamp_output
push   {r4, r5, r6, r7, lr}
sub    sp, #12
movs   r5, r0
asrs   r7, r1, #2
"""
CLAMP4_READ = """
movs   r2, #4
movs   r1, r5
add    r0, sp, #4
bl     memcpy
"""
CLAMP4 = """
add    r3, sp, #4
movs   r0, #0
ldrsb  r0, [r3, r0]   {stack}
cmp    r0, r2
bge    .Lc0  {taken}
cmp    r0, r4
ble    .Lc0b  {taken}
strb   r0, [r3]   {stack}
movs   r0, #1
ldrsb  r0, [r3, r0]   {stack}
cmp    r0, r2
bge    .Lc1  {taken}
cmp    r0, r4
ble    .Lc1b  {taken}
strb   r0, [r3, #1]   {stack}
movs   r0, #2
ldrsb  r0, [r3, r0]   {stack}
cmp    r0, r2
bge    .Lc2  {taken}
cmp    r0, r4
ble    .Lc2b  {taken}
strb   r0, [r3, #2]   {stack}
movs   r0, #3
ldrsb  r0, [r3, r0]   {stack}
cmp    r0, r2
bge    .Lc3  {taken}
cmp    r0, r4
ble    .Lc3b  {taken}
strb   r0, [r3, #3]   {stack}
movs   r2, #4
add    r1, sp, #4
movs   r0, r5
bl     memcpy
"""
CLAMP4_END = """
adds   r5, #4
subs   r7, #1
bne    .Lclamp4
"""
CLAMP1 = """
movs   r0, #0
ldrsb  r0, [r5, r0]   {output}
cmp    r0, r2
bge    .Lc  {taken}
cmp    r0, r4
ble    .Lcb  {taken}
strb   r0, [r5]       {output}
adds   r5, #1
subs   r6, #1
bne    .Lclamp1
"""


def max_pool_c_program(graph: Graph, op: Op) -> Program:
    g = pool_geom(graph, op)
    c = g.in_c
    aligned = c % 4 == 0
    read4 = lambda src, blk: [blk, *memcpy_items(4, False, src, "stack")]  # noqa: E731
    cmp4_blk = _b(MAX_CMP4, "c_max_cmp4")
    cmp4 = [
        *read4("output", _b(MAX_CMP4_READ, "c_max_cmp4_read_dst")),
        *read4("input", _b(MAX_CMP4_READ2, "c_max_cmp4_read_src")),
        cmp4_blk,
        *memcpy_items(4, False, "stack", "output"),
        _b(MAX_CMP4_END, "c_max_cmp4_end"),
    ]
    # address rules: 4 channels per step, the output word read then written back in place
    cmp4_rules = {
        "addr": {"output": Rewind(4), "input": Rewind(4)},
        "moves": {cmp4_blk: {"output": -4}},
    }
    classes = pixels_by(g, taps_key(g))
    walk = PixelWalk(g)
    pixels: list = []
    for n_taps, npix in sorted(g.taps_valid().items()):
        w = tap_walk(g, classes[n_taps], c)
        body = [
            _b(MAX_PIXEL, "c_max_pixel"),
            Loop(
                "c_max_first_tap",
                1 if n_taps else 0,
                addr={"output": Rewind(0)},  # the output pixel is merged in place per tap
                body=[
                    _b(MAX_TAP, "c_max_tap"),
                    _b(MAX_FIRST_CALL, "c_max_first_call"),
                    *memcpy_items(c, aligned, "input", "output"),
                    _b(MAX_TAP_END, "c_max_tap_end"),
                ],
            ),
            Loop(
                "c_max_taps",
                max(n_taps - 1, 0),
                # the other taps of the window (the first copy left the input one tap on)
                addr={
                    "output": Rewind(0),
                    "input": Rewind(c, every=w.every, skip=w.skip, phase=1),
                },
                body=[
                    _b(MAX_TAP, "c_max_tap"),
                    _b(MAX_CMP_CALL, "c_max_cmp_call"),
                    Loop("c_max_cmp4", c // 4, cmp4, **cmp4_rules),
                    Loop("c_max_cmp1", c % 4, [_b(MAX_CMP1, "c_max_cmp1")]),
                    _b(MAX_CMP_RET, "c_max_cmp_ret"),
                    _b(MAX_TAP_END, "c_max_tap_end"),
                ],
            ),
            _b(MAX_PIXEL_END, "c_max_pixel_end"),
        ]
        pixels.append(
            Loop(f"c_max_pixels_{n_taps}taps", npix, body, addr=walk.rules(classes[n_taps]))
        )
    total = g.out_pixels * c
    clamp4_blk = _b(CLAMP4, "c_clamp4")
    back = -walk.used["output"]  # clamp_output runs over the whole output from its start
    clamp = [
        _b(CLAMP_CALL, "c_clamp_call"),
        Loop(
            "c_clamp4",
            total // 4,
            [
                _b(CLAMP4_READ, "c_clamp4_read"),
                *memcpy_items(4, False, "output", "stack"),
                clamp4_blk,
                *memcpy_items(4, False, "stack", "output"),
                _b(CLAMP4_END, "c_clamp4_end"),
            ],
            addr={"output": Rewind(4, start=back)},
            moves={clamp4_blk: {"output": -4}},
        ),
        Loop(
            "c_clamp1",
            total % 4,
            [_b(CLAMP1, "c_clamp1")],
            addr={"output": Rewind(1, start=0 if total // 4 else back)},
        ),
        _b(MAX_CMP_RET, "c_clamp_ret"),
    ]
    batch = {"input": Rewind(g.in_h * g.in_w * c), "output": Rewind(total)}
    items = [
        entry_block("arm_max_pool_s8"),
        Loop("batches", g.batches, [*pixels, *clamp], addr=batch),
        exit_block("arm_max_pool_s8"),
    ]
    return Program(items, kernel="arm_max_pool_s8 (C)", macs=0)


# ---------------------------------------------------------------------- elementwise
ADD_LOAD = """
ldr    r3, [sp, #8]
movs   r0, #0
ldrsb  r0, [r3, r0]   {input}
adds   r3, #1
str    r3, [sp, #8]
ldr    r2, [sp, #12]                ; input_1_offset
adds   r0, r0, r2
ldr    r2, [sp, #24]                ; left_shift
lsls   r0, r2
"""
ADD_LOAD2 = """
str    r3, [sp, #32]                ; input_1 (requantized)
ldr    r3, [sp, #36]
movs   r0, #0
ldrsb  r0, [r3, r0]   {input2}
adds   r3, #1
str    r3, [sp, #36]
ldr    r2, [sp, #40]
adds   r0, r0, r2
ldr    r2, [sp, #24]
lsls   r0, r2
"""
ADD_SUM = """
ldr    r2, [sp, #32]
adds   r0, r3, r2                   ; input_1 + input_2
"""
REQ_ONLY_POST = """
movs   r2, #128
movs   r3, #0
lsls   r2, r2, #23
adds   r0, r0, r2
adcs   r1, r1, r3
mov    r2, r8
lsls   r3, r1, #1
lsrs   r0, r0, #31
orrs   r3, r0
cmp    r2, #0
bgt    .Lleft_only
b      .Lrdbpot
movs   r1, #1
rsbs   r2, r2, #0
lsls   r1, r1, r2
subs   r1, r1, #1
movs   r0, r1
ands   r0, r3
asrs   r3, r3, r2
asrs   r2, r1, #1
lsrs   r1, r3, #31
adds   r2, r2, r1
cmp    r0, r2
bgt    .Lround_up
"""
MUL_LOAD = """
ldr    r3, [sp, #8]
movs   r0, #0
ldrsb  r0, [r3, r0]   {input}
adds   r3, #1
str    r3, [sp, #8]
ldr    r2, [sp, #12]
adds   r0, r0, r2
ldr    r3, [sp, #36]
movs   r1, #0
ldrsb  r1, [r3, r1]   {input2}
adds   r3, #1
str    r3, [sp, #36]
ldr    r2, [sp, #40]
adds   r1, r1, r2
muls   r0, r1                       ; (a + off1) * (b + off2)
"""


def _req_only_items(name: str) -> list:
    """arm_nn_requantize without the clamp/store (intermediate values of ADD)."""
    from .cmsis_c_common import REQ_PRE_PT, lmul_block

    return [_b(REQ_PRE_PT, f"{name}_pre"), lmul_block(), _b(REQ_ONLY_POST, f"{name}_post")]


def elementwise_c_program(graph: Graph, op: Op) -> Program:
    n = graph.tensor(op.outputs[0]).size
    end = _b("ldr r2, [sp, #28]\nadds r2, #1\nstr r2, [sp, #28]\n" + LOOP_END, "c_elem_end")
    if op.kind == "mul":
        fn = "arm_elementwise_mul_s8"
        body = [_b(MUL_LOAD, "c_mul_load"), *requant_out_items(False, "r0", "mul"), end]
    else:
        fn = "arm_elementwise_add_s8"
        body = [
            _b(ADD_LOAD, "c_add_load"),
            *_req_only_items("c_add_req1"),
            _b(ADD_LOAD2, "c_add_load2"),
            *_req_only_items("c_add_req2"),
            _b(ADD_SUM, "c_add_sum"),
            *requant_out_items(False, "r0", "add"),
            end,
        ]
    # one element of each input and of the output per iteration (the store does not
    # move its pointer)
    step = {t: Rewind(1) for t in ("input", "input2", "output")}
    items = [entry_block(fn), Loop("c_elementwise", n, body, addr=step), exit_block(fn)]
    return Program(items, kernel=f"{fn} (C)", macs=0)


# ------------------------------------------------------------------------- softmax
def _exp_on_negative_items() -> list:
    """arm_nn_exp_on_negative_values: 5 MUL_SAT for the Taylor part on [-1/4, 0), then a
    MUL_SAT per remainder bit (7 SELECT_USING_MASK steps, both sides computed)."""
    head = _b(
        """
        ldr    r3, [sp, #8]              ; 0x00FFFFFF
        movs   r1, r0
        ands   r1, r3
        ldr    r3, [sp, #12]             ; 1 << 24
        subs   r1, r1, r3                ; val_mod_minus_quarter
        subs   r2, r1, r0
        str    r2, [sp, #16]             ; remainder
        lsls   r0, r1, #5
        ldr    r3, [sp, #20]             ; 1 << 28
        adds   r0, r0, r3                ; x
        str    r0, [sp, #24]
        movs   r1, r0
        """,
        "c_exp_head",
    )
    mid = _b(
        """
        str    r0, [sp, #28]
        ldr    r1, [sp, #24]
        asrs   r2, r0, #2
        adds   r0, r0, r2
        """,
        "c_exp_taylor_step",
    )
    bit = _b(
        """
        ldr    r1, [sp, #32]             ; exp constant of this bit
        str    r0, [sp, #28]
        """,
        "c_exp_bit_arg",
    )
    sel = _b(
        """
        ldr    r3, [sp, #16]
        ldr    r2, [sp, #36]             ; bit mask
        tst    r3, r2
        beq    .Lexp_keep
        ldr    r2, [sp, #28]
        """,
        "c_exp_bit_select",
    )
    items: list = [head]
    for _ in range(5):
        items += [*mul_sat_items("exp"), mid]
    for _ in range(7):
        items += [bit, *mul_sat_items("exp"), sel]
    items.append(_b("cmp r0, #0\nbne .Lexp_done {taken}\n", "c_exp_tail"))
    return items


SM_MAX = """
movs   r3, #0
ldrsb  r3, [r1, r3]   {input}
adds   r1, #1
cmp    r3, r4
ble    .Lsm_max_keep  {taken}
subs   r2, #1
bne    .Lsm_max
"""
SM_DIFF = """
ldr    r3, [sp, #40]
movs   r0, #0
ldrsb  r0, [r3, r0]   {input}
adds   r3, #1
str    r3, [sp, #40]
subs   r0, r0, r4                   ; diff
cmp    r0, r7                       ; >= diff_min
blt    .Lsm_skip
ldr    r3, [sp, #44]
muls   r0, r3                       ; diff * (1 << shift)
ldr    r1, [sp, #48]                ; mult
"""
SM_SUM_END = """
asrs   r0, r0, #12                  ; DIV_POW2(exp, ACCUM_BITS)
adds   r6, r6, r0
ldr    r3, [sp, #52]
subs   r3, #1
str    r3, [sp, #52]
bne    .Lsm_sum
"""
SM_MID = """
movs   r0, r6
bl     __clzsi2
movs   r5, r0
movs   r0, r6
lsls   r0, r5
movs   r3, #128
lsls   r3, r3, #24
subs   r0, r0, r3
"""
SM_MID_STEP = "adds r1, r1, r0\nstr r1, [sp, #56]\n"
SM_MID_END = """
str    r0, [sp, #60]                ; shifted_scale
movs   r3, #35
subs   r3, r3, r5
str    r3, [sp, #64]                ; bits_over_unit
"""
SM_OUT_END = """
ldr    r3, [sp, #64]
movs   r1, #1
lsls   r1, r3
subs   r1, #1
movs   r2, r0
ands   r2, r1
asrs   r0, r3
asrs   r1, r1, #1
lsrs   r3, r0, #31
adds   r1, r1, r3
cmp    r2, r1
ble    .Lsm_noround  {taken}
subs   r0, #128
cmp    r0, #127
ble    .Lsm_sat  {taken}
ldr    r3, [sp, #68]
strb   r0, [r3]       {output}
adds   r3, #1
str    r3, [sp, #68]
ldr    r3, [sp, #52]
subs   r3, #1
str    r3, [sp, #52]
bne    .Lsm_out
"""
SM_ROW_SETUP = """
ldr    r1, [sp, #40]
movs   r4, #0
ldrsb  r4, [r1, r4]   {input}
adds   r1, #1
ldr    r2, [sp, #72]
subs   r2, #1
"""
SM_ROW_END = """
ldr    r3, [sp, #76]
subs   r3, #1
str    r3, [sp, #76]
bne    .Lsm_rows
"""


def softmax_c_program(graph: Graph, op: Op) -> Program:
    x = graph.tensor(op.inputs[0])
    row = int(x.shape[-1]) if x.shape else 1
    rows = max(1, x.size // max(row, 1))
    exp = _exp_on_negative_items()
    clz = _b(
        "movs r1, #28\nmovs r3, #1\nlsls r3, r3, #16\ncmp r0, r3\nbcc .Lc16 {taken}\n"
        "lsrs r3, r3, #8\ncmp r0, r3\nbcc .Lc8\nlsrs r0, r0, #8\nsubs r1, #8\n"
        "lsrs r3, r3, #4\ncmp r0, r3\nbcc .Lc4 {taken}\nldr r2, =clz_table\n"
        "ldrb r0, [r2, r0] {const}\nadds r0, r0, r1\nbx lr\n",
        "__clzsi2",
    )
    mid: list = [_b(SM_MID, "c_sm_mid"), clz]
    for _ in range(4):  # one_over_one_plus_x_for_x_in_0_1: 1 + 3 Newton steps x 2
        mid += [*mul_sat_items("rcp"), _b(SM_MID_STEP, "c_sm_mid_step")]
    for _ in range(4):
        mid += [*mul_sat_items("rcp"), _b(SM_MID_STEP, "c_sm_mid_step")]
    mid.append(_b(SM_MID_END, "c_sm_mid_end"))
    body = [
        _b(SM_ROW_SETUP, "c_sm_row_setup"),
        Loop("c_sm_max", row - 1, [_b(SM_MAX, "c_sm_max")]),
        Loop(
            "c_sm_sum",
            row,
            [_b(SM_DIFF, "c_sm_diff"), *mul_sat_items("sm"), *exp, _b(SM_SUM_END, "c_sm_sum_end")],
            addr={"input": Rewind(1, start=-row)},  # the row again, from its start
        ),
        *mid,
        Loop(
            "c_sm_out",
            row,
            [
                _b(SM_DIFF, "c_sm_diff"),
                *mul_sat_items("sm"),
                *exp,
                _b("ldr r1, [sp, #60]\n", "c_sm_scale"),
                *mul_sat_items("sm"),
                _b(SM_OUT_END, "c_sm_out_end"),
            ],
            # the row a third time; one output per element (the store's pointer
            # increment is undone by the counter decrement through the same register)
            addr={"input": Rewind(1, start=-row), "output": Rewind(1)},
        ),
        _b(SM_ROW_END, "c_sm_row_end"),
    ]
    items = [
        entry_block("arm_nn_softmax_common_s8"),
        Loop("c_sm_rows", rows, body, addr={"input": Rewind(row), "output": Rewind(row)}),
        exit_block("arm_nn_softmax_common_s8"),
    ]
    return Program(
        items,
        kernel="arm_softmax_s8 -> arm_nn_softmax_common_s8 (C)",
        macs=0,
        notes=["every element assumed >= diff_min (upper bound)"],
    )


# ------------------------------------------------- TFLM reference kernels (Thumb-1)
# MultiplyByQuantizedMultiplier: left shift, SaturatingRoundingDoublingHighMul (MUL_SAT,
# an lmul call), RoundingDivideByPOT.
RDBPOT = """
ldr    r2, [sp, #12]                ; right shift
movs   r1, #1
lsls   r1, r2
subs   r1, #1
movs   r3, r0
ands   r3, r1
asrs   r0, r2
asrs   r1, r1, #1
lsrs   r2, r0, #31
adds   r1, r1, r2
cmp    r3, r1
ble    .Lno_round  {taken}
"""
REF_LOAD = """
ldr    r3, [sp, #20]
movs   r0, #0
ldrsb  r0, [r3, r0]   {input}
adds   r3, #1
str    r3, [sp, #20]
subs   r0, r0, r7                   ; - input zero point
ldr    r2, [sp, #8]                 ; left shift
lsls   r0, r2
ldr    r2, [sp, #4]                 ; multiplier
"""
REF_CLAMP_STORE = """
add    r0, r8                       ; + output zero point
cmp    r0, r5
bge    .Lref_min_ok  {taken}
cmp    r0, r6
ble    .Lref_max_ok  {taken}
ldr    r3, [sp, #24]
strb   r0, [r3]       {output}
adds   r3, #1
str    r3, [sp, #24]
"""
REF_INDEX4 = """
ldr    r3, [sp, #28]
ldr    r2, [sp, #32]
muls   r3, r2
add    r3, ip
ldr    r2, [sp, #36]
muls   r3, r2
add    r3, lr
ldr    r2, [sp, #40]
adds   r1, r1, #1
cmp    r1, r2
blt    .Lidx_ok  {taken}
"""
# Soft-float helpers of libgcc for Armv6-M (no FPU), as far as one call executes them:
# unpack, normalise (a CLZ-free shift loop folded to its common length), pack.
SOFTFLOAT = {
    "__aeabi_i2f": 18,
    "__aeabi_fmul": 40,
    "__aeabi_fdiv": 70,
    "__aeabi_fadd": 35,
    "__aeabi_f2iz": 16,
    "__aeabi_fcmpge": 14,
}


@cache
def _softfloat(name: str) -> Block:
    n = SOFTFLOAT[name]
    body = "push {r4, r5, lr}\n" + "lsls r2, r0, #1\nlsrs r3, r2, #24\n" * ((n - 8) // 2)
    body += "orrs r0, r3\npop {r4, r5, pc}\n"
    return Block.asm(body, name, shared=True)


def _ff_call(name: str) -> list:
    return [_b(f"bl {name}\n", f"c_call_{name}"), _softfloat(name)]


def _requant_elem() -> list:
    return [_b(REF_LOAD, "c_ref_load"), *mul_sat_items("ref"), _b(RDBPOT, "c_ref_rdbpot")]


def _ref_items(kind: str) -> list:
    end = _b(LOOP_END, "c_ref_loop_end")
    store = _b(REF_CLAMP_STORE, "c_ref_clamp_store")
    if kind == "requant":
        return [*_requant_elem(), store, end]
    if kind == "clamp":
        return [_b(REF_LOAD.split("subs")[0], "c_ref_load_raw"), store, end]
    if kind == "hard_swish":
        hs = _b(
            """
            lsls   r1, r0, #7
            ldr    r2, [sp, #44]
            movs   r3, r1
            muls   r3, r2
            asrs   r3, r3, #15
            ldr    r2, [sp, #48]
            movs   r4, r1
            muls   r4, r2
            asrs   r4, r4, #15
            ldr    r2, [sp, #52]
            lsls   r4, r2
            movs   r2, #128
            lsls   r2, r2, #8
            adds   r4, r4, r2
            asrs   r4, r4, #1
            cmp    r4, #0
            bge    .Lhs_pos  {taken}
            movs   r0, r3
            muls   r0, r4
            asrs   r0, r0, #15
            ldr    r2, [sp, #56]
            asrs   r0, r2
            """,
            "c_ref_hard_swish",
        )
        return [_b(REF_LOAD, "c_ref_load"), hs, store, end]
    if kind == "dequantize":
        fstore = _b(
            "ldr r3, [sp, #24]\nstr r0, [r3] {output}\nadds r3, #4\nstr r3, [sp, #24]\n",
            "c_ref_fstore",
        )
        return [
            _b(REF_LOAD.split("ldr    r2, [sp, #8]")[0], "c_ref_load_zp"),
            *_ff_call("__aeabi_i2f"),
            _b("ldr r1, [sp, #44]\n", "c_ref_scale"),
            *_ff_call("__aeabi_fmul"),
            fstore,
            end,
        ]
    if kind == "quantize_float":
        fload = _b(
            "ldr r3, [sp, #20]\nldr r0, [r3] {input}\nadds r3, #4\nstr r3, [sp, #20]\n"
            "ldr r1, [sp, #44]\n",
            "c_ref_fload",
        )
        return [
            fload,
            *_ff_call("__aeabi_fdiv"),
            *_ff_call("__aeabi_fadd"),
            *_ff_call("__aeabi_f2iz"),
            store,
            end,
        ]
    if kind == "sigmoid":
        # input rescale (MBQM), exp_on_negative_values, 1/(1+x) (4 MUL_SAT), output shift
        items = [*_requant_elem(), _b("cmp r0, #0\nble .Lsig_neg {taken}\n", "c_ref_sig_sign")]
        items += _exp_on_negative_items()
        for _ in range(4):
            items += [*mul_sat_items("ref"), _b("adds r1, r1, r0\n", "c_ref_sig_step")]
        items += [_b("asrs r0, r0, #23\n", "c_ref_sig_out"), store, end]
        return items
    if kind == "pad":
        return [
            _b(
                """
                ldr    r3, [sp, #44]
                cmp    r1, r3
                blt    .Lpad_value
                ldr    r3, [sp, #48]
                cmp    r1, r3
                bge    .Lpad_value
                ldr    r3, [sp, #20]
                ldrb   r0, [r3]       {input}
                adds   r3, #1
                str    r3, [sp, #20]
                ldr    r3, [sp, #24]
                strb   r0, [r3]       {output}
                adds   r3, #1
                str    r3, [sp, #24]
                adds   r1, #1
                """,
                "c_ref_pad",
            ),
            end,
        ]
    if kind == "gather":
        return [
            _b(REF_INDEX4, "c_ref_index4"),
            _b(
                "ldr r2, [sp, #20]\nldrb r0, [r2, r3] {input}\nldr r3, [sp, #24]\n"
                "strb r0, [r3] {output}\nadds r3, #1\nstr r3, [sp, #24]\n",
                "c_ref_gather",
            ),
            end,
        ]
    if kind in ("broadcast_add", "broadcast_mul"):
        ld = _b(
            "ldr r2, [sp, #20]\nmovs r0, #0\nadds r2, r2, r3\nldrsb r0, [r2, r0] {input}\n"
            "ldr r2, [sp, #60]\nadds r0, r0, r2\nstr r0, [sp, #64]\n",
            "c_ref_bload1",
        )
        ld2 = _b(
            "ldr r2, [sp, #68]\nmovs r0, #0\nadds r2, r2, r3\nldrsb r0, [r2, r0] {input2}\n"
            "ldr r2, [sp, #72]\nadds r0, r0, r2\n",
            "c_ref_bload2",
        )
        idx = _b(REF_INDEX4, "c_ref_index4")
        if kind == "broadcast_mul":
            mul = _b("ldr r1, [sp, #64]\nmuls r0, r1\n", "c_ref_bmul")
            return [
                idx,
                ld,
                idx,
                ld2,
                mul,
                *mul_sat_items("ref"),
                _b(RDBPOT, "c_ref_rdbpot"),
                store,
                end,
            ]
        req = [*mul_sat_items("ref"), _b(RDBPOT, "c_ref_rdbpot")]
        return [
            idx,
            ld,
            idx,
            ld2,
            *req,
            _b("str r0, [sp, #64]\n", "c_ref_bsave"),
            *req,
            _b("ldr r1, [sp, #64]\nadds r0, r0, r1\n", "c_ref_bsum"),
            *req,
            store,
            end,
        ]
    raise UnsupportedOpError(f"no Armv6-M reference schedule {kind!r}")


def _elementwise_ref(kind: str, n: int, kernel: str) -> Program:
    fn = "tflm_reference"
    items = [entry_block(fn), Loop(f"c_ref_{kind}", n, _ref_items(kind)), exit_block(fn)]
    return Program(items, kernel=kernel)


def reference_c_program(graph: Graph, op: Op) -> Program:
    x = graph.tensor(op.inputs[0])
    y = graph.tensor(op.outputs[0])
    n_out = y.size
    in_dt = x.dtype.name.lower()
    out_dt = y.dtype.name.lower()
    k = op.kind
    ints = in_dt.startswith(("int", "uint")) and out_dt.startswith(("int", "uint"))
    if k in ("relu", "quantize") and ints:
        return _elementwise_ref("requant", n_out, f"tflm {k} (reference, C)")
    if k == "relu6":
        return _elementwise_ref("clamp", n_out, "tflm relu6 (reference, C)")
    if k == "quantize":
        return _elementwise_ref("quantize_float", n_out, "tflm quantize float->int (soft-float)")
    if k == "dequantize":
        return _elementwise_ref("dequantize", n_out, "tflm dequantize (soft-float)")
    if k in ("logistic", "tanh"):
        return _elementwise_ref("sigmoid", n_out, f"tflm {k} int8 (reference, C)")
    if k == "hard_swish":
        return _elementwise_ref("hard_swish", n_out, "tflm hard_swish int8 (reference, C)")
    if k == "pad":
        return _elementwise_ref("pad", n_out, "tflm pad (reference, C)")
    if k in ("transpose", "strided_slice"):
        return _elementwise_ref("gather", n_out, f"tflm {k} (reference, C)")
    if k in ("add", "sub"):
        return _elementwise_ref("broadcast_add", n_out, f"tflm {k} broadcast (reference, C)")
    if k == "mul":
        return _elementwise_ref("broadcast_mul", n_out, "tflm mul broadcast (reference, C)")
    if k == "mean":
        acc = _b(
            "movs r0, #0\nldrsb r0, [r6, r0] {input}\nadds r6, #1\nadds r4, r4, r0\n"
            "subs r5, #1\nbne .Lmean_acc\n",
            "c_ref_mean_acc",
        )
        out = [
            _b(
                "movs r0, r4\nldr r3, [sp, #8]\nmuls r0, r3\nldr r3, [sp, #12]\nsubs r0, r0, r3\n",
                "c_ref_mean_scale",
            ),
            *mul_sat_items("ref"),
            _b(RDBPOT, "c_ref_rdbpot"),
            _b(REF_CLAMP_STORE, "c_ref_clamp_store"),
            _b("movs r4, #0\nsubs r7, #1\nbne .Lmean_out\n", "c_ref_mean_next"),
        ]
        items = [
            entry_block("tflm_mean"),
            Loop("c_ref_mean_acc", x.size, [acc]),
            Loop("c_ref_mean_out", n_out, out),
            exit_block("tflm_mean"),
        ]
        return Program(items, kernel="tflm mean int8 (reference, C)")
    raise UnsupportedOpError(
        f"no Cortex-M0+ instruction schedule for op kind {k!r}", layer=op.label
    )


# -------------------------------------------------------------------- data movement
def reshape_c_program(graph: Graph, op: Op) -> Program:
    nbytes = graph.tensor(op.inputs[0]).nbytes
    items = [
        entry_block("tflm_reshape"),
        _b("ldr r0, [sp, #8]\nldr r1, [sp, #12]\nldr r2, [sp, #16]\nbl memcpy\n", "c_copy_call"),
        *memcpy_items(nbytes, True, "input", "output"),
        exit_block("tflm_reshape"),
    ]
    return Program(
        items,
        kernel="tflm reshape (memcpy)",
        notes=["charged as a copy: input and output are separate buffers"],
    )


def concat_c_program(graph: Graph, op: Op) -> Program:
    out = graph.tensor(op.outputs[0])
    axis = op.attrs.axis % len(out.shape)
    outer = int(np.prod(out.shape[:axis], dtype=np.int64)) if axis else 1
    step = _b(
        "ldr r3, [sp, #4]\nldr r0, [r3] {const}\nadds r3, #4\nstr r3, [sp, #4]\n"
        "ldr r2, [sp, #8]\nldr r1, [sp, #12]\nbl memcpy\n",
        "c_concat_step",
    )
    end = _b("ldr r3, [sp, #16]\nsubs r3, #1\nstr r3, [sp, #16]\nbne .Lconcat\n", "c_concat_end")
    items: list = [entry_block("tflm_concatenation")]
    for name in op.inputs:
        if not name:
            continue
        t = graph.tensor(name)
        inner = int(np.prod(t.shape[axis:], dtype=np.int64)) * t.dtype.storage_bytes(1)
        src = "const" if t.is_const else "input"
        items.append(
            Loop(
                f"c_concat_{name}",
                outer,
                [step, *memcpy_items(inner, inner % 4 == 0, src, "output"), end],
            )
        )
    items.append(exit_block("tflm_concatenation"))
    return Program(items, kernel="tflm concatenation (reference, memcpy per slice)")
