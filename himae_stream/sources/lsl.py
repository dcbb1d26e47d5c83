"""Lab Streaming Layer source: samples of an LSL outlet, found by stream name and/or type.

LSL carries samples with timestamps but no sequence numbers, so the stream
index of each sample is inferred from its timestamp and the nominal rate:
a step of k sample periods between two samples means k - 1 samples the
outlet never sent (or the link lost), and the packets jump by as many, so
`SampleStream` counts them lost. A sample stamped too early (less than half
a period after the previous one) still takes the next index and is counted.

Timestamps are on the outlet's `local_clock()`; adding the inlet's
`time_correction()` puts them on this machine's `local_clock()`, and the
offset between that and `time.monotonic()`, measured at connect (zero where
both read the same monotonic clock, as on Linux), puts them on the host
clock the pipeline uses: a packet's `t_us` is that host time, so the
stream's clock map only has to absorb the transport delay.

The inlet (liblsl's `recover`) reconnects by itself to an outlet that comes
back; a stream silent for `timeout_s` (its outlet gone for good) is an error.
pylsl's calls block, so they run in a worker thread with short waits: the
event loop never blocks and `close()` takes effect within one wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import numpy as np

from himae_stream.lsl import load_pylsl
from himae_stream.protocol import SampleFormat, StreamInfo
from himae_stream.samplestream import Received
from himae_stream.sources.base import BlockingSource, SourceError, clock_offset, indexed_packets

#: Longest a blocking pylsl call waits before the worker looks at `close()` again.
WAIT_S = 0.1
#: At most this many samples per read, and at most this many seconds buffered in the inlet.
MAX_SAMPLES = 1024
BUFFER_S = 30


class LslSource(BlockingSource):
    """Packets from the first LSL stream whose name (`None`: any) and type match."""

    def __init__(self, name: str | None = None, stream_type: str | None = None, *, timeout_s: float = 10.0):
        super().__init__()
        for label, value in (("name", name), ("type", stream_type)):
            if value is not None and ("'" in value or not value):
                raise SourceError(f"LSL stream {label} {value!r} must be non-empty and hold no quote")
        if name is None and stream_type is None:
            raise SourceError("an LSL source needs a stream name or type")
        self.name, self.stream_type, self.timeout_s = name, stream_type, timeout_s
        self.what = " and ".join(f"{k} {v!r}" for k, v in (("name", name), ("type", stream_type)) if v is not None)
        self.counters.update(samples_read=0, timestamp_jumps=0, early_timestamps=0)
        self._pylsl = load_pylsl(SourceError)
        self._inlet = None
        self._closed = False
        self._next = 0  # stream index of the next sample
        self._last_stamp: float | None = None  # outlet timestamp of the last sample
        self._correction = 0.0  # outlet clock to this machine's local_clock()
        self._to_monotonic = 0.0  # this machine's local_clock() to time.monotonic()

    async def __aiter__(self) -> AsyncIterator[Received]:
        await self._call(self._connect)
        while not self._closed:
            received = await self._call(self._pull)
            if received is not None:
                yield received

    def _connect(self) -> None:
        """Resolve the stream, open an inlet, read its description and the clock offsets."""
        lsl = self._pylsl
        predicate = " and ".join(f"{k}='{v}'" for k, v in (("name", self.name), ("type", self.stream_type)) if v)
        deadline = time.monotonic() + self.timeout_s
        found = []
        while not found and not self._closed:
            if time.monotonic() > deadline:
                raise SourceError(f"no LSL stream with {self.what} found within {self.timeout_s:g} s")
            found = lsl.resolve_bypred(predicate, 1, WAIT_S)
        if self._closed:
            return
        self._inlet = lsl.StreamInlet(found[0], max_buflen=BUFFER_S, recover=True)
        try:
            info = self._inlet.info(self.timeout_s)
            self.info = stream_info(info)
            self._inlet.open_stream(self.timeout_s)
            self._correction = self._inlet.time_correction(self.timeout_s)
        except (lsl.util.TimeoutError, lsl.util.LostError) as exc:
            raise SourceError(f"LSL stream with {self.what} did not answer within {self.timeout_s:g} s: {exc}") from None
        self._to_monotonic = clock_offset(lsl.local_clock)
        self._last_data = time.monotonic()

    def _pull(self) -> Received | None:
        """One read: what arrived within WAIT_S, as packets split where timestamps jump; None if nothing."""
        lsl = self._pylsl
        inlet = self._inlet
        if inlet is None or self._closed:
            return None
        try:
            values, stamps = inlet.pull_chunk(WAIT_S, MAX_SAMPLES, min_samples=1, as_numpy=True)
        except lsl.util.LostError:
            raise SourceError(f"LSL stream with {self.what} was lost and cannot be recovered") from None
        now = time.monotonic()
        if len(stamps):
            try:
                self._correction = inlet.time_correction(0.0)  # liblsl keeps it fresh; this reads it
            except (lsl.util.TimeoutError, lsl.util.LostError):  # no estimate just now (reconnecting): keep the last
                pass
        elif now - self._last_data > self.timeout_s:
            raise SourceError(f"LSL stream with {self.what} sent nothing for {self.timeout_s:g} s (outlet gone)")
        if not len(stamps):
            return None
        self._last_data = now
        self.counters["samples_read"] += len(stamps)
        return Received(now, self._packets(np.asarray(values, np.float32).T, np.asarray(stamps, np.float64)))

    def _packets(self, values: np.ndarray, stamps: np.ndarray) -> list:
        """Samples (channels, n) with their outlet timestamps as packets, a new one after each jump."""
        fs = self.info.fs
        previous = stamps[0] - 1.0 / fs if self._last_stamp is None else self._last_stamp
        periods = np.rint(np.diff(stamps, prepend=previous) * fs)
        self.counters["early_timestamps"] += int(np.count_nonzero(periods < 1))
        steps = np.maximum(periods, 1).astype(np.int64)
        self.counters["timestamp_jumps"] += int(np.count_nonzero(steps > 1))
        index = self._next - 1 + np.cumsum(steps)
        self._next, self._last_stamp = int(index[-1]) + 1, float(stamps[-1])
        return indexed_packets(index, stamps + self._correction + self._to_monotonic, values, fs)

    async def close(self) -> None:
        self._closed = True
        await self._settle()
        inlet, self._inlet = self._inlet, None
        if inlet is not None:
            await asyncio.get_running_loop().run_in_executor(None, inlet.close_stream)


def stream_info(info) -> StreamInfo:
    """Our StreamInfo from an LSL stream's full description; an irregular or text stream is refused."""
    name = info.name()
    if info.nominal_srate() <= 0:
        raise SourceError(f"LSL stream {name!r} has an irregular rate (nominal rate 0): the model needs "
                          "regularly sampled signal")
    if info.channel_format() == 3:  # cf_string: markers or text, not samples
        raise SourceError(f"LSL stream {name!r} carries strings, not samples")
    count = info.channel_count()
    labels, units = [f"ch{i}" for i in range(count)], [""] * count
    channel = info.desc().child("channels").child("channel")
    for i in range(count):
        if channel.empty():
            break
        labels[i] = channel.child_value("label") or labels[i]
        units[i] = channel.child_value("unit")
        channel = channel.next_sibling("channel")
    return StreamInfo(fs=info.nominal_srate(), channel_names=tuple(labels), scale=(1.0,) * count,
                      fmt=SampleFormat.FLOAT32, units=tuple(units), device=name)
