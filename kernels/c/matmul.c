/* int8 x int8 matrix product with the input offset folded (CONV_2D 1x1, conv.c): our
 * implementation of the algorithm of CMSIS-NN's arm_nn_mat_mult_nt_t_s8, DSP branch as
 * kernels/schedules/matmul.py times it, Helium branch as mve_matmul.py does. */
#include "mcusim_nn.h"

#if !MN_MVE
/* ------------------------------------------------------------ int8 x int8, offset folded
 * dst[r * rhs_rows + c] = requant(bias[c] + sum_k (lhs[r, k] + lhs_offset) * rhs[c, k]),
 * lhs rows lhs_stride bytes apart. Structure of kernels/schedules/matmul.py
 * mat_mult_nt_t_s8: per pair of output channels the two filter sums (1 column per step),
 * then per pair of lhs rows 16 / 4 / 1 reduction columns per step for 2 rows x 2 filters,
 * the first row of each through a post-incremented pointer, the second at a register
 * offset; an odd last lhs row runs 1 row x 2 filters. With the DSP the column loops and
 * the per-output requantization are GNU inline assembly in the schedule's instruction
 * order (the loop index and its limit in memory, as GCC leaves them there for lack of
 * registers), so GCC and clang emit the same hot code; the #else branches compute the
 * same values in portable C (host tests). */

/* What the assembly steps read from memory (byte offsets in the comments): output
 * parameters and rows, and per channel pair the filter rows, the two filter sums and the
 * column loops' limits (GCC keeps them on the stack; here the steps reload them). */
typedef struct {
    const int32_t *shift; /* #0: shift + c */
    const int32_t *mult;  /* #4: mult + c */
    int32_t out_offset;   /* #8 */
    int32_t act_min;      /* #12 */
    int32_t act_max;      /* #16 */
    int8_t *d0;           /* #20: output row of the first lhs row */
    int8_t *d1;           /* #24: output row of the second lhs row */
    const int8_t *rhs;    /* #28: filter row c */
    int32_t sum0, sum1;   /* #32, #36: bias + lhs_offset * sum(filter row) */
    int32_t lim16;        /* #40: rhs_cols - 16 */
    int32_t k4;           /* #44: first column of the 4-column loop */
    int32_t lim4;         /* #48: rhs_cols - 4 */
    int32_t row2;         /* #52: 2 * rhs_rows, the output rows' step per row pair */
} mn_nt_ctx;

#if MN_DSP
/* One 4-column step, 2 lhs rows x 2 filters (16 MACs): pr / pl the first rows
 * (post-incremented), ro / LO the offsets of the second rows, X the even lanes of an lhs
 * word (the schedule's r7). */
#define MN_NT_CHUNK2x2(X, LO)                                                                \
    "ldr    %[t0], [%[pr]], #4\n\t"             /* filter c, 4 weights */                   \
    "sxtb16 %[t1], %[t0]\n\t"                                                                \
    "ldr    %[t2], [%[pl]], #4\n\t"             /* lhs row 0 */                              \
    "sxtb16 " X ", %[t2]\n\t"                                                                \
    "ldr    %[t3], [%[pr], %[ro]]\n\t"          /* filter c + 1 */                           \
    "sxtb16 %[t0], %[t0], ror #8\n\t"                                                        \
    "sxtb16 %[t2], %[t2], ror #8\n\t"                                                        \
    "smlad  %[a00], " X ", %[t1], %[a00]\n\t"                                                \
    "sxtb16 %[t4], %[t3]\n\t"                                                                \
    "smlad  %[a00], %[t2], %[t0], %[a00]\n\t"                                                \
    "sxtb16 %[t3], %[t3], ror #8\n\t"                                                        \
    "smlad  %[a01], " X ", %[t4], %[a01]\n\t"                                                \
    "smlad  %[a01], %[t2], %[t3], %[a01]\n\t"                                                \
    "ldr    %[t2], [%[pl], " LO "]\n\t"         /* lhs row 1 */                              \
    "sxtb16 " X ", %[t2]\n\t"                                                                \
    "sxtb16 %[t2], %[t2], ror #8\n\t"                                                        \
    "smlad  %[a10], " X ", %[t1], %[a10]\n\t"                                                \
    "smlad  %[a11], " X ", %[t4], %[a11]\n\t"                                                \
    "smlad  %[a10], %[t2], %[t0], %[a10]\n\t"                                                \
    "smlad  %[a11], %[t2], %[t3], %[a11]\n\t"
