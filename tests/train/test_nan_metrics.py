"""A validation subset too small to hold every class: the trainer says which classes made m-IoU NaN and on which
split (log line and eval table), logs ``val/<output>/miou_present`` beside it, and a spec may rank on that."""

from __future__ import annotations

import json
import math

import yaml
from tiny_config import TINY

from more.__main__ import main


def test_a_one_image_validation_split_names_the_absent_classes(tiny_root, tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"preset": "synthetic", "overrides": [
        *TINY, f"data.root={tiny_root}", "eval.max_images=1", "train.max_iters=3", "model.decoder_channels=32"]}))
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--run-dir", str(run)]) == 0
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("eval @ 3 on val: "))
    # CAM, LAM and Fused score only the image's own classes: a class the image lacks is in neither GT nor prediction
    assert "mIoU is nan for cam, aux_cam, lam, fused" in line and "on split 'val'" in line, line
    record = json.loads((run / "metrics.json").read_text())
    assert math.isnan(record["val/cam/miou"])
    present = record["val/cam/miou_present"]
    assert math.isfinite(present) and 0.0 <= present <= 100.0
    ious = [v for k, v in record.items() if k.startswith("val/cam/iou/")]
    assert present == sum(v for v in ious if not math.isnan(v)) / sum(not math.isnan(v) for v in ious)
    table = (run / "eval" / "iter_000003.md").read_text()
    assert "occur in neither the ground truth nor the prediction on split 'val'" in table.splitlines()[-1]
    logged = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert "val/seg/miou_present" in logged[-1]


def test_a_spec_may_rank_trials_on_miou_present(tmp_path):
    from more.harness.spec import HIGHER_IS_BETTER, load_spec

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "small_val", "experiment": {"config": "synthetic"},
                                    "conditions": {"more": {}}, "metric": "val/seg/miou_present"}))
    assert load_spec(spec).metric == "val/seg/miou_present"
    assert "val/cam/miou_present" in HIGHER_IS_BETTER
