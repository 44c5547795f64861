"""PULP-NN / pulp-nn-mixed / XpulpNN kernels as RI5CY-class cores execute them.

One builder serves both ISA families (``rv32-xpulpv2``: :mod:`.pulpnn`, ``rv32-xpulpnn``:
:mod:`.pulpnn_xpulpnn`); :class:`Target` says which instructions exist. Every builder
takes a :class:`~mcusim.cluster.Part` (the output rows / columns / channels one cluster
core computes, docs/cluster.md) and emits that core's Program: the same instruction text
for every part, only the trip counts change. The whole layer on one core is the part
covering the whole output.

Loop structure (pulp-platform/pulp-nn ``32bit/src``, pulp-nn-mixed ``XpulpV2`` and
``XpulpNN``; our own rendering of what PULP GCC -O3 emits with hardware loops and
post-increment loads; register choices plausible, instruction mix and dependencies as the
C code implies):

* conv2d (``pulp_nn_conv_*``): per output pixel an im2col column in an L1 buffer (a copy
  per in-bounds kernel row, per tap at borders, zero fill for padding), converted to the
  dot-product width ``D`` (below) on the way; every ``P`` columns the matmul kernel runs
  over the part's channels: 4 output channels x ``P`` pixels, the reduction in a hardware
  loop of 32-bit words, leftover reduction columns scalar, leftover channels one at a time,
  requantisation per output; a last odd column goes through a 1-pixel loop.
* ``D``: XpulpV2 dot products are 8-bit (``pv.sdotusp.b``): sub-byte activations are
  unpacked to bytes in im2col (pulp-nn-mixed ``pulp_nn_u4_to_u8``) and sub-byte weights in
  the inner loop (``p.extract`` + ``pv.pack``). XpulpNN has 4- and 2-bit dot products
  (``pv.sdotusp.n/.c``): ``D`` = the wider of the two operands, the narrower one unpacked.
  Binary x binary is XOR + ``p.cnt`` (+ add) per 32 bits on both families.
* XpulpNN with equal weight and activation widths uses the MAC&LOAD 4x4 kernel
  (pulp-nn-mixed ``xpulp_nn_matmul_*_4x4``): 1 init + 16 ``pv.mlsdotsup`` per step.
* requantisation, ``fixed_point``: PULP-NN's ``bn_quant`` (kappa, lambda per channel,
  ``(k*acc + l) >> d``, ``p.clipu``): the library's instruction cost for the same outputs
  (mcusim's arithmetic is docs/precision.md); ``thresholds``: pulp-nn-mixed's balanced
  compare tree (``pulp_nn_u4_quant``, a call per output) on XpulpV2, ``pv.qnt.n`` on
  XpulpNN for 4-bit outputs (2-bit and binary outputs keep the compare tree).
* depthwise (``pulp_nn_depthwise_generic``): per channel the input plane is gathered into
  a column buffer, then per output pixel a dot product over the window; fully connected
  (``pulp_nn_linear``): 2 neurons per pass; max/avg pool, add: per element / per word.
* other ops: plain RV32IMC loops (TFLM reference kernels compiled without XpulpV2).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from mcusim.errors import UnsupportedOpError
from mcusim.graph import Graph, Op
from mcusim.isa.ri5cy import div_cycles
from mcusim.isa.riscv_asm import hw_loop
from mcusim.isa.schedule import Block, Loop, Program, Rewind

from .common import conv_geom, pool_geom, qparam_rules, valid_taps_1d


@dataclass(frozen=True)
class Target:
    """What the core offers: XpulpNN nibble/crumb SIMD, pv.qnt, MAC&LOAD."""

    xpulpnn: bool = False
    macload: bool = True  # XpulpNN: use the MAC&LOAD 4x4 kernel where it applies

    @property
    def family(self) -> str:
        return "rv32-xpulpnn" if self.xpulpnn else "rv32-xpulpv2"


def rv(text: str, name: str) -> Block:
    return Block.rv(text, name)


# ----------------------------------------------------------------------------- types
def bits_of(dt) -> int:
    """Storage bits per value (binary: 1)."""
    return 1 if dt.binary else int(dt.bits)


def dot_bits(w: int, a: int, t: Target) -> int:
    """Lane width of the dot products (1 = XOR/popcount)."""
    if w == 1 and a == 1:
        return 1
    if not t.xpulpnn:
        return 8
    return max(w, a, 2) if max(w, a) < 8 else 8


def _lane(d: int) -> str:
    return {8: "b", 4: "n", 2: "c"}[d]


def unpack_text(src: str, dst: str, w: int, d: int, part: int, tag: str = "") -> str:
    """Instructions turning part ``part`` of a packed word of ``w``-bit values into one
    word of ``d``-bit lanes (``p.extract`` per lane, then ``pv.pack`` (bytes) or
    ``p.insert`` (nibbles, crumbs); binary values remapped to +-1 with two lane ops)."""
    m = 32 // d
    ext = "p.extractu" if w == 1 else "p.extract"
    lines = []
    temps = ("s10", "s11", "tp", "t6")
    for i in range(m):
        pos = (part * m + i) * w
        lines.append(f"{ext} {temps[i % 4]}, {src}, {w - 1}, {pos % 32}")
        if d < 8 and i:
            lines.append(f"p.insert {dst}, {temps[i % 4]}, {d - 1}, {i * d}")
        elif d < 8:
            lines.append(f"mv {dst}, {temps[0]}")
        if d == 8 and i % 2 == 1:
            op = "pv.packlo.b" if i == 1 else "pv.packhi.b"
            lines.append(f"{op} {dst}, {temps[(i - 1) % 4]}, {temps[i % 4]}")
    if d < 8:
        lines = [ln for ln in lines if not ln.startswith("mv")]
    if w == 1:
        lines += [
            f"pv.sll.sci.{_lane(d)} {dst}, {dst}, 1",
            f"pv.add.sci.{_lane(d)} {dst}, {dst}, -1",
        ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- requant
@dataclass(frozen=True)
class OutSpec:
    """How outputs are produced: requant mode, output bits, thresholds per channel."""

    mode: str  # "fixed_point" | "thresholds"
    bits: int  # output storage bits (1 binary)
    xnor: bool = False  # accumulators hold popcounts: acc = n - 2 cnt first
    has_bias: bool = True


def stores_text(bits: int, n_ch: int, ptr: str, insert: bool = True) -> str:
    """Store the ``n_ch`` consecutive channel outputs of one pixel (value in t6): a byte
    each, or packed along channels (``p.insert`` per value, a byte per 8/bits values)."""
    if bits == 8:
        return f"p.sb t6, 1({ptr}!) {{output}}\n" * n_ch
    per = 8 // bits
    s = ""
    for k in range(n_ch):
        if insert:
            s += f"p.insert a6, t6, {bits - 1}, {(k % per) * bits}\n"
        if k % per == per - 1 or k == n_ch - 1:
            s += f"p.sb a6, 1({ptr}!) {{output}}\n"
    return s


def requant_text(acc: list[list[str]], spec: OutSpec, t: Target, ptrs: list[str]) -> str:
    """Requantise and store the outputs of one channel group: ``acc[c][p]`` accumulator
    of channel c (group of up to 4) and pixel p, stored through ``ptrs[p]``. Threshold
    trees (XpulpV2, 2/4-bit outputs) are separate call blocks (:func:`tree_items`); here
    only their packed stores."""
    out = []
    n_ch, n_px = len(acc), len(acc[0])
    if spec.xnor:
        for c in range(n_ch):
            for p in range(n_px):
                out.append(f"slli t6, {acc[c][p]}, 1\nsub {acc[c][p]}, a5, t6\n")
    if spec.mode == "fixed_point":
        for c in range(n_ch):
            # kappa (the multiplier: its own array, "qmult"), lambda
            out.append("p.lw a4, 4(a6!) {qmult}\np.lw a5, 4(a7!) {qparams}\n")
            for p in range(n_px):
                out.append(
                    f"mul t6, {acc[c][p]}, a4\nadd t6, t6, a5\nsra t6, t6, t1\n"
                    f"p.clipu t6, t6, {spec.bits + 1}\n"
                )
                if spec.bits == 8:
                    out.append(stores_text(8, 1, ptrs[p]))
        if spec.bits < 8:
            for p in range(n_px):
                out.append(stores_text(spec.bits, n_ch, ptrs[p]))
        return "".join(out)
    levels = 1 if spec.bits == 1 else (1 << spec.bits) - 1
    qnt = t.xpulpnn and spec.bits == 4
    for c in range(n_ch):
        for p in range(n_px):
            if qnt:
                out.append(f"pv.qnt.n t6, {acc[c][p]}, a7 {{qparams}}\n")
            elif spec.bits == 1:
                out.append(f"p.lw a5, 0(a7) {{qparams}}\nnop\nslt t6, {acc[c][p]}, a5\n")
        out.append(f"addi a7, a7, {4 * levels}\n")
    for p in range(n_px):
        out.append(stores_text(spec.bits, n_ch, ptrs[p], insert=qnt or spec.bits == 1))
    return "".join(out)


def tree_items(n_out: int, spec: OutSpec) -> list:
    """pulp-nn-mixed ``pulp_nn_u4_quant`` / ``u2_quant`` (noinline): a call per output,
    one threshold load + compare-branch per tree level (alternately taken)."""
    if n_out <= 0:
        return []
    return [Loop("thr_tree_outputs", n_out, [_tree_block(spec.bits)])]


@cache
def _tree_block(bits: int) -> Block:
    lines = ["mv a0, s0", "mv a1, a7", "jal ra, pulp_nn_quant_tree"]
    for lv in range(bits):  # 2^bits - 1 thresholds: a balanced tree of depth bits
        lines.append(f"p.lh t6, {2 * ((1 << (bits - lv - 1)) - 1)}(a1) {{qparams}}")
        tk = "{taken}" if lv % 2 == 0 else "{nottaken}"
        lines.append(f"bge t6, a0, .Lq{lv} {tk}")
    lines += ["li a0, 0", "ret", f"p.insert a6, a0, {bits - 1}, 0"]
    lines += ["addi a2, a2, -1", "bnez a2, .Lthr_out {taken}"]
    return rv("\n".join(lines), f"pulpnn_thr_tree{bits}")


# ----------------------------------------------------------------------------- matmul
@dataclass(frozen=True)
class MM:
    """One matmul configuration: weight / activation (im2col) / dot bits, signedness."""

    w: int
    a: int  # bits of the activations as the matmul reads them (im2col: d)
    d: int
    a_signed: bool
    t: Target
    atag: str = "scratch"  # activation stream: the im2col buffer, or the input (1x1 convs)

    @property
    def xnor(self) -> bool:
        return self.d == 1

    @property
    def r(self) -> int:
        """Dot words per weight word (weights narrower than the dot lanes)."""
        return 1 if self.xnor else self.d // self.w

    @property
    def cols(self) -> int:
        """Reduction columns per inner-loop iteration: one 32-bit weight word."""
        return 32 // self.w

    @property
    def macload(self) -> bool:
        return self.t.xpulpnn and self.t.macload and self.w == self.d and not self.xnor

    def dot(self, acc: str, a: str, w: str) -> str:
        if self.xnor:
            return f"xor t6, {a}, {w}\np.cnt t6, t6\nadd {acc}, {acc}, t6\n"
        op = "pv.sdotsp" if self.a_signed else "pv.sdotusp"
        return f"{op}.{_lane(self.d)} {acc}, {a}, {w}\n"


# accumulators ACC[pixel][channel]; rows 2-3 only in the 4x4 MAC&LOAD kernel
ACC = [
    ["s0", "s1", "s2", "s3"],
    ["s4", "s5", "s6", "s7"],
    ["s8", "s9", "s10", "s11"],
    ["t3", "t4", "t5", "t6"],
]
WREG = ["t0", "t1", "t2", "a3"]
AREG = ["t4", "t5", "ra", "gp"]
OPTR = ["t0", "t2", "a6", "a7"]  # output pointers of the pixels (dead registers by then)
WPTR = ["a0", "a1", "a2", "a3"]
APTR = ["a4", "a5", "a6", "a7"]


UNPACKED = ["a6", "a7", "s8", "s9"]  # last unpacked weight word of each channel


@cache
def inner_block(mm: MM, n_ch: int, n_px: int) -> Block:
    """One inner-loop iteration: ``n_ch`` channels x ``n_px`` pixels over ``mm.cols``
    reduction columns (one packed weight word per channel).

    Weights narrower than the dot lanes are unpacked as pulp-nn-mixed's utilities do
    (``pulp_nn_i4_to_i8`` ...: the words are written to a stack array with a
    ``MemoryFence()`` between them, so every word but the last is read back from memory
    before its dot products)."""
    if mm.macload and n_ch == 4 and n_px == 4:
        return _macload_block(mm)
    lines = [f"p.lw {WREG[c]}, 4({WPTR[c]}!) {{weights}}\n" for c in range(n_ch)]
    unpack = mm.w != mm.d and not mm.xnor
    r = mm.r
    if unpack:
        for c in range(n_ch):
            for j in range(r):
                last = j == r - 1
                dst = UNPACKED[c] if last else "ra"
                lines.append(unpack_text(WREG[c], dst, mm.w, mm.d, j))
                if not last:
                    lines.append(f"p.sw {dst}, {4 * (c * r + j)}(sp) {{stack}}\n")
    for j in range(r):
        wregs = WREG
        if unpack:
            wregs = UNPACKED
            if j < r - 1:
                wregs = WREG
                lines += [f"lw {WREG[c]}, {4 * (c * r + j)}(sp) {{stack}}\n" for c in range(n_ch)]
        acts = [f"p.lw {AREG[p]}, 4({APTR[p]}!) {{{mm.atag}}}\n" for p in range(n_px)]
        if n_px == 1 and not unpack and j == 0:  # one vector (linear): its word first,
            lines[:0] = acts  # the weight words after it, so no dot waits on a load
        else:
            lines += acts
        for c in range(n_ch):
            for p in range(n_px):
                lines.append(mm.dot(ACC[p][c], AREG[p], wregs[c]))
    tag = "nn" if mm.t.xpulpnn else ""
    return rv("".join(lines), f"pulpnn_mm{n_ch}x{n_px}_w{mm.w}d{mm.d}{tag}_{mm.atag}")


@cache
def _macload_block(mm: MM) -> Block:
    """XpulpNN 4x4 MAC&LOAD step (1 init + 16 pv.mlsdotsup): SPRs A0/A1 hold two pixels'
    activation words, W0-W3 the four channels' weight words; each MAC reloads the SPR it
    read for its last time, never the one the next instruction reads (no SPR load-use)."""
    ln = _lane(mm.d)

    def ctl(a: int, w: int, upd_a: bool = False, upd_w: bool = False) -> int:
        return a | (w << 1) | (8 if upd_a else 0) | (16 if upd_w else 0)

    at = mm.atag
    lines = [f"pv.mlsdotsup.{ln} x0, a5, {ctl(1, 0, upd_a=True)} {{{at}}}"]  # A1 <- px1
    loads = {(0, 3): ("a6", at, True), (1, 3): ("a7", at, True), (2, 3): ("a4", at, True)}
    for c in range(4):
        loads[(3, c)] = (WPTR[c], "weights", False)
    for p in range(4):
        for c in range(4):
            acc = ACC[p][c]
            if (p, c) in loads:
                ptr, tag, is_a = loads[(p, c)]
                v = ctl(p % 2, c, upd_a=is_a, upd_w=not is_a)
                lines.append(f"pv.mlsdotsup.{ln} {acc}, {ptr}, {v} {{{tag}}}")
            else:
                lines.append(f"pv.mlsdotsup.{ln} {acc}, a4, {ctl(p % 2, c)}")
    return rv("\n".join(lines), f"xpulpnn_macload4x4_{ln}_{at}")


@cache
def leftover_block(mm: MM, n_ch: int, n_px: int) -> Block:
    """One leftover reduction column (scalar): byte/element loads and p.mac."""
    lines = [f"p.lb {WREG[c]}, 1({WPTR[c]}!) {{weights}}\n" for c in range(n_ch)]
    if mm.w < 8:
        lines += [f"p.extract {WREG[c]}, {WREG[c]}, {mm.w - 1}, 0\n" for c in range(n_ch)]
    areg = AREG
    for p in range(n_px):
        lines.append(f"p.lbu {areg[p]}, 1({APTR[p]}!) {{{mm.atag}}}\n")
    for c in range(n_ch):
        for p in range(n_px):
            lines.append(f"p.mac {ACC[p][c]}, {WREG[c]}, {areg[p]}\n")
    return rv("".join(lines), f"pulpnn_left{n_ch}x{n_px}_{mm.atag}")


@cache
def _group_blocks(mm: MM, spec: OutSpec, n_ch: int, n_px: int, kernel: str):
    """Setup (bias, pointers, lp.setup), requantisation + loop end of one channel group."""
    lines = []
    for c in range(n_ch):
        if spec.has_bias:
            lines.append(f"p.lw {ACC[0][c]}, 4(t5!) {{bias}}")
        else:
            lines.append(f"li {ACC[0][c]}, 0")
    for c in range(n_ch):
        for p in range(1, n_px):
            lines.append(f"mv {ACC[p][c]}, {ACC[0][c]}")
    for c in range(1, n_ch):
        lines.append(f"add {WPTR[c]}, {WPTR[c - 1]}, a2")  # next filter rows
    for p in range(n_px):
        lines.append(f"add {APTR[p]}, {APTR[p - 1]}, a3" if p else f"mv {APTR[p]}, s10")
    if mm.macload and n_ch == 4 and n_px == 4:
        # MAC&LOAD preload (MacLoadInit): pixel 0's activation word into SPR A0 and the
        # four channels' first weight words into W0-W3; the loop's last iteration then
        # loads the words after the group (read but unused)
        ln = _lane(mm.d)
        lines.append(f"pv.mlsdotsup.{ln} x0, a4, 8 {{{mm.atag}}}")
        lines += [f"pv.mlsdotsup.{ln} x0, {WPTR[c]}, {16 | (c << 1)} {{weights}}" for c in range(4)]
    lines.append("lp.setup x0, t2, .Lmm_inner_end")
    setup = rv("\n".join(lines), f"{kernel}_setup{n_ch}x{n_px}")
    acc = [[ACC[p][c] for p in range(n_px)] for c in range(n_ch)]
    rq = requant_text(acc, spec, mm.t, OPTR[:n_px])
    rq += f"add a0, {WPTR[n_ch - 1]}, a2\n"  # next group's first filter row
    rq += "addi t1, t1, -1\nbnez t1, .Lmm_groups {taken}\n"
    end = rv(rq, f"{kernel}_requant{n_ch}x{n_px}_{spec.mode}{spec.bits}")
    return setup, end


def matmul_items(mm: MM, spec: OutSpec, n_ch: int, n_px: int, k: int, name: str) -> list:
    """The matmul over ``n_ch`` channels for one block of ``n_px`` im2col columns (or one
    input vector): groups of 4 channels, then single channels; each group an inner
    hardware loop over the packed reduction words, scalar leftover columns, requant."""
    items: list = [_call_block(name)]
    tree = _is_tree(spec, mm.t)
    n_words = -(-k // 32) if mm.xnor else k // mm.cols
    n_left = 0 if mm.xnor else k % mm.cols
    for group, count in ((4, n_ch // 4), (1, n_ch % 4)):
        if count == 0:
            continue
        setup, end = _group_blocks(mm, spec, group, n_px, name)
        body = [
            setup,
            hw_loop(f"{name}_inner{group}x{n_px}", n_words, [inner_block(mm, group, n_px)]),
            hw_loop(f"{name}_left{group}x{n_px}", n_left, [leftover_block(mm, group, n_px)]),
        ]
        if tree:
            body += tree_items(group * n_px, spec)
        body.append(end)
        items.append(Loop(f"{name}_groups{group}x{n_px}", count, body, addr={mm.atag: Rewind(0)}))
    items.append(_ret_block(name))
    return items


@cache
def _call_block(name: str) -> Block:
    return rv(
        f"""
        mv a0, s1
        mv a1, s2
        jal ra, {name}
        addi sp, sp, -48
        sw s0, 44(sp)
        sw s1, 40(sp)
        sw s2, 36(sp)
        sw s3, 32(sp)
        sw s4, 28(sp)
        sw s5, 24(sp)
        sw s6, 20(sp)
        sw s7, 16(sp)
        srli t1, a3, 2
        """,
        f"{name}_entry",
    )


@cache
def _ret_block(name: str) -> Block:
    return rv(
        """
        lw s0, 44(sp)
        lw s1, 40(sp)
        lw s2, 36(sp)
        lw s3, 32(sp)
        lw s4, 28(sp)
        lw s5, 24(sp)
        lw s6, 20(sp)
        lw s7, 16(sp)
        addi sp, sp, 48
        ret
        """,
        f"{name}_ret",
    )


# ----------------------------------------------------------------------------- im2col
@cache
def _copy_blocks(a: int, d: int):
    """im2col copy of one contiguous run: words copied two at a time (a == d), or each
    packed input word unpacked into d/a words (a < d); leftover bytes one at a time."""
    call = rv(
        """
        mv a1, s10
        jal ra, pulp_nn_im2col
        srli a3, a2, 3
        andi a4, a2, 7
        lp.setup x0, a3, .Lcp_end
        """,
        f"im2col_call_{a}_{d}",
    )
    if a == d or d == 1:
        body = rv(
            """
            p.lw t0, 4(a0!) {input}
            p.lw t1, 4(a0!) {input}
            p.sw t0, 4(a1!) {scratch}
            p.sw t1, 4(a1!) {scratch}
            """,
            "im2col_copy8",
        )
        per_iter_in = 8
    else:
        r = d // a
        lines = ["p.lw t0, 4(a0!) {input}"]
        for j in range(r):
            lines.append(unpack_text("t0", "t1", a, d, j).strip())
            lines.append("p.sw t1, 4(a1!) {scratch}")
        body = rv("\n".join(lines), f"im2col_unpack_{a}_{d}")
        per_iter_in = 4
    byte = rv(
        """
        p.lbu t0, 1(a0!) {input}
        p.sb t0, 1(a1!) {scratch}
        addi a4, a4, -1
        """,
        "im2col_byte",
    )
    ret = rv("mv s10, a1\nret", "im2col_ret")
    return call, body, per_iter_in, byte, ret


@cache
def _zero_blocks():
    call = rv(
        """
        mv a0, s10
        jal ra, pulp_zero_mem
        srli a3, a1, 4
        andi a4, a1, 15
        lp.setup x0, a3, .Lz_end
        """,
        "zero_call",
    )
    body = rv(
        """
        p.sw zero, 4(a0!) {scratch}
        p.sw zero, 4(a0!) {scratch}
        p.sw zero, 4(a0!) {scratch}
        p.sw zero, 4(a0!) {scratch}
        """,
        "zero_words16",
    )
    byte = rv("p.sb zero, 1(a0!) {scratch}\naddi a4, a4, -1\nnop", "zero_byte")
    ret = rv("mv s10, a0\nret", "zero_ret")
    return call, body, byte, ret


def copy_items(n: int, a: int, d: int) -> list:
    """One im2col run of ``n`` activation values (a bits in memory, d bits in the buffer)."""
    call, body, per_in, byte, ret = _copy_blocks(a, d)
    nbytes = (n * a + 7) // 8
    return [
        call,
        hw_loop("im2col_copy", nbytes // per_in, [body]),
        hw_loop("im2col_bytes", nbytes % per_in if a == d or d == 1 else 0, [byte]),
        ret,
    ]


def zero_items(n: int, d: int) -> list:
    call, body, byte, ret = _zero_blocks()
    nbytes = (n * d + 7) // 8
    return [
        call,
        hw_loop("zero_words", nbytes // 16, [body]),
        hw_loop("zero_bytes", nbytes % 16, [byte]),
        ret,
    ]


# ----------------------------------------------------------------------------- parts
def whole_part(graph: Graph, op: Op):
    from mcusim.cluster import Part, output_dims

    h, w, c = output_dims(graph, op)
    return Part(0, 1, (0, h), (0, w), (0, c), "single")


def _types(graph: Graph, op: Op):
    t = graph.tensors
    x = t[op.inputs[0]]
    y = t[op.outputs[0]]
    w = t[op.inputs[1]] if len(op.inputs) > 1 and op.inputs[1] else None
    return x, w, y


def _out_spec(graph: Graph, op: Op, xnor: bool) -> OutSpec:
    _, _, y = _types(graph, op)
    mode = getattr(op.attrs, "requant", "fixed_point")
    has_bias = len(op.inputs) > 2 and bool(op.inputs[2])
    return OutSpec(mode, bits_of(y.dtype), xnor, has_bias)


@cache
def _pixel_blocks(name: str) -> tuple[Block, Block]:
    start = rv(
        """
        mul t0, s3, a0
        sub t0, t0, s4
        mul t1, s5, a1
        sub t1, t1, s6
        """,
        f"{name}_pixel",
    )
    end = rv(
        """
        addi s2, s2, 1
        p.bneimm s2, 2, .Lnext_px {taken}
        """,
        f"{name}_pixel_end",
    )
    return start, end


def _row_classes(g, part) -> dict:
    """(valid kernel rows, valid kernel columns) -> number of the part's pixels."""
    out: dict = {}
    ys = [valid_taps_1d(g.in_h, g.k_h, g.s_h, g.d_h, g.pad_t, oy) for oy in range(*part.rows)]
    xs = [valid_taps_1d(g.in_w, g.k_w, g.s_w, g.d_w, g.pad_l, ox) for ox in range(*part.cols)]
    for ry in ys:
        for cx in xs:
            out[(ry, cx)] = out.get((ry, cx), 0) + g.batches
    return out


