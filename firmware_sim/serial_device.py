"""Serial transport: COBS frames written to a pseudo-terminal at device pace
(a board printing text lines instead: `firmware_sim/text_device.py`).

The runtime opens `SerialDevice.path` with pyserial like any USB-serial
adapter. Like a USB CDC device that starts on port open, the sample clock
starts once a reader has the port open. Frames leave when their last sample
has been produced and the UART (at `baud`, 10 bits per byte) is free. At a
finite speed a frame the port cannot take, or that finds no reader, is
dropped and logged; unpaced (speed None) the writer waits for the reader.
"""

from __future__ import annotations

import errno
import os
import select
import time
import tty

from firmware_sim.device import DeviceModel, ThreadedDevice, frames
from firmware_sim.faults import Fate, Faults
from himae_stream.framing import encode_frame
from himae_stream.protocol import encode_info, encode_packet

SERIAL_FATES = frozenset(Fate)
#: wall seconds between a reader opening the port and the first frame
OPEN_SETTLE_S = 0.05


class SerialDevice(ThreadedDevice):
    """A simulated USB-serial wearable on a pty pair; `start()` streams in a background thread.

    What goes on the wire is the subclass's to say (`_unit`, `_preamble`, `_corrupt`): here COBS
    frames and an INFO frame every `info_every_s`; pacing, faults and the drop log are shared.
    """

    transport = "serial"
    FATES = SERIAL_FATES
    #: written before the next unit after one was cut short, so the reader resynchronises at it
    RESYNC = b"\x00"

    def __init__(
        self,
        model: DeviceModel,
        faults: Faults | None = None,
        speed: float | None = 1.0,
        baud: int = 921_600,
        frame_ms: float = 40.0,
        info_every_s: float = 1.0,
    ) -> None:
        super().__init__(model, faults, speed, frame_ms)
        self.baud = baud
        self.info_every_s = info_every_s
        self._info = encode_frame(encode_info(model.info))
        self._next_info = 0.0  # device time the next INFO frame is due
        self.written = 0  # bytes put on the port so far: a reader has everything once it has read as many
        self._master, slave = os.openpty()
        tty.setraw(slave)  # no line discipline between the device and the reader
        self.path = os.ttyname(slave)
        os.close(slave)  # so the master reports (POLLHUP) whether a reader has the port open
        # never block in os.write: a stopped reader must not wedge the device thread
        os.set_blocking(self._master, False)
        self._poll = select.poll()
        self._poll.register(self._master, select.POLLOUT)
        self._resync = False  # a frame was cut short: start the next with a delimiter
        self.finished_at: float | None = None  # monotonic time the last frame was written

    def close(self) -> None:
        self.stop()
        try:
            os.close(self._master)
        except OSError:
            pass

    def run(self) -> None:
        """Stream frames until the recording ends (or forever when looping) or `stop()`."""
        if not self._wait_for_reader():
            return
        self._stop.wait(OPEN_SETTLE_S)  # the reader flushes its input right after opening
        self.pacer.restart()
        held: tuple[bytes, int, int] | None = None  # a reordered frame waiting for its successor
        link_free = 0.0  # device time at which the UART has sent everything so far
        for _, stop_k, spans in frames(self.model, self.per_frame, self.faults.disconnected, self.log):
            if self._stop.is_set():
                break
            ready = stop_k / self.model.fs
            if not spans:
                self.produced = stop_k
                continue
            frame = self._unit(spans)
            preamble = self._preamble(ready)
            send_at = max(ready, link_free)
            link_free = send_at + (len(frame) + len(preamble)) * 10 / self.baud
            if not self._wait(send_at):
                break
            self.produced = stop_k
            if not self._reader_present():
                if self.pacer.speed is not None:
                    self._drop(spans, "no_reader")
                    self._resync = True
                    continue
                if not self._wait_for_reader():
                    break
            if preamble:
                self._write(preamble, [])
                self._preamble_sent(ready)
            fate = self.faults.fate(self.FATES)
            if fate is Fate.LOSE:
                self._drop(spans, "lost")
            elif fate is Fate.CORRUPT:
                self._corrupt(frame, spans)
            elif fate is Fate.DUPLICATE:
                self.log.count("duplicated")
                self._write(frame, spans)
                self._write(frame, [])
            elif fate is Fate.REORDER and held is None:
                self.log.count("reordered")
                held = (frame, spans)
            else:
                self._write(frame, spans)
                if held is not None:
                    self._write(*held)
                    held = None
        if held is not None and not self._stop.is_set():
            self._write(*held)
        self.finished_at = time.monotonic()

    def _unit(self, spans: list[tuple[int, int]]) -> bytes:
        """One transport unit: the frames of the packet's valid runs, back to back."""
        return b"".join(encode_frame(encode_packet(self.model.packet(a, b))) for a, b in spans)

    def _preamble(self, ready: float) -> bytes:
        """What goes before the unit that is ready at device time `ready`: the INFO frame when due."""
        return self._info if ready >= self._next_info else b""

    def _preamble_sent(self, ready: float) -> None:
        self._next_info = ready + self.info_every_s

    def _corrupt(self, unit: bytes, spans: list[tuple[int, int]]) -> None:
        """Send `unit` with a byte changed (its CRC fails, its samples are lost)."""
        self._drop(spans, "corrupted")
        self._write(self.faults.corrupt(unit[:-1]) + unit[-1:], [])

    def _reader_present(self) -> bool:
        return not any(event & select.POLLHUP for _, event in self._poll.poll(0))

    def _wait_for_reader(self) -> bool:
        """Block until someone opens the port; False when stopped meanwhile."""
        while not self._reader_present():
            if self._stop.wait(0.01):
                return False
        return True

    def _write(self, data: bytes, spans: list[tuple[int, int]]) -> None:
        """Write one unit whole (its samples: `spans`); at a finite speed drop what the port cannot take."""
        if self._resync:
            data = self.RESYNC + data
            self._resync = False
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._master, view)
            except BlockingIOError:
                written = 0
            except OSError as exc:
                if exc.errno == errno.EIO:  # the reader went away mid-write
                    written = 0
                else:
                    raise
            self.written += written
            view = view[written:]
            if not view:
                return
            if self.pacer.speed is not None:
                self._resync = True
                self._drop(spans, "overflow")
                return
            select.select([], [self._master], [], 0.1)
            if self._stop.is_set():
                return
