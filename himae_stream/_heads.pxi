# Included from _core.pyx: the probe heads' arithmetic (csrc/heads.c). himae_stream.headplan
# builds a HeadKernel from a plan's tables once per window shape and calls it per burst of
# windows; himae_stream.probes uses the peak, purity and window-column helpers.

from libc.math cimport exp, isfinite
from libc.stdint cimport int64_t, uint8_t

cdef extern from "internal.h":
    ctypedef struct himae_ukernel:
        size_t nr
    const himae_ukernel *himae_ukernel_for(himae_isa isa, himae_precision precision)
    himae_isa himae_isa_best()

cdef extern from "heads.h":
    ctypedef struct himae_heads:
        int is_double
        size_t levels, spectra, max_bins, width
        const int64_t *lengths
        const int64_t *channels
        const uint8_t *pooled
        const int64_t *spec_level
        const int64_t *spec_bins
        const int64_t *spec_half
        const int64_t *basis_rows
        const void *const *bases
        const void *const *dfts
        const himae_ukernel *uk
        const void *const *packed
        size_t rate_heads, rate_width
        const int64_t *rate_specs
        const double *rate_weights
        const double *rate_lo
        const double *rate_df
        size_t segments, combined_width
        const int64_t *segment
        const int64_t *combined
        size_t features, outputs
        const double *weights
        const double *bias
        void *work
    ctypedef struct himae_heads_ring:
        size_t slots
        int64_t *keys
        double *power
        double *mean
        double *std
        uint8_t *done
    size_t himae_heads_work_bytes(const himae_heads *h)
    size_t himae_heads_packed_size(const himae_ukernel *uk, size_t n, size_t width)
    int himae_heads_pack_dft(const himae_ukernel *uk, float *dst, const float *dft, size_t n, size_t width)
    void himae_heads_levels(const himae_heads *h, const void *const *buffers, const int64_t *cols, size_t count,
                            const int64_t *starts, const uint8_t *todo, double *power, double *mean,
                            double *std) nogil
    void himae_heads_run(const himae_heads *h, const void *const *buffers, const int64_t *cols, size_t count,
                         const int64_t *starts, const int64_t *keys, himae_heads_ring *ring, double *power,
                         double *mean, double *std, uint8_t *todo, double *rates, double *scores,
                         double *features) nogil
    double himae_peak_bin(const double *s, size_t n) nogil
    double himae_spectrum_purity(const double *s, size_t n, size_t half) nogil


_TYPE_NAMES = {cnp.NPY_FLOAT32: "float32", cnp.NPY_FLOAT64: "float64", cnp.NPY_INT64: "int64", cnp.NPY_BOOL: "bool"}


cdef void *_array_at(object a, int typenum, Py_ssize_t size, str what) except NULL:
    """The data of a C-contiguous array of `typenum` with at least `size` elements."""
    cdef cnp.ndarray arr = <cnp.ndarray?>a
    if cnp.PyArray_TYPE(arr) != typenum or not cnp.PyArray_IS_C_CONTIGUOUS(arr) or cnp.PyArray_SIZE(arr) < size:
        raise ValueError(f"{what} must be a C-contiguous {_TYPE_NAMES[typenum]} array of at least {size} elements")
    return cnp.PyArray_DATA(arr)


def _check_tables(keep: dict, Py_ssize_t levels, Py_ssize_t spectra, Py_ssize_t width) -> None:
    """Every table's shape, and every index in one, fits the others (the C code trusts them)."""
    def table(name, ndim, lo=None, hi=None):
        a = keep[name]
        if a.ndim != ndim:
            raise ValueError(f"heads: {name} must have {ndim} dimensions, not {a.ndim}")
        if lo is not None and a.size and (a.min() < lo or a.max() >= hi):
            raise ValueError(f"heads: {name} holds an index outside [{lo}, {hi})")
        return a
    table("spec_level", 1, 0, levels)
    if table("lengths", 1).min(initial=0) < 0 or table("channels", 1).max(initial=0) > width:
        raise ValueError("heads: a level's positions or channels do not fit")
    if not (keep["spec_bins"].shape == keep["spec_half"].shape == (spectra,)) or len(keep["bases"]) < spectra \
            or len(keep["dfts"]) < spectra:
        raise ValueError("heads: every spectrum needs its bins, purity width, basis and DFT")
    specs = table("rate_specs", 2, -1, spectra)
    if table("rate_weights", 2).shape != specs.shape or not (
            table("rate_lo", 1).shape == table("rate_df", 1).shape == (specs.shape[0] if keep["rate_lo"].size else 0,)):
        raise ValueError("heads: each spectral head needs its spectra, weights, first bin and bin width")
    for row in list(specs[: keep["rate_lo"].size]) + list(table("combined", 2, -1, spectra)):
        if row.size and row[0] < 0:
            raise ValueError("heads: a spectral sum without a spectrum")
    segments = table("segments", 2)
    weights, bias = table("weights", 2), table("bias", 1)
    if segments.shape[1] != 3 or weights.shape[1] != bias.shape[0]:
        raise ValueError("heads: segments are (kind, argument, first feature); weights (features, outputs)")
    for kind, arg, at in segments.tolist():
        size = keep["channels"][arg] if kind in (0, 1) and 0 <= arg < levels else 1
        limit = levels if kind in (0, 1) else spectra if kind == 2 else keep["combined"].shape[0]
        if not (0 <= kind <= 3 and 0 <= arg < limit and 0 <= at and at + size <= weights.shape[0]):
            raise ValueError(f"heads: segment ({kind}, {arg}, {at}) does not fit the tables")


