"""Logging from another process (a stand-in for a remote Ray worker) to a lean MLflow server on 127.0.0.1, given
only the tracking URI; the server is stopped by its PID."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import urllib.request

import pytest

from more.tracking import LaunchTracker
from more.tracking.store import resolve_tracking_uri, start_server, stop_server

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def server(template_db, tmp_path_factory):
    folder = tmp_path_factory.mktemp("server")
    shutil.copyfile(template_db, folder / "mlflow.db")
    srv = start_server(f"sqlite:///{folder / 'mlflow.db'}", artifacts_dir=folder / "artifacts", host="127.0.0.1")
    yield srv, folder
    pid = srv.pid
    stop_server(srv)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # the whole process group is gone


def test_server_is_lean_and_on_loopback(server):
    srv, _ = server
    assert srv.url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(f"{srv.url}/health", timeout=10) as resp:
        assert resp.read().strip() == b"OK"
    ps = subprocess.run(["ps", "-ww", "-o", "args=", "-g", str(srv.pid)], capture_output=True, text=True).stdout
    assert "--workers 1" in ps and "--host 127.0.0.1" in ps
    assert ps.count("\n") <= 3  # mlflow CLI + one uvicorn worker (no job runner, no 4-worker pool)


def test_a_separate_process_logs_a_trial_through_the_server(server, tmp_path):
    srv, folder = server
    launch = LaunchTracker.start(srv.url, "remote_spec", "feedbeef0001", "name: remote_spec\n", "abc", strict=True)
    exp = launch.client.get_experiment(launch.experiment_id)
    assert exp.artifact_location.startswith("mlflow-artifacts:")  # uploads go through the server, not a shared disk
    code = textwrap.dedent(f"""
        from more.tracking import log_remote_probe
        print(log_remote_probe({srv.url!r}, {launch.run_id!r}, "worker-1", value=0.25, step=7))
    """)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240, cwd=REPO, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    run_id = out.stdout.strip().splitlines()[-1]
    run = launch.client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == launch.run_id
    assert run.data.tags["more.trial_key"] == "probe:worker-1"
    assert [(m.step, m.value) for m in launch.client.get_metric_history(run_id, "probe/value")] == [(7, 0.25)]
    assert {a.path for a in launch.client.list_artifacts(run_id)} == {"probe.txt"}
    stored = list((folder / "artifacts").rglob("probe.txt"))  # landed in the server's --artifacts-destination
    assert len(stored) == 1 and stored[0].read_text().startswith("hello from pid")
    assert resolve_tracking_uri(srv.url) == srv.url
