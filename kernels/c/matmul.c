/* int8 x int8 matrix product with the input offset folded (CONV_2D 1x1, conv.c): our
 * implementation of the algorithm of CMSIS-NN's arm_nn_mat_mult_nt_t_s8, DSP branch as
 * kernels/schedules/matmul.py times it, Helium branch as mve_matmul.py does. */
#include "mcusim_nn.h"

#if !MN_MVE
/* ------------------------------------------------------------ int8 x int8, offset folded
 * dst[r * rhs_rows + c] = requant(bias[c] + sum_k (lhs[r, k] + lhs_offset) * rhs[c, k]),
 * lhs rows lhs_stride bytes apart. One step = 4 columns of 2 lhs rows x 2 rhs rows: the
 * first row of each through a post-incremented pointer, the second at a fixed offset. */
#define MN_NT_STEP2x2()                                                                      \
    do {                                                                                     \
        int32_t w0 = mn_read_s8x4_ia(&pr);                                                   \
        int32_t w0e = mn_sxtb16(w0);                                                         \
        int32_t x = mn_read_s8x4_ia(&pl);                                                    \
        int32_t xe = mn_sxtb16(x);                                                           \
        int32_t w1 = mn_read_s8x4(pr + r_off);                                               \
        int32_t w0o = mn_sxtb16_ror8(w0);                                                    \
        int32_t xo = mn_sxtb16_ror8(x);                                                      \
        a00 = mn_smlad(xe, w0e, a00);                                                        \
        int32_t w1e = mn_sxtb16(w1);                                                         \
        a00 = mn_smlad(xo, w0o, a00);                                                        \
        int32_t w1o = mn_sxtb16_ror8(w1);                                                    \
        a01 = mn_smlad(xe, w1e, a01);                                                        \
        a01 = mn_smlad(xo, w1o, a01);                                                        \
        x = mn_read_s8x4(pl + l_off);                                                        \
        xe = mn_sxtb16(x);                                                                   \
        xo = mn_sxtb16_ror8(x);                                                              \
        a10 = mn_smlad(xe, w0e, a10);                                                        \
        a11 = mn_smlad(xe, w1e, a11);                                                        \
        a10 = mn_smlad(xo, w0o, a10);                                                        \
        a11 = mn_smlad(xo, w1o, a11);                                                        \
    } while (0)

#define MN_NT_STEP1x2()                                                                      \
    do {                                                                                     \
        int32_t w0 = mn_read_s8x4_ia(&pr);                                                   \
        int32_t w1 = mn_read_s8x4(pr + r_off);                                               \
        int32_t x = mn_read_s8x4_ia(&pl);                                                    \
        int32_t w0e = mn_sxtb16(w0);                                                         \
        int32_t xe = mn_sxtb16(x);                                                           \
        int32_t w1e = mn_sxtb16(w1);                                                         \
        int32_t w0o = mn_sxtb16_ror8(w0);                                                    \
        int32_t xo = mn_sxtb16_ror8(x);                                                      \
        int32_t w1o = mn_sxtb16_ror8(w1);                                                    \
        a00 = mn_smlad(xe, w0e, a00);                                                        \
        a00 = mn_smlad(xo, w0o, a00);                                                        \
        a01 = mn_smlad(xe, w1e, a01);                                                        \
        a01 = mn_smlad(xo, w1o, a01);                                                        \
    } while (0)

__attribute__((noinline)) void
mn_mat_mult_nt_t_s8(const int8_t *lhs, const int8_t *rhs, const int32_t *bias,
                    int8_t *dst, const int32_t *mult, const int32_t *shift,
                    int32_t lhs_rows, int32_t rhs_rows, int32_t rhs_cols,
                    int32_t lhs_offset, int32_t out_offset, int32_t act_min,
                    int32_t act_max, int32_t lhs_stride)
{
    const int32_t r_off = rhs_cols - 4; /* second rhs row, after a post-increment of 4 */
    const int32_t l_off = lhs_stride - 4;
    int32_t c = 0;
    for (; c + 1 < rhs_rows; c += 2) {
        int32_t sum0 = 0, sum1 = 0;
        {
            const int8_t *pr = rhs;
            for (int32_t k = rhs_cols; k > 0; k--) {
                sum0 += pr[0];
                sum1 += pr[rhs_cols];
                pr++;
            }
        }
        sum0 = sum0 * lhs_offset + (bias ? bias[c] : 0);
        sum1 = sum1 * lhs_offset + (bias ? bias[c + 1] : 0);
        const int8_t *pl = lhs;
        int8_t *d = dst + c;
        for (int32_t pairs = lhs_rows >> 1; pairs > 0; pairs--) {
            const int8_t *pr = rhs;
            int32_t a00 = sum0, a01 = sum1, a10 = sum0, a11 = sum1;
            int32_t k = 0;
            for (; k <= rhs_cols - 16; k += 16) {
                MN_NT_STEP2x2();
                MN_NT_STEP2x2();
                MN_NT_STEP2x2();
                MN_NT_STEP2x2();
            }
            for (; k <= rhs_cols - 4; k += 4)
                MN_NT_STEP2x2();
            for (; k < rhs_cols; k++) {
                int32_t w0 = pr[0], w1 = pr[rhs_cols];
                int32_t x0 = pl[0], x1 = pl[lhs_stride];
                a00 += x0 * w0;
                a01 += x0 * w1;
                a10 += x1 * w0;
                a11 += x1 * w1;
                pr++;
                pl++;
            }
            d[0] = mn_requant_clamp(a00, mult[c], shift[c], out_offset, act_min, act_max);
            d[1] = mn_requant_clamp(a01, mult[c + 1], shift[c + 1], out_offset, act_min,
                                    act_max);
            d[rhs_rows] =
                mn_requant_clamp(a10, mult[c], shift[c], out_offset, act_min, act_max);
            d[rhs_rows + 1] = mn_requant_clamp(a11, mult[c + 1], shift[c + 1], out_offset,
                                               act_min, act_max);
            d += 2 * rhs_rows;
            pl += 2 * lhs_stride - rhs_cols;
        }
        if (lhs_rows & 1) { /* odd last lhs row */
            const int8_t *pr = rhs;
            int32_t a00 = sum0, a01 = sum1;
            int32_t k = 0;
            for (; k <= rhs_cols - 16; k += 16) {
                MN_NT_STEP1x2();
                MN_NT_STEP1x2();
                MN_NT_STEP1x2();
                MN_NT_STEP1x2();
            }
            for (; k <= rhs_cols - 4; k += 4)
                MN_NT_STEP1x2();
            for (; k < rhs_cols; k++) {
                int32_t x0 = *pl++;
                a00 += x0 * pr[0];
                a01 += x0 * pr[rhs_cols];
                pr++;
            }
            d[0] = mn_requant_clamp(a00, mult[c], shift[c], out_offset, act_min, act_max);
            d[1] = mn_requant_clamp(a01, mult[c + 1], shift[c + 1], out_offset, act_min,
                                    act_max);
        }
        rhs += 2 * rhs_cols;
    }
    if (c < rhs_rows) { /* odd last output channel: scalar, offset added per element */
        const int8_t *l = lhs;
        int8_t *d = dst + c;
        for (int32_t r = 0; r < lhs_rows; r++) {
            const int8_t *pr = rhs;
            const int8_t *pl = l;
            int32_t acc = bias ? bias[c] : 0;
            for (int32_t k = 0; k < rhs_cols; k++)
                acc += (*pl++ + lhs_offset) * *pr++;
            *d = mn_requant_clamp(acc, mult[c], shift[c], out_offset, act_min, act_max);
            d += rhs_rows;
            l += lhs_stride;
        }
    }
}

