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

#if MN_DSP
/* The per-element work of both passes as inline assembly in the schedule's instruction
 * order (cmsis_softmax.py: _mul_sat, _div_pow2, _exp_on_negative, OUT_POST), so both
 * compilers run the same code. Operands: v the value (r0 in the schedule), t1..t5 and
 * u6/u7 temporaries (r1..r5, r6/r7), f the frame {mask, mult, scale, bits}.
 * MN_SM_MUL: D = doubling high multiply of A and B, floor((A*B + 2^30) / 2^31) (equal to
 * gemmlowp's sign-dependent nudge and truncation, mcusim_nn.h); the sign test and its
 * conditional RSB are kept (here 2^31 - 2^30 = 2^30: the nudge stays) so the stream is
 * CMSIS-NN's; the INT32_MIN x INT32_MIN test saturates (never reached here: one factor is
 * always a constant, a positive multiplier or >= 0). */
#define MN_SM_MUL(A, B, D)                                                                 \
    "mov     %[u6], #0x40000000\n\t"                                                       \
    "eors    %[u7], " A ", " B "\n\t"                                                      \
    "it      mi\n\t"                                                                       \
    "rsbmi   %[u6], %[u6], #0x80000000\n\t"                                                \
    "asrs    %[u7], %[u6], #31\n\t"                                                        \
    "smlal   %[u6], %[u7], " A ", " B "\n\t"                                               \
    "lsrs    %[u6], %[u6], #31\n\t"                                                        \
    "orr     " D ", %[u6], %[u7], lsl #1\n\t"                                              \
    "cmp     " A ", #0x80000000\n\t"                                                       \
    "it      eq\n\t"                                                                       \
    "cmpeq   " B ", #0x80000000\n\t"                                                       \
    "it      eq\n\t"                                                                       \
    "mvneq   " D ", #0x80000000\n\t"
/* X = rounding divide by 2^E (MASK = 2^E - 1 as an AND or, for 12 bits, UBFX) */
#define MN_SM_DIV(X, E, MASKOP, HALF)                                                      \
    MASKOP "\n\t"                                                                          \
           "asrs    " X ", " X ", #" #E "\n\t"                                             \
           "movw    %[u7], #" #HALF "\n\t"                                                 \
           "add     %[u7], %[u7], " X ", lsr #31\n\t"                                      \
           "cmp     %[u6], %[u7]\n\t"                                                      \
           "it      gt\n\t"                                                                \
           "addgt   " X ", #1\n\t"
#define MN_SM_CONST(R, C)                                                                  \
    "movw    " R ", #(" #C " & 0xFFFF)\n\tmovt    " R ", #(" #C " >> 16)\n\t"
/* one barrel-shifter step: t5 = rem bit set ? t5 * exp(-2^k) : t5 */
#define MN_SM_BARREL(C, BIT)                                                               \
    MN_SM_CONST("%[t1]", C)                                                           \
    MN_SM_MUL("%[t5]", "%[t1]", "%[t4]") "tst     %[t2], #" #BIT "\n\t"                    \
                                         "it      ne\n\t"                                  \
                                         "movne   %[t5], %[t4]\n\t"
/* diff * mask, times the input multiplier, then exp_on_negative_values (Q5.26 -> Q0.31):
 * x = (a mod 1/4 - 1/4) << 5 + 1/8, the polynomial, then the barrel shifter */
