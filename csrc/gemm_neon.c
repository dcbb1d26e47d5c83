/* gemm_neon.c - AArch64 NEON micro-kernel, 8 rows x 8 columns: 16 q-register
 * accumulators, two weight vectors, scalar-by-vector FMA per row. Two builds
 * of each kernel: f32 panels, and bf16 panels widened to f32 as they are
 * loaded; and at the end the bf16dot kernel, the one user of FEAT_BF16, and
 * the int8 kernel, the one user of FEAT_DotProd. */
#include <arm_neon.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"

#define MR 8
#define NR 8

/* exp(y) for y in [HIMAE_EXP_MIN, 0]: y = n ln2 + r, |r| <= ln2/2, degree-5
 * polynomial in r. n is rounded by adding a power-of-two magic number (the
 * sum's low mantissa bits then hold n), and 2^n scales the polynomial through
 * the exponent field with integer adds. p >= 1/sqrt 2 and n >= -126 keep
 * that exponent field from going below zero. */
static inline float32x4_t exp_neg(float32x4_t y) {
    const float32x4_t magic = vdupq_n_f32(HIMAE_EXP_MAGIC);
    y = vmaxq_f32(y, vdupq_n_f32(HIMAE_EXP_MIN));
    const float32x4_t big = vfmaq_f32(magic, y, vdupq_n_f32(HIMAE_EXP_LOG2E));
    const float32x4_t n = vsubq_f32(big, magic);
    const float32x4_t r = vfmsq_f32(y, n, vdupq_n_f32(HIMAE_EXP_LN2));
    float32x4_t p = vfmaq_f32(vdupq_n_f32(HIMAE_EXP_C4), vdupq_n_f32(HIMAE_EXP_C5), r);
    p = vfmaq_f32(vdupq_n_f32(HIMAE_EXP_C3), p, r);
    p = vfmaq_f32(vdupq_n_f32(HIMAE_EXP_C2), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
    return vreinterpretq_f32_s32(vaddq_s32(vreinterpretq_s32_f32(p),
                                           vshlq_n_s32(vreinterpretq_s32_f32(big), 23)));
}

/* h = erfc(|z|) / 2 = Phi(-|x|) by Abramowitz & Stegun (the polynomial's
 * coefficients halved), then GELU = x (1 - h) for x >= 0 and x h below: the
 * small term h carries the error, so it stays small relative to x. */
static inline float32x4_t gelu(float32x4_t x) {
    const float32x4_t a = vabsq_f32(vmulq_f32(x, vdupq_n_f32(HIMAE_SQRT1_2)));
    const float32x4_t t = vdivq_f32(vdupq_n_f32(1.0f),
                                    vfmaq_f32(vdupq_n_f32(1.0f), vdupq_n_f32(HIMAE_GELU_P), a));
    float32x4_t r = vfmaq_f32(vdupq_n_f32(0.5f * HIMAE_GELU_A4), vdupq_n_f32(0.5f * HIMAE_GELU_A5), t);
    r = vfmaq_f32(vdupq_n_f32(0.5f * HIMAE_GELU_A3), r, t);
    r = vfmaq_f32(vdupq_n_f32(0.5f * HIMAE_GELU_A2), r, t);
    r = vfmaq_f32(vdupq_n_f32(0.5f * HIMAE_GELU_A1), r, t);
    const float32x4_t h = vmulq_f32(vmulq_f32(exp_neg(vnegq_f32(vmulq_f32(a, a))), t), r);
    return vmulq_f32(x, vbslq_f32(vcltzq_f32(x), h, vsubq_f32(vdupq_n_f32(1.0f), h)));
}

static inline void store_row(float *c, const float *res, float32x4_t v0, float32x4_t v1,
                             size_t nc, int act) {
    float tmp[NR];
    vst1q_f32(tmp, v0);
    vst1q_f32(tmp + 4, v1);
    if (res)
        for (size_t n = 0; n < nc; n++) tmp[n] += res[n];
    if (act) {
        vst1q_f32(tmp, gelu(vld1q_f32(tmp)));
        vst1q_f32(tmp + 4, gelu(vld1q_f32(tmp + 4)));
    }
    for (size_t n = 0; n < nc; n++) c[n] = tmp[n];
}

/* The 8 weights of a panel row from element i: f32, or bf16 laid out by
 * himae_bf16_slot, whose 32-bit words widen to columns 0-3 (shifted left 16)
 * and 4-7 (high halves): exact, since a bf16 is the high half of an f32. */
static inline __attribute__((always_inline)) void load_w(float32x4_t out[2], const void *w, size_t i,
                                                         const int bf) {
    if (bf) {
        const uint32x4_t v = vreinterpretq_u32_u16(vld1q_u16((const uint16_t *)w + i));
        out[0] = vreinterpretq_f32_u32(vshlq_n_u32(v, 16));
        out[1] = vreinterpretq_f32_u32(vandq_u32(v, vdupq_n_u32(0xFFFF0000u)));
        return;
    }
    out[0] = vld1q_f32((const float *)w + i);
    out[1] = vld1q_f32((const float *)w + i + 4);
}

/* One register tile: R rows (R <= 8) by 8 columns; R is a constant at
 * every call. Rows past mr alias the last real row: computed, never stored. */
static inline __attribute__((always_inline)) void tile(const int BF, const int R, size_t mr, size_t nc,
                                                       size_t kc, const float *a,
                                                       size_t a_stride, const void *w, float *c,
                                                       size_t c_stride, const float *res,
                                                       size_t res_stride, int act) {
    const float *ap[MR];
    ap[0] = a;
#pragma GCC unroll 8
    for (int i = 1; i < R; i++) ap[i] = (size_t)i < mr ? ap[i - 1] + a_stride : ap[i - 1];
    float32x4_t acc[MR][2];
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) {
        load_w(acc[i], w, 0, BF);
    }
    for (size_t j = 0, o = NR; j < kc; j++, o += NR) {
        float32x4_t wv[2];
        load_w(wv, w, o, BF);
        const float32x4_t w0 = wv[0], w1 = wv[1];
#pragma GCC unroll 8
        for (int i = 0; i < R; i++) {
            const float v = ap[i][j];
            acc[i][0] = vfmaq_n_f32(acc[i][0], w0, v);
            acc[i][1] = vfmaq_n_f32(acc[i][1], w1, v);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) {
        if ((size_t)i >= mr) break;
        store_row(c + i * c_stride, res ? res + i * res_stride : NULL, acc[i][0], acc[i][1], nc, act);
    }
}

/* R rows (R <= 3) by P panels (P <= 4) of 8 columns, columns [0, nc): up to
 * 24 independent accumulators where a tile of R rows has 2 R, and each
 * input value serves all P panels. Same arithmetic per output as tile(). */
static inline __attribute__((always_inline)) void wide_tile(const int BF, const int R, const int P, size_t mr,
                                                            size_t nc, size_t kc, const float *a,
                                                            size_t a_stride, const void *w,
                                                            size_t w_stride, float *c,
                                                            size_t c_stride, const float *res,
                                                            size_t res_stride, int act) {
    const float *ap[3];
    ap[0] = a;
    for (int i = 1; i < R; i++) ap[i] = (size_t)i < mr ? ap[i - 1] + a_stride : ap[i - 1];
    size_t wp[4]; /* element offset of each panel's first weight row */
    float32x4_t acc[3][4][2];
#pragma GCC unroll 4
    for (int p = 0; p < P; p++) {
        wp[p] = p * w_stride;
#pragma GCC unroll 3
        for (int i = 0; i < R; i++) {
            load_w(acc[i][p], w, wp[p], BF);
        }
        wp[p] += NR;
    }
    for (size_t j = 0; j < kc; j++) {
        float x[3];
#pragma GCC unroll 3
        for (int i = 0; i < R; i++) x[i] = ap[i][j];
#pragma GCC unroll 4
        for (int p = 0; p < P; p++) {
            float32x4_t wv[2];
            load_w(wv, w, wp[p] + NR * j, BF);
            const float32x4_t w0 = wv[0], w1 = wv[1];
#pragma GCC unroll 3
            for (int i = 0; i < R; i++) {
                acc[i][p][0] = vfmaq_n_f32(acc[i][p][0], w0, x[i]);
                acc[i][p][1] = vfmaq_n_f32(acc[i][p][1], w1, x[i]);
            }
        }
    }
#pragma GCC unroll 4
    for (int p = 0; p < P; p++) {
        const size_t left = nc - NR * p < NR ? nc - NR * p : NR;
#pragma GCC unroll 3
        for (int i = 0; i < R; i++) {
            if ((size_t)i >= mr) break;
            store_row(c + i * c_stride + NR * p, res ? res + i * res_stride + NR * p : NULL,
                      acc[i][p][0], acc[i][p][1], left, act);
        }
    }
}

static inline __attribute__((always_inline)) void gemm_wide(const int BF, size_t mr, size_t nc, size_t kc,
                                                            const float *a, size_t a_stride, const void *w,
                                                            size_t w_stride, float *c, size_t c_stride,
                                                            const float *res, size_t res_stride, int act) {
#define WIDE(R, P) wide_tile(BF, R, P, mr, nc, kc, a, a_stride, w, w_stride, c, c_stride, res, res_stride, act)
    HIMAE_WIDE_SHAPES(WIDE, mr, nc, NR)
#undef WIDE
}

/* Shorter tiles for fewer rows (small N, remainders, stream mode). */
static inline __attribute__((always_inline)) void gemm(const int BF, size_t mr, size_t nc, size_t kc,
                                                       const float *a, size_t a_stride, const void *w,
                                                       float *c, size_t c_stride, const float *res,
                                                       size_t res_stride, int act) {
    if (mr > 4)
        tile(BF, 8, mr, nc, kc, a, a_stride, w, c, c_stride, res, res_stride, act);
    else if (mr > 2)
        tile(BF, 4, mr, nc, kc, a, a_stride, w, c, c_stride, res, res_stride, act);
    else if (mr > 1)
        tile(BF, 2, mr, nc, kc, a, a_stride, w, c, c_stride, res, res_stride, act);
    else
        tile(BF, 1, mr, nc, kc, a, a_stride, w, c, c_stride, res, res_stride, act);
}

HIMAE_UKERNELS(himae_ukernel_neon, "neon_8x8", HIMAE_ISA_NEON, MR, NR, 3, 4 * NR);

/* bf16dot: BFDOT (FEAT_BF16) multiplies 4 pairs of bf16 weights by a pair
 * of bf16 inputs and adds both products to 4 f32 sums, twice the
 * multiply-adds of an f32 FMA per instruction. Only these functions use it
 * (dispatch.c runs them where HWCAP2 has BF16); the epilogue is the f32
 * kernels'. The rows of a are rounded to bf16 (BFCVTN) DOT_KB elements at a
 * time into a buffer on the stack, zero past kc, and each pair of inputs is
 * duplicated across a vector as one 32-bit word. One panel per call: no
 * wide form. BFDOT's own rounding of the pair's sum differs from x86's
 * VDPBF16PS by an ulp here and there (docs/stream-mode.md). */
#define DOT_TARGET __attribute__((target("arch=armv8.2-a+bf16"), always_inline)) inline
#define DOT_KB 256

/* Elements [e0, e0 + n) of rows ap[0 .. R) as bf16 in ab, zeros after them
 * up to a multiple of 8. */
static DOT_TARGET void dot_round(const int R, const float *const *ap, size_t e0, size_t n,
                                 uint16_t ab[][DOT_KB]) {
    for (int i = 0; i < R; i++)
        for (size_t e = 0; e < n; e += 8) {
            float t[8] = {0};
            memcpy(t, ap[i] + e0 + e, (n - e < 8 ? n - e : 8) * sizeof(float));
            const bfloat16x8_t b = vcvtq_high_bf16_f32(vcvtq_low_bf16_f32(vld1q_f32(t)), vld1q_f32(t + 4));
            vst1q_u16(ab[i] + e, vreinterpretq_u16_bf16(b));
        }
}

/* The pair of inputs q of a rounded row, in every lane. */
static DOT_TARGET bfloat16x8_t dot_input(const uint16_t *row, size_t q) {
    uint32_t word;
    memcpy(&word, row + 2 * q, sizeof word);
    return vreinterpretq_bf16_u32(vdupq_n_u32(word));
}

/* Weight rows j and j + 1 as pairs for columns 0-3 and 4-7, or row j alone
 * (the last of an odd kc), its partner zero. */
static DOT_TARGET void dot_weights(bfloat16x8_t out[2], const uint16_t *w, size_t j, int lone) {
    const uint16_t *row = w + NR + NR * j;
    if (lone) {
        const uint16x8_t v = vld1q_u16(row), zero = vdupq_n_u16(0);
        out[0] = vreinterpretq_bf16_u16(vzip1q_u16(v, zero));
        out[1] = vreinterpretq_bf16_u16(vzip2q_u16(v, zero));
        return;
    }
    out[0] = vreinterpretq_bf16_u16(vld1q_u16(row));
    out[1] = vreinterpretq_bf16_u16(vld1q_u16(row + NR));
}

static DOT_TARGET void dot_tile(const int R, size_t mr, size_t nc, size_t kc, const float *a, size_t a_stride,
                                const uint16_t *w, float *c, size_t c_stride, const float *res,
                                size_t res_stride, int act) {
    const float *ap[MR];
    ap[0] = a;
#pragma GCC unroll 8
    for (int i = 1; i < R; i++) ap[i] = (size_t)i < mr ? ap[i - 1] + a_stride : ap[i - 1];
    uint16_t ab[MR][DOT_KB];
    float32x4_t acc[MR][2];
    const uint16x8_t bias = vld1q_u16(w);
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) {
        acc[i][0] = vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(bias), 16));
        acc[i][1] = vreinterpretq_f32_u32(vshll_high_n_u16(bias, 16));
    }
    for (size_t e0 = 0; e0 < kc; e0 += DOT_KB) {
        const size_t n = kc - e0 < DOT_KB ? kc - e0 : DOT_KB;
        dot_round(R, ap, e0, n, ab);
        for (size_t q = 0; q < (n + 1) / 2; q++) {
            bfloat16x8_t wv[2];
            dot_weights(wv, w, e0 + 2 * q, e0 + 2 * q + 1 == kc);
#pragma GCC unroll 8
            for (int i = 0; i < R; i++) {
                const bfloat16x8_t x = dot_input(ab[i], q);
                acc[i][0] = vbfdotq_f32(acc[i][0], wv[0], x);
                acc[i][1] = vbfdotq_f32(acc[i][1], wv[1], x);
            }
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) {
        if ((size_t)i >= mr) break;
        store_row(c + i * c_stride, res ? res + i * res_stride : NULL, acc[i][0], acc[i][1], nc, act);
    }
}