#else /* MN_MVE */

/* Helium: per lhs row (pixel) and rhs row (filter), 16 columns per VMLADAVA with tail
 * predication (VCTP), the filter's sum by VADDVA for the folded input offset; 4 pixels
 * share each filter load, as arm_nn_mat_mult_nt_t_s8's MVE branch does. */
__attribute__((noinline)) void
mn_mat_mult_nt_t_s8(const int8_t *lhs, const int8_t *rhs, const int32_t *bias, int8_t *dst,
                    const int32_t *mult, const int32_t *shift, int32_t lhs_rows,
                    int32_t rhs_rows, int32_t rhs_cols, int32_t lhs_offset, int32_t out_offset,
                    int32_t act_min, int32_t act_max, int32_t lhs_stride)
{
    int32_t r = 0;
    for (; r + 3 < lhs_rows; r += 4) {
        const int8_t *l0 = lhs + r * lhs_stride;
        const int8_t *l1 = l0 + lhs_stride;
        const int8_t *l2 = l1 + lhs_stride;
        const int8_t *l3 = l2 + lhs_stride;
        int8_t *d = dst + r * rhs_rows;
        for (int32_t c = 0; c < rhs_rows; c++) {
            const int8_t *w = rhs + c * rhs_cols;
            int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, wsum = 0;
            for (int32_t k = 0; k < rhs_cols; k += 16) {
                const mve_pred16_t p = vctp8q((uint32_t)(rhs_cols - k));
                const int8x16_t wv = vldrbq_z_s8(w + k, p);
                wsum = vaddvaq_s8(wsum, wv);
                a0 = vmladavaq_s8(a0, vldrbq_z_s8(l0 + k, p), wv);
                a1 = vmladavaq_s8(a1, vldrbq_z_s8(l1 + k, p), wv);
                a2 = vmladavaq_s8(a2, vldrbq_z_s8(l2 + k, p), wv);
                a3 = vmladavaq_s8(a3, vldrbq_z_s8(l3 + k, p), wv);
            }
            const int32_t off = wsum * lhs_offset + (bias ? bias[c] : 0);
            d[c] = mn_requant_clamp(a0 + off, mult[c], shift[c], out_offset, act_min, act_max);
            d[c + rhs_rows] =
                mn_requant_clamp(a1 + off, mult[c], shift[c], out_offset, act_min, act_max);
            d[c + 2 * rhs_rows] =
                mn_requant_clamp(a2 + off, mult[c], shift[c], out_offset, act_min, act_max);
            d[c + 3 * rhs_rows] =
                mn_requant_clamp(a3 + off, mult[c], shift[c], out_offset, act_min, act_max);
        }
    }
    for (; r < lhs_rows; r++) {
        const int8_t *l0 = lhs + r * lhs_stride;
        int8_t *d = dst + r * rhs_rows;
        for (int32_t c = 0; c < rhs_rows; c++) {
            const int8_t *w = rhs + c * rhs_cols;
            int32_t a0 = 0, wsum = 0;
            for (int32_t k = 0; k < rhs_cols; k += 16) {
                const mve_pred16_t p = vctp8q((uint32_t)(rhs_cols - k));
                const int8x16_t wv = vldrbq_z_s8(w + k, p);
                wsum = vaddvaq_s8(wsum, wv);
                a0 = vmladavaq_s8(a0, vldrbq_z_s8(l0 + k, p), wv);
            }
            const int32_t off = wsum * lhs_offset + (bias ? bias[c] : 0);
            d[c] = mn_requant_clamp(a0 + off, mult[c], shift[c], out_offset, act_min, act_max);
        }
    }
}

#endif /* MN_MVE */
