/* DEPTHWISE_CONV_2D int8 (our implementation of the paths CMSIS-NN's
 * arm_depthwise_conv_wrapper_s8 takes on Armv7E-M; kernels/schedules/cmsis_depthwise.py):
 *
 * - channel multiplier 1, batch 1, no dilation, 3x3 filter, padding <= 1: 4 channels per
 *   step, one word of input and of weights per tap, input offset added by SXTAB16,
 *   SMLABB/SMLATT per channel; border taps skipped; 1-3 leftover channels scalar.
 * - channel multiplier a multiple of 4 (batch 1, no dilation): 4 output channels per input
 *   value, per in-bounds tap one input byte and one word of 4 weights.
 * - anything else: the generic loop, one output channel at a time over the in-bounds taps.
 *   (CMSIS-NN's s16-im2col "opt" path for multiplier-1 filters other than 3x3 is not
 *   twinned: such layers run the generic loop here.)
 */
#include "mcusim_nn.h"

static int32_t mn_dw_3x3(const mn_dw_args *a)
{
    const int8_t *const input_ = a->input;
    const int8_t *const weights_ = a->weights;
    const int32_t *const bias_ = a->bias;
    const int32_t *const mult_ = a->mult;
    const int32_t *const shift_ = a->shift;
    int8_t *const output_ = a->output;
    const int32_t in_h_ = a->in_h;
    const int32_t in_w_ = a->in_w;
    const int32_t in_c_ = a->in_c;
    const int32_t out_h_ = a->out_h;
    const int32_t out_w_ = a->out_w;
    const int32_t s_h_ = a->s_h;
    const int32_t s_w_ = a->s_w;
    const int32_t pad_t_ = a->pad_t;
    const int32_t pad_l_ = a->pad_l;
    const int32_t in_offset_ = a->in_offset;
    const int32_t out_offset_ = a->out_offset;
    const int32_t act_min_ = a->act_min;
    const int32_t act_max_ = a->act_max;
    const int32_t ch = in_c_;
    const int32_t row = ch * in_w_;
    const int32_t off2 = mn_pair16(in_offset_);
    int8_t *out = output_;
    for (int32_t oy = 0; oy < out_h_; oy++) {
        const int32_t in_y = oy * s_h_ - pad_t_;
        const int32_t ky0 = mn_max(0, -in_y);
        const int32_t ky1 = mn_min(3, in_h_ - in_y);
        for (int32_t ox = 0; ox < out_w_; ox++) {
            const int32_t in_x = ox * s_w_ - pad_l_;
            const int32_t has_left = in_x >= 0;
            const int32_t has_right = in_w_ - in_x >= 3;
            int32_t c = 0;
            for (; c <= ch - 4; c += 4) {
                int32_t s0 = bias_ ? bias_[c] : 0;
                int32_t s1 = bias_ ? bias_[c + 1] : 0;
                int32_t s2 = bias_ ? bias_[c + 2] : 0;
                int32_t s3 = bias_ ? bias_[c + 3] : 0;
                /* may point at column -1 when padded: only [+ch] is read then */
                const int8_t *ip = input_ + (in_y + ky0) * row + in_x * ch + c;
                const int8_t *wp = weights_ + ky0 * 3 * ch + c;
                for (int32_t ky = ky0; ky < ky1; ky++) {
                    if (has_left) {
                        int32_t x = mn_read_s8x4(ip), w = mn_read_s8x4(wp);
                        int32_t xo = mn_sxtab16_ror8(off2, x), wo = mn_sxtb16_ror8(w);
                        s1 = mn_smlabb(xo, wo, s1);
                        s3 = mn_smlatt(xo, wo, s3);
                        int32_t xe = mn_sxtab16(off2, x), we = mn_sxtb16(w);
                        s0 = mn_smlabb(xe, we, s0);
                        s2 = mn_smlatt(xe, we, s2);
                    }
                    {
                        int32_t x = mn_read_s8x4(ip + ch), w = mn_read_s8x4(wp + ch);
                        int32_t xo = mn_sxtab16_ror8(off2, x), wo = mn_sxtb16_ror8(w);
                        s1 = mn_smlabb(xo, wo, s1);
                        s3 = mn_smlatt(xo, wo, s3);
                        int32_t xe = mn_sxtab16(off2, x), we = mn_sxtb16(w);
                        s0 = mn_smlabb(xe, we, s0);
                        s2 = mn_smlatt(xe, we, s2);
                    }
                    if (has_right) {
                        int32_t x = mn_read_s8x4(ip + 2 * ch), w = mn_read_s8x4(wp + 2 * ch);
                        int32_t xo = mn_sxtab16_ror8(off2, x), wo = mn_sxtb16_ror8(w);
                        s1 = mn_smlabb(xo, wo, s1);
                        s3 = mn_smlatt(xo, wo, s3);
                        int32_t xe = mn_sxtab16(off2, x), we = mn_sxtb16(w);
                        s0 = mn_smlabb(xe, we, s0);
                        s2 = mn_smlatt(xe, we, s2);
                    }
                    ip += row;
                    wp += 3 * ch;
                }
                out[0] = mn_requant_clamp(s0, mult_[c], shift_[c], out_offset_,
                                          act_min_, act_max_);
                out[1] = mn_requant_clamp(s1, mult_[c + 1], shift_[c + 1], out_offset_,
                                          act_min_, act_max_);
                out[2] = mn_requant_clamp(s2, mult_[c + 2], shift_[c + 2], out_offset_,
                                          act_min_, act_max_);
                out[3] = mn_requant_clamp(s3, mult_[c + 3], shift_[c + 3], out_offset_,
                                          act_min_, act_max_);
                out += 4;
            }
            for (; c < ch; c++) {
                int32_t s = bias_ ? bias_[c] : 0;
                const int8_t *ip = input_ + (in_y + ky0) * row + in_x * ch + c;
                const int8_t *wp = weights_ + ky0 * 3 * ch + c;
                for (int32_t ky = ky0; ky < ky1; ky++) {
                    if (has_left)
                        s += (ip[0] + in_offset_) * wp[0];
                    s += (ip[ch] + in_offset_) * wp[ch];
                    if (has_right)
                        s += (ip[2 * ch] + in_offset_) * wp[2 * ch];
                    ip += row;
                    wp += 3 * ch;
                }
                *out++ = mn_requant_clamp(s, mult_[c], shift_[c], out_offset_,
                                          act_min_, act_max_);
            }
        }
    }
    return MN_OK;
}

