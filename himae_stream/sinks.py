"""Where window records go: JSON lines, CSV, NPZ or a Lab Streaming Layer outlet.

A window record is a plain dict (schema in docs/output.md). Sinks are opened
from a URL (`jsonl://-`, `jsonl://out.jsonl`, `csv://out.csv`,
`npz://out.npz`, `lsl://name`), written one record at a time and closed once;
`close()` flushes everything, also after Ctrl-C.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Protocol

import numpy as np

from himae_stream.errors import HimaeError
from himae_stream.urls import parse_url

SCALARS = ("window", "start", "end", "t_start", "t_end", "lost_fraction", "imputed", "latency_ms")


class Sink(Protocol):
    def write(self, record: dict) -> None: ...
    def close(self) -> None: ...


def _open_text(path: str, **kwargs):
    """A text file to write, or stdout for `-` / an empty path."""
    return sys.stdout if path in ("", "-") else open(path, "w", encoding="utf-8", **kwargs)


def _close_text(file) -> None:
    if file is not sys.stdout:
        file.close()


def _flat_predictions(record: dict) -> dict:
    return {f"pred_{k}": v for k, v in record.get("predictions", {}).items()}


def _embedding_values(record: dict) -> list[float]:
    """Every level's embedding, one after another, as plain floats."""
    levels = record.get("embeddings") or []
    return np.concatenate(levels).tolist() if levels else []


def _plain(value):
    """JSON for the numpy values a record carries (embeddings are float32 arrays)."""
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class JsonlSink:
    """One JSON object per line; flushed per record so a reader can follow live."""

    def __init__(self, path: str):
        self.file = _open_text(path)

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record, separators=(",", ":"), default=_plain) + "\n")
        self.file.flush()

    def close(self) -> None:
        _close_text(self.file)


class CsvSink:
    """One row per window: scalars, predictions, then every embedding value (`e{level}_{i}`)."""

    def __init__(self, path: str):
        self.file = _open_text(path, newline="")
        self.writer = csv.writer(self.file)
        self.header: list[str] | None = None

    def write(self, record: dict) -> None:
        preds = _flat_predictions(record)
        embeddings = record.get("embeddings", [])
        if self.header is None:
            self.header = [*SCALARS, *preds]
            self.header += [f"e{l}_{i}" for l, e in enumerate(embeddings) for i in range(len(e))]
            self.writer.writerow(self.header)
        row = [record.get(k) for k in SCALARS] + [preds.get(k) for k in self.header[len(SCALARS):len(SCALARS) + len(preds)]]
        row += _embedding_values(record)
        self.writer.writerow(row)
        self.file.flush()

    def close(self) -> None:
        _close_text(self.file)


class NpzSink:
    """Arrays stacked over windows (`start`, ..., `level0` … `levelN`, `pred_*`), written at close."""

    def __init__(self, path: str):
        if path in ("", "-"):
            raise HimaeError("npz:// needs a file name, e.g. npz://out.npz")
        self.path = Path(path)
        self.records: list[dict] = []

    def write(self, record: dict) -> None:
        self.records.append(record)

    def close(self) -> None:
        arrays: dict[str, np.ndarray] = {k: np.array([r.get(k) for r in self.records], dtype=np.float64) for k in SCALARS}
        levels = len(self.records[0]["embeddings"]) if self.records else 0
        for l in range(levels):
            arrays[f"level{l}"] = np.array([r["embeddings"][l] for r in self.records], dtype=np.float32)
        for name in _flat_predictions(self.records[0]) if self.records else ():
            arrays[name] = np.array([_flat_predictions(r)[name] for r in self.records])
        np.savez(self.path, **arrays)


class LslSink:
    """A Lab Streaming Layer outlet: one sample per window holding every embedding value."""

    def __init__(self, name: str):
        try:
            import pylsl
        except (ImportError, RuntimeError) as exc:
            raise HimaeError(f"lsl:// needs pylsl and the liblsl library (pip install pylsl): {exc}") from None
        self.pylsl = pylsl
        self.name = name or "himae"
        self.outlet = None

    def write(self, record: dict) -> None:
        values = _embedding_values(record)
        if self.outlet is None:
            info = self.pylsl.StreamInfo(self.name, "Embeddings", len(values), 0, "float32", f"himae-{self.name}")
            self.outlet = self.pylsl.StreamOutlet(info)
        self.outlet.push_sample(values)

    def close(self) -> None:
        self.outlet = None


SINKS = {"jsonl": JsonlSink, "csv": CsvSink, "npz": NpzSink, "lsl": LslSink}


def open_sink(url: str) -> Sink:
    """Open the sink a URL names; unknown schemes are a one-line error."""
    parsed = parse_url(url)
    if parsed.scheme not in SINKS:
        raise HimaeError(f"unknown sink {url!r}: use one of {', '.join(s + '://' for s in SINKS)}")
    return SINKS[parsed.scheme](parsed.path)
