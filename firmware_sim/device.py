"""The simulated sensor: a recording sampled by a device clock and quantised by its ADC.

Stream index k is the k-th sample the device produced since power-on. Its
value is recording sample k (looping if asked), quantised to the device's
sample format; its device timestamp is `start_us + k / fs` on the device's
own clock plus sampling jitter. The device clock runs `drift_ppm` fast
against real time, which the `Pacer` applies when mapping to the wall clock.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from himae_stream.protocol import Packet, SampleFormat, StreamInfo
from himae_stream.recordings import Recording, RecordingError

#: full-scale codes of the integer sample formats
_FULL_SCALE = {SampleFormat.INT16: (1 << 15) - 1, SampleFormat.INT24: (1 << 23) - 1}


@dataclass
class DeviceConfig:
    """How the simulated device samples: rate, ADC format and scale, clock errors."""

    fs: float | None = None  # None: the recording's rate
    fmt: SampleFormat = SampleFormat.INT16
    scale: tuple[float, ...] | None = None  # physical units per code; None: fit the recording's range
    drift_ppm: float = 0.0  # device clock runs this much fast against real time
    jitter_us: float = 0.0  # standard deviation of the sampling-instant jitter
    start_us: int = 1_000_000  # device clock at sample 0 (it booted a second earlier)
    loop: bool = False  # replay the recording again at its end instead of stopping
    seed: int = 0
    name: str = "himae-sim"


class DeviceModel:
    """Deterministic sample stream of one recording: codes, values and timestamps by index."""

    def __init__(self, recording: Recording, config: DeviceConfig | None = None) -> None:
        self.config = config = config or DeviceConfig()
        self.original = recording  # as given, before resampling to the device rate
        if config.fs is not None and config.fs != recording.fs:
            recording = recording.resampled(config.fs)
        self.recording = recording
        self.fs = float(recording.fs)
        self.fmt = SampleFormat(config.fmt)
        signals = recording.signals
        # A sample the recording has no value for (NaN) is one the sensor never produced:
        # the device sends around it, and the receiver sees it as lost (`valid_spans`).
        has_value = np.isfinite(signals).all(axis=0)
        if signals.shape[1] and not has_value.any():
            raise RecordingError(f"{recording.path or recording.name}: no sample has a value (every one is NaN "
                                 "or infinite): nothing to send")
        self._no_value = None if has_value.all() else ~has_value
        signals = np.where(has_value, signals, 0.0)
        self.scale = config.scale or _fit_scale(signals, self.fmt)
        if len(self.scale) != signals.shape[0]:
            raise ValueError(f"{len(self.scale)} scales given for {signals.shape[0]} channels")
        self._codes = Packet.from_physical(0, 0, self.fs, signals, self.scale, self.fmt).samples
        rng = np.random.default_rng(config.seed)
        limit = min(0.45 * 1e6 / self.fs, config.start_us)  # keeps timestamps increasing and non-negative
        self._jitter = np.clip(rng.normal(0.0, config.jitter_us, signals.shape[1]), -limit, limit) if config.jitter_us else None
        self.info = StreamInfo(
            fs=self.fs,
            channel_names=tuple(recording.channel_names),
            scale=tuple(self.scale),
            fmt=self.fmt,
            units=("",) * signals.shape[0],  # recordings carry no units
            device=config.name,
        )

    @property
    def length(self) -> int | None:
        """Samples the device produces in all (None when it loops forever)."""
        return None if self.config.loop else self._codes.shape[1]

    @property
    def channels(self) -> int:
        return self._codes.shape[0]

    def _span(self, start: int, stop: int) -> np.ndarray:
        n = self._codes.shape[1]
        if stop > n and not self.config.loop:
            raise IndexError(f"samples {start}..{stop} past the end of the recording ({n})")
        return np.arange(start, stop) % n

    def valid_spans(self, start: int, stop: int) -> list[tuple[int, int]]:
        """The runs of [start, stop) whose samples have a value, in order: what the device sends."""
        if self._no_value is None:
            return [(start, stop)] if stop > start else []
        edges = np.flatnonzero(np.diff(np.r_[0, ~self._no_value[self._span(start, stop)], 0].astype(np.int8)))
        return [(start + int(a), start + int(b)) for a, b in zip(edges[::2], edges[1::2])]

    def codes(self, start: int, stop: int) -> np.ndarray:
        """ADC codes of stream indices [start, stop), (channels, n)."""
        return self._codes[:, self._span(start, stop)]

    def values(self, start: int, stop: int) -> np.ndarray:
        """What a receiver reconstructs for [start, stop): codes × scale in float32."""
        return self.packet(start, stop).physical()

    def timestamps_us(self, start: int, stop: int) -> np.ndarray:
        """Device-clock timestamps (µs) of stream indices [start, stop)."""
        k = np.arange(start, stop, dtype=np.int64)
        t = self.config.start_us + k * 1e6 / self.fs
        if self._jitter is not None:
            t = t + self._jitter[k % self._jitter.size]
        return np.rint(t).astype(np.int64)

    def packet(self, start: int, stop: int) -> Packet:
        """The data packet carrying samples [start, stop)."""
        return Packet(
            seq=start % (1 << 32),
            t_us=int(self.timestamps_us(start, start + 1)[0]),
            fs=self.fs,
            samples=self.codes(start, stop),
            scale=tuple(self.scale),
            fmt=self.fmt,
        )


def _fit_scale(signals: np.ndarray, fmt: SampleFormat) -> tuple[float, ...]:
    """Per-channel scale that maps the recording's peak to 90 % of the ADC range."""
    if fmt == SampleFormat.FLOAT32:
        return (1.0,) * signals.shape[0]
    peak = np.nanmax(np.abs(signals), axis=1)
    peak[~(peak > 0)] = 1.0
    # Rounded to float32 so the scale survives the wire unchanged.
    return tuple(float(np.float32(p / (0.9 * _FULL_SCALE[fmt]))) for p in peak)


