"""Sub-byte and binary conv / fully connected on Armv8.1-M + MVE (Cortex-M55/M85).

Int4 weights follow CMSIS-NN's Helium s4 kernel (ARM-software/CMSIS-NN
Source/NNSupportFunctions/arm_nn_mat_mult_nt_t_s4.c, MVE branch): 4 LHS rows (im2col
columns, int8) x 1 weight row; one VLDRB.8 brings 16 packed bytes = 32 weights, VSHL #4 +
VSHR.S8 #4 sign-extend the low nibbles (even elements) and VSHR.S8 #4 the high ones (odd
elements), VADDVA.S8 sums them for the input offset, and each LHS row is loaded
de-interleaved (VLD20/VLD21, even/odd bytes) for two VMLADAVA.S8. Int2 weights are our
extension of the same scheme (four VSHL/VSHR.S8 #6 crumb vectors, VLD40-43 rows). W4A8 with
int8 input/output is named after the library (arm_convolve_s4 /
arm_convolve_1x1_s4_fast -> arm_nn_mat_mult_nt_t_s4, arm_fully_connected_s4); every
other precision is "cmix-style mve ...": the im2col unpacks packed 4/2-bit activations to
int8 (VLDRB, VSHL/VSHR, VST20/21 or VST40-43 re-interleave), the input zero point is
applied as sum(w) * offset in the epilogue, as CMSIS-NN's MVE kernels do.

W1A1: per 16 bytes (128 bits) and LHS row: VLDRB, VEOR with the weights, the SWAR count
on byte lanes (VSHR.U8/VAND/VSUB/VADD with 0x55/0x33/0x0F vectors) and VADDVA.U8
(cortex-m.md section 6: MVE has no VCNT); n - 2 * popcount in the epilogue.

Rows are whole 16-byte steps: weight rows padded with zero weights (0 bits for binary) to a
multiple of 16 bytes by the deployment tool, im2col columns padded with zeros (the
buffer's tail is cleared once), so the last step's extra lanes add nothing. The
requantization is
arm_requantize_mve on the 4 pixels of a channel (fixed point) or a VCMP/VPST/VADDT count
per threshold; sub-byte outputs are merged into their bytes one pixel at a time.
Depthwise, pooling, add and W1A8 layers run the Armv7E-M CMix-NN-style code (cmix_*.py).
"""

from __future__ import annotations

from functools import cache

from mcusim.graph import Graph, Op
from mcusim.isa.schedule import Loop, Program, Rewind

from . import cmsis_conv as dsp
from .cmix_common import Prec, layer_prec, packed_bytes
from .common import Geom, conv_geom, pixels_by, qparam_rules, taps_key
from .mve_common import block, memcpy_mve_items, memset_mve_items, requant_mve


def supported(graph: Graph, op: Op) -> bool:
    """conv2d (not grouped) / FC with int4/int2 weights and non-binary inputs, or W1A1."""
    if op.kind not in ("conv2d", "fully_connected"):
        return False
    p = layer_prec(graph, op)
    if op.kind == "conv2d":
        if int(graph.tensor(op.inputs[1]).shape[3]) != int(graph.tensor(op.inputs[0]).shape[3]):
            return False
    return (p.w in (4, 2) and p.a != 1) or (p.w == 1 and p.a == 1)


def group(w: int) -> int:
    """Reduction columns per 16-byte weight vector."""
    return 128 // w


ROWS = ("r1", "r5", "r6", "r7")  # LHS row pointers
ACCS = ("r11", "r12", "r3", "r2")  # their accumulators; r8 = sum(w)


def _unpack_w(w: int) -> tuple[str, list[str]]:
    """Weight vectors (int8 lanes) from the 16 packed bytes in q0."""
    if w == 4:
        return "vshl.s8 q1, q0, #4\nvshr.s8 q1, q1, #4\nvshr.s8 q0, q0, #4\n", ["q1", "q0"]
    text = (
        "vshr.s8 q3, q0, #6\nvshl.s8 q2, q0, #2\nvshr.s8 q2, q2, #6\n"
        "vshl.s8 q1, q0, #4\nvshr.s8 q1, q1, #6\nvshl.s8 q0, q0, #6\nvshr.s8 q0, q0, #6\n"
    )
    return text, ["q0", "q1", "q2", "q3"]


def _lhs_load(w: int, ptr: str, src: str) -> tuple[str, list[str]]:
    if w == 4:
        regs = ["q4", "q5"]
        lst = "{q4, q5}"
        text = f"vld20.8 {lst}, [{ptr}] {{{src}}}\nvld21.8 {lst}, [{ptr}]! {{{src}}}\n"
        return text, regs
    regs = ["q4", "q5", "q6", "q7"]
    lst = "{q4, q5, q6, q7}"
    text = "".join(f"vld4{i}.8 {lst}, [{ptr}]{'!' if i == 3 else ''} {{{src}}}\n" for i in range(4))
    return text, regs


