"""Shimmer3 sensors: the data packets against pyshimmer's decoders, the reader on bytes split anywhere,
with answers between packets, changed and lost, the simulated sensor over a real pseudo-terminal
checked against its drop log (paced, through a stall; stopped and started again), pyshimmer
driving the simulated sensor as it drives a real one, `himae run` on it, and bad URLs."""

import asyncio
import threading
from functools import partial

import numpy as np
import pytest
import serial
import commanded
from conftest import BUNDLED
from hypothesis import given, settings
from hypothesis import strategies as st
from pyshimmer import DataPacket, EChannelType, ShimmerBluetooth
from pyshimmer.bluetooth.bt_const import BtChannelsByIndex
from pyshimmer.dev.channels import ChDataTypeAssignment
from test_sim_serial import first_seconds, replay

from firmware_sim.device import DeviceModel
from firmware_sim.faults import FaultConfig, Faults
from firmware_sim.shimmer_device import ShimmerDevice
from himae_stream import shimmer
from himae_stream.sources.base import SourceError
from himae_stream.sources.shimmer import LOCK, ShimmerReader
from himae_stream.urls import SourceUrlError, open_source

KNOWN = [i for i, c in shimmer.CHANNELS.items() if c is not None]


def test_every_channel_is_read_as_pyshimmer_reads_it():
    """Widths, signedness and byte order of every channel the firmware describes, against pyshimmer."""
    rng = np.random.default_rng(0)
    inquiry = shimmer.Inquiry(256, tuple(KNOWN))
    values = np.stack([rng.integers(-(1 << 8 * c.size - 1) if c.signed else 0, 1 << (8 * c.size - c.signed), 20)
                       for c in inquiry.channels])
    data = shimmer.encode(np.arange(20) * 256 + 5, values, inquiry)
    rows = np.frombuffer(data, np.uint8).reshape(20, inquiry.packet_size)
    stamps, got = shimmer.decode(rows, inquiry)
    assert np.array_equal(stamps, np.arange(20) * 256 + 5) and np.array_equal(got, values)
    for k, (at, channel) in enumerate(shimmer._fields(inquiry.channels)):
        theirs = ChDataTypeAssignment[BtChannelsByIndex[KNOWN[k]]]
        assert theirs.size == channel.size, channel
        assert [theirs.decode(bytes(row[at:at + channel.size])) for row in rows] == values[k].tolist(), channel
    assert all(ChDataTypeAssignment[BtChannelsByIndex[i]] is None for i, c in shimmer.CHANNELS.items() if c is None)


def test_inquiry_answers_round_trip_and_a_channel_of_unknown_width_is_refused():
    inquiry = shimmer.Inquiry(640, (0x12, 0x1C, 0x00), config=0x01020304, buffer=1)
    data = inquiry.encode()
    assert shimmer.Inquiry.parse(data) == (inquiry, len(data)) and shimmer.Inquiry.parse(data[:-1]) is None
    assert inquiry.fs == 51.2 and inquiry.packet_size == 1 + 3 + 2 + 2 + 2
    with pytest.raises(shimmer.ShimmerProtocolError, match="channel.s. 0x14, whose width its firmware does not say"):
        shimmer.Inquiry.parse(shimmer.Inquiry(640, (0x12, 0x14)).encode())


INQUIRY = shimmer.Inquiry(256, (0x12, 0x1C))  # A13 (PPG on a GSR+ unit) and GSR


def packets_of(n: int, first: int = 0) -> tuple[bytes, np.ndarray]:
    values = np.stack([(np.arange(n) * 37 + 100) % 4096, (np.arange(n) * 11 + 3000) % 4096])
    return shimmer.encode((np.arange(first, first + n) * INQUIRY.divider) % shimmer.TIMESTAMP_MODULUS, values,
                          INQUIRY), values


def started(counters: dict | None = None, clock=None) -> ShimmerReader:
    """A reader as `start` leaves it once the sensor answered INQUIRY."""
    reader = ShimmerReader({} if counters is None else counters, **({"clock": clock} if clock else {}))
    reader.inquiry = INQUIRY
    reader._info = shimmer_info()
    return reader


def shimmer_info():
    from himae_stream.protocol import SampleFormat, StreamInfo

    return StreamInfo(128.0, ("INT_A13", "GSR"), (1.0, 1.0), SampleFormat.FLOAT32)


