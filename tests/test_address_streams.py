"""Address streams of compiled schedules (isa/addresses.py) against hand-derived addresses.

Each expected address below follows from the CMSIS-NN loop structure and the address rules
of docs/cost-model.md ("Address streams"): one pointer per stream, immediate offsets,
writeback, pointer arithmetic on base registers, and the loops' Rewind rules.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
from test_schedules_m4 import conv_graph, fc_graph

from mcusim.isa.addresses import compile_program, expand
from mcusim.isa.schedule import Block, Loop, Program, Rewind
from mcusim.isa.timing import core_timing
from mcusim.kernels.schedules import schedule_for

X, Y, S, W, B, Q, SP, QM = 0x1000, 0x2000, 0x3000, 0x4000, 0x5000, 0x6000, 0x8000, 0x9000
BASES = {
    "input": X,
    "output": Y,
    "scratch": S,
    "weights": W,
    "bias": B,
    "const": 0x7000,
    "qparams": Q,  # shifts
    "qmult": QM,  # multipliers
    "stack": SP,
}


def streams(program: Program) -> dict[str, list[tuple[int, int, bool]]]:
    out: dict[str, list] = defaultdict(list)
    for _layer, _kind, tag, addr, nbytes, write, _n in expand(compile_program(program, BASES)):
        out[tag].append((addr, nbytes, write))
    return out


def test_pointer_rules_on_a_handmade_loop():
    # ldr [r0], #4 post-increments; ldr [r1, #8] is an offset; adds r1, #16 moves the
    # weights pointer (r1 is a weights base in this block); ldrb [r0, r2] uses r2 = 100.
    body = Block.asm(
        """
        ldr   r3, [r0], #4     {input}
        ldr   r4, [r1, #8]     {weights}
        adds  r1, #16
        ldrb  r5, [r0, r2]     {input}
        str   r4, [r6, #4]!    {output}
        subs  ip, #1
        bne   .L
        """
    )
    prog = Program([Loop("l", 3, [body], regs={"r2": 100})])
    s = streams(prog)
    # input: X, X+4+100 ; X+4, X+8+100 ; X+8, X+12+100
    assert [a for a, _, _ in s["input"]] == [X, X + 104, X + 4, X + 108, X + 8, X + 112]
    # weights at ptr+8, ptr moves 16 per iteration
    assert [a for a, _, _ in s["weights"]] == [W + 8, W + 24, W + 40]
    # pre-indexed writeback: address ptr+4, pointer += 4
    assert [a for a, _, _ in s["output"]] == [Y + 4, Y + 8, Y + 12]
    # a Rewind(step=0) on the loop makes every iteration read the same weights
    prog2 = Program([Loop("l", 3, [body], addr={"weights": Rewind(0)})])
    assert [a for a, _, _ in streams(prog2)["weights"]] == [W + 8] * 3
    # 2-D walk: 2 per row, 10 bytes then 100 more at each row end
    r = Rewind(10, every=2, skip=100)
    assert [r.offset(i) for i in range(5)] == [0, 10, 120, 130, 240]


def test_conv_3x3_valid_stream():
    """arm_convolve_s8 on a 4x4x4 input, 3x3 valid filter, 2 out channels -> 2x2 output."""
    g, op = conv_graph(4, 4, 4, 2, 3, padding="valid")
    p = schedule_for("armv7em-dsp", g, op)
    assert p.kernel.startswith("arm_convolve_s8")
    s = streams(p)
    # im2col: output pixel (oy, ox) copies the 3x3 window row by row, 4 bytes (one word,
    # c_in = 4) per tap from NHWC offset ((oy + r) * 4 + ox + c) * 4
    want = [
        X + ((oy + r) * 4 + ox + c) * 4
        for oy in range(2)
        for ox in range(2)
        for r in range(3)
        for c in range(3)
    ]
    assert [a for a, _, _ in s["input"]] == want
    assert all(n == 4 and not w for _, n, w in s["input"])
    # the int8 column of each pixel is written into the (reused) im2col buffer from its
    # start: 9 word stores S, S+4, ..., S+32 per pixel
    col_writes = [a for a, n, w in s["scratch"] if w and n == 4][:9]
    assert col_writes == [S + 4 * t for t in range(9)]
    # weights: 2 filters x 36 bytes; each pair of output pixels (2 pairs) reads both rows
    # once, 8 bytes per step from the weights start (Rewind per column pair)
    pair = [W + 4 * j for j in range(18)]
    assert [a for a, _, _ in s["weights"]] == pair * 2
    # bias: 2 words per pixel pair, from the start each time
    assert [a for a, _, _ in s["bias"]] == [B, B + 4] * 2
    # outputs of a pixel pair as the kernel stores them: r8 (pixel 0, ch 0), r9 (pixel 1,
    # ch 0), r10 (pixel 0, ch 1), r11 (pixel 1, ch 1); pixel 1's outputs are one output
    # row (2 channels) after pixel 0's; the next pair starts 2 rows on
    want_out = [Y + 4 * p + d for p in range(2) for d in (0, 2, 1, 3)]
    assert [(a, n, w) for a, n, w in s["output"]] == [(a, 1, True) for a in want_out]
    # the stack is balanced: every push has its pop, every 'sub sp' its 'add sp'
    cs = compile_program(p, BASES)
    sp_touch = [a for _l, _k, tag, a, _n, _w, _r in expand(cs) if tag == "stack"]
    assert min(sp_touch) >= SP - 256 and max(sp_touch) < SP + 256


def test_conv_matmul_scratch_reads():
    """arm_nn_mat_mult_kernel_s8_s16 reads both s16 columns per row pair: [r2], [r3],
    [r2, #4], [r3, #4], then r2 += 8 and r3 += 8 (one scratch pointer moves 16)."""
    g, op = conv_graph(4, 4, 4, 2, 3, padding="valid")
    s = streams(schedule_for("armv7em-dsp", g, op))
    reads = [a for a, n, w in s["scratch"] if not w and n == 4]
    # per pair of pixels, as the library interleaves them: the s8 -> s16 widening of the
    # first pixel's column (9 words), of the second's one column (72 bytes) on, then the
    # kernel from the buffer's start
    widen = reads[:9]
    one_pair = [S + 16 * i + d for i in range(9) for d in (0, 0, 4, 4)]
    per_pair = widen + [a + 72 for a in widen] + one_pair
    assert reads == per_pair * 2


def test_conv_order_per_pixel_pair():
    """arm_convolve_s8 interleaves as the library does: per pixel pair im2col, im2col,
    kernel; a layer whose border classes split the pairs into more than MAX_PAIR_GROUPS
    groups builds its columns first (one kernel loop)."""
    from mcusim.kernels.schedules.cmsis_conv import MAX_PAIR_GROUPS

    def loops(kind):
        g, op = _layer(kind)
        p = schedule_for("armv7em-dsp", g, op)
        return [it for it, _ in p.walk() if hasattr(it, "body")]

    inter = [lp for lp in loops("conv3x3_same") if lp.name.startswith("conv_column_pairs_")]
    assert 1 < len(inter) <= MAX_PAIR_GROUPS
    assert sum(lp.count for lp in inter) == 81 // 2  # every pair once; pixel 80 left over
    for lp in inter:  # the im2col of both pixels comes before the kernel's blocks
        assert lp.body[0].name.startswith("im2col_")
    first = loops("conv7x7_same")
    assert [lp.count for lp in first if lp.name == "conv_column_pairs"] == [81 // 2]
    assert not any(lp.name.startswith("conv_column_pairs_") for lp in first)


def test_fc_stream():
    """arm_fully_connected_s8 -> vec_mat_mult_t_s8: 8 inputs x 4 outputs, per-tensor."""
    g, op = fc_graph(8, 4)
    s = streams(schedule_for("armv7em-dsp", g, op))
    # per row pair: input re-read from the start (2 words), weights of both rows read
    # 4 bytes per row per step: W+16k + {0, 4, 8, 12}
    assert [a for a, _, _ in s["input"]] == [X, X + 4] * 2
    assert [a for a, _, _ in s["weights"]] == [W + 4 * i for i in range(8)]
    assert [a for a, _, _ in s["bias"]] == [B + 4 * i for i in range(4)]
    assert [(a, w) for a, _, w in s["output"]] == [(Y + i, True) for i in range(4)]


def test_1x1_conv_stream():
    """arm_convolve_1x1_s8_fast -> arm_nn_mat_mult_nt_t_s8 on 2x2 pixels, 4 in, 4 out
    channels (2 channel pairs x 2 pixel pairs)."""
    g, op = conv_graph(2, 2, 4, 4, 1, padding="valid")
    p = schedule_for("armv7em-dsp", g, op)
    assert p.kernel.startswith("arm_convolve_1x1_s8_fast")
    s = streams(p)
    # channel pair c (filters 2c, 2c+1 at W + 8c, W + 8c + 4): the weight sums read both
    # rows byte by byte (ldrsb [r1], #1 then [r1, r2], r2 = rhs_cols - 1 after the
    # post-increment), then each pixel pair reads them a word at a time (ldr [r1], #4 then
    # [r1, r2], r2 = rhs_off0 = rhs_cols - 4)
    w_want = []
    for c in range(2):
        w_want += [a for i in range(4) for a in (W + 8 * c + i, W + 8 * c + 4 + i)]
        w_want += [W + 8 * c, W + 8 * c + 4] * 2
    assert [a for a, _, _ in s["weights"]] == w_want
    # pixel pair k: rows 2k, 2k+1 ([r0], #4 then [r0, r3], r3 = rhs_cols - 4); every
    # channel pair re-reads all pixels
    assert [a for a, _, _ in s["input"]] == [X, X + 4, X + 8, X + 12] * 2
    # outputs: (row 2k, ch 2c), (2k, 2c+1), then the same channels one output row (4 B)
    # further for row 2k+1
    o_want = [Y + 8 * k + 2 * c + d for c in range(2) for k in range(2) for d in (0, 1, 4, 5)]
    assert [a for a, _, _ in s["output"]] == o_want


def test_annotations_do_not_change_timing():
    """Address rules are for the cache model only: the M4 cycles are what they were
    without them (the annotated conv against the same loops stripped of annotations)."""
    g, op = conv_graph(6, 6, 8, 4, 3)
    p = schedule_for("armv7em-dsp", g, op)

    def strip(items):
        out = []
        for it in items:
            out.append(Loop(it.name, it.count, strip(it.body)) if isinstance(it, Loop) else it)
        return out

    m4 = core_timing("cortex-m4")
    assert m4.time(p).cycles == m4.time(Program(strip(p.items))).cycles


def test_code_layout_blocks_once():
    """Every distinct Block gets one code address: a block run twice fetches the same
    bytes; consecutive distinct blocks follow each other."""
    a = Block.asm("adds r0, #1\nadds r1, #1", "a")
    b = Block.asm("ldr r2, [r3], #4 {input}\nsubs ip, #1\nbne .L", "b")
    prog = Program([a, Loop("l", 2, [b]), a])
    cs = compile_program(prog, BASES)
    fx = expand(cs, fetch=True)
    fetches = [(a, n) for _l, kind, _t, a, n, _w, _r in fx if kind == "fetch"]
    base = int(cs.blk_code[0, 0])
    # a: two 16-bit adds (4 B); b: 32-bit post-indexed ldr, 32-bit subs (ip is a high
    # register), 16-bit bne (10 B)
    assert fetches == [(base, 4), (base + 4, 10), (base + 4, 10), (base, 4)]
    assert cs.code_bytes == 14


def test_code_after_a_taken_jump_is_elsewhere():
    """A block with taken jumps (a {taken} branch, an unconditional branch, a call; not a
    loop's back edge) pushes the next block JUMP_GAP bytes per jump further (compiled code
    has other paths between a jump and its target)."""
    from mcusim.isa.addresses import JUMP_GAP

    a = Block.asm("cmp r0, #0\nble .Lright {taken}\nadds r1, #1\nb .Lout", "a")
    b = Block.asm("bl memcpy\nadds r2, #1", "b")
    c = Block.asm("ldr r2, [r3], #4 {input}\nsubs r4, #1\nbne .L", "c")  # back edge
    d = Block.asm("adds r0, #1", "d")
    assert (a.jumps, b.jumps, c.jumps, d.jumps) == (2, 1, 0, 0)
    cs = compile_program(Program([a, b, Loop("l", 2, [c]), d]), BASES)
    addr = [int(x) for x in cs.blk_code[:, 0]]
    # a: cmp, ble, adds, b (16-bit each: 8 B); b: bl (4 B) + adds (2 B); c: 32-bit
    # post-indexed ldr + two 16-bit (8 B)
    assert addr[1] - addr[0] == 8 + 2 * JUMP_GAP
    assert addr[2] - addr[1] == 6 + JUMP_GAP
    assert addr[3] - addr[2] == 8


def test_a_sized_function_spreads_its_blocks():
    """Blocks of a library function with a known compiled size share its unexecuted bytes
    out evenly after them (halfword steps); a jump still leaves at least JUMP_GAP; blocks
    of no sized function stay packed."""
    from dataclasses import replace

    from mcusim.isa.addresses import JUMP_GAP

    def owned(text, name, size):
        return replace(Block.asm(text, name), func="f", func_bytes=size)

    a = owned("adds r0, #1\nadds r1, #1", "a", 201)  # 4 B
    b = owned("cmp r0, #0\nble .Lx {taken}", "b", 201)  # 4 B, one jump
    c = owned("adds r2, #1", "c", 201)  # 2 B
    d = Block.asm("adds r3, #1", "d")
    cs = compile_program(Program([a, b, c, d]), BASES)
    addr = [int(x) for x in cs.blk_code[:, 0]]
    share = (201 - 10) // 3 // 2 * 2  # 62 bytes of the function after each block
    assert addr[1] - addr[0] == 4 + share
    assert addr[2] - addr[1] == 4 + max(share, JUMP_GAP)
    assert addr[3] - addr[2] == 2 + share
    small = [replace(x, func_bytes=12) for x in (a, b, c)]  # no cold bytes: as unsized
    cs = compile_program(Program([*small, d]), BASES)
    addr = [int(x) for x in cs.blk_code[:, 0]]
    assert [y - x for x, y in zip(addr, addr[1:], strict=False)] == [4, 4 + JUMP_GAP, 2]


def test_arm_convolve_s8_spans_its_compiled_size():
    """The per-pixel code of arm_convolve_s8 (kernels/schedules/code_sizes.toml) takes the
    compiled function's bytes, not its executed bytes packed: each of its blocks is followed
    by its share of the function's unexecuted bytes (callees may sit in between, as first
    executed), so its blocks with their gaps add up to the function's size."""
    from mcusim.isa.addresses import JUMP_GAP
    from mcusim.kernels.schedules.code_sizes import function_bytes

    g, op = conv_graph(12, 12, 3, 8, 3, stride=2)  # vww's first layer, smaller
    cs = compile_program(schedule_for("armv7em-dsp", g, op), BASES)
    starts = sorted(
        {int(a) for a in cs.blk_code[:, 0]} | {int(cs.blk_code[:, 0].min()) + cs.code_bytes}
    )
    conv = {}
    for (a, n), name in zip(cs.blk_code.tolist(), cs.block_names, strict=True):
        if name.startswith("conv_"):
            conv[a] = n
    taken = {a: starts[starts.index(a) + 1] - a for a in conv}  # own bytes + the gap after
    size = function_bytes("armv7em-dsp", "arm_convolve_s8")
    assert size > 2 * sum(conv.values())
    assert size - 2 * len(conv) <= sum(taken.values()) <= size + JUMP_GAP * len(conv)


def _layer(kind):
    from test_schedules_m4 import _unary_graph

    from mcusim.ops import Pool2DAttrs, SoftmaxAttrs

    pool = Pool2DAttrs((2, 2), (2, 2), "valid", "none")
    return {
        "conv3x3_same": lambda: conv_graph(9, 9, 8, 6, 3),
        "conv7x7_same": lambda: conv_graph(9, 9, 4, 6, 7),
        "conv1x1_odd": lambda: conv_graph(5, 5, 8, 7, 1, padding="valid"),
        "conv1x1_stride2": lambda: conv_graph(6, 6, 8, 6, 1, stride=2, padding="valid"),
        "dw3x3": lambda: conv_graph(7, 7, 10, 10, 3, depthwise=True),
        "dw3x3_stride2": lambda: conv_graph(8, 8, 8, 8, 3, stride=2, depthwise=True),
        "dw5x5_opt": lambda: conv_graph(7, 7, 6, 6, 5, depthwise=True),
        "dw_mult4": lambda: conv_graph(6, 6, 3, 12, 3, depthwise=True, mult=4),
        "dw_mult2": lambda: conv_graph(6, 6, 3, 6, 3, depthwise=True, mult=2),
        "fc_batch3": lambda: fc_graph(16, 4, batch=3),
        "avg_pool": lambda: _unary_graph("avg_pool2d", (1, 6, 6, 8), (1, 3, 3, 8), pool),
        "max_pool": lambda: _unary_graph("max_pool2d", (1, 6, 6, 8), (1, 3, 3, 8), pool),
        "softmax": lambda: _unary_graph("softmax", (1, 3, 10), (1, 3, 10), SoftmaxAttrs(1.0)),
    }[kind]()


@pytest.mark.parametrize(
    "kind",
    [
        "conv3x3_same",
        "conv7x7_same",
        "conv1x1_odd",
        "conv1x1_stride2",
        "dw3x3",
        "dw3x3_stride2",
        "dw5x5_opt",
        "dw_mult4",
        "dw_mult2",
        "fc_batch3",
        "avg_pool",
        "max_pool",
        "softmax",
    ],
)
def test_streams_stay_inside_their_buffers(kind):
    """The address rules keep every access of these kernels inside the tensor it belongs
    to, and every input, output and weight byte is touched (a 1x1 conv of stride 2 reads
    one pixel in four)."""
    g, op = _layer(kind)
    s = streams(schedule_for("armv7em-dsp", g, op))
    size = {"input": g.tensor(op.inputs[0]).nbytes, "output": g.tensor(op.outputs[0]).nbytes}
    if len(op.inputs) > 1:
        size["weights"] = g.tensor(op.inputs[1]).nbytes
    for tag, n in size.items():
        base = BASES[tag]
        addrs = [(a, nb) for a, nb, _ in s[tag]]
        assert addrs, tag
        assert all(base <= a and a + nb <= base + n for a, nb in addrs), (tag, addrs[:5])
        touched = {a + i for a, nb in addrs for i in range(nb)}
        want = n // 4 if (kind, tag) == ("conv1x1_stride2", "input") else n
        assert len(touched) == want, tag


# --- Helium (Armv8.1-M MVE) and Armv6-M schedules ---------------------------------------
def _strip(items):
    """The same loop nest without address annotations."""
    return [
        Loop(it.name, it.count, _strip(it.body)) if isinstance(it, Loop) else it for it in items
    ]


def test_mve_conv_stream():
    """arm_convolve_s8 (MVE) on a 4x4x16 input, 3x3 valid filter, 2 out channels: one
    quad of output pixels, one arm_nn_mat_mult_nt_t_s8 call with lhs_rows = 4."""
    g, op = conv_graph(4, 4, 16, 2, 3, padding="valid")
    p = schedule_for("armv8.1m-mve", g, op)
    assert p.kernel.startswith("arm_convolve_s8")
    s = streams(p)
    # im2col: per output pixel (oy, ox) the 3x3 window row by row, one 16-byte VLDRB per
    # tap (arm_memcpy_s8 of 16 channels) from NHWC offset ((oy + r) * 4 + ox + c) * 16
    want = [
        X + ((oy + r) * 4 + ox + c) * 16
        for oy in range(2)
        for ox in range(2)
        for r in range(3)
        for c in range(3)
    ]
    assert [(a, n, w) for a, n, w in s["input"]] == [(a, 16, False) for a in want]
    # each pixel's column (9 x 16 = 144 bytes, a multiple of 4) fills the next slot of
    # the 4-column buffer: pixel i at S + 144 i, tap t at + 16 t
    writes = [(a, n) for a, n, w in s["scratch"] if w]
    assert writes == [(S + 144 * i + 16 * t, 16) for i in range(4) for t in range(9)]
    # weights: per output channel its row (144 bytes) from the software-pipelined first
    # load, one more 16-byte load per iteration; the last iteration's load runs one
    # vector past the row (the real kernel's over-read, predicated by LETP)
    assert [a for a, _, _ in s["weights"]] == [
        W + 144 * ch + 16 * k for ch in range(2) for k in range(10)
    ]
    # the 4 LHS rows fold into one pointer: iteration j reads S + 64 j + {0, 16, 32, 48};
    # per channel the same 576 bytes (all 4 columns) from the buffer start
    reads = [(a, n) for a, n, w in s["scratch"] if not w]
    one = [(S + 64 * j + 16 * r, 16) for j in range(9) for r in range(4)]
    assert reads == one * 2
    assert {a + i for a, n in one for i in range(n)} == set(range(S, S + 576))
    # bias, multiplier and shift per channel (each through its own array); the scatter
    # store of 4 pixels' bytes is one 4-byte access at the first pixel's output of that
    # channel
    assert [a for a, _, _ in s["bias"]] == [B, B + 4]
    assert [a for a, _, _ in s["qmult"]] == [QM, QM + 4]
    assert [a for a, _, _ in s["qparams"]] == [Q, Q + 4]
    assert [(a, n, w) for a, n, w in s["output"]] == [(Y, 4, True), (Y + 1, 4, True)]


def test_mve_fc_stream():
    """arm_nn_vec_mat_mult_t_s8 (MVE): 32 inputs x 6 outputs: one 4-row pass, 2 single
    rows; 16 columns per iteration."""
    g, op = fc_graph(32, 6)
    p = schedule_for("armv8.1m-mve", g, op)
    s = streams(p)
    # the input vector is re-read per pass: 2 vectors each time
    assert [(a, n) for a, n, _ in s["input"]] == [(X, 16), (X + 16, 16)] * 3
    # 4-row pass: the four row pointers fold into one (64 bytes per iteration), the same
    # 128 bytes as rows 0..3; then rows 4 and 5 (32 bytes each)
    assert [a for a, _, _ in s["weights"]] == [W + 16 * i for i in range(12)]
    # kernel sums (scratch, precomputed sum(w) * offset + bias): 4 words, then 1 per row
    assert [(a, n) for a, n, _ in s["scratch"]] == [(S, 8), (S + 8, 8), (S + 16, 4), (S + 20, 4)]
    # outputs: the 4-row pass stores 4 contiguous bytes (scatter offsets 0..3), then one
    # byte per single row
    assert [(a, n, w) for a, n, w in s["output"]] == [
        (Y, 4, True),
        (Y + 4, 1, True),
        (Y + 5, 1, True),
    ]


def test_armv6m_conv_stream():
    """arm_convolve_s8 pure C (Armv6-M) on a 4x4x4 input, 3x3 valid filter, 2 out channels
    (2 pairs of output pixels)."""
    g, op = conv_graph(4, 4, 4, 2, 3, padding="valid")
    p = schedule_for("armv6m", g, op)
    assert p.kernel.startswith("arm_convolve_s8")
    s = streams(p)
    # im2col: newlib memcpy of 4 bytes takes its byte loop ([r1, r4], counter r4): per
    # tap 4 single-byte reads of the window's pixel
    want = [
        X + ((oy + r) * 4 + ox + c) * 4 + b
        for oy in range(2)
        for ox in range(2)
        for r in range(3)
        for c in range(3)
        for b in range(4)
    ]
    assert [(a, n) for a, n, _ in s["input"]] == [(a, 1) for a in want]
    # the int8 column is written from the buffer start for every pixel (36 bytes)
    col = [(a, n) for a, n, w in s["scratch"] if w and n == 1]
    assert col == [(S + i, 1) for i in range(36)] * 4
    # arm_nn_mat_mult_kernel_s8_s16 (C): both filter rows through the column counter
    # ([r2, r3], [r1, r3]) fold into one pointer, 2 bytes per column: W + 2 i twice
    pair = [W + 2 * i for i in range(36) for _ in range(2)]
    assert [a for a, _, _ in s["weights"]] == pair * 2
    # outputs of a pixel pair: r6 (pixel 1, ch 0), r5 (pixel 0, ch 1), r7 (pixel 1,
    # ch 1), r0 (pixel 0, ch 0); pixel 1 one output row (2 bytes) on; pairs 4 bytes apart
    o = [Y + 4 * k + d for k in range(2) for d in (2, 1, 3, 0)]
    assert [(a, n, w) for a, n, w in s["output"]] == [(a, 1, True) for a in o]
    # bias: the pair's two words; shift and multiplier of each output's channel from
    # their two arrays (pointers the C code does not move: 4 bytes a channel each)
    assert [a for a, _, _ in s["bias"]] == [B, B + 4] * 2
    assert [a for a, _, _ in s["qparams"]] == [Q, Q + 4, Q + 4, Q] * 2
    assert [a for a, _, _ in s["qmult"]] == [QM, QM + 4, QM + 4, QM] * 2


def test_threshold_stream_keeps_its_per_output_step():
    """Thresholds are not a (multiplier, shift) pair: one array of 2^N - 1 int32 per
    channel through the "qparams" pointer, 4 bytes a threshold. W2A2 with 2-bit outputs
    (cmix kernel, Cortex-M4): the binary search reads thresholds 1 then 0 of an output's
    row, the row pointer moves 3 x 4 bytes per output, each pass (2 columns x 4 channels)
    starts from the array's start; nothing is read through the multipliers' stream."""
    from test_schedules_cmix import mac_graph

    g, op = mac_graph("W2A2", h=4, w=4, cin=16, cout=4, thresholds=True)
    s = streams(schedule_for("cortex-m4", g, op))
    per_pass = [Q + 12 * j + d for j in range(8) for d in (4, 0)]
    assert [(a, n) for a, n, _ in s["qparams"]] == [(a, 4) for a in per_pass] * 8
    assert not s["qmult"]


def _other_layer(kind):
    from test_schedules_m4 import _unary_graph

    from mcusim.ops import Pool2DAttrs

    pool = Pool2DAttrs((2, 2), (2, 2), "valid", "none")
    pool3 = Pool2DAttrs((3, 3), (1, 1), "same", "none")
    return {
        "conv3x3_c16": lambda: conv_graph(6, 6, 16, 32, 3, padding="valid"),
        "conv3x3_same": lambda: conv_graph(9, 9, 8, 6, 3),
        "conv7x7_same": lambda: conv_graph(9, 9, 4, 6, 7),
        "conv1x1_16": lambda: conv_graph(4, 4, 16, 32, 1, padding="valid"),
        "conv1x1_odd": lambda: conv_graph(5, 5, 8, 7, 1, padding="valid"),
        "conv1x1_stride2": lambda: conv_graph(6, 6, 8, 6, 1, stride=2, padding="valid"),
        "dw3x3_c16": lambda: conv_graph(6, 6, 16, 16, 3, depthwise=True),
        "dw3x3": lambda: conv_graph(7, 7, 10, 10, 3, depthwise=True),
        "dw3x3_stride2": lambda: conv_graph(8, 8, 8, 8, 3, stride=2, depthwise=True),
        "dw5x5": lambda: conv_graph(7, 7, 6, 6, 5, depthwise=True),
        "dw_mult4": lambda: conv_graph(6, 6, 3, 12, 3, depthwise=True, mult=4),
        "fc_batch2": lambda: fc_graph(32, 8, batch=2),
        "fc_batch3": lambda: fc_graph(16, 4, batch=3),
        "avg_pool": lambda: _unary_graph("avg_pool2d", (1, 6, 6, 8), (1, 3, 3, 8), pool),
        "avg_pool_same": lambda: _unary_graph("avg_pool2d", (1, 5, 5, 20), (1, 5, 5, 20), pool3),
        "max_pool": lambda: _unary_graph("max_pool2d", (1, 6, 6, 8), (1, 3, 3, 8), pool),
        "max_pool_same": lambda: _unary_graph("max_pool2d", (1, 5, 5, 20), (1, 5, 5, 20), pool3),
    }[kind]()


# (isa, layer, tags whose every byte the kernel touches)
_OTHER = [
    ("armv8.1m-mve", "conv3x3_c16", ("input", "weights", "bias")),
    ("armv8.1m-mve", "conv1x1_16", ("input", "weights", "bias")),
    ("armv8.1m-mve", "dw3x3_c16", ("input", "weights", "bias")),
    ("armv8.1m-mve", "fc_batch2", ("input", "weights", "output")),
    ("armv8.1m-mve", "avg_pool", ("input", "output")),
    # border pixels that are not a grid are placed approximately (common.PixelWalk)
    ("armv8.1m-mve", "avg_pool_same", ()),
    ("armv8.1m-mve", "max_pool", ("input", "output")),
    ("armv8.1m-mve", "max_pool_same", ("input", "output")),
    ("armv6m", "conv3x3_same", ("input", "output", "weights", "bias")),
    ("armv6m", "conv1x1_odd", ("input", "output", "weights", "bias")),
    ("armv6m", "conv1x1_stride2", ("output", "weights", "bias")),
    ("armv6m", "dw3x3", ("input", "output", "weights", "bias")),
    ("armv6m", "dw3x3_stride2", ("input", "output", "weights", "bias")),
    ("armv6m", "dw5x5", ("weights", "bias")),
    ("armv6m", "dw_mult4", ("input", "output", "bias")),
    ("armv6m", "fc_batch3", ("input", "output", "bias")),
    ("armv6m", "max_pool", ("input", "output")),
    ("armv6m", "max_pool_same", ("input", "output")),
]


@pytest.mark.parametrize(("isa", "kind", "full"), _OTHER, ids=[f"{i}-{k}" for i, k, _ in _OTHER])
def test_mve_and_armv6m_streams_stay_inside_their_buffers(isa, kind, full):
    """Every access of these MVE / Armv6-M kernels stays inside its tensor, scratch
    buffer (the kernel's get_buffer_size) and per-channel parameters (two arrays, 4
    bytes per channel each); the tags in ``full`` are touched byte for byte. One exception, real
    behaviour of the MVE arm_nn_mat_mult_nt_t_s8: its software-pipelined weight load
    of the last iteration reads one vector past the last filter row."""
    from mcusim.kernels.schedules.buffers import scratch_bytes

    g, op = _other_layer(kind)
    p = schedule_for(isa, g, op)
    s = streams(p)
    size = {"input": g.tensor(op.inputs[0]).nbytes, "output": g.tensor(op.outputs[0]).nbytes}
    if len(op.inputs) > 1:
        size["weights"] = g.tensor(op.inputs[1]).nbytes
        size["bias"] = g.tensor(op.inputs[2]).nbytes
        size["qparams"] = size["qmult"] = 4 * int(g.tensor(op.outputs[0]).shape[-1])
    size["scratch"] = scratch_bytes(g, op, p)
    overread = "mat_mult_nt_t_s8 (MVE)" in p.kernel
    for tag, n in size.items():
        base = BASES[tag]
        addrs = [(a, nb) for a, nb, _ in s[tag]]
        if tag in full:
            assert addrs, tag
        if overread and tag == "weights":
            addrs = [(a, nb) for a, nb in addrs if a != base + n]
        bad = [(a - base, nb) for a, nb in addrs if not (base <= a and a + nb <= base + n)]
        assert not bad, (tag, bad[:5])
        if tag in full:
            assert len({a + i for a, nb in addrs for i in range(nb)}) == n, tag


@pytest.mark.parametrize(
    ("core", "isa", "kind"),
    [
        ("cortex-m55", "armv8.1m-mve", "conv3x3_c16"),
        ("cortex-m85", "armv8.1m-mve", "dw3x3_c16"),
        ("cortex-m55", "armv8.1m-mve", "max_pool_same"),
        ("cortex-m0plus", "armv6m", "conv3x3_same"),
        ("cortex-m0plus", "armv6m", "dw3x3"),
        ("cortex-m0plus", "armv6m", "fc_batch3"),
    ],
)
def test_mve_and_armv6m_annotations_do_not_change_timing(core, isa, kind):
    g, op = _other_layer(kind)
    p = schedule_for(isa, g, op)
    t = core_timing(core)
    assert t.time(p).cycles == t.time(Program(_strip(p.items), isa=p.isa)).cycles
