"""The main job: a live source through the model to per-window records.

    source ─► SampleStream ─► channel pick ─► Stream (normaliser + C stream engine)
           ─► windows ─► probe predictions + gap imputation ─► records ─► sinks

`Pipeline.feed(chunk)` is the synchronous core (one chunk in, the records it
completes out); `run()` drives it from any source asynchronously and
`run_blocking()` from a thread, so scripts need no asyncio.
A record is a plain dict; docs/output.md documents its fields.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator

import numpy as np

from himae_stream import probes
from himae_stream.errors import HimaeError
from himae_stream.headplan import Ahead, Heads
from himae_stream.recordings import match_channels
from himae_stream.resample import StreamResampler
from himae_stream.samplestream import Chunk, SampleStream

#: Latencies kept for the p50 / p99 figures.
LATENCY_HISTORY = 4096

#: Where a record's latency goes, in order (ms each, `Pipeline.stages`): the reader deframing,
#: reordering and clock-mapping the chunk that completed the window; the chunk waiting for the
#: pipeline (queue hand-over, event loop); resampling and the stream engine; the probe heads;
#: the record itself (gap fill, and the records before it from the same chunk).
STAGES = ("read", "wait", "engine", "heads", "record")


class History:
    """The most recent raw samples, lost flags and host times, by absolute sample index.

    Bounded: keeps `capacity` samples plus at most one chunk, enough for a
    window's imputation and timing after the stream engine's delay. Samples
    are appended in place; the kept tail moves to the front only when the
    buffer is full, so a chunk costs three small copies, not a reallocation.
    """

    def __init__(self, channels: int, capacity: int):
        self.capacity = capacity
        self.base = 0  # absolute index of the first sample held
        self.held = 0
        self._alloc(channels, 4 * capacity)

    def _alloc(self, channels: int, size: int) -> None:
        self.samples = np.zeros((channels, size), np.float32)
        self.lost = np.zeros(size, bool)
        self.times = np.zeros(size, np.float64)

    def add(self, samples: np.ndarray, lost: np.ndarray, times: np.ndarray) -> None:
        n = samples.shape[1]
        if self.held + n > self.lost.size:
            keep = min(self.held, self.capacity)
            old = (self.samples[:, self.held - keep : self.held], self.lost[self.held - keep : self.held],
                   self.times[self.held - keep : self.held])
            if keep + n > self.lost.size:  # a chunk longer than the spare room: grow once for it
                old = tuple(a.copy() for a in old)
                self._alloc(samples.shape[0], 2 * (keep + n))
            self.samples[:, :keep], self.lost[:keep], self.times[:keep] = old
            self.base += self.held - keep
            self.held = keep
        end = self.held + n
        self.samples[:, self.held : end], self.lost[self.held : end], self.times[self.held : end] = samples, lost, times
        self.held = end

    def span(self, start: int, end: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Views of samples [start, end) that are still held (valid until the next `add`)."""
        a = min(max(start - self.base, 0), self.held)
        b = min(max(end - self.base, 0), self.held)
        return self.samples[:, a:b], self.lost[a:b], self.times[a:b]


