"""Masked pretraining of HiMAE: one process, or data-parallel under torchrun.

Each window hides exactly round(mask_ratio · patches) whole patches (zeroed
input); the loss is the MSE over the hidden samples only. AdamW with linear
warm-up then cosine decay, subject-held-out validation loss with early
stopping, checkpoints every few minutes and at every evaluation that resume
exactly, and a learning curve (curve.csv, curve.json, curve.png). Batch
order, device augmentations and masks are functions of (seed, step, place in
the global batch), not of the process layout, so N processes sharing a
global batch follow the same loss curve as one process.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from himae_stream import __version__, modelfile
from training import distributed
from training.augment import POLICIES
from training.data import DEFAULT_CHANNELS, LEAD_S, RawSet, Windows, load_datasets, training_window
from training.frozen import load_model_file
from training.model import HiMAE
from training.quality import patch_mask


@dataclass
class TrainOptions:
    config: dict
    data: list[str]
    out: str
    channels: str = DEFAULT_CHANNELS
    stride: int | None = None
    val_fraction: float = 0.2
    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.01
    eval_every: int | None = None
    patience: int = 5
    seed: int = 0
    device: str = "auto"
    resume: bool = False
    progress: bool = True
    augment: str = "device"  # a name in training.augment.POLICIES; "none" keeps windows as recorded
    balance: float = 1.0  # data set n gets a share of the batches ∝ n**balance (1: every window alike)
    exclude_recordings: tuple = ()  # recording names (globs) kept out of training and validation
    exclude_datasets: tuple = ()  # data set names (globs), e.g. for leave-one-dataset-out
    val_stride: int | None = None  # samples between validation window starts (default: the stride)
    checkpoint_minutes: float = 5.0  # last.pt at least this often, besides every evaluation
    init: str | None = None  # a model file to start from; its configuration must be `config`
    trainable: str = "all"  # "decoder": the encoder, and so every embedding and fitted head, stays the init's
    command: str = field(default_factory=lambda: " ".join(sys.argv))


def batch_masks(n: int, config: dict, rng: np.random.Generator) -> np.ndarray:
    """Hidden-sample masks `(n, window)` for n windows, True = masked."""
    masks = np.zeros((n, config["window"]), dtype=bool)
    for row in masks:
        row[:] = patch_mask(config["window"], config["patch_size"], config["mask_ratio"], rng)
    return masks


def masked_sq_error(model: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of squared reconstruction errors over hidden samples, and how many there are."""
    hidden = mask[:, None, :].expand_as(x)
    recon = model(x.masked_fill(hidden, 0.0))
    return ((recon - x) ** 2 * hidden).sum(), hidden.sum()


def masked_mse(model: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE over the hidden samples only: visible samples do not move the loss."""
    total, count = masked_sq_error(model, x, mask)
    return total / count


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to `min_ratio` at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


TRAINABLE = ("all", "decoder")


def _initial_model(config: dict, opts: TrainOptions) -> HiMAE:
    """A fresh HiMAE, or the init file's network; with trainable "decoder", its encoder frozen."""
    if opts.trainable not in TRAINABLE:
        raise ValueError(f"trainable must be one of {', '.join(TRAINABLE)}, got {opts.trainable!r}")
    if not opts.init:
        if opts.trainable != "all":
            raise ValueError("training the decoder alone needs a model file to start from (init): "
                             "a random encoder would stay random")
        return HiMAE(config)
    model = load_model_file(opts.init)
    if model.config != config:
        raise ValueError(f"{opts.init}: its configuration is not the run's ({model.config.get('name')} vs "
                         f"{config.get('name')})")
    if opts.trainable == "decoder":
        if not model.has_decoder:
            raise ValueError(f"{opts.init} has no decoder to train")
        model.encoder.requires_grad_(False)
    return model


def _train_mode(model: HiMAE, opts: TrainOptions) -> None:
    """Training mode. A model file's BatchNorm is folded into its convolutions (identity statistics):
    starting from one, BatchNorm stays in eval mode, so the network trained is the one the file
    describes and its frozen encoder computes exactly the file's embeddings."""
    model.train()
    if opts.init:
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.eval()


def _init_provenance(opts: TrainOptions) -> dict | None:
    """What a run started from: the file, its checksum, and its own provenance's steps and date."""
    if not opts.init:
        return None
    data = Path(opts.init).read_bytes()
    before = modelfile.read(opts.init).meta.get("provenance") or {}
    return {"file": Path(opts.init).name, "sha256": hashlib.sha256(data).hexdigest(), "trainable": opts.trainable,
            "steps": before.get("steps"), "date": before.get("date")}


def _rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, index])


