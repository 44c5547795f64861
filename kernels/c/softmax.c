/* SOFTMAX int8 -> int8 (scale 1/256, zero point -128), TFLite's fixed-point algorithm
 * (kernels/softmax.py) in the loop structure of CMSIS-NN's arm_softmax_s8 on Armv7E-M
 * (kernels/schedules/cmsis_softmax.py): per row a max pass; a sum pass computing
 * exp(diff) in Q0.31 (gemmlowp exp_on_negative_values) for every difference >= diff_min,
 * accumulated in Q12.19; CLZ and the Newton reciprocal of the sum; an output pass that
 * recomputes exp, scales and shifts. Written from the gemmlowp formulas. */
#include "mcusim_nn.h"

#define MN_ACCUM_BITS 12
#define MN_DIFF_BITS 5

MN_INLINE int32_t mn_mul_sat(int32_t a, int32_t b) { return mn_doubling_high_mult_sat(a, b); }

/* gemmlowp SaturatingRoundingMultiplyByPOT with a positive exponent */
MN_INLINE int32_t mn_mul_pot_sat(int32_t x, int32_t e)
{
    const int32_t thr = (int32_t)((1u << (31 - e)) - 1u);
    if (x > thr)
        return INT32_MAX;
    if (x < -thr)
        return INT32_MIN;
    return (int32_t)((uint32_t)x << e);
}

/* The product is computed whether or not the bit is set and then selected (a conditional
 * move, no branch), as the gemmlowp/CMSIS-NN barrel shifter does. */
MN_INLINE int32_t mn_select_mul(int32_t rem, int32_t bit, int32_t r, int32_t c)
{
    const int32_t m = mn_mul_sat(r, c);
    return (rem & bit) ? m : r;
}

/* exp(a) for a <= 0 in Q5.26, result Q0.31 */
static int32_t mn_exp_on_negative(int32_t a)
{
    const int32_t frac = 31 - MN_DIFF_BITS;
    const int32_t quarter = 1 << (frac - 2);
    const int32_t mask = quarter - 1;
    const int32_t a_mod = (int32_t)((uint32_t)(a & mask) - (uint32_t)quarter);
    const int32_t rem = (int32_t)((uint32_t)a_mod - (uint32_t)a);
    /* exp on [-1/4, 0): Taylor series around -1/8 on a_mod in Q0.31 */
    const int32_t x = (int32_t)((uint32_t)mn_mul_pot_sat(a_mod, MN_DIFF_BITS) + (1u << 28));
    const int32_t x2 = mn_mul_sat(x, x);
    const int32_t x3 = mn_mul_sat(x2, x);
    const int32_t x4 = mn_mul_sat(x2, x2);
    const int32_t x4_4 = mn_divide_by_pot(x4, 2);
    const int32_t poly = mn_divide_by_pot(
        (int32_t)((uint32_t)mn_mul_sat((int32_t)((uint32_t)x4_4 + (uint32_t)x3), 715827883) +
                  (uint32_t)x2),
        1);
    const int32_t xp = (int32_t)((uint32_t)x + (uint32_t)poly);
    int32_t r = (int32_t)(1895147668u + (uint32_t)mn_mul_sat(1895147668, xp));
    /* barrel shifter: exp(-2^k) for the set bits of the remainder */
    r = mn_select_mul(rem, 1 << (frac - 2), r, 1672461947);
    r = mn_select_mul(rem, 1 << (frac - 1), r, 1302514674);
    r = mn_select_mul(rem, 1 << (frac + 0), r, 790015084);
    r = mn_select_mul(rem, 1 << (frac + 1), r, 290630308);
    r = mn_select_mul(rem, 1 << (frac + 2), r, 39332535);
    r = mn_select_mul(rem, 1 << (frac + 3), r, 720401);
    r = mn_select_mul(rem, 1 << (frac + 4), r, 242);
    return a == 0 ? INT32_MAX : r;
}

/* 1 / (1 + a) for a in [0, 1) in Q0.31 (three Newton-Raphson steps on half the
 * denominator, Q2.29) */
static int32_t mn_one_over_one_plus_x(int32_t a)
{
    const int64_t s = (int64_t)a + INT32_MAX;
    const int32_t half = (int32_t)(s >= 0 ? (s + 1) / 2 : -((1 - s) / 2));
    int32_t x = (int32_t)(1515870810u + (uint32_t)mn_mul_sat(half, -1010580540));
    for (int32_t i = 0; i < 3; i++) {
        const int32_t hx = mn_mul_sat(half, x);
        const int32_t one_minus = (int32_t)((1u << 29) - (uint32_t)hx);
        x = (int32_t)((uint32_t)x + (uint32_t)mn_mul_pot_sat(mn_mul_sat(x, one_minus), 2));
    }
    return mn_mul_pot_sat(x, 1);
}

MN_INLINE int32_t mn_clz(uint32_t x) { return x ? __builtin_clz(x) : 32; }

int32_t mn_softmax_s8(const mn_softmax_args *a)
{
    const mn_softmax_args args_copy = *a; /* locals: output stores cannot alias them */
    a = &args_copy;
    const int32_t mask = 1 << a->input_left_shift;
    const int8_t *in = a->input;
    int8_t *out = a->output;
    if (a->input_left_shift < 0 || a->input_left_shift > 30)
        return MN_ARG_ERROR;
    for (int32_t r = 0; r < a->rows; r++) {
        int32_t mx = in[0];
        for (int32_t c = 1; c < a->depth; c++)
            mx = mn_max(mx, in[c]);
        int32_t sum = 0;
        for (int32_t c = 0; c < a->depth; c++) {
            const int32_t diff = in[c] - mx;
            if (diff >= a->diff_min)
                sum = (int32_t)((uint32_t)sum +
                                (uint32_t)mn_divide_by_pot(
                                    mn_exp_on_negative(mn_mul_sat(diff * mask, a->input_mult)),
                                    MN_ACCUM_BITS));
        }
        const int32_t headroom = mn_clz((uint32_t)sum);
        const int32_t shifted =
            (int32_t)(((uint32_t)sum << headroom) - 0x80000000u); /* sum << hr - 1.0 */
        const int32_t scale = mn_one_over_one_plus_x(shifted);
        int32_t bits = MN_ACCUM_BITS - headroom + 31 - 8;
        bits = mn_min(mn_max(bits, 0), 31);
        for (int32_t c = 0; c < a->depth; c++) {
            const int32_t diff = in[c] - mx;
            if (diff >= a->diff_min) {
                const int32_t e = mn_exp_on_negative(mn_mul_sat(diff * mask, a->input_mult));
                int32_t v = mn_divide_by_pot(mn_mul_sat(scale, e), bits) - 128;
                v = mn_min(mn_max(v, -128), 127);
                out[c] = (int8_t)v;
            } else {
                out[c] = -128;
            }
        }
        in += a->depth;
        out += a->depth;
    }
    return MN_OK;
}
