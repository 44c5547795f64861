/* FULLY_CONNECTED int8 (our implementation of the vector x matrix loop CMSIS-NN's
 * arm_fully_connected_s8 runs on Armv7E-M; kernels/schedules/cmsis_fc.py, matmul.py):
 * per batch row, two weight rows per pass, 4 columns per step (the input word widened
 * once with the input offset by SXTAB16, the weights by SXTB16, 4 SMLAD), the 4-column
 * loop unrolled 4x (CMSIS-NN asks GCC for it with an optimize("unroll-loops") pragma),
 * scalar leftover columns, then an odd last row. With the DSP the per-tensor function is
 * one naked assembly function in the schedule's blocks (mn_vec_mat_mult_t_s8 below); the
 * per-channel one is C around inline-assembly column loops; the portable and Helium
 * branches are C. */
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

/* ---- arm_nn_vec_mat_mult_t_s8 (per-tensor) in assembly on the DSP cores ----
 * The whole function in the blocks kernels/schedules/matmul.py times from GCC 12.2's build
 * of CMSIS-NN's: VM_ENTRY, VM_PAIRS_SETUP; per row pair VM_ROW_SETUP (both biases, the row
 * pointers, the peeled-step tests), the 4-column steps before the unrolled loop
 * (VM_CHUNK_W0), VM_X4_ENTRY, the 16-column loop (VM_X4), VM_ROW_MID, the 1-column steps
 * (VM_SCALAR), the two outputs (VM_PAIR_OUT), VM_ROW_END; then VM_PAIRS_END, the odd-row
 * test and the odd row (its output as GCC's requantize + clamp + store), VM_EXIT. Written
 * by hand so both compilers run the same code: C around inline-asm loops put each
 * compiler's own glue (a call level, spills, branches) around them. The per-pair glue
 * executes as many instructions of each kind as GCC's: the library keeps its pointers and
 * counters on the stack around the unrolled loop, so where our registers would do, the
 * block keeps GCC's spills and reloads. The row-pair loop comes in four copies (16-column
 * steps or not x bias or not), picked once per call as GCC's build picks its loop copies.
 *
 * Frame (r5 = sp; the arguments above it at #140 + 4k):
 *   #0 max(shift, 0)  #4 mult  #8 shift  #12 remainder mask  #16 max(-shift, 0)
 *   #20 threshold (mask >> 1)  #24 out_offset  #28 act_min  #32 act_max  #36 lhs
 *   #40 first row of the next pair  #44 cols  #48 cols / 4  #52 cols & 3
 *   #56 / #88 / #92 the 1-column steps' input / row bases  #60 pairs  #64 bias (running)
 *   #68 dst  #72 lhs_offset  #76 offset pair  #80 pairs done  #84 2 * cols
 *   #96 bytes the unrolled loop walks  #100 its step count (spill)
 * Arguments: #140 lhs_offset  #144 out_offset  #148 mult  #152 shift  #156 cols
 *   #160 rows  #164 act_min  #168 act_max.
 * Registers across a pair: r1 / r0 the two weight rows, r4 the input, r2 / r3 the sums,
 * r10 the offset pair, r11 the output. */

/* the second row's high multiply (left shift 0 on this path) and both roundings; NEG:
 * the first value's threshold adjustment when it is negative */
#define MN_VM_SECOND(NEG)                                                                  \
    "ldr     r7, [r5, #4]\n\t"                                                             \
    "smlal   r1, r4, r7, r3\n\t"                                                           \
    "lsrs    r3, r1, #31\n\t"                                                              \
    "orr     r7, r3, r4, lsl #1\n\t"                                                       \
    "ldr     r4, [r5, #20]\n\t"                                                            \
    "and     r1, ip, r7\n\t"                                                               \
    "asrs    r7, r7, r6\n\t" NEG "cmp     r8, r4\n\t"                                      \
    "ldr     r0, [r5, #20]\n\t"                                                            \
    "it      gt\n\t"                                                                       \
    "addgt   r2, r2, #1\n\t"                                                               \
    "cmp     r7, #0\n\t"                                                                   \
    "it      lt\n\t"                                                                       \
    "addlt   r0, r0, #1\n\t"                                                               \
    "cmp     r0, r1\n\t"                                                                   \
    "it      lt\n\t"                                                                       \
    "addlt   r7, r7, #1\n\t"

