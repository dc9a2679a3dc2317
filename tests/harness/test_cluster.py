"""Ablations on a two-node Ray cluster on loopback: placement on both nodes, a lost worker raylet, a killed driver.

The cluster (``ray start`` head on 127.0.0.2, worker on 127.0.0.3, one CPU each, token auth, private HOME and
temp dir) is started once for the module; every process is SIGKILLed by PID at teardown (see conftest.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from loopback_cluster import (
    HEAD_IP,
    WORKER_IP,
    ablate_command,
    result_lines,
    tiny_overrides,
    write_spec,
)

from more.harness.spec import expand, load_spec, spec_hash

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ITERS, EVERY = 12, 3
TRIALS = ["more-s0", "more-s1", "wo_gcr-s0", "wo_gcr-s1"]


def cluster_spec(folder: Path, name: str, **extra) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    spec = write_spec(folder / f"{name}.yaml", name, {"more": {}, "wo_gcr": {"gcr.enabled": False}}, seeds=[0, 1],
                      overrides=tiny_overrides(folder / "synth", iters=ITERS, every=EVERY), max_concurrent=2,
                      checkpoints={"keep": 1}, **extra)
    loaded = load_spec(spec)
    return spec, folder / "store" / f"{name}-{spec_hash(loaded, expand(loaded))}"


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the ablate command exited ({proc.returncode}) before {what}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def final_rows(experiment: Path) -> dict[str, dict]:
    return {r["trial"]: r for r in json.loads((experiment / "results.json").read_text())["trials"]}


def test_cluster_nodes_listen_on_loopback(loopback_cluster):
    alive = [n for n in loopback_cluster.nodes() if n["Alive"]]
    assert sorted(n["NodeManagerAddress"] for n in alive) == [HEAD_IP, WORKER_IP]
    assert all(n["NodeManagerAddress"].startswith("127.") for n in alive)


def test_killed_driver_resumes_without_rerunning_finished_trials(loopback_cluster):
    spec, experiment = cluster_spec(loopback_cluster.root / "driver", "driver_kill", max_failures=1)
    storage = str(experiment.parent)
    log = (loopback_cluster.root / "driver" / "first.log").open("wb")
    driver = subprocess.Popen(ablate_command(spec, Path(storage), "--address", loopback_cluster.address),
                              env=loopback_cluster.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    def trained() -> list[str]:
        """Trials whose run folder holds the last checkpoint (Tune's own files in the storage lag behind: the driver
        syncs them only now and then, so they cannot say what finished before the kill)."""
        return [n for n in TRIALS if (experiment / n / "run" / "checkpoints" / f"iter_{ITERS:06d}").is_dir()]

    try:
        finished = wait_for(trained, 600, "a finished trial", driver)
    finally:
        os.kill(driver.pid, signal.SIGKILL)  # the driver dies mid-experiment
        driver.wait(timeout=30)
        log.close()
    assert len(finished) < len(TRIALS), finished  # two at a time: the last two had not started
    kept = {name: (experiment / name / "run" / "metrics.jsonl").read_text() for name in finished}

    again = subprocess.run(ablate_command(spec, Path(storage), "--address", loopback_cluster.address),
                           env=loopback_cluster.env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "pass --resume to continue it" in again.stderr

    resumed = subprocess.run(ablate_command(spec, Path(storage), "--address", loopback_cluster.address, "--resume"),
                             env=loopback_cluster.env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    rows = final_rows(experiment)
    assert sorted(rows) == sorted(TRIALS)
    assert all(r["status"] == "TERMINATED" and r["iterations"] == ITERS for r in rows.values()), rows
    for name, text in kept.items():  # finished trials were not trained again (a relaunch continues from the end)
        assert (experiment / name / "run" / "metrics.jsonl").read_text() == text

    done = subprocess.run(ablate_command(spec, Path(storage), "--address", loopback_cluster.address),
                          env=loopback_cluster.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "nothing to do" in done.stdout and "already ran all 4 trials" in done.stdout


def test_lost_worker_raylet_is_retried_from_checkpoint_and_every_trial_completes(loopback_cluster):
    if not loopback_cluster.worker_alive():
        loopback_cluster.start_worker()
    spec, experiment = cluster_spec(loopback_cluster.root / "raylet", "raylet_kill", max_failures=2)
    # trials on both nodes log to a lean MLflow server on loopback (stopped by PID below)
    from more.tracking import start_server, stop_server

    server = start_server(f"sqlite:///{loopback_cluster.root / 'mlflow-server.db'}",
                          artifacts_dir=loopback_cluster.root / "mlflow-artifacts", host="127.0.0.1")
    try:
        check_raylet_kill(loopback_cluster, spec, experiment, server.url)
    finally:
        stop_server(server)


def check_raylet_kill(loopback_cluster, spec: Path, experiment: Path, tracking_uri: str) -> None:
    driver = subprocess.Popen(ablate_command(spec, experiment.parent, "--address", loopback_cluster.address,
                                             "--tracking-uri", tracking_uri),
                              env=loopback_cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)

    def victim() -> tuple[str, int] | None:
        """A trial on the worker node with a checkpoint and iterations still to go, from its run folder (Tune's
        result.json in the storage is synced from the driver only now and then)."""
        for name in TRIALS:
            run = experiment / name / "run"
            try:
                attempt = json.loads((run / "identity.json").read_text())["attempts"][-1]
            except (OSError, ValueError, KeyError, IndexError):
                continue
            checkpoints = sorted((run / "checkpoints").glob("iter_*"))
            if attempt.get("node_ip") == WORKER_IP and checkpoints:
                done = int(checkpoints[-1].name.removeprefix("iter_"))
                if EVERY < done < ITERS:  # past the first checkpoint: a restart from scratch would report EVERY
                    return name, done
        return None

    try:
        name, checkpoint_iter = wait_for(victim, 600, "a trial on the worker node", driver)
        os.kill(loopback_cluster.worker_raylet_pid(), signal.SIGKILL)
        output, _ = driver.communicate(timeout=900)
    finally:
        if driver.poll() is None:
            os.kill(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)
    assert driver.returncode == 0, output[-4000:]

    rows = final_rows(experiment)
    assert all(r["status"] == "TERMINATED" and r["iterations"] == ITERS for r in rows.values()), rows
    lines = result_lines(experiment / name)
    on_head = [int(x["iter"]) for x in lines if x["node_ip"] == HEAD_IP]
    assert on_head, f"{name} was not retried on the head"
    assert on_head[0] > EVERY and on_head[0] >= checkpoint_iter  # resumed from its checkpoint, not restarted
    used = {x["node_ip"] for t in TRIALS for x in result_lines(experiment / t)}
    assert used == {HEAD_IP, WORKER_IP}

    # MLflow on the server: one child run per trial, all FINISHED, with metrics; the retried trial kept its run
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("raylet_kill")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    children = [r for r in runs if r.data.tags.get("more.kind") == "trial"]
    assert sorted(r.info.run_name for r in children) == sorted(TRIALS), [r.info.run_name for r in runs]
    assert all(r.info.status == "FINISHED" and "val/seg/miou" in r.data.metrics for r in children)
    retried = next(r for r in children if r.info.run_name == name)
    assert int(retried.data.tags["more.attempts"]) >= 2  # the worker's attempt and the head's retry: one run


def test_a_dry_run_with_address_checks_the_data_on_a_node_that_can_hold_a_trial(loopback_cluster):
    folder = loopback_cluster.root / "dry"
    folder.mkdir()
    missing = folder / "nodata"
    overrides = {**tiny_overrides(missing), "data.synth_generate": False}
    spec = write_spec(folder / "dry.yaml", "dry", {"more": {}, "wo_gcr": {"gcr.enabled": False}}, overrides=overrides)
    command = [*ablate_command(spec, folder / "store", "--dry-run", "--no-tracking", "--address",
                               loopback_cluster.address)]
    out = subprocess.run(command, env=loopback_cluster.env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert "2 trials; estimated 0 GPU-hours" in out.stdout and "2 to run, 0 reused" in out.stdout
    assert "data roots and weights: checked on a cluster node" in out.stdout  # not on the driver's machine
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, out.stderr[-2000:]
    assert errors[0].startswith(("error: on node 127.0.0.2: ", "error: on node 127.0.0.3: "))
    assert f"data.root='{missing}': folder does not exist (trial more-s0 and 1 other)" in errors[0]
    assert not (folder / "store").exists()

    # the data is there now (a complete tree: the checks also read its split lists): the node finds it
    from more.config import load_config
    from more.data.synth import SynthOptions, generate_dataset

    generate_dataset(missing, SynthOptions.from_config(load_config("synthetic", [f"{k}={v}" for k, v in
                                                                                 overrides.items()])),
                     progress=lambda *_: None)
    out = subprocess.run(command, env=loopback_cluster.env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "  ok  on node 127.0.0." in out.stdout and f"data.root {missing} (trial more-s0 and 1 other)" in out.stdout
