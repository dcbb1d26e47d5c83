"""Input normalisers, written once and used by training and runtime alike.

`stream` is the stream-consistent normaliser: a causal Butterworth band-pass
(2nd-order high-pass then 2nd-order low-pass, biquads in transposed direct
form II, float64) followed by a running robust scale (mean absolute value,
count-averaged at first, then exponential with time constant `tau_s`) and a
clip. Its output at sample i depends only on samples <= i, so normalising a
recording in chunks of any size gives bit-identical numbers to normalising
it whole. That is what makes stream-mode embeddings equal whole-recording
ones. Lost (masked) or non-finite samples leave every state untouched and
come out as 0, exactly as masked patches enter the encoder in pretraining.

`minmax` is the paper code's per-window min-max to [-1, 1]; it depends on the
whole window, so it is only valid in window mode.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numba
import numpy as np

from himae_stream.numba_cache import use_user_cache

use_user_cache()  # before the cache=True functions below are decorated

STREAM_DEFAULTS = {
    "kind": "stream",
    "highpass_hz": 0.5,
    "lowpass_hz": 8.0,
    "tau_s": 5.0,
    "scale_k": 3.0,
    "clip": 1.0,
}
KINDS = ("stream", "minmax")
_EPS = 1e-12


def default_spec(kind: str = "stream") -> dict:
    """A complete normaliser description, as stored in model files."""
    if kind == "stream":
        return dict(STREAM_DEFAULTS)
    if kind == "minmax":
        return {"kind": "minmax"}
    raise ValueError(f"unknown normaliser kind {kind!r} (expected one of {', '.join(KINDS)})")


def validate_spec(spec: dict) -> dict:
    """Return `spec` completed with defaults; raise ValueError naming a bad field."""
    if not isinstance(spec, dict) or spec.get("kind") not in KINDS:
        raise ValueError(f"normaliser must be an object with kind in {KINDS}, got {spec!r}")
    full = {**default_spec(spec["kind"]), **spec}
    if full["kind"] == "stream":
        for key in ("highpass_hz", "lowpass_hz", "tau_s", "scale_k", "clip"):
            full[key] = _positive_float(full[key], key)
        if full["highpass_hz"] >= full["lowpass_hz"]:
            raise ValueError("normaliser highpass_hz must be below lowpass_hz")
    return full


def _positive_float(value, key: str) -> float:
    """A stream field as the float the filters use (and the C loader checks: a JSON number read as a double)."""
    try:
        number = float(value) if isinstance(value, (int, float)) else math.nan
    except OverflowError:  # an integer past the largest double
        number = math.inf
    if not math.isfinite(number) or number <= 0:
        shown = repr(value) if not isinstance(value, int) or value.bit_length() <= 64 else f"an integer of {value.bit_length()} bits"
        raise ValueError(f"normaliser field {key} must be a positive number, got {shown}")
    return number


def butter2_sos(fs: float, highpass_hz: float, lowpass_hz: float) -> np.ndarray:
    """Second-order Butterworth high-pass and low-pass sections `(2, 5)`: b0 b1 b2 a1 a2.

    Bilinear transform with pre-warping, the same design as
    `scipy.signal.butter(2, f, btype, fs=fs)`; the low-pass corner is kept
    below 0.45·fs so low-rate models (25 Hz) stay valid.
    """
    lowpass_hz = min(lowpass_hz, 0.45 * fs)
    rows = []
    for f, high in ((highpass_hz, True), (lowpass_hz, False)):
        w = math.tan(math.pi * f / fs)
        norm = 1.0 / (1.0 + math.sqrt(2.0) * w + w * w)
        a1 = 2.0 * (w * w - 1.0) * norm
        a2 = (1.0 - math.sqrt(2.0) * w + w * w) * norm
        if high:
            b = (norm, -2.0 * norm, norm)
        else:
            b = (w * w * norm, 2.0 * w * w * norm, w * w * norm)
        rows.append((*b, a1, a2))
    return np.array(rows, dtype=np.float64)


@numba.njit(cache=True, nogil=True)
def _stream_kernel(x, lost, sos, z, started, scale, count, alpha, k, clip, out):
    """Normalise x (C, n) into out; lost is (C, n), (1, n) shared by every channel, or (0, n): none lost."""
    n_ch, n = x.shape
    n_sec = sos.shape[0]
    any_lost, shared = lost.shape[0] > 0, lost.shape[0] == 1
    for c in range(n_ch):
        for i in range(n):
            v = x[c, i]
            if (any_lost and lost[0 if shared else c, i]) or not np.isfinite(v):
                out[c, i] = 0.0
                continue
            if not started[c]:
                # Start every section in its steady state for a constant input
                # equal to the first sample, so a DC offset causes no transient.
                u = v
                for s in range(n_sec):
                    b0, b1, b2, a1, a2 = sos[s, 0], sos[s, 1], sos[s, 2], sos[s, 3], sos[s, 4]
                    y = u * (b0 + b1 + b2) / (1.0 + a1 + a2)
                    z[c, s, 0] = y - b0 * u
                    z[c, s, 1] = b2 * u - a2 * y
                    u = y
                started[c] = True
            for s in range(n_sec):
                b0, b1, b2, a1, a2 = sos[s, 0], sos[s, 1], sos[s, 2], sos[s, 3], sos[s, 4]
                y = b0 * v + z[c, s, 0]
                z[c, s, 0] = b1 * v - a1 * y + z[c, s, 1]
                z[c, s, 1] = b2 * v - a2 * y
                v = y
            count[c] += 1.0
            a = max(1.0 / count[c], alpha)
            scale[c] += a * (abs(v) - scale[c])
            o = v / (k * scale[c] + 1e-12)
            if o > clip:
                o = clip
            elif o < -clip:
                o = -clip
            out[c, i] = o


def _lost_mask(mask, shape) -> np.ndarray | None:
    """mask (True = lost) as a bool array shaped like the samples or their last axis; None if none."""
    if mask is None:
        return None
    mask = np.asarray(mask, dtype=np.bool_)
    if mask.shape not in (shape, shape[-1:]):
        raise ValueError(f"mask shape {mask.shape} does not match samples {shape} (or ({shape[-1]},))")
    return mask


_ENTRY_SIGNATURE = numba.types.void(
    *(numba.types.CPointer(t) for t in (numba.float64, numba.boolean)), numba.int64,  # x, lost, lost rows
    numba.types.CPointer(numba.float64), numba.int64,  # sos, sections
    *(numba.types.CPointer(t) for t in (numba.float64, numba.boolean, numba.float64, numba.float64)),  # state
    numba.float64, numba.float64, numba.float64,  # alpha, k, clip
    numba.types.CPointer(numba.float32), numba.int64, numba.int64,  # out, channels, n
)


@functools.cache
def stream_kernel_entry() -> numba.core.ccallback.CFunc:
    """`_stream_kernel` behind a plain C function pointer (`.address`), for Stream's typed push.

    A chunk of a live stream is a few dozen samples, for which numba's
    dispatch of eleven arrays costs more than the filtering; called through
    this pointer it costs a C call. The arguments are the kernel's, as
    C-contiguous buffers (x, lost: (lost rows, n), sos: (sections, 5),
    z: (channels, sections, 2), started, scale, count: (channels,),
    out: (channels, n)). Compiled, or loaded from numba's cache, on first use:
    importing the package stays cheap.
    """

    @numba.cfunc(_ENTRY_SIGNATURE, cache=True, nogil=True)
    def entry(x, lost, lost_rows, sos, sections, z, started, scale, count, alpha, k, clip, out, channels, n):
        _stream_kernel(
            numba.carray(x, (channels, n)), numba.carray(lost, (lost_rows, n)), numba.carray(sos, (sections, 5)),
            numba.carray(z, (channels, sections, 2)), numba.carray(started, (channels,)),
            numba.carray(scale, (channels,)), numba.carray(count, (channels,)), alpha, k, clip,
            numba.carray(out, (channels, n)),
        )

    return entry


@dataclass
class StreamNormalizer:
    """Causal, chunk-consistent normaliser state for `channels` channels at `fs` Hz."""

    spec: dict
    fs: float
    channels: int

    def __post_init__(self):
        self.spec = validate_spec(self.spec)
        if self.spec["kind"] != "stream":
            raise ValueError("StreamNormalizer needs a normaliser of kind 'stream'")
        self.sos = butter2_sos(self.fs, self.spec["highpass_hz"], self.spec["lowpass_hz"])
        self.alpha = 1.0 - math.exp(-1.0 / (self.spec["tau_s"] * self.fs))
        self.reset()

    def reset(self) -> None:
        self.z = np.zeros((self.channels, self.sos.shape[0], 2), dtype=np.float64)
        self.started = np.zeros(self.channels, dtype=np.bool_)
        self.scale = np.zeros(self.channels, dtype=np.float64)
        self.count = np.zeros(self.channels, dtype=np.float64)

    def process(self, x, mask=None) -> np.ndarray:
        """Normalise a chunk `(channels, n)`; masked or non-finite samples give 0."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] != self.channels:
            raise ValueError(f"expected samples of shape ({self.channels}, n), got {x.shape}")
        lost = _lost_mask(mask, x.shape)
        if lost is None:
            lost = np.zeros((0, x.shape[1]), np.bool_)
        elif lost.ndim == 1:
            lost = lost[None]
        out = np.empty(x.shape, dtype=np.float32)
        _stream_kernel(
            np.ascontiguousarray(x), np.ascontiguousarray(lost), self.sos, self.z,
            self.started, self.scale, self.count, self.alpha,
            float(self.spec["scale_k"]), float(self.spec["clip"]), out,
        )
        return out

    def get_state(self) -> dict:
        """A copy of the running state, for snapshots."""
        return {k: getattr(self, k).copy() for k in ("z", "started", "scale", "count")}

    def set_state(self, state: dict) -> None:
        for k in ("z", "started", "scale", "count"):
            value = np.asarray(state[k])
            if value.shape != getattr(self, k).shape:
                raise ValueError(f"normaliser state {k} has shape {value.shape}, expected {getattr(self, k).shape}")
            setattr(self, k, value.astype(getattr(self, k).dtype, copy=True))


def minmax(x, mask=None) -> np.ndarray:
    """Per-window, per-channel min-max to [-1, 1] of `(..., C, L)`; masked samples give 0."""
    x = np.asarray(x, dtype=np.float64)
    lost = _lost_mask(mask, x.shape)
    valid = np.isfinite(x) if lost is None else np.isfinite(x) & ~lost
    lo = np.where(valid, x, np.inf).min(axis=-1, keepdims=True)
    hi = np.where(valid, x, -np.inf).max(axis=-1, keepdims=True)
    span = np.where(hi > lo, hi - lo, 1.0)
    out = np.where(valid, 2.0 * (x - lo) / span - 1.0, 0.0)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def normalize(x, spec: dict, fs: float, mask=None) -> np.ndarray:
    """Normalise a whole recording `(C, N)` (stream kind) or window(s) `(..., C, L)` (minmax)."""
    spec = validate_spec(spec)
    if spec["kind"] == "minmax":
        return minmax(x, mask)
    x = np.asarray(x)
    return StreamNormalizer(spec, fs, x.shape[0]).process(x, mask)
