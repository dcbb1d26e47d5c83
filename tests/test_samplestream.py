"""SampleStream: order, loss, duplicates, wrap, timing, drift, queues."""

import asyncio
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from himae_stream.protocol import SEQ_MODULUS, Packet, SampleFormat, decode_packet, encode_packet
from himae_stream.samplestream import ClockMap, Received, SampleStream
from himae_stream.sources.base import Source
from himae_stream.sources.file import FileSource, write_log

FS = 100.0


def make_packets(start, sizes, rng, channels=2):
    """Consecutive packets from stream index `start`; t_us = index / FS on the device clock."""
    out, index = [], start
    for n in sizes:
        codes = rng.integers(-3000, 3000, (channels, n)).astype(np.int32)
        out.append((index, Packet(index % SEQ_MODULUS, round(index * 1e6 / FS), FS, codes, (0.5, 2.0)[:channels])))
        index += n
    return out


def collect(stream, arrivals):
    chunks = []
    for packet in arrivals:
        chunks += stream.push(packet)
    return chunks + stream.flush()


@settings(max_examples=150, deadline=None)
@given(
    start=st.integers(SEQ_MODULUS - 300, SEQ_MODULUS - 1) | st.integers(0, 1000),
    sizes=st.lists(st.integers(1, 20), min_size=1, max_size=60),
    seed=st.integers(0, 2**32 - 1),
    loss=st.floats(0, 0.4),
    dup=st.floats(0, 0.3),
    displacement=st.integers(0, 8),
)
def test_loss_duplication_reordering_wrap_are_exact(start, sizes, seed, loss, dup, displacement):
    rng = np.random.default_rng(seed)
    sent = make_packets(start, sizes, rng)
    copies = np.where(rng.random(len(sent)) < loss, 0, np.where(rng.random(len(sent)) < dup, 2, 1))
    copies[0] = 1  # the stream starts at the first packet to arrive
    arrivals = []
    for k, (_, packet) in enumerate(sent):
        for _ in range(copies[k]):
            key = -1.0 if k == 0 else k + rng.uniform(0, displacement)
            arrivals.append((key, packet))
    arrivals.sort(key=lambda a: a[0])

    stream = SampleStream(reorder_packets=max(1, displacement))
    chunks = collect(stream, [p for _, p in arrivals])

    last = max(k for k in range(len(sent)) if copies[k])
    end = sent[last][0] + sent[last][1].n
    expected = np.zeros((2, end - start), np.float32)
    lost = np.ones(end - start, bool)
    for k, (index, packet) in enumerate(sent[: last + 1]):
        if copies[k]:
            expected[:, index - start : index - start + packet.n] = packet.physical()
            lost[index - start : index - start + packet.n] = False

    timestamps, samples, mask = (np.concatenate(parts, axis=-1) for parts in zip(*chunks))
    np.testing.assert_array_equal(samples, expected)
    np.testing.assert_array_equal(mask, lost)
    np.testing.assert_allclose(timestamps, (start + np.arange(end - start)) / FS, rtol=0, atol=1e-6)
    assert [c.start for c in chunks] == list(start + np.cumsum([0] + [len(c) for c in chunks[:-1]]))
    c = stream.counters
    assert c["lost_samples"] == int(lost.sum())
    assert c["duplicates"] == int(np.sum(np.maximum(copies - 1, 0)))
    assert c["samples"] == int((~lost).sum())
    assert c["late"] == 0 and c["restarts"] == 0
    assert c["gaps"] == int(np.sum(np.diff(np.concatenate([[0], lost.astype(int)])) == 1))


def test_reordered_packets_are_counted():
    rng = np.random.default_rng(1)
    sent = [p for _, p in make_packets(0, [5] * 6, rng)]
    stream = SampleStream(reorder_packets=4)
    chunks = collect(stream, [sent[0], sent[2], sent[1], sent[5], sent[3], sent[4]])
    assert stream.counters["reordered"] == 3
    assert stream.counters["lost_samples"] == 0
    assert sum(len(c) for c in chunks) == 30


