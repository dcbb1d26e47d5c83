"""`himae train`: masked pretraining on recordings (needs torch).

Runs as one process, or data-parallel when launched by torchrun:
`torchrun --nproc_per_node 2 -m himae_stream.cli train ...`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from himae_stream.cli import CliError
from himae_stream.recordings import RECORDING_KINDS

TORCH_MISSING = "training needs PyTorch: pip install 'himae-stream[train]'"


def require_torch() -> None:
    """Fail with one line naming the extra to install when torch is absent."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise CliError(TORCH_MISSING) from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="himae-100", help="named configuration (himae-100, himae-25)")
    p.add_argument("--data", action="append", required=True, metavar="PATH",
                   help=f"recording file or folder ({RECORDING_KINDS}); repeatable")
    p.add_argument("--out", default=None, metavar="DIR", help="checkpoint folder (default runs/CONFIG)")
    p.add_argument("--channels", default=None,
                   help="channel names or globs to train on, comma-separated (default: every PPG channel, PPG*, PLETH*, BVP*, PULSE*)")
    p.add_argument("--normalizer", choices=["stream", "minmax"], default=None,
                   help="input normaliser (default: the configuration's)")
    p.add_argument("--window-stride", type=int, default=None, metavar="N",
                   help="samples between window starts (default window/2)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of subjects held out for validation")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    p.add_argument("--batch-size", type=int, default=64, help="global batch, split across processes")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-steps", type=int, default=None, help="linear warm-up steps (default 5%% of steps)")
    p.add_argument("--eval-every", type=int, default=None, metavar="STEPS", help="default: once per epoch")
    p.add_argument("--patience", type=int, default=5, help="evaluations without improvement before stopping")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--resume", action="store_true", help="continue from DIR/last.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or log lines")
    p.add_argument("--augment", choices=["device", "none"], default="device",
                   help="device-like augmentation of each raw training window (default device)")
    p.add_argument("--balance", type=float, default=1.0, metavar="P",
                   help="a data set with n windows gets a share of batches proportional to n**P "
                        "(1: every window alike; 0: every data set alike)")
    p.add_argument("--exclude-dataset", action="append", default=[], metavar="NAME",
                   help="leave a data set (folder name or glob) out of training and validation; repeatable")
    p.add_argument("--exclude-recording", action="append", default=[], metavar="NAME",
                   help="leave a recording (file stem or glob, e.g. a103l) out; repeatable")
    p.add_argument("--val-stride", type=int, default=None, metavar="N",
                   help="samples between validation window starts (default: the window stride)")
    p.add_argument("--init", default=None, metavar="FILE",
                   help="start from this model file (a shipped name or a path) instead of random weights; "
                        "its configuration replaces --config")
    p.add_argument("--train", choices=["all", "decoder"], default="all", dest="trainable",
                   help="what learns: everything, or the decoder alone (with --init: the encoder, its "
                        "embeddings and any heads fitted on them stay as they are: a better gap fill from the "
                        "same model)")
    p.add_argument("--checkpoint-minutes", type=float, default=5.0, metavar="MIN",
                   help="save DIR/last.pt at least this often (besides every evaluation)")


def run(args: argparse.Namespace) -> int:
    require_torch()
    from training.configs import get_config
    from training.data import DEFAULT_CHANNELS
    from training.train import TrainOptions, train
    from himae_stream.normalize import default_spec

    for path in args.data:
        if not Path(path).exists():
            raise CliError(f"data path not found: {path}")
    overrides = {"normalizer": default_spec(args.normalizer)} if args.normalizer else {}
    init = None
    if args.init:
        from himae_stream import modelfile, zoo

        if overrides:
            raise CliError("--normalizer cannot change a model file's normaliser (--init)")
        init = str(zoo.resolve(args.init))
        config = modelfile.read(init).config
    else:
        config = get_config(args.config, **overrides)
    opts = TrainOptions(
        config=config,
        data=args.data,
        out=args.out or str(Path("runs") / config["name"]),
        channels=args.channels or DEFAULT_CHANNELS,
        stride=args.window_stride,
        val_fraction=args.val_fraction,
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        eval_every=args.eval_every,
        patience=args.patience,
        seed=args.seed,
        device=args.device,
        resume=args.resume,
        progress=not args.no_progress,
        augment=args.augment,
        balance=args.balance,
        exclude_recordings=tuple(args.exclude_recording),
        exclude_datasets=tuple(args.exclude_dataset),
        val_stride=args.val_stride,
        checkpoint_minutes=args.checkpoint_minutes,
        init=init,
        trainable=args.trainable,
    )
    summary = train(opts)
    if int(os.environ.get("RANK", 0)) != 0:
        return 0
    best = summary["best_val_loss"]
    val_text = f", best validation loss {best:.4f}" if best is not None else ""
    print(f"trained {summary['steps']} steps on {summary['train']} windows{val_text}; checkpoint {summary['checkpoint']}")
    return 0
