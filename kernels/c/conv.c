/* CONV_2D int8, DSP structure (our implementation of the algorithms CMSIS-NN's
 * arm_convolve_wrapper_s8 dispatches to on Armv7E-M, as kernels/schedules/cmsis_conv.py and
 * matmul.py time them):
 *
 * - 1x1, no padding, no dilation, one group: an int8 x int8 matrix product over pixels
 *   (mn_mat_mult_nt_t_s8: 2 pixels x 2 output channels, 16/4/1 reduction columns per
 *   step, the input offset folded in as offset * sum(weights)); stride 1 in one call,
 *   otherwise one call per output row with a strided input.
 * - otherwise per output pixel an int8 im2col column (copy per in-bounds tap, fill with
 *   the input zero point for padding taps), widened to int16 with the input offset in the
 *   SXTB16 lane order (bytes 0,2 then 1,3 of each word); every two columns the 2x2 kernel
 *   (mn_mat_mult_kernel_s8_s16: 2 output channels x 2 columns, SMLAD on 2 weights per
 *   instruction); an odd last column runs a single-column loop.
 */
#include "mcusim_nn.h"

#if !MN_MVE /* the int16 im2col path (DSP); Helium builds use int8 columns */
/* ------------------------------------------------------------ int8 -> int16 + offset */
#if !MN_DSP
__attribute__((noinline)) static void
mn_s8_to_s16_reordered(const int8_t *src, int16_t *dst, int32_t n, int32_t offset)
{
    const int32_t off2 = mn_pair16(offset);
    int32_t quads = n >> 2;
    while (quads--) {
        int32_t w = mn_read_s8x4_ia(&src);
        int32_t even = mn_sxtab16(off2, w);                     /* bytes 0, 2 */
        int32_t odd = mn_sxtab16(off2, (int32_t)mn_ror((uint32_t)w, 8)); /* bytes 1, 3 */
        mn_write_s16x2_ia(&dst, even);
        mn_write_s16x2_ia(&dst, odd);
    }
    n &= 3;
    while (n--)
        *dst++ = (int16_t)(*src++ + offset);
}
#endif

#if MN_DSP
/* The im2col helpers as the schedule times them (kernels/schedules/common.py memcpy_items /
 * memset_items: newlib's memcpy / memset as a short copy runs them; cmsis_conv.py S16_*:
 * arm_s8_to_s16_unordered_with_offset), written as whole functions so both compilers run
 * the same code. AAPCS arguments; n >= 1. */

/* dst <- src, n bytes: words when both are word aligned, then the bytes left. */
__attribute__((naked, noinline, used)) static void mn_k_copy(int8_t *dst, const int8_t *src,
                                                       uint32_t n)
{
    __asm__ volatile("mov    ip, r0\n\t"
                     "orr    r3, r0, r1\n\t"
                     "lsls   r3, r3, #30\n\t"
                     "bne    2f\n\t"
                     "subs   r2, r2, #4\n\t"
                     "blo    1f\n"
                     "3:\n\t"
                     "ldr    r3, [r1], #4\n\t"
                     "subs   r2, r2, #4\n\t"
                     "str    r3, [ip], #4\n\t"
                     "bhs    3b\n"
                     "1:\n\t"
                     "adds   r2, r2, #4\n\t"
                     "it     eq\n\t"
                     "bxeq   lr\n"
                     "2:\n\t"
                     "ldrb   r3, [r1], #1\n\t"
                     "subs   r2, r2, #1\n\t"
                     "strb   r3, [ip], #1\n\t"
                     "bne    2b\n\t"
                     "bx     lr");
}

/* dst <- n bytes of value v (0..255). */
__attribute__((naked, noinline, used)) static void mn_k_fill(int8_t *dst, uint32_t v, uint32_t n)
{
    __asm__ volatile("mov    ip, r0\n\t"
                     "lsls   r3, r0, #30\n\t"
                     "bne    2f\n\t"
                     "orr    r1, r1, r1, lsl #8\n\t"
                     "orr    r1, r1, r1, lsl #16\n\t"
                     "subs   r2, r2, #4\n\t"
                     "blo    1f\n"
                     "3:\n\t"
                     "str    r1, [ip], #4\n\t"
                     "subs   r2, r2, #4\n\t"
                     "bhs    3b\n"
                     "1:\n\t"
                     "adds   r2, r2, #4\n\t"
                     "it     eq\n\t"
                     "bxeq   lr\n"
                     "2:\n\t"
                     "strb   r1, [ip], #1\n\t"
                     "subs   r2, r2, #1\n\t"
                     "bne    2b\n\t"
                     "bx     lr");
}

/* int8 -> int16 + offset, 4 values per step in SXTB16 lane order (bytes 0, 2 then 1, 3),
 * then one value at a time. */
