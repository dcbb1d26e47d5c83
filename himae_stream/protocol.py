"""Packet codecs shared by the runtime and the firmware simulator.

One place defines every byte on the wire (docs/protocol.md is the prose
version): the data packet body, the stream-info body, the BLE notification
packing, the BLE control commands and the standard Heart Rate Measurement.
Decoders are vectorised (numpy views, no per-sample Python) and raise only
`ProtocolError` on malformed input.
"""

from __future__ import annotations

import enum
import math
import struct
from dataclasses import dataclass, field

import numpy as np

from himae_stream._core import physical_values
from himae_stream.errors import HimaeError

PROTOCOL_VERSION = 1

# Custom GATT service (128-bit UUIDs) and the standard Heart Rate Service.
SERVICE_UUID = "6d1a0001-5c3b-4f0e-9a51-48494d414501"
SAMPLES_CHAR_UUID = "6d1a0002-5c3b-4f0e-9a51-48494d414501"
CONTROL_CHAR_UUID = "6d1a0003-5c3b-4f0e-9a51-48494d414501"
INFO_CHAR_UUID = "6d1a0004-5c3b-4f0e-9a51-48494d414501"
HEART_RATE_SERVICE_UUID = "0000180d-0000-1000-8000-00805f9b34fb"
HEART_RATE_MEASUREMENT_UUID = "00002a37-0000-1000-8000-00805f9b34fb"

#: ATT payload of one notification at the default MTU (23) minus the 3-byte ATT header.
DEFAULT_ATT_PAYLOAD = 20

SEQ_MODULUS = 1 << 32
MAX_CHANNELS = 64


class ProtocolError(HimaeError, ValueError):
    """Bytes that do not form a valid body of this protocol."""


class SampleFormat(enum.IntEnum):
    """On-wire sample encodings; the value is the format byte."""

    INT16 = 1
    INT24 = 2
    FLOAT32 = 3

    @property
    def width(self) -> int:
        return _WIDTHS[self]


class Kind(enum.IntEnum):
    """Body kinds; the value is the second byte of every body."""

    DATA = 0
    INFO = 1


_WIDTHS = {SampleFormat.INT16: 2, SampleFormat.INT24: 3, SampleFormat.FLOAT32: 4}
_FORMATS = {f.value: f for f in SampleFormat}
_KINDS = {k.value: k for k in Kind}
_F32 = struct.Struct("<f")


def _f32(value: float) -> float:
    """`value` rounded to the nearest float32, as the wire carries it."""
    return _F32.unpack(_F32.pack(value))[0]


_INT_LIMITS = {SampleFormat.INT16: 1 << 15, SampleFormat.INT24: 1 << 23}


@dataclass(eq=False)
class Packet:
    """One data packet: `samples` are raw codes, shape (channels, n); treat as immutable.

    `seq` is the stream index of the first sample modulo 2**32 (it counts
    samples, not packets, so any gap is an exact number of samples), `t_us`
    the device clock at the first sample, `fs` the nominal device sample rate.
    Physical value = code * scale[channel].
    """

    seq: int
    t_us: int
    fs: float
    samples: np.ndarray
    scale: tuple[float, ...]
    fmt: SampleFormat = SampleFormat.INT16
    stream_id: int = 0

    def __post_init__(self) -> None:
        # rates and scales travel as float32: hold exactly what the wire can carry
        self.fs = _f32(self.fs)
        self.scale = tuple(map(_f32, self.scale))

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def n(self) -> int:
        return int(self.samples.shape[1])

    def physical(self) -> np.ndarray:
        """Samples in physical units, float32 (channels, n)."""
        return physical_values(self.samples, self.scale)

    @classmethod
    def from_physical(
        cls,
        seq: int,
        t_us: int,
        fs: float,
        values: np.ndarray,
        scale: tuple[float, ...] | float,
        fmt: SampleFormat = SampleFormat.INT16,
        stream_id: int = 0,
    ) -> Packet:
        """Quantise physical values (channels, n) to `fmt` codes, clipping to range."""
        values = np.atleast_2d(np.asarray(values, np.float64))
        if np.isscalar(scale):
            scale = (float(scale),) * values.shape[0]
        scale = tuple(float(s) for s in scale)
        if fmt == SampleFormat.FLOAT32:
            codes = (values / np.asarray(scale)[:, None]).astype(np.float32)
        else:
            lim = _INT_LIMITS[SampleFormat(fmt)]
            codes = np.rint(values / np.asarray(scale)[:, None])
            codes = np.clip(codes, -lim, lim - 1).astype(np.int32)
        return cls(seq % SEQ_MODULUS, int(t_us), float(fs), codes, scale, SampleFormat(fmt), stream_id)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Packet):
            return NotImplemented
        return (
            (self.seq, self.t_us, self.fmt, self.stream_id, self.scale)
            == (other.seq, other.t_us, other.fmt, other.stream_id, other.scale)
            and self.fs == other.fs
            and self.samples.shape == other.samples.shape
            and np.array_equal(self.samples, other.samples)
        )


