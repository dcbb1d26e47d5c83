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
unless asked for (`Heads(..., everything=True)`): it lost to a classical
baseline on data it never saw (the model card says which and by how much).
Training fits the heads (`himae probe`); this module is the one place that
applies them, so the runtime and the probe report predict the same for the
same windows.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from himae_stream.numba_cache import use_user_cache

use_user_cache()  # before the cache=True function below is decorated

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


def band_power(acts: np.ndarray, level: int, fs: float, span: int, pad: int = PAD, basis: np.ndarray | None = None,
               band=HR_BAND_HZ) -> tuple[np.ndarray, float]:
    """`level_power` over the bins of `band` only (from its first bin up): the same numbers, as two
    small matrix products, which is what a window costs live. Returns `(power, bin width Hz)`.
    `acts` `(..., C, n)`: windows stacked on leading axes give their spectra stacked the same way,
    in the same products (a burst of windows pays numpy's per-call cost once)."""
    a, stride, size = _padded(acts, level, span, pad)
    n = a.shape[-1]
    df = fs / stride / size
    lo = int(math.ceil(band[0] / df - 1e-9))
    bins = int(math.floor(band[1] / df + 1e-9)) - lo + 1
    if n < 2:
        return np.zeros(a.shape[:-2] + (bins,)), df
    rows = np.ascontiguousarray(a.reshape((-1,) + a.shape[-2:]))
    b = np.eye(a.shape[-2], dtype=a.dtype) if basis is None else np.ascontiguousarray(basis, dtype=a.dtype)
    power = np.empty((rows.shape[0], bins))
    _band_power(rows, b, _band_dft(n, size, lo, bins, a.dtype), power)
    return power.reshape(a.shape[:-2] + (bins,)), df


@numba.njit(cache=True, nogil=True, fastmath=True)
def _band_power(a, basis, dft, power):
    """Per window w: the band power `power[w]` of `basis @ a[w]` through the band's DFT matrix
    (real parts, then imaginary parts): two matrix products and the squares summed in float64,
    in one call for a burst of windows (numpy's per-call cost was most of what a window cost)."""
    bins = power.shape[1]
    for w in range(a.shape[0]):
        y = (basis @ a[w]) @ dft
        for j in range(bins):
            total = 0.0
            for r in range(y.shape[0]):
                re, im = np.float64(y[r, j]), np.float64(y[r, j + bins])
                total += re * re + im * im
            power[w, j] = total


def normalised(p: np.ndarray, bins: int | None = None) -> np.ndarray:
    """A band power spectrum (or spectra on the last axis) cut or zero-padded to `bins` and scaled
    to unit sum (zeros stay zeros)."""
    if bins is not None and p.shape[-1] != bins:
        p = np.concatenate([p[..., :bins], np.zeros(p.shape[:-1] + (max(bins - p.shape[-1], 0),))], axis=-1)
    total = p.sum(axis=-1, keepdims=True)
    return np.divide(p, total, out=np.zeros_like(p), where=total > 0)


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
    spectra = np.ascontiguousarray(spectra, dtype=np.float64)
    out = np.empty(spectra.shape[0])
    _peak_bins(spectra, out)
    return (math.ceil(band[0] / df - 1e-9) + out) * df


@numba.njit(cache=True, nogil=True)
def _peak_bins(s, out):
    """Per row: the index of the strongest bin (the first of equals) plus the vertex offset of the
    parabola through it and its neighbours (where they bend down); NaN for an all-zero row."""
    for r in range(s.shape[0]):
        k, any_power = 0, False
        for j in range(s.shape[1]):
            any_power = any_power or s[r, j] != 0
            if s[r, j] > s[r, k]:
                k = j
        if not any_power:
            out[r] = np.nan
            continue
        delta = 0.0
        if 0 < k < s.shape[1] - 1:
            a, b, c = s[r, k - 1], s[r, k], s[r, k + 1]
            den = a - 2 * b + c
            if den < 0:
                delta = 0.5 * (a - c) / den
        out[r] = k + delta


def purity(power: np.ndarray, df: float, band=HR_BAND_HZ) -> float:
    """Share of a spectrum's power in `band` that lies within 0.15 Hz of its strongest bin there."""
    return band_purity(band_spectrum(power, df, band), df)


