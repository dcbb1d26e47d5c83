"""Device-like augmentations of raw PPG, applied per training window before the normaliser.

Each function takes a raw 1-D signal (float64, the recording's units) and
returns a new one; amplitudes are given relative to the signal's robust
scale, so one policy fits every device's units. `augment` draws a policy
from a generator seeded by the caller (training seeds it with the seed, the
step and the window's place in the global batch, so a resumed or
data-parallel run sees the same inputs). The order follows the signal path:
the body (motion, breathing wander), the device's sampling rate, its
front end (polarity, gain, offset, sensor noise, ADC rails) and contact loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from himae_stream.recordings import resample

#: lowest and highest device rate drawn (Hz): a 20 Hz wristband to a 256 Hz research sensor
RATE_RANGE = (20.0, 256.0)


def robust_scale(x: np.ndarray) -> float:
    """Median absolute deviation scaled to a Gaussian's standard deviation (1 for a flat signal)."""
    mad = float(np.median(np.abs(x - np.median(x)))) * 1.4826
    return mad if mad > 0 else (float(np.std(x)) or 1.0)


def invert(x: np.ndarray) -> np.ndarray:
    """Polarity inversion: some devices report absorbance, others reflected light."""
    return -x


def gain_offset(x: np.ndarray, gain: float, offset: float) -> np.ndarray:
    """An amplifier gain and a DC offset (LED drive, ambient light)."""
    return x * gain + offset


def baseline_wander(x: np.ndarray, fs: float, amplitude: float, freq_hz: float, phase: float) -> np.ndarray:
    """A slow sinusoidal baseline (breathing, venous pressure, contact pressure)."""
    t = np.arange(len(x)) / fs
    return x + amplitude * np.sin(2 * np.pi * freq_hz * t + phase)


def change_rate(x: np.ndarray, fs_from: float, fs_to: float) -> np.ndarray:
    """The signal as a device sampling at `fs_to` records it, through the runtime's resampler."""
    return resample(x[None], fs_from, fs_to)[0]


def sensor_noise(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """White Gaussian sensor noise of standard deviation `sigma`."""
    return x + rng.normal(0.0, sigma, len(x))


def clip(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """ADC rails: the signal saturates at `lo` and `hi`."""
    return np.clip(x, lo, hi)


def contact_loss(x: np.ndarray, start: int, length: int) -> np.ndarray:
    """The sensor lifts off: samples [start, start + length) hold the last value before it."""
    out = x.copy()
    start = max(0, min(start, len(x)))
    out[start : start + length] = x[start - 1] if start > 0 else x[0]
    return out


def motion_burst(x: np.ndarray, fs: float, start: int, length: int, amplitude: float, freq_hz: float,
                 step: float) -> np.ndarray:
    """A movement artefact: a Hann-shaped oscillation (arm swing, tapping) plus a baseline step."""
    out = x.copy()
    start = max(0, min(start, len(x)))
    n = min(length, len(x) - start)
    if n <= 0:
        return out
    t = np.arange(n) / fs
    out[start : start + n] += amplitude * np.hanning(n) * np.sin(2 * np.pi * freq_hz * t)
    out[start + n // 2 :] += step
    return out


@dataclass
class Policy:
    """Probability of each augmentation per window, and their ranges (relative to the robust scale)."""

    p_invert: float = 0.5
    p_gain: float = 0.8
    gain_range: tuple = (0.25, 4.0)
    offset_scale: float = 20.0
    p_wander: float = 0.4
    wander_amp: tuple = (0.2, 2.0)
    wander_hz: tuple = (0.05, 0.4)
    p_rate: float = 0.5
    p_noise: float = 0.5
    noise_sigma: tuple = (0.01, 0.3)
    p_clip: float = 0.1
    clip_quantile: tuple = (0.85, 0.98)
    p_contact: float = 0.1
    contact_s: tuple = (0.3, 3.0)
    p_motion: float = 0.15
    motion_s: tuple = (0.5, 3.0)
    motion_amp: tuple = (1.0, 6.0)
    motion_hz: tuple = (0.8, 4.0)


POLICIES = {"device": Policy(), "none": None}


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def draw_rate(rng: np.random.Generator) -> float:
    """A device rate in RATE_RANGE, log-uniform, rounded to 1 Hz (rational resampling stays small)."""
    return float(round(_log_uniform(rng, *RATE_RANGE)))


def augment(x: np.ndarray, fs: float, rng: np.random.Generator, policy: Policy,
            region: tuple[int, int] | None = None) -> tuple[np.ndarray, float]:
    """One random device: the augmented signal and its rate.

    `region` (start, stop) in samples of `x` is where the training window
    lies; local artefacts (clipping aside) are put there so they are seen.
    The result is a function of `x`, `fs` and the generator's state alone.
    """
    x = np.asarray(x, dtype=np.float64)
    draws = rng.random(8)
    scale = robust_scale(x)
    lo_r, hi_r = region if region is not None else (0, len(x))
    # body: motion and slow wander
    m_len = int(rng.uniform(*policy.motion_s) * fs)
    m_start = int(rng.integers(lo_r, max(lo_r + 1, hi_r - m_len // 2)))
    m_amp, m_hz, m_step = rng.uniform(*policy.motion_amp), rng.uniform(*policy.motion_hz), rng.normal(0, 2.0)
    if draws[0] < policy.p_motion:
        x = motion_burst(x, fs, m_start, m_len, m_amp * scale, m_hz, m_step * scale)
    w_amp, w_hz, w_phase = rng.uniform(*policy.wander_amp), rng.uniform(*policy.wander_hz), rng.uniform(0, 2 * np.pi)
    if draws[1] < policy.p_wander:
        x = baseline_wander(x, fs, w_amp * scale, w_hz, w_phase)
    # the device's sampling rate
    rate = draw_rate(rng)
    if draws[2] < policy.p_rate and rate != fs:
        x, ratio = change_rate(x, fs, rate), rate / fs
        fs, lo_r, hi_r = rate, int(lo_r * ratio), int(hi_r * ratio)
    # front end
    if draws[3] < policy.p_invert:
        x = invert(x)
    gain, offset = _log_uniform(rng, *policy.gain_range), rng.normal(0, policy.offset_scale)
    if draws[4] < policy.p_gain:
        x = gain_offset(x, gain, offset * scale)
        scale *= gain
    sigma = _log_uniform(rng, *policy.noise_sigma)
    if draws[5] < policy.p_noise:
        x = sensor_noise(x, sigma * scale, rng)
    q = rng.uniform(*policy.clip_quantile)
    if draws[6] < policy.p_clip:
        lo, hi = np.quantile(x, [1 - q, q])
        x = clip(x, lo, hi)
    c_len = int(rng.uniform(*policy.contact_s) * fs)
    c_start = int(rng.integers(lo_r, max(lo_r + 1, hi_r - c_len // 2)))
    if draws[7] < policy.p_contact:
        x = contact_loss(x, c_start, c_len)
    return x, fs
