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

import numpy as np

from himae_stream._core import StreamCore, StreamEngine, StreamGroup, StreamOutput, Window
from himae_stream.errors import StreamStateError
from himae_stream.normalize import StreamNormalizer, normalize as normalize_recording
from himae_stream.numbers import OptionError

__all__ = ["Stream", "StreamOutput", "StreamStateError", "Streams", "Window", "normalize_for", "to_samples"]

SNAPSHOT_FORMAT = "himae-stream-snapshot"
#: 2: running sums kept only at window edges (EdgeSums), and no totals in the engine state; a version-1
#: snapshot does not restore.
SNAPSHOT_VERSION = 2
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s|min|samples?)?\s*$")


#: Longest window, hop or duration in samples: what the engine's 32-bit counters hold (about
#: 248 days at 100 Hz); anything longer is a typo, refused before it reaches the engine.
MAX_SAMPLES = 2**31 - 1
#: Largest sample or position count a snapshot may hold (the engine's counters are int64).
MAX_COUNT = 2**62


def to_samples(value: int | float | str, fs: float, what: str) -> int:
    """A length in samples from samples (int), seconds (float) or a string like "1s", "250ms", "100"."""
    if isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise OptionError(f"{what}: expected a duration such as '10s', '250ms' or '100' (samples), got {value!r}")
        number, unit = float(m.group(1)), m.group(2) or "samples"
        if unit.startswith("sample"):
            if not number.is_integer():
                raise OptionError(f"{what}: {m.group(1)} samples is not a whole number")
            value = int(number)
        else:
            value = number * {"ms": 1e-3, "s": 1.0, "min": 60.0}[unit]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise OptionError(f"{what}: expected samples (int), seconds (float) or a string, got {value!r}")
    if isinstance(value, (float, np.floating)):
        samples = value * fs
        if not np.isfinite(samples) or abs(samples - round(samples)) > 1e-6 * max(1.0, abs(samples)):
            raise OptionError(f"{what}: {value:g} s is not a whole number of samples at {fs:g} Hz")
        value = round(samples)
    if value < 1:
        raise OptionError(f"{what}: expected at least one sample, got {value}")
    if value > MAX_SAMPLES:
        raise OptionError(f"{what}: {value:g} samples is more than a length may be ({MAX_SAMPLES} samples)")
    return int(value)


