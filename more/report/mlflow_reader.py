"""Read a spec's tracked trials from MLflow with ``MlflowClient`` (the schema: parent run ``more.kind=launch``,
child runs ``more.kind=trial`` tagged with the spec hash, condition, seed and sweep point; params = the flat
config; metrics logged with ``step=iter``), and log the report back to the parent run under ``report/``.

The reads do not grow with the store's history, nor with one call per run and metric: the runs come from searches
on the spec's tags; the step of each run's chosen evaluation, and for ``--checkpoint best`` the values at that step,
come from metric histories fetched for up to 100 runs a call (:func:`metric_histories`: the database store's
``get_metric_history_bulk``, or a tracking server's ``get-history-bulk`` endpoint); per-class confusion ratios come
from the runs' ``val/<output>/confusion/<class>`` metrics (the ``per_class/iter_N.csv`` artifact only for runs that
lack them).

Only this module of the report talks to MLflow; every failure to reach the store becomes
:class:`TrackingUnavailable`, which the caller answers by reading the harness's files instead.
"""

from __future__ import annotations

import csv
import io
import json
import re
import tempfile
from pathlib import Path
from typing import Any

from more.report.records import Checkpoint, Experiment, TrialRecord, parse_value, reuse_notes
from more.tracking.runs import REUSED_BY_TAG
from more.yamlio import load_yaml

_PER_CLASS = re.compile(r"iter_(\d+)\.csv$")
RUNS_PER_BULK = 100  # the most run ids a tracking server's get-history-bulk takes
BULK_ROWS = 25000  # the most values one bulk call returns (the server's cap)


class TrackingUnavailable(RuntimeError):
    """The tracking store cannot be reached, or holds no run of the spec asked for."""


class NoRuns(TrackingUnavailable):
    """The tracking store was read (or does not exist yet) and holds no run of the spec asked for."""


def make_client(uri: str) -> Any:
    """An ``MlflowClient`` for ``uri``; a sqlite database that does not exist is unavailable (reading must never
    create an empty store as a side effect)."""
    if uri.startswith("sqlite:"):
        path = uri.split(":///", 1)[-1] if ":///" in uri else ""
        if not path or not Path(path).is_file():
            raise NoRuns(f"no MLflow database at {path or uri}")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def quote(value: str) -> str:
    return "'" + value.replace("'", "\\'") + "'"


def search_all(client: Any, ids: list[str], where: str) -> list[Any]:
    """Every run of ``ids`` matching ``where``, newest first (all pages)."""
    runs, token = [], None
    while True:
        page = client.search_runs(ids, filter_string=where, max_results=1000, page_token=token,
                                  order_by=["attributes.start_time DESC"])
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _experiment_ids(client: Any, experiment_name: str, spec_name: str) -> list[str]:
    for name in dict.fromkeys((experiment_name, spec_name)):
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            return [exp.experiment_id]
    return [e.experiment_id for e in client.search_experiments()]  # find the runs by their tags anywhere


