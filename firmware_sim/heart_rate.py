"""Heart-rate trace for the simulated Heart Rate Service: from a reference file or the PPG itself.

TROIKA recordings come with ECG-derived BPM traces (one value per 8 s
window, windows 2 s apart, so value i belongs to the window centred at
4 + 2i s); other recordings get the spectral peak of their PPG over the
same windows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from himae_stream.recordings import Recording, RecordingError

WINDOW_S = 8.0
STEP_S = 2.0


@dataclass(frozen=True)
class HeartRateTrace:
    times_s: np.ndarray  # window centres, seconds from the recording's start
    bpm: np.ndarray

    def at(self, t_s: float) -> int:
        """Heart rate (whole bpm) at recording time `t_s`, linearly interpolated."""
        return int(round(float(np.interp(t_s, self.times_s, self.bpm))))


def troika_trace_path(recording_path: str | Path) -> Path | None:
    """The reference BPM file that belongs to a TROIKA recording, if it exists."""
    path = Path(recording_path)
    stem = path.stem
    candidates = []
    if re.match(r"DATA_\d+_TYPE\d+$", stem):
        candidates.append(path.with_name(f"{stem}_BPMtrace.mat"))
    if m := re.match(r"TEST_(S\d+_T\d+)$", stem):
        candidates.append(path.parent.parent / "TrueBPM" / f"True_{m.group(1)}.mat")
    if m := re.match(r"DATA_(S\d+_T\d+)$", stem):
        candidates.append(path.with_name(f"BPM_{m.group(1)}.mat"))
    return next((c for c in candidates if c.exists()), None)


def load_trace(path: str | Path) -> HeartRateTrace:
    """A TROIKA-layout BPM file (variable BPM0, one value per 2 s step)."""
    from scipy.io import loadmat

    data = loadmat(str(path))
    if "BPM0" not in data:
        raise RecordingError(f"{path}: no 'BPM0' variable (expected a TROIKA BPM trace)")
    bpm = np.asarray(data["BPM0"], np.float64).ravel()
    return HeartRateTrace(WINDOW_S / 2 + STEP_S * np.arange(bpm.size), bpm)


def estimate_trace(recording: Recording) -> HeartRateTrace:
    """Spectral-peak heart rate (40–200 bpm) of the recording's PPG in 8 s windows."""
    names = [n.upper() for n in recording.channel_names]
    channel = next((i for i, n in enumerate(names) if n.startswith(("PPG", "PLETH"))), 0)
    x = recording.signals[channel]
    fs = recording.fs
    win, step = int(WINDOW_S * fs), int(STEP_S * fs)
    if x.size < win:
        raise RecordingError(f"{recording.name}: shorter than one {WINDOW_S:g} s heart-rate window")
    nfft = 1 << int(np.ceil(np.log2(win * 8)))
    freqs = np.fft.rfftfreq(nfft, 1 / fs) * 60
    band = (freqs >= 40) & (freqs <= 200)
    starts = np.arange(0, x.size - win + 1, step)
    bpm = np.empty(starts.size)
    for j, s in enumerate(starts):
        seg = x[s : s + win]
        seg = (seg - seg.mean()) * np.hanning(win)
        power = np.abs(np.fft.rfft(seg, nfft)) ** 2
        bpm[j] = freqs[band][np.argmax(power[band])]
    return HeartRateTrace((starts + win / 2) / fs, bpm)


def trace_for(recording: Recording) -> HeartRateTrace:
    """The reference trace when the recording has one, else the PPG estimate."""
    reference = troika_trace_path(recording.path) if recording.path else None
    return load_trace(reference) if reference else estimate_trace(recording)
