"""The report read from MLflow: tracked runs with known numbers are written in the test (temp sqlite store), then
the Markdown / CSV / LaTeX tables, the paired comparison and the missing/failed section are checked exactly."""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

import pytest

from more.report import Checkpoint, ReportOptions, build_report, load_experiment
from more.report.render import csv_text, latex_table, markdown_table, tex_escape

SPEC = "table3_unit"
CONDITIONS = {
    "baseline": {"lir.cre_weight": 0.0, "lir.ure_weight": 0.0, "gcr.enabled": False},
    "wo_cre": {"lir.cre_weight": 0.0},
    "wo_ure": {"lir.ure_weight": 0.0},
    "wo_gcr": {"gcr.enabled": False},
    "more": {},
}
FULL = {"lir.cre_weight": 0.5, "lir.ure_weight": 0.25, "gcr.enabled": True, "data.dataset": "voc"}
OOM = "RuntimeError: CUDA out of memory (100% used) in {block_3}"
# condition -> seed -> (precision, recall, miou) of the last evaluation (iteration 2000)
NUMBERS = {
    "baseline": {0: (76, 46, 41), 1: (76, 47, 42), 2: (77, 46.5, 46)},
    "wo_cre": {0: (75, 80, 65), 1: (76, 81, 67)},
    "wo_ure": {0: (84.3, 85.7, 74.4)},
    "wo_gcr": {0: (81.6, 85.5, 72.1)},
    "more": {0: (84, 87, 76), 1: (85, 88, 77), 2: (86, 89, 78)},
}
LAST = Checkpoint()
PER_CLASS = "class,output,iou,confusion\nbackground,seg,90.0,{bg}\nboat,seg,70.0,{boat}\n"


@pytest.fixture(scope="module")
def tracked(tracking, tmp_path_factory, spec_writer):
    """The table3_unit spec and its runs: 3 seeds of baseline and more, 2 of wo_cre, 1 of wo_ure and wo_gcr, a failed
    wo_ure run, a finished wo_gcr run without evaluation, the rest never ran."""
    from more.harness.spec import expand, load_spec, spec_hash

    spec_path = spec_writer(tmp_path_factory.mktemp("spec") / "table3_unit.yaml", SPEC, CONDITIONS, [0, 1, 2])
    spec = load_spec(spec_path)
    digest = spec_hash(spec, expand(spec))
    exp_id = tracking.experiment(SPEC)
    parent = tracking.launch(exp_id, SPEC, digest)
    common = {"spec_name": SPEC, "digest": digest}
    for cond, seeds in NUMBERS.items():
        config = {**FULL, **CONDITIONS[cond]}
        for seed, (p, r, m) in seeds.items():
            evals = {2000: {"val/seg/precision": p, "val/seg/recall": r, "val/seg/miou": m, "train/loss": 1.0}}
            per_class = None
            if cond == "more":
                evals[2000].update({"val/seg/iou/background": 90.0 + seed, "val/seg/iou/boat": 70.0 + 2 * seed,
                                    "val/seg/confusion": 0.2 + 0.1 * seed})
                if seed == 0:  # a better evaluation earlier: what --checkpoint best:val picks
                    evals[1000] = {"val/seg/precision": 83.0, "val/seg/recall": 90.0, "val/seg/miou": 79.0}
                if seed < 2:
                    per_class = {2000: PER_CLASS.format(bg=0.1, boat=0.25 + 0.1 * seed)}
            tracking.trial(exp_id, parent, trial=f"{cond}-s{seed}", condition=cond, seed=seed,
                           config={**config, "train.seed": seed}, evals=evals, per_class_csv=per_class, **common)
    tracking.trial(exp_id, parent, trial="wo_ure-s1", condition="wo_ure", seed=1, status="FAILED", error=OOM,
                   config={**FULL, **CONDITIONS["wo_ure"], "train.seed": 1}, evals={10: {"train/loss": 3.0}}, **common)
    tracking.trial(exp_id, parent, trial="wo_gcr-s1", condition="wo_gcr", seed=1,
                   config={**FULL, **CONDITIONS["wo_gcr"], "train.seed": 1}, evals={10: {"train/loss": 2.0}}, **common)
    return {"spec": spec_path, "digest": digest, "parent": parent, "uri": tracking.uri, "tracking": tracking}


def _report(tracked, tmp_path, checkpoint=LAST, formats=("md", "tex", "csv")):
    exp = load_experiment(str(tracked["spec"]), tracking_uri=tracked["uri"], storage=tmp_path, checkpoint=checkpoint)
    return exp, build_report([exp], ReportOptions(checkpoint=checkpoint, formats=formats))


