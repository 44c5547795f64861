"""RISC-V (RV32IMC + XpulpV2 + XpulpNN) assembly parser: operands, registers, memory
forms, sizes, annotations, hardware-loop checks and the address streams it feeds."""

from __future__ import annotations

import pytest

from mcusim.isa.addresses import compile_program, expand
from mcusim.isa.asm import AsmError
from mcusim.isa.riscv_asm import NN_SPR, RVBlock, hw_loop, parse, parse_line, rv_reg
from mcusim.isa.schedule import Block, Loop, Program, Rewind


def one(text: str, rvc: bool = True):
    ins = parse_line(text, "t", rvc)
    assert ins is not None
    return ins


def test_register_names():
    assert rv_reg("zero") == 0 and rv_reg("ra") == 1 and rv_reg("sp") == 2
    assert rv_reg("t0") == 5 and rv_reg("t2") == 7 and rv_reg("s0") == rv_reg("fp") == 8
    assert rv_reg("a0") == 10 and rv_reg("a7") == 17 and rv_reg("s2") == 18
    assert rv_reg("s11") == 27 and rv_reg("t3") == 28 and rv_reg("t6") == 31
    assert rv_reg("x17") == 17 and rv_reg("X31") == 31
    assert rv_reg("r1") is None and rv_reg("x32") is None


def test_alu_operands_and_x0():
    i = one("add a0, a1, a2")
    assert (i.mnemonic, i.cls, i.dests, i.srcs) == ("add", "alu", (10,), (11, 12))
    # x0 is neither a dependency nor a destination
    i = one("addi zero, x0, 5")
    assert i.dests == () and i.srcs == ()
    i = one("mv a0, zero")
    assert i.dests == (10,) and i.srcs == ()
    assert one("mulh t0, t1, t2").cls == "mulh"
    assert one("divu a0, a0, a1").cls == "div"
    assert one("mul a0, a0, a1").cls == "mul"
    # p.mac reads its accumulator
    i = one("p.mac a0, a1, a2")
    assert i.cls == "mul" and i.srcs == (10, 11, 12) and i.dests == (10,)


def test_loads_and_stores():
    i = one("lw a5, 4(a0) {input}")
    m = i.mem
    assert i.cls == "load" and i.dests == (15,) and i.srcs == (10,) and i.tag == "input"
    assert (m.is_load, m.base, m.imm, m.offset_reg, m.writeback, m.post, m.nbytes) == (
        True,
        10,
        4,
        None,
        False,
        False,
        4,
    )
    # post-increment immediate: address a0, then a0 += 4 (written like an Arm post-index)
    i = one("p.lw a5, 4(a0!) {weights}")
    m = i.mem
    assert i.dests == (15, 10) and i.srcs == (10,)
    assert (m.base, m.imm, m.writeback, m.post) == (10, 4, True, True)
    # post-increment by a register
    i = one("p.lbu t0, a2(a1!) {input}")
    m = i.mem
    assert (m.base, m.offset_reg, m.imm, m.post, m.nbytes) == (11, 12, None, True, 1)
    assert i.dests == (5, 11) and i.srcs == (11, 12)
    # register offset, no writeback
    i = one("p.lw a5, a2(a0) {input}")
    assert i.mem.offset_reg == 12 and not i.mem.writeback and i.dests == (15,)
    # stores read data + address; post-increment writes the base
    i = one("p.sw a4, 4(a3!) {output}")
    assert i.cls == "store" and i.srcs == (14, 13) and i.dests == (13,)
    assert not i.mem.is_load and i.mem.post
    i = one("sb t0, 0(a0) {output}")
    assert i.mem.nbytes == 1 and i.srcs == (5, 10) and i.dests == ()
    assert one("lh a0, -2(a1) {input}").mem.imm == -2
    assert one("lw a0, (a1) {input}").mem.imm == 0


def test_sp_accesses_default_to_stack_and_tags_required():
    (i,) = parse("lw ra, 12(sp)", "t", True)
    assert i.tag == "stack"
    with pytest.raises(AsmError, match="without a stream tag"):
        parse("lw a0, 0(a1)", "t", True)
    with pytest.raises(AsmError, match="unknown annotation"):
        parse_line("lw a0, 0(a1) {bogus}", "t")


