"""A Shimmer3 streaming live: the commands that start it and its data packets to packets.

`serial:///dev/rfcomm0?format=shimmer` reads a Shimmer3 (its protocol:
`himae_stream/shimmer.py`) through `SerialSource`, which calls
`ShimmerReader.start` after opening the port (and after every reopen) and
`stop` before closing it. The sensor streams the channels it was configured
with (Shimmer's own software sets them); `?fs=` sets its rate first.

Packets have a start byte (0x00) that their data can also hold, so the
reader takes packet boundaries where `LOCK` packets in a row start with it
and their timestamps step by whole sampling periods; a packet that breaks
that (bytes lost or changed) makes it look again, skipping acknowledgements
and in-stream answers, which are not data. Each packet's index comes from its
timestamp, so packets a link lost arrive as lost samples in place, as do the
samples between a stop and the next start (the sampling clock runs on); a
long gap is held to the host clock (a sensor that restarted, its clock with
it; a gap past the clock's 512-s wrap).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from himae_stream import shimmer
from himae_stream.protocol import SEQ_MODULUS, Packet, SampleFormat, StreamInfo
from himae_stream.sources.base import SourceError
from himae_stream.sources.serial import drain, read_answer

#: packets in a row that must look right before their boundaries are taken
LOCK = 3
#: how far (clock ticks) a timestamp may be from a whole number of sampling periods on
TICK_SLACK = 2
#: sampling periods apart that packets found anew must be (data bytes that look like packets
#: rarely are this close: 1 in 200,000 per pair at a divider of 256)
NEAR = 16
#: how much longer than the host clock's time since the last packet a gap in the timestamps may be
#: (packets wait in the sensor's and the link's buffers) before the sensor's clock is taken to have restarted
HOST_SLACK_S = 1.0
#: how long the sensor has to answer a command
ANSWER_S = 2.0
COUNTERS = ("bytes", "frames", "damaged", "resyncs", "skipped_bytes", "answers")


class ShimmerReader:
    """Bytes of a Shimmer3's stream to packets of its channels' raw values.

    `fs` is the rate to set before starting (None: as the sensor is set). The
    sensor's timestamps place every packet; `clock`, the host's, bounds a gap they
    show (a sensor whose clock restarted shows up to 512 s) and counts the turns of
    theirs in one longer than 512 s.
    """

    def __init__(self, counters: dict[str, int], fs: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.counters = counters
        self.counters.update(dict.fromkeys(COUNTERS, 0))
        try:
            self.divider = None if fs is None else shimmer.divider_for(fs)
        except ValueError as exc:
            raise SourceError(str(exc)) from None
        self.inquiry: shimmer.Inquiry | None = None
        self.info: StreamInfo | None = None
        self._info: StreamInfo | None = None
        self._buffer = bytearray()
        self._locked = False
        self._index = -1  # stream index of the last packet delivered
        self._stamp = 0  # its timestamp
        self._clock = clock
        self._now = 0.0  # host time of the read being taken apart
        self._last_read: float | None = None  # host time of the read that brought the last packet

    # ------------------------------------------------------------ commands
    def start(self, port) -> None:
        """Stop the sensor if it streams, set its rate if asked, ask what it streams, start it: in the port's
        thread."""
        port.reset_input_buffer()
        port.write(bytes([shimmer.STOP]))
        self.counters["bytes"] += drain(port)  # its acknowledgement, and what a streaming sensor still sent
        version = self._ask(port, bytes([shimmer.VERSION]), 8, 0.5)
        if self.divider is not None:
            self._ask(port, bytes([shimmer.SET_RATE]) + self.divider.to_bytes(2, "little"), 1, ANSWER_S)
        port.write(bytes([shimmer.INQUIRY]))
        answer = read_answer(port, ANSWER_S, _inquiry_in)
        self.counters["bytes"] += len(answer)
        found = _inquiry_in(answer)
        if not found:
            said = f" (it sent {answer[:40].hex(' ')})" if answer else ""
            raise SourceError(f"no Shimmer answered on {port.name}{said}: is it on, paired and not streaming "
                              "to another program?")
        inquiry = found[0]
        if self.inquiry is not None and inquiry.ids != self.inquiry.ids:
            raise SourceError(f"the Shimmer on {port.name} came back streaming other channels")
        self.inquiry = inquiry
        names = tuple(c.name for c in inquiry.channels)
        self._info = StreamInfo(inquiry.fs, names, (1.0,) * len(names), SampleFormat.FLOAT32,
                                device=f"Shimmer3 ({_firmware(version)})")
        port.write(bytes([shimmer.START]))
        self._buffer.clear()
        self._locked = False

    def _ask(self, port, command: bytes, size: int, within_s: float) -> bytes:
        """Send `command`; its answer (acknowledgement first, `size` bytes in all), or what came within `within_s`."""
        port.write(command)
        answer = read_answer(port, within_s, lambda got: len(got) >= size)
        self.counters["bytes"] += len(answer)
        return answer

    @staticmethod
    def stop(port) -> None:
        """Stop streaming, so the sensor is idle for whoever opens it next."""
        port.write(bytes([shimmer.STOP]))
        port.flush()

    # ------------------------------------------------------------ bytes to packets
    def feed(self, data: bytes) -> list[Packet]:
        self.counters["bytes"] += len(data)
        if self.inquiry is None:
            raise SourceError("Shimmer data before its inquiry answer: the reader was not started")
        self._buffer += data
        self._now = self._clock()
        size, good = self.inquiry.packet_size, []
        while (self._locked or self._lock(size)) and not self._take(size, good):
            pass  # the boundaries were lost: search again
        return self._packets(good)

    def _take(self, size: int, good: list[tuple[int, bytes]]) -> bool:
        """Take what stands at the buffer's start while it looks right: packets into `good` (with their
        index), answers skipped. True when more bytes are needed, False when the boundaries were lost."""
        at = 0
        try:
            while at < len(self._buffer):
                what, length = self._what(at, size)
                if what == "more":
                    return True
                if what == "lost":
                    self._locked = False
                    self.counters["skipped_bytes"] += 1
                    at += 1
                    return False
                if what == "damaged":  # changed on the way, the next packet where it should be: only it is lost
                    self.counters["damaged"] += 1
                    self.counters["skipped_bytes"] += size
                elif what == "answer":
                    self.counters["answers"] += 1
                else:
                    self._stamp, self._index, self._last_read = self._stamp_at(at), self._index + what, self._now
                    good.append((self._index, bytes(self._buffer[at:at + size])))
                at += length
            return True
        finally:
            del self._buffer[:at]

    def _what(self, at: int, size: int) -> tuple[str | int, int]:
        """What starts at buffer[at], and its length: a packet (the sampling periods since the last one),
        an "answer", a "damaged" packet, "lost" boundaries, or "more" bytes needed to tell."""
        buffer, left = self._buffer, len(self._buffer) - at
        kind = buffer[at]
        if kind == shimmer.ACK:
            return "answer", 1
        if kind == shimmer.IN_STREAM and (left < 2 or buffer[at + 1] in shimmer.IN_STREAM_SIZES):
            length = 2 + shimmer.IN_STREAM_SIZES[buffer[at + 1]] if left >= 2 else 2
            return ("answer", length) if left >= length else ("more", 0)
        if kind == shimmer.DATA:
            if left < size:
                return "more", 0
            steps = self._steps(self._stamp_at(at))
            if steps is None or steps <= NEAR:
                return (steps, size) if steps is not None else ("lost", 1)
            # a stall, or bytes that only look like a packet: the next packet must go on from it
            if left < 2 * size:
                return "more", 0
            follows = buffer[at + size] == shimmer.DATA and _near(self._stamp_at(at + size) - self._stamp_at(at),
                                                                  self.inquiry.divider)
            return (self._bounded(steps), size) if follows else ("lost", 1)
        if left < 2 * size:  # is the next packet where it should be? wait and see
            return "more", 0
        if buffer[at + size] == shimmer.DATA and _near(self._stamp_at(at + size) - self._stamp, self.inquiry.divider):
            return "damaged", size
        return "lost", 1

    def _bounded(self, steps: int) -> int:
        """A long gap the timestamps show, held to the host clock: more periods than have passed on it since
        the last packet came is a sensor whose clock restarted (the host clock's count is taken), fewer by
        half the clock's wrap or more is turns of it (added)."""
        if self._last_read is None:
            return steps
        divider = self.inquiry.divider
        ticks = (self._now - self._last_read) * shimmer.CLOCK_HZ  # on the host clock
        if steps * divider > ticks + HOST_SLACK_S * shimmer.CLOCK_HZ:
            return max(1, round(ticks / divider))
        turns = round((ticks - steps * divider) / shimmer.TIMESTAMP_MODULUS)
        return steps + round(turns * shimmer.TIMESTAMP_MODULUS / divider)

    def _stamp_at(self, at: int) -> int:
        """The timestamp of the packet starting at buffer[at]."""
        return int.from_bytes(self._buffer[at + 1:at + 1 + shimmer.TIMESTAMP_BYTES], "little")

    def _steps(self, stamp: int) -> int | None:
        """Sampling periods from the last packet to one stamped `stamp`; None if it is no whole number of them."""
        if self._index < 0:
            return 1
        ticks = (stamp - self._stamp) % shimmer.TIMESTAMP_MODULUS
        return _whole_periods(ticks, self.inquiry.divider)

    def _lock(self, size: int) -> bool:
        """Find packet boundaries: LOCK packets in a row, each starting with 0x00, stamped whole sampling
        periods apart, at most NEAR (acknowledgements at the start are not counted as skipped). False if none
        yet."""
        buffer, divider = self._buffer, self.inquiry.divider
        while buffer and buffer[0] == shimmer.ACK and not self._locked:
            self.counters["answers"] += 1
            del buffer[:1]
        for at in range(max(0, len(buffer) - LOCK * size + 1)):
            starts = [at + k * size for k in range(LOCK)]
            if any(buffer[s] != shimmer.DATA for s in starts):
                continue
            stamps = [self._stamp_at(s) for s in starts]
            if all(_near(b - a, divider) for a, b in zip(stamps, stamps[1:])):
                self.counters["skipped_bytes"] += at
                del buffer[:at]
                self._locked = True
                self.counters["resyncs"] += self.counters["frames"] > 0
                if self._index >= 0 and self._steps(stamps[0]) is None:
                    # the clock does not continue from the last packet (the sensor restarted): next index
                    self._stamp = (stamps[0] - divider) % shimmer.TIMESTAMP_MODULUS
                return True
        keep = LOCK * size - 1
        self.counters["skipped_bytes"] += max(0, len(buffer) - keep)
        del buffer[:max(0, len(buffer) - keep)]
        return False

    # ------------------------------------------------------------ packets out
    def _packets(self, good: list[tuple[int, bytes]]) -> list[Packet]:
        if not good:
            return []
        self.info = self._info
        index = np.array([i for i, _ in good])
        rows = np.frombuffer(b"".join(packet for _, packet in good), np.uint8).reshape(len(good), -1)
        _, values = shimmer.decode(rows, self.inquiry)
        self.counters["frames"] += len(good)
        cuts = np.flatnonzero(np.diff(index) != 1) + 1
        fs = self.inquiry.fs
        return [
            Packet(int(index[a]) % SEQ_MODULUS, round(index[a] * 1e6 / fs), fs,
                   values[:, a:b].astype(np.float32), self._info.scale, SampleFormat.FLOAT32)
            for a, b in zip(np.r_[0, cuts], np.r_[cuts, index.size])
        ]


def _near(ticks: int, divider: int) -> bool:
    """Whether `ticks` of the clock (modulo its wrap) are 1 to NEAR whole sampling periods."""
    return (_whole_periods(ticks % shimmer.TIMESTAMP_MODULUS, divider) or NEAR + 1) <= NEAR


def _whole_periods(ticks: int, divider: int) -> int | None:
    """How many sampling periods `ticks` of the clock are (at least 1), or None if not a whole number of them."""
    steps = round(ticks / divider)
    return steps if steps >= 1 and abs(ticks - steps * divider) <= TICK_SLACK else None


def _inquiry_in(answer: bytes) -> tuple[shimmer.Inquiry, int] | None:
    """The inquiry answer within what the sensor sent, once whole."""
    at = answer.find(bytes([shimmer.ACK, shimmer.INQUIRY_RESPONSE]))
    if at < 0:
        return None
    try:
        return shimmer.Inquiry.parse(answer[at:])
    except shimmer.ShimmerProtocolError as exc:
        raise SourceError(str(exc)) from None


def _firmware(answer: bytes) -> str:
    """The firmware a version answer names ("LogAndStream 0.16.0"), or "firmware unknown"."""
    at = answer.find(bytes([shimmer.ACK, shimmer.VERSION_RESPONSE]))
    if at < 0 or len(answer) < at + 8:
        return "firmware unknown"
    kind, major = int.from_bytes(answer[at + 2:at + 4], "little"), int.from_bytes(answer[at + 4:at + 6], "little")
    name = {1: "BtStream", 2: "SDLog", 3: "LogAndStream"}.get(kind, f"firmware type {kind}")
    return f"{name} {major}.{answer[at + 6]}.{answer[at + 7]}"
