/* DEPTHWISE_CONV_2D int8 (our implementation of the paths CMSIS-NN's
 * arm_depthwise_conv_wrapper_s8 takes on Armv7E-M; kernels/schedules/cmsis_depthwise.py):
 *
 * - channel multiplier 1, batch 1, no dilation, 3x3 filter, padding <= 1: 4 channels per
 *   step, one word of input and of weights per tap, input offset added by SXTAB16,
 *   SMLABB/SMLATT per channel; border taps skipped; 1-3 leftover channels scalar. The DSP
 *   build runs it as one inline-assembly block (mn_dw3_asm) when there is a bias and
 *   in_c % 4 == 0, the C loop (mn_dw_3x3) otherwise and on the host.
 * - channel multiplier a multiple of 4 (batch 1, no dilation): 4 output channels per input
 *   value, per in-bounds tap one input byte and one word of 4 weights. The DSP build runs
 *   it as one inline-assembly block (mn_dwm4_asm) when there is a bias and the output is
 *   word-aligned, the C loop (mn_dw_mult4) otherwise and on the host.
 * - anything else: the generic loop, one output channel at a time over the in-bounds taps.
 *   (CMSIS-NN's s16-im2col "opt" path for multiplier-1 filters other than 3x3 is not
 *   twinned: such layers run the generic loop here.)
 */
#include "mcusim_nn.h"

#if MN_DSP
/* DSP build: the whole 3x3 kernel as one inline-assembly block whose blocks follow the
 * schedule's (kernels/schedules/cmsis_depthwise.py dw3_* and gcc_requant_post) in kind,
 * count and order of instructions, so GCC and clang builds execute the same stream: the
 * loop counters, running pointers and layer constants live in a stack frame the block
 * allocates (the 13 registers clang leaves with r7 as frame pointer all go to the taps).
 * Frame (byte offsets; the first 35 words are copied from mn_dw3_frame):
 *   0 ker_w_start = MAX(0, -in_x)  4 MIN(3, in_w - in_x)  8 row count-down  12 filter rows
 *  of this output row  16 bias  20 shift (running pointers)  24 multiplier - shift (bytes)
 *  28 output (running)  32 out_offset  36 act_min  40 act_max  44 end of the pixel's outputs
 *  48 in_c  52 in_w * in_c  56 input offset pair  64 in_x  68 stride_x  72 in_w
 *  76 column count-down  80 out_w  84 row count-down  88 in_y  92 stride_y  96 in_h
 * 100 input  104 weights  108 bias  112 shift (first channel)  120 / 124 input / weights of
 * the next group  128 -pad_l  132 input at (first filter row, column 0)  136 weights at the
 * first filter row */
typedef struct {
    int32_t w[35];
} mn_dw3_frame;

/* One 3x3 tap on 4 channels (block dw3_tap_*): a word of input (+ offset pair by
 * SXTAB16) and of weights, odd lanes (ROR #8) into s1/s3, even lanes into s0/s2. */
#define MN_DW3_TAP(XA, WA)                                                                       \
    "ldr     %[x], " XA "\n\t"                                                                   \
    "ldr     %[w], " WA "\n\t"                                                                   \
    "sxtab16 %[xo], %[off], %[x], ror #8\n\t"                                                    \
    "sxtb16  %[wo], %[w], ror #8\n\t"                                                            \
    "smlabb  %[s1], %[xo], %[wo], %[s1]\n\t"                                                     \
    "sxtab16 %[x], %[off], %[x]\n\t"                                                             \
    "smlatt  %[s3], %[xo], %[wo], %[s3]\n\t"                                                     \
    "sxtb16  %[w], %[w]\n\t"                                                                     \
    "smlabb  %[s0], %[x], %[w], %[s0]\n\t"                                                       \
    "smlatt  %[s2], %[x], %[w], %[s2]\n\t"

/* One output (block gcc_requant_post), accumulator ACC, byte K of the group: shift and
 * multiplier (at shift + b) by the post-incremented pointer a; acc << max(shift, 0), acc * M + 2^30
 * (64-bit) keeping bits [62:31]; shift <= 0: rounding divide by 2^-shift (remainder >
 * mask / 2 + (quotient < 0)); + out_offset, clamp, store (limits and output pointer
 * reloaded from the frame). Registers: a shift pointer, b multiplier - shift, x shift,
 * w multiplier, xo / wo scratch, ch result. */
