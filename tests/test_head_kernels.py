"""The compiled heads (`headplan`) compute what `probes` defines: spectra against the FFT of
`probes.level_power`, pools against numpy, purity and peak against numpy written out, a burst of
windows against the same windows one by one, and a live positions buffer read in place against
the windows copied out of it."""

import numpy as np
import pytest

from himae_stream import probes as P
from himae_stream.headplan import Heads

FS, SPAN = 100.0, 1000
CHANNELS = [16, 32, 64, 128]


def _windows(count, seed=2, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [[(rng.standard_normal((c, SPAN // 2 ** (l + 1))) + 3.0).astype(dtype) for l, c in enumerate(CHANNELS)]
            for _ in range(count)]


def _spectrum_written_out(acts, levels, weights, bases, band=P.HR_BAND_HZ):
    """A spectral head's summed unit band spectrum from the full FFT spectra, and its bin width."""
    total, df0 = None, None
    for level, weight, basis in zip(levels, weights, bases):
        power, df = P.level_power(acts[level].astype(np.float64), level, FS, SPAN, P.PAD, basis)
        df0 = df0 or df
        lo = int(np.ceil(band[0] / df - 1e-9))
        bins = int(np.floor(band[1] / df0 + 1e-9)) - int(np.ceil(band[0] / df0 - 1e-9)) + 1
        s = np.zeros(bins)
        got = power[lo : lo + bins]
        s[: got.size] = got  # a deep level's spectrum ends at its Nyquist rate
        s = s / s.sum() if s.sum() else s
        total = weight * s if total is None else total + weight * s
    return total, df0


def _peak_written_out(s, df, band=P.HR_BAND_HZ):
    if not s.any():
        return np.nan
    k = int(np.argmax(s))
    delta = 0.0
    if 0 < k < s.size - 1 and s[k - 1] - 2 * s[k] + s[k + 1] < 0:
        delta = 0.5 * (s[k - 1] - s[k + 1]) / (s[k - 1] - 2 * s[k] + s[k + 1])
    return 60.0 * (np.ceil(band[0] / df - 1e-9) + k + delta) * df


def _purity_written_out(s, df):
    if not s.sum():
        return 0.0
    k, half = int(np.argmax(s)), max(1, round(P.PURITY_HALF_WIDTH_HZ / df))
    return s[max(k - half, 0) : k + half + 1].sum() / s.sum()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_spectral_head_is_the_peak_of_the_fft_spectra(dtype):
    rng = np.random.default_rng(1)
    bases = [rng.standard_normal((4, 32)), None, rng.standard_normal((8, 128))]
    head = {"name": "hr", "kind": "spectral", "levels": [1, 2, 3], "weights": [1.0, 0.5, 2.0],
            "basis": [None if b is None else b.tolist() for b in bases]}
    P.validate(head, CHANNELS)
    windows = _windows(4, dtype=dtype)
    got = [r["hr"] for r in Heads([head], FS).apply(windows, [SPAN] * 4)]
    for acts, rate in zip(windows, got):
        total, df = _spectrum_written_out(acts, [1, 2, 3], [1.0, 0.5, 2.0], bases)
        assert rate == pytest.approx(_peak_written_out(total, df), rel=1e-4 if dtype == np.float32 else 1e-9)


def test_linear_features_are_pools_then_purities_written_out():
    rng = np.random.default_rng(3)
    basis = rng.standard_normal((4, 32))
    separate = {"name": "a", "kind": "ridge", "levels": [0, 2], "pool": ["mean", "std"], "purity_levels": [1, 3],
                "basis": [basis.tolist(), None]}
    combined = {"name": "b", "kind": "probability", "levels": [], "purity_levels": [0, 1], "purity_mode": "combined"}
    for head in (separate, combined):
        dim = P.feature_size(head, CHANNELS)
        head.update(mean=[0.0] * dim, std=[1.0] * dim, weights=[rng.standard_normal(dim).tolist()], bias=[0.1])
        P.validate(head, CHANNELS)
    windows = _windows(3, dtype=np.float64)
    x = Heads([separate], FS).features(windows, [SPAN] * 3)
    y = Heads([combined], FS).features(windows, [SPAN] * 3)
    for w, acts in enumerate(windows):
        want = [acts[0].mean(axis=1), acts[0].std(axis=1), acts[2].mean(axis=1), acts[2].std(axis=1)]
        for level, b in ((1, basis), (3, None)):
            s, df = _spectrum_written_out(acts, [level], [1.0], [b])
            want.append([_purity_written_out(s, df)])
        np.testing.assert_allclose(x[w], np.concatenate(want), rtol=1e-9, atol=1e-12)
        s, df = _spectrum_written_out(acts, [0, 1], [1.0, 1.0], [None, None])
        assert y[w, 0] == pytest.approx(_purity_written_out(s, df), rel=1e-9)


def test_purity_and_peak_follow_their_definitions_edges_ties_and_silence_included():
    rng = np.random.default_rng(1)
    s = rng.random((40, 57))
    s[0] = 0.0  # no power
    s[1, :] = 1.0  # all equal: the first bin
    s[2, 0] = 9.0  # peak at the band's first bin
    s[3, -1] = 9.0  # and at its last
    s[4, 10] = s[4, 30] = 9.0  # two equal peaks: the first
    df = 0.05
    purity = P.band_purities(s, df)
    rates = 60.0 * P.peak_rates(s, df, P.HR_BAND_HZ)
    for r, row in enumerate(s):
        assert purity[r] == pytest.approx(_purity_written_out(row, df), rel=1e-12, abs=0)
        want = _peak_written_out(row, df)
        assert (np.isnan(rates[r]) and np.isnan(want)) or rates[r] == pytest.approx(want, rel=1e-12)
    assert purity[0] == 0.0 and np.isnan(rates[0])


def _heads():
    rng = np.random.default_rng(2)
    heads = [
        {"name": "hr", "kind": "spectral", "levels": [1, 2], "weights": [1.0, 0.5],
         "basis": [rng.standard_normal((4, 32)).tolist(), None]},
        {"name": "kind", "kind": "logistic", "levels": [0, 2], "pool": ["mean", "std"], "purity_levels": [1],
         "classes": ["a", "b", "c"], "mean": [0.0] * 161, "std": [1.0] * 161,
         "weights": rng.standard_normal((3, 161)).tolist(), "bias": [0.0, 0.1, -0.1]},
    ]
    for head in heads:
        P.validate(head, CHANNELS)
    return heads


def test_a_burst_of_windows_gives_what_each_window_gives_alone():
    heads, windows = _heads(), _windows(5)
    together = Heads(heads, FS).apply(windows, [SPAN] * 5)
    alone = [Heads(heads, FS).apply([w], [SPAN])[0] for w in windows]
    _same_records(together, alone)


def test_features_of_interleaved_window_shapes_are_each_windows_own():
    """A plan's arrays are reused from run to run (`Plan.run`): windows of one shape, then another,
    then the first again, keep their own features."""
    heads = _heads()
    long, short = _windows(2), [[a[:, : a.shape[1] // 2] for a in w] for w in _windows(1, seed=7)]
    mixed = Heads(heads, FS).features([long[0], short[0], long[1]], [SPAN, SPAN // 2, SPAN])
    alone = [Heads(heads, FS).features([w], [n])[0] for w, n in ((long[0], SPAN), (short[0], SPAN // 2),
                                                                  (long[1], SPAN))]
    np.testing.assert_array_equal(mixed, np.array(alone))
    assert not np.array_equal(mixed[0], mixed[2])


def test_a_live_positions_buffer_is_read_in_place_as_the_windows_copied_out_of_it():
    heads, hop = _heads(), 10
    rng = np.random.default_rng(5)
    whole = [rng.standard_normal((c, 3000 // 2 ** (l + 1))).astype(np.float32) for l, c in enumerate(CHANNELS)]
    held = P.Positions(CHANNELS, keep=SPAN + 200)
    held.add([(np.arange(a.shape[1]), a) for a in whole])
    spans = [(s, s + SPAN) for s in range(1500, 2000 - SPAN // 8, hop)][:12]
    live = Heads(heads, FS).apply_at(held, spans)
    copied = Heads(heads, FS).apply([[a.copy() for a in held.window(s, e)] for s, e in spans],
                                    [e - s for s, e in spans])
    assert len(live) == 12
    _same_records(live, copied)


def _same_records(got, want):
    """Equal classes, values within rounding (products over other column ranges round alike only
    to the last bits)."""
    for a, b in zip(got, want, strict=True):
        assert a.keys() == b.keys() and a["kind"] == b["kind"]
        assert a["hr"] == pytest.approx(b["hr"], rel=1e-12)
        assert a["kind_p"] == pytest.approx(b["kind_p"], rel=1e-12)


def test_levels_computed_ahead_give_what_computing_them_at_once_gives():
    """Live, the shallow levels of coming windows are computed between pushes (`ahead_at`) and the
    record computes only the deepest: the records are those of computing every level at once, and
    each window held ahead is taken once."""
    from himae_stream.headplan import Ahead

    heads, hop = _heads(), 10
    rng = np.random.default_rng(7)
    whole = [rng.standard_normal((c, 3000 // 2 ** (l + 1))).astype(np.float32) for l, c in enumerate(CHANNELS)]
    spans = [(s, s + SPAN) for s in range(1500, 1540, hop)]
    deep = len(CHANNELS) - 1
    early = P.Positions(CHANNELS, keep=SPAN + 200)  # every level held up to the windows' ends but the deepest
    early.add([(np.arange(a.shape[1]), a) for a in whole[:deep]]
              + [(np.arange(1500 // 2 ** len(CHANNELS)), whole[deep][:, : 1500 // 2 ** len(CHANNELS)])])
    assert early.starts(spans)[1][:, deep].max() < SPAN // 2 ** len(CHANNELS)  # the deepest level is not complete
    live, ahead = Heads(heads, FS), Ahead()
    live.ahead_at(early, spans, ahead)
    late = whole[deep][:, 1500 // 2 ** len(CHANNELS):]
    early.add([(np.zeros(0, np.int64), a[:, :0]) for a in whole[:deep]]
              + [(np.arange(late.shape[1]) + 1500 // 2 ** len(CHANNELS), late)])
    assert ahead.puts == 4 and ahead.held() == 4
    got = live.apply_at(early, spans, ahead)
    assert ahead.held() == 0  # each taken once
    whole_held = P.Positions(CHANNELS, keep=SPAN + 200)
    whole_held.add([(np.arange(a.shape[1]), a) for a in whole])
    _same_records(got, Heads(heads, FS).apply_at(whole_held, spans))
    # what was computed ahead is what the records read: held parts zeroed change the records
    live.ahead_at(early, spans, ahead)
    for ring in ahead._rings.values():
        ring[1][:] = 0.0
    assert live.apply_at(early, spans, ahead)[0]["hr"] != got[0]["hr"]