@dataclass(frozen=True)
class StreamInfo:
    """What a stream carries: served by the BLE info characteristic and sent
    as an INFO body on serial before the first data packet."""

    fs: float
    channel_names: tuple[str, ...]
    scale: tuple[float, ...]
    fmt: SampleFormat = SampleFormat.INT16
    units: tuple[str, ...] = field(default=())
    stream_id: int = 0
    device: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "fs", _f32(self.fs))
        object.__setattr__(self, "scale", tuple(map(_f32, self.scale)))

    @property
    def channels(self) -> int:
        return len(self.channel_names)


# ---------------------------------------------------------------- data bodies
# version u8, kind u8, stream_id u8, format u8, seq u32, t_us u64, fs f32,
# channels u8, reserved u8, n u16, then scale f32 x C, then interleaved samples.
_DATA_HEADER = struct.Struct("<BBBBIQfBBH")
DATA_HEADER_SIZE = _DATA_HEADER.size


def encode_packet(packet: Packet) -> bytes:
    """The data body of `packet` (no framing)."""
    fmt = SampleFormat(packet.fmt)
    codes = np.asarray(packet.samples)
    if codes.ndim != 2 or not 1 <= codes.shape[0] <= MAX_CHANNELS:
        raise ProtocolError(f"samples must be (channels<= {MAX_CHANNELS}, n), got {codes.shape}")
    if len(packet.scale) != codes.shape[0]:
        raise ProtocolError("one scale per channel required")
    if codes.shape[1] > 0xFFFF:
        raise ProtocolError("at most 65535 samples per packet")
    head = _DATA_HEADER.pack(
        PROTOCOL_VERSION, Kind.DATA, packet.stream_id, fmt, packet.seq % SEQ_MODULUS,
        packet.t_us, packet.fs, codes.shape[0], 0, codes.shape[1],
    )
    scale = np.asarray(packet.scale, "<f4").tobytes()
    return head + scale + pack_samples(codes.T, fmt)


def decode_packet(data: bytes | bytearray | memoryview) -> Packet:
    """Parse one data body; raises ProtocolError (only) when malformed."""
    data = bytes(data)
    if len(data) < DATA_HEADER_SIZE:
        raise ProtocolError(f"data body too short ({len(data)} bytes)")
    version, kind, stream_id, fmt_byte, seq, t_us, fs, c, _res, n = _DATA_HEADER.unpack_from(data)
    _check_version_kind(version, kind, Kind.DATA)
    fmt = _format(fmt_byte)
    if not 1 <= c <= MAX_CHANNELS:
        raise ProtocolError(f"bad channel count {c}")
    if not (math.isfinite(fs) and fs > 0):
        raise ProtocolError(f"bad sample rate {fs}")
    start = DATA_HEADER_SIZE + 4 * c
    expected = start + n * c * _WIDTHS[fmt]
    if len(data) != expected:
        raise ProtocolError(f"data body is {len(data)} bytes, header says {expected}")
    scale = struct.unpack_from(f"<{c}f", data, DATA_HEADER_SIZE)
    if not all(map(math.isfinite, scale)):
        raise ProtocolError("non-finite scale")
    return Packet(seq, t_us, fs, unpack_samples(memoryview(data)[start:], fmt, c), scale, fmt, stream_id)


