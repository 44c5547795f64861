"""Firmware harness: build C for the target, run it in Unicorn, clear errors on faults.

Checks real compiled code against independent references: numpy sums for the Cortex-M
SMLAD kernel, the isa/xpulp.py semantics for emulated XpulpV2/XpulpNN instructions.
Builds use zig (PyPI ziglang) and, when installed, arm-none-eabi-gcc / riscv64-unknown-elf-gcc.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("unicorn", reason="firmware tests need unicorn (pip install '.[firmware]')")
pytest.importorskip("capstone", reason="firmware tests need capstone")
pytest.importorskip("elftools", reason="firmware tests need pyelftools")

from mcusim.errors import UserError  # noqa: E402
from mcusim.firmware import (  # noqa: E402
    FirmwareError,
    Tracer,
    build,
    gcc_available,
    harness_for,
    zig_available,
)
from mcusim.firmware.trace import decode_arm  # noqa: E402
from mcusim.isa import xpulp as X  # noqa: E402

ARM_C = r"""
#include <stdint.h>
#include <arm_acle.h>

static inline uint32_t ror32(uint32_t x, unsigned r) { return (x >> r) | (x << (32 - r)); }

/* sum of n int8 values, 4 at a time with SXTB16 + SMLAD */
int32_t sum_s8(const int8_t *x, int32_t n) {
    int32_t acc = 0, i = 0;
    for (; i + 4 <= n; i += 4) {
        uint32_t w;
        __builtin_memcpy(&w, x + i, 4);
        acc = __smlad(__sxtb16(w), 0x00010001u, acc);
        acc = __smlad(__sxtb16(ror32(w, 8)), 0x00010001u, acc);
    }
    for (; i < n; i++) acc += x[i];
    return acc;
}

int32_t add6(int32_t a, int32_t b, int32_t c, int32_t d, int32_t e, int32_t f) {
    return a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f;
}
int32_t deref(const int32_t *p) { return *p; }
void poke(int32_t *p, int32_t v) { *p = v; }
int32_t spin(volatile int32_t *flag) { while (*flag == 0) { } return 1; }
void illegal(void) { __asm__ volatile(".inst.n 0xde00"); }   /* UDF #0 */
int64_t load64(const int64_t *p) { return *p; }
int32_t counter;
int32_t bump(void) { return ++counter; }

/* code the compilers turn into library calls: memcpy, memset, 64-bit division */
typedef struct { int32_t a[32]; } big_t;
void copy_big(big_t *d, const big_t *s) { *d = *s; }
void zero_bytes(int8_t *p, int32_t n) { for (int32_t i = 0; i < n; i++) p[i] = 0; }
int64_t div64(int64_t a, int64_t b) { return a / b; }
"""

RV_C = r"""
#include <stdint.h>
/* PULP encodings (riscv-xpulp.md section 2, opcode 0x57 = OP-V): funct3 001 = .b,
   000 = .h, 101 = .sc.b, 111 = .sci.b, 010 = XpulpNN .n; funct7 1011100 = sdotsp,
   1010100 = sdotusp. */
