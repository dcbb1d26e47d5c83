"""Pretraining windows from the real recordings: channels, resampling, normalisation, quality, splits."""

import dataclasses

import numpy as np
import pytest
from collections import Counter

from conftest import BUNDLED, ECG_ONLY, V102S, WRIST_BIKE, WRIST_RUN, WRIST_WALK

from himae_stream.normalize import default_spec, normalize
from himae_stream.recordings import RecordingError, load, troika_subject
from training import get_config
from training.data import (Quality, build_rawset, clean_starts, find_recordings, load_datasets, recording_windows,
                           select_channels, split_subjects)


def test_finds_troika_recordings_without_their_label_files(data_dir):
    found = find_recordings(data_dir / "troika")
    assert len(found) == 23
    assert not any("BPM" in p.stem or p.stem.startswith("True_") for p in found)


def test_troika_split_keeps_every_subject_on_one_side(data_dir):
    config = get_config("himae-25")
    train, val = load_datasets(data_dir / "troika", config, seed=1)
    assert set(train.subjects).isdisjoint(val.subjects)
    everyone = {troika_subject(p.stem) for p in find_recordings(data_dir / "troika")}
    assert set(train.subjects) | set(val.subjects) == everyone
    assert len(set(val.subjects)) == round(0.2 * len(everyone))
    assert val.x.dtype == np.float32 and val.x.shape[1:] == (1, 250)
    assert np.isfinite(val.x).all() and np.abs(val.x).max() <= 1.0
    assert set(val.datasets) == set(train.counts()) == {"troika"}
    assert all(s.signal.dtype == np.float32 for s in train.sequences), "raw recordings kept as float32"
    other = load_datasets(data_dir / "troika", config, seed=2)[1]
    assert set(other.subjects) != set(val.subjects), "the split follows the seed"


def test_one_channel_model_trains_on_each_ppg_channel():
    # two wrist PPG channels beside the accelerometer, as TROIKA's sensor has
    rec = dataclasses.replace(load(WRIST_RUN), channel_names=["PPG1", "PPG2", "ACC_X", "ACC_Y", "ACC_Z"])
    seqs = select_channels(rec, "PPG*,PLETH", 1)
    assert [s.channel_names for s in seqs] == [["PPG1"], ["PPG2"]]
    (both,) = select_channels(rec, "PPG1,PPG2", 2)
    assert both.channel_names == ["PPG1", "PPG2"]
    with pytest.raises(RecordingError, match="no channel matches"):
        select_channels(rec, "PLETH", 1)
    with pytest.raises(RecordingError, match="matches 2 channels"):
        select_channels(rec, "PPG*", 3)


def test_stream_windows_are_slices_of_the_whole_recording_normalised():
    """Stream normalisation runs over the whole resampled recording before windowing."""
    config = get_config("himae-25")
    rec = load(WRIST_RUN).pick(["PPG"])
    x, skipped = recording_windows(rec, config, stride=100, quality=Quality())
    whole = normalize(rec.resampled(25.0).signals, config["normalizer"], 25.0)
    n = whole.shape[1]
    assert not skipped and len(x) == (n - 250) // 100 + 1
    np.testing.assert_array_equal(x[0], whole[:, :250])
    np.testing.assert_array_equal(x[7], whole[:, 700:950])


def test_minmax_windows_span_minus_one_to_one():
    config = get_config("himae-100", normalizer=default_spec("minmax"))
    rec = load(V102S).pick(["PLETH"])
    x, skipped = recording_windows(rec, config, stride=1000, quality=Quality())
    assert len(x) + skipped["nan"] == 30 and len(x) > 10  # 300 s; this PLETH has scattered NaNs
    np.testing.assert_allclose(x.min(axis=-1), -1.0)
    np.testing.assert_allclose(x.max(axis=-1), 1.0)


def test_quality_filter_skips_and_counts_bad_windows():
    """NaN, flat-line and clipped stretches put into a real PPG recording are found where they are."""
    config = get_config("himae-25")
    rec = load(WRIST_RUN).pick(["PPG"])
    fs = rec.fs  # 256 Hz raw; windows are 10 s at 25 Hz, stride 10 s
    clean, skipped = recording_windows(rec, config, stride=250, quality=Quality())
    assert not skipped
    sig = rec.signals.copy()
    sig[0, int(12 * fs) : int(12 * fs) + 3] = np.nan  # window 1
    sig[0, int(35 * fs) : int(38 * fs)] = sig[0, int(35 * fs)]  # window 3: 3 s flat line
    top = np.nanmax(sig[0]) + 50.0
    sig[0, int(51 * fs) : int(51 * fs) + 10] = top  # window 5: 10 samples at the rail
    bad = rec.__class__(**{**rec.__dict__, "signals": sig})
    x, skipped = recording_windows(bad, config, stride=250, quality=Quality())
    assert dict(skipped) == {"nan": 1, "flat": 1, "clipped": 1}
    keep = [i for i in range(len(clean)) if i not in (1, 3, 5)]
    assert len(x) == len(keep)
    # Windows far from the edits are unchanged except for the normaliser's memory of the edits.
    np.testing.assert_array_equal(x[0], clean[0])
    assert np.isfinite(x).all()


