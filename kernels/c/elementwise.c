/* ADD / SUB int8 of equal-shape operands (our implementation of the loop of CMSIS-NN's
 * arm_elementwise_add_s8 on Armv7E-M; kernels/schedules/cmsis_eltwise.py), with TFLite's
 * arithmetic (kernels/elementwise.py): each input + its offset, << left_shift, requantized
 * by its own multiplier; the sum (or difference, sign = -1) requantized by the output
 * multiplier, + output offset, clamped. 4 elements per step: one word of each input split
 * into byte lanes 0,2 / 1,3 by SXTB16, offsets added by SADD16, one word stored.
 *
 * On Armv7E-M the ADD step is one inline-assembly loop in the schedule's instruction order
 * (LOAD4, 4 x (requantize input 1, input 2, the sum; clamp), STORE4), so both compilers run
 * the same loop: as in GCC's build of the CMSIS-NN kernel, the multipliers, shifts, offsets,
 * the first requantized input and the output word live in memory (a frame standing in for
 * the schedule's stack slots), the output offset and clamp limits in registers. Input 2 and
 * the output are addressed relative to input 1 (one pointer register; 2 more loads per
 * step than the schedule, whose register assignment needs 15 registers), the loop ends on
 * input 1's end pointer (the schedule keeps a counter in memory: one store more). SUB runs
 * the C loop. */
#include "mcusim_nn.h"

MN_INLINE int32_t mn_add_one(int32_t x1, int32_t x2, const mn_add_args *a, int32_t neg)
{
    int32_t s1 = mn_requantize((int32_t)((uint32_t)x1 << a->left_shift), a->in1_mult,
                               a->in1_shift);
    int32_t s2 = mn_requantize((int32_t)((uint32_t)x2 << a->left_shift), a->in2_mult,
                               a->in2_shift);
    s2 = (s2 ^ neg) - neg; /* SUB: -s2 */
    int32_t v = mn_requantize((int32_t)((uint32_t)s1 + (uint32_t)s2), a->out_mult,
                              a->out_shift) +
                a->out_offset;
    v = mn_max(v, a->act_min);
    v = mn_min(v, a->act_max);
    return v;
}

#if MN_DSP
/* The loop's frame (byte offsets below): what CMSIS-NN's GCC build keeps on the stack. */
typedef struct {
    int32_t d2;             /* 0: input2 - input1 - 4 (read after input1's increment) */
    int32_t d_out;          /* 4: output - input1 - 4 */
    int32_t off1, off2;     /* 8, 12: the input offsets, both 16-bit lanes */
    int32_t left_shift;     /* 16 */
    int32_t m1, s1, m2, s2; /* 20..32: input multipliers and shifts */
    int32_t m3, s3;         /* 36, 40: output multiplier and shift */
    int32_t first;          /* 44: input 1 requantized */
    int32_t word;           /* 48: the 4 outputs */
    const int8_t *end;      /* 52: input1 + 4 x steps */
    int32_t r7;             /* 56: r7 kept here (clang's frame pointer) */
    const int8_t *p1;       /* 60 */
    int32_t out_offset, act_min, act_max; /* 64, 68, 72 */
} mn_add_frame;

#define MN_S_(x) #x
#define MN_S(x) MN_S_(x)
/* Registers in the loop: r7 the frame, r11 input 1, r4/r5 lanes 0,2 of input 1/2, ip/lr
 * lanes 1,3, r8-r10 output offset / act_min / act_max, r0-r3 and r6 temporaries.
 * arm_nn_requantize of r1 by multiplier r2 and shift r3: x << left, high word of the
 * doubled product rounded, rounding divide by 2^right (result r1). */
