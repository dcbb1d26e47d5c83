"""A recording as a BrainFlow playback file, so `brainflow://playback?...` replays real signal
as a BrainFlow board would send it: at the device's pace, with its losses and drop-outs.

BrainFlow's PLAYBACK_FILE_BOARD replays a file in the layout its boards
record (one row per sample, one column per board row, written here by
BrainFlow's own `DataFilter.write_file`) as the board that recorded it, the
master board. SYNTHETIC_BOARD is the master: its default preset has two PPG
rows at 250 Hz. The recording's channels (resampled to that rate when
theirs differs) go to its PPG rows in order, and its package-number row
holds each sample's index modulo 256, as a board's counter does.

The playback board paces rows by the step between their timestamps (it
sleeps that long before pushing the next) and stamps each anew as it pushes
it. So the timestamp row holds the device clock at the simulator's pace
(`Pacer`): divided by the speed, and all one time when unpaced, which the
board reads as fast as it can. The link's faults act on frames of
`frame_ms` like the other simulated devices': a frame lost or falling in a
disconnect is left out of the file and logged in the drop log, so the board
goes silent over a disconnect and its package numbers jump over every gap.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from firmware_sim.device import DeviceModel, DropLog, Pacer, frames
from firmware_sim.faults import Fate, Faults

MASTER = "SYNTHETIC_BOARD"
#: what befalls a frame of rows on its way to BrainFlow
PLAYBACK_FATES = frozenset({Fate.SEND, Fate.LOSE})


def _master():
    """SYNTHETIC_BOARD's id, its PPG preset and rows, and its rate, from BrainFlow's board description."""
    from himae_stream.sources.brainflow import BoardIds, BoardShim, _load, ppg_rows

    _load()
    master = BoardIds[MASTER].value
    preset, rows = ppg_rows(master)
    return master, preset, rows, BoardShim.get_sampling_rate(master, preset)


def playback_rate() -> float:
    """The rate a playback file of the master board holds."""
    return float(_master()[3])


def write_playback(model: DeviceModel, path: str | Path, faults: Faults | None = None, speed: float | None = 1.0,
                   frame_ms: float = 40.0) -> tuple[str, DropLog]:
    """Write the model's samples that `faults` let through as a playback file replaying at `speed`
    (None: as fast as BrainFlow reads it); returns its source URL and the drop log."""
    from brainflow.data_filter import DataFilter

    from himae_stream.sources.brainflow import PACKAGE_NUMBERS, BoardShim

    master, preset, rows, fs = _master()
    if model.fs != fs:
        raise ValueError(f"a {MASTER} playback file holds {fs} Hz signal, not {model.fs:g} Hz")
    if model.channels > len(rows):
        raise ValueError(f"{MASTER} has {len(rows)} PPG rows for {model.channels} channels: pick some with --channels")
    if model.length is None:
        raise ValueError("a playback file is played once: leave out --loop")
    faults, log = faults or Faults(), DropLog()
    sent = np.zeros(model.length, bool)
    for _, _, spans in frames(model, max(1, round(fs * frame_ms / 1000.0)), faults.disconnected, log):
        lost = bool(spans) and faults.fate(PLAYBACK_FATES) is Fate.LOSE
        for start, stop in spans:
            if lost:
                log.drop(start, stop, "lost")
            else:
                sent[start:stop] = True
    index = np.flatnonzero(sent)
    table = np.zeros((BoardShim.get_num_rows(master, preset), index.size))
    table[rows[: model.channels]] = model.values(0, model.length)[:, index]
    table[BoardShim.get_package_num_channel(master, preset)] = index % PACKAGE_NUMBERS
    seconds = model.timestamps_us(0, model.length)[index] * 1e-6
    table[BoardShim.get_timestamp_channel(master, preset)] = Pacer(speed, model.config.drift_ppm).elapsed(seconds)
    DataFilter.write_file(table, str(path), "w")
    return f"brainflow://playback?file={path}&master_board={MASTER}", log
