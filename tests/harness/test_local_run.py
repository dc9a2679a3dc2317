"""A real ablation on the embedded loopback Ray: trials two at a time, a diverging trial, the results table."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from loopback_cluster import (
    ablate_command,
    descendants,
    marked_pids,
    process_env,
    result_lines,
    running,
    start_time,
    tiny_overrides,
    write_spec,
)

from more.harness.spec import expand, load_spec, spec_hash


def tracked_runs(spec_name: str, digest: str) -> tuple[object, list]:
    """The MLflow parent run of a launch and its child runs, from the session's isolated store (tests/conftest.py)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name(spec_name)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("more.kind") == "launch" and r.data.tags["more.spec_hash"] == digest]
    assert len(parents) == 1, [r.info.run_name for r in runs]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return parents[0], children


def test_embedded_ray_is_on_loopback_with_token_auth_and_stops_by_pid(proc_root, monkeypatch):
    import ray

    from more.harness.local_ray import ray_runtime

    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        monkeypatch.setenv(key, "")  # recorded as unset, so whatever enable_token_auth sets is undone afterwards
        monkeypatch.delenv(key)
    with ray_runtime(num_cpus=1, temp_dir=str(proc_root / "r")) as runtime:
        assert runtime.embedded and runtime.address.startswith("127.0.0.2:")
        nodes = ray.nodes()
        assert nodes and all(n["NodeManagerAddress"].startswith("127.") for n in nodes)
        assert os.environ["RAY_AUTH_MODE"] == "token" and len(os.environ["RAY_AUTH_TOKEN"]) == 64
        pids = list(runtime.pids)
        assert len(pids) >= 2  # at least GCS and raylet
    assert not ray.is_initialized()
    assert not [p for p in pids if running(p)]