#define MN_SM_EXP                                                                          \
    "ldr     %[t3], [%[f], #0]\n\t"                                                        \
    "mul     %[v], %[v], %[t3]\n\t"                                                        \
    "ldr     %[t3], [%[f], #4]\n\t" MN_SM_MUL("%[v]", "%[t3]", "%[v]")                     \
    "bic     %[t1], %[v], #0xFF000000\n\t"                                                 \
    "sub     %[t1], %[t1], #0x1000000\n\t"                                                 \
    "sub     %[t2], %[t1], %[v]\n\t"                                                       \
    "lsl     %[t3], %[t1], #5\n\t"                                                         \
    "add     %[t3], %[t3], #0x10000000\n\t" MN_SM_MUL("%[t3]", "%[t3]", "%[t4]")           \
        MN_SM_MUL("%[t4]", "%[t4]", "%[t5]")                                               \
            MN_SM_DIV("%[t5]", 2, "and     %[u6], %[t5], #3", 1)                           \
                MN_SM_MUL("%[t4]", "%[t3]", "%[t1]") "add     %[t5], %[t5], %[t1]\n\t"     \
                    MN_SM_CONST("%[t1]", 715827883) /* 1/3 */             \
    MN_SM_MUL("%[t5]", "%[t1]", "%[t5]") "add     %[t5], %[t5], %[t4]\n\t"                 \
        MN_SM_DIV("%[t5]", 1, "and     %[u6], %[t5], #1", 0)                               \
    "add     %[t5], %[t5], %[t3]\n\t" MN_SM_CONST("%[t1]", 1895147668) /* exp(-1/8) */ \
        MN_SM_MUL("%[t1]", "%[t5]", "%[t5]") "add     %[t5], %[t5], %[t1]\n\t"             \
            MN_SM_BARREL(1672461947, 0x1000000) MN_SM_BARREL(1302514674, 0x2000000)             \
                MN_SM_BARREL(790015084, 0x4000000) MN_SM_BARREL(290630308, 0x8000000)      \
                    MN_SM_BARREL(39332535, 0x10000000) MN_SM_BARREL(720401, 0x20000000)    \
                        MN_SM_BARREL(242, 0x40000000)                                      \
    "cmp     %[v], #0\n\t"                                                                 \
    "ite     eq\n\t"                                                                       \
    "mvneq   %[v], #0x80000000\n\t"                                                        \
    "movne   %[v], %[t5]\n\t"
#define MN_SM_TEMPS                                                                        \
    [t1] "=&r"(t1), [t2] "=&r"(t2), [t3] "=&r"(t3), [t4] "=&r"(t4), [t5] "=&r"(t5),       \
        [u6] "=&r"(u6), [u7] "=&r"(u7)

/* The two passes over a row as asm loops in the schedule's order (cmsis_softmax.py: SUM_PRE
 * .. SUM_POST and SUM_SKIP; the output pass and OUT_SKIP), loop control included, so the
 * compilers add no per-element code of their own. An element below diff_min (f[4]; one
 * load more than the schedule, which keeps it in a register: zig's frame pointer leaves
 * too few) takes the short path. Each path has its own loop test, as in the schedule. */
MN_INLINE int32_t mn_sm_sum_pass(const int8_t *p, const int8_t *end, int32_t mx,
                                 const int32_t *f)
{
    int32_t v, sum = 0, t1, t2, t3, t4, t5, u6, u7;
    __asm__ volatile("1:\n\t"
                     "ldrsb   %[v], [%[p]], #1\n\t"
                     "subs    %[v], %[v], %[mx]\n\t"
                     "ldr     %[t1], [%[f], #16]\n\t"
                     "cmp     %[v], %[t1]\n\t"
                     "blt     2f\n\t" MN_SM_EXP
                         MN_SM_DIV("%[v]", 12, "ubfx    %[u6], %[v], #0, #12", 2047)
                     "add     %[sum], %[sum], %[v]\n\t"
                     "cmp     %[p], %[end]\n\t"
                     "bne     1b\n\t"
                     "b       3f\n\t"
                     "2:\n\t"
                     "cmp     %[p], %[end]\n\t"
                     "bne     1b\n\t"
                     "3:\n\t"
                     : [v] "=&r"(v), [sum] "+r"(sum), [p] "+r"(p), MN_SM_TEMPS
                     : [f] "r"(f), [end] "r"(end), [mx] "r"(mx)
                     : "cc", "memory");
    return sum;
}

/* output pass: exp(diff) * scale (f[2]), rounding shift by bits (f[3]), - 128, clamped to
 * 127 (the result is >= -128: both factors are >= 0); -128 below diff_min */
