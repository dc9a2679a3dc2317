"""Tracking that stays complete and exact when the store fails: calls that fail, calls whose answer is lost after
they landed, a create_run retried after a lost answer, a dead server, and the driver's reconciliation from the run
folder. Every store here is a real sqlite MLflow store; the faults are injected around the real client."""

from __future__ import annotations

import json
import time
import warnings
from collections import Counter
from pathlib import Path

import pytest

import more.tracking.trial_run as trial_run
from more.tracking import LaunchTracker, TrialTracker, find_or_create_run, reconcile, trial_key
from more.tracking.outbox import OUTBOX, read_outbox
from more.tracking.store import free_port, make_client

DIGEST = "0123456789ab"


@pytest.fixture(autouse=True)
def _short_backoff(monkeypatch):
    """Retries 50 ms apart, doubling to 0.4 s (1 s to 30 s in real use): the tests wait for faults, not clocks."""
    import more.tracking.sender as sender

    monkeypatch.setattr(sender, "BACKOFF_FIRST_S", 0.05)
    monkeypatch.setattr(sender, "BACKOFF_MAX_S", 0.4)


class Faulty:
    """A real ``MlflowClient`` whose listed methods misbehave, call by call: ``fail`` raises before the call reaches
    the store, ``lose`` makes the call and then raises (the answer was lost), ``ok`` passes through."""

    def __init__(self, real, **plan: list[str]) -> None:
        self.real, self.plan, self.calls = real, {k: list(v) for k, v in plan.items()}, Counter()

    def __getattr__(self, name: str):
        fn = getattr(self.real, name)
        if name not in self.plan:
            return fn

        def call(*args, **kwargs):
            self.calls[name] += 1
            behaviour = self.plan[name].pop(0) if self.plan[name] else "ok"
            if behaviour == "fail":
                raise ConnectionError(f"{name}: server gone")
            out = fn(*args, **kwargs)
            if behaviour == "lose":
                raise TimeoutError(f"{name}: the answer was lost")
            return out

        return call


def faulty_clients(monkeypatch, module, **plan: list[str]) -> list[Faulty]:
    """Make ``module.make_client`` hand out :class:`Faulty` clients with ``plan``; returns the clients it made."""
    made: list[Faulty] = []

    def make(uri: str) -> Faulty:
        made.append(Faulty(make_client(uri), **plan))
        return made[-1]

    monkeypatch.setattr(module, "make_client", make)
    return made


def launch(uri: str, name: str) -> LaunchTracker:
    return LaunchTracker.start(uri, name, DIGEST, f"name: {name}\n", "abc", strict=True)


def steps(client, run_id: str, key: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, key)]


