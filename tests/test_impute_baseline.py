"""Gap fill keeps what the normaliser removed (baseline, scale) and beats linear interpolation
on real PPG, with the shipped models and fixed seeds."""

import warnings

import numpy as np
import pytest
from conftest import BUNDLED, V102S, WRIST_BIKE, WRIST_RUN, WRIST_WALK

from himae_stream import ImputationWarning, impute
from himae_stream.model import load_model
from himae_stream.recordings import load

FS = 100.0


@pytest.fixture(scope="module")
def model():
    return load_model("himae-100")



def gaps(n: int, length_s: float, count: int, seed: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """`count` gaps at seeded positions, 12 s apart, after 20 s."""
    g = round(length_s * FS)
    rng = np.random.default_rng([seed, g])
    slots = np.arange(round(20 * FS), n - round(12 * FS), round(12 * FS))
    starts = np.sort(rng.choice(slots, size=min(count, len(slots)), replace=False) + rng.integers(0, 200))
    mask = np.zeros(n, bool)
    for s in starts:
        mask[s : s + g] = True
    return mask, [(int(s), int(s) + g) for s in starts]


def fill(x, mask, model):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ImputationWarning)
        return impute(x, mask, model, fs=FS)[0]


def linear(x, mask):
    idx = np.arange(len(x))
    out = x.copy()
    out[mask] = np.interp(idx[mask], idx[~mask], x[~mask])
    return out


@pytest.fixture(scope="module")
def finger():
    """Five minutes of clean finger PPG (v102s PLETH) at the model's rate, its few missing samples bridged."""
    x = load(V102S, channels="PLETH").resampled(FS).signals[0]
    bad = ~np.isfinite(x)
    x[bad] = np.interp(np.flatnonzero(bad), np.flatnonzero(~bad), x[~bad])
    return x


def drift(n: int, amplitude: float) -> np.ndarray:
    """A baseline that wanders below the normaliser's 0.5 Hz high-pass: slow sines and a ramp."""
    t = np.arange(n) / FS
    return amplitude * (np.sin(2 * np.pi * 0.07 * t) + 0.6 * np.sin(2 * np.pi * 0.23 * t + 1.0) + t / t[-1])


TWO_S_DRIFT = pytest.mark.xfail(strict=True, reason="known shortfall: across a 2-s gap the drifted fill's error "
                                 "is about 9x the clean one (docs/imputation.md)")


@pytest.mark.parametrize("length_s", [1.0, pytest.param(2.0, marks=TWO_S_DRIFT)])
def test_fill_is_as_good_with_a_strong_baseline_drift(model, finger, length_s):
    """A drift ten times the pulse's size, added to the recording, adds little to the fill's error:
    the baseline is continued across the gap, not dropped with the normaliser's high-pass."""
    x = finger
    mask, _ = gaps(len(x), length_s, 12, seed=1)
    b = drift(len(x), 10 * np.std(x))
    clean = np.mean((fill(x, mask, model) - x)[mask] ** 2)
    drifted = np.mean((fill(x + b, mask, model) - (x + b))[mask] ** 2)
    assert drifted <= 2.5 * clean, (drifted, clean)
    line = np.mean((linear(x + b, mask) - (x + b))[mask] ** 2)
    assert drifted <= 0.8 * line, (drifted, line)
    # and the drift alone would be many times that error
    assert np.var(b) > 30 * clean


def test_baseline_is_continued_across_the_gap(model, finger):
    """The mean of each filled gap follows the drifted baseline there, as closely as a straight line
    between the gap's edges does, not the mean of the context (which is off by several pulse sizes)."""
    x = finger
    mask, spans = gaps(len(x), 1.0, 12, seed=2)
    y = x + drift(len(x), 10 * np.std(x))
    filled, line = fill(y, mask, model), linear(y, mask)
    offsets = np.array([np.mean(filled[s:e] - y[s:e]) for s, e in spans])
    line_offsets = np.array([np.mean(line[s:e] - y[s:e]) for s, e in spans])
    context = np.array([np.mean(y[s - 250 : s]) + np.mean(y[e : e + 250]) - 2 * np.mean(y[s:e]) for s, e in spans]) / 2
    assert np.sqrt(np.mean(offsets**2)) <= 1.2 * np.sqrt(np.mean(line_offsets**2)), (offsets, line_offsets)
    assert np.sqrt(np.mean(offsets**2)) < 0.5 * np.sqrt(np.mean(context**2)), (offsets, context)


WALK_2S = pytest.mark.xfail(strict=True, reason="known shortfall: on this walking cut the fill of 2-s gaps is not "
                            "better than a line at these seeded gaps (docs/imputation.md)")


