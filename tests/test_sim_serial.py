"""Serial end to end: simulator on a pseudo-terminal → SerialSource → SampleStream,
checked sample by sample against the quantised recording and the simulator's drop log."""

import asyncio
import dataclasses

import numpy as np
from conftest import BUNDLED, V102S

from firmware_sim.device import DeviceConfig, DeviceModel
from firmware_sim.faults import FaultConfig, Faults
from firmware_sim.serial_device import SerialDevice
from himae_stream.protocol import SampleFormat
from himae_stream.recordings import load
from himae_stream.sources.serial import SerialSource
from waiting import in_thread, read_all


def first_seconds(seconds, channels="PLETH"):
    rec = load(BUNDLED, channels=channels)
    return dataclasses.replace(rec, signals=rec.signals[:, : int(seconds * rec.fs)])


def check_indices(chunks, values, dropped: np.ndarray, first: int = 0, atol: float = 0.0) -> tuple[np.ndarray, int]:
    """Assert chunks hold every index from `first` once and in order, lost exactly where the
    device dropped, and `values(start, stop)` everywhere else (within `atol`, for transports that
    round it); returns the lost mask and the index after the last delivered."""
    index = np.concatenate([np.arange(c.start, c.start + len(c)) for c in chunks])
    got = np.concatenate([c.samples for c in chunks], axis=1)
    lost = np.concatenate([c.lost_mask for c in chunks])
    last = int(index[-1]) + 1
    assert np.array_equal(index, np.arange(first, last)), "every index once, in order"
    assert np.array_equal(np.flatnonzero(lost) + first, dropped[(dropped >= first) & (dropped < last)])
    expected = values(first, last)
    np.testing.assert_allclose(got[:, ~lost], expected[:, ~lost], rtol=0, atol=atol)
    return lost, last


def check_delivery(chunks, model, dropped: np.ndarray, first: int = 0, atol: float = 0.0) -> np.ndarray:
    """`check_indices` against the quantised recording, and every sample after the last delivered
    one dropped by the device; returns the lost mask."""
    lost, last = check_indices(chunks, model.values, dropped, first, atol)
    tail = np.arange(last, model.length)
    assert np.all(np.isin(tail, dropped)), "samples after the last delivered one were dropped by the device"
    return lost


async def replay(device: SerialDevice, timeout_s: float = 60.0, **source_options):
    """Read the device until it has sent everything and the reader has read every byte it wrote.
    `source_options` go to the SerialSource (e.g. a text `reader`)."""
    source = SerialSource(device.path, idle_timeout_s=None, **source_options)
    device.start()
    sent = in_thread(device.wait, timeout_s, "the device to send the whole recording")
    return await read_all(source, [sent], lambda: device.written, lambda: source.counters["bytes"], timeout_s,
                          "every byte written")


def test_serial_replay_delivers_exactly_what_was_not_dropped():
    model = DeviceModel(first_seconds(60), DeviceConfig(jitter_us=300, drift_ppm=120, seed=4))
    faults = Faults(FaultConfig(loss=0.02, burst=0.01, burst_len=4, duplicate=0.02, reorder=0.02, corrupt=0.02,
                                disconnect_after=20, disconnect_for=5, seed=7))
    with SerialDevice(model, faults, speed=40.0) as device:
        stream, tap, chunks = asyncio.run(replay(device))
    log = device.log

    lost = check_delivery(chunks, model, log.indices())
    delivered = ~lost
    times = np.concatenate([c.timestamps for c in chunks])

    # every fault kind happened and is accounted for
    for reason in ("lost", "corrupted", "disconnected"):
        assert log.counters[f"dropped_{reason}"] > 0
    assert log.counters["duplicated"] > 0 and log.counters["reordered"] > 0
    counters = stream.counters
    assert counters["lost_samples"] == lost.sum()
    assert counters["samples"] == delivered.sum()
    assert counters["duplicates"] == log.counters["duplicated"]
    assert counters["reordered"] == log.counters["reordered"]
    corrupted_frames = sum(1 for _, _, why in log.dropped if why == "corrupted")
    assert counters["crc_errors"] + counters["decode_errors"] >= corrupted_frames > 0

    # device timestamps: each packet carries its first sample's device time exactly
    for packet in tap.packets:
        assert packet.t_us == model.timestamps_us(packet.seq, packet.seq + 1)[0]
    # host timestamps: increasing, and the device clock mapped onto the host clock at about
    # 1/speed. How precisely the map finds the rate is ClockMap's unit tests' job, on synthetic
    # arrivals: here the pace is whatever this machine keeps up under load.
    assert all(np.all(np.diff(c.timestamps) > 0) for c in chunks)
    device_s = model.timestamps_us(0, times.size) * 1e-6
    settled = delivered & (np.arange(times.size) > times.size // 2)
    slope = np.polyfit(device_s[settled], times[settled], 1)[0]
    assert 0.5 / 40 < slope < 2 / 40


def test_serial_formats_round_trip():
    rec = first_seconds(4, channels="II,V,PLETH")
    for fmt in (SampleFormat.INT24, SampleFormat.FLOAT32):
        model = DeviceModel(rec, DeviceConfig(fmt=fmt))
        with SerialDevice(model, speed=None) as device:
            stream, tap, chunks = asyncio.run(replay(device))
        values = np.concatenate([c.samples for c in chunks], axis=1)
        assert values.shape == (3, model.length) and not any(c.lost_mask.any() for c in chunks)
        assert np.array_equal(values, model.values(0, model.length))
        # quantisation error: half a code, plus float32 rounding of the reconstructed value
        error = np.abs(values - rec.signals).max(axis=1)
        float32_rounding = 2.0**-23 * np.abs(rec.signals).max(axis=1)
        half_code = 0.0 if fmt == SampleFormat.FLOAT32 else np.asarray(model.scale) / 2
        assert np.all(error <= half_code + float32_rounding)


def test_samples_a_recording_has_no_value_for_arrive_lost_and_logged():
    """v102s's PLETH has NaN samples: the device sends around them, the receiver gets them as
    lost, and the drop log says why; none becomes a 0.0 that looks like signal."""
    rec = load(V102S, channels="PLETH")
    rec = dataclasses.replace(rec, signals=rec.signals[:, : int(120 * rec.fs)])
    nan = np.flatnonzero(~np.isfinite(rec.signals[0]))
    assert nan.size > 0
    model = DeviceModel(rec)
    with SerialDevice(model, Faults(), speed=None) as device:
        stream, _, chunks = asyncio.run(replay(device))
    lost = check_delivery(chunks, model, device.log.indices())
    assert np.array_equal(np.flatnonzero(lost), nan)
    assert device.log.counters["dropped_no_value"] == nan.size == stream.counters["lost_samples"]
