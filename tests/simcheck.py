"""Checks shared by the simulator's end-to-end tests: what arrived against what the device logged."""

import numpy as np


def check_delivery(chunks, model, dropped: np.ndarray, first: int = 0) -> np.ndarray:
    """Assert chunks hold every index from `first` once and in order, lost exactly where the
    device dropped, and the quantised recording everywhere else; returns the lost mask."""
    index = np.concatenate([np.arange(c.start, c.start + len(c)) for c in chunks])
    values = np.concatenate([c.samples for c in chunks], axis=1)
    lost = np.concatenate([c.lost_mask for c in chunks])
    last = int(index[-1]) + 1
    assert np.array_equal(index, np.arange(first, last)), "every index once, in order"
    assert np.array_equal(np.flatnonzero(lost) + first, dropped[(dropped >= first) & (dropped < last)])
    expected = model.values(first, last)
    assert np.array_equal(values[:, ~lost], expected[:, ~lost])
    tail = np.arange(last, model.length)
    assert np.all(np.isin(tail, dropped)), "samples after the last delivered one were dropped by the device"
    return lost