__attribute__((naked, noinline)) static void mn_k_s8_to_s16(const int8_t *src, int16_t *dst,
                                                            int32_t n, int32_t offset)
{
    __asm__ volatile("push   {r4, r5, lr}\n\t"
                     "pkhbt  r3, r3, r3, lsl #16\n\t" /* the offset in both lanes */
                     "asrs   r4, r2, #2\n\t"
                     "beq    2f\n"
                     "1:\n\t"
                     "ldr    r5, [r0], #4\n\t"
                     "sxtab16 ip, r3, r5\n\t"
                     "ror    r5, r5, #8\n\t"
                     "sxtab16 r5, r3, r5\n\t"
                     "str    ip, [r1], #4\n\t"
                     "str    r5, [r1], #4\n\t"
                     "subs   r4, r4, #1\n\t"
                     "bne    1b\n"
                     "2:\n\t"
                     "ands   r2, r2, #3\n\t"
                     "beq    4f\n"
                     "3:\n\t"
                     "ldrsb  r5, [r0], #1\n\t"
                     "add    r5, r5, r3\n\t"
                     "strh   r5, [r1], #2\n\t"
                     "subs   r2, r2, #1\n\t"
                     "bne    3b\n"
                     "4:\n\t"
                     "pop    {r4, r5, pc}");
}

/* One pixel's int8 im2col column, the tap loop of arm_convolve_s8 in the schedule's blocks
 * (cmsis_conv.py TAP_TEST / TAP_COPY_ARGS / TAP_PAD_ARGS / TAP_END): the loop state lives in
 * memory (*p, GCC's stack slots there) and is reloaded per tap, in-bounds taps are copied by
 * mn_k_copy, padding taps filled with the input zero point by mn_k_fill. */
typedef struct {
    int32_t base_y, base_x, d_h, d_w;           /*  0,  4,  8, 12 */
    int32_t in_h, in_w, in_c;                   /* 16, 20, 24 */
    const int8_t *input;                        /* 28: the group's first channel */
    int8_t *dst;                                /* 32: running column pointer */
    int32_t kernel_ch, k_w, k_h;                /* 36, 40, 44 */
    uint32_t pad;                               /* 48: input zero point (byte) */
    int32_t ky, kx;                             /* 52, 56: loop counters */
} mn_k_pix;

__attribute__((naked, noinline, used)) static void mn_k_im2col_pixel(mn_k_pix *p)
{
    __asm__ volatile("push   {r4, r5, r6, r7, r8, lr}\n\t"
                     "mov    r8, r0\n\t"
                     "ldr    r6, [r8, #16]\n\t" /* in_h */
                     "ldr    r7, [r8, #20]\n\t" /* in_w */
                     "movs   r3, #0\n\t"
                     "str    r3, [r8, #52]\n"
                     "1:\n\t" /* kernel row */
                     "movs   r3, #0\n\t"
                     "str    r3, [r8, #56]\n"
                     "2:\n\t" /* tap: y = base_y + d_h * ky, x = base_x + d_w * kx */
                     "ldr    r3, [r8, #52]\n\t"
                     "ldr    r2, [r8, #8]\n\t"
                     "ldr    r1, [r8, #0]\n\t"
                     "mla    r4, r2, r3, r1\n\t"
                     "ldr    r3, [r8, #56]\n\t"
                     "ldr    r2, [r8, #12]\n\t"
                     "ldr    r1, [r8, #4]\n\t"
                     "mla    r5, r2, r3, r1\n\t"
                     "cmp    r4, #0\n\t"
                     "blt    4f\n\t"
                     "cmp    r4, r6\n\t"
                     "bge    4f\n\t"
                     "cmp    r5, #0\n\t"
                     "blt    4f\n\t"
                     "cmp    r5, r7\n\t"
                     "bge    4f\n\t"
                     "mla    r1, r4, r7, r5\n\t" /* in bounds: copy kernel_ch bytes */
                     "ldr    r3, [r8, #24]\n\t"
                     "ldr    r2, [r8, #28]\n\t"
                     "mla    r1, r1, r3, r2\n\t"
                     "ldr    r0, [r8, #32]\n\t"
                     "ldr    r2, [r8, #36]\n\t"
                     "bl     mn_k_copy\n"
                     "3:\n\t" /* dst += kernel_ch; next tap, next kernel row */
                     "ldr    r3, [r8, #32]\n\t"
                     "ldr    r2, [r8, #36]\n\t"
                     "add    r3, r3, r2\n\t"
                     "str    r3, [r8, #32]\n\t"
                     "ldr    r3, [r8, #56]\n\t"
                     "adds   r3, r3, #1\n\t"
                     "str    r3, [r8, #56]\n\t"
                     "ldr    r2, [r8, #40]\n\t"
                     "cmp    r3, r2\n\t"
                     "blt    2b\n\t"
                     "ldr    r3, [r8, #52]\n\t"
                     "adds   r3, r3, #1\n\t"
                     "str    r3, [r8, #52]\n\t"
                     "ldr    r2, [r8, #44]\n\t"
                     "cmp    r3, r2\n\t"
                     "blt    1b\n\t"
                     "pop    {r4, r5, r6, r7, r8, pc}\n"
                     "4:\n\t" /* padding tap */
                     "ldr    r1, [r8, #48]\n\t"
                     "ldr    r0, [r8, #32]\n\t"
                     "ldr    r2, [r8, #36]\n\t"
                     "bl     mn_k_fill\n\t"
                     "b      3b");
}
#else
#define mn_k_copy(d, s, n) mn_memcpy(d, s, n)
#define mn_k_fill(d, v, n) mn_memset(d, (int32_t)(v), n)
#define mn_k_s8_to_s16 mn_s8_to_s16_reordered
#endif

