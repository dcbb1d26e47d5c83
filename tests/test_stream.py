"""Stream mode against the PyTorch encoder run once over the whole recording.

Models have random weights and BatchNorm statistics (exactness does not
depend on training); the signals are real wrist PPG and random noise.
"""

import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from conftest import WRIST_RUN

from himae_stream.model import alloc_count, load_model
from himae_stream.recordings import load
from himae_stream.stream import to_samples
from training import HiMAE, export_model, get_config
from training.model import randomize_batchnorm

TOL = 1e-5
CONFIGS = ["himae-100", "himae-25"]


def _random_model(name: str, seed: int) -> HiMAE:
    torch.manual_seed(seed)
    return randomize_batchnorm(HiMAE(get_config(name)), seed).eval()


@pytest.fixture(scope="module", params=CONFIGS)
def models(request, tmp_path_factory):
    """(PyTorch reference, C core Model) sharing one set of weights."""
    ref = _random_model(request.param, seed=len(request.param))
    path = tmp_path_factory.mktemp("stream") / f"{request.param}.himae"
    export_model(ref, path)
    return ref, load_model(path)


@pytest.fixture(scope="module")
def ppg():
    """Wrist PPG during a treadmill run (256 Hz), 2 minutes."""
    return load(WRIST_RUN).pick("PPG")


def reference(ref: HiMAE, xn: np.ndarray) -> list[np.ndarray]:
    """encode() over the whole normalised recording: per level (C_l, n_l)."""
    with torch.no_grad():
        return [h[0].numpy() for h in ref.encode(torch.from_numpy(np.asarray(xn, np.float32))[None])]


def run(stream, x, sizes, mask=None):
    """Push x in chunks of the given sizes, then flush: per level (positions, acts), windows."""
    outs, i = [], 0
    for n in sizes:
        if i >= x.shape[1]:
            break
        outs.append(stream.push(x[:, i : i + n], None if mask is None else mask[:, i : i + n]))
        i += n
    assert i >= x.shape[1]
    outs.append(stream.flush())
    levels = [
        (np.concatenate([o.levels[l][0] for o in outs]), np.concatenate([o.levels[l][1] for o in outs], axis=1))
        for l in range(len(outs[0].levels))
    ]
    return levels, [w for o in outs for w in o.windows]


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


def check_levels(levels, want):
    assert len(levels) == len(want)
    for (positions, acts), ref in zip(levels, want):
        assert positions.dtype == np.int64 and acts.dtype == np.float32
        np.testing.assert_array_equal(positions, np.arange(ref.shape[1]))
        assert acts.shape == ref.shape
        assert rel_err(acts, ref) <= TOL


