/* CONV_2D int8, DSP structure (our implementation of the algorithms CMSIS-NN's
 * arm_convolve_wrapper_s8 dispatches to on Armv7E-M, as kernels/schedules/cmsis_conv.py and
 * matmul.py time them):
 *
 * - 1x1, no padding, no dilation, one group: an int8 x int8 matrix product over pixels
 *   (mn_mat_mult_nt_t_s8: 2 pixels x 2 output channels, 16/4/1 reduction columns per
 *   step, the input offset folded in as offset * sum(weights)); stride 1 in one call,
 *   otherwise one call per output row with a strided input.
 * - otherwise per output pixel an int8 im2col column (copy per in-bounds tap, fill with
 *   the input zero point for padding taps), widened to int16 with the input offset in the
 *   SXTB16 lane order (bytes 0,2 then 1,3 of each word); every two columns the 2x2 kernel
 *   (mn_mat_mult_kernel_s8_s16: 2 output channels x 2 columns, SMLAD on 2 weights per
 *   instruction); an odd last column runs a single-column loop.
 */
#include "mcusim_nn.h"

#if !MN_MVE /* the int16 im2col path (DSP); Helium builds use int8 columns */
/* ------------------------------------------------------------ int8 -> int16 + offset */
__attribute__((noinline)) static void
mn_s8_to_s16_reordered(const int8_t *src, int16_t *dst, int32_t n, int32_t offset)
{
    const int32_t off2 = mn_pair16(offset);
    int32_t quads = n >> 2;
    while (quads--) {
        int32_t w = mn_read_s8x4_ia(&src);
        int32_t even = mn_sxtab16(off2, w);                     /* bytes 0, 2 */
        int32_t odd = mn_sxtab16(off2, (int32_t)mn_ror((uint32_t)w, 8)); /* bytes 1, 3 */
        mn_write_s16x2_ia(&dst, even);
        mn_write_s16x2_ia(&dst, odd);
    }
    n &= 3;
    while (n--)
        *dst++ = (int16_t)(*src++ + offset);
}

/* 4 weights -> (w0, w2) and (w1, w3) as int16 pairs: the column's lane order. The ROR is
 * C code, as in CMSIS-NN's read_and_pad_reordered built with GCC. */
MN_INLINE void mn_weights_reordered(const int8_t **p, int32_t *even, int32_t *odd)
{
    int32_t w = mn_read_s8x4_ia(p);
    *odd = mn_sxtb16((int32_t)mn_ror((uint32_t)w, 8));
    *even = mn_sxtb16(w);
}

/* Two int16 columns (b0, b0 + aligned_cols) against out_ch weight rows of num_cols int8.
 * Outputs of column 0 at out0[0..out_ch), of column 1 at out0[out_row..]. */
