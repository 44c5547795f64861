"""Shared pieces of the Armv6-M (Cortex-M0/M0+) schedules: CMSIS-NN's portable C compiled
by GCC 12.2 -O2 -mcpu=cortex-m0plus, and the libgcc/newlib routines it calls.

Armv6-M has no SMULL, so ``arm_nn_requantize``'s 64-bit product ``(int64_t)x * M`` is a call
to libgcc's ``__aeabi_lmul`` (``__muldi3`` built for thumb/v6-m: four 16x16 MULS for the low
64 bits plus two cross products, 44 instructions, 58 cycles on the M0+). No SDIV either:
divisions call ``__aeabi_idiv`` (shift-and-subtract, one compare step per quotient bit).
``arm_nn_read_s8x4`` (a 4-byte ``memcpy``) becomes a call to ``memcpy`` because unaligned
word loads fault on Armv6-M.

The instruction text is our own rendering of that compiler output: GCC's instruction mix
per loop (the ``movs rX, #0`` + register-offset LDRSB pairs, since LDRSB has no immediate
form; spills of accumulators to the stack once the 8 low registers are used up; MOV to and
from high registers), with register names chosen to fit the shared Thumb parser (two-operand
``add rd, rm`` for the high-register ADD). Every data-dependent branch is written as the
common case (right shift, no rounding increment, value inside the activation range).
"""

from __future__ import annotations

from functools import cache

from mcusim.isa.schedule import Block, Loop, Rewind

# ---------------------------------------------------------------- libgcc __aeabi_lmul
# 64 x 64 -> 64 multiply as libgcc's thumb/v6-m __muldi3 executes it (arguments r0:r1,
# r2:r3; result r0:r1); the carry-out of the middle sum is rare: its branch is taken.
LMUL_TEXT = """
push   {r4, r5, r6, r7, lr}
mov    lr, r9
mov    r9, r3                ; b_hi
lsrs   r3, r0, #16
mov    ip, r3                ; a_lo >> 16
lsls   r3, r2, #16
mov    r7, r8
lsrs   r3, r3, #16           ; b_lo & 0xffff
movs   r5, r3
movs   r6, r1                ; a_hi
mov    r1, ip
lsls   r4, r0, #16
lsrs   r4, r4, #16           ; a_lo & 0xffff
push   {r7, lr}
movs   r7, r0
lsrs   r0, r2, #16           ; b_lo >> 16
muls   r3, r1
muls   r5, r4
muls   r1, r0
muls   r0, r4
lsrs   r4, r5, #16
adds   r0, r0, r3
adds   r4, r4, r0            ; middle partial sum
mov    ip, r1
cmp    r3, r4
bls    .Lno_carry  {taken}
mov    r1, r9
muls   r1, r7                ; b_hi * a_lo
muls   r6, r2                ; a_hi * b_lo
lsrs   r3, r4, #16
lsls   r5, r5, #16
lsrs   r5, r5, #16
adds   r1, r1, r6
add    r3, ip
lsls   r4, r4, #16
adds   r0, r4, r5
adds   r1, r1, r3
pop    {r6, r7}
mov    r9, r7
mov    r8, r6
pop    {r4, r5, r6, r7, pc}
"""

