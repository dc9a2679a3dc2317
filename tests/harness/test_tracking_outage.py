"""A small real grid whose MLflow server is SIGKILLed in the middle, stays down for longer than the client's retry
budget (``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0``) while one trial ends and the next one evaluates, then comes back on
the same port: afterwards every trial has one run, holding every evaluation of its run folder once.

As soon as a trial has ended and another has evaluated during the outage, the trial process is paused (SIGSTOP, then
SIGCONT, by PID) until the server has been down for more than 5 s and is back: with the store refusing connections a
tiny trial takes ~2 s, starting MLflow takes longer than the rest of the grid, and the trial that evaluated during the
outage must go on training with the server back (its sender catches up), whatever the machine's load."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from loopback_cluster import ablate_command, descendants, process_env, tiny_overrides, write_spec

from more.harness.spec import expand, load_spec, spec_hash
from more.tracking.store import start_server, stop_server


def outbox_events(experiment: Path) -> list[tuple[str, str, int]]:
    """``(trial, kind, step)`` of every outbox line so far (a line being written is skipped)."""
    events = []
    for path in sorted(experiment.glob("*/run/tracking/outbox.jsonl")):
        trial = path.parents[2].name
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            events.append((trial, record["kind"], int(record.get("step", 0))))
    return events


def trial_workers(driver_pid: int) -> list[int]:
    """The Ray worker processes running the trainable, among the driver's descendants (Ray titles them
    ``ray::ImplicitFunc...``)."""
    found = []
    for pid in descendants(driver_pid):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if title.startswith(b"ray::ImplicitFunc") or b"run_trial" in title:
            found.append(pid)
    return found


def evaluations_on_disk(run_dir: Path) -> list[int]:
    """The iterations the trainer evaluated, from its own metrics.jsonl (the run folder is the truth)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    return sorted({int(r["iter"]) for r in records if "val/cls_f1" in r})


@pytest.mark.slow
def test_a_grid_survives_the_tracking_server_down_longer_than_the_client_retries(proc_root, template_db):
    from mlflow import MlflowClient

    folder = proc_root / "mlflow"
    folder.mkdir()
    shutil.copyfile(template_db, folder / "mlflow.db")
    backend = f"sqlite:///{folder / 'mlflow.db'}"
    server = start_server(backend, artifacts_dir=folder / "artifacts", host="127.0.0.1")
    port, url = server.port, server.url
    conditions = {"more": {}, "wo_cre": {"lir.cre_weight": 0.0}, "wo_gcr": {"gcr.enabled": False}}
    spec = write_spec(proc_root / "outage.yaml", "outage", conditions, max_concurrent=1,
                      overrides=tiny_overrides(proc_root / "synth", iters=8, every=2))
    digest = spec_hash(load_spec(spec), expand(load_spec(spec)))
    experiment = proc_root / "store" / f"outage-{digest}"
    env = {**process_env(proc_root), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
           "MORE_TRACKING_FINISH_WAIT_S": "2"}
    log = (proc_root / "ablate.log").open("w")
    driver = subprocess.Popen(ablate_command(spec, proc_root / "store", "--tracking-uri", url), env=env,
                              cwd=proc_root, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        while not any(kind == "eval" for _, kind, _ in outbox_events(experiment)):  # the grid is under way
            assert driver.poll() is None and time.monotonic() < deadline, (proc_root / "ablate.log").read_text()
            time.sleep(0.2)
        os.killpg(server.pid, signal.SIGKILL)  # the server and its worker, by PID, mid-grid
        server.process.wait(timeout=30)
        killed_at, before = time.monotonic(), outbox_events(experiment)
        while True:  # down until a trial has ended and another has evaluated without it
            during = Counter(outbox_events(experiment)) - Counter(before)
            ended = {trial for trial, kind, _ in during if kind == "end"}
            evaluated = {trial for trial, kind, _ in during if kind == "eval"} - ended
            if ended and evaluated:
                break
            assert driver.poll() is None and time.monotonic() < deadline, (proc_root / "ablate.log").read_text()
            time.sleep(0.05)
        paused = trial_workers(driver.pid)  # at once: with the store down a trial takes ~2 s on an idle machine
        assert paused, "no trial worker process found"
        for pid in paused:
            os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(max(0.0, 5.5 - (time.monotonic() - killed_at)))  # down for more than 5 s in any case
            down_s = time.monotonic() - killed_at
            server = start_server(backend, artifacts_dir=folder / "artifacts", host="127.0.0.1", port=port)
        finally:
            for pid in paused:
                os.kill(pid, signal.SIGCONT)
        code = driver.wait(timeout=max(60.0, deadline - time.monotonic()))
        output = (proc_root / "ablate.log").read_text()
        assert code == 0, output[-4000:]
        assert "unreachable" in output and "answers again" in output, output[-4000:]  # a sender caught up
        assert "MLflow reconciled from 3 trial folders" in output and "could not be" not in output, output[-4000:]
        assert down_s > 5
        try:
            check_runs(MlflowClient(url), experiment, spec, digest)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- ablate output (end) ---\n{output[-6000:]}") from None
    finally:
        if driver.poll() is None:
            driver.kill()
        log.close()
        stop_server(server)


def check_runs(client, experiment: Path, spec: Path, digest: str) -> None:
    """One FINISHED run per trial, holding each evaluation of the trial's run folder exactly once."""
    exp = client.get_experiment_by_name("outage")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("more.kind") == "launch"]
    children = [r for r in runs if r.data.tags.get("more.kind") == "trial"]
    assert len(parents) == 1
    keys = Counter(r.data.tags["more.trial_key"] for r in children)
    assert keys == Counter({f"{digest}:{t.name}": 1 for t in expand(load_spec(spec))})  # one run per trial
    for run in children:
        name = run.info.run_name
        on_disk = evaluations_on_disk(experiment / name / "run")
        assert on_disk == [2, 4, 6, 8], name
        assert run.info.status == "FINISHED", name
        for key in ("val/cls_f1", "val/seg/miou", "time/tracking_sec"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert steps == on_disk, (name, key, steps)  # every evaluation, none twice
        loss = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
        assert loss == on_disk, (name, loss)  # metrics.jsonl records (log_every = eval_every here)
        files = {a.path for a in client.list_artifacts(run.info.run_id, "per_class")}
        assert {f"per_class/iter_{s:06d}.csv" for s in on_disk} <= files, name
