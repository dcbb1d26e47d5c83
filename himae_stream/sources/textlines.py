"""Text lines from DIY boards (an Arduino or ESP32 with a MAX3010x printing numbers) to packets.

Such boards print one line per sample over USB serial rather than framed
packets, in whatever layout their sketch chose. `TextLineReader` finds the
layout from the first lines (delimiter, header row or Serial Plotter
`name:value` pairs, timestamp column) and the sample rate (given, or
estimated from the timestamps), then turns each line into samples of the
same `Packet`s the framed protocol carries, so everything after the reader
is shared. What is not a data line is counted and skipped, never raised:
docs/protocol.md ("Text lines") lists what is accepted and what is counted.
"""

from __future__ import annotations

import math
import re

import numpy as np

from himae_stream.numbers import SAMPLE_RATE, OptionError
from himae_stream.protocol import SEQ_MODULUS, Packet, SampleFormat, StreamInfo
from himae_stream.recordings import CSV_DELIMITERS, TIME_NAMES, TIME_UNITS, RecordingError, pick_names
from himae_stream.sources.base import SourceError

#: Longest line kept; a longer one is counted (`long_lines`) and skipped up to its newline.
MAX_LINE = 4096
#: Consecutive data lines that must agree on a layout before it is taken.
LAYOUT_LINES = 3
#: Timestamped lines read before the sample rate is estimated from them (when not given).
RATE_LINES = 64
#: Column separators tried, in this order: a CSV file's, then spaces.
DELIMITERS = (*CSV_DELIMITERS, " ")
COUNTERS = ("bytes", "lines", "garbage_lines", "bad_columns", "long_lines", "header_lines")
_EOL = re.compile(rb"\r\n|\r|\n")
#: What a column name in a header row looks like (a banner line is not a header).
_NAME = re.compile(r"[A-Za-z_][\w\-]*")


class Layout:
    """How the lines of one board are laid out: delimiter, column names, Serial Plotter labels."""

    def __init__(self, delimiter: str | None, names: list[str], plotter: bool):
        self.delimiter = delimiter  # None: one value per line
        self.names = names
        self.plotter = plotter

    def fields(self, line: str) -> list[str]:
        if self.delimiter is None:
            return [line]
        if self.delimiter == " ":
            return line.split()
        return [f.strip() for f in line.split(self.delimiter)]

    def values(self, line: str) -> list[float] | None:
        """The line's numbers, one per column; None when it is not a line of this layout."""
        fields = self.fields(line)
        if len(fields) != len(self.names):
            return None
        if self.plotter:
            pairs = [f.partition(":") for f in fields]
            if any(name.strip() != want for (name, _, _), want in zip(pairs, self.names)):
                return None
            fields = [value for _, _, value in pairs]
        return _numbers(fields)


def _numbers(fields: list[str]) -> list[float] | None:
    try:
        return [float(f) for f in fields]
    except ValueError:
        return None


def find_layout(line: str) -> Layout | None:
    """The layout a data line shows: Serial Plotter pairs or numbers split by the first delimiter
    that splits them, else one value per line; None when it is not a data line."""
    for delimiter in DELIMITERS:
        fields = Layout(delimiter, [], False).fields(line)
        pairs = [f.partition(":") for f in fields]
        if all(sep and name.strip() for name, sep, _ in pairs):
            layout = Layout(delimiter, [name.strip() for name, _, _ in pairs], True)
        elif len(fields) >= 2:
            layout = Layout(delimiter, [f"ch{i}" for i in range(len(fields))], False)
        else:
            continue
        if layout.values(line) is not None:
            return layout
    return Layout(None, ["ch0"], False) if _numbers([line]) is not None else None


