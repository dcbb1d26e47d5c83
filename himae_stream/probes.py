"""Probe heads: what a record predicts from a window's per-position encoder activations.

A model file may carry a `probes` list in its metadata. Every head reads the
activations of a window: per level l, the positions p whose input sample
2^(l+1)·p lies in the window (`positions`), as the stream engine emits them.
Kinds:

- `spectral` (heart rate): per level, the power spectrum of each channel's
  activations over the window's positions (or of their projections on the
  level's leading principal directions, `basis`), summed and scaled to unit
  power in the band; the levels' spectra are summed with `weights`, and
  the strongest peak in `band_hz`, refined by a parabola through its bins, is
  the rate (BPM). A frequency read-out of the time axis: nothing is regressed.
- `ridge` (a value), `logistic` (classes, softmax) and `probability` (one
  sigmoid output in [0, 1]): a linear map of standardised features pooled over
  the positions of `levels` (`pool`: `mean` and/or `std` over positions, one
  value per channel), then the spectral purity of each of `purity_levels` (the
  share of the level's band power within 0.15 Hz of its peak; with
  `"purity_mode": "combined"`, one value: the purity of the levels' summed unit
  spectra, as a spectral head sums them). A head written with one `level` and
  no `pool` reads the mean of that level.

A head with `"default": false` is kept in the file but left out of records
unless asked for (`headplan.Heads(..., everything=True)`): on data it never saw,
it lost to a classical baseline, or did no better than a coin on some data set
(the model card says which and by how much).
A head with `"withheld_below"` shows no value (null) in a window where another
head's probability falls below a bound (`gates`): the heart rate where the
quality head doubts the window supports one.
Training fits the heads (`himae probe`); `himae_stream.headplan` is the one
place that applies them (compiled, a burst of windows per call), so the
runtime and the probe report predict the same for the same windows.
"""

from __future__ import annotations

import math

import numpy as np

from himae_stream._core import add_positions, peak_bins, sigmoid, softmax, spectrum_purities, window_columns

KINDS = ("ridge", "logistic", "probability", "spectral")
POOLS = ("mean", "std")
HR_BAND_HZ = (0.7, 3.5)
#: zero padding of the spectra: bins of 1/(PAD · window length) Hz, refined by the parabola
PAD = 2
PURITY_HALF_WIDTH_HZ = 0.15


