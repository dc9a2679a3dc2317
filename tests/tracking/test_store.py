"""Tracking URIs (embedded default, env and CLI overrides), artifact locations, experiments and the links to their
runs pages."""

from __future__ import annotations

from pathlib import Path

import pytest

from more.tracking.store import (
    EXPERIMENT_KIND,
    TrackingError,
    artifact_root,
    default_store_dir,
    experiment_pages,
    get_or_create_experiment,
    is_loopback,
    make_client,
    resolve_tracking_uri,
    runs_page_text,
    runs_page_url,
    sqlite_path,
)

REPO = Path(__file__).resolve().parents[2]


def test_default_is_the_embedded_sqlite_store_under_the_repo(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_store_dir() == REPO / "work" / "mlflow"
    assert resolve_tracking_uri() == f"sqlite:///{REPO}/work/mlflow/mlflow.db"


def test_cli_value_wins_over_env_which_wins_over_the_default(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert resolve_tracking_uri() == "http://127.0.0.1:5999"
    assert resolve_tracking_uri("sqlite:////tmp/x/mlflow.db") == "sqlite:////tmp/x/mlflow.db"


def test_plain_paths_become_absolute_sqlite_uris(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri("store") == f"sqlite:///{tmp_path}/store/mlflow.db"
    assert resolve_tracking_uri("runs/t.db") == f"sqlite:///{tmp_path}/runs/t.db"
    assert sqlite_path(resolve_tracking_uri("store")) == tmp_path / "store" / "mlflow.db"


@pytest.mark.parametrize("uri, why", [("file:///tmp/mlruns", "file store"), ("sqlite:///rel/mlflow.db", "absolute")])
def test_unusable_uris_are_refused_with_the_reason(uri, why):
    with pytest.raises(TrackingError, match=why):
        resolve_tracking_uri(uri)


def test_artifacts_sit_next_to_the_database_unless_a_server_proxies_them():
    assert artifact_root("sqlite:////data/ml/mlflow.db") == "file:///data/ml/artifacts"
    assert artifact_root("http://127.0.0.1:5000") is None


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True),
                                            ("::1", True), ("0.0.0.0", False), ("10.1.2.3", False),
                                            ("example.org", False)])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_experiment_is_created_once_with_location_and_tags_and_restored_when_deleted(make_store):
    uri = make_store()
    client = make_client(uri)
    first = get_or_create_experiment(client, "spec_a", uri=uri, tags={"more.spec_name": "spec_a"})
    assert get_or_create_experiment(client, "spec_a", uri=uri) == first
    exp = client.get_experiment(first)
    assert exp.artifact_location == f"{artifact_root(uri)}/spec_a"
    assert exp.tags["more.spec_name"] == "spec_a" and exp.tags.items() >= EXPERIMENT_KIND.items()
    client.delete_experiment(first)
    assert get_or_create_experiment(client, "spec_a", uri=uri) == first
    assert client.get_experiment(first).lifecycle_stage == "active"


def test_runs_page_links(monkeypatch, tmp_path):
    assert runs_page_url("http://127.0.0.1:5000/", "7") == "http://127.0.0.1:5000/#/experiments/7/runs"
    assert runs_page_url("http://h:5000", "7", "more-trials") == \
        "http://h:5000/#/experiments/7/runs?viewStateShareKey=more-trials"
    assert runs_page_text("http://10.0.0.5:5000", "3", "v") == \
        "MLflow runs: http://10.0.0.5:5000/#/experiments/3/runs?viewStateShareKey=v"
    assert runs_page_text("http://10.0.0.5:5000", "3") == "MLflow runs: http://10.0.0.5:5000/#/experiments/3/runs"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # a sqlite store: the page `more ui` serves on its default port, and the command that serves this store
    default = runs_page_text(resolve_tracking_uri(None), "2")
    assert default == ("MLflow runs: http://127.0.0.1:5000/#/experiments/2/runs once `python -m more ui` serves "
                       "the store")
    other = resolve_tracking_uri(str(tmp_path))
    assert runs_page_text(other, "2").endswith(f"`python -m more ui --tracking-uri {other}` serves the store")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)  # what `more ui` would serve without arguments
    assert runs_page_text(other, "2").endswith("`python -m more ui` serves the store")


def test_experiment_pages_newest_first_without_the_empty_default(make_store):
    from more.tracking import LaunchTracker

    uri = make_store()
    client = make_client(uri)
    first = get_or_create_experiment(client, "spec_a", uri=uri)
    launch = LaunchTracker.start(uri, "spec_b", "c0ffee000002", "name: spec_b\n", "abc", strict=True)
    pages, more = experiment_pages(uri, "http://127.0.0.1:5001")
    # spec_b has a launch run, so its page opens in the trials view (tests/tracking/test_views.py); spec_a has no run
    assert pages == [("spec_b", f"http://127.0.0.1:5001/#/experiments/{launch.experiment_id}/runs"
                                f"?viewStateShareKey=more-trials"),
                     ("spec_a", f"http://127.0.0.1:5001/#/experiments/{first}/runs")] and more == 0
    assert experiment_pages(uri, "http://h", limit=1) == ([("spec_b", f"http://h/#/experiments/{launch.experiment_id}"
                                                                      f"/runs?viewStateShareKey=more-trials")], 1)
    assert launch.runs_page() == runs_page_text(uri, launch.experiment_id, "more-trials")
    assert f"#/experiments/{launch.experiment_id}/runs?viewStateShareKey=more-trials once `python -m more ui " \
           f"--tracking-uri {uri}`" in \
        launch.runs_page()
    assert LaunchTracker(None, uri, None, None).runs_page() == ""  # tracking off: nothing to link to
