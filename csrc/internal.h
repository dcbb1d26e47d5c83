/* internal.h - types shared by the C core's source files (not public). */
#ifndef HIMAE_INTERNAL_H
#define HIMAE_INTERNAL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "himae.h"

/* One GEMM micro-kernel call computes an mr x nc tile of
 *   c[p][n] = act(bias[n] + sum_j a[p][j] * w[j][n] (+ res[p][n]))
 * for p < mr <= MR rows and n < nc <= NR columns, where row p of a starts at
 * a + p * a_stride (kc floats) and w is one packed panel: NR biases, then
 * kc rows of NR weights (zero beyond the real columns). res may alias c.
 * With kc = 0 it is the epilogue alone, act(bias[n] + res[p][n]): only the
 * panel's biases are read. The panel's elements are f32 or bf16, as the
 * kernel's precision says; everything else is f32 (a bf16dot kernel rounds
 * a's elements to bf16 as it reads them, and may read the first kc rows of
 * a longer panel only for even kc). */
typedef void (*himae_gemm_fn)(size_t mr, size_t nc, size_t kc, const float *a, size_t a_stride,
                              const void *w, float *c, size_t c_stride, const float *res,
                              size_t res_stride, int gelu);

/* The same for mr <= wide_mr rows across several consecutive panels (one
 * every w_stride elements): columns [0, nc), nc <= wide_nc. A tile of one to
 * three rows has too few accumulators to hide the FMA latency, so these
 * rows take several panels in one pass instead. Every output keeps the
 * summation order of himae_gemm_fn (bias, then j = 0 .. kc-1), so results
 * do not depend on which of the two computed a row. */
typedef void (*himae_gemm_wide_fn)(size_t mr, size_t nc, size_t kc, const float *a, size_t a_stride,
                                   const void *w, size_t w_stride, float *c, size_t c_stride,
                                   const float *res, size_t res_stride, int gelu);

typedef struct himae_ukernel {
    const char *name; /* <precision>_gemm_ukernel__<isa>_<MR>x<NR> */
    enum himae_isa isa;
    enum himae_precision precision;
    size_t wbytes; /* bytes of one packed weight: 4 (f32), 2 (bf16, bf16dot) or 1 (int8) */
    size_t mr, nr;
    himae_gemm_fn fn;
    /* NULL where one panel at a time is as fast (the scalar kernel). */
    himae_gemm_wide_fn wide;
    size_t wide_mr, wide_nc;
} himae_ukernel;

/* An int8 panel (nr columns, kc rows): nr f32 biases, nr f32 scales (a
 * column's weights are its int8 values times its scale), nr int32 sums of
 * each column's int8 weights (for a kernel that offsets its inputs to
 * unsigned bytes and takes the offset's products back out), then the rows
 * in groups of four, each column's four weights side by side in one 32-bit
 * word, as a four-way dot-product instruction multiplies them with four
 * inputs; rows past kc up to a multiple of four are zero. */
#define HIMAE_INT8_HEAD 12 /* bytes per column before the weights */
/* An int8 kernel rounds its rows into a buffer on the stack, once for all
 * panels: convs with longer rows (k cin) run on the f32 kernel (model.c).
 * Its wide form takes whole tiles and every column of a conv at once. */
#define HIMAE_INT8_MAX_KC 2048
#define HIMAE_INT8_MAX_COLUMNS 8192
static inline size_t himae_int8_slot(size_t j, size_t n, size_t nr) {
    return HIMAE_INT8_HEAD * nr + (j - j % 4) * nr + 4 * n + j % 4;
}

/* Weights (of uk->wbytes bytes) of one packed panel of kc rows: nr biases
 * and kc rows of nr, or an int8 panel's bytes. Every panel of a conv has
 * this size, and a call over its first kc' rows reads them in place
 * (for int8, kc' a multiple of four). */
static inline size_t himae_int8_panel_bytes(size_t nr, size_t kc) {
    return HIMAE_INT8_HEAD * nr + (kc + 3) / 4 * 4 * nr;
}
static inline size_t himae_panel_size(const himae_ukernel *uk, size_t kc) {
    return uk->precision == HIMAE_INT8 ? himae_int8_panel_bytes(uk->nr, kc) : uk->nr * (1 + kc);
}

