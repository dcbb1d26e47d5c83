"""European Data Format recordings: EDF, EDF+ and BDF (BioSemi's 24-bit EDF), continuous or not.

Sleep labs, Holter and research wearables (Shimmer, BioSemi, many PSG
systems' "Pleth" channel) export EDF. A file holds several signals, each at
its own rate, in data records of a fixed duration; a `Recording` has one
rate, so the signals read are those asked for (`channels`) at the rate of
the first of them, else all at the rate of the first PPG-named one, else of
the first signal; the others are left out, as a wearable NPZ's are. The annotation signal of
EDF+ / BDF+ is never a channel; in a discontinuous file (EDF+D) it gives
each record's onset, and the time between records is lost samples (NaN).

Digital values become physical ones by the header's linear map,
physical = (digital - digital min) x (physical range / digital range) +
physical min. The file is read whole (its size is bounded by
`recordings.MAX_RECORDING_BYTES`); every inconsistency between the header
and the file is a RecordingError naming the file and the field.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import numpy as np

#: EDF+ / BDF+ annotation signal labels: time-keeping and events, not samples
ANNOTATION_LABELS = ("EDF Annotations", "BDF Annotations")
#: Signal count above which a header is taken to be corrupt (the field has four digits; no device
#: records thousands of signals into one file).
MAX_SIGNALS = 4096
#: A discontinuous file's records may span at most this many times the samples it holds: the
#: NaN-filled time between records is memory, and memory is bounded by the input.
MAX_SPAN_PER_SAMPLE = 8
#: Bytes of the fixed header and of each signal's header
HEADER_BYTES = 256
#: Each signal's header fields and their widths, in file order (all ASCII; each field is all
#: signals' values of it, one after another).
SIGNAL_FIELDS = (("label", 16), ("transducer", 80), ("dimension", 8), ("physical_min", 8), ("physical_max", 8),
                 ("digital_min", 8), ("digital_max", 8), ("prefiltering", 80), ("samples", 8), ("reserved", 32))


class EdfError(ValueError):
    """A field of an EDF/BDF file is missing or inconsistent; `recordings.load` names the file."""


def read(path: Path, patterns, default_patterns) -> tuple[float, list[str], np.ndarray]:
    """(rate, channel names, signals (channels, samples) float64) of the EDF/BDF file at `path`: those
    matching `patterns` (names or globs) at the rate of the first of them, if given; else every signal at
    the rate of the first matching `default_patterns`, else of the first signal. (A night's PSG holds
    dozens of signals: only those asked for become float64.)"""
    with open(path, "rb") as f:
        head = f.read(HEADER_BYTES)
        if len(head) < HEADER_BYTES:
            raise EdfError(f"{len(head)} bytes, shorter than an EDF header ({HEADER_BYTES})")
        bdf = head[:8] == b"\xffBIOSEMI"
        if not bdf and head[:8] != b"0       ":
            raise EdfError(f"not an EDF or BDF file: its version field is {head[:8]!r}, not '0' (EDF) or "
                           "'\\xffBIOSEMI' (BDF)")
        n_signals = _int(head, 252, 4, "number of signals", low=1, high=MAX_SIGNALS)
        if _int(head, 184, 8, "number of header bytes", low=0) != HEADER_BYTES * (1 + n_signals):
            raise EdfError(f"the header's byte count is not {HEADER_BYTES} x (1 + {n_signals} signals)")
        fields = _signal_fields(f.read(HEADER_BYTES * n_signals), n_signals)
        data = f.read()
    width = 3 if bdf else 2
    reserved = head[192:236].decode("ascii", "replace").strip()
    duration = _float(head, 244, 8, "data record duration")
    counts = np.array([_number(v, "samples per data record", int) for v in fields["samples"]])
    if (counts < 1).any():
        raise EdfError("a signal has no samples per data record")
    record_bytes = int(counts.sum()) * width
    n_records = _int(head, 236, 8, "number of data records", low=-1)
    if n_records == -1:  # a recording still being written: as many records as the file holds
        if len(data) % record_bytes:
            raise EdfError(f"{len(data)} bytes of samples are not a whole number of {record_bytes}-byte data records")
        n_records = len(data) // record_bytes
    elif len(data) != n_records * record_bytes:
        raise EdfError(f"the header declares {n_records} data records of {record_bytes} bytes "
                       f"({n_records * record_bytes} bytes of samples); the file holds {len(data)}")
    if n_records < 1:
        raise EdfError("no data records")
    labels = fields["label"]
    annotations = [i for i, label in enumerate(labels) if label in ANNOTATION_LABELS]
    signals = [i for i in range(n_signals) if i not in annotations]
    if not signals:
        raise EdfError("only annotations, no signal")
    if not (np.isfinite(duration) and duration > 0):
        raise EdfError(f"data record duration {duration:g} s: a file of signals needs one > 0")
    rate = counts[_rate_source(labels, signals, patterns, default_patterns)]
    chosen = [i for i in signals if counts[i] == rate and (not patterns or _matches(labels[i], patterns))]
    records = np.frombuffer(data, np.uint8, n_records * record_bytes).reshape(n_records, record_bytes)
    starts = np.concatenate([[0], np.cumsum(counts) * width])
    n = int(counts[chosen[0]])
    out = np.empty((len(chosen), n_records * n))
    for row, i in enumerate(chosen):
        digital = _digital(records[:, starts[i] : starts[i + 1]], width).reshape(-1)
        out[row] = _physical(digital, fields, i)
    if reserved.startswith(("EDF+D", "BDF+D")) and annotations:
        out = _place(out, _onsets(records, starts, annotations[0]), n, duration)
    return n / duration, [labels[i] for i in chosen], out


def _rate_source(labels, signals, patterns, default_patterns) -> int:
    """The signal whose rate the recording takes (see `read`)."""
    for group in (patterns, default_patterns):
        for pattern in group or ():
            for i in signals:
                if _matches(labels[i], [pattern]):
                    return i
    return signals[0]


def _matches(label: str, patterns) -> bool:
    return any(fnmatch.fnmatch(label.upper(), p.upper()) for p in patterns)


def _signal_fields(block: bytes, n_signals: int) -> dict[str, list[str]]:
    """Each signal header field as a list of n_signals stripped strings."""
    if len(block) < HEADER_BYTES * n_signals:
        raise EdfError(f"the signal headers end after {len(block)} of {HEADER_BYTES * n_signals} bytes")
    fields, at = {}, 0
    for name, size in SIGNAL_FIELDS:
        fields[name] = [_text(block[at + k * size : at + (k + 1) * size], name) for k in range(n_signals)]
        at += size * n_signals
    return fields


def _digital(columns: np.ndarray, width: int) -> np.ndarray:
    """Little-endian two's complement samples of `width` bytes (2: EDF, 3: BDF) as int32."""
    if width == 2:
        return np.ascontiguousarray(columns).view("<i2").astype(np.int32)
    b = columns.reshape(columns.shape[0], -1, 3).astype(np.int32)
    value = b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16)
    return np.where(value >= 1 << 23, value - (1 << 24), value)


