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
 * offset; an odd last lhs row runs 1 row x 2 filters. With the DSP the channel-pair loop
 * is one function of our own in assembly per shape class (mn_nt_rows_*), in the
 * schedule's block order (NT_PAIR_SETUP, NT_WSUM, NT_PAIR_OFFS; per row pair
 * NT_ROW_SETUP, the column loops with their index and limit on the stack, the four
 * outputs, NT_ROW_END; NT_PAIR_END), so both compilers run the same code and add no moves
 * or spills around it; the portable branch computes the same values in C. */

/* One call's parameters, copied to the assembly's stack frame (byte offsets = frame
 * offsets); the running fields (shift, mult, d0, d1, rhs, sum0/1, pairs, idx, bias, chp,
 * dst_c) are the assembly's loop state. */
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
    int32_t lim4;         /* #44: rhs_cols - 4 */
    int32_t row2;         /* #48: 2 * rhs_rows, the output rows' step per row pair */
    const int8_t *lhs;    /* #52: first lhs row */
    int32_t pairs;        /* #56: row pairs left */
    int32_t lstep;        /* #60: 2 * lhs_stride - rhs_cols: next row pair after a row */
    int32_t idx;          /* #64: the column loops' index */
    int32_t r_off, l_off; /* #68, #72: second rows after a 4-byte post-increment */
    int32_t cols;         /* #76: rhs_cols */
    int32_t cols1;        /* #80: rhs_cols & 3 */
    int32_t odd;          /* #84: lhs_rows & 1 */
    const int32_t *bias;  /* #88: bias + c, or 0 */
    int32_t lhs_offset;   /* #92 */
    int32_t chp;          /* #96: channel pairs left */
    int8_t *dst_c;        /* #100: dst + c */
    int32_t rhs_rows;     /* #104 */
    int32_t lhs_rows;     /* #108 */
    int32_t wsum_off;     /* #112: rhs_cols - 1, the second filter row after a 1-byte step */
    int32_t pad[3];       /* #116: 32 words, copied as four blocks of 8 */
} mn_nt_ctx;

#if MN_DSP
/* One 4-column step, 2 lhs rows x 2 filters (16 MACs): matmul.py NT_CHUNK. r0 / r1 the
 * first lhs row / first filter row (post-incremented), r3 / r2 the offsets of the second
 * ones, r8-r11 the accumulators (row 0 ch 0, row 0 ch 1, row 1 ch 0, row 1 ch 1). */
#define MN_NR_CHUNK2                                                                         \
    "ldr    r4, [r1], #4\n\t"                                                                \
    "sxtb16 r5, r4\n\t"                                                                      \
    "ldr    r6, [r0], #4\n\t"                                                                \
    "sxtb16 r7, r6\n\t"                                                                      \
    "ldr    ip, [r1, r2]\n\t"                                                                \
    "sxtb16 r4, r4, ror #8\n\t"                                                              \
    "sxtb16 r6, r6, ror #8\n\t"                                                              \
    "smlad  r8, r7, r5, r8\n\t"                                                              \
    "sxtb16 lr, ip\n\t"                                                                      \
    "smlad  r8, r6, r4, r8\n\t"                                                              \
    "sxtb16 ip, ip, ror #8\n\t"                                                              \
    "smlad  r9, r7, lr, r9\n\t"                                                              \
    "smlad  r9, r6, ip, r9\n\t"                                                              \
    "ldr    r6, [r0, r3]\n\t"                                                                \
    "sxtb16 r7, r6\n\t"                                                                      \
    "sxtb16 r6, r6, ror #8\n\t"                                                              \
    "smlad  r10, r7, r5, r10\n\t"                                                            \
    "smlad  r11, r7, lr, r11\n\t"                                                            \
    "smlad  r10, r6, r4, r10\n\t"                                                            \
    "smlad  r11, r6, ip, r11\n\t"
