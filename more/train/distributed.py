"""Data-parallel training: which process this is, and the few collectives the loop needs (MORE_SPEC §1, §4.2).

The loop trains with DistributedDataParallel when its launcher (Ray Train's ``TorchTrainer``, ``torchrun``, or a
test's spawned processes) has initialised ``torch.distributed`` with more than one process; otherwise every helper
here is a no-op and training is the single-process loop. The reference COCO run used 2 GPUs x 4 images: the batch
size is per process. ``find_unused_parameters=True`` because the loss phases leave parts of the model without a
gradient (§2.8: the decoder before ``seg_start``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the process group (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 evaluates, writes the run folder and reports."""
        return self.rank == 0


def dist_info() -> DistInfo:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size())
    return DistInfo()


def process_device(device: torch.device) -> torch.device:
    """Under DDP, ``cuda`` means this process's GPU: the one the launcher made current (Ray Train and the usual
    ``torch.cuda.set_device(local_rank)`` both do), not GPU 0 for every process of a node. An explicit index
    (``cuda:0``) would put every process on the same GPU, which NCCL refuses: it is replaced, with a warning."""
    if device.type != "cuda":
        return device
    current = torch.device("cuda", torch.cuda.current_device())
    if device.index is not None and device.index != current.index:
        warnings.warn(f"runtime.device={device} ignored under DDP: this process trains on its own GPU {current}",
                      stacklevel=2)
    return current


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
    )


def first_bad_across(first_bad: torch.Tensor) -> torch.Tensor:
    """Per loss term, the earliest step at which any process saw a non-finite value (-1: none did)."""
    never = torch.iinfo(first_bad.dtype).max
    merged = torch.where(first_bad >= 0, first_bad, torch.full_like(first_bad, never))
    dist.all_reduce(merged, op=dist.ReduceOp.MIN)
    return torch.where(merged == never, torch.full_like(merged, -1), merged)


def mean_across(values: torch.Tensor) -> torch.Tensor:
    """The mean over processes (each process's running loss sums cover the same number of steps)."""
    out = values.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def barrier() -> None:
    dist.barrier()