def read(data: bytes, step: int | None = None):
    counters: dict[str, int] = {}
    reader = started(counters)
    packets = []
    for i in range(0, len(data), step or max(len(data), 1)):
        packets += reader.feed(data[i:i + (step or len(data))])
    index = np.concatenate([np.arange(p.seq, p.seq + p.n) for p in packets] or [np.zeros(0, int)])
    values = np.concatenate([p.samples for p in packets], axis=1) if packets else np.zeros((2, 0))
    return counters, index, values


@pytest.mark.parametrize("step", [None, 1, 3, 7, 50])
def test_reads_split_anywhere_skip_answers_between_packets(step):
    data, values = packets_of(100)
    size = INQUIRY.packet_size
    # the start command's acknowledgement first; a status answer and a battery reading in between
    stream = b"\xff" + data[:30 * size] + b"\x8a\x71\x12" + data[30 * size:60 * size] + b"\x8a\x94\x01\x02\x03" \
        + data[60 * size:]
    counters, index, got = read(stream, step)
    assert np.array_equal(index, np.arange(100)) and np.array_equal(got, values)
    assert counters["answers"] == 3 and counters["skipped_bytes"] == 0 and counters["frames"] == 100


def test_lost_packets_are_placed_by_their_timestamps_even_past_the_clocks_wrap():
    data, values = packets_of(200, first=(1 << 24) // 256 - 50)  # the 24-bit clock wraps after 50 packets
    size = INQUIRY.packet_size
    keep = np.r_[0:40, 43:100, 160:200]  # 3 lost, then 60 (a stall)
    counters, index, got = read(b"".join(data[k * size:(k + 1) * size] for k in keep), 13)
    assert np.array_equal(index, keep) and np.array_equal(got, values[:, keep])


def test_a_gap_past_the_clocks_wrap_and_a_restarted_clock_are_held_to_the_host_clock():
    """Read as they come (128 Hz): after 600 s away (the 24-bit clock wrapped once, so the timestamps
    show 88 s) the packets go on 600 s later; after 2 s away from a sensor whose clock restarted at 0
    (its timestamps show 511.7 s) they go on 2 s later, by the host clock."""
    now = [0.0]
    reader, packets = started(clock=lambda: now[0]), []

    def arrive(first: int, n: int, at_s: float, stamps_from: int) -> None:
        data, _ = packets_of(n, first=stamps_from)
        for k in range(n):  # each packet read as it is sampled
            now[0] = at_s + k / 128
            packets.extend(reader.feed(data[k * INQUIRY.packet_size:(k + 1) * INQUIRY.packet_size]))

    arrive(0, 40, 0.0, 0)
    arrive(40 + 600 * 128, 40, 600.0 + 40 / 128, 40 + 600 * 128)
    arrive(0, 40, 602.0 + 80 / 128, 0)  # restarted: stamped from 0
    index = np.concatenate([np.arange(p.seq, p.seq + p.n) for p in packets])
    assert np.array_equal(index[:80], np.r_[0:40, 40 + 600 * 128:80 + 600 * 128])
    assert abs(index[80] - (index[79] + 2 * 128)) <= 2 and np.array_equal(np.diff(index[80:]), np.ones(39))


def test_a_changed_start_byte_loses_its_packet_and_lost_bytes_lose_only_theirs():
    data, values = packets_of(100)
    size = INQUIRY.packet_size
    changed = bytearray(data)
    changed[10 * size] = 0x55
    counters, index, got = read(bytes(changed), 5)
    assert np.array_equal(index, np.r_[0:10, 11:100]) and np.array_equal(got, values[:, index])
    assert counters["damaged"] == 1 and counters["resyncs"] == 0
    cut = data[:40 * size + 2] + data[40 * size + 4:]  # two bytes of packet 40 lost
    counters, index, got = read(cut, 5)
    assert np.array_equal(index, np.r_[0:40, 41:100]) and np.array_equal(got, values[:, index])
    assert counters["resyncs"] == 1


@settings(max_examples=300, deadline=None)
@given(edits=st.lists(st.tuples(st.integers(0, 1199), st.integers(0, 3), st.binary(max_size=4)), max_size=6),
       step=st.integers(1, 80))
def test_any_bytes_changed_added_or_lost_never_raise_and_cost_a_few_packets_each(edits, step):
    """Bytes overwritten, inserted or removed anywhere, read in any split: nothing raises, indices only
    increase, the reader holds a bounded number of bytes, and each edit costs a few packets, not the rest."""
    data, values = packets_of(120)
    size = INQUIRY.packet_size
    edited = bytearray(data)
    for at, removed, added in sorted(edits, reverse=True):
        edited[at % (len(data) + 1):at % (len(data) + 1) + removed] = added
    counters: dict[str, int] = {}
    reader = started(counters)
    packets = []
    for i in range(0, len(edited), step):
        packets += reader.feed(bytes(edited[i:i + step]))
        assert len(reader._buffer) < LOCK * size + 8
    index = np.concatenate([np.arange(p.seq, p.seq + p.n) for p in packets] or [np.zeros(0, int)])
    assert np.all(np.diff(index) > 0) and counters["frames"] == index.size
    assert index.size >= 120 - 8 * len(edits) - 2 * LOCK
    if edited == data:
        assert np.array_equal(index, np.arange(120))


# ---------------------------------------------------------------- the simulated sensor on a pty
def sensor(seconds: float, faults: FaultConfig | None = None, speed: float | None = None, divider: int = 256,
           channels: str = "PLETH") -> ShimmerDevice:
    return ShimmerDevice(DeviceModel(first_seconds(seconds, channels)), Faults(faults or FaultConfig()), speed,
                         divider=divider)


def check(chunks, device: ShimmerDevice) -> np.ndarray:
    return commanded.check(chunks, device, lambda a, b: device.values(device.rate, a, b))


def test_sensor_unpaced_with_lost_and_changed_packets_matches_its_drop_log():
    device = sensor(30, FaultConfig(loss=0.03, corrupt=0.03, seed=5))
    with device:
        stream, tap, chunks = asyncio.run(replay(device, 60, reader=ShimmerReader))
    lost = check(chunks, device)
    log = device.log.counters
    assert log["dropped_lost"] > 0 and lost.sum() > 100
    # a changed packet between good ones is counted; changed ones in a row are dropped with the bytes
    # searched for packet boundaries again
    damaged, searched = tap.counters["damaged"], tap.counters["resyncs"]
    assert damaged <= log["dropped_corrupted"] <= damaged + 3 * searched and searched <= 10
    assert tap.info.device == "Shimmer3 (LogAndStream 0.16.0)" and tap.info.channel_names == ("INT_A13",)
    assert device.commands[:4] == [shimmer.STOP, shimmer.VERSION, shimmer.INQUIRY, shimmer.START]


def test_sensor_in_real_time_through_a_stall_and_at_the_rate_the_url_sets():
    """512 Hz set by the reader (divider 64); the link stalls for 0.5 s: the 255 packets the sensor could
    not send then (51 units of 5) are lost, in place."""
    device = sensor(3, FaultConfig(disconnect_after=1.0, disconnect_for=0.5), speed=1.0)
    with device:
        stream, tap, chunks = asyncio.run(replay(device, 60, reader=partial(ShimmerReader, fs=512)))
    assert device.divider == 64 and tap.info.fs == 512
    lost = check(chunks, device)
    assert lost.sum() == device.log.counters["dropped_disconnected"] == 255


def test_started_again_after_a_drop_the_sensors_clock_places_the_gap_exactly():
    device = sensor(60, speed=1.0)
    with device:
        device.start()
        # the Bluetooth link drops after 50 packets: the sensor stops streaming
        port, before, after = commanded.dropped_and_started_again(device, ShimmerReader({}))
        ShimmerReader.stop(port)
        assert device.idle.wait(5), "the sensor did not stop"
        port.close()
    got = before + after
    index = np.concatenate([np.arange(p.seq, p.seq + p.n) for p in got])
    values = np.concatenate([p.samples for p in got], axis=1)
    assert np.all(np.diff(index) > 0) and index[50] - index[49] > 1  # the time away is a gap
    assert np.array_equal(values, device.values(device.rate, 0, index[-1] + 1)[:, index])  # each in its place
    assert len(device.acquisitions) == 2 and device.commands[-1] == shimmer.STOP


def test_a_link_that_drops_is_opened_again_and_the_sensor_started_again(tmp_path):
    """The sensor's port hangs up after 50 packets and a sensor answers at its name again, its clock from 0
    (it was restarted): the source reopens it, asks and starts it, and goes on, the time away (by the host
    clock, the sensor's having restarted) a gap of lost samples, not the 511 s its timestamps show."""
    chunks, counters, second = commanded.across_a_lost_link(tmp_path, lambda: sensor(60, speed=1.0), ShimmerReader)
    assert counters["reconnects"] == 1 and counters["gaps"] == 1 and 1 <= counters["lost_samples"] < 10 * 128
    assert second.commands[:4] == [shimmer.STOP, shimmer.VERSION, shimmer.INQUIRY, shimmer.START]
    index = np.concatenate([np.arange(c.start, c.start + len(c)) for c in chunks])
    assert np.array_equal(index, np.arange(index.size))


def test_a_source_closed_mid_stream_stops_the_sensor():
    device = sensor(60, speed=1.0)
    with device:
        device.start()
        commanded.close_mid_stream(device, ShimmerReader)
        assert device.commands[-1] == shimmer.STOP and len(device.acquisitions) == 1


def test_pyshimmer_drives_the_simulated_sensor_as_a_real_one():
    """pyshimmer (an independent Shimmer3 API) initialises the simulated sensor (firmware version,
    status acknowledgement off), reads and sets its rate, asks what it streams, streams, stops."""
    device = sensor(10, speed=1.0, channels="PLETH,II")
    got, enough = [], threading.Event()

    def packet(p: DataPacket) -> None:
        got.append((p[EChannelType.TIMESTAMP], p[EChannelType.INTERNAL_ADC_13], p[EChannelType.INTERNAL_ADC_12]))
        if len(got) == 300:
            enough.set()

    with device:
        device.start()
        api = ShimmerBluetooth(serial.Serial(device.path, 115200))
        api.initialize()
        try:
            assert api.get_sampling_rate() == 128.0
            api.set_sampling_rate(256.0)
            rate, _, channels = api.get_inquiry()
            assert rate == 256.0 and channels == [EChannelType.INTERNAL_ADC_13, EChannelType.INTERNAL_ADC_12]
            api.add_stream_callback(packet)
            api.start_streaming()
            assert enough.wait(10), f"{len(got)} packets came"
            api.stop_streaming()
        finally:
            api.shutdown()
    rows = np.array(got[:300])
    assert np.array_equal(rows[:, 0], np.arange(300) * 128)
    assert np.array_equal(rows[:, 1:].T, device.values(256.0, 0, 300))


def test_a_port_where_no_shimmer_answers_is_one_line():
    assert commanded.no_answer(ShimmerReader({})).startswith("no Shimmer answered on PORT: is it on, paired")


@pytest.mark.parametrize("url, message", [
    ("serial:///dev/rfcomm0?format=shimmer&channels=A13", "channels do not go with format=shimmer"),
    ("serial:///dev/rfcomm0?format=shimmer&fs=0.25", "a Shimmer3 samples at 32768 Hz over a divider of 1 to 65535"),
    ("file://rec.bin?format=shimmer", "a Shimmer's recorded bytes do not say which channels it streamed"),
])
def test_bad_shimmer_urls_are_one_line(url, message):
    with pytest.raises((SourceUrlError, SourceError), match=message):
        open_source(url)


def test_run_on_a_shimmer_in_another_process(tmp_path, himae):
    """`himae sim --device shimmer` streams the bundled record's PLETH on A13 at 128 Hz; `himae run` reads
    it: the windows of the framed replay of the same seconds, nothing lost, the same heart rate to
    within what 12-bit codes at another rate change; the summary counts damaged packets (a Shimmer's
    carry no CRC)."""
    said, got, want, summary = commanded.run_beside_framed(himae, tmp_path,
                                                           ["--device", "shimmer", "--channels", "PLETH"], [])
    assert said["inputs"] == "INT_A13=PLETH" and said["source"].endswith("?format=shimmer")
    assert ", damaged packets 0, " in summary and "crc" not in summary
    for g, w in zip(got, want):
        assert g["predictions"]["heart_rate"] == pytest.approx(w["predictions"]["heart_rate"], abs=1.0)


def test_sim_url_replays_through_a_shimmer():
    chunks, counters, source = commanded.sim_chunks(
        f"sim://{BUNDLED}?channels=PLETH&transport=shimmer&speed=max&duration=3&loss=0.02")
    assert counters["lost_samples"] > 0
    check(chunks, source.device)