__attribute__((target("arch=armv8.2-a+bf16"))) static void dot_gemm(size_t mr, size_t nc, size_t kc,
                                                                     const float *a, size_t as, const void *w,
                                                                     float *c, size_t cs, const float *res,
                                                                     size_t rs, int act) {
    if (mr > 4)
        dot_tile(8, mr, nc, kc, a, as, w, c, cs, res, rs, act);
    else if (mr > 2)
        dot_tile(4, mr, nc, kc, a, as, w, c, cs, res, rs, act);
    else if (mr > 1)
        dot_tile(2, mr, nc, kc, a, as, w, c, cs, res, rs, act);
    else
        dot_tile(1, mr, nc, kc, a, as, w, c, cs, res, rs, act);
}

const himae_ukernel himae_ukernel_neon_bf16dot = {
    "bf16dot_gemm_ukernel__neonbf16_8x8", HIMAE_ISA_NEON, HIMAE_BF16DOT, 2, MR, NR, dot_gemm, NULL, 0, 0};

/* int8: SDOT (FEAT_DotProd) multiplies 16 signed bytes by 16 signed bytes
 * and adds each four products to one of 4 int32 sums, exactly: four
 * multiply-adds per lane where an f32 FMA does one. Only these functions
 * use it (dispatch.c runs them where HWCAP has ASIMDDP). Each input row is
 * rounded to int8 once for every panel (himae_int8_row states how; signed
 * by signed, so no offset), the sums scaled as gemm_scalar.c's int8 kernel
 * does, then the f32 epilogue. */
