"""The one interface every transport implements: an async iterator of packets.

A source yields `Received(host_time, packets)` in arrival order, keeps its
own counters (frames, crc_errors, resyncs, reconnects, ...) and releases
its transport on `close()`. `SampleStream` turns any source into chunks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Protocol

from himae_stream.errors import HimaeError
from himae_stream.framing import FrameDecoder
from himae_stream.protocol import Kind, Packet, ProtocolError, StreamInfo, body_kind, decode_info, decode_packet
from himae_stream.samplestream import Received


class SourceError(HimaeError):
    """A transport failed for good (device not found, reconnect limit, silence)."""


class Source(ABC):
    """Async iterator of `Received` packets with counters and `close()`."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}
        self.info: StreamInfo | None = None

    @abstractmethod
    def __aiter__(self) -> AsyncIterator[Received]: ...

    @abstractmethod
    async def close(self) -> None:
        """Release the transport; safe to call more than once."""

    async def __aenter__(self) -> Source:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class PacketReader(Protocol):
    """The byte->packet step of a byte-stream source: `feed` takes bytes as they arrive (any split)
    and returns the packets they complete; `info` describes the stream once known. Counts what it
    drops in the counters it was made with, and raises only `SourceError`, for good."""

    info: StreamInfo | None

    def feed(self, data: bytes) -> list[Packet]: ...


class FramedReader:
    """Bytes of a serial frame stream to packets: frames, then bodies.

    INFO bodies update `info`; malformed bodies are counted (`malformed`),
    never raised. Shared by the serial and file sources.
    """

    def __init__(self, counters: dict[str, int]):
        self.decoder = FrameDecoder()
        self.counters = counters
        self.counters.update(self.decoder.counters, malformed=0)
        self.info: StreamInfo | None = None

    def feed(self, data: bytes) -> list[Packet]:
        packets = []
        for body in self.decoder.feed(data):
            try:
                if body_kind(body) == Kind.INFO:
                    self.info = decode_info(body)
                else:
                    packets.append(decode_packet(body))
            except ProtocolError:
                self.counters["malformed"] += 1
        self.counters.update(self.decoder.counters)
        return packets
