"""A BITalino streaming live: the commands that start it and its frames to packets.

`serial:///dev/rfcomm0?format=bitalino&fs=100&channels=A1` reads a BITalino (its
protocol: `himae_stream/bitalino.py`) through `SerialSource`, which calls
`BitalinoReader.start` after opening the port (and after every reopen) and
`stop` before closing it. Frames have no start marker: the reader takes frame
boundaries where `LOCK` frames in a row pass their CRC with consecutive
sequence numbers. A frame that fails its CRC is counted (`crc_errors`) and its
sample arrives as lost; the boundaries are searched again unless the frame
after it passes (a byte changed, none lost).

The sequence number counts modulo 16, so frames a link lost are counted
modulo 16 from it; whole turns of 16 are recovered from the host clock: the
newest frame's index lags the host clock by about the same number of sample
periods from one read to the next, so where frames were lost, a lag beyond
what recent reads showed is frames the counter could not show. (Without a
gap in the numbers nothing is added: a link that delivers late, as Bluetooth
does now and then, must not look like a loss. A loss of exactly 16, 32, ...
frames shows no gap and is missed.) The board counts from 0 at each start, so
the stream's first index is its first frame's sequence number, and after a
reopen the time between its last frame before and its first after is lost
samples.

A BITalino (r)evolution BLE sends the same bytes in notifications
(`himae_stream/sources/bitalino_ble.py` drives this reader through the steps of
`start`: `answered`, `commands`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np

from himae_stream import bitalino
from himae_stream.protocol import SEQ_MODULUS, Packet, SampleFormat, StreamInfo
from himae_stream.sources.base import SourceError
from himae_stream.sources.serial import drain, read_answer

#: frames in a row that must pass their CRC, numbered consecutively, before their boundaries are taken
LOCK = 3
#: wait between commands (PLUX's own API waits as long before each one)
COMMAND_GAP_S = 0.1
#: how long the board has to answer the version command
ANSWER_S = 2.0
#: how long bytes arriving unasked are awaited, which tell a board still acquiring for a host that went away
STILL_STREAMING_S = 0.1
#: seconds of reads whose lag behind the host clock tells frames lost in whole turns of the counter
LAG_WINDOW_S = 10.0
#: reads needed before their lags are trusted to tell turns of the counter
LAG_READS = 8
COUNTERS = ("bytes", "frames", "crc_errors", "resyncs", "skipped_bytes")


def version_said(got: bytes) -> bool:
    """Whether `got` holds the board's whole answer to the version command."""
    return b"BITalino" in got and got.endswith(b"\n")


