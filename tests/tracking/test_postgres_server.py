"""The cluster's tracking set-up on one machine: a real PostgreSQL 15 (started by the session's ``postgres`` fixture),
an MLflow server with two workers on it bound to 127.0.0.1 and reaching PostgreSQL exactly as ``cluster.yaml`` has it
(the Unix socket, a role named after the OS user, no password), and a launch whose trial logs through the server.
Where a password is used (TCP), the database check refuses bad ones in one line that never shows it."""

from __future__ import annotations

import re
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from more.database import DatabaseError, check_database, redact
from more.tracking import LaunchTracker, TrialTracker, trial_key
from more.tracking.store import free_port, stop_server

PASSWORD = "pw-Zq8#tracking"
REPO = Path(__file__).resolve().parents[2]


def cluster_backend_uri() -> str:
    """The ``--backend-store-uri`` of the head's MLflow server in cluster.yaml."""
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    head = " ".join(config["head_start_ray_commands"])
    return re.search(r'--backend-store-uri "([^"]+)"', head).group(1)


def test_cluster_yaml_runs_mlflow_on_postgresql_with_several_workers():
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    head = " ".join(config["head_start_ray_commands"])
    setup = " ".join(config["head_setup_commands"])
    assert cluster_backend_uri() == "postgresql:///mlflow?host=/var/run/postgresql"  # socket + peer: no password
    assert int(re.search(r"--workers (\d+)", head).group(1)) > 1 and "--host $HEAD_IP" in head
    assert "--artifacts-destination $HOME/shared/mlflow-artifacts" in head  # on the shared store
    assert "apt-get install -y nfs-kernel-server postgresql" in setup and "-e '.[postgres]'" in setup
    assert "createdb -O" in setup and "sqlite" not in head
    text = (REPO / "cluster.yaml").read_text()
    assert "PGPASSWORD" not in text and "PASSWORD '" not in text.upper()  # no secret in the file or a command
    assert not re.search(r"postgresql(\+\w+)?://[^/\s\"]*:[^/\s\"]*@", text)


@pytest.fixture(scope="module")
def mlflow_on_postgres(postgres, tmp_path_factory):
    """cluster.yaml's server, with the test server's socket folder and port in place of Debian's."""
    from tools.postgres import socket_url, start_mlflow_on_postgres

    assert socket_url(postgres, "mlflow") == cluster_backend_uri().replace(
        "/var/run/postgresql", f"{postgres.root}&port={postgres.port}")
    folder = tmp_path_factory.mktemp("pg-server")
    server = start_mlflow_on_postgres(postgres, artifacts_dir=folder / "artifacts", workers=2)
    try:
        yield server, postgres, folder
    finally:
        stop_server(server)


def test_mlflow_server_on_postgres_with_two_workers_takes_a_tracked_trial(mlflow_on_postgres, tmp_path):
    server, pg, folder = mlflow_on_postgres
    assert server.url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(f"{server.url}/health", timeout=10) as resp:
        assert resp.read().strip() == b"OK"
    ps = subprocess.run(["ps", "-ww", "-o", "args=", "-g", str(server.pid)], capture_output=True, text=True).stdout
    assert "--workers 2" in ps and "--host 127.0.0.1" in ps and f"postgresql:///mlflow?host={pg.root}" in ps

    launch = LaunchTracker.start(server.url, "pg_spec", "feedbeef0002", "name: pg_spec\n", "abc", strict=True)
    run_dir = tmp_path / "run"
    trial = TrialTracker.open(server.url, launch.run_id, trial_key("feedbeef0002", "t-s0"), {"more.kind": "trial"},
                              run_dir=run_dir)
    for step in (2, 4):
        trial.report_callback()({"iter": float(step), "val/seg/miou": 10.0 * step}, None)
    trial.finish("FINISHED")
    history = launch.client.get_metric_history(trial.run_id, "val/seg/miou")
    assert [(m.step, m.value) for m in history] == [(2, 20.0), (4, 40.0)]
    # the rows are in PostgreSQL, not in some local file store
    rows = pg.psql(f"SELECT status FROM runs WHERE run_uuid = '{trial.run_id}'", database="mlflow").split()
    assert rows == ["FINISHED"]
    assert int(pg.psql("SELECT count(*) FROM metrics WHERE key = 'val/seg/miou'", database="mlflow")) == 2


def test_database_check_gives_one_line_without_the_password(postgres):
    pg = postgres
    pg.create_database("tcp", user="mlflow", password=PASSWORD)
    good = pg.url("tcp", "mlflow", PASSWORD)
    assert check_database(good, "--storage") == f"--storage {redact(good)} (PostgreSQL answers)"
    assert "***" in redact(good) and PASSWORD not in redact(good)
    cases = {
        "bad password": (pg.url("tcp", "mlflow", "not-" + PASSWORD), "refused the credentials of user 'mlflow'"),
        "unknown user": (pg.url("tcp", "nobody", PASSWORD), "refused the credentials of user 'nobody'"),
        "no such database": (pg.url("absent", "mlflow", PASSWORD), "database 'absent' does not exist"),
        "nothing listens": (f"postgresql://mlflow:{PASSWORD}@127.0.0.1:{free_port()}/tcp",
                            "no database server answers at 127.0.0.1:"),
        "no driver": (f"postgresql+pg8000://mlflow:{PASSWORD}@127.0.0.1:{pg.port}/tcp",
                      "its database driver is not installed"),
    }
    for name, (url, expected) in cases.items():
        with pytest.raises(DatabaseError) as caught:
            check_database(url, "--storage")
        text = str(caught.value)
        assert expected in text and PASSWORD not in text and "\n" not in text, (name, text)
        assert text.startswith("--storage postgresql"), (name, text)


def test_a_postgresql_tracking_uri_is_checked_in_one_line_without_the_password(postgres):
    from more.preflight import PreflightError, tracking_uri

    postgres.create_database("direct", user="direct", password=PASSWORD)
    good = postgres.url("direct", "direct", PASSWORD)
    uri, line = tracking_uri(good)
    assert uri == good and line.endswith("(PostgreSQL answers)") and PASSWORD not in line
    with pytest.raises(PreflightError) as caught:
        tracking_uri(postgres.url("direct", "direct", "wrong"))
    assert "refused the credentials of user 'direct'" in str(caught.value) and "wrong" not in str(caught.value)