class Pacer:
    """Maps device time to the wall clock: real time at `speed`×, or no waiting when speed is None."""

    def __init__(self, speed: float | None = 1.0, drift_ppm: float = 0.0) -> None:
        if speed is not None and not speed > 0:
            raise ValueError(f"speed must be positive (or None for as fast as possible), got {speed}")
        self.speed = speed
        self.rate = 1.0 + drift_ppm * 1e-6
        self.t0 = time.monotonic()

    def restart(self) -> None:
        self.t0 = time.monotonic()

    def wall(self, device_s: float) -> float:
        """Monotonic time at which the device clock reads `device_s`."""
        return self.t0 + self.elapsed(device_s)

    def elapsed(self, device_s):
        """Wall seconds from the start until the device clock reads `device_s` (a number or an array):
        0 when unpaced."""
        if self.speed is None:
            return np.zeros_like(device_s, dtype=float)
        return device_s / self.rate / self.speed

    def device_now(self) -> float:
        """Device seconds elapsed so far (infinite when unpaced)."""
        if self.speed is None:
            return float("inf")
        return (time.monotonic() - self.t0) * self.speed * self.rate

    def sleep_until(self, device_s: float) -> None:
        delay = self.wall(device_s) - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    async def wait_until(self, device_s: float) -> None:
        delay = self.wall(device_s) - time.monotonic()
        await asyncio.sleep(max(delay, 0.0))


@dataclass
class DropLog:
    """Which produced samples the device did not deliver, and why (half-open index ranges)."""

    dropped: list[tuple[int, int, str]] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)

    def drop(self, start: int, stop: int, reason: str) -> None:
        if stop <= start:
            return
        last = self.dropped[-1] if self.dropped else None
        if last is not None and last[1] == start and last[2] == reason:
            self.dropped[-1] = (last[0], stop, reason)
        else:
            self.dropped.append((start, stop, reason))
        self.count(f"dropped_{reason}", stop - start)

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def indices(self) -> np.ndarray:
        """Every dropped stream index, sorted."""
        if not self.dropped:
            return np.zeros(0, np.int64)
        return np.unique(np.concatenate([np.arange(a, b) for a, b, _ in self.dropped]))

    def total(self) -> int:
        return sum(b - a for a, b, _ in self.dropped)


def frames(model: DeviceModel, per_frame: int, disconnected, log: DropLog,
           start: int = 0) -> Iterator[tuple[int, int, list[tuple[int, int]]]]:
    """The device's output from sample `start` on, cut into frames of `per_frame` samples: (start, stop, spans to send).

    A frame whose last sample falls while `disconnected(device_s)` holds, and the
    samples the recording has no value for, are logged as dropped here and leave
    no spans; every transport sends the spans and logs what it loses of them.
    """
    length, k = model.length, start
    while length is None or k < length:
        stop = k + per_frame if length is None else min(k + per_frame, length)
        if disconnected(stop / model.fs):
            log.drop(k, stop, "disconnected")
            yield k, stop, []
        else:
            spans = model.valid_spans(k, stop)
            for (_, gap_start), (gap_stop, _) in zip([(k, k), *spans], [*spans, (stop, stop)]):
                log.drop(gap_start, gap_stop, "no_value")
            yield k, stop, spans
        k = stop


class ThreadedDevice:
    """A simulated device that streams from a background thread: `start()`, `wait()`, `stop()`.

    Subclasses implement `run()`, pacing it with `_wait` and logging what they
    do not deliver with `_drop`; a failure in the thread is raised by `wait()`.
    """

    def __init__(self, model: DeviceModel, faults, speed: float | None, frame_ms: float) -> None:
        from firmware_sim.faults import Faults

        self.model = model
        self.faults = faults or Faults()
        self.pacer = Pacer(speed, model.config.drift_ppm)
        self.per_frame = max(1, round(model.fs * frame_ms / 1000.0))
        self.log = DropLog()
        self.produced = 0  # samples produced so far (stream indices < produced)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    transport = "device"  # names the thread

    def run(self) -> None:
        raise NotImplementedError

    def start(self):
        self._thread = threading.Thread(target=self._run_thread, name=f"firmware-sim-{self.transport}", daemon=True)
        self._thread.start()
        return self

    def _run_thread(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # handed to whoever waits on the device
            self.error = exc

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the whole recording was sent; True when done. Re-raises a failure of the device thread."""
        assert self._thread is not None
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        return not self._thread.is_alive()

    def request_stop(self) -> None:
        """Ask the device thread to end, without waiting: safe from an event loop that is being
        cancelled, so whoever waits for the device (`wait()`, an executor job) is released soon."""
        self._stop.set()

    def stop(self) -> None:
        self.request_stop()
        if self._thread is not None:
            self._thread.join()

    def close(self) -> None:
        """Stop, and release what the transport holds."""
        self.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _wait(self, device_s: float) -> bool:
        """Sleep until device time `device_s`; False when stopped meanwhile."""
        delay = self.pacer.wall(device_s) - time.monotonic()
        return not self._stop.wait(delay) if delay > 0 else not self._stop.is_set()

    def _drop(self, spans: list[tuple[int, int]], reason: str) -> None:
        for start, stop in spans:
            self.log.drop(start, stop, reason)
