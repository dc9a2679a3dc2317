"""The driver's reconciliation: after a launch, bring every trial's MLflow run up to its run folder.

A trial sends its own evaluations in the background (:mod:`more.tracking.trial_run`), but a store that was down when
the trial ended, or a trial process that died (a lost node) before its sender caught up, leaves the run behind its
run folder. :func:`reconcile` walks the experiment folder's trial run folders (``<experiment>/<trial>/run``), reads
each outbox (:mod:`more.tracking.outbox`) and sends what the run lacks: the run itself if it was never created, the
evaluations after its ``more.logged_through``, their files, and the end of an attempt that ended. It never reopens a
run and never ends one whose attempt did not record its end (the driver's :meth:`LaunchTracker.close_orphans` does,
from Tune's outcomes). The launch's runs are listed once (one paged search per parent run); a run that holds
everything its outbox asks for costs no further call.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from more.tracking.outbox import OUTBOX, OutboxState, pending_steps, read_outbox
from more.tracking.runs import LOGGED_THROUGH, PARENT_TAG, quoted, search_all
from more.tracking.store import make_client, resolve_tracking_uri
from more.tracking.sync import ATTEMPTS_TAG, CHECKPOINT_TAG, RunSync


@dataclass
class Reconciled:
    """What :func:`reconcile` found and did."""

    folders: int = 0  # trial run folders with an outbox
    created: int = 0  # runs that did not exist
    evaluations: int = 0  # evaluations sent
    ended: int = 0  # runs whose status was set from the outbox
    failed: dict[str, str] = field(default_factory=dict)  # run folder -> why it could not be reconciled
    elsewhere: dict[str, int] = field(default_factory=dict)  # another store's URI -> its trial folders (skipped)

    def text(self) -> str:
        """One line for the launch's output ("" when there was nothing to do)."""
        if not (self.created or self.evaluations or self.ended or self.failed):
            return ""
        line = (f"MLflow reconciled from {self.folders} trial folders: {self.created} runs created, "
                f"{self.evaluations} evaluations sent, {self.ended} runs ended")
        if self.failed:
            first = next(iter(self.failed.items()))
            line += (f"; {len(self.failed)} could not be reconciled (e.g. {first[0]}: {first[1]}): run the same "
                     f"`ablate` command again once MLflow answers (nothing is trained again; the runs are caught up "
                     f"from the run folders)")
        return line

    def elsewhere_text(self) -> str:
        """A note for trial folders tracked into another store than this call's ("" when there were none)."""
        from more.database import redact

        return "".join(f"note: {n} trial folders were tracked into {redact(uri)}: pass --tracking-uri with that store "
                       f"to check their MLflow runs against the run folders\n" for uri, n in self.elsewhere.items())


def trial_folders(experiment_folder: str | os.PathLike) -> list[Path]:
    """The trial run folders of an experiment folder that hold an outbox, in name order."""
    root = Path(experiment_folder)
    return sorted(p.parent.parent for p in root.glob(f"*/run/{OUTBOX}"))


def reconcile(tracking_uri: str | None, experiment_folder: str | os.PathLike, *,
              same_store: bool = False) -> Reconciled:
    """Bring the MLflow runs of every trial under ``experiment_folder`` up to their run folders' outboxes.

    Args:
        tracking_uri: the store the launch tracked into (None: ``$MLFLOW_TRACKING_URI`` or the embedded default).
        experiment_folder: ``<storage>/<spec name>-<spec hash>`` on a local or shared filesystem.
        same_store: only the trial folders whose runs were opened in ``tracking_uri`` (a later command that may name
            another store than the launch did); the others are counted in ``elsewhere``.

    Returns:
        What it did; a trial whose run cannot be reached is listed in ``failed`` (it stays as it is, and a later
        reconciliation can still fill it in: every step is safe to repeat).
    """
    result = Reconciled()
    states = [(folder, read_outbox(folder)) for folder in trial_folders(experiment_folder)]
    states = [(folder, state) for folder, state in states if state.opening is not None]
    uri = resolve_tracking_uri(tracking_uri)
    if same_store:
        for _, state in states:
            if state.opening.uri != uri:
                result.elsewhere[state.opening.uri] = result.elsewhere.get(state.opening.uri, 0) + 1
        states = [(folder, state) for folder, state in states if state.opening.uri == uri]
    result.folders = len(states)
    if not states:
        return result
    try:
        client = make_client(uri)
        experiments: dict[str, str] = {}  # parent run id -> experiment id, shared by the folders' syncers
        runs = _child_runs(client, {state.opening.parent for _, state in states}, experiments)
    except Exception as exc:  # noqa: BLE001 -- reported like an unreachable run
        result.failed[str(experiment_folder)] = f"{type(exc).__name__}: {str(exc)[:200]}"
        return result
    for folder, state in states:
        found = runs.get(state.opening.trial_key, [])
        if len(found) == 1 and _complete(found[0], state, folder):
            continue  # the common case after a healthy launch: no call at all
        sync = RunSync(client, folder, live=False, experiments=experiments)
        try:
            counts = sync.sync(state)
        except Exception as exc:  # noqa: BLE001 -- one unreachable run must not stop the others
            result.failed[str(folder)] = f"{type(exc).__name__}: {str(exc)[:200]}"
            continue
        result.created += int(counts.created)
        result.evaluations += counts.evaluations
        result.ended += int(counts.ended)
    return result


def _child_runs(client: Any, parents: set[str], experiments: dict[str, str]) -> dict[str, list[Any]]:
    """``{trial key: [runs]}`` of every child run of ``parents``: one paged search per parent."""
    runs: dict[str, list[Any]] = {}
    for parent in parents:
        experiments[parent] = client.get_run(parent).info.experiment_id
        for run in search_all(client, experiments[parent], f"tags.`{PARENT_TAG}` = {quoted(parent)}"):
            runs.setdefault(run.data.tags.get("more.trial_key", ""), []).append(run)
    return runs


def _complete(run: Any, state: OutboxState, folder: Path) -> bool:
    """The run holds everything the outbox asks for (then the folder costs no call)."""
    tags = run.data.tags
    if int(tags.get(LOGGED_THROUGH, "0") or 0) < max(state.evaluations, default=0) or pending_steps(folder):
        return False
    if int(tags.get(ATTEMPTS_TAG, "0") or 0) < state.attempts or len(run.data.params) < len(state.opening.params):
        return False
    ending = state.ending
    if ending is None:
        return True
    checkpoint = Path(ending.checkpoint).name if ending.checkpoint and Path(ending.checkpoint).is_dir() else None
    return (run.info.status == ending.status and tags.get("more.error", "") == ending.error
            and (checkpoint is None or tags.get(CHECKPOINT_TAG) == checkpoint))
