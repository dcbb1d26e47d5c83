"""Rendering the resolution report: a markdown table, a heatmap PNG and the raw JSON.

`report` is `{"command", "date", "models": {name: {"tasks": {task: result},
"reconstruction": {...}}}}` with task results from `training.resolution.evaluate`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

TASK_TITLES = {"heart_rate": "heart rate", "activity": "activity intensity", "quality": "signal quality"}
METRIC_TITLES = {"mae": "MAE", "r2": "R²", "balanced_accuracy": "balanced accuracy"}


def _fmt(value) -> str:
    return "—" if value is None else f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"


def _title(task: str, r: dict) -> str:
    unit = f" ({r['unit']})" if r.get("unit") and r["metric"] == "mae" else ""
    better = "higher" if r["higher_is_better"] else "lower"
    return f"{TASK_TITLES.get(task, task)}: {METRIC_TITLES[r['metric']]}{unit}, {better} is better"


def verdict(task: str, r: dict) -> str:
    """One plain sentence: does pretraining beat random initialisation on this task?"""
    p = r["pretrained"][r["levels"].index(r["pretrained_best_level"])]
    q = r["random"][r["levels"].index(r["random_best_level"])]
    wins = p > q if r["higher_is_better"] else p < q
    name = TASK_TITLES.get(task, task)
    text = (f"**{name}**: pretrained best level {r['pretrained_best_level']} scores {_fmt(p)}, random-init best "
            f"level {r['random_best_level']} scores {_fmt(q)} (cross-validated) — pretraining "
            f"{'helps' if wins else 'does NOT help'}.")
    if r.get("pretrained_test") is not None and r.get("random_test") is not None:
        tp, tq = r["pretrained_test"], r["random_test"]
        test_wins = tp > tq if r["higher_is_better"] else tp < tq
        text += (f" On the held-out TROIKA test recordings: {_fmt(tp)} against {_fmt(tq)} "
                 f"({'better' if test_wins else 'NOT better'}).")
    baselines = [("raw-window linear model", r.get("raw")), ("spectral peak", r.get("spectral"))]
    for label, value in baselines:
        if value is not None:
            beats = p > value if r["higher_is_better"] else p < value
            text += f" Against the {label} ({_fmt(value)}): {'better' if beats else 'NOT better'}."
    return text


def markdown(report: dict) -> str:
    lines = ["# Resolution report", "",
             "Which encoder level answers which question. Every number is a leave-one-subject-out",
             "cross-validated score of a linear probe on stream-mode window embeddings (8-s windows",
             "every 2 s), unless marked *test*: heads fitted on all training windows, scored on the",
             "TROIKA test recordings, which no model or probe ever trained on. **Bold** marks the best",
             "level of each row.", "",
             f"Regenerate: `{report['command']}` ({report['date']}).", ""]
    for name, m in report["models"].items():
        lines += [f"## {name}", ""]
        for task, r in m["tasks"].items():
            levels = r["levels"]
            lines += [f"### {_title(task, r)}", "",
                      f"{r['windows']} windows from {r['subjects']} subjects; {r['test_windows']} test windows.", "",
                      "| encoder | " + " | ".join(f"level {l}" for l in levels) + " | best | test |",
                      "|---|" + "---:|" * (len(levels) + 2)]
            for enc, label in (("pretrained", "pretrained"), ("random", "random init")):
                best = levels.index(r[f"{enc}_best_level"])
                cells = [f"**{_fmt(v)}**" if i == best else _fmt(v) for i, v in enumerate(r[enc])]
                tail = f" | level {levels[best]} | {_fmt(r[f'{enc}_test'])} |"
                lines.append(f"| {label} | " + " | ".join(cells) + tail)
            blank = " | ".join("" for _ in levels)
            lines.append(f"| raw window (25 Hz), linear | {blank} | {_fmt(r['raw'])} | {_fmt(r['raw_test'])} |")
            if r.get("spectral") is not None:
                lines.append(f"| spectral peak | {blank} | {_fmt(r['spectral'])} | {_fmt(r['spectral_test'])} |")
            lines += ["", verdict(task, r), ""]
        rec = m.get("reconstruction")
        if rec:
            lines += ["### Masked reconstruction (80 % of 5-sample patches hidden)", "",
                      f"MSE on the hidden samples of {rec['windows']} non-overlapping {name} windows of held-out "
                      f"recordings ({', '.join(rec['recordings'])}).", "",
                      "| fill | MSE |", "|---|---:|",
                      f"| HiMAE | {rec['himae']:.4f} |", f"| linear interpolation | {rec['linear']:.4f} |",
                      f"| zero fill | {rec['zero']:.4f} |", "",
                      f"HiMAE {'beats' if rec['himae'] < rec['linear'] else 'does NOT beat'} linear interpolation.", ""]
    return "\n".join(lines)


def heatmap(report: dict, path: Path) -> None:
    """Tasks × levels, colour = score scaled per task (1 = best of the row pair), best level starred."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = report["models"]
    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 0.9 + 0.75 * max(
        2 * len(m["tasks"]) for m in models.values())), squeeze=False)
    for ax, (name, m) in zip(axes[0], models.items()):
        rows, labels, stars = [], [], []
        columns = sorted({l for r in m["tasks"].values() for l in r["levels"]})
        n_levels = len(columns)
        for task, r in m["tasks"].items():
            both = np.array(r["pretrained"] + r["random"], dtype=float)
            signed = both if r["higher_is_better"] else -both
            lo, hi = signed.min(), signed.max()
            scaled = (signed - lo) / (hi - lo) if hi > lo else np.ones_like(signed)
            for k, enc in enumerate(("pretrained", "random")):
                row = np.full(n_levels, np.nan)
                values = np.full(n_levels, np.nan)
                part = scaled[k * len(r["levels"]) : (k + 1) * len(r["levels"])]
                for i, level in enumerate(r["levels"]):
                    row[columns.index(level)], values[columns.index(level)] = part[i], r[enc][i]
                rows.append((row, values))
                labels.append(f"{TASK_TITLES.get(task, task)} — {'pretrained' if enc == 'pretrained' else 'random'}")
                stars.append(columns.index(r[f"{enc}_best_level"]))
        grid = np.array([r for r, _ in rows])
        ax.imshow(grid, cmap="viridis", vmin=0, vmax=1, aspect="auto")
        for i, (_, values) in enumerate(rows):
            for j, v in enumerate(values):
                if np.isfinite(v):
                    mark = "★ " if j == stars[i] else ""
                    ax.text(j, i, f"{mark}{_fmt(v)}", ha="center", va="center", fontsize=8,
                            color="black" if grid[i, j] > 0.6 else "white")
        ax.set_xticks(range(n_levels), [f"level {l}" for l in columns])
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_title(f"{name}: probe score per level (★ best)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(report: dict, md_path: Path) -> list[Path]:
    """Write the markdown, the heatmap beside it (.png) and the numbers (.json)."""
    md_path = Path(md_path)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    png, js = md_path.with_suffix(".png"), md_path.with_suffix(".json")
    heatmap(report, png)
    text = markdown(report) + f"\n![per-level probe scores]({png.name})\n"
    md_path.write_text(text)
    js.write_text(json.dumps(report, indent=1) + "\n")
    return [md_path, png, js]
