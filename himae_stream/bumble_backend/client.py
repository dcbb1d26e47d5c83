"""bleak client backend on bumble: connect, MTU exchange, discovery, notify over a `BumbleAdapter`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakError, BleakGATTProtocolError
from bumble.att import ATT_Error
from bumble.core import UUID, BaseBumbleError
from bumble.device import Connection, Peer
from bumble.gatt import Characteristic
from bumble.hci import Address

from himae_stream.bumble_backend.adapter import BumbleAdapter, default_adapter
from himae_stream.bumble_backend.scanner import uuid_str

#: largest ATT MTU requested by default (a 251-byte LE data PDU minus the L2CAP header)
MAX_MTU = 247

_T = TypeVar("_T")

_PROPERTY_NAMES = {
    Characteristic.Properties.BROADCAST: "broadcast",
    Characteristic.Properties.READ: "read",
    Characteristic.Properties.WRITE_WITHOUT_RESPONSE: "write-without-response",
    Characteristic.Properties.WRITE: "write",
    Characteristic.Properties.NOTIFY: "notify",
    Characteristic.Properties.INDICATE: "indicate",
    Characteristic.Properties.AUTHENTICATED_SIGNED_WRITES: "authenticated-signed-writes",
    Characteristic.Properties.EXTENDED_PROPERTIES: "extended-properties",
}


class BumbleClient(BaseBleakClient):
    """A GATT client on a `BumbleAdapter`: keyword `bumble=`, else the class's `adapter`, else the default one.

    Keyword `mtu` caps the ATT MTU requested at connect (23 … 247, default 247);
    the peripheral's own limit decides the final value, as on real hardware.
    """

    adapter: BumbleAdapter | None = None

    def __init__(
        self,
        address_or_ble_device: BLEDevice | str,
        *,
        bumble: BumbleAdapter | None = None,
        mtu: int = MAX_MTU,
        services: set[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            address_or_ble_device,
            disconnected_callback=kwargs.pop("disconnected_callback", None),
            timeout=kwargs.pop("timeout", 10.0),
        )
        if not 23 <= mtu <= MAX_MTU:
            raise ValueError(f"mtu must be 23 … {MAX_MTU}, got {mtu}")
        self.adapter = bumble or type(self).adapter or default_adapter()
        self._mtu_request = mtu
        self._service_filter = services
        self._peer_address: Address | None = None
        self._peer_name: str | None = None
        if isinstance(address_or_ble_device, BLEDevice):
            if isinstance(address_or_ble_device.details, Address):
                self._peer_address = address_or_ble_device.details
            self._peer_name = address_or_ble_device.name
        self._connection: Connection | None = None
        self._peer: Peer | None = None
        self._closing = False
        self._subscribers: dict[int, Callable[[bytes], None]] = {}

    @property
    def name(self) -> str:
        return self._peer_name or self.address.replace(":", "-")

    @property
    def mtu_size(self) -> int:
        return self._peer.gatt_client.mtu if self._peer else 23

    @property
    def is_connected(self) -> bool:
        return self._connection is not None

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        device = await self.adapter.device()
        address = self._peer_address or await self.adapter.find(self.address, self._timeout)
        try:
            connection = await device.connect(address, timeout=self._timeout)
        except (BaseBumbleError, asyncio.TimeoutError) as exc:  # includes a lost HCI transport
            raise BleakError(f"cannot connect to {self.address}: {exc}") from exc
        self._connection, self._peer, self._closing = connection, Peer(connection), False
        self._subscribers.clear()
        connection.on(connection.EVENT_DISCONNECTION, self._on_disconnection)
        try:
            if pair:
                await self._guard(connection.pair())
            await self._guard(self._peer.request_mtu(self._mtu_request))
            self.services = await self._discover()
        except BaseException:
            await self.disconnect()
            raise

    async def _discover(self) -> BleakGATTServiceCollection:
        """Discover all services, characteristics and descriptors into bleak's collection."""
        assert self._peer is not None
        uuids = [UUID(u) for u in self._service_filter] if self._service_filter else []
        collection = BleakGATTServiceCollection()
        for service in await self._guard(self._peer.discover_services(uuids)):
            bleak_service = BleakGATTService(service, service.handle, uuid_str(service.uuid))
            collection.add_service(bleak_service)
            for char in await self._guard(service.discover_characteristics()):
                properties = [n for flag, n in _PROPERTY_NAMES.items() if char.properties & flag]
                bleak_char = BleakGATTCharacteristic(
                    char, char.handle, uuid_str(char.uuid), properties, lambda: self.mtu_size - 3, bleak_service
                )
                collection.add_characteristic(bleak_char)
                for descriptor in await self._guard(char.discover_descriptors()):
                    collection.add_descriptor(
                        BleakGATTDescriptor(descriptor, descriptor.handle, uuid_str(descriptor.type), bleak_char)
                    )
        return collection

    def _on_disconnection(self, reason: int) -> None:
        unsolicited = not self._closing
        self._connection = self._peer = None
        self.services = None
        if unsolicited and self._disconnected_callback is not None:
            self._disconnected_callback()

    async def disconnect(self) -> None:
        connection = self._connection
        if connection is None:
            return
        self._closing = True
        done = asyncio.get_running_loop().create_future()
        connection.once(connection.EVENT_DISCONNECTION, lambda reason: done.done() or done.set_result(reason))
        try:
            await connection.disconnect()
            await asyncio.wait_for(done, self._timeout)
        except BaseBumbleError:
            pass  # already gone: the link dropped while we asked
        self._connection = self._peer = None

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        await self._guard(self._require().connection.pair())

    async def unpair(self) -> None:
        raise NotImplementedError("the bumble backend keeps no bonds to remove")

    def _require(self) -> Peer:
        if self._peer is None:
            raise BleakError("Not connected")
        return self._peer

    async def _guard(self, operation: Awaitable[_T]) -> _T:
        """Run a GATT operation; a dropped link or an ATT error becomes a bleak error."""
        connection = self._connection
        if connection is None:
            raise BleakError("Not connected")
        try:
            return await connection.cancel_on_disconnection(operation)
        except ATT_Error as exc:
            raise BleakGATTProtocolError(exc.error_code) from exc
        except asyncio.CancelledError:
            if self._connection is None:
                raise BleakError("disconnected during a GATT operation") from None
            raise

    async def read_gatt_char(self, characteristic: BleakGATTCharacteristic, **kwargs: Any) -> bytearray:
        return bytearray(await self._guard(self._require().read_value(characteristic.handle)))

    async def read_gatt_descriptor(self, descriptor: BleakGATTDescriptor, **kwargs: Any) -> bytearray:
        return bytearray(await self._guard(self._require().read_value(descriptor.handle)))

    async def write_gatt_char(self, characteristic: BleakGATTCharacteristic, data, response: bool) -> None:
        await self._guard(self._require().write_value(characteristic.handle, bytes(data), with_response=response))

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data) -> None:
        await self._guard(self._require().write_value(descriptor.handle, bytes(data), with_response=True))

    async def start_notify(self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any) -> None:
        peer = self._require()

        def subscriber(value: bytes) -> None:
            callback(bytearray(value))

        self._subscribers[characteristic.handle] = subscriber
        await self._guard(peer.subscribe(characteristic.obj, subscriber))

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        subscriber = self._subscribers.pop(characteristic.handle, None)
        if subscriber is not None:
            await self._guard(self._require().unsubscribe(characteristic.obj, subscriber))
