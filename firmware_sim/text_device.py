"""A DIY board on a pseudo-terminal: an Arduino or ESP32 printing one text line per sample.

Hobby PPG boards (a MAX3010x on a microcontroller) print numbers over USB
serial instead of framed packets. `TextSerialDevice` prints a recording that
way, paced, faulted and logged like `SerialDevice` (it is one, with another
wire format), so the runtime's text reader meets what such boards send:
a boot banner and header, a chosen delimiter, an optional millis() column,
Arduino Serial Plotter `name:value` pairs, junk lines, lines cut short (the
rest lost, the next line runs into them) and lines lost.
"""

from __future__ import annotations

import numpy as np

from firmware_sim.device import DeviceModel
from firmware_sim.faults import Fate, Faults
from firmware_sim.options import TextBoard
from firmware_sim.serial_device import SerialDevice

#: What boards print besides their samples: a boot banner, missing-sensor complaints, ESP32 ROM
#: output, bytes that are not UTF-8.
JUNK = (
    b"Initializing MAX30102...",
    b"MAX30102 was not found. Please check wiring/power.",
    b"rst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)",
    b"ets Jun  8 2016 00:22:57",
    b"\xff\xfe\x80 brownout detector was triggered",
)


class TextSerialDevice(SerialDevice):
    """`SerialDevice` printing text lines: one unit is one sample's line.

    Faults: `loss` loses a line, `corrupt` cuts one short after its first
    delimiter (the next line runs into it, so both are lost and logged
    `cut`), `TextBoard.garbage` adds junk lines (counted `garbage`).
    Without a timestamp column nothing can tell a lost or cut line.
    """

    FATES = frozenset({Fate.SEND, Fate.LOSE, Fate.CORRUPT})
    RESYNC = b"\n"

    def __init__(self, model: DeviceModel, board: TextBoard | None = None, faults: Faults | None = None,
                 speed: float | None = 1.0, baud: int = 921_600) -> None:
        super().__init__(model, faults, speed, baud, frame_ms=1000.0 / model.fs)
        self.per_frame = 1
        self.board = board or TextBoard()
        self._rng = np.random.default_rng([self.faults.config.seed, 1])
        self._started = not self.board.header  # the banner and header are out (or not printed)
        self._merging = False  # the last line was cut: the next one runs into it
        names = ["millis", *model.info.channel_names] if self.board.millis else list(model.info.channel_names)
        self.names = names
        self._header = (JUNK[0] + b"\n" + self.board.delimiter.join(names).encode() + b"\n") if self.board.header \
            else b""

    def line(self, k: int) -> bytes:
        """The line of sample `k`, newline included."""
        values = [f"{v:.9g}" for v in self.model.values(k, k + 1)[:, 0]]
        if self.board.millis:
            values.insert(0, str(int(self.model.timestamps_us(k, k + 1)[0]) // 1000))
        if self.board.plotter:
            values = [f"{name}:{value}" for name, value in zip(self.names, values)]
        return (self.board.delimiter.join(values) + "\n").encode()

    def _unit(self, spans: list[tuple[int, int]]) -> bytes:
        return b"".join(self.line(k) for a, b in spans for k in range(a, b))

    def _preamble(self, ready: float) -> bytes:
        if not self._started:
            return self._header
        return JUNK[self._rng.integers(len(JUNK))] + b"\n" if self._rng.random() < self.board.garbage else b""

    def _preamble_sent(self, ready: float) -> None:
        if self._started:
            self.log.count("garbage")
        self._started = True

    def source_url(self) -> str:
        """The URL that reads this board."""
        return f"serial://{self.path}?format=text&fs={self.model.fs:g}&baud={self.baud}"

    def _corrupt(self, unit: bytes, spans: list[tuple[int, int]]) -> None:
        first = unit.find(self.board.delimiter.encode()) + 1  # 0 without a delimiter
        cut = int(self._rng.integers(max(first, 1), len(unit) - 1)) if len(unit) - 1 > max(first, 1) else 1
        self._drop(spans, "cut")
        self._write(unit[:cut], [])
        self._merging = True

    def _write(self, data: bytes, spans: list[tuple[int, int]]) -> None:
        if self._merging and data:
            self._merging = False
            self._drop(spans, "cut")
            spans = []
        super()._write(data, spans)