def test_branches_and_jumps():
    i = one("bne a0, a1, .Lloop")
    assert (i.cls, i.cond, i.srcs, i.taken) == ("branch", "ne", (10, 11), None)
    assert one("bltu a0, a1, 1f {taken}").taken is True
    i = one("beqz a3, .Lout")
    assert i.cond == "eq" and i.srcs == (13,)
    i = one("p.bneimm a0, 3, .L2")
    assert i.cls == "branch" and i.srcs == (10,)
    assert one("j .Lout").cls == "jump"
    i = one("jal foo")
    assert i.cls == "jump" and i.dests == (1,)
    i = one("ret")
    assert i.cls == "jump_reg" and i.srcs == (1,)
    i = one("jalr t0")
    assert i.dests == (1,) and i.srcs == (5,)
    # a Block ending in a conditional branch is a loop with a back edge
    assert Block.rv("addi a0, a0, -1\nbnez a0, .L1").ends_with_branch
    assert not Block.rv("addi a0, a0, -1\nj .L1").ends_with_branch


def test_simd_and_xpulpnn_forms():
    i = one("pv.sdotsp.b a4, a5, a6")
    assert (i.mnemonic, i.cls, i.esize, i.dests, i.srcs) == (
        "pv.sdotsp",
        "simd_dotp",
        8,
        (14,),
        (14, 15, 16),
    )
    i = one("pv.dotsp.h a4, a5, a6")
    assert i.esize == 16 and i.srcs == (15, 16)  # non-accumulating: rd not read
    assert one("pv.sdotusp.sc.b a4, a5, a6").srcs == (14, 15, 16)
    i = one("pv.sdotsp.sci.h a4, a5, -3")
    assert i.srcs == (14, 15)
    i = one("pv.sdotsp.n a4, a5, a6")
    assert (i.cls, i.esize) == ("nn_dotp", 4)
    assert one("pv.sdotup.c a4, a5, a6").esize == 2
    assert one("pv.sdotsp.n.sc a4, a5, a6").esize == 4  # either suffix order
    assert one("pv.add.b a0, a1, a2").cls == "simd"
    assert one("pv.max.n a0, a1, a2").cls == "nn_simd"
    assert one("pv.abs.b a0, a1").srcs == (11,)
    assert one("pv.pack a0, a1, a2").esize == 16
    assert one("pv.packlo.b a0, a1, a2").srcs == (10, 11, 12)
    assert one("pv.extract.b a0, a1, 2").srcs == (11,)
    for t in ("p.cnt a0, a1", "p.clip a0, a0, 8", "p.clipu a0, a1, 9", "p.extract a0, a1, 3, 4"):
        assert one(t).cls == "alu"
    i = one("p.insert a0, a1, 3, 4")
    assert i.srcs == (10, 11)
    assert one("cv.sdotsp.b a4, a5, a6").mnemonic == "pv.sdotsp"  # CORE-V alias
    assert one("cv.cnt a0, a1").mnemonic == "p.cnt"
    with pytest.raises(AsmError, match="lane width"):
        one("pv.sdotsp a4, a5, a6")
    with pytest.raises(AsmError, match="nibble"):
        one("pv.pack.n a0, a1, a2")
    with pytest.raises(AsmError, match="unknown mnemonic"):
        one("vmla.f32 a0, a1, a2")


def test_qnt_and_macload():
    i = one("pv.qnt.n a0, a1, a2 {const}")
    assert i.cls == "nn_qnt" and i.dests == (10,) and i.srcs == (11, 12)
    assert i.mem.base == 12 and i.mem.is_load and i.mem.nregs == 4 and i.mem.nbytes == 8
    # ctl = 0b11010: act SPR 0 (bit 0 = 0), weight SPR 2 + 1 (bits 2:1 = 01), bit 3 set:
    # the activation SPR is reloaded from [a0] and a0 += 4
    i = one("pv.mlsdotsp.b a4, a0, 0b11010 {input}")
    assert i.cls == "nn_macload" and i.esize == 8
    assert i.dests == (14, 10, NN_SPR + 0)
    assert set(i.srcs) == {14, 10, NN_SPR + 0, NN_SPR + 3}
    assert (i.mem.base, i.mem.imm, i.mem.post, i.mem.nbytes) == (10, 4, True, 4)
    # bit 4 only: the weight SPR 2 + 2 is reloaded
    i = one("pv.mlsdotsup.n a4, a1, 0b10100 {weights}")
    assert i.dests == (14, 11, NN_SPR + 4)
    # no update bits: no memory access, no pointer move
    i = one("pv.mlsdotup.c a4, a1, 0b00001")
    assert i.mem is None and i.dests == (14,)
    with pytest.raises(AsmError, match="imm5"):
        one("pv.mlsdotsp.b a4, a1, 40")


