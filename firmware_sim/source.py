"""`sim://` sources: a simulated device and the runtime's own reader for it, as one source.

`sim://RECORDING?transport=serial|ble|text-serial|bitalino|shimmer|polar-verity|polar-h10&speed=10&...`
starts the simulator in this process and reads it through the real
transport (`SerialSource` on a pty, `BleSource` or `PolarSource` over
bumble), so a pipeline runs
end to end without hardware. The source ends once the replay is over and
its reader has everything the device sent.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from functools import partial
from typing import TYPE_CHECKING

from firmware_sim.device import ThreadedDevice
from firmware_sim.faults import NUMBERS as FAULT_NUMBERS, FaultConfig, Faults
from firmware_sim.options import (
    BLE_DEVICES, COMMANDED_DEVICES, DELIMITERS, NUMBERS, SimOptions, TextBoard, build_ble_device, build_model,
    commanded_device,
)
from himae_stream.samplestream import Received
from himae_stream.sources.base import Source

if TYPE_CHECKING:
    from himae_stream.urls import ParsedUrl

#: The source ends once the device has sent everything and the reader has counted as much
#: (bytes, notifications) as the device sent; failing that, after this many seconds of
#: silence once the replay has ended.
END_GRACE_S = 2.0

_SETTINGS = ("fs", "duration", "drift_ppm", "jitter_us", "frame_ms", "interval_ms", "baud", "mtu")
_TEXT_PARAMS = {"channels", "format", "name"}
#: How a text-serial board prints: `header`, `millis`, `plotter` are 0/1, `delimiter` a `DELIMITERS` name.
_BOARD_PARAMS = {"header", "delimiter", "millis", "plotter", "garbage"}
TRANSPORTS = ("serial", "text-serial", *COMMANDED_DEVICES, *BLE_DEVICES)


def open_url(url: ParsedUrl) -> SimSource:
    """The source a `sim://` URL names (registered for the `sim` scheme)."""
    url.check_params({*FAULT_NUMBERS, *_SETTINGS, *_TEXT_PARAMS, *_BOARD_PARAMS, "seed", "speed", "transport",
                      "loop"})
    transport = url.get("transport", "serial")
    if transport not in TRANSPORTS:
        raise ValueError(f"{url.text}: transport must be {', '.join(TRANSPORTS)}, got {transport!r}")

    def given(names) -> dict:
        return {k: url.number(k, None, NUMBERS[k]) for k in names if url.get(k) is not None}

    seed = url.number("seed", 1, NUMBERS["seed"])
    options = SimOptions(
        recording=url.path,
        speed=url.number("speed", 1.0, NUMBERS["speed"]),
        loop=_flag(url, "loop", False),
        seed=seed,
        faults=FaultConfig(seed=seed, **given(FAULT_NUMBERS)),
        fmt=url.get("format", "int16"),
        **given(_SETTINGS),
        **{k: url.get(k) for k in ("channels", "name") if url.get(k) is not None},
        board=_board(url),
    )
    return SimSource(options, transport)


def _flag(url: ParsedUrl, key: str, default: bool) -> bool:
    value = url.get(key)
    return default if value is None else value.lower() in ("1", "true", "yes")


def _board(url: ParsedUrl) -> TextBoard:
    delimiter = url.get("delimiter", "comma")
    if delimiter not in DELIMITERS:
        raise ValueError(f"{url.text}: delimiter must be one of {', '.join(DELIMITERS)}, got {delimiter!r}")
    return TextBoard(header=_flag(url, "header", True), delimiter=DELIMITERS[delimiter],
                     millis=_flag(url, "millis", False), plotter=_flag(url, "plotter", False),
                     garbage=url.number("garbage", 0.0, NUMBERS["garbage"]))


def _in_daemon_thread(wait) -> asyncio.Future:
    """`wait()` in a daemon thread, as a future of the running loop. A default-executor job would
    hold up the loop's shutdown for as long as it blocks: a device still replaying (looped, or
    stopped late by an interrupted cleanup) would keep `asyncio.run` from returning."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(result, error) -> None:
        if not future.done():
            future.set_exception(error) if error is not None else future.set_result(result)

    def run() -> None:
        result, error = None, None
        try:
            result = wait()
        except BaseException as exc:  # handed to whoever awaits the future
            error = exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:
            pass  # the loop has closed: nobody is waiting any more

    threading.Thread(target=run, name="firmware-sim-wait", daemon=True).start()
    return future


