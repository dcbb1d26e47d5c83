"""Polar sensors on the simulated radio: the PMD service as a Verity Sense or an H10 offers it.

The device answers the PMD control point (feature read; get settings, start
and stop, with the error statuses a real sensor gives) and streams PMD data
frames of a real sensor's size: a frame is sent once the samples buffered
since the last one fill the negotiated ATT payload (raw frames: whole
samples; delta-compressed frames: one delta block as wide as its deltas).
Pacing, MTU, seeded notification loss, link-down windows, the Heart Rate
Service and the drop log are those of `BleDevice`. One measurement streams
at a time; a link loss stops it, as on a real sensor, until it is started again.

What it streams: PPG from the recording (three channels at small gain and
offset differences with seeded noise, ambient low and flat), ECG from the
recording in µV (taken to be in mV), and ACC as a still wearable
(gravity on z, seeded noise), each at the device's rate.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from bumble.device import Connection
from bumble.gatt import Characteristic, CharacteristicValue, Service

from firmware_sim.ble_device import BLE_FATES, BleDevice
from firmware_sim.device import DeviceConfig, DeviceModel
from firmware_sim.faults import Fate
from himae_stream import pmd
from himae_stream.pmd import Command, Frame, Measurement, Op, Response, Setting, Status
from himae_stream.protocol import SampleFormat
from himae_stream.recordings import Recording

#: PPG codes: per-channel offset and gain, noise (codes, standard deviation), amplitude of the pulse
PPG_OFFSETS = (-500_000.0, -480_000.0, -470_000.0)
PPG_GAINS = (1.0, 0.97, 1.03)
PPG_NOISE = 20.0
PPG_AMPLITUDE = 100_000.0
AMBIENT = -650_000.0
ACC_NOISE_MG = 5.0


def ppg_signals(rec: Recording, fs: float, rng: np.random.Generator) -> np.ndarray:
    """Three PPG channels and ambient light, in ADC codes, from the recording's first channel."""
    x = rec.resampled(fs).signals[0]
    finite = x[np.isfinite(x)]
    center = float(np.median(finite)) if finite.size else 0.0
    spread = float(np.percentile(np.abs(finite - center), 99)) if finite.size else 1.0
    u = (x - center) / (spread or 1.0)
    ppg = [off + gain * PPG_AMPLITUDE * u + rng.normal(0, PPG_NOISE, x.size) for off, gain in zip(PPG_OFFSETS, PPG_GAINS)]
    return np.stack([*ppg, AMBIENT + rng.normal(0, PPG_NOISE, x.size)])


def ecg_signals(rec: Recording, fs: float, rng: np.random.Generator) -> np.ndarray:
    """The recording's first channel in µV (a recording's ECG is in mV)."""
    return rec.resampled(fs).signals[:1] * 1000.0


def acc_signals(rec: Recording, fs: float, rng: np.random.Generator) -> np.ndarray:
    """A still wearable: 1 g on z, noise on every axis (mg)."""
    n = int(round(rec.duration_s * fs))
    return rng.normal(0, ACC_NOISE_MG, (3, n)) + np.array([[0.0], [0.0], [1000.0]])


@dataclass(frozen=True)
class Profile:
    """A Polar sensor: what it is called and the measurements it streams."""

    name: str
    streams: dict[Measurement, tuple[dict, int, Callable]]


PROFILES = {
    "polar-verity": Profile("Polar Sense SIM00001", {
        Measurement.PPG: ({Setting.SAMPLE_RATE: (55,), Setting.RESOLUTION: (22,), Setting.CHANNELS: (4,)}, 0x80,
                          ppg_signals),
        Measurement.ACC: ({Setting.SAMPLE_RATE: (52,), Setting.RESOLUTION: (16,), Setting.RANGE: (8,),
                           Setting.CHANNELS: (3,)}, 0x81, acc_signals),
    }),
    "polar-h10": Profile("Polar H10 SIM00001", {
        Measurement.ECG: ({Setting.SAMPLE_RATE: (130,), Setting.RESOLUTION: (14,)}, 0x00, ecg_signals),
        Measurement.ACC: ({Setting.SAMPLE_RATE: (200, 25, 50, 100), Setting.RESOLUTION: (16,),
                           Setting.RANGE: (8, 2, 4)}, 0x01, acc_signals),
    }),
}
#: the status a START gets for each setting whose value the device does not offer
_BAD_SETTING = {Setting.SAMPLE_RATE: Status.INVALID_SAMPLE_RATE, Setting.RESOLUTION: Status.INVALID_RESOLUTION,
                Setting.RANGE: Status.INVALID_RANGE, Setting.CHANNELS: Status.INVALID_NUMBER_OF_CHANNELS}