def read_mlflow(uri: str, experiment_name: str, spec_name: str, digest: str | None, *, checkpoint: Checkpoint,
                output: str = "seg") -> Experiment:
    """Records of the trials of ``spec_name`` with spec hash ``digest`` (None: the newest launch's hash).

    Raises:
        TrackingUnavailable: the store cannot be reached or has no trial run of the spec.
    """
    client = make_client(uri)
    from mlflow.exceptions import MlflowException

    try:
        ids = _experiment_ids(client, experiment_name, spec_name)
    except Exception as exc:  # noqa: BLE001 -- any failure to reach the store means "use the files"
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise TrackingUnavailable(f"MLflow at {uri} unreachable ({type(exc).__name__}: {first})") from None
    if not ids:
        raise NoRuns(f"MLflow at {uri} has no experiments")
    try:
        named = f"tags.`more.spec_name` = {quote(spec_name)}"
        launches = search_all(client, ids, f"tags.`more.kind` = 'launch' and {named}"
                           + (f" and tags.`more.spec_hash` = {quote(digest)}" if digest else ""))
        if digest is None:
            newest = launches or search_all(client, ids, f"tags.`more.kind` = 'trial' and {named}")
            if not newest:
                raise NoRuns(f"MLflow at {uri} has no runs of spec '{spec_name}'")
            digest = newest[0].data.tags.get("more.spec_hash", "")
            launches = [r for r in launches if r.data.tags.get("more.spec_hash") == digest]
        runs = search_all(client, ids, f"tags.`more.kind` = 'trial' and tags.`more.spec_hash` = {quote(digest)}")
        if not runs:
            raise NoRuns(f"MLflow at {uri} has no trial runs of spec '{spec_name}' with hash {digest}")
        records = records_from_runs(client, _one_run_per_trial(runs), checkpoint, output)
        records += reused_records(client, digest, checkpoint, output, {r.trial for r in records})
        parent = launches[0] if launches else None
        spec_data = _parent_spec(client, parent.info.run_id) if parent else {}
    except MlflowException as exc:
        raise TrackingUnavailable(f"MLflow at {uri} failed while reading: {exc}") from None
    except OSError as exc:  # requests' connection errors are OSErrors
        raise TrackingUnavailable(f"MLflow at {uri} unreachable while reading ({type(exc).__name__}: {exc})") from None
    return Experiment(
        name=spec_name, spec_hash=digest, records=records, parent_run_id=parent.info.run_id if parent else None,
        tracking_uri=uri, source=f"MLflow {uri}, experiment(s) {', '.join(ids)}",
        sweeps=list(dict.fromkeys([*(spec_data.get("sweeps") or {}), *(k for r in records for k in r.sweep)])),
        conditions=list(dict.fromkeys([*(spec_data.get("conditions") or {}), *(r.condition for r in records)])),
        paper=spec_data.get("paper"),
        notes=([] if parent else [f"no launch run (more.kind=launch) with spec hash {digest}: the report is not "
                                  f"logged"]) + reuse_notes(records),
    )


def _one_run_per_trial(runs: list[Any]) -> list[Any]:
    """A trial retried as a new run keeps its newest finished run, else its newest run (runs come newest first)."""
    chosen: dict[str, Any] = {}
    for run in runs:
        name = trial_name(run)
        best = chosen.get(name)
        if best is None or (run.info.status == "FINISHED" and best.info.status != "FINISHED"):
            chosen[name] = run
    return sorted(chosen.values(), key=lambda r: r.info.start_time or 0)




def reused_records(client: Any, digest: str, checkpoint: Checkpoint, output: str, have: set[str]) -> list[TrialRecord]:
    """Runs of earlier launches that the launch of ``digest`` reused (tag ``more.reused_by.<digest>``), named as the
    trials of this spec, with ``origin`` set to where they ran."""
    ids = [e.experiment_id for e in client.search_experiments()]
    runs = search_all(client, ids, f"tags.`{REUSED_BY_TAG}{digest}` != ''")
    out = []
    for run, record in zip(runs, records_from_runs(client, runs, checkpoint, output)):
        try:
            link = json.loads(run.data.tags[f"{REUSED_BY_TAG}{digest}"])
        except ValueError:
            link = {}
        record.origin = f"{run.data.tags.get('more.spec_name', '?')}-{run.data.tags.get('more.spec_hash', '?')}/" \
                        f"{record.trial} (run {run.info.run_id})"
        record.trial = link.get("trial", record.trial)
        if record.trial not in have:
            have.add(record.trial)
            out.append(record)
    return out


def trial_name(run: Any) -> str:
    key = run.data.tags.get("more.trial_key", "")
    return key.split(":", 1)[1] if ":" in key else (run.info.run_name or run.info.run_id)