@pytest.fixture(scope="module")
def last(tracked, tmp_path_factory):
    """(experiment, report) of the last evaluations, read once for the tests that only look at it."""
    return _report(tracked, tmp_path_factory.mktemp("storage"))


def test_reads_mlflow_and_table3_markdown_is_exact(tracked, last):
    exp, report = last
    assert exp.source.startswith(f"MLflow {tracked['uri']}")
    assert exp.spec_hash == tracked["digest"] and exp.parent_run_id == tracked["parent"]
    expected = (
        "| Condition | L_cre | L_ure | GCR | Precision | Recall | mIoU | n | ΔP | ΔR | ΔmIoU | Paper Precision | "
        "Paper Recall | Paper mIoU |\n"
        "|---|:-:|:-:|:-:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n"
        "| baseline |  |  |  | 76.33 ± 0.58 | 46.50 ± 0.50 | 43.00 ± 2.65 | 3 | -8.67 | -41.50 | -34.00 | 76.20 | "
        "46.50 | 41.60 |\n"
        "| wo_cre |  | ✓ | ✓ | 75.50 ± 0.71 | 80.50 ± 0.71 | 66.00 ± 1.41 | 2 | -9.50 | -7.50 | -11.00 | 75.30 | "
        "80.10 | 65.00 |\n"
        "| wo_ure | ✓ |  | ✓ | 84.30 | 85.70 | 74.40 | 1 | -0.70 | -2.30 | -2.60 | 84.30 | 85.70 | 74.40 |\n"
        "| wo_gcr | ✓ | ✓ |  | 81.60 | 85.50 | 72.10 | 1 | -3.40 | -2.50 | -4.90 | 81.60 | 85.50 | 72.10 |\n"
        "| more | ✓ | ✓ | ✓ | 85.00 ± 1.00 | 88.00 ± 1.00 | 77.00 ± 1.00 | 3 | ref | ref | ref | 84.50 | 88.00 | "
        "76.40 |\n"
    )
    assert markdown_table(report.tables["table3"]) == expected
    caption = report.tables["table3"].caption
    assert "numbers from the last evaluation at iteration 2000" in caption
    assert "Δ = row − more" in caption and "L_cre ✓ iff lir.cre_weight > 0" in caption


def test_paired_comparison_numbers(tracked, last):
    _, report = last
    rows = {(r["condition"], r["metric"]): r for r in report.tables["table3_paired"].rows}
    # baseline - more per seed: mIoU -35, -35, -32 -> mean -34, sample std sqrt(3), t = -34 / (sqrt(3)/sqrt(3)) = -34;
    # two-sided p with 2 df in closed form: 1 - |t| / sqrt(2 + t^2).
    base = rows[("baseline", "mIoU")]
    assert base["pairs"] == 3
    assert base["mean_diff"].value == pytest.approx(-34.0)
    assert base["std_diff"].value == pytest.approx(math.sqrt(3.0))
    assert base["t"].value == pytest.approx(-34.0)
    assert base["p"].value == pytest.approx(1 - 34 / math.sqrt(2 + 34**2), rel=1e-9)
    assert base["verdict"] == "significant (p < 0.05)"
    # precision: -8, -9, -9 -> mean -26/3, std sqrt(1/3), t = -26
    prec = rows[("baseline", "Precision")]
    assert prec["t"].value == pytest.approx(-26.0)
    assert prec["p"].value == pytest.approx(1 - 26 / math.sqrt(2 + 26**2), rel=1e-9)
    # wo_cre: 2 pairs (-11, -10): t = -10.5 / (sqrt(0.5)/sqrt(2)) = -21, 1 df: p = 1 - (2/pi) atan(21)
    cre = rows[("wo_cre", "mIoU")]
    assert (cre["pairs"], cre["t"].value) == (2, pytest.approx(-21.0))
    assert cre["p"].value == pytest.approx(1 - 2 / math.pi * math.atan(21.0), rel=1e-9)
    assert cre["verdict"] == "n too small to call a difference"
    # wo_ure: one pair (seed 0: 74.4 - 76), which differs from the difference of means (-2.60)
    ure = rows[("wo_ure", "mIoU")]
    assert (ure["pairs"], ure["std_diff"].value, ure["t"].value, ure["p"].value) == (1, None, None, None)
    assert ure["mean_diff"].value == pytest.approx(-1.6)
    assert ure["verdict"] == "n too small to call a difference"
    text = markdown_table(report.tables["table3_paired"])
    assert "| baseline | mIoU | 3 | -34.00 | 1.73 | -34.00 | <0.001 | significant (p < 0.05) |" in text
    assert "| wo_cre | mIoU | 2 | -10.50 | 0.71 | -21.00 | 0.030 | n too small to call a difference |" in text
    assert "| wo_ure | mIoU | 1 | -1.60 | n/a | n/a | n/a | n too small to call a difference |" in text


