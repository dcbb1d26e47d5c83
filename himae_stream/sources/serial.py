"""Serial source: packets from anything `serial.serial_for_url` opens.

The bytes become packets through a reader: COBS frames (`FramedReader`, the
default), text lines (`TextLineReader`, for boards that print numbers), or a
BITalino's frames or a Shimmer3's packets (`BitalinoReader`, `ShimmerReader`,
which also start the sensor after each open and stop it before the close);
everything about the port below is the same for all.

Real ttys, pseudo-terminals, `loop://` and `socket://host:port` all work.
A tty or pseudo-terminal is read by the event loop itself when its descriptor
becomes readable (no thread hand-over between the bytes arriving and the
pipeline seeing them); other ports are read in a worker thread with a short
timeout, so the event loop never blocks and `close()` takes effect within one
read timeout. A port silent for `idle_timeout_s` is an error rather than a hang.

A port that fails (the device hung up, a USB adapter was unplugged) is
reopened under the same name, as a USB-serial wearable that resets or is
plugged back in comes back, with backoff, for up to `reconnect_timeout_s`;
each time data flows again counts one `reconnects`. The frame cut by the
failure is counted like any broken frame, and the samples missed meanwhile
show as a gap in the stream, never bridged.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import select
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import serial

from himae_stream.samplestream import Received
from himae_stream.sources.base import FramedReader, PacketReader, Source, SourceError, reopen_tries

READ_SIZE = 1 << 16


#: what to do about the usual reasons a port does not open
OPEN_HINTS = {
    errno.ENOENT: "is the device plugged in? (`ls /dev/tty*` lists the ports)",
    errno.EACCES: "on Linux, join the group that owns the port (`ls -l` shows it, usually dialout: "
                  "`sudo usermod -aG dialout $USER`, then log in again)",
    errno.EBUSY: "another program has it open (a serial monitor?)",
}


def open_failure(url: str, exc: Exception) -> str:
    """One line for a port that would not open: the system's reason once (pyserial nests it twice)
    and, for the usual reasons, what to do."""
    code = getattr(exc, "errno", None)
    if not code:
        return f"cannot open serial port {url}: {exc}"
    hint = OPEN_HINTS.get(code)
    if code == errno.ENOENT and "rfcomm" in url:  # a Bluetooth classic port exists once bound
        hint = "a paired Bluetooth device gets this port once bound: `sudo rfcomm bind 0 AA:BB:CC:DD:EE:FF`"
    return f"cannot open serial port {url}: {os.strerror(code)}" + (f"; {hint}" if hint else "")


#: longest answer to a command read
ANSWER_BYTES = 256


def read_answer(port: serial.SerialBase, within_s: float, done: Callable[[bytes], bool]) -> bytes:
    """What a device that answers commands (a BITalino, a Shimmer) sends within `within_s` seconds, ending
    early once `done(what came)`; at most ANSWER_BYTES. Blocking: for a reader's `start(port)`."""
    got = bytearray()
    deadline = time.monotonic() + within_s
    while len(got) < ANSWER_BYTES and time.monotonic() < deadline and not done(bytes(got)):
        got += port.read(min(ANSWER_BYTES - len(got), max(1, port.in_waiting)))
    return bytes(got)


def drain(port: serial.SerialBase, quiet_s: float = 0.1, within_s: float = 2.0) -> int:
    """Read and drop what the device still sends, until it is quiet for `quiet_s` (at most `within_s`);
    returns the bytes dropped."""
    deadline = time.monotonic() + within_s
    quiet_since, dropped = time.monotonic(), 0
    while time.monotonic() < deadline and time.monotonic() - quiet_since < quiet_s:
        if data := port.read(max(1, port.in_waiting)):
            quiet_since, dropped = time.monotonic(), dropped + len(data)
    return dropped


class PortLost(SourceError):
    """The port itself failed (not just silence): worth reopening."""


