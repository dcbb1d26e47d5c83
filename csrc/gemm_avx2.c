/* gemm_avx2.c - AVX2+FMA micro-kernel, 6 rows x 16 columns: 12 ymm
 * accumulators, two weight vectors, one broadcast. Compiled with
 * -mavx2 -mfma only. Two builds of each kernel: f32 panels, and bf16 panels
 * widened to f32 as they are loaded. */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"

#define MR 6
#define NR 16

/* exp(y) for y in [HIMAE_EXP_MIN, 0]: y = n ln2 + r, |r| <= ln2/2, degree-5
 * polynomial in r. n is rounded by adding a power-of-two magic number (the
 * sum's low mantissa bits then hold n), and 2^n scales the polynomial through
 * the exponent field with integer adds. p >= 1/sqrt 2 and n >= -126 keep
 * that exponent field from going below zero. */
static inline __m256 exp_neg(__m256 y) {
    const __m256 magic = _mm256_set1_ps(HIMAE_EXP_MAGIC);
    y = _mm256_max_ps(y, _mm256_set1_ps(HIMAE_EXP_MIN));
    const __m256 big = _mm256_fmadd_ps(y, _mm256_set1_ps(HIMAE_EXP_LOG2E), magic);
    const __m256 n = _mm256_sub_ps(big, magic);
    const __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(HIMAE_EXP_LN2), y);
    __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(HIMAE_EXP_C5), r, _mm256_set1_ps(HIMAE_EXP_C4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(HIMAE_EXP_C3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(HIMAE_EXP_C2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p),
                                                _mm256_slli_epi32(_mm256_castps_si256(big), 23)));
}

/* h = erfc(|z|) / 2 = Phi(-|x|) by Abramowitz & Stegun (the polynomial's
 * coefficients halved), then GELU = x (1 - h) for x >= 0 and x h below: the
 * small term h carries the error, so it stays small relative to x. */
static inline __m256 gelu(__m256 x) {
    const __m256 a = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), _mm256_mul_ps(x, _mm256_set1_ps(HIMAE_SQRT1_2)));
    const __m256 t = _mm256_div_ps(_mm256_set1_ps(1.0f),
                                   _mm256_fmadd_ps(_mm256_set1_ps(HIMAE_GELU_P), a, _mm256_set1_ps(1.0f)));
    __m256 r = _mm256_fmadd_ps(_mm256_set1_ps(0.5f * HIMAE_GELU_A5), t, _mm256_set1_ps(0.5f * HIMAE_GELU_A4));
    r = _mm256_fmadd_ps(r, t, _mm256_set1_ps(0.5f * HIMAE_GELU_A3));
    r = _mm256_fmadd_ps(r, t, _mm256_set1_ps(0.5f * HIMAE_GELU_A2));
    r = _mm256_fmadd_ps(r, t, _mm256_set1_ps(0.5f * HIMAE_GELU_A1));
    const __m256 h = _mm256_mul_ps(_mm256_mul_ps(exp_neg(_mm256_fnmadd_ps(a, a, _mm256_setzero_ps())), t), r);
    /* blendv takes h where x's sign bit is set */
    return _mm256_mul_ps(x, _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(1.0f), h), h, x));
}

static inline __m256i lane_mask(size_t valid) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(valid > 8 ? 8 : valid)), idx);
}

static inline void store_row(float *c, const float *res, __m256 v0, __m256 v1, __m256i m0,
                             __m256i m1, int act) {
    if (res) {
        v0 = _mm256_add_ps(v0, _mm256_maskload_ps(res, m0));
        v1 = _mm256_add_ps(v1, _mm256_maskload_ps(res + 8, m1));
    }
    if (act) {
        v0 = gelu(v0);
        v1 = gelu(v1);
    }
    _mm256_maskstore_ps(c, m0, v0);
    _mm256_maskstore_ps(c + 8, m1, v1);
}

/* The 16 weights of a panel row from element i: f32, or bf16 laid out by
 * himae_bf16_slot, whose 32-bit words widen to columns 0-7 (shifted left 16)
 * and 8-15 (high halves): exact, since a bf16 is the high half of an f32. */
static inline __attribute__((always_inline)) void load_w(__m256 out[2], const void *w, size_t i, const int bf) {
    if (bf) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i));
        out[0] = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
        out[1] = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32((int)0xFFFF0000u)));
        return;
    }
    out[0] = _mm256_loadu_ps((const float *)w + i);
    out[1] = _mm256_loadu_ps((const float *)w + i + 8);
}

/* One register tile: R rows (R <= 6) by 16 columns; R is a constant at
 * every call. Rows past mr alias the last real row: computed, never stored. */
