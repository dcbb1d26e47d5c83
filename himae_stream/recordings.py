"""Reading recordings: WFDB, TROIKA-layout MATLAB, CSV, NPY/NPZ, EDF/BDF, Empatica's Avro, WESAD-style pickles.

One reader for the whole project (training, simulator, `himae embed`), so a
channel is named and scaled the same way everywhere. Every loader returns a
`Recording` with float64 signals `(channels, samples)`, the sampling rate and
channel names; channels are picked by name or glob (`PPG*`), and one rule
(`model_patterns`) says which channel a model reads when the user names none.
"""

from __future__ import annotations

import fnmatch
import pickle
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from himae_stream import opensignals
from himae_stream.errors import HimaeError

TROIKA_FS = 125.0
TROIKA_TRAIN_CHANNELS = ["ECG", "PPG1", "PPG2", "ACC_X", "ACC_Y", "ACC_Z"]
TROIKA_TEST_CHANNELS = ["PPG1", "PPG2", "ACC_X", "ACC_Y", "ACC_Z"]
#: Names devices and databases give a PPG channel: TROIKA's PPG1/PPG2, PhysioNet's PLETH,
#: Empatica's BVP, pulse oximeters' PULSE. A model channel named PPG reads any of them.
PPG_PATTERNS = ("PPG*", "PLETH*", "BVP*", "PULSE*")
#: What DIY boards name the LED channels of a MAX3010x-class sensor: each is a PPG. A model's PPG
#: channel reads them after every name above, infrared first (the usual pulse signal).
LED_PATTERNS = ("IR*", "RED*", "GREEN*")
#: Names that say what a channel carries: a source channel named so is never read as another
#: signal just because it is the only one (an H10's ECG, a Holter's MLII lead, are no PPG).
#: ECG leads as WFDB records name them: limb (I, II, III, aVR, aVL, aVF), chest (V1-V6, or V alone where a
#: monitor records one, as the PhysioNet/CinC 2015 ICU records do), modified (MLII).
ECG_PATTERNS = ("ECG*", "EKG*", "LEAD*", "ML*", "I", "II", "III", "AVR", "AVL", "AVF", "V", "V[1-6]")
SIGNAL_PATTERNS = (*PPG_PATTERNS, *LED_PATTERNS, *ECG_PATTERNS, "ACC*", "GYRO*", "MAG*", "RESP*", "EDA*", "TEMP*",
                   "AMBIENT*")
#: The record the package bundles (PhysioNet a103l: finger PPG as PLETH, beside two ECG leads):
#: the default `himae run` replays it, and examples can rely on it being there.
DEMO = Path(__file__).parent / "data" / "a103l.hea"
#: Largest recording file read whole (memory is bounded by the input, and a
#: recording larger than this is not one a wearable produces in a session).
MAX_RECORDING_BYTES = 2 << 30
#: the suffixes a folder's recordings are found by (`find_recordings`)
RECORDING_SUFFIXES = (".hea", ".mat", ".csv", ".npy", ".npz", ".edf", ".bdf", ".avro", ".pkl")
#: the kinds of recording files read, as help texts and messages name them
#: and .txt: a table named by its path, and in a folder an OpenSignals file or a Polar Sensor Logger export
RECORDING_KINDS = "WFDB, .mat, .csv, .txt, .npy, .npz, .edf, .bdf, .avro, .pkl"
#: per-folder tables of contents beside the wearable NPZ recordings, not recordings
INDEX_FILES = ("index.csv",)
#: longest CSV header line read: channel names, not data
CSV_HEADER_LIMIT = 1 << 16
#: Column separators of CSV files and text lines, tried in this order (a spreadsheet set to a
#: language that writes decimal commas saves its CSV with semicolons).
CSV_DELIMITERS = (",", "\t", ";")
#: Microseconds per unit of a timestamp column.
TIME_UNITS = {"s": 1e6, "ms": 1e3, "us": 1.0, "ns": 1e-3}
#: Column names read as timestamps (CSV files, text lines), and the unit each name implies (None:
#: seconds in a file, the reader's choice on a serial line).
TIME_NAMES = {
    "t": None, "time": None, "ts": None, "timestamp": None, "millis": "ms", "ms": "ms", "time_ms": "ms",
    "t_ms": "ms", "micros": "us", "us": "us", "time_us": "us", "t_us": "us", "time_s": "s", "t_s": "s",
    "seconds": "s", "sec": "s", "sensor timestamp [ns]": "ns",
}
#: Smallest time (s) read as a Unix time, 1973: a device's clock since it started counts less.
UNIX_TIME_MIN = 1e8
#: The first two columns of a Polar Sensor Logger export (`..._PPG.txt`, `_ACC.txt`, `_ECG.txt`): the phone's
#: clock as text, left out, then the sensor's in nanoseconds, which gives the rate.
POLAR_LOGGER_COLUMNS = ("phone timestamp", "sensor timestamp [ns]")


