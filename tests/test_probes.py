"""Probes: labels, window embeddings, fitting, grouped CV, baselines and the runtime heads."""

import json

import numpy as np
import pytest

from himae_stream import probes as heads
from himae_stream.headplan import Heads
from training import labels as lab
from training.probes import (Task, cross_validate, fit_head, fit_logistic, fit_ridge, positions, raw_features,
                             spectral_peak_hr, window_embeddings, _group_folds)
from training.quality import linear_fill, patch_mask

HR = Task("heart_rate", "ridge", "mae", unit="BPM")
ACTIVITY = Task("activity", "logistic", "balanced_accuracy", classes=("rest", "moderate", "fast"))


def test_bpm_windows_follow_the_troika_definition(data_dir):
    train = data_dir / "troika" / "Training_data" / "DATA_01_TYPE01.mat"
    hr = lab.troika_hr(train)
    # value i covers samples [250 i, 250 i + 1000) at 125 Hz
    np.testing.assert_allclose(hr.start_s * 125, 250 * np.arange(len(hr)))
    np.testing.assert_allclose(hr.end_s * 125, 250 * np.arange(len(hr)) + 1000)
    assert len(hr) == 148 and 60 < hr.values.mean() < 180
    assert lab.troika_bpm_path(data_dir / "troika" / "TestData" / "TEST_S01_T01.mat").name == "True_S01_T01.mat"
    extra = data_dir / "troika" / "Extra_TrainingData" / "DATA_S04_T01.mat"
    assert lab.troika_bpm_path(extra).name == "BPM_S04_T01.mat"
    short = lab.troika_hr(train, duration_s=100.0)
    assert short.end_s.max() <= 100.0 and len(short) == 47


def test_activity_follows_the_treadmill_schedule(data_dir):
    act = lab.troika_activity(data_dir / "troika" / "Training_data" / "DATA_02_TYPE02.mat")
    for s, e, v in zip(act.start_s, act.end_s, act.values):
        phase = [name for lo, hi, name in lab.TREADMILL_PHASES if lo <= s and e <= hi]
        assert phase == [v]
    # windows straddling a speed change are left out: 30 s rest holds windows starting at 0 … 22 s
    assert list(act.values[:13]) == ["rest"] * 12 + ["moderate"]
    assert act.start_s[12] == 30.0
    assert sorted(set(act.values)) == ["fast", "moderate", "rest"]
    with pytest.raises(lab.RecordingError, match="treadmill schedule"):
        lab.troika_activity(data_dir / "troika" / "TestData" / "TEST_S01_T01.mat")


