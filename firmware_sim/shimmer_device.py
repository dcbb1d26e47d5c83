"""A Shimmer3 on a pseudo-terminal: answers its host's commands, streams data packets once started.

`ShimmerDevice` answers what a Shimmer3 with LogAndStream firmware answers
(each command acknowledged with 0xFF: firmware version, inquiry, get and set
sampling rate, sensors, status acknowledgement, start, stop) and, streaming,
sends the data packets of `himae_stream/shimmer.py` (pacing, faults, idle and
restart as `CommandedDevice` says). The recording's channels are its internal
ADCs A13, A12, A1, A14 (a GSR+ unit's optical pulse probe is on A13) as 12-bit
codes (the recording's range mapped to 50 … 4045). The sampling clock (32768
Hz) runs from the first start on, across stops, as the sensor's does. A
corrupted packet has its start byte changed.
"""

from __future__ import annotations

import numpy as np

from firmware_sim.commanded_device import CommandedDevice
from himae_stream import shimmer

#: the channels (inquiry ids) the recording's channels are carried on, in order
ADC_IDS = (0x12, 0x11, 0x10, 0x13)
#: the firmware it reports: LogAndStream 0.16.0
FIRMWARE = (3, 0, 16, 0)
#: arguments after each command that takes some
ARGUMENT_BYTES = {shimmer.SET_RATE: 2, shimmer.STATUS_ACK: 1, 0x08: 3}


class ShimmerDevice(CommandedDevice):
    """A simulated Shimmer3 replaying `model`'s recording, sampling at 32768 Hz / `divider`."""

    transport = "shimmer"
    CODE_RANGE = (50, 4045)
    STOP = shimmer.STOP

    def __init__(self, *args, divider: int = 256, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.divider = divider
        self.inquiry = shimmer.Inquiry(divider, ADC_IDS[: min(self.model.channels, len(ADC_IDS))])

    @property
    def rate(self) -> float:
        return shimmer.CLOCK_HZ / self.divider

    def values(self, rate: float, start: int, stop: int) -> np.ndarray:
        """The channels' codes of samples [start, stop) at `rate`: (channels, n)."""
        return np.clip(self.adc_codes(rate, start, stop)[: len(self.inquiry.ids)], 0, 4095)

    def _command(self, command: int) -> bool:
        arguments = self.read_host(ARGUMENT_BYTES.get(command, 0), timeout_s=1.0)
        ack = bytes([shimmer.ACK])
        if command == shimmer.VERSION:
            kind, major, minor, release = FIRMWARE
            self._write(ack + bytes([shimmer.VERSION_RESPONSE]) + kind.to_bytes(2, "little")
                        + major.to_bytes(2, "little") + bytes([minor, release]), [])
        elif command == shimmer.INQUIRY:
            self.inquiry = shimmer.Inquiry(self.divider, self.inquiry.ids)
            self._write(self.inquiry.encode(), [])
        elif command == shimmer.GET_RATE:
            self._write(ack + bytes([shimmer.RATE_RESPONSE]) + self.divider.to_bytes(2, "little"), [])
        elif command == shimmer.SET_RATE and len(arguments) == 2:
            self.divider = max(1, int.from_bytes(arguments, "little"))
            self._write(ack, [])
        elif command in (shimmer.STOP, shimmer.STATUS_ACK, 0x08):
            self._write(ack, [])
        elif command == shimmer.START:
            self._write(ack, [])
            return self.acquire(self.rate, self.divider)
        return False

    def _stopped(self) -> None:
        self._write(bytes([shimmer.ACK]), [])

    def _frames(self, rate: float, divider: int, first: int, start: int, stop: int) -> bytes:
        # the clock counts from the first start: sample k of this rate is stamped k periods on
        return shimmer.encode(np.arange(start, stop) * divider, self.values(rate, start, stop), self.inquiry)

    def _corrupted(self, packet: bytes) -> bytes:
        return b"\x55" + packet[1:]

    def carried(self) -> list[tuple[str, str]]:
        """(channel, recording channel) of each channel the sensor streams."""
        return [(shimmer.CHANNELS[i].name, name) for i, name in zip(self.inquiry.ids, self.model.info.channel_names)]

    def source_url(self) -> str:
        """The URL that reads this sensor as it is set."""
        return f"serial://{self.path}?format=shimmer"