#define MN_DW3_OUT(ACC, K)                                                                       \
    "ldr     %[w], [%[a], %[b]]\n\t"                                                             \
    "ldr     %[x], [%[a]], #4\n\t"                                                               \
    "bic     %[xo], %[x], %[x], asr #31\n\t"                                                     \
    "lsl     %[xo], %[" ACC "], %[xo]\n\t"                                                       \
    "movs    %[wo], #0\n\t"                                                                      \
    "mov     %[ch], #0x40000000\n\t"                                                             \
    "smlal   %[ch], %[wo], %[xo], %[w]\n\t"                                                      \
    "lsrs    %[ch], %[ch], #31\n\t"                                                              \
    "cmp     %[x], #0\n\t"                                                                       \
    "orr     %[ch], %[ch], %[wo], lsl #1\n\t"                                                    \
    "bgt     5f\n\t"                                                                             \
    "rsbs    %[x], %[x], #0\n\t"                                                                 \
    "movs    %[w], #1\n\t"                                                                       \
    "lsls    %[w], %[x]\n\t"                                                                     \
    "subs    %[w], #1\n\t"                                                                       \
    "and     %[xo], %[ch], %[w]\n\t"                                                             \
    "asrs    %[ch], %[x]\n\t"                                                                    \
    "asr     %[w], %[w], #1\n\t"                                                                 \
    "it      mi\n\t"                                                                             \
    "addmi   %[w], #1\n\t"                                                                       \
    "cmp     %[xo], %[w]\n\t"                                                                    \
    "it      gt\n\t"                                                                             \
    "addgt   %[ch], #1\n"                                                                        \
    "5:\n\t"                                                                                     \
    "ldr     %[w], [sp, #32]\n\t"                                                                \
    "add     %[ch], %[w]\n\t"                                                                    \
    "ldr     %[w], [sp, #36]\n\t"                                                                \
    "cmp     %[ch], %[w]\n\t"                                                                    \
    "it      lt\n\t"                                                                             \
    "movlt   %[ch], %[w]\n\t"                                                                    \
    "ldr     %[w], [sp, #40]\n\t"                                                                \
    "cmp     %[ch], %[w]\n\t"                                                                    \
    "it      ge\n\t"                                                                             \
    "movge   %[ch], %[w]\n\t"                                                                    \
    "ldr     %[xo], [sp, #28]\n\t"                                                               \
    "strb    %[ch], [%[xo], #" #K "]\n\t"