def test_nan_and_inf_from_a_float32_device_are_lost_samples():
    samples = np.array([[1.0, np.nan, 2.0, np.inf, 3.0], [1.0, 1.0, 1.0, 1.0, -np.inf]], np.float32)
    packets = [Packet(0, 0, FS, samples, (1.0, 1.0), SampleFormat.FLOAT32),
               Packet(5, 50_000, FS, samples[:, ::-1].copy(), (1.0, 1.0), SampleFormat.FLOAT32)]
    stream = SampleStream()
    chunks = collect(stream, [packets[0], packets[1]])
    lost = np.concatenate([c.lost_mask for c in chunks])
    values = np.concatenate([c.samples for c in chunks], axis=1)
    assert np.array_equal(np.flatnonzero(lost), [1, 3, 4, 5, 6, 8])
    assert np.isfinite(values).all() and np.all(values[:, lost] == 0)
    assert stream.counters["nonfinite"] == 6 and stream.counters["samples"] == 10


@pytest.mark.parametrize("fmt", [SampleFormat.INT16, SampleFormat.INT24, SampleFormat.FLOAT32])
def test_physical_values_of_every_format_and_layout(fmt):
    """Codes as the wire unpacks them (interleaved channels: a transposed view) times each channel's
    scale, in float32, whatever the code type."""
    rng = np.random.default_rng(3)
    values = rng.uniform(-1, 1, (3, 7))
    packet = Packet.from_physical(0, 0, FS, values, (1e-3, 2e-3, 5e-4), fmt)
    wire = decode_packet(encode_packet(packet))
    assert not wire.samples.flags.c_contiguous
    want = wire.samples.astype(np.float64) * np.array(wire.scale)[:, None]
    got = wire.physical()
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_host_times_never_go_back_when_a_faster_arrival_moves_the_clock_map():
    """The first packet arrived 80 ms late, the next at once: mapping the second by the
    smaller delay would put its samples before the first packet's."""
    rng = np.random.default_rng(5)
    (_, first), (_, second), (_, third) = make_packets(0, [10, 10, 10], rng)
    stream = SampleStream()
    chunks = stream.push(first, host_time=100.0 + 0.09 + 0.08)  # sample 9 taken at 0.09 s
    chunks += stream.push(second, host_time=100.0 + 0.19)
    chunks += stream.push(third, host_time=100.0 + 0.29)
    times = np.concatenate([c.timestamps for c in chunks])
    assert len(times) == 30 and np.all(np.diff(times) > 0)
    assert times[-1] == pytest.approx(100.29)  # later samples keep their true times


def test_no_sample_is_timed_after_its_packet_arrived():
    """Delays jitter by up to 4 ms: the clock map's line runs through the middle of each second's
    least delay, so the fastest packets would map past their own arrival without the cap."""
    rng = np.random.default_rng(7)
    stream, chunks = SampleStream(), []
    for index, packet in make_packets(0, [10] * 600, rng):
        arrival = 100.0 + (index + 9) / FS + 0.005 + rng.uniform(0, 0.004)
        chunks += stream.push(packet, host_time=arrival)
    late = [c.timestamps[-1] - c.arrival for c in chunks if c.timestamps[-1] > c.arrival]
    assert len(chunks) == 600 and not late, f"{len(late)} chunks end after their arrival, by up to {max(late):.6f} s"
    times = np.concatenate([c.timestamps for c in chunks])
    assert np.all(np.diff(times) > 0)
    assert np.median(np.concatenate([c.arrival - c.timestamps[-1:] for c in chunks])) < 0.01  # still the device's pace


def test_late_packet_beyond_window_is_not_delivered_twice():
    rng = np.random.default_rng(2)
    sent = [p for _, p in make_packets(0, [4] * 10, rng)]
    stream = SampleStream(reorder_packets=2)
    chunks = collect(stream, [sent[0], *sent[2:6], sent[1], *sent[6:]])
    mask = np.concatenate([c.lost_mask for c in chunks])
    assert mask.sum() == 4 and mask[4:8].all()
    assert stream.counters["late"] == 1 and stream.counters["lost_samples"] == 4
    assert len(mask) == 40


