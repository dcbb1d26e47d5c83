/* gemm_avx512.c - AVX-512F micro-kernel, 12 rows x 32 columns: 24 zmm
 * accumulators; each step loads two weight vectors and broadcasts one input
 * value per row. Compiled with -mavx512f only. Two builds of each kernel:
 * f32 panels, and bf16 panels widened to f32 as they are loaded; and at the
 * end the bf16dot kernel, the one user of AVX512-BF16, and the int8 kernel,
 * the one user of AVX512-VNNI. */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"

/* exp(y) for y in [HIMAE_EXP_MIN, 0]: y = n ln2 + r, |r| <= ln2/2, degree-5
 * polynomial in r. n is rounded by adding a power-of-two magic number (the
 * sum's low mantissa bits then hold n), and 2^n scales the polynomial through
 * the exponent field: integer work, off the FMA pipes the GEMM keeps busy.
 * One ln2 term is enough: |n| <= 126 keeps its error under 3e-7 in r where
 * exp is at most 2^-60 of the result. */
static inline __m512 exp_neg(__m512 y) {
    const __m512 magic = _mm512_set1_ps(HIMAE_EXP_MAGIC);
    y = _mm512_max_ps(y, _mm512_set1_ps(HIMAE_EXP_MIN));
    const __m512 big = _mm512_fmadd_ps(y, _mm512_set1_ps(HIMAE_EXP_LOG2E), magic);
    const __m512 n = _mm512_sub_ps(big, magic);
    const __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(HIMAE_EXP_LN2), y);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(HIMAE_EXP_C5), r, _mm512_set1_ps(HIMAE_EXP_C4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(HIMAE_EXP_C3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(HIMAE_EXP_C2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(p),
                                                _mm512_slli_epi32(_mm512_castps_si512(big), 23)));
}

/* h = erfc(|z|) / 2 = Phi(-|x|) by Abramowitz & Stegun (the polynomial's
 * coefficients halved), then GELU = x (1 - h) for x >= 0 and x h below: the
 * small term h carries the error, so it stays small relative to x. */
static inline __m512 gelu(__m512 x) {
    const __m512 a = _mm512_abs_ps(_mm512_mul_ps(x, _mm512_set1_ps(HIMAE_SQRT1_2)));
    const __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f),
                                   _mm512_fmadd_ps(_mm512_set1_ps(HIMAE_GELU_P), a, _mm512_set1_ps(1.0f)));
    __m512 r = _mm512_fmadd_ps(_mm512_set1_ps(0.5f * HIMAE_GELU_A5), t, _mm512_set1_ps(0.5f * HIMAE_GELU_A4));
    r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(0.5f * HIMAE_GELU_A3));
    r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(0.5f * HIMAE_GELU_A2));
    r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(0.5f * HIMAE_GELU_A1));
    const __m512 h = _mm512_mul_ps(_mm512_mul_ps(exp_neg(_mm512_fnmadd_ps(a, a, _mm512_setzero_ps())), t), r);
    const __mmask16 negative = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
    return _mm512_mul_ps(x, _mm512_mask_mov_ps(_mm512_sub_ps(_mm512_set1_ps(1.0f), h), negative, h));
}

/* Row epilogue: + residual, GELU, store the first nc (> 0) columns of 32. */
static inline __attribute__((always_inline)) void store_row(float *c, const float *res,
                                                            const __m512 acc[2], size_t nc, int act) {
    const __mmask16 m0 = nc >= 16 ? 0xFFFF : (__mmask16)((1u << nc) - 1);
    const __mmask16 m1 = nc >= 32 ? 0xFFFF : nc > 16 ? (__mmask16)((1u << (nc - 16)) - 1) : 0;
    for (int v = 0; v < 2; v++) {
        const __mmask16 m = v ? m1 : m0;
        if (!m) continue;
        __m512 y = acc[v];
        if (res) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(m, res + 16 * v));
        if (act) y = gelu(y);
        _mm512_mask_storeu_ps(c + 16 * v, m, y);
    }
}