class BitalinoReader:
    """Bytes of a BITalino's frames to packets of analog codes (0 … 1023; 0 … 63 for a fifth and sixth input).

    `fs` is the rate to command (1, 10, 100 or 1000), `inputs` the analog inputs
    (0 for A1 ... 5 for A6), `clock` the host clock reads are stamped with.
    """

    def __init__(self, counters: dict[str, int], fs: int = 1000, inputs: Sequence[int] = range(6),
                 clock: Callable[[], float] = time.monotonic):
        try:
            self.fs = bitalino.checked_rate(fs)
        except ValueError as exc:
            raise SourceError(str(exc)) from None
        self.counters = counters
        self.counters.update(dict.fromkeys(COUNTERS, 0))
        self.inputs = sorted(set(inputs))
        self.size = bitalino.frame_size(len(self.inputs))
        self.version: str | None = None
        names = tuple(bitalino.INPUTS[i] for i in self.inputs)
        self.info: StreamInfo | None = None
        self._info = StreamInfo(self.fs, names, (1.0,) * len(names), SampleFormat.INT16, device="BITalino")
        self._clock = clock
        self._buffer = bytearray()
        self._locked = False
        self._index = -1  # stream index of the last frame delivered
        self._seq = 0  # its sequence number
        self._restarted = False  # the board was started again (after a reopen): its counter is back at 0
        self._last_read = 0.0  # host time of the last read that brought frames
        self._lags: deque[tuple[float, float]] = deque(maxlen=4096)  # (host time, periods behind the clock)

    # ------------------------------------------------------------ commands
    def start(self, port) -> None:
        """Stop the board if it still streams, check it is a BITalino, set the rate, start: in the port's thread."""
        port.reset_input_buffer()
        if streaming := read_answer(port, STILL_STREAMING_S, lambda got: len(got) >= 1):  # for a host that went away
            port.write(bytes([bitalino.STOP]))
            self.counters["bytes"] += len(streaming) + drain(port)
        port.write(bytes([bitalino.VERSION]))
        self.answered(read_answer(port, ANSWER_S, version_said), port.name)
        for command in self.commands():
            time.sleep(COMMAND_GAP_S)
            port.write(bytes([command]))

    def answered(self, answer: bytes, where: str) -> None:
        """Take the board's answer to the version command (SourceError if no BITalino gave it) and expect
        its frames from the start, as after every start (a restarted board counts from 0)."""
        self.counters["bytes"] += len(answer)
        if b"BITalino" not in answer:
            said = f" (it sent {answer[:40]!r})" if answer else ""
            raise SourceError(f"no BITalino answered on {where}{said}: is it on, paired and not "
                              "acquiring for another program?")
        self.version = answer[answer.index(b"BITalino"):].decode("ascii", "replace").strip()
        self._info = StreamInfo(self.fs, self._info.channel_names, self._info.scale, SampleFormat.INT16,
                                device=self.version)
        self._buffer.clear()
        self._locked = False
        self._lags.clear()
        self._restarted = self._index >= 0

    def commands(self) -> tuple[int, int]:
        """What starts the acquisition once the board has answered: its rate, then its inputs."""
        return bitalino.rate_command(self.fs), bitalino.start_command(self.inputs)

    @staticmethod
    def stop(port) -> None:
        """End the acquisition, so the board is idle for whoever opens it next."""
        port.write(bytes([bitalino.STOP]))
        port.flush()

    # ------------------------------------------------------------ bytes to frames
    def feed(self, data: bytes) -> list[Packet]:
        now = self._clock()
        self.counters["bytes"] += len(data)
        self._buffer += data
        runs = []
        while self._locked or self._lock():
            whole = len(self._buffer) // self.size
            frames = np.frombuffer(self._buffer, np.uint8, whole * self.size).reshape(whole, self.size)
            ok = bitalino.crc4(frames) == frames[:, -1] & 0x0F
            good = whole if ok.all() else int(np.argmin(ok))
            if good:
                runs.append(frames[:good].copy())
            del frames
            if good == whole or good + 1 == whole:  # all good, or the frame after a bad one is still to come
                del self._buffer[: good * self.size]
                break
            self.counters["crc_errors"] += 1
            if ok[good + 1]:  # a byte changed: the boundaries hold, only this frame is lost
                self.counters["skipped_bytes"] += self.size
                del self._buffer[: (good + 1) * self.size]
                continue
            # bytes lost or added: the boundaries are found again, starting within the frame that failed
            self.counters["skipped_bytes"] += 1
            del self._buffer[: good * self.size + 1]
            self._locked = False
        return self._packets(runs, now)

    def _lock(self) -> bool:
        """Find frame boundaries in the buffer (dropping the bytes before them); False if none yet, keeping
        only the bytes a boundary may still start in."""
        data = np.frombuffer(bytes(self._buffer), np.uint8)
        found = None
        for phase in range(self.size):
            m = (len(data) - phase) // self.size
            if m < LOCK:
                break
            frames = data[phase: phase + m * self.size].reshape(m, self.size)
            ok = bitalino.crc4(frames) == frames[:, -1] & 0x0F
            seq = (frames[:, -1] >> 4).astype(np.int16)
            linked = ok[:-1] & ok[1:] & (np.diff(seq) % bitalino.SEQUENCE_MODULUS == 1)
            runs = np.convolve(linked, np.ones(LOCK - 1, int), "valid") == LOCK - 1
            if runs.any():
                at = phase + int(np.argmax(runs)) * self.size
                found = at if found is None else min(found, at)
        drop = found if found is not None else max(0, len(self._buffer) - (LOCK * self.size - 1))
        self.counters["skipped_bytes"] += drop
        del self._buffer[:drop]
        if found is not None:
            self._locked = True
            self.counters["resyncs"] += self.counters["frames"] > 0
        return found is not None

    # ------------------------------------------------------------ frames to packets
    def _packets(self, runs: list[np.ndarray], now: float) -> list[Packet]:
        if not runs:
            return []
        self.info = self._info
        seqs, codes = zip(*(bitalino.decode(frames, len(self.inputs)) for frames in runs))
        seq = np.concatenate(seqs).astype(np.int64)
        codes = np.concatenate(codes, axis=1)
        self.counters["frames"] += seq.size
        steps = np.diff(np.r_[self._seq, seq]) % bitalino.SEQUENCE_MODULUS
        steps[steps == 0] = bitalino.SEQUENCE_MODULUS  # a frame numbered as the last: 15 lost between
        if self._index < 0:  # the board counts from 0 at its start: frames lost before the first taken are lost
            steps[0] = seq[0] + 1
        elif self._restarted:  # the board started again from 0: the time between its frames is lost
            steps[0] = max(1, round((now - self._last_read) * self.fs) - (seq.size - 1))
            self._restarted = False
        elif (steps > 1).any():  # frames were lost: maybe whole turns of the counter more than it shows
            steps[np.argmax(steps > 1)] += self._turns_lost(steps, now)
        index = self._index + np.cumsum(steps)
        self._index, self._seq, self._last_read = int(index[-1]), int(seq[-1]), now
        self._lags.append((now, now * self.fs - self._index))
        cuts = np.flatnonzero(np.diff(index) != 1) + 1
        return [
            Packet(int(index[a]) % SEQ_MODULUS, round(index[a] * 1e6 / self.fs), self.fs,
                   codes[:, a:b].astype(np.int32), self._info.scale, SampleFormat.INT16)
            for a, b in zip(np.r_[0, cuts], np.r_[cuts, index.size])
        ]

    def _turns_lost(self, steps: np.ndarray, now: float) -> int:
        """Frames lost in whole turns of the counter before this read's frames, from how far their newest
        lags the host clock beyond the lags of the last LAG_WINDOW_S of reads."""
        while self._lags and self._lags[0][0] < now - LAG_WINDOW_S:
            self._lags.popleft()
        if len(self._lags) < LAG_READS:
            return 0
        lags = [lag for _, lag in self._lags]
        low, spread = min(lags), max(lags) - min(lags)
        excess = now * self.fs - (self._index + int(steps.sum())) - low
        return bitalino.SEQUENCE_MODULUS * max(0, round((excess - spread / 2) / bitalino.SEQUENCE_MODULUS))

