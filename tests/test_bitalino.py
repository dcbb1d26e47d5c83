"""BITalino boards: the frames against what PLUX's own API reads, the reader on bytes split anywhere,
broken and lost, the simulated board over a real pseudo-terminal checked against its drop log
(paced, with a Bluetooth stall longer than the 4-bit counter can show), the commands that start,
stop and restart it, `himae run` on it, and bad URLs."""

import asyncio
from functools import partial

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import commanded
from conftest import BUNDLED
from test_sim_serial import first_seconds, replay

from bumble.link import LocalLink
from waiting import read_all

from firmware_sim import bitalino_device
from firmware_sim.bitalino_ble import BitalinoBle
from firmware_sim.bitalino_device import BitalinoDevice
from firmware_sim.device import DeviceModel
from firmware_sim.faults import FaultConfig, Faults
from himae_stream import bitalino
from himae_stream.bumble_backend import BumbleBackend, set_default_adapter
from himae_stream.samplestream import SampleStream
from himae_stream.sources.base import SourceError
from himae_stream.sources.bitalino import LOCK, BitalinoReader
from himae_stream.sources.bitalino_ble import BitalinoBleSource
from himae_stream.sources.ble import DeviceRefused
from himae_stream.urls import SourceUrlError, open_source

#: Frames and what PLUX's Python API (bitalino 1.2.6, `BITalino.read`) reads from them:
#: inputs acquired, the bytes, and per frame [sequence, I1, I2, O1, O2, analog codes...].
PLUX_READS = [
    ([0], "fcaf3000a04014a8fe",
     [[3, 1, 0, 1, 0, 1023], [4, 1, 0, 1, 0, 0], [15, 1, 0, 1, 0, 517]]),
    ([0, 2, 3], "004bff07600e00af02006816400163a06f2e",
     [[0, 0, 1, 1, 0, 1, 1023, 300], [1, 0, 1, 1, 0, 512, 2, 700], [2, 0, 1, 1, 0, 1000, 99, 5]]),
    ([0, 1, 2, 3, 4, 5], "c0af6a5500fcff7b3f5095aaff03f081",
     [[7, 1, 1, 1, 1, 1023, 0, 341, 682, 63, 0], [8, 1, 1, 1, 1, 0, 1023, 682, 341, 0, 63]]),
]


@pytest.mark.parametrize("inputs, frames, reads", PLUX_READS)
def test_frames_are_what_pluxs_api_reads(inputs, frames, reads):
    reads = np.array(reads)
    digital = int("".join(map(str, reads[0, 1:5])), 2)
    data = bytes.fromhex(frames)
    assert bitalino.encode(reads[:, 0], reads[:, 5:].T, digital) == data
    rows = np.frombuffer(data, np.uint8).reshape(len(reads), -1)
    seq, codes = bitalino.decode(rows, len(inputs))
    assert np.array_equal(seq, reads[:, 0]) and np.array_equal(codes, reads[:, 5:].T)
    assert np.array_equal(bitalino.crc4(rows), rows[:, -1] & 0x0F)


def test_frame_sizes_commands_and_every_single_bit_error_caught():
    assert [bitalino.frame_size(n) for n in range(1, 7)] == [3, 4, 6, 7, 8, 8]
    assert bitalino.rate_command(1000) == 0xC3 and bitalino.parse_rate(0xC3) == 1000
    assert bitalino.start_command([0, 2]) == 0x15 and bitalino.parse_start(0x15) == [0, 2]
    assert bitalino.parse_start(bitalino.VERSION) is None and bitalino.parse_rate(bitalino.VERSION) is None
    rng = np.random.default_rng(0)
    for n in range(1, 7):
        codes = np.stack([rng.integers(0, 1 << bits, 40) for bits in bitalino.FIELD_BITS[:n]])
        rows = np.frombuffer(bitalino.encode(np.arange(40), codes), np.uint8).reshape(40, -1)
        assert np.array_equal(bitalino.decode(rows, n)[1], codes)
        flips = np.packbits(np.eye(rows.shape[1] * 8, dtype=np.uint8), axis=1)  # one bit set per row
        bad = rows[0] ^ flips
        assert not (bitalino.crc4(bad) == bad[:, -1] & 0x0F).any(), n


