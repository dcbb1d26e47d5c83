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

/* The panel row at element o as NR f32 weights: the row itself, or for bf16
 * (laid out by himae_bf16_slot) widened into tmp, exactly, a bf16 being the
 * high half of an f32. Once per row, whatever the number of rows. */
static inline __attribute__((always_inline)) const float *row_f32(float tmp[NR], const void *w, size_t o,
                                                                  const int bf) {
    if (!bf) return (const float *)w + o;
    const uint16_t *h = (const uint16_t *)w + o;
    for (size_t n = 0; n < NR; n++) {
        const uint32_t u = (uint32_t)h[himae_bf16_slot(n, NR)] << 16;
        memcpy(&tmp[n], &u, sizeof u);
    }
    return tmp;
}

/* The epilogue: + residual, GELU, store mr rows of nc columns. */
static inline __attribute__((always_inline)) void store(float acc[MR][NR], size_t mr, size_t nc, float *c, size_t c_stride, const float *res,
                  size_t res_stride, int act) {
    for (size_t i = 0; i < mr; i++)
        for (size_t n = 0; n < nc; n++) {
            float v = acc[i][n];
            if (res) v += res[i * res_stride + n];
            c[i * c_stride + n] = act ? gelu(v) : v;
        }
}

static inline __attribute__((always_inline)) void gemm(const int BF, size_t mr, size_t nc, size_t kc,
                                                       const float *a, size_t a_stride, const void *w, float *c,
                                                       size_t c_stride, const float *res, size_t res_stride,
                                                       int act) {
    float acc[MR][NR], tmp[NR];
    const float *bias = row_f32(tmp, w, 0, BF);
    for (size_t i = 0; i < MR; i++)
        for (size_t n = 0; n < NR; n++) acc[i][n] = bias[n];
    for (size_t j = 0, o = NR; j < kc; j++, o += NR) {
        const float *wk = row_f32(tmp, w, o, BF);
        for (size_t i = 0; i < mr; i++) {
            float av = a[i * a_stride + j];
            for (size_t n = 0; n < NR; n++) acc[i][n] += av * wk[n];
        }
    }
    store(acc, mr, nc, c, c_stride, res, res_stride, act);
}

static void gemm_f32(size_t mr, size_t nc, size_t kc, const float *a, size_t as, const void *w, float *c,
                     size_t cs, const float *res, size_t rs, int act) {
    gemm(0, mr, nc, kc, a, as, w, c, cs, res, rs, act);
}

static void gemm_bf16(size_t mr, size_t nc, size_t kc, const float *a, size_t as, const void *w, float *c,
                      size_t cs, const float *res, size_t rs, int act) {
    gemm(1, mr, nc, kc, a, as, w, c, cs, res, rs, act);
}

static float bf16_value(uint16_t h) {
    const uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* bf16dot as VDPBF16PS computes it, for CPUs without it and as the
 * statement of what it computes: per pair of rows (2q, 2q + 1) of a panel
 * laid out by himae_bf16dot_slot, inputs and weights rounded to bf16, the
 * odd row's product added first, then the even row's, each exact (8-bit
 * significands) and added in f32 with one rounding. A last row alone (odd
 * kc) pairs with zero. */
static void gemm_bf16dot(size_t mr, size_t nc, size_t kc, const float *a, size_t as, const void *w, float *c,
                         size_t cs, const float *res, size_t rs, int act) {
    const uint16_t *h = w;
    float acc[MR][NR];
    for (size_t i = 0; i < MR; i++)
        for (size_t n = 0; n < NR; n++) acc[i][n] = bf16_value(h[n]);
    for (size_t j = 0; j < kc; j += 2) {
        const int lone = j + 1 == kc;
        for (size_t i = 0; i < mr; i++) {
            const float a0 = bf16_value(himae_to_bf16(a[i * as + j]));
            const float a1 = lone ? 0.0f : bf16_value(himae_to_bf16(a[i * as + j + 1]));
            for (size_t n = 0; n < NR; n++) {
                const float w1 = lone ? 0.0f : bf16_value(h[himae_bf16dot_slot(j + 1, n, NR, kc)]);
                acc[i][n] += a1 * w1;
                acc[i][n] += a0 * bf16_value(h[himae_bf16dot_slot(j, n, NR, kc)]);
            }
        }
    }
    store(acc, mr, nc, c, cs, res, rs, act);
}

/* int8 as the SIMD kernels compute it: each row rounded by himae_int8_row,
 * the products summed exactly in int32, then bias + row scale x column
 * scale x sum (one fused multiply-add). */
static void gemm_int8(size_t mr, size_t nc, size_t kc, const float *a, size_t as, const void *w, float *c,
                      size_t cs, const float *res, size_t rs, int act) {
    const uint8_t *p = w;
    float acc[MR][NR];
    for (size_t i = 0; i < mr; i++) {
        float inv;
        const float scale = himae_int8_row(a + i * as, kc, &inv);
        int32_t sum[NR] = {0};
        for (size_t j = 0; j < kc; j++) {
            const int32_t x = himae_int8_input(a[i * as + j], inv);
            for (size_t n = 0; n < NR; n++) sum[n] += x * (int8_t)p[himae_int8_slot(j, n, NR)];
        }
        for (size_t n = 0; n < NR; n++) {
            float bias, ws;
            memcpy(&bias, p + 4 * n, sizeof bias);
            memcpy(&ws, p + 4 * (NR + n), sizeof ws);
            acc[i][n] = fmaf(scale * ws, (float)sum[n], bias);
        }
    }
    store(acc, mr, nc, c, cs, res, rs, act);
}

/* No wide form: one panel at a time is as fast here. */
const himae_ukernel himae_ukernel_scalar[HIMAE_PRECISION_COUNT] = {
    {"f32_gemm_ukernel__scalar_4x8", HIMAE_ISA_SCALAR, HIMAE_F32, 4, MR, NR, gemm_f32, NULL, 0, 0},
    {"bf16_gemm_ukernel__scalar_4x8", HIMAE_ISA_SCALAR, HIMAE_BF16, 2, MR, NR, gemm_bf16, NULL, 0, 0},
    {"bf16dot_gemm_ukernel__scalar_4x8", HIMAE_ISA_SCALAR, HIMAE_BF16DOT, 2, MR, NR, gemm_bf16dot, NULL, 0, 0},
    {"int8_gemm_ukernel__scalar_4x8", HIMAE_ISA_SCALAR, HIMAE_INT8, 1, MR, NR, gemm_int8, NULL, 0, 0}};