/* The 32 weights of a panel row from element i: f32, or bf16 laid out by
 * himae_bf16_slot, whose 32-bit words widen to columns 0-15 (shifted left
 * 16) and 16-31 (high halves): exact, since a bf16 is the high half of an
 * f32. Everything after the load is the f32 arithmetic. */
static inline __attribute__((always_inline)) void load_w(__m512 out[2], const void *w, size_t i, const int bf) {
    if (bf) {
        const __m512i v = _mm512_loadu_si512((const uint16_t *)w + i);
        out[0] = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
        out[1] = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32((int)0xFFFF0000u)));
        return;
    }
    out[0] = _mm512_loadu_ps((const float *)w + i);
    out[1] = _mm512_loadu_ps((const float *)w + i + 16);
}

/* One register tile: R rows (R <= 12) by 32 columns. R is a constant at
 * every call, so the loops unroll and the accumulators live in registers. Rows past mr alias the last real row: computed, never
 * stored. */
static inline __attribute__((always_inline)) void tile(const int BF, const int R, size_t mr,
                                                       size_t nc, size_t kc, const float *a,
                                                       size_t a_stride, const void *w, float *c,
                                                       size_t c_stride, const float *res,
                                                       size_t res_stride, int act) {
    const float *ap[12];
    ap[0] = a;
#pragma GCC unroll 12
    for (int i = 1; i < R; i++) ap[i] = (size_t)i < mr ? ap[i - 1] + a_stride : ap[i - 1];
    __m512 acc[12][2];
#pragma GCC unroll 12
    for (int i = 0; i < R; i++) {
        load_w(acc[i], w, 0, BF);
    }
    for (size_t j = 0, o = 32; j < kc; j++, o += 32) {
        __m512 wv[2];
        load_w(wv, w, o, BF);
        const __m512 w0 = wv[0], w1 = wv[1];
#pragma GCC unroll 12
        for (int i = 0; i < R; i++) {
            const __m512 x = _mm512_set1_ps(ap[i][j]);
            acc[i][0] = _mm512_fmadd_ps(x, w0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(x, w1, acc[i][1]);
        }
    }
#pragma GCC unroll 12
    for (int i = 0; i < R; i++) {
        if ((size_t)i >= mr) break;
        store_row(c + i * c_stride, res ? res + i * res_stride : NULL, acc[i], nc, act);
    }
}

/* R rows (R <= 3) by P panels (P <= 4) of 32 columns, columns [0, nc): up to
 * 24 independent accumulators where a tile of R rows has 2 R, and each
 * broadcast serves all P panels. Same arithmetic per output as tile(). */
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
    __m512 acc[3][4][2];
#pragma GCC unroll 4
    for (int p = 0; p < P; p++) {
        wp[p] = p * w_stride;
#pragma GCC unroll 3
        for (int i = 0; i < R; i++) {
            load_w(acc[i][p], w, wp[p], BF);
        }
        wp[p] += 32;
    }
    for (size_t j = 0; j < kc; j++) {
        __m512 x[3];
#pragma GCC unroll 3
        for (int i = 0; i < R; i++) x[i] = _mm512_set1_ps(ap[i][j]);
#pragma GCC unroll 4
        for (int p = 0; p < P; p++) {
            __m512 wv[2];
            load_w(wv, w, wp[p] + 32 * j, BF);
            const __m512 w0 = wv[0], w1 = wv[1];
#pragma GCC unroll 3
            for (int i = 0; i < R; i++) {
                acc[i][p][0] = _mm512_fmadd_ps(x[i], w0, acc[i][p][0]);
                acc[i][p][1] = _mm512_fmadd_ps(x[i], w1, acc[i][p][1]);
            }
        }
    }
#pragma GCC unroll 4
    for (int p = 0; p < P; p++)
#pragma GCC unroll 3
        for (int i = 0; i < R; i++) {
            if ((size_t)i >= mr) break;
            store_row(c + i * c_stride + 32 * p, res ? res + i * res_stride + 32 * p : NULL, acc[i][p],
                      nc - 32 * p, act);
        }
}