def write_records(run_dir: Path, iters: range, keys: int = 3) -> None:
    """The trainer's metrics.jsonl: one record per iteration with ``keys`` training values."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "metrics.jsonl").open("a") as fh:
        for i in iters:
            fh.write(json.dumps({"iter": i, **{f"train/k{j}": i + j / 10 for j in range(keys)}}) + "\n")


def test_failed_calls_are_retried_and_every_evaluation_arrives_once(make_store, monkeypatch, tmp_path):
    uri = make_store()
    parent = launch(uri, "flaky_spec")
    made = faulty_clients(monkeypatch, trial_run, log_batch=["fail", "fail", "ok", "fail"])
    run_dir = tmp_path / "run"
    write_records(run_dir, range(1, 7))
    inner = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trial = TrialTracker.open(uri, parent.run_id, trial_key(DIGEST, "t-s0"), {"more.kind": "trial"},
                                  run_dir=run_dir, finish_wait_s=60)
        report = trial.report_callback(lambda m, d: inner.append(m["iter"]))
        report({"iter": 3.0, "val/seg/miou": 30.0}, None)
        report({"iter": 6.0, "val/seg/miou": 60.0}, None)
        trial.finish("FINISHED")
    assert inner == [3.0, 6.0]  # the trial's own report went on at once
    client = parent.client
    run = client.get_run(trial.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["more.logged_through"] == "6"
    assert steps(client, trial.run_id, "val/seg/miou") == [3, 6]
    assert steps(client, trial.run_id, "train/k0") == [1, 2, 3, 4, 5, 6]
    assert made[0].calls["log_batch"] >= 5  # 4 planned faults and the calls that finally went through
    texts = [str(w.message) for w in caught]
    assert sum("unreachable" in t for t in texts) >= 1 and sum("answers again" in t for t in texts) >= 1
    assert not (run_dir / "tracking" / "pending").exists() or not any((run_dir / "tracking" / "pending").iterdir())


def test_a_batch_whose_answer_was_lost_is_sent_again_without_a_second_copy(make_store, monkeypatch, tmp_path):
    """The store took the batch but the answer never came: the resend carries the same rows (same timestamps), which
    the store recognises. An evaluation of more than 1000 values goes out in several calls; the second call's answer
    is lost here, after the first call's rows were stored."""
    uri = make_store()
    parent = launch(uri, "lost_spec")
    faulty_clients(monkeypatch, trial_run, log_batch=["ok", "lose", "ok", "ok", "lose"])
    run_dir = tmp_path / "run"
    write_records(run_dir, range(1, 301), keys=4)  # 300 records x 5 values + the evaluation's: three calls
    trial = TrialTracker.open(uri, parent.run_id, trial_key(DIGEST, "l-s0"), {}, run_dir=run_dir, finish_wait_s=60)
    trial.report_callback()({"iter": 300.0, "val/seg/miou": 1.5}, None)
    write_records(run_dir, range(301, 304), keys=4)
    trial.report_callback()({"iter": 303.0, "val/seg/miou": 2.5}, None)
    trial.finish("FINISHED")
    client = parent.client
    for key in ("train/k0", "train/k3", "iter", "val/seg/miou", "time/tracking_sec"):
        history = steps(client, trial.run_id, key)
        assert len(history) == len(set(history)), (key, Counter(history).most_common(2))
    assert steps(client, trial.run_id, "train/k2") == list(range(1, 304))
    assert steps(client, trial.run_id, "val/seg/miou") == [300, 303]


def test_a_create_run_whose_answer_was_lost_leaves_one_run(make_store, monkeypatch):
    uri = make_store()
    parent = launch(uri, "ghost_spec")
    made = faulty_clients(monkeypatch, trial_run, create_run=["lose"])
    trial = TrialTracker.open(uri, parent.run_id, trial_key(DIGEST, "g-s0"), {}, finish_wait_s=60)
    trial.report_callback()({"iter": 1.0, "val/seg/miou": 1.0}, None)
    trial.finish()
    assert made[0].calls["create_run"] == 1  # found by its key after the lost answer: not created again
    runs = parent.client.search_runs([parent.experiment_id], "tags.`more.trial_key` = '0123456789ab:g-s0'")
    assert [r.info.run_id for r in runs] == [trial.run_id] and runs[0].info.status == "FINISHED"


