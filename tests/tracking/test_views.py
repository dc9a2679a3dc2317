"""The saved view the runs-page links open (more/tracking/views.py), on a real sqlite store; how it renders is checked
in Chromium by test_ui_browser.py."""

from __future__ import annotations

import json

from more.tracking import LaunchTracker, TrialTracker, trial_key
from more.tracking.store import make_client
from more.tracking.views import (
    VIEW_ID,
    VIEW_TAG_PREFIX,
    expanded_state,
    save_trials_view,
    sorted_trials_state,
    spec_metric,
)

TAG = VIEW_TAG_PREFIX + VIEW_ID


def saved(client, experiment_id: str) -> tuple[dict, dict]:
    """(envelope, state) of the experiment's view tag."""
    envelope = json.loads(client.get_experiment(experiment_id).tags[TAG])
    return envelope, json.loads(envelope["state"])


def test_view_states_name_the_columns_and_sort_as_the_ui_does():
    assert sorted_trials_state("val/seg/miou", "max") == {
        "orderByKey": "metrics.`val/seg/miou`", "orderByAsc": False,
        "selectedColumns": ["metrics.`val/seg/miou`", "tags.`more.condition`", "tags.`more.seed`"],
    }
    assert sorted_trials_state("train/loss", "min")["orderByAsc"] is True
    assert expanded_state(["b", "a"]) == {"runsExpanded": {"b": True, "a": True}}
    assert len(expanded_state([str(i) for i in range(1000)])["runsExpanded"]) == 300


def test_the_view_sorts_by_the_metric_of_the_launchs_spec_and_is_rewritten_only_when_it_changes(make_store):
    uri = make_store()
    client = make_client(uri)
    first = LaunchTracker.start(uri, "spec_v", "c0ffee000011", "name: spec_v\nmetric: val/lam/miou\n", "abc",
                                strict=True)
    first.finish()
    assert save_trials_view(client, first.experiment_id) == VIEW_ID
    envelope, state = saved(client, first.experiment_id)
    assert envelope["name"] == "more: trials by val/lam/miou"
    assert state == sorted_trials_state("val/lam/miou", "max")
    assert isinstance(envelope["createdAt"], int) and envelope["updatedAt"] == envelope["createdAt"]

    raw = client.get_experiment(first.experiment_id).tags[TAG]
    assert save_trials_view(client, first.experiment_id) == VIEW_ID
    assert client.get_experiment(first.experiment_id).tags[TAG] == raw  # unchanged view: the tag is not rewritten

    # a later launch of another spec in the same experiment (no metric key: the spec default) ends last and wins
    second = LaunchTracker.start(uri, "spec_v", "c0ffee000012", "name: spec_v\nmode: max\n", "abc", strict=True)
    second.finish()
    assert spec_metric(client, first.experiment_id) == ("val/seg/miou", "max")
    assert spec_metric(client, first.experiment_id, first.run_id) == ("val/lam/miou", "max")  # asked for by id
    save_trials_view(client, first.experiment_id)
    updated, state = saved(client, first.experiment_id)
    assert state == sorted_trials_state("val/seg/miou", "max")
    assert updated["createdAt"] == envelope["createdAt"] and updated["updatedAt"] >= envelope["updatedAt"]

    # the launch's own link (the end of `ablate`) uses its own spec
    assert first.runs_page().split()[2].endswith("/runs?viewStateShareKey=more-trials")
    assert saved(client, first.experiment_id)[1] == sorted_trials_state("val/lam/miou", "max")


def test_without_a_readable_spec_the_view_expands_the_parent_runs_and_without_any_there_is_none(make_store):
    uri = make_store()
    client = make_client(uri)
    launch = LaunchTracker.start(uri, "spec_w", "c0ffee000021", "a: 1\na: 2\n", "abc", strict=True)  # duplicate key
    assert spec_metric(client, launch.experiment_id) is None
    assert save_trials_view(client, launch.experiment_id) is None  # no child run: nothing to expand, no tag
    assert TAG not in client.get_experiment(launch.experiment_id).tags

    ids = []
    for name in ("a-s0", "b-s0"):
        with TrialTracker.open(uri, launch.run_id, trial_key("c0ffee000021", name), {"more.kind": "trial"},
                               strict=True) as trial:
            ids.append(trial.run_id)
    assert save_trials_view(client, launch.experiment_id) == VIEW_ID
    envelope, state = saved(client, launch.experiment_id)
    assert envelope["name"] == "more: runs with their child runs"
    assert state == {"runsExpanded": {launch.run_id: True}}