/* 4 weights -> (w0, w2) and (w1, w3) as int16 pairs: the column's lane order. The ROR is
 * C code, as in CMSIS-NN's read_and_pad_reordered built with GCC. */
MN_INLINE void mn_weights_reordered(const int8_t **p, int32_t *even, int32_t *odd)
{
    int32_t w = mn_read_s8x4_ia(p);
    *odd = mn_sxtb16((int32_t)mn_ror((uint32_t)w, 8));
    *even = mn_sxtb16(w);
}

#if MN_DSP
/* The whole 2x2 kernel (arm_nn_mat_mult_kernel_s8_s16 as kernels/schedules/matmul.py times
 * it: S8S16_ENTRY, per channel pair ROW_SETUP, INNER, ROW_MID, LEFT, four gcc_requant_post
 * outputs, ROW_END; the odd channel; EXIT) as one function of our own, so neither compiler
 * adds register moves or spills around the loops. r0: weights, r1: an mn_k_mm (copied to
 * the frame at sp + 4; the second weight row's pointer lives at [sp], as in the schedule).
 * Registers: r0 weight row 0, r2/r3 the two columns, r10/r11 channel n, r6/r7 channel n+1
 * (columns 0/1), ip the step count. */
typedef struct {
    const int16_t *b0, *b1;               /* frame  4,  8: the two int16 columns */
    int32_t cols4, left, num_cols, rows;  /* 12, 16, 20, 24: num_cols >> 2, & 3; out_ch >> 1 */
    const int32_t *shift, *mult, *bias;   /* 28, 32, 36: running per-channel pointers */
    int8_t *out;                          /* 40: column 0's output; column 1 out_row later */
    int32_t out_row, out_offset, act_min; /* 44, 48, 52 */
    int32_t act_max, odd;                 /* 56, 60: out_ch & 1 */
} mn_k_mm;

/* One output (gcc_requant_post): shift/multiplier loaded (LDS: post-increment to the next
 * channel), acc << max(shift, 0), high half of the doubled 64-bit product rounded, the
 * rounding divide for shift <= 0, + output offset, clamp (parameters reloaded from the
 * frame), then STORE. Result in r2; r1, r3, r4, r8 scratch; r5/r9 the shift/mult pointers,
 * lr the output pointer, ip out_row. */
#define MN_MM_RQ(ACC, LDS, STORE)                                                              \
    "ldr    r1, [r5]" LDS "\n\t"                                                               \
    "ldr    r3, [r9]" LDS "\n\t"                                                               \
    "bic    r4, r1, r1, asr #31\n\t"                                                           \
    "lsl    r4, " ACC ", r4\n\t"                                                               \
    "movs   r8, #0\n\t"                                                                        \
    "mov    r2, #0x40000000\n\t"                                                               \
    "smlal  r2, r8, r4, r3\n\t"                                                                \
    "lsrs   r2, r2, #31\n\t"                                                                   \
    "cmp    r1, #0\n\t"                                                                        \
    "orr    r2, r2, r8, lsl #1\n\t"                                                            \
    "bgt    5f\n\t"                                                                            \
    "rsbs   r1, r1, #0\n\t"                                                                    \
    "movs   r3, #1\n\t"                                                                        \
    "lsls   r3, r3, r1\n\t"                                                                    \
    "subs   r3, r3, #1\n\t"                                                                    \
    "and    r4, r2, r3\n\t"                                                                    \
    "asrs   r2, r2, r1\n\t"                                                                    \
    "asr    r3, r3, #1\n\t"                                                                    \
    "it     mi\n\t"                                                                            \
    "addmi  r3, r3, #1\n\t"                                                                    \
    "cmp    r4, r3\n\t"                                                                        \
    "it     gt\n\t"                                                                            \
    "addgt  r2, r2, #1\n"                                                                      \
    "5:\n\t"                                                                                   \
    "ldr    r3, [sp, #48]\n\t"                                                                 \
    "add    r2, r2, r3\n\t"                                                                    \
    "ldr    r3, [sp, #52]\n\t"                                                                 \
    "cmp    r2, r3\n\t"                                                                        \
    "it     lt\n\t"                                                                            \
    "movlt  r2, r3\n\t"                                                                        \
    "ldr    r3, [sp, #56]\n\t"                                                                 \
    "cmp    r2, r3\n\t"                                                                        \
    "it     ge\n\t"                                                                            \
    "movge  r2, r3\n\t" STORE

