"""The launch API (``more.harness.launch``) with a light trainer: a spec launched from Python, reuse of what ran,
trials ASHA stopped early reused as complete results, and trials another live launch trains waited for and reported.
Each launch starts its own loopback Ray; the trials take well under a second each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from light_trainer import light_train
from loopback_cluster import tiny_overrides, write_spec

from more.harness import LaunchOptions, launch
from more.harness.reuse import CONTINUE, REUSE, WAIT

LIGHT = {"train.max_iters": 6, "train.eval_every": 3, "eval.num_vis": 0}


@pytest.fixture(autouse=True)
def _ray_env(proc_root, monkeypatch):
    """Ray's processes carry the test's folder in their environment (the fixture kills them by it), and the token
    auth a launch turns on is undone afterwards."""
    monkeypatch.setenv("MORE_TEST_ROOT", str(proc_root))
    monkeypatch.setenv("MORE_CODE_ID", f"launch-api-{proc_root.name}")  # a code identity no other test's trials have
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)


def light_spec(root: Path, name: str, **extra) -> Path:
    overrides = {**tiny_overrides(root / "synth"), **LIGHT}
    return write_spec(root / f"{name}.yaml", name, {"more": {}, "wo_cre": {"lir.cre_weight": 0.0}},
                      overrides=overrides, **extra)


def test_a_spec_launched_from_python_runs_publishes_and_is_reused_next_time(proc_root, monkeypatch):
    from mlflow.tracking import MlflowClient

    spec = light_spec(proc_root, "api", seeds=[0, 1], max_concurrent=2)
    storage = proc_root / "store"
    seen = []
    lines: list[str] = []
    result = launch(spec, storage=str(storage), trainer=light_train, finalizers=[seen.append],
                    options=LaunchOptions(rerun=True), say=lines.append, warn=lines.append)
    assert result.ok, lines
    assert [(r.trial, r.status, r.iterations) for r in result.rows] == [
        ("more-s0", "TERMINATED", 6), ("more-s1", "TERMINATED", 6), ("wo_cre-s0", "TERMINATED", 6),
        ("wo_cre-s1", "TERMINATED", 6)]
    assert result.rows[0].metric == pytest.approx(96.06) and result.rows[2].metric == pytest.approx(100.06)
    experiment = Path(result.experiment)
    assert experiment == storage / f"api-{result.spec_hash}"
    assert json.loads((experiment / "results.json").read_text())["trials"][3]["metric"] == pytest.approx(90.06)
    assert (experiment / "spec.yaml").read_text() == spec.read_text()
    # the finalizer ran once, after Tune, with every row and the launch's MLflow trial runs
    (after,) = seen
    assert [r.status for r in after.rows] == ["TERMINATED"] * 4 and len(after.trial_runs) == 4
    # what later launches find: outcome.json per run folder, indexed under its config key
    outcome = json.loads((experiment / "more-s0" / "run" / "outcome.json").read_text())
    assert outcome["status"] == "FINISHED" and outcome["iterations"] == 6 and outcome["stopped_early"] == ""
    assert len(list((storage / ".results").glob("*/api-*--more-s0"))) == 1
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_run(result.parent_run_id).info.experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'")
    assert sorted(r.info.run_name for r in runs) == ["more-s0", "more-s1", "wo_cre-s0", "wo_cre-s1"]
    assert all(r.info.status == "FINISHED" and r.data.tags["more.device"] == "cpu" for r in runs)

    # another spec hash with the same trials: all reused from the storage's index, no Ray started
    again = light_spec(proc_root, "api", seeds=[0, 1], max_concurrent=2, resources={"cpus": 0.5, "gpus": 0})
    lines.clear()
    second = launch(again, storage=str(storage), trainer=light_train, say=lines.append, warn=lines.append)
    assert second.ok and second.spec_hash != result.spec_hash
    assert [d.action for d in second.decisions] == [REUSE] * 4
    assert "all 4 trials reused: no Ray started" in lines
    assert [r.origin for r in second.rows] == [f"api-{result.spec_hash}/{r.trial}" for r in result.rows]


def test_trials_asha_stopped_early_are_complete_results_for_the_next_launch(proc_root, monkeypatch):
    asha = {"type": "asha", "grace_period": 3, "reduction_factor": 2, "max_t": 6}
    spec = light_spec(proc_root, "asha", seeds=[0, 1], max_concurrent=1, scheduler=asha)
    storage = proc_root / "store"
    result = launch(spec, storage=str(storage), trainer=light_train, options=LaunchOptions(rerun=True, tracking=False),
                    say=lambda _: None)
    assert result.ok
    iterations = {r.trial: r.iterations for r in result.rows}
    assert iterations["wo_cre-s0"] == 6 and min(iterations.values()) == 3, iterations  # one by one: the best first
    experiment = Path(result.experiment)
    outcomes = {n: json.loads((experiment / n / "run" / "outcome.json").read_text()) for n in iterations}
    stopped = sorted(n for n, o in outcomes.items() if o["stopped_early"] == "scheduler")
    assert stopped == sorted(n for n, it in iterations.items() if it == 3)
    assert outcomes["wo_cre-s0"]["stopped_early"] == ""

    # the next launch of the same trials (another spec hash) reuses the early-stopped ones, never continues them
    again = light_spec(proc_root, "asha", seeds=[0, 1], max_concurrent=1, scheduler=asha,
                       resources={"cpus": 0.5, "gpus": 0})
    second = launch(again, storage=str(storage), trainer=light_train, options=LaunchOptions(tracking=False),
                    say=lambda _: None)
    assert [d.action for d in second.decisions] == [REUSE] * 4
    assert not [d for d in second.decisions if d.action == CONTINUE]
    why = {d.trial: d.why for d in second.decisions}
    assert all("stopped early by the scheduler" in why[n] for n in stopped)
    assert [r.iterations for r in second.rows] == [iterations[r.trial] for r in second.rows]


HOLDER = """
import json, os, socket, sys, time
path = sys.argv[1]
os.makedirs(os.path.dirname(path), exist_ok=True)
with open(path, "x") as fh:
    json.dump({"host": socket.gethostname(), "pid": os.getpid(), "experiment": "other-0123", "token": "theirs",
               "trial": "wo_cre-s1"}, fh)