int32_t sdotsp_b(int32_t acc, uint32_t a, uint32_t b) {
    __asm__ volatile(".insn r 0x57, 1, 0x5c, %0, %1, %2" : "+r"(acc) : "r"(a), "r"(b));
    return acc;
}
int32_t sdotusp_b(int32_t acc, uint32_t a, uint32_t b) {
    __asm__ volatile(".insn r 0x57, 1, 0x54, %0, %1, %2" : "+r"(acc) : "r"(a), "r"(b));
    return acc;
}
int32_t sdotsp_h(int32_t acc, uint32_t a, uint32_t b) {
    __asm__ volatile(".insn r 0x57, 0, 0x5c, %0, %1, %2" : "+r"(acc) : "r"(a), "r"(b));
    return acc;
}
int32_t sdotsp_sc_b(int32_t acc, uint32_t a, uint32_t b) {
    __asm__ volatile(".insn r 0x57, 5, 0x5c, %0, %1, %2" : "+r"(acc) : "r"(a), "r"(b));
    return acc;
}
int32_t sdotsp_n(int32_t acc, uint32_t a, uint32_t b) {
    __asm__ volatile(".insn r 0x57, 2, 0x5c, %0, %1, %2" : "+r"(acc) : "r"(a), "r"(b));
    return acc;
}
/* p.clip rd, rs1, 8 : OP 0x33, funct7 0001010, funct3 001, imm in the rs2 field */
int32_t clip8(int32_t a) {
    int32_t r;
    __asm__ volatile(".insn r 0x33, 1, 0x0a, %0, %1, x8" : "=r"(r) : "r"(a));
    return r;
}
/* dot product over n bytes (n multiple of 4) with pv.sdotsp.b */
int32_t dot_s8(const int8_t *a, const int8_t *b, int32_t n) {
    int32_t acc = 0;
    for (int32_t i = 0; i < n; i += 4) {
        uint32_t x, y;
        __builtin_memcpy(&x, a + i, 4);
        __builtin_memcpy(&y, b + i, 4);
        acc = sdotsp_b(acc, x, y);
    }
    return acc;
}
/* hardware loop: lp.setup x0, n, end (end = setup + 2*8 bytes: a 3-instruction body) */
int32_t hwloop3(int32_t n) {
    int32_t acc = 0;
    __asm__ volatile(
        ".option push\n.option norvc\n"
        ".insn i 0x7b, 4, x0, %1, 8\n"
        "addi %0, %0, 1\n addi %0, %0, 2\n addi %0, %0, 4\n"
        ".option pop\n" : "+r"(acc) : "r"(n));
    return acc;
}
int32_t deref(const int32_t *p) { return *p; }
"""


def _compilers(arch: str) -> list:
    out = [
        pytest.param(
            "zig",
            marks=pytest.mark.skipif(not zig_available(), reason="ziglang not installed"),
        )
    ]
    prog = "cortex-m4" if arch == "arm" else "rv32imc"
    out.append(
        pytest.param(
            "gcc",
            marks=pytest.mark.skipif(
                not gcc_available(prog),
                reason=f"no GNU cross compiler for {arch} on PATH (apt-get install "
                + ("gcc-arm-none-eabi)" if arch == "arm" else "gcc-riscv64-unknown-elf)"),
            ),
        )
    )
    return out


@pytest.fixture(scope="module")
def arm_src(tmp_path_factory):
    p = tmp_path_factory.mktemp("fw") / "harness_arm.c"
    p.write_text(ARM_C)
    return p


@pytest.fixture(scope="module")
def rv_src(tmp_path_factory):
    p = tmp_path_factory.mktemp("fw") / "harness_rv.c"
    p.write_text(RV_C)
    return p


@pytest.fixture(scope="module", params=_compilers("arm"))
def arm_fw(request, arm_src):
    res = build([arm_src], "cortex-m4", cc=request.param)
    return res, harness_for(res.elf, "cortex-m4")


# ------------------------------------------------------------------------- build layer
def test_build_records_compiler_and_caches(arm_fw, arm_src):
    res, _ = arm_fw
    assert res.elf.is_file() and res.target == "cortex-m4"
    assert res.version.startswith("zig") if res.compiler == "zig" else "gcc" in res.version
    assert "-ffreestanding" in res.flags and "-nostdlib" in res.flags
    assert any(f.startswith("-Wl,-T,") and f.endswith("link.ld") for f in res.flags)
    again = build([arm_src], "cortex-m4", cc=res.compiler)
    assert again.cached and again.elf == res.elf
    other = build([arm_src], "cortex-m4", cc=res.compiler, opt="-O1")
    assert other.elf != res.elf  # flags are part of the key


def test_build_errors_are_user_errors(tmp_path):
    bad = tmp_path / "bad.c"
    bad.write_text("int f(void) { return undefined_name; }\n")
    if zig_available():
        with pytest.raises(UserError, match="bad.c"):
            build([bad], "cortex-m4", cc="zig", use_cache=False)
    with pytest.raises(UserError, match="no firmware build target"):
        build([bad], "cortex-a53")
    with pytest.raises(UserError, match="not found"):
        build([tmp_path / "missing.c"], "cortex-m4")


# ----------------------------------------------------------------------------- running
def test_sum_s8_with_smlad_is_exact(arm_fw):
    res, h = arm_fw
    rng = np.random.default_rng(1)
    fn = h.symbol("sum_s8") & ~1
    text = [s for s in h.image.segments if s.executable][0]
    ins, _ = decode_arm(text.data[fn - text.vaddr : fn - text.vaddr + 400], fn)
    assert any(i.mnemonic == "smlad" for i in ins), "SMLAD intrinsic not compiled in"
    for n in (0, 1, 3, 4, 17, 64, 1001):
        x = rng.integers(-128, 128, n, dtype=np.int8)
        x[: min(n, 4)] = -128  # extremes
        h.reset_heap()
        out = h.call("sum_s8", x, n)
        assert out.signed == int(x.astype(np.int64).sum()), (res.compiler, n)


def test_stack_arguments_and_globals(arm_fw):
    _, h = arm_fw
    assert h.call("add6", 1, 2, 3, 4, 5, 6).signed == 1 + 4 + 9 + 16 + 25 + 36
    assert h.call("add6", -1, 0, 0, 0, 0, -7).signed == -1 - 42
    first = h.call("bump").value
    assert h.call("bump").value == first + 1  # .bss lives in RAM and persists


def test_compiler_support_routines_link_and_run(arm_fw):
    """Struct copies, zeroing loops and 64-bit division call memcpy/memset/__aeabi_ldivmod:
    libgcc + mcusim's rt.c (gcc) or zig's compiler_rt provide them."""
    _, h = arm_fw
    h.reset_heap()
    src = np.arange(-16, 16, dtype=np.int32)
    s, d = h.put(src), h.alloc(160)
    h.call("copy_big", d, s)
    np.testing.assert_array_equal(h.read_array(d, np.int32, 32), src)
    h.write(d, np.full(160, 7, np.uint8))
    h.call("zero_bytes", d + 1, 101)
    got = h.read_array(d, np.uint8, 160)
    assert got[0] == 7 and not got[1:102].any() and (got[102:] == 7).all()
    for a, b in ((-100, 7), (1 << 40, -3), (-(1 << 62), 1 << 31)):
        ua, ub = a & (2**64 - 1), b & (2**64 - 1)
        r = h.call("div64", ua & 0xFFFFFFFF, ua >> 32, ub & 0xFFFFFFFF, ub >> 32)
        q = r.value | (h.reg(1) << 32)
        q = q - (1 << 64) if q >> 63 else q
        assert q == int(a / b), (a, b)  # C division truncates toward zero


def test_memory_roundtrip_and_regions(arm_fw):
    _, h = arm_fw
    h.reset_heap()
    a = h.put(np.array([7, -9], dtype=np.int32), region="flash")
    assert a < 0x2000_0000
    assert h.call("deref", a + 4).signed == -9
    b = h.alloc(8)
    h.call("poke", b, -123456)
    assert h.read_array(b, np.int32, 1)[0] == -123456
    with pytest.raises(FirmwareError, match="exhausted"):
        h.alloc(1 << 30)


@pytest.mark.parametrize(
    "fn,args,pattern",
    [
        ("deref", (0x4000_0000,), r"read of 4 bytes from unmapped memory at address 0x40000000"),
        ("poke", (0x3000_0000, 1), r"write of 4 bytes to unmapped memory at address 0x30000000"),
        ("illegal", (), r"illegal instruction de00"),
    ],
)
def test_faults_name_pc_address_and_symbol(arm_fw, fn, args, pattern):
    _, h = arm_fw
    t = time.perf_counter()
    with pytest.raises(FirmwareError, match=pattern) as ei:
        h.call(fn, *args, budget=100_000)
    msg = str(ei.value)
    assert f"in {fn}" in msg and "PC 0x" in msg and f"called {fn}" in msg
    assert time.perf_counter() - t < 5


@pytest.mark.parametrize("traced", [False, True])
def test_infinite_loop_stops_at_budget(arm_fw, traced):
    _, h = arm_fw
    h.reset_heap()
    flag = h.put(np.zeros(1, np.int32))
    t = time.perf_counter()
    tracer = Tracer(core="cortex-m4") if traced else None
    with pytest.raises(FirmwareError, match=r"spin did not return within 20000 instructions"):
        h.call("spin", flag, budget=20_000, trace=tracer)
    assert time.perf_counter() - t < 5
    h.write(flag, np.ones(1, np.int32))
    assert h.call("spin", flag, budget=20_000).value == 1  # harness still usable


def test_misaligned_doubleword_faults_with_alignment_checks(arm_fw):
    res, _ = arm_fw
    h = harness_for(res.elf, "cortex-m4", check_alignment=True)
    buf = h.alloc(16)
    h.write(buf, np.array([5, 0, 9], dtype=np.int32))
    assert h.call("load64", buf).value == 5
    with pytest.raises(FirmwareError, match=r"misaligned 4-byte read at address 0x2"):
        h.call("load64", buf + 1)


def test_unaligned_word_load_is_allowed_on_m4(arm_fw):
    res, _ = arm_fw
    h = harness_for(res.elf, "cortex-m4", check_alignment=True)
    buf = h.put(np.arange(8, dtype=np.uint8))
    assert h.call("deref", buf + 1).value == 0x04030201  # LDR may be unaligned (ARMv7-M)


def test_wrong_harness_for_core(arm_fw):
    res, _ = arm_fw
    with pytest.raises(UserError, match="not emulated by Unicorn"):
        harness_for(res.elf, "cortex-m55")
    with pytest.raises(UserError, match="ELF given to the riscv harness"):
        harness_for(res.elf, "rv32imc")


# ------------------------------------------------------------------------------- RV32
@pytest.fixture(scope="module", params=_compilers("riscv"))
def rv_fw(request, rv_src):
    res = build([rv_src], "xpulpnn", cc=request.param)
    return res, harness_for(res.elf, "xpulpnn")


def _words(rng, n):
    return [int(v) for v in rng.integers(0, 1 << 32, n, dtype=np.uint64)]


EDGE = [0, 0xFFFFFFFF, 0x80808080, 0x7F7F7F7F, 0x807F0180, 0x00010001]


def test_rv_pv_sdotsp_b_matches_xpulp_semantics(rv_fw):
    _, h = rv_fw
    rng = np.random.default_rng(2)
    words = EDGE + _words(rng, 40)
    n0 = h.emulated
    for a, b, acc in zip(words, words[::-1], _words(rng, len(words)), strict=True):
        acc = X.s32(acc)
        assert h.call("sdotsp_b", acc, a, b).signed == X.pv_sdotsp(acc, a, b, 8)
        assert h.call("sdotusp_b", acc, a, b).signed == X.pv_sdotusp(acc, a, b, 8)
        assert h.call("sdotsp_h", acc, a, b).signed == X.pv_sdotsp(acc, a, b, 16)
        assert h.call("sdotsp_n", acc, a, b).signed == X.pv_sdotsp(acc, a, b, 4)
        assert h.call("sdotsp_sc_b", acc, a, b).signed == X.pv_sdotsp(acc, a, X.splat(b, 8), 8)
    assert h.emulated - n0 == 5 * len(words)  # every call trapped and emulated once


def test_rv_scalar_clip_and_kernel(rv_fw):
    _, h = rv_fw
    for v in (-1000, -129, -128, -5, 0, 127, 128, 99999):
        assert h.call("clip8", v).signed == X.p_clip(v, 8)
    rng = np.random.default_rng(3)
    a = rng.integers(-128, 128, 256, dtype=np.int8)
    b = rng.integers(-128, 128, 256, dtype=np.int8)
    h.reset_heap()
    assert h.call("dot_s8", a, b, 256).signed == int(a.astype(np.int64) @ b.astype(np.int64))


def test_rv_hardware_loop(rv_fw):
    _, h = rv_fw
    for n in (1, 2, 5, 100):
        assert h.call("hwloop3", n).signed == 7 * n


def test_rv_fault_names_symbol(rv_fw):
    _, h = rv_fw
    with pytest.raises(FirmwareError, match=r"unmapped memory at address 0x40000000.*in deref"):
        h.call("deref", 0x4000_0000)


def test_rv_unsupported_custom_word_is_reported(tmp_path):
    if not zig_available():
        pytest.skip("ziglang not installed")
    src = tmp_path / "bad_custom.c"
    src.write_text('void weird(void) { __asm__ volatile(".insn r 0x5b, 1, 0x7f, x5, x6, x7"); }\n')
    res = build([src], "rv32imc")
    h = harness_for(res.elf, "rv32imc")
    with pytest.raises(FirmwareError, match=r"unsupported instruction 0x.* in weird"):
        h.call("weird")


# ------------------------------------------------------------------------ M55 in QEMU
MVE_C = r"""
#include <stdint.h>
#include <arm_mve.h>
int32_t dot_s8_mve(const int8_t *a, const int8_t *b, int32_t n) {
    int32_t acc = 0;
    while (n > 0) {
        mve_pred16_t p = vctp8q((uint32_t)n);
        int8x16_t x = vldrbq_z_s8(a, p), y = vldrbq_z_s8(b, p);
        acc = vmladavaq_p_s8(acc, x, y, p);
        a += 16; b += 16; n -= 16;
    }
    return acc;
}
int32_t qadd_s8_mve(int8_t *out, const int8_t *a, const int8_t *b, int32_t n) {
    int32_t blocks = 0;
    while (n > 0) {
        mve_pred16_t p = vctp8q((uint32_t)n);
        vstrbq_p_s8(out, vqaddq_s8(vldrbq_z_s8(a, p), vldrbq_z_s8(b, p)), p);
        a += 16; b += 16; out += 16; n -= 16; blocks++;
    }
    return blocks;
}
int32_t bad_read(int32_t addr) { return *(volatile int32_t *)(uintptr_t)addr; }
"""


@pytest.fixture(scope="module")
def mve_src(tmp_path_factory):
    from mcusim.firmware.qemu import qemu_available

    if not qemu_available():
        pytest.skip(
            "qemu-system-arm not installed: Cortex-M55/MVE firmware checks skipped "
            "(apt-get install qemu-system-arm)"
        )
    p = tmp_path_factory.mktemp("fw") / "mve.c"
    p.write_text(MVE_C)
    return p


@pytest.mark.parametrize("cc", _compilers("arm"))
def test_m55_mve_in_qemu_is_exact(mve_src, cc):
    from mcusim.firmware.qemu import call_function

    rng = np.random.default_rng(5)
    n = 77  # not a multiple of 16: the tail runs predicated
    a = rng.integers(-128, 128, n, dtype=np.int8)
    b = rng.integers(-128, 128, n, dtype=np.int8)
    a[:3], b[:3] = -128, -128
    r = call_function([mve_src], "dot_s8_mve", [a, b, n], cc=cc)
    assert r.signed == int(a.astype(np.int64) @ b.astype(np.int64))
    assert any("cortex_m55+mve" in f or f == "-mcpu=cortex-m55" for f in r.build.flags)
    out = np.zeros(n, np.int8)
    r = call_function([mve_src], "qadd_s8_mve", [out, a, b, n], outputs={0: (np.int8, (n,))}, cc=cc)
    assert r.signed == 5
    np.testing.assert_array_equal(r.outputs[0], np.clip(a.astype(int) + b.astype(int), -128, 127))


def test_m55_fault_in_qemu_is_reported(mve_src):
    from mcusim.firmware.qemu import call_function

    if not zig_available():
        pytest.skip("ziglang not installed")
    with pytest.raises(
        FirmwareError,
        match=r"exited with status 99: mcusim: fault \(PC 0x[0-9a-f]+ in bad_read.*BFAR 0x0c000000",
    ):
        call_function([mve_src], "bad_read", [0x0C00_0000], timeout=30)
