/* FULLY_CONNECTED int8 (our implementation of the vector x matrix loop CMSIS-NN's
 * arm_fully_connected_s8 runs on Armv7E-M; kernels/schedules/cmsis_fc.py, matmul.py):
 * per batch row, two weight rows per pass, 4 columns per step (the input word widened
 * once with the input offset by SXTAB16, the weights by SXTB16, 4 SMLAD), the 4-column
 * loop unrolled 4x (CMSIS-NN asks GCC for it with an optimize("unroll-loops") pragma),
 * scalar leftover columns, then an odd last row. */
#include "mcusim_nn.h"

#if !MN_MVE
#if MN_DSP
/* The column loops in the schedule's instruction order (matmul.py VM_X4 / VM_CHUNK_W0 and
 * their odd-row forms), so both compilers run the same loop. MN_FC_MAC: one weight word
 * (in w) widened by SXTB16 into odd/even lanes and multiplied with the input's lanes
 * (xo / x) into ACC. */
#define MN_FC_MAC(ACC)                                                                     \
    "sxtb16  %[wo], %[w], ror #8\n\t"                                                      \
    "sxtb16  %[w], %[w]\n\t"                                                               \
    "smlad   " ACC ", %[wo], %[xo], " ACC "\n\t"                                           \
    "smlad   " ACC ", %[w], %[x], " ACC "\n\t"
/* input word at [pl + K] + the offset pair: odd lanes to xo, even lanes to x */
#define MN_FC_X(K)                                                                         \
    "ldr     %[x], [%[pl], #" #K "]\n\t"                                                   \
    "sxtab16 %[xo], %[off], %[x], ror #8\n\t"
#define MN_FC_XE "sxtab16 %[x], %[off], %[x]\n\t"
/* the first word of a 4x step: each pointer copied to c first and loaded through it (GCC's
 * unrolled loop keeps the post-incremented copy: an address dependency) */
#define MN_FC_W0_ROW0                                                                      \
    "mov     %[c], %[pl]\n\t"                                                              \
    "ldr     %[x], [%[c]]\n\t"                                                             \
    "sxtab16 %[xo], %[off], %[x], ror #8\n\t"                                              \
    "mov     %[c], %[p0]\n\t" MN_FC_XE "ldr     %[w], [%[c]]\n\t" MN_FC_MAC("%[a0]")
#define MN_FC_WK_ROW0(K) MN_FC_X(K) "ldr     %[w], [%[p0], #" #K "]\n\t" MN_FC_XE MN_FC_MAC("%[a0]")
#define MN_FC_W3_ROW0                                                                      \
    MN_FC_X(12) "adds    %[pl], %[pl], #16\n\t"                                            \
                "ldr     %[w], [%[p0], #12]\n\t" MN_FC_XE "adds    %[p0], %[p0], #16\n\t"  \
                MN_FC_MAC("%[a0]")
#define MN_FC_TEMPS                                                                        \
    [x] "=&r"(x), [xo] "=&r"(xo), [w] "=&r"(w), [wo] "=&r"(wo), [c] "=&r"(c)

/* 16 columns per step of two rows (n = a multiple of 4 column words) */
MN_INLINE void mn_fc_pair_x4(const int8_t **pl, const int8_t **p0, const int8_t **p1,
                             int32_t *a0, int32_t *a1, int32_t n, int32_t off)
{
    int32_t x, xo, w, wo, c;
    __asm__ volatile("1:\n\t" MN_FC_W0_ROW0 "mov     %[c], %[p1]\n\t"
                     "ldr     %[w], [%[c]]\n\t" MN_FC_MAC("%[a1]") MN_FC_WK_ROW0(4)
                     "ldr     %[w], [%[p1], #4]\n\t" MN_FC_MAC("%[a1]") MN_FC_WK_ROW0(8)
                     "ldr     %[w], [%[p1], #8]\n\t" MN_FC_MAC("%[a1]") MN_FC_W3_ROW0
                     "ldr     %[w], [%[p1], #12]\n\t"
                     "adds    %[p1], %[p1], #16\n\t" MN_FC_MAC("%[a1]")
                     "subs    %[n], %[n], #4\n\t"
                     "bne     1b\n\t"
                     : [pl] "+r"(*pl), [p0] "+r"(*p0), [p1] "+r"(*p1), [a0] "+r"(*a0),
                       [a1] "+r"(*a1), [n] "+r"(n), MN_FC_TEMPS
                     : [off] "r"(off)
                     : "cc", "memory");
}

