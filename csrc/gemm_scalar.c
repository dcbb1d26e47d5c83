/* gemm_scalar.c - portable micro-kernel: the fallback on every CPU. */
#include <math.h>
#include <stdint.h>
#include <string.h>

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

/* Column n of the panel row at element o: f32, or bf16 (laid out by
 * himae_bf16_slot) widened exactly, a bf16 being the high half of an f32. */
static inline float load_w(const void *w, size_t o, size_t n, const int bf) {
    if (!bf) return ((const float *)w)[o + n];
    const uint32_t u = (uint32_t)((const uint16_t *)w)[o + himae_bf16_slot(n, NR)] << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static inline void gemm(const int BF, size_t mr, size_t nc, size_t kc, const float *a, size_t a_stride,
                        const void *w, float *c, size_t c_stride, const float *res, size_t res_stride,
                        int act) {
    float acc[MR][NR];
    for (size_t i = 0; i < MR; i++)
        for (size_t n = 0; n < NR; n++) acc[i][n] = load_w(w, 0, n, BF);
    for (size_t j = 0, o = NR; j < kc; j++, o += NR)
        for (size_t i = 0; i < mr; i++) {
            float av = a[i * a_stride + j];
            for (size_t n = 0; n < NR; n++) acc[i][n] += av * load_w(w, o, n, BF);
        }
    for (size_t i = 0; i < mr; i++)
        for (size_t n = 0; n < nc; n++) {
            float v = acc[i][n];
            if (res) v += res[i * res_stride + n];
            c[i * c_stride + n] = act ? gelu(v) : v;
        }
}

static void gemm_f32(size_t mr, size_t nc, size_t kc, const float *a, size_t as, const void *w, float *c,
                     size_t cs, const float *res, size_t rs, int act) {
    gemm(0, mr, nc, kc, a, as, w, c, cs, res, rs, act);
}

static void gemm_bf16(size_t mr, size_t nc, size_t kc, const float *a, size_t as, const void *w, float *c,
                      size_t cs, const float *res, size_t rs, int act) {
    gemm(1, mr, nc, kc, a, as, w, c, cs, res, rs, act);
}

/* No wide form: one panel at a time is as fast here. */
const himae_ukernel himae_ukernel_scalar[HIMAE_PRECISION_COUNT] = {
    {"f32_gemm_ukernel__scalar_4x8", HIMAE_ISA_SCALAR, HIMAE_F32, 4, MR, NR, gemm_f32, NULL, 0, 0},
    {"bf16_gemm_ukernel__scalar_4x8", HIMAE_ISA_SCALAR, HIMAE_BF16, 2, MR, NR, gemm_bf16, NULL, 0, 0}};
