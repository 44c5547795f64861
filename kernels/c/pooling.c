/* AVERAGE_POOL_2D / MAX_POOL_2D int8 (our implementation of the loops of CMSIS-NN's
 * arm_avgpool_s8 and arm_max_pool_s8 on Armv7E-M; kernels/schedules/cmsis_pool.py).
 *
 * Average: per output pixel the in-bounds taps are summed per channel into int32 scratch
 * (the first tap copies, later taps add with QADD), then (sum +- count/2) / count (C
 * division truncates: round half away from zero) and clamp. Padding taps are not counted.
 * Max: the first in-bounds tap is copied to the output, later taps replace smaller bytes,
 * then the whole output is clamped to the activation range. */
#include "mcusim_nn.h"

/* The three per-channel loops of a pixel (ch > 0). On DSP builds inline assembly in the
 * schedule's order (cmsis_pool.py AVG_FIRST, AVG_ACC, AVG_SCALE), so GCC and clang run the
 * same loops; portable C with the same results otherwise. */
MN_INLINE void mn_avg_first(int32_t *q, const int8_t *p, int32_t n)
{
#if MN_DSP
    int32_t t;
    __asm__ volatile("1:\n\t"
                     "ldrsb  %[t], [%[p]], #1\n\t"
                     "subs   %[n], %[n], #1\n\t"
                     "str    %[t], [%[q]], #4\n\t"
                     "bne    1b"
                     : [t] "=&r"(t), [p] "+r"(p), [q] "+r"(q), [n] "+r"(n)
                     :
                     : "cc", "memory");
#else
    for (; n > 0; n--)
        *q++ = *p++;
#endif
}

MN_INLINE void mn_avg_acc(int32_t *q, const int8_t *p, int32_t n)
{
#if MN_DSP
    int32_t t, u;
    __asm__ volatile("1:\n\t"
                     "ldrsb  %[t], [%[p]], #1\n\t"
                     "ldr    %[u], [%[q]]\n\t"
                     "qadd   %[t], %[t], %[u]\n\t" /* saturating sum */
                     "subs   %[n], %[n], #1\n\t"
                     "str    %[t], [%[q]], #4\n\t"
                     "bne    1b"
                     : [t] "=&r"(t), [u] "=&r"(u), [p] "+r"(p), [q] "+r"(q), [n] "+r"(n)
                     :
                     : "cc", "memory");
#else
    for (; n > 0; n--, q++)
        *q = mn_qadd(*p++, *q);
#endif
}

/* (sum +- count/2) / count (truncating: half away from zero), clamp, store; returns dst. */
MN_INLINE int8_t *mn_avg_scale(int8_t *dst, const int32_t *q, int32_t n, int32_t count,
                               int32_t lo, int32_t hi)
{
    const int32_t half = count >> 1;
#if MN_DSP
    int32_t t;
    __asm__ volatile("1:\n\t"
                     "ldr    %[t], [%[q]], #4\n\t"
                     "cmp    %[t], #0\n\t"
                     "ite    gt\n\t"
                     "addgt  %[t], %[t], %[h]\n\t"
                     "suble  %[t], %[t], %[h]\n\t"
                     "sdiv   %[t], %[t], %[c]\n\t"
                     "cmp    %[t], %[lo]\n\t"
                     "it     lt\n\t"
                     "movlt  %[t], %[lo]\n\t"
                     "cmp    %[t], %[hi]\n\t"
                     "it     gt\n\t"
                     "movgt  %[t], %[hi]\n\t"
                     "strb   %[t], [%[d]], #1\n\t"
                     "subs   %[n], %[n], #1\n\t"
                     "bne    1b"
                     : [t] "=&r"(t), [q] "+r"(q), [d] "+r"(dst), [n] "+r"(n)
                     : [h] "r"(half), [c] "r"(count), [lo] "r"(lo), [hi] "r"(hi)
                     : "cc", "memory");
#else
    for (; n > 0; n--) {
        int32_t s = *q++;
        s = s > 0 ? (s + half) / count : (s - half) / count;
        s = mn_max(s, lo);
        s = mn_min(s, hi);
        *dst++ = (int8_t)s;
    }
#endif
    return dst;
}

