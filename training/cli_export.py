"""`himae export`: a training checkpoint to a model file, BatchNorm folded (needs torch)."""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

from himae_stream.cli import CliError
from training.cli_train import require_torch


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="checkpoint written by `himae train` (best.pt or last.pt)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="model file to write (.himae)")
    p.add_argument("--probes", metavar="JSON", help="file with a JSON list of probe heads to include")
    p.add_argument("--card", metavar="JSON", help="file with a JSON model card summary to include")


def _json_file(path: str | None, kind: type):
    if path is None:
        return None
    try:
        value = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise CliError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(value, kind):
        raise CliError(f"{path} must hold a JSON {'list' if kind is list else 'object'}")
    return value


def run(args: argparse.Namespace) -> int:
    require_torch()
    from himae_stream import modelfile
    from training.export import export_model, load_checkpoint

    if not Path(args.checkpoint).is_file():
        raise CliError(f"checkpoint not found: {args.checkpoint}")
    try:
        model = load_checkpoint(args.checkpoint)
    except (RuntimeError, KeyError, EOFError, pickle.UnpicklingError) as exc:
        raise CliError(f"{args.checkpoint} is not a HiMAE checkpoint: {exc}".splitlines()[0]) from None
    export_model(model, args.output, probes=_json_file(args.probes, list), card=_json_file(args.card, dict))
    f = modelfile.read(args.output)
    params = sum(t.size for t in f.tensors.values())
    print(f"wrote {args.output}: {f.config['name']}, {len(f.tensors)} tensors, {params:,} parameters "
          f"(BatchNorm folded), {Path(args.output).stat().st_size:,} bytes")
    return 0
