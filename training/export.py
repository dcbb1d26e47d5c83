"""Export a trained HiMAE to a model file, folding every BatchNorm into its conv.

Folding uses the eval-mode running statistics: for a bias-free conv W followed
by BN(γ, β, μ, σ², ε), the folded conv is W·s and bias β − μ·s with
s = γ / sqrt(σ² + ε), computed in float64 and stored as float32, with
subnormal values stored as zero (`modelfile.flush_subnormals`, as the
loaders read them).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from himae_stream import modelfile
from training.model import HiMAE


def fold_bn(conv: nn.Conv1d, bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 weight and bias of the single Conv1d equal to `bn(conv(x))` in eval mode."""
    w = conv.weight.detach().double()
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.detach().double() + bn.eps)
    weight = w * scale[:, None, None]
    bias = bn.bias.detach().double() + (b - bn.running_mean.detach().double()) * scale
    return weight, bias


def _plain(conv: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    return conv.weight.detach(), conv.bias.detach()


def folded_tensors(model: HiMAE) -> dict[str, np.ndarray]:
    """The model file's tensors (docs/model-format.md) from a model's current weights, subnormals flushed."""
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for level, block in enumerate(model.encoder):
        pairs[f"encoder.{level}.conv1"] = fold_bn(block.conv1, block.bn1)
        pairs[f"encoder.{level}.conv2"] = fold_bn(block.conv2, block.bn2)
        pairs[f"encoder.{level}.skip"] = fold_bn(block.skip, block.skip_bn)
    if model.has_decoder:
        for t in reversed(range(len(model.decoder))):
            stage = model.decoder[t]
            pairs[f"decoder.{t}.up"] = _plain(stage.up)
            pairs[f"decoder.{t}.conv1"] = fold_bn(stage.conv1, stage.bn1)
            pairs[f"decoder.{t}.conv2"] = fold_bn(stage.conv2, stage.bn2)
        pairs["head"] = _plain(model.head)
    tensors = {}
    for prefix, (weight, bias) in pairs.items():
        tensors[f"{prefix}.weight"] = modelfile.flush_subnormals(weight.to(torch.float32).numpy())
        tensors[f"{prefix}.bias"] = modelfile.flush_subnormals(bias.to(torch.float32).numpy())
    return tensors


def export_model(model: HiMAE, path, provenance: dict | None = None, probes: list | None = None,
                 card: dict | None = None) -> None:
    """Write `model` as a model file; provenance defaults to the one its checkpoint carried."""
    meta: dict = {"provenance": provenance if provenance is not None else getattr(model, "provenance", {})}
    if probes is not None:
        meta["probes"] = probes
    if card is not None:
        meta["card"] = card
    modelfile.write(path, model.config, folded_tensors(model), meta)


def load_checkpoint(path) -> HiMAE:
    """The model of a training checkpoint, in eval mode, with `.provenance` set."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = HiMAE(ckpt["config"])
    model.load_state_dict(ckpt["model"])
    model.provenance = ckpt.get("provenance", {})
    return model.eval()