def _hung_up(fd: int) -> bool:
    """Whether the other end of a tty closed (an empty read alone can also be a stale wake-up)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return any(events & (select.POLLHUP | select.POLLERR) for _, events in poller.poll(0))


class SerialSource(Source):
    """Packets from a serial port; optionally records the raw bytes to `record` (a FileSource log
    of framed bytes, or the text itself). `reader` makes the byte->packet step from the counters."""

    def __init__(
        self,
        url: str,
        baudrate: int = 115200,
        *,
        read_timeout_s: float = 0.05,
        idle_timeout_s: float | None = 5.0,
        reconnect_timeout_s: float | None = 10.0,
        record: str | Path | None = None,
        reader: Callable[[dict[str, int]], PacketReader] = FramedReader,
    ):
        super().__init__()
        self.url = url
        self.baudrate = baudrate
        self.read_timeout_s = read_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.reconnect_timeout_s = reconnect_timeout_s  # None or 0: a lost port is an error at once
        self.record = Path(record) if record else None
        self._reader = reader(self.counters)
        self.counters["reconnects"] = 0
        self._port: serial.SerialBase | None = None
        self._closed = False
        self._lost_since: float | None = None  # monotonic time the port was lost, until data flows again

    async def open(self) -> None:
        """Open the port now (iteration opens it otherwise); bytes that arrived before are discarded."""
        if self._port is None:
            self._port = await asyncio.get_running_loop().run_in_executor(None, self._open)

    def _open(self) -> serial.SerialBase:
        try:
            port = serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=self.read_timeout_s)
        except (serial.SerialException, ValueError) as exc:
            raise SourceError(open_failure(self.url, exc)) from exc
        start = getattr(self._reader, "start", None)
        if start is not None:  # a device that streams only when told (a BITalino, a Shimmer3)
            try:
                start(port)
            except (serial.SerialException, OSError) as exc:
                port.close()
                raise SourceError(f"serial port {self.url!r} failed while starting the device: {exc}") from exc
            except BaseException:
                port.close()
                raise
        return port

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
            raise PortLost(f"serial port {self.url!r} failed: {exc}") from exc

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
            raise PortLost(f"serial port {self.url!r} failed: {exc.strerror or exc}") from exc
        if not data and not self._closed and _hung_up(fd):  # not just a stale readiness event
            raise PortLost(f"serial port {self.url!r} failed: the device hung up")
        return data, time.monotonic()

    async def __aiter__(self) -> AsyncIterator[Received]:
        await self.open()
        log = self.record.open("ab") if self.record else None
        try:
            while True:
                try:
                    async for received in self._received(log):
                        yield received
                    return
                except PortLost as lost:
                    await self._reopen(lost)
                    if self._closed:
                        return
        finally:
            if log:
                log.close()

    async def _received(self, log) -> AsyncIterator[Received]:
        """Packets from the port as it is open now; PortLost when it fails."""
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
                if self._lost_since is not None:  # data flows again after a reopen
                    self._lost_since = None
                    self.counters["reconnects"] += 1
                if log:
                    log.write(data)
                packets = self._reader.feed(data)
                self.info = self._reader.info
                # every read that brought bytes is an arrival, with or without a whole packet in it
                # (a partial frame, an INFO frame, garbage): whoever waits on the source sees it move
                yield Received(now, packets)
        finally:
            await reads.aclose()

    async def _reopen(self, lost: PortLost) -> None:
        """Reopen the port under its name with backoff, or raise `lost` once reconnect_timeout_s has
        passed since it was lost without data flowing again."""
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        if self._lost_since is None:
            self._lost_since = now
        if not self.reconnect_timeout_s:
            raise lost
        port, self._port = self._port, None
        if port is not None:
            with contextlib.suppress(OSError, serial.SerialException):  # it is gone already
                await loop.run_in_executor(None, port.close)
        async for _ in reopen_tries(self._lost_since + self.reconnect_timeout_s):
            if self._closed:
                return
            try:
                port = await loop.run_in_executor(None, self._open)
            except SourceError:
                continue
            if self._closed:  # closed while it was opening
                await loop.run_in_executor(None, port.close)
            else:
                self._port = port
            return
        if not self._closed:
            raise SourceError(f"{lost}; it did not come back within {self.reconnect_timeout_s:g} s") from lost

    async def close(self) -> None:
        self._closed = True
        if self._port is not None:
            port, self._port = self._port, None
            await asyncio.get_running_loop().run_in_executor(None, self._close_port, port)

    def _close_port(self, port: serial.SerialBase) -> None:
        """Close `port`, first telling a device that streams only when told (a BITalino, a Shimmer3) to stop."""
        stop = getattr(self._reader, "stop", None)
        if stop is not None:
            with contextlib.suppress(OSError, serial.SerialException):  # it may be gone already
                stop(port)
        port.close()