#define Q8_TARGET __attribute__((target("arch=armv8.2-a+dotprod"), always_inline)) inline

/* Row a (kc floats) as int8 into q (kc rounded up to 8 bytes, zeros past
 * kc); returns its scale. */
static Q8_TARGET float q8_row(const float *a, size_t kc, int8_t *q) {
    float32x4_t top = vdupq_n_f32(0.0f);
    size_t e = 0;
    for (; e + 4 <= kc; e += 4) top = vmaxq_f32(top, vabsq_f32(vld1q_f32(a + e)));
    float t = vmaxvq_f32(top);
    for (; e < kc; e++) t = fmaxf(t, fabsf(a[e]));
    const float32x4_t inv = vdupq_n_f32(t > 0.0f ? HIMAE_INT8_INPUT_MAX / t : 0.0f);
    const float32x4_t lo = vdupq_n_f32(-HIMAE_INT8_INPUT_MAX), hi = vdupq_n_f32(HIMAE_INT8_INPUT_MAX);
    for (e = 0; e < kc; e += 8) {
        float x[8] = {0};
        memcpy(x, a + e, (kc - e < 8 ? kc - e : 8) * sizeof(float));
        const int32x4_t q0 = vcvtnq_s32_f32(vminq_f32(vmaxq_f32(vmulq_f32(vld1q_f32(x), inv), lo), hi));
        const int32x4_t q1 = vcvtnq_s32_f32(vminq_f32(vmaxq_f32(vmulq_f32(vld1q_f32(x + 4), inv), lo), hi));
        vst1_s8(q + e, vqmovn_s16(vcombine_s16(vqmovn_s32(q0), vqmovn_s32(q1))));
    }
    return t / HIMAE_INT8_INPUT_MAX;
}

