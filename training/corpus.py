"""Labelled 8-s PPG windows of every data set in the shared corpus, for fitting and scoring heads.

One `Item` per recording: its PPG (raw, at the device rate), the data set it
belongs to (the unit of leave-one-dataset-out splits) and, per window, the
labels the data set supports:

- `hr` (BPM), independent of the PPG: TROIKA `BPM0` (ECG), WristPPG_Exercise
  beats (annotated R peaks; `training.ecg` where a recording has ECG but no
  beats), BUT PPG's ECG heart rate, AIST's per-session reference, the PhysioNet
  ICU records' ECG (the lead whose beats are most regular).
  The E4 sets' `hr_device` comes from the same PPG and is not used.
- `activity`: `rest` (seated or supine: the E4 sets' tasks, AIST, BUT at rest,
  TROIKA's rest phases, the ICU patients in bed) or `active` (walking, running, cycling: WristPPG,
  TROIKA's treadmill phases). STEP's `walking_activity_then_rest` mixes both
  and is left out.
- `good`: BUT PPG's expert good/poor label.

TROIKA's test recordings are `split="test"`: scored, never fitted. The
record the package bundles for its demo (`himae_stream.recordings.DEMO`) is in
none of them.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from himae_stream.recordings import DEMO, ECG_PATTERNS, PPG_PATTERNS, Recording, load
from training import ecg
from training import labels as lab

WINDOW_S = 8.0
STEP_S = 2.0
E4_STEP_S = 10.0
E4_MAX_WINDOWS = 60  # per recording and activity: the E4 sets are long and all seated
REST = ("seated_rest", "paced_deep_breathing", "typing", "stroop", "relax", "baseline_questionnaire", "interview",
        "hyperventilation", "questionnaire", "relax_baseline", "supine_rest", "rest")
ACTIVE = ("walking (treadmill)", "running (treadmill)", "cycling, high resistance", "cycling, low resistance")
ACTIVITY_CLASSES = ("rest", "active")
DATASETS = ("TROIKA", "WristPPG_Exercise", "BUT_PPG", "AIST", "STEP_E4", "StressPredict_E4", "PhysioNet_ICU")


@dataclass
class Item:
    """One recording's labelled windows (seconds from the PPG's start)."""

    dataset: str
    rec: Recording  # the PPG channel only
    split: str  # "fit" | "test"
    start_s: np.ndarray
    hr: np.ndarray  # float, NaN = unknown
    activity: np.ndarray  # object, None = unknown
    good: np.ndarray  # float 1/0, NaN = unknown

    @property
    def end_s(self) -> np.ndarray:
        return self.start_s + WINDOW_S

    def __len__(self) -> int:
        return len(self.start_s)


def _item(dataset, rec, split, start, hr=None, activity=None, good=None) -> Item:
    n = len(start)
    return Item(dataset, _ppg(rec), split,
                np.asarray(start, dtype=np.float64),
                np.full(n, np.nan) if hr is None else np.asarray(hr, dtype=np.float64),
                np.full(n, None, dtype=object) if activity is None else np.asarray(activity, dtype=object),
                np.full(n, np.nan) if good is None else np.asarray(good, dtype=np.float64))


def _named(rec: Recording, patterns) -> list[int]:
    """Indices of the recording's channels whose names match any of `patterns` (case-insensitive)."""
    return [i for i, n in enumerate(rec.channel_names) if any(fnmatch.fnmatch(n.upper(), p) for p in patterns)]


def _ppg(rec: Recording) -> Recording:
    return rec.pick([rec.channel_names[_named(rec, PPG_PATTERNS)[0]]])


