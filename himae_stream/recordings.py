"""Reading recordings: WFDB, TROIKA-layout MATLAB, CSV and NPY/NPZ.

One reader for the whole project (training, simulator, `himae embed`), so a
channel is named and scaled the same way everywhere. Every loader returns a
`Recording` with float64 signals `(channels, samples)`, the sampling rate and
channel names; channels are picked by name or glob (`PPG*`).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from himae_stream.errors import HimaeError

TROIKA_FS = 125.0
TROIKA_TRAIN_CHANNELS = ["ECG", "PPG1", "PPG2", "ACC_X", "ACC_Y", "ACC_Z"]
TROIKA_TEST_CHANNELS = ["PPG1", "PPG2", "ACC_X", "ACC_Y", "ACC_Z"]


class RecordingError(HimaeError):
    """A recording cannot be read or lacks what was asked of it."""


@dataclass
class Recording:
    name: str
    subject: str
    fs: float
    channel_names: list[str]
    signals: np.ndarray  # (channels, samples) float64
    path: str = ""
    comments: list[str] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return self.signals.shape[1] / self.fs

    def pick(self, patterns) -> "Recording":
        """Keep the channels matching `patterns` (names or globs, case-insensitive), in pattern order."""
        if isinstance(patterns, str):
            patterns = [p for p in patterns.split(",") if p]
        idx = []
        for pattern in patterns:
            hits = [i for i, n in enumerate(self.channel_names) if fnmatch.fnmatch(n.upper(), pattern.upper())]
            if not hits:
                raise RecordingError(
                    f"{self.name}: no channel matches {pattern!r} (channels: {', '.join(self.channel_names)})"
                )
            idx += [i for i in hits if i not in idx]
        return replace(self, channel_names=[self.channel_names[i] for i in idx], signals=self.signals[idx])

    def resampled(self, fs: float) -> "Recording":
        return replace(self, fs=float(fs), signals=resample(self.signals, self.fs, fs))


def match_channels(names, patterns, need: int, exact_count_ok: bool = False) -> list[int]:
    """Indices of the first `need` channels matching any of `patterns` (names or globs, in order).

    Patterns that match nothing are alternatives, not errors ("PPG1,PLETH"
    reads TROIKA and PhysioNet alike); too few matches is a RecordingError.
    With `exact_count_ok` (the patterns are only the model's own channel
    names), a source with exactly `need` channels and no match is read as is.
    """
    if isinstance(patterns, str):
        patterns = [p for p in patterns.split(",") if p]
    hits = [i for p in patterns for i, n in enumerate(names) if fnmatch.fnmatch(n.upper(), p.upper())]
    hits = list(dict.fromkeys(hits))[:need]
    if not hits and exact_count_ok and len(names) == need:
        return list(range(need))
    if len(hits) < need:
        raise RecordingError(
            f"need {need} channel(s) matching {', '.join(patterns)}; found {len(hits)} among {', '.join(names)}"
        )
    return hits


def resample(x: np.ndarray, fs_from: float, fs_to: float) -> np.ndarray:
    """Polyphase resampling along the last axis (anti-aliased FIR, zero phase)."""
    from scipy.signal import resample_poly

    if fs_from == fs_to:
        return np.asarray(x, dtype=np.float64)
    ratio = Fraction(fs_to / fs_from).limit_denominator(1000)
    return resample_poly(np.asarray(x, dtype=np.float64), ratio.numerator, ratio.denominator, axis=-1)


def load(path, channels=None, fs: float | None = None) -> Recording:
    """Read any supported recording; `channels` picks by name/glob; `fs` is needed for bare NPY."""
    path = Path(path)
    if path.suffix == "" and path.with_suffix(".hea").exists():
        path = path.with_suffix(".hea")
    if not path.exists():
        raise RecordingError(f"recording not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".hea" or (suffix in (".dat", ".mat") and path.with_suffix(".hea").exists()):
            rec = _load_wfdb(path)
        elif suffix == ".mat":
            rec = _load_troika(path)
        elif suffix == ".csv":
            rec = _load_csv(path, fs)
        elif suffix in (".npy", ".npz"):
            rec = _load_numpy(path, fs)
        else:
            raise RecordingError(f"{path}: unsupported recording type {suffix!r} (use WFDB, .mat, .csv, .npy or .npz)")
    except RecordingError:
        raise
    except (OSError, ValueError, KeyError, IndexError) as exc:
        raise RecordingError(f"cannot read recording {path}: {exc}") from exc
    if rec.signals.ndim != 2 or rec.signals.shape[1] == 0:
        raise RecordingError(f"{path}: recording holds no samples")
    return rec.pick(channels) if channels else rec


def _load_wfdb(path: Path) -> Recording:
    import wfdb

    record = wfdb.rdrecord(str(path.with_suffix("")))
    return Recording(
        name=record.record_name,
        subject=record.record_name,
        fs=float(record.fs),
        channel_names=list(record.sig_name),
        signals=np.asarray(record.p_signal, dtype=np.float64).T.copy(),
        path=str(path),
        comments=list(record.comments or []),
    )


def _load_troika(path: Path) -> Recording:
    from scipy.io import loadmat

    data = loadmat(str(path))
    if "sig" not in data:
        raise RecordingError(f"{path}: no 'sig' variable (expected the TROIKA layout)")
    sig = np.asarray(data["sig"], dtype=np.float64)
    if sig.shape[0] == 6:
        names = TROIKA_TRAIN_CHANNELS
    elif sig.shape[0] == 5:
        names = TROIKA_TEST_CHANNELS
    else:
        raise RecordingError(f"{path}: 'sig' has {sig.shape[0]} rows, TROIKA files have 5 or 6")
    return Recording(path.stem, troika_subject(path.stem), TROIKA_FS, list(names), sig, str(path))


def troika_subject(stem: str) -> str:
    """Subject id of a TROIKA file name, so splits never put one person on both sides."""
    if m := re.match(r"DATA_(\d+)_TYPE", stem):
        return f"troika-train-{m.group(1)}"
    if m := re.match(r"(?:DATA|TEST|True|BPM)_(S\d+)_T\d+", stem):
        kind = "test" if stem.startswith(("TEST", "True")) else "extra"
        return f"troika-{kind}-{m.group(1)}"
    return stem


def _load_csv(path: Path, fs: float | None) -> Recording:
    """CSV with a header row of channel names; a first column `time` (s) gives the rate."""
    with open(path) as f:
        header = f.readline().strip().split(",")
    data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    if data.shape[1] != len(header):
        raise RecordingError(f"{path}: header has {len(header)} columns, rows have {data.shape[1]}")
    if header[0].strip().lower() in ("time", "t", "time_s"):
        if len(data) < 2:
            raise RecordingError(f"{path}: too few rows to derive the sampling rate")
        fs = fs or float(1.0 / np.median(np.diff(data[:, 0])))
        header, data = header[1:], data[:, 1:]
    if not fs:
        raise RecordingError(f"{path}: no time column; give the sampling rate (fs=...)")
    return Recording(path.stem, path.stem, float(fs), [h.strip() for h in header], data.T.copy(), str(path))


def _load_numpy(path: Path, fs: float | None) -> Recording:
    """NPZ with `signals` (C, N), `fs` and optional `channel_names`; or bare NPY (C, N) / (N,) plus fs."""
    names = None
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            signals = z["signals"]
            fs = fs or float(z["fs"])
            names = [str(n) for n in z["channel_names"]] if "channel_names" in z else None
    else:
        signals = np.load(path, allow_pickle=False)
        if not fs:
            raise RecordingError(f"{path}: a .npy file carries no sampling rate; give fs=...")
    signals = np.atleast_2d(np.asarray(signals, dtype=np.float64))
    names = names or [f"ch{i}" for i in range(signals.shape[0])]
    if len(names) != signals.shape[0]:
        raise RecordingError(f"{path}: {len(names)} channel names for {signals.shape[0]} channels")
    return Recording(path.stem, path.stem, float(fs), names, signals, str(path))