def conv_program(graph: Graph, op: Op, part, t: Target) -> Program:
    g = conv_geom(graph, op)
    x, wt, y = _types(graph, op)
    kernel_ch = int(wt.shape[3])
    groups = max(1, g.in_c // kernel_ch)
    wb, ab = bits_of(wt.dtype), bits_of(x.dtype)
    d = dot_bits(wb, ab, t)
    # pulp-nn pointwise kernels: a 1x1, stride-1, unpadded conv reads the input pixels
    # directly (no im2col) when no unpacking is needed
    pointwise = (
        g.k_h == g.k_w == 1 and g.s_h == g.s_w == 1 and g.pad_t == g.pad_l == 0
        and groups == 1 and (ab == d or d == 1)
    )  # fmt: skip
    mm = MM(wb, d if d > 1 else 1, d, bool(x.dtype.signed), t, "input" if pointwise else "scratch")
    spec = _out_spec(graph, op, mm.xnor)
    k = g.k_h * g.k_w * kernel_ch
    n_ch = part.n_channels // groups if groups > 1 else part.n_channels
    pixels = part.n_rows * part.n_cols * g.batches
    p_blk = 4 if mm.macload else 2
    name = "xpulp_nn_matmul_4x4" if mm.macload else "pulp_nn_matmul_4x2"
    a_buf = 1 if mm.xnor else d
    # im2col per pixel class
    px_start, px_end = _pixel_blocks("conv")
    im2col: list = []
    classes = {} if pointwise else _row_classes(g, part)
    for (ry, cx), count in sorted(classes.items()):
        body: list = [px_start]
        for _ in range(ry):
            if cx == g.k_w and g.d_w == 1:
                body += copy_items(g.k_w * kernel_ch, ab, a_buf)
            else:
                for _ in range(cx):
                    body += copy_items(kernel_ch, ab, a_buf)
                for _ in range(g.k_w - cx):
                    body += zero_items(kernel_ch, a_buf)
        for _ in range(g.k_h - ry):
            body += zero_items(g.k_w * kernel_ch, a_buf)
        body.append(px_end)
        im2col.append((count, body))
    items: list = [_entry_block("pulp_nn_conv")]
    per_group: list = []
    n_blocks, rest = divmod(pixels, p_blk)
    # each block of p_blk pixels: their columns, then the matmul (blocks are alike; the
    # pixel classes are spread over the blocks in proportion)
    cls_loops = []
    for i, (count, body) in enumerate(im2col):
        cls_loops.append(Loop(f"im2col_pixels_{i}", count, body, addr={"weights": Rewind(0)}))
    per_group += cls_loops
    if n_blocks:
        per_group.append(
            Loop(
                f"{name}_blocks",
                n_blocks,
                matmul_items(mm, spec, n_ch, p_blk, k, name),
                addr={
                    **{r: Rewind(0) for r in ("weights", "bias", "scratch")},
                    **qparam_rules(),
                    **(
                        {"input": Rewind(p_blk * x.dtype.storage_bytes(g.in_c))}
                        if pointwise
                        else {}
                    ),
                },
            )
        )
    if rest:
        if p_blk == 4 and rest >= 2:
            mm2 = MM(mm.w, mm.a, mm.d, mm.a_signed, Target(t.xpulpnn, macload=False), mm.atag)
            per_group += matmul_items(mm2, spec, n_ch, 2, k, "pulp_nn_matmul_4x2")
            rest -= 2
        if rest:
            per_group += matmul_items(mm, spec, n_ch, 1, k, "pulp_nn_matmul_1col")
    items += [Loop("conv_groups", groups, per_group)] if groups > 1 else per_group
    items.append(_exit_block("pulp_nn_conv"))
    macs = pixels * part.n_channels * k
    kind = "pointwise" if pointwise else "conv"
    kern = f"pulp_nn_{kind}_{_prec(wb, ab, y)} -> {name}"
    notes = [f"dot width {d} bits; {spec.mode} requant as PULP-NN computes it"]
    return Program(items, kernel=kern, isa=t.family, macs=macs, notes=notes)


def _prec(wb: int, ab: int, y) -> str:
    return f"w{wb}a{ab}o{bits_of(y.dtype)}"


@cache
def _entry_block(name: str) -> Block:
    return rv(
        """
        addi sp, sp, -32
        sw ra, 28(sp)
        sw s0, 24(sp)
        csrr a5, mhartid
        andi a5, a5, 15
        mul t0, a5, a4
        add s10, s11, t0
        li s2, 0
        """,
        f"{name}_entry",
    )


@cache
def _exit_block(name: str) -> Block:
    return rv(
        """
        lw ra, 28(sp)
        lw s0, 24(sp)
        addi sp, sp, 32
        ret
        """,
        f"{name}_exit",
    )


# ----------------------------------------------------------------------------- depthwise
def depthwise_program(graph: Graph, op: Op, part, t: Target) -> Program:
    """pulp_nn_depthwise_generic (pulp-nn ``32bit/src``): per channel of the part and per
    output column, a column buffer of the window's ``kw`` input columns over the input
    rows (word copies, ``ceil(kw/4)`` words per row; zero words for padding rows); then
    per output row the window's dot product -- the ``(kh*kw) % 4`` leftover taps scalar
    first, then 4 taps per ``pv.sdotusp.b`` -- the noinline ``bn_quant`` call and the
    store. Sub-byte values are unpacked to bytes (buffer words on the way in, weight
    words in the dot loop)."""
    g = conv_geom(graph, op)
    x, wt, y = _types(graph, op)
    wb, ab = bits_of(wt.dtype), bits_of(x.dtype)
    spec = _out_spec(graph, op, False)
    taps = g.k_h * g.k_w
    wpr = -(-g.k_w // 4)  # buffer words per input row
    rows_cover = (part.n_rows - 1) * g.s_h + (g.k_h - 1) * g.d_h + 1
    first = part.rows[0] * g.s_h - g.pad_t
    valid = sum(1 for r in range(first, first + rows_cover) if 0 <= r < g.in_h)
    b = _dw_blocks(wb, ab, spec, t)
    per_col = [
        b["col_setup"],
        Loop("dw_fill_rows", valid, [b["fill"]]),
        Loop("dw_zero_rows", rows_cover - valid, [b["zero"]]),
        Loop(
            "dw_out_rows",
            part.n_rows,
            [
                b["px_setup"],
                hw_loop("dw_taps1", taps % 4, [b["taps1"]]),
                hw_loop("dw_taps4", taps // 4, [b["taps4"]]),
                *(tree_items(1, spec) if _is_tree(spec, t) else []),
                b["px_end"],
            ],
            addr={"weights": Rewind(0), **qparam_rules(), "bias": Rewind(0)},
        ),
    ]
    per_ch = [Loop("dw_out_cols", part.n_cols * g.batches, per_col), b["ch_end"]]
    items = [_entry_block("pulp_nn_depthwise"), Loop("dw_channels", part.n_channels, per_ch)]
    items.append(_exit_block("pulp_nn_depthwise"))
    macs = part.n_rows * part.n_cols * g.batches * part.n_channels * taps
    kern = f"pulp_nn_depthwise_generic_{_prec(wb, ab, y)}"
    notes = [f"column buffer {wpr} words per row"]
    return Program(items, kernel=kern, isa=t.family, macs=macs, notes=notes)


def _is_tree(spec: OutSpec, t: Target) -> bool:
    return spec.mode == "thresholds" and spec.bits > 1 and not (spec.bits == 4 and t.xpulpnn)


@cache
def _dw_blocks(wb: int, ab: int, spec: OutSpec, t: Target) -> dict:
    unp_a = unpack_text("t0", "t0", ab, 8, 0) if ab < 8 else ""
    fill = rv(
        f"""
        lw t0, 0(a0) {{input}}
        add a0, a0, a2
        {unp_a}p.sw t0, 4(a1!) {{scratch}}
        addi a3, a3, -1
        bnez a3, .Ldw_fill {{taken}}
        """,
        f"dw_fill_a{ab}",
    )
    zero = rv("p.sw zero, 4(a1!) {scratch}\naddi a3, a3, -1\nbnez a3, .Ldw_zero {taken}", "dw_zero")
    unp_w = unpack_text("t2", "t2", wb, 8, 0) if wb < 8 else ""
    taps4 = rv(
        f"""
        p.lw t2, 4(a3!) {{weights}}
        p.lw t0, 4(a4!) {{scratch}}
        {unp_w}pv.sdotusp.b s0, t0, t2
        """,
        f"dw_taps4_w{wb}",
    )
    ext_w = f"p.extract t2, t2, {wb - 1}, 0\n" if wb < 8 else ""
    taps1 = rv(
        f"""
        p.lb t2, 1(a3!) {{weights}}
        p.lbu t0, 1(a4!) {{scratch}}
        {ext_w}p.mac s0, t0, t2
        """,
        f"dw_taps1_w{wb}",
    )
    px_setup = rv(
        """
        p.lw s0, 0(s9) {bias}
        mul a4, t3, s5
        add a4, a4, s10
        mv a3, s11
        lp.setup x0, t4, .Ldw_taps4_end
        """,
        "dw_px_setup",
    )
    if spec.mode == "fixed_point":  # pulp_nn_bn_quant_u8 is noinline: a call per output
        rq = (
            "lw a1, 0(a6) {qmult}\nlw a2, 0(a7) {qparams}\nmv a0, s0\njal ra, pulp_nn_bn_quant\n"
            "mul a0, a0, a1\nadd a0, a0, a2\nsra a0, a0, t1\n"
            f"p.clipu t6, a0, {spec.bits + 1}\nret\n" + stores_text(spec.bits, 1, "s7")
        )
    else:
        rq = requant_text([["s0"]], spec, t, ["s7"])
    px_end = rv(
        rq + "add s7, s7, t5\naddi t3, t3, 1\nbne t3, t2, .Ldw_px {taken}",
        f"dw_out_{spec.mode}{spec.bits}",
    )
    col_setup = rv(
        """
        mul a0, s3, s4
        add a0, a0, s1
        mv a1, s10
        li t3, 0
        """,
        "dw_col_setup",
    )
    ch_end = rv(
        "addi a6, a6, 4\naddi a7, a7, 4\naddi s1, s1, 1\nbne s1, s2, .Ldw_ch {taken}", "dw_ch_end"
    )
    return {
        "fill": fill,
        "zero": zero,
        "taps4": taps4,
        "taps1": taps1,
        "px_setup": px_setup,
        "px_end": px_end,
        "col_setup": col_setup,
        "ch_end": ch_end,
    }


# ----------------------------------------------------------------------------- linear
def fc_program(graph: Graph, op: Op, part, t: Target) -> Program:
    """pulp_nn_linear: the part's output neurons two at a time against the input vector
    (activations unpacked to the dot width in the loop when narrower)."""
    x, wt, y = _types(graph, op)
    wb, ab = bits_of(wt.dtype), bits_of(x.dtype)
    d = dot_bits(wb, ab, t)
    k = int(wt.shape[1])
    batch = int(x.shape[0]) if len(x.shape) == 2 else 1
    act_unpack = ab != d and not d == 1
    tgt = Target(t.xpulpnn, macload=False)
    mm = MM(wb, max(d, 1), d, bool(x.dtype.signed), tgt, "scratch" if act_unpack else "input")
    spec = _out_spec(graph, op, mm.xnor)
    n = part.n_channels
    name = "pulp_nn_linear"
    items: list = [_entry_block(name)]
    body = []
    if act_unpack:  # input vector converted once per call into the L1 buffer
        body += copy_items(k, ab, d)
    body += _linear_items(mm, spec, n, k, name)
    items.append(Loop("fc_batches", batch, body, addr={"weights": Rewind(0)}))
    items.append(_exit_block(name))
    return Program(items, kernel=f"{name}_{_prec(wb, ab, y)}", isa=t.family, macs=batch * n * k)


def _linear_items(mm: MM, spec: OutSpec, n: int, k: int, name: str) -> list:
    """Neurons in pairs (2 channels x 1 vector), the odd one alone."""
    items: list = []
    tree = _is_tree(spec, mm.t)
    n_words = -(-k // 32) if mm.xnor else k // mm.cols
    n_left = 0 if mm.xnor else k % mm.cols
    for group, count in ((2, n // 2), (1, n % 2)):
        if not count:
            continue
        setup, end = _group_blocks(mm, spec, group, 1, name)
        body = [
            setup,
            hw_loop(f"{name}_inner{group}", n_words, [inner_block(mm, group, 1)]),
            hw_loop(f"{name}_left{group}", n_left, [leftover_block(mm, group, 1)]),
            *(tree_items(group, spec) if tree else []),
            end,
        ]
        items.append(Loop(f"{name}_pairs{group}", count, body, addr={mm.atag: Rewind(0)}))
    return items


# ----------------------------------------------------------------------------- pooling, add
def pool_program(graph: Graph, op: Op, part, t: Target) -> Program:
    """pulp_nn_maxpool: per output pixel a word of 4 (XpulpNN sub-byte: 8/16) channels
    max-reduced over the window with pv.maxu; avgpool: per output value the window summed
    (lbu + add), divided (div) and stored."""
    g = pool_geom(graph, op)
    x, _, y = _types(graph, op)
    ab = bits_of(x.dtype)
    out_px = part.n_rows * part.n_cols * g.batches
    taps = g.k_h * g.k_w
    if op.kind == "max_pool2d":
        words = -(-part.n_channels * ab // 32)  # packed words of a pixel's channels
        blk = _maxpool_block(ab, t.xpulpnn)
        items = [
            _entry_block("pulp_nn_maxpool"),
            Loop(
                "maxpool_px_words",
                out_px * words,
                [
                    _maxpool_setup(),
                    hw_loop("maxpool_taps", taps, [blk]),
                    _maxpool_store(ab, t.xpulpnn),
                ],
            ),
            _exit_block("pulp_nn_maxpool"),
        ]
        return Program(items, kernel=f"pulp_nn_maxpool_a{ab}", isa=t.family)
    n_val = out_px * part.n_channels
    acc = _avgpool_blocks(ab, div_cycles(taps))
    items = [
        _entry_block("pulp_nn_avgpool"),
        Loop("avgpool_values", n_val, [acc[0], hw_loop("avgpool_taps", taps, [acc[1]]), acc[2]]),
        _exit_block("pulp_nn_avgpool"),
    ]
    return Program(items, kernel=f"pulp_nn_avgpool_a{ab}", isa=t.family)


def _maxpool_direct(ab: int, nn: bool) -> bool:
    """Lane-wise max on the packed word: bytes, XpulpNN nibbles/crumbs, binary (OR)."""
    return ab in (8, 1) or (nn and ab in (4, 2))


@cache
def _maxpool_block(ab: int, nn: bool) -> Block:
    """One window tap on one packed word of channels: the word loaded and max-reduced
    (XpulpV2 sub-byte: unpacked to bytes first, 8/ab byte words)."""
    if ab == 1:
        op = "or s0, s0, t0"
    elif _maxpool_direct(ab, nn):
        op = f"pv.maxu.{_lane(ab) if ab < 8 else 'b'} s0, s0, t0"
    else:
        op = "".join(
            unpack_text("t0", "t1", ab, 8, j) + f"pv.maxu.b s{j % 8}, s{j % 8}, t1\n"
            for j in range(8 // ab)
        )
    return rv(f"p.lw t0, a2(a0!) {{input}}\nnop\n{op}", f"maxpool_tap_a{ab}{'nn' if nn else ''}")


@cache
def _maxpool_setup() -> Block:
    return rv("li s0, 0\nmv a0, s10\naddi s10, s10, 4\nlp.setup x0, t3, .Lmp_end", "maxpool_setup")


@cache
def _maxpool_store(ab: int, nn: bool) -> Block:
    repack = ""
    if not _maxpool_direct(ab, nn):  # bytes packed back to ab-bit lanes
        repack = "".join(
            f"p.extract t1, s{(i * ab) // 8 % 8}, {ab - 1}, {(i * 8) % 32}\n"
            f"p.insert t0, t1, {ab - 1}, {i * ab}\n"
            for i in range(32 // ab)
        )
    return rv(
        f"{repack}p.sw s0, 4(a1!) {{output}}\naddi t1, t1, -1\nbnez t1, .Lmp_px {{taken}}",
        f"maxpool_store_a{ab}{'nn' if nn else ''}",
    )


@cache
def _avgpool_blocks(ab: int, div: int):
    ext = f"p.extract t0, t0, {ab - 1}, 0\n" if ab < 8 else ""
    setup = rv("li s0, 0\nmv a0, s10\naddi s10, s10, 1\nlp.setup x0, t3, .Lap_end", "avgpool_setup")
    tap = rv(f"p.lbu t0, a2(a0!) {{input}}\n{ext}nop\nadd s0, s0, t0", f"avgpool_tap_a{ab}")
    out = rv(
        f"""
        srai t0, t3, 1
        add s0, s0, t0
        div s0, s0, t3 {{div={div}}}
        p.clip s0, s0, 8
        p.sb s0, 1(a1!) {{output}}
        addi t1, t1, -1
        bnez t1, .Lap_val {{taken}}
        """,
        f"avgpool_out_{div}",
    )
    return setup, tap, out


def add_program(graph: Graph, op: Op, part, t: Target) -> Program:
    """pulp_nn_add: per output element both inputs read, pulp_nn_add_quant (noinline:
    m1*x1 + m2*x2, >> d, p.clipu) called, the result stored; sub-byte tensors a byte of
    packed values at a time (p.extract in, p.insert out)."""
    x, _, y = _types(graph, op)
    ab = bits_of(x.dtype)
    n = part_elements(graph, op, part)
    per = 8 // ab if ab < 8 else 1
    items = [
        _entry_block("pulp_nn_add"),
        Loop("add_bytes", -(-n // per), [_add_block(ab)]),
        _exit_block("pulp_nn_add"),
    ]
    return Program(items, kernel=f"pulp_nn_add_a{ab}", isa=t.family)


@cache
def _add_block(ab: int) -> Block:
    per = 8 // ab if ab < 8 else 1
    lines = ["p.lbu s8, 1(s0!) {input}", "p.lbu s9, 1(s1!) {input2}"]
    for i in range(per):
        if ab < 8:
            lines += [
                f"p.extract a0, s8, {ab - 1}, {i * ab}",
                f"p.extract a1, s9, {ab - 1}, {i * ab}",
            ]
        else:
            lines += ["mv a0, s8", "mv a1, s9"]
        lines += [
            "mv a2, s2",
            "mv a3, s3",
            "jal ra, pulp_nn_add_quant",
            "mul a0, a0, a2",
            "p.mac a0, a1, a3",
            "sra a0, a0, s4",
            f"p.clipu a0, a0, {ab + 1}",
            "ret",
        ]
        if ab < 8:
            lines.append(f"p.insert s10, a0, {ab - 1}, {i * ab}")
    lines += [f"p.sb {'s10' if ab < 8 else 'a0'}, 1(s5!) {{output}}", "addi s6, s6, -1"]
    lines.append("bnez s6, .Ladd {taken}")
    return rv("\n".join(lines), f"add_byte_a{ab}")


# ----------------------------------------------------------------------------- reference ops
# RV32IMC (no XpulpV2) per-element bodies of TFLM's reference kernels: the requantising
# ops run MultiplyByQuantizedMultiplier with mulh/mul for the 64-bit product; softmax
# three passes with gemmlowp's fixed-point exp; data movement a word (or byte) copy.
MBQM_RV = """
sll    a0, a0, a2
mulh   t0, a0, a1
mul    t1, a0, a1
srli   t1, t1, 31
slli   t0, t0, 1
or     a0, t0, t1
li     t2, 1
sll    t2, t2, a3
addi   t2, t2, -1
and    t1, a0, t2
sra    a0, a0, a3
srai   t2, t2, 1
srli   t0, a0, 31
add    t2, t2, t0
ble    t1, t2, .Lnoround {taken}
"""
CLAMP_RV = """
add    a0, a0, a4
bge    a0, a5, .Lc1 {taken}
blt    a0, a6, .Lc2 {taken}
"""
_REF = {
    "requant": "lb a0, 0(s0) {input}\naddi s0, s0, 1\nsub a0, a0, s1\n"
    + MBQM_RV
    + CLAMP_RV
    + "sb a0, 0(s2) {output}\naddi s2, s2, 1\n",
    "copy": "lw a0, 0(s0) {input}\naddi s0, s0, 4\nsw a0, 0(s2) {output}\naddi s2, s2, 4\n",
    "softmax": (
        "lb a0, 0(s0) {input}\naddi s0, s0, 1\nbge s1, a0, .Lsm_max {taken}\n"  # max pass
        + "lb a0, 0(s3) {input}\naddi s3, s3, 1\nsub a0, a0, s1\n"  # exp pass
        + MBQM_RV
        + "mulh t0, a0, a0\nmulh t1, t0, a0\nmulh t2, t1, t0\nmulh t0, t2, t1\n"
        + "add a0, t0, t1\nadd a0, a0, t2\nsrai a0, a0, 12\nadd s4, s4, a0\n"
        + "sw a0, 0(s5) {scratch}\naddi s5, s5, 4\n"
        + "lw a0, 0(s6) {scratch}\naddi s6, s6, 4\nmulh a0, a0, s7\nsra a0, a0, a7\n"  # out
        + "addi a0, a0, -128\nsb a0, 0(s2) {output}\naddi s2, s2, 1\n"
    ),
}


@cache
def _ref_block(kind: str) -> Block:
    return rv(_REF[kind] + "addi s8, s8, -1\nbnez s8, .Lref {taken}", f"rv32imc_ref_{kind}")


@cache
def _ref_frame():
    entry = rv("addi sp, sp, -16\nsw ra, 12(sp)\nsw s0, 8(sp)", "rv32imc_ref_entry")
    ex = rv("lw ra, 12(sp)\nlw s0, 8(sp)\naddi sp, sp, 16\nret", "rv32imc_ref_exit")
    return entry, ex


def part_elements(graph: Graph, op: Op, part) -> int:
    """Output elements of ``part`` (all batches: the part ranges are per batch)."""
    from mcusim.cluster import output_dims

    y = graph.tensors[op.outputs[0]]
    h, w, c = output_dims(graph, op)
    batches = max(1, int(y.size) // max(1, h * w * c))
    return part.outputs * batches


def reference_program(graph: Graph, op: Op, part, t: Target) -> Program:
    """Ops PULP-NN lacks: TFLM reference kernels compiled for RV32IMC (the part's
    output elements; ops without a PULP-NN parallel kernel get the whole op on core 0)."""
    n = max(part_elements(graph, op, part), 1)
    if op.kind in ("reshape", "squeeze", "concat", "pad", "transpose", "strided_slice"):
        y = graph.tensors[op.outputs[0]]
        kind, count = "copy", -(-y.dtype.storage_bytes(n) // 4)
        if op.kind != "reshape" and op.kind != "squeeze":
            count = n  # element-wise index walks of the reference kernels
    elif op.kind == "softmax":
        kind, count = "softmax", n
    elif op.kind in (
        "quantize", "dequantize", "relu", "relu6", "logistic", "tanh", "hard_swish",
        "mean", "mul", "sub", "add", "avg_pool2d", "max_pool2d",
    ):  # fmt: skip
        kind, count = "requant", n
    else:
        raise UnsupportedOpError(
            f"no RISC-V instruction schedule for op kind {op.kind!r}", layer=op.label
        )
    entry, ex = _ref_frame()
    items = [entry, Loop(f"rv32imc_{op.kind}", count, [_ref_block(kind)]), ex]
    return Program(items, kernel=f"tflm_reference_{op.kind} (rv32imc)", isa=t.family)


# ----------------------------------------------------------------------------- dispatch
def build(graph: Graph, op: Op, part, t: Target) -> Program:
    """The Program one core runs for ``part`` of ``op`` on target ``t``."""
    k = op.kind
    if k in ("conv2d", "depthwise_conv2d", "fully_connected"):
        _check_mac_types(graph, op, t)
    elif k in ("max_pool2d", "avg_pool2d", "add") and not _small(graph, op):
        return reference_program(graph, op, part, t)
    if k == "conv2d":
        return conv_program(graph, op, part, t)
    if k == "depthwise_conv2d":
        return depthwise_program(graph, op, part, t)
    if k == "fully_connected":
        return fc_program(graph, op, part, t)
    if k in ("max_pool2d", "avg_pool2d"):
        return pool_program(graph, op, part, t)
    if k == "add" and _same_shape(graph, op):
        return add_program(graph, op, part, t)
    return reference_program(graph, op, part, t)


def _small(graph: Graph, op: Op) -> bool:
    """Every activation of the op an integer of at most 8 bits (PULP-NN's types)."""
    from mcusim.precision import is_small_int

    t = graph.tensors
    names = [n for n in (*op.inputs, *op.outputs) if n and not t[n].is_const]
    return all(is_small_int(t[n].dtype) for n in names)


def _check_mac_types(graph: Graph, op: Op, t: Target, family: str | None = None) -> None:
    from mcusim.precision import describe

    if not _small(graph, op) or not _small_w(graph, op):
        raise UnsupportedOpError(
            f"no {family or t.family} schedule for {describe(graph, op)}: weights and "
            "activations must be integers of at most 8 bits or binary",
            layer=op.label,
        )


def _small_w(graph: Graph, op: Op) -> bool:
    from mcusim.precision import is_small_int

    return is_small_int(graph.tensors[op.inputs[1]].dtype)


def _same_shape(graph: Graph, op: Op) -> bool:
    t = graph.tensors
    shapes = {tuple(t[n].shape) for n in op.inputs if n} | {tuple(t[op.outputs[0]].shape)}
    return len(shapes) == 1


def scratch_bytes(graph: Graph, op: Op, program: Program) -> int:
    """L1/arena scratch of the PULP-NN kernels: conv, P im2col columns at the dot width
    (P = 2, 4 for the MAC&LOAD kernel); depthwise, one gathered input plane."""
    fn = program.kernel.split(" ")[0]
    t = graph.tensors
    if fn.startswith("pulp_nn_conv"):
        w = t[op.inputs[1]]
        k = int(w.shape[1] * w.shape[2] * w.shape[3])
        cols = 4 if "4x4" in program.kernel else 2
        d = _note_bits(program)
        return cols * ((k * d + 31) // 32) * 4
    if fn.startswith("pulp_nn_depthwise"):
        g = conv_geom(graph, op)
        return int(-(-g.k_w // 4) * 4 * (g.in_h + 2 * g.pad_t + g.k_h))
    return 0


def _note_bits(program: Program) -> int:
    for n in program.notes:
        if n.startswith("dot width "):
            return int(n.split()[2])
    return 8
