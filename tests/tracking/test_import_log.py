"""``more import-log``: the authors' training log (their scripts' format, written here by ``authors_logs``) as an
MLflow run beside ours: contract-3 tags, our metric names at step = iteration, idempotent, a truncated log, the COCO
log, and bad input refused before the store is touched."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

sys.path.insert(0, str(Path(__file__).parent))

from authors_logs import COLUMNS, OURS, coco_run, render, voc_run  # noqa: E402

from more.__main__ import main  # noqa: E402
from more.config import load_config  # noqa: E402
from more.data.classes import class_names  # noqa: E402
from more.eval.evaluate import EvalResult  # noqa: E402
from more.eval.metrics import ConfusionMatrix, scores  # noqa: E402
from more.harness.spec import expand, load_spec, spec_hash  # noqa: E402
from more.tracking.authors_log import LogFormatError, parse_args_line, parse_log  # noqa: E402
from more.train.step import TERMS  # noqa: E402
from more.train.validation import eval_metrics  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
VOC_SPEC = ROOT / "ablations" / "table3.yaml"
OUR_COLUMNS = {"CAM": "cam", "aux_CAM": "aux_cam", "Score Map": "lam", "Fused": "fused", "Seg_Pred": "seg"}


@pytest.fixture
def coco_spec(tmp_path) -> Path:
    path = tmp_path / "coco_table3.yaml"
    path.write_text("name: coco_table3\nexperiment: {config: coco}\nconditions: {baseline: {lir.cre_weight: 0.0}, "
                    "more: {}}\nseeds: [0]\n")
    return path


def run_of(uri: str, experiment: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`more.kind` = 'authors'")
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return client, runs[0]


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def import_log(log: Path, spec: Path, uri: str, *extra: str) -> int:
    return main(["import-log", str(log), "--spec", str(spec), "--tracking-uri", uri, *extra])


def our_metric_names(dataset: str) -> set[str]:
    """Every name our trainer logs (train/<term>, train/lr, and an evaluation's flat metrics)."""
    names = class_names(load_config(dataset))
    hist = ConfusionMatrix(len(names))
    result = EvalResult(scores={o: scores(hist.hist) for o in OUR_COLUMNS.values()}, cls_f1=1.0, num_images=1)
    return {f"train/{t}" for t in TERMS} | {"train/lr"} | set(eval_metrics(result, names))


def test_a_voc_log_becomes_an_authors_run_with_our_names(tmp_path, make_store, capsys):
    run = voc_run()
    log = tmp_path / "voc_train.log"
    log.write_text(render(run))
    uri = make_store()
    assert import_log(log, VOC_SPEC, uri) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert out.startswith("created run ") and "in experiment table3" in out
    assert "not imported: Seg_CAM" in out  # a column we do not compute is said, not silently dropped

    client, found = run_of(uri, "table3")
    spec = load_spec(VOC_SPEC)
    tags = found.data.tags
    assert {k: tags[k] for k in ("more.kind", "more.spec_name", "more.spec_hash", "more.condition", "more.seed",
                                 "more.dataset", "more.authors_log", "mlflow.runName")} == {
        "more.kind": "authors", "more.spec_name": "table3", "more.spec_hash": spec_hash(spec, expand(spec)),
        "more.condition": "more", "more.seed": "0", "more.dataset": "voc", "more.authors_log": "voc_train.log",
        "mlflow.runName": "authors-voc_train"}
    assert found.info.status == "FINISHED" and found.data.params["authors.val_set"] == "val"

    # the names are ours, so the compare view overlays the curves on our trial runs
    assert set(found.data.metrics) <= our_metric_names("voc")
    for name, term in OURS.items():
        assert history(client, found.info.run_id, f"train/{term}") == [(s, v[name]) for s, v in
                                                                      sorted(run.losses.items())]
    assert history(client, found.info.run_id, "train/lr") == sorted(run.lrs.items())
    names = class_names(load_config("voc"))
    for step, (score, columns) in run.validations.items():
        assert (step, score) in history(client, found.info.run_id, "val/cls_f1")
        for column, ours in OUR_COLUMNS.items():
            cells = columns[column]
            got = {k: dict(history(client, found.info.run_id, f"val/{ours}/{k}"))[step]
                   for k in ("miou", "precision", "recall", "confusion")}
            assert got == {"precision": cells[-4], "recall": cells[-3], "confusion": cells[-2], "miou": cells[-1]}
            assert dict(history(client, found.info.run_id, f"val/{ours}/iou/{names[1]}"))[step] == cells[1]
            assert dict(history(client, found.info.run_id, f"val/{ours}/iou/background"))[step] == cells[0]
    assert len(history(client, found.info.run_id, "val/seg/miou")) == 2
    times = [m.timestamp for m in client.get_metric_history(found.info.run_id, "train/cls")]
    assert times == sorted(times) and times[1] - times[0] == 200_000  # the log's own clock: 1 s per iteration


def test_importing_twice_continues_the_run_and_logs_no_step_twice(tmp_path, make_store, capsys):
    log = tmp_path / "voc_train.log"
    log.write_text(render(voc_run()))
    uri = make_store()
    assert import_log(log, VOC_SPEC, uri) == 0
    first = capsys.readouterr().out
    assert import_log(log, VOC_SPEC, uri) == 0
    second = capsys.readouterr().out
    client, found = run_of(uri, "table3")
    assert found.info.run_id in first and second.startswith(f"continued run {found.info.run_id}")
    assert " 0 metric points logged" in second
    assert len(history(client, found.info.run_id, "train/cls")) == 10
    assert len(history(client, found.info.run_id, "val/cam/iou/aeroplane")) == 2
    # another condition of the same spec is another run
    assert import_log(log, VOC_SPEC, uri, "--condition", "baseline") == 0
    exp = client.get_experiment_by_name("table3")
    assert len(client.search_runs([exp.experiment_id], "tags.`more.kind` = 'authors'")) == 2


def test_a_truncated_log_imports_its_complete_part_and_the_whole_log_completes_the_run(tmp_path, make_store, capsys):
    run = voc_run()
    text = render(run)
    cut = text.index("| m-Recall", text.index("val cls score", text.index("Iter: 2000;")))  # inside the last table
    log = tmp_path / "voc_train.log"
    log.write_text(text[:cut])
    uri = make_store()
    assert import_log(log, VOC_SPEC, uri) == 0
    out = capsys.readouterr().out
    assert "the validation table at iteration 2000 is incomplete; left out" in out
    client, found = run_of(uri, "table3")
    assert [s for s, _ in history(client, found.info.run_id, "val/seg/miou")] == [1000]
    assert [s for s, _ in history(client, found.info.run_id, "train/seg")][-1] == 2000

    # a loss line cut in its last field keeps the fields before its last comma
    line_start = text.index("Iter: 1800;")
    cut = text.index("une_loss: ", line_start) + len("une_loss: 0.6")
    log.write_text(text[:cut])
    parsed = parse_log(log.read_text())
    assert set(parsed.losses[1800][2]) == {"cls", "cls_aux", "mct", "ptc", "cre"}
    assert any("loss line cut short" in note for note in parsed.notes)

    log.write_text(text)  # the whole log, later: the same run, every point once
    assert import_log(log, VOC_SPEC, uri) == 0
    assert capsys.readouterr().out.startswith(f"continued run {found.info.run_id}")
    client, found = run_of(uri, "table3")
    assert [s for s, _ in history(client, found.info.run_id, "val/seg/miou")] == [1000, 2000]
    assert [s for s, _ in history(client, found.info.run_id, "train/ure")] == list(range(200, 2001, 200))
    assert found.data.tags["more.authors_last_iter"] == "2000"


def test_a_coco_log_into_a_coco_spec(tmp_path, make_store, coco_spec, capsys):
    run = coco_run()
    text = render(run)
    # the run was resumed from its iteration-1200 checkpoint: the loss lines of 1400 and 1600 come again, later
    again = text[text.index("\n", text.index("Iter: 1200;")) + 1: text.index("\n", text.index("Iter: 1600;")) + 1]
    log = tmp_path / "coco_train.log"
    log.write_text(text + again.replace("cls_loss: ", "cls_loss: 9"))
    uri = make_store()
    assert import_log(log, coco_spec, uri, "--condition", "more") == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "loss lines repeat an iteration logged before" in out
    client, found = run_of(uri, "coco_table3")
    assert found.data.tags["more.dataset"] == "coco" and found.data.tags["more.seed"] == "1"
    assert set(found.data.metrics) <= our_metric_names("coco")
    names = class_names(load_config("coco"))
    assert names[1] == "person" and len(names) == 81
    _, columns = run.validations[2000]
    assert dict(history(client, found.info.run_id, "val/lam/iou/toothbrush"))[2000] == columns["Score Map"][80]
    assert dict(history(client, found.info.run_id, "val/aux_cam/iou/traffic light"))[1000] == \
        run.validations[1000][1]["aux_CAM"][10]
    cls = dict(history(client, found.info.run_id, "train/cls"))
    assert len(cls) == 10 and len(history(client, found.info.run_id, "train/cls")) == 10  # each iteration once
    assert cls[1400] == pytest.approx(90 + run.losses[1400]["cls_loss"]) and cls[1200] == run.losses[1200]["cls_loss"]


def test_bad_input_is_one_line_and_touches_no_store(tmp_path, make_store, coco_spec, capsys):
    uri = make_store()
    coco_log = tmp_path / "coco_train.log"
    coco_log.write_text(render(coco_run()))
    not_a_log = tmp_path / "notes.txt"
    not_a_log.write_text("2024-07-01 15:02:44,339 - train_voc.py - INFO: hello\nnothing else\n")
    cases = [
        (coco_log, VOC_SPEC, (), "error: " + str(coco_log) + ": the log trains num_classes=81"),
        (not_a_log, VOC_SPEC, (), f"error: {not_a_log}: no training-log lines in the authors' format"),
        (tmp_path / "missing.log", VOC_SPEC, (), f"error: {tmp_path / 'missing.log'}: No such file"),
        (tmp_path, VOC_SPEC, (), f"error: {tmp_path}: Is a directory"),
        (coco_log, coco_spec, ("--condition", "wo_gcr"), "spec error: " + str(coco_spec) + ": spec coco_table3 has "
                                                          "no condition 'wo_gcr' (it has baseline, more)"),
        (coco_log, tmp_path / "nope.yaml", (), "spec error: spec file not found"),
    ]
    for log, spec, extra, message in cases:
        assert import_log(log, spec, uri, *extra) == 2, message
        err = capsys.readouterr().err
        assert err.startswith(message) and len(err.strip().splitlines()) == 1, err
    assert MlflowClient(uri).search_experiments(filter_string="name != 'Default'") == []


def test_the_args_line_is_read_as_literals_only():
    assert parse_args_line("args: Namespace(a=1, b='x, y', c=(1.0, 0.5), d=[2], e=None, f=True)") == {
        "a": 1, "b": "x, y", "c": (1.0, 0.5), "d": [2], "e": None, "f": True}
    for bad in ("args: Namespace(a=__import__('os').getcwd())", "args: Namespace(a=1, b='cut", "args: Namespace(1)"):
        with pytest.raises((ValueError, SyntaxError)):
            parse_args_line(bad)
    text = render(voc_run()).replace("seed=0, spg=4", "seed=open('x'), spg=4")
    log = parse_log(text)
    assert log.args == {} and any("args line cut short or unreadable" in n for n in log.notes)
    assert len(log.losses) == 10  # the rest of the log is still read


def test_nan_cells_and_the_wrapped_mean_row():
    run = voc_run()
    run.validations[1000][1]["Seg_Pred"][2] = math.nan
    log = parse_log(render(run))
    values = log.validations[1000].values
    assert math.isnan(values["Seg_Pred"]["bicycle"]) and values["CAM"]["m-ConfutionRatio"] == 0.5
    assert log.validations[1000].class_rows[:2] == ["_background_", "aeroplane"] and set(COLUMNS) == set(values)
    with pytest.raises(LogFormatError, match="has 21 class rows"):
        from more.tracking.authors_log import metric_points

        metric_points(log, class_names(load_config("coco")))
