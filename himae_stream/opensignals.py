"""OpenSignals text files: what PLUX's OpenSignals records from BITalino and biosignalsplux kits.

A `.txt` whose first line names the format, a line of JSON describing each
device (its rate, its sensors and their column labels), `# EndOfHeader`, then
one row of integers per sample: a sequence number, digital lines, then the
analog channels. One file may hold several devices sampled together; their
columns follow one another in each row.

The analog channels are read as recorded (ADC codes: a PPG's scale is the
normaliser's business), each named by its sensor (`PPG`, `BVP`, `ECG`; a
BITalino's `PPGBIT` as `PPG`), with its column label where a sensor repeats
(`PPG_A1`, `PPG_A2`). Where a file of one device skips sequence numbers, the
samples the host missed are NaN (lost), so later samples keep their time. The
header's date and time have no zone, so the start is left unknown.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

#: the first line of every OpenSignals text file starts so
MAGIC = "# OpenSignals Text File Format"
#: longest header line read: a device's description is a few hundred bytes
HEADER_LIMIT = 1 << 20
#: most samples, missed ones included, a file may stand for per sample it holds (memory bounded by the file)
MAX_SPAN = 8
#: what a BITalino's sensor names carry after the sensor (`ECGBIT`, `EDABITREV`)
BITALINO_SUFFIXES = ("BITREV", "BIT")


class OpenSignalsError(ValueError):
    """A file that says it is OpenSignals text and is not one."""


def is_opensignals(first_line: str) -> bool:
    """Whether a text file whose first line this is is an OpenSignals file."""
    return first_line.startswith(MAGIC)


def read(path: Path) -> tuple[list[str], float, np.ndarray]:
    """(channel names, rate in Hz, samples (channels, n) as float64) of the analog channels of every device."""
    devices = _devices(path)
    rates = {float(device["sampling rate"]) for device in devices}
    if len(rates) != 1:
        raise OpenSignalsError(f"its devices sample at {', '.join(f'{r:g}' for r in sorted(rates))} Hz; "
                               "one recording has one rate")
    fs = rates.pop()
    if not (np.isfinite(fs) and fs > 0):
        raise OpenSignalsError(f"sampling rate {fs:g} is not a rate")
    names, columns, offset = [], [], 0
    for device in devices:
        for sensor, label in zip(device["sensor"], device["label"]):
            if label not in device["column"]:
                raise OpenSignalsError(f"channel label {label!r} is not among the columns {device['column']}")
            names.append((_sensor_name(sensor), label, device["position"]))
            columns.append(offset + device["column"].index(label))
        offset += len(device["column"])
    if not columns:
        raise OpenSignalsError("no analog channel in the header")
    sequence = devices[0]["column"].index("nSeq") if len(devices) == 1 and "nSeq" in devices[0]["column"] else None
    data = np.loadtxt(path, delimiter="\t", comments="#", usecols=columns + ([] if sequence is None else [sequence]),
                      ndmin=2, dtype=np.float64)
    if not data.size:
        raise OpenSignalsError("no rows of samples under the header")
    signals = data.T[: len(columns)]
    if sequence is not None:
        signals = _with_gaps(signals, data[:, -1])
    return _unique(names), fs, np.ascontiguousarray(signals)


def _with_gaps(signals: np.ndarray, sequence: np.ndarray) -> np.ndarray:
    """The samples with NaN where the sequence numbers skip: samples the device sent and the host missed.

    The numbers count modulo a power of two (16 on a BITalino), so k samples missed in a row show as a
    step of k + 1 modulo it; a whole multiple of it missed cannot be seen.
    """
    if len(sequence) < 2 or (sequence < 0).any() or (sequence != np.round(sequence)).any() or sequence.max() > 65535:
        return signals  # not a device's sample counter
    modulus = 1 << int(sequence.max()).bit_length()
    missed = (np.diff(sequence).astype(np.int64) - 1) % modulus
    if not missed.any():
        return signals
    at = np.arange(len(sequence)) + np.concatenate([[0], np.cumsum(missed)])
    if at[-1] >= MAX_SPAN * len(sequence):
        raise OpenSignalsError(f"its sequence numbers skip {at[-1] + 1 - len(sequence)} samples, more than "
                               f"{MAX_SPAN - 1} times the {len(sequence)} it holds")
    out = np.full((signals.shape[0], at[-1] + 1), np.nan)
    out[:, at] = signals
    return out


def _devices(path: Path) -> list[dict]:
    """Each device's description, in the order of its columns in a row (its `position`, else as listed)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        f.readline(HEADER_LIMIT)
        line = f.readline(HEADER_LIMIT)
        end = f.readline(HEADER_LIMIT)
    if not line.startswith("#") or not end.startswith("# EndOfHeader"):
        raise OpenSignalsError("no device description and '# EndOfHeader' under the first line")
    try:
        described = json.loads(line[1:])
    except ValueError as exc:
        raise OpenSignalsError(f"the device description is not JSON ({exc})") from None
    if not isinstance(described, dict) or not described:
        raise OpenSignalsError("the device description names no device")
    devices = []
    for i, (mac, device) in enumerate(described.items()):
        if not isinstance(device, dict) or not {"sampling rate", "sensor", "label", "column"} <= set(device):
            raise OpenSignalsError(f"device {mac} lacks its sampling rate, sensors, labels or columns")
        if not all(isinstance(device[key], list) for key in ("sensor", "label", "column")):
            raise OpenSignalsError(f"device {mac}'s sensors, labels and columns are not lists")
        if len(device["sensor"]) != len(device["label"]):
            raise OpenSignalsError(f"device {mac} has {len(device['sensor'])} sensors for "
                                   f"{len(device['label'])} channel labels")
        if not isinstance(device["sampling rate"], (int, float)) or isinstance(device["sampling rate"], bool):
            raise OpenSignalsError(f"device {mac}'s sampling rate {device['sampling rate']!r} is not a number")
        devices.append({**device, "position": device.get("position", i)})
    return sorted(devices, key=lambda device: device["position"])


def _sensor_name(sensor) -> str:
    name = str(sensor)
    for suffix in BITALINO_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def _unique(channels: list[tuple[str, str, int]]) -> list[str]:
    """A sensor's name; with its label where the sensor repeats; with its device too where that repeats."""
    names = [sensor for sensor, _, _ in channels]
    labelled = [f"{sensor}_{label}" if names.count(sensor) > 1 else sensor for sensor, label, _ in channels]
    return [f"{name}_{position}" if labelled.count(name) > 1 else name
            for name, (_, _, position) in zip(labelled, channels)]
