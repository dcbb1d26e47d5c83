/* gemm_scalar.c - portable micro-kernel: the fallback on every CPU. */
#include <math.h>

#include "internal.h"

#define MR 4
#define NR 8

static float gelu(float x) {
    float z = x * HIMAE_SQRT1_2, a = fabsf(z);
    float t = 1.0f / (HIMAE_GELU_P * a + 1.0f);
    float r = (((HIMAE_GELU_A5 * t + HIMAE_GELU_A4) * t + HIMAE_GELU_A3) * t + HIMAE_GELU_A2) * t +
              HIMAE_GELU_A1;
    float e = 1.0f - r * t * expf(-z * z);
    return x * 0.5f * (1.0f + copysignf(e, z));
}

static void f32_gemm_ukernel__scalar_4x8(size_t mr, size_t nc, size_t kc, const float *a,
                                         size_t a_stride, const float *w, float *c, size_t c_stride,
                                         const float *res, size_t res_stride, int act) {
    float acc[MR][NR];
    for (size_t i = 0; i < MR; i++)
        for (size_t n = 0; n < NR; n++) acc[i][n] = w[n];
    const float *wk = w + NR;
    for (size_t j = 0; j < kc; j++, wk += NR)
        for (size_t i = 0; i < mr; i++) {
            float av = a[i * a_stride + j];
            for (size_t n = 0; n < NR; n++) acc[i][n] += av * wk[n];
        }
    for (size_t i = 0; i < mr; i++)
        for (size_t n = 0; n < nc; n++) {
            float v = acc[i][n];
            if (res) v += res[i * res_stride + n];
            c[i * c_stride + n] = act ? gelu(v) : v;
        }
}

const himae_ukernel himae_ukernel_scalar = {"f32_gemm_ukernel__scalar_4x8", HIMAE_ISA_SCALAR, MR,
                                            NR, f32_gemm_ukernel__scalar_4x8, NULL, 0, 0};
