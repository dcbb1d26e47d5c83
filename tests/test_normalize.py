"""The stream-consistent normaliser: fixed numbers, chunking, masks, its C entry point."""

import ctypes

import numpy as np
import pytest

from himae_stream.normalize import StreamNormalizer, default_spec, normalize, stream_kernel_entry


def _recording(rng, channels=2, n=3000):
    x = rng.standard_normal((channels, n)).cumsum(axis=1) * 40 + 2000  # PPG-like: drift on a large offset
    x[-1, 700:720] = np.nan
    x[0, n - 10] = np.inf
    return x


def test_numbers_are_pinned():
    """Models were trained on these numbers: any change to the normaliser's arithmetic fails here."""
    rng = np.random.default_rng(2024)
    x = rng.standard_normal((2, 3000)).cumsum(axis=1) * 40 + 2000
    x[1, 700:720] = np.nan
    mask = np.zeros(3000, bool)
    mask[1500:1600] = True
    out = normalize(x, default_spec(), 100.0, mask)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[:, [0, 1, 5, 99, 750, 1650, 2999]], [
        [0.0, 0.6666666865348816, 0.6684383749961853, 0.28315985202789307, -0.015987247228622437,
         0.4908762574195862, -0.4150749444961548],
        [0.0, 0.6666666865348816, -1.0, -0.6556909084320068, -0.026460299268364906, 0.17289534211158752,
         0.2746419906616211],
    ])
    assert float(out.astype(np.float64).sum()) == -34.44424536844599


@pytest.mark.parametrize("mask_kind", ["none", "per channel", "shared"])
def test_chunks_of_any_size_give_the_whole_recording_bit_for_bit(mask_kind):
    rng = np.random.default_rng(3)
    x = _recording(rng)
    mask = {"none": None, "per channel": rng.random(x.shape) < 0.05, "shared": rng.random(x.shape[1]) < 0.05}[mask_kind]
    whole = normalize(x, default_spec(), 25.0, mask)
    norm = StreamNormalizer(default_spec(), 25.0, x.shape[0])
    bounds = np.cumsum([0, *rng.integers(0, 50, 200)])
    bounds = [int(b) for b in bounds if b < x.shape[1]] + [x.shape[1]]
    parts = [norm.process(x[:, a:b], None if mask is None else mask[..., a:b]) for a, b in zip(bounds, bounds[1:])]
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), whole)


def test_lost_samples_give_zero_and_leave_the_state_alone():
    rng = np.random.default_rng(4)
    x = _recording(rng, channels=1)
    mask = np.zeros(x.shape[1], bool)
    mask[1000:1200] = True
    garbage = np.where(mask, -1e9, x)
    out = normalize(garbage, default_spec(), 100.0, mask)
    assert np.all(out[:, mask] == 0) and np.all(out[:, 700:720] == 0) and out[0, -10] == 0
    np.testing.assert_array_equal(out, normalize(x, default_spec(), 100.0, mask))
    # a shared (n,) mask is the same as that mask on every channel
    two = np.concatenate([x, 2 * x])
    np.testing.assert_array_equal(normalize(two, default_spec(), 100.0, mask),
                                  normalize(two, default_spec(), 100.0, np.stack([mask, mask])))
    # a per-channel mask touches only its channel
    only_first = np.stack([mask, np.zeros_like(mask)])
    out = normalize(two, default_spec(), 100.0, only_first)
    np.testing.assert_array_equal(out[:1], normalize(x, default_spec(), 100.0, mask))
    np.testing.assert_array_equal(out[1:], normalize(2 * x, default_spec(), 100.0))
    with pytest.raises(ValueError, match="mask shape"):
        normalize(two, default_spec(), 100.0, mask[:-1])


def test_c_entry_point_runs_the_same_kernel():
    """What Stream calls per push (through a C function pointer) gives process()'s numbers and state."""
    rng = np.random.default_rng(5)
    x = _recording(rng, channels=3, n=500)
    mask = rng.random(x.shape) < 0.1
    want = StreamNormalizer(default_spec(), 100.0, 3)
    expected = want.process(x, mask)
    norm = StreamNormalizer(default_spec(), 100.0, 3)
    out = np.empty(x.shape, np.float32)
    ptr = ctypes.c_void_p
    entry = ctypes.CFUNCTYPE(None, ptr, ptr, ctypes.c_int64, ptr, ctypes.c_int64, ptr, ptr, ptr, ptr,
                             ctypes.c_double, ctypes.c_double, ctypes.c_double, ptr, ctypes.c_int64,
                             ctypes.c_int64)(stream_kernel_entry().address)
    entry(x.ctypes.data, mask.ctypes.data, 3, norm.sos.ctypes.data, norm.sos.shape[0], norm.z.ctypes.data,
          norm.started.ctypes.data, norm.scale.ctypes.data, norm.count.ctypes.data, norm.alpha,
          norm.spec["scale_k"], norm.spec["clip"], out.ctypes.data, 3, x.shape[1])
    np.testing.assert_array_equal(out, expected)
    for key, value in want.get_state().items():
        np.testing.assert_array_equal(norm.get_state()[key], value)
