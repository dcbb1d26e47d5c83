"""Per-window labels for probes: TROIKA heart-rate traces, treadmill activity, CSV.

Every label set is a `WindowLabels`: windows given in seconds from the start
of a recording, so the same labels serve models at any sampling rate. TROIKA's
`BPM0` value i covers samples [250·i, 250·i + 1000) at 125 Hz, i.e. the
8-second window starting at 2·i seconds.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from himae_stream.recordings import TROIKA_FS, RecordingError, is_number

BPM_WINDOW = 1000  # samples at 125 Hz: 8 s
BPM_STEP = 250  # samples at 125 Hz: 2 s
ACTIVITY_CLASSES = ("rest", "moderate", "fast")

# Treadmill schedule of the TROIKA training recordings (MANIFEST.md), seconds:
# rest 30 s, slow 1 min, fast 1 min, slow 1 min, fast 1 min, rest to the end.
# TYPE01 runs at 8 / 15 km/h, TYPE02 at 6 / 12 km/h; both map to the same
# intensity classes.
TREADMILL_PHASES = (
    (0.0, 30.0, "rest"),
    (30.0, 90.0, "moderate"),
    (90.0, 150.0, "fast"),
    (150.0, 210.0, "moderate"),
    (210.0, 270.0, "fast"),
    (270.0, float("inf"), "rest"),
)


@dataclass
class WindowLabels:
    """Labelled windows of one recording; `values` are floats (regression) or class names."""

    recording: str
    start_s: np.ndarray
    end_s: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.values)

    def subset(self, keep: np.ndarray) -> "WindowLabels":
        return WindowLabels(self.recording, self.start_s[keep], self.end_s[keep], self.values[keep])


def bpm_windows(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (s) of the first `n` TROIKA `BPM0` windows."""
    start = np.arange(n) * (BPM_STEP / TROIKA_FS)
    return start, start + BPM_WINDOW / TROIKA_FS


def troika_bpm_path(recording: Path) -> Path:
    """The `BPM0` file that belongs to a TROIKA recording file."""
    recording = Path(recording)
    stem = recording.stem
    if re.fullmatch(r"DATA_\d+_TYPE\d+", stem):
        candidates = [recording.with_name(f"{stem}_BPMtrace.mat")]
    elif m := re.fullmatch(r"DATA_(S\d+_T\d+)", stem):
        candidates = [recording.with_name(f"BPM_{m.group(1)}.mat")]
    elif m := re.fullmatch(r"TEST_(S\d+_T\d+)", stem):
        candidates = [recording.parent.parent / "TrueBPM" / f"True_{m.group(1)}.mat"]
    else:
        candidates = []
    for path in candidates:
        if path.exists():
            return path
    raise RecordingError(f"{recording}: no TROIKA BPM0 trace found for this recording")


def troika_hr(recording: Path, duration_s: float | None = None) -> WindowLabels:
    """Heart rate (BPM, from the ECG) per 8-s window, as shipped with TROIKA."""
    from scipy.io import loadmat

    data = loadmat(str(troika_bpm_path(recording)))
    if "BPM0" not in data:
        raise RecordingError(f"{recording}: BPM trace has no 'BPM0' variable")
    bpm = np.asarray(data["BPM0"], dtype=np.float64).ravel()
    start, end = bpm_windows(len(bpm))
    labels = WindowLabels(Path(recording).stem, start, end, bpm)
    return within(labels, duration_s)


def troika_activity(recording: Path, duration_s: float | None = None) -> WindowLabels:
    """Treadmill intensity per BPM0 window; windows that straddle a phase change are left out."""
    stem = Path(recording).stem
    if not re.fullmatch(r"DATA_\d+_TYPE0[12]", stem):
        raise RecordingError(f"{recording}: the treadmill schedule is known only for TROIKA training recordings")
    n = len(troika_hr(recording).values)
    start, end = bpm_windows(n)
    values = np.array([_phase(s, e) for s, e in zip(start, end)], dtype=object)
    known = np.array([v is not None for v in values])
    return within(WindowLabels(stem, start, end, values).subset(known), duration_s)


def _phase(start: float, end: float) -> str | None:
    for lo, hi, name in TREADMILL_PHASES:
        if lo <= start and end <= hi:
            return name
    return None


def within(labels: WindowLabels, duration_s: float | None) -> WindowLabels:
    """The windows that end inside a recording of `duration_s` seconds."""
    if duration_s is None:
        return labels
    return labels.subset(labels.end_s <= duration_s + 1e-9)


def read_csv(path: Path) -> dict[str, WindowLabels]:
    """Labels from a CSV with columns recording, start, end (seconds), label.

    `recording` is a recording's file stem; numeric labels make a regression
    task, anything else a classification task.
    """
    rows: dict[str, list[tuple[float, float, str]]] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"recording", "start", "end", "label"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: label CSV lacks column(s) {', '.join(sorted(missing))}")
        for i, row in enumerate(reader, start=2):
            try:
                start, end = float(row["start"]), float(row["end"])
            except ValueError:
                raise ValueError(f"{path}:{i}: start and end must be numbers (seconds)") from None
            if not 0 <= start < end:
                raise ValueError(f"{path}:{i}: need 0 <= start < end, got {start}, {end}")
            rows.setdefault(Path(row["recording"]).stem, []).append((start, end, row["label"].strip()))
    if not rows:
        raise ValueError(f"{path}: no labelled windows")
    numeric = all(is_number(v) for r in rows.values() for _, _, v in r)
    out = {}
    for name, r in rows.items():
        values = [float(v) for _, _, v in r] if numeric else [v for _, _, v in r]
        out[name] = WindowLabels(
            name,
            np.array([s for s, _, _ in r]),
            np.array([e for _, e, _ in r]),
            np.array(values, dtype=np.float64 if numeric else object),
        )
    return out

