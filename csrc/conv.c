/* conv.c - convolution as GEMM over strided im2col views, weight packing,
 * and the naive reference convolution the tests compare against. */
#include <math.h>
#include <string.h>

#include "fpmode.h"
#include "internal.h"

/* A weight as packed: read without assuming alignment (w points into the
 * model file), subnormals flushed to zero (fpmode.h). */
static float weight(const float *w) {
    float x;
    memcpy(&x, w, sizeof x);
    return himae_flush_subnormal(x);
}

uint16_t himae_to_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

void himae_pack_bf16(uint16_t *dst, const float *src, size_t n, size_t nr) {
    for (size_t i = 0; i < n; i++) dst[i - i % nr + himae_bf16_slot(i % nr, nr)] = himae_to_bf16(src[i]);
}

void himae_pack_bf16dot(uint16_t *dst, const float *src, size_t n, size_t nr, size_t kc) {
    const size_t panel = nr * (1 + kc);
    for (size_t i = 0; i < n; i++) {
        const size_t o = i % panel;
        const size_t slot = o < nr ? o : himae_bf16dot_slot((o - nr) / nr, (o - nr) % nr, nr, kc);
        dst[i - o + slot] = himae_to_bf16(src[i]);
    }
}

void himae_pack_int8(uint8_t *dst, const float *src, size_t n, size_t nr, size_t kc) {
    const size_t panel = nr * (1 + kc), bytes = himae_int8_panel_bytes(nr, kc);
    for (size_t p = 0; p < n / panel; p++) {
        const float *w = src + p * panel;
        uint8_t *out = dst + p * bytes;
        memset(out, 0, bytes);
        for (size_t col = 0; col < nr; col++) {
            float top = 0.0f;
            for (size_t j = 0; j < kc; j++) top = fmaxf(top, fabsf(w[nr + j * nr + col]));
            const float scale = top > 0.0f ? top / HIMAE_INT8_WEIGHT_MAX : 1.0f,
                        inv = top > 0.0f ? HIMAE_INT8_WEIGHT_MAX / top : 0.0f;
            int32_t sum = 0;
            for (size_t j = 0; j < kc; j++) {
                const int8_t q = (int8_t)himae_int8_weight(w[nr + j * nr + col], inv);
                out[himae_int8_slot(j, col, nr)] = (uint8_t)q;
                sum += q;
            }
            memcpy(out + 4 * col, &w[col], sizeof(float));
            memcpy(out + 4 * (nr + col), &scale, sizeof scale);
            memcpy(out + 4 * (2 * nr + col), &sum, sizeof sum);
        }
    }
}

float himae_int8_row(const float *a, size_t kc, float *inv) {
    float top = 0.0f;
    for (size_t j = 0; j < kc; j++) top = fmaxf(top, fabsf(a[j]));
    *inv = top > 0.0f ? HIMAE_INT8_INPUT_MAX / top : 0.0f;
    return top / HIMAE_INT8_INPUT_MAX;
}

size_t himae_packed_size(size_t cin, size_t cout, size_t k, size_t nr) {
    size_t panels = (cout + nr - 1) / nr;
    return panels * nr * (1 + k * cin);
}

/* Panel layout: nr biases, then for j = kk * cin + ci (the channels-last
 * im2col order) nr weights; columns past cout are zero. Weight (n, ci, kk)
 * is read at w[n * s_out + ci * s_in + k0 + kk * s_k], so one packer serves
 * Conv1d, ConvTranspose1d and its phase split. */
void himae_pack_conv(float *dst, const float *w, const float *bias, size_t cin, size_t cout,
                     size_t k, size_t nr, ptrdiff_t s_out, ptrdiff_t s_in, ptrdiff_t k0,
                     ptrdiff_t s_k) {
    size_t kc = k * cin;
    for (size_t n0 = 0; n0 < cout; n0 += nr) {
        float *panel = dst + (n0 / nr) * nr * (1 + kc);
        memset(panel, 0, nr * (1 + kc) * sizeof(float));
        for (size_t n = n0; n < cout && n < n0 + nr; n++) {
            panel[n - n0] = weight(&bias[n]);
            for (size_t ci = 0; ci < cin; ci++)
                for (size_t kk = 0; kk < k; kk++)
                    panel[nr + (kk * cin + ci) * nr + (n - n0)] =
                        weight(&w[(ptrdiff_t)n * s_out + (ptrdiff_t)ci * s_in + k0 + (ptrdiff_t)kk * s_k]);
        }
    }
}

