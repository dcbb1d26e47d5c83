# cython: boundscheck=False, wraparound=False
"""Python binding of the C core (csrc/): load a model file, run the encoder.

A Model is not thread-safe (its activation buffers are reused between
calls): use one Model per thread. Computation releases the GIL.
"""

import json
import os

import numpy as np

cimport numpy as cnp
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport uint32_t, uint64_t

from himae_stream.errors import ModelFileError, StreamStateError, in_file
from himae_stream.normalize import validate_spec

cnp.import_array()

cdef extern from "himae.h":
    enum: HIMAE_MAX_LEVELS
    enum: HIMAE_ERR_LEN
    enum himae_status:
        HIMAE_OK, HIMAE_EFORMAT, HIMAE_EIO, HIMAE_ENOMEM, HIMAE_EINVAL
    enum himae_isa:
        HIMAE_ISA_COUNT
    enum himae_precision:
        HIMAE_F32, HIMAE_BF16, HIMAE_BF16DOT, HIMAE_INT8, HIMAE_PRECISION_COUNT
    ctypedef struct himae_config:
        uint32_t in_channels
        uint32_t window
        uint32_t n_levels
        uint32_t kernel_size
        uint32_t stride
        float fs
        uint32_t patch_size
        float mask_ratio
        uint32_t flags
        uint32_t channels[8]
        uint32_t level_len[8]
    ctypedef struct himae_model:
        pass
    size_t HIMAE_DEFAULT_MAX_MEMORY
    int himae_load(const char *path, const char *isa, const char *precision, size_t max_memory,
                   himae_model **out, char *err, size_t err_len)
    void himae_free(himae_model *model)
    const himae_config *himae_model_config(const himae_model *model)
    const char *himae_model_metadata(const himae_model *model)
    himae_isa himae_model_isa(const himae_model *model)
    himae_precision himae_model_precision(const himae_model *model)
    const char *himae_precision_name(himae_precision precision)
    int himae_encode(himae_model *model, const float *x, size_t batch, float **levels,
                     float **means, char *err, size_t err_len) nogil
    int himae_reconstruct(himae_model *model, const float *x, size_t batch, float *out,
                          char *err, size_t err_len) nogil
    const char *himae_isa_name(himae_isa isa)
    int himae_isa_supported(himae_isa isa)
    int himae_isa_from_name(const char *name, himae_isa *isa)
    int himae_precision_supported(himae_isa isa, himae_precision precision)
    himae_isa himae_isa_best()
    uint64_t himae_alloc_count()

cdef extern from "modelfile.h":
    size_t HIMAE_MAX_FILE
    enum: HIMAE_MAX_TENSORS
    ctypedef struct himae_tensor:
        char name[48]
        uint32_t ndim
        uint32_t dims[4]
        uint64_t offset
        uint64_t nbytes
    ctypedef struct himae_file:
        himae_config config
        const char *meta
        size_t meta_size
        size_t n_tensors
        himae_tensor tensors[HIMAE_MAX_TENSORS]
    int himae_parse(const unsigned char *buf, size_t size, himae_file *file, char *err, size_t err_len) nogil
    void himae_model_memory(const himae_file *file, himae_isa isa, himae_precision precision, size_t *weights,
                            size_t *buffers)

#: The largest model file the readers take, and the default limit on a loaded model's activation buffers.
MAX_FILE = HIMAE_MAX_FILE
DEFAULT_MAX_MEMORY = HIMAE_DEFAULT_MAX_MEMORY

cdef extern from "fpmode.h":
    enum: HIMAE_FPMODE_FLAGS
    uint64_t himae_fpmode_get()


def supported_isas() -> list:
    """Names of the micro-kernel ISAs this CPU and OS can run, best last."""
    return [himae_isa_name(<himae_isa>i).decode() for i in range(HIMAE_ISA_COUNT)
            if himae_isa_supported(<himae_isa>i)]


def supported_precisions(isa: str | None = None) -> list:
    """Names of the precisions this CPU runs with an ISA's kernels (default: the best ISA), as load_model
    takes them: "bf16dot" only where the CPU has AVX512-BF16 or ARM BF16, "int8" only where it has
    AVX2, AVX512-VNNI or ARM DotProd (either, slowly, with isa="scalar")."""
    cdef himae_isa which = himae_isa_best()
    if isa is not None and not himae_isa_from_name(isa.encode(), &which):
        raise ValueError(f"unknown ISA {isa!r} (choose {', '.join(supported_isas())})")
    return [himae_precision_name(<himae_precision>p).decode() for p in range(HIMAE_PRECISION_COUNT)
            if himae_precision_supported(which, <himae_precision>p)]