@pytest.mark.slow
def test_local_ablation_runs_two_at_a_time_and_reports_a_diverged_trial(proc_root):
    conditions = {
        "more": {}, "wo_cre": {"lir.cre_weight": 0.0}, "wo_gcr": {"gcr.enabled": False},
        "wo_ure": {"lir.ure_weight": 0.0},
        "diverge": {"optim.lr": 1.0e6, "optim.warmup_iters": 0},  # a real NaN: TrainingDiverged in the trainer
    }
    spec = write_spec(proc_root / "local.yaml", "local", conditions,
                      overrides=tiny_overrides(proc_root / "synth", iters=9, every=3), stop={"iter": 6},
                      max_concurrent=2, max_failures=1, checkpoints={"keep": 1})
    digest = spec_hash(load_spec(spec), expand(load_spec(spec)))
    storage = proc_root / "store"
    out = subprocess.run(ablate_command(spec, storage), env=process_env(proc_root), cwd=proc_root,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    nodes_line = next(line for line in out.stdout.splitlines() if line.startswith("nodes: "))
    assert re.fullmatch(r"nodes: 127\.0\.0\.2 \(\d+ CPU, \d+ GPU\)", nodes_line)  # one node, on loopback

    experiment = storage / f"local-{digest}"
    assert (experiment / "spec_hash").read_text().strip() == digest
    assert (experiment / "spec.yaml").read_text() == spec.read_text()
    results = json.loads((experiment / "results.json").read_text())
    rows = {r["trial"]: r for r in results["trials"]}
    assert list(rows) == ["more-s0", "wo_cre-s0", "wo_gcr-s0", "wo_ure-s0", "diverge-s0"]  # the spec's order
    for name in ("more-s0", "wo_cre-s0", "wo_gcr-s0", "wo_ure-s0"):
        assert rows[name]["status"] == "TERMINATED"
        assert rows[name]["iterations"] == 6 and rows[name]["metric"] is not None  # stopped by the spec's stop rule
        assert rows[name]["node_ip"] == "127.0.0.2"
        assert (experiment / name / "run" / "metrics.jsonl").is_file()  # the trainer's own run folder
        # the run folder holds the checkpoints (a retry resumes from them); Tune keeps no copy of them
        kept = sorted(p.name for p in (experiment / name / "run" / "checkpoints").iterdir())
        assert kept == ["iter_000003", "iter_000006"]
        assert not list((experiment / name).glob("checkpoint_*"))
    bad = rows["diverge-s0"]
    assert bad["status"] == "ERROR" and bad["iterations"] is None
    assert bad["error"].startswith("TrainingDiverged: loss term") and "non-finite" in bad["error"]
    assert "not retried" in bad["error"]  # the retry stopped at once: same start, deterministic training

    assert "| trial | condition | sweep | seed | status | val/cls_f1 | iterations | node |" in out.stdout
    assert "| diverge-s0 | diverge | - | 0 | ERROR | - | - | - |" in out.stdout
    assert "1 of 5 trials failed:" in out.stderr and "diverge-s0: TrainingDiverged" in out.stderr
    assert (experiment / "results.md").read_text().startswith(f"# local ({digest})")
    assert (experiment / "results.csv").read_text().splitlines()[0].startswith("trial,condition,sweep,seed,status")

    # two at a time: at some trial's start another one was running, never two others. Tune's timestamps are
    # whole seconds (truncated): +1 on starts and none on ends keeps back-to-back trials from looking concurrent.
    spans = []
    for name in ("more-s0", "wo_cre-s0", "wo_gcr-s0", "wo_ure-s0"):
        lines = result_lines(experiment / name)
        spans.append((lines[0]["timestamp"] - lines[0]["time_total_s"] + 1, lines[-1]["timestamp"]))
    running = [sum(1 for s, e in spans if s <= t < e) for t, _ in spans]
    assert max(running) == 2, spans

    # MLflow: one parent run, one child run per trial with params, tags, metrics and artifacts; the NaN trial FAILED
    parent, children = tracked_runs("local", digest)
    by_name = {r.info.run_name: r for r in children}
    assert sorted(by_name) == sorted(rows) and parent.info.status == "FAILED"  # the launch had a failed trial
    # the last line links to the experiment's runs table, served by `more ui` over this store ($MLFLOW_TRACKING_URI),
    # in the saved view that ranks the trials by the spec's metric (more/tracking/views.py)
    assert out.stdout.rstrip().splitlines()[-1] == (f"MLflow runs: http://127.0.0.1:5000/#/experiments/"
                                                    f"{parent.info.experiment_id}/runs?viewStateShareKey=more-trials "
                                                    f"once `python -m more ui` serves the store")
    good = by_name["more-s0"]
    assert good.info.status == "FINISHED" and good.data.tags["more.condition"] == "more"
    assert good.data.tags["more.seed"] == "0" and good.data.tags["more.trial_key"] == f"{digest}:more-s0"
    assert good.data.tags["more.fidelity"] == "reference" and good.data.tags["more.ray_trial_id"]
    assert good.data.params["lir.cre_weight"] == "0.2" and good.data.params["model.variant"] == "vit_micro"
    assert {"val/seg/miou", "val/lam/miou", "train/loss", "time/sec_per_iter"} <= set(good.data.metrics)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    view = client.get_experiment(parent.info.experiment_id).tags["mlflow.sharedViewState.more-trials"]
    assert json.loads(json.loads(view)["state"])["orderByKey"] == "metrics.`val/cls_f1`"  # the spec's metric
    steps = [m.step for m in client.get_metric_history(good.info.run_id, "val/seg/miou")]
    assert steps == sorted(set(steps)) and steps[-1] == 6, steps
    artifacts = {a.path for a in client.list_artifacts(good.info.run_id)}
    assert {"config.yaml", "per_class", "pictures"} <= artifacts, artifacts
    assert by_name["wo_gcr-s0"].data.params["gcr.enabled"] == "False"
    failed = by_name["diverge-s0"]
    assert failed.info.status == "FAILED" and "TrainingDiverged" in failed.data.tags["more.error"]


@pytest.mark.slow
def test_killed_driver_leaves_no_ray_process_and_resume_finishes(proc_root):
    spec = write_spec(proc_root / "crash.yaml", "crash", {"more": {}, "wo_gcr": {"gcr.enabled": False}},
                      overrides=tiny_overrides(proc_root / "synth"), max_concurrent=2)
    digest = spec_hash(load_spec(spec), expand(load_spec(spec)))
    experiment = proc_root / "store" / f"crash-{digest}"
    env = process_env(proc_root)
    with (proc_root / "first.log").open("wb") as log:
        driver = subprocess.Popen(ablate_command(spec, proc_root / "store"), env=env, cwd=proc_root, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 600
            while not list(experiment.glob("*/run/checkpoints/iter_*")):
                assert driver.poll() is None and time.monotonic() < deadline, (proc_root / "first.log").read_text()
                time.sleep(0.2)
            # the raylet keeps its environment; its children (agents, trial workers) are what a crash could orphan
            (raylet,) = [p for p in marked_pids(str(proc_root)) if Path(f"/proc/{p}/comm").read_text() == "raylet\n"]
            node = {p: start_time(p) for p in [raylet, *descendants(raylet)]}
        finally:
            os.kill(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)
    deadline = time.monotonic() + 30
    while [p for p, started in node.items() if start_time(p) == started] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [p for p, started in node.items() if start_time(p) == started]

    resumed = subprocess.run(ablate_command(spec, proc_root / "store", "--resume"), env=env, cwd=proc_root,
                             capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    rows = json.loads((experiment / "results.json").read_text())["trials"]
    assert [(r["trial"], r["status"], r["iterations"]) for r in rows] == [
        ("more-s0", "TERMINATED", 6), ("wo_gcr-s0", "TERMINATED", 6)]
    # the resumed trials continued their MLflow runs: still one parent and exactly one child per trial
    parent, children = tracked_runs("crash", digest)
    assert sorted(r.info.run_name for r in children) == ["more-s0", "wo_gcr-s0"]
    assert all(r.info.status == "FINISHED" for r in children) and parent.info.status == "FINISHED"