# ------------------------------------------------------- arm_nn_requantize (C, inline)
# x in r0. Left shift max(shift, 0), sign extension of both factors, the lmul call.
_REQ_SHIFT = """
mov    r8, r3
mvns   r3, r3
mov    r2, r8
asrs   r3, r3, #31
ands   r3, r2                ; max(shift, 0)
lsls   r0, r0, r3
"""
REQ_PRE_PC = (
    "ldr    r3, [r5]      {qparams}   ; shift[ch]\n"
    + _REQ_SHIFT
    + "ldr    r2, [r6]      {qmult}     ; multiplier[ch]\n"
    + "asrs   r1, r0, #31\nasrs   r3, r2, #31\nbl     __aeabi_lmul\n"
)
REQ_PRE_PT = (
    "ldr    r3, [sp, #48]             ; shift (per tensor)\n"
    + _REQ_SHIFT
    + "ldr    r2, [sp, #52]             ; multiplier (per tensor)\n"
    + "asrs   r1, r0, #31\nasrs   r3, r2, #31\nbl     __aeabi_lmul\n"
)
# + 2^30 in 64 bits, bits [62:31], then arm_nn_divide_by_power_of_two (right shift path).
REQ_POST = """
movs   r2, #128
movs   r3, #0
lsls   r2, r2, #23           ; 1 << 30
adds   r0, r0, r2
adcs   r1, r1, r3
mov    r2, r8
lsls   r3, r1, #1
lsrs   r0, r0, #31
orrs   r3, r0                ; (x * M + 2^30) >> 31
cmp    r2, #0
bgt    .Lleft_only
b      .Lrdbpot
movs   r1, #1
rsbs   r2, r2, #0
lsls   r1, r1, r2
subs   r1, r1, #1            ; remainder mask
movs   r0, r1
ands   r0, r3                ; remainder
asrs   r3, r3, r2            ; quotient
asrs   r2, r1, #1
lsrs   r1, r3, #31
adds   r2, r2, r1            ; threshold (+1 when negative)
cmp    r0, r2
bgt    .Lround_up
b      .Lclamp
"""
# + output offset, clamp to [act_min, act_max] (inside: both branches taken), store.
CLAMP_STORE = """
ldr    r2, [sp, #56]             ; output offset
mov    ip, r2
ldr    r2, [sp, #60]             ; act_min
add    r3, ip
cmp    r3, r2
bge    .Lmin_ok   {taken}
ldr    r2, [sp, #64]             ; act_max
cmp    r3, r2
ble    .Lmax_ok   {taken}
ldr    r2, [sp, #28]             ; output pointer
strb   r3, [r2]      {output}
"""


@cache
def lmul_block() -> Block:
    return Block.asm(LMUL_TEXT, "__aeabi_lmul", shared=True)


@cache
def _req_blocks(per_channel: bool, src: str, name: str):
    pre = (f"mov    r0, {src}\n" if src != "r0" else "") + (
        REQ_PRE_PC if per_channel else REQ_PRE_PT
    )
    return (
        Block.asm(pre, f"{name}_requant_pre"),
        Block.asm(REQ_POST + CLAMP_STORE, f"{name}_requant_post"),
    )


def requant_out_items(per_channel: bool = True, src: str = "r0", name: str = "out") -> list:
    """One output: arm_nn_requantize (with the __aeabi_lmul call), offset, clamp, store."""
    pre, post = _req_blocks(per_channel, src, name)
    return [pre, lmul_block(), post]


@cache
def _mul_sat_blocks(name: str):
    """arm_nn_doubling_high_mult (saturating, gemmlowp rounding) in C: sign test for the
    nudge, lmul, truncating 64-bit divide by 2^31 (shift + negative fix-up), INT32_MIN
    overflow test."""
    pre = Block.asm(
        """
        movs   r4, r0
        eors   r4, r1
        asrs   r1, r0, #31
        asrs   r3, r2, #31
        bl     __aeabi_lmul
        """,
        f"{name}_mulsat_pre",
    )
    post = Block.asm(
        """
        movs   r2, #128
        lsls   r2, r2, #23
        cmp    r4, #0
        bge    .Lpos_nudge  {taken}
        adds   r0, r0, r2
        movs   r3, #0
        adcs   r1, r1, r3
        cmp    r1, #0
        bge    .Lno_fix  {taken}
        lsls   r3, r1, #1
        lsrs   r0, r0, #31
        orrs   r0, r3
        ldr    r3, [sp, #4]
        cmp    r0, r3
        bne    .Lno_sat  {taken}
        """,
        f"{name}_mulsat_post",
    )
    return pre, post


def mul_sat_items(name: str = "sm") -> list:
    pre, post = _mul_sat_blocks(name)
    return [pre, lmul_block(), post]