/* in_c % 4 == 0 and a bias (every shared model); otherwise mn_dw_3x3 in C. */
static int32_t mn_dw3_asm(const mn_dw_args *a)
{
    mn_dw3_frame f;
    const int32_t ch = a->in_c;
    f.w[0] = f.w[1] = f.w[2] = f.w[3] = 0;
    f.w[4] = f.w[5] = 0;
    f.w[6] = (int32_t)((uintptr_t)a->mult - (uintptr_t)a->shift);
    f.w[7] = (int32_t)(uintptr_t)a->output;
    f.w[8] = a->out_offset;
    f.w[9] = a->act_min;
    f.w[10] = a->act_max;
    f.w[11] = 0;
    f.w[12] = ch;
    f.w[13] = ch * a->in_w;
    f.w[14] = mn_pair16(a->in_offset);
    f.w[15] = f.w[16] = 0;
    f.w[17] = a->s_w;
    f.w[18] = a->in_w;
    f.w[19] = 0;
    f.w[20] = a->out_w;
    f.w[21] = a->out_h;
    f.w[22] = -a->pad_t;
    f.w[23] = a->s_h;
    f.w[24] = a->in_h;
    f.w[25] = (int32_t)(uintptr_t)a->input;
    f.w[26] = (int32_t)(uintptr_t)a->weights;
    f.w[27] = (int32_t)(uintptr_t)a->bias;
    f.w[28] = (int32_t)(uintptr_t)a->shift;
    f.w[29] = f.w[30] = f.w[31] = 0;
    f.w[32] = -a->pad_l;
    f.w[33] = f.w[34] = 0;
    int32_t x = (int32_t)(uintptr_t)&f, ip, wp, chr, row, off, s0, s1, s2, s3, w, xo, wo;
    __asm__ volatile(
        /* frame: copy the 35 words, keep in_w * in_c and the offset pair in registers */
        "sub     sp, #144\n\t"
        "mov     %[w], sp\n\t"
        "movs    %[xo], #35\n"
        "0:\n\t"
        "ldr     %[wo], [%[x]], #4\n\t"
        "str     %[wo], [%[w]], #4\n\t"
        "subs    %[xo], #1\n\t"
        "bne     0b\n\t"
        "ldr     %[row], [sp, #52]\n\t"
        "ldr     %[off], [sp, #56]\n"
        /* ---- output row: filter rows inside the input, first input row, in_x = -pad_l */
        "10:\n\t"
        "ldr     %[x], [sp, #88]\n\t"  /* in_y */
        "ldr     %[w], [sp, #96]\n\t"
        "subs    %[w], %[w], %[x]\n\t"
        "cmp     %[w], #3\n\t"
        "it      gt\n\t"
        "movgt   %[w], #3\n\t"         /* MIN(3, in_h - in_y) */
        "rsbs    %[xo], %[x], #0\n\t"
        "bic     %[xo], %[xo], %[xo], asr #31\n\t" /* ker_h_start */
        "subs    %[w], %[w], %[xo]\n\t"
        "str     %[w], [sp, #12]\n\t"
        "add     %[x], %[x], %[xo]\n\t"
        "ldr     %[a], [sp, #100]\n\t"
        "mla     %[a], %[x], %[row], %[a]\n\t"
        "str     %[a], [sp, #132]\n\t"
        "ldr     %[ch], [sp, #48]\n\t"
        "add     %[wo], %[ch], %[ch], lsl #1\n\t"
        "ldr     %[b], [sp, #104]\n\t"
        "mla     %[b], %[xo], %[wo], %[b]\n\t"
        "str     %[b], [sp, #136]\n\t"
        "ldr     %[x], [sp, #128]\n\t"
        "str     %[x], [sp, #64]\n\t"  /* in_x = -pad_l */
        "ldr     %[x], [sp, #80]\n\t"
        "str     %[x], [sp, #76]\n"
        /* ---- output pixel (block dw3_pixel_setup): window bounds and running pointers */
        "20:\n\t"
        "ldr     %[x], [sp, #64]\n\t"  /* in_x */
        "rsbs    %[w], %[x], #0\n\t"
        "cmp     %[x], #0\n\t"
        "it      ge\n\t"
        "movge   %[w], #0\n\t"
        "str     %[w], [sp, #0]\n\t"   /* ker_w_start */
        "ldr     %[w], [sp, #72]\n\t"
        "subs    %[w], %[w], %[x]\n\t"
        "cmp     %[w], #3\n\t"
        "it      gt\n\t"
        "movgt   %[w], #3\n\t"
        "str     %[w], [sp, #4]\n\t"   /* MIN(3, in_w - in_x) */
        "ldr     %[a], [sp, #132]\n\t"
        "ldr     %[ch], [sp, #48]\n\t"
        "mla     %[a], %[x], %[ch], %[a]\n\t"
        "str     %[a], [sp, #120]\n\t"
        "ldr     %[b], [sp, #136]\n\t"
        "str     %[b], [sp, #124]\n\t"
        "ldr     %[xo], [sp, #28]\n\t"
        "add     %[xo], %[xo], %[ch]\n\t"
        "str     %[xo], [sp, #44]\n\t" /* end of the pixel's outputs */
        "ldr     %[x], [sp, #108]\n\t"
        "str     %[x], [sp, #16]\n\t"
        "ldr     %[x], [sp, #112]\n\t"
        "str     %[x], [sp, #20]\n"
        /* ---- group of 4 channels (block dw3_group_setup): bias, pointers, row count */
        "30:\n\t"
        "ldr     %[x], [sp, #16]\n\t"
        "ldr     %[s0], [%[x]], #4\n\t"
        "ldr     %[s1], [%[x]], #4\n\t"
        "ldr     %[s2], [%[x]], #4\n\t"
        "ldr     %[s3], [%[x]], #4\n\t"
        "str     %[x], [sp, #16]\n\t"
        "ldr     %[a], [sp, #120]\n\t"
        "adds    %[x], %[a], #4\n\t"
        "str     %[x], [sp, #120]\n\t"
        "ldr     %[b], [sp, #124]\n\t"
        "adds    %[x], %[b], #4\n\t"
        "str     %[x], [sp, #124]\n\t"
        "ldr     %[ch], [sp, #48]\n\t"
        "ldr     %[w], [sp, #12]\n\t"
        "str     %[w], [sp, #8]\n"
        /* ---- filter rows: left test, left tap, middle tap, right test, right tap, step */
        "40:\n\t"
        "ldr     %[x], [sp]\n\t"
        "cmp     %[x], #0\n\t"
        "bne     41f\n\t"
        MN_DW3_TAP("[%[a]]", "[%[b]]")
        "41:\n\t"
        MN_DW3_TAP("[%[a], %[ch]]", "[%[b], %[ch]]")
        "ldr     %[x], [sp, #4]\n\t"
        "cmp     %[x], #2\n\t"
        "ble     42f\n\t"
        MN_DW3_TAP("[%[a], %[ch], lsl #1]", "[%[b], %[ch], lsl #1]")
        "42:\n\t"
        "add     %[a], %[a], %[row]\n\t"
        "add     %[b], %[b], %[ch], lsl #1\n\t"
        "add     %[b], %[b], %[ch]\n\t"
        "ldr     %[x], [sp, #8]\n\t"
        "subs    %[x], #1\n\t"
        "str     %[x], [sp, #8]\n\t"
        "bne     40b\n\t"
        /* ---- 4 outputs, then the group and pixel steps */
        "ldr     %[a], [sp, #20]\n\t"
        "ldr     %[b], [sp, #24]\n\t"
        MN_DW3_OUT("s0", 0)
        MN_DW3_OUT("s1", 1)
        MN_DW3_OUT("s2", 2)
        MN_DW3_OUT("s3", 3)
        "str     %[a], [sp, #20]\n\t"
        "adds    %[xo], #4\n\t"
        "str     %[xo], [sp, #28]\n\t"
        "ldr     %[x], [sp, #44]\n\t"
        "cmp     %[xo], %[x]\n\t"
        "bne     30b\n\t"              /* next group (block dw3_group_end) */
        "ldr     %[x], [sp, #64]\n\t"
        "ldr     %[w], [sp, #68]\n\t"
        "add     %[x], %[w]\n\t"
        "str     %[x], [sp, #64]\n\t"  /* in_x += stride_x (block dw3_pixel_end) */
        "ldr     %[x], [sp, #76]\n\t"
        "subs    %[x], #1\n\t"
        "str     %[x], [sp, #76]\n\t"
        "bne     20b\n\t"
        "ldr     %[x], [sp, #88]\n\t"
        "ldr     %[w], [sp, #92]\n\t"
        "add     %[x], %[w]\n\t"
        "str     %[x], [sp, #88]\n\t"  /* in_y += stride_y */
        "ldr     %[x], [sp, #84]\n\t"
        "subs    %[x], #1\n\t"
        "str     %[x], [sp, #84]\n\t"
        "bne     10b\n\t"
        "add     sp, #144\n\t"
        : [x] "+r"(x), [a] "=&r"(ip), [b] "=&r"(wp), [ch] "=&r"(chr), [row] "=&r"(row),
          [off] "=&r"(off), [s0] "=&r"(s0), [s1] "=&r"(s1), [s2] "=&r"(s2), [s3] "=&r"(s3),
          [w] "=&r"(w), [xo] "=&r"(xo), [wo] "=&r"(wo)
        :
        : "cc", "memory");
    return MN_OK;
}
#endif

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