class Stream:
    """Incremental encoder over one signal; create with `Model.stream(...)`."""

    def __init__(self, model, window: int | float | str | None = None, hop: int | float | str | None = None,
                 normalize: bool = True, engine: StreamEngine | None = None):
        """`engine`: a group's engine for this stream (Streams), which pushes it; by default its own."""
        config = model.config
        self.fs = float(config["fs"])
        self.in_channels = int(config["in_channels"])
        self.window = to_samples(config["window"] if window is None else window, self.fs, "window")
        self.hop = to_samples(self.window if hop is None else hop, self.fs, "hop")
        self.normalize = bool(normalize)
        self._engine = StreamEngine(model) if engine is None else engine
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
        # every push runs in here: normaliser, engine, lost samples, running sums, window means
        self._core = StreamCore(self._engine, self._normalizer, self.window, self.hop)
        self._tracked = [*self._core.sums, self._core.lost]  # what windows summarise; lost samples: stride 1
        # push() below, called straight: a live push costs a few µs, and a Python frame around it a tenth of that
        self.push = self._core.push

    @property
    def delay(self) -> tuple[int, ...]:
        """Per level, samples of look-ahead before a position can be emitted."""
        return tuple(self._engine.delay(level) for level in range(self._engine.levels))

    @property
    def pushed(self) -> int:
        """Samples pushed since the stream started."""
        return self._engine.pushed

    def push(self, samples, mask=None) -> StreamOutput:
        """Feed samples `(C, n)` (or `(n,)` for one channel); `mask` marks lost samples (True).

        Lost and non-finite samples enter the encoder as 0 and leave the
        normaliser's state untouched; windows report their share.
        """
        return self._core.push(samples, mask)

    def prepare(self) -> None:
        """Do now, between pushes, what the next positions need of the samples already pushed.

        Each level's next convolution rows are summed over all their input
        rows but the newest, which they still wait for, so the push that
        brings it adds only that last tap: for a live source the push that
        completes a window then reads a fifth of the deep levels' weights.
        Call it after handing a push's outputs on; outputs agree with those
        of a stream never prepared to float rounding (well inside the stream
        contract). Cheap when there is nothing new to prepare.
        """
        self._engine.prepare()

    def flush(self) -> StreamOutput:
        """End the stream: the zero padding of the end gives the last positions and windows."""
        return self._core.push(np.zeros((self.in_channels, 0)), None, True)

    def reset(self) -> None:
        """Start over as a new stream."""
        self._core.reset()

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
            "next_window": self._core.next_window,
            "sums": [s.state() for s in self._tracked],
        }

    @classmethod
    def restore(cls, model, snapshot: dict) -> Stream:
        """A stream over `model` that continues exactly where `snapshot` was taken.

        Snapshots come back from disk or the network: anything that is not a
        snapshot of this model, in whole and with finite state, raises
        StreamStateError (a ValueError) and restores nothing.
        """
        return cls._restore_checked(model, snapshot)

    @classmethod
    def _restore_checked(cls, model, snapshot: dict, into: Stream | None = None) -> Stream:
        """restore(), or, with `into`, the same onto a stream made with the snapshot's options (a group's)."""
        try:
            return cls._restore(model, snapshot, into)
        except StreamStateError:
            raise
        except (KeyError, TypeError, ValueError, OverflowError, IndexError, AttributeError) as exc:
            # a field of the wrong kind that the checks below let through to numpy or the engine
            raise StreamStateError(f"not a valid stream snapshot: {type(exc).__name__}: {exc}") from None

    @classmethod
    def _restore(cls, model, snapshot: dict, into: Stream | None) -> Stream:
        if not isinstance(snapshot, dict) or snapshot.get("format") != SNAPSHOT_FORMAT:
            raise StreamStateError("not a stream snapshot")
        if snapshot.get("version") != SNAPSHOT_VERSION:
            raise StreamStateError(f"unsupported stream snapshot version {snapshot.get('version')!r}")
        missing = sorted(SNAPSHOT_KEYS - set(snapshot))
        if missing:
            raise StreamStateError(f"stream snapshot lacks {', '.join(missing)}")
        window, hop, pushed, next_window = (_count(snapshot, key) for key in ("window", "hop", "pushed", "next_window"))
        if not isinstance(snapshot["normalize"], bool):
            raise StreamStateError(f"stream snapshot normalize is {snapshot['normalize']!r}, not a bool")
        if into is not None:
            if (into.window, into.hop, into.normalize) != (window, hop, snapshot["normalize"]):
                raise StreamStateError("stream snapshot options differ from the other snapshots' of the group")
            stream = into
        else:
            try:
                stream = cls(model, window, hop, snapshot["normalize"])
            except ValueError as exc:
                raise StreamStateError(f"stream snapshot options do not fit this model: {exc}") from None
        if not isinstance(snapshot["engine"], bytes):
            raise StreamStateError("stream snapshot engine state is not bytes")
        stream._engine.load_state(snapshot["engine"])
        next_start = next_window * stream.hop
        if stream._engine.pushed != pushed or not 0 <= next_start <= pushed + stream.hop:
            raise StreamStateError("stream snapshot is inconsistent (engine state and windows disagree)")
        if stream._normalizer is not None:
            state = snapshot["normalizer"]
            if not isinstance(state, dict) or set(state) != set(stream._normalizer.get_state()):
                raise StreamStateError("stream snapshot normaliser state is not the normaliser's")
            state = {key: _finite_array(value, f"normaliser state {key}") for key, value in state.items()}
            if (state["scale"] < 0).any() or (state["count"] < 0).any():
                raise StreamStateError("stream snapshot normaliser state has a negative scale or count")
            try:
                stream._normalizer.set_state(state)
            except ValueError as exc:
                raise StreamStateError(f"stream snapshot {exc}") from None
        targets = stream._tracked
        sums = snapshot["sums"]
        if not isinstance(sums, (list, tuple)) or len(sums) != len(targets):
            raise StreamStateError("stream snapshot has the wrong number of levels")
        restored = []
        for level, (target, item) in enumerate(zip(targets, sums)):
            if not isinstance(item, (list, tuple)) or len(item) != 2:
                raise StreamStateError(f"stream snapshot running sums {level} are not a (positions, sums) pair")
            values = _finite_array(item[1], f"running sums {level}")
            if values.ndim != 2 or values.shape[0] != target.channels or values.shape[1] < 1:
                raise StreamStateError("stream snapshot running sums have the wrong shape")
            emitted = stream._engine.emitted(level) if level < len(stream.strides) else pushed  # the last: lost
            positions = _positions(item[0], values)
            if positions[-1] != emitted:
                raise StreamStateError("stream snapshot running sums do not end where the engine is")
            try:
                target.check(positions, values, next_window)
            except ValueError as exc:
                raise StreamStateError(f"stream snapshot {exc} (level {level})") from None
            restored.append((positions, values))
        for target, (positions, values) in zip(targets, restored):
            target.set(positions, values, next_window)
        stream._core.next_window = next_window
        return stream