def pack_samples(interleaved: np.ndarray, fmt: SampleFormat) -> bytes:
    """Sample codes shaped (n, channels) as interleaved little-endian bytes."""
    if fmt == SampleFormat.INT16:
        return np.asarray(interleaved).astype("<i2").tobytes()
    if fmt == SampleFormat.FLOAT32:
        return np.asarray(interleaved).astype("<f4").tobytes()
    as32 = np.ascontiguousarray(interleaved, "<i4").reshape(-1)
    return as32.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()


def unpack_samples(data: bytes | memoryview, fmt: SampleFormat, channels: int) -> np.ndarray:
    """Interleaved sample bytes to codes shaped (channels, n), as views where possible:
    int16 and float32 keep their wire dtype, int24 becomes int32."""
    if len(data) % (_WIDTHS[fmt] * channels):
        raise ProtocolError("sample bytes are not a whole number of frames")
    if fmt == SampleFormat.INT16:
        flat = np.frombuffer(data, "<i2")
    elif fmt == SampleFormat.FLOAT32:
        flat = np.frombuffer(data, "<f4")
    else:
        raw = np.frombuffer(data, np.uint8).reshape(-1, 3)
        padded = np.zeros((raw.shape[0], 4), np.uint8)
        padded[:, 1:] = raw
        flat = padded.view("<i4").reshape(-1) >> 8  # arithmetic shift sign-extends
    if channels == 1:
        return flat.reshape(1, -1)
    return flat.reshape(-1, channels).T


def _check_version_kind(version: int, kind: int, want: Kind) -> None:
    if version == PROTOCOL_VERSION and kind == want:
        return
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {version}")
    if kind != want:
        raise ProtocolError(f"body kind {kind}, expected {want.name.lower()}")


def _format(fmt_byte: int) -> SampleFormat:
    fmt = _FORMATS.get(fmt_byte)
    if fmt is None:
        raise ProtocolError(f"unknown sample format {fmt_byte}")
    return fmt


# ---------------------------------------------------------------- info bodies
# version u8, kind u8, stream_id u8, format u8, fs f32, channels u8, then per
# channel: scale f32, name (u8 length + UTF-8), unit (u8 length + UTF-8);
# then the device name (u8 length + UTF-8).
_INFO_HEADER = struct.Struct("<BBBBfB")


def encode_info(info: StreamInfo) -> bytes:
    """The info body describing a stream (serial INFO frame, BLE info characteristic)."""
    c = info.channels
    units = info.units or ("",) * c
    if not 1 <= c <= MAX_CHANNELS or len(info.scale) != c or len(units) != c:
        raise ProtocolError("stream info needs 1..64 channels, one scale and unit each")
    out = [_INFO_HEADER.pack(PROTOCOL_VERSION, Kind.INFO, info.stream_id, info.fmt, info.fs, c)]
    for scale, name, unit in zip(info.scale, info.channel_names, units):
        out += [struct.pack("<f", scale), _short_str(name), _short_str(unit)]
    out.append(_short_str(info.device))
    return b"".join(out)


def decode_info(data: bytes | bytearray | memoryview) -> StreamInfo:
    """Parse an info body; raises ProtocolError (only) when malformed."""
    data = bytes(data)
    if len(data) < _INFO_HEADER.size:
        raise ProtocolError("info body too short")
    version, kind, stream_id, fmt_byte, fs, c = _INFO_HEADER.unpack_from(data)
    _check_version_kind(version, kind, Kind.INFO)
    fmt = _format(fmt_byte)
    if not 1 <= c <= MAX_CHANNELS or not (np.isfinite(fs) and fs > 0):
        raise ProtocolError("bad channel count or sample rate in info body")
    pos = _INFO_HEADER.size
    scales, names, units = [], [], []
    for _ in range(c):
        if pos + 4 > len(data):
            raise ProtocolError("info body truncated")
        scales.append(struct.unpack_from("<f", data, pos)[0])
        name, pos = _read_short_str(data, pos + 4)
        unit, pos = _read_short_str(data, pos)
        names.append(name)
        units.append(unit)
    device, pos = _read_short_str(data, pos)
    if pos != len(data):
        raise ProtocolError("trailing bytes after info body")
    return StreamInfo(float(fs), tuple(names), tuple(scales), fmt, tuple(units), stream_id, device)


