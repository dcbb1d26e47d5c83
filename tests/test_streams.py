"""Groups of streams (`Model.streams(n)`) against n separate streams pushed the same samples.

A group runs each convolution once over every stream's new positions; the
micro-kernels keep each output's summation order whatever the rows around
it, so every record must be the same bits as a separate stream's.
"""

import sys

import numpy as np
import pytest
from conftest import V102S, WRIST_BIKE, WRIST_RUN, WRIST_WALK

from himae_stream.errors import StreamStateError
from himae_stream.model import load_model
from himae_stream.recordings import load

TOL = 1e-5  # the stream contract; prepared pushes sum in another order
SIZES = [0, 1, 7, 100, 0, 301, 2500, 1, 99, 33]  # then what is left, in one push


@pytest.fixture(scope="module", params=["shipped", "random"])
def model(request, random_model_file):
    """himae-100 with the shipped weights and with seeded random ones."""
    return load_model("himae-100" if request.param == "shipped" else random_model_file("himae-100"))


@pytest.fixture(scope="module")
def recordings():
    """Four real PPG recordings at the model's 100 Hz cut to one length, (4, 1, n), and each one's lost
    samples (v102s has gaps, NaN)."""
    x = [load(path).pick("PPG").resampled(100).signals for path in (WRIST_RUN, WRIST_WALK, WRIST_BIKE)]
    x.append(load(V102S, channels="PLETH").resampled(100).signals)
    n = min(a.shape[-1] for a in x)
    x = np.stack([a[:, :n] for a in x])
    assert (~np.isfinite(x[3])).any()
    return x, ~np.isfinite(x)


def records(outputs) -> list:
    """Everything a push's StreamOutput holds, as bytes and numbers, for exact comparison."""
    return [[(p.tobytes(), a.tobytes()) for p, a in out.levels]
            + [(w.start, w.end, w.masked_fraction, [e.tobytes() for e in w.embeddings]) for w in out.windows]
            for out in outputs]


def push_all(group, singles, x, masks=None, sizes=SIZES):
    """Push x (n, C, N) in chunks of `sizes` (then the rest, then flush) into the group and into each single
    stream; assert every record is the same bits. Returns the number of windows each stream reported."""
    at, windows = 0, 0
    for size in [*sizes, x.shape[-1] - sum(sizes), None]:
        if size is None:
            got, want = group.flush(), [s.flush() for s in singles]
        else:
            part = slice(at, at + size)
            got = group.push(x[..., part], None if masks is None else masks[..., part])
            want = [s.push(x[i][..., part], None if masks is None else masks[i][..., part]) for i, s in enumerate(singles)]
            at += size
        assert records(got) == records(want)
        windows += len(got[0].windows)
    assert at == x.shape[-1]
    return windows


@pytest.mark.parametrize("n", [1, 4])
def test_group_records_are_the_bits_of_separate_streams_on_real_recordings(model, recordings, n):
    x, lost = recordings
    x, lost = x[:n], lost[:n]
    group = model.streams(n, hop="1s")
    windows = push_all(group, [model.stream(hop="1s") for _ in range(n)], x, lost)
    assert windows == (x.shape[-1] - group[0].window) // group[0].hop + 1


def test_group_of_odd_size_with_masks_and_no_normaliser(model):
    """Seven streams of random signals, each with its own random mask, pushed un-normalised."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((7, 1, 4000)).astype(np.float32)
    masks = rng.random((7, 4000)) < 0.1
    group = model.streams(7, window="4s", hop="250ms", normalize=False)
    singles = [model.stream(window="4s", hop="250ms", normalize=False) for _ in range(7)]
    sizes = list(rng.integers(0, 400, 12))
    push_all(group, singles, x, masks, sizes)


def test_group_matches_prepared_streams_to_rounding(model, recordings):
    """Prepared single streams sum each position's last tap apart: the same activations to rounding."""
    x, _ = recordings
    x = x[:3, :, :3000]
    group = model.streams(3, normalize=False)
    singles = [model.stream(normalize=False) for _ in range(3)]
    for at in range(0, x.shape[-1], 4):
        got = group.push(x[..., at : at + 4])
        for i, single in enumerate(singles):
            want = single.push(x[i][..., at : at + 4])
            single.prepare()
            for (_, a), (_, b) in zip(got[i].levels, want.levels):
                assert np.abs(a - b).max(initial=0) <= TOL * max(np.abs(b).max(initial=0), 1.0)


def test_snapshots_resume_a_group_exactly(model, recordings):
    x, lost = recordings
    x, lost = x[:, :, :5000], lost[:, :, :5000]
    group, whole = model.streams(4, hop="1s"), model.streams(4, hop="1s")
    group.push(x[..., :1234], lost[..., :1234])
    whole.push(x[..., :1234], lost[..., :1234])
    resumed = model.streams_from(group.snapshot())
    assert records(resumed.push(x[..., 1234:], lost[..., 1234:])) == records(whole.push(x[..., 1234:], lost[..., 1234:]))
    assert records(resumed.flush()) == records(whole.flush())
    out_of_step = group.snapshot()
    out_of_step[2] = model.stream(hop="1s").snapshot()
    with pytest.raises(StreamStateError, match="not in step"):
        model.streams_from(out_of_step)
    with pytest.raises(StreamStateError):
        model.streams_from([])


def test_bad_pushes_are_refused_before_any_stream_changes(model):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 1, 500))
    group, same = model.streams(3, hop="1s"), model.streams(3, hop="1s")
    with pytest.raises(ValueError, match="as many"):
        group.push([x[0], x[1], x[2][:, :-1]])
    with pytest.raises(ValueError, match="3 streams"):
        group.push(x[:2])
    with pytest.raises(ValueError, match="mask shape"):
        group.push(x, [None, None, np.zeros(3, bool)])
    with pytest.raises(ValueError, match="belongs to a group"):
        group[0].push(x[0])
    with pytest.raises(ValueError, match="belongs to a group"):
        group[0].prepare()
    assert [s.pushed for s in group] == [0, 0, 0]
    assert records(group.push(x)) == records(same.push(x))
    group[1].reset()
    with pytest.raises(ValueError, match="not in step"):
        group.push(x)
    group.reset()
    same.reset()
    assert records(group.push(list(x))) == records(same.push(x))
    group.flush()
    with pytest.raises(ValueError, match="flushed"):
        group.push(x)


def test_the_models_workspaces_do_not_keep_it_alive(random_model_file):
    """Streams and groups compute in workspaces their model keeps (docs/stream-mode.md); a workspace must not
    hold the model in turn, or a model and its megabytes of workspaces would wait for the cycle collector."""
    model = load_model(random_model_file("himae-25"))
    alone = sys.getrefcount(model)
    x = np.random.default_rng(0).standard_normal((3, 1, 600)).astype(np.float32)
    for _ in range(2):  # the first of each makes the workspace, the second borrows it
        group, stream = model.streams(3, hop="1s"), model.stream(hop="1s")
        assert len(group.push(x)[0].windows) and len(stream.push(x[0, 0]).windows)
        del group, stream
    assert sys.getrefcount(model) == alone