def test_hardware_loop_instructions_and_constraints():
    i = one("lp.setup x0, a3, .Lend")
    assert i.cls == "hwloop" and i.srcs == (13,) and i.size == 4
    assert one("lp.setupi x1, 16, .Lend").srcs == ()
    assert one("lp.counti x0, 16").cls == "hwloop"
    assert one("cv.setup 0, a3, .Lend").mnemonic == "lp.setup"
    with pytest.raises(AsmError, match="x0/x1"):
        one("lp.setup x2, a3, .Lend")
    body = Block.rv("p.lw t0, 4(a0!) {weights}\np.lw t1, 4(a1!) {input}\npv.sdotsp.b a4, t0, t1")
    loop = hw_loop("inner", 10, [body])
    assert isinstance(loop, Loop) and not loop.has_back_edge
    with pytest.raises(AsmError, match="needs >= 3"):
        hw_loop("short", 4, [Block.rv("pv.sdotsp.b a4, t0, t1\nnop")])
    with pytest.raises(AsmError, match="not allowed"):
        hw_loop("br", 4, [Block.rv("nop\nnop\nbnez a0, .L1")])
    # CV32E40P v2: no compressed instructions in the body (checked on request)
    rvc_body = [Block.rv("addi a0, a0, 1\npv.sdotsp.b a4, t0, t1\nnop")]
    with pytest.raises(AsmError, match="compressed"):
        hw_loop("c", 4, rvc_body, rvc_ok=False)
    hw_loop(
        "c", 4, [Block.rv("addi a0, a0, 1\npv.sdotsp.b a4, t0, t1\nnop", rvc=False)], rvc_ok=False
    )


def test_rvc_sizes():
    # compressible operand forms are 2 bytes, the rest 4
    assert one("addi a0, a0, 4").size == 2  # c.addi
    assert one("addi a0, a1, 4").size == 4
    assert one("addi sp, sp, -32").size == 2  # c.addi16sp
    assert one("li a0, 31").size == 2 and one("li a0, 32").size == 4
    assert one("mv a0, a1").size == 2
    assert one("add a0, a0, t0").size == 2  # c.add
    assert one("sub a0, a0, a1").size == 2 and one("sub t0, t0, a1").size == 4  # x8-x15 only
    assert one("lw a0, 4(a1) {input}").size == 2 and one("lw t0, 4(a1) {input}").size == 4
    assert one("lw t0, 8(sp)").size == 2  # c.lwsp
    assert one("lw a0, 128(a1) {input}").size == 4
    assert one("bnez a0, .L").size == 2 and one("bnez t0, .L").size == 4
    assert one("ret").size == 2 and one("j .L").size == 2
    assert one("mul a0, a0, a1").size == 4
    # li with a >12-bit constant is lui + addi; la is auipc + addi
    i = one("li a0, 0x12345")  # lui 0x12 (c.lui) + addi 0x345 (not c.addi): 2 + 4
    assert i.annotation("insns") == 2 and i.size == 6
    assert one("li a0, 0x12345", rvc=False).size == 8
    assert one("li a0, 0x12345678").size == 8  # lui 0x12345 needs 32 bits
    assert one("li a0, 0x12345801").size == 8  # lui 0x12346 + addi -2047
    i = one("li a0, 0x3000")  # lui only
    assert (i.annotation("insns"), i.size) == (1, 2)
    assert one("li a0, 0x7fff0010").size == 6  # lui (4) + c.addi 16 (2)
    assert one("li a0, 2047").annotation("insns") is None
    assert one("la a0, table").size == 8
    assert one("p.lw a0, 4(a1!) {input}").size == 4  # custom: always 32-bit
    assert one("addi a0, a0, 4", rvc=False).size == 4
    b = Block.rv("addi a0, a0, 4\n.option norvc\naddi a0, a0, 4")
    assert [i.size for i in b.instrs] == [2, 4]
    assert Block.rv("c.add a0, a1").instrs[0].size == 2
    i = Block.rv("c.lwsp ra, 12(sp)").instrs[0]
    assert (i.mnemonic, i.size, i.tag) == ("lw", 2, "stack")
    assert Block.rv("c.addi16sp sp, -32").instrs[0].dests == (2,)
    assert one("pv.shuffle2.b a0, a1, a2").srcs == (10, 11, 12)
    assert Block.rv("addi a0, a0, 4", rvc=False).code_bytes == 4


