# Included from _core.pyx: the stream-mode engine (csrc/stream.c) behind
# Model.stream, and StreamCore, a Stream's whole push in one typed call
# (normaliser, engine, lost-sample counts, running sums, window means); the
# Stream itself, its options and snapshots live in himae_stream.stream.

from libc.math cimport isfinite
from libc.stdint cimport int64_t
from libc.string cimport memcpy, memmove

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
    int himae_stream_push(himae_stream *s, const float *x, int64_t ldx, int64_t n, int flush, float **out,
                          int64_t *n_out, char *err, size_t errlen) nogil
    void himae_stream_prepare(himae_stream *s) nogil
    size_t himae_stream_state_size(const himae_stream *s)
    void himae_stream_save(const himae_stream *s, void *buf)
    int himae_stream_load(himae_stream *s, const void *buf, size_t size, char *err, size_t errlen)
    int himae_stream_share(himae_stream *s, himae_stream *workspace)


cdef himae_stream *stream_workspace(Model model) except NULL:
    """The model's workspace engine, made with its first stream: every stream of the model pushed alone
    computes in its buffers when no other thread's push holds them (himae_stream_share in stream.h), so
    a thread that pushes thousands of streams in turn keeps one engine's worth of memory in cache."""
    cdef char err[HIMAE_ERR_LEN]
    cdef himae_stream *ws
    err[0] = 0
    if model._stream_workspace == NULL:
        if himae_stream_create(model._m, &ws, err, sizeof(err)) != 0:
            raise ValueError(err.decode("utf-8", "replace"))
        model._stream_workspace = ws
    return <himae_stream *>model._stream_workspace


cdef void free_stream_workspace(void *workspace) noexcept:
    himae_stream_free(<himae_stream *>workspace)


