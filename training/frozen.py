"""A PyTorch HiMAE rebuilt from a model file, for probing and evaluating shipped models.

Model files hold BatchNorm-folded convolutions. Loading them back sets each
BatchNorm to the identity plus the folded bias (weight 1, mean 0, variance
1 − eps), so the eval-mode network computes what the file describes.
"""

from __future__ import annotations

import torch
from torch import nn

from himae_stream import modelfile
from training.model import HiMAE


def _load_conv_bn(conv: nn.Module, bn: nn.BatchNorm1d, weight, bias) -> None:
    conv.weight.data = torch.from_numpy(weight.copy())
    bn.weight.data.fill_(1.0)
    bn.bias.data = torch.from_numpy(bias.copy())
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0 - bn.eps)


def _load_plain(conv: nn.Module, weight, bias) -> None:
    conv.weight.data = torch.from_numpy(weight.copy())
    conv.bias.data = torch.from_numpy(bias.copy())


def load_model_file(path) -> HiMAE:
    """An eval-mode HiMAE with a model file's weights; `.meta` holds the file's metadata."""
    mf = modelfile.read(path)
    t = mf.tensors
    model = HiMAE(mf.config)
    for level, block in enumerate(model.encoder):
        for conv, bn, name in ((block.conv1, block.bn1, "conv1"), (block.conv2, block.bn2, "conv2"),
                               (block.skip, block.skip_bn, "skip")):
            _load_conv_bn(conv, bn, t[f"encoder.{level}.{name}.weight"], t[f"encoder.{level}.{name}.bias"])
    if model.has_decoder:
        for i, stage in enumerate(model.decoder):
            _load_plain(stage.up, t[f"decoder.{i}.up.weight"], t[f"decoder.{i}.up.bias"])
            _load_conv_bn(stage.conv1, stage.bn1, t[f"decoder.{i}.conv1.weight"], t[f"decoder.{i}.conv1.bias"])
            _load_conv_bn(stage.conv2, stage.bn2, t[f"decoder.{i}.conv2.weight"], t[f"decoder.{i}.conv2.bias"])
        _load_plain(model.head, t["head.weight"], t["head.bias"])
    model.meta = mf.meta
    return model.eval()
