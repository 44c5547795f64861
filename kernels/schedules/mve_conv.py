"""CONV_2D and FULLY_CONNECTED on Armv8.1-M + MVE as CMSIS-NN runs them (ARM_MATH_MVEI).

Conv dispatch (arm_convolve_wrapper_s8, the same tests as the DSP build):
- 1x1 (no padding/dilation, filter depth == input depth): stride 1 ->
  arm_convolve_1x1_s8_fast = one arm_nn_mat_mult_nt_t_s8 over all pixels; else
  arm_convolve_1x1_s8 = one call per output row with a strided LHS.
- 1xN (input height 1, ...): arm_convolve_1_x_n_s8 MVE path: three calls of
  arm_nn_mat_mult_nt_t_s8 (left-padded outputs from an im2col with memset + memcpy, the
  unpadded outputs straight from the input, right-padded outputs); when the padded counts
  do not add up to the output width it falls back to arm_convolve_s8.
- otherwise arm_convolve_s8 (MVE): per output pixel an int8 im2col column (arm_memcpy_s8 /
  arm_memset_s8, both MVE WLSTP loops), padded to a multiple of 4 bytes; every 4 columns
  one arm_nn_mat_mult_nt_t_s8 call with lhs_rows = 4, leftover columns in a last call.
FC: arm_fully_connected_s8 -> arm_nn_vec_mat_mult_t_s8 per batch row (per-channel FC:
arm_fully_connected_per_channel_s8 -> arm_nn_vec_mat_mult_t_per_ch_s8, same MVE loop).
"""

from __future__ import annotations

from mcusim.graph import Graph, Op
from mcusim.isa.schedule import Loop, Program, Rewind

from . import cmsis_conv as dsp
from .common import (
    Geom,
    PixelWalk,
    conv_geom,
    per_channel,
    pixels_by,
    qparam_rules,
    taps_key,
    weight_zero_point,
)
from .mve_common import block, memcpy_mve_items, memset_mve_items, tap_walk
from .mve_matmul import mat_mult_nt_t_s8_mve, vec_mat_mult_t_s8_mve

MVE_PIXEL_END = """
ldr    r3, [sp, #68]
ldr    r2, [sp, #20]                 ; aligned_rhs_cols - rhs_cols
add    r3, r3, r2
str    r3, [sp, #68]                 ; im2col_buf += aligned offset
ldr    r3, [sp, #12]
adds   r3, #1
str    r3, [sp, #12]                 ; lhs_rows++
cmp    r3, #4
bne    .Lnext_pixel
"""
QUAD_ARGS = """
ldr    r0, [sp, #84]                 ; buffer_a
ldr    r1, [sp, #4]                  ; filter
ldr    r2, [sp, #8]                  ; bias
ldr    r3, [sp, #88]                 ; out
str    r3, [sp]
"""
QUAD_END = """
ldr    r3, [sp, #88]
ldr    r2, [sp, #56]                 ; output_ch
add    r3, r3, r2, lsl #2
str    r3, [sp, #88]                 ; out += 4 * output_ch
movs   r3, #0
str    r3, [sp, #12]
ldr    r3, [sp, #84]
str    r3, [sp, #68]                 ; im2col_buf = buffer_a
"""
ROW_END = "adds r4, #1\ncmp r4, r5\nblt .Lrows\n"