/* TILE(R) for R = mr rows (1-12), a constant where the tile is expanded. */
#define ROW_TILES(TILE)            \
    switch (mr) {                  \
    case 1: TILE(1); break;        \
    case 2: TILE(2); break;        \
    case 3: TILE(3); break;        \
    case 4: TILE(4); break;        \
    case 5: TILE(5); break;        \
    case 6: TILE(6); break;        \
    case 7: TILE(7); break;        \
    case 8: TILE(8); break;        \
    case 9: TILE(9); break;        \
    case 10: TILE(10); break;      \
    case 11: TILE(11); break;      \
    default: TILE(12); break;      \
    }

/* Fewer rows than the tile height (small N, remainders, stream mode's few
 * new columns) use a tile of exactly that height: no row is computed and
 * thrown away. Every row keeps the same summation order whatever the tile,
 * so results do not depend on how rows are grouped. */
static inline __attribute__((always_inline)) void gemm(const int BF, size_t mr, size_t nc, size_t kc,
                                                       const float *a, size_t a_stride, const void *w,
                                                       float *c, size_t c_stride, const float *res,
                                                       size_t res_stride, int act) {
#define TILE(R) tile(BF, R, mr, nc, kc, a, a_stride, w, c, c_stride, res, res_stride, act)
    ROW_TILES(TILE)
#undef TILE
}

static inline __attribute__((always_inline)) void gemm_wide(const int BF, size_t mr, size_t nc, size_t kc,
                                                            const float *a, size_t a_stride, const void *w,
                                                            size_t w_stride, float *c, size_t c_stride,
                                                            const float *res, size_t res_stride, int act) {
#define WIDE(R, P) wide_tile(BF, R, P, mr, nc, kc, a, a_stride, w, w_stride, c, c_stride, res, res_stride, act)
    HIMAE_WIDE_SHAPES(WIDE, mr, nc, 32)
#undef WIDE
}

HIMAE_UKERNELS(himae_ukernel_avx512, "avx512f_12x32", HIMAE_ISA_AVX512, 12, 32, 3, 128);

/* bf16dot: VDPBF16PS multiplies 16 pairs of bf16 inputs by 16 pairs of bf16
 * weights and adds both products to 16 f32 sums, twice the multiply-adds
 * of an f32 FMA in one instruction. Only these functions use AVX512-BF16
 * (dispatch.c runs them where CPUID has it); the epilogue is the f32
 * kernels'. The rows of a are rounded to bf16 (to nearest even) DOT_KB
 * elements at a time into a buffer on the stack, zero past kc, and each
 * pair of inputs is broadcast as one 32-bit word. */
#define DOT_TARGET __attribute__((target("avx512f,avx512bf16"), always_inline)) inline
#define DOT_KB 256

/* Elements [e0, e0 + n) of rows ap[0 .. R) as bf16 in ab, zeros after them
 * up to a multiple of 32. */
static DOT_TARGET void dot_round(const int R, const float *const *ap, size_t e0, size_t n,
                                 uint16_t ab[][DOT_KB]) {
    for (int i = 0; i < R; i++)
        for (size_t e = 0; e < n; e += 32) {
            const size_t m = n - e;
            const __mmask16 lo = m >= 16 ? 0xFFFF : (__mmask16)((1u << m) - 1);
            const __mmask16 hi = m >= 32 ? 0xFFFF : m > 16 ? (__mmask16)((1u << (m - 16)) - 1) : 0;
            const __m512 x0 = _mm512_maskz_loadu_ps(lo, ap[i] + e0 + e);
            const __m512 x1 = _mm512_maskz_loadu_ps(hi, ap[i] + e0 + e + 16);
            _mm512_storeu_si512(ab[i] + e, (__m512i)_mm512_cvtne2ps_pbh(x1, x0));
        }
}

