"""Datasets with their own classes: ``dataset.yaml`` (every kind of bad description), labels files in CSV / JSON /
text with class names or indices, the config's class count and names, ``data prepare folder`` and ``data check`` on
such a tree, and the picture legend."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from more.__main__ import main
from more.config import ConfigError, load_config, num_classes
from more.data.check import detect_dataset, inspect_dataset
from more.data.classes import VOC_PALETTE, class_names, dataset_name
from more.data.description import DatasetError, read_description
from more.data.labels import read_labels_file
from more.data.prepare.common import PrepareError
from more.data.prepare.folder import prepare_folder
from more.data.voc import build_eval_dataset, build_train_dataset

GOOD = """name: shapes
classes: [square, round thing, tri-angle]
images: imgs
image_suffix: .png
masks: masks
splits: {train: train.txt, val: val.txt}
"""
# name -> (classes in the mask, split)
ITEMS = {"a1": ([1], "train"), "a2": ([2, 3], "train"), "a3": ([3], "train"), "b1": ([1, 2], "val")}


def _mask(classes: list[int]) -> np.ndarray:
    m = np.zeros((16, 20), dtype=np.uint8)
    for k, c in enumerate(classes):
        m[2 + 4 * k : 5 + 4 * k, 2:18] = c
    m[0, :] = 255
    return m


def write_tree(root: Path, description: str = GOOD) -> Path:
    for sub in ("imgs", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, (name, (classes, _)) in enumerate(ITEMS.items()):
        Image.fromarray(np.full((16, 20, 3), 40 * i, np.uint8)).save(root / "imgs" / f"{name}.png")
        Image.fromarray(_mask(classes), mode="L").save(root / "masks" / f"{name}.png")
    for split in ("train", "val"):
        (root / f"{split}.txt").write_text("".join(f"{n}\n" for n, (_, s) in ITEMS.items() if s == split))
    (root / "dataset.yaml").write_text(description)
    return root


def test_description_drives_classes_config_and_loaders(tmp_path):
    root = write_tree(tmp_path / "shapes")
    desc = read_description(root)
    assert desc.classes == ("square", "round thing", "tri-angle") and desc.images == root / "imgs"
    cfg = load_config("synthetic", {"data.dataset": "custom", "data.root": str(root), "data.crop_size": 64,
                                    "lir.ure_kernel": 2, "eval.resize": 32, "data.num_workers": 0})
    assert num_classes(cfg) == 3 and class_names(cfg) == ["background", "square", "round thing", "tri-angle"]
    assert dataset_name(cfg) == "shapes"
    train = build_train_dataset(cfg)
    assert train.names == ["a1", "a2", "a3"] and train.labels.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
    assert train[1]["image"].shape == (3, 64, 64)
    val = build_eval_dataset(cfg, "val")
    assert val[0]["mask"].shape == (16, 20) and val.labels.tolist() == [[1, 1, 0]]
    (root / "labels.csv").write_text("image,square,round thing,tri-angle\na1.png,0,1,0\na2,yes,,x\na3,1,0,0\n"
                                     "b1,0,0,1\n")
    (root / "dataset.yaml").write_text(GOOD + "labels: labels.csv\n")
    assert build_train_dataset(cfg).labels.tolist() == [[0, 1, 0], [1, 0, 1], [1, 0, 0]]  # the file wins
    with pytest.raises(DatasetError, match="splits: no split 'test' .*train, val"):
        build_eval_dataset(cfg, "test")


@pytest.mark.parametrize("text,message", [
    ("- a list\n", "expected a mapping"),
    (GOOD + "colour: red\n", "unknown key 'colour'"),
    (GOOD.replace("name: shapes\n", ""), "missing key 'name'"),
    (GOOD.replace("name: shapes", "name: my shapes"), "name: 'my shapes'"),
    (GOOD.replace("name: shapes", "name: VOC"), "'VOC' is a built-in dataset"),
    (GOOD.replace("[square, round thing, tri-angle]", "[]"), "need a non-empty list"),
    (GOOD.replace("[square, round thing, tri-angle]", "square"), "need a non-empty list"),
    (GOOD.replace("round thing", "round/thing"), "class 2 'round/thing'"),
    (GOOD.replace("round thing", "' round'"), "class 2 ' round'"),
    (GOOD.replace("round thing", "'a:b'"), "class 2 'a:b'"),
    (GOOD.replace("round thing", "7"), "class 2 7"),
    (GOOD.replace("round thing", "Background"), "background is class 0 already"),
    (GOOD.replace("round thing", "Square"), "class 2 'Square' repeats 'square'"),
    ("name: x\nclasses: [" + ", ".join(f"c{i}" for i in range(255)) + "]\nimages: i\nsplits: {t: t.txt}\n",
     "255 classes; masks hold 1..254"),
    (GOOD.replace("images: imgs", "images: ''"), "images: need a path"),
    (GOOD.replace("image_suffix: .png", "image_suffix: png"), "image_suffix: 'png'"),
    (GOOD.replace("{train: train.txt, val: val.txt}", "[train.txt]"), "splits: need a mapping"),
    (GOOD.replace("{train: train.txt, val: val.txt}", "{'tr ain': train.txt}"), "split name 'tr ain'"),
    (GOOD.replace("masks: masks", "masks: 3"), "masks: need a path"),
    ("name: a\nname: b\n", "duplicate key 'name'"),
    ("name: [unclosed\n", "not valid YAML"),
])
def test_every_kind_of_bad_description_is_one_line_naming_the_file(tmp_path, text, message):
    (tmp_path / "dataset.yaml").write_text(text)
    with pytest.raises(DatasetError, match=message) as info:
        read_description(tmp_path)
    assert str(info.value).startswith(str(tmp_path / "dataset.yaml"))


def test_a_missing_description_fails_the_config_naming_data_root(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"data.dataset=custom, data.root=.*nothing.*dataset.yaml: dataset "
                                          r"description not found"):
        load_config("synthetic", {"data.dataset": "custom", "data.root": str(tmp_path / "nothing")})
    assert main(["train", "synthetic", "data.dataset=custom", f"data.root={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("config error: data.dataset=custom")


@pytest.mark.parametrize("name,text,expected", [
    ("l.csv", "image,labels\nx.jpg,cat;dog\ny,\nz,2\n", {"x": [1, 2], "y": [], "z": [2]}),
    ("l.csv", "filename,cat,dog,split\nsub/x.jpeg,1,0,train\ny.png,TRUE,yes,val\n", {"x": [1], "y": [1, 2]}),
    ("l.json", '{"x": ["dog", 1], "y": []}', {"x": [1, 2], "y": []}),
    ("l.txt", "x 1 2\ny\n", {"x": [1, 2], "y": []}),
])
def test_labels_files_by_name_or_index(tmp_path, name, text, expected):
    path = tmp_path / name
    path.write_text(text)
    assert read_labels_file(path, 2, ["cat", "dog"]) == expected


@pytest.mark.parametrize("name,text,message", [
    ("l.csv", "", "empty CSV"),
    ("l.csv", "picture,labels\nx,cat\n", "l.csv:1: the first column must be the image"),
    ("l.csv", "image,split\nx,train\n", "no label columns"),
    ("l.csv", "image,labels,cat\nx,cat,1\n", "either a 'labels' column or one column per class"),
    ("l.csv", "image,labels\nx,cat,extra\n", "l.csv:2: 3 cells, the header has 2"),
    ("l.csv", "image,cat,dog\nx,1,maybe\n", "l.csv:2: column 'dog': 'maybe' is not 1/0"),
    ("l.csv", "image,labels\nx,cow\n", "l.csv:2: x: unknown class 'cow'"),
    ("l.csv", "image,labels\nx,3\n", r"l.csv:2: x: classes \['3'\] must be in 1..2"),
    ("l.csv", "image,labels\nx,cat\nx.jpg,dog\n", "l.csv:3: image 'x' is listed twice"),
    ("l.json", "[1, 2]", "expected a JSON object"),
    ("l.json", '{"x": [true]}', "must be class indices or names"),
    ("l.json", '{"x": [1, ', "not valid JSON"),
    ("l.txt", "x 0\n", r"l.txt:1: x: classes \['0'\] must be in 1..2"),
])
def test_bad_labels_files_name_the_file_and_line(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DatasetError, match=message):
        read_labels_file(path, 2, ["cat", "dog"])


def test_prepare_folder_from_images_and_a_labels_csv(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(10):
        Image.fromarray(np.full((8, 8, 3), 20 * i, np.uint8)).save(photos / f"p{i}.jpg")
    (photos / "notes.txt").write_text("not an image")
    rows = "".join(f"p{i}.jpg,{'gull' if i % 2 else 'crow;gull'}\n" for i in range(9))  # p9 has no labels
    (tmp_path / "labels.csv").write_text("image,labels\n" + rows)
    before = sorted(p.name for p in photos.iterdir())
    out = tmp_path / "birds"
    outcome = prepare_folder(photos, out, labels=tmp_path / "labels.csv", val_fraction=0.25, seed=1)
    assert outcome.counts == {"train": 7, "val": 2} and sorted(p.name for p in photos.iterdir()) == before
    desc = read_description(out)
    assert desc.name == "photos" and desc.classes == ("crow", "gull") and desc.images == photos
    assert desc.masks is None and desc.labels == out / "labels.json" and desc.image_suffix == ".jpg"
    listed = [n for s in ("train", "val") for n in (out / "splits" / f"{s}.txt").read_text().split()]
    assert sorted(listed) == [f"p{i}" for i in range(9)]
    assert json.loads((out / "labels.json").read_text())["p0"] == ["crow", "gull"]
    assert any("p9" not in n and "1 image(s) in --images have no labels" in n for n in outcome.notes)
    assert detect_dataset(out) == "custom"
    report = inspect_dataset(out, "custom")
    assert report.problems == [] and report.stats["train"].labelled == 7 and report.stats["train"].masks == 0
    again = prepare_folder(photos, out, labels=tmp_path / "labels.csv", val_fraction=0.25, seed=1)
    assert again.verified_only and again.content_hash == outcome.content_hash
    with pytest.raises(PrepareError, match="was prepared with"):
        prepare_folder(photos, out, labels=tmp_path / "labels.csv", val_fraction=0.5)
    (tmp_path / "split.csv").write_text("image,labels,split\np1,gull,train\np2,crow,holdout\n")
    split_out = tmp_path / "by_column"
    assert prepare_folder(photos, split_out, labels=tmp_path / "split.csv").counts == {"holdout": 1, "train": 1}
    assert main(["data", "check", str(split_out)]) == 0
    assert "train" in capsys.readouterr().out


def test_prepare_folder_bad_inputs(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "b.png"):
        Image.new("RGB", (4, 4)).save(photos / name)
    cases = [
        (dict(images=tmp_path / "none", labels=None), "--images .*none: does not exist"),
        (dict(images=photos, labels=None), "give --labels CSV"),
        (dict(images=photos, labels=None, masks=photos), "--masks without --labels: name the mask values"),
        (dict(images=photos, labels=None, masks=tmp_path / "m"), "--masks .*m: does not exist"),
        (dict(images=photos, labels="l1.csv"), r"l1.csv:2: image 'c' is not in --images"),
        (dict(images=photos, labels="l2.csv"), "several suffixes"),
        (dict(images=photos, labels="l3.csv"), "classes are given by index; name them with --classes"),
        (dict(images=photos, labels="l4.csv", classes=["x", "x"]), "repeats"),
        (dict(images=photos, labels="l5.csv"), "l5.csv:3: b: empty split cell"),
        (dict(images=photos, labels="l2.csv", val_fraction=1.0), "--val-fraction 1.0"),
    ]
    (tmp_path / "l1.csv").write_text("image,labels\nc.jpg,cat\n")
    (tmp_path / "l2.csv").write_text("image,labels\na,cat\nb,cat\n")
    (tmp_path / "l3.csv").write_text("image,labels\na,1\n")
    (tmp_path / "l4.csv").write_text("image,labels\na,x\n")
    (tmp_path / "l5.csv").write_text("image,labels,split\na,cat,train\nb,cat,\n")
    for kwargs, message in cases:
        labels = kwargs.pop("labels")
        with pytest.raises(PrepareError, match=message):
            prepare_folder(out=tmp_path / "out", labels=tmp_path / labels if labels else None, **kwargs)
    assert not (tmp_path / "out").exists()


def test_check_reports_problems_of_a_described_tree(tmp_path, capsys):
    root = write_tree(tmp_path / "shapes")
    Image.fromarray(_mask([4]), mode="L").save(root / "masks" / "a3.png")  # class 4 of 3
    (root / "imgs" / "b1.png").unlink()
    report = inspect_dataset(root, detect_dataset(root))
    assert report.problems == [f"{root / 'masks' / 'a3.png'}: mask values [4] outside 0..3 and 255",
                               f"{root / 'masks' / 'a3.png'}: training image a3 (split train) has no foreground class",
                               f"{root / 'imgs' / 'b1.png'}: image missing (listed in {root / 'val.txt'})"]
    stats = report.stats["train"]
    assert (stats.images, stats.masks, stats.labelled, stats.without_class) == (3, 3, 3, 1)
    assert stats.class_images.tolist() == [1, 1, 1]
    (root / "dataset.yaml").write_text(GOOD + "labels: labels.json\n")
    (root / "labels.json").write_text(json.dumps({"a1": ["square"], "a2": [], "b1": ["tri-angle"]}))
    problems = inspect_dataset(root, "custom").problems
    assert f"{root / 'train.txt'}: 1 image(s) without labels in the labels file, e.g. ['a3']" in problems
    assert f"{root / 'train.txt'}: 1 training image(s) whose labels name no class" in problems
    assert main(["data", "check", str(root)]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"{root} (custom, 3 classes)" and "no image of" in out


def test_picture_legend_names_the_classes_shown_in_their_colours():
    from more.tracking.pictures import GAP, LEGEND_H, TITLE_H, PictureRow, picture_grid

    gt = np.zeros((8, 8), int)
    gt[2:6, 2:6] = 2
    row = PictureRow(image=np.zeros((8, 8, 3), np.uint8), gt=gt, cam=np.zeros((8, 8)), lam=np.zeros((8, 8)),
                     seg=np.where(gt > 0, 3, 0))
    names = ["background", "square", "round thing", "tri-angle"]
    plain = picture_grid([row], tile=64)
    grid = picture_grid([row], tile=64, class_names=names)
    assert grid.shape[0] == plain.shape[0] + GAP + LEGEND_H and np.array_equal(grid[: plain.shape[0]], plain)
    band = grid[TITLE_H + 64 + GAP :]
    colours = {tuple(c) for c in band.reshape(-1, 3).tolist()}
    assert {tuple(VOC_PALETTE[i].tolist()) for i in (0, 2, 3)} <= colours  # background, gt's 2, seg's 3
    assert tuple(VOC_PALETTE[1].tolist()) not in colours  # class 1 is in no tile


def test_trial_identity_of_a_described_dataset_follows_its_content_not_its_place(tmp_path):
    import shutil

    from more.harness.identity import dataset_identity

    root = write_tree(tmp_path / "shapes")

    def identity(where: Path) -> dict:
        return dataset_identity(load_config("synthetic", {"data.dataset": "custom", "data.root": str(where)}))

    first = identity(root)
    assert first["custom"]["classes"] == ["square", "round thing", "tri-angle"]
    moved = tmp_path / "elsewhere"
    shutil.copytree(root, moved)
    assert identity(moved) == first  # relative paths: the same dataset in another folder
    (moved / "val.txt").write_text("b1\na3\n")
    assert identity(moved)["custom"]["lists"]["val"] != first["custom"]["lists"]["val"]
    (moved / "val.txt").write_text("b1\n")
    (moved / "imgs" / "a1.png").write_bytes((moved / "imgs" / "a1.png").read_bytes() + b"\0")
    assert identity(moved)["custom"]["images"] != first["custom"]["images"]
    (moved / "dataset.yaml").write_text(GOOD.replace("round thing", "circle"))
    assert identity(moved)["custom"]["classes"][1] == "circle"


def test_a_synthetic_set_is_read_through_its_description_which_must_match_the_generator(tmp_path):
    from more.data.synth import ensure_dataset

    cfg = load_config("synthetic", {"data.root": str(tmp_path / "s"), "data.synth_classes": 2,
                                    "data.synth_train": 3, "data.synth_val": 2, "data.synth_image_size": 48})
    root = ensure_dataset(cfg, progress=lambda _: None)
    desc = read_description(root)
    assert desc.name == "synthetic" and desc.classes == ("boat", "plane") and detect_dataset(root) == "synthetic"
    (root / "ImageSets" / "Segmentation" / "train.txt").rename(root / "ImageSets" / "Segmentation" / "t.txt")
    (root / "dataset.yaml").write_text((root / "dataset.yaml").read_text().replace("Segmentation/train.txt",
                                                                                  "Segmentation/t.txt"))
    assert len(build_train_dataset(cfg)) == 3  # the list the description names, not ImageSets/.../train.txt
    (root / "dataset.yaml").write_text((root / "dataset.yaml").read_text().replace("[boat, plane]", "[boat, kite]"))
    with pytest.raises(ConfigError, match=r"dataset.yaml: classes \['boat', 'kite'\] are not the generator's"):
        ensure_dataset(cfg, progress=lambda _: None)
