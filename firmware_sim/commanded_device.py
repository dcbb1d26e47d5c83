"""A wearable on a pseudo-terminal that streams only when its host tells it to (a BITalino, a Shimmer3).

`CommandedDevice` is idle until a command starts it, then sends units of its
frames at the commanded rate, paced in device time like `SerialDevice` (whose
pseudo-terminal, pacing and drop log it shares), until the host sends the stop
command or closes the port (a dropped Bluetooth connection leaves the sensor
idle). What the commands are and what goes on the wire is the subclass's
(`_command`, `_frames`, `_corrupted`). The recording's channels become ADC codes
over `CODE_RANGE` of the recording's range.

Faults, per unit of frames (`frame_ms`): `loss` drops a unit (its sample clock
runs on, as when a Bluetooth link's buffer overflows), `corrupt` changes its
first frame so the host cannot take it, and a disconnect stops sending while
the sensor keeps sampling. Acquiring again starts where real time has got to.
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


class CommandedDevice(SerialDevice):
    """A simulated sensor answering commands on a pty; `commands` lists the bytes its host wrote."""

    FATES = frozenset({Fate.SEND, Fate.LOSE, Fate.CORRUPT})
    RESYNC = b""  # frames carry no delimiter
    #: ADC codes the recording's range spans
    CODE_RANGE = (0, 1)
    #: the byte that stops an acquisition
    STOP = 0x00

    def __init__(self, model: DeviceModel, faults: Faults | None = None, speed: float | None = 1.0,
                 baud: int = 115_200, frame_ms: float = 10.0) -> None:
        super().__init__(model, faults, speed, baud, frame_ms)
        self.frame_s = frame_ms / 1000.0
        self.commands: list[int] = []
        self.acquisitions: list[tuple] = []  # (rate, what the start command asked) of each start
        self.idle = threading.Event()  # set while the sensor waits for commands
        self._models: dict[float, DeviceModel] = {}
        finite = model.original.signals[np.isfinite(model.original.signals)]
        self._range = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        self._next = 0  # the sample the next acquisition at this rate starts with, at the earliest

    # ------------------------------------------------------------ what the sensor measures
    def model_at(self, rate: float) -> DeviceModel:
        """The recording as the sensor samples it at `rate` Hz."""
        if rate not in self._models:
            config = dataclasses.replace(self.model.config, fs=rate)
            self._models[rate] = self.model if self.model.fs == rate else DeviceModel(self.model.original, config)
        return self._models[rate]

    def adc_codes(self, rate: float, start: int, stop: int) -> np.ndarray:
        """The recording's channels for samples [start, stop) at `rate` as ADC codes: (channels, n)."""
        low, high = self._range
        span = self.CODE_RANGE[1] - self.CODE_RANGE[0]
        values = self.model_at(rate).values(start, stop)
        return np.rint(self.CODE_RANGE[0] + (values - low) / ((high - low) or 1.0) * span).astype(np.int64)

    # ------------------------------------------------------------ idle: commands
    def run(self) -> None:
        """Answer commands until the recording has been sent (or `stop()`)."""
        while not self._stop.is_set():
            self.idle.set()
            command = self.read_host(1)
            if command and self._command(command[0]):
                break

    def _command(self, command: int) -> bool:
        """Act on a command byte (reading its arguments with `read_host`); True once the recording has all
        been sent."""
        raise NotImplementedError

    def read_host(self, n: int, timeout_s: float = 0.05) -> bytes:
        """Up to `n` bytes the host wrote, waiting up to `timeout_s` for each; b"" if none came."""
        got = b""
        while len(got) < n:
            ready, _, _ = select.select([self._master], [], [], timeout_s)
            if not ready:
                break
            try:
                data = os.read(self._master, n - len(got))
            except BlockingIOError:  # woken by the host opening or closing the port, not by a byte
                continue
            except OSError as exc:
                if exc.errno != errno.EIO:  # EIO: no host has the port open
                    raise
                self._stop.wait(0.01)
                break
            if not data:
                break
            got += data
        self.commands.extend(got)
        return got

    # ------------------------------------------------------------ acquiring: frames
    def acquire(self, rate: float, asked) -> bool:
        """Send frames at `rate` until the host stops the sensor or goes away; True when the recording has
        all been sent. `asked` is what the start command asked for (the subclass's, for `_frames`)."""
        self.idle.clear()
        self.acquisitions.append((rate, asked))
        model = self.model_at(rate)
        if len(self.acquisitions) == 1:
            self._stop.wait(OPEN_SETTLE_S)
            self.pacer.restart()
            first = 0
        else:  # the recording went on meanwhile
            first = max(self._next, int(self.pacer.device_now() * rate))
            if first > self._next:
                self.log.drop(self._next, first, "idle")
        per_unit = max(1, round(rate * self.frame_s))
        for _, stop, spans in frames(model, per_unit, self.faults.disconnected, self.log, first):
            self._next = stop
            if not self._wait(stop / rate):
                return True
            self.produced = stop
            stopped = self._host_stopped()
            if stopped:
                if stopped == "command":
                    self._stopped()
                return False
            if not spans:
                continue
            units = [self._frames(rate, asked, first, a, b) for a, b in spans]
            fate = self.faults.fate(self.FATES)
            if fate is Fate.LOSE:
                self._drop(spans, "lost")
            elif fate is Fate.CORRUPT:  # the unit's first frame changed so that the host cannot take it
                (a, b), rest = spans[0], spans[1:]
                self._drop([(a, a + 1)], "corrupted")
                size = len(units[0]) // (b - a)
                self._write(self._corrupted(units[0][:size]) + b"".join([units[0][size:], *units[1:]]),
                            [(a + 1, b), *rest])
            else:
                self._write(b"".join(units), spans)
        self.finished_at = time.monotonic()
        return True

    def _frames(self, rate: float, asked, first: int, start: int, stop: int) -> bytes:
        """The frames of samples [start, stop) of an acquisition that began at sample `first`."""
        raise NotImplementedError

    def _corrupted(self, frame: bytes) -> bytes:
        """`frame` changed as a link would, so that the host cannot take it."""
        raise NotImplementedError

    def _stopped(self) -> None:
        """What the sensor does on the stop command, before it is idle (answer it, for one)."""

    def _host_stopped(self) -> str | None:
        """"command" if the host sent the stop command, "closed" if it closed the port (either leaves the
        sensor idle), else None."""
        present = self._reader_present()  # before reading: a host that wrote stop and closed is "command"
        while select.select([self._master], [], [], 0)[0]:
            try:
                data = os.read(self._master, 64)
            except BlockingIOError:
                break
            except OSError:  # EIO: nothing more to read, the host has gone
                break
            self.commands.extend(data)
            if self.STOP in data:
                return "command"
        return None if present and self._reader_present() else "closed"
