/* heads.c - a model's probe heads over a burst of windows (see heads.h). */
#include "heads.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fpmode.h"

/* y (rows, width) = p (rows, n) times the DFT packed as a kernel-1 conv of n inputs and width
 * outputs (zero biases), by the micro-kernel: the transform is most of a spectrum's arithmetic. */
static int transform_f32(const himae_ukernel *uk, const void *packed, const float *p, size_t rows, size_t n,
                         size_t width, float *y) {
    if (!uk || !packed) return 0;
    const size_t nr = uk->nr, panel = nr * (1 + n);
    for (size_t n0 = 0; n0 < width; n0 += nr) {
        const void *w = himae_weights_at(uk, packed, (n0 / nr) * panel);
        const size_t nc = width - n0 < nr ? width - n0 : nr;
        for (size_t r = 0; r < rows; r += uk->mr) {
            const size_t m = rows - r < uk->mr ? rows - r : uk->mr;
            uk->fn(m, nc, n, p + r * n, n, w, y + r * width + n0, width, NULL, 0, 0);
        }
    }
    return 1;
}

#define REAL float
#define NAME(x) x##_f32
#define TRANSFORMED transform_f32
#include "heads_real.h"
#undef REAL
#undef NAME
#undef TRANSFORMED
#define REAL double
#define NAME(x) x##_f64
#define TRANSFORMED(uk, packed, p, rows, n, width, y) ((void)(uk), (void)(packed), 0)
#include "heads_real.h"
#undef REAL
#undef NAME
#undef TRANSFORMED

size_t himae_heads_packed_size(const himae_ukernel *uk, size_t n, size_t width) {
    return himae_packed_size(n, width, 1, uk->nr);
}

int himae_heads_pack_dft(const himae_ukernel *uk, float *dst, const float *dft, size_t n, size_t width) {
    /* column j of the DFT is output j of a kernel-1 conv over n inputs, with zero biases */
    float *zeros = calloc(width ? width : 1, sizeof(float));
    if (!zeros) return HIMAE_ENOMEM;
    himae_pack_conv(dst, dft, zeros, n, width, 1, uk->nr, 1, (ptrdiff_t)width, 0, 0);
    free(zeros);
    return HIMAE_OK;
}

/* Bytes of the largest spectrum's projection and transform, rounded up to whole doubles. */
static size_t spectrum_work_bytes(const himae_heads *h) {
    size_t most = 0;
    for (size_t s = 0; s < h->spectra; s++) {
        size_t n = (size_t)h->lengths[h->spec_level[s]], need = (size_t)h->basis_rows[s] * (n + 2 * h->spec_bins[s]);
        if (need > most) most = need;
    }
    most *= h->is_double ? sizeof(double) : sizeof(float);
    return (most + sizeof(double) - 1) / sizeof(double) * sizeof(double);
}

size_t himae_heads_work_bytes(const himae_heads *h) { return spectrum_work_bytes(h) + h->max_bins * sizeof(double); }

void himae_heads_levels(const himae_heads *h, const void *const *buffers, const int64_t *cols, size_t count,
                        const int64_t *starts, const uint8_t *todo, double *power, double *mean, double *std) {
    himae_fpmode saved = himae_fpmode_flush();
    if (h->is_double)
        levels_f64(h, buffers, cols, count, starts, todo, power, mean, std);
    else
        levels_f32(h, buffers, cols, count, starts, todo, power, mean, std);
    himae_fpmode_set(saved);
}

double himae_peak_bin(const double *s, size_t n) {
    size_t k = 0;
    int any_power = 0;
    for (size_t j = 0; j < n; j++) {
        any_power |= s[j] != 0;
        if (s[j] > s[k]) k = j;
    }
    if (!any_power) return NAN;
    double delta = 0;
    if (k > 0 && k + 1 < n) {
        const double a = s[k - 1], b = s[k], c = s[k + 1], den = a - 2 * b + c;
        if (den < 0) delta = 0.5 * (a - c) / den;
    }
    return (double)k + delta;
}

double himae_spectrum_purity(const double *s, size_t n, size_t half) {
    size_t k = 0;
    double total = 0, near = 0;
    for (size_t j = 0; j < n; j++) {
        total += s[j];
        if (s[j] > s[k]) k = j;
    }
    const size_t lo = k > half ? k - half : 0, hi = k + half + 1 < n ? k + half + 1 : n;
    for (size_t j = lo; j < hi; j++) near += s[j];
    return total > 0 ? near / total : 0.0;
}

