"""The CMSIS-NN MVE matrix kernels shared by conv, 1x1 conv, depthwise-as-conv and FC.

- ``arm_nn_mat_mult_nt_t_s8`` (MVE branch, inline assembly): 4 LHS rows (pixels) x 1 RHS
  row (output channel) at a time; WLSTP.8 ... LETP over the reduction, 16 columns per
  iteration: VADDVA.S8 (sum of weights for the input offset), 4 x (VLDRB.8 row,
  VMLADAVA.S8), VLDRB.8 of the next weights. Epilogue: 4 accumulators into a vector,
  + sum(w) * lhs_offset + bias, arm_requantize_mve, + output offset, VMAX/VMIN, a byte
  scatter store (one byte per pixel, row_address_offset apart). Leftover rows (< 4) run a
  1-row loop and requantize 4 channels at a time with arm_requantize_mve_32x4, the last
  rhs_rows % 4 channels with the scalar arm_nn_requantize.
- ``arm_nn_vec_mat_mult_t_s8`` (MVE branch): 4 RHS rows x 16 columns per iteration with
  VCTP.8 + VPST-predicated VLDRB (DLS/LE loop, GCC 12); the accumulators start from the
  kernel sums (sum(w) * lhs_offset + bias) precomputed once into the context buffer; a
  non-zero weight offset adds VADDVA of the input. Leftover rows (< 4) one at a time.
"""

from __future__ import annotations

from mcusim.isa.schedule import Loop, Rewind

from .common import REQUANT_TEXT, qparam_rules
from .mve_common import SCALAR_OUT, block, offset_clamp, requant_mve, requant_mve_32x4, tp_loop

# The per-channel multipliers ("qmult") and shifts ("qparams") are two arrays: the shifts
# go through their own running pointer, kept in ip (r12), free where they are loaded (the
# accumulators it held are in Q1 by then; register choices plausible, not exact).

# ------------------------------------------------------------------ mat_mult_nt_t_s8
NT_ENTRY = """
push   {r4, r5, r6, r7, r8, r9, r10, r11, lr}
vpush  {d8, d9, d10, d11, d12, d13, d14, d15}
sub    sp, #36
ldr    r9, [sp, #144]                 ; dst_offset
ldr    r10, [sp, #152]                ; activation_max
vdup.32 q6, r10
ldr    r3, [sp, #148]
vdup.32 q5, r3                        ; activation_min
ldr    r3, [sp, #156]                 ; row_address_offset
movs   r4, #0
vmov   q7[2], q7[0], r4, r3           ; scatter offsets {0, off, 2off, 3off}
lsls   r5, r3, #1
add    r5, r5, r3
add    r4, r3, r3
vmov   q7[3], q7[1], r3, r5
"""
NT_EXIT = """
add    sp, #36
vpop   {d8, d9, d10, d11, d12, d13, d14, d15}
pop    {r4, r5, r6, r7, r8, r9, r10, r11, pc}
"""
# per group of 4 LHS rows: row pointers
NT_QUAD_SETUP = """
ldr    r3, [sp, #160]                 ; lhs_cols_offset
ldr    r4, [sp, #4]                   ; lhs
add    r5, r4, r3
add    r6, r5, r3
add    r7, r6, r3
movs   r3, #0
str    r3, [sp, #8]                   ; i = 0
"""
# per output channel: reset pointers, start the tail-predicated loop, first weights
NT_CH_SETUP = """
ldr    r0, [sp, #12]                  ; col_base = rhs + i * rhs_cols
ldr    r2, [sp, #16]                  ; rhs_cols
ldr    r1, [sp, #4]
add    r4, r0, r2
str    r4, [sp, #12]
wlstp.8 lr, r2, .Lnt_end
mov    r8, #0                         ; sum
mov    r11, #0
mov    r12, #0
mov    r3, #0
mov    r2, #0
vldrb.8 q0, [r0], #16 {{weights}}{note}
"""


def _nt_inner(note: str, lhs: str = "input") -> str:
    # the weights of the next iteration are loaded at the end (software pipelined);
    # the first load is in NT_CH_SETUP, so the tail annotation goes on the row loads
    return f"""
vaddva.s8 r8, q0
vldrb.8 q1, [r1], #16 {{{lhs}}}{note}
vmladava.s8 r11, q0, q1
vldrb.8 q2, [r5], #16 {{{lhs}}}{note}
vmladava.s8 r12, q0, q2
vldrb.8 q3, [r6], #16 {{{lhs}}}{note}
vmladava.s8 r3, q0, q3
vldrb.8 q4, [r7], #16 {{{lhs}}}{note}
vmladava.s8 r2, q0, q4
vldrb.8 q0, [r0], #16 {{weights}}{note}
letp   lr, .Lnt_inner
"""


