"""The Shimmer3's Bluetooth protocol (LogAndStream and BtStream firmware): commands, answers, data packets.

A Shimmer3 (Shimmer Research: the GSR+ unit with its optical pulse probe on internal ADC A13 is a
common PPG setup) is a serial port to its host over Bluetooth classic. The host sends a command byte
(and its arguments); the sensor acknowledges each with 0xFF, followed by the answer where there is
one. The commands used here:

    inquiry        0x01    0xFF 0x02, divider u16, configuration u32, channels u8, buffer u8, channel ids
    set rate       0x05    divider u16 (the rate is 32768 Hz / divider)
    start          0x07    0xFF, then data packets
    stop           0x20    0xFF
    version        0x2E    0xFF 0x2F, firmware type u16, major u16, minor u8, release u8

(multi-byte fields little-endian). A data packet is 0x00, the sampling clock's 24-bit count (32768 Hz,
little-endian), then each enabled channel in inquiry order, in its own width, signedness and byte
order (`CHANNELS`). The count steps by the divider from one packet to the next, so packets a link
lost are counted exactly (up to 512 s, where it wraps). The sensor may put other messages between
packets: an acknowledgement (0xFF) or an in-stream answer (0x8A, then a status byte 0x71 and one byte,
or a battery reading 0x94 and three).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INQUIRY = 0x01
INQUIRY_RESPONSE = 0x02
GET_RATE = 0x03
RATE_RESPONSE = 0x04
SET_RATE = 0x05
START = 0x07
STOP = 0x20
VERSION = 0x2E
VERSION_RESPONSE = 0x2F
STATUS_ACK = 0xA3
ACK = 0xFF
DATA = 0x00
IN_STREAM = 0x8A
#: in-stream answers: their code after IN_STREAM, and the bytes that follow it
IN_STREAM_SIZES = {0x71: 1, 0x94: 3}
#: the sampling clock (Hz): a rate is this over a whole divider
CLOCK_HZ = 32768
TIMESTAMP_BYTES = 3
TIMESTAMP_MODULUS = 1 << 24


@dataclass(frozen=True)
class Channel:
    """A data channel: its name here, bytes, signedness, byte order."""

    name: str
    size: int
    signed: bool
    little: bool = True


def _xyz(name: str, signed: bool = True, little: bool = True) -> list[Channel]:
    return [Channel(f"{name}_{axis}", 2, signed, little) for axis in "XYZ"]


#: the channels a data packet can carry, by the id the inquiry answer lists; None where the firmware
#: does not say how wide it is (a stream with one of those cannot be read)
CHANNELS: dict[int, Channel | None] = dict(enumerate([
    *_xyz("ACCEL_LN"), Channel("VBATT", 2, True), *_xyz("ACCEL_WR"), *_xyz("MAG"), *_xyz("GYRO", little=False),
    Channel("EXT_A7", 2, False), Channel("EXT_A6", 2, False), Channel("EXT_A15", 2, False),
    Channel("INT_A1", 2, False), Channel("INT_A12", 2, False), Channel("INT_A13", 2, False),
    Channel("INT_A14", 2, False), None, None, None, None, None, None,
    Channel("TEMP", 2, False, False), Channel("PRESSURE", 3, False, False), Channel("GSR", 2, False),
    Channel("EXG1_STATUS", 1, False), Channel("EXG1_CH1", 3, True, False), Channel("EXG1_CH2", 3, True, False),
    Channel("EXG2_STATUS", 1, False), Channel("EXG2_CH1", 3, True, False), Channel("EXG2_CH2", 3, True, False),
    Channel("EXG1_CH1_16", 2, True, False), Channel("EXG1_CH2_16", 2, True, False),
    Channel("EXG2_CH1_16", 2, True, False), Channel("EXG2_CH2_16", 2, True, False),
    Channel("STRAIN_HIGH", 2, False), Channel("STRAIN_LOW", 2, False),
]))


def divider_for(fs: float) -> int:
    """The sampling divider nearest to `fs` Hz; ValueError (one line) if the sensor has none near it."""
    divider = round(CLOCK_HZ / fs)
    if not 1 <= divider < 1 << 16:
        raise ValueError(f"a Shimmer3 samples at 32768 Hz over a divider of 1 to 65535, not at {fs:g} Hz")
    return divider


class ShimmerProtocolError(ValueError):
    """An inquiry answer this reader cannot use."""


@dataclass(frozen=True)
class Inquiry:
    """What the inquiry answers: the sampling divider and the enabled channels' ids, in packet order."""

    divider: int
    ids: tuple[int, ...]
    config: int = 0
    buffer: int = 1

    @property
    def fs(self) -> float:
        return CLOCK_HZ / self.divider

    @property
    def channels(self) -> list[Channel]:
        unknown = [i for i in self.ids if CHANNELS.get(i) is None]
        if unknown:
            raise ShimmerProtocolError(f"the sensor streams channel(s) {', '.join(f'0x{i:02x}' for i in unknown)}, "
                                       "whose width its firmware does not say: disable those sensors")
        return [CHANNELS[i] for i in self.ids]

    @property
    def packet_size(self) -> int:
        return 1 + TIMESTAMP_BYTES + sum(c.size for c in self.channels)

    def encode(self) -> bytes:
        """The answer as the sensor sends it, acknowledgement first."""
        return (bytes([ACK, INQUIRY_RESPONSE]) + self.divider.to_bytes(2, "little") + self.config.to_bytes(4, "little")
                + bytes([len(self.ids), self.buffer, *self.ids]))

    @classmethod
    def parse(cls, data: bytes) -> tuple[Inquiry, int] | None:
        """The inquiry answer at the start of `data` (its acknowledgement first) and its length; None while
        incomplete."""
        if len(data) < 10:
            return None
        if data[:2] != bytes([ACK, INQUIRY_RESPONSE]):
            raise ShimmerProtocolError(f"expected an inquiry answer (ff 02), got {data[:2].hex(' ')}")
        n = data[8]
        if len(data) < 10 + n:
            return None
        divider = int.from_bytes(data[2:4], "little")
        if divider == 0:
            raise ShimmerProtocolError("the inquiry answer gives a sampling divider of 0")
        inquiry = cls(divider, tuple(data[10:10 + n]), int.from_bytes(data[4:8], "little"), data[9])
        inquiry.channels  # refuse a channel of unknown width now
        return inquiry, 10 + n