def band_purity(s: np.ndarray, df: float) -> float:
    """`purity` of a band spectrum (bins of the band only)."""
    return float(band_purities(np.asarray(s)[None], df)[0])


def band_purities(s: np.ndarray, df: float) -> np.ndarray:
    """`band_purity` of each row of `s` `(rows, bins)`; 0 for a row without power."""
    s = np.ascontiguousarray(s, dtype=np.float64)
    out = np.empty(s.shape[0])
    _band_purities(s, max(1, int(round(PURITY_HALF_WIDTH_HZ / df))), out)
    return out


@numba.njit(cache=True, nogil=True)
def _band_purities(s, half, out):
    """Per row: the power within `half` bins of the strongest bin (the first of equals), over the
    row's total (compiled: as numpy calls this was a fifth of what a window's heads cost live)."""
    for r in range(s.shape[0]):
        k, total = 0, 0.0
        for j in range(s.shape[1]):
            total += s[r, j]
            if s[r, j] > s[r, k]:
                k = j
        near = 0.0
        for j in range(max(k - half, 0), min(k + half + 1, s.shape[1])):
            near += s[r, j]
        out[r] = near / total if total > 0 else 0.0


def bases(head: dict) -> list:
    """Per spectral level of a head (`levels` of a spectral head, `purity_levels` of a linear one),
    its projection `(m, C_l)` as an array, or None (every channel)."""
    given = head.get("basis") or [None] * len(spectral_levels(head))
    return [None if b is None else np.asarray(b, dtype=np.float64) for b in given]


def spectral_levels(head: dict) -> list[int]:
    return list(head["levels"]) if head.get("kind") == "spectral" else list(head.get("purity_levels") or [])


def spectral_rate(head: dict, acts: list, fs: float, span: int, basis: list | None = None,
                  shared: dict | None = None) -> float:
    """A spectral head's rate (BPM) for one window's per-level activations (`acts[l]`: `(C_l, n_l)`),
    or an array of rates for windows stacked on a leading axis (`acts[l]`: `(W, C_l, n_l)`)."""
    band = head.get("band_hz", HR_BAND_HZ)
    pad = int(head.get("pad", PAD))
    basis = bases(head) if basis is None else basis
    shared = {} if shared is None else shared
    total, df = None, None
    for level, weight, b in zip(head["levels"], head["weights"], basis):
        power, step = _power(shared, acts, level, fs, span, pad, b, band)
        if df is None:
            df = step
            total = weight * normalised(power)
        else:
            total += weight * normalised(power, total.shape[-1])
    rates = 60.0 * peak_rates(total.reshape(-1, total.shape[-1]), df, band)
    return float(rates[0]) if total.ndim == 1 else rates


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


