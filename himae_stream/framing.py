"""Serial framing: COBS-encoded bodies with a CRC32, delimited by 0x00.

A frame on the wire is COBS(body + CRC32(body) as u32 little-endian) + 0x00.
COBS leaves no zero byte inside a frame, so after any garbage the decoder
resynchronises at the next delimiter. COBS, the delimiter scan and the CRC
check of `FrameDecoder` are compiled loops of the C core's binding
(himae_stream/_framing.pxi), never per byte in Python: a live read of one
small frame costs one call, and nothing is compiled at import.
"""

from __future__ import annotations

import zlib

from himae_stream._core import CRC_SIZE, MAX_BODY, FrameDecoder, cobs_decode, cobs_encode

__all__ = ["CRC_SIZE", "DELIMITER", "MAX_BODY", "FrameDecoder", "cobs_decode", "cobs_encode", "encode_frame"]

DELIMITER = b"\x00"


def encode_frame(body: bytes) -> bytes:
    """One serial frame carrying `body`: COBS(body + CRC32) + 0x00."""
    body = bytes(body)
    return cobs_encode(body + zlib.crc32(body).to_bytes(CRC_SIZE, "little")) + DELIMITER
