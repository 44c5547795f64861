/* Byte copy and fill without libc, and the RESHAPE/SQUEEZE kernel (a copy).
 *
 * Word loop when source and destination are 4-byte aligned (newlib's memcpy does the same
 * for aligned buffers), else bytes. memcpy/memset are also defined because compilers emit
 * calls to them for struct copies and recognised loops even in freestanding builds. */
#include "mcusim_nn.h"

#if defined(__GNUC__) && !defined(__clang__)
#define MN_NO_IDIOM __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define MN_NO_IDIOM
#endif

#if MN_DSP && defined(__arm__)
/* Firmware (Armv7E-M): memcpy as newlib's Armv7-M memcpy executes a copy, the instruction
 * stream kernels/schedules/common.py memcpy_items times (entry, word loop, fix, byte loop),
 * so reshape and every copy through memcpy run the schedule's stream with both compilers.
 * Our own text; the zero-length unaligned case returns before the byte loop. */
#define MN_MEMCPY_TEXT                                                                             \
    "mov    ip, r0\n\t"                                                                            \
    "orr    r3, r0, r1\n\t"                                                                        \
    "lsls   r3, r3, #30\n\t"                                                                       \
    "bne    4f\n\t"                                                                                \
    "subs   r2, r2, #4\n\t"                                                                        \
    "blo    1f\n"                                                                                   \
    "3:\n\t"                                                                                       \
    "ldr    r3, [r1], #4\n\t" /* word loop */                                                     \
    "subs   r2, r2, #4\n\t"                                                                        \
    "str    r3, [ip], #4\n\t"                                                                      \
    "bhs    3b\n"                                                                                   \
    "1:\n\t"                                                                                       \
    "adds   r2, r2, #4\n\t" /* bytes left after the words */                                     \
    "it     eq\n\t"                                                                                \
    "bxeq   lr\n"                                                                                   \
    "2:\n\t"                                                                                       \
    "ldrb   r3, [r1], #1\n\t" /* byte loop */                                                     \
    "subs   r2, r2, #1\n\t"                                                                        \
    "strb   r3, [ip], #1\n\t"                                                                      \
    "bne    2b\n\t"                                                                                \
    "bx     lr\n"                                                                                   \
    "4:\n\t"                                                                                       \
    "cmp    r2, #0\n\t" /* unaligned: bytes unless empty */                                       \
    "bne    2b\n\t"                                                                                \
    "bx     lr"

/* TFLM's reshape as the schedule times it (copy.py CALL / RET around memcpy): the three
 * arguments loaded from the struct, one call, return 0. The sign test of nbytes is the
 * twin's only addition (2 instructions). Aligned to a 32-byte cache line, it and the memcpy
 * after it span two lines of code, as few as 52 bytes can. */
__attribute__((naked, noinline, used, aligned(32))) int32_t mn_copy(const mn_copy_args *a)
{
    __asm__ volatile("push   {r4, lr}\n\t"
                     "ldr    r2, [r0, #8]\n\t" /* nbytes */
                     "ldr    r1, [r0]\n\t"     /* src */
                     "ldr    r0, [r0, #4]\n\t" /* dst */
                     "cmp    r2, #0\n\t"
                     "blt    1f\n\t"
                     "bl     mn_memcpy\n\t"
                     "movs   r0, #0\n\t"
                     "pop    {r4, pc}\n"
                     "1:\n\t"
                     "mov    r0, #-1\n\t" /* MN_ARG_ERROR */
                     "pop    {r4, pc}");
}

__attribute__((naked, noinline, used)) void mn_memcpy(void *dst, const void *src, uint32_t n)
{
    __asm__ volatile(MN_MEMCPY_TEXT);
}
#else

MN_NO_IDIOM void mn_memcpy(void *dst, const void *src, uint32_t n)
{
    uint8_t *d = (uint8_t *)dst;
    const uint8_t *s = (const uint8_t *)src;
    if ((((uintptr_t)d | (uintptr_t)s) & 3u) == 0) {
        uint32_t *dw = (uint32_t *)d;
        const uint32_t *sw = (const uint32_t *)s;
        uint32_t words = n >> 2;
        while (words--)
            *dw++ = *sw++;
        d = (uint8_t *)dw;
        s = (const uint8_t *)sw;
        n &= 3u;
    }
    while (n--)
        *d++ = *s++;
}
#endif

MN_NO_IDIOM void mn_memset(void *dst, int32_t v, uint32_t n)
{
    uint8_t *d = (uint8_t *)dst;
    if (((uintptr_t)d & 3u) == 0) {
        uint32_t w = (uint8_t)v * 0x01010101u;
        uint32_t *dw = (uint32_t *)d;
        uint32_t words = n >> 2;
        while (words--)
            *dw++ = w;
        d = (uint8_t *)dw;
        n &= 3u;
    }
    while (n--)
        *d++ = (uint8_t)v;
}

#if defined(__arm__) || defined(__riscv)
/* Only on the firmware targets: a host build must keep the C library's own. */
void *memcpy(void *dst, const void *src, unsigned int n);
void *memset(void *dst, int v, unsigned int n);
#if MN_DSP
__attribute__((naked, noinline, used)) void *memcpy(void *dst, const void *src, unsigned int n)
{
    __asm__ volatile(MN_MEMCPY_TEXT); /* returns dst: r0 is left unchanged */
}
#else
void *memcpy(void *dst, const void *src, unsigned int n)
{
    mn_memcpy(dst, src, n);
    return dst;
}
#endif
void *memset(void *dst, int v, unsigned int n)
{
    mn_memset(dst, v, n);
    return dst;
}
#endif

#if !(MN_DSP && defined(__arm__))
int32_t mn_copy(const mn_copy_args *a)
{
    if (a->nbytes < 0)
        return MN_ARG_ERROR;
    mn_memcpy(a->dst, a->src, (uint32_t)a->nbytes);
    return MN_OK;
}
#endif
