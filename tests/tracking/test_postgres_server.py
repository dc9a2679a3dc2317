"""The cluster's tracking set-up on one machine: a real PostgreSQL 15 (started by the session's ``postgres`` fixture),
an MLflow server with two workers on it bound to 127.0.0.1, and a launch whose trial logs through the server. The
database password travels in ``PGPASSWORD`` only: it is in no command line, no server log and no message."""

from __future__ import annotations

import subprocess
import urllib.request

import pytest

from more.database import DatabaseError, check_database, redact
from more.tracking import LaunchTracker, TrialTracker, trial_key
from more.tracking.store import free_port, start_server, stop_server

PASSWORD = "pw-Zq8#tracking"


@pytest.fixture(scope="module")
def mlflow_on_postgres(postgres, tmp_path_factory):
    url = postgres.create_database("mlflow", user="mlflow", password=PASSWORD)  # no password in the URL
    folder = tmp_path_factory.mktemp("pg-server")
    server = start_server(url, artifacts_dir=folder / "artifacts", host="127.0.0.1", workers=2,
                          env={"PGPASSWORD": PASSWORD}, wait_s=300)
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
    assert "--workers 2" in ps and "--host 127.0.0.1" in ps and f"127.0.0.1:{pg.port}/mlflow" in ps
    assert PASSWORD not in ps

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
    assert PASSWORD not in server.log_tail(10**6)


def test_database_check_gives_one_line_without_the_password(mlflow_on_postgres):
    _, pg, _ = mlflow_on_postgres
    good = pg.url("mlflow", "mlflow", PASSWORD)
    assert check_database(good, "--storage") == f"--storage {redact(good)} (PostgreSQL answers)"
    assert "***" in redact(good) and PASSWORD not in redact(good)
    cases = {
        "bad password": (pg.url("mlflow", "mlflow", "not-" + PASSWORD), "refused the credentials of user 'mlflow'"),
        "unknown user": (pg.url("mlflow", "nobody", PASSWORD), "refused the credentials of user 'nobody'"),
        "no such database": (pg.url("absent", "mlflow", PASSWORD), "database 'absent' does not exist"),
        "nothing listens": (f"postgresql://mlflow:{PASSWORD}@127.0.0.1:{free_port()}/mlflow",
                            "no database server answers at 127.0.0.1:"),
        "no driver": (f"postgresql+pg8000://mlflow:{PASSWORD}@127.0.0.1:{pg.port}/mlflow",
                      "its database driver is not installed"),
    }
    for name, (url, expected) in cases.items():
        with pytest.raises(DatabaseError) as caught:
            check_database(url, "--storage")
        text = str(caught.value)
        assert expected in text and PASSWORD not in text and "\n" not in text, (name, text)
        assert text.startswith("--storage postgresql"), (name, text)