class RecordingError(HimaeError):
    """A recording cannot be read or lacks what was asked of it."""


@dataclass
class Recording:
    name: str
    subject: str
    fs: float
    channel_names: list[str]
    signals: np.ndarray  # (channels, samples) float64
    path: str = ""
    comments: list[str] = field(default_factory=list)
    #: Unix time (s, UTC) of the first sample, where the file states it unambiguously (an Empatica export,
    #: an EmbracePlus file, a CSV time column of Unix times); None elsewhere (a clock time without a zone).
    start: float | None = None

    @property
    def duration_s(self) -> float:
        return self.signals.shape[1] / self.fs

    def pick(self, patterns) -> "Recording":
        """Keep the channels matching `patterns` (names or globs, case-insensitive), in pattern order."""
        idx = pick_names(self.channel_names, patterns, self.name)
        return replace(self, channel_names=[self.channel_names[i] for i in idx], signals=self.signals[idx])

    def resampled(self, fs: float) -> "Recording":
        return replace(self, fs=float(fs), signals=resample(self.signals, self.fs, fs))


def channel_patterns(patterns) -> list[str]:
    """Channel names or globs as a list: given as one (a list, or None for none) or as "A,B"."""
    if isinstance(patterns, str):
        return [p for p in patterns.split(",") if p]
    return list(patterns or [])


def pick_names(names, patterns, what: str) -> list[int]:
    """Indices of the channels matching `patterns` (names or globs, case-insensitive, a list or
    "A,B"), in pattern order; a pattern that matches nothing is a RecordingError naming `what`."""
    patterns = channel_patterns(patterns)
    idx: list[int] = []
    for pattern in patterns:
        hits = [i for i, n in enumerate(names) if fnmatch.fnmatch(n.upper(), pattern.upper())]
        if not hits:
            raise RecordingError(f"{what}: no channel matches {pattern!r} (channels: {', '.join(names)})")
        idx += [i for i in hits if i not in idx]
    return idx


def model_patterns(model_names) -> list[str]:
    """The channel patterns a model reads when the user names none: its own
    channel names, and for a PPG channel every usual name of one (`PPG_PATTERNS`, then
    `LED_PATTERNS`).

    Every command and API picks channels through this rule, so a recording
    that `himae run` reads is read the same way by `embed`, `plot`, `sim://`
    and training.
    """
    patterns = []
    for name in model_names or []:
        patterns.append(name)
        if fnmatch.fnmatch(name.upper(), "PPG*"):
            patterns += PPG_PATTERNS + LED_PATTERNS
    return list(dict.fromkeys(patterns))


def match_channels(names, patterns, need: int, model_names=None,
                   hint: str = "--channels (or channels= in a URL)") -> list[int]:
    """Indices of the first `need` channels matching any of `patterns` (names or globs, in order).

    Patterns that match nothing are alternatives, not errors ("PPG1,PLETH"
    reads TROIKA and PhysioNet alike); too few matches is a RecordingError.
    Without `patterns` the model's rule applies (`model_patterns(model_names)`),
    and a source with exactly `need` channels, none of them named like the
    model's or like another signal (`SIGNAL_PATTERNS`), is read as is (a bare
    array or an unnamed device channel). `hint` is how the caller's user names a
    channel, said when the model's rule finds too few.
    """
    patterns = channel_patterns(patterns)
    by_model = not patterns
    if by_model:
        patterns = model_patterns(model_names) or ["*"]
    hits = [i for p in patterns for i, n in enumerate(names) if fnmatch.fnmatch(n.upper(), p.upper())]
    hits = list(dict.fromkeys(hits))[:need]
    named = any(fnmatch.fnmatch(n.upper(), p) for n in names for p in SIGNAL_PATTERNS)
    if not hits and by_model and len(names) == need and not named:
        return list(range(need))
    if len(hits) < need:
        said = f"; name the channel with {hint}" if by_model else ""
        raise RecordingError(
            f"need {need} channel(s) matching {', '.join(patterns)}; found {len(hits)} among {', '.join(names)}{said}"
        )
    return hits