/* VM_PAIR_OUT on r2 / r3 (frame #0-#32): the common path (shift <= 0,
 * first value >= 0 after the shift) straight through, the others branched to as GCC's
 * build does; the clamp block also reloads what VM_ROW_END uses (r3: pairs, r4 / ip, and
 * r0 as GCC's does). Scratch r0, r1, r4-r8; the outputs through r11. */
#define MN_VM_OUT_ASM                                                                      \
    "ldr     r4, [r5, #0]\n\t"                                                             \
    "ldr     r7, [r5, #4]\n\t"                                                             \
    "ldr     ip, [r5, #8]\n\t"                                                             \
    "lsls    r2, r2, r4\n\t"                                                               \
    "mov     r1, #0x40000000\n\t"                                                          \
    "movs    r0, #0\n\t"                                                                   \
    "smlal   r1, r0, r2, r7\n\t"                                                           \
    "lsrs    r2, r1, #31\n\t"                                                              \
    "cmp     ip, #0\n\t"                                                                   \
    "orr     r2, r2, r0, lsl #1\n\t"                                                       \
    "ble     7f\n\t"                                                                       \
    /* shift > 0: the second value shifted left too, no divide */                          \
    "lsls    r3, r3, r4\n\t"                                                               \
    "mov     r1, #0x40000000\n\t"                                                          \
    "movs    r0, #0\n\t"                                                                   \
    "smlal   r1, r0, r3, r7\n\t"                                                           \
    "lsrs    r7, r1, #31\n\t"                                                              \
    "orr     r7, r7, r0, lsl #1\n\t"                                                       \
    "b       10f\n"                                                                        \
    "7:\n\t"                                                                               \
    "ldr     ip, [r5, #12]\n\t"                                                            \
    "ldr     r6, [r5, #16]\n\t"                                                            \
    "and     r8, r2, ip\n\t"                                                               \
    "asrs    r2, r2, r6\n\t"                                                               \
    "mov     r1, #0x40000000\n\t"                                                          \
    "mov     r4, #0\n\t"                                                                   \
    "bmi     8f\n\t"                                                                       \
    MN_VM_SECOND("") "b       10f\n"                                                       \
    /* first value negative: its threshold is one more */                                  \
    "8:\n\t" MN_VM_SECOND("adds    r4, r4, #1\n\t")                                        \
    "10:\n\t"                                                                              \
    "ldr     r8, [r5, #24]\n\t"                                                            \
    "ldr     r1, [r5, #28]\n\t"                                                            \
    "ldr     r6, [r5, #32]\n\t"                                                            \
    "ldr     r0, [r5, #68]\n\t"                                                            \
    "ldr     r3, [r5, #60]\n\t"                                                            \
    "ldr     ip, [r5, #44]\n\t"                                                            \
    "ldr     r4, [r5, #84]\n\t"                                                            \
    "add     r2, r2, r8\n\t"                                                               \
    "add     r7, r7, r8\n\t"                                                               \
    "cmp     r2, r1\n\t"                                                                   \
    "it      lt\n\t"                                                                       \
    "movlt   r2, r1\n\t"                                                                   \
    "cmp     r7, r1\n\t"                                                                   \
    "it      lt\n\t"                                                                       \
    "movlt   r7, r1\n\t"                                                                   \
    "cmp     r2, r6\n\t"                                                                   \
    "it      ge\n\t"                                                                       \
    "movge   r2, r6\n\t"                                                                   \
    "cmp     r7, r6\n\t"                                                                   \
    "it      ge\n\t"                                                                       \
    "movge   r7, r6\n\t"                                                                   \
    "strb    r2, [r11], #1\n\t"                                                            \
    "strb    r7, [r11], #1\n\t"

/* one weight word (r9) widened into odd/even lanes and multiplied with the input lanes
 * r8 (odd) / r7 (even) into ACC */
#define MN_VM_MAC(ACC)                                                                     \
    "sxtb16  ip, r9, ror #8\n\t"                                                           \
    "sxtb16  r9, r9\n\t"                                                                   \
    "smlad   " ACC ", ip, r8, " ACC "\n\t"                                                 \
    "smlad   " ACC ", r9, r7, " ACC "\n\t"
