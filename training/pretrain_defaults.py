"""Reproduce the models shipped in himae_stream/models/, their probe heads and the report.

    python -m training.pretrain_defaults --data ../shared/data

For each recipe: masked pretraining (`training.train`, resumable), export,
heads fitted and scored leave-one-dataset-out on the exported file
(`himae probe --data`'s code path, `training.heads`), model card in the
metadata, then docs/resolution-report.{md,png,json}. Refitting the heads of
given model files alone is `PROBE_COMMAND`. Runs on CPU; see
docs/models.md for the measured wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from himae_stream import zoo

REPO = Path(__file__).resolve().parents[1]
DATA_PARTS = ("troika/Training_data", "troika/Extra_TrainingData", "physionet/a103l.hea", "physionet/v102s.hea")
CHANNELS = "PPG*,PLETH"  # both TROIKA wrist PPG channels, PhysioNet finger PPG
SEED = 0
# Sized for a shared 2-core CPU (see docs/models.md): a few thousand windows seen, not a converged run.
RECIPES = {
    "himae-25": {"epochs": 40, "stride": 62, "lr": 2e-3, "batch_size": 32, "patience": 4},
    "himae-100": {"epochs": 8, "stride": 250, "lr": 2e-3, "batch_size": 32, "patience": 4},
}
REPORT = REPO / "docs" / "resolution-report.md"
PROBE_COMMAND = ("himae probe himae-100 himae-25 --data ../shared/data --cache runs/cache "
                 "--save-dir himae_stream/models --report docs/resolution-report.md")


def pretrain(name: str, data_dir: Path, out: Path) -> tuple[Path, float]:
    """Train (or finish training) one recipe; the best checkpoint and the wall time of this call."""
    from training.configs import get_config
    from training.train import TrainOptions, train

    r = RECIPES[name]
    opts = TrainOptions(
        config=get_config(name), data=[str(data_dir / p) for p in DATA_PARTS], out=str(out / name),
        channels=CHANNELS, stride=r["stride"], epochs=r["epochs"], batch_size=r["batch_size"], lr=r["lr"],
        patience=r["patience"], seed=SEED, device="cpu", resume=True, progress=True,
        command=f"python -m training.pretrain_defaults --data {data_dir} --models {name}",
    )
    start = time.perf_counter()
    summary = train(opts)
    return Path(summary["checkpoint"]), time.perf_counter() - start


def card(name: str, prov: dict, rec: dict | None, wall_s: float | None, threads: int) -> dict:
    """The pretraining part of the card stored in the model file (`himae info` prints `summary`);
    `training.heads.card` adds the heads' numbers."""
    import torch

    metrics = {}
    if rec:
        metrics["masked_reconstruction_mse"] = {k: rec[k] for k in ("himae", "linear", "zero")}
    parts = [f"{name} pretrained on TROIKA training+extra (PPG1, PPG2) and PhysioNet a103l/v102s PLETH",
             f"{prov.get('steps')} steps, seed {prov.get('seed')}, {prov.get('date', '')[:10]}"]
    if rec:
        parts.append(f"masked MSE {rec['himae']:.3f} vs linear {rec['linear']:.3f}")
    return {"summary": "; ".join(parts), "date": prov.get("date"), "data": prov.get("data"),
            "val_subjects": prov.get("val_subjects"), "metrics": metrics,
            "train_wall_s": None if wall_s is None else round(wall_s, 1),
            "hardware": f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}, "
                        f"{threads} thread(s)",
            "augmentations": [], "docs": "docs/models.md"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="the shared data folder (troika/, physionet/)")
    p.add_argument("--models", default="himae-25,himae-100", help="recipes to run, comma-separated")
    p.add_argument("--out", type=Path, default=Path("runs/defaults"), help="checkpoint folder")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from training import heads
    from training import report as rendering
    from training import resolution
    from training.export import export_model, load_checkpoint
    from training.frozen import load_model_file
    from training.probes import save_with_heads

    sources = resolution.troika_sources(args.data)
    for name in [m for m in args.models.split(",") if m]:
        ckpt, wall_s = pretrain(name, args.data, args.out)
        timing = args.out / f"{name}.wall.json"
        if not timing.exists():  # the call that trains records its time; repeated calls keep it
            timing.write_text(json.dumps({"train_wall_s": wall_s}))
        wall = json.loads(timing.read_text())["train_wall_s"]
        plain = args.out / f"{name}.plain.himae"
        export_model(load_checkpoint(ckpt), plain)
        model = load_model_file(plain)
        prov = model.meta.get("provenance", {})
        rec = resolution.reconstruction(model, sources, set(prov.get("val_subjects") or []))
        base = card(name, prov, rec, wall, torch.get_num_threads())
        # the heads: fitted and scored leave-one-dataset-out (what `himae probe --data` does)
        result = heads.evaluate(heads.features(model, plain, args.data, args.out / "cache"), model.config)
        shipped = zoo.MODELS_DIR / f"{name}.himae"
        save_with_heads(plain, shipped, heads.shipped_heads(result), heads.card(base, result, name))
        entry = {"file": f"{name}.himae", "result": result,
                 "why": {t: heads.why(t, result[t]) for t in ("heart_rate", "quality", "activity")}}
        (args.out / f"{name}.entry.json").write_text(json.dumps(entry, default=rendering._plain))
        print(f"shipped {shipped}")
    # The report covers every recipe finished in this checkpoint folder, so recipes can run apart.
    entries = {n: json.loads((args.out / f"{n}.entry.json").read_text())
               for n in ("himae-100", "himae-25") if (args.out / f"{n}.entry.json").exists()}
    report = {"command": PROBE_COMMAND, "date": time.strftime("%Y-%m-%d", time.gmtime()), "models": entries}
    for path in rendering.write_lodo(report, REPORT):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
