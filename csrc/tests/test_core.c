/* test_core.c - C-level tests of the core, run under ASan/UBSan and (cross-
 * compiled) under qemu-aarch64:
 *   test_core MANIFEST [--no-units] [[--window-only | --checks LIST] MODEL...]
 * MANIFEST lines are "path<TAB>expected message prefix" (empty: valid file).
 * --no-units skips the corpus and kernel checks; --checks names the stream
 * checks (stream,shared,group,fpmode) the next model gets, so one model's
 * checks can be split over processes (under an emulator, one per core).
 * Checks: every corpus file loads or fails with its message; mutated copies
 * of valid files never crash the loader; every conv shape on every ISA this
 * CPU has matches the naive reference, and rows give the same bits however
 * they are grouped into kernel calls; Winograd F(2,5) matches the reference
 * on every ISA; every valid model's encoder matches a
 * naive channels-first encoder on random windows, without allocating; stream
 * mode, fed in random chunks (state saved and restored midway), matches the
 * naive encoder over the whole signal, without allocating; a group of
 * streams gives the bits of separate streams; subnormal weights
 * load as zeros, subnormal inputs read as zeros, no output is subnormal and
 * every call leaves the caller's floating-point mode as it was; the probe
 * heads on every f32 kernel match their double arithmetic. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../fpmode.h"
#include "../heads.h"
#include "../internal.h"
#include "../modelfile.h"
#include "../stream.h"
#include "../streams.h"

static int failures;

#define CHECK(cond, ...)                  \
    do {                                  \
        if (!(cond)) {                    \
            failures++;                   \
            printf("FAIL: " __VA_ARGS__); \
            printf("\n");                 \
        }                                 \
    } while (0)

static uint32_t rng_state = 12345;
static uint32_t rng(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}
static float frand(void) { return (float)(rng() % 2000001) / 1000000.0f - 1.0f; }

/* Every micro-kernel this CPU runs, i < N_KERNELS: each ISA's f32 and bf16
 * builds and its bf16dot kernel where it has one (NULL for the rest). */
#define N_KERNELS (HIMAE_ISA_COUNT * HIMAE_PRECISION_COUNT)
static const himae_ukernel *kernel_at(int i) {
    const enum himae_isa isa = (enum himae_isa)(i / HIMAE_PRECISION_COUNT);
    return himae_isa_supported(isa) ? himae_ukernel_for(isa, (enum himae_precision)(i % HIMAE_PRECISION_COUNT)) : NULL;
}

/* Whether whole-model runs may skip this kernel: the scalar bf16dot or
 * int8 kernel where a SIMD one of its precision exists (every shape of conv
 * still checks it). It states the SIMD kernels' arithmetic one element at a
 * time, slowly, and under qemu most of all. */
static int covered_elsewhere(const himae_ukernel *uk) {
    if (uk->isa != HIMAE_ISA_SCALAR || (uk->precision != HIMAE_BF16DOT && uk->precision != HIMAE_INT8)) return 0;
    for (int isa = 1; isa < HIMAE_ISA_COUNT; isa++)
        if (himae_isa_supported((enum himae_isa)isa) && himae_ukernel_for((enum himae_isa)isa, uk->precision)) return 1;
    return 0;
}

/* For a bf16 or bf16dot kernel, weights rounded as it will hold them, so
 * that the reference sees the very weights the kernel multiplies (int8 has
 * a reference of its own, int8_reference). */
static void as_kernel_rounds(const himae_ukernel *uk, float *x, size_t n) {
    if (uk->precision != HIMAE_BF16 && uk->precision != HIMAE_BF16DOT) return;
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)himae_to_bf16(x[i]) << 16;
        memcpy(&x[i], &u, sizeof u);
    }
}

/* For a bf16dot kernel, inputs rounded as it reads them (f32 and bf16
 * kernels read them as they are). */
static void as_kernel_reads(const himae_ukernel *uk, float *x, size_t n) {
    if (uk->precision == HIMAE_BF16DOT) as_kernel_rounds(uk, x, n);
}

/* Packed f32 weights (panels of kc rows) in the kernel's own precision and
 * layout (malloc'd). */
static void *kernel_weights(const himae_ukernel *uk, const float *packed, size_t n, size_t kc) {
    void *w = malloc(n / (uk->nr * (1 + kc)) * himae_panel_size(uk, kc) * uk->wbytes);
    if (uk->precision == HIMAE_INT8)
        himae_pack_int8(w, packed, n, uk->nr, kc);
    else if (uk->precision == HIMAE_BF16DOT)
        himae_pack_bf16dot(w, packed, n, uk->nr, kc);
    else if (uk->precision == HIMAE_BF16)
        himae_pack_bf16(w, packed, n, uk->nr);
    else
        memcpy(w, packed, n * sizeof(float));
    return w;
}

static uint8_t *read_file(const char *path, size_t *size) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
    *size = fread(buf, 1, (size_t)n, fp);
    fclose(fp);
    return buf;
}

/* Relative L2 and max abs difference of got vs want. */
static void compare(const char *what, const float *got, const float *want, size_t n, double tol_rel,
                    double tol_abs) {
    double num = 0, den = 0, worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - want[i];
        num += d * d;
        den += (double)want[i] * want[i];
        if (fabs(d) > worst || isnan(d)) worst = isnan(d) ? INFINITY : fabs(d);
    }
    double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    /* Outputs that are all tiny (GELU of negatives) make relative L2 noise. */
    CHECK(worst <= tol_abs && (rel <= tol_rel || worst <= 1e-6), "%s: relative L2 %.3g, max abs %.3g",
          what, rel, worst);
}

static void test_corpus(const char *manifest) {
    FILE *fp = fopen(manifest, "r");
    CHECK(fp != NULL, "cannot open manifest %s", manifest);
    if (!fp) return;
    char line[2048];
    int files = 0;
    while (fgets(line, sizeof line, fp)) {
        line[strcspn(line, "\n")] = 0;
        char *tab = strchr(line, '\t');
        if (!tab) continue;
        *tab = 0;
        const char *path = line, *want = tab + 1;
        size_t size = 0;
        uint8_t *buf = read_file(path, &size);
        CHECK(buf != NULL, "cannot read %s", path);
        char err[HIMAE_ERR_LEN] = "";
        himae_model *m = NULL;
        int rc = himae_load_buffer(buf, size, "scalar", NULL, 0, &m, err, sizeof err);
        if (*want)
            CHECK(rc == HIMAE_EFORMAT && strncmp(err, want, strlen(want)) == 0,
                  "%s: got '%s', want '%s'", path, err, want);
        else
            CHECK(rc == HIMAE_OK, "%s: valid file refused: %s", path, err);
        if (rc == HIMAE_OK && size > 0) {
            /* Mutations: the loader must refuse or accept, never crash. */
            uint8_t *copy = malloc(size);
            for (int t = 0; t < 300; t++) {
                memcpy(copy, buf, size);
                size_t n = size - (t % 3 == 0 ? rng() % size : 0);
                for (int k = 0; k < 1 + (int)(rng() % 4); k++) copy[rng() % n] ^= (uint8_t)(1u << (rng() % 8));
                himae_model *mm = NULL;
                himae_load_buffer(copy, n, "scalar", NULL, 0, &mm, err, sizeof err);
                himae_free(mm);
            }
            free(copy);
        }
        himae_free(m);
        free(buf);
        files++;
    }
    fclose(fp);
    CHECK(files > 0, "manifest %s lists no files", manifest);
    printf("corpus: %d files\n", files);
}

/* Random conv shapes, every ISA: packed GEMM conv vs the naive reference. */
/* What an int8 kernel computes for a conv (himae_conv1d_reference's
 * arguments), stated element by element: each GEMM row (an output's k
 * input rows, channels-last; or with pair, outputs 2q and 2q + 1 sharing
 * the k + stride input rows from 2q stride - pad) rounded by
 * himae_int8_row, each output channel's weights rounded with the scale of
 * its largest, the products summed exactly, then bias + row scale x
 * column scale x sum (+ residual), exact GELU. */
static void int8_reference(float *out, const float *in, const float *w, const float *bias, size_t cin, size_t n_in,
                           size_t cout, size_t k, size_t stride, size_t pad, size_t n_out, const float *residual,
                           int gelu, int pair) {
    const size_t taps = pair ? k + stride : k, per_row = pair ? 2 : 1;
    float *row = malloc(taps * cin * sizeof(float));
    for (size_t r = 0; r * per_row < n_out; r++) {
        const long long start = (long long)(r * per_row * stride) - (long long)pad;
        for (size_t kk = 0; kk < taps; kk++)
            for (size_t ci = 0; ci < cin; ci++) {
                const long long i = start + (long long)kk;
                row[kk * cin + ci] = i >= 0 && i < (long long)n_in ? in[ci * n_in + (size_t)i] : 0.0f;
            }
        float inv;
        const float scale = himae_int8_row(row, taps * cin, &inv);
        for (size_t h = 0; h < per_row && r * per_row + h < n_out; h++)
            for (size_t co = 0; co < cout; co++) {
                float top = 0.0f;
                for (size_t j = 0; j < cin * k; j++) top = fmaxf(top, fabsf(w[co * cin * k + j]));
                const float winv = top > 0.0f ? 127.0f / top : 0.0f, ws = top > 0.0f ? top / 127.0f : 1.0f;
                int32_t sum = 0;
                for (size_t ci = 0; ci < cin; ci++)
                    for (size_t kk = 0; kk < k; kk++)
                        sum += himae_int8_input(row[(kk + h * stride) * cin + ci], inv) *
                               himae_int8_weight(w[(co * cin + ci) * k + kk], winv);
                const size_t o = co * n_out + r * per_row + h;
                float y = fmaf(scale * ws, (float)sum, bias[co]);
                if (residual) y += residual[o];
                out[o] = gelu ? himae_gelu_exact(y) : y;
            }
    }
    free(row);
}

