"""A light stand-in for ``more.train.train`` (no torch, no data): it sleeps, writes the records and checkpoint
folders a real run folder has, and reports an evaluation every ``train.eval_every`` iterations, so tests run the
real harness (identity, tracking, claims, Tune, reuse, publishing) in seconds.

The reported score is ``100 - 10 * train.seed - 20 * lir.cre_weight + iter / 100``: seeds and conditions differ, and
later evaluations score higher (what ASHA compares)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def score(cfg: Any, iteration: int) -> float:
    return 100.0 - 10.0 * cfg.train.seed - 20.0 * cfg.lir.cre_weight + iteration / 100.0


def light_train(cfg: Any, *, report: Any, resume: str | None = None, run_dir: str | Path, log: Any,
                sleep_s: float = 0.05) -> None:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    start = int((Path(resume) / "iteration").read_text()) if resume else 0
    log(f"light trainer: iterations {start}->{cfg.train.max_iters}")
    every = cfg.train.eval_every
    for it in range(start + every, cfg.train.max_iters + 1, every):
        time.sleep(sleep_s)
        with (run_dir / "metrics.jsonl").open("a") as fh:
            fh.write(json.dumps({"iter": it, "train/loss": 1.0 / it, "time/sec_per_iter": sleep_s / every}) + "\n")
        ckpt = run_dir / "light_ckpt" / f"iter_{it:06d}"
        ckpt.mkdir(parents=True, exist_ok=True)
        (ckpt / "iteration").write_text(str(it))
        metrics = {"iter": float(it), "val/cls_f1": score(cfg, it), "val/seg/miou": score(cfg, it) / 2}
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        report(metrics, str(ckpt))