class Pipeline:
    """Chunks of device samples in, window records out (synchronous core of `run`)."""

    def __init__(self, model, window=None, hop="1s", channels=None, impute: bool = True, all_heads: bool = False):
        self.model = model
        self.fs = float(model.config["fs"])
        # heads flagged not-default (not trustworthy on unseen data: the model card says why) only when asked
        self.heads = Heads(model.metadata.get("probes") or [], self.fs, everything=all_heads)
        self.stream = model.stream(window=default_window(model) if window is None else window, hop=hop)
        self.window, self.hop = self.stream.window, self.stream.hop
        self.channel_patterns = channels
        self.impute = impute
        keep = self.window + max(self.stream.delay) + 2 * self.hop
        self.history = History(model.config["in_channels"], keep)
        # the heads read each window's per-position activations, the positions the offline code reads
        self.positions = probes.Positions(list(model.config["channels"]), keep) if len(self.heads) else None
        if self.positions is not None:  # what the heads build once per window shape (transform matrices,
            self._warm_heads()          # compiled code) is built now, not in the first record's latency
        self._ahead = Ahead()  # what coming windows' heads need of the levels already held
        self._next_ahead = 0  # the start of the next window whose held levels the heads may read ahead
        self.latencies: deque[float] = deque(maxlen=LATENCY_HISTORY)
        self.stages: deque[tuple[float, ...]] = deque(maxlen=LATENCY_HISTORY)  # per record, ms, as STAGES
        self._marks: tuple[float, ...] = ()  # arrival, released, fed, pushed, heads done: of the chunk in hand
        # sources stamp arrivals with the monotonic clock; records carry Unix time
        self._to_unix = time.time() - time.monotonic()
        self.windows = 0
        self.imputed = 0
        self.ended = False
        self._picks: list[int] | None = None
        self.resampler: StreamResampler | None = None
        self.device_fs: float | None = None

    def _warm_heads(self) -> None:
        """Run the heads once on a silent window of each shape live windows take (a window starting
        off a level's stride holds one position fewer there), so each plan is built now."""
        channels = self.model.config["channels"]
        shapes = set()
        for k in range(2 ** len(channels)):  # window starts k·hop cover every phase of every stride
            start = k * self.hop
            held = [probes.positions(l, start, start + self.window, 1 << 62) for l in range(len(channels))]
            shapes.add(tuple(sl.stop - sl.start for sl in held))
        for lengths in shapes:
            self.heads.apply([[np.zeros((c, n), np.float32) for c, n in zip(channels, lengths)]], [self.window])

    def select(self, names: tuple[str, ...] | list[str], fs: float) -> None:
        """Choose the device channels the model reads (by pattern or the model's channel names) at rate `fs`."""
        need = self.model.config["in_channels"]
        picks = match_channels(list(names), self.channel_patterns, need, self.model.config.get("channel_names"))
        self._picks = picks
        self.device_fs = fs
        # a device at another rate is resampled on the fly to the model's rate
        self.resampler = None if abs(fs - self.fs) <= 1e-6 * self.fs else StreamResampler(fs, self.fs, need)

    def feed(self, chunk: Chunk) -> list[dict]:
        """Push one chunk; return the records of the windows it completes.

        A record's latency runs from `chunk.arrival` (when the source read the
        bytes), or from this call for a chunk without a host arrival time.
        """
        fed = time.monotonic()
        arrival = fed if chunk.arrival is None else chunk.arrival
        released = fed if chunk.released is None else chunk.released
        if self._picks is None:
            self.select([f"ch{i}" for i in range(chunk.samples.shape[0])], self.fs)
        samples, lost, times = chunk.samples[self._picks], chunk.lost_mask, chunk.timestamps
        if self.resampler is not None:
            samples, lost, times = self.resampler.push(samples, lost, times)
        self.history.add(samples, lost, times)
        out = self.stream.push(samples, mask=lost)
        self._marks = (arrival, released, fed, time.monotonic())
        return self._records(out, arrival)

    def prepare(self) -> None:
        """Between chunks, once their records are handed on: the stream engine's work ahead
        (`Stream.prepare`) and the heads' (`Heads.ahead_at`), so the next chunk that completes
        windows waits on less."""
        self.stream.prepare()
        if self.positions is not None:
            self._heads_ahead()

    def _heads_ahead(self) -> None:
        """The heads' work on the coming windows (starts every hop) whose levels but the deepest are held."""
        below = len(self.positions.buf) - 2  # the deepest level but one
        if below < 0:
            return
        held = self.positions.base[below] + self.positions.held[below]
        spans = []
        while probes.positions(below, self._next_ahead, self._next_ahead + self.window, 1 << 62).stop <= held:
            spans.append((self._next_ahead, self._next_ahead + self.window))
            self._next_ahead += self.hop
        if spans:
            self.heads.ahead_at(self.positions, spans, self._ahead)

    def finish(self) -> list[dict]:
        """End of stream: the end padding completes the last windows (records from then on have
        `ended` set: the end of the stream released them, not a live sample)."""
        self.ended = True
        now = time.monotonic()
        out = self.stream.flush()
        self._marks = (now, now, now, time.monotonic())
        return self._records(out, now)

    def _records(self, out, arrival: float) -> list[dict]:
        windows = out.windows
        if self.positions is None:
            predictions = [{} for _ in windows]
        else:
            self.positions.add(out.levels)
            predictions = self.heads.apply_at(self.positions, [(w.start, w.end) for w in windows], self._ahead)
            if windows:
                self._next_ahead = max(self._next_ahead, windows[-1].start + self.hop)
        self._marks = (*self._marks[:4], time.monotonic())
        last = len(windows) - 1 if self.ended else -1  # the end of the stream released the last window
        return [self._record(w, p, arrival, i == last) for i, (w, p) in enumerate(zip(windows, predictions))]

    def _record(self, window, predictions: dict, arrival: float, last: bool) -> dict:
        raw, lost, times = self.history.span(window.start, window.end)
        record = {
            "window": self.windows,
            "start": window.start,
            "end": window.end,
            "t_start": round(float(times[0]) + self._to_unix, 6) if times.size else None,
            "t_end": round(float(times[-1]) + self._to_unix, 6) if times.size else None,
            "lost_fraction": round(window.masked_fraction, 6),
            "predictions": predictions,
            "embeddings": list(window.embeddings),  # float32 arrays; sinks serialise them
            "imputed": 0,
        }
        if self.impute and lost.any():
            record.update(self._fill(window.start, raw, lost, window.start == 0, last))
        done = time.monotonic()
        latency = (done - arrival) * 1e3
        self.latencies.append(latency)
        marks = (*self._marks, done)
        self.stages.append(tuple(1e3 * (b - a) for a, b in zip(marks, marks[1:])))
        record["latency_ms"] = round(latency, 4)
        self.windows += 1
        return record

    def _fill(self, start: int, raw: np.ndarray, lost: np.ndarray, first: bool, last: bool) -> dict:
        """Impute the lost samples of the window's central hop, so each gap sample is filled once,
        from the window where it sits nearest the middle; the stream's first window also fills what
        precedes its centre, and its last what follows, since no other window has them nearer."""
        from himae_stream.impute import impute

        if raw.shape[1] < self.window or lost.all():
            return {}
        a = (self.window - self.hop) // 2
        centre = np.zeros_like(lost)
        centre[0 if first else a : lost.shape[-1] if last else a + self.hop] = True
        if not (lost & centre).any():
            return {}
        filled, imputed = impute(raw, lost, self.model)
        take = imputed.any(axis=0) & centre if imputed.ndim == 2 else imputed & centre
        index = np.flatnonzero(take)
        self.imputed += int(index.size)
        return {
            "imputed": int(index.size),
            "fill": {"index": (start + index).tolist(), "values": filled[:, index].round(6).tolist()},
        }

    def latency_percentiles(self) -> tuple[float, float]:
        """p50 and p99 processing latency in ms over the recent windows."""
        if not self.latencies:
            return float("nan"), float("nan")
        p50, p99 = np.percentile(np.fromiter(self.latencies, float), [50, 99])
        return float(p50), float(p99)