#if MN_DSP
/* DSP build of the multiplier-4 path: one inline-assembly block whose blocks follow the
 * schedule's dw_m4_* (kernels/schedules/cmsis_depthwise.py: tile setup, row setup, taps,
 * row end, tile outputs, tile end) in kind, count and order of instructions, so GCC and
 * clang builds execute the same stream. All 13 operand registers go to the tap loop
 * (pointers, strides, offset, temporaries, tap end and count, 4 sums); r7 (saved by the
 * block itself: clang keeps it as frame pointer) holds the weights' row pointer across
 * the taps, everything else lives in a stack frame the block allocates. Frame (byte
 * offsets; words copied from mn_dwm4_frame): 0/4 row count and input row offset (kept
 * over the taps) 8/12 zeros  16 taps per row (0: none)  20 filter rows  24 k_w * out_c
 * 28 in_w * in_c  32 input at the channel's first tap  36 weights at the tile's first tap
 * 40 bias (running)  44 shift (running)  48 multiplier - shift - 4 (bytes)  52 out_offset
 * 56 act_min  60 act_max  64 output (running)  68 ch_mult  72 end of the input channel's
 * outputs  76 end of the pixel's outputs  80 in_x  84 stride_x  88 in_w  92 k_w (0 when
 * no filter row is inside)  96 column count-down  100 out_w  104 row count-down  108 in_y
 * 112 stride_y  116 in_h  120 k_h  124 input  128 weights  132 bias  136 shift  140 -pad_l
 * 144 input at the first filter row (column 0)  148 weights at the first filter row
 * 152 in_c  156 input offset  160 out_c  164 k_w */
