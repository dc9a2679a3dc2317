"""The resumable data order: same batches and augmentations whatever the start position and worker count."""

from __future__ import annotations

import itertools

import torch
from torch.utils.data import Dataset

from more.train.data_order import EpochBatches, iterate_batches


class RandomItems(Dataset):
    """Each item draws from torch's RNG, like an augmentation would."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int) -> dict:
        return {"i": torch.tensor(i), "aug": torch.rand(())}


def take(it, n):
    return [(e, p, b["i"].tolist(), b["aug"].tolist()) for e, p, b in itertools.islice(it, n)]


def test_epochs_are_permutations_and_seeded():
    plan = EpochBatches(10, 3, seed=1)
    e0 = plan.epoch(0)
    assert len(e0) == 3 and len({i for b in e0 for _, i in b}) == 9  # drop_last
    assert plan.epoch(0) == e0 and plan.epoch(1) != e0 and EpochBatches(10, 3, seed=2).epoch(0) != e0


def test_resume_from_any_position_gives_the_same_stream():
    full = take(iterate_batches(RandomItems(), batch_size=3, seed=0, num_workers=0), 8)
    e, p = full[4][0], full[4][1]
    resumed = take(
        iterate_batches(RandomItems(), batch_size=3, seed=0, num_workers=0, start_epoch=e, start_position=p), 3
    )
    assert resumed == full[5:8]


def test_augmentation_does_not_depend_on_workers_or_global_rng():
    torch.manual_seed(123)
    a = take(iterate_batches(RandomItems(), batch_size=3, seed=0, num_workers=0), 4)
    torch.manual_seed(999)
    b = take(iterate_batches(RandomItems(), batch_size=3, seed=0, num_workers=2), 4)
    assert a == b


def test_ranks_take_disjoint_slices_of_the_global_batches():
    def keys(rank, world, **kw):
        it = iterate_batches(RandomItems(), batch_size=2, seed=0, num_workers=0, rank=rank, world_size=world, **kw)
        return [(e, p, b["i"].tolist()) for e, p, b in itertools.islice(it, 4)]

    single = keys(0, 1)  # batch 2, one process
    assert single == [(e, p, b) for e, p, b, _ in take(iterate_batches(RandomItems(), batch_size=2, seed=0,
                                                                        num_workers=0), 4)]
    r0, r1 = keys(0, 2), keys(1, 2)
    plan = EpochBatches(10, 4, seed=0)  # global batch 2 x 2, drop_last: 2 per epoch
    for step, (a, b) in enumerate(zip(r0, r1)):
        epoch, k = divmod(step, 2)
        assert a[:2] == b[:2] == (epoch, k + 1)  # the same position on every process
        assert a[2] + b[2] == [i for _, i in plan.epoch(epoch)[k]] and not set(a[2]) & set(b[2])
    assert keys(1, 2, start_epoch=1, start_position=1) == r1[3:] + keys(1, 2, start_epoch=2)[:3]
