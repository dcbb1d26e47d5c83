"""A BITalino on a pseudo-terminal: idle until its host commands it, then one frame per sample.

`BitalinoDevice` answers the commands a BITalino answers (version; rate;
start with a set of analog inputs; stop) and, acquiring, sends the frames of
`himae_stream/bitalino.py` at the commanded rate, paced in device time like
`SerialDevice` (whose pseudo-terminal, pacing and drop log it shares). The
recording's channels are its inputs A1, A2, ... as 10-bit codes (the
recording's range mapped to 12 … 1012); an input with no channel reads 0.

Faults, per unit of frames (`frame_ms`): `loss` drops a unit (its sequence
numbers are skipped, as when a Bluetooth link's buffer overflows), `corrupt`
changes a byte in it, and a disconnect stops sending while the board keeps
counting. A host that closes the port leaves the board idle, as a dropped
Bluetooth connection does; acquiring again starts the counter at 0 and the
recording where real time has got to.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import select
import threading
import time

import numpy as np

from firmware_sim.device import DeviceModel, frames
from firmware_sim.faults import Fate, Faults
from firmware_sim.serial_device import OPEN_SETTLE_S, SerialDevice
from himae_stream import bitalino

#: what the board answers the version command with
VERSION = b"BITalino_v5.2\n"
#: the codes a recording's range spans
CODE_RANGE = (12, 1012)


class BitalinoDevice(SerialDevice):
    """A simulated BITalino replaying `model`'s recording; `commands` lists the command bytes it got."""

    transport = "bitalino"
    FATES = frozenset({Fate.SEND, Fate.LOSE, Fate.CORRUPT})
    RESYNC = b""  # frames carry no delimiter: the reader finds their boundaries by their CRCs

    def __init__(self, model: DeviceModel, faults: Faults | None = None, speed: float | None = 1.0,
                 baud: int = 115_200, frame_ms: float = 10.0) -> None:
        super().__init__(model, faults, speed, baud, frame_ms)
        self.frame_s = frame_ms / 1000.0
        self.commands: list[int] = []
        self.acquisitions: list[tuple[int, list[int]]] = []  # (rate, inputs) of each start
        self.rate = 1000
        self.idle = threading.Event()  # set while the board waits for commands
        self._models: dict[int, DeviceModel] = {}
        signals = model.original.signals
        finite = signals[np.isfinite(signals)]
        self._range = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        self._next = 0  # the sample the next acquisition at this rate starts with, at the earliest

    # ------------------------------------------------------------ what the board measures
    def model_at(self, rate: int) -> DeviceModel:
        """The recording as the board samples it at `rate` Hz."""
        if rate not in self._models:
            config = dataclasses.replace(self.model.config, fs=rate)
            self._models[rate] = self.model if self.model.fs == rate else DeviceModel(self.model.original, config)
        return self._models[rate]

    def codes(self, rate: int, inputs: list[int], start: int, stop: int) -> np.ndarray:
        """The analog codes of samples [start, stop) of `inputs` (0 for A1 ...) at `rate`: (inputs, n)."""
        values = self.model_at(rate).values(start, stop)
        low, high = self._range
        scaled = CODE_RANGE[0] + (values - low) / ((high - low) or 1.0) * (CODE_RANGE[1] - CODE_RANGE[0])
        codes = np.zeros((len(inputs), stop - start), np.uint16)
        for row, i in enumerate(inputs):
            if i < values.shape[0]:
                codes[row] = np.clip(np.rint(scaled[i]), 0, 1023)
        codes[4:] >>= 4  # a fifth and sixth input have 6 bits
        return codes

    # ------------------------------------------------------------ idle: commands
    def run(self) -> None:
        """Answer commands until the recording has been sent (or `stop()`)."""
        while not self._stop.is_set():
            self.idle.set()
            command = self._next_command()
            if command is None:
                continue
            if command == bitalino.VERSION:
                self._write(VERSION, [])
            elif (rate := bitalino.parse_rate(command)) is not None:
                self.rate = rate
            elif (inputs := bitalino.parse_start(command)) is not None:
                if self._acquire(inputs):
                    break

    def _next_command(self, timeout_s: float = 0.05) -> int | None:
        """The next command byte the host wrote, waiting up to `timeout_s`; None if none."""
        ready, _, _ = select.select([self._master], [], [], timeout_s)
        if not ready:
            return None
        try:
            data = os.read(self._master, 1)
        except BlockingIOError:  # woken by the host opening or closing the port, not by a byte
            return None
        except OSError as exc:
            if exc.errno != errno.EIO:  # EIO: no host has the port open
                raise
            self._stop.wait(0.01)
            return None
        if not data:
            return None
        self.commands.append(data[0])
        return data[0]

    # ------------------------------------------------------------ acquiring: frames
    def _acquire(self, inputs: list[int]) -> bool:
        """Send frames of `inputs` at the commanded rate until the host stops the board or goes away;
        True when the recording has all been sent."""
        rate = self.rate
        self.idle.clear()
        self.acquisitions.append((rate, inputs))
        model = self.model_at(rate)
        if len(self.acquisitions) == 1:
            self._stop.wait(OPEN_SETTLE_S)
            self.pacer.restart()
            first = 0
        else:  # the recording went on meanwhile
            first = max(self._next, int(self.pacer.device_now() * rate))
            for a, b in [(self._next, first)] if first > self._next else []:
                self.log.drop(a, b, "idle")
        per_unit = max(1, round(rate * self.frame_s))
        size = bitalino.frame_size(len(inputs))
        for start, stop, spans in frames(model, per_unit, self.faults.disconnected, self.log, first):
            self._next = stop
            if not self._wait(stop / rate):
                return True
            self.produced = stop
            if self._host_stopped():
                return False
            if not spans:
                continue
            unit = b"".join(bitalino.encode(np.arange(a - first, b - first), self.codes(rate, inputs, a, b))
                            for a, b in spans)
            fate = self.faults.fate(self.FATES)
            if fate is Fate.LOSE:
                self._drop(spans, "lost")
            elif fate is Fate.CORRUPT:  # a byte of the unit's first frame changed: that frame fails its CRC
                (a, b), rest = spans[0], spans[1:]
                self._drop([(a, a + 1)], "corrupted")
                self._write(self._corrupted(unit[:size]) + unit[size:], [(a + 1, b), *rest])
            else:
                self._write(unit, spans)
        self.finished_at = time.monotonic()
        return True

    def _corrupted(self, frame: bytes) -> bytes:
        """`frame` with a byte changed so that its CRC fails (a change the CRC misses, 1 in 16, is tried again)."""
        for _ in range(64):
            bad = self.faults.corrupt(frame, keep_nonzero=False)
            row = np.frombuffer(bad, np.uint8)[None]
            if bitalino.crc4(row)[0] != row[0, -1] & 0x0F:
                return bad
        return bytes([frame[0] ^ 0x80]) + frame[1:]  # one flipped bit: always caught

    def _host_stopped(self) -> bool:
        """Whether the host sent the stop command or closed the port: either leaves the board idle."""
        if not self._reader_present():
            return True
        while select.select([self._master], [], [], 0)[0]:
            try:
                data = os.read(self._master, 64)
            except BlockingIOError:
                return False
            except OSError:
                return True
            self.commands.extend(data)
            if bitalino.STOP in data:
                return True
        return False

    def source_url(self, rate: int = 1000) -> str:
        """The URL that reads this board at `rate` Hz: every channel of the recording."""
        names = ",".join(bitalino.INPUTS[: min(self.model.channels, len(bitalino.INPUTS))])
        return f"serial://{self.path}?format=bitalino&fs={rate}&channels={names}"
