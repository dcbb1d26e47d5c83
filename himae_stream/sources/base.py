"""The one interface every transport implements: an async iterator of packets.

A source yields `Received(host_time, packets)` in arrival order, keeps its
own counters (frames, crc_errors, resyncs, reconnects, ...) and releases
its transport on `close()`. `SampleStream` turns any source into chunks.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Protocol

import numpy as np

from himae_stream.errors import HimaeError
from himae_stream.framing import FrameDecoder
from himae_stream.protocol import Kind, Packet, ProtocolError, SampleFormat, StreamInfo, body_kind, decode_info, decode_packet
from himae_stream.samplestream import Received


#: Waits between tries to bring a lost transport back: doubling from the first to the last.
REOPEN_BACKOFF_S = (0.05, 1.0)


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
    drops in the counters it was made with, and raises only `SourceError`, for good. A reader whose
    device streams only when told (a BITalino, a Shimmer3) also has `start(port)`, which the serial source calls
    after each open, and `stop(port)`, before it closes the port."""

    info: StreamInfo | None

    def feed(self, data: bytes) -> list[Packet]: ...
class BlockingSource(Source):
    """A source whose library only has blocking calls (pylsl, BrainFlow): each runs in a worker
    thread through `_call`, one at a time, and `_settle` waits for the one in flight, so `close()`
    releases the library's handle only once no call is using it."""

    def __init__(self) -> None:
        super().__init__()
        self._busy: asyncio.Future | None = None

    async def _call(self, function):
        self._busy = asyncio.get_running_loop().run_in_executor(None, function)
        try:
            return await self._busy
        finally:
            self._busy = None

    async def _settle(self) -> None:
        if self._busy is not None:
            await asyncio.gather(self._busy, return_exceptions=True)


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


def indexed_packets(index: np.ndarray, host_s: np.ndarray, values: np.ndarray, fs: float) -> list[Packet]:
    """Samples (channels, n) of physical values, with their increasing stream indices and host times,
    as FLOAT32 packets: a new packet wherever the index jumps, so `SampleStream` counts the hole lost.
    For sources that deliver samples without our packets (LSL, BrainFlow)."""
    cuts = np.flatnonzero(np.diff(index) != 1) + 1
    return [
        Packet.from_physical(int(index[a]), round(host_s[a] * 1e6), fs, values[:, a:b], 1.0, SampleFormat.FLOAT32)
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(index)])
    ]


async def reopen_tries(deadline: float) -> AsyncIterator[None]:
    """One step per try to bring a lost transport back (reopen a port, prepare a board again),
    each after a wait doubling over REOPEN_BACKOFF_S, until the monotonic `deadline`: the caller
    stops at the first try that works, and gives up when the steps run out. A device that resets
    is back within a second or two; the cap keeps one that takes longer from being missed by much."""
    wait = REOPEN_BACKOFF_S[0]
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(wait, left))
        wait = min(2 * wait, REOPEN_BACKOFF_S[1])
        yield


def clock_offset(clock, tries: int = 5) -> float:
    """`time.monotonic() - clock()` (the host clock minus another clock of this machine),
    from the pair of reads closest together."""
    best = None
    for _ in range(tries):
        before = time.monotonic()
        other = clock()
        after = time.monotonic()
        if best is None or after - before < best[0]:
            best = (after - before, (before + after) / 2 - other)
    return best[1]