/* Element `i` of packed weights for this kernel (offsets count weights,
 * whatever their size). */
static inline const void *himae_weights_at(const himae_ukernel *uk, const void *packed, size_t i) {
    return (const char *)packed + i * uk->wbytes;
}

/* Where a bf16 panel keeps column n of a row of nr: columns n and n + nr/2
 * share one 32-bit word, n in its low half. A kernel widens a vector of such
 * words in two instructions, a shift left by 16 (columns n) and a mask of
 * the high halves (columns n + nr/2), each exactly the f32 of its bf16. */
static inline size_t himae_bf16_slot(size_t n, size_t nr) {
    return n < nr / 2 ? 2 * n : 2 * (n - nr / 2) + 1;
}

/* f32 -> bf16, rounded to nearest even (weights are finite). */
uint16_t himae_to_bf16(float x);
/* n packed f32 weights (rows of nr, as the packers below write them) as a
 * bf16 panel: each rounded, each row laid out by himae_bf16_slot. */
void himae_pack_bf16(uint16_t *dst, const float *src, size_t n, size_t nr);

/* Where a bf16dot panel (nr biases, then kc weight rows) keeps row j's
 * column n: rows go in pairs (2q, 2q + 1), each column's two weights side by
 * side in one 32-bit word, as a dot-product instruction multiplies them
 * with a pair of inputs; a last row without a partner (odd kc) is plain.
 * Either way pair q starts at element nr + 2 q nr, so a kernel finds row j
 * at nr + j nr, and a call over the first kc' < kc rows reads the same
 * place when kc' is even. */
static inline size_t himae_bf16dot_slot(size_t j, size_t n, size_t nr, size_t kc) {
    if (j + 1 == kc && kc % 2) return nr + j * nr + n;
    return nr + (j - j % 2) * nr + 2 * n + j % 2;
}
/* n packed f32 weights in panels of nr (1 + kc) as bf16dot panels: biases
 * rounded in place, weight rows laid out by himae_bf16dot_slot. */
void himae_pack_bf16dot(uint16_t *dst, const float *src, size_t n, size_t nr, size_t kc);
/* n packed f32 weights in panels of nr (1 + kc) as int8 panels (their
 * panels' sizes in bytes, himae_panel_size): each column's scale is its
 * largest magnitude over 127 (1 for a zero column), each weight its value
 * over the scale rounded to the nearest integer (ties to even). */
void himae_pack_int8(uint8_t *dst, const float *src, size_t n, size_t nr, size_t kc);
/* int8 weights span +-127. Inputs span +-63, 7 bits: offset by 64 (1 to
 * 127), an input times a weight, two products summed, then fits the 16 bits
 * of AVX2's VPMADDUBSW exactly (2 x 127 x 127 < 32768), so every x86 core
 * with AVX2 sums the same integers as VNNI and SDOT do. */
#define HIMAE_INT8_WEIGHT_MAX 127.0f
#define HIMAE_INT8_INPUT_MAX 63.0f
static inline int32_t himae_int8_round(float x, float inv, float top) {
    const float y = x * inv;
    return (int32_t)lrintf(y < -top ? -top : y > top ? top : y);
}
/* A row of kc f32 GEMM inputs as an int8 kernel takes it: its scale (the
 * largest magnitude over 63; 0 for a zero row) is returned, and each input
 * x becomes himae_int8_input(x, *inv), *inv = 63 over that magnitude (0 for
 * a zero row). The one statement of the rounding: SIMD kernels find the same
 * magnitude (a maximum is exact) and round as lrintf does, to nearest even. */
float himae_int8_row(const float *a, size_t kc, float *inv);
static inline int32_t himae_int8_input(float x, float inv) { return himae_int8_round(x, inv, HIMAE_INT8_INPUT_MAX); }
static inline int32_t himae_int8_weight(float x, float inv) { return himae_int8_round(x, inv, HIMAE_INT8_WEIGHT_MAX); }

/* An ISA's f32 and bf16 kernels, himae_ukernel_<sym>[precision] (the
 * bf16dot and int8 entries left empty: an ISA with one defines it apart), from the
 * file's always-inline gemm(BF, ...) and gemm_wide(BF, ...), BF = 1 for
 * bf16 panels: one source for both, so they differ only in the loads. */
