# Included from _core.pyx: the stream-mode engine (csrc/stream.c) behind
# Model.stream; windows, normaliser and snapshots live in himae_stream.stream.

from libc.stdint cimport int64_t

cdef extern from "stream.h":
    enum: HIMAE_STREAM_MAX_LEVELS
    ctypedef struct himae_stream:
        pass
    int himae_stream_create(const himae_model *model, himae_stream **out, char *err, size_t errlen)
    void himae_stream_free(himae_stream *s)
    void himae_stream_reset(himae_stream *s)
    int himae_stream_levels(const himae_stream *s)
    int himae_stream_channels(const himae_stream *s, int level)
    int64_t himae_stream_delay(const himae_stream *s, int level)
    int64_t himae_stream_emitted(const himae_stream *s, int level)
    int64_t himae_stream_pushed(const himae_stream *s)
    int himae_stream_flushed(const himae_stream *s)
    int64_t himae_stream_complete(const himae_stream *s)
    void himae_stream_pending(const himae_stream *s, int64_t n, int flush, int64_t *counts)
    int himae_stream_push(himae_stream *s, const float *x, int64_t ldx, int64_t n, int flush,
                          float **out, double **sums, const int64_t *ld_out, int64_t *n_out,
                          char *err, size_t errlen) nogil
    size_t himae_stream_state_size(const himae_stream *s)
    void himae_stream_save(const himae_stream *s, void *buf)
    int himae_stream_load(himae_stream *s, const void *buf, size_t size, char *err, size_t errlen)


cdef class StreamEngine:
    """Exact incremental encoder of one model: new per-level activations per push.

    Samples go in already normalised (masked ones as 0); see himae_stream.stream.
    """

    cdef himae_stream *_s
    cdef Model _model  # the engine runs the model's packed weights: keep it alive
    cdef readonly int levels
    cdef readonly int in_channels

    def __cinit__(self, Model model):
        cdef char err[HIMAE_ERR_LEN]
        err[0] = 0
        self._model = model
        if himae_stream_create(model._m, &self._s, err, sizeof(err)) != 0:
            raise ValueError(err.decode("utf-8", "replace"))
        self.levels = himae_stream_levels(self._s)
        self.in_channels = model.config["in_channels"]

    def __dealloc__(self):
        himae_stream_free(self._s)

    def channels(self, int level) -> int:
        return himae_stream_channels(self._s, self._level(level))

    def delay(self, int level) -> int:
        """Samples of look-ahead before a position of `level` is emitted."""
        return himae_stream_delay(self._s, self._level(level))

    def emitted(self, int level) -> int:
        """Positions of `level` emitted so far."""
        return himae_stream_emitted(self._s, self._level(level))

    @property
    def pushed(self) -> int:
        return himae_stream_pushed(self._s)

    @property
    def flushed(self) -> bool:
        return bool(himae_stream_flushed(self._s))

    cdef int _level(self, int level) except -1:
        if not 0 <= level < self.levels:
            raise IndexError(f"level {level} out of range (the model has {self.levels})")
        return level

    def reset(self):
        himae_stream_reset(self._s)

    def push(self, x, bint flush=False) -> tuple:
        """Push float32 samples (in_channels, n); flush ends the stream.

        Returns (levels, sums): levels[l] = (positions int64[n], activations
        float32[C_l, n]) of the new positions; sums[l] float64[C_l, n] holds
        after each of them the running sum of the level since the start.
        """
        cdef cnp.ndarray xa = np.ascontiguousarray(x, dtype=np.float32)
        if xa.ndim != 2 or xa.shape[0] != self.in_channels:
            raise ValueError(f"expected samples of shape ({self.in_channels}, n), got {np.shape(x)}")
        cdef int64_t n = xa.shape[1]
        cdef int64_t counts[HIMAE_STREAM_MAX_LEVELS]
        cdef int64_t n_out[HIMAE_STREAM_MAX_LEVELS]
        cdef float *ptrs[HIMAE_STREAM_MAX_LEVELS]
        cdef double *sum_ptrs[HIMAE_STREAM_MAX_LEVELS]
        cdef char err[HIMAE_ERR_LEN]
        cdef int rc, l
        cdef int64_t first, total = 0, at = 0
        himae_stream_pending(self._s, n, flush, counts)
        for l in range(self.levels):
            total += himae_stream_channels(self._s, l) * counts[l]
        # one block per dtype for every level: fewer allocations in a call made every hop
        cdef cnp.ndarray acts = np.empty(total, dtype=np.float32)
        cdef cnp.ndarray sums = np.empty(total, dtype=np.float64)
        levels, level_sums = [], []
        for l in range(self.levels):
            c = himae_stream_channels(self._s, l)
            first = himae_stream_emitted(self._s, l)
            ptrs[l] = <float *>cnp.PyArray_DATA(acts) + at
            sum_ptrs[l] = <double *>cnp.PyArray_DATA(sums) + at
            levels.append((np.arange(first, first + counts[l], dtype=np.int64),
                           acts[at : at + c * counts[l]].reshape(c, counts[l])))
            level_sums.append(sums[at : at + c * counts[l]].reshape(c, counts[l]))
            at += c * counts[l]
        cdef const float *xp = <const float *>cnp.PyArray_DATA(xa)
        with nogil:
            rc = himae_stream_push(self._s, xp, n, n, flush, ptrs, sum_ptrs, counts, n_out, err,
                                   sizeof(err))
        if rc != 0:
            raise ValueError(err.decode("utf-8", "replace"))
        return levels, level_sums

    @property
    def complete(self) -> int:
        """Samples [0, complete) whose positions at every level have all been emitted."""
        return himae_stream_complete(self._s)

    def state(self) -> bytes:
        """The engine's whole state, for `load_state` on an engine of the same model."""
        cdef bytearray buf = bytearray(himae_stream_state_size(self._s))
        cdef unsigned char[::1] view = buf
        himae_stream_save(self._s, &view[0])
        return bytes(buf)

    def load_state(self, bytes state):
        cdef char err[HIMAE_ERR_LEN]
        cdef const unsigned char *p = state
        if himae_stream_load(self._s, p, len(state), err, sizeof(err)) != 0:
            raise ValueError(err.decode("utf-8", "replace"))


cimport cython


@cython.boundscheck(True)
def window_means(list sums, list offsets, list strides, const int64_t[::1] starts, int64_t window):
    """Means over windows [start, start + window) from running sums, for every level at once.

    sums[l] is a float64 (C_l, m) array whose column offsets[l] + p holds the
    sum of level l's positions before p; a window takes the positions p with
    strides[l]·p in it. Returns float64 (len(starts), sum of C_l): per window,
    the levels' means one after another. One call per push keeps the cost of
    summarising windows independent of the number of levels.
    """
    cdef Py_ssize_t n_windows = starts.shape[0], total = 0, col = 0, i, c
    for values in sums:
        total += values.shape[0]
    out = np.empty((n_windows, total), dtype=np.float64)
    cdef double[:, ::1] o = out
    cdef const double[:, :] buf
    cdef int64_t stride, at, a, b
    cdef double inv
    for l in range(len(sums)):
        buf = sums[l]
        stride = strides[l]
        at = offsets[l]
        for i in range(n_windows):
            a = (starts[i] + stride - 1) // stride
            b = (starts[i] + window + stride - 1) // stride
            inv = 1.0 / (b - a)
            for c in range(buf.shape[0]):
                o[i, col + c] = (buf[c, b + at] - buf[c, a + at]) * inv
        col += buf.shape[0]
    return out
