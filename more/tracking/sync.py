"""Bring one trial's MLflow run up to its outbox (:mod:`more.tracking.outbox`), any number of times, exactly.

:meth:`RunSync.sync` finds or creates the run (:func:`more.tracking.runs.find_or_create_run`), logs the attempt's
params, tags and ``config.yaml``, sends every evaluation the run does not hold yet (its tag ``more.logged_through``
says which), uploads the evaluations' files and ends the run once the attempt has ended. It is called by the trial's
background sender (:mod:`more.tracking.sender`) after each evaluation and after each failure, and by the driver's
reconciliation (:mod:`more.tracking.reconcile`).

Why a resend never logs a step twice: every metric of an evaluation is sent with the key, step, value and timestamp
the outbox recorded (the timestamp is the moment of the report, not of the send), and MLflow's SQL stores keep one
row per ``(run, key, step, timestamp, value)``: a batch that had landed before its answer was lost is recognised row
by row and not stored again. ``more.logged_through`` goes in the last call of an evaluation, so a partly sent
evaluation is sent again as a whole (the same rows).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from more.tracking.outbox import (
    Ending,
    Evaluation,
    OutboxState,
    drop_pending,
    jsonl_records,
    pending_dir,
    pending_steps,
)
from more.tracking.runs import (
    LOGGED_THROUGH,
    METRICS_PER_CALL,
    PARAMS_PER_CALL,
    PARENT_TAG,
    TAGS_PER_CALL,
    chunks,
    find_or_create_run,
    quoted,
    warn,
)

ATTEMPTS_TAG = "more.attempts"
CHECKPOINT_TAG = "more.checkpoint_logged"  # the checkpoint folder uploaded at the end (``log_checkpoint``)


@dataclass
class RunState:
    """What a syncer knows of the run in the store (filled by its first successful pass)."""

    run_id: str | None = None
    opened: bool = False  # this syncer has logged the attempt's params, tags and config
    created: bool = False
    logged_through: int = 0
    floor: int | None = None  # ``logged_through`` when first found: metrics.jsonl records at or below it are logged
    attempts: int = 0
    status: str = ""
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class SyncCounts:
    """What one pass sent."""

    evaluations: int = 0
    created: bool = False
    ended: bool = False
    opened: bool = False


def metric_batch(evaluation: Evaluation, records: list[dict[str, Any]]) -> list[Any]:
    """The metrics of one evaluation, in a fixed order: the ``metrics.jsonl`` records since the previous evaluation,
    then the evaluation's own metrics (which win on the same key and step) and the tracking time so far; every value
    carries the evaluation's report time as its timestamp."""
    from mlflow.entities import Metric

    values: dict[tuple[str, int], float] = {}
    for record in records:
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values[(key, int(record["iter"]))] = float(value)
    for key, value in evaluation.metrics.items():
        values[(key, evaluation.step)] = float(value)
    values[("time/tracking_sec", evaluation.step)] = float(evaluation.tracking_sec)
    return [Metric(key, value, evaluation.time_ms, step) for (key, step), value in sorted(values.items())]


