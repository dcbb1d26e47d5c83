# Included from _core.pyx: the stream-mode engine (csrc/stream.c) behind
# Model.stream, and the typed per-push bookkeeping of its windows (running
# sums, lost-sample counts, window means); the Stream itself, its normaliser
# and snapshots live in himae_stream.stream.

from libc.math cimport isfinite
from libc.stdint cimport int64_t, uint8_t

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
                          float **out, double **sums, const int64_t *ld_out, const int64_t *ld_sums,
                          int64_t *n_out, char *err, size_t errlen) nogil
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

    def push(self, x, bint flush=False, list running=None) -> list:
        """Push float32 samples (in_channels, n); flush ends the stream.

        Returns per level (positions int64[n], activations float32[C_l, n])
        of the new positions. With `running` (one RunningSums per level),
        the levels' running sums go straight into them.
        """
        cdef cnp.ndarray xa = np.ascontiguousarray(x, dtype=np.float32)
        if xa.ndim != 2 or xa.shape[0] != self.in_channels:
            raise ValueError(f"expected samples of shape ({self.in_channels}, n), got {np.shape(x)}")
        if running is not None and len(running) != self.levels:
            raise ValueError(f"expected {self.levels} running sums, got {len(running)}")
        cdef int64_t n = xa.shape[1]
        cdef int64_t counts[HIMAE_STREAM_MAX_LEVELS]
        cdef int64_t n_out[HIMAE_STREAM_MAX_LEVELS]
        cdef int64_t first[HIMAE_STREAM_MAX_LEVELS]
        cdef int64_t ld_sums[HIMAE_STREAM_MAX_LEVELS]
        cdef float *ptrs[HIMAE_STREAM_MAX_LEVELS]
        cdef double *sum_ptrs[HIMAE_STREAM_MAX_LEVELS]
        cdef char err[HIMAE_ERR_LEN]
        cdef int rc, l
        cdef RunningSums sums
        cdef double **sp = NULL
        cdef cnp.npy_intp dims[2]
        cdef cnp.ndarray acts
        levels = []
        himae_stream_pending(self._s, n, flush, counts)
        for l in range(self.levels):  # the C-API constructors: this runs every hop
            first[l] = himae_stream_emitted(self._s, l)
            dims[0], dims[1] = himae_stream_channels(self._s, l), counts[l]
            acts = cnp.PyArray_EMPTY(2, dims, cnp.NPY_FLOAT32, 0)
            ptrs[l] = <float *>cnp.PyArray_DATA(acts)
            levels.append((cnp.PyArray_Arange(first[l], first[l] + counts[l], 1, cnp.NPY_INT64), acts))
            if running is not None:
                sums = running[l]
                sum_ptrs[l] = sums.reserve(counts[l])
                ld_sums[l] = sums.capacity
                sp = sum_ptrs
        cdef const float *xp = <const float *>cnp.PyArray_DATA(xa)
        with nogil:
            rc = himae_stream_push(self._s, xp, n, n, flush, ptrs, sp, counts, ld_sums, n_out, err, sizeof(err))
        if rc != 0:
            raise ValueError(err.decode("utf-8", "replace"))
        if running is not None:
            for l in range(self.levels):
                (<RunningSums>running[l]).appended(first[l], counts[l])
        return levels

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


