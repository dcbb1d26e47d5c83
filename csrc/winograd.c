/* winograd.c - Winograd F(2,5): a stride-1, kernel-5, padding-2 conv with
 * 6 multiplications per 2 output rows instead of 10, as six GEMMs that the
 * micro-kernels run.
 *
 * Derivation (Toom-Cook). Two outputs of the correlation
 *   y_i = sum_k g_k d_{i+k}, i = 0, 1, k = 0..4, over the tile d_0..d_5,
 * are the transpose of the linear convolution of a 2-term by a 5-term
 * polynomial, which is evaluated at the points 0, 1, -1, 2, -2 and infinity
 * (the leading coefficient), multiplied pointwise and interpolated:
 *   y = A^T [(G g) . (B^T d)]
 * with A^T = V_2^T, G = V_5, B^T = V_6^-T, where V_m evaluates a polynomial
 * of m coefficients at the six points. Row t of B^T is scaled to integers
 * and row t of G divided by the same factor (4, 6, 6, 24, 24, 1):
 *
 *   B^T = [ 4  0 -5  0  1  0 ]   G = [ 1/4     0     0     0    0  ]
 *         [ 0  4  4 -1 -1  0 ]       [ 1/6   1/6   1/6   1/6  1/6  ]
 *         [ 0 -4  4  1 -1  0 ]       [ 1/6  -1/6   1/6  -1/6  1/6  ]
 *         [ 0 -2 -1  2  1  0 ]       [ 1/24  1/12  1/6   1/3  2/3  ]
 *         [ 0  2 -1 -2  1  0 ]       [ 1/24 -1/12  1/6  -1/3  2/3  ]
 *         [ 0  4  0 -5  0  1 ]       [ 0     0     0     0    1    ]
 *
 *   A^T = [ 1  1  1  1  1  0 ]
 *         [ 0  1 -1  2 -2  1 ]
 *
 * so the input transform is exact in small integers (sums of at most four
 * terms) and the fractions sit in the weights, rounded once at load. */
#include <string.h>

#include "fpmode.h"
#include "internal.h"

#define TAPS 5
#define POINTS 6

size_t himae_wino_packed_size(size_t cin, size_t cout, size_t nr) {
    return POINTS * himae_packed_size(cin, cout, 1, nr) + himae_packed_size(0, cout, 1, nr);
}

size_t himae_wino_work_floats(size_t cin, size_t cout, size_t n_out) {
    return POINTS * ((n_out + 1) / 2) * (cin + cout);
}

void himae_wino_pack(float *dst, const float *w, const float *bias, size_t cin, size_t cout, size_t nr) {
    static const double g[POINTS][TAPS] = {
        {1.0 / 4, 0, 0, 0, 0},
        {1.0 / 6, 1.0 / 6, 1.0 / 6, 1.0 / 6, 1.0 / 6},
        {1.0 / 6, -1.0 / 6, 1.0 / 6, -1.0 / 6, 1.0 / 6},
        {1.0 / 24, 1.0 / 12, 1.0 / 6, 1.0 / 3, 2.0 / 3},
        {1.0 / 24, -1.0 / 12, 1.0 / 6, -1.0 / 3, 2.0 / 3},
        {0, 0, 0, 0, 1},
    };
    const size_t mat = himae_packed_size(cin, cout, 1, nr);
    /* G_t as himae_pack_conv lays out a kernel-1 conv: per panel of nr
     * columns, nr biases (zero here: the bias is added once, after the
     * output transform), then row ci of nr weights. */
    memset(dst, 0, POINTS * mat * sizeof(float));
    for (size_t t = 0; t < POINTS; t++)
        for (size_t n = 0; n < cout; n++) {
            float *col = dst + t * mat + (n / nr) * nr * (1 + cin) + nr + n % nr;
            for (size_t ci = 0; ci < cin; ci++) {
                double s = 0;
                for (size_t k = 0; k < TAPS; k++) s += g[t][k] * himae_flush_subnormal(w[(n * cin + ci) * TAPS + k]);
                col[ci * nr] = himae_flush_subnormal((float)s);
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

/* Plane t of v, row p = (B^T d)_t for the tile d_j = in row 2p - 2 + j. */
static void input_transform(float *v, const float *in, size_t tiles, size_t cin) {
    const size_t plane = tiles * cin;
    for (size_t p = 0; p < tiles; p++) {
        const float *d = in + 2 * p * cin - 2 * cin;
        float *vp = v + p * cin;
        input_tile(vp, vp + plane, vp + 2 * plane, vp + 3 * plane, vp + 4 * plane, vp + 5 * plane, d,
                   d + cin, d + 2 * cin, d + 3 * cin, d + 4 * cin, d + 5 * cin, cin);
    }
}

/* Output row y (+)= row i of A^T m, every channel (i = 0: m0 + m1 + m2 + m3
 * + m4; i = 1: m1 - m2 + 2 (m3 - m4) + m5). */
static void output_row(float *restrict y, int i, int add, const float *restrict m0,
                       const float *restrict m1, const float *restrict m2, const float *restrict m3,
                       const float *restrict m4, const float *restrict m5, size_t cout) {
    if (i == 0 && add)
        for (size_t c = 0; c < cout; c++) y[c] += m0[c] + (m1[c] + m2[c]) + (m3[c] + m4[c]);
    else if (i == 0)
        for (size_t c = 0; c < cout; c++) y[c] = m0[c] + (m1[c] + m2[c]) + (m3[c] + m4[c]);
    else if (add)
        for (size_t c = 0; c < cout; c++) y[c] += (m1[c] - m2[c]) + 2 * (m3[c] - m4[c]) + m5[c];
    else
        for (size_t c = 0; c < cout; c++) y[c] = (m1[c] - m2[c]) + 2 * (m3[c] - m4[c]) + m5[c];
}

/* out rows 2p, 2p + 1 (< n_out) (+)= A^T m: the conv without its bias. */
static void output_transform(float *out, const float *m, size_t tiles, size_t cout, size_t n_out,
                             int add) {
    const size_t plane = tiles * cout;
    for (size_t r = 0; r < n_out; r++) {
        const float *mp = m + r / 2 * cout;
        output_row(out + r * cout, (int)(r % 2), add, mp, mp + plane, mp + 2 * plane, mp + 3 * plane,
                   mp + 4 * plane, mp + 5 * plane, cout);
    }
}

void himae_wino_forward(const himae_wino *wino, const himae_ukernel *uk, float *out, const float *in,
                        size_t n_out, int residual, int gelu, float *work) {
    const size_t cin = wino->cin, cout = wino->cout, nr = uk->nr, tiles = (n_out + 1) / 2;
    const size_t mat = himae_packed_size(cin, cout, 1, nr);
    float *v = work, *m = work + POINTS * tiles * cin;
    input_transform(v, in, tiles, cin);
    for (size_t t = 0; t < POINTS; t++) {
        const himae_conv gemm = {cin, cout, 1, 1, 0, cin, himae_weights_at(uk, wino->packed, t * mat), 0, NULL};
        himae_conv1d_forward(&gemm, uk, m + t * tiles * cout, v + t * tiles * cin, tiles, NULL, 0);
    }
    output_transform(out, m, tiles, cout, n_out, residual);
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