class SimSource(Source):
    """Runs a simulated device and yields what the runtime's reader gets from it."""

    def __init__(self, options: SimOptions, transport: str = "serial") -> None:
        super().__init__()
        self.options = options
        self.transport = transport
        self.model = build_model(options)  # fail early on a bad recording or option
        self.device = None  # SerialDevice or BleDevice once running; its `log` names every drop
        self._inner: Source | None = None

    async def __aiter__(self) -> AsyncIterator[Received]:
        if self.transport in ("serial", "text-serial", *COMMANDED_DEVICES):
            inner, finish, all_read, stop = self._start_serial()
        else:
            inner, finish, all_read, stop = await self._start_ble()
        self._inner = inner
        self.counters = inner.counters
        # A serial reader hands on what it reads at once; a BLE reader queues notifications, so it
        # is closed instead and drained: what it has queued still comes, then its iteration ends.
        drains = self.transport in BLE_DEVICES
        iterator = aiter(inner)
        pending: asyncio.Future | None = None
        finished = asyncio.ensure_future(finish)
        closing = False
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(anext(iterator))
                waiting = {pending} if finished.done() else {pending, finished}
                timeout = END_GRACE_S if finished.done() else None
                done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if not done:  # the replay is over and nothing came for END_GRACE_S
                    break
                if pending in done:
                    try:
                        item = pending.result()
                    except StopAsyncIteration:
                        break
                    pending = None
                    self.info = inner.info
                    yield item
                if finished.done() and not closing:
                    finished.result()  # a failure of the device is raised here
                    if all_read():
                        if not drains:
                            break
                        closing = True
                        await inner.close()
        finally:
            if isinstance(self.device, ThreadedDevice):  # first, before anything here can be cancelled
                self.device.request_stop()
            for future in (pending, finished):
                if future is not None and not future.done():
                    future.cancel()
                    await asyncio.gather(future, return_exceptions=True)
            await inner.close()
            await stop()

    def _start_serial(self):
        from firmware_sim.serial_device import SerialDevice
        from firmware_sim.text_device import TextSerialDevice
        from himae_stream.sources.serial import SerialSource
        from himae_stream.sources.textlines import TextLineReader

        o = self.options
        if self.transport in COMMANDED_DEVICES:
            device, reader, _ = commanded_device(self.transport, self.model, o)
            kwargs = {"reader": reader}
        elif self.transport == "text-serial":
            device = TextSerialDevice(self.model, o.board, Faults(o.faults), o.speed, o.baud)
            # a board with a timestamp column and a header tells its rate: the reader estimates it
            fs = None if o.board.millis and (o.board.header or o.board.plotter) else self.model.fs
            kwargs = {"reader": partial(TextLineReader, fs=fs)}
        else:
            device, kwargs = SerialDevice(self.model, Faults(o.faults), o.speed, o.baud, o.frame_ms), {}
        self.device = device
        device.start()

        async def stop() -> None:
            await asyncio.get_running_loop().run_in_executor(None, device.close)

        # the simulated device keeps its pty for the whole replay: nothing to reopen
        source = SerialSource(device.path, o.baud, idle_timeout_s=None, reconnect_timeout_s=None, **kwargs)
        finish = _in_daemon_thread(device.wait)
        return source, finish, lambda: source.counters.get("bytes", 0) >= device.written, stop

    async def _start_ble(self):
        from bumble.link import LocalLink

        from himae_stream.bumble_backend import BumbleBackend
        from himae_stream.sources.ble import BleSource
        from himae_stream.sources.polar import PolarSource

        o = self.options
        link = LocalLink()
        device = build_ble_device(o, link, self.transport)
        self.device = device
        await device.start()
        backend = BumbleBackend.bound(link)
        # Device, radio and reader share this event loop and nothing throttles an unpaced
        # device, so the reader may queue the whole replay rather than overflow.
        queue = 1 << 17 if o.speed is None else 4096
        if self.transport == "ble":
            source = BleSource(name=o.name, backend=backend, queue_size=queue)
        else:  # a Polar sensor streams its first measurement: PPG (Verity Sense) or ECG (H10)
            stream = device.measurement.name.lower()
            source = PolarSource(name=o.name, backend=backend, queue_size=queue, stream=stream)

        def all_read() -> bool:
            received = source.counters["notifications"] + source.counters["stale_notifications"]
            return received >= device.log.counters.get("notifications", 0)

        return source, device.finished.wait(), all_read, device.stop

    async def close(self) -> None:
        if isinstance(self.device, ThreadedDevice):
            self.device.request_stop()
        if self._inner is not None:
            await self._inner.close()