def pick_for_model(rec: "Recording", channels, model_config: dict) -> "Recording":
    """The channels of `rec` a model reads: `channels` (names/globs, a command's --channels) if given, else the
    model's rule."""
    picks = match_channels(rec.channel_names, channels, model_config["in_channels"], model_config.get("channel_names"),
                           "--channels")
    return rec.pick([rec.channel_names[i] for i in picks])


def resample(x: np.ndarray, fs_from: float, fs_to: float) -> np.ndarray:
    """A whole recording `(channels, n)` through the runtime's streaming resampler.

    The same causal FIR that `himae run` applies live (`StreamResampler`), one
    channel at a time, so a window's input, and so its embedding, is the
    same offline (training, probes, `himae embed`) as live. A non-finite
    sample makes the outputs under its filter taps NaN: lost, as live.
    """
    from himae_stream.resample import StreamResampler

    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    if fs_from == fs_to:
        return x
    times = np.arange(x.shape[1]) / fs_from
    rows = []
    for row in x:
        lost = ~np.isfinite(row)
        out, out_lost, _ = StreamResampler(fs_from, fs_to, 1).push(np.where(lost, 0.0, row)[None], lost, times)
        rows.append(np.where(out_lost, np.nan, out[0].astype(np.float64)))
    return np.stack(rows)


def find_recordings(path) -> list[Path]:
    """Every recording under `path` (or `path` itself); companion files (BPM traces, .dat) are left out."""
    path = Path(path)
    if not path.exists():
        raise RecordingError(f"recording or folder not found: {path}")
    if not path.is_dir():
        return [path]  # a file, or something `load` refuses in its own words (a FIFO, a device)
    found = []
    for p in sorted(path.rglob("*")):
        suffix = p.suffix.lower()
        if not p.is_file() or p.name.lower() in INDEX_FILES:
            continue
        if suffix == ".mat" and (p.with_suffix(".hea").exists() or _is_label_file(p)):
            continue
        if suffix in RECORDING_SUFFIXES or suffix == ".txt" and _recording_txt(p):
            found.append(p)
    if not found:
        raise RecordingError(f"no recordings ({RECORDING_KINDS}) under {path}")
    return found


