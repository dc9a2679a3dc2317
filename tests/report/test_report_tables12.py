"""Tables 1 and 2 from tracked infer runs, and the authors' run row: runs with known numbers are written into a temp
sqlite MLflow store (the contracts' tags), then every cell, n, note and which run counts is checked by hand.

The numbers (mIoU %, spec ``t12_unit``: conditions more and baseline, seeds 0-2; baseline-s2 never ran):

* Table 1, synthetic train, scale 1, raw seeds, CAM: more-s0 71 (a masks run, newer than its seeds run's 70), more-s1
  72 (newer masks run; the seeds run also said 72), more-s2 74 -> 72.333 ± 1.528 (n=3), ‡;
  CRF masks, CAM: 74, 76 -> 75 ± 1.414 (n=2 of 3, more-s2 has none); multi-scale raw seeds, CAM: 75 (n=1 of 3);
  LAM: seeds 73, masks 77 (n=1 of 3 each), multi-scale "missing".
* Table 2, synthetic val seg raw: 60, 64, 62 -> 62 ± 2 (n=3); CRF: 62, 65 -> 63.5 ± 2.121 (n=2 of 3);
  cam2seg LAM raw 55 / CRF 58 (n=1 of 3); test seg raw: "no ground truth" (finished, no metrics).
  baseline: val seg raw 50 (n=1 of 2: baseline-s1's only run failed).
* Authors' run (voc_train.log, condition more): val/seg at 1000: mIoU 74.0; at 2000 (last): P 83.35, R 83.45,
  mIoU 72.1. Our more trials: val/seg/miou 70, 71, 75 -> mean 72.
"""

from __future__ import annotations

import csv
import io
import math
import sys
from pathlib import Path

import pytest

from more.report import Checkpoint, ReportOptions, build_report, load_experiment
from more.report.render import cell_markdown, csv_text

sys.path.insert(0, str(Path(__file__).parent))
from report12_runs import log_authors, log_infer  # noqa: E402

SPEC = "t12_unit"
CONDITIONS = {"baseline": {"lir.cre_weight": 0.0, "lir.ure_weight": 0.0, "gcr.enabled": False}, "more": {}}
FULL = {"lir.cre_weight": 0.5, "lir.ure_weight": 0.25, "gcr.enabled": True, "data.dataset": "synthetic"}
VAL = {"more": {0: 70.0, 1: 71.0, 2: 75.0}, "baseline": {0: 40.0, 1: 42.0}}
T0 = 1_700_000_000_000  # start times (ms): later = newer