#define HIMAE_UKERNELS(sym, label, isa_enum, MR_, NR_, WIDE_MR, WIDE_NC)                                 \
    static void gemm_f32(size_t mr, size_t nc, size_t kc, const float *a, size_t as, const void *w,     \
                         float *c, size_t cs, const float *res, size_t rs, int act) {                   \
        gemm(0, mr, nc, kc, a, as, w, c, cs, res, rs, act);                                             \
    }                                                                                                   \
    static void gemm_bf16(size_t mr, size_t nc, size_t kc, const float *a, size_t as, const void *w,    \
                          float *c, size_t cs, const float *res, size_t rs, int act) {                  \
        gemm(1, mr, nc, kc, a, as, w, c, cs, res, rs, act);                                             \
    }                                                                                                   \
    static void wide_f32(size_t mr, size_t nc, size_t kc, const float *a, size_t as, const void *w,     \
                         size_t ws, float *c, size_t cs, const float *res, size_t rs, int act) {        \
        gemm_wide(0, mr, nc, kc, a, as, w, ws, c, cs, res, rs, act);                                    \
    }                                                                                                   \
    static void wide_bf16(size_t mr, size_t nc, size_t kc, const float *a, size_t as, const void *w,    \
                          size_t ws, float *c, size_t cs, const float *res, size_t rs, int act) {       \
        gemm_wide(1, mr, nc, kc, a, as, w, ws, c, cs, res, rs, act);                                    \
    }                                                                                                   \
    const himae_ukernel sym[HIMAE_PRECISION_COUNT] = {                                                  \
        {"f32_gemm_ukernel__" label, isa_enum, HIMAE_F32, 4, MR_, NR_, gemm_f32, wide_f32, WIDE_MR, WIDE_NC}, \
        {"bf16_gemm_ukernel__" label, isa_enum, HIMAE_BF16, 2, MR_, NR_, gemm_bf16, wide_bf16, WIDE_MR,  \
         WIDE_NC}}

/* F(n) for n = 1, 2, 3, or 4 and above, a constant where F is expanded. */
#define HIMAE_ONE_TO_FOUR(F, n) \
    switch (n) {                \
    case 1: F(1); break;        \
    case 2: F(2); break;        \
    case 3: F(3); break;        \
    default: F(4); break;       \
    }

/* WIDE(R, P) for mr = R rows (1-3) by P = ceil(nc / nr) panels (1-4), each
 * a constant where the wide kernel is expanded, so its loops unroll: the
 * one dispatch of every ISA's wide tile shapes. */
#define HIMAE_WIDE_SHAPES(WIDE, mr, nc, nr)                       \
    switch ((mr) * 4 + ((nc) + (nr) - 1) / (nr)) {                \
    case 5: WIDE(1, 1); break;                                    \
    case 6: WIDE(1, 2); break;                                    \
    case 7: WIDE(1, 3); break;                                    \
    case 8: WIDE(1, 4); break;                                    \
    case 9: WIDE(2, 1); break;                                    \
    case 10: WIDE(2, 2); break;                                   \
    case 11: WIDE(2, 3); break;                                   \
    case 12: WIDE(2, 4); break;                                   \
    case 13: WIDE(3, 1); break;                                   \
    case 14: WIDE(3, 2); break;                                   \
    case 15: WIDE(3, 3); break;                                   \
    default: WIDE(3, 4); break;                                   \
    }

/* The micro-kernel for an ISA and precision, or NULL when it is not built
 * in or (bf16dot) this CPU lacks the instructions it needs. */
const himae_ukernel *himae_ukernel_for(enum himae_isa isa, enum himae_precision precision);

/* A convolution over a channels-last signal, weights packed for one kernel.
 * Input row i (cin floats) sits at in + i * cin; rows [-pad, 0) and past the
 * end must hold zeros (activation buffers keep `pad` zero rows on each side). */
typedef struct himae_conv {
    size_t cin, cout, k, stride, pad;
    size_t kc;            /* k * cin: one im2col row */
    const void *packed;   /* ceil(cout / NR) panels of (NR + kc * NR) weights */
    /* 1: a narrow conv (2 cout <= NR) packed by himae_pack_conv_pairs, whose
     * output rows are computed two at a time so no panel column is wasted.
     * Its input must hold `stride` more zero rows after the usual padding. */
    size_t pair;
    /* The last tap alone, panels of (NR zero biases + cin * NR) weights, for
     * splitting one output row in two (himae_conv_row_head / _tail); NULL
     * where the conv is never split (see stream.c). */
    const void *tail;
    /* The kernel its weights are packed for, which runs it: a model's
     * level-0 convs stay f32 in a reduced-precision model (model.c). */
    const himae_ukernel *uk;
} himae_conv;

