"""URLs naming sources and sinks: one parser, and the registry of source schemes.

    serial:///dev/ttyUSB0?baud=115200   serial://COM3   serial://socket://host:port
    serial:///dev/ttyACM0?format=text&fs=100   (a board printing numbers as text lines)
    serial:///dev/rfcomm0?format=bitalino&fs=1000&channels=A1   (a BITalino)
    serial:///dev/rfcomm0?format=shimmer&fs=128   (a Shimmer3)
    ble://AA:BB:CC:DD:EE:FF             ble://name=Polar*?service=hr
    ble://name=BITalino*?format=bitalino&fs=100&channels=A3    (a BITalino (r)evolution BLE)
    file://capture.bin                  file:///abs/capture.bin   file://board.bin?format=bitalino&fs=100
    sim://recording.mat?speed=10&loss=0.02&transport=ble
    lsl://NAME?type=PPG&timeout=10      lsl://*?type=PPG (any name)
    brainflow://MUSE_2?serial_port=/dev/ttyUSB0   brainflow://playback?file=rec.csv&master_board=SYNTHETIC
    polar://Polar Sense*?stream=ppg      polar://AA:BB:CC:DD:EE:FF?stream=ecg

The registry maps a scheme to "module:function" taking a `ParsedUrl`, so
modules load only when their scheme is opened; `register_scheme` adds one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from urllib.parse import parse_qsl

from himae_stream.errors import HimaeError
from himae_stream.numbers import (
    ANY, COUNT, NON_NEGATIVE, POSITIVE, POSITIVE_INTEGER, SAMPLE_RATE, Number, OptionError,
)


class SourceUrlError(HimaeError, ValueError):
    """A URL that cannot be parsed, or a source URL that cannot be opened."""


@dataclass(frozen=True)
class ParsedUrl:
    """`scheme://path?k=v`: `path` is the file, port, device or name, `params` the query."""

    scheme: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    text: str = ""

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.params.get(key, default)

    def number(self, key: str, default, accepts: Number = ANY):
        """A numeric query parameter, or `default` when absent; a `SourceUrlError` naming the URL,
        the parameter and what it `accepts` when it is not such a number."""
        value = self.params.get(key)
        if value is None:
            return default
        try:
            return accepts.parse(value, f"{self.text}: parameter {key}")
        except OptionError as exc:
            raise SourceUrlError(str(exc)) from None

    def check_params(self, allowed: set[str]) -> None:
        unknown = sorted(set(self.params) - allowed)
        if unknown:
            raise SourceUrlError(
                f"{self.text}: unknown parameter(s) {', '.join(unknown)} "
                f"(allowed: {', '.join(sorted(allowed)) or 'none'})"
            )


SCHEMES: dict[str, str] = {
    "serial": "himae_stream.urls:open_serial",
    "ble": "himae_stream.urls:open_ble",
    "file": "himae_stream.urls:open_file",
    "sim": "firmware_sim.source:open_url",
    "lsl": "himae_stream.urls:open_lsl",
    "brainflow": "himae_stream.sources.brainflow:open_url",
    "polar": "himae_stream.urls:open_polar",
}


def register_scheme(scheme: str, opener: str) -> None:
    """Make `scheme://...` open through `opener` ("module:function")."""
    SCHEMES[scheme.lower()] = opener


def parse_url(text: str) -> ParsedUrl:
    """Split `scheme://path?k=v&...`; the path keeps any '://' of its own (serial://socket://h:p)."""
    scheme, sep, rest = text.partition("://")
    if not sep or not scheme:
        raise SourceUrlError(f"{text!r} is not a URL (expected scheme://..., e.g. serial:///dev/ttyUSB0)")
    path, _, query = rest.partition("?")
    params: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in params:
            raise SourceUrlError(f"{text}: parameter {key} given twice")
        params[key] = value
    return ParsedUrl(scheme.lower(), path, params, text)


def replay_url(path: str, speed: float | None = 1.0, channels: str | None = None, fs: float | None = None) -> str:
    """A recording replayed through the device simulator over a pseudo-terminal serial port (as a
    device would send it), at `speed` times real time (None: as fast as the port takes), by a device
    at `fs` Hz (default the recording's; the rate of a recording that states none)."""
    picked = f"channels={channels}&" if channels else ""
    rate = f"fs={fs}&" if fs else ""  # the exact float: a rate such as 29.97003 keeps every digit
    return f"sim://{path}?{picked}{rate}transport=serial&speed={'max' if speed is None else speed}&baud=921600"


def as_source_url(text: str, speed: float | None = 1.0, fs: float | None = None) -> str:
    """`text` as a source URL: a URL as it is, or a recording's path, replayed (`replay_url`) at `speed`
    by a device at `fs` Hz."""
    if "://" in text:
        return text
    if not text.strip():
        raise SourceUrlError("the source is empty: give a URL or a recording's path")
    path = Path(text)
    if path.is_dir():
        raise SourceUrlError(f"{text!r} is a folder: a source is one recording (himae embed takes folders)")
    if (path.exists() and not path.is_file()) or text.startswith("/dev/"):  # a port without its scheme
        raise SourceUrlError(f"{text!r} names a device, not a recording: read it as serial://{text} (or give "
                             "the URL of the source it is)")
    if re.match(r"[A-Za-z][\w+.-]*:", text) and not path.exists():  # a URL mistyped ("serial:/dev/x")
        raise SourceUrlError(f"{text!r} is not a URL (expected scheme://..., e.g. serial:///dev/ttyUSB0) nor a "
                             "recording")
    if "?" in text or "#" in text:
        raise SourceUrlError(f"{text!r}: a recording's path with '?' or '#' cannot be replayed (rename it)")
    return replay_url(text, speed, fs=fs)


def parse_source_url(text: str) -> ParsedUrl:
    """A URL whose scheme is a registered source and which names something to open (a recording's
    path stands for its replay in real time: `as_source_url`)."""
    url = parse_url(as_source_url(text))
    if url.scheme not in SCHEMES:
        raise SourceUrlError(f"unknown source scheme {url.scheme!r} in {text!r} (known: {', '.join(sorted(SCHEMES))})")
    if not url.path:
        raise SourceUrlError(f"{text!r} names no {url.scheme} source")
    return url


def open_source(url: str | ParsedUrl):
    """The source a URL names, built by its scheme's opener."""
    parsed = parse_source_url(url) if isinstance(url, str) else url
    module_name, _, function = SCHEMES[parsed.scheme].partition(":")
    try:
        module = import_module(module_name)
    except ModuleNotFoundError as exc:
        raise SourceUrlError(f"{parsed.scheme}:// sources need {exc.name}, which is not installed") from exc
    return getattr(module, function)(parsed)


def open_serial(url: ParsedUrl):
    from himae_stream.sources.serial import SerialSource

    url.check_params({"baud", "idle_timeout", "reconnect", "record", *READER_PARAMS})
    idle, reconnect = url.number("idle_timeout", 5.0, NON_NEGATIVE), url.number("reconnect", 10.0, NON_NEGATIVE)
    return SerialSource(
        url.path, url.number("baud", 115200, POSITIVE_INTEGER),
        idle_timeout_s=idle if idle > 0 else None, reconnect_timeout_s=reconnect if reconnect > 0 else None,
        record=url.get("record"), **_reader(url),
    )


#: what chooses and sets up the byte->packet step of a serial port or of the bytes it recorded
READER_PARAMS = {"format", "fs", "time_unit", "channels"}


def _reader(url: ParsedUrl) -> dict:
    """`reader=` for a `SerialSource` or `FileSource` as the URL's `format` says (none: the framed protocol)."""
    form = url.get("format", "framed")
    readers = {"framed": None, "text": _text_reader, "bitalino": _bitalino_reader, "shimmer": _shimmer_reader}
    if form not in readers:
        raise SourceUrlError(f"{url.text}: format must be {', '.join(readers)}, got {form!r}")
    given = READER_PARAMS - {"format"}
    if form == "framed" and given & set(url.params):
        raise SourceUrlError(f"{url.text}: {', '.join(sorted(given & set(url.params)))} go with format=text "
                             "(fs and channels also with format=bitalino, fs with format=shimmer)")
    return {"reader": readers[form](url)} if readers[form] else {}


def _shimmer_reader(url: ParsedUrl):
    """What makes a `ShimmerReader` with the URL's `fs` (default: the rate the sensor is set to)."""
    from functools import partial

    from himae_stream.sources.shimmer import ShimmerReader

    if url.scheme == "file":
        raise SourceUrlError(f"{url.text}: a Shimmer's recorded bytes do not say which channels it streamed "
                             "(its answer to the inquiry is not in them)")
    unused = sorted({"time_unit", "channels"} & set(url.params))
    if unused:
        raise SourceUrlError(f"{url.text}: {', '.join(unused)} do not go with format=shimmer (it streams the "
                             "channels it was configured with; --channels picks one)")
    return partial(ShimmerReader, fs=url.number("fs", None, SAMPLE_RATE))


def _text_reader(url: ParsedUrl):
    """What makes a `TextLineReader` with the URL's `fs`, `time_unit` and `channels`."""
    from functools import partial

    from himae_stream.recordings import TIME_UNITS
    from himae_stream.sources.textlines import TextLineReader

    unit = url.get("time_unit")
    if unit is not None and unit not in TIME_UNITS:
        raise SourceUrlError(f"{url.text}: time_unit must be one of {', '.join(TIME_UNITS)}, got {unit!r}")
    return partial(TextLineReader, fs=url.number("fs", None, SAMPLE_RATE), time_unit=unit,
                   channels=url.get("channels"))


def _bitalino_reader(url: ParsedUrl):
    """What makes a `BitalinoReader` with the URL's `fs` (default 1000) and `channels` (analog inputs
    A1 ... A6, default all)."""
    from functools import partial

    from himae_stream.bitalino import INPUTS
    from himae_stream.sources.bitalino import BitalinoReader

    if "time_unit" in url.params:
        raise SourceUrlError(f"{url.text}: time_unit goes with format=text")
    names = [n.strip().upper() for n in url.get("channels", ",".join(INPUTS)).split(",") if n.strip()]
    unknown = [n for n in names if n not in INPUTS]
    if unknown or not names:
        raise SourceUrlError(f"{url.text}: channels are a BITalino's analog inputs {', '.join(INPUTS)}, "
                             f"got {url.get('channels')!r}")
    return partial(BitalinoReader, fs=url.number("fs", 1000, SAMPLE_RATE), inputs=[INPUTS.index(n) for n in names])


def open_ble(url: ParsedUrl):
    from himae_stream.protocol import HEART_RATE_SERVICE_UUID
    from himae_stream.sources.ble import BleSource
    from himae_stream.sources.heartrate import HeartRateSource

    form = url.get("format")
    if form not in (None, "bitalino"):
        raise SourceUrlError(f"{url.text}: format over BLE must be bitalino (a BITalino (r)evolution BLE), "
                             f"got {form!r}")
    url.check_params({"reconnects", "scan_timeout", "hci"} | ({"format", "fs", "channels"} if form else {"service"}))
    name = url.path[len("name="):] if url.path.startswith("name=") else None
    address = None if name is not None else url.path
    service = url.get("service")
    kwargs = dict(
        max_reconnects=url.number("reconnects", 5, COUNT),
        scan_timeout_s=url.number("scan_timeout", 10.0, POSITIVE),
        backend=_ble_backend(url.get("hci")),
    )
    if form == "bitalino":
        from himae_stream.sources.bitalino_ble import BitalinoBleSource

        return BitalinoBleSource(address=address, name=name, reader=_bitalino_reader(url), **kwargs)
    if service in ("hr", "heart_rate", "180d", HEART_RATE_SERVICE_UUID):
        return HeartRateSource(address=address, name=name, **kwargs)
    return BleSource(address=address, name=name, service=service, **kwargs)


def open_polar(url: ParsedUrl):
    """`polar://NAME_OR_ADDRESS?stream=ppg|ecg|acc&fs=&range=&channels=`: a name may be a glob ("Polar
    Sense*"); `channels` (comma-separated, e.g. PPG1) keeps those of the stream's channels."""
    from himae_stream.sources.polar import STREAMS, PolarSource, stream_channels

    url.check_params({"stream", "fs", "range", "channels", "reconnects", "scan_timeout", "hci"})
    stream = url.get("stream", "ppg")
    if stream not in STREAMS:
        raise SourceUrlError(f"{url.text}: stream must be one of {', '.join(STREAMS)}, got {stream!r}")
    is_address = re.fullmatch(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}", url.path) is not None
    channels = [c.strip() for c in url.get("channels", "").split(",") if c.strip()] or None
    unknown = [c for c in channels or () if c not in stream_channels(stream)]
    if unknown:
        raise SourceUrlError(f"{url.text}: {stream} has no channel {', '.join(unknown)} "
                             f"(it has {', '.join(stream_channels(stream))})")
    return PolarSource(
        address=url.path if is_address else None, name=None if is_address else url.path, stream=stream,
        channels=channels,
        fs=url.number("fs", None, POSITIVE_INTEGER), range_g=url.number("range", None, POSITIVE_INTEGER),
        max_reconnects=url.number("reconnects", 5, COUNT), scan_timeout_s=url.number("scan_timeout", 10.0, POSITIVE),
        backend=_ble_backend(url.get("hci")),
    )


def _ble_backend(hci: str | None):
    """bleak's platform backend, or bumble's host stack when an HCI transport is named
    (`?hci=tcp-client:127.0.0.1:PORT`, or $HIMAE_BUMBLE_HCI), e.g. `himae sim --transport ble`."""
    import os

    from himae_stream.bumble_backend import HCI_ENV

    if not hci and not os.environ.get(HCI_ENV):
        return None
    from himae_stream.bumble_backend import BumbleBackend

    return BumbleBackend.bound(hci) if hci else BumbleBackend


def open_file(url: ParsedUrl):
    from himae_stream.sources.file import FileSource

    url.check_params(READER_PARAMS)
    return FileSource(url.path, **_reader(url))


def open_lsl(url: ParsedUrl):
    from himae_stream.sources.lsl import LslSource

    url.check_params({"type", "timeout"})
    name = None if url.path == "*" else url.path
    return LslSource(name, url.get("type"), timeout_s=url.number("timeout", 10.0, POSITIVE))
