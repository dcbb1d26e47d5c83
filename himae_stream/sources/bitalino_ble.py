"""A BITalino (r)evolution BLE, live: `ble://name=BITalino*?format=bitalino&fs=100&channels=A3`.

Its BLE module bridges the board's serial line (`himae_stream/bitalino.py`): a
command is written to the commands characteristic, and the board's bytes, its
answers and its frames, come as notifications of the frames characteristic, cut
wherever a notification's payload ends. So the bytes go through the serial
reader (`BitalinoReader`: frame boundaries, CRC, the sequence number's turns),
and each connection starts the board as a serial port's opening does: a board
still acquiring for a host that went away is stopped, its version asked (no
BITalino's answer ends the run in one line; no answer at all is tried again
like a failed connection), its rate set and its inputs started. Closing the
source stops the board. After a reconnect the board counts from 0 again: the
time away is lost samples, as after a serial port's reopen.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from bleak import BleakClient
from bleak.exc import BleakError

from himae_stream import bitalino
from himae_stream.samplestream import Received
from himae_stream.sources.base import SourceError
from himae_stream.sources.bitalino import ANSWER_S, COMMAND_GAP_S, STILL_STREAMING_S, BitalinoReader, version_said
from himae_stream.sources.ble import BleConnection, DeviceRefused

#: how long closing the source waits for the stop command to be acknowledged
STOP_S = 1.0


class BitalinoBleSource(BleConnection):
    """Packets of a BITalino's analog inputs over BLE; `reader` makes the `BitalinoReader` (rate, inputs)
    from the counters."""

    service = bitalino.BLE_SERVICE_UUID

    def __init__(self, *args: Any, reader: Callable[[dict[str, int]], BitalinoReader] = BitalinoReader,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._reader = reader(self.counters)
        self._answer: bytearray | None = None  # the board's bytes while the connection's set-up reads them
        self._answered = asyncio.Event()
        self._stopping = False

    async def _subscribe(self, client: BleakClient, generation: int) -> None:
        self._answer = bytearray()
        await client.start_notify(bitalino.BLE_FRAMES_UUID, self._callback(generation, self._on_bytes))
        await asyncio.sleep(STILL_STREAMING_S)
        if self._answer:  # acquiring for a host that went away
            await self._command(client, bitalino.STOP)
            await asyncio.sleep(COMMAND_GAP_S)
            self.counters["bytes"] += len(self._answer)
        self._answer = bytearray()
        self._answered.clear()
        await self._command(client, bitalino.VERSION)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._answered.wait(), ANSWER_S)
        answer, self._answer = bytes(self._answer), None
        try:
            self._reader.answered(answer, f"BLE {self.describe()}")
        except SourceError as exc:
            if answer:  # something else answered: no retry makes it a BITalino
                raise DeviceRefused(str(exc)) from None
            raise
        for command in self._reader.commands():
            await asyncio.sleep(COMMAND_GAP_S)
            await self._command(client, command)

    @staticmethod
    async def _command(client: BleakClient, command: int) -> None:
        await client.write_gatt_char(bitalino.BLE_COMMANDS_UUID, bytes([command]), response=True)

    def _on_bytes(self, data: bytes, host_time: float) -> tuple | None:
        if self._answer is not None:
            self._answer += data
            if version_said(self._answer):
                self._answered.set()
            return None
        packets = self._reader.feed(data)
        self.info = self._reader.info
        return host_time, packets  # every notification is an arrival, with or without a whole frame in it

    async def __aiter__(self) -> AsyncIterator[Received]:
        async for batch in self._batches():
            yield Received(batch[-1][0], [packet for _, packets in batch for packet in packets])

    async def close(self) -> None:
        """Stop the board, so it is idle for whoever connects next, then close."""
        client = self._client
        if client is not None and not self._closed and not self._stopping:
            self._stopping = True  # once: idle, 0x00 would set the battery threshold
            with contextlib.suppress(BleakError, OSError, asyncio.TimeoutError):  # the link may be gone already
                await asyncio.wait_for(self._command(client, bitalino.STOP), STOP_S)
        await super().close()
