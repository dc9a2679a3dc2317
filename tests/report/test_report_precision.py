"""Table 3's Precision over the classes where it is defined, from hand-computed confusion matrices: the metrics the
trainer logs (per-class confusion ratios, NaN for a class never predicted), the footnote in Markdown and LaTeX, the
strict mean kept in the CSV, and the same numbers read back from MLflow (which stores inf as the largest float)."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest

from more.eval.evaluate import EvalResult
from more.eval.metrics import scores
from more.report import Checkpoint, ReportOptions, TrialRecord, build_report, load_experiment
from more.report.precision import class_precision, defined_precision
from more.report.render import csv_text, latex_table, markdown_section, markdown_table
from more.report.sources import FINISHED
from more.report.tables import sensitivity, table3
from more.tracking.tables import per_class_table, to_csv
from more.train.trainer import eval_metrics

CLASSES = ["background", "cat", "boat"]
FULL = {"lir.cre_weight": 0.2, "lir.ure_weight": 0.1, "gcr.enabled": True}
# hist[gt, pred]. NEVER: boat is never predicted (its precision is 0/0) -> bg 8/12, cat 4/7
NEVER = np.array([[8, 2, 0], [1, 4, 0], [3, 1, 0]])
# ALL: every class predicted -> bg 9/10, cat 5/6, boat 3/4
ALL = np.array([[9, 1, 0], [0, 5, 1], [1, 0, 3]])
# WRONG: boat predicted but never right (precision 0, confusion ratio inf); cat never predicted -> bg 7/8, boat 0/2
WRONG = np.array([[7, 0, 2], [1, 0, 0], [0, 0, 0]])
P_NEVER = 100 * (8 / 12 + 4 / 7) / 2
P_ALL = 100 * (9 / 10 + 5 / 6 + 3 / 4) / 3
P_WRONG = 100 * (7 / 8 + 0) / 2


def logged(hist: np.ndarray) -> dict[str, float]:
    """What the trainer logs for an evaluation whose seg output has this confusion matrix."""
    return eval_metrics(EvalResult(scores={"seg": scores(hist)}, cls_f1=1.0, num_images=1), CLASSES)


def rec(trial: str, condition: str, seed: int, hist: np.ndarray, *, sweep: dict | None = None) -> TrialRecord:
    return TrialRecord(trial, condition, seed, dict(sweep or {}), FINISHED, metrics=logged(hist), config=dict(FULL),
                       iteration=100)


def test_per_run_precision_over_the_defined_classes():
    never = defined_precision(rec("a", "a", 0, NEVER), "seg")
    assert math.isnan(never.strict)  # the reference's plain mean over all classes
    assert never.value == pytest.approx(P_NEVER) and never.left_out == ("boat",)
    full = defined_precision(rec("b", "b", 0, ALL), "seg")
    assert (full.value, full.left_out) == (pytest.approx(P_ALL), ())
    wrong = rec("c", "c", 0, WRONG)
    assert math.isinf(wrong.metrics["val/seg/confusion/boat"])
    assert class_precision(wrong, "seg", "boat") == 0.0  # predicted, never right: 0, and not left out
    assert defined_precision(wrong, "seg").value == pytest.approx(P_WRONG)
    assert defined_precision(wrong, "seg").left_out == ("cat",)
    # a logged per-class precision wins over the confusion ratio; a run with no per-class values is unknown
    wrong.metrics["val/seg/precision/background"] = 50.0
    assert defined_precision(wrong, "seg").value == pytest.approx(25.0)
    bare = TrialRecord("d", "d", 0, {}, FINISHED, metrics={"val/seg/precision": math.nan, "val/seg/miou": 1.0})
    assert defined_precision(bare, "seg").value is None


def test_table3_shows_the_defined_mean_with_a_footnote_and_keeps_the_strict_mean_in_the_csv():
    records = [rec("more-s0", "more", 0, NEVER), rec("more-s1", "more", 1, ALL),
               rec("wo_gcr-s0", "wo_gcr", 0, WRONG), rec("wo_gcr-s1", "wo_gcr", 1, NEVER)]
    t3 = table3(records, output="seg", conditions=["wo_gcr", "more"], checkpoint_text="x")
    more_p = [P_NEVER, P_ALL]
    gcr_p = [P_WRONG, P_NEVER]
    more_mean, gcr_mean = sum(more_p) / 2, sum(gcr_p) / 2
    lines = markdown_table(t3.table).splitlines()
    assert lines[0].startswith("| Condition | L_cre | L_ure | GCR | Precision | Recall | mIoU | n |")
    assert "strict" not in lines[0]  # the strict column is in the CSV only
    gcr_cells = [c.strip() for c in lines[2].split("|")[1:-1]]
    more_cells = [c.strip() for c in lines[3].split("|")[1:-1]]
    assert more_cells[4] == f"{more_mean:.2f} ± {abs(P_NEVER - P_ALL) / math.sqrt(2):.2f}†"
    assert gcr_cells[4] == f"{gcr_mean:.2f} ± {abs(P_WRONG - P_NEVER) / math.sqrt(2):.2f}†"
    assert gcr_cells[8] == f"{gcr_mean - more_mean:+.2f}"  # ΔP of the shown means
    note = next(n for n in t3.table.notes if n.startswith("† Precision over the classes where it is defined"))
    assert "Left out: wo_gcr: cat (1 of 2 runs), boat (1 of 2 runs); more: boat (1 of 2 runs)." in note
    assert f"- {note}" in markdown_section(t3.table)
    tex = latex_table(t3.table)
    assert r"$^\dagger$" in tex.split(r"\midrule")[1]  # the marked cells
    assert r"\par\smallskip{\footnotesize $^\dagger$ Precision over the classes where it is defined" in tex
    assert r"more: boat (1 of 2 runs).}" in tex

    rows = {r["condition"]: r for r in csv.DictReader(io.StringIO(csv_text(t3.table)))}
    assert float(rows["more"]["precision_defined_mean"]) == pytest.approx(more_mean)
    assert rows["more"]["precision_defined_n"] == "2"
    # the strict mean: only the ALL run has one (NaN is left out of a Stat), so n = 1
    assert float(rows["more"]["precision_mean"]) == pytest.approx(P_ALL) and rows["more"]["precision_n"] == "1"
    assert rows["wo_gcr"]["precision_mean"] == "" and rows["wo_gcr"]["precision_n"] == "0"
    assert float(rows["wo_gcr"]["delta_precision"]) == pytest.approx(gcr_mean - more_mean)

    paired = {(r["condition"], r["metric"]): r for r in t3.paired.rows}
    diff = paired[("wo_gcr", "Precision")]
    assert diff["pairs"] == 2 and diff["mean_diff"].value == pytest.approx(gcr_mean - more_mean)


def test_no_footnote_when_every_class_is_predicted_and_sensitivity_uses_the_same_rule():
    t3 = table3([rec("more-s0", "more", 0, ALL)], output="seg", conditions=["more"], checkpoint_text="x").table
    assert markdown_table(t3).splitlines()[2].split("|")[5].strip() == f"{P_ALL:.2f}" and t3.notes == []
    sens = sensitivity([rec("k1", "more", 0, NEVER, sweep={"gcr.top_k": 1}),
                        rec("k2", "more", 0, ALL, sweep={"gcr.top_k": 2})], "gcr.top_k", output="seg",
                       conditions=["more"], checkpoint_text="x")
    lines = markdown_table(sens.table).splitlines()
    assert lines[2].split("|")[3].strip() == f"{P_NEVER:.2f}†" and lines[3].split("|")[3].strip() == f"{P_ALL:.2f}"
    assert any("Left out: more at gcr.top_k=1: boat (1 of 1 run)." in n for n in sens.table.notes)


def test_read_back_from_mlflow_with_nan_and_inf(tracking, spec_writer, tmp_path):
    """MLflow stores NaN as a flag and inf as the largest float: the precision read back is the same."""
    from more.harness.spec import expand, load_spec, spec_hash

    name = "precision_unit"
    spec_path = spec_writer(tmp_path / f"{name}.yaml", name, {"more": {}}, [0, 1])
    spec = load_spec(spec_path)
    digest = spec_hash(spec, expand(spec))
    exp_id = tracking.experiment(name)
    parent = tracking.launch(exp_id, name, digest)
    # seed 0 also has the tracker's per-class CSV artifact (read first, "nan" in its text); seed 1 only metrics
    per_class = {0: {100: to_csv(per_class_table(logged(NEVER), CLASSES))}, 1: None}
    for seed, hist in ((0, NEVER), (1, WRONG)):
        tracking.trial(exp_id, parent, spec_name=name, digest=digest, trial=f"more-s{seed}", condition="more",
                       seed=seed, config={**FULL, "train.seed": seed}, evals={100: logged(hist)},
                       per_class_csv=per_class[seed])
    exp = load_experiment(str(spec_path), tracking_uri=tracking.uri, storage=tmp_path, checkpoint=Checkpoint())
    # the per-class ratios come from the runs' metrics (the artifact is read only for runs that lack them)
    assert math.isnan(exp.records[0].confusion["seg"]["boat"])
    assert exp.records[1].confusion["seg"]["boat"] == exp.records[1].metrics["val/seg/confusion/boat"]
    assert exp.records[1].metrics["val/seg/confusion/boat"] == np.finfo(np.float64).max
    row = build_report([exp], ReportOptions(formats=("md",))).tables["table3"].rows[0]
    stat = row["precision_defined"].value
    assert (stat.mean, stat.n) == (pytest.approx((P_NEVER + P_WRONG) / 2), 2)
    assert row["precision"].n == 0  # the strict mean is NaN in both runs
