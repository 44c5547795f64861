/* Sub-byte CONV_2D / FULLY_CONNECTED on Armv7E-M + DSP: the CMix-NN-style structure
 * kernels/schedules/cmix_conv.py times (our implementation), with docs/precision.md's
 * arithmetic (bit-exact with kernels/subbyte.py):
 *
 * - per output pixel an im2col column of int16 (x - zp_x), unpacked from the packed input,
 *   written in the weights' pair order: for every group of G = 32 / w_bits elements the
 *   words (x[k], x[k + G/2]) for k < G/2; padding taps and the row's tail are 0; the
 *   column sum S = sum(x - zp_x) comes with it; a tap starting on a byte boundary is
 *   unpacked a word at a time (4 / 8 / 16 values per load, sign-extended by a shift pair
 *   or masked), the rest of a tap one value at a time;
 * - every 2 columns a 2 output-channel x 2 column kernel: a weight word XOR the lanes' sign
 *   bits turns each signed w into u = w + 2^(w_bits-1) >= 0, then (word >> k*w_bits) AND
 *   the pair mask is the lane pair (u[k], u[k + G/2]): one SMLAD per pair and column;
 * - epilogue acc = bias + sum(u * x) - 2^(w_bits-1) * S, then fixed-point requantization
 *   (TFLite rule, output type range) or the thresholds count (binary search over the
 *   channel's non-decreasing thresholds), stored packed (read-modify-write of the byte).
 *
 * An odd last channel runs the same 2x2 kernel with its partner repeated and the duplicate
 * results dropped (CMix-NN has a 1-channel loop instead); an odd last pixel (and a batch-1
 * FC) runs 2 channels x 1 column. */
#include "mcusim_nn.h"

static int32_t mn_get_value(const uint8_t *base, int32_t index, int32_t bits, int32_t sgn)
{
    if (bits == 8)
        return sgn ? (int32_t)(int8_t)base[index] : (int32_t)base[index];
    const int32_t bit = index * bits;
    const uint32_t code = ((uint32_t)base[bit >> 3] >> (bit & 7)) & ((1u << bits) - 1u);
    if (sgn && (code >> (bits - 1)))
        return (int32_t)code - (1 << bits);
    return (int32_t)code;
}

uint32_t mn_subbyte_scratch_bytes(const mn_sb_conv_args *a)
{
    /* two columns of row_words * G/2 words each */
    const int32_t g = 32 / a->w_bits;
    return (uint32_t)(2 * a->row_words * (g / 2) * 4);
}

/* one im2col column: returns S = sum(x - zp). Element k of each group of G goes to int16
 * slot 2k (k < G/2) or 2(k - G/2) + 1 of the group's G/2 words. */
static int32_t mn_sb_column(const mn_sb_conv_args *a, int32_t *col, const uint8_t *in,
                            int32_t b, int32_t g, int32_t oy, int32_t ox)
{
    const int32_t kernel_ch = a->in_c / a->groups;
    const int32_t grp = 32 / a->w_bits;
    const int32_t half = grp / 2;
    const int32_t n = a->row_words * grp;
    int16_t *grp_base = (int16_t *)col; /* this group's first slot */
    int32_t k = 0;                      /* position in the group */
    int32_t sum = 0;
    int32_t e = 0;
    const int32_t bits = a->in_bits;
    const int32_t per = 32 / bits;
#define MN_SB_PUT(v)                                                                         \
    do {                                                                                     \
        grp_base[k < half ? 2 * k : 2 * (k - half) + 1] = (int16_t)(v);                      \
        if (++k == grp) {                                                                    \
            k = 0;                                                                           \
            grp_base += grp;                                                                 \
        }                                                                                    \
    } while (0)
    for (int32_t ky = 0; ky < a->k_h; ky++) {
        const int32_t iy = oy * a->s_h - a->pad_t + ky * a->d_h;
        for (int32_t kx = 0; kx < a->k_w; kx++) {
            const int32_t ix = ox * a->s_w - a->pad_l + kx * a->d_w;
            if (iy < 0 || iy >= a->in_h || ix < 0 || ix >= a->in_w) {
                for (int32_t ci = 0; ci < kernel_ch; ci++)
                    MN_SB_PUT(0);
                e += kernel_ch;
                continue;
            }
            const int32_t base = ((b * a->in_h + iy) * a->in_w + ix) * a->in_c + g * kernel_ch;
            int32_t ci = 0;
            if (((base * bits) & 7) == 0) { /* a word (32 / bits values) per load */
                const uint8_t *src = in + ((base * bits) >> 3);
                for (; ci + per <= kernel_ch; ci += per) {
                    const uint32_t word = (uint32_t)mn_read_s8x4((const int8_t *)src);
                    src += 4;
#pragma GCC unroll 16
                    for (int32_t j = 0; j < per; j++) {
                        const int32_t x =
                            a->in_signed
                                ? (int32_t)(word << (32 - bits - j * bits)) >> (32 - bits)
                                : (int32_t)((word >> (j * bits)) & ((1u << bits) - 1u));
                        sum += x - a->in_zp;
                        MN_SB_PUT(x - a->in_zp);
                    }
                }
            }
            for (; ci < kernel_ch; ci++) { /* tail (or an unaligned tap): one at a time */
                const int32_t v = mn_get_value(in, base + ci, bits, a->in_signed) - a->in_zp;
                sum += v;
                MN_SB_PUT(v);
            }
            e += kernel_ch;
        }
    }
    for (; e < n; e++)
        MN_SB_PUT(0);
#undef MN_SB_PUT
    return sum;
}

