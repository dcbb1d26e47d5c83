"""Polar Measurement Data (PMD): the GATT service Polar sensors stream through.

One codec for both ends: the runtime's `polar://` source decodes, the
simulator's Polar devices encode. docs/protocol.md has the prose version.

- Control point (write, indicate): a command is `op, measurement type,
  settings TLVs`; the device answers `0xF0, op, type, status, more,
  parameters`. Reading it gives `0x0F` and the bitmask of measurement types.
- Data (notify): `type (1), timestamp (8, ns since 2000-01-01, the LAST
  sample's), frame type (1; bit 7 = delta compressed)`, then samples: raw
  little-endian signed integers, or a reference sample followed by blocks of
  `bit width (1), count (1), count x channels deltas` packed LSB first.

Every malformed input raises `PmdError` (a `ProtocolError`), nothing else.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

import numpy as np

from himae_stream.protocol import ProtocolError

PMD_SERVICE_UUID = "fb005c80-02e7-f387-1cad-8acd2d8df0c8"
PMD_CONTROL_UUID = "fb005c81-02e7-f387-1cad-8acd2d8df0c8"
PMD_DATA_UUID = "fb005c82-02e7-f387-1cad-8acd2d8df0c8"

HEADER = struct.Struct("<BQB")  # measurement type, timestamp (ns), frame type
RESPONSE = 0xF0
FEATURES = 0x0F
COMPRESSED = 0x80
#: Unix seconds of the PMD epoch, 2000-01-01T00:00:00Z
EPOCH_UNIX_S = 946_684_800


class PmdError(ProtocolError):
    """Bytes that are not a valid PMD command, response or data frame (or a frame this codec does not know)."""


class UnknownFrame(PmdError):
    """A well-formed data frame of a measurement or frame type this codec does not decode."""


class Measurement(enum.IntEnum):
    ECG = 0
    PPG = 1
    ACC = 2
    PPI = 3
    GYRO = 5
    MAG = 6


class Op(enum.IntEnum):
    GET_SETTINGS = 1
    START = 2
    STOP = 3


class Status(enum.IntEnum):
    SUCCESS = 0
    INVALID_OP_CODE = 1
    INVALID_MEASUREMENT_TYPE = 2
    NOT_SUPPORTED = 3
    INVALID_LENGTH = 4
    INVALID_PARAMETER = 5
    ALREADY_IN_STATE = 6
    INVALID_RESOLUTION = 7
    INVALID_SAMPLE_RATE = 8
    INVALID_RANGE = 9
    INVALID_MTU = 10
    INVALID_NUMBER_OF_CHANNELS = 11
    INVALID_STATE = 12
    DEVICE_IN_CHARGER = 13


class Setting(enum.IntEnum):
    SAMPLE_RATE = 0
    RESOLUTION = 1
    RANGE = 2
    RANGE_MILLIUNIT = 3
    CHANNELS = 4
    FACTOR = 5


#: bytes per value of each setting (FACTOR is a float32, the others unsigned integers)
_SETTING_SIZE = {Setting.SAMPLE_RATE: 2, Setting.RESOLUTION: 2, Setting.RANGE: 2, Setting.RANGE_MILLIUNIT: 4,
                 Setting.CHANNELS: 1, Setting.FACTOR: 4}

Settings = dict[Setting, tuple]


def _enum(kind: type[enum.IntEnum], value: int, what: str):
    try:
        return kind(value)
    except ValueError:
        raise PmdError(f"unknown {what} {value}") from None


def encode_settings(settings: Settings) -> bytes:
    """Settings as TLVs: setting type, count, count values."""
    out = bytearray()
    for setting, values in settings.items():
        size = _SETTING_SIZE[setting]
        out += bytes([setting, len(values)])
        for v in values:
            out += struct.pack("<f", v) if setting == Setting.FACTOR else int(v).to_bytes(size, "little")
    return bytes(out)


def decode_settings(data: bytes) -> Settings:
    settings: Settings = {}
    i = 0
    while i < len(data):
        if i + 2 > len(data):
            raise PmdError(f"settings: truncated TLV header at byte {i}")
        setting = _enum(Setting, data[i], "setting type")
        count, size = data[i + 1], _SETTING_SIZE[setting]
        body = data[i + 2 : i + 2 + count * size]
        if len(body) != count * size:
            raise PmdError(f"settings: {setting.name} needs {count * size} bytes, has {len(body)}")
        if setting == Setting.FACTOR:
            values = struct.unpack(f"<{count}f", body)
        else:
            values = tuple(int.from_bytes(body[k : k + size], "little") for k in range(0, len(body), size))
        settings[setting] = values
        i += 2 + count * size
    return settings


@dataclass(frozen=True)
class Command:
    """A control point write."""

    op: Op
    measurement: Measurement
    settings: Settings = field(default_factory=dict)


def encode_command(command: Command) -> bytes:
    return bytes([command.op, command.measurement]) + encode_settings(command.settings)


def decode_command(data: bytes) -> Command:
    if len(data) < 2:
        raise PmdError(f"command: {len(data)} bytes, needs at least 2")
    op = _enum(Op, data[0], "control point op")
    return Command(op, _enum(Measurement, data[1], "measurement type"), decode_settings(data[2:]))


@dataclass(frozen=True)
class Response:
    """A control point indication answering a command; `parameters` are settings TLVs for GET_SETTINGS
    and START (START's carry FACTOR where samples need scaling)."""

    op: Op
    measurement: Measurement
    status: Status
    parameters: Settings = field(default_factory=dict)
    more: bool = False


def encode_response(response: Response) -> bytes:
    return bytes([RESPONSE, response.op, response.measurement, response.status, int(response.more)]) + \
        encode_settings(response.parameters)


def decode_response(data: bytes) -> Response:
    if len(data) < 4 or data[0] != RESPONSE:
        raise PmdError(f"control point response: expected 0xF0 and at least 4 bytes, got {bytes(data[:5]).hex()}")
    op = _enum(Op, data[1], "control point op")
    measurement = _enum(Measurement, data[2], "measurement type")
    status = _enum(Status, data[3], "status")
    return Response(op, measurement, status, decode_settings(data[5:]), len(data) > 4 and bool(data[4]))


def encode_features(measurements) -> bytes:
    """What reading the control point gives: 0x0F and the bitmask of measurement types offered."""
    mask = sum(1 << m for m in measurements)
    return bytes([FEATURES]) + mask.to_bytes(2, "little")


def decode_features(data: bytes) -> set[Measurement]:
    if len(data) < 2 or data[0] != FEATURES:
        raise PmdError(f"control point read: expected 0x0F and a bitmask, got {bytes(data[:3]).hex()}")
    mask = int.from_bytes(data[1:3], "little")
    return {m for m in Measurement if mask >> m & 1}


# ---------------------------------------------------------------- data frames
@dataclass(frozen=True)
class Layout:
    """How one (measurement, frame type) carries its samples."""

    channels: int
    width: int  # bytes per raw value, or per reference value of a compressed frame
    names: tuple[str, ...]
    unit: str


#: (measurement, frame type with bit 7 = compressed) -> layout; everything else is an unknown frame
LAYOUTS: dict[tuple[Measurement, int], Layout] = {
    (Measurement.ECG, 0x00): Layout(1, 3, ("ECG",), "uV"),
    (Measurement.PPG, 0x00): Layout(4, 3, ("PPG0", "PPG1", "PPG2", "AMBIENT"), ""),
    (Measurement.PPG, 0x80): Layout(4, 3, ("PPG0", "PPG1", "PPG2", "AMBIENT"), ""),
    (Measurement.ACC, 0x00): Layout(3, 1, ("ACC_X", "ACC_Y", "ACC_Z"), "mg"),
    (Measurement.ACC, 0x01): Layout(3, 2, ("ACC_X", "ACC_Y", "ACC_Z"), "mg"),
    (Measurement.ACC, 0x02): Layout(3, 3, ("ACC_X", "ACC_Y", "ACC_Z"), "mg"),
    (Measurement.ACC, 0x81): Layout(3, 2, ("ACC_X", "ACC_Y", "ACC_Z"), "mg"),
}
#: PPI frames (type 0): per interval heart rate (uint8), interval and its error estimate
#: (uint16 ms), flags (bit 0 invalid, bit 1 skin contact, bit 2 contact supported)
PPI_RECORD = np.dtype([("hr", "u1"), ("ppi_ms", "<u2"), ("error_ms", "<u2"), ("flags", "u1")])
PPI_NAMES = ("HR", "PPI_MS", "ERROR_MS", "FLAGS")
#: the widest delta a block may declare (wider deltas could not come from 24-bit samples)
MAX_DELTA_BITS = 32


@dataclass(frozen=True, eq=False)
class Frame:
    """One data notification: `samples` (n, channels) int64; `timestamp_ns` is the last sample's."""

    measurement: Measurement
    timestamp_ns: int
    frame_type: int
    samples: np.ndarray

    @property
    def compressed(self) -> bool:
        return bool(self.frame_type & COMPRESSED)


def frame_layout(measurement: Measurement, frame_type: int) -> Layout:
    """The layout of a waveform frame; PPI frames have none (their records are `PPI_RECORD`)."""
    try:
        return LAYOUTS[measurement, frame_type]
    except KeyError:
        kind = "compressed" if frame_type & COMPRESSED else "raw"
        raise UnknownFrame(f"unknown {measurement.name} frame type {frame_type & 0x7F} ({kind})") from None


def _signed(data: bytes | np.ndarray, width: int, channels: int) -> np.ndarray:
    """Little-endian signed integers of `width` bytes, as (n, channels) int64."""
    raw = np.frombuffer(bytes(data), np.uint8).reshape(-1, width).astype(np.int64)
    value = (raw << (8 * np.arange(width))).sum(axis=1)
    sign = 1 << (8 * width - 1)
    return ((value ^ sign) - sign).reshape(-1, channels)


def decode_frame(data: bytes) -> Frame:
    """A data notification; `PmdError` for a short frame, an unknown measurement or frame type,
    a length that is not whole samples, or a bad delta block."""
    if len(data) < HEADER.size:
        raise PmdError(f"data frame: {len(data)} bytes, shorter than its {HEADER.size}-byte header")
    kind, timestamp, frame_type = HEADER.unpack_from(data)
    if kind not in Measurement.__members__.values():
        raise UnknownFrame(f"unknown measurement type {kind}")
    measurement = Measurement(kind)
    body = bytes(data[HEADER.size :])
    if measurement == Measurement.PPI:
        if frame_type != 0:
            raise UnknownFrame(f"unknown PPI frame type {frame_type:#04x}")
        if len(body) % PPI_RECORD.itemsize:
            raise PmdError(f"PPI frame: {len(body)} bytes is not whole {PPI_RECORD.itemsize}-byte records")
        records = np.frombuffer(body, PPI_RECORD)
        samples = np.stack([records[name].astype(np.int64) for name in PPI_RECORD.names], axis=1)
        return Frame(measurement, timestamp, frame_type, samples.reshape(-1, 4))
    layout = frame_layout(measurement, frame_type)
    if frame_type & COMPRESSED:
        samples = _decode_delta(body, layout)
    else:
        if not body or len(body) % (layout.width * layout.channels):
            raise PmdError(f"{measurement.name} frame: {len(body)} bytes is not whole "
                           f"{layout.channels} x {layout.width}-byte samples")
        samples = _signed(body, layout.width, layout.channels)
    return Frame(measurement, timestamp, frame_type, samples)


def _decode_delta(body: bytes, layout: Layout) -> np.ndarray:
    ch = layout.channels
    ref_size = layout.width * ch
    if len(body) < ref_size:
        raise PmdError(f"compressed frame: {len(body)} bytes, shorter than its {ref_size}-byte reference sample")
    pieces = [_signed(body[:ref_size], layout.width, ch)]
    i = ref_size
    while i < len(body):
        if i + 2 > len(body):
            raise PmdError(f"compressed frame: truncated delta block header at byte {i}")
        bits, count = body[i], body[i + 1]
        if not 1 <= bits <= MAX_DELTA_BITS or count == 0:
            raise PmdError(f"compressed frame: bad delta block ({bits}-bit deltas, {count} samples)")
        size = (bits * count * ch + 7) // 8
        block = body[i + 2 : i + 2 + size]
        if len(block) != size:
            raise PmdError(f"compressed frame: delta block needs {size} bytes, has {len(block)}")
        flat = np.unpackbits(np.frombuffer(block, np.uint8), bitorder="little")[: bits * count * ch]
        values = (flat.reshape(-1, bits).astype(np.int64) << np.arange(bits)).sum(axis=1)
        sign = 1 << (bits - 1)
        pieces.append(((values ^ sign) - sign).reshape(count, ch))
        i += 2 + size
    deltas = np.concatenate(pieces)
    return np.cumsum(deltas, axis=0)


def delta_bits(deltas: np.ndarray) -> int:
    """Bits of the narrowest two's complement that holds every delta (at least 1)."""
    if deltas.size == 0:
        return 1
    return max(int(deltas.max()), -int(deltas.min()) - 1, 0).bit_length() + 1


def _pack_deltas(deltas: np.ndarray, bits: int) -> bytes:
    flat = (deltas.reshape(-1, 1) >> np.arange(bits)) & 1
    return np.packbits(flat.astype(np.uint8).ravel(), bitorder="little").tobytes()


def _pack_signed(samples: np.ndarray, width: int) -> bytes:
    values = samples.reshape(-1, 1).astype(np.int64) & ((1 << (8 * width)) - 1)
    return ((values >> (8 * np.arange(width))) & 0xFF).astype(np.uint8).tobytes()


def encode_frame(frame: Frame, block: int = 255) -> bytes:
    """The notification carrying `frame`; a compressed frame puts up to `block` deltas in each block,
    each block as narrow as its deltas allow."""
    samples = np.asarray(frame.samples, np.int64)
    header = HEADER.pack(frame.measurement, frame.timestamp_ns, frame.frame_type)
    if frame.measurement == Measurement.PPI:
        records = np.zeros(len(samples), PPI_RECORD)
        for k, name in enumerate(PPI_RECORD.names):
            records[name] = samples[:, k]
        return header + records.tobytes()
    layout = frame_layout(frame.measurement, frame.frame_type)
    if samples.ndim != 2 or samples.shape[1] != layout.channels or not len(samples):
        raise PmdError(f"{frame.measurement.name} frame needs (n >= 1, {layout.channels}) samples, got {samples.shape}")
    if not frame.compressed:
        return header + _pack_signed(samples, layout.width)
    out = bytearray(header + _pack_signed(samples[0], layout.width))
    deltas = np.diff(samples, axis=0)
    for start in range(0, len(deltas), block):
        part = deltas[start : start + block]
        bits = delta_bits(part)
        out += bytes([bits, len(part)]) + _pack_deltas(part, bits)
    return bytes(out)


def compressed_fit(samples: np.ndarray, layout: Layout, payload: int) -> int:
    """How many of `samples` (n, channels), from the first, one compressed frame of a single delta
    block carries within `payload` bytes (at least 1: the reference sample alone)."""
    base = HEADER.size + layout.width * layout.channels + 2
    deltas = np.diff(np.asarray(samples[:256], np.int64), axis=0)
    if not len(deltas):
        return 1
    bits = np.maximum.accumulate([delta_bits(d) for d in deltas])
    k = np.arange(1, len(deltas) + 1)
    fits = base + (bits * k * layout.channels + 7) // 8 <= payload  # True, then False once too long
    return 1 + int(fits.sum())


def sample_times_ns(frame_timestamp_ns: int, n: int, fs: float) -> np.ndarray:
    """Times of a frame's n samples, derived back from its timestamp (the last sample's) at rate `fs`."""
    return frame_timestamp_ns - np.rint((n - 1 - np.arange(n)) * 1e9 / fs).astype(np.int64)
