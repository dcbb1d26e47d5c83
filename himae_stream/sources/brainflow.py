"""BrainFlow source: the PPG channels of any board BrainFlow drives, its synthetic board or a playback file.

`brainflow://BOARD?serial_port=...&mac_address=...` names the board by its
BrainFlow id (`MUSE_2`, `muse_2_board`, `synthetic`, `playback` for
PLAYBACK_FILE_BOARD); the query fills BrainFlowInputParams. The PPG rows,
their preset (Muse boards send PPG in the ANCILLARY preset) and the rate come
from BrainFlow's board description, of the master board for a playback file.
A board without PPG is refused with its name before anything is opened.

Stream indices come from the board's package-number row, which counts rows
modulo 256, so rows the board lost are a jump, counted lost downstream. A
jump says the gap only modulo 256; the host-time step across it says how
many times the numbers wrapped (a board out of range for 5 s skips 1250
rows at 250 Hz): rows' stamps jitter by about a sample period, far less
than 256 rows, so the gap that agrees with the numbers and is nearest the
elapsed time is the true one. That needs rows stamped at their pace, as a
board (or a playback file at 1x) sends them; rows that come all at once (a
playback file at max speed) resolve gaps under 256 rows only. A number
repeated is counted (`repeated_numbers`) and taken as the next row.
Timestamps are the board's timestamp row (Unix seconds, BrainFlow's clock),
put on the host clock (`time.monotonic()`) by an offset measured at start.

A board silent for `idle_timeout_s` has dropped out (a BLE board out of
range, reset or switched off), and BrainFlow does not reconnect it: its
session is released and prepared again with the backoff the serial source
reopens ports with, and the return of rows is counted in `reconnects`. A new
session may number its rows anew, so the gap across it is counted from the
elapsed time alone. Only when no rows flow for `reconnect_timeout_s` after
the silence (preparing fails, or works but the board stays silent) is it a
one-line error. A playback file ends the stream once each of its lines has
come as a row. BrainFlow's playback board cannot resume: prepared again
after a silence (a stretch of the file longer than `idle_timeout_s`, or a
last line it could not read) it replays its file from the start.

BrainFlow has no blocking read: a worker thread polls its ring buffer every
POLL_S and reads at most MAX_SAMPLES rows at a time, so the event loop never
blocks and `close()` (which always releases the session) is prompt.
"""

from __future__ import annotations

import asyncio
import threading
import time
import warnings
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import numpy as np

from himae_stream.numbers import NON_NEGATIVE, POSITIVE_INTEGER
from himae_stream.protocol import SampleFormat, StreamInfo
from himae_stream.samplestream import Received
from himae_stream.sources.base import BlockingSource, SourceError, clock_offset, indexed_packets, reopen_tries

from brainflow.board_shim import BoardIds, BoardShim, BrainFlowError, BrainFlowInputParams, BrainFlowPresets

if TYPE_CHECKING:
    from himae_stream.urls import ParsedUrl

POLL_S = 0.02
MAX_SAMPLES = 1024
#: rows BrainFlow's ring buffer holds per preset (bounded memory when reads fall behind)
RING_ROWS = 45_000
#: the package-number row counts rows modulo this
PACKAGE_NUMBERS = 256
ALIASES = {"playback": BoardIds.PLAYBACK_FILE_BOARD}
TEXT_PARAMS = ("serial_port", "mac_address", "ip_address", "other_info", "serial_number", "file", "file_aux", "file_anc")
NUMBER_PARAMS = ("ip_port", "ip_protocol", "timeout")


def board_id(name: str) -> BoardIds:
    """A board by BrainFlow name, case-insensitive, with or without `_BOARD`; a one-line error otherwise."""
    key = name.strip().upper()
    for candidate in (key, f"{key}_BOARD"):
        if candidate.lower() in ALIASES:
            return ALIASES[candidate.lower()]
        if candidate in BoardIds.__members__:
            return BoardIds[candidate]
    raise SourceError(f"unknown BrainFlow board {name!r} (e.g. synthetic, playback, muse_2, emotibit)")


def ppg_rows(board: int) -> tuple[BrainFlowPresets, list[int]]:
    """The first preset of `board` with PPG rows, and those rows."""
    for preset in BrainFlowPresets:
        try:
            rows = BoardShim.get_ppg_channels(board, preset)
        except BrainFlowError:  # the board has no such preset
            continue
        if rows:
            return preset, rows
    raise SourceError(f"BrainFlow board {BoardIds(board).name} has no PPG channel: the model reads PPG")