def _recording_txt(path: Path) -> bool:
    """Whether a .txt found in a folder is a recording by its first line (a notes.txt is not): an OpenSignals
    file, or a Polar Sensor Logger export."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            line = f.readline(CSV_HEADER_LIMIT)
    except OSError:  # unreadable: not ours to name among a folder's notes
        return False
    return opensignals.is_opensignals(line) or _is_polar_export(_csv_header(line)[1])


def _is_label_file(path: Path) -> bool:
    """TROIKA heart-rate traces sit beside the recordings as .mat files too."""
    return "BPM" in path.stem or path.stem.startswith("True_")


def load(path, channels=None, fs: float | None = None, default_fs: float | None = None,
         rate_hint: str = "--fs", rate_of=None) -> Recording:
    """Read any supported recording; `channels` picks by name/glob; `fs` is needed for bare NPY (and
    overrides an NPZ's or a CSV time column's rate); `default_fs` is the rate of a file that states none.
    `rate_hint` is how the caller's user gives a rate, named when a file states none and none was given.
    A file whose channels have rates of their own (EDF) gives those at the rate of the first channel
    matching `channels`, else `rate_of` (names/globs, picking nothing), else of a PPG (`himae_stream.edf`).

    Every failure is a RecordingError that names the file: a file that is not
    what its suffix says is refused, never passed on as a library's traceback.
    """
    path = Path(path)
    if path.suffix == "" and path.with_suffix(".hea").exists():
        path = path.with_suffix(".hea")
    if not path.exists():
        raise RecordingError(f"recording not found: {path}")
    if not path.is_file():
        raise RecordingError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise RecordingError(f"{path}: the file is empty")
    if path.stat().st_size > MAX_RECORDING_BYTES:
        raise RecordingError(f"{path}: {path.stat().st_size} bytes, more than a recording may hold "
                             f"({MAX_RECORDING_BYTES >> 30} GiB)")
    for rate in (fs, default_fs):
        if rate is not None and not (np.isfinite(rate) and rate > 0):
            raise RecordingError(f"{path}: the sampling rate must be a number > 0, got {rate}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".hea" or (suffix in (".dat", ".mat") and path.with_suffix(".hea").exists()):
            rec = _load_wfdb(path)
        elif suffix == ".mat":
            rec = _load_troika(path)
        elif suffix in (".csv", ".txt"):
            rec = _load_csv(path, fs, default_fs, rate_hint)
        elif suffix in (".npy", ".npz"):
            rec = _load_numpy(path, fs, default_fs, rate_hint)
        elif suffix in (".edf", ".bdf"):
            rec = _load_edf(path, channels or rate_of)
        elif suffix == ".avro":
            rec = _load_embraceplus(path)
        elif suffix == ".pkl":
            rec = _load_wrist_pickle(path)
        else:
            raise RecordingError(f"{path}: unsupported recording type {suffix!r} (use {RECORDING_KINDS})")
    except RecordingError:
        raise
    except Exception as exc:  # noqa: BLE001 - wfdb, scipy.io and numpy raise many types for a bad file
        reason = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RecordingError(f"cannot read recording {path}: {reason}") from exc
    if rec.signals.ndim != 2 or rec.signals.shape[1] == 0:
        raise RecordingError(f"{path}: recording holds no samples")
    if not (np.isfinite(rec.fs) and rec.fs > 0):
        raise RecordingError(f"{path}: sampling rate {rec.fs} is not a number > 0")
    return rec.pick(channels) if channels else rec


def _load_wfdb(path: Path) -> Recording:
    with warnings.catch_warnings():  # wfdb's own use of deprecated pandas calls, as it is imported: not the user's
        warnings.simplefilter("ignore", DeprecationWarning)
        import wfdb

    header = path.with_suffix(".hea")
    if not header.read_text(errors="replace").strip():
        raise RecordingError(f"{header}: the WFDB header is empty")
    record = wfdb.rdrecord(str(path.with_suffix("")))
    return Recording(
        name=record.record_name,
        subject=record.record_name,
        fs=float(record.fs),
        channel_names=list(record.sig_name),
        signals=np.asarray(record.p_signal, dtype=np.float64).T.copy(),
        path=str(path),
        comments=list(record.comments or []),
    )


def _load_edf(path: Path, channels) -> Recording:
    """EDF, EDF+ or BDF: the signals at the rate of the channel asked for, else of a PPG (see himae_stream.edf)."""
    from himae_stream import edf

    try:
        fs, names, signals = edf.read(path, channel_patterns(channels), PPG_PATTERNS + LED_PATTERNS)
    except edf.EdfError as exc:
        raise RecordingError(f"{path}: {exc}") from None
    return Recording(path.stem, path.stem, fs, names, signals, str(path))


def _load_opensignals(path: Path, fs: float | None) -> Recording:
    """An OpenSignals text file (BITalino, biosignalsplux): its analog channels at its rate (see
    himae_stream.opensignals)."""
    try:
        names, stated, signals = opensignals.read(path)
    except opensignals.OpenSignalsError as exc:
        raise RecordingError(f"{path}: {exc}") from None
    if fs and abs(fs - stated) > 1e-6 * fs:
        raise RecordingError(f"{path}: an OpenSignals recording at {stated:g} Hz, not the {fs:g} Hz given")
    return Recording(path.stem, path.stem, stated, names, signals, str(path))


def _load_embraceplus(path: Path) -> Recording:
    """An Empatica EmbracePlus raw data file (Avro, one session record): its PPG, `rawData.bvp`, as BVP at
    its `samplingFrequency` (64 Hz). The device writes a file per stretch it was worn: one file, one
    recording; the other sensors (accelerometer in raw counts, EDA, temperature) are left out."""
    from himae_stream import avro

    with open(path, "rb") as f:
        try:
            sessions = avro.read(f.read())
        except avro.AvroError as exc:
            raise RecordingError(f"{path}: {exc}") from None
    if len(sessions) != 1:
        raise RecordingError(f"{path}: {len(sessions)} objects; an EmbracePlus file holds one session")
    raw = sessions[0].get("rawData") if isinstance(sessions[0], dict) else None
    bvp = raw.get("bvp") if isinstance(raw, dict) else None
    if not isinstance(bvp, dict) or not {"samplingFrequency", "values"} <= bvp.keys():
        raise RecordingError(f"{path}: no rawData.bvp with samplingFrequency and values (where an Empatica "
                             "EmbracePlus file holds its PPG)")
    values = np.asarray(bvp["values"], dtype=np.float64)
    if values.ndim != 1 or not values.size:
        raise RecordingError(f"{path}: rawData.bvp holds no samples (the device was off the wrist or charging)")
    start = bvp.get("timestampStart")
    return Recording(path.stem, path.stem, float(bvp["samplingFrequency"]), ["BVP"], values[None], str(path),
                     start=start / 1e6 if isinstance(start, int) and start > 0 else None)


#: The Empatica E4's PPG rate: WESAD's and PPG-DaLiA's pickles hold its samples without it.
E4_BVP_FS = 64.0


def _load_wrist_pickle(path: Path) -> Recording:
    """A WESAD or PPG-DaLiA subject's pickle: `signal.wrist.BVP`, the Empatica E4's PPG at 64 Hz. Unpickled
    by `_ArraysOnly`, which builds numpy arrays, dicts, lists and numbers and refuses anything else: a pickle
    can name any callable to run, and a recording must not run code."""
    with open(path, "rb") as f:
        try:
            data = _ArraysOnly(f, encoding="latin1").load()  # the data sets were pickled by Python 2
        except pickle.UnpicklingError as exc:
            raise RecordingError(f"{path}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - what numpy or the pickle machine raise for bad bytes
            raise RecordingError(f"{path}: not a pickle of arrays ({type(exc).__name__}: {exc})") from None
    signal = data.get("signal") if isinstance(data, dict) else None
    wrist = signal.get("wrist") if isinstance(signal, dict) else None
    bvp = wrist.get("BVP") if isinstance(wrist, dict) else None
    if not isinstance(bvp, np.ndarray) or bvp.dtype.kind not in "iuf" or bvp.size == 0:
        raise RecordingError(f"{path}: no signal.wrist.BVP array (where WESAD and PPG-DaLiA keep the wrist PPG)")
    subject = data.get("subject")
    return Recording(path.stem, subject if isinstance(subject, str) else path.stem, E4_BVP_FS, ["BVP"],
                     np.asarray(bvp, dtype=np.float64).reshape(1, -1), str(path))


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that resolves only what numpy arrays are rebuilt from (Python 2's and 3's, numpy 1's
    and 2's names for them); any other global is an UnpicklingError naming it. The array class itself is
    handed out as a token only `_reconstruct` takes, and that only for the empty array numpy's pickles
    start from (their data follows, bounded by the file): a pickle cannot call it to allocate any size."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
               *((f"numpy.{core}.{module}", name) for core in ("core", "_core")
                 for module, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"),
                                      ("numeric", "_frombuffer")))}

    class ArrayToken:
        """What `numpy.ndarray` resolves to: not callable."""

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"the pickle names {module}.{name}; only numpy arrays, dicts, lists and "
                                         "numbers are read from one (a pickle can run any code it names)")
        if module == "_codecs":
            import codecs

            return codecs.encode
        if (module, name) == ("numpy", "ndarray"):
            return self.ArrayToken
        if module.startswith("numpy."):
            import importlib

            inner = module.split(".", 2)[2]
            try:
                found = getattr(importlib.import_module(f"numpy._core.{inner}"), name)  # numpy 2
            except ImportError:
                found = getattr(importlib.import_module(f"numpy.core.{inner}"), name)
            return self._empty_array(found) if name == "_reconstruct" else found
        return getattr(np, name)

    def _empty_array(self, reconstruct):
        def empty(subtype, shape, dtype):
            if subtype is not self.ArrayToken or not isinstance(shape, tuple) or np.prod(shape) > 1:
                raise pickle.UnpicklingError(f"the pickle builds an array of shape {shape} from nothing; numpy's "
                                             "pickles start from an empty one")
            return reconstruct(np.ndarray, shape, dtype)
        return empty


def _load_troika(path: Path) -> Recording:
    from scipy.io import loadmat

    data = loadmat(str(path))
    if "sig" not in data:
        raise RecordingError(f"{path}: no 'sig' variable (expected the TROIKA layout)")
    sig = np.asarray(data["sig"], dtype=np.float64)
    if sig.shape[0] == 6:
        names = TROIKA_TRAIN_CHANNELS
    elif sig.shape[0] == 5:
        names = TROIKA_TEST_CHANNELS
    else:
        raise RecordingError(f"{path}: 'sig' has {sig.shape[0]} rows, TROIKA files have 5 or 6")
    return Recording(path.stem, troika_subject(path.stem), TROIKA_FS, list(names), sig, str(path))


def troika_subject(stem: str) -> str:
    """Subject id of a TROIKA file name, so splits never put one person on both sides."""
    if m := re.match(r"DATA_(\d+)_TYPE", stem):
        return f"troika-train-{m.group(1)}"
    if m := re.match(r"(?:DATA|TEST|True|BPM)_(S\d+)_T\d+", stem):
        kind = "test" if stem.startswith(("TEST", "True")) else "extra"
        return f"troika-{kind}-{m.group(1)}"
    return stem


def _load_csv(path: Path, fs: float | None, default_fs: float | None, rate_hint: str) -> Recording:
    """CSV with a header row of channel names (a time column, `TIME_NAMES`, gives the rate); or, with a
    first row of numbers, an Empatica E4 export (`BVP.csv`: the start's Unix time, then the rate,
    then samples, one column per axis) or plain columns of samples (the rate from `fs`)."""
    with open(path, encoding="utf-8-sig", errors="replace") as f:  # a spreadsheet's byte-order mark dropped
        line = f.readline(CSV_HEADER_LIMIT)
    if not line.strip():
        raise RecordingError(f"{path}: empty file (expected a header row of channel names, then rows of numbers)")
    if opensignals.is_opensignals(line):
        return _load_opensignals(path, fs)
    delimiter, header = _csv_header(line)
    headed = not all(_csv_number(h, delimiter) is not None for h in header)
    polar = _is_polar_export(header)
    with warnings.catch_warnings():  # an empty table is refused below, in one line
        warnings.simplefilter("ignore", UserWarning)
        try:
            data = np.loadtxt(path, delimiter=delimiter, skiprows=1 if headed else 0, ndmin=2, encoding="utf-8-sig",
                              converters=_decimal_comma if delimiter == ";" else None,
                              usecols=range(1, len(header)) if polar else None)
        except ValueError:
            raise RecordingError(_first_bad_row(path, delimiter, len(header), 1 if headed else 0, polar)) from None
    if polar:
        header = header[1:]
    if data.size == 0:
        raise RecordingError(f"{path}: no rows of samples under the header")
    if data.shape[1] != len(header):
        raise RecordingError(f"{path}: header has {len(header)} columns, rows have {data.shape[1]}")
    start = None
    if not headed:
        header = _column_names(path.stem, data.shape[1])
        if _e4_layout(data):
            if fs and abs(fs - data[1, 0]) > 1e-6 * fs:
                raise RecordingError(f"{path}: an Empatica export at {data[1, 0]:g} Hz, not the {fs:g} Hz given")
            start, fs, data = float(data[0, 0]), float(data[1, 0]), data[2:]
            if not len(data):
                raise RecordingError(f"{path}: no rows of samples under the start time and rate")
    elif times := [i for i, h in enumerate(header) if h.lower() in TIME_NAMES]:
        column = times[0]
        if len(data) < 2:
            raise RecordingError(f"{path}: too few rows to derive the sampling rate")
        name = header[column]
        if len(header) == 1:
            raise RecordingError(f"{path}: only a time column ({name}), no signal")
        seconds = TIME_UNITS[TIME_NAMES[name.lower()] or _unix_unit(data[0, column]) or "s"] * 1e-6
        step = float(np.median(np.diff(data[:, column]))) * seconds
        if not polar and data[0, column] * seconds >= UNIX_TIME_MIN:  # Polar's clock counts from 2000
            start = float(data[0, column]) * seconds
        if not fs and not step > 0:
            raise RecordingError(f"{path}: the time column does not increase (median step {step:g} s)")
        fs = fs or 1.0 / step
        header, data = header[:column] + header[column + 1 :], np.delete(data, column, axis=1)
    if polar:
        header, data = _polar_channels(header, data)
    fs = fs or default_fs
    if not fs:
        raise RecordingError(f"{path}: no time column; give the sampling rate ({rate_hint})")
    return Recording(path.stem, path.stem, float(fs), header, data.T.copy(), str(path), start=start)


def _unix_unit(first: float) -> str | None:
    """The unit of a time column named without one ("timestamp") whose first value is a Unix time: seconds,
    milliseconds (phone apps), micro- or nanoseconds, by its size; None for a clock since a device started."""
    for unit, low in (("ns", 1e17), ("us", 1e14), ("ms", 1e11), ("s", UNIX_TIME_MIN)):
        if first >= low:
            return unit
    return None


def _decimal_comma(field: str) -> float:
    """A number of a semicolon-separated CSV file, written with a decimal point or comma."""
    return float(field.replace(",", "."))


def _polar_channels(header: list[str], data: np.ndarray) -> tuple[list[str], np.ndarray]:
    """A Polar Sensor Logger export's channels named as `polar://` names them: PPG0-2 and AMBIENT, with
    PPG, their mean, first (what a PPG model reads); ACC_X/Y/Z; other names without their unit."""
    names = [re.sub(r"\s*\[.*\]$", "", h) for h in header]
    names = [f"PPG{m.group(1)}" if (m := re.fullmatch(r"channel (\d)", n)) else n.upper() for n in names]
    if {"X", "Y", "Z"} <= set(names):
        names = [f"ACC_{n}" if n in ("X", "Y", "Z") else n for n in names]
    ppg = [names.index(f"PPG{i}") for i in range(3) if f"PPG{i}" in names]
    if len(ppg) == 3:
        return ["PPG", *names], np.column_stack([data[:, ppg].mean(axis=1), data])
    return names, data


def _first_bad_row(path: Path, delimiter: str, columns: int, skip: int, polar: bool = False) -> str:
    """Why numpy could not read a CSV file: its first line (numbered as an editor shows it) that is not
    a row of `columns` numbers (but for a Polar Sensor Logger export's first column, its phone's clock)."""
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for number, line in enumerate(iter(lambda: f.readline(CSV_HEADER_LIMIT), ""), 1):
            text = line.strip()
            if number <= skip or not text or text.startswith("#"):  # loadtxt skips these too
                continue
            fields = text.split(delimiter)
            if len(fields) != columns or any(_csv_number(x.strip(), delimiter) is None for x in fields[polar:]):
                return f"{path}: line {number} is not a row of {columns} numbers: {text[:60]!r}"
    return f"{path}: not a table of numbers"


def _csv_number(field: str, delimiter: str) -> float | None:
    """A CSV field's number (decimal commas too where columns are split by semicolons), or None."""
    try:
        return _decimal_comma(field) if delimiter == ";" else float(field)
    except ValueError:
        return None