int32_t mn_avgpool_s8(const mn_pool_args *a)
{
    const mn_pool_args args_copy = *a; /* locals: output stores cannot alias them */
    a = &args_copy;
    const int32_t ch = a->in_c;
    int32_t *buf = a->scratch;
    int8_t *dst = a->output;
    if (!buf || ch <= 0)
        return MN_ARG_ERROR;
    for (int32_t b = 0; b < a->batches; b++) {
        const int8_t *src = a->input + b * a->in_h * a->in_w * ch;
        for (int32_t oy = 0; oy < a->out_h; oy++) {
            const int32_t iy = oy * a->s_h - a->pad_t;
            const int32_t ky0 = mn_max(0, -iy);
            const int32_t ky1 = mn_min(a->f_h, a->in_h - iy);
            for (int32_t ox = 0; ox < a->out_w; ox++) {
                const int32_t ix = ox * a->s_w - a->pad_l;
                const int32_t kx0 = mn_max(0, -ix);
                const int32_t kx1 = mn_min(a->f_w, a->in_w - ix);
                int32_t count = 0;
                for (int32_t ky = ky0; ky < ky1; ky++) {
                    for (int32_t kx = kx0; kx < kx1; kx++) {
                        const int8_t *p = src + ((iy + ky) * a->in_w + ix + kx) * ch;
                        int32_t *q = buf;
                        if (count == 0)
                            mn_avg_first(q, p, ch);
                        else
                            mn_avg_acc(q, p, ch);
                        count++;
                    }
                }
                if (count == 0) {
                    for (int32_t c = 0; c < ch; c++)
                        *dst++ = (int8_t)mn_min(mn_max(0, a->act_min), a->act_max);
                    continue;
                }
                dst = mn_avg_scale(dst, buf, ch, count, a->act_min, a->act_max);
            }
        }
    }
    return MN_OK;
}

MN_INLINE int32_t mn_max_bytes(int32_t cur, int32_t in)
{
    int32_t r = cur;
    for (int32_t sh = 0; sh < 32; sh += 8) {
        int8_t x = (int8_t)(in >> sh), y = (int8_t)(cur >> sh);
        if (x > y)
            r = (int32_t)(((uint32_t)r & ~(0xFFu << sh)) | ((uint32_t)(uint8_t)x << sh));
    }
    return r;
}

int32_t mn_maxpool_s8(const mn_pool_args *a)
{
    const mn_pool_args args_copy = *a; /* locals: output stores cannot alias them */
    a = &args_copy;
    const int32_t ch = a->in_c;
    int8_t *dst = a->output;
    for (int32_t b = 0; b < a->batches; b++) {
        const int8_t *src = a->input + b * a->in_h * a->in_w * ch;
        for (int32_t oy = 0; oy < a->out_h; oy++) {
            const int32_t iy = oy * a->s_h - a->pad_t;
            const int32_t ky0 = mn_max(0, -iy);
            const int32_t ky1 = mn_min(a->f_h, a->in_h - iy);
            for (int32_t ox = 0; ox < a->out_w; ox++) {
                const int32_t ix = ox * a->s_w - a->pad_l;
                const int32_t kx0 = mn_max(0, -ix);
                const int32_t kx1 = mn_min(a->f_w, a->in_w - ix);
                int32_t first = 1;
                for (int32_t ky = ky0; ky < ky1; ky++) {
                    for (int32_t kx = kx0; kx < kx1; kx++) {
                        const int8_t *p = src + ((iy + ky) * a->in_w + ix + kx) * ch;
                        if (first) {
                            mn_memcpy(dst, p, (uint32_t)ch);
                            first = 0;
                            continue;
                        }
                        int8_t *q = dst;
                        int32_t n = ch >> 2;
                        while (n--) {
                            int32_t cur = mn_read_s8x4(q);
                            int32_t in = mn_read_s8x4_ia(&p);
                            mn_write_s8x4_ia(&q, mn_max_bytes(cur, in));
                        }
                        for (n = ch & 3; n > 0; n--, p++, q++)
                            if (*p > *q)
                                *q = *p;
                    }
                }
                if (first) /* no tap in the image: the type's lowest value */
                    mn_memset(dst, -128, (uint32_t)ch);
                dst += ch;
            }
        }
    }
    int8_t *o = a->output;
    for (int32_t n = a->batches * a->out_h * a->out_w * ch; n > 0; n--, o++)
        *o = (int8_t)mn_min(mn_max(*o, a->act_min), a->act_max);
    return MN_OK;
}
