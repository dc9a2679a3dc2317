"""A light trainer for the harness benchmarks: the real harness (trial adapter, identity, tracking into MLflow, Tune,
claims, reuse, publishing) around a trainer that only sleeps, so the harness's own costs stand out.

Pass it to :func:`more.harness.launch` as ``trainer=functools.partial(light_trainer, seconds=T)``. Like
:func:`more.train.train` it writes ``config.yaml`` first, a ``metrics.jsonl`` record and a checkpoint folder per
evaluation, ``metrics.json`` at the last one, and reports every evaluation with about 60 metrics named as the
trainer's (means and per-class values of each output, losses, timing). No torch, no data.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

OUTPUTS = ("cam", "aux_cam", "lam", "fused", "seg")


def evaluation_metrics(rng: random.Random, classes: list[str], iteration: int) -> dict[str, float]:
    """About 60 metrics of one evaluation: every output's means, the seg and LAM per-class IoU and confusion ratio,
    the losses and the timing."""
    out: dict[str, float] = {"iter": float(iteration), "val/cls_f1": rng.uniform(30, 90),
                             "train/loss": rng.uniform(0.1, 2), "train/cls": rng.uniform(0, 1),
                             "train/seg": rng.uniform(0, 1), "time/sec_per_iter": rng.uniform(0.1, 1)}
    for o in OUTPUTS:
        out.update({f"val/{o}/miou": rng.uniform(10, 80), f"val/{o}/precision": rng.uniform(10, 90),
                    f"val/{o}/recall": rng.uniform(10, 90), f"val/{o}/confusion": rng.uniform(0, 2)})
        if o in ("seg", "lam"):
            for c in classes:
                out[f"val/{o}/iou/{c}"] = rng.uniform(0, 100)
                out[f"val/{o}/confusion/{c}"] = rng.uniform(0, 2)
    return out


def light_trainer(cfg: Any, *, report: Any, resume: str | None = None, run_dir: str | Path, log: Any,
                  seconds: float = 1.0) -> None:
    """Sleep ``seconds`` per evaluation (every ``train.eval_every`` up to ``train.max_iters``), reporting each."""
    from more.data.classes import class_names

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(f"# light trainer: seed {cfg.train.seed}\n")
    start = int((Path(resume) / "iteration").read_text()) if resume else 0
    rng = random.Random(cfg.train.seed)
    classes = class_names(cfg)
    log(f"light trainer: iterations {start}->{cfg.train.max_iters}")
    every = cfg.train.eval_every
    for it in range(start + every, cfg.train.max_iters + 1, every):
        time.sleep(seconds)
        metrics = evaluation_metrics(rng, classes, it)
        with (run_dir / "metrics.jsonl").open("a") as fh:
            fh.write(json.dumps({"iter": it, "train/loss": metrics["train/loss"],
                                 "time/sec_per_iter": seconds / every}) + "\n")
        ckpt = run_dir / "light_ckpt" / f"iter_{it:06d}"
        ckpt.mkdir(parents=True, exist_ok=True)
        (ckpt / "iteration").write_text(str(it))
        if it + every > cfg.train.max_iters:
            (run_dir / "metrics.json").write_text(json.dumps(metrics))
        report(metrics, str(ckpt))