cdef class StreamEngine:
    """Exact incremental encoder of one model: new per-level activations per push.

    Samples go in already normalised (masked ones as 0); see himae_stream.stream.
    """

    cdef himae_stream *_s
    cdef Model _model  # the engine runs the model's packed weights: keep it alive
    cdef readonly object group  # the StreamGroup that owns and pushes this engine, or None
    cdef bint _owned  # created here, freed here (a group frees its own)
    cdef readonly int levels
    cdef readonly int in_channels

    def __cinit__(self, Model model, StreamGroup group=None, int member=0):
        cdef char err[HIMAE_ERR_LEN]
        err[0] = 0
        self._model, self.group, self._owned = model, group, group is None
        if group is not None:
            self._s = himae_streams_member(group._g, member)
        elif himae_stream_create(model._m, &self._s, err, sizeof(err)) != 0:
            raise ValueError(err.decode("utf-8", "replace"))
        elif himae_stream_share(self._s, stream_workspace(model)) != 0:
            raise RuntimeError("a stream engine could not share its model's workspace")
        self.levels = himae_stream_levels(self._s)
        self.in_channels = model.config["in_channels"]

    def __dealloc__(self):
        if self._owned:
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

    def prepare(self):
        """Between pushes: the work the samples so far allow ahead of the next positions
        (see Stream.prepare)."""
        self._alone()
        with nogil:
            himae_stream_prepare(self._s)

    def push(self, x, bint flush=False) -> list:
        """Push float32 samples (in_channels, n); flush ends the stream.

        Returns per level (positions int64[n], activations float32[C_l, n])
        of the new positions; the activations are in Fortran order (each
        position's channels contiguous), the engine's own.
        """
        cdef cnp.ndarray xa = np.ascontiguousarray(x, dtype=np.float32)
        if xa.ndim != 2 or xa.shape[0] != self.in_channels:
            raise ValueError(f"expected samples of shape ({self.in_channels}, n), got {np.shape(x)}")
        self._alone()
        return self._push(<const float *>cnp.PyArray_DATA(xa), xa.shape[1], flush, None)

    cdef list _push(self, const float *x, int64_t n, bint flush, list running, list into=None):
        """push() on C-contiguous samples (in_channels, n); with `running` (one EdgeSums per level),
        the new positions are summed into them. With `into` (what _outputs made for
        a longer push that this one is part of), the new positions go there, after those already in."""
        cdef int64_t counts[HIMAE_STREAM_MAX_LEVELS]
        cdef int64_t n_out[HIMAE_STREAM_MAX_LEVELS]
        cdef int64_t first[HIMAE_STREAM_MAX_LEVELS]
        cdef float *ptrs[HIMAE_STREAM_MAX_LEVELS]
        cdef char err[HIMAE_ERR_LEN]
        cdef int rc
        cdef list levels = self._reserve(n, flush, into, ptrs, first, counts)
        with nogil:
            rc = himae_stream_push(self._s, x, n, n, flush, ptrs, n_out, err, sizeof(err))
        if rc != 0:
            raise ValueError(err.decode("utf-8", "replace"))
        self._appended(running, ptrs, counts)
        return levels

    cdef int _alone(self) except -1:
        """ValueError when this engine is a group's: only the group pushes it, so its streams stay in step."""
        if self.group is not None:
            raise ValueError("this stream belongs to a group: push and prepare go through the group")
        return 0

    cdef list _reserve(self, int64_t n, bint flush, list into, float **ptrs, int64_t *first, int64_t *counts):
        """Where a push of n samples puts each level's new rows (ptrs); first and counts: each level's first
        new position and how many. Returns the outputs (see
        _push)."""
        cdef int l
        cdef int64_t j
        cdef int64_t *pos
        cdef cnp.npy_intp dims[2]
        cdef cnp.ndarray acts, positions
        cdef list levels = [] if into is None else into
        himae_stream_pending(self._s, n, flush, counts)
        for l in range(self.levels):  # the C-API constructors: this runs every hop
            first[l] = himae_stream_emitted(self._s, l)
            if into is None:
                dims[0], dims[1] = himae_stream_channels(self._s, l), counts[l]
                # Fortran order: each position's channels are contiguous, as the engine's rows are,
                # so the engine copies each level's new positions out in one memcpy.
                acts = cnp.PyArray_EMPTY(2, dims, cnp.NPY_FLOAT32, 1)
                ptrs[l] = <float *>cnp.PyArray_DATA(acts)
                positions = cnp.PyArray_EMPTY(1, &dims[1], cnp.NPY_INT64, 0)
                pos = <int64_t *>cnp.PyArray_DATA(positions)
                for j in range(counts[l]):
                    pos[j] = first[l] + j
                levels.append((positions, acts))
            else:
                positions, acts = into[l]
                j = (<int64_t *>cnp.PyArray_DATA(positions))[0] if cnp.PyArray_SIZE(positions) else first[l]
                ptrs[l] = <float *>cnp.PyArray_DATA(acts) + (first[l] - j) * himae_stream_channels(self._s, l)
        return levels

    cdef int _appended(self, list running, float *const *ptrs, const int64_t *counts) except -1:
        """Sum the rows a push wrote where _reserve said into `running` (None: not summed)."""
        if running is not None:
            for l in range(self.levels):
                (<EdgeSums>running[l]).add_rows(ptrs[l], counts[l])

    cdef list _outputs(self, int64_t n, bint flush):
        """Per level (positions, activations), all of them, for a push of n samples done in parts
        (each part a _push `into` these)."""
        cdef list levels = []
        cdef int64_t counts[HIMAE_STREAM_MAX_LEVELS]
        cdef int l
        cdef int64_t first
        himae_stream_pending(self._s, n, flush, counts)
        for l in range(self.levels):
            first = himae_stream_emitted(self._s, l)
            acts = np.empty((himae_stream_channels(self._s, l), counts[l]), np.float32, order="F")
            levels.append((np.arange(first, first + counts[l], dtype=np.int64), acts))
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
        """Continue from `state()` of an engine over the same model; StreamStateError (nothing changed) if it
        is corrupt, of another model, or holds NaN or Inf."""
        cdef char err[HIMAE_ERR_LEN]
        cdef const unsigned char *p = state
        if himae_stream_load(self._s, p, len(state), err, sizeof(err)) != 0:
            raise StreamStateError(err.decode("utf-8", "replace"))