@pytest.fixture(scope="module")
def tracked(tracking, tmp_path_factory, spec_writer):
    from more.harness.spec import expand, load_spec, spec_hash

    spec_path = spec_writer(tmp_path_factory.mktemp("spec12") / f"{SPEC}.yaml", SPEC, CONDITIONS, [0, 1, 2])
    spec = load_spec(spec_path)
    digest = spec_hash(spec, expand(spec))
    exp_id = tracking.experiment(SPEC)
    parent = tracking.launch(exp_id, SPEC, digest)
    trial = {}
    for cond, seeds in VAL.items():
        for seed, miou in seeds.items():
            evals = {2000: {"val/seg/precision": miou + 10, "val/seg/recall": miou + 12, "val/seg/miou": miou}}
            trial[(cond, seed)] = tracking.trial(
                exp_id, parent, spec_name=SPEC, digest=digest, trial=f"{cond}-s{seed}", condition=cond, seed=seed,
                config={**FULL, **CONDITIONS[cond], "train.seed": seed}, evals=evals)

    def infer(cond, seed, minute, **kw):
        return log_infer(tracking, exp_id, train_run_id=trial[(cond, seed)], spec_name=SPEC, digest=digest,
                         condition=cond, seed=seed, start_time=T0 + minute * 60_000, **kw)

    runs = {
        "s0_seeds": infer("more", 0, 1, task="seeds", values={"seeds": 70.0}),
        "s0_masks": infer("more", 0, 2, task="masks", values={"seeds": 71.0, "masks": 74.0}),
        "s1_masks": infer("more", 1, 4, task="masks", values={"seeds": 72.0, "masks": 76.0}),
        "s1_seeds": infer("more", 1, 3, task="seeds", values={"seeds": 72.0}),
        "s2_seeds": infer("more", 2, 5, task="seeds", values={"seeds": 74.0}),
        "s0_ms": infer("more", 0, 6, task="seeds", multiscale=True, scales=[1.0, 0.5, 1.5], values={"seeds": 75.0}),
        "s0_lam": infer("more", 0, 7, task="masks", source="lam", values={"seeds": 73.0, "masks": 77.0}),
        "s0_seg": infer("more", 0, 8, task="seg", split="val", crf=True, values={"seg_raw": 60.0, "seg_crf": 62.0}),
        "s1_seg": infer("more", 1, 9, task="seg", split="val", crf=True, values={"seg_raw": 64.0, "seg_crf": 65.0}),
        "s2_seg": infer("more", 2, 10, task="seg", split="val", values={"seg_raw": 62.0}),
        "s0_test": infer("more", 0, 11, task="seg", split="test"),
        "s0_c2s": infer("more", 0, 12, task="cam2seg", source="lam", split="val", crf=True,
                        values={"cam2seg": 55.0, "cam2seg_crf": 58.0}),
        "b0_seg": infer("baseline", 0, 13, task="seg", split="val", values={"seg_raw": 50.0}),
        "b1_seg": infer("baseline", 1, 14, task="seg", split="val", status="FAILED"),
    }
    # another spec's trial: must not appear
    other = tracking.experiment("t12_other")
    log_infer(tracking, other, train_run_id="not-a-trial-of-t12", spec_name="t12_other", digest="ffff",
              condition="more", seed=0, task="seeds", values={"seeds": 11.0})
    authors = log_authors(tracking, exp_id, spec_name=SPEC, digest=digest, dataset="synthetic", evals={
        1000: {"val/seg/miou": 74.0, "val/seg/precision": 80.0, "val/seg/recall": 90.0},
        2000: {"val/seg/miou": 72.1, "val/seg/precision": 83.35, "val/seg/recall": 83.45, "val/cam/miou": 75.0}})
    return {"spec": spec_path, "uri": tracking.uri, "runs": runs, "authors": authors, "digest": digest}


LAST = Checkpoint()


def _report(tracked, tmp_path, checkpoint=LAST, formats=("md", "tex", "csv")):
    exp = load_experiment(str(tracked["spec"]), tracking_uri=tracked["uri"], storage=tmp_path, checkpoint=checkpoint)
    return exp, build_report([exp], ReportOptions(checkpoint=checkpoint, formats=formats))


@pytest.fixture(scope="module")
def last(tracked, tmp_path_factory):
    """(experiment, report) with every format, PNG included."""
    return _report(tracked, tmp_path_factory.mktemp("storage12"), formats=("md", "tex", "csv", "png"))


def _row(table, label, map_name=None):
    rows = [r for r in table.rows if str(getattr(r["condition"], "value", r["condition"])) == label
            and (map_name is None or r.get("map") == map_name)]
    assert len(rows) == 1, [r["condition"] for r in table.rows]
    return rows[0]


def _cells(table, label, map_name=None):
    """header -> the Markdown text of one row's cells."""
    from more.report.render import shown_columns

    row = _row(table, label, map_name)
    return {c.header: cell_markdown(row.get(c.key, "")) for c in shown_columns(table)}


def _csv_row(table, label, map_name=None):
    rows = list(csv.DictReader(io.StringIO(csv_text(table))))
    match = [r for r in rows if r["condition"] == label and (map_name is None or r.get("map") == map_name)]
    assert len(match) == 1
    return match[0]


SEEDS, MASKS = "synthetic train, seeds, scale 1, raw", "synthetic train, masks, scale 1, CRF"
MS = "synthetic train, seeds, scales 1, 0.5, 1.5 (multi-scale), raw"
SEG_RAW, SEG_CRF = "synthetic val, seg, scale 1, raw", "synthetic val, seg, scale 1, CRF"
C2S_RAW, C2S_CRF = "synthetic val, cam2seg LAM, scale 1, raw", "synthetic val, cam2seg LAM, scale 1, CRF"
TEST = "synthetic test, seg, scale 1, raw"
VALIDATION = "synthetic val, seg, training-time validation (single scale, no flip), raw"
AUTHORS = "authors' run: more (voc_train.log)"