/* the odd last lhs row: 1 row x 2 filters per 4 columns (NT_ODDROW_CHUNK) */
#define MN_NR_CHUNK1                                                                         \
    "ldr    r4, [r1], #4\n\t"                                                                \
    "ldr    r5, [r1, r2]\n\t"                                                                \
    "ldr    r6, [r0], #4\n\t"                                                                \
    "sxtb16 r7, r4\n\t"                                                                      \
    "sxtb16 ip, r6\n\t"                                                                      \
    "sxtb16 lr, r5\n\t"                                                                      \
    "sxtb16 r4, r4, ror #8\n\t"                                                              \
    "sxtb16 r6, r6, ror #8\n\t"                                                              \
    "sxtb16 r5, r5, ror #8\n\t"                                                              \
    "smlad  r8, ip, r7, r8\n\t"                                                              \
    "smlad  r8, r6, r4, r8\n\t"                                                              \
    "smlad  r9, ip, lr, r9\n\t"                                                              \
    "smlad  r9, r6, r5, r9\n\t"
/* NT_ROW_SETUP: the filter row, the accumulators from the filter sums, column index 0;
 * no 16-column step: on to label 3 */
#define MN_NR_SETUP                                                                          \
    "ldr    r1, [sp, #28]\n\t"                                                               \
    "ldrd   r8, r9, [sp, #32]\n\t"                                                           \
    "mov    r10, r8\n\t"                                                                     \
    "mov    r11, r9\n\t"                                                                     \
    "movs   r5, #0\n\t"                                                                      \
    "str    r5, [sp, #64]\n\t"                                                               \
    "ldr    r4, [sp, #40]\n\t"                                                               \
    "cmp    r4, #0\n\t"                                                                      \
    "blt    3f\n"
/* NT_LOOP_END: the index and its limit (frame offset LIM) re-read from the stack */
#define MN_NR_BACK(step, LIM, label)                                                         \
    "ldr    r5, [sp, #64]\n\t"                                                               \
    "adds   r5, #" #step "\n\t"                                                              \
    "str    r5, [sp, #64]\n\t"                                                               \
    "ldr    r4, [sp, #" #LIM "]\n\t"                                                         \
    "cmp    r5, r4\n\t"                                                                      \
    "ble    " #label "b\n"
/* The 16- and 4-column loops of a row (pair) with step CHUNK, present when V16 / V4 is 1;
 * label 3 follows the 16-column loop (MN_NR_SETUP branches there when there is none) */
#define MN_NR_COLS(CHUNK, V16, V4)                                                           \
    ".if " #V16 "\n"                                                                         \
    "8:\n\t" CHUNK CHUNK CHUNK CHUNK MN_NR_BACK(16, 40, 8) ".endif\n"                        \
    "3:\n\t"                                                                                 \
    ".if " #V4 "\n"                                                                          \
    "4:\n\t" CHUNK MN_NR_BACK(4, 44, 4) ".endif\n\t"
/* One output (gcc_requant_text): shift r1 and multiplier r4 of channel ch loaded through
 * the frame's pointers (OUT) or still live (LIVE: the same channel, the other lhs row);
 * acc << max(shift, 0), the doubled high product rounded, the rounding divide for shift
 * <= 0, + output offset (r5), clamp (limits reloaded), store at output row `row` + ch.
 * Scratch: r6 (value), r7, ip, lr. */
#define MN_NR_RQ(ACC)                                                                        \
    "bic    ip, r1, r1, asr #31\n\t"                                                         \
    "lsl    ip, " ACC ", ip\n\t"                                                             \
    "movs   r7, #0\n\t"                                                                      \
    "mov    r6, #0x40000000\n\t"                                                             \
    "smlal  r6, r7, ip, r4\n\t"                                                              \
    "lsrs   r6, r6, #31\n\t"                                                                 \
    "cmp    r1, #0\n\t"                                                                      \
    "orr    r6, r6, r7, lsl #1\n\t"                                                          \
    "bgt    2f\n\t"                                                                          \
    "rsbs   r7, r1, #0\n\t"                                                                  \
    "movs   lr, #1\n\t"                                                                      \
    "lsls   lr, r7\n\t"                                                                      \
    "subs   lr, #1\n\t"                                                                      \
    "and    ip, r6, lr\n\t"                                                                  \
    "asrs   r6, r7\n\t"                                                                      \
    "asr    lr, lr, #1\n\t"                                                                  \
    "it     mi\n\t"                                                                          \
    "addmi  lr, #1\n\t"                                                                      \
    "cmp    ip, lr\n\t"                                                                      \
    "it     gt\n\t"                                                                          \
    "addgt  r6, #1\n"                                                                        \
    "2:\n\t"