static void test_conv(void) {
    int cases = 0;
    for (int i = 0; i < N_KERNELS; i++) {
        const himae_ukernel *uk = kernel_at(i);
        if (!uk) continue;
        for (int t = 0; t < 60; t++) {
            size_t cin = 1 + rng() % 40, cout = 1 + rng() % (t % 2 ? 20 : 70), k = 1 + 2 * (rng() % 4);
            size_t stride = 1 + rng() % 2, pad = k / 2, n_in = 1 + rng() % 90;
            size_t n_out = (n_in + 2 * pad - k) / stride + 1;
            int gelu = (int)(rng() % 2), with_res = (int)(rng() % 2);
            float *w = malloc(cout * cin * k * sizeof(float)), *b = malloc(cout * sizeof(float));
            float *x = malloc(cin * n_in * sizeof(float)), *res = malloc(cout * n_out * sizeof(float));
            for (size_t i = 0; i < cout * cin * k; i++) w[i] = frand();
            for (size_t i = 0; i < cout; i++) b[i] = frand();
            as_kernel_rounds(uk, w, cout * cin * k);
            as_kernel_rounds(uk, b, cout);
            for (size_t i = 0; i < cin * n_in; i++) x[i] = 2 * frand();
            as_kernel_reads(uk, x, cin * n_in);
            for (size_t i = 0; i < cout * n_out; i++) res[i] = frand();
            float *want = malloc(cout * n_out * sizeof(float));
            /* Narrow convs are also tried in row pairs, as the encoder packs them. */
            size_t pair = 2 * cout <= uk->nr && rng() % 2;
            if (uk->precision == HIMAE_INT8)
                int8_reference(want, x, w, b, cin, n_in, cout, k, stride, pad, n_out, with_res ? res : NULL, gelu,
                               (int)pair);
            else
                himae_conv1d_reference(want, x, w, b, cin, n_in, cout, k, stride, pad, n_out,
                                       with_res ? res : NULL, gelu);
            const size_t n_packed = pair ? himae_packed_size(cin, 2 * cout, k + stride, uk->nr)
                                         : himae_packed_size(cin, cout, k, uk->nr);
            float *packed = malloc(n_packed * sizeof(float));
            if (pair)
                himae_pack_conv_pairs(packed, w, b, cin, cout, k, stride, uk->nr);
            else
                himae_pack_conv(packed, w, b, cin, cout, k, uk->nr, (ptrdiff_t)(cin * k), (ptrdiff_t)k, 0, 1);
            void *kw = kernel_weights(uk, packed, n_packed, pair ? (k + stride) * cin : k * cin);
            himae_conv conv = {cin, cout, k, stride, pad, k * cin, kw, pair, NULL, uk};
            /* channels-last input with pad zero rows before and enough after */
            size_t rows = n_in + 2 * k + stride;
            float *xin = calloc(rows * cin, sizeof(float));
            for (size_t c = 0; c < cin; c++)
                for (size_t i = 0; i < n_in; i++) xin[(k + i) * cin + c] = x[c * n_in + i];
            float *out = malloc(n_out * cout * sizeof(float)), *got = malloc(cout * n_out * sizeof(float));
            for (size_t c = 0; c < cout; c++)
                for (size_t p = 0; p < n_out; p++) out[p * cout + c] = res[c * n_out + p];
            himae_conv1d_forward(&conv, out, xin + k * cin, n_out, with_res ? out : NULL, gelu);
            for (size_t c = 0; c < cout; c++)
                for (size_t p = 0; p < n_out; p++) got[c * n_out + p] = out[p * cout + c];
            char what[160];
            snprintf(what, sizeof what, "%s conv cin=%zu cout=%zu k=%zu s=%zu n=%zu gelu=%d res=%d pair=%zu",
                     uk->name, cin, cout, k, stride, n_in, gelu, with_res, pair);
            compare(what, got, want, cout * n_out, 1e-5, 1e-4);
            free(w), free(b), free(x), free(res), free(want), free(packed), free(kw), free(xin), free(out), free(got);
            cases++;
        }
    }
    printf("conv: %d cases\n", cases);
}

/* Rows computed one at a time (the wide kernel, several panels per pass)
 * equal, bit for bit, the same rows computed in full tiles: results must
 * not depend on how rows are grouped. */
static void test_wide_rows(void) {
    int cases = 0;
    for (int i = 0; i < N_KERNELS; i++) {
        const himae_ukernel *uk = kernel_at(i);
        if (!uk || !uk->wide) continue;
        for (int t = 0; t < 12; t++) {
            /* int8's wide form takes every column, four panels at a time */
            const size_t span = uk->wide_nc < 4 * uk->nr ? uk->wide_nc : 4 * uk->nr;
            size_t cin = 1 + rng() % 48, cout = 1 + rng() % (5 * span / 2), k = 1 + 2 * (rng() % 3);
            size_t n_out = uk->mr + 1 + rng() % uk->wide_mr; /* full tiles, then a wide remainder */
            int gelu = (int)(rng() % 2), with_res = (int)(rng() % 2);
            float *w = malloc(cout * cin * k * sizeof(float)), *b = malloc(cout * sizeof(float));
            for (size_t i = 0; i < cout * cin * k; i++) w[i] = frand();
            for (size_t i = 0; i < cout; i++) b[i] = frand();
            const size_t n_packed = himae_packed_size(cin, cout, k, uk->nr);
            float *packed = malloc(n_packed * sizeof(float));
            himae_pack_conv(packed, w, b, cin, cout, k, uk->nr, (ptrdiff_t)(cin * k), (ptrdiff_t)k, 0, 1);
            void *kw = kernel_weights(uk, packed, n_packed, k * cin);
            himae_conv conv = {cin, cout, k, 1, k / 2, k * cin, kw, 0, NULL, uk};
            size_t rows = n_out + k;
            float *xin = calloc(rows * cin, sizeof(float)), *res = malloc(n_out * cout * sizeof(float));
            for (size_t i = k / 2 * cin; i < (k / 2 + n_out) * cin; i++) xin[i] = 2 * frand();
            for (size_t i = 0; i < n_out * cout; i++) res[i] = frand();
            float *all = malloc(n_out * cout * sizeof(float)), *one = malloc(n_out * cout * sizeof(float));
            const float *x0 = xin + k / 2 * cin;
            himae_conv1d_forward(&conv, all, x0, n_out, with_res ? res : NULL, gelu);
            for (size_t p = 0; p < n_out; p++)
                himae_conv1d_forward(&conv, one + p * cout, x0 + p * cin, 1,
                                     with_res ? res + p * cout : NULL, gelu);
            CHECK(memcmp(all, one, n_out * cout * sizeof(float)) == 0,
                  "%s wide rows differ from tiled rows: cin=%zu cout=%zu k=%zu n=%zu", uk->name, cin,
                  cout, k, n_out);
            free(w), free(b), free(packed), free(kw), free(xin), free(res), free(all), free(one);
            cases++;
        }
    }
    printf("wide rows: %d cases\n", cases);
}

/* A conv's rows over several inputs gathered into tiles (as a group of
 * streams runs them) equal, bit for bit, each input's rows computed alone,
 * every ISA: random shapes, strides, jobs and tile sizes (down to one row
 * a tile, so tiles split a job's rows), pair-packed convs too. */
static void test_gathered(void) {
    int cases = 0;
    for (int i = 0; i < N_KERNELS; i++) {
        const himae_ukernel *uk = kernel_at(i);
        if (!uk) continue;
        for (int t = 0; t < 16; t++) {
            const size_t pair = t % 4 == 0, stride = 1 + rng() % 2, k = 1 + 2 * (rng() % 3);
            size_t cin = 1 + rng() % 40, cout = pair ? 1 + rng() % (uk->nr / 2) : 1 + rng() % (3 * uk->nr);
            size_t n_jobs = 1 + rng() % 5, n_out = 1 + rng() % 20;
            size_t widest = k * cin > cout ? k * cin : cout, tile = widest + rng() % (8 * widest);
            int gelu = (int)(rng() % 2), with_res = (int)(rng() % 2);
            float *w = malloc(cout * cin * k * sizeof(float)), *b = malloc(cout * sizeof(float));
            for (size_t i = 0; i < cout * cin * k; i++) w[i] = frand();
            for (size_t i = 0; i < cout; i++) b[i] = frand();
            size_t floats = pair ? himae_packed_size(cin, 2 * cout, k + stride, uk->nr) : himae_packed_size(cin, cout, k, uk->nr);
            float *packed = malloc(floats * sizeof(float));
            if (pair)
                himae_pack_conv_pairs(packed, w, b, cin, cout, k, stride, uk->nr);
            else
                himae_pack_conv(packed, w, b, cin, cout, k, uk->nr, (ptrdiff_t)(cin * k), (ptrdiff_t)k, 0, 1);
            void *kw = kernel_weights(uk, packed, floats, pair ? (k + stride) * cin : k * cin);
            himae_conv conv = {cin, cout, k, stride, k / 2, k * cin, kw, pair, NULL, uk};
            /* each job's input: pad zero rows, its rows, then pad + stride zero rows (pair-packed reads) */
            const size_t rows = n_out * stride + k + stride, per_job = n_out * cout;
            float *xin = calloc(n_jobs * rows * cin, sizeof(float)), *res = malloc(n_jobs * per_job * sizeof(float));
            float *alone = malloc(n_jobs * per_job * sizeof(float)), *gathered = malloc(n_jobs * per_job * sizeof(float));
            float *a = malloc(tile * sizeof(float)), *c = malloc(tile * sizeof(float));
            himae_conv_job jobs[5];
            for (size_t j = 0; j < n_jobs; j++) {
                float *x0 = xin + (j * rows + k / 2) * cin;
                for (size_t i = 0; i < (n_out - 1) * stride * cin + cin; i++) x0[i] = 2 * frand();
                for (size_t i = 0; i < per_job; i++) res[j * per_job + i] = frand();
                himae_conv1d_forward(&conv, alone + j * per_job, x0, n_out, with_res ? res + j * per_job : NULL, gelu);
                jobs[j] = (himae_conv_job){x0, gathered + j * per_job, with_res ? res + j * per_job : NULL};
            }
            himae_conv1d_gathered(&conv, jobs, n_jobs, n_out, gelu, a, c, tile);
            CHECK(memcmp(alone, gathered, n_jobs * per_job * sizeof(float)) == 0,
                  "%s gathered rows differ: cin=%zu cout=%zu k=%zu stride=%zu pair=%zu jobs=%zu n=%zu tile=%zu",
                  uk->name, cin, cout, k, stride, pair, n_jobs, n_out, tile);
            free(w), free(b), free(packed), free(kw), free(xin), free(res), free(alone), free(gathered), free(a);
            free(c);
            cases++;
        }
    }
    printf("gathered rows: %d cases\n", cases);
}

