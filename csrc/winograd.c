/* winograd.c - Winograd convolutions over six points: a kernel-5 conv
 * with 6 multiplications per 2 output rows instead of 10 (F(2,5), stride
 * 1), and a kernel-5, stride-2 conv read in row pairs with 6 per 4 output
 * rows instead of 10 (F(4,3)), each as six GEMMs that the micro-kernels run.
 *
 * Derivation (Toom-Cook). m outputs of the correlation
 *   y_i = sum_k g_k d_{i+k}, i < m, k < r, m + r = 7, over the tile d_0..d_5,
 * are the transpose of the linear convolution of an m-term by an r-term
 * polynomial, which is evaluated at the points 0, 1, -1, 2, -2 and infinity
 * (the leading coefficient), multiplied pointwise and interpolated:
 *   y = A^T [(G g) . (B^T d)]
 * with A^T = V_m^T, G = V_r, B^T = V_6^-T, where V_q evaluates a polynomial
 * of q coefficients at the six points. B^T depends on the points only, so
 * both forms share it. Row t of B^T is scaled to integers and row t of G
 * divided by the same factor (4, 6, 6, 24, 24, 1):
 *
 *   B^T = [ 4  0 -5  0  1  0 ]   G[t][k] = p_t^k / s_t (t < 5), G[5][k] = [k = r - 1]
 *         [ 0  4  4 -1 -1  0 ]   A^T[i][t] = p_t^i (t < 5),     A^T[i][5] = [i = m - 1]
 *         [ 0 -4  4  1 -1  0 ]   p = (0, 1, -1, 2, -2), s = (4, 6, 6, 24, 24)
 *         [ 0 -2 -1  2  1  0 ]
 *         [ 0  2 -1 -2  1  0 ]
 *         [ 0  4  0 -5  0  1 ]
 *
 * so the input transform is exact in small integers (sums of at most four
 * terms) and the fractions sit in the weights, rounded once at load.
 *
 * A stride-2, kernel-5 conv is a stride-1, kernel-3 conv over rows of 2 cin
 * (input rows 2j and 2j + 1 side by side, as they lie in the channels-last
 * buffer): y_i = sum_j W_j [x_{2(i+j)-2}, x_{2(i+j)-1}], W_j's halves the
 * taps 2j and 2j + 1 (tap 5, past the kernel, zero). F(4,3) on those rows
 * has the same six points, so the same conditioning as F(2,5). */
#include <string.h>

#include "fpmode.h"
#include "internal.h"

#define POINTS 6
#define TAPS 5 /* the conv's own kernel */

/* A Winograd conv's shape: output rows per tile (m), taps over rows of
 * width floats (r = 7 - m), and the zero rows before row 0 it reads. */
typedef struct {
    size_t m, r, width, pad;
} shape;

static shape shape_of(size_t cin, size_t stride) {
    const size_t m = 2 * stride, r = 7 - m;
    return (shape){m, r, stride * cin, (r - 1) / 2};
}

static size_t tiles_of(shape s, size_t n_out) { return (n_out + s.m - 1) / s.m; }

size_t himae_wino_packed_size(size_t cin, size_t cout, size_t stride, size_t nr) {
    return POINTS * himae_packed_size(shape_of(cin, stride).width, cout, 1, nr) + himae_packed_size(0, cout, 1, nr);
}

size_t himae_wino_work_floats(size_t cin, size_t cout, size_t stride, size_t n_out) {
    const shape s = shape_of(cin, stride);
    return POINTS * tiles_of(s, n_out) * (s.width + cout);
}

size_t himae_wino_rows_read(size_t stride, size_t n_out) {
    const shape s = shape_of(1, stride);
    return (s.m * tiles_of(s, n_out) - s.pad + POINTS - s.m) * stride;
}

/* G[t][k]: point t's power k over the row's scale (the point at infinity
 * takes the leading tap alone). */
static double g_entry(size_t t, size_t k, size_t r) {
    static const double point[POINTS - 1] = {0, 1, -1, 2, -2}, scale[POINTS - 1] = {4, 6, 6, 24, 24};
    if (t == POINTS - 1) return k == r - 1;
    double p = 1;
    for (size_t i = 0; i < k; i++) p *= point[t];
    return p / scale[t];
}

void himae_wino_pack(float *dst, const float *w, const float *bias, size_t cin, size_t cout, size_t stride,
                     size_t nr) {
    const shape s = shape_of(cin, stride);
    const size_t mat = himae_packed_size(s.width, cout, 1, nr);
    /* G_t as himae_pack_conv lays out a kernel-1 conv: per panel of nr
     * columns, nr biases (zero here: the bias is added once, after the
     * output transform), then row c of nr weights, c = e cin + ci for the
     * half e of a row pair, whose tap j is the conv's tap stride j + e. */
    memset(dst, 0, POINTS * mat * sizeof(float));
    for (size_t t = 0; t < POINTS; t++)
        for (size_t n = 0; n < cout; n++) {
            float *col = dst + t * mat + (n / nr) * nr * (1 + s.width) + nr + n % nr;
            for (size_t c = 0; c < s.width; c++) {
                const size_t e = c / cin, ci = c % cin;
                double sum = 0;
                for (size_t j = 0; j < s.r; j++) {
                    const size_t k = stride * j + e;
                    if (k < TAPS) sum += g_entry(t, j, s.r) * himae_flush_subnormal(w[(n * cin + ci) * TAPS + k]);
                }
                col[c * nr] = himae_flush_subnormal((float)sum);
            }
        }
    himae_pack_conv(dst + POINTS * mat, NULL, bias, 0, cout, 1, nr, 0, 0, 0, 0);
}