__attribute__((naked, noinline, used)) static void mn_k_mat_mult(const int8_t *wts,
                                                                 const mn_k_mm *c)
{
    __asm__ volatile(
        "push   {r4, r5, r6, r7, r8, r9, r10, r11, lr}\n\t"
        "sub    sp, sp, #64\n\t"
        "ldm    r1!, {r2, r3, r4, r5, r6, r7, r8, r9}\n\t" /* the mn_k_mm to the frame */
        "add    ip, sp, #4\n\t"
        "stm    ip!, {r2, r3, r4, r5, r6, r7, r8, r9}\n\t"
        "cmp    r7, #0\n\t" /* rows (flags kept by the copy) */
        "ldm    r1, {r2, r3, r4, r5, r6, r7, r8}\n\t"
        "stm    ip, {r2, r3, r4, r5, r6, r7, r8}\n\t"
        "beq    8f\n"
        "1:\n\t" /* channel pair: columns, second row, bias */
        "ldr    r2, [sp, #4]\n\t"
        "ldr    r3, [sp, #8]\n\t"
        "ldr    ip, [sp, #20]\n\t"
        "add    r1, r0, ip\n\t"
        "str    r1, [sp]\n\t"
        "ldr    r5, [sp, #36]\n\t"
        "cmp    r5, #0\n\t"
        "beq    10f\n\t"
        "ldr    r10, [r5], #4\n\t"
        "mov    r11, r10\n\t"
        "ldr    r6, [r5], #4\n\t"
        "mov    r7, r6\n\t"
        "str    r5, [sp, #36]\n"
        "3:\n\t"
        "ldr    ip, [sp, #12]\n\t"
        "cmp    ip, #0\n\t"
        "beq    4f\n"
        "6:\n\t" /* 4 reduction columns x 2 channels x 2 columns (S8S16_INNER) */
        "ldr    r4, [sp]\n\t"
        "ldr    r8, [r0], #4\n\t"
        "ldr    r1, [r4], #4\n\t"
        "str    r4, [sp]\n\t"
        "ror    r5, r8, #8\n\t"
        "ror    r4, r1, #8\n\t"
        "ldr    r9, [r2]\n\t"
        "ldr    lr, [r3]\n\t"
        "sxtb16 r8, r8\n\t"
        "sxtb16 r5, r5\n\t"
        "sxtb16 r1, r1\n\t"
        "sxtb16 r4, r4\n\t"
        "smlad  r10, r8, r9, r10\n\t"
        "smlad  r11, r8, lr, r11\n\t"
        "smlad  r6, r1, r9, r6\n\t"
        "smlad  r7, r1, lr, r7\n\t"
        "ldr    r8, [r2, #4]\n\t"
        "ldr    r1, [r3, #4]\n\t"
        "adds   r2, r2, #8\n\t"
        "adds   r3, r3, #8\n\t"
        "smlad  r10, r5, r8, r10\n\t"
        "smlad  r11, r5, r1, r11\n\t"
        "smlad  r6, r4, r8, r6\n\t"
        "smlad  r7, r4, r1, r7\n\t"
        "subs   ip, ip, #1\n\t"
        "bne    6b\n"
        "4:\n\t" /* leftover reduction columns (S8S16_ROW_MID, S8S16_LEFT) */
        "ldr    r1, [sp, #16]\n\t"
        "ldr    ip, [sp]\n\t"
        "cbz    r1, 7f\n"
        "6:\n\t"
        "ldrsb  r4, [r0], #1\n\t"
        "ldrsh  r8, [r2], #2\n\t"
        "ldrsb  r5, [ip], #1\n\t"
        "ldrsh  r9, [r3], #2\n\t"
        "mla    r10, r4, r8, r10\n\t"
        "mla    r11, r4, r9, r11\n\t"
        "mla    r6, r5, r8, r6\n\t"
        "mla    r7, r5, r9, r7\n\t"
        "subs   r1, r1, #1\n\t"
        "bne    6b\n"
        "7:\n\t" /* the four outputs */
        "ldr    r5, [sp, #28]\n\t"
        "ldr    r9, [sp, #32]\n\t"
        "ldr    lr, [sp, #40]\n\t" MN_MM_RQ("r10", "", "ldr    ip, [sp, #44]\n\t"
                                                       "strb   r2, [lr]\n\t")
            MN_MM_RQ("r11", ", #4", "strb   r2, [lr, ip]\n\t"
                                    "adds   lr, lr, #1\n\t")
                MN_MM_RQ("r6", "", "strb   r2, [lr]\n\t")
                    MN_MM_RQ("r7", ", #4", "strb   r2, [lr, ip]\n\t"
                                           "adds   lr, lr, #1\n\t"
                                           "str    lr, [sp, #40]\n\t")
        "str    r5, [sp, #28]\n\t"
        "str    r9, [sp, #32]\n\t" /* S8S16_ROW_END: skip the second row */
        "ldr    ip, [sp, #20]\n\t"
        "add    r0, r0, ip\n\t"
        "ldr    ip, [sp, #24]\n\t"
        "subs   ip, ip, #1\n\t"
        "str    ip, [sp, #24]\n\t"
        "bne    1b\n"
        "8:\n\t" /* odd channel out of line: even counts fall through to S8S16_EXIT */
        "ldr    ip, [sp, #60]\n\t"
        "cmp    ip, #0\n\t"
        "bne    11f\n"
        "9:\n\t"
        "add    sp, sp, #64\n\t"
        "pop    {r4, r5, r6, r7, r8, r9, r10, r11, pc}\n"
        "10:\n\t" /* no bias: accumulators from 0 */
        "movs   r10, #0\n\t"
        "movs   r11, #0\n\t"
        "movs   r6, #0\n\t"
        "movs   r7, #0\n\t"
        "b      3b\n"
        "11:\n\t" /* the odd last channel */
        "ldr    r2, [sp, #4]\n\t"
        "ldr    r3, [sp, #8]\n\t"
        "ldr    r5, [sp, #36]\n\t"
        "movs   r10, #0\n\t"
        "cbz    r5, 2f\n\t"
        "ldr    r10, [r5]\n"
        "2:\n\t"
        "mov    r11, r10\n\t"
        "ldr    ip, [sp, #12]\n\t"
        "cmp    ip, #0\n\t"
        "beq    4f\n"
        "6:\n\t" /* S8S16_ODD_INNER */
        "ldr    r4, [r0], #4\n\t"
        "ldr    r8, [r2]\n\t"
        "ldr    r9, [r3]\n\t"
        "mov    lr, r4, ror #8\n\t"
        "sxtb16 r4, r4\n\t"
        "sxtb16 lr, lr\n\t"
        "smlad  r10, r4, r8, r10\n\t"
        "smlad  r11, r4, r9, r11\n\t"
        "ldr    r8, [r2, #4]\n\t"
        "ldr    r9, [r3, #4]\n\t"
        "adds   r2, r2, #8\n\t"
        "adds   r3, r3, #8\n\t"
        "smlad  r10, lr, r8, r10\n\t"
        "smlad  r11, lr, r9, r11\n\t"
        "subs   ip, ip, #1\n\t"
        "bne    6b\n"
        "4:\n\t"
        "ldr    r1, [sp, #16]\n\t"
        "cbz    r1, 7f\n"
        "6:\n\t" /* S8S16_ODD_LEFT */
        "ldrsb  r4, [r0], #1\n\t"
        "ldrsh  r8, [r2], #2\n\t"
        "ldrsh  r9, [r3], #2\n\t"
        "mla    r10, r4, r8, r10\n\t"
        "mla    r11, r4, r9, r11\n\t"
        "subs   r1, r1, #1\n\t"
        "bne    6b\n"
        "7:\n\t"
        "ldr    r5, [sp, #28]\n\t"
        "ldr    r9, [sp, #32]\n\t"
        "ldr    lr, [sp, #40]\n\t" MN_MM_RQ("r10", "", "ldr    ip, [sp, #44]\n\t"
                                                       "strb   r2, [lr]\n\t")
            MN_MM_RQ("r11", "", "strb   r2, [lr, ip]\n")
        "b      9b");
}
#endif

