"""``data prepare coco`` on a miniature COCO 2014 the test writes: polygons (one and several per object), compressed
and uncompressed RLE, crowd regions and overlapping instances. Every instance is drawn as a numpy array first; the
expected class masks are computed from those arrays by a per-pixel rule written here (not the converter's
painting), so a difference in rasterisation or in the overlap rule shows up."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as rle_tools

from more.__main__ import main
from more.data.check import inspect_dataset
from more.data.prepare.coco import prepare_coco
from more.data.prepare.common import PrepareError

# pycocotools 2.0.11 under numpy 2 warns from its own decode(); nothing here can change that
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

# COCO's 80 category ids (1..90 with gaps) and names, in id order.
IDS = [*range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70, *range(72, 83),
       *range(84, 91)]
NAMES = ["person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
         "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
         "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
         "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
         "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
         "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
         "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
         "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
         "teddy bear", "hair drier", "toothbrush"]
CLASS_OF = {cid: i for i, cid in enumerate(IDS, 1)}  # the test's own id -> index map


def rect(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def polygon(y0: int, y1: int, x0: int, x1: int) -> list[float]:
    """The rectangle's outline; pycocotools fills x0 <= x < x1, y0 <= y < y1 (checked below)."""
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def uncompressed_rle(m: np.ndarray) -> dict:
    """Column-major run lengths starting with a run of zeros, written by hand."""
    flat = m.flatten(order="F")
    counts, value, run = [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    return {"size": list(m.shape), "counts": counts}


def compressed_rle(m: np.ndarray) -> dict:
    rle = rle_tools.encode(np.asfortranarray(m))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def instance(image_id: int, cat: int, m: np.ndarray, form: str, *, crowd: bool = False,
             parts: list[tuple[int, int, int, int]] | None = None) -> tuple[dict, np.ndarray]:
    if form == "polygon":
        segmentation: object = [polygon(*p) for p in parts]
    elif form == "rle":
        segmentation = uncompressed_rle(m)
    else:
        segmentation = compressed_rle(m)
    ann = {"image_id": image_id, "category_id": cat, "segmentation": segmentation, "area": float(m.sum()),
           "iscrowd": int(crowd), "bbox": [0, 0, 1, 1]}
    return ann, m


def build_coco(tmp: Path) -> dict:
    """train2014/, val2014/, annotations/instances_*.json; returns the instances per image."""
    images: dict[str, list] = {"train2014": [], "val2014": []}
    anns: dict[str, list] = {"train2014": [], "val2014": []}
    truth: dict[str, list[tuple[dict, np.ndarray]]] = {}
    h, w = 20, 24

    def add(subset: str, image_id: int, instances: list[tuple[dict, np.ndarray]]) -> None:
        name = f"COCO_{subset}_{image_id:012d}"
        images[subset].append({"id": image_id, "file_name": f"{name}.jpg", "height": h, "width": w})
        rgb = np.random.default_rng(image_id).integers(0, 256, (h, w, 3), dtype=np.uint8)
        (tmp / subset).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(tmp / subset / f"{name}.jpg", quality=90)
        for i, (ann, _) in enumerate(instances):
            ann["id"] = image_id * 100 + i
        anns[subset].extend(a for a, _ in instances)
        truth[name] = instances

    person = rect(h, w, 2, 18, 2, 20)  # large
    dog = rect(h, w, 6, 12, 8, 14)  # small, on the person: stays visible (smaller wins)
    two_part = rect(h, w, 0, 3, 0, 4) | rect(h, w, 15, 20, 18, 24)
    add("train2014", 9, [instance(9, 1, person, "polygon", parts=[(2, 18, 2, 20)]),
                         instance(9, 18, dog, "compressed"),
                         instance(9, 90, two_part, "polygon", parts=[(0, 3, 0, 4), (15, 20, 18, 24)])])
    crowd = rect(h, w, 0, 10, 0, 24)
    car = rect(h, w, 5, 15, 5, 15)  # overlaps the crowd region, and is smaller
    add("train2014", 25, [instance(25, 3, crowd, "rle", crowd=True), instance(25, 3, car, "rle")])
    add("train2014", 30, [instance(30, 44, rect(h, w, 4, 16, 4, 20), "rle", crowd=True)])  # only a crowd region
    tie_a, tie_b = rect(h, w, 2, 8, 2, 8), rect(h, w, 5, 11, 5, 11)  # equal areas: the file's order decides
    add("train2014", 34, [instance(34, 62, tie_a, "compressed"), instance(34, 67, tie_b, "polygon",
                                                                          parts=[(5, 11, 5, 11)])])
    images["train2014"].append({"id": 36, "file_name": "COCO_train2014_000000000036.jpg", "height": h, "width": w})
    Image.new("RGB", (w, h)).save(tmp / "train2014" / "COCO_train2014_000000000036.jpg")  # no annotation: unlisted
    add("val2014", 42, [instance(42, 21, rect(h, w, 3, 17, 1, 23), "compressed"),
                        instance(42, 22, rect(h, w, 8, 12, 10, 22), "polygon", parts=[(8, 12, 10, 22)])])
    add("val2014", 73, [instance(73, 5, rect(h, w, 0, 20, 0, 12), "rle"),
                        instance(73, 6, rect(h, w, 0, 20, 6, 24), "compressed")])  # larger second: overlap to 5
    add("val2014", 74, [instance(74, 16, rect(h, w, 1, 9, 1, 9), "polygon", parts=[(1, 9, 1, 9)])])
    (tmp / "annotations").mkdir(parents=True)
    categories = [{"id": cid, "name": n, "supercategory": "x"} for cid, n in zip(IDS, NAMES)]
    for subset in images:
        doc = {"images": images[subset], "annotations": anns[subset], "categories": categories[::-1]}
        (tmp / "annotations" / f"instances_{subset}.json").write_text(json.dumps(doc))
    return truth


def expected_mask(instances: list[tuple[dict, np.ndarray]], overlap: str, crowd: str) -> np.ndarray:
    """Per pixel, from the drawn arrays: the class of the covering annotation with the smallest (largest) area,
    earliest in the file on ties; 255 where classes clash (void); crowd pixels by the crowd rule."""
    shape = instances[0][1].shape
    out = np.zeros(shape, dtype=np.uint8)
    for y in range(shape[0]):
        for x in range(shape[1]):
            cover = [(a, i) for i, (a, m) in enumerate(instances) if m[y, x] and (not a["iscrowd"] or crowd == "label")]
            crowd_here = any(a["iscrowd"] and m[y, x] for a, m in instances)
            if cover:
                if overlap == "void":
                    classes = {CLASS_OF[a["category_id"]] for a, _ in cover}
                    out[y, x] = 255 if len(classes) > 1 else classes.pop()
                else:
                    sign = 1 if overlap == "smaller-wins" else -1
                    best = min(cover, key=lambda ai: (sign * ai[0]["area"], ai[1]))
                    out[y, x] = CLASS_OF[best[0]["category_id"]]
            elif crowd_here and crowd == "void":
                out[y, x] = 255
    return out


@pytest.fixture
def coco(tmp_path: Path) -> tuple[Path, dict]:
    return tmp_path / "coco", build_coco(tmp_path / "coco")


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im)


