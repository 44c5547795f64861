/* mcusim: the C library functions compilers call on their own (struct copies, zeroing
   loops) for GCC builds, which link no libc (toolchains.md §2). zig builds link zig's
   compiler_rt instead, which has them. Weak, so a kernel may bring its own. Word copies
   when both pointers are word aligned, bytes otherwise. */
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__) && !defined(__clang__)
#define MCUSIM_RT __attribute__((weak, optimize("no-tree-loop-distribute-patterns")))
#else
#define MCUSIM_RT __attribute__((weak))
#endif

MCUSIM_RT void *memcpy(void *dst, const void *src, size_t n) {
    uint8_t *d = (uint8_t *)dst;
    const uint8_t *s = (const uint8_t *)src;
    if ((((uintptr_t)d | (uintptr_t)s) & 3u) == 0) {
        for (; n >= 4; n -= 4, d += 4, s += 4) *(uint32_t *)d = *(const uint32_t *)s;
    }
    while (n--) *d++ = *s++;
    return dst;
}

MCUSIM_RT void *memmove(void *dst, const void *src, size_t n) {
    uint8_t *d = (uint8_t *)dst;
    const uint8_t *s = (const uint8_t *)src;
    if (d <= s || d >= s + n) return memcpy(dst, src, n);
    while (n--) d[n] = s[n];
    return dst;
}

MCUSIM_RT void *memset(void *dst, int c, size_t n) {
    uint8_t *d = (uint8_t *)dst;
    uint32_t w = (uint8_t)c * 0x01010101u;
    if (((uintptr_t)d & 3u) == 0) {
        for (; n >= 4; n -= 4, d += 4) *(uint32_t *)d = w;
    }
    while (n--) *d++ = (uint8_t)c;
    return dst;
}

MCUSIM_RT int memcmp(const void *a, const void *b, size_t n) {
    const uint8_t *x = (const uint8_t *)a, *y = (const uint8_t *)b;
    for (; n; n--, x++, y++)
        if (*x != *y) return *x - *y;
    return 0;
}
