/* gemm_avx512.c - AVX-512F micro-kernel, 12 rows x 32 columns: 24 zmm
 * accumulators; each step loads two weight vectors and broadcasts one input
 * value per row straight from memory. Compiled with -mavx512f only. */
#include <immintrin.h>

#include "internal.h"

#define MR 12
#define NR 32

/* exp(y) for y <= 0: y = n ln2 + r, |r| <= ln2/2, degree-7 Taylor in r. */
static inline __m512 exp_neg(__m512 y) {
    y = _mm512_max_ps(y, _mm512_set1_ps(HIMAE_EXP_MIN));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(y, _mm512_set1_ps(HIMAE_EXP_LOG2E)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(HIMAE_EXP_LN2_HI), y);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(HIMAE_EXP_LN2_LO), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

static inline __m512 gelu(__m512 x) {
    /* AVX-512F has no float logic ops: sign handling on the integer view. */
    const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
    __m512 z = _mm512_mul_ps(x, _mm512_set1_ps(HIMAE_SQRT1_2));
    __m512 a = _mm512_abs_ps(z);
    __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f),
                             _mm512_fmadd_ps(_mm512_set1_ps(HIMAE_GELU_P), a, _mm512_set1_ps(1.0f)));
    __m512 r = _mm512_fmadd_ps(_mm512_set1_ps(HIMAE_GELU_A5), t, _mm512_set1_ps(HIMAE_GELU_A4));
    r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(HIMAE_GELU_A3));
    r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(HIMAE_GELU_A2));
    r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(HIMAE_GELU_A1));
    __m512 e = _mm512_mul_ps(exp_neg(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(z, z))), t);
    e = _mm512_fnmadd_ps(e, r, _mm512_set1_ps(1.0f));
    e = _mm512_castsi512_ps(_mm512_xor_si512(
        _mm512_castps_si512(e), _mm512_and_si512(sign, _mm512_castps_si512(z))));
    return _mm512_mul_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.5f)),
                         _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

static inline void store_row(float *c, const float *res, __m512 v0, __m512 v1, __mmask16 m0,
                             __mmask16 m1, int act) {
    if (res) {
        v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, res));
        v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, res + 16));
    }
    if (act) {
        v0 = gelu(v0);
        v1 = gelu(v1);
    }
    _mm512_mask_storeu_ps(c, m0, v0);
    _mm512_mask_storeu_ps(c + 16, m1, v1);
}

static void f32_gemm_ukernel__avx512f_12x32(size_t mr, size_t nc, size_t kc, const float *a,
                                            size_t a_stride, const float *w, float *c,
                                            size_t c_stride, const float *res, size_t res_stride,
                                            int act) {
    /* Rows past mr alias the last real row: computed, never stored. */
    const float *a0 = a;
    const float *a1 = mr > 1 ? a0 + a_stride : a0;
    const float *a2 = mr > 2 ? a1 + a_stride : a1;
    const float *a3 = mr > 3 ? a2 + a_stride : a2;
    const float *a4 = mr > 4 ? a3 + a_stride : a3;
    const float *a5 = mr > 5 ? a4 + a_stride : a4;
    const float *a6 = mr > 6 ? a5 + a_stride : a5;
    const float *a7 = mr > 7 ? a6 + a_stride : a6;
    const float *a8 = mr > 8 ? a7 + a_stride : a7;
    const float *a9 = mr > 9 ? a8 + a_stride : a8;
    const float *a10 = mr > 10 ? a9 + a_stride : a9;
    const float *a11 = mr > 11 ? a10 + a_stride : a10;
    __m512 b0 = _mm512_loadu_ps(w), b1 = _mm512_loadu_ps(w + 16);
#define DECL(i) __m512 c##i##0 = b0, c##i##1 = b1;
    DECL(0) DECL(1) DECL(2) DECL(3) DECL(4) DECL(5) DECL(6) DECL(7) DECL(8) DECL(9) DECL(10) DECL(11)
#undef DECL
    w += NR;
    for (size_t j = 0; j < kc; j++, w += NR) {
        const __m512 w0 = _mm512_loadu_ps(w), w1 = _mm512_loadu_ps(w + 16);
#define STEP(i)                                      \
    {                                                \
        const __m512 v = _mm512_set1_ps(a##i[j]);    \
        c##i##0 = _mm512_fmadd_ps(v, w0, c##i##0);   \
        c##i##1 = _mm512_fmadd_ps(v, w1, c##i##1);   \
    }
        STEP(0) STEP(1) STEP(2) STEP(3) STEP(4) STEP(5) STEP(6) STEP(7) STEP(8) STEP(9) STEP(10) STEP(11)
#undef STEP
    }
    const __mmask16 m0 = nc >= 16 ? 0xFFFF : (__mmask16)((1u << nc) - 1);
    const __mmask16 m1 = nc >= 32 ? 0xFFFF : nc > 16 ? (__mmask16)((1u << (nc - 16)) - 1) : 0;
#define STORE(i)                                                                          \
    if (mr > i)                                                                           \
        store_row(c + i * c_stride, res ? res + i * res_stride : NULL, c##i##0, c##i##1, m0, m1, act);
    STORE(0) STORE(1) STORE(2) STORE(3) STORE(4) STORE(5) STORE(6) STORE(7) STORE(8) STORE(9) STORE(10) STORE(11)
#undef STORE
}

const himae_ukernel himae_ukernel_avx512 = {"f32_gemm_ukernel__avx512f_12x32", HIMAE_ISA_AVX512,
                                            MR, NR, f32_gemm_ukernel__avx512f_12x32};
