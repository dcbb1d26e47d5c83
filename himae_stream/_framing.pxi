# Included from _core.pyx: the serial framing (himae_stream.framing is the public
# face and documents the format): COBS both ways and each frame's check are the
# C core's (csrc/framing.c, fuzzed by csrc/fuzz/fuzz_frame.c); FrameDecoder
# scans what a read brought for delimiters and keeps the counters.

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stddef cimport ptrdiff_t
from libc.stdint cimport uint8_t
from libc.string cimport memchr

cdef extern from "framing.h":
    enum: HIMAE_FRAME_CRC_SIZE
    enum himae_frame_status:
        HIMAE_FRAME_OK, HIMAE_FRAME_BAD_COBS, HIMAE_FRAME_BAD_CRC
    size_t himae_cobs_encode(const uint8_t *src, size_t n, uint8_t *out) nogil
    ptrdiff_t himae_cobs_decode(const uint8_t *src, size_t n, uint8_t *out) nogil
    himae_frame_status himae_frame_check(const uint8_t *frame, size_t n, uint8_t *out, size_t *body_len) nogil

CRC_SIZE = HIMAE_FRAME_CRC_SIZE
#: Longest body a FrameDecoder accepts by default.
MAX_BODY = 65536


cdef const uint8_t *_bytes_at(const uint8_t[::1] view):
    return &view[0] if view.shape[0] else NULL


def cobs_encode(const uint8_t[::1] data) -> bytes:
    """Consistent-overhead byte stuffing: the result holds no zero byte."""
    cdef Py_ssize_t n = data.shape[0]
    cdef bytearray out = bytearray(n + n // 254 + 2)
    cdef Py_ssize_t size = himae_cobs_encode(_bytes_at(data), n, <uint8_t *><char *>out)
    return PyBytes_FromStringAndSize(<char *>out, size)


def cobs_decode(const uint8_t[::1] data):
    """Inverse of cobs_encode; None when `data` is not a valid encoding."""
    cdef Py_ssize_t n = data.shape[0]
    cdef bytearray out = bytearray(n + 1)
    cdef Py_ssize_t size = himae_cobs_decode(_bytes_at(data), n, <uint8_t *><char *>out)
    return None if size < 0 else PyBytes_FromStringAndSize(<char *>out, size)


cdef class FrameDecoder:
    """Incremental frame decoder: feed it bytes, get back valid bodies.

    Never raises. Bad frames are skipped and counted: `crc_errors` (CRC
    mismatch), `decode_errors` (invalid COBS or too short), `oversize`
    (no delimiter within the size limit); `resyncs` counts every run of
    discarded bytes, `frames` the good ones. Memory stays bounded by the
    size limit: an unfinished frame is held up to it, and frames decode
    into one buffer of that size.
    """

    cdef readonly dict counters
    cdef readonly Py_ssize_t max_frame
    cdef bytes _held  # the start of an unfinished frame
    cdef bint _discarding  # inside an oversize run: skip to the next delimiter
    cdef bytearray _decoded

    def __init__(self, Py_ssize_t max_body=MAX_BODY):
        self.max_frame = max_body + HIMAE_FRAME_CRC_SIZE + max_body // 254 + 2
        self.counters = {"frames": 0, "crc_errors": 0, "decode_errors": 0, "oversize": 0, "resyncs": 0, "bytes": 0}
        self._held = b""
        self._discarding = False
        self._decoded = bytearray(self.max_frame)

    @property
    def held(self) -> int:
        """Bytes held of an unfinished frame (never more than max_frame)."""
        return len(self._held)

    def feed(self, data) -> list:
        """Bodies of every complete valid frame in the bytes seen so far."""
        cdef bytes new = bytes(data)
        self.counters["bytes"] += len(new)
        if self._discarding:  # skip the rest of an oversize run
            cut = new.find(b"\0")
            if cut < 0:
                return []
            new, self._discarding = new[cut + 1 :], False
        cdef bytes buf = self._held + new if self._held else new
        cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(buf)
        cdef uint8_t *out = <uint8_t *><char *>self._decoded
        cdef Py_ssize_t n = len(buf), begin = 0, end
        cdef size_t body
        cdef himae_frame_status status
        cdef const uint8_t *zero
        cdef list bodies = []
        while begin < n:
            zero = <const uint8_t *>memchr(p + begin, 0, <size_t>(n - begin))
            if zero == NULL:
                break
            end = zero - p
            if end > begin:
                if end - begin > self.max_frame:
                    self._bad("oversize")
                else:
                    status = himae_frame_check(p + begin, end - begin, out, &body)
                    if status == HIMAE_FRAME_BAD_COBS:
                        self._bad("decode_errors")
                    elif status == HIMAE_FRAME_BAD_CRC:
                        self._bad("crc_errors")
                    else:
                        self.counters["frames"] += 1
                        bodies.append(PyBytes_FromStringAndSize(<char *>out, body))
            begin = end + 1
        self._held = buf[begin:] if begin < n else b""
        if len(self._held) > self.max_frame:
            self._held = b""
            self._bad("oversize")
            self._discarding = True
        return bodies

    cdef _bad(self, str counter):
        self.counters[counter] += 1
        self.counters["resyncs"] += 1
