"""The report without MLflow: the harness's results.json and run folders, when the tracking store is unreachable;
the sensitivity table and its PNG plot; the CLI never imports the trainer, torch or ray."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from more.report import Checkpoint, ReportOptions, build_report, load_experiment
from more.report.plots import sensitivity_png
from more.report.render import markdown_table
from more.tracking.store import free_port

REPO = Path(__file__).resolve().parents[2]
DIVERGED = "TrainingDiverged: loss term 'cre' became non-finite at step 7"
# (cre weight, seed) -> (precision, recall, miou); the (0.2, 1) trial failed
NUMBERS = {(0.05, 0): (70.0, 80.0, 60.0), (0.05, 1): (71.0, 82.0, 62.0), (0.2, 0): (75.0, 85.0, 70.0)}


@pytest.fixture(scope="module")
def harness_dir(tmp_path_factory, spec_writer):
    """A spec sweeping lir.cre_weight and the results.json the harness writes for it (schema layout)."""
    from more.harness.spec import expand, load_spec, spec_hash

    root = tmp_path_factory.mktemp("fallback")
    spec_path = spec_writer(root / "sens_unit.yaml", "sens_unit", {"more": {"lir.ure_weight": 0.0}}, [0, 1],
                            sweeps={"lir.cre_weight": [0.05, 0.2]})
    spec = load_spec(spec_path)
    trials = expand(spec)
    digest = spec_hash(spec, trials)
    entries = []
    for t in trials:
        cre = t.sweep["lir.cre_weight"]
        numbers = NUMBERS.get((cre, t.seed))
        metrics = {"iter": 30.0, "val/seg/precision": numbers[0], "val/seg/recall": numbers[1],
                   "val/seg/miou": numbers[2]} if numbers else {"iter": 7.0}
        entries.append({"trial": t.name, "condition": t.condition, "seed": t.seed, "sweep": t.sweep,
                        "overrides": t.overrides, "status": "TERMINATED" if numbers else "ERROR",
                        "error": "" if numbers else DIVERGED, "metrics": metrics,
                        "config": {"lir.cre_weight": cre, "lir.ure_weight": 0.0, "gcr.enabled": True,
                                   "train.seed": t.seed}, "run_dir": ""})
    folder = root / "storage" / f"sens_unit-{digest}"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(entries))
    return {"spec": spec_path, "storage": root / "storage", "digest": digest}


def test_unreachable_sqlite_falls_back_to_results_json(harness_dir, tmp_path):
    uri = f"sqlite:///{tmp_path / 'no_such_dir' / 'mlflow.db'}"
    exp = load_experiment(str(harness_dir["spec"]), tracking_uri=uri, storage=harness_dir["storage"],
                          checkpoint=Checkpoint())
    assert exp.source.startswith("results.json at ") and exp.spec_hash == harness_dir["digest"]
    assert exp.notes[0].startswith("MLflow not used: no MLflow database at")
    assert not (tmp_path / "no_such_dir").exists()  # reading never creates a store
    report = build_report([exp], ReportOptions(formats=("md", "csv", "png")))
    assert markdown_table(report.tables["table3"]).splitlines()[2:] == [
        "| more (lir.cre_weight=0.05) | ✓ |  | ✓ | 70.50 ± 0.71 | 81.00 ± 1.41 | 61.00 ± 1.41 | 2 | n/a | n/a | n/a |",
        "| more (lir.cre_weight=0.2) | ✓ |  | ✓ | 75.00 | 85.00 | 70.00 | 1 | n/a | n/a | n/a |",
    ]  # check marks come from the configs (ure weight 0), not from the condition's name
    assert "numbers from the last evaluation at iteration 30" in report.tables["table3"].caption
    missing = report.tables["missing"].rows
    assert [(r["trial"], r["status"], r["error"]) for r in missing] == [
        ("more-cre_weight=0.2-s1", "FAILED", DIVERGED)]
    sens = report.tables["sensitivity_lir.cre_weight"]
    assert markdown_table(sens).splitlines()[2:] == [
        "| more | 0.05 | 70.50 ± 0.71 | 81.00 ± 1.41 | 61.00 ± 1.41 | 2 |",
        "| more | 0.2 | 75.00 | 85.00 | 70.00 | 1 |",
    ]
    assert sens.notes == ["not finished with results, so not shown: more-cre_weight=0.2-s1 (see Missing / failed "
                          "trials)"]
    png = report.files["sensitivity_lir.cre_weight.png"]
    _check_png(png)


def test_unreachable_http_server_falls_back(harness_dir, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    exp = load_experiment(str(harness_dir["spec"]), tracking_uri=f"http://127.0.0.1:{free_port()}",
                          storage=harness_dir["storage"], checkpoint=Checkpoint())
    assert exp.source.startswith("results.json at ")
    assert exp.notes[0].startswith("MLflow not used: MLflow at http://127.0.0.1:") and "unreachable" in exp.notes[0]
    assert sorted(r.status for r in exp.records) == ["FAILED", "FINISHED", "FINISHED", "FINISHED"]


def _check_png(data: bytes, size: tuple[int, int] | None = None) -> None:
    from PIL import Image

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        assert img.format == "PNG" and img.width > 100 and img.height > 100
        assert len(img.convert("L").getcolors(256) or []) > 2  # something is drawn on the white canvas


def test_pil_plot_backend(harness_dir, tmp_path):
    exp = load_experiment(str(harness_dir["spec"]), tracking_uri=f"sqlite:///{tmp_path}/none/x.db",
                          storage=harness_dir["storage"], checkpoint=Checkpoint())
    from more.report.tables import sensitivity

    sens = sensitivity(exp.records, "lir.cre_weight", output="seg", conditions=["more"], checkpoint_text="")
    assert sens.numeric and [s.label for s in sens.series] == ["more"] and sens.series[0].xs == [0.05, 0.2]
    _check_png(sensitivity_png(sens, ylabel="mIoU", backend="pil"))


def test_harness_compact_results_and_run_dirs_with_best_checkpoint(tmp_path):
    """The harness's own results.json (rows with the spec metric only) read by experiment name; metrics come
    from the trainer's run folder: metrics.json (last) or metrics.jsonl + eval/iter_N.md (best)."""
    folder = tmp_path / "storage" / "named-0123456789ab"
    run = folder / "more-s0" / "run"
    (run / "eval").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"lir": {"cre_weight": 0.1, "ure_weight": 0.2},
                                                     "gcr": {"enabled": False}, "train": {"seed": 0}}))
    evals = [{"iter": 10, "val/seg/miou": 50.0, "val/seg/precision": 60.0, "val/seg/recall": 70.0},
             {"iter": 20, "val/seg/miou": 45.0, "val/seg/precision": 61.0, "val/seg/recall": 71.0}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in
                                               [{"iter": 5, "train/loss": 1.0}, *evals]))
    (run / "metrics.json").write_text(json.dumps({**evals[1], "val/seg/iou/boat": 40.0}))
    (run / "eval" / "iter_000010.md").write_text(
        "| output | mIoU |\n|---|---|\n| seg | 50.000 |\n\n| class | cam | seg |\n|---|---|---|\n"
        "| background | 80.000 | 81.500 |\n| boat | 30.000 | 33.250 |\n")
    row = {"trial": "more-s0", "condition": "more", "sweep": "", "seed": 0, "status": "TERMINATED",
           "metric": 45.0, "iterations": 20, "node_ip": "127.0.0.2", "error": "", "path": str(folder / "more-s0")}
    (folder / "results.json").write_text(json.dumps({"spec": "named", "spec_hash": "0123456789ab",
                                                     "metric": "val/seg/miou", "trials": [row]}))
    uri = f"sqlite:///{tmp_path}/none/mlflow.db"
    last = load_experiment("named", tracking_uri=uri, storage=tmp_path / "storage", checkpoint=Checkpoint())
    (rec,) = last.records
    assert (rec.status, rec.iteration, rec.metrics["val/seg/miou"], rec.metrics["val/seg/iou/boat"]) == (
        "FINISHED", 20, 45.0, 40.0)
    assert rec.config["gcr.enabled"] is False and rec.run_dir == str(run)
    best = load_experiment("named", tracking_uri=uri, storage=tmp_path / "storage",
                           checkpoint=Checkpoint.parse("best:val"))
    (rec,) = best.records
    assert (rec.iteration, rec.metrics["val/seg/miou"], rec.metrics["val/seg/iou/boat"]) == (10, 50.0, 33.25)
    assert rec.metrics["val/cam/iou/background"] == 80.0
    report = build_report([best], ReportOptions(formats=("md",)))
    assert markdown_table(report.tables["table3"]).splitlines()[2] == (
        "| more | ✓ | ✓ |  | 60.00 | 70.00 | 50.00 | 1 | ref | ref | ref |")