#define MN_NT_X4(chunk) chunk chunk chunk chunk

/* the odd lhs row: 1 row x 2 filters per 4 columns */
#define MN_NT_CHUNK1x2                                                                       \
    "ldr    %[t0], [%[pr]], #4\n\t"                                                          \
    "ldr    %[t1], [%[pr], %[ro]]\n\t"                                                       \
    "ldr    %[t2], [%[pl]], #4\n\t"                                                          \
    "sxtb16 %[t5], %[t0]\n\t"                                                                \
    "sxtb16 %[t3], %[t2]\n\t"                                                                \
    "sxtb16 %[t4], %[t1]\n\t"                                                                \
    "sxtb16 %[t0], %[t0], ror #8\n\t"                                                        \
    "sxtb16 %[t2], %[t2], ror #8\n\t"                                                        \
    "sxtb16 %[t1], %[t1], ror #8\n\t"                                                        \
    "smlad  %[a00], %[t3], %[t5], %[a00]\n\t"                                                \
    "smlad  %[a00], %[t2], %[t0], %[a00]\n\t"                                                \
    "smlad  %[a01], %[t3], %[t4], %[a01]\n\t"                                                \
    "smlad  %[a01], %[t2], %[t1], %[a01]\n\t"

/* Row setup (the first column loop of a row / row pair), t2 = &ctx: the filter row, the
 * accumulators from the filter sums, column index 0 and the loop's limit (ctx offset lim);
 * the next loop only reloads index and limit. Loop frame: the index at [sp], its limit at
 * [sp, #4]; the back edge re-reads both, as GCC's spilled loop counter does. */
#define MN_NT_SETUP2x2(lim)                                                                  \
    "ldr    %[pr], [%[t2], #28]\n\t"                                                         \
    "ldrd   %[a00], %[a01], [%[t2], #32]\n\t"                                                \
    "mov    %[a10], %[a00]\n\t"                                                              \
    "mov    %[a11], %[a01]\n\t"                                                              \
    "movs   %[t1], #0\n\t"                                                                   \
    "ldr    %[t0], [%[t2], #" #lim "]\n\t"
#define MN_NT_SETUP1x2(lim)                                                                  \
    "ldr    %[pr], [%[t2], #28]\n\t"                                                         \
    "ldrd   %[a00], %[a01], [%[t2], #32]\n\t"                                                \
    "movs   %[t1], #0\n\t"                                                                   \
    "ldr    %[t0], [%[t2], #" #lim "]\n\t"
#define MN_NT_NEXT "ldr    %[t1], [%[t2], #44]\n\tldr    %[t0], [%[t2], #48]\n\t"
#define MN_NT_ENTER "strd   %[t1], %[t0], [sp, #-8]!\n"
#define MN_NT_BACK(step)                                                                     \
    "ldr    %[t1], [sp]\n\t"                                                                 \
    "adds   %[t1], #" #step "\n\t"                                                           \
    "str    %[t1], [sp]\n\t"                                                                 \
    "ldr    %[t0], [sp, #4]\n\t"                                                             \
    "cmp    %[t1], %[t0]\n\t"                                                                \
    "ble    1b\n\t"
#define MN_NT_LEAVE "add    sp, #8\n"

/* A: "=&r" when the loop sets the accumulators up, "+&r" when it continues them */
#define MN_NT_OPS2x2(A)                                                                      \
    [pl] "+&r"(pl), [pr] A(pr), [a00] A(a00), [a01] A(a01), [a10] A(a10), [a11] A(a11),     \
        [t0] "=&r"(t0), [t1] "=&r"(t1), [t2] "+&r"(t2), [t3] "=&r"(t3), [t4] "=&r"(t4)
