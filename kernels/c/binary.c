/* Binary (W1A1) CONV_2D / FULLY_CONNECTED on Armv7E-M + DSP: XNOR-popcount without a
 * popcount instruction, the structure kernels/schedules/cmix_binary.py times (our
 * implementation), docs/precision.md 2's arithmetic (bit-exact with kernels/binary.py):
 *
 * - per output pixel a bit-packed im2col column (taps in OHWI row order, a tap of C
 *   channels is C bits: a byte per step when the channels fill whole bytes, else a
 *   shift/OR bit-append), padding taps written as 0 bits, the row's tail words 0;
 * - every 2 columns a 2 output-channel x 2 column kernel: per word EOR, the SWAR count to
 *   byte sums (mn_byte_counts) and USADA8 against zero into the popcount;
 * - padding excluded: a border pixel (some tap in the padding) also gets a mask column
 *   (1 bits on valid taps) and its words are ANDed with it, so the padded taps count
 *   neither in n = valid taps * C nor in the popcount (cmix_binary.py removes them with a
 *   per-border-class popcount table instead: same values, a few cycles per output apart);
 * - acc = bias + n - 2 * popcount, then thresholds (binary / sub-byte outputs) or
 *   fixed-point requantization (mn_sb_output), stored packed.
 * An odd last channel runs the 2x2 kernel with its partner repeated; an odd last pixel (and a
 * batch-1 FC) runs 2 channels x 1 column. */
#include "mcusim_nn.h"

uint32_t mn_binary_scratch_bytes(const mn_sb_conv_args *a)
{
    return (uint32_t)(4 * 4 * a->row_words); /* 2 columns + 2 masks */
}

/* the bit column of one pixel (and its mask when `mask` is not NULL); returns the valid
 * taps, sets *border when a tap falls in the padding */
static int32_t mn_bin_column(const mn_sb_conv_args *a, uint32_t *col, uint32_t *mask,
                             int32_t b, int32_t g, int32_t oy, int32_t ox, int32_t *border)
{
    const int32_t cg = a->in_c / a->groups;
    mn_bitw wc = {col, 0u, 0};
    mn_bitw wm = {mask, 0u, 0};
    int32_t valid = 0;
    for (int32_t ky = 0; ky < a->k_h; ky++) {
        const int32_t iy = oy * a->s_h - a->pad_t + ky * a->d_h;
        for (int32_t kx = 0; kx < a->k_w; kx++) {
            const int32_t ix = ox * a->s_w - a->pad_l + kx * a->d_w;
            const int32_t inside = iy >= 0 && iy < a->in_h && ix >= 0 && ix < a->in_w;
            for (int32_t left = cg; left > 0; left -= 24) {
                const int32_t n = left < 24 ? left : 24;
                if (!inside)
                    mn_bitw_put(&wc, 0u, n);
                if (mask)
                    mn_bitw_put(&wm, inside ? (1u << n) - 1u : 0u, n);
            }
            if (inside) {
                const int32_t pix = (b * a->in_h + iy) * a->in_w + ix;
                mn_bitw_copy(&wc, a->input, pix * a->in_c + g * cg, cg);
                valid++;
            }
        }
    }
    mn_bitw_finish(&wc, col + a->row_words);
    if (mask)
        mn_bitw_finish(&wm, mask + a->row_words);
    *border = valid != a->k_h * a->k_w;
    return valid;
}

/* is any tap of output pixel (oy, ox) in the padding? */
static int32_t mn_bin_border(const mn_sb_conv_args *a, int32_t oy, int32_t ox)
{
    const int32_t iy0 = oy * a->s_h - a->pad_t, ix0 = ox * a->s_w - a->pad_l;
    const int32_t iy1 = iy0 + (a->k_h - 1) * a->d_h, ix1 = ix0 + (a->k_w - 1) * a->d_w;
    return iy0 < 0 || ix0 < 0 || iy1 >= a->in_h || ix1 >= a->in_w;
}

/* popcounts of (w XOR x) [AND m] for 2 weight rows x 2 columns (TWO = 0: column 0 only);
 * MASK, TWO constants after inlining */