def open_url(url: ParsedUrl) -> BrainFlowSource:
    """The source a `brainflow://` URL names (registered for the `brainflow` scheme)."""
    url.check_params({*TEXT_PARAMS, *NUMBER_PARAMS, "master_board", "idle_timeout", "reconnect"})
    _load()
    params = BrainFlowInputParams()
    for key in TEXT_PARAMS:
        setattr(params, key, url.get(key, getattr(params, key)))
    for key in NUMBER_PARAMS:
        setattr(params, key, url.number(key, getattr(params, key), POSITIVE_INTEGER))
    if url.get("master_board"):
        params.master_board = board_id(url.get("master_board")).value
    return BrainFlowSource(board_id(url.path), params, idle_timeout_s=url.number("idle_timeout", 10.0, NON_NEGATIVE),
                           reconnect_timeout_s=url.number("reconnect", 10.0, NON_NEGATIVE))


def _load() -> None:
    """Load BrainFlow's library now, as one line when it cannot be (it looks for it through pkg_resources on
    Python < 3.12, which setuptools 81 removed), and keep its logger quiet: errors reach the user as ours."""
    try:
        with warnings.catch_warnings():  # pkg_resources' deprecation notice, where brainflow loads through it
            warnings.simplefilter("ignore")
            BoardShim.disable_board_logger()
    except ModuleNotFoundError as exc:
        raise SourceError(f"brainflow cannot load its library without {exc.name} (pip install 'setuptools<81')") from None


