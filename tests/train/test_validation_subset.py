"""Training-time validation on a subset (the authors' COCO ``val_part``) and the final full validation, on a copy of
the tiny synthetic set (VOC layout: ``ImageSets/Segmentation/val_part.txt``)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from more.config import load_config
from more.data import build_eval_dataset, class_names, collate_eval
from more.eval.evaluate import evaluate
from more.eval.infer import load_run
from more.train.trainer import train
from more.train.validation import eval_metrics


@pytest.fixture
def data_copy(tiny_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    return root


def scores_on(run, split: str) -> dict[str, float]:
    loaded = load_run(run)
    loader = torch.utils.data.DataLoader(build_eval_dataset(loaded.cfg, split), batch_size=6,
                                         collate_fn=collate_eval)
    result = evaluate(loaded.model, loader, cfg=loaded.cfg, device=torch.device("cpu"))
    return eval_metrics(result, class_names(loaded.cfg))


def test_coco_preset_validates_on_val_part():
    cfg = load_config("coco")
    assert cfg.train.val_subset == "val_part" and cfg.data.val_split == "val" and not cfg.train.final_full_val


def test_training_validates_the_subset_and_ends_with_the_whole_split(tiny_cfg, data_copy, tmp_path):
    lists = data_copy / "ImageSets" / "Segmentation"
    val = lists.joinpath("val.txt").read_text().split()
    lists.joinpath("val_part.txt").write_text("".join(f"{n}\n" for n in val[:3]))  # the first names, as the authors'
    described = data_copy / "dataset.yaml"  # the synthetic set is read through its description: list the subset there
    desc = yaml.safe_load(described.read_text())
    desc["splits"]["val_part"] = "ImageSets/Segmentation/val_part.txt"
    described.write_text(yaml.safe_dump(desc, sort_keys=False))
    cfg = tiny_cfg(f"data.root={data_copy}", "train.max_iters=3", "train.val_subset=val_part",
                   "train.final_full_val=true")
    lines, reports = [], []
    result = train(cfg, run_dir=tmp_path / "run", log=lines.append, report=lambda m, c: reports.append(m))

    assert "6 val images" not in lines[0] and "3 val images, validating on val_part (train.val_subset, part of val)" \
        in lines[0]
    assert [m["iter"] for m in reports] == [3.0]  # eval_every=3: the last evaluation carries both
    final = reports[-1]
    subset, full = scores_on(tmp_path / "run", "val_part"), scores_on(tmp_path / "run", "val")
    for key in ("seg/miou", "cam/miou", "lam/miou", "fused/miou", "cls_f1", "seg/iou/background"):
        assert final[f"val/{key}"] == pytest.approx(subset[f"val/{key}"], abs=1e-4), key
        assert final[f"val_full/{key}"] == pytest.approx(full[f"val/{key}"], abs=1e-4), key
        assert result[f"val_full/{key}"] == final[f"val_full/{key}"]
    assert any(final[f"val/{k}/miou"] != final[f"val_full/{k}/miou"] for k in ("seg", "cam", "lam", "fused"))
    assert any(ln.startswith("full validation @ 3 on val: ") for ln in lines)
    last_record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last_record["val_full/seg/miou"] == final["val_full/seg/miou"]
    assert (tmp_path / "run" / "eval" / "full_iter_000003.md").is_file()


def test_without_the_subset_list_training_validates_the_whole_split(tiny_cfg, data_copy, tmp_path):
    cfg = tiny_cfg(f"data.root={data_copy}", "train.max_iters=3", "train.val_subset=val_part",
                   "train.final_full_val=true")
    lines, reports = [], []
    train(cfg, run_dir=tmp_path / "run", log=lines.append, report=lambda m, c: reports.append(m))
    missing = f"split 'val_part' in {data_copy}/dataset.yaml"
    assert f"6 val images, validating on val (train.val_subset=val_part: no {missing})" in lines[0]
    final = reports[-1]
    full_keys = [k for k in final if k.startswith("val_full/")]
    assert full_keys  # copied from the last evaluation (NaN where a class is never predicted), not computed again
    assert all(final[k] == pytest.approx(final["val/" + k[len("val_full/"):]], nan_ok=True) for k in full_keys)
    assert not (tmp_path / "run" / "eval" / "full_iter_000003.md").exists()
