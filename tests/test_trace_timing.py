"""Trace-driven timing: the executed translation blocks of real firmware, timed with the
same core models the simulator's schedules use, equal hand-checked TRM cycle counts."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("unicorn", reason="firmware tests need unicorn (pip install '.[firmware]')")
pytest.importorskip("capstone", reason="firmware tests need capstone")
pytest.importorskip("elftools", reason="firmware tests need pyelftools")

from mcusim.devices.loader import load_device  # noqa: E402
from mcusim.firmware import Tracer, build, gcc_available, harness_for, zig_available  # noqa: E402
from mcusim.isa.schedule import Block, Loop, Program  # noqa: E402
from mcusim.isa.timing import core_timing  # noqa: E402

if not zig_available() and not gcc_available("cortex-m4"):
    pytest.skip("no compiler: pip install ziglang", allow_module_level=True)
CC = "zig" if zig_available() else "gcc"

ARM_S = """
    .syntax unified
    .thumb
    .text
    .global sum_words
    .type sum_words, %function
    .thumb_func
sum_words:                  @ r0 = int32 *x, r1 = n > 0
    movs r2, #0
1:  ldr r3, [r0], #4
    add r2, r2, r3
    subs r1, r1, #1
    bne 1b
    mov r0, r2
    bx lr
    .size sum_words, . - sum_words

    .global dot_pairs
    .type dot_pairs, %function
    .thumb_func
dot_pairs:                  @ r0 = int16 *a, r1 = int16 *b, r2 = n pairs > 0
    push {r4, r5}
    movs r3, #0
1:  ldr r4, [r0], #4
    ldr r5, [r1], #4
    smlad r3, r4, r5, r3
    subs r2, r2, #1
    bne 1b
    mov r0, r3
    pop {r4, r5}
    bx lr
    .size dot_pairs, . - dot_pairs

    .global stride2
    .type stride2, %function
    .thumb_func
stride2:                    @ r0 = int32 *x, r1 = n > 0, r2 = stride bytes: two passes
    push {r4, r5, r6}
    movs r3, #0
    movs r6, #2
2:  mov r4, r0
    mov r5, r1
1:  ldr r12, [r4]
    add r3, r3, r12
    add r4, r4, r2
    subs r5, r5, #1
    bne 1b
    subs r6, r6, #1
    bne 2b
    mov r0, r3
    pop {r4, r5, r6}
    bx lr
    .size stride2, . - stride2

    .global relu_branch
    .type relu_branch, %function
    .thumb_func
relu_branch:                @ r0 = x -> max(x, 0) with a forward branch
    cmp r0, #0
    bge 1f
    movs r0, #0
1:  bx lr
    .size relu_branch, . - relu_branch