def frames_of(n_frames: int, inputs=(0,), first_seq: int = 0) -> tuple[bytes, np.ndarray]:
    """Frames with distinct codes, numbered from `first_seq`: (bytes, codes (inputs, n))."""
    codes = (np.arange(n_frames * len(inputs)).reshape(len(inputs), n_frames) * 7 + 100) % 1024
    codes[4:] %= 64
    return bitalino.encode(np.arange(first_seq, first_seq + n_frames), codes), codes


def read(data: bytes, step: int | None = None, inputs=(0,)):
    """Feed `data` whole or `step` bytes at a time: (counters, indices, codes)."""
    counters: dict[str, int] = {}
    reader = BitalinoReader(counters, inputs=inputs)
    packets = []
    for i in range(0, len(data), step or max(len(data), 1)):
        packets += reader.feed(data[i : i + (step or len(data))])
    if not packets:
        return counters, np.zeros(0, int), np.zeros((len(reader.inputs), 0), int)
    index = np.concatenate([np.arange(p.seq, p.seq + p.n) for p in packets])
    return counters, index, np.concatenate([p.samples for p in packets], axis=1)


@pytest.mark.parametrize("step", [None, 1, 2, 5, 64])
@pytest.mark.parametrize("inputs", [[0], [1, 3], list(range(6))])
def test_reads_split_anywhere_after_bytes_of_no_frame_give_every_frame(step, inputs):
    data, codes = frames_of(200, inputs)
    junk = b"BITalino_v5.2\n\x07\xff\x00"  # what was on the line before the first frame
    counters, index, got = read(junk + data, step, inputs=inputs)
    assert np.array_equal(index, np.arange(200)) and np.array_equal(got, codes)
    assert counters["frames"] == 200 and counters["skipped_bytes"] == len(junk) and counters["crc_errors"] == 0


def test_a_changed_byte_loses_its_frame_and_lost_bytes_lose_only_theirs():
    data, codes = frames_of(100)
    size = bitalino.frame_size(1)
    changed = bytearray(data)
    changed[10 * size + 1] ^= 0x40  # frame 10
    counters, index, got = read(bytes(changed), 7)
    assert np.array_equal(index, np.r_[0:10, 11:100]) and np.array_equal(got[0], codes[0, index])
    assert counters["crc_errors"] == 1 and counters["skipped_bytes"] == size and counters["resyncs"] == 0
    cut = data[: 40 * size + 1] + data[41 * size:]  # two bytes of frame 40 lost: the boundaries move
    counters, index, got = read(cut, 5)
    assert np.array_equal(index, np.r_[0:40, 41:100]) and np.array_equal(got[0], codes[0, index])
    assert counters["resyncs"] == 1 and counters["crc_errors"] >= 1


def test_frames_lost_count_modulo_16_and_whole_turns_come_from_the_host_clock():
    """A 100-Hz board read every 50 ms: frames the link lost are placed by their sequence number,
    and a stall of 0.45 s (45 frames: 2 turns and 13) by how late the next read is; 0.3 s of
    frames the link delivered late, all at once, are not a loss."""
    fs, size = 100, bitalino.frame_size(1)
    data, codes = frames_of(400)
    keep = np.r_[0:100, 103:200, 245:400]  # 3 lost, then 45 lost
    reader_clock = [0.0]
    counters: dict[str, int] = {}
    reader = BitalinoReader(counters, fs=fs, inputs=[0], clock=lambda: reader_clock[0])
    packets = []
    for k in range(0, 400, 5):  # each read brings the frames sampled in the last 50 ms
        reader_clock[0] = (max(k, 330) if 300 <= k < 330 else k + 5) / fs + 0.004
        chunk = np.intersect1d(keep, np.arange(k, k + 5))
        packets += reader.feed(b"".join(data[j * size:(j + 1) * size] for j in chunk))
    index = np.concatenate([np.arange(p.seq, p.seq + p.n) for p in packets])
    values = np.concatenate([p.samples for p in packets], axis=1)
    assert np.array_equal(index, keep) and np.array_equal(values[0], codes[0, keep])


@settings(max_examples=300, deadline=None)
@given(edits=st.lists(st.tuples(st.integers(0, 599), st.integers(0, 3), st.binary(max_size=4)), max_size=6),
       step=st.integers(1, 80), inputs=st.sampled_from([[0], [0, 1, 2], list(range(6))]))