/* Winograd vs the naive reference, every ISA, both forms (F(2,5) at
 * stride 1, F(4,3) over row pairs at stride 2): random widths and lengths
 * (ragged last tiles), and the shapes of himae-100's Winograd convs
 * (encoder conv2, conv1; decoder conv1). Same tolerances as the direct
 * conv. */
static void test_winograd(void) {
    int cases = 0;
    for (int isa = 0; isa < HIMAE_ISA_COUNT; isa++) { /* f32 only: bf16 models keep the direct conv (model.c) */
        const himae_ukernel *uk = himae_ukernel_for((enum himae_isa)isa, HIMAE_F32);
        if (!uk || !himae_isa_supported((enum himae_isa)isa)) continue;
        for (int t = 0; t < 48; t++) {
            static const size_t level[9][4] = {{64, 64, 125, 1},  {128, 128, 63, 1}, {256, 256, 32, 1},
                                               {32, 64, 250, 2},  {64, 128, 125, 2}, {128, 256, 63, 2},
                                               {128, 64, 125, 1}, {256, 128, 63, 1}, {64, 32, 250, 1}};
            size_t stride = 1 + t % 2, cin = 1 + rng() % 70, cout = 1 + rng() % 70, n_in = 1 + rng() % 60;
            if (t < 9) cin = level[t][0], cout = level[t][1], n_in = level[t][2], stride = level[t][3];
            const size_t n = (n_in + stride - 1) / stride;
            int gelu = t < 9 || rng() % 2, with_res = t < 3 || rng() % 2;
            float *w = malloc(cout * cin * 5 * sizeof(float)), *b = malloc(cout * sizeof(float));
            float *x = malloc(cin * n_in * sizeof(float)), *res = malloc(cout * n * sizeof(float));
            for (size_t i = 0; i < cout * cin * 5; i++) w[i] = frand() / sqrtf((float)cin);
            for (size_t i = 0; i < cout; i++) b[i] = frand();
            for (size_t i = 0; i < cin * n_in; i++) x[i] = 2 * frand();
            for (size_t i = 0; i < cout * n; i++) res[i] = frand();
            float *want = malloc(cout * n * sizeof(float));
            himae_conv1d_reference(want, x, w, b, cin, n_in, cout, 5, stride, 2, n, with_res ? res : NULL, gelu);
            float *packed = malloc(himae_wino_packed_size(cin, cout, stride, uk->nr) * sizeof(float));
            himae_wino_pack(packed, w, b, cin, cout, stride, uk->nr);
            himae_wino wino = {cin, cout, stride, packed};
            /* channels-last input: 2 zero rows before, zeros after as far as the tiles read */
            const size_t rows = 2 + himae_wino_rows_read(stride, n);
            float *xin = calloc(rows * cin, sizeof(float));
            for (size_t c = 0; c < cin; c++)
                for (size_t i = 0; i < n_in; i++) xin[(2 + i) * cin + c] = x[c * n_in + i];
            float *work = malloc(himae_wino_work_floats(cin, cout, stride, n) * sizeof(float));
            float *out = malloc(n * cout * sizeof(float)), *got = malloc(cout * n * sizeof(float));
            for (size_t c = 0; c < cout; c++)
                for (size_t p = 0; p < n; p++) out[p * cout + c] = with_res ? res[c * n + p] : NAN;
            himae_wino_forward(&wino, uk, out, xin + 2 * cin, n, with_res, gelu, work);
            for (size_t c = 0; c < cout; c++)
                for (size_t p = 0; p < n; p++) got[c * n + p] = out[p * cout + c];
            char what[160];
            snprintf(what, sizeof what, "%s winograd stride=%zu cin=%zu cout=%zu n_in=%zu gelu=%d res=%d",
                     uk->name, stride, cin, cout, n_in, gelu, with_res);
            compare(what, got, want, cout * n, 1e-5, 1e-4);
            free(w), free(b), free(x), free(res), free(want), free(packed), free(xin), free(work);
            free(out), free(got);
            cases++;
        }
    }
    printf("winograd: %d cases\n", cases);
}

/* CRC-32 eight bytes a step against its definition, bit by bit: the check
 * value of "123456789", every length to 40 at every offset to 7, and a
 * CRC carried across a split. */
static uint32_t crc32_bitwise(uint32_t crc, const uint8_t *p, size_t n) {
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) crc = crc & 1 ? 0xEDB88320u ^ (crc >> 1) : crc >> 1;
    }
    return ~crc;
}

static void test_crc32(void) {
    CHECK(himae_crc32(0, (const uint8_t *)"123456789", 9) == 0xCBF43926u, "CRC-32 check value");
    uint8_t buf[48];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (uint8_t)(i * 167u + 13u);
    int bad = 0;
    for (size_t off = 0; off < 8; off++)
        for (size_t n = 0; off + n <= 40; n++) {
            const uint32_t want = crc32_bitwise(0, buf + off, n);
            bad += himae_crc32(0, buf + off, n) != want;
            bad += himae_crc32(himae_crc32(0, buf + off, n / 3), buf + off + n / 3, n - n / 3) != want;
        }
    CHECK(bad == 0, "CRC-32 differs from its definition in %d cases", bad);
}

/* GELU of every ISA's epilogue against exact erf GELU on [-10, 10]. */
static void test_gelu(void) {
    for (int isa = 0; isa < HIMAE_ISA_COUNT; isa++) {
        const himae_ukernel *uk = himae_ukernel_for((enum himae_isa)isa, HIMAE_F32);
        if (!uk || !himae_isa_supported((enum himae_isa)isa)) continue;
        const size_t n = 20001, nr = uk->nr;
        float *panel = calloc(nr * 2, sizeof(float)); /* zero bias, weight 1 on column 0 */
        panel[nr] = 1.0f;
        float *x = malloc(n * sizeof(float)), *y = malloc(n * nr * sizeof(float));
        for (size_t i = 0; i < n; i++) x[i] = -10.0f + 20.0f * (float)i / (float)(n - 1);
        for (size_t p = 0; p < n; p += uk->mr) {
            size_t m = n - p < uk->mr ? n - p : uk->mr;
            uk->fn(m, nr, 1, x + p, 1, panel, y + p * nr, nr, NULL, 0, 1);
        }
        double worst = 0;
        for (size_t i = 0; i < n; i++) {
            double d = fabs((double)y[i * nr] - himae_gelu_exact(x[i]));
            if (d > worst) worst = d;
        }
        CHECK(worst <= 2e-6, "%s GELU max abs error %.3g", uk->name, worst);
        printf("gelu %s: max abs error %.3g\n", uk->name, worst);
        free(panel), free(x), free(y);
    }
}

/* A naive channels-first encoder on the file's tensors, over n_in samples:
 * level l has ceil(n_in / 2^(l+1)) positions. With uk, its weights rounded
 * as that kernel holds them (as_kernel_rounds), but for level 0's, which
 * run f32 in every precision (model.c). */