def _fields(channels: list[Channel]) -> list[tuple[int, Channel]]:
    """Each channel's byte offset in a packet."""
    offsets = np.cumsum([1 + TIMESTAMP_BYTES] + [c.size for c in channels])
    return list(zip(offsets[:-1].tolist(), channels))


def _integers(rows: np.ndarray, size: int, little: bool) -> np.ndarray:
    """Unsigned integers of `size` bytes from rows (k, size) of uint8."""
    order = range(size) if little else range(size - 1, -1, -1)
    return sum(rows[:, i].astype(np.int64) << (8 * k) for k, i in enumerate(order))


def decode(packets: np.ndarray, inquiry: Inquiry) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps (k,) and channel values (channels, k, float64) of packets (k, packet_size) of uint8."""
    stamps = _integers(packets[:, 1:1 + TIMESTAMP_BYTES], TIMESTAMP_BYTES, True)
    values = np.empty((len(inquiry.ids), packets.shape[0]))
    for row, (at, channel) in enumerate(_fields(inquiry.channels)):
        raw = _integers(packets[:, at:at + channel.size], channel.size, channel.little)
        if channel.signed:
            raw = np.where(raw >= 1 << (8 * channel.size - 1), raw - (1 << (8 * channel.size)), raw)
        values[row] = raw
    return stamps, values


def encode(stamps: np.ndarray, values: np.ndarray, inquiry: Inquiry) -> bytes:
    """Data packets of timestamps (k,) and integer channel values (channels, k): what a sensor sends."""
    k = len(stamps)
    packets = np.zeros((k, inquiry.packet_size), np.uint8)
    fields = [(1, Channel("", TIMESTAMP_BYTES, False))] + _fields(inquiry.channels)
    for (at, channel), column in zip(fields, [np.asarray(stamps) % TIMESTAMP_MODULUS, *values]):
        raw = np.asarray(column, np.int64) % (1 << (8 * channel.size))
        order = range(channel.size) if channel.little else range(channel.size - 1, -1, -1)
        for shift, i in enumerate(order):
            packets[:, at + i] = (raw >> (8 * shift)) & 0xFF
    return packets.tobytes()