#if !MN_DSP
/* Two int16 columns (b0, b0 + aligned_cols) against out_ch weight rows of num_cols int8.
 * Outputs of column 0 at out0[0..out_ch), of column 1 at out0[out_row..]. */
__attribute__((noinline)) static void
mn_mat_mult_kernel_s8_s16(const int8_t *wts, const int16_t *b0, int32_t out_ch,
                          const int32_t *shift, const int32_t *mult,
                          int32_t out_offset, int32_t act_min, int32_t act_max,
                          int32_t num_cols, int32_t aligned_cols,
                          const int32_t *bias, int8_t *out0, int32_t out_row)
{
    int8_t *out1 = out0 + out_row;
    const int8_t *a0 = wts;
    int32_t ch = 0;
    for (int32_t pairs = out_ch >> 1; pairs > 0; pairs--, ch += 2) {
        const int16_t *pb0 = b0;
        const int16_t *pb1 = b0 + aligned_cols;
        const int8_t *a1 = a0 + num_cols;
        int32_t cols = num_cols >> 2;
        int32_t c00 = bias ? bias[ch] : 0; /* channel 0, column 0 */
        int32_t c01 = c00;
        int32_t c10 = bias ? bias[ch + 1] : 0;
        int32_t c11 = c10;
        while (cols--) {
            int32_t a0e, a0o, a1e, a1o;
            mn_weights_reordered(&a0, &a0e, &a0o);
            mn_weights_reordered(&a1, &a1e, &a1o);
            int32_t x0 = mn_read_s16x2_ia(&pb0);
            int32_t x1 = mn_read_s16x2_ia(&pb1);
            c00 = mn_smlad(a0e, x0, c00);
            c01 = mn_smlad(a0e, x1, c01);
            c10 = mn_smlad(a1e, x0, c10);
            c11 = mn_smlad(a1e, x1, c11);
            x0 = mn_read_s16x2_ia(&pb0);
            x1 = mn_read_s16x2_ia(&pb1);
            c00 = mn_smlad(a0o, x0, c00);
            c01 = mn_smlad(a0o, x1, c01);
            c10 = mn_smlad(a1o, x0, c10);
            c11 = mn_smlad(a1o, x1, c11);
        }
        cols = num_cols & 3;
        while (cols--) {
            int32_t w0 = *a0++;
            int32_t w1 = *a1++;
            int32_t x0 = *pb0++;
            int32_t x1 = *pb1++;
            c00 += w0 * x0;
            c01 += w0 * x1;
            c10 += w1 * x0;
            c11 += w1 * x1;
        }
        out0[0] = mn_requant_clamp(c00, mult[ch], shift[ch], out_offset, act_min, act_max);
        out1[0] = mn_requant_clamp(c01, mult[ch], shift[ch], out_offset, act_min, act_max);
        out0[1] = mn_requant_clamp(c10, mult[ch + 1], shift[ch + 1], out_offset, act_min,
                                   act_max);
        out1[1] = mn_requant_clamp(c11, mult[ch + 1], shift[ch + 1], out_offset, act_min,
                                   act_max);
        out0 += 2;
        out1 += 2;
        a0 = a1; /* skip the second row */
    }
    if (out_ch & 1) {
        const int16_t *pb0 = b0;
        const int16_t *pb1 = b0 + aligned_cols;
        int32_t cols = num_cols >> 2;
        int32_t c0 = bias ? bias[ch] : 0;
        int32_t c1 = c0;
        while (cols--) {
            int32_t ae, ao;
            mn_weights_reordered(&a0, &ae, &ao);
            int32_t x0 = mn_read_s16x2_ia(&pb0);
            int32_t x1 = mn_read_s16x2_ia(&pb1);
            c0 = mn_smlad(ae, x0, c0);
            c1 = mn_smlad(ae, x1, c1);
            x0 = mn_read_s16x2_ia(&pb0);
            x1 = mn_read_s16x2_ia(&pb1);
            c0 = mn_smlad(ao, x0, c0);
            c1 = mn_smlad(ao, x1, c1);
        }
        cols = num_cols & 3;
        while (cols--) {
            int32_t w = *a0++;
            c0 += w * *pb0++;
            c1 += w * *pb1++;
        }
        out0[0] = mn_requant_clamp(c0, mult[ch], shift[ch], out_offset, act_min, act_max);
        out1[0] = mn_requant_clamp(c1, mult[ch], shift[ch], out_offset, act_min, act_max);
    }
}
#endif