#define MN_ADD_RQ                                                                          \
    "bic    r0, r3, r3, asr #31\n\t" /* left = max(shift, 0) */                          \
    "lsl    r1, r1, r0\n\t"                                                                \
    "mov    r6, #0x40000000\n\t" /* 2^30 rounding term */                                \
    "movs   r0, #0\n\t"                                                                    \
    "smlal  r6, r0, r1, r2\n\t" /* x * M + 2^30 */                                       \
    "lsrs   r6, r6, #31\n\t"                                                               \
    "orr    r1, r6, r0, lsl #1\n\t" /* bits [62:31] */                                   \
    "rsbs   r0, r3, #0\n\t"                                                                \
    "bic    r0, r0, r0, asr #31\n\t" /* right = max(-shift, 0) */                        \
    "movs   r6, #1\n\t"                                                                    \
    "lsls   r6, r0\n\t"                                                                    \
    "subs   r6, #1\n\t" /* remainder mask */                                             \
    "and    r2, r1, r6\n\t"                                                                \
    "asrs   r1, r0\n\t"                                                                    \
    "asrs   r6, #1\n\t"                                                                    \
    "add    r6, r6, r1, lsr #31\n\t" /* threshold (+1 when negative) */                  \
    "cmp    r2, r6\n\t"                                                                    \
    "it     gt\n\t"                                                                        \
    "addgt  r1, #1\n\t"
/* one output from the lanes of two words (EXT1 / EXT2: "sxth r1, L" or "asrs r1, L, #16"):
 * input 1 requantized (kept in the frame), input 2, their sum, + offset, clamped, stored to
 * byte BYTE of the frame's output word */
#define MN_ADD_ELEM(EXT1, EXT2, BYTE)                                                       \
    EXT1 "\n\t"                                                                            \
         "ldr    r0, [r7, #16]\n\t"                                                        \
         "lsl    r1, r1, r0\n\t"                                                           \
         "ldr    r2, [r7, #20]\n\t"                                                        \
         "ldr    r3, [r7, #24]\n\t" MN_ADD_RQ "str    r1, [r7, #44]\n\t" EXT2 "\n\t"       \
         "ldr    r0, [r7, #16]\n\t"                                                        \
         "lsl    r1, r1, r0\n\t"                                                           \
         "ldr    r2, [r7, #28]\n\t"                                                        \
         "ldr    r3, [r7, #32]\n\t" MN_ADD_RQ "ldr    r0, [r7, #44]\n\t"                   \
         "add    r1, r1, r0\n\t"                                                           \
         "ldr    r2, [r7, #36]\n\t"                                                        \
         "ldr    r3, [r7, #40]\n\t" MN_ADD_RQ "add    r1, r1, r8\n\t" /* + out offset */   \
         "cmp    r1, r9\n\t"                                                               \
         "it     lt\n\t"                                                                   \
         "movlt  r1, r9\n\t"                                                               \
         "cmp    r1, r10\n\t"                                                              \
         "it     gt\n\t"                                                                   \
         "movgt  r1, r10\n\t"                                                              \
         "strb   r1, [r7, #" MN_S(BYTE) "]\n\t"

static void mn_add_loop(mn_add_frame *f)
{
    register mn_add_frame *fr __asm__("r11") = f;
    __asm__ volatile(
        "str    r7, [r11, #56]\n\t" /* r7 is clang's frame pointer: kept in the frame */
        "mov    r7, r11\n\t"
        "ldr    r11, [r7, #60]\n\t"
        "ldr    r8, [r7, #64]\n\t"
        "ldr    r9, [r7, #68]\n\t"
        "ldr    r10, [r7, #72]\n"
        "1:\n\t" /* LOAD4: lanes 0,2 / 1,3 of each input word + offsets */
        "ldr    r0, [r7, #0]\n\t"
        "ldr    r4, [r11], #4\n\t"
        "ldr    r5, [r11, r0]\n\t"
        "ror    ip, r4, #8\n\t"
        "sxtb16 r4, r4\n\t"
        "sxtb16 ip, ip\n\t"
        "ror    lr, r5, #8\n\t"
        "sxtb16 r5, r5\n\t"
        "sxtb16 lr, lr\n\t"
        "ldr    r3, [r7, #8]\n\t"
        "sadd16 r4, r4, r3\n\t"
        "sadd16 ip, ip, r3\n\t"
        "ldr    r3, [r7, #12]\n\t"
        "sadd16 r5, r5, r3\n\t"
        "sadd16 lr, lr, r3\n\t" /* elements 0, 2, 1, 3 */
        MN_ADD_ELEM("sxth   r1, r4", "sxth   r1, r5", 48)
        MN_ADD_ELEM("asrs   r1, r4, #16", "asrs   r1, r5, #16", 50)
        MN_ADD_ELEM("sxth   r1, ip", "sxth   r1, lr", 49)
        MN_ADD_ELEM("asrs   r1, ip, #16", "asrs   r1, lr, #16", 51)
        "ldr    r0, [r7, #4]\n\t" /* STORE4 */
        "ldr    r1, [r7, #48]\n\t"
        "str    r1, [r11, r0]\n\t"
        "ldr    r3, [r7, #52]\n\t" /* input 1's end */
        "cmp    r11, r3\n\t"
        "bne    1b\n\t"
        "mov    r11, r7\n\t"
        "ldr    r7, [r11, #56]\n\t"
        :
        : "r"(fr)
        : "r0", "r1", "r2", "r3", "r4", "r5", "r6", "r8", "r9", "r10", "r12", "lr", "cc",
          "memory");
}
#endif