SWAR = """
vshr.u8 q2, q1, #1
vand   q2, q2, q5
vsub.i8 q1, q1, q2
vshr.u8 q2, q1, #2
vand   q2, q2, q6
vand   q1, q1, q6
vadd.i8 q1, q1, q2
vshr.u8 q2, q1, #4
vadd.i8 q1, q1, q2
vand   q1, q1, q7
"""


def step_text(p: Prec, rows: int, src: str) -> str:
    """One 16-byte weight vector against ``rows`` LHS rows (DLS/LE loop body)."""
    t = "vldrb.8 q0, [r0], #16 {weights}\n"
    if p.w == 1:  # XNOR-popcount
        for r in range(rows):
            t += f"vldrb.8 q1, [{ROWS[r]}], #16 {{{src}}}\nveor   q1, q1, q0\n"
            t += SWAR + f"vaddva.u8 {ACCS[r]}, q1\n"
        return t + "le     lr, .Lmve_sb\n"
    unpack, wv = _unpack_w(p.w)
    t += unpack + "".join(f"vaddva.s8 r8, {v}\n" for v in wv)
    for r in range(rows):
        load, xv = _lhs_load(p.w, ROWS[r], src)
        t += load
        t += "".join(f"vmladava.s8 {ACCS[r]}, {a}, {b}\n" for a, b in zip(wv, xv, strict=True))
    return t + "le     lr, .Lmve_sb\n"


CH_SETUP = """
ldr    r0, [sp, #12]                  ; weight row of this channel
ldr    r4, [sp, #16]                  ; packed bytes per row
add    r4, r0, r4
str    r4, [sp, #12]
ldr    r1, [sp, #4]                   ; LHS rows
ldr    r4, [sp, #20]                  ; LHS row stride
add    r5, r1, r4
add    r6, r5, r4
add    r7, r6, r4
movs   r8, #0
movs   r11, #0
movs   r12, #0
movs   r3, #0
movs   r2, #0
movs   r9, #0
ldr    r4, [sp, #24]                  ; full 16-byte steps
dls    lr, r4
"""
CONSTS = """
vmov.i8 q5, #0x55
vmov.i8 q6, #0x33
vmov.i8 q7, #0x0F
"""


def epilogue_text(p: Prec, rows: int) -> str:
    """Accumulators -> 4 lanes, offsets and bias, requantization / thresholds, stores
    (4 pixels of one channel: byte stores one output row apart, sub-byte outputs merged
    into their bytes)."""
    t = "vmov   q1[2], q1[0], r11, r3\nvmov   q1[3], q1[1], r12, r2\n"
    t += "ldr    r4, [sp, #28]\nldr    r10, [r4], #4    {bias}\nstr    r4, [sp, #28]\n"
    if p.w == 1:  # n - 2 * popcount + bias
        t += "vshl.s32 q1, q1, #1\nldr    r4, [sp, #32]                  ; n\n"
        t += "vdup.32 q2, r4\nvsub.i32 q1, q2, q1\nvadd.i32 q1, q1, r10\n"
    else:  # + sum(w) * lhs_offset + bias
        t += "ldr    r4, [sp, #36]\nmla    r8, r8, r4, r10\nvadd.i32 q1, q1, r8\n"
    if p.thresholds:
        t += "vmov.i32 q3, #0\nvmov.i32 q2, #1\nldr    r4, [sp, #40]\n"
        for _ in range((1 << p.y) - 1 if p.y > 1 else 1):
            t += "ldr    r10, [r4], #4    {qparams}\nvcmp.s32 ge, q1, r10\nvpst\n"
            t += "vaddt.i32 q3, q3, q2\n"
        t += "str    r4, [sp, #40]\n"
        src = "q3"
    else:
        # multipliers and shifts: two arrays, the shifts' running pointer in ip (free
        # here: its accumulator is in Q1)
        t += "ldr    r4, [sp, #44]\nldr    r1, [r4], #4    {qmult}\n"
        t += "ldr    r9, [ip], #4     {qparams}\nstr    r4, [sp, #44]\n"
        t += requant_mve(q="q1", mult="r1", shift="r9")
        t += "ldr    r4, [sp, #60]\nvadd.i32 q1, q1, r4                ; + output offset\n"
        t += "ldr    r4, [sp, #64]\nvdup.32 q5, r4\nldr    r4, [sp, #68]\nvdup.32 q6, r4\n"
        t += "vmax.s32 q1, q1, q5\nvmin.s32 q1, q1, q6\n"
        src = "q1"
    t += f"vmov   r0, r1, {src}[2], {src}[0]\nvmov   r9, r10, {src}[3], {src}[1]\n"
    t += "ldr    r4, [sp, #48]\nldr    r7, [sp, #56]                  ; output row stride\n"
    if p.y < 8:
        t += "ldr    r6, [sp, #52]                  ; bit position of the channel\n"
    for r, reg in enumerate(("r1", "r10", "r0", "r9")[:rows]):
        if p.y == 8:
            t += f"strb   {reg}, [r4]        {{output}}\n"
        else:
            t += f"and    {reg}, {reg}, #{(1 << p.y) - 1}\nlsl    {reg}, {reg}, r6\n"
            t += "ldrb   r5, [r4]        {output}\n"
            t += f"orr    r5, r5, {reg}\nstrb   r5, [r4]        {{output}}\n"
        if r < rows - 1:
            t += "add    r4, r4, r7                     ; next pixel\n"
    return t


