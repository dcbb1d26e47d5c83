/* decoder.c - the window-mode decoder: phase-split transposed convolutions,
 * crop, concat with the encoder skip, conv + GELU twice per stage, tanh head.
 * All arithmetic goes through himae_conv1d_forward or himae_wino_forward
 * (the GEMM micro-kernels); the only other work is copying rows, which the
 * concat needs anyway. */
#include <math.h>
#include <string.h>

#include "decoder.h"

#define FLOATS_ALIGN 16 /* 64 bytes */

static size_t align_floats(size_t n) { return (n + FLOATS_ALIGN - 1) / FLOATS_ALIGN * FLOATS_ALIGN; }

/* Zero rows past a conv's input beyond its padding: a Winograd F(2,5)
 * tile over an odd number of rows reads one more. */
#define SLACK 1

typedef struct {
    float *phase; /* even phase rows, then odd phase rows */
    float *cat;   /* (len + 2 pad + SLACK) rows of [up, skip] */
    float *hid;   /* (len + 2 pad + SLACK) rows: conv1 output */
    float *deep;  /* (len + 2 pad + SLACK) rows: d_t, conv2 output */
} work_areas;

/* Floats of each work area (the largest stage's need, 64-byte multiples); their total. */
static size_t sizes(const himae_config *c, size_t pad, size_t *phase, size_t *cat, size_t *row) {
    *phase = 2 * (size_t)c->level_len[0] * c->in_channels; /* the head */
    *cat = *row = 0;
    for (uint32_t t = 0; t + 1 < c->n_levels; t++) {
        size_t ct = c->channels[t], rows = c->level_len[t] + 2 * pad + SLACK;
        size_t ph = 2 * (size_t)c->level_len[t + 1] * ct;
        if (ph > *phase) *phase = ph;
        if (rows * 2 * ct > *cat) *cat = rows * 2 * ct;
        if (rows * ct > *row) *row = rows * ct;
    }
    *phase = align_floats(*phase);
    *cat = align_floats(*cat);
    *row = align_floats(*row);
    return *phase + *cat + 2 * *row;
}

size_t himae_decoder_work_floats(const himae_config *c, size_t pad) {
    size_t phase, cat, row;
    return sizes(c, pad, &phase, &cat, &row);
}

/* Zero the `pad` rows before row 0 and the pad + SLACK after row n-1 of a
 * buffer whose rows are `width` floats: a convolution reads them as its
 * zero padding. */
static void clear_pad(float *row0, size_t n, size_t width, size_t pad) {
    memset(row0 - pad * width, 0, pad * width * sizeof(float));
    memset(row0 + n * width, 0, (pad + SLACK) * width * sizeof(float));
}

/* out = GELU(conv(in)), by the conv's Winograd form where it has one. */
static void conv_gelu(const himae_conv *conv, const himae_wino *wino, const himae_ukernel *uk, float *out,
                      const float *in, size_t n, float *wino_work) {
    if (wino->packed)
        himae_wino_forward(wino, uk, out, in, n, 0, 1, wino_work);
    else
        himae_conv1d_forward(conv, out, in, n, NULL, 1);
}

/* Both phases of a stride-2 transposed conv over n input rows: even output
 * rows (2m) to phase, odd (2m+1) to phase + n * cout. */
static void upsample(const himae_tconv *tc, float *phase, const float *in,
                     size_t n) {
    himae_conv1d_forward(&tc->phase[0], phase, in, n, NULL, 0);
    himae_conv1d_forward(&tc->phase[1], phase + n * tc->phase[0].cout, in, n, NULL, 0);
}

/* Row r of the upsampled signal, r < 2 n. */
static const float *up_row(const float *phase, size_t n, size_t cout, size_t r) {
    return phase + ((r & 1) * n + r / 2) * cout;
}

void himae_decoder_forward(const himae_config *c, const himae_ukernel *uk, size_t pad,
                           const himae_stage *stage, const himae_tconv *head,
                           const float *const *levels, float *work, float *wino_work, float *out) {
    size_t phase_n, cat_n, row_n;
    sizes(c, pad, &phase_n, &cat_n, &row_n);
    work_areas w = {work, work + phase_n, work + phase_n + cat_n, work + phase_n + cat_n + row_n};
    const float *deep = levels[c->n_levels - 1];
    for (uint32_t t = c->n_levels - 1; t-- > 0;) {
        const himae_stage *s = &stage[t];
        const size_t ct = c->channels[t], nt = c->level_len[t], nd = c->level_len[t + 1];
        upsample(&s->up, w.phase, deep, nd);
        /* Crop to the skip's length and concatenate [up, skip] row by row. */
        float *cat = w.cat + pad * 2 * ct;
        for (size_t r = 0; r < nt; r++) {
            memcpy(cat + r * 2 * ct, up_row(w.phase, nd, ct, r), ct * sizeof(float));
            memcpy(cat + r * 2 * ct + ct, levels[t] + r * ct, ct * sizeof(float));
        }
        clear_pad(cat, nt, 2 * ct, pad);
        float *hid = w.hid + pad * ct;
        conv_gelu(&s->conv1, &s->conv1_wino, uk, hid, cat, nt, wino_work);
        clear_pad(hid, nt, ct, pad);
        float *d = w.deep + pad * ct;
        conv_gelu(&s->conv2, &s->conv2_wino, uk, d, hid, nt, wino_work);
        clear_pad(d, nt, ct, pad);
        deep = d;
    }
    const size_t cin = c->in_channels, n0 = c->level_len[0], L = c->window;
    upsample(head, w.phase, deep, n0);
    for (size_t r = 0; r < L; r++) {
        const float *src = up_row(w.phase, n0, cin, r);
        for (size_t ch = 0; ch < cin; ch++) out[ch * L + r] = tanhf(src[ch]);
    }
}