@pytest.mark.parametrize(("path", "length_s"), [
    (WRIST_RUN, 1.0), (WRIST_RUN, 2.0), (WRIST_WALK, 1.0), pytest.param(WRIST_WALK, 2.0, marks=WALK_2S),
    (WRIST_BIKE, 1.0), (WRIST_BIKE, 2.0)], ids=lambda v: v.stem if hasattr(v, "stem") else f"{v:g}s")
def test_fill_beats_linear_interpolation_on_wrist_ppg(model, path, length_s):
    x = load(path, channels="PPG").resampled(FS).signals[0]
    mask, _ = gaps(len(x), length_s, 8, seed=0)
    himae = np.mean((fill(x, mask, model) - x)[mask] ** 2)
    line = np.mean((linear(x, mask) - x)[mask] ** 2)
    assert himae <= 0.85 * line, (himae / line)


def test_scale_follows_the_signal(model, finger):
    """A recording whose amplitude doubles halfway is filled at the local amplitude on each side."""
    x = finger.copy()
    half = len(x) // 2
    x[half:] = 2.0 * (x[half:] - x[half:].mean()) + x[half:].mean()
    mask, spans = gaps(len(x), 1.0, 16, seed=3)
    filled = fill(x, mask, model)
    for s, e in spans:
        if abs(s - half) < 12 * FS:
            continue
        assert 0.4 < np.std(filled[s:e]) / np.std(x[s:e]) < 1.6, (s, np.std(filled[s:e]) / np.std(x[s:e]))


def band_noise(n: int, seed: int) -> np.ndarray:
    """Noise in the pulse band (a difference of 0.2- and 1.4-s moving means: about 0.7 to 5 Hz), around
    an offset: a signal that looks like PPG to the normaliser but whose gaps no model can predict."""
    w = np.random.default_rng(seed).standard_normal(n + 400)
    fast, slow = (np.convolve(w, np.ones(k) / k, mode="same") for k in (20, 140))
    return 1000.0 + 100.0 * (fast - slow)[200:-200]


@pytest.mark.parametrize("length_s", [1.0, 2.0])
def test_fill_of_unpredictable_signal_falls_back_to_the_local_level(model, length_s):
    """Where the model's waveform misses (as its probes beside the gap show), the fill costs no more
    than the mean of the signal around the gap, the best a fill can do knowing nothing of the
    waveform: a full-amplitude guess would cost about twice that, and a straight line 1.2-1.6 times."""
    x = band_noise(180 * round(FS), seed=0)
    mask, spans = gaps(len(x), length_s, 12, seed=0)
    r = round(2 * FS)
    level = x.copy()
    for s, e in spans:
        level[s:e] = np.r_[x[s - r : s], x[e : e + r]].mean()
    himae = np.mean((fill(x, mask, model) - x)[mask] ** 2)
    mean = np.mean((level - x)[mask] ** 2)
    assert himae <= 1.05 * mean, (himae / mean)



@pytest.mark.parametrize("rho", [0.9, 0.976, 0.999])
@pytest.mark.parametrize("e_model", [0.001, 0.00318, 0.01])
def test_the_blend_with_the_line_changes_smoothly_along_a_gap(rho, e_model):
    """Probes often measure the model's and the chord's errors as nearly the same (rho near 1; the
    middle case is one gap of the demo record's plot): the weight of the line must still vary
    smoothly along the gap, or the fill jumps mid-gap between the model's waveform and the line
    (uncapped, the weight moved by 0.43 to 1.0 between two samples here)."""
    from himae_stream.impute import _blend_with_linear, _chord

    x = load(BUNDLED, channels="PLETH").resampled(FS).signals[:, :3000].astype(np.float64)
    s, e = 1300, 1400
    lost = np.zeros_like(x, bool)
    lost[:, s:e] = True
    level = x[0, s - 200 : e + 200].mean()
    raw = np.where(lost, level, x)  # a fill at the local level: the result is then level + w·(line - level)
    line = _chord(raw[0], ~lost[0], s, e, 250, FS)[0]
    trust = np.full((3, 1, x.shape[1]), np.nan)
    trust[:, 0, s:e] = np.array([e_model, 1.526, rho])[:, None]
    _blend_with_linear(raw, lost, trust, 250, FS)
    w = (raw[0, s:e] - level) / (line - level)
    assert np.all((w > -1e-9) & (w < 1 + 1e-9))
    assert np.abs(np.diff(w))[5:-5].max() <= 0.3  # inside the gap; at its edges the line takes over fast