static inline __attribute__((always_inline)) void tile(const int BF, const int R, size_t mr, size_t nc,
                                                       size_t kc, const float *a,
                                                       size_t a_stride, const void *w, float *c,
                                                       size_t c_stride, const float *res,
                                                       size_t res_stride, int act) {
    const float *ap[MR];
    ap[0] = a;
#pragma GCC unroll 6
    for (int i = 1; i < R; i++) ap[i] = (size_t)i < mr ? ap[i - 1] + a_stride : ap[i - 1];
    __m256 acc[MR][2];
#pragma GCC unroll 6
    for (int i = 0; i < R; i++) {
        load_w(acc[i], w, 0, BF);
    }
    for (size_t j = 0, o = NR; j < kc; j++, o += NR) {
        __m256 wv[2];
        load_w(wv, w, o, BF);
        const __m256 w0 = wv[0], w1 = wv[1];
#pragma GCC unroll 6
        for (int i = 0; i < R; i++) {
            const __m256 x = _mm256_broadcast_ss(ap[i] + j);
            acc[i][0] = _mm256_fmadd_ps(x, w0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(x, w1, acc[i][1]);
        }
    }
    const __m256i m0 = lane_mask(nc), m1 = lane_mask(nc > 8 ? nc - 8 : 0);
#pragma GCC unroll 6
    for (int i = 0; i < R; i++) {
        if ((size_t)i >= mr) break;
        store_row(c + i * c_stride, res ? res + i * res_stride : NULL, acc[i][0], acc[i][1], m0, m1, act);
    }
}

/* R rows (R <= 2) by P panels of 16 columns, columns [0, nc), with R P <= 4:
 * 8 independent accumulators where a tile of R rows has 2 R (ymm FMAs
 * need 8 in flight), and each broadcast serves all P panels. Same
 * arithmetic per output as tile(). */
static inline __attribute__((always_inline)) void wide_tile(const int BF, const int R, const int P, size_t mr,
                                                            size_t nc, size_t kc, const float *a,
                                                            size_t a_stride, const void *w,
                                                            size_t w_stride, float *c,
                                                            size_t c_stride, const float *res,
                                                            size_t res_stride, int act) {
    const float *ap[2] = {a, mr > 1 ? a + a_stride : a};
    size_t wp[4]; /* element offset of each panel's first weight row */
    __m256 acc[2][4][2];
#pragma GCC unroll 4
    for (int p = 0; p < P; p++) {
        wp[p] = p * w_stride;
#pragma GCC unroll 2
        for (int i = 0; i < R; i++) {
            load_w(acc[i][p], w, wp[p], BF);
        }
        wp[p] += NR;
    }
    for (size_t j = 0; j < kc; j++) {
        __m256 x[2];
#pragma GCC unroll 2
        for (int i = 0; i < R; i++) x[i] = _mm256_broadcast_ss(ap[i] + j);
#pragma GCC unroll 4
        for (int p = 0; p < P; p++) {
            __m256 wv[2];
            load_w(wv, w, wp[p] + NR * j, BF);
            const __m256 w0 = wv[0], w1 = wv[1];
#pragma GCC unroll 2
            for (int i = 0; i < R; i++) {
                acc[i][p][0] = _mm256_fmadd_ps(x[i], w0, acc[i][p][0]);
                acc[i][p][1] = _mm256_fmadd_ps(x[i], w1, acc[i][p][1]);
            }
        }
    }
#pragma GCC unroll 4
    for (int p = 0; p < P; p++) {
        const size_t left = nc - NR * p;
        const __m256i m0 = lane_mask(left), m1 = lane_mask(left > 8 ? left - 8 : 0);
#pragma GCC unroll 2
        for (int i = 0; i < R; i++) {
            if ((size_t)i >= mr) break;
            store_row(c + i * c_stride + NR * p, res ? res + i * res_stride + NR * p : NULL,
                      acc[i][p][0], acc[i][p][1], m0, m1, act);
        }
    }
}

/* Up to 2 rows by up to 4 panels: one row takes all 4 panels in one pass,
 * two rows take 2 panels per pass. */
static inline __attribute__((always_inline)) void gemm_wide(const int BF, size_t mr, size_t nc, size_t kc,
                                                            const float *a, size_t a_stride, const void *w,
                                                            size_t w_stride, float *c, size_t c_stride,
                                                            const float *res, size_t res_stride, int act) {
    const size_t panels = (nc + NR - 1) / NR;
    if (mr == 1) {
#define WIDE1(P) wide_tile(BF, 1, P, mr, nc, kc, a, a_stride, w, w_stride, c, c_stride, res, res_stride, act)
        HIMAE_ONE_TO_FOUR(WIDE1, panels)
#undef WIDE1
        return;
    }
    for (size_t p = 0; p < panels; p += 2) {
        const size_t left = nc - NR * p, off = NR * p;
        const float *r = res ? res + off : NULL;
        const void *wp = (const char *)w + p * w_stride * (BF ? 2 : 4);
        if (left > NR)
            wide_tile(BF, 2, 2, mr, left, kc, a, a_stride, wp, w_stride, c + off, c_stride, r, res_stride, act);
        else
            wide_tile(BF, 2, 1, mr, left, kc, a, a_stride, wp, w_stride, c + off, c_stride, r, res_stride, act);
    }
}

/* Shorter tiles for fewer rows (small N, remainders, stream mode). */
static inline __attribute__((always_inline)) void gemm(const int BF, size_t mr, size_t nc, size_t kc,
                                                       const float *a, size_t a_stride, const void *w,
                                                       float *c, size_t c_stride, const float *res,
                                                       size_t res_stride, int act) {
    if (mr > 4)
        tile(BF, 6, mr, nc, kc, a, a_stride, w, c, c_stride, res, res_stride, act);
    else if (mr > 2)
        tile(BF, 4, mr, nc, kc, a, a_stride, w, c, c_stride, res, res_stride, act);
    else if (mr > 1)
        tile(BF, 2, mr, nc, kc, a, a_stride, w, c, c_stride, res, res_stride, act);
    else
        tile(BF, 1, mr, nc, kc, a, a_stride, w, c, c_stride, res, res_stride, act);
}

HIMAE_UKERNELS(himae_ukernel_avx2, "avx2_6x16", HIMAE_ISA_AVX2, MR, NR, 2, 4 * NR);

/* int8 (himae_int8_row states the rounding): VPMADDUBSW multiplies 32
 * unsigned bytes by 32 signed bytes and adds each two products into 16
 * bits, VPMADDWD adds each two of those into 32: an int32 sum of four
 * products per column, as VNNI's VPDPBUSD makes in one. Inputs are offset by
 * 64 to unsigned bytes (1 to 127), so no 16-bit pair can saturate (2 x 127 x
 * 127 < 32768), and the offset's products, 64 times each column's weight
 * sum, come back out of the exact sums before they are scaled. The panel
 * layout is the other int8 kernels' (himae_int8_slot), 16 columns wide. */
#define Q8_MR 4    /* rows a tile */
#define Q8_ROWS 12 /* rows a call rounds once for all its panels (mr and wide_mr) */
#define Q8_OFFSET 64

/* Row a (kc floats) as offset int8 into q (kc rounded up to 8 bytes; past
 * kc they are the offset, which zero weights ignore); returns its scale. */
static inline float q8_row(const float *a, size_t kc, uint8_t *q) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 top = _mm256_setzero_ps();
    for (size_t e = 0; e < kc; e += 8)
        top = _mm256_max_ps(top, _mm256_andnot_ps(sign, _mm256_maskload_ps(a + e, lane_mask(kc - e))));
    __m128 t4 = _mm_max_ps(_mm256_castps256_ps128(top), _mm256_extractf128_ps(top, 1));
    t4 = _mm_max_ps(t4, _mm_movehl_ps(t4, t4));
    t4 = _mm_max_ss(t4, _mm_shuffle_ps(t4, t4, 1));
    const float t = _mm_cvtss_f32(t4);
    const __m256 inv = _mm256_set1_ps(t > 0.0f ? HIMAE_INT8_INPUT_MAX / t : 0.0f);
    const __m256 lo = _mm256_set1_ps(-HIMAE_INT8_INPUT_MAX), hi = _mm256_set1_ps(HIMAE_INT8_INPUT_MAX);
    /* each 32-bit lane's low byte, lanes 0-3 then 4-7 */
    const __m256i low_bytes = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                               0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    for (size_t e = 0; e < kc; e += 8) {
        const __m256 x = _mm256_maskload_ps(a + e, lane_mask(kc - e));
        const __m256 y = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(x, inv), lo), hi);
        const __m256i u = _mm256_add_epi32(_mm256_cvtps_epi32(y), _mm256_set1_epi32(Q8_OFFSET));
        const __m256i b = _mm256_shuffle_epi8(u, low_bytes);
        const int32_t w0 = _mm256_extract_epi32(b, 0), w1 = _mm256_extract_epi32(b, 4);
        memcpy(q + e, &w0, sizeof w0);
        memcpy(q + e + 4, &w1, sizeof w1);
    }
    return t / HIMAE_INT8_INPUT_MAX;
}

