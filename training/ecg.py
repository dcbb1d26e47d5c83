"""Heart-rate labels from ECG: an R-peak detector and the heart rate of each window.

The detector (scipy only): band-pass 5–20 Hz, squared slope, a 120-ms moving
integral, peaks at least 0.25 s apart above a threshold of the local signal
level; each peak is moved to the R wave (the lead's dominant polarity) within 60 ms. A window's
heart rate is 60 / median of the RR intervals whose both beats lie in it,
the definition the WristPPG_Exercise reference uses (`hr_ref`).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import maximum_filter1d
from scipy.signal import butter, find_peaks, sosfiltfilt

MIN_RR_S = 0.25  # 240 BPM
SEARCH_S = 0.06
THRESHOLD = 0.3


def r_peaks(ecg: np.ndarray, fs: float) -> np.ndarray:
    """R-peak times (s) of one ECG lead."""
    x = np.nan_to_num(np.asarray(ecg, dtype=np.float64))
    sos = butter(2, [5.0, min(20.0, 0.45 * fs)], btype="band", fs=fs, output="sos")
    f = sosfiltfilt(sos, x)
    energy = np.gradient(f) ** 2
    width = max(1, int(round(0.12 * fs)))
    integ = np.convolve(energy, np.ones(width) / width, mode="same")
    # threshold: a share of the running maximum over ~2 s, so amplitude changes are followed
    local = maximum_filter1d(integ, size=max(3, int(2.0 * fs)))
    peaks, _ = find_peaks(integ, distance=max(1, int(MIN_RR_S * fs)), height=THRESHOLD * local)
    # move each peak to the R wave: the extreme, of the lead's dominant polarity, of the ECG
    # band-passed 1–40 Hz within 60 ms
    sos = butter(2, [1.0, min(40.0, 0.45 * fs)], btype="band", fs=fs, output="sos")
    g = sosfiltfilt(sos, x)
    w = max(1, int(round(SEARCH_S * fs)))
    segments = [(max(p - w, 0), g[max(p - w, 0) : p + w + 1]) for p in peaks]
    sign = 1.0 if np.median([seg.max() + seg.min() for _, seg in segments] or [1.0]) >= 0 else -1.0
    refined = np.unique([a + int(np.argmax(sign * seg)) for a, seg in segments]).astype(int)
    return refined / fs


def regular_beats(leads: list[np.ndarray], fs: float) -> np.ndarray:
    """R-peak times (s) of the lead whose beats are most regular: the smallest median change between
    successive RR intervals, relative to the median interval. A lead whose T waves are tall enough to
    be taken for R waves gives short and long intervals in turn, so it loses to one that does not."""
    def irregularity(beats: np.ndarray) -> float:
        rr = np.diff(beats)
        return float(np.median(np.abs(np.diff(rr))) / np.median(rr)) if rr.size >= 3 else math.inf

    found = [r_peaks(lead, fs) for lead in leads]
    return min(found, key=irregularity)


def window_hr(beats_s: np.ndarray, start_s, end_s) -> np.ndarray:
    """60 / median RR (BPM) of the beats inside each window [start, end); NaN with under 3 beats."""
    beats_s = np.sort(np.asarray(beats_s, dtype=np.float64))
    out = []
    for s, e in zip(np.atleast_1d(start_s), np.atleast_1d(end_s)):
        inside = beats_s[(beats_s >= s) & (beats_s < e)]
        rr = np.diff(inside)
        rr = rr[(rr >= MIN_RR_S) & (rr <= 2.0)]
        out.append(60.0 / np.median(rr) if rr.size >= 2 else np.nan)
    return np.array(out)