NT_CH_EPILOGUE = (
    """
vmov   q1[2], q1[0], r11, r3
vmov   q1[3], q1[1], r12, r2
ldr    r3, [sp, #168]                 ; lhs_offset
mul    r8, r8, r3                     ; sum(w) * lhs_offset
ldr    r3, [sp, #20]
ldr    r2, [r3], #4    {bias}
str    r3, [sp, #20]
add    r8, r8, r2
vadd.i32 q1, q1, r8
ldr    r3, [sp, #24]
ldr    r1, [r3], #4    {qmult}           ; multiplier[i]
ldr    r2, [ip], #4    {qparams}         ; shift[i]
str    r3, [sp, #24]
"""
    + requant_mve()
    + offset_clamp()
    + """
ldr    r3, [sp, #28]                  ; dst
vstrb.32 q1, [r3, q7] {output}        ; scatter: one byte per pixel
adds   r3, #1
str    r3, [sp, #28]
ldr    r3, [sp, #8]
adds   r3, #1
str    r3, [sp, #8]
ldr    r2, [sp, #32]                  ; rhs_rows
cmp    r3, r2
blt    .Lnt_ch
"""
)
NT_QUAD_END = """
ldr    r3, [sp, #160]
ldr    r4, [sp, #4]
add    r4, r4, r3, lsl #2             ; lhs += 4 * lhs_cols_offset
str    r4, [sp, #4]
ldr    r3, [sp, #28]
ldr    r2, [sp, #156]
ldr    r1, [sp, #32]
add    r3, r3, r2, lsl #2
subs   r3, r3, r1                     ; dst += 4 * row_address_offset - rhs_rows
str    r3, [sp, #28]
ldr    r3, [sp]
subs   r3, #1
str    r3, [sp]
bne    .Lnt_quads
"""
# leftover rows: one LHS row against every RHS row
NT_ROW1_SETUP = """
ldr    r0, [sp, #12]
ldr    r2, [sp, #16]
ldr    r1, [sp, #4]
add    r4, r0, r2
str    r4, [sp, #12]
wlstp.8 lr, r2, .Lnt1_end
mov    r8, #0
mov    r11, #0
vldrb.8 q0, [r0], #16 {{weights}}{note}
"""


def _nt_row1_inner(note: str, lhs: str = "input") -> str:
    return f"""
vaddva.s8 r8, q0
vldrb.8 q1, [r1], #16 {{{lhs}}}{note}
vmladava.s8 r11, q0, q1
vldrb.8 q0, [r0], #16 {{weights}}{note}
letp   lr, .Lnt1_inner
"""


NT_ROW1_ACC = """
ldr    r3, [sp, #168]
mla    r11, r8, r3, r11               ; acc + sum(w) * lhs_offset
ldr    r3, [sp, #20]
ldr    r2, [r3], #4    {bias}
str    r3, [sp, #20]
add    r11, r11, r2
and    r3, r6, #3
str    r11, [sp, r3, lsl #2]          ; acc[i & 3]
adds   r6, #1
"""
NT_ROW1_QUAD_OUT = (
    """
vldrw.u32 q1, [sp]
ldr    r3, [sp, #24]
vldrw.u32 q2, [r3], #16 {qmult}         ; 4 multipliers
vldrw.u32 q3, [ip], #16 {qparams}       ; 4 shifts
str    r3, [sp, #24]
vmov.i32 q0, #0
"""
    + requant_mve_32x4()
    + offset_clamp()
    + """
ldr    r3, [sp, #28]
vstrb.32 q1, [r3], #4 {output}
str    r3, [sp, #28]
"""
)
NT_ROW1_END = """
ldr    r3, [sp, #8]
adds   r3, #1
str    r3, [sp, #8]
cmp    r3, r7
blt    .Lnt1_ch
"""
NT_ROW1_TAIL_OUT = (
    "ldr r0, [sp, r6, lsl #2]\nldr r1, [r5], #4 {qmult}\nldr r2, [ip], #4 {qparams}\n"
    + REQUANT_TEXT
    + SCALAR_OUT
    + "adds r6, #1\n"
)
NT_ROW_NEXT = """
ldr    r3, [sp, #160]
ldr    r4, [sp, #4]
add    r4, r4, r3
str    r4, [sp, #4]
"""