/* The pair of inputs q of a rounded row, in every lane. */
static DOT_TARGET __m512bh dot_input(const uint16_t *row, size_t q) {
    uint32_t word;
    memcpy(&word, row + 2 * q, sizeof word);
    return (__m512bh)_mm512_set1_epi32((int)word);
}

/* The panel's 32 biases widened to f32 (columns 0-15, 16-31). */
static DOT_TARGET void dot_bias(__m512 out[2], const uint16_t *w) {
    const __m512i v = _mm512_loadu_si512(w);
    out[0] = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(v)), 16));
    out[1] = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(v, 1)), 16));
}

/* Weight rows j and j + 1 as pairs for columns 0-15 and 16-31, or row j
 * alone (the last of an odd kc), its partner zero. */
static DOT_TARGET void dot_weights(__m512bh out[2], const uint16_t *w, size_t j, int lone) {
    const uint16_t *row = w + 32 + 32 * j;
    if (lone) {
        const __m512i v = _mm512_loadu_si512(row);
        out[0] = (__m512bh)_mm512_cvtepu16_epi32(_mm512_castsi512_si256(v));
        out[1] = (__m512bh)_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(v, 1));
        return;
    }
    out[0] = (__m512bh)_mm512_loadu_si512(row);
    out[1] = (__m512bh)_mm512_loadu_si512(row + 32);
}

/* R rows (R <= 12) by one panel, as tile() does in f32. */
static DOT_TARGET void dot_tile(const int R, size_t mr, size_t nc, size_t kc, const float *a, size_t a_stride,
                                const uint16_t *w, float *c, size_t c_stride, const float *res,
                                size_t res_stride, int act) {
    const float *ap[12];
    ap[0] = a;
#pragma GCC unroll 12
    for (int i = 1; i < R; i++) ap[i] = (size_t)i < mr ? ap[i - 1] + a_stride : ap[i - 1];
    uint16_t ab[12][DOT_KB];
    __m512 acc[12][2];
#pragma GCC unroll 12
    for (int i = 0; i < R; i++) dot_bias(acc[i], w);
    for (size_t e0 = 0; e0 < kc; e0 += DOT_KB) {
        const size_t n = kc - e0 < DOT_KB ? kc - e0 : DOT_KB;
        dot_round(R, ap, e0, n, ab);
        for (size_t q = 0; q < (n + 1) / 2; q++) {
            __m512bh wv[2];
            dot_weights(wv, w, e0 + 2 * q, e0 + 2 * q + 1 == kc);
#pragma GCC unroll 12
            for (int i = 0; i < R; i++) {
                const __m512bh x = dot_input(ab[i], q);
                acc[i][0] = _mm512_dpbf16_ps(acc[i][0], x, wv[0]);
                acc[i][1] = _mm512_dpbf16_ps(acc[i][1], x, wv[1]);
            }
        }
    }
#pragma GCC unroll 12
    for (int i = 0; i < R; i++) {
        if ((size_t)i >= mr) break;
        store_row(c + i * c_stride, res ? res + i * res_stride : NULL, acc[i], nc, act);
    }
}

/* R rows (R <= 3) by P panels (P <= 4), as wide_tile() does in f32: the
 * rows are rounded once for all P panels. */
