"""The reuse plan: which earlier results a launch takes, continues from, or runs again; and where it finds them."""

from __future__ import annotations

import json

from more.harness.identity import TrialIdentity
from more.harness.reuse import (
    CONTINUE,
    KEEP_FAILED,
    REUSE,
    RUN,
    Prior,
    local_priors,
    plan,
    plan_json,
    read_plan,
    summary_line,
)

IDS = {"a-s0": TrialIdentity("ka", "ca", "code1", 6), "b-s0": TrialIdentity("kb", "cb", "code1", 6)}


def prior(key: str, config_key: str, **kw) -> Prior:
    return Prior(**{"key": key, "config_key": config_key, "code": "code1", "status": "FINISHED", "iterations": 6,
                    "experiment": "old-1", "trial": "x", **kw})


def actions(priors, **kw) -> dict[str, str]:
    return {d.trial: d.action for d in plan(list(IDS), IDS, priors, **kw)}


def test_finished_results_are_reused_and_only_missing_trials_run():
    decisions = plan(list(IDS), IDS, [prior("ka", "ca")])
    assert [(d.trial, d.action) for d in decisions] == [("a-s0", REUSE), ("b-s0", RUN)]
    assert decisions[0].prior.experiment == "old-1"
    assert summary_line(decisions) == "1 to run, 1 reused"
    assert actions([prior("ka", "ca")], rerun=True) == {"a-s0": RUN, "b-s0": RUN}


def test_a_shorter_result_continues_from_its_checkpoint_or_runs_when_none_is_left():
    short = prior("ka", "ca", iterations=3, checkpoint="/x/run/checkpoints/iter_000003")
    decisions = plan(list(IDS), IDS, [short])
    assert decisions[0].action == CONTINUE and "iteration 3 of 6" in decisions[0].why
    assert "1 of those to run continue" in summary_line(decisions)
    assert actions([prior("ka", "ca", iterations=3)]) == {"a-s0": RUN, "b-s0": RUN}
    # the longest result wins over a shorter one
    assert actions([short, prior("ka", "ca", iterations=9)])["a-s0"] == REUSE


def test_failed_results_are_never_reused():
    failed = prior("ka", "ca", status="FAILED", error="TrainingDiverged: loss term 'cre'")
    decisions = plan(list(IDS), IDS, [failed])
    assert decisions[0].action == RUN and "failed before" in decisions[0].why
    kept = plan(list(IDS), IDS, [failed], retry_failed=False)
    assert kept[0].action == KEEP_FAILED and "TrainingDiverged" in kept[0].why
    assert "1 kept as failed" in summary_line(kept)


def test_other_code_is_reused_only_across_commits_and_the_same_code_is_preferred():
    old = prior("other-key", "ca", code="code0")
    decisions = plan(list(IDS), IDS, [old])
    assert decisions[0].action == RUN and "--reuse-across-commits" in decisions[0].why
    assert actions([old], across_commits=True)["a-s0"] == REUSE
    same = prior("ka", "ca", experiment="new-2")
    chosen = plan(list(IDS), IDS, [old, same], across_commits=True)[0]
    assert chosen.prior.experiment == "new-2"


def test_plan_round_trips_through_plan_json():
    decisions = plan(list(IDS), IDS, [prior("ka", "ca")])
    again, ids = read_plan(plan_json(decisions, IDS))
    assert ids == IDS and [(d.trial, d.action, d.prior) for d in again] == [
        (d.trial, d.action, d.prior) for d in decisions]


def test_local_priors_need_an_outcome_and_find_the_newest_checkpoint(tmp_path):
    def run_dir(exp: str, trial: str, outcome: dict | None, ckpts: tuple[int, ...] = ()):
        folder = tmp_path / exp / trial / "run"
        folder.mkdir(parents=True)
        (folder / "identity.json").write_text(json.dumps({"key": f"k-{trial}", "config_key": "c", "code": "x"}))
        if outcome is not None:
            (folder / "outcome.json").write_text(json.dumps(outcome))
        for it in ckpts:
            (folder / "checkpoints" / f"iter_{it:06d}").mkdir(parents=True)
            (folder / "checkpoints" / f"iter_{it:06d}" / "checkpoint.pt").write_bytes(b"")
        (folder / "checkpoints" / ".tmp_iter_000099").mkdir(parents=True)  # a torn write is no checkpoint
        return folder

    run_dir("e1", "done", {"status": "FINISHED", "iterations": 6, "metrics": {"val/seg/miou": 40.0, "x": "text"}},
            (3, 6))
    run_dir("e1", "broken", {"status": "FAILED", "iterations": None, "error": "boom"})
    run_dir("e2", "unended", None, (3,))  # its driver died before recording an outcome: never a result
    found = {p.trial: p for p in local_priors(str(tmp_path))}
    assert sorted(found) == ["broken", "done"]
    done = found["done"]
    assert (done.key, done.status, done.iterations, done.experiment) == ("k-done", "FINISHED", 6, "e1")
    assert done.metrics == {"val/seg/miou": 40.0} and done.checkpoint.endswith("iter_000006")
    assert found["broken"].status == "FAILED" and found["broken"].error == "boom"
    assert local_priors("s3://bucket/ray") == []
