"""The heads a record shows: spectral heart rate, quality labels and corruptions, ECG labels,
leave-one-dataset-out splits, the ship rule, and the live buffer of per-position activations."""

import numpy as np
import pytest
from conftest import WRIST_BIKE, WRIST_RUN, WRIST_WALK

from himae_stream import probes as P
from himae_stream.headplan import Heads
from himae_stream.recordings import DEMO
from training import corpus as C
from training import ecg
from training import heads as H


def _acts(freq_hz, fs=100.0, span=800, channels=(16, 32, 64, 128, 256), noise=0.0, seed=0):
    """Per-level activations over one window: every channel a sinusoid at `freq_hz` (random phase)."""
    rng = np.random.default_rng(seed)
    out = []
    for l, c in enumerate(channels):
        rate = fs / 2 ** (l + 1)
        t = np.arange(span // 2 ** (l + 1)) / rate
        phase = rng.uniform(0, 2 * np.pi, (c, 1))
        out.append(np.sin(2 * np.pi * freq_hz * t + phase) + noise * rng.normal(size=(c, t.size)) + 3.0)
    return out


def _rate(head, acts):
    """A spectral head's rate for one 8-s window at 100 Hz, as records show it."""
    (out,) = Heads([head], 100.0).apply([acts], [800])
    return out[head["name"]]


def test_spectral_head_reads_78_bpm_from_a_1_3_hz_sinusoid():
    head = {"name": "heart_rate", "kind": "spectral", "levels": [0, 1, 2, 3], "weights": [1, 1, 1, 1],
            "band_hz": [0.7, 3.5]}
    P.validate(head, [16, 32, 64, 128, 256])
    assert _rate(head, _acts(1.3)) == pytest.approx(78.0, abs=0.3)
    for bpm in (48.0, 61.5, 97.0, 143.0, 180.0):
        assert _rate(head, _acts(bpm / 60, noise=0.5, seed=int(bpm))) == pytest.approx(bpm, abs=1.0)
    # a level whose Nyquist rate is under the band's top still adds what it resolves
    assert _rate({**head, "levels": [3], "weights": [1]}, _acts(1.3)) == pytest.approx(78, abs=0.5)
    flat = [np.zeros_like(a) for a in _acts(1.3)]
    assert _rate(head, flat) is None  # no pulse, no number
    with pytest.raises(ValueError, match="weights"):
        P.validate({**head, "weights": [1, 1]}, [16, 32, 64, 128, 256])
    with pytest.raises(ValueError, match="not levels"):
        P.validate({**head, "levels": [0, 5], "weights": [1, 1]}, [16, 32, 64, 128, 256])


def test_window_records_read_each_head_as_its_kind():
    """Rates (NaN: none), a ridge score, a probability (no overflow at large scores) and a logistic head's
    class (the first on a tie) with its softmax probabilities, per window."""
    from himae_stream._core import LOGISTIC, PROBABILITY, RIDGE, window_records

    rates = np.array([[72.5], [np.nan], [60.0]])
    scores = np.array([[1.5, 800.0, 0.2, 0.2, -1.0],
                       [np.nan, -800.0, 3.0, -1.0, 0.0],
                       [0.0, 0.0, 0.0, 1.0, 1.0]])
    fields = (("hrv", RIDGE, 0, 1, (), "hrv_p"), ("quality", PROBABILITY, 1, 2, (), "quality_p"),
              ("activity", LOGISTIC, 2, 5, ("rest", "walk", "run"), "activity_p"))
    got = window_records(rates, scores, ("heart_rate",), fields)
    assert [r["heart_rate"] for r in got] == [72.5, None, 60.0]
    assert [r["hrv"] for r in got] == [1.5, None, 0.0]
    assert [r["quality"] for r in got] == [1.0, 0.0, 0.5]
    assert [r["activity"] for r in got] == ["rest", "rest", "walk"]
    for record, row in zip(got, scores[:, 2:]):
        e = np.exp(row - row.max())
        np.testing.assert_allclose(list(record["activity_p"].values()), e / e.sum(), rtol=1e-15)
        assert list(record["activity_p"]) == ["rest", "walk", "run"]


def test_heads_not_default_stay_out_of_records_unless_asked():
    hr = {"name": "heart_rate", "kind": "spectral", "levels": [0], "weights": [1.0]}
    act = {"name": "activity", "kind": "spectral", "levels": [1], "weights": [1.0], "default": False}
    assert [h["name"] for h in Heads([hr, act])] == ["heart_rate"]
    assert [h["name"] for h in Heads([hr, act], everything=True)] == ["heart_rate", "activity"]


def test_a_gated_rate_is_withheld_where_its_quality_is_low():
    """A head with `withheld_below` shows null where the gating probability head is below its bound;
    the gate is computed even when records leave it out, and never shown then."""
    channels = (16, 32, 64, 128, 256)
    purity = {"name": "quality", "kind": "probability", "levels": [], "purity_levels": [0],
              "mean": [0.0], "std": [1.0], "weights": [[40.0]], "bias": [-20.0]}  # P > 0.5 iff purity > 0.5
    hr = {"name": "heart_rate", "kind": "spectral", "levels": [0], "weights": [1.0],
          "withheld_below": {"head": "quality", "probability": 0.5}}
    tone, noise = _acts(1.3), [np.random.default_rng(3).normal(size=a.shape) for a in _acts(1.3)]
    for shown in ([hr, purity], [hr, {**purity, "default": False}]):
        clean, noisy = Heads(shown, 100.0).apply([tone, noise], [800, 800])
        assert clean["heart_rate"] == pytest.approx(78.0, abs=0.3)
        assert noisy["heart_rate"] is None
        assert ("quality" in clean) == P.is_default(shown[1])
        assert clean.get("quality", 1.0) > 0.5 > noisy.get("quality", 0.0)
    ungated = Heads([{k: v for k, v in hr.items() if k != "withheld_below"}], 100.0).apply([noise], [800])[0]
    assert ungated["heart_rate"] is not None  # noise has a spectral peak; the gate is what withholds it
    for bad in ({"head": "heart_rate", "probability": 0.5}, {"head": "quality", "probability": 2},
                {"head": "missing", "probability": 0.5}, "quality"):
        with pytest.raises(ValueError, match="withheld_below"):
            Heads([{**hr, "withheld_below": bad}, purity], 100.0)
    P.validate(purity, list(channels))


def test_probability_head_on_pooled_features_is_in_0_1():
    rng = np.random.default_rng(0)
    acts = _acts(1.3, channels=(4, 8), noise=0.3)
    head = {"name": "quality", "kind": "probability", "levels": [0, 1], "pool": ["mean", "std"],
            "purity_levels": [1], "basis": [np.eye(8)[:3].tolist()]}
    dim = P.feature_size(head, [4, 8])
    assert dim == 2 * 4 + 2 * 8 + 1
    head.update(mean=[0.0] * dim, std=[1.0] * dim, weights=[rng.normal(size=dim).tolist()], bias=[0.3])
    P.validate(head, [4, 8])
    (x,) = Heads([head], 100.0).features([acts], [800])
    assert x.shape == (dim,) and 0.5 < x[-1] <= 1  # purity: a pure tone keeps most power at its peak
    np.testing.assert_allclose(x[:4], acts[0].mean(axis=1))
    np.testing.assert_allclose(x[4:8], acts[0].std(axis=1), rtol=1e-6)
    with pytest.raises(ValueError, match="basis of level 1"):
        P.validate({**head, "basis": [np.eye(4).tolist()]}, [4, 8])
    (out,) = Heads([head], 100.0).apply([acts], [800])
    assert 0.0 <= out["quality"] <= 1.0
    assert out["quality"] == pytest.approx(P.predict(head, x[None])[0])


def test_positions_buffer_gives_the_offline_positions():
    """Chunks of a stream's per-push output, buffered, give each window exactly the positions
    `positions` selects from the whole recording, whatever the activations' memory layout."""
    rng = np.random.default_rng(1)
    channels, n = [2, 3, 4], 5000
    whole = [rng.normal(size=(c, -(-n // 2 ** (l + 1)))).astype(np.float32) for l, c in enumerate(channels)]
    buf = P.Positions(channels, keep=1200)
    emitted = [0, 0, 0]
    for i, cut in enumerate(np.cumsum(rng.integers(1, 300, size=100))):
        levels = []
        for l, a in enumerate(whole):
            upto = min(int(cut) // 2 ** (l + 1), a.shape[1])
            acts = a[:, emitted[l]:upto]  # as the engine gives them (each position's channels together), or not
            levels.append((np.arange(emitted[l], upto), np.asfortranarray(acts) if i % 2 else acts))
            emitted[l] = upto
        buf.add(levels)
        end = min(int(cut), n) // 8 * 8 - 8  # a window whose positions have all arrived
        if end >= 800:
            for l, a in enumerate(whole):
                np.testing.assert_array_equal(buf.window(end - 800, end)[l],
                                              a[:, P.positions(l, end - 800, end, a.shape[1])])
    with pytest.raises(ValueError, match="jump"):
        buf.add([(np.array([10**6]), np.zeros((2, 1), np.float32))] + [(np.zeros(0, int), None)] * 2)


@pytest.mark.parametrize("path", [WRIST_RUN, WRIST_WALK, WRIST_BIKE])
def test_ecg_r_peaks_give_the_annotated_window_heart_rate(path):
    z = np.load(path)
    beats = ecg.r_peaks(z["ecg"], float(z["fs_ecg"]))
    start = z["hr_ref_t_start_s"]
    ours = ecg.window_hr(beats, start, start + 8.0)
    reference = ecg.window_hr(z["ecg_beats_s"], start, start + 8.0)
    assert np.isfinite(ours).all()
    assert np.median(np.abs(ours - reference)) <= 1.0
    np.testing.assert_allclose(reference, z["hr_ref"], atol=0.05)  # the data set's own definition


def _ecg(beats_s: np.ndarray, fs: float, duration_s: float, t_height: float) -> np.ndarray:
    """A synthetic ECG lead: a narrow R wave at each beat and a T wave `t_height` times its size 0.3 s later
    (a T wave as tall and sharp as the R wave is what a lead's detector takes for a beat)."""
    t = np.arange(int(duration_s * fs)) / fs
    x = np.zeros_like(t)
    for b in beats_s:
        x += np.exp(-0.5 * ((t - b) / 0.012) ** 2) + t_height * np.exp(-0.5 * ((t - b - 0.3) / 0.015) ** 2)
    return x + 0.01 * np.random.default_rng(1).normal(size=t.size)


def test_ecg_heart_rate_comes_from_the_lead_whose_beats_are_regular():
    fs, beats = 250.0, np.arange(0.5, 60.0, 60.0 / 103)  # 103 BPM
    tall_t, clean = _ecg(beats, fs, 60.0, 1.0), _ecg(beats, fs, 60.0, 0.15)
    start = np.arange(0.0, 50.0, 2.0)
    assert np.nanmedian(ecg.window_hr(ecg.r_peaks(tall_t, fs), start, start + 8.0)) > 150  # its T waves counted
    for leads in ([tall_t, clean], [clean, tall_t]):
        hr = ecg.window_hr(ecg.regular_beats(leads, fs), start, start + 8.0)
        np.testing.assert_allclose(hr, 103.0, atol=0.5)


def test_icu_records_are_at_rest_with_their_ecg_rate_and_the_demo_is_never_one(tmp_path):
    """A PhysioNet ICU record (the bundled one, under another name) gives rest windows and the ECG's heart
    rate; under its own name it is the demo, which no data set holds."""
    folder = tmp_path / "physionet"
    folder.mkdir()
    for name in ("a103l", "icu01"):
        (folder / f"{name}.hea").write_text(DEMO.read_text().replace("a103l", name))
        (folder / f"{name}.mat").write_bytes(DEMO.with_suffix(".mat").read_bytes())
    (item,) = C.physionet_icu(tmp_path)
    assert item.dataset == "PhysioNet_ICU" and item.rec.name == "icu01" and item.rec.channel_names == ["PLETH"]
    assert len(item) == len(C.grid(330.0)) and set(item.activity) == {"rest"}
    assert 120 < np.nanmedian(item.hr) < 140  # the record's ECG: about 130 beats per minute


def test_a_head_no_better_than_a_coin_on_a_held_out_data_set_stays_out():
    table = {"A": {"head": 0.9, "baseline": 0.6}, "B": {"head": 0.02, "baseline": 0.0},
             "C": {"head": float("nan"), "baseline": 0.5}}
    assert H.below_chance(table) == ["B"]
    r = {"overall": {"head": 0.8, "baseline": 0.6}, "datasets": table, "ship": False, "below_chance": ["B"]}
    assert H.why("activity", r).endswith("NOT in default records (no better than a coin on a data set it never "
                                         "saw: B 0.02)")
    quality = {"overall": {"head": 0.85, "purity": 0.8}, "datasets": table, "ship": False, "below_chance": ["B"],
               "corruptions": {"flat": 0.2, "noise": 0.2, "clean": 0.7}}
    assert H.why("quality", quality).endswith("(no better than a coin on a data set it never saw: B 0.02)")
    table["B"]["head"] = 0.5
    assert H.below_chance(table) == ["B"]  # a coin's score is no better than a coin
    table["B"]["head"] = 0.51
    assert H.below_chance(table) == []


def test_quality_labels():
    hr_ppg = np.array([70.0, 95.0, 70.0, np.nan, 70.0, 70.0])
    hr_ref = np.array([72.0, 72.0, np.nan, 72.0, np.nan, 72.0])
    good = np.array([np.nan, np.nan, np.nan, np.nan, 0.0, np.nan])
    corrupted = np.array([False, False, False, False, False, True])
    y = H.quality_labels(hr_ppg, hr_ref, good, corrupted)
    np.testing.assert_array_equal(y[[0, 1, 4, 5]], [1.0, 0.0, 0.0, 0.0])
    assert np.isnan(y[2]) and np.isnan(y[3])


def test_corruptions_change_only_what_follows_their_start():
    rng = np.random.default_rng(0)
    fs = 64.0
    x = np.sin(2 * np.pi * 1.2 * np.arange(int(28 * fs)) / fs) * 50 + 1000
    for kind in H.CORRUPTIONS:
        y = H.corrupt(x, kind, fs, 512, rng)
        np.testing.assert_array_equal(y[:512], x[:512])
        assert not np.allclose(y[512:], x[512:]), kind
    flat = H.corrupt(x, "flat", fs, 512, rng)
    assert np.std(flat[512:]) < 1e-3 * np.std(x) * 2


def test_lodo_folds_never_put_a_data_set_on_both_sides():
    ds = np.array(["A", "B", "A", "C", "B", "C", "C"], dtype=object)
    folds = H.lodo_folds(ds)
    assert [name for name, _ in folds] == ["A", "B", "C"]
    covered = np.zeros(len(ds), int)
    for name, held in folds:
        assert set(ds[held]) == {name} and name not in set(ds[~held])
        covered += held
    assert (covered == 1).all()
    # the linear LODO fit never sees the held-out data set
    seen = []
    X = np.arange(len(ds), dtype=float)[:, None]
    y = np.array(["a", "b"] * 3 + ["a"], dtype=object)

    def fit(Xt, yt):
        seen.append(set(Xt[:, 0].astype(int).tolist()))
        return {"kind": "logistic", "mean": [0.0], "std": [1.0], "weights": [[0.0], [1.0]], "bias": [0.0, 0.0],
                "classes": ["a", "b"]}

    H.lodo_linear(X, y, ds, fit, np.ones(len(ds), bool))
    for (name, held), rows in zip(folds, seen):
        assert not rows & set(np.flatnonzero(held).tolist())


def test_the_resting_bound_reads_resting_recordings_only():
    """BUT's walking clips are not resting recordings: the ≤ 3 BPM bound is read on an "(at rest)" row;
    a data set all at rest is its own row; the signal-over-reference ratio is per recording."""
    ds = np.array(["AIST"] * 4 + ["BUT_PPG"] * 4 + ["TROIKA"] * 2, dtype=object)
    act = np.array(["rest"] * 4 + ["rest", "rest", None, "rest"] + [None, None], dtype=object)
    f = {"dataset": ds, "activity": act, "split": np.array(["fit"] * 9 + ["test"], dtype=object),
         "good": np.r_[[np.nan] * 4, 1.0, 1.0, 0.0, 0.0, np.nan, np.nan],
         "recording": np.array([f"r{i}" for i in range(10)], dtype=object)}
    rows = {key: (np.flatnonzero(m).tolist(), rest) for key, m, rest in H.hr_rows(f, np.ones(10, bool))}
    assert rows == {"AIST": ([0, 1, 2, 3], True), "BUT_PPG": ([4, 5, 6, 7], False),
                    "BUT_PPG (good quality)": ([4, 5], False), "BUT_PPG (at rest)": ([4, 5, 7], True),
                    "TROIKA": ([8], False), "TROIKA test": ([9], False)}
    peak, y = np.array([105.0, 63.0, 84.0, 90.0]), np.array([100.0, 60.0, 80.0, 80.0])
    rec = np.array(["a", "a", "b", "c"], dtype=object)
    assert H.signal_over_reference(peak, y, rec, np.ones(4, bool)) == pytest.approx(1.05)


def test_the_quality_design_is_chosen_without_the_held_out_data_set():
    """Feature x tells clean from not in A, B and C; z in C and D, which holds most windows. With D
    in view z wins (the choice over all data sets); D's own fold must choose without it: x."""
    rng = np.random.default_rng(0)
    sizes = {"A": 300, "B": 300, "C": 300, "D": 3000}
    ds = np.concatenate([[k] * n for k, n in sizes.items()]).astype(object)
    q = rng.integers(0, 2, len(ds)).astype(float)
    signal = q + 0.3 * rng.normal(size=len(q))
    x = np.where(ds != "D", signal, rng.normal(size=len(q)))
    z = np.where(np.isin(ds, ["C", "D"]), signal, rng.normal(size=len(q)))
    candidates = {("x",): x[:, None], ("z",): z[:, None]}
    rows = np.ones(len(q), bool)
    assert H.choose_quality(candidates, q, ds, rows) == ("z",)
    p, choices = H.lodo_chosen(candidates, q, ds, rows, rows)
    assert choices["D"] == ["x"] and abs(H.auc(p[ds == "D"], q[ds == "D"]) - 0.5) < 0.1
    assert choices["C"] == ["x"]  # z, seen in D alone, cannot show it carries over


def test_auc_and_mae():
    assert H.auc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0.0, 0.0, 1.0, 1.0])) == 1.0
    assert H.auc(np.array([0.5, 0.5]), np.array([0.0, 1.0])) == 0.5
    assert H.mae(np.array([70.0, np.nan]), np.array([72.0, 80.0])) == pytest.approx((2 + 80) / 2)