static int32_t mn_dw_mult4(const mn_dw_args *a)
{
    const int8_t *const input_ = a->input;
    const int8_t *const weights_ = a->weights;
    const int32_t *const bias_ = a->bias;
    const int32_t *const mult_ = a->mult;
    const int32_t *const shift_ = a->shift;
    int8_t *const output_ = a->output;
    const int32_t in_h_ = a->in_h;
    const int32_t in_w_ = a->in_w;
    const int32_t in_c_ = a->in_c;
    const int32_t out_h_ = a->out_h;
    const int32_t out_w_ = a->out_w;
    const int32_t out_c_ = a->out_c;
    const int32_t k_h_ = a->k_h;
    const int32_t k_w_ = a->k_w;
    const int32_t s_h_ = a->s_h;
    const int32_t s_w_ = a->s_w;
    const int32_t pad_t_ = a->pad_t;
    const int32_t pad_l_ = a->pad_l;
    const int32_t ch_mult_ = a->ch_mult;
    const int32_t in_offset_ = a->in_offset;
    const int32_t out_offset_ = a->out_offset;
    const int32_t act_min_ = a->act_min;
    const int32_t act_max_ = a->act_max;
    const int32_t out_c = out_c_;
    int8_t *out = output_;
    for (int32_t oy = 0; oy < out_h_; oy++) {
        const int32_t in_y = oy * s_h_ - pad_t_;
        const int32_t ky0 = mn_max(0, -in_y);
        const int32_t ky1 = mn_min(k_h_, in_h_ - in_y);
        for (int32_t ox = 0; ox < out_w_; ox++) {
            const int32_t in_x = ox * s_w_ - pad_l_;
            const int32_t kx0 = mn_max(0, -in_x);
            const int32_t kx1 = mn_min(k_w_, in_w_ - in_x);
            for (int32_t ci = 0, oc = 0; ci < in_c_; ci++, oc += ch_mult_) {
                for (int32_t t = 0; t < ch_mult_; t += 4) {
                    const int32_t c = oc + t;
                    int32_t s0 = bias_ ? bias_[c] : 0;
                    int32_t s1 = bias_ ? bias_[c + 1] : 0;
                    int32_t s2 = bias_ ? bias_[c + 2] : 0;
                    int32_t s3 = bias_ ? bias_[c + 3] : 0;
                    for (int32_t ky = ky0; ky < ky1; ky++) {
                        const int8_t *ip =
                            input_ + ((in_y + ky) * in_w_ + in_x + kx0) * in_c_ + ci;
                        const int8_t *wp = weights_ + (ky * k_w_ + kx0) * out_c + c;
                        for (int32_t n = kx1 - kx0; n > 0; n--) {
                            int32_t x = *ip + in_offset_;
                            int32_t w = mn_read_s8x4(wp);
                            ip += in_c_;
                            wp += out_c;
                            s0 += x * (int8_t)w;
                            s1 += x * (int8_t)(w >> 8);
                            s2 += x * (int8_t)(w >> 16);
                            s3 += x * (w >> 24);
                        }
                    }
                    out[c] = mn_requant_clamp(s0, mult_[c], shift_[c], out_offset_,
                                              act_min_, act_max_);
                    out[c + 1] = mn_requant_clamp(s1, mult_[c + 1], shift_[c + 1],
                                                  out_offset_, act_min_, act_max_);
                    out[c + 2] = mn_requant_clamp(s2, mult_[c + 2], shift_[c + 2],
                                                  out_offset_, act_min_, act_max_);
                    out[c + 3] = mn_requant_clamp(s3, mult_[c + 3], shift_[c + 3],
                                                  out_offset_, act_min_, act_max_);
                }
            }
            out += out_c;
        }
    }
    return MN_OK;
}

