"""The real-time streams figure of `benchmarks.many_streams`: a FIFO schedule of measured push times."""

import numpy as np

from benchmarks.many_streams import LATENCY_S, real_time_streams, worst_hop_latencies


def test_steady_pushes_fill_the_core_and_no_more():
    """Pushes of exactly 100 µs: 10,000 streams a second is all a core has; the schedule says so."""
    keeps = real_time_streams(np.full(50, 100e-6), 1)
    assert 9_800 <= keeps <= 10_000
    worst = worst_hop_latencies(np.full(50, 100e-6), 1, keeps)
    assert worst.max() <= LATENCY_S and worst.max() < 1e-3  # below capacity nothing queues


def test_a_large_group_that_waits_too_long_to_fill_keeps_none():
    """256 streams a push taking 30 ms: at the 8,533 streams a core has time for, a group takes 30 ms
    to fill and 30 ms to push, over 50 ms; with fewer streams it fills even more slowly."""
    assert real_time_streams(np.full(20, 30e-3), 256) == 0
    assert real_time_streams(np.full(20, 10e-3), 256) > 0


def test_a_tail_of_slow_pushes_costs_streams_where_it_queues():
    """One push in a hundred 40 times the median: the backlog it leaves counts against the bound."""
    times = np.full(1000, 100e-6)
    steady = real_time_streams(times, 1)
    times[::100] = 4e-3
    slow = real_time_streams(times, 1)
    assert slow < steady and slow <= int(1 / times.mean())
