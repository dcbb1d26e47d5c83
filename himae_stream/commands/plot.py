"""`himae plot`: a PNG of a stretch of a recording with gaps, their imputation, and predictions.

Gaps are cut at seeded random places, filled by
the model, and drawn over the true signal, so the fill can be judged by eye.
Below it, each probe head has its own axis, labelled with its unit (heart
rate in bpm; a class head shows its class per window), so no two quantities
share a scale. `figure()` builds the plot without drawing it, for tests and
notebooks.
"""

from __future__ import annotations

import argparse
import textwrap

import numpy as np

from himae_stream.numbers import COUNT, SAMPLE_RATE
from himae_stream.recordings import RECORDING_KINDS
from himae_stream.view import UNITS

#: the stretch plotted when --length is not given (less when the recording is shorter)
DEFAULT_LENGTH_S = 30.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recording", help=f"recording file ({RECORDING_KINDS})")
    p.add_argument("-o", "--output", default="himae-plot.png", help="PNG to write (default himae-plot.png)")
    p.add_argument("--model", default="himae-100", help="model file or shipped model name (default himae-100)")
    p.add_argument("--channels", help="channel to read, by name or glob (default: the model's)")
    p.add_argument("--start", default="0s", help="start of the stretch (default 0s)")
    p.add_argument("--length", help="length of the stretch (default 30s, or to the end of a shorter recording)")
    p.add_argument("--gap", default="1s", help="length of each cut gap (default 1s)")
    p.add_argument("--gaps", type=COUNT, default=3, help="number of gaps to cut (default 3)")
    p.add_argument("--seed", type=COUNT, default=0)
    p.add_argument("--fs", type=SAMPLE_RATE, help="sampling rate of bare .npy files")


def run(args: argparse.Namespace) -> int:
    from himae_stream.cli import CliError

    try:
        import matplotlib  # noqa: F401  (only to say what is missing)
    except ImportError:
        raise CliError("himae plot needs matplotlib: pip install 'himae-stream[plot]'") from None
    fig, gaps, samples = figure(args.recording, model=args.model, channels=args.channels, start=args.start,
                                length=args.length, gap=args.gap, gaps=args.gaps, seed=args.seed, fs=args.fs)
    fig.savefig(args.output, dpi=110)
    print(f"himae plot: {samples} samples in {gaps} gaps filled → {args.output}")
    return 0


def figure(recording: str, model="himae-100", channels: str | None = None, start: str = "0s", length: str | None = None,
           gap: str = "1s", gaps: int = 3, seed: int = 0, fs: float | None = None):
    """The plot of `himae plot` as a matplotlib Figure, with the number of gaps and of samples filled."""
    from matplotlib.figure import Figure

    from himae_stream import recordings
    from himae_stream.cli import CliError
    from himae_stream.impute import impute
    from himae_stream.pipeline import default_window, load
    from himae_stream.stream import to_samples

    model = load(model)
    rate = float(model.config["fs"])
    rec = recordings.load(recording, fs=fs, rate_of=channels)
    rec = recordings.pick_for_model(rec, channels, model.config).resampled(rate)
    first = 0 if start.strip() in ("0", "0s") else to_samples(start, rate, "--start")
    left = rec.signals.shape[1] - first
    n = min(int(round(DEFAULT_LENGTH_S * rate)), left) if length is None else to_samples(length, rate, "--length")
    cut = to_samples(gap, rate, "--gap")
    if n <= 0:
        raise CliError(f"{recording}: --start is after the end of the recording ({rec.duration_s:.1f} s)")
    x = rec.signals[:, first:first + n]
    if x.shape[1] < n:
        raise CliError(f"{recording}: the stretch ends after the recording ({rec.duration_s:.1f} s)")
    rng = np.random.default_rng(seed)
    mask = np.zeros(n, bool)
    for s in rng.choice(np.arange(cut, n - 2 * cut, 3 * cut), size=min(gaps, max(n // (3 * cut) - 1, 0)),
                        replace=False):
        mask[s:s + cut] = True
    own = ~np.isfinite(x).all(axis=0)  # samples the recording itself lost (NaN): filled like the cut ones
    mask |= own
    filled, imputed = impute(x, mask, model)
    from himae_stream import probes
    from himae_stream.headplan import Heads

    stream = model.stream(window=default_window(model), hop="1s")  # the window the heads were fitted on
    held = probes.Positions(list(model.config["channels"]), n + 2 * stream.window)
    windows = []
    for out in (stream.push(np.where(mask, np.nan, x)), stream.flush()):
        held.add(out.levels)  # keeps every position of the recording: the windows are read at the end
        windows += out.windows
    heads = Heads(model.metadata.get("probes") or [], rate)
    predictions = heads.apply_at(held, [(w.start, w.end) for w in windows])
    heads = list(heads)
    fig = Figure(figsize=(12, 4 + 1.6 * len(heads)))
    axes = fig.subplots(1 + len(heads), 1, sharex=True, squeeze=False,
                        gridspec_kw={"height_ratios": [2.5] + [1] * len(heads)})[:, 0]
    t = (first + np.arange(n)) / rate
    ax = axes[0]
    ax.plot(t, x[0], color="0.6", lw=0.8, label="recording")
    shown = np.where(imputed[0] if imputed.ndim == 2 else imputed, filled[0], np.nan)
    ax.plot(t, shown, color="tab:red", lw=1.2, label="HiMAE fill")
    runs = _runs(mask)
    for s, e in runs:
        ax.axvspan(t[s], t[e - 1], color="tab:red", alpha=0.08)
    ax.set_ylabel(f"{rec.channel_names[0]} (recording units)")
    lost = f" and {int(own.sum())} samples the recording lost" if own.any() else ""
    ax.set_title(f"{rec.name} · {rec.channel_names[0]} · gaps of {cut / rate:g} s{lost} filled by "
                 f"{model.config.get('name', 'model')}")
    ax.legend(loc="upper right")
    centres = np.array([(first + (w.start + w.end) / 2) / rate for w in windows])
    for head, hax in zip(heads, axes[1:]):
        _plot_head(hax, head, centres, [p[head["name"]] for p in predictions])
    axes[-1].set_xlabel("time (s)")
    fig.tight_layout()
    return fig, len(runs), int(mask.sum())


def _plot_head(ax, head: dict, centres: np.ndarray, values: list) -> None:
    """One head's prediction per window centre on its own axis: a value with its unit, or a class."""
    name = head["name"].replace("_", " ")
    if head["kind"] != "logistic":
        withheld = sum(v is None for v in values)
        values = [np.nan if v is None else v for v in values]
        unit = UNITS.get(head.get("unit"), (head.get("unit"), 0))[0]
        ax.plot(centres, values, marker="o", ms=3, color="tab:blue")
        ax.set_ylabel(f"{name}\n({textwrap.fill(unit, 20)})" if unit else name)
        if withheld:  # as records withhold it (`withheld_below`): said, so an empty axis is not read as a fault
            rule = head.get("withheld_below")
            why = f" ({rule['head']} below {rule['probability']:g})" if rule else ""
            ax.text(0.01, 0.95, f"withheld in {withheld} of {len(values)} windows{why}", transform=ax.transAxes,
                    va="top", fontsize=8, color="0.4")
        if withheld == len(values):
            ax.set_yticks([])
    else:
        classes = list(head["classes"])
        ax.plot(centres, [classes.index(v) for v in values], "o", ms=4, color="tab:green")
        ax.set_yticks(range(len(classes)), classes)
        ax.set_ylim(-0.5, len(classes) - 0.5)
        ax.set_ylabel(name)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2], edges[1::2]))
