"""Reproduce the models shipped in himae_stream/models/, their probe heads and the report.

    python -m training.pretrain_defaults --data ../shared/data

For each recipe: masked pretraining (`training.train`, resumable) on the PPG
of every data set in the folder with device-like augmentations, export,
heads fitted and scored leave-one-dataset-out on the exported file
(`himae probe --data`'s code path, `training.heads`), model card in the
metadata, then docs/resolution-report.{md,png,json}. `--pretrain-only`
stops after the export (to the checkpoint folder, nothing shipped);
refitting the heads of given model files alone is `PROBE_COMMAND`. Runs on
CPU; see docs/models.md for the measured wall time.
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
# every PPG channel of every data set under --data: TROIKA PPG1/PPG2, PhysioNet PLETH, the wearables' BVP/PPG
CHANNELS = "PPG*,PLETH*,BVP*,PULSE*"
#: the record bundled for the demo (himae_stream/data/a103l) stays out, so the demo runs on unseen data
EXCLUDE_RECORDINGS = ("a103l",)
SEED = 0
# Sized for about 70 minutes each, two runs side by side at nice 10 on a busy shared 2-core CPU
# (about 100 himae-100 or 400 himae-25 windows per CPU-second; see docs/models.md); windows 2.5 s apart,
# validation windows 10 s (himae-25) or 20 s (himae-100) apart on held-out subjects, data sets balanced as n**0.5.
RECIPES = {
    "himae-25": {"max_steps": 2200, "stride": 62, "val_stride": 250, "lr": 2e-3, "batch_size": 128,
                 "eval_every": 150, "patience": 6},
    "himae-100": {"max_steps": 1200, "stride": 250, "val_stride": 2000, "lr": 2e-3, "batch_size": 64,
                  "eval_every": 100, "patience": 6,
                  # then the decoder alone, from the pretrained file, encoder frozen: a better gap fill with
                  # the same embeddings (longer training of the whole model cost the heads: docs/models.md)
                  "decoder": {"max_steps": 4000, "lr": 1e-3, "eval_every": 250}},
}
BALANCE = 0.5
AUGMENT = "device"
AUGMENTATIONS = ["polarity inversion", "gain and offset", "baseline wander", "device rate 20-256 Hz",
                 "sensor noise", "clipping", "contact loss (flat)", "motion bursts"]
REPORT = REPO / "docs" / "resolution-report.md"
PROBE_COMMAND = ("himae probe himae-100 himae-25 --data ../shared/data --cache runs/cache "
                 "--save-dir himae_stream/models --report docs/resolution-report.md")


def pretrain(name: str, data_dir: Path, out: Path, exported: Path, device: str = "cpu",
             exclude_datasets: tuple = ()) -> float:
    """Train (or finish training) one recipe and export its best checkpoint to `exported`; then,
    where the recipe has a decoder stage, train the decoder of that file alone and export again.
    Returns the training wall time (summed over both stages and every resumed session)."""
    from training.configs import get_config
    from training.export import export_model, load_checkpoint
    from training.train import TrainOptions, train

    r = RECIPES[name]
    excl = "".join(f" --exclude-dataset {d}" for d in exclude_datasets)
    common = dict(
        config=get_config(name), data=[str(data_dir)], channels=CHANNELS, stride=r["stride"],
        val_stride=r["val_stride"], epochs=1000, batch_size=r["batch_size"], patience=r["patience"], seed=SEED,
        device=device, resume=True, progress=True, augment=AUGMENT, balance=BALANCE,
        exclude_recordings=EXCLUDE_RECORDINGS, exclude_datasets=tuple(exclude_datasets),
        command=f"python -m training.pretrain_defaults --data {data_dir} --models {name}{excl}",
    )
    summary = train(TrainOptions(out=str(out / name), max_steps=r["max_steps"], lr=r["lr"],
                                 eval_every=r["eval_every"], **common))
    wall = summary["train_wall_s"]
    export_model(load_checkpoint(summary["checkpoint"]), exported)
    stage = r.get("decoder")
    if stage:
        summary = train(TrainOptions(out=str(out / f"{name}-decoder"), init=str(exported), trainable="decoder",
                                     **stage, **common))
        wall += summary["train_wall_s"]
        export_model(load_checkpoint(summary["checkpoint"]), exported)
    return wall


def card(name: str, prov: dict, rec: dict | None, wall_s: float | None, threads: int) -> dict:
    """The pretraining part of the card stored in the model file (`himae info` prints `summary`);
    `training.heads.card` adds the heads' numbers."""
    import torch

    metrics = {}
    if rec:
        metrics["masked_reconstruction_mse"] = {k: rec[k] for k in ("himae", "linear", "zero") if k in rec}
    datasets = ", ".join(prov.get("windows_by_dataset", {}).get("train", {}))
    parts = [f"{name} pretrained on the PPG of {datasets or 'the shared data sets'} (PhysioNet a103l held out), "
             f"with device augmentations",
             f"{prov.get('steps')} steps, seed {prov.get('seed')}, {prov.get('date', '')[:10]}"]
    init = prov.get("init")
    if init:  # the provenance is the fine-tune's; the pretraining's steps are its init's
        what = "decoder fine-tuned" if init.get("trainable") == "decoder" else "fine-tuned"
        frozen = " with the encoder frozen" if init.get("trainable") == "decoder" else ""
        parts[1:] = [f"{init.get('steps')} steps, seed {prov.get('seed')}, {(init.get('date') or '')[:10]}",
                     f"{what} {prov.get('steps')} more steps{frozen}, {prov.get('date', '')[:10]}"]
    if rec:
        parts.append(f"masked MSE {rec['himae']:.3f} vs linear {rec['linear']:.3f}")
    return {"summary": "; ".join(parts), "date": prov.get("date"), "data": prov.get("data"),
            "val_subjects": prov.get("val_subjects"), "metrics": metrics,
            "train_wall_s": None if wall_s is None else round(wall_s, 1),
            "hardware": f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}, "
                        f"{threads} thread(s)",
            "augmentations": AUGMENTATIONS if prov.get("augment", "none") != "none" else [],
            "docs": "docs/models.md"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="the shared data folder (troika/, physionet/)")
    p.add_argument("--models", default="himae-25,himae-100", help="recipes to run, comma-separated")
    p.add_argument("--out", type=Path, default=Path("runs/defaults"), help="checkpoint folder")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="cpu (tested), or cuda on a GPU machine (untested here)")
    p.add_argument("--exclude-dataset", action="append", default=[], metavar="NAME",
                   help="leave a data set out (leave-one-dataset-out evaluation); repeatable")
    p.add_argument("--pretrain-only", action="store_true",
                   help="train and export to the checkpoint folder (NAME.himae); no probes, nothing shipped")
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    names = [m for m in args.models.split(",") if m]
    if args.pretrain_only:
        for name in names:
            wall = pretrain(name, args.data, args.out, args.out / f"{name}.himae", args.device,
                            tuple(args.exclude_dataset))
            (args.out / f"{name}.wall.json").write_text(json.dumps({"train_wall_s": wall}))
            print(f"exported {args.out / f'{name}.himae'} ({wall / 60:.1f} min of training)")
        return 0

    from training import heads
    from training import report as rendering
    from training import resolution
    from training.frozen import load_model_file
    from training.probes import save_with_heads

    sources = resolution.troika_sources(args.data)
    for name in names:
        plain = args.out / f"{name}.plain.himae"
        wall = pretrain(name, args.data, args.out, plain, args.device, tuple(args.exclude_dataset))
        (args.out / f"{name}.wall.json").write_text(json.dumps({"train_wall_s": wall}))
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
