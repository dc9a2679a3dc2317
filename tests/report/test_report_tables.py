"""Table models built from hand-made trial records (no MLflow, no files): check marks derived from configs,
the reference row, Table 4's confusion ratios, sensitivity ordering, several experiments, the CLI's URI rule."""

from __future__ import annotations

import math

import pytest

from more.report import Experiment, ReportOptions, TrialRecord, build_report
from more.report.render import markdown_table
from more.report.sources import FAILED, FINISHED, merge_expected
from more.report.tables import component_checks, find_reference, group_records, sensitivity, table3, table4


def rec(trial, condition, seed, miou, *, config=None, sweep=None, status=FINISHED, **metrics):
    values = {} if miou is None else {"val/seg/miou": miou, "val/seg/precision": miou + 10,
                                      "val/seg/recall": miou + 20}
    values.update({k.replace("__", "/"): v for k, v in metrics.items()})
    return TrialRecord(trial, condition, seed, dict(sweep or {}), status, metrics=values, config=dict(config or {}),
                       iteration=100)


FULL = {"lir.cre_weight": 0.2, "lir.ure_weight": 0.1, "gcr.enabled": True}


def test_checks_come_from_configs_and_the_reference_is_the_row_with_all_three():
    records = [rec("full-s0", "full", 0, 50.0, config=FULL), rec("full-s1", "full", 1, 52.0, config=FULL),
               rec("odd-s0", "odd", 0, 40.0, config={**FULL, "gcr.enabled": "False"}),
               rec("odd-s1", "odd", 1, 41.0, config={**FULL, "gcr.enabled": True}),  # disagrees with seed 0
               rec("none-s0", "none", 0, 30.0, config={})]
    groups = group_records(records, ["none", "odd", "full"])
    assert [g.condition for g in groups] == ["none", "odd", "full"]
    assert [c.value for c in component_checks(groups[1].records)] == [True, True, None]
    assert [c.value for c in component_checks(groups[0].records)] == [None, None, None]
    assert find_reference(groups).condition == "full"  # no condition is called "more"
    lines = markdown_table(table3(records, output="seg", conditions=["none", "odd", "full"],
                                  checkpoint_text="x").table).splitlines()
    assert lines[2] == "| none | ? | ? | ? | 40.00 | 50.00 | 30.00 | 1 | -21.00 | -21.00 | -21.00 |"
    assert lines[3] == "| odd | ✓ | ✓ | ? | 50.50 ± 0.71 | 60.50 ± 0.71 | 40.50 ± 0.71 | 2 | -10.50 | -10.50 | -10.50 |"
    assert lines[4] == "| full | ✓ | ✓ | ✓ | 61.00 ± 1.41 | 71.00 ± 1.41 | 51.00 ± 1.41 | 2 | ref | ref | ref |"


def test_a_condition_whose_runs_all_failed_keeps_its_row():
    records = [rec("more-s0", "more", 0, 50.0, config=FULL),
               rec("wo_gcr-s0", "wo_gcr", 0, None, status=FAILED, config={**FULL, "gcr.enabled": False})]
    line = markdown_table(table3(records, output="seg", conditions=["wo_gcr", "more"],
                                 checkpoint_text="x").table).splitlines()[2]
    assert line == "| wo_gcr | ✓ | ✓ |  | n/a | n/a | n/a | 0 | n/a | n/a | n/a |"


def test_table4_confusion_from_metrics_and_non_finite_values_noted():
    records = [rec("a-s0", "a", 0, 50.0, val__seg__iou__boat=40.0, val__seg__confusion__boat=0.5),
               rec("a-s1", "a", 1, 52.0, val__seg__iou__boat=44.0, val__seg__confusion__boat=math.inf),
               rec("a-s2", "a", 2, 54.0, val__seg__iou__boat=48.0, val__seg__confusion__boat=0.7)]
    records[0].confusion = {"seg": {"boat": 0.3}}  # the CSV artifact wins over the metric
    from more.report.paper_values import TABLE4

    t4 = table4([("a", records)], output="seg", checkpoint_text="x", classes=["boat", "cat"], paper_table4=TABLE4)
    assert [c.key for c in t4.columns] == ["class", "a_iou", "a_cr"]  # not VOC runs: the paper's classes differ
    boat = t4.rows[0]
    assert (boat["a_iou"].mean, boat["a_iou"].std) == (44.0, 4.0)
    assert (boat["a_cr"].mean, boat["a_cr"].n) == (pytest.approx(0.5), 2)  # 0.3 and 0.7; inf left out
    assert t4.rows[1]["class"] == "mean" and t4.rows[1]["a_cr"] == "n/a"  # no val/seg/confusion logged
    assert any("no IoU logged for class(es): cat" in n for n in t4.notes)
    assert any("1 confusion ratio(s) were inf or NaN" in n for n in t4.notes)


