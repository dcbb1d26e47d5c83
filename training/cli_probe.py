"""`himae probe`: fit the heads a model's records show, score them, report, save them.

Two label sources: the shared corpus (`--data DIR`: the heads `heart_rate`,
`quality` and `activity`, fitted and scored leave-one-dataset-out beside
classical baselines, `training.heads`), or your own recordings with a CSV of
windows (`--recordings ... --labels CSV`: per-level linear probes, subject-held-out).
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path

from himae_stream.cli import CliError

TROIKA_TASKS = ("heart_rate", "activity", "quality")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="*", default=["himae-100"], metavar="MODEL",
                   help="model files or shipped model names (default himae-100)")
    p.add_argument("--data", metavar="DIR", help="shared data folder with troika/ (and physionet/)")
    p.add_argument("--recordings", nargs="+", metavar="FILE", help="your recordings, labelled by --labels")
    p.add_argument("--labels", metavar="CSV", help="CSV with columns recording, start, end, label (seconds)")
    p.add_argument("--task", default=None, help="name of the CSV task (default: the CSV's file name)")
    p.add_argument("--tasks", default=",".join(TROIKA_TASKS), help="TROIKA tasks, comma-separated")
    p.add_argument("--channels", default=None,
                   help="channel to embed: first match of these names/globs (default: the model's PPG rule)")
    p.add_argument("--levels", default=None, help="levels to probe, comma-separated (default all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random-init encoder and quality masks")
    p.add_argument("--report", metavar="FILE.md", help="write the report (markdown, .png heatmap, .json)")
    p.add_argument("--save", metavar="OUT.himae", help="write a copy of the model carrying the fitted heads")
    p.add_argument("--save-dir", metavar="DIR",
                   help="write each model, with its fitted heads and card, to DIR/<file name> (may be the "
                        "models' own folder)")
    p.add_argument("--datasets", default=None,
                   help="with --data: the data sets to use, comma-separated (default all)")
    p.add_argument("--cache", metavar="DIR", help="with --data: keep each model's window features here (a rerun on the "
                                                  "same file skips reading and encoding the corpus)")


def _int_list(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CliError(f"--levels takes comma-separated integers, got {text!r}") from None


def command_line(args: argparse.Namespace) -> str:
    """The command that regenerates this run, for the report."""
    parts = ["himae probe", *args.models]
    for flag in ("data", "datasets", "cache", "labels", "task", "levels", "save", "save_dir", "report"):
        if getattr(args, flag):
            parts.append(f"--{flag.replace('_', '-')} {getattr(args, flag)}")
    if args.recordings:
        parts.append("--recordings " + " ".join(args.recordings))
    if not args.labels and args.tasks != ",".join(TROIKA_TASKS):
        parts.append(f"--tasks {args.tasks}")
    if args.channels:
        parts.append(f"--channels {args.channels}")
    if args.seed:
        parts.append(f"--seed {args.seed}")
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    from training.cli_train import require_torch

    require_torch()
    from himae_stream import zoo
    from training import report as rendering
    from training import resolution
    from training.frozen import load_model_file
    from training.probes import save_with_heads

    channels = tuple(c for c in args.channels.split(",") if c) if args.channels else None
    if args.save and len(args.models) != 1:
        raise CliError("--save takes exactly one model (--save-dir takes several)")
    # options first, so a typo fails before minutes of reading and encoding
    levels = _int_list(args.levels)
    models = []
    for item in args.models:
        path = zoo.resolve(item)
        model = load_model_file(path)
        n_levels = len(model.config["channels"])
        if levels and not all(0 <= l < n_levels for l in levels):
            raise CliError(f"{path.name} has levels 0 … {n_levels - 1}, asked for {levels}")
        models.append((path, model))
    if args.labels or args.recordings:
        if not (args.labels and args.recordings):
            raise CliError("--recordings and --labels go together")
        name = args.task or Path(args.labels).stem
        sources = resolution.csv_sources([Path(r) for r in args.recordings], Path(args.labels), name, channels)
        tasks = [resolution.csv_task([s.labels[name] for s in sources], name)]
    elif args.data:
        names = [t for t in args.tasks.split(",") if t]
        unknown = set(names) - set(resolution.TASKS)
        if unknown:
            raise CliError(f"unknown task(s) {', '.join(sorted(unknown))} (known: {', '.join(resolution.TASKS)})")
        if not Path(args.data).is_dir():
            raise CliError(f"data folder not found: {args.data}")
        return _corpus(args, models)
    else:
        raise CliError("give --data DIR (the shared corpus) or --recordings FILE... with --labels CSV")

    report = {"command": command_line(args), "date": datetime.now(timezone.utc).date().isoformat(), "models": {}}
    for path, model in models:
        entry, fitted = resolution.model_report(model, sources, tasks, levels, args.seed)
        entry["file"] = path.name
        report["models"][model.config["name"]] = entry
        print(rendering.markdown({**report, "models": {model.config["name"]: entry}}).split("\n## ", 1)[1])
        if args.save:
            save_with_heads(path, args.save, fitted)
            print(f"saved {len(fitted)} probe head(s) to {args.save}")
    if args.report:
        written = rendering.write(report, Path(args.report))
        print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _corpus(args: argparse.Namespace, models: list) -> int:
    """The heads of records: fitted and scored leave-one-dataset-out on the corpus; report, card, files."""
    import time

    from himae_stream import modelfile
    from training import corpus
    from training import heads as fitting
    from training import report as rendering
    from training.probes import save_with_heads

    started = time.perf_counter()
    chosen = corpus.DATASETS if not args.datasets else tuple(d for d in args.datasets.split(",") if d)
    unknown = set(chosen) - set(corpus.DATASETS)
    if unknown:
        raise CliError(f"unknown data set(s) {', '.join(sorted(unknown))} (known: {', '.join(corpus.DATASETS)})")
    items = None
    report = {"command": command_line(args), "date": datetime.now(timezone.utc).date().isoformat(), "models": {}}
    for path, model in models:
        cache = Path(args.cache) if args.cache else None
        key = fitting.cache_path(path, cache, args.seed, chosen) if cache else None
        if items is None and not (key and key.exists()):
            items = corpus.corpus(Path(args.data), chosen)
        f = fitting.features(model, path, Path(args.data), cache, args.seed, items, chosen)
        result = fitting.evaluate(f, model.config)
        name = model.config["name"]
        why = {t: fitting.why(t, result[t]) for t in ("heart_rate", "quality", "activity")}
        report["models"][name] = {"file": path.name, "result": result, "why": why}
        print(f"{name}:\n  " + "\n  ".join(why.values()))
        fitted = fitting.shipped_heads(result)
        dst = Path(args.save) if args.save else Path(args.save_dir) / path.name if args.save_dir else None
        if dst is not None:
            old = modelfile.read(path).meta.get("card")
            save_with_heads(path, dst, fitted, fitting.card(old, result, name))
            print(f"saved {len(fitted)} head(s) and the card to {dst}")
    report["wall"] = f"{time.perf_counter() - started:.0f} s on this run's machine"
    if args.report:
        written = rendering.write_lodo(report, Path(args.report))
        print("wrote " + ", ".join(str(p) for p in written))
    return 0