static DOT_TARGET void dot_wide_tile(const int R, const int P, size_t mr, size_t nc, size_t kc, const float *a,
                                     size_t a_stride, const uint16_t *w, size_t w_stride, float *c,
                                     size_t c_stride, const float *res, size_t res_stride, int act) {
    const float *ap[3];
    ap[0] = a;
    for (int i = 1; i < R; i++) ap[i] = (size_t)i < mr ? ap[i - 1] + a_stride : ap[i - 1];
    uint16_t ab[3][DOT_KB];
    __m512 acc[3][4][2];
#pragma GCC unroll 4
    for (int p = 0; p < P; p++)
#pragma GCC unroll 3
        for (int i = 0; i < R; i++) dot_bias(acc[i][p], w + p * w_stride);
    for (size_t e0 = 0; e0 < kc; e0 += DOT_KB) {
        const size_t n = kc - e0 < DOT_KB ? kc - e0 : DOT_KB;
        dot_round(R, ap, e0, n, ab);
        for (size_t q = 0; q < (n + 1) / 2; q++) {
            const int lone = e0 + 2 * q + 1 == kc;
            __m512bh x[3];
#pragma GCC unroll 3
            for (int i = 0; i < R; i++) x[i] = dot_input(ab[i], q);
#pragma GCC unroll 4
            for (int p = 0; p < P; p++) {
                __m512bh wv[2];
                dot_weights(wv, w + p * w_stride, e0 + 2 * q, lone);
#pragma GCC unroll 3
                for (int i = 0; i < R; i++) {
                    acc[i][p][0] = _mm512_dpbf16_ps(acc[i][p][0], x[i], wv[0]);
                    acc[i][p][1] = _mm512_dpbf16_ps(acc[i][p][1], x[i], wv[1]);
                }
            }
        }
    }
#pragma GCC unroll 4
    for (int p = 0; p < P; p++)
#pragma GCC unroll 3
        for (int i = 0; i < R; i++) {
            if ((size_t)i >= mr) break;
            store_row(c + i * c_stride + 32 * p, res ? res + i * res_stride + 32 * p : NULL, acc[i][p],
                      nc - 32 * p, act);
        }
}

__attribute__((target("avx512f,avx512bf16"))) static void dot_gemm(size_t mr, size_t nc, size_t kc,
                                                                    const float *a, size_t as, const void *w,
                                                                    float *c, size_t cs, const float *res,
                                                                    size_t rs, int act) {
#define TILE(R) dot_tile(R, mr, nc, kc, a, as, w, c, cs, res, rs, act)
    ROW_TILES(TILE)
#undef TILE
}

__attribute__((target("avx512f,avx512bf16"))) static void dot_gemm_wide(size_t mr, size_t nc, size_t kc,
                                                                         const float *a, size_t as,
                                                                         const void *w, size_t ws, float *c,
                                                                         size_t cs, const float *res,
                                                                         size_t rs, int act) {
#define WIDE(R, P) dot_wide_tile(R, P, mr, nc, kc, a, as, w, ws, c, cs, res, rs, act)
    HIMAE_WIDE_SHAPES(WIDE, mr, nc, 32)
#undef WIDE
}

const himae_ukernel himae_ukernel_avx512_bf16dot = {
    "bf16dot_gemm_ukernel__avx512bf16_12x32", HIMAE_ISA_AVX512, HIMAE_BF16DOT, 2, 12, 32, dot_gemm, dot_gemm_wide,
    3, 128};

/* int8: VPDPBUSD multiplies 64 unsigned bytes by 64 signed bytes and adds
 * each four products to one of 16 int32 sums, exactly: four multiply-adds
 * per lane where VDPBF16PS does two. Only these functions use AVX512-VNNI
 * (dispatch.c runs them where CPUID has it). Each input row is rounded to
 * int8 once for every panel (himae_int8_row states how) and offset by 128
 * to an unsigned byte; the offset's products, 128 times each column's
 * weight sum, come back out of the exact sums before they are scaled. */
#define Q8_TARGET __attribute__((target("avx512f,avx512vnni"), always_inline)) inline

/* The first min(n, 16) lanes. */
static inline __mmask16 q8_lanes(size_t n) { return n >= 16 ? 0xFFFF : (__mmask16)((1u << n) - 1); }

/* Row a (kc floats) as offset int8 into q (kc rounded up to 16 bytes; past
 * kc they are 128, which zero weights ignore); returns its scale. */
