/* mcusim firmware twins: shared definitions (freestanding C, no libc).
 *
 * Every kernel entry point has the same calling convention (kernels/c/README.md):
 *     int32_t mn_<kernel>(const mn_<kernel>_args *args);   args pointer in r0 / a0
 * The args structs hold pointers first, then int32 fields, so that a 32-bit target lays
 * them out as consecutive 4-byte words and a 64-bit host (ctypes tests) as pointers
 * followed by 4-byte ints. The return value is 0 on success, negative on bad arguments.
 *
 * The DSP helpers use the Armv7E-M SIMD instructions when __ARM_FEATURE_DSP is set and
 * portable C with the same results otherwise (host builds for bit-exactness tests).
 */
#ifndef MCUSIM_NN_H
#define MCUSIM_NN_H

#include <stdint.h>

#define MN_OK 0
#define MN_ARG_ERROR (-1)

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#define MN_DSP 1
#else
#define MN_DSP 0
#endif

/* Helium (Armv8.1-M MVE integer): the conv / FC matrix loops use it (kernels/c/README.md). */
#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)
#define MN_MVE 1
#include <arm_mve.h>
#else
#define MN_MVE 0
#endif

#define MN_INLINE static inline __attribute__((always_inline))

MN_INLINE int32_t mn_max(int32_t a, int32_t b) { return a > b ? a : b; }
MN_INLINE int32_t mn_min(int32_t a, int32_t b) { return a < b ? a : b; }

/* A 32-bit rotate right written in C: GCC 12 emits it as its own instruction (as in
 * CMSIS-NN's read_and_pad_reordered when built with GCC), clang folds it into SXTB16. */
MN_INLINE uint32_t mn_ror(uint32_t x, uint32_t n) { return (x >> n) | (x << ((32u - n) & 31u)); }

/* 4 bytes from any address (LDR tolerates misalignment on Armv7E-M). */
MN_INLINE int32_t mn_read_s8x4(const int8_t *p)
{
    int32_t v;
    __builtin_memcpy(&v, p, 4);
    return v;
}
MN_INLINE int32_t mn_read_s8x4_ia(const int8_t **p)
{
    int32_t v = mn_read_s8x4(*p);
    *p += 4;
    return v;
}
MN_INLINE int32_t mn_read_s16x2_ia(const int16_t **p)
{
    int32_t v;
    __builtin_memcpy(&v, *p, 4);
    *p += 2;
    return v;
}
MN_INLINE void mn_write_s8x4_ia(int8_t **p, int32_t v)
{
    __builtin_memcpy(*p, &v, 4);
    *p += 4;
}
MN_INLINE void mn_write_s16x2_ia(int16_t **p, int32_t v)
{
    __builtin_memcpy(*p, &v, 4);
    *p += 2;
}

#if MN_DSP
/* volatile, as CMSIS-Core's cmsis_gcc.h intrinsics are: the compiler keeps their order
 * (loads may still move), which is the instruction stream CMSIS-NN builds get. */
