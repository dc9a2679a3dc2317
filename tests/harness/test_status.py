"""``python -m more status``: trial states from an experiment folder, ETA and GPU-hours, and no trainer import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from loopback_cluster import REPO, tiny_overrides, write_spec

from more.harness.claims import ClaimSet
from more.harness.identity import spec_identities
from more.harness.reuse import Decision, Prior, plan_json
from more.harness.spec import expand, load_spec, spec_hash
from more.harness.status import experiment_status, status_text


def fake_launch(tmp_path):
    """A spec of four trials and what its launch left: one reused, one done, one running at iteration 3 of 6
    (0.5 s per iteration), one failed; the fourth not started."""
    spec_file = write_spec(tmp_path / "s.yaml", "st", {"a": {}, "b": {"gcr.enabled": False}},
                           overrides=tiny_overrides(tmp_path / "synth"), seeds=[0, 1],
                           resources={"cpus": 1, "gpus": 0.5})
    spec = load_spec(spec_file)
    trials = expand(spec)
    ids = spec_identities(spec, trials, code="c")
    folder = tmp_path / "store" / f"st-{spec_hash(spec, trials)}"
    folder.mkdir(parents=True)
    old = Prior(ids["a-s0"].key, "x", "c", "FINISHED", 6, {"val/cls_f1": 0.75}, "st-old", "a-s0")
    decisions = [Decision("a-s0", "reuse", old)] + [Decision(t.name, "run") for t in trials[1:]]
    (folder / "plan.json").write_text(plan_json(decisions, ids))
    now = time.time()

    def run(name: str, records: list[dict], started: float, outcome: dict | None = None) -> None:
        run_dir = folder / name / "run"
        run_dir.mkdir(parents=True)
        (run_dir / "identity.json").write_text(json.dumps({"attempts": [{"started": started}]}))
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        if outcome:
            (run_dir / "outcome.json").write_text(json.dumps({**outcome, "finished": started + 100}))

    run("a-s1", [{"iter": 6, "time/sec_per_iter": 1.0, "val/cls_f1": 0.5}], now - 500,
        {"status": "FINISHED", "iterations": 6})
    run("b-s0", [{"iter": 3, "time/sec_per_iter": 0.5}, {"iter": 3, "val/cls_f1": 0.25}], now - 60)
    run("b-s1", [], now - 30, {"status": "FAILED", "error": "TrainingDiverged: loss term 'cre'"})
    return spec, trials, folder


def test_states_metrics_eta_and_gpu_hours_while_the_launch_runs(tmp_path):
    spec, trials, folder = fake_launch(tmp_path)
    with ClaimSet(str(folder.parent), experiment=folder.name) as claims:
        claims.claim("some-key", "b-s0")  # the launch's claims say it is alive
        status = experiment_status(spec, trials, folder)
    by = {t.trial: t for t in status.trials}
    assert status.launch_alive
    assert (by["a-s0"].state, by["a-s0"].metric, by["a-s0"].note) == ("reused", 0.75, "from st-old/a-s0")
    assert (by["a-s1"].state, by["a-s1"].iteration, by["a-s1"].elapsed_s) == ("done", 6, 100)
    running = by["b-s0"]
    assert (running.state, running.iteration, running.target, running.metric) == ("running", 3, 6, 0.25)
    assert running.sec_per_iter == 0.5 and running.eta_s == 1.5 and 55 < running.elapsed_s < 120
    assert by["b-s1"].state == "failed" and "TrainingDiverged" in by["b-s1"].note
    # spent: 100 s (done) + ~60 s (running) + 100 s (failed) at 0.5 GPU; remaining: the running trial's 1.5 s
    assert 0.5 * 255 / 3600 < status.gpu_hours_spent < 0.5 * 330 / 3600
    assert status.gpu_hours_left == 0.5 * 1.5 / 3600
    text = status_text(spec, status)
    assert "1 reused, 1 done, 1 running, 1 failed; launch running; about 0:02 of trial time left on 1 slot" in text
    assert "GPU-hours (0.5 GPU per trial): spent 0.04, remaining 0.00" in text


def test_without_a_live_launch_started_trials_are_stopped_and_others_not_started(tmp_path):
    spec, trials, folder = fake_launch(tmp_path)
    (folder / "b-s0" / "run" / "identity.json").unlink()  # as if it had never started
    status = experiment_status(spec, trials, folder)
    assert not status.launch_alive
    assert {t.trial: t.state for t in status.trials}["b-s0"] == "not started"
    (folder / "b-s0" / "run" / "identity.json").write_text(json.dumps({"attempts": [{"started": time.time()}]}))
    assert {t.trial: t.state for t in experiment_status(spec, trials, folder).trials}["b-s0"] == "stopped"


def test_the_status_command_never_imports_the_trainer(tmp_path):
    fake_launch(tmp_path)
    code = ("import sys; from more.__main__ import main; rc = main(['status', sys.argv[1], '--storage', sys.argv[2]]); "
            "bad = [m for m in sys.modules if m.startswith(('more.train', 'torch', 'ray', 'mlflow'))]; "
            "print('IMPORTED', bad); sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s.yaml"), str(tmp_path / "store")],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert "IMPORTED []" in out.stdout and "a-s0" in out.stdout and "reused" in out.stdout


def test_status_reads_the_last_values_from_the_end_of_a_long_metrics_file(tmp_path):
    from more.harness.status import TAIL_BYTES, _last_values

    records = [{"iter": i, "train/loss": 1.0 / i, "time/sec_per_iter": 0.5} for i in range(1, 400)]
    records.insert(100, {"iter": 100, "val/seg/miou": 41.5})  # the last evaluation, far back
    records += [{"iter": 400, "train/loss": 0.1}]  # the newest record carries no timing
    text = "".join(json.dumps(r) + "\n" for r in records) + '{"iter": 401, "train/lo'  # a line being written
    (tmp_path / "metrics.jsonl").write_text(text)
    assert _last_values(tmp_path, "val/seg/miou") == (400, 0.5, 41.5)
    later = ({"iter": i, "train/loss": 0.5, "time/sec_per_iter": 0.25} for i in range(401, 9000))
    big = "".join(json.dumps(r) + "\n" for r in later)
    assert len(big) > 3 * TAIL_BYTES  # the evaluation now lies several reads back
    (tmp_path / "metrics.jsonl").write_text(text.rsplit("\n", 1)[0] + "\n" + big)
    assert _last_values(tmp_path, "val/seg/miou") == (8999, 0.25, 41.5)
    assert _last_values(tmp_path, "val/lam/miou") == (8999, 0.25, None)  # never evaluated: the whole file, once
    assert _last_values(tmp_path / "absent", "val/seg/miou") == (None, None, None)