class TextLineReader:
    """Bytes of text lines to packets: the byte->packet step of a `SerialSource(format=text)`.

    `fs` is the sample rate (None: estimated from a timestamp column),
    `time_unit` (a TIME_UNITS key) that column's unit when its name does not
    say, `channels` the columns to keep (names or globs). Counters go to
    `counters`.
    """

    def __init__(self, counters: dict[str, int], fs: float | None = None, time_unit: str | None = None,
                 channels: str | None = None):
        self.counters = counters
        self.counters.update(dict.fromkeys(COUNTERS, 0))
        self.fs = fs
        self.time_unit = time_unit
        self.channels = channels
        self.info: StreamInfo | None = None
        self.layout: Layout | None = None
        self._header: str | None = None  # the last line before the data that was not data
        self._first: list[str] = []  # data lines agreeing on a layout, until LAYOUT_LINES do
        self._first_layout: Layout | None = None
        self._time: int | None = None  # column of the timestamps
        self._keep: list[int] = []  # columns delivered as channels
        self._us_per_tick = 1e3
        self._waiting: list[tuple[float | None, list[float]]] = []  # lines read before the rate is known
        self._partial = b""
        self._skipping = False  # inside a line longer than MAX_LINE
        self._next = 0  # stream index of the next sample
        self._last_us: float | None = None  # timestamp of the last sample

    # ------------------------------------------------------------ bytes to lines
    def feed(self, data: bytes) -> list[Packet]:
        self.counters["bytes"] += len(data)
        rows = []
        for line in self._lines(data):
            try:
                text = line.decode("utf-8").strip()
            except UnicodeDecodeError:
                self.counters["garbage_lines"] += 1
                continue
            if text:
                rows += self._line(text)
        return self._packets(rows)

    def _lines(self, data: bytes) -> list[bytes]:
        """The complete lines `data` ends; a partial line waits for its newline, an over-long one
        is counted and skipped up to its newline, so at most MAX_LINE bytes are ever held."""
        parts = _EOL.split(self._partial + data)
        self._partial = parts.pop()
        if self._skipping:
            if not parts:  # still inside the over-long line
                self._partial = b""
                return []
            parts[0] = b""  # its end
            self._skipping = False
        lines = []
        for part in parts:
            if len(part) > MAX_LINE:
                self.counters["long_lines"] += 1
            elif part:
                lines.append(part)
        if len(self._partial) > MAX_LINE:
            self.counters["long_lines"] += 1
            self._partial, self._skipping = b"", True
        return lines

    # ------------------------------------------------------------ lines to samples
    def _line(self, text: str) -> list[tuple[float | None, list[float]]]:
        """The samples one line gives: (timestamp in µs or None, channel values)."""
        if self.layout is None:
            return self._learn(text)
        values = self.layout.values(text)
        if values is None:
            self._count_other(text)
            return []
        return self._sample(values)

    def _count_other(self, text: str) -> None:
        layout = self.layout
        if self._header is not None and text == self._header:
            self.counters["header_lines"] += 1  # the board reset and printed its header again
        elif len(layout.fields(text)) != len(layout.names) and find_layout(text) is not None:
            self.counters["bad_columns"] += 1
        else:
            self.counters["garbage_lines"] += 1

    def _learn(self, text: str) -> list[tuple[float | None, list[float]]]:
        """Lines before the layout is known: data lines are held until LAYOUT_LINES agree; the last
        other line before them is the header candidate."""
        layout = find_layout(text)
        if layout is None:
            self._header = text
            self.counters["garbage_lines"] += 1
            return []
        seen = self._first_layout
        if seen is not None and (seen.names, seen.delimiter) != (layout.names, layout.delimiter):
            self.counters["bad_columns"] += len(self._first)
            self._first = []
        self._first.append(text)
        self._first_layout = layout
        if len(self._first) < LAYOUT_LINES:
            return []
        self._take(layout)
        held, self._first = self._first, []
        return [s for line in held for s in self._sample(layout.values(line))]

    def _take(self, layout: Layout) -> None:
        """Fix the layout: names from the header (uncounting it as garbage), timestamp column, channels."""
        header, self._header = self._header, None
        if not layout.plotter and header is not None:
            names = layout.fields(header)
            if len(names) == len(layout.names) and all(_NAME.fullmatch(n) for n in names):
                layout.names, self._header = names, header
                self.counters["garbage_lines"] -= 1
                self.counters["header_lines"] += 1
        self.layout = layout
        times = [i for i, n in enumerate(layout.names) if n.lower() in TIME_NAMES]
        self._time = times[0] if times else None
        value_columns = [i for i in range(len(layout.names)) if i != self._time]
        if not value_columns:
            raise SourceError(f"text lines carry only a timestamp column ({layout.names[self._time]}), no signal")
        if self.channels:
            names = [layout.names[i] for i in value_columns]
            try:
                value_columns = [value_columns[i] for i in pick_names(names, self.channels, "text lines")]
            except RecordingError as exc:
                raise SourceError(str(exc)) from None
        self._keep = value_columns
        if self._time is not None:
            # a name without a unit: `time_unit`, else ms, the unit of Arduino's millis()
            unit = self.time_unit or TIME_NAMES[layout.names[self._time].lower()] or "ms"
            self._us_per_tick = TIME_UNITS[unit]
        elif self.fs is None:
            raise SourceError(
                f"text lines with columns {', '.join(layout.names)} have no timestamp column "
                f"({', '.join(n for n in TIME_NAMES)}): give the sample rate, e.g. ?format=text&fs=100"
            )

    def _sample(self, values: list[float]) -> list[tuple[float | None, list[float]]]:
        self.counters["lines"] += 1
        stamp = None
        if self._time is not None:
            stamp = values[self._time] * self._us_per_tick
            if not math.isfinite(stamp):
                self.counters["lines"] -= 1
                self.counters["garbage_lines"] += 1
                return []
        return [(stamp, [values[i] for i in self._keep])]

    # ------------------------------------------------------------ samples to packets
    def _packets(self, rows: list[tuple[float | None, list[float]]]) -> list[Packet]:
        if self.fs is None:
            self._waiting += rows
            if len(self._waiting) < RATE_LINES:
                return []
            self.fs = estimate_rate([t for t, _ in self._waiting])
            rows, self._waiting = self._waiting, []
        if self.info is None and self.layout is not None:
            names = tuple(self.layout.names[i] for i in self._keep)
            self.info = StreamInfo(self.fs, names, (1.0,) * len(names), SampleFormat.FLOAT32, device="text lines")
        packets, run, start, start_us = [], [], 0, 0.0
        for stamp, values in rows:
            index = self._index(stamp)
            if run and index != start + len(run):
                packets.append(self._packet(start, start_us, run))
                run = []
            if not run:
                start, start_us = index, stamp if stamp is not None else index * 1e6 / self.fs
            run.append(values)
            self._next = index + 1
        if run:
            packets.append(self._packet(start, start_us, run))
        return packets

    def _index(self, stamp: float | None) -> int:
        """The stream index of a sample: the next one, or as many periods on as its timestamp says
        (a jump forwards is a gap, a step backwards a restart: SampleStream decides which)."""
        if stamp is None or self._last_us is None:
            self._last_us = stamp
            return self._next
        steps = round((stamp - self._last_us) * self.fs * 1e-6)
        if stamp >= self._last_us:
            steps = max(steps, 1)  # timestamps coarser than the sample period
        self._last_us = stamp
        return self._next - 1 + steps

    def _packet(self, start: int, t_us: float, run: list[list[float]]) -> Packet:
        values = np.asarray(run, np.float64).T
        return Packet.from_physical(start % SEQ_MODULUS, round(t_us), self.fs, values, 1.0, SampleFormat.FLOAT32)


def estimate_rate(stamps_us: list[float | None]) -> float:
    """The sample rate timestamps show: the median step tells regular steps from gaps and restarts,
    then the rate is the regular steps over the time they span (millisecond timestamps of a 30 Hz
    board step 33 or 34 ms; their median alone would be 1.5 % off)."""
    steps = np.diff(np.asarray(stamps_us, np.float64))
    steps = steps[steps > 0]
    regular = steps[np.abs(steps - np.median(steps)) <= 0.5 * np.median(steps)] if steps.size else steps
    if regular.size == 0:
        raise SourceError("the timestamp column does not increase: give the sample rate, e.g. ?fs=100")
    fs = regular.size / regular.sum() * 1e6
    try:
        return SAMPLE_RATE.check(fs, "sample rate from the timestamps")
    except OptionError as exc:
        raise SourceError(f"{exc} (is ?time_unit=ms|us|s right?)") from None
