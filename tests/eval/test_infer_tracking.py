"""Every ``infer`` is one MLflow run (contract 2): linked to the checkpoint's trial run through ``identity.json``,
continued (not duplicated) when resumed, metrics equal to ``metrics.json``; an unreachable server is a warning."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from more.__main__ import main
from more.tracking.store import free_port, get_or_create_experiment, make_client

TRIAL_TAGS = {"more.kind": "trial", "more.content_key": "ck-123", "more.spec_name": "table3_tiny",
              "more.spec_hash": "abcd1234", "more.condition": "wo_gcr", "more.seed": "2", "more.code_id": "code-9"}


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory) -> Path:
    """An empty, migrated sqlite store, made once for the module (migrations take seconds)."""
    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    make_client(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def store(empty_db, tmp_path) -> str:
    folder = tmp_path / "mlflow"
    folder.mkdir()
    shutil.copyfile(empty_db, folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"


@pytest.fixture
def trial_checkpoint(infer_ckpt, store, tmp_path) -> tuple[Path, str]:
    """A copy of the checkpoint's run folder with an ``identity.json``, its trial run in experiment ``spec-x``, and a
    decoy trial run with the same content key from another run folder (a reused trial) in another experiment."""
    run = tmp_path / "trial" / "run"
    shutil.copytree(infer_ckpt.parent.parent, run)
    (run / "identity.json").write_text(json.dumps({"key": "ck-123", "config_key": "x", "code": "code-9"}))
    client = make_client(store)
    decoy_exp = get_or_create_experiment(client, "other-spec", uri=store)  # artifacts beside the store, not ./mlruns
    client.create_run(decoy_exp, tags={**TRIAL_TAGS, "more.run_dir": str(tmp_path / "elsewhere")})
    exp = get_or_create_experiment(client, "spec-x", uri=store)
    trial = client.create_run(exp, tags={**TRIAL_TAGS, "more.run_dir": str(run)})
    client.set_terminated(trial.info.run_id)
    return run / "checkpoints" / infer_ckpt.name, trial.info.run_id


def infer_runs(uri: str) -> list:
    client = make_client(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return list(client.search_runs(ids, filter_string="tags.`more.kind` = 'infer'"))


def test_infer_run_linked_to_its_trial_with_the_contract_tags_and_metrics(trial_checkpoint, store, tmp_path, capsys):
    ckpt, trial_id = trial_checkpoint
    out = tmp_path / "masks"
    args = ["infer", str(ckpt), "--task", "masks", "--source", "lam", "--split", "val", "--out", str(out),
            "--tracking-uri", store]
    assert main(args) == 0, capsys.readouterr().err
    runs = infer_runs(store)
    assert len(runs) == 1
    run = runs[0]
    client = make_client(store)
    assert client.get_experiment(run.info.experiment_id).name == "spec-x" and run.info.status == "FINISHED"
    record = json.loads((out / "metrics.json").read_text())
    tags = run.data.tags
    expected = {
        "more.kind": "infer", "more.infer.key": record["key"], "more.infer.task": "masks", "more.infer.source": "lam",
        "more.infer.split": "val", "more.infer.multiscale": "false", "more.infer.scales": "[1.0]",
        "more.infer.crf": "true", "more.infer.out": str(out), "more.infer.checkpoint": str(ckpt / "checkpoint.pt"),
        "more.infer.iteration": "7", "more.dataset": "synthetic", "more.train_run_id": trial_id,
        **{k: v for k, v in TRIAL_TAGS.items() if k != "more.kind"},
    }
    assert {k: tags.get(k) for k in expected} == expected
    metrics = run.data.metrics
    assert metrics["infer/images"] == 6
    for output in ("seeds", "masks"):
        values = record["outputs"][output]
        for ours, theirs in (("miou", "miou"), ("precision", "mprecision"), ("recall", "mrecall"),
                             ("confusion", "mconfusion")):
            assert metrics[f"infer/{output}/{ours}"] == pytest.approx(values[theirs])
        for cls in ("background", "boat", "plane", "disc"):
            assert metrics[f"infer/{output}/iou/{cls}"] == pytest.approx(values["iou"][cls])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "infer/masks/miou")] == [7]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"metrics.json", "metrics.md"}

    # the same invocation again (a resume with everything done) continues the run; another task is another run
    assert main(args) == 0
    assert main(["infer", str(ckpt), "--task", "seg", "--split", "val", "--out", str(tmp_path / "seg"),
                 "--tracking-uri", store]) == 0
    runs = {r.data.tags["more.infer.task"]: r for r in infer_runs(store)}
    assert sorted(runs) == ["masks", "seg"] and runs["masks"].info.run_id == run.info.run_id
    assert runs["masks"].info.status == "FINISHED"
    assert runs["seg"].data.tags["more.infer.source"] == "seg" and "infer/seg_raw/miou" in runs["seg"].data.metrics


def test_checkpoint_outside_the_harness_goes_to_more_infer(infer_ckpt, store, tmp_path, capsys):
    assert main(["infer", str(infer_ckpt), "--task", "seeds", "--split", "val", "--out", str(tmp_path / "o"),
                 "--tracking-uri", store]) == 0, capsys.readouterr().err
    (run,) = infer_runs(store)
    assert make_client(store).get_experiment(run.info.experiment_id).name == "more-infer"
    assert run.data.tags["more.train_run_id"] == "" and "more.spec_name" not in run.data.tags


def test_unreachable_server_is_a_warning_and_no_output_is_lost(infer_ckpt, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    out = tmp_path / "o"
    code = main(["infer", str(infer_ckpt), "--task", "masks", "--split", "val", "--out", str(out),
                 "--tracking-uri", f"http://127.0.0.1:{free_port()}"])
    err = capsys.readouterr().err
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "MLflow tracking off" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning:")
    assert json.loads((out / "metrics.json").read_text())["num_images"] == 6
    assert len(list((out / "masks").iterdir())) == 6


def test_no_tracking_logs_nothing(infer_ckpt, store, tmp_path):
    assert main(["infer", str(infer_ckpt), "--task", "seeds", "--split", "val", "--out", str(tmp_path / "o"),
                 "--tracking-uri", store, "--no-tracking"]) == 0
    assert infer_runs(store) == []