/* 16 columns per step of one row */
MN_INLINE void mn_fc_row_x4(const int8_t **pl, const int8_t **p0, int32_t *a0, int32_t n,
                            int32_t off)
{
    int32_t x, xo, w, wo, c;
    __asm__ volatile("1:\n\t" MN_FC_W0_ROW0 MN_FC_WK_ROW0(4) MN_FC_WK_ROW0(8) MN_FC_W3_ROW0
                     "subs    %[n], %[n], #4\n\t"
                     "bne     1b\n\t"
                     : [pl] "+r"(*pl), [p0] "+r"(*p0), [a0] "+r"(*a0), [n] "+r"(n),
                       MN_FC_TEMPS
                     : [off] "r"(off)
                     : "cc", "memory");
}

/* 4 columns per step (the n < 4 steps before the 4x loop), two rows / one row */
MN_INLINE void mn_fc_pair_x1(const int8_t **pl, const int8_t **p0, const int8_t **p1,
                             int32_t *a0, int32_t *a1, int32_t n, int32_t off)
{
    int32_t x, xo, w, wo, c;
    __asm__ volatile("1:\n\t"
                     "ldr     %[x], [%[pl]], #4\n\t"
                     "sxtab16 %[xo], %[off], %[x], ror #8\n\t" MN_FC_XE
                     "ldr     %[w], [%[p0]], #4\n\t" MN_FC_MAC("%[a0]")
                     "ldr     %[w], [%[p1]], #4\n\t" MN_FC_MAC("%[a1]")
                     "subs    %[n], %[n], #1\n\t"
                     "bne     1b\n\t"
                     : [pl] "+r"(*pl), [p0] "+r"(*p0), [p1] "+r"(*p1), [a0] "+r"(*a0),
                       [a1] "+r"(*a1), [n] "+r"(n), MN_FC_TEMPS
                     : [off] "r"(off)
                     : "cc", "memory");
    (void)c;
}
MN_INLINE void mn_fc_row_x1(const int8_t **pl, const int8_t **p0, int32_t *a0, int32_t n,
                            int32_t off)
{
    int32_t x, xo, w, wo, c;
    __asm__ volatile("1:\n\t"
                     "ldr     %[x], [%[pl]], #4\n\t"
                     "sxtab16 %[xo], %[off], %[x], ror #8\n\t" MN_FC_XE
                     "ldr     %[w], [%[p0]], #4\n\t" MN_FC_MAC("%[a0]")
                     "subs    %[n], %[n], #1\n\t"
                     "bne     1b\n\t"
                     : [pl] "+r"(*pl), [p0] "+r"(*p0), [a0] "+r"(*a0), [n] "+r"(n),
                       MN_FC_TEMPS
                     : [off] "r"(off)
                     : "cc", "memory");
    (void)c;
}

/* Per-tensor requantization of a row pair, the schedule's VM_PAIR_OUT in its order: the
 * hoisted shift facts are read from q (GCC keeps them on the stack), the common path
 * (shift <= 0, first value >= 0 after the shift) straight through, the others branched to
 * as GCC's build of CMSIS-NN does. Bit-exact with mn_requant_clamp. */
typedef struct {
    int32_t left;       /* #0: max(shift, 0) */
    int32_t mult;       /* #4 */
    int32_t shift;      /* #8 */
    int32_t mask;       /* #12: (1 << right) - 1 */
    int32_t right;      /* #16: max(-shift, 0) */
    int32_t threshold;  /* #20: mask >> 1 */
    int32_t out_offset; /* #24 */
    int32_t act_min;    /* #28 */
    int32_t act_max;    /* #32 */
} mn_vm_rq;

MN_INLINE void mn_vm_rq_init(mn_vm_rq *q, int32_t mult, int32_t shift, int32_t out_offset,
                             int32_t act_min, int32_t act_max)
{
    q->left = shift > 0 ? shift : 0;
    q->right = shift > 0 ? 0 : -shift;
    q->mult = mult;
    q->shift = shift;
    q->mask = (int32_t)((1u << q->right) - 1u);
    q->threshold = q->mask >> 1;
    q->out_offset = out_offset;
    q->act_min = act_min;
    q->act_max = act_max;
}

