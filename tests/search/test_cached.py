"""The cached seed-threshold search: a real study on a tiny synthetic set, checked against a direct recomputation
through ``python -m more infer``; resume, refusals, outputs and the MLflow runs."""

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


def child_runs(uri: Path) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{uri / 'mlflow.db'}")
    exp = client.get_experiment_by_name("seeds_tiny")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("more.kind") == "launch"]
    assert len(parents) == 1
    return [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]


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
    assert main(["infer", str(checkpoint), "--task", "seeds", "--split", "train", "--out", str(tmp_path / "direct"),
                 f"eval.bkg_thre={thre!r}"]) == 0
    capsys.readouterr()
    direct = json.loads((tmp_path / "direct" / "metrics.json").read_text())["outputs"]["seeds"]["miou"]
    assert best["value"] == pytest.approx(direct, abs=1e-9)

    # the overlay rebuilds the checkpoint's config with the best threshold
    expected = to_flat(load_run(checkpoint, {"eval.bkg_thre": thre}).cfg)
    assert to_flat(load_config(out / "best.yaml")) == expected
    for name in ("trials.md", "importances.csv", "importances.md", "importances.png"):
        assert (out / name).is_file()
    assert "one parameter" in (out / "importances.md").read_text()
    runs = child_runs(uri)
    assert len(runs) == 50 and {r.info.status for r in runs} == {"FINISHED"}

    # a second launch without --resume is refused; --resume continues the numbering and reuses the cached maps
    code, _, stderr = search(capsys, str(spec), *common)
    assert code == 2 and "pass --resume" in stderr
    code, stdout, stderr = search(capsys, str(spec), *common, "--resume", "--trials", "7")
    assert code == 0, stderr
    assert "score maps from the cache" in stderr and "7 trials in" in stdout
    assert trial_numbers(out) == list(range(57))
    assert len(child_runs(uri)) == 57  # the parent is reused, only the new trials are logged


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