def test_table1_cells_protocols_and_paper(last):
    table = last[1].tables["table1"]
    assert [(str(r["condition"]), r["map"]) for r in table.rows] == [("more", "CAM"), ("more", "LAM")]
    cam, lam = _cells(table, "more", "CAM"), _cells(table, "more", "LAM")
    assert cam[SEEDS] == "72.33 ± 1.53 (n=3)‡"  # s0 71 (its masks run is newer than its seeds run's 70), 72, 74
    assert cam[MASKS] == "75.00 ± 1.41 (n=2 of 3)"
    assert cam[MS] == "75.00 (n=1 of 3)"
    assert (lam[SEEDS], lam[MASKS], lam[MS]) == ("73.00 (n=1 of 3)", "77.00 (n=1 of 3)", "missing")
    assert (cam["Paper seeds (VOC train, raw)"], cam["Paper masks (VOC train, CRF)"]) == ("76.90", "79.70")
    assert (lam["Paper seeds (VOC train, raw)"], lam["Paper masks (VOC train, CRF)"]) == ("77.00", "80.00")
    row = _csv_row(table, "more", "CAM")
    key = "synthetic_train_seeds_s1"
    assert math.isclose(float(row[f"{key}_mean"]), 217 / 3) and math.isclose(float(row[f"{key}_std"]), math.sqrt(7 / 3))
    assert row[f"{key}_n"] == "3" and row["trials"] == "3"
    assert math.isclose(float(row["synthetic_train_masks_s1_std"]), math.sqrt(2))
    assert "no infer run for this table from baseline" in table.notes
    assert ("the paper's numbers are on VOC / COCO with ViT-B/16; the runs of synthetic sit beside them for scale "
            "only") in table.notes


def test_table1_says_which_run_counts(last, tracked):
    runs = tracked["runs"]
    table = last[1].tables["table1"]
    note = next(n for n in table.notes if n.startswith("‡"))
    assert f"more-s0 ({SEEDS}): run {runs['s0_masks'][:8]} counts, not {runs['s0_seeds'][:8]}" in note
    assert f"more-s1 ({SEEDS}): run {runs['s1_masks'][:8]} counts, not {runs['s1_seeds'][:8]}" in note
    lacking = next(n for n in table.notes if n.startswith("trials without a counted run"))
    assert f"more, CAM / {MASKS}: more-s2" in lacking and f"more, LAM / {SEEDS}: more-s1, more-s2" in lacking
    assert "authors' run: more (voc_train.log) has no train-split numbers in its log, so no row here" in table.notes
    lines = list(csv.DictReader(io.StringIO(last[1].files["infer_runs.csv"])))
    assert len(lines) == 20  # one per (run, output): 14 runs of this spec, the other spec's run left out
    fate = {(r["run_id"], r["output"]): r["counted"] for r in lines}
    assert fate[(runs["s0_seeds"], "seeds")] == f"superseded by {runs['s0_masks']}"
    assert fate[(runs["s0_masks"], "seeds")] == fate[(runs["s0_masks"], "masks")] == "counts"
    assert fate[(runs["b1_seg"], "seg_raw")] == fate[(runs["s0_test"], "seg_raw")] == "no value"
    assert "11" not in {r["miou"] for r in lines}


def test_table2_cells_protocols_and_authors(last):
    table = last[1].tables["table2"]
    assert [str(r["condition"]) for r in table.rows] == ["baseline", "more", AUTHORS]
    more, base, authors = _cells(table, "more"), _cells(table, "baseline"), _cells(table, AUTHORS)
    assert (more[SEG_RAW], more[SEG_CRF]) == ("62.00 ± 2.00 (n=3)", "63.50 ± 2.12 (n=2 of 3)")
    assert (more[C2S_RAW], more[C2S_CRF], more[TEST]) == ("55.00 (n=1 of 3)", "58.00 (n=1 of 3)", "no ground truth")
    assert more[VALIDATION] == "72.00 ± 2.65 (n=3)"  # the trainer's own val/seg/miou: 70, 71, 75
    assert (base[SEG_RAW], base[SEG_CRF], base[TEST]) == ("50.00 (n=1 of 2)", "missing", "missing")
    assert authors[VALIDATION] == "72.10 (n=1)" and authors[SEG_RAW] == "not in the log"
    assert (more["Paper VOC val"], more["Paper VOC test"], more["Paper COCO val"]) == ("76.40", "75.00", "47.40")
    assert base["Paper VOC val"] == "n/a"
    headers = [c.header for c in table.columns]
    assert headers.index(SEG_RAW) + 1 == headers.index(SEG_CRF)  # raw and CRF of one protocol side by side
    row = _csv_row(table, "more")
    assert math.isclose(float(row["synthetic_val_seg_crf_s1_std"]), math.sqrt(4.5))
    lacking = next(n for n in table.notes if n.startswith("trials without a counted run"))
    assert f"baseline / {SEG_RAW}: baseline-s1" in lacking