/* One int16 column against out_ch weight rows (the odd last pixel). */
static void mn_single_column(const int8_t *wts, const int16_t *col, int32_t out_ch,
                             const int32_t *shift, const int32_t *mult, int32_t out_offset,
                             int32_t act_min, int32_t act_max, int32_t num_cols,
                             const int32_t *bias, int8_t *out)
{
    const int8_t *a = wts;
    for (int32_t ch = 0; ch < out_ch; ch++) {
        const int16_t *pb = col;
        int32_t acc = bias ? bias[ch] : 0;
        int32_t cols = num_cols >> 2;
        while (cols--) {
            int32_t ae, ao;
            mn_weights_reordered(&a, &ae, &ao);
            int32_t x0 = mn_read_s16x2_ia(&pb);
            acc = mn_smlad(ae, x0, acc);
            int32_t x1 = mn_read_s16x2_ia(&pb);
            acc = mn_smlad(ao, x1, acc);
        }
        cols = num_cols & 3;
        while (cols--)
            acc += *a++ * *pb++;
        out[ch] = mn_requant_clamp(acc, mult[ch], shift[ch], out_offset, act_min, act_max);
    }
}

#endif

static int32_t mn_aligned_cols(const mn_conv_args *a)
{
    int32_t cols = a->k_h * a->k_w * (a->in_c / a->groups);
    return (cols + 3) & ~3;
}