def body_kind(data: bytes | bytearray | memoryview) -> Kind:
    """Which decoder a body needs; raises ProtocolError for unknown versions or kinds."""
    if len(data) < 2:
        raise ProtocolError("body too short")
    if data[0] != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {data[0]}")
    kind = _KINDS.get(data[1])  # a dict lookup: Kind(...) runs enum's Python code on every packet
    if kind is None:
        raise ProtocolError(f"unknown body kind {data[1]}")
    return kind


def _short_str(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > 255:
        raise ProtocolError("string longer than 255 bytes")
    return bytes([len(raw)]) + raw


def _read_short_str(data: bytes, pos: int) -> tuple[str, int]:
    if pos >= len(data) or pos + 1 + data[pos] > len(data):
        raise ProtocolError("info body truncated")
    end = pos + 1 + data[pos]
    try:
        return data[pos + 1 : end].decode("utf-8"), end
    except UnicodeDecodeError:
        raise ProtocolError("info string is not UTF-8") from None


# ------------------------------------------------------- BLE notifications
# Every notification starts with a u16 word: bit 15 = sync, bits 0..14 = the
# stream index of its first sample mod 2**15.  A sync notification follows it
# with the full u32 seq and u64 device timestamp.  Samples follow, in the
# stream-info format, interleaved; their count comes from the payload length.
# A sync notification may carry no sample when the payload is too small.
_NOTE_WORD = struct.Struct("<H")
_NOTE_SYNC = struct.Struct("<HIQ")
SHORT_SEQ_BITS = 15
SHORT_SEQ_MOD = 1 << SHORT_SEQ_BITS
SYNC_FLAG = 0x8000


def samples_per_notification(payload_size: int, info: StreamInfo, sync: bool) -> int:
    """How many whole sample frames fit a notification of `payload_size` bytes."""
    head = _NOTE_SYNC.size if sync else _NOTE_WORD.size
    return max(0, (payload_size - head) // (info.channels * info.fmt.width))


class NotificationPacker:
    """Splits packets into BLE notifications no larger than the ATT payload.

    A sync header (full seq and timestamp) goes on the first notification and
    then at least every `sync_interval` notifications; `reset()` (on connect)
    forces the next one to be a sync.
    """

    def __init__(self, info: StreamInfo, payload_size: int = DEFAULT_ATT_PAYLOAD, sync_interval: int = 16):
        # Every stream starts with a sync notification, so a payload must carry at
        # least one sample behind the (longer) sync header, or packing never ends.
        if samples_per_notification(payload_size, info, sync=True) < 1:
            raise ProtocolError(
                f"ATT payload of {payload_size} bytes cannot carry a sample of {info.channels} x {info.fmt.name} "
                f"behind the {_NOTE_SYNC.size}-byte sync header"
            )
        self.info = info
        self.payload_size = payload_size
        self.sync_interval = max(1, sync_interval)
        self._since_sync = self.sync_interval

    def reset(self) -> None:
        self._since_sync = self.sync_interval

    def pack(self, packet: Packet) -> list[bytes]:
        """Notifications carrying all samples of `packet` (in info's format)."""
        period_us = 1e6 / self.info.fs
        interleaved = np.asarray(packet.samples).T
        out, i = [], 0
        while i < packet.n:
            sync = self._since_sync >= self.sync_interval
            k = samples_per_notification(self.payload_size, self.info, sync)
            seq = (packet.seq + i) % SEQ_MODULUS
            if sync:
                head = _NOTE_SYNC.pack(SYNC_FLAG | seq % SHORT_SEQ_MOD, seq, packet.t_us + round(i * period_us))
                self._since_sync = 0
            else:
                head = _NOTE_WORD.pack(seq % SHORT_SEQ_MOD)
            self._since_sync += 1
            out.append(head + pack_samples(interleaved[i : i + k], self.info.fmt))
            i += k
        return out


class NotificationDecoder:
    """Rebuilds data packets (full seq, device timestamp) from notifications.

    Notifications before the first sync are dropped and counted (`unsynced`);
    their samples surface as an exact gap once a sync arrives. Never raises.
    """

    def __init__(self, info: StreamInfo):
        self.counters = {"notifications": 0, "malformed": 0, "unsynced": 0}
        self._next = 0  # unwrapped index expected next
        self._started = False
        self.reset(info)

    def reset(self, info: StreamInfo | None = None) -> None:
        """Forget the sync point (after a reconnect the device re-sends one),
        and take the stream description the device now gives, if any."""
        if info is not None:
            self.info = info
            self._frame_bytes = info.channels * info.fmt.width
            self._period_us = 1e6 / info.fs
        self._sync: tuple[int, int] | None = None  # (unwrapped index, t_us)

    def feed(self, payload: bytes | bytearray | memoryview) -> Packet | None:
        """One notification to a packet, or None when it is dropped (counted)."""
        data = bytes(payload)
        self.counters["notifications"] += 1
        if len(data) < _NOTE_WORD.size:
            self.counters["malformed"] += 1
            return None
        (word,) = _NOTE_WORD.unpack_from(data)
        if word & SYNC_FLAG:
            if len(data) < _NOTE_SYNC.size:
                self.counters["malformed"] += 1
                return None
            _, seq, t_us = _NOTE_SYNC.unpack_from(data)
            if seq % SHORT_SEQ_MOD != word & ~SYNC_FLAG:
                self.counters["malformed"] += 1
                return None
            body = data[_NOTE_SYNC.size :]
            index = _unwrap(seq, self._next, SEQ_MODULUS) if self._started else seq
            self._started = True
            self._sync = (index, t_us)
            self._next = index  # the sync point is authoritative, also after a device restart
            if not body:  # a sync-only notification (payload too small for samples too)
                return None
        elif self._sync is None:
            self.counters["unsynced"] += 1
            return None
        else:
            body = data[_NOTE_WORD.size :]
            index = _unwrap(word, self._next, SHORT_SEQ_MOD)
        if len(body) % self._frame_bytes or not body:
            self.counters["malformed"] += 1
            return None
        codes = unpack_samples(body, self.info.fmt, self.info.channels)
        self._next = max(self._next, index + codes.shape[1])
        sync_index, sync_t = self._sync
        t_us = sync_t + round((index - sync_index) * self._period_us)
        return Packet(index % SEQ_MODULUS, max(0, t_us), self.info.fs, codes, self.info.scale,
                      self.info.fmt, self.info.stream_id)


def _unwrap(value: int, reference: int, modulus: int) -> int:
    """The integer congruent to `value` mod `modulus` nearest to `reference`."""
    delta = (value - reference) % modulus
    if delta >= modulus // 2:
        delta -= modulus
    return reference + delta


def unwrap_seq(seq: int, reference: int) -> int:
    """A 32-bit sequence number as the stream index nearest to `reference`."""
    return _unwrap(seq, reference, SEQ_MODULUS)


# ------------------------------------------------------------ BLE control
class ControlOp(enum.IntEnum):
    """Opcodes written to the control characteristic."""

    START = 1
    STOP = 2
    SET_RATE = 3  # followed by f32 sample rate in Hz
    REQUEST_INFO = 4  # device answers by refreshing the info characteristic


@dataclass(frozen=True)
class ControlCommand:
    op: ControlOp
    rate_hz: float | None = None


def encode_control(command: ControlCommand) -> bytes:
    if command.op == ControlOp.SET_RATE:
        if command.rate_hz is None or not command.rate_hz > 0:
            raise ProtocolError("SET_RATE needs a positive rate")
        return struct.pack("<Bf", command.op, command.rate_hz)
    return bytes([command.op])


def decode_control(data: bytes | bytearray | memoryview) -> ControlCommand:
    data = bytes(data)
    if not data:
        raise ProtocolError("empty control command")
    try:
        op = ControlOp(data[0])
    except ValueError:
        raise ProtocolError(f"unknown control opcode {data[0]}") from None
    if op == ControlOp.SET_RATE:
        if len(data) != 5:
            raise ProtocolError("SET_RATE takes a 4-byte float")
        (rate,) = struct.unpack_from("<f", data, 1)
        if not (np.isfinite(rate) and rate > 0):
            raise ProtocolError(f"bad rate {rate}")
        return ControlCommand(op, float(rate))
    if len(data) != 1:
        raise ProtocolError(f"{op.name} takes no argument")
    return ControlCommand(op)


# ----------------------------------------------- Heart Rate Measurement 0x2A37
_HR_UINT16 = 0x01
_HR_CONTACT_DETECTED = 0x02
_HR_CONTACT_SUPPORTED = 0x04
_HR_ENERGY = 0x08
_HR_RR = 0x10


@dataclass(frozen=True)
class HeartRateMeasurement:
    """Decoded 0x2A37 value. `contact` is None when the sensor does not
    report contact; `rr_s` are RR intervals in seconds (1/1024 s resolution)."""

    bpm: int
    contact: bool | None = None
    energy_kj: int | None = None
    rr_s: tuple[float, ...] = ()


def decode_heart_rate(data: bytes | bytearray | memoryview) -> HeartRateMeasurement:
    """Parse a Heart Rate Measurement value; raises ProtocolError (only) when malformed."""
    data = bytes(data)
    if len(data) < 2:
        raise ProtocolError("heart rate measurement too short")
    flags = data[0]
    pos = 1
    if flags & _HR_UINT16:
        if len(data) < 3:
            raise ProtocolError("heart rate measurement too short")
        bpm = struct.unpack_from("<H", data, 1)[0]
        pos = 3
    else:
        bpm = data[1]
        pos = 2
    contact = bool(flags & _HR_CONTACT_DETECTED) if flags & _HR_CONTACT_SUPPORTED else None
    energy = None
    if flags & _HR_ENERGY:
        if len(data) < pos + 2:
            raise ProtocolError("energy expended field truncated")
        energy = struct.unpack_from("<H", data, pos)[0]
        pos += 2
    rr: tuple[float, ...] = ()
    if flags & _HR_RR:
        tail = data[pos:]
        if len(tail) % 2:
            raise ProtocolError("RR interval field has an odd length")
        rr = tuple(float(v) / 1024.0 for v in np.frombuffer(tail, "<u2"))
    elif len(data) != pos:
        raise ProtocolError("trailing bytes in heart rate measurement")
    return HeartRateMeasurement(int(bpm), contact, energy, rr)


def encode_heart_rate(m: HeartRateMeasurement) -> bytes:
    """A Heart Rate Measurement value; uint16 HR only when bpm exceeds 255."""
    if not 0 <= m.bpm <= 0xFFFF:
        raise ProtocolError(f"heart rate {m.bpm} out of range")
    flags = 0
    body = bytearray()
    if m.bpm > 0xFF:
        flags |= _HR_UINT16
        body += struct.pack("<H", m.bpm)
    else:
        body.append(m.bpm)
    if m.contact is not None:
        flags |= _HR_CONTACT_SUPPORTED | (_HR_CONTACT_DETECTED if m.contact else 0)
    if m.energy_kj is not None:
        if not 0 <= m.energy_kj <= 0xFFFF:
            raise ProtocolError(f"energy expended {m.energy_kj} out of range")
        flags |= _HR_ENERGY
        body += struct.pack("<H", m.energy_kj)
    if m.rr_s:
        ticks = [round(r * 1024) for r in m.rr_s]
        if not all(0 <= t <= 0xFFFF for t in ticks):
            raise ProtocolError("RR interval out of range (0..64 s)")
        flags |= _HR_RR
        body += struct.pack(f"<{len(ticks)}H", *ticks)
    return bytes([flags]) + bytes(body)