def test_authors_row_in_table3_never_averaged(last, tracked):
    exp, report = last
    table = report.tables["table3"]
    assert [str(getattr(r["condition"], "value", r["condition"])) for r in table.rows] == ["baseline", "more", AUTHORS]
    cells = _cells(table, AUTHORS)
    assert cells["Condition"] == AUTHORS + "§"
    assert (cells["Precision"], cells["Recall"], cells["mIoU"], cells["n"]) == ("83.35", "83.45", "72.10", "1")
    assert (cells["ΔP"], cells["ΔR"], cells["ΔmIoU"]) == ("+1.35", "-0.55", "+0.10")  # ours: 82, 84, 72
    assert (cells["L_cre"], cells["L_ure"], cells["GCR"]) == ("✓", "✓", "✓")
    assert _cells(table, "more")["mIoU"] == "72.00 ± 2.65"
    assert AUTHORS not in report.files["table3_paired.md"]
    assert any(f"MLflow run {tracked['authors']}), its last evaluation (iteration 2000)" in n for n in table.notes)


def test_authors_row_best_checkpoint(tracked, tmp_path):
    _, report = _report(tracked, tmp_path, checkpoint=Checkpoint("best", "val"))
    cells = _cells(report.tables["table3"], AUTHORS)
    assert (cells["Precision"], cells["Recall"], cells["mIoU"]) == ("80.00", "90.00", "74.00")
    assert any("its best evaluation on val (iteration 1000)" in n for n in report.tables["table3"].notes)
    assert _cells(report.tables["table2"], AUTHORS)[VALIDATION] == "74.00 (n=1)"


def test_latex_spells_the_marks(last):
    for name in ("table1", "table2", "table3"):
        tex = last[1].files[f"{name}.tex"]
        assert not {"‡", "§", "±"} & set(tex) and tex.count("{") == tex.count("}")
    assert r"$^\ddagger$" in last[1].files["table1.tex"] and r"\S{}" in last[1].files["table3.tex"]


def test_every_table_has_a_figure(last):
    from PIL import Image

    files = last[1].files
    for name in ("table1", "table2", "table3", "table4"):
        with Image.open(io.BytesIO(files[f"{name}.png"])) as img:
            assert img.format == "PNG" and img.width > 300 and img.height > 200
        assert f"]({name}.png)" in files["report.md"]


def test_no_infer_runs_is_one_line(tracking, tmp_path, spec_writer):
    from more.harness.spec import expand, load_spec, spec_hash

    spec_path = spec_writer(tmp_path / "t12_none.yaml", "t12_none", {"more": {}}, [0])
    spec = load_spec(spec_path)
    digest = spec_hash(spec, expand(spec))
    exp_id = tracking.experiment("t12_none")
    parent = tracking.launch(exp_id, "t12_none", digest)
    tracking.trial(exp_id, parent, spec_name="t12_none", digest=digest, trial="more-s0", condition="more", seed=0,
                   config={**FULL, "train.seed": 0}, evals={100: {"val/seg/miou": 50.0}})
    exp = load_experiment(str(spec_path), tracking_uri=tracking.uri, storage=tmp_path, checkpoint=Checkpoint())
    report = build_report([exp], ReportOptions(formats=("md", "csv", "png")))
    lines = [ln for ln in report.markdown.splitlines() if "infer run" in ln]
    assert lines == ["Tables 1 and 2: no infer runs of this spec's trials are tracked (`python -m more infer` on a "
                     "trial's checkpoint makes them)."]
    assert not any(name.startswith(("table1", "table2", "infer_runs")) for name in report.files)
    assert {"table3.md", "table3.png", "table4.md", "table4.png"} <= set(report.files)