/* Every packer below stores subnormal weights as zero (himae_flush_subnormal,
 * fpmode.h): the one place where a model's weights are materialised. */

/* Weights (packed elements) a conv takes for a kernel with NR columns. The
 * packers below write f32; a bf16 model converts each packed block once at
 * load (model.c). */
size_t himae_packed_size(size_t cin, size_t cout, size_t k, size_t nr);
/* Pack weights and bias (cout) into dst; weight (n, ci, kk) is
 * w[n * s_out + ci * s_in + k0 + kk * s_k] (Conv1d (cout, cin, k):
 * s_out = cin * k, s_in = k, k0 = 0, s_k = 1). */
void himae_pack_conv(float *dst, const float *w, const float *bias, size_t cin, size_t cout,
                     size_t k, size_t nr, ptrdiff_t s_out, ptrdiff_t s_in, ptrdiff_t k0,
                     ptrdiff_t s_k);

/* Pack Conv1d weights (cout, cin, k) for output rows in pairs: one panel
 * whose columns [0, cout) give row 2q and [cout, 2 cout) row 2q + 1, over
 * k + stride taps (the second half's shifted by stride). nr >= 2 cout;
 * himae_packed_size(cin, 2 cout, k + stride, nr) floats. */
void himae_pack_conv_pairs(float *dst, const float *w, const float *bias, size_t cin, size_t cout,
                           size_t k, size_t stride, size_t nr);

/* out (n_out rows of cout) = act(conv(in) + bias (+ residual)). */
void himae_conv1d_forward(const himae_conv *conv, float *out, const float *in, size_t n_out,
                          const float *residual, int gelu);

/* The same rows of one conv over several inputs (a group of streams in
 * lockstep, streams.c): job i computes n_out rows from its own in, out and
 * residual as himae_conv1d_forward would. The jobs' im2col rows are copied
 * into `a` and run as one GEMM (outputs through `c`, then copied to each
 * job), tile_floats floats of each at a time, so each weight panel is read
 * once per tile instead of once per job; tile_floats must hold one row
 * (kc and cout floats). Pair-packed convs, narrow enough to stay in L1, run
 * job by job. Every output keeps its summation order, so the results are
 * the bits that himae_conv1d_forward gives each job. */
typedef struct himae_conv_job {
    const float *in;
    float *out;
    const float *residual;
} himae_conv_job;
void himae_conv1d_gathered(const himae_conv *conv, const himae_conv_job *jobs,
                           size_t n_jobs, size_t n_out, int gelu, float *a, float *c, size_t tile_floats);

/* Pack the last tap of Conv1d weights (cout, cin, k) with zero biases:
 * himae_packed_size(cin, cout, 1, nr) floats. */
void himae_pack_conv_tail(float *dst, const float *w, size_t cin, size_t cout, size_t k, size_t nr);
/* One output row of a conv with a tail (not pair-packed) in two steps, for a
 * live stream whose newest input row completes it: head, while that row is
 * still to come, partial = bias + taps 0 .. k-2 (+ residual), no activation;
 * tail, once it has come, out = act(last tap + partial). window points at
 * the row's first input row (its k input rows are consecutive). */
void himae_conv_row_head(const himae_conv *conv, float *partial,
                         const float *window, const float *residual);
void himae_conv_row_tail(const himae_conv *conv, float *out,
                         const float *window, const float *partial, int gelu);

/* Winograd convolutions (winograd.c), kernel 5, padding 2, as six GEMMs of
 * kernel 1 over transformed tiles of 6 input rows: stride 1 by F(2,5) (each
 * tile gives 2 output rows: 6 multiplications where the direct conv has
 * 10), stride 2 by F(4,3) over rows of 2 cin (4 output rows: 6 where the
 * direct conv has 10). packed: 6 matrices G_t as kernel-1 panels (zero
 * bias), then the bias alone as panels of nr (himae_wino_packed_size
 * weights in all). */
