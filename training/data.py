"""Pretraining windows from real recordings.

Recordings are read with `himae_stream.recordings` (WFDB, TROIKA .mat, CSV,
NPY/NPZ) and reduced to the channels asked for. Windows that contain NaN,
flat-line or clipped stretches of the raw signal are skipped and counted,
per data set. Train and validation are split by subject within each data
set, so no person is on both sides.

Validation windows are fixed: each recording resampled to the model rate and
normalised whole with the model's normaliser, exactly what the runtime sees.
Training keeps the raw recordings (float32, their own rate) and cuts each
window on the fly (`training_window`): a raw segment with a lead-in, an
optional device-like augmentation (`training.augment`), the runtime's
resampler, the normaliser run from the segment's start, and the window cut
from its end, so training inputs are distributed like the runtime's.
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
from himae_stream.recordings import PPG_PATTERNS, Recording, RecordingError, find_recordings, load, resample
from training.augment import Policy, augment

#: seconds of signal the normaliser runs over before a training window starts
LEAD_S = 20.0
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
    datasets: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class Sequence:
    """One recording's model channels, raw (float32, NaNs bridged), and where its clean windows start."""

    name: str
    subject: str
    dataset: str
    fs: float
    signal: np.ndarray  # (C, n) at fs
    starts: np.ndarray  # raw sample index of each clean window


@dataclass
class RawSet:
    """Training windows as (sequence, start) pairs over raw recordings kept in memory."""

    sequences: list[Sequence]
    index: np.ndarray  # (N, 2) int64: sequence, raw start
    skipped: dict[str, Counter]  # per data set

    def __len__(self) -> int:
        return len(self.index)

    @property
    def subjects(self) -> list[str]:
        return [self.sequences[i].subject for i in self.index[:, 0]]

    def dataset_of(self) -> np.ndarray:
        """Each window's data set name."""
        names = np.array([s.dataset for s in self.sequences], dtype=object)
        return names[self.index[:, 0]] if len(self.index) else np.array([], dtype=object)

    def counts(self) -> dict[str, int]:
        """Clean windows per data set."""
        return dict(sorted(Counter(self.dataset_of()).items()))

    def weights(self, balance: float) -> np.ndarray:
        """Sampling probability per window: a data set with n windows gets a share ∝ n**balance
        (1: every window alike, 0: every data set alike)."""
        names = self.dataset_of()
        counts = Counter(names)
        w = np.array([counts[n] ** (balance - 1.0) for n in names], dtype=np.float64)
        return w / w.sum()


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


def build_windows(recordings: list[Recording], config: dict, stride: int, quality: Quality,
                  datasets: list[str] | None = None) -> Windows:
    """Windows of many recordings; a recording shorter than one window is skipped and counted."""
    parts, subjects, skipped, names = [], [], Counter(), []
    errors = []
    datasets = datasets or [""] * len(recordings)
    for rec, dataset in zip(recordings, datasets):
        try:
            x, rec_skipped = recording_windows(rec, config, stride, quality)
        except RecordingError as exc:
            skipped["short"] += 1
            errors.append(str(exc))
            continue
        skipped += rec_skipped
        parts.append(x)
        subjects += [rec.subject] * len(x)
        names += [dataset] * len(x)
    if recordings and skipped["short"] == len(recordings):
        raise RecordingError(errors[0])
    length, channels = int(config["window"]), int(config["in_channels"])
    x = np.concatenate(parts) if parts else np.zeros((0, channels, length), np.float32)
    return Windows(x, subjects, skipped, names)


def split_subjects(subjects: list[str], val_fraction: float, seed: int,
                   groups: dict[str, str] | None = None) -> tuple[set[str], set[str]]:
    """Disjoint train and validation subject sets; within each group (data set), validation gets
    round(fraction · n) subjects, at least 1 of a group of ≥ 2."""
    by_group: dict[str, list[str]] = {}
    for subject in sorted(set(subjects)):
        by_group.setdefault((groups or {}).get(subject, ""), []).append(subject)
    rng = random.Random(seed)
    train, val = set(), set()
    for group in sorted(by_group):
        unique = by_group[group]
        rng.shuffle(unique)
        n_val = 0 if len(unique) < 2 or val_fraction <= 0 else min(len(unique) - 1, max(1, round(val_fraction * len(unique))))
        train.update(unique[n_val:])
        val.update(unique[:n_val])
    return train, val


def dataset_name(rec: Recording) -> str:
    """The data set a recording belongs to: its folder (TROIKA's recordings span three folders)."""
    if rec.subject.startswith("troika-"):
        return "troika"
    return Path(rec.path).parent.name if rec.path else rec.name


def _matches(name: str, patterns) -> bool:
    return any(fnmatch.fnmatch(name.lower(), p.lower()) for p in patterns)


def load_sequences(data, config: dict, channels: str = DEFAULT_CHANNELS, exclude_recordings=(),
                   exclude_datasets=()) -> list[tuple[Recording, str]]:
    """The model-channel sequences of every recording under `data`, each with its data set name.

    Recordings whose name (file stem) or data set matches an exclusion glob are left out.
    """
    paths = [p for item in ([data] if isinstance(data, (str, Path)) else data) for p in find_recordings(item)]
    paths = [p for p in paths if not _matches(p.stem, exclude_recordings)]
    sequences, errors = [], []
    for path in paths:
        try:
            rec = load(path, rate_of=channels,
                       rate_hint="in the file: an 'fs' array in an .npz, a time column in a CSV")
            dataset = dataset_name(rec)
            if _matches(dataset, exclude_datasets):
                continue
            sequences += [(s, dataset) for s in select_channels(rec, channels, int(config["in_channels"]))]
        except RecordingError as exc:
            # In a folder, recordings without the wanted channels are left out; alone, they are an error.
            if len(paths) == 1:
                raise
            errors.append(str(exc))
    if not sequences:
        raise RecordingError(errors[0] if errors else f"no recordings left in {data} after the exclusions")
    return sequences