class RunSync:
    """Syncs the outbox of one trial folder into its run; keeps what it learnt of the run between passes.

    Args:
        client: an ``MlflowClient``.
        folder: the folder holding ``tracking/`` (and the trainer's ``metrics.jsonl`` and ``train.log``).
        live: the attempt is running in this process: a run that an earlier attempt ended is set RUNNING again and
            its ``more.error`` removed. The driver's reconciliation is not live: it never reopens a run.
    """

    def __init__(self, client: Any, folder: Path, *, live: bool, experiments: dict[str, str] | None = None) -> None:
        self.client, self.folder, self.live = client, Path(folder), live
        self._experiments = {} if experiments is None else experiments  # parent run id -> experiment id
        self.run = RunState()
        self._warned_params = False
        self._end_done = False

    def sync(self, state: OutboxState) -> SyncCounts:
        """One pass; raises what the client raises (the caller retries: every step is safe to repeat)."""
        counts = SyncCounts()
        if state.opening is None:
            return counts
        if not self.run.opened:
            self._open(state)
            counts.opened, counts.created = True, self.run.created
        counts.evaluations = self._send_evaluations(state)
        self._upload_pending()
        if counts.evaluations:
            self._upload_log()
        if state.ending is not None and self._end(state.ending):
            counts.ended = True
        return counts

    # -------------------------------------------------------------------------------------------- opening

    def _open(self, state: OutboxState) -> None:
        opening = state.opening
        assert opening is not None
        client = self.client
        experiment_id = self._experiments.get(opening.parent)
        if experiment_id is None:
            experiment_id = self._experiments[opening.parent] = client.get_run(opening.parent).info.experiment_id
        tags = {**opening.tags, "more.trial_key": opening.trial_key, PARENT_TAG: opening.parent}
        run, created = find_or_create_run(client, experiment_id, f"tags.`more.trial_key` = {quoted(opening.trial_key)}",
                                          run_name=opening.run_name, tags=tags)
        run_id, known_tags = run.info.run_id, dict(run.data.tags)
        if self.run.attempts == 0:  # once per syncer: a pass repeated after a lost answer must not count again
            before = int(known_tags.get(ATTEMPTS_TAG, "0") or 0)
            self.run.attempts = max(state.attempts, before + 1 if self.live and not created else before, 1)
        tags[ATTEMPTS_TAG] = str(self.run.attempts)
        status = run.info.status
        if self.live and state.ending is None:
            if status != "RUNNING":
                client.update_run(run_id, status="RUNNING")
                status = "RUNNING"
            if "more.error" in known_tags:
                client.delete_tag(run_id, "more.error")
                known_tags.pop("more.error")
        params = dict(opening.params)
        known_params = dict(run.data.params)
        changed = sorted(k for k, v in params.items() if k in known_params and known_params[k] != v)
        if changed and not self._warned_params:
            self._warned_params = True
            warn(f"run {run_id}: the config differs from the tracked params for {', '.join(changed)}; "
                 f"the first values are kept")
        new = {k: v for k, v in params.items() if k not in known_params}
        if created or new or any(known_tags.get(k) != v for k, v in tags.items()):
            if opening.config_yaml:
                client.log_text(run_id, opening.config_yaml, "config.yaml")
            self._log_params_and_tags(run_id, new, tags)
            known_tags.update(tags)
        self.run = RunState(run_id=run_id, opened=True, created=created,
                            logged_through=int(known_tags.get(LOGGED_THROUGH, "0") or 0), attempts=self.run.attempts,
                            status=status, tags=known_tags)
        self.run.floor = self.run.logged_through

    def _log_params_and_tags(self, run_id: str, params: dict[str, str], tags: dict[str, str]) -> None:
        """Params first, tags in the last calls with ``more.attempts`` last of all: a run whose tags all match has
        its params and config (a reconciliation then skips it)."""
        from mlflow.entities import Param, RunTag

        ordered = [RunTag(k, v) for k, v in tags.items() if k != ATTEMPTS_TAG]
        ordered.append(RunTag(ATTEMPTS_TAG, tags[ATTEMPTS_TAG]))
        param_parts = chunks([Param(k, v) for k, v in params.items()], PARAMS_PER_CALL) or [[]]
        tag_parts = chunks(ordered, TAGS_PER_CALL)
        for part in param_parts[:-1]:
            self.client.log_batch(run_id, params=part)
        self.client.log_batch(run_id, params=param_parts[-1], tags=tag_parts[0])
        for part in tag_parts[1:]:
            self.client.log_batch(run_id, tags=part)

    # ----------------------------------------------------------------------------------------- evaluations

    def _send_evaluations(self, state: OutboxState) -> int:
        from mlflow.entities import RunTag

        sent, previous = 0, 0
        floor = self.run.floor or 0
        for step in sorted(state.evaluations):
            lower, previous = max(previous, floor), step
            if step <= self.run.logged_through:
                continue
            evaluation = state.evaluations[step]
            batch = metric_batch(evaluation, jsonl_records(self.folder, lower, step))
            parts = chunks(batch, METRICS_PER_CALL - 1)
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                self.client.log_batch(self.run.run_id, metrics=part,
                                      tags=[RunTag(LOGGED_THROUGH, str(step))] if last else ())
            self.run.logged_through = step
            sent += 1
        return sent

    def _upload_pending(self) -> None:
        """The files of every evaluation whose metrics are logged (then removed from the folder)."""
        for step in pending_steps(self.folder):
            if step > self.run.logged_through:
                break
            folder = pending_dir(self.folder, step)
            if any(folder.iterdir()):
                self.client.log_artifacts(self.run.run_id, str(folder))
            drop_pending(self.folder, step)

    def _upload_log(self) -> None:
        log = self.folder / "train.log"
        if log.is_file():
            self.client.log_artifact(self.run.run_id, str(log))

    # --------------------------------------------------------------------------------------------- ending

    def _end(self, ending: Ending) -> bool:
        """End the run as the attempt ended (quick tags and status first, then the log and the checkpoint: a trial's
        process may be torn down while they upload, and files can be added to an ended run). Returns whether the
        status changed."""
        if self._end_done:
            return False
        client, run_id = self.client, self.run.run_id
        changed = self.run.status != ending.status or self.run.tags.get("more.error", "") != ending.error
        if changed:
            if ending.error:
                client.set_tag(run_id, "more.error", ending.error)
            if ending.pictures_skipped:
                client.set_tag(run_id, "more.pictures_skipped", str(ending.pictures_skipped))
            client.set_terminated(run_id, status=ending.status)
            self.run.status = ending.status
            self.run.tags["more.error"] = ending.error
        if changed or self.live:
            self._upload_log()
        checkpoint = Path(ending.checkpoint) if ending.checkpoint else None
        if checkpoint is not None and checkpoint.is_dir() and self.run.tags.get(CHECKPOINT_TAG) != checkpoint.name:
            client.log_artifacts(run_id, str(checkpoint), f"checkpoint/{checkpoint.name}")
            client.set_tag(run_id, CHECKPOINT_TAG, checkpoint.name)
            self.run.tags[CHECKPOINT_TAG] = checkpoint.name
        self._end_done = True
        return changed