def test_missing_and_failed_trials_are_listed(tracked, last):
    _, report = last
    rows = [(r["trial"], r["status"], r["error"]) for r in report.tables["missing"].rows]
    expected_missing = "expected from the spec expansion, but no tracked run or result was found"
    assert rows == [
        ("wo_cre-s2", "MISSING", expected_missing),
        ("wo_ure-s1", "FAILED", OOM),
        ("wo_ure-s2", "MISSING", expected_missing),
        ("wo_gcr-s1", "FINISHED", "finished, but no val/seg/miou at the chosen checkpoint"),
        ("wo_gcr-s2", "MISSING", expected_missing),
    ]
    assert "## Missing / failed trials" in report.markdown.replace("### ", "## ")
    assert "wo_ure-s1 | wo_ure | 1 | - | FAILED | RuntimeError: CUDA out of memory" in report.markdown


def test_table4_per_class_iou_and_confusion(tracked, last):
    _, report = last
    t4 = report.tables["table4"]
    rows = {r["class"]: r for r in t4.rows}
    assert [r["class"] for r in t4.rows] == ["background", "boat", "mean"]
    boat = rows["boat"]
    assert (boat["more_iou"].mean, boat["more_iou"].std, boat["more_iou"].n) == (72.0, 2.0, 3)
    assert boat["more_cr"].mean == pytest.approx(0.30) and boat["more_cr"].n == 2  # only two runs logged the CSV
    assert boat["baseline_iou"].n == 0 and boat["baseline_cr"] == "n/a"
    assert rows["mean"]["more_cr"].mean == pytest.approx(0.30)  # val/seg/confusion 0.2, 0.3, 0.4
    assert (boat["paper_iou"].value, boat["paper_cr"].value) == (73.0, 0.23)  # the paper's Table 4 beside ours
    line = [ln for ln in markdown_table(t4).splitlines() if ln.startswith("| boat |")][0]
    assert line.startswith("| boat | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | 72.00 ± 2.00 | 0.30 ± 0.07 |")


def test_csv_contents(tracked, last):
    _, report = last
    rows = list(csv.DictReader(io.StringIO(csv_text(report.tables["table3"]))))
    assert [r["condition"] for r in rows] == ["baseline", "wo_cre", "wo_ure", "wo_gcr", "more"]
    base, ure, more = rows[0], rows[2], rows[4]
    assert (base["l_cre"], base["l_ure"], base["gcr"]) == ("0", "0", "0")
    assert (ure["l_cre"], ure["l_ure"], ure["gcr"]) == ("1", "0", "1")
    assert (base["miou_mean"], base["miou_n"], base["delta_miou"]) == ("43", "3", "-34")
    assert float(base["miou_std"]) == pytest.approx(math.sqrt(7.0))
    assert (ure["miou_mean"], ure["miou_std"], ure["miou_n"]) == ("74.4", "", "1")  # one seed: no std
    assert (more["delta_miou"], more["paper_miou"]) == ("ref", "76.4")
    assert report.files["table3.csv"] == csv_text(report.tables["table3"])


def _unescaped(tex: str, char: str) -> list[int]:
    text = re.sub(r"(?<!\\)\$.*?(?<!\\)\$", "", tex)  # inline math may hold _ (\mathcal{L}_{cre})
    return [m.start() for m in re.finditer(rf"(?<!\\){re.escape(char)}", text)]


def _balanced(tex: str) -> bool:
    depth = 0
    for m in re.finditer(r"(?<!\\)[{}]", tex):
        depth += 1 if m.group() == "{" else -1
        if depth < 0:
            return False
    return depth == 0


