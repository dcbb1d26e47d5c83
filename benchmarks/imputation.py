"""Gap-filling quality on held-out recordings: HiMAE against simple fills.

For every held-out signal (default: the TROIKA test recordings, whose eight
subjects no shipped model trains on), gaps of 0.1, 0.5, 1 and 2 s are cut at
seeded random positions (at least one window apart, past the first 20 s) and,
separately, whole windows get the pretraining mask (80 % of 5-sample
patches). Each method fills the same masked signal:

- HiMAE: `himae_stream.impute` with the given model file (any model works);
- linear interpolation between the samples around each gap;
- zero fill: the gap set to the local mean (the zero of the band-passed,
  normalised signal the model sees), i.e. the mean of 2 s around the gap;
- previous-beat template: the cycle before the gap (period by
  autocorrelation, 40-180 bpm) copied forward, repeated as needed.

Scores, per gap (per window for the patch mask), in the signal's own units:
NMSE = mean squared error in the gap / variance of the true signal in the
window around it (0 is perfect, 1 is as bad as the local mean), and Pearson
correlation in the gap. Writes a markdown table (`imputation.md`) and a PNG
of real gaps with each method's fill (`imputation.png`) into --out.

    python -m benchmarks.imputation --model path/to/model.himae --out docs
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GAPS_S = (0.1, 0.5, 1.0, 2.0)
WARMUP_S = 20.0  # the stream normaliser's running scale settles first
METHODS = ("HiMAE", "linear", "zero fill", "previous beat")


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(np.int8), 0]))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def fill_linear(x: np.ndarray, mask: np.ndarray, fs: float) -> np.ndarray:
    idx = np.arange(len(x))
    out = x.copy()
    out[mask] = np.interp(idx[mask], idx[~mask], x[~mask])
    return out


def fill_zero(x: np.ndarray, mask: np.ndarray, fs: float) -> np.ndarray:
    out = x.copy()
    reach = int(2 * fs)
    for s, e in runs(mask):
        lo, hi = max(s - reach, 0), min(e + reach, len(x))
        around = x[lo:hi][~mask[lo:hi]]
        out[s:e] = around.mean() if len(around) else 0.0
    return out


def period(context: np.ndarray, fs: float) -> int:
    """Beat period in samples: the autocorrelation peak between 40 and 180 bpm."""
    c = context - context.mean()
    lo, hi = int(fs * 60 / 180), min(int(fs * 60 / 40), len(c) - 1)
    if hi <= lo:
        return max(lo, 1)
    ac = np.array([np.dot(c[:-k], c[k:]) / (len(c) - k) for k in range(lo, hi + 1)])
    return lo + int(np.argmax(ac))


def fill_template(x: np.ndarray, mask: np.ndarray, fs: float) -> np.ndarray:
    out = fill_linear(x, mask, fs)  # the fallback where no full cycle precedes a gap
    for s, e in runs(mask):
        context = out[max(s - int(5 * fs), 0) : s]
        if len(context) < 2 * int(fs * 60 / 40):
            continue
        T = period(context, fs)
        for a in range(s, e, T):  # each cycle copies the one before (already filled)
            b = min(a + T, e)
            out[a:b] = out[a - T : b - T]
    return out


def fill_himae(model):
    from himae_stream import ImputationWarning, impute

    def fill(x: np.ndarray, mask: np.ndarray, fs: float) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ImputationWarning)
            return impute(x, mask, model, fs=fs)[0]

    return fill


def gap_starts(n: int, length: int, count: int, window: int, fs: float, rng) -> list[int]:
    """Up to `count` seeded gap starts, at least one window apart, past the warm-up."""
    lo, hi = int(WARMUP_S * fs), n - length - window
    starts: list[int] = []
    for _ in range(50 * count):
        if len(starts) == count or hi <= lo:
            break
        s = int(rng.integers(lo, hi))
        if all(abs(s - t) >= window + length for t in starts):
            starts.append(s)
    return sorted(starts)


def patch_windows(n: int, count: int, window: int, patch: int, ratio: float, fs: float, rng):
    """Pretraining masks: `count` windows (a window apart), each with round(ratio·patches) patches lost."""
    mask = np.zeros(n, bool)
    spans = []
    for s in gap_starts(n, window, count, window, fs, rng):
        patches = window // patch
        lost = rng.permutation(patches)[: round(ratio * patches)]
        for p in lost:
            mask[s + p * patch : s + (p + 1) * patch] = True
        spans.append((s, s + window))
    return mask, spans


def scores(truth: np.ndarray, fill: np.ndarray, local: np.ndarray) -> tuple[float, float]:
    nmse = float(np.mean((fill - truth) ** 2) / max(np.var(local), 1e-12))
    if len(truth) < 3 or np.ptp(fill) == 0 or np.ptp(truth) == 0:
        return nmse, math.nan
    return nmse, float(np.corrcoef(fill, truth)[0, 1])


def held_out_signals(data: Path, pattern: str, channels: str, fs: float, provenance: dict):
    """Each matching channel as its own signal, leaving out what the model trained or validated on."""
    from himae_stream.recordings import load

    seen_subjects = set(provenance.get("train_subjects", [])) | set(provenance.get("val_subjects", []))
    seen_paths = [Path(p).resolve() for p in provenance.get("data", [])]
    for path in sorted(data.glob(pattern)):
        rec = load(path, channels=channels).resampled(fs)
        resolved = path.resolve()
        if rec.subject in seen_subjects or any(resolved == p or p in resolved.parents for p in seen_paths):
            print(f"skipping {rec.name}: the model file's provenance lists it in training", file=sys.stderr)
            continue
        for name, x in zip(rec.channel_names, rec.signals):
            yield f"{rec.name}:{name}", x


def evaluate(model, signals, per_signal: int, patch_windows_per_signal: int, seed: int):
    cfg = model.config
    fs, L = float(cfg["fs"]), int(cfg["window"])
    fills = {"HiMAE": fill_himae(model), "linear": fill_linear, "zero fill": fill_zero,
             "previous beat": fill_template}
    results: dict[str, dict[str, list]] = {}
    examples: dict[str, tuple] = {}
    for k, (name, x) in enumerate(signals):
        conditions = []
        for g_s in GAPS_S:
            g = max(1, round(g_s * fs))
            rng = np.random.default_rng([seed, k, g])
            mask = np.zeros(len(x), bool)
            spans = [(s, s + g) for s in gap_starts(len(x), g, per_signal, L, fs, rng)]
            for s, e in spans:
                mask[s:e] = True
            conditions.append((f"{g_s:g} s gap", mask, spans))
        rng = np.random.default_rng([seed, k, 0])
        mask, spans = patch_windows(len(x), patch_windows_per_signal, L, int(cfg["patch_size"]),
                                    float(cfg["mask_ratio"]), fs, rng)
        conditions.append((f"{round(100 * cfg['mask_ratio'])} % patch mask", mask, spans))
        for label, mask, spans in conditions:
            if not spans:
                continue
            filled = {m: f(x, mask, fs) for m, f in fills.items()}
            row = results.setdefault(label, {m: [] for m in METHODS})
            for s, e in spans:
                sel = np.flatnonzero(mask[s:e]) + s
                lo, hi = max((s + e) // 2 - L // 2, 0), min((s + e) // 2 + L // 2, len(x))
                for m in METHODS:
                    row[m].append(scores(x[sel], filled[m][sel], x[lo:hi]))
            if label not in examples:
                examples[label] = (name, x, mask, spans[len(spans) // 2], filled)
        print(f"  {name}: done", file=sys.stderr)
    return results, examples


def table(results, model_name: str, n_signals: int) -> str:
    lines = [
        f"Model `{model_name}`, {n_signals} held-out signals. NMSE: mean squared error in the gap over the "
        "local signal variance (lower is better; mean and median over gaps). r: Pearson correlation in the "
        "gap (mean over gaps; — where undefined: a constant fill, or gaps under 3 samples).",
        "",
        "| condition | gaps | " + " | ".join(f"{m} NMSE (median) | {m} r" for m in METHODS)
        + " | HiMAE vs linear |",
        "|---|---:|" + "---:|---:|" * len(METHODS) + "---|",
    ]
    for label, row in results.items():
        cells = []
        for m in METHODS:
            nmse = np.array([v[0] for v in row[m]])
            r = np.array([v[1] for v in row[m]])
            r_text = "—" if np.isnan(r).all() else f"{np.nanmean(r):.3f}"
            cells.append(f"{nmse.mean():.3f} ({np.median(nmse):.3f}) | {r_text}")
        h = np.array([v[0] for v in row["HiMAE"]])
        lin = np.array([v[0] for v in row["linear"]])
        change = 100.0 * (1.0 - h.mean() / lin.mean())
        verdict = (f"{change:.0f} % lower NMSE" if change > 0 else f"{-change:.0f} % higher NMSE (worse)")
        verdict += f"; better on {100.0 * np.mean(h < lin):.0f} % of gaps"
        lines.append(f"| {label} | {len(h)} | " + " | ".join(cells) + f" | {verdict} |")
    return "\n".join(lines) + "\n"


def plot(examples, fs: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {"HiMAE": ("tab:red", "-"), "linear": ("tab:blue", "--"), "zero fill": ("tab:gray", ":"),
              "previous beat": ("tab:green", "-.")}
    fig, axes = plt.subplots(len(examples), 1, figsize=(10, 2.6 * len(examples)), squeeze=False)
    for ax, (label, (name, x, mask, (s, e), filled)) in zip(axes[:, 0], examples.items()):
        margin = int(1.5 * fs) if e - s < 4 * fs else int(0.5 * fs)
        lo, hi = max(s - margin, 0), min(e + margin, len(x))
        t = np.arange(lo, hi) / fs
        ax.plot(t, x[lo:hi], color="black", lw=1.2, label="recorded")
        for m, (color, ls) in styles.items():
            y = np.where(mask[lo:hi], filled[m][lo:hi], np.nan)
            ax.plot(t, y, color=color, ls=ls, lw=1.2, label=m)
        for a, b in runs(mask[lo:hi]):
            ax.axvspan(t[a], t[b - 1], color="0.9", zorder=0)
        ax.set_title(f"{label} — {name}", fontsize=9)
        ax.set_xlabel("time (s)", fontsize=8)
    axes[0, 0].legend(fontsize=7, ncol=5, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model file (.himae) with a decoder")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="recordings folder")
    p.add_argument("--recordings", default="troika/TestData/TEST_*.mat", help="glob under --data")
    p.add_argument("--channels", default="PPG*", help="channels to evaluate, each as its own signal")
    p.add_argument("--gaps", type=int, default=20, help="gaps per length per signal")
    p.add_argument("--patch-windows", type=int, default=8, help="patch-masked windows per signal")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="build/imputation", help="folder for imputation.md and imputation.png")
    args = p.parse_args(argv)

    from himae_stream.model import load_model

    model = load_model(args.model)
    if not model.config["decoder"]:
        raise SystemExit(f"{args.model}: the model file has no decoder")
    fs = float(model.config["fs"])
    signals = list(held_out_signals(Path(args.data), args.recordings, args.channels, fs,
                                    model.metadata.get("provenance", {})))
    if not signals:
        raise SystemExit(f"no held-out recordings match {args.recordings} under {args.data}")
    t0 = time.perf_counter()
    results, examples = evaluate(model, signals, args.gaps, args.patch_windows, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = table(results, model.config["name"], len(signals))
    (out / "imputation.md").write_text(text)
    plot(examples, fs, out / "imputation.png")
    print(text)
    print(f"wrote {out / 'imputation.md'} and {out / 'imputation.png'} in {time.perf_counter() - t0:.0f} s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