def positions(level: int, start: int, end: int, length: int) -> slice:
    """Level-`level` positions whose input sample 2^(level+1)·p lies in [start, end), of `length` held."""
    step = 2 ** (level + 1)
    lo = -(-start // step)
    hi = -(-end // step)
    return slice(min(max(lo, 0), length), min(max(hi, 0), length))


# ------------------------------------------------------------------ spectra


def level_power(acts: np.ndarray, level: int, fs: float, span: int, pad: int = PAD,
                basis: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Power spectrum of one level's activations `(C, n)` over a window of `span` input samples,
    summed over channels (or over the rows of `basis @ acts`): `(power over bins 0 … , bin width Hz)`.

    Each channel's mean is removed and a Hann taper applied; the transform is
    zero-padded to `pad` times the window's positions, so every level of one
    window shares the bin width fs / (pad · span). A `basis` `(m, C)` (the
    level's leading principal directions) makes a window cost m transforms, not C.
    """
    a, stride, size = _padded(acts, level, span, pad)
    n = a.shape[1]
    if n < 2:
        return np.zeros(size // 2 + 1), fs / stride / size
    x = a if basis is None else basis.astype(a.dtype, copy=False) @ a  # project first: fewer rows to work on
    x = x - x.mean(axis=1, keepdims=True)  # the projection of the centred channels
    spec = np.fft.rfft(x * _hann(n, x.dtype), size, axis=1)
    return (spec.real**2 + spec.imag**2).sum(axis=0, dtype=np.float64), fs / stride / size


_HANN: dict = {}


def _hann(n: int, dtype=np.float64) -> np.ndarray:
    w = _HANN.get((n, dtype))
    if w is None:
        w = _HANN[(n, dtype)] = np.hanning(n).astype(dtype)
    return w


_DFT: dict = {}


def _band_dft(n: int, size: int, lo: int, bins: int, dtype) -> np.ndarray:
    """`(n, 2·bins)`: centring, Hann taper and the real and imaginary parts of a `size`-point DFT at
    bins lo … lo + bins − 1, as one matrix (bins past the Nyquist rate are zero columns)."""
    key = (n, size, lo, bins, np.dtype(dtype).str)
    m = _DFT.get(key)
    if m is None:
        k = lo + np.arange(bins)
        angle = 2 * np.pi * np.outer(np.arange(n), k) / size
        m = np.hanning(n)[:, None] * np.hstack([np.cos(angle), np.sin(angle)])
        m -= m.mean(axis=0)  # (I − 11ᵀ/n)·diag(hann)·F: the window's mean removed first
        m[:, np.concatenate([k, k]) > size // 2] = 0.0
        m = _DFT[key] = np.ascontiguousarray(m, dtype=dtype)
    return m


def _padded(acts, level: int, span: int, pad: int) -> tuple[np.ndarray, int, int]:
    """A level's activations as float32/64, its input stride, and the zero-padded transform length."""
    a = np.asarray(acts)
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    stride = 2 ** (level + 1)
    return a, stride, max(a.shape[-1], int(round(pad * span / stride)))


def band_spectrum(power: np.ndarray, df: float, band, bins: int | None = None) -> np.ndarray:
    """The bins of `power` from band[0] up (`bins` of them, default up to band[1]), zero beyond the
    level's Nyquist rate, scaled to unit sum (a level without power in the band gives zeros)."""
    lo = int(math.ceil(band[0] / df - 1e-9))
    n = int(math.floor(band[1] / df + 1e-9)) - lo + 1 if bins is None else bins
    out = np.zeros(n)
    got = power[lo : lo + n]
    out[: got.size] = got
    total = out.sum()
    return out / total if total > 0 else out


def peak_rate(spectrum: np.ndarray, df: float, band) -> float:
    """Frequency (Hz) of the strongest bin of a band spectrum starting at band[0], refined by a parabola."""
    return float(peak_rates(np.asarray(spectrum)[None], df, band)[0])


def peak_rates(spectra: np.ndarray, df: float, band) -> np.ndarray:
    """`peak_rate` of each row of `spectra` `(rows, bins)`; NaN for a row without power."""
    spectra = np.ascontiguousarray(np.atleast_2d(spectra), dtype=np.float64)
    lo = math.ceil(band[0] / df - 1e-9)
    return (lo + peak_bins(spectra)) * df


def purity(power: np.ndarray, df: float, band=HR_BAND_HZ) -> float:
    """Share of a spectrum's power in `band` that lies within 0.15 Hz of its strongest bin there."""
    return band_purity(band_spectrum(power, df, band), df)


def band_purity(s: np.ndarray, df: float) -> float:
    """`purity` of a band spectrum (bins of the band only)."""
    return float(band_purities(np.asarray(s)[None], df)[0])


def band_purities(s: np.ndarray, df: float) -> np.ndarray:
    """`band_purity` of each row of `s` `(rows, bins)`; 0 for a row without power."""
    s = np.ascontiguousarray(np.atleast_2d(s), dtype=np.float64)
    half = max(1, int(round(PURITY_HALF_WIDTH_HZ / df)))
    return spectrum_purities(s, half)


def bases(head: dict) -> list:
    """Per spectral level of a head (`levels` of a spectral head, `purity_levels` of a linear one),
    its projection `(m, C_l)` as an array, or None (every channel)."""
    given = head.get("basis") or [None] * len(spectral_levels(head))
    return [None if b is None else np.asarray(b, dtype=np.float64) for b in given]


def spectral_levels(head: dict) -> list[int]:
    return list(head["levels"]) if head.get("kind") == "spectral" else list(head.get("purity_levels") or [])


# ----------------------------------------------------------------- features


def feature_levels(head: dict) -> list[int]:
    return list(head["levels"]) if "levels" in head else [head["level"]] if "level" in head else []


def feature_pool(head: dict) -> list[str]:
    return list(head.get("pool") or ["mean"])


def purity_levels(head: dict) -> list[int]:
    return list(head.get("purity_levels") or [])


def feature_size(head: dict, channels: list[int]) -> int:
    pools = feature_pool(head) if "levels" in head or "level" in head else []
    spectral = purity_levels(head)
    return (sum(len(pools) * channels[l] for l in feature_levels(head))
            + (min(len(spectral), 1) if head.get("purity_mode") == "combined" else len(spectral)))


# ------------------------------------------------------------------ checks


def validate(head: dict, channels: list[int]) -> dict:
    """Check a head against the model's per-level channels; raise ValueError naming the problem."""
    name = head.get("name") if isinstance(head, dict) else None
    if not isinstance(name, str) or not name:
        raise ValueError("probe head without a name")
    kind = head.get("kind")
    if kind not in KINDS:
        raise ValueError(f"probe {name!r}: kind must be one of {KINDS}, got {kind!r}")
    levels = head.get("levels", [head.get("level")])
    if kind != "spectral" and levels == [] and head.get("purity_levels"):
        levels = head["purity_levels"]
    if not isinstance(levels, list) or not levels or not all(
            isinstance(l, int) and 0 <= l < len(channels) for l in levels):
        raise ValueError(f"probe {name!r}: level(s) {levels!r} not levels of this model (0 … {len(channels) - 1})")
    spectral = spectral_levels(head)
    if not all(isinstance(l, int) and 0 <= l < len(channels) for l in spectral):
        raise ValueError(f"probe {name!r}: purity_levels {spectral!r} not levels of this model")
    if head.get("basis") is not None:
        basis = head["basis"]
        if not isinstance(basis, list) or len(basis) != len(spectral):
            raise ValueError(f"probe {name!r}: basis needs one matrix (or null) per spectral level")
        for level, b in zip(spectral, basis):
            if b is None:
                continue
            b = np.asarray(b, dtype=np.float64)
            if b.ndim != 2 or b.shape[1] != channels[level] or not 1 <= b.shape[0] <= channels[level]:
                raise ValueError(f"probe {name!r}: basis of level {level} has shape {list(b.shape)}, "
                                 f"needs [m, {channels[level]}]")
            if not np.isfinite(b).all():
                raise ValueError(f"probe {name!r}: basis contains NaN or Inf")
    if kind == "spectral":
        weights = np.asarray(head.get("weights", []), dtype=np.float64)
        band = np.asarray(head.get("band_hz", HR_BAND_HZ), dtype=np.float64)
        if weights.shape != (len(levels),) or not np.isfinite(weights).all() or (weights < 0).any():
            raise ValueError(f"probe {name!r}: weights need one non-negative number per level")
        if band.shape != (2,) or not 0 < band[0] < band[1] or not np.isfinite(band).all():
            raise ValueError(f"probe {name!r}: band_hz must be [low, high] Hz with 0 < low < high")
        return head
    bad = set(feature_pool(head)) - set(POOLS)
    if bad:
        raise ValueError(f"probe {name!r}: unknown pool(s) {sorted(bad)} (known: {', '.join(POOLS)})")
    dim = feature_size(head, channels)
    outputs = len(head.get("classes") or []) if kind == "logistic" else 1
    if kind == "logistic" and outputs < 2:
        raise ValueError(f"probe {name!r}: a logistic head needs at least two classes")
    shapes = {"mean": (dim,), "std": (dim,), "weights": (outputs, dim), "bias": (outputs,)}
    for key, shape in shapes.items():
        value = np.asarray(head.get(key, []), dtype=np.float64)
        if value.shape != shape:
            raise ValueError(f"probe {name!r}: {key} has shape {list(value.shape)}, its features need {list(shape)}")
        if not np.isfinite(value).all():
            raise ValueError(f"probe {name!r}: {key} contains NaN or Inf")
    if (np.asarray(head["std"]) <= 0).any():
        raise ValueError(f"probe {name!r}: std must be positive")
    return head


def gates(shown: list[dict], heads: list[dict]) -> dict[str, tuple[str, float]]:
    """{head name: (gating head name, least probability)} of the `shown` heads that carry
    `"withheld_below": {"head": NAME, "probability": P}`: such a head's value is withheld (null)
    in any window where the probability head NAME of the same file (`heads`) gives less than P,
    e.g. a heart rate where the window's PPG is unlikely to support one (a sensor off the skin).
    ValueError naming the head when the gate is not a probability head of the file."""
    kinds = {h["name"]: h["kind"] for h in heads}
    out = {}
    for head in shown:
        gate = head.get("withheld_below")
        if gate is None:
            continue
        name, least = (gate.get("head"), gate.get("probability")) if isinstance(gate, dict) else (None, None)
        if kinds.get(name) != "probability" or not isinstance(least, (int, float)) or not 0 <= least <= 1:
            raise ValueError(f"probe {head['name']!r}: withheld_below needs a probability head of this model "
                             f"and a probability in [0, 1], got {gate!r}")
        out[head["name"]] = (name, float(least))
    return out


def is_default(head: dict) -> bool:
    """Whether records show this head unless asked for every head."""
    return bool(head.get("default", True))


# ------------------------------------------------------------------ linear maps


def fold(head: dict) -> tuple[np.ndarray, np.ndarray]:
    """A linear head as one affine map of its raw features: weights `(dim, outputs)`, bias `(outputs,)`."""
    w = np.asarray(head["weights"], dtype=np.float64) / np.asarray(head["std"], dtype=np.float64)
    b = np.asarray(head["bias"], dtype=np.float64) - w @ np.asarray(head["mean"], dtype=np.float64)
    return np.ascontiguousarray(w.T), b


def scores(head: dict, X) -> np.ndarray:
    """Raw linear outputs `(n, outputs)` for features `(n, dim)` or `(dim,)`."""
    w, b = fold(head)
    return np.atleast_2d(np.asarray(X, dtype=np.float64)) @ w + b


def predict(head: dict, X) -> np.ndarray:
    """A linear head's predictions for features `(n, dim)`: values, probabilities or class names."""
    s = scores(head, X)
    if head["kind"] == "ridge":
        return s[:, 0]
    if head["kind"] == "probability":
        return np.array([sigmoid(v) for v in s[:, 0]])
    return np.asarray(head["classes"], dtype=object)[np.argmax(s, axis=1)]


def probabilities(head: dict, X) -> np.ndarray:
    """Class probabilities `(n, classes)` of a logistic head."""
    return np.array([softmax(row) for row in scores(head, X)])


class Positions:
    """The latest per-position activations of every level, by absolute position (bounded).

    Fed the stream engine's per-push output (`StreamOutput.levels`); `window`
    gives the positions of [start, end) exactly as `positions` picks them
    offline. Keeps `keep` input samples' worth of positions per level plus one push.
    """

    def __init__(self, channels: list[int], keep: int):
        self.channels = list(channels)
        self.keep = [keep // 2 ** (l + 1) + 2 for l in range(len(channels))]
        self.base = [0] * len(channels)  # absolute position of column 0
        self.held = [0] * len(channels)
        self.buf = [np.zeros((c, 4 * k), np.float32) for c, k in zip(channels, self.keep)]

    def add(self, levels) -> None:
        """Append a push's new positions per level `(positions, activations (C_l, n))`."""
        add_positions(self.buf, self.base, self.held, self.keep, levels)

    def window(self, start: int, end: int) -> list[np.ndarray]:
        """Per level, views `(C_l, n_l)` of the positions of [start, end) (valid until the next `add`)."""
        return [buf[:, a:b] for buf, (a, b) in zip(self.buf, self.offsets(start, end))]

    def starts(self, spans: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        """`offsets` of many windows at once: each window's first column per level `(W, levels)`
        and its number of positions there."""
        return window_columns(spans, self.base, self.held)

    def offsets(self, start: int, end: int) -> list[tuple[int, int]]:
        """Per level, the columns [a, b) of its buffer that hold the positions of [start, end)."""
        first, count = self.starts([(start, end)])
        return [(a, a + n) for a, n in zip(first[0].tolist(), count[0].tolist())]
