"""The project's bleak backend on bumble, driven through the ordinary bleak API
against the simulated wearable on a shared virtual link."""

import asyncio
import dataclasses
import struct

import numpy as np
import pytest
from conftest import BUNDLED
from bleak import BleakClient, BleakScanner
from bleak.exc import BleakError, BleakGATTProtocolError, BleakGATTProtocolErrorCode
from bumble.link import LocalLink

from firmware_sim.ble_device import BleDevice
from firmware_sim.device import DeviceModel
from himae_stream import protocol
from himae_stream.bumble_backend import BumbleAdapter, BumbleClient, BumbleScanner
from himae_stream.recordings import load
from waiting import Changes

CCCD = "00002902-0000-1000-8000-00805f9b34fb"


@pytest.fixture(scope="module")
def model():
    rec = load(BUNDLED, channels="PLETH")
    return DeviceModel(dataclasses.replace(rec, signals=rec.signals[:, : 250 * 20]))


def run_with_device(model, body, mtu=247, speed=20.0):
    """Run `body(device, adapter)` with a fresh simulated device and host on one LocalLink."""

    async def main():
        link = LocalLink()
        device = BleDevice(model, link, speed=speed, mtu=mtu)
        await device.start()
        adapter = BumbleAdapter(link)
        try:
            return await asyncio.wait_for(body(device, adapter), 60)
        finally:
            await device.stop()
            await adapter.close()

    return asyncio.run(main())


def test_scan_reports_advertisement_data(model):
    async def body(device, adapter):
        found = await BleakScanner.discover(0.3, return_adv=True, backend=BumbleScanner, bumble=adapter)
        hr_only = await BleakScanner.discover(
            0.2, return_adv=True, backend=BumbleScanner, bumble=adapter, service_uuids=["0000180d-0000-1000-8000-00805f9b34fb"]
        )
        other = await BleakScanner.discover(
            0.2, return_adv=True, backend=BumbleScanner, bumble=adapter, service_uuids=["0000180f-0000-1000-8000-00805f9b34fb"]
        )
        return device.address, found, hr_only, other

    address, found, hr_only, other = run_with_device(model, body)
    assert list(found) == [address]
    ble_device, adv = found[address]
    assert ble_device.name == adv.local_name == "himae-sim"
    assert adv.service_uuids == [protocol.SERVICE_UUID, protocol.HEART_RATE_SERVICE_UUID]
    assert adv.rssi < 0
    assert list(hr_only) == [address]
    assert other == {}


@pytest.mark.parametrize("mtu", [23, 247])
def test_connect_exchanges_mtu_and_discovers_services(model, mtu):
    async def body(device, adapter):
        ble_device = await BleakScanner.find_device_by_name("himae-sim", backend=BumbleScanner, bumble=adapter)
        async with BleakClient(ble_device, backend=BumbleClient, bumble=adapter) as client:
            services = {s.uuid: [(c.uuid, sorted(c.properties), [d.uuid for d in c.descriptors]) for c in s.characteristics]
                        for s in client.services}
            info = await client.read_gatt_char(protocol.INFO_CHAR_UUID)
            char = client.services.get_characteristic(protocol.SAMPLES_CHAR_UUID)
            negotiated = client.mtu_size, char.max_write_without_response_size, services, info, client.name
        async with BleakClient(ble_device, backend=BumbleClient, bumble=adapter, mtu=100) as client:
            capped = client.mtu_size  # the client may ask for less than the device offers
        return negotiated, capped

    (negotiated, max_write, services, info, name), capped = run_with_device(model, body, mtu=mtu)
    assert negotiated == mtu and max_write == mtu - 3
    assert capped == min(100, mtu)
    assert name == "himae-sim"
    assert services[protocol.SERVICE_UUID] == [
        (protocol.SAMPLES_CHAR_UUID, ["notify"], [CCCD]),
        (protocol.CONTROL_CHAR_UUID, ["write", "write-without-response"], []),
        (protocol.INFO_CHAR_UUID, ["read"], []),
    ]
    assert services[protocol.HEART_RATE_SERVICE_UUID][0] == (protocol.HEART_RATE_MEASUREMENT_UUID, ["notify"], [CCCD])
    assert protocol.decode_info(info) == model.info


