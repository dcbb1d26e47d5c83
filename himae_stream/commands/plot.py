"""`himae plot`: a PNG of a stretch of a recording with gaps, their imputation, and predictions.

Gaps are cut at seeded random places (or where `--gaps-at` says), filled by
the model, and drawn over the true signal, so the fill can be judged by eye.
"""

from __future__ import annotations

import argparse

import numpy as np


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recording", help="recording file (WFDB, .mat, .csv, .npy, .npz)")
    p.add_argument("-o", "--output", default="himae-plot.png", help="PNG to write (default himae-plot.png)")
    p.add_argument("--model", default="himae-100", help="model file or shipped model name (default himae-100)")
    p.add_argument("--channels", help="channel to read, by name or glob (default: the model's)")
    p.add_argument("--start", default="0s", help="start of the stretch (default 0s)")
    p.add_argument("--length", default="30s", help="length of the stretch (default 30s)")
    p.add_argument("--gap", default="1s", help="length of each cut gap (default 1s)")
    p.add_argument("--gaps", type=int, default=3, help="number of gaps to cut (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fs", type=float, help="sampling rate of bare .npy files")


def run(args: argparse.Namespace) -> int:
    from himae_stream import probes, recordings
    from himae_stream.cli import CliError

    try:
        import matplotlib
    except ImportError:
        raise CliError("himae plot needs matplotlib: pip install 'himae-stream[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from himae_stream.impute import impute
    from himae_stream.pipeline import load
    from himae_stream.stream import to_samples

    model = load(args.model)
    fs = float(model.config["fs"])
    rec = recordings.load(args.recording, fs=args.fs)
    rec = recordings.pick_for_model(rec, args.channels, model.config).resampled(fs)
    start = 0 if args.start.strip() in ("0", "0s") else to_samples(args.start, fs, "start")
    length, gap = to_samples(args.length, fs, "length"), to_samples(args.gap, fs, "gap")
    x = rec.signals[:, start:start + length]
    if x.shape[1] < length:
        raise CliError(f"{args.recording}: the stretch ends after the recording ({rec.duration_s:.1f} s)")
    rng = np.random.default_rng(args.seed)
    mask = np.zeros(length, bool)
    for s in rng.choice(np.arange(gap, length - 2 * gap, 3 * gap), size=min(args.gaps, max(length // (3 * gap) - 1, 0)),
                        replace=False):
        mask[s:s + gap] = True
    filled, imputed = impute(x, mask, model)
    stream = model.stream(hop="1s")
    windows = stream.push(np.where(mask, np.nan, x)).windows + stream.flush().windows

    t = (start + np.arange(length)) / fs
    heads = model.metadata.get("probes") or []
    fig, axes = plt.subplots(1 + bool(heads), 1, figsize=(12, 4 + 2 * bool(heads)), sharex=True, squeeze=False)
    ax = axes[0, 0]
    ax.plot(t, x[0], color="0.6", lw=0.8, label="recording")
    shown = np.where(imputed[0] if imputed.ndim == 2 else imputed, filled[0], np.nan)
    ax.plot(t, shown, color="tab:red", lw=1.2, label="HiMAE fill")
    for s, e in _runs(mask):
        ax.axvspan(t[s], t[e - 1], color="tab:red", alpha=0.08)
    ax.set_title(f"{rec.name} · {rec.channel_names[0]} · gaps of {gap / fs:g} s filled by {model.config.get('name', 'model')}")
    ax.legend(loc="upper right")
    if heads:
        pax = axes[1, 0]
        centres = np.array([start / fs + (w.start + w.end) / 2 / fs for w in windows])
        for head in heads:
            values = [probes.predict(head, w.embeddings[head["level"]])[0] for w in windows]
            if head["kind"] == "ridge":
                pax.plot(centres, values, marker="o", ms=3, label=head["name"])
            else:
                for c, v in zip(centres, values):
                    pax.annotate(str(v), (c, 0), fontsize=7, rotation=90)
        pax.set_xlabel("time (s)")
        pax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(args.output, dpi=110)
    print(f"himae plot: {int(mask.sum())} samples in {len(_runs(mask))} gaps filled → {args.output}")
    return 0


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2], edges[1::2]))
