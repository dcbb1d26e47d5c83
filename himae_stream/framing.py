"""Serial framing: COBS-encoded bodies with a CRC32, delimited by 0x00.

A frame on the wire is COBS(body + CRC32(body) as u32 little-endian) + 0x00.
COBS leaves no zero byte inside a frame, so after any garbage the decoder
resynchronises at the next delimiter. COBS runs in compiled (numba) loops,
never per byte in Python.
"""

from __future__ import annotations

import zlib

import numba
import numpy as np

CRC_SIZE = 4
DELIMITER = b"\x00"
#: Longest body accepted by default (a frame grows by 1 byte per 254 and the CRC).
MAX_BODY = 65536


def cobs_encode(data: bytes) -> bytes:
    """Consistent-overhead byte stuffing: the result holds no zero byte."""
    src = np.frombuffer(data, np.uint8)
    out = np.empty(src.size + src.size // 254 + 2, np.uint8)
    return out[: _cobs_encode(src, out)].tobytes()


def cobs_decode(data: bytes) -> bytes | None:
    """Inverse of cobs_encode; None when `data` is not a valid encoding."""
    src = np.frombuffer(data, np.uint8)
    out = np.empty(src.size, np.uint8)
    size = _cobs_decode(src, out)
    return None if size < 0 else out[:size].tobytes()


# Kernels are compiled (or loaded from the cache) at import, with explicit
# types, so the first frame of a live stream is not delayed by compilation.
_BYTES_IN = numba.types.Array(numba.uint8, 1, "C", readonly=True)
_BYTES_OUT = numba.uint8[::1]


@numba.njit(numba.int64(_BYTES_IN, _BYTES_OUT), cache=True, nogil=True)
def _cobs_encode(src: np.ndarray, out: np.ndarray) -> int:
    code_at, o, code = 0, 1, 1
    for b in src:
        if b == 0:
            out[code_at] = code
            code_at, o, code = o, o + 1, 1
        else:
            out[o] = b
            o += 1
            code += 1
            if code == 0xFF:  # a full block of 254 non-zero bytes, no zero implied
                out[code_at] = code
                code_at, o, code = o, o + 1, 1
    out[code_at] = code
    return o


@numba.njit(numba.int64(_BYTES_IN, _BYTES_OUT), cache=True, nogil=True)
def _cobs_decode(src: np.ndarray, out: np.ndarray) -> int:
    """Decoded length, or -1 when `src` is not valid COBS."""
    n, i, o = src.size, 0, 0
    while i < n:
        code = np.int64(src[i])
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


_INVALID = -1
_OVERSIZE = -2


@numba.njit(
    numba.types.UniTuple(numba.int64, 2)(_BYTES_IN, _BYTES_OUT, numba.int64[:, ::1], numba.int64),
    cache=True, nogil=True,
)
def _deframe(buf: np.ndarray, out: np.ndarray, bounds: np.ndarray, max_frame: int) -> tuple[int, int]:
    """COBS-decode every complete non-empty segment of `buf` into `out`.

    bounds[k] = (start, end) of segment k in `out`, or (_INVALID or _OVERSIZE, 0).
    Returns the segment count and the bytes consumed (up to the last delimiter).
    """
    count, o, begin = 0, 0, 0
    for p in range(buf.size):
        if buf[p] != 0:
            continue
        if p > begin:
            if p - begin > max_frame:
                bounds[count, 0], bounds[count, 1] = _OVERSIZE, 0
            else:
                size = _cobs_decode(buf[begin:p], out[o:])
                if size < 0:
                    bounds[count, 0], bounds[count, 1] = _INVALID, 0
                else:
                    bounds[count, 0], bounds[count, 1] = o, o + size
                    o += size
            count += 1
        begin = p + 1
    return count, begin


def encode_frame(body: bytes) -> bytes:
    """One serial frame carrying `body`: COBS(body + CRC32) + 0x00."""
    body = bytes(body)
    return cobs_encode(body + zlib.crc32(body).to_bytes(CRC_SIZE, "little")) + DELIMITER


class FrameDecoder:
    """Incremental frame decoder: feed it bytes, get back valid bodies.

    Never raises. Bad frames are skipped and counted: `crc_errors` (CRC
    mismatch), `decode_errors` (invalid COBS or too short), `oversize`
    (no delimiter within the size limit); `resyncs` counts every run of
    discarded bytes, `frames` the good ones. Memory stays bounded by the
    size limit.
    """

    def __init__(self, max_body: int = MAX_BODY):
        self.max_frame = max_body + CRC_SIZE + max_body // 254 + 2
        self.counters = {
            "frames": 0, "crc_errors": 0, "decode_errors": 0, "oversize": 0,
            "resyncs": 0, "bytes": 0,
        }
        self._buffer = bytearray()
        self._discarding = False  # inside an oversize run, skip to the next delimiter

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Bodies of every complete valid frame in the bytes seen so far."""
        data = bytes(data)
        self.counters["bytes"] += len(data)
        if self._discarding:  # skip the rest of an oversize run
            cut = data.find(DELIMITER)
            if cut < 0:
                return []
            data, self._discarding = data[cut + 1 :], False
        buffer = bytes(self._buffer) + data
        out = np.empty(len(buffer), np.uint8)
        bounds = np.empty((len(buffer) // 2 + 1, 2), np.int64)
        count, consumed = _deframe(np.frombuffer(buffer, np.uint8), out, bounds, self.max_frame)
        self._buffer = bytearray(buffer[consumed:])
        decoded = out.tobytes()
        bodies = []
        for start, end in bounds[:count].tolist():
            if start == _OVERSIZE:
                self._bad("oversize")
            elif start == _INVALID or end - start <= CRC_SIZE:
                self._bad("decode_errors")
            elif zlib.crc32(decoded[start : end - CRC_SIZE]) != int.from_bytes(decoded[end - CRC_SIZE : end], "little"):
                self._bad("crc_errors")
            else:
                self.counters["frames"] += 1
                bodies.append(decoded[start : end - CRC_SIZE])
        if len(self._buffer) > self.max_frame:
            self._buffer.clear()
            self._bad("oversize")
            self._discarding = True
        return bodies

    def _bad(self, counter: str) -> None:
        self.counters[counter] += 1
        self.counters["resyncs"] += 1
