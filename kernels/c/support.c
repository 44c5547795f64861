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
void *memcpy(void *dst, const void *src, unsigned int n)
{
    mn_memcpy(dst, src, n);
    return dst;
}
void *memset(void *dst, int v, unsigned int n)
{
    mn_memset(dst, v, n);
    return dst;
}
#endif

int32_t mn_copy(const mn_copy_args *a)
{
    if (a->nbytes < 0)
        return MN_ARG_ERROR;
    mn_memcpy(a->dst, a->src, (uint32_t)a->nbytes);
    return MN_OK;
}
