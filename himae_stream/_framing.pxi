# Included from _core.pyx: the serial framing's byte loops (himae_stream.framing is
# the public face and documents the format): COBS both ways, and FrameDecoder,
# which scans what a read brought for delimiters and checks each frame's COBS
# and CRC32 (the C core's, the same CRC-32 as zlib's) in one typed pass.

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t
from libc.string cimport memchr

cdef extern from "himae.h":
    uint32_t himae_crc32(uint32_t crc, const uint8_t *data, size_t n)

cdef enum:
    FRAME_CRC = 4  # bytes of the CRC32 after each body

CRC_SIZE = FRAME_CRC
#: Longest body a FrameDecoder accepts by default.
MAX_BODY = 65536

cdef inline uint32_t _u32le(const uint8_t *b) noexcept nogil:
    return b[0] | (<uint32_t>b[1] << 8) | (<uint32_t>b[2] << 16) | (<uint32_t>b[3] << 24)


cdef const uint8_t *_bytes_at(const uint8_t[::1] view):
    return &view[0] if view.shape[0] else NULL


cdef Py_ssize_t _cobs_encode(const uint8_t *src, Py_ssize_t n, uint8_t *out) noexcept nogil:
    """out gets COBS(src) (at most n + n / 254 + 1 bytes); returns its length."""
    cdef Py_ssize_t code_at = 0, o = 1, i
    cdef uint8_t code = 1
    for i in range(n):
        if src[i] == 0:
            out[code_at] = code
            code_at, o, code = o, o + 1, 1
        else:
            out[o] = src[i]
            o += 1
            code += 1
            if code == 0xFF:  # a full block of 254 non-zero bytes, no zero implied
                out[code_at] = code
                code_at, o, code = o, o + 1, 1
    out[code_at] = code
    return o


cdef Py_ssize_t _cobs_decode(const uint8_t *src, Py_ssize_t n, uint8_t *out) noexcept nogil:
    """out gets the decoding of src (at most n bytes); returns its length, or -1 if src is not COBS."""
    cdef Py_ssize_t i = 0, o = 0, end, j
    cdef Py_ssize_t code
    while i < n:
        code = src[i]
        end = i + code
        if code == 0 or end > n:
            return -1
        for j in range(i + 1, end):
            if src[j] == 0:
                return -1
            out[o] = src[j]
            o += 1
        if code != 0xFF and end < n:
            out[o] = 0
            o += 1
        i = end
    return o


def cobs_encode(const uint8_t[::1] data) -> bytes:
    """Consistent-overhead byte stuffing: the result holds no zero byte."""
    cdef Py_ssize_t n = data.shape[0]
    cdef bytearray out = bytearray(n + n // 254 + 2)
    cdef Py_ssize_t size = _cobs_encode(_bytes_at(data), n, <uint8_t *><char *>out)
    return PyBytes_FromStringAndSize(<char *>out, size)


def cobs_decode(const uint8_t[::1] data):
    """Inverse of cobs_encode; None when `data` is not a valid encoding."""
    cdef Py_ssize_t n = data.shape[0]
    cdef bytearray out = bytearray(n + 1)
    cdef Py_ssize_t size = _cobs_decode(_bytes_at(data), n, <uint8_t *><char *>out)
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
        self.max_frame = max_body + FRAME_CRC + max_body // 254 + 2
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
        cdef Py_ssize_t n = len(buf), begin = 0, end, size
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
                    size = _cobs_decode(p + begin, end - begin, out)
                    if size <= FRAME_CRC:  # not COBS, or no body before the CRC
                        self._bad("decode_errors")
                    elif himae_crc32(0, out, size - FRAME_CRC) != _u32le(out + size - FRAME_CRC):
                        self._bad("crc_errors")
                    else:
                        self.counters["frames"] += 1
                        bodies.append(PyBytes_FromStringAndSize(<char *>out, size - FRAME_CRC))
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