def _evaluate(model: torch.nn.Module, val: Windows, masks: np.ndarray, ctx: distributed.Context,
              batch_size: int = 256) -> tuple[float | None, dict[str, float]]:
    """Validation masked MSE over every validation window (fixed masks), overall and per data set,
    shared by all processes. Leaves the model in eval mode."""
    if len(val) == 0:
        return None, {}
    names = sorted(set(val.datasets))
    group = np.array([names.index(d) for d in val.datasets])
    model.eval()
    sums = torch.zeros(len(names), 2, dtype=torch.float64, device=ctx.device)
    with torch.no_grad():
        mine = np.arange(ctx.rank, len(val), ctx.world)
        for start in range(0, len(mine), batch_size):
            idx = mine[start : start + batch_size]
            x = torch.from_numpy(val.x[idx]).to(ctx.device)
            recon = model(x.masked_fill(torch.from_numpy(masks[idx])[:, None, :].to(ctx.device), 0.0))
            hidden = torch.from_numpy(masks[idx])[:, None, :].to(ctx.device).expand_as(x)
            sq = ((recon - x) ** 2 * hidden).double().sum(dim=(1, 2))
            g = torch.from_numpy(group[idx]).to(ctx.device)
            sums[:, 0].index_add_(0, g, sq)
            sums[:, 1].index_add_(0, g, hidden.double().sum(dim=(1, 2)))
    sums = distributed.sum_all(sums).cpu().numpy()
    total = sums.sum(axis=0)
    return float(total[0] / total[1]), {n: float(a / b) for n, (a, b) in zip(names, sums) if b > 0}


def batch_windows(train_set: RawSet, positions: np.ndarray, first: int, config: dict, opts: "TrainOptions",
                  step: int) -> np.ndarray:
    """Normalised (and augmented) windows for the global-batch places first, first + 1, …

    Each window's augmentation is seeded by (seed, step, place in the global
    batch): the same whatever the number of processes, and after a resume.
    """
    policy = POLICIES[opts.augment]
    out = []
    for j, i in enumerate(positions):
        seq, start = train_set.index[i]
        rng = np.random.default_rng([opts.seed, 3, step, first + j])
        out.append(training_window(train_set.sequences[seq], int(start), config, rng, policy, LEAD_S))
    return np.stack(out)


def write_curve(out: Path, curve: list[dict]) -> None:
    """The learning curve as CSV, JSON and a PNG (train and validation loss against step)."""
    if not curve:
        return
    (out / "curve.json").write_text(json.dumps(curve, indent=1) + "\n")
    keys = ["step", "epoch", "train_loss", "val_loss", "lr", "wall_s"]
    lines = [",".join(keys)] + [",".join("" if r.get(k) is None else f"{r[k]:.6g}" for k in keys) for r in curve]
    (out / "curve.csv").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [r["step"] for r in curve]
    ax.plot(steps, [r["train_loss"] for r in curve], label="train (augmented)")
    if any(r.get("val_loss") is not None for r in curve):
        ax.plot(steps, [r.get("val_loss") for r in curve], label="validation (held-out subjects)", lw=2)
        for name in sorted({k for r in curve for k in r.get("val_by_dataset", {})}):
            ax.plot(steps, [r.get("val_by_dataset", {}).get(name) for r in curve], lw=0.8, ls="--", label=name)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("masked MSE")
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=100)
    plt.close(fig)


class Progress:
    """A rich progress bar with loss and samples/s on a terminal; periodic lines otherwise."""

    def __init__(self, total: int, start: int, enabled: bool):
        self.enabled, self.bar = enabled, None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

            self.bar = Bar(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("loss {task.fields[loss]:.4f}  {task.fields[sps]:.0f} samples/s"),
                           TimeRemainingColumn(), console=Console(stderr=True))
            self.task = self.bar.add_task("train", total=total, completed=start, loss=float("nan"), sps=0.0)
            self.bar.start()

    def update(self, step: int, loss: float, sps: float) -> None:
        if self.bar:
            self.bar.update(self.task, completed=step, loss=loss, sps=sps)

    def log(self, text: str) -> None:
        if not self.enabled:
            return
        (self.bar.console.print if self.bar else lambda t: print(t, file=sys.stderr, flush=True))(text)

    def close(self) -> None:
        if self.bar:
            self.bar.stop()


