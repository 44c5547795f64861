"""Schedules for plain RV32IMC cores (the MAX78000's RISC-V engine, timed as a CV32E40P
without XpulpV2): TFLM's reference integer kernels compiled with ``-march=rv32imc -O2``.

No hardware loops, no post-increment loads, no SIMD: every loop ends in a compare-branch
(taken: 3 cycles on the CV32E40P), every pointer advances with ``addi``. MAC layers are
TFLM ``reference_integer_ops`` loops (conv: per output pixel and channel, per filter tap
a bounds test, per input channel ``lb``/``lb``/``add`` offset/``mul``/``add``; depthwise
the same per channel; fully connected per output a dot over the input), requantised per
output with MultiplyByQuantizedMultiplier (``mulh`` + ``mul`` for the 64-bit product).
Sub-byte and binary operands are read a byte at a time and their value extracted with
shifts (``srli``/``andi`` or ``slli``/``srai`` for signed lanes) -- what a C loop over
packed data compiles to; nothing in TFLM does this, so those precisions are our own
plain-C rendering. Other ops: :func:`.pulpnn_common.reference_program`.
"""

from __future__ import annotations

from functools import cache

from mcusim.graph import Graph, Op
from mcusim.isa.schedule import Block, Loop, Program, Rewind

from .common import conv_geom
from .pulpnn_common import MBQM_RV, Target, _check_mac_types, bits_of, reference_program
from .pulpnn_common import whole_part as _whole

FAMILY = "rv32imc"
TARGET = Target(xpulpnn=False)

CLAMP_STORE = """
add    a0, a0, s9
bge    a0, s10, .Llo {taken}
blt    a0, s11, .Lhi {taken}
sb     a0, 0(s7) {output}
addi   s7, s7, 1
"""


def _rv(text: str, name: str) -> Block:
    return Block.rv(text, name)


def _extract(reg: str, bits: int, signed: bool) -> str:
    """Value of one packed lane (the lane position comes from the loop's shift)."""
    if bits >= 8:
        return ""
    if signed:
        return f"sll {reg}, {reg}, t5\nsrai {reg}, {reg}, {32 - bits}\n"
    return f"srl {reg}, {reg}, t5\nandi {reg}, {reg}, {(1 << bits) - 1}\n"


@cache
def mac_block(wb: int, ab: int, a_signed: bool, loop: str) -> Block:
    """One multiply-accumulate of the reference loops: input value + offset times filter
    value, accumulated; both pointers advanced; the loop's compare-branch."""
    ld_a = "lb" if a_signed or ab == 1 else "lbu"
    return _rv(
        f"""
        {ld_a}     a0, 0(s0) {{input}}
        lb      a1, 0(s1) {{weights}}
        {_extract("a0", ab, a_signed)}{_extract("a1", wb, True)}add     a0, a0, s2
        mul     a0, a0, a1
        add     s3, s3, a0
        addi    s0, s0, 1
        addi    s1, s1, 1
        bne     s1, s4, .L{loop} {{taken}}
        """,
        f"rv32imc_mac_w{wb}a{ab}_{loop}",
    )


@cache
def _tap_block(name: str, inside: bool) -> Block:
    """Per filter tap: in_y/in_x, the is-point-inside-image test, the channel-loop setup."""
    text = """
        mul     t0, s5, a2
        add     t0, t0, a3
        mul     t1, s6, a4
        add     t1, t1, a5
        bltz    t0, .Lskip
        bge     t0, a6, .Lskip
        bltz    t1, .Lskip
        bge     t1, a7, .Lskip
        mul     s0, t0, t2
        add     s0, s0, t1
        add     s0, s0, t3
        """
    if not inside:
        text = text.replace("bltz    t0, .Lskip", "bltz    t0, .Lskip {taken}")
        text = text.split("{taken}")[0] + "{taken}\n"
    end = "addi a5, a5, 1\nbne a5, t4, .Ltap {taken}\n"
    return _rv(text + end, f"{name}_tap_{'in' if inside else 'out'}")