def check_windows(windows, want, n, window, hop, mask=None):
    starts = list(range(0, n - window + 1, hop))
    assert [(w.start, w.end) for w in windows] == [(s, s + window) for s in starts]
    for w in windows:
        for level, (emb, ref) in enumerate(zip(w.embeddings, want)):
            stride = 2 ** (level + 1)
            mean = ref[:, -(-w.start // stride) : -(-w.end // stride)].mean(axis=1)
            assert emb.shape == mean.shape and rel_err(emb, mean) <= TOL
        lost = 0.0 if mask is None else mask[:, w.start : w.end].mean()
        assert w.masked_fraction == pytest.approx(lost, abs=1e-12)


def chunk_sizes(kind, n, rng):
    if kind == "all":
        return [n]
    if kind == "random":
        return list(rng.integers(0, 400, size=n))
    return [kind] * (-(-n // kind))


@pytest.mark.parametrize("chunks", [1, 7, 100, 1000, "random", "all"])
def test_real_recording_matches_whole_recording(models, ppg, chunks):
    ref, model = models
    fs = model.config["fs"]
    x = ppg.resampled(fs).signals
    if chunks in (1, 7):
        x = x[:, : int(60 * fs)]  # one push per sample is slow in Python; a minute says enough
    want = reference(ref, model.normalize(x))
    stream = model.stream(hop="2s")
    levels, windows = run(stream, x, chunk_sizes(chunks, x.shape[1], np.random.default_rng(7)))
    check_levels(levels, want)
    check_windows(windows, want, x.shape[1], model.config["window"], stream.hop)


@pytest.mark.parametrize("n", [1, 2, 3, 17, 64, 250, 1001, 6007])
def test_random_signals_match_whole_recording(models, n):
    ref, model = models
    rng = np.random.default_rng(n)
    x = rng.standard_normal((1, n)).astype(np.float32)
    window, hop = 64, (1, 13, 64, 89)[n % 4]  # overlapping, adjacent and gapped windows
    stream = model.stream(window=window, hop=hop, normalize=False)
    levels, windows = run(stream, x, chunk_sizes("random", n, rng))
    want = reference(ref, x)
    check_levels(levels, want)
    check_windows(windows, want, n, window, hop)


def test_lost_samples_in_gapped_windows_without_normaliser(models):
    """Masked and non-finite samples enter as zeros and are counted, also between windows a hop skips."""
    ref, model = models
    rng = np.random.default_rng(7)
    n, window, hop = 6000, 64, 300  # gaps longer than the deepest delay: skipped samples arrive later
    x = rng.standard_normal((1, n))
    lost = rng.random((1, n)) < 0.2
    masked = lost & (rng.random((1, n)) < 0.5)
    x[lost & ~masked] = np.nan  # the other half is lost as NaN, not through the mask
    stream = model.stream(window=window, hop=hop, normalize=False)
    levels, windows = run(stream, x, chunk_sizes("random", n, rng), masked)
    want = reference(ref, np.where(lost, 0.0, x))
    check_levels(levels, want)
    check_windows(windows, want, n, window, hop, lost)
    assert min(w.masked_fraction for w in windows) < 0.2 < max(w.masked_fraction for w in windows)


def test_masked_samples_enter_as_zeros_and_are_reported(models, ppg):
    ref, model = models
    fs = model.config["fs"]
    x = ppg.resampled(fs).signals[:, : int(90 * fs)]
    mask = np.zeros(x.shape, bool)
    for start, length in ((300, 40), (2000, int(3 * fs)), (int(50 * fs), 7)):
        mask[:, start : start + length] = True
    garbage = np.where(mask, 1e6, x)  # what a lost sample holds must not matter
    want = reference(ref, model.normalize(x, mask))
    assert np.all(model.normalize(garbage, mask)[mask] == 0)
    np.testing.assert_array_equal(model.normalize(garbage, mask), model.normalize(x, mask))
    stream = model.stream(hop="1s")
    levels, windows = run(stream, garbage, chunk_sizes(37, x.shape[1], None), mask)
    check_levels(levels, want)
    check_windows(windows, want, x.shape[1], model.config["window"], stream.hop, mask)
    assert max(w.masked_fraction for w in windows) >= 0.3


def test_snapshot_restore_continues_exactly(models, ppg, tmp_path):
    ref, model = models
    x = ppg.resampled(model.config["fs"]).signals[:, :6000]
    sizes = chunk_sizes("random", x.shape[1], np.random.default_rng(3))
    whole_levels, whole_windows = run(model.stream(hop=50), x, sizes)

    stream = model.stream(hop=50)
    first = [stream.push(x[:, a:b]) for a, b in zip(np.cumsum([0] + sizes[:20]), np.cumsum(sizes[:21]))]
    done = int(np.sum(sizes[:21]))
    snapshot = pickle.loads(pickle.dumps(stream.snapshot()))
    del stream
    resumed = load_model(model.path).stream_from(snapshot)  # as after a reconnect
    rest_levels, rest_windows = run(resumed, x[:, done:], sizes[21:])
    for level, (positions, acts) in enumerate(rest_levels):
        before = np.concatenate([o.levels[level][1] for o in first], axis=1)
        np.testing.assert_array_equal(np.concatenate([before, acts], axis=1), whole_levels[level][1])
        np.testing.assert_array_equal(positions[:1], [before.shape[1]] if positions.size else [])
    windows = [w for o in first for w in o.windows] + rest_windows
    assert [(w.start, w.end, w.masked_fraction) for w in windows] == [
        (w.start, w.end, w.masked_fraction) for w in whole_windows
    ]
    for w, v in zip(windows, whole_windows):
        for a, b in zip(w.embeddings, v.embeddings):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_prepared_live_pushes_match_whole_recording(models, ppg):
    """A live pipeline calls prepare() between packets: the pushes that complete positions then add
    only each conv's last tap. Outputs stay within the contract, nothing is allocated, and a snapshot
    taken after prepare() resumes on a fresh stream with the same activations, bit for bit: prepared
    sums are not part of the state, and prepare() recomputes them from it."""
    ref, model = models
    fs = model.config["fs"]
    x = ppg.resampled(fs).signals[:, : int(60 * fs)]
    want = reference(ref, model.normalize(x))
    live, packet = model.stream(hop="1s"), 4
    outs, counts = [], []
    for i in range(0, x.shape[1], packet):
        if i == x.shape[1] // (2 * packet) * packet:
            resumed = load_model(model.path).stream_from(pickle.loads(pickle.dumps(live.snapshot())))
            tail = []
            for j in range(i, x.shape[1], packet):
                resumed.prepare()
                tail.append(resumed.push(x[:, j : j + packet]))
            resumed.prepare()
            tail.append(resumed.flush())
        before = alloc_count()
        outs.append(live.push(x[:, i : i + packet]))
        live.prepare()
        live.prepare()  # idempotent
        counts.append(alloc_count() - before)
    outs.append(live.flush())
    live.prepare()  # a no-op once flushed
    assert set(counts) == {0}
    levels = [np.concatenate([o.levels[l][1] for o in outs], axis=1) for l in range(len(want))]
    for acts, ref_acts in zip(levels, want):
        assert acts.shape == ref_acts.shape and rel_err(acts, ref_acts) <= TOL
    windows = [w for o in outs for w in o.windows]
    check_windows(windows, want, x.shape[1], model.config["window"], live.hop)
    for level, acts in enumerate(levels):
        resumed_acts = np.concatenate([o.levels[level][1] for o in tail], axis=1)
        np.testing.assert_array_equal(resumed_acts, acts[:, acts.shape[1] - resumed_acts.shape[1] :])
    resumed_windows = [w for o in tail for w in o.windows]
    assert [w.start for w in resumed_windows] == [w.start for w in windows[-len(resumed_windows) :]]
    for w, v in zip(resumed_windows, windows[-len(resumed_windows) :]):
        for a, b in zip(w.embeddings, v.embeddings):  # means of restored running sums, as above
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_snapshot_of_another_model_is_refused(models, tmp_path):
    _, model = models
    other_name = "himae-25" if model.config["name"] == "himae-100" else "himae-100"
    path = tmp_path / "other.himae"
    export_model(_random_model(other_name, 0), path)
    snapshot = load_model(path).stream().snapshot()
    with pytest.raises(ValueError):
        model.stream_from(snapshot)
    same_config = tmp_path / "same-config.himae"
    export_model(_random_model(model.config["name"], 99), same_config)
    with pytest.raises(ValueError, match="different model"):
        model.stream_from(load_model(same_config).stream().snapshot())
    with pytest.raises(ValueError, match="not a stream snapshot"):
        model.stream_from({"format": "something else"})


def test_push_allocates_nothing(models):
    _, model = models
    stream = model.stream(normalize=False)
    x = np.random.default_rng(0).standard_normal((1, 30000)).astype(np.float32)
    stream.push(x[:, :10])
    before = alloc_count()
    i = 10
    for n in (1, 7, 100, 1000, 9000, 3, 0, 5000):
        stream.push(x[:, i : i + n])
        i += n
    stream.flush()
    assert alloc_count() == before


def test_delay_from_configuration_and_emission_time(models):
    _, model = models
    config = model.config
    stream = model.stream(normalize=False)
    p = config["kernel_size"] // 2
    expected = tuple(3 * p * (2 ** (level + 1) - 1) for level in range(len(config["channels"])))
    assert stream.delay == expected
    x = np.random.default_rng(1).standard_normal((1, 700)).astype(np.float32)
    for t in range(x.shape[1]):
        out = stream.push(x[:, t : t + 1])
        for level, (positions, _) in enumerate(out.levels):
            # position p appears exactly when sample 2^(l+1)·p + delay arrives
            assert list(2 ** (level + 1) * positions + expected[level]) == [t] * len(positions)


def test_flush_ends_and_reset_restarts(models):
    ref, model = models
    x = np.random.default_rng(2).standard_normal((1, 500)).astype(np.float32)
    stream = model.stream(window=100, hop=30, normalize=False)
    first, _ = run(stream, x, [123, 377])
    with pytest.raises(ValueError, match="flushed"):
        stream.push(x[:, :5])
    stream.reset()
    again, _ = run(stream, x, [500])
    for (p1, a1), (p2, a2) in zip(first, again):
        np.testing.assert_array_equal(p1, p2)
        assert rel_err(a2, a1) <= TOL
    with pytest.raises(ValueError, match="shape"):
        stream.push(np.zeros((3, 10)))


def test_window_and_hop_units():
    assert to_samples("1s", 100.0, "hop") == 100
    assert to_samples("250ms", 100.0, "hop") == 25
    assert to_samples(2.0, 25.0, "window") == 50
    assert to_samples(300, 25.0, "window") == 300
    assert to_samples("300", 25.0, "window") == 300
    assert to_samples("0.1 min", 100.0, "window") == 600
    for bad in ("0.333s", 0.333, 0.5, "ten", 0, -3, "0", True, None):
        with pytest.raises(ValueError):
            to_samples(bad, 100.0 if bad != 0.5 else 25.0, "hop")


def test_other_configurations_stream_exactly(tmp_path):
    """Channels, kernel size, levels and input channels come from the configuration."""
    config = get_config("himae-25", in_channels=3, channel_names=["PPG", "ACC_X", "ACC_Y"],
                        kernel_size=7, channels=[8, 12, 20], window=96)
    torch.manual_seed(5)
    ref = HiMAE(config).eval()
    export_model(ref, tmp_path / "small.himae")
    model = load_model(tmp_path / "small.himae")
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 2000)).astype(np.float32)
    mask = np.zeros(x.shape, bool)
    mask[1, 500:700] = True  # one channel lost for a while
    stream = model.stream(hop=40, normalize=False)
    assert stream.delay == (9, 27, 63)
    levels, windows = run(stream, x, chunk_sizes("random", x.shape[1], rng), mask)
    want = reference(ref, np.where(mask, 0, x))
    check_levels(levels, want)
    check_windows(windows, want, x.shape[1], 96, 40, mask)


def test_corrupt_engine_state_is_refused_not_trusted(models):
    """Snapshots come back from disk or the network: bad engine bytes raise, never crash."""
    _, model = models
    stream = model.stream(normalize=False)
    stream.push(np.random.default_rng(4).standard_normal((1, 3001)).astype(np.float32))
    good = stream.snapshot()
    state = good["engine"]
    rng = np.random.default_rng(11)
    bad_states = [state[:n] for n in (0, 8, 63, 64, len(state) - 1)] + [state + b"\0" * 4]
    for _ in range(40):  # flipped header bytes: magic, sizes, counters, channels
        raw = bytearray(state)
        raw[int(rng.integers(0, 64))] ^= 1 << int(rng.integers(0, 8))
        bad_states.append(bytes(raw))
    for bad in bad_states:
        try:
            resumed = model.stream_from({**good, "engine": bad})
        except ValueError:
            continue
        # a flip the header tolerates (e.g. in padding) must still give a working stream
        resumed.push(np.zeros((1, 500), np.float32))
        resumed.flush()


def test_normaliser_in_the_stream_is_the_recording_normaliser(models, ppg):
    """Stream runs the normaliser through its C entry point: the encoder sees exactly Model.normalize."""
    _, model = models
    fs = model.config["fs"]
    x = ppg.resampled(fs).signals[:, : int(40 * fs)]
    rng = np.random.default_rng(12)
    mask = rng.random(x.shape) < 0.03
    x = x.copy()
    x[0, 100:130] = np.nan
    sizes = chunk_sizes("random", x.shape[1], rng)
    levels, windows = run(model.stream(hop="1s"), x, sizes, mask)
    lost = mask | ~np.isfinite(x)  # lost samples are 0 in the normalised recording: the mask says they are lost
    plain_levels, plain_windows = run(model.stream(hop="1s", normalize=False), model.normalize(x, mask), sizes, lost)
    for (p1, a1), (p2, a2) in zip(levels, plain_levels):
        np.testing.assert_array_equal(p1, p2)
        np.testing.assert_array_equal(a1, a2)
    assert [(w.start, w.masked_fraction) for w in windows] == [(w.start, w.masked_fraction) for w in plain_windows]


def test_sample_types_and_layouts_give_the_same_outputs(models):
    _, model = models
    x = np.random.default_rng(13).standard_normal((1, 2000)).astype(np.float32).astype(np.float64)
    wide = np.zeros((3, 2 * x.shape[1]))
    wide[1, ::2] = x[0]
    forms = {
        "float64": lambda a, b: x[:, a:b],
        "float32": lambda a, b: x[:, a:b].astype(np.float32),
        "one channel as (n,)": lambda a, b: x[0, a:b],
        "list": lambda a, b: x[:, a:b].tolist(),
        "strided view": lambda a, b: wide[1:2, 2 * a : 2 * b : 2],
        "Fortran order": lambda a, b: np.asfortranarray(x[:, a:b]),
    }
    results = {}
    for name, form in forms.items():
        stream = model.stream(window=128, hop=50)
        outs = [stream.push(form(a, a + 97)) for a in range(0, x.shape[1], 97)] + [stream.flush()]
        results[name] = ([np.concatenate([o.levels[l][1] for o in outs], axis=1) for l in range(len(outs[0].levels))],
                         [(w.start, w.end, np.concatenate(w.embeddings)) for o in outs for w in o.windows])
    want_levels, want_windows = results.pop("float64")
    for name, (levels, windows) in results.items():
        for got, want in zip(levels, want_levels):
            np.testing.assert_array_equal(got, want, err_msg=name)
        assert len(windows) == len(want_windows) > 0
        for (s, e, emb), (ws, we, wemb) in zip(windows, want_windows):
            assert (s, e) == (ws, we)
            np.testing.assert_array_equal(emb, wemb, err_msg=name)


def test_bad_samples_and_masks_are_refused(models):
    _, model = models
    stream = model.stream()
    with pytest.raises(ValueError, match=r"expected samples of shape \(1, n\), got \(2, 10\)"):
        stream.push(np.zeros((2, 10)))
    with pytest.raises(ValueError, match="expected samples of shape"):
        stream.push(np.zeros((1, 2, 10)))
    with pytest.raises(ValueError, match=r"mask shape \(9,\) does not match samples \(1, 10\)"):
        stream.push(np.zeros((1, 10)), np.zeros(9, bool))
    with pytest.raises(ValueError, match="mask shape"):
        stream.push(np.zeros((1, 10)), np.zeros((2, 10), bool))
    assert stream.pushed == 0  # nothing was taken
    stream.push(np.zeros(10), np.ones(10, bool))  # (n,) samples and mask for one channel
    assert stream.pushed == 10


def test_outputs_are_read_only_records(models):
    _, model = models
    stream = model.stream(window=64, hop=64, normalize=False)
    out = stream.push(np.random.default_rng(14).standard_normal((1, 1000)).astype(np.float32))
    assert isinstance(out.levels, list) and isinstance(out.windows, list) and out.windows
    w = out.windows[0]
    assert (w.start, w.end) == (0, 64) and isinstance(w.start, int) and w.masked_fraction == 0.0
    assert [e.dtype for e in w.embeddings] == [np.float32] * len(out.levels)
    assert [e.shape for e in w.embeddings] == [(c,) for c in model.config["channels"]]
    with pytest.raises(AttributeError):
        w.start = 5
    with pytest.raises(AttributeError):
        out.windows = []
    assert "Window(start=0, end=64" in repr(w)
    # a level's embeddings as one array: a row per window, the windows' own values
    for level, c in enumerate(model.config["channels"]):
        rows = out.embeddings(level)
        assert rows.dtype == np.float32 and rows.shape == (len(out.windows), c)
        assert np.array_equal(rows, np.stack([v.embeddings[level] for v in out.windows]))
    assert stream.push(np.zeros((1, 10), np.float32)).embeddings(0).shape == (0, model.config["channels"][0])
    with pytest.raises(IndexError, match="level"):
        out.embeddings(len(out.levels))
    w.embeddings[0] = np.zeros(3)
    with pytest.raises(ValueError, match="contiguous float32"):
        out.embeddings(0)


def _concat(outputs) -> tuple[list, list]:
    """Per level (positions, activations) and the windows of a list of StreamOutputs, joined."""
    levels = [(np.concatenate([o.levels[l][0] for o in outputs]), np.concatenate([o.levels[l][1] for o in outputs], 1))
              for l in range(len(outputs[0].levels))]
    return levels, [w for o in outputs for w in o.windows]


@pytest.mark.parametrize("window, hop", [(1000, 1), (1000, 7), (333, 50), (1000, 100), (257, 300)])
def test_window_means_are_running_sums_at_their_edges_for_any_hop(window, hop):
    """A window's mean per level is the difference of the float64 running sums of the level's positions
    before its two edges (summed in position order), times the reciprocal of their count, bit for bit, for
    hops that do or do not divide the window or the strides; the stream keeps only its open windows' edges
    (a few per level, however long it runs), and a snapshot taken after any push resumes with the same bits."""
    model = load_model("himae-25")
    rng = np.random.default_rng(window + hop)
    x = rng.standard_normal((1, 5000))
    mask = rng.random(x.shape) < 0.02
    stream, resumed = model.stream(window=window, hop=hop), None
    outs, i, held = [], 0, 0
    while i < x.shape[1]:
        n = int(rng.integers(1, 200))
        outs.append(stream.push(x[:, i : i + n], mask[:, i : i + n]))
        if resumed is not None:
            again = resumed.push(x[:, i : i + n], mask[:, i : i + n])
            assert [w.start for w in again.windows] == [w.start for w in outs[-1].windows]
            for u, v in zip(again.windows, outs[-1].windows):
                assert u.masked_fraction == v.masked_fraction
                assert all(np.array_equal(a, b) for a, b in zip(u.embeddings, v.embeddings))
        elif i > x.shape[1] // 2:
            resumed = model.stream_from(pickle.loads(pickle.dumps(stream.snapshot())))
        held = max([held] + [s.state()[0].size for s in stream._tracked])
        i += n
    outs.append(stream.flush())
    levels = [np.concatenate([o.levels[l][1] for o in outs], axis=1) for l in range(len(stream.strides))]
    sums = [np.concatenate([np.zeros((a.shape[0], 1)), np.cumsum(a.astype(np.float64), axis=1)], axis=1)
            for a in levels]
    lost = np.concatenate([[0], np.cumsum(mask[0])])
    windows = [w for o in outs for w in o.windows]
    assert [w.start for w in windows] == list(range(0, x.shape[1] - window + 1, hop))
    for w in windows:
        for level, (mean, stride) in enumerate(zip(w.embeddings, stream.strides)):
            a, b = -(-w.start // stride), -(-w.end // stride)
            want = ((sums[level][:, b] - sums[level][:, a]) * (1.0 / (b - a))).astype(np.float32)
            assert np.array_equal(mean, want), (w.start, level)
        assert w.masked_fraction == (lost[w.end] - lost[w.start]) * (1.0 / window)
    # the windows open at a push: those started and not yet complete, as the deepest level lags the input
    assert held <= 2 * ((window + 200 + max(stream.delay)) // hop + 2)


@pytest.mark.parametrize("channels", [1, 3])
def test_a_long_push_runs_in_slices_with_the_same_bits(models, tmp_path, channels):
    """A push of more than a scratch buffer runs as pushes of one scratch buffer: the same bits as any chunking."""
    _, model = models
    if channels > 1:  # a 3-channel model with a stream normaliser
        path = tmp_path / "three.himae"
        config = {**get_config("himae-25"), "in_channels": 3, "channel_names": ["a", "b", "c"]}
        export_model(randomize_batchnorm(HiMAE(config), 3).eval(), path)
        model = load_model(path)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((channels, 3 * 65536 + 17)).astype(np.float32)
    mask = rng.random(x.shape) < 0.01
    one = model.stream(hop=100)
    whole = [one.push(x, mask), one.flush()]
    pieces, i, other = [], 0, model.stream(hop=100)
    for n in (1000, 60000, 70000, 5, 3000, 100000):
        pieces.append(other.push(x[:, i : i + n], mask[:, i : i + n]))
        i += n
    pieces.append(other.flush())
    (a_levels, a_windows), (b_levels, b_windows) = _concat(whole), _concat(pieces)
    for (pa, xa), (pb, xb) in zip(a_levels, b_levels):
        assert np.array_equal(pa, pb) and np.array_equal(xa, xb)
    assert len(a_windows) == len(b_windows) > 1000
    for u, v in zip(a_windows, b_windows):
        assert (u.start, u.masked_fraction) == (v.start, v.masked_fraction)
        assert all(np.array_equal(p, q) for p, q in zip(u.embeddings, v.embeddings))
    # the running sums hold the open windows' edges, not the push
    assert all(s.state()[0].size <= 2 * (1000 // 100 + 2) for s in one._core.sums)


def test_a_long_push_peaks_below_twice_its_input(tmp_path):
    """One 50-M-sample push used to ask for 11.9 GiB (running sums grew 4x past the whole push). Now memory
    is the input, the outputs and a few scratch buffers: for a one-level, one-channel model (outputs of
    6 bytes per sample against the input's 8) the push peaks below twice its input."""
    import subprocess
    import sys
    import textwrap

    from conftest import REPO
    from himae_stream import modelfile
    from peak_rss import PEAK_RSS

    config = {"name": "narrow", "fs": 100.0, "window": 1000, "in_channels": 1, "channel_names": ["PPG"],
              "channels": [1], "kernel_size": 5, "stride": 2, "patch_size": 5, "mask_ratio": 0.8,
              "normalizer": {"kind": "stream"}, "decoder": False}
    path = tmp_path / "narrow.himae"
    modelfile.write(path, config, {n: np.full(s, 0.1, np.float32) for n, s in modelfile.expected_tensors(config, False).items()})
    n = 4_000_000
    code = PEAK_RSS + textwrap.dedent(f"""
        import numpy as np
        from himae_stream import load_model
        stream = load_model({str(path)!r}).stream()
        stream.push(np.zeros(5000))  # the first push compiles nothing and warms every buffer
        x = np.random.default_rng(0).standard_normal({n})
        before = reset_peak()
        out = stream.push(x)
        print(peak() - before, sum(p.nbytes + a.nbytes for p, a in out.levels), len(out.windows))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300, check=True)
    grew, outputs, windows = map(int, result.stdout.split())
    assert windows == n // 1000
    assert outputs <= 6 * n + 1000
    assert grew < 8 * n, f"the push grew the peak RSS by {grew >> 20} MiB, its input is {8 * n >> 20} MiB"
    assert grew < outputs + (16 << 20)  # beyond the outputs: scratch buffers and open windows


def _reseal(state: bytes, offset: int, raw: bytes) -> bytes:
    """Engine state bytes with `raw` written at `offset` and the state's CRC32 (at byte 64) made right again."""
    import struct
    import zlib

    buf = bytearray(state)
    buf[offset : offset + len(raw)] = raw
    struct.pack_into("<I", buf, 64, 0)
    struct.pack_into("<I", buf, 64, zlib.crc32(bytes(buf)))
    return bytes(buf)


def _bad_snapshots(good: dict) -> dict[str, dict]:
    """Corrupt snapshots by what is wrong with them: the kinds that raised OverflowError, KeyError or TypeError,
    or were restored with NaN state."""
    import struct

    nan = np.float64(np.nan)
    norm = good["normalizer"]
    sums = good["sums"]
    return {
        "not a dict": ["himae-stream-snapshot"],
        "missing key": {k: v for k, v in good.items() if k != "sums"},
        "huge next_window": {**good, "next_window": 10**30},
        "negative pushed": {**good, "pushed": -1},
        "float window": {**good, "window": 1000.5},
        "string hop": {**good, "hop": "1s"},
        "normalize not a bool": {**good, "normalize": "yes"},
        "engine not bytes": {**good, "engine": list(good["engine"])},
        "engine NaN first row": {**good, "engine": _reseal(good["engine"], 72, struct.pack("<f", np.nan))},
        "engine Inf row": {**good, "engine": _reseal(good["engine"], len(good["engine"]) - 4, struct.pack("<f", np.inf))},
        "normaliser state missing": {**good, "normalizer": None},
        "normaliser NaN": {**good, "normalizer": {**norm, "z": np.full_like(norm["z"], nan)}},
        "normaliser Inf scale": {**good, "normalizer": {**norm, "scale": np.full_like(norm["scale"], np.inf)}},
        "normaliser negative count": {**good, "normalizer": {**norm, "count": -norm["count"] - 1}},
        "normaliser strings": {**good, "normalizer": {**norm, "started": np.array(["x"])}},
        "normaliser wrong shape": {**good, "normalizer": {**norm, "z": norm["z"][..., :1]}},
        "sums NaN": {**good, "sums": [(sums[0][0], np.full_like(sums[0][1], nan)), *sums[1:]]},
        "sums not pairs": {**good, "sums": [1, 2, 3, 4, 5, 6][: len(sums)]},
        "sums positions not an array": {**good, "sums": [(2**70, sums[0][1]), *sums[1:]]},
        "sums positions decreasing": {**good, "sums": [(sums[0][0][::-1].copy(), sums[0][1]), *sums[1:]]},
        "sums positions negative": {**good, "sums": [(sums[0][0] - 10**6, sums[0][1]), *sums[1:]]},
        "sums lack a window's edge": {**good, "sums": [(sums[0][0][1:], sums[0][1][:, 1:]), *sums[1:]]},
        "sums wrong length": {**good, "sums": [(sums[0][0], sums[0][1][:, :-1]), *sums[1:]]},
        "sums of objects": {**good, "sums": [(sums[0][0], sums[0][1].astype(object)), *sums[1:]]},
        "too few levels": {**good, "sums": sums[:-1]},
    }


def test_every_corrupt_snapshot_raises_stream_state_error(models):
    from himae_stream.errors import StreamStateError

    _, model = models
    stream = model.stream(hop="1s")
    stream.push(np.random.default_rng(3).standard_normal((1, 4321)))
    good = stream.snapshot()
    model.stream_from(good).push(np.zeros(100))  # the good one restores
    for what, bad in _bad_snapshots(good).items():
        with pytest.raises(StreamStateError):
            model.stream_from(bad)
        assert issubclass(StreamStateError, ValueError), what


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_mutated_snapshots_restore_exactly_or_raise_stream_state_error(data):
    """Any field replaced by junk: a StreamStateError, or a stream that works and holds only finite state."""
    from himae_stream.errors import StreamStateError

    model = load_model("himae-25")
    stream = model.stream(hop=50)
    stream.push(np.sin(np.arange(777) / 7.0))
    snapshot = stream.snapshot()
    junk = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                     st.text(max_size=3), st.binary(max_size=80), st.lists(st.integers(0, 3), max_size=3),
                     st.builds(lambda v, n: np.full(n, v), st.floats(allow_nan=True), st.integers(0, 4)))
    key = data.draw(st.sampled_from(sorted(snapshot)))
    snapshot[key] = data.draw(junk)
    try:
        resumed = model.stream_from(snapshot)
    except StreamStateError:
        return
    out = resumed.push(np.ones(300))
    assert all(np.isfinite(a).all() for _, a in out.levels)