# ----------------------------------------------------------------- libgcc __aeabi_idiv
# Signed divide of a small positive dividend (< 256 x divisor): sign test, three range
# tests, then 8 shift-and-subtract quotient steps (half of them subtracting), return.
@cache
def idiv_block() -> Block:
    steps = []
    for k in range(7, -1, -1):
        steps.append(f"lsrs r3, r0, #{k}\ncmp r3, r1\n" if k else "cmp r0, r1\n")
        if k % 2:
            steps.append(f"bcc .Lq{k}\nlsls r3, r1, #{k}\nsubs r0, r0, r3\n")
        else:
            steps.append(f"bcc .Lq{k} {{taken}}\n")
        steps.append("adcs r2, r2\n")
    text = (
        """
        mov    r3, r0
        orrs   r3, r1
        bmi    .Lsigned
        movs   r2, #0
        lsrs   r3, r0, #1
        cmp    r3, r1
        bcc    .Lsmall
        lsrs   r3, r0, #4
        cmp    r3, r1
        bcc    .Lsmall4
        lsrs   r3, r0, #8
        cmp    r3, r1
        bcc    .Lbyte  {taken}
        """
        + "".join(steps)
        + "movs r0, r2\nbx lr\n"
    )
    return Block.asm(text, "__aeabi_idiv", shared=True)


# ------------------------------------------------ newlib memcpy / memset (generic C)
# newlib's C memcpy (the one Armv6-M builds use): 16-byte blocks of word copies when both
# pointers are word aligned and n >= 16, then words, then bytes; otherwise bytes.
@cache
def _memcpy_blocks(src: str, dst: str):
    b = Block.asm
    head = "push {r4, r5, lr}\ncmp r2, #15\n"
    return {
        "small": b(head + "bls .Lmc_bytes {taken}\n", "memcpy_entry_small", True),
        "aligned": b(
            head + "bls .Lmc_bytes\nmovs r3, r0\norrs r3, r1\nlsls r3, r3, #30\nbne .Lmc_bytes\n",
            "memcpy_entry_aligned",
            True,
        ),
        "unaligned": b(
            head + "bls .Lmc_bytes\nmovs r3, r0\norrs r3, r1\nlsls r3, r3, #30\n"
            "bne .Lmc_bytes {taken}\n",
            "memcpy_entry_unaligned",
            True,
        ),
        "block16": b(
            "".join(
                f"ldr r3, [r1, #{o}] {{{src}}}\nstr r3, [r0, #{o}] {{{dst}}}\n"
                for o in (0, 4, 8, 12)
            )
            + "adds r1, #16\nadds r0, #16\nsubs r2, #16\ncmp r2, #15\nbhi .Lmc_block16\n",
            f"memcpy_block16_{src}_{dst}",
            True,
        ),
        "word": b(
            f"ldr r3, [r1] {{{src}}}\nadds r1, #4\nstr r3, [r0] {{{dst}}}\nadds r0, #4\n"
            "subs r2, #4\ncmp r2, #3\nbhi .Lmc_word\n",
            f"memcpy_word_{src}_{dst}",
            True,
        ),
        "byte_setup": b("movs r4, #0\ncmp r2, #0\nbeq .Lmc_done\n", "memcpy_byte_setup", True),
        "byte": b(
            f"ldrb r3, [r1, r4] {{{src}}}\nstrb r3, [r0, r4] {{{dst}}}\nadds r4, #1\n"
            "cmp r2, r4\nbne .Lmc_byte\n",
            f"memcpy_byte_{src}_{dst}",
            True,
        ),
        "ret": b("pop {r4, r5, pc}\n", "memcpy_ret", True),
    }