def test_pycocotools_fills_a_rectangle_polygon_half_open():
    got = rle_tools.decode(rle_tools.merge(rle_tools.frPyObjects([polygon(2, 5, 1, 4)], 7, 6)))
    assert np.array_equal(got, rect(7, 6, 2, 5, 1, 4))


@pytest.mark.parametrize("overlap,crowd", [("smaller-wins", "label"), ("larger-wins", "skip"), ("void", "void")])
def test_masks_follow_the_rule_and_the_lists_the_reference_reads(coco, tmp_path, overlap, crowd, monkeypatch):
    import more.data.prepare.coco as converter

    src, truth = coco
    monkeypatch.setattr(converter, "VAL_PART", 2)  # the first 5000 names of val, in miniature
    out = tmp_path / "out"
    outcome = prepare_coco(src, out, overlap=overlap, crowd=crowd, workers=2)
    for name, instances in truth.items():
        subset = name.split("_")[1]
        got = _png(out / "SegmentationClass" / subset / f"{name}.png")
        assert np.array_equal(got, expected_mask(instances, overlap, crowd)), (name, overlap, crowd)
    lists = {s: (out / "ImageSets" / f"{s}.txt").read_text().split() for s in ("train", "val", "val_part")}
    only_crowd = [] if crowd == "label" else ["COCO_train2014_000000000030"]  # no class left in its mask
    assert lists["train"] == [f"COCO_train2014_{i:012d}" for i in (9, 25, 30, 34)
                              if f"COCO_train2014_{i:012d}" not in only_crowd]
    assert lists["val"] == [f"COCO_val2014_{i:012d}" for i in (42, 73, 74)] and lists["val_part"] == lists["val"][:2]
    record = json.loads((out / "prepare.json").read_text())
    assert record["mask_rule"]["overlap"] == overlap and record["mask_rule"]["crowd"] == crowd
    assert record["category_map"]["1"] == [1, "person"] and record["category_map"]["90"] == [80, "toothbrush"]
    assert record["category_map"]["13"] == [12, "stop sign"] and len(record["category_map"]) == 80
    assert record["train_without_class"] == len(only_crowd) and record["content_hash"] == outcome.content_hash
    labels = json.loads((out / "cls_labels.json").read_text())
    for name in lists["train"] + lists["val"]:  # the classes present in the expected mask
        assert labels[name] == sorted(set(np.unique(expected_mask(truth[name], overlap, crowd)).tolist()) - {0, 255})
    if overlap == "smaller-wins":  # the dog (id 18 -> class 17) on the person stays visible
        assert labels["COCO_train2014_000000000009"] == [CLASS_OF[1], CLASS_OF[18], CLASS_OF[90]] == [1, 17, 80]
    link = out / "JPEGImages" / "train2014" / "COCO_train2014_000000000009.jpg"
    assert link.is_symlink() and link.resolve() == (src / "train2014" / link.name).resolve()
    assert not (out / "JPEGImages" / "train2014" / "COCO_train2014_000000000036.jpg").exists()
    report = inspect_dataset(out, "coco")
    assert report.problems == [] and report.counts == {s: len(v) for s, v in lists.items()}