MN_INLINE int32_t mn_sxtb16(int32_t x)
{
    int32_t r;
    __asm__ volatile("sxtb16 %0, %1" : "=r"(r) : "r"(x));
    return r;
}
MN_INLINE int32_t mn_sxtb16_ror8(int32_t x)
{
    int32_t r;
    __asm__ volatile("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}
MN_INLINE int32_t mn_sxtab16(int32_t a, int32_t x)
{
    int32_t r;
    __asm__ volatile("sxtab16 %0, %1, %2" : "=r"(r) : "r"(a), "r"(x));
    return r;
}
MN_INLINE int32_t mn_sxtab16_ror8(int32_t a, int32_t x)
{
    int32_t r;
    __asm__ volatile("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(x));
    return r;
}
MN_INLINE int32_t mn_smlad(int32_t x, int32_t y, int32_t acc)
{
    int32_t r;
    __asm__ volatile("smlad %0, %1, %2, %3" : "=r"(r) : "r"(x), "r"(y), "r"(acc));
    return r;
}
MN_INLINE int32_t mn_smlabb(int32_t x, int32_t y, int32_t acc)
{
    int32_t r;
    __asm__ volatile("smlabb %0, %1, %2, %3" : "=r"(r) : "r"(x), "r"(y), "r"(acc));
    return r;
}
MN_INLINE int32_t mn_smlatt(int32_t x, int32_t y, int32_t acc)
{
    int32_t r;
    __asm__ volatile("smlatt %0, %1, %2, %3" : "=r"(r) : "r"(x), "r"(y), "r"(acc));
    return r;
}
MN_INLINE int32_t mn_qadd(int32_t a, int32_t b)
{
    int32_t r;
    __asm__ volatile("qadd %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
    return r;
}
MN_INLINE int32_t mn_sadd16(int32_t a, int32_t b)
{
    int32_t r;
    __asm__ volatile("sadd16 %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
    return r;
}
#else
MN_INLINE int32_t mn_lanes(int32_t lo, int32_t hi)
{
    return (int32_t)(((uint32_t)(uint16_t)lo) | ((uint32_t)(uint16_t)hi << 16));
}
MN_INLINE int32_t mn_lo16(int32_t x) { return (int16_t)(uint16_t)((uint32_t)x & 0xFFFFu); }
MN_INLINE int32_t mn_hi16(int32_t x) { return (int16_t)(uint16_t)((uint32_t)x >> 16); }
MN_INLINE int32_t mn_sxtb16(int32_t x)
{
    return mn_lanes((int8_t)(uint8_t)((uint32_t)x & 0xFFu),
                    (int8_t)(uint8_t)(((uint32_t)x >> 16) & 0xFFu));
}
MN_INLINE int32_t mn_sxtb16_ror8(int32_t x) { return mn_sxtb16((int32_t)mn_ror((uint32_t)x, 8)); }
MN_INLINE int32_t mn_sxtab16(int32_t a, int32_t x)
{
    int32_t s = mn_sxtb16(x);
    return mn_lanes(mn_lo16(a) + mn_lo16(s), mn_hi16(a) + mn_hi16(s));
}
MN_INLINE int32_t mn_sxtab16_ror8(int32_t a, int32_t x)
{
    return mn_sxtab16(a, (int32_t)mn_ror((uint32_t)x, 8));
}
MN_INLINE int32_t mn_smlad(int32_t x, int32_t y, int32_t acc)
{
    return (int32_t)((uint32_t)acc + (uint32_t)(mn_lo16(x) * mn_lo16(y)) +
                     (uint32_t)(mn_hi16(x) * mn_hi16(y)));
}
MN_INLINE int32_t mn_smlabb(int32_t x, int32_t y, int32_t acc)
{
    return (int32_t)((uint32_t)acc + (uint32_t)(mn_lo16(x) * mn_lo16(y)));
}
MN_INLINE int32_t mn_smlatt(int32_t x, int32_t y, int32_t acc)
{
    return (int32_t)((uint32_t)acc + (uint32_t)(mn_hi16(x) * mn_hi16(y)));
}
MN_INLINE int32_t mn_qadd(int32_t a, int32_t b)
{
    int64_t s = (int64_t)a + b;
    return s > INT32_MAX ? INT32_MAX : (s < INT32_MIN ? INT32_MIN : (int32_t)s);
}
MN_INLINE int32_t mn_sadd16(int32_t a, int32_t b)
{
    return mn_lanes(mn_lo16(a) + mn_lo16(b), mn_hi16(a) + mn_hi16(b));
}
#endif

/* USADA8 against zero: acc + the sum of x's four bytes (the byte counts of a SWAR popcount). */
#if MN_DSP
MN_INLINE int32_t mn_usada8_0(uint32_t x, int32_t acc)
{
    int32_t r;
    __asm__ volatile("usada8 %0, %1, %2, %3" : "=r"(r) : "r"(x), "r"(0), "r"(acc));
    return r;
}
#else
MN_INLINE int32_t mn_usada8_0(uint32_t x, int32_t acc)
{
    return acc + (int32_t)((x & 0xFFu) + ((x >> 8) & 0xFFu) + ((x >> 16) & 0xFFu) + (x >> 24));
}
#endif

/* SWAR bit count stopped at the byte sums (cmix_binary.py's SWAR_TEXT): each byte of the
 * result is the number of bits set in that byte of x. */
MN_INLINE uint32_t mn_byte_counts(uint32_t x)
{
    x = x - ((x & 0xAAAAAAAAu) >> 1);
    x = (x & 0x33333333u) + ((x & 0xCCCCCCCCu) >> 2);
    return (x + (x >> 4)) & 0x0F0F0F0Fu;
}

/* Bit-stream writer: appends fields (lsb_first, docs/precision.md 4) into 32-bit words. */
typedef struct {
    uint32_t *dst;
    uint32_t acc;
    int32_t fill;
} mn_bitw;

/* append the n (1..24) low bits of v (bits above n must be 0) */
MN_INLINE void mn_bitw_put(mn_bitw *w, uint32_t v, int32_t n)
{
    w->acc |= v << w->fill;
    w->fill += n;
    if (w->fill >= 32) {
        *w->dst++ = w->acc;
        w->fill -= 32;
        w->acc = w->fill ? v >> (n - w->fill) : 0u;
    }
}

/* append nbits of the packed stream src starting at bit `bit` (a byte per step when
 * aligned: the byte copy of a tap whose channels fill whole bytes) */
MN_INLINE void mn_bitw_copy(mn_bitw *w, const uint8_t *src, int32_t bit, int32_t nbits)
{
    if ((bit & 7) == 0) { /* whole words (4 byte loads or one LDR), then the rest */
        const uint8_t *p = src + (bit >> 3);
        for (; nbits >= 32; nbits -= 32, bit += 32) {
            uint32_t v;
            __builtin_memcpy(&v, p, 4);
            p += 4;
            if (w->fill == 0) {
                *w->dst++ = v;
            } else {
                *w->dst++ = w->acc | (v << w->fill);
                w->acc = v >> (32 - w->fill);
            }
        }
    }
    while (nbits > 0) {
        const int32_t sh = bit & 7;
        int32_t take = 8 - sh;
        if (take > nbits)
            take = nbits;
        const uint32_t v = ((uint32_t)src[bit >> 3] >> sh) & ((1u << take) - 1u);
        mn_bitw_put(w, v, take);
        bit += take;
        nbits -= take;
    }
}

/* flush the partial word and zero-fill up to `end` */
MN_INLINE void mn_bitw_finish(mn_bitw *w, const uint32_t *end)
{
    if (w->fill) {
        *w->dst++ = w->acc;
        w->acc = 0;
        w->fill = 0;
    }
    while (w->dst < end)
        *w->dst++ = 0u;
}

/* Both 16-bit lanes = v (the offset pair SXTAB16/SADD16 add). */
MN_INLINE int32_t mn_pair16(int32_t v)
{
    return (int32_t)(((uint32_t)v & 0xFFFFu) | ((uint32_t)v << 16));
}

/* ------------------------------------------------------------------ requantization
 * TFLite MultiplyByQuantizedMultiplier with gemmlowp double rounding (kernels/fixedpoint.py):
 * x << max(shift, 0); doubling high multiply rounded as floor((x*M + 2^30) / 2^31), which
 * equals gemmlowp's nudge-and-truncate for every M != INT32_MIN; then RoundingDivideByPOT
 * by max(-shift, 0) (round half away from zero). */
MN_INLINE int32_t mn_doubling_high_mult(int32_t x, int32_t m)
{
    int64_t p = (int64_t)x * (int64_t)m + ((int64_t)1 << 30);
    return (int32_t)(p >> 31);
}
MN_INLINE int32_t mn_divide_by_pot(int32_t x, int32_t e)
{
    int32_t mask = (int32_t)((1u << e) - 1u);
    int32_t rem = x & mask;
    int32_t q = x >> e;
    int32_t thr = (mask >> 1) + (q < 0);
    return q + (rem > thr);
}
MN_INLINE int32_t mn_requantize(int32_t x, int32_t m, int32_t shift)
{
    /* max(shift, 0) and max(-shift, 0) without branches (BIC with ASR #31) */
    int32_t left = shift & ~(shift >> 31);
    int32_t right = -shift & ~(-shift >> 31);
    return mn_divide_by_pot(mn_doubling_high_mult((int32_t)((uint32_t)x << left), m), right);
}
MN_INLINE int8_t mn_requant_clamp(int32_t acc, int32_t m, int32_t shift, int32_t out_offset,
                                  int32_t act_min, int32_t act_max)
{
    int32_t v = mn_requantize(acc, m, shift) + out_offset;
    v = mn_max(v, act_min);
    v = mn_min(v, act_max);
    return (int8_t)v;
}

/* gemmlowp SaturatingRoundingDoublingHighMul (saturates INT32_MIN * INT32_MIN). */
MN_INLINE int32_t mn_doubling_high_mult_sat(int32_t a, int32_t b)
{
    if (a == INT32_MIN && b == INT32_MIN)
        return INT32_MAX;
    return mn_doubling_high_mult(a, b);
}

/* byte copy / fill (no libc); also exported as memcpy/memset for compiler-made calls */
void mn_memcpy(void *dst, const void *src, uint32_t n);
void mn_memset(void *dst, int32_t v, uint32_t n);

/* ------------------------------------------------------------------ argument structs */
typedef struct {
    const int8_t *input;   /* NHWC */
    const int8_t *weights; /* OHWI, (out_c, k_h, k_w, in_c / groups) */
    const int32_t *bias;   /* raw int32 bias (input offset NOT folded), or NULL */
    const int32_t *mult;   /* per output channel Q31 multipliers */
    const int32_t *shift;  /* per output channel shifts, > 0 = left */
    int8_t *output;        /* NHWC */
    void *scratch;         /* mn_conv_scratch_bytes() bytes, 4-byte aligned */
    int32_t batches, in_h, in_w, in_c, out_h, out_w, out_c;
    int32_t k_h, k_w, s_h, s_w, d_h, d_w, pad_t, pad_l, groups;
    int32_t in_offset; /* -input zero point */
    int32_t out_offset, act_min, act_max;
} mn_conv_args;

typedef struct {
    const int8_t *input;   /* NHWC */
    const int8_t *weights; /* (1, k_h, k_w, out_c) */
    const int32_t *bias;   /* raw int32 bias, or NULL */
    const int32_t *mult;
    const int32_t *shift;
    int8_t *output;
    void *scratch; /* unused by the implemented paths (may be NULL) */
    int32_t batches, in_h, in_w, in_c, out_h, out_w, out_c;
    int32_t k_h, k_w, s_h, s_w, d_h, d_w, pad_t, pad_l, ch_mult;
    int32_t in_offset, out_offset, act_min, act_max;
} mn_dw_args;

typedef struct {
    const int8_t *input;   /* (batches, in_depth) */
    const int8_t *weights; /* (out_depth, in_depth) */
    const int32_t *bias;   /* raw int32 bias, or NULL */
    const int32_t *mult;   /* out_depth entries (per_channel 0: only mult[0] is read) */
    const int32_t *shift;
    int8_t *output; /* (batches, out_depth) */
    int32_t batches, in_depth, out_depth;
    int32_t in_offset, out_offset, act_min, act_max;
    int32_t per_channel; /* 1: per-row mult/shift (arm_fully_connected_per_channel_s8) */
} mn_fc_args;

typedef struct {
    const int8_t *input;
    int8_t *output;
    int32_t *scratch; /* avg pool: in_c int32 accumulators */
    int32_t batches, in_h, in_w, in_c, out_h, out_w;
    int32_t f_h, f_w, s_h, s_w, pad_t, pad_l, act_min, act_max;
} mn_pool_args;

typedef struct {
    const int8_t *input1;
    const int8_t *input2;
    int8_t *output;
    int32_t n;    /* elements (inputs already of the output shape) */
    int32_t sign; /* +1 ADD, -1 SUB */
    int32_t in1_offset, in2_offset, left_shift;
    int32_t in1_mult, in1_shift, in2_mult, in2_shift;
    int32_t out_mult, out_shift, out_offset, act_min, act_max;
} mn_add_args;

typedef struct {
    const int8_t *input;
    int8_t *output;
    int32_t rows, depth;
    int32_t input_mult, input_left_shift, diff_min;
} mn_softmax_args;

typedef struct {
    const void *src;
    void *dst;
    int32_t nbytes;
} mn_copy_args;

/* Sub-byte conv / FC (subbyte.c, docs/precision.md): packed activations and outputs. */
typedef struct {
    const uint8_t *input;       /* NHWC values, lsb_first packed at in_bits each */
    const uint32_t *weights;    /* (out_c, row_words) words: each OHWI row packed at w_bits */
    const int32_t *bias;        /* raw int32 bias, or NULL */
    const int32_t *mult;        /* fixed_point: per channel multipliers (else NULL) */
    const int32_t *shift;
    const int32_t *thresholds;  /* thresholds mode: (out_c, levels) non-decreasing, else NULL */
    uint8_t *output;            /* NHWC values, lsb_first packed at out_bits each */
    void *scratch;              /* mn_subbyte_scratch_bytes() bytes, 4-byte aligned */
    int32_t batches, in_h, in_w, in_c, out_h, out_w, out_c;
    int32_t k_h, k_w, s_h, s_w, d_h, d_w, pad_t, pad_l, groups;
    int32_t in_bits, in_signed, in_zp;  /* input type and zero point */
    int32_t w_bits, row_words;          /* weights: 2 or 4 bits, signed, words per row */
    int32_t out_bits;                   /* 1 = binary (bit b is 2b - 1) */
    int32_t out_offset, act_min, act_max;    /* fixed_point */
    int32_t levels, out_lo, out_step;        /* thresholds: y = out_lo + out_step * k */
} mn_sb_conv_args;

/* shared by the sub-byte, binary and Xpulp twins: the requantized / thresholded output value
 * of channel c, and a value stored at `bits` (1 = binary) in a packed tensor */
MN_INLINE void mn_put_value(uint8_t *base, int32_t index, int32_t bits, int32_t v)
{
    if (bits == 8) {
        base[index] = (uint8_t)v;
        return;
    }
    const int32_t bit = index * bits;
    const uint32_t mask = ((1u << bits) - 1u) << (bit & 7);
    const uint32_t code = bits == 1 ? (uint32_t)(v + 1) >> 1 : (uint32_t)v;
    base[bit >> 3] = (uint8_t)((base[bit >> 3] & ~mask) | ((code << (bit & 7)) & mask));
}

MN_INLINE int32_t mn_sb_output(const mn_sb_conv_args *a, int32_t acc, int32_t c)
{
    if (a->thresholds) { /* k = #{t <= acc}: binary search in the non-decreasing row */
        const int32_t *t = a->thresholds + c * a->levels;
        int32_t lo = 0, hi = a->levels;
        while (lo < hi) {
            const int32_t mid = (lo + hi) >> 1;
            if (t[mid] <= acc)
                lo = mid + 1;
            else
                hi = mid;
        }
        return a->out_lo + a->out_step * lo;
    }
    return mn_requant_clamp(acc, a->mult[c], a->shift[c], a->out_offset, a->act_min,
                            a->act_max);
}


/* Binary W1A1 conv / FC (binary.c): in_bits = w_bits = 1, row_words 32-bit words per
 * weight row, thresholds (or fixed-point) output. Scratch: mn_binary_scratch_bytes(). */
uint32_t mn_binary_scratch_bytes(const mn_sb_conv_args *a);
int32_t mn_conv_binary(const mn_sb_conv_args *a);

/* RV32 XpulpV2 / XpulpNN conv / FC (pulp.c): pv.sdotsp / pv.sdotusp on .b/.n/.c lanes.
 * Same struct; `bias` has the input offset FOLDED in (bias - zp_x * sum(w), PULP-NN's
 * convention); in_bits == w_bits (8/4/2) or in_bits 8 with 4/2-bit weights (unpacked to
 * bytes in the inner loop). Scratch: mn_pulp_scratch_bytes(). */
uint32_t mn_pulp_scratch_bytes(const mn_sb_conv_args *a);
int32_t mn_conv_pulp(const mn_sb_conv_args *a);

uint32_t mn_subbyte_scratch_bytes(const mn_sb_conv_args *a);
int32_t mn_conv_subbyte(const mn_sb_conv_args *a);

uint32_t mn_conv_scratch_bytes(const mn_conv_args *a);
/* matmul.c: dst[r * rhs_rows + c] = requant(bias[c] + sum_k (lhs[r, k] + lhs_offset) *
 * rhs[c, k]), lhs rows lhs_stride bytes apart (the 1x1 convolution's matrix product). */
void mn_mat_mult_nt_t_s8(const int8_t *lhs, const int8_t *rhs, const int32_t *bias,
                         int8_t *dst, const int32_t *mult, const int32_t *shift,
                         int32_t lhs_rows, int32_t rhs_rows, int32_t rhs_cols,
                         int32_t lhs_offset, int32_t out_offset, int32_t act_min,
                         int32_t act_max, int32_t lhs_stride);
int32_t mn_conv_s8(const mn_conv_args *a);
int32_t mn_depthwise_s8(const mn_dw_args *a);
int32_t mn_fully_connected_s8(const mn_fc_args *a);
int32_t mn_avgpool_s8(const mn_pool_args *a);
int32_t mn_maxpool_s8(const mn_pool_args *a);
int32_t mn_add_s8(const mn_add_args *a);
int32_t mn_softmax_s8(const mn_softmax_args *a);
int32_t mn_copy(const mn_copy_args *a);

#endif
