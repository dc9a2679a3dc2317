"""Benchmark: ``data prepare voc`` and ``data prepare coco`` throughput at the real images' sizes, and what the full
releases would take at that rate.

Writes a generated release of ``--images`` images into a temporary folder (VOC: 500x375 images, VOC PNG masks with
void borders for a fifth of them, SBD ``.mat`` files for the rest, as folders and as ``.tar`` / ``.tgz`` archives;
COCO: 640x480 images with ``--instances`` polygon annotations each, COCO's mean being 7.3), runs the converters with
``--workers`` threads and prints masks per second, seconds per image and the extrapolation to the full releases
(12,031 VOC masks; 122,218 COCO masks). Also times the second run on a finished tree (verification only).

Usage: ``python bench/bench_prepare.py [--images 300] [--instances 7] [--workers 2] [--only voc|coco]``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

VOC_FULL = 12031  # SegmentationClassAug masks: train_aug 10,582 + val 1,449
COCO_FULL = 122218  # annotated images: train 82,081 + val 40,137


def _random_blobs(rng: np.random.Generator, h: int, w: int, n: int, classes: int) -> np.ndarray:
    seg = np.zeros((h, w), dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(n):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(20, 120)
        seg[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(1, classes + 1)
    return seg


def make_voc(root: Path, n: int) -> tuple[Path, Path]:
    import scipy.io

    voc, sbd = root / "VOCdevkit" / "VOC2012", root / "benchmark_RELEASE" / "dataset"
    for d in (voc / "JPEGImages", voc / "SegmentationClass", voc / "ImageSets" / "Segmentation", sbd / "cls"):
        d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"2008_{i:06d}" for i in range(n)]
    voc_masks = names[: n // 5]
    for name in names:
        Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(voc / "JPEGImages" / f"{name}.jpg",
                                                                                 quality=90)
        seg = _random_blobs(rng, 375, 500, 3, 20)
        if name in voc_masks:
            mask = seg.copy()
            mask[np.abs(np.diff(seg.astype(np.int16), axis=1, prepend=0)) > 0] = 255
            Image.fromarray(mask, mode="L").save(voc / "SegmentationClass" / f"{name}.png")
        else:
            scipy.io.savemat(sbd / "cls" / f"{name}.mat", {"GTcls": {"Segmentation": seg, "Boundaries": np.zeros(1),
                                                                     "CategoriesPresent": np.unique(seg)}})
    lists = voc / "ImageSets" / "Segmentation"
    half = len(voc_masks) // 2
    (lists / "train.txt").write_text("".join(f"{x}\n" for x in voc_masks[:half]))
    (lists / "val.txt").write_text("".join(f"{x}\n" for x in voc_masks[half:]))
    rest = names[len(voc_masks):]
    (sbd / "train.txt").write_text("".join(f"{x}\n" for x in rest[: len(rest) * 3 // 4]))
    (sbd / "val.txt").write_text("".join(f"{x}\n" for x in rest[len(rest) * 3 // 4 :]))
    return root / "VOCdevkit", root / "benchmark_RELEASE"


def make_coco(root: Path, n: int, instances: int) -> Path:
    from more.data.classes import COCO_CLASSES

    ids = [*range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70, *range(72, 83),
           *range(84, 91)]
    cats = [{"id": i, "name": name} for i, name in zip(ids, COCO_CLASSES)]
    rng = np.random.default_rng(1)
    for subset, count in (("train2014", n - n // 3), ("val2014", n // 3)):
        (root / subset).mkdir(parents=True)
        images, anns = [], []
        for k in range(count):
            name = f"COCO_{subset}_{k:012d}"
            Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(root / subset / f"{name}.jpg",
                                                                                     quality=90)
            images.append({"id": k, "file_name": f"{name}.jpg", "height": 480, "width": 640})
            for j in range(instances):
                cx, cy, r = rng.uniform(50, 590), rng.uniform(50, 430), rng.uniform(10, 150)
                angles = np.sort(rng.uniform(0, 2 * np.pi, 24))
                poly = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1).ravel().tolist()
                anns.append({"id": k * 100 + j, "image_id": k, "category_id": int(rng.choice(ids)),
                             "segmentation": [poly], "area": float(np.pi * r * r), "iscrowd": 0})
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"instances_{subset}.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root


def timed(call) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = call()
    return time.perf_counter() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--instances", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", choices=["voc", "coco"])
    args = parser.parse_args()
    import contextlib

    from more.data.prepare.coco import prepare_coco
    from more.data.prepare.voc import prepare_voc

    tmp = Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    quiet = contextlib.redirect_stderr(io.StringIO())
    print(f"load average before: {os.getloadavg()[0]:.2f}; {args.images} images, {args.workers} workers")
    print("| release | source | masks | seconds | masks/s | full release at this rate |")
    print("|---|---|---|---|---|---|")
    try:
        if args.only in (None, "voc"):
            voc, sbd = make_voc(tmp / "voc", args.images)
            with tarfile.open(tmp / "voc.tar", "w") as t:
                t.add(voc, arcname="VOCdevkit")
            with tarfile.open(tmp / "sbd.tgz", "w:gz") as t:
                t.add(sbd, arcname="benchmark_RELEASE")
            for label, v, s in (("folders", voc, sbd), ("tar + tgz", tmp / "voc.tar", tmp / "sbd.tgz")):
                out = tmp / f"out_{label[:3]}"
                with quiet:
                    seconds, outcome = timed(lambda v=v, s=s, out=out: prepare_voc(v, s, out, workers=args.workers))
                masks = sum(outcome.counts[k] for k in ("train_aug", "val"))
                rate = masks / seconds
                print(f"| VOC + SBD | {label} | {masks} | {seconds:.1f} | {rate:.1f} | "
                      f"{VOC_FULL / rate / 60:.1f} min for {VOC_FULL} |")
            with quiet:
                seconds, _ = timed(lambda: prepare_voc(voc, sbd, tmp / "out_fol", workers=args.workers))
            print(f"| VOC + SBD | second run (verify only) | {masks} | {seconds:.2f} | {masks / seconds:.0f} | "
                  f"{VOC_FULL / (masks / seconds):.0f} s |")
        if args.only in (None, "coco"):
            coco = make_coco(tmp / "coco", args.images, args.instances)
            with quiet:
                seconds, outcome = timed(lambda: prepare_coco(coco, tmp / "out_coco", workers=args.workers))
            masks = outcome.counts["train"] + outcome.counts["val"]
            rate = masks / seconds
            print(f"| COCO 2014 ({args.instances} polygons/image) | folders | {masks} | {seconds:.1f} | {rate:.1f} | "
                  f"{COCO_FULL / rate / 3600:.2f} h for {COCO_FULL} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
