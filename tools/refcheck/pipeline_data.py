"""Small dataset trees for the pipeline checks: the same images and masks in the reference's layout and ours.

The images are crops of a real photograph (matplotlib's bundled ``grace_hopper.jpg``), so colour jitter, bicubic
resizing and DenseCRF see natural statistics; the masks are a few labelled rectangles with an ignore band.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


def photo() -> Image.Image:
    """A real RGB photograph (512×600) that ships with matplotlib (a dependency of mlflow)."""
    import matplotlib.cbook

    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    with Image.open(path) as im:
        return im.convert("RGB")


def photo_digest() -> str:
    """sha256 of :func:`photo`'s decoded pixels: a golden test checks it before rebuilding the scenes."""
    import hashlib

    return hashlib.sha256(np.asarray(photo(), dtype=np.uint8).tobytes()).hexdigest()


def scene(width: int, height: int, seed: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A (height, width, 3) uint8 crop of :func:`photo` and a (height, width) uint8 mask with 2-3 classes.

    Args:
        width: image width.
        height: image height.
        seed: selects the crop and the labelled rectangles.
        num_classes: foreground classes are drawn from 1..num_classes.
    """
    rng = np.random.default_rng(seed)
    src = photo()
    scale = max(width / src.width, height / src.height) * rng.uniform(1.0, 1.4)
    big = src.resize((int(np.ceil(src.width * scale)), int(np.ceil(src.height * scale))), Image.BICUBIC)
    x0 = int(rng.integers(0, big.width - width + 1))
    y0 = int(rng.integers(0, big.height - height + 1))
    image = np.asarray(big.crop((x0, y0, x0 + width, y0 + height)), dtype=np.uint8).copy()
    mask = np.zeros((height, width), dtype=np.uint8)
    classes = rng.choice(np.arange(1, num_classes + 1), size=int(rng.integers(2, 4)), replace=False)
    for c in classes:
        w, h = int(rng.integers(width // 4, width // 2)), int(rng.integers(height // 4, height // 2))
        x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        mask[max(0, y - 3) : y + h + 3, max(0, x - 3) : x + w + 3] = 255  # the ignore band around the object
        mask[y : y + h, x : x + w] = c
    return image, mask


def write_mask(path: Path, mask: np.ndarray) -> None:
    """A greyscale ("L") PNG of class indices, like SBD's SegmentationClassAug (imageio reads palette PNGs as RGB)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8), mode="L").save(path, format="PNG")


def onehot(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes,) float32 image-level labels of a mask (0 and 255 do not count), as ToCo's label files."""
    present = np.unique(mask)
    present = present[(present > 0) & (present <= num_classes)]
    out = np.zeros(num_classes, dtype=np.float32)
    out[present - 1] = 1.0
    return out


def _save_image(path: Path, image: np.ndarray) -> None:
    # Lossless PNG content under the ``.jpg`` name both loaders expect (both detect the format from the content), so
    # that a golden test can rebuild the exact pixels without a JPEG codec of the same version.
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="PNG")


@dataclass(frozen=True)
class Tree:
    """A dataset tree readable by both sides.

    Attributes:
        root: dataset root (``data.root`` for ours, ``data_folder`` for the reference).
        list_dir: the reference's ``list_folder`` (split lists and ``cls_labels_onehot.npy``).
        names: image names in list order.
        split: the split name on our side.
        ref_split: the split name on the reference's side.
    """

    root: Path
    list_dir: Path
    names: tuple[str, ...]
    split: str
    ref_split: str


def voc_tree(root: Path, sizes: Sequence[tuple[int, int]], *, split: str = "train", seed: int = 0) -> Tree:
    """VOC layout (shared by both sides): JPEGImages/, SegmentationClassAug/, ImageSets/Segmentation/SPLIT.txt.

    The reference's ``list_folder`` is ``ImageSets/Segmentation`` (it also holds ``cls_labels_onehot.npy``).
    """
    list_dir = root / "ImageSets" / "Segmentation"
    list_dir.mkdir(parents=True, exist_ok=True)
    names, labels = [], {}
    for i, (w, h) in enumerate(sizes):
        name = f"2007_{i:06d}"
        image, mask = scene(w, h, seed + i, 20)
        _save_image(root / "JPEGImages" / f"{name}.jpg", image)
        write_mask(root / "SegmentationClassAug" / f"{name}.png", mask)
        names.append(name)
        labels[name] = onehot(mask, 20)
    (list_dir / f"{split}.txt").write_text("\n".join(names) + "\n")
    np.save(list_dir / "cls_labels_onehot.npy", labels, allow_pickle=True)
    return Tree(root, list_dir, tuple(names), split, split)


def coco_tree(root: Path, sizes: Sequence[tuple[int, int]], *, seed: int = 0) -> Tree:
    """The same COCO images in both layouts.

    Reference (``datasets/coco.py``): ``JPEGImages/train/NAME.jpg``, ``SegmentationClass/train/NAME[15:].png``,
    lists in ``lists/train.txt`` + ``lists/cls_labels_onehot.npy``. Ours: ``JPEGImages/train2014/NAME.jpg``,
    ``SegmentationClass/train2014/NAME.png``, ``ImageSets/train2014.txt``.
    """
    list_dir = root / "lists"
    list_dir.mkdir(parents=True, exist_ok=True)
    (root / "ImageSets").mkdir(parents=True, exist_ok=True)
    names, labels = [], {}
    for i, (w, h) in enumerate(sizes):
        name = f"COCO_train2014_{i + 1:012d}"
        image, mask = scene(w, h, seed + i, 80)
        for sub, mask_name in (("train", name[15:]), ("train2014", name)):
            _save_image(root / "JPEGImages" / sub / f"{name}.jpg", image)
            write_mask(root / "SegmentationClass" / sub / f"{mask_name}.png", mask)
        names.append(name)
        labels[name] = onehot(mask, 80)
    (list_dir / "train.txt").write_text("\n".join(names) + "\n")
    (root / "ImageSets" / "train2014.txt").write_text("\n".join(names) + "\n")
    np.save(list_dir / "cls_labels_onehot.npy", labels, allow_pickle=True)
    return Tree(root, list_dir, tuple(names), "train2014", "train")
