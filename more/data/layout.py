"""Where a dataset's files are: split lists, image and mask folders, per dataset (voc, coco, custom, synthetic).

Layouts (``ROOT`` = ``cfg.data.root``):

* voc: ``JPEGImages/NAME.jpg``, ``SegmentationClassAug/NAME.png`` (else ``SegmentationClass/``),
  ``ImageSets/Segmentation/SPLIT.txt``.
* coco: ``JPEGImages/{train2014,val2014}/NAME.jpg``, ``SegmentationClass/{train2014,val2014}/NAME.png``,
  ``ImageSets/SPLIT.txt``; the images of ``val`` and ``val_part`` live in ``val2014``, those of ``train`` in
  ``train2014``.
* custom, and synthetic: wherever ``ROOT/dataset.yaml`` says (:mod:`more.data.description`); a synthetic set
  generated before the generator wrote that file has the voc layout.

Splits whose name starts with ``test`` have no masks. Light (no torch).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from more.data.description import has_description, read_description

if TYPE_CHECKING:
    from more.config import MoReConfig


@dataclass(frozen=True)
class SplitFiles:
    """Where one split's list, images and masks live."""

    root: Path
    split: str
    list_file: Path
    image_dir: Path
    mask_dir: Path | None  # None: the split has no masks (test)
    image_suffix: str = ".jpg"

    def image_path(self, name: str) -> Path:
        return self.image_dir / f"{name}{self.image_suffix}"

    def mask_path(self, name: str) -> Path | None:
        return None if self.mask_dir is None else self.mask_dir / f"{name}.png"


def coco_subset(split: str) -> str:
    """The image folder of a COCO split: ``val``, ``val_part`` (and other val lists) -> ``val2014``; ``train`` ->
    ``train2014``."""
    if split in ("train2014", "val2014"):
        return split
    if "val" in split:
        return "val2014"
    if "train" in split:
        return "train2014"
    return split


def described(root: str | os.PathLike, dataset: str) -> bool:
    """True when ``dataset`` at ``root`` is read through its ``dataset.yaml`` (always for custom; for synthetic when
    the generator wrote one)."""
    return dataset == "custom" or (dataset == "synthetic" and has_description(root))


def split_files(root: str | os.PathLike, dataset: str, split: str) -> SplitFiles:
    """The files of ``split`` under ``root`` for ``dataset`` in voc | coco | synthetic | custom (only a
    ``dataset.yaml`` is read).

    Raises:
        DatasetError: a custom dataset without a valid description, or a split it does not list.
    """
    root = Path(root)
    no_masks = split.startswith("test")
    if described(root, dataset):
        desc = read_description(root)
        return SplitFiles(desc.root, split, desc.list_file(split), desc.images,
                          desc.masks if desc.has_masks(split) else None, desc.image_suffix)
    if dataset == "coco":
        subset = coco_subset(split)
        return SplitFiles(root, split, root / "ImageSets" / f"{split}.txt", root / "JPEGImages" / subset,
                          None if no_masks else root / "SegmentationClass" / subset)
    aug = root / "SegmentationClassAug"
    mask_dir = aug if aug.is_dir() else root / "SegmentationClass"
    return SplitFiles(root, split, root / "ImageSets" / "Segmentation" / f"{split}.txt", root / "JPEGImages",
                      None if no_masks else mask_dir)


def read_split(list_file: str | os.PathLike) -> list[str]:
    """Image names of a split list, in file order.

    Accepts one name per line (``2007_000032``) and the DeepLab form ``/JPEGImages/X.jpg /SegmentationClassAug/X.png``.

    Raises:
        FileNotFoundError: naming the missing list file.
    """
    path = Path(list_file)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: split list file not found")
    names = []
    for line in path.read_text().splitlines():
        token = line.strip().split()[0] if line.strip() else ""
        if token:
            names.append(Path(token).stem)
    return names


def labels_file(cfg: MoReConfig) -> str:
    """The labels file a run reads: ``data.labels_file``, else a described dataset's ``labels:``, else "" (derive
    the labels from the masks)."""
    if cfg.data.labels_file:
        return cfg.data.labels_file
    if described(cfg.data.root, cfg.data.dataset):
        desc = read_description(cfg.data.root)
        return str(desc.labels) if desc.labels is not None else ""
    return ""
