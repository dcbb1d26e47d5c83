/* gemm_neon.c - AArch64 NEON micro-kernel, 8 rows x 8 columns: 16 q-register
 * accumulators, two weight vectors, lane-broadcast FMA per row. */
#include <arm_neon.h>

#include "internal.h"

#define MR 8
#define NR 8

/* exp(y) for y <= 0: y = n ln2 + r, |r| <= ln2/2, degree-7 Taylor in r. */
static inline float32x4_t exp_neg(float32x4_t y) {
    y = vmaxq_f32(y, vdupq_n_f32(HIMAE_EXP_MIN));
    float32x4_t n = vrndnq_f32(vmulq_f32(y, vdupq_n_f32(HIMAE_EXP_LOG2E)));
    float32x4_t r = vfmsq_f32(y, n, vdupq_n_f32(HIMAE_EXP_LN2_HI));
    r = vfmsq_f32(r, n, vdupq_n_f32(HIMAE_EXP_LN2_LO));
    float32x4_t p = vdupq_n_f32(1.0f / 5040);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 720), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 120), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 24), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 6), p, r);
    p = vfmaq_f32(vdupq_n_f32(0.5f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
    int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
    return vmulq_f32(p, vreinterpretq_f32_s32(e));
}

static inline float32x4_t gelu(float32x4_t x) {
    float32x4_t z = vmulq_f32(x, vdupq_n_f32(HIMAE_SQRT1_2));
    float32x4_t t = vdivq_f32(vdupq_n_f32(1.0f),
                              vfmaq_f32(vdupq_n_f32(1.0f), vdupq_n_f32(HIMAE_GELU_P), vabsq_f32(z)));
    float32x4_t r = vfmaq_f32(vdupq_n_f32(HIMAE_GELU_A4), vdupq_n_f32(HIMAE_GELU_A5), t);
    r = vfmaq_f32(vdupq_n_f32(HIMAE_GELU_A3), r, t);
    r = vfmaq_f32(vdupq_n_f32(HIMAE_GELU_A2), r, t);
    r = vfmaq_f32(vdupq_n_f32(HIMAE_GELU_A1), r, t);
    float32x4_t e = vmulq_f32(exp_neg(vnegq_f32(vmulq_f32(z, z))), t);
    e = vfmsq_f32(vdupq_n_f32(1.0f), e, r);
    uint32x4_t sign = vandq_u32(vreinterpretq_u32_f32(z), vdupq_n_u32(0x80000000u));
    e = vreinterpretq_f32_u32(veorq_u32(vreinterpretq_u32_f32(e), sign));
    return vmulq_f32(vmulq_f32(x, vdupq_n_f32(0.5f)), vaddq_f32(vdupq_n_f32(1.0f), e));
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

static void f32_gemm_ukernel__neon_8x8(size_t mr, size_t nc, size_t kc, const float *a,
                                       size_t a_stride, const float *w, float *c, size_t c_stride,
                                       const float *res, size_t res_stride, int act) {
    const float *a0 = a;
    const float *a1 = mr > 1 ? a0 + a_stride : a0;
    const float *a2 = mr > 2 ? a1 + a_stride : a1;
    const float *a3 = mr > 3 ? a2 + a_stride : a2;
    const float *a4 = mr > 4 ? a3 + a_stride : a3;
    const float *a5 = mr > 5 ? a4 + a_stride : a4;
    const float *a6 = mr > 6 ? a5 + a_stride : a5;
    const float *a7 = mr > 7 ? a6 + a_stride : a6;
    float32x4_t b0 = vld1q_f32(w), b1 = vld1q_f32(w + 4);
#define DECL(i) float32x4_t c##i##0 = b0, c##i##1 = b1;
    DECL(0) DECL(1) DECL(2) DECL(3) DECL(4) DECL(5) DECL(6) DECL(7)
#undef DECL
    w += NR;
    for (size_t j = 0; j < kc; j++, w += NR) {
        const float32x4_t w0 = vld1q_f32(w), w1 = vld1q_f32(w + 4);
#define STEP(i)                                    \
    {                                              \
        const float v = a##i[j];                   \
        c##i##0 = vfmaq_n_f32(c##i##0, w0, v);     \
        c##i##1 = vfmaq_n_f32(c##i##1, w1, v);     \
    }
        STEP(0) STEP(1) STEP(2) STEP(3) STEP(4) STEP(5) STEP(6) STEP(7)
#undef STEP
    }
#define STORE(i) \
    if (mr > i) store_row(c + i * c_stride, res ? res + i * res_stride : NULL, c##i##0, c##i##1, nc, act);
    STORE(0) STORE(1) STORE(2) STORE(3) STORE(4) STORE(5) STORE(6) STORE(7)
#undef STORE
}

const himae_ukernel himae_ukernel_neon = {"f32_gemm_ukernel__neon_8x8", HIMAE_ISA_NEON, MR, NR,
                                          f32_gemm_ukernel__neon_8x8};
