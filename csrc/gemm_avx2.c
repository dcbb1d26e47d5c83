/* gemm_avx2.c - AVX2+FMA micro-kernel, 6 rows x 16 columns: 12 ymm
 * accumulators, two weight vectors, one broadcast. Compiled with
 * -mavx2 -mfma only. */
#include <immintrin.h>

#include "internal.h"

#define MR 6
#define NR 16

/* exp(y) for y <= 0: y = n ln2 + r, |r| <= ln2/2, degree-7 Taylor in r. */
static inline __m256 exp_neg(__m256 y) {
    y = _mm256_max_ps(y, _mm256_set1_ps(HIMAE_EXP_MIN));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(y, _mm256_set1_ps(HIMAE_EXP_LOG2E)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(HIMAE_EXP_LN2_HI), y);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(HIMAE_EXP_LN2_LO), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

static inline __m256 gelu(__m256 x) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 z = _mm256_mul_ps(x, _mm256_set1_ps(HIMAE_SQRT1_2));
    __m256 a = _mm256_andnot_ps(sign, z);
    __m256 t = _mm256_div_ps(_mm256_set1_ps(1.0f),
                             _mm256_fmadd_ps(_mm256_set1_ps(HIMAE_GELU_P), a, _mm256_set1_ps(1.0f)));
    __m256 r = _mm256_fmadd_ps(_mm256_set1_ps(HIMAE_GELU_A5), t, _mm256_set1_ps(HIMAE_GELU_A4));
    r = _mm256_fmadd_ps(r, t, _mm256_set1_ps(HIMAE_GELU_A3));
    r = _mm256_fmadd_ps(r, t, _mm256_set1_ps(HIMAE_GELU_A2));
    r = _mm256_fmadd_ps(r, t, _mm256_set1_ps(HIMAE_GELU_A1));
    __m256 e = _mm256_mul_ps(exp_neg(_mm256_xor_ps(sign, _mm256_mul_ps(z, z))), t);
    e = _mm256_fnmadd_ps(e, r, _mm256_set1_ps(1.0f));
    e = _mm256_xor_ps(e, _mm256_and_ps(sign, z));
    return _mm256_mul_ps(_mm256_mul_ps(x, _mm256_set1_ps(0.5f)),
                         _mm256_add_ps(_mm256_set1_ps(1.0f), e));
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

static void f32_gemm_ukernel__avx2_6x16(size_t mr, size_t nc, size_t kc, const float *a,
                                        size_t a_stride, const float *w, float *c, size_t c_stride,
                                        const float *res, size_t res_stride, int act) {
    const float *a0 = a;
    const float *a1 = mr > 1 ? a0 + a_stride : a0;
    const float *a2 = mr > 2 ? a1 + a_stride : a1;
    const float *a3 = mr > 3 ? a2 + a_stride : a2;
    const float *a4 = mr > 4 ? a3 + a_stride : a3;
    const float *a5 = mr > 5 ? a4 + a_stride : a4;
    __m256 b0 = _mm256_loadu_ps(w), b1 = _mm256_loadu_ps(w + 8);
#define DECL(i) __m256 c##i##0 = b0, c##i##1 = b1;
    DECL(0) DECL(1) DECL(2) DECL(3) DECL(4) DECL(5)
#undef DECL
    w += NR;
    for (size_t j = 0; j < kc; j++, w += NR) {
        const __m256 w0 = _mm256_loadu_ps(w), w1 = _mm256_loadu_ps(w + 8);
#define STEP(i)                                      \
    {                                                \
        const __m256 v = _mm256_broadcast_ss(a##i + j); \
        c##i##0 = _mm256_fmadd_ps(v, w0, c##i##0);   \
        c##i##1 = _mm256_fmadd_ps(v, w1, c##i##1);   \
    }
        STEP(0) STEP(1) STEP(2) STEP(3) STEP(4) STEP(5)
#undef STEP
    }
    const __m256i m0 = lane_mask(nc), m1 = lane_mask(nc > 8 ? nc - 8 : 0);
#define STORE(i)                                                                          \
    if (mr > i)                                                                           \
        store_row(c + i * c_stride, res ? res + i * res_stride : NULL, c##i##0, c##i##1, m0, m1, act);
    STORE(0) STORE(1) STORE(2) STORE(3) STORE(4) STORE(5)
#undef STORE
}

const himae_ukernel himae_ukernel_avx2 = {"f32_gemm_ukernel__avx2_6x16", HIMAE_ISA_AVX2, MR, NR,
                                          f32_gemm_ukernel__avx2_6x16};