cdef class RunningSums:
    """Running float64 sums of one level from position `base` on, for the mean over any span.

    Column off + i of buf holds, per channel, the sum of every position
    before base + i (positions arrive in order); dropping the front only
    moves `off`, and the buffer is compacted or doubled when full, so a push
    normally writes its sums in place.
    """

    cdef readonly int channels
    cdef readonly int64_t base, off, n
    cdef readonly object buf
    cdef double[:, ::1] _v

    def __init__(self, int channels):
        self.channels = channels
        self.reset()

    def reset(self):
        self.set(0, np.zeros((self.channels, 1)))

    def set(self, int64_t base, sums):
        """Start over with the running sums before positions base, base + 1, ... ((channels, m), m >= 1)."""
        sums = np.asarray(sums, dtype=np.float64)
        self.base, self.off, self.n = base, 0, sums.shape[1] - 1
        self.buf = np.zeros((self.channels, max(1024, 2 * sums.shape[1])))
        self.buf[:, : sums.shape[1]] = sums
        self._v = self.buf

    @property
    def capacity(self) -> int:
        return self._v.shape[1]

    @property
    def sums(self):
        """Running sums before positions base .. base + n."""
        return self.buf[:, self.off : self.off + self.n + 1]

    @property
    def total(self) -> float:
        """The sum over every position that has arrived (of channel 0)."""
        return self._v[0, self.off + self.n]

    cdef double *reserve(self, int64_t k) except NULL:
        """Room for k more columns after the last: where they go (leading dimension `capacity`)."""
        if self.off + self.n + 1 + k > self._v.shape[1]:
            held = self.sums.copy()
            if held.shape[1] + k > self._v.shape[1]:
                self.buf = np.zeros((self.channels, 2 * (held.shape[1] + k)))
            self.buf[:, : held.shape[1]] = held
            self._v = self.buf
            self.off = 0
        return &self._v[0, self.off + self.n + 1]

    cdef appended(self, int64_t first, int64_t k):
        """Take the k reserved columns: running sums through positions first, first + 1, ..."""
        cdef int64_t skip = self.base - first, end = self.off + self.n + 1
        if skip > 0:  # positions before `base` are not kept (nothing is held then): only the sum before base
            self.buf[:, self.off] = self.buf[:, end + min(skip, k) - 1]
            if k > skip:
                self.buf[:, end : end + k - skip] = self.buf[:, end + skip : end + k]
            k = max(0, k - skip)
        self.n += k

    def add_lost(self, cnp.ndarray x, mask, int64_t first):
        """Append the running count of lost samples of float64 x (C, k) from sample `first`, summed
        over channels: non-finite ones, and those True in mask (None, or bool broadcastable to x)."""
        if x.ndim != 2 or x.dtype != np.float64:
            raise ValueError("expected float64 samples (channels, n)")
        cdef cnp.ndarray m = None
        if mask is not None:
            m = np.broadcast_to(np.asarray(mask, dtype=bool), (x.shape[0], x.shape[1]))
        cdef const char *xp = <const char *>cnp.PyArray_DATA(x)
        cdef const char *mp = NULL if m is None else <const char *>cnp.PyArray_DATA(m)
        cdef Py_ssize_t xs0 = x.strides[0], xs1 = x.strides[1], ms0 = 0, ms1 = 0, c, n_ch = x.shape[0]
        if m is not None:
            ms0, ms1 = m.strides[0], m.strides[1]
        cdef int64_t k = x.shape[1], j
        cdef double *dst = self.reserve(k)
        cdef double total = self._v[0, self.off + self.n]
        for j in range(k):
            for c in range(n_ch):
                if not isfinite((<const double *>(xp + c * xs0 + j * xs1))[0]):
                    total += 1
                elif mp != NULL and (<const cnp.npy_bool *>(mp + c * ms0 + j * ms1))[0]:
                    total += 1
            dst[j] = total
        self.appended(first, k)

    def drop_before(self, int64_t position):
        """Forget the sums of the positions before `position` (those not yet arrived are skipped when they do)."""
        self._drop_before(position)

    cdef void _drop_before(self, int64_t position):
        if position <= self.base:
            return
        cdef int64_t dropped = min(position - self.base, self.n)
        self.off += dropped
        self.n -= dropped
        self.base = position


def take_windows(list levels, RunningSums lost, tuple strides, int64_t first, int64_t last, int64_t hop,
                 int64_t window, int channels):
    """Summaries of the windows [i·hop, i·hop + window), first <= i <= last, then forget what they alone needed.

    levels[l] holds level l's running sums, and a window takes its positions
    p with strides[l]·p in it; lost holds the lost-sample counts over
    `channels` channels. Returns (float32 (windows, sum of C_l): per window
    the levels' means one after another, [lost fraction per window]). One
    call per push keeps the cost of windows independent of the number of levels.
    """
    cdef Py_ssize_t n_windows = last - first + 1, total = 0, col = 0, i, c, l
    cdef RunningSums sums
    for sums in levels:
        total += sums.channels
    cdef cnp.npy_intp dims[2]
    dims[0], dims[1] = n_windows, total
    cdef cnp.ndarray out = cnp.PyArray_EMPTY(2, dims, cnp.NPY_FLOAT32, 0)
    cdef float *o = <float *>cnp.PyArray_DATA(out)
    cdef int64_t stride, at, a, b, start, ld, next_start = (last + 1) * hop
    cdef double inv
    cdef const double *v
    fractions = []
    for l in range(len(levels) + 1):
        sums = levels[l] if l < len(levels) else lost
        stride = strides[l] if l < len(levels) else 1
        at = sums.off - sums.base
        ld = sums._v.shape[1]
        v = <const double *>cnp.PyArray_DATA(sums.buf)
        for i in range(n_windows):
            start = (first + i) * hop
            a = (start + stride - 1) // stride
            b = (start + window + stride - 1) // stride
            if a + at < 0 or b + at > sums.off + sums.n:
                raise ValueError(f"window {start} needs positions the running sums do not hold")
            inv = 1.0 / (b - a)
            if l == len(levels):
                fractions.append((v[b + at] - v[a + at]) * inv / channels)
                continue
            for c in range(sums.channels):
                o[i * total + col + c] = <float>((v[c * ld + b + at] - v[c * ld + a + at]) * inv)
        col += sums.channels
        sums._drop_before((next_start + stride - 1) // stride)
    return out, fractions
