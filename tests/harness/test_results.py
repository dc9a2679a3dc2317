"""The results table, its summary over seeds, the files written, the error summary and the stop rule."""

from __future__ import annotations

import csv
import io
import json
import math

from more.harness.results import TrialRow, error_summary, format_table, summarize, to_csv, to_json
from more.harness.spec import parse_spec
from more.harness.tune_runner import ThresholdStopper


def row(trial, condition, seed, status="TERMINATED", metric=None, sweep=None, error=""):
    return TrialRow(trial=trial, condition=condition, sweep=sweep or {}, seed=seed, status=status, metric=metric,
                    iterations=6 if status == "TERMINATED" else None, node_ip="127.0.0.2", error=error,
                    path=f"/x/{trial}", run_dir=f"/x/{trial}/run", metrics={"iter": 6.0})


ROWS = [
    row("more-s0", "more", 0, metric=70.0),
    row("more-s1", "more", 1, metric=74.0),
    row("more-s2", "more", 2, metric=float("nan")),  # a NaN metric does not enter the mean
    row("wo_cre-top_k=2-s0", "wo_cre", 0, metric=60.5, sweep={"gcr.top_k": 2}),
    row("wo_cre-top_k=2-s1", "wo_cre", 1, status="ERROR", sweep={"gcr.top_k": 2},
        error="TrainingDiverged: loss term 'cls' became non-finite at step 1"),
]


def test_summary_is_mean_and_sample_std_over_finished_seeds():
    more, wo_cre = summarize(ROWS)
    assert more == {"condition": "more", "sweep": "", "n": 2, "mean": 72.0, "std": math.sqrt(8.0)}  # (70, 74)
    assert wo_cre == {"condition": "wo_cre", "sweep": "gcr.top_k=2", "n": 1, "mean": 60.5, "std": None}


def test_markdown_table_lists_trials_summary_and_failures():
    text = format_table(ROWS, "val/seg/miou")
    lines = text.splitlines()
    assert lines[0] == "| trial | condition | sweep | seed | status | val/seg/miou | iterations | node |"
    assert lines[2] == "| more-s0 | more | - | 0 | TERMINATED | 70.00 | 6 | 127.0.0.2 |"
    assert "| wo_cre-top_k=2-s1 | wo_cre | gcr.top_k=2 | 1 | ERROR | - | - | 127.0.0.2 |" in lines
    assert "| more | - | 2 | 72.00 | 2.83 |" in lines
    assert "| wo_cre | gcr.top_k=2 | 1 | 60.50 | - |" in lines
    assert lines[-2:] == ["Failed trials:",
                          "- wo_cre-top_k=2-s1: TrainingDiverged: loss term 'cls' became non-finite at step 1"]
    nan_note = next(x for x in lines if x.startswith("val/seg/miou is NaN"))
    assert nan_note.startswith("val/seg/miou is NaN for 1 finished trial(s), left out of n: more-s2.")
    assert "`val/<output>/miou_present`" in nan_note
    assert not any("is NaN" in x for x in format_table(ROWS[:2], "val/seg/miou").splitlines())
    assert "miou_present" not in format_table(ROWS, "val/cls_f1")  # the hint is about m-IoU only


def test_csv_and_json_files():
    table = list(csv.DictReader(io.StringIO(to_csv(ROWS))))
    assert table[3]["sweep"] == "gcr.top_k=2" and table[3]["metric"] == "60.5"
    assert table[0]["run_dir"] == "/x/more-s0/run"
    spec = parse_spec({"name": "t", "experiment": {"config": "synthetic"}})
    data = json.loads(to_json(spec, "0123456789ab", ROWS))  # strict JSON: NaN written as null
    assert data["spec"] == "t" and data["spec_hash"] == "0123456789ab" and data["metric"] == "val/seg/miou"
    assert data["trials"][2]["metric"] is None and data["trials"][3]["sweep"] == {"gcr.top_k": 2}
    assert data["trials"][0]["metrics"] == {"iter": 6.0}
    assert data["summary"][0]["mean"] == 72.0


def test_error_summary_unwraps_the_task_error():
    class Wrapped(Exception):
        def __init__(self, cause):
            super().__init__("traceback ...")
            self.cause = cause

    assert error_summary(Wrapped(ValueError("bad thing\nmore lines"))) == "ValueError: bad thing"
    assert error_summary(RuntimeError("plain")) == "RuntimeError: plain"
    assert error_summary(None) == ""


def test_threshold_stopper_respects_the_metric_direction():
    stop = ThresholdStopper({"iter": 9, "val/seg/miou": 50.0, "val/seg/confusion": 0.2}, {"val/seg/confusion"})
    assert not stop("t", {"iter": 3, "val/seg/miou": 49.9, "val/seg/confusion": 0.5})
    assert stop("t", {"iter": 9})
    assert stop("t", {"iter": 3, "val/seg/miou": 50.0})
    assert stop("t", {"iter": 3, "val/seg/confusion": 0.2})
    assert not stop("t", {"train/loss": 1.0}) and not stop.stop_all()
