"""Sources end to end: serial over a real pseudo-terminal and a TCP socket,
packet logs, BLE notifications through SampleStream, and source URLs."""

import asyncio
import contextlib
import errno
import os
import socket
import threading
import time
import tty

import numpy as np
import pytest
import serial

from himae_stream.framing import encode_frame
from himae_stream.protocol import (
    SEQ_MODULUS,
    NotificationDecoder,
    NotificationPacker,
    Packet,
    SampleFormat,
    StreamInfo,
    encode_info,
    encode_packet,
)
from himae_stream.samplestream import SampleStream, StreamError
from himae_stream.sources import FileSource, SerialSource
from himae_stream.urls import SourceUrlError, open_source, parse_source_url
from unplug import read_across_unplug
from waiting import wait_event

FS = 100.0
INFO = StreamInfo(FS, ("ppg", "acc"), (0.01, 0.001), SampleFormat.INT24, ("au", "g"), 0, "test")


def packets(count, n, start=0, channels=2, seed=0):
    rng = np.random.default_rng(seed)
    return [
        Packet((start + k * n) % SEQ_MODULUS, round((start + k * n) * 1e6 / FS), FS,
               rng.integers(-(1 << 23), 1 << 23, (channels, n)).astype(np.int32), INFO.scale, INFO.fmt)
        for k in range(count)
    ]


@pytest.fixture
def pty_pair():
    master, slave = os.openpty()
    tty.setraw(slave)
    yield master, os.ttyname(slave)
    for fd in (master, slave):
        with contextlib.suppress(OSError):
            os.close(fd)


def write_frames(fd, frames, period_s, written_at=None):
    """Write `frames` from a thread, one every `period_s` on a fixed schedule (a device's clock,
    which does not slip when a write is late); `written_at` gets each write's start time."""

    def run():
        start = time.monotonic()
        for k, frame in enumerate(frames):
            if written_at is not None:
                written_at.append(time.monotonic())
            os.write(fd, frame)
            if period_s:
                time.sleep(max(0.0, start + (k + 1) * period_s - time.monotonic()))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


async def read_samples(stream, total, timeout_s):
    """Chunks until `total` samples (delivered or lost) have come out."""
    chunks, seen = [], 0
    async with asyncio.timeout(timeout_s), contextlib.aclosing(aiter(stream)) as it:
        async for chunk in it:
            chunks.append(chunk)
            seen += len(chunk)
            if seen >= total:
                break
    return chunks


def check_delivery(chunks, sent, lost_index=()):
    samples = np.concatenate([c.samples for c in chunks], axis=1)
    mask = np.concatenate([c.lost_mask for c in chunks])
    expected = np.concatenate(
        [np.zeros_like(p.physical()) if k in lost_index else p.physical() for k, p in enumerate(sent)], axis=1
    )
    np.testing.assert_array_equal(samples, expected)
    assert int(mask.sum()) == sum(sent[k].n for k in lost_index)
    return np.concatenate([c.timestamps for c in chunks])