def _csv_header(line: str) -> tuple[str, list[str]]:
    """A CSV file's column separator and the fields of its first line (stripped)."""
    delimiter = _csv_delimiter(line)
    return delimiter, [h.strip() for h in line.strip().split(delimiter)]


def _is_polar_export(header: list[str]) -> bool:
    """Whether a CSV header is a Polar Sensor Logger export's (`POLAR_LOGGER_COLUMNS` first)."""
    return tuple(h.lower() for h in header[:2]) == POLAR_LOGGER_COLUMNS


def _csv_delimiter(line: str) -> str:
    """A CSV file's column separator, from its first line: the first of CSV_DELIMITERS in it that
    splits a row of numbers into numbers; for a header row, the first in it; else a comma."""
    present = [d for d in CSV_DELIMITERS if d in line]
    for d in present:
        if all(_csv_number(f.strip(), d) is not None for f in line.strip().split(d)):
            return d
    return present[0] if present else ","


def is_number(text: str) -> bool:
    """Whether `text` reads as a number (a CSV field, a label)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _e4_layout(data: np.ndarray) -> bool:
    """Whether headerless columns start as an Empatica E4 export does: every column's first row the
    same Unix time (after 1973), its second the same rate (Hz) of at most 10 kHz."""
    return (len(data) >= 2 and (data[0] == data[0, 0]).all() and data[0, 0] >= UNIX_TIME_MIN
            and (data[1] == data[1, 0]).all() and 0 < data[1, 0] <= 10_000)


def _column_names(stem: str, columns: int) -> list[str]:
    """Names for headerless columns: the file's (BVP.csv: BVP; ACC.csv: ACC_X, ACC_Y, ACC_Z)."""
    if columns == 1:
        return [stem]
    if columns == 3:
        return [f"{stem}_{axis}" for axis in "XYZ"]
    return [f"{stem}_{i}" for i in range(columns)]