def alloc_count() -> int:
    """Heap allocations the C core has made in this process."""
    return himae_alloc_count()


def fp_mode() -> int:
    """This thread's floating-point control register, exception flags left out (x86 MXCSR, AArch64 FPCR; 0 elsewhere).

    Every call into the core flushes subnormals to zero for its own work and
    puts the caller's mode back (csrc/fpmode.h); tests compare this before and after.
    """
    return himae_fpmode_get() & ~<uint64_t>HIMAE_FPMODE_FLAGS


ctypedef fused real:
    float
    double


def affine(const double[:, ::1] w, const real[::1] x, const double[::1] b) -> list:
    """w @ x + b for w (outputs, dim) and one vector x (dim,), as Python floats (float64 sums).

    The probe heads read each live window's embeddings with it: for arrays
    this small a typed loop costs less than numpy's dispatch, and on a core
    that idled between packets far less.
    """
    cdef Py_ssize_t i, j, outputs = w.shape[0], dim = w.shape[1]
    if x.shape[0] != dim or b.shape[0] != outputs:
        raise ValueError(f"affine: w ({outputs}, {dim}), x ({x.shape[0]},), b ({b.shape[0]},) do not fit")
    cdef double acc
    cdef list out = []
    for j in range(outputs):
        acc = b[j]
        for i in range(dim):
            acc += w[j, i] * x[i]
        out.append(acc)
    return out


cdef _raise(int rc, char *err):
    msg = err.decode("utf-8", "replace")
    if rc == HIMAE_EFORMAT:
        raise ModelFileError(msg)
    if rc == HIMAE_EIO:
        raise OSError(msg)
    if rc == HIMAE_EINVAL:
        raise ValueError(msg)
    if rc == HIMAE_ENOMEM:
        raise MemoryError(msg)
    raise RuntimeError(msg)


def parse_model_file(const unsigned char[::1] buf) -> dict:
    """The C loader's checks of docs/model-format.md on model file bytes: the one validator.

    Returns the header's configuration (header_config), the metadata's byte
    span (meta_offset, meta_size), the tensors in spec order as (name,
    offset, nbytes, shape) and what loading takes with the best kernels
    (memory: weights and buffers, in bytes); raises ModelFileError with the
    loader's message for the first failure.
    """
    cdef char err[HIMAE_ERR_LEN]
    cdef himae_file *f = <himae_file *>PyMem_Malloc(sizeof(himae_file))
    cdef const himae_config *c
    cdef himae_tensor *t
    cdef size_t weights, buffers, i
    cdef int rc
    cdef const unsigned char *p = &buf[0] if buf.shape[0] else <const unsigned char *>b""
    if f == NULL:
        raise MemoryError()
    err[0] = 0
    try:
        with nogil:
            rc = himae_parse(p, buf.shape[0], f, err, sizeof(err))
        if rc != HIMAE_OK:
            raise ModelFileError(err.decode("utf-8", "replace"))
        c = &f.config
        himae_model_memory(f, himae_isa_best(), HIMAE_F32, &weights, &buffers)
        tensors = []
        for i in range(f.n_tensors):
            t = &f.tensors[i]
            tensors.append((t.name.decode("ascii"), t.offset, t.nbytes, tuple(t.dims[d] for d in range(t.ndim))))
        return {
            "header_config": {
                "fs": _f32(c.fs), "window": c.window, "in_channels": c.in_channels,
                "channels": [c.channels[l] for l in range(c.n_levels)], "kernel_size": c.kernel_size,
                "stride": c.stride, "patch_size": c.patch_size, "mask_ratio": _f32(c.mask_ratio),
                "decoder": bool(c.flags & 1),
            },
            "meta_offset": <size_t>(f.meta - <const char *>p), "meta_size": f.meta_size,
            "tensors": tensors,
            "memory": {"weights": weights, "buffers": buffers},
        }
    finally:
        PyMem_Free(f)


def _f32(value) -> float:
    """The shortest decimal naming the same binary32 value (0.8, not 0.800000011920929)."""
    return float(str(np.float32(value)))