/* R rows (R <= 4) of offset inputs q (rows qs bytes apart) by one panel. */
static inline __attribute__((always_inline)) void q8_tile(const int R, size_t mr, size_t nc, size_t kc,
                                                          const uint8_t *q, size_t qs, const float *scale,
                                                          const uint8_t *w, float *c, size_t c_stride,
                                                          const float *res, size_t res_stride, int act) {
    __m256i acc[Q8_MR][2];
    for (int i = 0; i < R; i++) acc[i][0] = acc[i][1] = _mm256_setzero_si256();
    const __m256i ones = _mm256_set1_epi16(1);
    const uint8_t *rows = w + HIMAE_INT8_HEAD * NR;
    for (size_t g = 0; g < (kc + 3) / 4; g++) {
        const __m256i w0 = _mm256_loadu_si256((const __m256i *)(rows + 64 * g));
        const __m256i w1 = _mm256_loadu_si256((const __m256i *)(rows + 64 * g + 32));
        for (int i = 0; i < R; i++) {
            int32_t word;
            memcpy(&word, q + i * qs + 4 * g, sizeof word);
            const __m256i x = _mm256_set1_epi32(word);
            acc[i][0] = _mm256_add_epi32(acc[i][0], _mm256_madd_epi16(_mm256_maddubs_epi16(x, w0), ones));
            acc[i][1] = _mm256_add_epi32(acc[i][1], _mm256_madd_epi16(_mm256_maddubs_epi16(x, w1), ones));
        }
    }
    const __m256i m0 = lane_mask(nc), m1 = lane_mask(nc > 8 ? nc - 8 : 0);
    for (int i = 0; i < R && (size_t)i < mr; i++) {
        __m256 y[2];
        for (int v = 0; v < 2; v++) {
            const __m256 bias = _mm256_loadu_ps((const float *)w + 8 * v);
            const __m256 ws = _mm256_loadu_ps((const float *)w + NR + 8 * v);
            const __m256i sums = _mm256_loadu_si256((const __m256i *)(w + 4 * (2 * NR + 8 * v)));
            const __m256i exact = _mm256_sub_epi32(acc[i][v], _mm256_slli_epi32(sums, 6));
            y[v] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(scale[i]), ws), _mm256_cvtepi32_ps(exact), bias);
        }
        store_row(c + i * c_stride, res ? res + i * res_stride : NULL, y[0], y[1], m0, m1, act);
    }
}