/* lhs rows lhs_stride == rhs_cols apart (one offset register): 13 registers */
#define MN_NT_LOOP2x2(A, head, step, body)                                                   \
    __asm__ volatile(head MN_NT_ENTER "1:\n\t" body MN_NT_BACK(step) MN_NT_LEAVE            \
                     : MN_NT_OPS2x2(A), [t5] "=&r"(t5)                                      \
                     : [ro] "r"(r_off)                                                      \
                     : "cc")
/* strided lhs rows (two offsets): 14 registers, r7 the fixed scratch; clang reserves r7
 * (frame pointer), so there the asm saves and restores it; GCC takes r7 as a clobber and
 * keeps it live across the loop without a push per row pair */
#ifdef __clang__
#define MN_NT_R7
#define MN_NT_PUSH_R7 "push   {r7}\n\t"
#define MN_NT_POP_R7 "\tpop    {r7}\n"
#else
#define MN_NT_R7 "r7",
#define MN_NT_PUSH_R7
#define MN_NT_POP_R7
#endif
#define MN_NT_LOOP2x2_STRIDED(A, head, step, body)                                           \
    __asm__ volatile(MN_NT_PUSH_R7 head MN_NT_ENTER "1:\n\t" body MN_NT_BACK(step)          \
                     MN_NT_LEAVE MN_NT_POP_R7                                               \
                     : MN_NT_OPS2x2(A)                                                      \
                     : [ro] "r"(r_off), [lo] "r"(l_off)                                     \
                     : MN_NT_R7 "cc")
#define MN_NT_LOOP1x2(A, head, step, body)                                                   \
    __asm__ volatile(head MN_NT_ENTER "1:\n\t" body MN_NT_BACK(step) MN_NT_LEAVE            \
                     : [pl] "+&r"(pl), [pr] A(pr), [a00] A(a00), [a01] A(a01),              \
                       [t0] "=&r"(t0), [t1] "=&r"(t1), [t2] "+&r"(t2), [t3] "=&r"(t3),      \
                       [t4] "=&r"(t4), [t5] "=&r"(t5)                                       \
                     : [ro] "r"(r_off)                                                      \
                     : "cc")
#define MN_NT_SET "=&r"
#define MN_NT_CONT "+&r"
#define MN_NT_C2x2 MN_NT_CHUNK2x2("%[t5]", "%[ro]")
#define MN_NT_C2x2_STRIDED MN_NT_CHUNK2x2("r7", "%[lo]")
#endif /* MN_DSP */

/* The reduction of one pair of lhs rows (v16 / v4: whether the 16- and 4-column loops
 * run, at least one of them; same: l_off == r_off): accumulators set up from ctx's filter
 * sums, pl and the returned filter pointer advanced past the columns done. */
