"""From packets to timestamped, gap-marked sample chunks.

`SampleStream` puts packets back in stream order within a bounded window,
drops duplicates, turns every missing stream index into a zero sample with
its lost-mask bit set, and maps the device clock to the host clock with a
robust drift estimate. Every sample is either delivered with its time or
counted as lost; nothing is bridged silently.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from himae_stream._core import finish_chunk, packet_samples
from himae_stream.errors import HimaeError
from himae_stream.protocol import Packet, unwrap_seq

if TYPE_CHECKING:
    from himae_stream.sources.base import Source


class Received(NamedTuple):
    """Packets that arrived together and the host time they arrived
    (`time.monotonic()` seconds; None: no host clock, e.g. a file)."""

    host_time: float | None
    packets: Sequence[Packet]


@dataclass(frozen=True)
class Chunk:
    """Contiguous samples: unpacks as `timestamps, samples, lost_mask`.

    `timestamps` are host-clock seconds (float64, n), `samples` physical
    values (float32, channels x n, zero where lost), `lost_mask` (bool, n).
    `start` is the stream index of the first sample; a chunk whose start is
    not the previous chunk's end follows a break (stream restart or a chunk
    dropped by a full queue), both counted. `arrival` is the host time
    (`time.monotonic()`) at which the data that released the chunk was read,
    where end-to-end latency starts (None without a host clock, e.g. a file);
    `released` when the chunk left the reader, deframed, reordered and on the
    host clock (the part of a record's latency spent reading is the difference).
    """

    timestamps: np.ndarray
    samples: np.ndarray
    lost_mask: np.ndarray
    start: int
    arrival: float | None = None
    released: float | None = None

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.timestamps, self.samples, self.lost_mask))

    def __len__(self) -> int:
        return int(self.lost_mask.shape[0])


class ClockMap:
    """Device-clock to host-clock mapping with a robust drift estimate.

    Arrivals are binned by device time; each bin keeps its smallest host-minus-
    device offset (the least-delayed packet), and a Theil-Sen line through
    the bin minima, refined by least squares on the bins it does not reject,
    gives the drift, so latency spikes and outliers do not bend it. Memory and work per bin are bounded by `max_bins`.
    """

    def __init__(self, bin_s: float = 1.0, max_bins: int = 300):
        self.bin_s = bin_s
        self._bins: deque[tuple[float, float]] = deque(maxlen=max_bins)
        self.reset()

    def reset(self) -> None:
        """Forget every observation (the device clock restarted)."""
        self._bins.clear()
        self._open: tuple[int, float, float] | None = None  # (bin number, device s, min offset)
        self._origin: float | None = None
        self._slope = 0.0
        self._intercept = 0.0
        self._unfitted = 0

    @property
    def drift_ppm(self) -> float:
        """How fast the device clock runs against the host clock, in ppm."""
        self.fit_if_due()
        return (1.0 / (1.0 + self._slope) - 1.0) * 1e6

    def observe(self, device_s: float, host_s: float) -> None:
        """One arrival: a sample taken at `device_s` reached the host at `host_s`."""
        if self._origin is None:
            self._origin = device_s
            self._intercept = host_s - device_s
        d = device_s - self._origin
        offset = host_s - device_s
        number = int(d // self.bin_s)
        if self._open is not None and self._open[0] == number:
            if offset < self._open[2]:
                self._open = (number, d, offset)
        else:
            if self._open is not None:
                self._bins.append(self._open[1:])
                self._unfitted += 1
            self._open = (number, d, offset)
        if len(self._bins) < 2:  # no line yet: the least delay seen so far
            self._intercept = min(self._intercept, offset)

    def fit_if_due(self) -> None:
        """Refit the drift line once a fixed fraction of the bins is new (O(1) work per bin).

        Kept out of `observe` so that a reader can refit after handing its
        chunks on, off the path from a sample's arrival to its output.
        """
        if self._unfitted and self._unfitted * 8 >= len(self._bins):
            self._fit()
            self._unfitted = 0

    def _fit(self) -> None:
        if len(self._bins) < 2:
            return
        d, off = np.asarray(self._bins).T
        # robust start: Theil-Sen over pairs half the history apart, O(bins)
        half = len(d) // 2
        span = d[half:] - d[: len(d) - half]
        if not np.any(span > 0):
            return
        slope = float(np.median((off[half:] - off[: len(d) - half])[span > 0] / span[span > 0]))
        residual = off - slope * d
        residual -= np.median(residual)
        # then least squares on the bins that are not outliers, for precision
        keep = np.abs(residual) <= 3 * 1.4826 * np.median(np.abs(residual)) + 1e-6
        if keep.sum() >= 2 and np.ptp(d[keep]) > 0:
            slope, _ = np.polyfit(d[keep], off[keep], 1)
        self._slope = float(slope)
        self._intercept = float(np.median((off - self._slope * d)[keep]))

    @property
    def rate(self) -> float:
        """Host seconds per device second."""
        return 1.0 + self._slope

    def to_host(self, device_s: np.ndarray | float) -> np.ndarray | float:
        """Host times of device times (seconds); a float for a float, in plain float arithmetic."""
        if not isinstance(device_s, float):
            device_s = np.asarray(device_s, np.float64)
        if self._origin is None:
            return device_s
        d = device_s - self._origin
        return self._origin + d + self._intercept + self._slope * d


class StreamError(HimaeError):
    """The source feeding a SampleStream failed."""


COUNTERS = (
    "packets", "duplicates", "reordered", "late", "gaps", "lost_samples", "samples",
    "restarts", "overflow_drops", "overflow_samples", "nonfinite",
)


def _delivered(item: Chunk | BaseException) -> Chunk:
    """A chunk from the reader's queue, or the source's failure raised in the consumer."""
    if isinstance(item, BaseException):
        raise StreamError(f"source failed: {item}") from item
    return item


class SampleStream:
    """Packets in, `Chunk`s out (asyncio: `async for`; blocking: `for`).

    Packets are held until they are next in stream order, at most
    `reorder_packets` of them or `reorder_timeout_s` of host time; then the
    hole before the oldest held packet is declared lost (zeros, mask set).
    A jump of more than `max_gap_s` forwards, or `max_late_s` backwards, is
    a stream restart (device reboot, corrupt counter): counted, no zeros
    filled, and the chunk's `start` shows the break. Chunks wait in a queue of
    `queue_chunks`; when the consumer falls behind the oldest is dropped and
    counted (`overflow_drops`, `overflow_samples`).
    """

    def __init__(
        self,
        source: Source | None = None,
        *,
        reorder_packets: int = 16,
        reorder_timeout_s: float = 0.5,
        max_gap_s: float = 600.0,
        max_late_s: float = 5.0,
        queue_chunks: int = 256,
        clock: ClockMap | None = None,
    ):
        self.source = source
        self.reorder_packets = reorder_packets
        self.reorder_timeout_s = reorder_timeout_s
        self.max_gap_s = max_gap_s
        self.max_late_s = max_late_s
        self.queue_chunks = queue_chunks
        self.clock = clock or ClockMap()
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._next: int | None = None  # stream index expected next
        self._max_seen = 0
        self._pending: dict[int, tuple[Packet, int, float | None]] = {}  # index -> (packet, n, arrival)
        self._delivered: deque[int] = deque()  # starts of packets delivered in the last max_late_s
        self._last_time = 0.0  # device seconds of the last emitted sample
        self._last_host = -np.inf  # host time given to the last emitted sample
        self._fs = 0.0
        self._channels = 0

    # ------------------------------------------------------------ counters
    @property
    def counters(self) -> dict[str, int]:
        """Own counters merged with the source's (frames, crc_errors, reconnects, ...)."""
        merged = dict(self._counts)
        if self.source is not None:
            for name, value in self.source.counters.items():
                merged[name] = merged.get(name, 0) + value
        for name in ("frames", "crc_errors", "resyncs", "reconnects"):
            merged.setdefault(name, 0)
        return merged

    @property
    def drift_ppm(self) -> float:
        return self.clock.drift_ppm

    # ---------------------------------------------------- synchronous core
    def push(self, packet: Packet, host_time: float | None = None) -> list[Chunk]:
        """Add one packet; returns the chunks it completes (possibly none)."""
        return self.push_many((packet,), host_time)

    def push_many(self, packets: Sequence[Packet], host_time: float | None = None) -> list[Chunk]:
        """Add packets that arrived together (one read, one notification).

        Returns the chunks they complete: usually one, more after a restart.
        Work per packet is a few integer and dict operations; the samples of
        the whole batch are converted and timed in a handful of numpy calls.
        """
        self.clock.fit_if_due()  # normally done already, after the previous chunks were handed on
        out: list[Chunk] = []
        pieces: list[tuple] = []
        newest: tuple[float, Packet] | None = None
        for packet in packets:
            self._counts["packets"] += 1
            n = packet.samples.shape[1]
            if n == 0:
                continue
            if self._next is None:
                self._start(packet)
                index = packet.seq
            else:
                index = unwrap_seq(packet.seq, self._next)
                jump = index - self._next
                if (
                    packet.channels != self._channels
                    or packet.fs != self._fs
                    or jump > self.max_gap_s * self._fs
                    or -jump > self.max_late_s * self._fs
                ):
                    self._release_all(pieces)
                    out += self._chunks(pieces, host_time)
                    pieces, newest = [], None
                    self._counts["restarts"] += 1
                    self._start(packet)
                    index = packet.seq
                elif index < self._next:
                    if index in self._delivered:
                        self._counts["duplicates"] += 1
                    else:
                        self._counts["late"] += 1  # its samples were already counted lost
                    continue
                elif index in self._pending:
                    self._counts["duplicates"] += 1
                    continue
            if index < self._max_seen:
                self._counts["reordered"] += 1
            self._max_seen = max(self._max_seen, index)
            self._pending[index] = (packet, n, host_time)
            if index == self._next:
                self._drain(pieces)
            while len(self._pending) > self.reorder_packets:
                self._release_gap(pieces)
            end_time = packet.t_us * 1e-6 + (n - 1) / packet.fs
            if newest is None or end_time > newest[0]:
                newest = (end_time, packet)
        if host_time is not None and newest is not None:
            self.clock.observe(newest[0], host_time)
        return out + self._chunks(pieces, host_time)

    def flush(self) -> list[Chunk]:
        """Release everything held (end of stream): holes before held packets become lost."""
        pieces: list[tuple] = []
        self._release_all(pieces)
        return self._chunks(pieces)

    def expire(self, now: float) -> list[Chunk]:
        """Declare holes lost whose oldest held packet arrived before `now - reorder_timeout_s`."""
        pieces: list[tuple] = []
        while self._pending and min(
            (t for _, _, t in self._pending.values() if t is not None), default=now
        ) < now - self.reorder_timeout_s:
            self._release_gap(pieces)
        return self._chunks(pieces, now)

    def _start(self, packet: Packet) -> None:
        self._next = packet.seq
        self._max_seen = packet.seq
        self._channels = packet.channels
        self._fs = packet.fs
        self._pending.clear()
        self._delivered.clear()
        self.clock.reset()

    def _release_all(self, pieces: list) -> None:
        while self._pending:
            self._release_gap(pieces)

    def _drain(self, pieces: list) -> None:
        """Move held packets that are next in order to `pieces` as (index, n, packet)."""
        pending, delivered = self._pending, self._delivered
        while self._next in pending:
            packet, n, _ = pending.pop(self._next)
            pieces.append((self._next, n, packet))
            delivered.append(self._next)
            self._counts["samples"] += n
            self._next += n
            self._last_time = packet.t_us * 1e-6 + (n - 1) / packet.fs
        horizon = self._next - self.max_late_s * self._fs
        while delivered and delivered[0] < horizon:
            delivered.popleft()

    def _release_gap(self, pieces: list) -> None:
        """Declare the hole before the oldest held packet lost: piece (index, n, (t_before, t_after))."""
        first = min(self._pending)
        hole = first - self._next
        packet = self._pending[first][0]
        pieces.append((self._next, hole, (self._last_time, packet.t_us * 1e-6)))
        self._counts["gaps"] += 1
        self._counts["lost_samples"] += hole
        self._next = first
        self._drain(pieces)

    def _chunks(self, pieces: list, arrival: float | None = None) -> list[Chunk]:
        """One chunk from consecutive pieces, in a fixed number of numpy calls; `arrival` as in Chunk."""
        if not pieces:
            return []
        if len(pieces) == 1 and isinstance(pieces[0][2], Packet):  # the usual case, in fewer numpy calls
            index, n, packet = pieces[0]
            # evenly spaced on the device clock, so on the host clock too: the first time, then steps
            times, samples, lost = packet_samples(packet.samples, packet.scale, self.clock.to_host(packet.t_us * 1e-6),
                                                  self.clock.rate / packet.fs)
            return [self._emit(Chunk(times, samples, lost, index, arrival, time.monotonic()))]
        sizes, base, step, codes, scales = [], [], [], [], []
        for _, n, item in pieces:
            sizes.append(n)
            if isinstance(item, Packet):
                base.append(item.t_us * 1e-6)
                step.append(1.0 / item.fs)
                codes.append(item.samples)
                scales.append(item.scale)
            else:  # lost: zeros, times spaced evenly between the delivered neighbours
                before, after = item
                step.append((after - before) / (n + 1))
                base.append(before + step[-1])
                codes.append(np.zeros((self._channels, n), np.int32))
                scales.append(None)
        sizes = np.array(sizes)
        offsets = np.repeat(np.cumsum(sizes) - sizes, sizes)
        device_times = np.repeat(base, sizes) + np.repeat(step, sizes) * (np.arange(sizes.sum()) - offsets)
        lost = np.repeat(np.fromiter((s is None for s in scales), bool, len(pieces)), sizes)
        known = {s for s in scales if s is not None}
        if len(known) <= 1:
            scale = np.asarray(known.pop() if known else (1.0,) * self._channels, np.float32)
            samples = np.concatenate(codes, axis=1).astype(np.float32) * scale[:, None]
        else:  # the scale changed inside this chunk: convert piece by piece
            samples = np.concatenate(
                [c.astype(np.float32) * np.asarray(s or 1.0, np.float32).reshape(-1, 1) for c, s in zip(codes, scales)],
                axis=1,
            )
        return [self._emit(Chunk(self.clock.to_host(device_times), samples, lost, pieces[0][0], arrival,
                                  time.monotonic()))]

    def _emit(self, chunk: Chunk) -> Chunk:
        """The last checks of a chunk before it leaves.

        A float32 device can send NaN or Inf for a sample it has no value for: such a
        sample is lost like a missing one (zero, mask set), and counted in `nonfinite`.
        No sample is timed after the host read it: the clock map's line runs through
        the middle of the least delays, so a packet faster than that would map past
        its own arrival; such a chunk is moved back to end at its arrival. Host times
        never go back: when a less-delayed arrival moves the clock map earlier,
        samples that would land before the last one handed out are held at it plus
        a microsecond each (the map settles within the next packets).
        """
        times = chunk.timestamps
        if chunk.arrival is not None and len(times) and times[-1] > chunk.arrival:
            times -= times[-1] - chunk.arrival
        bad, self._last_host = finish_chunk(times, chunk.samples, chunk.lost_mask, self._last_host)
        self._counts["nonfinite"] += bad
        return chunk

    # ------------------------------------------------------------- asyncio
    async def __aiter__(self) -> AsyncIterator[Chunk]:
        """Chunks as the source delivers them; ends when the source ends."""
        chunks: asyncio.Queue = asyncio.Queue()
        pump = asyncio.create_task(self._pump(chunks, threading.Event()))
        try:
            while True:
                item = await chunks.get()
                if item is None:
                    return
                yield _delivered(item)
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)

    def __iter__(self) -> Iterator[Chunk]:
        """Blocking iteration: the asyncio reader runs in a background thread."""
        chunks: queue.Queue = queue.Queue()
        stop = threading.Event()
        thread = threading.Thread(target=asyncio.run, args=(self._pump(chunks, stop),), daemon=True)
        thread.start()
        try:
            while True:
                item = chunks.get()
                if item is None:
                    return
                yield _delivered(item)
        finally:
            stop.set()
            thread.join()

    async def _pump(self, chunks: asyncio.Queue | queue.Queue, stop: threading.Event) -> None:
        """Read the source into `chunks` (bounded, drop-oldest); None marks the end."""
        if self.source is None:
            chunks.put_nowait(StreamError("SampleStream has no source to read"))
            return

        def put(new: list[Chunk]) -> None:
            for chunk in new:
                while chunks.qsize() >= self.queue_chunks:
                    try:
                        dropped = chunks.get_nowait()
                    except (asyncio.QueueEmpty, queue.Empty):
                        break
                    self._counts["overflow_drops"] += 1
                    self._counts["overflow_samples"] += len(dropped)
                chunks.put_nowait(chunk)

        loop = asyncio.get_running_loop()
        pump = asyncio.current_task()

        def tick() -> None:
            # a quiet source still lets held packets expire; a consumer that stopped ends the pump
            nonlocal timer
            if stop.is_set():
                pump.cancel()
                return
            put(self.expire(time.monotonic()))
            timer = loop.call_later(self.reorder_timeout_s / 2, tick)

        timer = loop.call_later(self.reorder_timeout_s / 2, tick)
        arrivals = aiter(self.source)
        try:
            async for received in arrivals:
                put(self.push_many(received.packets, received.host_time))
                if received.host_time is not None:
                    put(self.expire(received.host_time))
                await asyncio.sleep(0)  # the consumer takes the chunks before the clock is refitted
                self.clock.fit_if_due()
                if stop.is_set():
                    return
            put(self.flush())
            chunks.put_nowait(None)
        except asyncio.CancelledError:
            if not stop.is_set():
                raise
        except Exception as exc:  # handed to the consumer, which raises it
            chunks.put_nowait(exc)
        finally:
            timer.cancel()
            # the source's own cleanup (an async generator's finally) runs now, not whenever the
            # event loop gets round to finalising it: a simulated device it runs must stop first
            if hasattr(arrivals, "aclose"):
                await arrivals.aclose()
            await self.source.close()
