"""A BITalino on a pseudo-terminal: idle until its host commands it, then one frame per sample.

`BitalinoDevice` answers the commands a BITalino answers (version; rate;
start with a set of analog inputs; stop) and, acquiring, sends the frames of
`himae_stream/bitalino.py` at the commanded rate (pacing, faults, idle and
restart as `CommandedDevice` says). The recording's channels are its inputs
A1, A2, ... as 10-bit codes (the recording's range mapped to 12 … 1012); an
input with no channel reads 0. Acquiring again starts the counter at 0.
"""

from __future__ import annotations

import numpy as np

from firmware_sim.commanded_device import CommandedDevice
from himae_stream import bitalino

#: what the board answers the version command with
VERSION = b"BITalino_v5.2\n"


class BitalinoDevice(CommandedDevice):
    """A simulated BITalino replaying `model`'s recording."""

    transport = "bitalino"
    CODE_RANGE = (12, 1012)
    STOP = bitalino.STOP

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rate = 1000

    def codes(self, rate: int, inputs: list[int], start: int, stop: int) -> np.ndarray:
        """The analog codes of samples [start, stop) of `inputs` (0 for A1 ...) at `rate`: (inputs, n)."""
        values = self.adc_codes(rate, start, stop)
        codes = np.zeros((len(inputs), stop - start), np.uint16)
        for row, i in enumerate(inputs):
            if i < values.shape[0]:
                codes[row] = np.clip(values[i], 0, 1023)
        codes[4:] >>= 4  # a fifth and sixth input have 6 bits
        return codes

    def _command(self, command: int) -> bool:
        if command == bitalino.VERSION:
            self._write(VERSION, [])
        elif (rate := bitalino.parse_rate(command)) is not None:
            self.rate = rate
        elif (inputs := bitalino.parse_start(command)) is not None:
            return self.acquire(self.rate, inputs)
        return False

    def _frames(self, rate: int, inputs: list[int], first: int, start: int, stop: int) -> bytes:
        return bitalino.encode(np.arange(start - first, stop - first), self.codes(rate, inputs, start, stop))

    def _corrupted(self, frame: bytes) -> bytes:
        """`frame` with a byte changed so that its CRC fails (a change the CRC misses, 1 in 16, is tried again)."""
        for _ in range(64):
            bad = self.faults.corrupt(frame, keep_nonzero=False)
            row = np.frombuffer(bad, np.uint8)[None]
            if bitalino.crc4(row)[0] != row[0, -1] & 0x0F:
                return bad
        return bytes([frame[0] ^ 0x80]) + frame[1:]  # one flipped bit: always caught

    def carried(self) -> list[tuple[str, str]]:
        """(input, recording channel) of each channel the board carries."""
        return list(zip(bitalino.INPUTS, self.model.info.channel_names))

    def source_url(self, rate: int = 1000) -> str:
        """The URL that reads this board at `rate` Hz: every channel of the recording."""
        names = ",".join(bitalino.INPUTS[: min(self.model.channels, len(bitalino.INPUTS))])
        return f"serial://{self.path}?format=bitalino&fs={rate}&channels={names}"
