"""What the MLflow runs of an ablation look like, and how a run is found or created exactly once.

One parent (launch) run per spec hash (:mod:`more.tracking.launch_run`), one child run per trial
(:mod:`more.tracking.trial_run`); this module holds what both share: the tag schema, the trial key, the flat params,
error texts and :func:`find_or_create_run`.

Run creation is idempotent. A ``create_run`` whose answer is lost (a timeout, a server killed mid-request) may still
have created the run (mlflow#8238: "ghost runs"), and creating it again would leave two runs of one trial. So every
run is found by a key the client chooses (``more.trial_key``, or the launch's spec hash) before and after it is
created; when several runs carry the same key, the oldest (start time, then run id) is the run, and the others are
tagged ``more.duplicate_of`` and deleted (soft: ``mlflow gc`` or the UI can still restore them).
"""

from __future__ import annotations

import json
import sys
import traceback
import uuid
import warnings
from collections.abc import Callable
from typing import Any

Report = Callable[[dict[str, float], "str | None"], None]
LAUNCH, TRIAL = "launch", "trial"
PARENT_TAG = "mlflow.parentRunId"
LOGGED_THROUGH = "more.logged_through"  # the last evaluation whose metrics (and metrics.jsonl records) are logged
REUSED_BY_TAG = "more.reused_by."  # + <spec hash>, on a trial run a later launch reused (harness.growth)
OPEN_TOKEN = "more.open_token"  # a fresh id per create_run call: tells a run this process created from a ghost
DUPLICATE_OF = "more.duplicate_of"
PARAMS_PER_CALL, TAGS_PER_CALL, METRICS_PER_CALL = 100, 100, 1000
ERROR_CHARS = 5000
PICTURE_BUDGET = 0.03  # pictures are skipped while tracking would take more than this share of the trial's time
STATUS = {"TERMINATED": "FINISHED", "ERROR": "FAILED", "FINISHED": "FINISHED", "FAILED": "FAILED", "KILLED": "KILLED"}


def trial_key(spec_hash: str, trial_name: str) -> str:
    """The identity of a trial across retries and resumes: ``<spec hash>:<trial name>``."""
    return f"{spec_hash}:{trial_name}"


def trial_tags(*, spec_name: str, spec_hash: str, trial_name: str, condition: str, seed: int,
               sweep: dict[str, Any] | None, overrides: dict[str, Any], git_commit: str, fidelity: str,
               device: str, ray_trial_id: str = "", checkpoint: str = "last") -> dict[str, str]:
    """The tags of a child run (``mlflow.parentRunId`` is added by :meth:`TrialTracker.open`)."""
    return {
        "more.kind": TRIAL, "more.trial_key": trial_key(spec_hash, trial_name), "more.condition": condition,
        "more.seed": str(seed), "more.spec_name": spec_name, "more.spec_hash": spec_hash,
        "more.sweep": json.dumps(sweep or {}, sort_keys=True, default=str),
        "more.overrides": json.dumps(overrides, sort_keys=True, default=str), "more.git_commit": git_commit,
        "more.fidelity": fidelity, "more.device": device, "more.ray_trial_id": ray_trial_id,
        "more.checkpoint": checkpoint,
    }


def flat_params(cfg: Any) -> dict[str, str]:
    """The resolved config as MLflow params: dotted keys, values stringified (lists as ``[1.0, 0.5]``)."""
    from more.config import to_flat

    return {key: str(value) for key, value in to_flat(cfg).items()}


def error_text(error: BaseException | str | None) -> str:
    """``Type: message`` then the traceback, cut to the schema's 5000 characters."""
    if error is None:
        return ""
    if isinstance(error, BaseException):
        head = f"{type(error).__name__}: {error}"
        tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        text = head + ("\n\n" + tb if error.__traceback__ else "")
    else:
        text = str(error)
    return text[:ERROR_CHARS]


def quoted(value: str) -> str:
    """A tag value as a ``search_runs`` filter literal."""
    if "'" in value or "\\" in value:
        raise ValueError(f"tag value {value!r} cannot be searched: it contains a quote or backslash")
    return f"'{value}'"


def search(client: Any, experiment_id: str, where: str) -> list[Any]:
    """Active runs of one experiment matching ``where``, oldest first."""
    return list(client.search_runs([experiment_id], filter_string=where, max_results=1000,
                                   order_by=["attributes.start_time ASC"]))


def search_all(client: Any, experiment_id: str, where: str) -> list[Any]:
    """Every active run of one experiment matching ``where`` (page after page)."""
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string=where, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def warn(text: str) -> None:
    warnings.warn(text, RuntimeWarning, stacklevel=3)
    print(f"[more.tracking] {text}", file=sys.stderr, flush=True)


def find_or_create_run(client: Any, experiment_id: str, where: str, *, run_name: str,
                       tags: dict[str, str]) -> tuple[Any, bool]:
    """The one active run matching ``where`` (a filter on a key the caller chose), created with ``tags`` if none.

    Returns:
        ``(run, created)``: the run (duplicates resolved, see the module docstring) and whether this call made it.

    Raises:
        Exception: what the client raised when the store cannot be reached (nothing was created then, or the
        created run is found by the next call).
    """
    found = search(client, experiment_id, where)
    if found:
        return settle(client, found), False
    token = uuid.uuid4().hex
    try:
        client.create_run(experiment_id, run_name=run_name, tags={**tags, OPEN_TOKEN: token})
    except Exception:
        # the answer was lost, not necessarily the run: look for it before anyone creates a second one
        found = search(client, experiment_id, where)
        if not found:
            raise
    else:
        found = search(client, experiment_id, where)
    run = settle(client, found)
    return run, run.data.tags.get(OPEN_TOKEN) == token


def settle(client: Any, runs: list[Any]) -> Any:
    """The oldest of several runs with one key (start time, then run id); the others are marked and deleted."""
    keep = min(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))
    for run in runs:
        if run.info.run_id != keep.info.run_id:
            client.set_tag(run.info.run_id, DUPLICATE_OF, keep.info.run_id)
            client.delete_run(run.info.run_id)
            warn(f"run {run.info.run_id} duplicated run {keep.info.run_id} (a create_run retried after a lost "
                 f"answer, or two openers at once): deleted, tagged {DUPLICATE_OF}")
    return keep
