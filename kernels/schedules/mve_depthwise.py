"""DEPTHWISE_CONV_2D on Armv8.1-M + MVE as CMSIS-NN runs it (arm_depthwise_conv_wrapper_s8).

Dispatch (ARM_MATH_MVEI, GCC):
- one input channel and more than CONVERT_DW_CONV_WITH_ONE_INPUT_CH_AND_OUTPUT_CH_ABOVE_
  THRESHOLD (1 with GCC) output channels: the filter is transposed (arm_transpose_s8) into
  the context buffer and the layer runs as a regular conv (arm_convolve_wrapper_s8);
- ch_mult 1, batch 1, no dilation: arm_depthwise_conv_s8_opt (the 3x3 special case is
  DSP-only). MVE path: channels in blocks of CH_IN_BLOCK_MVE (124); per output pixel an
  im2col of the patch (arm_memcpy_s8 / arm_memset_s8 of the block's channels per tap, each
  tap CH_IN_BLOCK_MVE bytes apart); every 4 pixels arm_nn_depthwise_conv_nt_t_s8: 4
  channels (int32 lanes) x 4 pixels per tap with VLDRB.S32, VADD (sum of weights), VMUL
  and VADD per pixel; epilogue per pixel arm_requantize_mve_32x4, + offset, clamp and a
  VCTP.32-predicated byte store. Leftover pixels (< 4) one at a time.
- otherwise arm_depthwise_conv_s8 (scalar MAC loops with an MVE requantization of 4
  outputs): timed with the DSP-build schedules of those loops (cmsis_depthwise), whose
  scalar MAC loop is the same C code.
"""

from __future__ import annotations

from mcusim.graph import Graph, Op
from mcusim.isa.schedule import Block, Loop, Program, Rewind

from . import cmsis_conv as dsp_conv
from . import cmsis_depthwise as dsp_dw
from .common import QPARAM_TAGS, Geom, PixelWalk, conv_geom, pixels_by, taps_key
from .mve_common import (
    block,
    lanes_note,
    memcpy_mve_items,
    memset_mve_items,
    offset_clamp,
    requant_mve_32x4,
    tap_walk,
)
from .mve_conv import conv_items

CH_IN_BLOCK_MVE = 124  # Include/arm_nnsupportfunctions.h
ONE_IN_CH_TO_CONV_THRESHOLD = 1  # CONVERT_DW_CONV_WITH_ONE_INPUT_CH_..., GCC value

DW_ENTRY = """
push   {r4, r5, r6, r7, r8, r9, r10, r11, lr}
vpush  {d8, d9, d10, d11, d12, d13, d14, d15}
sub    sp, #84
ldr    r4, [sp, #156]
ldr    r5, [sp, #160]
ldrh   r6, [r4, #4] {stack}
ldrh   r7, [r4, #8] {stack}
"""
DW_EXIT = """
movs   r0, #0
add    sp, #84
vpop   {d8, d9, d10, d11, d12, d13, d14, d15}
pop    {r4, r5, r6, r7, r8, r9, r10, r11, pc}
"""
DW_PIXEL_END = """
ldr    r3, [sp, #12]
adds   r3, #1
str    r3, [sp, #12]                  ; buffer_count++
cmp    r3, #4
bne    .Ldw_next_pixel
"""
# arm_nn_depthwise_conv_nt_t_s8: per 4-channel group
NT_GROUP_SETUP = """
vldrw.u32 q6, [r2], #16 {bias}        ; out_0 = bias
vmov   q1, q6
vmov   q2, q6
vmov   q3, q6
vmov.i32 q5, #0                       ; ker_sum
add    r4, r0, #496                   ; lhs_1 = lhs + row_x_col * CH_IN_BLOCK_MVE
add    r5, r4, #496
add    r6, r5, #496
mov    r7, r1
dls    lr, r8                         ; row_x_col taps
"""
NT_TAP = """
vldrb.s32 q0, [r7] {weights}
add    r7, r7, r9                     ; rhs_0 += total_ch
vldrb.s32 q4, [r0], #124 {scratch}
vadd.i32 q5, q5, q0                   ; ker_sum
vmul.i32 q4, q4, q0
vldrb.s32 q7, [r4], #124 {scratch}
vadd.i32 q6, q6, q4
vmul.i32 q7, q7, q0
vldrb.s32 q4, [r5], #124 {scratch}
vadd.i32 q1, q1, q7
vmul.i32 q4, q4, q0
vldrb.s32 q7, [r6], #124 {scratch}
vadd.i32 q2, q2, q4
vmul.i32 q7, q7, q0
vadd.i32 q3, q3, q7
le     lr, .Ldw_taps
"""