static void reference_encoder(const himae_file *f, const float *x, size_t n_in, float **levels,
                              const himae_ukernel *uk) {
    const himae_config *c = &f->config;
    const float *in = x;
    size_t cin = c->in_channels, k = c->kernel_size;
    for (uint32_t l = 0; l < c->n_levels; l++) {
        size_t co = c->channels[l], n = (n_in + 1) / 2;
        char name[64];
        float *t[6];
        const char *parts[6] = {"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "skip.weight", "skip.bias"};
        for (int i = 0; i < 6; i++) {
            snprintf(name, sizeof name, "encoder.%u.%s", l, parts[i]);
            const himae_tensor *tensor = himae_file_tensor(f, name);
            t[i] = malloc(tensor->nbytes);
            memcpy(t[i], tensor->data, tensor->nbytes);
            if (uk && l) as_kernel_rounds(uk, t[i], tensor->nbytes / sizeof(float));
        }
        float *skip = malloc(co * n * sizeof(float)), *h = malloc(co * n * sizeof(float));
        himae_conv1d_reference(skip, in, t[4], t[5], cin, n_in, co, 1, 2, 0, n, NULL, 0);
        himae_conv1d_reference(h, in, t[0], t[1], cin, n_in, co, k, 2, k / 2, n, NULL, 1);
        himae_conv1d_reference(levels[l], h, t[2], t[3], co, n, co, k, 1, k / 2, n, skip, 1);
        free(skip), free(h);
        for (int i = 0; i < 6; i++) free(t[i]);
        in = levels[l], cin = co, n_in = n;
    }
}

static void test_model(const char *path) {
    size_t size = 0;
    uint8_t *buf = read_file(path, &size);
    CHECK(buf != NULL, "cannot read %s", path);
    if (!buf) return;
    himae_file f;
    char err[HIMAE_ERR_LEN];
    int rc = himae_parse(buf, size, &f, err, sizeof err);
    CHECK(rc == HIMAE_OK, "%s: %s", path, err);
    if (rc) return free(buf);
    const himae_config *c = &f.config;
    const size_t batch = 3, n_x = batch * c->in_channels * c->window;
    float *x = malloc(n_x * sizeof(float));
    for (size_t i = 0; i < n_x; i++) x[i] = frand();
    float *want[HIMAE_MAX_LEVELS], *got[HIMAE_MAX_LEVELS], *mean[HIMAE_MAX_LEVELS];
    size_t per[HIMAE_MAX_LEVELS];
    for (uint32_t l = 0; l < c->n_levels; l++) {
        per[l] = (size_t)c->channels[l] * c->level_len[l];
        want[l] = malloc(batch * per[l] * sizeof(float));
        got[l] = malloc(batch * per[l] * sizeof(float));
        mean[l] = malloc(batch * c->channels[l] * sizeof(float));
    }
    for (size_t b = 0; b < batch; b++) {
        float *lv[HIMAE_MAX_LEVELS];
        for (uint32_t l = 0; l < c->n_levels; l++) lv[l] = want[l] + b * per[l];
        reference_encoder(&f, x + b * c->in_channels * c->window, c->window, lv, NULL);
    }
    /* Decoder: every ISA's reconstruction against the scalar one (which
     * tests/test_decoder.py checks against PyTorch). */
    float *rec_scalar = malloc(n_x * sizeof(float)), *rec = malloc(n_x * sizeof(float));
    int decoders = 0;
    for (int isa = 0; isa < HIMAE_ISA_COUNT; isa++) {
        if (!himae_ukernel_for((enum himae_isa)isa, HIMAE_F32) || !himae_isa_supported((enum himae_isa)isa)) continue;
        himae_model *m = NULL;
        rc = himae_load_buffer(buf, size, himae_isa_name((enum himae_isa)isa), NULL, 0, &m, err, sizeof err);
        CHECK(rc == HIMAE_OK, "%s on %s: %s", path, himae_isa_name((enum himae_isa)isa), err);
        if (rc) continue;
        uint64_t before = himae_alloc_count();
        himae_encode(m, x, batch, got, mean, err, sizeof err);
        CHECK(himae_alloc_count() == before, "encode allocated");
        for (uint32_t l = 0; l < c->n_levels; l++) {
            char what[128];
            snprintf(what, sizeof what, "%s %s level %u", path, himae_isa_name((enum himae_isa)isa), l);
            compare(what, got[l], want[l], batch * per[l], 1e-5, 1e-4);
            for (size_t b = 0; b < batch; b++)
                for (size_t ch = 0; ch < c->channels[l]; ch++) {
                    double s = 0;
                    for (size_t i = 0; i < c->level_len[l]; i++) s += want[l][b * per[l] + ch * c->level_len[l] + i];
                    float expect = (float)(s / c->level_len[l]);
                    CHECK(fabsf(mean[l][b * c->channels[l] + ch] - expect) <= 1e-4f, "%s mean", what);
                }
        }
        if (c->flags & 1) {
            before = himae_alloc_count();
            rc = himae_reconstruct(m, x, batch, decoders ? rec : rec_scalar, err, sizeof err);
            CHECK(rc == HIMAE_OK && himae_alloc_count() == before, "%s reconstruct: %s", path, err);
            char what[128];
            snprintf(what, sizeof what, "%s %s reconstruct", path, himae_isa_name((enum himae_isa)isa));
            if (decoders++) compare(what, rec, rec_scalar, n_x, 1e-5, 1e-4);
        }
        himae_free(m);
    }
    printf("model %s: %u levels checked, decoder on %d ISAs\n", path, c->n_levels, decoders);
    free(rec_scalar), free(rec);
    for (uint32_t l = 0; l < c->n_levels; l++) free(want[l]), free(got[l]), free(mean[l]);
    free(x), free(buf);
}

/* Push x (in_channels, n) in random chunks (one over two engine blocks),
 * preparing between most of them as a live pipeline does (sometimes twice),
 * saving the state midway and continuing on a second engine restored from
 * it; then flush. The engine hands out rows (position-major); got[l] gets
 * them channels-major (leading dimension ld[l]). */
static void stream_run(const himae_model *m, const float *x, size_t n, float **got, const int64_t *ld,
                       const char *what) {
    const himae_config *c = himae_model_config(m);
    char err[HIMAE_ERR_LEN];
    himae_stream *s = NULL, *t = NULL;
    int rc = himae_stream_create(m, &s, err, sizeof err) || himae_stream_create(m, &t, err, sizeof err);
    CHECK(rc == 0, "%s: stream create: %s", what, err);
    if (rc) {
        himae_stream_free(s);
        return;
    }
    int64_t emitted[HIMAE_STREAM_MAX_LEVELS] = {0}, n_out[HIMAE_STREAM_MAX_LEVELS];
    int64_t pending[HIMAE_STREAM_MAX_LEVELS];
    float *out[HIMAE_STREAM_MAX_LEVELS];
    float *row_buf[HIMAE_STREAM_MAX_LEVELS];
    for (uint32_t l = 0; l < c->n_levels; l++) row_buf[l] = malloc((size_t)ld[l] * c->channels[l] * sizeof(float));
    size_t at = 0, saved_at = n / 3;
    int chunks = 0;
    while (at < n || !himae_stream_flushed(s)) {
        size_t left = n - at, len = chunks == 2 ? 4500 : rng() % 4 ? rng() % 40 : rng() % 700;
        if (len > left) len = left;
        int flush = at + len == n && rng() % 2 ? 1 : 0; /* the last chunk flushes, or an empty push after it */
        if (at + len == n && len == 0) flush = 1;
        himae_stream_pending(s, (int64_t)len, flush, pending);
        for (uint32_t l = 0; l < c->n_levels; l++) out[l] = row_buf[l] + emitted[l] * c->channels[l];
        uint64_t before = himae_alloc_count();
        rc = himae_stream_push(s, x + at, (int64_t)n, (int64_t)len, flush, out, n_out, err, sizeof err);
        CHECK(himae_alloc_count() == before, "%s: push allocated", what);
        CHECK(rc == 0, "%s: push: %s", what, err);
        if (rc) break;
        for (uint32_t l = 0; l < c->n_levels; l++) {
            CHECK(n_out[l] == pending[l], "%s: level %u emitted %lld, pending said %lld", what, l,
                  (long long)n_out[l], (long long)pending[l]);
            emitted[l] += n_out[l];
            CHECK(himae_stream_emitted(s, (int)l) == emitted[l], "%s: emitted count", what);
        }
        at += len;
        chunks++;
        for (uint32_t r = rng() % 4; r && r < 3; r--) {
            before = himae_alloc_count();
            himae_stream_prepare(s);
            CHECK(himae_alloc_count() == before, "%s: prepare allocated", what);
        }
        if (at >= saved_at && saved_at) { /* continue on a second engine from the saved state */
            size_t size = himae_stream_state_size(s);
            uint8_t *state = malloc(size);
            himae_stream_save(s, state);
            CHECK(himae_stream_load(t, state, size - 1, err, sizeof err) != 0, "%s: truncated state loaded", what);
            state[size / 2] ^= 1;
            CHECK(himae_stream_load(t, state, size, err, sizeof err) != 0, "%s: corrupted state loaded", what);
            state[size / 2] ^= 1;
            CHECK(himae_stream_load(t, state, size, err, sizeof err) == 0, "%s: state load: %s", what, err);
            CHECK(himae_stream_pushed(t) == (int64_t)at, "%s: restored engine pushed count", what);
            himae_stream_reset(s);
            himae_stream *swap = s;
            s = t, t = swap, saved_at = 0;
            free(state);
        }
    }
    CHECK(himae_stream_complete(s) == (int64_t)n, "%s: flushed stream complete at %lld of %zu", what,
          (long long)himae_stream_complete(s), n);
    for (uint32_t l = 0; l < c->n_levels; l++)
        for (int64_t j = 0; j < emitted[l] && j < ld[l]; j++)
            for (uint32_t ch = 0; ch < c->channels[l]; ch++)
                got[l][ch * ld[l] + j] = row_buf[l][j * c->channels[l] + ch];
    for (uint32_t l = 0; l < c->n_levels; l++) {
        CHECK(emitted[l] == ld[l], "%s: level %u emitted %lld of %lld", what, l, (long long)emitted[l],
              (long long)ld[l]);
        free(row_buf[l]);
    }
    himae_stream_free(s);
    himae_stream_free(t);
}

/* Engines that share a workspace (himae_stream_share) against twins that do
 * not, pushed the same chunks (empty, one sample, odd, longer than a block)
 * and prepared alike: the same rows and saved states, bit for
 * bit. Two sharing engines pushed in turn keep their own histories; pushes
 * from two threads at once (one of them finds the workspace held and uses
 * its own buffers) change nothing either. */
enum { SHARED_N = 5000, SHARED_PAIRS = 2 };

typedef struct {
    const himae_model *m;
    himae_stream *shared, *alone;
    const float *x;
    int rounds; /* times through the chunks, a reset between */
    int64_t mismatches, failures, allocations;
} shared_pair;

static const int64_t shared_chunks[] = {0, 1, 7, 100, 1, 300, 2100, 2500, 0, 99, 33, 359}; /* > SHARED_N */

/* Push both engines of a pair through x in the chunks above (the last cut to fit), preparing both after
 * every other push; count pushes whose outputs differ. */
static void shared_push_all(shared_pair *p) {
    const himae_config *c = himae_model_config(p->m);
    const int nl = (int)c->n_levels;
    float *out[2][HIMAE_STREAM_MAX_LEVELS];
    for (int w = 0; w < 2; w++)
        for (int l = 0; l < nl; l++) out[w][l] = malloc((size_t)SHARED_N * c->channels[l] * sizeof(float));
    char err[HIMAE_ERR_LEN];
    for (int round = 0; round < p->rounds; round++) {
        himae_stream_reset(p->shared), himae_stream_reset(p->alone);
        int64_t at = 0;
        for (size_t k = 0; k <= sizeof shared_chunks / sizeof shared_chunks[0]; k++) {
            const int last = k == sizeof shared_chunks / sizeof shared_chunks[0];
            int64_t len = last ? 0 : shared_chunks[k], n_out[2][HIMAE_STREAM_MAX_LEVELS];
            if (len > SHARED_N - at) len = SHARED_N - at;
            himae_stream *e[2] = {p->shared, p->alone};
            for (int w = 0; w < 2; w++) {
                uint64_t before = himae_alloc_count();
                p->failures += himae_stream_push(e[w], p->x + at, SHARED_N, len, last, out[w], n_out[w], err,
                                                 sizeof err) != 0;
                p->allocations += himae_alloc_count() != before;
            }
            for (int l = 0; l < nl; l++) {
                const size_t vals = (size_t)n_out[0][l] * c->channels[l];
                p->mismatches += n_out[0][l] != n_out[1][l] || memcmp(out[0][l], out[1][l], vals * sizeof(float));
            }
            if (k % 2) himae_stream_prepare(p->shared), himae_stream_prepare(p->alone);
            at += len;
        }
    }
    for (int w = 0; w < 2; w++)
        for (int l = 0; l < nl; l++) free(out[w][l]);
}

static void *shared_thread(void *arg) {
    shared_pair *p = arg;
    shared_push_all(p);
    return NULL;
}

/* Do the pair's two engines hold the same state, byte for byte? */
static int same_state(const shared_pair *p) {
    size_t size = himae_stream_state_size(p->shared);
    if (size != himae_stream_state_size(p->alone)) return 0;
    uint8_t *a = malloc(size), *b = malloc(size);
    himae_stream_save(p->shared, a);
    himae_stream_save(p->alone, b);
    int same = memcmp(a, b, size) == 0;
    free(a), free(b);
    return same;
}

static void test_shared(const char *path) {
    size_t size = 0;
    uint8_t *buf = read_file(path, &size);
    char err[HIMAE_ERR_LEN];
    himae_model *m = NULL;
    if (!buf || himae_load_buffer(buf, size, NULL, NULL, 0, &m, err, sizeof err)) {
        free(buf);
        return;
    }
    const size_t cin = himae_model_config(m)->in_channels;
    float *x = malloc(SHARED_PAIRS * cin * SHARED_N * sizeof(float));
    for (size_t i = 0; i < SHARED_PAIRS * cin * SHARED_N; i++) x[i] = frand();
    himae_stream *workspace = NULL;
    shared_pair pairs[SHARED_PAIRS];
    int rc = himae_stream_create(m, &workspace, err, sizeof err);
    for (int i = 0; i < SHARED_PAIRS; i++) {
        pairs[i] = (shared_pair){m, NULL, NULL, x + i * cin * SHARED_N, 1, 0, 0, 0};
        rc = rc || himae_stream_create(m, &pairs[i].shared, err, sizeof err) ||
             himae_stream_create(m, &pairs[i].alone, err, sizeof err);
        rc = rc || himae_stream_share(pairs[i].shared, workspace);
    }
    CHECK(rc == 0, "%s shared workspace: create or share failed: %s", path, err);
    if (rc == 0) {
        CHECK(himae_stream_share(workspace, workspace) != 0, "%s: an engine shared its own buffers", path);
        CHECK(himae_stream_share(workspace, pairs[0].shared) != 0, "%s: a workspace borrowed from a borrower", path);
        /* the pairs in turn, one thread: each sharing engine borrows the buffers the other just left */
        for (int round = 0; round < 2; round++)
            for (int i = 0; i < SHARED_PAIRS; i++) shared_push_all(&pairs[i]);
        /* then both at once, from two threads */
        pthread_t threads[SHARED_PAIRS];
        for (int i = 0; i < SHARED_PAIRS; i++) {
            pairs[i].rounds = 3;
            CHECK(pthread_create(&threads[i], NULL, shared_thread, &pairs[i]) == 0, "%s: thread", path);
        }
        for (int i = 0; i < SHARED_PAIRS; i++) pthread_join(threads[i], NULL);
        for (int i = 0; i < SHARED_PAIRS; i++) {
            CHECK(pairs[i].failures == 0, "%s shared pair %d: %lld pushes failed", path, i, (long long)pairs[i].failures);
            CHECK(pairs[i].mismatches == 0, "%s shared pair %d: %lld pushes differ from an unshared engine", path, i,
                  (long long)pairs[i].mismatches);
            CHECK(pairs[i].allocations == 0, "%s shared pair %d: pushes allocated", path, i);
            CHECK(same_state(&pairs[i]), "%s shared pair %d: states differ from an unshared engine", path, i);
        }
        printf("shared workspace %s: %d engines, %d pushes each, alike\n", path, SHARED_PAIRS,
               5 * (int)(sizeof shared_chunks / sizeof shared_chunks[0] + 1));
    }
    for (int i = 0; i < SHARED_PAIRS; i++) himae_stream_free(pairs[i].shared), himae_stream_free(pairs[i].alone);
    himae_stream_free(workspace);
    himae_free(m);
    free(x), free(buf);
}

/* bf16dot stream outputs against the f32 reference on rounded weights:
 * relative L2, and largest difference relative to the level's largest
 * output. int8 against the f32 reference (each row and weight rounded to
 * 1/254 of its largest, through eight convs of random weights). */
#define DOT_REL 1e-2
#define DOT_MAX 2e-2
#define Q8_REL 3e-2
#define Q8_MAX 5e-2

static double largest(const float *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fabs(x[i]) > m ? fabs(x[i]) : m;
    return m;
}

/* Stream mode on every ISA against the naive encoder over the whole signal. */
static void test_stream(const char *path) {
    size_t size = 0;
    uint8_t *buf = read_file(path, &size);
    himae_file f;
    char err[HIMAE_ERR_LEN];
    if (!buf || himae_parse(buf, size, &f, err, sizeof err) != HIMAE_OK) {
        free(buf); /* test_model reports it */
        return;
    }
    const himae_config *c = &f.config;
    const size_t n = 6000, cin = c->in_channels;
    float *x = malloc(cin * n * sizeof(float));
    for (size_t i = 0; i < cin * n; i++) x[i] = frand();
    float *want[HIMAE_MAX_LEVELS], *got[HIMAE_MAX_LEVELS];
    int64_t ld[HIMAE_MAX_LEVELS];
    size_t len = n;
    for (uint32_t l = 0; l < c->n_levels; l++) {
        len = (len + 1) / 2;
        ld[l] = (int64_t)len;
        want[l] = malloc(c->channels[l] * len * sizeof(float));
        got[l] = malloc(c->channels[l] * len * sizeof(float));
    }
    int runs = 0, bf16_runs = 0, dot_runs = 0, int8_runs = 0;
    for (int prec = 0; prec < HIMAE_PRECISION_COUNT; prec++) {
        /* bf16: against the reference on the same rounded weights, at f32's
         * tolerance. bf16dot also rounds each conv's inputs, which the
         * reference does not: at the tolerance of that rounding (2^-9
         * relative per input, through ten convs). int8: against f32's. */
        reference_encoder(&f, x, n, want, prec == HIMAE_F32 ? NULL : himae_ukernel_for(HIMAE_ISA_SCALAR, prec));
        const int dot = prec == HIMAE_BF16DOT, int8 = prec == HIMAE_INT8;
        for (int isa = 0; isa < HIMAE_ISA_COUNT; isa++) {
            if (!himae_ukernel_for((enum himae_isa)isa, HIMAE_F32) || !himae_isa_supported((enum himae_isa)isa)) continue;
            himae_model *m = NULL;
            const char *pname = himae_precision_name((enum himae_precision)prec);
            const himae_ukernel *uk = himae_ukernel_for((enum himae_isa)isa, (enum himae_precision)prec);
            if (!uk || covered_elsewhere(uk)) continue;
            if (himae_load_buffer(buf, size, himae_isa_name((enum himae_isa)isa), pname, 0, &m, err, sizeof err)) continue;
            for (int r = 0; r < 2; r++, runs++, bf16_runs += prec == HIMAE_BF16, dot_runs += dot, int8_runs += int8) {
                char what[160];
                snprintf(what, sizeof what, "%s stream %s %s run %d", path, himae_isa_name((enum himae_isa)isa),
                         pname, r);
                for (uint32_t l = 0; l < c->n_levels; l++) memset(got[l], 0xff, c->channels[l] * ld[l] * sizeof(float));
                stream_run(m, x, n, got, ld, what);
                for (uint32_t l = 0; l < c->n_levels; l++) {
                    char level_what[192];
                    snprintf(level_what, sizeof level_what, "%s level %u", what, l);
                    const size_t count = c->channels[l] * (size_t)ld[l];
                    compare(level_what, got[l], want[l], count, int8 ? Q8_REL : dot ? DOT_REL : 1e-5,
                            int8 ? Q8_MAX * largest(want[l], count) : dot ? DOT_MAX * largest(want[l], count) : 1e-4);
                }
            }
            himae_free(m);
        }
    }
    printf("stream %s: %d chunked runs checked, %d bf16, %d bf16dot, %d int8\n", path, runs, bf16_runs, dot_runs,
           int8_runs);
    for (uint32_t l = 0; l < c->n_levels; l++) free(want[l]), free(got[l]);
    free(x), free(buf);
}

/* Groups of streams (streams.h), every f32 and bf16dot kernel: n streams pushed together give
 * the same bits, rows and saved states as n separate engines
 * pushed the same chunks (empty, one sample, odd, longer than a group's
 * block and than a single engine's), without allocating and leaving the
 * caller's floating-point mode as it was; a stream out of step with the
 * others stops the push. */
static void test_group(const char *path) {
    size_t size = 0;
    uint8_t *buf = read_file(path, &size);
    himae_file f;
    char err[HIMAE_ERR_LEN];
    if (!buf || himae_parse(buf, size, &f, err, sizeof err) != HIMAE_OK) {
        free(buf);
        return;
    }
    enum { MAX_N = 3, N = 3000 };
    static const int64_t chunks[] = {0, 1, 7, 100, 1, 300, 2100, 0, 99, 33, 359}; /* N in all */
    const int n_chunks = (int)(sizeof chunks / sizeof chunks[0]);
    const himae_config *c = &f.config;
    const int nl = (int)c->n_levels, cin = (int)c->in_channels;
    float *x = malloc((size_t)MAX_N * cin * N * sizeof(float)), *neg = malloc((size_t)MAX_N * cin * N * sizeof(float));
    for (size_t i = 0; i < (size_t)MAX_N * cin * N; i++) x[i] = frand(), neg[i] = -x[i];
    float *rows[2][MAX_N * HIMAE_STREAM_MAX_LEVELS];
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < MAX_N * nl; j++) rows[k][j] = malloc((size_t)(N + 64) * c->channels[j % nl] * sizeof(float));
    int runs = 0;
    for (int kernel = 0; kernel < N_KERNELS; kernel++) {
        const himae_ukernel *uk = kernel_at(kernel);
        /* bf16 runs the f32 code on widened weights: its groups are f32's */
        if (!uk || uk->precision == HIMAE_BF16 || covered_elsewhere(uk)) continue;
        const enum himae_isa isa = uk->isa;
        himae_model *m = NULL;
        if (himae_load_buffer(buf, size, himae_isa_name(isa), himae_precision_name(uk->precision), 0, &m, err,
                              sizeof err))
            continue;
        static const int sizes[] = {1, MAX_N};
        for (int t = 0; t < 2; t++, runs++) {
            const int n = sizes[t];
            /* g and other share a workspace; other, pushed the negated signal between g's pushes,
             * must leave no trace in g */
            himae_streams *g = NULL, *other = NULL, *ws = NULL;
            himae_stream *one[MAX_N] = {NULL};
            int rc = himae_streams_create(m, n, &g, err, sizeof err) || himae_streams_create(m, n, &other, err, sizeof err) ||
                     himae_streams_create(m, n, &ws, err, sizeof err);
            rc = rc || himae_streams_share(g, ws) || himae_streams_share(other, ws);
            for (int i = 0; i < n && rc == 0; i++) rc = himae_stream_create(m, &one[i], err, sizeof err);
            CHECK(rc == 0, "%s group of %d: create: %s", path, n, err);
            CHECK(himae_streams_share(ws, g) != 0 && himae_streams_share(g, g) != 0,
                  "%s group of %d: a workspace borrowed from a borrower, or a group from itself", path, n);
            int64_t at = 0, emitted[HIMAE_STREAM_MAX_LEVELS] = {0}, n_out[HIMAE_STREAM_MAX_LEVELS], n_one[HIMAE_STREAM_MAX_LEVELS];
            for (int k = 0; rc == 0 && k <= n_chunks; k++) {
                const int64_t len = k < n_chunks ? chunks[k] : 0, flush = k == n_chunks;
                float *out[2][MAX_N * HIMAE_STREAM_MAX_LEVELS];
                for (int j = 0; j < n * nl; j++)
                    for (int w = 0; w < 2; w++) out[w][j] = rows[w][j] + emitted[j % nl] * c->channels[j % nl];
                /* the group reads stream i at x + i·cin·N + at: channel c's samples N apart within it */
                uint64_t before = himae_alloc_count();
                himae_fpmode mode = himae_fpmode_get();
                rc = himae_streams_push(g, x + at, N, len, (int)flush, out[0], n_out, err, sizeof err);
                CHECK(rc == 0, "%s group of %d: push: %s", path, n, err);
                CHECK(himae_alloc_count() == before, "%s group of %d: push allocated", path, n);
                CHECK(himae_fpmode_get() == mode, "%s group of %d: push changed the fp mode", path, n);
                /* other's rows land where one[i]'s will, then are overwritten */
                CHECK(himae_streams_push(other, neg + at, N, len, (int)flush, out[1], n_one, err, sizeof err) == 0,
                      "%s group of %d: the other group's push: %s", path, n, err);
                for (int i = 0; i < n && rc == 0; i++) {
                    rc = himae_stream_push(one[i], x + (size_t)i * cin * N + at, N, len, (int)flush, out[1] + i * nl,
                                           n_one, err, sizeof err);
                    for (int l = 0; l < nl; l++) CHECK(n_one[l] == n_out[l], "%s group of %d: row counts", path, n);
                    himae_stream *member = himae_streams_member(g, i);
                    size_t bytes = himae_stream_state_size(member);
                    CHECK(bytes == himae_stream_state_size(one[i]), "%s group of %d: state sizes", path, n);
                    if (bytes != himae_stream_state_size(one[i])) continue;
                    uint8_t *a = malloc(bytes), *b = malloc(bytes);
                    himae_stream_save(member, a), himae_stream_save(one[i], b);
                    CHECK(memcmp(a, b, bytes) == 0, "%s group of %d: stream %d state differs after push %d", path, n,
                          i, k);
                    free(a), free(b);
                }
                for (int j = 0; j < n * nl && rc == 0; j++) {
                    const size_t cl = c->channels[j % nl], got = (size_t)n_out[j % nl] * cl;
                    CHECK(memcmp(out[0][j], out[1][j], got * sizeof(float)) == 0,
                          "%s %s group of %d: stream %d level %d differs in push %d", path, uk->name, n,
                          j / nl, j % nl, k);
                }
                for (int l = 0; l < nl; l++) emitted[l] += n_out[l];
                at += len;
            }
            CHECK(rc == 0 && at == N, "%s group of %d: pushed %lld of %d", path, n, (long long)at, N);
            for (int i = 0; i < n && rc == 0; i++) CHECK(himae_stream_complete(himae_streams_member(g, i)) == N,
                                                         "%s group of %d: stream %d incomplete", path, n, i);
            rc = himae_streams_push(g, x, N, 1, 0, NULL, n_out, err, sizeof err);
            CHECK(rc != 0, "%s group of %d: push after flush accepted", path, n);
            if (n > 1) { /* out of step: one stream reset */
                himae_stream_reset(himae_streams_member(g, n - 1));
                rc = himae_streams_push(g, x, N, 0, 0, NULL, n_out, err, sizeof err);
                CHECK(rc != 0 && strstr(err, "not in step"), "%s group of %d: out of step accepted", path, n);
            }
            himae_streams_free(g), himae_streams_free(other), himae_streams_free(ws);
            for (int i = 0; i < n; i++) himae_stream_free(one[i]);
        }
        himae_free(m);
    }
    printf("group %s: %d groups checked\n", path, runs);
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < MAX_N * nl; j++) free(rows[k][j]);
    free(x), free(neg), free(buf);
}

