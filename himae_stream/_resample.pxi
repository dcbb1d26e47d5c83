# Included from _core.pyx: the inner loop of himae_stream.resample.StreamResampler (the public face,
# which documents the filter). In numpy it gathered every output's taps into arrays of tens of MB
# per hour of signal, and took ~30 µs for a live chunk of a dozen samples.


def polyphase_fir(const double[:, ::1] x, const cnp.npy_bool[::1] lost, const int64_t[::1] first,
                  const int64_t[::1] phase, const double[:, ::1] bank, float[:, ::1] out,
                  cnp.npy_bool[::1] out_lost):
    """Output j of channel c is the sum over taps t of x[c, first[j] - t] · bank[phase[j], t],
    added in tap order (so any chunking of a stream gives the same bits), rounded to float32;
    an output whose taps reach a lost input is 0 and flagged in `out_lost`."""
    cdef Py_ssize_t channels = x.shape[0], n_in = x.shape[1], n = first.shape[0], taps = bank.shape[1]
    cdef Py_ssize_t c, j, t, i
    cdef double acc
    cdef const double *row
    cdef const double *w
    cdef bint gone
    if lost.shape[0] != n_in or phase.shape[0] != n or out.shape[0] != channels or out.shape[1] != n \
            or out_lost.shape[0] != n or taps == 0:
        raise ValueError("polyphase_fir: mismatched shapes")
    for j in range(n):
        if not (taps - 1 <= first[j] < n_in and 0 <= phase[j] < bank.shape[0]):
            raise ValueError("polyphase_fir: a tap or phase outside the inputs")
    with nogil:
        for j in range(n):
            i = first[j]
            gone = False
            for t in range(taps):
                gone = gone or lost[i - t]
            out_lost[j] = gone
            w = &bank[phase[j], 0]
            for c in range(channels):
                if gone:
                    out[c, j] = 0.0
                    continue
                row = &x[c, 0]
                acc = row[i] * w[0]
                for t in range(1, taps):
                    acc = acc + row[i - t] * w[t]
                out[c, j] = <float>acc
