"""Parent and child runs on a temporary sqlite store around a real tiny training run; retries, relaunches and
failures never duplicate runs."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from PIL import Image

from more.config import to_flat
from more.tracking import LaunchTracker, TrialTracker, trial_key, trial_tags
from more.tracking.store import EXPERIMENT_KIND, artifact_root

SPEC, DIGEST = "table3_tiny", "0123456789ab"


def tags_for(name: str, cfg) -> dict[str, str]:
    return trial_tags(spec_name=SPEC, spec_hash=DIGEST, trial_name=name, condition="more", seed=cfg.train.seed,
                      sweep={"lir.cre_weight": 0.2}, overrides={"train.seed": cfg.train.seed}, git_commit="abc123",
                      fidelity=cfg.fidelity, device="cpu", ray_trial_id="t_0001")


def search(client, experiment_id: str, where: str = ""):
    return list(client.search_runs([experiment_id], filter_string=where))


@pytest.fixture(scope="module")
def tracked(template_db, tiny_root, tmp_path_factory):
    """One real 6-iteration training run (evaluations at 3 and 6) tracked under a launch run."""
    import shutil

    from more.config import load_config
    from more.train import train

    from .conftest import TINY

    folder = tmp_path_factory.mktemp("store")
    shutil.copyfile(template_db, folder / "mlflow.db")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    run_dir = tmp_path_factory.mktemp("run") / "more-s0"
    cfg = load_config("synthetic", [*TINY, f"data.root={tiny_root}"])
    launch = LaunchTracker.start(uri, SPEC, DIGEST, "name: table3_tiny\n", "abc123", strict=True)
    trial = TrialTracker.open(uri, launch.run_id, trial_key(DIGEST, "more-s0"), tags_for("more-s0", cfg), cfg,
                              run_dir=run_dir, strict=True, log_checkpoint=True)
    seen = []
    with trial:
        result = train(cfg, report=trial.report_callback(lambda m, d: seen.append(m["iter"])),
                       log=trial.log_callback(), run_dir=run_dir)
    return {"uri": uri, "launch": launch, "trial": trial, "cfg": cfg, "result": result, "seen": seen,
            "run_dir": run_dir, "folder": folder}


def test_parent_and_child_runs_with_schema_tags(tracked):
    client, launch, trial = tracked["launch"].client, tracked["launch"], tracked["trial"]
    exp = client.get_experiment(launch.experiment_id)
    assert exp.name == SPEC and exp.tags["more.spec_name"] == SPEC
    assert exp.tags.items() >= EXPERIMENT_KIND.items()
    assert exp.artifact_location == f"{artifact_root(tracked['uri'])}/{SPEC}"
    parent = client.get_run(launch.run_id)
    assert parent.info.run_name == f"{SPEC}-{DIGEST}"
    assert {k: parent.data.tags[k] for k in ("more.kind", "more.spec_name", "more.spec_hash", "more.git_commit")} == {
        "more.kind": "launch", "more.spec_name": SPEC, "more.spec_hash": DIGEST, "more.git_commit": "abc123"}
    child = client.get_run(trial.run_id)
    assert child.info.status == "FINISHED" and child.info.run_name == "more-s0"
    tags = child.data.tags
    assert tags["mlflow.parentRunId"] == launch.run_id
    assert tags["more.kind"] == "trial" and tags["more.trial_key"] == f"{DIGEST}:more-s0"
    assert json.loads(tags["more.sweep"]) == {"lir.cre_weight": 0.2} and tags["more.checkpoint"] == "last"
    assert tags["more.seed"] == "0" and tags["more.ray_trial_id"] == "t_0001" and tags["more.fidelity"] == "reference"
    assert "more.error" not in tags
    assert [r.info.run_id for r in launch.trial_runs()] == [trial.run_id]


def test_params_are_the_flat_config_and_metrics_are_logged_at_each_evaluation(tracked):
    client, run_id = tracked["launch"].client, tracked["trial"].run_id
    run = client.get_run(run_id)
    assert run.data.params == {k: str(v) for k, v in to_flat(tracked["cfg"]).items()}
    assert tracked["seen"] == [3.0, 6.0]  # the inner report still runs
    history = client.get_metric_history(run_id, "val/seg/miou")
    assert [m.step for m in history] == [3, 6]
    assert history[-1].value == pytest.approx(tracked["result"]["val/seg/miou"])
    assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == [1, 2, 3, 4, 5, 6]  # metrics.jsonl
    assert [m.step for m in client.get_metric_history(run_id, "val/cam/iou/boat")] == [3, 6]
    assert run.data.metrics["iter"] == 6.0 and run.data.metrics["time/tracking_sec"] > 0
    assert run.data.tags["more.logged_through"] == "6"
    assert 0 < tracked["trial"].overhead_s


def test_artifacts_config_per_class_pictures_log_and_checkpoint(tracked, tmp_path):
    client, run_id = tracked["launch"].client, tracked["trial"].run_id
    files = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "per_class", "pictures", "train.log", "checkpoint"} <= files
    per_class = {a.path for a in client.list_artifacts(run_id, "per_class")}
    assert per_class == {f"per_class/iter_00000{i}.{ext}" for i in (3, 6) for ext in ("csv", "md")}
    local = Path(client.download_artifacts(run_id, "", str(tmp_path)))
    csv_lines = (local / "per_class" / "iter_000006.csv").read_text().splitlines()
    assert csv_lines[0].startswith("class,cam/iou,") and [r.split(",")[0] for r in csv_lines[1:]] == [
        "background", "boat", "plane", "disc", "mean"]
    header = csv_lines[0].split(",")
    outputs = ("cam", "aux_cam", "lam", "fused", "seg")
    assert header[1:] == [f"{out}/{q}" for out in outputs for q in ("iou", "confusion")]
    for line in csv_lines[1:-1]:  # every class: IoU and confusion ratio FP / TP as the trainer reported them
        row = dict(zip(header, line.split(",")))
        for column in header[1:]:
            out, quantity = column.split("/")
            expected = tracked["result"][f"val/{out}/{quantity}/{row['class']}"]
            assert float(row[column]) == pytest.approx(expected, nan_ok=True), (row["class"], column)
    with Image.open(local / "pictures" / "iter_000006.png") as png:
        png.verify()
    with Image.open(local / "pictures" / "iter_000003.png") as png:
        # 5 columns, eval.num_vis=2, one line of class legend (data: i19)
        assert png.format == "PNG" and png.size == (5 * 128 + 4 * 2, 14 + 2 * 128 + 2 + 2 + 14)
    assert (local / "config.yaml").read_text() == (tracked["run_dir"] / "config.yaml").read_text()
    assert "eval @ 6" in (local / "train.log").read_text()
    assert (local / "checkpoint" / "iter_000006" / "checkpoint.pt").is_file()
    assert (tracked["run_dir"] / "train.log").is_file()  # the run folder keeps the log too


def test_retry_and_relaunch_continue_the_same_runs(tracked):
    uri, launch, cfg = tracked["uri"], tracked["launch"], tracked["cfg"]
    again = LaunchTracker.start(uri, SPEC, DIGEST, "name: table3_tiny\n", "def456", strict=True)
    assert again.run_id == launch.run_id and again.resumed
    retry = TrialTracker.open(uri, again.run_id, trial_key(DIGEST, "more-s0"), tags_for("more-s0", cfg), cfg,
                              run_dir=tracked["run_dir"], strict=True, pictures=False)
    assert retry.resumed and retry.run_id == tracked["trial"].run_id and retry.logged_through == 6
    with retry:
        # a retry that restarted from an older checkpoint reports step 6 again: the run already holds it
        retry.report_callback()({"iter": 6.0, "val/seg/miou": 99.0}, None)
        own = str(tracked["run_dir"] / "checkpoints" / "iter_000006")
        retry.report_callback()({"iter": 6.0, "val/seg/miou": 99.0}, own)
        assert retry.last_checkpoint == own  # a step not logged again still names the checkpoint finish() uploads
        retry.report_callback()({"iter": 9.0, "val/seg/miou": 12.5}, None)
    client = launch.client
    runs = search(client, launch.experiment_id)
    assert len(runs) == 2  # one parent, one child
    child = client.get_run(retry.run_id)
    assert child.info.status == "FINISHED" and child.data.tags["more.attempts"] == "2"
    history = client.get_metric_history(retry.run_id, "val/seg/miou")
    assert [m.step for m in history] == [3, 6, 9] and 99.0 not in [m.value for m in history]
    assert [m.step for m in client.get_metric_history(retry.run_id, "train/loss")] == [1, 2, 3, 4, 5, 6]
    assert client.get_run(launch.run_id).data.tags["more.git_commit"] == "def456"


def test_failed_trial_ends_failed_with_error_then_a_retry_clears_it(make_store):
    uri = make_store()
    launch = LaunchTracker.start(uri, "fail_spec", DIGEST, "name: fail_spec\n", "abc", strict=True)
    key = trial_key(DIGEST, "boom-s0")
    with pytest.raises(RuntimeError, match="boom"):
        with TrialTracker.open(uri, launch.run_id, key, {"more.kind": "trial"}, strict=True) as trial:
            trial.report_callback()({"iter": 3.0, "val/seg/miou": 1.0}, None)
            raise RuntimeError("boom " + "x" * 6000)
    run = launch.client.get_run(trial.run_id)
    assert run.info.status == "FAILED"
    error = run.data.tags["more.error"]
    assert error.startswith("RuntimeError: boom xxx") and len(error) == 5000
    with TrialTracker.open(uri, launch.run_id, key, {"more.kind": "trial"}, strict=True) as retry:
        assert retry.run_id == trial.run_id
    run = launch.client.get_run(trial.run_id)
    assert run.info.status == "FINISHED" and "more.error" not in run.data.tags
    assert len(search(launch.client, launch.experiment_id, "tags.`more.kind` = 'trial'")) == 1


def test_unreachable_store_gives_disabled_trackers_that_still_forward(tmp_path):
    not_a_db = tmp_path / "plain.db"
    not_a_db.write_text("this is not sqlite")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        launch = LaunchTracker.start(f"sqlite:///{not_a_db}", "x", DIGEST, "", "abc")
    assert launch.run_id is None and not launch.enabled
    trial = TrialTracker.open(None, launch.run_id, trial_key(DIGEST, "t"), {})
    seen = []
    with trial:
        trial.report_callback(lambda m, d: seen.append(m))({"iter": 1.0}, None)
    assert seen == [{"iter": 1.0}] and not trial.enabled


def test_pictures_stay_within_the_time_budget_but_the_final_one_is_always_drawn(make_store):
    import time

    import numpy as np

    from more.config import load_config
    from more.tracking.pictures import encode_png

    class SlowPictures:
        def png(self, checkpoint_dir):
            time.sleep(0.3)
            return encode_png(np.zeros((4, 4, 3), np.uint8))

    uri = make_store()
    cfg = load_config("synthetic", ["train.max_iters=3", "eval.num_vis=1"])
    launch = LaunchTracker.start(uri, "budget_spec", DIGEST, "", "abc", strict=True)
    with TrialTracker.open(uri, launch.run_id, trial_key(DIGEST, "b-s0"), {}, cfg, strict=True) as trial:
        trial._pictures = SlowPictures()
        report = trial.report_callback()
        for step in (1, 2, 3):  # evaluations far denser than 0.3 s / 3 %: only the first and the final are drawn
            report({"iter": float(step)}, "unused")
    drawn = {a.path for a in launch.client.list_artifacts(trial.run_id, "pictures")}
    assert drawn == {"pictures/iter_000001.png", "pictures/iter_000003.png"}
    assert launch.client.get_run(trial.run_id).data.tags["more.pictures_skipped"] == "1"


def test_a_trial_stopped_early_by_tune_ends_finished(make_store):
    uri = make_store()
    launch = LaunchTracker.start(uri, "stop_spec", DIGEST, "", "abc", strict=True)
    with pytest.raises(SystemExit):
        with TrialTracker.open(uri, launch.run_id, trial_key(DIGEST, "s-s0"), {}, strict=True) as trial:
            raise SystemExit(0)  # what tune.report raises in a trial that a scheduler or stopper ended
    run = launch.client.get_run(trial.run_id)
    assert run.info.status == "FINISHED" and "more.error" not in run.data.tags


def test_a_stop_inside_tune_report_ends_the_run_before_the_exception_leaves_the_report(make_store, tmp_path):
    """Tune raises SystemExit(0) in ``tune.report`` while it tears the trial's process down: the run must be ended
    right there, not later in ``__exit__``, which the process may not live to reach."""
    uri = make_store()
    launch = LaunchTracker.start(uri, "stop_spec", DIGEST, "", "abc", strict=True)
    trial = TrialTracker.open(uri, launch.run_id, trial_key(DIGEST, "r-s0"), {}, strict=True)
    status_seen = []

    def tune_report(metrics, checkpoint_dir):
        raise SystemExit(0)

    report = trial.report_callback(tune_report)
    try:
        report({"iter": 3.0, "val/seg/miou": 1.0}, None)
    except SystemExit:
        status_seen.append(launch.client.get_run(trial.run_id).info.status)
    assert status_seen == ["FINISHED"]
    assert [m.step for m in launch.client.get_metric_history(trial.run_id, "val/seg/miou")] == [3]
    # a failure raised by the report is not a stop: the run stays open for __exit__ to end FAILED
    failing = TrialTracker.open(uri, launch.run_id, trial_key(DIGEST, "f-s0"), {}, strict=True,
                                run_dir=tmp_path / "f-s0")  # a folder of the test's: this tracker is never ended
    with pytest.raises(SystemExit):
        failing.report_callback(lambda m, c: (_ for _ in ()).throw(SystemExit(3)))({"iter": 1.0}, None)
    assert launch.client.get_run(failing.run_id).info.status == "RUNNING"


def test_the_driver_ends_runs_whose_trial_process_died_before_ending_them(make_store, tmp_path):
    uri = make_store()
    launch = LaunchTracker.start(uri, "orphan_spec", DIGEST, "", "abc", strict=True)
    keys = {name: trial_key(DIGEST, name) for name in ("stopped-s0", "lost-s0", "done-s0", "pending-s0")}
    trials = {name: TrialTracker.open(uri, launch.run_id, key, {"more.kind": "trial"}, strict=True,
                                      run_dir=tmp_path / name)  # processes that "died": never ended
              for name, key in keys.items()}
    for trial in trials.values():
        trial.report_callback()({"iter": 3.0, "val/seg/miou": 1.0}, None)
    trials["done-s0"].finish("FAILED", error="RuntimeError: its own")  # ended by its trial: left alone
    closed = launch.close_orphans({keys["stopped-s0"]: ("TERMINATED", ""), keys["lost-s0"]: ("ERROR", "NodeDied: x"),
                                   keys["done-s0"]: ("TERMINATED", ""), keys["pending-s0"]: ("PENDING", "")})
    assert sorted(closed) == sorted([keys["stopped-s0"], keys["lost-s0"]])
    runs = {name: launch.client.get_run(t.run_id) for name, t in trials.items()}
    assert runs["stopped-s0"].info.status == "FINISHED" and runs["stopped-s0"].data.tags["more.closed_by"] == "driver"
    assert runs["lost-s0"].info.status == "FAILED" and runs["lost-s0"].data.tags["more.error"] == "NodeDied: x"
    assert runs["done-s0"].info.status == "FAILED" and "more.closed_by" not in runs["done-s0"].data.tags
    assert runs["pending-s0"].info.status == "RUNNING"