MN_INLINE const int8_t *mn_nt_cols2x2(const int8_t **ppl, const mn_nt_ctx *ctx, int32_t *acc,
                                      int32_t r_off, int32_t l_off, const int32_t v16,
                                      const int32_t v4, const int32_t same)
{
    const int8_t *pl = *ppl, *pr;
    int32_t a00, a01, a10, a11;
#if MN_DSP
    int32_t t0, t1, t2 = (int32_t)(intptr_t)ctx, t3, t4, t5;
    if (same) {
        if (v16)
            MN_NT_LOOP2x2(MN_NT_SET, MN_NT_SETUP2x2(40), 16, MN_NT_X4(MN_NT_C2x2));
        if (v4 && v16) {
            t2 = (int32_t)(intptr_t)ctx;
            MN_NT_LOOP2x2(MN_NT_CONT, MN_NT_NEXT, 4, MN_NT_C2x2);
        } else if (v4) {
            MN_NT_LOOP2x2(MN_NT_SET, MN_NT_SETUP2x2(48), 4, MN_NT_C2x2);
        }
    } else {
        if (v16)
            MN_NT_LOOP2x2_STRIDED(MN_NT_SET, MN_NT_SETUP2x2(40), 16,
                                  MN_NT_X4(MN_NT_C2x2_STRIDED));
        if (v4 && v16) {
            t2 = (int32_t)(intptr_t)ctx;
            MN_NT_LOOP2x2_STRIDED(MN_NT_CONT, MN_NT_NEXT, 4, MN_NT_C2x2_STRIDED);
        } else if (v4) {
            MN_NT_LOOP2x2_STRIDED(MN_NT_SET, MN_NT_SETUP2x2(48), 4, MN_NT_C2x2_STRIDED);
        }
    }
    (void)t5;
#else
    (void)same, (void)v16;
    pr = ctx->rhs;
    a00 = a10 = ctx->sum0;
    a01 = a11 = ctx->sum1;
    const int32_t end = v4 ? ctx->lim4 + 4 : ctx->k4; /* columns of the 16/4 loops */
    for (int32_t k = 0; k + 4 <= end; k += 4) {
        const int32_t w0 = mn_read_s8x4_ia(&pr), x = mn_read_s8x4_ia(&pl);
        const int32_t w1 = mn_read_s8x4(pr + r_off), y = mn_read_s8x4(pl + l_off);
        const int32_t w0e = mn_sxtb16(w0), w0o = mn_sxtb16_ror8(w0);
        const int32_t w1e = mn_sxtb16(w1), w1o = mn_sxtb16_ror8(w1);
        a00 = mn_smlad(mn_sxtb16_ror8(x), w0o, mn_smlad(mn_sxtb16(x), w0e, a00));
        a01 = mn_smlad(mn_sxtb16_ror8(x), w1o, mn_smlad(mn_sxtb16(x), w1e, a01));
        a10 = mn_smlad(mn_sxtb16_ror8(y), w0o, mn_smlad(mn_sxtb16(y), w0e, a10));
        a11 = mn_smlad(mn_sxtb16_ror8(y), w1o, mn_smlad(mn_sxtb16(y), w1e, a11));
    }
#endif
    acc[0] = a00, acc[1] = a01, acc[2] = a10, acc[3] = a11;
    *ppl = pl;
    return pr;
}

/* the odd last lhs row: 1 row x 2 filters */
MN_INLINE const int8_t *mn_nt_cols1x2(const int8_t **ppl, const mn_nt_ctx *ctx, int32_t *acc,
                                      int32_t r_off, const int32_t v16, const int32_t v4)
{
    const int8_t *pl = *ppl, *pr;
    int32_t a00, a01;
#if MN_DSP
    int32_t t0, t1, t2 = (int32_t)(intptr_t)ctx, t3, t4, t5;
    if (v16)
        MN_NT_LOOP1x2(MN_NT_SET, MN_NT_SETUP1x2(40), 16, MN_NT_X4(MN_NT_CHUNK1x2));
    if (v4 && v16) {
        t2 = (int32_t)(intptr_t)ctx;
        MN_NT_LOOP1x2(MN_NT_CONT, MN_NT_NEXT, 4, MN_NT_CHUNK1x2);
    } else if (v4) {
        MN_NT_LOOP1x2(MN_NT_SET, MN_NT_SETUP1x2(48), 4, MN_NT_CHUNK1x2);
    }
#else
    (void)v16;
    pr = ctx->rhs;
    a00 = ctx->sum0;
    a01 = ctx->sum1;
    const int32_t end = v4 ? ctx->lim4 + 4 : ctx->k4; /* columns of the 16/4 loops */
    for (int32_t k = 0; k + 4 <= end; k += 4) {
        const int32_t w0 = mn_read_s8x4_ia(&pr), x = mn_read_s8x4_ia(&pl);
        const int32_t w1 = mn_read_s8x4(pr + r_off);
        a00 = mn_smlad(mn_sxtb16_ror8(x), mn_sxtb16_ror8(w0),
                       mn_smlad(mn_sxtb16(x), mn_sxtb16(w0), a00));
        a01 = mn_smlad(mn_sxtb16_ror8(x), mn_sxtb16_ror8(w1),
                       mn_smlad(mn_sxtb16(x), mn_sxtb16(w1), a01));
    }
#endif
    acc[0] = a00, acc[1] = a01;
    *ppl = pl;
    return pr;
}