class PolarDevice(BleDevice):
    """A simulated Polar sensor (`profile` from `PROFILES`) replaying `recording`."""

    service_uuid = pmd.PMD_SERVICE_UUID

    def __init__(self, recording: Recording, profile: str, link, *, config: DeviceConfig | None = None, **kwargs):
        self.profile = PROFILES[profile]
        self.recording = recording
        self.config = config or DeviceConfig(name=self.profile.name)
        self.measurement = next(iter(self.profile.streams))  # what the model samples (the last started)
        self.settings = self._defaults(self.measurement)
        self.started = asyncio.Event()  # a measurement is streaming
        self._pending = 0  # first stream index neither sent nor logged as dropped
        self._switch: tuple[Measurement, dict] | None = None  # a START of another stream, for the next event
        super().__init__(self._model(self.measurement, self.settings), link, **kwargs)

    def source_url(self, hci: str) -> str:
        """The URL that reads this sensor's first measurement through the bumble controller at `hci`."""
        return f"polar://{self.name}?stream={self.measurement.name.lower()}&hci={hci}"

    # ------------------------------------------------------------ streams
    def _defaults(self, measurement: Measurement) -> dict:
        return {s: values[:1] for s, values in self.profile.streams[measurement][0].items()}

    def _model(self, measurement: Measurement, settings: dict, start_us: int | None = None) -> DeviceModel:
        fs = float(settings[Setting.SAMPLE_RATE][0])
        make = self.profile.streams[measurement][2]
        rng = np.random.default_rng([self.config.seed, measurement, int(fs)])
        layout = self.layout(measurement)
        rec = Recording(self.recording.name, self.recording.subject, fs, list(layout.names),
                        make(self.recording, fs, rng), self.recording.path)
        fmt = SampleFormat.INT16 if layout.width == 2 else SampleFormat.INT24
        config = dataclasses.replace(self.config, fs=None, fmt=fmt, scale=(1.0,) * layout.channels,
                                     start_us=self.config.start_us if start_us is None else start_us)
        return DeviceModel(rec, config)

    def layout(self, measurement: Measurement | None = None) -> pmd.Layout:
        measurement = self.measurement if measurement is None else measurement
        return pmd.frame_layout(measurement, self.profile.streams[measurement][1])

    # ------------------------------------------------------------ GATT
    def _add_services(self) -> None:
        self.control_char = Characteristic(
            pmd.PMD_CONTROL_UUID,
            Characteristic.Properties.READ | Characteristic.Properties.WRITE | Characteristic.Properties.INDICATE,
            Characteristic.READABLE | Characteristic.WRITEABLE,
            CharacteristicValue(read=lambda connection: pmd.encode_features(self.profile.streams),
                                write=self._on_control),
        )
        self.samples_char = Characteristic(pmd.PMD_DATA_UUID, Characteristic.Properties.NOTIFY,
                                           Characteristic.READABLE, b"")
        self.device.add_service(Service(pmd.PMD_SERVICE_UUID, [self.control_char, self.samples_char]))

    def _new_packer(self) -> None:
        """Nothing to set up: PMD frames are cut to the negotiated MTU as they are sent."""

    def _on_connection(self, connection: Connection) -> None:
        super()._on_connection(connection)
        connection.on(connection.EVENT_DISCONNECTION, lambda reason: self.started.clear())

    def _on_control(self, connection: Connection, value: bytes) -> None:
        response = self._answer(bytes(value))
        self.log.count(f"control_{response.op.name.lower() if isinstance(response.op, Op) else 'unknown'}"
                       if response.status == Status.SUCCESS else f"control_error_{response.status.name.lower()}")
        asyncio.get_running_loop().create_task(
            self.device.indicate_subscriber(connection, self.control_char, pmd.encode_response(response)))

    def _answer(self, data: bytes) -> Response:
        """The control point's answer to one write, as a real sensor gives it."""
        op = data[0] if data else 0
        kind = data[1] if len(data) > 1 else 0
        if len(data) < 2:
            return Response(op, kind, Status.INVALID_LENGTH)
        if op not in Op.__members__.values():
            return Response(op, kind, Status.INVALID_OP_CODE)
        if kind not in Measurement.__members__.values():
            return Response(op, kind, Status.INVALID_MEASUREMENT_TYPE)
        try:
            command = pmd.decode_command(data)
        except pmd.PmdError:
            return Response(op, kind, Status.INVALID_PARAMETER)
        if command.measurement not in self.profile.streams:
            return Response(command.op, command.measurement, Status.NOT_SUPPORTED)
        if command.op == Op.GET_SETTINGS:
            return Response(command.op, command.measurement, Status.SUCCESS, self.profile.streams[command.measurement][0])
        if command.op == Op.STOP:
            if not self.started.is_set() or command.measurement != self.measurement:
                return Response(command.op, command.measurement, Status.ALREADY_IN_STATE)
            self.started.clear()
            return Response(command.op, command.measurement, Status.SUCCESS)
        return self._start(command)

    def _start(self, command: Command) -> Response:
        def answer(status: Status) -> Response:
            return Response(command.op, command.measurement, status)

        if self.started.is_set():
            return answer(Status.ALREADY_IN_STATE if command.measurement == self.measurement else Status.INVALID_STATE)
        offered = self.profile.streams[command.measurement][0]
        if Setting.SAMPLE_RATE not in command.settings:
            return answer(Status.INVALID_PARAMETER)
        for setting, values in command.settings.items():
            if setting not in offered or len(values) != 1 or values[0] not in offered[setting]:
                return answer(_BAD_SETTING.get(setting, Status.INVALID_PARAMETER))
        layout = self.layout(command.measurement)
        if self._payload() < pmd.HEADER.size + 2 * layout.width * layout.channels:
            return answer(Status.INVALID_MTU)  # not even two samples would fit a notification
        settings = {**self._defaults(command.measurement), **command.settings}
        if (command.measurement, settings) != (self.measurement, self.settings):
            self._switch = (command.measurement, settings)
            self._new_rate = float(settings[Setting.SAMPLE_RATE][0])  # the sampling loop switches at its next event
        self.started.set()
        return answer(Status.SUCCESS)

    def _set_rate(self, rate_hz: float) -> None:
        """Switch to the stream a START asked for: its index 0 is now, on the running device clock."""
        assert self._switch is not None
        self.measurement, self.settings = self._switch
        self._switch = None
        self._origin_s = self._event_s
        self.model = self._model(self.measurement, self.settings, self._boot_us + round(self._origin_s * 1e6))
        self.produced = self._pending = 0
        self._new_rate = None

    # ------------------------------------------------------------ sampling
    async def _ready(self) -> None:
        await self.started.wait()

    def _per_notification(self) -> int:
        layout = self.layout()
        return (self._payload() - pmd.HEADER.size) // (layout.width * layout.channels)

    def _frame_fit(self, start: int, stop: int) -> int:
        """Samples of [start, stop) the next frame carries at the negotiated MTU."""
        layout = self.layout()
        if not self.profile.streams[self.measurement][1] & pmd.COMPRESSED:
            return min(stop - start, max(self._per_notification(), 1))
        codes = self.model.codes(start, min(stop, start + 256)).T
        return pmd.compressed_fit(codes, layout, self._payload())

    def _not_sending(self) -> str | None:
        if self._outage:
            return "disconnected"
        if self._connection is None:
            return "not_connected"
        if self.samples_char.handle not in self._subscribed:
            return "not_subscribed"
        return None if self.started.is_set() else "stopped"

    async def _deliver(self, start: int, stop: int) -> None:
        """Send every full frame of the samples buffered so far (all of them at the end of the
        stream or before a sample the recording has no value for); keep the rest for the next event."""
        begin = self._pending
        reason = self._not_sending()
        if reason is not None:
            self.log.drop(begin, stop, reason)
            self._pending = stop
            return
        final = self.model.length is not None and stop >= self.model.length
        spans = self.model.valid_spans(begin, stop)
        k = begin
        for a, b in spans:
            self.log.drop(k, a, "no_value")
            k = a
            open_run = b == stop and not final  # more samples of this run are coming
            while k < b:
                n = self._frame_fit(k, b)
                if n == b - k and open_run:
                    break  # the frame is not full yet
                await self._send(k, k + n)
                k += n
        if not (spans and spans[-1][1] == stop and not final):
            self.log.drop(k, stop, "no_value")
            k = stop
        self._pending = k

    async def _send(self, start: int, stop: int) -> None:
        frame = Frame(self.measurement, int(self.model.timestamps_us(stop - 1, stop)[0]) * 1000,
                      self.profile.streams[self.measurement][1], self.model.codes(start, stop).T)
        if self.faults.fate(BLE_FATES) is Fate.LOSE:
            self.log.drop(start, stop, "lost")
            return
        assert self._connection is not None
        await self.device.notify_subscriber(self._connection, self.samples_char, pmd.encode_frame(frame))
        self.log.count("notifications")