def test_raw_training_windows_skip_the_same_bad_stretches():
    """The on-the-fly training set finds NaN, flat and clipped stretches in the raw signal too."""
    config = get_config("himae-25")
    rec = load(WRIST_RUN).pick(["PPG"])
    fs = rec.fs
    starts, skipped = clean_starts(rec, config, 10.0, Quality())
    assert not sum(skipped.values()) and len(starts) == 12
    sig = rec.signals.copy()
    sig[0, int(12 * fs) : int(12 * fs) + 3] = np.nan
    sig[0, int(35 * fs) : int(38 * fs)] = sig[0, int(35 * fs)]
    sig[0, int(51 * fs) : int(51 * fs) + 10] = np.nanmax(sig[0]) + 50.0
    bad = dataclasses.replace(rec, signals=sig)
    raw = build_rawset([(bad, "wrist")], config, stride=250, quality=Quality())
    assert dict(raw.skipped["wrist"]) == {"nan": 1, "flat": 1, "clipped": 1}
    assert sorted(raw.index[:, 1] // int(10 * fs)) == [0, 2, 4, 6, 7, 8, 9, 10, 11]
    assert np.isfinite(raw.sequences[0].signal).all(), "NaNs bridged before the resampler sees them"


def test_real_nan_stretches_are_counted():
    train, val = load_datasets(V102S, get_config("himae-100"), val_fraction=0)
    assert train.skipped[V102S.parent.name]["nan"] > 0
    assert len(train) > 0 and len(val) == 0


def test_subjects_split_within_each_data_set():
    groups = {f"{d}:{i}": d for d, n in (("big", 20), ("mid", 5), ("pair", 2), ("one", 1)) for i in range(n)}
    train, val = split_subjects(list(groups), 0.2, seed=4, groups=groups)
    assert train.isdisjoint(val) and train | val == set(groups)
    per = Counter(groups[s] for s in val)
    assert per == {"big": 4, "mid": 1, "pair": 1}
    assert split_subjects(list(groups), 0.2, seed=5, groups=groups)[1] != val


def _corpus(tmp_path):
    """A small corpus laid out like ../shared/data: PhysioNet WFDB records and a wearable NPZ folder."""
    (tmp_path / "physionet").mkdir()
    (tmp_path / "WristPPG_Exercise").mkdir()
    for header in (BUNDLED, V102S):
        for part in header.parent.glob(header.stem + ".*"):
            (tmp_path / "physionet" / part.name).symlink_to(part)
    for npz in (WRIST_RUN, WRIST_WALK, WRIST_BIKE):
        (tmp_path / "WristPPG_Exercise" / npz.name).symlink_to(npz)
    (tmp_path / "WristPPG_Exercise" / "index.csv").write_text("record,subject\n")
    return tmp_path


def test_data_sets_and_recordings_can_be_left_out(tmp_path):
    root = _corpus(tmp_path)
    config = get_config("himae-25")
    train, val = load_datasets(root, config, val_fraction=0)
    assert set(train.counts()) == {"physionet", "WristPPG_Exercise"}
    assert {"a103l", "v102s"} <= set(train.subjects)
    train, _ = load_datasets(root, config, val_fraction=0, exclude_recordings=("a103l",))
    assert "a103l" not in set(train.subjects) and "v102s" in set(train.subjects)
    train, _ = load_datasets(root, config, val_fraction=0, exclude_datasets=("wristppg_*",))
    assert set(train.counts()) == {"physionet"}
    with pytest.raises(RecordingError, match="after the exclusions"):
        load_datasets(root, config, exclude_datasets=("*",))


def test_balanced_sampling_weights(tmp_path):
    train, _ = load_datasets(_corpus(tmp_path), get_config("himae-25"), val_fraction=0)
    names = train.dataset_of()
    share = lambda w: {d: w[names == d].sum() for d in set(names)}  # noqa: E731
    np.testing.assert_allclose(train.weights(1.0), 1 / len(train))
    np.testing.assert_allclose(list(share(train.weights(0.0)).values()), 0.5)
    counts = train.counts()
    half = share(train.weights(0.5))
    ratio = half["physionet"] / half["WristPPG_Exercise"]
    assert ratio == pytest.approx((counts["physionet"] / counts["WristPPG_Exercise"]) ** 0.5)


def test_window_longer_than_recording_is_an_error(tmp_path):
    path = tmp_path / "short.npz"
    np.savez(path, signals=np.sin(np.arange(200) / 5.0)[None], fs=25.0, channel_names=np.array(["PPG"]))
    with pytest.raises(RecordingError, match="longer than the recording"):
        load_datasets(path, get_config("himae-25"))


def test_a_recording_without_a_rate_says_where_training_reads_one(tmp_path):
    """Training has no --fs: the refusal names what the file itself must hold."""
    np.save(tmp_path / "bare.npy", np.zeros(5000))
    with pytest.raises(RecordingError, match=r"bare.npy: a .npy file carries no sampling rate; give it \(in the "
                                             r"file: an 'fs' array in an .npz, a time column in a CSV\)"):
        load_datasets(tmp_path / "bare.npy", get_config("himae-25"))


def test_folder_skips_recordings_without_the_channel_but_a_lone_file_fails(tmp_path):
    for header in (BUNDLED, V102S, ECG_ONLY):  # a folder of WFDB records, as PhysioNet's
        for part in header.parent.glob(header.stem + ".*"):
            (tmp_path / part.name).symlink_to(part)
    train, _ = load_datasets(tmp_path, get_config("himae-100"), val_fraction=0)
    assert set(train.subjects) == {"a103l", "v102s"}  # record 100 has only ECG
    assert train.counts() == {tmp_path.name: len(train)}
    with pytest.raises(RecordingError, match="no channel matches"):
        load_datasets(ECG_ONLY, get_config("himae-100"))