/* the two filter sums of a channel pair: n >= 1 columns, the second row at pr + off */
MN_INLINE void mn_nt_wsum(const int8_t *pr, int32_t off, int32_t n, int32_t *s0, int32_t *s1)
{
    int32_t a = 0, b = 0;
#if MN_DSP
    int32_t t0, t1;
    const int32_t o = off - 1; /* after the post-increment */
    __asm__ volatile("1:\n\t"
                     "ldrsb  %[t0], [%[pr]], #1\n\t"
                     "ldrsb  %[t1], [%[pr], %[o]]\n\t"
                     "add    %[a], %[t0]\n\t"
                     "add    %[b], %[t1]\n\t"
                     "subs   %[n], #1\n\t"
                     "bne    1b\n"
                     : [pr] "+&r"(pr), [a] "+&r"(a), [b] "+&r"(b), [n] "+&r"(n),
                       [t0] "=&r"(t0), [t1] "=&r"(t1)
                     : [o] "r"(o)
                     : "cc");
#else
    for (; n > 0; n--, pr++) {
        a += pr[0];
        b += pr[off];
    }
#endif
    *s0 = a;
    *s1 = b;
}

/* The outputs of a row pair (kernels/schedules/common.py gcc_requant_text), one asm
 * statement: per output requantize with shift / mult of channel c + ch (ch 0 or 1: byte
 * offset 0 / 4 from ctx's pointers), add the output offset, clamp, store at output row
 * `row` (ctx offset 20 = d0, 24 = d1) + ch. OUT loads shift, multiplier and output offset;
 * LIVE (the same channel's output of the other lhs row) reuses them. The rounding divide
 * runs for shift <= 0 only (shift > 0 has none). */
#if MN_DSP
#define MN_NT_RQ(ACC)                                                                        \
    "bic    %[l], %[s], %[s], asr #31\n\t"  /* left = max(shift, 0) */                       \
    "lsl    %[l], " ACC ", %[l]\n\t"                                                         \
    "movs   %[h], #0\n\t"                                                                    \
    "mov    %[v], #0x40000000\n\t"                                                           \
    "smlal  %[v], %[h], %[l], %[m]\n\t"     /* acc * M + 2^30 */                             \
    "lsrs   %[v], %[v], #31\n\t"                                                             \
    "cmp    %[s], #0\n\t"                                                                    \
    "orr    %[v], %[v], %[h], lsl #1\n\t"   /* bits [62:31] */                               \
    "bgt    2f\n\t"                                                                          \
    "rsbs   %[h], %[s], #0\n\t"             /* right = -shift */                             \
    "movs   %[k], #1\n\t"                                                                    \
    "lsls   %[k], %[h]\n\t"                                                                  \
    "subs   %[k], #1\n\t"                   /* remainder mask */                             \
    "and    %[l], %[v], %[k]\n\t"                                                            \
    "asrs   %[v], %[h]\n\t"                 /* quotient, N = negative */                     \
    "asr    %[k], %[k], #1\n\t"                                                              \
    "it     mi\n\t"                                                                          \
    "addmi  %[k], #1\n\t"                                                                    \
    "cmp    %[l], %[k]\n\t"                                                                  \
    "it     gt\n\t"                                                                          \
    "addgt  %[v], #1\n"                                                                      \
    "2:\n\t"
#define MN_NT_CLAMP_STORE(row, ch)                                                           \
    "add    %[v], %[o]\n\t"                                                                  \
    "ldr    %[k], [%[ctx], #12]\n\t"                                                         \
    "cmp    %[v], %[k]\n\t"                                                                  \
    "it     lt\n\t"                                                                          \
    "movlt  %[v], %[k]\n\t"                                                                  \
    "ldr    %[k], [%[ctx], #16]\n\t"                                                         \
    "cmp    %[v], %[k]\n\t"                                                                  \
    "it     ge\n\t"                                                                          \
    "movge  %[v], %[k]\n\t"                                                                  \
    "ldr    %[h], [%[ctx], #" #row "]\n\t"                                                   \
    "strb   %[v], [%[h], #" #ch "]\n\t"
#define MN_NT_OUT(ACC, row, ch)                                                              \
    "ldr    %[s], [%[ctx], #0]\n\t"                                                          \
    "ldr    %[s], [%[s], #" #ch "*4]\n\t"                                                    \
    "ldr    %[m], [%[ctx], #4]\n\t"                                                          \
    "ldr    %[m], [%[m], #" #ch "*4]\n\t" MN_NT_RQ(ACC)                                     \
    "ldr    %[o], [%[ctx], #8]\n\t" MN_NT_CLAMP_STORE(row, ch)