@cache
def _out_block(name: str) -> Block:
    """Bias, requantization (multiplier and shift from their two arrays: pointers t6 and
    ra, which the loops never call through), clamp, store, next channel."""
    return _rv(
        "lw a0, 0(s8) {bias}\nadd a0, a0, s3\nlw a1, 0(t6) {qmult}\nlw a2, 0(ra) {qparams}\n"
        "srai a3, a2, 31\n"
        + MBQM_RV.replace("sll    a0, a0, a2", "sll    a0, a0, a3")
        + CLAMP_STORE
        + "addi s8, s8, 4\naddi t6, t6, 4\naddi ra, ra, 4\nli s3, 0\naddi t4, t4, -1\n"
        "bnez t4, .Lout {taken}",
        f"{name}_output",
    )


@cache
def _frame(name: str) -> tuple[Block, Block]:
    entry = _rv(
        "addi sp, sp, -48\nsw ra, 44(sp)\nsw s0, 40(sp)\nsw s1, 36(sp)\nsw s2, 32(sp)\n"
        "sw s3, 28(sp)\nsw s4, 24(sp)",
        f"{name}_entry",
    )
    ex = _rv(
        "lw ra, 44(sp)\nlw s0, 40(sp)\nlw s1, 36(sp)\nlw s2, 32(sp)\nlw s3, 28(sp)\n"
        "lw s4, 24(sp)\naddi sp, sp, 48\nret",
        f"{name}_exit",
    )
    return entry, ex


def conv_like(graph: Graph, op: Op) -> Program:
    """reference_integer_ops::ConvPerChannel / DepthwiseConvPerChannel: per output pixel
    and channel, per filter tap (bounds test), per input channel of the tap a MAC."""
    g = conv_geom(graph, op)
    x = graph.tensors[op.inputs[0]]
    w = graph.tensors[op.inputs[1]]
    wb, ab = bits_of(w.dtype), bits_of(x.dtype)
    dw = op.kind == "depthwise_conv2d"
    depth = 1 if dw else int(w.shape[3])
    name = "DepthwiseConvPerChannel" if dw else "ConvPerChannel"
    taps = g.k_h * g.k_w
    mac = mac_block(wb, ab, bool(x.dtype.signed), name)
    entry, ex = _frame(name)
    total_valid = sum(n * c for n, c in g.taps_valid().items())  # in-bounds taps, all pixels
    outs = g.batches * g.out_pixels * g.out_c
    # pixels classes by in-bounds taps: per output channel the same tap walk
    loops = []
    for n_valid, count in sorted(g.taps_valid().items()):
        loops.append(
            Loop(
                f"{name}_outputs_{n_valid}taps",
                count * g.batches * g.out_c,
                [
                    Loop(
                        f"{name}_taps_in",
                        n_valid,
                        [_tap_block(name, True), Loop(f"{name}_channels", depth, [mac])],
                    ),  # fmt: skip
                    Loop(f"{name}_taps_out", taps - n_valid, [_tap_block(name, False)]),
                    _out_block(name),
                ],
                addr={"weights": Rewind(0)} if dw else {},
            )
        )
    macs = g.batches * total_valid * g.out_c * depth
    assert outs > 0
    return Program([entry, *loops, ex], kernel=f"tflm_{name} (rv32imc)", isa=FAMILY, macs=macs)


def fully_connected(graph: Graph, op: Op) -> Program:
    """reference_integer_ops::FullyConnected: per batch and output, a dot over the input."""
    x = graph.tensors[op.inputs[0]]
    w = graph.tensors[op.inputs[1]]
    wb, ab = bits_of(w.dtype), bits_of(x.dtype)
    k = int(w.shape[1])
    batch = int(x.size) // k
    n = int(w.shape[0])
    mac = mac_block(wb, ab, bool(x.dtype.signed), "FullyConnected")
    entry, ex = _frame("FullyConnected")
    body = [Loop("FullyConnected_depth", k, [mac]), _out_block("FullyConnected")]
    items = [entry, Loop("FullyConnected_outputs", batch * n, body, addr={"input": Rewind(0)}), ex]
    return Program(items, kernel="tflm_FullyConnected (rv32imc)", isa=FAMILY, macs=batch * n * k)


def schedule(graph: Graph, op: Op) -> Program:
    """TFLM reference schedule of ``op`` on a plain RV32IMC core."""
    if op.kind in ("conv2d", "depthwise_conv2d", "fully_connected"):
        _check_mac_types(graph, op, TARGET, FAMILY)
        if op.kind == "fully_connected":
            return fully_connected(graph, op)
        return conv_like(graph, op)
    prog = reference_program(graph, op, _whole(graph, op), TARGET)
    prog.isa = FAMILY
    return prog
