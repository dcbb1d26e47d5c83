"""The host side of one bumble controller: what an OS Bluetooth adapter is to bleak.

A `BumbleAdapter` owns a bumble `Device` (host stack) talking HCI to a
controller, either a virtual controller it creates on a shared `LocalLink`
(one process) or a controller served over an HCI transport such as
`tcp-client:127.0.0.1:PORT` (another process). Scanner and client backends
share it, as platform backends share the OS adapter.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from bleak.exc import BleakError
from bumble.controller import Controller
from bumble.core import BaseBumbleError
from bumble.device import Advertisement, Device
from bumble.hci import Address
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport import Transport, open_transport
from bumble.transport.common import AsyncPipeSink

#: environment variable naming the HCI transport of the default adapter
HCI_ENV = "HIMAE_BUMBLE_HCI"

AdvertisementListener = Callable[[Advertisement], None]


class BumbleAdapter:
    """A bumble host reaching a controller through a `LocalLink` or an HCI transport spec."""

    def __init__(self, hci: LocalLink | str, name: str = "himae-host") -> None:
        self.hci = hci
        self.name = name
        self._device: Device | None = None
        self._transport: Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._scan_listeners: set[AdvertisementListener] = set()

    def __repr__(self) -> str:
        return f"BumbleAdapter({self.hci!r})"

    async def device(self) -> Device:
        """The powered-on host device, opened on first use in the running event loop."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # A device belongs to the loop it was opened in; a new loop opens a new one.
            self._device, self._transport, self._loop = None, None, loop
            self._lock = asyncio.Lock()
            self._scan_listeners.clear()
        if self._transport is not None and self._transport.source.terminated.done():
            # The controller went away (e.g. the simulator exited): reopen on next use.
            self._device = self._transport = None
            self._scan_listeners.clear()
        assert self._lock is not None
        async with self._lock:
            if self._device is None:
                try:
                    self._device = await self._open()
                except BaseBumbleError as exc:
                    raise BleakError(f"bumble controller on {self.hci!r} failed: {exc}") from exc
        return self._device

    async def _open(self) -> Device:
        address = Address.generate_static_address()
        if isinstance(self.hci, LocalLink):
            controller = Controller(self.name, link=self.hci)
            host = Host(controller, AsyncPipeSink(controller))
        else:
            try:
                self._transport = await open_transport(self.hci)
            except Exception as exc:  # bumble raises plain OSError/ValueError subclasses
                raise BleakError(f"cannot open bumble HCI transport {self.hci!r}: {exc}") from exc
            host = Host(self._transport.source, self._transport.sink)
        device = Device(name=self.name, address=address, host=host)
        await device.power_on()
        return device

    async def close(self) -> None:
        """Power the host off and close its transport."""
        device, transport = self._device, self._transport
        self._device = self._transport = None
        self._scan_listeners.clear()
        if device is not None and not (transport is not None and transport.source.terminated.done()):
            await device.power_off()
        if transport is not None:
            await transport.close()

    async def start_scan(self, listener: AdvertisementListener) -> None:
        """Deliver advertisements to `listener`; (active) scanning runs while any listener is registered."""
        device = await self.device()
        if not self._scan_listeners:
            device.on(device.EVENT_ADVERTISEMENT, self._on_advertisement)
        self._scan_listeners.add(listener)
        if not device.is_scanning:
            try:
                await device.start_scanning(active=True, filter_duplicates=False)
            except BaseBumbleError as exc:
                await self.stop_scan(listener)
                raise BleakError(f"cannot scan on {self.hci!r}: {exc}") from exc

    async def stop_scan(self, listener: AdvertisementListener) -> None:
        self._scan_listeners.discard(listener)
        device = self._device
        if device is None or self._scan_listeners:
            return
        device.remove_listener(device.EVENT_ADVERTISEMENT, self._on_advertisement)
        if device.is_scanning:
            try:
                await device.stop_scanning()
            except BaseBumbleError:
                pass  # the controller is gone, so it is not scanning either

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        for listener in list(self._scan_listeners):
            listener(advertisement)

    async def find(self, address: str, timeout: float) -> Address:
        """Scan until `address` advertises; return it with its address type."""
        wanted = address.upper()
        found: asyncio.Future[Address] = asyncio.get_running_loop().create_future()

        def listener(advertisement: Advertisement) -> None:
            if not found.done() and address_string(advertisement.address) == wanted:
                found.set_result(advertisement.address)

        await self.start_scan(listener)
        try:
            return await asyncio.wait_for(found, timeout)
        except asyncio.TimeoutError:
            raise BleakError(f"device {address} not found within {timeout:g} s") from None
        finally:
            await self.stop_scan(listener)


def address_string(address: Address) -> str:
    """The `AA:BB:CC:DD:EE:FF` form bleak uses, without bumble's type suffix."""
    return address.to_string(with_type_qualifier=False).upper()


_default: BumbleAdapter | None = None
_from_environment: dict[str, BumbleAdapter] = {}  # one adapter per $HIMAE_BUMBLE_HCI value


def set_default_adapter(adapter: BumbleAdapter | LocalLink | str | None) -> BumbleAdapter | None:
    """Make `adapter` (or a link / HCI spec) the one backends use when given none."""
    global _default
    if adapter is not None and not isinstance(adapter, BumbleAdapter):
        adapter = BumbleAdapter(adapter)
    _default = adapter
    return adapter


def default_adapter() -> BumbleAdapter:
    """The adapter set by `set_default_adapter`, else one on the transport named by $HIMAE_BUMBLE_HCI."""
    if _default is not None:
        return _default
    spec = os.environ.get(HCI_ENV)
    if not spec:
        raise BleakError(
            f"no bumble controller configured: set {HCI_ENV}=tcp-client:HOST:PORT "
            "or call himae_stream.bumble_backend.set_default_adapter()"
        )
    if spec not in _from_environment:
        _from_environment[spec] = BumbleAdapter(spec)
    return _from_environment[spec]