/* input word K of a 16-column step (r4) into the first row's sum (weights at r1) */
#define MN_VM_STEP1(K)                                                                     \
    "ldr     r7, [r4, #" #K "]\n\t"                                                        \
    "sxtab16 r8, r10, r7, ror #8\n\t"                                                      \
    "ldr     r9, [r1, #" #K "]\n\t"                                                        \
    "sxtab16 r7, r10, r7\n\t" MN_VM_MAC("r2")
/* the same for both rows (the second's weights at r0, the same offset) */
#define MN_VM_STEP(K) MN_VM_STEP1(K) "ldr     r9, [r0, #" #K "]\n\t" MN_VM_MAC("r3")
/* the first word of a 16-column step, through copied pointers (GCC's unrolled loop loads
 * it through the post-incremented copy), into the first row's sum */
#define MN_VM_W0                                                                           \
    "mov     lr, r4\n\t"                                                                   \
    "ldr     r7, [lr]\n\t"                                                                 \
    "sxtab16 r8, r10, r7, ror #8\n\t"                                                      \
    "mov     lr, r1\n\t"                                                                   \
    "sxtab16 r7, r10, r7\n\t"                                                              \
    "ldr     r9, [lr]\n\t" MN_VM_MAC("r2")
/* a 4-column step (post-incremented) into the first row's sum */
#define MN_VM_COL4                                                                         \
    "ldr     r7, [r4], #4\n\t"                                                             \
    "sxtab16 r8, r10, r7, ror #8\n\t"                                                      \
    "sxtab16 r7, r10, r7\n\t"                                                              \
    "ldr     r9, [r1], #4\n\t" MN_VM_MAC("r2")

/* The row-pair loop (X4: the 16-column loop is there; BIAS: biases are read), exits to
 * .Lvm_pend after the last pair. */
