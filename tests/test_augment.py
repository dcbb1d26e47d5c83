"""Device-like augmentations: each does what it says, on real PPG, and the draws follow the seed."""

import dataclasses

import numpy as np
import pytest
from conftest import WRIST_RUN

from himae_stream.normalize import normalize
from himae_stream.recordings import load
from training import get_config
from training import augment as aug
from training.data import Sequence, training_window

FS = 256.0


@pytest.fixture(scope="module")
def ppg() -> np.ndarray:
    """30 s of real wrist PPG at 256 Hz."""
    return load(WRIST_RUN).pick(["PPG"]).signals[0, : int(30 * FS)].copy()


def _peak_hz(x: np.ndarray, fs: float) -> float:
    spectrum = np.abs(np.fft.rfft(x - x.mean()))
    return float(np.fft.rfftfreq(len(x), 1 / fs)[np.argmax(spectrum)])


def test_polarity_flips_sign(ppg):
    np.testing.assert_array_equal(aug.invert(ppg), -ppg)


def test_gain_and_offset(ppg):
    np.testing.assert_allclose(aug.gain_offset(ppg, 3.0, -7.0), 3.0 * ppg - 7.0)


def test_baseline_wander_adds_a_slow_sinusoid(ppg):
    out = aug.baseline_wander(ppg, FS, amplitude=5.0, freq_hz=0.2, phase=0.3)
    added = out - ppg
    assert np.abs(added).max() == pytest.approx(5.0, rel=1e-3)
    assert _peak_hz(added, FS) == pytest.approx(0.2, abs=1 / 30)


@pytest.mark.parametrize("fs_to", [20.0, 31.0, 64.0, 137.0, 256.0])
def test_rate_change_keeps_a_sinusoid_frequency(fs_to):
    t = np.arange(int(20 * 100.0)) / 100.0
    x = np.sin(2 * np.pi * 1.7 * t)
    y = aug.change_rate(x, 100.0, fs_to)
    assert len(y) == pytest.approx(len(x) * fs_to / 100.0, abs=2)
    assert _peak_hz(y, fs_to) == pytest.approx(1.7, abs=1 / 20)
    assert np.abs(y[len(y) // 4 :]).max() == pytest.approx(1.0, abs=0.05), "the pass band keeps its amplitude"


def test_sensor_noise_has_the_chosen_level(ppg):
    out = aug.sensor_noise(ppg, 2.0, np.random.default_rng(0))
    assert np.std(out - ppg) == pytest.approx(2.0, rel=0.05)


def test_clipping_caps_at_the_rails(ppg):
    lo, hi = np.quantile(ppg, [0.1, 0.9])
    out = aug.clip(ppg, lo, hi)
    assert out.max() == hi and out.min() == lo
    inside = (ppg > lo) & (ppg < hi)
    np.testing.assert_array_equal(out[inside], ppg[inside])
    assert (out == hi).sum() > 5 and (out == lo).sum() > 5


def test_contact_loss_holds_a_constant(ppg):
    out = aug.contact_loss(ppg, 1000, 500)
    assert np.all(out[1000:1500] == ppg[999])
    np.testing.assert_array_equal(out[:1000], ppg[:1000])
    np.testing.assert_array_equal(out[1500:], ppg[1500:])


def test_motion_burst_is_local_and_large(ppg):
    scale = aug.robust_scale(ppg)
    out = aug.motion_burst(ppg, FS, 2000, 512, amplitude=5 * scale, freq_hz=2.0, step=0.0)
    np.testing.assert_array_equal(out[:2000], ppg[:2000])
    np.testing.assert_array_equal(out[2512:], ppg[2512:])
    assert np.abs(out - ppg).max() > 3 * scale


def test_each_policy_switch_applies_its_augmentation(ppg):
    off = aug.Policy(**{f.name: 0.0 for f in dataclasses.fields(aug.Policy) if f.name.startswith("p_")})
    same, fs = aug.augment(ppg, FS, np.random.default_rng(1), off)
    np.testing.assert_array_equal(same, ppg)
    assert fs == FS
    flipped, _ = aug.augment(ppg, FS, np.random.default_rng(1), dataclasses.replace(off, p_invert=1.0))
    np.testing.assert_array_equal(flipped, -ppg)
    for seed in range(5):
        moved, rate = aug.augment(ppg, FS, np.random.default_rng(seed), dataclasses.replace(off, p_rate=1.0))
        assert aug.RATE_RANGE[0] <= rate <= aug.RATE_RANGE[1] and rate == round(rate)
        assert len(moved) == pytest.approx(len(ppg) * rate / FS, abs=2)
    held, _ = aug.augment(ppg, FS, np.random.default_rng(2), dataclasses.replace(off, p_contact=1.0))
    changed = np.flatnonzero(held != ppg)
    assert len(changed) and np.ptp(held[changed[0] : changed[-1] + 1]) == 0, "one flat stretch"
    railed, _ = aug.augment(ppg, FS, np.random.default_rng(3), dataclasses.replace(off, p_clip=1.0))
    assert (railed == railed.max()).sum() > 5 and (railed == railed.min()).sum() > 5


def test_augmentation_follows_the_seed(ppg):
    policy = aug.POLICIES["device"]
    a, fa = aug.augment(ppg, FS, np.random.default_rng([0, 3, 17, 5]), policy)
    b, fb = aug.augment(ppg, FS, np.random.default_rng([0, 3, 17, 5]), policy)
    np.testing.assert_array_equal(a, b)
    assert fa == fb
    outs = [aug.augment(ppg, FS, np.random.default_rng([0, 3, 17, k]), policy)[0] for k in range(6)]
    assert len({o.tobytes() for o in outs}) == 6


def _sequence(config) -> Sequence:
    rec = load(WRIST_RUN).pick(["PPG"])
    return Sequence(rec.name, rec.subject, "wrist", rec.fs, rec.signals.astype(np.float32), np.array([], np.int64))


@pytest.mark.parametrize("name", ["himae-25", "himae-100"])
def test_training_windows_look_like_the_runtime_s(name):
    """Without augmentation, a window cut with a 20-s lead-in is close to the same stretch of
    the recording normalised whole (what the runtime and validation see)."""
    config = get_config(name)
    seq = _sequence(config)
    fs = config["fs"]
    whole = normalize(load(WRIST_RUN).pick(["PPG"]).resampled(fs).signals, config["normalizer"], fs)
    for t0 in (40.0, 75.0):
        w = training_window(seq, int(t0 * seq.fs), config)
        ref = whole[:, int(t0 * fs) : int(t0 * fs) + config["window"]]
        assert w.shape == ref.shape == (1, config["window"]) and w.dtype == np.float32
        assert np.abs(w - ref).mean() < 0.03 * np.abs(ref).mean() + 1e-3


def test_augmented_training_windows_are_bounded_and_seeded():
    config = get_config("himae-25")
    seq = _sequence(config)
    policy = aug.POLICIES["device"]
    a = [training_window(seq, 2560 * k, config, np.random.default_rng([1, k]), policy) for k in range(1, 9)]
    b = [training_window(seq, 2560 * k, config, np.random.default_rng([1, k]), policy) for k in range(1, 9)]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
        assert x.shape == (1, 250) and np.isfinite(x).all() and np.abs(x).max() <= 1.0
