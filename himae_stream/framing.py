"""Serial framing: COBS-encoded bodies with a CRC32, delimited by 0x00.

A frame on the wire is COBS(body + CRC32(body) as u32 little-endian) + 0x00.
COBS leaves no zero byte inside a frame, so after any garbage the decoder
resynchronises at the next delimiter. Work is per COBS block (up to 254
bytes), never per byte in Python.
"""

from __future__ import annotations

import zlib

CRC_SIZE = 4
DELIMITER = b"\x00"
#: Longest body accepted by default (a frame grows by 1 byte per 254 and the CRC).
MAX_BODY = 65536


def cobs_encode(data: bytes) -> bytes:
    """Consistent-overhead byte stuffing: the result holds no zero byte."""
    out = bytearray()
    for piece in data.split(b"\x00"):
        while len(piece) >= 254:
            out.append(0xFF)
            out += piece[:254]
            piece = piece[254:]
        out.append(len(piece) + 1)
        out += piece
    return bytes(out)


def cobs_decode(data: bytes) -> bytes | None:
    """Inverse of cobs_encode; None when `data` is not a valid encoding."""
    if b"\x00" in data:
        return None
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        end = i + code
        if code == 0 or end > n:
            return None
        out += data[i + 1 : end]
        if code != 0xFF and end < n:
            out.append(0)
        i = end
    return bytes(out)


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
        self.counters["bytes"] += len(data)
        self._buffer += data
        *segments, rest = self._buffer.split(DELIMITER)
        self._buffer = bytearray(rest)
        bodies = []
        for segment in segments:
            if self._discarding:
                self._discarding = False
                continue
            if segment:
                body = self._check(bytes(segment))
                if body is not None:
                    bodies.append(body)
        if len(self._buffer) > self.max_frame:
            self._buffer.clear()
            if not self._discarding:
                self.counters["oversize"] += 1
                self.counters["resyncs"] += 1
            self._discarding = True
        return bodies

    def _check(self, segment: bytes) -> bytes | None:
        if len(segment) > self.max_frame:
            self._bad("oversize")
            return None
        decoded = cobs_decode(segment)
        if decoded is None or len(decoded) <= CRC_SIZE:
            self._bad("decode_errors")
            return None
        body, crc = decoded[:-CRC_SIZE], decoded[-CRC_SIZE:]
        if zlib.crc32(body).to_bytes(CRC_SIZE, "little") != crc:
            self._bad("crc_errors")
            return None
        self.counters["frames"] += 1
        return body

    def _bad(self, counter: str) -> None:
        self.counters[counter] += 1
        self.counters["resyncs"] += 1