/* the second row's high multiply (left shift 0 on this path) and both roundings; NEG:
 * the first value's threshold adjustment when it is negative */
#define MN_VM_SECOND(NEG)                                                                  \
    "ldr     %[t7], [%[q], #4]\n\t"                                                         \
    "smlal   %[t1], %[t4], %[t7], %[a1]\n\t"                                                \
    "lsrs    %[a1], %[t1], #31\n\t"                                                         \
    "orr     %[t7], %[a1], %[t4], lsl #1\n\t"                                               \
    "ldr     %[t4], [%[q], #20]\n\t"                                                        \
    "and     %[t1], %[t5], %[t7]\n\t"                                                       \
    "asrs    %[t7], %[t7], %[t6]\n\t" NEG "cmp     %[t8], %[t4]\n\t"                       \
    "ldr     %[t0], [%[q], #20]\n\t"                                                        \
    "it      gt\n\t"                                                                        \
    "addgt   %[a0], %[a0], #1\n\t"                                                          \
    "cmp     %[t7], #0\n\t"                                                                 \
    "it      lt\n\t"                                                                        \
    "addlt   %[t0], %[t0], #1\n\t"                                                          \
    "cmp     %[t0], %[t1]\n\t"                                                              \
    "it      lt\n\t"                                                                        \
    "addlt   %[t7], %[t7], #1\n\t"

MN_INLINE void mn_vm_pair_out(int32_t a0, int32_t a1, int8_t **dst, const mn_vm_rq *q)
{
    int32_t t0, t1, t4, t5, t6, t7, t8;
    __asm__ volatile(
        "ldr     %[t4], [%[q], #0]\n\t"
        "ldr     %[t7], [%[q], #4]\n\t"
        "ldr     %[t5], [%[q], #8]\n\t"
        "lsls    %[a0], %[a0], %[t4]\n\t"
        "mov     %[t1], #0x40000000\n\t"
        "movs    %[t0], #0\n\t"
        "smlal   %[t1], %[t0], %[a0], %[t7]\n\t"
        "lsrs    %[a0], %[t1], #31\n\t"
        "cmp     %[t5], #0\n\t"
        "orr     %[a0], %[a0], %[t0], lsl #1\n\t"
        "ble     2f\n\t"
        /* shift > 0: the second value shifted left too, no divide */
        "lsls    %[a1], %[a1], %[t4]\n\t"
        "mov     %[t1], #0x40000000\n\t"
        "movs    %[t0], #0\n\t"
        "smlal   %[t1], %[t0], %[a1], %[t7]\n\t"
        "lsrs    %[t7], %[t1], #31\n\t"
        "orr     %[t7], %[t7], %[t0], lsl #1\n\t"
        "b       4f\n"
        "2:\n\t"
        "ldr     %[t5], [%[q], #12]\n\t"
        "ldr     %[t6], [%[q], #16]\n\t"
        "and     %[t8], %[a0], %[t5]\n\t"
        "asrs    %[a0], %[a0], %[t6]\n\t"
        "mov     %[t1], #0x40000000\n\t"
        "mov     %[t4], #0\n\t"
        "bmi     3f\n\t"
        MN_VM_SECOND("") "b       4f\n"
        /* first value negative: its threshold is one more */
        "3:\n\t" MN_VM_SECOND("adds    %[t4], %[t4], #1\n\t")
        "4:\n\t"
        "ldr     %[t8], [%[q], #24]\n\t"
        "ldr     %[t1], [%[q], #28]\n\t"
        "ldr     %[t6], [%[q], #32]\n\t"
        "add     %[a0], %[a0], %[t8]\n\t"
        "add     %[t7], %[t7], %[t8]\n\t"
        "cmp     %[a0], %[t1]\n\t"
        "it      lt\n\t"
        "movlt   %[a0], %[t1]\n\t"
        "cmp     %[t7], %[t1]\n\t"
        "it      lt\n\t"
        "movlt   %[t7], %[t1]\n\t"
        "cmp     %[a0], %[t6]\n\t"
        "it      ge\n\t"
        "movge   %[a0], %[t6]\n\t"
        "cmp     %[t7], %[t6]\n\t"
        "it      ge\n\t"
        "movge   %[t7], %[t6]\n\t"
        "strb    %[a0], [%[d]], #1\n\t"
        "strb    %[t7], [%[d]], #1\n\t"
        : [a0] "+&r"(a0), [a1] "+&r"(a1), [d] "+&r"(*dst), [t0] "=&r"(t0), [t1] "=&r"(t1),
          [t4] "=&r"(t4), [t5] "=&r"(t5), [t6] "=&r"(t6), [t7] "=&r"(t7), [t8] "=&r"(t8)
        : [q] "r"(q)
        : "cc", "memory");
}
#else
/* portable: 4 columns per step, the same sums */
MN_INLINE int32_t mn_fc_dot4(int32_t x, int32_t w, int32_t off, int32_t acc)
{
    int32_t xo = mn_sxtab16_ror8(off, x), xe = mn_sxtab16(off, x);
    acc = mn_smlad(mn_sxtb16_ror8(w), xo, acc);
    return mn_smlad(mn_sxtb16(w), xe, acc);
}
MN_INLINE void mn_fc_pair_x1(const int8_t **pl, const int8_t **p0, const int8_t **p1,
                             int32_t *a0, int32_t *a1, int32_t n, int32_t off)
{
    for (; n > 0; n--) {
        int32_t x = mn_read_s8x4_ia(pl);
        *a0 = mn_fc_dot4(x, mn_read_s8x4_ia(p0), off, *a0);
        *a1 = mn_fc_dot4(x, mn_read_s8x4_ia(p1), off, *a1);
    }
}
MN_INLINE void mn_fc_row_x1(const int8_t **pl, const int8_t **p0, int32_t *a0, int32_t n,
                            int32_t off)
{
    for (; n > 0; n--)
        *a0 = mn_fc_dot4(mn_read_s8x4_ia(pl), mn_read_s8x4_ia(p0), off, *a0);
}
#define mn_fc_pair_x4 mn_fc_pair_x1
#define mn_fc_row_x4 mn_fc_row_x1
#endif