def metric_histories(client: Any, run_ids: list[str], key: str) -> dict[str, list[Any]]:
    """``{run id: [Metric, ...]}``: the history of ``key`` for many runs, in calls of up to :data:`RUNS_PER_BULK`
    runs (one call per run only where neither bulk read is available, or a batch hits the row cap)."""
    from mlflow.entities import Metric

    store = client._tracking_client.store  # MlflowClient exposes no bulk read; its store does
    out: dict[str, list[Any]] = {run_id: [] for run_id in run_ids}
    for start in range(0, len(run_ids), RUNS_PER_BULK):
        chunk = run_ids[start:start + RUNS_PER_BULK]
        rows = None
        if hasattr(store, "get_metric_history_bulk"):  # a database (sqlite, PostgreSQL, ...)
            rows = [(m.run_id, m) for m in store.get_metric_history_bulk(chunk, key, BULK_ROWS)]
        elif hasattr(store, "get_host_creds"):  # a tracking server
            from mlflow.utils.rest_utils import http_request

            response = http_request(store.get_host_creds(), "/ajax-api/2.0/mlflow/metrics/get-history-bulk", "GET",
                                    params={"run_id": chunk, "metric_key": key, "max_results": BULK_ROWS})
            response.raise_for_status()
            rows = [(m["run_id"], Metric(m["key"], m["value"], m["timestamp"], m["step"]))
                    for m in response.json().get("metrics", [])]
        if rows is None or len(rows) >= BULK_ROWS:
            rows = [(run_id, m) for run_id in chunk for m in client.get_metric_history(run_id, key)]
        for run_id, metric in rows:
            out.setdefault(run_id, []).append(metric)
    return out


def records_from_runs(client: Any, runs: list[Any], checkpoint: Checkpoint, output: str) -> list[TrialRecord]:
    """The child runs as records, with the metrics of each run's last or best evaluation (read in bulk)."""
    selection = checkpoint.selection_metric(output)
    histories = metric_histories(client, [r.info.run_id for r in runs if selection in r.data.metrics], selection)
    steps: dict[str, int | None] = {}
    for run in runs:
        history = histories.get(run.info.run_id) or []
        if checkpoint.kind == "best":
            steps[run.info.run_id] = max(history, key=lambda m: (m.value, m.step)).step if history else None
        elif history:  # the step of the last evaluation; the "iter" metric may also carry training-log records
            steps[run.info.run_id] = max(m.step for m in history)
        else:
            it = run.data.metrics.get("iter")
            steps[run.info.run_id] = int(it) if it is not None else None
    at_step: dict[str, dict[str, float]] = {r.info.run_id: {} for r in runs}
    if checkpoint.kind == "best":
        for key in _best_keys(runs, checkpoint.split, output):
            ids = [r.info.run_id for r in runs if key in r.data.metrics and steps[r.info.run_id] is not None]
            for run_id, history in metric_histories(client, ids, key).items():
                values = [m.value for m in history if m.step == steps[run_id]]
                if values:
                    at_step[run_id][key] = values[-1]
    out = []
    for run in runs:
        run_id, step = run.info.run_id, steps[run.info.run_id]
        if checkpoint.kind == "best":
            metrics = {"iter": float(step), **at_step[run_id]} if step is not None else {}
        else:
            metrics = dict(run.data.metrics)
        out.append(_record(client, run, metrics, step, checkpoint.split))
    return out


def _best_keys(runs: list[Any], split: str, output: str) -> list[str]:
    """The metrics a best-checkpoint record needs at its step: every ``<split>/<output>/...`` value, the means of the
    other outputs and the split's own scores (``<split>/cls_f1``)."""
    means = ("miou", "precision", "recall", "confusion")
    keys = {k for r in runs for k in r.data.metrics if k.startswith(f"{split}/")}
    return sorted(k for k in keys if k.startswith(f"{split}/{output}/") or k.count("/") == 1
                  or (k.count("/") == 2 and k.rsplit("/", 1)[1] in means))