class Streams:
    """n independent streams of one model pushed together; create with `Model.streams(n, ...)`.

    Every push gives each stream as many samples, and each convolution of
    the encoder then runs once over all the streams' new positions, so its
    weights are read once per push for all of them instead of once per
    stream: a short push of one stream is bound by those reads. `streams[i]`
    is stream i, a `Stream` with everything but push and prepare; its
    outputs are those of its own `Model.stream(...)` pushed the same samples
    (never prepared), bit for bit. See docs/stream-mode.md.
    """

    def __init__(self, model, n: int, window: int | float | str | None = None,
                 hop: int | float | str | None = None, normalize: bool = True):
        self._group = StreamGroup(model, n)
        self.streams = tuple(Stream(model, window, hop, normalize, self._group.engine(i)) for i in range(n))
        self._cores = [stream._core for stream in self.streams]

    def __len__(self) -> int:
        return len(self.streams)

    def __getitem__(self, i: int) -> Stream:
        return self.streams[i]

    def push(self, samples, masks=None) -> list[StreamOutput]:
        """Feed every stream as many samples: `samples` (n, C, m) or n arrays (C, m) (or (n, m) / (m,) for
        one channel); `masks` likewise, True = lost, or None. Returns stream i's StreamOutput at i."""
        return self._group.push(self._cores, samples, masks)

    def flush(self) -> list[StreamOutput]:
        """End every stream (see Stream.flush)."""
        channels = self.streams[0].in_channels
        return self._group.push(self._cores, np.zeros((len(self), channels, 0)), None, True)

    def reset(self) -> None:
        """Start every stream over."""
        for stream in self.streams:
            stream.reset()

    def snapshot(self) -> list[dict]:
        """Every stream's `Stream.snapshot()`, for `Model.streams_from`."""
        return [stream.snapshot() for stream in self.streams]

    @classmethod
    def restore(cls, model, snapshots: list[dict]) -> Streams:
        """A group that continues where `snapshots` (one per stream, of streams in step) were taken;
        StreamStateError for anything else."""
        if not isinstance(snapshots, (list, tuple)) or not snapshots or not isinstance(snapshots[0], dict):
            raise StreamStateError("not a list of stream snapshots")
        first = snapshots[0]
        try:
            streams = cls(model, len(snapshots), first.get("window"), first.get("hop"), bool(first.get("normalize")))
        except (ValueError, TypeError, OptionError) as exc:
            raise StreamStateError(f"stream snapshot options do not fit this model: {exc}") from None
        for stream, snapshot in zip(streams.streams, snapshots):
            Stream._restore_checked(model, snapshot, stream)
        if len({stream.pushed for stream in streams.streams}) != 1:
            raise StreamStateError("stream snapshots are not in step: a group's streams have pushed as many samples")
        return streams


SNAPSHOT_KEYS = {"format", "version", "window", "hop", "normalize", "pushed", "engine", "normalizer", "next_window",
                 "sums"}


def _count(snapshot: dict, key: str) -> int:
    """A snapshot's whole-number field, 0 .. MAX_COUNT."""
    value = snapshot[key]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not 0 <= value <= MAX_COUNT:
        raise StreamStateError(f"stream snapshot {key} is {value!r}, not a count")
    return int(value)


def _positions(value, sums: np.ndarray) -> np.ndarray:
    """A snapshot's running-sum positions: increasing counts, one per column of `sums`."""
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "iu" or value.shape != sums.shape[1:]:
        raise StreamStateError("stream snapshot running sums' positions are not one count per column")
    if (value < 0).any() or (value > MAX_COUNT).any() or (np.diff(value) <= 0).any():
        raise StreamStateError("stream snapshot running sums' positions are not increasing counts")
    return value.astype(np.int64)


def _finite_array(value, what: str) -> np.ndarray:
    """value as a float64 array (bools as 0 / 1) with no NaN or Inf."""
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
        raise StreamStateError(f"stream snapshot {what} is not a numeric array")
    a = value.astype(np.float64)
    if not np.isfinite(a).all():
        raise StreamStateError(f"stream snapshot {what} holds NaN or Inf")
    return a


def normalize_for(model, x, mask=None) -> np.ndarray:
    """The model's normaliser applied to a whole recording `(C, N)`, as stream mode sees it."""
    config = model.config
    return normalize_recording(x, model.metadata["normalizer"], float(config["fs"]), mask)