def _im2col_column_mve(g: Geom, kernel_ch: int, n_valid: int, pixels: list) -> list:
    """One int8 im2col column with ``n_valid`` in-bounds taps (MVE memcpy/memset);
    ``pixels``: the output pixels of that class (for the address rules)."""
    taps = g.k_h * g.k_w
    # arm_memcpy_s8 / arm_memset_s8 move their pointers 16 bytes per vector: after each
    # tap the column pointer is put back to the tap's real end (kernel_ch bytes on)
    fix = {block(dsp.TAP_END, "conv_tap_end"): {"scratch": kernel_ch - 16 * -(-kernel_ch // 16)}}
    # taps row by row: the next (dilated) pixel, after k_w taps the next (dilated) row
    pix = g.in_c * g.d_w
    copy = Loop(
        "im2col_copy_taps",
        n_valid,
        addr={"input": tap_walk(g, pixels, pix)},
        moves=fix,
        body=[
            block(dsp.TAP_TEST, "conv_tap_test"),
            block(dsp.TAP_COPY_ARGS, "conv_tap_copy_args"),
            *memcpy_mve_items(kernel_ch, "input", "scratch"),
            block(dsp.TAP_END, "conv_tap_end"),
        ],
    )
    pad = Loop(
        "im2col_pad_taps",
        taps - n_valid,
        moves=fix,
        body=[
            block(dsp.TAP_TEST_PAD, "conv_tap_test_pad"),
            block(dsp.TAP_PAD_ARGS, "conv_tap_pad_args"),
            *memset_mve_items(kernel_ch, "scratch"),
            block(dsp.TAP_END, "conv_tap_end"),
        ],
    )
    return [
        block(dsp.PIXEL_SETUP, "conv_pixel_setup"),
        copy,
        pad,
        block(MVE_PIXEL_END, "mve_pixel_end"),
    ]


def convolve_s8_mve_items(g: Geom, kernel_ch: int, groups: int) -> list:
    """arm_convolve_s8 (MVE): im2col of 4 pixels, one 4-row matrix call, leftovers."""
    rhs_cols = g.k_h * g.k_w * kernel_ch
    out_ch_g = g.out_c // groups
    n_pix = g.out_pixels
    col = rhs_cols + (-rhs_cols) % 4  # im2col column stride (padded to 4 bytes)
    per_group: list = []
    classes = pixels_by(g, taps_key(g))
    walk = PixelWalk(g, ("input",))
    for n_valid, count in sorted(g.taps_valid().items()):
        per_group.append(
            Loop(
                f"im2col_pixels_{n_valid}taps",
                count,
                _im2col_column_mve(g, kernel_ch, n_valid, classes[n_valid]),
                # each pixel at its own input window; columns fill the 4-column buffer
                # in turn (pixel i of a class in slot i % 4)
                addr={
                    **walk.rules(classes[n_valid]),
                    "scratch": Rewind(col, every=4, skip=-4 * col),
                },
            )
        )
    per_group.append(
        Loop(
            "conv_pixel_quads",
            n_pix // 4,
            [
                block(QUAD_ARGS, "conv_quad_args"),
                *mat_mult_nt_t_s8_mve(4, out_ch_g, rhs_cols, "scratch", col, g.out_c),
                block(QUAD_END, "conv_quad_end"),
            ],
            # every 4 columns re-read all filters, biases and requantization parameters
            # and the 4-column buffer, and write the outputs of the next 4 pixels
            addr={
                **{r: Rewind(0) for r in ("weights", "bias", "scratch")},
                **qparam_rules(),
                "output": Rewind(4 * g.out_c),
            },
        )
    )
    if n_pix % 4:
        per_group += [
            block(QUAD_ARGS, "conv_quad_args"),
            *mat_mult_nt_t_s8_mve(n_pix % 4, out_ch_g, rhs_cols, "scratch", col, g.out_c),
        ]
    body: list = per_group
    if groups > 1:
        # group k: input channels k * kernel_ch.., filters and outputs k * out_ch_g..
        body = [
            Loop(
                "conv_groups",
                groups,
                per_group,
                addr={
                    "input": Rewind(kernel_ch),
                    "weights": Rewind(out_ch_g * rhs_cols),
                    "bias": Rewind(4 * out_ch_g),
                    **qparam_rules(out_ch_g),
                    "output": Rewind(out_ch_g),
                    "scratch": Rewind(0),
                },
            )
        ]
    return [
        block(dsp.CONV_ENTRY, "conv_entry"),
        Loop("batches", g.batches, body, addr=_batch_rules(g)),
        block(dsp.CONV_EXIT, "conv_exit"),
    ]


def _batch_rules(g: Geom) -> dict:
    """Each batch reads its own input image and writes its own output image; the filters,
    biases, parameters and scratch are the same."""
    return {
        "input": Rewind(g.in_h * g.in_w * g.in_c),
        "output": Rewind(g.out_pixels * g.out_c),
        **{r: Rewind(0) for r in ("weights", "bias", "scratch")},
        **qparam_rules(),
    }


def _one_x_n_split(g: Geom) -> tuple[int, int, int, int, int] | None:
    """arm_convolve_1_x_n_s8 (MVE) partition of the output row: (left, middle, right,
    pad_size_left, pad_size_right) in pixels / bytes, or None when it falls back."""
    total_pad = (g.out_w - 1) * g.s_w + g.k_w - g.in_w
    asym = total_pad % 2
    if g.pad_l * 2 + asym != total_pad:
        return None
    right = max(1, (g.pad_l + asym + g.s_w - 1) // g.s_w) if g.pad_l + asym else 0
    left = max(1, (g.pad_l + g.s_w - 1) // g.s_w) if g.pad_l else 0
    mid = max(g.out_w - (left + right), 0)
    if left + mid + right != g.out_w:
        return None
    pad_left = g.pad_l * g.in_c
    pad_right = right * g.in_c if asym else pad_left
    return left, mid, right, pad_left, pad_right


def convolve_1_x_n_mve_items(g: Geom, split) -> list:
    left, mid, right, pad_l, pad_r = split
    rhs_cols = g.k_w * g.in_c
    n_left = rhs_cols
    n_right = rhs_cols - g.in_c
    lb = g.s_w * g.in_c  # the windows of consecutive outputs slide by stride_x pixels
    per_batch = [
        *memset_mve_items(pad_l, "scratch"),
        *memcpy_mve_items(n_left, "input", "scratch"),
        *mat_mult_nt_t_s8_mve(left, g.out_c, rhs_cols, "scratch", lb),
        *mat_mult_nt_t_s8_mve(mid, g.out_c, rhs_cols, "input", lb),
        *memcpy_mve_items(n_right, "input", "scratch"),
        *memset_mve_items(pad_r, "scratch"),
        *mat_mult_nt_t_s8_mve(right, g.out_c, rhs_cols, "scratch", lb),
    ]
    return [
        block(dsp.CONV_ENTRY, "conv_entry"),
        Loop("batches", g.batches, per_batch, addr=_batch_rules(g)),
        block(dsp.CONV_EXIT, "conv_exit"),
    ]


def conv_items(g: Geom, kernel_ch: int) -> tuple[list, str]:
    """The MVE conv path for a geometry -> (items, kernel name)."""
    groups = max(1, g.in_c // kernel_ch)
    if dsp.is_1x1(g, kernel_ch):
        if g.s_h == 1 and g.s_w == 1:
            items = [
                block(dsp.CONV_ENTRY, "conv_entry"),
                *mat_mult_nt_t_s8_mve(g.batches * g.in_h * g.in_w, g.out_c, g.in_c),
                block(dsp.CONV_EXIT, "conv_exit"),
            ]
            return items, "arm_convolve_1x1_s8_fast -> arm_nn_mat_mult_nt_t_s8 (MVE)"
        row_in = g.s_h * g.in_w * g.in_c
        row = Loop(
            "conv1x1_out_rows",
            g.batches * g.out_h,
            [
                *mat_mult_nt_t_s8_mve(g.out_w, g.out_c, g.in_c, "input", g.s_w * g.in_c),
                block(ROW_END, "conv1x1_row_end"),
            ],
            # one call per output row: its strided input row (the next image after
            # out_h rows), its output row; every row re-reads the filters and parameters
            addr={
                "input": Rewind(
                    row_in, every=g.out_h, skip=g.in_h * g.in_w * g.in_c - g.out_h * row_in
                ),
                "output": Rewind(g.out_w * g.out_c),
                **{r: Rewind(0) for r in ("weights", "bias")},
                **qparam_rules(),
            },
        )
        items = [block(dsp.CONV_ENTRY, "conv_entry"), row, block(dsp.CONV_EXIT, "conv_exit")]
        return items, "arm_convolve_1x1_s8 -> arm_nn_mat_mult_nt_t_s8 (MVE)"
    if dsp.is_1_x_n(g, kernel_ch):
        split = _one_x_n_split(g)
        if split is not None:
            return (
                convolve_1_x_n_mve_items(g, split),
                "arm_convolve_1_x_n_s8 -> arm_nn_mat_mult_nt_t_s8 (MVE)",
            )
        name = "arm_convolve_1_x_n_s8 -> arm_convolve_s8 -> arm_nn_mat_mult_nt_t_s8 (MVE)"
        return convolve_s8_mve_items(g, kernel_ch, groups), name
    return (
        convolve_s8_mve_items(g, kernel_ch, groups),
        "arm_convolve_s8 -> arm_nn_mat_mult_nt_t_s8 (MVE)",
    )


def conv2d_program(graph: Graph, op: Op) -> Program:
    g = conv_geom(graph, op)
    kernel_ch = int(graph.tensor(op.inputs[1]).shape[3])
    macs = g.batches * g.out_pixels * g.out_c * g.k_h * g.k_w * kernel_ch
    items, kernel = conv_items(g, kernel_ch)
    return Program(items, kernel=kernel, macs=macs)


# ------------------------------------------------------------------------------ FC
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


def fully_connected_program(graph: Graph, op: Op) -> Program:
    x = graph.tensor(op.inputs[0])
    w = graph.tensor(op.inputs[1])
    out_f, in_f = int(w.shape[0]), int(w.shape[1])
    batches = max(1, x.size // in_f)
    wofs = weight_zero_point(graph, op) != 0
    pc = per_channel(graph, op)
    if pc:
        kernel = "arm_fully_connected_per_channel_s8 -> arm_nn_vec_mat_mult_t_per_ch_s8 (MVE)"
    else:
        kernel = "arm_fully_connected_s8 -> arm_nn_vec_mat_mult_t_s8 (MVE)"
    items = [
        block(FC_ENTRY, "fc_entry"),
        Loop(
            "fc_batches",
            batches,
            [*vec_mat_mult_t_s8_mve(out_f, in_f, wofs, pc), block(FC_BATCH_END, "fc_batch_end")],
            # one input row per batch; every batch re-reads the weights, kernel sums and
            # requantization parameters
            addr={
                "input": Rewind(in_f),
                "output": Rewind(out_f),
                **{r: Rewind(0) for r in ("weights", "bias", "scratch")},
                **qparam_rules(),
            },
        ),
        block(FC_EXIT, "fc_exit"),
    ]
    notes = ["kernel sums (sum(w) * input offset + bias) computed once at prepare time"]
    return Program(items, kernel=kernel, macs=batches * out_f * in_f, notes=notes)
