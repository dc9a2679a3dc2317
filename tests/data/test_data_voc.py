"""VOC / COCO loaders: split lists, masks, image-level labels (derived, cached, from a file), datasets."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from more.config import ConfigError
from more.data import (
    VOC_PALETTE,
    build_eval_dataset,
    build_train_dataset,
    class_names,
    collate_eval,
    ensure_dataset,
    image_labels,
    read_labels_file,
    read_mask,
    read_split,
    split_files,
    write_mask,
)


def onehot(classes: list[int], C: int) -> list[float]:
    out = [0.0] * C
    for c in classes:
        out[c - 1] = 1.0
    return out


def test_class_names_and_palette(trees, tmp_path):
    voc = class_names(trees.small_cfg(tmp_path))
    assert len(voc) == 21 and voc[0] == "background" and voc[1] == "aeroplane" and voc[20] == "tvmonitor"
    coco = class_names(trees.small_cfg(tmp_path, "coco"))
    assert len(coco) == 81 and coco[1] == "person" and coco[80] == "toothbrush"
    synth = class_names(trees.small_cfg(tmp_path, "synthetic", **{"data.synth_classes": 3}))
    assert synth == ["background", "boat", "plane", "disc"]
    # The standard VOC colormap entries.
    assert VOC_PALETTE[1].tolist() == [128, 0, 0] and VOC_PALETTE[15].tolist() == [192, 128, 128]
    assert VOC_PALETTE[255].tolist() == [224, 224, 192]


def test_read_split_plain_and_deeplab_lines(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text("2007_000032\n\n/JPEGImages/2007_000039.jpg /SegmentationClassAug/2007_000039.png\n 2008_000002 \n")
    assert read_split(path) == ["2007_000032", "2007_000039", "2008_000002"]
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_split(tmp_path / "missing.txt")


def test_split_files_aug_fallback_and_coco_subsets(trees, tmp_path):
    aug = trees.build_voc_tree(tmp_path / "a")
    assert split_files(aug, "voc", "train").mask_dir == aug / "SegmentationClassAug"
    plain = trees.build_voc_tree(tmp_path / "b", aug=False)
    assert split_files(plain, "voc", "val").mask_dir == plain / "SegmentationClass"
    assert split_files(plain, "voc", "test").mask_dir is None
    coco = split_files(tmp_path, "coco", "val_part")
    assert coco.list_file == tmp_path / "ImageSets" / "val_part.txt"
    assert coco.image_path("X") == tmp_path / "JPEGImages" / "val2014" / "X.jpg"
    assert coco.mask_path("X") == tmp_path / "SegmentationClass" / "val2014" / "X.png"


def test_write_mask_is_a_palette_png_that_reads_back(tmp_path):
    mask = np.array([[0, 1, 2], [20, 255, 7]], dtype=np.uint8)
    path = tmp_path / "sub" / "m.png"
    write_mask(path, mask)
    with Image.open(path) as im:
        assert im.mode == "P"
        assert im.getpalette()[3:6] == [128, 0, 0]
    np.testing.assert_array_equal(read_mask(path), mask)
    assert os.listdir(path.parent) == ["m.png"]  # no temporary file left behind
    Image.new("RGB", (3, 2)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="rgb.png"):
        read_mask(tmp_path / "rgb.png")


def test_labels_derived_from_masks(voc_root, trees):
    files = split_files(voc_root, "voc", "train_aug")
    labels = image_labels(files, trees.VOC_SPLITS["train_aug"], 20)
    assert labels.dtype == np.float32
    assert labels.tolist() == [onehot([1, 15], 20), onehot([20], 20), onehot([3, 7], 20)]


def test_labels_cache_is_used_and_invalidated_by_the_list_file(voc_root, trees, tmp_path, monkeypatch):
    from more.data.labels import labels_cache_path

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    before = sorted(p.relative_to(voc_root) for p in voc_root.rglob("*"))
    files = split_files(voc_root, "voc", "train")
    names = trees.VOC_SPLITS["train"]
    image_labels(files, names, 20)
    cache = labels_cache_path(files)
    assert cache.parent == tmp_path / "xdg" / "more" / "labels"  # the user's cache, never inside the dataset
    assert sorted(p.relative_to(voc_root) for p in voc_root.rglob("*")) == before
    stored = json.loads(cache.read_text())
    assert stored["labels"] == {"2007_000032": [1, 15], "2007_000039": [20]}
    stored["labels"]["2007_000039"] = [5]  # a cache hit must return this, not the mask's class 20
    cache.write_text(json.dumps(stored))
    assert image_labels(files, names, 20)[1].tolist() == onehot([5], 20)
    files.list_file.write_text("2007_000039\n2007_000032\n")  # the list changed (size/mtime): recompute
    assert image_labels(files, ["2007_000039"], 20)[0].tolist() == onehot([20], 20)
    assert json.loads(cache.read_text())["labels"]["2007_000039"] == [20]
    assert labels_cache_path(split_files(voc_root, "voc", "val")) != cache  # one file per split


def test_labels_file_json_and_text(voc_root, tmp_path, monkeypatch):
    from more.data.labels import labels_cache_path

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    files = split_files(voc_root, "voc", "val")
    names = ["2007_000063", "2007_000129"]
    js = tmp_path / "labels.json"
    js.write_text(json.dumps({"2007_000063": [4], "2007_000129": [2, 9]}))
    assert image_labels(files, names, 20, str(js)).tolist() == [onehot([4], 20), onehot([2, 9], 20)]
    txt = tmp_path / "labels.txt"
    txt.write_text("2007_000063 4 6\n2007_000129\n")
    assert image_labels(files, names, 20, str(txt)).tolist() == [onehot([4, 6], 20), onehot([], 20)]
    assert not labels_cache_path(files).exists()  # masks were not read
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"2007_000063": [21]}))
    with pytest.raises(ValueError, match=r"bad.json.*2007_000063.*1\.\.20"):
        read_labels_file(bad, 20)
    with pytest.raises(ValueError, match=r"labels.json.*2007_000777"):
        image_labels(files, ["2007_000777"], 20, str(js))


def test_train_dataset_items(voc_root, trees):
    cfg = trees.small_cfg(voc_root)
    ds = build_train_dataset(cfg)
    assert ds.names == trees.VOC_SPLITS["train_aug"] and len(ds) == 3
    item = ds[2]
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
    assert item["labels"].tolist() == onehot([3, 7], 20) and item["name"] == "2008_000002"


def test_train_normalisation_on_a_constant_image(tmp_path, trees):
    root = trees.build_voc_tree(tmp_path / "voc")
    Image.new("RGB", (40, 30), (200, 100, 50)).save(root / "JPEGImages" / "2007_000032.jpg", quality=100)
    cfg = trees.small_cfg(root, **{"data.train_split": "train", "data.jitter_prob": 0.0})
    image = build_train_dataset(cfg)[0]["image"]  # (3, 64, 64)
    rgb = np.asarray(Image.open(root / "JPEGImages" / "2007_000032.jpg"), dtype=np.float64)[15, 20] / 255
    expected = (rgb - np.array(cfg.data.mean)) / np.array(cfg.data.std)
    np.testing.assert_allclose(image.mean(dim=(1, 2)).numpy(), expected, atol=0.02)


def test_training_images_without_foreground_are_skipped(voc_root, trees):
    h, w, _ = trees.VOC_ITEMS["2007_000039"]
    trees.save_palette_png(voc_root / "SegmentationClassAug" / "2007_000039.png", np.zeros((h, w), np.uint8))
    with pytest.warns(UserWarning, match=r"skipping 1 training image.*2007_000039"):
        ds = build_train_dataset(trees.small_cfg(voc_root))
    assert ds.names == ["2007_000032", "2008_000002"] and ds.labels.shape == (2, 20)


def test_eval_dataset_and_collate(voc_root, trees):
    cfg = trees.small_cfg(voc_root)
    ds = build_eval_dataset(cfg)
    assert ds.names == trees.VOC_SPLITS["val"]
    item = ds[0]
    h, w, boxes = trees.VOC_ITEMS["2007_000063"]
    np.testing.assert_array_equal(item["mask"].numpy(), trees.draw_mask(h, w, boxes))
    assert item["mask"].dtype == torch.long and item["orig"].shape == (h, w, 3) and item["orig"].dtype == torch.uint8
    orig = np.array(Image.open(voc_root / "JPEGImages" / "2007_000063.jpg").convert("RGB"))
    np.testing.assert_array_equal(item["orig"].numpy(), orig)
    x = (torch.from_numpy(orig).permute(2, 0, 1).float() / 255 - torch.tensor(cfg.data.mean).view(3, 1, 1)) \
        / torch.tensor(cfg.data.std).view(3, 1, 1)
    expected = F.interpolate(x[None], size=(32, 32), mode="bilinear", align_corners=False)[0]  # aspect not kept
    torch.testing.assert_close(item["image"], expected)
    assert item["labels"].tolist() == onehot([8, 12], 20)
    batch = collate_eval([ds[0], ds[1]])
    assert batch["image"].shape == (2, 3, 32, 32) and batch["labels"].shape == (2, 20)
    assert [tuple(m.shape) for m in batch["mask"]] == [(26, 34), (40, 30)]
    assert [tuple(o.shape) for o in batch["orig"]] == [(26, 34, 3), (40, 30, 3)]
    assert batch["name"] == ["2007_000063", "2007_000129"]


def test_eval_split_without_masks_and_max_images(voc_root, trees):
    test = build_eval_dataset(trees.small_cfg(voc_root), split="test")
    item = test[0]
    assert item["mask"].shape == (22, 30) and bool((item["mask"] == 255).all())
    assert item["labels"].sum() == 0
    val = build_eval_dataset(trees.small_cfg(voc_root, **{"eval.max_images": 1}))
    assert val.names == ["2007_000063"]


def test_eval_rejects_a_mask_of_another_size(voc_root, trees):
    trees.save_palette_png(voc_root / "SegmentationClassAug" / "2007_000129.png", np.full((10, 10), 2, np.uint8))
    ds = build_eval_dataset(trees.small_cfg(voc_root))
    with pytest.raises(ValueError, match="2007_000129.png"):
        ds[1]


def test_coco_layout(coco_root, trees, tmp_path, monkeypatch):
    from more.data.labels import labels_cache_path

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    before = sorted(p.relative_to(coco_root) for p in coco_root.rglob("*"))
    cfg = trees.small_cfg(coco_root, "coco", **{"eval.split": "val_part"})
    train = build_train_dataset(cfg)
    assert train.names == trees.COCO_SPLITS["train"]
    assert train[0]["image"].shape == (3, 64, 64)
    assert train.labels.tolist() == [onehot([1, 80], 80), onehot([23], 80)]
    val = build_eval_dataset(cfg)
    item = val[0]
    assert item["name"] == "COCO_val2014_000000000073" and item["mask"].shape == (20, 30)
    assert item["labels"].tolist() == onehot([3, 62], 80)
    assert labels_cache_path(split_files(coco_root, "coco", "val_part")).is_file()
    assert sorted(p.relative_to(coco_root) for p in coco_root.rglob("*")) == before  # nothing written in the dataset


def test_ensure_dataset(tmp_path, voc_root, trees):
    assert ensure_dataset(trees.small_cfg(voc_root)) == voc_root
    with pytest.raises(ConfigError, match="data.root"):
        ensure_dataset(trees.small_cfg(tmp_path / "nowhere"))
    messages: list[str] = []
    synth = tmp_path / "synth"
    overrides = {"data.synth_classes": 2, "data.synth_train": 3, "data.synth_val": 2, "data.synth_image_size": 32}
    cfg = trees.small_cfg(synth, "synthetic", **overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ensure_dataset(cfg, progress=messages.append) == synth
    assert any("generating" in m for m in messages) and (synth / "JPEGImages" / "2026_000000.jpg").is_file()
    train_list = synth / "ImageSets" / "Segmentation" / "train.txt"
    assert read_split(train_list) == ["2026_000000", "2026_000001", "2026_000002"]
    messages.clear()
    assert ensure_dataset(cfg, progress=messages.append) == synth and messages == []  # present: nothing to do
    with pytest.raises(ConfigError, match="data.synth_classes"):
        ensure_dataset(trees.small_cfg(synth, "synthetic", **{**overrides, "data.synth_classes": 3}))
    leftovers = [p.name for p in Path(tmp_path).iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_ensure_dataset_when_another_process_generates_it_first(tmp_path, trees, monkeypatch):
    import more.data.synth as synth

    real = synth.generate_dataset

    def racing(out, options, **kwargs):  # another trial publishes the same set while this one is generating
        real(out, options, progress=lambda _: None)
        return real(out, options, **kwargs)

    monkeypatch.setattr(synth, "generate_dataset", racing)
    root = tmp_path / "synth"
    cfg = trees.small_cfg(root, "synthetic", **{"data.synth_classes": 2, "data.synth_train": 2, "data.synth_val": 2,
                                                "data.synth_image_size": 32})
    assert ensure_dataset(cfg, progress=lambda _: None) == root
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synth"]  # the loser's temporary folder is gone
