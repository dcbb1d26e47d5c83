/* heads_real.h - the parts of heads.c that read activations, for one element type.
 * Included by heads.c once per REAL (float, double) with NAME(x) giving each function's name and
 * TRANSFORMED(...) the transform by a GEMM micro-kernel where there is one (1 if it ran). */

/* power[0 .. bins) of window level x (rows channels, n columns from x, row stride cols): the
 * squared moduli of (basis x) dft, summed over the basis's rows in double. work: rows (n + 2 bins). */
static void NAME(spectrum)(const REAL *restrict x, size_t cols, size_t channels, size_t n,
                           const REAL *restrict basis, size_t rows, const REAL *restrict dft, size_t bins,
                           const himae_ukernel *uk, const void *packed, REAL *restrict work,
                           double *restrict power) {
    REAL *restrict p = work, *restrict y = work + rows * n;
    const size_t width = 2 * bins;
    for (size_t r = 0; r < rows; r++) { /* p = basis x: a row of positions at a time */
        REAL *restrict pr = p + r * n;
        for (size_t i = 0; i < n; i++) pr[i] = 0;
        for (size_t c = 0; c < channels; c++) {
            const REAL b = basis[r * channels + c], *restrict xc = x + c * cols;
            for (size_t i = 0; i < n; i++) pr[i] += b * xc[i];
        }
    }
    for (size_t r = 0; r < rows && !TRANSFORMED(uk, packed, p, rows, n, width, y); r++) { /* y = p dft */
        REAL *restrict yr = y + r * width;
        for (size_t j = 0; j < width; j++) yr[j] = 0;
        for (size_t i = 0; i < n; i++) {
            const REAL v = p[r * n + i], *restrict di = dft + i * width;
            for (size_t j = 0; j < width; j++) yr[j] += v * di[j];
        }
    }
    for (size_t j = 0; j < bins; j++) power[j] = 0;
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < bins; j++) {
            const double re = y[r * width + j], im = y[r * width + bins + j];
            power[j] += re * re + im * im;
        }
}

/* Per channel of x (rows channels, n columns, row stride cols): the mean over positions and the
 * root mean square about it, in double. */
static void NAME(pool)(const REAL *restrict x, size_t cols, size_t channels, size_t n, double *restrict mean,
                       double *restrict std) {
    const double held = n ? (double)n : 1.0;
    const size_t n4 = n & ~(size_t)3;
    for (size_t c = 0; c < channels; c++) {
        const REAL *restrict row = x + c * cols;
        double s[4] = {0, 0, 0, 0}, q[4] = {0, 0, 0, 0}; /* four sums at a time: no chain of dependent adds */
        for (size_t i = 0; i < n4; i += 4)
            for (size_t k = 0; k < 4; k++) s[k] += row[i + k];
        for (size_t i = n4; i < n; i++) s[0] += row[i];
        const double m = (s[0] + s[1] + s[2] + s[3]) / held;
        for (size_t i = 0; i < n4; i += 4)
            for (size_t k = 0; k < 4; k++) {
                const double d = row[i + k] - m;
                q[k] += d * d;
            }
        for (size_t i = n4; i < n; i++) {
            const double d = row[i] - m;
            q[0] += d * d;
        }
        mean[c] = m;
        std[c] = sqrt((q[0] + q[1] + q[2] + q[3]) / held);
    }
}

static void NAME(levels)(const himae_heads *h, const void *const *buffers, const int64_t *cols, size_t count,
                         const int64_t *starts, const uint8_t *todo, double *power, double *mean, double *std) {
    const size_t L = h->levels;
    for (size_t w = 0; w < count; w++) {
        for (size_t s = 0; s < h->spectra; s++) {
            const size_t level = (size_t)h->spec_level[s], n = (size_t)h->lengths[level];
            const size_t bins = (size_t)h->spec_bins[s];
            double *out = power + (w * h->spectra + s) * h->max_bins;
            if (!todo[w * L + level]) continue;
            if (n < 2) { /* no spectrum from fewer than two positions */
                for (size_t j = 0; j < bins; j++) out[j] = 0;
                continue;
            }
            const REAL *x = (const REAL *)buffers[level] + starts[w * L + level];
            NAME(spectrum)(x, (size_t)cols[level], (size_t)h->channels[level], n, (const REAL *)h->bases[s],
                           (size_t)h->basis_rows[s], (const REAL *)h->dfts[s], bins, h->uk,
                           h->packed ? h->packed[s] : NULL, (REAL *)h->work, out);
        }
        for (size_t l = 0; l < L; l++)
            if (h->pooled[l] && todo[w * L + l])
                NAME(pool)((const REAL *)buffers[l] + starts[w * L + l], (size_t)cols[l], (size_t)h->channels[l],
                           (size_t)h->lengths[l], mean + (w * L + l) * h->width, std + (w * L + l) * h->width);
    }
}
