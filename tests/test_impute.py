"""Gap imputation on real recordings with the C engine: untouched samples, edges, units, errors."""

import warnings

import numpy as np
import pytest
import torch
from conftest import WRIST_BIKE

from himae_stream import ImputationWarning, impute
from himae_stream.model import load_model
from himae_stream.normalize import default_spec, minmax
from himae_stream.recordings import load
from training import HiMAE, export_model, get_config


def export_random(path, config: dict, seed: int = 0):
    torch.manual_seed(seed)
    export_model(HiMAE(config).eval(), path)
    return load_model(path)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return export_random(tmp_path_factory.mktemp("m") / "h25.himae", get_config("himae-25"))


@pytest.fixture(scope="module")
def minmax_model(tmp_path_factory):
    config = get_config("himae-25", normalizer=default_spec("minmax"))
    return export_random(tmp_path_factory.mktemp("m") / "mm.himae", config)


@pytest.fixture(scope="module")
def ppg():
    """Two minutes of wrist PPG during exercise at 25 Hz, in its recorded units."""
    rec = load(WRIST_BIKE, channels="PPG").resampled(25.0)
    return rec.signals[0, : 120 * 25]


def mask_with(n: int, *spans) -> np.ndarray:
    mask = np.zeros(n, bool)
    for s, e in spans:
        mask[s:e] = True
    return mask


def check_filled(x, mask, filled, imputed):
    assert filled.shape == x.shape and filled.dtype == x.dtype
    assert np.array_equal(imputed, np.broadcast_to(mask, x.shape))
    untouched = ~imputed
    assert np.array_equal(filled[untouched].view(np.uint8), x[untouched].view(np.uint8)), "unmasked samples changed"
    assert np.isfinite(filled).all()
    assert np.all(filled[imputed] != x[imputed])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_unmasked_samples_bit_identical_and_edges_filled(model, ppg, dtype):
    x = ppg.astype(dtype)
    n, L = len(x), model.config["window"]
    # Gaps at the start, the end, across where a window boundary would fall, and a dense patch mask.
    mask = mask_with(n, (0, 13), (n - 9, n), (L - 20, L + 20), (3 * L + 7, 3 * L + 8))
    rng = np.random.default_rng(0)
    region = slice(6 * L, 8 * L)
    mask[region] |= np.repeat(rng.random(2 * L // 5) < 0.8, 5)
    x = x.copy()
    x[mask] = np.nan  # lost samples may hold anything
    filled, imputed = impute(x, mask, model)
    check_filled(np.where(mask, 0, x).astype(dtype), mask, filled, imputed)


def test_fill_is_in_signal_units(model, ppg):
    """Scaling and offsetting the recording scales and offsets the fill: the normalisation is undone."""
    mask = mask_with(len(ppg), (500, 530), (1234, 1290), (2000, 2004))
    base, _ = impute(ppg, mask, model)
    shifted, _ = impute(1000.0 * ppg + 5e4, mask, model)
    np.testing.assert_allclose(shifted[mask], 1000.0 * base[mask] + 5e4, rtol=1e-6, atol=1e-3)
    # The fill stays within the range the signal itself spans around the gap.
    lo, hi = ppg[400:1400].min(), ppg[400:1400].max()
    span = hi - lo
    assert lo - span <= base[500:530].min() and base[500:530].max() <= hi + span


def test_minmax_inverse_is_exact(minmax_model, ppg):
    L = minmax_model.config["window"]
    x = ppg[:L]
    mask = mask_with(L, (100, 140))
    filled, _ = impute(x, mask, minmax_model)
    z = minmax(x[None], mask[None])
    recon = minmax_model.reconstruct(z, mask)[0]
    lo, hi = x[~mask].min(), x[~mask].max()
    # exact up to the float64 solve: within a float32 rounding of the raw value (this wrist PPG sits near 1090)
    np.testing.assert_allclose(filled[mask], lo + (recon[mask] + 1.0) / 2.0 * (hi - lo), rtol=5e-8, atol=1e-6)


def test_long_gap_is_filled_part_by_part_and_says_so(model, ppg):
    L = model.config["window"]
    mask = mask_with(len(ppg), (L, 4 * L + 3))
    with pytest.warns(ImputationWarning, match="longer than half a window"):
        filled, imputed = impute(ppg, mask, model)
    check_filled(ppg, mask, filled, imputed)
    # A long gap at the very start is filled from the right, where the context is.
    with pytest.warns(ImputationWarning):
        filled, imputed = impute(ppg, mask_with(len(ppg), (0, 2 * L)), model)
    check_filled(ppg, mask_with(len(ppg), (0, 2 * L)), filled, imputed)


def test_short_gaps_do_not_warn(model, ppg):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        impute(ppg, mask_with(len(ppg), (40, 60), (700, 810)), model)


def test_recording_shorter_than_a_window_is_padded(model, ppg):
    x = ppg[:90]
    mask = mask_with(90, (0, 4), (30, 50), (85, 90))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        filled, imputed = impute(x, mask, model)
    check_filled(x, mask, filled, imputed)


def test_nothing_masked_returns_a_copy(model, ppg):
    filled, imputed = impute(ppg, np.zeros(len(ppg), bool), model)
    assert np.array_equal(filled, ppg) and filled is not ppg and not imputed.any()


def test_multichannel_masks(tmp_path, ppg):
    config = get_config("himae-25", in_channels=2, channel_names=["PPG1", "PPG2"])
    engine = export_random(tmp_path / "two.himae", config)
    x = np.stack([ppg, 0.5 * ppg[::-1] + 10.0])
    per_channel = np.zeros(x.shape, bool)
    per_channel[0, 300:340] = True
    per_channel[1, 900:905] = True
    filled, imputed = impute(x, per_channel, engine)
    check_filled(x, per_channel, filled, imputed)
    shared = mask_with(x.shape[1], (50, 75))
    filled, imputed = impute(x, shared, engine)
    check_filled(x, np.broadcast_to(shared, x.shape), filled, imputed)


def test_bad_input_is_refused(model, ppg):
    mask = mask_with(len(ppg), (10, 20))
    with pytest.raises(ValueError, match="mask shape"):
        impute(ppg, mask[:-1], model)
    with pytest.raises(ValueError, match="boolean"):
        impute(ppg, mask.astype(int), model)
    nan = ppg.copy()
    nan[500] = np.nan
    with pytest.raises(ValueError, match="non-finite value at channel 0, sample 500"):
        impute(nan, mask, model)
    with pytest.raises(ValueError, match="empty"):
        impute(np.zeros(0), np.zeros(0, bool), model)
    with pytest.raises(ValueError, match="channel"):
        impute(np.stack([ppg, ppg]), mask, model)
    with pytest.raises(ValueError, match="no unmasked samples"):
        impute(ppg, np.ones(len(ppg), bool), model)
    with pytest.raises(ValueError, match="resample"):
        impute(ppg, mask, model, fs=125.0)
