/* CONV_2D / FULLY_CONNECTED for RV32 XpulpV2 / XpulpNN cores (PULP-NN style, our code):
 * SIMD dot products pv.sdotsp / pv.sdotusp on 4 bytes (.b), 8 nibbles (.n, XpulpNN) or
 * 16 crumbs (.c, XpulpNN) per instruction, emitted with the assembler's `.insn r` (PULP
 * OP-V encoding, opcode 0x57: funct3 001 = .b, 010 = .n/.c; funct7 1011100 sdotsp,
 * 1010100 sdotusp, +1 for .c -- riscv-xpulp.md 4/5, decoded back by
 * mcusim/firmware/riscv.py and isa/riscv_asm.py). Host builds use portable C with the
 * same lane arithmetic (isa/xpulp.py's dot).
 *
 * - per output pixel an im2col column in the activations' own packed format (taps in OHWI
 *   row order, padding taps filled with the input zero point's code, so that with the
 *   FOLDED bias (bias - zp * sum(w)) acc = bias' + sum(w * x) over every tap), the row's
 *   tail words 0 (the weight rows' tails are 0 too);
 * - 2 columns x 4 output channels per step (PULP-NN's 4x2 matmul), one sdot per word and
 *   (channel, column); leftover channels one at a time (1 x 2), a last odd column (and a
 *   batch-1 FC) with 1 column; int8 activations with 4/2-bit weights (W4A8 / W2A8): each
 *   weight word is unpacked to bytes by shifts (sign-extended) before pv.sdotsp.b;
 * - then fixed-point requantization (TFLite rule, mn_sb_output) or thresholds, stored
 *   packed at the output width (the XpulpNN pv.qnt.n tree is not used: same values). */
#include "mcusim_nn.h"

