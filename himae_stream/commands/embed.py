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
from himae_stream import recordings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="PATH",
                   help=f"recordings ({recordings.RECORDING_KINDS}), or folders searched for them")
    p.add_argument("-o", "--output", required=True,
                   help="output .npz: per window its recording, start, lost share and level means (docs/output.md)")
    p.add_argument("--model", default="himae-100", help="model file or shipped model name (default himae-100)")
    p.add_argument("--mode", choices=("stream", "window"), default="stream",
                   help="stream (default): the incremental engine `himae run` runs live; window: each window alone, "
                        "zero-padded at its edges, as in the paper")
    p.add_argument("--levels", help="comma-separated levels to keep (default: all)")
    p.add_argument("--window", help="window length (default: the model's)")
    p.add_argument("--hop", default="1s", help="hop between windows (default 1s)")
    p.add_argument("--channels", help="recording channel(s) to read, by name or glob (default: the model's)")
    p.add_argument("--fs", type=SAMPLE_RATE, help="sampling rate of bare .npy files")
    add_precision_argument(p)


#: Stream mode pushes a recording this many samples at a time and keeps only each push's windows: the
#: per-position rows a push also returns (160 bytes a sample for himae-100: 1.4 GB for a day at 100 Hz)
#: then take 0.6 MB at a time, which stay in cache for the running sums that read them next (the windows
#: are the same bits whatever the pushes; 40-s pushes embed 10-20 % faster in int8 than 600-s ones).
CHUNK_SAMPLES = 4096
#: Window mode embeds this many windows a call: its input, a copy of every window (ten copies of each
#: sample at a 1-s hop), then takes a few MB at a time instead of ten times the recording's size.
WINDOW_BATCH = 256


def embed_recording(model, signals: np.ndarray, mode: str, window: int,
                    hop: int) -> tuple[np.ndarray, list, np.ndarray]:
    """Window starts, per-level embeddings `(n_windows, C_l)` and each window's lost share of one
    recording at the model rate.

    A lost sample is a non-finite one (a gap in the recording, or the resampler's taps over one): it
    enters the encoder as 0 in either mode, so the share says how much of a window's embedding rests
    on signal, as `lost_fraction` does in `himae run`'s records."""
    if mode == "stream":
        stream = model.stream(window=window, hop=hop)
        step, n_levels = CHUNK_SAMPLES, len(model.config["channels"])

        def outputs():
            for i in range(0, signals.shape[1], step):
                yield stream.push(signals[:, i : i + step])
            yield stream.flush()

        starts, lost, parts = [], [], []
        for out in outputs():  # each push's rows dropped once its windows are taken
            starts += [w.start for w in out.windows]
            lost += [w.masked_fraction for w in out.windows]
            parts.append([out.embeddings(l) for l in range(n_levels)])
        levels = [np.concatenate([part[l] for part in parts]) for l in range(n_levels)]
        return np.array(starts, dtype=np.int64), levels, np.array(lost, dtype=np.float64)
    normalised = model.normalize(signals) if model.metadata["normalizer"]["kind"] == "stream" else signals
    starts = np.arange(0, signals.shape[1] - window + 1, hop, dtype=np.int64)
    lost_before = np.concatenate([[0], np.cumsum((~np.isfinite(signals)).sum(axis=0))])  # channel-samples
    lost = (lost_before[starts + window] - lost_before[starts]) * (1.0 / window) / signals.shape[0]  # as Stream
    parts = [[np.zeros((0, c), np.float32)] for c in model.config["channels"]]
    for i in range(0, len(starts), WINDOW_BATCH):
        batch = np.stack([normalised[:, s:s + window] for s in starts[i:i + WINDOW_BATCH]]).astype(np.float32)
        if model.metadata["normalizer"]["kind"] == "minmax":
            from himae_stream.normalize import minmax

            batch = minmax(batch)
        for part, level in zip(parts, model.embed(batch)):
            part.append(level)
    return starts, [np.concatenate(part) for part in parts], lost


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

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
    files = _inputs(args.files, output)
    out: dict[str, list] = {"recording": [], "start": [], "lost_fraction": [], **{f"level{l}": [] for l in keep}}
    names, starts_at, skipped = [], [], []
    console = Console(stderr=True)  # stdout keeps the summary alone; no bar where stderr is not a terminal
    with Progress(transient=True, console=console, disable=not console.is_terminal) as progress:
        task = progress.add_task("embedding", total=len(files))
        for path in files:
            rec, why = _model_signal(path, args, model.config, window)
            progress.advance(task)
            if why:  # one of many is left out and named; a single one fails
                if len(files) == 1:
                    raise CliError(why)
                progress.console.print(f"himae embed: skipped {why}", markup=False, highlight=False, soft_wrap=True)
                skipped.append(path)
                continue
            starts, levels, lost = embed_recording(model, rec.signals, args.mode, window, hop)
            out["recording"].append(np.full(len(starts), len(names)))
            names.append(rec.name)
            starts_at.append(np.nan if rec.start is None else rec.start)
            out["start"].append(starts)
            out["lost_fraction"].append(lost)
            for l in keep:
                out[f"level{l}"].append(levels[l])
    if not names:
        raise CliError(f"none of the {len(files)} recordings holds one {window / fs:g}-s window of signal the model "
                       "reads (each is named above)")
    # each array written a recording's piece at a time: the embeddings are never all in memory twice
    replace_with_npz(output, {"names": np.array(names), "recording_start": np.array(starts_at, dtype=np.float64),
                              "window": np.array(window), "hop": np.array(hop), "fs": np.array(fs),
                              "mode": np.array(args.mode), **out})
    left = f" ({len(skipped)} skipped)" if skipped else ""
    holes = sum(int((lost > 0).sum()) for lost in out["lost_fraction"])
    holes = f", {holes} with lost samples (lost_fraction)" if holes else ""
    windows = sum(len(starts) for starts in out["start"])
    print(f"himae embed: {windows} windows from {len(names)} recording(s){left}{holes} → {args.output}")
    return 0


def _inputs(paths: list[str], output: Path) -> list[Path]:
    """The recordings named and those in the folders named, less the output: an earlier run's output in a
    folder it embeds (`himae embed recs/ -o recs/emb.npz`, run again) is what this run replaces."""
    mine = output.resolve()
    return [f for path in paths for f in recordings.find_recordings(path) if Path(path) == f or f.resolve() != mine]


def _model_signal(path, args: argparse.Namespace, config: dict, window: int):
    """(the recording at `path` as the model reads it: its channels, at its rate; None) or (None, why not):
    unreadable, without the channel, shorter than a window or without a value."""
    try:
        rec = recordings.load(path, fs=args.fs, rate_of=args.channels)
    except recordings.RecordingError as exc:
        return None, str(exc)
    try:
        picked = recordings.pick_for_model(rec, args.channels, config).resampled(config["fs"])
    except recordings.RecordingError as exc:
        return None, f"{path}: {exc}"
    return picked, _unreadable(path, picked, rec.fs, window)


def _unreadable(path, rec, source_fs: float, window: int) -> str | None:
    """Why a recording (at the model rate) gives no window, or None: shorter than one, or no value in it."""
    n, fs = rec.signals.shape[1], rec.fs
    if n < window:
        resampled = f", resampled from {source_fs:g} Hz" if source_fs != fs else ""
        return (f"{path}: {n} samples ({n / fs:.2f} s at {fs:g} Hz{resampled}) are fewer than one "
                f"{window / fs:g}-s window (a shorter --window reads it)")
    if not np.isfinite(rec.signals).any():
        return f"{path}: no sample has a value (every one is NaN or infinite)"
    return None