def grid(duration_s: float, step: float = STEP_S) -> np.ndarray:
    n = int((duration_s - WINDOW_S) // step) + 1
    return np.arange(max(n, 0)) * step


def _activity_at(z, start: np.ndarray) -> np.ndarray:
    out = np.full(len(start), None, dtype=object)
    if "activity_labels" not in z:
        return out
    for name, a, b in zip(z["activity_labels"], z["activity_start_s"], z["activity_end_s"]):
        name = str(name)
        cls = "rest" if name in REST else "active" if name in ACTIVE else None
        inside = (start >= a) & (start + WINDOW_S <= b)
        out[inside] = cls
    return out


def troika(data_dir: Path) -> list[Item]:
    root = Path(data_dir) / "troika"
    out = []
    paths = [*sorted((root / "Training_data").glob("DATA_*_TYPE0?.mat")),
             *sorted((root / "Extra_TrainingData").glob("DATA_S*_T*.mat")),
             *sorted((root / "TestData").glob("TEST_S*_T*.mat"))]
    for path in paths:
        rec = load(path)
        hr = lab.troika_hr(path, rec.duration_s)
        act = None
        if re.fullmatch(r"DATA_\d+_TYPE0[12]", path.stem):
            a = lab.troika_activity(path, rec.duration_s)
            act = np.full(len(hr), None, dtype=object)
            idx = np.searchsorted(hr.start_s, a.start_s)
            act[idx] = ["rest" if v == "rest" else "active" for v in a.values]
        split = "test" if path.stem.startswith("TEST") else "fit"
        out.append(_item("TROIKA", rec, split, hr.start_s, hr.values, act))
    return out


def ecg_window_hr(z, start: np.ndarray) -> np.ndarray:
    """Window heart rate from the recording's annotated beats, else from R peaks found in its ECG."""
    if "ecg_beats_s" in z:
        beats = np.asarray(z["ecg_beats_s"], dtype=np.float64)
    else:
        beats = ecg.r_peaks(z["ecg"], float(z["fs_ecg"]))
    return ecg.window_hr(beats, start, start + WINDOW_S)


def wristppg(data_dir: Path) -> list[Item]:
    out = []
    for path in sorted((Path(data_dir) / "WristPPG_Exercise").glob("*.npz")):
        rec = load(path)
        with np.load(path) as z:
            start = grid(rec.duration_s)
            out.append(_item("WristPPG_Exercise", rec, "fit", start, ecg_window_hr(z, start), _activity_at(z, start)))
    return out


def but(data_dir: Path) -> list[Item]:
    out = []
    for path in sorted((Path(data_dir) / "BUT_PPG_subset").glob("*.npz")):
        rec = load(path)
        with np.load(path) as z:
            # the last whole 8 s (to 0.1 s): the normaliser has settled
            start = np.array([max(math.floor((rec.duration_s - WINDOW_S) * 10) / 10, 0.0)])
            motion = str(z["motion"]) if "motion" in z else ""
            out.append(_item("BUT_PPG", rec, "fit", start, [float(z["hr_ref"][0])],
                             ["rest"] if motion == "rest" else None, [float(z["quality_label"])]))
    return out


def aist(data_dir: Path) -> list[Item]:
    out = []
    for path in sorted((Path(data_dir) / "AIST_OneMonthWrist").glob("*.npz")):
        rec = load(path)
        with np.load(path) as z:
            n = z["ppg"].shape[0]
            tile = z["ppg"].shape[1] / float(z["fs_ppg"])  # windows tile the session end to end
            start = np.arange(n) * tile
            keep = ~np.asarray(z["zero_window"], bool)
            keep[0] = False  # the normaliser settles over the first window
            out.append(_item("AIST", rec, "fit", start[keep], np.asarray(z["hr_ref"], float)[keep],
                             np.full(int(keep.sum()), "rest", dtype=object)))
    return out


def e4(data_dir: Path, name: str) -> list[Item]:
    out = []
    for path in sorted((Path(data_dir) / name).glob("*.npz")):
        rec = load(path)
        with np.load(path) as z:
            start = grid(rec.duration_s, E4_STEP_S)
            act = _activity_at(z, start)
        keep = np.zeros(len(start), bool)
        for cls in ACTIVITY_CLASSES:
            idx = np.flatnonzero(act == cls)
            keep[idx[np.linspace(0, len(idx) - 1, min(len(idx), E4_MAX_WINDOWS)).astype(int)] if len(idx) else []] = True
        out.append(_item(name, rec, "fit", start[keep], None, act[keep]))
    return out


def physionet_icu(data_dir: Path) -> list[Item]:
    """ICU patients' bedside finger PPG (PhysioNet/CinC Challenge 2015 alarm records), in bed: rest;
    heart rate from the ECG. Records without a PPG (MIT-BIH's ECG) and the demo record are left out."""
    out = []
    for path in sorted((Path(data_dir) / "physionet").glob("*.hea")):
        if path.stem == DEMO.stem:
            continue
        rec = load(path)
        leads = _named(rec, ECG_PATTERNS)
        if not leads or not _named(rec, PPG_PATTERNS):
            continue
        start = grid(rec.duration_s)
        beats = ecg.regular_beats([rec.signals[i] for i in leads], rec.fs)
        out.append(_item("PhysioNet_ICU", rec, "fit", start, ecg.window_hr(beats, start, start + WINDOW_S),
                         np.full(len(start), "rest", dtype=object)))
    return out


def corpus(data_dir: Path, datasets=DATASETS) -> list[Item]:
    """Every labelled recording of the named data sets."""
    readers = {"TROIKA": troika, "WristPPG_Exercise": wristppg, "BUT_PPG": but, "AIST": aist,
               "STEP_E4": lambda d: e4(d, "STEP_E4"), "StressPredict_E4": lambda d: e4(d, "StressPredict_E4"),
               "PhysioNet_ICU": physionet_icu}
    items = []
    for name in datasets:
        items += [i for i in readers[name](Path(data_dir)) if len(i)]
    return items


def fixture_items(paths) -> list[Item]:
    """WristPPG-style NPZ cuts (tests/data): HR from their beats, activity from their labels."""
    out = []
    for path in paths:
        rec = load(path)
        with np.load(path) as z:
            start = grid(rec.duration_s)
            out.append(_item(str(z["dataset"]) if "dataset" in z else Path(path).stem, rec, "fit", start,
                             ecg_window_hr(z, start), _activity_at(z, start)))
    return out