#if defined(__riscv)
#define MN_SDOT(f3, f7, acc, x, w)                                                           \
    __asm__ volatile(".insn r 0x57, " #f3 ", " #f7 ", %0, %1, %2" : "+r"(acc) : "r"(x), "r"(w))
#else
MN_INLINE int32_t mn_lane(uint32_t v, int32_t i, int32_t bits, int32_t sgn)
{
    const uint32_t c = (v >> (i * bits)) & ((1u << bits) - 1u);
    return sgn && (c >> (bits - 1)) ? (int32_t)c - (1 << bits) : (int32_t)c;
}
MN_INLINE int32_t mn_dot_c(uint32_t x, uint32_t w, int32_t bits, int32_t xs)
{
    int32_t s = 0;
    for (int32_t i = 0; i < 32 / bits; i++)
        s += mn_lane(x, i, bits, xs) * mn_lane(w, i, bits, 1);
    return s;
}
#define MN_SDOT_C(bits, xs, acc, x, w)                                                       \
    (acc) = (int32_t)((uint32_t)(acc) + (uint32_t)mn_dot_c((x), (w), (bits), (xs)))
#endif

/* acc += dot(x, w): x lanes signed (xs) or unsigned, w lanes signed; BITS constant */
#if defined(__riscv)
#define MN_PV_SDOT(BITS, XS, acc, x, w)                                                      \
    do {                                                                                     \
        if ((BITS) == 8 && (XS))                                                             \
            MN_SDOT(1, 0x5C, acc, x, w); /* pv.sdotsp.b */                                   \
        else if ((BITS) == 8)                                                                \
            MN_SDOT(1, 0x54, acc, x, w); /* pv.sdotusp.b */                                  \
        else if ((BITS) == 4 && (XS))                                                        \
            MN_SDOT(2, 0x5C, acc, x, w); /* pv.sdotsp.n */                                   \
        else if ((BITS) == 4)                                                                \
            MN_SDOT(2, 0x54, acc, x, w); /* pv.sdotusp.n */                                  \
        else if (XS)                                                                         \
            MN_SDOT(2, 0x5D, acc, x, w); /* pv.sdotsp.c */                                   \
        else                                                                                 \
            MN_SDOT(2, 0x55, acc, x, w); /* pv.sdotusp.c */                                  \
    } while (0)
#else
#define MN_PV_SDOT(BITS, XS, acc, x, w) MN_SDOT_C(BITS, XS, acc, x, w)
#endif

uint32_t mn_pulp_scratch_bytes(const mn_sb_conv_args *a)
{
    return (uint32_t)(2 * 4 * a->row_words * (a->in_bits / a->w_bits));
}

/* one packed im2col column (col_words words) of output pixel (oy, ox) */
static void mn_pulp_column(const mn_sb_conv_args *a, uint32_t *col, int32_t col_words,
                           int32_t b, int32_t g, int32_t oy, int32_t ox)
{
    const int32_t cg = a->in_c / a->groups;
    const int32_t bits = a->in_bits;
    const uint32_t zp_code = (uint32_t)a->in_zp & ((1u << bits) - 1u);
    /* up to 24 bits of repeated zero-point codes */
    const int32_t per = 24 / bits;
    uint32_t zp_run = 0;
    for (int32_t i = 0; i < per; i++)
        zp_run |= zp_code << (i * bits);
    mn_bitw w = {col, 0u, 0};
    for (int32_t ky = 0; ky < a->k_h; ky++) {
        const int32_t iy = oy * a->s_h - a->pad_t + ky * a->d_h;
        for (int32_t kx = 0; kx < a->k_w; kx++) {
            const int32_t ix = ox * a->s_w - a->pad_l + kx * a->d_w;
            if (iy < 0 || iy >= a->in_h || ix < 0 || ix >= a->in_w) {
                for (int32_t left = cg; left > 0; left -= per) {
                    const int32_t n = left < per ? left : per;
                    mn_bitw_put(&w, zp_run & ((1u << (n * bits)) - 1u), n * bits);
                }
                continue;
            }
            const int32_t pix = (b * a->in_h + iy) * a->in_w + ix;
            mn_bitw_copy(&w, a->input, (pix * a->in_c + g * cg) * bits, cg * bits);
        }
    }
    mn_bitw_finish(&w, col + col_words);
}

/* NCH (4 or 1) weight rows x 2 columns (TWO = 0: column 0 only), x and w both at BITS:
 * per reduction word NCH + 2 loads and 2 * NCH dot products (PULP-NN's 4x2 matmul) */
MN_INLINE void mn_pulp_kernel(const uint32_t *w, int32_t rw, const uint32_t *x0,
                              const uint32_t *x1, int32_t words, const int32_t BITS,
                              const int32_t XS, const int32_t TWO, const int32_t NCH,
                              int32_t *acc)
{
    int32_t s[8];
    for (int32_t i = 0; i < 2 * NCH; i++)
        s[i] = acc[i];
    for (int32_t j = 0; j < words; j++) {
        const uint32_t c0 = x0[j];
        const uint32_t c1 = TWO ? x1[j] : 0u;
        for (int32_t i = 0; i < NCH; i++) {
            const uint32_t p = w[i * rw + j];
            MN_PV_SDOT(BITS, XS, s[2 * i], c0, p);
            if (TWO)
                MN_PV_SDOT(BITS, XS, s[2 * i + 1], c1, p);
        }
    }
    for (int32_t i = 0; i < 2 * NCH; i++)
        acc[i] = s[i];
}

/* int8 columns x 4/2-bit (WB) weight rows: each weight word -> 32/WB sign-extended bytes */
MN_INLINE uint32_t mn_unpack_bytes(uint32_t w, int32_t k, const int32_t WB)
{
    uint32_t r = 0;
    for (int32_t i = 0; i < 4; i++) {
        const int32_t s = (k * 4 + i) * WB;
        const int32_t v = (int32_t)(w << (32 - WB - s)) >> (32 - WB);
        r |= ((uint32_t)v & 0xFFu) << (8 * i);
    }
    return r;
}

MN_INLINE void mn_pulp_kernel_mixed(const uint32_t *w, int32_t rw, const uint32_t *x0,
                                    const uint32_t *x1, int32_t words, const int32_t WB,
                                    const int32_t XS, const int32_t TWO, const int32_t NCH,
                                    int32_t *acc)
{
    int32_t s[8];
    for (int32_t i = 0; i < 2 * NCH; i++)
        s[i] = acc[i];
    const int32_t per = 8 / WB; /* byte words per weight word */
    for (int32_t j = 0; j < words; j++) {
        uint32_t q[4];
        for (int32_t i = 0; i < NCH; i++)
            q[i] = w[i * rw + j];
#pragma GCC unroll 4
        for (int32_t k = 0; k < per; k++) {
            const uint32_t c0 = x0[j * per + k];
            const uint32_t c1 = TWO ? x1[j * per + k] : 0u;
            for (int32_t i = 0; i < NCH; i++) {
                const uint32_t p = mn_unpack_bytes(q[i], k, WB);
                MN_PV_SDOT(8, XS, s[2 * i], c0, p);
                if (TWO)
                    MN_PV_SDOT(8, XS, s[2 * i + 1], c1, p);
            }
        }
    }
    for (int32_t i = 0; i < 2 * NCH; i++)
        acc[i] = s[i];
}

/* every (bits, signedness, columns) variant with its constants propagated */
#define MN_PULP_VARIANTS(K, B, N)                                                            \
    do {                                                                                     \
        if (xs && two)                                                                       \
            K(w, rw, x0, x1, rw, B, 1, 1, N, acc);                                           \
        else if (xs)                                                                         \
            K(w, rw, x0, x1, rw, B, 1, 0, N, acc);                                           \
        else if (two)                                                                        \
            K(w, rw, x0, x1, rw, B, 0, 1, N, acc);                                           \
        else                                                                                 \
            K(w, rw, x0, x1, rw, B, 0, 0, N, acc);                                           \
    } while (0)

#define MN_PULP_DISPATCH(N)                                                                  \
    do {                                                                                     \
        if (a->in_bits == a->w_bits) {                                                       \
            if (a->in_bits == 8)                                                             \
                MN_PULP_VARIANTS(mn_pulp_kernel, 8, N);                                      \
            else if (a->in_bits == 4)                                                        \
                MN_PULP_VARIANTS(mn_pulp_kernel, 4, N);                                      \
            else                                                                             \
                MN_PULP_VARIANTS(mn_pulp_kernel, 2, N);                                      \
        } else if (a->w_bits == 4) {                                                         \
            MN_PULP_VARIANTS(mn_pulp_kernel_mixed, 4, N);                                    \
        } else {                                                                             \
            MN_PULP_VARIANTS(mn_pulp_kernel_mixed, 2, N);                                    \
        }                                                                                    \
    } while (0)

/* 4 channels (or 1: nch != 4) from weight row w, accumulators acc[2 * ch + column] */
static void mn_pulp_dispatch(const mn_sb_conv_args *a, const uint32_t *w, int32_t nch,
                             const uint32_t *x0, const uint32_t *x1, int32_t two, int32_t *acc)
{
    const int32_t rw = a->row_words, xs = a->in_signed;
    if (nch == 4)
        MN_PULP_DISPATCH(4);
    else
        MN_PULP_DISPATCH(1);
}

int32_t mn_conv_pulp(const mn_sb_conv_args *a)
{
    const mn_sb_conv_args args_copy = *a;
    a = &args_copy;
    const int32_t ib = a->in_bits, wb = a->w_bits;
    const int32_t ok_bits = (ib == wb && (ib == 8 || ib == 4 || ib == 2)) ||
                            (ib == 8 && (wb == 4 || wb == 2));
    if (!ok_bits || a->groups < 1 || a->in_c % a->groups || a->out_c % a->groups ||
        a->row_words < 1)
        return MN_ARG_ERROR;
    const int32_t col_words = a->row_words * (ib / wb);
    const int32_t out_ch_g = a->out_c / a->groups;
    uint32_t *col0 = (uint32_t *)a->scratch;
    uint32_t *col1 = col0 + col_words;
    const uint32_t *weights = a->weights;
    const int32_t pixels = a->out_h * a->out_w;
    for (int32_t b = 0; b < a->batches; b++) {
        for (int32_t g = 0; g < a->groups; g++) {
            for (int32_t px = 0; px < pixels; px += 2) {
                const int32_t two = px + 1 < pixels;
                mn_pulp_column(a, col0, col_words, b, g, px / a->out_w, px % a->out_w);
                if (two)
                    mn_pulp_column(a, col1, col_words, b, g, (px + 1) / a->out_w,
                                   (px + 1) % a->out_w);
                const uint32_t *x1 = two ? col1 : col0;
                for (int32_t cc = 0; cc < out_ch_g;) {
                    const int32_t nch = cc + 4 <= out_ch_g ? 4 : 1;
                    const int32_t c0 = g * out_ch_g + cc;
                    int32_t acc[8];
                    for (int32_t i = 0; i < nch; i++)
                        acc[2 * i] = acc[2 * i + 1] = a->bias ? a->bias[c0 + i] : 0;
                    mn_pulp_dispatch(a, weights + c0 * a->row_words, nch, col0, x1, two, acc);
                    const int32_t o0 = (b * pixels + px) * a->out_c;
                    for (int32_t i = 0; i < nch; i++) {
                        mn_put_value(a->output, o0 + c0 + i, a->out_bits,
                                     mn_sb_output(a, acc[2 * i], c0 + i));
                        if (two)
                            mn_put_value(a->output, o0 + a->out_c + c0 + i, a->out_bits,
                                         mn_sb_output(a, acc[2 * i + 1], c0 + i));
                    }
                    cc += nch;
                }
            }
        }
    }
    return MN_OK;
}
