"""A recording as a BrainFlow playback file, so `brainflow://playback?...` replays real signal.

BrainFlow's PLAYBACK_FILE_BOARD replays a file in the layout its boards
record (one row per sample, one column per board row, written here by
BrainFlow's own `DataFilter.write_file`) at the rate of the board that
recorded it, the master board. SYNTHETIC_BOARD is the master: its default
preset has two PPG rows at 250 Hz. The recording's channels (replayed at
that rate, resampled when theirs differs) go to its PPG rows in order, its package-number row counts samples and its timestamp row holds
the device clock; the playback board stamps rows anew as it replays them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from firmware_sim.device import DeviceModel

MASTER = "SYNTHETIC_BOARD"


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


def write_playback(model: DeviceModel, path: str | Path) -> str:
    """Write the model's samples (its values and timestamps) as a playback file; returns its source URL."""
    from brainflow.data_filter import DataFilter

    from himae_stream.sources.brainflow import PACKAGE_NUMBERS, BoardShim

    master, preset, rows, fs = _master()
    if model.fs != fs:
        raise ValueError(f"a {MASTER} playback file holds {fs} Hz signal, not {model.fs:g} Hz")
    if model.channels > len(rows):
        raise ValueError(f"{MASTER} has {len(rows)} PPG rows for {model.channels} channels: pick some with --channels")
    n = model.length
    table = np.zeros((BoardShim.get_num_rows(master, preset), n))
    table[rows[: model.channels]] = model.values(0, n)
    table[BoardShim.get_package_num_channel(master, preset)] = np.arange(n) % PACKAGE_NUMBERS
    table[BoardShim.get_timestamp_channel(master, preset)] = model.timestamps_us(0, n) * 1e-6
    DataFilter.write_file(table, str(path), "w")
    return f"brainflow://playback?file={path}&master_board={MASTER}"