cdef class HeadKernel:
    """One window shape's head tables (see `headplan.Plan`), applied in C to bursts of windows.

    Windows are read in place from per-level buffers `(C_l, columns)` of the plan's dtype whose
    rows are contiguous; each window's first column per level is given. The kernel owns its
    work memory, so applying it allocates nothing; its calls hold the GIL, since they share it.
    """

    cdef himae_heads h
    cdef const void **_bases
    cdef const void **_dfts
    cdef const void **_packed
    cdef int _typenum
    cdef Py_ssize_t _itemsize
    cdef int64_t *_cols
    cdef const void **_buffers
    cdef object _keep
    cdef readonly Py_ssize_t levels, spectra, max_bins, width, rate_heads, features, outputs

    def __cinit__(self, dtype, lengths, channels, pooled, spec_level, spec_bins, spec_half, bases, dfts,
                  rate_specs, rate_weights, rate_lo, rate_df, segments, combined, weights, bias, Py_ssize_t width,
                  Py_ssize_t max_bins):
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"heads read float32 or float64 activations, not {dtype}")
        i64 = lambda a: np.ascontiguousarray(a, np.int64)
        f64 = lambda a: np.ascontiguousarray(a, np.float64)
        keep = {
            "lengths": i64(lengths), "channels": i64(channels), "pooled": np.ascontiguousarray(pooled, np.uint8),
            "spec_level": i64(spec_level), "spec_bins": i64(spec_bins), "spec_half": i64(spec_half),
            "basis_rows": i64([b.shape[0] for b in bases][: len(spec_level)]),
            "bases": [np.ascontiguousarray(b, dtype) for b in bases],
            "dfts": [np.ascontiguousarray(d, dtype) for d in dfts],
            "rate_specs": i64(rate_specs), "rate_weights": f64(rate_weights), "rate_lo": f64(rate_lo),
            "rate_df": f64(rate_df), "segments": i64(segments).reshape(-1, 3), "combined": i64(combined),
            "weights": f64(weights), "bias": f64(bias),
        }
        self.levels, self.spectra = keep["lengths"].shape[0], keep["spec_level"].shape[0]
        if keep["channels"].shape[0] != self.levels or keep["pooled"].shape[0] != self.levels:
            raise ValueError("heads: lengths, channels and pooled need one entry per level")
        _check_tables(keep, self.levels, self.spectra, width)
        for s in range(self.spectra):
            level = keep["spec_level"][s]
            n, c, bins = keep["lengths"][level], keep["channels"][level], keep["spec_bins"][s]
            if keep["bases"][s].shape[1] != c or keep["dfts"][s].shape != (max(n, 1), 2 * bins) or bins > max_bins:
                raise ValueError(f"heads: spectrum {s}'s basis or DFT does not fit level {level}")
        self.width, self.max_bins = width, max_bins
        self.rate_heads = keep["rate_specs"].shape[0] if keep["rate_lo"].shape[0] else 0
        self.features, self.outputs = keep["weights"].shape[0], keep["bias"].shape[0]
        self._keep = keep
        self._typenum = cnp.NPY_FLOAT64 if dtype == np.float64 else cnp.NPY_FLOAT32
        self._itemsize = dtype.itemsize
        self._bases = <const void **>PyMem_Malloc(max(self.spectra, 1) * sizeof(void *))
        self._dfts = <const void **>PyMem_Malloc(max(self.spectra, 1) * sizeof(void *))
        self._packed = <const void **>PyMem_Malloc(max(self.spectra, 1) * sizeof(void *))
        self._buffers = <const void **>PyMem_Malloc(self.levels * sizeof(void *) + 1)
        self._cols = <int64_t *>PyMem_Malloc(self.levels * sizeof(int64_t) + 1)
        if not (self._bases and self._dfts and self._packed and self._buffers and self._cols):
            raise MemoryError()
        for s in range(self.spectra):
            self._bases[s] = cnp.PyArray_DATA(<cnp.ndarray>keep["bases"][s])
            self._dfts[s] = cnp.PyArray_DATA(<cnp.ndarray>keep["dfts"][s])
        h = &self.h
        h.is_double = dtype == np.float64
        h.levels, h.spectra, h.max_bins, h.width = self.levels, self.spectra, max_bins, width
        h.lengths = <const int64_t *>cnp.PyArray_DATA(<cnp.ndarray>keep["lengths"])
        h.channels = <const int64_t *>cnp.PyArray_DATA(<cnp.ndarray>keep["channels"])
        h.pooled = <const uint8_t *>cnp.PyArray_DATA(<cnp.ndarray>keep["pooled"])
        h.spec_level = <const int64_t *>cnp.PyArray_DATA(<cnp.ndarray>keep["spec_level"])
        h.spec_bins = <const int64_t *>cnp.PyArray_DATA(<cnp.ndarray>keep["spec_bins"])
        h.spec_half = <const int64_t *>cnp.PyArray_DATA(<cnp.ndarray>keep["spec_half"])
        h.basis_rows = <const int64_t *>cnp.PyArray_DATA(<cnp.ndarray>keep["basis_rows"])
        h.bases, h.dfts = self._bases, self._dfts
        # float32 windows transform through the best f32 micro-kernel of this CPU
        h.uk = NULL
        if not h.is_double:
            h.uk = himae_ukernel_for(himae_isa_best(), HIMAE_F32)
        h.packed = NULL
        if h.uk != NULL:
            keep["packed"] = []
            for s in range(self.spectra):
                dft = keep["dfts"][s]
                packed = np.zeros(himae_heads_packed_size(h.uk, dft.shape[0], dft.shape[1]) + 64, np.float32)
                if himae_heads_pack_dft(h.uk, <float *>cnp.PyArray_DATA(<cnp.ndarray>packed),
                                        <const float *>cnp.PyArray_DATA(<cnp.ndarray>dft), dft.shape[0],
                                        dft.shape[1]) != HIMAE_OK:
                    raise MemoryError()
                keep["packed"].append(packed)
                self._packed[s] = cnp.PyArray_DATA(<cnp.ndarray>packed)
            h.packed = self._packed
        h.rate_heads, h.rate_width = self.rate_heads, keep["rate_specs"].shape[1]
        h.rate_specs = <const int64_t *>cnp.PyArray_DATA(<cnp.ndarray>keep["rate_specs"])
        h.rate_weights = <const double *>cnp.PyArray_DATA(<cnp.ndarray>keep["rate_weights"])
        h.rate_lo = <const double *>cnp.PyArray_DATA(<cnp.ndarray>keep["rate_lo"])
        h.rate_df = <const double *>cnp.PyArray_DATA(<cnp.ndarray>keep["rate_df"])
        h.segments, h.combined_width = keep["segments"].shape[0], keep["combined"].shape[1]
        h.segment = <const int64_t *>cnp.PyArray_DATA(<cnp.ndarray>keep["segments"])
        h.combined = <const int64_t *>cnp.PyArray_DATA(<cnp.ndarray>keep["combined"])
        h.features, h.outputs = self.features, self.outputs
        h.weights = <const double *>cnp.PyArray_DATA(<cnp.ndarray>keep["weights"])
        h.bias = <const double *>cnp.PyArray_DATA(<cnp.ndarray>keep["bias"])
        keep["work"] = np.zeros(himae_heads_work_bytes(h) // 8 + 1, np.float64)
        h.work = cnp.PyArray_DATA(<cnp.ndarray>keep["work"])

    def __dealloc__(self):
        PyMem_Free(self._bases)
        PyMem_Free(self._dfts)
        PyMem_Free(self._packed)
        PyMem_Free(self._buffers)
        PyMem_Free(self._cols)

    cdef Py_ssize_t _windows(self, tuple buffers, object starts, const uint8_t *todo) except -1:
        """Check the buffers and each window's columns (of the levels `todo` marks, or all) and note
        where they are; returns the number of windows."""
        cdef Py_ssize_t l, w, count, first
        cdef cnp.ndarray buf
        if len(buffers) != self.levels:
            raise ValueError(f"heads: {len(buffers)} level buffers for {self.levels} levels")
        for l in range(self.levels):
            buf = <cnp.ndarray?>buffers[l]
            if (cnp.PyArray_TYPE(buf) != self._typenum or cnp.PyArray_NDIM(buf) != 2
                    or cnp.PyArray_DIM(buf, 0) != self.h.channels[l] or cnp.PyArray_STRIDE(buf, 1) != self._itemsize
                    or cnp.PyArray_STRIDE(buf, 0) % self._itemsize or cnp.PyArray_STRIDE(buf, 0) < 0):
                raise ValueError(f"heads: level {l}'s buffer is not ({self.h.channels[l]}, columns) of "
                                 f"{_TYPE_NAMES[self._typenum]} with contiguous rows")
            self._buffers[l] = cnp.PyArray_DATA(buf)
            self._cols[l] = cnp.PyArray_STRIDE(buf, 0) // self._itemsize
        cdef cnp.ndarray s = <cnp.ndarray?>starts
        if cnp.PyArray_NDIM(s) != 2 or cnp.PyArray_DIM(s, 1) != self.levels:
            raise ValueError("heads: starts must be (windows, levels)")
        count = cnp.PyArray_DIM(s, 0)
        cdef const int64_t *at = <const int64_t *>_array_at(s, cnp.NPY_INT64, count * self.levels, "heads: starts") \
            if count else NULL
        for w in range(count):
            for l in range(self.levels):
                if todo != NULL and not todo[w * self.levels + l]:
                    continue
                first = at[w * self.levels + l]
                if first < 0 or first + self.h.lengths[l] > cnp.PyArray_DIM(<cnp.ndarray>buffers[l], 1):
                    raise ValueError(f"heads: window {w}'s level {l} columns [{first}, "
                                     f"{first + self.h.lengths[l]}) are not in its buffer")
        return count

    def levels_into(self, tuple buffers, starts, todo, power, mean, std):
        """Each window's spectra `(W, spectra, max_bins)` and pools `(W, levels, width)` (mean, std)
        of the levels `todo` `(W, levels)` marks, into the arrays given."""
        cdef Py_ssize_t count = len(starts)
        cdef const uint8_t *marks = <const uint8_t *>_array_at(todo, cnp.NPY_BOOL, count * self.levels, "heads: todo") \
            if count else NULL
        self._windows(buffers, starts, marks)
        if not count:
            return
        cdef Py_ssize_t spec = self.spectra * self.max_bins, pool = self.levels * self.width
        cdef const int64_t *at = <const int64_t *>cnp.PyArray_DATA(<cnp.ndarray>starts)
        cdef double *p = <double *>_array_at(power, cnp.NPY_FLOAT64, count * spec, "heads: power")
        cdef double *m = <double *>_array_at(mean, cnp.NPY_FLOAT64, count * pool, "heads: mean")
        cdef double *d = <double *>_array_at(std, cnp.NPY_FLOAT64, count * pool, "heads: std")
        # the GIL stays held: the kernel's work memory and buffer table are shared by its calls
        himae_heads_levels(&self.h, self._buffers, self._cols, count, at, marks, p, m, d)

    def run_into(self, tuple buffers, starts, keys, ring, tuple parts, tuple out):
        """A burst of windows: `parts` (power, mean, std, todo) is work, `out` (rates, scores,
        features) receives each window's outputs. A window whose key (`keys[w]`, its start) the
        `ring` (keys, power, mean, std, done) holds takes what was computed ahead out of it."""
        cdef Py_ssize_t count = self._windows(buffers, starts, NULL)
        if not count:
            return
        cdef Py_ssize_t spec = self.spectra * self.max_bins, pool = self.levels * self.width
        cdef himae_heads_ring r
        cdef himae_heads_ring *held = NULL
        cdef const int64_t *wanted = NULL
        if keys is not None and ring is not None:
            wanted = <const int64_t *>_array_at(keys, cnp.NPY_INT64, count, "heads: keys")
            r.slots = len(ring[0])
            r.keys = <int64_t *>_array_at(ring[0], cnp.NPY_INT64, r.slots, "heads: ring keys")
            r.power = <double *>_array_at(ring[1], cnp.NPY_FLOAT64, r.slots * spec, "heads: ring power")
            r.mean = <double *>_array_at(ring[2], cnp.NPY_FLOAT64, r.slots * pool, "heads: ring mean")
            r.std = <double *>_array_at(ring[3], cnp.NPY_FLOAT64, r.slots * pool, "heads: ring std")
            r.done = <uint8_t *>_array_at(ring[4], cnp.NPY_BOOL, r.slots * self.levels, "heads: ring done")
            held = &r
        cdef const int64_t *at = <const int64_t *>cnp.PyArray_DATA(<cnp.ndarray>starts)
        cdef double *p = <double *>_array_at(parts[0], cnp.NPY_FLOAT64, count * spec, "heads: power")
        cdef double *m = <double *>_array_at(parts[1], cnp.NPY_FLOAT64, count * pool, "heads: mean")
        cdef double *d = <double *>_array_at(parts[2], cnp.NPY_FLOAT64, count * pool, "heads: std")
        cdef uint8_t *todo = <uint8_t *>_array_at(parts[3], cnp.NPY_BOOL, count * self.levels, "heads: todo")
        cdef double *rates = <double *>_array_at(out[0], cnp.NPY_FLOAT64, count * self.rate_heads, "heads: rates") \
            if self.rate_heads else NULL
        cdef double *scores = <double *>_array_at(out[1], cnp.NPY_FLOAT64, count * self.outputs, "heads: scores") \
            if self.outputs else NULL
        cdef double *features = <double *>_array_at(out[2], cnp.NPY_FLOAT64, count * self.features, "heads: features") \
            if self.features else NULL
        himae_heads_run(&self.h, self._buffers, self._cols, count, at, wanted, held, p, m, d, todo, rates, scores,
                        features)


def peak_bins(spectra) -> np.ndarray:
    """`himae_peak_bin` of each row of `spectra` `(rows, bins)`: the strongest bin plus its
    parabola's vertex offset; NaN for a row without power."""
    cdef cnp.ndarray s = np.ascontiguousarray(np.atleast_2d(spectra), np.float64)
    cdef Py_ssize_t rows = cnp.PyArray_DIM(s, 0), bins = cnp.PyArray_DIM(s, 1), i
    out = np.empty(rows)
    cdef double[::1] o = out
    cdef const double *p = <const double *>cnp.PyArray_DATA(s)
    for i in range(rows):
        o[i] = himae_peak_bin(p + i * bins, bins)
    return out


def spectrum_purities(spectra, Py_ssize_t half) -> np.ndarray:
    """`himae_spectrum_purity` of each row of `spectra` `(rows, bins)`: the share of its sum within
    `half` bins of its strongest bin; 0 for a row without power."""
    cdef cnp.ndarray s = np.ascontiguousarray(np.atleast_2d(spectra), np.float64)
    cdef Py_ssize_t rows = cnp.PyArray_DIM(s, 0), bins = cnp.PyArray_DIM(s, 1), i
    if half < 0:
        raise ValueError("half must be >= 0")
    out = np.empty(rows)
    cdef double[::1] o = out
    cdef const double *p = <const double *>cnp.PyArray_DATA(s)
    for i in range(rows):
        o[i] = himae_spectrum_purity(p + i * bins, bins, half)
    return out


def window_columns(spans, base, held):
    """Per window [start, end) of `spans` and level: the first column of its positions in a buffer
    holding `held[l]` positions from absolute position `base[l]` (the positions `probes.positions`
    picks, clipped to those held), and how many; two `(W, levels)` int64 arrays."""
    cdef Py_ssize_t levels = len(base), count = len(spans), w, l
    first_out = np.zeros((count, levels), np.int64)
    count_out = np.zeros((count, levels), np.int64)
    cdef int64_t[:, ::1] first = first_out, number = count_out
    cdef int64_t start, end, step, lo, hi, b, n
    for w in range(count):
        start, end = spans[w]
        for l in range(levels):
            step = (<int64_t>1) << (l + 1)
            b, n = base[l], held[l]
            lo = min(max(-((-start) // step) - b, 0), n)
            hi = min(max(-((-end) // step) - b, 0), n)
            first[w, l], number[w, l] = lo, max(hi - lo, 0)
    return first_out, count_out


cdef list _softmax(const double *s, Py_ssize_t n):
    """Softmax of n class scores, the largest subtracted first; the sum is taken in order."""
    cdef Py_ssize_t i
    cdef double top = s[0], total = 0.0
    for i in range(1, n):
        if s[i] > top:
            top = s[i]
    for i in range(n):
        total += exp(s[i] - top)
    return [exp(s[i] - top) / total for i in range(n)]


def softmax(scores) -> list:
    """Softmax of one window's class scores (a handful: a list of floats)."""
    cdef double[::1] s = np.ascontiguousarray(scores, dtype=np.float64)
    if s.shape[0] == 0:
        raise ValueError("softmax of no scores")
    return _softmax(&s[0], s.shape[0])


cdef inline double _sigmoid(double v) noexcept:
    return 1.0 / (1.0 + exp(-v)) if v >= 0 else exp(v) / (1.0 + exp(v))


def sigmoid(double v) -> float:
    """The logistic function, without overflow for large |v|."""
    return _sigmoid(v)


#: kinds of a linear head in `window_records`' fields
RIDGE, PROBABILITY, LOGISTIC = 0, 1, 2


def window_records(const double[:, ::1] rates, const double[:, ::1] scores, tuple rate_names, tuple fields) -> list:
    """Each window's output fields as a dict, ready for a sink: `rates[w, i]` (NaN: none) under
    `rate_names[i]`, and per linear head `(name, kind, first, end, classes, name + "_p")` of `fields` its
    value from `scores[w, first:end]`: a ridge head's score, a probability head's sigmoid, a logistic
    head's most probable class (the first on a tie) and its class probabilities under name + "_p".
    Live, a record's heads run from cold caches after the event loop's wait: one typed loop here
    costs a fraction of the same dicts built in Python."""
    cdef Py_ssize_t w, i, j, best, count = rates.shape[0], n_rates = len(rate_names)
    cdef double v
    cdef dict record
    cdef list out = [], p
    cdef int kind
    cdef Py_ssize_t first, end
    for w in range(count):
        record = {}
        for i in range(n_rates):
            v = rates[w, i]
            record[rate_names[i]] = v if isfinite(v) else None
        for name, kind, first, end, classes, name_p in fields:
            if kind == LOGISTIC:
                p = _softmax(&scores[w, first], end - first)
                best = 0
                for j in range(1, end - first):
                    if p[j] > p[best]:
                        best = j
                record[name] = classes[best]
                record[name_p] = dict(zip(classes, p))
                continue
            v = scores[w, first]
            record[name] = None if not isfinite(v) else v if kind == RIDGE else _sigmoid(v)
        out.append(record)
    return out


def add_positions(list bufs, list base, list held, list keep, levels) -> None:
    """`probes.Positions.add` in one typed call (live it runs once per push): append each level's new
    positions `(positions, activations (C_l, n))` to its buffer `bufs[l]` `(C_l, capacity)` after the
    `held[l]` columns from absolute position `base[l]`, first moving the last `keep[l]` columns to the
    front (into a larger buffer when even that leaves no room); ValueError when positions skip."""
    cdef Py_ssize_t l, c, j, n, h, kept, cap, channels
    cdef int64_t first
    cdef cnp.ndarray buf, acts, pos
    cdef float *dst
    cdef const float *src
    for l, (pos, acts) in enumerate(levels):
        n = pos.shape[0]
        if not n:
            continue
        buf, h = bufs[l], held[l]
        first = int(pos[0])
        if base[l] + h != first:
            raise ValueError(f"level {l}: positions jump from {base[l] + h} to {first}")
        if h + n > buf.shape[1]:
            kept = min(h, keep[l])
            if kept + n > buf.shape[1]:
                grown = np.zeros((buf.shape[0], 2 * (kept + n)), np.float32)
                grown[:, :kept] = buf[:, h - kept : h]
                bufs[l] = buf = grown
            else:
                buf[:, :kept] = buf[:, h - kept : h]
            base[l] += h - kept
            h = kept
        if cnp.PyArray_TYPE(acts) == cnp.NPY_FLOAT32 and cnp.PyArray_IS_F_CONTIGUOUS(acts):
            channels, cap = buf.shape[0], buf.shape[1]  # the engine's rows: each position's channels together
            src, dst = <const float *>cnp.PyArray_DATA(acts), <float *>cnp.PyArray_DATA(buf)
            for j in range(n):
                for c in range(channels):
                    dst[c * cap + h + j] = src[j * channels + c]
        else:
            buf[:, h : h + n] = acts
        held[l] = h + n