/* One tile's input transform, every channel: v_t = (B^T d)_t. A pointer
 * per row and per plane, all restrict, so that the loop vectorises. */
static void input_tile(float *restrict v0, float *restrict v1, float *restrict v2,
                       float *restrict v3, float *restrict v4, float *restrict v5,
                       const float *restrict d0, const float *restrict d1, const float *restrict d2,
                       const float *restrict d3, const float *restrict d4, const float *restrict d5,
                       size_t cin) {
    for (size_t c = 0; c < cin; c++) {
        const float e31 = d3[c] - d1[c], e42 = d4[c] - d2[c];
        v0[c] = 4 * d0[c] - 5 * d2[c] + d4[c];
        v1[c] = 4 * (d1[c] + d2[c]) - (d3[c] + d4[c]);
        v2[c] = 4 * (d2[c] - d1[c]) + (d3[c] - d4[c]);
        v3[c] = 2 * e31 + e42;
        v4[c] = e42 - 2 * e31;
        v5[c] = 4 * d1[c] - 5 * d3[c] + d5[c];
    }
}

/* Plane t of v, row p = (B^T d)_t for the tile d_j = in row m p - pad + j. */
static void input_transform(float *v, const float *in, size_t tiles, shape s) {
    const size_t w = s.width, plane = tiles * w;
    for (size_t p = 0; p < tiles; p++) {
        const float *d = in + (s.m * p - s.pad) * w;
        float *vp = v + p * w;
        input_tile(vp, vp + plane, vp + 2 * plane, vp + 3 * plane, vp + 4 * plane, vp + 5 * plane, d,
                   d + w, d + 2 * w, d + 3 * w, d + 4 * w, d + 5 * w, w);
    }
}

/* Output row y (+)= row i of A^T m, every channel: m0 (first row only),
 * m1 -/+ m2, a (m3 -/+ m4) with a = 2^i, and m5 (last row only); the zero
 * coefficients multiply finite values, so they add exact zeros. */
#define OUTPUT_ROW(op, pm) \
    for (size_t c = 0; c < cout; c++) y[c] op first * m0[c] + (m1[c] pm m2[c]) + a * (m3[c] pm m4[c]) + last * m5[c]
static void output_row(float *restrict y, size_t i, size_t m, int add, const float *restrict m0,
                       const float *restrict m1, const float *restrict m2, const float *restrict m3,
                       const float *restrict m4, const float *restrict m5, size_t cout) {
    const float first = i == 0, last = i == m - 1, a = (float)(1u << i);
    if (add && i % 2) OUTPUT_ROW(+=, -);
    else if (add) OUTPUT_ROW(+=, +);
    else if (i % 2) OUTPUT_ROW(=, -);
    else OUTPUT_ROW(=, +);
}
#undef OUTPUT_ROW

/* out rows m p + i (< n_out) (+)= A^T m: the conv without its bias. */
static void output_transform(float *out, const float *m, size_t tiles, size_t cout, size_t n_out, shape s,
                             int add) {
    const size_t plane = tiles * cout;
    for (size_t r = 0; r < n_out; r++) {
        const float *mp = m + r / s.m * cout;
        output_row(out + r * cout, r % s.m, s.m, add, mp, mp + plane, mp + 2 * plane, mp + 3 * plane,
                   mp + 4 * plane, mp + 5 * plane, cout);
    }
}

void himae_wino_forward(const himae_wino *wino, const himae_ukernel *uk, float *out, const float *in,
                        size_t n_out, int residual, int gelu, float *work) {
    const shape s = shape_of(wino->cin, wino->stride);
    const size_t cout = wino->cout, nr = uk->nr, tiles = tiles_of(s, n_out);
    const size_t mat = himae_packed_size(s.width, cout, 1, nr);
    float *v = work, *m = work + POINTS * tiles * s.width;
    input_transform(v, in, tiles, s);
    for (size_t t = 0; t < POINTS; t++) {
        const himae_conv gemm = {s.width, cout, 1, 1, 0, s.width, himae_weights_at(uk, wino->packed, t * mat), 0, NULL, uk};
        himae_conv1d_forward(&gemm, m + t * tiles * cout, v + t * tiles * s.width, tiles, NULL, 0);
    }
    output_transform(out, m, tiles, cout, n_out, s, residual);
    /* Bias and GELU by the micro-kernel's own epilogue: a call with kc = 0
     * computes act(bias + res), here res = the conv (+ residual) in out,
     * with the very GELU of the GEMM path. */
    const void *bias = himae_weights_at(uk, wino->packed, POINTS * mat);
    for (size_t n0 = 0; n0 < cout; n0 += nr) {
        const size_t nc = cout - n0 < nr ? cout - n0 : nr;
        for (size_t p = 0; p < n_out; p += uk->mr) {
            const size_t rows = n_out - p < uk->mr ? n_out - p : uk->mr;
            float *c = out + p * cout + n0;
            uk->fn(rows, nc, 0, c, cout, himae_weights_at(uk, bias, n0), c, cout, c, cout, gelu);
        }
    }
}