uint32_t mn_conv_scratch_bytes(const mn_conv_args *a)
{
    int32_t al = mn_aligned_cols(a);
    return (uint32_t)(2 * al * 2 + al); /* two int16 columns + one int8 column */
}


#if !MN_MVE
static int32_t mn_convolve_im2col(const mn_conv_args *a)
{
    const mn_conv_args args_copy = *a; /* locals: output stores cannot alias them */
    a = &args_copy;
    const int32_t kernel_ch = a->in_c / a->groups;
    const int32_t rhs_cols = a->k_h * a->k_w * kernel_ch;
    const int32_t aligned = mn_aligned_cols(a);
    const int32_t out_ch_g = a->out_c / a->groups;
    int16_t *buf_s16 = (int16_t *)a->scratch;
    int8_t *col_s8 = (int8_t *)(buf_s16 + 2 * aligned);
#if MN_DSP
    mn_k_pix px = {0, 0, a->d_h, a->d_w, a->in_h, a->in_w, a->in_c, 0, 0, kernel_ch,
                   a->k_w, a->k_h, (uint8_t)(-a->in_offset), 0, 0};
    mn_k_mm mm = {buf_s16, buf_s16 + aligned, rhs_cols >> 2, rhs_cols & 3, rhs_cols,
                  out_ch_g >> 1, 0, 0, 0, 0, a->out_c, a->out_offset, a->act_min,
                  a->act_max, out_ch_g & 1};
#else
    const int8_t pad_value = (int8_t)(-a->in_offset);
#endif

    for (int32_t b = 0; b < a->batches; b++) {
        const int8_t *in_b = a->input + b * a->in_h * a->in_w * a->in_c;
        int8_t *out_b = a->output + b * a->out_h * a->out_w * a->out_c;
        for (int32_t g = 0; g < a->groups; g++) {
            const int8_t *in_g = in_b + g * kernel_ch;
            const int8_t *w_g = a->weights + g * out_ch_g * rhs_cols;
            const int32_t *bias_g = a->bias ? a->bias + g * out_ch_g : 0;
            const int32_t *mult_g = a->mult + g * out_ch_g;
            const int32_t *shift_g = a->shift + g * out_ch_g;
            int8_t *out = out_b + g * out_ch_g;
            int16_t *col = buf_s16;
            int32_t columns = 0;
#if MN_DSP
            px.input = in_g;
            mm.shift = shift_g;
            mm.mult = mult_g;
            mm.bias = bias_g;
#endif
            for (int32_t oy = 0; oy < a->out_h; oy++) {
                const int32_t base_y = a->s_h * oy - a->pad_t;
                for (int32_t ox = 0; ox < a->out_w; ox++) {
                    const int32_t base_x = a->s_w * ox - a->pad_l;
#if MN_DSP
                    px.base_y = base_y;
                    px.base_x = base_x;
                    px.dst = col_s8;
                    mn_k_im2col_pixel(&px);
#else
                    int8_t *dst = col_s8;
                    for (int32_t ky = 0; ky < a->k_h; ky++) {
                        const int32_t iy = base_y + a->d_h * ky;
                        for (int32_t kx = 0; kx < a->k_w; kx++) {
                            const int32_t ix = base_x + a->d_w * kx;
                            if (iy < 0 || iy >= a->in_h || ix < 0 || ix >= a->in_w)
                                mn_memset(dst, pad_value, (uint32_t)kernel_ch);
                            else
                                mn_memcpy(dst, in_g + (iy * a->in_w + ix) * a->in_c,
                                          (uint32_t)kernel_ch);
                            dst += kernel_ch;
                        }
                    }
#endif
                    mn_k_s8_to_s16(col_s8, col, rhs_cols, a->in_offset);
                    col += aligned;
                    if (++columns == 2) {
#if MN_DSP
                        mm.out = out;
                        mn_k_mat_mult(w_g, &mm);
#else
                        mn_mat_mult_kernel_s8_s16(w_g, buf_s16, out_ch_g, shift_g, mult_g,
                                                  a->out_offset, a->act_min, a->act_max,
                                                  rhs_cols, aligned, bias_g, out, a->out_c);
#endif
                        out += 2 * a->out_c;
                        col = buf_s16;
                        columns = 0;
                    }
                }
            }
            if (columns)
                mn_single_column(w_g, buf_s16, out_ch_g, shift_g, mult_g, a->out_offset,
                                 a->act_min, a->act_max, rhs_cols, bias_g, out);
        }
    }
    return MN_OK;
}
#else

