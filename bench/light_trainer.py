"""A light trainer for the harness benchmarks: the real harness (trial adapter, identity, tracking into MLflow, Tune,
claims, reuse, publishing) around a trainer that only sleeps, so the harness's own costs stand out.

Pass it to :func:`more.harness.launch` as ``trainer=functools.partial(light_trainer, seconds=T)``. Like
:func:`more.train.train` it writes ``config.yaml`` first, a ``metrics.jsonl`` record and a checkpoint folder per
evaluation, ``metrics.json`` at the last one, and reports every evaluation with about 60 metrics named as the
trainer's (means and per-class values of each output, losses, timing). No torch, no data.

With ``picture=True`` the last evaluation also carries a picture grid (``more.tracking.pictures``, drawn from
synthetic maps: the real tracker draws it from the checkpoint, which needs the model) staged where the trial tracker
stages its own, so it is uploaded with that evaluation. ``light_slot.json`` in the run folder names the slot the trial
ran on (Ray node, GPU ids, process), for the per-slot gap of ``bench_scale.py``. When ``$MORE_BENCH_CALLS_DIR`` is
set, the process's MLflow calls are timed (``bench/call_timing.py``): Ray ships this function by value, and the
reference to ``call_timing`` in its body makes a trial process import that module, which installs the timing, when
it unpickles the trainable, before its tracker opens.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

from call_timing import install_from_env

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


def slot() -> dict[str, Any]:
    """The Ray node, GPU ids and process this trial runs in (empty outside Ray)."""
    try:
        import ray

        if not ray.is_initialized():
            return {}
        return {"node": ray.get_runtime_context().get_node_id(), "gpus": [str(g) for g in ray.get_gpu_ids()],
                "pid": os.getpid()}
    except Exception:  # noqa: BLE001  (a measurement aid: never fail the trial over it)
        return {}


def picture_png(classes: list[str], seed: int, size: int = 64) -> bytes:
    """A picture grid of two rows (image | GT | CAM | LAM | seg) drawn from seeded random maps."""
    import numpy as np

    from more.tracking.pictures import PictureRow, encode_png, picture_grid

    gen = np.random.default_rng(seed)
    rows = [PictureRow(image=gen.integers(0, 256, (size, size, 3), dtype=np.uint8),
                       gt=gen.integers(0, len(classes), (size, size)), cam=gen.random((size, size)),
                       lam=gen.random((size, size)), seg=gen.integers(0, len(classes), (size, size)), name=f"img{i}")
            for i in range(2)]
    return encode_png(picture_grid(rows, tile=size, class_names=classes))


def light_trainer(cfg: Any, *, report: Any, resume: str | None = None, run_dir: str | Path, log: Any,
                  seconds: float = 1.0, picture: bool = False) -> None:
    """Sleep ``seconds`` per evaluation (every ``train.eval_every`` up to ``train.max_iters``), reporting each; with
    ``picture``, the last evaluation carries a picture grid."""
    from more.data.classes import class_names
    from more.tracking.outbox import OUTBOX, pending_dir

    install_from_env()  # done at import already (see the module docstring); this line makes the import happen
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(f"# light trainer: seed {cfg.train.seed}\n")
    (run_dir / "light_slot.json").write_text(json.dumps(slot()))
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
        last = it + every > cfg.train.max_iters
        if last and picture and (run_dir / OUTBOX).is_file():  # tracked: staged as the tracker stages its own
            folder = pending_dir(run_dir, it) / "pictures"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"iter_{it:06d}.png").write_bytes(picture_png(classes, cfg.train.seed))
        if last:
            (run_dir / "metrics.json").write_text(json.dumps(metrics))
        report(metrics, str(ckpt))


def rss_mb() -> float:
    """This process's resident memory in MB (``VmRSS``), NaN where /proc is absent."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class RssSampler:
    """Writes ``seconds,trials_done,rss_mb`` to a CSV every ``every`` seconds in a daemon thread, ``trials_done``
    counted as the finished run folders (``metrics.json``) under ``storage``; :meth:`stop` ends it."""

    def __init__(self, samples: str | Path, storage: str | Path, every: float) -> None:
        import threading

        self._samples, self._storage, self._every = Path(samples), Path(storage), every
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self._samples.open("w") as fh:
            fh.write("seconds,trials_done,rss_mb\n")
            while not self._stop.wait(self._every):
                done = sum(1 for _ in self._storage.glob("*/*/run/metrics.json"))
                fh.write(f"{time.monotonic() - self._t0:.2f},{done},{rss_mb():.1f}\n")
                fh.flush()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