def pooled(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation over positions of one level's activations `(..., C, n)`.

    One compiled pass per level (and per burst of stacked windows): a window's heads pool every
    level, and as numpy reductions that was about half of what they cost a window live."""
    a = np.asarray(a)
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    rows = a.reshape(-1, a.shape[-1])
    mean, std = np.empty(rows.shape[0]), np.empty(rows.shape[0])
    _pool(rows, mean, std)
    return mean.reshape(a.shape[:-1]), std.reshape(a.shape[:-1])


@numba.njit(cache=True, nogil=True, fastmath=True)
def _pool(a, mean, std):
    """Per row, in float64: the mean, and the root mean square of the row less its mean (sums in
    any order: vectorised)."""
    rows, n = a.shape
    count = max(n, 1)
    for c in range(rows):
        total = 0.0
        for i in range(n):
            total += a[c, i]
        m = total / count
        squares = 0.0
        for i in range(n):
            d = a[c, i] - m
            squares += d * d
        mean[c] = m
        std[c] = math.sqrt(squares / count)


def features(head: dict, acts: list, fs: float, span: int, basis: list | None = None,
             shared: dict | None = None) -> np.ndarray:
    """A linear head's feature vector for one window: per level of `levels`, the pools in order
    (`mean`, `std`), then the spectral purity of each of `purity_levels` (the power of the level's
    `basis` rows). `shared` keeps what several heads of one window read, so it is computed once.
    Windows stacked on a leading axis (`acts[l]`: `(W, C_l, n_l)`) give `(W, features)`."""
    basis = bases(head) if basis is None else basis
    shared = {} if shared is None else shared
    parts = []
    for level in feature_levels(head):
        if ("pooled", level) not in shared:
            shared[("pooled", level)] = pooled(acts[level])
        mean, std = shared[("pooled", level)]
        parts += [mean if pool == "mean" else std for pool in feature_pool(head)]
    if head.get("purity_mode") == "combined" and purity_levels(head):
        total, df = None, None
        for level, b in zip(purity_levels(head), basis):
            power, step = _power(shared, acts, level, fs, span, PAD, b, HR_BAND_HZ)
            total, df = ((normalised(power), step) if total is None
                         else (total + normalised(power, total.shape[-1]), df))
        parts.append(_purities(total, df))
        return np.concatenate(parts, axis=-1)
    for level, b in zip(purity_levels(head), basis):
        key = ("purity", level, id(b))
        if key not in shared:
            power, df = _power(shared, acts, level, fs, span, PAD, b, HR_BAND_HZ)
            shared[key] = _purities(power, df)
        parts.append(shared[key])
    return np.concatenate(parts, axis=-1)


def _purities(power: np.ndarray, df: float) -> np.ndarray:
    """`band_purity` as a feature: `(1,)` for one spectrum, `(W, 1)` for spectra stacked on rows."""
    return band_purities(np.atleast_2d(power), df).reshape(power.shape[:-1] + (1,))


def _power(shared: dict, acts, level, fs, span, pad, b, band):
    key = ("power", level, pad, id(b), tuple(band))
    if key not in shared:
        shared[key] = band_power(acts[level], level, fs, span, pad, b, band)
    return shared[key]


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


def _softmax(s: list[float]) -> list[float]:
    """Softmax of one window's class scores (a handful: plain floats beat numpy calls)."""
    top = max(s)
    e = [math.exp(v - top) for v in s]
    total = sum(e)
    return [v / total for v in e]


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))


def predict(head: dict, X) -> np.ndarray:
    """A linear head's predictions for features `(n, dim)`: values, probabilities or class names."""
    s = scores(head, X)
    if head["kind"] == "ridge":
        return s[:, 0]
    if head["kind"] == "probability":
        return np.array([_sigmoid(v) for v in s[:, 0]])
    return np.asarray(head["classes"], dtype=object)[np.argmax(s, axis=1)]


def probabilities(head: dict, X) -> np.ndarray:
    """Class probabilities `(n, classes)` of a logistic head."""
    return np.array([_softmax(row) for row in scores(head, X).tolist()])


def apply_one(head: dict, acts: list, fs: float, span: int) -> dict:
    """One head's output fields for one window (`acts[l]`: the window's level-l positions `(C_l, n_l)`)."""
    name = head["name"]
    if head["kind"] == "spectral":
        value = spectral_rate(head, acts, fs, span)
        return {name: value if math.isfinite(value) else None}
    s = scores(head, features(head, acts, fs, span))[0].tolist()
    if head["kind"] == "ridge":
        return {name: s[0] if math.isfinite(s[0]) else None}
    if head["kind"] == "probability":
        return {name: _sigmoid(s[0]) if math.isfinite(s[0]) else None}
    p = _softmax(s)
    classes = head["classes"]
    return {name: classes[max(range(len(p)), key=p.__getitem__)], name + "_p": dict(zip(classes, p))}


#: Windows stacked into one computation at most (bounds the copy: about 125 kB a window for himae-100).
GROUP = 16