/* Helium: int8 im2col of up to 4 pixels (padding filled with the input zero point, which
 * contributes 0 after the folded offset), then the 4-row matrix product. */
static int32_t mn_convolve_im2col(const mn_conv_args *a)
{
    const mn_conv_args args_copy = *a; /* locals: output stores cannot alias them */
    a = &args_copy;
    const int32_t kernel_ch = a->in_c / a->groups;
    const int32_t rhs_cols = a->k_h * a->k_w * kernel_ch;
    const int32_t out_ch_g = a->out_c / a->groups;
    int8_t *cols = (int8_t *)a->scratch;
    const int8_t pad_value = (int8_t)(-a->in_offset);
    for (int32_t b = 0; b < a->batches; b++) {
        const int8_t *in_b = a->input + b * a->in_h * a->in_w * a->in_c;
        int8_t *out_b = a->output + b * a->out_h * a->out_w * a->out_c;
        for (int32_t g = 0; g < a->groups; g++) {
            const int8_t *in_g = in_b + g * kernel_ch;
            const int8_t *w_g = a->weights + g * out_ch_g * rhs_cols;
            const int32_t *bias_g = a->bias ? a->bias + g * out_ch_g : 0;
            int8_t *out = out_b + g * out_ch_g;
            int32_t n = 0;
            const int32_t pixels = a->out_h * a->out_w;
            /* grouped outputs are not rows of out_ch_g: one pixel per call then */
            const int32_t max_n = a->groups == 1 ? 4 : 1;
            for (int32_t px = 0; px < pixels; px++) {
                const int32_t base_y = a->s_h * (px / a->out_w) - a->pad_t;
                const int32_t base_x = a->s_w * (px % a->out_w) - a->pad_l;
                int8_t *dst = cols + n * rhs_cols;
                for (int32_t ky = 0; ky < a->k_h; ky++) {
                    const int32_t iy = base_y + a->d_h * ky;
                    for (int32_t kx = 0; kx < a->k_w; kx++) {
                        const int32_t ix = base_x + a->d_w * kx;
                        if (iy < 0 || iy >= a->in_h || ix < 0 || ix >= a->in_w)
                            mn_memset(dst, pad_value, (uint32_t)kernel_ch);
                        else
                            mn_memcpy(dst, in_g + (iy * a->in_w + ix) * a->in_c,
                                      (uint32_t)kernel_ch);
                        dst += kernel_ch;
                    }
                }
                if (++n == max_n || px == pixels - 1) {
                    mn_mat_mult_nt_t_s8(cols, w_g, bias_g, out, a->mult + g * out_ch_g,
                                        a->shift + g * out_ch_g, n, out_ch_g, rhs_cols,
                                        a->in_offset, a->out_offset, a->act_min, a->act_max,
                                        rhs_cols);
                    out += n * a->out_c;
                    n = 0;
                }
            }
        }
    }
    return MN_OK;
}
#endif


static int32_t mn_convolve_1x1(const mn_conv_args *a)
{
    const int32_t c = a->in_c;
    if (a->s_h == 1 && a->s_w == 1) {
        mn_mat_mult_nt_t_s8(a->input, a->weights, a->bias, a->output, a->mult, a->shift,
                            a->batches * a->in_h * a->in_w, a->out_c, c, a->in_offset,
                            a->out_offset, a->act_min, a->act_max, c);
        return MN_OK;
    }
    for (int32_t b = 0; b < a->batches; b++) {
        for (int32_t oy = 0; oy < a->out_h; oy++) {
            const int8_t *in = a->input + ((b * a->in_h + oy * a->s_h) * a->in_w) * c;
            int8_t *out = a->output + ((b * a->out_h + oy) * a->out_w) * a->out_c;
            mn_mat_mult_nt_t_s8(in, a->weights, a->bias, out, a->mult, a->shift, a->out_w,
                                a->out_c, c, a->in_offset, a->out_offset, a->act_min,
                                a->act_max, a->s_w * c);
        }
    }
    return MN_OK;
}

int32_t mn_conv_is_1x1(const mn_conv_args *a)
{
    return a->pad_t == 0 && a->pad_l == 0 && a->k_h == 1 && a->k_w == 1 && a->d_h == 1 &&
           a->d_w == 1 && a->groups == 1;
}

int32_t mn_conv_s8(const mn_conv_args *a)
{
    if (a->groups < 1 || a->in_c % a->groups || a->out_c % a->groups)
        return MN_ARG_ERROR;
    if (mn_conv_is_1x1(a))
        return mn_convolve_1x1(a);
    if (!a->scratch)
        return MN_ARG_ERROR;
    return mn_convolve_im2col(a);
}
