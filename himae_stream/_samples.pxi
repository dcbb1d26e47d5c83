# Included from _core.pyx: the per-chunk arithmetic of himae_stream.samplestream.SampleStream.
# A live chunk is a packet of a few samples, handled right after the event loop woke from its
# wait for the device, when every distinct numpy call runs from cold caches (5 to 10 us each,
# measured): a chunk's conversion, timing and checks are two calls here instead of a dozen there.

from libc.math cimport isfinite
from numpy cimport npy_bool

ctypedef fused code_t:
    short
    int
    float


cdef void _physical(const code_t[:, :] codes, const float[::1] scale, float[:, ::1] out) noexcept nogil:
    cdef Py_ssize_t c, i
    for c in range(codes.shape[0]):
        for i in range(codes.shape[1]):
            out[c, i] = <float>codes[c, i] * scale[c]


def physical_values(codes, scale) -> np.ndarray:
    """Codes `(C, n)` (int16, int32 or float32, any strides; other types through float32) as float32
    physical values: each code times its channel's scale."""
    samples = np.empty(codes.shape, np.float32)
    cdef float[::1] s = np.asarray(scale, np.float32)
    if s.shape[0] != codes.shape[0]:
        raise ValueError(f"{s.shape[0]} scales for {codes.shape[0]} channels")
    if codes.dtype == np.int16:
        _physical[short](codes, s, samples)
    elif codes.dtype == np.int32:
        _physical[int](codes, s, samples)
    else:
        _physical[float](codes.astype(np.float32, copy=False), s, samples)
    return samples


def packet_samples(codes, scale, double t0, double step):
    """A packet's chunk arrays: `physical_values`, host times `t0 + step·i` and a lost mask of zeros."""
    n = codes.shape[1]
    times = np.empty(n)
    cdef double[::1] t = times
    cdef Py_ssize_t i
    for i in range(n):
        t[i] = t0 + step * i
    return times, physical_values(codes, scale), np.zeros(n, np.bool_)


def finish_chunk(double[:] times, float[:, :] samples, lost, double last_host):
    """In place, a chunk's last checks: a non-finite sample (a float32 device's "no value") becomes
    0 and lost; times are held strictly increasing after `last_host` (one µs a sample past it).
    Returns (samples made lost, the chunk's last time or `last_host` for an empty chunk)."""
    cdef Py_ssize_t i, c, n = times.shape[0], bad = 0
    cdef bint finite
    if samples.shape[1] != n or len(lost) != n:
        raise ValueError("times, samples and lost mask disagree in length")
    cdef npy_bool *mask = <npy_bool *>_array_at(lost, cnp.NPY_BOOL, n, "lost mask") if n else NULL
    for i in range(n):
        finite = True
        for c in range(samples.shape[0]):
            finite = finite and isfinite(samples[c, i])
        if not finite:
            for c in range(samples.shape[0]):
                samples[c, i] = 0.0
            mask[i] = 1
            bad += 1
    if n and times[0] <= last_host:
        for i in range(n):
            times[i] = max(times[i], last_host + 1e-6 * (i + 1))
    return bad, times[n - 1] if n else last_host
