"""Stream mode: the encoder as one convolution over an unbounded signal.

`Stream` feeds chunks of any size through the stream-consistent normaliser
and the C stream engine, which emits every activation of every level once,
as soon as the samples it depends on have arrived; activation p of level l
equals the PyTorch encoder run once over the whole (normalised) recording.
Windows [s, s + L) every `hop` samples are summarised by the mean, per level,
of the positions p with 2^(l+1)·p in [s, s + L), taken from running sums, so
a window costs O(channels) whatever its length. See docs/stream-mode.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from himae_stream._core import StreamEngine, window_means
from himae_stream.normalize import StreamNormalizer, normalize as normalize_recording

SNAPSHOT_FORMAT = "himae-stream-snapshot"
SNAPSHOT_VERSION = 1
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s|min|samples?)?\s*$")


@dataclass(frozen=True)
class Window:
    """One completed window: samples [start, end), per-level mean activations, lost share."""

    start: int
    end: int
    embeddings: list[np.ndarray]
    masked_fraction: float


@dataclass(frozen=True)
class StreamOutput:
    """What one push made computable: per level (positions int64[n], activations float32[C_l, n])."""

    levels: list[tuple[np.ndarray, np.ndarray]]
    windows: list[Window]


def to_samples(value: int | float | str, fs: float, what: str) -> int:
    """A length in samples from samples (int), seconds (float) or a string like "1s", "250ms", "100"."""
    if isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise ValueError(f"{what} {value!r} is not a duration such as '10s', '250ms' or '100' (samples)")
        number, unit = float(m.group(1)), m.group(2) or "samples"
        if unit.startswith("sample"):
            if not number.is_integer():
                raise ValueError(f"{what} {m.group(1)} samples is not a whole number")
            value = int(number)
        else:
            value = number * {"ms": 1e-3, "s": 1.0, "min": 60.0}[unit]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{what} must be samples (int), seconds (float) or a string, got {value!r}")
    if isinstance(value, (float, np.floating)):
        samples = value * fs
        if not np.isfinite(samples) or abs(samples - round(samples)) > 1e-6 * max(1.0, abs(samples)):
            raise ValueError(f"{what} {value} s is not a whole number of samples at {fs:g} Hz")
        value = round(samples)
    if value < 1:
        raise ValueError(f"{what} must be at least one sample, got {value}")
    return int(value)


class _LevelSums:
    """Running sums of one level from position `base` on, for the mean over any span.

    Column off + i of buf holds the float64 sum of every position before
    base + i (as the engine reports it); dropping the front only moves `off`,
    and the buffer is compacted or doubled when full.
    """

    def __init__(self, channels: int):
        self.channels = channels
        self.reset()

    def reset(self) -> None:
        self.set(0, np.zeros((self.channels, 1)))

    def set(self, base: int, sums: np.ndarray) -> None:
        self.base, self.off, self.n = base, 0, sums.shape[1] - 1
        self.buf = np.zeros((self.channels, max(1024, 2 * sums.shape[1])))
        self.buf[:, : sums.shape[1]] = sums

    @property
    def sums(self) -> np.ndarray:
        """Running sums before positions base .. base + n."""
        return self.buf[:, self.off : self.off + self.n + 1]

    def add(self, first: int, sums: np.ndarray) -> None:
        """Append the running sums through positions first, first + 1, ... (contiguous)."""
        skip = self.base - first
        if skip > 0:  # positions before `base` are not kept; nothing is held, only the sum before base
            self.buf[:, self.off] = sums[:, min(skip, sums.shape[1]) - 1]
            sums = sums[:, skip:]
        k = sums.shape[1]
        if k == 0:
            return
        if self.off + self.n + 1 + k > self.buf.shape[1]:
            held = self.sums.copy()
            if held.shape[1] + k > self.buf.shape[1]:
                self.buf = np.zeros((self.channels, 2 * (held.shape[1] + k)))
            self.buf[:, : held.shape[1]] = held
            self.off = 0
        end = self.off + self.n + 1
        self.buf[:, end : end + k] = sums
        self.n += k

    def drop_before(self, position: int) -> None:
        if position <= self.base:
            return
        dropped = min(position - self.base, self.n)  # positions not yet arrived are skipped by add
        self.off += dropped
        self.n -= dropped
        self.base = position


class Stream:
    """Incremental encoder over one signal; create with `Model.stream(...)`."""

    def __init__(self, model, window: int | float | str | None = None, hop: int | float | str | None = None,
                 normalize: bool = True):
        config = model.config
        self.fs = float(config["fs"])
        self.in_channels = int(config["in_channels"])
        self.window = to_samples(config["window"] if window is None else window, self.fs, "window")
        self.hop = to_samples(self.window if hop is None else hop, self.fs, "hop")
        self.normalize = bool(normalize)
        self._engine = StreamEngine(model)
        self.strides = tuple(2 ** (level + 1) for level in range(self._engine.levels))
        if self.window < self.strides[-1]:
            raise ValueError(f"window {self.window} is shorter than the deepest level's stride {self.strides[-1]}")
        self._normalizer = None
        if self.normalize:
            spec = model.metadata["normalizer"]
            if spec.get("kind") != "stream":
                raise ValueError(
                    f"the model's normaliser {spec.get('kind')!r} works per window, not on a stream; "
                    "normalise the samples yourself and pass normalize=False"
                )
            self._normalizer = StreamNormalizer(spec, self.fs, self.in_channels)
        self._sums = [_LevelSums(self._engine.channels(level)) for level in range(self._engine.levels)]
        ends = np.cumsum([sums.channels for sums in self._sums]).tolist()
        self._spans = list(zip([0, *ends[:-1]], ends))  # each level's columns in a row of window means
        self._lost = _LevelSums(1)  # lost samples (summed over channels)
        self._lost_total = 0.0
        self._next_window = 0

    @property
    def delay(self) -> tuple[int, ...]:
        """Per level, samples of look-ahead before a position can be emitted."""
        return tuple(self._engine.delay(level) for level in range(self._engine.levels))

    @property
    def pushed(self) -> int:
        """Samples pushed since the stream started."""
        return self._engine.pushed

    def push(self, samples, mask=None) -> StreamOutput:
        """Feed samples `(C, n)` (or `(n,)` for one channel); `mask` marks lost samples (True)."""
        x = np.asarray(samples)
        if x.ndim == 1 and self.in_channels == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[0] != self.in_channels:
            raise ValueError(f"expected samples of shape ({self.in_channels}, n), got {x.shape}")
        lost = ~np.isfinite(x)
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape not in (x.shape, x.shape[-1:]):
                raise ValueError(f"mask shape {mask.shape} does not match samples {x.shape} (or ({x.shape[1]},))")
            lost |= mask
        if self._normalizer is not None:
            x = self._normalizer.process(x, lost)
        else:
            x = np.where(lost, 0.0, x).astype(np.float32)
        return self._run(x, lost, flush=False)

    def flush(self) -> StreamOutput:
        """End the stream: the zero padding of the end gives the last positions and windows."""
        return self._run(np.zeros((self.in_channels, 0), np.float32), np.zeros((self.in_channels, 0), bool), True)

    def reset(self) -> None:
        """Start over as a new stream."""
        self._engine.reset()
        if self._normalizer is not None:
            self._normalizer.reset()
        for sums in (*self._sums, self._lost):
            sums.reset()
        self._lost_total = 0.0
        self._next_window = 0

    def _run(self, x: np.ndarray, lost: np.ndarray, flush: bool) -> StreamOutput:
        first = self._engine.pushed
        levels, running = self._engine.push(x, flush)
        if lost.shape[1]:
            lost_sums = np.full((1, lost.shape[1]), self._lost_total)
            if lost.any():
                lost_sums += np.cumsum(lost.sum(axis=0))
                self._lost_total = float(lost_sums[0, -1])
            self._lost.add(first, lost_sums)
        for sums, (positions, _), new in zip(self._sums, levels, running):
            if positions.size:
                sums.add(int(positions[0]), new)
        return StreamOutput(levels, self._windows())

    def _windows(self) -> list[Window]:
        """Windows whose every position has been emitted, oldest first (all of a push at once)."""
        last = (self._engine.complete - self.window) // self.hop
        if last < self._next_window:
            return []
        starts = np.arange(self._next_window, last + 1, dtype=np.int64) * self.hop
        tracked = (*self._sums, self._lost)  # lost samples: one more "level" of stride 1
        means = window_means([t.buf for t in tracked], [t.off - t.base for t in tracked],
                             [*self.strides, 1], starts, self.window)
        embeddings = means[:, :-1].astype(np.float32)
        lost = (means[:, -1] / self.in_channels).tolist()
        windows = [Window(start, start + self.window, [row[a:b] for a, b in self._spans], lost[i])
                   for i, (start, row) in enumerate(zip(starts.tolist(), embeddings))]
        self._next_window = last + 1
        start = self._next_window * self.hop
        for stride, sums in zip(self.strides, self._sums):
            sums.drop_before(-(-start // stride))
        self._lost.drop_before(start)
        return windows

    def snapshot(self) -> dict:
        """Everything needed to resume this stream later with `Model.stream_from(snapshot)`."""
        return {
            "format": SNAPSHOT_FORMAT,
            "version": SNAPSHOT_VERSION,
            "window": self.window,
            "hop": self.hop,
            "normalize": self.normalize,
            "pushed": self._engine.pushed,
            "engine": self._engine.state(),
            "normalizer": None if self._normalizer is None else self._normalizer.get_state(),
            "next_window": self._next_window,
            "lost_total": self._lost_total,
            "sums": [(s.base, s.sums.copy()) for s in (*self._sums, self._lost)],
        }

    @classmethod
    def restore(cls, model, snapshot: dict) -> Stream:
        """A stream over `model` that continues exactly where `snapshot` was taken."""
        if not isinstance(snapshot, dict) or snapshot.get("format") != SNAPSHOT_FORMAT:
            raise ValueError("not a stream snapshot")
        if snapshot.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported stream snapshot version {snapshot.get('version')!r}")
        stream = cls(model, snapshot["window"], snapshot["hop"], snapshot["normalize"])
        stream._engine.load_state(snapshot["engine"])
        next_start = int(snapshot["next_window"]) * stream.hop
        if stream._engine.pushed != snapshot["pushed"] or not 0 <= next_start <= snapshot["pushed"] + stream.hop:
            raise ValueError("stream snapshot is inconsistent (engine state and windows disagree)")
        if stream._normalizer is not None:
            stream._normalizer.set_state(snapshot["normalizer"])
        stream._next_window = int(snapshot["next_window"])
        stream._lost_total = float(snapshot["lost_total"])
        targets = (*stream._sums, stream._lost)
        if len(snapshot["sums"]) != len(targets):
            raise ValueError("stream snapshot has the wrong number of levels")
        for sums, (base, values) in zip(targets, snapshot["sums"]):
            values = np.asarray(values, dtype=np.float64)
            if values.ndim != 2 or values.shape[0] != sums.channels or values.shape[1] < 1:
                raise ValueError("stream snapshot running sums have the wrong shape")
            sums.set(int(base), values)
        return stream


def normalize_for(model, x, mask=None) -> np.ndarray:
    """The model's normaliser applied to a whole recording `(C, N)`, as stream mode sees it."""
    config = model.config
    return normalize_recording(x, model.metadata["normalizer"], float(config["fs"]), mask)