__attribute__((noinline)) static void
mn_mat_mult_kernel_s8_s16(const int8_t *wts, const int16_t *b0, int32_t out_ch,
                          const int32_t *shift, const int32_t *mult,
                          int32_t out_offset, int32_t act_min, int32_t act_max,
                          int32_t num_cols, int32_t aligned_cols,
                          const int32_t *bias, int8_t *out0, int32_t out_row)
{
    int8_t *out1 = out0 + out_row;
    const int8_t *a0 = wts;
    int32_t ch = 0;
    for (int32_t pairs = out_ch >> 1; pairs > 0; pairs--, ch += 2) {
        const int16_t *pb0 = b0;
        const int16_t *pb1 = b0 + aligned_cols;
        const int8_t *a1 = a0 + num_cols;
        int32_t c00 = bias ? bias[ch] : 0; /* channel 0, column 0 */
        int32_t c01 = c00;
        int32_t c10 = bias ? bias[ch + 1] : 0;
        int32_t c11 = c10;
        int32_t cols = num_cols >> 2;
        while (cols--) {
            int32_t a0e, a0o, a1e, a1o;
            mn_weights_reordered(&a0, &a0e, &a0o);
            mn_weights_reordered(&a1, &a1e, &a1o);
            int32_t x0 = mn_read_s16x2_ia(&pb0);
            int32_t x1 = mn_read_s16x2_ia(&pb1);
            c00 = mn_smlad(a0e, x0, c00);
            c01 = mn_smlad(a0e, x1, c01);
            c10 = mn_smlad(a1e, x0, c10);
            c11 = mn_smlad(a1e, x1, c11);
            x0 = mn_read_s16x2_ia(&pb0);
            x1 = mn_read_s16x2_ia(&pb1);
            c00 = mn_smlad(a0o, x0, c00);
            c01 = mn_smlad(a0o, x1, c01);
            c10 = mn_smlad(a1o, x0, c10);
            c11 = mn_smlad(a1o, x1, c11);
        }
        cols = num_cols & 3;
        while (cols--) {
            int32_t w0 = *a0++;
            int32_t w1 = *a1++;
            int32_t x0 = *pb0++;
            int32_t x1 = *pb1++;
            c00 += w0 * x0;
            c01 += w0 * x1;
            c10 += w1 * x0;
            c11 += w1 * x1;
        }
        out0[0] = mn_requant_clamp(c00, mult[ch], shift[ch], out_offset, act_min, act_max);
        out1[0] = mn_requant_clamp(c01, mult[ch], shift[ch], out_offset, act_min, act_max);
        out0[1] = mn_requant_clamp(c10, mult[ch + 1], shift[ch + 1], out_offset, act_min,
                                   act_max);
        out1[1] = mn_requant_clamp(c11, mult[ch + 1], shift[ch + 1], out_offset, act_min,
                                   act_max);
        out0 += 2;
        out1 += 2;
        a0 = a1; /* skip the second row */
    }
    if (out_ch & 1) {
        const int16_t *pb0 = b0;
        const int16_t *pb1 = b0 + aligned_cols;
        int32_t c0 = bias ? bias[ch] : 0;
        int32_t c1 = c0;
        int32_t cols = num_cols >> 2;
        while (cols--) {
            int32_t ae, ao;
            mn_weights_reordered(&a0, &ae, &ao);
            int32_t x0 = mn_read_s16x2_ia(&pb0);
            int32_t x1 = mn_read_s16x2_ia(&pb1);
            c0 = mn_smlad(ae, x0, c0);
            c1 = mn_smlad(ae, x1, c1);
            x0 = mn_read_s16x2_ia(&pb0);
            x1 = mn_read_s16x2_ia(&pb1);
            c0 = mn_smlad(ao, x0, c0);
            c1 = mn_smlad(ao, x1, c1);
        }
        cols = num_cols & 3;
        while (cols--) {
            int32_t w = *a0++;
            c0 += w * *pb0++;
            c1 += w * *pb1++;
        }
        out0[0] = mn_requant_clamp(c0, mult[ch], shift[ch], out_offset, act_min, act_max);
        out1[0] = mn_requant_clamp(c1, mult[ch], shift[ch], out_offset, act_min, act_max);
    }
}

/* One int16 column against out_ch weight rows (the odd last pixel). */
static void mn_single_column(const int8_t *wts, const int16_t *col, int32_t out_ch,
                             const int32_t *shift, const int32_t *mult, int32_t out_offset,
                             int32_t act_min, int32_t act_max, int32_t num_cols,
                             const int32_t *bias, int8_t *out)
{
    const int8_t *a = wts;
    for (int32_t ch = 0; ch < out_ch; ch++) {
        const int16_t *pb = col;
        int32_t acc = bias ? bias[ch] : 0;
        int32_t cols = num_cols >> 2;
        while (cols--) {
            int32_t ae, ao;
            mn_weights_reordered(&a, &ae, &ao);
            int32_t x0 = mn_read_s16x2_ia(&pb);
            acc = mn_smlad(ae, x0, acc);
            int32_t x1 = mn_read_s16x2_ia(&pb);
            acc = mn_smlad(ao, x1, acc);
        }
        cols = num_cols & 3;
        while (cols--)
            acc += *a++ * *pb++;
        out[ch] = mn_requant_clamp(acc, mult[ch], shift[ch], out_offset, act_min, act_max);
    }
}

#endif