def test_zips_and_the_coco_preset_train_on_it(coco, tmp_path, capsys):
    src, truth = coco
    by_folder = prepare_coco(src, tmp_path / "a")
    zips = tmp_path / "zips"
    zips.mkdir()
    for subset in ("train2014", "val2014"):
        with zipfile.ZipFile(zips / f"{subset}.zip", "w") as z:
            for f in sorted((src / subset).iterdir()):
                z.write(f, f"{subset}/{f.name}")
    with zipfile.ZipFile(zips / "annotations_trainval2014.zip", "w") as z:
        for f in sorted((src / "annotations").iterdir()):
            z.write(f, f"annotations/{f.name}")
    out = tmp_path / "b"
    assert main(["data", "prepare", "coco", "--coco", str(zips), "--out", str(out), "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "copied out of it" in printed and by_folder.content_hash in printed  # same masks, lists, labels, sizes
    image = out / "JPEGImages" / "val2014" / "COCO_val2014_000000000074.jpg"
    assert not image.is_symlink() and image.read_bytes() == (src / "val2014" / image.name).read_bytes()
    assert sorted(p.name for p in zips.iterdir()) == ["annotations_trainval2014.zip", "train2014.zip", "val2014.zip"]
    assert main(["data", "check", str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"{out} (coco, 80 classes)"

    from tiny_config import TINY

    from more.config import load_config
    from more.train import train

    cfg = load_config("coco", [*TINY, f"data.root={out}", "train.max_iters=2", "train.eval_every=2",
                               "train.ckpt_every=2", f"runtime.out_dir={tmp_path / 'runs'}"])
    assert (cfg.data.train_split, cfg.data.val_split, cfg.train.val_subset) == ("train", "val", "val_part")
    lines: list[str] = []
    result = train(cfg, run_dir=tmp_path / "runs" / "coco", log=lines.append)
    assert "validating on val_part (train.val_subset, part of val)" in lines[0]  # the list prepare wrote
    # 3 val images hold few of the 80 classes (the others' IoU is undefined); background is always there
    assert result["iter"] == 2 and 0.0 <= result["val/seg/iou/background"] <= 100.0
    assert "val/seg/iou/toothbrush" in result and "val/cam/iou/person" in result


def test_bad_coco_inputs(coco, tmp_path):
    src, _ = coco
    with pytest.raises(PrepareError, match="--overlap 'biggest'"):
        prepare_coco(src, tmp_path / "o", overlap="biggest")
    with pytest.raises(PrepareError, match="--crowd 'drop'"):
        prepare_coco(src, tmp_path / "o", crowd="drop")
    doc_path = src / "annotations" / "instances_val2014.json"
    doc = json.loads(doc_path.read_text())
    doc["categories"][0]["name"] = "zebra crossing"  # toothbrush (id 90) renamed
    doc_path.write_text(json.dumps(doc))
    with pytest.raises(PrepareError, match="class 80 is 'zebra crossing', expected 'toothbrush'"):
        prepare_coco(src, tmp_path / "o")
    doc["categories"][0]["name"] = "toothbrush"
    doc_path.write_text(json.dumps(doc))
    (src / "val2014" / "COCO_val2014_000000000073.jpg").unlink()
    with pytest.raises(PrepareError, match=r"1 annotated image\(s\) missing, e.g. \['COCO_val2014_000000000073.jpg'\]"):
        prepare_coco(src, tmp_path / "o")
    doc_path.write_text("{not json")
    with pytest.raises(PrepareError, match="instances_val2014.json: not valid JSON"):
        prepare_coco(src, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_a_killed_prepare_continues_where_it_stopped(tmp_path):
    """SIGKILL (by PID) a real ``data prepare coco`` process once it has written masks; the next run keeps them and
    ends with the same content hash as an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    src = tmp_path / "coco"
    categories = [{"id": cid, "name": n} for cid, n in zip(IDS, NAMES)]
    rng = np.random.default_rng(5)
    for subset, count in (("train2014", 150), ("val2014", 30)):
        (src / subset).mkdir(parents=True)
        images, anns = [], []
        for k in range(count):
            name = f"COCO_{subset}_{k:012d}"
            Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(src / subset / f"{name}.jpg")
            images.append({"id": k, "file_name": f"{name}.jpg", "height": 96, "width": 128})
            for j in range(3):
                y0, x0 = int(rng.integers(0, 60)), int(rng.integers(0, 90))
                anns.append({"id": 10 * k + j, "image_id": k, "category_id": int(rng.choice(IDS)), "iscrowd": 0,
                             "segmentation": [polygon(y0, y0 + 30, x0, x0 + 30)], "area": 900.0 + j})
        (src / "annotations").mkdir(exist_ok=True)
        (src / "annotations" / f"instances_{subset}.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": categories}))
    out = tmp_path / "out"
    masks = out / "SegmentationClass" / "train2014"
    proc = subprocess.Popen([sys.executable, "-m", "more", "data", "prepare", "coco", "--coco", str(src), "--out",
                             str(out), "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        def finished_masks() -> int:  # not the temporary files of a write in progress
            return sum(not n.startswith(".") for n in os.listdir(masks)) if masks.is_dir() else 0

        while finished_masks() < 3 and time.monotonic() < deadline:
            assert proc.poll() is None, "prepare ended before it could be interrupted"
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    record = json.loads((out / "prepare.json").read_text())
    assert not record["complete"] and not (out / "ImageSets").exists()
    kept = {p.name: p.stat().st_mtime_ns for p in masks.iterdir() if not p.name.startswith(".")}
    assert 3 <= len(kept) < 150
    resumed = prepare_coco(src, out, workers=1)
    assert resumed.skipped >= len(kept)
    assert {n: (masks / n).stat().st_mtime_ns for n in kept} == kept  # the masks written before the kill stay
    assert not [p for p in masks.iterdir() if p.name.startswith(".")]  # no temporary file left behind
    assert resumed.content_hash == prepare_coco(src, tmp_path / "fresh", workers=1).content_hash
    assert inspect_dataset(out, "coco").problems == []


def test_a_malformed_annotation_entry_is_one_line_naming_the_file(coco, tmp_path):
    src, _ = coco
    doc_path = src / "annotations" / "instances_train2014.json"
    doc = json.loads(doc_path.read_text())
    del doc["annotations"][1]["image_id"]
    doc_path.write_text(json.dumps(doc))
    with pytest.raises(PrepareError, match="instances_train2014.json: malformed image or annotation entry"):
        prepare_coco(src, tmp_path / "o")
    assert not (tmp_path / "o").exists()