def mat_mult_nt_t_s8_mve(
    lhs_rows: int,
    rhs_rows: int,
    rhs_cols: int,
    lhs: str = "input",
    lhs_row_bytes: int | None = None,
    out_row_bytes: int | None = None,
) -> list:
    """One call of arm_nn_mat_mult_nt_t_s8 (MVE): lhs_rows x rhs_rows outputs of rhs_cols.
    ``lhs`` is the stream the LHS rows come from ("input", or "scratch" for im2col).

    Address rules (cache model only): LHS rows ``lhs_row_bytes`` apart (lhs_cols_offset,
    default rhs_cols), outputs of one LHS row ``out_row_bytes`` apart (row_address_offset,
    default rhs_rows). Per group of 4 rows every output channel re-reads its weight row
    and the 4 LHS rows (the four row pointers fold into the one ``lhs`` pointer: 4 x 16
    bytes per step, the same bytes when rows are contiguous); each group of 4 rows
    re-reads all weights, biases and requantization parameters. The output scatter (one
    byte per row, row_address_offset apart) is one 4-byte access at the first row's
    output (the address model has no scatter)."""
    b = block
    n16, rem = divmod(rhs_cols, 16)
    iters = -(-rhs_cols // 16)
    lb = rhs_cols if lhs_row_bytes is None else lhs_row_bytes
    ob = rhs_rows if out_row_bytes is None else out_row_bytes
    # the software-pipelined first weights load sits in the channel setup: it is partial
    # only when the whole reduction is shorter than one vector
    first_note = f" {{lanes={rhs_cols}}}" if n16 == 0 else ""
    # iterations: the last one re-loads weights past the end (predicated off by LETP)
    inner = tp_loop(f"nt_cols16_{lhs}", rhs_cols, 16, lambda n: _nt_inner(n, lhs))
    inner1 = tp_loop(f"nt_row1_cols16_{lhs}", rhs_cols, 16, lambda n: _nt_row1_inner(n, lhs))
    quads = Loop(
        "nt_row_quads",
        lhs_rows // 4,
        addr={
            lhs: Rewind(4 * lb),
            "weights": Rewind(0),
            "bias": Rewind(0),
            **qparam_rules(),
            "output": Rewind(4 * ob),
        },
        body=[
            b(NT_QUAD_SETUP, "nt_quad_setup"),
            Loop(
                "nt_channels",
                rhs_rows,
                # channel i: weight row i, the same 4 LHS rows, output byte i; the
                # epilogue's "adds r3, #1" (dst++) lands on the bias pointer (r3 is the
                # bias base in that block): Rewind(4) undoes it
                addr={
                    "weights": Rewind(rhs_cols),
                    lhs: Rewind(0),
                    "bias": Rewind(4),
                    **qparam_rules(1),
                    "output": Rewind(1),
                },
                body=[
                    b(NT_CH_SETUP.format(note=first_note), "nt_ch_setup"),
                    *inner,
                    b(NT_CH_EPILOGUE, "nt_ch_epilogue"),
                ],
            ),
            b(NT_QUAD_END, "nt_quad_end"),
        ],
    )
    items: list = [b("bl arm_nn_mat_mult_nt_t_s8", "nt_call"), b(NT_ENTRY, "nt_mve_entry"), quads]
    left = lhs_rows % 4
    if left:
        setup1 = b(NT_ROW1_SETUP.format(note=first_note), "nt_row1_setup")
        ch_body = [setup1, *inner1, b(NT_ROW1_ACC, "nt_row1_acc")]
        # a channel moves the weights 16 bytes per step plus the software-pipelined load,
        # the LHS row 16 per step: before each channel's setup the pointers are put on
        # its weight row and back on the row start (the 4 channels of a quad are the
        # same blocks, so the loop's start compensates the first move)
        dw = rhs_cols - 16 * (iters + 1)
        dl = -16 * iters
        row = [
            Loop(
                "nt_row1_ch_quads",
                rhs_rows // 4,
                addr={
                    "weights": Rewind(4 * rhs_cols, start=-dw),
                    lhs: Rewind(0, start=-dl),
                },
                moves={setup1: {"weights": dw, lhs: dl}},
                body=[
                    *(ch_body * 4),
                    b(NT_ROW1_QUAD_OUT, "nt_row1_quad_out"),
                    b(NT_ROW1_END, "nt_row1_end"),
                ],
            ),  # fmt: skip
            Loop(
                "nt_row1_ch_tail",
                rhs_rows % 4,
                [*ch_body, b(NT_ROW1_END, "nt_row1_end")],
                # (the quad loop left the pointers -dw / -dl off)
                addr={
                    "weights": Rewind(rhs_cols, start=dw if rhs_rows >= 4 else 0),
                    lhs: Rewind(0, start=dl if rhs_rows >= 4 else 0),
                },
            ),
            Loop("nt_row1_tail_out", rhs_rows % 4, [b(NT_ROW1_TAIL_OUT, "nt_row1_tail_out")]),
            b(NT_ROW_NEXT, "nt_row_next"),
        ]
        # each leftover row re-reads all weights, biases and parameters
        items.append(
            Loop(
                "nt_leftover_rows",
                left,
                row,
                addr={
                    lhs: Rewind(lb),
                    "weights": Rewind(0),
                    "bias": Rewind(0),
                    **qparam_rules(),
                    "output": Rewind(ob),
                },
            )
        )
    items.append(b(NT_EXIT, "nt_mve_exit"))
    return items


# ------------------------------------------------------------------ vec_mat_mult_t_s8
VM_ENTRY = """
push   {r4, r5, r6, r7, r8, r9, r10, r11, lr}
vpush  {d8, d9, d10, d11, d12, d13, d14, d15}
sub    sp, #28
ldr    r9, [sp, #136]                 ; dst_offset
ldr    r10, [sp, #152]                ; activation_max
vdup.32 q6, r10
ldr    r3, [sp, #148]
vdup.32 q5, r3
ldr    r3, [sp, #156]                 ; address_offset
movs   r4, #0
vmov   q7[2], q7[0], r4, r3
lsls   r5, r3, #1
add    r5, r5, r3
vmov   q7[3], q7[1], r3, r5
"""
VM_EXIT = """
add    sp, #28
vpop   {d8, d9, d10, d11, d12, d13, d14, d15}
pop    {r4, r5, r6, r7, r8, r9, r10, r11, pc}
"""
VM_ROW4_SETUP = """
ldr    r3, [sp, #4]                   ; kernel_sum
ldrd   r8, r11, [r3], #8 {scratch}
ldrd   r12, r2, [r3], #8 {scratch}
str    r3, [sp, #4]
ldr    r0, [sp, #8]                   ; lhs
ldr    r1, [sp, #12]                  ; rhs
ldr    r3, [sp, #16]                  ; rhs_cols
add    r4, r1, r3
add    r6, r4, r3
add    r7, r6, r3
add    r5, r7, r3
str    r5, [sp, #12]                  ; rhs += 4 * rhs_cols
ldr    r5, [sp, #16]                  ; col_cnt
add    r3, r5, #15
lsrs   r3, r3, #4                     ; col_loop_cnt
movs   r10, #0                        ; lhs_sum
dls    lr, r3
"""


def _vm_inner(wsum: bool) -> object:
    def text(note: str) -> str:
        t = f"""
vctp.8 r5
vmrs   r3, p0
subs   r5, #16
vmsr   p0, r3
vpst
vldrbt.s8 q0, [r0], #16 {{input}}{note}
"""
        if wsum:
            t += "vaddva.s8 r10, q0\n"
        for k, (ptr, acc) in enumerate((("r1", "r8"), ("r4", "r11"), ("r6", "r12"), ("r7", "r2"))):
            t += f"vpst\nvldrbt.s8 q{k + 1}, [{ptr}], #16 {{weights}}{note}\n"
            t += f"vmladava.s8 {acc}, q{k + 1}, q0\n"
        return t + "le     lr, .Lvm_cols\n"

    return text


VM_PARAMS = """
ldr    r1, [sp, #140]                 ; dst_multiplier
ldr    r2, [sp, #144]                 ; dst_shift"""
# arm_nn_vec_mat_mult_t_per_ch_s8: *dst_multiplier++, *dst_shift++ (one pair per pass)
VM_PARAMS_PC = """
ldr    r3, [sp, #24]
ldr    r1, [r3], #4    {qmult}          ; *dst_multiplier++
ldr    r2, [ip], #4    {qparams}        ; *dst_shift++
str    r3, [sp, #24]"""

VM_ROW4_OUT = (
    """
vmov   q1[2], q1[0], r8, r12
vmov   q1[3], q1[1], r11, r2
{params}
"""
    + requant_mve("q1", "r1", "r2")
    + offset_clamp()
    + """
ldr    r3, [sp, #20]                  ; dst
vstrb.32 q1, [r3, q7] {output}
ldr    r2, [sp, #156]
add    r3, r3, r2, lsl #2
str    r3, [sp, #20]
ldr    r3, [sp]
subs   r3, #1
str    r3, [sp]
bne    .Lvm_rows4
"""
)
VM_WSUM_OUT = """
ldr    r3, [sp, #160]                 ; rhs_offset
mul    r10, r10, r3
vadd.i32 q1, q1, r10                  ; + lhs_sum * rhs_offset
"""
VM_ROW1_SETUP = """
ldr    r3, [sp, #4]
ldr    r8, [r3], #4    {scratch}
str    r3, [sp, #4]
ldr    r0, [sp, #8]
ldr    r1, [sp, #12]
ldr    r3, [sp, #16]
add    r4, r1, r3
str    r4, [sp, #12]
ldr    r5, [sp, #16]
add    r3, r5, #15
lsrs   r3, r3, #4
movs   r10, #0
dls    lr, r3
"""


def _vm_row1_inner(wsum: bool):
    def text(note: str) -> str:
        t = f"""
vctp.8 r5
vmrs   r3, p0
subs   r5, #16
vmsr   p0, r3
vpst
vldrbt.s8 q0, [r0], #16 {{input}}{note}
"""
        if wsum:
            t += "vaddva.s8 r10, q0\n"
        return t + (
            f"vpst\nvldrbt.s8 q1, [r1], #16 {{weights}}{note}\n"
            "vmladava.s8 r8, q1, q0\nle     lr, .Lvm1_cols\n"
        )

    return text


VM_ROW1_OUT = (
    "mov r0, r8\nldr r3, [sp, #160]\nmla r0, r10, r3, r0\n{params}\n"
    + REQUANT_TEXT
    + SCALAR_OUT
    + "subs r6, #1\nbne .Lvm_rows1\n"
)


def vec_mat_mult_t_s8_mve(
    rhs_rows: int, rhs_cols: int, weight_offset: bool = False, per_channel: bool = False
) -> list:
    """One call of arm_nn_vec_mat_mult_t_s8 (MVE branch): one input vector x rhs_rows rows;
    ``per_channel``: arm_nn_vec_mat_mult_t_per_ch_s8, which loads its multiplier/shift
    from the per-channel arrays instead of the stack."""
    b = block
    tag = "_woff" if weight_offset else ""
    params = VM_PARAMS_PC if per_channel else VM_PARAMS
    pc = "_pc" if per_channel else ""
    # address rules: 4 weight rows per pass (their four pointers fold into one: 4 x 16
    # bytes per step, the same bytes when rhs_cols is a multiple of 16), the input vector
    # re-read per pass, 4 outputs per pass (the scatter's offsets are 0..3: contiguous)
    rows4 = Loop(
        "vm_rows4",
        rhs_rows // 4,
        addr={"weights": Rewind(4 * rhs_cols), "input": Rewind(0), "output": Rewind(4)},
        body=[
            b(VM_ROW4_SETUP, "vm_row4_setup"),
            *tp_loop(f"vm_cols16{tag}", rhs_cols, 16, _vm_inner(weight_offset)),
            *([b(VM_WSUM_OUT, "vm_wsum_out")] if weight_offset else []),
            b(VM_ROW4_OUT.replace("{params}", params), f"vm_row4_out{pc}"),
        ],
    )
    rows1 = Loop(
        "vm_rows1",
        rhs_rows % 4,
        addr={"weights": Rewind(rhs_cols), "input": Rewind(0)},
        body=[
            b(VM_ROW1_SETUP, "vm_row1_setup"),
            *tp_loop(f"vm_row1_cols16{tag}", rhs_cols, 16, _vm_row1_inner(weight_offset)),
            b(VM_ROW1_OUT.replace("{params}", params), f"vm_row1_out{pc}"),
        ],
    )
    return [
        b("bl arm_nn_vec_mat_mult_t_s8", "vm_call"),
        b(VM_ENTRY, "vm_mve_entry"),
        rows4,
        rows1,
        b(VM_EXIT, "vm_mve_exit"),
    ]