/* R rows (R <= 8) of rounded inputs q (rows qs bytes apart) by one panel. */
static Q8_TARGET void q8_tile(const int R, size_t mr, size_t nc, size_t kc, const int8_t *q, size_t qs,
                              const float *scale, const uint8_t *w, float *c, size_t c_stride, const float *res,
                              size_t res_stride, int act) {
    int32x4_t acc[MR][2];
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) acc[i][0] = acc[i][1] = vdupq_n_s32(0);
    const int8_t *rows = (const int8_t *)(w + HIMAE_INT8_HEAD * NR);
    for (size_t g = 0; g < (kc + 3) / 4; g++) {
        const int8x16_t w0 = vld1q_s8(rows + 32 * g), w1 = vld1q_s8(rows + 32 * g + 16);
#pragma GCC unroll 8
        for (int i = 0; i < R; i++) {
            int32_t word;
            memcpy(&word, q + i * qs + 4 * g, sizeof word);
            const int8x16_t x = vreinterpretq_s8_s32(vdupq_n_s32(word));
            acc[i][0] = vdotq_s32(acc[i][0], w0, x);
            acc[i][1] = vdotq_s32(acc[i][1], w1, x);
        }
    }
    float head[2 * NR];
    memcpy(head, w, sizeof head); /* biases, then scales (the weight sums after them are for VNNI) */
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) {
        if ((size_t)i >= mr) break;
        const float32x4_t y0 = vfmaq_f32(vld1q_f32(head), vmulq_n_f32(vld1q_f32(head + NR), scale[i]),
                                         vcvtq_f32_s32(acc[i][0]));
        const float32x4_t y1 = vfmaq_f32(vld1q_f32(head + 4), vmulq_n_f32(vld1q_f32(head + NR + 4), scale[i]),
                                         vcvtq_f32_s32(acc[i][1]));
        store_row(c + i * c_stride, res ? res + i * res_stride : NULL, y0, y1, nc, act);
    }
}

