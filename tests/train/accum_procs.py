"""Test helper: train several configs, one after the other, in N spawned processes (DDP over gloo on 127.0.0.1).

Unlike :mod:`ddp_procs` (one config, every rank's record) this only trains: rank 0 writes each run folder, whose
last checkpoint holds the final weights. One spawn for all configs keeps the accumulation test short. Spawned
processes import this module by name (the test puts its folder on ``sys.path``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch.multiprocessing as mp
from ddp_procs import free_port


def train_ddp(runs: list[tuple[Any, Path]], *, world_size: int = 2) -> None:
    """Train each ``(cfg, run_dir)`` in ``world_size`` processes; raises when a process failed."""
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    mp.start_processes(_worker, args=(world_size, free_port(), runs), nprocs=world_size, join=True,
                       start_method="spawn")


def _worker(rank: int, world_size: int, port: int, runs: list[tuple[Any, Path]]) -> None:
    import torch
    import torch.distributed as dist

    from more.train.trainer import train

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        for cfg, run_dir in runs:
            train(cfg, run_dir=run_dir, log=lambda _: None)
    finally:
        dist.destroy_process_group()