def test_sensitivity_orders_values_and_places_base_runs_at_their_config_value():
    records = [rec("base-k=16-s0", "base", 0, 60.0, sweep={"gcr.top_k": 16}),
               rec("base-s0", "base", 0, 55.0, config={"gcr.top_k": 0, "lir.ure_phi": 1.2}),
               rec("base-k=1-s0", "base", 0, 50.0, sweep={"gcr.top_k": 1}),
               rec("base-phi=1.4-s0", "base", 0, 40.0, sweep={"lir.ure_phi": 1.4})]  # another key: left out
    sens = sensitivity(records, "gcr.top_k", output="seg", conditions=["base"], checkpoint_text="x")
    assert sens.numeric and sens.series[0].xs == [0, 1, 16]
    assert [s.mean for s in sens.series[0].stats] == [55.0, 50.0, 60.0]
    mixed = sensitivity([rec("a", "base", 0, 1.0, sweep={"k": [1, 2]}), rec("b", "base", 0, 2.0, sweep={"k": 3})],
                        "k", output="seg", conditions=[], checkpoint_text="x")
    assert not mixed.numeric and mixed.series[0].xs == [3, [1, 2]]


def test_two_experiments_give_table4_across_experiments():
    def exp(name, iou):
        records = [rec(f"more-s{s}", "more", s, 50.0 + s, config=FULL, val__seg__iou__boat=iou + s) for s in (0, 1)]
        return Experiment(name, "h", records, "test", conditions=["more"])

    report = build_report([exp("voc", 40.0), exp("synthetic", 60.0)], ReportOptions(formats=("md", "csv")))
    t4 = report.tables["table4"]
    assert [c.header for c in t4.columns] == ["Class", "voc IoU", "voc CR", "synthetic IoU", "synthetic CR"]
    assert markdown_table(t4).splitlines()[2] == "| boat | 40.50 ± 0.71 | n/a | 60.50 ± 0.71 | n/a |"
    assert {"voc_table3.md", "synthetic_table3.csv", "table4.md", "voc_trials.csv"} <= set(report.files)


def test_error_summary_keeps_the_line_that_says_what_happened():
    from more.report.tables import error_summary

    tb = "Traceback (most recent call last):\n  File \"x.py\", line 1\n    boom()\nValueError: bad lr\n"
    assert error_summary(tb) == "ValueError: bad lr"
    assert error_summary("RuntimeError: out of memory\nmore detail") == "RuntimeError: out of memory"
    assert error_summary("x" * 400) == "x" * 299 + "…" and error_summary("") == ""


def test_merge_expected_keeps_spec_order_and_unknown_runs():
    expected = [TrialRecord(n, "c", 0, {}, "MISSING") for n in ("a", "b", "c")]
    found = [TrialRecord("extra", "old", 0, {}, FINISHED), TrialRecord("b", "c", 0, {}, FINISHED)]
    merged = merge_expected(found, expected)
    assert [(r.trial, r.status) for r in merged] == [("a", "MISSING"), ("b", FINISHED), ("c", "MISSING"),
                                                    ("extra", FINISHED)]


def test_tracking_uri_rule(tmp_path, monkeypatch):
    from more.report.generate import resolve_tracking_uri as tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(str(tmp_path)) == f"sqlite:///{tmp_path}/mlflow.db"
    assert tracking_uri(str(tmp_path / "x.db")) == f"sqlite:///{tmp_path}/x.db"
    assert tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert tracking_uri(None) == "http://127.0.0.1:1"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking_uri(None).endswith("/work/mlflow/mlflow.db") and tracking_uri(None).startswith("sqlite:////")