def test_restart_is_counted_not_filled():
    rng = np.random.default_rng(3)
    first = [p for _, p in make_packets(5_000_000, [10] * 3, rng)]
    second = [p for _, p in make_packets(0, [10] * 3, rng)]
    stream = SampleStream()
    chunks = collect(stream, first + second)
    assert stream.counters["restarts"] == 1
    assert stream.counters["lost_samples"] == 0
    assert sum(len(c) for c in chunks) == 60
    assert chunks[-1].start == 0 or any(c.start == 0 for c in chunks)


def test_quiet_source_expires_held_packets():
    rng = np.random.default_rng(4)
    sent = [p for _, p in make_packets(0, [10] * 3, rng)]
    stream = SampleStream(reorder_packets=8, reorder_timeout_s=0.5)
    assert len(stream.push(sent[0], host_time=0.1)) == 1
    assert stream.push(sent[2], host_time=0.3) == []  # held: sent[1] may still come
    assert stream.expire(0.6) == []
    (chunk,) = stream.expire(0.9)
    assert chunk.lost_mask.tolist() == [True] * 10 + [False] * 10


def test_drift_200_ppm_estimated_within_10_ppm_after_60_s():
    rng = np.random.default_rng(5)
    stream = SampleStream()
    ppm, n, host0 = 200.0, 10, 1000.0
    index = 0
    true_times, chunks = [], []
    while index < 60 * FS:
        t_us = round(index * 1e6 / FS)  # device clock
        host_sample = host0 + (index + np.arange(n)) / FS / (1 + ppm * 1e-6)
        latency = 0.003 + rng.exponential(0.004) + (0.2 if rng.random() < 0.02 else 0.0)
        packet = Packet(index, t_us, FS, rng.integers(-9, 9, (1, n)).astype(np.int32), (1.0,))
        chunks += stream.push(packet, host_time=host_sample[-1] + latency)
        true_times.append(host_sample)
        index += n
    assert abs(stream.drift_ppm - ppm) < 10, stream.drift_ppm
    # mapped times track true sampling times up to the smallest transport latency
    late = np.concatenate([c.timestamps for c in chunks])[-1000:] - np.concatenate(true_times)[-1000:]
    assert np.all(np.abs(late - 0.003) < 0.002), (late.min(), late.max())


def test_clock_map_ignores_latency_spikes():
    clock = ClockMap()
    rng = np.random.default_rng(6)
    for d in np.arange(0, 60, 0.05):
        clock.observe(d, d * (1 - 50e-6) + 0.01 + (1.0 if rng.random() < 0.2 else rng.uniform(0, 0.002)))
    assert abs(clock.drift_ppm - 50) < 5


def _log(tmp_path, sizes, seed=7):
    rng = np.random.default_rng(seed)
    sent = [p for _, p in make_packets(SEQ_MODULUS - 50, sizes, rng)]
    path = tmp_path / "capture.bin"
    write_log(path, sent[:3] + sent[4:])  # one packet lost on the way
    total = sum(sizes)
    return path, sent, total


def test_async_and_blocking_iteration_agree(tmp_path):
    path, sent, total = _log(tmp_path, [7] * 40)

    async def read_async():
        return [c async for c in SampleStream(FileSource(path))]

    async_chunks = asyncio.run(read_async())
    stream = SampleStream(FileSource(path))
    blocking_chunks = list(stream)
    for chunks in (async_chunks, blocking_chunks):
        mask = np.concatenate([c.lost_mask for c in chunks])
        assert len(mask) == total and mask.sum() == 7 and mask[21:28].all()
        samples = np.concatenate([c.samples for c in chunks], axis=1)
        np.testing.assert_array_equal(samples[:, :7], sent[0].physical())
    assert stream.counters["frames"] == 39 and stream.counters["lost_samples"] == 7


