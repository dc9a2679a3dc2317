"""Resumable, worker-independent data order for exact resume.

The order of epoch ``e`` is a permutation drawn from ``(seed, e)``; the augmentation of a sample is drawn from
``(seed, e, index)``. A run resumed at (epoch, batch position) therefore sees exactly the batches, and exactly the
augmentations, that an uninterrupted run would have seen, whatever the number of loader workers.

With several DDP processes the plan is drawn in global batches of ``world_size * batch_size`` keys and process
``rank`` takes the ``rank``-th slice of each: the shards are disjoint, a position counts global batches (the same
number on every process), and one process (``world_size=1``) gets exactly the single-process order.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset


def _mix(*values: int) -> int:
    """A deterministic 63-bit seed from integers (splitmix-style), independent of Python's hash randomisation."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x ^= (v + 0x9E3779B97F4A7C15 + ((x << 6) & 0xFFFFFFFFFFFFFFFF) + (x >> 2)) & 0xFFFFFFFFFFFFFFFF
        x = (x * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


class SeededSamples(Dataset):
    """Wraps a dataset so item ``(epoch, index)`` is augmented with an RNG seeded from ``(seed, epoch, index)``."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_mix(self.seed, epoch, index))
            return self.dataset[index]


class EpochBatches:
    """Batches of ``(epoch, index)`` keys, drop_last, reshuffled per epoch from ``(seed, epoch)``."""

    def __init__(self, num_samples: int, batch_size: int, seed: int) -> None:
        if num_samples < batch_size:
            raise ValueError(f"the training split has {num_samples} images, fewer than train.batch_size={batch_size}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed

    @property
    def batches_per_epoch(self) -> int:
        return self.num_samples // self.batch_size

    def epoch(self, epoch: int) -> list[list[tuple[int, int]]]:
        g = torch.Generator().manual_seed(_mix(self.seed, epoch, 0x5EED))
        order = torch.randperm(self.num_samples, generator=g).tolist()
        b = self.batch_size
        return [[(epoch, i) for i in order[k * b : (k + 1) * b]] for k in range(self.batches_per_epoch)]


def iterate_batches(
    dataset: Dataset,
    *,
    batch_size: int,
    seed: int,
    num_workers: int,
    start_epoch: int = 0,
    start_position: int = 0,
    pin_memory: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[int, int, dict]]:
    """Yield ``(epoch, position_after_this_batch, batch)`` forever, starting at (start_epoch, start_position).

    ``batch_size`` is per process; with ``world_size`` > 1 this process gets its ``rank``-th share of each global
    batch (see the module docstring).
    """
    wrapped = SeededSamples(dataset, seed)
    plan = EpochBatches(len(wrapped), batch_size * world_size, seed)
    epoch, pos = start_epoch, start_position
    while True:
        batches = [b[rank * batch_size : (rank + 1) * batch_size] for b in plan.epoch(epoch)[pos:]]
        if batches:
            loader = DataLoader(wrapped, batch_sampler=batches, num_workers=num_workers, pin_memory=pin_memory)
            for batch in loader:
                pos += 1
                yield epoch, pos, batch
        epoch, pos = epoch + 1, 0
