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

from himae_stream._core import StreamCore, StreamEngine, StreamOutput, Window
from himae_stream.normalize import StreamNormalizer, normalize as normalize_recording
from himae_stream.numbers import OptionError

__all__ = ["Stream", "StreamOutput", "Window", "normalize_for", "to_samples"]

SNAPSHOT_FORMAT = "himae-stream-snapshot"
SNAPSHOT_VERSION = 1
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s|min|samples?)?\s*$")


#: Longest window, hop or duration in samples: what the engine's 32-bit counters hold (about
#: 248 days at 100 Hz); anything longer is a typo, refused before it reaches the engine.
MAX_SAMPLES = 2**31 - 1


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
            "sums": [(s.base, s.sums.copy()) for s in self._tracked],
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
        stream._core.next_window = int(snapshot["next_window"])
        targets = stream._tracked
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
