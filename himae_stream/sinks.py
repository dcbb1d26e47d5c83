"""Where window records go: JSON lines, CSV, NPZ or a Lab Streaming Layer outlet.

A window record is a plain dict (schema in docs/output.md). Sinks are opened
from a URL (`jsonl://-`, `jsonl://out.jsonl`, `csv://out.csv?mode=append`,
`npz://out.npz?part=60`, `lsl://name`), or from a file's path whose
extension names the format (`out.csv` is `csv://out.csv`; `-` is
`jsonl://-`), and written one record at a time.

A file sink never destroys data. Opening it checks that the target's folder
takes new files (a one-line error before the run starts) and creates
nothing. The first record creates `NAME.partial.EXT` beside the target (or
`NAME.partial-2.EXT`, ... if that name is taken); `close()`, at the end of a
run that went well, renames it over the target in one step, so a reader
sees the old file or the new one, never half of one. `abort()`, when the run
failed, leaves the target as it was and keeps what was written in the
partial file (removed if empty). `?mode=append` (jsonl, csv) appends to the
target instead, record by record. jsonl and csv flush every record, npz
writes a part file every `?part=` windows, so a crash keeps what was done.
`jsonl://-` streams to stdout.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Protocol

import numpy as np

from himae_stream.errors import HimaeError
from himae_stream.numbers import POSITIVE_INTEGER
from himae_stream.urls import ParsedUrl, parse_url

SCALARS = ("window", "start", "end", "t_start", "t_end", "lost_fraction", "imputed", "latency_ms")
INTEGERS = ("window", "start", "end", "imputed")
#: npz: windows per part file written while the run goes on (a crash loses at most the windows after it)
PART_WINDOWS = 60


class SinkError(HimaeError):
    """A sink that cannot be opened or written as asked."""


class Sink(Protocol):
    def write(self, record: dict) -> None: ...

    def close(self) -> None:
        """The run went well: make what was written the target (or flush it)."""

    def abort(self) -> Path | None:
        """The run failed: leave the target as it was; return the partial file kept, if any."""


def _check_target(url: ParsedUrl) -> Path:
    """The target file of a file sink, refused now if its folder cannot take a new file."""
    if url.path in ("", "-"):
        raise SinkError(f"{url.scheme}:// needs a file name, e.g. {url.scheme}://out.{url.scheme}")
    return check_output(Path(url.path), url.text)


def check_output(path: Path, what: str | None = None) -> Path:
    """`path`, refused now (SinkError naming `what`, default the path) if it is a folder or its folder
    cannot take a new file: checked before a run, so a run never fails only when it has its result."""
    what = what or str(path)
    folder = path.parent
    if path.is_dir():
        raise SinkError(f"{what}: a folder, not a file" if what == str(path) else f"{what}: {path} is a folder, not a file")
    if not folder.is_dir():
        raise SinkError(f"{what}: folder {folder} does not exist")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise SinkError(f"{what}: cannot write in {folder} ({exc.strerror})") from None
    return path


def _create_beside(path: Path, name, make) -> Path:
    """`make(candidate)` at `name("")` beside `path`, else at `name("-2")`, ...: the first name not taken."""
    for n in range(1, 10_000):
        candidate = path.with_name(name("" if n == 1 else f"-{n}"))
        try:
            make(candidate)
            return candidate
        except FileExistsError:
            continue
    raise SinkError(f"no free name beside {path} for {name('')}")


def _new_partial(path: Path) -> Path:
    """An empty `STEM.partial.EXT` (or `STEM.partial-2.EXT`, ...) beside the target: never an existing file."""
    return _create_beside(path, lambda n: f"{path.stem}.partial{n}{path.suffix}", lambda p: open(p, "x").close())


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _mode(url: ParsedUrl) -> str:
    mode = url.get("mode", "replace")
    if mode not in ("replace", "append"):
        raise SinkError(f"{url.text}: mode must be replace or append, got {mode!r}")
    if mode == "append" and url.path in ("", "-"):
        raise SinkError(f"{url.text}: mode=append needs a file")
    return mode


class TextTarget:
    """The text a jsonl or csv sink writes: stdout, the target (append), or a partial file renamed over it."""

    def __init__(self, url: ParsedUrl):
        url.check_params({"mode"})
        self.mode = _mode(url)
        self.path = None if url.path in ("", "-") else _check_target(url)
        self.partial: Path | None = None
        self.file = sys.stdout if self.path is None else None

    def open(self):
        """The file to write, created with the first record."""
        if self.file is None:
            if self.mode == "append":
                self.file = open(self.path, "a", encoding="utf-8", newline="")
                if self.file.tell() and not _ends_with_newline(self.path):
                    self.file.write("\n")  # a line cut short by a crash stays alone on its line
            else:
                self.partial = _new_partial(self.path)
                self.file = open(self.partial, "w", encoding="utf-8", newline="")
        return self.file

    def close(self) -> None:
        if self.file is None or self.file is sys.stdout:
            return
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        if self.partial is not None:
            os.replace(self.partial, self.path)

    def abort(self) -> Path | None:
        if self.file is None or self.file is sys.stdout:
            return None
        self.file.close()
        if self.partial is None:
            return None
        if self.partial.stat().st_size == 0:
            self.partial.unlink()
            return None
        return self.partial


def shortest_float32(a: np.ndarray) -> np.ndarray:
    """float32 values as the float64 nearest each one's shortest decimal that reads back as the same
    float32, so their text is 0.5529977 and not the float32's exact 0.5529977083206177: half the
    digits in a text sink, nothing of the value lost. Other arrays as they are."""
    a = np.asarray(a)
    if a.dtype != np.float32:
        return a
    flat = a.ravel()
    exact = flat.astype(np.float64)
    # every value rounded to 1 .. 9 significant digits (9 tell any float32) at once; 0, Inf and NaN,
    # and a value whose roundings here all missed (far from 1, where powers of ten are inexact), stay
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        s = np.arange(9)[:, None] - np.floor(np.log10(np.abs(exact)))
        p = 10.0 ** np.abs(s)
        rounded = np.where(s >= 0, np.rint(exact * p) / p, np.rint(exact / p) * p)
        reads_back = rounded.astype(np.float32) == flat
    fewest = reads_back.argmax(axis=0)
    out = np.where(reads_back.any(axis=0), rounded[fewest, np.arange(flat.size)], exact)
    return out.reshape(a.shape)


def _plain(value):
    """JSON for the numpy values a record carries (embeddings are float32 arrays)."""
    if isinstance(value, (np.ndarray, np.generic)):
        return shortest_float32(value).tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _embedding_values(record: dict) -> list[float]:
    """Every level's embedding, one after another, as plain floats (see `shortest_float32`: rounded all at
    once, a numpy call per record rather than per level)."""
    levels = record.get("embeddings") or []
    return shortest_float32(np.concatenate(levels)).tolist() if levels else []


def _text_record(record: dict) -> dict:
    """The record with its embeddings as lists of plain floats (see `_embedding_values`)."""
    values, levels, at = _embedding_values(record), [], 0
    for level in record.get("embeddings") or []:
        levels.append(values[at: at + len(level)])
        at += len(level)
    return {**record, "embeddings": levels} if "embeddings" in record else record


class JsonlSink:
    """One JSON object per line; flushed per record so a reader can follow live."""

    def __init__(self, url: ParsedUrl):
        self.target = TextTarget(url)

    def write(self, record: dict) -> None:
        file = self.target.open()
        file.write(json.dumps(_text_record(record), separators=(",", ":"), default=_plain) + "\n")
        file.flush()

    def close(self) -> None:
        self.target.close()

    def abort(self) -> Path | None:
        return self.target.abort()


def _csv_predictions(record: dict) -> dict:
    """Predictions as columns: `pred_NAME`, and class probabilities as `pred_NAME_p_CLASS`."""
    columns = {}
    for name, value in record.get("predictions", {}).items():
        if isinstance(value, dict):
            columns.update({f"pred_{name}_{c}": p for c, p in value.items()})
        else:
            columns[f"pred_{name}"] = value
    return columns


class CsvSink:
    """One row per window: scalars, predictions, then every embedding value (`e{level}_{i}`)."""

    def __init__(self, url: ParsedUrl):
        self.target = TextTarget(url)
        self.url = url.text
        self.header: list[str] | None = None
        self.writer = None

    def write(self, record: dict) -> None:
        preds = _csv_predictions(record)
        if self.header is None:
            embeddings = record.get("embeddings", [])
            self._start([*SCALARS, *preds, *(f"e{l}_{i}" for l, e in enumerate(embeddings) for i in range(len(e)))])
        names = self.header[len(SCALARS):len(SCALARS) + len(preds)]
        self.writer.writerow([record.get(k) for k in SCALARS] + [preds.get(k) for k in names]
                             + _embedding_values(record))
        self.target.file.flush()

    def _start(self, header: list[str]) -> None:
        """The writer, and the header row unless appending to a file that has it already."""
        existing = ""
        if self.target.mode == "append" and self.target.path.exists():
            with open(self.target.path, encoding="utf-8", newline="") as old:
                existing = old.readline().rstrip("\r\n")
        if existing and existing != ",".join(header):
            raise SinkError(f"{self.url}: the file's columns differ from this run's (another model or other "
                            "heads?); append to a file of this run's columns or write a new one")
        self.header = header
        self.writer = csv.writer(self.target.open())
        if not existing:
            self.writer.writerow(header)

    def close(self) -> None:
        self.target.close()

    def abort(self) -> Path | None:
        return self.target.abort()


def npz_arrays(records: list[dict]) -> dict[str, np.ndarray]:
    """Records stacked into the arrays of an npz file (docs/output.md); none needs pickle to load."""
    arrays = {k: np.array([r.get(k) for r in records], np.int64 if k in INTEGERS else np.float64) for k in SCALARS}
    levels = len(records[0]["embeddings"]) if records else 0
    for l in range(levels):
        arrays[f"level{l}"] = np.array([r["embeddings"][l] for r in records], dtype=np.float32)
    for name, first in (records[0].get("predictions", {}) if records else {}).items():
        values = [r["predictions"][name] for r in records]
        if isinstance(first, dict):  # class probabilities: windows × classes, names beside them
            classes = list(first)
            arrays[f"pred_{name}"] = np.array([[v[c] for c in classes] for v in values], dtype=np.float64)
            arrays[f"pred_{name.removesuffix('_p')}_classes"] = np.array(classes, dtype=str)
        elif isinstance(first, str):
            arrays[f"pred_{name}"] = np.array(values, dtype=str)
        else:
            arrays[f"pred_{name}"] = np.array(values, dtype=np.float64)  # None (not finite) becomes NaN
    return arrays


def _save_npz(path: Path, arrays: dict) -> None:
    """Write and sync an npz file at exactly `path` (np.savez given a name would add `.npz`), as np.savez
    writes one (stored, not compressed). A value may be a list of arrays, the pieces of one array along
    its first axis: each goes to the file in turn, so an array never exists whole in memory."""
    import zipfile

    with open(path, "wb") as out:
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            for name, value in arrays.items():
                pieces = [np.asarray(v) for v in (value if isinstance(value, list) else [value])]
                first, dtype = pieces[0], np.result_type(*pieces)  # as np.concatenate would (strings widen)
                if any(p.shape[1:] != first.shape[1:] for p in pieces):
                    raise ValueError(f"the pieces of {name!r} differ in shape after the first axis")
                shape = (sum(len(p) for p in pieces), *first.shape[1:]) if first.ndim else first.shape
                with archive.open(f"{name}.npy", "w", force_zip64=True) as entry:
                    np.lib.format.write_array_header_1_0(entry, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                                 "fortran_order": False, "shape": shape})
                    for piece in pieces:
                        entry.write(np.require(piece, dtype, "C").data)
        out.flush()
        os.fsync(out.fileno())


def replace_with_npz(path: Path, arrays: dict) -> None:
    """Write `arrays` (each an array or its pieces, see _save_npz) as an npz file at exactly `path` through a
    partial file renamed over it: a run that fails while writing leaves an existing file as it was, and no
    partial file behind."""
    partial = _new_partial(path)
    try:
        _save_npz(partial, arrays)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, path)


def merge_parts(parts: list[Path]) -> dict[str, np.ndarray]:
    """The arrays of npz part files, in order, as one file's: per-window arrays concatenated,
    class names (`*_classes`) taken once. Also recovers the parts a crashed run left behind:
    `np.savez("out.npz", **merge_parts(sorted(Path("out.npz.parts").glob("part-*.npz"))))`."""
    return {k: np.concatenate(v) if isinstance(v, list) else v for k, v in _part_pieces(parts).items()}


def _part_pieces(parts: list[Path]) -> dict:
    """merge_parts' arrays before concatenation: each per-window array as its parts' pieces, for _save_npz."""
    loaded = []
    for part in parts:
        with np.load(part, allow_pickle=False) as z:
            loaded.append({k: z[k] for k in z.files})
    if not loaded:
        return {}
    return {k: loaded[0][k] if k.endswith("_classes") else [p[k] for p in loaded] for k in loaded[0]}


class NpzSink:
    """Arrays stacked over windows, written in parts while the run goes on, one file at the end.

    Every `part` windows go to `NAME.parts/part-NNNNNN.npz`, each written
    under a temporary name and renamed, so none is ever half written: a crash
    keeps all but the windows after the last part. `close()` merges the parts
    into the target, `abort()` into `NAME.partial.npz`, and the parts go.
    """

    def __init__(self, url: ParsedUrl):
        url.check_params({"part"})
        self.path = _check_target(url)
        self.part = url.number("part", PART_WINDOWS, POSITIVE_INTEGER)
        self.pending: list[dict] = []
        self.folder: Path | None = None
        self.parts: list[Path] = []

    def write(self, record: dict) -> None:
        self.pending.append(record)
        if len(self.pending) >= self.part:
            self._write_part()

    def _write_part(self) -> None:
        if self.folder is None:
            self.folder = _create_beside(self.path, lambda n: f"{self.path.name}.parts{n}", os.mkdir)
        part = self.folder / f"part-{len(self.parts):06d}.npz"
        temporary = part.with_name(part.name + ".tmp")
        _save_npz(temporary, npz_arrays(self.pending))
        os.replace(temporary, part)
        self.parts.append(part)
        self.pending = []

    def _merge(self) -> Path | None:
        """Every window written, as one `NAME.partial.npz`; None when there was none."""
        if self.pending:
            self._write_part()
        if not self.parts:
            return None
        partial = _new_partial(self.path)
        _save_npz(partial, _part_pieces(self.parts))  # written piece by piece: never all in memory twice
        shutil.rmtree(self.folder)
        return partial

    def close(self) -> None:
        partial = self._merge()
        if partial is not None:
            os.replace(partial, self.path)

    def abort(self) -> Path | None:
        return self._merge()


class LslSink:
    """A Lab Streaming Layer outlet: one sample per window holding every embedding value."""

    def __init__(self, url: ParsedUrl):
        url.check_params(set())
        from himae_stream.lsl import load_pylsl

        self.pylsl = load_pylsl(SinkError)
        self.name = url.path or "himae"
        self.outlet = None

    def write(self, record: dict) -> None:
        levels = record.get("embeddings") or []
        values = np.concatenate(levels).tolist() if levels else []  # float32 on the wire: as they are
        if self.outlet is None:
            info = self.pylsl.StreamInfo(self.name, "Embeddings", len(values), 0, "float32", f"himae-{self.name}")
            self.outlet = self.pylsl.StreamOutlet(info)
        self.outlet.push_sample(values)

    def close(self) -> None:
        self.outlet = None

    def abort(self) -> Path | None:
        self.outlet = None
        return None


SINKS = {"jsonl": JsonlSink, "csv": CsvSink, "npz": NpzSink, "lsl": LslSink}


#: file formats a sink's bare path may name by its extension
FILE_SINKS = ("jsonl", "csv", "npz")


def as_sink_url(text: str) -> str:
    """`text` as a sink URL: a URL as it is; `-` as stdout in JSON lines; a file's path as the sink of
    the format its extension names (`.jsonl`, `.csv`, `.npz`)."""
    if "://" in text:
        return text
    if text == "-":
        return "jsonl://-"
    ext = Path(text).suffix.lower().lstrip(".")
    if ext not in FILE_SINKS:
        raise SinkError(f"{text!r} is neither a sink URL ({', '.join(s + '://' for s in SINKS)}) nor a file "
                        f"ending in {', '.join('.' + e for e in FILE_SINKS)}")
    return f"{ext}://{text}"


def open_sink(url: str) -> Sink:
    """Open the sink a URL (or a file's path, `as_sink_url`) names; unknown schemes, bad parameters and
    unwritable folders are one-line errors."""
    parsed = parse_url(as_sink_url(url))
    if parsed.scheme not in SINKS:
        raise SinkError(f"unknown sink {url!r}: use one of {', '.join(s + '://' for s in SINKS)}")
    return SINKS[parsed.scheme](parsed)