#define MN_VM_PAIR_LOOP(X4, BIAS)                                                          \
            /* VM_ROW_SETUP */                                                             \
            "1:\n\t"                                                                       \
            ".if " #BIAS "\n\t"                                                            \
            "ldr     r2, [r0], #8\n\t"                                                     \
            "ldr     r3, [r0, #-4]\n\t"                                                    \
            ".else\n\t"                                                                    \
            "movs    r2, #0\n\t"                                                           \
            "movs    r3, #0\n\t"                                                           \
            ".endif\n\t"                                                                   \
            "str     r0, [r5, #64]\n\t"                                                    \
            "ldr     r4, [r5, #36]\n\t"                                                    \
            "ldr     r7, [r5, #44]\n\t"                                                    \
            "ldr     r8, [r5, #84]\n\t"                                                    \
            "adds    r0, r1, r7\n\t"                                                       \
            "add     r8, r1, r8\n\t"                                                       \
            "str     r8, [r5, #40]\n\t"                                                    \
            "ldr     lr, [r5, #48]\n\t"                                                    \
            "cmp     lr, #0\n\t"                                                           \
            "beq     3f\n\t"                                                               \
            "bic     r6, lr, #3\n\t"                                                       \
            "str     r6, [r5, #100]\n\t"                                                   \
            "ands    lr, lr, #3\n\t"                                                       \
            "beq     3f\n"                                                                 \
            /* the 4-column steps before the unrolled loop (VM_CHUNK_W0) */                \
            "2:\n\t" MN_VM_COL4 "ldr     r9, [r0], #4\n\t" MN_VM_MAC("r3")                \
            "subs    lr, #1\n\t"                                                           \
            "bne     2b\n"                                                                 \
            /* VM_X4_ENTRY: the bases of the 1-column steps */                             \
            "3:\n\t"                                                                       \
            "strd    r0, r1, [r5, #88]\n\t"                                                \
            "str     r4, [r5, #56]\n\t"                                                    \
            ".if " #X4 "\n"                                                                \
            /* 16 columns per step (VM_X4): the first word through copied pointers */      \
            "4:\n\t" MN_VM_W0 "mov     lr, r0\n\t"                                        \
            "ldr     r9, [lr]\n\t" MN_VM_MAC("r3") MN_VM_STEP(4) MN_VM_STEP(8)             \
            "ldr     r7, [r4, #12]\n\t"                                                    \
            "sxtab16 r8, r10, r7, ror #8\n\t"                                              \
            "adds    r4, r4, #16\n\t"                                                      \
            "ldr     r9, [r1, #12]\n\t"                                                    \
            "sxtab16 r7, r10, r7\n\t"                                                      \
            "adds    r1, r1, #16\n\t" MN_VM_MAC("r2") "ldr     r9, [r0, #12]\n\t"          \
            "adds    r0, r0, #16\n\t" MN_VM_MAC("r3") "subs    r6, #4\n\t"                 \
            "bne     4b\n\t"                                                               \
            ".endif\n\t"                                                                   \
            /* VM_ROW_MID: the 1-column steps' pointers past the unrolled loop */          \
            "ldrd    r0, r1, [r5, #88]\n\t"                                                \
            "ldr     r4, [r5, #56]\n\t"                                                    \
            "ldr     r7, [r5, #96]\n\t"                                                    \
            "add     r0, r7\n\t"                                                           \
            "add     r1, r7\n\t"                                                           \
            "add     r4, r7\n\t"                                                           \
            "ldr     r9, [r5, #72]\n\t"                                                    \
            "ldr     r6, [r5, #52]\n\t"                                                    \
            "cmp     r6, #0\n\t"                                                           \
            "ble     6f\n"                                                                 \
            /* 1 column per step (VM_SCALAR) */                                            \
            "5:\n\t"                                                                       \
            "ldrsb   r7, [r4], #1\n\t"                                                     \
            "ldrsb   r8, [r1], #1\n\t"                                                     \
            "ldrsb   ip, [r0], #1\n\t"                                                     \
            "add     r7, r7, r9\n\t"                                                       \
            "mla     r2, r7, r8, r2\n\t"                                                   \
            "mla     r3, r7, ip, r3\n\t"                                                   \
            "subs    r6, #1\n\t"                                                           \
            "bne     5b\n"                                                                 \
            "6:\n\t" MN_VM_OUT_ASM                                                         \
            /* VM_ROW_END: count the pair, the next bias and rows */                       \
            "ldr     r7, [r5, #80]\n\t"                                                    \
            "adds    r7, #1\n\t"                                                           \
            "cmp     r3, r7\n\t"                                                           \
            "str     r7, [r5, #80]\n\t"                                                    \
            "add     ip, r4\n\t"                                                           \
            "add     r4, ip\n\t"                                                           \
            "ble     .Lvm_pend\n\t"                                                         \
            "ldr     r0, [r5, #64]\n\t"                                                    \
            "ldr     r1, [r5, #40]\n\t"                                                    \
            "cmp     r0, #0\n\t"                                                           \
            ".if " #BIAS "\n\t"                                                            \
            "bne     1b\n\t"                                                               \
            ".else\n\t"                                                                    \
            "beq     1b\n\t"                                                               \
            ".endif\n\t"                                                                   \
            "b       .Lvm_pend\n"