def test_comments_labels_directives_and_errors():
    text = """
    # a comment
    .Lloop:                      // label
        addi a0, a0, 1           # trailing comment
    .align 2
    1:  nop
    """
    ins = parse(text, "t")
    assert [i.mnemonic for i in ins] == ["addi", "nop"]
    with pytest.raises(AsmError, match="bad memory operand"):
        one("lw a0, 4[a1]")
    with pytest.raises(AsmError, match="needs 3 operands"):
        one("add a0, a1")
    with pytest.raises(AsmError, match="bad register"):
        one("add a0, a1, q3")


def test_block_builder_and_annotations():
    b = Block.rv("lw a0, 0(a1) {input} {misaligned}\ndiv a0, a0, a1 {div=7}", name="x")
    assert isinstance(b, RVBlock) and b.isa == "riscv" and b.name == "x"
    assert b.instrs[0].annotation("misaligned") == 1
    assert b.instrs[1].annotation("div") == 7
    t = b.traffic
    assert t.sum() == 4 + 1  # 4 bytes read, 1 access


# --------------------------------------------------------------- address streams
def test_post_increment_moves_stream_pointers_like_arm_writeback():
    setup = Block.rv("lp.setup x0, a3, .Lend")
    body = Block.rv(
        """
        p.lw  t0, 4(a5!)  {weights}     # a5 = x15: not a literal pool load
        p.lw  t1, a2(a1!) {input}
        pv.sdotsp.b a4, t0, t1
        sw    a4, 0(a0)   {output}
        addi  a0, a0, 4
        """
    )
    prog = Program([setup, hw_loop("k", 3, [body], regs={"a2": 8})], isa="rv32")
    ev = [
        (e[2], e[3], e[5])
        for e in expand(compile_program(prog, {"weights": 1000, "input": 2000, "output": 3000}))
    ]
    assert ev == [
        ("weights", 1000, False),
        ("input", 2000, False),
        ("output", 3000, True),
        ("weights", 1004, False),
        ("input", 2008, False),
        ("output", 3004, True),
        ("weights", 1008, False),
        ("input", 2016, False),
        ("output", 3008, True),
    ]


def test_rewind_and_macload_stream():
    body = Block.rv(
        """
        pv.mlsdotsp.b a4, a0, 0b01000 {input}
        pv.mlsdotsp.b a5, a1, 0b10000 {weights}
        pv.mlsdotsp.b a6, a1, 0b00000
        """
    )
    prog = Program([Loop("o", 2, [hw_loop("k", 2, [body])], addr={"weights": Rewind()})])
    ev = [(e[2], e[3]) for e in expand(compile_program(prog, {"input": 0, "weights": 500}))]
    assert ev == [
        ("input", 0),
        ("weights", 500),
        ("input", 4),
        ("weights", 504),
        ("input", 8),
        ("weights", 500),  # rewound each outer iteration
        ("input", 12),
        ("weights", 504),
    ]


def test_stack_pointer_is_x2_for_riscv_blocks():
    # a3 (x13) is the Arm SP number: on RISC-V it must not move the stack stream
    b = Block.rv("addi sp, sp, -16\nsw ra, 12(sp)\naddi a3, a3, 4\nlw ra, 12(sp)")
    ev = [(e[2], e[3]) for e in expand(compile_program(Program([b]), {"stack": 100}))]
    assert ev == [("stack", 96), ("stack", 96)]