def test_latex_is_well_formed(tracked, last):
    _, report = last
    for name in ("table3", "table3_paired", "table4", "missing"):
        tex = latex_table(report.tables[name])
        lines = tex.splitlines()
        order = [lines.index(x) for x in (r"\toprule", r"\midrule", r"\bottomrule")]
        assert order == sorted(order) and tex.count(r"\toprule") == 1
        end = lines.index(r"\end{tabular}")
        assert lines[end - 1] == r"\bottomrule" and lines[-1] == r"\end{table}"
        # the notes, in small type between the tabular and the end of the float
        assert lines[end + 1:-1] == [r"\par\smallskip{\footnotesize " + tex_escape(n) + "}"
                                     for n in report.tables[name].notes]
        assert _balanced(tex), name
        code = "\n".join(ln for ln in lines if not ln.startswith("%"))  # the leading comment names the packages
        assert _unescaped(code, "_") == [] and _unescaped(code, "%") == [], name
        cols = len([c for c in report.tables[name].columns if not c.csv_only])
        body = lines[lines.index(r"\toprule") + 1:lines.index(r"\bottomrule")]
        assert all(len(re.split(r"(?<!\\)&", ln)) == cols for ln in body if ln != r"\midrule"), name
    t3 = latex_table(report.tables["table3"])
    assert r"wo\_cre &  & \checkmark & \checkmark & 75.50 $\pm$ 0.71" in t3
    assert r"wo\_ure & \checkmark &  & \checkmark & 84.30 & 85.70 & 74.40 & 1 &" in t3
    assert r"100\% used) in \{block\_3\}" in latex_table(report.tables["missing"])


def test_best_checkpoint_and_its_caption(tracked, tmp_path):
    _, report = _report(tracked, tmp_path, checkpoint=Checkpoint.parse("best:val"))
    more = [r for r in report.tables["table3"].rows if r["condition"] == "more"][0]
    assert (more["miou"].mean, more["miou"].std) == (pytest.approx(78.0), pytest.approx(1.0))  # 79 (iter 1000), 77, 78
    caption = report.tables["table3"].caption
    assert "best evaluation on val" in caption and "iterations 1000–2000 (differs across runs)" in caption


def test_cli_writes_files_logs_to_parent_and_prints_table3(tracked, tmp_path, capsys):
    from more.__main__ import main

    out = tmp_path / "report"
    rc = main(["report", str(tracked["spec"]), "--tracking-uri", tracked["uri"], "--out", str(out),
               "--format", "md,tex,csv", "--storage", str(tmp_path)])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert stdout.rstrip().endswith("| more | ✓ | ✓ | ✓ | 85.00 ± 1.00 | 88.00 ± 1.00 | 77.00 ± 1.00 | 3 | ref | ref | "
                                    "ref | 84.50 | 88.00 | 76.40 |")
    names = {p.name for p in out.iterdir()}
    assert {"report.md", "table3.md", "table3.tex", "table3.csv", "table4.csv", "missing.md", "trials.csv"} <= names
    assert not [n for n in names if n.startswith(".") and n != ".more-output.json"]  # no temporary files left
    assert (out / ".more-output.json").is_file()  # the folder is marked as more's: a later report may replace it
    logged = {a.path for a in tracked["tracking"].client.list_artifacts(tracked["parent"], "report")}
    assert "report/table3.md" in logged and "report/report.md" in logged
    assert Path(out / "table3.md").read_text().count("| more |") == 1


def test_bulk_reads_through_a_tracking_server_equal_the_database_reads(tracked, tmp_path):
    """A tracking server answers the same records as its database, through its get-history-bulk endpoint."""
    from more.report.mlflow_reader import make_client, metric_histories
    from more.tracking.store import start_server, stop_server

    server = start_server(tracked["uri"], artifacts_dir=tmp_path / "artifacts", host="127.0.0.1")
    try:
        for checkpoint in (LAST, Checkpoint.parse("best:val")):
            local = load_experiment(str(tracked["spec"]), tracking_uri=tracked["uri"], storage=tmp_path,
                                    checkpoint=checkpoint)
            remote = load_experiment(str(tracked["spec"]), tracking_uri=server.url, storage=tmp_path,
                                     checkpoint=checkpoint)
            assert [(r.trial, r.iteration, r.metrics, r.confusion) for r in remote.records] == [
                (r.trial, r.iteration, r.metrics, r.confusion) for r in local.records]
        best = {r.trial: r for r in remote.records}["more-s0"]
        assert (best.iteration, best.metrics["val/seg/miou"]) == (1000, 79.0)
        ids = [r.run_id for r in local.records if r.run_id]
        histories = metric_histories(make_client(server.url), ids, "val/seg/miou")
        assert sorted(m.step for m in histories[best.run_id]) == [1000, 2000]
    finally:
        stop_server(server)