def _load_numpy(path: Path, fs: float | None, default_fs: float | None, rate_hint: str) -> Recording:
    """NPZ with `signals` (C, N), `fs` and optional `channel_names`, or a wearable NPZ with
    `ppg` and `fs_ppg` (`_load_wearable_npz`); or bare NPY (C, N) / (N,) plus fs. The file is opened
    here, so that it is closed however numpy fails on it (np.load given a path that is not a zip leaves
    its handle to the garbage collector)."""
    names = None
    if path.suffix == ".npz":
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            if "ppg" in z and "signals" not in z:
                return _load_wearable_npz(path, z)
            if "signals" not in z and {"names", "mode", "level0"} <= set(z.files):
                raise RecordingError(f"{path}: embeddings `himae embed` wrote, not a recording")
            if "signals" not in z:
                raise RecordingError(f"{path}: no 'signals' array (nor 'ppg' and 'fs_ppg'); has {', '.join(z.files)}")
            signals = z["signals"]
            fs = fs or (float(z["fs"]) if "fs" in z else default_fs)
            if not fs:
                raise RecordingError(f"{path}: no 'fs' array; give the sampling rate ({rate_hint})")
            names = [str(n) for n in z["channel_names"]] if "channel_names" in z else None
    else:
        with open(path, "rb") as fh:
            signals = np.load(fh, allow_pickle=False)
        fs = fs or default_fs
        if not fs:
            raise RecordingError(f"{path}: a .npy file carries no sampling rate; give it ({rate_hint})")
    signals = np.atleast_2d(np.asarray(signals, dtype=np.float64))
    names = names or [f"ch{i}" for i in range(signals.shape[0])]
    if len(names) != signals.shape[0]:
        raise RecordingError(f"{path}: {len(names)} channel names for {signals.shape[0]} channels")
    return Recording(path.stem, path.stem, float(fs), names, signals, str(path))