typedef struct {
    int32_t w[42];
} mn_dwm4_frame;

/* Requantize sum ACC in place (block gcc_requant_post's arithmetic): shift by the
 * post-incremented pointer a, multiplier at [a, b]; acc << max(shift, 0), * M + 2^30
 * (64-bit) keeping bits [62:31]; shift <= 0: rounding divide by 2^-shift (remainder >
 * mask / 2 + (quotient < 0)). Registers: n shift, e multiplier, x / w scratch. */
#define MN_DWM4_RQ(ACC)                                                                          \
    "ldr     %[n], [%[a]], #4\n\t"                                                               \
    "ldr     %[e], [%[a], %[b]]\n\t"                                                             \
    "bic     %[x], %[n], %[n], asr #31\n\t"                                                      \
    "lsl     %[x], %[" ACC "], %[x]\n\t"                                                         \
    "movs    %[w], #0\n\t"                                                                       \
    "mov     %[" ACC "], #0x40000000\n\t"                                                        \
    "smlal   %[" ACC "], %[w], %[x], %[e]\n\t"                                                   \
    "lsrs    %[" ACC "], %[" ACC "], #31\n\t"                                                    \
    "cmp     %[n], #0\n\t"                                                                       \
    "orr     %[" ACC "], %[" ACC "], %[w], lsl #1\n\t"                                           \
    "bgt     1f\n\t"                                                                             \
    "rsbs    %[n], %[n], #0\n\t"                                                                 \
    "movs    %[e], #1\n\t"                                                                       \
    "lsls    %[e], %[n]\n\t"                                                                     \
    "subs    %[e], #1\n\t"                                                                       \
    "and     %[x], %[" ACC "], %[e]\n\t"                                                         \
    "asrs    %[" ACC "], %[n]\n\t"                                                               \
    "asr     %[e], %[e], #1\n\t"                                                                 \
    "it      mi\n\t"                                                                             \
    "addmi   %[e], #1\n\t"                                                                       \
    "cmp     %[x], %[e]\n\t"                                                                     \
    "it      gt\n\t"                                                                             \
    "addgt   %[" ACC "], #1\n"                                                                   \
    "1:\n\t"

/* + out_offset, clamp to [act_min, act_max] (limits reloaded from the frame). */
#define MN_DWM4_CLAMP(ACC)                                                                       \
    "ldr     %[x], [sp, #52]\n\t"                                                                \
    "add     %[" ACC "], %[x]\n\t"                                                               \
    "ldr     %[x], [sp, #56]\n\t"                                                                \
    "cmp     %[" ACC "], %[x]\n\t"                                                               \
    "it      lt\n\t"                                                                             \
    "movlt   %[" ACC "], %[x]\n\t"                                                               \
    "ldr     %[x], [sp, #60]\n\t"                                                                \
    "cmp     %[" ACC "], %[x]\n\t"                                                               \
    "it      ge\n\t"                                                                             \
    "movge   %[" ACC "], %[x]\n\t"