def test_notify_control_and_gatt_errors(model):
    async def body(device, adapter):
        changes = Changes()
        device.watchers.append(changes.changed)
        # Connect by address string: the backend scans for it itself.
        async with BleakClient(device.address, backend=BumbleClient, bumble=adapter, timeout=5) as client:
            notes = []

            def on_note(_, data):
                notes.append(bytes(data))
                changes.changed()

            await client.start_notify(protocol.SAMPLES_CHAR_UUID, on_note)
            await changes.until(lambda: len(notes) >= 5, 10, "5 notifications")
            await client.stop_notify(protocol.SAMPLES_CHAR_UUID)
            stopped_at = len(notes)
            # the device samples on for a device second without sending; then a round trip to
            # it (the write below) comes back after anything it might still have sent
            await changes.until(lambda: device.log.counters.get("dropped_not_subscribed", 0) >= model.fs, 10,
                                "the device to sample on, unsubscribed")
            await client.write_gatt_char(protocol.CONTROL_CHAR_UUID, protocol.encode_control(
                protocol.ControlCommand(protocol.ControlOp.STOP)), response=True)
            after_stop = len(notes) - stopped_at
            streaming = device.streaming
            with pytest.raises(BleakGATTProtocolError) as read_only:
                await client.write_gatt_char(protocol.INFO_CHAR_UUID, b"\x01", response=True)
            with pytest.raises(BleakGATTProtocolError) as bad_command:
                await client.write_gatt_char(protocol.CONTROL_CHAR_UUID, b"\x7f", response=True)
            return notes, after_stop, streaming, (read_only.value.code, bad_command.value.code)

    notes, after_stop, streaming, code = run_with_device(model, body)
    assert notes[0][1] & 0x80  # the first notification after subscribing is a sync one
    decoder = protocol.NotificationDecoder(model.info)
    packets = [decoder.feed(n) for n in notes]
    assert packets[0] is not None and all(p is not None for p in packets)
    assert after_stop == 0
    assert streaming is False
    assert code == (BleakGATTProtocolErrorCode.WRITE_NOT_PERMITTED, BleakGATTProtocolErrorCode.VALUE_NOT_ALLOWED)


def test_disconnect_callback_only_for_unsolicited_disconnects(model):
    async def body(device, adapter):
        calls = []
        changes = Changes()
        client = BleakClient(device.address, lambda c: (calls.append(c), changes.changed()), backend=BumbleClient,
                             bumble=adapter, timeout=5)
        await client.connect()
        await client.disconnect()
        own = list(calls)
        await client.connect()
        await device._disconnect()  # the peripheral drops the link
        await changes.until(lambda: calls, 10, "the disconnected callback")
        with pytest.raises(BleakError):
            await client.read_gatt_char(protocol.INFO_CHAR_UUID)
        return own, calls, client

    own, calls, client = run_with_device(model, body)
    assert own == []
    assert calls == [client] and not client.is_connected


def opens_stream(note: bytes) -> bool:
    """A sync notification at stream index 0: the first of a (re)started stream."""
    return bool(note[1] & 0x80) and struct.unpack_from("<I", note, 2)[0] == 0


def test_set_rate_restarts_the_stream_at_the_new_rate(model):
    async def body(device, adapter):
        changes = Changes()
        async with BleakClient(device.address, backend=BumbleClient, bumble=adapter, timeout=5) as client:
            before = protocol.decode_info(await client.read_gatt_char(protocol.INFO_CHAR_UUID))
            notes = []

            def on_note(_, data):
                notes.append(bytes(data))
                changes.changed()

            await client.start_notify(protocol.SAMPLES_CHAR_UUID, on_note)
            await changes.until(lambda: len(notes) >= 3, 10, "3 notifications")
            switched = len(notes)  # notifications so far are all from the first stream
            await client.write_gatt_char(protocol.CONTROL_CHAR_UUID, protocol.encode_control(
                protocol.ControlCommand(protocol.ControlOp.SET_RATE, 125.0)), response=True)

            # the device applies the rate at its next connection event: the notification opening
            # the new stream says it has (older ones may still be in flight before it)
            def opened() -> int | None:
                return next((i for i in range(switched, len(notes)) if opens_stream(notes[i])), None)

            await changes.until(lambda: opened() is not None, 10, "the new stream's first notification")
            after = protocol.decode_info(await client.read_gatt_char(protocol.INFO_CHAR_UUID))
            await changes.until(lambda: len(notes) >= opened() + 10, 10,
                                "10 notifications of the new stream")
            return before, after, notes[switched:], device.model

    before, after, notes, resampled = run_with_device(model, body)
    assert (before.fs, after.fs) == (250.0, 125.0)
    # the new stream opens with a sync notification at index 0 (older ones may still be in flight)
    start = next(i for i, note in enumerate(notes) if opens_stream(note))
    decoder = protocol.NotificationDecoder(after)
    packets = [decoder.feed(n) for n in notes[start:]]
    assert all(p is not None for p in packets)
    codes = np.concatenate([p.samples for p in packets], axis=1)
    assert packets[0].seq == 0 and np.array_equal(codes, resampled.codes(0, codes.shape[1]))
