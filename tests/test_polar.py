"""Polar PMD: the codec against the Polar SDK's documented frames and an independent decoder,
the simulated Verity Sense / H10 on bumble read through bleak and `PolarSource`, and `himae run`."""

import asyncio
import dataclasses
import json

import numpy as np
import pytest
from bleak import BleakClient, BleakScanner
from conftest import BUNDLED, ble_sim
from hypothesis import given, settings, strategies as st

from firmware_sim.faults import FaultConfig, Faults
from firmware_sim.polar_device import PolarDevice
from himae_stream import pmd
from himae_stream.bumble_backend import BumbleBackend
from himae_stream.pmd import Command, Frame, Measurement, Op, Response, Setting, Status
from himae_stream.recordings import RecordingError, load, match_channels
from himae_stream.sources.ble import DeviceRefused
from himae_stream.sources.polar import PolarSource
from himae_stream.urls import SourceUrlError, open_source
from test_sim_ble import collect, simulate as simulate_ble
from waiting import Changes, within

PPG_MODEL = ["PPG"]


def recording(seconds, channels="PLETH"):
    rec = load(BUNDLED, channels=channels)
    return dataclasses.replace(rec, signals=rec.signals[:, : int(seconds * rec.fs)])


# ---------------------------------------------------------------- codec
#: the Polar SDK's own test frames (ios-communications PpgDataTest / PpiDataTest), with their documented values
SDK_TIMESTAMP = bytes.fromhex("0094357700000000")  # 2 000 000 000 ns
SDK_RAW_PPG = bytes.fromhex("010203 040506 ffff7f 000000 ffffff 0fefef 000080 0fefef")
SDK_COMPRESSED_PPG = bytes.fromhex(
    "2C2D00C27700D3D2FF3D88FF0A29B2F0EE3411B2ECEE7411B1E8FEB411B1E8FEB411B1E0FE3412B0DC0E7512B0D80EB512AFD41EF512"
    "AFD01E3513AECC2E7513AEC82EB513ADC43EF513ADBC3E7514ADBC3E7514ACB84EB514ACB44EF514ABB05E3515AAAC6E7515AAA86EB5"
    "15AAA46EF515A9A07E3516A99C7E7516A8988EB516A7949EF516A7909E3517A78C9E7517A688AEB517A588BEB517A580BE3518A47CCE"
    "7518A478CEB518A378DEB518A270EE3519A26CEE7519A26CEE7519A168FEB519A0600E361A9F601E361A9F5C1E761A9F581EB61A9D54"
    "3EF61A")
SDK_PPI = bytes.fromhex("808080808 0ff 000100010000".replace(" ", ""))


def test_sdk_raw_ppg_frame():
    frame = pmd.decode_frame(bytes([1]) + SDK_TIMESTAMP + bytes([0]) + SDK_RAW_PPG)
    assert frame.measurement == Measurement.PPG and frame.timestamp_ns == 2_000_000_000 and not frame.compressed
    assert frame.samples.tolist() == [[197121, 394500, 8388607, 0], [-1, -1052913, -8388608, -1052913]]


def test_sdk_compressed_ppg_frame():
    frame = pmd.decode_frame(bytes([1]) + SDK_TIMESTAMP + bytes([0x80]) + SDK_COMPRESSED_PPG)
    assert frame.compressed and frame.samples.shape == (1 + 41, 4)
    reference = [11564, 30658, -11565, -30659]
    assert frame.samples[0].tolist() == reference
    assert (frame.samples[1] - frame.samples[0]).tolist() == [178, -68, -178, 68]
    # the sensor sent 10-bit deltas where 9 bits hold them all: our encoder writes the narrower block
    ours = pmd.encode_frame(frame)
    assert ours[22] == 9 and len(ours) < 10 + len(SDK_COMPRESSED_PPG)
    assert np.array_equal(pmd.decode_frame(ours).samples, frame.samples)


def test_sdk_ppi_frame():
    frame = pmd.decode_frame(bytes([3]) + SDK_TIMESTAMP + bytes([0]) + SDK_PPI)
    assert frame.samples.tolist() == [[128, 32896, 32896, 0xFF], [0, 1, 1, 0]]


def test_sample_times_end_at_the_frame_timestamp():
    t = pmd.sample_times_ns(2_000_000_000, 4, 130.0)
    assert t[-1] == 2_000_000_000 and np.allclose(np.diff(t), 1e9 / 130, atol=1)