CH_END = """
ldr    r4, [sp, #8]
subs   r4, #1
str    r4, [sp, #8]
bne    .Lmve_sb_ch
"""
ENTRY = """
push   {r4, r5, r6, r7, r8, r9, r10, r11, lr}
vpush  {d8, d9, d10, d11, d12, d13, d14, d15}
sub    sp, #60
"""
EXIT = """
add    sp, #60
vpop   {d8, d9, d10, d11, d12, d13, d14, d15}
pop    {r4, r5, r6, r7, r8, r9, r10, r11, pc}
"""


@cache
def _kernel_blocks(p: Prec, rows: int, src: str):
    tag = f"{p.name}_y{p.y}{'t' if p.thresholds else ''}_{rows}_{src}"
    return {
        "setup": block(CH_SETUP + (CONSTS if p.w == 1 else ""), f"mve_sb_ch_setup_{p.w == 1}"),
        "step": block(step_text(p, rows, src), f"mve_sb_step_{tag}"),
        "out": block(epilogue_text(p, rows), f"mve_sb_out_{tag}"),
        "end": block(CH_END, "mve_sb_ch_end"),
    }


def kernel_items(p: Prec, lhs_rows: int, out_c: int, k_cols: int, src: str, lb: int) -> list:
    """All channels against ``lhs_rows`` LHS rows (4 at a time, then one at a time)."""
    g = group(p.w)
    items: list = []
    for rows, count in ((4, lhs_rows // 4), (1, lhs_rows % 4)):
        if not count:
            continue
        k = _kernel_blocks(p, rows, src)
        ch = Loop(
            f"mve_sb_channels_{rows}",
            out_c,
            [
                k["setup"],
                Loop("mve_sb_steps", -(-k_cols // g), [k["step"]]),
                k["out"],
                k["end"],
            ],
            addr={"weights": Rewind(16 * -(-k_cols // g)), src: Rewind(0)},
        )
        items.append(
            Loop(
                f"mve_sb_row_groups_{rows}",
                count,
                [ch],
                addr={
                    src: Rewind(rows * lb),
                    "weights": Rewind(0),
                    "bias": Rewind(0),
                    **qparam_rules(),
                },
            )
        )
    return items


# ------------------------------------------------------------------------ im2col
def unpack_text(a: int, signed: bool, note: str = "") -> str:
    """16 packed bytes of 4/2-bit activations -> 32/64 int8 in natural order."""
    sh = "vshr.s8" if signed else "vshr.u8"
    t = f"vldrb.8 q0, [r1], #16 {{input}}{note}\n"
    if a == 4:
        t += f"vshl.s8 q4, q0, #4\n{sh} q4, q4, #4\n{sh} q5, q0, #4\n"
        t += "vst20.8 {q4, q5}, [r0] {scratch}\nvst21.8 {q4, q5}, [r0]! {scratch}\n"
    else:
        t += f"vshl.s8 q4, q0, #6\n{sh} q4, q4, #6\nvshl.s8 q5, q0, #4\n{sh} q5, q5, #6\n"
        t += f"vshl.s8 q6, q0, #2\n{sh} q6, q6, #6\n{sh} q7, q0, #6\n"
        t += "".join(
            f"vst4{i}.8 {{q4, q5, q6, q7}}, [r0]{'!' if i == 3 else ''} {{scratch}}\n"
            for i in range(4)
        )
    return t + "le     lr, .Lmve_unpack\n"


def copy_items(p: Prec, n: int, src: str = "input") -> list:
    """Bring n activations (one tap / one FC row) into the int8 or bit-packed column."""
    if p.a in (8, 1):
        nbytes = packed_bytes(n, p.a)
        return memcpy_mve_items(nbytes, src, "scratch")
    return [
        block("dls    lr, r2", "mve_unpack_dls"),
        Loop(
            "mve_unpack",
            -(-packed_bytes(n, p.a) // 16),
            [block(unpack_text(p.a, p.a_signed), f"mve_unpack_a{p.a}{int(p.a_signed)}")],
        ),
    ]


def _column(p: Prec, g: Geom, n_valid: int) -> list:
    k = dsp._blocks()
    c = g.in_c
    col = packed_bytes(c, 1) if p.a == 1 else c  # bytes of one tap in the column
    pad = memset_mve_items(col, "scratch")
    return [
        k["pixel"],
        Loop(
            "mve_sb_im2col_taps",
            n_valid,
            [k["tap_test"], k["tap_copy"], *copy_items(p, c), k["tap_end"]],
        ),
        Loop(
            "mve_sb_im2col_pad",
            g.k_h * g.k_w - n_valid,
            [k["tap_test_pad"], k["tap_pad"], *pad, k["tap_end"]],
        ),
        k["pixel_end"],
    ]


def _name(p: Prec, graph: Graph, op: Op, what: str) -> str:
    from .cmix_conv import cmsis_s4_ok

    if p.w == 4 and cmsis_s4_ok(graph, op, p):
        if what == "fc":
            return "arm_fully_connected_s4 -> arm_nn_vec_mat_mult_t_s4 (MVE)"
        return "arm_convolve_s4 -> arm_nn_mat_mult_nt_t_s4 (MVE)"
    req = "thresholds" if p.thresholds else "fixed_point"
    if p.w == 1:
        return f"cmix-style mve xnor-popcount {what} W1A1 (VEOR + SWAR + VADDVA.U8, {req})"
    return f"cmix-style mve {what} {p.name} (VSHR unpack + VMLADAVA.S8, {req}, {p.y}-bit out)"


def conv2d_program(graph: Graph, op: Op) -> Program:
    g = conv_geom(graph, op)
    p = layer_prec(graph, op)
    k_cols = g.k_h * g.k_w * g.in_c
    steps = -(-k_cols // group(p.w))
    col_bytes = steps * (16 if p.a == 1 else 128 // p.w)  # padded column
    body: list = []
    classes = pixels_by(g, taps_key(g))
    for n_valid, count in sorted(g.taps_valid().items()):
        assert classes[n_valid]
        body.append(
            Loop(
                f"mve_sb_im2col_{n_valid}taps",
                count,
                _column(p, g, n_valid),
                addr={"scratch": Rewind(0)},
            )
        )
    quads = g.out_pixels // 4
    items4 = kernel_items(p, 4, g.out_c, k_cols, "scratch", col_bytes)
    body.append(
        Loop(
            "mve_sb_column_quads",
            quads,
            items4,
            addr={
                "scratch": Rewind(0),
                "weights": Rewind(0),
                "bias": Rewind(0),
                **qparam_rules(),
            },
        )
    )
    if g.out_pixels % 4:
        body += kernel_items(p, g.out_pixels % 4, g.out_c, k_cols, "scratch", col_bytes)
    items = [
        block(ENTRY, "mve_sb_entry"),
        Loop("batches", g.batches, body),
        block(EXIT, "mve_sb_exit"),
    ]
    macs = g.batches * g.out_pixels * g.out_c * k_cols
    return Program(
        items,
        kernel=_name(p, graph, op, "conv"),
        macs=macs,
        notes=["weight rows and im2col columns padded to whole 16-byte steps"],
    )


def fully_connected_program(graph: Graph, op: Op) -> Program:
    w = graph.tensor(op.inputs[1])
    out_f, in_f = int(w.shape[0]), int(w.shape[1])
    batches = max(1, graph.tensor(op.inputs[0]).size // in_f)
    p = layer_prec(graph, op)
    items: list = [block(ENTRY, "mve_sb_entry")]
    if p.a in (4, 2):  # unpack the rows to int8 first
        items.append(Loop("mve_sb_fc_unpack_rows", batches, copy_items(p, in_f)))
        src, lb = "scratch", in_f
    else:
        src, lb = "input", packed_bytes(in_f, p.a)
    items += kernel_items(p, batches, out_f, in_f, src, lb)
    items.append(block(EXIT, "mve_sb_exit"))
    return Program(items, kernel=_name(p, graph, op, "fc"), macs=batches * out_f * in_f)


def program(graph: Graph, op: Op) -> Program:
    if op.kind == "conv2d":
        return conv2d_program(graph, op)
    return fully_connected_program(graph, op)
