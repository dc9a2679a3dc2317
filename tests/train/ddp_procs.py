"""Test helper: run :func:`more.train.train` in N spawned processes joined by a gloo process group on 127.0.0.1.

Each process writes what it saw to ``OUT/rank<r>.pt``: the image names of every batch, its reports, its final
weights (read from the model the trainer wrapped in DDP) or the error it raised. Spawned processes import this
module by name (the test puts its folder on ``sys.path``, which the children inherit).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ddp(cfg: Any, out: Path, *, world_size: int = 2, run_dirs: list[Path], resume: str | None = None,
            stop_at: int | None = None, poison: tuple[int, int] | None = None) -> list[dict]:
    """Train in ``world_size`` processes; returns each rank's record (see the module docstring).

    Args:
        run_dirs: the ``run_dir`` each rank is given (the same folder for all, or one each to see who writes).
        stop_at: rank 0 raises from its report callback at this iteration (an interrupted run).
        poison: (rank, call): that rank's ``call``-th MCT loss becomes NaN.
    """
    out.mkdir(parents=True, exist_ok=True)
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # gloo's pairs on loopback too, whatever the host name resolves to
    ctx = mp.start_processes(_worker, args=(world_size, free_port(), cfg, out, run_dirs, resume, stop_at, poison),
                             nprocs=world_size, join=False, start_method="spawn")
    while not ctx.join(timeout=300):
        pass
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(world_size)]


def _worker(rank: int, world_size: int, port: int, cfg: Any, out: Path, run_dirs: list[Path], resume: str | None,
            stop_at: int | None, poison: tuple[int, int] | None) -> None:
    import torch.distributed as dist

    import more.train.step as step
    import more.train.trainer as trainer

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    record: dict[str, Any] = {"rank": rank, "names": [], "reports": [], "error": None, "weights": None}
    models: list[torch.nn.Module] = []

    real_iterate, real_wrap, real_mct = trainer.iterate_batches, trainer.wrap_ddp, step.mct_loss

    def iterate(*args: Any, **kwargs: Any):
        for epoch, position, batch in real_iterate(*args, **kwargs):
            record["names"].append(list(batch["name"]))
            yield epoch, position, batch

    def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        models.append(model)
        return real_wrap(model, device)

    calls = {"n": 0}

    def mct(**kw: Any) -> torch.Tensor:
        calls["n"] += 1
        value = real_mct(**kw)
        return value * float("nan") if poison and poison == (rank, calls["n"]) else value

    class Stop(Exception):
        pass

    def report(metrics: dict, ckpt: str | None) -> None:
        record["reports"].append((metrics["iter"], ckpt))
        if stop_at is not None and metrics["iter"] >= stop_at:
            raise Stop

    trainer.iterate_batches, trainer.wrap_ddp, step.mct_loss = iterate, wrap, mct
    try:
        record["result"] = trainer.train(cfg, run_dir=run_dirs[rank], resume=resume, report=report,
                                         log=lambda _: None)
    except Stop:
        record["error"] = "stopped"
    except Exception as exc:  # noqa: BLE001 -- the test reads it
        record["error"] = f"{type(exc).__name__}: {exc}"
    if models:
        record["weights"] = {k: v.detach().clone() for k, v in models[0].state_dict().items()}
    torch.save(record, out / f"rank{rank}.pt")
    if record["error"] is None:
        dist.destroy_process_group()
    else:
        os._exit(0)  # a peer may be waiting in a collective that will never complete; leave without tearing down