def _record(client: Any, run: Any, metrics: dict[str, float], iteration: int | None, split: str) -> TrialRecord:
    tags = run.data.tags
    config = {key: parse_value(value) for key, value in run.data.params.items()}
    confusion = confusion_from_metrics(metrics, split)
    if not confusion:  # runs tracked before the per-class ratios were metrics: their per-class table artifact
        confusion = per_class_confusion(client, run.info.run_id, iteration)
    seed = tags.get("more.seed", config.get("train.seed"))
    sweep = tags.get("more.sweep") or "{}"
    return TrialRecord(
        trial=trial_name(run), condition=tags.get("more.condition", ""), seed=int(seed) if seed is not None else None,
        sweep=json.loads(sweep), status=run.info.status, error=tags.get("more.error", ""), metrics=metrics,
        config=config, iteration=iteration, confusion=confusion, run_id=run.info.run_id,
        code=tags.get("more.code_id", ""),
    )


def record_from_run(client: Any, run: Any, checkpoint: Checkpoint, output: str) -> TrialRecord:
    """One child run as a record, with the metrics of its last or best evaluation."""
    return records_from_runs(client, [run], checkpoint, output)[0]


def confusion_from_metrics(metrics: dict[str, float], split: str = "val") -> dict[str, dict[str, float]]:
    """Per-class confusion ratios per output from ``<split>/<output>/confusion/<class>`` metrics ({} if none)."""
    out: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 4 and parts[0] == split and parts[2] == "confusion":
            out.setdefault(parts[1], {})[parts[3]] = value
    return out


def per_class_confusion(client: Any, run_id: str, iteration: int | None) -> dict[str, dict[str, float]]:
    """Per-class confusion ratios from the run's ``per_class/iter_<iteration>.csv`` artifact ({} if absent)."""
    if iteration is None:
        return {}
    names = [a.path for a in client.list_artifacts(run_id, "per_class")]
    match = [p for p in names if (m := _PER_CLASS.search(p)) and int(m.group(1)) == iteration]
    if not match:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        return parse_per_class_csv(Path(client.download_artifacts(run_id, match[0], tmp)).read_text())


def parse_per_class_csv(text: str) -> dict[str, dict[str, float]]:
    """Confusion ratio per output and class from a per-class CSV, long (``output,class,...,confusion``) or wide
    (``class,<output>/confusion,...`` or ``<output>_confusion``) layout."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        return {}
    fields = [f for f in rows[0] if f]
    lower = {f.lower(): f for f in fields}
    class_col = lower.get("class") or lower.get("class_name") or fields[0]
    out: dict[str, dict[str, float]] = {}
    long_conf = next((lower[k] for k in ("confusion", "confusion_ratio") if k in lower), None)
    if "output" in lower and long_conf:
        for row in rows:
            _put(out, row[lower["output"]].lower(), row[class_col], row[long_conf])
        return out
    for f in fields:
        if "confusion" not in f.lower() or f == class_col:
            continue
        parts = [p for p in re.split(r"[/_ ]+", f.lower()) if p not in ("confusion", "ratio", "")]
        for row in rows:
            _put(out, "_".join(parts), row[class_col], row[f])
    return out


def _put(out: dict[str, dict[str, float]], output: str, cls: str, text: str) -> None:
    try:
        out.setdefault(output, {})[cls] = float(text)
    except (TypeError, ValueError):
        pass


def _parent_spec(client: Any, run_id: str) -> dict[str, Any]:
    """The spec YAML logged on the parent run (for its sweeps, conditions and paper block), {} if absent."""
    if "spec.yaml" not in {a.path for a in client.list_artifacts(run_id)}:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(client.download_artifacts(run_id, "spec.yaml", tmp))
        data = load_yaml(path.read_text(), where=f"spec.yaml of MLflow run {run_id}")
    return data if isinstance(data, dict) else {}


def log_report(uri: str, parent_run_id: str, folder: Path) -> None:
    """Log every file of ``folder`` as artifacts of the parent run under ``report/``."""
    make_client(uri).log_artifacts(parent_run_id, str(folder), artifact_path="report")
