"""BITalino's serial protocol: the one-byte commands a host sends and the frames the board streams.

A BITalino (PLUX) is a serial port to its host: over Bluetooth classic (RFCOMM; `/dev/rfcomm0` once
bound on Linux, `/dev/tty.BITalino-*` on macOS, a COM port on Windows) or a USB-serial cable. Idle, it
answers commands; after a start command it sends one frame per sample, at 1, 10, 100 or 1000 Hz,
until the stop command. The commands used here:

    version    0x07                          the board answers a line holding "BITalino" and "\\n"
    rate       (code << 6) | 0x03            code 0, 1, 2, 3 for 1, 10, 100, 1000 Hz
    start      (mask << 2) | 0x01            mask bit i acquires analog input A(i+1)
    stop       0x00                          in acquisition only (idle, 0x00 sets the battery threshold)

A BITalino (r)evolution BLE carries the same bytes over Bluetooth Low Energy: its BLE module bridges the
board's serial line to one GATT service, a command written to one characteristic and the board's
bytes (answers and frames, cut wherever a notification's payload ends) notified on another.

A frame holds the acquired inputs in ascending order, then the four digital lines, then a 4-bit
sequence number and a 4-bit CRC. Read as one little-endian integer of 8·n bits, the last byte holds
sequence (high nibble) and CRC (low nibble), the four bits below it the digital lines, and the
analog fields follow downwards: 10 bits each for the first four inputs acquired, 6 bits for a fifth
and sixth. A frame is ceil((12 + widths) / 8) bytes: 3 for one input, 8 for six.

The CRC is the 4-bit CRC (x⁴ + x + 1) of the whole frame with its own nibble zeroed, bits in from the
most significant. The sequence number counts frames modulo 16, so a reader sees how many frames in
a row a link lost only modulo 16.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: the board's sample rates, and the code a rate command carries for each
RATES = {1: 0, 10: 1, 100: 2, 1000: 3}
#: the analog inputs, by their names on the board
INPUTS = ("A1", "A2", "A3", "A4", "A5", "A6")
VERSION = 0x07
STOP = 0x00
#: the BLE module's service: commands are written to one characteristic, the board's bytes notified on the other
BLE_SERVICE_UUID = "c566488a-0882-4e1b-a6d0-0b717e652234"
BLE_COMMANDS_UUID = "4051eb11-bf0a-4c74-8730-a48f4193fcea"
BLE_FRAMES_UUID = "40fdba6b-672e-47c4-808a-e529adff3633"
#: the sequence number counts frames modulo this
SEQUENCE_MODULUS = 16
#: bits of the k-th analog field of a frame (the fifth and sixth acquired inputs have 6)
FIELD_BITS = (10, 10, 10, 10, 6, 6)
#: bits above the analog fields: four digital lines, sequence number, CRC
HEADER_BITS = 12


def checked_rate(fs: float) -> int:
    """`fs` as one of the board's rates; ValueError (one line) if it is not one."""
    if fs not in RATES:
        raise ValueError(f"a BITalino samples at {', '.join(map(str, RATES))} Hz, not {fs:g}")
    return int(fs)


def rate_command(fs: float) -> int:
    return (RATES[int(fs)] << 6) | 0x03


def start_command(inputs: Sequence[int]) -> int:
    """The command that starts acquiring `inputs` (0 for A1 ... 5 for A6)."""
    return 0x01 | sum(1 << (2 + i) for i in set(inputs))


def parse_rate(command: int) -> int | None:
    """The rate (Hz) a rate command sets; None if `command` is not one."""
    if command & 0x3F != 0x03:
        return None
    return {code: fs for fs, code in RATES.items()}[command >> 6]


def parse_start(command: int) -> list[int] | None:
    """The inputs (0 for A1, ...) a start command acquires; None if `command` is not one."""
    if command & 0x03 != 0x01 or command >> 2 == 0:
        return None
    return [i for i in range(len(INPUTS)) if command >> (2 + i) & 1]


def frame_size(n_inputs: int) -> int:
    return math.ceil((HEADER_BITS + sum(FIELD_BITS[:n_inputs])) / 8)


def _field_shifts(n_inputs: int) -> list[int]:
    """Where each analog field starts, in bits from the frame's least significant bit."""
    top = 8 * frame_size(n_inputs) - HEADER_BITS
    return [top - sum(FIELD_BITS[: k + 1]) for k in range(n_inputs)]


def _crc_table() -> np.ndarray:
    """CRC state after one byte, by state before it and byte: `TABLE[crc, byte]`."""
    table = np.zeros((16, 256), np.uint8)
    for crc in range(16):
        for byte in range(256):
            x = crc
            for bit in range(7, -1, -1):
                x <<= 1
                if x & 0x10:
                    x ^= 0x13
                x ^= (byte >> bit) & 1
            table[crc, byte] = x
    return table


_CRC = _crc_table()


def crc4(frames: np.ndarray) -> np.ndarray:
    """The CRC each frame (a row of bytes, uint8) should carry: its low nibble of the last byte ignored."""
    crc = np.zeros(frames.shape[0], np.uint8)
    for i in range(frames.shape[1] - 1):
        crc = _CRC[crc, frames[:, i]]
    return _CRC[crc, frames[:, -1] & 0xF0]


def _as_integers(frames: np.ndarray) -> np.ndarray:
    """Each frame as one little-endian uint64 (a frame is at most 8 bytes)."""
    padded = np.zeros((frames.shape[0], 8), np.uint8)
    padded[:, : frames.shape[1]] = frames
    return padded.view("<u8")[:, 0]


def decode(frames: np.ndarray, n_inputs: int) -> tuple[np.ndarray, np.ndarray]:
    """Sequence numbers (k,) and analog codes (n_inputs, k) of frames (k, frame_size) of uint8."""
    words = _as_integers(frames)
    codes = np.empty((n_inputs, frames.shape[0]), np.uint16)
    for k, shift in enumerate(_field_shifts(n_inputs)):
        codes[k] = (words >> np.uint64(shift)) & np.uint64((1 << FIELD_BITS[k]) - 1)
    return frames[:, -1] >> 4, codes


def encode(seq: np.ndarray, codes: np.ndarray, digital: int = 0) -> bytes:
    """Frames of sequence numbers (k,) and analog codes (n_inputs, k), CRC set: what a board sends."""
    n_inputs, k = codes.shape
    size = frame_size(n_inputs)
    words = np.zeros(k, np.uint64)
    for j, shift in enumerate(_field_shifts(n_inputs)):
        field = codes[j].astype(np.uint64) & np.uint64((1 << FIELD_BITS[j]) - 1)
        words |= field << np.uint64(shift)
    top = 8 * size
    words |= np.uint64(digital & 0xF) << np.uint64(top - HEADER_BITS)
    words |= (np.asarray(seq, np.uint64) % np.uint64(SEQUENCE_MODULUS)) << np.uint64(top - 4)
    frames = words.astype("<u8").view(np.uint8).reshape(k, 8)[:, :size].copy()
    frames[:, -1] |= crc4(frames)
    return frames.tobytes()
