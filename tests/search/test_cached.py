"""The cached seed-threshold search: a real study on a tiny synthetic set, checked against a direct recomputation
through ``python -m more infer`` on the tuning and the report split; resume, refusals, outputs and the MLflow runs."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import yaml

from more.__main__ import main
from more.config import load_config, to_flat
from more.eval.infer import load_run


def write_spec(path: Path, *, trials: int = 50, report_split: str | None = "val", tuning_split: str = "train") -> Path:
    body = {"name": "seeds_tiny", "kind": "cached", "tuning_split": tuning_split, "source": "cam",
            "space": {"eval.bkg_thre": {"type": "float", "low": 0.05, "high": 0.95}}, "trials": trials, "seed": 0}
    if report_split:
        body["report_split"] = report_split
    path.write_text(yaml.safe_dump({"search": body}))
    return path


def search(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["search", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def trial_numbers(out: Path) -> list[int]:
    with (out / "trials.csv").open() as fh:
        return [int(row["trial"]) for row in csv.DictReader(fh)]


def tracked_runs(uri: Path) -> tuple:
    """(the study's parent run, its child runs)."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{uri / 'mlflow.db'}")
    exp = client.get_experiment_by_name("seeds_tiny")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("more.kind") == "launch"]
    assert len(parents) == 1
    return parents[0], [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]


def child_runs(uri: Path) -> list:
    return tracked_runs(uri)[1]


def direct_seeds_miou(checkpoint: Path, split: str, out: Path, *overrides: str) -> float:
    """The seeds mIoU through the inference command (no cache, per-image seeds, its own confusion matrix)."""
    assert main(["infer", str(checkpoint), "--task", "seeds", "--split", split, "--out", str(out), *overrides]) == 0
    return json.loads((out / "metrics.json").read_text())["outputs"]["seeds"]["miou"]


def test_cached_search_best_equals_direct_recomputation_and_resume_continues(checkpoint, tmp_path, capsys):
    spec, out, uri = write_spec(tmp_path / "spec.yaml"), tmp_path / "out", tmp_path / "mlflow"
    common = ["--checkpoint", str(checkpoint), "--out", str(out), "--tracking-uri", str(uri)]
    code, stdout, stderr = search(capsys, str(spec), *common)
    assert code == 0, stderr
    rate = float(re.search(r"50 trials in [0-9.]+ s: (\d+) trials/minute", stdout).group(1))
    assert rate >= 300  # hundreds of trials a minute on the CPU
    assert trial_numbers(out) == list(range(50))
    assert len(list((out / "cache").glob("train-cam-*.npz"))) == 1
    best = json.loads((out / "best.json").read_text())
    thre = best["params"]["eval.bkg_thre"]

    # the same threshold through the inference command (no cache, per-image seeds, its own confusion matrix)
    direct = direct_seeds_miou(checkpoint, "train", tmp_path / "direct", f"eval.bkg_thre={thre!r}")
    assert best["value"] == pytest.approx(direct, abs=1e-9)

    # the best and the config's threshold scored on the report split (every pixel), as the inference command does
    report, default = best["report"], load_run(checkpoint, {}).cfg.eval.bkg_thre
    assert (report["split"], report["source"], report["best"]["eval.bkg_thre"]) == ("val", "cam", thre)
    assert report["default"]["eval.bkg_thre"] == default
    assert report["best"]["miou"] == pytest.approx(direct_seeds_miou(
        checkpoint, "val", tmp_path / "direct_val", f"eval.bkg_thre={thre!r}"), abs=1e-9)
    assert report["default"]["miou"] == pytest.approx(direct_seeds_miou(checkpoint, "val", tmp_path / "default_val"),
                                                      abs=1e-9)
    assert report["best"]["tuning_miou"] == best["value"]
    assert report["default"]["tuning_miou"] == pytest.approx(
        direct_seeds_miou(checkpoint, "train", tmp_path / "default_train"), abs=1e-9)
    capsys.readouterr()
    assert f"seeds mIoU on the report split val ({report['images']} images" in stdout
    assert f"best threshold    eval.bkg_thre={thre:.6g}: {report['best']['miou']:.3f} on val" in stdout
    assert f"config threshold  eval.bkg_thre={default:.6g}: {report['default']['miou']:.3f} on val" in stdout
    assert len(list((out / "cache").glob("val-cam-*.npz"))) == 1
    assert "on the report split val" in (out / "best.yaml").read_text().splitlines()[1]

    # the overlay rebuilds the checkpoint's config with the best threshold
    expected = to_flat(load_run(checkpoint, {"eval.bkg_thre": thre}).cfg)
    assert to_flat(load_config(out / "best.yaml")) == expected
    for name in ("trials.md", "importances.csv", "importances.md", "importances.png"):
        assert (out / name).is_file()
    assert "one parameter" in (out / "importances.md").read_text()
    parent, runs = tracked_runs(uri)
    assert len(runs) == 50 and {r.info.status for r in runs} == {"FINISHED"}
    assert parent.data.metrics["search/val/cam/seeds_miou_best"] == pytest.approx(report["best"]["miou"])
    assert parent.data.metrics["search/val/cam/seeds_miou_default"] == pytest.approx(report["default"]["miou"])
    assert parent.data.metrics["search/train/cam/seeds_miou_default"] == pytest.approx(report["default"]["tuning_miou"])
    assert parent.data.metrics["search/best/eval.bkg_thre"] == pytest.approx(thre)

    # a second launch without --resume is refused; --resume continues the numbering and reuses the cached maps
    code, _, stderr = search(capsys, str(spec), *common)
    assert code == 2 and "pass --resume" in stderr
    code, stdout, stderr = search(capsys, str(spec), *common, "--resume", "--trials", "7")
    assert code == 0, stderr
    assert stderr.count("score maps from the cache") == 2 and "7 trials in" in stdout  # tuning and report split
    assert trial_numbers(out) == list(range(57))
    parent, runs = tracked_runs(uri)
    assert len(runs) == 57  # the parent is reused, only the new trials are logged
    from mlflow import MlflowClient

    history = MlflowClient(f"sqlite:///{uri / 'mlflow.db'}").get_metric_history(parent.info.run_id,
                                                                               "search/val/cam/seeds_miou_best")
    assert [m.step for m in history] == [50, 57]  # one point per launch, at the study's trial count
    assert json.loads((out / "best.json").read_text())["report"]["best"]["miou"] == pytest.approx(history[-1].value)


