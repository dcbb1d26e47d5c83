"""A BITalino (r)evolution BLE: the simulated board behind a simulated BLE module, as on the real one.

The real board's BLE module bridges its serial line: what a central writes to
the commands characteristic goes to the board, and what the board sends (its
answers, its frames) goes out as notifications of the frames characteristic, as
much as a notification's payload holds (the ATT MTU less 3). `BitalinoBle` is
that module, a bumble peripheral, in front of a `BitalinoDevice` on its
pseudo-terminal, which stays the board: commands, rate, pacing, faults, idle
and restart are its own. A central connecting opens the board's port; its
disconnecting closes it, which leaves the board idle, as a dropped link does.
"""

from __future__ import annotations

import asyncio
import os

from bumble.controller import Controller
from bumble.core import UUID, AdvertisingData
from bumble.device import AdvertisingParameters, Connection, Device
from bumble.gatt import Characteristic, CharacteristicValue, Service
from bumble.hci import Address
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink

from firmware_sim.bitalino_device import BitalinoDevice
from himae_stream import bitalino

DEFAULT_ADDRESS = "F0:00:00:00:00:02"


class BitalinoBle:
    """The BLE module of a BITalino on `link`, in front of `board` (advertised under its recording's device
    name); `await start()` powers both on."""

    def __init__(self, board: BitalinoDevice, link: LocalLink, address: str = DEFAULT_ADDRESS, mtu: int = 23) -> None:
        self.board = board
        self.name = name = board.model.config.name
        self.notifications = 0  # sent so far
        controller = Controller(f"{name}-radio", link=link)
        self.device = Device(name=name, address=Address(address), host=Host(controller, AsyncPipeSink(controller)))
        self.device.gatt_server.max_mtu = mtu
        self.frames_char = Characteristic(bitalino.BLE_FRAMES_UUID, Characteristic.Properties.NOTIFY,
                                          Characteristic.READABLE, b"")
        commands = Characteristic(bitalino.BLE_COMMANDS_UUID,
                                  Characteristic.Properties.WRITE | Characteristic.Properties.WRITE_WITHOUT_RESPONSE,
                                  Characteristic.WRITEABLE, CharacteristicValue(write=self._on_command))
        self.device.add_service(Service(bitalino.BLE_SERVICE_UUID, [commands, self.frames_char]))
        self.device.on(self.device.EVENT_CONNECTION, self._on_connection)
        self._port: int | None = None  # the board's port, open while a central is connected
        self._connection: Connection | None = None
        self._outgoing: asyncio.Queue[bytes] = asyncio.Queue()
        self._sender: asyncio.Task | None = None
        self._advertising = None

    @property
    def address(self) -> str:
        return str(self.device.random_address).split("/")[0]

    def source_url(self, hci: str, serial_url: str) -> str:
        """The URL that reads the board through the bumble controller at `hci` as `serial_url` reads it on
        its serial port (rate, inputs)."""
        return f"ble://name={self.name}?{serial_url.split('?', 1)[1]}&hci={hci}"

    async def start(self) -> None:
        self.board.start()
        await self.device.power_on()
        data = AdvertisingData([
            (AdvertisingData.FLAGS, bytes([0x06])),
            (AdvertisingData.COMPLETE_LOCAL_NAME, self.name.encode()),
            (AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS, bytes(UUID(bitalino.BLE_SERVICE_UUID))),
        ])
        self._advertising = await self.device.create_advertising_set(
            advertising_parameters=AdvertisingParameters(primary_advertising_interval_min=20,
                                                         primary_advertising_interval_max=20),
            advertising_data=bytes(data))
        self._sender = asyncio.create_task(self._send())

    async def stop(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
        self._close_port()
        self.board.close()

    async def drop_link(self) -> None:
        """End the central's connection, as a link out of range does (the board then goes idle)."""
        if self._connection is not None:
            await self._connection.disconnect()

    # ------------------------------------------------------------ the central
    def _on_connection(self, connection: Connection) -> None:
        self._connection = connection
        connection.on(connection.EVENT_DISCONNECTION, lambda reason: self._on_disconnection(connection))
        self._port = os.open(self.board.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        asyncio.get_running_loop().add_reader(self._port, self._pump)

    def _on_disconnection(self, connection: Connection) -> None:
        if connection is self._connection:
            self._connection = None
            self._close_port()
            asyncio.get_running_loop().create_task(self._advertising.start())  # for the next central

    def _close_port(self) -> None:
        if self._port is not None:
            asyncio.get_running_loop().remove_reader(self._port)
            os.close(self._port)
            self._port = None

    def _on_command(self, connection: Connection, value: bytes) -> None:
        if self._port is not None:
            os.write(self._port, value)

    # ------------------------------------------------------------ the board's bytes
    def _pump(self) -> None:
        """The board wrote: its bytes, in notifications as large as the link takes, in order."""
        try:
            data = os.read(self._port, 4096)
        except BlockingIOError:
            return
        except OSError:  # the board is gone (its replay over)
            self._close_port()
            return
        payload = (self._connection.att_mtu if self._connection is not None else 23) - 3
        for i in range(0, len(data), payload):
            self._outgoing.put_nowait(data[i: i + payload])

    async def _send(self) -> None:
        while True:
            note = await self._outgoing.get()
            connection = self._connection
            if connection is not None:
                await self.device.notify_subscriber(connection, self.frames_char, note)
                self.notifications += 1