/* mr (<= Q8_ROWS) rows by columns [0, nc) over consecutive panels w_stride
 * bytes apart: the rows rounded once, then tiles of up to Q8_MR rows per panel. */
static void q8_gemm(size_t mr, size_t nc, size_t kc, const float *a, size_t as, const void *w, size_t ws,
                    float *c, size_t cs, const float *res, size_t rs, int act) {
    uint8_t q[Q8_ROWS * HIMAE_INT8_MAX_KC];
    float scale[Q8_ROWS];
    const size_t qs = (kc + 7) / 8 * 8;
    for (size_t i = 0; i < mr; i++) scale[i] = q8_row(a + i * as, kc, q + i * qs);
    for (size_t n0 = 0; n0 < nc; n0 += NR) {
        const uint8_t *panel = (const uint8_t *)w + n0 / NR * ws;
        const size_t left = nc - n0 < NR ? nc - n0 : NR;
        for (size_t r = 0; r < mr; r += Q8_MR) {
            const size_t m = mr - r < Q8_MR ? mr - r : Q8_MR;
            float *cr = c + r * cs + n0;
            const float *rr = res ? res + r * rs + n0 : NULL;
#define TILE(R) q8_tile(R, m, left, kc, q + r * qs, qs, scale + r, panel, cr, cs, rr, rs, act)
            HIMAE_ONE_TO_FOUR(TILE, m)
#undef TILE
        }
    }
}

/* One panel: columns [0, nc), nc <= 16. */
static void q8_gemm_panel(size_t mr, size_t nc, size_t kc, const float *a, size_t as, const void *w, float *c,
                          size_t cs, const float *res, size_t rs, int act) {
    q8_gemm(mr, nc, kc, a, as, w, 0, c, cs, res, rs, act);
}

const himae_ukernel himae_ukernel_avx2_int8 = {
    "int8_gemm_ukernel__avx2_12x16", HIMAE_ISA_AVX2, HIMAE_INT8, 1, Q8_ROWS, NR, q8_gemm_panel, q8_gemm,
    Q8_ROWS, HIMAE_INT8_MAX_COLUMNS};