MN_INLINE void mn_bin_kernel(const uint32_t *w0, const uint32_t *w1, const uint32_t *x0,
                             const uint32_t *x1, const uint32_t *m0, const uint32_t *m1,
                             int32_t words, const int32_t MASK, const int32_t TWO, int32_t *pc)
{
    int32_t p00 = 0, p01 = 0, p10 = 0, p11 = 0;
    for (int32_t j = 0; j < words; j++) {
        const uint32_t a0 = *w0++, a1 = *w1++, c0 = *x0++;
        const uint32_t k0 = MASK ? *m0++ : 0xFFFFFFFFu;
        p00 = mn_usada8_0(mn_byte_counts((a0 ^ c0) & k0), p00);
        p10 = mn_usada8_0(mn_byte_counts((a1 ^ c0) & k0), p10);
        if (TWO) {
            const uint32_t c1 = *x1++;
            const uint32_t k1 = MASK ? *m1++ : 0xFFFFFFFFu;
            p01 = mn_usada8_0(mn_byte_counts((a0 ^ c1) & k1), p01);
            p11 = mn_usada8_0(mn_byte_counts((a1 ^ c1) & k1), p11);
        }
    }
    pc[0] = p00;
    pc[1] = p01;
    pc[2] = p10;
    pc[3] = p11;
}

int32_t mn_conv_binary(const mn_sb_conv_args *a)
{
    const mn_sb_conv_args args_copy = *a;
    a = &args_copy;
    if (a->w_bits != 1 || a->in_bits != 1 || a->groups < 1 || a->in_c % a->groups ||
        a->out_c % a->groups || a->row_words < 1)
        return MN_ARG_ERROR;
    const int32_t cg = a->in_c / a->groups;
    const int32_t out_ch_g = a->out_c / a->groups;
    const int32_t rw = a->row_words;
    uint32_t *col0 = (uint32_t *)a->scratch;
    uint32_t *col1 = col0 + rw;
    uint32_t *msk0 = col1 + rw;
    uint32_t *msk1 = msk0 + rw;
    const uint32_t *weights = (const uint32_t *)a->weights;
    const int32_t pixels = a->out_h * a->out_w;
    for (int32_t b = 0; b < a->batches; b++) {
        for (int32_t g = 0; g < a->groups; g++) {
            for (int32_t px = 0; px < pixels; px += 2) {
                const int32_t two = px + 1 < pixels;
                const int32_t y0 = px / a->out_w, x0 = px % a->out_w;
                const int32_t y1 = (px + 1) / a->out_w, x1 = (px + 1) % a->out_w;
                const int32_t masked = mn_bin_border(a, y0, x0) ||
                                       (two && mn_bin_border(a, y1, x1));
                int32_t border;
                const int32_t v0 = mn_bin_column(a, col0, masked ? msk0 : 0, b, g, y0, x0,
                                                 &border);
                const int32_t v1 = two ? mn_bin_column(a, col1, masked ? msk1 : 0, b, g, y1,
                                                       x1, &border)
                                       : v0;
                const uint32_t *c1 = two ? col1 : col0;
                const uint32_t *k1 = two ? msk1 : msk0;
                const int32_t n0 = v0 * cg, n1 = v1 * cg;
                for (int32_t cc = 0; cc < out_ch_g; cc += 2) {
                    const int32_t ch0 = g * out_ch_g + cc;
                    const int32_t ch1 = cc + 1 < out_ch_g ? ch0 + 1 : ch0;
                    int32_t pc[4];
                    const uint32_t *r0 = weights + ch0 * rw, *r1 = weights + ch1 * rw;
                    if (masked && two)
                        mn_bin_kernel(r0, r1, col0, c1, msk0, k1, rw, 1, 1, pc);
                    else if (masked)
                        mn_bin_kernel(r0, r1, col0, c1, msk0, k1, rw, 1, 0, pc);
                    else if (two)
                        mn_bin_kernel(r0, r1, col0, c1, msk0, k1, rw, 0, 1, pc);
                    else
                        mn_bin_kernel(r0, r1, col0, c1, msk0, k1, rw, 0, 0, pc);
                    const int32_t b0 = a->bias ? a->bias[ch0] : 0;
                    const int32_t b1 = a->bias ? a->bias[ch1] : 0;
                    const int32_t o0 = (b * pixels + px) * a->out_c;
                    mn_put_value(a->output, o0 + ch0, a->out_bits,
                                 mn_sb_output(a, b0 + n0 - 2 * pc[0], ch0));
                    if (two)
                        mn_put_value(a->output, o0 + a->out_c + ch0, a->out_bits,
                                     mn_sb_output(a, b0 + n1 - 2 * pc[1], ch0));
                    if (ch1 != ch0) {
                        mn_put_value(a->output, o0 + ch1, a->out_bits,
                                     mn_sb_output(a, b1 + n0 - 2 * pc[2], ch1));
                        if (two)
                            mn_put_value(a->output, o0 + a->out_c + ch1, a->out_bits,
                                         mn_sb_output(a, b1 + n1 - 2 * pc[3], ch1));
                    }
                }
            }
        }
    }
    return MN_OK;
}