void himae_pack_conv_pairs(float *dst, const float *w, const float *bias, size_t cin, size_t cout,
                           size_t k, size_t stride, size_t nr) {
    const size_t kc = (k + stride) * cin;
    memset(dst, 0, nr * (1 + kc) * sizeof(float));
    for (size_t half = 0; half < 2; half++)
        for (size_t n = 0; n < cout; n++) {
            const size_t col = half * cout + n;
            dst[col] = weight(&bias[n]);
            for (size_t ci = 0; ci < cin; ci++)
                for (size_t kk = 0; kk < k; kk++)
                    dst[nr + ((kk + half * stride) * cin + ci) * nr + col] = weight(&w[(n * cin + ci) * k + kk]);
        }
}

void himae_pack_conv_tail(float *dst, const float *w, size_t cin, size_t cout, size_t k, size_t nr) {
    for (size_t n0 = 0; n0 < cout; n0 += nr) {
        float *panel = dst + (n0 / nr) * nr * (1 + cin);
        memset(panel, 0, nr * (1 + cin) * sizeof(float));
        for (size_t n = n0; n < cout && n < n0 + nr; n++)
            for (size_t ci = 0; ci < cin; ci++) panel[nr + ci * nr + (n - n0)] = weight(&w[(n * cin + ci) * k + k - 1]);
    }
}

/* m <= wide_mr rows (rows of a kc floats apart by a_stride) across all of a
 * conv's panels, several panels per pass where the kernel has a wide form. */
static void gemm_few_rows(const himae_ukernel *uk, size_t m, size_t cout, size_t kc, const float *a,
                          size_t a_stride, const void *packed, size_t panel_size, float *c,
                          const float *res, int gelu) {
    const size_t nr = uk->nr, step = uk->wide ? uk->wide_nc : nr;
    for (size_t n0 = 0; n0 < cout; n0 += step) {
        size_t nc = cout - n0 < step ? cout - n0 : step;
        const void *w = himae_weights_at(uk, packed, (n0 / nr) * panel_size);
        if (uk->wide)
            uk->wide(m, nc, kc, a, a_stride, w, panel_size, c + n0, cout, res ? res + n0 : NULL, cout, gelu);
        else
            uk->fn(m, nc, kc, a, a_stride, w, c + n0, cout, res ? res + n0 : NULL, cout, gelu);
    }
}

void himae_conv_row_head(const himae_conv *conv, float *partial,
                         const float *window, const float *residual) {
    const himae_ukernel *uk = conv->uk;
    /* the row's im2col row is its input rows back to back; the panels' first
     * (k - 1) cin weight rows are taps 0 .. k-2 */
    const size_t kc = (conv->k - 1) * conv->cin;
    gemm_few_rows(uk, 1, conv->cout, kc, window, kc, conv->packed, himae_panel_size(uk, conv->kc), partial,
                  residual, 0);
}

void himae_conv_row_tail(const himae_conv *conv, float *out,
                         const float *window, const float *partial, int gelu) {
    const himae_ukernel *uk = conv->uk;
    const size_t cin = conv->cin;
    gemm_few_rows(uk, 1, conv->cout, cin, window + (conv->k - 1) * cin, cin, conv->tail, himae_panel_size(uk, cin),
                  out, partial, gelu);
}

/* n_out rows of a conv that is not pair-packed, row q's im2col row at
 * a + q * a_stride (kc floats). Outer loop over weight panels so that one
 * panel stays in cache while all output rows stream past it. */
static void gemm_rows(const himae_conv *conv, const himae_ukernel *uk, float *out, const float *a,
                      size_t a_stride, size_t n_out, const float *residual, int gelu) {
    const size_t mr = uk->mr, nr = uk->nr, kc = conv->kc, cout = conv->cout, panel_size = himae_panel_size(uk, kc);
    if (uk->wide && uk->wide_mr >= mr) { /* the wide form takes whole tiles (int8: each row rounded once) */
        for (size_t p = 0; p < n_out; p += mr)
            gemm_few_rows(uk, n_out - p < mr ? n_out - p : mr, cout, kc, a + p * a_stride, a_stride, conv->packed,
                          panel_size, out + p * cout, residual ? residual + p * cout : NULL, gelu);
        return;
    }
    /* A last few rows (all of them in stream mode's short pushes) that fit
     * the wide kernel go through it, several panels per pass. */
    const size_t rest = n_out % mr, tiled = uk->wide && rest <= uk->wide_mr ? n_out - rest : n_out;
    for (size_t n0 = 0; n0 < cout; n0 += nr) {
        const void *panel = himae_weights_at(uk, conv->packed, (n0 / nr) * panel_size);
        size_t nc = cout - n0 < nr ? cout - n0 : nr;
        for (size_t p = 0; p < tiled; p += mr) {
            size_t m = tiled - p < mr ? tiled - p : mr;
            uk->fn(m, nc, kc, a + p * a_stride, a_stride, panel, out + p * cout + n0, cout,
                   residual ? residual + p * cout + n0 : NULL, cout, gelu);
        }
    }
    if (tiled < n_out)
        gemm_few_rows(uk, rest, cout, kc, a + tiled * a_stride, a_stride, conv->packed, panel_size,
                      out + tiled * cout, residual ? residual + tiled * cout : NULL, gelu);
}