#define MN_NT_LIVE(ACC, row, ch) MN_NT_RQ(ACC) MN_NT_CLAMP_STORE(row, ch)
#define MN_NT_OUT_TEMPS                                                                      \
    [s] "=&r"(s_), [m] "=&r"(m_), [o] "=&r"(o_), [v] "=&r"(v_), [h] "=&r"(h_), [l] "=&r"(l_), \
        [k] "=&r"(k_)
#endif

MN_INLINE void mn_nt_out2x2(mn_nt_ctx *ctx, const int32_t *acc)
{
#if MN_DSP
    int32_t s_, m_, o_, v_, h_, l_, k_;
    __asm__ volatile(MN_NT_OUT("%[a00]", 20, 0) MN_NT_LIVE("%[a10]", 24, 0)
                     MN_NT_OUT("%[a01]", 20, 1) MN_NT_LIVE("%[a11]", 24, 1)
                     "ldr    %[k], [%[ctx], #52]\n\t" /* both output rows += 2 rows */
                     "ldr    %[h], [%[ctx], #20]\n\t"
                     "add    %[h], %[k]\n\t"
                     "str    %[h], [%[ctx], #20]\n\t"
                     "ldr    %[h], [%[ctx], #24]\n\t"
                     "add    %[h], %[k]\n\t"
                     "str    %[h], [%[ctx], #24]\n"
                     : MN_NT_OUT_TEMPS
                     : [a00] "r"(acc[0]), [a01] "r"(acc[1]), [a10] "r"(acc[2]),
                       [a11] "r"(acc[3]), [ctx] "r"(ctx)
                     : "cc", "memory");
#else
    for (int32_t ch = 0; ch < 2; ch++) {
        const int32_t s = ctx->shift[ch], m = ctx->mult[ch];
        ctx->d0[ch] = mn_requant_clamp(acc[ch], m, s, ctx->out_offset, ctx->act_min,
                                       ctx->act_max);
        ctx->d1[ch] = mn_requant_clamp(acc[2 + ch], m, s, ctx->out_offset, ctx->act_min,
                                       ctx->act_max);
    }
    ctx->d0 += ctx->row2;
    ctx->d1 += ctx->row2;
#endif
}

MN_INLINE void mn_nt_out1x2(const mn_nt_ctx *ctx, const int32_t *acc)
{
#if MN_DSP
    int32_t s_, m_, o_, v_, h_, l_, k_;
    __asm__ volatile(MN_NT_OUT("%[a00]", 20, 0) MN_NT_OUT("%[a01]", 20, 1)
                     : MN_NT_OUT_TEMPS
                     : [a00] "r"(acc[0]), [a01] "r"(acc[1]), [ctx] "r"(ctx)
                     : "cc", "memory");
#else
    for (int32_t ch = 0; ch < 2; ch++)
        ctx->d0[ch] = mn_requant_clamp(acc[ch], ctx->mult[ch], ctx->shift[ch],
                                       ctx->out_offset, ctx->act_min, ctx->act_max);
#endif
}

/* The product for one shape class, fixed at compile time so the row loops carry no tests:
 * v16 / v4 / v1 whether the 16-, 4- and 1-column loops run, `same` lhs_stride == rhs_cols. */