"""

# The same instruction sequences as schedules (isa/schedule.py), for the core models.
SUM_HEAD = Block.asm("movs r2, #0")
SUM_BODY = Block.asm("ldr r3, [r0], #4 {input}\nadd r2, r2, r3\nsubs r1, r1, #1\nbne 1b")
SUM_TAIL = Block.asm("mov r0, r2\nbx lr")
DOT_HEAD = Block.asm("push {r4, r5}\nmovs r3, #0")
DOT_BODY = Block.asm(
    "ldr r4, [r0], #4 {input}\nldr r5, [r1], #4 {weights}\nsmlad r3, r4, r5, r3\n"
    "subs r2, r2, #1\nbne 1b"
)
DOT_TAIL = Block.asm("mov r0, r3\npop {r4, r5}\nbx lr")


def _program(head, body, tail, n):
    return Program([head, Loop("loop", n, [body]), tail])


@pytest.fixture(scope="module")
def arm_elf(tmp_path_factory):
    src = tmp_path_factory.mktemp("trace") / "loops.S"
    src.write_text(ARM_S)
    return build([src], "cortex-m4", cc=CC).elf


@pytest.mark.parametrize("n", [1, 2, 10, 300])
def test_m4_trace_equals_hand_checked_trm_count(arm_elf, n):
    """Cortex-M4 TRM (DDI 0439 Table 3-1, P = 2 refill cycles): movs 1; per iteration
    LDR 2 (not pipelined: after a branch), ADD 1, SUBS 1, BNE 1+P taken / 1 on the last;
    MOV 1; BX LR 1+P. Total 1 + 7(n-1) + 5 + 1 + 3 = 7n + 3 cycles, 4n + 3 instructions."""
    h = harness_for(arm_elf, "cortex-m4")
    x = np.arange(1, n + 1, dtype=np.int32) * -3
    out = h.call("sum_words", x, n, trace=Tracer(core="cortex-m4"))
    assert out.signed == int(x.sum())
    tr = out.trace
    assert tr.instructions == 4 * n + 3
    assert tr.compute_cycles == 7 * n + 3
    assert tr.stall_cycles == 0  # no device: zero-wait memory
    prog = core_timing("cortex-m4").time(_program(SUM_HEAD, SUM_BODY, SUM_TAIL, n))
    assert prog.cycles == tr.compute_cycles and prog.instructions == tr.instructions
    assert sum(tr.blocks.values()) >= 2 and tr.unmodeled == {}


@pytest.mark.parametrize("core", ["cortex-m4", "cortex-m7", "cortex-m33"])
@pytest.mark.parametrize("n", [1, 3, 64])
def test_trace_equals_schedule_timing(arm_elf, core, n):
    """Pipelined loads + SMLAD: the trace, cut into translation blocks, times the same as
    the schedule of the same instructions on every Unicorn-emulated Cortex-M core."""
    h = harness_for(arm_elf, core)
    rng = np.random.default_rng(n)
    a = rng.integers(-32768, 32768, 2 * n, dtype=np.int16)
    b = rng.integers(-32768, 32768, 2 * n, dtype=np.int16)
    out = h.call("dot_pairs", a, b, n, trace=Tracer(core=core))
    ref = int(a.astype(np.int64) @ b.astype(np.int64))
    ref = (ref + (1 << 31)) % (1 << 32) - (1 << 31)
    assert out.signed == ref
    prog = core_timing(core).time(_program(DOT_HEAD, DOT_BODY, DOT_TAIL, n))
    assert out.trace.instructions == prog.instructions == 5 * n + 5
    assert out.trace.compute_cycles == prog.cycles


def test_m4_pipelined_load_hand_count(arm_elf):
    """DDI 0439 3.3.2: the second of two independent LDRs pipelines (1 cycle). Per iteration
    2 + 1 + 1 (SMLAD) + 1 + 3 = 8 (last 6); PUSH {2} 1+2 = 3, MOVS 1, MOV 1, POP {2} 3,
    BX 3: n = 5 -> 3 + 1 + 8*4 + 6 + 1 + 3 + 3 = 49."""
    h = harness_for(arm_elf, "cortex-m4")
    z = np.zeros(10, np.int16)
    out = h.call("dot_pairs", z, z, 5, trace=Tracer(core="cortex-m4"))
    assert out.trace.compute_cycles == 49


@pytest.mark.parametrize("core", ["cortex-m4", "cortex-m7", "cortex-m33"])
def test_forward_branch_outcome_from_the_trace(arm_elf, core):
    """A forward conditional branch is timed as the schedule's {taken} / not-taken branch.
    M4 by hand: CMP 1, BGE taken 1+P = 3, BX 3 -> 7; not taken: 1 + 1 + MOVS 1 + 3 = 6."""
    h = harness_for(arm_elf, core)
    tm = core_timing(core)
    taken = Program([Block.asm("cmp r0, #0\nbge 1f {taken}\nbx lr")])
    fall = Program([Block.asm("cmp r0, #0\nbge 1f\nmovs r0, #0\nbx lr")])
    t = h.call("relu_branch", 5, trace=Tracer(core=core))
    f = h.call("relu_branch", -5, trace=Tracer(core=core))
    assert (t.value, f.value) == (5, 0)
    assert (t.trace.instructions, f.trace.instructions) == (3, 4)
    assert t.trace.compute_cycles == tm.time(taken).cycles
    assert f.trace.compute_cycles == tm.time(fall).cycles
    if core == "cortex-m4":
        assert (t.trace.compute_cycles, f.trace.compute_cycles) == (7, 6)


def test_flash_wait_states_from_the_device(arm_elf):
    """stm32l4r5: flash 5 wait states, 64-bit words, ART (the device's caches, simulated on
    the trace's real addresses): data cache 8 lines of 32 B, instruction cache 32 lines.
    Reading 256 words from flash sequentially: 1024 B = 32 ART lines, each a miss filling
    32 B / 8 B = 4 flash words x 5 WS = 20 cycles -> 640; the 16-byte function sits in ART
    line 0 (linked at 0x0): one instruction miss, not sequential -> 20 (each call starts
    with cold caches). RAM (SRAM, 0 wait states) costs none."""
    dev = load_device("stm32l4r5")
    h = harness_for(arm_elf, "cortex-m4")
    n = 256
    x = np.arange(n, dtype=np.int32)
    tr = Tracer(device=dev)
    flash = h.put(x, region="flash")
    out = h.call("sum_words", flash, n, trace=tr)
    assert out.signed == int(x.sum())
    t = out.trace
    assert t.read_bytes["flash"] == 4 * n and t.read_bytes["total"] == 4 * n
    assert t.code_bytes == 16
    assert t.cache["flash_accel_d"] == {
        "hits": n - 32,
        "misses": 32,
        "writebacks": 0,
        "seq_misses": 31,
    }
    assert t.cache["flash_accel_i"]["misses"] == 1
    assert t.stall_cycles == 640 + 20
    assert t.cycles == 7 * n + 3 + 660
    ram = h.put(x)
    t2 = h.call("sum_words", ram, n, trace=tr).trace
    assert "ram" not in t2.read_bytes  # SRAM has no wait states: not hooked
    assert t2.stall_cycles == 20 and t2.compute_cycles == t.compute_cycles


RV_S = """
    .text
    .globl sum_words
    .type sum_words, @function
sum_words:                  # a0 = int32 *x, a1 = n > 0
    li a2, 0
1:  lw a3, 0(a0)
    add a2, a2, a3
    addi a0, a0, 4
    addi a1, a1, -1
    bnez a1, 1b
    mv a0, a2
    ret
    .size sum_words, . - sum_words
"""


@pytest.mark.parametrize("n", [1, 4, 50])
def test_rv_trace_equals_hand_checked_count(tmp_path, n):
    """CV32E40P pipeline.rst: ALU 1, load 1 (+1 load-use: ADD uses A3 right after LW),
    branch taken 3 / not taken 1, jalr 2. Per iteration 1 + 1 + 1 + 1 + 1 + 3 = 8, the last
    6; li 1, mv 1, ret 2: total 8n + 2 cycles, 5n + 3 instructions."""
    if not zig_available():
        pytest.skip("RISC-V builds here use zig (no riscv64-unknown-elf-gcc needed)")
    src = tmp_path / "rv_loop.S"
    src.write_text(RV_S)
    h = harness_for(build([src], "ri5cy").elf, "ri5cy")
    x = np.arange(n, dtype=np.int32) - 7
    out = h.call("sum_words", x, n, trace=Tracer(core="ri5cy"))
    assert out.signed == int(x.sum())
    assert out.trace.instructions == 5 * n + 3
    assert out.trace.compute_cycles == 8 * n + 2
    prog = Program(
        [
            Block.rv("li a2, 0"),
            Loop(
                "loop",
                n,
                [
                    Block.rv(
                        "lw a3, 0(a0) {input}\nadd a2, a2, a3\naddi a0, a0, 4\n"
                        "addi a1, a1, -1\nbnez a1, 1b"
                    )
                ],
            ),
            Block.rv("mv a0, a2\nret"),
        ],
        isa="xpulp",
    )
    assert core_timing("ri5cy").time(prog).cycles == out.trace.compute_cycles


HWLOOP_C = r"""
#include <stdint.h>
/* lp.setup x0, n, end (PULP opcode 0x7B, funct3 100; end = setup + 2*8 bytes) over a
   3-instruction body */
int32_t hwloop3(int32_t n) {
    int32_t acc = 0;
    __asm__ volatile(
        ".option push\n.option norvc\n"
        ".insn i 0x7b, 4, x0, %1, 8\n"
        "addi %0, %0, 1\n addi %0, %0, 2\n addi %0, %0, 4\n"
        ".option pop\n" : "+r"(acc) : "r"(n));
    return acc;
}
"""


def test_rv_hardware_loop_is_zero_overhead_in_the_trace(tmp_path):
    """A hardware loop's jump back cuts the TB where the body ends: each extra iteration
    adds exactly the 3 body instructions and 3 cycles (zero-overhead loop, [HWL])."""
    if not zig_available():
        pytest.skip("RISC-V builds here use zig")
    src = tmp_path / "hwloop.c"
    src.write_text(HWLOOP_C)
    h = harness_for(build([src], "xpulpnn").elf, "xpulpnn")
    runs = {n: h.call("hwloop3", n, trace=True) for n in (1, 2, 7, 40)}
    for n, r in runs.items():
        assert r.signed == 7 * n
    base_i = runs[1].trace.instructions - 3
    base_c = runs[1].trace.cycles - 3
    for n, r in runs.items():
        assert r.trace.instructions == base_i + 3 * n
        assert r.trace.cycles == base_c + 3 * n


# ------------------------------------------------------------- caches on the trace
def _tiny_cache_device():
    """An M7 device with a 256 B, 2-way, 32 B-line LRU D-cache (4 sets), no I-cache, SRAM
    (arena, 2 wait states, 32-bit bus) behind it, code and constants in a zero-wait
    uncached flash: every stall is a D-cache line fill of 2 + 32 / 4 = 10 cycles."""
    from dataclasses import replace

    from mcusim.devices.model import Cache

    d = load_device("stm32f746")
    core = replace(d.core, dcache=Cache(256, 2, 32, "lru"), icache=None)
    mems = []
    for m in d.memories:
        if m.name == "sram":
            m = replace(m, wait_states=2, width_bits=32, base_address=0x2000_0000)
        elif m.name == "flash":
            m = replace(m, wait_states=0, cached=False, accelerator=None)
        mems.append(m)
    return replace(d, name="tiny-l1", core=core, memories=tuple(mems))


@pytest.mark.parametrize(
    "n, data_misses, data_hits",
    [(4, 4, 4), (8, 16, 0)],
)
def test_strided_loop_through_a_tiny_cache(arm_elf, n, data_misses, data_hits):
    """Two passes over n words 64 B apart (x 128 B-aligned: lines L, L+2, ..., sets 0 and 2
    of 4). n = 4: two lines per set fit the 2 ways -> pass 1 misses 4, pass 2 hits 4.
    n = 8: four lines per set, LRU evicts each line before its reuse -> 16 misses. The stack
    (PUSH of 3 words = 3 writes in one line of set 1, POP = 3 reads): 1 write-allocate miss,
    5 hits, never evicted. Stall = misses x (2 WS + 8 beats) = 10 cycles each."""
    dev = _tiny_cache_device()
    h = harness_for(arm_elf, "cortex-m7")
    x = np.arange(16 * n, dtype=np.int32)
    addr = h.put(x, align=128)
    tr = Tracer(device=dev)
    out = h.call("stride2", addr, n, 64, trace=tr)
    assert out.signed == 2 * int(x[::16][:n].sum())
    t = out.trace
    assert t.cache["dcache"] == {
        "hits": data_hits + 5,
        "misses": data_misses + 1,
        "writebacks": 0,
        "seq_misses": 0,
    }
    assert "icache" not in t.cache
    assert t.stall_cycles == 10 * (data_misses + 1)
    assert t.read_bytes["ram"] == 4 * 2 * n + 12 and t.write_bytes["ram"] == 12


def test_trace_cache_stats_equal_the_reference_on_the_same_accesses(arm_elf):
    """stm32f746 (4 KB 4-way D, 4 KB 2-way I, random replacement, flash and SRAM both on
    the cached AXIM path): the trace's D- and I-cache counters equal an independent
    per-access reference cache (tests/test_cache.py RefCache) and mcusim.cache's plain-trace
    simulator fed the recorded accesses; the stalls equal mcusim.costs.layer_cost of
    those counters."""
    from test_cache import RefCache

    from mcusim.cache import CacheConfig, CacheState, simulate_trace
    from mcusim.isa.addresses import MEM_SHIFT

    dev = load_device("stm32f746")
    h = harness_for(arm_elf, "cortex-m7")
    rng = np.random.default_rng(5)
    n = 3000  # 12 KB per operand: larger than the D-cache
    a = rng.integers(-32768, 32768, 2 * n, dtype=np.int16)
    b = h.put(rng.integers(-32768, 32768, 2 * n, dtype=np.int16), region="flash")
    tr = Tracer(device=dev, record=True)
    t = h.call("dot_pairs", a, b, n, trace=tr).trace
    g, nb, kind = tr.accesses
    dcfg, icfg = CacheConfig.of(dev.core.dcache), CacheConfig.of(dev.core.icache)
    rd, ri = RefCache(dcfg, 0), RefCache(icfg, 1)
    data = []
    mask = (1 << MEM_SHIFT) - 1
    for addr, size, k in zip(g.tolist(), nb.tolist(), kind.tolist(), strict=True):
        if k == 2:  # a TB's code bytes: 8-byte fetch units (cortex-m7.toml) per line
            lb = icfg.line_bytes
            for line in range(addr // lb, (addr + size - 1) // lb + 1):
                lo, hi = max(addr, line * lb), min(addr + size, (line + 1) * lb)
                ri.access_line(line, False, (hi - 1) // 8 - lo // 8 + 1)
        else:
            rd.access(addr, size, bool(k))
            data.append((addr & mask, size, k))
    assert rd.misses > 100 and ri.misses > 0
    want_d = {"hits": rd.hits, "misses": rd.misses, "writebacks": rd.writebacks}
    want_i = {"hits": ri.hits, "misses": ri.misses, "writebacks": 0}
    assert {k: t.cache["dcache"][k] for k in want_d} == want_d
    assert {k: t.cache["icache"][k] for k in want_i} == want_i
    # the plain-trace simulator on the data addresses (both memories' offsets are far
    # apart, so dropping the memory tag aliases nothing here)
    st = CacheState([dcfg])
    arr = np.array(data, dtype=np.int64)
    got = simulate_trace(
        arr[:, 0], arr[:, 1], arr[:, 2], st.cfg, st.tags, st.stamp, st.dirty, st.rr, st.st
    )
    assert (int(got[0]), int(got[1]), int(got[2])) == (rd.hits, rd.misses, rd.writebacks)
    # stalls: flash fills 7 WS + 1 beat of 32 B, SRAM fills/writebacks 4 beats of 8 B
    fl = (g >> MEM_SHIFT) - 1
    assert t.stall_cycles > 0
    assert t.cycles == t.compute_cycles + t.stall_cycles
    assert fl.max() < len(dev.memories)
