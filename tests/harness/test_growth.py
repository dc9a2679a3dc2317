"""Growing an ablation on the embedded loopback Ray: finish a 2-condition x 1-seed spec, add a seed and a condition,
and check that only the new trials train, that reuse follows the content key (config and code identity), that a
killed grown launch resumes, that ``status`` sees it while it runs, and that a retried trial loses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from loopback_cluster import ablate_command, process_env, tiny_overrides, write_spec

from more.harness.spec import expand, load_spec, spec_hash

PYTHON = sys.executable
V1 = {"more": {}, "wo_gcr": {"gcr.enabled": False}}
V2 = {**V1, "wo_cre": {"lir.cre_weight": 0.0}}


def digest_of(spec: Path) -> str:
    loaded = load_spec(spec)
    return spec_hash(loaded, expand(loaded))


def more(*args: str, env: dict, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "more", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def child_runs() -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("grow")
    return [r for r in client.search_runs([exp.experiment_id], max_results=1000)
            if r.data.tags.get("more.kind") == "trial"]


@pytest.mark.slow
def test_grown_spec_trains_only_the_new_trials_resumes_and_loses_no_step(proc_root):
    from mlflow.tracking import MlflowClient

    overrides = tiny_overrides(proc_root / "synth")
    storage = proc_root / "store"
    env = process_env(proc_root)
    v1 = write_spec(proc_root / "v1.yaml", "grow", V1, overrides=overrides, max_concurrent=2, max_failures=1)

    # 1. the first launch; each trial's process SIGKILLs itself once after writing and tracking its iteration-3
    # checkpoint, before Tune records it: the retry must continue from that checkpoint and log no step twice
    first = subprocess.run(ablate_command(v1, storage, reuse=True), env={**env, "MORE_FAULT_KILL_AFTER_CKPT": "3"},
                           cwd=proc_root, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    exp1 = storage / f"grow-{digest_of(v1)}"
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    for name in ("more-s0", "wo_gcr-s0"):
        run_dir = exp1 / name / "run"
        assert (run_dir / ".fault_injected").read_text() == "3"
        log = (run_dir / "train.log").read_text()
        assert "iterations 0->6" in log and "iterations 3->6" in log  # the retry started at the checkpoint it wrote
        assert len(json.loads((run_dir / "identity.json").read_text())["attempts"]) == 2
        (run,) = [r for r in child_runs() if r.info.run_name == name]
        assert run.info.status == "FINISHED" and run.data.tags["more.content_key"]
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val/seg/miou")] == [3, 6]
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [3, 6]
    keys1 = {r.info.run_name: r.data.tags["more.content_key"] for r in child_runs()}

    # 2. the grown spec: one more seed and one more condition; the dry run says what will run and what is reused
    v2 = write_spec(proc_root / "v2.yaml", "grow", V2, overrides=overrides, seeds=[0, 1], max_concurrent=1)
    dry = more("ablate", str(v2), "--storage", str(storage), "--dry-run", env=env, cwd=proc_root)
    assert dry.returncode == 0 and "4 to run, 2 reused" in dry.stdout, dry.stdout + dry.stderr
    assert "more-s0   | reuse" in dry.stdout and f"grow-{digest_of(v1)}/more-s0" in dry.stdout
    # another code identity: nothing is reused, unless asked to reuse across commits
    other_code = {**env, "MORE_CODE_ID": "0123456789abcdef"}
    dry = more("ablate", str(v2), "--storage", str(storage), "--dry-run", env=other_code, cwd=proc_root)
    assert "6 to run, 0 reused" in dry.stdout and "--reuse-across-commits would take them" in dry.stdout
    dry = more("ablate", str(v2), "--storage", str(storage), "--dry-run", "--reuse-across-commits", env=other_code,
               cwd=proc_root)
    assert "4 to run, 2 reused" in dry.stdout
    # one config value changed in one condition: that condition's trials run again, the other one is reused
    edited = {**V1, "wo_gcr": {"gcr.enabled": False, "lir.cre_weight": 0.1}}
    changed = write_spec(proc_root / "v2b.yaml", "grow", edited, overrides=overrides)
    dry = more("ablate", str(changed), "--storage", str(storage), "--dry-run", env=env, cwd=proc_root)
    assert "1 to run, 1 reused" in dry.stdout and "wo_gcr-s0 | run" in dry.stdout

    # 3. launch it (one trial at a time), watch it with `status`, kill the driver midway, resume it
    digest2 = digest_of(v2)
    exp2 = storage / f"grow-{digest2}"
    new = ["more-s1", "wo_gcr-s1", "wo_cre-s0", "wo_cre-s1"]
    with (proc_root / "grown.log").open("wb") as log:
        driver = subprocess.Popen(ablate_command(v2, storage, reuse=True), env=env, cwd=proc_root, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline, seen = time.monotonic() + 600, ""
            while not ("running" in seen and "pending" in seen):
                assert driver.poll() is None and time.monotonic() < deadline, (proc_root / "grown.log").read_text()
                time.sleep(1)
                seen = more("status", str(v2), "--storage", str(storage), env=env, cwd=proc_root, timeout=120).stdout
            lines = {line.split(" | ")[0].strip(): line for line in seen.splitlines() if " | " in line}
            assert " reused " in lines["more-s0"] and " reused " in lines["wo_gcr-s0"], seen
            assert "launch running" in seen and "GPU-hours (0 GPU per trial): spent 0.00" in seen
            while not list(exp2.glob("*/run/checkpoints/iter_000006")):  # one new trial done, others to go
                assert driver.poll() is None and time.monotonic() < deadline, (proc_root / "grown.log").read_text()
                time.sleep(0.5)
        finally:
            os.kill(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)
    stopped = more("status", str(v2), "--storage", str(storage), env=env, cwd=proc_root).stdout
    assert "launch not running" in stopped
    resumed = subprocess.run(ablate_command(v2, storage, "--resume", reuse=True), env=env, cwd=proc_root,
                             capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]

    # exactly the new trials trained in the grown experiment, the first launch's trials were not touched again
    assert sorted(p.parent.name for p in exp2.glob("*/run")) == sorted(new)
    for name in ("more-s0", "wo_gcr-s0"):
        assert len(json.loads((exp1 / name / "run" / "identity.json").read_text())["attempts"]) == 2  # as before
    rows = {r["trial"]: r for r in json.loads((exp2 / "results.json").read_text())["trials"]}
    assert list(rows) == ["more-s0", "more-s1", "wo_gcr-s0", "wo_gcr-s1", "wo_cre-s0", "wo_cre-s1"]
    assert all(r["status"] == "TERMINATED" and r["iterations"] == 6 for r in rows.values()), rows
    assert rows["more-s0"]["origin"] == f"grow-{digest_of(v1)}/more-s0" and not rows["more-s1"]["origin"]
    assert rows["more-s0"]["content_key"] == keys1["more-s0"]
    done = more("status", str(v2), "--storage", str(storage), env=env, cwd=proc_root).stdout
    assert "4 done, 2 reused" in done or "2 reused, 4 done" in done, done

    # MLflow: one run per content key (the reused ones linked to the new launch, never copied)
    runs = child_runs()
    keys = [r.data.tags["more.content_key"] for r in runs]
    assert len(runs) == 6 and len(set(keys)) == 6, [r.info.run_name for r in runs]
    linked = [r.info.run_name for r in runs if f"more.reused_by.{digest2}" in r.data.tags]
    assert sorted(linked) == ["more-s0", "wo_gcr-s0"]

    # the report of the grown spec holds all six trials and says which were reused
    from more.report.sources import Checkpoint, load_experiment

    exp = load_experiment(str(v2), tracking_uri=os.environ["MLFLOW_TRACKING_URI"], storage=storage,
                          checkpoint=Checkpoint())
    assert sorted((r.trial, r.status) for r in exp.records) == sorted((n, "FINISHED") for n in rows)
    assert any(n.startswith("2 trials reused from earlier launches") for n in exp.notes), exp.notes

    # 4. a new spec hash whose trials are all reused starts no Ray at all
    v1b = write_spec(proc_root / "v1b.yaml", "grow", V1, overrides=overrides, max_concurrent=2,
                     resources={"cpus": 0.5, "gpus": 0})  # another spec hash, the same trials
    again = more("ablate", str(v1b), "--storage", str(storage), env=env, cwd=proc_root)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "all 2 trials reused: no Ray started" in again.stdout and "local Ray" not in again.stdout
    assert len(child_runs()) == 6
