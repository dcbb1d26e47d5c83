"""Serial source: COBS frames from anything `serial.serial_for_url` opens.

Real ttys, pseudo-terminals, `loop://` and `socket://host:port` all work.
A tty or pseudo-terminal is read by the event loop itself when its descriptor
becomes readable (no thread hand-over between the bytes arriving and the
pipeline seeing them); other ports are read in a worker thread with a short
timeout, so the event loop never blocks and `close()` takes effect within one
read timeout. A port silent for `idle_timeout_s` is an error rather than a hang.
"""

from __future__ import annotations

import asyncio
import os
import select
import time
from collections.abc import AsyncIterator
from pathlib import Path

import serial

from himae_stream.samplestream import Received
from himae_stream.sources.base import FramedReader, Source, SourceError

READ_SIZE = 1 << 16


def _hung_up(fd: int) -> bool:
    """Whether the other end of a tty closed (an empty read alone can also be a stale wake-up)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return any(events & (select.POLLHUP | select.POLLERR) for _, events in poller.poll(0))


class SerialSource(Source):
    """Packets from a serial port; optionally records the raw bytes to `record` (a FileSource log)."""

    def __init__(
        self,
        url: str,
        baudrate: int = 115200,
        *,
        read_timeout_s: float = 0.05,
        idle_timeout_s: float | None = 5.0,
        record: str | Path | None = None,
    ):
        super().__init__()
        self.url = url
        self.baudrate = baudrate
        self.read_timeout_s = read_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.record = Path(record) if record else None
        self._reader = FramedReader(self.counters)
        self._port: serial.SerialBase | None = None
        self._closed = False

    async def open(self) -> None:
        """Open the port now (iteration opens it otherwise); bytes that arrived before are discarded."""
        if self._port is None:
            self._port = await asyncio.get_running_loop().run_in_executor(None, self._open)

    def _open(self) -> serial.SerialBase:
        try:
            return serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=self.read_timeout_s)
        except (serial.SerialException, ValueError) as exc:
            raise SourceError(f"cannot open serial port {self.url!r}: {exc}") from exc

    def _read(self) -> tuple[bytes, float]:
        """Bytes as they arrive (blocking up to the read timeout when none are waiting), stamped
        when the read returns, so any hand-over to the event loop counts in end-to-end latency."""
        port = self._port
        if port is None or self._closed:
            return b"", time.monotonic()
        try:
            data = port.read(min(READ_SIZE, max(1, port.in_waiting)))
            return data, time.monotonic()
        except (serial.SerialException, OSError, TypeError) as exc:
            if self._closed:
                return b"", time.monotonic()
            raise SourceError(f"serial port {self.url!r} failed: {exc}") from exc

    async def _reads_in_thread(self) -> AsyncIterator[tuple[bytes, float]]:
        loop = asyncio.get_running_loop()
        while not self._closed:
            yield await loop.run_in_executor(None, self._read)

    async def _reads_when_ready(self, fd: int) -> AsyncIterator[tuple[bytes, float]]:
        """Read as soon as the loop sees `fd` readable; (b"", now) after each quiet read timeout."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future | None = None

        def wake(readable: bool) -> None:
            if waiter is not None and not waiter.done():
                waiter.set_result(readable)

        loop.add_reader(fd, wake, True)
        try:
            while not self._closed and self._port is not None:
                waiter = loop.create_future()
                quiet = loop.call_later(self.read_timeout_s, wake, False)
                readable = await waiter
                quiet.cancel()
                yield self._read_fd(fd) if readable else (b"", time.monotonic())
        finally:
            loop.remove_reader(fd)

    def _read_fd(self, fd: int) -> tuple[bytes, float]:
        """What a readable (non-blocking) descriptor holds, in one system call."""
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return b"", time.monotonic()
        except OSError as exc:
            if self._closed:
                return b"", time.monotonic()
            raise SourceError(f"serial port {self.url!r} failed: {exc.strerror or exc}") from exc
        if not data and not self._closed and _hung_up(fd):  # not just a stale readiness event
            raise SourceError(f"serial port {self.url!r} failed: the device hung up")
        return data, time.monotonic()

    async def __aiter__(self) -> AsyncIterator[Received]:
        await self.open()
        log = self.record.open("ab") if self.record else None
        last_data = time.monotonic()
        posix = getattr(serial, "serialposix", None)  # ttys and ptys on POSIX systems
        ready = posix is not None and isinstance(self._port, posix.Serial)
        reads = self._reads_when_ready(self._port.fileno()) if ready else self._reads_in_thread()
        try:
            async for data, now in reads:
                if not data:
                    if self.idle_timeout_s is not None and now - last_data > self.idle_timeout_s:
                        raise SourceError(f"no data from {self.url!r} for {self.idle_timeout_s:g} s")
                    continue
                last_data = now
                if log:
                    log.write(data)
                packets = self._reader.feed(data)
                self.info = self._reader.info
                if packets:
                    yield Received(now, packets)
        finally:
            await reads.aclose()
            if log:
                log.close()

    async def close(self) -> None:
        self._closed = True
        if self._port is not None:
            port, self._port = self._port, None
            await asyncio.get_running_loop().run_in_executor(None, port.close)
