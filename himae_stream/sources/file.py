"""File source: a recorded packet log, replayed as fast as it is read.

The log format is the raw serial byte stream (COBS frames, 0x00-delimited),
exactly what `SerialSource(record=...)` writes, so garbage and partial
frames in a capture are handled like on the wire; a port read as text lines
or a BITalino's frames is replayed through the same reader (`reader`). A log
has no host clock: packets come with host_time None and chunks carry
device-clock seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from himae_stream.framing import encode_frame
from himae_stream.protocol import Packet, StreamInfo, encode_info, encode_packet
from himae_stream.samplestream import Received
from himae_stream.sources.base import FramedReader, PacketReader, Source, SourceError

BLOCK = 1 << 16


class FileSource(Source):
    """Packets from a frame log file."""

    def __init__(self, path: str | Path, reader: Callable[[dict[str, int]], PacketReader] = FramedReader):
        super().__init__()
        self.path = Path(path)
        self._reader = reader(self.counters)
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[Received]:
        # A FIFO or a device would block the open or never end: a log is a regular file.
        if self.path.exists() and not self.path.is_file():
            raise SourceError(f"cannot read packet log {self.path}: not a regular file")
        try:
            handle = self.path.open("rb")
        except OSError as exc:
            raise SourceError(f"cannot read packet log {self.path}: {exc.strerror}") from exc
        with handle:
            while not self._closed:
                block = handle.read(BLOCK)
                if not block:
                    break
                packets = self._reader.feed(block)
                self.info = self._reader.info
                if packets:
                    yield Received(None, packets)
                await asyncio.sleep(0)  # let other tasks run between blocks

    async def close(self) -> None:
        self._closed = True


def write_log(path: str | Path, packets: list[Packet], info: StreamInfo | None = None) -> None:
    """Write packets (after an optional INFO frame) as a packet log."""
    with Path(path).open("wb") as out:
        out.write(b"\x00")
        if info is not None:
            out.write(encode_frame(encode_info(info)))
        for packet in packets:
            out.write(encode_frame(encode_packet(packet)))
