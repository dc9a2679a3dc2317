"""A dataset with its own three classes, end to end: a folder of images, masks and a labels CSV -> ``data prepare
folder`` -> ``data check`` -> a tracked 6-iteration training (class tokens, metrics and per-class tables follow its
classes) -> ``eval`` -> ``report``; its class names are what MLflow shows."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from tiny_config import TINY

from more.__main__ import main

CLASSES = ["red boat", "jet-plane", "coin_3"]  # mask values 1, 2, 3; a space, a dash and a digit on purpose
SPEC, DIGEST = "custom_e2e", "00c0ffee00c0"


@pytest.fixture(scope="module")
def own_dataset(tmp_path_factory) -> dict:
    """Images and masks drawn by the synthetic generator (3 designs), laid out as a user's folder would be: flat
    images, flat masks, a labels CSV with class names and a split column."""
    from more.data.synth import SynthOptions, generate_dataset

    base = tmp_path_factory.mktemp("own")
    drawn = generate_dataset(base / "drawn", SynthOptions(classes=3, train=16, val=6, size=64, seed=3),
                             progress=lambda _: None).root
    images, masks = base / "photos", base / "annotations"
    images.mkdir()
    masks.mkdir()
    rows = []
    for split in ("train", "val"):
        for name in (drawn / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split():
            shutil.copyfile(drawn / "JPEGImages" / f"{name}.jpg", images / f"img_{name}.jpg")
            shutil.copyfile(drawn / "SegmentationClassAug" / f"{name}.png", masks / f"img_{name}.png")
            from more.data.voc import read_mask

            present = sorted(set(read_mask(masks / f"img_{name}.png").ravel().tolist()) - {0, 255})
            rows.append([f"img_{name}.jpg", ";".join(CLASSES[c - 1] for c in present), split])
    with open(base / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["image", "labels", "split"], *rows])
    return {"images": images, "masks": masks, "labels": base / "labels.csv", "base": base}


def test_own_classes_train_evaluate_report_and_show_in_mlflow(own_dataset, template_db, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from more.config import load_config, num_classes
    from more.data.classes import class_names, dataset_name
    from more.tracking import LaunchTracker, TrialTracker, trial_key, trial_tags
    from more.train import train

    root = tmp_path / "birds"
    assert main(["data", "prepare", "folder", "--images", str(own_dataset["images"]), "--masks",
                 str(own_dataset["masks"]), "--labels", str(own_dataset["labels"]), "--classes", ",".join(CLASSES),
                 "--name", "toys", "--out", str(root)]) == 0
    printed = capsys.readouterr().out
    assert "custom dataset 'toys' (3 classes: red boat, jet-plane, coin_3) (train 16, val 6)" in printed
    assert main(["data", "check", str(root)]) == 0
    check = capsys.readouterr().out
    assert check.splitlines()[0] == f"{root} (custom, 3 classes)" and "ok: " in check

    cfg = load_config("synthetic", [*TINY, "data.dataset=custom", f"data.root={root}", "eval.num_vis=2",
                                    f"runtime.out_dir={tmp_path / 'runs'}"])
    assert num_classes(cfg) == 3 and class_names(cfg) == ["background", *CLASSES] and dataset_name(cfg) == "toys"
    shutil.copyfile(template_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    launch = LaunchTracker.start(uri, SPEC, DIGEST, f"name: {SPEC}\n", "abc123", strict=True)
    tags = trial_tags(spec_name=SPEC, spec_hash=DIGEST, trial_name="more-s0", condition="more", seed=0, sweep={},
                      overrides={}, git_commit="abc123", fidelity=cfg.fidelity, device="cpu", ray_trial_id="t_1")
    run_dir = tmp_path / "runs" / "more-s0"
    trial = TrialTracker.open(uri, launch.run_id, trial_key(DIGEST, "more-s0"), tags, cfg, run_dir=run_dir,
                              strict=True, log_checkpoint=False)
    with trial:
        result = train(cfg, report=trial.report_callback(lambda m, d: None), log=trial.log_callback(),
                       run_dir=run_dir)
    assert result["iter"] == 6

    client = MlflowClient(uri)
    metrics = client.get_run(trial.run_id).data.metrics
    for output in ("cam", "lam", "seg"):  # per-class metric names are the dataset's class names
        assert {k for k in metrics if k.startswith(f"val/{output}/iou/")} == {
            f"val/{output}/iou/{n}" for n in ["background", *CLASSES]}
    local = Path(client.download_artifacts(trial.run_id, "per_class", str(tmp_path / "dl")))
    rows = (local / "iter_000006.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["background", *CLASSES, "mean"]
    picture = Path(client.download_artifacts(trial.run_id, "pictures/iter_000006.png", str(tmp_path / "dl")))
    with Image.open(picture) as png:  # two rows of tiles and one legend line naming the classes shown
        assert png.size == (5 * 128 + 4 * 2, 14 + 2 * 128 + 2 + 2 + 14)

    assert main(["eval", str(run_dir), "--out", str(tmp_path / "eval")]) == 0
    evaluated = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert "red boat" in json.dumps(evaluated) and "coin_3" in (tmp_path / "eval" / "eval.md").read_text()

    capsys.readouterr()
    assert main(["report", SPEC, "--tracking-uri", uri, "--out", str(tmp_path / "report"), "--no-log",
                 "--classes", "jet-plane,red boat"]) == 0
    tables = "\n".join(p.read_text() for p in (tmp_path / "report").rglob("*.md"))
    assert "jet-plane" in tables and "red boat" in tables
