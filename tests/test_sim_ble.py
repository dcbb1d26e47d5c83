"""BLE end to end: simulated wearable on bumble → the project's bleak backend →
BleSource / HeartRateSource → SampleStream, in one process and across two."""

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest
from conftest import BUNDLED, V102S
from bumble.link import LocalLink

from firmware_sim.ble_device import BleDevice
from firmware_sim.device import DeviceModel
from firmware_sim.faults import FaultConfig, Faults
from firmware_sim.heart_rate import trace_for
from firmware_sim.options import SimOptions, build_model
from himae_stream.bumble_backend import HCI_ENV, BumbleBackend, set_default_adapter
from himae_stream.recordings import load
from himae_stream.sources.ble import BleSource
from himae_stream.sources.heartrate import HeartRateSource
from test_sim_serial import check_delivery
from waiting import Changes, read_all

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def recording(seconds):
    rec = load(BUNDLED, channels="PLETH")
    return dataclasses.replace(rec, signals=rec.signals[:, : int(seconds * rec.fs)])


async def collect(source, sent, *done, timeout_s=60.0):
    """Chunks from the BLE `source` until it has received every notification the device sent:
    `sent()` is their number, known once each of `done` (events or futures) is. Then the source
    is closed, and the stream, its source ended, releases all it still holds."""
    stream, _, chunks = await read_all(
        source, list(done), sent,
        lambda: source.counters["notifications"] + source.counters["stale_notifications"],
        timeout_s, "every notification sent",
    )
    return stream, chunks


def sent_by(device) -> Callable[[], int]:
    return lambda: device.log.counters.get("notifications", 0)


async def simulate(model, body, make=BleDevice, **device_args):
    """Run `body(device)` with the device (`make(model, link, ...)`) and this process's bumble host
    on one LocalLink."""
    link = LocalLink()
    device = make(model, link, **device_args)
    await device.start()
    set_default_adapter(link)
    try:
        return await body(device)
    finally:
        set_default_adapter(None)
        await device.stop()


@pytest.mark.parametrize("mtu", [23, 247])
def test_ble_one_process_delivers_every_sample(mtu):
    model = DeviceModel(recording(30))

    async def body(device):
        source = BleSource(name="himae-sim", backend=BumbleBackend)
        stream, chunks = await collect(source, sent_by(device), device.finished)
        return stream, chunks, source

    stream, chunks, source = asyncio.run(simulate(model, body, speed=None, mtu=mtu))
    lost = check_delivery(chunks, model, np.zeros(0, int))
    assert not lost.any() and sum(len(c) for c in chunks) == model.length
    counters = stream.counters
    assert counters["samples"] == model.length and counters["lost_samples"] == 0
    assert counters["unsynced"] == counters["malformed"] == counters["overflow_drops"] == 0
    # notifications were sized to the negotiated MTU: ceil(samples / per-notification capacity)
    per_note = (mtu - 3 - 2) // 2
    assert counters["notifications"] >= model.length / per_note
    assert counters["notifications"] <= 1.2 * model.length / per_note + 16


def test_ble_samples_a_recording_has_no_value_for_arrive_lost_and_logged():
    rec = load(V102S, channels="PLETH")
    model = DeviceModel(dataclasses.replace(rec, signals=rec.signals[:, : int(120 * rec.fs)]))
    nan = np.flatnonzero(~np.isfinite(model.recording.signals[0]))

    async def body(device):
        stream, chunks = await collect(BleSource(name="himae-sim", backend=BumbleBackend), sent_by(device),
                                       device.finished)
        return stream, chunks, device.log

    stream, chunks, log = asyncio.run(simulate(model, body, speed=None, mtu=247))
    lost = check_delivery(chunks, model, log.indices())
    assert nan.size > 0 and np.array_equal(np.flatnonzero(lost), nan)
    assert log.counters["dropped_no_value"] == nan.size == stream.counters["lost_samples"]