def test_any_bytes_changed_added_or_lost_never_raise_and_cost_a_few_frames_each(edits, step, inputs):
    """Bytes overwritten, inserted or removed anywhere, read in any split: nothing raises, indices only
    increase, the reader holds a bounded number of bytes, and each edit costs a few frames, not the rest."""
    data, codes = frames_of(120, inputs)
    size = bitalino.frame_size(len(inputs))
    edited = bytearray(data)
    for at, removed, added in sorted(edits, reverse=True):
        edited[at % (len(data) + 1):at % (len(data) + 1) + removed] = added
    counters: dict[str, int] = {}
    reader = BitalinoReader(counters, inputs=inputs)
    packets = []
    for i in range(0, len(edited), step):
        packets += reader.feed(bytes(edited[i:i + step]))
        assert len(reader._buffer) < LOCK * size
    index = np.concatenate([np.arange(p.seq, p.seq + p.n) for p in packets] or [np.zeros(0, int)])
    assert np.all(np.diff(index) > 0) and counters["frames"] == index.size
    assert index.size >= 120 - 8 * len(edits) - 2 * LOCK
    if edited == data:
        values = np.concatenate([p.samples for p in packets], axis=1)
        assert np.array_equal(index, np.arange(120)) and np.array_equal(values, codes)


# ---------------------------------------------------------------- the simulated board on a pty
def board(seconds: float, faults: FaultConfig | None = None, speed: float | None = None, rate: int = 100):
    model = DeviceModel(first_seconds(seconds))
    return BitalinoDevice(model, Faults(faults or FaultConfig()), speed), rate


def check(chunks, device: BitalinoDevice, rate: int) -> np.ndarray:
    return commanded.check(chunks, device, lambda a, b: device.codes(rate, [0], a, b))


def test_board_unpaced_with_lost_and_corrupted_frames_matches_its_drop_log():
    device, rate = board(30, FaultConfig(loss=0.03, corrupt=0.03, seed=5))
    with device:
        stream, tap, chunks = asyncio.run(replay(device, 60, reader=partial(BitalinoReader, fs=rate, inputs=[0])))
    lost = check(chunks, device, rate)
    log = device.log.counters
    assert log["dropped_lost"] > 0 and log["dropped_corrupted"] > 0
    assert lost.sum() > 100
    # a frame failing at known boundaries is counted; one right after it is dropped with the bytes
    # searched for boundaries again
    counted, searched = tap.counters["crc_errors"], tap.counters["resyncs"]
    assert log["dropped_corrupted"] - 2 * searched <= counted <= log["dropped_corrupted"] and searched <= 5
    assert tap.info.device == "BITalino_v5.2" and tap.info.channel_names == ("A1",)
    assert device.commands[:3] == [bitalino.VERSION, bitalino.rate_command(rate), bitalino.start_command([0])]


def test_a_boards_recorded_bytes_replay_as_they_were_read(tmp_path):
    device, rate = board(10, FaultConfig(loss=0.03, corrupt=0.03, seed=2))
    log = tmp_path / "board.bin"
    with device:
        _, _, live = asyncio.run(replay(device, 60, reader=partial(BitalinoReader, fs=rate, inputs=[0]), record=log))
    source = open_source(f"file://{log}?format=bitalino&fs={rate}&channels=A1")

    async def main():
        return [chunk async for chunk in SampleStream(source)]

    again = asyncio.run(asyncio.wait_for(main(), 60))
    for part in ("samples", "lost_mask"):
        assert np.array_equal(np.concatenate([getattr(c, part) for c in live], axis=-1),
                              np.concatenate([getattr(c, part) for c in again], axis=-1))
    assert source.counters["crc_errors"] > 0 and source.info.channel_names == ("A1",)


def test_board_in_real_time_through_a_stall_longer_than_its_counter():
    """100 Hz for 6 s; the link stalls for 2.5 s (250 frames: 15 turns of the counter and 10) and the
    board drops what it could not send: every one of them is counted lost, in place. (The host clock
    tells the turns while reads jitter by less than 16 periods: 160 ms here, so a busy machine passes.)"""
    device, rate = board(6, FaultConfig(disconnect_after=2.0, disconnect_for=2.5), speed=1.0, rate=100)
    with device:
        stream, tap, chunks = asyncio.run(replay(device, 60, reader=partial(BitalinoReader, fs=rate, inputs=[0])))
    lost = check(chunks, device, rate)
    assert lost.sum() == device.log.counters["dropped_disconnected"] == 250