def _nt_group_out(note: str) -> str:
    t = """
ldr    r3, [sp, #16]
vmul.i32 q5, q5, r3                   ; ker_sum * input_offset
vadd.i32 q6, q6, q5
vadd.i32 q1, q1, q5
vadd.i32 q2, q2, q5
vadd.i32 q3, q3, q5
ldr    r3, [sp, #28]
vctp.32 r3                            ; channels left in this group
vmrs   r12, p0
subs   r3, #4
str    r3, [sp, #28]
"""
    for k, q in enumerate(("q6", "q1", "q2", "q3")):
        # multipliers / shifts reloaded per output: no Q registers left to keep them
        t += """
ldr    r3, [sp, #20]
vldrw.u32 q4, [r3] {qmult}            ; 4 multipliers
ldr    r3, [sp, #24]
vldrw.u32 q5, [r3] {qparams}          ; 4 shifts
vmov.i32 q0, #0
"""
        t += requant_mve_32x4(q, "q4", "q5", "q0", "q7", "q0")
        t += offset_clamp(q, "q4", "q5", hoisted=False)
        t += f"vmsr p0, r12\nvpst\nvstrbt.32 {q}, [r11, #{k * 4}] {{output}}{note}\n"
    return (
        t
        + """
ldr    r3, [sp, #20]
adds   r3, #16
str    r3, [sp, #20]
ldr    r3, [sp, #24]
adds   r3, #16
str    r3, [sp, #24]
adds   r11, #4
subs   r10, #1
bne    .Ldw_groups
"""
    )


# leftover pixels: one pixel, 4 channels per step
LEFT_SETUP = """
vldrw.u32 q6, [r2], #16 {bias}
mov    r7, r1
dls    lr, r8
"""
LEFT_TAP = """
vldrb.s32 q0, [r7] {weights}
add    r7, r7, r9
vldrb.s32 q7, [r0], #124 {scratch}
vadd.i32 q7, q7, r12                  ; + input_offset
vmul.i32 q7, q7, q0
vadd.i32 q6, q6, q7
le     lr, .Ldw1_taps
"""


def _left_out(note: str) -> str:
    return (
        """
ldr    r3, [sp, #20]
vldrw.u32 q2, [r3], #16 {qmult}       ; 4 multipliers
vldrw.u32 q3, [r6], #16 {qparams}     ; 4 shifts (r6: free in the leftover path)
str    r3, [sp, #20]
vmov.i32 q0, #0
"""
        + requant_mve_32x4("q6", "q2", "q3", "q0", "q4", "q0")
        + offset_clamp("q6", "q2", "q3", hoisted=False)
        + f"vctp.32 r10\nsubs r10, #4\nvpst\nvstrbt.32 q6, [r11], #4 {{output}}{note}\n"
        + "subs r5, #1\nbne .Ldw1_groups\n"
    )


def _groups(active: int, setup: Block, tap: Block, out, taps: int, name: str) -> list:
    """4-channel groups over ``active`` channels; a partial last group stores fewer lanes.
    Address rules: group k reads the 4 channels' bytes k * 4 on in the im2col rows and
    in every filter tap (taps ``total_ch`` apart: r9 from the enclosing loop's regs)."""
    full, rem = divmod(active, 4)
    body = [setup, Loop(f"{name}_taps", taps, [tap])]
    items = []
    if full:
        items.append(
            Loop(
                f"{name}_groups",
                full,
                [*body, block(out(""), f"{name}_out")],
                # the output block's "subs r3, #4" (channels left) and "adds r3, #16"
                # twice land on the multipliers' pointer (r3 is its base there), none on
                # the shifts': both 16 per group
                addr={
                    "scratch": Rewind(4),
                    "weights": Rewind(4),
                    **(
                        {"qmult": Rewind(16, start=4), "qparams": Rewind(16)}
                        if name == "dw_nt"
                        else {}
                    ),
                },
            )
        )
    if rem:
        items += [*body, block(out(lanes_note(rem)), f"{name}_out_tail")]
    return items