/* One body for both CMSIS-NN entry points: per_ch (a constant in each instance) reads the
 * multiplier/shift of each row from the arrays; per-tensor uses the scalar pair m0/s0, so
 * the compiler hoists its shift masks out of the row loop as it does for
 * arm_nn_vec_mat_mult_t_s8. */
MN_INLINE void mn_vmm_body(const int8_t *lhs, const int8_t *rhs, const int32_t *bias,
                           int8_t *dst, int32_t lhs_offset, int32_t out_offset,
                           const int32_t *mult, const int32_t *shift, int32_t m0, int32_t s0,
                           int32_t cols, int32_t rows, int32_t act_min, int32_t act_max,
                           const int per_ch)
{
    const int32_t off2 = mn_pair16(lhs_offset);
    const int32_t quads = cols >> 2;
    /* no bias: read zeros (unconditional loads, as the schedule's). A conditional load in an
     * IT block (clang: ITEE + LDRDNE of the bias) from a region with a Unicorn read hook
     * (flash under the crosscheck tracer) leaves Unicorn's IT state stale: the first
     * instruction at the next branch target was skipped. */
    const int32_t zeros[2] = {0, 0};
    const int32_t *bp = bias ? bias : zeros;
    const int32_t bstep = bias ? 2 : 0;
#if MN_DSP
    /* the shift facts of the row-pair path (GCC's CMSIS-NN build computes them only when
     * there is a pair: with one row it branches straight to the odd-row code) */
    mn_vm_rq q;
    if (!per_ch && rows >= 2)
        mn_vm_rq_init(&q, m0, s0, out_offset, act_min, act_max);
#endif
    int32_t r = 0;
    for (int32_t pairs = rows >> 1; pairs > 0; pairs--, r += 2) {
        int32_t a0 = bp[0];
        int32_t a1 = bp[1];
        bp += bstep;
        const int8_t *pl = lhs;
        const int8_t *p0 = rhs;
        const int8_t *p1 = rhs + cols;
        rhs += 2 * cols;
        if (quads & 3)
            mn_fc_pair_x1(&pl, &p0, &p1, &a0, &a1, quads & 3, off2);
        if (quads >> 2)
            mn_fc_pair_x4(&pl, &p0, &p1, &a0, &a1, quads & ~3, off2);
        for (int32_t n = cols & 3; n > 0; n--) {
            int32_t x = *pl++ + lhs_offset;
            a0 += x * *p0++;
            a1 += x * *p1++;
        }
#if MN_DSP
        if (!per_ch) {
            mn_vm_pair_out(a0, a1, &dst, &q);
            continue;
        }
#endif
        dst[0] = mn_requant_clamp(a0, per_ch ? mult[r] : m0, per_ch ? shift[r] : s0,
                                  out_offset, act_min, act_max);
        dst[1] = mn_requant_clamp(a1, per_ch ? mult[r + 1] : m0, per_ch ? shift[r + 1] : s0,
                                  out_offset, act_min, act_max);
        dst += 2;
    }
    if (rows & 1) {
        int32_t a0 = bp[0];
        const int8_t *pl = lhs;
        const int8_t *p0 = rhs;
        if (quads & 3)
            mn_fc_row_x1(&pl, &p0, &a0, quads & 3, off2);
        if (quads >> 2)
            mn_fc_row_x4(&pl, &p0, &a0, quads & ~3, off2);
        for (int32_t n = cols & 3; n > 0; n--) {
            int32_t x = *pl++ + lhs_offset;
            a0 += x * *p0++;
        }
        dst[0] = mn_requant_clamp(a0, per_ch ? mult[r] : m0, per_ch ? shift[r] : s0,
                                  out_offset, act_min, act_max);
    }
}

