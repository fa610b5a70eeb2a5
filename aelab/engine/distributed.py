"""Data-parallel training on torch.distributed: one process per device, launched by torchrun.

    torchrun --nproc_per_node=2 -m aelab train model=vae trainer.strategy=ddp

Every rank draws the same shuffled permutation and trains on its share of each
global batch; DistributedDataParallel averages the gradients, so N ranks with
batch_size=B follow the same curve as one process with batch_size=B. Rank 0
alone logs, prints and writes checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from aelab.errors import UserError

STRATEGIES = ("auto", "single", "ddp")


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

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


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
