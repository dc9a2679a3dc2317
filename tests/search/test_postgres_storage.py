"""Optuna studies on a real PostgreSQL 15 (the session's ``postgres`` fixture): a cached search through the command
line on a PostgreSQL ``--storage``, preflight refusals in one line without the password, and heartbeats: the trials of
killed workers (an ``optimize`` worker and an ask-and-tell driver, killed by PID) are failed and queued again by the
next driver, while a live worker's trial keeps running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

from more.__main__ import main

PASSWORD = "pw-Xy9@optuna"
REPO = Path(__file__).resolve().parents[2]
WORKER = textwrap.dedent("""
    import sys, time
    import optuna
    from more.search.storage import DriverHeartbeat, make_storage

    url, mode, name = sys.argv[1:4]
    storage = make_storage(url)
    study = optuna.load_study(study_name=name, storage=storage)

    def objective(trial):
        trial.suggest_float("x", 0.0, 1.0)
        print("running", trial.number, flush=True)
        time.sleep(600)
        return 0.0

    if mode == "optimize":  # the cached search's worker: Optuna beats inside optimize
        study.optimize(objective, n_trials=1)
    else:  # the training search's driver: asks and tells (OptunaSearch), beats for what it asked
        with DriverHeartbeat(storage):
            trial = study.ask()
            DriverHeartbeat.asked(trial)
            objective(trial)
""")


@pytest.fixture(scope="module")
def optuna_db(postgres):
    return postgres.create_database("optuna", user="optuna", password=PASSWORD)  # a URL without the password


def spec_file(path: Path) -> Path:
    body = {"name": "seeds_pg", "kind": "cached", "tuning_split": "train", "report_split": "val", "source": "cam",
            "space": {"eval.bkg_thre": {"type": "float", "low": 0.05, "high": 0.95}}, "trials": 4, "seed": 0}
    path.write_text(yaml.safe_dump({"search": body}))
    return path


def test_a_cached_search_runs_on_a_postgresql_storage(optuna_db, checkpoint, tmp_path, capsys, monkeypatch, postgres):
    import optuna

    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    spec = spec_file(tmp_path / "seeds_pg.yaml")
    code = main(["search", str(spec), "--checkpoint", str(checkpoint), "--storage", optuna_db, "--out",
                 str(tmp_path / "out"), "--no-tracking"])
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    names = optuna.get_all_study_names(storage=optuna_db)
    assert len(names) == 1 and names[0].startswith("seeds_pg-")
    study = optuna.load_study(study_name=names[0], storage=optuna_db)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    rows = postgres.psql("SELECT count(*) FROM trials", database="optuna")
    assert int(rows) == 4  # in PostgreSQL, not in a journal next to the output
    assert not (tmp_path / "out" / "study.journal").exists()
    assert (tmp_path / "out" / "best.json").is_file()


@pytest.mark.parametrize("case", ["bad password", "no server", "no database"])
def test_the_storage_is_refused_in_one_line_without_the_password(case, postgres, optuna_db, checkpoint, tmp_path,
                                                                   capsys, monkeypatch):
    from more.tracking.store import free_port

    monkeypatch.delenv("PGPASSWORD", raising=False)
    url = {"bad password": postgres.url("optuna", "optuna", "wrong-" + PASSWORD),
           "no server": f"postgresql://optuna:{quote(PASSWORD, safe='')}@127.0.0.1:{free_port()}/optuna",
           "no database": postgres.url("absent", "optuna", PASSWORD)}[case]
    code = main(["search", str(spec_file(tmp_path / "s.yaml")), "--checkpoint", str(checkpoint), "--storage", url,
                 "--out", str(tmp_path / "out"), "--no-tracking"])
    out, err = capsys.readouterr()
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "--storage postgresql://optuna" in lines[0], err
    assert {"bad password": "refused the credentials", "no server": "no database server answers",
            "no database": "database 'absent' does not exist"}[case] in lines[0]
    assert PASSWORD not in out + err and quote(PASSWORD, safe="") not in out + err and "wrong-" not in out + err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_trials_of_killed_workers_fail_and_run_again_while_a_live_worker_keeps_its_trial(
        optuna_db, monkeypatch, tmp_path, capfd):
    import optuna

    from more.search.storage import fail_stale, make_storage

    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    monkeypatch.setenv("MORE_OPTUNA_HEARTBEAT_S", "1")
    monkeypatch.setenv("MORE_OPTUNA_GRACE_S", "4")
    storage = make_storage(optuna_db)
    study = optuna.create_study(study_name="heartbeats", storage=storage, direction="maximize")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    workers = {}
    try:
        for name, mode in (("killed-optimize", "optimize"), ("killed-ask", "ask"), ("alive", "optimize")):
            workers[name] = subprocess.Popen([sys.executable, "-c", WORKER, optuna_db, mode, "heartbeats"], env=env,
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
            line = workers[name].stdout.readline()  # "running N": the trial is RUNNING and beating
            assert line.startswith("running"), workers[name].stderr.read()[-3000:] if not line else line
        numbers = {t.number: t for t in study.get_trials(deepcopy=False)}
        assert [t.state.name for t in numbers.values()] == ["RUNNING"] * 3
        for name in ("killed-optimize", "killed-ask"):
            os.kill(workers[name].pid, signal.SIGKILL)
            workers[name].wait(timeout=30)
        time.sleep(6)  # past the grace period; the live worker has kept beating
        assert fail_stale(study) == 2

        def quick(trial):
            return trial.suggest_float("x", 0.0, 1.0)

        study.optimize(quick, n_trials=2)  # takes the two queued copies first
        trials = study.get_trials(deepcopy=False)
        failed = [t for t in trials if t.state.name == "FAIL"]
        assert sorted(t.number for t in failed) == [0, 1]
        retried = {optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t): t for t in trials
                   if t.state.name == "COMPLETE"}
        assert sorted(retried) == [0, 1]
        for number, trial in retried.items():
            assert trial.params == numbers[number].params  # the same point, run again
        assert trials[2].state.name == "RUNNING"  # the live worker's trial is left alone
        assert fail_stale(study) == 0
        err = capfd.readouterr().err
        assert err.count("(its worker was lost); queued again") == 2
    finally:
        for proc in workers.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