#define MN_NR_CLAMP_STORE(row, ch)                                                           \
    "add    r6, r5\n\t"                                                                      \
    "ldr    lr, [sp, #12]\n\t"                                                               \
    "cmp    r6, lr\n\t"                                                                      \
    "it     lt\n\t"                                                                          \
    "movlt  r6, lr\n\t"                                                                      \
    "ldr    lr, [sp, #16]\n\t"                                                               \
    "cmp    r6, lr\n\t"                                                                      \
    "it     ge\n\t"                                                                          \
    "movge  r6, lr\n\t"                                                                      \
    "ldr    r7, [sp, #" #row "]\n\t"                                                         \
    "strb   r6, [r7, #" #ch "]\n\t"
#define MN_NR_OUT(ACC, row, ch)                                                              \
    "ldr    r1, [sp, #0]\n\t"                                                                \
    "ldr    r1, [r1, #" #ch "*4]\n\t"                                                        \
    "ldr    r4, [sp, #4]\n\t"                                                                \
    "ldr    r4, [r4, #" #ch "*4]\n\t" MN_NR_RQ(ACC) "ldr    r5, [sp, #8]\n\t"               \
        MN_NR_CLAMP_STORE(row, ch)
#define MN_NR_LIVE(ACC, row, ch) MN_NR_RQ(ACC) MN_NR_CLAMP_STORE(row, ch)

/* The channel pairs of one call (r0: an mn_nt_ctx): per pair the filter sums, then the
 * lhs rows; V16 / V4 / V1 whether the 16-, 4- and 1-column loops run (assembler .if on the
 * digits). Registers across a row pair: r0 the lhs row (post-incremented by the column
 * loops; NT_ROW_END adds lstep), r2 / r3 the second filter / lhs row's offsets (r_off /
 * l_off; the 1-column loops read at + 4). */
