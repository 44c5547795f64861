/* ADD / SUB int8 of equal-shape operands (our implementation of the loop of CMSIS-NN's
 * arm_elementwise_add_s8 on Armv7E-M; kernels/schedules/cmsis_eltwise.py), with TFLite's
 * arithmetic (kernels/elementwise.py): each input + its offset, << left_shift, requantized
 * by its own multiplier; the sum (or difference, sign = -1) requantized by the output
 * multiplier, + output offset, clamped. 4 elements per step: one word of each input split
 * into byte lanes 0,2 / 1,3 by SXTB16, offsets added by SADD16, one word stored. */
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
    for (int32_t n = a->n >> 2; n > 0; n--) {
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