@st.composite
def frames(draw):
    key = draw(st.sampled_from(sorted(pmd.LAYOUTS)))
    layout = pmd.LAYOUTS[key]
    n = draw(st.integers(1, 300))
    bits = 8 * layout.width
    if key[1] & pmd.COMPRESSED:  # deltas small enough that every sample stays in range
        step = draw(st.integers(0, 1 << (bits - 4)))
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        samples = np.cumsum(rng.integers(-step, step + 1, (n, layout.channels)), axis=0)
        samples = np.clip(samples, -(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    else:
        samples = np.array(draw(st.lists(st.lists(st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1),
                                                  min_size=layout.channels, max_size=layout.channels),
                                         min_size=n, max_size=n)))
    return Frame(key[0], draw(st.integers(0, 2**64 - 1)), key[1], samples), draw(st.integers(1, 255))


@settings(max_examples=150, deadline=None)
@given(frames())
def test_frames_round_trip(case):
    frame, block = case
    back = pmd.decode_frame(pmd.encode_frame(frame, block=block))
    assert (back.measurement, back.timestamp_ns, back.frame_type) == (frame.measurement, frame.timestamp_ns,
                                                                      frame.frame_type)
    assert np.array_equal(back.samples, frame.samples)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_one_codec_error(data):
    for decode in (pmd.decode_frame, pmd.decode_command, pmd.decode_response, pmd.decode_settings):
        try:
            decode(data)
        except pmd.PmdError:
            pass


def test_control_point_round_trips():
    settings_ = {Setting.SAMPLE_RATE: (130,), Setting.RESOLUTION: (14,), Setting.FACTOR: (0.5,)}
    command = Command(Op.START, Measurement.ECG, settings_)
    assert pmd.encode_command(command)[:10] == bytes.fromhex("0200 000182 00 01010e00".replace(" ", ""))
    assert pmd.decode_command(pmd.encode_command(command)) == command
    response = Response(Op.GET_SETTINGS, Measurement.ACC, Status.SUCCESS, {Setting.SAMPLE_RATE: (25, 50, 100, 200)})
    assert pmd.decode_response(pmd.encode_response(response)) == response
    assert pmd.decode_features(pmd.encode_features([Measurement.PPG, Measurement.ACC, Measurement.PPI])) == {
        Measurement.PPG, Measurement.ACC, Measurement.PPI}


HEADER = bytes([1]) + SDK_TIMESTAMP


@pytest.mark.parametrize("data, unknown, message", [
    (HEADER[:5], False, "shorter than its 10-byte header"),
    (bytes([9]) + SDK_TIMESTAMP + bytes([0, 1, 2, 3]), True, "unknown measurement type 9"),
    (HEADER + bytes([0x06, 1, 2, 3]), True, "unknown PPG frame type 6 (raw)"),
    (HEADER + bytes([0x85, 1, 2, 3]), True, "unknown PPG frame type 5 (compressed)"),
    (HEADER + bytes([0]) + SDK_RAW_PPG[:-1], False, "not whole 4 x 3-byte samples"),
    (HEADER + bytes([0x80]) + SDK_COMPRESSED_PPG[:12] + bytes([0, 5]), False, "bad delta block (0-bit deltas"),
    (HEADER + bytes([0x80]) + SDK_COMPRESSED_PPG[:12] + bytes([8, 0]), False, "bad delta block (8-bit deltas, 0"),
    (HEADER + bytes([0x80]) + SDK_COMPRESSED_PPG[:-1], False, "delta block needs 205 bytes, has 204"),
    (HEADER + bytes([0x80]) + SDK_COMPRESSED_PPG[:13], False, "truncated delta block header"),
    (HEADER + bytes([0x80]) + SDK_COMPRESSED_PPG[:5], False, "shorter than its 12-byte reference"),
])
def test_malformed_frames_raise_one_codec_error(data, unknown, message):
    with pytest.raises(pmd.PmdError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        pmd.decode_frame(data)
    assert isinstance(info.value, pmd.UnknownFrame) == unknown


# ---------------------------------------------------------------- devices on a virtual radio
def simulate(rec, profile, body, **device_args):
    """Run `body(device)` with a Polar device (`profile`) and this process's bumble host on one LocalLink."""
    return simulate_ble(rec, body, lambda rec, link, **kw: PolarDevice(rec, profile, link, **kw), **device_args)


def test_control_point_answers_and_frames_decode_alike_with_an_independent_decoder():
    """Through bleak's own client: the features read, settings, START errors, then the raw frames the
    device sends, decoded by polar-python (an independent implementation) and by this codec."""
    pytest.importorskip("polar_python")
    from polar_python.parsers import parse_polar_data

    async def body(device):
        found = await BleakScanner.find_device_by_name(device.name, timeout=10, backend=BumbleBackend.scanner)
        responses, frames_ = asyncio.Queue(), []
        changes = Changes()

        def on_frame(_c, data):
            frames_.append(bytes(data))
            changes.changed()

        async with BleakClient(found, backend=BumbleBackend.client) as client:
            async def ask_raw(data):
                await client.write_gatt_char(pmd.PMD_CONTROL_UUID, data, response=True)
                return await within(responses.get(), 10, "a control point answer")

            async def ask(data):
                return pmd.decode_response(await ask_raw(data))

            await client.start_notify(pmd.PMD_CONTROL_UUID, lambda _c, d: responses.put_nowait(bytes(d)))
            await client.start_notify(pmd.PMD_DATA_UUID, on_frame)
            assert pmd.decode_features(await client.read_gatt_char(pmd.PMD_CONTROL_UUID)) == {
                Measurement.PPG, Measurement.ACC}
            got = await ask(pmd.encode_command(Command(Op.GET_SETTINGS, Measurement.PPG)))
            assert got.status == Status.SUCCESS and got.parameters[Setting.SAMPLE_RATE] == (55,)
            errors = [
                (Command(Op.START, Measurement.ECG, {Setting.SAMPLE_RATE: (130,)}), Status.NOT_SUPPORTED),
                (Command(Op.START, Measurement.PPG, {Setting.SAMPLE_RATE: (135,)}), Status.INVALID_SAMPLE_RATE),
                (Command(Op.START, Measurement.PPG, {Setting.SAMPLE_RATE: (55,), Setting.CHANNELS: (3,)}),
                 Status.INVALID_NUMBER_OF_CHANNELS),
                (Command(Op.STOP, Measurement.PPG), Status.ALREADY_IN_STATE),
            ]
            for command, status in errors:
                assert (await ask(pmd.encode_command(command))).status == status
            assert await ask_raw(bytes([7, 1])) == bytes([0xF0, 7, 1, Status.INVALID_OP_CODE, 0])
            assert await ask_raw(bytes([2])) == bytes([0xF0, 2, 0, Status.INVALID_LENGTH, 0])
            start = pmd.encode_command(Command(Op.START, Measurement.PPG, {Setting.SAMPLE_RATE: (55,)}))
            assert (await ask(start)).status == Status.SUCCESS
            assert (await ask(start)).status == Status.ALREADY_IN_STATE
            await changes.until(lambda: device.finished.is_set() and len(frames_) >= device.log.counters["notifications"],
                                30, lambda: f"every frame sent to arrive: {len(frames_)}")
        return frames_

    frames_ = asyncio.run(simulate(recording(12), "polar-verity", body, speed=None))
    assert len(frames_) > 10
    total = 0
    for data in frames_:
        ours = pmd.decode_frame(data)
        theirs = parse_polar_data(bytearray(data), lambda _m: 1.0)
        assert ours.frame_type == 0x80 and type(theirs).__name__ == "PPGData"
        assert theirs.timestamp - ours.timestamp_ns == pmd.EPOCH_UNIX_S * 10**9
        assert np.array_equal(ours.samples, np.array(theirs.samples)), "both decoders read the same samples"
        total += len(ours.samples)
    assert total == 12 * 55


def polar_values(device, start, stop):
    """What `PolarSource` delivers for stream indices [start, stop): the PPG mean, then each channel."""
    codes = device.model.codes(start, stop).astype(np.float64)
    return np.vstack([codes[:3].mean(axis=0), codes]).astype(np.float32)


def check_polar_delivery(chunks, device):
    """Every sample the device produced arrives once, in order, with its value, or is lost exactly
    where the device's log says it dropped it; returns the lost mask (by device index)."""
    dropped = device.log.indices()
    produced = np.arange(device.produced)
    first = int(np.setdiff1d(produced, dropped)[0])  # the source counts from the first sample it gets
    index = np.concatenate([np.arange(c.start, c.start + len(c)) for c in chunks]) + first
    values = np.concatenate([c.samples for c in chunks], axis=1)
    lost = np.concatenate([c.lost_mask for c in chunks])
    last = int(index[-1]) + 1
    assert np.array_equal(index, np.arange(first, last)), "every index once, in order"
    assert np.array_equal(np.flatnonzero(lost) + first, dropped[(dropped >= first) & (dropped < last)])
    assert np.array_equal(values[:, ~lost], polar_values(device, first, last)[:, ~lost])
    assert np.all(np.isin(np.arange(last, device.produced), dropped)), "what never arrived was dropped"
    return lost


def run_polar(rec, profile, stream="ppg", channels=None, **device_args):
    """A replay read by `PolarSource` into a SampleStream; returns (device, source, stream counters, chunks)."""
    async def body(device):
        source = PolarSource(name=device.name, backend=BumbleBackend, queue_size=1 << 16, backoff_s=0.05,
                             stream=stream, channels=channels)
        stream_, chunks = await collect(source, lambda: device.log.counters.get("notifications", 0), device.finished)
        return device, source, stream_.counters, chunks

    return asyncio.run(simulate(rec, profile, body, **device_args))


@pytest.mark.parametrize("speed, seconds, loss", [(None, 60, 0.05), (1.0, 3, 0.0)])
def test_verity_ppg_every_sample_delivered_or_logged(speed, seconds, loss):
    device, source, counters, chunks = run_polar(recording(seconds), "polar-verity", speed=speed,
                                                 faults=Faults(FaultConfig(loss=loss, seed=4)))
    lost = check_polar_delivery(chunks, device)
    assert source.info.channel_names == ("PPG", "PPG0", "PPG1", "PPG2", "AMBIENT") and source.info.fs == 55
    assert counters["malformed"] == counters["unknown_frames"] == counters["clock_resets"] == 0
    assert counters["lost_samples"] == lost.sum()
    assert (lost.sum() > 0) == (loss > 0) and set(device.log.counters) >= {"control_start", "control_get_settings"}
    if speed is None:  # every sample produced, a 247-byte MTU's worth of compressed samples per frame
        assert device.produced == seconds * 55 and 20 <= device.produced / device.log.counters["notifications"] <= 60


def test_channels_keep_the_ones_asked_in_their_order():
    device, source, counters, chunks = run_polar(recording(5), "polar-verity", channels=["PPG1", "PPG"], speed=None)
    assert source.info.channel_names == ("PPG1", "PPG") and counters["lost_samples"] == 0
    values = np.concatenate([c.samples for c in chunks], axis=1)
    assert np.array_equal(values, polar_values(device, 0, device.produced)[[2, 0]])
    with pytest.raises(SourceUrlError, match=r"ppg has no channel ECG \(it has PPG, PPG0, PPG1, PPG2, AMBIENT\)$"):
        open_source("polar://himae-sim?channels=PPG1,ECG")


def test_h10_ecg_raw_frames_at_130_hz():
    rec = recording(20, channels="II")
    device, source, counters, chunks = run_polar(rec, "polar-h10", stream="ecg", speed=None)
    assert source.info.channel_names == ("ECG",) and source.info.fs == 130 and source.info.units == ("uV",)
    index = np.concatenate([np.arange(c.start, c.start + len(c)) for c in chunks])
    values = np.concatenate([c.samples for c in chunks], axis=1)
    assert np.array_equal(index, np.arange(20 * 130)) and counters["lost_samples"] == 0
    assert np.array_equal(values, device.model.codes(0, 20 * 130).astype(np.float32))
    per_frame = (247 - 3 - 10) // 3  # raw 24-bit samples behind the 10-byte header
    assert device.log.counters["notifications"] == -(-20 * 130 // per_frame)


def test_reconnect_after_a_disconnect_restarts_the_measurement():
    device, source, counters, chunks = run_polar(
        recording(20), "polar-verity", speed=10.0, faults=Faults(FaultConfig(disconnect_after=6.0, disconnect_for=5.0)))
    lost = check_polar_delivery(chunks, device)
    assert counters["reconnects"] == 1 and counters["disconnects"] == 1 and counters["gaps"] == 1
    assert device.log.counters["control_start"] == 2  # started again on the new connection
    assert counters["lost_samples"] == lost.sum() >= 5 * 55
    assert {why for _, _, why in device.log.dropped} <= {"disconnected", "not_connected", "not_subscribed", "stopped"}


def test_a_measurement_the_device_lacks_is_refused_in_one_line():
    async def body(device):
        source = PolarSource(name=device.name, backend=BumbleBackend, stream="ppg")
        with pytest.raises(DeviceRefused, match=r"streams ECG, ACC, not PPG") as info:
            await within(anext(aiter(source)), 30, "the source to refuse")
        assert source.counters["connect_failures"] == 0  # refused at once, never retried
        return str(info.value)

    message = asyncio.run(simulate(recording(5, channels="II"), "polar-h10", body, speed=None))
    assert "\n" not in message


def test_an_ecg_only_device_is_not_read_as_ppg():
    with pytest.raises(RecordingError, match=r"found 0 among ECG; name the channel"):
        match_channels(["ECG"], None, 1, PPG_MODEL)
    assert match_channels(["ch0"], None, 1, PPG_MODEL) == [0]
    assert match_channels(["PPG", "PPG0", "PPG1", "PPG2", "AMBIENT"], None, 1, PPG_MODEL) == [0]
    assert match_channels(["PPG", "PPG0", "PPG1", "PPG2", "AMBIENT"], "PPG1", 1, PPG_MODEL) == [2]


# ---------------------------------------------------------------- himae run
@pytest.fixture
def polar_sim(request):
    """`himae sim --device DEVICE` in its own process at full speed; yields its HCI spec and source URL."""
    device, channels = request.param
    with ble_sim("--device", device, "--recording", str(BUNDLED), "--channels", channels, "--duration", "25",
                 "--speed", "max", "--linger", "60") as sim:
        yield sim


@pytest.fixture(scope="module")
def model_file(random_model_file):
    return random_model_file("himae-100")


def read_records(path):
    return [json.loads(line) for line in open(path)]


@pytest.mark.parametrize("polar_sim", [("polar-verity", "PLETH")], indirect=True)
def test_run_from_a_verity_equals_replaying_the_recording(tmp_path, model_file, polar_sim, himae):
    """The PPG mean of a simulated Verity Sense gives the records that replaying the same recording
    at the same 55 Hz gives, to the noise and gains the three channels add."""
    polar, replay = tmp_path / "polar.jsonl", tmp_path / "replay.jsonl"
    assert polar_sim.source == f"polar://himae-sim?stream=ppg&hci={polar_sim.hci}"  # as the simulator prints it
    result = himae("run", "--model", model_file, "--source", polar_sim.source, "--duration", "20s",
                   "--sink", f"jsonl://{polar}")
    assert result.returncode == 0, result.stderr
    result = himae("run", "--model", model_file, "--source", f"sim://{BUNDLED}?channels=PLETH&fs=55&speed=max",
                   "--duration", "20s", "--sink", f"jsonl://{replay}")
    assert result.returncode == 0, result.stderr
    a, b = read_records(polar), read_records(replay)
    # 20 s at 55 Hz resampled live to 100 Hz (2,000 samples): windows start at 0, 1, ..., 10 s
    assert len(a) == len(b) == 11 and [r["start"] for r in a] == [r["start"] for r in b]
    # The first window holds the normaliser's start-up, which differs with the DC level the stream
    # starts at (raw Verity codes sit near -480 000, the replay's int16 codes near 0); after it, the
    # two agree to the noise of three channels against the replay's quantisation.
    for x, y in zip(a[1:], b[1:]):
        for ex, ey in zip(x["embeddings"], y["embeddings"]):
            ex, ey = np.asarray(ex), np.asarray(ey)
            assert np.linalg.norm(ex - ey) <= 0.01 * np.linalg.norm(ey)
    assert all(x["lost_fraction"] == y["lost_fraction"] == 0 for x, y in zip(a, b))


@pytest.mark.parametrize("polar_sim", [("polar-h10", "II")], indirect=True)
def test_run_refuses_an_h10_ecg_stream_for_a_ppg_model(model_file, polar_sim, himae):
    # asked for PPG, the H10 has none (asked first: a sensor that has streamed all of its recording
    # at full speed does not advertise again)
    result = himae("run", "--model", model_file, "--source", f"polar://himae-sim?stream=ppg&hci={polar_sim.hci}",
                   "--duration", "20s", timeout=60)
    assert result.returncode == 2 and "streams ECG, ACC, not PPG" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    # its ECG is no PPG
    assert polar_sim.source == f"polar://himae-sim?stream=ecg&hci={polar_sim.hci}"
    result = himae("run", "--model", model_file, "--source", polar_sim.source,
                   "--duration", "20s", timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "found 0 among ECG" in lines[0], result.stderr