def _load_wearable_npz(path: Path, z) -> Recording:
    """One recording of a wearable data set: `ppg` at `fs_ppg` (1-D, or windows x samples that
    tile the session, read end to end), with `ecg` and 3-axis `acc` as channels ECG and
    ACC_X/Y/Z where they share the PPG's rate and length (other rates are left out: a
    Recording has one rate, and the models read PPG). The subject id carries the data set's
    name, so subject-held-out splits never mix two data sets' "s1".
    """
    ppg = np.asarray(z["ppg"], dtype=np.float64).reshape(-1)
    names, rows = ["PPG"], [ppg]
    fs = round(float(z["fs_ppg"]), 6)  # stored as float32: 29.9, not 29.899999618
    if "ecg" in z and float(z.get("fs_ecg", 0)) == fs and z["ecg"].shape == ppg.shape:
        names.append("ECG")
        rows.append(np.asarray(z["ecg"], dtype=np.float64))
    acc = z["acc"] if "acc" in z else None
    if acc is not None and float(z.get("fs_acc", 0)) == fs and acc.shape == (3, ppg.size):
        names += ["ACC_X", "ACC_Y", "ACC_Z"]
        rows += list(np.asarray(acc, dtype=np.float64))
    subject = str(z["subject"]) if "subject" in z else path.stem
    dataset = str(z["dataset"]) if "dataset" in z else path.parent.name
    return Recording(path.stem, f"{dataset}:{subject}", fs, names, np.stack(rows), str(path))