def _physical(digital: np.ndarray, fields: dict, i: int) -> np.ndarray:
    """Signal i's digital values in its physical unit, by the header's linear map."""
    label = fields["label"][i]
    d_min, d_max = (_number(fields[k][i], f"{k.replace('_', ' ')} of {label!r}", int)
                    for k in ("digital_min", "digital_max"))
    p_min, p_max = (_number(fields[k][i], f"{k.replace('_', ' ')} of {label!r}", float)
                    for k in ("physical_min", "physical_max"))
    if d_max <= d_min or p_max == p_min or not np.isfinite([p_min, p_max]).all():
        raise EdfError(f"signal {label!r}: digital range {d_min}..{d_max} and physical range {p_min:g}..{p_max:g} "
                       "do not map one onto the other")
    return (digital - d_min) * ((p_max - p_min) / (d_max - d_min)) + p_min


def _onsets(records: np.ndarray, starts: np.ndarray, annotation: int) -> np.ndarray:
    """Each record's onset (s) from its first time-keeping annotation ('+onset' up to byte 20)."""
    onsets = np.empty(len(records))
    for r, tal in enumerate(records[:, starts[annotation] : starts[annotation + 1]]):
        text = bytes(tal).split(b"\x14", 1)[0]
        try:
            onsets[r] = float(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise EdfError(f"data record {r}: its annotations do not start with its onset ({text[:20]!r})") from None
    return onsets


def _place(out: np.ndarray, onsets: np.ndarray, n: int, duration: float) -> np.ndarray:
    """Records of n samples each, at their onsets; the time between them NaN (lost)."""
    fs = n / duration
    offsets = (onsets - onsets[0]) * fs
    if not np.isfinite(offsets).all():
        raise EdfError(f"data record {int(np.flatnonzero(~np.isfinite(offsets))[0])}'s onset is not a number")
    if np.abs(offsets).max() + n > MAX_SPAN_PER_SAMPLE * out.shape[1]:
        raise EdfError(f"the data records span {(np.abs(offsets).max() + n) / fs:g} s but hold {out.shape[1] / fs:g} s "
                       f"of samples: more than {MAX_SPAN_PER_SAMPLE} times as long (split the file)")
    at = np.rint(offsets).astype(np.int64)
    if (np.diff(at) < n).any():
        r = int(np.flatnonzero(np.diff(at) < n)[0]) + 1
        raise EdfError(f"data record {r} starts at {onsets[r]:g} s, before the one ahead of it ends")
    span = int(at[-1]) + n
    placed = np.full((out.shape[0], span), np.nan)
    for r, a in enumerate(at):
        placed[:, a : a + n] = out[:, r * n : (r + 1) * n]
    return placed


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise EdfError(f"the {what} field is not ASCII text ({raw!r})") from None


def _number(text: str, what: str, kind):
    try:
        return kind(text)
    except ValueError:
        raise EdfError(f"{what} is {text!r}, not {'an integer' if kind is int else 'a number'}") from None


def _int(head: bytes, at: int, size: int, what: str, low: int | None = None, high: int | None = None) -> int:
    value = _number(_text(head[at : at + size], what), what, int)
    if (low is not None and value < low) or (high is not None and value > high):
        raise EdfError(f"{what} is {value}, outside {low}..{high if high is not None else ''}")
    return value


def _float(head: bytes, at: int, size: int, what: str) -> float:
    return _number(_text(head[at : at + size], what), what, float)