cdef class Model:
    """A loaded model file: window-mode encoder (and decoder when present).

    Model(path, isa=None, max_memory=None, precision=None): isa None picks the
    best kernel this CPU supports (or $HIMAE_ISA); "scalar", "avx2", "avx512"
    or "neon" forces one. max_memory (bytes, default DEFAULT_MAX_MEMORY) bounds
    the activation buffers: a file that declares more is refused before they
    are allocated (docs/model-format.md, "Memory"). precision None or "f32"
    runs the file's weights; "bf16" rounds them to bfloat16 at load, halving
    the bytes each push reads, with f32 activations and sums; "bf16dot"
    also rounds each convolution's inputs, for AVX512-BF16 dot products;
    "int8" rounds the encoder's weights and convolution inputs to int8, for
    AVX2, AVX512-VNNI or ARM SDOT dot products summed exactly (docs/stream-mode.md, "Reduced
    precision").
    """

    cdef himae_model *_m
    cdef readonly dict config
    cdef readonly dict metadata
    cdef readonly str isa
    cdef readonly str precision
    cdef readonly tuple level_lengths
    cdef readonly str path
    cdef void *_stream_workspace  # the stream engine whose buffers its streams' pushes borrow (_stream.pxi)
    cdef dict _group_workspaces  # group size -> the StreamGroup whose buffers its groups' pushes borrow

    def __cinit__(self, path, isa=None, max_memory=None, precision=None):
        cdef char err[HIMAE_ERR_LEN]
        cdef bytes bpath = os.fsencode(path)
        cdef bytes bisa = (isa or "").encode()
        cdef bytes bprecision = (precision or "").encode()
        if max_memory is not None and (not isinstance(max_memory, int) or max_memory < 1):
            raise ValueError(f"max_memory must be a positive number of bytes, got {max_memory!r}")
        cdef size_t limit = 0 if max_memory is None else min(max_memory, <size_t>-1)
        err[0] = 0
        self._group_workspaces = {}
        rc = himae_load(bpath, bisa, bprecision, limit, &self._m, err, sizeof(err))
        if rc == HIMAE_EFORMAT:
            raise ModelFileError(in_file(err.decode("utf-8", "replace"), path))
        if rc != HIMAE_OK:
            _raise(rc, err)
        self.path = os.fsdecode(path)
        cdef const himae_config *c = himae_model_config(self._m)
        self.metadata = json.loads(himae_model_metadata(self._m).decode("utf-8"))
        n = c.n_levels
        self.config = {
            "name": self.metadata["name"],
            "fs": _f32(c.fs),
            "window": c.window,
            "in_channels": c.in_channels,
            "channel_names": list(self.metadata["channel_names"]),
            "channels": [c.channels[l] for l in range(n)],
            "kernel_size": c.kernel_size,
            "stride": c.stride,
            "patch_size": c.patch_size,
            "mask_ratio": _f32(c.mask_ratio),
            "normalizer": validate_spec(self.metadata["normalizer"]),
            "decoder": bool(c.flags & 1),
        }
        self.level_lengths = tuple(c.level_len[l] for l in range(n))
        self.isa = himae_isa_name(himae_model_isa(self._m)).decode()
        self.precision = himae_precision_name(himae_model_precision(self._m)).decode()

    def __dealloc__(self):
        free_stream_workspace(self._stream_workspace)  # its streams, which keep this alive, are gone
        himae_free(self._m)

    @property
    def isas(self) -> list:
        """Names of the micro-kernel ISAs this CPU and OS can run (any may be forced at load)."""
        return supported_isas()

    @property
    def alloc_count(self) -> int:
        """Heap allocations the C core has made in this process (flat after load)."""
        return himae_alloc_count()

    cdef cnp.ndarray _windows(self, x):
        """x as a C-contiguous float32 (B, C, L) array; ValueError otherwise."""
        cdef const himae_config *c = himae_model_config(self._m)
        cdef cnp.ndarray a
        if isinstance(x, np.ndarray) and x.dtype == np.float32:
            a = x[None] if x.ndim == 2 else x
            if (a.ndim == 3 and a.shape[0] >= 1 and a.shape[1] == c.in_channels
                    and a.shape[2] == c.window):
                return a if cnp.PyArray_IS_C_CONTIGUOUS(a) else np.ascontiguousarray(a)
        expected = f"float32 array of shape ({c.in_channels}, {c.window}) or (B, {c.in_channels}, {c.window})"
        if not isinstance(x, np.ndarray) or x.dtype != np.float32:
            raise ValueError(f"expected a {expected}, got {getattr(x, 'dtype', type(x).__name__)}")
        raise ValueError(f"expected a {expected}, got shape {tuple(np.shape(x))}")

    cdef list _run(self, x, bint want_levels):
        cdef cnp.ndarray xb = self._windows(x)
        if not np.isfinite(xb).all():
            # Window mode has no lost-sample mask: a NaN would spread through every level.
            raise ValueError(f"input has {int(np.count_nonzero(~np.isfinite(xb)))} NaN or Inf sample(s): fill them "
                             "(himae_stream.impute), mask them (reconstruct), or use stream mode, which counts "
                             "them as lost")
        cdef const himae_config *c = himae_model_config(self._m)
        cdef size_t batch = xb.shape[0]
        cdef bint batched = cnp.PyArray_NDIM(<cnp.ndarray>x) == 3
        cdef float *ptrs[HIMAE_MAX_LEVELS]
        cdef char err[HIMAE_ERR_LEN]
        cdef int rc
        cdef uint32_t l
        cdef cnp.npy_intp total = 0, size
        for l in range(c.n_levels):
            total += batch * c.channels[l] * (c.level_len[l] if want_levels else 1)
        # One block for every level (views of it are returned): a large block gets
        # huge pages from numpy, so first-touch page faults stay few at big batches.
        cdef cnp.ndarray block = cnp.PyArray_EMPTY(1, &total, cnp.NPY_FLOAT32, 0)
        cdef float *base = <float *>cnp.PyArray_DATA(block)
        cdef list outs = []
        cdef cnp.ndarray view
        cdef cnp.npy_intp dims[3]
        cdef int nd
        total = 0
        for l in range(c.n_levels):
            size = batch * c.channels[l] * (c.level_len[l] if want_levels else 1)
            ptrs[l] = base + total
            dims[0] = batch
            dims[1] = c.channels[l]
            dims[2] = c.level_len[l]
            nd = 2 + want_levels if batched else 1 + want_levels
            view = cnp.PyArray_SimpleNewFromData(nd, &dims[0] if batched else &dims[1],
                                                 cnp.NPY_FLOAT32, ptrs[l])
            cnp.set_array_base(view, block)
            outs.append(view)
            total += size
        cdef const float *xp = <const float *>cnp.PyArray_DATA(xb)
        with nogil:
            if want_levels:
                rc = himae_encode(self._m, xp, batch, ptrs, NULL, err, sizeof(err))
            else:
                rc = himae_encode(self._m, xp, batch, NULL, ptrs, err, sizeof(err))
        if rc != HIMAE_OK:
            _raise(rc, err)
        return outs

    def encode(self, x) -> list:
        """Per-level encoder outputs: (C_l, len_l) for one window, (B, C_l, len_l) for B.

        NaN or Inf input is refused (ValueError): window mode has no mask; stream mode has.

        The arrays are views of one new block per call (never reused by the model).
        """
        return self._run(x, True)

    def embed(self, x) -> list:
        """Per-level time means of the encoder outputs: (C_l,) or (B, C_l)."""
        return self._run(x, False)

    def reconstruct(self, x, mask=None):
        """The decoder's window-mode reconstruction (tanh), same shape as x.

        mask: bool, shaped like x or (L,); masked samples are zeroed before
        the encoder, exactly as in pretraining. NaN or Inf samples are masked too.
        """
        return _reconstruct(self, x, mask)

    def stream(self, window=None, hop=None, normalize=True):
        """Stream mode: an exact incremental encoder (himae_stream.stream.Stream)."""
        from himae_stream.stream import Stream
        return Stream(self, window, hop, normalize)

    def stream_from(self, snapshot):
        """Resume a stream from `Stream.snapshot()`."""
        from himae_stream.stream import Stream
        return Stream.restore(self, snapshot)

    def streams(self, n, window=None, hop=None, normalize=True):
        """n streams pushed together, each weight read once per push for all (himae_stream.stream.Streams)."""
        from himae_stream.stream import Streams
        return Streams(self, n, window, hop, normalize)

    def streams_from(self, snapshots):
        """Resume a group of streams from `Streams.snapshot()`."""
        from himae_stream.stream import Streams
        return Streams.restore(self, snapshots)

    def normalize(self, x, mask=None):
        """This model's normaliser over a whole recording (C, N), as stream mode applies it."""
        from himae_stream.stream import normalize_for
        return normalize_for(self, x, mask)


include "_decoder.pxi"
include "_framing.pxi"
include "_heads.pxi"
include "_samples.pxi"
include "_stream.pxi"
include "_streams.pxi"
include "_resample.pxi"