#define MN_NT_ROWS_FN(NAME, V16, V4, V1)                                                     \
    __attribute__((naked, noinline, used)) static void NAME(const mn_nt_ctx *c)             \
    {                                                                                        \
        __asm__ volatile(                                                                    \
            "push   {r4, r5, r6, r7, r8, r9, r10, r11, lr}\n\t"                              \
            "sub    sp, sp, #128\n\t"                                                        \
            "mov    ip, sp\n\t"                                                              \
            "ldm    r0!, {r1, r2, r3, r4, r5, r6, r7, r8}\n\t"                               \
            "stm    ip!, {r1, r2, r3, r4, r5, r6, r7, r8}\n\t"                               \
            "ldm    r0!, {r1, r2, r3, r4, r5, r6, r7, r8}\n\t"                               \
            "stm    ip!, {r1, r2, r3, r4, r5, r6, r7, r8}\n\t"                               \
            "ldm    r0!, {r1, r2, r3, r4, r5, r6, r7, r8}\n\t"                               \
            "stm    ip!, {r1, r2, r3, r4, r5, r6, r7, r8}\n\t"                               \
            "ldm    r0, {r1, r2, r3, r4, r5, r6, r7, r8}\n\t"                                \
            "stm    ip, {r1, r2, r3, r4, r5, r6, r7, r8}\n\t"                                \
            "ldr    r4, [sp, #96]\n\t"                                                       \
            "cmp    r4, #0\n\t"                                                              \
            "beq    12f\n"                                                                   \
            /* NT_PAIR_SETUP, the filter sums (NT_WSUM), NT_PAIR_OFFS */                     \
            "10:\n\t"                                                                        \
            "ldr    r0, [sp, #52]\n\t"                                                       \
            "ldr    r1, [sp, #28]\n\t"                                                       \
            "ldr    r2, [sp, #112]\n\t"                                                      \
            "movs   r8, #0\n\t"                                                              \
            "movs   r9, #0\n\t"                                                              \
            "ldr    ip, [sp, #76]\n"                                                         \
            "11:\n\t"                                                                        \
            "ldrsb  r4, [r1], #1\n\t"                                                        \
            "ldrsb  r5, [r1, r2]\n\t"                                                        \
            "add    r8, r4\n\t"                                                              \
            "add    r9, r5\n\t"                                                              \
            "subs   ip, #1\n\t"                                                              \
            "bne    11b\n\t"                                                                 \
            "ldr    r3, [sp, #92]\n\t"                                                       \
            "mul    r8, r8, r3\n\t"                                                          \
            "mul    r9, r9, r3\n\t"                                                          \
            "ldr    r5, [sp, #88]\n\t"                                                       \
            "cbz    r5, 13f\n\t"                                                             \
            "ldr    r4, [r5], #4\n\t"                                                        \
            "add    r8, r4\n\t"                                                              \
            "ldr    r4, [r5], #4\n\t"                                                        \
            "add    r9, r4\n\t"                                                              \
            "str    r5, [sp, #88]\n"                                                         \
            "13:\n\t"                                                                        \
            "strd   r8, r9, [sp, #32]\n\t"                                                   \
            "ldr    r4, [sp, #100]\n\t"                                                      \
            "str    r4, [sp, #20]\n\t"                                                       \
            "ldr    r5, [sp, #104]\n\t"                                                      \
            "add    r4, r5\n\t"                                                              \
            "str    r4, [sp, #24]\n\t"                                                       \
            "ldrd   r2, r3, [sp, #68]\n\t"                                                   \
            "ldr    ip, [sp, #108]\n\t"                                                      \
            "lsrs   ip, ip, #1\n\t"                                                          \
            "str    ip, [sp, #56]\n\t"                                                       \
            "beq    7f\n"                                                                    \
            "1:\n\t" MN_NR_SETUP                                                             \
            MN_NR_COLS(MN_NR_CHUNK2, V16, V4)                                                \
            ".if " #V1 "\n\t"                                                                \
            "adds   r2, #4\n\t"                                                              \
            "adds   r3, #4\n\t"                                                              \
            "ldr    lr, [sp, #76]\n"                                                         \
            "5:\n\t"                                                                         \
            "ldrsb  r4, [r1]\n\t"                                                            \
            "ldrsb  r5, [r1, r2]\n\t"                                                        \
            "ldrsb  r6, [r0]\n\t"                                                            \
            "ldrsb  r7, [r0, r3]\n\t"                                                        \
            "mla    r8, r6, r4, r8\n\t"                                                      \
            "mla    r9, r6, r5, r9\n\t"                                                      \
            "mla    r10, r7, r4, r10\n\t"                                                    \
            "mla    r11, r7, r5, r11\n\t"                                                    \
            "adds   r1, #1\n\t"                                                              \
            "adds   r0, #1\n\t"                                                              \
            "ldr    r5, [sp, #64]\n\t"                                                       \
            "adds   r5, #1\n\t"                                                              \
            "str    r5, [sp, #64]\n\t"                                                       \
            "cmp    r5, lr\n\t"                                                              \
            "blt    5b\n\t"                                                                  \
            "subs   r2, #4\n\t"                                                              \
            "subs   r3, #4\n\t"                                                              \
            ".endif\n\t" MN_NR_OUT("r8", 20, 0) MN_NR_LIVE("r10", 24, 0)                    \
                MN_NR_OUT("r9", 20, 1) MN_NR_LIVE("r11", 24, 1)                              \
            /* NT_ROW_END: both output rows 2 rows on, the next lhs row pair */              \
            "ldr    ip, [sp, #48]\n\t"                                                       \
            "ldr    r4, [sp, #20]\n\t"                                                       \
            "add    r4, ip\n\t"                                                              \
            "str    r4, [sp, #20]\n\t"                                                       \
            "ldr    r4, [sp, #24]\n\t"                                                       \
            "add    r4, ip\n\t"                                                              \
            "str    r4, [sp, #24]\n\t"                                                       \
            "ldr    r4, [sp, #56]\n\t"                                                       \
            "ldr    r1, [sp, #60]\n\t"                                                       \
            "subs   r4, #1\n\t"                                                              \
            "add    r0, r1\n\t"                                                              \
            "str    r4, [sp, #56]\n\t"                                                       \
            "bne    1b\n"                                                                    \
            /* the odd last lhs row: 1 row x 2 filters, its two outputs */                   \
            "7:\n\t"                                                                         \
            "ldr    r4, [sp, #84]\n\t"                                                       \
            "cmp    r4, #0\n\t"                                                              \
            "beq    9f\n\t" MN_NR_SETUP                                                      \
            MN_NR_COLS(MN_NR_CHUNK1, V16, V4)                                                \
            ".if " #V1 "\n\t"                                                                \
            "adds   r2, #4\n\t"                                                              \
            "ldr    ip, [sp, #80]\n"                                                         \
            "6:\n\t"                                                                         \
            "ldrsb  r4, [r1]\n\t"                                                            \
            "ldrsb  r5, [r1, r2]\n\t"                                                        \
            "ldrsb  r6, [r0], #1\n\t"                                                        \
            "adds   r1, #1\n\t"                                                              \
            "mla    r8, r6, r4, r8\n\t"                                                      \
            "mla    r9, r6, r5, r9\n\t"                                                      \
            "subs   ip, #1\n\t"                                                              \
            "bne    6b\n\t"                                                                  \
            ".endif\n\t" MN_NR_OUT("r8", 20, 0) MN_NR_OUT("r9", 20, 1)                      \
            /* NT_PAIR_END: the next two filter rows, parameters and outputs */              \
            "9:\n\t"                                                                         \
            "ldr    r4, [sp, #76]\n\t"                                                       \
            "ldr    r1, [sp, #28]\n\t"                                                       \
            "add    r1, r1, r4, lsl #1\n\t"                                                  \
            "str    r1, [sp, #28]\n\t"                                                       \
            "ldrd   r4, r5, [sp, #0]\n\t"                                                    \
            "adds   r4, #8\n\t"                                                              \
            "adds   r5, #8\n\t"                                                              \
            "strd   r4, r5, [sp, #0]\n\t"                                                    \
            "ldr    r4, [sp, #100]\n\t"                                                      \
            "adds   r4, #2\n\t"                                                              \
            "str    r4, [sp, #100]\n\t"                                                      \
            "ldr    r4, [sp, #96]\n\t"                                                       \
            "subs   r4, #1\n\t"                                                              \
            "str    r4, [sp, #96]\n\t"                                                       \
            "bne    10b\n"                                                                   \
            "12:\n\t"                                                                        \
            "add    sp, sp, #128\n\t"                                                        \
            "pop    {r4, r5, r6, r7, r8, r9, r10, r11, pc}\n");                              \
    }