def train(opts: TrainOptions) -> dict:
    """Run (or resume) pretraining; returns a summary. Checkpoints go to `opts.out`."""
    ctx = distributed.setup(opts.device)
    finished = False
    try:
        summary = _train(opts, ctx)
        finished = True
        return summary
    finally:
        distributed.teardown(finished)


def _train(opts: TrainOptions, ctx: distributed.Context) -> dict:
    config, out = dict(opts.config), Path(opts.out)
    if opts.batch_size % ctx.world:
        raise ValueError(f"batch size {opts.batch_size} is not a multiple of the {ctx.world} processes")
    if opts.augment not in POLICIES:
        raise ValueError(f"unknown augmentation policy {opts.augment!r} (known: {', '.join(POLICIES)})")
    torch.manual_seed(opts.seed)
    model = _initial_model(config, opts)  # before the data: a wrong start file fails at once
    train_set, val_set = load_datasets(opts.data, config, opts.channels, opts.stride, opts.val_fraction, opts.seed,
                                       exclude_recordings=tuple(opts.exclude_recordings),
                                       exclude_datasets=tuple(opts.exclude_datasets), val_stride=opts.val_stride)
    steps_per_epoch = len(train_set) // opts.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"only {len(train_set)} training windows, fewer than one batch of {opts.batch_size}")
    total = opts.epochs * steps_per_epoch
    if opts.max_steps:
        total = min(total, opts.max_steps)
    warmup = opts.warmup_steps if opts.warmup_steps is not None else max(1, total // 20)
    eval_every = opts.eval_every or steps_per_epoch
    local_batch = opts.batch_size // ctx.world

    if ctx.world > 1 and not opts.init:
        distributed.global_batchnorm(model)
    model.to(ctx.device)
    _train_mode(model, opts)
    net = model
    if ctx.world > 1:
        net = DistributedDataParallel(model, device_ids=[ctx.device] if ctx.device.type == "cuda" else None,
                                      forward_sync_buffers=False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=opts.lr,
                                  weight_decay=opts.weight_decay)
    state = {"step": 0, "best_val": None, "bad_evals": 0, "history": [], "val_history": [], "curve": [],
             "wall_s": 0.0}
    if opts.resume and (out / "last.pt").exists():
        ckpt = torch.load(out / "last.pt", map_location=ctx.device, weights_only=True)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        state = {"curve": [], "wall_s": 0.0, **ckpt["state"]}
    val_masks = batch_masks(len(val_set), config, _rng(opts.seed, 2, 0))
    provenance = {
        "data": [str(d) for d in opts.data],
        "channels": opts.channels,
        "command": opts.command,
        "seed": opts.seed,
        "epochs": opts.epochs,
        "batch_size": opts.batch_size,
        "processes": ctx.world,
        "windows": {"train": len(train_set), "val": len(val_set),
                    "skipped": dict(sum(train_set.skipped.values(), Counter()) + val_set.skipped)},
        "windows_by_dataset": {"train": train_set.counts(), "val": dict(sorted(Counter(val_set.datasets).items())),
                               "skipped_train": {d: dict(c) for d, c in sorted(train_set.skipped.items())}},
        "augment": opts.augment,
        "balance": opts.balance,
        "excluded": {"recordings": list(opts.exclude_recordings), "datasets": list(opts.exclude_datasets)},
        "val_subjects": sorted(set(val_set.subjects)),
        "init": _init_provenance(opts),
        "versions": {"himae_stream": __version__, "torch": str(torch.__version__), "numpy": np.__version__},
    }
    if ctx.main:
        out.mkdir(parents=True, exist_ok=True)

    def save(name: str) -> None:
        if ctx.main:
            provenance.update(date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                              steps=state["step"], best_val_loss=state["best_val"])
            torch.save({"config": config, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "state": state, "provenance": provenance,
                        "options": {k: v for k, v in asdict(opts).items() if k != "config"}}, out / f"{name}.tmp")
            (out / f"{name}.tmp").replace(out / name)  # a run killed while saving keeps the previous file

    progress = Progress(total, state["step"], opts.progress and ctx.main)
    order, order_epoch = None, -1
    weights = None if opts.balance == 1.0 else train_set.weights(opts.balance)
    tick, tick_samples = time.perf_counter(), 0
    last_save = clock = time.perf_counter()
    stop = state["step"] >= total
    while not stop:
        step = state["step"]
        epoch, i = divmod(step, steps_per_epoch)
        if epoch != order_epoch:
            rng = _rng(opts.seed, 0, epoch)
            order = rng.permutation(len(train_set)) if weights is None else rng.choice(len(train_set), len(train_set), p=weights)
            order_epoch = epoch
        batch = order[i * opts.batch_size : (i + 1) * opts.batch_size]
        masks = batch_masks(opts.batch_size, config, _rng(opts.seed, 1, step))
        mine = slice(ctx.rank * local_batch, (ctx.rank + 1) * local_batch)
        x = torch.from_numpy(batch_windows(train_set, batch[mine], ctx.rank * local_batch, config, opts, step)).to(ctx.device)
        loss = masked_mse(net, x, torch.from_numpy(masks[mine]).to(ctx.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # The schedule is a function of the step alone, so a resumed run follows it exactly.
        for group in optimizer.param_groups:
            group["lr"] = opts.lr * lr_factor(step, warmup, total, opts.min_lr_ratio)
        optimizer.step()
        mean_loss = distributed.sum_all(loss.detach()).item() / ctx.world
        if not math.isfinite(mean_loss):
            raise FloatingPointError(f"training loss became {mean_loss} at step {step + 1}")
        state["step"] = step + 1
        state["history"].append(mean_loss)
        now = time.perf_counter()
        state["wall_s"] += now - clock
        clock = now
        tick_samples += opts.batch_size
        sps = tick_samples / max(1e-9, now - tick)
        progress.update(state["step"], mean_loss, sps)

        if state["step"] % eval_every == 0 or state["step"] == total:
            val_loss, val_by_dataset = _evaluate(model, val_set, val_masks, ctx)
            _train_mode(model, opts)
            improved = val_loss is None or state["best_val"] is None or val_loss < state["best_val"]
            if val_loss is not None:
                state["val_history"].append([state["step"], val_loss])
                state["bad_evals"] = 0 if improved else state["bad_evals"] + 1
                if improved:
                    state["best_val"] = val_loss
            since = state["curve"][-1]["step"] if state["curve"] else 0
            state["wall_s"] += time.perf_counter() - clock
            clock = time.perf_counter()
            state["curve"].append({"step": state["step"], "epoch": round(state["step"] / steps_per_epoch, 4),
                                   "train_loss": float(np.mean(state["history"][since:])), "val_loss": val_loss,
                                   "val_by_dataset": val_by_dataset,
                                   "lr": opts.lr * lr_factor(step, warmup, total, opts.min_lr_ratio),
                                   "wall_s": round(state["wall_s"], 2)})
            save("last.pt")
            last_save = time.perf_counter()
            if improved:
                save("best.pt")
            if ctx.main:
                write_curve(out, state["curve"])
            val_text = f"  val {val_loss:.4f}" if val_loss is not None else ""
            progress.log(f"step {state['step']}/{total}  loss {mean_loss:.4f}{val_text}  {sps:.0f} samples/s")
            tick, tick_samples = time.perf_counter(), 0
            stop = distributed.broadcast_flag(state["bad_evals"] >= opts.patience, ctx)
            if stop:
                progress.log(f"early stop: no validation improvement in {opts.patience} evaluations")
        elif time.perf_counter() - last_save >= opts.checkpoint_minutes * 60:
            save("last.pt")  # a crash loses minutes, not an evaluation interval
            last_save = time.perf_counter()
        stop = stop or state["step"] >= total
    progress.close()
    summary = {"steps": state["step"], "total_steps": total, "best_val_loss": state["best_val"],
               "final_loss": state["history"][-1] if state["history"] else None,
               "checkpoint": str(out / "best.pt"), "last": str(out / "last.pt"), "train_wall_s": state["wall_s"],
               **provenance["windows"], "windows_by_dataset": provenance["windows_by_dataset"]}
    if ctx.main:
        (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
