"""The parent MLflow run of a launch: one per spec hash, continued by a resumed or repeated launch (driver side)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from more.tracking.runs import LAUNCH, PARENT_TAG, STATUS, find_or_create_run, quoted, search, warn
from more.tracking.store import get_or_create_experiment, make_client, resolve_tracking_uri, runs_page_text
from more.tracking.views import save_trials_view


class LaunchTracker:
    """The parent run of one launch identity (spec hash); a resumed or repeated launch reuses it.

    Attributes:
        run_id: the parent run's id (None when tracking is off), to hand to every trial.
        resumed: True when an existing parent run was found and continued.
    """

    def __init__(self, client: Any, tracking_uri: str, experiment_id: str | None, run_id: str | None, *,
                 resumed: bool = False, strict: bool = False) -> None:
        self.client, self.tracking_uri = client, tracking_uri
        self.experiment_id, self.run_id, self.resumed, self.strict = experiment_id, run_id, resumed, strict

    @property
    def enabled(self) -> bool:
        return self.run_id is not None

    @classmethod
    def start(cls, tracking_uri: str | None, spec_name: str, spec_hash: str, spec_yaml_text: str, git_commit: str,
              *, experiment_name: str | None = None, strict: bool = False) -> LaunchTracker:
        """Find or create the experiment (named ``experiment_name`` or the spec's name) and its parent run.

        Never raises unless ``strict``: an unreachable store gives a disabled tracker (``run_id`` None).
        """
        uri = resolve_tracking_uri(tracking_uri)
        try:
            client = make_client(uri)
            exp_id = get_or_create_experiment(client, experiment_name or spec_name, uri=uri,
                                              tags={"more.spec_name": spec_name})
            tags = {"more.kind": LAUNCH, "more.spec_name": spec_name, "more.spec_hash": spec_hash,
                    "more.git_commit": git_commit}
            where = f"tags.`more.kind` = '{LAUNCH}' and tags.`more.spec_hash` = {quoted(spec_hash)}"
            run, created = find_or_create_run(client, exp_id, where, run_name=f"{spec_name}-{spec_hash}", tags=tags)
            run_id = run.info.run_id
            if not created:
                client.update_run(run_id, status="RUNNING")
                client.set_tag(run_id, "more.git_commit", git_commit)
            client.log_text(run_id, spec_yaml_text, "spec.yaml")
        except Exception as exc:  # noqa: BLE001 -- tracking must not stop a launch
            if strict:
                raise
            warn(f"MLflow at {uri} unavailable, launch not tracked: {type(exc).__name__}: {exc}")
            return cls(None, uri, None, None)
        return cls(client, uri, exp_id, run_id, resumed=not created, strict=strict)

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self.enabled:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            if self.strict:
                raise
            warn(f"MLflow: {what} failed: {type(exc).__name__}: {exc}")
            return None

    def log_text(self, text: str, artifact_file: str) -> None:
        self._call(f"logging {artifact_file}", self.client.log_text, self.run_id, text, artifact_file)

    def log_results(self, *, markdown: str, csv: str, json_text: str | None = None) -> None:
        """The results table as ``results.md`` / ``results.csv`` (and ``results.json``) on the parent run."""
        self.log_text(markdown, "results.md")
        self.log_text(csv, "results.csv")
        if json_text is not None:
            self.log_text(json_text, "results.json")

    def log_dir(self, local_dir: str | os.PathLike, artifact_path: str = "report") -> None:
        """A folder of files (e.g. the report) under ``artifact_path`` of the parent run."""
        self._call(f"logging {local_dir}", self.client.log_artifacts, self.run_id, str(local_dir), artifact_path)

    def trial_runs(self) -> list[Any]:
        """The child runs of this launch, oldest first."""
        if not self.enabled:
            return []
        return search(self.client, self.experiment_id, f"tags.`{PARENT_TAG}` = {quoted(self.run_id)}")

    def listed_trial_runs(self) -> list[Any]:
        """:meth:`trial_runs`, with a tracking failure reported as a warning (an empty list then)."""
        return self._call("listing the trial runs", self.trial_runs) or []

    def close_orphans(self, outcomes: dict[str, tuple[str, str]], runs: list[Any] | None = None) -> list[str]:
        """End the child runs that Tune finished but whose trial process did not live to end them.

        Tune stops a trial (stop rule, scheduler, end of the experiment) by tearing its process down while the
        trial ends its run, and a lost node takes the process with it: such a run can stay RUNNING. The driver
        knows every trial's outcome, so it ends those runs here.

        Args:
            outcomes: ``{trial key: (Tune status, error summary)}`` of the launch's trials; only TERMINATED and
                ERROR trials are closed (FINISHED, or FAILED with ``more.error``), others are left as they are.
            runs: the launch's trial runs when the caller has just listed them (else they are listed here).

        Returns:
            The keys of the runs it ended (each tagged ``more.closed_by=driver``).
        """
        closed = []
        for run in self.listed_trial_runs() if runs is None else runs:
            key = run.data.tags.get("more.trial_key", "")
            status, error = outcomes.get(key, ("", ""))
            if run.info.status != "RUNNING" or status not in ("TERMINATED", "ERROR"):
                continue
            if status == "ERROR" and error:
                self._call("tagging an orphan run", self.client.set_tag, run.info.run_id, "more.error", error[:5000])
            self._call("tagging an orphan run", self.client.set_tag, run.info.run_id, "more.closed_by", "driver")
            self._call("ending an orphan run", self.client.set_terminated, run.info.run_id, STATUS[status])
            closed.append(key)
        return closed

    def finish(self, status: str = "FINISHED") -> None:
        self._call("ending the launch run", self.client.set_terminated, self.run_id, STATUS.get(status, status))

    def runs_page(self) -> str:
        """The line that says where the experiment's runs table is in the MLflow UI ("" when tracking is off), in
        the saved view that lists the trials with the spec's metric (more/tracking/views.py) when it can be saved."""
        if not self.enabled:
            return ""
        view = self._call("saving the runs page's trials view", save_trials_view, self.client, self.experiment_id,
                          self.run_id)
        return runs_page_text(self.tracking_uri, self.experiment_id, view)