print("claimed", flush=True)
time.sleep(600)
"""


def _result_of_other_launch(storage: Path, ident, metrics: dict) -> None:
    """What the other launch leaves for its trial: a run folder with identity and outcome, indexed by config key."""
    from more.harness import results_index

    run_dir = storage / "other-0123" / "wo_cre-s1" / "run"
    run_dir.mkdir(parents=True)
    (run_dir / "identity.json").write_text(json.dumps(ident.as_dict()))
    (run_dir / "outcome.json").write_text(json.dumps({"status": "FINISHED", "iterations": 6, "metrics": metrics}))
    results_index.add(storage, ident.config_key, run_dir)


def test_a_trial_another_live_launch_trains_is_waited_for_and_reported(proc_root, monkeypatch):
    from more.harness.dry_run import dry_run
    from more.harness.identity import spec_identities
    from more.harness.spec import expand, load_spec

    spec = light_spec(proc_root, "claimed", seeds=[0, 1], max_concurrent=2)
    storage = proc_root / "store"
    loaded = load_spec(spec)
    ident = spec_identities(loaded, expand(loaded))["wo_cre-s1"]
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(storage / ".claims" / f"{ident.key}.json")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        planned = dry_run(spec, storage=str(storage), options=LaunchOptions(rerun=True, tracking=False))
        waited = [d for d in planned.decisions if d.action == WAIT]
        assert [d.trial for d in waited] == ["wo_cre-s1"] and f"pid {holder.pid}" in waited[0].why
        assert "3 to run, 0 reused, 1 being trained by another launch" in planned.text

        waiting = threading.Event()

        def say(text: str) -> None:
            if text.startswith("waiting for 1 trial another launch is training: wo_cre-s1"):
                waiting.set()

        def other_launch_ends() -> None:
            if waiting.wait(timeout=300):
                _result_of_other_launch(storage, ident, {"iter": 6.0, "val/cls_f1": 42.0})
                holder.kill()  # its claim is released: the owner is gone

        helper = threading.Thread(target=other_launch_ends)
        helper.start()
        warnings: list[str] = []
        result = launch(spec, storage=str(storage), trainer=light_train, say=say, warn=warnings.append,
                        options=LaunchOptions(rerun=True, tracking=False, claim_poll_s=0.2))
        helper.join(timeout=60)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert waiting.is_set()
    assert any(w.startswith(f"wo_cre-s1: being trained by another launch, pid {holder.pid}") for w in warnings)
    assert result.ok, warnings
    rows = {r.trial: r for r in result.rows}
    assert rows["wo_cre-s1"].origin == "other-0123/wo_cre-s1" and rows["wo_cre-s1"].metric == 42.0
    assert all(rows[n].status == "TERMINATED" and not rows[n].origin for n in ("more-s0", "more-s1", "wo_cre-s0"))
    assert not (Path(result.experiment) / "wo_cre-s1").exists()  # not trained here
    decision = {d.trial: d for d in result.decisions}["wo_cre-s1"]
    assert decision.action == REUSE and "trained by another launch meanwhile" in decision.why
    assert sorted(p.name for p in (storage / ".claims").iterdir()) == [f"{ident.key}.json"]  # ours were released


def test_running_a_finished_launch_again_catches_its_mlflow_runs_up(proc_root):
    """A run the store lost (here: deleted, as if its creation had never reached the store) is rebuilt from the run
    folder when the finished launch is run again; nothing is trained again, a third run finds nothing to send, and a
    run against another store says where the trials were tracked instead of touching it."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{proc_root / 'catchup.db'}"
    spec = light_spec(proc_root, "catchup")
    storage = str(proc_root / "store")
    lines: list[str] = []
    first = launch(spec, storage=storage, tracking_uri=uri, trainer=light_train, options=LaunchOptions(rerun=True),
                   say=lines.append, warn=lines.append)
    assert first.ok, lines
    client = MlflowClient(uri)
    experiment_id = client.get_run(first.parent_run_id).info.experiment_id
    children = f"tags.`mlflow.parentRunId` = '{first.parent_run_id}'"
    lost = {r.info.run_name: r for r in client.search_runs([experiment_id], filter_string=children)}["wo_cre-s0"]
    client.delete_run(lost.info.run_id)
    trained = (Path(first.experiment) / "wo_cre-s0" / "run" / "metrics.jsonl").read_text()

    lines.clear()
    again = launch(spec, storage=storage, tracking_uri=uri, trainer=light_train, say=lines.append, warn=lines.append)
    assert again.ok and lines[0].startswith("nothing to do"), lines
    assert "MLflow reconciled from 2 trial folders: 1 runs created, 2 evaluations sent, 1 runs ended" in lines, lines
    runs = {r.info.run_name: r for r in client.search_runs([experiment_id], filter_string=children)}
    assert sorted(runs) == ["more-s0", "wo_cre-s0"] and runs["wo_cre-s0"].info.run_id != lost.info.run_id
    rebuilt = runs["wo_cre-s0"]
    assert rebuilt.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(rebuilt.info.run_id, "val/cls_f1")] == [3, 6]
    assert rebuilt.data.metrics["val/cls_f1"] == pytest.approx(100.06)
    assert (Path(first.experiment) / "wo_cre-s0" / "run" / "metrics.jsonl").read_text() == trained

    lines.clear()
    launch(spec, storage=storage, tracking_uri=uri, trainer=light_train, say=lines.append, warn=lines.append)
    assert not [line for line in lines if "reconciled" in line], lines

    lines.clear()
    other = f"sqlite:///{proc_root / 'other.db'}"
    launch(spec, storage=storage, tracking_uri=other, trainer=light_train, say=lines.append, warn=lines.append)
    assert f"note: 2 trial folders were tracked into {uri}: pass --tracking-uri with that store to check their " \
           f"MLflow runs against the run folders" in lines, lines
    assert not (proc_root / "other.db").exists() or not MlflowClient(other).search_experiments(
        filter_string="name = 'catchup'")
