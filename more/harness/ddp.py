"""Several processes per trial: the Tune trial runs a Ray Train ``TorchTrainer`` (DDP) and relays rank 0's reports.

Chosen by ``resources.workers`` > 1 in the spec (by default one worker per GPU when ``resources.gpus`` > 1). The
pattern, for Ray 2.60 (Ray Train v2):

* the Tune function trainable (:func:`more.harness.tune_runner.run_trial`) reserves only
  :data:`~more.harness.spec.DDP_DRIVER_CPUS`; the ``TorchTrainer`` it starts reserves ``workers`` x
  (``cpus``, ``gpus / workers``) in its own placement group (``ScalingConfig``), gloo on CPUs, NCCL on GPUs;
* every worker calls :func:`more.train.train` with the same config, run folder and resume checkpoint; the trainer
  sees ``torch.distributed`` and trains with DDP (rank 0 evaluates, writes and reports);
* rank 0's ``report`` and ``log`` go through two small Ray queues to the Tune function, which hands each
  evaluation to the same ``report`` as a one-process trial (MLflow tracker, then ``tune.report`` with the
  trainer's checkpoint folder): every evaluation reaches Tune and MLflow as it happens. Rank 0 waits until Tune
  has taken the report (and copied the checkpoint), as a one-process trial does; when Tune stops the trial
  (stop rule, ASHA) rank 0 is told so and the whole worker group ends.

Ray Train's own ``ray.train.report`` is not used: in Ray 2.60 its Tune bridge (``TuneReportCallback``) forwards
metrics without a Tune checkpoint, and Tune's checkpoint is what retries and ``--resume`` start from. A worker
failure fails the Ray Train run at once (its ``max_failures=0``); Tune then retries the whole trial from its last
checkpoint, as for one process. The checkpoint folders must be readable by the Tune trial's process: true on one
node and on a cluster whose storage is a shared path (``cluster.yaml`` mounts ``~/shared`` on every node).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from more.harness.spec import Resources

REPORT, LOG, GO_ON, STOP = "report", "log", "go on", "stop"
COLLECTIVE_TIMEOUT_S = 4 * 3600  # process-group timeout (Ray's default is 1800 s)


class TrialStopped(Exception):
    """Raised on rank 0 when Tune stopped the trial while rank 0 was reporting; it ends every worker."""


class RankZeroChannel:
    """Rank 0's ``report`` and ``log`` for :func:`more.train.train`, sent to the Tune trial's process."""

    def __init__(self, items: Any, acks: Any) -> None:
        self.items, self.acks = items, acks

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None) -> None:
        self.items.put((REPORT, dict(metrics), checkpoint_dir))
        if self.acks.get() == STOP:
            raise TrialStopped("Tune stopped this trial")

    def log(self, text: str) -> None:
        self.items.put((LOG, text))


def train_worker(config: dict[str, Any]) -> None:
    """The per-worker loop: the same ``train`` call on every rank (Ray Train has set up the process group)."""
    import ray.train

    from more.train import train

    channel: RankZeroChannel = config["channel"]
    main = ray.train.get_context().get_world_rank() == 0
    train(config["cfg"], report=channel.report if main else None, log=channel.log if main else None,
          resume=config["resume"], run_dir=config["run_dir"])


def build_trainer(cfg: Any, resources: Resources, *, run_dir: Path, resume: str | None,
                  channel: RankZeroChannel) -> Any:
    """The ``TorchTrainer`` of one trial (its own state goes to ``<trial folder>/ray_train``)."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    use_gpu = resources.gpus > 0
    return TorchTrainer(
        train_worker,
        train_loop_config={"cfg": cfg, "run_dir": str(run_dir), "resume": resume, "channel": channel},
        scaling_config=ScalingConfig(num_workers=resources.workers, use_gpu=use_gpu,
                                     resources_per_worker=resources.per_worker()),
        # rank 0 evaluates while the others wait in their next collective: allow a long validation pass (COCO)
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo", timeout_s=COLLECTIVE_TIMEOUT_S),
        run_config=RunConfig(name="ray_train", storage_path=str(run_dir.parent.resolve()),
                             failure_config=FailureConfig(max_failures=0)),
    )


def run_ddp_trial(cfg: Any, resources: Resources, *, run_dir: Path, resume: str | None,
                  report: Callable[[dict[str, float], str | None], None], log: Callable[[str], None]) -> None:
    """Train one trial on ``resources.workers`` processes; call ``report``/``log`` here for rank 0's.

    Raises:
        TrainingDiverged: a worker's loss became non-finite (the message of rank 0's error, or the first one's).
        ray.train.TrainingFailedError: any other worker or controller failure.
    """
    from ray.util.queue import Empty, Queue

    items, acks = Queue(actor_options={"num_cpus": 0}), Queue(actor_options={"num_cpus": 0})
    trainer = build_trainer(cfg, resources, run_dir=run_dir, resume=resume, channel=RankZeroChannel(items, acks))
    outcome: dict[str, BaseException] = {}

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as exc:  # noqa: BLE001 -- re-raised in the trial's thread below
            outcome["error"] = exc

    runner = threading.Thread(target=fit, name="ddp-fit", daemon=True)
    runner.start()
    while True:
        try:
            item = items.get(timeout=1.0)
        except Empty:
            if not runner.is_alive():
                break  # rank 0 waits for an answer to every report, so nothing is left behind
            continue
        if item[0] == LOG:
            log(item[1])
            continue
        _, metrics, checkpoint_dir = item
        try:
            if checkpoint_dir and not Path(checkpoint_dir).is_dir():
                raise RuntimeError(
                    f"rank 0 wrote checkpoint {checkpoint_dir} where this trial's process cannot read it (another "
                    f"node); use a storage path shared by all nodes (--storage on NFS, see cluster.yaml)")
            report(metrics, checkpoint_dir)
        except BaseException:
            # Tune stopped the trial (SystemExit) or reporting failed: rank 0 raises TrialStopped and the Ray Train
            # run ends in the background. No waiting here: the trial's MLflow run must be closed before Tune
            # retires this process (the Train run's actors die with it in any case).
            acks.put(STOP)
            raise
        acks.put(GO_ON)
    runner.join()
    if "error" in outcome:
        raise _worker_error(outcome["error"])


def _worker_error(error: BaseException) -> BaseException:
    """A diverged worker surfaces as :class:`TrainingDiverged` (the harness marks it and does not retry it)."""
    from more.train import TrainingDiverged

    failures = getattr(error, "worker_failures", None) or {}
    diverged = [failures[rank] for rank in sorted(failures) if isinstance(failures[rank], TrainingDiverged)]
    if diverged:
        exc = TrainingDiverged(str(diverged[0]))
        exc.__cause__ = error
        return exc
    return error