def clean_starts(rec: Recording, config: dict, stride_s: float, quality: Quality) -> tuple[np.ndarray, Counter]:
    """Raw sample index of every window (one model window long, `stride_s` apart) without a bad sample."""
    fs = rec.fs
    n_win = math.ceil(config["window"] / config["fs"] * fs)
    n = rec.signals.shape[1]
    bad = bad_samples(rec.signals, fs, quality)
    cum = {kind: np.r_[0, np.cumsum(mask)] for kind, mask in bad.items()}
    starts = np.unique(np.round(np.arange(0, max(0, n - n_win) + 1e-9, stride_s * fs)).astype(np.int64))
    starts = starts[starts + n_win <= n]
    ok = np.ones(len(starts), dtype=bool)
    skipped = Counter()
    for kind in QUALITY_KINDS:
        hit = ok & (cum[kind][starts + n_win] > cum[kind][starts])
        skipped[kind] += int(hit.sum())
        ok &= ~hit
    return starts[ok], skipped


def build_rawset(sequences: list[tuple[Recording, str]], config: dict, stride: int, quality: Quality) -> RawSet:
    """Training windows of many recordings, kept raw; recordings shorter than a window are counted."""
    seqs, index, skipped, short = [], [], {}, []
    for rec, dataset in sequences:
        counter = skipped.setdefault(dataset, Counter())
        starts, rec_skipped = clean_starts(rec, config, stride / config["fs"], quality)
        if rec.duration_s < config["window"] / config["fs"]:
            counter["short"] += 1
            short.append(f"{rec.name}: window of {config['window']} samples ({config['window'] / config['fs']:g} s) "
                         f"is longer than the recording ({rec.duration_s:g} s)")
            continue
        counter.update(rec_skipped)
        seq = Sequence(rec.name, rec.subject, dataset, rec.fs, _bridge_gaps(rec.signals).astype(np.float32), starts)
        index += [(len(seqs), int(s)) for s in starts]
        seqs.append(seq)
    if sequences and len(short) == len(sequences):
        raise RecordingError(short[0])
    index = np.array(index, dtype=np.int64).reshape(-1, 2)
    return RawSet(seqs, index, skipped)


def training_window(seq: Sequence, start: int, config: dict, rng: np.random.Generator | None = None,
                    policy: Policy | None = None, lead_s: float = LEAD_S) -> np.ndarray:
    """One normalised model window `(C, L)` float32 starting at raw sample `start` of `seq`.

    The raw segment begins up to `lead_s` before the window, so the stream
    normaliser has settled by the window as it has in the runtime; with a
    policy, the segment is first augmented (every channel alike: one device).
    """
    fs, length = float(config["fs"]), int(config["window"])
    n_win = math.ceil(length / fs * seq.fs)
    lead = min(start, int(round(lead_s * seq.fs)))
    segment = seq.signal[:, start - lead : start + n_win].astype(np.float64)
    child = int(rng.integers(2**63)) if policy is not None else 0
    rows = []
    for row in segment:
        rate = seq.fs
        if policy is not None:
            row, rate = augment(row, seq.fs, np.random.default_rng(child), policy, region=(lead, lead + n_win))
        rows.append(resample(row[None], rate, fs)[0] if rate != fs else row)
    x = np.stack(rows)
    spec = validate_spec(config["normalizer"])
    if spec["kind"] == "stream":
        x = normalize(x, spec, fs)
    k = int(round(lead / seq.fs * fs))
    k = max(0, min(k, x.shape[1] - length))
    window = x[:, k : k + length]
    if window.shape[1] < length:  # a recording exactly one window long can lose a sample to rounding
        window = np.pad(window, ((0, 0), (0, length - window.shape[1])), mode="edge")
    if spec["kind"] == "minmax":
        window = normalize(window, spec, fs)
    return np.asarray(window, dtype=np.float32)


def load_datasets(
    data,
    config: dict,
    channels: str = DEFAULT_CHANNELS,
    stride: int | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    quality: Quality | None = None,
    exclude_recordings=(),
    exclude_datasets=(),
    val_stride: int | None = None,
) -> tuple[RawSet, Windows]:
    """Training windows (raw, cut on the fly) and fixed validation windows, split by subject per data set."""
    stride = int(stride or config["window"] // 2)
    if stride < 1:
        raise ValueError(f"window stride must be at least 1 sample, got {stride}")
    sequences = load_sequences(data, config, channels, exclude_recordings, exclude_datasets)
    groups = {rec.subject: dataset for rec, dataset in sequences}
    train_subjects, val_subjects = split_subjects(list(groups), val_fraction, seed, groups)
    quality = quality or Quality()
    train = build_rawset([(r, d) for r, d in sequences if r.subject in train_subjects], config, stride, quality)
    val_recs = [(r, d) for r, d in sequences if r.subject in val_subjects]
    val = build_windows([r for r, _ in val_recs], config, int(val_stride or stride), quality,
                        datasets=[d for _, d in val_recs])
    if len(train) == 0:
        skipped = {d: dict(c) for d, c in train.skipped.items()}
        raise RecordingError(f"no usable training windows in {data} (skipped: {skipped})")
    return train, val