static Q8_TARGET float q8_row(const float *a, size_t kc, uint8_t *q) {
    __m512 top = _mm512_setzero_ps();
    for (size_t e = 0; e < kc; e += 16)
        top = _mm512_max_ps(top, _mm512_abs_ps(_mm512_maskz_loadu_ps(q8_lanes(kc - e), a + e)));
    const float t = _mm512_reduce_max_ps(top);
    const __m512 inv = _mm512_set1_ps(t > 0.0f ? HIMAE_INT8_INPUT_MAX / t : 0.0f);
    const __m512 lo = _mm512_set1_ps(-HIMAE_INT8_INPUT_MAX), hi = _mm512_set1_ps(HIMAE_INT8_INPUT_MAX);
    for (size_t e = 0; e < kc; e += 16) {
        const __m512 x = _mm512_maskz_loadu_ps(q8_lanes(kc - e), a + e);
        const __m512 y = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(x, inv), lo), hi);
        const __m512i u = _mm512_add_epi32(_mm512_cvtps_epi32(y), _mm512_set1_epi32(128));
        _mm_storeu_si128((__m128i *)(q + e), _mm512_cvtepi32_epi8(u));
    }
    return t / HIMAE_INT8_INPUT_MAX;
}

/* Four offset inputs of a row, in every lane. */
static Q8_TARGET __m512i q8_input(const uint8_t *q, size_t g) {
    int32_t word;
    memcpy(&word, q + 4 * g, sizeof word);
    return _mm512_set1_epi32(word);
}

/* Row sums of one panel (w) to outputs: bias + row scale x column scale x
 * (sum - 128 x column weight sum), then the f32 kernels' epilogue. */
static Q8_TARGET void q8_store(float *c, const float *res, const __m512i acc[2], float scale, const uint8_t *w,
                               size_t nc, int act) {
    __m512 y[2];
    for (int v = 0; v < 2; v++) {
        const __m512 bias = _mm512_loadu_ps(w + 64 * v), ws = _mm512_loadu_ps(w + 128 + 64 * v);
        const __m512i sums = _mm512_loadu_si512(w + 256 + 64 * v);
        const __m512i exact = _mm512_sub_epi32(acc[v], _mm512_slli_epi32(sums, 7));
        y[v] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(scale), ws), _mm512_cvtepi32_ps(exact), bias);
    }
    store_row(c, res, y, nc, act);
}

/* R rows (R <= 12) of offset inputs q (rows qs bytes apart) by one panel. */
static Q8_TARGET void q8_tile(const int R, size_t mr, size_t nc, size_t kc, const uint8_t *q, size_t qs,
                              const float *scale, const uint8_t *w, float *c, size_t c_stride, const float *res,
                              size_t res_stride, int act) {
    __m512i acc[12][2];
#pragma GCC unroll 12
    for (int i = 0; i < R; i++) acc[i][0] = acc[i][1] = _mm512_setzero_si512();
    const uint8_t *rows = w + HIMAE_INT8_HEAD * 32;
    for (size_t g = 0; g < (kc + 3) / 4; g++) {
        const __m512i w0 = _mm512_loadu_si512(rows + 128 * g), w1 = _mm512_loadu_si512(rows + 128 * g + 64);
#pragma GCC unroll 12
        for (int i = 0; i < R; i++) {
            const __m512i x = q8_input(q + i * qs, g);
            acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], x, w0);
            acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], x, w1);
        }
    }
#pragma GCC unroll 12
    for (int i = 0; i < R; i++) {
        if ((size_t)i >= mr) break;
        q8_store(c + i * c_stride, res ? res + i * res_stride : NULL, acc[i], scale[i], w, nc, act);
    }
}

/* R rows (R <= 3) by P panels (P <= 4, w_stride bytes apart), as
 * wide_tile() does in f32. */
