"""Shared pieces of the Armv7E-M (M4 + DSP) schedules: requantization, clamping, memcpy /
memset as newlib runs them, layer geometry and border-class counting.

Instruction text is our own rendering of what GCC -O2 emits for the CMSIS-NN C code
(register choices are plausible, not exact); the timing-relevant parts (instruction mix,
order of loads, address dependencies, IT blocks, loop back edges) follow the source.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cache

from mcusim.errors import UnsupportedOpError
from mcusim.graph import Graph, Op, Tensor
from mcusim.isa.schedule import Block, Loop, Rewind
from mcusim.ops import conv_padding

# --- arm_nn_requantize (default build: doubling-high-mult without saturation, then
# rounding divide by power of two), per output, value in r0, multiplier r1, shift r2.
REQUANT_TEXT = """
bic    r3, r2, r2, asr #31      ; left shift = max(shift, 0)
lsl    r0, r0, r3               ; x << left
mov    r4, #0x40000000          ; 2^30 rounding term, low word
movs   r3, #0                   ; high word
smlal  r4, r3, r0, r1           ; x * M + 2^30 (64-bit)
lsrs   r4, r4, #31
orr    r0, r4, r3, lsl #1       ; bits [62:31]
rsbs   r3, r2, #0
bic    r3, r3, r3, asr #31      ; right shift = max(-shift, 0)
movs   r4, #1
lsls   r4, r3
subs   r4, #1                   ; remainder mask
and    r1, r0, r4               ; remainder
asrs   r0, r3                   ; quotient
asrs   r4, #1                   ; threshold = mask >> 1
add    r4, r4, r0, lsr #31      ; threshold += (quotient < 0)
cmp    r1, r4
it     gt
addgt  r0, #1
"""

# + output offset, clamp to the activation range, store one int8 output.
OUT_STORE_TEXT = """
add    r0, r0, r8               ; + output offset
cmp    r0, r9
it     lt
movlt  r0, r9                   ; max(act_min)
cmp    r0, r10
it     gt
movgt  r0, r10                  ; min(act_max)
strb   r0, [r11], #1   {output}
"""

# per-channel multiplier and shift loads (post-incremented arrays)
LOAD_QPARAMS_TEXT = """
ldr    r2, [r6], #4    {qparams}  ; shift[ch]
ldr    r1, [r5], #4    {qmult}    ; multiplier[ch]
"""

# The per-channel requantization parameters are two int32 arrays (TFLite Micro's
# per_channel_output_multiplier / _shift, what CMSIS-NN reads): the multipliers are the
# "qmult" stream, the shifts the "qparams" stream, each pointer 4 bytes per channel apart.
QPARAM_TAGS = ("qparams", "qmult")
QPARAM_BYTES = 4  # one int32 per channel in each array


def qparam_rules(step: int = 0, start: int = 0, every: int = 0, skip: int = 0, phase: int = 0):
    """Loop rules of both requantization arrays (shifts and multipliers) from quantities in
    channels (``step`` / ``start`` / ``skip`` as :class:`Rewind` takes them in bytes):
    one rule a pointer, so the two arrays stay separate address streams."""
    b = QPARAM_BYTES
    r = Rewind(b * step, start=b * start, every=every, skip=b * skip, phase=phase)
    return dict.fromkeys(QPARAM_TAGS, r)


def qparam_moves(channels: int) -> dict[str, int]:
    """``Loop.moves`` of both requantization arrays: ``channels`` on (or back)."""
    return dict.fromkeys(QPARAM_TAGS, QPARAM_BYTES * channels)


# --- arm_nn_requantize + offset/clamp/store as GCC 12 -O2 compiles it inside the CMSIS-NN
# DSP kernels (read from `arm-none-eabi-gcc -O2 -mcpu=cortex-m4` output of
# arm_nn_mat_mult_kernel_s8_s16, arm_nn_mat_mult_nt_t_s8, arm_nn_vec_mat_mult_t_s8 and the
# depthwise kernels; docs/firmware.md section 6). The C's LEFT_SHIFT/RIGHT_SHIFT ternaries
# become a branch on the shift's sign: the rounding divide runs only for shift <= 0 (what
# every per-channel conv of the shared models has); the branch is written not taken. With
# the accumulators in r8-r11 GCC runs out of registers, so the output offset, both clamp
# limits and the output pointer are reloaded from the stack for every output.
GCC_RQ_MUL = """
bic    r4, r1, r1, asr #31      ; left = max(shift, 0)
lsl    r4, {src}, r4            ; acc << left
movs   r6, #0
mov    r2, #0x40000000          ; 2^30 rounding term
smlal  r2, r6, r4, r3           ; acc * M + 2^30 (64-bit)
lsrs   r2, r2, #31
cmp    r1, #0
orr    r2, r2, r6, lsl #1       ; bits [62:31]
bgt    .Lrq_left                ; shift > 0: no rounding divide
"""
GCC_RQ_DIV = """
rsbs   r1, r1, #0               ; right = -shift
movs   r3, #1
lsls   r3, r1
subs   r3, #1                   ; remainder mask
and    r4, r2, r3               ; remainder
asrs   r2, r1                   ; quotient (N: negative)
asr    r3, r3, #1               ; threshold = mask >> 1
it     mi
addmi  r3, #1                   ; + (quotient < 0)
cmp    r4, r3
it     gt
addgt  r2, #1
"""
GCC_CLAMP = """
ldr    r3, [sp, #132]           ; out_offset (stack)
add    r2, r3
ldr    r3, [sp, #8]             ; act_min (stack)
cmp    r2, r3
it     lt
movlt  r2, r3
ldr    r3, [sp, #12]            ; act_max (stack)
cmp    r2, r3
it     ge
movge  r2, r3
"""
GCC_STORE = """
ldr    r7, [sp, #16]            ; output pointer (stack)
strb   r2, [r7], #1    {output}
"""
GCC_PARAMS_POST = """
ldr    r1, [r6], #4    {qparams}  ; shift[ch]
ldr    r3, [r5], #4    {qmult}    ; multiplier[ch]
"""
# the per-channel arrays' running pointers spilled to the stack (2 x 2 kernels)
GCC_PARAMS_STACK = """
ldr    r1, [sp, #20]            ; &shift[ch]
ldr    r1, [r1]        {qparams}
ldr    r3, [sp, #24]            ; &multiplier[ch]
ldr    r3, [r3]        {qmult}
"""
# per-tensor multiplier/shift reloaded from the stack (vec_mat_mult: rows use one pair)
GCC_PARAMS_PT = """
ldr    r1, [sp, #28]            ; shift
ldr    r3, [sp, #32]            ; multiplier
"""


def gcc_requant_text(src: str, params: str = "post", reload_clamp: bool = True) -> str:
    """One output as GCC compiles CMSIS-NN's requantize + clamp + store. ``params``:
    "post" (per-channel, post-incremented pointers), "stack" (per-channel, pointers
    reloaded from the stack), "pt" (per-tensor pair from the stack), "none" (still live:
    the second output of a channel in the 2 x 2 kernels). ``reload_clamp`` False: output
    offset and act_min still in r3 from the previous output's clamp (only act_max reloaded)."""
    pre = {
        "post": GCC_PARAMS_POST,
        "stack": GCC_PARAMS_STACK,
        "pt": GCC_PARAMS_PT,
        "none": "",
    }[params]
    clamp = GCC_CLAMP
    if not reload_clamp:
        clamp = clamp.replace("ldr    r3, [sp, #132]           ; out_offset (stack)\n", "")
    return pre + GCC_RQ_MUL.format(src=src) + GCC_RQ_DIV + clamp + GCC_STORE


@cache
def gcc_out_block(src: str = "r8", params: str = "post", reload_clamp: bool = True) -> Block:
    """Block of :func:`gcc_requant_text` (cached: one code address per variant)."""
    name = f"gcc_requant_{params}" + ("" if reload_clamp else "_live")
    return Block.asm(gcc_requant_text(src, params, reload_clamp), name)


@cache
def requant_out_block(src_reg: str = "r8", per_channel: bool = True) -> Block:
    """One output: move the accumulator, (load per-channel params), requantize, clamp, store."""
    text = f"mov r0, {src_reg}\n"
    text += LOAD_QPARAMS_TEXT if per_channel else ""
    text += REQUANT_TEXT + OUT_STORE_TEXT
    name = "requant_out_pc" if per_channel else "requant_out"
    return Block.asm(text, name)


@cache
def requant_block() -> Block:
    """arm_nn_requantize alone (value in r0; multiplier r1 and shift r2 already in place)."""
    return Block.asm(REQUANT_TEXT, "requant")


# --- newlib (non-nano) memcpy/memset for Armv7-M, as far as a short copy executes it.
@cache
def _memcpy_blocks(src: str, dst: str):
    entry = Block.asm(
        """
        bl     memcpy
        mov    ip, r0
        orr    r3, r0, r1
        lsls   r3, r3, #30
        bne    .Lmc_bytes
        subs   r2, #4
        blo    .Lmc_tail
        """,
        "memcpy_entry",
        shared=True,
    )
    words = Block.asm(
        f"""
        ldr    r3, [r1], #4    {{{src}}}
        subs   r2, #4
        str    r3, [ip], #4    {{{dst}}}
        bhs    .Lmc_words
        """,
        "memcpy_words",
        shared=True,
    )
    fix = Block.asm("adds r2, #4", "memcpy_fix", shared=True)
    nbytes = Block.asm(
        f"""
        ldrb   r3, [r1], #1    {{{src}}}
        subs   r2, #1
        strb   r3, [ip], #1    {{{dst}}}
        bne    .Lmc_bytes
        """,
        "memcpy_bytes",
        shared=True,
    )
    ret = Block.asm("bx lr", "memcpy_ret", shared=True)
    return entry, words, fix, nbytes, ret


@cache
def _memcpy_unaligned_entry() -> Block:
    """memcpy's entry when either pointer is not word-aligned: the alignment test branches
    straight to the byte loop (taken), skipping the word-count setup."""
    return Block.asm(
        """
        bl     memcpy
        mov    ip, r0
        orr    r3, r0, r1
        lsls   r3, r3, #30
        bne    .Lmc_bytes {taken}
        """,
        "memcpy_entry_unaligned",
        shared=True,
    )


@cache
def _memset_unaligned_entry() -> Block:
    """memset's entry when the destination is not word-aligned: straight to the byte loop."""
    return Block.asm(
        """
        bl     memset
        mov    ip, r0
        lsls   r3, r0, #30
        bne    .Lms_bytes {taken}
        """,
        "memset_entry_unaligned",
        shared=True,
    )


def memcpy_items(n: int, aligned: bool, src: str, dst: str) -> list:
    """Items of one memcpy(dst, src, n) call; word loop only when both ends are aligned."""
    entry, words, fix, nbytes, ret = _memcpy_blocks(src, dst)
    if not aligned:
        return [_memcpy_unaligned_entry(), Loop("memcpy_bytes", n, [nbytes]), ret]
    nw, nb = n // 4, n % 4
    return [
        entry,
        Loop("memcpy_words", nw, [words]),
        fix,
        Loop("memcpy_bytes", nb, [nbytes]),
        ret,
    ]


@cache
def _memset_blocks(dst: str):
    entry = Block.asm(
        """
        bl     memset
        mov    ip, r0
        lsls   r3, r0, #30
        bne    .Lms_bytes
        orr    r1, r1, r1, lsl #8
        orr    r1, r1, r1, lsl #16
        subs   r2, #4
        """,
        "memset_entry",
        shared=True,
    )
    words = Block.asm(
        f"""
        str    r1, [ip], #4    {{{dst}}}
        subs   r2, #4
        bhs    .Lms_words
        """,
        "memset_words",
        shared=True,
    )
    fix = Block.asm("adds r2, #4", "memset_fix", shared=True)
    nbytes = Block.asm(
        f"""
        strb   r1, [ip], #1    {{{dst}}}
        subs   r2, #1
        bne    .Lms_bytes
        """,
        "memset_bytes",
        shared=True,
    )
    ret = Block.asm("bx lr", "memset_ret", shared=True)
    return entry, words, fix, nbytes, ret


def memset_items(n: int, aligned: bool, dst: str) -> list:
    entry, words, fix, nbytes, ret = _memset_blocks(dst)
    if not aligned:
        return [_memset_unaligned_entry(), Loop("memset_bytes", n, [nbytes]), ret]
    nw, nb = n // 4, n % 4
    return [
        entry,
        Loop("memset_words", nw, [words]),
        fix,
        Loop("memset_bytes", nb, [nbytes]),
        ret,
    ]


# --- layer geometry -------------------------------------------------------------------
@dataclass(frozen=True)
class Geom:
    """NHWC conv/pool geometry with TFLite's padding."""

    batches: int
    in_h: int
    in_w: int
    in_c: int
    out_h: int
    out_w: int
    out_c: int
    k_h: int
    k_w: int
    s_h: int
    s_w: int
    d_h: int
    d_w: int
    pad_t: int
    pad_l: int

    @property
    def out_pixels(self) -> int:
        return self.out_h * self.out_w

    def rows_valid(self) -> Counter:
        """Counter: number of in-bounds kernel rows -> number of output rows having it."""
        return _valid_counts(self.in_h, self.out_h, self.k_h, self.s_h, self.d_h, self.pad_t)

    def cols_valid(self) -> Counter:
        return _valid_counts(self.in_w, self.out_w, self.k_w, self.s_w, self.d_w, self.pad_l)

    def taps_valid(self) -> Counter:
        """Counter: in-bounds taps per output pixel -> number of output pixels (per batch)."""
        out: Counter = Counter()
        for ry, ny in self.rows_valid().items():
            for cx, nx in self.cols_valid().items():
                out[ry * cx] += ny * nx
        return out


def _valid_counts(in_size, out_size, k, s, d, pad) -> Counter:
    c: Counter = Counter()
    for o in range(out_size):
        base = o * s - pad
        n = sum(1 for i in range(k) if 0 <= base + i * d < in_size)
        c[n] += 1
    return c


def nhwc(t: Tensor) -> tuple[int, int, int, int]:
    s = tuple(int(x) for x in t.shape)
    if len(s) == 4:
        return s  # type: ignore[return-value]
    if len(s) == 3:
        return (1, *s)  # type: ignore[return-value]
    if len(s) == 2:
        return (s[0], 1, 1, s[1])
    raise UnsupportedOpError(f"expected an NHWC tensor, got shape {s}")


def conv_geom(graph: Graph, op: Op) -> Geom:
    x = graph.tensor(op.inputs[0])
    w = graph.tensor(op.inputs[1])
    y = graph.tensor(op.outputs[0])
    n, ih, iw, ic = nhwc(x)
    _, oh, ow, oc = nhwc(y)
    a = op.attrs
    kh, kw = int(w.shape[1]), int(w.shape[2])
    sh, sw = a.stride
    dh, dw = a.dilation
    pt = conv_padding(ih, kh, sh, dh, oh) if a.padding == "same" else 0
    pl = conv_padding(iw, kw, sw, dw, ow) if a.padding == "same" else 0
    return Geom(n, ih, iw, ic, oh, ow, oc, kh, kw, sh, sw, dh, dw, pt, pl)


def pool_geom(graph: Graph, op: Op) -> Geom:
    x = graph.tensor(op.inputs[0])
    y = graph.tensor(op.outputs[0])
    n, ih, iw, ic = nhwc(x)
    _, oh, ow, oc = nhwc(y)
    a = op.attrs
    kh, kw = a.filter
    sh, sw = a.stride
    pt = conv_padding(ih, kh, sh, 1, oh) if a.padding == "same" else 0
    pl = conv_padding(iw, kw, sw, 1, ow) if a.padding == "same" else 0
    return Geom(n, ih, iw, ic, oh, ow, oc, kh, kw, sh, sw, 1, 1, pt, pl)


def tensor_size(graph: Graph, name: str) -> int:
    return graph.tensor(name).size


def per_channel(graph: Graph, op: Op) -> bool:
    q = graph.tensor(op.inputs[1]).quant
    return q is not None and q.per_channel


def weight_zero_point(graph: Graph, op: Op) -> int:
    q = graph.tensor(op.inputs[1]).quant
    if q is None or len(q.zero_point) == 0:
        return 0
    return int(q.zero_point[0])


# --- address rules of pixel loops (cache model only; timing never reads them) ----------
def valid_taps_1d(in_size: int, k: int, s: int, d: int, pad: int, o: int) -> int:
    """In-bounds filter taps along one axis for output coordinate ``o``."""
    base = o * s - pad
    return sum(1 for i in range(k) if 0 <= base + i * d < in_size)


def pixels_by(g: Geom, key) -> dict:
    """Output pixels (oy, ox) in raster order, grouped by ``key(oy, ox)``."""
    out: dict = {}
    for oy in range(g.out_h):
        for ox in range(g.out_w):
            out.setdefault(key(oy, ox), []).append((oy, ox))
    return out


def axis_taps(g: Geom) -> tuple[list[int], list[int]]:
    """In-bounds kernel rows per output row and in-bounds kernel columns per output
    column (worked out once per layer, not per pixel)."""
    ry = [valid_taps_1d(g.in_h, g.k_h, g.s_h, g.d_h, g.pad_t, oy) for oy in range(g.out_h)]
    cx = [valid_taps_1d(g.in_w, g.k_w, g.s_w, g.d_w, g.pad_l, ox) for ox in range(g.out_w)]
    return ry, cx


def taps_key(g: Geom):
    """Key of the kernels that group pixels by their number of in-bounds taps."""
    ry, cx = axis_taps(g)

    def key(oy: int, ox: int) -> int:
        return ry[oy] * cx[ox]

    return key


def rows_cols_key(g: Geom):
    """Key of the kernels that group pixels by (in-bounds rows, in-bounds columns)."""
    ry, cx = axis_taps(g)

    def key(oy: int, ox: int) -> tuple[int, int]:
        return (ry[oy], cx[ox])

    return key


class PixelWalk:
    """Address rules placing a loop over one class of output pixels (the schedules group
    border/interior pixels into separate loops) on the pixels' real input windows and
    outputs. Each rule starts at the class's first pixel and walks row by row (exact for a
    rectangular class, an estimate for scattered border pixels). Successive class loops
    are chained: ``used`` is where the previous loop left each pointer."""

    def __init__(self, g: Geom, tags: tuple[str, ...] = ("input", "output"), clamp: bool = True):
        self.g = g
        self.tags = tags
        self.clamp = clamp  # window start clamped into the image (else may be -1 column)
        self.used = {t: 0 for t in tags}

    def rules(self, pixels: list[tuple[int, int]]) -> dict:
        from mcusim.isa.schedule import Rewind

        g = self.g
        ys = sorted({oy for oy, _ in pixels})
        xs = sorted({ox for _, ox in pixels})
        per_row = sum(1 for oy, _ in pixels if oy == ys[0])

        def col_in(ox: int) -> int:
            x = ox * g.s_w - g.pad_l
            return (max(x, 0) if self.clamp else x) * g.in_c

        def row_in(oy: int) -> int:
            return max(oy * g.s_h - g.pad_t, 0) * g.in_w * g.in_c

        pos = {
            "input": (row_in, col_in),
            "output": (lambda oy: oy * g.out_w * g.out_c, lambda ox: ox * g.out_c),
        }
        out = {}
        for t in self.tags:
            row, col = pos[t]
            # exact when the class is a grid of equally spaced rows and columns (any one
            # or two rows/columns are); otherwise the first spacing is assumed throughout
            step = col(xs[1]) - col(xs[0]) if len(xs) > 1 else 0
            rstep = row(ys[1]) - row(ys[0]) if len(ys) > 1 else 0
            r = Rewind(
                step,
                start=row(ys[0]) + col(xs[0]) - self.used[t],
                every=per_row,
                skip=rstep - per_row * step,
            )
            self.used[t] += r.offset(len(pixels))
            out[t] = r
        return out
