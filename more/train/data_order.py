"""Resumable, worker-independent data order for exact resume.

The order of epoch ``e`` is a permutation drawn from ``(seed, e)``; the augmentation of a sample is drawn from
``(seed, e, index)``. A run resumed at (epoch, batch position) therefore sees exactly the batches, and exactly the
augmentations, that an uninterrupted run would have seen, whatever the number of loader workers.

With several DDP processes and/or gradient accumulation the plan is drawn in global batches of
``world_size * accum_steps * batch_size`` keys. A global batch is cut into ``world_size * accum_steps`` shards of
``batch_size`` in plan order; micro-step ``k`` of process ``rank`` takes shard ``k * world_size + rank``. So the
shards are disjoint, a position counts global batches (the same number on every process), one process without
accumulation gets exactly the single-process order, and 1 process x 8 images, 2 processes x 4 and 1 process x 2
micro-steps x 4 all see the same eight images per optimizer step (``tests/train/test_accumulation.py``).
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
            raise ValueError(f"the training split has {num_samples} images, fewer than the global batch of "
                             f"{batch_size} (processes x train.batch_size x train.accum_steps)")
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
    accum_steps: int = 1,
) -> Iterator[tuple[int, int, dict]]:
    """Yield ``(epoch, position, batch)`` forever, starting at (start_epoch, start_position).

    ``batch_size`` is per process and micro-step. Each global batch yields ``accum_steps`` batches in a row (this
    process's shards, see the module docstring); ``position`` is the number of global batches of the epoch done once
    the global batch the yielded one belongs to is done, so the position after an optimizer step is the one yielded
    with its last micro-batch.
    """
    wrapped = SeededSamples(dataset, seed)
    plan = EpochBatches(len(wrapped), batch_size * world_size * accum_steps, seed)
    epoch, pos = start_epoch, start_position
    while True:
        shards, positions = [], []
        for after, keys in enumerate(plan.epoch(epoch)[pos:], start=pos + 1):
            for k in range(accum_steps):
                s = k * world_size + rank
                shards.append(keys[s * batch_size : (s + 1) * batch_size])
                positions.append(after)
        if shards:
            loader = DataLoader(wrapped, batch_sampler=shards, num_workers=num_workers, pin_memory=pin_memory)
            for after, batch in zip(positions, loader):
                yield epoch, after, batch
        epoch, pos = epoch + 1, 0