def test_stopped_on_close_started_again_on_reopen_and_a_board_left_acquiring_is_stopped_first():
    device, rate = board(60, speed=1.0)
    with device:
        device.start()
        reader = BitalinoReader({}, fs=rate, inputs=[0])
        # the Bluetooth link drops after 50 frames: the board goes idle
        port, before, after = commanded.dropped_and_started_again(device, reader)
        # a host that goes away without stopping the board leaves it acquiring for the next:
        # the next start stops it first
        reader.start(port)
        commanded.take(port, reader, 150)
        BitalinoReader.stop(port)
        assert device.idle.wait(5), "the board did not stop"
        commands = list(device.commands)
        port.close()
    start = [bitalino.VERSION, bitalino.rate_command(rate), bitalino.start_command([0])]
    assert commands == start + start + [bitalino.STOP, *start, bitalino.STOP]
    assert len(device.acquisitions) == 3
    first = np.concatenate([np.arange(p.seq, p.seq + p.n) for p in before])
    second = np.concatenate([np.arange(p.seq, p.seq + p.n) for p in after])
    assert second[0] > first[-1] + 1  # the time away is a gap, not a restart at 0
    # its size comes from the host clock: within a quarter second of what the board skipped
    skipped = [b - a for a, b, why in device.log.dropped if why == "idle"][0]
    assert abs((second[0] - first[-1] - 1) - skipped) <= rate / 4


def test_a_link_that_drops_is_opened_again_and_the_board_started_again(tmp_path):
    """The board's port hangs up after 50 frames and a board answers at its name again: the source
    reopens it, starts it (version, rate, start) and goes on, the time away a gap of lost samples."""
    chunks, counters, second = commanded.across_a_lost_link(
        tmp_path, lambda: board(60, speed=1.0)[0], partial(BitalinoReader, fs=100, inputs=[0]))
    assert counters["reconnects"] == 1 and counters["gaps"] == 1 and counters["lost_samples"] >= 1
    assert second.commands[:3] == [bitalino.VERSION, bitalino.rate_command(100), bitalino.start_command([0])]
    index = np.concatenate([np.arange(c.start, c.start + len(c)) for c in chunks])
    assert np.array_equal(index, np.arange(index.size))  # every index once, in order: nothing bridged


def test_a_source_closed_mid_stream_stops_the_board():
    device, rate = board(60, speed=1.0)
    with device:
        device.start()
        commanded.close_mid_stream(device, partial(BitalinoReader, fs=rate, inputs=[0]))
        assert device.commands[-1] == bitalino.STOP and len(device.acquisitions) == 1


def test_sim_url_replays_through_a_bitalino():
    chunks, counters, source = commanded.sim_chunks(
        f"sim://{BUNDLED}?channels=PLETH&transport=bitalino&fs=100&speed=max&duration=3&loss=0.02")
    assert counters["samples"] + counters["lost_samples"] == 300 and counters["lost_samples"] > 0
    check(chunks, source.device, 100)


def test_a_port_where_no_bitalino_answers_is_one_line():
    assert commanded.no_answer(BitalinoReader({})).startswith("no BITalino answered on PORT: is it on, paired")


@pytest.mark.parametrize("query, message", [
    ("format=bitalino&fs=250", "a BITalino samples at 1, 10, 100, 1000 Hz, not 250"),
    ("format=bitalino&channels=A7", "channels are a BITalino's analog inputs A1, A2, A3, A4, A5, A6, got 'A7'"),
    ("format=bitalino&time_unit=ms", "time_unit goes with format=text"),
    ("channels=A1", "channels go with format=text .fs and channels also with format=bitalino"),
])
def test_bad_bitalino_urls_are_one_line(query, message):
    with pytest.raises((SourceUrlError, SourceError), match=message):
        open_source(f"serial:///dev/rfcomm0?{query}")