MN_INLINE void mn_sm_out_pass(const int8_t *p, int8_t *o, int8_t *o_end, int32_t mx,
                              const int32_t *f)
{
    int32_t v, t1, t2, t3, t4, t5, u6, u7;
    __asm__ volatile("1:\n\t"
                     "ldrsb   %[v], [%[p]], #1\n\t"
                     "subs    %[v], %[v], %[mx]\n\t"
                     "ldr     %[t1], [%[f], #16]\n\t"
                     "cmp     %[v], %[t1]\n\t"
                     "blt     2f\n\t" MN_SM_EXP "ldr     %[t1], [%[f], #8]\n\t"
                         MN_SM_MUL("%[t1]", "%[v]", "%[v]") "ldr     %[t3], [%[f], #12]\n\t"
                     "movs    %[t1], #1\n\t"
                     "lsls    %[t1], %[t3]\n\t"
                     "subs    %[t1], #1\n\t"
                     "and     %[t2], %[v], %[t1]\n\t"
                     "asrs    %[v], %[t3]\n\t"
                     "asrs    %[t1], #1\n\t"
                     "add     %[t1], %[t1], %[v], lsr #31\n\t"
                     "cmp     %[t2], %[t1]\n\t"
                     "it      gt\n\t"
                     "addgt   %[v], #1\n\t"
                     "subs    %[v], #128\n\t"
                     "cmp     %[v], #127\n\t"
                     "it      gt\n\t"
                     "movgt   %[v], #127\n\t"
                     "strb    %[v], [%[o]], #1\n\t"
                     "cmp     %[o], %[oe]\n\t"
                     "bne     1b\n\t"
                     "b       3f\n\t"
                     "2:\n\t"
                     "mvn     %[v], #127\n\t"
                     "strb    %[v], [%[o]], #1\n\t"
                     "cmp     %[o], %[oe]\n\t"
                     "bne     1b\n\t"
                     "3:\n\t"
                     : [v] "=&r"(v), [p] "+r"(p), [o] "+r"(o), MN_SM_TEMPS
                     : [f] "r"(f), [oe] "r"(o_end), [mx] "r"(mx)
                     : "cc", "memory");
}
#endif

int32_t mn_softmax_s8(const mn_softmax_args *a)
{
    const mn_softmax_args args_copy = *a; /* locals: output stores cannot alias them */
    a = &args_copy;
    const int32_t mask = 1 << a->input_left_shift;
    const int8_t *in = a->input;
    int8_t *out = a->output;
    if (a->input_left_shift < 0 || a->input_left_shift > 30 || a->depth < 1)
        return MN_ARG_ERROR;
#if MN_DSP
    /* the schedule's stack slots, and diff_min */
    int32_t frame[5] = {mask, a->input_mult, 0, 0, a->diff_min};
#endif
    for (int32_t r = 0; r < a->rows; r++) {
        int32_t mx = in[0];
        for (int32_t c = 1; c < a->depth; c++)
            mx = mn_max(mx, in[c]);
#if MN_DSP
        const int32_t sum = mn_sm_sum_pass(in, in + a->depth, mx, frame); /* depth >= 1 */
#else
        int32_t sum = 0;
        for (int32_t c = 0; c < a->depth; c++) {
            const int32_t diff = in[c] - mx;
            if (diff >= a->diff_min)
                sum = (int32_t)((uint32_t)sum +
                                (uint32_t)mn_divide_by_pot(
                                    mn_exp_on_negative(mn_mul_sat(diff * mask, a->input_mult)),
                                    MN_ACCUM_BITS));
        }
#endif
        const int32_t headroom = mn_clz((uint32_t)sum);
        const int32_t shifted =
            (int32_t)(((uint32_t)sum << headroom) - 0x80000000u); /* sum << hr - 1.0 */
        const int32_t scale = mn_one_over_one_plus_x(shifted);
        int32_t bits = MN_ACCUM_BITS - headroom + 31 - 8;
        bits = mn_min(mn_max(bits, 0), 31);
#if MN_DSP
        frame[2] = scale;
        frame[3] = bits;
        mn_sm_out_pass(in, out, out + a->depth, mx, frame);
#else
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
#endif
        in += a->depth;
        out += a->depth;
    }
    return MN_OK;
}