MN_NT_ROWS_FN(mn_nt_rows_16, 1, 0, 0)
MN_NT_ROWS_FN(mn_nt_rows_16_4, 1, 1, 0)
MN_NT_ROWS_FN(mn_nt_rows_16_1, 1, 0, 1)
MN_NT_ROWS_FN(mn_nt_rows_16_4_1, 1, 1, 1)
MN_NT_ROWS_FN(mn_nt_rows_4, 0, 1, 0)
MN_NT_ROWS_FN(mn_nt_rows_4_1, 0, 1, 1)
MN_NT_ROWS_FN(mn_nt_rows_1, 0, 0, 1)

MN_INLINE void mn_nt_rows(const mn_nt_ctx *c, const int32_t v16, const int32_t v4,
                          const int32_t v1)
{
    if (v16 && v4 && v1)
        mn_nt_rows_16_4_1(c);
    else if (v16 && v4)
        mn_nt_rows_16_4(c);
    else if (v16 && v1)
        mn_nt_rows_16_1(c);
    else if (v16)
        mn_nt_rows_16(c);
    else if (v4 && v1)
        mn_nt_rows_4_1(c);
    else if (v4)
        mn_nt_rows_4(c);
    else
        mn_nt_rows_1(c);
}
#else
/* portable: the same sums and outputs in C */
MN_INLINE void mn_nt_rows(const mn_nt_ctx *c, const int32_t v16, const int32_t v4,
                          const int32_t v1)
{
    (void)v16, (void)v4, (void)v1;
    const int32_t ls = c->l_off + 4, rs = c->cols;
    for (int32_t ch = 0; ch < 2 * c->chp; ch += 2) {
        const int8_t *w = c->rhs + ch * rs;
        int32_t s0 = 0, s1 = 0;
        for (int32_t k = 0; k < rs; k++) {
            s0 += w[k];
            s1 += w[rs + k];
        }
        s0 = s0 * c->lhs_offset + (c->bias ? c->bias[ch] : 0);
        s1 = s1 * c->lhs_offset + (c->bias ? c->bias[ch + 1] : 0);
        const int32_t m0 = c->mult[ch], m1 = c->mult[ch + 1];
        const int32_t h0 = c->shift[ch], h1 = c->shift[ch + 1];
        const int8_t *l = c->lhs;
        int8_t *d0 = c->dst_c + ch, *d1 = d0 + c->rhs_rows;
        for (int32_t p = 0; p < c->lhs_rows >> 1; p++) {
            int32_t a00 = s0, a01 = s1, a10 = s0, a11 = s1;
            for (int32_t k = 0; k < rs; k++) {
                const int32_t x0 = l[k], x1 = l[ls + k];
                a00 += x0 * w[k];
                a01 += x0 * w[rs + k];
                a10 += x1 * w[k];
                a11 += x1 * w[rs + k];
            }
            d0[0] = mn_requant_clamp(a00, m0, h0, c->out_offset, c->act_min, c->act_max);
            d0[1] = mn_requant_clamp(a01, m1, h1, c->out_offset, c->act_min, c->act_max);
            d1[0] = mn_requant_clamp(a10, m0, h0, c->out_offset, c->act_min, c->act_max);
            d1[1] = mn_requant_clamp(a11, m1, h1, c->out_offset, c->act_min, c->act_max);
            d0 += c->row2;
            d1 += c->row2;
            l += rs + c->lstep;
        }
        if (c->odd) {
            int32_t a00 = s0, a01 = s1;
            for (int32_t k = 0; k < rs; k++) {
                a00 += l[k] * w[k];
                a01 += l[k] * w[rs + k];
            }
            d0[0] = mn_requant_clamp(a00, m0, h0, c->out_offset, c->act_min, c->act_max);
            d0[1] = mn_requant_clamp(a01, m1, h1, c->out_offset, c->act_min, c->act_max);
        }
    }
}
#endif /* MN_DSP */