static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static void wr32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static int subnormal(float x) { return x != 0 && fabsf(x) < 1.17549435e-38f; }
static size_t count_subnormal(const float *x, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += (size_t)subnormal(x[i]);
    return k;
}

/* Copies of a valid model file with a subnormal planted in every 7th value
 * of every tensor (planted) or that value's signed zero (zeroed), checksums
 * made valid again. */
static void plant_subnormals(const uint8_t *buf, size_t size, uint8_t *planted, uint8_t *zeroed) {
    uint8_t *files[2] = {planted, zeroed};
    memcpy(planted, buf, size), memcpy(zeroed, buf, size);
    const uint32_t count = rd32(buf + 56);
    const size_t table = (size_t)rd32(buf + 40);
    for (uint32_t t = 0; t < count; t++) {
        const uint8_t *e = buf + table + 96 * (size_t)t;
        const size_t offset = rd32(e + 72), nbytes = rd32(e + 80);
        for (size_t j = 0; j < nbytes / 4; j += 7) {
            uint32_t sign = rng() & 0x80000000u, bits = 1u + rng() % 0x7FFFFFu;
            wr32(planted + offset + 4 * j, sign | bits);
            wr32(zeroed + offset + 4 * j, sign);
        }
        for (int i = 0; i < 2; i++) wr32(files[i] + table + 96 * (size_t)t + 88, himae_crc32(0, files[i] + offset, nbytes));
    }
    for (int i = 0; i < 2; i++) {
        uint8_t *f = files[i];
        wr32(f + 60, himae_crc32(0, f + table, 96 * (size_t)count));
        wr32(f + 252, himae_crc32(0, f, 252));
        wr32(f + size - 8, himae_crc32(0, f, size - 8));
    }
}

