"""HiMAE architecture: sizes from the design, and BatchNorm folding exactness."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from training import HiMAE, get_config
from training.model import randomize_batchnorm
from training.configs import level_lengths
from training.export import fold_bn, folded_tensors


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_himae_100_parameter_counts():
    model = HiMAE(get_config("himae-100"))
    assert n_params(model) == 1_245_953
    assert n_params(model.encoder) == 700_672


def test_himae_100_level_lengths_and_shapes():
    config = get_config("himae-100")
    model = HiMAE(config).eval()
    x = torch.randn(3, 1, 1000)
    levels = model.encode(x)
    assert [h.shape[-1] for h in levels] == [500, 250, 125, 63, 32] == level_lengths(config)
    assert [h.shape[1] for h in levels] == [16, 32, 64, 128, 256]
    embeddings = model.embed(x)
    assert [tuple(e.shape) for e in embeddings] == [(3, c) for c in config["channels"]]
    torch.testing.assert_close(embeddings[2], levels[2].mean(-1))
    y = model(x)
    assert y.shape == x.shape and y.abs().max() <= 1


@pytest.mark.parametrize("overrides", [{}, {"in_channels": 4, "channel_names": ["PPG", "AX", "AY", "AZ"]},
                                       {"window": 77, "kernel_size": 3}])
def test_himae_25_and_variants_follow_configuration(overrides):
    config = get_config("himae-25", **overrides)
    model = HiMAE(config).eval()
    x = torch.randn(2, config["in_channels"], config["window"])
    assert [h.shape[-1] for h in model.encode(x)] == level_lengths(config)
    assert model(x).shape == x.shape


def test_encoder_is_causal_free_of_batch_effects_in_eval():
    """Eval mode: one window's output does not depend on its batch mates."""
    model = HiMAE(get_config("himae-25")).eval()
    x = torch.randn(4, 1, 250)
    torch.testing.assert_close(model(x)[1:2], model(x[1:2]), rtol=0, atol=1e-6)



def test_bn_folded_conv_equals_conv_then_bn():
    """The fold is exact algebra: in float64 it matches conv + BN to rounding."""
    conv = nn.Conv1d(16, 32, 5, stride=2, padding=2, bias=False).double()
    bn = nn.BatchNorm1d(32)
    randomize_batchnorm(bn)
    bn = bn.double().eval()
    x = torch.randn(4, 16, 300, dtype=torch.float64)
    weight, bias = fold_bn(conv, bn)
    want = bn(conv(x))
    assert (F.conv1d(x, weight, bias, stride=2, padding=2) - want).abs().max().item() <= 1e-6
    # Stored as float32, the folded conv stays within float32 rounding of conv + BN.
    got32 = F.conv1d(x.float(), weight.float(), bias.float(), stride=2, padding=2).double()
    assert (got32 - want).abs().max().item() <= 1e-6 * max(1.0, want.abs().max().item())


def _file_forward(t: dict, config: dict, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The model file's ops (docs/model-format.md) written out with torch functionals."""
    p, k = lambda name: torch.from_numpy(t[name]), config["kernel_size"]
    levels = []
    for level in range(len(config["channels"])):
        e = f"encoder.{level}"
        h = F.gelu(F.conv1d(x, p(f"{e}.conv1.weight"), p(f"{e}.conv1.bias"), stride=2, padding=k // 2))
        h = F.conv1d(h, p(f"{e}.conv2.weight"), p(f"{e}.conv2.bias"), padding=k // 2)
        x = F.gelu(h + F.conv1d(x, p(f"{e}.skip.weight"), p(f"{e}.skip.bias"), stride=2))
        levels.append(x)
    d = levels[-1]
    for tt in reversed(range(len(levels) - 1)):
        s = f"decoder.{tt}"
        up = F.conv_transpose1d(d, p(f"{s}.up.weight"), p(f"{s}.up.bias"), stride=2, padding=k // 2,
                                output_padding=1)[..., : levels[tt].shape[-1]]
        h = F.gelu(F.conv1d(torch.cat([up, levels[tt]], 1), p(f"{s}.conv1.weight"), p(f"{s}.conv1.bias"),
                            padding=k // 2))
        d = F.gelu(F.conv1d(h, p(f"{s}.conv2.weight"), p(f"{s}.conv2.bias"), padding=k // 2))
    y = F.conv_transpose1d(d, p("head.weight"), p("head.bias"), stride=2, padding=k // 2, output_padding=1)
    return levels, torch.tanh(y[..., : config["window"]])


def test_folded_tensors_reproduce_the_whole_model():
    config = get_config("himae-100")
    model = HiMAE(config)
    randomize_batchnorm(model, seed=1)
    model.eval()
    x = torch.randn(2, 1, 1000)
    levels, y = _file_forward(folded_tensors(model), config, x)
    for got, want in zip(levels, model.encode(x)):
        assert (got - want).abs().max().item() <= 1e-5 * max(1.0, want.abs().max().item())
    assert (y - model(x)).abs().max().item() <= 1e-5
    assert np.isfinite(y.numpy()).all()
