"""The authors' training log as an MLflow run in a spec's experiment, beside our trial runs (``more import-log``).

One run per (log, spec, condition), tagged ``more.kind=authors``; its metrics carry our names (see
:mod:`more.tracking.authors_log`) at step = iteration with the log's own timestamps, so the MLflow compare view
overlays its curves on ours and ``report`` can add an "authors' run" row. Importing again continues the same run and
logs only the (metric, step) points it does not hold yet: a log imported while truncated and again when complete
ends up as one run with every point once.

Tags: ``more.kind=authors``, ``more.spec_name``, ``more.spec_hash``, ``more.condition``, ``more.seed`` (from the
log's args line when present), ``more.dataset``, ``more.authors_log`` (the file's name), ``more.authors_key`` (what
identifies the log: a hash of its args line, which names the authors' run folder and its start time; of the file
name without one), ``more.authors_last_iter``, ``mlflow.runName`` ``authors-<file stem>``. The args are params
``authors.<name>``; the log file itself is an artifact under ``authors_log/``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from more.tracking.authors_log import AuthorsLog, LogFormatError, metric_points, read_log, skipped_columns
from more.tracking.store import get_or_create_experiment, make_client, resolve_tracking_uri, runs_page_text

KIND = "authors"
BATCH = 1000  # MLflow's limit of metrics per log_batch call
PARAM_BATCH = 100  # and of params
MAX_PARAM_CHARS = 500


@dataclass
class ImportResult:
    """What an import did."""

    run_id: str
    experiment: str
    experiment_id: str
    created: bool  # a new run (else an earlier import's run was continued)
    logged: int  # metric points written now
    already: int  # points the run held already
    loss_steps: int
    validation_steps: list[int]
    notes: list[str] = field(default_factory=list)
    page: str = ""  # where the runs table is in the MLflow UI

    def summary(self) -> str:
        lines = [f"{'created' if self.created else 'continued'} run {self.run_id} in experiment {self.experiment}: "
                 f"{self.logged} metric points logged, {self.already} already there "
                 f"({self.loss_steps} loss steps, validations at {self.validation_steps or 'none'})"]
        lines += [f"note: {note}" for note in self.notes]
        if self.page:
            lines.append(self.page)
        return "\n".join(lines)


@dataclass(frozen=True)
class _Target:
    """The spec's side of an import: names, hash, the condition's config."""

    spec_name: str
    spec_hash: str
    experiment: str
    condition: str
    dataset: str
    class_names: list[str]
    num_classes: int  # foreground classes C


def _target(spec_path: str | os.PathLike, condition: str) -> _Target:
    from more.config import num_classes
    from more.data.classes import class_names
    from more.harness.spec import SpecError, expand, load_spec, spec_hash, trial_config

    spec = load_spec(spec_path)
    trials = expand(spec)
    if condition not in spec.conditions:
        raise SpecError(f"{spec_path}: spec {spec.name} has no condition {condition!r} (it has "
                        f"{', '.join(spec.conditions)}): name the one the authors' run stands for with --condition")
    cfg = trial_config(spec, next(t for t in trials if t.condition == condition))
    tracking = spec.tracking if isinstance(spec.tracking, dict) else {}
    return _Target(spec.name, spec_hash(spec, trials), str(tracking.get("experiment") or spec.name), condition,
                   cfg.data.dataset, class_names(cfg), num_classes(cfg))


def _check_dataset(log: AuthorsLog, path: Path, target: _Target) -> None:
    """The log's class count (args ``num_classes``, background included) must be the spec's."""
    n = log.args.get("num_classes")
    if isinstance(n, int) and n != target.num_classes + 1:
        where = log.args.get("list_folder") or log.args.get("data_folder") or "?"
        raise LogFormatError(f"{path}: the log trains num_classes={n} (background included; {where}), the spec "
                             f"{target.spec_name}'s {target.dataset} config {target.num_classes + 1}: import it into "
                             f"a spec of its dataset")


def _log_key(log: AuthorsLog, path: Path) -> str:
    return hashlib.sha256((log.args_line or f"file:{path.name}").encode()).hexdigest()[:16]


def _existing_points(client: Any, run_id: str, keys: set[str]) -> set[tuple[str, int]]:
    held = set(client.get_run(run_id).data.metrics)  # a key the run never had needs no history request
    return {(key, m.step) for key in keys & held for m in client.get_metric_history(run_id, key)}


def import_authors_log(path: str | os.PathLike, spec_path: str | os.PathLike, *, condition: str = "more",
                       tracking_uri: str | None = None) -> ImportResult:
    """Read the authors' log at ``path`` into the MLflow run of ``spec_path``'s experiment (see the module docstring).

    Everything is read and checked before the store is touched.

    Raises:
        LogFormatError: not a log in the authors' format, or one of another dataset than the spec's.
        SpecError: a bad spec, or ``condition`` is not one of its conditions.
        OSError: the log cannot be read.
    """
    from mlflow.entities import Metric, Param, RunTag

    log_path = Path(path)
    log = read_log(log_path)
    target = _target(spec_path, condition)
    _check_dataset(log, log_path, target)
    points = metric_points(log, target.class_names)
    notes = list(log.notes)
    skipped = skipped_columns(log)
    if skipped:
        notes.append(f"table columns without a counterpart among our outputs, not imported: {', '.join(skipped)}")
    if not log.args:
        notes.append("no args line: the run has no more.seed tag and no authors.* params")

    uri = resolve_tracking_uri(tracking_uri)
    client = make_client(uri)
    experiment_id = get_or_create_experiment(client, target.experiment, uri=uri,
                                             tags={"more.spec_name": target.spec_name})
    key = _log_key(log, log_path)
    found = client.search_runs(
        [experiment_id], max_results=1,
        filter_string=(f"tags.`more.kind` = '{KIND}' and tags.`more.authors_key` = '{key}' and "
                       f"tags.`more.spec_hash` = '{target.spec_hash}' and tags.`more.condition` = '{condition}'"))
    tags = {"more.kind": KIND, "more.spec_name": target.spec_name, "more.spec_hash": target.spec_hash,
            "more.condition": condition, "more.dataset": target.dataset, "more.authors_log": log_path.name,
            "more.authors_key": key, "more.authors_last_iter": str(log.last_iteration)}
    if isinstance(log.args.get("seed"), int):
        tags["more.seed"] = str(log.args["seed"])
    if found:
        run_id, created = found[0].info.run_id, False
        existing = _existing_points(client, run_id, {p[0] for p in points})
    else:
        run = client.create_run(experiment_id, run_name=f"authors-{log_path.stem}", tags=tags)
        run_id, created, existing = run.info.run_id, True, set()
        params = [Param(f"authors.{k}", str(v)[:MAX_PARAM_CHARS]) for k, v in sorted(log.args.items())]
        for start in range(0, len(params), PARAM_BATCH):
            client.log_batch(run_id, params=params[start:start + PARAM_BATCH])
    new = [Metric(k, float(v), stamp, step) for k, v, step, stamp in points if (k, step) not in existing]
    for start in range(0, len(new), BATCH):
        client.log_batch(run_id, metrics=new[start:start + BATCH])
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])  # the last iteration may have grown
    client.log_artifact(run_id, str(log_path), "authors_log")
    client.set_terminated(run_id, "FINISHED")
    return ImportResult(run_id=run_id, experiment=target.experiment, experiment_id=experiment_id, created=created,
                        logged=len(new), already=len(points) - len(new), loss_steps=len(log.losses),
                        validation_steps=sorted(log.validations), notes=notes,
                        page=runs_page_text(uri, experiment_id))