#else /* MN_MVE */

/* Helium: per weight row, 16 columns per VMLADAVA with tail predication; the row's sum
 * (VADDVA) times the input offset is added once, as CMSIS-NN's MVE vec_mat_mult does. */
MN_INLINE void mn_vmm_body(const int8_t *lhs, const int8_t *rhs, const int32_t *bias,
                           int8_t *dst, int32_t lhs_offset, int32_t out_offset,
                           const int32_t *mult, const int32_t *shift, int32_t m0, int32_t s0,
                           int32_t cols, int32_t rows, int32_t act_min, int32_t act_max,
                           const int per_ch)
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
        dst[r] = mn_requant_clamp(acc, per_ch ? mult[r] : m0, per_ch ? shift[r] : s0,
                                  out_offset, act_min, act_max);
    }
}

#endif /* MN_MVE */

/* arm_nn_vec_mat_mult_t_s8: per-tensor multiplier and shift, passed as scalars */
__attribute__((noinline)) static void
mn_vec_mat_mult_t_s8(const int8_t *lhs, const int8_t *rhs, const int32_t *bias, int8_t *dst,
                     int32_t lhs_offset, int32_t out_offset, int32_t mult, int32_t shift,
                     int32_t cols, int32_t rows, int32_t act_min, int32_t act_max)
{
    mn_vmm_body(lhs, rhs, bias, dst, lhs_offset, out_offset, 0, 0, mult, shift, cols, rows,
                act_min, act_max, 0);
}

/* arm_nn_vec_mat_mult_t_per_ch_s8: one multiplier and shift per output row */
__attribute__((noinline)) static void
mn_vec_mat_mult_t_per_ch_s8(const int8_t *lhs, const int8_t *rhs, const int32_t *bias,
                            int8_t *dst, int32_t lhs_offset, int32_t out_offset,
                            const int32_t *mult, const int32_t *shift, int32_t cols,
                            int32_t rows, int32_t act_min, int32_t act_max)
{
    mn_vmm_body(lhs, rhs, bias, dst, lhs_offset, out_offset, mult, shift, 0, 0, cols, rows,
                act_min, act_max, 1);
}

int32_t mn_fully_connected_s8(const mn_fc_args *a)
{
    const mn_fc_args args_copy = *a; /* locals: output stores cannot alias them */
    a = &args_copy;
    if (a->in_depth < 1 || a->out_depth < 1)
        return MN_ARG_ERROR;
    const int8_t *in = a->input;
    int8_t *out = a->output;
    for (int32_t b = 0; b < a->batches; b++) {
        if (a->per_channel)
            mn_vec_mat_mult_t_per_ch_s8(in, a->weights, a->bias, out, a->in_offset,
                                        a->out_offset, a->mult, a->shift, a->in_depth,
                                        a->out_depth, a->act_min, a->act_max);
        else
            mn_vec_mat_mult_t_s8(in, a->weights, a->bias, out, a->in_offset, a->out_offset,
                                 a->mult[0], a->shift[0], a->in_depth, a->out_depth,
                                 a->act_min, a->act_max);
        in += a->in_depth;
        out += a->out_depth;
    }
    return MN_OK;
}