@pytest.mark.parametrize("query, message", [
    ("format=bitalino&fs=250", "a BITalino samples at 1, 10, 100, 1000 Hz, not 250"),
    ("format=bitalino&channels=A7", "channels are a BITalino's analog inputs A1, A2, A3, A4, A5, A6, got 'A7'"),
    ("format=bitalino&service=hr", r"unknown parameter\(s\) service"),
    ("format=shimmer", "format over BLE must be bitalino .a BITalino .r.evolution BLE., got 'shimmer'"),
    ("fs=100", r"unknown parameter\(s\) fs"),
])
def test_bad_bitalino_ble_urls_are_one_line(query, message):
    with pytest.raises((SourceUrlError, SourceError), match=message):
        open_source(f"ble://name=BITalino*?{query}")


def test_url_channels_and_rate():
    reader = open_source("serial:///dev/rfcomm0?format=bitalino&fs=100&channels=a3,A1")._reader
    assert (reader.fs, reader.inputs, reader.size) == (100, [0, 2], 4)
    source = open_source("ble://name=BITalino*?format=bitalino&fs=10&channels=A2")
    assert (source.name, source._reader.fs, source._reader.inputs) == ("BITalino*", 10, [1])
    reader = open_source("serial:///dev/rfcomm0?format=bitalino")._reader
    assert (reader.fs, reader.inputs, reader.size) == (1000, list(range(6)), 8)


# ---------------------------------------------------------------- a BITalino (r)evolution BLE
def over_ble(device: BitalinoDevice, rate: int, inputs: list[int], mtu: int, body):
    """`await body(module, source)` with `device` behind its BLE module on a link this process's bumble host
    shares, and a BitalinoBleSource reading it at `rate` on `inputs`."""
    async def main():
        link = LocalLink()
        module = BitalinoBle(device, link, mtu=mtu)
        await module.start()
        set_default_adapter(link)
        try:
            source = BitalinoBleSource(name=module.name, backend=BumbleBackend,
                                       reader=partial(BitalinoReader, fs=rate, inputs=inputs))
            return await body(module, source)
        finally:
            set_default_adapter(None)
            await module.stop()

    return asyncio.run(main())


@pytest.mark.parametrize("mtu", [23, 247])
def test_ble_board_unpaced_with_lost_and_corrupted_frames_matches_its_drop_log(mtu):
    """Frames of 6 bytes (three inputs) in notifications of 20 bytes (MTU 23) or more: frames cut anywhere,
    every sample delivered or lost where the board's drop log says."""
    device, rate = board(20, FaultConfig(loss=0.03, corrupt=0.03, seed=7))

    async def body(module, source):
        finished = asyncio.ensure_future(asyncio.to_thread(device.wait))
        _, tap, chunks = await read_all(source, [finished], lambda: module.notifications,
                                        lambda: source.counters["notifications"], 60, "every notification sent")
        return tap, chunks

    tap, chunks = over_ble(device, rate, [0, 1, 2], mtu, body)
    lost = commanded.check(chunks, device, lambda a, b: device.codes(rate, [0, 1, 2], a, b))
    assert device.log.counters["dropped_lost"] > 0 and device.log.counters["dropped_corrupted"] > 0
    assert 0 < lost.sum() < 0.2 * lost.size
    assert tap.info.device == "BITalino_v5.2" and tap.info.channel_names == ("A1", "A2", "A3")
    assert device.commands[:3] == [bitalino.VERSION, bitalino.rate_command(rate), bitalino.start_command([0, 1, 2])]
    if mtu == 23:
        assert tap.counters["notifications"] >= tap.counters["bytes"] / 20


def test_ble_board_is_stopped_once_when_the_source_closes():
    device, rate = board(60, speed=1.0)

    async def body(module, source):
        async for _ in source:
            if source.counters["frames"] >= 30:
                await source.close()
        return await asyncio.to_thread(device.idle.wait, 5)

    assert over_ble(device, rate, [0], 23, body), "the board did not stop"
    assert device.commands == [bitalino.VERSION, bitalino.rate_command(rate), bitalino.start_command([0]),
                               bitalino.STOP]