cdef class EdgeSums:
    """Running float64 sums of one level's activations (or, at stride 1, of lost samples), kept at the
    positions where the stream's windows start and end.

    Window i, input samples [i·hop, i·hop + window), averages the level's positions p with stride·p
    inside it: [ceil(i·hop / stride), ceil((i·hop + window) / stride)), its edges. The sum of every
    position before each edge, taken as the positions arrive, makes the window's mean one
    subtraction, as exact as a sum over the window. A stream then holds a row per edge of its open
    windows (windows share edges when the hop divides the window) instead of a row per position:
    for himae-100 at a 1-s hop 11 rows per level instead of the 500-odd of level 0's ten seconds,
    so a server's thousands of streams, each pushed in turn, no longer write fresh rows to memory
    at every push.
    """

    cdef readonly int channels
    cdef readonly int64_t stride, window, hop
    cdef readonly int64_t emitted  # positions summed so far
    cdef cnp.ndarray _total_array  # their sum per channel
    cdef double *_total
    cdef int64_t _next  # the next edge to keep
    cdef cnp.ndarray _pos_array, _row_array  # kept edges, oldest first: entries [_off, _off + _n)
    cdef int64_t *_pos
    cdef double *_rows
    cdef int64_t _off, _n, _cap

    def __init__(self, int channels, int64_t stride, int64_t window, int64_t hop):
        self.channels, self.stride, self.window, self.hop = channels, stride, window, hop
        self._total_array = np.zeros(channels)
        self._total = <double *>cnp.PyArray_DATA(self._total_array)
        self._grow(4)
        self.reset()

    def reset(self):
        """Nothing summed yet."""
        self._total_array[:] = 0
        self.emitted, self._off, self._n = 0, 0, 0
        self._edge()  # position 0 starts window 0

    cdef int64_t _start(self, int64_t i) noexcept:
        return -((-i * self.hop) // self.stride)

    cdef int64_t _end(self, int64_t i) noexcept:
        return -((-(i * self.hop + self.window)) // self.stride)

    cdef int64_t _first_starting_after(self, int64_t p) noexcept:
        """The first window whose start edge lies after position p."""
        return max(0, (p * self.stride) // self.hop + 1)

    cdef int64_t _first_ending_after(self, int64_t p) noexcept:
        """The first window whose end edge lies after position p."""
        return max(0, (p * self.stride - self.window) // self.hop + 1)

    cdef int64_t _edge_after(self, int64_t p) noexcept:
        """The first edge after position p."""
        return min(self._start(self._first_starting_after(p)), self._end(self._first_ending_after(p)))

    cpdef bint is_edge(self, int64_t p):
        """Whether some window starts or ends at position p (p >= 0)."""
        return self._edge_after(p - 1) == p

    cdef int _grow(self, int64_t capacity) except -1:
        """Room for `capacity` edges, the held ones moved to the front."""
        cdef cnp.ndarray pos = np.empty(capacity, np.int64), rows = np.empty((capacity, self.channels))
        if self._pos_array is not None and self._n:
            pos[: self._n] = self._pos_array[self._off : self._off + self._n]
            rows[: self._n] = self._row_array[self._off : self._off + self._n]
        self._pos_array, self._row_array = pos, rows
        self._pos, self._rows = <int64_t *>cnp.PyArray_DATA(pos), <double *>cnp.PyArray_DATA(rows)
        self._off, self._cap = 0, capacity
        return 0

    cdef int _edge(self) except -1:
        """At the next edge (`emitted` positions summed): keep the sum, then find the edge after it."""
        cdef int64_t held = self._off + self._n
        if held == self._cap:
            if 2 * self._n <= self._cap:  # half free at the front: move down
                memmove(self._pos, self._pos + self._off, self._n * sizeof(int64_t))
                memmove(self._rows, self._rows + self._off * self.channels, self._n * self.channels * sizeof(double))
                self._off = 0
            else:
                self._grow(2 * self._cap)
            held = self._n
        self._pos[held] = self.emitted
        memcpy(self._rows + held * self.channels, self._total, self.channels * sizeof(double))
        self._n += 1
        self._next = self._edge_after(self.emitted)
        return 0

    cdef int add_rows(self, const float *rows, int64_t k) except -1:
        """Sum k more positions, rows of `channels` float32 each (the engine's output rows)."""
        cdef int64_t m, j, c, C = self.channels
        cdef double *total = self._total
        while k > 0:
            m = min(k, self._next - self.emitted)
            for j in range(m):
                for c in range(C):
                    total[c] += rows[j * C + c]
            rows += m * C
            k -= m
            self.emitted += m
            if self.emitted == self._next:
                self._edge()
        return 0

    cdef int add_counts(self, const double *counts, int64_t k) except -1:
        """Sum k more positions of a one-channel sum (lost samples)."""
        cdef int64_t j
        for j in range(k):
            self._total[0] += counts[j]
            self.emitted += 1
            if self.emitted == self._next:
                self._edge()
        return 0

    cdef const double *before(self, int64_t position) except NULL:
        """The sums of every position before the edge `position`, one per channel; ValueError if not kept."""
        cdef int64_t lo = self._off, hi = self._off + self._n, mid
        while lo < hi:
            mid = (lo + hi) // 2
            if self._pos[mid] < position:
                lo = mid + 1
            else:
                hi = mid
        if lo == self._off + self._n or self._pos[lo] != position:
            raise ValueError(f"position {position} is not a kept window edge")
        return self._rows + lo * self.channels

    cdef void drop_before(self, int64_t position) noexcept:
        """Forget the edges before `position`."""
        while self._n and self._pos[self._off] < position:
            self._off += 1
            self._n -= 1

    def state(self):
        """(positions, sums (channels, m)): the kept edges and, last, the sums through every position
        so far (at `emitted`), for a snapshot."""
        pos = self._pos_array[self._off : self._off + self._n]
        rows = self._row_array[self._off : self._off + self._n]
        if not self._n or self._pos[self._off + self._n - 1] != self.emitted:
            pos, rows = np.append(pos, self.emitted), np.vstack([rows, self._total_array[None]])
        return pos.copy(), np.ascontiguousarray(rows.T)

    def check(self, positions, sums, int64_t first_window):
        """ValueError unless `set` can take these: sums (channels, m) before positions (increasing, the last
        where the stream is), with every edge that windows from `first_window` on need by then."""
        positions = np.asarray(positions, np.int64)
        sums = np.asarray(sums, np.float64)
        if positions.ndim != 1 or sums.shape != (self.channels, positions.shape[0]) or not positions.shape[0]:
            raise ValueError("running sums do not match their positions")
        if positions[0] < 0 or (np.diff(positions) <= 0).any():
            raise ValueError("running sums' positions are not increasing")
        cdef int64_t emitted = positions[positions.shape[0] - 1], i = first_window, p
        have = set(positions.tolist())
        while self._start(i) <= emitted:  # windows end after they start
            for p in (self._start(i), self._end(i)):
                if p <= emitted and p not in have:
                    raise ValueError(f"running sums lack position {p}, an edge of window {i}")
            i += 1

    def set(self, positions, sums, int64_t first_window):
        """Take `state()` back (see `check`)."""
        self.check(positions, sums, first_window)
        positions = np.asarray(positions, np.int64)
        sums = np.asarray(sums, np.float64)
        cdef int64_t emitted = positions[positions.shape[0] - 1]
        kept = [j for j, q in enumerate(positions.tolist()) if self.is_edge(q)]
        self._grow(max(4, 2 * len(kept)))
        self._n = len(kept)
        self._pos_array[: self._n] = positions[kept]
        self._row_array[: self._n] = sums[:, kept].T
        self._total_array[:] = sums[:, sums.shape[1] - 1]
        self.emitted = emitted
        self._next = self._edge_after(emitted)


cdef class Window:
    """One completed window: samples [start, end), per-level mean activations, lost share."""

    cdef readonly int64_t start
    cdef readonly int64_t end
    cdef readonly list embeddings
    cdef readonly double masked_fraction

    def __init__(self, int64_t start, int64_t end, list embeddings, double masked_fraction):
        self.start, self.end, self.embeddings, self.masked_fraction = start, end, embeddings, masked_fraction

    def __repr__(self):
        return f"Window(start={self.start}, end={self.end}, masked_fraction={self.masked_fraction:g})"


cdef class StreamOutput:
    """What one push made computable: per level (positions int64[n], activations float32[C_l, n])."""

    cdef readonly list levels
    cdef readonly list windows

    def __init__(self, list levels, list windows):
        self.levels, self.windows = levels, windows

    def embeddings(self, int level) -> cnp.ndarray:
        """The windows' embeddings at `level` as one array, a row per window: (len(windows), C_level)
        float32. Offline, a recording's windows come by the thousand; np.stack over them costs more than
        the engine does for a small model."""
        if not 0 <= level < len(self.levels):
            raise IndexError(f"level {level} is not within 0 … {len(self.levels) - 1}")
        cdef cnp.npy_intp dims[2]
        dims[0], dims[1] = len(self.windows), (<cnp.ndarray>self.levels[level][1]).shape[0]
        cdef cnp.ndarray out = cnp.PyArray_EMPTY(2, dims, cnp.NPY_FLOAT32, 0)
        cdef float *o = <float *>cnp.PyArray_DATA(out)
        cdef cnp.ndarray row
        cdef Window w
        cdef Py_ssize_t i
        for i in range(dims[0]):
            w = <Window>self.windows[i]
            row = w.embeddings[level]
            if cnp.PyArray_TYPE(row) != cnp.NPY_FLOAT32 or cnp.PyArray_SIZE(row) != dims[1] \
                    or not cnp.PyArray_IS_C_CONTIGUOUS(row):
                raise ValueError(f"window {i}: its level-{level} embedding is not {dims[1]} contiguous float32")
            memcpy(o + i * dims[1], cnp.PyArray_DATA(row), dims[1] * sizeof(float))
        return out

    def __repr__(self):
        counts = [positions.shape[0] for positions, _ in self.levels]
        return f"StreamOutput(positions per level={counts}, windows={len(self.windows)})"


# Elements of each scratch array a Stream keeps between pushes (see StreamCore._scratch); a
# longer push runs as pushes of at most this many elements (StreamCore.push).
cdef cnp.npy_intp SCRATCH = 1 << 16


ctypedef void (*normalize_fn)(const double *x, const cnp.npy_bool *lost, int64_t lost_rows, const double *sos,
                              int64_t sections, double *z, cnp.npy_bool *started, double *scale, double *count,
                              double alpha, double k, double clip, float *out, int64_t channels,
                              int64_t n) noexcept nogil


cdef void *_state(normalizer, name, int typenum, cnp.npy_intp size) except NULL:
    """The data of the normaliser's state array `name`, checked to be what the kernel writes into."""
    cdef cnp.ndarray a = getattr(normalizer, name)
    if cnp.PyArray_TYPE(a) != typenum or cnp.PyArray_SIZE(a) != size or not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise ValueError(f"normaliser state {name} is not a C-contiguous array of {size} {np.dtype(a.dtype)}")
    return cnp.PyArray_DATA(a)


cdef class StreamCore:
    """A Stream's push path in one typed call: normaliser, engine, lost-sample counts, windows.

    A live stream pushes a few dozen samples at a time, so the Python around
    the engine would cost as much as the engine itself: here a push makes
    only the objects it returns (per level positions and activations, the
    windows), calls the normaliser through its C entry point
    (himae_stream.normalize.stream_kernel_entry: the same numba kernel
    training runs, without numba's dispatch), and each level's new rows go
    into its running sums at the windows' edges (EdgeSums), so a window's
    mean is one subtraction per level. himae_stream.stream.Stream is the
    public face.
    """

    cdef readonly StreamEngine engine
    cdef readonly object normalizer  # StreamNormalizer, or None: samples arrive normalised
    cdef readonly list sums  # per level, EdgeSums of its activations
    cdef readonly EdgeSums lost  # running count of lost samples, summed over channels
    cdef cnp.ndarray _lost_counts  # a push's lost samples per input sample, summed once the engine took them
    cdef readonly int64_t window, hop
    cdef public int64_t next_window  # index of the next window to report
    cdef int channels
    cdef int64_t strides[HIMAE_STREAM_MAX_LEVELS]
    cdef object _entry  # the normaliser's compiled entry point: keeps `_normalize` valid
    cdef normalize_fn _normalize
    cdef cnp.ndarray _sos
    cdef double _alpha, _k, _clip
    cdef cnp.ndarray _x64, _x32  # kept between pushes: the samples as float64, then as the engine takes them

    def __init__(self, StreamEngine engine, normalizer, int64_t window, int64_t hop):
        self.engine, self.normalizer, self.window, self.hop = engine, normalizer, window, hop
        self.channels = engine.in_channels
        for l in range(engine.levels):
            self.strides[l] = 2 ** (l + 1)
        self.sums = [EdgeSums(engine.channels(l), self.strides[l], window, hop) for l in range(engine.levels)]
        self.lost = EdgeSums(1, 1, window, hop)
        self._lost_counts = np.zeros(0)
        self.next_window = 0
        if normalizer is not None:
            from himae_stream.normalize import stream_kernel_entry

            self._entry = stream_kernel_entry()
            self._normalize = <normalize_fn><size_t>self._entry.address
            self._sos = np.ascontiguousarray(normalizer.sos, dtype=np.float64)
            self._alpha = normalizer.alpha
            self._k, self._clip = normalizer.spec["scale_k"], normalizer.spec["clip"]

    def reset(self):
        """Back to a new stream."""
        self.engine.reset()
        if self.normalizer is not None:
            self.normalizer.reset()
        for sums in self.sums:
            sums.reset()
        self.lost.reset()
        self.next_window = 0

    def push(self, samples, mask=None, bint flush=False) -> StreamOutput:
        """Feed samples (C, n) (or (n,) for one channel); mask (True = lost) is (C, n) or (n,);
        flush then ends the stream.

        A push longer than a scratch buffer runs as consecutive pushes of one scratch buffer each
        (the engine's state is a function of the samples pushed, so the results are the same bits),
        into one output array per level: beyond the input and the outputs, memory stays a few
        scratch buffers and what the open windows hold, however long the push.
        """
        cdef cnp.ndarray a
        if cnp.PyArray_Check(samples) and cnp.PyArray_TYPE(<cnp.ndarray>samples) in (cnp.NPY_FLOAT32, cnp.NPY_FLOAT64):
            a = samples
        else:
            a = np.asarray(samples, dtype=np.float64)
        cdef int64_t n = a.shape[a.ndim - 1] if a.ndim in (1, 2) else 0
        cdef int64_t step = max(2048, SCRATCH // self.channels), start, end
        if n <= step:
            return self._push(a, mask, flush, None)
        if a.ndim != 2 and not (a.ndim == 1 and self.channels == 1) or a.ndim == 2 and a.shape[0] != self.channels:
            raise ValueError(f"expected samples of shape ({self.channels}, n), got {(<object>a).shape}")
        if mask is not None:
            mask = np.asarray(mask, dtype=np.bool_)
            if mask.shape not in ((self.channels, n), (n,)):
                raise ValueError(f"mask shape {mask.shape} does not match samples ({self.channels}, {n}) (or ({n},))")
        cdef list levels = self.engine._outputs(n, flush), windows = []
        for start in range(0, n, step):
            end = min(n, start + step)
            windows += self._push(a[..., start:end], None if mask is None else mask[..., start:end],
                                  flush and end == n, levels).windows
        cdef StreamOutput result = StreamOutput.__new__(StreamOutput)
        result.levels, result.windows = levels, windows
        return result

    cdef StreamOutput _push(self, samples, mask, bint flush, list into):
        """push() of at most a scratch buffer's worth; with `into`, outputs go there (see StreamEngine._push)."""
        cdef int64_t n, rows = 0
        cdef const double *x
        self.engine._alone()
        cdef cnp.ndarray held = self._samples(samples, &x, &n)  # keeps x alive
        cdef cnp.ndarray lost = self._lost_rows(mask, n, &rows)
        cdef cnp.ndarray engine_in = self._scratch(1, self.channels * n)  # keeps out alive
        cdef float *out = <float *>cnp.PyArray_DATA(engine_in)
        self._engine_input(x, n, lost, rows, out)
        return self._output(n, self.engine._push(out, n, flush, self.sums, into))

    cdef int _engine_input(self, const double *x, int64_t n, cnp.ndarray lost, int64_t rows, float *out) except -1:
        """What the engine takes for samples x (n of each channel, lost ones marked in `lost`, see _lost_rows)
        into out: lost samples counted, the rest normalised (or copied, without a normaliser), the lost ones 0."""
        cdef const cnp.npy_bool *m = NULL
        if lost is not None:
            m = <const cnp.npy_bool *>cnp.PyArray_DATA(lost)
        if cnp.PyArray_SIZE(self._lost_counts) < n:
            self._lost_counts = np.empty(n)
        self._count_lost(x, n, m, rows, <double *>cnp.PyArray_DATA(self._lost_counts),
                         out if self.normalizer is None else NULL)
        if self.normalizer is not None:
            self._run_normalizer(x, n, m, rows, out)
        return 0

    cdef StreamOutput _output(self, int64_t n, list levels):
        """A push's output once the engine has taken its n samples: its rows (`levels`) and the windows they
        completed."""
        self.lost.add_counts(<const double *>cnp.PyArray_DATA(self._lost_counts), n)
        cdef StreamOutput result = StreamOutput.__new__(StreamOutput)
        result.levels, result.windows = levels, self._windows()
        return result

    cdef cnp.ndarray _scratch(self, int single, cnp.npy_intp size):
        """An array of at least `size` float64 (float32 when `single`) for this push only: the
        one kept for that kind when it is large enough, else a new one, kept for later pushes
        up to SCRATCH elements (a live push is a few dozen samples; one huge push is not held)."""
        cdef cnp.ndarray held = self._x32 if single else self._x64
        if held is not None and cnp.PyArray_SIZE(held) >= size:
            return held
        held = cnp.PyArray_EMPTY(1, &size, cnp.NPY_FLOAT32 if single else cnp.NPY_FLOAT64, 0)
        if size <= SCRATCH:
            if single:
                self._x32 = held
            else:
                self._x64 = held
        return held

    cdef cnp.ndarray _samples(self, samples, const double **x, int64_t *n):
        """samples as C-contiguous float64 (channels, n) at *x: the input's own data when it is that already."""
        cdef cnp.ndarray a
        if cnp.PyArray_Check(samples) and cnp.PyArray_TYPE(<cnp.ndarray>samples) in (cnp.NPY_FLOAT32, cnp.NPY_FLOAT64):
            a = samples
        else:
            a = np.asarray(samples, dtype=np.float64)
        cdef Py_ssize_t sc, si
        if a.ndim == 2 and a.shape[0] == self.channels:
            n[0], sc, si = a.shape[1], a.strides[0], a.strides[1]
        elif a.ndim == 1 and self.channels == 1:
            n[0], sc, si = a.shape[0], 0, a.strides[0]
        else:
            raise ValueError(f"expected samples of shape ({self.channels}, n), got {(<object>a).shape}")
        if cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT64 and cnp.PyArray_IS_C_CONTIGUOUS(a):
            x[0] = <const double *>cnp.PyArray_DATA(a)
            return a
        cdef cnp.ndarray copy = self._scratch(0, self.channels * n[0])
        cdef double *dst = <double *>cnp.PyArray_DATA(copy)
        cdef const char *src = <const char *>cnp.PyArray_DATA(a)
        cdef bint single = cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32
        cdef Py_ssize_t c, i
        for c in range(self.channels):
            for i in range(n[0]):
                if single:
                    dst[c * n[0] + i] = (<const float *>(src + c * sc + i * si))[0]
                else:
                    dst[c * n[0] + i] = (<const double *>(src + c * sc + i * si))[0]
        x[0] = dst
        return copy

    cdef cnp.ndarray _lost_rows(self, mask, int64_t n, int64_t *rows):
        """mask as C-contiguous bool (rows, n): rows = channels, or 1 for one mask of every channel; None if none."""
        if mask is None:
            return None
        cdef cnp.ndarray m = np.asarray(mask, dtype=np.bool_)
        if m.ndim == 2 and m.shape[0] == self.channels and m.shape[1] == n:
            rows[0] = self.channels
        elif m.ndim == 1 and m.shape[0] == n:
            rows[0] = 1
        else:
            raise ValueError(f"mask shape {(<object>m).shape} does not match samples ({self.channels}, {n}) (or ({n},))")
        return m if cnp.PyArray_IS_C_CONTIGUOUS(m) else np.ascontiguousarray(m)

    cdef void _count_lost(self, const double *x, int64_t n, const cnp.npy_bool *m, int64_t rows, double *counts,
                          float *out) noexcept:
        """Each sample's lost channels (non-finite or masked) into counts[0 .. n-1]; with `out`, also the
        samples as float32 with the lost ones 0 (what the engine takes un-normalised)."""
        cdef int64_t c, i
        cdef bint bad
        for i in range(n):
            counts[i] = 0
            for c in range(self.channels):
                bad = not isfinite(x[c * n + i]) or (m != NULL and m[(c if rows > 1 else 0) * n + i])
                counts[i] += bad
                if out != NULL:
                    out[c * n + i] = 0.0 if bad else <float>x[c * n + i]

    cdef int _run_normalizer(self, const double *x, int64_t n, const cnp.npy_bool *m, int64_t rows,
                             float *out) except -1:
        """The stream normaliser over x into out, advancing its state (read from it at every push: it may be
        reset or replaced by set_state)."""
        cdef int64_t sections = self._sos.shape[0], channels = self.channels
        cdef double *z = <double *>_state(self.normalizer, "z", cnp.NPY_FLOAT64, channels * sections * 2)
        cdef cnp.npy_bool *started = <cnp.npy_bool *>_state(self.normalizer, "started", cnp.NPY_BOOL, channels)
        cdef double *scale = <double *>_state(self.normalizer, "scale", cnp.NPY_FLOAT64, channels)
        cdef double *count = <double *>_state(self.normalizer, "count", cnp.NPY_FLOAT64, channels)
        cdef const double *sos = <const double *>cnp.PyArray_DATA(self._sos)
        # with the GIL: releasing it would cost more than filtering a live push's few dozen samples
        self._normalize(x, m, rows, sos, sections, z, started, scale, count, self._alpha, self._k, self._clip,
                        out, channels, n)
        return 0

    cdef list _windows(self):
        """Windows whose every position has been emitted, oldest first; then forget what they alone needed."""
        cdef int64_t last = (himae_stream_complete(self.engine._s) - self.window) // self.hop
        if last < self.next_window:
            return []
        cdef list windows = []
        cdef int levels = len(self.sums), l
        cdef int64_t i, c, start, stride, a, b
        cdef const double *lo
        cdef const double *hi
        cdef double inv
        cdef EdgeSums sums
        cdef cnp.npy_intp size
        cdef cnp.ndarray mean
        cdef float *o
        cdef list embeddings
        cdef Window w
        for i in range(self.next_window, last + 1):
            start = i * self.hop
            embeddings = []
            for l in range(levels):  # positions p of level l with 2^(l+1)·p in [start, start + window)
                sums = self.sums[l]
                stride = self.strides[l]
                a, b = (start + stride - 1) // stride, (start + self.window + stride - 1) // stride
                lo, hi, inv = sums.before(a), sums.before(b), 1.0 / (b - a)
                size = sums.channels
                mean = cnp.PyArray_EMPTY(1, &size, cnp.NPY_FLOAT32, 0)
                o = <float *>cnp.PyArray_DATA(mean)
                for c in range(size):
                    o[c] = <float>((hi[c] - lo[c]) * inv)
                embeddings.append(mean)
            w = Window.__new__(Window)
            w.start, w.end, w.embeddings = start, start + self.window, embeddings
            w.masked_fraction = ((self.lost.before(start + self.window)[0] - self.lost.before(start)[0])
                                 * (1.0 / self.window) / self.channels)
            windows.append(w)
        self.next_window = last + 1
        start = self.next_window * self.hop
        for l in range(levels):
            (<EdgeSums>self.sums[l]).drop_before((start + self.strides[l] - 1) // self.strides[l])
        self.lost.drop_before(start)
        return windows