MN_INLINE void mn_nt_body(const int8_t *lhs, const int8_t *rhs, const int32_t *bias,
                          int8_t *dst, const int32_t *mult, const int32_t *shift,
                          int32_t lhs_rows, int32_t rhs_rows, int32_t rhs_cols,
                          int32_t lhs_offset, int32_t out_offset, int32_t act_min,
                          int32_t act_max, int32_t lhs_stride, const int32_t v16,
                          const int32_t v4, const int32_t v1, const int32_t same)
{
    const int32_t r_off = rhs_cols - 4; /* second rhs row, after a post-increment of 4 */
    const int32_t l_off = lhs_stride - 4;
    mn_nt_ctx ctx;
    ctx.out_offset = out_offset;
    ctx.act_min = act_min;
    ctx.act_max = act_max;
    ctx.lim16 = rhs_cols - 16;
    ctx.k4 = rhs_cols & ~15;
    ctx.lim4 = rhs_cols - 4;
    ctx.row2 = 2 * rhs_rows;
    int32_t c = 0;
    for (; c + 1 < rhs_rows; c += 2) {
        int32_t sum0, sum1;
        mn_nt_wsum(rhs, rhs_cols, rhs_cols, &sum0, &sum1);
        ctx.sum0 = sum0 * lhs_offset + (bias ? bias[c] : 0);
        ctx.sum1 = sum1 * lhs_offset + (bias ? bias[c + 1] : 0);
        ctx.rhs = rhs;
        ctx.shift = shift + c;
        ctx.mult = mult + c;
        ctx.d0 = dst + c; /* advanced by the output step */
        ctx.d1 = dst + c + rhs_rows;
        const int8_t *pl = lhs;
        for (int32_t pairs = lhs_rows >> 1; pairs > 0; pairs--) {
            const int8_t *pr = rhs;
            int32_t acc[4] = {ctx.sum0, ctx.sum1, ctx.sum0, ctx.sum1};
            if (v16 || v4)
                pr = mn_nt_cols2x2(&pl, &ctx, acc, r_off, l_off, v16, v4, same);
            if (v1) {
                for (int32_t k = rhs_cols & 3; k > 0; k--) {
                    const int32_t w0 = pr[0], w1 = pr[rhs_cols];
                    const int32_t x0 = pl[0], x1 = pl[lhs_stride];
                    acc[0] += x0 * w0;
                    acc[1] += x0 * w1;
                    acc[2] += x1 * w0;
                    acc[3] += x1 * w1;
                    pr++;
                    pl++;
                }
            }
            mn_nt_out2x2(&ctx, acc);
            pl += 2 * lhs_stride - rhs_cols;
        }
        if (lhs_rows & 1) { /* odd last lhs row */
            const int8_t *pr = rhs;
            int32_t acc[2] = {ctx.sum0, ctx.sum1};
            if (v16 || v4)
                pr = mn_nt_cols1x2(&pl, &ctx, acc, r_off, v16, v4);
            if (v1) {
                for (int32_t k = rhs_cols & 3; k > 0; k--) {
                    const int32_t x0 = *pl++;
                    acc[0] += x0 * pr[0];
                    acc[1] += x0 * pr[rhs_cols];
                    pr++;
                }
            }
            mn_nt_out1x2(&ctx, acc);
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

__attribute__((noinline)) void
mn_mat_mult_nt_t_s8(const int8_t *lhs, const int8_t *rhs, const int32_t *bias,
                    int8_t *dst, const int32_t *mult, const int32_t *shift,
                    int32_t lhs_rows, int32_t rhs_rows, int32_t rhs_cols,
                    int32_t lhs_offset, int32_t out_offset, int32_t act_min,
                    int32_t act_max, int32_t lhs_stride)
{
    if (rhs_cols <= 0)
        return;
    const int32_t sel = (rhs_cols >= 16) * 8 + ((rhs_cols & 15) >= 4) * 4 +
                        ((rhs_cols & 3) != 0) * 2 + (lhs_stride == rhs_cols);
#define MN_NT_CASE(n)                                                                        \
    case n:                                                                                  \
        mn_nt_body(lhs, rhs, bias, dst, mult, shift, lhs_rows, rhs_rows, rhs_cols,           \
                   lhs_offset, out_offset, act_min, act_max, lhs_stride, (n) >> 3 & 1,       \
                   (n) >> 2 & 1, (n) >> 1 & 1, (n)&1);                                       \
        break;
    switch (sel) {
        MN_NT_CASE(2) MN_NT_CASE(3) MN_NT_CASE(4) MN_NT_CASE(5) MN_NT_CASE(6) MN_NT_CASE(7)
        MN_NT_CASE(8) MN_NT_CASE(9) MN_NT_CASE(10) MN_NT_CASE(11) MN_NT_CASE(12)
        MN_NT_CASE(13) MN_NT_CASE(14) MN_NT_CASE(15)
    default:
        break;
    }
#undef MN_NT_CASE
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