/* The packed floats of an encoder conv and, when it has one, its tail. */
static size_t packed_floats(const himae_conv *conv, size_t nr) {
    return conv->pair ? himae_packed_size(conv->cin, 2 * conv->cout, conv->k + conv->stride, nr)
                      : himae_packed_size(conv->cin, conv->cout, conv->k, nr);
}

/* Every level's output of a whole-signal stream push then flush, as rows
 * (rows[l]: n_out[l] rows of C_l floats, malloc'd). */
static void stream_rows(const himae_model *m, const float *x, size_t n, float **rows, int64_t *n_out) {
    const himae_config *c = himae_model_config(m);
    char err[HIMAE_ERR_LEN];
    himae_stream *s = NULL;
    int64_t pending[HIMAE_STREAM_MAX_LEVELS];
    int rc = himae_stream_create(m, &s, err, sizeof err);
    CHECK(rc == 0, "stream create: %s", err);
    if (rc) return;
    himae_stream_pending(s, (int64_t)n, 1, pending);
    for (uint32_t l = 0; l < c->n_levels; l++) rows[l] = malloc(((size_t)pending[l] + 1) * c->channels[l] * sizeof(float));
    rc = himae_stream_push(s, x, (int64_t)n, (int64_t)n, 1, rows, n_out, err, sizeof err);
    CHECK(rc == 0, "stream push: %s", err);
    himae_stream_free(s);
}

/* Flush to zero (fpmode.h), every ISA: the loader packs subnormal weights
 * as zeros (a file with planted subnormals packs to the same bits as one
 * with zeros there); encode, reconstruct and stream push read subnormal
 * inputs as zero (the same bits as zeros there) and write no subnormal
 * (inputs scaled to 1e-36, where every activation underflows, and to 100,
 * where GELU's tail does); and every call leaves the caller's mode as it
 * found it, whatever that mode is. */
