"""Protocols of Tables 1 and 2 without MLflow: every task x map x CRF x scales x split combination gets its own
column whose header names its post-processing; why a cell is empty; Table 2 across experiments; the one line when
MLflow was not read; what the figures draw."""

from __future__ import annotations

import itertools
import math

from more.report import ReportOptions, build_report
from more.report.charts import table3_chart
from more.report.infer_reader import AuthorsRun, Inference, InferRun
from more.report.protocols import CRF_OUTPUTS, TABLE1_OUTPUTS, Protocol
from more.report.records import Experiment, TrialRecord
from more.report.render import cell_markdown
from more.report.tables import group_records
from more.report.tables12 import Row12, Source12, build_table12, cell_of, select_runs

TASKS = ("seeds", "masks", "seg", "cam2seg")


def run(trial="more-s0", *, task="seeds", source="cam", split="train", crf=False, multiscale=False, scales=(1.0,),
        values=None, status="FINISHED", start=0, run_id=None, dataset="voc", seed=0, condition="more", iteration=100):
    metrics = {f"infer/{o}/miou": v for o, v in (values or {}).items()}
    return InferRun(run_id or f"{trial}-{task}-{source}-{split}-{crf}-{multiscale}-{start}", "name", status, start,
                    task, "seg" if task == "seg" else source, split, dataset, tuple(scales), multiscale, crf,
                    iteration, "ckpt", "out", "", trial, condition, seed, {}, metrics)


def record(trial="more-s0", condition="more", seed=0, miou=70.0, dataset="voc"):
    return TrialRecord(trial, condition, seed, {}, "FINISHED", metrics={"val/seg/miou": miou},
                       config={"data.dataset": dataset}, iteration=100, run_id=f"id-{trial}")


def test_outputs_of_each_task():
    assert run(task="seeds").outputs() == ("seeds",)
    assert run(task="seeds", crf=True).outputs() == ("seeds", "masks")
    assert run(task="masks").outputs() == ("seeds", "masks")  # masks is seeds + CRF
    assert run(task="seg", split="val").outputs() == ("seg_raw",)
    assert run(task="seg", split="val", crf=True).outputs() == ("seg_raw", "seg_crf")
    assert run(task="cam2seg", split="val", crf=True).outputs() == ("cam2seg", "cam2seg_crf")
    # an output the run logged beyond what its flags say still counts
    assert run(task="seeds", values={"seeds": 1.0, "masks": 2.0}).outputs() == ("seeds", "masks")


def test_every_protocol_combination_is_its_own_column():
    combos = itertools.product(TASKS, ("cam", "lam"), (False, True), ((1.0,), (1.0, 0.5, 1.5)), ("train", "val",
                                                                                                    "test"))
    runs = [run("more-s0", task=t, source=s, crf=c, multiscale=len(sc) > 1, scales=sc, split=sp,
                start=i, values={o: 10.0 + i for o in ("seeds", "masks", "seg_raw", "seg_crf", "cam2seg",
                                                         "cam2seg_crf")})
            for i, (t, s, c, sc, sp) in enumerate(combos)]
    protocols = {r.protocol(o) for r in runs for o in r.outputs()}
    headers = {p: p.header() for p in protocols}
    keys = {p: p.key() for p in protocols}
    assert len(set(headers.values())) == len(protocols) == len(set(keys.values()))
    for p, header in headers.items():
        assert header.endswith(", CRF" if p.output in CRF_OUTPUTS else ", raw"), header
        assert ("CRF" in header) == p.crf
        assert p.split in header and ("scales 1, 0.5, 1.5 (multi-scale)" in header) == bool(p.multiscale)
    # seg reads the decoder whatever the map flag says: cam and lam runs share its columns
    seg = {p for p in protocols if p.output.startswith("seg_")}
    assert {p.source for p in seg} == {"seg"} and len(seg) == 2 * 2 * 3
    # every (trial, protocol) has one counted run: the newest
    selected = select_runs(runs)
    assert set(selected) == {("more-s0", p) for p in protocols}
    for (_, p), sel in selected.items():
        newest = max((r for r in runs if p in {r.protocol(o) for o in r.outputs()}), key=lambda r: r.start_time)
        assert sel.counted is newest and sel.value == 10.0 + newest.start_time


def test_table1_columns_never_mix_raw_and_crf():
    runs = [run(task="masks", values={"seeds": 60.0, "masks": 65.0}),
            run(task="seeds", source="lam", values={"seeds": 61.0}, start=1)]
    src = Source12("voc_spec", [record()], ["more"], Inference(runs=runs, read=True))
    t = build_table12([src], 1, title="Table 1", checkpoint_text="x")
    by_header = {c.header(): c for c in t.columns}
    assert list(by_header) == ["VOC train, seeds, scale 1, raw", "VOC train, masks, scale 1, CRF"]
    cells = {(r["map"], h): cell_markdown(r[c.key()]) for r in t.table.rows for h, c in by_header.items()}
    assert cells == {("CAM", "VOC train, seeds, scale 1, raw"): "60.00 (n=1)",
                     ("CAM", "VOC train, masks, scale 1, CRF"): "65.00 (n=1)",
                     ("LAM", "VOC train, seeds, scale 1, raw"): "61.00 (n=1)",
                     ("LAM", "VOC train, masks, scale 1, CRF"): "missing"}
    assert all(p.output in TABLE1_OUTPUTS for p in t.columns)