int32_t mn_add_s8(const mn_add_args *a)
{
    const mn_add_args args_copy = *a; /* locals: output stores cannot alias them */
    a = &args_copy;
    if (a->n < 0 || (a->sign != 1 && a->sign != -1))
        return MN_ARG_ERROR;
    const int32_t neg = a->sign < 0 ? -1 : 0;
    const int32_t off1 = mn_pair16(a->in1_offset);
    const int32_t off2 = mn_pair16(a->in2_offset);
    const int8_t *p1 = a->input1;
    const int8_t *p2 = a->input2;
    int8_t *out = a->output;
    int32_t n4 = a->n >> 2;
#if MN_DSP
    if (!neg && n4 > 0) {
        mn_add_frame f;
        f.d2 = (int32_t)(p2 - p1) - 4;
        f.d_out = (int32_t)(out - p1) - 4;
        f.off1 = off1;
        f.off2 = off2;
        f.left_shift = a->left_shift;
        f.m1 = a->in1_mult;
        f.s1 = a->in1_shift;
        f.m2 = a->in2_mult;
        f.s2 = a->in2_shift;
        f.m3 = a->out_mult;
        f.s3 = a->out_shift;
        f.end = p1 + 4 * n4;
        f.p1 = p1;
        f.out_offset = a->out_offset;
        f.act_min = a->act_min;
        f.act_max = a->act_max;
        mn_add_loop(&f);
        p1 += 4 * n4;
        p2 += 4 * n4;
        out += 4 * n4;
        n4 = 0;
    }
#endif
    for (; n4 > 0; n4--) {
        int32_t w1 = mn_read_s8x4_ia(&p1);
        int32_t w2 = mn_read_s8x4_ia(&p2);
        int32_t e1 = mn_sadd16(mn_sxtb16(w1), off1);
        int32_t o1 = mn_sadd16(mn_sxtb16((int32_t)mn_ror((uint32_t)w1, 8)), off1);
        int32_t e2 = mn_sadd16(mn_sxtb16(w2), off2);
        int32_t o2 = mn_sadd16(mn_sxtb16((int32_t)mn_ror((uint32_t)w2, 8)), off2);
        uint32_t r0 = (uint8_t)mn_add_one((int16_t)e1, (int16_t)e2, a, neg);
        uint32_t r1 = (uint8_t)mn_add_one((int16_t)o1, (int16_t)o2, a, neg);
        uint32_t r2 = (uint8_t)mn_add_one(e1 >> 16, e2 >> 16, a, neg);
        uint32_t r3 = (uint8_t)mn_add_one(o1 >> 16, o2 >> 16, a, neg);
        mn_write_s8x4_ia(&out, (int32_t)(r0 | (r1 << 8) | (r2 << 16) | (r3 << 24)));
    }
    for (int32_t n = a->n & 3; n > 0; n--)
        *out++ = (int8_t)mn_add_one(*p1++ + a->in1_offset, *p2++ + a->in2_offset, a, neg);
    return MN_OK;
}
