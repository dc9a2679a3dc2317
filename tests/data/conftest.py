"""Tiny dataset trees for the data tests: VOC-shaped, COCO-shaped and a small generated synthetic set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from more.config import load_config
from more.data.classes import VOC_PALETTE

# name -> (height, width, {class: (y0, y1, x0, x1)}); rectangles are drawn in order with a 255 border ring.
VOC_ITEMS: dict[str, tuple[int, int, dict[int, tuple[int, int, int, int]]]] = {
    "2007_000032": (30, 40, {1: (2, 14, 3, 20), 15: (16, 28, 22, 38)}),  # aeroplane + person
    "2007_000039": (36, 28, {20: (5, 30, 4, 24)}),  # tvmonitor
    "2008_000002": (32, 32, {3: (1, 12, 1, 12), 7: (15, 30, 15, 30)}),  # only in train_aug
    "2007_000063": (26, 34, {8: (3, 20, 2, 15), 12: (8, 24, 18, 32)}),  # val
    "2007_000129": (40, 30, {2: (10, 30, 5, 25)}),  # val
}
VOC_SPLITS = {
    "train": ["2007_000032", "2007_000039"],
    "train_aug": ["2007_000032", "2007_000039", "2008_000002"],
    "val": ["2007_000063", "2007_000129"],
    "test": ["2008_000005"],
}
COCO_ITEMS = {
    "COCO_train2014_000000000009": (24, 32, {1: (2, 12, 2, 14), 80: (14, 22, 16, 30)}),
    "COCO_train2014_000000000025": (28, 20, {23: (4, 24, 3, 17)}),
    "COCO_val2014_000000000042": (30, 26, {18: (5, 25, 4, 20)}),
    "COCO_val2014_000000000073": (20, 30, {3: (2, 18, 2, 12), 62: (4, 16, 15, 28)}),
}
COCO_SPLITS = {  # the lists the reference reads (and `data prepare coco` writes)
    "train": ["COCO_train2014_000000000009", "COCO_train2014_000000000025"],
    "val": ["COCO_val2014_000000000042", "COCO_val2014_000000000073"],
    "val_part": ["COCO_val2014_000000000073"],
}


def draw_mask(height: int, width: int, boxes: dict[int, tuple[int, int, int, int]]) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    for cls, (y0, y1, x0, x1) in boxes.items():
        mask[y0:y1, x0:x1] = 255
        mask[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1] = cls
    return mask


def save_palette_png(path: Path, mask: np.ndarray) -> None:
    im = Image.fromarray(mask, mode="P")
    im.putpalette(VOC_PALETTE.tobytes())
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def save_jpeg(path: Path, height: int, width: int, seed: int) -> None:
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, quality=95)


def write_lists(folder: Path, splits: dict[str, list[str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, names in splits.items():
        (folder / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))


def build_voc_tree(root: Path, *, aug: bool = True) -> Path:
    mask_dir = root / ("SegmentationClassAug" if aug else "SegmentationClass")
    for i, (name, (h, w, boxes)) in enumerate(VOC_ITEMS.items()):
        save_jpeg(root / "JPEGImages" / f"{name}.jpg", h, w, seed=i)
        save_palette_png(mask_dir / f"{name}.png", draw_mask(h, w, boxes))
    save_jpeg(root / "JPEGImages" / "2008_000005.jpg", 22, 30, seed=99)  # test image: no mask
    write_lists(root / "ImageSets" / "Segmentation", VOC_SPLITS)
    return root


def build_coco_tree(root: Path) -> Path:
    for i, (name, (h, w, boxes)) in enumerate(COCO_ITEMS.items()):
        subset = name.split("_")[1]
        save_jpeg(root / "JPEGImages" / subset / f"{name}.jpg", h, w, seed=10 + i)
        save_palette_png(root / "SegmentationClass" / subset / f"{name}.png", draw_mask(h, w, boxes))
    write_lists(root / "ImageSets", COCO_SPLITS)
    return root


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    return build_voc_tree(tmp_path / "VOC2012")


@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    return build_coco_tree(tmp_path / "COCO")


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny generated set (3 classes, 8 train, 4 val, 64 px), shared read-only by the tests."""
    from more.data.synth import SynthOptions, generate_dataset

    root = tmp_path_factory.mktemp("synth") / "synthetic"
    generate_dataset(root, SynthOptions(classes=3, train=8, val=4, size=64, seed=0), progress=lambda _: None)
    return root


def small_cfg(root: Path, preset: str = "voc", **overrides: object):
    """A config for ``root`` with a 64-px crop and 32-px eval resize (small enough for the CPU tests)."""
    base = {"data.root": str(root), "data.crop_size": 64, "lir.ure_kernel": 2, "eval.resize": 32,
            "data.num_workers": 0}
    return load_config(preset, {**base, **overrides})


class Trees:
    """The tree builders and their expected contents, handed to tests by the ``trees`` fixture."""

    VOC_ITEMS = VOC_ITEMS
    VOC_SPLITS = VOC_SPLITS
    COCO_ITEMS = COCO_ITEMS
    COCO_SPLITS = COCO_SPLITS
    draw_mask = staticmethod(draw_mask)
    save_palette_png = staticmethod(save_palette_png)
    save_jpeg = staticmethod(save_jpeg)
    build_voc_tree = staticmethod(build_voc_tree)
    build_coco_tree = staticmethod(build_coco_tree)
    small_cfg = staticmethod(small_cfg)


@pytest.fixture
def trees() -> type[Trees]:
    return Trees