static int32_t mn_aligned_cols(const mn_conv_args *a)
{
    int32_t cols = a->k_h * a->k_w * (a->in_c / a->groups);
    return (cols + 3) & ~3;
}

uint32_t mn_conv_scratch_bytes(const mn_conv_args *a)
{
    int32_t al = mn_aligned_cols(a);
    return (uint32_t)(2 * al * 2 + al); /* two int16 columns + one int8 column */
}


#if !MN_MVE
static int32_t mn_convolve_im2col(const mn_conv_args *a)
{
    const mn_conv_args args_copy = *a; /* locals: output stores cannot alias them */
    a = &args_copy;
    const int32_t kernel_ch = a->in_c / a->groups;
    const int32_t rhs_cols = a->k_h * a->k_w * kernel_ch;
    const int32_t aligned = mn_aligned_cols(a);
    const int32_t out_ch_g = a->out_c / a->groups;
    int16_t *buf_s16 = (int16_t *)a->scratch;
    int8_t *col_s8 = (int8_t *)(buf_s16 + 2 * aligned);
    const int8_t pad_value = (int8_t)(-a->in_offset);

    for (int32_t b = 0; b < a->batches; b++) {
        const int8_t *in_b = a->input + b * a->in_h * a->in_w * a->in_c;
        int8_t *out_b = a->output + b * a->out_h * a->out_w * a->out_c;
        for (int32_t g = 0; g < a->groups; g++) {
            const int8_t *in_g = in_b + g * kernel_ch;
            const int8_t *w_g = a->weights + g * out_ch_g * rhs_cols;
            const int32_t *bias_g = a->bias ? a->bias + g * out_ch_g : 0;
            const int32_t *mult_g = a->mult + g * out_ch_g;
            const int32_t *shift_g = a->shift + g * out_ch_g;
            int8_t *out = out_b + g * out_ch_g;
            int16_t *col = buf_s16;
            int32_t columns = 0;
            for (int32_t oy = 0; oy < a->out_h; oy++) {
                const int32_t base_y = a->s_h * oy - a->pad_t;
                for (int32_t ox = 0; ox < a->out_w; ox++) {
                    const int32_t base_x = a->s_w * ox - a->pad_l;
                    int8_t *dst = col_s8;
                    for (int32_t ky = 0; ky < a->k_h; ky++) {
                        const int32_t iy = base_y + a->d_h * ky;
                        for (int32_t kx = 0; kx < a->k_w; kx++) {
                            const int32_t ix = base_x + a->d_w * kx;
                            if (iy < 0 || iy >= a->in_h || ix < 0 || ix >= a->in_w)
                                mn_memset(dst, pad_value, (uint32_t)kernel_ch);
                            else
                                mn_memcpy(dst, in_g + (iy * a->in_w + ix) * a->in_c,
                                          (uint32_t)kernel_ch);
                            dst += kernel_ch;
                        }
                    }
                    mn_s8_to_s16_reordered(col_s8, col, rhs_cols, a->in_offset);
                    col += aligned;
                    if (++columns == 2) {
                        mn_mat_mult_kernel_s8_s16(w_g, buf_s16, out_ch_g, shift_g, mult_g,
                                                  a->out_offset, a->act_min, a->act_max,
                                                  rhs_cols, aligned, bias_g, out, a->out_c);
                        out += 2 * a->out_c;
                        col = buf_s16;
                        columns = 0;
                    }
                }
            }
            if (columns)
                mn_single_column(w_g, buf_s16, out_ch_g, shift_g, mult_g, a->out_offset,
                                 a->act_min, a->act_max, rhs_cols, bias_g, out);
        }
    }
    return MN_OK;
}
#else

/* Helium: int8 im2col of up to 4 pixels (padding filled with the input zero point, which
 * contributes 0 after the folded offset), then the 4-row matrix product. */
