"""Heart-rate source: the standard Heart Rate Service (0x180D / 0x2A37) over bleak.

Yields `HeartRateReading`s (host arrival time and the decoded measurement);
connection handling, backoff and counters are those of the BLE sample source.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import NamedTuple

from bleak import BleakClient

from himae_stream.protocol import (
    HEART_RATE_MEASUREMENT_UUID,
    HEART_RATE_SERVICE_UUID,
    HeartRateMeasurement,
    ProtocolError,
    decode_heart_rate,
)
from himae_stream.sources.ble import BleConnection


class HeartRateReading(NamedTuple):
    host_time: float
    measurement: HeartRateMeasurement


class HeartRateSource(BleConnection):
    """Heart Rate Measurement notifications from a standard HR sensor."""

    service = HEART_RATE_SERVICE_UUID

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.counters.update(malformed=0)

    async def __aiter__(self) -> AsyncIterator[HeartRateReading]:
        async for batch in self._batches():
            for reading in batch:
                yield reading

    async def _subscribe(self, client: BleakClient, generation: int) -> None:
        await client.start_notify(HEART_RATE_MEASUREMENT_UUID, self._callback(generation, self._on_measurement))

    def _on_measurement(self, data: bytes, host_time: float) -> HeartRateReading | None:
        try:
            return HeartRateReading(host_time, decode_heart_rate(data))
        except ProtocolError:
            self.counters["malformed"] += 1
            return None
