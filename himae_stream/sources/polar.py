"""Polar sensors (Verity Sense, OH1, H10) through their PMD service, over bleak.

Connection, scanning, backoff and the bounded queue are `BleConnection`'s.
Each connection asks the sensor for its settings, picks the requested (or
the best offered) ones and starts the measurement, so a reconnect restarts
the stream. PMD frames carry no sequence number: each sample's index is
counted on from the last frame, and a frame whose first sample comes later
than the next one due (a lost notification, a reconnect) shows as that many
lost samples. A PPG frame's first channel is derived, the mean of the three
PPG channels, so the pipeline's channel rule reads it by default.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from bleak import BleakClient

from himae_stream import pmd
from himae_stream.pmd import Command, Measurement, Op, Setting, Status
from himae_stream.protocol import SEQ_MODULUS, Packet, SampleFormat, StreamInfo
from himae_stream.samplestream import Received
from himae_stream.sources.ble import BleConnection, DeviceRefused

STREAMS = {"ppg": Measurement.PPG, "ecg": Measurement.ECG, "acc": Measurement.ACC}
#: a frame that starts this long after the previous one ended is a new stream, not a gap
MAX_GAP_S = 3600.0


def stream_channels(stream: str) -> tuple[str, ...]:
    """The channels of a PMD stream as the source delivers them (PPG: the mean of the three first)."""
    if STREAMS[stream] == Measurement.PPG:
        return ("PPG", "PPG0", "PPG1", "PPG2", "AMBIENT")
    return pmd.LAYOUTS[STREAMS[stream], 0x01 if STREAMS[stream] == Measurement.ACC else 0x00].names


class PolarSource(BleConnection):
    """Samples of one PMD measurement (`stream`: ppg, ecg or acc) from a Polar sensor."""

    service = pmd.PMD_SERVICE_UUID

    def __init__(self, *args: Any, stream: str = "ppg", fs: int | None = None, range_g: int | None = None,
                 channels: list[str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if stream not in STREAMS:
            raise ValueError(f"stream must be one of {', '.join(STREAMS)}, got {stream!r}")
        self.measurement = STREAMS[stream]
        every = stream_channels(stream)
        unknown = [c for c in channels or () if c not in every]
        if unknown:
            raise ValueError(f"{stream} has no channel {', '.join(unknown)} (it has {', '.join(every)})")
        #: rows of a decoded frame the stream keeps, in the order asked
        self._keep = [every.index(c) for c in channels] if channels else list(range(len(every)))
        self.fs_wanted = fs
        self.range_wanted = range_g
        self.counters.update(malformed=0, unknown_frames=0, clock_resets=0, restarts=0)
        self._responses: asyncio.Queue = asyncio.Queue()
        self._fs: float | None = None
        self._next = 0  # index of the next sample due
        self._last_ns: int | None = None  # timestamp of the last sample delivered

    async def __aiter__(self) -> AsyncIterator[Received]:
        async for batch in self._batches():
            yield Received(batch[-1][0], [packet for _, packet in batch])

    # ------------------------------------------------------------ control point
    async def _subscribe(self, client: BleakClient, generation: int) -> None:
        self._responses = asyncio.Queue()
        responses = self._responses

        def on_response(_char: object, data: bytearray) -> None:
            if generation == self._generation:
                responses.put_nowait(bytes(data))

        await client.start_notify(pmd.PMD_CONTROL_UUID, on_response)
        offered = pmd.decode_features(await client.read_gatt_char(pmd.PMD_CONTROL_UUID))
        if self.measurement not in offered:
            names = ", ".join(m.name for m in sorted(offered)) or "nothing"
            raise DeviceRefused(f"Polar {self.describe()} streams {names}, not {self.measurement.name}")
        available = (await self._command(client, Command(Op.GET_SETTINGS, self.measurement))).parameters
        settings = self._choose(available)
        fs = float(settings[Setting.SAMPLE_RATE][0])
        if self._fs is not None and fs != self._fs:  # another rate after a reconnect: a new stream
            self.counters["restarts"] += 1
            self._last_ns = None
        self._fs = fs  # frames may arrive before START is answered
        self.info = StreamInfo(fs, self._names(), (1.0,) * len(self._names()), SampleFormat.FLOAT32,
                               (self._unit(),) * len(self._names()), device=self.name or self.address or "")
        await client.start_notify(pmd.PMD_DATA_UUID, self._callback(generation, self._on_frame))
        response = await self._command(client, Command(Op.START, self.measurement, settings), check=False)
        if response.status == Status.ALREADY_IN_STATE:  # still streaming from before: start it afresh
            await self._command(client, Command(Op.STOP, self.measurement))
            response = await self._command(client, Command(Op.START, self.measurement, settings), check=False)
        self._check(response)

    async def _command(self, client: BleakClient, command: Command, check: bool = True) -> pmd.Response:
        await client.write_gatt_char(pmd.PMD_CONTROL_UUID, pmd.encode_command(command), response=True)
        while True:
            response = pmd.decode_response(await asyncio.wait_for(self._responses.get(), self.connect_timeout_s))
            if response.op == command.op:  # an unsolicited indication (e.g. "measurement stopped") is skipped
                break
        if check:
            self._check(response)
        return response

    def _check(self, response: pmd.Response) -> None:
        if response.status != Status.SUCCESS:
            raise DeviceRefused(f"Polar {self.describe()}: {response.op.name} {response.measurement.name} "
                                f"refused: {response.status.name}")

    def _choose(self, available: pmd.Settings) -> pmd.Settings:
        """One value of each offered setting: the asked rate and range, else the highest rate and the
        first range offered; a value the sensor does not offer is refused with what it offers."""
        settings = {s: (max(v) if s == Setting.SAMPLE_RATE else v[0],) for s, v in available.items()
                    if s != Setting.FACTOR and v}
        for setting, wanted in ((Setting.SAMPLE_RATE, self.fs_wanted), (Setting.RANGE, self.range_wanted)):
            if wanted is None:
                continue
            if wanted not in available.get(setting, ()):
                offered = ", ".join(map(str, available.get(setting, ()))) or "none"
                raise DeviceRefused(f"Polar {self.describe()} {self.measurement.name}: {setting.name.lower()} "
                                    f"{wanted} not offered ({offered})")
            settings[setting] = (wanted,)
        if Setting.SAMPLE_RATE not in settings:
            raise DeviceRefused(f"Polar {self.describe()} offers no sample rate for {self.measurement.name}")
        return settings

    def _names(self) -> tuple[str, ...]:
        every = stream_channels(self.measurement.name.lower())
        return tuple(every[i] for i in self._keep)

    def _unit(self) -> str:
        return {Measurement.ECG: "uV", Measurement.ACC: "mg"}.get(self.measurement, "")

    # ------------------------------------------------------------ data
    def _on_frame(self, data: bytes, host_time: float) -> tuple[float, Packet] | None:
        assert self._fs is not None  # set before the data characteristic is subscribed
        try:
            frame = pmd.decode_frame(data)
        except pmd.UnknownFrame:
            self.counters["unknown_frames"] += 1
            return None
        except pmd.PmdError:
            self.counters["malformed"] += 1
            return None
        if frame.measurement != self.measurement:
            self.counters["unknown_frames"] += 1
            return None
        samples = frame.samples.T.astype(np.float32)
        if self.measurement == Measurement.PPG:
            samples = np.vstack([frame.samples[:, :3].mean(axis=1, dtype=np.float64).astype(np.float32), samples])
        samples = samples[self._keep]
        n = samples.shape[1]
        first_ns = int(pmd.sample_times_ns(frame.timestamp_ns, n, self._fs)[0])
        index = self._index(first_ns)
        self._next, self._last_ns = index + n, frame.timestamp_ns
        packet = Packet(index % SEQ_MODULUS, first_ns // 1000, self._fs, samples, (1.0,) * samples.shape[0],
                        SampleFormat.FLOAT32)
        return host_time, packet

    def _index(self, first_ns: int) -> int:
        """The stream index of a frame's first sample: the next one due, plus the samples its
        timestamp says were missed; a clock that went back (or a day away) counts on without a gap."""
        if self._last_ns is None:
            return self._next
        missed = round((first_ns - self._last_ns) * self._fs / 1e9) - 1
        if not 0 <= missed <= MAX_GAP_S * self._fs:
            self.counters["clock_resets"] += 1
            return self._next
        return self._next + missed