def test_label_csv(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("recording,start,end,label\nrec_a.csv,0,8,72.5\nrec_a.csv,2,10,80\nrec_b,0,8,60\n")
    got = lab.read_csv(path)
    assert set(got) == {"rec_a", "rec_b"}
    assert got["rec_a"].values.dtype == np.float64 and list(got["rec_a"].values) == [72.5, 80.0]
    path.write_text("recording,start,end,label\nr,0,8,sit\nr,8,16,walk\n")
    assert list(lab.read_csv(path)["r"].values) == ["sit", "walk"]
    path.write_text("recording,begin,end,label\nr,0,8,sit\n")
    with pytest.raises(ValueError, match="lacks column"):
        lab.read_csv(path)
    path.write_text("recording,start,end,label\nr,9,8,sit\n")
    with pytest.raises(ValueError, match="start < end"):
        lab.read_csv(path)


def test_window_embeddings_average_the_positions_inside_the_window():
    rng = np.random.default_rng(0)
    fs, n = 100.0, 3000
    acts = [rng.normal(size=(4, -(-n // 2 ** (l + 1)))) for l in range(5)]
    start, end = np.array([0.0, 2.0, 13.0]), np.array([8.0, 10.0, 21.0])
    emb = window_embeddings(acts, start, end, fs)
    for l, a in enumerate(acts):
        for i, (s, e) in enumerate(zip(start * fs, end * fs)):
            inside = [p for p in range(a.shape[1]) if s <= 2 ** (l + 1) * p < e]
            np.testing.assert_allclose(emb[l][i], a[:, inside].mean(axis=1))
    assert positions(0, 1, 5, 100) == slice(1, 3)  # samples 2 and 4
    assert positions(4, 0, 32, 100) == slice(0, 1)


def test_spectral_peak_finds_a_pulse_rate():
    fs = 100.0
    t = np.arange(800) / fs
    rng = np.random.default_rng(1)
    windows = [np.sin(2 * np.pi * bpm / 60 * t) + 0.3 * np.sin(4 * np.pi * bpm / 60 * t) + 0.2 * rng.normal(size=t.size)
               for bpm in (55.0, 90.0, 150.0)]
    np.testing.assert_allclose(spectral_peak_hr(windows, fs), [55.0, 90.0, 150.0], atol=0.5)
    assert raw_features(windows, fs).shape == (3, 200)


def test_ridge_and_logistic_recover_known_relations():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(600, 8)) * rng.uniform(0.1, 10, 8) + rng.normal(size=8)
    y = 3.0 * (X[:, 0] - X[:, 0].mean()) / X[:, 0].std() + 100.0 + 0.1 * rng.normal(size=600)
    head = {"name": "hr", "level": 0, **fit_ridge(X, y, 1e-3)}
    assert np.abs(heads.predict(head, X) - y).mean() < 0.2
    classes = ["a", "b", "c"]
    labels = np.array(classes, dtype=object)[np.digitize(X[:, 1], np.quantile(X[:, 1], [1 / 3, 2 / 3]))]
    head = {"name": "cls", "level": 0, **fit_logistic(X, labels, classes, 1e-3)}
    assert np.mean(heads.predict(head, X) == labels) > 0.95
    p = heads.probabilities(head, X)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)


def test_cross_validation_never_tests_on_a_training_subject():
    rng = np.random.default_rng(3)
    groups = np.repeat(np.array([f"s{i}" for i in range(6)], dtype=object), 50)
    # Each subject has its own offset and no shared signal: pooled fitting would memorise
    # the offsets, subject-held-out scoring cannot, so the CV error stays at the offset spread.
    offsets = rng.normal(scale=10.0, size=6)
    X = np.repeat(np.eye(6), 50, axis=0) + 0.01 * rng.normal(size=(300, 6))
    y = np.repeat(offsets, 50) + rng.normal(scale=0.1, size=300)
    mae, pred = cross_validate(HR, X, y, groups)
    assert mae > 3.0
    folds = _group_folds(groups, 3)
    for test in folds:
        assert not set(groups[test]) & set(groups[~test])


def test_runtime_heads_refuse_bad_shapes_and_apply_json_heads():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(200, 32))
    y = X[:, 0] * 5 + 70
    groups = np.repeat(np.array(["a", "b", "c", "d"], dtype=object), 50)
    head = json.loads(json.dumps(fit_head(HR, X, y, groups, level=1)))
    heads.validate(head, [16, 32, 64])

    def window(x):  # per-level activations whose mean over positions is x at level 1
        return [np.zeros((16, 4)), np.repeat(np.asarray(x)[:, None], 4, axis=1), np.zeros((64, 4))]

    (out,) = Heads([head]).apply([window(X[0])], [8])
    assert out["heart_rate"] == pytest.approx(heads.predict(head, X[:1])[0])
    # several heads on one level each give their own prediction
    labels = np.array(["lo", "hi"], dtype=object)[(X[:, 1] > 0).astype(int)]
    cls = {"name": "sign", "level": 1, **fit_logistic(X, labels, ["lo", "hi"], 1e-3)}
    both = Heads([head, cls])
    outs = both.apply([window(x) for x in X[:20]], [8] * 20)
    assert len(outs) == 20 and both.apply([], []) == []
    for x, out in zip(X[:20], outs):
        assert out["heart_rate"] == pytest.approx(heads.predict(head, x)[0], rel=1e-9, abs=1e-9)
        assert out["sign"] == heads.predict(cls, x)[0]
        assert list(out["sign_p"].values()) == pytest.approx(heads.probabilities(cls, x)[0].tolist(), abs=1e-9)
    with pytest.raises(ValueError, match="features need"):
        heads.validate(head, [16, 16, 64])
    with pytest.raises(ValueError, match="not levels"):
        heads.validate({**head, "level": 3}, [16, 32, 64])
    with pytest.raises(ValueError, match="NaN"):
        heads.validate({**head, "bias": [float("nan")]}, [16, 32, 64])
    with pytest.raises(ValueError, match="kind"):
        heads.validate({**head, "kind": "tree"}, [16, 32, 64])


def test_patch_mask_and_linear_fill():
    mask = patch_mask(1000, 5, 0.8, np.random.default_rng(0))
    assert mask.sum() == 800 and (mask.reshape(-1, 5).all(axis=1) | ~mask.reshape(-1, 5).any(axis=1)).all()
    x = np.linspace(-1, 1, 1000)
    np.testing.assert_allclose(linear_fill(x, mask)[~mask], x[~mask])
    inner = mask & (np.arange(1000) > np.flatnonzero(~mask)[0]) & (np.arange(1000) < np.flatnonzero(~mask)[-1])
    np.testing.assert_allclose(linear_fill(x, mask)[inner], x[inner], atol=1e-12)
