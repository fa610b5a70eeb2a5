"""Data-parallel training on torch.distributed: one process per device, launched by torchrun.

    torchrun --nproc_per_node=2 -m aelab train model=vae trainer.strategy=ddp

Every rank draws the same shuffled permutation and trains on its share of each
global batch; DistributedDataParallel averages the gradients, and BatchNorm
layers normalise with the statistics of the whole global batch (SyncBatchNorm),
so N ranks with batch_size=B follow the same curve as one process with
batch_size=B. Rank 0 alone logs, prints and writes checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from aelab.engine.options import STRATEGIES  # their one home is torch-free: the pre-check reads them
from aelab.errors import UserError


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        return self.rank, self.world

    def wrap(self, model: nn.Module, several_phases: bool) -> nn.Module | None:
        """The DDP wrapper whose forward(batch, step, loss_fn) returns loss terms; None on one process."""
        if not self.enabled:
            return None
        from torch.nn.parallel import DistributedDataParallel

        # Each rank sees 1/N of the batch: plain BatchNorm would normalise by that share's statistics.
        convert_sync_batchnorm(model)
        # Inputs already sit on the right device, so no device_ids: DDP passes them through as they are.
        # A phase of a multi-optimiser family touches only some parameters.
        return DistributedDataParallel(model, find_unused_parameters=several_phases)

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Average a tensor over the ranks (identity on one process)."""
        if self.enabled:
            values = values.clone()
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
            values /= self.world
        return values

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank if it is true on any (keeps ranks stepping in lockstep)."""
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def wait_for_all(self) -> None:
        """Every rank waits here for the others: a rank that tears its connections down while another still
        finishes its work (rank 0 writes metrics and logs) can abort that rank (gloo: `terminate called
        without an active exception`, seen once in CI's two-rank resume test on loaded cores)."""
        if self.enabled and dist.is_initialized():
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(SUM) that gradients flow through: each rank's input feeds every rank's output."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """What torch.nn.SyncBatchNorm does, for CPU tensors: torch refuses those (as of 2.14 its forward wants a
    GPU tensor and DistributedDataParallel refuses SyncBatchNorm in a CPU module). Per-channel sums are
    all-reduced over the ranks in two passes (mean, then squared deviations), so the statistics match one
    process's to rounding. Parameter and buffer names are BatchNorm's: checkpoints load into a plain model."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected a (B, C, ...) input, got {x.dim()} dimensions")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, ...) -> (B, C, ...)
        if not self.training or not dist.is_initialized() or dist.get_world_size() < 2:
            return super().forward(x)  # evaluation: the running statistics, as on one process
        return self.global_batch_norm(x)

    def global_batch_norm(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, ...) -> (B, C, ...)
        """Training-mode batch norm with the statistics of every rank's batch; updates the running statistics."""
        self._check_input_dim(x)
        dims, shape = [0, *range(2, x.dim())], (1, -1, *[1] * (x.dim() - 2))
        n = _SumOverRanks.apply(torch.tensor([float(x.numel() // max(x.size(1), 1))]))  # values per channel, all ranks
        xf = x.float()
        mean = _SumOverRanks.apply(xf.sum(dims)) / n  # (C,)
        centred = xf - mean.view(shape)
        var = _SumOverRanks.apply(centred.square().sum(dims)) / n  # (C,) biased, as BatchNorm normalises
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)  # type: ignore[union-attr]
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean, alpha=m)  # type: ignore[union-attr]
                unbiased = var * n / (n - 1).clamp_min(1)  # BatchNorm keeps the unbiased variance
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)  # type: ignore[union-attr]
        return out.to(x.dtype)


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """Every BatchNorm layer of `model` normalises by the global batch: torch's SyncBatchNorm on GPUs,
    CpuSyncBatchNorm on CPUs. In place for a model that is not itself a norm layer, and holding the same
    parameter tensors, so optimisers and phases built from the model keep training them."""
    if next(model.parameters(), torch.empty(0)).device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, CpuSyncBatchNorm):
            synced = CpuSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                      child.track_running_stats)
            synced._parameters, synced._buffers = child._parameters, child._buffers  # the same tensors
            synced.train(child.training)
            setattr(model, name, synced)
        else:
            convert_sync_batchnorm(child)
    return model


def launched_world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup_distributed(strategy: str, device: torch.device) -> tuple[Distributed, torch.device]:
    """Join the process group torchrun set up (env:// rendezvous); the device becomes this rank's own."""
    if strategy not in STRATEGIES:
        raise UserError("trainer.strategy", f"unknown value {strategy!r}", "one of: " + ", ".join(STRATEGIES))
    world = launched_world()
    if strategy == "single" or world == 1:
        if strategy == "ddp":
            raise UserError("trainer.strategy", "ddp needs one process per device, started by torchrun",
                            "torchrun --nproc_per_node=N -m aelab train ... trainer.strategy=ddp")
        return Distributed(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank, world, local_rank), device