/* The input rows are views, never copied: row q's im2col row is its k
 * input rows, consecutive in the channels-last input. */
void himae_conv1d_forward(const himae_conv *conv, float *out, const float *in, size_t n_out,
                          const float *residual, int gelu) {
    const himae_ukernel *uk = conv->uk;
    const size_t mr = uk->mr, cin = conv->cin;
    const float *a0 = in - conv->pad * cin;
    if (conv->pair) {
        /* Row q of this GEMM is output rows 2q and 2q + 1, adjacent in memory. */
        const size_t kc = (conv->k + conv->stride) * cin, a_stride = 2 * conv->stride * cin;
        const size_t width = 2 * conv->cout, pairs = n_out / 2;
        for (size_t q = 0; q < pairs; q += mr) {
            size_t m = pairs - q < mr ? pairs - q : mr;
            uk->fn(m, width, kc, a0 + q * a_stride, a_stride, conv->packed, out + q * width, width,
                   residual ? residual + q * width : NULL, width, gelu);
        }
        if (n_out % 2) /* the last row alone: the first half of one more pair */
            uk->fn(1, conv->cout, kc, a0 + pairs * a_stride, a_stride, conv->packed, out + pairs * width,
                   width, residual ? residual + pairs * width : NULL, width, gelu);
        return;
    }
    gemm_rows(conv, uk, out, a0, conv->stride * cin, n_out, residual, gelu);
}

void himae_conv1d_gathered(const himae_conv *conv, const himae_conv_job *jobs,
                           size_t n_jobs, size_t n_out, int gelu, float *a, float *c, size_t tile_floats) {
    const himae_ukernel *uk = conv->uk;
    const size_t cin = conv->cin, kc = conv->kc, cout = conv->cout;
    if (conv->pair) { /* narrow: its few weights stay in L1 across the jobs, nothing to share */
        for (size_t i = 0; i < n_jobs; i++)
            himae_conv1d_forward(conv, jobs[i].out, jobs[i].in, n_out, jobs[i].residual, gelu);
        return;
    }
    size_t tile = tile_floats / (kc > cout ? kc : cout);
    if (tile > uk->mr) tile -= tile % uk->mr; /* whole micro-kernel tiles */
    const size_t total = n_jobs * n_out, step = conv->stride * cin;
    for (size_t t0 = 0; t0 < total; t0 += tile) {
        const size_t m = total - t0 < tile ? total - t0 : tile;
        const int res = jobs[0].residual != NULL;
        for (size_t t = t0; t < t0 + m; t++) { /* row t: output t % n_out of job t / n_out */
            const himae_conv_job *job = &jobs[t / n_out];
            const size_t r = t % n_out;
            memcpy(a + (t - t0) * kc, job->in - conv->pad * cin + r * step, kc * sizeof(float));
            if (res) memcpy(c + (t - t0) * cout, job->residual + r * cout, cout * sizeof(float));
        }
        gemm_rows(conv, uk, c, a, kc, m, res ? c : NULL, gelu);
        for (size_t t = t0; t < t0 + m; t++)
            memcpy(jobs[t / n_out].out + (t % n_out) * cout, c + (t - t0) * cout, cout * sizeof(float));
    }
}

float himae_gelu_exact(float x) { return (float)(0.5 * x * (1.0 + erf(x * 0.70710678118654752))); }

void himae_conv1d_reference(float *out, const float *in, const float *w, const float *bias,
                            size_t cin, size_t n_in, size_t cout, size_t k, size_t stride,
                            size_t pad, size_t n_out, const float *residual, int gelu) {
    for (size_t co = 0; co < cout; co++)
        for (size_t p = 0; p < n_out; p++) {
            double acc = bias[co];
            for (size_t ci = 0; ci < cin; ci++)
                for (size_t kk = 0; kk < k; kk++) {
                    long long i = (long long)(p * stride + kk) - (long long)pad;
                    if (i >= 0 && i < (long long)n_in)
                        acc += (double)in[ci * n_in + (size_t)i] * w[(co * cin + ci) * k + kk];
                }
            if (residual) acc += residual[co * n_out + p];
            out[co * n_out + p] = gelu ? himae_gelu_exact((float)acc) : (float)acc;
        }
}
