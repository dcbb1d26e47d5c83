"""BLE source: the custom GATT sample service through bleak.

`backend` goes straight to bleak (`BleakClient(..., backend=)`), so any
bleak backend plugs in, e.g. the project's bumble backend for the firmware
simulator; a value with `.client` and `.scanner` attributes sets both.
After a disconnect the source reconnects with exponential backoff and
jitter, up to `max_reconnects` tries in a row; each reconnect is counted and
the samples missed meanwhile surface as an exact gap in the sequence
numbers, never bridged. Every connection gets a fresh client and callback,
and notifications from an older connection are ignored, so callbacks are
never doubled. `close()`, from any task, ends the iteration at once after
what had already arrived.
"""

from __future__ import annotations

import asyncio
import fnmatch
from abc import abstractmethod
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError

from himae_stream.protocol import (
    CONTROL_CHAR_UUID,
    INFO_CHAR_UUID,
    SAMPLES_CHAR_UUID,
    SERVICE_UUID,
    ControlCommand,
    ControlOp,
    NotificationDecoder,
    Packet,
    ProtocolError,
    decode_info,
    encode_control,
)
from himae_stream.samplestream import Received
from himae_stream.sources.base import Source, SourceError

class DeviceRefused(SourceError):
    """The device answered, and no retry changes the answer (it lacks a measurement, refuses a setting)."""


_DISCONNECTED = object()
_CLOSED = object()  # queued by close(): what arrived before it is still delivered, then iteration ends


