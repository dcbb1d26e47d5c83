/* heads.h - a model's probe heads over windows of per-position activations.
 *
 * What each head computes is defined in himae_stream/probes.py; the plan
 * (himae_stream/headplan.py) turns a model's heads into the flat tables
 * below once per window shape, and these functions apply it. Live, a
 * record's heads run right after the event loop's wait for the device,
 * from cold caches: one C call per burst of windows, with no allocation,
 * keeps that path short (its numba form took 80 us a burst there, most of
 * it the dispatch of thirty arguments).
 *
 * Windows are read in place: level l of window w is the n_l = lengths[l]
 * columns from starts[w * levels + l] of buffers[l], a (channels[l], cols[l])
 * row-major array of float or double (`is_double`), as are the bases and
 * DFT matrices. Spectra, pools and outputs are double. */
#ifndef HIMAE_HEADS_H
#define HIMAE_HEADS_H

#include <stddef.h>
#include <stdint.h>

#include "internal.h"

typedef struct himae_heads {
    int is_double;
    size_t levels, spectra, max_bins, width;
    const int64_t *lengths, *channels; /* per level */
    const uint8_t *pooled;             /* per level: its mean and std are features */
    /* spectrum s: level spec_level[s], spec_bins[s] bins, purity within spec_half[s] bins of the peak;
     * bases[s] (basis_rows[s], channels[level]) projects the level's channels, dfts[s]
     * (lengths[level], 2 * spec_bins[s]) centres, tapers and transforms (cosines, then sines) */
    const int64_t *spec_level, *spec_bins, *spec_half, *basis_rows;
    const void *const *bases, *const *dfts;
    /* float plans: the micro-kernel that transforms, and each spectrum's DFT packed for it
     * (himae_heads_pack_dft); NULL: plain loops */
    const himae_ukernel *uk;
    const void *const *packed;
    /* spectral head h: its spectra rate_specs[h * rate_width + j] (to the first -1), weighted by
     * rate_weights[...]; its rate is 60 (rate_lo[h] + peak bin) rate_df[h] */
    size_t rate_heads, rate_width;
    const int64_t *rate_specs;
    const double *rate_weights, *rate_lo, *rate_df;
    /* linear features: segments of (kind, arg, first feature), kinds as HIMAE_SEG_*; a combined
     * purity reads the summed unit spectra of combined[arg * combined_width + j] (to the first -1) */
    size_t segments, combined_width;
    const int64_t *segment, *combined;
    size_t features, outputs;
    const double *weights, *bias; /* (features, outputs), (outputs) */
    void *work;                   /* himae_heads_work_bytes */
} himae_heads;

enum { HIMAE_SEG_MEAN, HIMAE_SEG_STD, HIMAE_SEG_PURITY, HIMAE_SEG_COMBINED };

/* Windows' parts computed ahead of their record, keyed by their first input sample (-1: free). */
typedef struct himae_heads_ring {
    size_t slots;
    int64_t *keys;
    double *power, *mean, *std; /* as himae_heads_levels' outputs, a slot per window */
    uint8_t *done;              /* (slots, levels): the levels computed */
} himae_heads_ring;

/* Floats of a DFT (n, width) packed for the f32 micro-kernel uk, and the packing (HIMAE_OK, or
 * HIMAE_ENOMEM). */
size_t himae_heads_packed_size(const himae_ukernel *uk, size_t n, size_t width);
int himae_heads_pack_dft(const himae_ukernel *uk, float *dst, const float *dft, size_t n, size_t width);

/* Bytes of work a plan needs (its largest spectrum's projection and transform, two band spectra). */
size_t himae_heads_work_bytes(const himae_heads *h);

/* Window w's spectra into power (count, spectra, max_bins) and pools into mean and std (count,
 * levels, width), for the levels todo (count, levels) marks. */
void himae_heads_levels(const himae_heads *h, const void *const *buffers, const int64_t *cols, size_t count,
                        const int64_t *starts, const uint8_t *todo, double *power, double *mean, double *std);

/* A burst: windows whose key (keys, or NULL) the ring holds take its parts out of it (the slot is
 * freed) and compute only the levels not done; the rest compute every level; then rates (count,
 * rate_heads; NaN: no power in the band), features (count, features) and scores (count, outputs).
 * todo is (count, levels) of work. */
void himae_heads_run(const himae_heads *h, const void *const *buffers, const int64_t *cols, size_t count,
                     const int64_t *starts, const int64_t *keys, himae_heads_ring *ring, double *power,
                     double *mean, double *std, uint8_t *todo, double *rates, double *scores,
                     double *features);

/* The strongest bin of s (the first of equals) plus the vertex offset of the parabola through it
 * and its neighbours where they bend down; NaN without power. */
double himae_peak_bin(const double *s, size_t n);

/* The share of s's sum within half bins of its strongest bin (the first of equals); 0 without power. */
double himae_spectrum_purity(const double *s, size_t n, size_t half);

#endif