/* Into total: the spectra of power listed in specs (to the first -1 of width), each scaled to unit
 * sum, weighted and added over the first one's bins, as a spectral head sums its levels; returns
 * those bins. */
static size_t summed(const himae_heads *h, const double *power, const int64_t *specs, size_t width,
                     const double *weights, double *total) {
    const size_t bins = (size_t)h->spec_bins[specs[0]];
    for (size_t k = 0; k < bins; k++) total[k] = 0;
    for (size_t j = 0; j < width && specs[j] >= 0; j++) {
        const size_t s = (size_t)specs[j], have = (size_t)h->spec_bins[s];
        const double *p = power + s * h->max_bins;
        double sum = 0;
        for (size_t k = 0; k < have; k++) sum += p[k];
        if (sum > 0)
            for (size_t k = 0; k < bins && k < have; k++) total[k] += (weights ? weights[j] : 1.0) * (p[k] / sum);
    }
    return bins;
}

/* Rates, features and scores of window w from its spectra and pools. */
static void finish(const himae_heads *h, const double *power, const double *mean, const double *std,
                   double *total, double *rates, double *scores, double *features) {
    for (size_t r = 0; r < h->rate_heads; r++) {
        size_t bins = summed(h, power, h->rate_specs + r * h->rate_width, h->rate_width,
                             h->rate_weights + r * h->rate_width, total);
        rates[r] = 60.0 * (h->rate_lo[r] + himae_peak_bin(total, bins)) * h->rate_df[r];
    }
    for (size_t g = 0; g < h->segments; g++) {
        const int64_t kind = h->segment[3 * g], arg = h->segment[3 * g + 1], at = h->segment[3 * g + 2];
        if (kind == HIMAE_SEG_MEAN || kind == HIMAE_SEG_STD) {
            const double *src = (kind == HIMAE_SEG_MEAN ? mean : std) + arg * h->width;
            memcpy(features + at, src, (size_t)h->channels[arg] * sizeof(double));
        } else if (kind == HIMAE_SEG_PURITY) {
            features[at] = himae_spectrum_purity(power + arg * h->max_bins, (size_t)h->spec_bins[arg],
                                                 (size_t)h->spec_half[arg]);
        } else {
            const int64_t *specs = h->combined + arg * h->combined_width;
            size_t bins = summed(h, power, specs, h->combined_width, NULL, total);
            features[at] = himae_spectrum_purity(total, bins, (size_t)h->spec_half[specs[0]]);
        }
    }
    for (size_t o = 0; o < h->outputs; o++) {
        double v = h->bias[o];
        for (size_t f = 0; f < h->features; f++) v += features[f] * h->weights[f * h->outputs + o];
        scores[o] = v;
    }
}

void himae_heads_run(const himae_heads *h, const void *const *buffers, const int64_t *cols, size_t count,
                     const int64_t *starts, const int64_t *keys, himae_heads_ring *ring, double *power,
                     double *mean, double *std, uint8_t *todo, double *rates, double *scores,
                     double *features) {
    const size_t L = h->levels, spec = h->spectra * h->max_bins, pool = L * h->width;
    memset(todo, 1, count * L);
    for (size_t w = 0; keys && ring && w < count; w++)
        for (size_t k = 0; k < ring->slots; k++) {
            if (ring->keys[k] != keys[w]) continue;
            memcpy(power + w * spec, ring->power + k * spec, spec * sizeof(double));
            memcpy(mean + w * pool, ring->mean + k * pool, pool * sizeof(double));
            memcpy(std + w * pool, ring->std + k * pool, pool * sizeof(double));
            for (size_t l = 0; l < L; l++) todo[w * L + l] = !ring->done[k * L + l];
            ring->keys[k] = -1; /* taken */
            break;
        }
    himae_heads_levels(h, buffers, cols, count, starts, todo, power, mean, std);
    double *total = (double *)((char *)h->work + spectrum_work_bytes(h));
    himae_fpmode saved = himae_fpmode_flush();
    for (size_t w = 0; w < count; w++)
        finish(h, power + w * spec, mean + w * pool, std + w * pool, total, rates + w * h->rate_heads,
               scores + w * h->outputs, features + w * h->features);
    himae_fpmode_set(saved);
}