def default_window(model) -> float:
    """Seconds: the window the model's probe heads were fitted on (their predictions hold on it),
    else the model's own."""
    fitted = {h.get("window_s") for h in model.metadata.get("probes") or []} - {None}
    return float(fitted.pop()) if len(fitted) == 1 else model.config["window"] / model.config["fs"]


def load(model, precision: str | None = None):
    """A loaded Model from a Model, a path, or a shipped model's name (default: himae-100), its weights
    in `precision` (see load_model) when it is loaded here."""
    from himae_stream.model import load_model

    if model is None or isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        return load_model(model or "himae-100", precision=precision)
    return model


def freeze_gc() -> None:
    """Collect garbage once, then leave every object alive now out of the cyclic collector's later
    passes (`gc.freeze`): after a model, its compiled normaliser and a source's libraries are loaded,
    a full pass scans over 100,000 objects and takes 40-65 ms (measured on a 2-core AMD EPYC), and
    one lands in a record's latency every few minutes of a live stream; frozen, a pass scans only
    what the stream itself allocates. Process-wide (what is frozen is never collected), so it is
    for a program that owns its process, such as `himae run`."""
    gc.collect()
    gc.freeze()


async def run(source, model=None, window=None, hop="1s", *, channels=None, impute: bool = True,
              duration: float | None = None, pipeline: list | None = None,
              all_heads: bool = False, quiet_gc: bool = False) -> AsyncIterator[dict]:
    """Window records from a live source (URL or Source) as they complete.

    `duration` stops after that many seconds of signal; `pipeline`, if given a
    list, receives the `Pipeline` and its `SampleStream` (for counters);
    `all_heads` adds the heads the model file keeps out of default records;
    `quiet_gc` calls `freeze_gc` once the source has delivered its first samples
    (everything is loaded and connected by then).
    """
    from himae_stream.urls import open_source

    from himae_stream.sources.heartrate import HeartRateSource

    model = load(model)
    src = open_source(source) if isinstance(source, str) else source
    if isinstance(src, HeartRateSource):
        raise HimaeError("a Heart Rate Service device sends heart rate and RR intervals, not a waveform the model "
                         "can read; use himae_stream.sources.HeartRateSource directly")
    core = Pipeline(model, window, hop, channels, impute, all_heads)
    samples = SampleStream(src)
    if pipeline is not None:
        pipeline[:] = [core, samples]
    limit = None
    seen = 0
    # closed as soon as this generator is (a consumer that stops early, e.g. its sink failed), so
    # the source is released then, not when the event loop shuts down (which waits on its threads)
    async with contextlib.aclosing(aiter(samples)) as chunks:
        async for chunk in chunks:
            if core._picks is None:
                info = src.info
                fs = info.fs if info else core.fs
                core.select(info.channel_names if info else [f"ch{i}" for i in range(chunk.samples.shape[0])], fs)
                limit = None if duration is None else int(round(duration * fs))  # in device samples
                if quiet_gc:
                    freeze_gc()
            if limit is not None and seen + len(chunk) >= limit:
                chunk = Chunk(chunk.timestamps[: limit - seen], chunk.samples[:, : limit - seen],
                              chunk.lost_mask[: limit - seen], chunk.start, chunk.arrival, chunk.released)
            seen += len(chunk)
            for record in core.feed(chunk):
                yield record
            core.prepare()
            if limit is not None and seen >= limit:
                break
    for record in core.finish():
        yield record