static Q8_TARGET void q8_wide_tile(const int R, const int P, size_t mr, size_t nc, size_t kc, const uint8_t *q,
                                   size_t qs, const float *scale, const uint8_t *w, size_t w_stride, float *c,
                                   size_t c_stride, const float *res, size_t res_stride, int act) {
    __m512i acc[3][4][2];
#pragma GCC unroll 4
    for (int p = 0; p < P; p++)
#pragma GCC unroll 3
        for (int i = 0; i < R; i++) acc[i][p][0] = acc[i][p][1] = _mm512_setzero_si512();
    for (size_t g = 0; g < (kc + 3) / 4; g++) {
        __m512i x[3];
#pragma GCC unroll 3
        for (int i = 0; i < R; i++) x[i] = q8_input(q + i * qs, g);
#pragma GCC unroll 4
        for (int p = 0; p < P; p++) {
            const uint8_t *row = w + p * w_stride + HIMAE_INT8_HEAD * 32 + 128 * g;
            const __m512i w0 = _mm512_loadu_si512(row), w1 = _mm512_loadu_si512(row + 64);
#pragma GCC unroll 3
            for (int i = 0; i < R; i++) {
                acc[i][p][0] = _mm512_dpbusd_epi32(acc[i][p][0], x[i], w0);
                acc[i][p][1] = _mm512_dpbusd_epi32(acc[i][p][1], x[i], w1);
            }
        }
    }
#pragma GCC unroll 4
    for (int p = 0; p < P; p++)
#pragma GCC unroll 3
        for (int i = 0; i < R; i++) {
            if ((size_t)i >= mr) break;
            q8_store(c + i * c_stride + 32 * p, res ? res + i * res_stride + 32 * p : NULL, acc[i][p], scale[i],
                     w + p * w_stride, nc - 32 * p, act);
        }
}

/* mr (<= 12) rows by columns [0, nc) over consecutive panels w_stride bytes
 * apart: the rows rounded once, then a tile per panel, or for three rows or
 * fewer up to four panels at a time. */
__attribute__((target("avx512f,avx512vnni"))) static void q8_gemm(size_t mr, size_t nc, size_t kc, const float *a,
                                                                   size_t as, const void *w, size_t ws, float *c,
                                                                   size_t cs, const float *res, size_t rs, int act) {
    uint8_t q[12 * HIMAE_INT8_MAX_KC];
    float scale[12];
    const size_t qs = (kc + 15) / 16 * 16;
    for (size_t i = 0; i < mr; i++) scale[i] = q8_row(a + i * as, kc, q + i * qs);
    for (size_t n0 = 0; n0 < nc; n0 += mr <= 3 ? 128 : 32) {
        const uint8_t *panel = (const uint8_t *)w + n0 / 32 * ws;
        float *cn = c + n0;
        const float *rn = res ? res + n0 : NULL;
        const size_t left = nc - n0;
        if (mr <= 3) {
#define WIDE(R, P) q8_wide_tile(R, P, mr, left, kc, q, qs, scale, panel, ws, cn, cs, rn, rs, act)
            HIMAE_WIDE_SHAPES(WIDE, mr, left < 128 ? left : 128, 32)
#undef WIDE
        } else {
#define TILE(R) q8_tile(R, mr, left < 32 ? left : 32, kc, q, qs, scale, panel, cn, cs, rn, rs, act)
            ROW_TILES(TILE)
#undef TILE
        }
    }
}

/* One panel: columns [0, nc), nc <= 32. */
__attribute__((target("avx512f,avx512vnni"))) static void q8_gemm_panel(size_t mr, size_t nc, size_t kc,
                                                                         const float *a, size_t as, const void *w,
                                                                         float *c, size_t cs, const float *res,
                                                                         size_t rs, int act) {
    q8_gemm(mr, nc, kc, a, as, w, 0, c, cs, res, rs, act);
}

const himae_ukernel himae_ukernel_avx512_int8 = {
    "int8_gemm_ukernel__avx512vnni_12x32", HIMAE_ISA_AVX512, HIMAE_INT8, 1, 12, 32, q8_gemm_panel, q8_gemm,
    12, HIMAE_INT8_MAX_COLUMNS};
