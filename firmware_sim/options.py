"""One description of a simulator run, shared by `himae sim` and `sim://` source URLs."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from firmware_sim.device import DeviceConfig, DeviceModel, DropLog
from firmware_sim.faults import NUMBERS as FAULT_NUMBERS, FaultConfig
from firmware_sim.heart_rate import HeartRateTrace, load_trace, trace_for
from himae_stream.numbers import (
    ANY, COUNT, NON_NEGATIVE, POSITIVE, POSITIVE_INTEGER, PROBABILITY, SAMPLE_RATE, SPEED, Number,
)
from himae_stream.protocol import SampleFormat
from himae_stream.recordings import load

FORMATS = {"int16": SampleFormat.INT16, "int24": SampleFormat.INT24, "float32": SampleFormat.FLOAT32}
#: `--delimiter` names of the delimiters a text-serial board prints.
DELIMITERS = {"comma": ",", "tab": "\t", "semicolon": ";", "space": " "}


@dataclass
class TextBoard:
    """How the board prints: header row, delimiter, a millis() column, Serial Plotter pairs, junk."""

    header: bool = True
    delimiter: str = ","
    millis: bool = False
    plotter: bool = False
    garbage: float = 0.0  # probability a junk line comes before a sample's line

    def __post_init__(self) -> None:
        if self.delimiter not in DELIMITERS.values():
            raise ValueError(f"delimiter must be one of {', '.join(DELIMITERS)}, got {self.delimiter!r}")
        PROBABILITY.check(self.garbage, "garbage")


@dataclass
class SimOptions:
    recording: str
    channels: str | None = None
    fs: float | None = None  # resample to this rate (None: the recording's)
    duration: float | None = None  # replay only the first seconds
    loop: bool = False
    speed: float | None = 1.0  # None: as fast as the transport takes
    fmt: str = "int16"
    drift_ppm: float = 0.0
    jitter_us: float = 0.0
    seed: int = 1
    faults: FaultConfig = field(default_factory=FaultConfig)
    name: str = "himae-sim"
    baud: int = 921_600
    frame_ms: float = 40.0
    mtu: int = 247
    interval_ms: float = 15.0
    hr_trace: str | None = None
    board: TextBoard = field(default_factory=TextBoard)  # how a text-serial device prints


#: What each numeric setting accepts, by its `sim://` parameter name (the `himae sim` flag is the
#: same name with dashes): the one table both read, so they accept and refuse the same numbers.
NUMBERS: dict[str, Number] = {
    **FAULT_NUMBERS, "fs": SAMPLE_RATE, "duration": POSITIVE, "speed": SPEED, "drift_ppm": ANY,
    "jitter_us": NON_NEGATIVE, "seed": COUNT, "baud": POSITIVE_INTEGER, "frame_ms": POSITIVE,
    "mtu": Number(integer=True, low=23, high=517), "interval_ms": POSITIVE, "garbage": PROBABILITY,
}


def parse_format(text: str) -> SampleFormat:
    try:
        return FORMATS[text.lower()]
    except KeyError:
        raise ValueError(f"unknown sample format {text!r} (use {', '.join(FORMATS)})") from None


def build_model(options: SimOptions) -> DeviceModel:
    """The device model of a run: the recording, its channels and length, and the device config."""
    # a recording that states no rate (a bare .npy, columns of numbers) is at the device's
    recording = load(options.recording, channels=options.channels, default_fs=options.fs,
                     rate_hint="--fs, or fs= in a sim:// URL")
    if options.duration is not None:
        NUMBERS["duration"].check(options.duration, "duration")
        n = max(1, int(round(options.duration * recording.fs)))
        recording = dataclasses.replace(recording, signals=recording.signals[:, :n])
    config = DeviceConfig(
        fs=options.fs,
        fmt=parse_format(options.fmt),
        drift_ppm=options.drift_ppm,
        jitter_us=options.jitter_us,
        loop=options.loop,
        seed=options.seed,
        name=options.name,
    )
    return DeviceModel(recording, config)


#: BLE devices the simulator emulates: its own sample service, or a Polar sensor's PMD service
BLE_DEVICES = ("ble", "polar-verity", "polar-h10")


def build_ble_device(options: SimOptions, link, kind: str = "ble"):
    """The simulated BLE device of a run (`kind` from `BLE_DEVICES`) on `link`, with its faults and HR trace."""
    from firmware_sim.ble_device import BleDevice
    from firmware_sim.faults import Faults

    model = build_model(options)
    args = dict(faults=Faults(options.faults), speed=options.speed, mtu=options.mtu,
                connection_interval_ms=options.interval_ms, heart_rate=heart_rate(options, model))
    if kind == "ble":
        return BleDevice(model, link, **args)
    from firmware_sim.polar_device import PolarDevice

    return PolarDevice(model.original, kind, link, config=dataclasses.replace(model.config, fs=None), **args)


#: serial devices that stream only when their host tells them to (`himae sim --device`, `sim://?transport=`)
COMMANDED_DEVICES = ("bitalino", "shimmer")


def commanded_device(kind: str, model: DeviceModel, options: SimOptions):
    """A simulated BITalino or Shimmer3 (`kind`) replaying `model`, what makes its reader, and the URL that
    reads it. A BITalino is read at --fs (one of `bitalino.RATES`, else 1000 Hz) on an input per channel of
    the recording; a Shimmer3 samples at --fs (default 128 Hz, rounded to the nearest 32768 Hz / divider)
    until its host sets another rate."""
    from firmware_sim.faults import Faults

    faults = Faults(options.faults)
    if kind == "bitalino":
        from firmware_sim.bitalino_device import BitalinoDevice
        from himae_stream import bitalino
        from himae_stream.sources.bitalino import BitalinoReader

        rate = bitalino.checked_rate(options.fs or 1000)
        device = BitalinoDevice(model, faults, options.speed, options.baud)
        inputs = range(min(model.channels, len(bitalino.INPUTS)))
        return device, partial(BitalinoReader, fs=rate, inputs=inputs), device.source_url(rate)
    from firmware_sim.shimmer_device import ShimmerDevice
    from himae_stream.shimmer import divider_for
    from himae_stream.sources.shimmer import ShimmerReader

    device = ShimmerDevice(model, faults, options.speed, options.baud, divider=divider_for(options.fs or 128))
    return device, ShimmerReader, device.source_url()


def heart_rate(options: SimOptions, model: DeviceModel) -> HeartRateTrace:
    return load_trace(options.hr_trace) if options.hr_trace else trace_for(model.recording)


def write_log(path: str | Path, log: DropLog, produced: int, hr_log: list | None = None) -> None:
    """The drop log as JSON: dropped [start, stop, reason] ranges, counters, HR values sent."""
    record = {
        "produced": produced,
        "dropped": [list(r) for r in log.dropped],
        "counters": log.counters,
        "heart_rate": [list(h) for h in hr_log or []],
    }
    Path(path).write_text(json.dumps(record))
