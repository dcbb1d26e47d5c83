# Included from _core.pyx: groups of streams pushed together (csrc/streams.c) behind Model.streams.
# Each stream of a group keeps its own StreamCore (normaliser, lost samples, running sums, windows) over a
# StreamEngine that wraps the group's engine for it; only the engine call is shared.
# himae_stream.stream.Streams is the public face.

cdef extern from "streams.h":
    enum: HIMAE_STREAMS_MAX
    ctypedef struct himae_streams:
        pass
    int himae_streams_create(const himae_model *model, int n, himae_streams **out, char *err, size_t errlen)
    void himae_streams_free(himae_streams *g)
    himae_stream *himae_streams_member(himae_streams *g, int i)
    int himae_streams_share(himae_streams *g, himae_streams *workspace)
    int himae_streams_push(himae_streams *g, const float *x, int64_t ldx, int64_t m, int flush, float **out,
                           int64_t *n_out, char *err, size_t errlen) nogil


cdef StreamGroup group_workspace(Model model, int n):
    """The model's workspace for groups of n, made with its first such group: as stream_workspace (_stream.pxi)
    does for streams pushed alone, a group's push computes in its buffers when no other thread's push holds
    them, so the groups one thread pushes in turn share one group's worth of memory, which stays in cache."""
    cdef StreamGroup ws = model._group_workspaces.get(n)
    if ws is None:
        ws = model._group_workspaces[n] = StreamGroup(model, n, True)
    return ws


cdef class StreamGroup:
    """n streams of one model pushed together: each conv runs once over every stream's new rows.

    The group owns the engines; `engine(i)` wraps stream i's for everything but pushing (a StreamEngine
    that refuses push and prepare), and `push` takes the n streams' StreamCores.
    """

    cdef himae_streams *_g
    cdef Model _model  # the engines run the model's packed weights: keep it alive
    cdef StreamGroup _workspace  # whose buffers its pushes borrow (group_workspace), or None for a workspace
    # (which lives in its model's _group_workspaces and has no _model)
    cdef readonly int count
    cdef int levels
    # per push, per stream and level: where the rows go, first positions, counts
    cdef cnp.ndarray _ptrs, _first, _counts

    def __cinit__(self, Model model, int n, bint workspace=False):
        cdef char err[HIMAE_ERR_LEN]
        err[0] = 0
        # a workspace only lends its buffers, never runs the weights: it does not keep the model alive,
        # which keeps it (group_workspace), so both go when the model's last user does, without the GC
        self._model, self.count = None if workspace else model, n
        if himae_streams_create(model._m, n, &self._g, err, sizeof(err)) != 0:
            raise ValueError(err.decode("utf-8", "replace"))
        if not workspace:
            self._workspace = group_workspace(model, n)
            if himae_streams_share(self._g, self._workspace._g) != 0:
                raise RuntimeError("a group of streams could not share its model's workspace")
        self.levels = himae_stream_levels(himae_streams_member(self._g, 0))
        self._ptrs = np.zeros(n * self.levels, np.uintp)
        self._first, self._counts = (np.zeros(n * self.levels, np.int64) for _ in range(2))

    def __dealloc__(self):
        himae_streams_free(self._g)

    def engine(self, int i) -> StreamEngine:
        """Stream i's engine (it keeps the group alive)."""
        if not 0 <= i < self.count:
            raise IndexError(f"stream {i} out of range (the group has {self.count})")
        return StreamEngine(self._model, self, i)

    def push(self, list cores, samples, masks=None, bint flush=False) -> list:
        """Each stream's StreamOutput for its samples[i] (as StreamCore.push takes them: (C, m), or (m,) for
        one channel; m the same for every stream) and masks[i] (or masks None); flush then ends every stream.

        Every stream's samples and mask are checked before any state changes. The engine's input for all n
        streams is one float32 array (n, C, m) for the push.
        """
        cdef int n = self.count, i, levels = self.levels
        if len(cores) != n or len(samples) != n or masks is not None and len(masks) != n:
            raise ValueError(f"a group of {n} streams takes {n} cores, sample arrays and masks (or masks=None)")
        cdef StreamCore core
        cdef const double *x
        cdef int64_t m = 0, length, rows
        cdef cnp.ndarray xs = np.zeros(n, np.uintp), lost_rows = np.zeros(n, np.int64)
        cdef list held = [], lost = []
        for i in range(n):
            core = cores[i]
            if core.engine.group is not self:
                raise ValueError(f"core {i} is not over stream {i} of this group")
            held.append(core._samples(samples[i], &x, &length))  # keeps x alive
            if i == 0:
                m = length
            elif length != m:
                raise ValueError(f"stream {i} has {length} samples and stream 0 {m}: a group's streams get as many")
            xs[i] = <size_t>x
            rows = 0
            lost.append(core._lost_rows(None if masks is None else masks[i], m, &rows))
            lost_rows[i] = rows
            if core.engine.flushed and (m > 0 or flush):
                raise ValueError("stream already flushed; reset it to start a new one")
            if core.engine.pushed != (<StreamCore>cores[0]).engine.pushed:
                raise ValueError(f"stream {i} is not in step with stream 0: reset or restore them together")
        cdef int64_t channels = (<StreamCore>cores[0]).channels
        cdef cnp.ndarray engine_in = np.empty((n, channels, m), np.float32)
        cdef float *into = <float *>cnp.PyArray_DATA(engine_in)
        cdef float **ptrs = <float **>cnp.PyArray_DATA(self._ptrs)
        cdef int64_t *first = <int64_t *>cnp.PyArray_DATA(self._first)
        cdef int64_t *counts = <int64_t *>cnp.PyArray_DATA(self._counts)
        cdef list outputs = []
        for i in range(n):
            core = cores[i]
            core._engine_input(<const double *><size_t>xs[i], m, lost[i], lost_rows[i], into + i * channels * m)
            outputs.append(core.engine._reserve(m, flush, None, ptrs + i * levels, first + i * levels,
                                                counts + i * levels))
        cdef int64_t n_out[HIMAE_STREAM_MAX_LEVELS]
        cdef char err[HIMAE_ERR_LEN]
        cdef int rc
        with nogil:
            rc = himae_streams_push(self._g, into, m, m, flush, ptrs, n_out, err, sizeof(err))
        if rc != 0:
            raise ValueError(err.decode("utf-8", "replace"))
        for i in range(n):
            core = cores[i]
            core.engine._appended(core.sums, ptrs + i * levels, counts + i * levels)
            outputs[i] = core._output(m, outputs[i])
        return outputs
