"""Gap imputation: fill lost samples of a recording with HiMAE's reconstruction.

HiMAE was pretrained to rebuild zeroed (masked) samples, so a gap in a live
stream is filled by running the window around it through the autoencoder
(`Model.reconstruct`) with the gap masked, exactly as in pretraining.

How a recording is covered (docs/imputation.md has the reasoning):
- Gaps are runs of samples lost on any channel. Neighbouring gaps spanning at
  most half a window together form one cluster; each cluster gets one window
  centred on it (clamped at the recording's ends), so every filled sample has
  at least a quarter window of context on each side where the recording
  allows. All such windows run as one batch.
- A gap longer than half a window is filled in parts of half a window, one
  window per part, moving away from the side that has real context; each part
  is conditioned on the parts filled before it. An `ImputationWarning` says so.
- A recording shorter than one window is padded at its end with masked
  samples to one full window (what the model sees for lost samples anyway)
  and all its gaps are filled from that one window.

Normalising: the `stream` normaliser runs over the recording with the lost
samples bridged by linear interpolation and its slow baseline (a zero-phase
1-s moving mean, applied twice) taken out, so what leaks through the
normaliser's 0.5 Hz high-pass from a wandering baseline does not reach the
model; the model sees the lost samples zeroed, as in pretraining.

Undoing the normalisation: for the `minmax` normaliser the inverse is exact
(affine per window). The `stream` normaliser has no inverse (band-pass,
running scale, clip), so per cluster and channel a least-squares fit of the
raw samples within a quarter window of the gap on a short non-causal FIR of
the normalised signal (its own sub-1-Hz part removed) gives the band and the
local scale, and a piecewise-linear baseline (knots every 0.5 s, a curvature
penalty) fitted jointly gives what the high-pass removed, carried smoothly
across the gap. The fit is applied to the model's fill, plus its residuals
at the samples bordering the gap fading into it within about 0.05 s.

How far to trust the fill is measured, not assumed: the gap's lost pattern is
cut into recorded signal on either side of it (probes) and filled the same
way, in the same batch. Where the model missed those samples, its fill is
shrunk towards the local level (a waveform of the right shape but uncertain
phase costs more than it gains), and the probes' errors of the model and of
a straight line, and how the two go together, set the final least-squares
blend with linear interpolation: near a gap's edges, where a line is nearly
exact, the line weighs more.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

#: The inverse FIR spans +-0.4 s of normalised signal in steps of 0.04 s, and a
#: ridge penalty per context sample keeps its taps stable on short contexts.
#: Chosen on TROIKA training subjects by fitting the true normalised signal
#: (docs/imputation.md).
FIR_SPAN_S = 0.4
FIR_STEP_S = 0.04
RIDGE = 0.001
#: Windows per `reconstruct` call.
BATCH = 32
#: The fit's residuals at the samples bordering a gap fade into it with this
#: time constant, so a fill meets the recorded signal without a step (chosen
#: on validation subjects of the training data, docs/imputation.md).
EDGE_TAU_S = 0.05
#: The baseline (what the normaliser's high-pass removed) is fitted around each gap jointly
#: with the FIR: piecewise linear with a knot every KNOT_S seconds and a curvature penalty
#: SMOOTH (per sample), which bridges the gap smoothly.
KNOT_S = 0.5
SMOOTH = 0.01
#: Before normalising, the recording less its zero-phase moving mean over this many seconds
#: (applied twice): the baseline wander the normaliser's high-pass lets through stays out.
DETREND_S = 1.0
#: HiMAE's fill error, as a fraction of the local variance of the signal's band (raw minus
#: baseline), for the blend with linear interpolation of a gap no probe could be placed beside
#: (a gap longer than half a window, a dense mask, a short recording full of gaps).
MODEL_ERROR = 0.5
#: A probe (the gap's lost pattern moved onto recorded signal to measure the model's error there)
#: needs this fraction of its length recorded on either side of it.
PROBE_MARGIN = 0.5
#: The local level a fill is shrunk towards: the mean of the recorded samples within this many
#: seconds of the gap.
LEVEL_S = 2.0
#: The correlation of the model's and the chord's errors that the blend uses is at most this. Near
#: 1 (probes often measure 0.95 and more: both estimates meet the recording at the gap's edges) and
#: with errors of similar size, the least-squares weight between the two is ill-determined: a small
#: change in the chord's expected error along the gap swings it from 0 to 1 within a sample or two,
#: and the fill jumps mid-gap between the model's waveform and the line. 0.8 bounds the swing and
#: scored as well or better than the uncapped blend on every device group (docs/imputation.md).
RHO_MAX = 0.8


class ImputationWarning(UserWarning):
    """A gap longer than half a window was filled part by part."""


def impute(signal, mask, model, *, fs: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fill the masked samples of `signal` with the model's reconstruction.

    signal: `(N,)` or `(C, N)` samples at the model's rate, in any units.
    mask: bool, True where a sample is lost; same shape as `signal`, or `(N,)`
    for all channels. Lost samples may hold anything (NaN included).
    fs: the signal's sampling rate, checked against the model's when given.
    Returns `(filled, imputed)`: a copy of `signal` with every masked sample
    replaced, in the signal's units (unmasked samples bit-identical), and the
    boolean mask of the samples that were imputed, both shaped like `signal`.
    """
    from himae_stream.normalize import validate_spec  # numba: imported on use, not with the package

    config = model.config
    window, channels = int(config["window"]), int(config["in_channels"])
    spec = validate_spec(config["normalizer"])
    x, lost = _checked(signal, mask, channels)
    if fs is not None and not math.isclose(float(fs), float(config["fs"]), rel_tol=1e-6):
        raise ValueError(f"signal is sampled at {fs} Hz but the model expects {config['fs']} Hz; resample it first")
    out_dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    filled = np.array(signal, dtype=out_dtype, copy=True)
    imputed = lost.reshape(filled.shape) if filled.ndim == 1 else lost.copy()
    if not lost.any():
        return filled, imputed

    n = x.shape[1]
    padded = max(n, window)
    raw = np.zeros((channels, padded), dtype=np.float64)
    raw[:, :n] = np.where(lost, 0.0, x)
    known = np.zeros((channels, padded), dtype=np.bool_)
    known[:, :n] = ~lost
    runner = _Runner(model, spec, float(config["fs"]), window, padded)

    gap = ~known[:, :n].all(axis=0)
    if n <= window:  # one (padded) window holds the whole recording
        runs = _runs(gap)
        clusters, long_gaps = [(runs[0][0], runs[-1][1])], []
    else:
        clusters, long_gaps = _clusters(gap, window)
    runner.fill(raw, known, [(s, e, _centred(s, e, window, padded)) for s, e in clusters], probe=True)
    for s, e in long_gaps:
        warnings.warn(
            f"gap of {e - s} samples at [{s}, {e}) is longer than half a window ({window // 2}); "
            "filled part by part, each part conditioned on the parts filled before it",
            ImputationWarning,
            stacklevel=2,
        )
        for part in _parts(s, e, window, padded):
            runner.fill(raw, known, [part])

    if spec["kind"] == "stream":
        _blend_with_linear(raw[:, :n], lost, runner.trust[:, :, :n], window // 4, float(config["fs"]))
    values = raw[:, :n][lost]
    if filled.ndim == 1:
        filled[lost[0]] = values
    else:
        filled[lost] = values
    return filled, imputed


def _checked(signal, mask, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """`(C, N)` samples and lost-mask, or ValueError naming what is wrong."""
    x = np.asarray(signal)
    if x.size == 0:
        raise ValueError("signal is empty")
    if x.ndim not in (1, 2) or not (np.issubdtype(x.dtype, np.number) and not np.iscomplexobj(x)):
        raise ValueError(f"signal must be real numbers of shape (N,) or (C, N), got {x.dtype} {x.shape}")
    x2 = x.reshape(1, -1) if x.ndim == 1 else x
    if x2.shape[0] != channels:
        raise ValueError(f"signal has {x2.shape[0]} channel(s), the model expects {channels}")
    m = np.asarray(mask)
    if m.dtype != np.bool_:
        raise ValueError(f"mask must be boolean (True = lost sample), got {m.dtype}")
    if m.shape == x.shape or m.shape == x2.shape[1:]:
        lost = np.broadcast_to(m.reshape(-1) if m.ndim == 1 else m, x2.shape).copy()
    else:
        raise ValueError(f"mask shape {m.shape} does not match signal shape {x.shape} (or ({x2.shape[1]},))")
    bad = ~lost & ~np.isfinite(x2)
    if bad.any():
        c, i = np.argwhere(bad)[0]
        raise ValueError(f"signal has a non-finite value at channel {c}, sample {i} that is not masked")
    for c in range(channels):
        if lost[c].all():
            raise ValueError(f"channel {c} has no unmasked samples: nothing to condition the fill on")
    return x2, lost


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """Half-open [start, end) runs of True."""
    edges = np.flatnonzero(np.diff(np.r_[0, flags.astype(np.int8), 0]))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def _clusters(gap: np.ndarray, window: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Group gap runs into clusters spanning <= window // 2; longer runs are returned apart."""
    half = window // 2
    clusters, long_gaps = [], []
    for s, e in _runs(gap):
        if e - s > half:
            long_gaps.append((s, e))
        elif clusters and e - clusters[-1][0] <= half:
            clusters[-1] = (clusters[-1][0], e)
        else:
            clusters.append((s, e))
    return clusters, long_gaps


def _centred(s: int, e: int, window: int, n: int) -> int:
    """Start of the window centred on [s, e), clamped to the recording."""
    return min(max((s + e) // 2 - window // 2, 0), n - window)


def _parts(s: int, e: int, window: int, n: int) -> list[tuple[int, int, int]]:
    """Half-window parts of a long gap as (start, end, window start), from the side with context."""
    half, quarter = window // 2, window // 4
    bounds = [(a, min(a + half, e)) for a in range(s, e, half)]
    if s == 0:  # context only on the right: fill right to left
        bounds = [(max(b - half, s), b) for b in range(e, s, -half)]
        return [(a, b, min(max(b + quarter - window, 0), n - window)) for a, b in bounds]
    return [(a, b, min(max(a - quarter, 0), n - window)) for a, b in bounds]


def _rounds(probes: list, window: int) -> list[list]:
    """Probes grouped so that no probe lies in the window of another of its group (each group is
    normalised with its probes lost, apart from the others'), in order."""
    def apart(p, q) -> bool:  # neither probe's span meets the other's window
        return (p[2] <= q[3] or p[1] >= q[3] + window) and (q[2] <= p[3] or q[1] >= p[3] + window)

    rounds: list[list] = []
    for p in sorted(probes, key=lambda p: p[1]):
        for r in rounds:
            if all(apart(p, q) for q in r):
                r.append(p)
                break
        else:
            rounds.append([p])
    return rounds


def _chord(row: np.ndarray, have: np.ndarray, s: int, e: int, reach: int, fs: float):
    """The straight line across the lost run [s, e) of `row` and its expected squared error at each
    sample, (line, e_line, C(0)), or None where a side has no recorded sample or too few are near.

    e_line(j) follows from the autocovariance C of the band (the recorded samples within `reach`
    of the run, less a piecewise-linear baseline): the chord p·x(s-1) + q·x(e) at the j-th of g
    samples, q = j / (g + 1), misses x by C(0)(1 + p² + q²) - 2p·C(j) - 2q·C(g+1-j) + 2pq·C(g+1).
    """
    n = len(row)
    if s == 0 or e == n:
        return None
    g = e - s
    a, b = max(s - reach, 0), min(e + reach, n)
    idx = np.flatnonzero(have[a:b]) + a
    if len(idx) < 8:
        return None
    base = _baseline_basis(idx, idx, fs)
    coef = _solve(base, row[idx], 0, 0.0)
    band = np.zeros(b - a)
    band[idx - a] = row[idx] - base @ coef
    cov = _autocovariance(band, have[a:b], g + 1)
    if cov[0] <= 0:
        return None
    j = np.arange(1, g + 1)
    q = j / (g + 1)
    p = 1.0 - q
    e_line = cov[0] * (1 + p * p + q * q) - 2 * p * cov[j] - 2 * q * cov[g + 1 - j] + 2 * p * q * cov[g + 1]
    return row[s - 1] + (row[e] - row[s - 1]) * q, np.maximum(e_line, 0.0), cov[0]


def _blend_with_linear(raw: np.ndarray, lost: np.ndarray, trust: np.ndarray, reach: int, fs: float) -> None:
    """Blend each filled gap, in place, with linear interpolation across it: the least-squares
    weighting of two estimates whose errors have variances e_model and e_line(j) and covariance
    c(j) = rho·sqrt(e_model·e_line(j)), rho at most RHO_MAX (so the weight varies smoothly).

    A straight line is nearly exact next to a gap's edges and worse inside (e_line(j) from
    `_chord`), while the model's error is about even. Each filled sample becomes
    w·line + (1 - w)·fill with w = (e_model - c) / (e_model + e_line - 2c), clipped to [0, 1].
    `trust` holds, per lost sample, what the gap's probes measured (`_Runner._trust`): e_model,
    the factor kappa by which the chord's actual error exceeded e_line there, and rho. A gap
    without probes (NaN) takes e_model = MODEL_ERROR · C(0), kappa = 1 and rho = 0 (independent
    errors: w = e_model / (e_model + e_line)). A gap with recorded samples on one side only is
    left as the model filled it.
    """
    for c in range(raw.shape[0]):
        have = ~lost[c]
        for s, e in _runs(lost[c]):
            chord = _chord(raw[c], have, s, e, reach, fs)
            if chord is None:
                continue
            line, e_line, c0 = chord
            e_model, kappa, rho = trust[:, c, s]
            if not np.isfinite(e_model):
                e_model, kappa, rho = MODEL_ERROR * c0, 1.0, 0.0
            e_line = kappa * e_line
            cross = min(rho, RHO_MAX) * np.sqrt(e_model * e_line)
            denom = e_model + e_line - 2 * cross
            w = np.clip(np.divide(e_model - cross, denom, out=np.ones_like(denom), where=denom > 0), 0.0, 1.0)
            raw[c, s:e] = w * line + (1.0 - w) * raw[c, s:e]


def _level(row: np.ndarray, have: np.ndarray, s: int, e: int, fs: float) -> float:
    """The mean of the recorded samples within LEVEL_S of [s, e): the fill that knows nothing of
    the waveform, which the model's fill is shrunk towards as far as its probes say it misses."""
    r = round(LEVEL_S * fs)
    a, b = max(s - r, 0), min(e + r, len(row))
    near = row[a:b][have[a:b]]
    return float(near.mean()) if len(near) else 0.0


def _baseline_basis(idx: np.ndarray, ctx: np.ndarray, fs: float) -> np.ndarray:
    """Piecewise-linear baseline: hat functions with knots every KNOT_S seconds over the span of
    the recorded samples `ctx`, held constant beyond it (a baseline must not extrapolate)."""
    if len(ctx) == 0:
        return np.ones((len(idx), 1))
    a, b = ctx[0], ctx[-1]
    k = max(1, int(np.ceil((b - a) / (KNOT_S * fs))))
    pos = (np.clip(idx, a, b) - a) / max(b - a, 1) * k
    i = np.minimum(pos.astype(np.int64), k - 1)
    f = pos - i
    out = np.zeros((len(idx), k + 1))
    out[np.arange(len(idx)), i] = 1.0 - f
    out[np.arange(len(idx)), i + 1] = f
    return out




def _lowpass(x: np.ndarray, fs: float, seconds: float = 1.0) -> np.ndarray:
    """Zero-phase moving mean over `seconds`, applied twice (a triangular kernel)."""
    w = max(1, round(seconds * fs))
    for _ in range(2):
        pad = np.pad(x, (w // 2, w - 1 - w // 2), mode="reflect")
        c = np.r_[0.0, np.cumsum(pad)]
        x = (c[w:] - c[:-w]) / w
    return x


def _highpass(u: np.ndarray, fs: float) -> np.ndarray:
    """u less its moving mean over one second (zero phase): what leaked through the normaliser's
    high-pass from a baseline below it, which the baseline columns fit instead."""
    w = max(1, round(fs))
    pad = np.pad(u, (w // 2, w - 1 - w // 2), mode="reflect")
    c = np.r_[0.0, np.cumsum(pad)]
    return u - (c[w:] - c[:-w]) / w


def _solve(design: np.ndarray, y: np.ndarray, n_taps: int, ridge: float) -> np.ndarray:
    """Least squares with a ridge on the first n_taps columns and a curvature penalty on the rest
    (second differences of the baseline's knot values), so the baseline bridges a gap smoothly."""
    n = len(y)
    gram = design.T @ design
    gram[np.arange(n_taps), np.arange(n_taps)] += ridge * n
    k = design.shape[1] - n_taps
    if k >= 3:
        d2 = np.diff(np.eye(k), 2, axis=0)
        gram[n_taps:, n_taps:] += SMOOTH * n * (d2.T @ d2)
    gram += 1e-12 * np.trace(gram) * np.eye(len(gram))
    return np.linalg.solve(gram, design.T @ y)


def _autocovariance(x: np.ndarray, have: np.ndarray, max_lag: int) -> np.ndarray:
    """Autocovariance of x at lags 0..max_lag over the pairs of recorded samples (0 where none)."""
    m = 1 << int(np.ceil(np.log2(2 * len(x))))
    fx, fh = np.fft.rfft(x * have, m), np.fft.rfft(have.astype(np.float64), m)
    num = np.fft.irfft(fx * np.conj(fx), m)[: max_lag + 1]
    pairs = np.fft.irfft(fh * np.conj(fh), m)[: max_lag + 1]
    out = np.zeros(max_lag + 1)
    ok = pairs > 0.5
    out[ok] = num[ok] / np.round(pairs[ok])
    return out


class _Runner:
    """Normalise windows, reconstruct them, map the fills back to raw units."""

    def __init__(self, model, spec: dict, fs: float, window: int, n: int):
        self.model, self.spec, self.fs, self.window = model, spec, fs, window
        #: what each gap's probes measured, per lost sample: e_model, kappa, rho (`_trust`); NaN: no probe
        self.trust = np.full((3, int(model.config["in_channels"]), n), np.nan)
        if spec["kind"] == "stream":
            step = max(1, round(FIR_STEP_S * fs))
            span = step * max(1, round(FIR_SPAN_S * fs / step))
            self.lags = np.arange(-span, span + 1, step)
            self.ridge = RIDGE
        else:  # min-max is affine: the plain least-squares fit inverts it exactly
            self.lags = np.zeros(1, dtype=np.int64)
            self.ridge = 0.0

    def fill(self, raw: np.ndarray, known: np.ndarray, jobs: list[tuple[int, int, int]], probe: bool = False) -> None:
        """Fill the lost samples of each (start, end, window start) job in place and mark them known.

        With `probe` (and the stream normaliser), each job's lost pattern is also cut, shifted, into
        recorded signal beside it and filled the same way (`_probes`, in the same batch); what the
        model and the chord miss there sets how far the job's fill is shrunk towards the local
        level and how it is blended with the chord (`_trust`).
        """
        if not jobs:
            return
        probes = self._probes(known, jobs) if probe and self.spec["kind"] == "stream" else []
        rounds = _rounds(probes, self.window)
        variants = [(known, jobs)]
        for batch in rounds:
            k = known.copy()
            for _i, ps, pe, _w, pattern in batch:
                k[:, ps:pe] &= ~pattern
            variants.append((k, [(ps, pe, w) for _i, ps, pe, w, _p in batch]))
        fills = self._reconstruct(raw, variants)
        probes = [p for batch in rounds for p in batch]
        shrink, trust = self._trust(raw, known, len(jobs), probes, [f for v in fills[1:] for f in v])
        for i, (s, e, _w) in enumerate(jobs):  # levels from recorded samples only, before any job is written
            for c in np.flatnonzero(shrink[i] < 1.0):
                level = _level(raw[c], known[c], s, e, self.fs)
                fills[0][i][c] = level + shrink[i, c] * (fills[0][i][c] - level)
        for i, ((s, e, _w), values) in enumerate(zip(jobs, fills[0])):
            lost = ~known[:, s:e]
            raw[:, s:e][lost] = values[lost]
            self.trust[:, :, s:e] = np.where(lost, trust[:, i, :, None], self.trust[:, :, s:e])
            known[:, s:e] = True

    def _reconstruct(self, raw: np.ndarray, variants: list) -> list[list[np.ndarray]]:
        """Raw-unit fills `(C, end - start)` of each (known, jobs) variant's jobs; every variant is
        normalised with its own lost samples, and all their windows run as one batch."""
        L = self.window
        zs, keeps, flat = [], [], []
        for known, jobs in variants:
            starts = [w for _s, _e, w in jobs]
            zs.append(self._normalised(raw, known, starts))
            keeps.append(np.stack([known[:, w : w + L] for w in starts]))
            flat += jobs
        z, keep = np.concatenate(zs), np.concatenate(keeps)
        recon = np.empty_like(z)
        for b in range(0, len(z), BATCH):
            recon[b : b + BATCH] = self.model.reconstruct(z[b : b + BATCH], ~keep[b : b + BATCH])
        u = np.where(keep, z, recon).astype(np.float64)
        out = [self._to_raw(raw[:, w : w + L], kw, uw, s - w, e - w) for (s, e, w), uw, kw in zip(flat, u, keep)]
        sizes = np.cumsum([0] + [len(jobs) for _k, jobs in variants])
        return [out[a:b] for a, b in zip(sizes[:-1], sizes[1:])]

    def _probes(self, known: np.ndarray, jobs: list[tuple[int, int, int]]) -> list[tuple]:
        """(job index, start, end, window start, lost pattern) of each job's probes.

        A probe is the job's lost pattern moved onto recorded samples, one on each side of the gap
        where the recorded stretch there holds it with PROBE_MARGIN of its length recorded on
        either side; it sits a quarter window from the gap (the context the gap itself has), or
        midway in a shorter stretch. Its window is centred on it like the gap's, so the gap is
        lost in the probe's context too, as it is.
        """
        n, L = known.shape[1], self.window
        gap = ~known.all(axis=0)
        lost_at = np.flatnonzero(gap)
        out = []
        for i, (s, e, _w) in enumerate(jobs):
            g = e - s
            pattern = ~known[:, s:e]
            k = np.searchsorted(lost_at, s)
            left = lost_at[k - 1] + 1 if k > 0 else 0  # recorded stretch [left, s)
            k = np.searchsorted(lost_at, e)
            right = lost_at[k] if k < len(lost_at) else n  # recorded stretch [e, right)
            need = g + 2 * math.ceil(PROBE_MARGIN * g)
            if s - left >= need:
                margin = min(L // 4, (s - left - g) // 2)
                out.append((i, s - margin - g, s - margin))
            if right - e >= need:
                margin = min(L // 4, (right - e - g) // 2)
                out.append((i, e + margin, e + margin + g))
        return [(i, ps, pe, _centred(ps, pe, L, n), ~known[:, jobs[i][0] : jobs[i][1]]) for i, ps, pe in out]

    def _trust(self, raw: np.ndarray, known: np.ndarray, jobs: int, probes: list, fills: list):
        """What the probes say of their jobs' fills, per job and channel: (shrink, trust).

        On the probes' lost samples, with y the recorded signal, f the fill and m the local level
        (`_level`): shrink = the least-squares factor a in m + a·(f - m) ≈ y, within [0, 1] (1:
        the model's waveform is kept whole; 0: only the level is); then, with the fill so shrunk,
        trust = (e_model: its mean squared error, kappa: the chord's mean squared error over the
        mean of `_chord`'s expected one, rho: the correlation of the two errors), which set the
        blend with the chord (`_blend_with_linear`). A job without probes gets shrink 1 and NaN.
        """
        channels, reach = raw.shape[0], self.window // 4
        pooled = [[[] for _c in range(channels)] for _j in range(jobs)]
        for (i, ps, pe, _w, pattern), values in zip(probes, fills):
            for c in range(channels):
                have = known[c].copy()
                have[ps:pe] &= ~pattern[c]
                level = _level(raw[c], have, ps, pe, self.fs)
                for a, b in _runs(pattern[c]):
                    chord = _chord(raw[c], have, ps + a, ps + b, reach, self.fs)
                    if chord is not None:
                        y = raw[c, ps + a : ps + b]
                        pooled[i][c].append((y - level, values[c, a:b] - level, chord[0] - level, chord[1]))
        shrink = np.ones((jobs, channels))
        trust = np.full((3, jobs, channels), np.nan)
        for i in range(jobs):
            for c in range(channels):
                if not pooled[i][c]:
                    continue
                y, f, line, e_line = (np.concatenate(v) for v in zip(*pooled[i][c]))
                ff = f @ f
                a = float(np.clip(f @ y / ff, 0.0, 1.0)) if ff > 0 else 1.0
                miss_model, miss_line = a * f - y, line - y
                e_model, e_chord = np.mean(miss_model**2), np.mean(miss_line**2)
                expected = np.mean(e_line)
                kappa = e_chord / expected if expected > 0 else 1.0
                both = np.sqrt(e_model * e_chord)
                rho = float(np.clip(np.mean(miss_model * miss_line) / both, -1.0, 1.0)) if both > 0 else 0.0
                shrink[i, c] = a
                trust[:, i, c] = e_model, kappa, rho
        return shrink, trust

    def _normalised(self, raw: np.ndarray, known: np.ndarray, starts: list[int]) -> np.ndarray:
        from himae_stream.normalize import minmax, normalize

        L = self.window
        if self.spec["kind"] == "stream":
            # The causal filters run over the lost samples linearly interpolated, not
            # skipping them: skipping splices the signal around each gap, which
            # distorts every sample after it (badly so under dense masks), while
            # pretraining normalised whole recordings and masked afterwards.
            end = max(starts) + L  # causal: nothing after the last window matters
            bridged = raw[:, :end].copy()
            idx = np.arange(end)
            for c in range(len(bridged)):
                have = known[c, :end]
                if not have.all():
                    bridged[c, ~have] = np.interp(idx[~have], idx[have], bridged[c, have])
            if DETREND_S:
                # the baseline below the high-pass leaks through it (a 2nd-order filter passes a fifth
                # of a 0.23 Hz wander): take it out first, so the model sees the pulse, not the drift
                bridged -= np.stack([_lowpass(row, self.fs, DETREND_S) for row in bridged])
            z = normalize(bridged, self.spec, self.fs)
            return np.stack([z[:, w : w + L] for w in starts])
        return np.stack([minmax(raw[:, w : w + L], ~known[:, w : w + L]) for w in starts])

    def _to_raw(self, raw_w: np.ndarray, known_w: np.ndarray, u: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """Raw-unit values for window positions [lo, hi): per-channel fit of raw on FIR(u) + baseline."""
        L = self.window
        quarter = L // 4
        out = np.empty((raw_w.shape[0], hi - lo))
        n_fir = len(self.lags)
        for c in range(raw_w.shape[0]):
            a = max(lo - quarter, 0)
            ctx = np.flatnonzero(known_w[c, a : min(hi + quarter, L)]) + a
            if len(ctx) < 4 * (n_fir + 4):
                ctx = np.flatnonzero(known_w[c])
            # few recorded samples (a dense mask): the scale alone, no FIR taps to overfit
            lags = self.lags if len(ctx) >= 4 * (n_fir + 4) else self.lags[self.lags == 0]
            uc = _highpass(u[c], self.fs) if self.spec["kind"] == "stream" else u[c]
            design = self._design(uc, ctx, ctx, lags)
            coef = _solve(design, raw_w[c, ctx], len(lags), self.ridge) if len(ctx) else np.zeros(design.shape[1])
            span = np.arange(lo, hi)
            out[c] = self._design(uc, span, ctx, lags) @ coef
            if len(ctx) and EDGE_TAU_S:
                residual = raw_w[c, ctx] - design @ coef
                out[c] += self._edge_correction(span, ctx, residual)
        return out

    def _edge_correction(self, span: np.ndarray, ctx: np.ndarray, residual: np.ndarray) -> np.ndarray:
        """The fit's residuals at the known samples either side, fading into the gap."""
        tau = EDGE_TAU_S * self.fs
        right = np.clip(np.searchsorted(ctx, span), 0, len(ctx) - 1)
        left = np.clip(right - 1, 0, len(ctx) - 1)
        out = np.zeros(len(span))
        for side in (left, right):
            out += residual[side] * np.exp(-np.abs(span - ctx[side]) / tau)
        return out

    def _design(self, u: np.ndarray, idx: np.ndarray, ctx: np.ndarray, lags: np.ndarray) -> np.ndarray:
        """Columns: u at each lag (the inverse FIR), then the baseline's hat functions over the recorded
        context; beyond its outermost samples the baseline holds their value (no extrapolation)."""
        taps = np.clip(idx[:, None] + lags[None, :], 0, len(u) - 1)
        return np.column_stack([u[taps], _baseline_basis(idx, ctx, self.fs)])