/* sum over the row of u * x for 2 weight rows x 2 columns, w_bits = W (a constant after
 * inlining) */
MN_INLINE void mn_sb_kernel(const uint32_t *w0, const uint32_t *w1, const int32_t *x0,
                            const int32_t *x1, int32_t words, const int32_t W,
                            const int32_t TWO, int32_t *acc)
{
    const int32_t half = 16 / W;
    const uint32_t sign = W == 4 ? 0x88888888u : 0xAAAAAAAAu;
    const uint32_t pmask = ((1u << W) - 1u) | (((1u << W) - 1u) << 16);
    int32_t a00 = acc[0], a01 = acc[1], a10 = acc[2], a11 = acc[3];
    for (int32_t j = 0; j < words; j++) {
        const uint32_t u0 = *w0++ ^ sign;
        const uint32_t u1 = *w1++ ^ sign;
#pragma GCC unroll 8
        for (int32_t k = 0; k < half; k++) {
            const int32_t p0 = (int32_t)((u0 >> (k * W)) & pmask);
            const int32_t p1 = (int32_t)((u1 >> (k * W)) & pmask);
            const int32_t c0 = *x0++;
            a00 = mn_smlad(p0, c0, a00);
            a10 = mn_smlad(p1, c0, a10);
            if (TWO) {
                const int32_t c1 = *x1++;
                a01 = mn_smlad(p0, c1, a01);
                a11 = mn_smlad(p1, c1, a11);
            }
        }
    }
    acc[0] = a00;
    acc[1] = a01;
    acc[2] = a10;
    acc[3] = a11;
}

int32_t mn_conv_subbyte(const mn_sb_conv_args *a)
{
    const mn_sb_conv_args args_copy = *a;
    a = &args_copy;
    if ((a->w_bits != 2 && a->w_bits != 4) || a->groups < 1 || a->in_c % a->groups ||
        a->out_c % a->groups)
        return MN_ARG_ERROR;
    const int32_t grp = 32 / a->w_bits;
    const int32_t col_words = a->row_words * (grp / 2);
    const int32_t bias_shift = a->w_bits - 1; /* sum(w x) = sum(u x) - 2^(W-1) S */
    const int32_t out_ch_g = a->out_c / a->groups;
    int32_t *col0 = (int32_t *)a->scratch;
    int32_t *col1 = col0 + col_words;
    const int32_t pixels = a->out_h * a->out_w;
    for (int32_t b = 0; b < a->batches; b++) {
        for (int32_t g = 0; g < a->groups; g++) {
            for (int32_t px = 0; px < pixels; px += 2) {
                const int32_t two = px + 1 < pixels;
                const int32_t s0 = mn_sb_column(a, col0, a->input, b, g, px / a->out_w,
                                                px % a->out_w);
                const int32_t s1 = two ? mn_sb_column(a, col1, a->input, b, g,
                                                      (px + 1) / a->out_w, (px + 1) % a->out_w)
                                       : s0;
                const int32_t *x1 = two ? col1 : col0;
                for (int32_t cc = 0; cc < out_ch_g; cc += 2) {
                    const int32_t c0 = g * out_ch_g + cc;
                    const int32_t c1 = cc + 1 < out_ch_g ? c0 + 1 : c0;
                    const int32_t b0 = a->bias ? a->bias[c0] : 0;
                    const int32_t b1 = a->bias ? a->bias[c1] : 0;
                    const int32_t f0 = s0 * (1 << bias_shift), f1 = s1 * (1 << bias_shift);
                    int32_t acc[4] = {b0 - f0, b0 - f1, b1 - f0, b1 - f1};
                    const uint32_t *w0 = a->weights + c0 * a->row_words;
                    const uint32_t *w1 = a->weights + c1 * a->row_words;
                    if (a->w_bits == 4 && two)
                        mn_sb_kernel(w0, w1, col0, x1, a->row_words, 4, 1, acc);
                    else if (a->w_bits == 4)
                        mn_sb_kernel(w0, w1, col0, x1, a->row_words, 4, 0, acc);
                    else if (two)
                        mn_sb_kernel(w0, w1, col0, x1, a->row_words, 2, 1, acc);
                    else
                        mn_sb_kernel(w0, w1, col0, x1, a->row_words, 2, 0, acc);
                    const int32_t o0 = (b * pixels + px) * a->out_c;
                    mn_put_value(a->output, o0 + c0, a->out_bits, mn_sb_output(a, acc[0], c0));
                    if (two)
                        mn_put_value(a->output, o0 + a->out_c + c0, a->out_bits,
                                     mn_sb_output(a, acc[1], c0));
                    if (c1 != c0) {
                        mn_put_value(a->output, o0 + c1, a->out_bits,
                                     mn_sb_output(a, acc[2], c1));
                        if (two)
                            mn_put_value(a->output, o0 + a->out_c + c1, a->out_bits,
                                         mn_sb_output(a, acc[3], c1));
                    }
                }
            }
        }
    }
    return MN_OK;
}