static void test_fpmode(const char *path) {
    size_t size = 0;
    uint8_t *buf = read_file(path, &size);
    himae_file f;
    char err[HIMAE_ERR_LEN];
    if (!buf || himae_parse(buf, size, &f, err, sizeof err) != HIMAE_OK) {
        free(buf); /* test_model reports it */
        return;
    }
    const himae_config *c = &f.config;
    uint8_t *planted = malloc(size), *zeroed = malloc(size);
    plant_subnormals(buf, size, planted, zeroed);
    const size_t n_x = (size_t)c->in_channels * c->window, n_stream = 3 * n_x;
    float *x_sub = malloc(n_stream * sizeof(float)), *x_zero = malloc(n_stream * sizeof(float));
    float *x_tiny = malloc(n_stream * sizeof(float)), *x_big = malloc(n_stream * sizeof(float));
    for (size_t i = 0; i < n_stream; i++) {
        x_tiny[i] = 1e-36f * frand(), x_big[i] = 100.0f * frand();
        /* beside values this small a subnormal would still change the sums */
        x_sub[i] = x_zero[i] = x_tiny[i];
        if (i % 5 == 0) {
            uint32_t bits = (rng() & 0x80000000u) | (1u + rng() % 0x7FFFFFu);
            memcpy(&x_sub[i], &bits, sizeof bits);
            x_zero[i] = copysignf(0.0f, x_sub[i]);
        }
    }
    size_t per_window = 0;
    for (uint32_t l = 0; l < c->n_levels; l++) per_window += (size_t)c->channels[l] * c->level_len[l];
    float *got = malloc(per_window * sizeof(float)), *want = malloc(per_window * sizeof(float));
    float *rec = malloc(n_x * sizeof(float)), *rec_want = malloc(n_x * sizeof(float));
#if defined(HIMAE_FPMODE_X86)
    const himae_fpmode modes[] = {0x1F80, 0x1F80 | 0x8000, 0x1F80 | 0x0040, 0x1F80 | 0x8040, 0x1F80 | 0x6000};
#elif defined(HIMAE_FPMODE_ARM64)
    const himae_fpmode modes[] = {0, 1u << 24, 3u << 22};
#else
    const himae_fpmode modes[] = {0};
#endif
    const himae_fpmode original = himae_fpmode_get();
    int runs = 0, rounded = 0;
    for (int isa = 0; isa < HIMAE_ISA_COUNT; isa++) {
        if (!himae_ukernel_for((enum himae_isa)isa, HIMAE_F32) || !himae_isa_supported((enum himae_isa)isa)) continue;
        const char *name = himae_isa_name((enum himae_isa)isa);
        himae_model *mp = NULL, *mz = NULL;
        int rc = himae_load_buffer(planted, size, name, NULL, 0, &mp, err, sizeof err);
        CHECK(rc == HIMAE_OK, "%s %s: planted subnormals refused: %s", path, name, err);
        rc = rc ? rc : himae_load_buffer(zeroed, size, name, NULL, 0, &mz, err, sizeof err);
        if (rc) {
            himae_free(mp);
            continue;
        }
        const size_t nr = himae_model_ukernel(mp)->nr;
        for (uint32_t l = 0; l < c->n_levels; l++)
            for (int part = HIMAE_CONV1; part <= HIMAE_SKIP; part++) {
                const himae_conv *a = himae_model_encoder_conv(mp, (int)l, (enum himae_encoder_part)part);
                const himae_conv *b = himae_model_encoder_conv(mz, (int)l, (enum himae_encoder_part)part);
                size_t n = packed_floats(a, nr), tail = himae_packed_size(a->cin, a->cout, 1, nr);
                CHECK(memcmp(a->packed, b->packed, n * sizeof(float)) == 0 && count_subnormal(a->packed, n) == 0,
                      "%s %s level %u part %d: subnormal weights not packed as zeros", path, name, l, part);
                CHECK(!a->tail || memcmp(a->tail, b->tail, tail * sizeof(float)) == 0,
                      "%s %s level %u part %d: subnormal weights not packed as zeros (tail)", path, name, l, part);
            }
        /* DAZ: subnormal inputs read as zeros; FTZ: no subnormal written. */
        float *levels[HIMAE_MAX_LEVELS], *rows_a[HIMAE_MAX_LEVELS], *rows_b[HIMAE_MAX_LEVELS];
        int64_t n_a[HIMAE_MAX_LEVELS], n_b[HIMAE_MAX_LEVELS];
        for (uint32_t l = 0, at = 0; l < c->n_levels; at += c->channels[l] * c->level_len[l], l++) levels[l] = got + at;
        himae_encode(mp, x_sub, 1, levels, NULL, err, sizeof err);
        memcpy(want, got, per_window * sizeof(float));
        himae_encode(mp, x_zero, 1, levels, NULL, err, sizeof err);
        CHECK(memcmp(want, got, per_window * sizeof(float)) == 0, "%s %s: subnormal inputs change encode", path, name);
        if (c->flags & 1) {
            himae_reconstruct(mp, x_sub, 1, rec_want, err, sizeof err);
            himae_reconstruct(mp, x_zero, 1, rec, err, sizeof err);
            CHECK(memcmp(rec, rec_want, n_x * sizeof(float)) == 0, "%s %s: subnormal inputs change reconstruct", path, name);
        }
        stream_rows(mp, x_sub, n_stream / c->in_channels, rows_a, n_a);
        stream_rows(mp, x_zero, n_stream / c->in_channels, rows_b, n_b);
        for (uint32_t l = 0; l < c->n_levels; l++) {
            CHECK(n_a[l] == n_b[l] && memcmp(rows_a[l], rows_b[l], (size_t)n_a[l] * c->channels[l] * sizeof(float)) == 0,
                  "%s %s level %u: subnormal inputs change stream mode", path, name, l);
            free(rows_a[l]), free(rows_b[l]);
        }
        for (const float *x = x_tiny; x; x = x == x_tiny ? x_big : NULL) {
            size_t found = 0;
            himae_encode(mp, x, 1, levels, NULL, err, sizeof err);
            found += count_subnormal(got, per_window);
            if (c->flags & 1) {
                himae_reconstruct(mp, x, 1, rec, err, sizeof err);
                found += count_subnormal(rec, n_x);
            }
            stream_rows(mp, x, n_stream / c->in_channels, rows_a, n_a);
            for (uint32_t l = 0; l < c->n_levels; l++) {
                found += count_subnormal(rows_a[l], (size_t)n_a[l] * c->channels[l]);
                free(rows_a[l]);
            }
            CHECK(found == 0, "%s %s: %zu subnormal outputs at input scale %g", path, name, found, x == x_tiny ? 1e-36 : 100.0);
        }
        /* The caller's mode, flags included, is what it was after every call. */
        himae_stream *s = NULL;
        rc = himae_stream_create(mp, &s, err, sizeof err);
        CHECK(rc == 0, "%s %s: stream create: %s", path, name, err);
        int64_t n_out[HIMAE_STREAM_MAX_LEVELS];
        float *push_out[HIMAE_STREAM_MAX_LEVELS];
        for (uint32_t l = 0; l < c->n_levels; l++) push_out[l] = malloc((c->window + 1) * c->channels[l] * sizeof(float));
        for (size_t i = 0; s && i < sizeof modes / sizeof modes[0]; i++) {
            himae_fpmode_set(modes[i]);
            himae_encode(mp, x_big, 1, levels, NULL, err, sizeof err);
            himae_fpmode after_encode = himae_fpmode_get();
            himae_fpmode_set(modes[i]);
            himae_reconstruct(mp, x_big, 1, rec, err, sizeof err); /* also without a decoder: the error path */
            himae_fpmode after_reconstruct = himae_fpmode_get();
            himae_fpmode_set(modes[i]);
            himae_stream_push(s, x_big, (int64_t)(n_stream / c->in_channels), c->window, 0, push_out, n_out, err,
                              sizeof err);
            himae_fpmode after_push = himae_fpmode_get();
            himae_fpmode_set(modes[i]);
            himae_stream_prepare(s);
            himae_fpmode after_prepare = himae_fpmode_get();
            himae_fpmode_set(original);
            CHECK(after_encode == modes[i] && after_reconstruct == modes[i] && after_push == modes[i] &&
                      after_prepare == modes[i],
                  "%s %s: caller's mode %#llx left as %#llx (encode), %#llx (reconstruct), %#llx (push), "
                  "%#llx (prepare)", path, name, (unsigned long long)modes[i], (unsigned long long)after_encode,
                  (unsigned long long)after_reconstruct, (unsigned long long)after_push,
                  (unsigned long long)after_prepare);
            himae_stream_reset(s);
        }
        for (uint32_t l = 0; l < c->n_levels; l++) free(push_out[l]);
        himae_stream_free(s);
        /* Rounded to nearest whatever the caller's mode (modes[0] is the
         * default): loading, encode and stream mode give the same bits in
         * every precision (int8's row rounding too: lrintf and VCVTPS2DQ
         * follow the mode, FCVTNS does not). */
        for (int p = 0; p < HIMAE_PRECISION_COUNT; p++) {
            const char *pname = himae_precision_name((enum himae_precision)p);
            if (!himae_ukernel_for((enum himae_isa)isa, (enum himae_precision)p)) continue;
            for (uint32_t l = 0; l < c->n_levels; l++) rows_b[l] = NULL;
            for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
                himae_model *m = NULL;
                himae_fpmode_set(modes[i]);
                rc = himae_load_buffer(buf, size, name, pname, 0, &m, err, sizeof err);
                if (rc == HIMAE_OK) {
                    himae_encode(m, x_big, 1, levels, NULL, err, sizeof err);
                    stream_rows(m, x_big, n_stream / c->in_channels, rows_a, n_a);
                }
                himae_fpmode_set(original);
                CHECK(rc == HIMAE_OK, "%s %s %s: load under mode %#llx: %s", path, name, pname,
                      (unsigned long long)modes[i], err);
                if (rc) break;
                himae_free(m);
                if (i == 0) memcpy(want, got, per_window * sizeof(float));
                CHECK(memcmp(want, got, per_window * sizeof(float)) == 0, "%s %s %s: encode differs under mode %#llx",
                      path, name, pname, (unsigned long long)modes[i]);
                for (uint32_t l = 0; l < c->n_levels; l++) {
                    if (i == 0) rows_b[l] = rows_a[l], n_b[l] = n_a[l];
                    CHECK(n_a[l] == n_b[l] &&
                              memcmp(rows_a[l], rows_b[l], (size_t)n_a[l] * c->channels[l] * sizeof(float)) == 0,
                          "%s %s %s level %u: stream mode differs under mode %#llx", path, name, pname, l,
                          (unsigned long long)modes[i]);
                    if (i > 0) free(rows_a[l]);
                }
            }
            for (uint32_t l = 0; l < c->n_levels; l++) free(rows_b[l]);
            rounded++;
        }
        himae_free(mp), himae_free(mz);
        runs++;
    }
    printf("fpmode %s: %d ISAs checked, %d kernels under every rounding mode\n", path, runs, rounded);
    free(planted), free(zeroed), free(x_sub), free(x_zero), free(x_tiny), free(x_big);
    free(got), free(want), free(rec), free(rec_want), free(buf);
}

/* The heads on every f32 kernel (the transform's GEMM) and on plain float loops against the double
 * path on the same numbers: two levels read in place from buffers wider than a window, a spectral
 * head over both spectra, a linear head of pools, a purity and a combined purity; windows taken
 * from a ring of parts computed ahead give the same outputs; peak and purity at their edges. */