static int32_t mn_dw_generic(const mn_dw_args *a)
{
    const int8_t *const input_ = a->input;
    const int8_t *const weights_ = a->weights;
    const int32_t *const bias_ = a->bias;
    const int32_t *const mult_ = a->mult;
    const int32_t *const shift_ = a->shift;
    int8_t *const output_ = a->output;
    const int32_t batches_ = a->batches;
    const int32_t in_h_ = a->in_h;
    const int32_t in_w_ = a->in_w;
    const int32_t in_c_ = a->in_c;
    const int32_t out_h_ = a->out_h;
    const int32_t out_w_ = a->out_w;
    const int32_t out_c_ = a->out_c;
    const int32_t k_h_ = a->k_h;
    const int32_t k_w_ = a->k_w;
    const int32_t s_h_ = a->s_h;
    const int32_t s_w_ = a->s_w;
    const int32_t d_h_ = a->d_h;
    const int32_t d_w_ = a->d_w;
    const int32_t pad_t_ = a->pad_t;
    const int32_t pad_l_ = a->pad_l;
    const int32_t ch_mult_ = a->ch_mult;
    const int32_t in_offset_ = a->in_offset;
    const int32_t out_offset_ = a->out_offset;
    const int32_t act_min_ = a->act_min;
    const int32_t act_max_ = a->act_max;
    const int32_t out_c = out_c_;
    for (int32_t b = 0; b < batches_; b++) {
        const int8_t *in_b = input_ + b * in_h_ * in_w_ * in_c_;
        int8_t *out = output_ + b * out_h_ * out_w_ * out_c;
        for (int32_t oy = 0; oy < out_h_; oy++) {
            const int32_t in_y = oy * s_h_ - pad_t_;
            for (int32_t ox = 0; ox < out_w_; ox++) {
                const int32_t in_x = ox * s_w_ - pad_l_;
                for (int32_t c = 0; c < out_c; c++) {
                    const int32_t ci = c / ch_mult_;
                    int32_t s = bias_ ? bias_[c] : 0;
                    for (int32_t ky = 0; ky < k_h_; ky++) {
                        const int32_t iy = in_y + ky * d_h_;
                        if (iy < 0 || iy >= in_h_)
                            continue;
                        for (int32_t kx = 0; kx < k_w_; kx++) {
                            const int32_t ix = in_x + kx * d_w_;
                            if (ix < 0 || ix >= in_w_)
                                continue;
                            s += (in_b[(iy * in_w_ + ix) * in_c_ + ci] + in_offset_) *
                                 weights_[(ky * k_w_ + kx) * out_c + c];
                        }
                    }
                    *out++ = mn_requant_clamp(s, mult_[c], shift_[c], out_offset_,
                                              act_min_, act_max_);
                }
            }
        }
    }
    return MN_OK;
}

/* Which path runs (0 = 3x3, 1 = multiplier 4, 2 = generic), as the wrapper dispatches. */
int32_t mn_depthwise_path(const mn_dw_args *a)
{
    const int32_t simple = a->batches == 1 && a->d_h == 1 && a->d_w == 1;
    if (simple && a->ch_mult == 1 && a->k_h == 3 && a->k_w == 3 && a->pad_t <= 1 &&
        a->pad_l <= 1)
        return 0;
    if (simple && a->ch_mult % 4 == 0)
        return 1;
    return 2;
}

int32_t mn_depthwise_s8(const mn_dw_args *a)
{
    if (a->ch_mult < 1 || a->out_c != a->in_c * a->ch_mult)
        return MN_ARG_ERROR;
    switch (mn_depthwise_path(a)) {
    case 0:
        return mn_dw_3x3(a);
    case 1:
        return mn_dw_mult4(a);
    default:
        return mn_dw_generic(a);
    }
}
