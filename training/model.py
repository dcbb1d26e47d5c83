"""HiMAE: a 1-D convolutional U-Net masked autoencoder (docs/model-format.md, "Tensors").

Module names mirror the model file's tensor names (`encoder.{l}.conv1`,
`decoder.{t}.up`, `head`), so export is a BatchNorm fold plus a rename of
nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.configs import level_lengths


class EncoderBlock(nn.Module):
    """Residual stride-2 block: GELU(BN(conv2(GELU(BN(conv1 x)))) + BN(skip x))."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv1d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, k, stride=1, padding=k // 2, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.skip = nn.Conv1d(c_in, c_out, 1, stride=stride, bias=False)
        self.skip_bn = nn.BatchNorm1d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return F.gelu(h + self.skip_bn(self.skip(x)))


class DecoderStage(nn.Module):
    """Upsample, crop to the skip's length, concat [up, skip], two conv-BN-GELU."""

    def __init__(self, c_deep: int, c_out: int, k: int, stride: int):
        super().__init__()
        self.up = nn.ConvTranspose1d(c_deep, c_out, k, stride=stride, padding=k // 2, output_padding=stride - 1)
        self.conv1 = nn.Conv1d(2 * c_out, c_out, k, padding=k // 2, bias=False)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, k, padding=k // 2, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.up(deep)[..., : skip.shape[-1]]
        h = F.gelu(self.bn1(self.conv1(torch.cat([up, skip], dim=1))))
        return F.gelu(self.bn2(self.conv2(h)))


class HiMAE(nn.Module):
    """Encoder levels 0 … n-1 (level l has ceil(L / 2^(l+1)) positions), U-Net decoder, tanh head."""

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        k, stride, chans = config["kernel_size"], config["stride"], list(config["channels"])
        if stride != 2 or k % 2 != 1:
            raise ValueError(f"HiMAE needs stride 2 and an odd kernel, got stride {stride}, kernel {k}")
        c_prev = [config["in_channels"], *chans[:-1]]
        self.encoder = nn.ModuleList(EncoderBlock(ci, co, k, stride) for ci, co in zip(c_prev, chans))
        self.has_decoder = bool(config.get("decoder", True))
        if self.has_decoder:
            self.decoder = nn.ModuleList(DecoderStage(chans[t + 1], chans[t], k, stride) for t in range(len(chans) - 1))
            self.head = nn.ConvTranspose1d(
                chans[0], config["in_channels"], k, stride=stride, padding=k // 2, output_padding=stride - 1
            )

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-level activations `(B, C_l, ceil(L / 2^(l+1)))`, level 0 first."""
        levels = []
        for block in self.encoder:
            x = block(x)
            levels.append(x)
        return levels

    def embed(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-level embeddings: time means of the activations, `(B, C_l)` each."""
        return [h.mean(dim=-1) for h in self.encode(x)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction `(B, in_channels, L)` in [-1, 1]."""
        if not self.has_decoder:
            raise RuntimeError("this HiMAE was built without a decoder")
        levels = self.encode(x)
        d = levels[-1]
        for t in reversed(range(len(self.decoder))):
            d = self.decoder[t](d, levels[t])
        return torch.tanh(self.head(d)[..., : x.shape[-1]])

    def level_lengths(self) -> list[int]:
        return level_lengths(self.config)


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm seeded random affine parameters and running statistics.

    A fresh model's BatchNorm is the identity in eval mode, so a wrong fold or
    a skipped BatchNorm would pass unnoticed; parity tests and benchmarks use
    this to get a model shaped like a trained one.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.3 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.3 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
    return model