class _Pos:
    """Where each stream pointer is (bytes from its base) as loops with Rewind rules run,
    so a rule can put a pointer on an absolute position."""

    def __init__(self) -> None:
        self.at: dict[str, int] = {}

    def rule(self, tag: str, count: int, target: int, step: int = 0, **kw) -> Rewind:
        r = Rewind(step, start=target - self.at.get(tag, 0), **kw)
        if count:
            self.at[tag] = self.at.get(tag, 0) + r.offset(count)
        return r


def depthwise_opt_mve_items(g: Geom) -> list:
    """arm_depthwise_conv_s8_opt (MVE). Address rules (cache model only): channel block
    ``i`` works on channels i * 124..; each pixel's im2col column (taps x 124 bytes, 4
    columns in the buffer) is built from the pixel's input window; every 4 pixels
    re-read the block's filters, biases and parameters. The four im2col row pointers of
    arm_nn_depthwise_conv_nt_t_s8 fold into the one scratch pointer, and its four
    pixels' stores are 4 bytes apart (the schedule's immediates), not a row apart."""
    taps = g.k_h * g.k_w
    n_pix = g.out_pixels
    col = taps * CH_IN_BLOCK_MVE  # im2col column of one pixel
    items: list = [block(DW_ENTRY, "dw_mve_entry")]
    n_blocks = -(-g.in_c // CH_IN_BLOCK_MVE)
    classes = pixels_by(g, taps_key(g))
    pos = _Pos()
    nq, n_left = n_pix // 4, n_pix % 4
    for i in range(n_blocks):
        active = min(CH_IN_BLOCK_MVE, g.in_c - i * CH_IN_BLOCK_MVE)
        c0 = i * CH_IN_BLOCK_MVE
        per_block: list = []
        walk = PixelWalk(g, ("input",))
        walk.used["input"] = pos.at.get("input", 0) - c0  # the walk starts at channel c0
        # arm_memcpy_s8 / arm_memset_s8 step 16 bytes per vector; taps are 124 bytes apart
        fix = {
            block(dsp_conv.TAP_END, "conv_tap_end"): {
                "scratch": CH_IN_BLOCK_MVE - 16 * -(-active // 16)
            }
        }
        for n_valid, count in sorted(g.taps_valid().items()):
            rules = walk.rules(classes[n_valid])
            pos.at["input"] = c0 + walk.used["input"]
            rules["scratch"] = pos.rule("scratch", count, 0, col, every=4, skip=-4 * col)
            per_block.append(
                Loop(
                    f"dw_im2col_pixels_{n_valid}taps",
                    count,
                    addr=rules,
                    body=[
                        block(dsp_conv.PIXEL_SETUP, "conv_pixel_setup"),
                        Loop(
                            "dw_im2col_copy",
                            n_valid,
                            addr={"input": tap_walk(g, classes[n_valid], g.in_c)},
                            moves=fix,
                            body=[
                                block(dsp_conv.TAP_TEST, "conv_tap_test"),
                                block(dsp_conv.TAP_COPY_ARGS, "conv_tap_copy_args"),
                                *memcpy_mve_items(active, "input", "scratch"),
                                block(dsp_conv.TAP_END, "conv_tap_end"),
                            ],
                        ),
                        Loop(
                            "dw_im2col_pad",
                            taps - n_valid,
                            moves=fix,
                            body=[
                                block(dsp_conv.TAP_TEST_PAD, "conv_tap_test_pad"),
                                block(dsp_conv.TAP_PAD_ARGS, "conv_tap_pad_args"),
                                *memset_mve_items(active, "scratch"),
                                block(dsp_conv.TAP_END, "conv_tap_end"),
                            ],
                        ),
                        block(DW_PIXEL_END, "dw_pixel_end"),
                    ],
                )
            )
        kernel4 = _groups(
            active,
            block(NT_GROUP_SETUP, "dw_nt_group_setup"),
            block(NT_TAP, "dw_nt_tap"),
            _nt_group_out,
            taps,
            "dw_nt",
        )
        # each quad: the 4 columns from the buffer start, the block's filters, biases and
        # parameters again, the outputs of the next 4 pixels (channels c0..)
        per_block.append(
            Loop(
                "dw_pixel_quads",
                nq,
                [block("bl arm_nn_depthwise_conv_nt_t_s8", "dw_nt_call"), *kernel4],
                addr={
                    "scratch": pos.rule("scratch", nq, 0),
                    "weights": pos.rule("weights", nq, c0),
                    "bias": pos.rule("bias", nq, 4 * c0),
                    **{t: pos.rule(t, nq, 4 * c0) for t in QPARAM_TAGS},
                    "output": pos.rule("output", nq, c0, 4 * g.out_c),
                },
                regs={"r9": g.in_c},
            )
        )
        left = _groups(
            active,
            block(LEFT_SETUP, "dw_left_setup"),
            block(LEFT_TAP, "dw_left_tap"),
            _left_out,
            taps,
            "dw_left",
        )
        per_block.append(
            Loop(
                "dw_leftover_pixels",
                n_left,
                left,
                addr={
                    "scratch": pos.rule("scratch", n_left, 0, col),
                    "weights": pos.rule("weights", n_left, c0),
                    "bias": pos.rule("bias", n_left, 4 * c0),
                    **{t: pos.rule(t, n_left, 4 * c0) for t in QPARAM_TAGS},
                    "output": pos.rule("output", n_left, c0 + nq * 4 * g.out_c, g.out_c),
                },
                regs={"r9": g.in_c},
            )
        )
        items += per_block
    items.append(block(DW_EXIT, "dw_mve_exit"))
    return items


TRANSPOSE_ELEM = """
ldrsb  r0, [r6, r3] {weights}
strb   r0, [r11], #1 {scratch}
add    r3, r3, r8
subs   r5, #1
bne    .Ltr_elems
"""


def depthwise_program(graph: Graph, op: Op) -> Program:
    g = conv_geom(graph, op)
    a = op.attrs
    mult = int(getattr(a, "depth_multiplier", 1) or 1)
    taps = g.k_h * g.k_w
    macs = g.batches * g.out_pixels * g.out_c * taps
    if g.in_c == 1 and g.out_c > ONE_IN_CH_TO_CONV_THRESHOLD:
        items, conv_kernel = conv_items(g, 1)
        transpose = [
            block("bl arm_transpose_s8", "transpose_call"),
            Loop("transpose_elems", taps * g.out_c, [block(TRANSPOSE_ELEM, "transpose_elem")]),
        ]
        kernel = f"arm_depthwise_conv_wrapper_s8 -> arm_transpose_s8 + {conv_kernel}"
        return Program(transpose + items, kernel=kernel, macs=macs)
    if mult == 1 and g.batches == 1 and g.d_h == 1 and g.d_w == 1:
        return Program(
            depthwise_opt_mve_items(g),
            kernel="arm_depthwise_conv_s8_opt -> arm_nn_depthwise_conv_nt_t_s8 (MVE)",
            macs=macs,
        )
    mult4 = mult % 4 == 0 and g.batches == 1 and g.d_h == 1 and g.d_w == 1
    name = "depthwise_conv_s8_mult_4" if mult4 else "depthwise_conv_s8_generic"
    return Program(
        dsp_dw.depthwise_generic_items(g, mult, mult4),
        kernel=f"arm_depthwise_conv_s8 ({name})",
        macs=macs,
        notes=["scalar MAC loops as in the DSP build; MVE requantization not modelled apart"],
    )