/* mr (<= 8) rows by columns [0, nc) over consecutive panels w_stride bytes
 * apart: the rows rounded once, then a tile per panel. */
__attribute__((target("arch=armv8.2-a+dotprod"))) static void q8_gemm(size_t mr, size_t nc, size_t kc,
                                                                       const float *a, size_t as, const void *w,
                                                                       size_t ws, float *c, size_t cs,
                                                                       const float *res, size_t rs, int act) {
    int8_t q[MR * HIMAE_INT8_MAX_KC];
    float scale[MR];
    const size_t qs = (kc + 15) / 16 * 16;
    for (size_t i = 0; i < mr; i++) scale[i] = q8_row(a + i * as, kc, q + i * qs);
    for (size_t n0 = 0; n0 < nc; n0 += NR) {
        const uint8_t *panel = (const uint8_t *)w + n0 / NR * ws;
        const size_t cols = nc - n0 < NR ? nc - n0 : NR;
        float *cn = c + n0;
        const float *rn = res ? res + n0 : NULL;
        if (mr > 4)
            q8_tile(8, mr, cols, kc, q, qs, scale, panel, cn, cs, rn, rs, act);
        else if (mr > 2)
            q8_tile(4, mr, cols, kc, q, qs, scale, panel, cn, cs, rn, rs, act);
        else if (mr > 1)
            q8_tile(2, mr, cols, kc, q, qs, scale, panel, cn, cs, rn, rs, act);
        else
            q8_tile(1, mr, cols, kc, q, qs, scale, panel, cn, cs, rn, rs, act);
    }
}

/* One panel: columns [0, nc), nc <= 8. */
__attribute__((target("arch=armv8.2-a+dotprod"))) static void q8_gemm_panel(size_t mr, size_t nc, size_t kc,
                                                                             const float *a, size_t as,
                                                                             const void *w, float *c, size_t cs,
                                                                             const float *res, size_t rs, int act) {
    q8_gemm(mr, nc, kc, a, as, w, 0, c, cs, res, rs, act);
}

const himae_ukernel himae_ukernel_neon_int8 = {
    "int8_gemm_ukernel__neondot_8x8", HIMAE_ISA_NEON, HIMAE_INT8, 1, MR, NR, q8_gemm_panel, q8_gemm, MR,
    HIMAE_INT8_MAX_COLUMNS};