def memcpy_items(n: int, aligned: bool, src: str, dst: str) -> list:
    """One ``bl memcpy`` call (the BL itself belongs to the caller's block)."""
    k = _memcpy_blocks(src, dst)
    # the byte loop indexes both pointers with its counter ([r1, r4], [r0, r4]): the
    # rule walks them a byte per iteration and leaves them at the copy's end
    by = {src: Rewind(1), dst: Rewind(1)}
    if n < 16:
        return [
            k["small"],
            k["byte_setup"],
            Loop("memcpy_bytes", n, [k["byte"]], addr=by),
            k["ret"],
        ]
    if not aligned:
        return [
            k["unaligned"],
            k["byte_setup"],
            Loop("memcpy_bytes", n, [k["byte"]], addr=by),
            k["ret"],
        ]
    return [
        k["aligned"],
        Loop("memcpy_block16", n // 16, [k["block16"]]),
        Loop("memcpy_words", (n % 16) // 4, [k["word"]]),
        k["byte_setup"],
        Loop("memcpy_bytes", n % 4, [k["byte"]], addr=by),
        k["ret"],
    ]


@cache
def _memset_blocks(dst: str):
    b = Block.asm
    head = "push {r4, r5, lr}\nmovs r3, r0\nlsls r4, r0, #30\n"
    return {
        "unaligned": b(head + "bne .Lms_bytes {taken}\n", "memset_entry_unaligned", True),
        "aligned": b(
            head + "bne .Lms_bytes\ncmp r2, #3\nbls .Lms_bytes\nuxtb r1, r1\nlsls r4, r1, #8\n"
            "orrs r4, r1\nlsls r5, r4, #16\norrs r4, r5\n",
            "memset_entry_aligned",
            True,
        ),
        "block16": b(
            "".join(f"str r4, [r3, #{o}] {{{dst}}}\n" for o in (0, 4, 8, 12))
            + "adds r3, #16\nsubs r2, #16\ncmp r2, #15\nbhi .Lms_block16\n",
            f"memset_block16_{dst}",
            True,
        ),
        "word": b(
            f"str r4, [r3] {{{dst}}}\nadds r3, #4\nsubs r2, #4\ncmp r2, #3\nbhi .Lms_word\n",
            f"memset_word_{dst}",
            True,
        ),
        "byte": b(
            f"strb r1, [r3] {{{dst}}}\nadds r3, #1\nsubs r2, #1\nbne .Lms_byte\n",
            f"memset_byte_{dst}",
            True,
        ),
        "ret": b("pop {r4, r5, pc}\n", "memset_ret", True),
    }


def memset_items(n: int, aligned: bool, dst: str) -> list:
    k = _memset_blocks(dst)
    if not aligned or n < 4:
        return [k["unaligned"], Loop("memset_bytes", n, [k["byte"]]), k["ret"]]
    return [
        k["aligned"],
        Loop("memset_block16", n // 16, [k["block16"]]),
        Loop("memset_words", (n % 16) // 4, [k["word"]]),
        Loop("memset_bytes", n % 4, [k["byte"]]),
        k["ret"],
    ]


# ---------------------------------------------------------- function entry / exit
# GCC saves r4-r7 and the high registers it uses (r8-r11 via MOV to low registers) and
# reserves a frame; the exit restores them the same way.
ENTRY_TEXT = """
push   {r4, r5, r6, r7, lr}
mov    r7, fp
mov    r6, sl
mov    r5, r9
mov    r4, r8
push   {r4, r5, r6, r7}
sub    sp, #76
ldr    r4, [sp, #112]            ; stack arguments
ldr    r5, [sp, #116]
str    r0, [sp, #8]
str    r1, [sp, #12]
"""
EXIT_TEXT = """
movs   r0, #0
add    sp, #76
pop    {r4, r5, r6, r7}
mov    r8, r4
mov    r9, r5
mov    sl, r6
mov    fp, r7
pop    {r4, r5, r6, r7, pc}
"""


@cache
def entry_block(name: str) -> Block:
    return Block.asm("bl     " + name + "\n" + ENTRY_TEXT, f"{name}_entry")


@cache
def exit_block(name: str) -> Block:
    return Block.asm(EXIT_TEXT, f"{name}_exit")
