"""Masked reconstruction of model files on a run's held-out validation subjects, per data set.

    python -m training.pretrain_eval runs/pretrain/himae-100/best.pt \\
        himae_stream/models/himae-100.himae runs/pretrain/himae-100.himae --json out.json

The validation windows are rebuilt exactly as the run built them (its
options are in the checkpoint). Each window hides 80 % of its 5-sample
patches (the pretraining task, fixed seed); the score is the MSE over the
hidden samples of the model's fill and of linear interpolation between the
visible samples, per data set and over all windows.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from training.data import load_datasets
from training.frozen import load_model_file
from training.quality import linear_fill, patch_mask, reconstruct


def validation_windows(checkpoint):
    """The run's validation windows (normalised whole recordings, held-out subjects), per data set."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    o = ckpt["options"]
    _, val = load_datasets(o["data"], ckpt["config"], o["channels"], o["stride"], o["val_fraction"], o["seed"],
                           exclude_recordings=tuple(o.get("exclude_recordings", ())),
                           exclude_datasets=tuple(o.get("exclude_datasets", ())), val_stride=o.get("val_stride"))
    return ckpt["config"], val


def scores(model, x: np.ndarray, seed: int = 0, batch: int = 256) -> dict:
    """Masked-sample MSE of the model's fill and of linear interpolation over windows `(N, L)`."""
    cfg = model.config
    rng = np.random.default_rng(seed)
    masks = np.array([patch_mask(x.shape[1], cfg["patch_size"], cfg["mask_ratio"], rng) for _ in x])
    sq_model = sq_linear = 0.0
    for i in range(0, len(x), batch):
        xb, mb = x[i : i + batch].astype(np.float64), masks[i : i + batch]
        recon = reconstruct(model, xb, mb)
        linear = np.array([linear_fill(w, m) for w, m in zip(xb, mb)])
        sq_model += float(((recon - xb) ** 2)[mb].sum())
        sq_linear += float(((linear - xb) ** 2)[mb].sum())
    n = int(masks.sum())
    return {"windows": int(len(x)), "himae": sq_model / n, "linear": sq_linear / n}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", help="the run's checkpoint (its options rebuild the validation split)")
    p.add_argument("models", nargs="+", help="model files of the run's configuration")
    p.add_argument("--json", type=Path, default=None, help="write the scores here")
    args = p.parse_args(argv)
    config, val = validation_windows(args.checkpoint)
    names = np.array(val.datasets)
    result = {"checkpoint": args.checkpoint, "val_subjects": sorted(set(val.subjects)), "models": {}}
    for path in args.models:
        model = load_model_file(path)
        if model.config["window"] != config["window"] or model.config["fs"] != config["fs"]:
            raise SystemExit(f"{path}: a {model.config['fs']:g} Hz / {model.config['window']} model, "
                             f"the run is {config['fs']:g} Hz / {config['window']}")
        per = {d: scores(model, val.x[names == d, 0]) for d in sorted(set(val.datasets))}
        per["all"] = scores(model, val.x[:, 0])
        result["models"][path] = per
        print(f"\n{path}\n| data set | windows | HiMAE | linear | HiMAE / linear |\n|---|---:|---:|---:|---:|")
        for d, s in per.items():
            print(f"| {d} | {s['windows']} | {s['himae']:.4f} | {s['linear']:.4f} | {s['himae'] / s['linear']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
