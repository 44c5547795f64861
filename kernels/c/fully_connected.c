/* FULLY_CONNECTED int8 (our implementation of the vector x matrix loop CMSIS-NN's
 * arm_fully_connected_s8 runs on Armv7E-M; kernels/schedules/cmsis_fc.py, matmul.py):
 * per batch row, two weight rows per pass, 4 columns per step (the input word widened
 * once with the input offset by SXTAB16, the weights by SXTB16, 4 SMLAD), the 4-column
 * loop unrolled 4x (CMSIS-NN asks GCC for it with an optimize("unroll-loops") pragma),
 * scalar leftover columns, then an odd last row. */
#include "mcusim_nn.h"

#if !MN_MVE
__attribute__((noinline)) static void
mn_vec_mat_mult_t_s8(const int8_t *lhs, const int8_t *rhs, const int32_t *bias,
                     int8_t *dst, int32_t lhs_offset, int32_t out_offset,
                     const int32_t *mult, const int32_t *shift, int32_t cols,
                     int32_t rows, int32_t act_min, int32_t act_max)
{
    const int32_t off2 = mn_pair16(lhs_offset);
    const int32_t quads = cols >> 2;
    int32_t r = 0;
    for (int32_t pairs = rows >> 1; pairs > 0; pairs--, r += 2) {
        int32_t a0 = bias ? bias[r] : 0;
        int32_t a1 = bias ? bias[r + 1] : 0;
        const int8_t *pl = lhs;
        const int8_t *p0 = rhs;
        const int8_t *p1 = rhs + cols;
        rhs += 2 * cols;
#pragma GCC unroll 4
        for (int32_t n = quads; n > 0; n--) {
            int32_t x = mn_read_s8x4_ia(&pl);
            int32_t xo = mn_sxtab16_ror8(off2, x);
            int32_t xe = mn_sxtab16(off2, x);
            int32_t w = mn_read_s8x4_ia(&p0);
            a0 = mn_smlad(mn_sxtb16_ror8(w), xo, a0);
            a0 = mn_smlad(mn_sxtb16(w), xe, a0);
            w = mn_read_s8x4_ia(&p1);
            a1 = mn_smlad(mn_sxtb16_ror8(w), xo, a1);
            a1 = mn_smlad(mn_sxtb16(w), xe, a1);
        }
        for (int32_t n = cols & 3; n > 0; n--) {
            int32_t x = *pl++ + lhs_offset;
            a0 += x * *p0++;
            a1 += x * *p1++;
        }
        dst[0] = mn_requant_clamp(a0, mult[r], shift[r], out_offset, act_min, act_max);
        dst[1] = mn_requant_clamp(a1, mult[r + 1], shift[r + 1], out_offset, act_min, act_max);
        dst += 2;
    }
    if (rows & 1) {
        int32_t a0 = bias ? bias[r] : 0;
        const int8_t *pl = lhs;
        const int8_t *p0 = rhs;
#pragma GCC unroll 4
        for (int32_t n = quads; n > 0; n--) {
            int32_t x = mn_read_s8x4_ia(&pl);
            int32_t xo = mn_sxtab16_ror8(off2, x);
            int32_t xe = mn_sxtab16(off2, x);
            int32_t w = mn_read_s8x4_ia(&p0);
            a0 = mn_smlad(mn_sxtb16_ror8(w), xo, a0);
            a0 = mn_smlad(mn_sxtb16(w), xe, a0);
        }
        for (int32_t n = cols & 3; n > 0; n--) {
            int32_t x = *pl++ + lhs_offset;
            a0 += x * *p0++;
        }
        dst[0] = mn_requant_clamp(a0, mult[r], shift[r], out_offset, act_min, act_max);
    }
}

#else /* MN_MVE */

/* Helium: per weight row, 16 columns per VMLADAVA with tail predication; the row's sum
 * (VADDVA) times the input offset is added once, as CMSIS-NN's MVE vec_mat_mult does. */
__attribute__((noinline)) static void
mn_vec_mat_mult_t_s8(const int8_t *lhs, const int8_t *rhs, const int32_t *bias, int8_t *dst,
                     int32_t lhs_offset, int32_t out_offset, const int32_t *mult,
                     const int32_t *shift, int32_t cols, int32_t rows, int32_t act_min,
                     int32_t act_max)
{
    for (int32_t r = 0; r < rows; r++) {
        const int8_t *w = rhs + r * cols;
        int32_t acc = 0, wsum = 0;
        for (int32_t k = 0; k < cols; k += 16) {
            const mve_pred16_t p = vctp8q((uint32_t)(cols - k));
            const int8x16_t wv = vldrbq_z_s8(w + k, p);
            wsum = vaddvaq_s8(wsum, wv);
            acc = vmladavaq_s8(acc, vldrbq_z_s8(lhs + k, p), wv);
        }
        acc += wsum * lhs_offset + (bias ? bias[r] : 0);
        dst[r] = mn_requant_clamp(acc, mult[r], shift[r], out_offset, act_min, act_max);
    }
}

#endif /* MN_MVE */

int32_t mn_fully_connected_s8(const mn_fc_args *a)
{
    const mn_fc_args args_copy = *a; /* locals: output stores cannot alias them */
    a = &args_copy;
    if (a->in_depth < 1 || a->out_depth < 1)
        return MN_ARG_ERROR;
    const int8_t *in = a->input;
    int8_t *out = a->output;
    for (int32_t b = 0; b < a->batches; b++) {
        mn_vec_mat_mult_t_s8(in, a->weights, a->bias, out, a->in_offset, a->out_offset, a->mult,
                             a->shift, a->in_depth, a->out_depth, a->act_min, a->act_max);
        in += a->in_depth;
        out += a->out_depth;
    }
    return MN_OK;
}