class Heads:
    """A model's probe heads, ready to apply window after window.

    Heads flagged `"default": false` are left out unless `everything` is set.
    """

    def __init__(self, heads: list[dict], fs: float = 1.0, everything: bool = False):
        self.heads = [h for h in heads if everything or is_default(h)]
        self.fs = float(fs)
        self._folded = {id(h): fold(h) for h in self.heads if h["kind"] != "spectral"}
        # heads carrying equal bases share one array, so a window's spectra are computed once
        known: dict = {}
        self._bases = {}
        for h in self.heads:
            self._bases[id(h)] = [None if b is None else known.setdefault((b.shape, b.tobytes()), b.astype(np.float32))
                                  for b in bases(h)]

    def __iter__(self):
        return iter(self.heads)

    def __len__(self) -> int:
        return len(self.heads)

    def apply(self, windows, spans) -> list[dict]:
        """Every head's output for each window: `windows[i][l]` is window i's level-l activations
        `(C_l, n_l)`, `spans[i]` its length in input samples.

        A window gives `{name: value}` for ridge, probability and spectral heads
        and `{name: class}` plus `{name + "_p": {class: probability}}` for
        logistic heads, ready for a sink.
        """
        out: list[dict] = []
        i = 0
        while i < len(windows):  # windows of one span and shape (a burst, live) go through together
            j = i + 1
            while j < len(windows) and j - i < GROUP and spans[j] == spans[i] and all(
                    a.shape == b.shape for a, b in zip(windows[j], windows[i])):
                j += 1
            stacked = [np.stack([w[l] for w in windows[i:j]]) for l in range(len(windows[i]))]
            out += self._group(stacked, spans[i], j - i)
            i = j
        return out

    def _group(self, acts, span, count: int) -> list[dict]:
        """The outputs of `count` windows whose level-l activations are stacked in `acts[l]`."""
        out: list[dict] = [{} for _ in range(count)]
        shared: dict = {}
        for head in self.heads:
            basis, name = self._bases[id(head)], head["name"]
            if head["kind"] == "spectral":
                for record, value in zip(out, spectral_rate(head, acts, self.fs, span, basis, shared).tolist()):
                    record[name] = value if math.isfinite(value) else None
                continue
            w, b = self._folded[id(head)]
            for record, s in zip(out, (features(head, acts, self.fs, span, basis, shared) @ w + b).tolist()):
                if head["kind"] == "ridge":
                    record[name] = s[0] if math.isfinite(s[0]) else None
                elif head["kind"] == "probability":
                    record[name] = _sigmoid(s[0]) if math.isfinite(s[0]) else None
                else:
                    p = _softmax(s)
                    classes = head["classes"]
                    record[name] = classes[max(range(len(p)), key=p.__getitem__)]
                    record[name + "_p"] = dict(zip(classes, p))
        return out


class Positions:
    """The latest per-position activations of every level, by absolute position (bounded).

    Fed the stream engine's per-push output (`StreamOutput.levels`); `window`
    gives the positions of [start, end) exactly as `positions` picks them
    offline. Keeps `keep` input samples' worth of positions per level plus one push.
    """

    def __init__(self, channels: list[int], keep: int):
        self.keep = [keep // 2 ** (l + 1) + 2 for l in range(len(channels))]
        self.base = [0] * len(channels)  # absolute position of column 0
        self.held = [0] * len(channels)
        self.buf = [np.zeros((c, 4 * k), np.float32) for c, k in zip(channels, self.keep)]

    def add(self, levels) -> None:
        for l, (pos, acts) in enumerate(levels):
            n = pos.shape[0]
            if not n:
                continue
            buf, held = self.buf[l], self.held[l]
            if self.base[l] + held != int(pos[0]):
                raise ValueError(f"level {l}: positions jump from {self.base[l] + held} to {int(pos[0])}")
            if held + n > buf.shape[1]:
                keep = min(held, self.keep[l])
                if keep + n > buf.shape[1]:
                    grown = np.zeros((buf.shape[0], 2 * (keep + n)), np.float32)
                    grown[:, :keep] = buf[:, held - keep : held]
                    self.buf[l] = buf = grown
                else:
                    buf[:, :keep] = buf[:, held - keep : held]
                self.base[l] += held - keep
                held = keep
            buf[:, held : held + n] = acts
            self.held[l] = held + n

    def window(self, start: int, end: int) -> list[np.ndarray]:
        """Per level, views `(C_l, n_l)` of the positions of [start, end) (valid until the next `add`)."""
        out = []
        for l, buf in enumerate(self.buf):
            sl = positions(l, start, end, self.base[l] + self.held[l])
            a, b = max(sl.start - self.base[l], 0), max(sl.stop - self.base[l], 0)
            out.append(buf[:, a:b])
        return out
