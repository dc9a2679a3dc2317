"""The runs page a researcher lands on: an MLflow saved view that shows the trial runs with the spec's metric.

MLflow 3.17's runs table nests child runs under their parent, collapsed, and shows no metric column until one is
picked, so an experiment's plain runs page is one launch row. The UI has saved views (its "Views" menu): each is an
experiment tag ``mlflow.sharedViewState.<id>`` whose value is a JSON envelope ``{name, createdAt, updatedAt,
state}``, and ``#/experiments/<id>/runs?viewStateShareKey=<id>`` opens the runs page in that view. ``state`` holds
the page's search facets (``orderByKey``, ``orderByAsc``, ``searchFilter``, ...) and its UI state
(``selectedColumns``, ``runsExpanded``, ...); a field left out keeps the UI's default. (Read from MLflow 3.17.2's
UI: its shared-view reader, ``savedViewEnvelope.ts``, ``ExperimentPageUIState.tsx``.)

``more`` keeps one such view per experiment, id :data:`VIEW_ID`:

- with the metric of the experiment's latest ablation (``metric``/``mode`` of the ``spec.yaml`` its launch run
  logged): runs sorted by it, best first; a sorted table does not nest, so every trial is a row of its own and
  runs without the metric (the launch runs) come last; columns: the metric, the condition and the seed
  (Created and Duration are always there);
- without one (an experiment of searches or inference runs only): every parent run expanded, so the children
  show under them.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

VIEW_ID = "more-trials"
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
SHARE_PARAM = "viewStateShareKey"
PARENT_TAG = "mlflow.parentRunId"
MAX_RUNS = 1000  # runs read to find the parents to expand (one search page)
MAX_EXPANDED = 300  # parent ids kept in the view: ~12 kB of the tag's 20 000 characters


def column(kind: str, key: str) -> str:
    """A runs-table column / sort key as the UI names it: ``metrics.`val/seg/miou```, ``tags.`more.seed```."""
    return f"{kind}.`{key}`"


def sorted_trials_state(metric: str, mode: str) -> dict[str, Any]:
    """The view state of the trials sorted by ``metric`` (best first for ``mode`` ``max``/``min``)."""
    return {
        "orderByKey": column("metrics", metric),
        "orderByAsc": mode == "min",
        "selectedColumns": [column("metrics", metric), column("tags", "more.condition"), column("tags", "more.seed")],
    }


def expanded_state(parent_ids: list[str]) -> dict[str, Any]:
    """The view state with these parent runs expanded (the first :data:`MAX_EXPANDED` of them)."""
    return {"runsExpanded": {run_id: True for run_id in parent_ids[:MAX_EXPANDED]}}


def spec_metric(client: Any, experiment_id: str, launch_run_id: str | None = None) -> tuple[str, str] | None:
    """``(metric, mode)`` of the ``spec.yaml`` logged on ``launch_run_id``, else on the experiment's launch run
    that ended last; None when there is none or it cannot be read."""
    from more.harness.spec import AblationSpec
    from more.yamlio import YamlError, load_yaml

    if launch_run_id is None:
        launches = client.search_runs([experiment_id], filter_string="tags.`more.kind` = 'launch'",
                                      max_results=MAX_RUNS)
        if not launches:
            return None
        latest = max(launches, key=lambda r: (r.info.end_time or 0, r.info.start_time or 0))
        launch_run_id = latest.info.run_id
    if "spec.yaml" not in {a.path for a in client.list_artifacts(launch_run_id)}:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(client.download_artifacts(launch_run_id, "spec.yaml", tmp)).read_text()
    try:
        data = load_yaml(text, where=f"spec.yaml of MLflow run {launch_run_id}")
    except YamlError:
        return None
    if not isinstance(data, dict):
        return None
    metric, mode = data.get("metric", AblationSpec.metric), data.get("mode", AblationSpec.mode)
    if not isinstance(metric, str) or not metric or mode not in ("max", "min"):
        return None
    return metric, mode


def parent_run_ids(client: Any, experiment_id: str) -> list[str]:
    """Ids of the runs that have child runs in the experiment, newest child first."""
    runs = client.search_runs([experiment_id], max_results=MAX_RUNS, order_by=["attributes.start_time DESC"])
    parents = [r.data.tags.get(PARENT_TAG) for r in runs]
    return list(dict.fromkeys(p for p in parents if p))


def trials_view_state(client: Any, experiment_id: str, launch_run_id: str | None = None) -> tuple[str, dict] | None:
    """``(view name, state)`` for the experiment (see the module docstring), None when the plain page will do."""
    found = spec_metric(client, experiment_id, launch_run_id)
    if found is not None:
        metric, mode = found
        return f"more: trials by {metric}", sorted_trials_state(metric, mode)
    parents = parent_run_ids(client, experiment_id)
    if parents:
        return "more: runs with their child runs", expanded_state(parents)
    return None


def save_trials_view(client: Any, experiment_id: str, launch_run_id: str | None = None) -> str | None:
    """Write (or update) the experiment's :data:`VIEW_ID` saved view; returns its id, None when there is no view
    to save (the plain runs page shows everything then). The tag is rewritten only when the view changed.

    Args:
        client: an ``MlflowClient``.
        experiment_id: the experiment.
        launch_run_id: the launch run whose ``spec.yaml`` gives the metric (default: the latest ended one).
    """
    view = trials_view_state(client, experiment_id, launch_run_id)
    if view is None:
        return None
    name, state = view
    key = VIEW_TAG_PREFIX + VIEW_ID
    old = client.get_experiment(experiment_id).tags.get(key)
    now = int(time.time() * 1000)
    created = now
    if old:
        try:
            envelope = json.loads(old)
            if envelope.get("name") == name and json.loads(envelope.get("state", "")) == state:
                return VIEW_ID
            created = int(envelope.get("createdAt", now))
        except (ValueError, TypeError, AttributeError):
            pass  # not a view this code wrote: replaced below
    envelope = {"name": name, "createdAt": created, "updatedAt": now, "state": json.dumps(state)}
    client.set_experiment_tag(experiment_id, key, json.dumps(envelope))
    return VIEW_ID
