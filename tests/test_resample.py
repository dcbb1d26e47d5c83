"""Streaming resampler: chunking-invariant, accurate in band, honest about lost samples and time."""

import numpy as np
import pytest

from himae_stream.resample import StreamResampler


def push_in_chunks(r, x, lost, t, seed):
    rng = np.random.default_rng(seed)
    parts, i = [], 0
    while i < x.shape[1]:
        k = int(rng.integers(1, 60))
        parts.append(r.push(x[:, i:i + k], lost[i:i + k], t[i:i + k]))
        i += k
    return [np.concatenate([p[j] for p in parts], axis=-1) for j in range(3)]


@pytest.mark.parametrize("fs_in, fs_out", [(250, 100), (125, 100), (100, 25), (128, 100), (50, 100)])
def test_any_chunking_gives_the_same_output(fs_in, fs_out):
    n = 4000
    t = 1000.0 + np.arange(n) / fs_in
    x = np.random.default_rng(1).standard_normal((2, n)) + 3
    lost = np.zeros(n, bool)
    lost[1500:1530] = True
    whole = StreamResampler(fs_in, fs_out, 2).push(x, lost, t)
    chunked = push_in_chunks(StreamResampler(fs_in, fs_out, 2), x, lost, t, seed=fs_in)
    for a, b in zip(whole, chunked):
        assert np.array_equal(a, b)
    assert whole[0].shape == (2, -(-n * fs_out // fs_in))


@pytest.mark.parametrize("fs_in, fs_out", [(25, 100), (30, 100), (125, 100), (250, 100), (64, 100)])
def test_each_output_comes_with_the_newest_input_under_its_taps(fs_in, fs_out):
    """No output waits for an input it does not read: live, the only delay is the filter's own, and n
    samples give ceil(n·fs_out/fs_in) outputs (a 10-s clip at 30 Hz gives the 1,000 of a 10-s window)."""
    n = 300
    x = np.random.default_rng(2).standard_normal((1, n))
    t = np.arange(n) / fs_in
    r = StreamResampler(fs_in, fs_out, 1)
    whole = StreamResampler(fs_in, fs_out, 1).push(x, np.zeros(n, bool), t)[0]
    got = []
    for i in range(n):
        got.append(r.push(x[:, i:i + 1], np.zeros(1, bool), t[i:i + 1])[0])
        ready = -(-(i + 1) * r.up // r.down)  # outputs j whose newest input j·down // up is at most i
        assert sum(part.shape[1] for part in got) == ready
    assert np.array_equal(np.concatenate(got, axis=1), whole)
    assert whole.shape[1] == -(-n * fs_out // fs_in)


@pytest.mark.parametrize("fs_in, fs_out", [(250, 100), (125, 100), (100, 25)])
def test_in_band_tone_keeps_amplitude_and_time(fs_in, fs_out):
    t = np.arange(6000) / fs_in
    tone = np.sin(2 * np.pi * 1.7 * t) + 2.0
    y, lost, times = StreamResampler(fs_in, fs_out, 1).push(tone[None], np.zeros(t.size, bool), t)
    settled = slice(100, None)  # after the start-up transient
    assert np.abs(y[0, settled] - (np.sin(2 * np.pi * 1.7 * times[settled]) + 2.0)).max() < 2e-3
    assert np.allclose(np.diff(times[settled]), 1 / fs_out)
    assert not lost.any()


def test_lost_input_marks_every_output_it_touches():
    fs_in, fs_out = 250, 100
    x = np.ones((1, 2000))
    lost = np.zeros(2000, bool)
    lost[1000:1010] = True
    r = StreamResampler(fs_in, fs_out, 1)
    y, out_lost, times = r.push(x, lost, np.arange(2000) / fs_in)
    assert out_lost.any() and (y[0, out_lost] == 0).all()
    # every output whose taps reach a lost input is lost, and no other
    j = np.arange(y.shape[1])
    i0 = j * r.down // r.up
    touches = (i0 >= 1000) & (i0 - r.per_phase + 1 < 1010)
    assert np.array_equal(out_lost, touches)
    assert np.allclose(y[0, ~out_lost][50:], 1.0, atol=1e-6)


def test_the_compiled_loop_refuses_taps_outside_its_inputs():
    """The loop runs without bounds checks: every index is checked before it starts."""
    from himae_stream._core import polyphase_fir

    x, lost, bank = np.ones((1, 10)), np.zeros(10, bool), np.ones((2, 4))
    out, out_lost = np.empty((1, 1), np.float32), np.empty(1, bool)
    for first, phase in ((2, 0), (10, 0), (5, 2), (5, -1)):
        with pytest.raises(ValueError, match="outside"):
            polyphase_fir(x, lost, np.array([first]), np.array([phase]), bank, out, out_lost)
    with pytest.raises(ValueError, match="shapes"):
        polyphase_fir(x, lost[:5], np.array([5]), np.array([0]), bank, out, out_lost)
    polyphase_fir(x, lost, np.array([5]), np.array([1]), bank, out, out_lost)
    assert out[0, 0] == 4.0 and not out_lost[0]
