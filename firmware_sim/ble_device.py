"""BLE transport: the simulated wearable as a bumble peripheral.

It advertises the custom sample service (notify: samples, write: control,
read: stream info) and the standard Heart Rate Service, batches the samples
produced in each connection interval into notifications sized to the
negotiated ATT MTU, and honours the control characteristic. A link-down
fault disconnects the central and stops advertising for the fault's length.
Other hosts reach the same virtual radio through `serve_hci` (loopback TCP).
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import struct
from collections.abc import Callable

from bumble.att import ATT_Error, ErrorCode
from bumble.controller import Controller
from bumble.core import UUID, AdvertisingData, BaseBumbleError
from bumble.device import AdvertisingParameters, AdvertisingSet, Connection, Device
from bumble.gatt import Characteristic, CharacteristicValue, Service
from bumble.hci import Address
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport import Transport
from bumble.transport.common import AsyncPipeSink
from bumble.transport.tcp_server import open_tcp_server_transport_with_socket

from firmware_sim.device import DeviceModel, DropLog, Pacer
from firmware_sim.faults import Fate, Faults
from firmware_sim.heart_rate import HeartRateTrace
from himae_stream import protocol
from himae_stream.protocol import (
    ControlOp,
    HeartRateMeasurement,
    NotificationPacker,
    ProtocolError,
    decode_control,
    encode_heart_rate,
    encode_info,
)

#: the link layer retransmits until acknowledged, so a notification is either lost (host buffer) or delivered intact
BLE_FATES = frozenset({Fate.SEND, Fate.LOSE})
DEFAULT_ADDRESS = "F0:00:00:00:00:01"
HEART_RATE_SERVICE = UUID.from_16_bits(0x180D)
BODY_SENSOR_LOCATION_WRIST = 2
#: notifications per step when unpaced, between yields to the event loop
MAX_SPEED_NOTIFICATIONS = 16


class BleDevice:
    """A simulated wearable on `link`; `await start()` begins advertising and sampling.

    Subclasses emulate other devices on the same radio, pacing and drop log: they add their
    service (`_add_services`), say when to stream and how many samples a notification
    holds, and packetise (`_deliver`)."""

    service_uuid = protocol.SERVICE_UUID  # advertised beside the Heart Rate Service

    def __init__(
        self,
        model: DeviceModel,
        link: LocalLink,
        faults: Faults | None = None,
        speed: float | None = 1.0,
        mtu: int = 247,
        connection_interval_ms: float = 15.0,
        heart_rate: HeartRateTrace | None = None,
        address: str = DEFAULT_ADDRESS,
        advertising_interval_ms: float = 20.0,
    ) -> None:
        if not 23 <= mtu <= 517:
            raise ValueError(f"mtu must be 23 … 517, got {mtu}")
        self.model = model
        self.faults = faults or Faults()
        self.pacer = Pacer(speed, model.config.drift_ppm)
        self.interval_s = connection_interval_ms / 1000.0
        self.heart_rate = heart_rate
        self.advertising_interval_ms = advertising_interval_ms
        self.log = DropLog()
        self.hr_log: list[tuple[float, int]] = []  # (device s, bpm) of every HR notification sent
        self.produced = 0
        self.streaming = True  # the control characteristic's START / STOP
        self.finished = asyncio.Event()
        #: called with the device after each connection event, a rate change and at the end, so a
        #: monitor or a test can follow the replay (produced, log, model) without polling it
        self.watchers: list[Callable[[BleDevice], object]] = []
        self._connection: Connection | None = None
        self._subscribed: set[int] = set()
        self._subscribed_event = asyncio.Event()  # set while a central is subscribed to anything
        self._packer: NotificationPacker | None = None
        self._outage = False
        self._task: asyncio.Task | None = None
        self._advertising_set: AdvertisingSet | None = None
        self._event_s = 0.0  # device time of the current connection event
        self._origin_s = 0.0  # device time of stream index 0 (moves on a rate change)
        self._boot_us = model.config.start_us  # device clock at power-on
        self._new_rate: float | None = None  # a SET_RATE waiting for the next connection event

        controller = Controller(f"{model.config.name}-radio", link=link)
        self.device = Device(name=model.config.name, address=Address(address), host=Host(controller, AsyncPipeSink(controller)))
        self.device.gatt_server.max_mtu = mtu
        self._add_services()
        self.hr_char = Characteristic(
            protocol.HEART_RATE_MEASUREMENT_UUID, Characteristic.Properties.NOTIFY, Characteristic.READABLE, b""
        )
        self.device.add_service(
            Service(
                HEART_RATE_SERVICE,
                [
                    self.hr_char,
                    Characteristic(
                        UUID.from_16_bits(0x2A38), Characteristic.Properties.READ, Characteristic.READABLE,
                        bytes([BODY_SENSOR_LOCATION_WRIST]),
                    ),
                ],
            )
        )
        self.device.on(self.device.EVENT_CONNECTION, self._on_connection)
        self.device.on("characteristic_subscription", self._on_subscription)

    def _add_services(self) -> None:
        """The device's own service: `samples_char` (notify), control and stream info."""
        self.samples_char = Characteristic(
            protocol.SAMPLES_CHAR_UUID, Characteristic.Properties.NOTIFY, Characteristic.READABLE, b""
        )
        self.control_char = Characteristic(
            protocol.CONTROL_CHAR_UUID,
            Characteristic.Properties.WRITE | Characteristic.Properties.WRITE_WITHOUT_RESPONSE,
            Characteristic.WRITEABLE,
            CharacteristicValue(write=self._on_control),
        )
        self.info_char = Characteristic(
            protocol.INFO_CHAR_UUID,
            Characteristic.Properties.READ,
            Characteristic.READABLE,
            CharacteristicValue(read=lambda connection: encode_info(self.model.info), write=_read_only),
        )
        self.device.add_service(Service(protocol.SERVICE_UUID, [self.samples_char, self.control_char, self.info_char]))

    @property
    def address(self) -> str:
        return str(self.device.random_address).split("/")[0]

    @property
    def name(self) -> str:
        return self.model.config.name

    def source_url(self, hci: str) -> str:
        """The URL that reads this device through the bumble controller at `hci`."""
        return f"ble://name={self.name}?hci={hci}"

    async def start(self) -> None:
        await self.device.power_on()
        await self._advertise()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._connection is not None:
            await self._disconnect()
        await self._stop_advertising()

    async def _advertise(self) -> None:
        """(Re)start advertising; extended advertising, since name and both services exceed 31 bytes."""
        if self._advertising_set is None:
            data = AdvertisingData([
                (AdvertisingData.FLAGS, bytes([0x06])),
                (AdvertisingData.COMPLETE_LOCAL_NAME, self.name.encode()),
                (AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS, bytes(UUID(self.service_uuid))),
                (AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS, bytes(HEART_RATE_SERVICE)),
            ])
            parameters = AdvertisingParameters(
                primary_advertising_interval_min=self.advertising_interval_ms,
                primary_advertising_interval_max=self.advertising_interval_ms,
            )
            self._advertising_set = await self.device.create_advertising_set(
                advertising_parameters=parameters, advertising_data=bytes(data)
            )
        else:
            await self._advertising_set.start()

    async def _stop_advertising(self) -> None:
        if self._advertising_set is not None:
            await self._advertising_set.stop()

    # ------------------------------------------------------------ link events
    def _on_connection(self, connection: Connection) -> None:
        self._connection = connection
        self._subscribed.clear()
        self._subscribed_event.clear()
        connection.on(connection.EVENT_DISCONNECTION, lambda reason: self._on_disconnection(connection))
        connection.on(connection.EVENT_CONNECTION_ATT_MTU_UPDATE, self._new_packer)
        self._new_packer()

    def _on_disconnection(self, connection: Connection) -> None:
        if self._connection is connection:
            self._connection = None
            self._subscribed.clear()
            self._subscribed_event.clear()
        if not self._outage and self._task is not None and not self._task.done():
            asyncio.get_running_loop().create_task(self._advertise())

    def _on_subscription(self, connection: Connection, characteristic, notify: bool, indicate: bool) -> None:
        if notify or indicate:
            self._subscribed.add(characteristic.handle)
            if characteristic is self.samples_char:
                self._new_packer()  # the first notification after subscribing carries a sync header
        else:
            self._subscribed.discard(characteristic.handle)
        if self._subscribed:
            self._subscribed_event.set()
        else:
            self._subscribed_event.clear()

    def _new_packer(self) -> None:
        mtu = self._connection.att_mtu if self._connection is not None else 23
        self._packer = NotificationPacker(self.model.info, payload_size=mtu - 3)

    def _on_control(self, connection: Connection, value: bytes) -> None:
        try:
            command = decode_control(value)
        except ProtocolError:
            self.log.count("bad_control")
            raise ATT_Error(ErrorCode.VALUE_NOT_ALLOWED) from None
        self.log.count(f"control_{command.op.name.lower()}")
        if command.op == ControlOp.START:
            self.streaming = True
        elif command.op == ControlOp.STOP:
            self.streaming = False
        elif command.op == ControlOp.SET_RATE:
            self._new_rate = command.rate_hz  # applied at the next connection event
        # REQUEST_INFO needs nothing: the info characteristic is read live.

    def _set_rate(self, rate_hz: float) -> None:
        """Resample to the new rate from now on; the stream restarts at index 0 with a fresh sync."""
        self._origin_s = self._event_s
        config = dataclasses.replace(self.model.config, fs=rate_hz, start_us=self._boot_us + round(self._origin_s * 1e6))
        self.model = DeviceModel(self.model.original, config)
        self.produced = 0
        self._new_rate = None
        self._new_packer()

    async def _disconnect(self) -> None:
        connection = self._connection
        if connection is not None:
            try:
                await connection.disconnect()
            except BaseBumbleError:  # already going down
                pass

    # ------------------------------------------------------------ sampling loop
    async def _run(self) -> None:
        """One iteration per connection event: produce the samples due, deliver or log them.

        The sampling clock starts when a central first subscribes (samples or heart rate).
        Unpaced, the device also waits whenever nobody is subscribed, outside a link-down window.
        """
        await self._subscribed_event.wait()
        self.pacer.restart()
        next_hr = 1.0
        while self.model.length is None or self.produced < self.model.length:
            if self.pacer.speed is None:
                if not self._outage and not self.faults.disconnected(self._event_s):
                    await self._ready()
                target = self.produced + MAX_SPEED_NOTIFICATIONS * max(self._per_notification(), 1)
                self._event_s = self._origin_s + target / self.model.fs
            else:
                self._event_s += self.interval_s
                await self.pacer.wait_until(self._event_s)
                target = int((self._event_s - self._origin_s) * self.model.fs + 1e-9)
            if self._new_rate is not None:
                self._set_rate(self._new_rate)
                self._notify_watchers()
                continue
            if self.model.length is not None:
                target = min(target, self.model.length)
            await self._link_state(self._event_s)
            if target > self.produced:
                await self._deliver(self.produced, target)
                self.produced = target
            while self.heart_rate is not None and self._event_s >= next_hr:
                await self._notify_heart_rate(next_hr)
                next_hr += 1.0
            self._notify_watchers()
            if self.pacer.speed is None:
                if self._connection is not None:
                    await self._connection.drain()
                await asyncio.sleep(0)
        self.finished.set()
        self._notify_watchers()

    def _notify_watchers(self) -> None:
        for watcher in self.watchers:
            watcher(self)

    async def _ready(self) -> None:
        """Unpaced, wait until a central can take samples."""
        await self._subscribed_event.wait()

    def _per_notification(self) -> int:
        """Samples one notification carries at the negotiated MTU."""
        return self._payload() // (self.model.channels * self.model.fmt.width)

    def _payload(self) -> int:
        return (self._connection.att_mtu if self._connection is not None else 23) - 3

    async def _link_state(self, device_s: float) -> None:
        """Enter or leave a link-down fault window."""
        down = self.faults.disconnected(device_s)
        if down and not self._outage:
            self._outage = True
            self.log.count("disconnects")
            await self._stop_advertising()
            await self._disconnect()
        elif not down and self._outage:
            self._outage = False
            await self._advertise()

    async def _deliver(self, start: int, stop: int) -> None:
        connection = self._connection
        if self._outage:
            self.log.drop(start, stop, "disconnected")
            return
        if connection is None:
            self.log.drop(start, stop, "not_connected")
            return
        if self.samples_char.handle not in self._subscribed:
            self.log.drop(start, stop, "not_subscribed")
            return
        if not self.streaming:
            self.log.drop(start, stop, "stopped")
            return
        assert self._packer is not None
        k = start
        for a, b in self.model.valid_spans(start, stop):
            self.log.drop(k, a, "no_value")
            k = a
            for note in self._packer.pack(self.model.packet(a, b)):
                sync = bool(struct.unpack_from("<H", note)[0] & protocol.SYNC_FLAG)
                n = protocol.samples_per_notification(len(note), self.model.info, sync)
                if self.faults.fate(BLE_FATES) is Fate.LOSE:
                    self.log.drop(k, k + n, "lost")
                else:
                    await self.device.notify_subscriber(connection, self.samples_char, note)
                    self.log.count("notifications")  # sent: a reader has them all once it counts as many
                k += n
        self.log.drop(k, stop, "no_value")

    async def _notify_heart_rate(self, device_s: float) -> None:
        connection = self._connection
        if connection is None or self.hr_char.handle not in self._subscribed:
            return
        recording_s = device_s - self._origin_s
        if self.model.config.loop:
            recording_s %= self.model.recording.duration_s
        bpm = self.heart_rate.at(recording_s)
        value = encode_heart_rate(HeartRateMeasurement(bpm, contact=True, rr_s=(round(60.0 / bpm, 3),)))
        await self.device.notify_subscriber(connection, self.hr_char, value)
        self.hr_log.append((device_s, bpm))


def _read_only(connection: Connection, value: bytes) -> None:
    raise ATT_Error(ErrorCode.WRITE_NOT_PERMITTED)


async def serve_hci(link: LocalLink, host: str = "127.0.0.1", port: int = 0) -> tuple[Transport, str]:
    """Serve a controller on `link` over HCI on TCP; returns the transport and the client spec to reach it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    transport = await open_tcp_server_transport_with_socket(sock)
    Controller("hci-tcp", host_source=transport.source, host_sink=transport.sink, link=link)
    return transport, f"tcp-client:{host}:{sock.getsockname()[1]}"