#define H_LEVELS 2
#define H_WINDOWS 3
static void test_heads(void) {
    const int64_t lengths[H_LEVELS] = {37, 11}, channels[H_LEVELS] = {6, 12}, cols[H_LEVELS] = {70, 30};
    const int64_t spec_level[2] = {0, 1}, spec_bins[2] = {9, 5}, spec_half[2] = {1, 2}, rows[2] = {3, 12};
    const uint8_t pooled[H_LEVELS] = {1, 1};
    const int64_t rate_specs[2] = {0, 1}, combined[2] = {0, 1};
    const double rate_weights[2] = {1.0, 0.5}, rate_lo = 3, rate_df = 0.1;
    enum { FEATURES = 6 + 12 + 1 + 1, OUTPUTS = 2, MAXB = 9, WIDTH = 12 };
    const int64_t segment[4 * 3] = {HIMAE_SEG_MEAN, 0, 0, HIMAE_SEG_STD, 1, 6, HIMAE_SEG_PURITY, 1, 18,
                                    HIMAE_SEG_COMBINED, 0, 19};
    const int64_t starts[H_WINDOWS * H_LEVELS] = {0, 0, 20, 9, 33, 19};
    float *buf32[H_LEVELS], *basis32[2], *dft32[2];
    double *buf64[H_LEVELS], *basis64[2], *dft64[2], weights[FEATURES * OUTPUTS], bias[OUTPUTS] = {0.1, -0.2};
    for (int l = 0; l < H_LEVELS; l++) {
        size_t n = (size_t)(channels[l] * cols[l]);
        buf32[l] = malloc(n * sizeof(float)), buf64[l] = malloc(n * sizeof(double));
        for (size_t i = 0; i < n; i++) buf64[l][i] = buf32[l][i] = frand() + 0.5f * (float)sin(0.7 * (double)(i % 70));
    }
    for (int s = 0; s < 2; s++) {
        size_t nb = (size_t)(rows[s] * channels[spec_level[s]]), nd = (size_t)(lengths[spec_level[s]] * 2 * spec_bins[s]);
        basis32[s] = malloc(nb * sizeof(float)), basis64[s] = malloc(nb * sizeof(double));
        dft32[s] = malloc(nd * sizeof(float)), dft64[s] = malloc(nd * sizeof(double));
        for (size_t i = 0; i < nb; i++) basis64[s][i] = basis32[s][i] = frand();
        for (size_t i = 0; i < nd; i++) dft64[s][i] = dft32[s][i] = frand();
    }
    for (size_t i = 0; i < FEATURES * OUTPUTS; i++) weights[i] = frand();
    himae_heads h = {0, H_LEVELS, 2, MAXB, WIDTH, lengths, channels, pooled, spec_level, spec_bins, spec_half, rows,
                     (const void *const *)basis64, (const void *const *)dft64, NULL, NULL, 1, 2, rate_specs,
                     rate_weights, &rate_lo, &rate_df, 4, 2, segment, combined, FEATURES, OUTPUTS, weights, bias,
                     NULL};
    enum { SPEC = 2 * MAXB, POOL = H_LEVELS * WIDTH };
    double power[2][H_WINDOWS * SPEC], mean[2][H_WINDOWS * POOL], std[2][H_WINDOWS * POOL];
    double rates[2][H_WINDOWS], scores[2][H_WINDOWS * OUTPUTS], features[2][H_WINDOWS * FEATURES];
    uint8_t todo[H_WINDOWS * H_LEVELS];
    memset(power, 0, sizeof power); /* bins past a spectrum's own are never written */
    h.is_double = 1, h.work = malloc(himae_heads_work_bytes(&h));
    himae_heads_run(&h, (const void *const *)buf64, cols, H_WINDOWS, starts, NULL, NULL, power[0], mean[0], std[0],
                    todo, rates[0], scores[0], features[0]);
    free(h.work);
    int cases = 0;
    for (int i = -1; i < N_KERNELS; i++) { /* -1: float without a kernel */
        const himae_ukernel *uk = i < 0 ? NULL : kernel_at(i);
        if (i >= 0 && (!uk || uk->precision != HIMAE_F32)) continue;
        float *packed[2] = {NULL, NULL};
        for (int s = 0; uk && s < 2; s++) {
            size_t n = (size_t)lengths[spec_level[s]], width = 2 * (size_t)spec_bins[s];
            packed[s] = malloc(himae_heads_packed_size(uk, n, width) * sizeof(float));
            CHECK(himae_heads_pack_dft(uk, packed[s], dft32[s], n, width) == HIMAE_OK, "heads: packing");
        }
        h.is_double = 0, h.bases = (const void *const *)basis32, h.dfts = (const void *const *)dft32;
        h.uk = uk, h.packed = uk ? (const void *const *)packed : NULL;
        h.work = malloc(himae_heads_work_bytes(&h));
        himae_heads_run(&h, (const void *const *)buf32, cols, H_WINDOWS, starts, NULL, NULL, power[1], mean[1],
                        std[1], todo, rates[1], scores[1], features[1]);
        const char *name = uk ? uk->name : "plain loops";
        for (size_t j = 0; j < H_WINDOWS * SPEC; j++)
            CHECK(fabs(power[1][j] - power[0][j]) <= 1e-4 * (fabs(power[0][j]) + 1), "heads %s: power %zu %g vs %g",
                  name, j, power[1][j], power[0][j]);
        for (size_t j = 0; j < H_WINDOWS * FEATURES; j++)
            CHECK(fabs(features[1][j] - features[0][j]) <= 1e-5, "heads %s: feature %zu %g vs %g", name, j,
                  features[1][j], features[0][j]);
        for (size_t j = 0; j < H_WINDOWS; j++)
            CHECK(fabs(rates[1][j] - rates[0][j]) <= 1e-3, "heads %s: rate %zu %g vs %g", name, j, rates[1][j],
                  rates[0][j]);
        /* window 1's level 0 computed ahead into a ring slot; the burst takes it and frees the slot */
        int64_t keys[H_WINDOWS] = {100, 101, 102}, ring_keys[2] = {-1, 101};
        double ring_power[2 * SPEC], ring_mean[2 * POOL], ring_std[2 * POOL], r[H_WINDOWS], sc[H_WINDOWS * OUTPUTS];
        double f[H_WINDOWS * FEATURES];
        memset(ring_power, 0, sizeof ring_power);
        uint8_t done[2 * H_LEVELS] = {0, 0, 1, 0}, ahead[H_LEVELS] = {1, 0};
        himae_heads_levels(&h, (const void *const *)buf32, cols, 1, starts + H_LEVELS, ahead, ring_power + SPEC,
                           ring_mean + POOL, ring_std + POOL);
        himae_heads_ring ring = {2, ring_keys, ring_power, ring_mean, ring_std, done};
        himae_heads_run(&h, (const void *const *)buf32, cols, H_WINDOWS, starts, keys, &ring, power[1], mean[1],
                        std[1], todo, r, sc, f);
        CHECK(ring_keys[1] == -1 && todo[H_LEVELS] == 0 && todo[H_LEVELS + 1] == 1, "heads %s: ring slot not taken",
              name);
        CHECK(!memcmp(r, rates[1], sizeof r) && !memcmp(sc, scores[1], sizeof sc) && !memcmp(f, features[1], sizeof f),
              "heads %s: parts computed ahead change the outputs", name);
        free(h.work), free(packed[0]), free(packed[1]);
        cases++;
    }
    const double silent[4] = {0, 0, 0, 0}, edge[4] = {9, 1, 0, 0}, bend[3] = {1, 3, 2};
    CHECK(isnan(himae_peak_bin(silent, 4)) && himae_spectrum_purity(silent, 4, 1) == 0, "heads: silence");
    CHECK(himae_peak_bin(edge, 4) == 0 && himae_spectrum_purity(edge, 4, 1) == 1.0, "heads: a peak at the first bin");
    CHECK(fabs(himae_peak_bin(bend, 3) - (1 + 0.5 * (1 - 2) / (1 - 6 + 2))) < 1e-15, "heads: parabola vertex");
    for (int l = 0; l < H_LEVELS; l++) free(buf32[l]), free(buf64[l]);
    for (int s = 0; s < 2; s++) free(basis32[s]), free(basis64[s]), free(dft32[s]), free(dft64[s]);
    printf("heads: %d kernels checked\n", cases);
}

/* The stream checks --checks may name, in the order they run. */
static const struct {
    const char *name;
    void (*run)(const char *path);
} STREAM_CHECKS[] = {{"stream", test_stream}, {"shared", test_shared}, {"group", test_group}, {"fpmode", test_fpmode}};
#define N_STREAM_CHECKS (sizeof STREAM_CHECKS / sizeof STREAM_CHECKS[0])
#define ALL_CHECKS ((1u << N_STREAM_CHECKS) - 1)

/* The set of stream checks a comma-separated list names (0 for a name that is none of them). */
static unsigned checks_named(const char *list) {
    unsigned set = 0;
    for (const char *at = list; *at;) {
        size_t n = strcspn(at, ",");
        unsigned found = 0;
        for (size_t c = 0; c < N_STREAM_CHECKS; c++)
            if (strlen(STREAM_CHECKS[c].name) == n && strncmp(at, STREAM_CHECKS[c].name, n) == 0) found = 1u << c;
        if (!found) return 0;
        set |= found;
        at += n + (at[n] == ',');
    }
    return set;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MANIFEST [--no-units] [[--window-only | --checks LIST] MODEL...]\n", argv[0]);
        return 2;
    }
    int first = 2;
    printf("isa: best %s\n", himae_isa_name(himae_isa_best()));
    if (argc > 2 && strcmp(argv[2], "--no-units") == 0) {
        first = 3;
    } else {
        for (int i = 0; i < N_KERNELS; i++)
            if (kernel_at(i)) printf("kernel: %s\n", kernel_at(i)->name);
        test_corpus(argv[1]);
        test_crc32();
        test_conv();
        test_wide_rows();
        test_gathered();
        test_winograd();
        test_gelu();
        test_heads();
    }
    /* --window-only: the next model's window mode and decoder alone (under an emulator, a large
     * model's stream, group and flush-to-zero checks cost minutes and reach no code a smaller one
     * does not) */
    for (int i = first, checks = ALL_CHECKS; i < argc; i++) {
        if (strcmp(argv[i], "--window-only") == 0) {
            checks = 0;
            continue;
        }
        if (strcmp(argv[i], "--checks") == 0) {
            checks = i + 1 < argc ? checks_named(argv[++i]) : 0;
            if (!checks) {
                fprintf(stderr, "--checks: a comma-separated list of stream, shared, group, fpmode\n");
                return 2;
            }
            continue;
        }
        test_model(argv[i]);
        for (size_t c = 0; c < N_STREAM_CHECKS; c++)
            if (checks & 1u << c) STREAM_CHECKS[c].run(argv[i]);
        checks = ALL_CHECKS;
    }
    printf("%s (%d failures)\n", failures ? "FAILED" : "OK", failures);
    return failures ? 1 : 0;
}
