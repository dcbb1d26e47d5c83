"""Pretraining windows from real recordings.

Recordings are read with `himae_stream.recordings` (WFDB, TROIKA .mat, CSV,
NPY), reduced to the channels asked for, resampled to the model rate and
normalised with the model's own normaliser: the stream kind over each whole
recording (exactly what the runtime sees), minmax per window. Windows that
contain NaN, flat-line or clipped stretches of the raw signal are skipped and
counted. Train and validation are split by subject, so no person is on both
sides.
"""

from __future__ import annotations

import fnmatch
import math
import random
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from himae_stream.normalize import normalize, validate_spec
from himae_stream.recordings import PPG_PATTERNS, Recording, RecordingError, load

RECORDING_SUFFIXES = (".hea", ".mat", ".csv", ".npy", ".npz")
DEFAULT_CHANNELS = ",".join(PPG_PATTERNS)  # every PPG channel, each its own sequence
QUALITY_KINDS = ("nan", "flat", "clipped")


@dataclass
class Quality:
    """Raw-signal quality rules: a flat line lasts `flat_s`; clipping is `clip_run` samples at the extreme."""

    flat_s: float = 1.0
    clip_run: int = 5


@dataclass
class Windows:
    """Normalised windows `(N, C, L)` float32 with each window's subject."""

    x: np.ndarray
    subjects: list[str]
    skipped: Counter = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.x)


def find_recordings(path) -> list[Path]:
    """Every recording under `path` (or `path` itself); companion files (BPM traces, .dat) are left out."""
    path = Path(path)
    if not path.exists():
        raise RecordingError(f"data path not found: {path}")
    if path.is_file():
        return [path]
    found = []
    for p in sorted(path.rglob("*")):
        if not p.is_file() or p.suffix.lower() not in RECORDING_SUFFIXES:
            continue
        if p.suffix.lower() == ".mat" and (p.with_suffix(".hea").exists() or _is_label_file(p)):
            continue
        found.append(p)
    if not found:
        raise RecordingError(f"no recordings (WFDB, .mat, .csv, .npy, .npz) under {path}")
    return found


def _is_label_file(path: Path) -> bool:
    """TROIKA heart-rate traces sit beside the recordings as .mat files too."""
    return "BPM" in path.stem or path.stem.startswith("True_")


def select_channels(rec: Recording, patterns: str, in_channels: int) -> list[Recording]:
    """The recording's channels matching any of `patterns`, as model inputs.

    With one input channel, every matching channel is its own sequence (both
    TROIKA wrist PPGs train a 1-channel model); otherwise exactly `in_channels`
    must match, in pattern order.
    """
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    present = [p for p in wanted if any(fnmatch.fnmatch(n.upper(), p.upper()) for n in rec.channel_names)]
    if not present:
        raise RecordingError(
            f"{rec.name}: no channel matches {patterns!r} (channels: {', '.join(rec.channel_names)})"
        )
    picked = rec.pick(present)
    if in_channels == 1:
        return [picked.pick([name]) for name in picked.channel_names]
    if len(picked.channel_names) != in_channels:
        raise RecordingError(
            f"{rec.name}: {patterns!r} matches {len(picked.channel_names)} channels "
            f"({', '.join(picked.channel_names)}), the model takes {in_channels}"
        )
    return [picked]


def bad_samples(x: np.ndarray, fs: float, quality: Quality) -> dict[str, np.ndarray]:
    """Per raw sample, whether it is NaN, inside a flat line or clipped (any channel)."""
    finite = np.isfinite(x)
    nan = ~finite.all(axis=0)
    flat = np.zeros(x.shape[1], dtype=bool)
    clipped = np.zeros(x.shape[1], dtype=bool)
    min_flat = max(2, int(round(quality.flat_s * fs)))
    for row, ok in zip(x, finite):
        if not ok.any():
            continue
        same = np.r_[False, np.diff(row) == 0]
        flat |= _runs_at_least(same, min_flat - 1, extend_back=1)
        lo, hi = np.min(row[ok]), np.max(row[ok])
        if hi > lo:
            clipped |= _runs_at_least((row == lo) | (row == hi), quality.clip_run)
    return {"nan": nan, "flat": flat, "clipped": clipped}


def _runs_at_least(hit: np.ndarray, length: int, extend_back: int = 0) -> np.ndarray:
    """Mark runs of True at least `length` long (each run widened `extend_back` samples to the left)."""
    out = np.zeros_like(hit)
    edges = np.flatnonzero(np.diff(np.r_[0, hit.astype(np.int8), 0]))
    for start, stop in zip(edges[::2], edges[1::2]):
        if stop - start >= length:
            out[max(0, start - extend_back) : stop] = True
    return out