def test_full_queue_drops_oldest_and_counts(tmp_path):
    path, _, total = _log(tmp_path, [5] * 8000)  # several 64 KiB reads, one chunk each

    async def slow_consumer():
        stream = SampleStream(FileSource(path), queue_chunks=1)
        seen = []
        async for chunk in stream:
            seen.append(chunk)
            await asyncio.sleep(0.05)
        return stream, seen

    stream, seen = asyncio.run(slow_consumer())
    c = stream.counters
    assert c["overflow_drops"] > 0
    assert sum(len(s) for s in seen) + c["overflow_samples"] == total
    starts = [s.start for s in seen]
    assert starts == sorted(starts)


def test_duplicate_seconds_later_is_still_a_duplicate():
    rng = np.random.default_rng(8)
    sent = [p for _, p in make_packets(0, [1] * 400, rng)]  # one-sample packets, 4 s
    stream = SampleStream()
    chunks = collect(stream, sent[:350] + [sent[3]] + sent[350:])
    assert stream.counters["duplicates"] == 1 and stream.counters["late"] == 0
    assert sum(len(c) for c in chunks) == 400 and stream.counters["lost_samples"] == 0
    assert len(stream._delivered) <= 5 * FS + 1  # memory bounded by max_late_s


def test_scale_change_inside_a_chunk_keeps_physical_values():
    rng = np.random.default_rng(9)
    a, b = (p for _, p in make_packets(0, [6, 6], rng))
    b = Packet(b.seq, b.t_us, b.fs, b.samples, (4.0, 0.25))
    (chunk,) = SampleStream().push_many([a, b])
    np.testing.assert_array_equal(chunk.samples, np.concatenate([a.physical(), b.physical()], axis=1))


class StallingSource(Source):
    """Delivers some packets, then stays silent without ending (a stalled link)."""

    def __init__(self, packets):
        super().__init__()
        self.packets = packets
        self.arrivals = []  # the host time each packet arrived

    async def __aiter__(self):
        for packet in self.packets:
            self.arrivals.append(time.monotonic())
            yield Received(self.arrivals[-1], [packet])
        await asyncio.Event().wait()

    async def close(self):
        pass


def test_held_packets_expire_while_the_source_is_silent():
    rng = np.random.default_rng(10)
    sent = [p for _, p in make_packets(0, [10] * 3, rng)]

    source = StallingSource([sent[0], sent[2]])

    async def main():
        stream = SampleStream(source, reorder_timeout_s=0.2)
        chunks = []
        async with asyncio.timeout(5):  # a deadline: the hole must be given up while the source is silent
            async for chunk in stream:
                chunks.append(chunk)
                if sum(len(c) for c in chunks) == 30:
                    break
        return chunks

    chunks = asyncio.run(main())
    np.testing.assert_array_equal(np.concatenate([c.lost_mask for c in chunks]), np.repeat([False, True, False], 10))
    # the hole was given up no sooner than the timeout after the packet held behind it arrived
    assert chunks[-1].start == 10 and chunks[-1].arrival - source.arrivals[1] >= 0.2


def test_one_packet_at_a_time_equals_packets_together():
    """A chunk of one packet (its own short path) holds exactly what the same packets give merged."""
    packets = [p for _, p in make_packets(0, [7, 3, 12, 5], np.random.default_rng(5))]
    alone = SampleStream()
    one = [c for p in packets for c in alone.push_many([p])]  # no host clock: device times compare
    together = SampleStream().push_many(packets)
    assert len(one) == 4 and len(together) == 1
    assert np.array_equal(np.concatenate([c.samples for c in one], axis=1), together[0].samples)
    assert np.array_equal(np.concatenate([c.timestamps for c in one]), together[0].timestamps)
    assert not together[0].lost_mask.any() and [c.start for c in one] == [0, 7, 10, 22]
    timed = SampleStream()
    assert [timed.push_many([p], host_time=0.01 * i)[0].arrival for i, p in enumerate(packets)] == [0, 0.01, 0.02, 0.03]
