"""A trial on two DDP processes (Ray Train ``TorchTrainer``, gloo) inside the embedded loopback Ray, end to end."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from loopback_cluster import ablate_command, process_env, result_lines, tiny_overrides, write_spec

from more.harness.spec import expand, load_spec, spec_hash


@pytest.mark.slow
def test_two_worker_trial_reports_every_evaluation_to_tune_and_mlflow(proc_root):
    spec = write_spec(proc_root / "ddp.yaml", "ddp", {"more": {}},
                      overrides=tiny_overrides(proc_root / "synth", iters=9, every=3), stop={"iter": 6},
                      resources={"cpus": 0.5, "gpus": 0, "workers": 2})  # 2 workers fit the 2-core test machines
    digest = spec_hash(load_spec(spec), expand(load_spec(spec)))
    env = {**process_env(proc_root), "GLOO_SOCKET_IFNAME": "lo"}  # gloo's pairs on loopback too
    out = subprocess.run(ablate_command(spec, proc_root / "store"), env=env, cwd=proc_root, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "| 2 DDP processes x 4 images" in out.stdout  # rank 0's log lines reach the driver through the relay

    experiment = proc_root / "store" / f"ddp-{digest}"
    (row,) = json.loads((experiment / "results.json").read_text())["trials"]
    assert (row["status"], row["iterations"]) == ("TERMINATED", 6) and row["metric"] is not None  # stopped at 6
    trial = experiment / "more-s0"
    assert [r["iter"] for r in result_lines(trial)] == [3, 6]  # every evaluation reached Tune as it happened
    assert not list(trial.glob("checkpoint_*"))  # the run folder holds the checkpoints: Tune keeps no copy
    assert (trial / "ray_train").is_dir()  # the TorchTrainer's own folder: the trial did run through Ray Train

    run = trial / "run"  # rank 0 alone wrote the run folder: one record per iteration, checkpoints 3 and 6
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records if "val/seg/miou" not in r] == [3, 6]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["iter_000003", "iter_000006"]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("ddp")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`more.spec_hash` = '{digest}'")
    (child,) = [r for r in runs if r.data.tags.get("more.kind") != "launch"]
    assert child.info.status == "FINISHED" and child.info.run_name == "more-s0"
    steps = [m.step for m in client.get_metric_history(child.info.run_id, "val/seg/miou")]
    assert steps == [3, 6]