def recording_windows(rec: Recording, config: dict, stride: int, quality: Quality) -> tuple[np.ndarray, Counter]:
    """Normalised windows of one recording (already reduced to the model's channels)."""
    fs, length = float(config["fs"]), int(config["window"])
    bad = bad_samples(rec.signals, rec.fs, quality)
    # NaNs would smear through the resampling filter into good windows: bridge them first.
    rec = replace(rec, signals=_bridge_gaps(rec.signals))
    resampled = rec.resampled(fs) if rec.fs != fs else rec
    n = resampled.signals.shape[1]
    if n < length:
        raise RecordingError(
            f"{rec.name}: window of {length} samples ({length / fs:g} s) is longer than the recording "
            f"({n} samples at {fs:g} Hz)"
        )
    spec = validate_spec(config["normalizer"])
    signal = resampled.signals
    if spec["kind"] == "stream":
        signal = normalize(signal, spec, fs)
    # Cumulative bad counts at the raw rate answer "any bad sample in [t0, t1)" per window.
    cum = {kind: np.r_[0, np.cumsum(mask)] for kind, mask in bad.items()}
    keep, skipped = [], Counter()
    for start in range(0, n - length + 1, stride):
        lo = math.floor(start / fs * rec.fs)
        hi = min(len(bad["nan"]), math.ceil((start + length) / fs * rec.fs))
        kind = next((k for k in QUALITY_KINDS if cum[k][hi] > cum[k][lo]), None)
        if kind:
            skipped[kind] += 1
        else:
            keep.append(signal[:, start : start + length])
    x = np.stack(keep).astype(np.float32) if keep else np.zeros((0, signal.shape[0], length), np.float32)
    if spec["kind"] == "minmax" and len(x):
        x = normalize(x, spec, fs)
    return x, skipped


def _bridge_gaps(x: np.ndarray) -> np.ndarray:
    """Non-finite samples replaced by linear interpolation (0 for an all-bad channel)."""
    out = np.array(x, dtype=np.float64)
    for row in out:
        ok = np.isfinite(row)
        if not ok.all():
            row[~ok] = np.interp(np.flatnonzero(~ok), np.flatnonzero(ok), row[ok]) if ok.any() else 0.0
    return out


def build_windows(recordings: list[Recording], config: dict, stride: int, quality: Quality) -> Windows:
    """Windows of many recordings; a recording shorter than one window is skipped and counted."""
    parts, subjects, skipped = [], [], Counter()
    errors = []
    for rec in recordings:
        try:
            x, rec_skipped = recording_windows(rec, config, stride, quality)
        except RecordingError as exc:
            skipped["short"] += 1
            errors.append(str(exc))
            continue
        skipped += rec_skipped
        parts.append(x)
        subjects += [rec.subject] * len(x)
    if recordings and skipped["short"] == len(recordings):
        raise RecordingError(errors[0])
    length, channels = int(config["window"]), int(config["in_channels"])
    x = np.concatenate(parts) if parts else np.zeros((0, channels, length), np.float32)
    return Windows(x, subjects, skipped)


def split_subjects(subjects: list[str], val_fraction: float, seed: int) -> tuple[set[str], set[str]]:
    """Disjoint train and validation subject sets; validation gets round(fraction · n), at least 1 of ≥ 2."""
    unique = sorted(set(subjects))
    random.Random(seed).shuffle(unique)
    n_val = 0 if len(unique) < 2 or val_fraction <= 0 else min(len(unique) - 1, max(1, round(val_fraction * len(unique))))
    return set(unique[n_val:]), set(unique[:n_val])


def load_datasets(
    data,
    config: dict,
    channels: str = DEFAULT_CHANNELS,
    stride: int | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    quality: Quality | None = None,
) -> tuple[Windows, Windows]:
    """Train and validation windows from one or more data paths (files or folders)."""
    paths = [p for item in ([data] if isinstance(data, (str, Path)) else data) for p in find_recordings(item)]
    stride = int(stride or config["window"] // 2)
    if stride < 1:
        raise ValueError(f"window stride must be at least 1 sample, got {stride}")
    sequences, errors = [], []
    for path in paths:
        try:
            sequences += select_channels(load(path), channels, int(config["in_channels"]))
        except RecordingError as exc:
            # In a folder, recordings without the wanted channels are left out; alone, they are an error.
            if len(paths) == 1:
                raise
            errors.append(str(exc))
    if not sequences:
        raise RecordingError(errors[0])
    train_subjects, val_subjects = split_subjects([s.subject for s in sequences], val_fraction, seed)
    quality = quality or Quality()
    train = build_windows([s for s in sequences if s.subject in train_subjects], config, stride, quality)
    val = build_windows([s for s in sequences if s.subject in val_subjects], config, stride, quality)
    if len(train) == 0:
        raise RecordingError(f"no usable training windows in {data} (skipped: {dict(train.skipped)})")
    return train, val