def test_ble_disconnect_reconnects_and_reports_exact_gap():
    model = DeviceModel(recording(20))
    faults = Faults(FaultConfig(disconnect_after=6.0, disconnect_for=5.0))

    async def body(device):
        source = BleSource(name="himae-sim", backend=BumbleBackend, backoff_s=0.05)
        stream, chunks = await collect(source, sent_by(device), device.finished)
        return stream, chunks, device.log

    stream, chunks, log = asyncio.run(simulate(model, body, faults=faults, speed=10.0))
    lost = check_delivery(chunks, model, log.indices())
    counters = stream.counters
    assert counters["reconnects"] == 1 and counters["disconnects"] == 1
    assert counters["duplicates"] == 0 and counters["late"] == 0
    assert counters["lost_samples"] == lost.sum() == log.total()
    # the gap is the outage (5 s of samples, to one connection event) plus what was
    # produced before the new connection resubscribed, all of it in the device's log
    outage = log.counters["dropped_disconnected"]
    assert abs(outage - 5.0 * model.fs) <= 0.015 * 10 * model.fs + 1
    reasons = {why for _, _, why in log.dropped}
    assert reasons <= {"disconnected", "not_connected", "not_subscribed"}
    assert counters["gaps"] == 1


def test_heart_rate_service_readings_match_trace(data_dir):
    rec = load(data_dir / "troika" / "Training_data" / "DATA_01_TYPE01.mat", channels="PPG1")
    model = DeviceModel(dataclasses.replace(rec, signals=rec.signals[:, : 125 * 40]))
    trace = trace_for(rec)

    async def body(device):
        source = HeartRateSource(name="himae-sim", backend=BumbleBackend)
        readings = []

        async def read():
            async for reading in source:
                readings.append(reading.measurement)
                changes.changed()

        changes = Changes()
        changes.follow(device.finished)
        task = asyncio.create_task(read())
        task.add_done_callback(changes.changed)
        # the device has sent them all, and every one it sent has arrived
        await changes.until(lambda: task.done() or device.finished.is_set() and len(readings) >= len(device.hr_log),
                            30, lambda: f"{len(device.hr_log)} readings, got {len(readings)}")
        assert not task.done(), task.exception()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return readings, device.hr_log

    readings, sent = asyncio.run(simulate(model, body, speed=None, heart_rate=trace))
    assert len(sent) >= 35
    assert [r.bpm for r in readings] == [bpm for _, bpm in sent]
    assert [bpm for t, bpm in sent] == [trace.at(t) for t, _ in sent]
    assert all(r.contact and r.rr_s == pytest.approx((60.0 / r.bpm,), abs=1 / 1024) for r in readings)
    assert len({r.bpm for r in readings}) > 3  # the trace moves during exercise


def notifications_sent(done_line: str) -> int:
    """From the simulator's `done: N samples produced, M notifications sent`."""
    assert done_line.startswith("done: "), done_line
    return int(done_line.split(", ")[1].split()[0])


@pytest.mark.parametrize("mtu", [23, 247])
def test_ble_two_processes_over_hci_tcp(tmp_path, monkeypatch, mtu):
    path = BUNDLED
    log_path = tmp_path / "drops.json"
    command = [
        sys.executable, "-m", "himae_stream", "sim", "--transport", "ble", "--recording", str(path),
        "--channels", "PLETH", "--duration", "20", "--speed", "max", "--mtu", str(mtu),
        "--loss", "0.01", "--seed", "5", "--log", str(log_path), "--linger", "0.5",
    ]
    sim = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True,
                           env={**os.environ, "PYTHONPATH": REPO})
    try:
        lines = [sim.stdout.readline().strip() for _ in range(3)]
        spec = lines[1].partition(f"{HCI_ENV}=")[2]
        assert spec.startswith("tcp-client:127.0.0.1:"), lines
        assert lines[2] == f"source: ble://name=himae-sim?hci={spec}"  # the URL `himae run --source` takes

        monkeypatch.setenv(HCI_ENV, spec)  # what a user pastes from the simulator's output

        async def main():
            done = asyncio.get_running_loop().run_in_executor(None, sim.stdout.readline)
            source = BleSource(name="himae-sim", backend=BumbleBackend)
            return await collect(source, lambda: notifications_sent(done.result()), done)

        stream, chunks = asyncio.run(main())
        assert sim.wait(60) == 0  # it writes its log on the way out
    finally:
        sim.kill()
        sim.wait()
    record = json.loads(log_path.read_text())
    model = build_model(SimOptions(recording=str(path), channels="PLETH", duration=20))
    dropped = np.unique(np.concatenate([np.arange(a, b) for a, b, _ in record["dropped"]] or [np.zeros(0, int)]))
    assert record["produced"] == model.length
    assert chunks, f"no samples arrived: {stream.counters}"
    lost = check_delivery(chunks, model, dropped)
    assert 0 < lost.sum() == stream.counters["lost_samples"]
    assert {why for _, _, why in record["dropped"]} == {"lost"}