class BleConnection(Source):
    """Scanning, connecting, backoff and the bounded notification queue;
    subclasses subscribe to their characteristics in `_subscribe`."""

    service: str = SERVICE_UUID

    def __init__(
        self,
        address: str | None = None,
        name: str | None = None,
        service: str | None = None,
        backend: Any = None,
        *,
        scan_timeout_s: float = 10.0,
        connect_timeout_s: float = 10.0,
        idle_timeout_s: float = 5.0,
        max_reconnects: int = 5,
        backoff_s: float = 0.5,
        backoff_max_s: float = 8.0,
        queue_size: int = 4096,
        seed: int | None = None,
    ):
        super().__init__()
        self.address = address
        self.name = name
        if service is not None:
            self.service = service
        self.client_backend = getattr(backend, "client", backend)
        self.scanner_backend = getattr(backend, "scanner", None)
        self.scan_timeout_s = scan_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.max_reconnects = max_reconnects
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.counters.update(
            connects=0, reconnects=0, connect_failures=0, disconnects=0,
            idle_timeouts=0, notifications=0, stale_notifications=0, overflow_drops=0,
        )
        self._queue: asyncio.Queue = asyncio.Queue()
        self._queue_size = queue_size
        self._random = random.Random(seed)
        self._client: BleakClient | None = None
        self._generation = 0
        self._closed = False

    def backoff(self, attempt: int) -> float:
        """Delay before try `attempt` (1, 2, ...): exponential, capped, with full jitter on top half."""
        base = min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1))
        return base / 2 + self._random.uniform(0, base / 2)

    async def _find(self) -> BLEDevice | str:
        if self.address and self.scanner_backend is None:
            return self.address
        kwargs = {"backend": self.scanner_backend} if self.scanner_backend else {}
        device = await BleakScanner.find_device_by_filter(self._matches, timeout=self.scan_timeout_s, **kwargs)
        if device is None:
            raise SourceError(f"no BLE device matching {self.describe()} found")
        return device

    def _matches(self, device: BLEDevice, adv: AdvertisementData) -> bool:
        if self.address:
            return device.address.lower() == self.address.lower()
        if self.name:
            return fnmatch.fnmatchcase(adv.local_name or device.name or "", self.name)
        return self.service.lower() in (u.lower() for u in adv.service_uuids)

    def describe(self) -> str:
        if self.address:
            return f"address {self.address}"
        return f"name {self.name!r}" if self.name else f"service {self.service}"

    def _put(self, item: object) -> None:
        while self._queue.qsize() >= self._queue_size:
            self._queue.get_nowait()
            self.counters["overflow_drops"] += 1
        self._queue.put_nowait(item)

    def _callback(self, generation: int, handle: Callable[[bytes, float], object | None]) -> Callable:
        def on_notify(_char: object, data: bytearray) -> None:
            if generation != self._generation:
                self.counters["stale_notifications"] += 1
                return
            self.counters["notifications"] += 1
            item = handle(bytes(data), time.monotonic())
            if item is not None:
                self._put(item)

        return on_notify

    async def _connect(self) -> None:
        target = await self._find()
        self._generation += 1
        generation = self._generation

        def on_disconnect(_client: BleakClient) -> None:
            if generation == self._generation:
                self._put(_DISCONNECTED)

        kwargs = {"backend": self.client_backend} if self.client_backend else {}
        client = BleakClient(target, disconnected_callback=on_disconnect, timeout=self.connect_timeout_s, **kwargs)
        await client.connect()
        self._client = client
        try:
            await self._subscribe(client, generation)
        except BaseException:
            await self._disconnect()
            raise

    @abstractmethod
    async def _subscribe(self, client: BleakClient, generation: int) -> None:
        """Subscribe to this source's characteristics with `self._callback(generation, ...)`."""

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        self._generation += 1  # late callbacks of that connection are now stale
        if client is not None:
            try:
                await client.disconnect()
            except (BleakError, OSError, asyncio.TimeoutError):
                pass

    async def _batches(self) -> AsyncIterator[list]:
        """Queued items, all those waiting at once: a consumer that falls behind
        gets bigger batches instead of a growing queue."""
        attempt = 0
        try:
            while not self._closed:
                try:
                    await self._connect()
                except DeviceRefused:
                    raise
                except (BleakError, SourceError, ProtocolError, OSError, asyncio.TimeoutError) as exc:
                    if self._closed:
                        break  # closed while connecting: not a failure; what arrived is handed on below
                    if isinstance(exc, FileNotFoundError) and self.client_backend is None:
                        # bleak found no system bus to reach BlueZ through: no retry brings one
                        raise SourceError(f"BLE {self.describe()}: this machine has no Bluetooth service to ask "
                                          f"(BlueZ over D-Bus: {exc.strerror or exc}); a virtual controller is "
                                          "reached with ?hci=... (himae sim --transport ble prints one)") from exc
                    attempt += 1
                    self.counters["connect_failures"] += 1
                    if attempt > self.max_reconnects:
                        raise SourceError(f"BLE {self.describe()}: giving up after {attempt} tries: {exc}") from exc
                    await asyncio.sleep(self.backoff(attempt))
                    continue
                self.counters["connects"] += 1
                self.counters["reconnects"] = self.counters["connects"] - 1
                attempt = 0
                while True:
                    try:
                        batch = [await asyncio.wait_for(self._queue.get(), self.idle_timeout_s)]
                    except asyncio.TimeoutError:
                        batch = [_DISCONNECTED]  # a silent link is treated as a lost one
                        self.counters["idle_timeouts"] += 1
                    while batch[-1] is not _DISCONNECTED and batch[-1] is not _CLOSED and not self._queue.empty():
                        batch.append(self._queue.get_nowait())
                    end = batch[-1]
                    if end is _DISCONNECTED or end is _CLOSED:
                        batch.pop()
                    if batch:
                        yield batch
                    if end is _CLOSED:
                        return
                    if end is _DISCONNECTED:
                        self.counters["disconnects"] += 1
                        await self._disconnect()
                        break
            # A device may stream as soon as it is subscribed, before the connection is set up
            # (START acknowledged): samples that arrived before a close are still delivered.
            leftover = []
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if item is not _DISCONNECTED and item is not _CLOSED:
                    leftover.append(item)
            if leftover:
                yield leftover
        finally:
            await self.close()

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(_CLOSED)  # wakes an iteration waiting for the next notification
        await self._disconnect()


class BleSource(BleConnection):
    """Packets from the custom sample service (notifications rebuilt by `NotificationDecoder`)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.counters.update(malformed=0, unsynced=0)
        self._decoder: NotificationDecoder | None = None

    async def _subscribe(self, client: BleakClient, generation: int) -> None:
        # the device may describe a different stream after a reconnect (new rate,
        # channels): SampleStream sees the change and counts a restart
        self.info = decode_info(await client.read_gatt_char(INFO_CHAR_UUID))
        if self._decoder is None:
            self._decoder = NotificationDecoder(self.info)
        self._decoder.reset(self.info)  # the device re-sends a sync point after connecting
        await client.start_notify(SAMPLES_CHAR_UUID, self._callback(generation, self._on_samples))
        await client.write_gatt_char(CONTROL_CHAR_UUID, encode_control(ControlCommand(ControlOp.START)), response=True)

    async def __aiter__(self) -> AsyncIterator[Received]:
        async for batch in self._batches():
            # the newest notification's own arrival time pairs with the newest packet
            yield Received(batch[-1][0], [packet for _, packet in batch])

    def _on_samples(self, data: bytes, host_time: float) -> tuple[float, Packet] | None:
        assert self._decoder is not None
        packet = self._decoder.feed(data)
        self.counters["malformed"] = self._decoder.counters["malformed"]
        self.counters["unsynced"] = self._decoder.counters["unsynced"]
        return None if packet is None else (host_time, packet)
