"""check_dataset: a clean tree passes, and every kind of data error is reported with the file it is about."""

from __future__ import annotations

import shutil

import numpy as np

from more.data import check_dataset, inspect_dataset


def test_clean_trees_pass(voc_root, coco_root):
    report = inspect_dataset(voc_root)
    assert report.problems == [] and report.num_classes == 20
    assert report.counts == {"train_aug": 3, "train": 2, "val": 2, "test": 1}
    assert check_dataset(coco_root, "coco") == []
    assert inspect_dataset(coco_root, "coco").counts == {"train": 2, "val": 2, "val_part": 1}


def test_missing_root(tmp_path):
    assert check_dataset(tmp_path / "nope") == [f"{tmp_path / 'nope'}: dataset folder missing"]


def test_missing_folder(voc_root):
    shutil.rmtree(voc_root / "SegmentationClassAug")  # and no SegmentationClass to fall back on
    problems = check_dataset(voc_root)
    assert problems == [f"{voc_root / 'SegmentationClass'}: folder missing"]


def test_missing_list_file(voc_root):
    (voc_root / "ImageSets" / "Segmentation" / "val.txt").unlink()
    assert check_dataset(voc_root) == [f"{voc_root / 'ImageSets' / 'Segmentation' / 'val.txt'}: list file missing"]
    problems = check_dataset(voc_root, splits=["train", "trainval"])
    assert problems == [f"{voc_root / 'ImageSets' / 'Segmentation' / 'trainval.txt'}: list file missing"]


def test_missing_image_and_mask(voc_root):
    (voc_root / "JPEGImages" / "2007_000039.jpg").unlink()
    (voc_root / "SegmentationClassAug" / "2007_000063.png").unlink()
    problems = check_dataset(voc_root)
    assert len(problems) == 2
    assert any(p.startswith(f"{voc_root / 'JPEGImages' / '2007_000039.jpg'}: image missing") for p in problems)
    assert any(p.startswith(f"{voc_root / 'SegmentationClassAug' / '2007_000063.png'}: mask missing")
               for p in problems)


def test_truncated_jpeg(voc_root):
    path = voc_root / "JPEGImages" / "2007_000129.jpg"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    problems = check_dataset(voc_root)
    assert len(problems) == 1 and problems[0].startswith(f"{path}: unreadable image")


def test_size_mismatch(voc_root, trees):
    mask_path = voc_root / "SegmentationClassAug" / "2007_000032.png"
    trees.save_palette_png(mask_path, trees.draw_mask(30, 41, {1: (2, 14, 3, 20)}))
    problems = check_dataset(voc_root)
    image_path = voc_root / "JPEGImages" / "2007_000032.jpg"
    assert problems == [f"{mask_path}: mask size 41x30 differs from image {image_path} 40x30"]


def test_bad_mask_value(voc_root, coco_root, trees):
    mask_path = voc_root / "SegmentationClassAug" / "2007_000129.png"
    trees.save_palette_png(mask_path, trees.draw_mask(40, 30, {21: (10, 30, 5, 25)}))
    assert check_dataset(voc_root) == [f"{mask_path}: mask values [21] outside 0..20 and 255"]
    assert check_dataset(voc_root, num_classes=21) == []
    coco_mask = coco_root / "SegmentationClass" / "val2014" / "COCO_val2014_000000000042.png"
    trees.save_palette_png(coco_mask, trees.draw_mask(30, 26, {81: (5, 25, 4, 20), 90: (0, 3, 0, 3)}))
    assert check_dataset(coco_root, "coco") == [f"{coco_mask}: mask values [81, 90] outside 0..80 and 255"]


def test_training_image_without_foreground(voc_root, trees):
    train_mask = voc_root / "SegmentationClassAug" / "2007_000039.png"
    trees.save_palette_png(train_mask, np.zeros((36, 28), np.uint8))
    val_mask = voc_root / "SegmentationClassAug" / "2007_000063.png"
    trees.save_palette_png(val_mask, np.full((26, 34), 255, np.uint8))  # fine outside training splits
    problems = check_dataset(voc_root)
    assert problems == [f"{train_mask}: training image 2007_000039 (split train_aug) has no foreground class"]


def test_rgb_mask_is_reported(voc_root):
    from PIL import Image

    mask_path = voc_root / "SegmentationClassAug" / "2007_000063.png"
    Image.new("RGB", (34, 26)).save(mask_path)
    problems = check_dataset(voc_root)
    assert len(problems) == 1 and problems[0].startswith(f"{mask_path}: unreadable mask")
