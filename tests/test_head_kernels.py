"""The compiled pieces the probe heads run on every window agree with their plain definitions:
band power with the full FFT spectrum, purity and peak with numpy written out, a burst of
windows with the same windows one by one."""

import numpy as np
import pytest

from himae_stream import probes as P

FS, SPAN = 100.0, 1000


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("level", [0, 3])
@pytest.mark.parametrize("with_basis", [False, True])
def test_band_power_is_the_fft_spectrum_over_the_band(dtype, level, with_basis):
    rng = np.random.default_rng(level)
    channels, n = 8 * (level + 1), SPAN // 2 ** (level + 1)
    acts = rng.standard_normal((3, channels, n)).astype(dtype) + 5.0  # an offset the centring removes
    basis = rng.standard_normal((4, channels)) if with_basis else None
    power, df = P.band_power(acts, level, FS, SPAN, basis=basis)
    assert power.shape[:1] == (3,)
    for w in range(3):
        full, step = P.level_power(acts[w], level, FS, SPAN, basis=basis)
        lo = int(np.ceil(P.HR_BAND_HZ[0] / step - 1e-9))
        want = full[lo : lo + power.shape[1]]  # a deep level's spectrum ends at its Nyquist rate ...
        assert step == df and want.size > 0
        np.testing.assert_allclose(power[w, : want.size], want, rtol=2e-4 if dtype == np.float32 else 1e-9)
        assert not power[w, want.size :].any()  # ... and the band's bins past it hold nothing
        single, _ = P.band_power(acts[w], level, FS, SPAN, basis=basis)
        np.testing.assert_allclose(single, power[w], rtol=1e-12)


def _purity_written_out(row, df):
    if not row.sum():
        return 0.0
    k, half = int(np.argmax(row)), max(1, round(P.PURITY_HALF_WIDTH_HZ / df))
    return row[max(k - half, 0) : k + half + 1].sum() / row.sum()


def _peak_written_out(row, df, band):
    if not row.any():
        return np.nan
    k = int(np.argmax(row))
    delta = 0.0
    if 0 < k < row.size - 1:
        a, b, c = row[k - 1 : k + 2]
        if a - 2 * b + c < 0:
            delta = 0.5 * (a - c) / (a - 2 * b + c)
    return (np.ceil(band[0] / df - 1e-9) + k + delta) * df


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
    rates = P.peak_rates(s, df, P.HR_BAND_HZ)
    for r, row in enumerate(s):
        assert purity[r] == pytest.approx(_purity_written_out(row, df), rel=1e-12, abs=0)
        want = _peak_written_out(row, df, P.HR_BAND_HZ)
        assert (np.isnan(rates[r]) and np.isnan(want)) or rates[r] == pytest.approx(want, rel=1e-12)
    assert purity[0] == 0.0 and np.isnan(rates[0])
    assert rates[1] == pytest.approx(np.ceil(0.7 / df - 1e-9) * df)


def test_a_burst_of_windows_gives_what_each_window_gives_alone():
    rng = np.random.default_rng(2)
    channels = [16, 32, 64]
    heads = [
        {"name": "hr", "kind": "spectral", "levels": [1, 2], "weights": [1.0, 0.5],
         "basis": [rng.standard_normal((4, 32)).tolist(), None]},
        {"name": "kind", "kind": "logistic", "levels": [0, 2], "pool": ["mean", "std"], "purity_levels": [1],
         "classes": ["a", "b", "c"], "mean": [0.0] * 161, "std": [1.0] * 161,
         "weights": rng.standard_normal((3, 161)).tolist(), "bias": [0.0, 0.1, -0.1]},
    ]
    for head in heads:
        P.validate(head, channels)
    windows = [[rng.standard_normal((c, SPAN // 2 ** (l + 1))).astype(np.float32) for l, c in enumerate(channels)]
               for _ in range(5)]
    together = P.Heads(heads, FS).apply(windows, [SPAN] * 5)
    alone = [P.Heads(heads, FS).apply([w], [SPAN])[0] for w in windows]
    by_apply_one = [{k: v for h in heads for k, v in P.apply_one(h, w, FS, SPAN).items()} for w in windows]
    for a, b, c in zip(together, alone, by_apply_one):
        assert a["kind"] == b["kind"] == c["kind"]
        assert a["hr"] == pytest.approx(b["hr"], rel=1e-9) and a["hr"] == pytest.approx(c["hr"], rel=1e-6)
        for cls in ("a", "b", "c"):
            assert a["kind_p"][cls] == pytest.approx(c["kind_p"][cls], rel=1e-5, abs=1e-9)