def test_a_ble_link_that_drops_is_connected_again_and_the_board_started_again():
    """The link drops after 50 frames (the board goes idle); the source connects again and starts the board
    again (version, rate, start), the time away a gap of lost samples."""
    device, rate = board(60, speed=1.0)

    async def body(module, source):
        stream, chunks, dropped = SampleStream(source), [], False
        async for chunk in stream:
            chunks.append(chunk)
            if not dropped and source.counters["frames"] >= 50:
                dropped = True
                await module.drop_link()
            if source.counters["frames"] >= 150:
                await source.close()
        assert await asyncio.to_thread(device.idle.wait, 5), "the board did not stop"
        return chunks, stream.counters

    chunks, counters = over_ble(device, rate, [0], 23, body)
    assert counters["reconnects"] == 1 and counters["gaps"] == 1 and counters["lost_samples"] >= 1
    start = [bitalino.VERSION, bitalino.rate_command(rate), bitalino.start_command([0])]
    assert device.commands == start + start + [bitalino.STOP] and len(device.acquisitions) == 2
    index = np.concatenate([np.arange(c.start, c.start + len(c)) for c in chunks])
    assert np.array_equal(index, np.arange(index[0], index[-1] + 1))  # every index once, in order: nothing bridged


def test_something_else_answering_over_ble_is_refused_in_one_line(monkeypatch):
    """A device on the BITalino's service whose version answer is no BITalino's: one line, no retries."""
    monkeypatch.setattr(bitalino_device, "VERSION", b"Not a board 1.0\n")
    device, rate = board(10, speed=1.0)

    async def body(module, source):
        with pytest.raises(DeviceRefused, match=r"no BITalino answered on BLE name 'himae-sim' .it sent b'Not a"):
            async for _ in source:
                pass
        return source.counters["connects"], source.counters["connect_failures"]

    assert over_ble(device, rate, [0], 23, body) == (0, 0)


# ---------------------------------------------------------------- `himae sim` and `himae run`
def test_run_on_a_bitalino_in_another_process(tmp_path, himae):
    """`himae sim --device bitalino` replays the bundled record's three channels as A1-A3; `himae run`
    reads its PPG on A3 at 100 Hz: the windows of the framed replay of the same seconds, nothing
    lost, embeddings and heart rate as close as 10-bit codes allow."""
    said, got, want, summary = commanded.run_beside_framed(himae, tmp_path, ["--device", "bitalino", "--fs", "100"],
                                                           ["--channels", "A3"])
    assert said["inputs"] == "A1=II, A2=V, A3=PLETH" and ", crc errors 0, " in summary
    assert said["source"].endswith("?format=bitalino&fs=100&channels=A1,A2,A3")
    for g, w in zip(got, want):
        assert g["predictions"]["heart_rate"] == pytest.approx(w["predictions"]["heart_rate"], abs=0.1)
        for a, b in zip(g["embeddings"], w["embeddings"]):
            assert np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b) > 0.99


def test_run_on_a_bitalino_ble_in_another_process(tmp_path, himae):
    """`himae sim --device bitalino --transport ble`: the board behind its BLE module on a virtual radio
    served over HCI; `himae run` on the URL it announces gets the windows the serial board gives."""
    said, got, want, summary = commanded.run_beside_framed(
        himae, tmp_path, ["--device", "bitalino", "--fs", "100", "--transport", "ble"], ["--channels", "A3"])
    assert said["source"].startswith("ble://name=himae-sim?format=bitalino&fs=100&channels=A1,A2,A3&hci=")
    assert ", crc errors 0, " in summary
    for g, w in zip(got, want):
        assert g["predictions"]["heart_rate"] == pytest.approx(w["predictions"]["heart_rate"], abs=0.1)


def test_pluxs_own_api_reads_the_simulated_board():
    """PLUX's Python API (GPL; not a dependency: run where it is installed) connects to the simulated
    board's port as to a real one: version, rate, start, frames whose CRCs it checks, stop."""
    api = pytest.importorskip("bitalino")
    device, rate = board(10, rate=1000)
    with device:
        device.start()
        plux = api.BITalino(device.path, timeout=5)
        assert plux.isBitalino2 and plux.isBitalino52
        plux.start(rate, [0, 1, 2])
        got = plux.read(500)
        plux.stop()
        plux.close()
    assert np.array_equal(got[:, 0], np.arange(500) % 16)
    assert np.array_equal(got[:, 5:].T, device.codes(rate, [0, 1, 2], 0, 500))