def test_serial_pty_real_time(pty_pair):
    """1x: 10-sample packets every 0.1 s for 2 s; host timestamps follow the wall clock."""
    master, path = pty_pair
    sent = packets(20, 10)
    frames = [b"\x00" + encode_frame(encode_info(INFO))] + [encode_frame(encode_packet(p)) for p in sent]
    written_at = []

    async def main():
        source = SerialSource(path, idle_timeout_s=2.0)
        stream = SampleStream(source)
        await source.open()
        write_frames(master, frames, 0.1, written_at)
        chunks = await read_samples(stream, 200, 10)
        return stream, source, chunks

    stream, source, chunks = asyncio.run(main())
    times = check_delivery(chunks, sent)
    # read as written, not before: each chunk arrived after the frame of its last sample was
    # written (frame k + 1 carries samples 10k ... 10k + 9), and so the last after 1.9 s of writing
    for chunk in chunks:
        assert chunk.arrival >= written_at[(chunk.start + len(chunk) - 1) // 10 + 1]
    assert written_at[-1] - written_at[0] >= 1.9
    assert source.info == INFO
    # device time maps to host time: 2 s of samples span ~2 s of host clock
    assert abs((times[-1] - times[0]) - 1.99) < 0.05
    assert np.all(np.diff(times) > 0)
    c = stream.counters
    assert (c["frames"], c["lost_samples"], c["crc_errors"], c["restarts"]) == (21, 0, 0, 0)


def test_serial_pty_as_fast_as_possible_with_garbage_and_loss(pty_pair):
    master, path = pty_pair
    sent = packets(3000, 32, start=SEQ_MODULUS - 5000, seed=1)
    lost = {10, 11, 1500}
    frames = [b"\x00"]
    for k, p in enumerate(sent):
        if k % 250 == 0:
            frames.append(b"\x17\xff noise \x00")
        if k not in lost:
            frames.append(encode_frame(encode_packet(p)))

    async def main():
        source = SerialSource(path, idle_timeout_s=2.0)
        stream = SampleStream(source)
        await source.open()
        writer = write_frames(master, frames, 0)
        started = time.monotonic()
        chunks = await read_samples(stream, 3000 * 32, 60)
        writer.join()
        return stream, chunks, time.monotonic() - started

    stream, chunks, elapsed = asyncio.run(main())
    check_delivery(chunks, sent, lost)
    c = stream.counters
    assert c["lost_samples"] == 3 * 32 and c["gaps"] == 2
    assert c["frames"] == 3000 - 3
    assert c["decode_errors"] + c["crc_errors"] == c["resyncs"] == 12
    print(f"pty: {3000 * 32 * 2 / elapsed:,.0f} samples/s end to end")


def test_serial_silence_is_an_error_not_a_hang(pty_pair):
    _, path = pty_pair

    async def main():
        return await read_samples(SampleStream(SerialSource(path, idle_timeout_s=0.3)), 1, 5)

    with pytest.raises(StreamError, match="no data"):
        asyncio.run(main())


def test_serial_open_failure_is_clear():
    """The system's reason once, not pyserial's nesting of it, and what to do for the usual ones
    (permission denied is what a Linux user outside the dialout group meets first)."""
    from himae_stream.sources.serial import open_failure

    async def main():
        return [c async for c in SampleStream(SerialSource("/dev/does-not-exist"))]

    with pytest.raises(StreamError) as raised:
        asyncio.run(main())
    assert str(raised.value) == ("source failed: cannot open serial port /dev/does-not-exist: No such file or "
                                 "directory; is the device plugged in? (`ls /dev/tty*` lists the ports)")
    denied = serial.SerialException(errno.EACCES, "could not open port /dev/ttyACM0: [Errno 13] Permission denied")
    assert open_failure("/dev/ttyACM0", denied).startswith(
        "cannot open serial port /dev/ttyACM0: Permission denied; on Linux, join the group that owns the port")
    assert open_failure("loop://", ValueError("invalid baudrate")) == "cannot open serial port loop://: invalid baudrate"
    missing = serial.SerialException(errno.ENOENT, "could not open port /dev/rfcomm0")
    assert open_failure("/dev/rfcomm0", missing).endswith("once bound: `sudo rfcomm bind 0 AA:BB:CC:DD:EE:FF`")


def test_serial_over_socket_url():
    """`socket://` through serial_for_url, with the blocking iterator."""
    sent = packets(50, 20, seed=2)
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    opened, read = threading.Event(), threading.Event()

    def serve():
        conn, _ = server.accept()
        with conn:
            wait_event(opened, 10, "the reader to open the socket")  # pyserial discards what arrives meanwhile
            conn.sendall(b"".join(encode_frame(encode_packet(p)) for p in sent))
            wait_event(read, 30, "the reader to read it all")  # the device stays connected till then

    server_thread = threading.Thread(target=serve, daemon=True)
    server_thread.start()
    source = open_source(f"serial://socket://127.0.0.1:{port}?idle_timeout=2")
    asyncio.run(source.open())
    opened.set()
    stream = SampleStream(source)
    chunks, seen = [], 0
    for chunk in stream:
        chunks.append(chunk)
        seen += len(chunk)
        if seen >= 1000:
            break
    read.set()
    server_thread.join(10)
    server.close()
    check_delivery(chunks, sent)


def test_recorded_serial_bytes_replay_from_file(pty_pair, tmp_path):
    master, path = pty_pair
    sent = packets(30, 8, seed=3)
    capture = tmp_path / "capture.bin"

    async def record():
        source = SerialSource(path, idle_timeout_s=2.0, record=capture)
        await source.open()
        write_frames(master, [b"\x00"] + [encode_frame(encode_packet(p)) for p in sent], 0)
        return await read_samples(SampleStream(source), 240, 10)

    live = asyncio.run(record())

    async def replay():
        return [c async for c in SampleStream(open_source(f"file://{capture}"))]

    replayed = asyncio.run(replay())
    check_delivery(replayed, sent)
    np.testing.assert_array_equal(
        np.concatenate([c.samples for c in live], 1), np.concatenate([c.samples for c in replayed], 1)
    )
    # a log has no host clock: timestamps are device seconds
    np.testing.assert_allclose(np.concatenate([c.timestamps for c in replayed]), np.arange(240) / FS)


def test_missing_log_file_is_clear(tmp_path):
    async def main():
        return [c async for c in SampleStream(FileSource(tmp_path / "nope.bin"))]

    with pytest.raises(StreamError, match="cannot read packet log"):
        asyncio.run(main())


# ------------------------------------------------------------------- BLE
@pytest.mark.parametrize("payload", [20, 244])
def test_ble_notifications_with_loss_and_reconnect_are_exact(payload):
    """Notifications lost on air and across a reconnect become exact gaps."""
    info = StreamInfo(FS, ("ppg",), (0.5,), SampleFormat.INT16)
    rng = np.random.default_rng(4)
    sent = [Packet(k * 25, k * 250_000, FS, rng.integers(-999, 999, (1, 25)).astype(np.int32), (0.5,))
            for k in range(80)]
    packer = NotificationPacker(info, payload, sync_interval=5)
    decoder = NotificationDecoder(info)
    stream = SampleStream()
    truth = np.concatenate([p.physical() for p in sent], axis=1)[0]
    lost = np.zeros(truth.size, bool)
    chunks, index = [], 0
    for k, packet in enumerate(sent):
        if k == 40:  # disconnect: the device keeps sampling, both sides reset
            packer.reset()
            decoder.reset()
        for note in packer.pack(packet):
            n = (len(note) - (14 if note[1] & 0x80 else 2)) // 2
            dropped = 30 <= k < 40 or (k < 79 and rng.random() < 0.1)
            if dropped:
                lost[index : index + n] = True
            elif (rebuilt := decoder.feed(note)) is not None:
                chunks += stream.push(rebuilt)
            index += n
    chunks += stream.flush()
    mask = np.concatenate([c.lost_mask for c in chunks])
    samples = np.concatenate([c.samples for c in chunks], axis=1)[0]
    # a notification that arrived before the first sync after the reconnect is lost too
    lost[: mask.size] |= mask
    np.testing.assert_array_equal(mask, lost[: mask.size])
    np.testing.assert_array_equal(samples[~mask], truth[: mask.size][~mask])
    assert stream.counters["lost_samples"] == int(mask.sum())
    assert decoder.counters["malformed"] == 0


# ------------------------------------------------------------------- URLs
def test_source_urls():
    u = parse_source_url("serial:///dev/ttyUSB0?baud=115200")
    assert (u.scheme, u.path, u.params) == ("serial", "/dev/ttyUSB0", {"baud": "115200"})
    assert parse_source_url("ble://AA:BB:CC:DD:EE:FF").path == "AA:BB:CC:DD:EE:FF"
    assert parse_source_url("file://capture.bin").path == "capture.bin"
    sim = parse_source_url("sim://data/rec.mat?speed=10&loss=0.02&transport=ble")
    assert (sim.scheme, sim.path) == ("sim", "data/rec.mat")
    assert sim.number("speed", 1.0) == 10.0 and sim.get("transport") == "ble"
    ble = open_source("ble://name=Polar*?service=hr")
    assert type(ble).__name__ == "HeartRateSource" and ble.name == "Polar*" and ble.address is None
    assert open_source("serial://COM3?baud=9600").baudrate == 9600
    assert open_source("serial://COM3").reconnect_timeout_s == 10.0
    assert open_source("serial://COM3?reconnect=2.5").reconnect_timeout_s == 2.5
    assert open_source("serial://COM3?reconnect=0").reconnect_timeout_s is None
    for bad, message in [
        ("/dev/ttyUSB0", "names a device, not a recording: read it as serial:///dev/ttyUSB0"),
        ("", "the source is empty"),
        ("serial:/dev/x", "not a URL"),
        ("ftp://x", "unknown source scheme"),
        ("serial://", "names no"),
        ("jsonl://-", "unknown source scheme"),
        ("serial:///dev/x?bud=1", "unknown parameter"),
        ("serial:///dev/x?baud=fast", "parameter baud: expected an integer >= 1, got 'fast'"),
    ]:
        with pytest.raises(SourceUrlError, match=message):
            open_source(bad)


def test_ble_backoff_is_exponential_capped_and_jittered():
    from himae_stream.sources.ble import BleSource

    source = BleSource(name="x", backoff_s=0.5, backoff_max_s=4.0, seed=1)
    delays = [[source.backoff(a) for a in range(1, 7)] for _ in range(50)]
    for attempt, base in enumerate([0.5, 1.0, 2.0, 4.0, 4.0, 4.0]):
        column = [row[attempt] for row in delays]
        assert all(base / 2 <= d <= base for d in column)
        assert len(set(column)) > 40  # jittered, so reconnecting clients do not stampede


def test_ble_gives_up_after_the_reconnect_limit():
    """No device on the link: each scan times out, tries are counted, then a clear error."""
    from bumble.link import LocalLink

    from himae_stream.bumble_backend import BumbleBackend
    from himae_stream.sources import SourceError
    from himae_stream.sources.ble import BleSource

    source = BleSource(name="absent*", backend=BumbleBackend.bound(LocalLink()), scan_timeout_s=0.2,
                       max_reconnects=2, backoff_s=0.01)

    async def main():
        async for _ in source:
            pass

    with pytest.raises(SourceError, match=r"giving up after 3 tries: no BLE device matching name 'absent\*'"):
        asyncio.run(main())
    assert source.counters["connect_failures"] == 3 and source.counters["connects"] == 0


def test_ble_slow_consumer_gets_bigger_chunks_not_losses():
    """Against the simulator over bumble: a consumer that blocks the event loop
    20 ms per chunk is handed all waiting notifications at once."""

    async def main():
        stream = SampleStream(open_source(
            "sim://himae_stream/data/a103l.hea?channels=PLETH&transport=ble&speed=20&fs=100&duration=10"))
        chunks = []
        async for chunk in stream:
            chunks.append(chunk)
            time.sleep(0.02)
        return stream, chunks

    stream, chunks = asyncio.run(main())
    c = stream.counters
    assert sum(len(ch) for ch in chunks) == 1000
    assert c["lost_samples"] == 0 and c["overflow_drops"] == 0
    assert len(chunks) < c["notifications"] / 3


def test_serial_device_hanging_up_is_one_clear_error_after_its_data(pty_pair):
    """The device end of the pseudo-terminal closes mid-stream and does not come back: every sample
    sent before is delivered, then, once the reconnect time is up, the stream fails with one line
    naming the port."""
    master, path = pty_pair
    sent = packets(10, 10)

    async def main():
        source = SerialSource(path, idle_timeout_s=5.0, reconnect_timeout_s=0.3)
        stream = SampleStream(source)
        await source.open()
        for p in sent:
            os.write(master, encode_frame(encode_packet(p)))
        chunks = []
        with pytest.raises(StreamError) as failure:
            async with asyncio.timeout(5):
                async for chunk in stream:
                    chunks.append(chunk)
                    if sum(len(c) for c in chunks) == 100:
                        os.close(master)
        return chunks, str(failure.value)

    chunks, message = asyncio.run(main())
    check_delivery(chunks, sent)
    assert path in message and "failed" in message and "\n" not in message
    assert "did not come back within 0.3 s" in message


def test_serial_port_unplugged_and_plugged_back_goes_on_with_a_counted_gap(tmp_path):
    """The wearable's port vanishes mid-stream (its pseudo-terminal closes, as a USB adapter's node
    does) and comes back under the same name (a symlink, as /dev/serial/by-id/... is): the reader
    reopens it, counts one reconnect, and the stream goes on; what was sent while nobody had the
    port open is a gap, marked lost and counted."""
    link = tmp_path / "wearable"
    sent = packets(40, 10)
    source = SerialSource(str(link), idle_timeout_s=5.0, reconnect_timeout_s=5.0)

    def plugged_back(master):
        """The device back: it sends on at once at its pace, lost while nobody has the port open;
        before its last packet it sends status (INFO) frames at that pace until the reader gets data
        again, so that the last packet comes through however late the reader reopens."""
        write_frames(master, [encode_frame(encode_packet(p)) for p in sent[10:39]], 0.02).join()
        status = encode_frame(encode_info(INFO))
        deadline = time.monotonic() + 10
        while not source.counters["reconnects"]:
            assert time.monotonic() < deadline, "the reader did not reopen the port"
            os.write(master, status)
            time.sleep(0.02)
        os.write(master, encode_frame(encode_packet(sent[39])))

    before = b"".join(encode_frame(encode_packet(p)) for p in sent[:10])
    chunks, counters = read_across_unplug(source, link, before, 100, 400, plugged_back)
    mask = np.concatenate([c.lost_mask for c in chunks])
    lost = {k for k in range(len(sent)) if mask[10 * k : 10 * k + 10].all()}
    assert lost <= set(range(10, 39))  # only while it was away; the last packets came through
    check_delivery(chunks, sent, lost)
    assert counters["reconnects"] == 1
    assert counters["lost_samples"] == 10 * len(lost) and counters["gaps"] == (1 if lost else 0)


@pytest.mark.skipif(os.path.exists("/run/dbus/system_bus_socket") or "DBUS_SYSTEM_BUS_ADDRESS" in os.environ,
                    reason="this machine has a system bus, through which BlueZ may answer")
def test_ble_without_a_bluetooth_service_says_so_at_once(monkeypatch):
    """Through bleak's own backend on a machine with no BlueZ to reach (a container, a CI runner), a
    BLE source fails on its first try, saying why and how to reach a virtual controller instead."""
    from himae_stream.bumble_backend import HCI_ENV
    from himae_stream.sources.base import SourceError

    monkeypatch.delenv(HCI_ENV, raising=False)
    source = open_source("ble://name=Nothing*")

    async def first():
        async for _ in source:
            pass

    with pytest.raises(SourceError, match=r"no Bluetooth service to ask .*\?hci="):
        asyncio.run(asyncio.wait_for(first(), 60))
    assert source.counters["connect_failures"] == 0