def test_duplicate_runs_of_one_key_resolve_to_the_oldest(make_store):
    uri = make_store()
    parent = launch(uri, "dup_spec")
    client, exp = parent.client, parent.experiment_id
    first = client.create_run(exp, run_name="d", tags={"more.trial_key": "k:d"}, start_time=1000)
    second = client.create_run(exp, run_name="d", tags={"more.trial_key": "k:d"}, start_time=2000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run, created = find_or_create_run(client, exp, "tags.`more.trial_key` = 'k:d'", run_name="d", tags={})
    assert run.info.run_id == first.info.run_id and not created
    gone = client.get_run(second.info.run_id)
    assert gone.info.lifecycle_stage == "deleted" and gone.data.tags["more.duplicate_of"] == first.info.run_id
    again, created = find_or_create_run(client, exp, "tags.`more.trial_key` = 'k:d'", run_name="d", tags={})
    assert again.info.run_id == first.info.run_id and not created


def test_a_report_against_a_dead_server_returns_at_once(tmp_path):
    """Nothing listens on the port and the client keeps its default retries (minutes of backoff): opening gives up
    waiting after ``open_wait_s``, reports and the end only write the run folder."""
    uri = f"http://127.0.0.1:{free_port()}"
    run_dir = tmp_path / "run"
    t0 = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trial = TrialTracker.open(uri, "f" * 32, trial_key(DIGEST, "dead-s0"), {}, run_dir=run_dir, open_wait_s=0.5,
                                  finish_wait_s=0)
        opened = time.monotonic() - t0
        report = trial.report_callback()
        t1 = time.monotonic()
        for step in range(1, 51):
            report({"iter": float(step), "val/seg/miou": float(step)}, None)
        reported = time.monotonic() - t1
        trial.finish("FINISHED")
    assert opened < 10 and reported < 10  # the client alone would sit in its retries for minutes per call
    assert trial.run_id is None and trial.enabled
    state = read_outbox(run_dir)
    assert state.opening.uri == uri and sorted(state.evaluations) == list(range(1, 51))
    assert state.ending.status == "FINISHED"


def test_the_driver_reconciles_runs_from_the_run_folders(make_store, monkeypatch, tmp_path):
    """Two trials whose store never answered (and a third that is complete): the reconciliation creates the missing
    run, sends the missing evaluations and files, ends the runs whose attempt ended; a second pass finds nothing."""
    from tiny_config import TINY

    from more.config import load_config

    uri = make_store()
    parent = launch(uri, "rec_spec")
    experiment = tmp_path / "rec_spec-0123456789ab"
    cfg = load_config("synthetic", TINY)
    metrics = {"iter": 3.0, "val/seg/miou": 12.5, **{f"val/seg/iou/{c}": 1.0 for c in
                                                     ("background", "boat", "plane", "disc")}}

    def run(name: str, *, reachable: bool, end: str | None) -> TrialTracker:
        run_dir = experiment / name / "run"
        write_records(run_dir, range(1, 7))
        if not reachable:
            faulty_clients(monkeypatch, trial_run, get_run=["fail"] * 1000)
        else:
            monkeypatch.setattr(trial_run, "make_client", make_client)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trial = TrialTracker.open(uri, parent.run_id, trial_key(DIGEST, name), {"more.kind": "trial"}, cfg,
                                      run_dir=run_dir, pictures=False, open_wait_s=5,
                                      finish_wait_s=60 if reachable else 0)
            trial.report_callback()(metrics, None)
            trial.report_callback()({**metrics, "iter": 6.0}, None)
            if end:
                trial.finish(end)
            else:
                trial._sender.close()  # the process died: nothing more is sent from it
        return trial

    complete = run("done-s0", reachable=True, end="FINISHED")
    run("lost-s0", reachable=False, end="FINISHED")
    run("died-s0", reachable=False, end=None)  # a process that died: no end recorded
    (experiment / "untracked" / "run").mkdir(parents=True)  # a trial folder without an outbox is left alone
    assert len(parent.trial_runs()) == 1

    result = reconcile(uri, experiment)
    assert (result.folders, result.created, result.evaluations, result.ended, result.failed) == (3, 2, 4, 1, {})
    assert "2 runs created, 4 evaluations sent, 1 runs ended" in result.text()
    client = parent.client
    runs = {r.data.tags["more.trial_key"].split(":")[1]: r for r in parent.trial_runs()}
    assert sorted(runs) == ["died-s0", "done-s0", "lost-s0"]
    assert runs["done-s0"].info.run_id == complete.run_id
    assert runs["lost-s0"].info.status == "FINISHED" and runs["died-s0"].info.status == "RUNNING"
    for name, r in runs.items():
        assert steps(client, r.info.run_id, "val/seg/miou") == [3, 6], name
        assert steps(client, r.info.run_id, "train/k1") == [1, 2, 3, 4, 5, 6], name
        assert r.data.params["model.variant"] == "vit_micro" and r.data.tags["more.kind"] == "trial"
        files = {a.path for a in client.list_artifacts(r.info.run_id, "per_class")}
        assert files == {f"per_class/iter_00000{i}.{ext}" for i in (3, 6) for ext in ("csv", "md")}, name
        assert not any((experiment / name / "run" / "tracking" / "pending").iterdir())
    again = reconcile(uri, experiment)
    assert (again.created, again.evaluations, again.ended, again.failed) == (0, 0, 0, {}) and again.text() == ""
    assert len(parent.trial_runs()) == 3 and steps(client, runs["lost-s0"].info.run_id, "val/seg/miou") == [3, 6]


def test_evaluations_beyond_the_memory_bound_are_read_back_from_the_outbox(make_store, monkeypatch, tmp_path):
    uri = make_store()
    parent = launch(uri, "spill_spec")
    monkeypatch.setattr(trial_run, "MEMORY_EVALUATIONS", 2)
    made = faulty_clients(monkeypatch, trial_run, get_run=["fail"] * 1000)
    run_dir = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trial = TrialTracker.open(uri, parent.run_id, trial_key(DIGEST, "s-s0"), {}, run_dir=run_dir,
                                  open_wait_s=1)
        for step in range(1, 7):
            trial.report_callback()({"iter": float(step), "val/seg/miou": float(step)}, None)
        in_memory = [s for s, e in trial._state.evaluations.items() if e.metrics]
        made[0].plan["get_run"].clear()  # the store answers again
        trial.finish("FINISHED")
    assert in_memory == [5, 6]  # the bounded part; 1..4 were left to the outbox file
    assert (run_dir / OUTBOX).is_file()
    assert steps(parent.client, trial.run_id, "val/seg/miou") == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("kind", ["open", "eval", "end"])
def test_a_torn_last_line_of_the_outbox_is_ignored(tmp_path, kind):
    from more.tracking.outbox import Ending, Evaluation, Opening, Outbox

    box = Outbox(tmp_path)
    box.opened(Opening(uri="sqlite:////x.db", parent="p", trial_key="k:t", run_name="t", tags={}))
    box.evaluated(Evaluation(step=3, time_ms=1, metrics={"a": 1.0}))
    box.ended(Ending(status="FINISHED"))
    whole = (tmp_path / OUTBOX).read_text()
    lines = whole.splitlines(keepends=True)
    cut = {"open": 0, "eval": 1, "end": 2}[kind]
    (tmp_path / OUTBOX).write_text("".join(lines[:cut]) + lines[cut][: len(lines[cut]) // 2])
    state = read_outbox(tmp_path)
    assert (state.opening is not None) == (cut > 0)
    assert sorted(state.evaluations) == ([3] if cut > 1 else [])
    assert state.ending is None


def test_a_reconciliation_that_could_not_reach_a_run_says_what_to_run():
    from more.tracking.reconcile import Reconciled

    result = Reconciled(folders=2, failed={"/s/x-1/a-s0/run": "ConnectionError: refused",
                                           "/s/x-1/b-s0/run": "ConnectionError: refused"})
    assert result.text() == (
        "MLflow reconciled from 2 trial folders: 0 runs created, 0 evaluations sent, 0 runs ended; 2 could not be "
        "reconciled (e.g. /s/x-1/a-s0/run: ConnectionError: refused): run the same `ablate` command again once MLflow "
        "answers (nothing is trained again; the runs are caught up from the run folders)")
    assert Reconciled(elsewhere={"postgresql://me:secret@db/mlflow": 3}).elsewhere_text() == (
        "note: 3 trial folders were tracked into postgresql://me:***@db/mlflow: pass --tracking-uri with that store "
        "to check their MLflow runs against the run folders\n")