class BrainFlowSource(BlockingSource):
    """Packets of a board's PPG rows; the session is prepared on iteration, again after a silence of
    `idle_timeout_s` (0: wait for ever), and released on close. `reconnect_timeout_s` (0: silence is an
    error at once) bounds how long the board may stay away."""

    def __init__(self, board: BoardIds, params: BrainFlowInputParams, *, idle_timeout_s: float = 10.0,
                 reconnect_timeout_s: float = 10.0):
        super().__init__()
        self.board, self.params = board, params
        master = params.master_board if board == BoardIds.PLAYBACK_FILE_BOARD else board.value
        if board == BoardIds.PLAYBACK_FILE_BOARD and master == BoardIds.NO_BOARD:
            raise SourceError("brainflow://playback needs master_board= (the board that recorded the file)")
        self.preset, self.rows = ppg_rows(master)
        fs = BoardShim.get_sampling_rate(master, self.preset)
        try:
            self._stamp_row = BoardShim.get_timestamp_channel(master, self.preset)
            self._number_row = BoardShim.get_package_num_channel(master, self.preset)
        except BrainFlowError:
            raise SourceError(f"BrainFlow board {BoardIds(master).name} has no timestamp or package-number row "
                              f"beside its PPG") from None
        self.info = StreamInfo(fs=fs, channel_names=tuple(f"PPG{i}" for i in range(len(self.rows))),
                               scale=(1.0,) * len(self.rows), fmt=SampleFormat.FLOAT32, device=BoardIds(master).name)
        self.idle_timeout_s = idle_timeout_s
        self.reconnect_timeout_s = reconnect_timeout_s
        self.counters.update(rows=0, repeated_numbers=0, reconnects=0)
        self._shim: BoardShim | None = None
        self._closing = threading.Event()
        self._next = 0  # stream index of the next row
        self._last_number: int | None = None  # package number of the last row (None: none, or a new session)
        self._last_stamp: float | None = None  # BrainFlow timestamp of the last row
        self._to_monotonic = 0.0
        self._last_data = 0.0  # monotonic time rows last came (or the session was prepared)
        self._silent_since: float | None = None  # monotonic time the board fell silent, until rows come again
        self._session_rows = 0  # rows this session sent (a playback file's lines, at its end)
        self._file_rows = _lines(_preset_file(params, self.preset)) if board == BoardIds.PLAYBACK_FILE_BOARD else None

    async def __aiter__(self) -> AsyncIterator[Received]:
        await self._call(self._prepare)
        while not self._closing.is_set():
            received = await self._call(self._read)
            if received is not None:
                yield received
                if self._file_rows is not None and self._session_rows >= self._file_rows:
                    return  # a playback file's last line
            elif self.idle_timeout_s and time.monotonic() - self._last_data > self.idle_timeout_s:
                await self._prepare_again()

    def _prepare(self) -> None:
        """Prepare a session and start it streaming; one that fails is released and a one-line error."""
        shim = BoardShim(self.board.value, self.params)
        try:
            shim.prepare_session()
            shim.start_stream(RING_ROWS)
        except BrainFlowError as exc:
            _release(shim)
            raise SourceError(f"cannot start BrainFlow board {self.board.name}: {exc}") from None
        self._shim, self._session_rows = shim, 0
        self._to_monotonic = clock_offset(time.time)
        self._last_data = time.monotonic()

    async def _prepare_again(self) -> None:
        """Release the silent session and prepare another, trying with backoff until one starts."""
        silent = f"BrainFlow board {self.board.name} sent nothing for {self.idle_timeout_s:g} s"
        if not self.reconnect_timeout_s:
            raise SourceError(silent)
        if self._silent_since is None:
            self._silent_since = time.monotonic()
        await self._call(self._release_session)
        self._last_number = None
        failure = "it started but sent nothing"
        async for _ in reopen_tries(self._silent_since + self.reconnect_timeout_s):
            if self._closing.is_set():
                return
            try:
                return await self._call(self._prepare)
            except SourceError as exc:
                failure = str(exc)
        if not self._closing.is_set():
            raise SourceError(f"{silent} and did not come back within {self.reconnect_timeout_s:g} s ({failure})")

    def _read(self) -> Received | None:
        """Rows the board has buffered (waiting up to POLL_S for some); None when there were none."""
        shim = self._shim
        if shim is None or self._closing.wait(0 if shim.get_board_data_count(self.preset) else POLL_S):
            return None
        data = shim.get_board_data(MAX_SAMPLES, self.preset)
        now = time.monotonic()
        if not data.shape[1]:
            return None
        self._last_data = now
        if self._silent_since is not None:  # rows again after the session was prepared anew
            self._silent_since = None
            self.counters["reconnects"] += 1
        self.counters["rows"] += data.shape[1]
        self._session_rows += data.shape[1]
        host = data[self._stamp_row] + self._to_monotonic
        return Received(now, indexed_packets(self.index_rows(data), host, data[self.rows].astype(np.float32),
                                             self.info.fs))

    def index_rows(self, data: np.ndarray) -> np.ndarray:
        """Stream indices of the next rows read (a table as `get_board_data` returns it).

        Each row's step from the one before is its package number's step modulo
        256 plus the whole wraps of 256 that bring it nearest the rows its time
        step holds.
        """
        fs = self.info.fs
        numbers, stamps = data[self._number_row].astype(np.int64), data[self._stamp_row]
        last_number = numbers[0] - 1 if self._last_number is None else self._last_number
        last_stamp = stamps[0] - 1 / fs if self._last_stamp is None else self._last_stamp
        steps = np.diff(numbers, prepend=last_number) % PACKAGE_NUMBERS
        elapsed = np.diff(stamps, prepend=last_stamp) * fs  # in rows
        steps += PACKAGE_NUMBERS * np.maximum(np.rint((elapsed - steps) / PACKAGE_NUMBERS), 0).astype(np.int64)
        if self._last_number is None and self._last_stamp is not None:  # a new session: its numbers say nothing
            steps[0] = round(elapsed[0])
        self.counters["repeated_numbers"] += int(np.count_nonzero(steps <= 0))
        index = self._next - 1 + np.cumsum(np.maximum(steps, 1))
        self._next, self._last_number, self._last_stamp = int(index[-1]) + 1, int(numbers[-1]), float(stamps[-1])
        return index

    def _release_session(self) -> None:
        shim, self._shim = self._shim, None
        if shim is not None:
            _release(shim)

    async def close(self) -> None:
        """Stop reading and release the board's session (always, also after a failed start)."""
        self._closing.set()
        await self._settle()
        await asyncio.get_running_loop().run_in_executor(None, self._release_session)


def _preset_file(params: BrainFlowInputParams, preset: BrainFlowPresets) -> str:
    """The playback file of `preset` (BrainFlow's playback board reads one file per preset)."""
    return {BrainFlowPresets.AUXILIARY_PRESET: params.file_aux,
            BrainFlowPresets.ANCILLARY_PRESET: params.file_anc}.get(preset, params.file)


def _lines(path: str, block: int = 1 << 20) -> int | None:
    """Lines of a file, read a block at a time; None when it cannot be read (preparing says why)."""
    try:
        with open(path, "rb") as f:
            count, last = 0, b"\n"
            while chunk := f.read(block):
                count, last = count + chunk.count(b"\n"), chunk[-1:]
            return count + (last != b"\n")
    except OSError:
        return None


def _release(shim: BoardShim) -> None:
    for step in (shim.stop_stream, shim.release_session):
        try:
            step()
        except BrainFlowError:  # not streaming, or never prepared
            pass
