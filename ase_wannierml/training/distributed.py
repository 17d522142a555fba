"""Data-parallel training helpers: torchrun environment, gloo process group, global sums.

Launch: ``torchrun --nproc_per_node 2 -m ase_wannierml.training.cli train config.yaml``. Every process sees the
same global batch order (seeded) and takes the slice ``batch[rank::world_size]``; gradients are averaged by
``DistributedDataParallel`` and the loss is normalised by global item counts (``loss.combine``), so results equal
single-process training up to floating-point summation order.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """rank, world_size; ``is_main`` for the process that writes files and prints."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_from_env() -> DistInfo:
    """Join the gloo process group if launched by torchrun (``WORLD_SIZE`` > 1), else single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size())


def shutdown(info: DistInfo) -> None:
    """Leave the process group (no-op for single-process runs)."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(values: list[float], info: DistInfo) -> list[float]:
    """Element-wise sum of a list of numbers over processes (float64)."""
    if not info.enabled or not values:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_flag(flag: bool, info: DistInfo) -> bool:
    """The main process's boolean, on every process (e.g. early stopping)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int64)
    dist.broadcast(t, src=0)
    return bool(t.item())