def test_cli_without_mlflow_never_imports_the_trainer(harness_dir, tmp_path):
    """``python -m more report NAME`` on the fallback path, in a fresh interpreter: Table 3 printed last, files
    written, and neither torch, ray, the trainer nor mlflow (the store is absent) imported. (Given a spec file, the
    spec's expansion validates configs through more.config, which today imports more.model and so torch.)"""
    out = tmp_path / "out"
    code = (
        "import sys, json\n"
        "from more.__main__ import main\n"
        f"rc = main(['report', 'sens_unit', '--tracking-uri', 'sqlite:///{tmp_path}/none/x.db', "
        f"'--storage', {str(harness_dir['storage'])!r}, '--out', {str(out)!r}, '--format', 'md,csv,tex'])\n"
        "print(json.dumps({'rc': rc, 'loaded': [m for m in ('torch', 'ray', 'more.train', 'mlflow') "
        "if m in sys.modules]}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.rstrip().splitlines()
    assert json.loads(lines[-1]) == {"rc": 0, "loaded": []}
    assert lines[-2] == "| more (lir.cre_weight=0.2) | ✓ |  | ✓ | 75.00 | 85.00 | 70.00 | 1 | n/a | n/a | n/a |"
    assert "MLflow not used" in proc.stderr
    assert (out / "table3.md").is_file() and (out / "sensitivity_lir.cre_weight.csv").is_file()
    assert not (out / "sensitivity_lir.cre_weight.png").exists()  # png not asked for
    assert "more-cre_weight=0.2-s1 | more | 1 | lir.cre_weight=0.2 | FAILED | TrainingDiverged" in (
        out / "report.md").read_text()


def test_reachable_store_without_runs_of_the_spec_falls_back(harness_dir, tracking):
    exp = load_experiment(str(harness_dir["spec"]), tracking_uri=tracking.uri, storage=harness_dir["storage"],
                          checkpoint=Checkpoint())
    assert exp.source.startswith("results.json at ") and exp.parent_run_id is None and exp.tracking_uri is None
    assert exp.notes[0] == (f"MLflow not used: MLflow at {tracking.uri} has no trial runs of spec 'sens_unit' with "
                            f"hash {harness_dir['digest']}")


def test_a_spec_that_never_ran_has_no_trials_yet(tracking, spec_writer, tmp_path):
    """A reachable store without its runs and no experiment folder: the spec has not run (bad input, one line),
    rather than a failure to read the storage; an older version of the spec that did run changes nothing."""
    from more.__main__ import main
    from more.harness.spec import expand, load_spec, spec_hash
    from more.report.sources import NoTrialsYet

    old = spec_writer(tmp_path / "old.yaml", "never_unit", {"more": {}}, [0])
    loaded = load_spec(old)
    exp_id = tracking.experiment("never_unit")
    old_digest = spec_hash(loaded, expand(loaded))
    parent = tracking.launch(exp_id, "never_unit", old_digest)
    tracking.trial(exp_id, parent, spec_name="never_unit", digest=old_digest, trial="more-s0", condition="more",
                   seed=0, config={}, evals={6: {"val/seg/miou": 50.0}})
    spec = spec_writer(tmp_path / "never.yaml", "never_unit", {"more": {}}, [0, 1])
    digest = spec_hash(load_spec(spec), expand(load_spec(spec)))
    with pytest.raises(NoTrialsYet) as caught:
        load_experiment(str(spec), tracking_uri=tracking.uri, storage=tmp_path / "storage", checkpoint=Checkpoint())
    assert str(caught.value).startswith(f"spec 'never_unit' (hash {digest}) has no trials yet: MLflow at "
                                        f"{tracking.uri} has no trial runs")
    assert f"no experiment folder {tmp_path / 'storage'}/never_unit-{digest}" in str(caught.value)
    assert main(["report", str(spec), "--tracking-uri", tracking.uri, "--storage", str(tmp_path), "--no-log",
                 "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_the_default_report_folder_is_owned_by_more(harness_dir, tmp_path, monkeypatch):
    """``report`` without --out writes to <repo>/work/reports/<name>/ and marks it; a folder there holding the
    user's files is refused unless --force, and one more marked is replaced."""
    import more.report.generate as generate
    from more.outputs import MARK, OutputError

    monkeypatch.setattr(generate, "repo_root", lambda: tmp_path)
    uri = f"sqlite:///{tmp_path}/none/mlflow.db"
    kwargs = {"tracking_uri": uri, "storage": harness_dir["storage"], "formats": ["md"], "log": False}
    folder = tmp_path / "work" / "reports" / "sens_unit"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="holds files more did not create"):
        generate.generate_report(["sens_unit"], **kwargs)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    forced = generate.generate_report(["sens_unit"], force=True, **kwargs)
    assert forced.out == folder and (folder / "notes.txt").read_text() == "mine" and (folder / MARK).is_file()
    (folder / "notes.txt").unlink()
    again = generate.generate_report(["sens_unit"], **kwargs)  # ours now: replaced without --force
    assert again.out == folder and "| more (lir.cre_weight=0.2)" in again.summary