__attribute__((naked, noinline, used)) static void
mn_vec_mat_mult_t_s8(const int8_t *lhs, const int8_t *rhs, const int32_t *bias, int8_t *dst,
                     int32_t lhs_offset, int32_t out_offset, int32_t mult, int32_t shift,
                     int32_t cols, int32_t rows, int32_t act_min, int32_t act_max)
{
    __asm__ volatile(
        /* VM_ENTRY: the call's facts the odd row needs too; one row: straight to it */
        "push    {r4, r5, r6, r7, r8, r9, r10, r11, lr}\n\t"
        "sub     sp, sp, #104\n\t"
        "mov     r5, sp\n\t"
        "strd    r0, r1, [r5, #36]\n\t"
        "strd    r2, r3, [r5, #64]\n\t"
        "ldr     r6, [r5, #140]\n\t"
        "str     r6, [r5, #72]\n\t"
        "sxth    r7, r6\n\t"
        "pkhbt   r10, r7, r7, lsl #16\n\t"
        "str     r10, [r5, #76]\n\t"
        "ldr     r7, [r5, #156]\n\t"
        "str     r7, [r5, #44]\n\t"
        "asrs    r8, r7, #2\n\t"
        "str     r8, [r5, #48]\n\t"
        "and     r9, r7, #3\n\t"
        "str     r9, [r5, #52]\n\t"
        "bic     r6, r8, #3\n\t"
        "lsls    r6, r6, #2\n\t"
        "str     r6, [r5, #96]\n\t"
        "mov     r11, r3\n\t"
        "ldr     r4, [r5, #160]\n\t"
        "cmp     r4, #1\n\t"
        "ble     .Lvm_odd_test\n\t"
        /* VM_PAIRS_SETUP: the shift facts, the pair count and stride, the loop copy */
        "ldr     r0, [r5, #152]\n\t"
        "ldr     r1, [r5, #148]\n\t"
        "bic     r2, r0, r0, asr #31\n\t"
        "subs    r3, r2, r0\n\t"
        "strd    r2, r1, [r5, #0]\n\t"
        "str     r0, [r5, #8]\n\t"
        "str     r3, [r5, #16]\n\t"
        "movs    r6, #1\n\t"
        "lsls    r6, r3\n\t"
        "subs    r6, #1\n\t"
        "str     r6, [r5, #12]\n\t"
        "asrs    r6, r6, #1\n\t"
        "str     r6, [r5, #20]\n\t"
        "ldr     r6, [r5, #144]\n\t"
        "str     r6, [r5, #24]\n\t"
        "ldrd    r6, r9, [r5, #164]\n\t"
        "strd    r6, r9, [r5, #28]\n\t"
        "asrs    r6, r4, #1\n\t"
        "str     r6, [r5, #60]\n\t"
        "movs    r6, #0\n\t"
        "str     r6, [r5, #80]\n\t"
        "lsls    r6, r7, #1\n\t"
        "str     r6, [r5, #84]\n\t"
        "ldr     r0, [r5, #64]\n\t"
        "ldr     r1, [r5, #40]\n\t"
        "cmp     r8, #4\n\t"
        "blt     .Lvm_small\n\t"
        "cmp     r0, #0\n\t"
        "beq     .Lvm_x4_nobias\n\t" MN_VM_PAIR_LOOP(1, 1)
        ".Lvm_x4_nobias:\n\t" MN_VM_PAIR_LOOP(1, 0)
        ".Lvm_small:\n\t"
        "cmp     r0, #0\n\t"
        "beq     .Lvm_nobias\n\t" MN_VM_PAIR_LOOP(0, 1)
        ".Lvm_nobias:\n\t" MN_VM_PAIR_LOOP(0, 0)
        /* VM_PAIRS_END and the odd-row test */
        ".Lvm_pend:\n\t"
        "ldr     r4, [r5, #160]\n"
        ".Lvm_odd_test:\n\t"
        "lsls    r0, r4, #31\n\t"
        "bpl     .Lvm_ret\n\t"
        /* the odd row: its bias (or 0), the rows, the column steps as a pair's */
        "ldr     r0, [r5, #64]\n\t"
        "movs    r2, #0\n\t"
        "cbz     r0, 1f\n\t"
        "ldr     r2, [r0]\n"
        "1:\n\t"
        "ldr     r4, [r5, #36]\n\t"
        "ldr     r1, [r5, #40]\n\t"
        "ldr     r10, [r5, #76]\n\t"
        "ldr     lr, [r5, #48]\n\t"
        "bic     r6, lr, #3\n\t"
        "ands    lr, lr, #3\n\t"
        "beq     3f\n"
        "2:\n\t" MN_VM_COL4 "subs    lr, #1\n\t"
        "bne     2b\n"
        "3:\n\t"
        "str     r4, [r5, #56]\n\t"
        "str     r1, [r5, #92]\n\t"
        "cmp     r6, #0\n\t"
        "beq     5f\n"
        "4:\n\t" MN_VM_W0 MN_VM_STEP1(4) MN_VM_STEP1(8)
        "ldr     r7, [r4, #12]\n\t"
        "sxtab16 r8, r10, r7, ror #8\n\t"
        "adds    r4, r4, #16\n\t"
        "ldr     r9, [r1, #12]\n\t"
        "sxtab16 r7, r10, r7\n\t"
        "adds    r1, r1, #16\n\t" MN_VM_MAC("r2") "subs    r6, #4\n\t"
        "bne     4b\n"
        "5:\n\t"
        "ldr     r9, [r5, #72]\n\t"
        "ldr     r6, [r5, #52]\n\t"
        "cbz     r6, 7f\n"
        "6:\n\t"
        "ldrsb   r7, [r4], #1\n\t"
        "ldrsb   r8, [r1], #1\n\t"
        "add     r7, r7, r9\n\t"
        "mla     r2, r7, r8, r2\n\t"
        "subs    r6, #1\n\t"
        "bne     6b\n"
        /* requantize (GCC's order: the shift's sign branches past the divide), clamp, store */
        "7:\n\t"
        "ldr     r1, [r5, #152]\n\t"
        "ldr     r3, [r5, #148]\n\t"
        "bic     r4, r1, r1, asr #31\n\t"
        "lsl     r4, r2, r4\n\t"
        "movs    r6, #0\n\t"
        "mov     r2, #0x40000000\n\t"
        "smlal   r2, r6, r4, r3\n\t"
        "lsrs    r2, r2, #31\n\t"
        "cmp     r1, #0\n\t"
        "orr     r2, r2, r6, lsl #1\n\t"
        "bgt     8f\n\t"
        "rsbs    r1, r1, #0\n\t"
        "movs    r3, #1\n\t"
        "lsls    r3, r1\n\t"
        "subs    r3, #1\n\t"
        "and     r4, r2, r3\n\t"
        "asrs    r2, r1\n\t"
        "asr     r3, r3, #1\n\t"
        "it      mi\n\t"
        "addmi   r3, #1\n\t"
        "cmp     r4, r3\n\t"
        "it      gt\n\t"
        "addgt   r2, #1\n"
        "8:\n\t"
        "ldr     r3, [r5, #144]\n\t"
        "add     r2, r3\n\t"
        "ldr     r3, [r5, #164]\n\t"
        "cmp     r2, r3\n\t"
        "it      lt\n\t"
        "movlt   r2, r3\n\t"
        "ldr     r3, [r5, #168]\n\t"
        "cmp     r2, r3\n\t"
        "it      ge\n\t"
        "movge   r2, r3\n\t"
        "strb    r2, [r11]\n"
        /* VM_EXIT */
        ".Lvm_ret:\n\t"
        "movs    r0, #0\n\t"
        "add     sp, sp, #104\n\t"
        "pop     {r4, r5, r6, r7, r8, r9, r10, r11, pc}\n");
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

#if MN_MVE || !MN_DSP
/* arm_nn_vec_mat_mult_t_s8: per-tensor multiplier and shift, passed as scalars (assembly
 * with the DSP, above) */
__attribute__((noinline)) static void
mn_vec_mat_mult_t_s8(const int8_t *lhs, const int8_t *rhs, const int32_t *bias, int8_t *dst,
                     int32_t lhs_offset, int32_t out_offset, int32_t mult, int32_t shift,
                     int32_t cols, int32_t rows, int32_t act_min, int32_t act_max)
{
    mn_vmm_body(lhs, rhs, bias, dst, lhs_offset, out_offset, 0, 0, mult, shift, cols, rows,
                act_min, act_max, 0);
}
#endif

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

/* One vector x matrix call per batch row (arm_fully_connected_s8 / _per_channel_s8; the
 * per-tensor one with its multiplier and shift as scalars). The fields as locals: output
 * stores cannot alias them. */
MN_INLINE int32_t mn_fc_batches(const mn_fc_args *a, const int per_ch)
{
    const int8_t *in = a->input, *w = a->weights;
    const int32_t *bias = a->bias, *mult = a->mult, *shift = a->shift;
    int8_t *out = a->output;
    const int32_t batches = a->batches, cols = a->in_depth, rows = a->out_depth;
    const int32_t in_off = a->in_offset, out_off = a->out_offset;
    const int32_t lo = a->act_min, hi = a->act_max;
    if (cols < 1 || rows < 1)
        return MN_ARG_ERROR;
    for (int32_t b = 0; b < batches; b++, in += cols, out += rows) {
        if (per_ch)
            mn_vec_mat_mult_t_per_ch_s8(in, w, bias, out, in_off, out_off, mult, shift, cols,
                                        rows, lo, hi);
        else
            mn_vec_mat_mult_t_s8(in, w, bias, out, in_off, out_off, mult[0], shift[0], cols,
                                 rows, lo, hi);
    }
    return MN_OK;
}

/* arm_fully_connected_per_channel_s8. External linkage: the assembly wrapper below branches
 * to it by name, so it keeps the standard ABI. */
int32_t mn_fc_per_channel_s8(const mn_fc_args *a);
int32_t mn_fc_per_channel_s8(const mn_fc_args *a)
{
    return mn_fc_batches(a, 1);
}

#if MN_DSP && !MN_MVE
/* arm_fully_connected_s8 in cmsis_fc.py's blocks (FC_ENTRY, FC_BATCH_ARGS, FC_BATCH_END,
 * FC_EXIT), so both compilers run the library's per-call cost: the fields are reloaded and
 * the stack arguments stored one word at a time for every batch row, as GCC does with the
 * library's struct arguments. A per-channel call goes on to the C function above.
 * mn_fc_args offsets: input 0, weights 4, bias 8, mult 12, shift 16, output 20, batches 24,
 * in_depth 28, out_depth 32, in_offset 36, out_offset 40, act_min 44, act_max 48,
 * per_channel 52. */
__attribute__((naked, noinline)) int32_t mn_fully_connected_s8(const mn_fc_args *a)
{
    __asm__ volatile(
        "ldr     r1, [r0, #52]\n\t"
        "cbz     r1, 1f\n\t"
        "b       mn_fc_per_channel_s8\n"
        /* FC_ENTRY: r4 args, r5 batches, r6 input, r7 output, r8 cols, r9 rows */
        "1:\n\t"
        "push    {r4, r5, r6, r7, r8, r9, r10, r11, lr}\n\t"
        "ldr     r5, [r0, #24]\n\t"
        "ldr     r6, [r0]\n\t"
        "sub     sp, #60\n\t"
        "ldr     r7, [r0, #20]\n\t"
        "ldr     r8, [r0, #28]\n\t"
        "ldr     r9, [r0, #32]\n\t"
        "mov     r4, r0\n\t"
        "cmp     r8, #1\n\t"
        "blt     3f\n\t"
        "cmp     r9, #1\n\t"
        "blt     3f\n\t"
        "cmp     r5, #1\n\t"
        "blt     2f\n"
        /* FC_BATCH_ARGS: (input, weights, bias, output; in_offset, out_offset, mult[0],
         * shift[0], cols, rows, act_min, act_max) */
        "4:\n\t"
        "str     r9, [sp, #20]\n\t"
        "ldr     r3, [r4, #16]\n\t"
        "ldr     r3, [r3]\n\t"
        "str     r3, [sp, #12]\n\t"
        "str     r8, [sp, #16]\n\t"
        "ldr     r2, [r4, #12]\n\t"
        "ldr     r2, [r2]\n\t"
        "ldr     r3, [r4, #40]\n\t"
        "strd    r3, r2, [sp, #4]\n\t"
        "ldr     r3, [r4, #36]\n\t"
        "str     r3, [sp]\n\t"
        "ldr     r1, [r4, #48]\n\t"
        "str     r1, [sp, #28]\n\t"
        "ldr     r1, [r4, #44]\n\t"
        "str     r1, [sp, #24]\n\t"
        "mov     r0, r6\n\t"
        "ldr     r1, [r4, #4]\n\t"
        "ldr     r2, [r4, #8]\n\t"
        "mov     r3, r7\n\t"
        "bl      mn_vec_mat_mult_t_s8\n\t"
        /* FC_BATCH_END: the next input and output rows */
        "ldr     r8, [r4, #28]\n\t"
        "ldr     r9, [r4, #32]\n\t"
        "subs    r5, #1\n\t"
        "add     r6, r8\n\t"
        "add     r7, r9\n\t"
        "bne     4b\n"
        /* FC_EXIT */
        "2:\n\t"
        "movs    r0, #0\n\t"
        "add     sp, #60\n\t"
        "pop     {r4, r5, r6, r7, r8, r9, r10, r11, pc}\n"
        "3:\n\t"
        "mov     r0, #-1\n\t"
        "add     sp, #60\n\t"
        "pop     {r4, r5, r6, r7, r8, r9, r10, r11, pc}\n\t");
}
#else
/* arm_fully_connected_s8, or per-channel weights on to their own function */
int32_t mn_fully_connected_s8(const mn_fc_args *a)
{
    return a->per_channel ? mn_fc_per_channel_s8(a) : mn_fc_batches(a, 0);
}
#endif