/* a bias, out_h, out_w, in_c > 0 and a word-aligned output (every shared model). */
static int32_t mn_dwm4_asm(const mn_dw_args *a)
{
    mn_dwm4_frame f;
    f.w[0] = f.w[1] = f.w[2] = f.w[3] = f.w[4] = f.w[5] = 0;
    f.w[6] = a->k_w * a->out_c;
    f.w[7] = a->in_w * a->in_c;
    f.w[8] = f.w[9] = f.w[10] = f.w[11] = 0;
    f.w[12] = (int32_t)((uintptr_t)a->mult - (uintptr_t)a->shift) - 4;
    f.w[13] = a->out_offset;
    f.w[14] = a->act_min;
    f.w[15] = a->act_max;
    f.w[16] = (int32_t)(uintptr_t)a->output;
    f.w[17] = a->ch_mult;
    f.w[18] = f.w[19] = 0;
    f.w[20] = 0;
    f.w[21] = a->s_w;
    f.w[22] = a->in_w;
    f.w[23] = a->k_w;
    f.w[24] = 0;
    f.w[25] = a->out_w;
    f.w[26] = a->out_h;
    f.w[27] = -a->pad_t;
    f.w[28] = a->s_h;
    f.w[29] = a->in_h;
    f.w[30] = a->k_h;
    f.w[31] = (int32_t)(uintptr_t)a->input;
    f.w[32] = (int32_t)(uintptr_t)a->weights;
    f.w[33] = (int32_t)(uintptr_t)a->bias;
    f.w[34] = (int32_t)(uintptr_t)a->shift;
    f.w[35] = -a->pad_l;
    f.w[36] = f.w[37] = 0;
    f.w[38] = a->in_c;
    f.w[39] = a->in_offset;
    f.w[40] = a->out_c;
    f.w[41] = a->k_w;
    int32_t x = (int32_t)(uintptr_t)&f, ip, wp, cin, off, cout, s0, s1, s2, s3, w, e, n;
    __asm__ volatile(
        /* frame: save r7, copy the 42 words, strides and input offset into registers */
        "push    {r7}\n\t"
        "sub     sp, #168\n\t"
        "mov     %[w], sp\n\t"
        "movs    %[e], #42\n"
        "0:\n\t"
        "ldr     %[n], [%[x]], #4\n\t"
        "str     %[n], [%[w]], #4\n\t"
        "subs    %[e], #1\n\t"
        "bne     0b\n\t"
        "ldr     %[cin], [sp, #152]\n\t"
        "ldr     %[off], [sp, #156]\n\t"
        "ldr     %[cout], [sp, #160]\n"
        /* ---- output row: filter rows inside the input, row pointers, in_x = -pad_l */
        "10:\n\t"
        "ldr     %[x], [sp, #108]\n\t" /* in_y */
        "ldr     %[w], [sp, #116]\n\t"
        "subs    %[w], %[w], %[x]\n\t"
        "ldr     %[e], [sp, #120]\n\t"
        "cmp     %[w], %[e]\n\t"
        "it      gt\n\t"
        "movgt   %[w], %[e]\n\t"       /* MIN(k_h, in_h - in_y) */
        "rsbs    %[n], %[x], #0\n\t"
        "bic     %[n], %[n], %[n], asr #31\n\t" /* ker_h_start */
        "subs    %[w], %[w], %[n]\n\t"
        "str     %[w], [sp, #20]\n\t"
        "ldr     %[e], [sp, #164]\n\t"
        "cmp     %[w], #0\n\t"
        "it      le\n\t"
        "movle   %[e], #0\n\t"
        "str     %[e], [sp, #92]\n\t" /* no filter row inside: no taps */
        "add     %[x], %[x], %[n]\n\t"
        "ldr     %[a], [sp, #124]\n\t"
        "ldr     %[e], [sp, #28]\n\t"
        "mla     %[a], %[x], %[e], %[a]\n\t"
        "str     %[a], [sp, #144]\n\t"
        "ldr     %[b], [sp, #128]\n\t"
        "ldr     %[e], [sp, #24]\n\t"
        "mla     %[b], %[n], %[e], %[b]\n\t"
        "str     %[b], [sp, #148]\n\t"
        "ldr     %[w], [sp, #100]\n\t"
        "str     %[w], [sp, #96]\n\t"
        "ldr     %[x], [sp, #140]\n\t"
        "str     %[x], [sp, #80]\n"   /* in_x = -pad_l, kept in x */
        /* ---- output pixel (in_x in x): taps per row, channel 0's pointers, output ends */
        "20:\n\t"
        "rsbs    %[n], %[x], #0\n\t"
        "bic     %[n], %[n], %[n], asr #31\n\t" /* ker_w_start */
        "ldrd    %[w], %[e], [sp, #88]\n\t"
        "subs    %[w], %[w], %[x]\n\t"
        "cmp     %[w], %[e]\n\t"
        "it      gt\n\t"
        "movgt   %[w], %[e]\n\t"       /* MIN(k_w, in_w - in_x) */
        "subs    %[w], %[w], %[n]\n\t"
        "str     %[w], [sp, #16]\n\t"
        "add     %[x], %[x], %[n]\n\t"
        "ldrd    %[a], %[b], [sp, #144]\n\t"
        "mla     %[a], %[x], %[cin], %[a]\n\t"
        "mla     %[b], %[n], %[cout], %[b]\n\t"
        "strd    %[a], %[b], [sp, #32]\n\t"
        "ldrd    %[x], %[w], [sp, #132]\n\t"
        "strd    %[x], %[w], [sp, #40]\n\t" /* bias, shift */
        "ldrd    %[x], %[w], [sp, #64]\n\t"
        "add     %[w], %[x]\n\t"
        "add     %[x], %[cout]\n\t"
        "strd    %[w], %[x], [sp, #72]\n"
        /* ---- tile of 4 output channels (block dw_m4_tile_setup): bias, weights, rows */
        "30:\n\t"
        "ldr     %[a], [sp, #40]\n\t"
        "ldr     %[s0], [%[a]], #4\n\t"
        "ldr     %[s1], [%[a]], #4\n\t"
        "ldr     %[s2], [%[a]], #4\n\t"
        "ldr     %[s3], [%[a]], #4\n\t"
        "str     %[a], [sp, #40]\n\t"
        "ldr     r7, [sp, #36]\n\t"
        "adds    %[a], r7, #4\n\t"
        "str     %[a], [sp, #36]\n\t"
        "ldrd    %[x], %[w], [sp, #8]\n"
        /* ---- filter row (block dw_m4_row_setup) */
        "40:\n\t"
        "ldr     %[e], [sp, #16]\n\t"
        "cmp     %[e], #0\n\t"
        "mov     %[b], r7\n\t"
        "ble     50f\n\t"
        "ldr     %[a], [sp, #32]\n\t"
        "strd    %[x], %[w], [sp]\n\t"
        "add     %[a], %[w]\n\t"
        "movs    %[n], #0\n"
        /* ---- tap (block dw_m4_tap): one input value, 4 weights, 4 MLA */
        "41:\n\t"
        "ldrsb   %[x], [%[a]]\n\t"
        "ldrsb   %[w], [%[b]]\n\t"
        "add     %[x], %[x], %[off]\n\t"
        "mla     %[s0], %[x], %[w], %[s0]\n\t"
        "ldrsb   %[w], [%[b], #1]\n\t"
        "mla     %[s1], %[x], %[w], %[s1]\n\t"
        "ldrsb   %[w], [%[b], #2]\n\t"
        "adds    %[n], #1\n\t"
        "mla     %[s2], %[x], %[w], %[s2]\n\t"
        "ldrsb   %[w], [%[b], #3]\n\t"
        "cmp     %[n], %[e]\n\t"
        "add     %[a], %[a], %[cin]\n\t"
        "mla     %[s3], %[x], %[w], %[s3]\n\t"
        "add     %[b], %[b], %[cout]\n\t"
        "bne     41b\n\t"
        /* ---- row end (block dw_m4_row_end) */
        "ldrd    %[x], %[w], [sp]\n\t"
        "ldr     %[e], [sp, #24]\n\t"
        "add     r7, %[e]\n\t"
        "ldr     %[e], [sp, #28]\n\t"
        "add     %[w], %[e]\n\t"
        "ldr     %[e], [sp, #20]\n\t"
        "adds    %[x], #1\n\t"
        "cmp     %[x], %[e]\n\t"
        "bne     40b\n"
        /* ---- 4 outputs (block dw_m4_tile_out): requantize, clamp, one word store */
        "50:\n\t"
        "ldr     %[a], [sp, #44]\n\t"
        "ldr     %[b], [sp, #48]\n\t"
        MN_DWM4_RQ("s0")
        MN_DWM4_RQ("s1")
        MN_DWM4_RQ("s2")
        MN_DWM4_RQ("s3")
        "str     %[a], [sp, #44]\n\t"
        MN_DWM4_CLAMP("s0")
        MN_DWM4_CLAMP("s1")
        MN_DWM4_CLAMP("s2")
        MN_DWM4_CLAMP("s3")
        "movs    %[x], #0\n\t"
        "bfi     %[x], %[s0], #0, #8\n\t"
        "bfi     %[x], %[s1], #8, #8\n\t"
        "bfi     %[x], %[s2], #16, #8\n\t"
        "ldr     %[b], [sp, #64]\n\t"
        "bfi     %[x], %[s3], #24, #8\n\t"
        "str     %[x], [%[b]], #4\n\t"
        /* ---- tile end (block dw_m4_tile_end), then the next input channel */
        "ldr     %[e], [sp, #64]\n\t"
        "adds    %[e], #4\n\t"
        "str     %[e], [sp, #64]\n\t"
        "ldr     %[x], [sp, #72]\n\t"
        "cmp     %[e], %[x]\n\t"
        "blt     30b\n\t"
        "ldr     %[w], [sp, #76]\n\t"
        "cmp     %[e], %[w]\n\t"
        "bge     60f\n\t"
        "ldr     %[x], [sp, #32]\n\t"
        "adds    %[x], #1\n\t"
        "str     %[x], [sp, #32]\n\t"  /* input channel + 1 */
        "ldr     %[w], [sp, #68]\n\t"
        "ldr     %[x], [sp, #72]\n\t"
        "add     %[x], %[w]\n\t"
        "str     %[x], [sp, #72]\n\t"  /* its outputs end ch_mult later */
        "b       30b\n"
        /* ---- pixel end (block dw_m4_pixel): in_x += stride_x, column count */
        "60:\n\t"
        "ldr     %[x], [sp, #80]\n\t"
        "ldr     %[w], [sp, #84]\n\t"
        "add     %[x], %[w]\n\t"
        "str     %[x], [sp, #80]\n\t"
        "ldr     %[w], [sp, #96]\n\t"
        "subs    %[w], #1\n\t"
        "str     %[w], [sp, #96]\n\t"
        "bne     20b\n\t"
        "ldr     %[x], [sp, #108]\n\t"
        "ldr     %[w], [sp, #112]\n\t"
        "add     %[x], %[w]\n\t"
        "str     %[x], [sp, #108]\n\t" /* in_y += stride_y */
        "ldr     %[x], [sp, #104]\n\t"
        "subs    %[x], #1\n\t"
        "str     %[x], [sp, #104]\n\t"
        "bne     10b\n\t"
        "add     sp, #168\n\t"
        "pop     {r7}\n\t"
        : [x] "+r"(x), [a] "=&r"(ip), [b] "=&r"(wp), [cin] "=&r"(cin), [off] "=&r"(off),
          [cout] "=&r"(cout), [s0] "=&r"(s0), [s1] "=&r"(s1), [s2] "=&r"(s2), [s3] "=&r"(s3),
          [w] "=&r"(w), [e] "=&r"(e), [n] "=&r"(n)
        :
        : "cc", "memory"
#if !defined(__clang__)
          , "r7"
#endif
    );
    return MN_OK;
}
#endif

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
#if MN_DSP
        if (a->bias && a->in_c % 4 == 0 && a->out_h > 0 && a->out_w > 0)
            return mn_dw3_asm(a);
#endif
        return mn_dw_3x3(a);
    case 1:
#if MN_DSP
        if (a->bias && a->in_c > 0 && a->out_h > 0 && a->out_w > 0 &&
            ((uintptr_t)a->output & 3) == 0)
            return mn_dwm4_asm(a);
#endif
        return mn_dw_mult4(a);
    default:
        return mn_dw_generic(a);
    }
}