static int32_t mn_convolve_im2col(const mn_conv_args *a)
{
    const mn_conv_args args_copy = *a; /* locals: output stores cannot alias them */
    a = &args_copy;
    const int32_t kernel_ch = a->in_c / a->groups;
    const int32_t rhs_cols = a->k_h * a->k_w * kernel_ch;
    const int32_t out_ch_g = a->out_c / a->groups;
    int8_t *cols = (int8_t *)a->scratch;
    const int8_t pad_value = (int8_t)(-a->in_offset);
    for (int32_t b = 0; b < a->batches; b++) {
        const int8_t *in_b = a->input + b * a->in_h * a->in_w * a->in_c;
        int8_t *out_b = a->output + b * a->out_h * a->out_w * a->out_c;
        for (int32_t g = 0; g < a->groups; g++) {
            const int8_t *in_g = in_b + g * kernel_ch;
            const int8_t *w_g = a->weights + g * out_ch_g * rhs_cols;
            const int32_t *bias_g = a->bias ? a->bias + g * out_ch_g : 0;
            int8_t *out = out_b + g * out_ch_g;
            int32_t n = 0;
            const int32_t pixels = a->out_h * a->out_w;
            /* grouped outputs are not rows of out_ch_g: one pixel per call then */
            const int32_t max_n = a->groups == 1 ? 4 : 1;
            for (int32_t px = 0; px < pixels; px++) {
                const int32_t base_y = a->s_h * (px / a->out_w) - a->pad_t;
                const int32_t base_x = a->s_w * (px % a->out_w) - a->pad_l;
                int8_t *dst = cols + n * rhs_cols;
                for (int32_t ky = 0; ky < a->k_h; ky++) {
                    const int32_t iy = base_y + a->d_h * ky;
                    for (int32_t kx = 0; kx < a->k_w; kx++) {
                        const int32_t ix = base_x + a->d_w * kx;
                        if (iy < 0 || iy >= a->in_h || ix < 0 || ix >= a->in_w)
                            mn_memset(dst, pad_value, (uint32_t)kernel_ch);
                        else
                            mn_memcpy(dst, in_g + (iy * a->in_w + ix) * a->in_c,
                                      (uint32_t)kernel_ch);
                        dst += kernel_ch;
                    }
                }
                if (++n == max_n || px == pixels - 1) {
                    mn_mat_mult_nt_t_s8(cols, w_g, bias_g, out, a->mult + g * out_ch_g,
                                        a->shift + g * out_ch_g, n, out_ch_g, rhs_cols,
                                        a->in_offset, a->out_offset, a->act_min, a->act_max,
                                        rhs_cols);
                    out += n * a->out_c;
                    n = 0;
                }
            }
        }
    }
    return MN_OK;
}
#endif


static int32_t mn_convolve_1x1(const mn_conv_args *a)
{
    const int32_t c = a->in_c;
    if (a->s_h == 1 && a->s_w == 1) {
        mn_mat_mult_nt_t_s8(a->input, a->weights, a->bias, a->output, a->mult, a->shift,
                            a->batches * a->in_h * a->in_w, a->out_c, c, a->in_offset,
                            a->out_offset, a->act_min, a->act_max, c);
        return MN_OK;
    }
    for (int32_t b = 0; b < a->batches; b++) {
        for (int32_t oy = 0; oy < a->out_h; oy++) {
            const int8_t *in = a->input + ((b * a->in_h + oy * a->s_h) * a->in_w) * c;
            int8_t *out = a->output + ((b * a->out_h + oy) * a->out_w) * a->out_c;
            mn_mat_mult_nt_t_s8(in, a->weights, a->bias, out, a->mult, a->shift, a->out_w,
                                a->out_c, c, a->in_offset, a->out_offset, a->act_min,
                                a->act_max, a->s_w * c);
        }
    }
    return MN_OK;
}

int32_t mn_conv_is_1x1(const mn_conv_args *a)
{
    return a->pad_t == 0 && a->pad_l == 0 && a->k_h == 1 && a->k_w == 1 && a->d_h == 1 &&
           a->d_w == 1 && a->groups == 1;
}

int32_t mn_conv_s8(const mn_conv_args *a)
{
    if (a->groups < 1 || a->in_c % a->groups || a->out_c % a->groups)
        return MN_ARG_ERROR;
    if (mn_conv_is_1x1(a))
        return mn_convolve_1x1(a);
    if (!a->scratch)
        return MN_ARG_ERROR;
    return mn_convolve_im2col(a);
}