def test_resume_without_a_study_is_refused(checkpoint, tmp_path, capsys):
    spec = write_spec(tmp_path / "spec.yaml", trials=3)
    code, _, stderr = search(capsys, str(spec), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"),
                             "--resume", "--no-tracking")
    assert code == 2 and "nothing to resume" in stderr


@pytest.mark.parametrize("report_split", ["train", None])  # the spec's report_split, or the checkpoint's eval.split
def test_tuning_on_the_reported_split_is_refused(checkpoint, tmp_path, capsys, report_split):
    tuning = "train" if report_split else "val"
    spec = write_spec(tmp_path / "spec.yaml", trials=3, report_split=report_split, tuning_split=tuning)
    argv = [str(spec), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"), "--no-tracking"]
    code, _, stderr = search(capsys, *argv)
    assert code == 2 and f"refusing: the tuning split '{tuning}'" in stderr and "--allow-same-split" in stderr
    assert not (tmp_path / "o" / "trials.csv").exists()
    code, stdout, stderr = search(capsys, *argv, "--allow-same-split")
    assert code == 0, stderr
    assert trial_numbers(tmp_path / "o") == [0, 1, 2]


def test_confusion_is_the_seed_rule_counted_by_hand():
    import numpy as np

    from more.search.cached import SeedCache

    cache = SeedCache(best_class=np.array([1, 2, 2, 1, 2], np.uint8), best_score=np.array([0.9, 0.5, 0.3, 0.4, 0.8],
                      np.float32), gt=np.array([1, 2, 0, 0, 1], np.uint8), num_classes=3, num_images=1)
    # threshold 0.4: scores <= 0.4 become background (the reference's "<="): preds 1, 2, 0, 0, 2
    hist = cache.confusion(0.4)
    expected = np.zeros((3, 3), np.int64)
    for g, p in ((1, 1), (2, 2), (0, 0), (0, 0), (1, 2)):
        expected[g, p] += 1
    np.testing.assert_array_equal(hist, expected)
    # IoU: bg 2/2, class 1: 1/(1+1) , class 2: 1/(1+1) -> mIoU 66.67
    assert cache.miou(0.4) == pytest.approx(100 * (1 + 0.5 + 0.5) / 3)


def test_a_missing_report_split_fails_before_the_study(checkpoint, tmp_path, capsys):
    spec = write_spec(tmp_path / "spec.yaml", trials=3, report_split="nosuch")
    code, stdout, stderr = search(capsys, str(spec), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"),
                                  "--no-tracking")
    assert code == 2 and stderr.startswith("error: ") and "nosuch" in stderr
    assert "trials in" not in stdout and not (tmp_path / "o" / "trials.csv").exists()
    assert not list((tmp_path / "o").glob("cache/*.npz"))  # nothing computed
