"""`himae embed`: per-window, per-level embeddings of recordings, offline, into one NPZ.

Stream mode (default) gives exactly what `himae run` gives live; window mode
runs each window in isolation (zero padding at its edges), as in the paper.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from himae_stream.commands import add_precision_argument
from himae_stream.numbers import COUNT, SAMPLE_RATE


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="PATH",
                   help="recordings (WFDB, .mat, .csv, .npy, .npz), or folders searched for them")
    p.add_argument("-o", "--output", required=True, help="output .npz")
    p.add_argument("--model", default="himae-100", help="model file or shipped model name (default himae-100)")
    p.add_argument("--mode", choices=("stream", "window"), default="stream")
    p.add_argument("--levels", help="comma-separated levels to keep (default: all)")
    p.add_argument("--window", help="window length (default: the model's)")
    p.add_argument("--hop", default="1s", help="hop between windows (default 1s)")
    p.add_argument("--channels", help="recording channel(s) to read, by name or glob (default: the model's)")
    p.add_argument("--fs", type=SAMPLE_RATE, help="sampling rate of bare .npy files")
    add_precision_argument(p)


#: Stream mode pushes a recording this many windows at a time and keeps only each push's windows: the
#: per-position rows a push also returns (160 bytes a sample for himae-100: 1.4 GB for a day at 100 Hz)
#: then take a few MB at a time instead of memory the size of the recording's (the windows are the
#: same bits either way).
CHUNK_WINDOWS = 60


def embed_recording(model, signals: np.ndarray, mode: str, window: int, hop: int) -> tuple[np.ndarray, list]:
    """Window starts and per-level embeddings `(n_windows, C_l)` of one recording at the model rate."""
    if mode == "stream":
        stream = model.stream(window=window, hop=hop)
        step, n_levels = CHUNK_WINDOWS * window, len(model.config["channels"])

        def outputs():
            for i in range(0, signals.shape[1], step):
                yield stream.push(signals[:, i : i + step])
            yield stream.flush()

        starts, parts = [], []
        for out in outputs():  # each push's rows dropped once its windows are taken
            starts += [w.start for w in out.windows]
            parts.append([out.embeddings(l) for l in range(n_levels)])
        levels = [np.concatenate([part[l] for part in parts]) for l in range(n_levels)]
        return np.array(starts, dtype=np.int64), levels
    normalised = model.normalize(signals) if model.metadata["normalizer"]["kind"] == "stream" else signals
    starts = np.arange(0, signals.shape[1] - window + 1, hop, dtype=np.int64)
    batch = np.stack([normalised[:, s:s + window] for s in starts]).astype(np.float32)
    if model.metadata["normalizer"]["kind"] == "minmax":
        from himae_stream.normalize import minmax

        batch = minmax(batch)
    return starts, model.embed(batch) if len(starts) else [np.zeros((0, c), np.float32) for c in model.config["channels"]]


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from himae_stream import recordings
    from himae_stream.cli import CliError
    from himae_stream.pipeline import load
    from himae_stream.sinks import check_output, replace_with_npz
    from himae_stream.stream import to_samples

    output = check_output(Path(args.output))
    model = load(args.model, args.precision)
    fs = float(model.config["fs"])
    window = to_samples(args.window or model.config["window"], fs, "--window")
    hop = to_samples(args.hop, fs, "--hop")
    n_levels = len(model.config["channels"])
    keep = list(range(n_levels)) if not args.levels else [COUNT.parse(l, "--levels") for l in args.levels.split(",")]
    if any(not 0 <= l < n_levels for l in keep):
        raise CliError(f"--levels must be within 0 … {n_levels - 1}")
    files = [f for path in args.files for f in recordings.find_recordings(path)]
    out: dict[str, list] = {"recording": [], "start": [], **{f"level{l}": [] for l in keep}}
    names, short = [], []
    console = Console(stderr=True)  # stdout keeps the summary alone; no bar where stderr is not a terminal
    with Progress(transient=True, console=console, disable=not console.is_terminal) as progress:
        task = progress.add_task("embedding", total=len(files))
        for path in files:
            rec = recordings.load(path, fs=args.fs)
            source_fs = rec.fs
            rec = recordings.pick_for_model(rec, args.channels, model.config).resampled(fs)
            progress.advance(task)
            if rec.signals.shape[1] < window:  # one of many is left out and named; a single one fails
                n = rec.signals.shape[1]
                resampled = f", resampled from {source_fs:g} Hz" if source_fs != fs else ""
                why = (f"{path}: {n} samples ({n / fs:.2f} s at {fs:g} Hz{resampled}) are fewer than one "
                       f"{window / fs:g}-s window (a shorter --window reads it)")
                if len(files) == 1:
                    raise CliError(why)
                progress.console.print(f"himae embed: skipped {why}", markup=False, highlight=False, soft_wrap=True)
                short.append(path)
                continue
            starts, levels = embed_recording(model, rec.signals, args.mode, window, hop)
            out["recording"].append(np.full(len(starts), len(names)))
            names.append(rec.name)
            out["start"].append(starts)
            for l in keep:
                out[f"level{l}"].append(levels[l])
    if not names:
        raise CliError(f"none of the {len(files)} recordings holds one {window / fs:g}-s window")
    arrays = {k: np.concatenate(v) for k, v in out.items()}
    replace_with_npz(output, {"names": np.array(names), "window": np.array(window), "hop": np.array(hop),
                                         "fs": np.array(fs), "mode": np.array(args.mode), **arrays})
    left = f" ({len(short)} shorter than one window skipped)" if short else ""
    print(f"himae embed: {len(arrays['start'])} windows from {len(names)} recording(s){left} → {args.output}")
    return 0