typedef struct himae_wino {
    size_t cin, cout, stride;
    const void *packed;
} himae_wino;

size_t himae_wino_packed_size(size_t cin, size_t cout, size_t stride, size_t nr);
/* Work floats himae_wino_forward needs for n_out output rows. */
size_t himae_wino_work_floats(size_t cin, size_t cout, size_t stride, size_t n_out);
/* Input rows, from row 0 on, that himae_wino_forward reads for n_out
 * output rows: those past the input's own must be zero. */
size_t himae_wino_rows_read(size_t stride, size_t n_out);
/* Transform and pack Conv1d weights (cout, cin, 5) and bias into dst
 * (f32, himae_wino_packed_size floats). */
void himae_wino_pack(float *dst, const float *w, const float *bias, size_t cin, size_t cout, size_t stride,
                     size_t nr);
/* out (n_out rows of cout) = act(conv(in) + bias (+ out's rows when
 * residual: the encoder's skip branch, added in place)), for channels-last
 * in with 2 zero rows before it and zero rows after it up to
 * himae_wino_rows_read. work: himae_wino_work_floats. */
void himae_wino_forward(const himae_wino *wino, const himae_ukernel *uk, float *out, const float *in,
                        size_t n_out, int residual, int gelu, float *work);

/* Naive reference: channels-first in (cin, n_in), PyTorch weights
 * (cout, cin, k), zero padding; out (cout, n_out). Double accumulation,
 * exact GELU. For tests only. */
void himae_conv1d_reference(float *out, const float *in, const float *w, const float *bias,
                            size_t cin, size_t n_in, size_t cout, size_t k, size_t stride,
                            size_t pad, size_t n_out, const float *residual, int gelu);
float himae_gelu_exact(float x);

/* The model's own packed encoder convs and micro-kernel, shared with the
 * stream engine (which must not outlive the model). Pair-packed convs
 * (conv->pair) read `stride` zero rows past their input's padding. */
enum himae_encoder_part { HIMAE_CONV1, HIMAE_CONV2, HIMAE_SKIP };
const himae_conv *himae_model_encoder_conv(const himae_model *model, int level, enum himae_encoder_part part);
const himae_ukernel *himae_model_ukernel(const himae_model *model);
/* CRC32 footer of the file the model was loaded from: identifies its weights. */
uint32_t himae_model_file_crc(const himae_model *model);

/* Counted allocation: every heap allocation of the core goes through here. */
void *himae_malloc(size_t n);
void himae_free_mem(void *p);

/* GELU = x/2 (1 + erf(x / sqrt 2)), erf by Abramowitz & Stegun 7.1.26
 * (|error| < 1.5e-7; GELU within 5e-7 of the exact one on [-10, 10]). */
#define HIMAE_GELU_P 0.3275911f
#define HIMAE_GELU_A1 0.254829592f
#define HIMAE_GELU_A2 (-0.284496736f)
#define HIMAE_GELU_A3 1.421413741f
#define HIMAE_GELU_A4 (-1.453152027f)
#define HIMAE_GELU_A5 1.061405429f
#define HIMAE_SQRT1_2 0.70710678118654752f

/* exp(y) on y <= 0 as 2^n * poly(r), r = y - n ln2 in [-ln2/2, ln2/2]:
 * shared constants for the SIMD versions. One float ln2 suffices: its error
 * moves r by 1.9e-9 n, past 1e-7 only for n < -52, where exp(y) < 1e-15.
 * poly = 1 + r + C2 r^2 + ... + C5 r^5, fitted for least maximum relative
 * error (1.1e-7) on that interval. A relative error e of exp moves the GELU
 * by at most 0.17 e (the peak of x erfc(x / sqrt 2) / 2), under 2e-8. */
#define HIMAE_EXP_LOG2E 1.44269504088896341f
#define HIMAE_EXP_LN2 0.693147180559945309f
#define HIMAE_EXP_MAGIC 12582912.0f /* 1.5 * 2^23: y log2e + this rounds to an integer */
#define HIMAE_EXP_MIN (-87.0f)
#define HIMAE_EXP_C2 4.999923184e-01f
#define HIMAE_EXP_C3 1.666711455e-01f
#define HIMAE_EXP_C4 4.189010662e-02f
#define HIMAE_EXP_C5 8.312512480e-03f

#endif
