"""Process-group helpers for data-parallel training under torchrun.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them training runs as
one process. Gloo serves CPU, NCCL serves CUDA. BatchNorm statistics are
reduced over all processes (`GlobalBatchNorm1d`), so N processes with a
global batch B train the same model as one process with batch B; PyTorch's
own SyncBatchNorm refuses CPU tensors, this one works on both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Context:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def pick_device(name: str) -> torch.device:
    """`auto` takes CUDA when present; under torchrun each process gets its LOCAL_RANK GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("--device cuda asked for, but no CUDA device is available")
        if name == "cuda":
            name = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return torch.device(name)


def setup(device: str = "auto") -> Context:
    """Join the torchrun process group when launched by torchrun; otherwise a single process."""
    dev = pick_device(device)
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return Context(rank=rank, world=world, device=dev)


def teardown(finished: bool) -> None:
    """Leave the process group; after a finished run, only once every rank has finished.

    Without the barrier a rank that is done first destroys its side of the
    gloo group while a peer may still be using the connection, which can
    abort the process at exit. After a failure there is no barrier: the
    other ranks may never reach it.
    """
    if dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def sum_all(values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over all processes (identity for one process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        values = values.clone()
        dist.all_reduce(values)
    return values


def broadcast_flag(flag: bool, ctx: Context) -> bool:
    """Rank 0's decision, shared so every process leaves the loop together."""
    return bool(sum_all(torch.tensor([float(flag and ctx.main)], device=ctx.device)).item())


class _SumOverProcesses(torch.autograd.Function):
    """All-reduce (sum) that gradients flow through: the gradient of a sum is summed too."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics cover the batch of every process.

    Same parameters and buffers as BatchNorm1d, so checkpoints and export do
    not see the difference; in eval mode, or in a single process, it is
    exactly BatchNorm1d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        count = torch.full((1,), float(x.shape[0] * x.shape[2]), device=x.device, dtype=x.dtype)
        stats = _SumOverProcesses.apply(torch.cat([x.sum(dim=(0, 2)), (x * x).sum(dim=(0, 2)), count]))
        n = stats[-1]
        mean = stats[:c] / n
        var = stats[c : 2 * c] / n - mean * mean
        with torch.no_grad():
            self.num_batches_tracked += 1
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach() * n / (n - 1), self.momentum)
        scale = self.weight / torch.sqrt(var + self.eps)
        return (x - mean[None, :, None]) * scale[None, :, None] + self.bias[None, :, None]


def global_batchnorm(model: nn.Module) -> nn.Module:
    """Swap every BatchNorm1d of `model` for a GlobalBatchNorm1d holding the same tensors."""
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm1d:
            bn = GlobalBatchNorm1d(child.num_features, child.eps, child.momentum).to(child.weight.device)
            bn.load_state_dict(child.state_dict())
            setattr(model, name, bn)
        else:
            global_batchnorm(child)
    return model