#: How long closing a `run_blocking` generator waits for the pipeline to close its source.
CLOSE_TIMEOUT_S = 30.0


def run_blocking(source, model=None, window=None, hop="1s", **kwargs) -> Iterator[dict]:
    """`run` for code without asyncio: the pipeline runs in a background thread.

    Closing the generator early (a `break`, `close()`, an exception in the
    caller) cancels the pipeline at once, closes its source and ends the
    thread before `close()` returns; records not taken are dropped.
    """
    records: queue.Queue = queue.Queue(maxsize=1024)
    started = threading.Event()
    running: dict = {}

    async def pump():
        running["loop"], running["task"] = asyncio.get_running_loop(), asyncio.current_task()
        started.set()
        try:
            async for record in run(source, model, window, hop, **kwargs):
                records.put(record)
            records.put(None)
        except asyncio.CancelledError:
            pass  # the consumer closed the generator: nothing more to hand over
        except BaseException as exc:  # handed to the consumer
            records.put(exc)

    thread = threading.Thread(target=asyncio.run, args=(pump(),), name="himae-run-blocking", daemon=True)
    thread.start()
    try:
        while (item := records.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        started.wait()
        try:
            running["loop"].call_soon_threadsafe(running["task"].cancel)
        except RuntimeError:
            pass  # the loop has already finished
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        while thread.is_alive() and time.monotonic() < deadline:
            try:  # a pump blocked on a full queue gets room, then sees the cancellation
                records.get(timeout=0.05)
            except queue.Empty:
                pass