def test_why_a_cell_is_empty():
    col = Protocol("voc", "val", "seg_raw", "seg", (1.0,), False)
    cases = {
        "no ground truth": [run(task="seg", split="val")],
        "not finished": [run(task="seg", split="val", status="RUNNING")],
        "NaN": [run(task="seg", split="val", values={"seg_raw": math.nan})],
        "missing": [],
    }
    for expected, runs in cases.items():
        row = Row12("more", "more", "", ["more-s0"], select_runs(runs), {})
        assert cell_of(row, col, 2).shown() == expected
    # a NaN run does not hide an older finite one: the newest run *with a value* counts
    runs = [run(task="seg", split="val", values={"seg_raw": 50.0}, start=0),
            run(task="seg", split="val", values={"seg_raw": math.nan}, start=5)]
    sel = select_runs(runs)[("more-s0", col)]
    assert sel.value == 50.0 and sel.without == [runs[1]] and sel.earlier == []


def _experiment(name, dataset, values, authors=None):
    records = [record(f"more-s{s}", seed=s, dataset=dataset) for s in range(len(values))]
    runs = [run(f"more-s{s}", task="seg", split="val", dataset=dataset, seed=s, values={"seg_raw": v}, start=s)
            for s, v in enumerate(values)]
    return Experiment(name, "h", records, "test", conditions=["more"],
                      inference=Inference(runs=runs, authors=authors or [], read=True))


def test_table2_across_experiments_keeps_each_dataset_in_its_column():
    voc, coco = _experiment("voc_spec", "voc", [70.0, 72.0]), _experiment("coco_spec", "coco", [40.0])
    report = build_report([voc, coco], ReportOptions(formats=("md", "csv")))
    table = report.tables["table2"]
    headers = [c.header for c in table.columns]
    assert headers == ["Condition", "VOC val, seg, scale 1, raw", "COCO val, seg, scale 1, raw", "trials",
                       "Paper VOC val", "Paper VOC test", "Paper COCO val"]
    rows = {r["condition"]: [cell_markdown(r.get(c.key, "")) for c in table.columns[1:3]] for r in table.rows}
    assert rows == {"voc_spec/more": ["71.00 ± 1.41 (n=2)", "missing"], "coco_spec/more": ["missing", "40.00 (n=1)"]}
    assert "voc_spec_table2.md" in report.files and "coco_spec_table2.md" in report.files


def test_mlflow_not_read_is_one_line():
    exp = Experiment("files_only", "h", [record()], "results.json", conditions=["more"],
                     inference=Inference(notes=["the trials were not read from MLflow, where infer runs are tracked"]))
    report = build_report([exp], ReportOptions(formats=("md",)))
    lines = [ln for ln in report.markdown.splitlines() if "Tables 1 and 2" in ln]
    assert lines == ["Tables 1 and 2: no infer runs read (the trials were not read from MLflow, where infer runs are "
                     "tracked)."]
    assert "table1" not in report.tables and "table3" in report.tables


def test_figures_draw_what_the_tables_hold():
    authors = AuthorsRun("a1", "authors-voc_train", "voc_train.log", "more", 0, "voc", "h", 0, 20000,
                         {"val/seg/miou": 72.12, "val/seg/precision": 83.35})
    exp = _experiment("voc_spec", "voc", [70.0, 72.0], authors=[authors])
    exp.inference.runs.append(run("more-s0", task="seg", split="test", start=9))
    t = build_table12([Source12(exp.name, exp.records, exp.conditions, exp.inference)], 2, title="T2",
                      checkpoint_text="x")
    panels = {p.title: p for p in t.chart.panels}
    val = panels["VOC val, seg, scale 1, raw"].bars
    assert [(b.label, sorted(b.values), b.paper, b.authors) for b in val] == [("more", [70.0, 72.0], 76.4, False)]
    assert "VOC test, seg, scale 1, raw" not in panels  # nothing to draw: the note says why
    assert t.chart.note == "no number to draw, see the table: VOC test, seg, scale 1, raw (no ground truth)"
    trainer = panels["VOC val, seg, training-time validation (single scale, no flip), raw"].bars
    assert [(b.label, b.values, b.authors) for b in trainer] == [
        ("more", [70.0, 70.0], False), ("authors' run: more (voc_train.log)", [72.12], True)]
    groups = group_records(exp.records, ["more"])
    chart = table3_chart(groups, output="seg", paper_rows={"more": {"miou": 76.4}}, title="T3",
                         authors=[(authors.label, "more", {"miou": 72.12, "precision": 83.35, "recall": None})])
    miou = {p.title: p for p in chart.panels}["mIoU (%)"].bars
    assert [(b.label, b.values, b.paper, b.authors) for b in miou] == [
        ("more", [70.0, 70.0], 76.4, False), ("authors' run: more (voc_train.log)", [72.12], None, True)]
    recall = {p.title: p for p in chart.panels}["Recall (%)"].bars
    assert recall[-1].status == "not in the log" and recall[0].status == "no result"
