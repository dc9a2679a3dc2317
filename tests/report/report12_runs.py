"""Write infer runs (``more.kind=infer``) and authors' runs (``more.kind=authors``) into a test MLflow store with the
tags and metrics the contracts name, as ``more infer`` and ``more import-log`` log them (no inference here)."""

from __future__ import annotations

import json
import time
from typing import Any

OUTPUT_NAMES = ("seeds", "masks", "seg_raw", "seg_crf", "cam2seg", "cam2seg_crf")


def log_infer(tracking: Any, exp_id: str, *, train_run_id: str, spec_name: str, digest: str, condition: str,
              seed: int, task: str, split: str = "train", source: str = "cam", crf: bool = False,
              multiscale: bool = False, scales: list[float] | None = None, values: dict[str, float] | None = None,
              iteration: int = 2000, dataset: str = "synthetic", status: str = "FINISHED",
              start_time: int | None = None, classes: dict[str, dict[str, float]] | None = None) -> str:
    """One infer run; ``values`` maps an output (seeds, masks, seg_raw, ...) to its mIoU (%), logged at
    ``step=iteration`` with precision/recall/confusion derived from it (none: a split without ground truth)."""
    from mlflow.entities import Metric

    scales = scales or [1.0]
    tags = {
        "more.kind": "infer", "more.infer.key": f"{train_run_id}-{task}-{source}-{split}-{crf}-{multiscale}-{scales}",
        "more.infer.task": task, "more.infer.source": "seg" if task == "seg" else source, "more.infer.split": split,
        "more.infer.multiscale": str(multiscale).lower(), "more.infer.scales": json.dumps(scales),
        "more.infer.crf": str(crf or task == "masks").lower(), "more.infer.out": f"/tmp/infer/{task}_{split}",
        "more.infer.checkpoint": f"/tmp/run/checkpoints/iter_{iteration:06d}/model.pt",
        "more.infer.iteration": str(iteration), "more.dataset": dataset, "more.train_run_id": train_run_id,
        "more.spec_name": spec_name, "more.spec_hash": digest, "more.condition": condition, "more.seed": str(seed),
    }
    start = start_time if start_time is not None else int(time.time() * 1000)
    run = tracking.client.create_run(exp_id, start_time=start, tags=tags, run_name=f"infer-{task}-{condition}-s{seed}")
    now = int(time.time() * 1000)
    metrics = []
    for output, miou in (values or {}).items():
        metrics += [Metric(f"infer/{output}/miou", miou, now, iteration),
                    Metric(f"infer/{output}/precision", miou + 5.0, now, iteration),
                    Metric(f"infer/{output}/recall", miou + 10.0, now, iteration),
                    Metric(f"infer/{output}/confusion", 0.25, now, iteration)]
        for cls, iou in (classes or {}).get(output, {}).items():
            metrics.append(Metric(f"infer/{output}/iou/{cls}", iou, now, iteration))
    if values:
        metrics.append(Metric("infer/images", 12.0, now, iteration))
    tracking.client.log_batch(run.info.run_id, metrics=metrics)
    tracking.client.set_terminated(run.info.run_id, status=status)
    return run.info.run_id


def log_authors(tracking: Any, exp_id: str, *, spec_name: str, digest: str, evals: dict[int, dict[str, float]],
                condition: str = "more", log: str = "voc_train.log", dataset: str = "voc",
                start_time: int | None = None) -> str:
    """One authors' run: ``evals`` maps an iteration to the ``val/<output>/*`` / ``train/*`` metrics at that step."""
    from mlflow.entities import Metric

    tags = {"more.kind": "authors", "more.spec_name": spec_name, "more.spec_hash": digest,
            "more.condition": condition, "more.seed": "0", "more.dataset": dataset, "more.authors_log": log}
    start = start_time if start_time is not None else int(time.time() * 1000)
    stem = log.rsplit(".", 1)[0]
    run = tracking.client.create_run(exp_id, start_time=start, tags=tags, run_name=f"authors-{stem}")
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, step) for step, values in evals.items() for k, v in values.items()]
    tracking.client.log_batch(run.info.run_id, metrics=metrics)
    tracking.client.set_terminated(run.info.run_id, status="FINISHED")
    return run.info.run_id