/* The product for one shape class, fixed at compile time: v16 / v4 / v1 whether the 16-,
 * 4- and 1-column loops run. The channel pairs run in mn_nt_rows (assembly with the DSP);
 * an odd last output channel here. */
MN_INLINE void mn_nt_body(const int8_t *lhs, const int8_t *rhs, const int32_t *bias,
                          int8_t *dst, const int32_t *mult, const int32_t *shift,
                          int32_t lhs_rows, int32_t rhs_rows, int32_t rhs_cols,
                          int32_t lhs_offset, int32_t out_offset, int32_t act_min,
                          int32_t act_max, int32_t lhs_stride, const int32_t v16,
                          const int32_t v4, const int32_t v1)
{
    mn_nt_ctx ctx;
    ctx.shift = shift;
    ctx.mult = mult;
    ctx.out_offset = out_offset;
    ctx.act_min = act_min;
    ctx.act_max = act_max;
    ctx.rhs = rhs;
    ctx.lim16 = rhs_cols - 16;
    ctx.lim4 = rhs_cols - 4;
    ctx.row2 = 2 * rhs_rows;
    ctx.lhs = lhs;
    ctx.lstep = 2 * lhs_stride - rhs_cols;
    ctx.r_off = rhs_cols - 4; /* second rhs row, after a post-increment of 4 */
    ctx.l_off = lhs_stride - 4;
    ctx.cols = rhs_cols;
    ctx.cols1 = rhs_cols & 3;
    ctx.odd = lhs_rows & 1;
    ctx.bias = bias;
    ctx.lhs_offset = lhs_offset;
    ctx.chp = rhs_rows >> 1;
    ctx.dst_c = dst;
    ctx.rhs_rows = rhs_rows;
    ctx.lhs_rows = lhs_rows;
    ctx.wsum_off = rhs_cols - 1;
    mn_nt_rows(&ctx, v16, v4, v1);
    const int32_t c = rhs_rows & ~1;
    if (c < rhs_rows) { /* odd last output channel: scalar, offset added per element */
        const int8_t *l = lhs;
        const int8_t *w = rhs + c * rhs_cols;
        int8_t *d = dst + c;
        for (int32_t r = 0; r < lhs_rows; r++) {
            const int8_t *pr = w;
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
    const int32_t sel = (rhs_cols >= 16) * 4 + ((rhs_cols & 15) >= 4) * 2 + ((rhs_cols & 3) != 0);
#define MN_NT_CASE(n)                                                                        \
    case n:                                                                                  \
        mn_nt_body(lhs, rhs, bias, dst, mult, shift, lhs_rows, rhs_rows, rhs_cols,           \
                   lhs_offset, out_offset, act_min, act_max, lhs_stride, (n) >> 2 & 1,       \
                   (n) >> 1 & 1, (n)&1);                                                     \
        break;
    switch (sel) {
        MN_NT_CASE(1) MN_NT_CASE(2) MN_NT_CASE(3) MN_NT_CASE(4) MN_NT_CASE(5) MN_NT_CASE(6)
        MN_NT_CASE(7)
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
